// Synthetic sources with exact entropy. See synthetic.hpp.
#include "datasets/synthetic.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "libsparse/error.hpp"

namespace sparse::data {

uint64_t SplitMix64::below(uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  for (;;) {
    uint64_t v = next();
    if (v < limit) return v % n;
  }
}

namespace {

// A categorical distribution over K symbols with its entropy and cumulative table.
struct Categorical {
  std::vector<double> p, cdf;
  double entropy = 0;
  explicit Categorical(std::vector<double> weights) : p(std::move(weights)) {
    double z = 0;
    for (double w : p) z += w;
    cdf.resize(p.size());
    double acc = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] /= z;
      acc += p[i];
      cdf[i] = acc;
      if (p[i] > 0) entropy -= p[i] * std::log2(p[i]);
    }
  }
  int sample(SplitMix64& rng) const {
    double u = rng.uniform() * cdf.back();
    auto it = std::upper_bound(cdf.begin(), cdf.end(), u);
    size_t i = static_cast<size_t>(it - cdf.begin());
    if (i >= p.size()) i = p.size() - 1;
    while (p[i] == 0 && i > 0) --i;  // never return a zero-probability symbol
    return static_cast<int>(i);
  }
};

class MemorySource final : public Source {
 public:
  MemorySource(int64_t n, int64_t len, int32_t vocab) : n_(n), len_(len), vocab_(vocab) {
    data_.resize(static_cast<size_t>(n * len));
  }
  int64_t size() const override { return n_; }
  int64_t seq_len() const override { return len_; }
  int32_t vocab() const override { return vocab_; }
  void read(int64_t index, uint8_t* out) const override {
    std::copy_n(data_.data() + index * len_, len_, out);
  }
  std::optional<Entropy> entropy() const override { return entropy_; }

  std::vector<uint8_t> data_;
  Entropy entropy_;

 private:
  int64_t n_, len_;
  int32_t vocab_;
};

}  // namespace

SourcePtr synthetic_image(const SyntheticImageOptions& o) {
  require(o.width >= 1 && o.height >= 1 && int64_t{o.width} * o.height <= (int64_t{1} << 24),
          "synthetic image size ", o.width, " x ", o.height,
          " (expected both >= 1 and at most 2^24 pixels)");
  require(o.levels >= 2 && o.levels <= 256, "synthetic image levels = ", o.levels,
          " (expected 2..256)");
  require(o.noise_scale > 0 && std::isfinite(o.noise_scale),
          "synthetic image noise_scale = ", o.noise_scale, " (expected > 0)");
  const int64_t len = int64_t{o.width} * o.height;
  require(o.count >= 1 && o.count <= (int64_t{1} << 30) / len, "synthetic image count = ", o.count,
          " (expected 1..", (int64_t{1} << 30) / len, " for ", len, " pixels each)");
  const int K = o.levels;
  // One distribution per m = floor((l + u + 1) / 2), since the kernel depends on (l, u) only
  // through m.
  std::vector<Categorical> given_mid;
  for (int m = 0; m < K; ++m) {
    std::vector<double> w(static_cast<size_t>(K), 0.0);
    for (int e = -(K - 1); e <= K - 1; ++e) {
      int x = std::clamp(m + e, 0, K - 1);
      w[static_cast<size_t>(x)] += std::exp(-std::abs(e) / o.noise_scale);
    }
    given_mid.emplace_back(std::move(w));
  }
  Categorical first(std::vector<double>(static_cast<size_t>(K), 1.0));
  auto src = std::make_unique<MemorySource>(o.count, len, K);
  SplitMix64 rng(o.seed);
  double h = 0, nll = 0;
  for (int64_t n = 0; n < o.count; ++n) {
    uint8_t* img = src->data_.data() + n * len;
    for (int r = 0; r < o.height; ++r) {
      for (int c = 0; c < o.width; ++c) {
        const Categorical* dist = &first;
        if (r > 0 || c > 0) {
          int l = c > 0 ? img[r * o.width + c - 1] : img[(r - 1) * o.width + c];
          int u = r > 0 ? img[(r - 1) * o.width + c] : l;
          dist = &given_mid[static_cast<size_t>((l + u + 1) / 2)];
        }
        int x = dist->sample(rng);
        img[r * o.width + c] = static_cast<uint8_t>(x);
        h += dist->entropy;
        nll -= std::log2(dist->p[static_cast<size_t>(x)]);
      }
    }
  }
  const double dims = static_cast<double>(o.count) * static_cast<double>(len);
  src->entropy_.bits_per_dim = h / dims;
  src->entropy_.nll_bits_per_dim = nll / dims;
  return src;
}

