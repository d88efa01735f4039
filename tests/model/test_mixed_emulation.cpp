// Mixed precision emulated on the CPU, to check the model's plumbing without a GPU: the test
// backend of tests/model/bf16_emulation.hpp, whose "bf16" operations round each product operand
// to bf16 and hand it to the CPU's fp32 product, and whose bf16 attention widens its 16-bit
// tensors, runs the CPU's fp32 attention and rounds the results to bf16.
//
// Weights held once per step (ModelOps::hold_weights): one variant reads weight operands from the
// copy rounded at hold_weights, the other rounds every operand at every call (the reference).
// Rounding is deterministic, so the two must train bit for bit alike; a copy that missed an
// optimiser update (or that was made from other memory) would not.
//
// 16-bit attention: the model hands the backend bf16 copies of q, k, v (padded for half-size
// heads), out and dout and widens the bf16 results; the reference run's backend offers no bf16
// attention, so the model calls the fp32 attention, which this backend computes on operands it
// rounds itself and whose results it rounds in place. Both must train bit for bit alike.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend.hpp"
#include "model/config.hpp"
#include "model/trainer.hpp"
#include "tests/model/bf16_emulation.hpp"
#include "tests/model/tiny_model.hpp"

using namespace sparse;
using namespace sparse::model;
using testing::Attention;
using testing::Counts;
using testing::EmulatingBackend;

namespace {

sparse_model_config small(bool half_qk = false) {
  sparse_model_config c = testing::tiny_model_config();
  c.half_qk = half_qk ? 1 : 0;
  c.num_layers = 2;
  c.dropout = 0.1f;
  c.output_init_std = 0.02f;
  c.seed = 5;
  return c;
}

std::vector<uint8_t> tokens(int64_t count, uint64_t seed) {
  return testing::random_tokens(count, seed);
}

}  // namespace

TEST_CASE("weights held once per step train bit for bit like weights rounded at every product") {
  for (int micro : {0, 2}) {  // one micro-batch, and two per step
    CAPTURE(micro);
    sparse_train_config tc = default_train_config();
    tc.dtype = SPARSE_DTYPE_BF16;
    tc.learning_rate = 1e-2f;
    tc.micro_batch = micro;
    Counts held_counts, call_counts;
    EmulatingBackend held_backend(true, held_counts), call_backend(false, call_counts);
    Trainer held(small(), tc, held_backend), each_call(small(), tc, call_backend);
    const int steps = 4;
    for (int step = 0; step < steps; ++step) {
      const std::vector<uint8_t> data = tokens(4 * 16, 40 + static_cast<uint64_t>(step));
      const sparse_train_stats a = held.train_step(data.data(), 4);
      const sparse_train_stats b = each_call.train_step(data.data(), 4);
      CHECK(a.loss == b.loss);
      CHECK(a.grad_norm == b.grad_norm);
    }
    CHECK(held.model().params.to_host() == each_call.model().params.to_host());
    // One hold per step (not per micro-batch), each released; every product's weight operand
    // lay inside the held parameters.
    CHECK(held_counts.holds == steps);
    CHECK(held_counts.releases == steps);
    CHECK(held_counts.products > 0);
    CHECK(held_counts.held_operands == held_counts.products);

    // Evaluation and sampling hold the weights too: the same results both ways.
    const std::vector<uint8_t> eval = tokens(2 * 16, 99);
    CHECK(held.evaluate(eval.data(), 2) == each_call.evaluate(eval.data(), 2));
    std::vector<uint8_t> out_a(16), out_b(16);
    held.model().sample(eval.data(), 4, out_a.data(), 16, 1.0, 7);
    each_call.model().sample(eval.data(), 4, out_b.data(), 16, 1.0, 7);
    CHECK(out_a == out_b);
    CHECK(held_counts.holds == steps + 2);
    CHECK(held_counts.held_operands == held_counts.products);
  }
}

TEST_CASE("16-bit attention: bf16 copies in, bf16 results widened, as rounding around fp32") {
  for (bool half_qk : {false, true}) {  // half-size Q/K heads are padded before rounding
    CAPTURE(half_qk);
    sparse_train_config tc = default_train_config();
    tc.dtype = SPARSE_DTYPE_BF16;
    tc.learning_rate = 1e-2f;
    Counts c16, cref, c32;
    EmulatingBackend b16(true, c16, Attention::Bf16Tensors);
    EmulatingBackend bref(true, cref, Attention::RoundedFp32);
    EmulatingBackend b32(true, c32, Attention::Fp32);
    Trainer t16(small(half_qk), tc, b16), tref(small(half_qk), tc, bref),
        t32(small(half_qk), tc, b32);
    bool differs_from_fp32 = false;
    for (int step = 0; step < 3; ++step) {
      const std::vector<uint8_t> data = tokens(2 * 16, 70 + static_cast<uint64_t>(step));
      const sparse_train_stats a = t16.train_step(data.data(), 2);
      const sparse_train_stats b = tref.train_step(data.data(), 2);
      const sparse_train_stats f = t32.train_step(data.data(), 2);
      CHECK(a.loss == b.loss);
      CHECK(a.grad_norm == b.grad_norm);
      differs_from_fp32 = differs_from_fp32 || a.loss != f.loss || a.grad_norm != f.grad_norm;
    }
    CHECK(t16.model().params.to_host() == tref.model().params.to_host());
    const std::vector<uint8_t> eval = tokens(2 * 16, 123);
    CHECK(t16.evaluate(eval.data(), 2) == tref.evaluate(eval.data(), 2));
    // The bf16 run's attention went through bf16 tensors only (forward and backward of each of
    // the 2 layers per step, and the evaluation's forwards); the reference's through fp32 ones.
    CHECK(c16.attention32 == 0);
    CHECK(c16.attention16 == 3 * 2 * 2 + 2);
    CHECK(cref.attention16 == 0);
    CHECK(cref.attention32 == c16.attention16);
    // The rounding of the attention is visible: the unrounded fp32 attention trains differently.
    CHECK(differs_from_fp32);
  }
}

