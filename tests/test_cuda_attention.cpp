// The CUDA kernel check (checkasm style): every CUDA attention kernel (fused fp32, fused bf16 and
// fp16 on tensor cores, unfused fp32) against the CPU reference backend on the same random inputs,
// over a sweep of patterns, lengths (n not a multiple of the block, n < block), block sizes, head
// sizes, memory orders (contiguous, [b, n, h, d], padded rows that break 16-byte alignment),
// batch and heads; rows without keys included.
//
// The 16-bit kernels get inputs already rounded to their dtype, and the CPU reference (fp32)
// computes on exactly those values, so the comparison measures the kernels' own error: P and dS
// rounded to 16 bits before their products with V, K, Q and dO, outputs rounded to 16 bits, and
// fp32 accumulation in a different order. The rule (per element scaled by the tensor's and the
// row's root mean square, per row relative, whole-tensor normalised error, NaN/Inf and -inf lse)
// and the bounds of each dtype are in attention_check.hpp; tests/test_attention_check.cpp shows
// on the CPU that they pass a correct kernel and fail a wrong one.
// Outputs are filled with a sentinel (all-ones bytes: NaN in every dtype) before each run, so an
// element the kernel never writes fails, and the padding of every row (memory order 2) and a
// guard after each output must still hold the sentinel afterwards. The first mismatches are
// printed with their [b, h, i, c] indices.
// Exit code 77 (SKIP) without a GPU; with SPARSE_REQUIRE_GPU=1 in the environment, no GPU is a
// failure (exit 1) instead.
//
// `test_cuda_attention -tc="*sanitizer sweep*"` runs the sweep made for compute-sanitizer (every
// kernel, dtype, block size and head size, rows of several blocks, in a few seconds).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "attention_check.hpp"
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
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

using check::from_bf16;
using check::from_f16;
using check::to_bf16;
using check::to_f16;

// ------------------------------------------------------------------ kernels and tolerances

using check::Tol;

struct Kernel {
  const char* name;
  sparse_dtype dtype;
  sparse_attention_algorithm algorithm;
  Tol fwd, bwd, lse;
  bool forward2;  // runs on the context made with SPARSE_CUDA_TC_FORWARD=2
};

Kernel kernel(const char* name, sparse_dtype dtype, sparse_attention_algorithm algorithm,
              bool forward2 = false) {
  const check::KernelTol t = check::tolerances(dtype);
  return {name, dtype, algorithm, t.fwd, t.bwd, t.lse, forward2};
}

// The "fwd2" kernels are the 16-bit ones with the second forward kernel (SPARSE_CUDA_TC_FORWARD=2,
// the default; the backward is the same), the others with the first (=1), checked by every sweep
// against the same bounds.
const Kernel kKernels[] = {
    kernel("fused fp32", SPARSE_DTYPE_F32, SPARSE_ATTENTION_FUSED),
    kernel("unfused fp32", SPARSE_DTYPE_F32, SPARSE_ATTENTION_UNFUSED),
    kernel("fused bf16", SPARSE_DTYPE_BF16, SPARSE_ATTENTION_FUSED),
    kernel("fused fp16", SPARSE_DTYPE_F16, SPARSE_ATTENTION_FUSED),
    kernel("fused bf16 fwd2", SPARSE_DTYPE_BF16, SPARSE_ATTENTION_FUSED, true),
    kernel("fused fp16 fwd2", SPARSE_DTYPE_F16, SPARSE_ATTENTION_FUSED, true),
};

// A test's CUDA contexts: one made while SPARSE_CUDA_TC_FORWARD=1 is set and one while it is 2
// (the backend reads the variable once, when it is created; the variable is restored after).
struct GpuContexts {
  ContextPtr v1, v2;
  sparse_context* get(const Kernel& k) const { return k.forward2 ? v2.get() : v1.get(); }
};

GpuContexts make_gpu_contexts() {
  GpuContexts g;
  const char* previous = std::getenv("SPARSE_CUDA_TC_FORWARD");
  const std::string saved = previous != nullptr ? previous : "";
  setenv("SPARSE_CUDA_TC_FORWARD", "1", 1);
  g.v1 = make_context(SPARSE_BACKEND_CUDA);
  setenv("SPARSE_CUDA_TC_FORWARD", "2", 1);
  g.v2 = make_context(SPARSE_BACKEND_CUDA);
  if (previous != nullptr)
    setenv("SPARSE_CUDA_TC_FORWARD", saved.c_str(), 1);
  else
    unsetenv("SPARSE_CUDA_TC_FORWARD");
  return g;
}

bool tensor_core_dim(int64_t d) { return d == 32 || d == 64 || d == 128; }

// ------------------------------------------------------------------ tensors

// Storage orders of the 4-D tensors: 0 = [b, h, n, d] contiguous, 1 = stored as [b, n, h, d],
// 2 = contiguous with the row stride d + 3 (rows not 16-byte aligned: the element-wise path).
struct Shape {
  int64_t batch, heads, n, d;
  int order;
  int64_t s[4];
  Shape(int64_t b, int64_t h, int64_t n_, int64_t d_, int o)
      : batch(b), heads(h), n(n_), d(d_), order(o) {
    if (o == 1) {
      s[3] = 1;
      s[1] = d;
      s[2] = h * d;
      s[0] = n * h * d;
    } else {
      const int64_t row = o == 2 ? d + 3 : d;
      s[3] = 1;
      s[2] = row;
      s[1] = n * row;
      s[0] = h * n * row;
    }
  }
  size_t storage() const { return static_cast<size_t>(batch * s[0]); }
  size_t at(int64_t b, int64_t h, int64_t i, int64_t c) const {
    return static_cast<size_t>(b * s[0] + h * s[1] + i * s[2] + c * s[3]);
  }
  size_t dense(int64_t b, int64_t h, int64_t i, int64_t c) const {
    return static_cast<size_t>(((b * heads + h) * n + i) * d + c);
  }
  size_t elements() const { return static_cast<size_t>(batch * heads * n * d); }
};

