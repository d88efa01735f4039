// sparse-repro: the project's one driver binary. Subcommands:
//   info             library version, build and the backends available here
//   memory-table     the paper's attention-memory table (+ block-sparse columns)
//   bench-attention  sparse vs dense attention timing, efficiency vs the GEMM rate
//   train / eval / sample  the model on a dataset (eval --sliding: the paper's Enwik8 protocol)
//   baselines        compressor / PNG / WebP / FLAC baselines on a dataset's held-out split
//   table1           dense vs strided vs fixed attention at small scale (paper Table 1)
//   report           re-render results/*.md from their JSON, and the plots
//   main             the README's main job
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <new>
#include <string>

#include "baselines_cmd.hpp"
#include "bench_attention.hpp"
#include "bench_train.hpp"
#include "main_job.hpp"
#include "memory_table.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "presets.hpp"
#include "provenance.hpp"
#include "report.hpp"
#include "sparse/sparse.h"
#include "table1.hpp"
#include "train_cli.hpp"

namespace repro {
void register_check(CLI::App& app);
}

namespace {

void print_info() {
  std::printf("libsparse %s (API %u.%u.%u)\n", sparse_version_string(),
              sparse_api_version() >> 16, (sparse_api_version() >> 8) & 0xff,
              sparse_api_version() & 0xff);
  std::printf("build: %s\n", sparse_build_info());
  int devices = 0;
  sparse_cuda_device_count(&devices);
  for (sparse_backend b : {SPARSE_BACKEND_CPU, SPARSE_BACKEND_CUDA}) {
    int available = 0;
    sparse_backend_available(b, &available);
    std::printf("backend %-4s: %s\n", sparse_backend_name(b),
                available ? "available" : "not available on this machine");
  }
  std::printf("CUDA devices: %d\n", devices);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sparse-repro: Sparse Transformer reproduction drivers"};
  app.require_subcommand(1);

  repro::register_check(app);  // benchmarks/check.cpp
  app.add_subcommand("info", "library version, build and available backends")->callback([] {
    print_info();
  });

  bool json = false, with_sparse = true;
  int block = 64;
  std::string output;
  auto* mem = app.add_subcommand("memory-table", "the paper's attention-memory table");
  mem->add_flag("--json", json, "print JSON instead of Markdown");
  mem->add_flag("--sparse,!--no-sparse", with_sparse, "add the block-sparse columns");
  mem->add_option("--block", block, "block size of the sparse columns")
      ->check(repro::one_of({"16", "32", "64", "128"}));
  mem->add_option("--output", output, "also write the table to this file");

  repro::BenchOptions bench;
  auto* ba = app.add_subcommand("bench-attention", "time sparse vs dense attention");
  repro::add_bench_options(*ba, bench);

  bool measure = false;
  mem->add_flag("--measure,!--no-measure", measure,
                "measure this library's fused attention memory (one process per row)");

  repro::BenchOptions memory_options;
  memory_options.heads = 4;
  auto* am = app.add_subcommand("attention-memory",
                                "peak memory of one fused forward+backward (used by memory-table)");
  repro::add_bench_options(*am, memory_options);

  repro::TrainBenchOptions train_bench;
  auto* bt = app.add_subcommand("bench-train", "training throughput of the full model (CPU)");
  repro::add_train_bench_options(*bt, train_bench);

  repro::TrainOptions train_options;
  auto* train_cmd = app.add_subcommand("train", "train a model on a dataset, evaluate bits per dim");
  repro::add_train_options(*train_cmd, train_options);
  repro::EvalOptions eval_options;
  auto* eval_cmd = app.add_subcommand("eval", "bits per dim of a checkpoint on a dataset split");
  repro::add_eval_options(*eval_cmd, eval_options);
  repro::SampleOptions sample_options;
  auto* sample_cmd = app.add_subcommand("sample", "generate a sequence from a checkpoint");
  repro::add_sample_options(*sample_cmd, sample_options);

  repro::BaselinesOptions baselines_options;
  auto* baselines_cmd = app.add_subcommand(
      "baselines", "gzip/bzip2/xz/zstd, PNG/WebP (images), FLAC (audio) on held-out data");
  repro::add_baselines_options(*baselines_cmd, baselines_options);
  repro::Table1Options table1_options;
  auto* table1_cmd = app.add_subcommand(
      "table1", "dense vs strided vs fixed attention at small scale (paper Table 1)");
  repro::add_table1_options(*table1_cmd, table1_options);
  repro::ReportOptions report_options;
  auto* report_cmd =
      app.add_subcommand("report", "re-render results/*.md from their JSON, and the plots");
  repro::add_report_options(*report_cmd, report_options);

  repro::MainJobOptions main_options;
  auto* main_job = app.add_subcommand("main", "the README's main job");
  repro::add_main_job_options(*main_job, main_options);

  repro::PresetsOptions presets_options;
  auto* presets = app.add_subcommand(
      "presets", "the paper's four model presets, a few steps each, with the full runs' cost");
  repro::add_presets_options(*presets, presets_options);

  // CLI11 says only "A subcommand is required" for a misspelt one, and for none.
  if (argc < 2) {
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({}))
      names += (names.empty() ? "" : ", ") + sub->get_name();
    std::fprintf(stderr,
                 "sparse-repro: say what to do: sparse-repro SUBCOMMAND [options]\n"
                 "subcommands: %s\n(sparse-repro SUBCOMMAND --help for its options, "
                 "sparse-repro --help for what each does)\n",
                 names.c_str());
    return 2;
  }
  const std::string unknown = repro::unknown_subcommand(app, argc, argv);
  if (!unknown.empty()) {
    std::fprintf(stderr, "sparse-repro: %s\n", unknown.c_str());
    return 2;
  }
  CLI11_PARSE(app, argc, argv);

