#include "info.hpp"

#include <cstdio>

#include "sparse/sparse.h"

namespace repro {

void print_info() {
  std::printf("libsparse %s (API %u.%u.%u)\n", sparse_version_string(), sparse_api_version() >> 16,
              (sparse_api_version() >> 8) & 0xff, sparse_api_version() & 0xff);
  std::printf("build: %s\n", sparse_build_info());
  int devices = 0;
  sparse_cuda_device_count(&devices);
  for (sparse_backend b : {SPARSE_BACKEND_CPU, SPARSE_BACKEND_CUDA}) {
    int available = 0;
    sparse_backend_available(b, &available);
    std::printf("backend %-4s: %s\n", sparse_backend_name(b),
                available ? "available" : "not available on this machine");
  }
  std::printf("CUDA devices: %d\n", devices);
}

void register_info(CLI::App& app) {
  app.add_subcommand("info", "library version, build and available backends")->callback([] {
    print_info();
  });
}

}  // namespace repro
