// sparse-repro check: the operation checker.
#pragma once

#include <CLI/CLI.hpp>

namespace repro {

// Adds the `check` subcommand, which runs when parsed.
void register_check(CLI::App& app);

}  // namespace repro
