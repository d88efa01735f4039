// sparse-repro: the project's one driver binary. Subcommands:
//   info             library version, build and the backends available here
//   check            every operation of every backend against the CPU backend in double
//   memory-table     the paper's attention-memory table (+ block-sparse columns)
//   bench-attention  sparse vs dense attention timing, efficiency vs the GEMM rate
//   train / eval / sample  the model on a dataset (eval --sliding: the paper's Enwik8 protocol)
//   baselines        compressor / PNG / WebP / FLAC baselines on a dataset's held-out split
//   table1           dense vs strided vs fixed attention at small scale (paper Table 1)
//   report           re-render results/*.md from their JSON, and the plots
//   main             the README's main job
// This file only registers them; each subcommand's work is in its own file.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <new>
#include <string>

#include "baselines_cmd.hpp"
#include "bench_attention.hpp"
#include "bench_train.hpp"
#include "check.hpp"
#include "cli_common.hpp"
#include "git_version.h"
#include "info.hpp"
#include "launch_ranks.hpp"
#include "main_job.hpp"
#include "memory_table_cmd.hpp"
#include "option_checks.hpp"
#include "presets.hpp"
#include "report.hpp"
#include "sparse/sparse.h"
#include "table1.hpp"
#include "train_cli.hpp"
#include "train_commands.hpp"

int main(int argc, char** argv) {
  using namespace repro;
  CLI::App app{"sparse-repro: Sparse Transformer reproduction drivers"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("sparse-repro ") + SPARSE_GIT_DESCRIBE +
                                        ", libsparse " + sparse_version_string());

  register_check(app);
  register_info(app);
  register_memory_table(app, argc, argv);
  add_command<BenchOptions>(app, "bench-attention", "time sparse vs dense attention",
                            add_bench_options, run_bench_attention);
  add_command<BenchOptions>(
      app, "attention-memory", "peak memory of one fused forward+backward (used by memory-table)",
      [](CLI::App& command, BenchOptions& o) {
        o.heads = 4;
        add_bench_options(command, o);
      },
      run_attention_memory);
  add_command<TrainBenchOptions>(app, "bench-train", "training throughput of the full model (CPU)",
                                 add_train_bench_options, run_bench_train);
  register_train_commands(app);
  register_baselines(app, argc, argv);
  add_command<Table1Options>(
      app, "table1", "dense vs strided vs fixed attention at small scale (paper Table 1)",
      add_table1_options, [=](const Table1Options& o) { return run_table1(o, argc, argv); });
  add_command<ReportOptions>(app, "report", "re-render results/*.md from their JSON, and the plots",
                             add_report_options, run_report);
  add_command<MainJobOptions>(app, "main", "the README's main job", add_main_job_options,
                              [=](const MainJobOptions& o) { return run_main_job(o, argc, argv); });
  add_command<PresetsOptions>(
      app, "presets", "the paper's four model presets, a few steps each, with the full runs' cost",
      add_presets_options, [=](const PresetsOptions& o) { return run_presets(o, argc, argv); });

  // CLI11 says only "A subcommand is required" for a misspelt one, and for none.
  const std::string unknown = unknown_subcommand(app, argc, argv);
  const bool prints = prints_usage_errors();
  if (!unknown.empty()) {
    if (!prints) return silent_exit(2);
    std::fprintf(stderr, "sparse-repro: %s\n", unknown.c_str());
    return 2;
  }
  // CLI11 names neither the option a misspelt one meant nor, when a required option is missing,
  // the misspelt one at all.
  const std::string unknown_opt = unknown_option(app, argc, argv);
  if (!unknown_opt.empty()) {
    if (!prints) return silent_exit(2);
    std::fprintf(stderr, "sparse-repro: %s\n", unknown_opt.c_str());
    return 2;
  }
  // Under an MPI launcher only train uses the ranks; rank 0 alone runs any other subcommand.
  if (argc >= 2 && argv[1][0] != '-' && !runs_on_this_rank(argv[1])) return 0;
  for (CLI::App* command : app.get_subcommands({}))
    if (command->get_name() != "train") command->footer(kOneProcessNote);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (!prints) return silent_exit(e.get_exit_code());
    return app.exit(e);
  } catch (const repro::TrainStopped& e) {
    if (e.what()[0] != '\0') std::fprintf(stderr, "sparse-repro: %s\n", e.what());
    return 128 + e.signal;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "sparse-repro: out of memory: the sizes asked for (--n, --seq-len, --batch, "
                 "--heads, --width, ...) need more memory than this machine has\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sparse-repro: %s\n", e.what());
    return 1;
  }
  return 0;
}
