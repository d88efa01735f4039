#include "report.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "bench_attention.hpp"
#include "memory_table.hpp"
#include "output_files.hpp"
#include "paper_runs.hpp"
#include "provenance.hpp"
#include "sparse/sparse.h"

namespace repro {

std::string fmt(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

namespace {

// Compressor figures stored as {name: bits} come back in the order the driver measures them
// (JSON objects are sorted by key), then any others.
std::vector<std::pair<std::string, double>> ordered_baselines(const nlohmann::json& j) {
  std::vector<std::pair<std::string, double>> out;
  if (!j.is_object()) return out;
  const char* order[] = {"gzip -9 (zlib)", "bzip2 -9 (libbz2)", "xz -9e (liblzma)",
                         "zstd -19 (libzstd)"};
  for (const char* name : order)
    if (j.contains(name)) out.emplace_back(name, j.at(name).get<double>());
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::none_of(std::begin(order), std::end(order),
                     [&](const char* n) { return it.key() == n; }))
      out.emplace_back(it.key(), it.value().get<double>());
  return out;
}

std::string num(const nlohmann::json& j, const char* key) {
  return std::to_string(j.at(key).get<int64_t>());
}

// "fixed (l = 16, c = 4), n = 256, 4 layers x 128" from a run summary of `sparse-repro train`.
std::string text_model_description(const nlohmann::json& r) {
  const std::string attention = r.at("attention").get<std::string>();
  std::string pattern = "l = " + num(r, "stride");
  if (attention == "fixed" && r.contains("summary")) pattern += ", c = " + num(r, "summary");
  return attention + " (" + pattern + "), n = " + num(r, "seq_len") + ", " + num(r, "layers") +
         " layers x " + num(r, "width");
}

}  // namespace

std::string memory_table_document(const nlohmann::json& table) {
  return "# Attention memory: the paper's table, recomputed and extended\n\n" +
         provenance_markdown(table.at("provenance")) + "\n" +
         "Paper figure: 64 layers, 4 heads, fp32 attention matrices (n^2 x 4 heads x 4 "
         "bytes per layer), decimal units. Sparse columns: the paper's pattern with 2 "
         "heads of each type, counting every element of the computed blocks. Measured: "
         "peak resident memory that one forward+backward pass (4 heads, head_dim 64, fp32, "
         "CPU) added beyond its inputs and outputs, in a fresh process: the fused kernels "
         "(online softmax, scores recomputed), and the unfused 2019-style computation that "
         "stores the scores of every computed block (and P and dS in the backward pass) for "
         "the layer.\n\n" +
         memory_table_markdown(table);
}

std::string main_job_markdown(const nlohmann::json& job) {
  const auto& runs = job.at("synthetic");
  const double entropy = job.at("synthetic_exact_entropy").get<double>();
  const double png = job.value("png_bits_per_dim", -1.0);
  const bool have_text = job.contains("enwik8_sample");
  std::string md =
      "# Main job: small-scale bits per dim\n\n" + provenance_markdown(job.at("provenance")) + "\n";
  md +=
      "Small CPU models trained for minutes: a check that the pipeline learns what it should, "
      "not a reproduction of the paper's figures (see bpd.md for those and for the scale of "
      "each run).\n\n";
  if (job.contains("synthetic_image")) {
    const auto& s = job["synthetic_image"];
    md += "## Synthetic image source (" + num(s, "width") + " x " + num(s, "height") + " pixels, " +
          num(s, "vocab") + " levels" +
          (s.contains("noise_scale") ? ", noise scale " + fmt(s["noise_scale"].get<double>(), 1)
                                     : std::string()) +
          "; exact entropy known)\n\n";
  } else {  // a main_job.json from before the job recorded the source's shape
    md += "## Synthetic image source (exact entropy known)\n\n";
  }
  md +=
      "Each pixel is drawn around the mean of its left and upper neighbours. The strided model's "
      "column heads reach the pixel above; the local-only model (row heads only) does not, so "
      "only the strided model can approach the entropy.\n\n";
  md += "| model | steps | tokens seen | params | held-out bits/dim | exact entropy | gap |\n";
  md += "|---|---|---|---|---|---|---|\n";
  for (const auto& r : runs) {
    const double bpd = r.at("eval_bits_per_dim").get<double>();
    md += "| " + r.at("name").get<std::string>() + " (" + r.at("attention").get<std::string>() +
          ", cycle " + r.at("layer_cycle").get<std::string>() + ", l = " + num(r, "stride") +
          ") | " + num(r, "steps") + " | " + num(r, "tokens_seen") + " | " + num(r, "parameters") +
          " | " + fmt(bpd) + " | " + fmt(entropy) + " | " +
          fmt(100.0 * (bpd - entropy) / entropy, 1) + "% |\n";
  }
  for (const auto& [name, bits] :
       ordered_baselines(job.value("synthetic_baselines", nlohmann::json::object())))
    if (bits >= 0)
      md += "| " + name + " (given the training images) | | | | " + fmt(bits) + " | " +
            fmt(entropy) + " | " + fmt(100.0 * (bits - entropy) / entropy, 1) + "% |\n";
  if (png >= 0)
    md += "| PNG (libpng, level 9, per image) | | | | " + fmt(png) + " | " + fmt(entropy) + " | " +
          fmt(100.0 * (png - entropy) / entropy, 1) + "% |\n";
  if (have_text) {
    const auto& text = job["enwik8_sample"];
    md +=
        "\n## Enwik8 sample (first 100,000 bytes; train on the first 90%, evaluate the last "
        "10%)\n\n";
    md += "| model | steps | tokens seen | params | held-out bits/byte |\n|---|---|---|---|---|\n";
    md += "| Sparse Transformer, " + text_model_description(text) + " | " + num(text, "steps") +
          " | " + num(text, "tokens_seen") + " | " + num(text, "parameters") + " | " +
          fmt(text.at("held_out_bits_per_byte").get<double>()) + " |\n";
    for (const auto& [name, bits] :
         ordered_baselines(job.value("enwik8_sample_baselines", nlohmann::json::object())))
      if (bits >= 0)
        md += "| " + name + ", cost of the held-out bytes after the training bytes | | | | " +
              fmt(bits) + " |\n";
  }
  if (!have_text && job.contains("enwik8_sample_missing"))
    md += "\n## Enwik8 sample\n\nNot run: the sample `" +
          job["enwik8_sample_missing"].get<std::string>() +
          "` was not found (`--data-dir DIR` or `SPARSE_DATA_DIR` names the samples folder).\n";
  md += "\nWall time of the job: " +
        (job.contains("wall_minutes") ? fmt(job["wall_minutes"].get<double>(), 1) + " min" +
                                            (job.value("quick", false) ? " (--quick)" : "")
                                      : std::string("not recorded")) +
        ". Loss curves: `synthetic_strided_loss.jsonl`, `synthetic_local_loss.jsonl`" +
        (have_text ? ", `enwik8_sample_loss.jsonl`" : "") + ". Memory: `memory_table.md`.\n";
  return md;
}

std::string bpd_markdown(const nlohmann::json& job) {
  const nlohmann::json* text = job.contains("enwik8_sample") ? &job["enwik8_sample"] : nullptr;
  const int threads = text ? text->value("threads", 0) : 0;
  std::string md = "# Bits per dim: the paper's figures and this project's runs\n\n" +
                   provenance_markdown(job.at("provenance")) + "\n";
  md +=
      "Paper figures (marked *paper*) are those of Child, Gray, Radford and Sutskever, "
      "*Generating Long Sequences with Sparse Transformers* (2019, arXiv:1904.10509): its "
      "bits per dim on each dataset and the prior work it compares with. A row of this project is "
      "a measurement only at the scale it states; "
      "no small run here is presented as a reproduction.\n\n";
  md +=
      "| dataset | paper (bits/dim) | prior work (paper's table) | this project: measured | "
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
      measured = fmt((*text).at("held_out_bits_per_byte").get<double>()) +
                 " on the 100 kB sample's last 10%";
      scale = num(*text, "parameters") + " params, " + num(*text, "steps") + " steps, " +
              num(*text, "tokens_seen") + " tokens, " +
              fmt((*text).at("train_seconds").get<double>(), 0) + " s on " +
              std::to_string(threads > 0 ? threads : 0) + " CPU threads (0 = all)";
    }
    md += "| " + std::string(r.dataset) + " | " + fmt(r.paper_bpd, 2) + " *paper* | " + r.prior +
          " | " + measured + " | " + scale + " | " + fmt(static_cast<double>(params) / 1e6, 1) +
          "M, " +
          (steps > 0 ? fmt(flops / 1e18, 1) + " EFLOP (" + fmt(r.epochs, 0) + " epochs, batch " +
                           std::to_string(r.batch) + ")"
                     : std::string("dataset size not fixed")) +
          " |\n";
  }
  const auto text_baselines =
      ordered_baselines(job.value("enwik8_sample_baselines", nlohmann::json::object()));
  if (text != nullptr && !text_baselines.empty()) {
    md += "\nBaselines on the same held-out Enwik8 bytes (cost after the training bytes):";
    for (const auto& [name, bits] : text_baselines)
      if (bits >= 0) md += " " + name + " " + fmt(bits) + ";";
    md += "\n";
  }
  md +=
      "\nDense vs sparse (paper Table 1, *paper*): Enwik8 at 12,288 context dense 1.00, fixed "
      "0.99, strided 1.13 bits/byte; CIFAR-10 dense 2.82, fixed 2.85, strided 2.80. Audio "
      "bits/byte vs length (*paper*): 65,536 -> 1.97, 262,144 -> 2.17, 1,048,576 -> 2.99.\n";
  md +=
      "\nEstimated FLOPs use 6 x parameters x tokens plus the attention products of the "
      "pattern; they are estimates to size a run, not measurements. Run the full-scale "
      "versions with `sparse-repro train --preset <name> --data <kind>:<path>` on the "
      "downloaded data (datasets/fetch.py).\n";
  md +=
      "\nTwo model configurations per dataset: the presets above (`cifar10`, `enwik8`, ...) "
      "follow the paper's formulas, whose strided row head attends to l + 1 keys "
      "(max(0, i - l) <= j <= i). OpenAI's released CIFAR-10 code (distribution_augmentation, "
      "config c10-58m) uses its 'local' attention there, l keys (i - l < j <= i): preset "
      "`cifar10-openai` (same shape, same layer cycle \"2111\", l = 96, block 32; only the row "
      "layers differ, by one key per query). OpenAI's 'fixed' attention (block and summary "
      "columns merged in one head, summary offsets varying by head as its num_verts) is "
      "`--attention fixed --head-mode merged --summary-variants V`.\n";
  return md;
}

