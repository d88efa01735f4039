// The model's operations as a backend implements them: one abstract table per scalar type.
//
// Every pointer refers to memory of the backend that owns the table (Backend::memory_kind():
// host memory for the CPU backend, device memory for a GPU backend), except where a comment says
// "host". Operations are issued in order on the backend's stream: a GPU backend may return before
// the work is done, and the operations that return a value to the host (softmax_cross_entropy,
// squared_norm) wait for it. Shapes are row-major; sizes count elements.
//
// Backward operations *accumulate* into parameter gradients (dgamma, dbeta, dw, db, table
// gradients) so that several micro-batches add up, and *overwrite* input gradients unless a flag
// says otherwise. Results must not depend on the thread count: reductions into parameter
// gradients run in a fixed order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "libsparse/error.hpp"
#include "sparse/common.h"

namespace sparse {

// The operations a backend may or may not implement (Backend::supports_op()).
enum class ModelOp {
  LayerNorm,  // forward and backward
  Linear,     // x w + b, and x w^T (tied output embedding), with backwards
  Gelu,       // forward and backward
  Embedding,  // token + start + factorized positions, forward and backward
  Dropout,    // forward and backward
  SoftmaxCrossEntropy,
  Elementwise,      // add, accumulate, copy_rows
  ListedAttention,  // attention by explicit key lists (double precision, decoding)
  AdamUpdate,       // Adam/AdamW step with clipping scale and weight decay
  SquaredNorm,      // global-norm reduction
  Count
};
const char* model_op_name(ModelOp op);

namespace ops {

// Mixed-radix coordinates of position t (last coordinate fastest): (row, column, channel) for
// images in raster order, (row, column) of a width-l matrix for text and audio.
struct PositionShape {
  int num_dims = 0;
  int64_t sizes[4] = {0, 0, 0, 0};
  int64_t coordinate(int64_t t, int k) const {
    for (int j = num_dims - 1; j > k; --j) t /= sizes[j];
    return t % sizes[k];
  }
};

// The keys each (head, query) attends to, CSR per head: key_ptr[h][i] .. key_ptr[h][i + 1] index
// keys[h]. The arrays are host memory (built from a layout on the host).
struct KeyLists {
  int64_t seq = 0;
  int heads = 0;
  const int64_t* const* key_ptr = nullptr;  // heads pointers to seq + 1 offsets
  const int32_t* const* keys = nullptr;     // heads pointers to key positions
};

// One Adam/AdamW step: g' = g * clip (+ weight_decay * w for Adam on decayed tensors);
// m = beta1 m + (1 - beta1) g'; v = beta2 v + (1 - beta2) g'^2;
// w -= lr * ((m / c1) / (sqrt(v / c2) + epsilon) + (weight_decay * w for AdamW on decayed)).
struct AdamStep {
  float lr = 0, beta1 = 0, beta2 = 0, c1 = 1, c2 = 1, epsilon = 0, weight_decay = 0, clip = 1;
  bool adamw = false;
};

}  // namespace ops

template <typename T>
class ModelOps {
 public:
  virtual ~ModelOps() = default;

  // y = (x - mean) * rstd * gamma + beta over the last dimension of x [rows, dim];
  // rstd = 1 / sqrt(var + eps) with the biased variance; mean and rstd [rows] are saved.
  virtual void layer_norm_forward(const T* x, const T* gamma, const T* beta, int64_t rows,
                                  int64_t dim, T eps, T* y, T* mean, T* rstd) = 0;
  // dx (overwritten), dgamma and dbeta (accumulated).
  virtual void layer_norm_backward(const T* dy, const T* x, const T* gamma, const T* mean,
                                   const T* rstd, int64_t rows, int64_t dim, T* dx, T* dgamma,
                                   T* dbeta) = 0;

  // y = x w + b with x [rows, in], w [in, out], b [out] (may be NULL), y [rows, out].
  virtual void linear_forward(const T* x, const T* w, const T* b, int64_t rows, int64_t in,
                              int64_t out, T* y) = 0;
  // dx = dy w^T (overwritten, or added when accumulate_dx; dx may be NULL), dw += x^T dy,
  // db += column sums of dy (db may be NULL).
  virtual void linear_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in,
                               int64_t out, T* dx, bool accumulate_dx, T* dw, T* db) = 0;
  // y = x w^T with w [out, in].
  virtual void linear_transposed_forward(const T* x, const T* w, int64_t rows, int64_t in,
                                         int64_t out, T* y) = 0;
  // dx = dy w (overwritten), dw += dy^T x.
  virtual void linear_transposed_backward(const T* dy, const T* x, const T* w, int64_t rows,
                                          int64_t in, int64_t out, T* dx, T* dw) = 0;

  // gelu(x) = x * sigmoid(1.702 x) (the released code's approximation). dx may alias dy.
  virtual void gelu_forward(const T* x, int64_t n, T* y) = 0;
  virtual void gelu_backward(const T* x, const T* dy, int64_t n, T* dx) = 0;

