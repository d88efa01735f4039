// The trainer: Adam/AdamW, linear warm-up then cosine decay, global-norm gradient clipping,
// weight decay, gradient accumulation over micro-batches, evaluation in bits per dim. Runs on the
// backend it is given, through its model operations only.
//
// Data-parallel training slots in at three places, each a single point here: the data a rank sees
// is its shard of the batch (the caller passes it), gradients are reduced in
// GradientReducer::all_reduce_mean() before clipping and the update, and only rank 0 writes
// checkpoints (Trainer::writes_checkpoints()).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "libsparse/backend.hpp"
#include "libsparse/model/buffer.hpp"
#include "libsparse/model/config.hpp"
#include "libsparse/model/transformer.hpp"
#include "libsparse/threads.hpp"

namespace sparse::model {

// Sums gradients over the ranks of a data-parallel group and divides by the group size. The
// single-process version does nothing.
class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  virtual void all_reduce_mean(float* /*grads*/, int64_t /*count*/) {}
  // Reduces one double (the loss) the same way.
  virtual double all_reduce_mean(double value) { return value; }
};

// Learning rate of optimiser step `step` (0-based): linear warm-up to the peak over warmup_steps,
// then cosine decay to 0 at total_steps (constant when total_steps == 0).
double scheduled_learning_rate(const sparse_train_config& t, int64_t step);

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

  void set_reducer(std::unique_ptr<GradientReducer> r) { reducer_ = std::move(r); }
  bool writes_checkpoints() const { return reducer_->rank() == 0; }

  // One optimiser step on `batch` sequences (batch * seq_len bytes).
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
  std::unique_ptr<GradientReducer> reducer_;
};

// The CPU operations thread their loops and Eigen's products with OpenMP; sparse::ThreadScope
// (libsparse/threads.hpp) holds them to the trainer's thread count.
using sparse::ThreadScope;

}  // namespace sparse::model
