// Block-sparse attention, forward and backward, on the CPU.
//
// Forward, per (batch, head, query block I): gather the query tile, then for every computed key
// block J of row I compute S = scale Q K^T (Eigen GEMM on B x d tiles), mask it, and fold it into
// an online softmax (running max m, running sum l, accumulator acc). out = acc / l and
// lse = m + log l. No n x n buffer exists; memory is O(threads * B * (B + d)).
//
// Backward recomputes P = exp(S - lse) block by block:
//   dV_J += P^T dO_I,  dP = dO_I V_J^T,  dS = P * (dP - D),  D_i = dO_i . O_i,
//   dQ_I += scale dS K_J,  dK_J += scale dS^T Q_I.
// dK and dV are accumulated per work item in the computed order and scattered at the end; when
// there are fewer (batch, head) pairs than threads, the query blocks of one pair are split across
// threads with private accumulators that are summed afterwards.
//
// Non-finite inputs. The layout contract is token-level: a NaN or Inf in Q, K, V (or dO, O, lse)
// may reach exactly the results of the queries that attend it. A block product multiplies every
// pair of the block, attended or not, and 0 x NaN = NaN, so each pass runs the plain products and
// then checks the few results they produced (one B x d tile per block row, or the dK/dV
// accumulators of a work item). Only when one is non-finite is that work redone with the exact
// tile products below, which take the non-finite entries out of the block products and add the
// attended pairs that involve them back one by one. Finite inputs never take that path; results
// that no non-finite input reaches are bitwise those of a run where it is replaced by a finite one.
#include "reference_cpu/attention_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "libsparse/layout.hpp"
#include "libsparse/threads.hpp"
#include "reference_cpu/eigen.hpp"
#include "sparse_config.h"

