#include "libsparse/tensor.hpp"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "libsparse/error.hpp"

namespace sparse {

std::string shape_string(const TensorView& t) {
  std::ostringstream s;
  s << "[";
  for (int i = 0; i < t.ndim; ++i) s << (i ? ", " : "") << t.shape[i];
  s << "]";
  return s.str();
}

TensorView check_tensor(const sparse_tensor* t, const char* name, int32_t ndim) {
  require(t != nullptr, name, " is NULL");
  require(t->ndim == ndim, name, ".ndim is ", t->ndim, ", expected ", ndim);
  require(known_dtype(enum_value(t->dtype)), name, ".dtype ", enum_value(t->dtype),
          " is not a known sparse_dtype");
  const int memory = enum_value(t->memory);
  require(memory == SPARSE_MEMORY_HOST || memory == SPARSE_MEMORY_DEVICE, name, ".memory ", memory,
          " is not a known sparse_memory");
  TensorView v;
  v.data = t->data;
  v.dtype = t->dtype;
  v.memory = t->memory;
  v.device = t->device;
  v.ndim = ndim;
  bool empty = false;
  for (int i = 0; i < ndim; ++i) {
    require(t->shape[i] >= 0, name, ".shape[", i, "] = ", t->shape[i], " is negative");
    require(t->strides[i] >= 0, name, ".strides[", i, "] = ", t->strides[i], " is negative");
    v.shape[i] = t->shape[i];
    v.strides[i] = t->strides[i];
    empty = empty || t->shape[i] == 0;
  }
  if (empty) return v;
  require(t->data != nullptr, name, ".data is NULL for a tensor of shape ", shape_string(v));
  // The kernels load whole elements (and the GPU's misaligned load is a sticky fault that ends
  // the context), so an element must start at a multiple of its size, as in any C array.
  const size_t align = sparse_dtype_size(v.dtype);
  require(reinterpret_cast<uintptr_t>(t->data) % align == 0, name, ".data = ", t->data,
          " is not aligned to the ", align, " bytes of its dtype's elements");
  // The element count and the byte offset of the last element must fit in int64_t: the kernels
  // index with 64-bit products, which would wrap around silently.
  int64_t elements = 1, last = 0, step = 0, bytes = 0;
  bool overflow = false;
  for (int i = 0; i < ndim; ++i) {
    overflow = overflow || __builtin_mul_overflow(elements, v.shape[i], &elements) ||
               __builtin_mul_overflow(v.shape[i] - 1, v.strides[i], &step) ||
               __builtin_add_overflow(last, step, &last);
  }
  const auto size = static_cast<int64_t>(sparse_dtype_size(v.dtype));
  overflow = overflow || __builtin_add_overflow(last, int64_t{1}, &last) ||
             __builtin_mul_overflow(last, size, &bytes);
  require(!overflow, name, " of shape ", shape_string(v), " has more elements or a larger extent ",
          "than 64-bit indices can address");
  return v;
}

void check_no_self_overlap(const TensorView& t, const char* name) {
  // Sort dimensions of extent > 1 by stride; each stride must step over the whole span of the
  // dimensions with smaller strides, which guarantees an injective index -> address map.
  std::array<int, 4> order{};
  int count = 0;
  for (int i = 0; i < t.ndim; ++i)
    if (t.shape[i] > 1) order[count++] = i;
  for (int a = 1; a < count; ++a)  // insertion sort by stride (at most 4 entries)
    for (int b = a; b > 0 && t.strides[order[b]] < t.strides[order[b - 1]]; --b)
      std::swap(order[b], order[b - 1]);
  int64_t span = 1;  // elements covered by the dimensions seen so far
  for (int k = 0; k < count; ++k) {
    const int d = order[k];
    require(t.strides[d] >= span, name, " has overlapping strides (shape ", shape_string(t),
            ", stride of dimension ", d, " is ", t.strides[d], " but must be at least ", span, ")");
    span = t.strides[d] * (t.shape[d] - 1) + span;
  }
}

namespace {
// Byte range [first, last) touched by a view (empty when it has no elements).
std::pair<const char*, const char*> byte_range(const TensorView& t) {
  int64_t last = 0;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] == 0) return {nullptr, nullptr};
    last += (t.shape[i] - 1) * t.strides[i];
  }
  const auto* base = static_cast<const char*>(t.data);
  const auto size = static_cast<int64_t>(sparse_dtype_size(t.dtype));
  return {base, base + (last + 1) * size};
}
}  // namespace

void check_disjoint(const TensorView& a, const char* name_a, const TensorView& b,
                    const char* name_b) {
  if (a.memory != b.memory) return;
  auto ra = byte_range(a);
  auto rb = byte_range(b);
  if (ra.first == nullptr || rb.first == nullptr) return;
  const bool overlap = ra.first < rb.second && rb.first < ra.second;
  require(!overlap, name_a, " and ", name_b, " overlap in memory; outputs must not alias inputs");
}

}  // namespace sparse
