// Memory bounds (see resources.hpp).
#include "libsparse/resources.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>

#include "libsparse/error.hpp"

namespace sparse {
namespace {

constexpr const char* kVariable = "SPARSE_MEMORY_LIMIT";

// "123", "64M", "1.5G", "unlimited" -> bytes; NaN when the text is not one of these.
double parse_size(const std::string& text) {
  std::string t;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) t += c;
  if (t == "unlimited" || t == "none") return std::numeric_limits<double>::infinity();
  if (t.empty() || !(std::isdigit(static_cast<unsigned char>(t[0])) || t[0] == '.'))
    return std::nan("");
  char* end = nullptr;
  double value = std::strtod(t.c_str(), &end);
  std::string suffix(end);
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  if (suffix.size() == 2 && (suffix[1] == 'i' || suffix[1] == 'I')) suffix.pop_back();
  if (suffix.size() > 1) return std::nan("");
  if (!suffix.empty()) {
    const std::string units = "KMGT";
    const auto pos =
        units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0]))));
    if (pos == std::string::npos) return std::nan("");
    value *= std::pow(1024.0, static_cast<double>(pos + 1));
  }
  return std::isfinite(value) && value > 0 ? value : std::nan("");
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
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return text;
}

MemoryLimit memory_limit() {
  MemoryLimit limit{std::numeric_limits<double>::infinity(), "no limit found"};
  if (const char* env = std::getenv(kVariable); env != nullptr && env[0] != '\0') {
    const double bytes = parse_size(env);
    if (std::isnan(bytes))
      throw_invalid(kVariable, " = \"", env,
                    "\" is not a size (expected bytes with an optional K, M, G or T suffix, or "
                    "\"unlimited\")");
    return {bytes, std::string(kVariable) + " = " + env};
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
      take_smaller(m, parse_size(text), "the cgroup's memory.max");
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
  throw_error(SPARSE_ERR_OUT_OF_MEMORY, what, " needs about ", format_bytes(estimate_bytes),
              ", more than the memory limit of ", format_bytes(limit.bytes), " (", limit.source,
              ")");
}

}  // namespace sparse
