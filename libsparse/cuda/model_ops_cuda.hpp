// The CUDA backend's table of model operations (fp32), issued on the backend's stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>

#include "libsparse/model_ops.hpp"
#include "sparse/common.h"

namespace sparse::cuda {

// `products`: the matrix products' input type (SPARSE_DTYPE_F32, or SPARSE_DTYPE_BF16 /
// SPARSE_DTYPE_F16 for mixed precision: fp32 storage, 16-bit inputs, fp32 accumulation).
std::unique_ptr<ModelOps<float>> make_cuda_model_ops(int device, cudaStream_t stream,
                                                     cublasHandle_t cublas,
                                                     sparse_dtype products = SPARSE_DTYPE_F32);

}  // namespace sparse::cuda
