/*
 * libsparse: the Sparse Transformer model, its trainer, checkpoints and sampling.
 *
 * The model (Child et al. 2019, section 5; details from OpenAI's released
 * training code, openai/distribution_augmentation):
 *   H0 = embed(x shifted right behind a learned start token) + factorized position embeddings
 *   Hk = Hk-1 + a + b,  a = dropout(attention(norm(Hk-1))),  b = dropout(ff(norm(Hk-1 + a)))
 *   logits = norm(HN) W_out (or tied: norm(HN) E^T), loss = cross-entropy in nats
 *   bits per dim = mean loss / ln 2 over every one of the n positions.
 * Tokens are bytes (vocabulary 256). The model trains and samples on the context's backend, in
 * fp32 or, where the backend offers it, with bf16/fp16 matrix products
 * (sparse_train_config.dtype); a backend that lacks one of the model's operations or the dtype
 * makes sparse_model_create return SPARSE_ERR_UNSUPPORTED naming it (nothing runs on another
 * device than the one asked for).
 */
#ifndef SPARSE_MODEL_H
#define SPARSE_MODEL_H

#include "sparse/common.h"
#include "sparse/context.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The attention pattern family of the model. Values are stable. */
typedef enum sparse_model_attention {
  SPARSE_MODEL_ATTENTION_DENSE = 0,   /* every head attends to all j <= i */
  SPARSE_MODEL_ATTENTION_STRIDED = 1, /* type 1 = strided row, type 2 = strided column (stride) */
  SPARSE_MODEL_ATTENTION_FIXED = 2    /* type 1 = fixed block, type 2 = fixed summary (stride,
                                         summary) */
} sparse_model_attention;

/* How the two factorized head types are combined (paper section 4.3). Values are stable. */
typedef enum sparse_head_mode {
  SPARSE_HEADS_INTERLEAVED = 0, /* one type per residual block, following layer_cycle */
  SPARSE_HEADS_MERGED = 1,      /* every head attends to the union of both types */
  SPARSE_HEADS_MULTIHEAD = 2    /* even heads type 1, odd heads type 2 (num_heads >= 2) */
} sparse_head_mode;

/* The row head (type 1) of STRIDED attention. Values are stable.
 * The paper's formula and OpenAI's released code differ by one key per query: */
typedef enum sparse_row_attention {
  SPARSE_ROW_STRIDED = 0, /* the paper: max(0, i - l) <= j <= i, l + 1 keys (strided_row) */
  SPARSE_ROW_LOCAL = 1    /* OpenAI's 'local' (sparse_attention/attention.py, the "b" layers of
                             distribution_augmentation's c10-58m): i - l < j <= i, l keys
                             (local with window l) */
} sparse_row_attention;

/* Model configuration. Fill with sparse_model_config_default() or sparse_model_config_preset(),
 * then change fields. */
typedef struct sparse_model_config {
  uint32_t struct_size;             /* sizeof(sparse_model_config) */
  int64_t seq_len;                  /* n >= 2 (default 256) */
  int32_t num_layers;               /* N >= 1 (default 2) */
  int32_t d_model;                  /* d >= 1, a multiple of num_heads (and of 2 num_heads when
                                       half_qk) (default 64) */
  int32_t num_heads;                /* >= 1 (default 2) */
  sparse_model_attention attention; /* default STRIDED */
  sparse_head_mode head_mode;       /* default INTERLEAVED */
  int64_t stride;                   /* l for STRIDED and FIXED, in [1, seq_len] (default 16) */
  int64_t summary;                  /* c for FIXED, in [1, stride] (default 4) */
  int32_t block_size;               /* 16, 32, 64 or 128 (default 16) */
  char layer_cycle[16];             /* INTERLEAVED: head type of layer k is layer_cycle[k mod len],
                                       '1' or '2', NUL-terminated (default "12"; OpenAI's CIFAR-10
                                       code uses "2111": one column layer per three row layers) */
  int32_t half_qk;                  /* 1: query/key projections of width d / 2 (default 0) */
  int32_t half_ff;                  /* 1: feed-forward inner width 2d instead of 4d (default 0) */
  float dropout;                    /* residual dropout probability in [0, 1) (default 0) */
  int32_t tied_embeddings;          /* 1: logits use the transposed input embedding (default 0) */
  int32_t num_position_dims;        /* 1 to 4 factorized position tables (default 2) */
  int64_t position_shape[4];        /* sizes of the tables, last fastest: {rows, columns, channels}
                                       for images, {ceil(n / l), l} for text and audio; their product
                                       must be >= seq_len (default {16, 16}) */
  int32_t recompute;                /* 1: keep only the residual stream per layer and recompute the
                                       attention and feed-forward activations in the backward pass
                                       (default 0); gradients are identical either way */
  uint64_t seed;                    /* initialisation and dropout seed (default 1) */
  float output_init_std;            /* >= 0: standard deviation of the separate output projection's
                                       initialisation (default 0, OpenAI's zero initialisation;
                                       small values such as 0.02 learn faster in short runs) */
  sparse_row_attention row_attention; /* STRIDED: the row head's keys (default
                                         SPARSE_ROW_STRIDED, the paper's formula;
                                         SPARSE_ROW_LOCAL is OpenAI's) */
  int32_t summary_variants;           /* FIXED: per-head offsets of the summary columns, OpenAI's
                                         num_verts: head h attends to the columns
                                         l - c (v + 1) <= j mod l < l - c v with v = h mod
                                         summary_variants; 0 or 1 = the paper, v = 0 for every head
                                         (default 1); c * summary_variants <= l. With head_mode
                                         MERGED this is OpenAI's 'fixed' attention. */
  uint8_t reserved[52];               /* must be zero */
} sparse_model_config;

/* Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status sparse_model_config_default(sparse_model_config* config);

/* Fills `config` with a named preset:
 *   "cifar10"    128 layers, d 256, 2 heads, strided l = 96 interleaved "2111", half-size QK
 *                and FF, dropout 0.25, n = 3072, positions {32, 32, 3}           (~59M params)
 *   "enwik8"     30 layers, d 512, 8 heads, fixed l = 128 c = 32, dropout 0.4, n = 12288,
 *                positions {96, 128}                                              (~95M)
 *   "imagenet64" 48 layers, d 512, 16 heads, strided l = 128, dropout 0.01, n = 12288,
 *                positions {64, 64, 3}                                            (~152M)
 *   "audio"      48 layers, d 512, 16 heads, strided l = 256, n = 65536,
 *                positions {256, 256}                                             (~152M)
 * These follow the paper's formulas (row heads: strided_row, l + 1 keys). OpenAI's released
 * configurations:
 *   "cifar10-openai" distribution_augmentation's c10-58m: "cifar10" with OpenAI's local row heads
 *                (SPARSE_ROW_LOCAL, window l = 96 keys including the query)
 * and "<name>-small": the same sequence length, pattern and position tables with 4 layers of
 * width 64 and 2 heads, for CPU training.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments or an unknown name. */
SPARSE_API sparse_status sparse_model_config_preset(const char* name, sparse_model_config* config);

/* Number of trainable parameters a model of this configuration has.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL or an invalid configuration. */
SPARSE_API sparse_status sparse_model_config_parameter_count(const sparse_model_config* config,
                                                             int64_t* count);

/* Optimisers. Values are stable. */
typedef enum sparse_optimizer {
  SPARSE_OPTIMIZER_ADAM = 0, /* weight decay as an L2 penalty added to the gradient */
  SPARSE_OPTIMIZER_ADAMW = 1 /* decoupled weight decay */
} sparse_optimizer;

/* Trainer configuration. Fill with sparse_train_config_default(). Weight decay applies to
 * matrices and embedding tables, not to biases and layer-norm gains. */
