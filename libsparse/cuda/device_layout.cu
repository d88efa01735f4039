#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <vector>

#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/cuda/device_layout.hpp"
#include "libsparse/layout.hpp"

namespace sparse::cuda {

namespace {

// Appends `count` elements to a host staging buffer at an 8-byte aligned offset.
template <typename T>
size_t append(std::vector<unsigned char>& buffer, const T* data, size_t count) {
  size_t offset = (buffer.size() + 7) & ~size_t{7};
  buffer.resize(offset + count * sizeof(T));
  if (count) std::memcpy(buffer.data() + offset, data, count * sizeof(T));
  return offset;
}

// The indices 0..n-1 by ptr[i + 1] - ptr[i] (entries of row or column i), most first, ties by
// index.
std::vector<int32_t> longest_first(const std::vector<int64_t>& ptr, int64_t n) {
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return ptr[a + 1] - ptr[a] > ptr[b + 1] - ptr[b]; });
  return order;
}

}  // namespace

LayoutCache::~LayoutCache() {
  for (auto& e : entries_) cudaFree(e.storage);
}

const DeviceLayout& LayoutCache::get(const Layout& layout, cudaStream_t stream) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->serial == layout.serial) {
      entries_.splice(entries_.begin(), entries_, it);
      return entries_.front();
    }
  }
  // Stage every distinct head's arrays, then the DeviceHead table, in one host buffer.
  std::vector<unsigned char> staging;
  struct Offsets {
    size_t row_ptr, col_idx, mask_id, col_ptr, row_idx, col_to_csr, masks, row_order, col_order;
  };
  std::map<const HeadLayout*, Offsets> offsets;
  int64_t max_blocks = 0;
  for (int h = 0; h < layout.num_heads; ++h) {
    const HeadLayout& L = layout.head(h);
    max_blocks = std::max(max_blocks, L.num_blocks);
    if (offsets.count(&L)) continue;
    Offsets o;
    o.row_ptr = append(staging, L.row_ptr.data(), L.row_ptr.size());
    o.col_idx = append(staging, L.col_idx.data(), L.col_idx.size());
    o.mask_id = append(staging, L.mask_id.data(), L.mask_id.size());
    o.col_ptr = append(staging, L.col_ptr.data(), L.col_ptr.size());
    o.row_idx = append(staging, L.row_idx.data(), L.row_idx.size());
    o.col_to_csr = append(staging, L.col_to_csr.data(), L.col_to_csr.size());
    o.masks = append(staging, L.masks.data(), L.masks.size());
    const std::vector<int32_t> rows = longest_first(L.row_ptr, L.num_blocks);
    const std::vector<int32_t> cols = longest_first(L.col_ptr, L.num_blocks);
    o.row_order = append(staging, rows.data(), rows.size());
    o.col_order = append(staging, cols.data(), cols.size());
    offsets[&L] = o;
  }
  const size_t table = (staging.size() + 7) & ~size_t{7};
  const size_t bytes = table + sizeof(DeviceHead) * static_cast<size_t>(layout.num_heads);
  void* storage = nullptr;
  check_cuda(cudaMalloc(&storage, bytes), "cudaMalloc (layout)");
  auto* base = static_cast<unsigned char*>(storage);
  std::vector<DeviceHead> heads(static_cast<size_t>(layout.num_heads));
  for (int h = 0; h < layout.num_heads; ++h) {
    const HeadLayout& L = layout.head(h);
    const Offsets& o = offsets[&L];
    DeviceHead& d = heads[static_cast<size_t>(h)];
    d.block = L.block;
    d.words = L.words;
    d.transposed = L.transposed ? 1 : 0;
    d.seq_len = L.seq_len;
    d.stride = L.stride;
    d.chunk = L.chunk;
    d.n_computed = L.n_computed;
    d.num_blocks = L.num_blocks;
    d.row_ptr = reinterpret_cast<const int64_t*>(base + o.row_ptr);
    d.col_idx = reinterpret_cast<const int32_t*>(base + o.col_idx);
    d.mask_id = reinterpret_cast<const int32_t*>(base + o.mask_id);
    d.col_ptr = reinterpret_cast<const int64_t*>(base + o.col_ptr);
    d.row_idx = reinterpret_cast<const int32_t*>(base + o.row_idx);
    d.col_to_csr = reinterpret_cast<const int64_t*>(base + o.col_to_csr);
    d.masks = reinterpret_cast<const uint64_t*>(base + o.masks);
    d.row_order = reinterpret_cast<const int32_t*>(base + o.row_order);
    d.col_order = reinterpret_cast<const int32_t*>(base + o.col_order);
  }
  staging.resize(table);
  append(staging, heads.data(), heads.size());
  cudaError_t status =
      cudaMemcpyAsync(storage, staging.data(), staging.size(), cudaMemcpyHostToDevice, stream);
  if (status == cudaSuccess) status = cudaStreamSynchronize(stream);  // staging is freed next
  if (status != cudaSuccess) {
    cudaFree(storage);
    check_cuda(status, "cudaMemcpyAsync (layout)");
  }
  DeviceLayout entry;
  entry.serial = layout.serial;
  entry.heads = reinterpret_cast<const DeviceHead*>(base + table);
  entry.num_heads = layout.num_heads;
  entry.max_blocks = max_blocks;
  entry.storage = storage;
  entry.bytes = bytes;
  entries_.push_front(entry);
  while (entries_.size() > capacity_) {
    cudaFree(entries_.back().storage);
    entries_.pop_back();
  }
  return entries_.front();
}

}  // namespace sparse::cuda
