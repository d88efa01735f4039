// The model's matrix products through cuBLAS (cublasGemmEx: fp32 inputs, or bf16/fp16 inputs
// for mixed precision; fp32 outputs and fp32 accumulation, no TF32), and the bias epilogue. The
// operands are row-major; cuBLAS sees each row-major matrix as its column-major transpose, so y = x
// w is computed as y^T = w^T x^T.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>

#include "libsparse/cuda/model_common.cuh"
#include "libsparse/cuda/model_kernels.hpp"
#include "libsparse/error.hpp"

namespace sparse::cuda::model_ops {
namespace {

int as_int(int64_t v, const char* what) {
  require(v >= 0 && v <= INT_MAX, "the matrix dimension ", what, " = ", v,
          " exceeds cuBLAS's int range");
  return static_cast<int>(v);
}

__global__ void to_bf16_kernel(const float* __restrict__ x, int64_t n,
                               __nv_bfloat16* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void to_f16_kernel(const float* __restrict__ x, int64_t n, __half* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2half_rn(x[i]);
}

__global__ void from_bf16_kernel(const __nv_bfloat16* __restrict__ x, int64_t n,
                                 float* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __bfloat162float(x[i]);
}

__global__ void from_f16_kernel(const __half* __restrict__ x, int64_t n, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __half2float(x[i]);
}

void round_16(const float* x, int64_t n, cudaDataType type, void* y, cudaStream_t s) {
  if (n == 0) return;
  if (type == CUDA_R_16BF)
    to_bf16_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, n, static_cast<__nv_bfloat16*>(y));
  else
    to_f16_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, n, static_cast<__half*>(y));
  check_launch(type == CUDA_R_16BF ? "to_bf16_kernel" : "to_f16_kernel");
}

// Whether [x, x + n) lies inside the held weights (compared as addresses).
bool in_held_weights(const GemmInputs& g, const float* x, int64_t n) {
  if (g.w32 == nullptr || g.w16 == nullptr) return false;
  const auto lo = reinterpret_cast<uintptr_t>(g.w32), p = reinterpret_cast<uintptr_t>(x);
  return p >= lo && (p - lo) % sizeof(float) == 0 &&
         static_cast<int64_t>((p - lo) / sizeof(float)) + n <= g.wn;
}

// The operand the product reads: x itself for fp32 inputs and for x already in 16 bits; the held
// weights' rounded copy when x lies inside them; else x rounded to g.type in dst.
const void* operand(const GemmInputs& g, Operand x, int64_t n, void* dst) {
  if (x.is16) {
    require(g.type != CUDA_R_32F, "internal: a 16-bit operand for an fp32 product");
    return x.data;
  }
  const auto* x32 = static_cast<const float*>(x.data);
  if (g.type == CUDA_R_32F || n == 0) return x32;
  if (in_held_weights(g, x32, n))
    return static_cast<const uint16_t*>(g.w16) + (x32 - g.w32);  // 2-byte elements
  round_16(x32, n, g.type, dst, g.stream);
  return dst;
}

// C (m x n, column-major, ldc) = op(A) op(B) + beta C. A is m x k (k x m transposed) with
// leading dimension lda, B is k x n (n x k transposed) with ldb; both are dense (lda and ldb are
// their rows), so A holds lda * (ta == N ? k : m) elements and B ldb * (tb == N ? n : k).
void gemm(const GemmInputs& g, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
          int64_t k, Operand a, int64_t lda, Operand b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  if (m == 0 || n == 0) return;
  const float alpha = 1.0f;
  const void* ga = operand(g, a, lda * (ta == CUBLAS_OP_N ? k : m), g.a16);
  const void* gb = operand(g, b, ldb * (tb == CUBLAS_OP_N ? n : k), g.b16);
  // fp32 inputs: the pedantic mode (no TF32, no reduced-precision shortcuts); 16-bit inputs:
  // fp32 accumulation on tensor cores.
  const cublasComputeType_t compute =
      g.type == CUDA_R_32F ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  const cublasStatus_t st =
      cublasGemmEx(g.handle, ta, tb, as_int(m, "m"), as_int(n, "n"), as_int(k, "k"), &alpha, ga,
                   g.type, as_int(lda, "lda"), gb, g.type, as_int(ldb, "ldb"), &beta, c, CUDA_R_32F,
                   as_int(ldc, "ldc"), compute, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS)
    throw_error(SPARSE_ERR_DEVICE, "cublasGemmEx failed (status ", static_cast<int>(st), ", m ", m,
                ", n ", n, ", k ", k, ")");
}

__global__ void add_bias_kernel(const float* __restrict__ b, int64_t rows, int64_t cols,
                                float* __restrict__ y) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += b[i % cols];
}

}  // namespace

void gemm_xw(const GemmInputs& g, Operand x, Operand w, int64_t rows, int64_t in, int64_t out,
             float* y, float beta) {
  gemm(g, CUBLAS_OP_N, CUBLAS_OP_N, out, rows, in, w, out, x, in, beta, y, out);
}

void gemm_xwt(const GemmInputs& g, Operand x, Operand w, int64_t rows, int64_t in, int64_t out,
              float* y, float beta) {
  gemm(g, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, w, in, x, in, beta, y, out);
}

void gemm_dyw_t(const GemmInputs& g, Operand dy, Operand w, int64_t rows, int64_t in, int64_t out,
                float* dx, float beta) {
  gemm(g, CUBLAS_OP_T, CUBLAS_OP_N, in, rows, out, w, out, dy, out, beta, dx, in);
}

void gemm_xt_dy(const GemmInputs& g, Operand x, Operand dy, int64_t rows, int64_t in, int64_t out,
                float* dw, float beta) {
  gemm(g, CUBLAS_OP_N, CUBLAS_OP_T, out, in, rows, dy, out, x, in, beta, dw, out);
}

void round_to_16(const float* x, int64_t n, cudaDataType type, void* y, cudaStream_t s) {
  round_16(x, n, type, y, s);
}

void widen_from_16(const void* x, int64_t n, cudaDataType type, float* y, cudaStream_t s) {
  if (n == 0) return;
  if (type == CUDA_R_16BF)
    from_bf16_kernel<<<blocks_for(n), kBlock, 0, s>>>(static_cast<const __nv_bfloat16*>(x), n, y);
  else
    from_f16_kernel<<<blocks_for(n), kBlock, 0, s>>>(static_cast<const __half*>(x), n, y);
  check_launch(type == CUDA_R_16BF ? "from_bf16_kernel" : "from_f16_kernel");
}

void add_bias(const float* b, int64_t rows, int64_t cols, float* y, cudaStream_t s) {
  if (rows * cols == 0) return;
  add_bias_kernel<<<blocks_for(rows * cols), kBlock, 0, s>>>(b, rows, cols, y);
  check_launch("add_bias_kernel");
}

}  // namespace sparse::cuda::model_ops