  try {
    if (mem->parsed()) {
      auto table = repro::memory_table_json(with_sparse, block);
      if (measure) repro::add_measured_memory(table, block);
      table["provenance"] = repro::provenance(argc, argv);
      const std::string text = json ? table.dump(2) + "\n" : repro::memory_table_document(table);
      std::cout << text;
      if (!output.empty()) repro::write_file_atomically(output, text);
    }
    if (ba->parsed()) return repro::run_bench_attention(bench);
    if (am->parsed()) return repro::run_attention_memory(memory_options);
    if (bt->parsed()) return repro::run_bench_train(train_bench);
    if (train_cmd->parsed()) repro::note_given_options(*train_cmd, train_options);
    if (train_cmd->parsed()) {
      // Data parallel: rank 0 prints the summary, the other ranks return null.
      const nlohmann::json summary = repro::run_train(train_options);
      if (!summary.is_null())
        std::cout << (train_options.json ? summary.dump(2) : repro::train_summary_line(summary))
                  << "\n";
    }
    if (eval_cmd->parsed()) std::cout << repro::run_eval(eval_options).dump(2) << "\n";
    if (sample_cmd->parsed()) std::cout << repro::run_sample(sample_options).dump(2) << "\n";
    if (baselines_cmd->parsed()) {
      auto table = repro::run_baselines(baselines_options);
      table["provenance"] = repro::provenance(argc, argv);
      const std::string md = repro::baselines_markdown(table);
      std::cout << (baselines_options.json ? table.dump(2) + "\n" : md);
      if (!baselines_options.json_out.empty())
        repro::write_file_atomically(baselines_options.json_out, table.dump(2) + "\n");
      if (!baselines_options.markdown_out.empty())
        repro::write_file_atomically(baselines_options.markdown_out, md);
    }
    if (table1_cmd->parsed()) return repro::run_table1(table1_options, argc, argv);
    if (report_cmd->parsed()) return repro::run_report(report_options);
    if (presets->parsed()) return repro::run_presets(presets_options, argc, argv);
    if (main_job->parsed()) {
      print_info();
      return repro::run_main_job(main_options, argc, argv);
    }
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
