/* The ABI calls of fuzz_capi that take an enum by value, called with any int as a C caller may
 * pass it. In C++ an out-of-range value cannot even be loaded as the enum type (undefined
 * behaviour, which UndefinedBehaviorSanitizer reports in the fuzzer itself), in C it is legal. */
#include "sparse/experimental.h"
#include "sparse/sparse.h"

const char* shim_status_string(int v) { return sparse_status_string((sparse_status)v); }
size_t shim_dtype_size(int v) { return sparse_dtype_size((sparse_dtype)v); }
sparse_status shim_tensor_contiguous(sparse_tensor* out, void* data, int dtype, int32_t ndim,
                                     const int64_t* shape) {
  return sparse_tensor_contiguous(out, data, (sparse_dtype)dtype, ndim, shape);
}
const char* shim_backend_name(int v) { return sparse_backend_name((sparse_backend)v); }
sparse_status shim_backend_available(int v, int* available) {
  return sparse_backend_available((sparse_backend)v, available);
}
sparse_status shim_backend_status(int v, int* compiled, const char** reason) {
  return sparse_experimental_backend_status((sparse_backend)v, compiled, reason);
}
sparse_status shim_context_copy(sparse_context* c, void* dst, int dst_memory, const void* src,
                                int src_memory, size_t bytes) {
  return sparse_context_copy(c, dst, (sparse_memory)dst_memory, src, (sparse_memory)src_memory,
                             bytes);
}
const char* shim_pattern_kind_name(int v) {
  return sparse_pattern_kind_name((sparse_pattern_kind)v);
}
sparse_status shim_pattern_default(sparse_pattern* p, int kind) {
  return sparse_pattern_default(p, (sparse_pattern_kind)kind);
}
const char* shim_dataset_kind_name(int v) {
  return sparse_dataset_kind_name((sparse_dataset_kind)v);
}
sparse_status shim_dataset_desc_default(sparse_dataset_desc* d, int kind) {
  return sparse_dataset_desc_default(d, (sparse_dataset_kind)kind);
}
sparse_status shim_dataset_read(const sparse_dataset* d, int64_t first, int64_t count, int type,
                                void* out, size_t out_bytes) {
  return sparse_dataset_read(d, first, count, (sparse_token_type)type, out, out_bytes);
}
sparse_status shim_dataset_next_batch(sparse_dataset* d, int64_t batch, int type, void* out,
                                      size_t out_bytes, int64_t* indices) {
  return sparse_dataset_next_batch(d, batch, (sparse_token_type)type, out, out_bytes, indices);
}

/* A gradient reducer written in C: it returns shim_reducer_status, any int, and copies
 * shim_reducer_message (shim_reducer_message_size bytes, possibly without a NUL) into the error
 * buffer, at most error_size bytes. */
int shim_reducer_status;
const char* shim_reducer_message;
size_t shim_reducer_message_size;

static sparse_status shim_reply(char* error, size_t error_size) {
  size_t n = shim_reducer_message_size < error_size ? shim_reducer_message_size : error_size;
  for (size_t i = 0; i < n; ++i) error[i] = shim_reducer_message[i];
  return (sparse_status)shim_reducer_status;
}
sparse_status shim_hook_sum(void* user, float* data, int64_t count, sparse_memory memory,
                            char* error, size_t error_size) {
  (void)user;
  (void)data;
  (void)count;
  (void)memory;
  return shim_reply(error, error_size);
}
sparse_status shim_hook_sum_f64(void* user, double* values, int64_t count, char* error,
                                size_t error_size) {
  (void)user;
  (void)values;
  (void)count;
  return shim_reply(error, error_size);
}
sparse_status shim_hook_wait(void* user, char* error, size_t error_size) {
  (void)user;
  return shim_reply(error, error_size);
}