typedef struct sparse_train_config {
  uint32_t struct_size;       /* sizeof(sparse_train_config) */
  sparse_optimizer optimizer; /* default ADAM (OpenAI's code: Adam with an L2 penalty) */
  float learning_rate;        /* peak learning rate > 0 (default 3.5e-4) */
  float beta1;                /* default 0.9 */
  float beta2;                /* default 0.999 */
  float epsilon;              /* default 1e-8 */
  float weight_decay;         /* >= 0 (default 0.01) */
  int64_t warmup_steps;       /* linear warm-up from 0 over this many steps (default 0) */
  int64_t total_steps;        /* cosine decay to 0 at this step after warm-up; 0 = constant
                                 learning rate after warm-up (default 0) */
  float clip_norm;            /* clip the global gradient norm to this; 0 = off (default 1) */
  int32_t micro_batch;        /* gradient accumulation: sequences per forward/backward pass;
                                 0 = the whole batch at once (default 0) */
  sparse_dtype dtype;         /* precision of the matrix products: SPARSE_DTYPE_F32 (default), or
                                 mixed precision with SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16 inputs
                                 and fp32 accumulation, where the backend offers it (CUDA; the CPU
                                 backend refuses it with SPARSE_ERR_UNSUPPORTED). Parameters,
                                 gradients and Adam moments stay fp32 in every mode; in mixed
                                 precision the activations read only by matrix products (and by
                                 the attention where it runs in 16 bits) are stored in 16 bits,
                                 which changes no result. */
  float loss_scale;           /* > 0, a power of two >= 2^-24 (unscaling is then exact):
                                 dynamic loss scaling from this initial scale (the loss
                                 gradient is multiplied by the scale and the gradients divided by
                                 it; a step with a non-finite gradient is skipped and halves the
                                 scale; loss_scale_window clean steps in a row double it);
                                 0 = the dtype's default: dynamic from 65536 for F16, off (scale
                                 1) otherwise (default 0) */
  int32_t loss_scale_window;  /* clean steps before the scale doubles; 0 = 1000 (default 0) */
  uint8_t reserved[52];       /* must be zero */
} sparse_train_config;

/* Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status sparse_train_config_default(sparse_train_config* config);

typedef struct sparse_model sparse_model;

/* Creates and initialises a model (OpenAI's initialisation, seeded by config->seed). `train` may
 * be NULL for the defaults. The model holds a reference to `context` (destroying the context
 * first is allowed: it lives until its last model is destroyed); its thread count is used. On
 * failure *out is NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT naming the bad field (also a struct_size other than
 * sizeof); SPARSE_ERR_UNSUPPORTED (the backend lacks an operation of the model or the dtype, e.g.
 * bf16/fp16 on the CPU backend); SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_model_create(sparse_context* context,
                                             const sparse_model_config* config,
                                             const sparse_train_config* train, sparse_model** out);

/* NULL is accepted. */
SPARSE_API void sparse_model_destroy(sparse_model* model);

/* Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status sparse_model_parameter_count(const sparse_model* model, int64_t* count);
SPARSE_API sparse_status sparse_model_get_config(const sparse_model* model,
                                                 sparse_model_config* config);
SPARSE_API sparse_status sparse_model_get_train_config(const sparse_model* model,
                                                       sparse_train_config* config);
/* Optimiser steps taken so far. */
SPARSE_API sparse_status sparse_model_step(const sparse_model* model, int64_t* step);

/* Statistics of one training step. */
typedef struct sparse_train_stats {
  uint32_t struct_size;          /* set by the caller to sizeof(sparse_train_stats) */
  int64_t step;                  /* optimiser steps after this one */
  double loss;                   /* mean cross-entropy in nats over the batch (before the update) */
  double bits_per_dim;           /* loss / ln 2 */
  double grad_norm;              /* global gradient norm before clipping */
  double learning_rate;          /* the learning rate this step used */
  int64_t tokens;                /* tokens processed in this step */
  double seconds;                /* wall time of this step */
  int64_t peak_activation_bytes; /* peak memory of activations and working buffers in this step */
  double loss_scale;             /* the loss scale this step used (1 without loss scaling) */
  int64_t skipped_steps;         /* steps skipped so far for a non-finite gradient (this one
                                    included; a skipped step leaves `step` unchanged) */
} sparse_train_stats;

/* One optimiser step on `batch` sequences of seq_len bytes (batch * seq_len bytes, row-major):
 * forward, backward (in micro-batches when micro_batch is set), global-norm clipping, Adam or
 * AdamW update with the scheduled learning rate. Deterministic for a given seed, data and
 * thread count. `stats` may be NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL, batch < 1, micro_batch not dividing batch, a too
 * small stats->struct_size); SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_model_train_step(sparse_model* model, const uint8_t* tokens,
                                                 int64_t batch, sparse_train_stats* stats);

/* Mean bits per dim of the model on `batch` sequences, without dropout and without changing the
 * model. Errors: SPARSE_ERR_INVALID_ARGUMENT. */
SPARSE_API sparse_status sparse_model_evaluate(sparse_model* model, const uint8_t* tokens,
                                               int64_t batch, double* bits_per_dim);

