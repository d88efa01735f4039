// The entry point of the CUDA backend module libsparse_cuda.so (see libsparse/cuda_module.hpp):
// the only symbol the module exports.
#include "libsparse/backend.hpp"
#include "libsparse/cuda_module.hpp"
#include "sparse_config.h"
#include "sparse_cuda_module_hash.h"

namespace {

sparse::Backend* make_backend(int device_index, void* stream, uint64_t seed) {
  return sparse::make_cuda_backend(device_index, stream, seed).release();
}

const sparse::CudaModule kModule = {
    sizeof(sparse::CudaModule),
    sparse::kCudaModuleInterface,
    SPARSE_VERSION_STRING,
    SPARSE_CUDA_MODULE_HASH,
    sparse::cuda_device_count,
    sparse::cuda_unavailable_reason,
    make_backend,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const sparse::CudaModule* sparse_cuda_module(
    void) {
  return &kModule;
}
