// bf16 / fp16 block-sparse attention on tensor cores (sm_80 mma.sync m16n8k16, fp32 accumulation),
// forward and backward, flash-style over a device layout. Included by the per-head_dim instance
// files (attention_tc_d32.cu, ...), which instantiate tc::forward / tc::backward.
//
// Tiling. A CTA owns TILE = min(B, 64) computed rows of one block row (forward, dQ) or block
// column (dK/dV) of one (batch, head); it has TILE / 16 warps and each warp owns 16 of the rows,
// so a warp's S tile is 16 x TILE. A B x B layout block with B = 128 is therefore visited as
// (128 / 64)^2 sub-tiles; inside a sub-tile the element mask is applied exactly (TILE <= 64, so
// one sub-tile's mask bits of one row are one 64-bit word). Operands are staged in shared memory
// as bf16/fp16, rows padded by 8 elements (16 bytes) so that the 32-bit fragment loads of a warp
// hit 32 distinct banks. Operands that a product needs with the reduction index contiguous in the
// other orientation (V for P V, K for dS K, Q and dO for dK and dV) are stored a second time
// transposed, so every fragment is read with plain 32-bit shared loads (no ldmatrix).
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .f16/.bf16 A and B, .f32 C), g = lane / 4,
// t = lane % 4:  A (16 x 16, row):  a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..),
// a3 = (g+8, 2t+8..);  B (16 x 8, col): b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g);
// C (16 x 8): c0, c1 = (g, 2t), (g, 2t+1); c2, c3 = (g+8, 2t), (g+8, 2t+1). The C fragments of
// two adjacent n-tiles of S are exactly the A fragment of one k-step of P V, so P never leaves
// registers.
//
// Softmax in base 2: s2 = (q . k) * scale * log2(e), p = exp2(s2 - m2); lse is written in natural
// log units and fp32 (lse = m2 ln 2 + ln l), the same contract as the fp32 kernels and the CPU
// reference. Rows with no allowed key get out = 0, lse = -inf and zero gradients.
//
// Non-finite inputs reach only the rows that attend them: masked scores, P and dS are selected
// (never multiplied) to 0, and a tensor-core product of P or dS with a tile that holds a NaN or
// Inf (V in the forward, K for dQ, Q or dO for dK/dV) would still give 0 x NaN = NaN in every row,
// so the loaders flag such tiles (one exponent test per element) and the CTA takes, for that tile
// only, a product in fp32 FMAs over the attended pairs (gemm_rs_exact).
//
// Positions go through natural_position(), so the transposed order of strided column heads and
// padding (n not a multiple of B or of the stride) are handled by the loaders: padding rows are
// loaded as zeros, padding keys are masked out, padding rows are never stored. Tensors may have
// any element strides; a row is read with 16-byte loads when its elements are contiguous and
// 16-byte aligned, element by element otherwise.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "libsparse/cuda/attention_cuda.hpp"
#include "libsparse/cuda/attention_tc.hpp"
#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/cuda/device_layout.hpp"
#include "libsparse/error.hpp"
#include "libsparse/layout.hpp"