// Compares a dense [b, h, n, dim] result with the reference (attention_check.hpp's rule),
// records the comparison (check::record: SPARSE_CHECK_RECORD) and reports the first mismatches
// with their [b, h, i, c] indices.
int compare(const check::RecordKey& key, const std::vector<float>& got,
            const std::vector<float>& want, const Shape& sh, int64_t dim, const Tol& tol,
            const std::vector<double>& terms = {}) {
  const check::Result r = check::compare(got, want, dim, tol, terms);
  CHECK_MESSAGE(check::record(key, r), "cannot append to SPARSE_CHECK_RECORD's file");
  if (r.ok()) return 0;
  const std::string& kernel = key.kernel;
  const std::string& name = key.tensor;
  for (const check::Mismatch& m : r.first) {
    const int64_t i = m.row % sh.n, h = (m.row / sh.n) % sh.heads, b = m.row / sh.n / sh.heads;
    if (m.col >= 0)
      FAIL_CHECK(kernel << ": " << name << "[" << b << "," << h << "," << i << "," << m.col
                        << "]: cuda " << m.got << ", cpu " << m.want << " (bound " << m.bound
                        << ")");
    else
      FAIL_CHECK(kernel << ": " << name << "[" << b << "," << h << "," << i << ", :]: row error "
                        << m.got << " > " << m.bound << " (row norm " << m.want << ")");
  }
  FAIL_CHECK(r.describe((kernel + ": " + name).c_str()));
  return static_cast<int>(r.bad_elements + r.bad_rows + (r.norm_ok ? 0 : 1));
}

// Bytes of a strided tensor's storage that belong to an element.
std::vector<bool> covered_bytes(const Shape& sh, size_t elem, size_t total) {
  std::vector<bool> covered(total, false);
  for (int64_t b = 0; b < sh.batch; ++b)
    for (int64_t h = 0; h < sh.heads; ++h)
      for (int64_t i = 0; i < sh.n; ++i)
        for (int64_t e = 0; e < sh.d; ++e)
          for (size_t x = 0; x < elem; ++x) covered[sh.at(b, h, i, e) * elem + x] = true;
  return covered;
}

struct Case {
  int64_t batch, heads, n, d;
  int block;
  int order = 0;
  std::vector<Pattern> patterns;
  int transpose = 1;  // strided-column heads in the transposed order (the layout's default)
  // A user layout (sparse_layout_create_from_blocks) instead of patterns when not empty.
  std::vector<uint8_t> block_mask{}, element_mask{};
  bool user_causal = false;
  float q_scale = 1.0f;       // q multiplied by this (a power of two: exact in every dtype)
  float scale = 0.0f;         // softmax scale (0: 1 / sqrt(d))
  bool gpu_lse = true;        // false: the GPU forward gets no lse, and no backward runs
  bool backward_rows = true;  // false: backward without the per-row rule (near one-hot softmax)
  double widen = 1;           // bounds widened by this factor (check::widened)
};

LayoutPtr case_layout(const Case& c) {
  LayoutPtr layout;
  if (c.block_mask.empty()) {
    REQUIRE_MESSAGE(support::make_layout(c.patterns, c.n, c.block, static_cast<int>(c.heads),
                                         layout, c.transpose) == SPARSE_OK,
                    sparse_last_error());
  } else {
    sparse_layout* l = nullptr;
    REQUIRE_MESSAGE(sparse_layout_create_from_blocks(
                        c.n, c.block, static_cast<int32_t>(c.heads), c.block_mask.data(),
                        c.element_mask.empty() ? nullptr : c.element_mask.data(),
                        c.user_causal ? 1 : 0, &l) == SPARSE_OK,
                    sparse_last_error());
    layout.reset(l);
  }
  return layout;
}

// The case's layout in words for the correctness table: its patterns with their parameters.
std::string describe_layout(const Case& c) {
  if (!c.block_mask.empty())
    return c.element_mask.empty() ? "user block mask" : "user block and element masks";
  std::string text;
  for (const Pattern& p : c.patterns) {
    std::string params;
    auto add = [&](const char* name, int64_t value) {
      if (value > 0)
        params += (params.empty() ? "" : ",") + std::string(name) + std::to_string(value);
    };
    add("l=", p.stride);
    add("c=", p.summary);
    add("w=", p.window);
    if (p.head >= 0) params += (params.empty() ? "head " : ",head ") + std::to_string(p.head);
    text += (text.empty() ? "" : "+") + std::string(sparse_pattern_kind_name(p.kind)) +
            (params.empty() ? "" : "(" + params + ")");
  }
  return text;
}

