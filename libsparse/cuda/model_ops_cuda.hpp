// The CUDA backend's table of model operations (fp32), issued on the backend's stream.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "libsparse/model_ops.hpp"
#include "sparse/common.h"

namespace sparse::cuda {

// `products`: the matrix products' input type (SPARSE_DTYPE_F32, or SPARSE_DTYPE_BF16 /
// SPARSE_DTYPE_F16 for mixed precision: fp32 storage, 16-bit inputs, fp32 accumulation).
// `lt`: the backend's cuBLASLt handle for forward products with a bias (the bias epilogue), or
// null with the reason in `lt_off`; `lt_disabled` (SPARSE_CUDA_LT=0 in the environment when the
// backend was made) turns the epilogue off too, leaving cublasGemmEx and the bias kernel.
std::unique_ptr<ModelOps<float>> make_cuda_model_ops(int device, cudaStream_t stream,
                                                     cublasHandle_t cublas, cublasLtHandle_t lt,
                                                     const std::string& lt_off, bool lt_disabled,
                                                     sparse_dtype products = SPARSE_DTYPE_F32);

// How a table made by make_cuda_model_ops ran its forward products with a bias (for tests and
// the backend's description); all empty for any other table.
struct LinearBiasStats {
  bool lt_enabled = false;     // the epilogue may be used (a handle, not disabled)
  int64_t lt_calls = 0;        // products through the bias epilogue
  int64_t fallback_calls = 0;  // products through cublasGemmEx + the bias kernel
  std::string note;            // why the epilogue was not used (the first reason), or empty
};
LinearBiasStats linear_bias_stats(const ModelOps<float>& ops);

}  // namespace sparse::cuda
