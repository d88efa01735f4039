#include "table1.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <vector>

#include "bench_attention.hpp"
#include "main_job.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "provenance.hpp"
#include "report.hpp"
#include "train_cli.hpp"

namespace repro {
namespace {

constexpr int kAttentionRounds = 7;  // median of 7 side-by-side rounds

// The attention alone of each run's model, all measured side by side after the training runs
// (forward + backward of every layer at the run's shape, on the run's threads): its time per step
// beside the whole step's, the memory the fused kernels use (workspace and layouts) and what the
// unfused 2019-style computation would store (the scores of every computed block).
void add_attention_costs(const TrainOptions& base, nlohmann::json& runs) {
  std::vector<ModelAttention> models;
  for (const auto& s : runs) {
    ModelAttention m;
    m.attention = s.at("attention").get<std::string>();
    m.row_attention = s.at("row_attention").get<std::string>();
    m.head_mode = base.head_mode.empty() ? "interleaved" : base.head_mode;
    m.layer_cycle = s.at("layer_cycle").get<std::string>();
    m.layers = s.at("layers").get<int64_t>();
    m.seq_len = s.at("seq_len").get<int64_t>();
    m.stride = s.at("stride").get<int64_t>();
    m.summary = s.at("summary").get<int64_t>();
    m.summary_variants = s.at("summary_variants").get<int>();
    m.heads = s.at("heads").get<int>();
    m.head_dim = s.at("width").get<int>() / m.heads;
    m.block = s.at("block").get<int>();
    m.batch = s.at("batch").get<int>();
    models.push_back(m);
  }
  std::fprintf(stderr, "  attention alone: forward + backward of every layer, %d rounds\n",
               kAttentionRounds);
  const std::vector<ModelAttentionCost> costs =
      measure_model_attention(models, base.threads, kAttentionRounds);
  for (size_t i = 0; i < costs.size(); ++i) {
    nlohmann::json& s = runs[i];
    s["attention_seconds_per_step"] = costs[i].seconds_per_step;
    s["attention_workspace_bytes"] = costs[i].workspace_bytes;
    s["attention_layout_bytes"] = costs[i].layout_bytes;
    s["attention_stored_scores_bytes"] = costs[i].stored_scores_bytes;
    s["attention_computed_blocks"] = costs[i].computed_blocks;
    s["attention_dense_blocks"] = costs[i].dense_blocks;
    s["attention_rounds"] = kAttentionRounds;
  }
}

// One run per attention type on `base`; evaluation on base.eval_split (and, when `also_test`, the
// checkpoint on the test split too, averaged by sequences: valid + test = the held-out 10%).
nlohmann::json compare(const TrainOptions& base, const std::string& out, const std::string& tag,
                       bool also_test) {
  nlohmann::json runs = nlohmann::json::array();
  for (const char* attention : {"dense", "strided", "fixed"}) {
    TrainOptions run = base;
    run.attention = attention;
    run.log = out + "/table1_" + tag + "_" + attention + "_loss.jsonl";
    if (also_test) run.checkpoint = out + "/table1_" + tag + "_" + attention + ".safetensors";
    std::fprintf(stderr, "  %s: %s attention, %lld steps\n", tag.c_str(), attention,
                 static_cast<long long>(run.steps));
    nlohmann::json s = run_train(run);
    double bits = s.at("eval_bits_per_dim").get<double>();
    int64_t sequences = s.at("eval_sequences").get<int64_t>();
    if (also_test) {
      EvalOptions e;
      e.checkpoint = run.checkpoint;
      e.data = run.data;
      e.split = "test";
      e.sequences = run.eval_sequences;
      e.batch = run.batch;
      e.threads = run.threads;
      const auto t = run_eval(e);
      const int64_t m = t.at("sequences").get<int64_t>();
      bits = (bits * static_cast<double>(sequences) +
              t.at("bits_per_dim").get<double>() * static_cast<double>(m)) /
             static_cast<double>(sequences + m);
      sequences += m;
      std::remove(run.checkpoint.c_str());
      std::remove((run.checkpoint + ".run.json").c_str());  // its run record
    }
    s["bits_per_dim"] = bits;
    s["held_out_sequences"] = sequences;
    runs.push_back(s);
  }
  add_attention_costs(base, runs);
  return runs;
}

}  // namespace

void add_table1_options(CLI::App& app, Table1Options& o) {
  app.add_option("--out", o.out, "folder for the table and the loss curves")->capture_default_str();
  app.add_option("--data-dir", o.data_dir,
                 "real data samples (default: $SPARSE_DATA_DIR or ../shared/data)");
  app.add_option("--steps", o.steps, "training steps of every run")
      ->check(integer_in(1))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->check(integer_in(0, kIntMax));
  app.add_flag("--quick", o.quick, "3 steps per run: checks the wiring, not the results");
  app.add_flag("--text,!--no-text", o.text, "include the Enwik8 sample when it is present");
}

int run_table1(const Table1Options& o, int argc, char** argv) {
  make_output_folder(o.out, "--out");
  const nlohmann::json prov = provenance(argc, argv);
  const std::string data_dir = data_dir_or_default(o.data_dir);
  const std::string enwik8 = data_dir + "/enwik8/enwik8-head-100000";
  const bool have_text = o.text && path_exists(enwik8);
  if (o.text && !have_text)
    std::fprintf(stderr,
                 "sparse-repro table1: the Enwik8 sample %s is not there, so its comparison is "
                 "skipped (--data-dir DIR or SPARSE_DATA_DIR=DIR names the samples folder)\n",
                 enwik8.c_str());
  const int64_t steps = o.quick ? 3 : o.steps;
  nlohmann::json datasets = nlohmann::json::array();

  // The synthetic image source of the main job: each pixel is drawn around the mean of its left
  // and upper neighbours (rows of 33 pixels, so with the input shifted by one the pixel above is
  // 32 positions back); stride 16, block 16, fixed summary c = 4.
  std::fprintf(stderr, "[1/%d] synthetic image source: dense vs strided vs fixed\n",
               have_text ? 2 : 1);
  TrainOptions image = main_job_image_run();
  image.layer_cycle = "21";  // alternating column/summary and row/block layers, as the main job
  image.steps = steps;
  image.warmup = std::max<int64_t>(1, steps / 20);
  image.eval_sequences = o.quick ? 8 : 256;
  image.threads = o.threads;
  image.quiet = o.quick;
  nlohmann::json runs = compare(image, o.out, "synthetic", false);
  datasets.push_back(
      {{"name",
        "Synthetic image source (33 x 16 pixels, 16 levels, noise scale 2.0; exact entropy "
        "known)"},
       {"data", "synthetic_image (33 x 16, vocab 16, noise scale 2, 4096 images per split)"},
       {"held_out", std::to_string(runs[0].at("held_out_sequences").get<int64_t>()) +
                        " images of the test split"},
       {"model",
        "4 layers x 64, 2 heads, n = 528, l = 16, c = 4 (fixed), layer cycle 21, block 16, "
        "batch 4, lr 2e-3"},
       {"exact_entropy", runs[0].at("exact_entropy_bits_per_dim")},
       {"runs", runs}});

  if (have_text) {
    std::fprintf(stderr, "[2/2] Enwik8 sample (%s): dense vs strided vs fixed\n", enwik8.c_str());
    TrainOptions t = main_job_text_run(enwik8);
    t.steps = steps;
    t.warmup = std::max<int64_t>(1, steps / 20);
    t.eval_split = "valid";
    t.eval_sequences = o.quick ? 2 : 1000;
    t.threads = o.threads;
    t.quiet = o.quick;
    runs = compare(t, o.out, "enwik8_sample", true);
    datasets.push_back(
        {{"name",
          "Enwik8 sample (first 100,000 bytes; train on the first 90%, evaluate the "
          "last 10%)"},
         {"data", "text:" + enwik8},
         {"held_out", std::to_string(runs[0].at("held_out_sequences").get<int64_t>()) +
                          " sequences of 128 bytes (valid + test splits)"},
         {"model",
          "4 layers x 128, 4 heads, n = 128, l = 16, c = 4 (fixed), block 16, batch 16, "
          "lr 2e-3, no dropout"},
         {"paper", "Enwik8 at 12,288 context: dense 1.00, fixed 0.99, strided 1.13 bits/byte"},
         {"runs", runs}});
  }
  nlohmann::json table = {
      {"provenance", prov}, {"quick", o.quick}, {"steps", steps}, {"datasets", datasets}};
  if (o.text && !have_text) table["enwik8_sample_missing"] = enwik8;
  const std::string md = dense_vs_sparse_markdown(table);
  write_file_atomically(o.out + "/dense_vs_sparse.json", table.dump(2) + "\n");
  write_file_atomically(o.out + "/dense_vs_sparse.md", md);
  std::cout << md << "\nWritten to " << o.out << "/dense_vs_sparse.{md,json}.\n";
  return 0;
}

}  // namespace repro
