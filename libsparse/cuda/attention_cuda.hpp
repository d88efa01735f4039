// Launchers of the CUDA attention kernels (host side).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "libsparse/backend.hpp"

namespace sparse::cuda {

struct DeviceLayout;
}  // namespace sparse::cuda
namespace sparse {
class Layout;
}
namespace sparse::cuda {

constexpr int64_t kMaxHeadDim = 128;

// All tensors in device memory, fp32; `delta` is a device buffer of batch * heads * seq_len floats.
void attention_forward_fp32(const DeviceLayout& layout, const AttentionForwardArgs& args,
                            cudaStream_t stream);
void attention_backward_fp32(const DeviceLayout& layout, const AttentionBackwardArgs& args,
                             float* delta, cudaStream_t stream);

// bf16 / fp16 on tensor cores (attention_tc.cu): q, k, v, out, dout, dq, dk, dv of the 16-bit
// dtype, lse fp32; head_dim 32, 64 or 128 and block sizes 16..128 (tensor_core_support() says
// why not, empty when supported). forward_version 2 runs the second forward kernel
// (attention_tc_forward_v2.cuh, the same results), any other value the first.
std::string tensor_core_support(int block, int64_t head_dim);
void attention_forward_tc(const DeviceLayout& layout, const AttentionForwardArgs& args,
                          cudaStream_t stream, int forward_version = 1);
void attention_backward_tc(const DeviceLayout& layout, const AttentionBackwardArgs& args,
                           float* delta, cudaStream_t stream);

// The dense cuBLAS baseline (dense_cublas.cu): why it cannot run (empty when it can), its
// workspace, and the run itself on the backend's handle and stream.
std::string dense_baseline_check(const DenseBaselineArgs& args);
size_t dense_baseline_workspace(const DenseBaselineArgs& args);
void dense_baseline_run(const DenseBaselineArgs& args, cublasHandle_t handle, cudaStream_t stream,
                        void* workspace);

// The 2019-style unfused path, fp32 (attention_unfused.cu). `scores`, `probs` and `dscores` are
// device buffers of unfused_scores_bytes() each; `delta` holds batch * heads * seq_len floats.
size_t unfused_scores_bytes(const Layout& layout, int64_t batch);
void attention_forward_unfused(const DeviceLayout& layout, const AttentionForwardArgs& args,
                               float* scores, cudaStream_t stream);
void attention_backward_unfused(const DeviceLayout& layout, const AttentionBackwardArgs& args,
                                float* delta, float* probs, float* dscores, cudaStream_t stream);

}  // namespace sparse::cuda
