// The CUDA kernel check (checkasm style): every CUDA attention kernel against the CPU reference
// backend on the same random inputs, over a sweep of patterns, lengths (n not a multiple of the
// block, n < block), block sizes, head sizes, batch and heads; rows without keys included.
//
// Tolerance per element: |cuda - cpu| <= atol + rtol |cpu|, fp32: forward atol 2e-5 rtol 1e-4,
// backward atol 1e-4 rtol 1e-3; plus a normalised error over the whole tensor
// (sum (cuda - cpu)^2 / sum cpu^2 <= 1e-9). NaN or Inf where the reference is finite always
// fails; the first mismatches are printed with their indices. Exit code 77 (SKIP) without a GPU.
//
// `test_cuda_attention -tc="*small*"` runs only the small sweep (used under compute-sanitizer).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "test_support.hpp"

using naive::Pattern;
using support::LayoutPtr;

namespace {

struct ContextDeleter {
  void operator()(sparse_context* c) const { sparse_context_destroy(c); }
};
using ContextPtr = std::unique_ptr<sparse_context, ContextDeleter>;

ContextPtr make_context(sparse_backend backend) {
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = backend;
  sparse_context* c = nullptr;
  REQUIRE_MESSAGE(sparse_context_create(&s, &c) == SPARSE_OK, sparse_last_error());
  return ContextPtr(c);
}

// A device buffer owned by a CUDA context.
struct DeviceBuffer {
  sparse_context* ctx;
  void* ptr = nullptr;
  DeviceBuffer(sparse_context* c, size_t bytes) : ctx(c) {
    REQUIRE_MESSAGE(sparse_context_alloc(c, bytes, &ptr) == SPARSE_OK, sparse_last_error());
  }
  ~DeviceBuffer() { sparse_context_free(ctx, ptr); }
};

int compare(const char* name, const std::vector<float>& got, const std::vector<float>& want,
            double atol, double rtol) {
  int bad = 0;
  double err = 0, ref = 0;
  for (size_t e = 0; e < want.size(); ++e) {
    const double g = got[e], w = want[e];
    const bool ok = std::isinf(w) ? g == w
                                  : (std::isfinite(g) && std::fabs(g - w) <= atol + rtol * std::fabs(w));
    if (std::isfinite(w)) {
      err += (g - w) * (g - w);
      ref += w * w;
    }
    if (!ok && bad++ < 5)
      FAIL_CHECK(std::string(name) << "[" << e << "]: cuda " << g << ", cpu " << w);
  }
  if (ref > 0) CHECK_MESSAGE(err / ref <= 1e-9, name << ": normalised error " << err / ref);
  return bad;
}

struct Case {
  int64_t batch, heads, n, d;
  int block;
  std::vector<Pattern> patterns;
};

void run_case(const Case& c, sparse_context* cpu, sparse_context* gpu, uint64_t seed) {
  LayoutPtr layout;
  REQUIRE_MESSAGE(support::make_layout(c.patterns, c.n, c.block, static_cast<int>(c.heads),
                                       layout) == SPARSE_OK,
                  sparse_last_error());
  const size_t size = static_cast<size_t>(c.batch * c.heads * c.n * c.d);
  const size_t rows = static_cast<size_t>(c.batch * c.heads * c.n);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  // 0 q, 1 k, 2 v, 3 dout, 4 out, 5 dq, 6 dk, 7 dv; [8] lse
  std::vector<float> host[8], cpu_out[8], lse_cpu(rows), lse_gpu(rows);
  for (int t = 0; t < 8; ++t) {
    host[t].assign(size, 0.0f);
    if (t < 4)
      for (auto& x : host[t]) x = uni(rng);
  }
  const int64_t shape[4] = {c.batch, c.heads, c.n, c.d}, lse_shape[3] = {c.batch, c.heads, c.n};
  sparse_tensor T[8], L;
  for (int t = 0; t < 8; ++t) sparse_tensor_contiguous(&T[t], host[t].data(), SPARSE_DTYPE_F32, 4, shape);
  sparse_tensor_contiguous(&L, lse_cpu.data(), SPARSE_DTYPE_F32, 3, lse_shape);
  REQUIRE(sparse_attention_forward(cpu, layout.get(), nullptr, &T[0], &T[1], &T[2], &T[4], &L) ==
          SPARSE_OK);
  REQUIRE(sparse_attention_backward(cpu, layout.get(), nullptr, &T[0], &T[1], &T[2], &T[4], &L,
                                    &T[3], &T[5], &T[6], &T[7]) == SPARSE_OK);
  for (int t = 4; t < 8; ++t) cpu_out[t] = host[t];

  // The same on the GPU.
  std::vector<std::unique_ptr<DeviceBuffer>> dev;
  sparse_tensor D[8], DL;
  for (int t = 0; t < 8; ++t) {
    dev.push_back(std::make_unique<DeviceBuffer>(gpu, size * sizeof(float)));
    if (t < 4)
      REQUIRE(sparse_context_copy(gpu, dev[t]->ptr, SPARSE_MEMORY_DEVICE, host[t].data(),
                                  SPARSE_MEMORY_HOST, size * sizeof(float)) == SPARSE_OK);
    sparse_tensor_contiguous(&D[t], dev[t]->ptr, SPARSE_DTYPE_F32, 4, shape);
    D[t].memory = SPARSE_MEMORY_DEVICE;
  }
  DeviceBuffer dlse(gpu, rows * sizeof(float));
  sparse_tensor_contiguous(&DL, dlse.ptr, SPARSE_DTYPE_F32, 3, lse_shape);
  DL.memory = SPARSE_MEMORY_DEVICE;
  REQUIRE_MESSAGE(sparse_attention_forward(gpu, layout.get(), nullptr, &D[0], &D[1], &D[2], &D[4],
                                           &DL) == SPARSE_OK,
                  sparse_last_error());
  REQUIRE_MESSAGE(sparse_attention_backward(gpu, layout.get(), nullptr, &D[0], &D[1], &D[2], &D[4],
                                            &DL, &D[3], &D[5], &D[6], &D[7]) == SPARSE_OK,
                  sparse_last_error());
  REQUIRE(sparse_context_synchronize(gpu) == SPARSE_OK);
  std::vector<float> got(size);
  const char* names[8] = {"q", "k", "v", "dout", "out", "dq", "dk", "dv"};
  for (int t = 4; t < 8; ++t) {
    REQUIRE(sparse_context_copy(gpu, got.data(), SPARSE_MEMORY_HOST, dev[t]->ptr,
                                SPARSE_MEMORY_DEVICE, size * sizeof(float)) == SPARSE_OK);
    compare(names[t], got, cpu_out[t], t == 4 ? 2e-5 : 1e-4, t == 4 ? 1e-4 : 1e-3);
  }
  REQUIRE(sparse_context_copy(gpu, lse_gpu.data(), SPARSE_MEMORY_HOST, dlse.ptr,
                              SPARSE_MEMORY_DEVICE, rows * sizeof(float)) == SPARSE_OK);
  compare("lse", lse_gpu, lse_cpu, 2e-5, 1e-4);
}

Pattern make(sparse_pattern_kind kind, int64_t stride, int64_t summary = 0, int head = -1) {
  Pattern p;
  p.kind = kind;
  p.stride = stride;
  p.window = stride;
  p.summary = summary;
  p.head = head;
  return p;
}

void sweep(int trials, int64_t max_n, uint64_t seed) {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_context(SPARSE_BACKEND_CUDA);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < trials; ++trial) {
    Case c;
    c.block = 16 << (rng() % 4);
    c.n = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(max_n));
    const int64_t dims[4] = {32, 64, 128, 48};
    c.d = dims[rng() % 4];
    c.batch = 1 + static_cast<int64_t>(rng() % 2);
    c.heads = 1 + static_cast<int64_t>(rng() % 3);
    const int count = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < count; ++k)
      c.patterns.push_back(support::random_pattern(
          rng, c.n, static_cast<int>(rng() % (c.heads + 1)) - 1, c.block));
    CAPTURE(trial);
    CAPTURE(c.n);
    CAPTURE(c.block);
    CAPTURE(c.d);
    run_case(c, cpu.get(), gpu.get(), rng());
  }
}

}  // namespace

