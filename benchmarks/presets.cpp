#include "presets.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>

#include "bench_attention.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "paper_runs.hpp"
#include "provenance.hpp"
#include "train_cli.hpp"

namespace repro {
namespace {

std::string fmt(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

// The data a preset is wired to: the real sample of its dataset when there is one, else a
// synthetic source of the preset's shape (said so in the table).
struct Wiring {
  DataSpec data;
  std::string note;
};

Wiring wiring_for(const std::string& preset, const std::string& data_dir, int64_t batch) {
  Wiring w;
  const std::string cifar = data_dir + "/cifar10/data_batch_1-first100.bin";
  const std::string text = data_dir + "/enwik8/enwik8-head-100000";
  const std::string audio = data_dir + "/audio/brahms-hungarian-dance-5-22k-mono.ogg";
  if (preset == "cifar10" && path_exists(cifar)) {
    w.data.spec = "cifar10:" + cifar;
    w.note = "CIFAR-10 sample (100 images)";
  } else if (preset == "enwik8" && path_exists(text)) {
    w.data.spec = "enwik8:" + text;
    w.note = "Enwik8 sample (100 kB)";
  } else if (preset == "audio" && path_exists(audio) && sparse_dataset_audio_supported() != 0) {
    // Decoded once, by the run itself: a sample that is present but does not decode is an
    // error the run reports, not a silent switch to synthetic data.
    w.data.spec = "audio:" + audio;
    w.note = "Brahms sample (45.8 s, resampled to 12 kHz, mu-law)";
  } else {
    // Random-looking bytes of the preset's length: a single-channel synthetic image whose rows
    // hold one row of sub-pixels (images) or 256 bytes (text and audio).
    sparse_model_config cfg;
    sparse_model_config_preset(preset.c_str(), &cfg);
    const int64_t width = preset == "cifar10" ? 96 : preset == "imagenet64" ? 192 : 256;
    w.data.spec = "synthetic_image";
    w.data.image_width = static_cast<int32_t>(width);
    w.data.image_height = static_cast<int32_t>(cfg.seq_len / width);
    w.data.vocab = 256;
    w.data.num_sequences = static_cast<int32_t>(std::max<int64_t>(4, batch));
    const std::string why =
        preset == "audio" && path_exists(audio) ? "this build reads no audio (libsndfile)"
        : preset == "imagenet64"                ? "no sample of this dataset is shipped"
                                                : "its sample was not found in " + data_dir +
                                       " (--data-dir DIR or SPARSE_DATA_DIR names the "
                                       "samples folder)";
    w.note = "synthetic bytes of the preset's length (" + why + "); positions refitted to " +
             std::to_string(w.data.image_height) + " x " + std::to_string(width);
  }
  return w;
}

}  // namespace

void add_presets_options(CLI::App& app, PresetsOptions& o) {
  app.add_option("--out", o.out, "folder for presets.md and presets.json (\"\" = print only)")
      ->capture_default_str();
  app.add_option("--data-dir", o.data_dir,
                 "real data samples (default: $SPARSE_DATA_DIR or ../shared/data)");
  app.add_option("--only", o.only, "presets to run (cifar10, enwik8, imagenet64, audio)")
      ->check(CLI::IsMember({"cifar10", "enwik8", "imagenet64", "audio"}));
  app.add_option("--steps", o.steps, "optimiser steps per preset")
      ->check(integer_in(1, kIntMax))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step (a GPU needs several to be busy)")
      ->check(integer_in(1, kIntMax))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->check(integer_in(0, kIntMax));
  add_device_options(app, o.device);
}

int run_presets(const PresetsOptions& o, int argc, char** argv) {
  // The device and the output folder are checked before anything is made or run: a context the
  // options cannot have (bf16 on the CPU, CUDA without a GPU) is refused by name, and only then
  // is the folder created.
  sparse_context_destroy(create_device_context(o.device, o.threads));
  make_output_folder(o.out, "--out", {"presets.md", "presets.json"});
  const std::string data_dir = data_dir_or_default(o.data_dir);
  const nlohmann::json prov = provenance(argc, argv);
  const bool gpu = o.device.backend != "cpu";
  const std::string device =
      o.device.backend + ", " + o.device.dtype + ", batch " + std::to_string(o.batch);
  nlohmann::json rows = nlohmann::json::array();
  // Renders the table and (re)writes the files: called after every preset, so a long run that
  // is stopped keeps the rows it finished.
  auto publish = [&]() {
    std::string md = "# The paper's presets, run end to end on this machine (" + device + ")\n\n" +
                     provenance_markdown(prov) + "\n";
    md +=
        "Each of the paper's model configurations trained for a few optimiser steps of one "
        "sequence (with recomputation), on the real data sample where one exists: proof that "
        "the full-size models run here, and the time a step takes. The full-run cost uses the "
        "FLOP estimate of `paper_runs.cpp` (6 x parameters x tokens plus the attention "
        "products) and, for hours, the time per sequence measured here times the sequences of "
        "the full run" +
        (gpu ? std::string(" on one GPU (GPU-hours: divide by the GPUs of a data-parallel run "
                           "for its wall time, at perfect scaling)")
             : std::string()) +
        ". These are estimates to size a run, not measurements of one.";
    md += "\n\n";
    md +=
        "| preset | data used here | params | n | steps run | s per sequence | peak "
        "activations | GFLOP/s here | full run: steps x batch | est. FLOPs | " +
        std::string(gpu ? "est. GPU-hours" : "est. time on this machine") +
        " |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& row : rows) {
      const bool full = row.contains("full_run_flops");
      std::string time = "-";
      if (full) {
        const double hours = row["full_run_hours_here"].get<double>();
        time = gpu                ? fmt(hours, 0) + " GPU-hours (" + fmt(hours / 24, 1) + " days)"
               : hours > 24 * 365 ? fmt(hours / 24 / 365, 0) + " years"
                                  : fmt(hours / 24, 1) + " days";
      }
      md += "| " + row["preset"].get<std::string>() + " | " + row["data"].get<std::string>() +
            " | " + fmt(row["parameters"].get<double>() / 1e6, 1) + "M | " +
            std::to_string(row["seq_len"].get<int64_t>()) + " | " +
            std::to_string(row["steps_run"].get<int64_t>()) + " | " +
            fmt(row["seconds_per_sequence"].get<double>(), 1) + " | " +
            fmt(row["peak_activation_bytes"].get<double>() / 1e6, 0) + " MB | " +
            fmt(row["measured_gflops"].get<double>(), 0) + " | " +
            (full ? fmt(row["full_run_steps"].get<double>(), 0) + " x " +
                        std::to_string(row["full_run_batch"].get<int64_t>())
                  : std::string("dataset size not fixed")) +
            " | " + (full ? fmt(row["full_run_flops"].get<double>() / 1e18, 1) + " EFLOP" : "-") +
            " | " + time + " |\n";
    }
    if (!o.out.empty()) {
      write_file_atomically(o.out + "/presets.md", md);
      write_file_atomically(o.out + "/presets.json",
                            nlohmann::json{{"provenance", prov}, {"presets", rows}}.dump(2) + "\n");
    }
    return md;
  };
  for (const PaperRun& r : paper_runs()) {
    if (!o.only.empty() && std::find(o.only.begin(), o.only.end(), r.preset) == o.only.end())
      continue;
    const Wiring w = wiring_for(r.preset, data_dir, o.batch);
    std::fprintf(stderr, "\n%s preset on %s: %lld steps of %lld sequence(s), %s\n", r.preset,
                 w.note.c_str(), static_cast<long long>(o.steps), static_cast<long long>(o.batch),
                 device.c_str());
    TrainOptions t;
    t.preset = r.preset;
    t.data = w.data;
    t.steps = o.steps;
    t.batch = o.batch;
    t.device = o.device;
    t.warmup = 0;
    t.recompute = 1;  // as in the paper for long sequences: activations of one layer at a time
    t.eval_sequences = 1;
    t.eval_split = "train";  // the samples' held-out splits are shorter than one sequence
    t.threads = o.threads;
    t.quiet = false;
    nlohmann::json s;
    try {
      s = run_train(t);
    } catch (const std::runtime_error& e) {
      // The run's own options (--data, --num-sequences, ...) are presets' wiring: the error
      // names the preset and the presets options they come from.
      throw std::runtime_error(std::string("the ") + r.preset + " preset (presets --batch " +
                               std::to_string(o.batch) + " --steps " + std::to_string(o.steps) +
                               " --backend " + o.device.backend + " --dtype " + o.device.dtype +
                               ", data: " + w.note + "): " + e.what());
    }
    sparse_model_config cfg;
    sparse_model_config_preset(r.preset, &cfg);
    const int64_t params = s["parameters"].get<int64_t>();
    // Time per sequence: a step of `batch` sequences.
    const double seconds = s["seconds_per_step"].get<double>() / static_cast<double>(o.batch);
    const double one = flops_per_step(cfg, params, 1);
    const double steps = full_run_steps(r);
    nlohmann::json row = {{"preset", r.preset},
                          {"dataset", r.dataset},
                          {"data", w.note},
                          {"parameters", params},
                          {"seq_len", cfg.seq_len},
                          {"layers", cfg.num_layers},
                          {"backend", o.device.backend},
                          {"dtype", o.device.dtype},
                          {"batch", o.batch},
                          {"width", cfg.d_model},
                          {"steps_run", s["steps"]},
                          {"seconds_per_sequence", seconds},
                          {"peak_activation_bytes", s["peak_activation_bytes"]},
                          {"eval_bits_per_dim", s["eval_bits_per_dim"]},
                          {"flops_per_sequence", one},
                          {"measured_gflops", one / seconds / 1e9},
                          {"full_run_batch", r.batch},
                          {"full_run_steps", steps}};
    if (steps > 0) {
      row["full_run_flops"] = one * static_cast<double>(r.batch) * steps;
      row["full_run_hours_here"] = seconds * static_cast<double>(r.batch) * steps / 3600.0;
    }
    rows.push_back(row);
    publish();
  }
  std::cout << publish();
  if (!o.out.empty()) std::cout << "\nWritten to " << o.out << "/presets.md and presets.json\n";
  return 0;
}

}  // namespace repro
