// Internals shared by the Transformer's source files (transformer.cpp, layer.cpp, decoding.cpp).
#pragma once

#include "libsparse/model/transformer.hpp"

namespace sparse::model {

inline constexpr double kLayerNormEps = 1e-5;
inline constexpr double kFinalNormEps = 1e-6;
inline constexpr int64_t kVocab = Dims::vocab;

// Activations of one layer that its backward pass needs (the input x is the residual stream,
// kept by the caller).
template <typename T>
struct Transformer<T>::LayerCache {
  Buffer<T> y1, mean1, rstd1;  // ln1(x)
  Buffer<T> q, k, v;           // projections [rows, dqk | dqk | d]
  Buffer<T> qp, kp;            // fused attention with head_qk < head_v: q and k zero-padded to
                               // [rows, d], only during one attention call
  Buffer<T> att, lse;          // attention output [rows, d], log-sum-exp [batch, heads, n]
  Buffer<T> r;                 // x + a
  Buffer<T> y2, mean2, rstd2;  // ln2(r)
  Buffer<T> u, gel;            // W1 y2 + b1 and gelu(u) [rows, inner]
};

// The working state of incremental decoding, in the backend's memory.
template <typename T>
struct Transformer<T>::DecodeState {
  std::vector<Buffer<T>> kcache, vcache;  // per layer [n, heads, head_qk | head_v]
  Buffer<T> x, y, mean, rstd, q, att, a, r, u, gel, f, logits;
};

}  // namespace sparse::model
