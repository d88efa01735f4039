#include "train_cli.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include "baselines.hpp"
#include "bench_attention.hpp"
#include "data_parallel.hpp"
#include "heartbeat.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "sliding_eval.hpp"
#include "sparse/sparse.h"

namespace repro {
namespace {

// The context of --backend / --dtype (threads: CPU threads; cuda_device: the CUDA device).
ContextPtr model_context(const DeviceOptions& device, int threads, int cuda_device = 0) {
  return ContextPtr(create_device_context(device, threads, cuda_device), sparse_context_destroy);
}

sparse_split parse_split(const std::string& name) {
  if (name == "train") return SPARSE_SPLIT_TRAIN;
  if (name == "valid") return SPARSE_SPLIT_VALID;
  if (name == "test") return SPARSE_SPLIT_TEST;
  throw std::runtime_error("unknown split \"" + name + "\" (train, valid or test)");
}

// The library names the fields of its structs; the driver's messages name the options that set
// them (each a whole word: "summary" is not a part of "summary_variants").
using FieldNames = std::vector<std::pair<const char*, const char*>>;
const FieldNames kDataFields = {{"desc->image_width/height", "--image-width/--image-height"},
                                {"count", "--num-sequences"},
                                {"vocab", "--vocab"},
                                {"noise_scale", "--noise-scale"},
                                {"copy_offset", "--copy-offset"}};
const FieldNames kModelFields = {
    {"seq_len", "--seq-len"},         {"num_layers", "--layers"},
    {"d_model", "--width"},           {"num_heads", "--heads"},
    {"block_size", "--block"},        {"stride", "--stride"},
    {"summary", "--summary"},         {"summary_variants", "--summary-variants"},
    {"layer_cycle", "--layer-cycle"}, {"dropout", "--dropout"}};

// Replaces each field name that stands as a whole word (not inside a longer name, not after
// "->" or "-") by its option. With `assigned_only`, only where the library states its value
// ("count = 0"): a dataset's messages also quote paths and other libraries' text ("Channel count
// is zero", "fx/count/a.txt"), whose words are not fields.
std::string with_option_names(std::string message, const FieldNames& fields,
                              bool assigned_only = false) {
  auto name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (const auto& [field, option] : fields) {
    const std::string name = field;
    std::string out;
    size_t from = 0;
    for (size_t at = message.find(name); at != std::string::npos; at = message.find(name, at + 1)) {
      const char before = at > 0 ? message[at - 1] : ' ';
      const size_t end = at + name.size();
      const char after = end < message.size() ? message[end] : ' ';
      if (name_char(before) || before == '>' || before == '-' || name_char(after)) continue;
      if (assigned_only && message.compare(end, 3, " = ") != 0) continue;
      out += message.substr(from, at - from) + option;
      from = end;
    }
    message = out + message.substr(from);
  }
  return message;
}

}  // namespace

bool path_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

std::string data_dir_or_default(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("SPARSE_DATA_DIR")) return env;
  // Beside the repository the driver was built from, then beside the repository holding the
  // executable (BUILD/benchmarks/sparse-repro), then beside the current folder.
  std::vector<std::string> candidates;
#ifdef SPARSE_SOURCE_ROOT
  candidates.push_back(std::string(SPARSE_SOURCE_ROOT) + "/../shared/data");
#endif
  char exe[4096];
  const ssize_t length = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (length > 0) {
    std::string dir(exe, static_cast<size_t>(length));
    dir.resize(dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/'));
    candidates.push_back(dir + "/../../../shared/data");
  }
  candidates.push_back("../shared/data");
  for (const std::string& c : candidates)
    if (path_exists(c)) return c;
  return candidates.front();
}

DatasetPtr open_dataset(const DataSpec& spec, sparse_split split, int64_t seq_len) {
  const DataSource source = parse_data_spec(spec.spec);
  const std::string& path = source.path;
  sparse_dataset_kind kind;
  if (sparse_dataset_kind_from_name(source.kind.c_str(), &kind) != SPARSE_OK)
    throw std::runtime_error("--data " + spec.spec + ": " +
                             library_message("sparse_dataset_kind_from_name"));
  const bool synthetic =
      kind == SPARSE_DATASET_SYNTHETIC_IMAGE || kind == SPARSE_DATASET_SYNTHETIC_TEXT;
  if (path.empty() && !synthetic)
    throw std::runtime_error("--data " + spec.spec + ": " + source.kind +
                             " reads a file or folder: give it as --data " + source.kind +
                             ":PATH (formats in datasets/README.md)");
  // The synthetic kinds make their data: a path would be ignored, and the run named after it.
  if (!path.empty() && synthetic)
    throw std::runtime_error("--data " + spec.spec + ": " + source.kind +
                             " makes its own data and reads no file: give it as --data " +
                             source.kind + " (its sizes: --vocab, --num-sequences, ...)");
  sparse_dataset_desc desc;
  check(sparse_dataset_desc_default(&desc, kind), "dataset defaults");
  desc.path = path.empty() ? nullptr : path.c_str();
  desc.split = split;
  desc.seed = spec.seed;
  if (kind == SPARSE_DATASET_SYNTHETIC_IMAGE) {
    if (spec.image_width > 0) desc.image_width = spec.image_width;
    if (spec.image_height > 0) desc.image_height = spec.image_height;
    if (spec.noise_scale > 0) desc.noise_scale = spec.noise_scale;
  } else if (kind != SPARSE_DATASET_CIFAR10 && kind != SPARSE_DATASET_IMAGENET64) {
    const int64_t n = spec.seq_len > 0 ? spec.seq_len : seq_len;
    if (n > 0) desc.seq_len = n;
  }
  if (spec.vocab > 0) desc.vocab = spec.vocab;
  if (spec.num_sequences > 0) desc.num_sequences = spec.num_sequences;
  if (spec.copy_offset > 0) desc.copy_offset = spec.copy_offset;
  sparse_dataset* ds = nullptr;
  if (sparse_dataset_open(&desc, &ds) != SPARSE_OK)
    throw std::runtime_error("--data " + spec.spec + ": " +
                             with_option_names(sparse_last_error(), kDataFields, true));
  return DatasetPtr(ds, sparse_dataset_destroy);
}

DatasetPtr open_split(const DataSpec& spec, sparse_split split, int64_t seq_len, int block,
                      const std::string& split_option, const std::string& seq_len_option) {
  try {
    return open_dataset(spec, split, seq_len);
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    const std::string kind = parse_data_spec(spec.spec).kind;
    const std::string split_name = split == SPARSE_SPLIT_TRAIN   ? "train"
                                   : split == SPARSE_SPLIT_VALID ? "valid"
                                                                 : "test";
    if (message.find("fewer than one sequence") != std::string::npos &&
        (kind == "text" || kind == "enwik8" || kind == "audio")) {
      // The split as one-token sequences: its length in tokens.
      DataSpec one = spec;
      one.seq_len = 1;
      int64_t tokens = 0;
      try {
        check(sparse_dataset_num_sequences(open_dataset(one, split, 1).get(), &tokens), "dataset");
      } catch (const std::exception&) {
        throw e;
      }
      // The longest power of two that fits the split and is a multiple of the block size.
      int64_t n = std::max<int64_t>(block, 2);
      while (n * 2 <= tokens) n *= 2;
      std::string fix = "\n" + seq_len_option + " " + std::to_string(n) + " fits the " +
                        split_name + " split (" + std::to_string(tokens) + " tokens)";
      if (n > tokens) fix = "\nthe " + split_name + " split is too short for any model";
      throw std::runtime_error(message + fix);
    }
    if ((kind == "cifar10" || kind == "imagenet64") && split != SPARSE_SPLIT_TRAIN &&
        message.find("train split only") != std::string::npos)
      throw std::runtime_error(message + "\n" + split_option +
                               " train evaluates on the file's own " +
                               (kind == "cifar10" ? "records" : "images"));
    throw;
  }
}

namespace {

// A model from a checkpoint, with its configuration, computing in --dtype whatever precision it
// was trained in (evaluation and sampling; a resumed run keeps its own).
ModelPtr load_model(sparse_context* ctx, const std::string& path, const DeviceOptions& device,
                    sparse_model_config* cfg) {
  sparse_model* raw = nullptr;
  if (sparse_experimental_model_load_dtype(ctx, path.c_str(), model_dtype(device), &raw) !=
      SPARSE_OK)
    throw std::runtime_error("--checkpoint: " +
                             library_message("sparse_experimental_model_load_dtype"));
  ModelPtr model(raw, sparse_model_destroy);
  check(sparse_model_get_config(model.get(), cfg), "config");
  return model;
}

int64_t dataset_seq_len(const sparse_dataset* ds) {
  int64_t n = 0;
  check(sparse_dataset_seq_len(ds, &n), "dataset");
  return n;
}

int64_t dataset_size(const sparse_dataset* ds) {
  int64_t n = 0;
  check(sparse_dataset_num_sequences(ds, &n), "dataset");
  return n;
}

// Mean bits per dim over the first `count` sequences of a split, in batches.
// Refuses data whose sequences are not the model's length (the model reads seq_len tokens per
// sequence, whatever the buffer holds).
void check_same_length(const sparse_dataset* ds, const sparse_model_config& cfg) {
  if (dataset_seq_len(ds) != cfg.seq_len)
    throw std::runtime_error("the data's sequences have " + std::to_string(dataset_seq_len(ds)) +
                             " tokens but the model's seq_len is " + std::to_string(cfg.seq_len));
}

double evaluate(sparse_model* model, const sparse_dataset* ds, int64_t count, int batch,
                int64_t* evaluated) {
  sparse_model_config cfg;
  check(sparse_model_get_config(model, &cfg), "config");
  check_same_length(ds, cfg);
  const int64_t n = cfg.seq_len;
  count = std::min(count, dataset_size(ds));
  // A batch larger than the sequences evaluated holds only those.
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(batch, count));
  check_token_memory(rows, n, "--batch " + std::to_string(batch));
  std::vector<uint8_t> tokens(static_cast<size_t>(rows * n));
  double total = 0;
  int64_t done = 0;
  while (done < count) {
    const int64_t b = std::min<int64_t>(batch, count - done);
    check(sparse_dataset_read(ds, done, b, SPARSE_TOKENS_U8, tokens.data(), tokens.size()), "read");
    double bpd = 0;
    check(sparse_model_evaluate(model, tokens.data(), b, &bpd), "evaluate");
    total += bpd * static_cast<double>(b);
    done += b;
  }
  if (evaluated) *evaluated = done;
  return done > 0 ? total / static_cast<double>(done) : std::nan("");
}

void set_attention(sparse_model_config& cfg, const TrainOptions& o) {
  if (!o.attention.empty()) {
    if (o.attention == "dense")
      cfg.attention = SPARSE_MODEL_ATTENTION_DENSE;
    else if (o.attention == "strided")
      cfg.attention = SPARSE_MODEL_ATTENTION_STRIDED;
    else if (o.attention == "fixed")
      cfg.attention = SPARSE_MODEL_ATTENTION_FIXED;
    else
      throw std::runtime_error("--attention must be dense, strided or fixed");
  }
  if (!o.head_mode.empty()) {
    if (o.head_mode == "interleaved")
      cfg.head_mode = SPARSE_HEADS_INTERLEAVED;
    else if (o.head_mode == "merged")
      cfg.head_mode = SPARSE_HEADS_MERGED;
    else if (o.head_mode == "multihead")
      cfg.head_mode = SPARSE_HEADS_MULTIHEAD;
    else
      throw std::runtime_error("--head-mode must be interleaved, merged or multihead");
  }
  if (!o.row_attention.empty()) {
    if (o.row_attention == "strided")
      cfg.row_attention = SPARSE_ROW_STRIDED;
    else if (o.row_attention == "local")
      cfg.row_attention = SPARSE_ROW_LOCAL;
    else
      throw std::runtime_error("--row-attention must be strided or local");
  }
  if (o.summary_variants > 0) cfg.summary_variants = o.summary_variants;
  if (!o.layer_cycle.empty()) {
    if (o.layer_cycle.size() >= sizeof cfg.layer_cycle)
      throw std::runtime_error("--layer-cycle is too long");
    std::snprintf(cfg.layer_cycle, sizeof cfg.layer_cycle, "%s", o.layer_cycle.c_str());
  }
}

// Position tables that fit the data: rows x columns for single-channel synthetic images,
// ceil(n / l) x l for text and audio; image presets keep their own.
void fit_positions(sparse_model_config& cfg, const std::string& kind, const DataSpec& spec) {
  if (kind == "cifar10" || kind == "imagenet64") return;
  if (kind == "synthetic_image") {
    const int64_t w = spec.image_width > 0 ? spec.image_width : 32;
    cfg.num_position_dims = 2;
    cfg.position_shape[0] = (cfg.seq_len + w - 1) / w;
    cfg.position_shape[1] = w;
    return;
  }
  cfg.num_position_dims = 2;
  cfg.position_shape[0] = (cfg.seq_len + cfg.stride - 1) / cfg.stride;
  cfg.position_shape[1] = cfg.stride;
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }

// The options that fix a training run, by long name: a resumed run takes them from the record
// saved beside its checkpoint, and refuses a given one that differs.
nlohmann::json run_options(const TrainOptions& o) {
  const DataSpec& d = o.data;
  return {{"preset", o.preset},
          {"attention", o.attention},
          {"head-mode", o.head_mode},
          {"layer-cycle", o.layer_cycle},
          {"row-attention", o.row_attention},
          {"summary-variants", o.summary_variants},
          {"seq-len", o.seq_len},
          {"layers", o.layers},
          {"width", o.width},
          {"heads", o.heads},
          {"block", o.block},
          {"stride", o.stride},
          {"summary", o.summary},
          {"dropout", o.dropout},
          {"output-init-std", o.output_init_std},
          {"recompute", o.recompute},
          {"data", d.spec},
          {"data-seq-len", d.seq_len},
          {"vocab", d.vocab},
          {"num-sequences", d.num_sequences},
          {"image-width", d.image_width},
          {"image-height", d.image_height},
          {"noise-scale", d.noise_scale},
          {"copy-offset", d.copy_offset},
          {"data-seed", d.seed},
          {"steps", o.steps},
          {"batch", o.batch},
          {"micro-batch", o.micro_batch},
          {"world-size", o.world_size},
          {"lr", o.lr},
          {"warmup", o.warmup},
          {"optimizer", o.optimizer},
          {"weight-decay", o.weight_decay},
          {"seed", o.seed},
          {"dtype", o.device.dtype}};
}

void apply_run_options(const nlohmann::json& j, TrainOptions& o) {
  DataSpec& d = o.data;
  j.at("preset").get_to(o.preset);
  j.at("attention").get_to(o.attention);
  j.at("head-mode").get_to(o.head_mode);
  j.at("layer-cycle").get_to(o.layer_cycle);
  j.at("row-attention").get_to(o.row_attention);
  j.at("summary-variants").get_to(o.summary_variants);
  j.at("seq-len").get_to(o.seq_len);
  j.at("layers").get_to(o.layers);
  j.at("width").get_to(o.width);
  j.at("heads").get_to(o.heads);
  j.at("block").get_to(o.block);
  j.at("stride").get_to(o.stride);
  j.at("summary").get_to(o.summary);
  j.at("dropout").get_to(o.dropout);
  j.at("output-init-std").get_to(o.output_init_std);
  j.at("recompute").get_to(o.recompute);
  j.at("data").get_to(d.spec);
  j.at("data-seq-len").get_to(d.seq_len);
  j.at("vocab").get_to(d.vocab);
  j.at("num-sequences").get_to(d.num_sequences);
  j.at("image-width").get_to(d.image_width);
  j.at("image-height").get_to(d.image_height);
  j.at("noise-scale").get_to(d.noise_scale);
  j.at("copy-offset").get_to(d.copy_offset);
  j.at("data-seed").get_to(d.seed);
  j.at("steps").get_to(o.steps);
  j.at("batch").get_to(o.batch);
  o.micro_batch = j.value("micro-batch", 0);  // absent from records of older versions
  o.world_size = j.value("world-size", 1);
  j.at("lr").get_to(o.lr);
  j.at("warmup").get_to(o.warmup);
  j.at("optimizer").get_to(o.optimizer);
  j.at("weight-decay").get_to(o.weight_decay);
  j.at("seed").get_to(o.seed);
  o.device.dtype = j.value("dtype", "fp32");  // records of older versions: fp32, the only one
}

// run_options with each "not given" placeholder (0, -1 or empty) replaced by the value in effect:
// the preset's, the data kind's or the library's default. A given option equal to the value a
// run used is no conflict, whether that run gave it or took the default.
nlohmann::json effective_run_options(const TrainOptions& o) {
  nlohmann::json j = run_options(o);
  sparse_model_config cfg;
  if (sparse_model_config_preset(o.preset.c_str(), &cfg) != SPARSE_OK) {
    sparse_clear_error();  // an unknown preset: compared as given (and refused later)
    return j;
  }
  try {
    set_attention(cfg, o);
  } catch (const std::exception&) {
    return j;
  }
  const auto or_preset = [&](const char* name, auto given, auto preset) {
    if (given <= 0) j[name] = preset;
  };
  if (o.attention.empty())
    j["attention"] = cfg.attention == SPARSE_MODEL_ATTENTION_DENSE     ? "dense"
                     : cfg.attention == SPARSE_MODEL_ATTENTION_STRIDED ? "strided"
                                                                       : "fixed";
  if (o.head_mode.empty())
    j["head-mode"] = cfg.head_mode == SPARSE_HEADS_INTERLEAVED ? "interleaved"
                     : cfg.head_mode == SPARSE_HEADS_MERGED    ? "merged"
                                                               : "multihead";
  if (o.row_attention.empty())
    j["row-attention"] = cfg.row_attention == SPARSE_ROW_LOCAL ? "local" : "strided";
  if (o.layer_cycle.empty()) j["layer-cycle"] = cfg.layer_cycle;
  or_preset("summary-variants", o.summary_variants, std::max<int32_t>(1, cfg.summary_variants));
  const int64_t seq_len = o.seq_len > 0 ? o.seq_len : cfg.seq_len;
  j["seq-len"] = seq_len;
  or_preset("layers", o.layers, cfg.num_layers);
  or_preset("width", o.width, cfg.d_model);
  or_preset("heads", o.heads, cfg.num_heads);
  or_preset("block", o.block, cfg.block_size);
  or_preset("stride", o.stride, cfg.stride);
  or_preset("summary", o.summary, cfg.summary);
  if (o.dropout < 0) j["dropout"] = cfg.dropout;
  if (o.output_init_std < 0) j["output-init-std"] = cfg.output_init_std;
  if (o.recompute < 0) j["recompute"] = cfg.recompute;
  or_preset("micro-batch", o.micro_batch, o.batch);
  sparse_train_config tc;
  sparse_train_config_default(&tc);
  if (o.weight_decay < 0) j["weight-decay"] = tc.weight_decay;
  const DataSpec& d = o.data;
  or_preset("data-seq-len", d.seq_len, seq_len);
  sparse_dataset_kind kind;
  sparse_dataset_desc desc;
  if (sparse_dataset_kind_from_name(d.spec.substr(0, d.spec.find(':')).c_str(), &kind) ==
          SPARSE_OK &&
      sparse_dataset_desc_default(&desc, kind) == SPARSE_OK) {
    or_preset("vocab", d.vocab, desc.vocab);
    or_preset("num-sequences", d.num_sequences, desc.num_sequences);
    or_preset("image-width", d.image_width, desc.image_width);
    or_preset("image-height", d.image_height, desc.image_height);
    or_preset("noise-scale", d.noise_scale, desc.noise_scale);
    or_preset("copy-offset", d.copy_offset, desc.copy_offset);
  } else {
    sparse_clear_error();
  }
  return j;
}

constexpr const char* kRunFormat = "sparse-repro-run-1";

// Beside the checkpoint file itself (the target when --checkpoint is a symbolic link).
std::string run_record_path(const std::string& checkpoint) {
  return resolve_output_path(checkpoint, "--checkpoint") + ".run.json";
}

// Settings of a run that do not change what it computes, or (--threads) change it only by the
// rounding of parallel sums: a resumed run takes the saved ones unless they are given again, and
// a given one may differ from the saved one.
nlohmann::json run_settings(const TrainOptions& o) {
  return {{"threads", o.threads},
          {"eval-every", o.eval_every},
          {"eval-sequences", o.eval_sequences},
          {"eval-split", o.eval_split},
          {"checkpoint-every", o.checkpoint_every}};
}

void apply_run_settings(const nlohmann::json& saved, TrainOptions& o) {
  auto take = [&](const char* name, auto& field) {
    if (!saved.contains(name)) return;  // a record written before settings were kept
    if (std::find(o.given.begin(), o.given.end(), name) != o.given.end()) return;
    saved.at(name).get_to(field);
  };
  take("threads", o.threads);
  take("eval-every", o.eval_every);
  take("eval-sequences", o.eval_sequences);
  take("eval-split", o.eval_split);
  take("checkpoint-every", o.checkpoint_every);
}

// The options of a resumed run: the saved run's, after checking that every run option given on
// the command line equals the saved one. Without a record (a checkpoint of another program) the
// given options stand, and the library compares the configuration they make with the checkpoint.
// world_size: the ranks of the resumed run.
TrainOptions resumed_options(const TrainOptions& given, int world_size) {
  if (!path_exists(given.checkpoint))
    throw std::runtime_error("--resume: the checkpoint \"" + given.checkpoint +
                             "\" does not exist, so there is no run to continue (without "
                             "--resume, train starts a new run and saves it there)");
  const std::string path = run_record_path(given.checkpoint);
  if (!path_exists(path)) {
    std::fprintf(stderr,
                 "--resume: %s has no record of its run's options (%s); the model and trainer "
                 "configuration the given options make must equal the checkpoint's, and the "
                 "number of ranks it was trained on is unknown: --batch %d is taken per rank as "
                 "given (a global batch of %lld)\n",
                 given.checkpoint.c_str(), path.c_str(), given.batch,
                 static_cast<long long>(given.batch) * world_size);
    TrainOptions o = given;
    o.world_size = world_size;  // nothing to keep: the given --batch stands on every rank
    return o;
  }
  nlohmann::json saved;
  try {
    saved = nlohmann::json::parse(read_regular_file(path, "run record"));
    if (saved.at("format") != kRunFormat) throw std::runtime_error("unknown format");
    TrainOptions probe;
    apply_run_options(saved.at("options"), probe);
    for (const char* key : {"step", "previous_step"})
      if (saved.contains(key) && !saved[key].is_number_integer())
        throw std::runtime_error(std::string("\"") + key + "\" is " + saved[key].dump() +
                                 ", not a whole number");
  } catch (const std::exception& e) {
    throw std::runtime_error("--resume: cannot read the run record " + path + ": " + e.what());
  }
  const nlohmann::json& before = saved["options"];
  // The values in effect, of the saved run and of the saved run with the given options: an
  // option the saved run left to its preset or default equals that value given explicitly.
  const nlohmann::json now = run_options(given);
  nlohmann::json with_given = before;
  for (const std::string& name : given.given)
    if (now.contains(name)) with_given[name] = now[name];
  TrainOptions saved_run = given, given_run = given;
  apply_run_options(before, saved_run);
  apply_run_options(with_given, given_run);
  const nlohmann::json was = effective_run_options(saved_run);
  const nlohmann::json is = effective_run_options(given_run);
  // On another number of ranks the run keeps its global batch: --batch is the per-rank share of
  // it (keep_global_batch), and the saved per-rank value is accepted too.
  const int64_t saved_ranks = before.value("world-size", 1);
  const int64_t global = saved_ranks * was["batch"].get<int64_t>();
  const bool other_ranks = saved_ranks != world_size;
  std::string conflicts;
  for (const std::string& name : given.given) {
    if (!now.contains(name) || is[name] == was[name]) continue;
    if (name == "batch" && other_ranks) {
      if (global % world_size == 0 && given.batch == global / world_size) continue;
      conflicts +=
          "\n  --batch: the checkpoint's run has " + was[name].dump() + " on each of " +
          std::to_string(saved_ranks) + " rank(s) (a global batch of " + std::to_string(global) +
          ")" +
          (global % world_size == 0
               ? "; on " + std::to_string(world_size) + " rank(s) it is kept with --batch " +
                     std::to_string(global / world_size)
               : ", which " + std::to_string(world_size) + " rank(s) cannot share equally") +
          "; given " + is[name].dump();
      continue;
    }
    conflicts += "\n  --" + name + ": the checkpoint's run has " + was[name].dump() + ", given " +
                 is[name].dump();
    if (name == "steps") conflicts += " (--extend-to N continues a run to N steps)";
  }
  if (!conflicts.empty())
    throw std::runtime_error("--resume: options conflict with the run saved in " +
                             given.checkpoint + ":" + conflicts +
                             "\nresume without them to continue that run exactly, or start a new "
                             "run without --resume");
  TrainOptions o = given;
  apply_run_options(before, o);
  if (saved.contains("settings")) apply_run_settings(saved["settings"], o);
  o.saved_step = saved.value("step", int64_t{-1});
  o.saved_previous_step = saved.value("previous_step", int64_t{-1});
  // The record keeps --data as it was given: a relative path is relative to the run's folder.
  const std::string data_path = parse_data_spec(o.data.spec).path;
  if (!data_path.empty() && data_path[0] != '/' && !path_exists(data_path))
    throw std::runtime_error("--resume: the run's data, --data " + o.data.spec +
                             " (from its run record), is a path relative to the folder the run "
                             "started in and is not found from this one: resume from that folder");
  return o;
}

// The record and the checkpoint are two files, each replaced atomically, so a run can stop
// (SIGTERM from a scheduler, a full disk) between the two renames. The record goes first and names
// both the step of the checkpoint about to be written and that of the one it replaces
// (`previous_step`, when this run wrote or resumed it): whichever of the two the checkpoint holds,
// the pair is whole. A pair from two runs (a record over another run's checkpoint) names neither
// step and is refused on resume instead of mixing the runs. `on_disk_step` is the step of the
// checkpoint this run last wrote or resumed (-1: none); it is updated here.
void save_run(sparse_model* model, const TrainOptions& o, int64_t& on_disk_step) {
  // The batches consumed: the optimiser's steps and those skipped by loss scaling (as resume
  // counts them).
  int64_t step = 0, skipped = 0;
  check(sparse_model_step(model, &step), "step");
  check(sparse_experimental_model_skipped_steps(model, &skipped), "skipped steps");
  step += skipped;
  nlohmann::json record = {{"format", kRunFormat},
                           {"step", step},
                           {"options", run_options(o)},
                           {"settings", run_settings(o)}};
  if (on_disk_step >= 0 && on_disk_step != step) record["previous_step"] = on_disk_step;
  write_file_atomically(run_record_path(o.checkpoint), record.dump(1) + "\n");
  check(sparse_model_save(model, o.checkpoint.c_str()), "save " + o.checkpoint);
  on_disk_step = step;
}

// A checksum of the data a rank reads: each split's size and the bytes of its first and last
// sequences (FNV-1a), so that ranks reading different files behind one --data are refused.
nlohmann::json data_fingerprint(const sparse_dataset* ds) {
  const int64_t count = dataset_size(ds), n = dataset_seq_len(ds);
  std::vector<uint8_t> tokens(static_cast<size_t>(n));
  uint64_t hash = 14695981039346656037ull;
  for (int64_t index : {int64_t{0}, count - 1}) {
    check(sparse_dataset_read(ds, index, 1, SPARSE_TOKENS_U8, tokens.data(), tokens.size()),
          "read");
    for (uint8_t t : tokens) hash = (hash ^ t) * 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return {{"sequences", count}, {"checksum of the first and last", hex}};
}

}  // namespace

void add_data_options(CLI::App& app, DataSpec& d) {
  app.add_option("--data", d.spec,
                 "synthetic_image, synthetic_text, cifar10:PATH, enwik8:PATH, text:PATH, "
                 "imagenet64:PATH or audio:PATH (text and enwik8: raw bytes, a zip of one file "
                 "or gzip, read as the text they hold; bzip2, xz, zstd, 7-Zip and tar files are "
                 "refused, naming the command that unpacks them)")
      ->capture_default_str();
  app.add_option("--data-seq-len", d.seq_len,
                 "sequence length for text/audio (default: the model's)")
      ->check(integer_in(1));
  app.add_option("--vocab", d.vocab, "synthetic alphabet size, 2..256 (default: the kind's)")
      ->check(integer_in(2, 256));
  app.add_option("--num-sequences", d.num_sequences, "synthetic sequences per split")
      ->check(integer_in(1));
  app.add_option("--image-width", d.image_width, "synthetic image width")
      ->check(integer_in(1, kIntMax));
  app.add_option("--image-height", d.image_height, "synthetic image height")
      ->check(integer_in(1, kIntMax));
  app.add_option("--noise-scale", d.noise_scale,
                 "synthetic image: scale of the noise around the mean of the left and upper "
                 "neighbours (default 4; smaller = more predictable)")
      ->check(number_in(0, kInf, true));
  app.add_option("--copy-offset", d.copy_offset, "synthetic text copy distance")
      ->check(integer_in(1));
  app.add_option("--data-seed", d.seed, "dataset seed")->check(seed_value())->capture_default_str();
}

void add_train_options(CLI::App& app, TrainOptions& o) {
  app.add_option("--preset", o.preset,
                 "model preset: the paper's cifar10, enwik8, imagenet64, audio, or OpenAI's "
                 "released cifar10-openai (c10-58m); each optionally -small")
      ->capture_default_str();
  app.add_option("--attention", o.attention, "dense, strided or fixed");
  app.add_option("--head-mode", o.head_mode, "interleaved, merged or multihead");
  app.add_option("--layer-cycle", o.layer_cycle, "interleaved head types, e.g. 2111 or 1");
  app.add_option("--row-attention", o.row_attention,
                 "strided row heads: strided (the paper's max(0, i - l) <= j <= i, l + 1 keys) "
                 "or local (OpenAI's i - l < j <= i, l keys)")
      ->check(CLI::IsMember({"strided", "local"}));
  app.add_option("--summary-variants", o.summary_variants,
                 "fixed summary heads: per-head column offsets (OpenAI's num_verts; 1 = the "
                 "paper's); with --head-mode merged this is OpenAI's 'fixed'")
      ->check(integer_in(1, kIntMax));
  app.add_option("--seq-len", o.seq_len, "override n")->check(integer_in(1));
  app.add_option("--layers", o.layers, "override layers")->check(integer_in(1, kIntMax));
  app.add_option("--width", o.width, "override d")->check(integer_in(1, kIntMax));
  app.add_option("--heads", o.heads, "override heads")->check(integer_in(1, kIntMax));
  app.add_option("--block", o.block, "override block size")->check(integer_in(1, kIntMax));
  app.add_option("--stride", o.stride, "override l")->check(integer_in(1));
  app.add_option("--summary", o.summary, "override c")->check(integer_in(1));
  app.add_option("--dropout", o.dropout, "override dropout")->check(number_in(0, 1, false, true));
  app.add_option("--output-init-std", o.output_init_std,
                 "std of the output projection's initialisation (default 0: OpenAI's zero init)")
      ->check(number_in(0, kInf));
  app.add_option("--recompute", o.recompute, "1/0 (default: the preset's)")
      ->check(integer_in(0, 1));
  add_data_options(app, o.data);
  app.add_option("--steps", o.steps, "optimizer steps in all")
      ->check(integer_in(1))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step (per rank under mpirun)")
      ->check(integer_in(1, kIntMax))
      ->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (after --warmup, cosine decay to 0 at --steps)")
      ->check(number_in(0, kInf, true))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "steps of linear learning-rate warm-up from 0")
      ->check(integer_in(0))
      ->capture_default_str();
  app.add_option("--optimizer", o.optimizer,
                 "adam (weight decay as an L2 penalty, as OpenAI's code) or adamw (decoupled)")
      ->check(CLI::IsMember({"adam", "adamw"}))
      ->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "weight decay (default: the library's, 0.01)")
      ->check(number_in(0, kInf));
  app.add_option("--eval-every", o.eval_every, "evaluate every k steps (0 = at the end only)")
      ->check(integer_in(0));
  app.add_option("--eval-sequences", o.eval_sequences,
                 "sequences of --eval-split evaluated (at most the split's)")
      ->check(integer_in(1))
      ->capture_default_str();
  app.add_option("--eval-split", o.eval_split,
                 "the split evaluated (a single record file has train only)")
      ->check(one_of({"train", "valid", "test"}))
      ->capture_default_str();
  app.add_option("--checkpoint", o.checkpoint,
                 "save the model here (atomically; with the run's options in FILE.run.json) "
                 "at the end, at each --eval-every evaluation and every --checkpoint-every steps; "
                 "locked through FILE.lock while the run lasts (a second run is refused)");
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "also save --checkpoint every k steps (0 = only at evaluations and the end)")
      ->check(integer_in(0));
  app.add_flag("--resume", o.resume,
               "continue the run saved in --checkpoint exactly: its options are taken from "
               "FILE.run.json, and a given option that differs is refused");
  app.add_option("--extend-to", o.extend_to,
                 "with --resume: continue the saved run to this many steps in all; from the saved "
                 "step on the learning rate is that of a run of that many steps (its warm-up and "
                 "cosine) at the same step, with no second warm-up: after a finished run it goes "
                 "from the decayed rate straight to that curve's value")
      ->check(integer_in(1));
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->check(integer_in(0, kIntMax));
  add_device_options(app, o.device);
  app.add_option("--seed", o.seed, "random seed of the run")
      ->check(seed_value())
      ->capture_default_str();
  app.add_option("--log", o.log,
                 "write one JSON line per step as it ends (the loss curve); --resume cuts it "
                 "back to the checkpoint's step and appends; locked while the run lasts");
  app.add_option("--summary-out", o.summary_out,
                 "write the run's JSON summary here (atomically, at the end)");
  app.add_flag("--quiet", o.quiet, "no progress display");
  add_data_parallel_options(app, o);
  app.add_flag("--json", o.json, "print the run's JSON summary instead of the one-line summary");
}

