// The 2019-style unfused block-sparse attention on the GPU, fp32 (SPARSE_ATTENTION_UNFUSED): a
// baseline for the fused kernels and the "stored" memory mode of the memory table. Every pass
// reads or writes the scores of all computed blocks, held in the workspace as B x B fp32 blocks in
// CSR order per (batch, head) pair:
//   forward:  scores_kernel   S = scale Q K^T (masked: -inf) of every computed block;
//             softmax_kernel  P = softmax over each row's blocks, in place, and lse;
//             pv_kernel       out = P V over the row lists;
//   backward: delta_kernel    D = rowsum(dO * O);
//             pds_kernel      P = exp(scale Q K^T - lse) and dS = P (dO V^T - D), both stored;
//             dq_kernel       dQ = scale dS K over the row lists;
//             dkdv_kernel     dK = scale dS^T Q, dV = P^T dO over the column lists (no atomics).
// Deliberately simple kernels (dot products from global memory, one warp per row for the
// products with V, K, Q and dO): this path is the memory and time baseline, not the fast one.
// Scores, P and dS of pairs that are not allowed are stored as -inf or 0 and the products skip
// zero weights, so a NaN or Inf input reaches exactly the rows that attend it.
#include <cmath>

#include "libsparse/cuda/attention_cuda.hpp"
#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/cuda/device_layout.hpp"
#include "libsparse/cuda/strided_view.cuh"
#include "libsparse/error.hpp"
#include "libsparse/layout.hpp"