namespace {

// The attention alone of each run beside its whole training step (runs of `sparse-repro table1`).
std::string attention_alone_markdown(const nlohmann::json& runs) {
  const auto& first = runs.at(0);
  std::string md =
      "\nThe attention alone, measured after the training runs, side by side (median of " +
      num(first, "attention_rounds") +
      " rounds, each timing every model in turn): forward + backward of every layer at the "
      "run's shape (batch " +
      num(first, "batch") + ", " + num(first, "heads") + " heads, head size " +
      std::to_string(first.at("width").get<int64_t>() / first.at("heads").get<int64_t>()) +
      ", n = " + num(first, "seq_len") +
      ", fp32, the fused kernels the model runs). Attention memory: the scratch memory of one "
      "attention call plus the model's layouts, as the library reports them; the fused kernels "
      "keep no scores, so what sparsity saves shows in the computed blocks and in what the "
      "unfused (2019-style) computation would store for one layer's backward pass (scores, P "
      "and dS of every computed block).\n\n";
  md +=
      "| attention | computed blocks per step (of dense) | whole step | attention alone | "
      "attention vs "
      "dense | attention share of step | peak activation memory of a step | attention memory "
      "(workspace + layouts) | scores if stored (unfused, one layer) |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  double dense_attention = 0;
  for (const auto& r : runs)
    if (r.at("attention") == "dense")
      dense_attention = r.at("attention_seconds_per_step").get<double>();
  for (const auto& r : runs) {
    const double step = r.at("seconds_per_step").get<double>();
    const double att = r.at("attention_seconds_per_step").get<double>();
    const double blocks = r.at("attention_computed_blocks").get<double>();
    const double dense_blocks = r.at("attention_dense_blocks").get<double>();
    md += "| " + r.at("attention").get<std::string>() + " | " +
          num(r, "attention_computed_blocks") + " (" + fmt(100.0 * blocks / dense_blocks, 0) +
          "%) | " + fmt(1000.0 * step, 1) + " ms | " + fmt(1000.0 * att, 1) + " ms | " +
          (dense_attention > 0 ? fmt(att / dense_attention, 2) + "x" : std::string("-")) + " | " +
          (step > 0 ? fmt(100.0 * att / step, 0) + "%" : std::string("-")) + " | " +
          format_bytes(r.at("peak_activation_bytes").get<double>()) + " | " +
          format_bytes(r.at("attention_workspace_bytes").get<double>() +
                       r.at("attention_layout_bytes").get<double>()) +
          " | " + format_bytes(r.at("attention_stored_scores_bytes").get<double>()) + " |\n";
  }
  return md;
}

}  // namespace

