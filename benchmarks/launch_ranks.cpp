#include "launch_ranks.hpp"

#include <cstdio>

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

}  // namespace repro