void add_eval_options(CLI::App& app, EvalOptions& o) {
  app.add_option("--checkpoint", o.checkpoint, "a checkpoint written by train --checkpoint")
      ->required();
  // Without --data, the data the checkpoint was trained on (from its run record).
  o.data.spec.clear();
  add_data_options(app, o.data);
  app.add_option("--split", o.split, "the split evaluated")
      ->check(one_of({"train", "valid", "test"}))
      ->capture_default_str();
  app.add_option("--sequences", o.sequences, "sequences of --split evaluated (at most the split's)")
      ->check(integer_in(1))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per forward pass")
      ->check(integer_in(1, kIntMax))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->check(integer_in(0, kIntMax));
  add_device_options(app, o.device);
  auto* sliding =
      app.add_option("--sliding", o.sliding_stride,
                     "text: sliding-window evaluation with this stride (windows of seq_len; "
                     "only the last STRIDE bytes of each window after the first are scored)")
          ->check(integer_in(1));
  app.add_option("--min-context", o.min_context,
                 "text: sliding evaluation where every byte after the first window has at least "
                 "this much context (stride = seq_len - min-context)")
      ->check(integer_in(0))
      ->excludes(sliding);
  app.add_option("--offset", o.offset, "sliding: first byte of the evaluated range in the split")
      ->check(integer_in(0));
  app.add_option("--bytes", o.bytes, "sliding: bytes to evaluate (0 = to the end of the split)")
      ->check(integer_in(0));
  app.add_flag("--json", o.json, "print the result as JSON instead of the one-line summary");
}

