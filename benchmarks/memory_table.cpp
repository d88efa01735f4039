#include "memory_table.hpp"

#include <unistd.h>

#include <climits>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "heartbeat.hpp"
#include "sparse/sparse.h"

namespace repro {

std::vector<MemoryRow> paper_memory_rows() {
  // Patterns: text uses fixed (l = 128, c = 32) as for Enwik8; images and audio strided with
  // l close to sqrt(n) (CIFAR-10: one image row, 96; ImageNet 64: 128; audio: 128 as for the
  // paper's 65k-sample model, Child et al. 2019, section 7.4).
  return {
      {"1024 text tokens", 1024, 1.0e9, 16e6, "1.0 GB", "16 MB", "fixed", 128, 32},
      {"CIFAR-10 image", 3072, 9.6e9, 151e6, "9.6 GB", "151 MB", "strided", 96, 0},
      {"ImageNet 64x64 image", 12288, 154e9, 2.4e9, "154 GB", "2.4 GB", "strided", 128, 0},
      {"24,000 audio samples", 24000, 590e9, 9.2e9, "590 GB", "9.2 GB", "strided", 128, 0},
  };
}

double dense_attention_bytes_one_layer(int64_t n) {
  return static_cast<double>(n) * static_cast<double>(n) * kHeads * kBytesPerElement;
}

bool matches_paper_figure(double computed, double paper, int decimals) {
  // The paper prints `paper` with a unit and `decimals` digits after the point; scale both to
  // that unit and compare rounding and truncation of the computed value.
  double unit = 1;
  while (paper / unit >= 1000) unit *= 1000;
  const double scale = std::pow(10.0, decimals);
  const double printed = std::round(paper / unit * scale);
  const double value = computed / unit * scale;
  return std::round(value) == printed || std::floor(value) == printed;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (bytes >= 1000 && u < 5) {
    bytes /= 1000;
    ++u;
  }
  // Three significant digits.
  const int digits = bytes >= 100 ? 0 : bytes >= 10 ? 1 : 2;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f %s", digits, bytes, units[u]);
  return buf;
}

namespace {

int decimals_of(const std::string& printed) {
  const auto dot = printed.find('.');
  if (dot == std::string::npos) return 0;
  const auto space = printed.find(' ');
  return static_cast<int>(space - dot - 1);
}

// Block-sparse analogue: the computed blocks of the paper's pattern, 4 heads (2 of each head
// type, as in the multi-head combination), fp32, block x block per computed block.
nlohmann::json sparse_columns(const MemoryRow& row, int block) {
  sparse_pattern patterns[2];
  const bool fixed = row.pattern == "fixed";
  sparse_pattern_default(&patterns[0],
                         fixed ? SPARSE_PATTERN_FIXED_BLOCK : SPARSE_PATTERN_STRIDED_ROW);
  sparse_pattern_default(&patterns[1],
                         fixed ? SPARSE_PATTERN_FIXED_SUMMARY : SPARSE_PATTERN_STRIDED_COLUMN);
  for (int k = 0; k < 2; ++k) patterns[k].stride = row.stride;
  patterns[1].summary = row.summary;
  patterns[0].head = 0;
  patterns[1].head = 1;
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = row.n;
  desc.block_size = block;
  desc.num_heads = 2;
  desc.patterns = patterns;
  desc.num_patterns = 2;
  sparse_layout* layout = nullptr;
  nlohmann::json out;
  if (sparse_layout_create(&desc, &layout) != SPARSE_OK) {
    out["error"] = sparse_last_error();
    return out;
  }
  sparse_layout_stats st;
  st.struct_size = sizeof st;
  sparse_layout_get_stats(layout, -1, &st);
  sparse_layout_destroy(layout);
  // Two heads of each type make the paper's four heads.
  const double one_layer = 2.0 * static_cast<double>(st.computed_elements) * kBytesPerElement;
  out["pattern"] = row.pattern;
  out["stride"] = row.stride;
  if (fixed) out["summary"] = row.summary;
  out["block"] = block;
  out["density"] = st.density;
  out["effective_density"] = st.effective_density;
  out["sparse_recomputed_bytes"] = one_layer;
  out["sparse_stored_bytes"] = one_layer * kLayers;
  // The fused kernels keep only the per-row log-sum-exp (fp32) per head.
  out["fused_bytes_one_layer"] = static_cast<double>(row.n) * kHeads * kBytesPerElement;
  return out;
}

}  // namespace

void add_measured_memory(nlohmann::json& table, int block) {
  char exe[PATH_MAX];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) throw std::runtime_error("cannot find the sparse-repro executable");
  exe[len] = '\0';
  const std::vector<MemoryRow> rows = paper_memory_rows();
  for (size_t r = 0; r < rows.size(); ++r) {
    const MemoryRow& row = rows[r];
    // The fused kernels, then the 2019-style unfused computation, which stores the scores of
    // every computed block (the paper's "stored" mode, for one layer).
    for (const char* algorithm : {"fused", "unfused"}) {
      std::ostringstream cmd;
      cmd << "'" << exe << "' attention-memory --backend cpu --heads 4 --head-dim 64 --block "
          << block << " --n " << row.n << " --pattern " << row.pattern << " --stride " << row.stride
          << " --summary " << (row.summary > 0 ? row.summary : 32) << " --algorithm " << algorithm;
      std::fprintf(stderr, "  measuring %s attention, n = %lld, %s (row %zu of %zu)\n",
                   row.pattern.c_str(), static_cast<long long>(row.n), algorithm, r + 1,
                   rows.size());
      Heartbeat beat(std::string("measuring n = ") + std::to_string(row.n));
      FILE* pipe = popen(cmd.str().c_str(), "r");
      if (pipe == nullptr) throw std::runtime_error("cannot run " + cmd.str());
      std::string output;
      char buf[4096];
      while (std::fgets(buf, sizeof buf, pipe) != nullptr) output += buf;
      const int status = pclose(pipe);
      nlohmann::json measured;
      if (status != 0 || output.empty()) {
        measured["error"] = "measurement failed: " + cmd.str();
      } else {
        measured = nlohmann::json::parse(output);
        measured["command"] = cmd.str().substr(cmd.str().find("attention-memory"));
      }
      table["rows"][r][std::string(algorithm) == "fused" ? "measured" : "measured_unfused"] =
          measured;
    }
  }
}

