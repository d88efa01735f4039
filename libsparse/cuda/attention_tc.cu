// Dispatch of the tensor-core (bf16 / fp16) attention kernels by dtype, head_dim and block size.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "libsparse/cuda/attention_cuda.hpp"
#include "libsparse/cuda/attention_tc.hpp"
#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/cuda/device_layout.hpp"
#include "libsparse/error.hpp"
#include "libsparse/layout.hpp"

namespace sparse::cuda {
namespace {

template <typename T, int D>
void forward_dim(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream,
                 int version) {
  if (version == 2)
    tc::forward_v2<T, D>(dl, a, stream);
  else
    tc::forward<T, D>(dl, a, stream);
}

template <typename T>
void forward_typed(const DeviceLayout& dl, const AttentionForwardArgs& a, cudaStream_t stream,
                   int version) {
  switch (a.q.shape[3]) {
    case 32:
      forward_dim<T, 32>(dl, a, stream, version);
      break;
    case 64:
      forward_dim<T, 64>(dl, a, stream, version);
      break;
    case 128:
      forward_dim<T, 128>(dl, a, stream, version);
      break;
    default:
      break;  // rejected by tensor_core_support()
  }
}

template <typename T>
void backward_typed(const DeviceLayout& dl, const AttentionBackwardArgs& a, float* delta,
                    cudaStream_t stream) {
  switch (a.q.shape[3]) {
    case 32:
      tc::backward<T, 32>(dl, a, delta, stream);
      break;
    case 64:
      tc::backward<T, 64>(dl, a, delta, stream);
      break;
    case 128:
      tc::backward<T, 128>(dl, a, delta, stream);
      break;
    default:
      break;
  }
}

// Block size and head_dim were checked by CudaBackend::supports_attention().
void check_launch(int64_t batch, const DeviceLayout& dl) {
  if (batch > 65535 || dl.num_heads > 65535)
    throw_error(SPARSE_ERR_UNSUPPORTED,
                "the CUDA kernels support at most 65535 batch entries "
                "and 65535 heads per call");
}

}  // namespace

std::string tensor_core_support(int block, int64_t head_dim) {
  if (head_dim != 32 && head_dim != 64 && head_dim != 128)
    return "the bf16/fp16 tensor-core attention kernels support head_dim 32, 64 and 128 (got " +
           std::to_string(head_dim) + "); use fp32 tensors for other sizes";
  if (block != 16 && block != 32 && block != 64 && block != 128)
    return "the bf16/fp16 tensor-core attention kernels support block sizes 16, 32, 64 and 128 "
           "(got " +
           std::to_string(block) + ")";
  return {};
}

void attention_forward_tc(const DeviceLayout& dl, const AttentionForwardArgs& a,
                          cudaStream_t stream, int forward_version) {
  check_launch(a.q.shape[0], dl);
  if (a.q.dtype == SPARSE_DTYPE_BF16)
    forward_typed<__nv_bfloat16>(dl, a, stream, forward_version);
  else if (a.q.dtype == SPARSE_DTYPE_F16)
    forward_typed<__half>(dl, a, stream, forward_version);
  else
    throw_error(SPARSE_ERR_INTERNAL, "attention_forward_tc called with a non-16-bit dtype");
  check_cuda(cudaGetLastError(), "tensor-core attention forward launch");
}

void attention_backward_tc(const DeviceLayout& dl, const AttentionBackwardArgs& a, float* delta,
                           cudaStream_t stream) {
  check_launch(a.q.shape[0], dl);
  if (a.q.dtype == SPARSE_DTYPE_BF16)
    backward_typed<__nv_bfloat16>(dl, a, delta, stream);
  else if (a.q.dtype == SPARSE_DTYPE_F16)
    backward_typed<__half>(dl, a, delta, stream);
  else
    throw_error(SPARSE_ERR_INTERNAL, "attention_backward_tc called with a non-16-bit dtype");
  check_cuda(cudaGetLastError(), "tensor-core attention backward launch");
}

}  // namespace sparse::cuda