void add_sample_options(CLI::App& app, SampleOptions& o) {
  app.add_option("--checkpoint", o.checkpoint, "a checkpoint written by train --checkpoint")
      ->required();
  app.add_option("--out", o.out,
                 "write the sample here (atomically): FILE.png an image, FILE.wav audio, any "
                 "other name the raw tokens")
      ->required();
  app.add_option("--length", o.length, "tokens to generate (default: the model's seq_len)")
      ->check(integer_in(1));
  app.add_option("--scale", o.scale,
                 "PNG: each token as a K x K square (default: images narrower than 256 pixels "
                 "are enlarged to at least that, at most 16 times)")
      ->check(integer_in(1, 64));
  app.add_option("--temperature", o.temperature, "sampling temperature (0 = greedy)")
      ->check(number_in(0, kInf))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed of the sampling")
      ->check(seed_value())
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->check(integer_in(0, kIntMax));
  add_device_options(app, o.device);
  app.add_flag("--json", o.json, "print the result as JSON instead of the one-line summary");
}

void note_given_options(const CLI::App& app, TrainOptions& o) {
  for (const CLI::Option* opt : app.get_options())
    if (opt->count() > 0 && !opt->get_lnames().empty()) o.given.push_back(opt->get_lnames()[0]);
}

namespace {

nlohmann::json train(const TrainOptions& given, const DataParallel& dp);

}  // namespace

