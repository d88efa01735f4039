// Launchers of the CUDA attention kernels (host side).
#pragma once

#include <cuda_runtime.h>

#include "backend.hpp"

namespace sparse::cuda {

struct DeviceLayout;

constexpr int64_t kMaxHeadDim = 128;

// All tensors in device memory, fp32; `delta` is a device buffer of batch * heads * seq_len floats.
void attention_forward_fp32(const DeviceLayout& layout, const AttentionForwardArgs& args,
                            cudaStream_t stream);
void attention_backward_fp32(const DeviceLayout& layout, const AttentionBackwardArgs& args,
                             float* delta, cudaStream_t stream);

}  // namespace sparse::cuda
