/*
 * libsparse: status codes, error messages, versions and tensor descriptors.
 *
 * Conventions shared by every header of the C ABI:
 * - every function that can fail returns a sparse_status; SPARSE_OK is 0 and errors are
 *   negative. The numeric values below are stable for the life of the major version and new
 *   codes are only ever appended;
 * - after a failure, sparse_last_error() returns a message naming what was wrong. The message is
 *   thread-local: it describes the last failing call made *on the calling thread*;
 * - the library never calls exit() or abort() on bad input and no C++ exception crosses the ABI;
 * - objects come in create/destroy pairs and every destroy function accepts NULL;
 * - structs that may grow carry a leading `struct_size` field, filled by their *_default()
 *   function. sparse_settings, sparse_dataset_desc and sparse_train_stats also accept the smaller
 *   size of their first version (the library then reads or writes only the fields that fit);
 *   every other struct_size must equal the library's sizeof, else SPARSE_ERR_INVALID_ARGUMENT.
 */
#ifndef SPARSE_COMMON_H
#define SPARSE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "sparse/version.h"

#if defined(_WIN32)
#if defined(SPARSE_BUILDING_LIBRARY)
#define SPARSE_API __declspec(dllexport)
#elif defined(SPARSE_STATIC)
#define SPARSE_API
#else
#define SPARSE_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define SPARSE_API __attribute__((visibility("default")))
#else
#define SPARSE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Values are stable; new codes are appended. */
typedef enum sparse_status {
  SPARSE_OK = 0,
  SPARSE_ERR_INVALID_ARGUMENT = -1, /* a NULL pointer, a size or value out of range, shapes that
                                       do not match */
  SPARSE_ERR_OUT_OF_MEMORY = -2,    /* host or device allocation failed, an estimate above the
                                       memory limit (SPARSE_MEMORY_LIMIT, else physical memory,
                                       cgroup and ulimit), or threads that could not start */
  SPARSE_ERR_UNSUPPORTED = -3,      /* valid request this build or machine cannot serve (e.g. the
                                       CUDA backend without a GPU, a dtype a kernel lacks) */
  SPARSE_ERR_DEVICE = -4,           /* the GPU runtime reported an error */
  SPARSE_ERR_IO = -5,               /* a file could not be opened, read or written */
  SPARSE_ERR_FORMAT = -6,           /* a file or buffer is not in the expected format */
  SPARSE_ERR_INTERNAL = -7,         /* a bug in the library: please report it */
  SPARSE_ERR_BUFFER_TOO_SMALL = -8  /* an output buffer is smaller than the result */
} sparse_status;

/* A short, static, human-readable name of a status ("invalid argument", ...). Never NULL:
 * unknown values give "unknown status". */
SPARSE_API const char* sparse_status_string(sparse_status status);

/* The detail message of the last failing call on this thread (empty string if none). The pointer
 * stays valid until the next call into the library on the same thread. Never NULL. */
SPARSE_API const char* sparse_last_error(void);

/* Clears this thread's last error message. */
SPARSE_API void sparse_clear_error(void);

/* Run-time versions. sparse_api_version() returns SPARSE_API_VERSION of the *library* that is
 * loaded, which may differ from the header the caller compiled against. */
SPARSE_API uint32_t sparse_api_version(void);
/* "MAJOR.MINOR.PATCH" of the loaded library. Never NULL. */
SPARSE_API const char* sparse_version_string(void);
/* A description of how the library was built (compiler, CUDA on/off and architectures,
 * OpenMP, build type). Never NULL. */
SPARSE_API const char* sparse_build_info(void);

/* Element types of tensors. Values are stable. */
typedef enum sparse_dtype {
  SPARSE_DTYPE_F32 = 0,
  SPARSE_DTYPE_F16 = 1,
  SPARSE_DTYPE_BF16 = 2,
  SPARSE_DTYPE_F64 = 3
} sparse_dtype;

/* Where a tensor's data lives. */
typedef enum sparse_memory { SPARSE_MEMORY_HOST = 0, SPARSE_MEMORY_DEVICE = 1 } sparse_memory;

#define SPARSE_TENSOR_MAX_DIMS 8

/* A caller-owned tensor descriptor. The library never frees `data` and never keeps the pointer
 * beyond the call it was passed to. `data` must be a multiple of the dtype's size, as in any C
 * array (else SPARSE_ERR_INVALID_ARGUMENT). `strides` are in elements (not bytes), may be any
 * non-negative values that keep distinct indices at distinct addresses for outputs, and are
 * read only for the first `ndim` dimensions. */
typedef struct sparse_tensor {
  void* data;
  sparse_dtype dtype;
  sparse_memory memory;
  int32_t device; /* CUDA device ordinal when memory == SPARSE_MEMORY_DEVICE, else ignored */
  int32_t ndim;
  int64_t shape[SPARSE_TENSOR_MAX_DIMS];
  int64_t strides[SPARSE_TENSOR_MAX_DIMS];
} sparse_tensor;

/* Fills a descriptor for a dense row-major (C-contiguous) host tensor of `ndim` dimensions.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT if `out` or `shape` is NULL, `ndim` is outside
 * [1, SPARSE_TENSOR_MAX_DIMS], `dtype` is not a sparse_dtype, a dimension is negative or the
 * product of the (non-zero) dimensions exceeds 2^63 - 1; `out` is unchanged then. */
SPARSE_API sparse_status sparse_tensor_contiguous(sparse_tensor* out, void* data,
                                                  sparse_dtype dtype, int32_t ndim,
                                                  const int64_t* shape);

/* Size in bytes of one element of `dtype`, or 0 for an unknown value. */
SPARSE_API size_t sparse_dtype_size(sparse_dtype dtype);

#ifdef __cplusplus
}
#endif

#endif /* SPARSE_COMMON_H */
