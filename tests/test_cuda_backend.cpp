// CUDA backend tests: the context, and the cuBLAS dense causal baseline of the benchmarks (an
// internal backend entry, so this program links the library statically) against the CPU
// reference with the rule and bounds of attention_check.hpp. The attention kernels' own check is
// test_cuda_attention.cpp. Reported as skipped (exit code 77) when no GPU is present; with
// SPARSE_REQUIRE_GPU=1 in the environment, no GPU is a failure (exit 1) instead.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attention_check.hpp"
#include "backend.hpp"
#include "model_ops.hpp"
#include "sparse/sparse.h"

TEST_CASE("a CUDA context runs on the GPU and reports its device") {
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CUDA;
  sparse_context* ctx = nullptr;
  REQUIRE_MESSAGE(sparse_context_create(&s, &ctx) == SPARSE_OK, sparse_last_error());
  sparse_backend b = SPARSE_BACKEND_AUTO;
  CHECK(sparse_context_backend(ctx, &b) == SPARSE_OK);
  CHECK(b == SPARSE_BACKEND_CUDA);
  CHECK(sparse_context_synchronize(ctx) == SPARSE_OK);
  sparse_context_destroy(ctx);

  int count = 0;
  sparse_cuda_device_count(&count);
  s.device_index = count;  // one past the last device
  CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_INVALID_ARGUMENT);
}

namespace {

sparse_context* context(sparse_backend backend) {
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = backend;
  sparse_context* c = nullptr;
  REQUIRE_MESSAGE(sparse_context_create(&s, &c) == SPARSE_OK, sparse_last_error());
  return c;
}

sparse::TensorView view(void* data, sparse_dtype dtype, int ndim, const int64_t* shape) {
  sparse::TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.memory = SPARSE_MEMORY_DEVICE;
  t.ndim = ndim;
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    t.shape[static_cast<size_t>(i)] = shape[i];
    t.strides[static_cast<size_t>(i)] = stride;
    stride *= shape[i];
  }
  return t;
}

