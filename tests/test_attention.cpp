// CPU block-sparse attention against the naive double-precision reference (naive_attention.hpp):
// a randomized sweep over patterns, lengths, block sizes, head sizes and strides; gradients by
// finite differences; bad inputs.
//
// Tolerances (fp32 kernel vs double reference, inputs uniform in [-1, 1]):
//   forward  |got - want| <= 2e-5 + 1e-4 |want|   (out and lse)
//   backward |got - want| <= 1e-4 + 1e-3 |want|   (dq, dk, dv)
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "test_support.hpp"

using naive::Pattern;
using support::LayoutPtr;

namespace {

struct ContextDeleter {
  void operator()(sparse_context* c) const { sparse_context_destroy(c); }
};
using ContextPtr = std::unique_ptr<sparse_context, ContextDeleter>;

ContextPtr cpu_context(int threads) {
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CPU;
  s.num_threads = threads;
  sparse_context* c = nullptr;
  REQUIRE(sparse_context_create(&s, &c) == SPARSE_OK);
  return ContextPtr(c);
}

// Memory orders for the 4-D tensors: 0 = [b, h, n, d] contiguous, 1 = stored as [b, n, h, d],
// 2 = contiguous with the head dimension padded (row stride d + 3).
struct Strided {
  std::vector<float> storage;
  sparse_tensor t{};
  Strided(int64_t B, int64_t H, int64_t N, int64_t D, int order) {
    t.dtype = SPARSE_DTYPE_F32;
    t.memory = SPARSE_MEMORY_HOST;
    t.ndim = 4;
    t.shape[0] = B;
    t.shape[1] = H;
    t.shape[2] = N;
    t.shape[3] = D;
    if (order == 1) {
      t.strides[3] = 1;
      t.strides[1] = D;
      t.strides[2] = H * D;
      t.strides[0] = N * H * D;
    } else {
      const int64_t row = order == 2 ? D + 3 : D;
      t.strides[3] = 1;
      t.strides[2] = row;
      t.strides[1] = N * row;
      t.strides[0] = H * N * row;
    }
    storage.assign(static_cast<size_t>(B * t.strides[0]), std::nanf(""));  // padding = NaN
    t.data = storage.data();
  }
  float& at(int64_t b, int64_t h, int64_t i, int64_t c) {
    return storage[static_cast<size_t>(b * t.strides[0] + h * t.strides[1] + i * t.strides[2] +
                                       c * t.strides[3])];
  }
};

struct Case {
  int64_t batch, heads, n, d;
  int block;
  int order;
  int transpose = 1;
  std::vector<Pattern> patterns;
};

bool close(double got, double want, double atol, double rtol) {
  if (std::isinf(want)) return got == want;
  return std::isfinite(got) && std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

// Compares a strided fp32 tensor with a dense double reference; reports the first mismatches.
void compare(const char* name, Strided& got, const std::vector<double>& want,
             const naive::Problem& pb, double atol, double rtol) {
  int reported = 0;
  double ref_sq = 0, err_sq = 0;
  for (int64_t b = 0; b < pb.batch; ++b)
    for (int64_t h = 0; h < pb.heads; ++h)
      for (int64_t i = 0; i < pb.n; ++i)
        for (int64_t c = 0; c < pb.d; ++c) {
          const double g = got.at(b, h, i, c), w = want[pb.at(b, h, i, c)];
          err_sq += (g - w) * (g - w);
          ref_sq += w * w;
          if (!close(g, w, atol, rtol) && reported++ < 5)
            FAIL_CHECK(std::string(name) << "[" << b << "," << h << "," << i << "," << c
                                         << "] = " << g << ", reference " << w);
        }
  if (ref_sq > 0) CHECK(err_sq / ref_sq < 1e-9);  // normalised error over the whole tensor
}

void run_case(const Case& c, sparse_context* ctx, bool with_backward, uint64_t seed,
              sparse_attention_algorithm algorithm = SPARSE_ATTENTION_FUSED) {
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.algorithm = algorithm;
  LayoutPtr layout;
  REQUIRE_MESSAGE(support::make_layout(c.patterns, c.n, c.block, static_cast<int>(c.heads), layout,
                                       c.transpose) == SPARSE_OK,
                  sparse_last_error());
  naive::Problem pb{c.batch, c.heads, c.n, c.d, 1.0 / std::sqrt(static_cast<double>(c.d)), {}};
  for (int h = 0; h < c.heads; ++h)
    pb.masks.push_back(naive::head_mask(c.patterns, h, c.n, c.block));

  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  Strided q(c.batch, c.heads, c.n, c.d, c.order), k(c.batch, c.heads, c.n, c.d, c.order),
      v(c.batch, c.heads, c.n, c.d, c.order), out(c.batch, c.heads, c.n, c.d, c.order),
      dout(c.batch, c.heads, c.n, c.d, c.order), dq(c.batch, c.heads, c.n, c.d, c.order),
      dk(c.batch, c.heads, c.n, c.d, c.order), dv(c.batch, c.heads, c.n, c.d, c.order);
  const size_t size = static_cast<size_t>(c.batch * c.heads * c.n * c.d);
  std::vector<double> qd(size), kd(size), vd(size), doutd(size);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.n; ++i)
        for (int64_t e = 0; e < c.d; ++e) {
          const size_t at = pb.at(b, h, i, e);
          qd[at] = q.at(b, h, i, e) = uni(rng);
          kd[at] = k.at(b, h, i, e) = uni(rng);
          vd[at] = v.at(b, h, i, e) = uni(rng);
          doutd[at] = dout.at(b, h, i, e) = uni(rng);
        }
  std::vector<float> lse(static_cast<size_t>(c.batch * c.heads * c.n), std::nanf(""));
  sparse_tensor lse_t;
  const int64_t lse_shape[3] = {c.batch, c.heads, c.n};
  sparse_tensor_contiguous(&lse_t, lse.data(), SPARSE_DTYPE_F32, 3, lse_shape);

  REQUIRE_MESSAGE(sparse_attention_forward(ctx, layout.get(), &params, &q.t, &k.t, &v.t, &out.t,
                                           &lse_t) == SPARSE_OK,
                  sparse_last_error());
  std::vector<double> out_ref, lse_ref;
  naive::forward(pb, qd, kd, vd, out_ref, lse_ref);
  compare("out", out, out_ref, pb, 2e-5, 1e-4);
  int lse_bad = 0;
  for (size_t r = 0; r < lse.size(); ++r)
    if (!close(lse[r], lse_ref[r], 2e-5, 1e-4) && lse_bad++ < 5)
      FAIL_CHECK("lse[" << r << "] = " << lse[r] << ", reference " << lse_ref[r]);
  if (!with_backward) return;

  REQUIRE_MESSAGE(sparse_attention_backward(ctx, layout.get(), &params, &q.t, &k.t, &v.t, &out.t,
                                            &lse_t, &dout.t, &dq.t, &dk.t, &dv.t) == SPARSE_OK,
                  sparse_last_error());
  std::vector<double> dq_ref, dk_ref, dv_ref;
  naive::backward(pb, qd, kd, vd, doutd, dq_ref, dk_ref, dv_ref);
  compare("dq", dq, dq_ref, pb, 1e-4, 1e-3);
  compare("dk", dk, dk_ref, pb, 1e-4, 1e-3);
  compare("dv", dv, dv_ref, pb, 1e-4, 1e-3);
}

Pattern make(sparse_pattern_kind kind, int64_t stride = 0, int64_t summary = 0, int head = -1) {
  Pattern p;
  p.kind = kind;
  p.stride = stride;
  p.window = stride;
  p.summary = summary;
  p.head = head;
  return p;
}

}  // namespace

