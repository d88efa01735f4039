// CPU operations of the Sparse Transformer, each a forward and a backward on plain row-major
// arrays: the CPU backend's implementation of ModelOps (libsparse/model_ops.hpp), and the
// reference every other backend's model operations are checked against, op by op.
//
// Every operation is a template on the scalar type and is instantiated for float (training) and
// double (the whole-model gradient check against finite differences). Backward functions
// *accumulate* into parameter gradients (dgamma, dbeta, dw, db, table gradients) so that several
// micro-batches add up, and *overwrite* input gradients unless a flag says otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include "libsparse/model_ops.hpp"

namespace sparse::ops {

// ---------------------------------------------------------------- layer normalisation
// y = (x - mean) * rstd * gamma + beta over the last dimension of x [rows, dim];
// rstd = 1 / sqrt(var + eps) with the biased variance. mean and rstd [rows] are saved.
template <typename T>
void layer_norm_forward(const T* x, const T* gamma, const T* beta, int64_t rows, int64_t dim, T eps,
                        T* y, T* mean, T* rstd);
// dx (overwritten), dgamma and dbeta (accumulated).
template <typename T>
void layer_norm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                         int64_t rows, int64_t dim, T* dx, T* dgamma, T* dbeta);

// ---------------------------------------------------------------- linear
// y = x w + b with x [rows, in], w [in, out], b [out] (may be NULL), y [rows, out].
template <typename T>
void linear_forward(const T* x, const T* w, const T* b, int64_t rows, int64_t in, int64_t out,
                    T* y);
// dx = dy w^T (overwritten, or added when accumulate_dx; dx may be NULL), dw += x^T dy,
// db += column sums of dy (db may be NULL).
template <typename T>
void linear_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in, int64_t out,
                     T* dx, bool accumulate_dx, T* dw, T* db);
// y = x w^T with w [out, in] (the tied output embedding: logits = h E^T).
template <typename T>
void linear_transposed_forward(const T* x, const T* w, int64_t rows, int64_t in, int64_t out, T* y);
// dx = dy w (overwritten), dw += dy^T x.
template <typename T>
void linear_transposed_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in,
                                int64_t out, T* dx, T* dw);

// ---------------------------------------------------------------- GELU
// The sigmoid approximation of the released code: gelu(x) = x * sigmoid(1.702 x).
template <typename T>
void gelu_forward(const T* x, int64_t n, T* y);
template <typename T>
void gelu_backward(const T* x, const T* dy, int64_t n, T* dx);

// ---------------------------------------------------------------- embeddings
// Byte embedding of the input shifted right behind a learned start-of-sequence vector, plus
// factorized position embeddings. Position t of a sequence has the mixed-radix coordinates of t
// in `pos_shape` (last coordinate fastest: (row, column, channel) for images in raster order,
// (row, column) of a width-l matrix for text and audio); one table per coordinate.
//   h[b, t] = (t == 0 ? start : token_table[tokens[b, t - 1]]) + sum_k pos_tables[k][coord_k(t)]
template <typename T>
void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                       const T* token_table, const T* start, const T* const* pos_tables,
                       const PositionShape& shape, T* h);
// Accumulates into d_token_table, d_start and d_pos_tables[k].
template <typename T>
void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim, const T* dh,
                        const PositionShape& shape, T* d_token_table, T* d_start,
                        T* const* d_pos_tables);

// ---------------------------------------------------------------- dropout
// Element `index` of a tensor dropped with probability p under `seed` is kept when
// dropout_keep(seed, index, p) (libsparse/random.hpp); kept elements are scaled by 1 / (1 - p).
template <typename T>
void dropout_forward(const T* x, int64_t n, double p, uint64_t seed, T* y);
template <typename T>
void dropout_backward(const T* dy, int64_t n, double p, uint64_t seed, T* dx);

// ---------------------------------------------------------------- loss
// Softmax cross-entropy in nats over logits [rows, vocab] against byte targets [rows]. Returns the
// sum of -log softmax(logits)[target] over rows (accumulated in double). When dlogits is not
// NULL it receives (softmax - onehot) * grad_scale (overwritten).
template <typename T>
double softmax_cross_entropy(const T* logits, const uint8_t* targets, int64_t rows, int64_t vocab,
                             T grad_scale, T* dlogits);

// ---------------------------------------------------------------- sparse attention by key lists
// Masked attention where each (head, query) lists its keys explicitly (KeyLists). Plain loops:
// the double-precision path of the model and the reference for the fused kernels' integration in
// the model. q, k [batch, seq, heads, dqk] and v, out [batch, seq, heads, dv] (row-major, i.e.
// the rows of the projections); lse [batch, heads, seq] (-inf and out = 0 for a query with no
// key).
template <typename T>
void listed_attention_forward(const KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                              T scale, const T* q, const T* k, const T* v, T* out, T* lse);
// dq, dk, dv overwritten.
template <typename T>
void listed_attention_backward(const KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                               T scale, const T* q, const T* k, const T* v, const T* out,
                               const T* lse, const T* dout, T* dq, T* dk, T* dvv);
// One query position t against a key/value cache (see ModelOps::decode_attention).
template <typename T>
void decode_attention(const KeyLists& lists, int64_t t, int64_t dqk, int64_t dv, T scale,
                      const T* q, const T* kcache, const T* vcache, T* out);

// ---------------------------------------------------------------- elementwise and optimiser
template <typename T>
void add(const T* a, const T* b, int64_t n, T* y);
template <typename T>
void accumulate(T* y, const T* x, int64_t n);
template <typename T>
void copy_rows(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
               int64_t cols);
template <typename T>
double squared_norm(const T* x, int64_t n);
template <typename T>
void adam_update(T* w, const T* g, T* m, T* v, const uint8_t* decay, int64_t n,
                 const AdamStep& step);

}  // namespace sparse::ops
