// The Markdown documents of results/, rendered from the JSON files that carry their numbers and
// provenance. The commands that run things (main, memory-table, table1, baselines) write both;
// `sparse-repro report` re-renders every Markdown file from its JSON without rerunning anything.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

namespace repro {

// memory_table.json -> memory_table.md (the `memory-table` command's document).
std::string memory_table_document(const nlohmann::json& table);
// main_job.json -> main_job.md and bpd.md.
std::string main_job_markdown(const nlohmann::json& job);
std::string bpd_markdown(const nlohmann::json& job);
// dense_vs_sparse.json -> dense_vs_sparse.md.
std::string dense_vs_sparse_markdown(const nlohmann::json& table);
// baselines*.json (written by `sparse-repro baselines --json-out`) -> the same name .md.
std::string baselines_markdown(const nlohmann::json& table);

// Fixed-point formatting used by every table ("%.*f").
std::string fmt(double x, int digits = 3);

struct ReportOptions {
  std::string dir = "results";
  bool plots = true;
  std::string python = "python3";
  bool python_given = false;  // --python was given: a missing interpreter is an error, not a skip
};
void add_report_options(CLI::App& app, ReportOptions& o);
// Re-renders the Markdown of every known JSON in o.dir, then the plots (benchmarks/plots.py)
// when python3 with matplotlib is there (a --python that is not there is an error). Returns the
// exit code.
int run_report(const ReportOptions& o);

}  // namespace repro
