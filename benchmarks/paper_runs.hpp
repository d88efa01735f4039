// The paper's four full-scale runs (Child et al. 2019, section 7): the figure each
// reached, the prior work it was compared with, and what a full run costs (epochs, sequences,
// batch), with the standard FLOP estimate used to size runs.
#pragma once

#include <cstdint>
#include <vector>

#include "sparse/sparse.h"

namespace repro {

struct PaperRun {
  const char* dataset;     // "CIFAR-10", ...
  const char* preset;      // model preset name (sparse_model_config_preset)
  double paper_bpd;        // the paper's bits per dim (byte)
  const char* prior;       // prior work in the paper's table
  double epochs;           // epochs of the full run (0 when the dataset size is not fixed)
  double train_sequences;  // training sequences per epoch
  int64_t batch;           // sequences per optimiser step
  const char* data_note;   // what the full run needs
};

// The four runs: CIFAR-10, Enwik8, ImageNet 64x64, classical music.
const std::vector<PaperRun>& paper_runs();

// Optimiser steps of the full run (0 when unknown).
double full_run_steps(const PaperRun& run);

// Training FLOPs of one step of `batch` sequences: 6 x parameters x tokens (matrix products,
// forward and backward) plus the attention products on the keys of the paper's patterns -- the
// standard estimate, not a measurement.
double flops_per_step(const sparse_model_config& cfg, int64_t params, int64_t batch);

}  // namespace repro
