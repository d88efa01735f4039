// fp32 tensors as raw pointers with element strides, for the fp32 and unfused kernels: what a
// kernel takes by value instead of a TensorView, and the row/element addressing on the device.
#pragma once

#include <cstdint>

#include "libsparse/cuda/attention_cuda.hpp"

namespace sparse::cuda {

// [batch, heads, seq_len, head_dim] and [batch, heads, seq_len] (lse) views.
struct Strided4 {
  float* data;
  int64_t s0, s1, s2, s3;
};
struct Strided3 {
  float* data;
  int64_t s0, s1, s2;
};

inline Strided4 strided(const TensorView& t) {
  return {static_cast<float*>(t.data), t.strides[0], t.strides[1], t.strides[2], t.strides[3]};
}
// A missing tensor (lse not requested) gives a null view.
inline Strided3 strided3(const TensorView& t) {
  if (t.data == nullptr) return {nullptr, 0, 0, 0};
  return {static_cast<float*>(t.data), t.strides[0], t.strides[1], t.strides[2]};
}

// Row i of (b, h): its first element; elements follow at stride s3.
__device__ inline float* row_ptr(const Strided4& t, int64_t b, int64_t h, int64_t i) {
  return t.data + b * t.s0 + h * t.s1 + i * t.s2;
}
__device__ inline float* elem_ptr(const Strided3& t, int64_t b, int64_t h, int64_t i) {
  return t.data + b * t.s0 + h * t.s1 + i * t.s2;
}

}  // namespace sparse::cuda
