// fp32 block-sparse attention on the GPU, forward and backward, over a device layout.
//
// Portable reference kernels (any sm_80+ GPU): one warp per query row (forward, dQ) or key row
// (dK/dV), each lane holding ceil(head_dim / 32) elements of the row. The forward is an online
// softmax over the computed blocks of the query's block row; the backward recomputes the
// probabilities from the saved log-sum-exp, walking the row lists for dQ and the column lists
// (CSC) for dK/dV, so no atomics and no n x n buffer are needed. Exact fp32 arithmetic (expf,
// logf) keeps results within rounding of the CPU reference. Tensor-core (bf16/fp16) kernels
// build on the same layout structures. Only allowed pairs are ever visited, so a NaN or Inf
// input reaches exactly the rows that attend it; a row that does attend a NaN keeps NaN in out
// and lse (it is never taken for a row without keys).
#include <cmath>

#include "libsparse/cuda/attention_cuda.hpp"
#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/cuda/device_layout.hpp"
#include "libsparse/cuda/strided_view.cuh"
#include "libsparse/error.hpp"

namespace sparse::cuda {
namespace {

constexpr int kWarps = 4;

template <int E>
__device__ inline void load_row(const Strided4& t, int64_t b, int64_t h, int64_t i, int d, int lane,
                                float (&x)[E]) {
  const float* row = row_ptr(t, b, h, i);
#pragma unroll
  for (int k = 0; k < E; ++k) {
    const int e = lane + 32 * k;
    x[k] = e < d ? row[e * t.s3] : 0.0f;
  }
}

template <int E>
__device__ inline void store_row(const Strided4& t, int64_t b, int64_t h, int64_t i, int d,
                                 int lane, const float (&x)[E], float alpha) {
  float* row = row_ptr(t, b, h, i);
#pragma unroll
  for (int k = 0; k < E; ++k) {
    const int e = lane + 32 * k;
    if (e < d) row[e * t.s3] = alpha * x[k];
  }
}

template <int E>
__device__ inline float dot(const float (&a)[E], const float (&b)[E]) {
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < E; ++k) s = fmaf(a[k], b[k], s);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
  return s;
}

template <int E>
__global__ void __launch_bounds__(kWarps * 32)
    forward_kernel(const DeviceHead* heads, Strided4 q, Strided4 k, Strided4 v, Strided4 out,
                   Strided3 lse, int d, float scale) {
  const DeviceHead L = heads[blockIdx.y];
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t I = ordered_block(L, L.row_order, blockIdx.x);
  if (I < 0) return;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  for (int r = warp; r < L.block; r += kWarps) {
    const int64_t pos = natural_position(L, I * L.block + r);
    if (pos < 0) continue;
    float qr[E], kr[E], vr[E], acc[E];
    load_row(q, b, h, pos, d, lane, qr);
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
      const int64_t J = L.col_idx[e];
      const int32_t mask = L.mask_id[e];
      for (int c = 0; c < L.block; ++c) {
        if (!mask_allows(L, mask, r, c)) continue;
        const int64_t kp = natural_position(L, J * L.block + c);
        if (kp < 0) continue;
        load_row(k, b, h, kp, d, lane, kr);
        const float s = scale * dot(qr, kr);
        const float m_new = fmaxf(m, s);
        // While the maximum is -inf (no finite score yet) subtract 0: p is then 0 for a -inf
        // score and NaN for a NaN one, never NaN from -inf - -inf.
        const float base = m_new == -INFINITY ? 0.0f : m_new;
        const float correction = expf(m - base);  // 0 while m is -inf
        const float p = expf(s - base);
        l = l * correction + p;
        load_row(v, b, h, kp, d, lane, vr);
#pragma unroll
        for (int x = 0; x < E; ++x) acc[x] = fmaf(p, vr[x], acc[x] * correction);
        m = m_new;
      }
    }
    const bool empty = l == 0.0f;  // a NaN sum keeps out and lse NaN
    store_row(out, b, h, pos, d, lane, acc, empty ? 0.0f : 1.0f / l);
    if (lane == 0 && lse.data != nullptr)
      *elem_ptr(lse, b, h, pos) = empty ? -INFINITY : m + logf(l);
  }
}

