// The comparison rule of the attention kernel checks (tests/test_cuda_attention.cpp, the cuBLAS
// baseline check in tests/test_cuda_backend.cpp), kept free of any GPU code so that
// tests/test_attention_check.cpp can show on the CPU that it accepts a correct kernel and
// rejects a wrong one.
//
// A tensor is compared as `rows` rows of `dim` elements (dense, row-major), got against want:
//   element  |g - w| <= atol * max(rms, rms_row) + rtol * |w|, where rms is the root mean square
//            of the whole reference tensor and rms_row that of the element's row: a kernel's
//            error in an element scales with the magnitudes summed into it, which is its row's
//            scale, so a tensor of small values (gradients) is checked as tightly as one of
//            large values, and a row of large values does not fail on its elements near zero;
//   row      ||g_r - w_r|| <= row * max(||w_r||, 1e-3 * rms * sqrt(dim)) (when row > 0): each row
//            relative to its own norm, so rows far smaller than the tensor's typical row (keys
//            few queries see, rows over few keys) are checked too; rows below a thousandth of
//            the typical norm, and rows the reference makes exactly zero (dq of a query with a
//            single key is a difference of equal terms), are left to the element rule (16-bit
//            probabilities that small are subnormal or flushed);
//   tensor   sum (g - w)^2 / sum w^2 <= norm;
//   terms    (dq and dk, when the caller passes `terms`) each bound above grows by the rounding
//            of the terms summed into the row: cancel * t_r on the row, cancel * t_r / sqrt(dim)
//            on an element and sum (cancel * t_r)^2 on the tensor, where t_r (term_norms below)
//            is computed from the inputs, not from the result. dq_i = scale sum_j dS_ij k_j with
//            dS_ij = P_ij (dP_ij - D_i) is a difference of terms of size P_ij (|dP_ij| + |D_i|):
//            a row whose terms cancel (a query with one key has dq = 0 exactly) holds only
//            rounding noise of that size, which its own norm cannot bound. The first GPU run
//            (2026-11-30) failed such rows: the GPU wrote exact zeros where the fp32 reference
//            held 1e-8, and bf16 rows of norm 0.01 were off by 0.003 through the rounding of D.
//   special  NaN or Inf where the reference is finite always fails; an infinite reference value
//            (the -inf lse of a query without keys) must be matched exactly, and the out and dq
//            rows of such a query must be exactly zero (nonzero_in_empty_rows).
// A `Result` lists the first mismatches with their row and column; callers report them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sparse/common.h"

