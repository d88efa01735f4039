#include "bench_attention.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>

// GCC 12 reports -Wmaybe-uninitialized false positives inside Eigen's AVX-512 packet math when it
// is inlined with -march=native (GCC bug 105593; -Wuninitialized under sanitizers), at the point
// of inlining, so they are silenced for this file; every other warning stays an error.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>

#include "cli_common.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "sparse/experimental.h"
#include "sparse/sparse.h"

namespace repro {
namespace {

// Pattern names: dense, local, strided (heads alternate row / column, the paper's multi-head
// combination), strided_merged (every head attends to the union), fixed (heads alternate
// block / summary), or any single sparse_pattern_kind name applied to every head.
std::vector<sparse_pattern> patterns_for(const std::string& name, const BenchOptions& o) {
  std::vector<sparse_pattern> out;
  auto add = [&](sparse_pattern_kind kind, int head) {
    sparse_pattern p;
    check(sparse_pattern_default(&p, kind), "pattern");
    p.head = head;
    p.stride = o.stride;
    p.window = o.stride;
    p.summary = o.summary;
    out.push_back(p);
  };
  if (name == "strided" || name == "fixed") {
    const bool strided = name == "strided";
    for (int h = 0; h < o.heads; ++h)
      add(h % 2 == 0 ? (strided ? SPARSE_PATTERN_STRIDED_ROW : SPARSE_PATTERN_FIXED_BLOCK)
                     : (strided ? SPARSE_PATTERN_STRIDED_COLUMN : SPARSE_PATTERN_FIXED_SUMMARY),
          h);
  } else if (name == "strided_merged") {
    add(SPARSE_PATTERN_STRIDED_ROW, -1);
    add(SPARSE_PATTERN_STRIDED_COLUMN, -1);
  } else {
    sparse_pattern_kind kind;
    if (sparse_pattern_kind_from_name(name.c_str(), &kind) != SPARSE_OK)
      throw std::runtime_error("--pattern " + name + ": " +
                               library_message("sparse_pattern_kind_from_name") +
                               "; or the head combinations strided, strided_merged, fixed");
    add(kind, -1);
  }
  return out;
}

LayoutPtr make_layout(const std::string& name, int64_t n, const BenchOptions& o) {
  const auto patterns = patterns_for(name, o);
  // The library names its fields (stride, summary, seq_len); these are the options that set them.
  for (const sparse_pattern& p : patterns) {
    const bool strided =
        p.kind == SPARSE_PATTERN_STRIDED_ROW || p.kind == SPARSE_PATTERN_STRIDED_COLUMN ||
        p.kind == SPARSE_PATTERN_FIXED_BLOCK || p.kind == SPARSE_PATTERN_FIXED_SUMMARY;
    if (strided && o.stride > n)
      throw std::runtime_error(
          "--pattern " + name + " --n " + std::to_string(n) + ": --stride " +
          std::to_string(o.stride) + " (l) is larger than n; give --stride at most " +
          std::to_string(n) + ", e.g. --stride " +
          std::to_string(std::max<int64_t>(1, std::llround(std::sqrt(static_cast<double>(n))))) +
          " (l about sqrt(n), as in the paper)");
    if (p.kind == SPARSE_PATTERN_FIXED_SUMMARY && o.summary > o.stride)
      throw std::runtime_error("--pattern " + name + ": --summary " + std::to_string(o.summary) +
                               " (c) is larger than --stride " + std::to_string(o.stride) +
                               " (l); give --summary at most " + std::to_string(o.stride));
  }
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = n;
  desc.block_size = o.block;
  desc.num_heads = o.heads;
  desc.patterns = patterns.data();
  desc.num_patterns = static_cast<int32_t>(patterns.size());
  sparse_layout* layout = nullptr;
  check(sparse_layout_create(&desc, &layout), "layout of --pattern " + name + " --n " +
                                                  std::to_string(n) + " --block " +
                                                  std::to_string(o.block));
  return own(layout);
}

// Refuses, before allocating, inputs and outputs larger than the library's memory limit, naming
// the options they come from.
void check_buffer_memory(const BenchOptions& o, int64_t n, bool backward, sparse_dtype dtype) {
  const double elements =
      static_cast<double>(o.batch) * o.heads * static_cast<double>(n) * o.head_dim;
  const double tensors = backward ? 8 : 4;  // q, k, v, out (+ dout, dq, dk, dv)
  const double bytes =
      elements * tensors * sizeof(float) +
      static_cast<double>(o.batch) * o.heads * static_cast<double>(n) * sizeof(float) +
      (dtype == SPARSE_DTYPE_F32 ? 0.0 : elements * tensors * 2);
  const std::string what = "--n " + std::to_string(n) + " with --batch " + std::to_string(o.batch) +
                           " --heads " + std::to_string(o.heads) + " --head-dim " +
                           std::to_string(o.head_dim) + " (" + (backward ? "8" : "4") +
                           " attention tensors)";
  if (sparse_experimental_check_memory(bytes, what.c_str()) != SPARSE_OK)
    throw std::runtime_error(library_message("sparse_experimental_check_memory"));
}

// Rounds fp32 to bf16 (nearest even) or fp16 bits on the host.
uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
uint16_t to_f16(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t u;
  std::memcpy(&u, &h, sizeof u);
  return u;
}

sparse_dtype dtype_from_name(const std::string& name) {
  if (name == "f32") return SPARSE_DTYPE_F32;
  if (name == "bf16") return SPARSE_DTYPE_BF16;
  if (name == "f16") return SPARSE_DTYPE_F16;
  throw std::runtime_error("--dtype must be f32, bf16 or f16 (got " + name + ")");
}

// Inputs and outputs of one configuration, in the memory the context computes in (host for the
// CPU backend, device memory for CUDA), in `dtype` (lse always fp32).
struct Buffers {
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv;
  std::vector<std::vector<uint16_t>> half;  // 16-bit copies of the 4-D tensors
  sparse_tensor tq, tk, tv, tout, tlse, tdout, tdq, tdk, tdv;
  sparse_context* ctx;
  std::vector<void*> device;
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
  ~Buffers() {
    for (void* p : device) sparse_context_free(ctx, p);
  }
  Buffers(sparse_context* context, int64_t batch, int64_t heads, int64_t n, int64_t d,
          bool backward, sparse_dtype dtype = SPARSE_DTYPE_F32)
      : ctx(context) {
    const size_t size = static_cast<size_t>(batch * heads * n * d);
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    for (auto* v4 : {&q, &k, &v, &out}) v4->resize(size);
    for (auto* v4 : {&q, &k, &v}) std::generate(v4->begin(), v4->end(), [&] { return uni(rng); });
    lse.resize(static_cast<size_t>(batch * heads * n));
    if (backward) {
      for (auto* v4 : {&dout, &dq, &dk, &dv}) v4->resize(size);
      std::generate(dout.begin(), dout.end(), [&] { return uni(rng); });
    }
    const int64_t shape[4] = {batch, heads, n, d};
    auto wrap = [&](sparse_tensor& t, std::vector<float>& data, int nd) {
      check(sparse_tensor_contiguous(&t, data.empty() ? nullptr : data.data(), SPARSE_DTYPE_F32, nd,
                                     shape),
            "tensor");
    };
    wrap(tq, q, 4);
    wrap(tk, k, 4);
    wrap(tv, v, 4);
    wrap(tout, out, 4);
    wrap(tlse, lse, 3);
    wrap(tdout, dout, 4);
    wrap(tdq, dq, 4);
    wrap(tdk, dk, 4);
    wrap(tdv, dv, 4);
    if (dtype != SPARSE_DTYPE_F32) {
      const std::pair<sparse_tensor*, std::vector<float>*> four[] = {
          {&tq, &q},       {&tk, &k},   {&tv, &v},   {&tout, &out},
          {&tdout, &dout}, {&tdq, &dq}, {&tdk, &dk}, {&tdv, &dv}};
      for (const auto& [t, data] : four) {
        if (t->data == nullptr) continue;
        std::vector<uint16_t> bits(data->size());
        for (size_t e = 0; e < bits.size(); ++e)
          bits[e] = dtype == SPARSE_DTYPE_BF16 ? to_bf16((*data)[e]) : to_f16((*data)[e]);
        half.push_back(std::move(bits));
        t->data = half.back().data();
        t->dtype = dtype;
      }
    }
    sparse_memory memory = SPARSE_MEMORY_HOST;
    check(sparse_context_memory(ctx, &memory), "memory");
    if (memory == SPARSE_MEMORY_DEVICE) {
      for (sparse_tensor* t : {&tq, &tk, &tv, &tout, &tlse, &tdout, &tdq, &tdk, &tdv}) {
        if (t->data == nullptr) continue;
        size_t bytes = sparse_dtype_size(t->dtype);
        for (int i = 0; i < t->ndim; ++i) bytes *= static_cast<size_t>(t->shape[i]);
        void* p = nullptr;
        check(sparse_context_alloc(ctx, bytes, &p), "device allocation");
        device.push_back(p);
        check(sparse_context_copy(ctx, p, SPARSE_MEMORY_DEVICE, t->data, SPARSE_MEMORY_HOST, bytes),
              "copy to device");
        t->data = p;
        t->memory = SPARSE_MEMORY_DEVICE;
      }
    }
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median time of `reps` runs of one forward (+ backward) pass.
// On the GPU a warm-up run first keeps the layout upload, workspace allocation and module
// loading out of the median.
double time_attention(sparse_context* ctx, const sparse_layout* layout, Buffers& b, bool backward,
                      int reps, const sparse_attention_params* params = nullptr,
                      bool warm_up = false) {
  std::vector<double> times;
  for (int r = warm_up ? -1 : 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    check(sparse_attention_forward(ctx, layout, params, &b.tq, &b.tk, &b.tv, &b.tout, &b.tlse),
          "forward");
    if (backward)
      check(sparse_attention_backward(ctx, layout, params, &b.tq, &b.tk, &b.tv, &b.tout, &b.tlse,
                                      &b.tdout, &b.tdq, &b.tdk, &b.tdv),
            "backward");
    check(sparse_context_synchronize(ctx), "synchronize");
    if (r >= 0) times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// The dense causal baseline of the backend's GEMM library (cuBLAS); -1 when the backend cannot run
// it at this size (the reason goes to stderr once).
double time_dense_cublas(sparse_context* ctx, Buffers& b, bool backward, int reps, float scale) {
  std::vector<double> times;
  for (int r = -1; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const sparse_status s = sparse_experimental_dense_attention(
        ctx, scale, backward, &b.tq, &b.tk, &b.tv, &b.tout, &b.tlse, backward ? &b.tdout : nullptr,
        backward ? &b.tdq : nullptr, backward ? &b.tdk : nullptr, backward ? &b.tdv : nullptr);
    if (s == SPARSE_ERR_UNSUPPORTED) {
      std::fprintf(stderr, "cublas-dense baseline skipped at n = %lld: %s\n",
                   static_cast<long long>(b.tq.shape[2]),
                   library_message("sparse_experimental_dense_attention").c_str());
      return -1;
    }
    check(s, "cublas-dense baseline");
    check(sparse_context_synchronize(ctx), "synchronize");
    if (r >= 0) times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Eigen dense GEMM rate (GFLOP/s) on `threads` threads: 2048^3, best of 5 after a warm-up, so
// the denominator of the efficiency is the machine's sustained peak, not a noisy sample.
double gemm_gflops(int threads) {
  const int size = 2048;
  Eigen::setNbThreads(threads);
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(size, size), b = Eigen::MatrixXf::Random(size, size);
  Eigen::MatrixXf c(size, size);
  c.noalias() = a * b;  // warm-up
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    c.noalias() = a * b;
    best = std::min(best, seconds_since(t0));
  }
  if (c(0, 0) == 12345.0f) std::printf(" ");  // keep the product observable
  return 2.0 * size * size * size / best / 1e9;
}

size_t rss_peak_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

void add_bench_options(CLI::App& app, BenchOptions& o) {
  app.add_option("--backend", o.backend, "cpu, cuda or auto")->capture_default_str();
  app.add_option("--pattern", o.patterns,
                 "dense, local, strided, strided_merged, fixed, or a pattern kind name")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--n", o.seq_lens, "sequence lengths (comma-separated)")
      ->check(integer_in(1))
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--heads", o.heads)->check(integer_in(1, kIntMax))->capture_default_str();
  app.add_option("--head-dim", o.head_dim)->check(integer_in(1, kIntMax))->capture_default_str();
  app.add_option("--block", o.block)
      ->check(one_of({"16", "32", "64", "128"}))
      ->capture_default_str();
  app.add_option("--batch", o.batch)->check(integer_in(1, kIntMax))->capture_default_str();
  app.add_option("--stride", o.stride, "l of strided/fixed, window of local")
      ->check(integer_in(1))
      ->capture_default_str();
  app.add_option("--summary", o.summary, "c of fixed")->check(integer_in(1))->capture_default_str();
  app.add_option("--mode", o.mode, "fwd, fwdbwd or both")
      ->check(CLI::IsMember({"fwd", "fwdbwd", "both"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")
      ->check(integer_in(0, kIntMax))
      ->capture_default_str();
  app.add_option("--reps", o.reps, "repetitions (median reported)")
      ->check(integer_in(1, kIntMax))
      ->capture_default_str();
  app.add_option("--dense-max-n", o.dense_max_n, "skip the dense-layout timing above this n")
      ->check(integer_in(0))
      ->capture_default_str();
  app.add_option("--dtype", o.dtype, "element type of q, k, v, out and gradients (16-bit: CUDA)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  app.add_option("--algorithm", o.algorithm, "fused (flash-style) or unfused (2019-style)")
      ->check(CLI::IsMember({"fused", "unfused"}))
      ->capture_default_str();
  app.add_option("--baseline", o.baseline,
                 "dense comparison: layout (our kernels on the dense causal layout) or "
                 "cublas-dense (cuBLAS GEMMs + softmax, CUDA only)")
      ->check(CLI::IsMember({"layout", "cublas-dense"}))
      ->capture_default_str();
  app.add_flag("--json", o.json, "one JSON object per line instead of a table");
  app.add_option("--output", o.output, "also append the JSON lines to this file");
}

int run_attention_memory(const BenchOptions& o) {
  sparse_settings settings;
  sparse_settings_default(&settings);
  check(sparse_backend_from_name(o.backend.c_str(), &settings.backend), "--backend");
  settings.num_threads = o.threads;
  sparse_context* ctx = nullptr;
  check(sparse_context_create(&settings, &ctx), "context");
  const ContextPtr ctx_guard = own(ctx);
  sparse_memory memory = SPARSE_MEMORY_HOST;
  sparse_context_memory(ctx, &memory);
  if (memory != SPARSE_MEMORY_HOST)
    throw std::runtime_error("attention-memory measures host memory (use --backend cpu)");
  const int64_t n = o.seq_lens.at(0);
  const LayoutPtr layout = make_layout(o.patterns.at(0), n, o);
  sparse_layout_stats st;
  st.struct_size = sizeof st;
  check(sparse_layout_get_stats(layout.get(), -1, &st), "stats");
  check_buffer_memory(o, n, true, SPARSE_DTYPE_F32);
  Buffers buffers(ctx, o.batch, o.heads, n, o.head_dim, true);
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.algorithm = o.algorithm == "unfused" ? SPARSE_ATTENTION_UNFUSED : SPARSE_ATTENTION_FUSED;
  size_t workspace = 0;
  check(sparse_attention_workspace_size_params(ctx, layout.get(), &params, o.batch, o.head_dim, 1,
                                               &workspace),
        "workspace");
  const size_t before = rss_peak_bytes();
  time_attention(ctx, layout.get(), buffers, true, 1, &params);
  const size_t after = rss_peak_bytes();
  nlohmann::json j;
  j["algorithm"] = o.algorithm;
  j["pattern"] = o.patterns.at(0);
  j["n"] = n;
  j["heads"] = o.heads;
  j["head_dim"] = o.head_dim;
  j["block"] = o.block;
  j["batch"] = o.batch;
  j["attention_bytes"] = after - before;
  j["workspace_bytes"] = workspace;
  j["layout_bytes"] = st.memory_bytes;
  j["tensor_bytes"] = static_cast<size_t>(o.batch) * o.heads * n *
                      (9u * static_cast<size_t>(o.head_dim) + 1u) * sizeof(float);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

namespace {

// The model's layouts (as the library's model builds them) and the layout of each layer.
struct ModelLayouts {
  std::vector<std::unique_ptr<sparse_layout, void (*)(sparse_layout*)>> layouts;
  std::vector<size_t> layer_layout;
};

// The model configuration of `m`: what decides its layouts (the rest keeps the defaults; the
// position table is one axis of seq_len).
sparse_model_config model_config(const ModelAttention& m) {
  sparse_model_config c;
  check(sparse_model_config_default(&c), "config");
  if (m.attention == "dense")
    c.attention = SPARSE_MODEL_ATTENTION_DENSE;
  else if (m.attention == "strided")
    c.attention = SPARSE_MODEL_ATTENTION_STRIDED;
  else if (m.attention == "fixed")
    c.attention = SPARSE_MODEL_ATTENTION_FIXED;
  else
    throw std::runtime_error("attention " + m.attention + ": expected dense, strided or fixed");
  if (m.row_attention == "strided")
    c.row_attention = SPARSE_ROW_STRIDED;
  else if (m.row_attention == "local")
    c.row_attention = SPARSE_ROW_LOCAL;
  else
    throw std::runtime_error("row attention " + m.row_attention + ": expected strided or local");
  if (m.head_mode == "interleaved")
    c.head_mode = SPARSE_HEADS_INTERLEAVED;
  else if (m.head_mode == "merged")
    c.head_mode = SPARSE_HEADS_MERGED;
  else if (m.head_mode == "multihead")
    c.head_mode = SPARSE_HEADS_MULTIHEAD;
  else
    throw std::runtime_error("head mode " + m.head_mode +
                             ": expected interleaved, merged or multihead");
  if (m.layer_cycle.size() >= sizeof c.layer_cycle)
    throw std::runtime_error("layer cycle " + m.layer_cycle + " is too long");
  std::snprintf(c.layer_cycle, sizeof c.layer_cycle, "%s", m.layer_cycle.c_str());
  c.num_layers = m.layers;
  c.seq_len = m.seq_len;
  c.stride = m.stride;
  c.summary = m.summary;
  c.summary_variants = m.summary_variants;
  c.num_heads = m.heads;
  c.d_model = static_cast<int64_t>(m.heads) * m.head_dim;
  c.block_size = m.block;
  c.num_position_dims = 1;
  c.position_shape[0] = m.seq_len;
  return c;
}

ModelLayouts model_layouts(const ModelAttention& m) {
  const sparse_model_config config = model_config(m);
  int32_t count = 0;
  check(sparse_experimental_model_layouts(&config, nullptr, 0, &count, nullptr),
        ("layouts of " + m.attention + " attention").c_str());
  std::vector<sparse_layout*> raw(static_cast<size_t>(count), nullptr);
  std::vector<int32_t> layer_layout(static_cast<size_t>(m.layers), 0);
  check(sparse_experimental_model_layouts(&config, raw.data(), count, &count, layer_layout.data()),
        ("layouts of " + m.attention + " attention").c_str());
  ModelLayouts out;
  for (sparse_layout* layout : raw) out.layouts.emplace_back(layout, sparse_layout_destroy);
  out.layer_layout.assign(layer_layout.begin(), layer_layout.end());
  return out;
}

}  // namespace

std::vector<ModelAttentionCost> measure_model_attention(const std::vector<ModelAttention>& models,
                                                        int threads, int rounds) {
  sparse_settings settings;
  sparse_settings_default(&settings);
  settings.backend = SPARSE_BACKEND_CPU;
  settings.num_threads = threads;
  sparse_context* ctx = nullptr;
  check(sparse_context_create(&settings, &ctx), "context");
  std::unique_ptr<sparse_context, void (*)(sparse_context*)> ctx_guard(ctx, sparse_context_destroy);
  sparse_attention_params unfused;
  sparse_attention_params_default(&unfused);
  unfused.algorithm = SPARSE_ATTENTION_UNFUSED;

  std::vector<ModelLayouts> layouts;
  std::vector<std::unique_ptr<Buffers>> buffers;
  std::vector<ModelAttentionCost> costs(models.size());
  for (size_t i = 0; i < models.size(); ++i) {
    const ModelAttention& m = models[i];
    layouts.push_back(model_layouts(m));
    buffers.push_back(
        std::make_unique<Buffers>(ctx, m.batch, m.heads, m.seq_len, m.head_dim, true));
    ModelAttentionCost& c = costs[i];
    std::vector<sparse_layout_stats> stats;
    for (const auto& layout : layouts.back().layouts) {
      sparse_layout_stats st;
      st.struct_size = sizeof st;
      check(sparse_layout_get_stats(layout.get(), -1, &st), "stats");
      stats.push_back(st);
      c.layout_bytes += st.memory_bytes;
      for (int backward = 0; backward < 2; ++backward) {
        size_t bytes = 0;
        check(sparse_attention_workspace_size(ctx, layout.get(), m.batch, m.head_dim, backward,
                                              &bytes),
              "workspace");
        c.workspace_bytes = std::max(c.workspace_bytes, bytes);
      }
      size_t stored = 0;
      check(sparse_attention_workspace_size_params(ctx, layout.get(), &unfused, m.batch, m.head_dim,
                                                   1, &stored),
            "workspace");
      c.stored_scores_bytes = std::max(c.stored_scores_bytes, stored);
    }
    for (size_t l : layouts.back().layer_layout) {
      c.computed_blocks += stats[l].nnz_blocks;
      c.dense_blocks += stats[l].dense_blocks;
    }
  }
  std::vector<std::vector<double>> times(models.size());
  for (int r = -1; r < rounds; ++r) {  // round -1: warm-up
    for (size_t i = 0; i < models.size(); ++i) {
      double step = 0;
      for (size_t l : layouts[i].layer_layout)
        step += time_attention(ctx, layouts[i].layouts[l].get(), *buffers[i], true, 1);
      if (r >= 0) times[i].push_back(step);
    }
  }
  for (size_t i = 0; i < models.size(); ++i) {
    std::sort(times[i].begin(), times[i].end());
    costs[i].seconds_per_step = times[i].empty() ? 0.0 : times[i][times[i].size() / 2];
  }
  return costs;
}

int run_bench_attention(const BenchOptions& o) {
  check_output_path(o.output, "--output");
  sparse_settings settings;
  sparse_settings_default(&settings);
  check(sparse_backend_from_name(o.backend.c_str(), &settings.backend), "--backend");
  settings.num_threads = o.threads;
  sparse_context* ctx = nullptr;
  check(sparse_context_create(&settings, &ctx), "context");
  const ContextPtr ctx_guard = own(ctx);
  sparse_backend backend;
  sparse_context_backend(ctx, &backend);
  int32_t threads = 1;
  sparse_context_num_threads(ctx, &threads);
  // The CPU efficiency denominator: Eigen's dense GEMM rate on the same threads.
  const bool on_gpu = backend == SPARSE_BACKEND_CUDA;
  const sparse_dtype dtype = dtype_from_name(o.dtype);
  if (o.baseline == "cublas-dense" && !on_gpu)
    throw std::runtime_error("--baseline cublas-dense needs --backend cuda");
  sparse_attention_params params;
  sparse_attention_params_default(&params);
  params.algorithm = o.algorithm == "unfused" ? SPARSE_ATTENTION_UNFUSED : SPARSE_ATTENTION_FUSED;
  // Refuse sizes that cannot fit before anything is measured (the GEMM rate takes seconds, and
  // minutes under a sanitizer): the tensors, then the layouts (whose memory check comes before
  // any block is listed).
  for (int64_t n : o.seq_lens) check_buffer_memory(o, n, o.mode != "fwd", dtype);
  for (int64_t n : o.seq_lens)
    for (const std::string& name : o.patterns) make_layout(name, n, o);
  const double gemm = on_gpu ? 0.0 : gemm_gflops(threads);

  std::vector<std::string> modes;
  if (o.mode == "both")
    modes = {"fwd", "fwdbwd"};
  else
    modes = {o.mode};
  std::map<std::pair<int64_t, std::string>, double> dense_cache;
  std::string lines;
  if (!o.json)
    std::printf("%-15s %7s %-6s %7s %8s %10s %10s %8s %9s %9s %6s %10s\n", "pattern", "n", "mode",
                "density", "eff.dens", "sparse_s", "dense_s", "ratio", "blk_ratio", "GFLOP/s",
                "eff", "peak_MB");
  for (int64_t n : o.seq_lens) {
    for (const std::string& mode : modes) {
      const bool backward = mode == "fwdbwd";
      // Refuse what cannot fit before allocating anything: the tensors, then the layouts.
      check_buffer_memory(o, n, backward, dtype);
      for (const std::string& name : o.patterns) make_layout(name, n, o);
      Buffers buffers(ctx, o.batch, o.heads, n, o.head_dim, backward, dtype);
      for (const std::string& name : o.patterns) {
        const LayoutPtr layout = make_layout(name, n, o);
        sparse_layout_stats st;
        st.struct_size = sizeof st;
        check(sparse_layout_get_stats(layout.get(), -1, &st), "stats");
        size_t workspace = 0;
        check(sparse_attention_workspace_size_params(ctx, layout.get(), &params, o.batch,
                                                     o.head_dim, backward, &workspace),
              "workspace");
        const double t_sparse =
            time_attention(ctx, layout.get(), buffers, backward, o.reps, &params, on_gpu);

        // The same kernels on the dense causal layout.
        double t_dense = -1;
        int64_t dense_blocks = 0;
        auto key = std::make_pair(n, mode);
        {
          const LayoutPtr dense = make_layout("dense", n, o);
          sparse_layout_stats ds;
          ds.struct_size = sizeof ds;
          sparse_layout_get_stats(dense.get(), -1, &ds);
          dense_blocks = ds.nnz_blocks;
          if (n <= o.dense_max_n) {
            const int dense_reps = on_gpu ? o.reps : std::min(o.reps, n > 16384 ? 1 : o.reps);
            if (!dense_cache.count(key)) {
              if (o.baseline == "cublas-dense")
                dense_cache[key] =
                    time_dense_cublas(ctx, buffers, backward, dense_reps,
                                      1.0f / std::sqrt(static_cast<float>(o.head_dim)));
              else
                dense_cache[key] = name == "dense"
                                       ? t_sparse
                                       : time_attention(ctx, dense.get(), buffers, backward,
                                                        dense_reps, &params, on_gpu);
            }
            t_dense = dense_cache[key];
          }
        }
        const double flops_per_block =
            (backward ? 14.0 : 4.0) * o.block * o.block * static_cast<double>(o.head_dim);
        const double computed_flops =
            flops_per_block * static_cast<double>(st.nnz_blocks) * o.batch;
        const double gflops = computed_flops / t_sparse / 1e9;
        const size_t tensor_bytes =
            static_cast<size_t>(o.batch) * o.heads * n *
            ((backward ? 9u : 4u) * static_cast<size_t>(o.head_dim) * sparse_dtype_size(dtype) +
             sizeof(float));
        const size_t peak = tensor_bytes + workspace + st.memory_bytes;

        nlohmann::json j;
        j["pattern"] = name;
        j["backend"] = sparse_backend_name(backend);
        j["mode"] = mode;
        j["dtype"] = o.dtype;
        j["algorithm"] = o.algorithm;
        j["dense_baseline"] = o.baseline == "cublas-dense" ? "cublas-dense" : "layout-dense";
        j["n"] = n;
        j["block"] = o.block;
        j["head_dim"] = o.head_dim;
        j["heads"] = o.heads;
        j["batch"] = o.batch;
        j["stride"] = o.stride;
        if (name == "fixed" || name == "fixed_summary") j["summary"] = o.summary;
        j["threads"] = threads;
        j["density"] = st.density;
        j["effective_density"] = st.effective_density;
        j["nnz_blocks"] = st.nnz_blocks;
        j["dense_blocks"] = dense_blocks;
        j["time_sparse_s"] = t_sparse;
        j["time_dense_s"] = t_dense >= 0 ? nlohmann::json(t_dense) : nlohmann::json(nullptr);
        j["time_ratio"] =
            t_dense > 0 ? nlohmann::json(t_sparse / t_dense) : nlohmann::json(nullptr);
        j["block_ratio"] = static_cast<double>(st.nnz_blocks) / static_cast<double>(dense_blocks);
        j["gflops_computed"] = gflops;
        j["gflops_useful"] = (backward ? 14.0 : 4.0) * static_cast<double>(st.useful_elements) *
                             o.head_dim * o.batch / t_sparse / 1e9;
        if (on_gpu) {
          j["tflops_computed"] = gflops / 1e3;
          j["gemm_gflops"] = nullptr;
          j["efficiency"] = nullptr;
        } else {
          j["gemm_gflops"] = gemm;
          j["efficiency"] = gflops / gemm;
        }
        j["peak_bytes"] = peak;
        j["workspace_bytes"] = workspace;
        j["layout_bytes"] = st.memory_bytes;
        j["rss_peak_bytes"] = rss_peak_bytes();
        const std::string line = j.dump();
        lines += line + "\n";
        if (o.json) {
          std::printf("%s\n", line.c_str());
        } else {
          std::printf("%-15s %7lld %-6s %6.2f%% %7.2f%% %10.4f %10s %8s %9.4f %9.1f %6.2f %10.1f\n",
                      name.c_str(), static_cast<long long>(n), mode.c_str(), 100 * st.density,
                      100 * st.effective_density, t_sparse,
                      t_dense >= 0 ? std::to_string(t_dense).substr(0, 8).c_str() : "-",
                      t_dense > 0 ? std::to_string(t_sparse / t_dense).substr(0, 6).c_str() : "-",
                      j["block_ratio"].get<double>(), gflops, on_gpu ? 0.0 : gflops / gemm,
                      peak / 1e6);
        }
        std::fflush(stdout);
      }
    }
  }
  if (!o.json && !on_gpu)
    std::printf("dense GEMM (Eigen, %d threads): %.1f GFLOP/s\n", threads, gemm);
  if (!o.output.empty()) {
    LineLog out(o.output, "--output", true);
    if (!lines.empty()) out.write_line(lines.substr(0, lines.size() - 1));  // drops the last \n
  }
  return 0;
}

}  // namespace repro
