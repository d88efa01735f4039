#include "sliding_eval.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace repro {

std::vector<SlidingWindow> sliding_windows(int64_t length, int64_t n, int64_t stride) {
  if (n < 1) throw std::runtime_error("sliding evaluation: window length must be >= 1");
  if (stride < 1 || stride > n)
    throw std::runtime_error("sliding evaluation: stride " + std::to_string(stride) +
                             " must be between 1 and the model's seq_len " + std::to_string(n));
  if (length < n)
    throw std::runtime_error("sliding evaluation: " + std::to_string(length) +
                             " bytes are fewer than one window of " + std::to_string(n));
  std::vector<SlidingWindow> windows{{0, 0}};
  int64_t scored_end = n;  // bytes [0, scored_end) are scored
  while (scored_end < length) {
    const int64_t start = std::min(windows.back().start + stride, length - n);
    windows.push_back({start, scored_end - start});
    scored_end = start + n;
  }
  return windows;
}

SlidingResult sliding_evaluate(const std::vector<uint8_t>& bytes, int64_t n, int64_t stride,
                               int batch, const TokenBitsFn& score, std::vector<double>* per_byte,
                               const std::function<void(int64_t, int64_t)>& progress) {
  if (batch < 1) throw std::runtime_error("sliding evaluation: batch must be >= 1");
  const auto windows = sliding_windows(static_cast<int64_t>(bytes.size()), n, stride);
  const auto total = static_cast<int64_t>(windows.size());
  if (per_byte) per_byte->clear();
  std::vector<uint8_t> tokens;
  std::vector<double> bits;
  SlidingResult r;
  r.windows = total;
  r.min_context = n - stride;
  double sum = 0;
  for (int64_t w0 = 0; w0 < total; w0 += batch) {
    const int64_t count = std::min<int64_t>(batch, total - w0);
    tokens.resize(static_cast<size_t>(count * n));
    bits.assign(static_cast<size_t>(count * n), 0.0);
    for (int64_t w = 0; w < count; ++w) {
      const auto start = bytes.begin() + windows[static_cast<size_t>(w0 + w)].start;
      std::copy(start, start + n, tokens.begin() + w * n);
    }
    score(tokens.data(), count, bits.data());
    for (int64_t w = 0; w < count; ++w)
      for (int64_t i = windows[static_cast<size_t>(w0 + w)].first_scored; i < n; ++i) {
        const double b = bits[static_cast<size_t>(w * n + i)];
        sum += b;
        ++r.bytes;
        if (per_byte) per_byte->push_back(b);
      }
    if (progress) progress(w0 + count, total);
  }
  r.bits_per_byte = sum / static_cast<double>(r.bytes);
  return r;
}

}  // namespace repro
