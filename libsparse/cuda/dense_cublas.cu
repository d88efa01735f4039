// Dense causal attention on cuBLAS, the benchmarks' dense baseline ("2019-style" materialised
// attention on vendor GEMMs; the fused FlashAttention-class comparison is PyTorch SDPA in
// benchmarks/peers/gpu_attention_peers.py).
//
// Per (batch, head), with row-major [n, d] tensors and cuBLAS's column-major convention (a
// row-major X is the column-major X^T):
//   S = scale Q K^T      gemm(T, N): S^T = K Q^T          (fp32 scores, n x n)
//   P = causal softmax(S), lse                             (softmax_kernel, P in the input dtype)
//   O = P V              gemm(N, N): O^T = V^T P^T
// backward:
//   dV = P^T dO          gemm(N, T): dV^T = dO^T P
//   dP = dO V^T          gemm(T, N): dP^T = V dO^T        (fp32, reusing the S buffer)
//   dS = P (dP - D), D = rowsum(dO O)                      (ds_kernel, in the input dtype)
//   dQ = scale dS K      gemm(N, N): dQ^T = K^T dS^T
//   dK = scale dS^T Q    gemm(N, T): dK^T = Q^T dS
// All GEMMs are strided-batched over batch * heads with fp32 accumulation
// (cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F); n x n buffers live in one workspace.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <string>

#include "libsparse/cuda/attention_cuda.hpp"
#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/error.hpp"

