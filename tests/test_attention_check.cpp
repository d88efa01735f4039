// The comparison rule of the CUDA kernel checks (attention_check.hpp), shown right on the CPU
// before any GPU runs it: the CPU backend against the naive double-precision reference passes it
// (large logits included); deliberately wrong results fail it (one element, one small row, a
// small-valued tensor with a relative error the former max(1, rms) rule let through, NaN, a
// missing -inf, a non-zero row that must be zero, a softmax without the running maximum on large
// logits, a written padding byte); outputs rounded to bf16 or fp16 pass their dtype's bounds.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "attention_check.hpp"
#include "test_support.hpp"

using naive::Pattern;
using support::LayoutPtr;

namespace {

Pattern make(sparse_pattern_kind kind, int64_t stride = 0, int64_t summary = 0, int head = -1) {
  Pattern p;
  p.kind = kind;
  p.stride = stride;
  p.window = stride;
  p.summary = summary;
  p.head = head;
  return p;
}

// One CPU run and the naive reference on the same inputs: got (CPU backend, fp32) and want
// (double) for out, lse, dq, dk, dv, dense [b, h, n, d] ([b, h, n] for lse).
struct Run {
  int64_t d = 0;
  std::vector<float> got[5];
  std::vector<double> want[5];
  std::vector<double> q, k, v, dout;
  naive::Problem pb{};
};
const char* const kNames[5] = {"out", "lse", "dq", "dk", "dv"};

Run cpu_run(int64_t batch, int64_t heads, int64_t n, int64_t d, int block,
            const std::vector<Pattern>& patterns, float q_scale, float scale, uint64_t seed) {
  Run r;
  r.d = d;
  LayoutPtr layout;
  REQUIRE(support::make_layout(patterns, n, block, static_cast<int>(heads), layout) == SPARSE_OK);
  r.pb = {batch, heads, n, d, scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(d)), {}};
  for (int h = 0; h < heads; ++h) r.pb.masks.push_back(naive::head_mask(patterns, h, n, block));
  const size_t size = static_cast<size_t>(batch * heads * n * d);
  const size_t rows = static_cast<size_t>(batch * heads * n);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> in[4];
  std::vector<double> ind[4];
  for (int t = 0; t < 4; ++t) {
    in[t].resize(size);
    for (auto& x : in[t]) x = uni(rng) * (t == 0 ? q_scale : 1.0f);
    ind[t].assign(in[t].begin(), in[t].end());
  }
  r.q = ind[0];
  r.k = ind[1];
  r.v = ind[2];
  r.dout = ind[3];
  for (int t = 0; t < 5; ++t) r.got[t].assign(t == 1 ? rows : size, 0.0f);
  const int64_t shape[4] = {batch, heads, n, d}, lse_shape[3] = {batch, heads, n};
  sparse_tensor T[4], O[5];
  for (int t = 0; t < 4; ++t)
    sparse_tensor_contiguous(&T[t], in[t].data(), SPARSE_DTYPE_F32, 4, shape);
  for (int t = 0; t < 5; ++t)
    sparse_tensor_contiguous(&O[t], r.got[t].data(), SPARSE_DTYPE_F32, t == 1 ? 3 : 4,
                             t == 1 ? lse_shape : shape);
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CPU;
  sparse_context* ctx = nullptr;
  REQUIRE(sparse_context_create(&s, &ctx) == SPARSE_OK);
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.scale = scale;
  REQUIRE(sparse_attention_forward(ctx, layout.get(), &params, &T[0], &T[1], &T[2], &O[0], &O[1]) ==
          SPARSE_OK);
  REQUIRE(sparse_attention_backward(ctx, layout.get(), &params, &T[0], &T[1], &T[2], &O[0], &O[1],
                                    &T[3], &O[2], &O[3], &O[4]) == SPARSE_OK);
  sparse_context_destroy(ctx);
  naive::forward(r.pb, ind[0], ind[1], ind[2], r.want[0], r.want[1]);
  naive::backward(r.pb, ind[0], ind[1], ind[2], ind[3], r.want[2], r.want[3], r.want[4]);
  return r;
}

check::Result compare(const Run& r, int t, const check::KernelTol& tol, bool rows = true,
                      double widen = 1) {
  check::Tol x = check::widened(t == 0 ? tol.fwd : t == 1 ? tol.lse : tol.bwd, widen);
  if (!rows) x.row = 0;
  return check::compare(r.got[t], r.want[t], t == 1 ? 1 : r.d, x);
}