// Runs `kernel` on the GPU and the CPU reference on the same inputs, compares out, lse, dq, dk,
// dv, and checks that no output byte outside the tensors' elements was written.
void run_case(const Case& c, const Kernel& kernel, sparse_context* cpu, sparse_context* gpu,
              uint64_t seed) {
  LayoutPtr layout = case_layout(c);
  const Shape sh(c.batch, c.heads, c.n, c.d, c.order);
  const size_t size = sh.elements(), rows = static_cast<size_t>(c.batch * c.heads * c.n);
  const bool half = kernel.dtype != SPARSE_DTYPE_F32;
  auto round = [&](float x) { return check::round_to(kernel.dtype, x); };
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  // 0 q, 1 k, 2 v, 3 dout, 4 out, 5 dq, 6 dk, 7 dv; dense [b, h, n, d] fp32 for the CPU.
  std::vector<float> dense[8], lse_cpu(rows);
  for (int t = 0; t < 8; ++t) {
    dense[t].assign(size, 0.0f);
    if (t < 4)
      for (auto& x : dense[t]) x = round(uni(rng)) * (t == 0 ? c.q_scale : 1.0f);
  }
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.scale = c.scale;
  const int64_t shape[4] = {c.batch, c.heads, c.n, c.d}, lse_shape[3] = {c.batch, c.heads, c.n};
  sparse_tensor T[8], L;
  for (int t = 0; t < 8; ++t)
    sparse_tensor_contiguous(&T[t], dense[t].data(), SPARSE_DTYPE_F32, 4, shape);
  sparse_tensor_contiguous(&L, lse_cpu.data(), SPARSE_DTYPE_F32, 3, lse_shape);
  REQUIRE(sparse_attention_forward(cpu, layout.get(), &params, &T[0], &T[1], &T[2], &T[4], &L) ==
          SPARSE_OK);
  REQUIRE(sparse_attention_backward(cpu, layout.get(), &params, &T[0], &T[1], &T[2], &T[4], &L,
                                    &T[3], &T[5], &T[6], &T[7]) == SPARSE_OK);

  // The size of the terms summed into each row of dq and dk (attention_check.hpp's terms rule).
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.d));
  const check::TermNorms terms = check::term_norms(
      c.batch, c.heads, c.n, c.d, scale, dense[0], dense[1], dense[2], dense[3], dense[4], lse_cpu,
      [&](int h, int64_t i, std::vector<uint8_t>& mask) {
        REQUIRE(sparse_layout_row_mask(layout.get(), h, i, mask.data(), mask.size()) == SPARSE_OK);
      });

  // Host staging in the GPU's storage order and dtype, with a guard after the tensor; outputs
  // (and the padding of inputs) hold the sentinel.
  const size_t elem = half ? 2 : 4, guard = 256;
  const size_t bytes = sh.storage() * elem;
  std::vector<unsigned char> staging[8];
  for (int t = 0; t < 8; ++t) {
    staging[t].assign(bytes + guard, check::kSentinel);
    if (t >= 4) continue;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t i = 0; i < c.n; ++i)
          for (int64_t e = 0; e < c.d; ++e) {
            const float x = dense[t][sh.dense(b, h, i, e)];
            unsigned char* dst = staging[t].data() + sh.at(b, h, i, e) * elem;
            if (!half) {
              std::memcpy(dst, &x, 4);
            } else {
              const uint16_t bits = kernel.dtype == SPARSE_DTYPE_BF16 ? to_bf16(x) : to_f16(x);
              std::memcpy(dst, &bits, 2);
            }
          }
  }
  std::vector<std::unique_ptr<DeviceBuffer>> dev;
  sparse_tensor D[8], DL;
  for (int t = 0; t < 8; ++t) {
    dev.push_back(std::make_unique<DeviceBuffer>(gpu, bytes + guard));
    REQUIRE(sparse_context_copy(gpu, dev[t]->ptr, SPARSE_MEMORY_DEVICE, staging[t].data(),
                                SPARSE_MEMORY_HOST, bytes + guard) == SPARSE_OK);
    sparse_tensor_contiguous(&D[t], dev[t]->ptr, kernel.dtype, 4, shape);
    for (int i = 0; i < 4; ++i) D[t].strides[i] = sh.s[i];
    D[t].memory = SPARSE_MEMORY_DEVICE;
  }
  const size_t lse_bytes = rows * sizeof(float);
  DeviceBuffer dlse(gpu, lse_bytes + guard);
  std::vector<unsigned char> lse_back(lse_bytes + guard, check::kSentinel);
  REQUIRE(sparse_context_copy(gpu, dlse.ptr, SPARSE_MEMORY_DEVICE, lse_back.data(),
                              SPARSE_MEMORY_HOST, lse_bytes + guard) == SPARSE_OK);
  sparse_tensor_contiguous(&DL, dlse.ptr, SPARSE_DTYPE_F32, 3, lse_shape);
  DL.memory = SPARSE_MEMORY_DEVICE;
  params.algorithm = kernel.algorithm;
  REQUIRE_MESSAGE(sparse_attention_forward(gpu, layout.get(), &params, &D[0], &D[1], &D[2], &D[4],
                                           c.gpu_lse ? &DL : nullptr) == SPARSE_OK,
                  sparse_last_error());
  if (c.gpu_lse)
    REQUIRE_MESSAGE(sparse_attention_backward(gpu, layout.get(), &params, &D[0], &D[1], &D[2],
                                              &D[4], &DL, &D[3], &D[5], &D[6], &D[7]) == SPARSE_OK,
                    sparse_last_error());
  REQUIRE(sparse_context_synchronize(gpu) == SPARSE_OK);

  const char* names[8] = {"q", "k", "v", "dout", "out", "dq", "dk", "dv"};
  const std::string layout_text = describe_layout(c);
  auto key = [&](const char* tensor) {
    return check::RecordKey{kernel.name, layout_text, tensor,  c.batch, c.heads,
                            c.n,         c.d,         c.block, c.order, c.q_scale};
  };
  const std::vector<bool> covered = covered_bytes(sh, elem, bytes);
  std::vector<unsigned char> back(bytes + guard);
  std::vector<float> got(size);
  for (int t = 4; t < (c.gpu_lse ? 8 : 5); ++t) {
    REQUIRE(sparse_context_copy(gpu, back.data(), SPARSE_MEMORY_HOST, dev[t]->ptr,
                                SPARSE_MEMORY_DEVICE, bytes + guard) == SPARSE_OK);
    size_t first = 0;
    const size_t touched = check::touched_padding(back, covered, &first);
    CHECK_MESSAGE(touched == 0, kernel.name << ": " << names[t] << ": " << touched
                                            << " bytes outside the elements were written (first "
                                               "at byte "
                                            << first << " of " << bytes << " + guard)");
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t i = 0; i < c.n; ++i)
          for (int64_t e = 0; e < c.d; ++e) {
            const unsigned char* src = back.data() + sh.at(b, h, i, e) * elem;
            float x;
            if (!half) {
              std::memcpy(&x, src, 4);
            } else {
              uint16_t bits;
              std::memcpy(&bits, src, 2);
              x = kernel.dtype == SPARSE_DTYPE_BF16 ? from_bf16(bits) : from_f16(bits);
            }
            got[sh.dense(b, h, i, e)] = x;
          }
    Tol tol = check::widened(t == 4 ? kernel.fwd : kernel.bwd, c.widen);
    if (t > 4 && !c.backward_rows) tol.row = 0;
    compare(key(names[t]), got, dense[t], sh, c.d, tol,
            t == 5   ? terms.dq
            : t == 6 ? terms.dk
                     : std::vector<double>{});
    if (t == 4 || t == 5)
      CHECK_MESSAGE(check::nonzero_in_empty_rows(got, c.d, lse_cpu) == 0,
                    kernel.name << ": " << names[t] << ": rows of queries without keys not zero");
  }
  REQUIRE(sparse_context_copy(gpu, lse_back.data(), SPARSE_MEMORY_HOST, dlse.ptr,
                              SPARSE_MEMORY_DEVICE, lse_bytes + guard) == SPARSE_OK);
  if (!c.gpu_lse) {
    size_t first = 0;
    CHECK_MESSAGE(
        check::touched_padding(lse_back, {}, &first) == 0,
        kernel.name << ": the forward without lse wrote the lse buffer (byte " << first << ")");
    return;
  }
  size_t first = 0;
  CHECK_MESSAGE(
      check::touched_padding(lse_back, std::vector<bool>(lse_bytes, true), &first) == 0,
      kernel.name << ": lse: the guard after the tensor was written (byte " << first << ")");
  std::vector<float> lse_gpu(rows);
  std::memcpy(lse_gpu.data(), lse_back.data(), lse_bytes);
  compare(key("lse"), lse_gpu, lse_cpu, sh, 1, check::widened(kernel.lse, c.widen));
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

