// Builds without NCCL: the NCCL reducer is unavailable (see reducer.hpp).
#include "libsparse/error.hpp"
#include "libsparse/parallel/reducer.hpp"

namespace sparse {

bool nccl_compiled() noexcept { return false; }

std::unique_ptr<GradientReducer> make_nccl_reducer(std::shared_ptr<GradientReducer>, int) {
  throw_error(SPARSE_ERR_UNSUPPORTED,
              "this build has no NCCL support (it needs the CUDA backend and nccl.h)");
}

}  // namespace sparse
