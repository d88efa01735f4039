// Dynamic loss scaling in the trainer, on the CPU: the scale's halving and growth rule, a skipped
// step on a non-finite gradient (parameters and moments unchanged bit for bit), and a power-of-two
// scale that leaves training bit for bit equal to the unscaled run (scaling and unscaling by a
// power of two are exact). Also the refusal of 16-bit products on the CPU backend.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend.hpp"
#include "error.hpp"
#include "model/checkpoint.hpp"
#include "model/config.hpp"
#include "model/trainer.hpp"
#include "tests/model/tiny_model.hpp"

using namespace sparse;
using namespace sparse::model;

namespace {

sparse_model_config small() {
  sparse_model_config c = testing::tiny_model_config();
  c.dropout = 0.1f;
  c.output_init_std = 0.02f;
  return c;
}

std::vector<uint8_t> tokens(int64_t count, uint64_t seed) {
  return testing::random_tokens(count, seed);
}

}  // namespace

TEST_CASE("loss scaler: defaults per dtype, halving on overflow, doubling after the window") {
  sparse_train_config t = default_train_config();
  LossScaler f32 = LossScaler::from_config(t);
  CHECK_FALSE(f32.dynamic);
  CHECK(f32.scale == 1.0);
  t.dtype = SPARSE_DTYPE_BF16;
  CHECK_FALSE(LossScaler::from_config(t).dynamic);
  CHECK(LossScaler::from_config(t).scale == 1.0);
  t.dtype = SPARSE_DTYPE_F16;
  const LossScaler f16 = LossScaler::from_config(t);
  CHECK(f16.dynamic);
  CHECK(f16.scale == 65536.0);
  CHECK(f16.window == 1000);

  // Without dynamic scaling nothing is ever skipped.
  CHECK(f32.update(false));
  CHECK(f32.scale == 1.0);
  CHECK(f32.skipped == 0);

  t.dtype = SPARSE_DTYPE_F32;
  t.loss_scale = 8;
  t.loss_scale_window = 3;
  LossScaler s = LossScaler::from_config(t);
  REQUIRE(s.dynamic);
  CHECK(s.update(true));
  CHECK(s.update(true));
  CHECK(s.scale == 8.0);
  CHECK(s.update(true));  // the third clean step in a row doubles
  CHECK(s.scale == 16.0);
  CHECK(s.update(true));
  CHECK_FALSE(s.update(false));  // overflow: skipped, halved, the clean count restarts
  CHECK(s.scale == 8.0);
  CHECK(s.skipped == 1);
  CHECK(s.update(true));
  CHECK(s.update(true));
  CHECK(s.scale == 8.0);
  CHECK(s.update(true));
  CHECK(s.scale == 16.0);
  CHECK(s.skipped == 1);
}

TEST_CASE("a step whose gradient overflows is skipped, halves the scale, and changes nothing") {
  sparse_train_config tc = default_train_config();
  tc.loss_scale = 4;
  tc.loss_scale_window = 2;
  Trainer tr(small(), tc, 1);
  const std::vector<uint8_t> data = tokens(2 * 16, 11);
  tr.train_step(data.data(), 2);  // non-zero moments
  REQUIRE(tr.step == 1);
  REQUIRE(tr.loss_scaler.scale == 4.0);

  // A scale so large that the loss gradient itself overflows fp32: every gradient is inf or NaN.
  tr.loss_scaler.scale = 1e300;
  const std::vector<float> w0 = tr.model().params.to_host();
  const std::vector<float> m0 = tr.adam_m.to_host(), v0 = tr.adam_v.to_host();
  const sparse_train_stats s = tr.train_step(data.data(), 2);
  CHECK(s.step == 1);
  CHECK(tr.step == 1);
  CHECK(s.loss_scale == 1e300);
  CHECK(s.skipped_steps == 1);
  CHECK(std::isfinite(s.loss));
  CHECK_FALSE(std::isfinite(s.grad_norm));
  CHECK(tr.loss_scaler.scale == 0.5e300);
  CHECK(tr.model().params.to_host() == w0);
  CHECK(tr.adam_m.to_host() == m0);
  CHECK(tr.adam_v.to_host() == v0);

  // Two clean steps at a sane scale: applied, and the second doubles the scale.
  tr.loss_scaler.scale = 4;
  CHECK(tr.train_step(data.data(), 2).loss_scale == 4.0);
  CHECK(tr.step == 2);
  CHECK(tr.loss_scaler.scale == 4.0);
  tr.train_step(data.data(), 2);
  CHECK(tr.step == 3);
  CHECK(tr.loss_scaler.scale == 8.0);
  CHECK(tr.loss_scaler.skipped == 1);
  CHECK(tr.model().params.to_host() != w0);
}

