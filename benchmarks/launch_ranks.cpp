#include "launch_ranks.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "parallel/reducer.hpp"

namespace repro {

const char* const kOneProcessNote =
    "Under mpirun or srun with several ranks this runs in one process: rank 0 does it once, the "
    "other ranks exit at once without output (only train uses the ranks).";

bool runs_on_this_rank(const std::string& subcommand) {
  if (subcommand == "train") return true;
  const LaunchEnvironment launch = launch_environment();
  if (!launch.launched || launch.size <= 1) return true;
  if (launch.rank != 0) return false;
  std::fprintf(stderr,
               "sparse-repro: %s runs in one process: rank 0 of %d (%s) does it, the other ranks "
               "exit at once (only train uses the ranks)\n",
               subcommand.c_str(), launch.size, launch.source.c_str());
  forget_launch_environment();
  return true;
}

int silent_exit(int status) {
  if (status != 0) std::this_thread::sleep_for(std::chrono::seconds(2));
  return status;
}

namespace {

// Whether `rank` is the first rank of a command line other than rank 0's in an MPMD launch
// (mpirun -np 1 A : -np 2 B): OpenMPI lists the ranks of each command line in
// OMPI_APP_CTX_NUM_PROCS ("1 2") and numbers them in that order. That rank's options are not rank
// 0's, so rank 0 cannot report them.
bool first_rank_of_other_command(int rank) {
  const char* counts = std::getenv("OMPI_APP_CTX_NUM_PROCS");
  if (counts == nullptr) return false;
  std::istringstream in(counts);
  int first = 0;
  for (int count = 0; in >> count && count > 0 && first < rank;) first += count;
  return first == rank && rank != 0;
}

}  // namespace

bool prints_usage_errors() {
  const LaunchEnvironment launch = launch_environment();
  if (!launch.launched || launch.rank == 0) return true;
  if (first_rank_of_other_command(launch.rank)) return true;
  // SLURM variables without srun (srun gives every task SLURM_STEP_ID): a plain process, which
  // no rank 0 speaks for.
  return launch.source.rfind("SLURM", 0) == 0 && std::getenv("SLURM_STEP_ID") == nullptr;
}

}  // namespace repro
