/*
 * libsparse: experimental entry points.
 *
 * NOT PART OF THE STABLE ABI. The declarations here are outside the ABI snapshot
 * (capi/abi/sparse.abi) and outside the version promise of SPARSE_API_VERSION: they may change
 * or disappear in any release, minor ones included. They are the backend-only extras and the
 * tools that the project's own driver (sparse-repro) uses: the cuBLAS dense attention baseline,
 * the operation checker, a data-parallel gradient-reducer hook on the trainer, loading a
 * checkpoint in another precision, the attention layouts of a model configuration, the memory
 * bound and the library's file reader and atomic writer. sparse.h does not include this header;
 * include it by name. Every name starts with sparse_experimental_.
 *
 * The conventions of common.h hold: every function returns a sparse_status, the message of a
 * failure is in sparse_last_error(), no C++ exception crosses the ABI, structs carry a leading
 * struct_size filled by their *_default() function and zero reserved bytes.
 */
#ifndef SPARSE_EXPERIMENTAL_H
#define SPARSE_EXPERIMENTAL_H

#include "sparse/common.h"
#include "sparse/context.h"
#include "sparse/layout.h"
#include "sparse/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ dense attention baseline */

/* Dense causal attention, out = softmax(scale * q k^T + causal mask) v, with the backend's dense
 * GEMM library (cuBLAS on CUDA): the denominator that block-sparse kernels are measured against.
 * q, k, v, out (and dout, dq, dk, dv): [batch, heads, seq_len, head_dim], one dtype among
 * SPARSE_DTYPE_F32, F16 and BF16, contiguous, all in the context's memory
 * (sparse_context_memory(); device memory of the context's GPU on CUDA). lse: [batch, heads,
 * seq_len], SPARSE_DTYPE_F32, the log-sum-exp of each row's scaled scores. With backward != 0 the
 * backward pass follows the forward one: dq, dk, dv from dout (otherwise dout, dq, dk, dv may be
 * NULL). scale 0 means 1 / sqrt(head_dim). The work is queued on the context's stream:
 * sparse_context_synchronize() waits for it.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL context or tensor, shapes, dtypes or memory that do
 * not match, a scale that is not finite); SPARSE_ERR_UNSUPPORTED with the reason when the
 * backend has no dense baseline (every backend but CUDA) or cannot run this size (too many
 * batch x heads, the n x n buffers do not fit in the GPU's free memory); SPARSE_ERR_DEVICE;
 * SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_experimental_dense_attention(
    sparse_context* context, float scale, int backward, const sparse_tensor* q,
    const sparse_tensor* k, const sparse_tensor* v, sparse_tensor* out, sparse_tensor* lse,
    const sparse_tensor* dout, sparse_tensor* dq, sparse_tensor* dk, sparse_tensor* dv);

/* ------------------------------------------------------------------ operation checker */

/* Options of sparse_experimental_op_check(). Initialise with
 * sparse_experimental_op_check_options_default(). */
typedef struct sparse_experimental_op_check_options {
  uint32_t struct_size;   /* sizeof(sparse_experimental_op_check_options) */
  int32_t bench;          /* non-zero: also time each operation (us per call, in its line) */
  uint64_t seed;          /* seed of the random inputs (default 1) */
  const char* filter;     /* only operations whose name contains this text (NULL or "": all) */
  int32_t max_mismatches; /* mismatching elements printed per failing output (default 5) */
  void* user;             /* passed to print */
  void (*print)(void* user, const char* line); /* one report line, without newline; may be NULL.
                                                  The line is valid during the call only. */
  uint8_t reserved[32];                        /* must be zero */
} sparse_experimental_op_check_options;

/* Fills `options` with the defaults above.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status
sparse_experimental_op_check_options_default(sparse_experimental_op_check_options* options);

/* The operation checker: every model operation and attention kernel of every backend available
 * on this machine against the CPU backend's double-precision path, over a sweep of shapes, with
 * a normalised error mse(ref, out) / mse(ref, 0) and a per-element absolute + relative bound per
 * dtype (NaN and Inf always fail). Per dtype: a backend's fp32 operations; and, where it has
 * mixed precision, its bf16 and f16 matrix products (against the double path on operands rounded
 * to that dtype on the host) and its 16-bit conversions (which must equal the host's rounding
 * exactly). Reports one line per check, labelled with backend, dtype, operation and shape
 * ("ok   ..." or "FAIL ...", the first mismatches with their indices, "skip ..." for what a
 * backend does not support, once per backend and dtype without mixed precision) and a last line
 * with the counts, through options->print. On success *checked is the number of checks
 * run and *failed the number that failed (0 when all passed); either pointer may be NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL options, a wrong struct_size, non-zero reserved
 * bytes, a filter that matches no operation: the message lists the operations); any status of a
 * backend that cannot start. A failing check is not an error: it is counted in *failed. */
