#include "launch_ranks.hpp"

#include <chrono>
#include <cstdio>
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

bool prints_usage_errors() {
  const LaunchEnvironment launch = launch_environment();
  return !launch.launched || launch.rank == 0;
}

}  // namespace repro
