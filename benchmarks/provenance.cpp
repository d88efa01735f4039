#include "provenance.hpp"

#include <unistd.h>

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

}  // namespace

nlohmann::json provenance(int argc, char** argv) {
  nlohmann::json p;
  std::ostringstream cmd;
  cmd << "sparse-repro";
  for (int i = 1; i < argc; ++i) cmd << " " << argv[i];
  p["command"] = cmd.str();
  p["commit"] = SPARSE_GIT_DESCRIBE;
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
  md << "| library | " << p["library"].get<std::string>() << "; " << p["build"].get<std::string>()
     << " |\n";
  return md.str();
}

}  // namespace repro