// Under an MPI launcher every rank runs this; rank 0 alone writes files and progress and returns
// the summary (the other ranks return null). A failure on one rank of several ends the job.
nlohmann::json run_train(const TrainOptions& given,
                         const std::function<void(const nlohmann::json&)>& on_summary) {
  const DataParallel dp(given.rank_timeout);
  nlohmann::json summary;
  try {
    summary = train(given, dp);
  } catch (const TrainStopped& e) {
    // Every rank stopped after the same step: they leave together, and rank 0 alone says so.
    if (dp.size() == 1) throw;
    dp.finish();
    if (dp.root()) throw;
    throw TrainStopped(e.signal, "");
  } catch (const std::exception& e) {
    if (dp.size() == 1) throw;
    dp.abort_job(e.what());
  }
  // Printed before the ranks meet for the last time: a rank that hangs there ends the job with
  // an error, but the result (its files are written) is out.
  if (on_summary && !summary.is_null()) on_summary(summary);
  dp.finish();
  return summary;
}

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {  // the second signal: end now, as without the handler
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_signal = sig;
}

// While training: SIGTERM (a scheduler's preemption, mpirun passing on its own) and SIGINT
// (Ctrl-C) stop the run at the end of the current step instead of mid-write, after saving the
// checkpoint; a second one ends the process at once. A signal the process was started with
// ignored stays ignored. The previous handlers come back at the end.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    for (int i = 0; i < 2; ++i) {
      previous_[i] = std::signal(kSignals[i], on_stop_signal);
      if (previous_[i] == SIG_IGN) std::signal(kSignals[i], SIG_IGN);
    }
  }
  ~StopSignals() {
    for (int i = 0; i < 2; ++i)
      if (previous_[i] != SIG_ERR) std::signal(kSignals[i], previous_[i]);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal that asked to stop (0: none). With several ranks every rank must call it after
  // the same step: they agree (a rank stops when any rank was asked), so none is left waiting
  // in the next step's reduction.
  static int requested(const DataParallel& dp) {
    const int sig = g_stop_signal;
    if (dp.size() == 1) return sig;
    const double asked = dp.reducer()->all_reduce_sum(sig != 0 ? 1.0 : 0.0);
    return asked > 0 ? (sig != 0 ? sig : SIGTERM) : 0;
  }

 private:
  static constexpr int kSignals[2] = {SIGTERM, SIGINT};
  using Handler = void (*)(int);
  Handler previous_[2] = {SIG_ERR, SIG_ERR};
};