SourcePtr synthetic_text(const SyntheticTextOptions& o) {
  require(o.vocab >= 2 && o.vocab <= 256, "synthetic text vocab = ", o.vocab, " (expected 2..256)");
  require(o.seq_len >= 1 && o.seq_len <= (int64_t{1} << 24), "synthetic text seq_len = ", o.seq_len,
          " (expected 1..2^24)");
  require(o.offset >= 1, "synthetic text offset = ", o.offset, " (expected >= 1)");
  require(o.copy_prob >= 0 && o.copy_prob <= 1, "synthetic text copy_prob = ", o.copy_prob,
          " (expected 0..1)");
  require(o.rho > 0 && o.rho <= 1, "synthetic text rho = ", o.rho, " (expected in (0, 1])");
  require(o.count >= 1 && o.count <= (int64_t{1} << 30) / o.seq_len,
          "synthetic text count = ", o.count, " (expected 1..", (int64_t{1} << 30) / o.seq_len,
          ")");
  const int K = o.vocab;
  const double c = o.copy_prob;
  // M(a, .) is M(0, .) rotated by a; the mixture at (prev, back) depends on d = back - prev.
  std::vector<double> base(static_cast<size_t>(K));
  for (int d = 0; d < K; ++d) base[static_cast<size_t>(d)] = std::pow(o.rho, d);
  Categorical markov0(base);
  std::vector<Categorical> mix;  // indexed by d = (back - prev) mod K, over s = (x - prev) mod K
  for (int d = 0; d < K; ++d) {
    std::vector<double> w(static_cast<size_t>(K));
    for (int s = 0; s < K; ++s)
      w[static_cast<size_t>(s)] = (1 - c) * markov0.p[static_cast<size_t>(s)] + (s == d ? c : 0.0);
    mix.emplace_back(std::move(w));
  }
  Categorical first(std::vector<double>(static_cast<size_t>(K), 1.0));
  auto src = std::make_unique<MemorySource>(o.count, o.seq_len, K);
  SplitMix64 rng(o.seed);
  double h = 0, nll = 0;
  for (int64_t n = 0; n < o.count; ++n) {
    uint8_t* x = src->data_.data() + n * o.seq_len;
    for (int64_t t = 0; t < o.seq_len; ++t) {
      if (t == 0) {
        int v = first.sample(rng);
        x[0] = static_cast<uint8_t>(v);
        h += first.entropy;
        nll -= std::log2(first.p[static_cast<size_t>(v)]);
        continue;
      }
      const int prev = x[t - 1];
      const Categorical& dist =
          t >= o.offset ? mix[static_cast<size_t>((x[t - o.offset] - prev + K) % K)] : markov0;
      int s = dist.sample(rng);  // offset from prev
      x[t] = static_cast<uint8_t>((prev + s) % K);
      h += dist.entropy;
      nll -= std::log2(dist.p[static_cast<size_t>(s)]);
    }
  }
  const double dims = static_cast<double>(o.count) * static_cast<double>(o.seq_len);
  src->entropy_.bits_per_dim = h / dims;
  src->entropy_.nll_bits_per_dim = nll / dims;
  return src;
}

}  // namespace sparse::data
