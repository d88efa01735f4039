// sparse-repro info: the library's version and build, and the backends available here.
#pragma once

#include <CLI/CLI.hpp>

namespace repro {

// Prints the library version, its build and the backends (also at the start of the main job).
void print_info();
// Adds the `info` subcommand.
void register_info(CLI::App& app);

}  // namespace repro
