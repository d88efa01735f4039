// The model's matrix products through cuBLAS (cublasGemmEx, fp32 inputs and outputs, fp32
// accumulation, no TF32), and the bias epilogue. The operands are row-major; cuBLAS sees each
// row-major matrix as its column-major transpose, so y = x w is computed as y^T = w^T x^T.
#include <climits>

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

// C (m x n, column-major, ldc) = op(A) op(B) + beta C.
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
          int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  if (m == 0 || n == 0) return;
  const float alpha = 1.0f;
  const cublasStatus_t st =
      cublasGemmEx(h, ta, tb, as_int(m, "m"), as_int(n, "n"), as_int(k, "k"), &alpha, a, CUDA_R_32F,
                   as_int(lda, "lda"), b, CUDA_R_32F, as_int(ldb, "ldb"), &beta, c, CUDA_R_32F,
                   as_int(ldc, "ldc"), CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
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

void gemm_xw(cublasHandle_t h, const float* x, const float* w, int64_t rows, int64_t in,
             int64_t out, float* y, float beta) {
  gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, out, rows, in, w, out, x, in, beta, y, out);
}

void gemm_xwt(cublasHandle_t h, const float* x, const float* w, int64_t rows, int64_t in,
              int64_t out, float* y, float beta) {
  gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, w, in, x, in, beta, y, out);
}

void gemm_dyw_t(cublasHandle_t h, const float* dy, const float* w, int64_t rows, int64_t in,
                int64_t out, float* dx, float beta) {
  gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, in, rows, out, w, out, dy, out, beta, dx, in);
}

void gemm_xt_dy(cublasHandle_t h, const float* x, const float* dy, int64_t rows, int64_t in,
                int64_t out, float* dw, float beta) {
  gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, out, in, rows, dy, out, x, in, beta, dw, out);
}

void add_bias(const float* b, int64_t rows, int64_t cols, float* y, cudaStream_t s) {
  if (rows * cols == 0) return;
  add_bias_kernel<<<blocks_for(rows * cols), kBlock, 0, s>>>(b, rows, cols, y);
  check_launch("add_bias_kernel");
}

}  // namespace sparse::cuda::model_ops