SPARSE_API sparse_status sparse_experimental_op_check(
    const sparse_experimental_op_check_options* options, int64_t* checked, int64_t* failed);

/* ------------------------------------------------------------------ gradient reducer hook */

/* A data-parallel gradient reducer, supplied by the caller (for example over MPI or NCCL). The
 * trainer calls it once per sparse_model_train_step(), after the backward pass and before
 * gradient clipping and the optimiser update, with the flat fp32 gradient of every parameter
 * (already scaled by 1 / (size * batch * seq_len), so that the sum over the ranks is the global
 * mean; under loss scaling it is also multiplied by the step's loss scale, which the update
 * divides out, so the sum is the scaled mean and may be non-finite: the step is then skipped),
 * and once with the step's loss sum. rank and size shape the step: every rank passes the
 * same batch, its shard of a global batch of size * batch sequences, and micro-batch k of rank r
 * draws the dropout stream of global micro-batch r * (batch / micro_batch) + k.
 *
 * Overlap (optional): with begin_all_reduce_sum and wait_all_reduce_sum set, the trainer calls
 * them instead of all_reduce_sum, so that the sums run while the backward pass goes on. During
 * the backward pass of the step's last micro-batch it calls begin_all_reduce_sum once per
 * parameter group, as soon as the group's gradient is final, with disjoint ranges of the flat
 * gradient that together cover it exactly once, in the order the backward completes them: the
 * head (the final layer norm, and the output projection unless the embeddings are tied), each
 * layer from the last to the first, then the embeddings (a tied token embedding's gradient is
 * complete only then). Every rank calls them with the same ranges in the same order. The data of
 * a range is complete when begin is called (in device memory: the backend's work is finished);
 * from then on the library neither reads nor writes the range until wait_all_reduce_sum returns,
 * so the reducer may sum it in place in the background. After the last begin of the step (and
 * before clipping, the update and the loss's all_reduce_sum_f64) the trainer calls
 * wait_all_reduce_sum once; when it returns, every range begun in the step holds its sum over
 * the ranks. Memory: as for all_reduce_sum (`memory` below); with SPARSE_MEMORY_HOST and a model
 * in device memory each range is copied to a host buffer of the library's for begin, and all are
 * copied back after the wait. Timeouts: begin should return without waiting for the other
 * ranks (the backward pass waits for it); neither callback may block for ever on a rank that is
 * gone: a reducer that waits for the other ranks fails after its own timeout (the library has
 * none).
 * Errors: a failing begin or wait fails the step with its status and message (the parameters,
 * the optimiser state and the step are unchanged). When the step fails after a begin (a later
 * begin, or the backward pass itself), the library still calls wait_all_reduce_sum once before it
 * returns, so that no sum is left running over its memory; that wait's own error is ignored. A
 * reducer whose callback failed may refuse every later call (the group is usually broken).
 *
 * Callbacks return SPARSE_OK, or a status and a message (NUL-terminated, at most error_size
 * bytes with the NUL) in `error`; the training step then fails with that status and message.
 * They must not throw (C++) or longjmp out of the library. During the step they may not replace
 * the model's reducer, train, restore or measure it:
 * sparse_experimental_model_set_gradient_reducer, sparse_model_train_step, sparse_model_restore and
 * sparse_model_measure_memory on the same model return SPARSE_ERR_INVALID_ARGUMENT (the step itself
 * goes on). */
