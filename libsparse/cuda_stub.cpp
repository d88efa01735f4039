// Builds without CUDA export the same symbols; asking for the GPU gets SPARSE_ERR_UNSUPPORTED.
#include "sparse_config.h"

#if !SPARSE_HAVE_CUDA
#include "libsparse/backend.hpp"
#include "libsparse/error.hpp"

namespace sparse {

std::unique_ptr<Backend> make_cuda_backend(int, void*, uint64_t) {
  throw_error(SPARSE_ERR_UNSUPPORTED, cuda_unavailable_reason());
}

int cuda_device_count() noexcept { return 0; }
std::string cuda_unavailable_reason() {
  return "this build of libsparse has no CUDA backend (configure with -Dcuda=enabled on a "
         "machine with nvcc)";
}
bool cuda_compiled() noexcept { return false; }

}  // namespace sparse
#endif
