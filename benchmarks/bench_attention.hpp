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

}  // namespace repro