nlohmann::json train(const TrainOptions& given, const DataParallel& dp) {
  // Every output is checked before the work that produces it. Every rank resumes from the
  // checkpoint; rank 0 alone writes the outputs (the folders of the log and summary may be its
  // own) and locks them until the run ends: a second run given the same --checkpoint or --log is
  // refused here, before any work (output_files.hpp).
  check_output_path(given.checkpoint, "--checkpoint");
  std::optional<RunOutputsLock> outputs_lock;
  if (dp.root()) {
    check_output_path(given.log, "--log");
    check_output_path(given.summary_out, "--summary-out");
    outputs_lock.emplace(given.checkpoint, given.log);
  }
  if (given.resume && given.checkpoint.empty())
    throw std::runtime_error("--resume needs --checkpoint");
  if (given.checkpoint_every > 0 && given.checkpoint.empty())
    throw std::runtime_error("--checkpoint-every needs --checkpoint");
  if (given.extend_to > 0 && !given.resume) throw std::runtime_error("--extend-to needs --resume");
  TrainOptions o = given.resume ? resumed_options(given, dp.size()) : given;
  if (o.extend_to > 0) {
    if (o.extend_to <= o.steps)
      throw std::runtime_error("--extend-to " + std::to_string(o.extend_to) +
                               " must exceed the saved run's --steps " + std::to_string(o.steps));
    o.steps = o.extend_to;
  }
  keep_global_batch(o, dp);
  if (o.micro_batch > 0 && o.batch % o.micro_batch != 0)
    throw std::runtime_error("--micro-batch " + std::to_string(o.micro_batch) +
                             " does not divide --batch " + std::to_string(o.batch) +
                             " (the sequences of each rank); give a divisor of it, or 0 for "
                             "one micro-batch");
  nlohmann::json same_on_every_rank = effective_run_options(o);
  same_on_every_rank["eval-every"] = o.eval_every;
  same_on_every_rank["eval-sequences"] = o.eval_sequences;
  same_on_every_rank["eval-split"] = o.eval_split;
  same_on_every_rank["resume"] = o.resume;
  same_on_every_rank["backend"] = o.device.backend;
  same_on_every_rank["micro-batch"] = o.micro_batch;  // as given: 0 is the whole --batch
  // How the gradient is cut into the collectives' buckets: ranks that differ call mismatched
  // collectives.
  same_on_every_rank["reduce-overlap"] = o.reduce_overlap;
  same_on_every_rank["checkpoint"] = o.checkpoint;  // every rank resumes from it
  dp.check_same_options(same_on_every_rank);
  const bool root = dp.root();
  if (!root) o.quiet = true;

  // Each rank of a machine on its own GPU (the NCCL reducer uses the same device).
  auto ctx = model_context(o.device, o.threads, o.device.backend == "cuda" ? dp.cuda_device() : 0);
  sparse_model_config cfg;
  check(sparse_model_config_preset(o.preset.c_str(), &cfg), "--preset");
  set_attention(cfg, o);
  if (o.layers > 0) cfg.num_layers = o.layers;
  if (o.width > 0) cfg.d_model = o.width;
  if (o.heads > 0) cfg.num_heads = o.heads;
  if (o.block > 0) cfg.block_size = o.block;
  if (o.stride > 0) cfg.stride = o.stride;
  if (o.summary > 0) cfg.summary = o.summary;
  if (o.dropout >= 0) cfg.dropout = o.dropout;
  if (o.output_init_std >= 0) cfg.output_init_std = o.output_init_std;
  if (o.recompute >= 0) cfg.recompute = o.recompute;
  cfg.seed = o.seed;

  const std::string kind = parse_data_spec(o.data.spec).kind;
  if (o.seq_len > 0) cfg.seq_len = o.seq_len;
  const std::string n_option = o.data.seq_len > 0 ? "--data-seq-len" : "--seq-len";
  auto train =
      open_split(o.data, SPARSE_SPLIT_TRAIN, cfg.seq_len, cfg.block_size, "--eval-split", n_option);
  cfg.seq_len = dataset_seq_len(train.get());
  fit_positions(cfg, kind, o.data);
  auto held_out = open_split(o.data, parse_split(o.eval_split), cfg.seq_len, cfg.block_size,
                             "--eval-split", n_option);
  if (dp.size() > 1)
    dp.check_same_data({{"train split", data_fingerprint(train.get())},
                        {o.eval_split + " split", data_fingerprint(held_out.get())}},
                       o.data.spec);

  sparse_train_config tc;
  sparse_train_config_default(&tc);
  tc.learning_rate = o.lr;
  tc.warmup_steps = o.warmup;
  tc.total_steps = o.steps;
  tc.optimizer = o.optimizer == "adamw" ? SPARSE_OPTIMIZER_ADAMW : SPARSE_OPTIMIZER_ADAM;
  if (o.weight_decay >= 0) tc.weight_decay = o.weight_decay;
  tc.micro_batch = o.micro_batch;
  tc.dtype = model_dtype(o.device);
  sparse_model* raw = nullptr;
  if (sparse_model_create(ctx.get(), &cfg, &tc, &raw) != SPARSE_OK)
    throw std::runtime_error(
        std::string("model (--preset ") + o.preset +
        " with the options given): " + with_option_names(sparse_last_error(), kModelFields));
  ModelPtr model(raw, sparse_model_destroy);
  dp.attach(model.get(), o.reduce_overlap == "on");
  // The library refuses a checkpoint whose model configuration differs from the one these
  // options make, naming the fields; the trainer configuration is the run's (with --extend-to,
  // the longer schedule).
  if (o.resume)
    check(sparse_model_restore(model.get(), o.checkpoint.c_str()), "--resume " + o.checkpoint);
  check(sparse_model_get_config(model.get(), &cfg), "config");
  check_same_length(train.get(), cfg);
  int64_t params = 0, step = 0, skipped = 0;
  sparse_model_parameter_count(model.get(), &params);
  sparse_model_step(model.get(), &step);
  check(sparse_experimental_model_skipped_steps(model.get(), &skipped), "skipped steps");
  // The optimiser's step counts applied updates only; the batches consumed (the loop's count and
  // the data position) include the steps skipped by loss scaling.
  const int64_t updates = step;
  step += skipped;
  const int64_t first_step = step;
  if (o.resume && o.saved_step >= 0 && o.saved_step != step && o.saved_previous_step != step)
    throw std::runtime_error(
        "--resume: the run record " + run_record_path(o.checkpoint) + " was written with the " +
        "checkpoint of step " + std::to_string(o.saved_step) +
        (o.saved_previous_step >= 0
             ? " (replacing that of step " + std::to_string(o.saved_previous_step) + ")"
             : std::string()) +
        ", but " + o.checkpoint + " holds step " + std::to_string(step) +
        ": the two files come from different runs (a record over another run's checkpoint), so "
        "the options in the record may not be this model's run; start a new run, or restore the "
        "pair that belongs together");
  // The step of the checkpoint at --checkpoint that belongs to this run (see save_run).
  int64_t on_disk_step = o.resume ? step : -1;
  if (o.resume && root)
    std::fprintf(stderr, "resuming %s at step %lld of %lld%s\n", o.checkpoint.c_str(),
                 static_cast<long long>(step), static_cast<long long>(o.steps),
                 step >= o.steps ? ": the run is finished (--extend-to N continues it)" : "");
  // Batches are a pure function of (seed, epoch, position): resuming continues the same stream.
  // Each step reads the global batch (world_size * batch sequences) and trains on its shard.
  const int64_t global_batch = static_cast<int64_t>(o.batch) * dp.size();
  const int64_t train_size = dataset_size(train.get());
  check(sparse_dataset_seek(train.get(), static_cast<uint64_t>(step * global_batch / train_size),
                            step * global_batch % train_size),
        "seek");

  if (o.resume && !o.log.empty() && root) truncate_log_to_step(o.log, "--log", updates);
  std::optional<LineLog> log;
  if (!o.log.empty() && root) log.emplace(o.log, "--log", o.resume, true);
  std::vector<uint8_t> tokens;
  const auto t0 = std::chrono::steady_clock::now();
  const bool tty = stderr_is_tty();
  const int64_t every = std::max<int64_t>(1, o.steps / 20);
  sparse_train_stats stats{};
  stats.struct_size = sizeof stats;
  double train_seconds = 0;
  int64_t peak = 0;
  nlohmann::json evals = nlohmann::json::array();
  StopSignals stop_signals;
  for (; step < o.steps; ++step) {
    const uint8_t* shard = dp.next_shard(train.get(), o.batch, cfg.seq_len, tokens);
    {
      // A full-size model's step takes minutes on a CPU: say that it is still running.
      std::optional<Heartbeat> beat;
      if (!o.quiet && dp.root())
        beat.emplace("training step " + std::to_string(step + 1) + " of " +
                     std::to_string(o.steps));
      check(sparse_model_train_step(model.get(), shard, o.batch, &stats), "train step");
    }
    train_seconds += stats.seconds;
    peak = std::max(peak, stats.peak_activation_bytes);
    if (log) {
      nlohmann::json line = {{"step", stats.step},
                             {"loss", stats.loss},
                             {"bits_per_dim", stats.bits_per_dim},
                             {"lr", stats.learning_rate},
                             {"grad_norm", stats.grad_norm},
                             {"seconds", stats.seconds}};
      // Mixed precision: the loss scale this step used and the steps skipped so far for a
      // non-finite gradient (a skipped step repeats the previous step number).
      if (o.device.dtype != "fp32") {
        line["loss_scale"] = stats.loss_scale;
        line["skipped_steps"] = stats.skipped_steps;
      }
      log->write_line(line.dump());
    }
    if (!o.quiet && (tty || stats.step % every == 0 || stats.step == o.steps)) {
      char line[256];
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      sparse_train_stats shown = stats;
      shown.tokens *= dp.size();  // the global batch's tokens
      sparse_train_progress_line(&shown, o.steps, elapsed, line, sizeof line);
      std::fprintf(stderr, tty ? "\r%s   " : "%s\n", line);
    }
    if (o.eval_every > 0 && stats.step % o.eval_every == 0 && stats.step < o.steps) {
      int64_t count = 0;
      const double bpd =
          dp.evaluate(model.get(), held_out.get(), o.eval_sequences, o.batch, &count);
      evals.push_back({{"step", stats.step}, {"bits_per_dim", bpd}, {"sequences", count}});
      if (log)
        log->write_line(nlohmann::json({{"step", stats.step}, {"eval_bits_per_dim", bpd}}).dump());
      if (!o.checkpoint.empty() && root) save_run(model.get(), o, on_disk_step);
    } else if (o.checkpoint_every > 0 && stats.step % o.checkpoint_every == 0 &&
               stats.step < o.steps && root) {
      save_run(model.get(), o, on_disk_step);
    }
    if (const int sig = StopSignals::requested(dp); sig != 0) {
      const std::string name = sig == SIGINT ? "SIGINT" : "SIGTERM";
      std::string message = "stopped by " + name + " after step " + std::to_string(stats.step) +
                            " of " + std::to_string(o.steps);
      if (o.checkpoint.empty()) {
        message += "; nothing was saved (no --checkpoint)";
      } else {
        if (root) save_run(model.get(), o, on_disk_step);
        message += "; " + o.checkpoint + " holds it: the same command with --resume continues";
      }
      throw TrainStopped(sig, message);
    }
  }
  if (!o.quiet && tty) std::fprintf(stderr, "\n");
  int64_t count = 0;
  const double bpd = dp.evaluate(model.get(), held_out.get(), o.eval_sequences, o.batch, &count);
  evals.push_back({{"step", step}, {"bits_per_dim", bpd}, {"sequences", count}});
  if (!root) return nullptr;
  if (!o.checkpoint.empty()) save_run(model.get(), o, on_disk_step);

  nlohmann::json summary;
  summary["preset"] = o.preset;
  summary["data"] = o.data.spec;
  summary["attention"] = cfg.attention == SPARSE_MODEL_ATTENTION_DENSE     ? "dense"
                         : cfg.attention == SPARSE_MODEL_ATTENTION_STRIDED ? "strided"
                                                                           : "fixed";
  summary["layer_cycle"] = cfg.layer_cycle;
  summary["row_attention"] = cfg.row_attention == SPARSE_ROW_LOCAL ? "local" : "strided";
  summary["summary_variants"] = std::max<int32_t>(1, cfg.summary_variants);
  summary["seq_len"] = cfg.seq_len;
  summary["layers"] = cfg.num_layers;
  summary["width"] = cfg.d_model;
  summary["heads"] = cfg.num_heads;
  summary["stride"] = cfg.stride;
  summary["summary"] = cfg.summary;
  summary["block"] = cfg.block_size;
  summary["backend"] = o.device.backend;
  if (o.device.backend == "cuda") summary["cuda_device"] = dp.cuda_device();
  summary["dtype"] = o.device.dtype;
  summary["final_loss_scale"] = step > first_step ? stats.loss_scale : 1.0;
  summary["skipped_steps"] = stats.skipped_steps;
  summary["threads"] = o.threads;
  summary["parameters"] = params;
  summary["steps"] = step;
  summary["schedule_steps"] = o.steps;
  summary["resumed_from_step"] = o.resume ? nlohmann::json(first_step) : nlohmann::json(nullptr);
  summary["steps_this_run"] = step - first_step;
  summary["batch"] = o.batch;
  summary["micro_batch"] = o.micro_batch;
  summary["world_size"] = dp.size();
  summary["global_batch"] = global_batch;
  summary["gradient_reducer"] = dp.reducer()->name();
  // Whether the gradient sums overlapped the backward pass (off with no reducer).
  summary["reduce_overlap"] = o.reduce_overlap == "on" && dp.reducer()->overlaps() ? "on" : "off";
  summary["tokens_seen"] = step * global_batch * cfg.seq_len;
  // Times, memory and loss of the steps this invocation trained: with none (a finished run
  // resumed) they are null, not zeros, and the note says so.
  const int64_t trained = step - first_step;
  const nlohmann::json none(nullptr);
  summary["train_seconds"] = trained > 0 ? nlohmann::json(train_seconds) : none;
  summary["seconds_per_step"] =
      trained > 0 ? nlohmann::json(train_seconds / static_cast<double>(trained)) : none;
  summary["peak_activation_bytes"] = trained > 0 ? nlohmann::json(peak) : none;
  summary["final_train_loss"] = trained > 0 ? nlohmann::json(stats.loss) : none;
  if (trained == 0)
    summary["note"] = "nothing trained: the run was already finished at step " +
                      std::to_string(step) +
                      " (--extend-to N continues it); the training figures are null";
  summary["eval_split"] = o.eval_split;
  summary["eval_sequences"] = count;
  summary["eval_bits_per_dim"] = bpd;
  summary["evals"] = evals;
  summary["checkpoint"] =
      o.checkpoint.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.checkpoint);
  double entropy = 0, empirical = 0;
  if (sparse_dataset_entropy(held_out.get(), &entropy, &empirical) == SPARSE_OK) {
    summary["exact_entropy_bits_per_dim"] = entropy;
    summary["empirical_entropy_bits_per_dim"] = empirical;
  } else {
    sparse_clear_error();
  }
  if (!o.summary_out.empty()) write_file_atomically(o.summary_out, summary.dump(2) + "\n");
  return summary;
}

}  // namespace