std::string dense_vs_sparse_markdown(const nlohmann::json& table) {
  std::string md = "# Dense vs sparse attention at small scale (paper Table 1 analogue)\n\n" +
                   provenance_markdown(table.at("provenance")) + "\n";
  md +=
      "The same small model trained with dense, strided and fixed attention for the same number "
      "of steps on the same batches, then evaluated on the same held-out data. A check of the "
      "paper's comparison at a scale this machine can run in minutes, not a reproduction of "
      "its figures" +
      std::string(table.value("quick", false) ? " (--quick: a few steps only, wiring check)" : "") +
      ". Time per step is the mean wall time of the training steps on this machine's CPU; "
      "peak memory is the largest activation and working-buffer allocation of a step.\n";
  if (table.at("datasets").at(0).at("runs").at(0).contains("attention_seconds_per_step"))
    md +=
        "\nThe training runs follow one another, so their step times also carry the load the "
        "machine had at the time of each; the attention-alone figures are measured in "
        "alternation and compare the patterns at the same moments.\n";
  for (const auto& d : table.at("datasets")) {
    md += "\n## " + d.at("name").get<std::string>() + "\n\n";
    md += "Model: " + d.at("model").get<std::string>() + ". Data: `" +
          d.at("data").get<std::string>() + "`, held out: " + d.at("held_out").get<std::string>() +
          ".\n\n";
    const bool entropy = d.contains("exact_entropy");
    md += std::string("| attention | held-out bits/dim |") +
          (entropy ? " gap to exact entropy |" : "") +
          " time per step | vs dense | peak activation memory | params | steps | tokens seen |\n";
    md += std::string("|---|---|") + (entropy ? "---|" : "") + "---|---|---|---|---|---|\n";
    double dense_time = 0;
    for (const auto& r : d.at("runs"))
      if (r.at("attention") == "dense") dense_time = r.at("seconds_per_step").get<double>();
    for (const auto& r : d.at("runs")) {
      const double bpd = r.at("bits_per_dim").get<double>();
      const double t = r.at("seconds_per_step").get<double>();
      md += "| " + r.at("attention").get<std::string>() + " | " + fmt(bpd) + " |";
      if (entropy) {
        const double h = d["exact_entropy"].get<double>();
        md += " " + fmt(100.0 * (bpd - h) / h, 1) + "% |";
      }
      md += " " + fmt(1000.0 * t, 1) + " ms | " +
            (dense_time > 0 ? fmt(t / dense_time, 2) + "x" : std::string("-")) + " | " +
            format_bytes(r.at("peak_activation_bytes").get<double>()) + " | " +
            num(r, "parameters") + " | " + num(r, "steps") + " | " + num(r, "tokens_seen") + " |\n";
    }
    if (d.at("runs").at(0).contains("attention_seconds_per_step"))
      md += attention_alone_markdown(d.at("runs"));
    if (entropy)
      md += "\nExact entropy of the source: " + fmt(d["exact_entropy"].get<double>()) +
            " bits/dim.\n";
    if (d.contains("paper"))
      md += "\nPaper (Table 1, *paper*): " + d["paper"].get<std::string>() + "\n";
  }
  if (table.contains("enwik8_sample_missing"))
    md += "\n## Enwik8 sample\n\nNot run: the sample `" +
          table["enwik8_sample_missing"].get<std::string>() +
          "` was not found (`--data-dir DIR` or `SPARSE_DATA_DIR` names the samples folder).\n";
  md +=
      "\nLoss curves: the `table1_*_loss.jsonl` files beside this table (plotted by "
      "`benchmarks/plots.py`).\n";
  return md;
}

