// The sliding-window evaluation's bookkeeping (benchmarks/sliding_eval.cpp) against closed forms
// written out here: with a scorer whose "bits" encode the byte and its context, every byte of the
// stream must come back exactly once, in order, with the context the protocol gives it.
#include <doctest/doctest.h>

#include <random>
#include <stdexcept>
#include <vector>

#include "sliding_eval.hpp"

namespace {

// The protocol in closed form: byte j of a stream of `length` is scored in the first window
// (context j) when j < n; else in full-stride window k = ceil((j - n + 1) / s) starting at k s,
// unless that window would run past the end, in which case in the last window [length - n, length).
int64_t expected_context(int64_t j, int64_t length, int64_t n, int64_t s) {
  if (j < n) return j;
  const int64_t k = (j - n + 1 + s - 1) / s;
  if (k * s + n <= length) return j - k * s;
  return j - (length - n);
}

int64_t expected_windows(int64_t length, int64_t n, int64_t s) {
  return 1 + (length - n + s - 1) / s;
}

}  // namespace

TEST_CASE("sliding evaluation scores every byte once with at least the minimum context") {
  std::mt19937 rng(3);
  for (int64_t n : {1, 7, 16}) {
    for (int64_t s = 1; s <= n; ++s) {
      for (int64_t length : {n, n + 1, 3 * n + 5, int64_t{100}}) {
        if (length < n) continue;
        std::vector<uint8_t> bytes(static_cast<size_t>(length));
        for (auto& b : bytes) b = static_cast<uint8_t>(rng());
        // "bits" = 1000 * byte value + position in the window (= context length).
        const auto score = [&](const uint8_t* w, int64_t count, double* bits) {
          for (int64_t i = 0; i < count * n; ++i)
            bits[i] = 1000.0 * w[i] + static_cast<double>(i % n);
        };
        for (int batch : {1, 3}) {
          std::vector<double> per_byte;
          const auto r = repro::sliding_evaluate(bytes, n, s, batch, score, &per_byte);
          REQUIRE(static_cast<int64_t>(per_byte.size()) == length);
          CHECK(r.bytes == length);
          CHECK(r.windows == expected_windows(length, n, s));
          CHECK(r.min_context == n - s);
          double sum = 0;
          for (int64_t j = 0; j < length; ++j) {
            const double v = per_byte[static_cast<size_t>(j)];
            const auto byte = static_cast<int64_t>(v / 1000.0);
            const auto context = static_cast<int64_t>(v - 1000.0 * static_cast<double>(byte));
            CHECK(byte == bytes[static_cast<size_t>(j)]);
            CHECK(context == expected_context(j, length, n, s));
            if (j >= n) CHECK(context >= n - s);
            sum += v;
          }
          CHECK(r.bits_per_byte == doctest::Approx(sum / static_cast<double>(length)));
        }
      }
    }
  }
}

TEST_CASE("stride n is the plain evaluation of consecutive sequences") {
  const auto w = repro::sliding_windows(40, 8, 8);
  REQUIRE(w.size() == 5);
  for (size_t i = 0; i < w.size(); ++i) {
    CHECK(w[i].start == static_cast<int64_t>(8 * i));
    CHECK(w[i].first_scored == 0);
  }
}

TEST_CASE("sliding evaluation rejects impossible requests") {
  CHECK_THROWS_AS(repro::sliding_windows(10, 16, 4), std::runtime_error);  // shorter than n
  CHECK_THROWS_AS(repro::sliding_windows(100, 16, 0), std::runtime_error);
  CHECK_THROWS_AS(repro::sliding_windows(100, 16, 17), std::runtime_error);
}