namespace sparse::cuda {
namespace {

constexpr int kWarps = 4;

// Index of the first score block of pair (b, h): blocks of all heads of batch entry 0, then 1...
__device__ inline int64_t first_block(const DeviceHead* heads, int64_t b, int64_t h,
                                      int64_t total_nnz) {
  int64_t prefix = 0;
  for (int64_t x = 0; x < h; ++x) prefix += heads[x].row_ptr[heads[x].num_blocks];
  return b * total_nnz + prefix;
}

__device__ inline float dot_strided(const float* a, int64_t sa, const float* b, int64_t sb, int d) {
  float s = 0.0f;
  for (int x = 0; x < d; ++x) s = fmaf(a[x * sa], b[x * sb], s);
  return s;
}

// One CTA per (block row I, head, batch); threads over the elements of each computed block.
// backward == false: scores[e] = scale q.k (or -inf where masked).
// backward == true:  scores[e] = P = exp(scale q.k - lse), dscores[e] = P (dout.v - delta).
template <bool kBackward>
__global__ void __launch_bounds__(256)
    scores_kernel(const DeviceHead* heads, Strided4 q, Strided4 k, Strided4 v, Strided4 dout,
                  Strided3 lse, const float* delta, float* scores, float* dscores,
                  int64_t total_nnz, int64_t num_heads, int d, float scale) {
  const DeviceHead& L = heads[blockIdx.y];
  const int64_t b = blockIdx.z, h = blockIdx.y, I = blockIdx.x;
  if (I >= L.num_blocks) return;
  const int B = L.block;
  const int64_t base = first_block(heads, b, h, total_nnz);
  for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
    const int64_t J = L.col_idx[e];
    const int32_t mask = L.mask_id[e];
    float* s_blk = scores + (base + e) * B * B;
    float* ds_blk = kBackward ? dscores + (base + e) * B * B : nullptr;
    for (int x = static_cast<int>(threadIdx.x); x < B * B; x += static_cast<int>(blockDim.x)) {
      const int r = x / B, c = x % B;
      const int64_t qp = natural_position(L, I * B + r);
      const int64_t kp = natural_position(L, J * B + c);
      const bool allowed = qp >= 0 && kp >= 0 && mask_allows(L, mask, r, c);
      float s = -INFINITY;
      if (allowed)
        s = scale * dot_strided(row_ptr(q, b, h, qp), q.s3, row_ptr(k, b, h, kp), k.s3, d);
      if (!kBackward) {
        s_blk[x] = s;
        continue;
      }
      float p = 0.0f, ds = 0.0f;
      if (allowed) {
        const float row_lse = *elem_ptr(lse, b, h, qp);
        if (row_lse != -INFINITY) p = expf(s - row_lse);
        // dS is 0 wherever P is (a score of -inf or an underflow), as on the CPU: a non-finite dP
        // (an Inf in V, a NaN in dO) must not give 0 x Inf = NaN.
        if (p != 0.0f) {
          const float dp =
              dot_strided(row_ptr(dout, b, h, qp), dout.s3, row_ptr(v, b, h, kp), v.s3, d);
          ds = p * (dp - delta[(b * num_heads + h) * L.seq_len + qp]);
        }
      }
      s_blk[x] = p;
      ds_blk[x] = ds;
    }
  }
}

// One warp per computed row: softmax over the row's computed blocks, in place, and its lse.
__global__ void __launch_bounds__(kWarps * 32)
    softmax_kernel(const DeviceHead* heads, float* scores, Strided3 lse, int64_t total_nnz) {
  const DeviceHead& L = heads[blockIdx.y];
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int B = L.block;
  if (row >= L.num_blocks * B) return;
  const int64_t I = row / B;
  const int r = static_cast<int>(row % B);
  const int64_t base = first_block(heads, b, h, total_nnz);
  float m = -INFINITY;
  for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
    const float* s = scores + (base + e) * B * B + static_cast<int64_t>(r) * B;
    for (int c = lane; c < B; c += 32) m = fmaxf(m, s[c]);
  }
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (m == -INFINITY) {
    // fmaxf skips NaN: a row whose only allowed scores are NaN is NaN, not a row without keys.
    bool nan = false;
    for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
      const float* s = scores + (base + e) * B * B + static_cast<int64_t>(r) * B;
      for (int c = lane; c < B; c += 32) nan = nan || isnan(s[c]);
    }
    if (__any_sync(0xffffffffu, nan)) m = NAN;
  }
  float l = 0.0f;
  for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
    float* s = scores + (base + e) * B * B + static_cast<int64_t>(r) * B;
    for (int c = lane; c < B; c += 32) {
      const float p = m == -INFINITY ? 0.0f : expf(s[c] - m);
      s[c] = p;
      l += p;
    }
  }
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  const float inv = l == 0.0f ? 0.0f : 1.0f / l;  // a NaN sum keeps the row NaN
  for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
    float* s = scores + (base + e) * B * B + static_cast<int64_t>(r) * B;
    for (int c = lane; c < B; c += 32) s[c] *= inv;
  }
  const int64_t qp = natural_position(L, row);
  if (lane == 0 && qp >= 0 && lse.data != nullptr)
    *elem_ptr(lse, b, h, qp) = l == 0.0f ? -INFINITY : m + logf(l);
}