std::string baselines_markdown(const nlohmann::json& table) {
  std::string md = "# Baselines without a model: " + table.at("data").get<std::string>() + "\n\n" +
                   provenance_markdown(table.at("provenance")) + "\n";
  md += "What a user gets without a model on the held-out data (`" +
        table.at("split").get<std::string>() + "` split, " + num(table, "held_out_bytes") + " " +
        table.at("unit_of").get<std::string>() + "), in " + table.at("unit").get<std::string>() +
        ". The general-purpose compressors are charged the "
        "cost of the held-out bytes after the training split's last " +
        num(table, "train_bytes") +
        " bytes (8 (|C(train + held-out)| - |C(train)|) / |held-out|); the format codecs (PNG, "
        "WebP, FLAC) code the held-out data alone, as their files would.\n\n";
  md += "| method | " + table.at("unit").get<std::string>() + " | notes |\n|---|---|---|\n";
  for (const auto& r : table.at("rows")) {
    const double b = r.at("bits").get<double>();
    md += "| " + r.at("name").get<std::string>() + " | " +
          (b >= 0 ? fmt(b) : std::string("not available in this build")) + " | " +
          r.value("note", std::string()) + " |\n";
  }
  return md;
}

void add_report_options(CLI::App& app, ReportOptions& o) {
  app.add_option("--dir", o.dir, "the results folder")->capture_default_str();
  app.add_flag("--plots,!--no-plots", o.plots, "also draw the PNG plots (benchmarks/plots.py)");
  app.add_option("--python", o.python, "the Python that runs plots.py")
      ->capture_default_str()
      ->each([&o](const std::string&) { o.python_given = true; });
}

