// The whole model: parameter counts of the paper's presets, gradients against finite differences
// in double precision for every head-combination mode, recomputation giving identical gradients,
// the fused fp32 attention path against the plain double path, incremental decoding against the
// full forward pass, and peak memory with and without recomputation.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend.hpp"
#include "error.hpp"
#include "model/config.hpp"
#include "model/transformer.hpp"

using namespace sparse;
using namespace sparse::model;

namespace {

sparse_model_config tiny(sparse_model_attention attention, sparse_head_mode mode) {
  sparse_model_config c = default_config();
  c.seq_len = 24;  // not a multiple of the block size nor of the stride
  c.num_layers = 2;
  c.d_model = 8;
  c.num_heads = 2;
  c.attention = attention;
  c.head_mode = mode;
  c.stride = 5;
  c.summary = 2;
  c.block_size = 16;
  c.half_qk = 1;
  c.half_ff = 1;
  c.dropout = 0.2f;
  c.num_position_dims = 2;
  c.position_shape[0] = 5;
  c.position_shape[1] = 5;
  c.seed = 7;
  return c;
}

std::vector<uint8_t> random_tokens(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> t(static_cast<size_t>(count));
  for (auto& x : t) x = static_cast<uint8_t>(rng() % 256);
  return t;
}

// Random parameters of a useful size everywhere (the real initialisation has a zero output
// projection, which would make most gradients zero).
template <typename T>
void randomise(Transformer<T>& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 0.4);
  for (const TensorSpec& s : m.table().tensors)
    for (int64_t i = 0; i < s.size; ++i)
      m.params[static_cast<size_t>(s.offset + i)] =
          static_cast<T>(s.init == Init::One ? 1.0 + nd(rng) * 0.5 : nd(rng));
}

// Mean loss as a function of the parameters, and its gradient, for the double model.
void gradient_check(const sparse_model_config& c) {
  Transformer<double> m(c, nullptr);
  randomise(m, 11);
  const int64_t batch = 2;
  const auto tokens = random_tokens(batch * c.seq_len, 3);
  const double scale = 1.0 / static_cast<double>(batch * c.seq_len);
  const uint64_t dropout_seed = 99;
  std::fill(m.grads.begin(), m.grads.end(), 0.0);
  m.forward_backward(tokens.data(), batch, scale, dropout_seed, true);
  const auto analytic = m.grads;
  // Checked entries: a few of every tensor.
  std::mt19937_64 rng(5);
  int checked = 0;
  for (const TensorSpec& s : m.table().tensors) {
    for (int rep = 0; rep < 3; ++rep) {
      const size_t i = static_cast<size_t>(
          s.offset + static_cast<int64_t>(rng() % static_cast<uint64_t>(s.size)));
      const double saved = m.params[i], h = 1e-5;
      m.params[i] = saved + h;
      const double up = m.forward(tokens.data(), batch, dropout_seed, true, nullptr) * scale;
      m.params[i] = saved - h;
      const double down = m.forward(tokens.data(), batch, dropout_seed, true, nullptr) * scale;
      m.params[i] = saved;
      const double numeric = (up - down) / (2 * h);
      ++checked;
      if (std::abs(analytic[i] - numeric) > 1e-8 + 1e-5 * std::abs(numeric)) {
        FAIL_CHECK(s.name << " element " << i - static_cast<size_t>(s.offset) << ": analytic "
                          << analytic[i] << " vs numeric " << numeric);
        return;
      }
    }
  }
  CHECK(checked > 40);
  // Recomputation gives bit-identical gradients.
  sparse_model_config rc = c;
  rc.recompute = 1;
  Transformer<double> r(rc, nullptr);
  r.params = m.params;
  r.forward_backward(tokens.data(), batch, scale, dropout_seed, true);
  CHECK(r.grads == analytic);
}

}  // namespace