// Random cases; each runs every kernel that supports its head_dim.
void sweep(int trials, int64_t max_n, uint64_t seed) {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < trials; ++trial) {
    Case c;
    c.block = 16 << (rng() % 4);
    c.n = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(max_n));
    const int64_t dims[4] = {32, 64, 128, 48};
    c.d = dims[rng() % 4];
    c.batch = 1 + static_cast<int64_t>(rng() % 2);
    c.heads = 1 + static_cast<int64_t>(rng() % 3);
    c.order = static_cast<int>(rng() % 3);
    const int count = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < count; ++k)
      c.patterns.push_back(
          support::random_pattern(rng, c.n, static_cast<int>(rng() % (c.heads + 1)) - 1, c.block));
    const uint64_t data_seed = rng();
    CAPTURE(trial);
    CAPTURE(c.n);
    CAPTURE(c.block);
    CAPTURE(c.d);
    CAPTURE(c.batch);
    CAPTURE(c.heads);
    CAPTURE(c.order);
    for (const Kernel& kernel : kKernels) {
      if (kernel.dtype != SPARSE_DTYPE_F32 && !tensor_core_dim(c.d)) continue;
      CAPTURE(kernel.name);
      run_case(c, kernel, cpu.get(), gpu.get(kernel), data_seed);
    }
  }
}

}  // namespace

TEST_CASE("small sweep: every kernel and dtype, every pattern kind, short sequences") {
  sweep(24, 80, 1);
}

TEST_CASE("sweep: every kernel, pattern kind, block size, head size and memory order") {
  sweep(60, 700, 2);
}

TEST_CASE("every block size and head size with the paper's patterns, every kernel") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  for (int block : {16, 32, 64, 128})
    for (int64_t d : {32, 64, 128})
      for (const Kernel& kernel : kKernels) {
        CAPTURE(block);
        CAPTURE(d);
        CAPTURE(kernel.name);
        // n = 203: a multiple of neither the block nor the stride; head 1 transposed.
        run_case({2,
                  2,
                  203,
                  d,
                  block,
                  0,
                  {make(SPARSE_PATTERN_STRIDED_ROW, 16, 0, 0),
                   make(SPARSE_PATTERN_STRIDED_COLUMN, 16, 0, 1)}},
                 kernel, cpu.get(), gpu.get(kernel), 3);
        // Rows without keys: the summary head with l = 64, c = 8 leaves queries 0..55 empty.
        run_case({1, 2, 130, d, block, 2, {make(SPARSE_PATTERN_FIXED_SUMMARY, 64, 8, 0)}}, kernel,
                 cpu.get(), gpu.get(kernel), 4);
      }
}

TEST_CASE("the paper's patterns at realistic lengths") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  for (int block : {32, 64, 128})
    for (int64_t d : {64, 128})
      for (const Kernel& kernel : kKernels) {
        CAPTURE(block);
        CAPTURE(d);
        CAPTURE(kernel.name);
        run_case({2,
                  2,
                  3000,
                  d,
                  block,
                  0,
                  {make(SPARSE_PATTERN_STRIDED_ROW, 96, 0, 0),
                   make(SPARSE_PATTERN_STRIDED_COLUMN, 96, 0, 1)}},
                 kernel, cpu.get(), gpu.get(kernel), 7);
        run_case({1,
                  2,
                  2100,
                  d,
                  block,
                  1,
                  {make(SPARSE_PATTERN_FIXED_BLOCK, 128, 0, 0),
                   make(SPARSE_PATTERN_FIXED_SUMMARY, 128, 32, 1)}},
                 kernel, cpu.get(), gpu.get(kernel), 8);
      }
}

namespace {

// Every kernel the dtype of `k` allows at head size d.
bool runs(const Kernel& k, int64_t d) {
  return k.dtype == SPARSE_DTYPE_F32 ? d <= 128 : tensor_core_dim(d);
}

// Random user layout: each block of each head computed with probability `density` (so some rows
// have no key), and an element mask allowing half the elements of every computed block.
void random_user_layout(Case& c, std::mt19937_64& rng, double density) {
  const int64_t nb = (c.n + c.block - 1) / c.block;
  std::bernoulli_distribution pick(density), half(0.5);
  c.block_mask.assign(static_cast<size_t>(c.heads * nb * nb), 0);
  int64_t computed = 0;
  for (auto& m : c.block_mask) {
    m = pick(rng) ? 1 : 0;
    computed += m;
  }
  c.element_mask.assign(static_cast<size_t>(computed * c.block * c.block), 0);
  for (auto& m : c.element_mask) m = half(rng) ? 1 : 0;
}

}  // namespace

TEST_CASE("sanitizer sweep: every kernel, block size and head size, rows of several blocks") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  for (int block : {16, 32, 64, 128})
    for (int64_t d : {32, 48, 64, 128})
      for (const Kernel& kernel : kKernels) {
        if (!runs(kernel, d)) continue;
        CAPTURE(block);
        CAPTURE(d);
        CAPTURE(kernel.name);
        // n = 2 B + 7: three query blocks, the last one partial; head 0 dense causal (rows of
        // up to three computed blocks, full and diagonal), head 1 a transposed strided column
        // (partial blocks); padded rows (order 2).
        run_case(
            {1,
             2,
             2 * block + 7,
             d,
             block,
             2,
             {make(SPARSE_PATTERN_DENSE, 0, 0, 0), make(SPARSE_PATTERN_STRIDED_COLUMN, 5, 0, 1)}},
            kernel, cpu.get(), gpu.get(kernel), 11);
      }
}

