// The optimiser and the learning-rate schedule against a naive Adam/AdamW written out here, with
// clipping and weight decay active.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/trainer.hpp"

using namespace sparse::model;

namespace {

sparse_model_config tiny() {
  sparse_model_config c = default_config();
  c.seq_len = 16;
  c.num_layers = 1;
  c.d_model = 8;
  c.num_heads = 2;
  c.stride = 4;
  c.position_shape[0] = 4;
  c.position_shape[1] = 4;
  return c;
}

}  // namespace

TEST_CASE("warm-up then cosine decay") {
  sparse_train_config t = default_train_config();
  t.learning_rate = 1.0f;
  t.warmup_steps = 4;
  t.total_steps = 14;
  CHECK(scheduled_learning_rate(t, 0) == doctest::Approx(0.25));
  CHECK(scheduled_learning_rate(t, 3) == doctest::Approx(1.0));
  CHECK(scheduled_learning_rate(t, 4) == doctest::Approx(1.0));
  CHECK(scheduled_learning_rate(t, 9) == doctest::Approx(0.5));  // half-way through the decay
  CHECK(scheduled_learning_rate(t, 14) == doctest::Approx(0.0));
  CHECK(scheduled_learning_rate(t, 20) == doctest::Approx(0.0));
  t.total_steps = 0;
  CHECK(scheduled_learning_rate(t, 100) == doctest::Approx(1.0));
}

TEST_CASE("Adam and AdamW updates with clipping and weight decay match a naive optimiser") {
  for (sparse_optimizer opt : {SPARSE_OPTIMIZER_ADAM, SPARSE_OPTIMIZER_ADAMW}) {
    sparse_train_config t = default_train_config();
    t.optimizer = opt;
    t.learning_rate = 0.01f;
    t.warmup_steps = 2;
    t.weight_decay = 0.1f;
    t.clip_norm = 0.05f;  // small enough to clip
    Trainer tr(tiny(), t, 1);
    // Non-zero output projection so that every gradient is non-zero.
    std::mt19937_64 rng(1);
    std::normal_distribution<float> nd(0.0f, 0.1f);
    for (float& p : tr.model().params) p += nd(rng);
    std::vector<uint8_t> tokens(2 * 16);
    for (auto& x : tokens) x = static_cast<uint8_t>(rng() % 256);

    const size_t n = tr.model().params.size();
    std::vector<double> w(tr.model().params.begin(), tr.model().params.end()), m(n, 0.0), v(n, 0.0);
    std::vector<bool> decay(n, false);
    for (const TensorSpec& s : tr.model().table().tensors)
      for (int64_t i = 0; i < s.size; ++i)
        decay[static_cast<size_t>(s.offset + i)] = s.name.find("gain") == std::string::npos &&
                                                   s.name.find(".b") == std::string::npos &&
                                                   s.name.find("bias") == std::string::npos;
    for (int step = 0; step < 3; ++step) {
      const sparse_train_stats s = tr.train_step(tokens.data(), 2);
      const auto& g = tr.model().grads;  // this step's gradients, before clipping
      double norm = 0;
      for (float x : g) norm += static_cast<double>(x) * x;
      norm = std::sqrt(norm);
      CHECK(s.grad_norm == doctest::Approx(norm).epsilon(1e-9));
      CHECK(norm > t.clip_norm);
      const double clip = t.clip_norm / norm;
      const double lr = 0.01 * std::min(1.0, (step + 1) / 2.0);
      CHECK(s.learning_rate == doctest::Approx(lr));
      for (size_t i = 0; i < n; ++i) {
        double gi = g[i] * clip;
        if (opt == SPARSE_OPTIMIZER_ADAM && decay[i]) gi += 0.1 * w[i];
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.999 * v[i] + 0.001 * gi * gi;
        const double mh = m[i] / (1 - std::pow(0.9, step + 1));
        const double vh = v[i] / (1 - std::pow(0.999, step + 1));
        w[i] -= lr * (mh / (std::sqrt(vh) + 1e-8) +
                      (opt == SPARSE_OPTIMIZER_ADAMW && decay[i] ? 0.1 * w[i] : 0.0));
      }
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i) {
        // Each update moves a weight by at most ~lr; fp32 rounding of the trainer is far below.
        if (std::abs(tr.model().params[i] - w[i]) > 2e-6 + 1e-5 * std::abs(w[i])) {
          if (bad++ == 0)
            FAIL_CHECK("optimizer " << opt << " step " << step << " param " << i << ": "
                                    << tr.model().params[i] << " vs naive " << w[i]);
        }
        w[i] = tr.model().params[i];  // continue from the trainer's fp32 weights
      }
      CHECK(bad == 0);
    }
  }
}