// Multi-head strided (row on head 0, transposed column on head 1) and fixed with the summary
// head, forward and backward, for every block size and head size; n = 203 is a multiple of
// neither the block nor the stride.
static void paper_patterns_sweep(sparse_context* ctx, uint64_t seed,
                                 sparse_attention_algorithm algorithm) {
  for (int block : {16, 32, 64, 128}) {
    for (int64_t d : {32, 64, 128}) {
      CAPTURE(block);
      CAPTURE(d);
      run_case({2,
                2,
                203,
                d,
                block,
                0,
                1,
                {make(SPARSE_PATTERN_STRIDED_ROW, 16, 0, 0),
                 make(SPARSE_PATTERN_STRIDED_COLUMN, 16, 0, 1)}},
               ctx, true, seed++, algorithm);
      run_case({1,
                2,
                203,
                d,
                block,
                1,
                1,
                {make(SPARSE_PATTERN_FIXED_BLOCK, 32, 0, 0),
                 make(SPARSE_PATTERN_FIXED_SUMMARY, 32, 8, 1)}},
               ctx, true, seed++, algorithm);
    }
  }
}

TEST_CASE("the paper's patterns, forward and backward, every block size and head size") {
  auto ctx = cpu_context(2);
  paper_patterns_sweep(ctx.get(), 1, SPARSE_ATTENTION_FUSED);
}

namespace {

// `trials` random cases (pattern kinds, n < B, empty rows, memory orders, transposed heads,
// batch and heads > 1), each against the double reference, forward and backward.
void random_sweep(sparse_context* ctx, uint64_t seed, int trials,
                  sparse_attention_algorithm algorithm) {
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < trials; ++trial) {
    Case c;
    c.block = 16 << (rng() % 4);
    c.n = 1 + static_cast<int64_t>(rng() % 180);
    c.d = 32 << (rng() % 3);
    c.batch = 1 + static_cast<int64_t>(rng() % 2);
    c.heads = 1 + static_cast<int64_t>(rng() % 3);
    c.order = static_cast<int>(rng() % 3);
    c.transpose = static_cast<int>(rng() % 2);
    const int count = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < count; ++k)
      c.patterns.push_back(
          support::random_pattern(rng, c.n, static_cast<int>(rng() % (c.heads + 1)) - 1, c.block));
    CAPTURE(trial);
    CAPTURE(c.n);
    CAPTURE(c.block);
    CAPTURE(c.d);
    run_case(c, ctx, true, rng(), algorithm);
  }
}

}  // namespace

TEST_CASE("randomized sweep: all patterns, n < B, empty rows, strides, batch and heads > 1") {
  auto ctx = cpu_context(2);
  random_sweep(ctx.get(), 7, 40, SPARSE_ATTENTION_FUSED);
}

TEST_CASE("thread counts give the same results as the reference") {
  for (int threads : {1, 3}) {
    auto ctx = cpu_context(threads);
    run_case({1, 1, 300, 32, 32, 0, 1, {make(SPARSE_PATTERN_STRIDED_COLUMN, 17)}}, ctx.get(), true,
             42);
    run_case({3, 2, 100, 32, 16, 0, 1, {make(SPARSE_PATTERN_LOCAL, 10)}}, ctx.get(), true, 43);
  }
}

TEST_CASE("the transposed strided column head equals its natural-order definition") {
  // Larger n with l not dividing n: padding and masking in the transposed order.
  auto ctx = cpu_context(2);
  run_case({1, 1, 1000, 32, 64, 0, 1, {make(SPARSE_PATTERN_STRIDED_COLUMN, 31)}}, ctx.get(), true,
           5);
  run_case({1, 1, 1000, 32, 64, 0, 0, {make(SPARSE_PATTERN_STRIDED_COLUMN, 31)}}, ctx.get(), true,
           5);
}

