// The second tensor-core forward kernel (bf16 / fp16, head_dim 32/64/128), selected with
// SPARSE_CUDA_TC_FORWARD=2 when the CUDA backend is created. Same contract and the same numbers'
// semantics as forward_kernel in attention_tc.cuh (read its header first): a CTA owns TILE =
// min(B, 64) query rows of one block row, TILE / 16 warps of 16 rows each, iterates over the
// block row's CSR entries and, inside a block, over B / TILE key sub-tiles of TILE keys; element
// masks (mask_bits), padding keys (valid_key_bits), natural_position(), rows without keys (out 0,
// lse -inf), the running-max online softmax in base 2, selection of masked scores to -inf, and
// the exact fp32 path for a tile whose V holds an Inf or NaN are those of forward_kernel. What
// differs is only how data moves:
//
//  - K and V tiles are double-buffered in shared memory and copied with cp.async (16 bytes,
//    .cg) when a row's elements are contiguous and 16-byte aligned; the copy of tile t + 1 is in
//    flight while tile t is computed (one commit group per tile, one __syncthreads per tile).
//    Other strides take ordinary loads into the same buffers (the copy of those chunks then
//    completes before the thread computes, as in forward_kernel).
//  - V is stored once, row-major; P V reads it with ldmatrix.trans. K and Q are read with
//    ldmatrix (no transposed copies); Q's A fragments stay in registers for the whole row.
//  - Each tile's mask words (one per query row) are copied into shared memory with the tile
//    (cp.async, 8 bytes), and its padding-key bits are computed once by warp 0.
//  - V's non-finite test: after the wait, each thread tests the V chunks it copied itself (its
//    own cp.async writes are visible to it after cp.async.wait_group), and the CTA-wide OR is the
//    same __syncthreads_or that publishes the tile.
//  - The output rows are staged (rounded) in the warp's own rows of the Q buffer and written
//    with 16-byte stores where the row is contiguous and aligned, element by element otherwise.
//
// Fragment layouts relied on (PTX ISA: "Matrix Fragments for mma.m16n8k16 with floating point
// type" and "ldmatrix"); g = lane / 4, t = lane % 4:
//   mma A (16 x 16, row): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8,
//   2t+8..) mma B (16 x 8, col):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g) mma C (16 x 8):
//   c0, c1 = (g, 2t), (g, 2t+1); c2, c3 = (g+8, 2t), (g+8, 2t+1) ldmatrix .x4: lanes 8m..8m+7 give
//   the addresses of rows 0..7 of matrix m (16 bytes each);
//     register m of every lane receives matrix m. Without .trans, lane l receives
//     M[l / 4][2 (l % 4)], M[l / 4][2 (l % 4) + 1] (four lanes hold a row); with .trans it
//     receives M[2 (l % 4)][l / 4], M[2 (l % 4) + 1][l / 4] (four lanes hold a column).
// Addresses (lr = lane % 8, lm = lane / 8):
//   Q (A, row-major [row][d]), k-step ks: row 16 w + lr + 8 (lm & 1), d 16 ks + 8 (lm >> 1)
//     -> m0 = rows 0-7 x d 0-7 = a0, m1 = rows 8-15 x d 0-7 = a1, m2 = rows 0-7 x d 8-15 = a2,
//        m3 = a3.
//   K (B of S = Q K^T with B[k = d][n = key] = K[key][d], stored [key][d]), k-step ks, n-tiles
//     2p and 2p + 1: key 16 p + lr + 8 (lm >> 1), d 16 ks + 8 (lm & 1), no .trans
//     -> lane l gets K[16p + g][16ks + 2t..] = B[2t..][g]: m0 = b0 and m1 = b1 of n-tile 2p,
//        m2 = b0 and m3 = b1 of n-tile 2p + 1.
//   V (B of O = P V with B[k = key][n = d] = V[key][d], stored [key][d]), k-step j, n-tiles
//     2p and 2p + 1: key 16 j + lr + 8 (lm & 1), d 16 p + 8 (lm >> 1), .trans
//     -> lane l gets V[16j + 2t..2t+1][16p + g] = B[2t..][g]: m0 = b0, m1 = b1 (keys + 8) of
//        n-tile 2p, m2 = b0, m3 = b1 of n-tile 2p + 1.
//   P (A of P V) from the C fragments of S as in forward_kernel: a0 = (c0, c1) of n-tile 2j,
//     a1 = (c2, c3) of 2j, a2 = (c0, c1) of 2j + 1, a3 = (c2, c3) of 2j + 1.
// Shared rows are padded by 8 elements (16 bytes): the 8 row addresses of one ldmatrix matrix
// then fall in 8 distinct 4-bank groups (row stride 4 mod 32 words at head_dim 64 and 128, 20 at
// 32), and so do the 4-byte output stores of a warp.
#pragma once