TEST_CASE("parameter counts of the paper's presets") {
  struct Want {
    const char* name;
    double millions;
  } wants[] = {{"cifar10", 59}, {"enwik8", 95}, {"imagenet64", 152}, {"audio", 152}};
  for (const Want& w : wants) {
    const sparse_model_config c = preset_config(w.name);
    const ParamTable t = param_table(c);
    MESSAGE(std::string(w.name) << ": " << t.total << " parameters");
    CHECK(static_cast<double>(t.total) / 1e6 == doctest::Approx(w.millions).epsilon(0.015));
  }
  // The paper's CIFAR-10 model with half-size QK and FF has 458,752 weights per layer (d = 256):
  // Q, K 256 x 128, V, W_p 256 x 256, W1 256 x 512, W2 512 x 256.
  const sparse_model_config c = preset_config("cifar10");
  const ParamTable t = param_table(c);
  int64_t weights = 0;
  for (LayerTensor k : {kWq, kWk, kWv, kWp, kW1, kW2}) weights += t.layer(5, k).size;
  CHECK(weights == 458752);
  CHECK(weights * c.num_layers == 58720256);
  // Small presets keep the sequence length and pattern.
  const sparse_model_config s = preset_config("enwik8-small");
  CHECK(s.seq_len == 12288);
  CHECK(s.attention == SPARSE_MODEL_ATTENTION_FIXED);
  CHECK(s.num_layers == 4);
  CHECK_THROWS_AS(preset_config("mnist"), sparse::Error);
}

TEST_CASE("whole-model gradients match finite differences (double precision)") {
  SUBCASE("strided, interleaved") {
    gradient_check(tiny(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_INTERLEAVED));
  }
  SUBCASE("strided, merged") {
    gradient_check(tiny(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_MERGED));
  }
  SUBCASE("strided, multi-head") {
    gradient_check(tiny(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_MULTIHEAD));
  }
  SUBCASE("fixed, interleaved, tied embeddings, three position tables") {
    sparse_model_config c = tiny(SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_INTERLEAVED);
    c.tied_embeddings = 1;
    c.half_qk = 0;
    c.num_position_dims = 3;
    c.position_shape[0] = 2;
    c.position_shape[1] = 4;
    c.position_shape[2] = 3;
    std::strcpy(c.layer_cycle, "21");
    gradient_check(c);
  }
  SUBCASE("dense, no dropout") {
    sparse_model_config c = tiny(SPARSE_MODEL_ATTENTION_DENSE, SPARSE_HEADS_INTERLEAVED);
    c.dropout = 0.0f;
    gradient_check(c);
  }
}

TEST_CASE("the head-combination modes attend to the right keys") {
  // Key lists read from the model's layouts against the token-level definitions.
  const int64_t l = 5;
  auto row = [&](int64_t i, int64_t j) { return j <= i && i - j <= l; };
  auto col = [&](int64_t i, int64_t j) { return j <= i && (i - j) % l == 0; };
  for (sparse_head_mode mode :
       {SPARSE_HEADS_INTERLEAVED, SPARSE_HEADS_MERGED, SPARSE_HEADS_MULTIHEAD}) {
    sparse_model_config c = tiny(SPARSE_MODEL_ATTENTION_STRIDED, mode);
    std::strcpy(c.layer_cycle, "2111");
    c.num_layers = 4;
    const ModelLayouts ml = build_model_layouts(c);
    for (int64_t layer = 0; layer < c.num_layers; ++layer) {
      const KeyListSet k =
          key_lists_from_layout(*ml.layouts[static_cast<size_t>(ml.layer_layout(layer))]);
      for (int h = 0; h < c.num_heads; ++h)
        for (int64_t i = 0; i < c.seq_len; ++i) {
          std::vector<bool> got(static_cast<size_t>(c.seq_len), false);
          for (int64_t e = k.ptr[h][i]; e < k.ptr[h][i + 1]; ++e) got[k.keys[h][e]] = true;
          for (int64_t j = 0; j < c.seq_len; ++j) {
            bool want = false;
            if (mode == SPARSE_HEADS_INTERLEAVED) want = layer == 0 ? col(i, j) : row(i, j);
            if (mode == SPARSE_HEADS_MERGED) want = row(i, j) || col(i, j);
            if (mode == SPARSE_HEADS_MULTIHEAD) want = h % 2 == 0 ? row(i, j) : col(i, j);
            if (got[static_cast<size_t>(j)] != want) {
              FAIL_CHECK("mode " << mode << " layer " << layer << " head " << h << " (" << i << ", "
                                 << j << ")");
              return;
            }
          }
        }
    }
  }
}