TEST_CASE("large logits: every kernel subtracts the running maximum") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  for (int64_t d : {32, 64})
    for (const Kernel& kernel : kKernels) {
      CAPTURE(d);
      CAPTURE(kernel.name);
      // q x 8 and scale 4: logits of several hundred (test_attention_check.cpp shows that these
      // inputs overflow exp without the maximum subtracted, and that the CPU reference is right
      // on them). The softmax is then nearly one-hot, so dq is a difference of nearly equal
      // terms: the backward is checked per element and over the tensor, not per row; fp32's
      // bounds are widened 10x (attention_check.hpp, widened).
      Case c{2,
             2,
             300,
             d,
             64,
             0,
             {make(SPARSE_PATTERN_DENSE, 0, 0, 0), make(SPARSE_PATTERN_STRIDED_ROW, 40, 0, 1)}};
      c.q_scale = 8.0f;
      c.scale = 4.0f;
      c.backward_rows = false;
      c.widen = kernel.dtype == SPARSE_DTYPE_F32 ? 10 : 1;
      run_case(c, kernel, cpu.get(), gpu.get(kernel), 21);
    }
}

TEST_CASE("user block and element masks, causal and not") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  std::mt19937_64 rng(31);
  for (int block : {16, 64, 128})
    for (int64_t d : {32, 64, 128})
      for (bool causal : {false, true})
        for (const Kernel& kernel : kKernels) {
          CAPTURE(block);
          CAPTURE(d);
          CAPTURE(causal);
          CAPTURE(kernel.name);
          Case c{2, 2, 2 * block + 9, d, block, block == 64 ? 1 : 0, {}};
          random_user_layout(c, rng, 0.5);
          c.user_causal = causal;
          run_case(c, kernel, cpu.get(), gpu.get(kernel), rng());
        }
}

TEST_CASE("forward without lse") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  for (int block : {16, 64})
    for (int64_t d : {32, 64, 128})
      for (const Kernel& kernel : kKernels) {
        CAPTURE(block);
        CAPTURE(d);
        CAPTURE(kernel.name);
        Case c{2,
               2,
               203,
               d,
               block,
               2,
               {make(SPARSE_PATTERN_FIXED_BLOCK, 32, 0, 0),
                make(SPARSE_PATTERN_FIXED_SUMMARY, 32, 8, 1)}};
        c.gpu_lse = false;
        run_case(c, kernel, cpu.get(), gpu.get(kernel), 41);
      }
}

TEST_CASE("strided column head in natural order (not transposed)") {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  for (int block : {16, 64, 128})
    for (int64_t d : {32, 64, 128})
      for (const Kernel& kernel : kKernels) {
        CAPTURE(block);
        CAPTURE(d);
        CAPTURE(kernel.name);
        Case c{1,
               2,
               1000,
               d,
               block,
               0,
               {make(SPARSE_PATTERN_STRIDED_ROW, 32, 0, 0),
                make(SPARSE_PATTERN_STRIDED_COLUMN, 32, 0, 1)}};
        c.transpose = 0;
        run_case(c, kernel, cpu.get(), gpu.get(kernel), 51);
      }
}