namespace sparse::cpu {
namespace {

using Tile = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXf;
using TileView = Eigen::Map<const Tile, Eigen::Unaligned, Eigen::OuterStride<>>;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Copies rows of block `block` (computed order) of tensor t[b, h] into `tile` (B x d); rows that
// are padding or past the end are zero.
void gather(const TensorView& t, int64_t b, int64_t h, const HeadLayout& L, int64_t block,
            Tile& tile) {
  const int64_t d = tile.cols();
  const int64_t dstride = t.strides[3];
  for (int64_t r = 0; r < tile.rows(); ++r) {
    const int64_t idx = block * L.block + r;
    const int64_t p = idx < L.n_computed ? L.natural(idx) : -1;
    float* dst = tile.row(r).data();
    if (p < 0) {
      std::fill(dst, dst + d, 0.0f);
      continue;
    }
    const float* src = t.ptr<float>(b, h, p);
    if (dstride == 1) {
      std::copy(src, src + d, dst);
    } else {
      for (int64_t c = 0; c < d; ++c) dst[c] = src[c * dstride];
    }
  }
}

// Writes tile rows back to t[b, h] at their natural positions (skipping padding), times `alpha`,
// adding the rows of `extra` tiles when given (used to sum per-thread accumulators).
// A B x d view of block `block` of t[b, h]: straight into the caller's tensor when the block is
// contiguous rows in natural order (no copy), else gathered into `scratch`.
TileView block_view(const TensorView& t, int64_t b, int64_t h, const HeadLayout& L, int64_t block,
                    Tile& scratch) {
  const int64_t B = L.block;
  if (!L.transposed && t.strides[3] == 1 && (block + 1) * B <= L.seq_len)
    return TileView(t.ptr<float>(b, h, block * B), B, scratch.cols(),
                    Eigen::OuterStride<>(t.strides[2]));
  gather(t, b, h, L, block, scratch);
  return TileView(scratch.data(), scratch.rows(), scratch.cols(),
                  Eigen::OuterStride<>(scratch.cols()));
}

void scatter_rows(const TensorView& t, int64_t b, int64_t h, const HeadLayout& L, int64_t first_row,
                  const float* rows, int64_t num_rows, int64_t d, float alpha) {
  const int64_t dstride = t.strides[3];
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t idx = first_row + r;
    const int64_t p = idx < L.n_computed ? L.natural(idx) : -1;
    if (p < 0) continue;
    float* dst = t.ptr<float>(b, h, p);
    const float* src = rows + r * d;
    for (int64_t c = 0; c < d; ++c) dst[c * dstride] = alpha * src[c];
  }
}

// Whether every entry of a result is finite, as one vectorised sum: a NaN or an Inf anywhere makes
// the sum non-finite. (A sum that overflows from finite entries would send the result through the
// exact path, which computes the same products for finite inputs: it costs time, not
// correctness.)
template <typename M>
bool sum_is_finite(const M& m) {
  return std::isfinite(m.sum());
}

// Sets the entries of S that the block's element mask excludes to `fill` (a select, so a NaN or
// Inf score of an excluded pair leaves no trace).
void apply_mask(const HeadLayout& L, int32_t mask_id, Eigen::Ref<Tile> S, float fill = kNegInf) {
  if (mask_id < 0) return;
  const uint64_t* bits = L.mask(mask_id);
  const int B = L.block;
  for (int r = 0; r < B; ++r) {
    const uint64_t* row = bits + static_cast<size_t>(r) * L.words;
    float* s = S.row(r).data();
    for (int w = 0; w * 64 < B; ++w) {
      const uint64_t word = row[w];
      if (word == ~uint64_t{0}) continue;
      float* sw = s + w * 64;
      const int count = std::min(64, B - w * 64);
      if (word == 0) {
        std::fill(sw, sw + count, fill);
        continue;
      }
      for (int c = 0; c < count; ++c) sw[c] = ((word >> c) & 1u) ? sw[c] : fill;
    }
  }
}

// Whether query r attends key c inside a computed block with element mask `mask_id`.
bool attends(const HeadLayout& L, int32_t mask_id, int r, int c) {
  if (mask_id < 0) return true;
  const uint64_t word = L.mask(mask_id)[static_cast<size_t>(r) * L.words + c / 64];
  return ((word >> (c % 64)) & 1u) != 0;
}

// C += A B over the pairs (r, j) that take(r, j) accepts, where A is 0 at every other pair: the
// non-finite entries of A and B leave the block product (0 x NaN would reach every row) and
// their accepted pairs are added one by one. With finite A and B this is the plain product.
template <typename AMat, typename Take>
void add_product_exact(Eigen::Ref<Tile> C, const AMat& A, const TileView& B, Tile& finite_a,
                       Tile& finite_b, Take take) {
  if (A.allFinite() && B.allFinite()) {
    C.noalias() += A * B;
    return;
  }
  finite_a = A.array().isFinite().select(A, 0.0f).matrix();
  finite_b = B.array().isFinite().select(B, 0.0f).matrix();
  C.noalias() += finite_a * finite_b;
  for (int r = 0; r < A.rows(); ++r)
    for (int j = 0; j < A.cols(); ++j)
      if (!std::isfinite(A(r, j)) && take(r, j)) C.row(r) += A(r, j) * B.row(j);
  for (int j = 0; j < B.rows(); ++j)
    for (int64_t c = 0; c < B.cols(); ++c) {
      if (std::isfinite(B(j, c))) continue;
      for (int r = 0; r < A.rows(); ++r)
        if (std::isfinite(A(r, j)) && take(r, j)) C(r, c) += A(r, j) * B(j, c);
    }
}

// P = exp(scale Q K^T - lse) (masked entries and rows with lse = -inf are 0) and
// dS = P * (dO V^T - delta) of one block: the plain computation of both algorithms. The mask is
// applied after the exponential, as exact zeros: Eigen's vectorized exp(-inf) is a denormal, not
// 0, which would give keys that nobody attends a denormal gradient instead of 0.
template <typename POut, typename DSOut>
void probs_and_dscores(const HeadLayout& L, int32_t mask_id, float scale, const TileView& q,
                       const TileView& k, const TileView& v, const TileView& dout, const Vec& lse,
                       const Vec& delta, POut&& p, DSOut&& ds) {
  p.noalias() = q * k.transpose();
  p *= scale;
  for (int r = 0; r < L.block; ++r) {
    if (lse[r] == kNegInf)  // row without keys (or padding): no gradient
      p.row(r).setZero();
    else
      p.row(r) = (p.row(r).array() - lse[r]).exp().matrix();
  }
  apply_mask(L, mask_id, p, 0.0f);
  ds.noalias() = dout * v.transpose();
  ds = (p.array() * (ds.colwise() - delta).array()).matrix();
}

struct ExactScratch {
  Tile s, p, ds, finite_a, finite_b;
};

// Adds one block's contributions to dQ (rows of block I, unscaled), dK (rows of block J,
// unscaled) and dV over the pairs with P != 0 only, as the softmax Jacobian does: P is 0 at
// masked pairs by selection, dS is selected to 0 wherever P is, and each product is exact.
void backward_tile_exact(const HeadLayout& L, int32_t mask_id, float scale, const TileView& q,
                         const TileView& k, const TileView& v, const TileView& dout, const Vec& lse,
                         const Vec& delta, ExactScratch& x, Eigen::Ref<Tile> dq,
                         Eigen::Ref<Tile> dk, Eigen::Ref<Tile> dv) {
  x.p.resize(L.block, L.block);
  x.ds.resize(L.block, L.block);
  probs_and_dscores(L, mask_id, scale, q, k, v, dout, lse, delta, x.p, x.ds);
  // A pair whose score is -inf (an infinite Q or K) has P = 0 exactly, as in the softmax;
  // Eigen's vectorized exp(-inf) is a denormal.
  x.s.noalias() = q * k.transpose();
  x.s *= scale;
  for (int r = 0; r < L.block; ++r)
    for (int j = 0; j < L.block; ++j)
      if (x.s(r, j) - lse[r] == kNegInf) x.p(r, j) = 0.0f;
  x.ds = (x.p.array() != 0.0f).select(x.ds, 0.0f).matrix();
  const auto taken = [&](int r, int j) { return x.p(r, j) != 0.0f; };
  const auto taken_t = [&](int j, int r) { return x.p(r, j) != 0.0f; };
  add_product_exact(dv, x.p.transpose(), dout, x.finite_a, x.finite_b, taken_t);
  add_product_exact(dq, x.ds, k, x.finite_a, x.finite_b, taken);
  add_product_exact(dk, x.ds.transpose(), q, x.finite_a, x.finite_b, taken_t);
}

// lse of the rows of block I of (b, h); padding rows are -inf.
void load_lse(const TensorView& lse, int64_t b, int64_t h, const HeadLayout& L, int64_t I,
              Vec& out) {
  for (int r = 0; r < L.block; ++r) {
    const int64_t idx = I * L.block + r;
    const int64_t p = idx < L.n_computed ? L.natural(idx) : -1;
    out[r] = p < 0 ? kNegInf : *lse.ptr<float>(b, h, p);
  }
}

struct ForwardScratch {
  Tile q, k, v, s, acc, finite_s, finite_v;
  Vec m, l;
  ForwardScratch(int B, int64_t d) : q(B, d), k(B, d), v(B, d), s(B, B), acc(B, d), m(B), l(B) {}
};

// The online softmax of block row I into w.acc, w.m, w.l; P V with exact products when `exact`.
void forward_row(const AttentionForwardArgs& a, const HeadLayout& L, int64_t b, int64_t h,
                 int64_t I, ForwardScratch& w, bool exact) {
  const int B = L.block;
  const TileView q = block_view(a.q, b, h, L, I, w.q);
  w.m.setConstant(kNegInf);
  w.l.setZero();
  w.acc.setZero();
  for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
    const int64_t J = L.col_idx[e];
    const TileView k = block_view(a.k, b, h, L, J, w.k);
    const TileView v = block_view(a.v, b, h, L, J, w.v);
    w.s.noalias() = q * k.transpose();
    w.s *= a.scale;
    apply_mask(L, L.mask_id[e], w.s);
    for (int r = 0; r < B; ++r) {
      const float row_max = w.s.row(r).maxCoeff();
      float m_new = std::max(w.m[r], row_max);
      if (m_new == kNegInf) {
        // Nothing allowed in this row so far, unless the maximum skipped a NaN score: a NaN row
        // stays NaN (m = NaN), never "no keys".
        if (!w.s.row(r).hasNaN()) {
          w.s.row(r).setZero();
          continue;
        }
        m_new = std::numeric_limits<float>::quiet_NaN();
      }
      w.s.row(r) = (w.s.row(r).array() - m_new).exp().matrix();
      const float correction = std::exp(w.m[r] - m_new);  // 0 when m was -inf
      w.l[r] = w.l[r] * correction + w.s.row(r).sum();
      w.acc.row(r) *= correction;
      w.m[r] = m_new;
    }
    if (exact) {
      const int32_t mask_id = L.mask_id[e];
      add_product_exact(w.acc, w.s, v, w.finite_s, w.finite_v,
                        [&](int r, int j) { return attends(L, mask_id, r, j); });
    } else {
      w.acc.noalias() += w.s * v;
    }
  }
}

