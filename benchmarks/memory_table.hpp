// The paper's attention-memory table (Child et al. 2019, figure with 64 layers, 4 heads, fp32
// attention matrices), recomputed from its definition, plus the same quantities for block-sparse
// attention with the paper's patterns (from the layouts).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace repro {

struct MemoryRow {
  std::string data;  // "1024 text tokens", ...
  int64_t n = 0;
  double paper_stored_bytes = 0;  // figures printed in the paper (decimal units)
  double paper_recomputed_bytes = 0;
  std::string paper_stored, paper_recomputed;  // as printed, e.g. "1.0 GB"
  std::string pattern;                         // the paper's pattern for this data
  int64_t stride = 0;
  int64_t summary = 0;  // c for fixed
};

constexpr int kLayers = 64;
constexpr int kHeads = 4;
constexpr int kBytesPerElement = 4;

std::vector<MemoryRow> paper_memory_rows();

// n^2 x heads x 4 bytes: dense attention matrices of one layer.
double dense_attention_bytes_one_layer(int64_t n);

// Whether `computed` bytes shown at the paper's precision equal the paper's printed figure
// (the paper rounds some entries and truncates others, so both are accepted).
bool matches_paper_figure(double computed, double paper, int decimals);

// Decimal formatting with units, three significant digits: 1.07e9 -> "1.07 GB".
std::string format_bytes(double bytes);

nlohmann::json memory_table_json(bool sparse_columns, int block);
// Adds "measured": the peak memory one fused forward+backward of the row's pattern (4 heads,
// head_dim 64, fp32, CPU) added in a fresh `sparse-repro attention-memory` process.
void add_measured_memory(nlohmann::json& table, int block);
std::string memory_table_markdown(const nlohmann::json& table);

}  // namespace repro
