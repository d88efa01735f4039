// Tensor-core attention kernels, f16, head_dim 64 (one instance per file so that nvcc
// compiles them in parallel).
#include "libsparse/cuda/attention_tc_forward_v2.cuh"

namespace sparse::cuda::tc {
SPARSE_TC_INSTANTIATE(__half, 64)
SPARSE_TC_INSTANTIATE_FORWARD_V2(__half, 64)
}  // namespace sparse::cuda::tc
