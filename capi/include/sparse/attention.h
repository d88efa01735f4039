/*
 * libsparse: block-sparse multi-head attention, forward and backward.
 *
 *   out[b, h, i, :] = sum_{j in A_h(i)} softmax_j(scale * q[b,h,i,:] . k[b,h,j,:]) v[b, h, j, :]
 *
 * where A_h(i) is the set of keys of query i in head h defined by the layout (see layout.h).
 * Tensors are 4-D [batch, heads, seq_len, head_dim] with any non-negative element strides;
 * `lse` is 3-D [batch, heads, seq_len] and receives log(sum_j exp(scale q.k)) per row
 * (natural-log units), which the backward pass needs. A query with no key gets out = 0 and
 * lse = -infinity, and its gradients are zero.
 *
 * By default the computation is fused (SPARSE_ATTENTION_FUSED): an online softmax over the
 * computed blocks of each query block, no seq_len x seq_len buffer; the backward pass recomputes
 * the probabilities block by block. SPARSE_ATTENTION_UNFUSED selects the 2019-style three-pass
 * computation instead (block-sparse S = scale Q K^T of every computed block into a workspace,
 * block-sparse softmax, then P V; the backward materialises P and dS = P (dP - rowsum(dO O))
 * for every computed block): the "stored" memory mode, whose workspace grows with the number of
 * computed blocks (see sparse_attention_workspace_size_params). Both give the same result up to
 * rounding.
 *
 * Tensors must live where the context's backend computes (host memory for the CPU backend,
 * device memory of the context's GPU for CUDA). The CPU backend supports SPARSE_DTYPE_F32. The
 * CUDA backend supports SPARSE_DTYPE_F32 (any head_dim <= 128) and, with the fused algorithm on
 * a GPU of compute capability >= 8.0, SPARSE_DTYPE_BF16 and SPARSE_DTYPE_F16 on tensor cores
 * (head_dim 32, 64 or 128; fp32 accumulation). q, k, v, out, dout, dq, dk, dv share one dtype;
 * `lse` is always SPARSE_DTYPE_F32, whatever the dtype of the other tensors.
 */
#ifndef SPARSE_ATTENTION_H
#define SPARSE_ATTENTION_H

#include "sparse/context.h"
#include "sparse/layout.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How attention is computed (sparse_attention_params.algorithm). Values are stable. */
typedef enum sparse_attention_algorithm {
  SPARSE_ATTENTION_FUSED = 0,  /* flash-style online softmax, O(n) memory (default) */
  SPARSE_ATTENTION_UNFUSED = 1 /* 2019-style: S, softmax, P V as separate passes over a
                                  workspace holding every computed block (fp32 only) */
} sparse_attention_algorithm;

typedef struct sparse_attention_params {
  uint32_t struct_size; /* sizeof(sparse_attention_params) */
  float scale;          /* softmax scale; 0 (default) means 1 / sqrt(head_dim) */
  int32_t algorithm;    /* a sparse_attention_algorithm; SPARSE_ATTENTION_FUSED by default */
  uint8_t reserved[56]; /* must be zero */
} sparse_attention_params;

/* Fills the defaults (scale 0, SPARSE_ATTENTION_FUSED). Errors: SPARSE_ERR_INVALID_ARGUMENT for
 * NULL. */
SPARSE_API sparse_status sparse_attention_params_default(sparse_attention_params* params);

/* Forward pass. `params` may be NULL for the defaults; `lse` may be NULL when the backward pass
 * will not be run. q, k, v, out share one shape; out and lse must not overlap the inputs.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL, shapes that do not match the layout or each other,
 * overlapping outputs, params->struct_size other than sizeof(sparse_attention_params), non-zero
 * reserved bytes, non-finite scale, an unknown algorithm); SPARSE_ERR_UNSUPPORTED (a
 * dtype, head_dim, block size, algorithm or memory kind the backend cannot compute);
 * SPARSE_ERR_OUT_OF_MEMORY; SPARSE_ERR_DEVICE. */
SPARSE_API sparse_status sparse_attention_forward(sparse_context* context,
                                                  const sparse_layout* layout,
                                                  const sparse_attention_params* params,
                                                  const sparse_tensor* q, const sparse_tensor* k,
                                                  const sparse_tensor* v, sparse_tensor* out,
                                                  sparse_tensor* lse);

/* Backward pass: given the forward's out and lse and the gradient dout, writes dq, dk, dv
 * (overwritten, not accumulated). Same errors as the forward pass. */
SPARSE_API sparse_status sparse_attention_backward(
    sparse_context* context, const sparse_layout* layout, const sparse_attention_params* params,
    const sparse_tensor* q, const sparse_tensor* k, const sparse_tensor* v,
    const sparse_tensor* out, const sparse_tensor* lse, const sparse_tensor* dout,
    sparse_tensor* dq, sparse_tensor* dk, sparse_tensor* dv);

/* Scratch memory (bytes) the backend allocates during one forward (backward == 0) or backward
 * pass for `batch` x heads x seq_len x head_dim tensors, beyond the caller's tensors, with the
 * default (fused) algorithm. Errors: SPARSE_ERR_INVALID_ARGUMENT. */
SPARSE_API sparse_status sparse_attention_workspace_size(sparse_context* context,
                                                         const sparse_layout* layout, int64_t batch,
                                                         int64_t head_dim, int32_t backward,
                                                         size_t* bytes);

/* The same for the algorithm in `params` (NULL = defaults). With SPARSE_ATTENTION_UNFUSED the
 * workspace holds fp32 scores of every computed block of every (batch, head) pair: batch x
 * (sum over heads of computed blocks) x block_size^2 x 4 bytes, twice that for the backward pass
 * (P and dS), plus per-row statistics. Errors: SPARSE_ERR_INVALID_ARGUMENT (also for bad
 * params). */
SPARSE_API sparse_status sparse_attention_workspace_size_params(
    sparse_context* context, const sparse_layout* layout, const sparse_attention_params* params,
    int64_t batch, int64_t head_dim, int32_t backward, size_t* bytes);

#ifdef __cplusplus
}
#endif

#endif /* SPARSE_ATTENTION_H */
