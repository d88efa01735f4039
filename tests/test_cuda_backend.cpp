// CUDA backend tests. Reported as skipped (exit code 77) when no GPU is present; the kernel
// check against the CPU reference arrives with the CUDA kernels.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "sparse/sparse.h"

TEST_CASE("a CUDA context runs on the GPU and reports its device") {
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CUDA;
  sparse_context* ctx = nullptr;
  REQUIRE_MESSAGE(sparse_context_create(&s, &ctx) == SPARSE_OK, sparse_last_error());
  sparse_backend b = SPARSE_BACKEND_AUTO;
  CHECK(sparse_context_backend(ctx, &b) == SPARSE_OK);
  CHECK(b == SPARSE_BACKEND_CUDA);
  CHECK(sparse_context_synchronize(ctx) == SPARSE_OK);
  sparse_context_destroy(ctx);

  int count = 0;
  sparse_cuda_device_count(&count);
  s.device_index = count;  // one past the last device
  CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_INVALID_ARGUMENT);
}

int main(int argc, char** argv) {
  int count = 0;
  if (sparse_cuda_device_count(&count) != SPARSE_OK || count == 0) {
    std::printf("SKIP: no CUDA device present (%s)\n", sparse_build_info());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
