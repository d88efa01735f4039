// The single-process reducer and the launch environment (see reducer.hpp).
#include "libsparse/parallel/reducer.hpp"

#include <cstdlib>
#include <string>

namespace sparse {

std::unique_ptr<GradientReducer> make_single_process_reducer() {
  return std::make_unique<GradientReducer>();
}

namespace {

// The integer value of environment variable `name`, or -1 when unset or not a number.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > (1L << 30)) return -1;
  return static_cast<int>(x);
}

}  // namespace

LaunchEnvironment launch_environment() {
  LaunchEnvironment e;
  struct Source {
    const char *rank, *size, *local, *label;
  };
  // In order of precedence: a launcher's own variables before the resource manager's.
  const Source sources[] = {
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_*"},
      {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK"},
      {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "PMI_RANK/PMI_SIZE"},
      {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_PROCID/SLURM_NTASKS"},
  };
  for (const Source& s : sources) {
    const int rank = env_int(s.rank);
    if (rank < 0) continue;
    e.launched = true;
    e.source = s.label;
    e.rank = rank;
    const int size = env_int(s.size);
    e.size = size > 0 ? size : (env_int("SLURM_NTASKS") > 0 ? env_int("SLURM_NTASKS") : 1);
    const int local = env_int(s.local);
    e.local_rank =
        local >= 0 ? local : (env_int("SLURM_LOCALID") >= 0 ? env_int("SLURM_LOCALID") : 0);
    break;
  }
  return e;
}

}  // namespace sparse
