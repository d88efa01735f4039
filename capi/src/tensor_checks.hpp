// Shape checks shared by the attention entry points of the C layer.
#pragma once

#include "libsparse/tensor.hpp"
#include "sparse/common.h"

namespace sparse::capi {

// Throws unless `t` (named `name` in the message) has q's shape, dtype and memory.
void check_like(const TensorView& t, const char* name, const TensorView& q);
// Validates lse: [batch, heads, seq_len] of q, SPARSE_DTYPE_F32, in q's memory.
TensorView check_lse(const sparse_tensor* lse, const TensorView& q);

}  // namespace sparse::capi
