// C ABI contract tests: every bad argument gets its status and a message naming what was wrong;
// NULL handles are accepted where promised; versions and names are consistent.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "sparse/experimental.h"
#include "sparse/sparse.h"

namespace {
std::string last_error() { return sparse_last_error(); }
bool error_mentions(const char* text) { return last_error().find(text) != std::string::npos; }
}  // namespace

TEST_CASE("status strings are distinct, stable and never NULL") {
  const sparse_status all[] = {SPARSE_OK,
                               SPARSE_ERR_INVALID_ARGUMENT,
                               SPARSE_ERR_OUT_OF_MEMORY,
                               SPARSE_ERR_UNSUPPORTED,
                               SPARSE_ERR_DEVICE,
                               SPARSE_ERR_IO,
                               SPARSE_ERR_FORMAT,
                               SPARSE_ERR_INTERNAL,
                               SPARSE_ERR_BUFFER_TOO_SMALL};
  // The numeric values are part of the ABI.
  CHECK(SPARSE_OK == 0);
  CHECK(SPARSE_ERR_INVALID_ARGUMENT == -1);
  CHECK(SPARSE_ERR_OUT_OF_MEMORY == -2);
  CHECK(SPARSE_ERR_UNSUPPORTED == -3);
  CHECK(SPARSE_ERR_DEVICE == -4);
  CHECK(SPARSE_ERR_IO == -5);
  CHECK(SPARSE_ERR_FORMAT == -6);
  CHECK(SPARSE_ERR_INTERNAL == -7);
  CHECK(SPARSE_ERR_BUFFER_TOO_SMALL == -8);
  for (auto a : all) {
    REQUIRE(sparse_status_string(a) != nullptr);
    for (auto b : all)
      if (a != b) CHECK(std::string(sparse_status_string(a)) != sparse_status_string(b));
  }
  CHECK(std::string(sparse_status_string(static_cast<sparse_status>(-1000))) == "unknown status");
}

TEST_CASE("versions agree with the header") {
  CHECK(sparse_api_version() == SPARSE_API_VERSION);
  const std::string expected = std::to_string(SPARSE_API_VERSION_MAJOR) + "." +
                               std::to_string(SPARSE_API_VERSION_MINOR) + "." +
                               std::to_string(SPARSE_API_VERSION_PATCH);
  CHECK(std::string(sparse_version_string()) == expected);
  CHECK(std::string(sparse_build_info()).find("cuda") != std::string::npos);
}