namespace check {

struct Tol {
  double atol = 0, rtol = 0, norm = 0;
  double row = 0;     // 0: no per-row check
  double cancel = 0;  // the rounding of summed terms, relative to their size (the terms rule)
};

// The bounds of each dtype's kernels against the fp32 CPU reference run on the same (already
// rounded) inputs. fp32: the same arithmetic in another order. bf16 (8 significant bits: one
// rounding of P or of the output is up to 2^-9 = 2e-3 relative) and fp16 (11 bits, 8x finer)
// are derived from the rounding steps (P and dS rounded before their products, outputs rounded),
// not yet calibrated on a GPU; the norms leave ~25x margin over the squared rounding error.
// lse is fp32 for every dtype (computed from fp32 scores).
struct KernelTol {
  Tol fwd, bwd, lse;
};

inline KernelTol tolerances(sparse_dtype dtype) {
  switch (dtype) {
    // cancel: 8 unit roundoffs of the dtype (2^-8 bf16, 2^-11 fp16) for P, dS and the output
    // (from which D is summed) rounded to 16 bits; 64 of fp32's 2^-24 for the summation order
    // of both sides (the reference is fp32 too) and the GPU's exp2 approximation.
    case SPARSE_DTYPE_BF16:
      return {
          {1e-2, 2e-2, 1e-4, 3e-2}, {2e-2, 5e-2, 4e-4, 6e-2, 8 * 0x1p-8}, {2e-3, 2e-3, 1e-6, 0}};
    case SPARSE_DTYPE_F16:
      return {
          {2e-3, 4e-3, 4e-6, 6e-3}, {4e-3, 1e-2, 2e-5, 1.5e-2, 8 * 0x1p-11}, {2e-3, 2e-3, 1e-6, 0}};
    default:
      return {
          {2e-5, 1e-4, 1e-9, 1e-4}, {1e-4, 1e-3, 1e-9, 1e-3, 64 * 0x1p-24}, {2e-5, 1e-4, 1e-9, 0}};
  }
}

// `t` widened by `factor` (the squared norm bound by factor^2). Logits of several hundred carry
// an fp32 rounding error of ~1e-5 absolute (eps x |terms of q.k|), which moves the
// probabilities of close competitors by as much: the large-logit check widens fp32's bounds 10x
// (its purpose is the gross failure of a softmax without the running maximum).
inline Tol widened(Tol t, double factor) {
  t.atol *= factor;
  t.rtol *= factor;
  t.row *= factor;
  t.cancel *= factor;
  t.norm *= factor * factor;
  return t;
}

struct Mismatch {
  int64_t row, col;  // col -1: the whole row (row rule)
  double got, want, bound;
};

struct Result {
  int64_t bad_elements = 0, bad_rows = 0;
  double rms = 0;         // of the reference
  double norm_error = 0;  // sum (g - w)^2 / sum w^2 (0 when the reference is all zero)
  bool norm_ok = true;
  double worst_row = 0;         // largest ||g_r - w_r|| / ||w_r|| over the rows the row rule checks
  std::vector<Mismatch> first;  // at most 5 element and 5 row mismatches
  bool ok() const { return bad_elements == 0 && bad_rows == 0 && norm_ok; }
  std::string describe(const char* name) const {
    std::string s;
    char buf[256];
    for (const Mismatch& m : first) {
      if (m.col >= 0)
        std::snprintf(buf, sizeof buf, "%s row %lld col %lld: got %.9g, want %.9g (bound %.3g)\n",
                      name, static_cast<long long>(m.row), static_cast<long long>(m.col), m.got,
                      m.want, m.bound);
      else
        std::snprintf(buf, sizeof buf, "%s row %lld: |got - want| = %.3g > %.3g (|want| = %.3g)\n",
                      name, static_cast<long long>(m.row), m.got, m.bound, m.want);
      s += buf;
    }
    std::snprintf(buf, sizeof buf,
                  "%s: %lld bad elements, %lld bad rows, normalised error %.3g%s, worst row "
                  "relative error %.3g, reference rms %.3g",
                  name, static_cast<long long>(bad_elements), static_cast<long long>(bad_rows),
                  norm_error, norm_ok ? "" : " (over the bound)", worst_row, rms);
    return s + buf;
  }
};

// `terms`: empty, or t_r for every row (term_norms), used with tol.cancel.
template <typename G, typename W>
Result compare(const std::vector<G>& got, const std::vector<W>& want, int64_t dim, const Tol& tol,
               const std::vector<double>& terms = {}) {
  Result r;
  const size_t n = want.size();
  const auto d = static_cast<size_t>(dim);
  const size_t rows = d ? n / d : 0;
  double ref_sq = 0;
  size_t finite = 0;
  for (W w : want)
    if (std::isfinite(static_cast<double>(w))) {
      ref_sq += static_cast<double>(w) * static_cast<double>(w);
      ++finite;
    }
  r.rms = finite ? std::sqrt(ref_sq / static_cast<double>(finite)) : 0.0;
  const double row_floor = 1e-3 * r.rms * std::sqrt(static_cast<double>(dim));
  int element_reports = 0, row_reports = 0;
  double err_sq = 0, terms_sq = 0;
  bool any_nonfinite = false;
  const bool use_terms = !terms.empty() && tol.cancel > 0;
  for (size_t row = 0; row < rows; ++row) {
    const double term = use_terms && row < terms.size() ? tol.cancel * terms[row] : 0.0;
    terms_sq += term * term;
    double row_ref_sq = 0, row_err_sq = 0;
    size_t row_finite = 0;
    bool row_nonfinite = false;
    for (size_t c = 0; c < d; ++c) {
      const double w = static_cast<double>(want[row * d + c]);
      if (std::isfinite(w)) {
        row_ref_sq += w * w;
        ++row_finite;
      }
    }
    const double rms_row = row_finite ? std::sqrt(row_ref_sq / static_cast<double>(row_finite)) : 0;
    const double atol =
        tol.atol * std::max(r.rms, rms_row) + term / std::sqrt(static_cast<double>(dim));
    for (size_t c = 0; c < d; ++c) {
      const size_t e = row * d + c;
      const double g = static_cast<double>(got[e]), w = static_cast<double>(want[e]);
      bool ok;
      double bound = 0;
      if (std::isinf(w)) {
        ok = g == w;
      } else if (std::isnan(w)) {
        ok = false;  // a reference is never NaN: the comparison itself is broken
      } else {
        bound = atol + tol.rtol * std::fabs(w);
        ok = std::isfinite(g) && std::fabs(g - w) <= bound;
        if (std::isfinite(g)) {
          err_sq += (g - w) * (g - w);
          row_err_sq += (g - w) * (g - w);
        } else {
          row_nonfinite = any_nonfinite = true;
        }
      }
      if (!ok) {
        ++r.bad_elements;
        if (element_reports++ < 5)
          r.first.push_back({static_cast<int64_t>(row), static_cast<int64_t>(c), g, w, bound});
      }
    }
    if (tol.row > 0 && !row_nonfinite) {
      const double ref_norm = std::sqrt(row_ref_sq), err_norm = std::sqrt(row_err_sq);
      bool ok;
      double bound;
      if (ref_norm == 0) {
        bound = 0;
        ok = true;  // left to the element rule
      } else {
        bound = tol.row * std::max(ref_norm, row_floor) + term;
        ok = err_norm <= bound;
        if (ref_norm >= row_floor) r.worst_row = std::max(r.worst_row, err_norm / ref_norm);
      }
      if (!ok) {
        ++r.bad_rows;
        if (row_reports++ < 5)
          r.first.push_back({static_cast<int64_t>(row), -1, err_norm, ref_norm, bound});
      }
    }
  }
  if (any_nonfinite) err_sq = HUGE_VAL;
  if (ref_sq > 0) {
    r.norm_error = err_sq / ref_sq;
    r.norm_ok = err_sq <= tol.norm * ref_sq + terms_sq;
  } else {
    r.norm_ok = err_sq <= terms_sq;
  }
  return r;
}

// t_r of the terms rule for dq (rows: queries) and dk (rows: keys) of one problem, from its
// inputs: q, k, v, dout and the reference's out (dense [b, h, n, d]), the reference's lse
// ([b, h, n], natural log), the softmax `scale`, and keys(h, i, mask), which fills `mask` (n
// bytes) with the keys query i of head h attends. With P_ij = exp(scale q_i.k_j - lse_i),
// dP_ij = dO_i.v_j and |D_i| <= ||dO_i|| ||out_i||, a term of dS_ij has size
// w_ij = P_ij (|dP_ij| + ||dO_i|| ||out_i||), and the rounding errors of independent terms add in
// quadrature (probabilistic rounding-error analysis, as in Higham and Mary, SIAM J. Sci. Comput.
// 41(5), 2019):
//   t_dq_i = scale sqrt(sum_j (w_ij ||k_j||)^2),   t_dk_j = scale sqrt(sum_i (w_ij ||q_i||)^2).
// Pairs with a non-finite input or a -inf lse add nothing (the special rule judges them).
struct TermNorms {
  std::vector<double> dq, dk;  // [b, h, n]
};

template <typename X, typename L, typename Keys>
TermNorms term_norms(int64_t batch, int64_t heads, int64_t n, int64_t d, double scale,
                     const std::vector<X>& q, const std::vector<X>& k, const std::vector<X>& v,
                     const std::vector<X>& dout, const std::vector<X>& out,
                     const std::vector<L>& lse, Keys keys) {
  const auto rows = static_cast<size_t>(batch * heads * n);
  const auto dim = static_cast<size_t>(d);
  TermNorms t{std::vector<double>(rows, 0.0), std::vector<double>(rows, 0.0)};
  auto norm = [&](const std::vector<X>& x, size_t row) {
    double sq = 0;
    for (size_t c = 0; c < dim; ++c) sq += static_cast<double>(x[row * dim + c]) * x[row * dim + c];
    return std::sqrt(sq);
  };
  auto dot = [&](const std::vector<X>& a, size_t i, const std::vector<X>& b, size_t j) {
    double s = 0;
    for (size_t c = 0; c < dim; ++c) s += static_cast<double>(a[i * dim + c]) * b[j * dim + c];
    return s;
  };
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  std::vector<double> q_norm(rows), k_norm(rows), go(rows);
  for (size_t r = 0; r < rows; ++r) {
    q_norm[r] = norm(q, r);
    k_norm[r] = norm(k, r);
    go[r] = norm(dout, r) * norm(out, r);
  }
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const auto base = static_cast<size_t>((b * heads + h) * n);
      for (int64_t i = 0; i < n; ++i) {
        const size_t qi = base + static_cast<size_t>(i);
        const double l = static_cast<double>(lse[qi]);
        if (!std::isfinite(l)) continue;
        keys(static_cast<int>(h), i, mask);
        for (int64_t j = 0; j < n; ++j) {
          if (!mask[static_cast<size_t>(j)]) continue;
          const size_t kj = base + static_cast<size_t>(j);
          const double p = std::exp(scale * dot(q, qi, k, kj) - l);
          const double w = p * (std::fabs(dot(dout, qi, v, kj)) + go[qi]);
          if (!std::isfinite(w)) continue;
          t.dq[qi] += (w * k_norm[kj]) * (w * k_norm[kj]);
          t.dk[kj] += (w * q_norm[qi]) * (w * q_norm[qi]);
        }
      }
    }
  for (size_t r = 0; r < rows; ++r) {
    t.dq[r] = std::isfinite(t.dq[r]) ? scale * std::sqrt(t.dq[r]) : 0.0;
    t.dk[r] = std::isfinite(t.dk[r]) ? scale * std::sqrt(t.dk[r]) : 0.0;
  }
  return t;
}