// L = sum(dout * attention(q, k, v)); each input element is perturbed by +-h in double and the
// naive forward re-evaluated. Checks the fp32 library gradient directly against it.
static void check_finite_differences(sparse_attention_algorithm algorithm) {
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.algorithm = algorithm;
  auto ctx = cpu_context(2);
  const int64_t n = 37, d = 32;
  const std::vector<Pattern> patterns = {make(SPARSE_PATTERN_STRIDED_ROW, 6, 0, 0),
                                         make(SPARSE_PATTERN_STRIDED_COLUMN, 6, 0, 0),
                                         make(SPARSE_PATTERN_FIXED_SUMMARY, 8, 3, 1)};
  LayoutPtr layout;
  REQUIRE(support::make_layout(patterns, n, 16, 2, layout) == SPARSE_OK);
  naive::Problem pb{1, 2, n, d, 1.0 / std::sqrt(double(d)), {}};
  for (int h = 0; h < 2; ++h) pb.masks.push_back(naive::head_mask(patterns, h, n, 16));
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> uni(-1, 1);
  const size_t size = static_cast<size_t>(2 * n * d);
  std::vector<double> in[4];
  for (auto& t : in) {
    t.resize(size);
    for (auto& x : t) x = static_cast<float>(uni(rng));  // representable in fp32
  }
  std::vector<float> f[8];
  for (int t = 0; t < 8; ++t) f[t].assign(size, 0.0f);
  for (int t = 0; t < 4; ++t)
    for (size_t e = 0; e < size; ++e) f[t][e] = static_cast<float>(in[t][e]);
  const int64_t shape[4] = {1, 2, n, d}, lse_shape[3] = {1, 2, n};
  sparse_tensor T[8], lse_t;
  for (int t = 0; t < 8; ++t)
    sparse_tensor_contiguous(&T[t], f[t].data(), SPARSE_DTYPE_F32, 4, shape);
  std::vector<float> lse(static_cast<size_t>(2 * n));
  sparse_tensor_contiguous(&lse_t, lse.data(), SPARSE_DTYPE_F32, 3, lse_shape);
  // T: 0 q, 1 k, 2 v, 3 dout, 4 out, 5 dq, 6 dk, 7 dv
  REQUIRE(sparse_attention_forward(ctx.get(), layout.get(), &params, &T[0], &T[1], &T[2], &T[4],
                                   &lse_t) == SPARSE_OK);
  REQUIRE(sparse_attention_backward(ctx.get(), layout.get(), &params, &T[0], &T[1], &T[2], &T[4],
                                    &lse_t, &T[3], &T[5], &T[6], &T[7]) == SPARSE_OK);
  auto loss = [&]() {
    std::vector<double> out, l;
    naive::forward(pb, in[0], in[1], in[2], out, l);
    double s = 0;
    for (size_t e = 0; e < size; ++e) s += out[e] * in[3][e];
    return s;
  };
  const double h = 1e-5;
  for (int t = 0; t < 3; ++t) {
    int bad = 0;
    for (size_t e = 0; e < size; e += 3) {  // every third element keeps the test quick
      const double saved = in[t][e];
      in[t][e] = saved + h;
      const double up = loss();
      in[t][e] = saved - h;
      const double down = loss();
      in[t][e] = saved;
      const double fd = (up - down) / (2 * h);
      const double got = f[5 + t][e];
      if (std::fabs(got - fd) > 1e-4 + 1e-3 * std::fabs(fd) && bad++ < 5)
        FAIL_CHECK("grad "
                   << "qkv"[t] << "[" << e << "] = " << got << ", finite difference " << fd);
    }
  }
}

TEST_CASE("gradients match central finite differences of the double-precision reference") {
  check_finite_differences(SPARSE_ATTENTION_FUSED);
}

TEST_CASE("rows without keys give zero output, -inf lse and zero gradients, never NaN") {
  auto ctx = cpu_context(2);
  // Fixed summary with l = 64, c = 8: queries 0..55 see no key; head 1 is named by no pattern.
  run_case({1, 2, 130, 32, 32, 0, 1, {make(SPARSE_PATTERN_FIXED_SUMMARY, 64, 8, 0)}}, ctx.get(),
           true, 9);
}