void forward_block(const AttentionForwardArgs& a, int64_t b, int64_t h, int64_t I,
                   ForwardScratch& w) {
  const HeadLayout& L = a.layout->head(static_cast<int>(h));
  const int B = L.block;
  forward_row(a, L, b, h, I, w, false);
  // Scores are masked by selection, so only P V can carry a value to rows that do not attend it.
  if (!sum_is_finite(w.acc)) forward_row(a, L, b, h, I, w, true);
  const int64_t d = w.acc.cols();
  for (int r = 0; r < B; ++r) {
    const int64_t idx = I * B + r;
    const int64_t p = idx < L.n_computed ? L.natural(idx) : -1;
    if (p < 0) continue;
    const bool empty = w.l[r] == 0.0f;  // a NaN sum is not empty: out and lse stay NaN
    const float inv = empty ? 0.0f : 1.0f / w.l[r];
    float* dst = a.out.ptr<float>(b, h, p);
    for (int64_t c = 0; c < d; ++c) dst[c * a.out.strides[3]] = w.acc(r, c) * inv;
    if (a.lse.data != nullptr)
      *a.lse.ptr<float>(b, h, p) = empty ? kNegInf : w.m[r] + std::log(w.l[r]);
  }
}

struct BackwardScratch {
  Tile q, k, v, o, dout, p, dp, dq;
  Vec lse, delta;
  ExactScratch exact;
  BackwardScratch(int B, int64_t d)
      : q(B, d),
        k(B, d),
        v(B, d),
        o(B, d),
        dout(B, d),
        p(B, B),
        dp(B, B),
        dq(B, d),
        lse(B),
        delta(B) {}
};

