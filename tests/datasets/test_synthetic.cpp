// Synthetic sources: the reported entropy against closed forms and against plug-in estimates of
// the conditional entropy counted on large generated samples; seeded shuffling and batching.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "sparse/sparse.h"

namespace {

struct Dataset {
  sparse_dataset* d = nullptr;
  explicit Dataset(const sparse_dataset_desc& desc) {
    const sparse_status s = sparse_dataset_open(&desc, &d);
    INFO(sparse_last_error());
    REQUIRE(s == SPARSE_OK);
  }
  ~Dataset() { sparse_dataset_destroy(d); }
  int64_t size() const {
    int64_t n = 0;
    REQUIRE(sparse_dataset_num_sequences(d, &n) == SPARSE_OK);
    return n;
  }
  int64_t len() const {
    int64_t n = 0;
    REQUIRE(sparse_dataset_seq_len(d, &n) == SPARSE_OK);
    return n;
  }
  std::vector<uint8_t> all() const {
    std::vector<uint8_t> v(static_cast<size_t>(size() * len()));
    REQUIRE(sparse_dataset_read(d, 0, size(), SPARSE_TOKENS_U8, v.data(), v.size()) == SPARSE_OK);
    return v;
  }
  double entropy(double* nll = nullptr) const {
    double h = -1;
    REQUIRE(sparse_dataset_entropy(d, &h, nll) == SPARSE_OK);
    return h;
  }
};

double h2(double p) { return -(p * std::log2(p) + (1 - p) * std::log2(1 - p)); }

// Plug-in conditional entropy sum over (context, symbol) counts, in bits (total, not per token).
struct CondCounts {
  std::map<std::vector<int>, std::map<int, double>> counts;
  void add(std::vector<int> ctx, int x) { counts[std::move(ctx)][x] += 1; }
  double total_bits() const {
    double bits = 0;
    for (const auto& [ctx, hist] : counts) {
      double n = 0;
      for (const auto& kv : hist) n += kv.second;
      for (const auto& kv : hist) bits -= kv.second * std::log2(kv.second / n);
    }
    return bits;
  }
};

sparse_dataset_desc image_desc(int levels, int w, int h, double noise, int64_t count) {
  sparse_dataset_desc desc;
  REQUIRE(sparse_dataset_desc_default(&desc, SPARSE_DATASET_SYNTHETIC_IMAGE) == SPARSE_OK);
  desc.vocab = levels;
  desc.image_width = w;
  desc.image_height = h;
  desc.noise_scale = noise;
  desc.num_sequences = count;
  return desc;
}

sparse_dataset_desc text_desc(int vocab, int64_t len, int64_t offset, double copy, double rho,
                              int64_t count) {
  sparse_dataset_desc desc;
  REQUIRE(sparse_dataset_desc_default(&desc, SPARSE_DATASET_SYNTHETIC_TEXT) == SPARSE_OK);
  desc.vocab = vocab;
  desc.seq_len = len;
  desc.copy_offset = offset;
  desc.copy_prob = copy;
  desc.successor_bias = rho;
  desc.num_sequences = count;
  return desc;
}

}  // namespace

TEST_CASE("synthetic text: binary closed form") {
  // vocab 2, uniform kernel (bias 1): tokens before the offset carry 1 bit; after it the token
  // equals x_{t-D} with probability c + (1 - c) / 2.
  const int64_t T = 100, D = 30;
  const double c = 0.6;
  Dataset ds(text_desc(2, T, D, c, 1.0, 50));
  const double expected = (D * 1.0 + (T - D) * h2(c + (1 - c) / 2)) / T;
  CHECK(ds.entropy() == doctest::Approx(expected).epsilon(1e-12));
}

TEST_CASE("synthetic image: binary closed form") {
  // levels 2: every pixel but the first sees p(flip away from m) = e^{-1/b} / (1 + 2 e^{-1/b}).
  const int W = 7, H = 5;
  const double b = 0.8, q = std::exp(-1 / b) / (1 + 2 * std::exp(-1 / b));
  Dataset ds(image_desc(2, W, H, b, 20));
  CHECK(ds.entropy() == doctest::Approx((1 + (W * H - 1) * h2(q)) / (W * H)).epsilon(1e-12));
}

