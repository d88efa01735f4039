// sparse-repro bench-attention: times block-sparse attention, the same kernels on the dense causal
// layout and an Eigen dense GEMM in one run, and reports their ratios (measured side by side, so
// that the figures compare kernels, not machines or moments).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace repro {

struct BenchOptions {
  std::string backend = "cpu";
  std::vector<std::string> patterns{"strided"};
  std::vector<int64_t> seq_lens{4096};
  int heads = 2;
  int head_dim = 64;
  int block = 64;
  int batch = 1;
  int64_t stride = 128;      // l (strided, fixed); window of local = stride
  int64_t summary = 32;      // c (fixed)
  std::string mode = "fwd";  // fwd | fwdbwd | both
  int threads = 0;
  int reps = 3;
  int64_t dense_max_n = 65536;      // skip the dense-layout timing above this n
  std::string dtype = "f32";        // f32 | bf16 | f16 (16-bit: CUDA only)
  std::string algorithm = "fused";  // fused | unfused
  std::string baseline = "layout";  // dense comparison: layout (our kernels on the dense
                                    // causal layout) | cublas-dense (cuBLAS GEMMs + softmax)
  bool json = false;
  std::string output;  // append JSON lines to this file
};

void add_bench_options(CLI::App& app, BenchOptions& options);

// Runs one forward + backward pass of options.patterns[0] at options.seq_lens[0] in this process
// and prints one JSON object with the peak resident memory it added beyond its inputs and
// outputs (`attention_bytes`, measured with getrusage), the backend's workspace figure and the
// layout's size. Meant to run in a fresh process (sparse-repro attention-memory).
int run_attention_memory(const BenchOptions& options);
int run_bench_attention(const BenchOptions& options);

// The attention of one model (a run of `sparse-repro train`), as its layers compute it: one layout
// per layer, built from the model's attention type, head mode and layer cycle the way the library
// builds the model's layouts.
struct ModelAttention {
  std::string attention = "dense";        // dense | strided | fixed
  std::string row_attention = "strided";  // strided | local (the row head of strided)
  std::string head_mode = "interleaved";  // interleaved | merged | multihead
  std::string layer_cycle = "12";         // interleaved: '1' = row/block, '2' = column/summary
  int64_t layers = 1, seq_len = 1, stride = 1, summary = 1;
  int heads = 1, head_dim = 1, block = 16, batch = 1, summary_variants = 1;
};

// What the attention alone costs in one training step of such a model on the CPU (fp32, the
// fused algorithm the model runs): forward + backward of every layer, measured with the public
// attention API on random inputs of the model's shape.
struct ModelAttentionCost {
  double seconds_per_step = 0;     // median over rounds of the sum over layers
  size_t workspace_bytes = 0;      // the largest scratch memory of one call (forward or backward)
  size_t layout_bytes = 0;         // host memory of the model's distinct layouts
  size_t stored_scores_bytes = 0;  // workspace of the unfused (2019-style) backward pass of the
                                   // largest layout: the scores, P and dS of every computed block
  int64_t computed_blocks = 0;     // computed blocks of one step: every layer, every head
  int64_t dense_blocks = 0;        // the same for the dense causal layout
};

// Measures every model in `models` side by side: `rounds` rounds (after one warm-up), each timing
// every model once in turn, so that all see the same moments of the machine.
std::vector<ModelAttentionCost> measure_model_attention(const std::vector<ModelAttention>& models,
                                                        int threads, int rounds);

}  // namespace repro
