// The trainer: Adam/AdamW, linear warm-up then cosine decay, global-norm gradient clipping,
// weight decay, gradient accumulation over micro-batches, evaluation in bits per dim. Runs on the
// backend it is given, through its model operations only.
//
// Data-parallel training slots in at three places, each a single point here: the data a rank sees
// is its shard of the global batch (the caller passes it; every rank passes the same batch size),
// gradients and the loss are summed over the ranks by the reducer after the backward and before
// clipping and the update, and only rank 0 writes checkpoints (Trainer::writes_checkpoints()).
//
// With N ranks of batch b, a step equals one process's step on the N * b sequences of the ranks
// in rank order with micro_batch b: the gradient is scaled by 1 / (N * b * seq_len), micro-batch
// k of rank r draws the dropout stream of global micro-batch r * (b / micro_batch) + k, and
// micro-batch gradients are computed separately and added in order (as the MPI reducer adds the
// ranks' gradients), so with one micro-batch per rank the two agree bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "libsparse/backend.hpp"
#include "libsparse/model/buffer.hpp"
#include "libsparse/model/config.hpp"
#include "libsparse/model/transformer.hpp"
#include "libsparse/parallel/reducer.hpp"
#include "libsparse/threads.hpp"

namespace sparse::model {

// The data-parallel gradient reducer (libsparse/parallel/reducer.hpp).
using sparse::GradientReducer;

// Learning rate of optimiser step `step` (0-based): linear warm-up to the peak over warmup_steps,
// then cosine decay to 0 at total_steps (constant when total_steps == 0).
double scheduled_learning_rate(const sparse_train_config& t, int64_t step);

// Dynamic loss scaling (mixed precision with fp16 products): the loss gradient is multiplied by
// `scale` so that small gradients survive 16-bit rounding, and the gradients are divided by it
// before clipping and the update. A step whose gradient has a non-finite element is skipped (no
// update, the step counter unchanged) and halves the scale; `window` clean steps in a row double
// it. Without dynamic scaling the scale stays 1 and no step is skipped. Backend-independent: it
// sees only the squared gradient norm, which is non-finite exactly when an element is.
struct LossScaler {
  bool dynamic = false;
  double scale = 1;
  int64_t window = 1000;
  int64_t clean = 0;    // clean steps since the last change of the scale
  int64_t skipped = 0;  // steps skipped so far

  // From the configuration: dynamic from loss_scale when it is > 0, else from 65536 for F16;
  // off for F32 and BF16 (whose exponent range is fp32's).
  static LossScaler from_config(const sparse_train_config& t);
  // Records a step's outcome; returns whether its gradient may be applied.
  bool update(bool finite);
};

class Trainer {
 private:
  // Declared first so that it is destroyed last, after every buffer it allocated.
  std::unique_ptr<Backend> own_backend_;

 public:
  // Trains on `backend` (not owned; it must outlive the trainer). Throws SPARSE_ERR_UNSUPPORTED
  // with the reasons when the backend cannot run the model.
  Trainer(const sparse_model_config& config, const sparse_train_config& train, Backend& backend);
  // Trains on a private CPU backend with num_threads threads (0: all hardware threads).
  Trainer(const sparse_model_config& config, const sparse_train_config& train, int num_threads);

  Transformer<float>& model() { return model_; }
  const Transformer<float>& model() const { return model_; }
  const sparse_train_config& train_config() const { return train_; }
  int num_threads() const { return threads_; }

  // Adam moments, same layout as the parameters, in the backend's memory.
  Buffer<float> adam_m, adam_v;
  int64_t step = 0;
  // The loss scale and the skipped steps (saved in checkpoints, so a resumed run continues with
  // the scale, clean-step count and skipped steps it had).
  LossScaler loss_scaler;

  // Replaces the reducer (the single-process one by default); nullptr restores that. Refused
  // during train_step() (from a reducer's callback), as are train_step() and measure_memory().
  void set_reducer(std::shared_ptr<GradientReducer> r);
  // Throws while a train_step() is running: a reducer's callback calling back
  // into the model must not replace the reducer, the parameters or the gradient it is summing.
  void require_not_stepping() const;
  const GradientReducer& reducer() const { return *reducer_; }
  bool writes_checkpoints() const { return reducer_->rank() == 0; }

  // One optimiser step on `batch` sequences (batch * seq_len bytes): this rank's shard of a
  // global batch of batch * reducer().size() sequences. The statistics' loss is the global mean;
  // tokens counts this rank's.
  sparse_train_stats train_step(const uint8_t* tokens, int64_t batch);
  // Mean bits per dim without dropout; parameters unchanged.
  double evaluate(const uint8_t* tokens, int64_t batch);
  // -log2 p(token | earlier tokens of its sequence) for each of the batch * seq_len tokens, from
  // the same forward pass as evaluate (no dropout; parameters unchanged).
  void token_bits(const uint8_t* tokens, int64_t batch, double* bits);
  // Peak activation bytes of one forward/backward pass (gradients are discarded).
  int64_t measure_memory(const uint8_t* tokens, int64_t batch);

 private:
  Trainer(const sparse_model_config& config, const sparse_train_config& train,
          std::unique_ptr<Backend> own, Backend* backend);

  Backend* backend_;
  int threads_;
  sparse_train_config train_;
  Transformer<float> model_;
  Buffer<uint8_t> decay_mask_;
  // The sum of the micro-batch gradients of a step with more than one (allocated on first use).
  Buffer<float> grad_sum_;
  std::shared_ptr<GradientReducer> reducer_;
  bool stepping_ = false;  // a train_step() is running
};

// The CPU operations thread their loops and Eigen's products with OpenMP; sparse::ThreadScope
// (libsparse/threads.hpp) holds them to the trainer's thread count.
using sparse::ThreadScope;

}  // namespace sparse::model
