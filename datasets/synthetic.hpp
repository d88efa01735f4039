// Synthetic sources whose entropy is known exactly, so a trained model's bits per dim can be
// compared with the best achievable value.
//
// Image-like source (levels K, width W, height H): pixel (r, c) is drawn given its left
// neighbour l = x(r, c-1) and the pixel above u = x(r-1, c) as
//     x = clamp(m + e, 0, K-1),   m = floor((l + u + 1) / 2),
//     P(e) proportional to exp(-|e| / noise_scale) for e in [-(K-1), K-1];
// in the first row u := l, in the first column l := u, and the first pixel is uniform. Knowing
// only the left neighbour leaves u's information missing, so only a model that attends one row
// back (W tokens) reaches the entropy.
//
// Text-like source (vocab K, offset D, copy probability c, successor bias rho): token 0 is
// uniform; token t draws from the Markov kernel M(x_{t-1}, .) with M(a, b) proportional to
// rho^((b - a) mod K); for t >= D, with probability c the token instead copies x_{t-D}. The
// copy coin is independent of the past, so p(x_t | x_<t) = c [x_t = x_{t-D}] + (1-c) M(x_{t-1},
// x_t) exactly.
//
// For both, generation records, token by token, the entropy of the exact conditional
// distribution at the context that occurred and the -log2 probability of the drawn token.
#pragma once

#include <cstdint>

#include "datasets/dataset.hpp"
#include "libsparse/random.hpp"

namespace sparse::data {

struct SyntheticImageOptions {
  int32_t width = 32;
  int32_t height = 32;
  int32_t levels = 256;
  double noise_scale = 4.0;
  int64_t count = 1024;
  uint64_t seed = 1;
};

struct SyntheticTextOptions {
  int64_t seq_len = 1024;
  int32_t vocab = 256;
  int64_t offset = 256;
  double copy_prob = 0.75;
  double rho = 0.5;
  int64_t count = 1024;
  uint64_t seed = 1;
};

SourcePtr synthetic_image(const SyntheticImageOptions& options);
SourcePtr synthetic_text(const SyntheticTextOptions& options);

// splitmix64 (libsparse/random.hpp): the generator behind every seeded choice of the dataset code.
struct SplitMix64 {
  uint64_t state;
  explicit SplitMix64(uint64_t seed) : state(seed) {}
  uint64_t next() { return splitmix64_next(state); }
  double uniform() { return uniform01(state); }
  // Uniform in [0, n) without modulo bias.
  uint64_t below(uint64_t n);
};

}  // namespace sparse::data