// delta[b, h, i] = dout[b, h, i, :] . out[b, h, i, :], contiguous [batch, heads, n].
template <int E>
__global__ void __launch_bounds__(kWarps * 32)
    delta_kernel(Strided4 out, Strided4 dout, float* delta, int64_t heads, int64_t n, int d) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int64_t b = blockIdx.y;
  if (row >= heads * n) return;
  const int64_t h = row / n, i = row % n;
  float o[E], g[E];
  load_row(out, b, h, i, d, lane, o);
  load_row(dout, b, h, i, d, lane, g);
  const float s = dot(o, g);
  if (lane == 0) delta[(b * heads + h) * n + i] = s;
}

template <int E>
__global__ void __launch_bounds__(kWarps * 32)
    dq_kernel(const DeviceHead* heads, Strided4 q, Strided4 k, Strided4 v, Strided3 lse,
              Strided4 dout, const float* delta, Strided4 dq, int64_t num_heads, int d,
              float scale) {
  const DeviceHead L = heads[blockIdx.y];
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t I = ordered_block(L, L.row_order, blockIdx.x);
  if (I < 0) return;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  for (int r = warp; r < L.block; r += kWarps) {
    const int64_t pos = natural_position(L, I * L.block + r);
    if (pos < 0) continue;
    float qr[E], gr[E], kr[E], vr[E], acc[E];
#pragma unroll
    for (int x = 0; x < E; ++x) acc[x] = 0.0f;
    const float row_lse = *elem_ptr(lse, b, h, pos);
    if (row_lse != -INFINITY) {
      load_row(q, b, h, pos, d, lane, qr);
      load_row(dout, b, h, pos, d, lane, gr);
      const float row_delta = delta[(b * num_heads + h) * L.seq_len + pos];
      for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
        const int64_t J = L.col_idx[e];
        const int32_t mask = L.mask_id[e];
        for (int c = 0; c < L.block; ++c) {
          if (!mask_allows(L, mask, r, c)) continue;
          const int64_t kp = natural_position(L, J * L.block + c);
          if (kp < 0) continue;
          load_row(k, b, h, kp, d, lane, kr);
          const float p = expf(scale * dot(qr, kr) - row_lse);
          if (p == 0.0f) continue;  // adds nothing (an infinite K would give 0 x Inf = NaN)
          load_row(v, b, h, kp, d, lane, vr);
          const float ds = p * (dot(gr, vr) - row_delta);
#pragma unroll
          for (int x = 0; x < E; ++x) acc[x] = fmaf(ds, kr[x], acc[x]);
        }
      }
    }
    store_row(dq, b, h, pos, d, lane, acc, scale);
  }
}

template <int E>
__global__ void __launch_bounds__(kWarps * 32)
    dkdv_kernel(const DeviceHead* heads, Strided4 q, Strided4 k, Strided4 v, Strided3 lse,
                Strided4 dout, const float* delta, Strided4 dk, Strided4 dv, int64_t num_heads,
                int d, float scale) {
  const DeviceHead L = heads[blockIdx.y];
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t J = ordered_block(L, L.col_order, blockIdx.x);
  if (J < 0) return;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  for (int c = warp; c < L.block; c += kWarps) {
    const int64_t kp = natural_position(L, J * L.block + c);
    if (kp < 0) continue;
    float kr[E], vr[E], qr[E], gr[E], dk_acc[E], dv_acc[E];
    load_row(k, b, h, kp, d, lane, kr);
    load_row(v, b, h, kp, d, lane, vr);
#pragma unroll
    for (int x = 0; x < E; ++x) dk_acc[x] = dv_acc[x] = 0.0f;
    for (int64_t e = L.col_ptr[J]; e < L.col_ptr[J + 1]; ++e) {
      const int64_t I = L.row_idx[e];
      const int32_t mask = L.mask_id[L.col_to_csr[e]];
      for (int r = 0; r < L.block; ++r) {
        if (!mask_allows(L, mask, r, c)) continue;
        const int64_t qp = natural_position(L, I * L.block + r);
        if (qp < 0) continue;
        const float row_lse = *elem_ptr(lse, b, h, qp);
        if (row_lse == -INFINITY) continue;
        load_row(q, b, h, qp, d, lane, qr);
        load_row(dout, b, h, qp, d, lane, gr);
        const float p = expf(scale * dot(qr, kr) - row_lse);
        if (p == 0.0f) continue;  // adds nothing (an infinite Q or dO would give NaN)
        const float ds = p * (dot(gr, vr) - delta[(b * num_heads + h) * L.seq_len + qp]);
#pragma unroll
        for (int x = 0; x < E; ++x) {
          dv_acc[x] = fmaf(p, gr[x], dv_acc[x]);
          dk_acc[x] = fmaf(ds, qr[x], dk_acc[x]);
        }
      }
    }
    store_row(dk, b, h, kp, d, lane, dk_acc, scale);
    store_row(dv, b, h, kp, d, lane, dv_acc, 1.0f);
  }
}