TEST_CASE("CUDA-specific errors: memory kind and unsupported combinations") {
  auto gpu = make_context(SPARSE_BACKEND_CUDA);
  LayoutPtr layout;
  REQUIRE(support::make_layout({make(SPARSE_PATTERN_DENSE, 0)}, 16, 16, 1, layout) == SPARSE_OK);
  std::vector<float> host(16 * 48);
  const int64_t shape[4] = {1, 1, 16, 16};
  sparse_tensor t;
  sparse_tensor_contiguous(&t, host.data(), SPARSE_DTYPE_F32, 4, shape);
  // Host tensors on a CUDA context.
  std::vector<float> out(16 * 48);
  sparse_tensor o;
  sparse_tensor_contiguous(&o, out.data(), SPARSE_DTYPE_F32, 4, shape);
  CHECK(sparse_attention_forward(gpu.get(), layout.get(), nullptr, &t, &t, &t, &o, nullptr) ==
        SPARSE_ERR_UNSUPPORTED);

  // Device tensors with combinations no kernel computes: each is refused with a message.
  DeviceBuffer a(gpu.get(), 16 * 48 * 8), b(gpu.get(), 16 * 48 * 8);
  auto device_tensor = [&](void* p, sparse_dtype dtype, int64_t d) {
    const int64_t s[4] = {1, 1, 16, d};
    sparse_tensor x;
    sparse_tensor_contiguous(&x, p, dtype, 4, s);
    x.memory = SPARSE_MEMORY_DEVICE;
    return x;
  };
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  struct Combo {
    sparse_dtype dtype;
    int64_t d;
    sparse_attention_algorithm algorithm;
    const char* mentions;
  };
  const Combo combos[] = {{SPARSE_DTYPE_BF16, 48, SPARSE_ATTENTION_FUSED, "head_dim"},
                          {SPARSE_DTYPE_F16, 16, SPARSE_ATTENTION_FUSED, "head_dim"},
                          {SPARSE_DTYPE_BF16, 64, SPARSE_ATTENTION_UNFUSED, "unfused"},
                          {SPARSE_DTYPE_F64, 32, SPARSE_ATTENTION_FUSED, "fp32"}};
  for (const Combo& combo : combos) {
    CAPTURE(combo.mentions);
    sparse_tensor in = device_tensor(a.ptr, combo.dtype, combo.d);
    sparse_tensor res = device_tensor(b.ptr, combo.dtype, combo.d);
    params.algorithm = combo.algorithm;
    CHECK(sparse_attention_forward(gpu.get(), layout.get(), &params, &in, &in, &in, &res,
                                   nullptr) == SPARSE_ERR_UNSUPPORTED);
    CHECK(std::string(sparse_last_error()).find(combo.mentions) != std::string::npos);
  }
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

// ------------------------------------------------------------------ non-finite inputs
//
// A NaN or Inf in Q, K, V or dO may reach exactly the results of the queries that attend it (the
// CPU reference's contract, checked there against the naive reference and a finite run). Every
// kernel must agree with the CPU element by element: non-finite where the CPU result is, finite
// and within the kernel's tolerances where it is finite. Cases: the two reported ones (NaN in
// v[79] of causal dense attention; NaN or Inf at a key no query attends in a user layout), NaN in
// q and Inf in dO of queries without keys, garbage in the padded tail of a batch entry, and the
// transposed strided column head with n a multiple of neither block nor stride.

namespace {

struct Outputs {
  std::vector<float> out, lse, dq, dk, dv;  // dense [b, h, n, d]; lse [b, h, n]
};

// Forward and backward on the CPU reference; `in` = q, k, v, dout, dense [b, h, n, d].
Outputs cpu_attention(sparse_context* cpu, sparse_layout* layout, const Shape& sh,
                      const std::vector<float> (&in)[4]) {
  Outputs r;
  std::vector<float> q = in[0], k = in[1], v = in[2], g = in[3];
  for (auto* t : {&r.out, &r.dq, &r.dk, &r.dv}) t->assign(sh.elements(), 0.0f);
  r.lse.assign(static_cast<size_t>(sh.batch * sh.heads * sh.n), 0.0f);
  const int64_t shape[4] = {sh.batch, sh.heads, sh.n, sh.d},
                lse_shape[3] = {sh.batch, sh.heads, sh.n};
  std::vector<float>* data[8] = {&q, &k, &v, &g, &r.out, &r.dq, &r.dk, &r.dv};
  sparse_tensor T[8], L;
  for (int t = 0; t < 8; ++t)
    sparse_tensor_contiguous(&T[t], data[t]->data(), SPARSE_DTYPE_F32, 4, shape);
  sparse_tensor_contiguous(&L, r.lse.data(), SPARSE_DTYPE_F32, 3, lse_shape);
  REQUIRE(sparse_attention_forward(cpu, layout, nullptr, &T[0], &T[1], &T[2], &T[4], &L) ==
          SPARSE_OK);
  REQUIRE(sparse_attention_backward(cpu, layout, nullptr, &T[0], &T[1], &T[2], &T[4], &L, &T[3],
                                    &T[5], &T[6], &T[7]) == SPARSE_OK);
  return r;
}

// The same on the GPU with `kernel`, tensors stored in the order of `sh`; outputs poisoned with
// NaN first.
Outputs gpu_attention(const Kernel& kernel, sparse_context* gpu, sparse_layout* layout,
                      const Shape& sh, const std::vector<float> (&in)[4]) {
  const bool half = kernel.dtype != SPARSE_DTYPE_F32;
  const size_t elem = half ? 2 : 4, bytes = sh.storage() * elem;
  const size_t rows = static_cast<size_t>(sh.batch * sh.heads * sh.n);
  const int64_t shape[4] = {sh.batch, sh.heads, sh.n, sh.d},
                lse_shape[3] = {sh.batch, sh.heads, sh.n};
  std::vector<std::unique_ptr<DeviceBuffer>> dev;
  sparse_tensor D[8], DL;
  for (int t = 0; t < 8; ++t) {
    std::vector<unsigned char> staging(bytes, 0xff);  // NaN in every dtype
    if (t < 4)
      for (int64_t b = 0; b < sh.batch; ++b)
        for (int64_t h = 0; h < sh.heads; ++h)
          for (int64_t i = 0; i < sh.n; ++i)
            for (int64_t c = 0; c < sh.d; ++c) {
              const float x = in[t][sh.dense(b, h, i, c)];
              unsigned char* dst = staging.data() + sh.at(b, h, i, c) * elem;
              const uint16_t bits = kernel.dtype == SPARSE_DTYPE_BF16 ? to_bf16(x) : to_f16(x);
              std::memcpy(dst, half ? static_cast<const void*>(&bits) : &x, elem);
            }
    dev.push_back(std::make_unique<DeviceBuffer>(gpu, bytes));
    REQUIRE(sparse_context_copy(gpu, dev[t]->ptr, SPARSE_MEMORY_DEVICE, staging.data(),
                                SPARSE_MEMORY_HOST, bytes) == SPARSE_OK);
    sparse_tensor_contiguous(&D[t], dev[t]->ptr, kernel.dtype, 4, shape);
    for (int i = 0; i < 4; ++i) D[t].strides[i] = sh.s[i];
    D[t].memory = SPARSE_MEMORY_DEVICE;
  }
  DeviceBuffer dlse(gpu, rows * sizeof(float));
  sparse_tensor_contiguous(&DL, dlse.ptr, SPARSE_DTYPE_F32, 3, lse_shape);
  DL.memory = SPARSE_MEMORY_DEVICE;
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.algorithm = kernel.algorithm;
  REQUIRE_MESSAGE(
      sparse_attention_forward(gpu, layout, &params, &D[0], &D[1], &D[2], &D[4], &DL) == SPARSE_OK,
      sparse_last_error());
  REQUIRE_MESSAGE(sparse_attention_backward(gpu, layout, &params, &D[0], &D[1], &D[2], &D[4], &DL,
                                            &D[3], &D[5], &D[6], &D[7]) == SPARSE_OK,
                  sparse_last_error());
  REQUIRE(sparse_context_synchronize(gpu) == SPARSE_OK);
  Outputs r;
  std::vector<float>* dst[4] = {&r.out, &r.dq, &r.dk, &r.dv};
  std::vector<unsigned char> back(bytes);
  for (int t = 0; t < 4; ++t) {
    REQUIRE(sparse_context_copy(gpu, back.data(), SPARSE_MEMORY_HOST, dev[4 + t]->ptr,
                                SPARSE_MEMORY_DEVICE, bytes) == SPARSE_OK);
    dst[t]->resize(sh.elements());
    for (int64_t b = 0; b < sh.batch; ++b)
      for (int64_t h = 0; h < sh.heads; ++h)
        for (int64_t i = 0; i < sh.n; ++i)
          for (int64_t c = 0; c < sh.d; ++c) {
            const unsigned char* src = back.data() + sh.at(b, h, i, c) * elem;
            float x;
            uint16_t bits;
            std::memcpy(half ? static_cast<void*>(&bits) : &x, src, elem);
            if (half) x = kernel.dtype == SPARSE_DTYPE_BF16 ? from_bf16(bits) : from_f16(bits);
            (*dst[t])[sh.dense(b, h, i, c)] = x;
          }
  }
  r.lse.resize(rows);
  REQUIRE(sparse_context_copy(gpu, r.lse.data(), SPARSE_MEMORY_HOST, dlse.ptr, SPARSE_MEMORY_DEVICE,
                              rows * sizeof(float)) == SPARSE_OK);
  return r;
}

// Element by element: non-finite exactly where the CPU result is, else within `tol` (atol
// scaled by the rms of the finite reference elements).
void compare_finiteness(const char* kernel, const char* name, const std::vector<float>& got,
                        const std::vector<float>& want, const Tol& tol) {
  double sq = 0;
  size_t finite = 0;
  for (float w : want)
    if (std::isfinite(w)) {
      sq += static_cast<double>(w) * w;
      ++finite;
    }
  const double atol = tol.atol * std::max(1.0, finite ? std::sqrt(sq / double(finite)) : 0.0);
  int bad = 0;
  std::string elements;  // the first 40 bad elements' indices
  for (size_t e = 0; e < want.size(); ++e) {
    const double g = got[e], w = want[e];
    const bool ok = std::isfinite(w)
                        ? std::isfinite(g) && std::fabs(g - w) <= atol + tol.rtol * std::fabs(w)
                        : !std::isfinite(g);
    if (ok) continue;
    if (bad < 40) elements += " " + std::to_string(e);
    if (bad++ < 5)
      FAIL_CHECK(std::string(kernel)
                 << ": " << std::string(name) << "[" << e << "]: cuda " << g << ", cpu " << w);
  }
  if (bad > 0)
    FAIL_CHECK(std::string(kernel) << ": " << std::string(name) << ": " << bad
                                   << " bad elements; the first:" << elements);
}

// Every kernel (16-bit ones on inputs rounded to their dtype) against the CPU on `in`.
void check_nonfinite(sparse_layout* layout, const Shape& sh, const std::vector<float> (&in)[4]) {
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  auto gpu = make_gpu_contexts();
  for (const Kernel& kernel : kKernels) {
    if (kernel.dtype != SPARSE_DTYPE_F32 && !tensor_core_dim(sh.d)) continue;
    CAPTURE(kernel.name);
    std::vector<float> rounded[4];
    for (int t = 0; t < 4; ++t) {
      rounded[t] = in[t];
      for (float& x : rounded[t])
        if (kernel.dtype == SPARSE_DTYPE_BF16)
          x = from_bf16(to_bf16(x));
        else if (kernel.dtype == SPARSE_DTYPE_F16)
          x = from_f16(to_f16(x));
    }
    const Outputs want = cpu_attention(cpu.get(), layout, sh, rounded);
    const Outputs got = gpu_attention(kernel, gpu.get(kernel), layout, sh, rounded);
    compare_finiteness(kernel.name, "out", got.out, want.out, kernel.fwd);
    compare_finiteness(kernel.name, "lse", got.lse, want.lse, kernel.lse);
    compare_finiteness(kernel.name, "dq", got.dq, want.dq, kernel.bwd);
    compare_finiteness(kernel.name, "dk", got.dk, want.dk, kernel.bwd);
    compare_finiteness(kernel.name, "dv", got.dv, want.dv, kernel.bwd);
  }
}

void random_fill(const Shape& sh, uint64_t seed, std::vector<float> (&in)[4]) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (auto& t : in) {
    t.resize(sh.elements());
    for (float& x : t) x = uni(rng);
  }
}

// Sets every element of row i of `t` (batch entry b, or all when b < 0) to x.
void fill_row(std::vector<float>& t, const Shape& sh, int64_t i, float x, int64_t b = -1) {
  for (int64_t bb = 0; bb < sh.batch; ++bb)
    for (int64_t h = 0; h < sh.heads; ++h)
      for (int64_t c = 0; c < sh.d; ++c)
        if (b < 0 || b == bb) t[sh.dense(bb, h, i, c)] = x;
}

}  // namespace

