// The layouts of a model configuration and the key lists read from them.
#include <algorithm>
#include <cstring>

#include "libsparse/model/heads.hpp"
#include "libsparse/model/transformer.hpp"
#include "sparse/layout.h"

namespace sparse::model {

namespace {

sparse_pattern make_pattern(sparse_pattern_kind kind, int32_t head, const sparse_model_config& c) {
  sparse_pattern p;
  sparse_pattern_default(&p, kind);
  p.head = head;
  p.stride = c.stride;
  p.summary = c.summary;
  p.summary_variants = std::max<int32_t>(1, c.summary_variants);
  p.window = c.stride;  // LOCAL row heads (OpenAI's): the last l positions, the query included
  return p;
}

std::unique_ptr<Layout> layout_of(const sparse_model_config& c,
                                  const std::vector<sparse_pattern>& patterns) {
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = c.seq_len;
  desc.block_size = c.block_size;
  desc.num_heads = c.num_heads;
  desc.patterns = patterns.data();
  desc.num_patterns = static_cast<int32_t>(patterns.size());
  desc.transpose_strided_column = 1;
  return build_layout(desc);
}

}  // namespace

ops::KeyLists KeyListSet::view() const {
  ops::KeyLists v;
  v.seq = seq;
  v.heads = heads;
  v.key_ptr = ptr_view.data();
  v.keys = keys_view.data();
  return v;
}

KeyListSet key_lists_from_layout(const Layout& layout) {
  KeyListSet set;
  set.seq = layout.seq_len;
  set.heads = layout.num_heads;
  const int64_t n = layout.seq_len;
  set.ptr.resize(static_cast<size_t>(layout.num_heads));
  set.keys.resize(static_cast<size_t>(layout.num_heads));
  for (int h = 0; h < layout.num_heads; ++h) {
    // Heads with the same pattern share a HeadLayout; share their lists too.
    int same = -1;
    for (int e = 0; e < h && same < 0; ++e)
      if (layout.heads[static_cast<size_t>(e)] == layout.heads[static_cast<size_t>(h)]) same = e;
    if (same >= 0) {
      set.ptr[static_cast<size_t>(h)] = set.ptr[static_cast<size_t>(same)];
      set.keys[static_cast<size_t>(h)] = set.keys[static_cast<size_t>(same)];
      continue;
    }
    const HeadLayout& L = layout.head(h);
    const int B = L.block;
    std::vector<std::vector<int32_t>> rows(static_cast<size_t>(n));
    for (int64_t I = 0; I < L.num_blocks; ++I) {
      for (int64_t e = L.row_ptr[static_cast<size_t>(I)]; e < L.row_ptr[static_cast<size_t>(I) + 1];
           ++e) {
        const int64_t J = L.col_idx[static_cast<size_t>(e)];
        const int32_t id = L.mask_id[static_cast<size_t>(e)];
        const uint64_t* bits = id >= 0 ? L.mask(id) : nullptr;
        for (int r = 0; r < B; ++r) {
          const int64_t ti = I * B + r;
          const int64_t i = ti < L.n_computed ? L.natural(ti) : -1;
          if (i < 0) continue;
          for (int col = 0; col < B; ++col) {
            const int64_t tj = J * B + col;
            const int64_t j = tj < L.n_computed ? L.natural(tj) : -1;
            if (j < 0) continue;
            if (bits != nullptr &&
                ((bits[static_cast<size_t>(r) * L.words + (col >> 6)] >> (col & 63)) & 1u) == 0)
              continue;
            rows[static_cast<size_t>(i)].push_back(static_cast<int32_t>(j));
          }
        }
      }
    }
    std::vector<int64_t>& ptr = set.ptr[static_cast<size_t>(h)];
    std::vector<int32_t>& keys = set.keys[static_cast<size_t>(h)];
    ptr.assign(static_cast<size_t>(n) + 1, 0);
    for (int64_t i = 0; i < n; ++i) {
      auto& row = rows[static_cast<size_t>(i)];
      std::sort(row.begin(), row.end());
      ptr[static_cast<size_t>(i) + 1] =
          ptr[static_cast<size_t>(i)] + static_cast<int64_t>(row.size());
    }
    keys.reserve(static_cast<size_t>(ptr.back()));
    for (auto& row : rows) keys.insert(keys.end(), row.begin(), row.end());
  }
  for (int h = 0; h < layout.num_heads; ++h) {
    set.ptr_view.push_back(set.ptr[static_cast<size_t>(h)].data());
    set.keys_view.push_back(set.keys[static_cast<size_t>(h)].data());
  }
  return set;
}

ModelLayouts build_model_layouts(const sparse_model_config& c) {
  ModelLayouts m;
  if (c.attention == SPARSE_MODEL_ATTENTION_DENSE) {
    m.layouts.push_back(layout_of(c, {make_pattern(SPARSE_PATTERN_DENSE, -1, c)}));
    return m;
  }
  const auto [type1, type2] =
      paper_head_pair(c.attention == SPARSE_MODEL_ATTENTION_FIXED, c.row_attention);
  switch (c.head_mode) {
    case SPARSE_HEADS_INTERLEAVED: {
      m.layouts.push_back(layout_of(c, {make_pattern(type1, -1, c)}));
      m.layouts.push_back(layout_of(c, {make_pattern(type2, -1, c)}));
      m.cycle.assign(c.layer_cycle, strnlen(c.layer_cycle, sizeof c.layer_cycle));
      break;
    }
    case SPARSE_HEADS_MERGED:
      m.layouts.push_back(layout_of(c, {make_pattern(type1, -1, c), make_pattern(type2, -1, c)}));
      break;
    case SPARSE_HEADS_MULTIHEAD: {
      std::vector<sparse_pattern> patterns;
      for (int32_t h = 0; h < c.num_heads; ++h)
        patterns.push_back(make_pattern(h % 2 == 0 ? type1 : type2, h, c));
      m.layouts.push_back(layout_of(c, patterns));
      break;
    }
  }
  return m;
}

}  // namespace sparse::model
