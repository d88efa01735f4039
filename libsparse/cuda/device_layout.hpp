// Device copies of block layouts for the CUDA kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <list>

namespace sparse {
class Layout;

namespace cuda {

// One head's layout in device memory (pointers into one allocation owned by DeviceLayout).
struct DeviceHead {
  int block;
  int words;  // 64-bit mask words per row
  int transposed;
  int64_t seq_len;  // n (natural positions)
  int64_t stride;   // l when transposed
  int64_t chunk;    // ceil(n / l) when transposed
  int64_t n_computed;
  int64_t num_blocks;
  const int64_t* row_ptr;
  const int32_t* col_idx;
  const int32_t* mask_id;
  const int64_t* col_ptr;
  const int32_t* row_idx;
  const int64_t* col_to_csr;
  const uint64_t* masks;
  // The block rows by their number of CSR entries, most first (ties by index), and the block
  // columns likewise by CSC entries: the kernels that give a CTA one block row (or column) take
  // the slot-th CTA's from here, so the longest start first and the short ones fill the last
  // wave (longest-processing-time-first; in a causal layout the last rows are the longest).
  const int32_t* row_order;
  const int32_t* col_order;
};

// The block row (or column) of the CTA in `slot` (blockIdx.x / split), or -1 past this head's
// blocks (uniform over the CTA).
__device__ inline int64_t ordered_block(const DeviceHead& L, const int32_t* order, int64_t slot) {
  return slot < L.num_blocks ? order[slot] : -1;
}

// Natural position of computed index t (or -1 for padding / past the end).
__host__ __device__ inline int64_t natural_position(const DeviceHead& L, int64_t t) {
  if (t >= L.n_computed) return -1;
  if (!L.transposed) return t < L.seq_len ? t : -1;
  const int64_t p = (t % L.chunk) * L.stride + t / L.chunk;
  return p < L.seq_len ? p : -1;
}

__device__ inline bool mask_allows(const DeviceHead& L, int32_t mask_id, int r, int c) {
  if (mask_id < 0) return true;
  const uint64_t word = L.masks[(static_cast<int64_t>(mask_id) * L.block + r) * L.words + (c >> 6)];
  return (word >> (c & 63)) & 1u;
}

struct DeviceLayout {
  uint64_t serial = 0;
  const DeviceHead* heads = nullptr;  // device array, one per head
  int num_heads = 0;
  int64_t max_blocks = 0;
  void* storage = nullptr;  // everything above lives here
  size_t bytes = 0;
};

// Uploads layouts once and keeps the most recent few (by Layout::serial).
class LayoutCache {
 public:
  explicit LayoutCache(size_t capacity = 8) : capacity_(capacity) {}
  ~LayoutCache();
  LayoutCache(const LayoutCache&) = delete;
  LayoutCache& operator=(const LayoutCache&) = delete;
  const DeviceLayout& get(const Layout& layout, cudaStream_t stream);

 private:
  size_t capacity_;
  std::list<DeviceLayout> entries_;  // most recently used first
};

}  // namespace cuda
}  // namespace sparse