TEST_CASE("non-finite: NaN in v[79] of causal dense attention, every kernel") {
  LayoutPtr layout;
  REQUIRE(support::make_layout({make(SPARSE_PATTERN_DENSE, 0)}, 80, 16, 1, layout) == SPARSE_OK);
  const Shape sh(1, 1, 80, 32, 0);
  std::vector<float> in[4];
  random_fill(sh, 31, in);
  fill_row(in[2], sh, 79, std::nanf(""));
  check_nonfinite(layout.get(), sh, in);
}

TEST_CASE("non-finite: NaN or Inf at a key no query attends (user layout), every kernel") {
  // Causal blocks of 16 over n = 80; the element mask removes key 37 from every query.
  const int64_t n = 80, nb = 5;
  const int block = 16;
  std::vector<uint8_t> blocks(static_cast<size_t>(nb * nb), 0), elements;
  for (int64_t I = 0; I < nb; ++I)
    for (int64_t J = 0; J <= I; ++J) {
      blocks[static_cast<size_t>(I * nb + J)] = 1;
      for (int r = 0; r < block; ++r)
        for (int c = 0; c < block; ++c) elements.push_back(J * block + c == 37 ? 0 : 1);
    }
  sparse_layout* raw = nullptr;
  REQUIRE(sparse_layout_create_from_blocks(n, block, 1, blocks.data(), elements.data(), 1, &raw) ==
          SPARSE_OK);
  LayoutPtr layout(raw);
  const Shape sh(1, 1, n, 64, 2);
  for (int which : {2, 1})
    for (float x : {std::nanf(""), INFINITY, -INFINITY}) {
      CAPTURE(which);
      CAPTURE(x);
      std::vector<float> in[4];
      random_fill(sh, 32, in);
      fill_row(in[which], sh, 37, x);
      check_nonfinite(layout.get(), sh, in);
    }
}

