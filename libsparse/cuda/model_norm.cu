// Layer normalisation (one block per row, fp32 statistics by two passes as on the CPU) and the
// fixed-order column sums that reduce parameter gradients over rows: the rows are cut into
// chunks of kColumnChunk, each chunk is summed in row order by one thread per column, and the
// chunk sums are added in chunk order to the existing gradient.
#include "libsparse/cuda/model_common.cuh"
#include "libsparse/cuda/model_kernels.hpp"
#include "libsparse/error.hpp"

namespace sparse::cuda::model_ops {
namespace {

__global__ void layer_norm_forward_kernel(const float* __restrict__ x,
                                          const float* __restrict__ gamma,
                                          const float* __restrict__ beta, int64_t dim, float eps,
                                          float* __restrict__ y, float* __restrict__ mean,
                                          float* __restrict__ rstd) {
  __shared__ float scratch[kBlock];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float* yr = y + r * dim;
  float s = 0;
  for (int64_t c = threadIdx.x; c < dim; c += kBlock) s += xr[c];
  const float m = block_sum(s, scratch) / static_cast<float>(dim);
  float v = 0;
  for (int64_t c = threadIdx.x; c < dim; c += kBlock) v += (xr[c] - m) * (xr[c] - m);
  const float var = block_sum(v, scratch) / static_cast<float>(dim);
  const float rs = 1.0f / sqrtf(var + eps);
  for (int64_t c = threadIdx.x; c < dim; c += kBlock) yr[c] = (xr[c] - m) * rs * gamma[c] + beta[c];
  if (threadIdx.x == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma.
__global__ void layer_norm_dx_kernel(const float* dy, const float* __restrict__ x,
                                     const float* __restrict__ gamma,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     int64_t dim, float* dx) {
  __shared__ float scratch[kBlock];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  const float* dyr = dy + r * dim;
  float* dxr = dx + r * dim;
  const float m = mean[r], s = rstd[r];
  float sg = 0, sgx = 0;
  for (int64_t c = threadIdx.x; c < dim; c += kBlock) {
    const float g = dyr[c] * gamma[c];
    sg += g;
    sgx += g * (xr[c] - m) * s;
  }
  const float mg = block_sum(sg, scratch) / static_cast<float>(dim);
  const float mgx = block_sum(sgx, scratch) / static_cast<float>(dim);
  for (int64_t c = threadIdx.x; c < dim; c += kBlock) {
    const float xhat = (xr[c] - m) * s;
    dxr[c] = s * (dyr[c] * gamma[c] - mg - xhat * mgx);
  }
}

// Partial sums of chunk blockIdx.x (column_partials_grid: the chunks on x, whose limit is 2^31 - 1,
// not on y, whose 65535 chunks are only 8.4M rows): one thread per column of column block
// blockIdx.y, rows of the chunk in order. With `x` set, the summand is dy * xhat (dgamma),
// otherwise dy.
__global__ void column_partials_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                       const float* __restrict__ mean,
                                       const float* __restrict__ rstd, int64_t rows, int64_t cols,
                                       float* __restrict__ partial) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t chunk = blockIdx.x;
  const int64_t r0 = chunk * kColumnChunk;
  const int64_t r1 = r0 + kColumnChunk < rows ? r0 + kColumnChunk : rows;
  float s = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const float g = dy[r * cols + c];
    s += x != nullptr ? g * (x[r * cols + c] - mean[r]) * rstd[r] : g;
  }
  partial[chunk * cols + c] = s;
}

__global__ void column_finish_kernel(const float* __restrict__ partial, int64_t chunks,
                                     int64_t cols, float* __restrict__ sums) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float s = sums[c];
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
  sums[c] = s;
}

void column_reduce(const float* dy, const float* x, const float* mean, const float* rstd,
                   int64_t rows, int64_t cols, float* sums, float* scratch, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const Grid2 g = column_partials_grid(rows, cols, kBlock);
  require(grid_fits(g), "the column sums of ", rows, " x ", cols,
          " exceed the CUDA grid (chunks of ", kColumnChunk, " rows ", g.x, ", column blocks ", g.y,
          ")");
  column_partials_kernel<<<dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y)), kBlock, 0,
                           s>>>(dy, x, mean, rstd, rows, cols, scratch);
  check_launch("column_partials_kernel");
  column_finish_kernel<<<static_cast<unsigned>(g.y), kBlock, 0, s>>>(scratch, g.x, cols, sums);
  check_launch("column_finish_kernel");
}

}  // namespace

void layer_norm_forward(const float* x, const float* gamma, const float* beta, int64_t rows,
                        int64_t dim, float eps, float* y, float* mean, float* rstd,
                        cudaStream_t s) {
  if (rows == 0) return;
  layer_norm_forward_kernel<<<static_cast<unsigned>(rows), kBlock, 0, s>>>(x, gamma, beta, dim, eps,
                                                                           y, mean, rstd);
  check_launch("layer_norm_forward_kernel");
}

void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                         const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                         float* dbeta, float* scratch, cudaStream_t s) {
  if (rows == 0) return;
  // The parameter gradients first: dx may alias dy.
  column_reduce(dy, x, mean, rstd, rows, dim, dgamma, scratch, s);
  column_reduce(dy, nullptr, nullptr, nullptr, rows, dim, dbeta, scratch, s);
  layer_norm_dx_kernel<<<static_cast<unsigned>(rows), kBlock, 0, s>>>(dy, x, gamma, mean, rstd, dim,
                                                                      dx);
  check_launch("layer_norm_dx_kernel");
}

void column_sums(const float* m, int64_t rows, int64_t cols, float* sums, float* scratch,
                 cudaStream_t s) {
  column_reduce(m, nullptr, nullptr, nullptr, rows, cols, sums, scratch, s);
}

}  // namespace sparse::cuda::model_ops