namespace sparse::cuda::tc {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
struct ElemOps;

template <>
struct ElemOps<__nv_bfloat16> {
  static constexpr uint32_t kExponent = 0x7F80u;  // all ones: Inf or NaN
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
  }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) {
    return __float2bfloat16_rn(x);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

template <>
struct ElemOps<__half> {
  static constexpr uint32_t kExponent = 0x7C00u;
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
  }
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

// A [batch, heads, seq, dim] tensor of 16-bit elements with element strides.
struct Tensor4 {
  void* data;
  int64_t s0, s1, s2, s3;
};
// A [batch, heads, seq] fp32 tensor (lse).
struct Tensor3 {
  float* data;
  int64_t s0, s1, s2;
};

inline Tensor4 tensor4(const TensorView& t) {
  return {t.data, t.strides[0], t.strides[1], t.strides[2], t.strides[3]};
}
inline Tensor3 tensor3(const TensorView& t) {
  return {static_cast<float*>(t.data), t.strides[0], t.strides[1], t.strides[2]};
}

template <typename T>
__device__ __forceinline__ T* row_ptr(const Tensor4& t, int64_t b, int64_t h, int64_t pos) {
  return static_cast<T*>(t.data) + b * t.s0 + h * t.s1 + pos * t.s2;
}
__device__ __forceinline__ float* lse_ptr(const Tensor3& t, int64_t b, int64_t h, int64_t pos) {
  return t.data + b * t.s0 + h * t.s1 + pos * t.s2;
}

__device__ __forceinline__ uint64_t low_bits(int count) {
  return count >= 64 ? ~uint64_t{0} : (uint64_t{1} << count) - 1;
}

// The allowed-key bits of one query row for the key columns [c0, c0 + cols) of a block (bit c =
// key c0 + c); cols <= 64 and c0 is a multiple of cols, so they lie in one mask word.
__device__ __forceinline__ uint64_t mask_bits(const DeviceHead& L, int32_t mask_id, int row, int c0,
                                              int cols) {
  if (mask_id < 0) return low_bits(cols);
  const uint64_t word =
      L.masks[(static_cast<int64_t>(mask_id) * L.block + row) * L.words + (c0 >> 6)];
  return (word >> (c0 & 63)) & low_bits(cols);
}

// Whether any of the eight 16-bit values in `raw` is Inf or NaN.
template <typename T>
__device__ __forceinline__ bool any_nonfinite(const uint4& raw) {
  constexpr uint32_t lo = ElemOps<T>::kExponent, hi = lo << 16;
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  bool bad = false;
#pragma unroll
  for (int i = 0; i < 4; ++i) bad |= (w[i] & lo) == lo || (w[i] & hi) == hi;
  return bad;
}

// Stages ROWS computed rows [first, first + ROWS) of t[b, h] into shared memory: row-major into
// `rm` (ROWS x (D + 8)) and/or transposed into `tr` (D x (ROWS + 8)); either may be null. Rows
// that are padding or past the end are zero. Returns whether this thread loaded an Inf or NaN.
template <typename T, int D, int ROWS>
__device__ bool load_tile(const DeviceHead& L, const Tensor4& t, int64_t b, int64_t h,
                          int64_t first, T* __restrict__ rm, T* __restrict__ tr) {
  constexpr int kChunks = D / 8;
  bool nonfinite = false;
  for (int idx = static_cast<int>(threadIdx.x); idx < ROWS * kChunks;
       idx += static_cast<int>(blockDim.x)) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const int64_t pos = natural_position(L, first + r);
    uint4 raw = make_uint4(0u, 0u, 0u, 0u);
    if (pos >= 0) {
      const T* src = row_ptr<T>(t, b, h, pos) + c * t.s3;
      if (t.s3 == 1 && (reinterpret_cast<uintptr_t>(src) & 15u) == 0) {
        raw = *reinterpret_cast<const uint4*>(src);
      } else {
        T vals[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) vals[k] = src[k * t.s3];
        memcpy(&raw, vals, sizeof raw);
      }
    }
    nonfinite |= any_nonfinite<T>(raw);
    if (rm != nullptr) *reinterpret_cast<uint4*>(rm + r * (D + 8) + c) = raw;
    if (tr != nullptr) {
      T vals[8];
      memcpy(vals, &raw, sizeof raw);
#pragma unroll
      for (int k = 0; k < 8; ++k) tr[(c + k) * (ROWS + 8) + r] = vals[k];
    }
  }
  return nonfinite;
}

// Bits of the keys [first, first + cols) that are real positions (not padding); cols <= 64.
// Called by one whole warp.
__device__ __forceinline__ uint64_t valid_key_bits(const DeviceHead& L, int64_t first, int cols,
                                                   int lane) {
  const bool lo = lane < cols && natural_position(L, first + lane) >= 0;
  const bool hi = lane + 32 < cols && natural_position(L, first + lane + 32) >= 0;
  const uint32_t blo = __ballot_sync(0xffffffffu, lo), bhi = __ballot_sync(0xffffffffu, hi);
  return (static_cast<uint64_t>(bhi) << 32) | blo;
}

__device__ __forceinline__ uint32_t ld32(const void* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// A fragment of rows [row0, row0 + 16) x columns [k0, k0 + 16) of a row-major tile.
template <int STRIDE, typename T>
__device__ __forceinline__ void load_a(const T* s, int row0, int k0, int lane, uint32_t (&a)[4]) {
  const int g = lane >> 2, t = lane & 3;
  const T* p = s + (row0 + g) * STRIDE + k0 + 2 * t;
  a[0] = ld32(p);
  a[1] = ld32(p + 8 * STRIDE);
  a[2] = ld32(p + 8);
  a[3] = ld32(p + 8 * STRIDE + 8);
}

// B fragment (k in [k0, k0 + 16), n in [n0, n0 + 8)) from a tile stored n-major: s[n][k].
template <int STRIDE, typename T>
__device__ __forceinline__ void load_b(const T* s, int n0, int k0, int lane, uint32_t (&b)[2]) {
  const int g = lane >> 2, t = lane & 3;
  const T* p = s + (n0 + g) * STRIDE + k0 + 2 * t;
  b[0] = ld32(p);
  b[1] = ld32(p + 8);
}

template <int N>
__device__ __forceinline__ void zero(float (&x)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) x[i][0] = x[i][1] = x[i][2] = x[i][3] = 0.0f;
}

// acc (16 x 8 N tiles) += A (16 x 16 K-steps, row-major tile `a` rows row0..) * B where B[k][n]
// is read n-major from `b` (rows n, columns k).
template <typename T, int K, int N, int SA, int SB>
__device__ __forceinline__ void gemm_ss(float (&acc)[N][4], const T* a, int row0, const T* b,
                                        int lane) {
#pragma unroll
  for (int ks = 0; ks < K / 16; ++ks) {
    uint32_t af[4];
    load_a<SA>(a, row0, ks * 16, lane, af);
#pragma unroll
    for (int nt = 0; nt < N; ++nt) {
      uint32_t bf[2];
      load_b<SB>(b, nt * 8, ks * 16, lane, bf);
      ElemOps<T>::mma(acc[nt], af, bf);
    }
  }
}

