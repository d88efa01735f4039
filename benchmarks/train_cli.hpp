// sparse-repro train / eval / sample: the model on a dataset through the C ABI.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "device_option.hpp"
#include "sparse/sparse.h"

namespace repro {

// Thrown by train when SIGTERM or SIGINT stopped the run at the end of a step (after saving the
// checkpoint, when there is one): sparse-repro exits with 128 + signal, as a process the signal
// ended would.
struct TrainStopped : std::runtime_error {
  TrainStopped(int signal, const std::string& message)
      : std::runtime_error(message), signal(signal) {}
  int signal;
};

struct DataSpec {
  std::string spec = "synthetic_image";  // kind[:path]
  int64_t seq_len = 0;                   // 0 = the model's / the kind's default
  int32_t vocab = 0;                     // synthetic: 0 = the kind's default
  int64_t num_sequences = 0;             // synthetic: 0 = default
  int32_t image_width = 0, image_height = 0;
  double noise_scale = 0;  // synthetic image: 0 = default
  int64_t copy_offset = 0;
  uint64_t seed = 0x5eed;
};

struct TrainOptions {
  DeviceOptions device;  // --backend, --dtype
  std::string preset = "cifar10-small";
  std::string attention;  // dense | strided | fixed (empty: the preset's)
  std::string head_mode;  // interleaved | merged | multihead
  std::string layer_cycle;
  std::string row_attention;  // strided (the paper's) | local (OpenAI's); empty: the preset's
  int summary_variants = 0;   // fixed: OpenAI's num_verts (0 = the preset's)
  int64_t seq_len = 0;
  int layers = 0, width = 0, heads = 0, block = 0;
  int64_t stride = 0, summary = 0;
  float dropout = -1.0f;
  float output_init_std = -1.0f;  // < 0: the preset's (0, OpenAI's zero initialisation)
  int recompute = -1;
  DataSpec data;
  int64_t steps = 200;
  int batch = 4;
  float lr = 1e-3f;
  int64_t warmup = 20;
  std::string optimizer = "adam";  // adam (L2 penalty, OpenAI's) | adamw (decoupled decay)
  float weight_decay = -1.0f;      // < 0: the library's default (0.01)
  int64_t eval_every = 0;
  int64_t eval_sequences = 64;
  std::string eval_split = "test";
  std::string checkpoint;        // save here at the end (and at each evaluation)
  int64_t checkpoint_every = 0;  // also save every k steps (0 = at evaluations and the end)
  bool resume = false;           // continue from --checkpoint
  int64_t extend_to = 0;         // with resume: continue the saved run to this many steps in all
  int threads = 0;
  int micro_batch = 0;               // sequences per micro-batch (0 = the whole --batch)
  double rank_timeout = 600;         // data parallel: seconds a reduction waits for the other ranks
  int world_size = 1;                // data parallel: ranks (set from the launcher, not an option)
  int64_t saved_step = -1;           // resume: the step the run record was written at (-1: unknown)
  int64_t saved_previous_step = -1;  // resume: the step of the checkpoint it replaced (-1: none)
  uint64_t seed = 1;
  std::string log;          // JSON lines: one per step (loss curve)
  std::string summary_out;  // JSON summary of the run
  bool quiet = false;
  bool json = false;  // print the JSON summary instead of the one-line summary
  // data parallel: on | off (sum each gradient range during the backward pass, or after it)
  std::string reduce_overlap = "on";
  // Long names of the options given on the command line (resume checks them against the run).
  std::vector<std::string> given;
};

struct EvalOptions {
  DeviceOptions device;  // --backend, --dtype
  std::string checkpoint;
  DataSpec data;
  std::string split = "test";
  int64_t sequences = 64;
  int batch = 4;
  int threads = 0;
  // Sliding-window evaluation of text (see sliding_eval.hpp): stride, or the minimum context
  // (stride = seq_len - min_context); over `bytes` bytes (0 = to the end) from `offset` of the
  // split.
  int64_t sliding_stride = 0;
  int64_t min_context = -1;
  int64_t offset = 0;
  int64_t bytes = 0;
  bool json = false;  // print the JSON result instead of the one-line summary
};

struct SampleOptions {
  DeviceOptions device;  // --backend, --dtype
  std::string checkpoint;
  std::string out;
  int64_t length = 0;  // 0 = the model's seq_len
  float temperature = 1.0f;
  uint64_t seed = 1;
  int threads = 0;
  int scale = 0;      // PNG: pixels per token side (0: enlarge images narrower than 256 pixels)
  bool json = false;  // print the JSON result instead of the one-line summary
};

// Opens `spec` ("kind[:path]" plus the synthetic options) at `split`; text and audio are cut into
// sequences of spec.seq_len, else `seq_len` tokens (0 = the kind's default).
DatasetPtr open_dataset(const DataSpec& spec, sparse_split split, int64_t seq_len);
// open_dataset, and when the split cannot be opened in a way an option fixes, the error says
// which: a text or audio split shorter than one sequence names `seq_len_option` with a length
// that fits (a power of two, a multiple of `block`); a single CIFAR-10 record file's missing
// held-out split names `split_option` train.
DatasetPtr open_split(const DataSpec& spec, sparse_split split, int64_t seq_len, int block,
                      const std::string& split_option, const std::string& seq_len_option);

// --data and the synthetic source options.
void add_data_options(CLI::App& app, DataSpec& d);
// Whether `path` names an existing file or folder.
bool path_exists(const std::string& path);
// The real data samples folder: `given` when set, else $SPARSE_DATA_DIR, else the first of
// ../shared/data beside the source repository, beside the executable's repository, beside the
// current folder that exists (the first when none does).
std::string data_dir_or_default(const std::string& given);

void add_train_options(CLI::App& app, TrainOptions& o);
// Records in o.given which options of `app` (the parsed train subcommand) were given.
void note_given_options(const CLI::App& app, TrainOptions& o);
void add_eval_options(CLI::App& app, EvalOptions& o);
void add_sample_options(CLI::App& app, SampleOptions& o);

// Each returns a JSON summary (also printed) or throws std::runtime_error.
// run_train: under an MPI launcher rank 0 returns the summary and the other ranks null; rank 0
// calls `on_summary` with it before it leaves the MPI job (MPI_Finalize waits for every rank, with
// no timeout), so what it prints is out even if another rank hangs there.
nlohmann::json run_train(const TrainOptions& o,
                         const std::function<void(const nlohmann::json&)>& on_summary = {});
// One line for a person: held-out bits per dim, steps, time and where the checkpoint went.
std::string train_summary_line(const nlohmann::json& summary);
nlohmann::json run_eval(const EvalOptions& o);
// One line for a person: bits per dim (per byte, sliding), the split, how much was scored, the
// checkpoint.
std::string eval_summary_line(const nlohmann::json& result);
nlohmann::json run_sample(const SampleOptions& o);
// One line for a person: where the sample went, how many tokens, in which format.
std::string sample_summary_line(const nlohmann::json& result);

}  // namespace repro