namespace sparse::cuda {
namespace {

template <typename T>
__device__ __forceinline__ float to_f(T x) {
  return static_cast<float>(x);
}
template <>
__device__ __forceinline__ float to_f(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_f(__half x) {
  return __half2float(x);
}
template <typename T>
__device__ __forceinline__ T from_f(float x) {
  return static_cast<T>(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_f(float x) {
  return __float2half_rn(x);
}

// One CTA of 256 threads per row i of one (batch, head): P[i, j] = exp(S[i, j] - lse_i) for
// j <= i, 0 above the diagonal; lse_i = max + log(sum).
template <typename T>
__global__ void __launch_bounds__(256)
    softmax_kernel(const float* scores, T* probs, float* lse, int64_t n) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x, bh = blockIdx.y;
  const float* s = scores + (bh * n + row) * n;
  T* p = probs + (bh * n + row) * n;
  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  float m = -INFINITY;
  for (int64_t j = tid; j <= row; j += blockDim.x) m = fmaxf(m, s[j]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < static_cast<int>(blockDim.x / 32) ? red[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) red[0] = m;
  }
  __syncthreads();
  m = red[0];
  __syncthreads();  // red is reused below
  float l = 0.0f;
  for (int64_t j = tid; j <= row; j += blockDim.x) l += expf(s[j] - m);
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  if (lane == 0) red[warp] = l;
  __syncthreads();
  if (warp == 0) {
    l = lane < static_cast<int>(blockDim.x / 32) ? red[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (lane == 0) red[0] = l;
  }
  __syncthreads();
  l = red[0];
  const float row_lse = m + logf(l);  // row >= 0 always has key 0: l >= 1
  for (int64_t j = tid; j < n; j += blockDim.x)
    p[j] = from_f<T>(j <= row ? expf(s[j] - row_lse) : 0.0f);
  if (tid == 0 && lse != nullptr) lse[bh * n + row] = row_lse;
}

// delta[bh, i] = dout[bh, i, :] . out[bh, i, :]; one warp per row.
template <typename T>
__global__ void __launch_bounds__(128)
    delta_kernel(const T* out, const T* dout, float* delta, int64_t rows, int d) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  if (row >= rows) return;
  float s = 0.0f;
  for (int c = lane; c < d; c += 32) s = fmaf(to_f(out[row * d + c]), to_f(dout[row * d + c]), s);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) delta[row] = s;
}

// dS = P (dP - delta_row), one thread per element.
template <typename T>
__global__ void __launch_bounds__(256)
    ds_kernel(const T* probs, const float* dp, const float* delta, T* ds, int64_t n,
              int64_t total) {
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= total) return;
  const int64_t row = x / n;  // (bh * n + i)
  ds[x] = from_f<T>(to_f(probs[x]) * (dp[x] - delta[row]));
}

struct Gemm {
  cublasHandle_t handle;
  cudaDataType_t type;
  int64_t batch;
  void run(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t nn, int64_t k,
           float alpha, const void* a, cudaDataType_t at, int64_t lda, int64_t sa, const void* b,
           cudaDataType_t bt, int64_t ldb, int64_t sb, void* c, cudaDataType_t ct, int64_t ldc,
           int64_t sc, const char* what) const {
    const float beta = 0.0f;
    const cublasStatus_t st = cublasGemmStridedBatchedEx(
        handle, ta, tb, static_cast<int>(m), static_cast<int>(nn), static_cast<int>(k), &alpha, a,
        at, static_cast<int>(lda), sa, b, bt, static_cast<int>(ldb), sb, &beta, c, ct,
        static_cast<int>(ldc), sc, static_cast<int>(batch), CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      throw_error(SPARSE_ERR_DEVICE, "cuBLAS ", what, " failed (status ", static_cast<int>(st),
                  ")");
  }
};

template <typename T>
void run_dense(const DenseBaselineArgs& a, cublasHandle_t handle, cudaStream_t stream,
               void* workspace, cudaDataType_t type) {
  const int64_t batch = a.q.shape[0] * a.q.shape[1], n = a.q.shape[2], d = a.q.shape[3];
  const int64_t nn = n * n, nd = n * d;
  auto* scores = static_cast<float*>(workspace);            // fp32 n x n
  auto* probs = reinterpret_cast<T*>(scores + batch * nn);  // T n x n
  T* ds = a.backward ? probs + batch * nn : nullptr;        // T n x n
  auto* delta = a.backward ? reinterpret_cast<float*>(ds + batch * nn) : nullptr;
  const Gemm g{handle, type, batch};
  const cudaDataType_t f32 = CUDA_R_32F;
  const void *q = a.q.data, *k = a.k.data, *v = a.v.data;
  g.run(CUBLAS_OP_T, CUBLAS_OP_N, n, n, d, a.scale, k, type, d, nd, q, type, d, nd, scores, f32, n,
        nn, "S = Q K^T");
  softmax_kernel<T>
      <<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(batch)), 256, 0, stream>>>(
          scores, probs, static_cast<float*>(a.lse.data), n);
  check_cuda(cudaGetLastError(), "dense softmax launch");
  g.run(CUBLAS_OP_N, CUBLAS_OP_N, d, n, n, 1.0f, v, type, d, nd, probs, type, n, nn, a.out.data,
        type, d, nd, "O = P V");
  if (!a.backward) return;
  const void* dout = a.dout.data;
  g.run(CUBLAS_OP_N, CUBLAS_OP_T, d, n, n, 1.0f, dout, type, d, nd, probs, type, n, nn, a.dv.data,
        type, d, nd, "dV = P^T dO");
  g.run(CUBLAS_OP_T, CUBLAS_OP_N, n, n, d, 1.0f, v, type, d, nd, dout, type, d, nd, scores, f32, n,
        nn, "dP = dO V^T");
  delta_kernel<T><<<static_cast<unsigned>((batch * n + 3) / 4), 128, 0, stream>>>(
      static_cast<const T*>(a.out.data), static_cast<const T*>(dout), delta, batch * n,
      static_cast<int>(d));
  ds_kernel<T><<<static_cast<unsigned>((batch * nn + 255) / 256), 256, 0, stream>>>(
      probs, scores, delta, ds, n, batch * nn);
  check_cuda(cudaGetLastError(), "dense backward launch");
  g.run(CUBLAS_OP_N, CUBLAS_OP_N, d, n, n, a.scale, k, type, d, nd, ds, type, n, nn, a.dq.data,
        type, d, nd, "dQ = dS K");
  g.run(CUBLAS_OP_N, CUBLAS_OP_T, d, n, n, a.scale, q, type, d, nd, ds, type, n, nn, a.dk.data,
        type, d, nd, "dK = dS^T Q");
}

bool contiguous(const TensorView& t) {
  return t.strides[3] == 1 && t.strides[2] == t.shape[3] &&
         t.strides[1] == t.shape[2] * t.shape[3] && t.strides[0] == t.shape[1] * t.strides[1];
}

}  // namespace

std::string dense_baseline_check(const DenseBaselineArgs& a) {
  if (a.q.dtype != SPARSE_DTYPE_F32 && a.q.dtype != SPARSE_DTYPE_BF16 &&
      a.q.dtype != SPARSE_DTYPE_F16)
    return "the cuBLAS dense baseline computes fp32, bf16 and fp16";
  if (a.q.shape[0] * a.q.shape[1] > 65535)
    return "the cuBLAS dense baseline supports at most 65535 batch x heads";
  if (a.q.shape[2] > 2147483647 || a.q.shape[3] > 2147483647)
    return "the cuBLAS dense baseline needs seq_len and head_dim below 2^31";
  if (a.lse.data != nullptr && (a.lse.strides[2] != 1 || a.lse.strides[1] != a.lse.shape[2] ||
                                a.lse.strides[0] != a.lse.shape[1] * a.lse.shape[2]))
    return "the cuBLAS dense baseline needs a contiguous lse";
  for (const TensorView* t : {&a.q, &a.k, &a.v, &a.out})
    if (!contiguous(*t)) return "the cuBLAS dense baseline needs contiguous tensors";
  if (a.backward)
    for (const TensorView* t : {&a.dout, &a.dq, &a.dk, &a.dv})
      if (!contiguous(*t)) return "the cuBLAS dense baseline needs contiguous tensors";
  return {};
}

size_t dense_baseline_workspace(const DenseBaselineArgs& a) {
  const auto batch = static_cast<size_t>(a.q.shape[0] * a.q.shape[1]);
  const auto n = static_cast<size_t>(a.q.shape[2]);
  const size_t elem = a.q.dtype == SPARSE_DTYPE_F32 ? 4 : 2;
  size_t bytes = batch * n * n * (4 + elem);
  if (a.backward) bytes += batch * n * n * elem + batch * n * 4;
  return bytes;
}

void dense_baseline_run(const DenseBaselineArgs& a, cublasHandle_t handle, cudaStream_t stream,
                        void* workspace) {
  switch (a.q.dtype) {
    case SPARSE_DTYPE_F32:
      run_dense<float>(a, handle, stream, workspace, CUDA_R_32F);
      break;
    case SPARSE_DTYPE_BF16:
      run_dense<__nv_bfloat16>(a, handle, stream, workspace, CUDA_R_16BF);
      break;
    case SPARSE_DTYPE_F16:
      run_dense<__half>(a, handle, stream, workspace, CUDA_R_16F);
      break;
    default:
      throw_error(SPARSE_ERR_UNSUPPORTED, "dense baseline dtype");
  }
}

}  // namespace sparse::cuda
