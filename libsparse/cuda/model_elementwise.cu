// Element-wise model operations, one thread per element (grid-stride loops): GELU, dropout (the
// mask of random.hpp's dropout_keep, the same function the CPU evaluates), residual adds, the
// padded row copy, the Adam/AdamW update on fp32 weights and moments, and the partial sums of
// the squared norm (double, one fixed tree per chunk of kNormChunk elements).
#include "libsparse/cuda/model_common.cuh"
#include "libsparse/cuda/model_kernels.hpp"
#include "libsparse/random.hpp"

namespace sparse::cuda::model_ops {
namespace {

#define SPARSE_GRID_LOOP(i, n)                                                           \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

constexpr float kGeluA = 1.702f;  // gelu(x) = x * sigmoid(1.702 x)

__device__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void gelu_forward_kernel(const float* x, int64_t n, float* y) {
  SPARSE_GRID_LOOP(i, n) { y[i] = x[i] * sigmoid(kGeluA * x[i]); }
}

__global__ void gelu_backward_kernel(const float* x, const float* dy, int64_t n, float* dx) {
  SPARSE_GRID_LOOP(i, n) {
    const float s = sigmoid(kGeluA * x[i]);
    dx[i] = dy[i] * (s + kGeluA * x[i] * s * (1.0f - s));
  }
}

__global__ void dropout_kernel(const float* x, int64_t n, double p, uint64_t seed, float scale,
                               float* y) {
  SPARSE_GRID_LOOP(i, n) {
    y[i] = dropout_keep(seed, static_cast<uint64_t>(i), p) ? x[i] * scale : 0.0f;
  }
}

__global__ void copy_kernel(const float* x, int64_t n, float* y) {
  SPARSE_GRID_LOOP(i, n) { y[i] = x[i]; }
}

__global__ void add_kernel(const float* a, const float* b, int64_t n, float* y) {
  SPARSE_GRID_LOOP(i, n) { y[i] = a[i] + b[i]; }
}

__global__ void accumulate_kernel(float* y, const float* x, int64_t n) {
  SPARSE_GRID_LOOP(i, n) { y[i] += x[i]; }
}

__global__ void copy_rows_kernel(const float* __restrict__ src, int64_t src_stride,
                                 float* __restrict__ dst, int64_t dst_stride, int64_t rows,
                                 int64_t cols) {
  SPARSE_GRID_LOOP(i, rows * dst_stride) {
    const int64_t r = i / dst_stride, c = i % dst_stride;
    dst[i] = c < cols ? src[r * src_stride + c] : 0.0f;
  }
}

__global__ void adam_kernel(float* __restrict__ w, const float* __restrict__ g,
                            float* __restrict__ m, float* __restrict__ v,
                            const uint8_t* __restrict__ decay_mask, int64_t n, ops::AdamStep s) {
  const float one = 1.0f;
  SPARSE_GRID_LOOP(i, n) {
    float gi = g[i] * s.clip;
    const bool decay = decay_mask[i] != 0 && s.weight_decay > 0;
    if (decay && !s.adamw) gi += s.weight_decay * w[i];
    const float mi = s.beta1 * m[i] + (one - s.beta1) * gi;
    const float vi = s.beta2 * v[i] + (one - s.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float update = (mi / s.c1) / (sqrtf(vi / s.c2) + s.epsilon);
    w[i] -= s.lr * (update + (decay && s.adamw ? s.weight_decay * w[i] : 0.0f));
  }
}

__global__ void squared_norm_kernel(const float* __restrict__ x, int64_t n,
                                    double* __restrict__ partial) {
  __shared__ double scratch[kBlock];
  const int64_t begin = blockIdx.x * kNormChunk;
  const int64_t end = begin + kNormChunk < n ? begin + kNormChunk : n;
  double s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlock)
    s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

}  // namespace

void gelu_forward(const float* x, int64_t n, float* y, cudaStream_t s) {
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, n, y);
  check_launch("gelu_forward_kernel");
}

void gelu_backward(const float* x, const float* dy, int64_t n, float* dx, cudaStream_t s) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, dy, n, dx);
  check_launch("gelu_backward_kernel");
}

void dropout(const float* x, int64_t n, double p, uint64_t seed, float* y, cudaStream_t s) {
  if (n == 0) return;
  if (p <= 0.0) {
    if (x != y) {
      copy_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, n, y);
      check_launch("copy_kernel");
    }
    return;
  }
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  dropout_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, n, p, seed, scale, y);
  check_launch("dropout_kernel");
}

void add(const float* a, const float* b, int64_t n, float* y, cudaStream_t s) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n), kBlock, 0, s>>>(a, b, n, y);
  check_launch("add_kernel");
}

void accumulate(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  accumulate_kernel<<<blocks_for(n), kBlock, 0, s>>>(y, x, n);
  check_launch("accumulate_kernel");
}

void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
               int64_t cols, cudaStream_t s) {
  if (rows * dst_stride == 0) return;
  copy_rows_kernel<<<blocks_for(rows * dst_stride), kBlock, 0, s>>>(src, src_stride, dst,
                                                                    dst_stride, rows, cols);
  check_launch("copy_rows_kernel");
}

void adam_update(float* w, const float* g, float* m, float* v, const uint8_t* decay, int64_t n,
                 const ops::AdamStep& step, cudaStream_t s) {
  if (n == 0) return;
  adam_kernel<<<blocks_for(n), kBlock, 0, s>>>(w, g, m, v, decay, n, step);
  check_launch("adam_kernel");
}

void squared_norm_partials(const float* x, int64_t n, double* partial, cudaStream_t s) {
  if (n == 0) return;
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  squared_norm_kernel<<<static_cast<unsigned>(chunks), kBlock, 0, s>>>(x, n, partial);
  check_launch("squared_norm_kernel");
}

}  // namespace sparse::cuda::model_ops