dim3 block_grid(const DeviceLayout& dl, int64_t batch) {
  return dim3(static_cast<unsigned>(dl.max_blocks), static_cast<unsigned>(dl.num_heads),
              static_cast<unsigned>(batch));
}

template <int E>
void launch_forward(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream) {
  forward_kernel<E><<<block_grid(dl, a.q.shape[0]), kWarps * 32, 0, stream>>>(
      dl.heads, strided(a.q), strided(a.k), strided(a.v), strided(a.out),
      a.lse.data ? strided3(a.lse) : Strided3{nullptr, 0, 0, 0}, static_cast<int>(a.q.shape[3]),
      a.scale);
}

template <int E>
void launch_backward(const DeviceLayout& dl, const AttentionBackwardArgs& a, float* delta,
                     cudaStream_t stream) {
  const int64_t batch = a.q.shape[0], heads = a.q.shape[1], n = a.q.shape[2];
  const int d = static_cast<int>(a.q.shape[3]);
  const dim3 rows(static_cast<unsigned>((heads * n + kWarps - 1) / kWarps),
                  static_cast<unsigned>(batch));
  delta_kernel<E>
      <<<rows, kWarps * 32, 0, stream>>>(strided(a.out), strided(a.dout), delta, heads, n, d);
  dq_kernel<E><<<block_grid(dl, batch), kWarps * 32, 0, stream>>>(
      dl.heads, strided(a.q), strided(a.k), strided(a.v), strided3(a.lse), strided(a.dout), delta,
      strided(a.dq), heads, d, a.scale);
  dkdv_kernel<E><<<block_grid(dl, batch), kWarps * 32, 0, stream>>>(
      dl.heads, strided(a.q), strided(a.k), strided(a.v), strided3(a.lse), strided(a.dout), delta,
      strided(a.dk), strided(a.dv), heads, d, a.scale);
}

void check_launch_limits(int64_t batch, const DeviceLayout& dl) {
  if (batch > 65535 || dl.num_heads > 65535)
    throw_error(SPARSE_ERR_UNSUPPORTED,
                "the CUDA kernels support at most 65535 batch entries "
                "and 65535 heads per call");
}

}  // namespace

void attention_forward_fp32(const DeviceLayout& dl, const AttentionForwardArgs& a,
                            cudaStream_t stream) {
  check_launch_limits(a.q.shape[0], dl);
  switch ((a.q.shape[3] + 31) / 32) {
    case 1:
      launch_forward<1>(dl, a, stream);
      break;
    case 2:
      launch_forward<2>(dl, a, stream);
      break;
    case 3:
      launch_forward<3>(dl, a, stream);
      break;
    case 4:
      launch_forward<4>(dl, a, stream);
      break;
    default:
      throw_error(SPARSE_ERR_UNSUPPORTED, "head_dim ", a.q.shape[3],
                  " is larger than the CUDA kernels support (128)");
  }
  check_cuda(cudaGetLastError(), "attention forward launch");
}

void attention_backward_fp32(const DeviceLayout& dl, const AttentionBackwardArgs& a, float* delta,
                             cudaStream_t stream) {
  check_launch_limits(a.q.shape[0], dl);
  switch ((a.q.shape[3] + 31) / 32) {
    case 1:
      launch_backward<1>(dl, a, delta, stream);
      break;
    case 2:
      launch_backward<2>(dl, a, delta, stream);
      break;
    case 3:
      launch_backward<3>(dl, a, delta, stream);
      break;
    case 4:
      launch_backward<4>(dl, a, delta, stream);
      break;
    default:
      throw_error(SPARSE_ERR_UNSUPPORTED, "head_dim ", a.q.shape[3],
                  " is larger than the CUDA kernels support (128)");
  }
  check_cuda(cudaGetLastError(), "attention backward launch");
}

}  // namespace sparse::cuda
