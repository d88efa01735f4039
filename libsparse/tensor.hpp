// Validated views of caller-owned sparse_tensor descriptors.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "sparse/common.h"

namespace sparse {

// A checked view of a 4-D attention tensor [batch, heads, seq, dim] or a 3-D one
// [batch, heads, seq] (dim == 1, stride ignored). Strides are in elements.
struct TensorView {
  void* data = nullptr;
  sparse_dtype dtype = SPARSE_DTYPE_F32;
  sparse_memory memory = SPARSE_MEMORY_HOST;
  int32_t device = 0;
  int32_t ndim = 0;
  std::array<int64_t, 4> shape{};
  std::array<int64_t, 4> strides{};

  template <typename T>
  T* ptr(int64_t b, int64_t h, int64_t s, int64_t d = 0) const {
    return static_cast<T*>(data) + b * strides[0] + h * strides[1] + s * strides[2] +
           (ndim == 4 ? d * strides[3] : 0);
  }
};

// Validates `t` (non-NULL, `ndim` dimensions, non-negative sizes and strides, non-NULL data when
// it has elements) and returns a view. `name` is used in error messages ("q", "dout", ...).
TensorView check_tensor(const sparse_tensor* t, const char* name, int32_t ndim);

// Throws unless an output tensor's strides map distinct indices to distinct addresses.
void check_no_self_overlap(const TensorView& t, const char* name);

// Throws if the memory spanned by the two views overlaps (an output aliasing an input).
void check_disjoint(const TensorView& a, const char* name_a, const TensorView& b,
                    const char* name_b);

std::string shape_string(const TensorView& t);

}  // namespace sparse