// acc (16 x 8 N tiles) += P (16 x KC, register C fragments, KC / 8 tiles) * B where B[k][n] is
// read n-major from `b` (rows n, columns k).
template <typename T, int KC, int N, int SB>
__device__ __forceinline__ void gemm_rs(float (&acc)[N][4], const float (&p)[KC / 8][4], const T* b,
                                        int lane) {
#pragma unroll
  for (int j = 0; j < KC / 16; ++j) {
    uint32_t af[4];
    af[0] = ElemOps<T>::pack(p[2 * j][0], p[2 * j][1]);
    af[1] = ElemOps<T>::pack(p[2 * j][2], p[2 * j][3]);
    af[2] = ElemOps<T>::pack(p[2 * j + 1][0], p[2 * j + 1][1]);
    af[3] = ElemOps<T>::pack(p[2 * j + 1][2], p[2 * j + 1][3]);
#pragma unroll
    for (int nt = 0; nt < N; ++nt) {
      uint32_t bf[2];
      load_b<SB>(b, nt * 8, j * 16, lane, bf);
      ElemOps<T>::mma(acc[nt], af, bf);
    }
  }
}

// The exact path of gemm_rs for a tile that holds an Inf or NaN: acc += W B over the pairs
// (row, k) that attends(second_row, k) accepts (and, with skip_zero, whose weight is not 0), as
// selected fp32 FMAs, so a non-finite B[k][.] reaches only the rows that take k. Rare, so it
// favours small code: the fragments are copied to local arrays indexed at run time (the fast
// path's registers stay statically indexed) and the weight of (row, k) is fetched from the quad
// lane that holds it. load(n, k) gives B[k][n] (gemm_rs_exact: B n-major; the second forward
// kernel: V row-major).
template <int KC, int N, typename Attends, typename Load>
__device__ void gemm_exact(float (&acc)[N][4], const float (&w)[KC / 8][4], int lane,
                           bool skip_zero, Attends attends, Load load) {
  float wl[KC / 8][4], al[N][4];
#pragma unroll
  for (int j = 0; j < KC / 8; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) wl[j][i] = w[j][i];
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) al[j][i] = acc[j][i];
  const int tq = lane & 3;
#pragma unroll 1
  for (int k = 0; k < KC; ++k) {
    const int src = (lane & ~3) | ((k & 7) >> 1);
    const float wa = __shfl_sync(0xffffffffu, wl[k >> 3][k & 1], src);
    const float wb = __shfl_sync(0xffffffffu, wl[k >> 3][2 + (k & 1)], src);
    const bool ta = attends(false, k) && !(skip_zero && wa == 0.0f);
    const bool tb = attends(true, k) && !(skip_zero && wb == 0.0f);
#pragma unroll 1
    for (int nt = 0; nt < N; ++nt) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float x = load(nt * 8 + 2 * tq + i, k);  // B[k][n]
        if (ta) al[nt][i] = fmaf(wa, x, al[nt][i]);
        if (tb) al[nt][2 + i] = fmaf(wb, x, al[nt][2 + i]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[j][i] = al[j][i];
}

// B[k][n] read n-major from `b` (rows n, columns k), as gemm_rs reads it.
template <typename T, int KC, int N, int SB, typename Attends>
__device__ void gemm_rs_exact(float (&acc)[N][4], const float (&w)[KC / 8][4], const T* b, int lane,
                              bool skip_zero, Attends attends) {
  gemm_exact<KC, N>(acc, w, lane, skip_zero, attends,
                    [&](int n, int k) { return ElemOps<T>::to_float(b[n * SB + k]); });
}

// Writes a warp's 16 x D accumulator rows (rows g and g + 8 of the warp) times alpha.
template <typename T, int D>
__device__ __forceinline__ void store_rows(const Tensor4& t, int64_t b, int64_t h, int64_t pos_a,
                                           int64_t pos_b, const float (&acc)[D / 8][4],
                                           float alpha_a, float alpha_b, int lane) {
  const int tq = lane & 3;
  if (pos_a >= 0) {
    T* row = row_ptr<T>(t, b, h, pos_a);
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const int c = dt * 8 + 2 * tq;
      row[c * t.s3] = ElemOps<T>::from_float(acc[dt][0] * alpha_a);
      row[(c + 1) * t.s3] = ElemOps<T>::from_float(acc[dt][1] * alpha_a);
    }
  }
  if (pos_b >= 0) {
    T* row = row_ptr<T>(t, b, h, pos_b);
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const int c = dt * 8 + 2 * tq;
      row[c * t.s3] = ElemOps<T>::from_float(acc[dt][2] * alpha_b);
      row[(c + 1) * t.s3] = ElemOps<T>::from_float(acc[dt][3] * alpha_b);
    }
  }
}

