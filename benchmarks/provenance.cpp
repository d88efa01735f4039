#include "provenance.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "git_version.h"
#include "sparse/sparse.h"

namespace repro {
namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

// The commit of the source tree: asked of git at run time (the tree may have moved on since the
// build), else what meson's vcs_tag recorded at build time.
std::string git_commit() {
  const std::string cmd =
      std::string("git -C '") + SPARSE_SOURCE_ROOT + "' describe --always --dirty 2>/dev/null";
  if (FILE* pipe = popen(cmd.c_str(), "r")) {
    char buf[128] = {0};
    const bool got = std::fgets(buf, sizeof buf, pipe) != nullptr;
    const int status = pclose(pipe);
    std::string out(buf);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (got && status == 0 && !out.empty()) return out;
  }
  return SPARSE_GIT_DESCRIBE;
}

}  // namespace

double load_average_1min() {
  double load[1] = {0};
  return getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

nlohmann::json provenance(int argc, char** argv) {
  nlohmann::json p;
  std::ostringstream cmd;
  cmd << "sparse-repro";
  for (int i = 1; i < argc; ++i) cmd << " " << argv[i];
  p["command"] = cmd.str();
  p["commit"] = git_commit();
  char date[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  p["date_utc"] = date;
  p["cpu"] = cpu_model();
  p["logical_cpus"] = std::thread::hardware_concurrency();
  int devices = 0;
  sparse_cuda_device_count(&devices);
  p["cuda_devices"] = devices;
  p["library"] = std::string("libsparse ") + sparse_version_string();
  p["build"] = sparse_build_info();
  if (const double load = load_average_1min(); load >= 0) p["load_average_1min"] = load;
  return p;
}

std::string provenance_markdown(const nlohmann::json& p) {
  std::ostringstream md;
  md << "| provenance | |\n|---|---|\n";
  md << "| command | `" << p["command"].get<std::string>() << "` |\n";
  md << "| commit | " << p["commit"].get<std::string>() << " |\n";
  md << "| date | " << p["date_utc"].get<std::string>() << " |\n";
  md << "| machine | " << p["cpu"].get<std::string>() << ", " << p["logical_cpus"].get<unsigned>()
     << " logical CPUs, " << p["cuda_devices"].get<int>() << " CUDA device(s) |\n";
  if (p.contains("load_average_1min")) {
    char load[160];
    std::snprintf(load, sizeof load,
                  "| load | %.2f (1-minute load average when the run started, on %u logical "
                  "CPUs; other work on the machine slows the timed figures) |\n",
                  p["load_average_1min"].get<double>(), p["logical_cpus"].get<unsigned>());
    md << load;
  }
  md << "| library | " << p["library"].get<std::string>() << "; " << p["build"].get<std::string>()
     << " |\n";
  return md.str();
}

}  // namespace repro
