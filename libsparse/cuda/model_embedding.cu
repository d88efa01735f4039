// Embeddings: h[b, t] = (t == 0 ? start : token_table[tokens[b, t - 1]]) + the position tables.
// The backward is deterministic without atomics: the rows are grouped by the table row they feed
// (a stable counting sort by previous token, with the sequence starts as group 256), and one
// thread per (table row, column) adds its rows in increasing order onto the existing gradient,
// which is the CPU's order. A position table row v of dimension k collects the positions whose
// coordinate k is v, enumerated in increasing order.
#include "libsparse/cuda/model_common.cuh"
#include "libsparse/cuda/model_kernels.hpp"
#include "libsparse/error.hpp"

namespace sparse::cuda::model_ops {
namespace {

constexpr int kMaxDims = 4;
constexpr int kGroups = 257;  // 256 token values and the start row

struct Tables {
  const float* p[kMaxDims];
};
struct GradTables {
  float* p[kMaxDims];
};

// ops::PositionShape::coordinate on the device.
__device__ int64_t coordinate(const ops::PositionShape& shape, int64_t t, int k) {
  for (int j = shape.num_dims - 1; j > k; --j) t /= shape.sizes[j];
  return t % shape.sizes[k];
}

__global__ void embedding_forward_kernel(const uint8_t* __restrict__ tokens, int64_t seq,
                                         int64_t dim, const float* __restrict__ table,
                                         const float* __restrict__ start, Tables pos,
                                         ops::PositionShape shape, float* __restrict__ h) {
  const int64_t r = blockIdx.x;
  const int64_t t = r % seq;
  const float* src = t == 0 ? start : table + static_cast<int64_t>(tokens[r - 1]) * dim;
  float* dst = h + r * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float v = src[c];
    for (int k = 0; k < shape.num_dims; ++k) v += pos.p[k][coordinate(shape, t, k) * dim + c];
    dst[c] = v;
  }
}

// Group of row r: the previous token, or 256 at a sequence start.
__device__ int group_of(const uint8_t* tokens, int64_t seq, int64_t r) {
  return r % seq == 0 ? 256 : tokens[r - 1];
}

// One block of kGroups threads: thread g counts its rows, thread 0 takes the exclusive prefix
// sums, then thread g lists its rows in increasing order.
__global__ void group_rows_kernel(const uint8_t* __restrict__ tokens, int64_t rows, int64_t seq,
                                  int32_t* __restrict__ order, int32_t* __restrict__ offsets) {
  const int g = threadIdx.x;
  int32_t count = 0;
  for (int64_t r = 0; r < rows; ++r) count += group_of(tokens, seq, r) == g;
  offsets[g + 1] = count;
  __syncthreads();
  if (g == 0) {
    offsets[0] = 0;
    for (int i = 1; i <= kGroups; ++i) offsets[i] += offsets[i - 1];
  }
  __syncthreads();
  int32_t at = offsets[g];
  for (int64_t r = 0; r < rows; ++r)
    if (group_of(tokens, seq, r) == g) order[at++] = static_cast<int32_t>(r);
}

// grid (groups, column blocks)
__global__ void token_grad_kernel(const float* __restrict__ dh, int64_t dim,
                                  const int32_t* __restrict__ order,
                                  const int32_t* __restrict__ offsets, float* __restrict__ dtable,
                                  float* __restrict__ dstart) {
  const int g = blockIdx.x;
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= dim) return;
  float* dst = g == 256 ? dstart + c : dtable + g * dim + c;
  float acc = *dst;
  for (int32_t e = offsets[g]; e < offsets[g + 1]; ++e) acc += dh[order[e] * dim + c];
  *dst = acc;
}

// grid (rows of table k, column blocks): rows b * seq + t with coordinate(t, k) == v, in
// increasing order: t = q * inner + i for q = v, v + sizes[k], ... and i < inner.
__global__ void position_grad_kernel(const float* __restrict__ dh, int64_t batch, int64_t seq,
                                     int64_t dim, int64_t size, int64_t inner,
                                     float* __restrict__ dtable) {
  const int64_t v = blockIdx.x;
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= dim) return;
  float acc = dtable[v * dim + c];
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t q = v; q * inner < seq; q += size)
      for (int64_t i = 0; i < inner && q * inner + i < seq; ++i)
        acc += dh[(b * seq + q * inner + i) * dim + c];
  dtable[v * dim + c] = acc;
}

}  // namespace

void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                       const float* token_table, const float* start, const float* const* pos_tables,
                       const ops::PositionShape& shape, float* h, cudaStream_t s) {
  if (batch * seq == 0) return;
  require(shape.num_dims >= 0 && shape.num_dims <= kMaxDims, "internal: ", shape.num_dims,
          " position dimensions");
  Tables pos{};
  for (int k = 0; k < shape.num_dims; ++k) pos.p[k] = pos_tables[k];
  embedding_forward_kernel<<<static_cast<unsigned>(batch * seq), kBlock, 0, s>>>(
      tokens, seq, dim, token_table, start, pos, shape, h);
  check_launch("embedding_forward_kernel");
}

void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                        const float* dh, const ops::PositionShape& shape, float* d_token_table,
                        float* d_start, float* const* d_pos_tables, int32_t* order,
                        int32_t* offsets, cudaStream_t s) {
  const int64_t rows = batch * seq;
  if (rows == 0 || dim == 0) return;
  require(rows <= INT32_MAX, "internal: ", rows,
          " rows exceed the embedding backward's int32 row index");
  group_rows_kernel<<<1, kGroups, 0, s>>>(tokens, rows, seq, order, offsets);
  check_launch("group_rows_kernel");
  const unsigned col_blocks = static_cast<unsigned>((dim + kBlock - 1) / kBlock);
  token_grad_kernel<<<dim3(kGroups, col_blocks), kBlock, 0, s>>>(dh, dim, order, offsets,
                                                                 d_token_table, d_start);
  check_launch("token_grad_kernel");
  for (int k = 0; k < shape.num_dims; ++k) {
    int64_t inner = 1;
    for (int j = k + 1; j < shape.num_dims; ++j) inner *= shape.sizes[j];
    position_grad_kernel<<<dim3(static_cast<unsigned>(shape.sizes[k]), col_blocks), kBlock, 0, s>>>(
        dh, batch, seq, dim, shape.sizes[k], inner, d_pos_tables[k]);
    check_launch("position_grad_kernel");
  }
}

}  // namespace sparse::cuda::model_ops