// One key tile of the forward's online softmax (Milakov and Gimelshein 2018, as in
// FlashAttention): scores s (the warp's 16 rows x TILE keys, C fragments: rows g and g + 8) are
// scaled to log2 units where bits_a / bits_b allow the key and set to -inf elsewhere (selected,
// never multiplied); the running maxima m, the per-lane partial sums l and the accumulator acc
// are rescaled to the new maxima; s is left holding P = exp2(s - max). Shared by both forward
// kernels, so that they compute the same values.
template <int TILE, int D>
__device__ __forceinline__ void online_softmax_tile(float (&s)[TILE / 8][4], uint64_t bits_a,
                                                    uint64_t bits_b, float scale_log2, float& m_a,
                                                    float& m_b, float& l_a, float& l_b,
                                                    float (&acc)[D / 8][4]) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  // The lane's columns are nt * 8 + 2 (lane % 4) + (i % 2): shifted once by the lane's part, the
  // bit of each element is at a constant position (no 64-bit shift by a run-time amount).
  const uint64_t lane_a = bits_a >> (2 * (lane & 3)), lane_b = bits_b >> (2 * (lane & 3));
  float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < TILE / 8; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint64_t bit = uint64_t{1} << (nt * 8 + (i & 1));
      const uint64_t bits = i < 2 ? lane_a : lane_b;
      s[nt][i] = (bits & bit) ? s[nt][i] * scale_log2 : -INFINITY;
    }
    mx_a = fmaxf(mx_a, fmaxf(s[nt][0], s[nt][1]));
    mx_b = fmaxf(mx_b, fmaxf(s[nt][2], s[nt][3]));
  }
  // The four lanes of a quad share rows g and g + 8.
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, o));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, o));
  }
  const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
  // With no allowed key so far the row max is -inf: subtract 0 instead (all p are 0).
  const float base_a = new_a == -INFINITY ? 0.0f : new_a;
  const float base_b = new_b == -INFINITY ? 0.0f : new_b;
  const float corr_a = exp2f(m_a - base_a), corr_b = exp2f(m_b - base_b);
  m_a = new_a;
  m_b = new_b;
  float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
  for (int nt = 0; nt < TILE / 8; ++nt) {
    s[nt][0] = exp2f(s[nt][0] - base_a);
    s[nt][1] = exp2f(s[nt][1] - base_a);
    s[nt][2] = exp2f(s[nt][2] - base_b);
    s[nt][3] = exp2f(s[nt][3] - base_b);
    sum_a += s[nt][0] + s[nt][1];
    sum_b += s[nt][2] + s[nt][3];
  }
  l_a = l_a * corr_a + sum_a;  // per-lane partial sums, reduced over the quad at the end
  l_b = l_b * corr_b + sum_b;
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    acc[dt][0] *= corr_a;
    acc[dt][1] *= corr_a;
    acc[dt][2] *= corr_b;
    acc[dt][3] *= corr_b;
  }
}

// Shared memory of the three kernels, in elements of T (plus small fp32 / bit arrays).
template <int D, int TILE>
struct ForwardSmem {
  static constexpr int kSD = D + 8, kST = TILE + 8;
  static constexpr size_t q = 0, k = q + TILE * kSD, vt = k + TILE * kSD, end = vt + D * kST;
  static constexpr size_t bytes(size_t elem) { return end * elem + 16; }  // + valid-key bits
};
template <int D, int TILE>
struct DqSmem {
  static constexpr int kSD = D + 8, kST = TILE + 8;
  static constexpr size_t q = 0, dout = q + TILE * kSD, k = dout + TILE * kSD, v = k + TILE * kSD,
                          kt = v + TILE * kSD, end = kt + D * kST;
  static constexpr size_t bytes(size_t elem) { return end * elem + 16; }
};
template <int D, int TILE, int QC>
struct DkdvSmem {
  static constexpr int kSD = D + 8, kSQ = QC + 8;
  static constexpr size_t k = 0, v = k + TILE * kSD, q = v + TILE * kSD, dout = q + QC * kSD,
                          qt = dout + QC * kSD, doutt = qt + D * kSQ, end = doutt + D * kSQ;
  // + per query row: lse (log2 units), delta (fp32) and mask bits (u64).
  static constexpr size_t bytes(size_t elem) { return (end * elem + 15) / 16 * 16 + QC * 16; }
};

// ------------------------------------------------------------------------------------ forward