TEST_CASE("the fp32 model with the fused kernels agrees with the double model") {
  for (sparse_head_mode mode :
       {SPARSE_HEADS_INTERLEAVED, SPARSE_HEADS_MERGED, SPARSE_HEADS_MULTIHEAD}) {
    for (int half_qk : {0, 1}) {
      sparse_model_config c = tiny(SPARSE_MODEL_ATTENTION_STRIDED, mode);
      c.seq_len = 40;
      c.position_shape[0] = 8;
      c.half_qk = half_qk;
      c.d_model = 16;
      auto backend = make_cpu_backend(2, 0);
      Transformer<float> f(c, backend.get());
      Transformer<double> d(c, nullptr);
      randomise(d, 21);
      for (size_t i = 0; i < d.params.size(); ++i) {
        f.params[i] = static_cast<float>(d.params[i]);
        d.params[i] = static_cast<double>(f.params[i]);
      }
      const auto tokens = random_tokens(2 * c.seq_len, 9);
      const double lf = f.forward_backward(tokens.data(), 2, 1.0f, 5, true);
      const double ld = d.forward_backward(tokens.data(), 2, 1.0, 5, true);
      CHECK(lf == doctest::Approx(ld).epsilon(1e-5));
      double err = 0, ref = 0;
      for (size_t i = 0; i < d.grads.size(); ++i) {
        err += (f.grads[i] - d.grads[i]) * (f.grads[i] - d.grads[i]);
        ref += d.grads[i] * d.grads[i];
      }
      CHECK_MESSAGE(err / ref < 1e-9, "mode " << mode << " half_qk " << half_qk);
      // Recomputation in fp32 is also bit-identical.
      sparse_model_config rc = c;
      rc.recompute = 1;
      Transformer<float> r(rc, backend.get());
      r.params = f.params;
      r.forward_backward(tokens.data(), 2, 1.0f, 5, true);
      CHECK(r.grads == f.grads);
    }
  }
}

TEST_CASE("incremental decoding with the key/value cache gives the full forward's logits") {
  for (sparse_model_attention att :
       {SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_MODEL_ATTENTION_FIXED}) {
    sparse_model_config c = tiny(att, SPARSE_HEADS_INTERLEAVED);
    c.d_model = 16;
    Transformer<float> m(c, nullptr);
    m.use_listed_attention = true;  // no backend needed
    auto backend = make_cpu_backend(1, 0);
    Transformer<float> full(c, backend.get());
    randomise(m, 4);
    full.params = m.params;
    const auto tokens = random_tokens(c.seq_len, 8);
    std::vector<float> a(static_cast<size_t>(c.seq_len * 256)), b(a.size());
    full.forward(tokens.data(), 1, 0, false, a.data());
    m.incremental_logits(tokens.data(), c.seq_len, b.data());
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::abs(a[i] - b[i]) > 1e-4f + 1e-4f * std::abs(a[i])) {
        FAIL_CHECK("logit " << i << ": " << b[i] << " vs full forward " << a[i]);
        break;
      }
    }
  }
}

TEST_CASE("recomputation keeps one residual stream per layer plus one layer's working set") {
  sparse_model_config c = tiny(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_INTERLEAVED);
  c.seq_len = 256;
  c.stride = 16;
  c.position_shape[0] = 16;
  c.position_shape[1] = 16;
  c.d_model = 32;
  c.num_layers = 8;
  auto backend = make_cpu_backend(2, 0);
  const auto tokens = random_tokens(2 * c.seq_len, 1);
  auto peak = [&](int recompute, int layers) {
    sparse_model_config x = c;
    x.recompute = recompute;
    x.num_layers = layers;
    Transformer<float> m(x, backend.get());
    m.init_params(1);
    m.forward_backward(tokens.data(), 2, 1.0f, 0, true);
    return m.meter.peak;
  };
  const int64_t stream = 2 * c.seq_len * c.d_model * 4;
  const int64_t stored = peak(0, 8), recomputed = peak(1, 8), one_layer = peak(0, 1);
  MESSAGE("peak activation bytes, 8 layers: stored " << stored << ", recomputed " << recomputed
                                                     << " (one stream = " << stream << ")");
  CHECK(recomputed < stored / 2);
  // (layers + 1) residual streams, plus at most the working set of a one-layer model.
  CHECK(recomputed <= 9 * stream + one_layer);
  // Without recomputation memory grows with depth by a whole layer's activations.
  CHECK(stored - peak(0, 4) >= 4 * 8 * stream);
}