std::string train_summary_line(const nlohmann::json& s) {
  char line[512];
  char trained[128];
  if (s.at("train_seconds").is_null())
    std::snprintf(trained, sizeof trained, "nothing trained (finished at step %lld)",
                  s.at("steps").get<long long>());
  else
    std::snprintf(trained, sizeof trained, "%lld steps in %.1f s", s.at("steps").get<long long>(),
                  s.at("train_seconds").get<double>());
  std::snprintf(line, sizeof line, "%s on %s: %s; %s split: %.4f bits/dim (%lld sequences of %lld)",
                s.at("preset").get<std::string>().c_str(), s.at("data").get<std::string>().c_str(),
                trained, s.at("eval_split").get<std::string>().c_str(),
                s.at("eval_bits_per_dim").get<double>(), s.at("eval_sequences").get<long long>(),
                s.at("seq_len").get<long long>());
  std::string text = line;
  if (s.contains("exact_entropy_bits_per_dim")) {
    std::snprintf(line, sizeof line, "; the source's exact entropy %.4f",
                  s["exact_entropy_bits_per_dim"].get<double>());
    text += line;
  }
  text += s.at("checkpoint").is_null() ? "; no checkpoint saved (--checkpoint FILE)"
                                       : "; checkpoint " + s["checkpoint"].get<std::string>();
  return text + " (--json for all figures)";
}

