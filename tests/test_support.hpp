// Helpers shared by the layout and attention tests: converting naive::Pattern to the C struct
// and building layouts through the public ABI.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <random>
#include <vector>

#include "naive_attention.hpp"
#include "sparse/sparse.h"

namespace support {

struct LayoutDeleter {
  void operator()(sparse_layout* l) const { sparse_layout_destroy(l); }
};
using LayoutPtr = std::unique_ptr<sparse_layout, LayoutDeleter>;

inline sparse_pattern to_c(const naive::Pattern& p) {
  sparse_pattern c;
  sparse_pattern_default(&c, p.kind);
  c.head = p.head;
  c.window = p.window;
  c.stride = p.stride;
  c.summary = p.summary;
  c.summary_variants = p.variants;
  c.causal = p.causal ? 1 : 0;
  c.global_tokens = p.globals.empty() ? nullptr : p.globals.data();
  c.num_global_tokens = static_cast<int64_t>(p.globals.size());
  c.random_blocks = p.random_blocks;
  c.seed = p.seed;
  return c;
}

inline sparse_status make_layout(const std::vector<naive::Pattern>& patterns, int64_t n, int block,
                                 int heads, LayoutPtr& out, int transpose = 1) {
  std::vector<sparse_pattern> c;
  for (const auto& p : patterns) c.push_back(to_c(p));
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = n;
  desc.block_size = block;
  desc.num_heads = heads;
  desc.patterns = c.data();
  desc.num_patterns = static_cast<int32_t>(c.size());
  desc.transpose_strided_column = transpose;
  sparse_layout* l = nullptr;
  const sparse_status s = sparse_layout_create(&desc, &l);
  out.reset(l);
  return s;
}

// A random pattern of any kind with parameters valid for sequence length n.
inline naive::Pattern random_pattern(std::mt19937_64& rng, int64_t n, int head, int block) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  naive::Pattern p;
  p.kind = static_cast<sparse_pattern_kind>(pick(0, 8));
  p.head = head;
  p.window = pick(1, std::max<int64_t>(1, n / 2));
  p.stride = pick(1, std::min<int64_t>(n, 48));
  p.summary = pick(1, p.stride);
  p.variants = static_cast<int>(pick(1, std::max<int64_t>(1, p.stride / p.summary)));
  p.variants = std::max(1, std::min<int>(p.variants, 3));
  if (p.summary * p.variants > p.stride) p.variants = 1;
  p.causal = pick(0, 3) != 0;
  if (p.kind == SPARSE_PATTERN_LONGFORMER || p.kind == SPARSE_PATTERN_BIGBIRD) {
    const int64_t g = pick(0, 3);
    for (int64_t k = 0; k < g; ++k) p.globals.push_back(pick(0, n - 1));
  }
  if (p.kind == SPARSE_PATTERN_BIGBIRD) {
    p.random_blocks = pick(0, std::min<int64_t>(2, (n + block - 1) / block));
    p.seed = rng();
  }
  return p;
}

}  // namespace support
