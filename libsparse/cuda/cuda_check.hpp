// CUDA error checking for the backend: failures become sparse::Error(SPARSE_ERR_DEVICE).
#pragma once

#include <cuda_runtime.h>

#include "libsparse/error.hpp"

namespace sparse::cuda {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  if (status == cudaErrorMemoryAllocation)
    throw_error(SPARSE_ERR_OUT_OF_MEMORY, what, ": out of device memory");
  throw_error(SPARSE_ERR_DEVICE, what, ": ", cudaGetErrorName(status), " (",
              cudaGetErrorString(status), ")");
}

}  // namespace sparse::cuda
