// Layouts in the C ABI.
#include "libsparse/layout.hpp"

#include <cctype>
#include <cstring>
#include <string>

#include "capi/src/guard.hpp"
#include "sparse/layout.h"

namespace {

constexpr sparse_pattern_kind kAllKinds[] = {
    SPARSE_PATTERN_DENSE,          SPARSE_PATTERN_LOCAL,       SPARSE_PATTERN_STRIDED_ROW,
    SPARSE_PATTERN_STRIDED_COLUMN, SPARSE_PATTERN_FIXED_BLOCK, SPARSE_PATTERN_FIXED_SUMMARY,
    SPARSE_PATTERN_SLIDING_WINDOW, SPARSE_PATTERN_LONGFORMER,  SPARSE_PATTERN_BIGBIRD};

const sparse::Layout& checked(const sparse_layout* layout) {
  sparse::require(layout != nullptr, "layout is NULL");
  return *layout->layout;
}

void check_head(const sparse::Layout& l, int32_t head, bool allow_all) {
  sparse::require((allow_all && head == -1) || (head >= 0 && head < l.num_heads), "head = ", head,
                  " is outside [", allow_all ? "-1" : "0", ", num_heads = ", l.num_heads, ")");
}

}  // namespace

extern "C" {

SPARSE_API const char* sparse_pattern_kind_name(sparse_pattern_kind kind) {
  switch (sparse::enum_value(kind)) {
    case SPARSE_PATTERN_DENSE:
      return "dense";
    case SPARSE_PATTERN_LOCAL:
      return "local";
    case SPARSE_PATTERN_STRIDED_ROW:
      return "strided_row";
    case SPARSE_PATTERN_STRIDED_COLUMN:
      return "strided_column";
    case SPARSE_PATTERN_FIXED_BLOCK:
      return "fixed_block";
    case SPARSE_PATTERN_FIXED_SUMMARY:
      return "fixed_summary";
    case SPARSE_PATTERN_SLIDING_WINDOW:
      return "sliding_window";
    case SPARSE_PATTERN_LONGFORMER:
      return "longformer";
    case SPARSE_PATTERN_BIGBIRD:
      return "bigbird";
  }
  return "unknown";
}

SPARSE_API sparse_status sparse_pattern_kind_from_name(const char* name, sparse_pattern_kind* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(name != nullptr, "name is NULL");
    sparse::require(out != nullptr, "out is NULL");
    std::string lower(name);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (sparse_pattern_kind k : kAllKinds) {
      if (lower == sparse_pattern_kind_name(k)) {
        *out = k;
        return;
      }
    }
    std::string names;
    for (sparse_pattern_kind k : kAllKinds)
      names += std::string(names.empty() ? "" : ", ") + sparse_pattern_kind_name(k);
    sparse::throw_invalid("unknown pattern name \"", name, "\" (expected one of ", names, ")");
  });
}

SPARSE_API sparse_status sparse_pattern_default(sparse_pattern* pattern, sparse_pattern_kind kind) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(pattern != nullptr, "pattern is NULL");
    const int value = sparse::enum_value(kind);
    sparse::require(value >= SPARSE_PATTERN_DENSE && value <= SPARSE_PATTERN_BIGBIRD,
                    "kind = ", value, " is not a known sparse_pattern_kind");
    std::memset(pattern, 0, sizeof *pattern);
    pattern->kind = kind;
    pattern->head = -1;
    pattern->summary_variants = 1;
    pattern->causal = 1;
  });
}

SPARSE_API sparse_status sparse_layout_desc_default(sparse_layout_desc* desc) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(desc != nullptr, "desc is NULL");
    std::memset(desc, 0, sizeof *desc);
    desc->struct_size = sizeof *desc;
    desc->block_size = 64;
    desc->num_heads = 1;
    desc->pattern_struct_size = sizeof(sparse_pattern);
    desc->transpose_strided_column = 1;
  });
}

SPARSE_API sparse_status sparse_layout_create(const sparse_layout_desc* desc, sparse_layout** out) {
  if (out != nullptr) *out = nullptr;
  return sparse::capi::guard(__func__, [&] {
    sparse::require(out != nullptr, "out is NULL");
    sparse::require(desc != nullptr, "desc is NULL");
    sparse::require(desc->struct_size == sizeof(sparse_layout_desc),
                    "desc->struct_size = ", desc->struct_size,
                    " does not match sizeof(sparse_layout_desc) = ", sizeof(sparse_layout_desc),
                    "; initialise with sparse_layout_desc_default()");
    for (unsigned char byte : desc->reserved)
      sparse::require(byte == 0, "desc->reserved must be all zero");
    auto handle = std::make_unique<sparse_layout>();
    handle->layout = sparse::build_layout(*desc);
    *out = handle.release();
  });
}

