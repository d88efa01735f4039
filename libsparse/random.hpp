// The project's one pseudo-random generator: splitmix64 (Steele, Lea and Flood, 2014). Every
// seeded choice (initialisation, dropout masks, sampling, random layouts, dataset shuffles) draws
// from it, so results are identical on every platform and standard library.
#pragma once

#include <cmath>
#include <cstdint>

// The stateless functions below also compile as CUDA device code, so that a GPU backend draws the
// very same dropout masks.
#ifdef __CUDACC__
#define SPARSE_HOST_DEVICE __host__ __device__
#else
#define SPARSE_HOST_DEVICE
#endif

namespace sparse {

// The splitmix64 output function (a bijective mix of the 64 bits of z).
SPARSE_HOST_DEVICE inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr uint64_t kSplitmix64Increment = 0x9E3779B97F4A7C15ull;

// Advances `state` by one step and returns the next output.
inline uint64_t splitmix64_next(uint64_t& state) {
  state += kSplitmix64Increment;
  return splitmix64_mix(state);
}

// The output that follows `x` (a stateless hash: splitmix64(x) == splitmix64_next(copy of x)).
SPARSE_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  return splitmix64_mix(x + kSplitmix64Increment);
}

// Uniform in [0, 1) from the top 53 bits of the next output.
inline double uniform01(uint64_t& state) {
  return static_cast<double>(splitmix64_next(state) >> 11) * 0x1.0p-53;
}

// Standard normal by Box-Muller (one value per two uniforms).
inline double normal(uint64_t& state) {
  const double u1 = 1.0 - uniform01(state);  // (0, 1]
  const double u2 = uniform01(state);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// A seed derived from several values (dropout streams per step, micro-batch, layer and site).
inline uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0) {
  uint64_t s = a;
  uint64_t x = splitmix64_next(s) ^ b;
  x = splitmix64_next(x) ^ c;
  x = splitmix64_next(x) ^ d;
  return splitmix64_next(x);
}

// Whether element `index` of a tensor dropped with probability p under `seed` is kept: a pure
// function of (seed, index), so recomputation and the backward pass reproduce the mask exactly
// without storing it.
SPARSE_HOST_DEVICE inline bool dropout_keep(uint64_t seed, uint64_t index, double p) {
  const uint64_t z = splitmix64(seed ^ splitmix64(index));
  const double u = static_cast<double>(z >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  return u >= p;
}

}  // namespace sparse
