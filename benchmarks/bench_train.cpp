#include "bench_train.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "option_checks.hpp"
#include "provenance.hpp"
#include "sparse/sparse.h"

namespace repro {
void add_train_bench_options(CLI::App& app, TrainBenchOptions& o) {
  app.add_option("--preset", o.preset, "model preset (e.g. cifar10-small, enwik8-small)")
      ->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "override n (0 = preset)")->check(integer_in(1));
  app.add_option("--layers", o.layers, "override layers (0 = preset)")
      ->check(integer_in(1, kIntMax));
  app.add_option("--width", o.width, "override d (0 = preset)")->check(integer_in(1, kIntMax));
  app.add_option("--heads", o.heads, "override heads (0 = preset)")->check(integer_in(1, kIntMax));
  app.add_option("--batch", o.batch)->check(integer_in(1, kIntMax))->capture_default_str();
  app.add_option("--steps", o.steps, "timed steps")
      ->check(integer_in(1, kIntMax))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed steps first")
      ->check(integer_in(0, kIntMax))
      ->capture_default_str();
  app.add_option("--recompute", o.recompute, "1/0 (default: the preset's)")
      ->check(integer_in(0, 1));
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->check(integer_in(0, kIntMax));
  app.add_flag("--json", o.json, "print one JSON object");
  add_device_options(app, o.device);
}

int run_bench_train(const TrainBenchOptions& o) {
  // Before any work: what other processes put on the machine, which slows the timed steps.
  const double load = load_average_1min();
  sparse_model_config cfg;
  check(sparse_model_config_preset(o.preset.c_str(), &cfg), "--preset");
  if (o.seq_len > 0) cfg.seq_len = o.seq_len;
  // bench-train has no --stride: name the option that can fix it, not the library's field.
  if (o.seq_len > 0 && cfg.stride > cfg.seq_len)
    throw std::runtime_error("--seq-len " + std::to_string(o.seq_len) + " is shorter than preset " +
                             o.preset + "'s attention stride " + std::to_string(cfg.stride) +
                             ": give --seq-len " + std::to_string(cfg.stride) + " or more");
  // ... nor a longer sequence than the preset's grid of learned positions.
  int64_t positions = 1;
  std::string grid;
  for (int32_t i = 0; i < cfg.num_position_dims; ++i) {
    positions *= cfg.position_shape[i];
    grid += (i ? " x " : "") + std::to_string(cfg.position_shape[i]);
  }
  if (o.seq_len > 0 && cfg.num_position_dims > 0 && o.seq_len > positions)
    throw std::runtime_error("--seq-len " + std::to_string(o.seq_len) + " is longer than preset " +
                             o.preset + "'s grid of positions " + grid + " = " +
                             std::to_string(positions) + ": give --seq-len " +
                             std::to_string(positions) + " or less");
  if (o.layers > 0) cfg.num_layers = o.layers;
  if (o.width > 0) cfg.d_model = o.width;
  if (o.heads > 0) cfg.num_heads = o.heads;
  if (o.recompute >= 0) cfg.recompute = o.recompute;
  cfg.dropout = 0.0f;  // identical work in every step, as in the peer

  sparse_context* ctx = create_device_context(o.device, o.threads);
  const ContextPtr ctx_guard = own(ctx);
  int32_t threads = 1;
  sparse_context_num_threads(ctx, &threads);
  sparse_train_config train;
  sparse_train_config_default(&train);
  train.dtype = model_dtype(o.device);
  sparse_model* model = nullptr;
  check(sparse_model_create(ctx, &cfg, &train, &model), "model");
  const ModelPtr model_guard = own(model);
  int64_t params = 0;
  sparse_model_parameter_count(model, &params);

  std::mt19937 rng(7);
  check_token_memory(o.batch, cfg.seq_len, "--batch " + std::to_string(o.batch));
  std::vector<uint8_t> tokens(static_cast<size_t>(o.batch * cfg.seq_len));
  for (auto& t : tokens) t = static_cast<uint8_t>(rng() & 0xff);
  sparse_train_stats stats;
  stats.struct_size = sizeof stats;
  for (int s = 0; s < o.warmup; ++s)
    check(sparse_model_train_step(model, tokens.data(), o.batch, &stats), "train step");
  std::vector<double> times;
  int64_t peak = 0;
  for (int s = 0; s < o.steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    check(sparse_model_train_step(model, tokens.data(), o.batch, &stats), "train step");
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    peak = std::max(peak, stats.peak_activation_bytes);
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  nlohmann::json j;
  j["implementation"] = "libsparse";
  j["preset"] = o.preset;
  j["seq_len"] = cfg.seq_len;
  j["layers"] = cfg.num_layers;
  j["width"] = cfg.d_model;
  j["heads"] = cfg.num_heads;
  j["stride"] = cfg.stride;
  j["block"] = cfg.block_size;
  j["batch"] = o.batch;
  j["recompute"] = cfg.recompute;
  j["backend"] = o.device.backend;
  j["dtype"] = o.device.dtype;
  j["threads"] = threads;
  j["parameters"] = params;
  j["seconds_per_step"] = median;
  j["tokens_per_second"] = static_cast<double>(o.batch * cfg.seq_len) / median;
  j["peak_activation_bytes"] = peak;
  j["last_loss"] = stats.loss;
  if (load >= 0) j["load_average_1min"] = load;
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf(
        "%s: n %lld, %d layers x d %d, %d heads, batch %d, %d threads: %.3f s/step, "
        "%.0f tokens/s, peak activations %.1f MB",
        o.preset.c_str(), static_cast<long long>(cfg.seq_len), cfg.num_layers, cfg.d_model,
        cfg.num_heads, o.batch, threads, median, j["tokens_per_second"].get<double>(),
        static_cast<double>(peak) / 1e6);
    if (load >= 0) std::printf(" (1-minute load average %.2f before the steps)", load);
    std::printf("\n");
  }
  return 0;
}

}  // namespace repro
