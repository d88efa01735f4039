#include "info.hpp"

#include <cstdio>

#include "sparse/experimental.h"
#include "sparse/sparse.h"

namespace repro {

void print_info() {
  std::printf("libsparse %s (API %u.%u.%u)\n", sparse_version_string(), sparse_api_version() >> 16,
              (sparse_api_version() >> 8) & 0xff, sparse_api_version() & 0xff);
  std::printf("build: %s\n", sparse_build_info());
  int devices = 0;
  sparse_cuda_device_count(&devices);
  for (sparse_backend b : {SPARSE_BACKEND_CPU, SPARSE_BACKEND_CUDA}) {
    int available = 0, compiled = 0;
    const char* reason = "";
    sparse_backend_available(b, &available);
    sparse_experimental_backend_status(b, &compiled, &reason);
    if (available)
      std::printf("backend %-4s: available\n", sparse_backend_name(b));
    else if (!compiled)
      std::printf("backend %-4s: not compiled into this build\n", sparse_backend_name(b));
    else
      std::printf("backend %-4s: compiled in, not available on this machine: %s\n",
                  sparse_backend_name(b), reason);
  }
  std::printf("CUDA devices: %d\n", devices);
}

void register_info(CLI::App& app) {
  app.add_subcommand("info", "library version, build and available backends")->callback([] {
    print_info();
  });
}

}  // namespace repro
