// Split names, mu-law companding and the seeded shuffling/batching of dataset.hpp.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "datasets/dataset.hpp"
#include "datasets/synthetic.hpp"
#include "libsparse/error.hpp"

namespace sparse::data {

const char* split_name(Split s) {
  switch (s) {
    case Split::Train:
      return "train";
    case Split::Valid:
      return "valid";
    case Split::Test:
      return "test";
  }
  return "unknown";
}

uint8_t mulaw_encode(float x) {
  if (!(x == x)) x = 0;  // NaN
  const double v = std::clamp(static_cast<double>(x), -1.0, 1.0);
  const double y = std::copysign(std::log1p(255.0 * std::fabs(v)) / std::log(256.0), v);
  return static_cast<uint8_t>(std::lround((y + 1.0) * 0.5 * 255.0));
}

float mulaw_decode(uint8_t q) {
  const double y = 2.0 * q / 255.0 - 1.0;
  return static_cast<float>(std::copysign((std::pow(256.0, std::fabs(y)) - 1.0) / 255.0, y));
}

std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  SplitMix64 rng(seed ^ (epoch * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

Loader::Loader(const Source& source, uint64_t seed, bool shuffle)
    : source_(source), seed_(seed), shuffle_(shuffle) {
  build_order();
}

void Loader::build_order() {
  const int64_t n = source_.size();
  if (shuffle_) {
    order_ = shuffled_order(n, seed_, epoch_);
  } else {
    order_.resize(static_cast<size_t>(n));
    std::iota(order_.begin(), order_.end(), int64_t{0});
  }
}

int64_t Loader::next() {
  require(!order_.empty(), "the dataset has no sequences to batch");
  if (position_ >= static_cast<int64_t>(order_.size())) {
    ++epoch_;
    position_ = 0;
    build_order();
  }
  return order_[static_cast<size_t>(position_++)];
}

void Loader::seek(uint64_t epoch, int64_t position) {
  require(position >= 0 && position <= source_.size(), "position = ", position, " is outside [0, ",
          source_.size(), "]");
  epoch_ = epoch;
  position_ = position;
  build_order();
}

}  // namespace sparse::data