TEST_CASE("synthetic image: reported entropy matches the empirical conditional entropy") {
  const int W = 16, H = 16, K = 8;
  Dataset ds(image_desc(K, W, H, 1.5, 4000));
  CHECK(ds.len() == W * H);
  const std::vector<uint8_t> x = ds.all();
  CondCounts given_both, given_left;
  for (int64_t n = 0; n < ds.size(); ++n) {
    const uint8_t* img = x.data() + n * W * H;
    for (int r = 0; r < H; ++r)
      for (int c = 0; c < W; ++c) {
        const int v = img[r * W + c];
        REQUIRE(v < K);
        const int left = c > 0 ? img[r * W + c - 1] : -1;
        const int up = r > 0 ? img[(r - 1) * W + c] : -1;
        given_both.add({r == 0, c == 0, left, up}, v);
        given_left.add({r == 0, c == 0, left}, v);
      }
  }
  const double dims = static_cast<double>(x.size());
  double nll = 0;
  const double h = ds.entropy(&nll);
  const double empirical = given_both.total_bits() / dims;
  MESSAGE("image: reported ", h, " nll ", nll, " empirical ", empirical, " left-only ",
          given_left.total_bits() / dims);
  CHECK(std::fabs(h - empirical) < 0.005);
  CHECK(std::fabs(nll - h) < 0.005);
  CHECK(h > 1.0);
  // The row above carries information the left neighbour lacks.
  CHECK(given_left.total_bits() / dims > h + 0.1);
}

TEST_CASE("synthetic text: reported entropy matches the empirical conditional entropy") {
  const int K = 8;
  const int64_t T = 256, D = 40;
  Dataset ds(text_desc(K, T, D, 0.7, 0.6, 4000));
  const std::vector<uint8_t> x = ds.all();
  CondCounts exact_ctx, no_copy;
  for (int64_t n = 0; n < ds.size(); ++n) {
    const uint8_t* s = x.data() + n * T;
    for (int64_t t = 0; t < T; ++t) {
      const int prev = t > 0 ? s[t - 1] : -1;
      const int back = t >= D ? s[t - D] : -1;
      exact_ctx.add({t == 0, prev, back}, s[t]);
      no_copy.add({t == 0, prev}, s[t]);
    }
  }
  const double dims = static_cast<double>(x.size());
  double nll = 0;
  const double h = ds.entropy(&nll);
  const double empirical = exact_ctx.total_bits() / dims;
  MESSAGE("text: reported ", h, " nll ", nll, " empirical ", empirical, " without offset ",
          no_copy.total_bits() / dims);
  CHECK(std::fabs(h - empirical) < 0.005);
  CHECK(std::fabs(nll - h) < 0.005);
  CHECK(no_copy.total_bits() / dims > h + 0.3);
}

TEST_CASE("synthetic data is a function of seed and split") {
  sparse_dataset_desc a = text_desc(16, 64, 8, 0.5, 0.5, 10);
  Dataset d1(a), d2(a);
  CHECK(d1.all() == d2.all());
  a.split = SPARSE_SPLIT_VALID;
  Dataset d3(a);
  CHECK(d1.all() != d3.all());
  a.split = SPARSE_SPLIT_TRAIN;
  a.seed = 99;
  Dataset d4(a);
  CHECK(d1.all() != d4.all());
}