// One warp per computed row (column_lists == false: rows of blocks I, out = sum_e W_e X_J) or per
// computed key row (column_lists == true: dK/dV style, out = sum_e W_e^T X_I). Lanes hold E
// elements of the head dimension. With column lists the second weight/input pair (w2, x2) gives a
// second output (dK next to dV).
template <int E, bool kColumns>
__global__ void __launch_bounds__(kWarps * 32)
    product_kernel(const DeviceHead* heads, const float* w, Strided4 x, Strided4 out, float alpha,
                   const float* w2, Strided4 x2, Strided4 out2, float alpha2, int64_t total_nnz,
                   int d) {
  const DeviceHead& L = heads[blockIdx.y];
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int B = L.block;
  if (row >= L.num_blocks * B) return;
  const int64_t X = row / B;
  const int r = static_cast<int>(row % B);
  const int64_t pos = natural_position(L, row);
  if (pos < 0) return;
  const int64_t base = first_block(heads, b, h, total_nnz);
  float acc[E], acc2[E];
#pragma unroll
  for (int i = 0; i < E; ++i) acc[i] = acc2[i] = 0.0f;
  const int64_t begin = kColumns ? L.col_ptr[X] : L.row_ptr[X];
  const int64_t end = kColumns ? L.col_ptr[X + 1] : L.row_ptr[X + 1];
  for (int64_t i = begin; i < end; ++i) {
    const int64_t e = kColumns ? L.col_to_csr[i] : i;
    const int64_t Y = kColumns ? L.row_idx[i] : L.col_idx[i];
    const float* wb = w + (base + e) * B * B;
    const float* wb2 = kColumns ? w2 + (base + e) * B * B : nullptr;
    for (int t = 0; t < B; ++t) {
      // Row r of the block (rows) or column r of the block (columns).
      const int64_t at =
          kColumns ? static_cast<int64_t>(t) * B + r : static_cast<int64_t>(r) * B + t;
      const float weight = wb[at];
      const float weight2 = kColumns ? wb2[at] : 0.0f;
      if (weight == 0.0f && weight2 == 0.0f) continue;  // masked, padding or underflow
      const int64_t other = natural_position(L, Y * B + t);
      if (other < 0) continue;
      const float* xr = row_ptr(x, b, h, other);
      const float* xr2 = kColumns ? row_ptr(x2, b, h, other) : nullptr;
#pragma unroll
      for (int k = 0; k < E; ++k) {
        const int c = lane + 32 * k;
        if (c < d) {
          acc[k] = fmaf(weight, xr[c * x.s3], acc[k]);
          if (kColumns) acc2[k] = fmaf(weight2, xr2[c * x2.s3], acc2[k]);
        }
      }
    }
  }
  float* o = out.data + b * out.s0 + h * out.s1 + pos * out.s2;
  float* o2 = kColumns ? out2.data + b * out2.s0 + h * out2.s1 + pos * out2.s2 : nullptr;
#pragma unroll
  for (int k = 0; k < E; ++k) {
    const int c = lane + 32 * k;
    if (c < d) {
      o[c * out.s3] = alpha * acc[k];
      if (kColumns) o2[c * out2.s3] = alpha2 * acc2[k];
    }
  }
}

__global__ void __launch_bounds__(kWarps * 32)
    delta_kernel(Strided4 out, Strided4 dout, float* delta, int64_t heads, int64_t n, int d) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int64_t b = blockIdx.y;
  if (row >= heads * n) return;
  const int64_t h = row / n, i = row % n;
  const float* o = row_ptr(out, b, h, i);
  const float* g = row_ptr(dout, b, h, i);
  float s = 0.0f;
  for (int c = lane; c < d; c += 32) s = fmaf(o[c * out.s3], g[c * dout.s3], s);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) delta[(b * heads + h) * n + i] = s;
}

int64_t total_blocks(const Layout& layout) {
  int64_t total = 0;
  for (int h = 0; h < layout.num_heads; ++h) total += layout.head(h).nnz();
  return total;
}

dim3 row_grid(const DeviceLayout& dl, int block, int64_t batch) {
  return dim3(static_cast<unsigned>((dl.max_blocks * block + kWarps - 1) / kWarps),
              static_cast<unsigned>(dl.num_heads), static_cast<unsigned>(batch));
}

dim3 block_row_grid(const DeviceLayout& dl, int64_t batch) {
  return dim3(static_cast<unsigned>(dl.max_blocks), static_cast<unsigned>(dl.num_heads),
              static_cast<unsigned>(batch));
}

template <int E>
void launch_forward_products(const DeviceLayout& dl, const AttentionForwardArgs& a,
                             const float* probs, int64_t total, cudaStream_t stream) {
  const Strided4 none{nullptr, 0, 0, 0, 0};
  product_kernel<E, false><<<row_grid(dl, a.layout->block, a.q.shape[0]), kWarps * 32, 0, stream>>>(
      dl.heads, probs, strided(a.v), strided(a.out), 1.0f, nullptr, none, none, 0.0f, total,
      static_cast<int>(a.q.shape[3]));
}

template <int E>
void launch_backward_products(const DeviceLayout& dl, const AttentionBackwardArgs& a,
                              const float* probs, const float* dscores, int64_t total,
                              cudaStream_t stream) {
  const Strided4 none{nullptr, 0, 0, 0, 0};
  const int d = static_cast<int>(a.q.shape[3]);
  const dim3 grid = row_grid(dl, a.layout->block, a.q.shape[0]);
  product_kernel<E, false><<<grid, kWarps * 32, 0, stream>>>(
      dl.heads, dscores, strided(a.k), strided(a.dq), a.scale, nullptr, none, none, 0.0f, total, d);
  product_kernel<E, true>
      <<<grid, kWarps * 32, 0, stream>>>(dl.heads, probs, strided(a.dout), strided(a.dv), 1.0f,
                                         dscores, strided(a.q), strided(a.dk), a.scale, total, d);
}

