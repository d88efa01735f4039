// The model's subcommands: train, eval and sample (their work is in train_cli.cpp).
#pragma once

#include <CLI/CLI.hpp>

namespace repro {

// Adds `train`, `eval` and `sample`; each prints its summary when it has run.
void register_train_commands(CLI::App& app);

}  // namespace repro