// Processes query blocks [I0, I1) of (b, h), accumulating into dk_acc / dv_acc (computed order,
// num_blocks * B rows) and writing dq directly. Without `exact`, returns false as soon as a
// result is non-finite (the caller redoes the item with `exact`).
bool backward_blocks(const AttentionBackwardArgs& a, int64_t b, int64_t h, int64_t I0, int64_t I1,
                     BackwardScratch& w, Tile& dk_acc, Tile& dv_acc, bool exact) {
  const HeadLayout& L = a.layout->head(static_cast<int>(h));
  const int B = L.block;
  const int64_t d = w.q.cols();
  int64_t first_j = L.num_blocks, last_j = -1;  // the key blocks this item accumulated into
  for (int64_t I = I0; I < I1; ++I) {
    if (L.row_ptr[I] == L.row_ptr[I + 1]) {
      w.dq.setZero();
      scatter_rows(a.dq, b, h, L, I * B, w.dq.data(), B, d, 1.0f);
      continue;
    }
    const TileView q = block_view(a.q, b, h, L, I, w.q);
    const TileView o = block_view(a.out, b, h, L, I, w.o);
    const TileView dout = block_view(a.dout, b, h, L, I, w.dout);
    load_lse(a.lse, b, h, L, I, w.lse);
    w.delta = (dout.array() * o.array()).rowwise().sum().matrix();
    w.dq.setZero();
    for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
      const int64_t J = L.col_idx[e];
      first_j = std::min(first_j, J);
      last_j = std::max(last_j, J);
      const TileView k = block_view(a.k, b, h, L, J, w.k);
      const TileView v = block_view(a.v, b, h, L, J, w.v);
      auto dv_rows = dv_acc.middleRows(J * B, B);
      auto dk_rows = dk_acc.middleRows(J * B, B);
      if (exact) {
        backward_tile_exact(L, L.mask_id[e], a.scale, q, k, v, dout, w.lse, w.delta, w.exact, w.dq,
                            dk_rows, dv_rows);
        continue;
      }
      probs_and_dscores(L, L.mask_id[e], a.scale, q, k, v, dout, w.lse, w.delta, w.p, w.dp);
      dv_rows.noalias() += w.p.transpose() * dout;
      w.dq.noalias() += w.dp * k;
      dk_rows.noalias() += w.dp.transpose() * q;
    }
    if (!exact && !sum_is_finite(w.dq)) return false;
    scatter_rows(a.dq, b, h, L, I * B, w.dq.data(), B, d, a.scale);
  }
  if (exact || last_j < 0) return true;
  const int64_t rows = (last_j - first_j + 1) * B;
  return sum_is_finite(dk_acc.middleRows(first_j * B, rows)) &&
         sum_is_finite(dv_acc.middleRows(first_j * B, rows));
}

}  // namespace

void attention_forward(const AttentionForwardArgs& args, int num_threads) {
  const Layout& layout = *args.layout;
  const int64_t batch = args.q.shape[0], heads = args.q.shape[1], d = args.q.shape[3];
  if (batch == 0 || d == 0) return;
  // Every natural row maps to one computed-order row of some block I, so visiting all blocks
  // (including rows without keys) writes every output row and lse entry.
  int64_t max_blocks = 0;
  for (int h = 0; h < layout.num_heads; ++h)
    max_blocks = std::max(max_blocks, layout.head(h).num_blocks);
  const int64_t items = batch * heads * max_blocks;
  // Every thread reaches the work-sharing loop even when its scratch failed (a thread missing
  // from the loop's barrier would hang the others); errors are rethrown after the region.
  RegionErrors errors;
#if SPARSE_HAVE_OPENMP
#pragma omp parallel num_threads(num_threads)
#endif
  {
    std::unique_ptr<ForwardScratch> scratch;
    errors.run([&] { scratch = std::make_unique<ForwardScratch>(layout.block, d); });
#if SPARSE_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t item = 0; item < items; ++item) {
      const int64_t I = item % max_blocks;
      const int64_t bh = item / max_blocks;
      const int64_t b = bh / heads, h = bh % heads;
      if (I >= layout.head(static_cast<int>(h)).num_blocks) continue;
      errors.run([&] { forward_block(args, b, h, I, *scratch); });
    }
  }
  errors.rethrow();
}