typedef struct sparse_experimental_gradient_reducer {
  uint32_t struct_size; /* sizeof(sparse_experimental_gradient_reducer) */
  int32_t rank;         /* this process's rank in [0, size) (default 0) */
  int32_t size;         /* ranks in the group, >= 1 (default 1) */
  sparse_memory memory; /* the memory all_reduce_sum accepts. SPARSE_MEMORY_HOST (the default):
                           a gradient in device memory is copied to host memory for the call and
                           back after it. SPARSE_MEMORY_DEVICE: the gradient is passed where the
                           model keeps it (the context's memory), complete (the backend's work is
                           finished) when the call starts. */
  void* user;           /* passed to the callbacks; the caller keeps it alive */
  /* Replaces data[0, count) by its sum over the ranks, on every rank. `memory` says where data
   * lives. Required (not called while the overlap callbacks below are set). */
  sparse_status (*all_reduce_sum)(void* user, float* data, int64_t count, sparse_memory memory,
                                  char* error, size_t error_size);
  /* Replaces values[0, count) (host memory) by their sums over the ranks, the same on every
   * rank. Required. */
  sparse_status (*all_reduce_sum_f64)(void* user, double* values, int64_t count, char* error,
                                      size_t error_size);
  /* Overlap (see above): starts summing data[0, count) over the ranks, in place. Optional; set
   * together with wait_all_reduce_sum (both NULL: all_reduce_sum after the backward pass). */
  sparse_status (*begin_all_reduce_sum)(void* user, float* data, int64_t count,
                                        sparse_memory memory, char* error, size_t error_size);
  /* Overlap: completes every sum begun since the last wait. Optional, with begin_all_reduce_sum. */
  sparse_status (*wait_all_reduce_sum)(void* user, char* error, size_t error_size);
  uint8_t reserved[16]; /* must be zero */
} sparse_experimental_gradient_reducer;

/* Fills `reducer` with the defaults above (rank 0 of 1, host memory, no callbacks, no overlap).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status
sparse_experimental_gradient_reducer_default(sparse_experimental_gradient_reducer* reducer);

/* Installs `reducer` (copied; its callbacks and `user` must stay valid until the model is
 * destroyed or another reducer is installed) on the model's trainer. NULL restores the
 * single-process trainer (no reduction).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL model, a wrong struct_size, rank outside [0, size),
 * size < 1, an unknown memory kind, a NULL all_reduce_sum or all_reduce_sum_f64, only one of
 * begin_all_reduce_sum and wait_all_reduce_sum set, non-zero reserved bytes, a call from a
 * callback of the model's reducer during its training step). */
SPARSE_API sparse_status sparse_experimental_model_set_gradient_reducer(
    sparse_model* model, const sparse_experimental_gradient_reducer* reducer);

/* Steps the model's trainer skipped so far for a non-finite gradient (dynamic loss scaling; saved
 * in checkpoints). A skipped step consumes its batch without advancing sparse_model_step(), so
 * the batches consumed so far are the step plus the skipped steps.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL model or skipped). */
SPARSE_API sparse_status sparse_experimental_model_skipped_steps(sparse_model* model,
                                                                 int64_t* skipped);

/* ------------------------------------------------------------------ loading in another dtype */

/* Creates a model from the checkpoint `path` as sparse_model_load() does, with the trainer
 * configuration's dtype (sparse_train_config.dtype, the precision of the matrix products)
 * replaced by `dtype`: SPARSE_DTYPE_F32, or SPARSE_DTYPE_BF16 / SPARSE_DTYPE_F16 mixed precision
 * where the context's backend offers it (CUDA). Checkpoints store the parameters in fp32 whatever
 * the run's dtype, so any checkpoint loads in any dtype the backend runs: a checkpoint trained in
 * bf16 is evaluated or sampled on the CPU in fp32, an fp32 one on CUDA in bf16. The rest of the
 * trainer configuration and the trainer state stay as saved (parameters, Adam moments, step,
 * skipped steps); loss scaling follows the configuration with the new dtype (a saved dynamic
 * scale is kept only when that configuration also scales dynamically).
 * sparse_model_get_train_config() reports the dtype used. Meant for evaluation and sampling: a
 * resumed training run keeps its own dtype (sparse_model_load(), or sparse_model_create() with the
 * run's configuration and sparse_model_restore()). The model holds a reference to `context`, as
 * sparse_model_create(). On failure *out is NULL.
 * Errors: as sparse_model_load(); SPARSE_ERR_INVALID_ARGUMENT also for a dtype other than
 * SPARSE_DTYPE_F32, BF16 and F16 (naming the value); SPARSE_ERR_UNSUPPORTED naming the checkpoint
 * and the dtype when the context's backend cannot run the model in `dtype` (the CPU backend runs
 * SPARSE_DTYPE_F32 only). */
SPARSE_API sparse_status sparse_experimental_model_load_dtype(sparse_context* context,
                                                              const char* path, sparse_dtype dtype,
                                                              sparse_model** out);

/* ------------------------------------------------------------------ a model's layouts */

