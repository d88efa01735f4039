// An independent, deliberately plain reference for block-sparse attention tests: the token-level
// pattern definitions of capi/include/sparse/layout.h written directly as predicates (no blocks, no
// layouts), and dense double-precision attention over those masks. Nothing here calls the
// library's layout code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "sparse/layout.h"

namespace naive {

struct Pattern {
  sparse_pattern_kind kind = SPARSE_PATTERN_DENSE;
  int head = -1;
  int64_t window = 0, stride = 0, summary = 0;
  int variants = 1;
  bool causal = true;
  std::vector<int64_t> globals;
  int64_t random_blocks = 0;
  uint64_t seed = 0;
};

// BigBird random key blocks, written from the formula documented in layout.h.
inline bool bigbird_random_hit(const Pattern& p, int head, int64_t I, int64_t J, int64_t nb) {
  const int64_t range = p.causal ? I + 1 : nb;
  if (p.random_blocks >= range) return J < range;
  std::vector<int64_t> taken;
  uint64_t x = p.seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(head + 1)) ^
               (0xBF58476D1CE4E5B9ull * static_cast<uint64_t>(I + 1));
  while (static_cast<int64_t>(taken.size()) < p.random_blocks) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const auto b = static_cast<int64_t>(z % static_cast<uint64_t>(range));
    if (std::find(taken.begin(), taken.end(), b) == taken.end()) taken.push_back(b);
  }
  return std::find(taken.begin(), taken.end(), J) != taken.end();
}

inline bool allowed_one(const Pattern& p, int head, int64_t n, int block, int64_t i, int64_t j) {
  const bool causal_ok = j <= i;
  const bool global = std::find(p.globals.begin(), p.globals.end(), i) != p.globals.end() ||
                      std::find(p.globals.begin(), p.globals.end(), j) != p.globals.end();
  switch (p.kind) {
    case SPARSE_PATTERN_DENSE:
      return p.causal ? causal_ok : true;
    case SPARSE_PATTERN_LOCAL:
      return i - p.window < j && j <= i;
    case SPARSE_PATTERN_STRIDED_ROW:
      return std::max<int64_t>(0, i - p.stride) <= j && j <= i;
    case SPARSE_PATTERN_STRIDED_COLUMN:
      return causal_ok && (i - j) % p.stride == 0;
    case SPARSE_PATTERN_FIXED_BLOCK:
      return causal_ok && j / p.stride == i / p.stride;
    case SPARSE_PATTERN_FIXED_SUMMARY: {
      const int64_t v = head % p.variants;
      const int64_t r = j % p.stride;
      return causal_ok && r >= p.stride - p.summary * (v + 1) && r < p.stride - p.summary * v;
    }
    case SPARSE_PATTERN_SLIDING_WINDOW:
    case SPARSE_PATTERN_LONGFORMER:
    case SPARSE_PATTERN_BIGBIRD: {
      bool in = p.causal ? (i - p.window < j && j <= i) : std::llabs(i - j) < p.window;
      if (p.kind != SPARSE_PATTERN_SLIDING_WINDOW && global) in = true;
      if (p.kind == SPARSE_PATTERN_BIGBIRD && p.random_blocks > 0) {
        const int64_t nb = (n + block - 1) / block;
        if (bigbird_random_hit(p, head, i / block, j / block, nb)) in = true;
      }
      return p.causal ? (in && causal_ok) : in;
    }
  }
  return false;
}

// Mask of one head: mask[i * n + j] = 1 if query i attends key j (union of the head's patterns).
inline std::vector<uint8_t> head_mask(const std::vector<Pattern>& patterns, int head, int64_t n,
                                      int block) {
  std::vector<uint8_t> mask(static_cast<size_t>(n * n), 0);
  for (const Pattern& p : patterns) {
    if (p.head != -1 && p.head != head) continue;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (allowed_one(p, head, n, block, i, j)) mask[static_cast<size_t>(i * n + j)] = 1;
  }
  return mask;
}

// The running maximum of a softmax row: a NaN score makes the whole row NaN (std::max would skip
// it, and a row whose only scores are NaN would pass for a row without keys).
inline double max_keeping_nan(double m, double s) {
  return std::isnan(m) || std::isnan(s) ? std::numeric_limits<double>::quiet_NaN() : std::max(m, s);
}

// Dense tensors [batch, heads, n, d] in double, row-major.
struct Problem {
  int64_t batch, heads, n, d;
  double scale;
  std::vector<std::vector<uint8_t>> masks;  // per head
  size_t at(int64_t b, int64_t h, int64_t i, int64_t c = 0) const {
    return static_cast<size_t>(((b * heads + h) * n + i) * d + c);
  }
};

