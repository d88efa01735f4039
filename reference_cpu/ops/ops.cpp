// CPU operations of the model (see ops.hpp). Plain loops, except the matrix products, which go
// through Eigen's GEMM. Loops over independent rows are threaded with OpenMP; reductions into
// parameter gradients run in a fixed order, so results do not depend on the thread count.
#include "reference_cpu/ops/ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "libsparse/random.hpp"
#include "libsparse/threads.hpp"
#include "reference_cpu/eigen.hpp"
#include "sparse_config.h"

#if SPARSE_HAVE_OPENMP
#define SPARSE_OMP_FOR _Pragma("omp parallel for schedule(static)")
#else
#define SPARSE_OMP_FOR
#endif

namespace sparse::ops {
namespace {

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

}  // namespace

// ---------------------------------------------------------------- layer normalisation
template <typename T>
void layer_norm_forward(const T* x, const T* gamma, const T* beta, int64_t rows, int64_t dim, T eps,
                        T* y, T* mean, T* rstd) {
  SPARSE_OMP_FOR
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    T m = 0;
    for (int64_t c = 0; c < dim; ++c) m += xr[c];
    m /= static_cast<T>(dim);
    T var = 0;
    for (int64_t c = 0; c < dim; ++c) var += (xr[c] - m) * (xr[c] - m);
    var /= static_cast<T>(dim);
    const T s = T(1) / std::sqrt(var + eps);
    for (int64_t c = 0; c < dim; ++c) yr[c] = (xr[c] - m) * s * gamma[c] + beta[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

template <typename T>
void layer_norm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                         int64_t rows, int64_t dim, T* dx, T* dgamma, T* dbeta) {
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma.
  SPARSE_OMP_FOR
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T* dxr = dx + r * dim;
    const T m = mean[r], s = rstd[r];
    T sum_g = 0, sum_gx = 0;
    for (int64_t c = 0; c < dim; ++c) {
      const T g = dyr[c] * gamma[c];
      sum_g += g;
      sum_gx += g * (xr[c] - m) * s;
    }
    sum_g /= static_cast<T>(dim);
    sum_gx /= static_cast<T>(dim);
    for (int64_t c = 0; c < dim; ++c) {
      const T xhat = (xr[c] - m) * s;
      dxr[c] = s * (dyr[c] * gamma[c] - sum_g - xhat * sum_gx);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    const T m = mean[r], s = rstd[r];
    for (int64_t c = 0; c < dim; ++c) {
      dgamma[c] += dyr[c] * (xr[c] - m) * s;
      dbeta[c] += dyr[c];
    }
  }
}

// ---------------------------------------------------------------- linear
template <typename T>
void linear_forward(const T* x, const T* w, const T* b, int64_t rows, int64_t in, int64_t out,
                    T* y) {
  Eigen::Map<const Mat<T>> X(x, rows, in);
  Eigen::Map<const Mat<T>> W(w, in, out);
  Eigen::Map<Mat<T>> Y(y, rows, out);
  Y.noalias() = X * W;
  if (b != nullptr)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < out; ++c) y[r * out + c] += b[c];
}

template <typename T>
void linear_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in, int64_t out,
                     T* dx, bool accumulate_dx, T* dw, T* db) {
  Eigen::Map<const Mat<T>> DY(dy, rows, out);
  Eigen::Map<const Mat<T>> X(x, rows, in);
  Eigen::Map<const Mat<T>> W(w, in, out);
  if (dx != nullptr) {
    Eigen::Map<Mat<T>> DX(dx, rows, in);
    if (accumulate_dx)
      DX.noalias() += DY * W.transpose();
    else
      DX.noalias() = DY * W.transpose();
  }
  Eigen::Map<Mat<T>> DW(dw, in, out);
  DW.noalias() += X.transpose() * DY;
  // Plain loops in a fixed order: Eigen's vectorised reductions may round differently
  // depending on the alignment of the data.
  if (db != nullptr)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < out; ++c) db[c] += dy[r * out + c];
}

template <typename T>
void linear_transposed_forward(const T* x, const T* w, int64_t rows, int64_t in, int64_t out,
                               T* y) {
  Eigen::Map<const Mat<T>> X(x, rows, in);
  Eigen::Map<const Mat<T>> W(w, out, in);
  Eigen::Map<Mat<T>> Y(y, rows, out);
  Y.noalias() = X * W.transpose();
}

