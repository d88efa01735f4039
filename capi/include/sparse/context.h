/*
 * libsparse: contexts and backends.
 *
 * A context owns one compute backend (the Eigen CPU reference, or CUDA on one device), its thread
 * count and its random seed. Every compute call takes a context. A context is not thread-safe:
 * use one context per thread, or serialise calls on a shared one.
 */
#ifndef SPARSE_CONTEXT_H
#define SPARSE_CONTEXT_H

#include "sparse/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Compute backends. Values are stable. */
typedef enum sparse_backend {
  SPARSE_BACKEND_AUTO = 0, /* CUDA if this build has it *and* a GPU is present, else CPU */
  SPARSE_BACKEND_CPU = 1,  /* Eigen reference; always available */
  SPARSE_BACKEND_CUDA = 2  /* NVIDIA GPU; needs a CUDA build and a device */
} sparse_backend;

/* Static lowercase name of a backend ("auto", "cpu", "cuda"), or "unknown". Never NULL. */
SPARSE_API const char* sparse_backend_name(sparse_backend backend);

/* Parses "auto", "cpu" or "cuda" (case-insensitive).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments or any other name. */
SPARSE_API sparse_status sparse_backend_from_name(const char* name, sparse_backend* out);

/* Sets *available to 1 if `backend` is compiled into this library *and* can run on this machine
 * now (for CUDA: the driver loads, at least one device is present and, in the shared library,
 * its CUDA backend module and the CUDA libraries load), else 0. AUTO and CPU are always
 * available. sparse_experimental_backend_status() (sparse/experimental.h) says why not.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL `available` or an unknown backend value. */
SPARSE_API sparse_status sparse_backend_available(sparse_backend backend, int* available);

/* Number of CUDA devices visible to this process (0 in a build without CUDA or without a driver).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL `count`. */
SPARSE_API sparse_status sparse_cuda_device_count(int* count);

/* Settings for sparse_context_create(). Always initialise with sparse_settings_default(), then
 * change fields: fields added in later versions get their defaults that way. */
typedef struct sparse_settings {
  uint32_t struct_size;   /* sizeof(sparse_settings), set by sparse_settings_default() */
  sparse_backend backend; /* default SPARSE_BACKEND_AUTO */
  int32_t num_threads;    /* CPU threads in all, nested OpenMP regions included; 0 = all
                             hardware threads, at most OMP_THREAD_LIMIT (default 0) */
  int32_t device_index;   /* CUDA device ordinal (default 0) */
  uint64_t seed;          /* seed of the context's random streams (default 0x5eed) */
  void* cuda_stream;      /* a cudaStream_t to run on, or NULL for the context's own stream */
  uint8_t reserved[64];   /* must be zero; room for future fields */
} sparse_settings;

/* Fills `settings` with the defaults above.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status sparse_settings_default(sparse_settings* settings);

typedef struct sparse_context sparse_context;

/* Creates a context. `settings` may be NULL for the defaults. On success *out owns a new context
 * to be released with sparse_context_destroy(); on failure *out is set to NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL out, struct_size too small, an unknown backend,
 * negative thread count or device index, more threads than OMP_THREAD_LIMIT, non-zero reserved
 * bytes); SPARSE_ERR_UNSUPPORTED when
 * CUDA is asked for and this build lacks it or no GPU is present; SPARSE_ERR_DEVICE when the
 * device exists but cannot be initialised; SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_context_create(const sparse_settings* settings,
                                               sparse_context** out);

/* Releases the caller's reference to a context. The context, and everything it owns, is freed
 * once no model made on it remains (each model holds a reference until sparse_model_destroy);
 * memory from sparse_context_alloc() must be freed before. NULL is accepted and ignored. */
SPARSE_API void sparse_context_destroy(sparse_context* context);

/* The backend the context actually runs on (never AUTO).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments. */
SPARSE_API sparse_status sparse_context_backend(const sparse_context* context, sparse_backend* out);

/* The number of CPU threads the context uses (after resolving 0 to the hardware count).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments. */
SPARSE_API sparse_status sparse_context_num_threads(const sparse_context* context, int32_t* out);

/* Waits until all work queued by the context has finished (a no-op on the CPU backend).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL; SPARSE_ERR_DEVICE on a GPU error. */
SPARSE_API sparse_status sparse_context_synchronize(sparse_context* context);

/* Memory where the context computes: host memory for the CPU backend (64-byte aligned), device
 * memory of the context's GPU for CUDA. Lets C, Rust and Julia callers run on the GPU without the
 * CUDA toolkit. On failure *out is NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL arguments); SPARSE_ERR_OUT_OF_MEMORY (host memory
 * also when `bytes` exceeds the memory limit of common.h); SPARSE_ERR_DEVICE. A size of 0 gives
 * *out = NULL and SPARSE_OK. */
SPARSE_API sparse_status sparse_context_alloc(sparse_context* context, size_t bytes, void** out);

/* Frees memory from sparse_context_alloc() of the same context. NULL pointers are ignored. */
SPARSE_API void sparse_context_free(sparse_context* context, void* ptr);

/* The memory kind sparse_context_alloc() returns (SPARSE_MEMORY_HOST or SPARSE_MEMORY_DEVICE).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments. */
SPARSE_API sparse_status sparse_context_memory(const sparse_context* context, sparse_memory* out);

/* Copies `bytes` bytes between host memory and the context's memory (any direction), and waits
 * until the copy has finished.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL pointers with bytes > 0, unknown memory kinds, device
 * memory on a CPU context); SPARSE_ERR_DEVICE. */
SPARSE_API sparse_status sparse_context_copy(sparse_context* context, void* dst,
                                             sparse_memory dst_memory, const void* src,
                                             sparse_memory src_memory, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif /* SPARSE_CONTEXT_H */