namespace {

// One unit of backward work: query blocks [I0, I1) of one (batch, head) pair. `slot` >= 0 when the
// pair is split across several items, each accumulating dK/dV privately (summed afterwards).
struct BackwardItem {
  int64_t pair, I0, I1, work;
  int64_t slot;
};

// The total work (computed blocks plus block rows) of the backward pass, and each thread's share.
int64_t backward_target(const Layout& layout, int64_t batch, int64_t heads, int num_threads) {
  int64_t total = 0;
  for (int64_t h = 0; h < heads; ++h) {
    const HeadLayout& L = layout.head(static_cast<int>(h));
    total += batch * (L.nnz() + L.num_blocks);
  }
  return std::max<int64_t>(1, total / static_cast<int64_t>(num_threads));
}

// The items of one (batch, head) pair of head L (pair and slot left for the caller): one item
// [0, nb) unless the pair's work exceeds its share by more than 25%, when it is split by query
// blocks where the running work crosses multiples of work / chunks.
std::vector<BackwardItem> split_pair(const HeadLayout& L, int64_t target, int num_threads) {
  const int64_t nb = L.num_blocks, work = L.nnz() + nb;
  // Split only a clearly heavy pair: each split costs an n x d accumulator pair.
  const int64_t chunks =
      num_threads == 1 || 4 * work <= 5 * target ? 1 : std::min(nb, (work + target - 1) / target);
  if (chunks == 1) return {{0, 0, nb, work, -1}};
  std::vector<BackwardItem> items;
  int64_t I0 = 0, acc = 0, cut = 1;
  for (int64_t I = 0; I < nb; ++I) {
    acc += L.row_ptr[I + 1] - L.row_ptr[I] + 1;
    if ((acc * chunks >= cut * work && cut < chunks) || I == nb - 1) {
      items.push_back({0, I0, I + 1, acc, 0});
      I0 = I + 1;
      acc = 0;
      ++cut;
    }
  }
  return items;
}

// Splits the backward pass into items of about equal work (computed blocks). A pair whose work
// exceeds its share by more than 25% is split by query blocks so no thread waits on one heavy head
// (the fixed pattern's summary head has ~25x the blocks of its block head). Heaviest items first.
std::vector<BackwardItem> plan_backward(const Layout& layout, int64_t batch, int64_t heads,
                                        int num_threads, int64_t* slots) {
  const int64_t target = backward_target(layout, batch, heads, num_threads);
  std::vector<std::vector<BackwardItem>> per_head;
  for (int64_t h = 0; h < heads; ++h)
    per_head.push_back(split_pair(layout.head(static_cast<int>(h)), target, num_threads));
  std::vector<BackwardItem> items;
  *slots = 0;
  for (int64_t pair = 0; pair < batch * heads; ++pair) {
    for (BackwardItem item : per_head[static_cast<size_t>(pair % heads)]) {
      item.pair = pair;
      if (item.slot >= 0) item.slot = (*slots)++;
      items.push_back(item);
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const BackwardItem& a, const BackwardItem& b) { return a.work > b.work; });
  return items;
}

// The number of private dK/dV accumulators plan_backward hands out, without listing the items
// (batch may be any size the caller asks a workspace for).
int64_t backward_slots(const Layout& layout, int64_t batch, int64_t heads, int num_threads) {
  const int64_t target = backward_target(layout, batch, heads, num_threads);
  int64_t per_batch = 0;
  for (int64_t h = 0; h < heads; ++h) {
    const std::vector<BackwardItem> items =
        split_pair(layout.head(static_cast<int>(h)), target, num_threads);
    if (items.size() > 1 || items[0].slot >= 0) per_batch += static_cast<int64_t>(items.size());
  }
  return batch * per_batch;
}

}  // namespace

void attention_backward(const AttentionBackwardArgs& args, int num_threads) {
  const Layout& layout = *args.layout;
  const int64_t batch = args.q.shape[0], heads = args.q.shape[1], d = args.q.shape[3];
  if (batch == 0 || d == 0) return;
  const int B = layout.block;
  int64_t slots = 0;
  const std::vector<BackwardItem> items = plan_backward(layout, batch, heads, num_threads, &slots);
  std::vector<Tile> dk_acc(static_cast<size_t>(slots)), dv_acc(static_cast<size_t>(slots));
  const auto count = static_cast<int64_t>(items.size());
  RegionErrors errors;  // as in attention_forward
#if SPARSE_HAVE_OPENMP
#pragma omp parallel num_threads(num_threads)
#endif
  {
    std::unique_ptr<BackwardScratch> scratch;
    errors.run([&] { scratch = std::make_unique<BackwardScratch>(B, d); });
    Tile own_dk, own_dv;
#if SPARSE_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t k = 0; k < count; ++k)
      errors.run([&] {
        const BackwardItem& item = items[static_cast<size_t>(k)];
        const int64_t b = item.pair / heads, h = item.pair % heads;
        const HeadLayout& L = layout.head(static_cast<int>(h));
        const int64_t rows = L.num_blocks * B;
        Tile& dk = item.slot >= 0 ? dk_acc[static_cast<size_t>(item.slot)] : own_dk;
        Tile& dv = item.slot >= 0 ? dv_acc[static_cast<size_t>(item.slot)] : own_dv;
        dk.setZero(rows, d);
        dv.setZero(rows, d);
        if (!backward_blocks(args, b, h, item.I0, item.I1, *scratch, dk, dv, false)) {
          dk.setZero();
          dv.setZero();
          backward_blocks(args, b, h, item.I0, item.I1, *scratch, dk, dv, true);
        }
        if (item.slot < 0) {
          scatter_rows(args.dk, b, h, L, 0, dk.data(), rows, d, args.scale);
          scatter_rows(args.dv, b, h, L, 0, dv.data(), rows, d, 1.0f);
        }
      });
  }
  errors.rethrow();
  if (slots == 0) return;
  // Sum the private accumulators of each split pair and write them out.
  std::vector<std::vector<int64_t>> by_pair(static_cast<size_t>(batch * heads));
  for (const BackwardItem& item : items)
    if (item.slot >= 0) by_pair[static_cast<size_t>(item.pair)].push_back(item.slot);
  parallel_for(batch * heads, num_threads, [&](int64_t pair) {
    const auto& list = by_pair[static_cast<size_t>(pair)];
    if (list.empty()) return;
    const int64_t b = pair / heads, h = pair % heads;
    const HeadLayout& L = layout.head(static_cast<int>(h));
    Tile& dk = dk_acc[static_cast<size_t>(list[0])];
    Tile& dv = dv_acc[static_cast<size_t>(list[0])];
    for (size_t c = 1; c < list.size(); ++c) {
      dk += dk_acc[static_cast<size_t>(list[c])];
      dv += dv_acc[static_cast<size_t>(list[c])];
    }
    scatter_rows(args.dk, b, h, L, 0, dk.data(), L.num_blocks * B, d, args.scale);
    scatter_rows(args.dv, b, h, L, 0, dv.data(), L.num_blocks * B, d, 1.0f);
  });
}

