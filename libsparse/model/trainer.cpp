// The trainer (see trainer.hpp).
#include "libsparse/model/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <vector>

#include "libsparse/error.hpp"
#include "libsparse/model_ops.hpp"

namespace sparse::model {

double scheduled_learning_rate(const sparse_train_config& t, int64_t step) {
  const double peak = t.learning_rate;
  if (step < t.warmup_steps)
    return peak * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  if (t.total_steps <= 0) return peak;
  const double span = static_cast<double>(std::max<int64_t>(1, t.total_steps - t.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - t.warmup_steps) / span);
  return peak * 0.5 * (1.0 + std::cos(M_PI * progress));
}

namespace {

const sparse_train_config& validated(const sparse_train_config& t) {
  validate_train_config(t);
  return t;
}

}  // namespace

LossScaler LossScaler::from_config(const sparse_train_config& t) {
  LossScaler s;
  s.dynamic = t.loss_scale > 0 || t.dtype == SPARSE_DTYPE_F16;
  s.scale = t.loss_scale > 0 ? static_cast<double>(t.loss_scale) : s.dynamic ? 65536.0 : 1.0;
  s.window = t.loss_scale_window > 0 ? t.loss_scale_window : 1000;
  return s;
}

bool LossScaler::update(bool finite) {
  if (!dynamic) return true;
  if (!finite) {
    scale *= 0.5;
    clean = 0;
    ++skipped;
    return false;
  }
  if (++clean >= window) {
    scale *= 2.0;
    clean = 0;
  }
  return true;
}

Trainer::Trainer(const sparse_model_config& config, const sparse_train_config& train,
                 Backend& backend)
    : Trainer(config, train, nullptr, &backend) {}

Trainer::Trainer(const sparse_model_config& config, const sparse_train_config& train,
                 int num_threads)
    : Trainer(config, train, make_cpu_backend(num_threads, config.seed), nullptr) {}

Trainer::Trainer(const sparse_model_config& config, const sparse_train_config& train,
                 std::unique_ptr<Backend> own, Backend* backend)
    : own_backend_(std::move(own)),
      backend_(backend != nullptr ? backend : own_backend_.get()),
      threads_(backend_->num_threads()),
      train_(validated(train)),
      model_(config, backend_, train_.dtype),
      reducer_(make_single_process_reducer()) {
  loss_scaler = LossScaler::from_config(train_);
  model_.init_params(config.seed);
  const int64_t n = static_cast<int64_t>(model_.params.size());
  adam_m = Buffer<float>(backend_, n);
  adam_v = Buffer<float>(backend_, n);
  AlignedVector<uint8_t> mask(static_cast<size_t>(n), 0);
  for (const TensorSpec& s : model_.table().tensors)
    if (s.decay) std::fill(mask.begin() + s.offset, mask.begin() + s.offset + s.size, 1);
  decay_mask_ = Buffer<uint8_t>(backend_, n);
  decay_mask_ = mask;
}

void Trainer::require_not_stepping() const {
  require(!stepping_,
          "refused during a training step of this model (a gradient reducer callback calling "
          "back into the model); call it before or after sparse_model_train_step");
}

void Trainer::set_reducer(std::shared_ptr<GradientReducer> r) {
  require_not_stepping();
  reducer_ =
      r != nullptr ? std::move(r) : std::shared_ptr<GradientReducer>(make_single_process_reducer());
}

sparse_train_stats Trainer::train_step(const uint8_t* tokens, int64_t batch) {
  require(tokens != nullptr, "tokens is NULL");
  require(batch >= 1, "batch = ", batch, " must be >= 1");
  const int64_t micro = train_.micro_batch > 0 ? train_.micro_batch : batch;
  require(batch % micro == 0, "micro_batch = ", micro, " does not divide batch = ", batch);
  require_not_stepping();
  stepping_ = true;
  struct Stepping {
    bool& flag;
    ~Stepping() { flag = false; }
  } stepping{stepping_};
  ThreadScope threads(threads_);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t n = model_.dims().n;
  const sparse_model_config& cfg = model_.config();

  ModelOps<float>& model_ops = model_.ops();
  float* grads = model_.grads.data();
  const int64_t count = static_cast<int64_t>(model_.grads.size());
  const size_t grad_bytes = static_cast<size_t>(count) * sizeof(float);
  const sparse_memory memory = backend_->memory_kind();
  model_.meter.reset();
  // Scaled by the global batch, so that the sum over the ranks is the mean gradient.
  const int64_t global_batch = batch * reducer_->size();
  // With loss scaling the loss gradient carries the scale (a power of two), divided out below.
  const double loss_scale = loss_scaler.scale;
  const float grad_scale = static_cast<float>(loss_scale / static_cast<double>(global_batch * n));
  const int64_t micros = batch / micro;
  const int64_t first_micro = static_cast<int64_t>(reducer_->rank()) * micros;
  if (micros > 1 && grad_sum_.size() != model_.grads.size())
    grad_sum_ = Buffer<float>(backend_, count);
  double loss_sum = 0;
  // With a reducer that overlaps, the last micro-batch's backward pass hands it each parameter
  // range as soon as that range is final: the micro-batch sum of the range (added in the same
  // order as below) is formed first and begun; the reducer owns the range until wait().
  const bool overlap = reducer_->overlaps();
  bool begun = false;
  const Transformer<float>::RangeReady begin = [&](int64_t offset, int64_t size) {
    if (micros > 1) {
      model_ops.accumulate(grad_sum_.data() + offset, grads + offset, size);
      backend_->copy(grads + offset, memory, grad_sum_.data() + offset, memory,
                     static_cast<size_t>(size) * sizeof(float));
    }
    reducer_->begin(*backend_, grads + offset, size);
    begun = true;
  };
  try {
    // The weights are rounded (mixed precision) once for every micro-batch of the step.
    std::optional<Transformer<float>::WeightsHeld> held;
    held.emplace(model_);
    for (int64_t mb = 0; mb < micros; ++mb) {
      const uint64_t seed = mix_seed(cfg.seed, 0xd50, static_cast<uint64_t>(step),
                                     static_cast<uint64_t>(first_micro + mb));
      const bool overlapped = overlap && mb == micros - 1;
      backend_->zero(grads, grad_bytes);
      loss_sum += model_.forward_backward(tokens + mb * micro * n, micro, grad_scale, seed, true,
                                          overlapped ? begin : Transformer<float>::RangeReady());
      // Each micro-batch's gradient on its own, then added in order: sum = g0 + g1 + ... exactly
      // as the reducer adds the ranks' gradients.
      if (micros == 1 || overlapped) continue;
      if (mb == 0)
        backend_->copy(grad_sum_.data(), memory, grads, memory, grad_bytes);
      else
        model_ops.accumulate(grad_sum_.data(), grads, count);
    }
    held.reset();  // before the update writes the parameters
    // The one reduction point: clipping and the update below see the global gradient.
    if (overlap) {
      begun = false;
      reducer_->wait(*backend_);
    } else {
      if (micros > 1) backend_->copy(grads, memory, grad_sum_.data(), memory, grad_bytes);
      reducer_->all_reduce_sum(*backend_, grads, count);
    }
  } catch (...) {
    // No sum may stay in flight over the gradient once the step has failed; the first error is
    // the one reported.
    if (begun) {
      try {
        reducer_->wait(*backend_);
      } catch (...) {  // the reducer's own failure after the first one
      }
    }
    throw;
  }
  const double loss = reducer_->all_reduce_sum(loss_sum) / static_cast<double>(global_batch * n);

  const double squared = model_ops.squared_norm(grads, count);
  const bool finite = std::isfinite(squared);
  const double norm = std::sqrt(squared) / loss_scale;
  // Unscaling folds into the clipping factor the update multiplies the gradient by (1 / scale
  // is exact for a power of two); without loss scaling this is the plain clipping factor.
  const double clip_factor =
      (train_.clip_norm > 0 && norm > train_.clip_norm) ? train_.clip_norm / norm : 1.0;
  const float clip = loss_scale == 1.0 ? static_cast<float>(clip_factor)
                                       : static_cast<float>(clip_factor / loss_scale);

  const double lr = scheduled_learning_rate(train_, step);
  const bool apply = loss_scaler.update(finite);
  ops::AdamStep update;
  update.lr = static_cast<float>(lr);
  update.beta1 = train_.beta1;
  update.beta2 = train_.beta2;
  update.c1 = static_cast<float>(1.0 - std::pow(static_cast<double>(train_.beta1), step + 1));
  update.c2 = static_cast<float>(1.0 - std::pow(static_cast<double>(train_.beta2), step + 1));
  update.epsilon = train_.epsilon;
  update.weight_decay = train_.weight_decay;
  update.clip = clip;
  update.adamw = train_.optimizer == SPARSE_OPTIMIZER_ADAMW;
  if (apply) {
    model_ops.adam_update(model_.params.data(), grads, adam_m.data(), adam_v.data(),
                          decay_mask_.data(), count, update);
    ++step;
  }

  sparse_train_stats s{};
  s.struct_size = sizeof s;
  s.step = step;
  s.loss = loss;
  s.bits_per_dim = loss / std::log(2.0);
  s.grad_norm = norm;
  s.learning_rate = lr;
  s.tokens = batch * n;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.peak_activation_bytes = model_.meter.peak;
  s.loss_scale = loss_scale;
  s.skipped_steps = loss_scaler.skipped;
  return s;
}

double Trainer::evaluate(const uint8_t* tokens, int64_t batch) {
  require(tokens != nullptr, "tokens is NULL");
  require(batch >= 1, "batch = ", batch, " must be >= 1");
  ThreadScope threads(threads_);
  const int64_t n = model_.dims().n;
  const int64_t micro =
      train_.micro_batch > 0 ? std::min<int64_t>(train_.micro_batch, batch) : batch;
  double sum = 0;
  const Transformer<float>::WeightsHeld held(model_);
  for (int64_t b = 0; b < batch; b += micro) {
    const int64_t cnt = std::min(micro, batch - b);
    sum += model_.forward(tokens + b * n, cnt, 0, false, nullptr);
  }
  return sum / static_cast<double>(batch * n) / std::log(2.0);
}

void Trainer::token_bits(const uint8_t* tokens, int64_t batch, double* bits) {
  require(tokens != nullptr, "tokens is NULL");
  require(bits != nullptr, "bits is NULL");
  require(batch >= 1, "batch = ", batch, " must be >= 1");
  ThreadScope threads(threads_);
  const int64_t n = model_.dims().n;
  const int64_t vocab = Dims::vocab;
  const int64_t micro =
      train_.micro_batch > 0 ? std::min<int64_t>(train_.micro_batch, batch) : batch;
  std::vector<float> logits(static_cast<size_t>(micro * n * vocab));
  const Transformer<float>::WeightsHeld held(model_);
  for (int64_t b = 0; b < batch; b += micro) {
    const int64_t cnt = std::min(micro, batch - b);
    model_.forward(tokens + b * n, cnt, 0, false, logits.data());
    // log-softmax in double of each row, at the row's target token.
    for (int64_t r = 0; r < cnt * n; ++r) {
      const float* z = logits.data() + r * vocab;
      double m = z[0];
      for (int64_t c = 1; c < vocab; ++c) m = std::max(m, static_cast<double>(z[c]));
      double sum = 0;
      for (int64_t c = 0; c < vocab; ++c) sum += std::exp(static_cast<double>(z[c]) - m);
      const double nats = m + std::log(sum) - static_cast<double>(z[tokens[b * n + r]]);
      bits[b * n + r] = nats / std::log(2.0);
    }
  }
}

int64_t Trainer::measure_memory(const uint8_t* tokens, int64_t batch) {
  require_not_stepping();
  require(tokens != nullptr, "tokens is NULL");
  require(batch >= 1, "batch = ", batch, " must be >= 1");
  ThreadScope threads(threads_);
  Buffer<float> saved = model_.grads;
  model_.meter.reset();
  model_.forward_backward(tokens, batch, 1.0f, 0, true);
  model_.grads = std::move(saved);
  return model_.meter.peak;
}

}  // namespace sparse::model