TEST_CASE("the last error is per thread and names the argument") {
  sparse_clear_error();
  CHECK(last_error().empty());
  CHECK(sparse_settings_default(nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(error_mentions("sparse_settings_default"));
  CHECK(error_mentions("settings is NULL"));
  std::string other_thread = "unset";
  std::thread([&] { other_thread = sparse_last_error(); }).join();
  CHECK(other_thread.empty());
  sparse_clear_error();
  CHECK(last_error().empty());
}

TEST_CASE("backend names and availability") {
  sparse_backend b = SPARSE_BACKEND_CPU;
  CHECK(sparse_backend_from_name("CUDA", &b) == SPARSE_OK);
  CHECK(b == SPARSE_BACKEND_CUDA);
  CHECK(sparse_backend_from_name("tpu", &b) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(error_mentions("tpu"));
  CHECK(sparse_backend_from_name(nullptr, &b) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_backend_from_name("cpu", nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_backend_name(SPARSE_BACKEND_CPU)) == "cpu");
  CHECK(std::string(sparse_backend_name(static_cast<sparse_backend>(42))) == "unknown");

  int available = -1;
  CHECK(sparse_backend_available(SPARSE_BACKEND_CPU, &available) == SPARSE_OK);
  CHECK(available == 1);
  CHECK(sparse_backend_available(SPARSE_BACKEND_AUTO, &available) == SPARSE_OK);
  CHECK(available == 1);
  CHECK(sparse_backend_available(static_cast<sparse_backend>(7), &available) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_backend_available(SPARSE_BACKEND_CPU, nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  int devices = -1;
  CHECK(sparse_cuda_device_count(&devices) == SPARSE_OK);
  CHECK(devices >= 0);
  CHECK(sparse_backend_available(SPARSE_BACKEND_CUDA, &available) == SPARSE_OK);
  CHECK(available == (devices > 0 ? 1 : 0));
  CHECK(sparse_cuda_device_count(nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
}

TEST_CASE("context creation validates settings") {
  sparse_settings s;
  REQUIRE(sparse_settings_default(&s) == SPARSE_OK);
  CHECK(s.struct_size == sizeof(sparse_settings));
  CHECK(s.backend == SPARSE_BACKEND_AUTO);

  sparse_context* ctx = reinterpret_cast<sparse_context*>(0x1);
  SUBCASE("NULL out") { CHECK(sparse_context_create(&s, nullptr) == SPARSE_ERR_INVALID_ARGUMENT); }
  SUBCASE("negative threads") {
    s.num_threads = -2;
    CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK(ctx == nullptr);
    CHECK(error_mentions("num_threads"));
  }
  SUBCASE("negative device") {
    s.device_index = -1;
    CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK(error_mentions("device_index"));
  }
  SUBCASE("unknown backend") {
    s.backend = static_cast<sparse_backend>(9);
    CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK(error_mentions("backend"));
  }
  SUBCASE("struct_size too small") {
    s.struct_size = 4;
    CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK(error_mentions("struct_size"));
  }
  SUBCASE("reserved bytes") {
    s.reserved[3] = 1;
    CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK(error_mentions("reserved"));
  }
}

TEST_CASE("CPU context, AUTO resolution and NULL handles") {
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CPU;
  s.num_threads = 2;
  sparse_context* ctx = nullptr;
  REQUIRE(sparse_context_create(&s, &ctx) == SPARSE_OK);
  sparse_backend b = SPARSE_BACKEND_AUTO;
  CHECK(sparse_context_backend(ctx, &b) == SPARSE_OK);
  CHECK(b == SPARSE_BACKEND_CPU);
  int32_t threads = 0;
  CHECK(sparse_context_num_threads(ctx, &threads) == SPARSE_OK);
  CHECK(threads >= 1);
  CHECK(sparse_context_synchronize(ctx) == SPARSE_OK);
  sparse_context_destroy(ctx);

  // NULL settings = defaults (AUTO): CPU here unless a GPU is present.
  REQUIRE(sparse_context_create(nullptr, &ctx) == SPARSE_OK);
  int devices = 0;
  sparse_cuda_device_count(&devices);
  CHECK(sparse_context_backend(ctx, &b) == SPARSE_OK);
  CHECK(b == (devices > 0 ? SPARSE_BACKEND_CUDA : SPARSE_BACKEND_CPU));
  sparse_context_destroy(ctx);

  sparse_context_destroy(nullptr);
  sparse_layout_destroy(nullptr);
  CHECK(sparse_context_backend(nullptr, &b) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_context_num_threads(nullptr, &threads) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_context_synchronize(nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
}

TEST_CASE("asking for CUDA without a GPU is a clear error, not a crash") {
  int devices = 0;
  sparse_cuda_device_count(&devices);
  if (devices > 0) return;  // covered by the CUDA tests on a GPU machine
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CUDA;
  sparse_context* ctx = reinterpret_cast<sparse_context*>(0x1);
  CHECK(sparse_context_create(&s, &ctx) == SPARSE_ERR_UNSUPPORTED);
  CHECK(ctx == nullptr);
  CHECK(error_mentions("CUDA"));
}

TEST_CASE("context memory: allocation and copies on the CPU backend") {
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CPU;
  sparse_context* ctx = nullptr;
  REQUIRE(sparse_context_create(&s, &ctx) == SPARSE_OK);
  sparse_memory kind = SPARSE_MEMORY_DEVICE;
  CHECK(sparse_context_memory(ctx, &kind) == SPARSE_OK);
  CHECK(kind == SPARSE_MEMORY_HOST);
  void* p = nullptr;
  REQUIRE(sparse_context_alloc(ctx, 1000, &p) == SPARSE_OK);
  REQUIRE(p != nullptr);
  CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
  const char text[] = "block-sparse";
  CHECK(sparse_context_copy(ctx, p, SPARSE_MEMORY_HOST, text, SPARSE_MEMORY_HOST, sizeof text) ==
        SPARSE_OK);
  CHECK(std::strcmp(static_cast<const char*>(p), text) == 0);
  CHECK(sparse_context_copy(ctx, p, SPARSE_MEMORY_DEVICE, text, SPARSE_MEMORY_HOST, 4) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(error_mentions("device memory"));
  CHECK(sparse_context_copy(ctx, nullptr, SPARSE_MEMORY_HOST, text, SPARSE_MEMORY_HOST, 4) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_context_copy(ctx, p, static_cast<sparse_memory>(5), text, SPARSE_MEMORY_HOST, 4) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  sparse_context_free(ctx, p);
  sparse_context_free(ctx, nullptr);
  sparse_context_free(nullptr, nullptr);
  CHECK(sparse_context_alloc(ctx, 0, &p) == SPARSE_OK);
  CHECK(p == nullptr);
  CHECK(sparse_context_alloc(nullptr, 8, &p) == SPARSE_ERR_INVALID_ARGUMENT);
  // Host memory is bounded by the memory limit: a request above it is refused, not allocated.
  REQUIRE(::setenv("SPARSE_MEMORY_LIMIT", "1M", 1) == 0);
  p = ctx;  // not NULL: a failure must clear it
  CHECK(sparse_context_alloc(ctx, size_t{3} << 20, &p) == SPARSE_ERR_OUT_OF_MEMORY);
  CHECK(p == nullptr);
  CHECK(error_mentions("SPARSE_MEMORY_LIMIT"));
  CHECK(error_mentions("3145728 bytes"));
  CHECK(sparse_context_alloc(ctx, 4096, &p) == SPARSE_OK);
  sparse_context_free(ctx, p);
  // One byte over: the sizes in bytes, not "1.00 MiB, more than ... 1.00 MiB".
  CHECK(sparse_context_alloc(ctx, (size_t{1} << 20) + 1, &p) == SPARSE_ERR_OUT_OF_MEMORY);
  CHECK(
      error_mentions("1.00 MiB (1048577 bytes), more than the memory limit of 1.00 MiB (1048576 "
                     "bytes)"));
  CHECK(sparse_context_alloc(ctx, size_t{1} << 20, &p) == SPARSE_OK);
  sparse_context_free(ctx, p);
  REQUIRE(::unsetenv("SPARSE_MEMORY_LIMIT") == 0);
  sparse_context_destroy(ctx);
}

TEST_CASE("tensor helpers") {
  float data[24];
  const int64_t shape[3] = {2, 3, 4};
  sparse_tensor t;
  REQUIRE(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F32, 3, shape) == SPARSE_OK);
  CHECK(t.strides[0] == 12);
  CHECK(t.strides[1] == 4);
  CHECK(t.strides[2] == 1);
  CHECK(t.memory == SPARSE_MEMORY_HOST);
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F32, 0, shape) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F32, 9, shape) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_tensor_contiguous(&t, data, static_cast<sparse_dtype>(17), 3, shape) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_tensor_contiguous(nullptr, data, SPARSE_DTYPE_F32, 3, shape) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  const int64_t negative[2] = {2, -1};
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F32, 2, negative) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(error_mentions("shape[1]"));
  // Strides, element counts and byte sizes that overflow int64_t are refused, not wrapped.
  const int64_t huge[3] = {int64_t{1} << 32, int64_t{1} << 32, 2};
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F32, 3, huge) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(error_mentions("[4294967296, 4294967296, 2]"));
  const int64_t bytes_overflow[2] = {int64_t{1} << 31, int64_t{1} << 30};  // 2^61 elements
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F64, 2, bytes_overflow) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F16, 2, bytes_overflow) == SPARSE_OK);
  const int64_t with_zero[3] = {int64_t{1} << 62, 0, 4};  // no elements, strides still fit
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F32, 3, with_zero) == SPARSE_OK);
  // Refused, t untouched: 2^40 x 2^40 elements (the strides fit, the count does not).
  const int64_t square[2] = {int64_t{1} << 40, int64_t{1} << 40};
  t.strides[0] = 7;
  CHECK(sparse_tensor_contiguous(&t, data, SPARSE_DTYPE_F32, 2, square) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(error_mentions("elements"));
  CHECK(t.strides[0] == 7);
  CHECK(sparse_dtype_size(SPARSE_DTYPE_F32) == 4);
  CHECK(sparse_dtype_size(SPARSE_DTYPE_BF16) == 2);
  CHECK(sparse_dtype_size(static_cast<sparse_dtype>(99)) == 0);
}

TEST_CASE("memory check: a bound against SPARSE_MEMORY_LIMIT, and estimates that are no size") {
  REQUIRE(::setenv("SPARSE_MEMORY_LIMIT", "16G", 1) == 0);
  CHECK(sparse_experimental_check_memory(1024.0, "a small buffer") == SPARSE_OK);
  CHECK(sparse_experimental_check_memory(std::ldexp(1.0, 35), "32 GiB") ==
        SPARSE_ERR_OUT_OF_MEMORY);
  CHECK(error_mentions("32 GiB needs about 32.00 GiB"));
  CHECK(error_mentions("16.00 GiB"));
  // Beyond the largest unit the figure keeps its unit (1e300 bytes = 8.67e281 EiB).
  CHECK(sparse_experimental_check_memory(1e300, "huge") == SPARSE_ERR_OUT_OF_MEMORY);
  CHECK(error_mentions("8.67e+281 EiB"));
  // A NaN or negative estimate is a caller's bug, not a size that fits.
  for (double bad : {std::nan(""), -1.0, -HUGE_VAL}) {
    CAPTURE(bad);
    CHECK(sparse_experimental_check_memory(bad, "x") == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK(error_mentions("estimate_bytes"));
  }
  CHECK(sparse_experimental_check_memory(1.0, nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  REQUIRE(::unsetenv("SPARSE_MEMORY_LIMIT") == 0);
}