size_t attention_workspace_bytes(const Layout& layout, int64_t batch, int64_t head_dim,
                                 bool backward, int num_threads) {
  const auto B = static_cast<size_t>(layout.block);
  const auto d = static_cast<size_t>(head_dim);
  const auto threads = static_cast<size_t>(num_threads);
  if (!backward) return threads * sizeof(float) * (4 * B * d + B * B + 2 * B);
  int64_t max_rows = 0;
  for (int h = 0; h < layout.num_heads; ++h)
    max_rows = std::max(max_rows, layout.head(h).num_blocks * layout.block);
  const int64_t slots = backward_slots(layout, batch, layout.num_heads, num_threads);
  // Per-thread tiles and accumulators, plus one accumulator per split item.
  return threads * sizeof(float) * (6 * B * d + 2 * B * B + 2 * B) +
         (threads + static_cast<size_t>(slots)) * 2 * static_cast<size_t>(max_rows) * d *
             sizeof(float);
}

// ---------------------------------------------------------------------------------------------
// The 2019-style unfused computation (SPARSE_ATTENTION_UNFUSED): every pass reads and writes the
// scores of all computed blocks in a workspace, as block-sparse GEMM kernels did before fused
// attention. Per (batch, head) pair the workspace holds nnz blocks of B x B fp32 in CSR order.
//
// forward:  (1) S_e = scale Q_I K_J^T, masked, for every computed block e = (I, J);
//           (2) row-wise softmax over all blocks of a block row: P_e = exp(S_e - m) / l,
//               lse = m + log l (in place);
//           (3) out_I = sum_e P_e V_J.
// backward: (1) P_e = exp(scale Q_I K_J^T - lse) recomputed into the first buffer;
//           (2) dS_e = P_e * (dO_I V_J^T - D), D_i = dO_i . O_i, into the second buffer;
//           (3) dQ_I = scale sum_e dS_e K_J over the row lists;
//           (4) dK_J = scale sum_e dS_e^T Q_I and dV_J = sum_e P_e^T dO_I over the column lists.
// Each pass is parallel over block rows (or block columns for (4)), so no two threads write the
// same output and no atomics are needed.
namespace {

using TileMap = Eigen::Map<Tile>;
// The unfused algorithm's stored blocks, aligned as Eigen aligns a Tile: Eigen's vectorised
// element-wise loops (the exponential among them) start with scalar steps up to the first aligned
// address, and a scalar exp differs from the vectorised one in the last bit. The plain path writes
// these blocks and the exact path writes Tiles; with the same alignment both round alike.
using ScoreBuffer = std::vector<float, Eigen::aligned_allocator<float>>;

struct UnfusedPlan {
  int64_t batch = 0, heads = 0, total_nnz = 0, max_blocks = 0;
  std::vector<int64_t> head_offset;  // first block of head h within one batch entry
  size_t scores() const {            // floats in one buffer
    return static_cast<size_t>(batch * total_nnz);
  }
};

UnfusedPlan plan_unfused(const Layout& layout, int64_t batch) {
  UnfusedPlan p;
  p.batch = batch;
  p.heads = layout.num_heads;
  for (int h = 0; h < layout.num_heads; ++h) {
    const HeadLayout& L = layout.head(h);
    p.head_offset.push_back(p.total_nnz);
    p.total_nnz += L.nnz();
    p.max_blocks = std::max(p.max_blocks, L.num_blocks);
  }
  return p;
}

// The B x B block e of pair (b, h) in a buffer of plan.scores() blocks.
TileMap score_block(ScoreBuffer& buffer, const UnfusedPlan& plan, int64_t b, int64_t h, int64_t e,
                    int B) {
  const int64_t index = b * plan.total_nnz + plan.head_offset[static_cast<size_t>(h)] + e;
  return TileMap(buffer.data() + static_cast<size_t>(index) * static_cast<size_t>(B) * B, B, B);
}

// Runs body(b, h, X) for every block row (or column) X of every (batch, head) pair, in parallel.
template <typename Body>
void for_each_block(const Layout& layout, const UnfusedPlan& plan, int num_threads, Body&& body) {
  parallel_for(plan.batch * plan.heads * plan.max_blocks, num_threads, [&](int64_t item) {
    const int64_t X = item % plan.max_blocks;
    const int64_t bh = item / plan.max_blocks;
    const int64_t b = bh / plan.heads, h = bh % plan.heads;
    if (X >= layout.head(static_cast<int>(h)).num_blocks) return;
    body(b, h, X);
  });
}

ScoreBuffer allocate_scores(const UnfusedPlan& plan, int B) {
  return ScoreBuffer(plan.scores() * static_cast<size_t>(B) * static_cast<size_t>(B));
}

// The query-side inputs of block row I of (b, h) for the exact backward tiles: Q and dO (views
// into the tensors, or gathered), lse and D = rowsum(dO * O).
struct QueryRows {
  Tile qs, os, gs;
  Vec lse, delta;
  const float *qp = nullptr, *gp = nullptr;
  int64_t qstride = 0, gstride = 0;
  QueryRows(int B, int64_t d) : qs(B, d), os(B, d), gs(B, d), lse(B), delta(B) {}
  void load(const AttentionBackwardArgs& a, int64_t b, int64_t h, const HeadLayout& L, int64_t I) {
    const TileView q = block_view(a.q, b, h, L, I, qs);
    const TileView o = block_view(a.out, b, h, L, I, os);
    const TileView g = block_view(a.dout, b, h, L, I, gs);
    qp = q.data();
    gp = g.data();
    qstride = q.outerStride();
    gstride = g.outerStride();
    load_lse(a.lse, b, h, L, I, lse);
    delta = (g.array() * o.array()).rowwise().sum().matrix();
  }
  TileView q() const { return TileView(qp, qs.rows(), qs.cols(), Eigen::OuterStride<>(qstride)); }
  TileView dout() const {
    return TileView(gp, gs.rows(), gs.cols(), Eigen::OuterStride<>(gstride));
  }
};

}  // namespace

