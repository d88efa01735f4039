// Sliding-window evaluation of a byte stream, the paper's Enwik8 protocol: windows of the model's
// length n advance by `stride`; the first window scores all of its n bytes, every later one only
// the bytes not scored before (its last `stride`, or fewer for the final window, which ends at
// the last byte). Every byte is scored exactly once, and every byte after the first window is
// predicted with at least n - stride bytes of context.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace repro {

struct SlidingWindow {
  int64_t start;         // window covers bytes [start, start + n)
  int64_t first_scored;  // positions [first_scored, n) of the window are scored
};

// The windows over `length` bytes (length >= n >= 1, 1 <= stride <= n); throws otherwise.
std::vector<SlidingWindow> sliding_windows(int64_t length, int64_t n, int64_t stride);

// Scores `count` windows of n bytes each (count * n bytes, row-major) into count * n bits.
using TokenBitsFn = std::function<void(const uint8_t* windows, int64_t count, double* bits)>;

struct SlidingResult {
  double bits_per_byte = 0;  // mean over the scored bytes
  int64_t bytes = 0;         // bytes scored (= the length of the stream)
  int64_t windows = 0;
  int64_t min_context = 0;  // bytes of context of every scored byte after the first window
};

// Evaluates `bytes` with windows of n and `stride`, `batch` windows per call of `score`. When
// `per_byte` is not null it receives the bits of each byte in order. `progress` (may be empty) is
// called after each batch with (windows done, windows in all).
SlidingResult sliding_evaluate(const std::vector<uint8_t>& bytes, int64_t n, int64_t stride,
                               int batch, const TokenBitsFn& score,
                               std::vector<double>* per_byte = nullptr,
                               const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace repro
