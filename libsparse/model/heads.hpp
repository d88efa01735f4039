// The paper's pairing of head types: the strided pattern splits into a row head and a column
// head, the fixed pattern into a block head and a summary head. Models, attention benchmarks and
// memory tables build their layouts from this one pairing.
#pragma once

#include <utility>

#include "sparse/layout.h"
#include "sparse/model.h"

namespace sparse::model {

// The two head types of a factorized pattern: fixed -> (block, summary); strided -> (row, column),
// where the row head is the paper's strided row (l + 1 keys) or, with SPARSE_ROW_LOCAL, OpenAI's
// local window of l keys.
inline std::pair<sparse_pattern_kind, sparse_pattern_kind> paper_head_pair(
    bool fixed, sparse_row_attention row = SPARSE_ROW_STRIDED) {
  if (fixed) return {SPARSE_PATTERN_FIXED_BLOCK, SPARSE_PATTERN_FIXED_SUMMARY};
  if (row == SPARSE_ROW_LOCAL) return {SPARSE_PATTERN_LOCAL, SPARSE_PATTERN_STRIDED_COLUMN};
  return {SPARSE_PATTERN_STRIDED_ROW, SPARSE_PATTERN_STRIDED_COLUMN};
}

}  // namespace sparse::model