#include "libsparse/cuda/attention_tc.cuh"

namespace sparse::cuda::tc {

namespace v2 {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src)
               : "memory");
}

__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_u32(dst)), "l"(src)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's most recent commit groups are pending; the copies of the
// others are then complete and visible to this thread.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// One 16-byte global store (a plain uint4 assignment was split into four 4-byte stores, and
// __stwb gives a .wb store that sm_90 executes as STG.STRONG.SM).
__device__ __forceinline__ void st_global16(void* dst, const uint4& v) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "r"(v.x), "r"(v.y),
               "r"(v.z), "r"(v.w)
               : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// Stages 8 elements [c, c + 8) of row `pos` of t[b, h] at `dst` (16-byte aligned shared memory):
// cp.async when they are contiguous and 16-byte aligned, ordinary loads otherwise, zeros for a
// padding row (pos < 0).
template <typename T>
__device__ __forceinline__ void stage_chunk(const Tensor4& t, int64_t b, int64_t h, int64_t pos,
                                            int c, T* dst) {
  if (pos < 0) {
    *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  const T* src = row_ptr<T>(t, b, h, pos) + c * t.s3;
  if (t.s3 == 1 && (reinterpret_cast<uintptr_t>(src) & 15u) == 0) {
    cp_async16(dst, src);
    return;
  }
  T vals[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) vals[k] = src[k * t.s3];
  uint4 raw;
  memcpy(&raw, vals, sizeof raw);
  *reinterpret_cast<uint4*>(dst) = raw;
}

// Chunk j (0 <= j < D / 16) of the 2 * TILE threads' share of a TILE x D tile: row and column.
// A warp's 32 consecutive chunks cover whole rows, so its global reads are coalesced.
template <int D, int TILE>
__device__ __forceinline__ void chunk_of(int tid, int j, int& r, int& c) {
  constexpr int kChunks = D / 8;
  const int idx = tid + j * 2 * TILE;
  r = idx / kChunks;
  c = (idx % kChunks) * 8;
}

// acc += W V over the pairs (row, key) that attends(second_row, key) accepts, as selected fp32
// FMAs: gemm_exact of attention_tc.cuh with V read row-major (V[key][d] at v[key * SV + d]).
template <typename T, int KC, int N, int SV, typename Attends>
__device__ void gemm_pv_exact(float (&acc)[N][4], const float (&w)[KC / 8][4], const T* v, int lane,
                              Attends attends) {
  gemm_exact<KC, N>(acc, w, lane, false, attends,
                    [&](int n, int k) { return ElemOps<T>::to_float(v[k * SV + n]); });
}

}  // namespace v2

// Shared memory of forward_kernel_v2, in elements of T, then the mask words of each query row of
// the two tile buffers and the two buffers' padding-key bits (u64).
template <int D, int TILE>
struct ForwardV2Smem {
  static constexpr int kSD = D + 8;
  static constexpr size_t tile = static_cast<size_t>(TILE) * kSD;
  static constexpr size_t q = 0, k = q + tile, v = k + 2 * tile, end = v + 2 * tile;
  static constexpr size_t bytes(size_t elem) { return end * elem + 2 * TILE * 8 + 2 * 8; }
};

