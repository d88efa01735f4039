// The CUDA backend's table of model operations (fp32), issued on the backend's stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>

#include "libsparse/model_ops.hpp"

namespace sparse::cuda {

std::unique_ptr<ModelOps<float>> make_cuda_model_ops(int device, cudaStream_t stream,
                                                     cublasHandle_t cublas);

}  // namespace sparse::cuda