void require_pass(const Run& r, const check::KernelTol& tol, bool backward_rows = true,
                  double widen = 1) {
  for (int t = 0; t < 5; ++t) {
    const check::Result res = compare(r, t, tol, t < 2 || backward_rows, widen);
    CHECK_MESSAGE(res.ok(), res.describe(kNames[t]));
  }
}

const std::vector<Pattern> kStrided = {make(SPARSE_PATTERN_STRIDED_ROW, 16, 0, 0),
                                       make(SPARSE_PATTERN_STRIDED_COLUMN, 16, 0, 1)};
const std::vector<Pattern> kFixed = {make(SPARSE_PATTERN_FIXED_BLOCK, 32, 0, 0),
                                     make(SPARSE_PATTERN_FIXED_SUMMARY, 32, 8, 1)};
const check::KernelTol kF32 = check::tolerances(SPARSE_DTYPE_F32);

// Largest |logit| over the attended pairs.
double max_logit(const Run& r) {
  double m = 0;
  const naive::Problem& pb = r.pb;
  for (int64_t b = 0; b < pb.batch; ++b)
    for (int64_t h = 0; h < pb.heads; ++h)
      for (int64_t i = 0; i < pb.n; ++i)
        for (int64_t j = 0; j < pb.n; ++j) {
          if (!pb.masks[static_cast<size_t>(h)][static_cast<size_t>(i * pb.n + j)]) continue;
          double dot = 0;
          for (int64_t c = 0; c < pb.d; ++c) dot += r.q[pb.at(b, h, i, c)] * r.k[pb.at(b, h, j, c)];
          m = std::max(m, std::fabs(pb.scale * dot));
        }
  return m;
}

// A softmax that skips the running-maximum subtraction, in fp32: what a faulty kernel computes.
std::vector<float> forward_without_max(const Run& r) {
  const naive::Problem& pb = r.pb;
  const std::vector<double>& v = r.v;
  std::vector<float> out(static_cast<size_t>(pb.batch * pb.heads * pb.n * pb.d), 0.0f);
  for (int64_t b = 0; b < pb.batch; ++b)
    for (int64_t h = 0; h < pb.heads; ++h)
      for (int64_t i = 0; i < pb.n; ++i) {
        float z = 0;
        std::vector<float> acc(static_cast<size_t>(pb.d), 0.0f);
        for (int64_t j = 0; j < pb.n; ++j) {
          if (!pb.masks[static_cast<size_t>(h)][static_cast<size_t>(i * pb.n + j)]) continue;
          float dot = 0;
          for (int64_t c = 0; c < pb.d; ++c)
            dot += static_cast<float>(r.q[pb.at(b, h, i, c)] * r.k[pb.at(b, h, j, c)]);
          const float p = std::exp(static_cast<float>(pb.scale) * dot);
          z += p;
          for (int64_t c = 0; c < pb.d; ++c)
            acc[static_cast<size_t>(c)] += p * static_cast<float>(v[pb.at(b, h, j, c)]);
        }
        if (z == 0) continue;
        for (int64_t c = 0; c < pb.d; ++c) out[pb.at(b, h, i, c)] = acc[static_cast<size_t>(c)] / z;
      }
  return out;
}

}  // namespace

TEST_CASE("the CPU backend passes the kernel check against the naive reference") {
  for (int block : {16, 64})
    for (int64_t d : {32, 64}) {
      CAPTURE(block);
      CAPTURE(d);
      require_pass(cpu_run(2, 2, 203, d, block, kStrided, 1.0f, 0.0f, 1), kF32);
      require_pass(cpu_run(1, 2, 130, d, block, kFixed, 1.0f, 0.0f, 2), kF32);
    }
}