template <typename T, int D, int TILE>
__global__ void __launch_bounds__(TILE * 2)
    forward_kernel_v2(const DeviceHead* heads, Tensor4 q, Tensor4 k, Tensor4 v, Tensor4 out,
                      Tensor3 lse, float scale_log2) {
  using S = ForwardV2Smem<D, TILE>;
  constexpr int kSD = S::kSD;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sq = reinterpret_cast<T*>(smem) + S::q;
  T* sk = reinterpret_cast<T*>(smem) + S::k;  // two buffers of S::tile
  T* sv = reinterpret_cast<T*>(smem) + S::v;  // two buffers of S::tile
  uint64_t* smask = reinterpret_cast<uint64_t*>(smem + S::end * sizeof(T));  // [2][TILE]
  uint64_t* svalid = smask + 2 * TILE;                                       // [2]

  const DeviceHead& L = heads[blockIdx.y];
  const int B = L.block, split = B / TILE;
  const int64_t I = ordered_block(L, L.row_order, blockIdx.x / split);
  if (I < 0) return;  // uniform over the CTA
  const int r0 = static_cast<int>(blockIdx.x % split) * TILE;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, lr = lane & 7, lm = lane >> 3;
  const int row_a = warp * 16 + g, row_b = row_a + 8;  // rows of the CTA's tile
  const int64_t first_q = I * B + r0;
  const int64_t pos_a = natural_position(L, first_q + row_a);
  const int64_t pos_b = natural_position(L, first_q + row_b);
  const int32_t* col_idx = L.col_idx;
  const int32_t* mask_ids = L.mask_id;
  const uint64_t* masks = L.masks;
  const int words = L.words;
  const int64_t e0 = L.row_ptr[I];
  const int64_t ntiles = (L.row_ptr[I + 1] - e0) * split;

  // Issues the copies of tile `tile` (CSR entry e0 + tile / split, key sub-tile tile % split)
  // into buffer `st`: K and V rows, the mask word of each query row, the padding-key bits.
  auto issue = [&](int64_t tile, int st, int32_t J, int32_t mask) {
    const int c0 = static_cast<int>(tile % split) * TILE;
    const int64_t first_k = static_cast<int64_t>(J) * B + c0;
    T* dk = sk + st * S::tile;
    T* dv = sv + st * S::tile;
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      int r, c;
      v2::chunk_of<D, TILE>(tid, j, r, c);
      const int64_t pos = natural_position(L, first_k + r);
      v2::stage_chunk<T>(k, b, h, pos, c, dk + r * kSD + c);
      v2::stage_chunk<T>(v, b, h, pos, c, dv + r * kSD + c);
    }
    if (tid < TILE) {
      uint64_t* dst = smask + st * TILE + tid;
      if (mask < 0)
        *dst = ~uint64_t{0};  // every key: (~0 >> (c0 & 63)) & low_bits(TILE) = low_bits(TILE)
      else
        v2::cp_async8(dst, masks + (static_cast<int64_t>(mask) * B + r0 + tid) * words + (c0 >> 6));
    }
    if (warp == 0) {
      const uint64_t bits = valid_key_bits(L, first_k, TILE, lane);
      if (lane == 0) svalid[st] = bits;
    }
  };

  // Q, then tile 0, as two commit groups; the CSR entry of tile 1 is read while they fly.