template <typename T, int D, int TILE>
__global__ void __launch_bounds__(TILE * 2)
    forward_kernel(const DeviceHead* heads, Tensor4 q, Tensor4 k, Tensor4 v, Tensor4 out,
                   Tensor3 lse, float scale_log2) {
  using S = ForwardSmem<D, TILE>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sq = reinterpret_cast<T*>(smem) + S::q;
  T* sk = reinterpret_cast<T*>(smem) + S::k;
  T* svt = reinterpret_cast<T*>(smem) + S::vt;
  uint64_t* skvalid = reinterpret_cast<uint64_t*>(smem + S::end * sizeof(T));

  const DeviceHead& L = heads[blockIdx.y];
  const int B = L.block, split = B / TILE;
  const int64_t I = ordered_block(L, L.row_order, blockIdx.x / split);
  if (I < 0) return;  // uniform over the CTA
  const int r0 = static_cast<int>(blockIdx.x % split) * TILE;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2;
  const int row_a = warp * 16 + g, row_b = row_a + 8;  // rows of the CTA's tile
  const int64_t first_q = I * B + r0;
  const int64_t pos_a = natural_position(L, first_q + row_a);
  const int64_t pos_b = natural_position(L, first_q + row_b);

  load_tile<T, D, TILE>(L, q, b, h, first_q, sq, nullptr);

  float acc[D / 8][4];
  zero(acc);
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

  for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
    const int64_t J = L.col_idx[e];
    const int32_t mask = L.mask_id[e];
    for (int c0 = 0; c0 < B; c0 += TILE) {
      const int64_t first_k = J * B + c0;
      __syncthreads();  // every warp is done with the previous K / V tiles
      load_tile<T, D, TILE>(L, k, b, h, first_k, sk, nullptr);
      const bool v_nonfinite = load_tile<T, D, TILE>(L, v, b, h, first_k, nullptr, svt);
      if (warp == 0) {
        const uint64_t bits = valid_key_bits(L, first_k, TILE, lane);
        if (lane == 0) *skvalid = bits;
      }
      // Scores are masked by selection, so only P V can carry V's non-finite values further.
      const bool exact = __syncthreads_or(v_nonfinite) != 0;

      float s[TILE / 8][4];
      zero(s);
      gemm_ss<T, D, TILE / 8, S::kSD, S::kSD>(s, sq, warp * 16, sk, lane);

      const uint64_t valid = *skvalid;
      const uint64_t bits_a = mask_bits(L, mask, r0 + row_a, c0, TILE) & valid;
      const uint64_t bits_b = mask_bits(L, mask, r0 + row_b, c0, TILE) & valid;
      online_softmax_tile<TILE, D>(s, bits_a, bits_b, scale_log2, m_a, m_b, l_a, l_b, acc);
      if (exact)
        gemm_rs_exact<T, TILE, D / 8, S::kST>(acc, s, svt, lane, false, [&](bool second, int c) {
          return (((second ? bits_b : bits_a) >> c) & 1u) != 0;
        });
      else
        gemm_rs<T, TILE, D / 8, S::kST>(acc, s, svt, lane);
    }
  }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, o);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, o);
  }
  // A NaN sum (a row that attends a NaN) is not empty: its out and lse stay NaN.
  const bool empty_a = l_a == 0.0f, empty_b = l_b == 0.0f;
  store_rows<T, D>(out, b, h, pos_a, pos_b, acc, empty_a ? 0.0f : 1.0f / l_a,
                   empty_b ? 0.0f : 1.0f / l_b, lane);
  if ((lane & 3) == 0 && lse.data != nullptr) {
    if (pos_a >= 0) *lse_ptr(lse, b, h, pos_a) = empty_a ? -INFINITY : m_a * kLn2 + logf(l_a);
    if (pos_b >= 0) *lse_ptr(lse, b, h, pos_b) = empty_b ? -INFINITY : m_b * kLn2 + logf(l_b);
  }
}

// ------------------------------------------------------------------------------------ backward

// delta[b, h, i] = dout[b, h, i, :] . out[b, h, i, :] in fp32, contiguous [batch, heads, n];
// one warp per row.
template <typename T>
__global__ void __launch_bounds__(128)
    delta_kernel(Tensor4 out, Tensor4 dout, float* delta, int64_t heads, int64_t n, int d) {
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + warp;
  const int64_t b = blockIdx.y;
  if (row >= heads * n) return;
  const int64_t h = row / n, i = row % n;
  const T* o = row_ptr<T>(out, b, h, i);
  const T* g = row_ptr<T>(dout, b, h, i);
  float s = 0.0f;
  for (int e = lane; e < d; e += 32)
    s = fmaf(ElemOps<T>::to_float(o[e * out.s3]), ElemOps<T>::to_float(g[e * dout.s3]), s);
#pragma unroll
  for (int o2 = 16; o2 > 0; o2 >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o2);
  if (lane == 0) delta[(b * heads + h) * n + i] = s;
}

// lse of a row in log2 units for recomputing P = exp2(s2 - lse2); +inf for rows without keys
// and padding, so that every p of such a row is exactly 0.
__device__ __forceinline__ float row_lse2(const Tensor3& lse, int64_t b, int64_t h, int64_t pos) {
  if (pos < 0) return INFINITY;
  const float x = *lse_ptr(lse, b, h, pos);
  return x == -INFINITY ? INFINITY : x * kLog2e;
}

