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
#include "cli_common.hpp"
#include "info.hpp"
#include "memory_table.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "provenance.hpp"
#include "report.hpp"
#include "sparse/sparse.h"
#include "train_cli.hpp"

namespace repro {
namespace {

// The synthetic images of the main job (and table1): rows of 33 pixels, 16 rows.
constexpr int kImageWidth = 33, kImageHeight = 16;

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

}  // namespace

TrainOptions main_job_image_run() {
  TrainOptions r;
  r.preset = "cifar10-small";
  r.data.spec = "synthetic_image";
  r.data.image_width = kImageWidth;
  r.data.image_height = kImageHeight;
  r.data.vocab = 16;
  r.data.noise_scale = 2.0;
  r.data.num_sequences = 4096;
  r.stride = 16;
  r.summary = 4;  // used by fixed attention (table1)
  r.block = 16;
  r.layers = 4;
  r.width = 64;
  r.heads = 2;
  r.dropout = 0.0f;
  r.batch = 4;
  r.lr = 2e-3f;
  r.eval_sequences = 256;
  return r;
}

TrainOptions main_job_text_run(const std::string& path) {
  TrainOptions t;
  t.preset = "enwik8-small";
  t.data.spec = "text:" + path;
  t.seq_len = 128;
  t.attention = "fixed";
  t.stride = 16;
  t.summary = 4;
  t.block = 16;
  t.layers = 4;
  t.width = 128;
  t.heads = 4;
  t.dropout = 0.0f;  // minutes of training see each byte a few dozen times at most
  // OpenAI's zero-initialised output projection learns text slowly in short runs
  // (results/text_learning_curve*.md); N(0, 0.02^2) reached 3.34 held-out bits/byte after 600
  // steps here where the zero initialisation reached 3.51.
  t.output_init_std = 0.02f;
  t.batch = 16;
  t.lr = 2e-3f;
  t.eval_sequences = 1000;  // all of the held-out split
  return t;
}

void add_main_job_options(CLI::App& app, MainJobOptions& o) {
  app.add_option("--out", o.out,
                 "folder for everything the job writes (default: results, with --quick "
                 "results-quick; a quick run refuses a folder holding a real run's results)");
  app.add_option("--data-dir", o.data_dir,
                 "real data samples (default: $SPARSE_DATA_DIR or ../shared/data)");
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->check(integer_in(0, kIntMax));
  app.add_option("--minutes", o.minutes, "training time budget for all runs together")
      ->check(number_in(0, kInf, true))
      ->capture_default_str();
  app.add_flag("--quick", o.quick, "a few steps per run: checks the wiring, not the results");
}

int run_main_job(const MainJobOptions& given, int argc, char** argv) {
  print_info();
  const auto started = std::chrono::steady_clock::now();
  MainJobOptions o = given;
  if (o.out.empty()) o.out = o.quick ? "results-quick" : "results";
  if (o.quick && path_exists(o.out + "/main_job.json")) {
    bool real = true;
    try {
      real = !nlohmann::json::parse(read_regular_file(o.out + "/main_job.json", "--out"))
                  .value("quick", false);
    } catch (const std::exception&) {
    }
    if (real)
      throw std::runtime_error("--quick: " + o.out +
                               " holds the results of a real run (main_job.json), which a wiring "
                               "check must not replace; give --out to another folder (the default "
                               "of --quick is results-quick)");
  }
  make_output_folder(o.out, "--out");
  const nlohmann::json prov = provenance(argc, argv);
  const std::string data_dir = data_dir_or_default(o.data_dir);
  const std::string enwik8 = data_dir + "/enwik8/enwik8-head-100000";
  const bool have_text = path_exists(enwik8);
  if (!have_text)
    std::fprintf(stderr,
                 "sparse-repro main: the Enwik8 sample %s is not there, so its stage is "
                 "skipped (--data-dir DIR or SPARSE_DATA_DIR=DIR names the samples folder)\n",
                 enwik8.c_str());
  Step step{0, have_text ? 4 : 3};

  // 1. The memory table.
  step.begin("attention memory table (paper figures recomputed, sparse and measured columns)");
  auto table = memory_table_json(true, 64);
  add_measured_memory(table, 64);
  table["provenance"] = prov;
  write_file_atomically(o.out + "/memory_table.md", memory_table_document(table));
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
  TrainOptions base = main_job_image_run();
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
    run.log =
        o.out + "/synthetic_" + (std::string(cycle) == "1" ? "local" : "strided") + "_loss.jsonl";
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
  // The evaluated images.
  image_test.resize(static_cast<size_t>(base.eval_sequences) * kImageWidth * kImageHeight);
  const auto image_baselines = conditional_compression(image_train, image_test);
  const double png = png_bits_per_subpixel(image_test, kImageWidth, kImageHeight, 1);

  // 3. The real Enwik8 sample: first 90% train, last 10% (valid + test splits) held out.
  nlohmann::json text;
  std::vector<CompressorResult> text_baselines;
  if (have_text) {
    step.begin("Enwik8 sample (" + enwik8 + "): 90% train, 10% held out, vs compressors");
    TrainOptions t = main_job_text_run(enwik8);
    t.threads = o.threads;
    t.quiet = false;
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
  const double minutes =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() / 60.0;
  nlohmann::json all = {{"provenance", prov},
                        {"synthetic", runs},
                        {"synthetic_exact_entropy", entropy},
                        {"png_bits_per_dim", png}};
  for (const auto& b : image_baselines) all["synthetic_baselines"][b.name] = b.bits_per_byte;
  if (have_text) {
    all["enwik8_sample"] = text;
    for (const auto& b : text_baselines) all["enwik8_sample_baselines"][b.name] = b.bits_per_byte;
  }
  // What the tables say beyond the runs' own summaries (report.cpp renders both from this).
  all["synthetic_image"] = {{"width", kImageWidth},
                            {"height", kImageHeight},
                            {"vocab", base.data.vocab},
                            {"noise_scale", base.data.noise_scale}};
  if (!have_text) all["enwik8_sample_missing"] = enwik8;
  all["wall_minutes"] = minutes;
  all["quick"] = o.quick;
  const std::string md = main_job_markdown(all);
  write_file_atomically(o.out + "/main_job.md", md);
  write_file_atomically(o.out + "/bpd.md", bpd_markdown(all));
  write_file_atomically(o.out + "/main_job.json", all.dump(2) + "\n");
  std::cout << "\n" << md << "\n";
  // The Markdown tables of the folder again from their JSON, and the plots (loss_curves.png).
  ReportOptions report;
  report.dir = o.out;
  run_report(report);
  std::cout << "\nWritten to " << o.out << "/ (main_job.md, memory_table.md, loss curves)"
            << (o.quick ? ": a wiring check, not results" : "") << ".\n";
  return 0;
}

}  // namespace repro
