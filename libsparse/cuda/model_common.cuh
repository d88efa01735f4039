// Helpers shared by the model-operation kernels: launch checks, grid sizes and a block reduction
// whose order depends only on the block size (the kernels fix it at kBlock), so that every sum
// is the same from run to run and does not depend on the device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "libsparse/cuda/cuda_check.hpp"

namespace sparse::cuda::model_ops {

constexpr int kBlock = 256;

// Blocks for n elements at kBlock threads, capped (the kernels loop with a grid stride).
inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kBlock - 1) / kBlock;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

// Sum of one value per thread of a block of exactly kBlock threads, by a fixed binary tree; every
// thread receives the result. `scratch` holds kBlock values.
template <typename A>
__device__ A block_sum(A value, A* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
    __syncthreads();
  }
  const A total = scratch[0];
  __syncthreads();
  return total;
}

template <typename A>
__device__ A block_max(A value, A* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s)
      scratch[threadIdx.x] = fmaxf(scratch[threadIdx.x], scratch[threadIdx.x + s]);
    __syncthreads();
  }
  const A total = scratch[0];
  __syncthreads();
  return total;
}

}  // namespace sparse::cuda::model_ops