TEST_CASE("large logits: the CPU backend passes, a softmax without the maximum fails") {
  // The inputs of test_cuda_attention.cpp's large-logit case: q x 8, scale 4.
  const std::vector<Pattern> patterns = {make(SPARSE_PATTERN_DENSE, 0, 0, 0),
                                         make(SPARSE_PATTERN_STRIDED_ROW, 40, 0, 1)};
  for (int64_t d : {32, 64}) {
    CAPTURE(d);
    const Run r = cpu_run(1, 2, 300, d, 64, patterns, 8.0f, 4.0f, 21);
    CHECK(max_logit(r) > 100);  // exp overflows fp32 above 88.7
    require_pass(r, kF32, false, 10);
    const check::Result bad =
        check::compare(forward_without_max(r), r.want[0], d, check::widened(kF32.fwd, 10));
    CHECK_FALSE(bad.ok());
    // The same faulty softmax passes on ordinary logits: only the large-logit case catches it.
    const Run small = cpu_run(1, 2, 300, d, 64, patterns, 1.0f, 0.0f, 21);
    const check::Result fine =
        check::compare(forward_without_max(small), small.want[0], d, kF32.fwd);
    CHECK_MESSAGE(fine.ok(), fine.describe("out"));
  }
}

TEST_CASE("deliberately wrong results fail the check") {
  const Run r = cpu_run(2, 2, 203, 64, 32, kStrided, 1.0f, 0.0f, 3);
  require_pass(r, kF32);
  const int64_t d = 64;
  auto fails = [&](int t, const std::vector<float>& got) {
    check::Tol x = t == 0 ? kF32.fwd : t == 1 ? kF32.lse : kF32.bwd;
    return !check::compare(got, r.want[t], t == 1 ? 1 : d, x).ok();
  };
  const check::Result base = compare(r, 2, kF32);

  SUBCASE("one element off by 1e-3 of the tensor's rms") {
    std::vector<float> g = r.got[2];
    g[1234] += static_cast<float>(1e-3 * base.rms);
    CHECK(fails(2, g));
  }
  SUBCASE("a small row off by 0.2 %, which the element rule alone lets through") {
    // The dk row with the smallest non-zero norm (a key few queries see).
    size_t best = 0;
    double best_norm = HUGE_VAL;
    for (size_t row = 0; row < r.want[3].size() / d; ++row) {
      double s = 0;
      for (int64_t c = 0; c < d; ++c)
        s += r.want[3][row * d + static_cast<size_t>(c)] *
             r.want[3][row * d + static_cast<size_t>(c)];
      if (s > 1e-6 * base.rms * base.rms * d && s < best_norm) {
        best_norm = s;
        best = row;
      }
    }
    std::vector<float> g = r.got[3];
    for (int64_t c = 0; c < d; ++c) g[best * d + static_cast<size_t>(c)] *= 1.002f;
    check::Tol element_only = kF32.bwd;
    element_only.row = 0;
    CHECK(check::compare(g, r.want[3], d, element_only).ok());
    CHECK(fails(3, g));
  }
  SUBCASE("small gradients, one row off by 10 % (bf16 bounds): the former rule passed it") {
    const check::Tol bf16 = check::tolerances(SPARSE_DTYPE_BF16).bwd;
    std::vector<double> want = r.want[2];
    for (double& w : want) w *= 1e-4;  // gradients of a small loss
    std::vector<float> got(want.begin(), want.end());
    const size_t row = 300;  // head 1, query 97: a row with keys
    for (int64_t c = 0; c < d; ++c) got[row * d + static_cast<size_t>(c)] *= 1.1f;
    // The former rule: |g - w| <= atol max(1, rms) + rtol |w| and the normalised error over the
    // tensor, no row rule.
    const double atol = bf16.atol * std::max(1.0, base.rms * 1e-4);
    bool old_ok = true;
    double err_sq = 0, ref_sq = 0;
    for (size_t e = 0; e < want.size(); ++e) {
      old_ok = old_ok && std::fabs(got[e] - want[e]) <= atol + bf16.rtol * std::fabs(want[e]);
      err_sq += (got[e] - want[e]) * (got[e] - want[e]);
      ref_sq += want[e] * want[e];
    }
    CHECK(old_ok);
    CHECK(err_sq / ref_sq <= bf16.norm);
    CHECK_FALSE(check::compare(got, want, d, bf16).ok());
  }
  SUBCASE("NaN in one element") {
    std::vector<float> g = r.got[4];
    g[7] = std::nanf("");
    CHECK(fails(4, g));
  }
  SUBCASE("a row that must be zero is not") {
    // Fixed-summary head: queries before the first summary have no key (zero out, -inf lse).
    const Run f = cpu_run(1, 2, 130, 64, 32, kFixed, 1.0f, 0.0f, 4);
    require_pass(f, kF32);
    const size_t empty_row = 130;  // head 1, query 0
    REQUIRE(std::isinf(f.want[1][empty_row]));
    CHECK(check::nonzero_in_empty_rows(f.got[0], 64, f.want[1]) == 0);
    CHECK(check::nonzero_in_empty_rows(f.got[2], 64, f.want[1]) == 0);
    std::vector<float> g = f.got[0];
    g[empty_row * 64 + 5] = 1e-30f;
    CHECK(check::nonzero_in_empty_rows(g, 64, f.want[1]) == 1);
    std::vector<float> lse = f.got[1];
    lse[empty_row] = -1e30f;
    CHECK_FALSE(check::compare(lse, f.want[1], 1, kF32.lse).ok());
  }
  SUBCASE("a written padding byte or guard byte") {
    std::vector<unsigned char> bytes(64, check::kSentinel);
    std::vector<bool> covered(48, false);
    for (size_t i = 0; i < 48; ++i) covered[i] = i % 16 < 12;  // rows of 12 bytes, 4 padding
    for (size_t i = 0; i < 48; ++i)
      if (covered[i]) bytes[i] = 0;
    size_t first = 0;
    CHECK(check::touched_padding(bytes, covered, &first) == 0);
    bytes[13] = 0;
    bytes[60] = 1;
    CHECK(check::touched_padding(bytes, covered, &first) == 2);
    CHECK(first == 13);
  }
}