#pragma unroll
  for (int j = 0; j < D / 16; ++j) {
    int r, c;
    v2::chunk_of<D, TILE>(tid, j, r, c);
    v2::stage_chunk<T>(q, b, h, natural_position(L, first_q + r), c, sq + r * kSD + c);
  }
  v2::cp_async_commit();
  if (ntiles > 0) issue(0, 0, col_idx[e0], mask_ids[e0]);
  v2::cp_async_commit();
  int32_t J_next = 0, mask_next = -1;  // the CSR entry of the next tile to issue
  if (ntiles > 1) {
    J_next = col_idx[e0 + 1 / split];
    mask_next = mask_ids[e0 + 1 / split];
  }
  v2::cp_async_wait<1>();  // Q
  __syncthreads();
  uint32_t qf[D / 16][4];  // the warp's 16 x D rows of Q as A fragments, one per k-step
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
    v2::ldsm_x4(qf[ks], sq + (warp * 16 + lr + 8 * (lm & 1)) * kSD + ks * 16 + 8 * (lm >> 1));

  float acc[D / 8][4];
  zero(acc);
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

  for (int64_t tile = 0; tile < ntiles; ++tile) {
    const int st = static_cast<int>(tile & 1);
    const int c0 = static_cast<int>(tile % split) * TILE;
    const T* tk = sk + st * S::tile;
    const T* tv = sv + st * S::tile;
    v2::cp_async_wait<0>();  // this thread's copies of tile `tile`
    bool v_nonfinite = false;
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      int r, c;
      v2::chunk_of<D, TILE>(tid, j, r, c);
      v_nonfinite |= any_nonfinite<T>(*reinterpret_cast<const uint4*>(tv + r * kSD + c));
    }
    // Publishes the tile to every warp, and says that every warp is done with the other buffer
    // (tile - 1). Scores are masked by selection, so only P V can carry V's non-finite values.
    const bool exact = __syncthreads_or(v_nonfinite) != 0;
    if (tile + 1 < ntiles) {
      issue(tile + 1, st ^ 1, J_next, mask_next);
      if (tile + 2 < ntiles) {
        const int64_t e = e0 + (tile + 2) / split;
        J_next = col_idx[e];
        mask_next = mask_ids[e];
      }
    }
    v2::cp_async_commit();

    float s[TILE / 8][4];
    zero(s);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
      for (int p = 0; p < TILE / 16; ++p) {
        uint32_t kf[4];
        v2::ldsm_x4(kf, tk + (p * 16 + lr + 8 * (lm >> 1)) * kSD + ks * 16 + 8 * (lm & 1));
        const uint32_t b0[2] = {kf[0], kf[1]}, b1[2] = {kf[2], kf[3]};
        ElemOps<T>::mma(s[2 * p], qf[ks], b0);
        ElemOps<T>::mma(s[2 * p + 1], qf[ks], b1);
      }
    }

    const uint64_t valid = svalid[st];
    const uint64_t keep = low_bits(TILE) & valid;
    const uint64_t bits_a = (smask[st * TILE + row_a] >> (c0 & 63)) & keep;
    const uint64_t bits_b = (smask[st * TILE + row_b] >> (c0 & 63)) & keep;
    online_softmax_tile<TILE, D>(s, bits_a, bits_b, scale_log2, m_a, m_b, l_a, l_b, acc);
    if (exact) {
      v2::gemm_pv_exact<T, TILE, D / 8, kSD>(acc, s, tv, lane, [&](bool second, int c) {
        return (((second ? bits_b : bits_a) >> c) & 1u) != 0;
      });
    } else {
#pragma unroll
      for (int j = 0; j < TILE / 16; ++j) {
        uint32_t af[4];
        af[0] = ElemOps<T>::pack(s[2 * j][0], s[2 * j][1]);
        af[1] = ElemOps<T>::pack(s[2 * j][2], s[2 * j][3]);
        af[2] = ElemOps<T>::pack(s[2 * j + 1][0], s[2 * j + 1][1]);
        af[3] = ElemOps<T>::pack(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
        for (int p = 0; p < D / 16; ++p) {
          uint32_t vf[4];
          v2::ldsm_x4_trans(vf, tv + (j * 16 + lr + 8 * (lm & 1)) * kSD + p * 16 + 8 * (lm >> 1));
          const uint32_t b0[2] = {vf[0], vf[1]}, b1[2] = {vf[2], vf[3]};
          ElemOps<T>::mma(acc[2 * p], af, b0);
          ElemOps<T>::mma(acc[2 * p + 1], af, b1);
        }
      }
    }
  }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, o);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, o);
  }
  // A NaN sum (a row that attends a NaN) is not empty: its out and lse stay NaN.
  const bool empty_a = l_a == 0.0f, empty_b = l_b == 0.0f;
  const float alpha_a = empty_a ? 0.0f : 1.0f / l_a, alpha_b = empty_b ? 0.0f : 1.0f / l_b;

  // The warp's rows, rounded, into its own 16 rows of the Q buffer (read only by this warp, and
  // only into qf before the loop), then out to global memory a row chunk per lane.
  const int tq = lane & 3;
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    const int c = dt * 8 + 2 * tq;
    *reinterpret_cast<uint32_t*>(sq + row_a * kSD + c) =
        ElemOps<T>::pack(acc[dt][0] * alpha_a, acc[dt][1] * alpha_a);
    *reinterpret_cast<uint32_t*>(sq + row_b * kSD + c) =
        ElemOps<T>::pack(acc[dt][2] * alpha_b, acc[dt][3] * alpha_b);
  }
  __syncwarp();
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int j = 0; j < kChunks / 2; ++j) {
    const int idx = lane + 32 * j;  // 16 rows x kChunks chunks
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    // Row r of the warp is row g = r % 8 of lane 4 (r % 8): its pos_a (r < 8) or pos_b.
    const int64_t pa = __shfl_sync(0xffffffffu, pos_a, 4 * (r & 7));
    const int64_t pb = __shfl_sync(0xffffffffu, pos_b, 4 * (r & 7));
    const int64_t pos = r < 8 ? pa : pb;
    if (pos < 0) continue;
    const uint4 raw = *reinterpret_cast<const uint4*>(sq + (warp * 16 + r) * kSD + c);
    T* dst = row_ptr<T>(out, b, h, pos) + c * out.s3;
    if (out.s3 == 1 && (reinterpret_cast<uintptr_t>(dst) & 15u) == 0) {
      v2::st_global16(dst, raw);
    } else {
      T vals[8];
      memcpy(vals, &raw, sizeof raw);
#pragma unroll
      for (int e = 0; e < 8; ++e) dst[e * out.s3] = vals[e];
    }
  }
  if (tq == 0 && lse.data != nullptr) {
    if (pos_a >= 0) *lse_ptr(lse, b, h, pos_a) = empty_a ? -INFINITY : m_a * kLn2 + logf(l_a);
    if (pos_b >= 0) *lse_ptr(lse, b, h, pos_b) = empty_b ? -INFINITY : m_b * kLn2 + logf(l_b);
  }
}