namespace {

bool is_file(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Whether `name` is a program exec can start: a path (with a '/') to an executable regular file,
// or such a file in a folder of PATH. A folder, or a shell builtin with no program of its name
// (cd), is not.
bool is_program(const std::string& name) {
  const auto executable = [](const std::string& path) {
    return is_file(path) && access(path.c_str(), X_OK) == 0;
  };
  if (name.empty()) return false;
  if (name.find('/') != std::string::npos) return executable(name);
  const char* env = std::getenv("PATH");
  std::istringstream dirs(env != nullptr ? env : "");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (executable((dir.empty() ? "." : dir) + "/" + name)) return true;
  return false;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
}

// Renders with `render`, naming the file in any error about missing or mistyped fields.
template <typename F>
void render_to(const std::string& json_path, const std::string& md_path, F render) {
  const nlohmann::json j = read_json(json_path);
  std::string md;
  try {
    md = render(j);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(json_path + ": missing or malformed field: " + e.what());
  }
  write_file_atomically(md_path, md);
  std::printf("wrote %s (from %s)\n", md_path.c_str(), json_path.c_str());
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

int run_report(const ReportOptions& o) {
  const std::string dir = o.dir;
  int rendered = 0;
  const auto path = [&](const std::string& name) { return dir + "/" + name; };
  if (is_file(path("memory_table.json"))) {
    render_to(path("memory_table.json"), path("memory_table.md"), memory_table_document);
    ++rendered;
  }
  if (is_file(path("main_job.json"))) {
    render_to(path("main_job.json"), path("main_job.md"), main_job_markdown);
    render_to(path("main_job.json"), path("bpd.md"), bpd_markdown);
    ++rendered;
  }
  if (is_file(path("dense_vs_sparse.json"))) {
    render_to(path("dense_vs_sparse.json"), path("dense_vs_sparse.md"), dense_vs_sparse_markdown);
    ++rendered;
  }
  std::vector<std::string> baseline_files;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name.rfind("baselines", 0) == 0 && name.size() > 5 &&
          name.compare(name.size() - 5, 5, ".json") == 0)
        baseline_files.push_back(name);
    }
    closedir(d);
  } else {
    throw std::runtime_error("cannot open the results folder " + dir);
  }
  std::sort(baseline_files.begin(), baseline_files.end());
  for (const auto& name : baseline_files) {
    render_to(path(name), path(name.substr(0, name.size() - 5) + ".md"), baselines_markdown);
    ++rendered;
  }
  if (rendered == 0)
    throw std::runtime_error("no result JSON in " + dir +
                             " (memory_table.json, main_job.json, "
                             "dense_vs_sparse.json, baselines*.json): run the drivers first");
  if (!o.plots) return 0;
  const std::string script = std::string(SPARSE_SOURCE_ROOT) + "/benchmarks/plots.py";
  if (!is_file(script)) {
    std::printf("plots skipped: %s is not there (plots need the source tree)\n", script.c_str());
    return 0;
  }
  if (!is_program(o.python)) {
    if (o.python_given)
      throw std::runtime_error("--python " + o.python +
                               ": no such program (neither on PATH nor an executable file); the "
                               "Markdown tables were rendered, the plots were not");
    std::printf("plots skipped: %s is not installed\n", o.python.c_str());
    return 0;
  }
  std::fflush(stdout);
  const int status = std::system(
      (shell_quote(o.python) + " " + shell_quote(script) + " " + shell_quote(dir)).c_str());
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (code == 3) {  // plots.py: matplotlib missing (it printed why)
    std::printf(
        "plots skipped: matplotlib is not installed for %s (.ci/install-deps installs "
        "it)\n",
        o.python.c_str());
    return 0;
  }
  if (code != 0) std::fprintf(stderr, "sparse-repro report: plots.py failed (exit %d)\n", code);
  return code;
}

}  // namespace repro