template <typename T>
void linear_transposed_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in,
                                int64_t out, T* dx, T* dw) {
  Eigen::Map<const Mat<T>> DY(dy, rows, out);
  Eigen::Map<const Mat<T>> X(x, rows, in);
  Eigen::Map<const Mat<T>> W(w, out, in);
  Eigen::Map<Mat<T>>(dx, rows, in).noalias() = DY * W;
  Eigen::Map<Mat<T>>(dw, out, in).noalias() += DY.transpose() * X;
}

// ---------------------------------------------------------------- GELU
template <typename T>
void gelu_forward(const T* x, int64_t n, T* y) {
  SPARSE_OMP_FOR
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid(T(1.702) * x[i]);
}

template <typename T>
void gelu_backward(const T* x, const T* dy, int64_t n, T* dx) {
  // d/dx x s(a x) = s + a x s (1 - s)
  SPARSE_OMP_FOR
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid(T(1.702) * x[i]);
    dx[i] = dy[i] * (s + T(1.702) * x[i] * s * (T(1) - s));
  }
}

// ---------------------------------------------------------------- embeddings
template <typename T>
void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                       const T* token_table, const T* start, const T* const* pos_tables,
                       const PositionShape& shape, T* h) {
  SPARSE_OMP_FOR
  for (int64_t r = 0; r < batch * seq; ++r) {
    const int64_t t = r % seq;
    const T* src = t == 0 ? start : token_table + static_cast<int64_t>(tokens[r - 1]) * dim;
    T* dst = h + r * dim;
    for (int64_t c = 0; c < dim; ++c) dst[c] = src[c];
    for (int k = 0; k < shape.num_dims; ++k) {
      const T* p = pos_tables[k] + shape.coordinate(t, k) * dim;
      for (int64_t c = 0; c < dim; ++c) dst[c] += p[c];
    }
  }
}

template <typename T>
void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim, const T* dh,
                        const PositionShape& shape, T* d_token_table, T* d_start,
                        T* const* d_pos_tables) {
  for (int64_t r = 0; r < batch * seq; ++r) {
    const int64_t t = r % seq;
    T* dst = t == 0 ? d_start : d_token_table + static_cast<int64_t>(tokens[r - 1]) * dim;
    const T* src = dh + r * dim;
    for (int64_t c = 0; c < dim; ++c) dst[c] += src[c];
    for (int k = 0; k < shape.num_dims; ++k) {
      T* p = d_pos_tables[k] + shape.coordinate(t, k) * dim;
      for (int64_t c = 0; c < dim; ++c) p[c] += src[c];
    }
  }
}

// ---------------------------------------------------------------- dropout
template <typename T>
void dropout_forward(const T* x, int64_t n, double p, uint64_t seed, T* y) {
  if (p <= 0.0) {
    std::copy(x, x + n, y);
    return;
  }
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  SPARSE_OMP_FOR
  for (int64_t i = 0; i < n; ++i)
    y[i] = dropout_keep(seed, static_cast<uint64_t>(i), p) ? x[i] * scale : T(0);
}

template <typename T>
void dropout_backward(const T* dy, int64_t n, double p, uint64_t seed, T* dx) {
  dropout_forward(dy, n, p, seed, dx);  // the same mask and scale
}

// ---------------------------------------------------------------- loss
template <typename T>
double softmax_cross_entropy(const T* logits, const uint8_t* targets, int64_t rows, int64_t vocab,
                             T grad_scale, T* dlogits) {
  std::vector<double> row_loss(static_cast<size_t>(rows));
  SPARSE_OMP_FOR
  for (int64_t r = 0; r < rows; ++r) {
    const T* z = logits + r * vocab;
    T m = z[0];
    for (int64_t c = 1; c < vocab; ++c) m = std::max(m, z[c]);
    T sum = 0;
    for (int64_t c = 0; c < vocab; ++c) sum += std::exp(z[c] - m);
    const T lse = m + std::log(sum);
    row_loss[static_cast<size_t>(r)] = static_cast<double>(lse - z[targets[r]]);
    if (dlogits != nullptr) {
      T* g = dlogits + r * vocab;
      for (int64_t c = 0; c < vocab; ++c) g[c] = std::exp(z[c] - lse) * grad_scale;
      g[targets[r]] -= grad_scale;
    }
  }
  double total = 0;
  for (double v : row_loss) total += v;
  return total;
}