// The dense baseline of one dtype and shape against the CPU backend's dense causal attention on
// the same (rounded) inputs: out, lse, dq, dk, dv.
void dense_case(sparse_context* cpu, sparse_context* gpu, sparse_dtype dtype, int64_t batch,
                int64_t heads, int64_t n, int64_t d, uint64_t seed) {
  const size_t size = static_cast<size_t>(batch * heads * n * d);
  const size_t rows = static_cast<size_t>(batch * heads * n);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  // 0 q, 1 k, 2 v, 3 dout, 4 out, 5 dq, 6 dk, 7 dv.
  std::vector<float> x[8], lse(rows);
  for (int t = 0; t < 8; ++t) {
    x[t].assign(size, 0.0f);
    if (t < 4)
      for (auto& e : x[t]) e = check::round_to(dtype, uni(rng));
  }
  sparse_pattern p;
  sparse_pattern_default(&p, SPARSE_PATTERN_DENSE);
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = n;
  desc.block_size = 64;
  desc.num_heads = static_cast<int32_t>(heads);
  desc.patterns = &p;
  desc.num_patterns = 1;
  sparse_layout* layout = nullptr;
  REQUIRE_MESSAGE(sparse_layout_create(&desc, &layout) == SPARSE_OK, sparse_last_error());
  const int64_t shape[4] = {batch, heads, n, d}, lse_shape[3] = {batch, heads, n};
  sparse_tensor T[8], L;
  for (int t = 0; t < 8; ++t)
    sparse_tensor_contiguous(&T[t], x[t].data(), SPARSE_DTYPE_F32, 4, shape);
  sparse_tensor_contiguous(&L, lse.data(), SPARSE_DTYPE_F32, 3, lse_shape);
  REQUIRE(sparse_attention_forward(cpu, layout, nullptr, &T[0], &T[1], &T[2], &T[4], &L) ==
          SPARSE_OK);
  REQUIRE(sparse_attention_backward(cpu, layout, nullptr, &T[0], &T[1], &T[2], &T[4], &L, &T[3],
                                    &T[5], &T[6], &T[7]) == SPARSE_OK);
  sparse_layout_destroy(layout);

  const size_t elem = dtype == SPARSE_DTYPE_F32 ? 4 : 2, bytes = size * elem;
  void* dev[9] = {};
  sparse::DenseBaselineArgs a;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  a.backward = true;
  sparse::TensorView* views[8] = {&a.q, &a.k, &a.v, &a.dout, &a.out, &a.dq, &a.dk, &a.dv};
  std::vector<unsigned char> host(bytes);
  for (int t = 0; t < 8; ++t) {
    REQUIRE(sparse_context_alloc(gpu, bytes, &dev[t]) == SPARSE_OK);
    std::memset(host.data(), check::kSentinel, bytes);
    if (t < 4)
      for (size_t e = 0; e < size; ++e) {
        if (dtype == SPARSE_DTYPE_F32) {
          std::memcpy(host.data() + e * 4, &x[t][e], 4);
        } else {
          const uint16_t b =
              dtype == SPARSE_DTYPE_BF16 ? check::to_bf16(x[t][e]) : check::to_f16(x[t][e]);
          std::memcpy(host.data() + e * 2, &b, 2);
        }
      }
    REQUIRE(sparse_context_copy(gpu, dev[t], SPARSE_MEMORY_DEVICE, host.data(), SPARSE_MEMORY_HOST,
                                bytes) == SPARSE_OK);
    *views[t] = view(dev[t], dtype, 4, shape);
  }
  REQUIRE(sparse_context_alloc(gpu, rows * 4, &dev[8]) == SPARSE_OK);
  std::vector<unsigned char> lse_bytes(rows * 4, check::kSentinel);
  REQUIRE(sparse_context_copy(gpu, dev[8], SPARSE_MEMORY_DEVICE, lse_bytes.data(),
                              SPARSE_MEMORY_HOST, rows * 4) == SPARSE_OK);
  a.lse = view(dev[8], SPARSE_DTYPE_F32, 3, lse_shape);
  const std::string why = gpu->backend->dense_attention_baseline(a);
  CHECK_MESSAGE(why.empty(), why);
  REQUIRE(sparse_context_synchronize(gpu) == SPARSE_OK);

  const check::KernelTol tol = check::tolerances(dtype);
  const char* names[8] = {"q", "k", "v", "dout", "out", "dq", "dk", "dv"};
  std::vector<float> got(size);
  for (int t = 4; t < 8 && why.empty(); ++t) {
    REQUIRE(sparse_context_copy(gpu, host.data(), SPARSE_MEMORY_HOST, dev[t], SPARSE_MEMORY_DEVICE,
                                bytes) == SPARSE_OK);
    for (size_t e = 0; e < size; ++e) {
      if (dtype == SPARSE_DTYPE_F32) {
        std::memcpy(&got[e], host.data() + e * 4, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, host.data() + e * 2, 2);
        got[e] = dtype == SPARSE_DTYPE_BF16 ? check::from_bf16(b) : check::from_f16(b);
      }
    }
    const check::Result r = check::compare(got, x[t], d, t == 4 ? tol.fwd : tol.bwd);
    CHECK_MESSAGE(r.ok(), r.describe(names[t]));
  }
  if (why.empty()) {
    std::vector<float> lse_gpu(rows);
    REQUIRE(sparse_context_copy(gpu, lse_gpu.data(), SPARSE_MEMORY_HOST, dev[8],
                                SPARSE_MEMORY_DEVICE, rows * 4) == SPARSE_OK);
    const check::Result r = check::compare(lse_gpu, lse, 1, tol.lse);
    CHECK_MESSAGE(r.ok(), r.describe("lse"));
  }
  for (void* ptr : dev) sparse_context_free(gpu, ptr);
}

}  // namespace