TEST_CASE("small sweep: every pattern kind, short sequences") { sweep(24, 80, 1); }

TEST_CASE("sweep: every pattern kind, block size and head size") { sweep(60, 700, 2); }

TEST_CASE("the paper's patterns at realistic lengths") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_context(SPARSE_BACKEND_CUDA);
  for (int block : {32, 64, 128})
    for (int64_t d : {64, 128}) {
      CAPTURE(block);
      CAPTURE(d);
      run_case({2, 2, 3000, d, block,
                {make(SPARSE_PATTERN_STRIDED_ROW, 96, 0, 0),
                 make(SPARSE_PATTERN_STRIDED_COLUMN, 96, 0, 1)}},
               cpu.get(), gpu.get(), 7);
      run_case({1, 2, 2100, d, block,
                {make(SPARSE_PATTERN_FIXED_BLOCK, 128, 0, 0),
                 make(SPARSE_PATTERN_FIXED_SUMMARY, 128, 32, 1)}},
               cpu.get(), gpu.get(), 8);
    }
}

TEST_CASE("CUDA-specific errors") {
  auto gpu = make_context(SPARSE_BACKEND_CUDA);
  LayoutPtr layout;
  REQUIRE(support::make_layout({make(SPARSE_PATTERN_DENSE, 0)}, 16, 16, 1, layout) == SPARSE_OK);
  std::vector<float> host(16 * 16);
  const int64_t shape[4] = {1, 1, 16, 16};
  sparse_tensor t;
  sparse_tensor_contiguous(&t, host.data(), SPARSE_DTYPE_F32, 4, shape);
  // Host tensors on a CUDA context.
  std::vector<float> out(16 * 16);
  sparse_tensor o;
  sparse_tensor_contiguous(&o, out.data(), SPARSE_DTYPE_F32, 4, shape);
  CHECK(sparse_attention_forward(gpu.get(), layout.get(), nullptr, &t, &t, &t, &o, nullptr) ==
        SPARSE_ERR_UNSUPPORTED);
}

int main(int argc, char** argv) {
  int count = 0;
  if (sparse_cuda_device_count(&count) != SPARSE_OK || count == 0) {
    std::printf("SKIP: no CUDA device present (%s)\n", sparse_build_info());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
