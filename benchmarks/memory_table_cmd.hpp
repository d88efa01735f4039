// sparse-repro memory-table: the paper's attention-memory table (memory_table.hpp) as a
// subcommand, printed and optionally written to a file.
#pragma once

#include <CLI/CLI.hpp>

namespace repro {

// Adds the `memory-table` subcommand (argc, argv: the command line, for the provenance).
void register_memory_table(CLI::App& app, int argc, char** argv);

}  // namespace repro