nlohmann::json memory_table_json(bool with_sparse, int block) {
  nlohmann::json rows = nlohmann::json::array();
  for (const MemoryRow& r : paper_memory_rows()) {
    const double one = dense_attention_bytes_one_layer(r.n);
    nlohmann::json j;
    j["data"] = r.data;
    j["n"] = r.n;
    j["stored_bytes"] = one * kLayers;
    j["recomputed_bytes"] = one;
    j["stored"] = format_bytes(one * kLayers);
    j["recomputed"] = format_bytes(one);
    j["paper_stored"] = r.paper_stored;
    j["paper_recomputed"] = r.paper_recomputed;
    j["matches_paper"] =
        matches_paper_figure(one * kLayers, r.paper_stored_bytes, decimals_of(r.paper_stored)) &&
        matches_paper_figure(one, r.paper_recomputed_bytes, decimals_of(r.paper_recomputed));
    if (with_sparse) j["sparse"] = sparse_columns(r, block);
    rows.push_back(j);
  }
  nlohmann::json table;
  table["layers"] = kLayers;
  table["heads"] = kHeads;
  table["bytes_per_element"] = kBytesPerElement;
  table["units"] = "decimal (1 GB = 1e9 bytes)";
  table["rows"] = rows;
  return table;
}

std::string memory_table_markdown(const nlohmann::json& table) {
  std::ostringstream md;
  const bool sparse = !table["rows"].empty() && table["rows"][0].contains("sparse");
  md << "| data | n | stored, all " << table["layers"].get<int>()
     << " layers | recomputed, one layer | paper: stored / recomputed | matches paper |";
  if (sparse)
    md << " pattern | density | sparse stored | sparse recomputed | fused (lse only), one layer |";
  const bool measured = !table["rows"].empty() && table["rows"][0].contains("measured");
  if (measured) md << " measured: fused fwd+bwd, one layer (CPU) |";
  const bool unfused = !table["rows"].empty() && table["rows"][0].contains("measured_unfused");
  if (unfused) md << " measured: unfused (scores stored) fwd+bwd, one layer (CPU) |";
  md << "\n|---|---|---|---|---|---|";
  if (sparse) md << "---|---|---|---|---|";
  if (measured) md << "---|";
  if (unfused) md << "---|";
  md << "\n";
  for (const auto& r : table["rows"]) {
    md << "| " << r["data"].get<std::string>() << " | " << r["n"].get<int64_t>() << " | "
       << r["stored"].get<std::string>() << " | " << r["recomputed"].get<std::string>() << " | "
       << r["paper_stored"].get<std::string>() << " / " << r["paper_recomputed"].get<std::string>()
       << " | " << (r["matches_paper"].get<bool>() ? "yes" : "NO") << " |";
    if (sparse) {
      const auto& s = r["sparse"];
      if (s.contains("error")) {
        md << " error: " << s["error"].get<std::string>() << " | | | | |";
      } else {
        char density[32];
        std::snprintf(density, sizeof density, "%.1f%%", 100.0 * s["density"].get<double>());
        md << " " << s["pattern"].get<std::string>() << " l=" << s["stride"].get<int64_t>()
           << (s.contains("summary") ? " c=" + std::to_string(s["summary"].get<int64_t>()) : "")
           << ", B=" << s["block"].get<int>() << " | " << density << " | "
           << format_bytes(s["sparse_stored_bytes"].get<double>()) << " | "
           << format_bytes(s["sparse_recomputed_bytes"].get<double>()) << " | "
           << format_bytes(s["fused_bytes_one_layer"].get<double>()) << " |";
      }
    }
    for (const char* key : {"measured", "measured_unfused"}) {
      if (!r.contains(key)) continue;
      const auto& m = r[key];
      if (m.contains("error"))
        md << " " << m["error"].get<std::string>() << " |";
      else
        md << " " << format_bytes(m["attention_bytes"].get<double>()) << " |";
    }
    md << "\n";
  }
  return md.str();
}

}  // namespace repro
