// sparse-repro main: the README's main job. Regenerates the memory table, trains and evaluates
// small Sparse Transformers on a synthetic source with exact entropy (strided vs local-only
// attention of the same cost) and, when present, on the real Enwik8 sample, compares with the
// compressor baselines on the same held-out bytes, and writes everything to an output folder.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace repro {

struct MainJobOptions {
  std::string out = "results";
  std::string data_dir;   // default: $SPARSE_DATA_DIR or <source>/../shared/data
  int threads = 0;
  double minutes = 6.0;   // training budget shared by the runs
  bool quick = false;     // a few steps of each run (wiring check)
};

void add_main_job_options(CLI::App& app, MainJobOptions& o);
int run_main_job(const MainJobOptions& o, int argc, char** argv);

}  // namespace repro