TEST_CASE("the cuBLAS dense causal baseline equals the CPU reference (fp32, bf16, fp16)") {
  sparse_context* cpu = context(SPARSE_BACKEND_CPU);
  sparse_context* gpu = context(SPARSE_BACKEND_CUDA);
  uint64_t seed = 1;
  for (sparse_dtype dtype : {SPARSE_DTYPE_F32, SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16})
    for (int64_t n : {1, 77, 300})
      for (int64_t d : {32, 64, 128}) {
        CAPTURE(static_cast<int>(dtype));
        CAPTURE(n);
        CAPTURE(d);
        dense_case(cpu, gpu, dtype, 2, 3, n, d, seed++);
      }
  sparse_context_destroy(gpu);
  sparse_context_destroy(cpu);
}

// Mixed precision's held weights (ModelOps::hold_weights): a product whose weight operand lies in
// the held range reads the copy rounded at the hold, which must equal rounding at the call (the
// same rounding), bit for bit; after the weights change and are held again, the new copy is read.
TEST_CASE("mixed-precision products on held weights equal products rounding at each call") {
  sparse_context* gpu = context(SPARSE_BACKEND_CUDA);
  sparse::Backend& b = *gpu->backend;
  const int64_t rows = 37, in = 24, out = 40, offset = 5;  // w starts inside the held range
  const int64_t held_n = offset + in * out + 3;
  std::mt19937_64 rng(21);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> hx(static_cast<size_t>(rows * in)), hw(static_cast<size_t>(held_n));
  for (auto& e : hx) e = uni(rng);
  for (auto& e : hw) e = uni(rng);
  auto device = [&](size_t count) { return static_cast<float*>(b.allocate(count * 4)); };
  float *x = device(hx.size()), *w = device(hw.size()),
        *y = device(static_cast<size_t>(rows * out));
  auto put = [&](float* dst, const std::vector<float>& src) {
    b.copy(dst, SPARSE_MEMORY_DEVICE, src.data(), SPARSE_MEMORY_HOST, src.size() * 4);
  };
  auto product = [&](sparse::ModelOps<float>& ops) {
    ops.linear_forward(x, w + offset, nullptr, rows, in, out, y);
    std::vector<float> r(static_cast<size_t>(rows * out));
    b.copy(r.data(), SPARSE_MEMORY_HOST, y, SPARSE_MEMORY_DEVICE, r.size() * 4);
    return r;
  };
  put(x, hx);
  for (sparse_dtype dtype : {SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
    CAPTURE(static_cast<int>(dtype));
    sparse::ModelOps<float>* ops = b.model_ops_mixed(dtype);
    REQUIRE(ops != nullptr);
    put(w, hw);
    const std::vector<float> each_call = product(*ops);
    ops->hold_weights(w, held_n);
    CHECK(product(*ops) == each_call);
    ops->release_weights();
    // New weights: the next hold rounds them again.
    std::vector<float> hw2 = hw;
    for (auto& e : hw2) e = -0.5f * e;
    put(w, hw2);
    const std::vector<float> each_call2 = product(*ops);
    CHECK(each_call2 != each_call);
    ops->hold_weights(w, held_n);
    CHECK(product(*ops) == each_call2);
    ops->release_weights();
  }
  b.free(x);
  b.free(w);
  b.free(y);
  sparse_context_destroy(gpu);
}

// Mixed precision's 16-bit activation storage (ModelOps::linear_forward_16 / linear_backward_16):
// a product reading x stored in 16 bits equals the product rounding the fp32 x at the call, bit
// for bit, forward and backward (dx, dw and the bias gradient); an operand in the other 16-bit
// dtype is refused.
TEST_CASE("mixed-precision products on 16-bit stored inputs equal products rounding at the call") {
  sparse_context* gpu = context(SPARSE_BACKEND_CUDA);
  sparse::Backend& b = *gpu->backend;
  const int64_t rows = 45, in = 24, out = 40;
  std::mt19937_64 rng(33);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  auto random = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& e : v) e = uni(rng);
    return v;
  };
  auto device = [&](const std::vector<float>& host) {
    auto* p = static_cast<float*>(b.allocate(host.size() * 4));
    b.copy(p, SPARSE_MEMORY_DEVICE, host.data(), SPARSE_MEMORY_HOST, host.size() * 4);
    return p;
  };
  auto fetch = [&](const float* p, int64_t n) {
    std::vector<float> r(static_cast<size_t>(n));
    b.copy(r.data(), SPARSE_MEMORY_HOST, p, SPARSE_MEMORY_DEVICE, r.size() * 4);
    return r;
  };
  const std::vector<float> hx = random(rows * in), hw = random(in * out), hb = random(out),
                           hdy = random(rows * out);
  float *x = device(hx), *w = device(hw), *bias = device(hb), *dy = device(hdy);
  void* x16 = b.allocate(static_cast<size_t>(rows * in) * 2);
  for (sparse_dtype dtype : {SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
    CAPTURE(static_cast<int>(dtype));
    sparse::ModelOps<float>* ops = b.model_ops_mixed(dtype);
    REQUIRE(ops != nullptr);
    ops->round_to_16(x, rows * in, dtype, x16);
    // Forward, and backward into zeroed dx, dw, db.
    auto run = [&](bool stored) {
      const std::vector<float> zeros_y(static_cast<size_t>(rows * out), 0.0f),
          zeros_dx(static_cast<size_t>(rows * in), 0.0f), zeros_dw(hw.size(), 0.0f),
          zeros_db(hb.size(), 0.0f);
      float *y = device(zeros_y), *dx = device(zeros_dx), *dw = device(zeros_dw),
            *db = device(zeros_db);
      if (stored) {
        ops->linear_forward_16(x16, dtype, w, bias, rows, in, out, y);
        ops->linear_backward_16(dy, x16, dtype, w, rows, in, out, dx, false, dw, db);
      } else {
        ops->linear_forward(x, w, bias, rows, in, out, y);
        ops->linear_backward(dy, x, w, rows, in, out, dx, false, dw, db);
      }
      std::vector<std::vector<float>> r = {fetch(y, rows * out), fetch(dx, rows * in),
                                           fetch(dw, in * out), fetch(db, out)};
      for (float* p : {y, dx, dw, db}) b.free(p);
      return r;
    };
    const auto at_call = run(false), stored = run(true);
    CHECK(stored[0] == at_call[0]);
    CHECK(stored[1] == at_call[1]);
    CHECK(stored[2] == at_call[2]);
    CHECK(stored[3] == at_call[3]);
    // The products really rounded: fp32 products differ.
    sparse::ModelOps<float>* f32 = b.model_ops_f32();
    REQUIRE(f32 != nullptr);
    std::vector<float> zeros_y(static_cast<size_t>(rows * out), 0.0f);
    float* y32 = device(zeros_y);
    f32->linear_forward(x, w, bias, rows, in, out, y32);
    CHECK(fetch(y32, rows * out) != at_call[0]);
    b.free(y32);
    const sparse_dtype other = dtype == SPARSE_DTYPE_BF16 ? SPARSE_DTYPE_F16 : SPARSE_DTYPE_BF16;
    CHECK_THROWS(ops->linear_forward_16(x16, other, w, bias, rows, in, out, dy));
  }
  for (float* p : {x, w, bias, dy}) b.free(p);
  b.free(x16);
  sparse_context_destroy(gpu);
}

int main(int argc, char** argv) {
  int count = 0;
  if (sparse_cuda_device_count(&count) != SPARSE_OK || count == 0) {
    const char* require = std::getenv("SPARSE_REQUIRE_GPU");
    if (require != nullptr && std::strcmp(require, "1") == 0) {
      std::printf("FAIL: no CUDA device present and SPARSE_REQUIRE_GPU=1 (%s)\n",
                  sparse_build_info());
      return 1;
    }
    std::printf("SKIP: no CUDA device present (%s)\n", sparse_build_info());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
