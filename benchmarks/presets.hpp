// sparse-repro presets: each of the paper's four model configurations trained end to end on this
// machine for a few steps (the real data samples where they exist), with the measured time per
// step and the estimated cost of the full run (FLOPs, and hours at the measured rate).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "device_option.hpp"

namespace repro {

struct PresetsOptions {
  std::string out = "results";    // presets.md and presets.json go here ("" = print only)
  std::string data_dir;           // default: $SPARSE_DATA_DIR or ../shared/data
  std::vector<std::string> only;  // preset names; empty = all four
  int64_t steps = 2;              // optimiser steps per preset
  int64_t batch = 1;              // sequences per step
  int threads = 0;
  DeviceOptions device;  // --backend, --dtype
};

void add_presets_options(CLI::App& app, PresetsOptions& o);
int run_presets(const PresetsOptions& o, int argc, char** argv);

}  // namespace repro