/* Bits (-log2 of the predicted probability) of each of the batch * seq_len tokens given the
 * tokens before it in its sequence, without dropout and without changing the model:
 * bits[b * seq_len + i] is token i of sequence b (token 0 is predicted from the start-of-sequence
 * input alone). Their mean is what sparse_model_evaluate returns; this is the per-position form
 * that evaluations scoring only part of each sequence (sliding windows) need. `count` is the
 * number of doubles `bits` holds.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL, batch < 1); SPARSE_ERR_BUFFER_TOO_SMALL (count <
 * batch * seq_len; nothing is written). */
SPARSE_API sparse_status sparse_model_token_bits(sparse_model* model, const uint8_t* tokens,
                                                 int64_t batch, double* bits, size_t count);

/* Peak activation memory in bytes of one training forward/backward pass on `batch` sequences,
 * measured by running one (the model is not changed). */
SPARSE_API sparse_status sparse_model_measure_memory(sparse_model* model, const uint8_t* tokens,
                                                     int64_t batch, int64_t* peak_bytes);

/* Sampling parameters. Fill with sparse_sample_params_default(). */
typedef struct sparse_sample_params {
  uint32_t struct_size; /* sizeof(sparse_sample_params) */
  float temperature;    /* >= 0; 0 = greedy (default 1) */
  uint64_t seed;        /* default 1 */
  uint8_t reserved[32]; /* must be zero */
} sparse_sample_params;

/* Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status sparse_sample_params_default(sparse_sample_params* params);

/* Autoregressive generation with a per-layer key/value cache: writes `length` bytes to `out`
 * (1 <= length <= seq_len); the first `prompt_len` are copied from `prompt` (may be NULL when
 * prompt_len == 0), the rest are sampled. `params` may be NULL for the defaults.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT. */
SPARSE_API sparse_status sparse_model_sample(sparse_model* model,
                                             const sparse_sample_params* params,
                                             const uint8_t* prompt, int64_t prompt_len,
                                             uint8_t* out, int64_t length);

/* Writes a checkpoint (safetensors layout: 8-byte little-endian header length, JSON header with
 * the configuration, step, seeds and checksums of the header and the data in "__metadata__",
 * then the raw fp32 parameters and Adam moments). Written to a temporary file unique to this call
 * in the same folder, then renamed over `path`, so an existing checkpoint is replaced only by a
 * complete new one and concurrent savers never share a temporary file. When `path` is a symbolic
 * link, its target is replaced (the link is kept); an existing `path` that is not a regular file
 * (a device, a FIFO, a folder) is refused.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT; SPARSE_ERR_IO (naming the path and the reason). */
SPARSE_API sparse_status sparse_model_save(const sparse_model* model, const char* path);

/* Creates a model from a checkpoint (configuration, parameters, optimiser state, step). Training
 * continues exactly as it would have without the save. On failure *out is NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT; SPARSE_ERR_IO (missing, unreadable, not a regular file: a
 * FIFO or device is refused without blocking); SPARSE_ERR_FORMAT
 * (truncated, corrupted, a tensor whose name, dtype or shape does not match the configuration);
 * SPARSE_ERR_UNSUPPORTED naming the checkpoint and its dtype when the context's backend cannot run
 * the precision the checkpoint was trained in (a bf16 or fp16 run on the CPU backend). */
SPARSE_API sparse_status sparse_model_load(sparse_context* context, const char* path,
                                           sparse_model** out);

/* Loads a checkpoint into an existing model, which keeps its own trainer configuration.
 * Errors: as sparse_model_load, plus SPARSE_ERR_FORMAT when the checkpoint's model
 * configuration differs from the model's; the model is unchanged on failure. */
SPARSE_API sparse_status sparse_model_restore(sparse_model* model, const char* path);

/* Formats a progress line: "step S/T | loss L | bpd B | lr R | N tok/s | ETA HhMMmSSs".
 * total_steps 0 = unknown: "step S" and ETA "?" (ETA is "?" also before the first step).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL, size 0); SPARSE_ERR_BUFFER_TOO_SMALL (truncated). */
SPARSE_API sparse_status sparse_train_progress_line(const sparse_train_stats* stats,
                                                    int64_t total_steps, double elapsed_seconds,
                                                    char* buffer, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* SPARSE_MODEL_H */
