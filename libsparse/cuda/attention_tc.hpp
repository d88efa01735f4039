// Declarations of the tensor-core (bf16 / fp16) attention launchers; the definitions are in
// attention_tc.cuh and are instantiated once per (dtype, head_dim) in attention_tc_*_d*.cu.
#pragma once

#include <cuda_runtime.h>

#include "libsparse/backend.hpp"

namespace sparse::cuda {

struct DeviceLayout;

namespace tc {
template <typename T, int D>
void forward(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream);
// The second forward kernel (attention_tc_forward_v2.cuh): the same results, cp.async pipelining
// and ldmatrix (SPARSE_CUDA_TC_FORWARD=2).
template <typename T, int D>
void forward_v2(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream);
template <typename T, int D>
void backward(const DeviceLayout& dl, const AttentionBackwardArgs& a, float* delta,
              cudaStream_t stream);
}  // namespace tc

}  // namespace sparse::cuda