TEST_CASE(
    "outputs rounded to bf16 or fp16 pass that dtype's bounds; 16-bit-sized errors fail fp32") {
  const Run r = cpu_run(2, 2, 203, 64, 32, kStrided, 1.0f, 0.0f, 5);
  for (sparse_dtype dtype : {SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
    CAPTURE(static_cast<int>(dtype));
    Run rounded = r;
    for (int t = 0; t < 5; ++t)
      if (t != 1)
        for (float& x : rounded.got[t]) x = check::round_to(dtype, x);
    require_pass(rounded, check::tolerances(dtype));
    // A 16-bit kernel's results are far outside the fp32 bounds.
    CHECK_FALSE(compare(rounded, 0, kF32).ok());
    // And a row off by 10 % fails the 16-bit bounds.
    Run wrong = rounded;
    for (int64_t c = 0; c < 64; ++c) wrong.got[2][static_cast<size_t>(300 * 64 + c)] *= 1.1f;
    CHECK_FALSE(compare(wrong, 2, check::tolerances(dtype)).ok());
  }
}

TEST_CASE("terms rule: dq and dk rows whose terms cancel are judged by the terms' size") {
  // A window of 1: every query attends only itself, so P = 1, D_i = dP_ii and dq = dk = 0
  // exactly (the naive double reference gives exact zeros); a kernel's result there is rounding
  // noise of the terms' size, which no rule relative to the (zero) result can accept.
  const int64_t n = 64, d = 32;
  const Run r = cpu_run(1, 2, n, d, 16, {make(SPARSE_PATTERN_LOCAL, 1)}, 1.0f, 0.0f, 17);
  const double s = r.pb.scale;
  const check::TermNorms t =
      check::term_norms(1, 2, n, d, s, r.q, r.k, r.v, r.dout, r.want[0], r.want[1],
                        [&](int h, int64_t i, std::vector<uint8_t>& mask) {
                          for (int64_t j = 0; j < n; ++j)
                            mask[static_cast<size_t>(j)] =
                                r.pb.masks[static_cast<size_t>(h)][static_cast<size_t>(i * n + j)];
                        });
  // The closed form with one key: out_i = v_i, so t_dq_i = s (|dO_i.v_i| + ||dO_i|| ||v_i||)
  // ||k_i|| and t_dk_i the same with ||q_i||.
  for (size_t row = 0; row < static_cast<size_t>(2 * n); ++row) {
    double dv = 0, gg = 0, vv = 0, kk = 0, qq = 0;
    for (size_t c = 0; c < static_cast<size_t>(d); ++c) {
      const size_t e = row * static_cast<size_t>(d) + c;
      dv += r.dout[e] * r.v[e];
      gg += r.dout[e] * r.dout[e];
      vv += r.v[e] * r.v[e];
      kk += r.k[e] * r.k[e];
      qq += r.q[e] * r.q[e];
    }
    const double w = std::fabs(dv) + std::sqrt(gg * vv);
    CHECK(t.dq[row] == doctest::Approx(s * w * std::sqrt(kk)).epsilon(1e-9));
    CHECK(t.dk[row] == doctest::Approx(s * w * std::sqrt(qq)).epsilon(1e-9));
  }
  for (double x : r.want[2]) REQUIRE(x == 0.0);
  // The CPU backend's fp32 result passes with the terms; so do exact zeros (what a kernel that
  // selects dS gives).
  for (int which : {2, 3}) {
    const std::vector<double>& terms = which == 2 ? t.dq : t.dk;
    CHECK(check::compare(r.got[which], r.want[which], d, kF32.bwd, terms).ok());
    CHECK(check::compare(std::vector<float>(r.got[which].size(), 0.0f), r.want[which], d, kF32.bwd,
                         terms)
              .ok());
    // An error of 1e-4 of the terms' size in one row (500 times fp32's rounding of them) fails,
    // in bf16's bounds too at 0.5 of their size.
    std::vector<float> wrong = r.got[which];
    for (int64_t c = 0; c < d; ++c)
      wrong[static_cast<size_t>(5 * d + c)] += static_cast<float>(1e-4 * terms[5]);
    CHECK_FALSE(check::compare(wrong, r.want[which], d, kF32.bwd, terms).ok());
    for (int64_t c = 0; c < d; ++c)
      wrong[static_cast<size_t>(5 * d + c)] += static_cast<float>(0.5 * terms[5]);
    CHECK_FALSE(
        check::compare(wrong, r.want[which], d, check::tolerances(SPARSE_DTYPE_BF16).bwd, terms)
            .ok());
  }
}

TEST_CASE("record: one JSON line per comparison, in the file SPARSE_CHECK_RECORD names") {
  // got = want * (1 + eps): the normalised error is eps^2 exactly (in real numbers).
  const double eps = 1e-3;
  std::vector<double> want(64), got(64);
  for (size_t i = 0; i < want.size(); ++i) {
    want[i] = std::sin(0.37 * static_cast<double>(i)) + 0.1;
    got[i] = want[i] * (1 + eps);
  }
  const check::Tol tol{1e-2, 1e-2, 1e-4, 0};
  const check::Result r = check::compare(got, want, 8, tol);
  REQUIRE(r.ok());
  // The kernel's name has a quote, escaped in the JSON.
  check::RecordKey key{"fused \"x\" bf16", "strided_row(l=16)", "dq", 2, 3, 64, 8, 16};
  char path[] = "/tmp/sparse-record-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::remove(path);

  CHECK(check::record(key, r));  // unset: nothing written, nothing refused
  CHECK(!std::ifstream(path).good());
  REQUIRE(setenv("SPARSE_CHECK_RECORD", path, 1) == 0);
  CHECK(check::record(key, r));
  got[5] = NAN;  // a non-finite result: norm_error is infinite, written as null
  key.tensor = "dk";
  CHECK(check::record(key, check::compare(got, want, 8, tol)));
  unsetenv("SPARSE_CHECK_RECORD");

  std::ifstream in(path);
  std::string first, second, extra;
  REQUIRE(std::getline(in, first));
  REQUIRE(std::getline(in, second));
  CHECK(!std::getline(in, extra));
  std::remove(path);
  CHECK(first.find("\"kernel\": \"fused \\\"x\\\" bf16\"") != std::string::npos);
  for (const char* field : {"\"layout\": \"strided_row(l=16)\"", "\"tensor\": \"dq\"",
                            "\"batch\": 2,", "\"heads\": 3,", "\"n\": 64,", "\"head_dim\": 8,",
                            "\"block_size\": 16,", "\"bad_elements\": 0,", "\"ok\": true}"})
    CHECK_MESSAGE(first.find(field) != std::string::npos, field << " not in " << first);
  const size_t at = first.find("\"norm_error\": ");
  REQUIRE(at != std::string::npos);
  CHECK(std::stod(first.substr(at + 14)) == doctest::Approx(eps * eps).epsilon(1e-6));
  CHECK(second.find("\"tensor\": \"dk\"") != std::string::npos);
  CHECK(second.find("\"norm_error\": null") != std::string::npos);
  CHECK(second.find("\"ok\": false}") != std::string::npos);
}