inline void forward(const Problem& pb, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, std::vector<double>& out,
                    std::vector<double>& lse) {
  out.assign(q.size(), 0.0);
  lse.assign(static_cast<size_t>(pb.batch * pb.heads * pb.n), 0.0);
  std::vector<double> s(static_cast<size_t>(pb.n));
  for (int64_t b = 0; b < pb.batch; ++b)
    for (int64_t h = 0; h < pb.heads; ++h)
      for (int64_t i = 0; i < pb.n; ++i) {
        const auto& mask = pb.masks[static_cast<size_t>(h)];
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < pb.n; ++j) {
          if (!mask[static_cast<size_t>(i * pb.n + j)]) continue;
          double dot = 0;
          for (int64_t c = 0; c < pb.d; ++c) dot += q[pb.at(b, h, i, c)] * k[pb.at(b, h, j, c)];
          s[static_cast<size_t>(j)] = pb.scale * dot;
          m = max_keeping_nan(m, s[static_cast<size_t>(j)]);
        }
        const size_t row = static_cast<size_t>((b * pb.heads + h) * pb.n + i);
        if (m == -std::numeric_limits<double>::infinity()) {
          lse[row] = m;
          continue;
        }
        double z = 0;
        for (int64_t j = 0; j < pb.n; ++j)
          if (mask[static_cast<size_t>(i * pb.n + j)]) z += std::exp(s[static_cast<size_t>(j)] - m);
        for (int64_t j = 0; j < pb.n; ++j) {
          if (!mask[static_cast<size_t>(i * pb.n + j)]) continue;
          const double p = std::exp(s[static_cast<size_t>(j)] - m) / z;
          for (int64_t c = 0; c < pb.d; ++c) out[pb.at(b, h, i, c)] += p * v[pb.at(b, h, j, c)];
        }
        lse[row] = m + std::log(z);
      }
}

// Gradients of L = sum(dout * out) from the softmax Jacobian written out directly.
inline void backward(const Problem& pb, const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, const std::vector<double>& dout,
                     std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) {
  dq.assign(q.size(), 0.0);
  dk.assign(q.size(), 0.0);
  dv.assign(q.size(), 0.0);
  const auto n = static_cast<size_t>(pb.n);
  std::vector<double> p(n), dp(n);
  for (int64_t b = 0; b < pb.batch; ++b)
    for (int64_t h = 0; h < pb.heads; ++h)
      for (int64_t i = 0; i < pb.n; ++i) {
        const auto& mask = pb.masks[static_cast<size_t>(h)];
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < pb.n; ++j) {
          p[static_cast<size_t>(j)] = 0;
          if (!mask[static_cast<size_t>(i * pb.n + j)]) continue;
          double dot = 0;
          for (int64_t c = 0; c < pb.d; ++c) dot += q[pb.at(b, h, i, c)] * k[pb.at(b, h, j, c)];
          p[static_cast<size_t>(j)] = pb.scale * dot;
          m = max_keeping_nan(m, pb.scale * dot);
        }
        if (m == -std::numeric_limits<double>::infinity()) continue;
        double z = 0;
        for (int64_t j = 0; j < pb.n; ++j)
          if (mask[static_cast<size_t>(i * pb.n + j)]) z += std::exp(p[static_cast<size_t>(j)] - m);
        double expected_dp = 0;  // sum_j P_ij dP_ij
        for (int64_t j = 0; j < pb.n; ++j) {
          if (!mask[static_cast<size_t>(i * pb.n + j)]) {
            p[static_cast<size_t>(j)] = 0;
            continue;
          }
          p[static_cast<size_t>(j)] = std::exp(p[static_cast<size_t>(j)] - m) / z;
          double dot = 0;
          for (int64_t c = 0; c < pb.d; ++c) dot += dout[pb.at(b, h, i, c)] * v[pb.at(b, h, j, c)];
          dp[static_cast<size_t>(j)] = dot;
          expected_dp += p[static_cast<size_t>(j)] * dot;
        }
        for (int64_t j = 0; j < pb.n; ++j) {
          const double pij = p[static_cast<size_t>(j)];
          if (pij == 0) continue;
          const double ds = pij * (dp[static_cast<size_t>(j)] - expected_dp) * pb.scale;
          for (int64_t c = 0; c < pb.d; ++c) {
            dq[pb.at(b, h, i, c)] += ds * k[pb.at(b, h, j, c)];
            dk[pb.at(b, h, j, c)] += ds * q[pb.at(b, h, i, c)];
            dv[pb.at(b, h, j, c)] += pij * dout[pb.at(b, h, i, c)];
          }
        }
      }
}

}  // namespace naive
