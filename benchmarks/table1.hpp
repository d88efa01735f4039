// sparse-repro table1: the paper's Table 1 (dense vs sparse attention) at small scale. The same
// small model is trained with dense, strided and fixed attention for the same number of steps on
// the same batches, on the synthetic image source and (when present) on the real Enwik8 sample;
// writes dense_vs_sparse.{json,md} and one loss curve per run.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace repro {

struct Table1Options {
  std::string out = "results";
  std::string data_dir;  // default: $SPARSE_DATA_DIR or ../shared/data
  int64_t steps = 300;   // per run
  int threads = 0;
  bool quick = false;  // a few steps per run: checks the wiring, not the results
  bool text = true;    // include the Enwik8 sample when present
};

void add_table1_options(CLI::App& app, Table1Options& o);
int run_table1(const Table1Options& o, int argc, char** argv);

}  // namespace repro