  // h[b, t] = (t == 0 ? start : token_table[tokens[b, t - 1]]) + sum_k pos_tables[k][coord_k(t)]
  // (tokens [batch, seq] bytes in backend memory; pos_tables is a host array of pointers).
  virtual void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                                 const T* token_table, const T* start, const T* const* pos_tables,
                                 const ops::PositionShape& shape, T* h) = 0;
  // Accumulates into d_token_table, d_start and d_pos_tables[k].
  virtual void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                                  const T* dh, const ops::PositionShape& shape, T* d_token_table,
                                  T* d_start, T* const* d_pos_tables) = 0;

  // Element i is kept when dropout_keep(seed, i, p) (random.hpp) and scaled by 1 / (1 - p);
  // y may alias x. The backward applies the same mask and scale.
  virtual void dropout_forward(const T* x, int64_t n, double p, uint64_t seed, T* y) = 0;
  virtual void dropout_backward(const T* dy, int64_t n, double p, uint64_t seed, T* dx) = 0;

  // Sum over rows of -log softmax(logits)[target] in nats (accumulated in double, returned to
  // the host). When dlogits is not NULL it receives (softmax - onehot) * grad_scale; it may alias
  // logits.
  virtual double softmax_cross_entropy(const T* logits, const uint8_t* targets, int64_t rows,
                                       int64_t vocab, T grad_scale, T* dlogits) = 0;

  // Attention where each (head, query) lists its keys. q, k [batch, seq, heads, dqk] and
  // v, out [batch, seq, heads, dv]; lse [batch, heads, seq] (-inf and out = 0 for a query with no
  // key). The backward overwrites dq, dk and dv.
  virtual void listed_attention_forward(const ops::KeyLists& lists, int64_t batch, int64_t dqk,
                                        int64_t dv, T scale, const T* q, const T* k, const T* v,
                                        T* out, T* lse) = 0;
  virtual void listed_attention_backward(const ops::KeyLists& lists, int64_t batch, int64_t dqk,
                                         int64_t dv, T scale, const T* q, const T* k, const T* v,
                                         const T* out, const T* lse, const T* dout, T* dq, T* dk,
                                         T* dvv) = 0;
  // One query position t of one sequence against a key/value cache: q [heads, dqk],
  // kcache [seq, heads, dqk], vcache [seq, heads, dv], out [heads, dv] (overwritten).
  virtual void decode_attention(const ops::KeyLists& lists, int64_t t, int64_t dqk, int64_t dv,
                                T scale, const T* q, const T* kcache, const T* vcache, T* out) = 0;

  // y = a + b (y may alias a or b); y += x; and a 2-D copy of rows x cols from rows of src_stride
  // elements into rows of dst_stride >= cols elements whose remaining dst_stride - cols elements
  // are set to zero.
  virtual void add(const T* a, const T* b, int64_t n, T* y) = 0;
  virtual void accumulate(T* y, const T* x, int64_t n) = 0;
  virtual void copy_rows(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                         int64_t cols) = 0;

  // Mixed precision: [w, w + n) holds the model's weights until release_weights(), and they do
  // not change meanwhile. A backend whose matrix products take 16-bit inputs may round them once
  // here and read that copy for every product operand lying inside the range, instead of
  // rounding the operand at each call; products on other operands are unaffected. The defaults do
  // nothing (the CPU's products read fp32 or fp64 operands as given).
  virtual void hold_weights(const T* w, int64_t n) {
    (void)w;
    (void)n;
  }
  virtual void release_weights() noexcept {}

  // Mixed precision's 16-bit attention: y [n] (2-byte elements) = x rounded to `dtype`
  // (SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16, round to nearest even), and x [n] widened back to T
  // (exact). Only a backend whose attention takes 16-bit tensors needs them; the defaults refuse.
  virtual void round_to_16(const T* x, int64_t n, sparse_dtype dtype, void* y) {
    (void)x;
    (void)n;
    (void)y;
    throw_error(SPARSE_ERR_UNSUPPORTED, "this backend has no 16-bit conversion (dtype ",
                static_cast<int>(dtype), ")");
  }
  virtual void widen_from_16(const void* x, int64_t n, sparse_dtype dtype, T* y) {
    (void)x;
    (void)n;
    (void)y;
    throw_error(SPARSE_ERR_UNSUPPORTED, "this backend has no 16-bit conversion (dtype ",
                static_cast<int>(dtype), ")");
  }

  // Mixed precision's 16-bit activation storage: linear_forward and linear_backward with x given
  // as 2-byte elements of `dtype` (x [rows, in], the products' own 16-bit dtype), for activations
  // whose every reader is a 16-bit product, which the model then stores in 16 bits. The results
  // equal those of the fp32 calls on x widened, bit for bit (the products round their fp32 x to
  // the same values). Only a backend with mixed-precision products needs them; the defaults
  // refuse.
  virtual void linear_forward_16(const void* x, sparse_dtype dtype, const T* w, const T* b,
                                 int64_t rows, int64_t in, int64_t out, T* y) {
    (void)x, (void)w, (void)b, (void)rows, (void)in, (void)out, (void)y;
    throw_error(SPARSE_ERR_UNSUPPORTED, "this backend has no products on 16-bit inputs (dtype ",
                static_cast<int>(dtype), ")");
  }
  virtual void linear_backward_16(const T* dy, const void* x, sparse_dtype dtype, const T* w,
                                  int64_t rows, int64_t in, int64_t out, T* dx, bool accumulate_dx,
                                  T* dw, T* db) {
    (void)dy, (void)x, (void)w, (void)rows, (void)in, (void)out, (void)dx, (void)accumulate_dx;
    (void)dw, (void)db;
    throw_error(SPARSE_ERR_UNSUPPORTED, "this backend has no products on 16-bit inputs (dtype ",
                static_cast<int>(dtype), ")");
  }

  // Sum of x[i]^2 accumulated in double in index order (returned to the host).
  virtual double squared_norm(const T* x, int64_t n) = 0;
  // One optimiser step on n parameters; decay [n] is 1 where weight decay applies.
  virtual void adam_update(T* w, const T* g, T* m, T* v, const uint8_t* decay, int64_t n,
                           const ops::AdamStep& step) = 0;
};

}  // namespace sparse