TEST_CASE("non-finite: queries without keys, a padded batch tail, the transposed column head") {
  {
    // Fixed summary, l = 64, c = 8: queries 0..55 see no key but sit in computed block rows.
    const std::vector<Pattern> p = {make(SPARSE_PATTERN_FIXED_SUMMARY, 64, 8)};
    LayoutPtr layout;
    REQUIRE(support::make_layout(p, 130, 32, 1, layout) == SPARSE_OK);
    const Shape sh(2, 1, 130, 64, 1);
    std::vector<float> in[4];
    random_fill(sh, 33, in);
    fill_row(in[0], sh, 40, std::nanf(""));
    fill_row(in[3], sh, 41, INFINITY, 1);
    check_nonfinite(layout.get(), sh, in);
  }
  {
    // Batch entry 1 is 61 tokens long, padded to 80 with NaN / Inf keys and values.
    const std::vector<Pattern> p = {make(SPARSE_PATTERN_LOCAL, 40)};
    LayoutPtr layout;
    REQUIRE(support::make_layout(p, 80, 32, 2, layout) == SPARSE_OK);
    const Shape sh(2, 2, 80, 128, 1);
    std::vector<float> in[4];
    random_fill(sh, 34, in);
    for (int64_t i = 61; i < 80; ++i) {
      fill_row(in[1], sh, i, i % 2 ? std::nanf("") : -INFINITY, 1);
      fill_row(in[2], sh, i, i % 3 ? INFINITY : std::nanf(""), 1);
    }
    check_nonfinite(layout.get(), sh, in);
  }
  {
    // Transposed strided column head, n = 203 (multiple of neither 64 nor 16).
    LayoutPtr layout;
    REQUIRE(support::make_layout({make(SPARSE_PATTERN_STRIDED_COLUMN, 16)}, 203, 64, 1, layout) ==
            SPARSE_OK);
    const Shape sh(1, 1, 203, 32, 2);
    std::vector<float> in[4];
    random_fill(sh, 35, in);
    in[2][sh.dense(0, 0, 150, 3)] = std::nanf("");
    in[1][sh.dense(0, 0, 7, 5)] = INFINITY;
    in[0][sh.dense(0, 0, 100, 9)] = -INFINITY;
    check_nonfinite(layout.get(), sh, in);
  }
}

TEST_CASE("non-finite: an attended key of score -inf, NaN in dO, every kernel") {
  // n = 32, blocks of 16: queries 0..15 attend keys 0..15; query 0 also attends key 20, which no
  // other query attends (queries 16..31 attend keys 16..31 causally, key 20 masked out). With
  // k[20][c] = -inf x sign(q[0][c]) the score of (0, 20) is -inf, so P(0, 20) = 0 exactly: with
  // dout[0] = NaN, dS(0, 20) must be selected to 0 (not 0 x NaN), so dk[20] and dv[20] stay 0 as
  // on the CPU. (An underflowed finite score cannot be compared: the CPU's vectorised exp stops
  // at about 1e-38 instead of 0, so there 0 x NaN does reach key 20, as the contract allows.)
  const int64_t n = 32;
  const int block = 16;
  const uint8_t blocks[2 * 2] = {1, 1, 0, 1};
  std::vector<uint8_t> elements;
  for (int r = 0; r < block; ++r)  // block (0, 0): every pair
    for (int c = 0; c < block; ++c) elements.push_back(1);
  for (int r = 0; r < block; ++r)  // block (0, 1): only (query 0, key 20)
    for (int c = 0; c < block; ++c) elements.push_back(r == 0 && c == 4 ? 1 : 0);
  for (int r = 0; r < block; ++r)  // block (1, 1): causal, key 20 masked out
    for (int c = 0; c < block; ++c) elements.push_back(c <= r && c != 4 ? 1 : 0);
  sparse_layout* raw = nullptr;
  REQUIRE(sparse_layout_create_from_blocks(n, block, 1, blocks, elements.data(), 0, &raw) ==
          SPARSE_OK);
  LayoutPtr layout(raw);
  const Shape sh(1, 1, n, 32, 0);
  std::vector<float> in[4];
  random_fill(sh, 36, in);
  for (int64_t c = 0; c < sh.d; ++c)
    in[1][sh.dense(0, 0, 20, c)] = in[0][sh.dense(0, 0, 0, c)] > 0 ? -INFINITY : INFINITY;
  fill_row(in[3], sh, 0, std::nanf(""));
  // The premise, on the CPU: the NaN reaches query 0's dq, and key 20's dk and dv are exactly 0.
  auto cpu = make_context(SPARSE_BACKEND_CPU);
  const Outputs want = cpu_attention(cpu.get(), layout.get(), sh, in);
  REQUIRE(std::isnan(want.dq[sh.dense(0, 0, 0, 0)]));
  for (int64_t c = 0; c < sh.d; ++c) {
    REQUIRE(want.dk[sh.dense(0, 0, 20, c)] == 0.0f);
    REQUIRE(want.dv[sh.dense(0, 0, 20, c)] == 0.0f);
  }
  check_nonfinite(layout.get(), sh, in);
  // The same score of -inf with dO finite: key 20's dk and dv are exactly 0 (query 0's dq may
  // take 0 x Inf, so only dk and dv are compared). Tells an Inf in K apart from the NaN in dO.
  // Then a NaN in dO, and an Inf in q, of query 5, which does not attend key 20: the dK/dV
  // kernel takes its exact path for the query chunk, and key 20's rows must stay 0.
  fill_row(in[3], sh, 0, 0.5f);
  auto gpu = make_gpu_contexts();
  for (int variant = 0; variant < 3; ++variant) {
    std::vector<float> x[4] = {in[0], in[1], in[2], in[3]};
    if (variant == 1) fill_row(x[3], sh, 5, std::nanf(""));
    if (variant == 2) fill_row(x[0], sh, 5, INFINITY);
    for (const Kernel& kernel : kKernels) {
      CAPTURE(variant);
      CAPTURE(kernel.name);
      const Outputs got = gpu_attention(kernel, gpu.get(kernel), layout.get(), sh, x);
      int bad = 0;
      for (int64_t c = 0; c < sh.d; ++c)
        bad += got.dk[sh.dense(0, 0, 20, c)] != 0.0f || got.dv[sh.dense(0, 0, 20, c)] != 0.0f;
      CHECK_MESSAGE(bad == 0, kernel.name << ", variant " << variant << ": dk[20][0..1] "
                                          << got.dk[sh.dense(0, 0, 20, 0)] << " "
                                          << got.dk[sh.dense(0, 0, 20, 1)] << ", dv[20][0] "
                                          << got.dv[sh.dense(0, 0, 20, 0)] << ", dk[21][0] "
                                          << got.dk[sh.dense(0, 0, 21, 0)] << ", dk[5][0] "
                                          << got.dk[sh.dense(0, 0, 5, 0)]);
    }
  }
}
