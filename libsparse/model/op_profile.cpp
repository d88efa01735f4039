#include "libsparse/model/op_profile.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "libsparse/file_io.hpp"

namespace sparse {

std::unique_ptr<OpProfile> OpProfile::from_environment(Backend& backend) {
  const char* value = std::getenv("SPARSE_PROFILE_OPS");
  if (value == nullptr || *value == '\0') return nullptr;
  return std::unique_ptr<OpProfile>(new OpProfile(backend, value));
}

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(ch));
      out += buf;
      continue;
    }
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

}  // namespace

OpProfile::~OpProfile() {
  std::vector<std::pair<std::string, Entry>> rows(entries_.begin(), entries_.end());
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second.seconds > b.second.seconds;
  });
  double total = 0;
  for (const auto& r : rows) total += r.second.seconds;
  try {
    if (destination_ == "1") {
      std::fprintf(stderr,
                   "libsparse: model operations (SPARSE_PROFILE_OPS; each call synchronised): "
                   "%.3f s in all\n%-28s %10s %12s %12s %7s\n",
                   total, "operation", "calls", "total s", "mean us", "share");
      for (const auto& [name, e] : rows)
        std::fprintf(stderr, "%-28s %10lld %12.6f %12.2f %6.1f%%\n", name.c_str(),
                     static_cast<long long>(e.calls), e.seconds,
                     e.calls > 0 ? 1e6 * e.seconds / static_cast<double>(e.calls) : 0.0,
                     total > 0 ? 100.0 * e.seconds / total : 0.0);
      return;
    }
    std::string doc = "{\"profile\": \"sparse-model-ops\", \"synchronised\": true, \"backend\": " +
                      json_string(backend_.description()) + ", \"ops\": [";
    char buf[64];
    for (size_t i = 0; i < rows.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%.9g", rows[i].second.seconds);
      doc += std::string(i ? ", " : "") + "{\"op\": " + json_string(rows[i].first) +
             ", \"calls\": " + std::to_string(rows[i].second.calls) + ", \"seconds\": " + buf + "}";
    }
    std::snprintf(buf, sizeof buf, "%.9g", total);
    doc += std::string("], \"total_seconds\": ") + buf + "}\n";
    write_file_atomically(destination_, {{doc.data(), doc.size()}}, "the operation profile");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "libsparse: SPARSE_PROFILE_OPS: %s\n", e.what());
  }
}

}  // namespace sparse
