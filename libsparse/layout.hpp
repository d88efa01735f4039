// Patterns -> block layouts (see capi/include/sparse/layout.h for the token-level definitions).
//
// A HeadLayout lists, in the order the kernels compute (natural, or the transposed strided-column
// order), the computed blocks of each query block row (CSR) and of each key block column (CSC),
// and for every computed block either "full" or the id of its element mask. Element masks are
// stored once per distinct mask (the paper's patterns have only a handful), as B rows of
// W = ceil(B / 64) 64-bit words; bit c of row r set = query (I*B + r) attends key (J*B + c).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "sparse/layout.h"

namespace sparse {

constexpr int kMaxBlockSize = 128;

struct HeadLayout {
  int64_t seq_len = 0;      // n, natural positions
  int block = 0;            // B
  int words = 0;            // 64-bit words per mask row
  bool transposed = false;  // strided-column order
  bool causal = true;       // every allowed pair has j <= i (for the density denominator)
  int64_t stride = 0;       // l when transposed
  int64_t chunk = 0;        // ceil(n / l) when transposed
  int64_t n_computed = 0;   // n, or l * chunk when transposed
  int64_t num_blocks = 0;   // ceil(n_computed / B)

  // CSR over query block rows.
  std::vector<int64_t> row_ptr;  // num_blocks + 1
  std::vector<int32_t> col_idx;  // nnz
  std::vector<int32_t> mask_id;  // nnz, -1 = full block
  // CSC over key block columns; col_to_csr maps each entry back to its CSR index.
  std::vector<int64_t> col_ptr;
  std::vector<int32_t> row_idx;
  std::vector<int64_t> col_to_csr;
  // Distinct element masks, each block * words words.
  std::vector<uint64_t> masks;

  int64_t useful_elements = 0;
  int64_t full_blocks = 0;

  int64_t nnz() const { return static_cast<int64_t>(col_idx.size()); }
  const uint64_t* mask(int32_t id) const {
    return masks.data() + static_cast<size_t>(id) * static_cast<size_t>(block) * words;
  }
  // Natural position of computed index t, or -1 for padding.
  int64_t natural(int64_t t) const {
    if (!transposed) return t < seq_len ? t : -1;
    const int64_t p = (t % chunk) * stride + t / chunk;
    return p < seq_len ? p : -1;
  }
  // Computed index of natural position p.
  int64_t computed(int64_t p) const { return transposed ? (p % stride) * chunk + p / stride : p; }
  size_t memory_bytes() const;
};

class Layout {
 public:
  Layout();
  // Unique for the life of the process: lets backends cache device copies of a layout without
  // being fooled by a new layout allocated at a freed one's address.
  const uint64_t serial;
  int64_t seq_len = 0;
  int block = 0;
  int num_heads = 0;
  // One entry per head; heads with identical patterns share one HeadLayout.
  std::vector<std::shared_ptr<const HeadLayout>> heads;

  const HeadLayout& head(int h) const { return *heads[static_cast<size_t>(h)]; }
  size_t memory_bytes() const;
};

// Validate and build (throw sparse::Error naming the bad field).
std::unique_ptr<Layout> build_layout(const sparse_layout_desc& desc);
std::unique_ptr<Layout> build_layout_from_blocks(int64_t seq_len, int block, int num_heads,
                                                 const uint8_t* block_mask,
                                                 const uint8_t* element_mask, bool causal);

// The BigBird random key blocks of query block row `row` in `head`: `count` distinct blocks in
// [0, range), in draw order (all of them when count >= range). Documented in layout.h.
std::vector<int64_t> bigbird_random_blocks(uint64_t seed, int head, int64_t row, int64_t range,
                                           int64_t count);

}  // namespace sparse

struct sparse_layout {
  std::unique_ptr<sparse::Layout> layout;
};