SPARSE_API sparse_status sparse_layout_create_from_blocks(int64_t seq_len, int32_t block_size,
                                                          int32_t num_heads,
                                                          const uint8_t* block_mask,
                                                          const uint8_t* element_mask,
                                                          int32_t causal, sparse_layout** out) {
  if (out != nullptr) *out = nullptr;
  return sparse::capi::guard(__func__, [&] {
    sparse::require(out != nullptr, "out is NULL");
    auto handle = std::make_unique<sparse_layout>();
    handle->layout = sparse::build_layout_from_blocks(seq_len, block_size, num_heads, block_mask,
                                                      element_mask, causal != 0);
    *out = handle.release();
  });
}

SPARSE_API void sparse_layout_destroy(sparse_layout* layout) { delete layout; }

SPARSE_API sparse_status sparse_layout_get_stats(const sparse_layout* layout, int32_t head,
                                                 sparse_layout_stats* stats) {
  return sparse::capi::guard(__func__, [&] {
    const sparse::Layout& l = checked(layout);
    sparse::require(stats != nullptr, "stats is NULL");
    sparse::require(stats->struct_size >= sizeof(sparse_layout_stats),
                    "stats->struct_size = ", stats->struct_size,
                    " is smaller than sizeof(sparse_layout_stats) = ", sizeof(sparse_layout_stats));
    check_head(l, head, true);
    sparse_layout_stats s;
    std::memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    s.seq_len = l.seq_len;
    s.block_size = l.block;
    s.num_heads = l.num_heads;
    const int64_t nb = (l.seq_len + l.block - 1) / l.block;
    for (int h = 0; h < l.num_heads; ++h) {
      if (head != -1 && h != head) continue;
      const sparse::HeadLayout& hl = l.head(h);
      s.transposed += hl.transposed ? 1 : 0;
      s.num_blocks = std::max(s.num_blocks, hl.num_blocks);
      s.nnz_blocks += hl.nnz();
      s.full_blocks += hl.full_blocks;
      s.dense_blocks += hl.causal ? nb * (nb + 1) / 2 : nb * nb;
      s.useful_elements += hl.useful_elements;
    }
    s.computed_elements = s.nnz_blocks * static_cast<int64_t>(l.block) * l.block;
    s.density = s.dense_blocks > 0 ? static_cast<double>(s.nnz_blocks) / s.dense_blocks : 0.0;
    s.effective_density = s.computed_elements > 0 ? static_cast<double>(s.useful_elements) /
                                                        static_cast<double>(s.computed_elements)
                                                  : 0.0;
    s.memory_bytes = head == -1 ? l.memory_bytes() : l.head(head).memory_bytes();
    *stats = s;
  });
}

SPARSE_API sparse_status sparse_layout_block_mask(const sparse_layout* layout, int32_t head,
                                                  uint8_t* out, size_t size) {
  return sparse::capi::guard(__func__, [&] {
    const sparse::Layout& l = checked(layout);
    check_head(l, head, false);
    sparse::require(out != nullptr, "out is NULL");
    const sparse::HeadLayout& hl = l.head(head);
    const auto nb = static_cast<size_t>(hl.num_blocks);
    if (size < nb * nb)
      sparse::throw_error(SPARSE_ERR_BUFFER_TOO_SMALL, "size = ", size, " but the block mask of ",
                          "head ", head, " has ", nb, " x ", nb, " = ", nb * nb, " bytes");
    std::memset(out, 0, nb * nb);
    for (size_t I = 0; I < nb; ++I)
      for (int64_t e = hl.row_ptr[I]; e < hl.row_ptr[I + 1]; ++e)
        out[I * nb + static_cast<size_t>(hl.col_idx[e])] = hl.mask_id[e] < 0 ? 2 : 1;
  });
}

SPARSE_API sparse_status sparse_layout_row_mask(const sparse_layout* layout, int32_t head,
                                                int64_t query, uint8_t* out, size_t size) {
  return sparse::capi::guard(__func__, [&] {
    const sparse::Layout& l = checked(layout);
    check_head(l, head, false);
    sparse::require(out != nullptr, "out is NULL");
    sparse::require(query >= 0 && query < l.seq_len, "query = ", query,
                    " is outside [0, seq_len = ", l.seq_len, ")");
    if (size < static_cast<size_t>(l.seq_len))
      sparse::throw_error(SPARSE_ERR_BUFFER_TOO_SMALL, "size = ", size,
                          " but seq_len = ", l.seq_len);
    const sparse::HeadLayout& hl = l.head(head);
    std::memset(out, 0, static_cast<size_t>(l.seq_len));
    const int64_t t = hl.computed(query);
    const int64_t I = t / hl.block, r = t % hl.block;
    for (int64_t e = hl.row_ptr[I]; e < hl.row_ptr[I + 1]; ++e) {
      const int64_t J = hl.col_idx[e];
      const uint64_t* row = hl.mask_id[e] < 0 ? nullptr : hl.mask(hl.mask_id[e]) + r * hl.words;
      for (int c = 0; c < hl.block; ++c) {
        if (row != nullptr && ((row[c >> 6] >> (c & 63)) & 1u) == 0) continue;
        const int64_t key = J * hl.block + c;
        const int64_t p = key < hl.n_computed ? hl.natural(key) : -1;
        if (p >= 0) out[p] = 1;
      }
    }
  });
}

}  // extern "C"
