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
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "attention_check.hpp"
#include "backend.hpp"
#include "model_ops.hpp"
#include "sparse/sparse.h"
#include "sparse_config.h"
#if SPARSE_HAVE_CUDA
#include "libsparse/cuda/model_ops_cuda.hpp"
#endif

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

// SPARSE_CUDA_TC_FORWARD, read when the backend is created, picks the bf16/fp16 forward kernel and
// the description says which; a value other than 1 or 2 fails the context with a message naming
// the variable. (The kernels' results: test_cuda_attention's "fwd2" kernels.)
TEST_CASE("SPARSE_CUDA_TC_FORWARD selects the 16-bit forward kernel, read at creation") {
  const char* previous = std::getenv("SPARSE_CUDA_TC_FORWARD");
  const std::string saved = previous != nullptr ? previous : "";
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CUDA;
  struct Want {
    const char* value;  // null: unset
    const char* says;   // in the description; null: creation fails
  };
  const Want wants[] = {{nullptr, "16-bit forward: v2"},
                        {"1", "16-bit forward: v1"},
                        {"", "16-bit forward: v2"},
                        {"2", "16-bit forward: v2"},
                        {"3", nullptr},
                        {"v2", nullptr}};
  for (const Want& w : wants) {
    CAPTURE(w.value != nullptr ? w.value : "(unset)");
    if (w.value != nullptr)
      setenv("SPARSE_CUDA_TC_FORWARD", w.value, 1);
    else
      unsetenv("SPARSE_CUDA_TC_FORWARD");
    sparse_context* ctx = nullptr;
    const sparse_status status = sparse_context_create(&s, &ctx);
    // Read once: changing the variable afterwards does not change the context.
    setenv("SPARSE_CUDA_TC_FORWARD", w.value != nullptr && std::string(w.value) == "1" ? "2" : "1",
           1);
    if (w.says == nullptr) {
      CHECK(status == SPARSE_ERR_INVALID_ARGUMENT);
      CHECK(std::string(sparse_last_error()).find("SPARSE_CUDA_TC_FORWARD") != std::string::npos);
      continue;
    }
    REQUIRE_MESSAGE(status == SPARSE_OK, sparse_last_error());
    const std::string description = ctx->backend->description();
    std::printf("%s\n", description.c_str());
    CHECK(description.find(w.says) != std::string::npos);
    sparse_context_destroy(ctx);
  }
  if (previous != nullptr)
    setenv("SPARSE_CUDA_TC_FORWARD", saved.c_str(), 1);
  else
    unsetenv("SPARSE_CUDA_TC_FORWARD");
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
  // dq and dk of queries over few keys cancel (a query with one key has dq = 0 exactly): the
  // terms rule of attention_check.hpp, with the causal keys j <= i.
  const check::TermNorms terms =
      check::term_norms(batch, heads, n, d, a.scale, x[0], x[1], x[2], x[3], x[4], lse,
                        [](int, int64_t i, std::vector<uint8_t>& mask) {
                          for (size_t j = 0; j < mask.size(); ++j)
                            mask[j] = static_cast<int64_t>(j) <= i ? 1 : 0;
                        });
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
    const check::Result r = check::compare(got, x[t], d, t == 4 ? tol.fwd : tol.bwd,
                                           t == 5   ? terms.dq
                                           : t == 6 ? terms.dk
                                                    : std::vector<double>{});
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

// ||a - b|| / ||b|| (infinite when b is all zero, or anything is NaN).
double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  const double r = std::sqrt(diff / ref);
  return std::isnan(r) ? HUGE_VAL : r;
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
// the held range reads the copy rounded at the hold, which must equal rounding at the call: the
// same 16-bit inputs, so the products agree to fp32 accumulation (relative L2 below 1e-6; a
// rounding mode other than round-to-nearest-even would be ~1e-3 off). Not bit for bit: cuBLAS
// picks its kernel by the operands' alignment, and the held copy of w (5 floats into the held
// range: 10 bytes) is aligned differently from a fresh scratch buffer; the first GPU run
// (2026-11-30) saw fp16 products differ in the last bits. After the weights change and are held
// again, the new copy is read (the old product is far off).
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
    const std::vector<float> held = product(*ops);
    CHECK(relative_l2(held, each_call) < 1e-6);
    ops->release_weights();
    // New weights: the next hold rounds them again.
    std::vector<float> hw2 = hw;
    for (auto& e : hw2) e = -0.5f * e;
    put(w, hw2);
    const std::vector<float> each_call2 = product(*ops);
    CHECK(relative_l2(each_call2, each_call) > 1.0);
    ops->hold_weights(w, held_n);
    const std::vector<float> held2 = product(*ops);
    CHECK(relative_l2(held2, each_call2) < 1e-6);
    CHECK(relative_l2(held2, held) > 1.0);
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

#if SPARSE_HAVE_CUDA
// The forward product with a bias (ModelOps::linear_forward) through cuBLASLt's bias epilogue: for
// fp32 products (no TF32) and bf16/fp16 ones (fp32 accumulation), y = x w + b equals a host
// reference in double on the operands the product reads (rounded to 16 bits for bf16/fp16), and
// agrees with cublasGemmEx + the bias kernel (a second context made with SPARSE_CUDA_LT=0). Shapes
// with odd and even sizes; `offset` 1 starts x, w, b and y one float past an allocation (4-byte
// alignment: cuBLASLt must pick an algorithm that copes, or refuse and fall back). Prints which
// path each product took; the fully aligned fp32 product (96x128x256) must take the epilogue.
TEST_CASE("linear forward with a bias through the cuBLASLt epilogue equals a double reference") {
  const char* previous = std::getenv("SPARSE_CUDA_LT");
  const std::string saved = previous != nullptr ? previous : "";
  unsetenv("SPARSE_CUDA_LT");
  sparse_context* lt_ctx = context(SPARSE_BACKEND_CUDA);
  setenv("SPARSE_CUDA_LT", "0", 1);
  sparse_context* gx_ctx = context(SPARSE_BACKEND_CUDA);
  if (previous != nullptr)
    setenv("SPARSE_CUDA_LT", saved.c_str(), 1);
  else
    unsetenv("SPARSE_CUDA_LT");
  sparse::Backend& bl = *lt_ctx->backend;
  sparse::Backend& bg = *gx_ctx->backend;

  struct Shape {
    int64_t rows, in, out, offset;
  };
  const Shape shapes[] = {{17, 33, 65, 0}, {96, 128, 256, 0}, {17, 33, 65, 1}, {96, 128, 256, 1}};
  std::mt19937_64 rng(45);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  uint64_t product = 0;
  for (sparse_dtype dtype : {SPARSE_DTYPE_F32, SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
    const char* dname = dtype == SPARSE_DTYPE_F32    ? "fp32"
                        : dtype == SPARSE_DTYPE_BF16 ? "bf16"
                                                     : "fp16";
    sparse::ModelOps<float>* lt =
        dtype == SPARSE_DTYPE_F32 ? bl.model_ops_f32() : bl.model_ops_mixed(dtype);
    sparse::ModelOps<float>* gx =
        dtype == SPARSE_DTYPE_F32 ? bg.model_ops_f32() : bg.model_ops_mixed(dtype);
    REQUIRE(lt != nullptr);
    REQUIRE(gx != nullptr);
    CHECK(sparse::cuda::linear_bias_stats(*lt).lt_enabled);
    CHECK_FALSE(sparse::cuda::linear_bias_stats(*gx).lt_enabled);
    for (const Shape& sh : shapes) {
      CAPTURE(dname);
      CAPTURE(sh.rows);
      CAPTURE(sh.in);
      CAPTURE(sh.out);
      CAPTURE(sh.offset);
      const size_t nx = static_cast<size_t>(sh.rows * sh.in),
                   nw = static_cast<size_t>(sh.in * sh.out),
                   ny = static_cast<size_t>(sh.rows * sh.out), nb = static_cast<size_t>(sh.out);
      std::vector<float> hx(nx), hw(nw), hb(nb);
      for (auto* v : {&hx, &hw, &hb})
        for (auto& e : *v) e = uni(rng);
      // The reference on the operands the product reads (the bias stays fp32).
      std::vector<double> ref(ny);
      double ref_norm = 0;
      for (int64_t r = 0; r < sh.rows; ++r)
        for (int64_t o = 0; o < sh.out; ++o) {
          double acc = hb[static_cast<size_t>(o)];
          for (int64_t i = 0; i < sh.in; ++i)
            acc += static_cast<double>(
                       check::round_to(dtype, hx[static_cast<size_t>(r * sh.in + i)])) *
                   check::round_to(dtype, hw[static_cast<size_t>(i * sh.out + o)]);
          ref[static_cast<size_t>(r * sh.out + o)] = acc;
          ref_norm += acc * acc;
        }
      ref_norm = std::sqrt(ref_norm);
      // y = x w + b on one backend; every input starts `offset` floats into its allocation.
      auto forward = [&](sparse::Backend& b, sparse::ModelOps<float>& ops) {
        std::vector<void*> blocks;
        auto put = [&](const std::vector<float>& host) {
          void* p = b.allocate((host.size() + 1) * 4);
          blocks.push_back(p);
          float* at = static_cast<float*>(p) + sh.offset;
          b.copy(at, SPARSE_MEMORY_DEVICE, host.data(), SPARSE_MEMORY_HOST, host.size() * 4);
          return at;
        };
        const float *x = put(hx), *w = put(hw), *bias = put(hb);
        float* y = put(std::vector<float>(ny, std::nanf("")));
        ops.linear_forward(x, w, bias, sh.rows, sh.in, sh.out, y);
        std::vector<float> r(ny);
        b.copy(r.data(), SPARSE_MEMORY_HOST, y, SPARSE_MEMORY_DEVICE, ny * 4);
        for (void* p : blocks) b.free(p);
        return r;
      };
      const sparse::cuda::LinearBiasStats before = sparse::cuda::linear_bias_stats(*lt);
      const std::vector<float> y_lt = forward(bl, *lt), y_lt2 = forward(bl, *lt),
                               y_gx = forward(bg, *gx);
      const sparse::cuda::LinearBiasStats after = sparse::cuda::linear_bias_stats(*lt);
      const bool epilogue = after.lt_calls == before.lt_calls + 2;
      CHECK(after.lt_calls + after.fallback_calls == before.lt_calls + before.fallback_calls + 2);
      double err_lt = 0, err_gx = 0, diff = 0;
      for (size_t e = 0; e < ny; ++e) {
        err_lt += (y_lt[e] - ref[e]) * (y_lt[e] - ref[e]);
        err_gx += (y_gx[e] - ref[e]) * (y_gx[e] - ref[e]);
        diff += (static_cast<double>(y_lt[e]) - y_gx[e]) * (static_cast<double>(y_lt[e]) - y_gx[e]);
      }
      err_lt = std::sqrt(err_lt) / ref_norm;
      err_gx = std::sqrt(err_gx) / ref_norm;
      diff = std::sqrt(diff) / ref_norm;
      std::printf(
          "linear bias %s %lldx%lldx%lld offset %lld: %s; relative L2 error %.3g (cuBLAS + "
          "bias kernel %.3g), difference %.3g%s%s\n",
          dname, static_cast<long long>(sh.rows), static_cast<long long>(sh.in),
          static_cast<long long>(sh.out), static_cast<long long>(sh.offset),
          epilogue ? "cuBLASLt epilogue" : "fell back to cuBLAS + bias kernel", err_lt, err_gx,
          diff, after.note.empty() ? "" : "; note: ", after.note.c_str());
      CHECK(err_lt < 1e-6);  // NaN fails too
      CHECK(err_gx < 1e-6);
      CHECK(diff < 1e-6);
      CHECK(y_lt2 == y_lt);  // the same plan repeats bit for bit
      // The fully aligned fp32 product must take the epilogue (else it is never exercised).
      if (sh.offset == 0 && sh.rows % 16 == 0 && dtype == SPARSE_DTYPE_F32)
        CHECK_MESSAGE(epilogue, after.note);
      ++product;
    }
    const sparse::cuda::LinearBiasStats off = sparse::cuda::linear_bias_stats(*gx);
    CHECK(off.lt_calls == 0);
    CHECK(off.fallback_calls == static_cast<int64_t>(std::size(shapes)));
    CHECK(off.note.find("SPARSE_CUDA_LT=0") != std::string::npos);
  }
  const std::string description = bl.description();
  std::printf("%s\n", description.c_str());
  CHECK(description.find("linear bias: cuBLASLt epilogue") != std::string::npos);
  CHECK(bg.description().find("SPARSE_CUDA_LT=0") != std::string::npos);
  CHECK(product == 3 * std::size(shapes));
  sparse_context_destroy(gx_ctx);
  sparse_context_destroy(lt_ctx);
}
#endif

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