// What one comparison was of: the kernel, the layout and shape, and the tensor compared.
struct RecordKey {
  std::string kernel;  // e.g. "fused bf16"
  std::string layout;  // the patterns, e.g. "strided_row(l=16)+strided_column(l=16)"
  std::string tensor;  // out, lse, dq, dk or dv
  int64_t batch = 0, heads = 0, n = 0, d = 0;
  int block = 0;
  int order = 0;         // the storage order of the test's tensors
  double q_scale = 1.0;  // q multiplied by this (large logits)
};

// A JSON string literal of `s`.
inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// A JSON number, or null for NaN and infinities (JSON has neither).
inline std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

// Appends one JSON line for the comparison `r` of `key` to the file the environment variable
// SPARSE_CHECK_RECORD names; nothing when it is unset or empty. A passing run records its errors
// too: benchmarks/correctness_table.py makes the correctness table (maximum normalised error per
// kernel, head size, block size and layout) from these lines. Returns false when the file cannot
// be written (the comparison itself is not affected).
inline bool record(const RecordKey& key, const Result& r) {
  const char* path = std::getenv("SPARSE_CHECK_RECORD");
  if (path == nullptr || *path == '\0') return true;
  const std::string line =
      "{\"kernel\": " + json_string(key.kernel) + ", \"layout\": " + json_string(key.layout) +
      ", \"tensor\": " + json_string(key.tensor) + ", \"batch\": " + std::to_string(key.batch) +
      ", \"heads\": " + std::to_string(key.heads) + ", \"n\": " + std::to_string(key.n) +
      ", \"head_dim\": " + std::to_string(key.d) +
      ", \"block_size\": " + std::to_string(key.block) +
      ", \"order\": " + std::to_string(key.order) + ", \"q_scale\": " + json_number(key.q_scale) +
      ", \"norm_error\": " + json_number(r.norm_error) +
      ", \"worst_row\": " + json_number(r.worst_row) +
      ", \"bad_elements\": " + std::to_string(r.bad_elements) +
      ", \"bad_rows\": " + std::to_string(r.bad_rows) + ", \"ok\": " + (r.ok() ? "true" : "false") +
      "}\n";
  std::FILE* f = std::fopen(path, "a");
  if (f == nullptr) return false;
  const bool written = std::fputs(line.c_str(), f) >= 0;
  return std::fclose(f) == 0 && written;
}