TEST_CASE("seeded shuffling and batching") {
  sparse_dataset_desc desc = image_desc(16, 4, 3, 2.0, 10);
  Dataset ds(desc);
  const std::vector<uint8_t> all = ds.all();
  const int64_t L = 12;
  // Three batches of 4 = the 10 sequences of epoch 0, then 2 of epoch 1.
  std::vector<int64_t> idx;
  for (int b = 0; b < 3; ++b) {
    std::vector<int32_t> out(4 * L);
    int64_t ind[4];
    REQUIRE(sparse_dataset_next_batch(ds.d, 4, SPARSE_TOKENS_I32, out.data(),
                                      out.size() * sizeof(int32_t), ind) == SPARSE_OK);
    for (int i = 0; i < 4; ++i) {
      idx.push_back(ind[i]);
      for (int64_t t = 0; t < L; ++t)
        CHECK(out[static_cast<size_t>(i * L + t)] == all[static_cast<size_t>(ind[i] * L + t)]);
    }
  }
  std::set<int64_t> epoch0(idx.begin(), idx.begin() + 10);
  CHECK(epoch0.size() == 10);
  CHECK(*epoch0.rbegin() == 9);
  std::vector<int64_t> first(idx.begin(), idx.begin() + 10), sorted = first;
  std::sort(sorted.begin(), sorted.end());
  CHECK(first != sorted);  // shuffled (a 1 in 10! chance to fail by luck for a given seed)
  uint64_t epoch = 0;
  int64_t pos = 0;
  REQUIRE(sparse_dataset_position(ds.d, &epoch, &pos) == SPARSE_OK);
  CHECK(epoch == 1);
  CHECK(pos == 2);
  // Seeking back reproduces the same order; another seed gives another order.
  REQUIRE(sparse_dataset_seek(ds.d, 0, 0) == SPARSE_OK);
  std::vector<uint8_t> out(10 * L);
  int64_t again[10];
  REQUIRE(sparse_dataset_next_batch(ds.d, 10, SPARSE_TOKENS_U8, out.data(), out.size(), again) ==
          SPARSE_OK);
  CHECK(std::vector<int64_t>(again, again + 10) == first);
  desc.seed = 12345;
  Dataset other(desc);
  int64_t other_idx[10];
  REQUIRE(sparse_dataset_next_batch(other.d, 10, SPARSE_TOKENS_U8, out.data(), out.size(),
                                    other_idx) == SPARSE_OK);
  CHECK(std::vector<int64_t>(other_idx, other_idx + 10) != first);
  // Without shuffling: index order.
  desc.shuffle = 0;
  Dataset plain(desc);
  int64_t in_order[10];
  REQUIRE(sparse_dataset_next_batch(plain.d, 10, SPARSE_TOKENS_U8, out.data(), out.size(),
                                    in_order) == SPARSE_OK);
  for (int i = 0; i < 10; ++i) CHECK(in_order[i] == i);
}