// 16-bit activation storage: in mixed precision every activation whose readers round it to bf16
// (the products' inputs y1, y2, gelu(u), and q, k, v and the attention output where the
// attention runs in bf16) is stored rounded. Rounding is idempotent, so the run must equal the
// reference that stores them in fp32 (and rounds around an fp32 attention) bit for bit, and its
// peak activation memory must be lower by 2 bytes per stored element.
TEST_CASE("activations stored in bf16 train bit for bit like fp32 storage, at less memory") {
  for (bool half_qk : {false, true}) {
    for (int recompute : {0, 1}) {
      CAPTURE(half_qk);
      CAPTURE(recompute);
      sparse_model_config config = small(half_qk);
      config.recompute = recompute;
      // Wide enough for a layer's activations to outweigh the logits (256 per token), where
      // the peak of a recomputing step lies in a layer's backward.
      config.d_model = 64;
      sparse_train_config tc = default_train_config();
      tc.dtype = SPARSE_DTYPE_BF16;
      tc.learning_rate = 1e-2f;
      Counts c16, c32;
      EmulatingBackend b16(true, c16, Attention::Bf16Tensors);
      EmulatingBackend b32(true, c32, Attention::RoundedFp32);
      Trainer t16(config, tc, b16), t32(config, tc, b32);
      t32.model().store_activations_in_16_bits = false;
      const int64_t batch = 3;
      int64_t peak16 = 0, peak32 = 0;
      for (int step = 0; step < 3; ++step) {
        const std::vector<uint8_t> data = tokens(batch * 16, 300 + static_cast<uint64_t>(step));
        const sparse_train_stats a = t16.train_step(data.data(), batch);
        const sparse_train_stats b = t32.train_step(data.data(), batch);
        CHECK(a.loss == b.loss);
        CHECK(a.grad_norm == b.grad_norm);
        peak16 = std::max(peak16, a.peak_activation_bytes);
        peak32 = std::max(peak32, b.peak_activation_bytes);
      }
      CHECK(t16.model().params.to_host() == t32.model().params.to_host());
      const std::vector<uint8_t> eval = tokens(2 * 16, 321);
      CHECK(t16.evaluate(eval.data(), 2) == t32.evaluate(eval.data(), 2));
      CHECK(c16.operands16 > 0);
      CHECK(c32.operands16 == 0);
      CHECK(c16.attention32 == 0);
      CHECK(c32.attention16 == 0);
      // Without recomputation every layer's cache is alive at the peak: per layer and
      // token, y1, v, the attention output and y2 (d each), gelu(u) (4 d), and q and k (d_qk
      // each, unless half-size heads: then stored padded to d in bf16, the same bytes) take 2
      // bytes instead of 4.
      const Dims& D = t16.model().dims();
      const int64_t per_token = 4 * D.d + D.inner + (half_qk ? 0 : 2 * D.dqk);
      const int64_t saved = D.layers * batch * D.n * per_token * 2;
      MESSAGE("peak fp32 storage ", peak32, " bf16 storage ", peak16, " predicted saving ", saved);
      // With recomputation the peak lies in a layer's backward, with one layer's cache alive.
      CHECK(peak32 - peak16 == (recompute ? saved / D.layers : saved));
    }
  }
}

TEST_CASE("a backend on another device: the model's attention tensors name that device") {
  // A CUDA context on device 3 refuses tensors that name device 0; the emulating backend checks
  // every attention tensor against its device ordinal (3 here), in fp32 and bf16, training and
  // evaluating.
  for (sparse_dtype dtype : {SPARSE_DTYPE_F32, SPARSE_DTYPE_BF16}) {
    CAPTURE(static_cast<int>(dtype));
    sparse_train_config tc = default_train_config();
    tc.dtype = dtype;
    Counts counts;
    EmulatingBackend backend(true, counts, Attention::Bf16Tensors);
    backend.set_device_index(3);
    Trainer trainer(small(), tc, backend);
    const std::vector<uint8_t> data = tokens(2 * 16, 7);
    trainer.train_step(data.data(), 2);
    CHECK(std::isfinite(trainer.evaluate(data.data(), 2)));
    CHECK(counts.attention16 + counts.attention32 > 0);
  }
}