// Elements of the rows whose reference lse is -inf (queries without keys) that are not exactly
// zero: such a query's output and gradient are zero by definition.
template <typename G, typename L>
int64_t nonzero_in_empty_rows(const std::vector<G>& got, int64_t dim, const std::vector<L>& lse) {
  int64_t count = 0;
  const auto d = static_cast<size_t>(dim);
  for (size_t row = 0; row < lse.size(); ++row)
    if (std::isinf(static_cast<double>(lse[row])) && lse[row] < 0)
      for (size_t c = 0; c < d; ++c) count += got[row * d + c] != 0 ? 1 : 0;
  return count;
}

// Output buffers are filled with this byte before a kernel runs: all-ones is NaN in fp32, bf16
// and fp16, so an element the kernel never writes fails the comparison, and any byte it should
// not touch (row padding, the guard after the tensor) must still hold it afterwards.
constexpr unsigned char kSentinel = 0xff;

// Bytes of `bytes` outside the elements a tensor addresses (`covered` true) that no longer hold
// the sentinel; returns how many, and the first offset in *first.
inline size_t touched_padding(const std::vector<unsigned char>& bytes,
                              const std::vector<bool>& covered, size_t* first) {
  size_t count = 0;
  for (size_t i = 0; i < bytes.size(); ++i)
    if (!(i < covered.size() && covered[i]) && bytes[i] != kSentinel) {
      if (count++ == 0 && first) *first = i;
    }
  return count;
}

// ------------------------------------------------------------------ 16-bit conversions (host)

inline uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
inline uint16_t to_f16(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t u;
  std::memcpy(&u, &h, sizeof u);
  return u;
}
inline float from_f16(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, sizeof h);
  return static_cast<float>(h);
}
// x rounded to `dtype` (round to nearest even) and back.
inline float round_to(sparse_dtype dtype, float x) {
  if (dtype == SPARSE_DTYPE_BF16) return from_bf16(to_bf16(x));
  if (dtype == SPARSE_DTYPE_F16) return from_f16(to_f16(x));
  return x;
}

}  // namespace check
