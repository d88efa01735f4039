// --backend and --dtype of the model commands (train, eval, sample, bench-train): which compute
// device runs the model, and in which precision.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "sparse/sparse.h"

namespace repro {

struct DeviceOptions {
  std::string backend = "cpu";  // cpu | cuda
  std::string dtype = "fp32";   // fp32 | bf16 | fp16 (mixed precision)
};

void add_device_options(CLI::App& app, DeviceOptions& options);

// Creates the context the options ask for (threads: CPU threads, 0 = all; cuda_device: the CUDA
// device ordinal of --backend cuda); throws std::runtime_error naming the option when it cannot.
sparse_context* create_device_context(const DeviceOptions& options, int threads,
                                      int cuda_device = 0);

// The sparse_train_config dtype of --dtype.
sparse_dtype model_dtype(const DeviceOptions& options);

}  // namespace repro
