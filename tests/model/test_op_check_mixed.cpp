// The operation checker's mixed-precision checks, shown on the CPU: the bf16 emulation of
// tests/model/bf16_emulation.hpp (products on bf16-rounded operands, fp32 accumulation, fp32 bias
// and bias gradient) passes them, and deliberately wrong emulations fail them. The checker's host
// rounding is compared with independent conversions (bit manipulation for bf16, the compiler's
// _Float16 for fp16).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "libsparse/check/op_check.hpp"
#include "tests/attention_check.hpp"
#include "tests/model/bf16_emulation.hpp"

using sparse::model::testing::Counts;
using sparse::model::testing::EmulatingBackend;
using sparse::model::testing::Fault;

namespace {

struct Report {
  sparse::check::OpCheckCounts counts;
  std::vector<std::string> lines;
  bool has(const std::string& start) const {
    return std::any_of(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.rfind(start, 0) == 0; });
  }
  int count(const std::string& start) const {
    return static_cast<int>(std::count_if(
        lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(start, 0) == 0; }));
  }
};

// The checker on the machine's backends and the emulation (named "emulation"), restricted to
// operations whose name contains `filter`.
Report check_emulation(Fault fault, const std::string& filter) {
  Counts counts;
  EmulatingBackend backend(false, counts, sparse::model::testing::Attention::Fp32, fault);
  Report r;
  sparse::check::OpCheckOptions o;
  o.filter = filter;
  o.extra_backends.emplace_back("emulation", &backend);
  o.print = [&](const std::string& line) { r.lines.push_back(line); };
  r.counts = sparse::check::run_op_check(o);
  return r;
}

const char* const kProducts[] = {"linear_forward ", "linear_backward ", "linear_transposed ",
                                 "linear_forward_16 ", "linear_backward_16 "};

float float_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

TEST_CASE("host rounding to bf16 and fp16 equals independent conversions") {
  std::mt19937 rng(7);
  std::vector<float> values = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.0f, 65520.0f, -65520.0f};
  // Every exponent with the fraction patterns around the ties of both dtypes, and random bits.
  for (uint32_t e = 1; e < 255; ++e)
    for (uint32_t f : {0u, 1u, 0x0fffu, 0x1000u, 0x1001u, 0x7fffu, 0x8000u, 0x8001u, 0x18000u,
                       0x7fffffu, 0x7ff000u})
      for (uint32_t sign : {0u, 0x80000000u}) values.push_back(float_from_bits(sign | e << 23 | f));
  for (int i = 0; i < 200000; ++i) {
    const float f = float_from_bits(static_cast<uint32_t>(rng()));
    if (std::isfinite(f)) values.push_back(f);
  }
  int64_t bf16_diffs = 0, f16_diffs = 0;
  for (float f : values) {
    const double b = sparse::check::round_to_16_host(f, SPARSE_DTYPE_BF16);
    const double h = sparse::check::round_to_16_host(f, SPARSE_DTYPE_F16);
    const float want_b = ::check::from_bf16(::check::to_bf16(f));
    const float want_h = ::check::from_f16(::check::to_f16(f));
    if (!(b == static_cast<double>(want_b) && std::signbit(b) == std::signbit(want_b))) {
      if (bf16_diffs++ < 5) MESSAGE("bf16 of ", f, ": ", b, ", expected ", want_b);
    }
    if (!(h == static_cast<double>(want_h) && std::signbit(h) == std::signbit(want_h))) {
      if (f16_diffs++ < 5) MESSAGE("fp16 of ", f, ": ", h, ", expected ", want_h);
    }
  }
  CHECK(bf16_diffs == 0);
  CHECK(f16_diffs == 0);
  CHECK(sparse::check::round_to_16_host(1.5, SPARSE_DTYPE_F32) == 1.5);
}

TEST_CASE("the checker passes the bf16 emulation's mixed-precision products") {
  for (const char* filter : {"linear", "round_trip_16"}) {
    CAPTURE(filter);
    const Report r = check_emulation(Fault::None, filter);
    for (const std::string& l : r.lines)
      if (l.rfind("FAIL", 0) == 0 || l.rfind("    ", 0) == 0) MESSAGE(l);
    CHECK(r.counts.checked > 0);
    CHECK(r.counts.failed == 0);
    // The CPU has no mixed table, the emulation no fp16 one: one skip line each, not per case.
    CHECK(r.count("skip cpu bf16: no mixed-precision operations") == 1);
    CHECK(r.count("skip cpu f16: no mixed-precision operations") == 1);
    CHECK(r.count("skip emulation f16: no mixed-precision operations") == 1);
    CHECK(r.count("skip emulation bf16") == 0);
  }
  const Report products = check_emulation(Fault::None, "linear");
  for (const char* op : kProducts) {
    CAPTURE(op);
    CHECK(products.count(std::string("ok   emulation bf16 ") + op) == 3);  // three shapes
  }
  const Report round_trip = check_emulation(Fault::None, "round_trip_16");
  CHECK(round_trip.count("ok   emulation bf16 round_trip_16 ") == 1);
}

TEST_CASE("the checker fails emulations whose bf16 products or conversions are wrong") {
  SUBCASE("products on unrounded operands") {
    const Report r = check_emulation(Fault::UnroundedProducts, "linear");
    CHECK(r.counts.failed > 0);
    for (const char* op : kProducts) {
      CAPTURE(op);
      CHECK(r.count(std::string("FAIL emulation bf16 ") + op) == 3);
      CHECK(r.count(std::string("FAIL emulation f32 ") + op) == 0);
    }
  }
  SUBCASE("weights rounded to fp16") {
    const Report r = check_emulation(Fault::F16Weights, "linear");
    for (const char* op : kProducts) {
      CAPTURE(op);
      CHECK(r.count(std::string("FAIL emulation bf16 ") + op) == 3);
    }
  }
  SUBCASE("bias gradient from the rounded dy") {
    const Report r = check_emulation(Fault::RoundedBiasGradient, "linear_backward");
    CHECK(r.count("FAIL emulation bf16 linear_backward ") == 3);
    CHECK(r.count("FAIL emulation bf16 linear_backward_16 ") == 3);
    CHECK(r.counts.failed == 6);
  }
  SUBCASE("round_to_16 truncating") {
    const Report r = check_emulation(Fault::TruncatingRound, "_16");
    CHECK(r.count("FAIL emulation bf16 round_trip_16 ") == 1);
    CHECK(r.count("FAIL emulation bf16 linear_forward_16 ") == 3);
    CHECK(r.count("FAIL emulation bf16 linear_backward_16 ") == 3);
  }
}
