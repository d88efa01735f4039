// Contexts and backend selection of the C ABI.
#include "sparse/context.h"

#include <cctype>
#include <cstring>
#include <memory>
#include <string>

#include "capi/src/guard.hpp"
#include "libsparse/backend.hpp"
#include "libsparse/resources.hpp"

namespace {

constexpr uint64_t kDefaultSeed = 0x5eed;
// The first version of sparse_settings ends after `cuda_stream`; callers compiled against it
// pass that size, newer fields then keep their defaults.
constexpr size_t kSettingsMinSize = offsetof(sparse_settings, cuda_stream) + sizeof(void*);

bool known_backend(const sparse_backend& b) {
  const int v = sparse::enum_value(b);
  return v == SPARSE_BACKEND_AUTO || v == SPARSE_BACKEND_CPU || v == SPARSE_BACKEND_CUDA;
}

}  // namespace

extern "C" {

SPARSE_API const char* sparse_backend_name(sparse_backend backend) {
  switch (sparse::enum_value(backend)) {
    case SPARSE_BACKEND_AUTO:
      return "auto";
    case SPARSE_BACKEND_CPU:
      return "cpu";
    case SPARSE_BACKEND_CUDA:
      return "cuda";
  }
  return "unknown";
}

SPARSE_API sparse_status sparse_backend_from_name(const char* name, sparse_backend* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(name != nullptr, "name is NULL");
    sparse::require(out != nullptr, "out is NULL");
    std::string lower(name);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (sparse_backend b : {SPARSE_BACKEND_AUTO, SPARSE_BACKEND_CPU, SPARSE_BACKEND_CUDA}) {
      if (lower == sparse_backend_name(b)) {
        *out = b;
        return;
      }
    }
    sparse::throw_invalid("unknown backend name \"", name, "\" (expected auto, cpu or cuda)");
  });
}

SPARSE_API sparse_status sparse_backend_available(sparse_backend backend, int* available) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(available != nullptr, "available is NULL");
    sparse::require(known_backend(backend), "unknown backend value ", sparse::enum_value(backend));
    *available = backend == SPARSE_BACKEND_CUDA ? (sparse::cuda_device_count() > 0) : 1;
  });
}

SPARSE_API sparse_status sparse_cuda_device_count(int* count) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(count != nullptr, "count is NULL");
    *count = sparse::cuda_device_count();
  });
}

SPARSE_API sparse_status sparse_settings_default(sparse_settings* settings) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(settings != nullptr, "settings is NULL");
    std::memset(settings, 0, sizeof *settings);
    settings->struct_size = sizeof(sparse_settings);
    settings->backend = SPARSE_BACKEND_AUTO;
    settings->num_threads = 0;
    settings->device_index = 0;
    settings->seed = kDefaultSeed;
    settings->cuda_stream = nullptr;
  });
}

SPARSE_API sparse_status sparse_context_create(const sparse_settings* settings,
                                               sparse_context** out) {
  if (out != nullptr) *out = nullptr;
  return sparse::capi::guard(__func__, [&] {
    sparse::require(out != nullptr, "out is NULL");
    sparse_settings s;
    sparse_settings_default(&s);
    if (settings != nullptr) {
      sparse::require(settings->struct_size >= kSettingsMinSize,
                      "settings->struct_size = ", settings->struct_size, " is too small (at least ",
                      kSettingsMinSize, "); initialise settings with sparse_settings_default()");
      const size_t size = settings->struct_size < sizeof s ? settings->struct_size : sizeof s;
      std::memcpy(&s, settings, size);
      s.struct_size = sizeof s;
      for (unsigned char byte : s.reserved)
        sparse::require(byte == 0, "settings->reserved must be all zero");
    }
    sparse::require(known_backend(s.backend), "settings->backend = ", sparse::enum_value(s.backend),
                    " is not a known sparse_backend");
    sparse::require(s.num_threads >= 0, "settings->num_threads = ", s.num_threads,
                    " must be >= 0 (0 = all hardware threads)");
    sparse::require(s.device_index >= 0, "settings->device_index = ", s.device_index,
                    " must be >= 0");

    auto context = std::make_unique<sparse_context>();
    context->settings = s;
    const bool want_cuda =
        s.backend == SPARSE_BACKEND_CUDA ||
        (s.backend == SPARSE_BACKEND_AUTO && sparse::cuda_device_count() > s.device_index);
    if (want_cuda) {
      context->backend = sparse::make_cuda_backend(s.device_index, s.cuda_stream, s.seed);
    } else {
      context->backend = sparse::make_cpu_backend(s.num_threads, s.seed);
    }
    *out = context.release();
  });
}

SPARSE_API void sparse_context_destroy(sparse_context* context) {
  sparse::release_context(context);
}

SPARSE_API sparse_status sparse_context_backend(const sparse_context* context,
                                                sparse_backend* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr, "context is NULL");
    sparse::require(out != nullptr, "out is NULL");
    *out = context->backend->kind();
  });
}

SPARSE_API sparse_status sparse_context_num_threads(const sparse_context* context, int32_t* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr, "context is NULL");
    sparse::require(out != nullptr, "out is NULL");
    *out = context->backend->num_threads();
  });
}

SPARSE_API sparse_status sparse_context_alloc(sparse_context* context, size_t bytes, void** out) {
  if (out != nullptr) *out = nullptr;
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr, "context is NULL");
    sparse::require(out != nullptr, "out is NULL");
    if (bytes == 0) return;
    // Host memory counts against the process's memory limit, as every allocation the library
    // makes for itself does (the device's own allocator refuses what does not fit).
    if (context->backend->memory_kind() == SPARSE_MEMORY_HOST)
      sparse::check_memory(static_cast<double>(bytes),
                           "sparse_context_alloc(" + std::to_string(bytes) + " bytes)");
    *out = context->backend->allocate(bytes);
  });
}

SPARSE_API void sparse_context_free(sparse_context* context, void* ptr) {
  if (context != nullptr) context->backend->free(ptr);
}

SPARSE_API sparse_status sparse_context_memory(const sparse_context* context, sparse_memory* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr, "context is NULL");
    sparse::require(out != nullptr, "out is NULL");
    *out = context->backend->memory_kind();
  });
}

SPARSE_API sparse_status sparse_context_copy(sparse_context* context, void* dst,
                                             sparse_memory dst_memory, const void* src,
                                             sparse_memory src_memory, size_t bytes) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr, "context is NULL");
    const int dm = sparse::enum_value(dst_memory), sm = sparse::enum_value(src_memory);
    for (int m : {dm, sm})
      sparse::require(m == SPARSE_MEMORY_HOST || m == SPARSE_MEMORY_DEVICE, "memory kind ", m,
                      " is not a known sparse_memory");
    if (bytes == 0) return;
    sparse::require(dst != nullptr, "dst is NULL");
    sparse::require(src != nullptr, "src is NULL");
    const sparse_memory own = context->backend->memory_kind();
    for (int m : {dm, sm})
      sparse::require(m == SPARSE_MEMORY_HOST || own == SPARSE_MEMORY_DEVICE,
                      "device memory given to a context on the CPU backend");
    context->backend->copy(dst, dst_memory, src, src_memory, bytes);
  });
}

SPARSE_API sparse_status sparse_context_synchronize(sparse_context* context) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr, "context is NULL");
    context->backend->synchronize();
  });
}

}  // extern "C"
