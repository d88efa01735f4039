// sparse-repro baselines: what a user gets without a model on a dataset's held-out split, given
// its training split: gzip, bzip2, xz and zstd for every kind; PNG and WebP lossless for images;
// FLAC for audio (the mu-law tokens decoded to 16-bit PCM, and the 8-bit mu-law codes).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "train_cli.hpp"

namespace repro {

struct BaselinesOptions {
  DataSpec data;
  std::string split = "test";   // the held-out split
  int64_t max_train_bytes = 0;  // the compressors see the last this many training bytes (0 = all)
  int64_t max_held_out_bytes = 0;  // 0 = all of the held-out split
  std::string json_out;            // write the JSON (with provenance) here
  std::string markdown_out;        // write the Markdown here
  bool json = false;               // print JSON instead of Markdown
};

void add_baselines_options(CLI::App& app, BaselinesOptions& o);
// The table as JSON (rows of {name, bits, note}); provenance added by the caller.
nlohmann::json run_baselines(const BaselinesOptions& o);

// Adds the `baselines` subcommand (argc, argv: the command line, for the provenance).
void register_baselines(CLI::App& app, int argc, char** argv);

}  // namespace repro
