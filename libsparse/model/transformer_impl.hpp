// Internals shared by the Transformer's source files (transformer.cpp, layer.cpp, decoding.cpp).
#pragma once

#include "libsparse/model/transformer.hpp"

namespace sparse::model {

inline constexpr double kLayerNormEps = 1e-5;
inline constexpr double kFinalNormEps = 1e-6;
inline constexpr int64_t kVocab = Dims::vocab;

// An activation whose every reader rounds it to the products' 16-bit dtype: in mixed precision
// it is stored rounded (`half`, 2-byte elements of `dtype`), else in T (`full`).
template <typename T>
struct Transformer<T>::Stored {
  Buffer<T> full;
  Buffer<uint16_t> half;
  sparse_dtype dtype = SPARSE_DTYPE_F32;  // of `half`; SPARSE_DTYPE_F32 when `full` holds it
  bool in_16_bits() const { return dtype != SPARSE_DTYPE_F32; }
  void release() noexcept {
    full.release();
    half.release();
    dtype = SPARSE_DTYPE_F32;
  }
};

// Activations of one layer that its backward pass needs (the input x is the residual stream,
// kept by the caller).
template <typename T>
struct Transformer<T>::LayerCache {
  Stored y1;               // ln1(x)
  Buffer<T> mean1, rstd1;  // its statistics
  Stored q, k, v;          // projections [rows, dqk | dqk | d]; in 16 bits (the attention's
                           // dtype), q and k of half-size heads are zero-padded to [rows, d]
  Buffer<T> qp, kp;        // fp32 fused attention with head_qk < head_v: q and k zero-padded to
                           // [rows, d], only during one attention call
  Stored att;              // attention output [rows, d]
  Buffer<T> lse;           // log-sum-exp [batch, heads, n]
  Buffer<T> r;             // x + a
  Stored y2;               // ln2(r)
  Buffer<T> mean2, rstd2;  // its statistics
  Buffer<T> u;             // W1 y2 + b1 [rows, inner]
  Stored gel;              // gelu(u) [rows, inner]
};

// The working state of incremental decoding, in the backend's memory.
template <typename T>
struct Transformer<T>::DecodeState {
  std::vector<Buffer<T>> kcache, vcache;  // per layer [n, heads, head_qk | head_v]
  Buffer<T> x, y, mean, rstd, q, att, a, r, u, gel, f, logits;
};

}  // namespace sparse::model
