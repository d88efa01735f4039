// Builds without MPI: the MPI reducer is unavailable (see reducer.hpp).
#include "libsparse/error.hpp"
#include "libsparse/parallel/reducer.hpp"

namespace sparse {

bool mpi_compiled() noexcept { return false; }

std::unique_ptr<GradientReducer> make_mpi_reducer(double, int64_t) {
  throw_error(SPARSE_ERR_UNSUPPORTED,
              "this build has no MPI support (configure with -Dmpi=enabled and libopenmpi-dev "
              "installed)");
}

void mpi_abort_job(int) noexcept {}

}  // namespace sparse
