// sparse-repro main: the README's main job. Regenerates the memory table, trains and evaluates
// small Sparse Transformers on a synthetic source with exact entropy (strided vs local-only
// attention of the same cost) and, when present, on the real Enwik8 sample, compares with the
// compressor baselines on the same held-out bytes, and writes everything to an output folder.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "train_cli.hpp"

namespace repro {

struct MainJobOptions {
  // Empty: results/ (a real run: it rewrites the published results, tracked files, on purpose) or
  // results-quick/ (--quick, git-ignored); a quick run never writes where a real run's results are.
  std::string out;
  std::string data_dir;  // default: $SPARSE_DATA_DIR or <source>/../shared/data
  int threads = 0;
  double minutes = 6.0;  // training budget shared by the runs
  bool quick = false;    // a few steps of each run (wiring check)
};

// The small runs of the main job, shared with `table1` so both train the same models on the same
// data. The synthetic image source: 33 x 16 pixels, 16 levels, noise scale 2, each pixel drawn
// around the mean of its left and upper neighbours; model 4 layers x 64, 2 heads, l = 16,
// block 16, batch 4, lr 2e-3 (steps, layer cycle and attention are left to the caller).
TrainOptions main_job_image_run();
// The Enwik8 sample run: fixed attention (l = 16, c = 4), n = 128, 4 layers x 128, 4 heads,
// block 16, batch 16, lr 2e-3, no dropout; `path` is the sample file.
TrainOptions main_job_text_run(const std::string& path);

void add_main_job_options(CLI::App& app, MainJobOptions& o);
int run_main_job(const MainJobOptions& o, int argc, char** argv);

}  // namespace repro