TEST_CASE("a power-of-two loss scale trains bit for bit like no scaling (clipping included)") {
  for (float clip : {1.0f, 1e-3f}) {  // 1e-3: every step is clipped
    CAPTURE(clip);
    sparse_train_config plain = default_train_config();
    plain.clip_norm = clip;
    plain.learning_rate = 1e-2f;
    sparse_train_config scaled = plain;
    scaled.loss_scale = 1024;
    scaled.loss_scale_window = 2;  // the scale grows during the run
    Trainer a(small(), plain, 1), b(small(), scaled, 1);
    for (int step = 0; step < 4; ++step) {
      const std::vector<uint8_t> data = tokens(2 * 16, 100 + static_cast<uint64_t>(step));
      const sparse_train_stats sa = a.train_step(data.data(), 2);
      const sparse_train_stats sb = b.train_step(data.data(), 2);
      CHECK(sa.loss == sb.loss);
      CHECK(sa.grad_norm == sb.grad_norm);
      CHECK(sa.loss_scale == 1.0);
      CHECK(sb.loss_scale == (step < 2 ? 1024.0 : 2048.0));
    }
    CHECK(a.model().params.to_host() == b.model().params.to_host());
    CHECK(a.adam_v.to_host() == b.adam_v.to_host());
  }
}

