// sparse-repro check: the operation checker (libsparse/check/op_check.hpp) -- every model
// operation and attention kernel of every backend on this machine against the CPU backend in
// double precision. Exit status 1 when a check fails.
//
// The checker lives in the library, which owns the backends; this file only parses options and
// prints. It is the driver's one call into the library's internal C++ interface.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "libsparse/check/op_check.hpp"

namespace repro {

void register_check(CLI::App& app) {
  auto options = std::make_shared<sparse::check::OpCheckOptions>();
  auto* cmd = app.add_subcommand(
      "check", "check every operation of every backend against the CPU backend in double");
  cmd->add_flag("--bench", options->bench, "also time each operation (us per call)");
  cmd->add_option("--filter", options->filter, "only operations whose name contains this");
  cmd->add_option("--seed", options->seed, "seed of the inputs");
  cmd->callback([options] {
    options->print = [](const std::string& line) { std::printf("%s\n", line.c_str()); };
    const int failures = sparse::check::run_op_check(*options);
    std::fflush(stdout);
    if (failures > 0) throw CLI::RuntimeError(1);
  });
}

}  // namespace repro