template <typename T, int D, int TILE>
void forward_v2_tile(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream) {
  const size_t bytes = ForwardV2Smem<D, TILE>::bytes(sizeof(T));
  prepare_launch(forward_kernel_v2<T, D, TILE>, bytes);
  const Tensor3 lse = a.lse.data != nullptr ? tensor3(a.lse) : Tensor3{nullptr, 0, 0, 0};
  forward_kernel_v2<T, D, TILE>
      <<<tile_grid(dl, a.layout->block, TILE, a.q.shape[0]), TILE * 2, bytes, stream>>>(
          dl.heads, tensor4(a.q), tensor4(a.k), tensor4(a.v), tensor4(a.out), lse,
          a.scale * kLog2e);
}

template <typename T, int D>
void forward_v2(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream) {
  with_tile(a.layout->block,
            [&](auto tile) { forward_v2_tile<T, D, decltype(tile)::value>(dl, a, stream); });
}

}  // namespace sparse::cuda::tc

// The explicit instantiation of forward_v2 (attention_tc_<dtype>_d<head_dim>.cu), inside
// namespace sparse::cuda::tc.
#define SPARSE_TC_INSTANTIATE_FORWARD_V2(T, D) \
  template void forward_v2<T, D>(const DeviceLayout&, const AttentionForwardArgs&, cudaStream_t);
