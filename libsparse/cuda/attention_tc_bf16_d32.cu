// Tensor-core attention kernels, bf16, head_dim 32 (one instance per file so that nvcc
// compiles them in parallel).
#include "libsparse/cuda/attention_tc.cuh"

namespace sparse::cuda::tc {
SPARSE_TC_INSTANTIATE(__nv_bfloat16, 32)
}  // namespace sparse::cuda::tc