TEST_CASE("the CPU backend refuses bf16 and fp16 matrix products, naming the reason") {
  for (sparse_dtype dtype : {SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
    sparse_train_config tc = default_train_config();
    tc.dtype = dtype;
    try {
      Trainer tr(small(), tc, 1);
      FAIL("the CPU backend accepted a 16-bit dtype");
    } catch (const Error& e) {
      CHECK(e.status() == SPARSE_ERR_UNSUPPORTED);
      CHECK(std::string(e.what()).find("fp32 and fp64 only") != std::string::npos);
      CHECK(std::string(e.what()).find("CUDA") != std::string::npos);
    }
  }
  sparse_train_config bad = default_train_config();
  bad.dtype = static_cast<sparse_dtype>(7);
  CHECK_THROWS_WITH_AS(Trainer(small(), bad, 1), doctest::Contains("dtype = 7"), Error);
  bad = default_train_config();
  bad.loss_scale = -1;
  CHECK_THROWS_WITH_AS(Trainer(small(), bad, 1), doctest::Contains("loss_scale = -1"), Error);
  // Not a power of two (the unscaled gradient would be rounded), or so small that the scaled
  // loss gradient underflows.
  for (float scale : {3.0f, 1000.0f, 0.3f, std::ldexp(1.0f, -25), 1.4e-45f}) {
    CAPTURE(scale);
    bad.loss_scale = scale;
    CHECK_THROWS_WITH_AS(Trainer(small(), bad, 1), doctest::Contains("power of two"), Error);
  }
  for (float scale : {std::ldexp(1.0f, -24), 0.5f, 1.0f, 65536.0f, std::ldexp(1.0f, 127)}) {
    CAPTURE(scale);
    bad.loss_scale = scale;
    CHECK_NOTHROW(Trainer(small(), bad, 1));
  }
}

TEST_CASE("a run resumed from a checkpoint continues the loss scaler exactly") {
  // A scale that starts near fp32's limit and doubles every 2 clean steps until the loss
  // gradient overflows (a scale of 2^133 makes the scaled loss gradient inf in fp32): the run
  // alternates skips, halvings and doublings. Checkpoints taken mid-window must restore the
  // scale, the clean-step count and the skipped steps.
  sparse_train_config tc = default_train_config();
  tc.loss_scale = std::ldexp(1.0f, 126);
  tc.loss_scale_window = 2;
  tc.learning_rate = 1e-2f;
  const int iterations = 16;
  auto batch = [](int i) { return tokens(2 * 16, 500 + static_cast<uint64_t>(i)); };

  Trainer whole(small(), tc, 1);
  std::vector<sparse_train_stats> want;
  for (int i = 0; i < iterations; ++i) want.push_back(whole.train_step(batch(i).data(), 2));
  REQUIRE(whole.loss_scaler.skipped > 0);
  REQUIRE(whole.step >= iterations / 2);

  // Interrupt at every iteration that leaves a part-counted window (a clean step counted) after a
  // skip: a scale restored without its clean count would double at a different step.
  int resumed_runs = 0;
  const std::unique_ptr<Backend> cpu = make_cpu_backend(1, 0);
  for (int cut = 1; cut < iterations; ++cut) {
    Trainer first(small(), tc, 1);
    for (int i = 0; i < cut; ++i) first.train_step(batch(i).data(), 2);
    if (first.loss_scaler.clean == 0 || first.loss_scaler.skipped == 0) continue;
    CAPTURE(cut);
    const std::string path = "loss_scaler_resume.safetensors";
    save_checkpoint(first, path);
    // Both ways of resuming: a new trainer from the file, and a fresh trainer restored from it.
    std::unique_ptr<Trainer> loaded = load_checkpoint(path, *cpu);
    Trainer restored(small(), tc, 1);
    restore_checkpoint(restored, path);
    std::remove(path.c_str());
    for (Trainer* t : {loaded.get(), &restored}) {
      CHECK(t->loss_scaler.scale == first.loss_scaler.scale);
      CHECK(t->loss_scaler.clean == first.loss_scaler.clean);
      CHECK(t->loss_scaler.skipped == first.loss_scaler.skipped);
      for (int i = cut; i < iterations; ++i) {
        const sparse_train_stats s = t->train_step(batch(i).data(), 2);
        CHECK(s.loss_scale == want[static_cast<size_t>(i)].loss_scale);
        CHECK(s.skipped_steps == want[static_cast<size_t>(i)].skipped_steps);
        CHECK(s.step == want[static_cast<size_t>(i)].step);
        CHECK(s.loss == want[static_cast<size_t>(i)].loss);
      }
      CHECK(t->loss_scaler.scale == whole.loss_scaler.scale);
      CHECK(t->model().params.to_host() == whole.model().params.to_host());
      CHECK(t->adam_m.to_host() == whole.adam_m.to_host());
      CHECK(t->adam_v.to_host() == whole.adam_v.to_host());
    }
    ++resumed_runs;
  }
  CHECK(resumed_runs >= 2);
}

TEST_CASE("a checkpoint without loss-scaler state resumes from the configured scale") {
  // A run without dynamic scaling saves no scale: restored into a run that scales, the trainer
  // keeps its configured initial scale (as for files written before the scaler was saved).
  const std::string path = "loss_scaler_none.safetensors";
  Trainer plain(small(), default_train_config(), 1);
  const std::vector<uint8_t> data = tokens(2 * 16, 7);
  plain.train_step(data.data(), 2);
  save_checkpoint(plain, path);
  sparse_train_config tc = default_train_config();
  tc.loss_scale = 256;
  Trainer scaled(small(), tc, 1);
  restore_checkpoint(scaled, path);
  std::remove(path.c_str());
  CHECK(scaled.step == 1);
  CHECK(scaled.loss_scaler.scale == 256.0);
  CHECK(scaled.loss_scaler.clean == 0);
  CHECK(scaled.loss_scaler.skipped == 0);
}