TEST_CASE("bad attention arguments give their error and a message") {
  auto ctx = cpu_context(1);
  LayoutPtr layout;
  REQUIRE(support::make_layout({make(SPARSE_PATTERN_DENSE)}, 32, 16, 2, layout) == SPARSE_OK);
  const int64_t shape[4] = {1, 2, 32, 16}, lse_shape[3] = {1, 2, 32};
  std::vector<float> buf[8];
  sparse_tensor T[8], lse_t;
  for (int t = 0; t < 8; ++t) {
    buf[t].assign(1 * 2 * 32 * 16, 0.5f);
    sparse_tensor_contiguous(&T[t], buf[t].data(), SPARSE_DTYPE_F32, 4, shape);
  }
  std::vector<float> lse(64);
  sparse_tensor_contiguous(&lse_t, lse.data(), SPARSE_DTYPE_F32, 3, lse_shape);
  auto fwd = [&](sparse_tensor* q, sparse_tensor* out) {
    return sparse_attention_forward(ctx.get(), layout.get(), nullptr, q, &T[1], &T[2], out, &lse_t);
  };
  auto mentions = [](const char* s) {
    return std::string(sparse_last_error()).find(s) != std::string::npos;
  };
  REQUIRE(fwd(&T[0], &T[3]) == SPARSE_OK);

  CHECK(fwd(nullptr, &T[3]) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(mentions("q is NULL"));
  CHECK(sparse_attention_forward(nullptr, layout.get(), nullptr, &T[0], &T[1], &T[2], &T[3],
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_attention_forward(ctx.get(), nullptr, nullptr, &T[0], &T[1], &T[2], &T[3],
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  sparse_tensor bad = T[0];
  bad.shape[2] = 31;  // seq_len mismatch with the layout (and with k, v)
  CHECK(fwd(&bad, &T[3]) == SPARSE_ERR_INVALID_ARGUMENT);
  bad = T[0];
  bad.shape[0] = 0;  // zero batch
  sparse_tensor bad_out = T[3];
  bad_out.shape[0] = 0;
  sparse_tensor bad_k = T[1], bad_v = T[2];
  bad_k.shape[0] = bad_v.shape[0] = 0;
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), nullptr, &bad, &bad_k, &bad_v, &bad_out,
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(mentions("batch"));
  bad = T[0];
  bad.ndim = 3;
  CHECK(fwd(&bad, &T[3]) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(mentions("ndim"));
  bad = T[3];
  bad.strides[2] = 0;  // overlapping output rows
  CHECK(fwd(&T[0], &bad) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(mentions("overlapping"));
  CHECK(fwd(&T[0], &T[0]) == SPARSE_ERR_INVALID_ARGUMENT);  // out aliases q
  CHECK(mentions("overlap"));
  bad = T[0];
  bad.data = nullptr;
  CHECK(fwd(&bad, &T[3]) == SPARSE_ERR_INVALID_ARGUMENT);
  bad = T[0];
  bad.strides[1] = -1;
  CHECK(fwd(&bad, &T[3]) == SPARSE_ERR_INVALID_ARGUMENT);
  // An fp32 tensor that starts 2 bytes into its buffer: refused on every backend (on a GPU the
  // misaligned load would be a fault that ends the context).
  std::vector<float> shifted(buf[0].size() + 1, 0.5f);
  bad = T[0];
  bad.data = reinterpret_cast<char*>(shifted.data()) + 2;
  CHECK(fwd(&bad, &T[3]) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(mentions("q.data"));
  CHECK(mentions("not aligned to the 4 bytes"));
  // Unsupported on the CPU backend: fp16 tensors, device memory.
  sparse_tensor half[4];
  for (int t = 0; t < 4; ++t) {
    half[t] = T[t];
    half[t].dtype = SPARSE_DTYPE_F16;
  }
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), nullptr, &half[0], &half[1], &half[2],
                                 &half[3], nullptr) == SPARSE_ERR_UNSUPPORTED);
  for (int t = 0; t < 4; ++t) {
    half[t] = T[t];
    half[t].memory = SPARSE_MEMORY_DEVICE;
  }
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), nullptr, &half[0], &half[1], &half[2],
                                 &half[3], nullptr) == SPARSE_ERR_UNSUPPORTED);
  // Mixed dtypes.
  half[0] = T[0];
  half[1] = T[1];
  half[1].dtype = SPARSE_DTYPE_F64;
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), nullptr, &half[0], &half[1], &T[2], &T[3],
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  // Params.
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.scale = std::nanf("");
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), &params, &T[0], &T[1], &T[2], &T[3],
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  params.scale = 1.0f;
  params.struct_size = 3;
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), &params, &T[0], &T[1], &T[2], &T[3],
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  // Backward needs lse; outputs must not alias.
  CHECK(sparse_attention_backward(ctx.get(), layout.get(), nullptr, &T[0], &T[1], &T[2], &T[3],
                                  nullptr, &T[4], &T[5], &T[6],
                                  &T[7]) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(mentions("lse"));
  CHECK(sparse_attention_backward(ctx.get(), layout.get(), nullptr, &T[0], &T[1], &T[2], &T[3],
                                  &lse_t, &T[4], &T[5], &T[5],
                                  &T[7]) == SPARSE_ERR_INVALID_ARGUMENT);
  size_t bytes = 0;
  CHECK(sparse_attention_workspace_size(ctx.get(), layout.get(), 1, 16, 1, &bytes) == SPARSE_OK);
  CHECK(bytes > 0);
  CHECK(sparse_attention_workspace_size(ctx.get(), layout.get(), 0, 16, 1, &bytes) ==
        SPARSE_ERR_INVALID_ARGUMENT);
}

// ------------------------------------------------------------ the unfused (2019-style) path

TEST_CASE("unfused: the paper's patterns, forward and backward, every block size and head size") {
  auto ctx = cpu_context(2);
  paper_patterns_sweep(ctx.get(), 100, SPARSE_ATTENTION_UNFUSED);
}

TEST_CASE("unfused: randomized sweep, all patterns, n < B, empty rows, strides, batch and heads") {
  auto ctx = cpu_context(2);
  random_sweep(ctx.get(), 17, 30, SPARSE_ATTENTION_UNFUSED);
}

TEST_CASE("unfused: rows without keys, single thread, transposed column head") {
  auto ctx = cpu_context(2);
  run_case({1, 2, 130, 32, 32, 0, 1, {make(SPARSE_PATTERN_FIXED_SUMMARY, 64, 8, 0)}}, ctx.get(),
           true, 9, SPARSE_ATTENTION_UNFUSED);
  run_case({1, 1, 1000, 32, 64, 0, 1, {make(SPARSE_PATTERN_STRIDED_COLUMN, 31)}}, ctx.get(), true,
           5, SPARSE_ATTENTION_UNFUSED);
  auto one = cpu_context(1);
  run_case({3, 2, 100, 32, 16, 2, 1, {make(SPARSE_PATTERN_LOCAL, 10)}}, one.get(), true, 43,
           SPARSE_ATTENTION_UNFUSED);
}

TEST_CASE("unfused: gradients match central finite differences") {
  check_finite_differences(SPARSE_ATTENTION_UNFUSED);
}

