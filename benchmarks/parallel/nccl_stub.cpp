// Builds without NCCL: the NCCL reducer is unavailable (see reducer.hpp).
#include "parallel/reducer.hpp"

namespace repro {

bool nccl_compiled() noexcept { return false; }

std::unique_ptr<GradientReducer> make_nccl_reducer(std::shared_ptr<GradientReducer>, int) {
  throw ReduceError(SPARSE_ERR_UNSUPPORTED,
                    "this build has no NCCL support (it needs the CUDA backend and nccl.h)");
}

}  // namespace repro