void attention_forward_unfused(const AttentionForwardArgs& args, int num_threads) {
  const Layout& layout = *args.layout;
  const int64_t batch = args.q.shape[0], d = args.q.shape[3];
  if (batch == 0 || d == 0) return;
  const int B = layout.block;
  const UnfusedPlan plan = plan_unfused(layout, batch);
  ScoreBuffer scores = allocate_scores(plan, B);
  std::vector<float> lse(static_cast<size_t>(batch * plan.heads * plan.max_blocks * B));

  // (1) S = scale Q K^T on every computed block.
  for_each_block(layout, plan, num_threads, [&](int64_t b, int64_t h, int64_t I) {
    const HeadLayout& L = layout.head(static_cast<int>(h));
    Tile qs(B, d), ks(B, d), s(B, B);
    const TileView q = block_view(args.q, b, h, L, I, qs);
    for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
      const TileView k = block_view(args.k, b, h, L, L.col_idx[e], ks);
      s.noalias() = q * k.transpose();
      s *= args.scale;
      apply_mask(L, L.mask_id[e], s);
      score_block(scores, plan, b, h, e, B) = s;
    }
  });
  // (2) Softmax over each row's computed blocks, in place; the row's lse.
  for_each_block(layout, plan, num_threads, [&](int64_t b, int64_t h, int64_t I) {
    const HeadLayout& L = layout.head(static_cast<int>(h));
    for (int r = 0; r < B; ++r) {
      float m = kNegInf;
      for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
        const TileMap s = score_block(scores, plan, b, h, e, B);
        m = std::max(m, s.row(r).maxCoeff());
      }
      // A maximum that skipped NaN scores only: the row is NaN, not without keys.
      for (int64_t e = L.row_ptr[I]; m == kNegInf && e < L.row_ptr[I + 1]; ++e)
        if (score_block(scores, plan, b, h, e, B).row(r).hasNaN())
          m = std::numeric_limits<float>::quiet_NaN();
      float l = 0.0f;
      for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
        TileMap s = score_block(scores, plan, b, h, e, B);
        if (m == kNegInf) {
          s.row(r).setZero();
        } else {
          s.row(r) = (s.row(r).array() - m).exp().matrix();
          l += s.row(r).sum();
        }
      }
      const float inv = l == 0.0f ? 0.0f : 1.0f / l;  // a NaN sum keeps the row NaN
      for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
        TileMap s = score_block(scores, plan, b, h, e, B);
        s.row(r) *= inv;
      }
      lse[static_cast<size_t>(((b * plan.heads + h) * plan.max_blocks + I) * B + r)] =
          l == 0.0f ? kNegInf : m + std::log(l);
    }
  });
  // (3) out = P V; redone with exact products when a row came out non-finite.
  for_each_block(layout, plan, num_threads, [&](int64_t b, int64_t h, int64_t I) {
    const HeadLayout& L = layout.head(static_cast<int>(h));
    Tile vs(B, d), acc = Tile::Zero(B, d);
    for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e)
      acc.noalias() +=
          score_block(scores, plan, b, h, e, B) * block_view(args.v, b, h, L, L.col_idx[e], vs);
    if (!sum_is_finite(acc)) {
      Tile finite_p, finite_v;
      acc.setZero();
      for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
        const int32_t mask_id = L.mask_id[e];
        add_product_exact(acc, score_block(scores, plan, b, h, e, B),
                          block_view(args.v, b, h, L, L.col_idx[e], vs), finite_p, finite_v,
                          [&](int r, int j) { return attends(L, mask_id, r, j); });
      }
    }
    scatter_rows(args.out, b, h, L, I * B, acc.data(), B, d, 1.0f);
    if (args.lse.data == nullptr) return;
    for (int r = 0; r < B; ++r) {
      const int64_t idx = I * B + r;
      const int64_t p = idx < L.n_computed ? L.natural(idx) : -1;
      if (p >= 0)
        *args.lse.ptr<float>(b, h, p) =
            lse[static_cast<size_t>(((b * plan.heads + h) * plan.max_blocks + I) * B + r)];
    }
  });
}