TEST_CASE(
    "workspace size: a batch or head_dim beyond 64-bit offsets is refused, a large one is "
    "answered without listing every (batch, head) pair") {
  auto ctx = cpu_context(2);
  LayoutPtr layout;
  const std::vector<Pattern> patterns = {make(SPARSE_PATTERN_STRIDED_ROW, 64, 0, 0),
                                         make(SPARSE_PATTERN_FIXED_SUMMARY, 64, 16, 1)};
  REQUIRE(support::make_layout(patterns, 1000, 32, 2, layout) == SPARSE_OK);
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.algorithm = SPARSE_ATTENTION_UNFUSED;
  size_t bytes = 0;
  // batch * computed blocks * 32 * 32 * 4 bytes of scores wrapped around size_t.
  CHECK(sparse_attention_workspace_size_params(ctx.get(), layout.get(), &params, int64_t{1} << 50,
                                               64, 0, &bytes) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("batch = 1125899906842624") != std::string::npos);
  CHECK(sparse_attention_workspace_size(ctx.get(), layout.get(), 1, int64_t{1} << 60, 1, &bytes) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("head_dim") != std::string::npos);
  // 2^36 sequences of [2, 1000, 1] fit 64-bit offsets. Once the batch is large enough that no
  // (batch, head) pair is split across threads, the fused backward workspace no longer depends on
  // the batch: 2^36 needs what 64 needs (no list of 2^37 pairs is built to find that out).
  size_t large = 0, small = 0;
  CHECK(sparse_attention_workspace_size(ctx.get(), layout.get(), int64_t{1} << 36, 1, 1, &large) ==
        SPARSE_OK);
  CHECK(sparse_attention_workspace_size(ctx.get(), layout.get(), 64, 1, 1, &small) == SPARSE_OK);
  CHECK(small > 0);
  CHECK(large == small);
}