namespace {

// The paper's Enwik8 protocol over a contiguous byte range of a text split.
nlohmann::json run_sliding_eval(const EvalOptions& o, sparse_model* model,
                                const sparse_model_config& cfg) {
  const std::string kind = parse_data_spec(o.data.spec).kind;
  if (kind != "text" && kind != "enwik8")
    throw std::runtime_error(
        "--sliding / --min-context evaluate text (--data text:PATH or "
        "enwik8:PATH), not " +
        o.data.spec);
  const int64_t n = cfg.seq_len;
  int64_t stride = o.sliding_stride;
  if (o.min_context >= 0) {
    if (o.min_context >= n)
      throw std::runtime_error("--min-context " + std::to_string(o.min_context) +
                               " must be smaller than the model's seq_len " + std::to_string(n));
    stride = n - o.min_context;
  }
  if (stride > n)
    throw std::runtime_error("--sliding " + std::to_string(stride) +
                             " is larger than the model's seq_len " + std::to_string(n));
  // The split as one stream: sequences of one byte are its bytes in order.
  DataSpec one = o.data;
  one.seq_len = 1;
  auto ds = open_dataset(one, parse_split(o.split), 1);
  const int64_t size = dataset_size(ds.get());
  if (o.offset >= size)
    throw std::runtime_error("--offset " + std::to_string(o.offset) + " is past the end of the " +
                             o.split + " split (" + std::to_string(size) + " bytes)");
  const int64_t length = o.bytes > 0 ? o.bytes : size - o.offset;
  if (o.offset + length > size)
    throw std::runtime_error("--offset + --bytes = " + std::to_string(o.offset + length) +
                             " is past the end of the " + o.split + " split (" +
                             std::to_string(size) + " bytes)");
  std::vector<uint8_t> bytes(static_cast<size_t>(length));
  check(
      sparse_dataset_read(ds.get(), o.offset, length, SPARSE_TOKENS_U8, bytes.data(), bytes.size()),
      "read");
  const auto score = [&](const uint8_t* windows, int64_t count, double* bits) {
    check(sparse_model_token_bits(model, windows, count, bits, static_cast<size_t>(count * n)),
          "token bits");
  };
  const bool tty = stderr_is_tty();
  int64_t shown = 0;
  const auto progress = [&](int64_t done, int64_t total) {
    if (total < 20 || (!tty && done * 10 / total == shown * 10 / total && done < total)) return;
    shown = done;
    const char* format = tty ? "\rsliding evaluation: window %lld/%lld   "
                             : "sliding evaluation: window %lld/%lld\n";
    std::fprintf(stderr, format, static_cast<long long>(done), static_cast<long long>(total));
    if (tty && done == total) std::fprintf(stderr, "\n");
  };
  const auto t0 = std::chrono::steady_clock::now();
  const SlidingResult r = sliding_evaluate(bytes, n, stride, o.batch, score, nullptr, progress);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {{"checkpoint", o.checkpoint},
          {"data", o.data.spec},
          {"split", o.split},
          {"protocol", "sliding"},
          {"seq_len", n},
          {"stride", stride},
          {"min_context", r.min_context},
          {"offset", o.offset},
          {"bytes", r.bytes},
          {"windows", r.windows},
          {"bits_per_byte", r.bits_per_byte},
          {"dtype", o.device.dtype},
          {"seconds", seconds}};
}

}  // namespace