template <typename T, int D, int TILE>
__global__ void __launch_bounds__(TILE * 2)
    dq_kernel(const DeviceHead* heads, Tensor4 q, Tensor4 k, Tensor4 v, Tensor3 lse, Tensor4 dout,
              const float* delta, Tensor4 dq, int64_t num_heads, float scale, float scale_log2) {
  using S = DqSmem<D, TILE>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sq = reinterpret_cast<T*>(smem) + S::q;
  T* sdo = reinterpret_cast<T*>(smem) + S::dout;
  T* sk = reinterpret_cast<T*>(smem) + S::k;
  T* sv = reinterpret_cast<T*>(smem) + S::v;
  T* skt = reinterpret_cast<T*>(smem) + S::kt;
  uint64_t* skvalid = reinterpret_cast<uint64_t*>(smem + S::end * sizeof(T));

  const DeviceHead& L = heads[blockIdx.y];
  const int B = L.block, split = B / TILE;
  const int64_t I = ordered_block(L, L.row_order, blockIdx.x / split);
  if (I < 0) return;
  const int r0 = static_cast<int>(blockIdx.x % split) * TILE;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2;
  const int row_a = warp * 16 + g, row_b = row_a + 8;
  const int64_t first_q = I * B + r0;
  const int64_t pos_a = natural_position(L, first_q + row_a);
  const int64_t pos_b = natural_position(L, first_q + row_b);
  const float lse_a = row_lse2(lse, b, h, pos_a), lse_b = row_lse2(lse, b, h, pos_b);
  const float* drow = delta + (b * num_heads + h) * L.seq_len;
  const float delta_a = pos_a >= 0 ? drow[pos_a] : 0.0f;
  const float delta_b = pos_b >= 0 ? drow[pos_b] : 0.0f;

  load_tile<T, D, TILE>(L, q, b, h, first_q, sq, nullptr);
  load_tile<T, D, TILE>(L, dout, b, h, first_q, sdo, nullptr);

  float acc[D / 8][4];
  zero(acc);
  for (int64_t e = L.row_ptr[I]; e < L.row_ptr[I + 1]; ++e) {
    const int64_t J = L.col_idx[e];
    const int32_t mask = L.mask_id[e];
    for (int c0 = 0; c0 < B; c0 += TILE) {
      const int64_t first_k = J * B + c0;
      __syncthreads();
      const bool k_nonfinite = load_tile<T, D, TILE>(L, k, b, h, first_k, sk, skt);
      load_tile<T, D, TILE>(L, v, b, h, first_k, sv, nullptr);
      if (warp == 0) {
        const uint64_t bits = valid_key_bits(L, first_k, TILE, lane);
        if (lane == 0) *skvalid = bits;
      }
      // dS is selected, so only dS K can carry K's non-finite values to other rows.
      const bool exact = __syncthreads_or(k_nonfinite) != 0;

      float p[TILE / 8][4], dp[TILE / 8][4];
      zero(p);
      zero(dp);
      gemm_ss<T, D, TILE / 8, S::kSD, S::kSD>(p, sq, warp * 16, sk, lane);
      gemm_ss<T, D, TILE / 8, S::kSD, S::kSD>(dp, sdo, warp * 16, sv, lane);
      const uint64_t valid = *skvalid;
      const uint64_t bits_a = mask_bits(L, mask, r0 + row_a, c0, TILE) & valid;
      const uint64_t bits_b = mask_bits(L, mask, r0 + row_b, c0, TILE) & valid;
#pragma unroll
      for (int nt = 0; nt < TILE / 8; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int col = nt * 8 + 2 * (lane & 3) + (i & 1);
          const bool a_row = i < 2;
          const uint64_t bits = a_row ? bits_a : bits_b;
          const bool allowed = ((bits >> col) & 1u) != 0;
          const float pr = allowed ? exp2f(p[nt][i] * scale_log2 - (a_row ? lse_a : lse_b)) : 0.0f;
          // dS is selected to 0 wherever P is 0 (masked, a score of -inf, or an underflow), as on
          // the CPU: a non-finite dP there (an Inf in V, a NaN in dO) must not give 0 x Inf = NaN.
          dp[nt][i] = pr != 0.0f ? pr * (dp[nt][i] - (a_row ? delta_a : delta_b)) : 0.0f;  // dS
        }
      }
      if (exact)
        gemm_rs_exact<T, TILE, D / 8, S::kST>(acc, dp, skt, lane, true, [&](bool second, int c) {
          return (((second ? bits_b : bits_a) >> c) & 1u) != 0;
        });
      else
        gemm_rs<T, TILE, D / 8, S::kST>(acc, dp, skt, lane);
    }
  }
  store_rows<T, D>(dq, b, h, pos_a, pos_b, acc, scale, scale, lane);
}