TEST_CASE("unfused: the workspace stores every computed block; bad algorithm values are rejected") {
  auto ctx = cpu_context(2);
  LayoutPtr layout;
  const std::vector<Pattern> patterns = {make(SPARSE_PATTERN_STRIDED_ROW, 64, 0, 0),
                                         make(SPARSE_PATTERN_FIXED_SUMMARY, 64, 16, 1)};
  REQUIRE(support::make_layout(patterns, 1000, 32, 2, layout) == SPARSE_OK);
  sparse_layout_stats stats;
  stats.struct_size = sizeof stats;
  REQUIRE(sparse_layout_get_stats(layout.get(), -1, &stats) == SPARSE_OK);
  const int64_t blocks = stats.nnz_blocks;  // over all heads
  REQUIRE(blocks > 0);
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  CHECK(params.algorithm == SPARSE_ATTENTION_FUSED);
  const int64_t batch = 3, d = 64;
  size_t fused = 0, fused_p = 0, unfused_fwd = 0, unfused_bwd = 0;
  REQUIRE(sparse_attention_workspace_size(ctx.get(), layout.get(), batch, d, 0, &fused) ==
          SPARSE_OK);
  REQUIRE(sparse_attention_workspace_size_params(ctx.get(), layout.get(), nullptr, batch, d, 0,
                                                 &fused_p) == SPARSE_OK);
  CHECK(fused == fused_p);
  params.algorithm = SPARSE_ATTENTION_UNFUSED;
  REQUIRE(sparse_attention_workspace_size_params(ctx.get(), layout.get(), &params, batch, d, 0,
                                                 &unfused_fwd) == SPARSE_OK);
  REQUIRE(sparse_attention_workspace_size_params(ctx.get(), layout.get(), &params, batch, d, 1,
                                                 &unfused_bwd) == SPARSE_OK);
  const size_t scores = static_cast<size_t>(batch * blocks) * 32 * 32 * sizeof(float);
  CHECK(unfused_fwd >= scores);
  CHECK(unfused_bwd >= 2 * scores);
  CHECK(unfused_fwd > fused);

  params.algorithm = 7;
  size_t bytes = 0;
  CHECK(sparse_attention_workspace_size_params(ctx.get(), layout.get(), &params, batch, d, 0,
                                               &bytes) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("algorithm") != std::string::npos);
  const int64_t shape[4] = {1, 2, 1000, 32};
  std::vector<float> buf[4];
  sparse_tensor T[4];
  for (int t = 0; t < 4; ++t) {
    buf[t].assign(2 * 1000 * 32, 0.25f);
    sparse_tensor_contiguous(&T[t], buf[t].data(), SPARSE_DTYPE_F32, 4, shape);
  }
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), &params, &T[0], &T[1], &T[2], &T[3],
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  params.algorithm = -1;
  CHECK(sparse_attention_forward(ctx.get(), layout.get(), &params, &T[0], &T[1], &T[2], &T[3],
                                 nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
}

// ------------------------------------------------------------------ non-finite inputs
//
// The layout contract is token-level: a NaN or Inf in Q, K, V or dO may reach exactly the results
// of the queries that attend it. Each case runs the library twice through the C ABI, once with the
// non-finite values and once with them replaced by finite ones, and the naive double reference
// (which visits attended pairs only) on the first. Which results a non-finite input may reach
// follows from the token masks: query row i is reached when q[i] or dO[i] is non-finite or i
// attends a key j whose k[j] or v[j] is; key row j when k[j] or v[j] is non-finite or a reached
// query attends j. Then per element:
//   - out, lse, dq of an unreached query row and dk, dv of an unreached key row equal the run with
//     finite values exactly (a block product that multiplies the value by 0 would give NaN);
//   - a reached element is non-finite where the reference is, else within the tolerances above.

namespace {

struct Inputs {
  std::vector<float> q, k, v, dout;  // [batch, heads, n, d] in natural order
};

struct Results {
  std::vector<float> out, lse, dq, dk, dv;  // same order; lse [batch, heads, n]
};

Results run_attention(sparse_context* ctx, sparse_layout* layout, const naive::Problem& pb,
                      int order, sparse_attention_algorithm algorithm, const Inputs& in) {
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.algorithm = algorithm;
  std::vector<Strided> T;  // 0 q, 1 k, 2 v, 3 dout, 4 out, 5 dq, 6 dk, 7 dv
  for (int t = 0; t < 8; ++t) T.emplace_back(pb.batch, pb.heads, pb.n, pb.d, order);
  const std::vector<float>* src[4] = {&in.q, &in.k, &in.v, &in.dout};
  for (int64_t b = 0; b < pb.batch; ++b)
    for (int64_t h = 0; h < pb.heads; ++h)
      for (int64_t i = 0; i < pb.n; ++i)
        for (int64_t c = 0; c < pb.d; ++c)
          for (int t = 0; t < 4; ++t) T[t].at(b, h, i, c) = (*src[t])[pb.at(b, h, i, c)];
  Results r;
  r.lse.assign(static_cast<size_t>(pb.batch * pb.heads * pb.n), std::nanf(""));
  sparse_tensor lse_t;
  const int64_t lse_shape[3] = {pb.batch, pb.heads, pb.n};
  sparse_tensor_contiguous(&lse_t, r.lse.data(), SPARSE_DTYPE_F32, 3, lse_shape);
  REQUIRE_MESSAGE(sparse_attention_forward(ctx, layout, &params, &T[0].t, &T[1].t, &T[2].t, &T[4].t,
                                           &lse_t) == SPARSE_OK,
                  sparse_last_error());
  REQUIRE_MESSAGE(
      sparse_attention_backward(ctx, layout, &params, &T[0].t, &T[1].t, &T[2].t, &T[4].t, &lse_t,
                                &T[3].t, &T[5].t, &T[6].t, &T[7].t) == SPARSE_OK,
      sparse_last_error());
  std::vector<float>* dst[4] = {&r.out, &r.dq, &r.dk, &r.dv};
  for (int t = 0; t < 4; ++t) {
    dst[t]->resize(in.q.size());
    for (int64_t b = 0; b < pb.batch; ++b)
      for (int64_t h = 0; h < pb.heads; ++h)
        for (int64_t i = 0; i < pb.n; ++i)
          for (int64_t c = 0; c < pb.d; ++c) (*dst[t])[pb.at(b, h, i, c)] = T[4 + t].at(b, h, i, c);
  }
  return r;
}

// Rows [b, h, i] (index (b * heads + h) * n + i) that a non-finite input of `in` may reach.
struct Reach {
  std::vector<uint8_t> query, key;
};

Reach reach(const naive::Problem& pb, const Inputs& in) {
  const auto rows = static_cast<size_t>(pb.batch * pb.heads * pb.n);
  Reach r{std::vector<uint8_t>(rows, 0), std::vector<uint8_t>(rows, 0)};
  auto bad_row = [&](const std::vector<float>& t, size_t row) {
    for (int64_t c = 0; c < pb.d; ++c)
      if (!std::isfinite(t[row * static_cast<size_t>(pb.d) + static_cast<size_t>(c)])) return true;
    return false;
  };
  for (int64_t b = 0; b < pb.batch; ++b)
    for (int64_t h = 0; h < pb.heads; ++h) {
      const auto& mask = pb.masks[static_cast<size_t>(h)];
      const auto base = static_cast<size_t>((b * pb.heads + h) * pb.n);
      const auto n = static_cast<size_t>(pb.n);
      for (size_t i = 0; i < n; ++i) {
        r.query[base + i] = bad_row(in.q, base + i) || bad_row(in.dout, base + i);
        r.key[base + i] = bad_row(in.k, base + i) || bad_row(in.v, base + i);
      }
      for (size_t i = 0; i < n; ++i)
        for (size_t j = 0; j < n; ++j)
          if (mask[i * n + j] && r.key[base + j] && !r.query[base + i]) r.query[base + i] = 2;
      for (size_t i = 0; i < n; ++i)
        for (size_t j = 0; j < n; ++j)
          if (mask[i * n + j] && r.query[base + i]) r.key[base + j] = 1;
    }
  return r;
}

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};

Reference reference(const naive::Problem& pb, const Inputs& in) {
  auto dbl = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
  Reference r;
  const std::vector<double> q = dbl(in.q), k = dbl(in.k), v = dbl(in.v), g = dbl(in.dout);
  naive::forward(pb, q, k, v, r.out, r.lse);
  naive::backward(pb, q, k, v, g, r.dq, r.dk, r.dv);
  return r;
}

// The rules above for one tensor with `per_row` elements per row; `reached` is per row. Returns
// the number of unreached elements.
int64_t check_tensor(const char* name, const std::vector<float>& got,
                     const std::vector<float>& clean, const std::vector<double>& want,
                     const std::vector<uint8_t>& reached, int64_t per_row, double atol,
                     double rtol) {
  int reported = 0;
  int64_t unreached = 0;
  for (size_t e = 0; e < got.size(); ++e) {
    const double w = want[e];
    const char* why = nullptr;
    if (!reached[e / static_cast<size_t>(per_row)]) {
      ++unreached;
      if (!(got[e] == clean[e]) || (std::isnan(got[e]) && std::isnan(clean[e])))
        why = "differs from the run with finite values";
    } else if (!std::isfinite(w)) {
      if (std::isfinite(got[e])) why = "is finite where the reference is not";
    } else if (!close(got[e], w, atol, rtol)) {
      why = "is off";
    }
    if (why != nullptr && reported++ < 5)
      FAIL_CHECK(std::string(name) << "[" << e << "] = " << got[e] << " " << why << " (finite run "
                                   << clean[e] << ", reference " << w << ")");
  }
  return unreached;
}

// Runs `bad` and `clean` (equal except for the non-finite entries of `bad`) and checks both
// algorithms' results by the rules above. Returns the number of unreached out, dq, dk and dv
// elements.
int64_t check_nonfinite(sparse_context* ctx, sparse_layout* layout, const naive::Problem& pb,
                        int order, const Inputs& bad, const Inputs& clean) {
  const Reference want = reference(pb, bad);
  const Reach r = reach(pb, bad);
  int64_t unreached = 0;
  for (auto algorithm : {SPARSE_ATTENTION_FUSED, SPARSE_ATTENTION_UNFUSED}) {
    CAPTURE(algorithm);
    const Results got = run_attention(ctx, layout, pb, order, algorithm, bad);
    const Results ref = run_attention(ctx, layout, pb, order, algorithm, clean);
    unreached = check_tensor("out", got.out, ref.out, want.out, r.query, pb.d, 2e-5, 1e-4);
    check_tensor("lse", got.lse, ref.lse, want.lse, r.query, 1, 2e-5, 1e-4);
    unreached += check_tensor("dq", got.dq, ref.dq, want.dq, r.query, pb.d, 1e-4, 1e-3);
    unreached += check_tensor("dk", got.dk, ref.dk, want.dk, r.key, pb.d, 1e-4, 1e-3);
    unreached += check_tensor("dv", got.dv, ref.dv, want.dv, r.key, pb.d, 1e-4, 1e-3);
  }
  return unreached;
}

Inputs random_inputs(const naive::Problem& pb, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  Inputs in;
  for (auto* t : {&in.q, &in.k, &in.v, &in.dout}) {
    t->resize(static_cast<size_t>(pb.batch * pb.heads * pb.n * pb.d));
    for (float& x : *t) x = uni(rng);
  }
  return in;
}

naive::Problem problem(int64_t batch, int64_t heads, int64_t n, int64_t d,
                       std::vector<std::vector<uint8_t>> masks) {
  return {batch, heads, n, d, 1.0 / std::sqrt(static_cast<double>(d)), std::move(masks)};
}

// Sets row i of tensor t (all heads and batch entries, or one) to x in every element.
void set_row(std::vector<float>& t, const naive::Problem& pb, int64_t i, float x, int64_t b = -1) {
  for (int64_t bb = 0; bb < pb.batch; ++bb)
    for (int64_t h = 0; h < pb.heads; ++h)
      for (int64_t c = 0; c < pb.d; ++c)
        if (b < 0 || b == bb) t[pb.at(bb, h, i, c)] = x;
}

// A user block layout over n = 80, block 16 (causal blocks) whose element mask removes key 37
// from every query: nobody attends key 37. Returns the layout and its token mask.
LayoutPtr layout_without_key(int64_t n, int block, int64_t key, std::vector<uint8_t>& mask) {
  const int64_t nb = (n + block - 1) / block;
  std::vector<uint8_t> blocks(static_cast<size_t>(nb * nb), 0), elements;
  for (int64_t I = 0; I < nb; ++I)
    for (int64_t J = 0; J <= I; ++J) {
      blocks[static_cast<size_t>(I * nb + J)] = 1;
      for (int r = 0; r < block; ++r)
        for (int c = 0; c < block; ++c) elements.push_back(J * block + c == key ? 0 : 1);
    }
  sparse_layout* l = nullptr;
  REQUIRE_MESSAGE(sparse_layout_create_from_blocks(n, block, 1, blocks.data(), elements.data(), 1,
                                                   &l) == SPARSE_OK,
                  sparse_last_error());
  mask.assign(static_cast<size_t>(n * n), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) mask[static_cast<size_t>(i * n + j)] = j != key;
  return LayoutPtr(l);
}

}  // namespace