// ---------------------------------------------------------------- attention by key lists
template <typename T>
void listed_attention_forward(const KeyLists& L, int64_t batch, int64_t dqk, int64_t dv, T scale,
                              const T* q, const T* k, const T* v, T* out, T* lse) {
  const int64_t n = L.seq, H = L.heads;
  RegionErrors errors;  // an allocation failure must not leave the parallel region
  SPARSE_OMP_FOR
  for (int64_t bh = 0; bh < batch * H; ++bh)
    errors.run([&] {
      const int64_t b = bh / H, h = bh % H;
      std::vector<T> s;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t begin = L.key_ptr[h][i], end = L.key_ptr[h][i + 1];
        const T* qi = q + ((b * n + i) * H + h) * dqk;
        T* oi = out + ((b * n + i) * H + h) * dv;
        std::fill(oi, oi + dv, T(0));
        if (begin == end) {
          lse[(b * H + h) * n + i] = -std::numeric_limits<T>::infinity();
          continue;
        }
        s.assign(static_cast<size_t>(end - begin), T(0));
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t e = begin; e < end; ++e) {
          const T* kj = k + ((b * n + L.keys[h][e]) * H + h) * dqk;
          T dot = 0;
          for (int64_t c = 0; c < dqk; ++c) dot += qi[c] * kj[c];
          s[static_cast<size_t>(e - begin)] = dot * scale;
          m = std::max(m, dot * scale);
        }
        T sum = 0;
        for (T& x : s) sum += (x = std::exp(x - m));
        for (int64_t e = begin; e < end; ++e) {
          const T p = s[static_cast<size_t>(e - begin)] / sum;
          const T* vj = v + ((b * n + L.keys[h][e]) * H + h) * dv;
          for (int64_t c = 0; c < dv; ++c) oi[c] += p * vj[c];
        }
        lse[(b * H + h) * n + i] = m + std::log(sum);
      }
    });
  errors.rethrow();
}

template <typename T>
void listed_attention_backward(const KeyLists& L, int64_t batch, int64_t dqk, int64_t dv, T scale,
                               const T* q, const T* k, const T* v, const T* out, const T* lse,
                               const T* dout, T* dq, T* dk, T* dvv) {
  const int64_t n = L.seq, H = L.heads;
  std::fill(dq, dq + batch * n * H * dqk, T(0));
  std::fill(dk, dk + batch * n * H * dqk, T(0));
  std::fill(dvv, dvv + batch * n * H * dv, T(0));
  // Each (batch, head) writes only its own slices of dq, dk and dv.
  SPARSE_OMP_FOR
  for (int64_t bh = 0; bh < batch * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t begin = L.key_ptr[h][i], end = L.key_ptr[h][i + 1];
      if (begin == end) continue;
      const T* qi = q + ((b * n + i) * H + h) * dqk;
      const T* oi = out + ((b * n + i) * H + h) * dv;
      const T* doi = dout + ((b * n + i) * H + h) * dv;
      T* dqi = dq + ((b * n + i) * H + h) * dqk;
      const T l = lse[(b * H + h) * n + i];
      T D = 0;
      for (int64_t c = 0; c < dv; ++c) D += doi[c] * oi[c];
      for (int64_t e = begin; e < end; ++e) {
        const int64_t j = L.keys[h][e];
        const T* kj = k + ((b * n + j) * H + h) * dqk;
        const T* vj = v + ((b * n + j) * H + h) * dv;
        T dot = 0;
        for (int64_t c = 0; c < dqk; ++c) dot += qi[c] * kj[c];
        const T p = std::exp(dot * scale - l);
        T dp = 0;
        for (int64_t c = 0; c < dv; ++c) dp += doi[c] * vj[c];
        const T ds = p * (dp - D) * scale;
        T* dkj = dk + ((b * n + j) * H + h) * dqk;
        T* dvj = dvv + ((b * n + j) * H + h) * dv;
        for (int64_t c = 0; c < dqk; ++c) {
          dqi[c] += ds * kj[c];
          dkj[c] += ds * qi[c];
        }
        for (int64_t c = 0; c < dv; ++c) dvj[c] += p * doi[c];
      }
    }
  }
}

template <typename T>
void decode_attention(const KeyLists& L, int64_t t, int64_t dqk, int64_t dv, T scale, const T* q,
                      const T* kcache, const T* vcache, T* out) {
  const int64_t H = L.heads;
  std::vector<T> scores;
  for (int64_t h = 0; h < H; ++h) {
    T* oh = out + h * dv;
    std::fill(oh, oh + dv, T(0));
    const int64_t begin = L.key_ptr[h][t], end = L.key_ptr[h][t + 1];
    if (begin == end) continue;
    const T* qh = q + h * dqk;
    T mx = -std::numeric_limits<T>::infinity();
    scores.resize(static_cast<size_t>(end - begin));
    for (int64_t e = begin; e < end; ++e) {
      const T* kj = kcache + L.keys[h][e] * H * dqk + h * dqk;
      T dot = 0;
      for (int64_t c = 0; c < dqk; ++c) dot += qh[c] * kj[c];
      scores[static_cast<size_t>(e - begin)] = dot * scale;
      mx = std::max(mx, dot * scale);
    }
    T sum = 0;
    for (T& z : scores) sum += (z = std::exp(z - mx));
    for (int64_t e = begin; e < end; ++e) {
      const T w = scores[static_cast<size_t>(e - begin)] / sum;
      const T* vj = vcache + L.keys[h][e] * H * dv + h * dv;
      for (int64_t c = 0; c < dv; ++c) oh[c] += w * vj[c];
    }
  }
}