/* The attention layouts a model of `config` computes with, built exactly as the model builds
 * them (the paper's pairing of head types, the head mode, the layer cycle, the patterns' stride,
 * summary and window, the transposed strided-column order): *count distinct layouts, 1 or 2
 * (dense, merged and multihead models use one layout in every layer; interleaved ones a row or
 * block layout and a column or summary layout), and the layout of each layer.
 * layouts: NULL (only *count and layer_layout are filled), or an array of `capacity` handles; on
 * success layouts[0, *count) are new layouts owned by the caller, to be freed with
 * sparse_layout_destroy(), and the entries after them are untouched.
 * layer_layout: NULL, or an array of config->num_layers entries: layer l computes with
 * layouts[layer_layout[l]].
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL config or count, a wrong config->struct_size, an
 * invalid configuration naming the field, capacity < 0); SPARSE_ERR_BUFFER_TOO_SMALL when layouts
 * is not NULL and capacity < *count (*count is set, no layout is created and layer_layout is not
 * written); SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_experimental_model_layouts(const sparse_model_config* config,
                                                           sparse_layout** layouts,
                                                           int32_t capacity, int32_t* count,
                                                           int32_t* layer_layout);

/* ------------------------------------------------------------------ memory bound */

/* Checks an allocation before it is made: SPARSE_ERR_OUT_OF_MEMORY, with a message naming `what`
 * (the sizes it comes from), the estimate and the process's memory limit and where that comes
 * from, when estimate_bytes exceeds the limit (SPARSE_MEMORY_LIMIT, else the smallest of physical
 * memory, the cgroup's memory.max, RLIMIT_AS and RLIMIT_DATA); SPARSE_OK when it fits.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL what, a negative or NaN estimate, an unreadable
 * SPARSE_MEMORY_LIMIT). */
SPARSE_API sparse_status sparse_experimental_check_memory(double estimate_bytes, const char* what);

/* ------------------------------------------------------------------ files */

/* Reads the whole regular file `path` and hands its bytes to sink(user, data, size) in one call
 * (data is valid during the call only; size may be 0). Never blocks on a FIFO; anything but a
 * regular file is refused. `what` names the file in messages ("checkpoint", "--log").
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL path, what or sink); SPARSE_ERR_IO naming `what`, the
 * path and the reason; SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_experimental_read_file(const char* path, const char* what,
                                                       void (*sink)(void* user, const void* data,
                                                                    size_t size),
                                                       void* user);

/* The file an output named `path` is written to, into buffer[0, size) (NUL-terminated): `path`
 * itself or, when it is a symbolic link, the file it finally points to. Checks what can be
 * checked before the work that produces the output: the folder exists and is writable, and an
 * existing file is a regular file (not a device, FIFO, socket or folder).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL path, what or buffer); SPARSE_ERR_IO naming `what`,
 * the path and the reason; SPARSE_ERR_BUFFER_TOO_SMALL (the resolved path and its NUL need more
 * than size bytes). */
SPARSE_API sparse_status sparse_experimental_resolve_output_path(const char* path, const char* what,
                                                                 char* buffer, size_t size);

/* Writes data[0, size) to the file `path` names (see sparse_experimental_resolve_output_path)
 * atomically: into a temporary file created exclusively in the same folder under a name unique to
 * this writer, flushed to disk, then renamed over the target. Readers see the old file or the
 * complete new one; an existing file keeps its permission bits; on failure the temporary file is
 * removed and the target is unchanged. data may be NULL when size is 0.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL path or what, NULL data with size > 0);
 * SPARSE_ERR_IO naming `what`, the path and the system's reason. */
SPARSE_API sparse_status sparse_experimental_write_file_atomic(const char* path, const char* what,
                                                               const void* data, size_t size);

/* ------------------------------------------------------------------ backend status */

/* Whether `backend` is compiled into this library (*compiled = 1 or 0) and, when
 * sparse_backend_available() reports it unavailable, why (*reason): a build without it, the
 * CUDA backend module or a CUDA library it needs that cannot be loaded (with the loader's
 * message), no driver, no device; "" when it is available. libsparse.so keeps its CUDA backend
 * in a module, libsparse_cuda.so, looked for in SPARSE_CUDA_MODULE (a path) when set, else next
 * to libsparse.so, else on the library search path; it is loaded on the first context that asks
 * for CUDA by name, or by this query or SPARSE_BACKEND_AUTO once the driver reports a device.
 * *reason stays valid until the next call into the library on the calling thread. Either output
 * may be NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for an unknown backend value. */
SPARSE_API sparse_status sparse_experimental_backend_status(sparse_backend backend, int* compiled,
                                                            const char** reason);

#ifdef __cplusplus
}
#endif

#endif /* SPARSE_EXPERIMENTAL_H */