TEST_CASE("non-finite: NaN in v[79] of causal dense attention reaches only row 79") {
  auto ctx = cpu_context(2);
  LayoutPtr layout;
  REQUIRE(support::make_layout({make(SPARSE_PATTERN_DENSE)}, 80, 16, 1, layout) == SPARSE_OK);
  const naive::Problem pb =
      problem(1, 1, 80, 32, {naive::head_mask({make(SPARSE_PATTERN_DENSE)}, 0, 80, 16)});
  const Inputs clean = random_inputs(pb, 1);
  Inputs bad = clean;
  set_row(bad.v, pb, 79, std::nanf(""));
  for (auto algorithm : {SPARSE_ATTENTION_FUSED, SPARSE_ATTENTION_UNFUSED}) {
    CAPTURE(algorithm);
    const Results got = run_attention(ctx.get(), layout.get(), pb, 0, algorithm, bad);
    const Results ref = run_attention(ctx.get(), layout.get(), pb, 0, algorithm, clean);
    int wrong = 0;
    for (int64_t i = 0; i < 80; ++i)
      for (int64_t c = 0; c < 32; ++c) {
        const size_t e = pb.at(0, 0, i, c);
        if (i < 79 ? !(got.out[e] == ref.out[e]) || !(got.dq[e] == ref.dq[e])
                   : !std::isnan(got.out[e]))
          wrong++;
        if (!(got.dv[e] == ref.dv[e])) wrong++;  // dV does not depend on V
      }
    CHECK(wrong == 0);
  }
  CHECK(check_nonfinite(ctx.get(), layout.get(), pb, 0, bad, clean) > 0);
}