void attention_backward_unfused(const AttentionBackwardArgs& args, int num_threads) {
  const Layout& layout = *args.layout;
  const int64_t batch = args.q.shape[0], d = args.q.shape[3];
  if (batch == 0 || d == 0) return;
  const int B = layout.block;
  const UnfusedPlan plan = plan_unfused(layout, batch);
  ScoreBuffer probs = allocate_scores(plan, B), dscores = allocate_scores(plan, B);

  // (1) P = exp(scale Q K^T - lse); (2) dS = P * (dO V^T - D).
  for_each_block(layout, plan, num_threads, [&](int64_t b, int64_t h, int64_t I) {
    const HeadLayout& L = layout.head(static_cast<int>(h));
    QueryRows rows(B, d);
    rows.load(args, b, h, L, I);
    Tile ks(B, d), vs(B, d);
    for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
      const int64_t J = L.col_idx[e];
      probs_and_dscores(L, L.mask_id[e], args.scale, rows.q(), block_view(args.k, b, h, L, J, ks),
                        block_view(args.v, b, h, L, J, vs), rows.dout(), rows.lse, rows.delta,
                        score_block(probs, plan, b, h, e, B),
                        score_block(dscores, plan, b, h, e, B));
    }
  });
  // (3) dQ over the row lists; redone with exact products when a row came out non-finite.
  for_each_block(layout, plan, num_threads, [&](int64_t b, int64_t h, int64_t I) {
    const HeadLayout& L = layout.head(static_cast<int>(h));
    Tile ks(B, d), acc = Tile::Zero(B, d);
    for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e)
      acc.noalias() +=
          score_block(dscores, plan, b, h, e, B) * block_view(args.k, b, h, L, L.col_idx[e], ks);
    if (!sum_is_finite(acc)) {
      QueryRows rows(B, d);
      rows.load(args, b, h, L, I);
      Tile vs(B, d), unused_dk = Tile::Zero(B, d), unused_dv = Tile::Zero(B, d);
      ExactScratch x;
      acc.setZero();
      for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
        const int64_t J = L.col_idx[e];
        backward_tile_exact(L, L.mask_id[e], args.scale, rows.q(),
                            block_view(args.k, b, h, L, J, ks), block_view(args.v, b, h, L, J, vs),
                            rows.dout(), rows.lse, rows.delta, x, acc, unused_dk, unused_dv);
      }
    }
    scatter_rows(args.dq, b, h, L, I * B, acc.data(), B, d, args.scale);
  });
  // (4) dK, dV over the column lists; redone with exact products when a row came out non-finite.
  for_each_block(layout, plan, num_threads, [&](int64_t b, int64_t h, int64_t J) {
    const HeadLayout& L = layout.head(static_cast<int>(h));
    Tile qs(B, d), gs(B, d), dk = Tile::Zero(B, d), dv = Tile::Zero(B, d);
    for (int64_t c = L.col_ptr[J]; c < L.col_ptr[J + 1]; ++c) {
      const int64_t I = L.row_idx[c], e = L.col_to_csr[c];
      dv.noalias() +=
          score_block(probs, plan, b, h, e, B).transpose() * block_view(args.dout, b, h, L, I, gs);
      dk.noalias() +=
          score_block(dscores, plan, b, h, e, B).transpose() * block_view(args.q, b, h, L, I, qs);
    }
    if (!sum_is_finite(dk) || !sum_is_finite(dv)) {
      QueryRows rows(B, d);
      Tile ks(B, d), vs(B, d), unused_dq = Tile::Zero(B, d);
      const TileView k = block_view(args.k, b, h, L, J, ks);
      const TileView v = block_view(args.v, b, h, L, J, vs);
      ExactScratch x;
      dk.setZero();
      dv.setZero();
      for (int64_t c = L.col_ptr[J]; c < L.col_ptr[J + 1]; ++c) {
        const int64_t I = L.row_idx[c], e = L.col_to_csr[c];
        rows.load(args, b, h, L, I);
        backward_tile_exact(L, L.mask_id[e], args.scale, rows.q(), k, v, rows.dout(), rows.lse,
                            rows.delta, x, unused_dq, dk, dv);
      }
    }
    scatter_rows(args.dk, b, h, L, J * B, dk.data(), B, d, args.scale);
    scatter_rows(args.dv, b, h, L, J * B, dv.data(), B, d, 1.0f);
  });
}

size_t attention_workspace_bytes_unfused(const Layout& layout, int64_t batch, int64_t head_dim,
                                         bool backward, int num_threads) {
  const UnfusedPlan plan = plan_unfused(layout, batch);
  const auto B = static_cast<size_t>(layout.block);
  const auto d = static_cast<size_t>(head_dim);
  const size_t scores = plan.scores() * B * B * sizeof(float);
  const size_t tiles =
      static_cast<size_t>(num_threads) * sizeof(float) * (6 * B * d + B * B + 2 * B);
  if (!backward)
    return scores + static_cast<size_t>(batch * plan.heads * plan.max_blocks) * B * sizeof(float) +
           tiles;
  return 2 * scores + tiles;
}

}  // namespace sparse::cpu
