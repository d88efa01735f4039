#include "main_job.hpp"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "baselines.hpp"
#include "bench_attention.hpp"
#include "memory_table.hpp"
#include "paper_runs.hpp"
#include "provenance.hpp"
#include "sparse/sparse.h"
#include "train_cli.hpp"

namespace repro {
namespace {

void check(sparse_status s, const std::string& what) {
  if (s != SPARSE_OK)
    throw std::runtime_error(what + ": " + sparse_status_string(s) + ": " + sparse_last_error());
}

bool exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

void make_dir(const std::string& path) {
  if (!exists(path) && mkdir(path.c_str(), 0755) != 0)
    throw std::runtime_error("cannot create folder " + path);
}

std::string fmt(double x, int digits = 3) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

// All sequences of a split, concatenated in index order.
std::vector<uint8_t> split_bytes(const DataSpec& spec, sparse_split split, int64_t seq_len) {
  DatasetPtr ds = open_dataset(spec, split, seq_len);
  int64_t count = 0, n = 0;
  sparse_dataset_num_sequences(ds.get(), &count);
  sparse_dataset_seq_len(ds.get(), &n);
  std::vector<uint8_t> bytes(static_cast<size_t>(count * n));
  check(sparse_dataset_read(ds.get(), 0, count, SPARSE_TOKENS_U8, bytes.data(), bytes.size()),
        "read");
  return bytes;
}

struct Step {
  int index, total;
  void begin(const std::string& what) {
    std::fprintf(stderr, "\n[%d/%d] %s\n", ++index, total, what.c_str());
  }
};

std::string bpd_markdown(const nlohmann::json& prov, const nlohmann::json* text,
                         const std::vector<CompressorResult>& text_baselines, int threads) {
  std::string md = "# Bits per dim: the paper's figures and this project's runs\n\n" +
                   provenance_markdown(prov) + "\n";
  md += "Paper figures are recalled from Child et al. (2019) as listed in DESIGN.md section 4 "
        "(marked *paper*). A row of this project is a measurement only at the scale it states; "
        "no small run here is presented as a reproduction.\n\n";
  md += "| dataset | paper (bits/dim) | prior work (paper's table) | this project: measured | "
        "scale of our run | full-scale run: params, est. training FLOPs |\n";
  md += "|---|---|---|---|---|---|\n";
  for (const PaperRun& r : paper_runs()) {
    sparse_model_config cfg;
    sparse_model_config_preset(r.preset, &cfg);
    int64_t params = 0;
    sparse_model_config_parameter_count(&cfg, &params);
    const double steps = full_run_steps(r);
    const double flops = flops_per_step(cfg, params, r.batch) * steps;
    std::string measured = "not run (needs " + std::string(r.data_note) + " and GPUs)";
    std::string scale = "-";
    if (std::string(r.preset) == "enwik8" && text != nullptr) {
      measured = fmt((*text)["held_out_bits_per_byte"].get<double>()) +
                 " on the 100 kB sample's last 10%";
      scale = std::to_string((*text)["parameters"].get<int64_t>()) + " params, " +
              std::to_string((*text)["steps"].get<int64_t>()) + " steps, " +
              std::to_string((*text)["tokens_seen"].get<int64_t>()) + " tokens, " +
              fmt((*text)["train_seconds"].get<double>(), 0) + " s on " +
              std::to_string(threads > 0 ? threads : 0) + " CPU threads (0 = all)";
    }
    md += "| " + std::string(r.dataset) + " | " + fmt(r.paper_bpd, 2) + " *paper* | " + r.prior +
          " | " + measured + " | " + scale + " | " + fmt(static_cast<double>(params) / 1e6, 1) +
          "M, " + (steps > 0 ? fmt(flops / 1e18, 1) + " EFLOP (" + fmt(r.epochs, 0) +
                                   " epochs, batch " + std::to_string(r.batch) + ")"
                             : std::string("dataset size not fixed")) +
          " |\n";
  }
  if (text != nullptr && !text_baselines.empty()) {
    md += "\nBaselines on the same held-out Enwik8 bytes (cost after the training bytes):";
    for (const auto& b : text_baselines)
      if (b.available) md += " " + b.name + " " + fmt(b.bits_per_byte) + ";";
    md += "\n";
  }
  md += "\nDense vs sparse (paper Table 1, *paper*): Enwik8 at 12,288 context dense 1.00, fixed "
        "0.99, strided 1.13 bits/byte; CIFAR-10 dense 2.82, fixed 2.85, strided 2.80. Audio "
        "bits/byte vs length (*paper*): 65,536 -> 1.97, 262,144 -> 2.17, 1,048,576 -> 2.99.\n";
  md += "\nEstimated FLOPs use 6 x parameters x tokens plus the attention products of the "
        "pattern; they are estimates to size a run, not measurements. Run the full-scale "
        "versions with `sparse-repro train --preset <name> --data <kind>:<path>` on the "
        "downloaded data (datasets/fetch.py).\n";
  return md;
}

}  // namespace

void add_main_job_options(CLI::App& app, MainJobOptions& o) {
  app.add_option("--out", o.out, "folder for everything the job writes")->capture_default_str();
  app.add_option("--data-dir", o.data_dir,
                 "real data samples (default: $SPARSE_DATA_DIR or ../shared/data)");
  app.add_option("--threads", o.threads, "CPU threads (0 = all)");
  app.add_option("--minutes", o.minutes, "training time budget for all runs together")
      ->capture_default_str();
  app.add_flag("--quick", o.quick, "a few steps per run: checks the wiring, not the results");
}

int run_main_job(const MainJobOptions& o, int argc, char** argv) {
  const auto started = std::chrono::steady_clock::now();
  make_dir(o.out);
  const nlohmann::json prov = provenance(argc, argv);
  std::string data_dir = o.data_dir;
  if (data_dir.empty()) {
    const char* env = std::getenv("SPARSE_DATA_DIR");
    data_dir = env ? env : "../shared/data";
  }
  const std::string enwik8 = data_dir + "/enwik8/enwik8-head-100000";
  const bool have_text = exists(enwik8);
  Step step{0, have_text ? 4 : 3};

  // 1. The memory table.
  step.begin("attention memory table (paper figures recomputed, sparse and measured columns)");
  auto table = memory_table_json(true, 64);
  add_measured_memory(table, 64);
  table["provenance"] = prov;
  const std::string memory_md = "# Attention memory: the paper's table, recomputed and extended\n\n" +
                                provenance_markdown(prov) + "\n" + memory_table_markdown(table);
  write_file_atomically(o.out + "/memory_table.md", memory_md);
  write_file_atomically(o.out + "/memory_table.json", table.dump(2) + "\n");
  std::cout << memory_table_markdown(table);

  // Budget: the synthetic pair gets half, the text run the other half (or all of it).
  const double budget_s = o.minutes * 60.0;
  auto steps_for = [&](double seconds, double seconds_per_step) {
    if (o.quick) return int64_t{5};
    return std::max<int64_t>(20, static_cast<int64_t>(seconds / seconds_per_step));
  };

  // 2. Synthetic image source: each pixel depends on its left neighbour and the pixel one row
  // above. The model's input is shifted by one (position t holds pixel t - 1), so the pixel above
  // the one predicted at t sits at position t - (W - 1). Rows of W = 33 pixels and stride
  // l = 16: the strided column head of t reaches t - 32 directly, while a local-only model (row
  // heads only, window 16) sees nothing of the row above near the predicted pixel. Both
  // attend to at most 16 + ceil(n / 16) keys per query.
  step.begin("synthetic image source (exact entropy): strided vs local-only attention");
  constexpr int kImageWidth = 33, kImageHeight = 16;
  TrainOptions base;
  base.preset = "cifar10-small";
  base.data.spec = "synthetic_image";
  base.data.image_width = kImageWidth;
  base.data.image_height = kImageHeight;
  base.data.vocab = 16;
  base.data.noise_scale = 2.0;
  base.data.num_sequences = 4096;
  base.stride = 16;
  base.block = 16;
  base.layers = 4;
  base.width = 64;
  base.heads = 2;
  base.dropout = 0.0f;
  base.batch = 4;
  base.lr = 2e-3f;
  base.eval_sequences = 256;
  base.threads = o.threads;
  base.quiet = false;
  // Probe the speed with a few steps, then size the runs to the budget.
  TrainOptions probe = base;
  probe.steps = 3;
  probe.warmup = 0;
  probe.quiet = true;
  probe.eval_sequences = 8;
  const double probe_s = run_train(probe)["seconds_per_step"].get<double>();
  const double synthetic_share = have_text ? 0.5 : 1.0;
  const int64_t synthetic_steps = steps_for(budget_s * synthetic_share / 2, probe_s);
  nlohmann::json runs = nlohmann::json::array();
  for (const char* cycle : {"21", "1"}) {
    TrainOptions run = base;
    run.layer_cycle = cycle;
    run.steps = synthetic_steps;
    run.warmup = std::max<int64_t>(1, synthetic_steps / 20);
    run.log = o.out + "/synthetic_" + (std::string(cycle) == "1" ? "local" : "strided") +
              "_loss.jsonl";
    std::fprintf(stderr, "  %s attention, %lld steps\n",
                 std::string(cycle) == "1" ? "local-only (row heads)" : "strided (row + column)",
                 static_cast<long long>(run.steps));
    auto summary = run_train(run);
    summary["name"] = std::string(cycle) == "1" ? "local-only" : "strided";
    runs.push_back(summary);
  }
  const double entropy = runs[0]["exact_entropy_bits_per_dim"].get<double>();
  const auto image_train = split_bytes(base.data, SPARSE_SPLIT_TRAIN, 0);
  auto image_test = split_bytes(base.data, SPARSE_SPLIT_TEST, 0);
  image_test.resize(static_cast<size_t>(base.eval_sequences) * kImageWidth * kImageHeight);  // the evaluated images
  const auto image_baselines = conditional_compression(image_train, image_test);
  const double png = png_bits_per_subpixel(image_test, kImageWidth, kImageHeight, 1);

  // 3. The real Enwik8 sample: first 90% train, last 10% (valid + test splits) held out.
  nlohmann::json text;
  std::vector<CompressorResult> text_baselines;
  if (have_text) {
    step.begin("Enwik8 sample (" + enwik8 + "): 90% train, 10% held out, vs compressors");
    TrainOptions t = base;
    t.preset = "enwik8-small";
    t.data = DataSpec{};
    t.data.spec = "text:" + enwik8;
    t.seq_len = 128;
    t.attention = "fixed";
    t.stride = 16;
    t.summary = 4;
    t.block = 16;
    t.layers = 4;
    t.width = 128;
    t.heads = 4;
    t.dropout = 0.0f;  // minutes of training see each byte a few dozen times at most
    t.batch = 16;
    t.lr = 2e-3f;
    t.eval_sequences = 1000;  // all of the held-out split
    t.log = o.out + "/enwik8_sample_loss.jsonl";
    TrainOptions p = t;
    p.steps = 3;
    p.warmup = 0;
    p.quiet = true;
    p.eval_sequences = 2;
    p.log.clear();
    const double text_probe = run_train(p)["seconds_per_step"].get<double>();
    t.steps = steps_for(budget_s * 0.5, text_probe);
    t.warmup = std::max<int64_t>(1, t.steps / 20);
    std::fprintf(stderr, "  fixed attention (l = 16, c = 4), %lld steps\n",
                 static_cast<long long>(t.steps));
    // One training run evaluated on the valid split, then its checkpoint on the test split:
    // together the last 10% of the sample.
    t.eval_split = "valid";
    t.checkpoint = o.out + "/enwik8_sample_model.safetensors";
    text = run_train(t);
    EvalOptions e;
    e.checkpoint = t.checkpoint;
    e.data = t.data;
    e.split = "test";
    e.sequences = 1000;
    e.batch = 8;
    e.threads = o.threads;
    const auto test = run_eval(e);
    const int64_t sequences =
        text["eval_sequences"].get<int64_t>() + test["sequences"].get<int64_t>();
    const double bits =
        text["eval_bits_per_dim"].get<double>() * text["eval_sequences"].get<double>() +
        test["bits_per_dim"].get<double>() * test["sequences"].get<double>();
    text["held_out_bits_per_byte"] = bits / static_cast<double>(sequences);
    text["held_out_sequences"] = sequences;
    const auto train_bytes = split_bytes(t.data, SPARSE_SPLIT_TRAIN, t.seq_len);
    auto held = split_bytes(t.data, SPARSE_SPLIT_VALID, t.seq_len);
    const auto test_bytes = split_bytes(t.data, SPARSE_SPLIT_TEST, t.seq_len);
    held.insert(held.end(), test_bytes.begin(), test_bytes.end());
    text["held_out_bytes"] = held.size();
    text_baselines = conditional_compression(train_bytes, held);
  }

  // 4. The summary.
  step.begin("summary");
  std::string md = "# Main job: small-scale bits per dim\n\n" + provenance_markdown(prov) + "\n";
  md += "Small CPU models trained for minutes: a check that the pipeline learns what it should, "
        "not a reproduction of the paper's figures (see bpd.md for those and for the scale of "
        "each run).\n\n";
  md += "## Synthetic image source (" + std::to_string(kImageWidth) + " x " +
        std::to_string(kImageHeight) + " pixels, 16 levels, noise scale " +
        fmt(base.data.noise_scale, 1) + "; exact entropy known)\n\n";
  md += "Each pixel is drawn around the mean of its left and upper neighbours. The strided model's "
        "column heads reach the pixel above; the local-only model (row heads only) does not, so "
        "only the strided model can approach the entropy.\n\n";
  md += "| model | steps | tokens seen | params | held-out bits/dim | exact entropy | gap |\n";
  md += "|---|---|---|---|---|---|---|\n";
  for (const auto& r : runs) {
    const double bpd = r["eval_bits_per_dim"].get<double>();
    md += "| " + r["name"].get<std::string>() + " (" + r["attention"].get<std::string>() +
          ", cycle " + r["layer_cycle"].get<std::string>() + ", l = " +
          std::to_string(r["stride"].get<int64_t>()) + ") | " +
          std::to_string(r["steps"].get<int64_t>()) + " | " +
          std::to_string(r["tokens_seen"].get<int64_t>()) + " | " +
          std::to_string(r["parameters"].get<int64_t>()) + " | " + fmt(bpd) + " | " +
          fmt(entropy) + " | " + fmt(100.0 * (bpd - entropy) / entropy, 1) + "% |\n";
  }
  for (const auto& b : image_baselines)
    if (b.available)
      md += "| " + b.name + " (given the training images) | | | | " + fmt(b.bits_per_byte) +
            " | " + fmt(entropy) + " | " + fmt(100.0 * (b.bits_per_byte - entropy) / entropy, 1) +
            "% |\n";
  if (png >= 0)
    md += "| PNG (libpng, level 9, per image) | | | | " + fmt(png) + " | " + fmt(entropy) + " | " +
          fmt(100.0 * (png - entropy) / entropy, 1) + "% |\n";
  if (have_text) {
    md += "\n## Enwik8 sample (first 100,000 bytes; train on the first 90%, evaluate the last "
          "10%)\n\n";
    md += "| model | steps | tokens seen | params | held-out bits/byte |\n|---|---|---|---|---|\n";
    md += "| Sparse Transformer, fixed (l = 16, c = 4), n = 128, 4 layers x 128 | " +
          std::to_string(text["steps"].get<int64_t>()) + " | " +
          std::to_string(text["tokens_seen"].get<int64_t>()) + " | " +
          std::to_string(text["parameters"].get<int64_t>()) + " | " +
          fmt(text["held_out_bits_per_byte"].get<double>()) + " |\n";
    for (const auto& b : text_baselines)
      if (b.available)
        md += "| " + b.name + ", cost of the held-out bytes after the training bytes | | | | " +
              fmt(b.bits_per_byte) + " |\n";
  }
  const double minutes =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() / 60.0;
  md += "\nWall time of the job: " + fmt(minutes, 1) + " min" + (o.quick ? " (--quick)" : "") +
        ". Loss curves: `synthetic_strided_loss.jsonl`, `synthetic_local_loss.jsonl`" +
        (have_text ? ", `enwik8_sample_loss.jsonl`" : "") + ". Memory: `memory_table.md`.\n";
  nlohmann::json all = {{"provenance", prov}, {"synthetic", runs},
                        {"synthetic_exact_entropy", entropy}, {"png_bits_per_dim", png}};
  for (const auto& b : image_baselines) all["synthetic_baselines"][b.name] = b.bits_per_byte;
  if (have_text) {
    all["enwik8_sample"] = text;
    for (const auto& b : text_baselines) all["enwik8_sample_baselines"][b.name] = b.bits_per_byte;
  }
  write_file_atomically(o.out + "/main_job.md", md);
  write_file_atomically(o.out + "/bpd.md", bpd_markdown(prov, have_text ? &text : nullptr,
                                                        text_baselines, o.threads));
  write_file_atomically(o.out + "/main_job.json", all.dump(2) + "\n");
  std::cout << "\n" << md << "\nWritten to " << o.out << "/ (main_job.md, memory_table.md, "
            << "loss curves).\n";
  return 0;
}

}  // namespace repro