namespace {

// The data options of the run that saved `checkpoint` (a checkpoint that was loaded), from its
// run record. The checkpoint is an input here: its record is found next to the file it names
// (through any symbolic links), and its folder need not be writable.
DataSpec trained_data(const std::string& checkpoint) {
  std::string file = checkpoint;
  if (char* real = ::realpath(checkpoint.c_str(), nullptr)) {
    file = real;
    std::free(real);
  }
  const std::string path = file + ".run.json";
  if (!path_exists(path))
    throw std::runtime_error("--data is needed: " + checkpoint + " has no run record (" + path +
                             ") naming the data it was trained on");
  TrainOptions o;
  try {
    const auto saved = nlohmann::json::parse(read_regular_file(path, "run record"));
    apply_run_options(saved.at("options"), o);
  } catch (const std::exception& e) {
    throw std::runtime_error("--data is needed: cannot read the run record " + path + ": " +
                             e.what());
  }
  return o.data;
}

}  // namespace

nlohmann::json run_eval(const EvalOptions& given) {
  EvalOptions o = given;
  auto ctx = model_context(o.device, o.threads);
  sparse_model_config cfg;
  // The checkpoint first: a missing or unreadable one is named as such by the loader.
  ModelPtr model = load_model(ctx.get(), o.checkpoint, o.device, &cfg);
  if (o.data.spec.empty()) {
    o.data = trained_data(o.checkpoint);
    // The record keeps --data as train was given it: a relative path is relative to the folder
    // train ran in.
    const std::string path = parse_data_spec(o.data.spec).path;
    if (!path.empty() && path[0] != '/' && !path_exists(path))
      throw std::runtime_error("the data " + o.checkpoint + " was trained on, --data " +
                               o.data.spec + " (from its run record), is a path relative to " +
                               "the folder train ran in and is not found from this one: run " +
                               "eval from that folder, or give --data KIND:PATH");
  }
  if (o.sliding_stride > 0 || o.min_context >= 0) return run_sliding_eval(o, model.get(), cfg);
  if (o.offset > 0 || o.bytes > 0)
    throw std::runtime_error("--offset and --bytes apply to --sliding / --min-context");
  auto ds = open_split(o.data, parse_split(o.split), cfg.seq_len, cfg.block_size, "--split",
                       "a model trained with --seq-len");
  if (dataset_seq_len(ds.get()) != cfg.seq_len)
    throw std::runtime_error(
        "--data " + o.data.spec + ": its sequences have " +
        std::to_string(dataset_seq_len(ds.get())) + " tokens, but the model in " + o.checkpoint +
        " reads seq_len " + std::to_string(cfg.seq_len) +
        ": evaluate it on data of the kind it was trained on (without --data, eval uses the data "
        "in its run record)");
  int64_t count = 0;
  const double bpd = evaluate(model.get(), ds.get(), o.sequences, o.batch, &count);
  return {{"checkpoint", o.checkpoint}, {"data", o.data.spec},    {"split", o.split},
          {"sequences", count},         {"seq_len", cfg.seq_len}, {"bits_per_dim", bpd},
          {"dtype", o.device.dtype}};
}

nlohmann::json run_sample(const SampleOptions& o) {
  check_output_path(o.out, "--out");
  auto ctx = model_context(o.device, o.threads);
  sparse_model_config cfg;
  ModelPtr model = load_model(ctx.get(), o.checkpoint, o.device, &cfg);
  const int64_t length = o.length > 0 ? o.length : cfg.seq_len;
  // Checked before any allocation or sampling: the model generates at most seq_len tokens.
  if (length > cfg.seq_len)
    throw std::runtime_error(
        "--length " + std::to_string(length) +
        ": the model generates at most its seq_len = " + std::to_string(cfg.seq_len) + " tokens");
  // The file type follows the extension: .png an image (the model's position tables give rows,
  // columns and channels), .wav 8-bit mu-law decoded to 16-bit PCM at 12 kHz, else raw bytes.
  auto ends_with = [&](const char* ext) {
    const std::string e(ext);
    return o.out.size() >= e.size() && o.out.compare(o.out.size() - e.size(), e.size(), e) == 0;
  };
  int rows = 0, cols = 0, channels = 1;
  if (ends_with(".png")) {
    if (cfg.num_position_dims == 3) {
      rows = static_cast<int>(cfg.position_shape[0]);
      cols = static_cast<int>(cfg.position_shape[1]);
      channels = static_cast<int>(cfg.position_shape[2]);
    } else if (cfg.num_position_dims == 2) {
      rows = static_cast<int>(cfg.position_shape[0]);
      cols = static_cast<int>(cfg.position_shape[1]);
    }
    const int64_t image = static_cast<int64_t>(rows) * cols * channels;
    if (rows <= 0 || image != length)
      throw std::runtime_error(
          "--out *.png needs --length equal to the model's image size (rows x columns x "
          "channels of its position tables" +
          (rows > 0 ? " = " + std::to_string(rows) + " x " + std::to_string(cols) + " x " +
                          std::to_string(channels) + " = " + std::to_string(image)
                    : std::string(": the model has no image shape")) +
          "), given --length " + std::to_string(length));
  }
  sparse_sample_params params;
  sparse_sample_params_default(&params);
  params.temperature = o.temperature;
  params.seed = o.seed;
  std::vector<uint8_t> out(static_cast<size_t>(length));
  const auto t0 = std::chrono::steady_clock::now();
  check(sparse_model_sample(model.get(), &params, nullptr, 0, out.data(), length), "sample");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string format = "raw bytes";
  std::vector<uint8_t> file(out.begin(), out.end());
  if (ends_with(".png")) {
    // Nearest-neighbour enlargement: each token becomes a scale x scale square (by default
    // images narrower than 256 pixels are enlarged to at least that, at most 16 times).
    const int scale =
        o.scale > 0 ? o.scale : std::clamp((256 + cols - 1) / std::max(cols, 1), 1, 16);
    std::vector<uint8_t> big(static_cast<size_t>(rows) * scale * cols * scale * channels);
    for (int y = 0; y < rows * scale; ++y)
      for (int x = 0; x < cols * scale; ++x)
        for (int c = 0; c < channels; ++c)
          big[(static_cast<size_t>(y) * cols * scale + x) * channels + c] =
              out[(static_cast<size_t>(y / scale) * cols + x / scale) * channels + c];
    file = png_image(big, cols * scale, rows * scale, channels);
    format = "png " + std::to_string(cols) + "x" + std::to_string(rows) + "x" +
             std::to_string(channels) +
             (scale > 1 ? ", each token " + std::to_string(scale) + "x" + std::to_string(scale) +
                              " pixels"
                        : std::string());
  } else if (ends_with(".wav")) {
    std::vector<float> samples(out.size());
    check(sparse_mulaw_decode(out.data(), out.size(), samples.data()), "mu-law decode");
    file = wav_mono16(samples, 12000);
    format = "wav, 12 kHz mono 16-bit from 8-bit mu-law";
  }
  write_file_atomically(o.out, std::string(file.begin(), file.end()));
  return {{"checkpoint", o.checkpoint},
          {"out", o.out},
          {"format", format},
          {"tokens", length},
          {"temperature", o.temperature},
          {"seed", o.seed},
          {"dtype", o.device.dtype},
          {"seconds", seconds}};
}

namespace {

std::string fixed(double x, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, x);
  return text;
}

}  // namespace

std::string eval_summary_line(const nlohmann::json& r) {
  const auto str = [&](const char* key) { return r.at(key).get<std::string>(); };
  const auto num = [&](const char* key) { return std::to_string(r.at(key).get<long long>()); };
  std::string text;
  if (r.contains("protocol") && r["protocol"] == "sliding")
    text = fixed(r.at("bits_per_byte").get<double>(), 4) + " bits/byte on the " + str("split") +
           " split of " + str("data") + ": " + num("bytes") + " bytes from byte " + num("offset") +
           ", " + num("windows") + " windows of " + num("seq_len") + " with stride " +
           num("stride") + " (every byte after the first window has at least " +
           num("min_context") + " bytes of context), in " +
           fixed(r.at("seconds").get<double>(), 1) + " s";
  else
    text = fixed(r.at("bits_per_dim").get<double>(), 4) + " bits/dim on the " + str("split") +
           " split of " + str("data") + " (" + num("sequences") + " sequences of " +
           num("seq_len") + ")";
  return text + "; checkpoint " + str("checkpoint") + " (--json for all figures)";
}

std::string sample_summary_line(const nlohmann::json& r) {
  char settings[128];
  std::snprintf(settings, sizeof settings, "temperature %g, seed %llu",
                r.at("temperature").get<double>(), r.at("seed").get<unsigned long long>());
  return "wrote " + r.at("out").get<std::string>() + ": " + r.at("format").get<std::string>() +
         ", " + std::to_string(r.at("tokens").get<long long>()) + " tokens (" + settings + ") in " +
         fixed(r.at("seconds").get<double>(), 1) + " s, from checkpoint " +
         r.at("checkpoint").get<std::string>() + " (--json for all figures)";
}

}  // namespace repro