template <typename T, int D, int TILE, int QC>
__global__ void __launch_bounds__(TILE * 2)
    dkdv_kernel(const DeviceHead* heads, Tensor4 q, Tensor4 k, Tensor4 v, Tensor3 lse, Tensor4 dout,
                const float* delta, Tensor4 dk, Tensor4 dv, int64_t num_heads, float scale,
                float scale_log2) {
  using S = DkdvSmem<D, TILE, QC>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sk = reinterpret_cast<T*>(smem) + S::k;
  T* sv = reinterpret_cast<T*>(smem) + S::v;
  T* sq = reinterpret_cast<T*>(smem) + S::q;
  T* sdo = reinterpret_cast<T*>(smem) + S::dout;
  T* sqt = reinterpret_cast<T*>(smem) + S::qt;
  T* sdot = reinterpret_cast<T*>(smem) + S::doutt;
  unsigned char* tail = smem + (S::end * sizeof(T) + 15) / 16 * 16;
  uint64_t* sbits = reinterpret_cast<uint64_t*>(tail);       // QC
  float* slse = reinterpret_cast<float*>(tail + QC * 8);     // QC
  float* sdelta = reinterpret_cast<float*>(tail + QC * 12);  // QC

  const DeviceHead& L = heads[blockIdx.y];
  const int B = L.block, split = B / TILE;
  const int64_t J = ordered_block(L, L.col_order, blockIdx.x / split);
  if (J < 0) return;
  const int c0 = static_cast<int>(blockIdx.x % split) * TILE;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int key_a = warp * 16 + g, key_b = key_a + 8;  // keys of the CTA's tile
  const int64_t first_k = J * B + c0;
  const float* drow = delta + (b * num_heads + h) * L.seq_len;

  load_tile<T, D, TILE>(L, k, b, h, first_k, sk, nullptr);
  load_tile<T, D, TILE>(L, v, b, h, first_k, sv, nullptr);

  float dk_acc[D / 8][4], dv_acc[D / 8][4];
  zero(dk_acc);
  zero(dv_acc);
  for (int64_t e = L.col_ptr[J]; e < L.col_ptr[J + 1]; ++e) {
    const int64_t I = L.row_idx[e];
    const int32_t mask = L.mask_id[L.col_to_csr[e]];
    for (int r0 = 0; r0 < B; r0 += QC) {
      const int64_t first_q = I * B + r0;
      __syncthreads();
      const bool q_nonfinite = load_tile<T, D, QC>(L, q, b, h, first_q, sq, sqt);
      const bool g_nonfinite = load_tile<T, D, QC>(L, dout, b, h, first_q, sdo, sdot);
      for (int r = static_cast<int>(threadIdx.x); r < QC; r += static_cast<int>(blockDim.x)) {
        const int64_t pos = natural_position(L, first_q + r);
        slse[r] = row_lse2(lse, b, h, pos);
        sdelta[r] = pos >= 0 ? drow[pos] : 0.0f;
        sbits[r] = mask_bits(L, mask, r0 + r, c0, TILE);
      }
      // P and dS are selected, so only P^T dO and dS^T Q can carry the non-finite values of a
      // query row to keys it does not attend.
      const bool exact = __syncthreads_or(q_nonfinite || g_nonfinite) != 0;

      // S^T = K Q^T and dP^T = V dO^T: 16 keys x QC queries per warp.
      float p[QC / 8][4], ds[QC / 8][4];
      zero(p);
      zero(ds);
      gemm_ss<T, D, QC / 8, S::kSD, S::kSD>(p, sk, warp * 16, sq, lane);
      gemm_ss<T, D, QC / 8, S::kSD, S::kSD>(ds, sv, warp * 16, sdo, lane);
#pragma unroll
      for (int nt = 0; nt < QC / 8; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int qc = nt * 8 + 2 * tq + (i & 1);
          const int key = i < 2 ? key_a : key_b;
          const bool allowed = ((sbits[qc] >> key) & 1u) != 0;
          const float pr = allowed ? exp2f(p[nt][i] * scale_log2 - slse[qc]) : 0.0f;
          p[nt][i] = pr;
          ds[nt][i] = pr != 0.0f ? pr * (ds[nt][i] - sdelta[qc]) : 0.0f;  // 0 wherever P is
        }
      }
      if (exact) {
        const auto attends = [&](bool second, int qc) {
          return ((sbits[qc] >> (second ? key_b : key_a)) & 1u) != 0;
        };
        gemm_rs_exact<T, QC, D / 8, S::kSQ>(dv_acc, p, sdot, lane, true, attends);
        gemm_rs_exact<T, QC, D / 8, S::kSQ>(dk_acc, ds, sqt, lane, true, attends);
      } else {
        gemm_rs<T, QC, D / 8, S::kSQ>(dv_acc, p, sdot, lane);  // dV += P^T dO
        gemm_rs<T, QC, D / 8, S::kSQ>(dk_acc, ds, sqt, lane);  // dK += dS^T Q
      }
    }
  }
  const int64_t pos_a = natural_position(L, first_k + key_a);
  const int64_t pos_b = natural_position(L, first_k + key_b);
  store_rows<T, D>(dk, b, h, pos_a, pos_b, dk_acc, scale, scale, lane);
  store_rows<T, D>(dv, b, h, pos_a, pos_b, dv_acc, 1.0f, 1.0f, lane);
}

// ------------------------------------------------------------------------------------ launch

