// Memory bounds (see resources.hpp).
#include "libsparse/resources.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>

#include "libsparse/error.hpp"

namespace sparse {
namespace {

constexpr const char* kVariable = "SPARSE_MEMORY_LIMIT";

// The accepted sizes: "unlimited" or "none", or a decimal integer of bytes with an optional
// binary unit suffix K, M, G or T (2^10, 2^20, 2^30, 2^40 bytes; either case, optionally written
// KiB, MiB, GiB, TiB), surrounding spaces ignored. The result must be at least 1 and at most
// 2^63 - 1 bytes.
struct ParsedSize {
  double bytes = 0;
  std::string error;  // why the text is not a size (empty when it is)
};

ParsedSize parse_size(const std::string& text) {
  const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  size_t begin = 0, end = text.size();
  while (begin < end && space(text[begin])) ++begin;
  while (end > begin && space(text[end - 1])) --end;
  const std::string t = text.substr(begin, end - begin);
  const char* expected =
      "expected a decimal number of bytes with an optional K, M, G or T suffix (binary: "
      "K = 1024), e.g. 512M or 16G, or \"unlimited\"";
  if (t == "unlimited" || t == "none") return {std::numeric_limits<double>::infinity(), ""};
  size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  if (digits == 0) return {0, expected};
  std::string suffix = t.substr(digits);
  int shift = 0;
  if (!suffix.empty()) {
    const std::string units = "KMGT";
    const auto pos =
        units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0]))));
    const std::string rest = suffix.substr(1);
    if (pos == std::string::npos || !(rest.empty() || rest == "iB" || rest == "ib"))
      return {0, expected};
    shift = 10 * static_cast<int>(pos + 1);
  }
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t value = 0;
  for (size_t i = 0; i < digits; ++i) {
    const uint64_t d = static_cast<uint64_t>(t[i] - '0');
    if (value > (kMax - d) / 10) return {0, "too large (at most 2^63 - 1 bytes)"};
    value = value * 10 + d;
  }
  if (value > (kMax >> shift)) return {0, "too large (at most 2^63 - 1 bytes)"};
  value <<= shift;
  if (value == 0) return {0, "zero bytes (expected at least 1, or \"unlimited\")"};
  return {static_cast<double>(value), ""};
}

void take_smaller(MemoryLimit& limit, double bytes, const std::string& source) {
  if (bytes > 0 && bytes < limit.bytes) {
    limit.bytes = bytes;
    limit.source = source;
  }
}

}  // namespace

std::string format_bytes(double bytes) {
  if (std::isinf(bytes)) return "unlimited";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 6) {
    bytes /= 1024.0;
    ++u;
  }
  char text[64];
  // Beyond a million of the largest unit, fixed notation would not fit (nor read well).
  const char* format = bytes >= 1e6 ? "%.3g %s" : u == 0 ? "%.0f %s" : "%.2f %s";
  std::snprintf(text, sizeof text, format, bytes, units[u]);
  return text;
}

MemoryLimit memory_limit() {
  MemoryLimit limit{std::numeric_limits<double>::infinity(), "no limit found"};
  if (const char* env = std::getenv(kVariable); env != nullptr && env[0] != '\0') {
    const ParsedSize size = parse_size(env);
    if (!size.error.empty()) throw_invalid(kVariable, " = \"", env, "\": ", size.error);
    return {size.bytes, std::string(kVariable) + " = " + env};
  }
  // The machine's and the cgroup's memory are read once (every attention call checks).
  static const MemoryLimit machine = [] {
    MemoryLimit m{std::numeric_limits<double>::infinity(), "no limit found"};
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
      take_smaller(m, static_cast<double>(pages) * static_cast<double>(page),
                   "the machine's physical memory");
    std::ifstream cgroup("/sys/fs/cgroup/memory.max");
    std::string text;
    if (cgroup >> text && text != "max")
      take_smaller(m, parse_size(text).bytes, "the cgroup's memory.max");
    return m;
  }();
  limit = machine;
  for (auto [resource, name] :
       {std::pair{RLIMIT_AS, "RLIMIT_AS (ulimit -v)"}, {RLIMIT_DATA, "RLIMIT_DATA (ulimit -d)"}}) {
    struct rlimit rl {};
    if (getrlimit(resource, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      take_smaller(limit, static_cast<double>(rl.rlim_cur), name);
  }
  limit.source += "; set SPARSE_MEMORY_LIMIT to change it";
  return limit;
}

void check_memory(double estimate_bytes, const std::string& what) {
  const MemoryLimit limit = memory_limit();
  if (!(estimate_bytes > limit.bytes)) return;
  std::string need = format_bytes(estimate_bytes), have = format_bytes(limit.bytes);
  if (need == have) {  // just over the limit: the rounded sizes alone would read as equal
    need += detail::concat(" (", static_cast<uint64_t>(estimate_bytes), " bytes)");
    have += detail::concat(" (", static_cast<uint64_t>(limit.bytes), " bytes)");
  }
  throw_error(SPARSE_ERR_OUT_OF_MEMORY, what, " needs about ", need,
              ", more than the memory limit of ", have, " (", limit.source, ")");
}

}  // namespace sparse
