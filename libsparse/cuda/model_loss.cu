// Softmax cross-entropy, one block per row: the row's maximum and sum of exponentials by fixed
// block reductions, the loss -log softmax(z)[target] in nats (written per row, in double; the
// caller adds the rows in order) and, when asked, dlogits = (softmax - onehot) * grad_scale,
// which may overwrite the logits.
#include "libsparse/cuda/model_common.cuh"
#include "libsparse/cuda/model_kernels.hpp"

namespace sparse::cuda::model_ops {
namespace {

__global__ void softmax_cross_entropy_kernel(const float* logits, const uint8_t* targets,
                                             int64_t vocab, float grad_scale, float* dlogits,
                                             double* row_loss) {
  __shared__ float scratch[kBlock];
  const int64_t r = blockIdx.x;
  const float* z = logits + r * vocab;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < vocab; c += kBlock) m = fmaxf(m, z[c]);
  m = block_max(m, scratch);
  float sum = 0;
  for (int64_t c = threadIdx.x; c < vocab; c += kBlock) sum += expf(z[c] - m);
  sum = block_sum(sum, scratch);
  const float lse = m + logf(sum);
  const int target = targets[r];
  const float zt = z[target];
  // Every thread has read what it needs from z before any writes dlogits (block_sum ends with
  // a barrier, and zt is read before the one below).
  __syncthreads();
  if (threadIdx.x == 0) row_loss[r] = static_cast<double>(lse - zt);
  if (dlogits == nullptr) return;
  float* g = dlogits + r * vocab;
  for (int64_t c = threadIdx.x; c < vocab; c += kBlock) {
    const float p = expf(z[c] - lse) * grad_scale;
    g[c] = c == target ? p - grad_scale : p;
  }
}

}  // namespace

void softmax_cross_entropy(const float* logits, const uint8_t* targets, int64_t rows, int64_t vocab,
                           float grad_scale, float* dlogits, double* row_loss, cudaStream_t s) {
  if (rows == 0) return;
  softmax_cross_entropy_kernel<<<static_cast<unsigned>(rows), kBlock, 0, s>>>(
      logits, targets, vocab, grad_scale, dlogits, row_loss);
  check_launch("softmax_cross_entropy_kernel");
}

}  // namespace sparse::cuda::model_ops
