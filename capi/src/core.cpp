// Status strings, error messages, versions and tensor helpers of the C ABI.
#include <cstring>
#include <string>

#include "capi/src/guard.hpp"
#include "libsparse/error.hpp"
#include "sparse/common.h"
#include "sparse_config.h"

namespace sparse::capi {
namespace {
thread_local std::string last_error_message;
}

void set_last_error(const char* function, const char* message) noexcept {
  try {
    last_error_message.assign(function);
    last_error_message.append(": ");
    last_error_message.append(message);
  } catch (...) {
    // Out of memory while recording the message: keep whatever fits.
  }
}

}  // namespace sparse::capi

extern "C" {

SPARSE_API const char* sparse_status_string(sparse_status status) {
  switch (sparse::enum_value(status)) {
    case SPARSE_OK:
      return "ok";
    case SPARSE_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case SPARSE_ERR_OUT_OF_MEMORY:
      return "out of memory";
    case SPARSE_ERR_UNSUPPORTED:
      return "unsupported";
    case SPARSE_ERR_DEVICE:
      return "device error";
    case SPARSE_ERR_IO:
      return "I/O error";
    case SPARSE_ERR_FORMAT:
      return "format error";
    case SPARSE_ERR_INTERNAL:
      return "internal error";
    case SPARSE_ERR_BUFFER_TOO_SMALL:
      return "buffer too small";
  }
  return "unknown status";
}

SPARSE_API const char* sparse_last_error(void) { return sparse::capi::last_error_message.c_str(); }

SPARSE_API void sparse_clear_error(void) { sparse::capi::last_error_message.clear(); }

SPARSE_API uint32_t sparse_api_version(void) { return SPARSE_API_VERSION; }

SPARSE_API const char* sparse_version_string(void) { return SPARSE_VERSION_STRING; }

SPARSE_API const char* sparse_build_info(void) { return SPARSE_BUILD_INFO; }

SPARSE_API size_t sparse_dtype_size(sparse_dtype dtype) {
  switch (sparse::enum_value(dtype)) {
    case SPARSE_DTYPE_F32:
      return 4;
    case SPARSE_DTYPE_F16:
      return 2;
    case SPARSE_DTYPE_BF16:
      return 2;
    case SPARSE_DTYPE_F64:
      return 8;
  }
  return 0;
}

SPARSE_API sparse_status sparse_tensor_contiguous(sparse_tensor* out, void* data,
                                                  sparse_dtype dtype, int32_t ndim,
                                                  const int64_t* shape) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(out != nullptr, "out is NULL");
    sparse::require(shape != nullptr, "shape is NULL");
    sparse::require(ndim >= 1 && ndim <= SPARSE_TENSOR_MAX_DIMS, "ndim = ", ndim,
                    " is outside [1, ", SPARSE_TENSOR_MAX_DIMS, "]");
    sparse::require(sparse::known_dtype(sparse::enum_value(dtype)), "dtype ",
                    sparse::enum_value(dtype), " is not a known sparse_dtype");
    int64_t elements = 1;
    for (int i = 0; i < ndim; ++i) {
      sparse::require(shape[i] >= 0, "shape[", i, "] = ", shape[i], " is negative");
      sparse::require(!__builtin_mul_overflow(elements, shape[i] > 0 ? shape[i] : 1, &elements),
                      "shape[", i, "] = ", shape[i],
                      ": the tensor has more elements than an int64_t counts (2^63 - 1)");
    }
    sparse_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    t.memory = SPARSE_MEMORY_HOST;
    t.ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      t.shape[i] = shape[i];
      t.strides[i] = stride;
      stride *= shape[i] > 0 ? shape[i] : 1;
    }
    *out = t;
  });
}

}  // extern "C"