TEST_CASE("non-finite: NaN or Inf at a key that no query attends (user layout) changes nothing") {
  auto ctx = cpu_context(2);
  std::vector<uint8_t> mask;
  LayoutPtr layout = layout_without_key(80, 16, 37, mask);
  const naive::Problem pb = problem(1, 1, 80, 32, {mask});
  const Inputs clean = random_inputs(pb, 2);
  for (float x : {std::nanf(""), INFINITY, -INFINITY}) {
    for (int which = 0; which < 2; ++which) {  // v[37], then k[37]
      CAPTURE(x);
      CAPTURE(which);
      Inputs bad = clean;
      set_row(which == 0 ? bad.v : bad.k, pb, 37, x);
      for (auto algorithm : {SPARSE_ATTENTION_FUSED, SPARSE_ATTENTION_UNFUSED}) {
        CAPTURE(algorithm);
        const Results got = run_attention(ctx.get(), layout.get(), pb, 0, algorithm, bad);
        const Results ref = run_attention(ctx.get(), layout.get(), pb, 0, algorithm, clean);
        // Everything (out, lse, dq, dk, dv) equals the finite run.
        int wrong = 0;
        for (size_t e = 0; e < got.out.size(); ++e)
          wrong += !(got.out[e] == ref.out[e]) + !(got.dq[e] == ref.dq[e]) +
                   !(got.dk[e] == ref.dk[e]) + !(got.dv[e] == ref.dv[e]);
        for (size_t e = 0; e < got.lse.size(); ++e) wrong += !(got.lse[e] == ref.lse[e]);
        CHECK(wrong == 0);
      }
      CHECK(check_nonfinite(ctx.get(), layout.get(), pb, 0, bad, clean) > 0);
    }
  }
}

TEST_CASE("non-finite: NaN in q and dO of queries without keys stays out of dk and dv") {
  // Fixed summary, l = 64, c = 8: queries 0..55 see no key, but block row 1 (32..63) is computed
  // for queries 56..63, so rows 40 and 41 sit in a computed block row.
  auto ctx = cpu_context(2);
  const std::vector<Pattern> patterns = {make(SPARSE_PATTERN_FIXED_SUMMARY, 64, 8)};
  LayoutPtr layout;
  REQUIRE(support::make_layout(patterns, 130, 32, 1, layout) == SPARSE_OK);
  const naive::Problem pb = problem(2, 1, 130, 32, {naive::head_mask(patterns, 0, 130, 32)});
  const Inputs clean = random_inputs(pb, 3);
  Inputs bad = clean;
  set_row(bad.q, pb, 40, std::nanf(""));
  set_row(bad.dout, pb, 41, INFINITY, 1);
  CHECK(check_nonfinite(ctx.get(), layout.get(), pb, 2, bad, clean) > 0);
}

TEST_CASE("non-finite: garbage in the padded tail of a causal batch entry") {
  // Batch entry 1 is 61 tokens long, padded to 80 with NaN and Inf keys and values; causal
  // queries of the real tokens never attend the padding.
  auto ctx = cpu_context(3);
  LayoutPtr layout;
  REQUIRE(support::make_layout({make(SPARSE_PATTERN_LOCAL, 40)}, 80, 32, 2, layout) == SPARSE_OK);
  const naive::Problem pb =
      problem(2, 2, 80, 64,
              {naive::head_mask({make(SPARSE_PATTERN_LOCAL, 40)}, 0, 80, 32),
               naive::head_mask({make(SPARSE_PATTERN_LOCAL, 40)}, 1, 80, 32)});
  const Inputs clean = random_inputs(pb, 4);
  Inputs bad = clean;
  for (int64_t i = 61; i < 80; ++i) {
    set_row(bad.k, pb, i, i % 2 ? std::nanf("") : -INFINITY, 1);
    set_row(bad.v, pb, i, i % 3 ? INFINITY : std::nanf(""), 1);
  }
  CHECK(check_nonfinite(ctx.get(), layout.get(), pb, 1, bad, clean) > 0);
}

TEST_CASE("non-finite: randomized NaN and Inf in q, k, v and dO over patterns and memory orders") {
  // Includes the transposed strided column head with n a multiple of neither block nor stride,
  // padded rows (their padding holds NaN), n < B and more threads than work.
  std::mt19937_64 rng(23);
  for (int trial = 0; trial < 40; ++trial) {
    Case c;
    c.block = 16 << (rng() % 3);
    c.n = 1 + static_cast<int64_t>(rng() % 150);
    c.d = 32 << (rng() % 2);
    c.batch = 1 + static_cast<int64_t>(rng() % 2);
    c.heads = 1 + static_cast<int64_t>(rng() % 2);
    c.order = static_cast<int>(rng() % 3);
    if (trial % 4 == 0) {
      const auto strides = static_cast<uint64_t>(std::min<int64_t>(20, c.n));
      c.patterns = {make(SPARSE_PATTERN_STRIDED_COLUMN, 1 + static_cast<int64_t>(rng() % strides))};
    } else {
      c.patterns = {support::random_pattern(rng, c.n, -1, c.block)};
    }
    CAPTURE(trial);
    CAPTURE(c.n);
    CAPTURE(c.block);
    LayoutPtr layout;
    REQUIRE(support::make_layout(c.patterns, c.n, c.block, static_cast<int>(c.heads), layout) ==
            SPARSE_OK);
    std::vector<std::vector<uint8_t>> masks;
    for (int h = 0; h < c.heads; ++h)
      masks.push_back(naive::head_mask(c.patterns, h, c.n, c.block));
    const naive::Problem pb = problem(c.batch, c.heads, c.n, c.d, masks);
    const Inputs clean = random_inputs(pb, rng());
    Inputs bad = clean;
    const int count = 1 + static_cast<int>(rng() % 3);
    for (int x = 0; x < count; ++x) {
      std::vector<float>* t[4] = {&bad.q, &bad.k, &bad.v, &bad.dout};
      const float values[3] = {std::nanf(""), INFINITY, -INFINITY};
      const int which = static_cast<int>(rng() % 4);
      const size_t at = rng() % clean.q.size();
      const float value = values[rng() % 3];
      (*t[which])[at] = value;
    }
    auto ctx = cpu_context(1 + static_cast<int>(rng() % 3));
    check_nonfinite(ctx.get(), layout.get(), pb, c.order, bad, clean);
  }
}
