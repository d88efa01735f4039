// sparse-repro bench-train: training throughput (tokens/s, s/step) and peak activation memory of
// the full model on this machine, for comparison with a PyTorch implementation of the same model
// timed in the same run (benchmarks/peers/).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "device_option.hpp"

namespace repro {

struct TrainBenchOptions {
  std::string preset = "cifar10-small";
  int64_t seq_len = 0;  // 0 = the preset's
  int layers = 0;       // 0 = the preset's
  int width = 0;
  int heads = 0;
  int batch = 1;
  int steps = 3;       // timed steps
  int warmup = 1;      // untimed steps first
  int recompute = -1;  // -1 = the preset's
  int threads = 0;
  bool json = false;
  DeviceOptions device;  // --backend, --dtype
};

void add_train_bench_options(CLI::App& app, TrainBenchOptions& options);
int run_bench_train(const TrainBenchOptions& options);

}  // namespace repro
