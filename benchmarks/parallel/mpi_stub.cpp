// Builds without MPI: the MPI reducer is unavailable (see reducer.hpp).
#include "parallel/reducer.hpp"

namespace repro {

bool mpi_compiled() noexcept { return false; }

std::unique_ptr<GradientReducer> make_mpi_reducer(double, int64_t) {
  throw ReduceError(SPARSE_ERR_UNSUPPORTED,
                    "this build has no MPI support (configure with -Dmpi=enabled and "
                    "libopenmpi-dev installed)");
}

void mpi_abort_job(int) noexcept {}

}  // namespace repro