TEST_CASE("dataset ABI: bad arguments") {
  sparse_dataset_desc desc;
  CHECK(sparse_dataset_desc_default(nullptr, SPARSE_DATASET_CIFAR10) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_dataset_desc_default(&desc, static_cast<sparse_dataset_kind>(99)) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  sparse_dataset* d = reinterpret_cast<sparse_dataset*>(1);
  REQUIRE(sparse_dataset_desc_default(&desc, SPARSE_DATASET_CIFAR10) == SPARSE_OK);
  CHECK(sparse_dataset_open(&desc, &d) == SPARSE_ERR_INVALID_ARGUMENT);  // no path
  CHECK(d == nullptr);
  CHECK(std::string(sparse_last_error()).find("path") != std::string::npos);
  desc.struct_size = 8;
  CHECK(sparse_dataset_open(&desc, &d) == SPARSE_ERR_INVALID_ARGUMENT);
  REQUIRE(sparse_dataset_desc_default(&desc, SPARSE_DATASET_SYNTHETIC_TEXT) == SPARSE_OK);
  desc.reserved[3] = 1;
  CHECK(sparse_dataset_open(&desc, &d) == SPARSE_ERR_INVALID_ARGUMENT);
  desc.reserved[3] = 0;
  desc.vocab = 300;
  CHECK(sparse_dataset_open(&desc, &d) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("vocab") != std::string::npos);
  desc.vocab = 4;
  desc.num_sequences = 3;
  desc.seq_len = 5;
  desc.split = static_cast<sparse_split>(7);
  CHECK(sparse_dataset_open(&desc, &d) == SPARSE_ERR_INVALID_ARGUMENT);
  desc.split = SPARSE_SPLIT_TEST;
  Dataset ds(desc);
  uint8_t buf[15];
  CHECK(sparse_dataset_read(ds.d, 0, 3, SPARSE_TOKENS_U8, buf, sizeof buf) == SPARSE_OK);
  CHECK(sparse_dataset_read(ds.d, 0, 3, SPARSE_TOKENS_U8, buf, 14) == SPARSE_ERR_BUFFER_TOO_SMALL);
  CHECK(sparse_dataset_read(ds.d, 1, 3, SPARSE_TOKENS_U8, buf, sizeof buf) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_dataset_read(ds.d, 0, 1, static_cast<sparse_token_type>(5), buf, sizeof buf) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_dataset_next_batch(ds.d, 0, SPARSE_TOKENS_U8, buf, sizeof buf, nullptr) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_dataset_seek(ds.d, 0, 4) == SPARSE_ERR_INVALID_ARGUMENT);
  int32_t label = 0;
  CHECK(sparse_dataset_label(ds.d, 0, &label) == SPARSE_OK);
  CHECK(label == -1);
  CHECK(sparse_dataset_label(ds.d, 3, &label) == SPARSE_ERR_INVALID_ARGUMENT);
  int32_t vocab = 0;
  CHECK(sparse_dataset_vocab_size(ds.d, &vocab) == SPARSE_OK);
  CHECK(vocab == 4);
  CHECK(sparse_dataset_num_sequences(nullptr, nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  sparse_dataset_destroy(nullptr);
  sparse_dataset_kind k;
  CHECK(sparse_dataset_kind_from_name("CIFAR10", &k) == SPARSE_OK);
  CHECK(k == SPARSE_DATASET_CIFAR10);
  CHECK(sparse_dataset_kind_from_name("mnist", &k) == SPARSE_ERR_INVALID_ARGUMENT);
  {  // the message lists every name that would have worked
    const std::string message = sparse_last_error();
    CHECK(message.find("\"mnist\"") != std::string::npos);
    for (int kind = SPARSE_DATASET_SYNTHETIC_IMAGE; kind <= SPARSE_DATASET_AUDIO; ++kind)
      CHECK_MESSAGE(message.find(sparse_dataset_kind_name(
                        static_cast<sparse_dataset_kind>(kind))) != std::string::npos,
                    message);
  }
  CHECK(std::string(sparse_dataset_kind_name(SPARSE_DATASET_IMAGENET64)) == "imagenet64");
}

TEST_CASE("mu-law against its closed form") {
  const float xs[] = {-1.0f, -0.5f, -0.01f, 0.0f, 0.001f, 0.25f, 1.0f, 3.0f};
  uint8_t q[8];
  REQUIRE(sparse_mulaw_encode(xs, 8, q) == SPARSE_OK);
  for (int i = 0; i < 8; ++i) {
    const double x = std::max(-1.0, std::min(1.0, static_cast<double>(xs[i])));
    const double f = (x < 0 ? -1 : 1) * std::log(1 + 255 * std::fabs(x)) / std::log(256.0);
    CHECK(q[i] == static_cast<int>(std::floor((f + 1) / 2 * 255 + 0.5)));
  }
  CHECK(q[0] == 0);
  CHECK(q[3] == 128);
  CHECK(q[6] == 255);
  // Decoding every level and encoding again is the identity; the decoded values are monotone.
  uint8_t levels[256];
  float dec[256];
  for (int i = 0; i < 256; ++i) levels[i] = static_cast<uint8_t>(i);
  REQUIRE(sparse_mulaw_decode(levels, 256, dec) == SPARSE_OK);
  uint8_t back[256];
  REQUIRE(sparse_mulaw_encode(dec, 256, back) == SPARSE_OK);
  for (int i = 0; i < 256; ++i) CHECK(back[i] == i);
  for (int i = 1; i < 256; ++i) CHECK(dec[i] > dec[i - 1]);
  CHECK(dec[255] == doctest::Approx(1.0));
  CHECK(sparse_mulaw_encode(nullptr, 1, q) == SPARSE_ERR_INVALID_ARGUMENT);
}
