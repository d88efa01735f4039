// A model small enough for exact step-by-step comparisons (one 16-token block, width 8, two
// heads), and reproducible random byte tokens: shared by the model tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "libsparse/model/config.hpp"

namespace sparse::model::testing {

// seq_len 16 = one block of 16, d_model 8, 2 heads, positions along one axis; callers set the
// layer count, dropout, output initialisation and seed they need.
inline sparse_model_config tiny_model_config() {
  sparse_model_config c = default_config();
  c.seq_len = 16;
  c.num_layers = 1;
  c.d_model = 8;
  c.num_heads = 2;
  c.block_size = 16;
  c.num_position_dims = 1;
  c.position_shape[0] = 16;
  c.seed = 3;
  return c;
}

inline std::vector<uint8_t> random_tokens(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> t(static_cast<size_t>(count));
  for (auto& x : t) x = static_cast<uint8_t>(rng() % 256);
  return t;
}

}  // namespace sparse::model::testing