inline int tile_for_block(int block) { return block < 64 ? block : 64; }

// Calls f(std::integral_constant<int, TILE>) with the kernels' tile for `block` (16, 32 or 64),
// so that each launcher instantiates its tile sizes in one place.
template <typename F>
void with_tile(int block, F&& f) {
  switch (tile_for_block(block)) {
    case 16:
      f(std::integral_constant<int, 16>{});
      break;
    case 32:
      f(std::integral_constant<int, 32>{});
      break;
    default:
      f(std::integral_constant<int, 64>{});
      break;
  }
}

template <typename Kernel>
void prepare_launch(Kernel kernel, size_t smem_bytes) {
  int device = 0, optin = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute");
  if (smem_bytes > static_cast<size_t>(optin))
    throw_error(SPARSE_ERR_UNSUPPORTED, "the tensor-core attention kernel needs ", smem_bytes,
                " bytes of shared memory per block but this GPU allows ", optin);
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem_bytes)),
             "cudaFuncSetAttribute");
}

inline dim3 tile_grid(const DeviceLayout& dl, int block, int tile, int64_t batch) {
  return dim3(static_cast<unsigned>(dl.max_blocks * (block / tile)),
              static_cast<unsigned>(dl.num_heads), static_cast<unsigned>(batch));
}

template <typename T, int D, int TILE>
void forward_tile(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream) {
  const size_t bytes = ForwardSmem<D, TILE>::bytes(sizeof(T));
  prepare_launch(forward_kernel<T, D, TILE>, bytes);
  const Tensor3 lse = a.lse.data != nullptr ? tensor3(a.lse) : Tensor3{nullptr, 0, 0, 0};
  forward_kernel<T, D, TILE>
      <<<tile_grid(dl, a.layout->block, TILE, a.q.shape[0]), TILE * 2, bytes, stream>>>(
          dl.heads, tensor4(a.q), tensor4(a.k), tensor4(a.v), tensor4(a.out), lse,
          a.scale * kLog2e);
}

template <typename T, int D, int TILE>
void backward_tile(const DeviceLayout& dl, const AttentionBackwardArgs& a, float* delta,
                   cudaStream_t stream) {
  const int64_t batch = a.q.shape[0], heads = a.q.shape[1];
  const int block = a.layout->block;
  const size_t dq_bytes = DqSmem<D, TILE>::bytes(sizeof(T));
  prepare_launch(dq_kernel<T, D, TILE>, dq_bytes);
  dq_kernel<T, D, TILE><<<tile_grid(dl, block, TILE, batch), TILE * 2, dq_bytes, stream>>>(
      dl.heads, tensor4(a.q), tensor4(a.k), tensor4(a.v), tensor3(a.lse), tensor4(a.dout), delta,
      tensor4(a.dq), heads, a.scale, a.scale * kLog2e);
  // A smaller query chunk at head_dim 128 keeps the dK and dV accumulators (2 x 64 floats per
  // lane) and the S / dP tiles within the register file.
  constexpr int QC = (D == 128 && TILE > 32) ? 32 : TILE;
  const size_t kv_bytes = DkdvSmem<D, TILE, QC>::bytes(sizeof(T));
  prepare_launch(dkdv_kernel<T, D, TILE, QC>, kv_bytes);
  dkdv_kernel<T, D, TILE, QC><<<tile_grid(dl, block, TILE, batch), TILE * 2, kv_bytes, stream>>>(
      dl.heads, tensor4(a.q), tensor4(a.k), tensor4(a.v), tensor3(a.lse), tensor4(a.dout), delta,
      tensor4(a.dk), tensor4(a.dv), heads, a.scale, a.scale * kLog2e);
}

template <typename T, int D>
void forward(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream) {
  with_tile(a.layout->block,
            [&](auto tile) { forward_tile<T, D, decltype(tile)::value>(dl, a, stream); });
}

template <typename T, int D>
void backward(const DeviceLayout& dl, const AttentionBackwardArgs& a, float* delta,
              cudaStream_t stream) {
  const int64_t batch = a.q.shape[0], heads = a.q.shape[1], n = a.q.shape[2];
  const dim3 rows(static_cast<unsigned>((heads * n + 3) / 4), static_cast<unsigned>(batch));
  delta_kernel<T><<<rows, 128, 0, stream>>>(tensor4(a.out), tensor4(a.dout), delta, heads, n, D);
  with_tile(a.layout->block,
            [&](auto tile) { backward_tile<T, D, decltype(tile)::value>(dl, a, delta, stream); });
}

}  // namespace sparse::cuda::tc

// The explicit instantiations (attention_tc_<dtype>_d<head_dim>.cu) use this inside
// namespace sparse::cuda::tc.
#define SPARSE_TC_INSTANTIATE(T, D)                                                            \
  template void forward<T, D>(const DeviceLayout&, const AttentionForwardArgs&, cudaStream_t); \
  template void backward<T, D>(const DeviceLayout&, const AttentionBackwardArgs&, float*,      \
                               cudaStream_t);
