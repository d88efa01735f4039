// The interface between libsparse.so and its CUDA backend module (libsparse_cuda.so).
//
// In the shared library the CUDA backend is a module of its own, loaded with dlopen on the first
// request for CUDA (libsparse/cuda_loader.cpp), so that libsparse.so loads and runs on the CPU
// where the CUDA runtime and cuBLAS are missing, and a process that never uses a GPU does not map
// them. The module exports one C-linkage function, SPARSE_CUDA_MODULE_ENTRY, returning this
// table. The module is built from the same sources as the library and is not part of the public
// ABI: the loader refuses a module whose struct_size, interface or library version differ.
// The static library links the CUDA backend directly and does not use this table.
#pragma once

#include <cstdint>
#include <string>

#include "libsparse/backend.hpp"

namespace sparse {

// The layout of this table: raise when it changes. Changes to the classes that cross the
// boundary (backend.hpp, model_ops.hpp, tensor.hpp, layout.hpp, ...) need no hand: the build
// hashes those headers into SPARSE_CUDA_MODULE_HASH (libsparse/module_hash.py), which the loader
// compares too.
constexpr uint32_t kCudaModuleInterface = 2;

struct CudaModule {
  uint32_t struct_size;         // sizeof(CudaModule) in the module's build
  uint32_t interface;           // kCudaModuleInterface in the module's build
  const char* library_version;  // SPARSE_VERSION_STRING of the module's build
  const char* interface_hash;   // SPARSE_CUDA_MODULE_HASH of the module's build
  // The functions of backend.hpp, as the module implements them. make_backend throws
  // sparse::Error (SPARSE_ERR_UNSUPPORTED without a device); the caller owns the result.
  int (*device_count)() noexcept;
  std::string (*unavailable_reason)();
  Backend* (*make_backend)(int device_index, void* stream, uint64_t seed);
};

}  // namespace sparse

#define SPARSE_CUDA_MODULE_ENTRY "sparse_cuda_module"
#define SPARSE_CUDA_MODULE_FILE "libsparse_cuda.so"

extern "C" {
typedef const sparse::CudaModule* (*sparse_cuda_module_entry)(void);
}
