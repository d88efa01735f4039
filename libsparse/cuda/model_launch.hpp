// Launch shapes of the CUDA model kernels as plain host arithmetic (no CUDA header), so that the
// grid limits they must respect can be checked on any machine.
#pragma once

#include <cstdint>

namespace sparse::cuda::model_ops {

// CUDA's grid limits (every compute capability the backend builds for): gridDim.x up to
// 2^31 - 1, gridDim.y and gridDim.z up to 65535.
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridYZ = 65535;

// Rows per partial sum of the two-pass column reductions (a constant: it fixes the order).
constexpr int64_t kColumnChunk = 128;
inline int64_t column_chunks(int64_t rows) { return (rows + kColumnChunk - 1) / kColumnChunk; }
// Floats of scratch the column reductions need for `rows` x `cols`.
inline int64_t column_scratch(int64_t rows, int64_t cols) { return column_chunks(rows) * cols; }

struct Grid2 {
  int64_t x = 1, y = 1;
};
inline bool grid_fits(Grid2 g) {
  return g.x >= 1 && g.x <= kMaxGridX && g.y >= 1 && g.y <= kMaxGridYZ;
}
// The column partial sums' grid: x the chunk of kColumnChunk rows (the count that grows with
// batch x sequence, hence on x), y the block of `block` columns.
inline Grid2 column_partials_grid(int64_t rows, int64_t cols, int64_t block) {
  return {column_chunks(rows), (cols + block - 1) / block};
}

}  // namespace sparse::cuda::model_ops