void check_limits(int64_t batch, const DeviceLayout& dl, int64_t head_dim) {
  if (batch > 65535 || dl.num_heads > 65535)
    throw_error(SPARSE_ERR_UNSUPPORTED,
                "the CUDA kernels support at most 65535 batch entries "
                "and 65535 heads per call");
  if (head_dim > kMaxHeadDim)
    throw_error(SPARSE_ERR_UNSUPPORTED, "head_dim ", head_dim,
                " is larger than the CUDA kernels support (128)");
}

}  // namespace

size_t unfused_scores_bytes(const Layout& layout, int64_t batch) {
  return static_cast<size_t>(batch * total_blocks(layout)) * static_cast<size_t>(layout.block) *
         static_cast<size_t>(layout.block) * sizeof(float);
}

void attention_forward_unfused(const DeviceLayout& dl, const AttentionForwardArgs& a, float* scores,
                               cudaStream_t stream) {
  const int64_t batch = a.q.shape[0];
  check_limits(batch, dl, a.q.shape[3]);
  const int64_t total = total_blocks(*a.layout);
  const Strided4 none{nullptr, 0, 0, 0, 0};
  scores_kernel<false><<<block_row_grid(dl, batch), 256, 0, stream>>>(
      dl.heads, strided(a.q), strided(a.k), none, none, Strided3{nullptr, 0, 0, 0}, nullptr, scores,
      nullptr, total, a.q.shape[1], static_cast<int>(a.q.shape[3]), a.scale);
  softmax_kernel<<<row_grid(dl, a.layout->block, batch), kWarps * 32, 0, stream>>>(
      dl.heads, scores, strided3(a.lse), total);
  switch ((a.q.shape[3] + 31) / 32) {
    case 1:
      launch_forward_products<1>(dl, a, scores, total, stream);
      break;
    case 2:
      launch_forward_products<2>(dl, a, scores, total, stream);
      break;
    case 3:
      launch_forward_products<3>(dl, a, scores, total, stream);
      break;
    default:
      launch_forward_products<4>(dl, a, scores, total, stream);
      break;
  }
  check_cuda(cudaGetLastError(), "unfused attention forward launch");
}

void attention_backward_unfused(const DeviceLayout& dl, const AttentionBackwardArgs& a,
                                float* delta, float* probs, float* dscores, cudaStream_t stream) {
  const int64_t batch = a.q.shape[0], heads = a.q.shape[1], n = a.q.shape[2];
  const int d = static_cast<int>(a.q.shape[3]);
  check_limits(batch, dl, d);
  const int64_t total = total_blocks(*a.layout);
  const dim3 rows(static_cast<unsigned>((heads * n + kWarps - 1) / kWarps),
                  static_cast<unsigned>(batch));
  delta_kernel<<<rows, kWarps * 32, 0, stream>>>(strided(a.out), strided(a.dout), delta, heads, n,
                                                 d);
  scores_kernel<true><<<block_row_grid(dl, batch), 256, 0, stream>>>(
      dl.heads, strided(a.q), strided(a.k), strided(a.v), strided(a.dout), strided3(a.lse), delta,
      probs, dscores, total, heads, d, a.scale);
  switch ((d + 31) / 32) {
    case 1:
      launch_backward_products<1>(dl, a, probs, dscores, total, stream);
      break;
    case 2:
      launch_backward_products<2>(dl, a, probs, dscores, total, stream);
      break;
    case 3:
      launch_backward_products<3>(dl, a, probs, dscores, total, stream);
      break;
    default:
      launch_backward_products<4>(dl, a, probs, dscores, total, stream);
      break;
  }
  check_cuda(cudaGetLastError(), "unfused attention backward launch");
}

}  // namespace sparse::cuda
