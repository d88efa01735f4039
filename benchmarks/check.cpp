// sparse-repro check: the library's operation checker (sparse_experimental_op_check) -- every
// model operation and attention kernel of every backend on this machine against the CPU backend
// in double precision, per dtype: each backend's fp32 operations, and where it has mixed
// precision (bf16, f16), its matrix products against the double path on operands rounded to that
// dtype and its 16-bit conversions exactly (one skip line per backend and dtype without them).
// Exit status 1 when a check fails.
//
// The checker lives in the library, which owns the backends; this file only parses options and
// prints.
#include "check.hpp"

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "cli_common.hpp"
#include "option_checks.hpp"
#include "sparse/experimental.h"

namespace repro {

namespace {

struct CheckOptions {
  bool bench = false;
  uint64_t seed = 1;
  std::string filter;
};

void run_check(const CheckOptions& o) {
  sparse_experimental_op_check_options options;
  check(sparse_experimental_op_check_options_default(&options), "check options");
  options.bench = o.bench;
  options.seed = o.seed;
  options.filter = o.filter.c_str();
  options.print = [](void*, const char* line) { std::printf("%s\n", line); };
  int64_t checked = 0, failed = 0;
  const sparse_status s = sparse_experimental_op_check(&options, &checked, &failed);
  std::fflush(stdout);
  if (s != SPARSE_OK)
    throw std::runtime_error((o.filter.empty() ? std::string("check") : "--filter " + o.filter) +
                             ": " + library_message("sparse_experimental_op_check"));
  if (failed > 0) throw CLI::RuntimeError(1);
}

}  // namespace

void register_check(CLI::App& app) {
  auto options = std::make_shared<CheckOptions>();
  auto* cmd = app.add_subcommand(
      "check",
      "check every operation of every backend against the CPU backend in double, per dtype (f32; "
      "bf16 and f16 matrix products and conversions where the backend has mixed precision)");
  cmd->add_flag("--bench", options->bench, "also time each operation (us per call)");
  cmd->add_option("--filter", options->filter, "only operations whose name contains this");
  cmd->add_option("--seed", options->seed, "seed of the inputs")->check(seed_value());
  cmd->callback([options] { run_check(*options); });
}

}  // namespace repro