// ---------------------------------------------------------------- elementwise and optimiser
template <typename T>
void add(const T* a, const T* b, int64_t n, T* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <typename T>
void accumulate(T* y, const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

template <typename T>
void copy_rows(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
               int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(src + r * src_stride, src + r * src_stride + cols, dst + r * dst_stride);
    std::fill(dst + r * dst_stride + cols, dst + (r + 1) * dst_stride, T(0));
  }
}

template <typename T>
double squared_norm(const T* x, int64_t n) {
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += static_cast<double>(x[i]) * x[i];
  return sq;
}

template <typename T>
void adam_update(T* w, const T* g, T* m, T* v, const uint8_t* decay_mask, int64_t n,
                 const AdamStep& s) {
  const T b1 = static_cast<T>(s.beta1), b2 = static_cast<T>(s.beta2);
  const T c1 = static_cast<T>(s.c1), c2 = static_cast<T>(s.c2);
  const T lr = static_cast<T>(s.lr), wd = static_cast<T>(s.weight_decay);
  const T eps = static_cast<T>(s.epsilon), clip = static_cast<T>(s.clip);
  for (int64_t i = 0; i < n; ++i) {
    T gi = g[i] * clip;
    const bool decay = decay_mask[i] != 0 && wd > 0;
    if (decay && !s.adamw) gi += wd * w[i];
    m[i] = b1 * m[i] + (T(1) - b1) * gi;
    v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
    const T update = (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
    w[i] -= lr * (update + (decay && s.adamw ? wd * w[i] : T(0)));
  }
}

#define SPARSE_INSTANTIATE_OPS(T)                                                                 \
  template void layer_norm_forward<T>(const T*, const T*, const T*, int64_t, int64_t, T, T*, T*,  \
                                      T*);                                                        \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                       int64_t, T*, T*, T*);                                      \
  template void linear_forward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*);   \
  template void linear_backward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*,   \
                                   bool, T*, T*);                                                 \
  template void linear_transposed_forward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*);  \
  template void linear_transposed_backward<T>(const T*, const T*, const T*, int64_t, int64_t,     \
                                              int64_t, T*, T*);                                   \
  template void gelu_forward<T>(const T*, int64_t, T*);                                           \
  template void gelu_backward<T>(const T*, const T*, int64_t, T*);                                \
  template void embedding_forward<T>(const uint8_t*, int64_t, int64_t, int64_t, const T*,         \
                                     const T*, const T* const*, const PositionShape&, T*);        \
  template void embedding_backward<T>(const uint8_t*, int64_t, int64_t, int64_t, const T*,        \
                                      const PositionShape&, T*, T*, T* const*);                   \
  template void dropout_forward<T>(const T*, int64_t, double, uint64_t, T*);                      \
  template void dropout_backward<T>(const T*, int64_t, double, uint64_t, T*);                     \
  template double softmax_cross_entropy<T>(const T*, const uint8_t*, int64_t, int64_t, T, T*);    \
  template void listed_attention_forward<T>(const KeyLists&, int64_t, int64_t, int64_t, T,        \
                                            const T*, const T*, const T*, T*, T*);                \
  template void listed_attention_backward<T>(const KeyLists&, int64_t, int64_t, int64_t, T,       \
                                             const T*, const T*, const T*, const T*, const T*,    \
                                             const T*, T*, T*, T*);                               \
  template void decode_attention<T>(const KeyLists&, int64_t, int64_t, int64_t, T, const T*,      \
                                    const T*, const T*, T*);                                      \
  template void add<T>(const T*, const T*, int64_t, T*);                                          \
  template void accumulate<T>(T*, const T*, int64_t);                                             \
  template void copy_rows<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t);                   \
  template double squared_norm<T>(const T*, int64_t);                                             \
  template void adam_update<T>(T*, const T*, T*, T*, const uint8_t*, int64_t, const AdamStep&);

SPARSE_INSTANTIATE_OPS(float)
SPARSE_INSTANTIATE_OPS(double)

}  // namespace sparse::ops
