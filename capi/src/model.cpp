// The model, trainer, checkpoints and sampling in the C ABI.
#include "sparse/model.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "capi/src/guard.hpp"
#include "capi/src/model_internal.hpp"
#include "libsparse/backend.hpp"
#include "libsparse/model/checkpoint.hpp"
#include "libsparse/model/config.hpp"
#include "libsparse/model/trainer.hpp"
#include "sparse/experimental.h"

// A model holds a reference to its context (sparse::retain_context), so destroying the context
// first leaves the model working; the trainer goes before the reference.
struct sparse_model {
  explicit sparse_model(sparse_context* c) : context(sparse::retain_context(c)) {}
  sparse_model(const sparse_model&) = delete;
  sparse_model& operator=(const sparse_model&) = delete;
  ~sparse_model() {
    trainer.reset();
    sparse::release_context(context);
  }
  sparse_context* context;
  std::unique_ptr<sparse::model::Trainer> trainer;
};

namespace {

// sparse_train_stats as the first version of the ABI had it (up to peak_activation_bytes).
constexpr size_t kTrainStatsMinSize =
    offsetof(sparse_train_stats, peak_activation_bytes) + sizeof(int64_t);

sparse_model_config checked_config(const sparse_model_config* config) {
  sparse::require(config != nullptr, "config is NULL");
  sparse::require(config->struct_size == sizeof(sparse_model_config),
                  "config->struct_size = ", config->struct_size,
                  " does not match sizeof(sparse_model_config) = ", sizeof(sparse_model_config),
                  "; initialise with sparse_model_config_default()");
  sparse::model::validate_config(*config);
  return *config;
}

sparse_train_config checked_train(const sparse_train_config* train) {
  if (train == nullptr) return sparse::model::default_train_config();
  sparse::require(train->struct_size == sizeof(sparse_train_config),
                  "train->struct_size = ", train->struct_size,
                  " does not match sizeof(sparse_train_config) = ", sizeof(sparse_train_config),
                  "; initialise with sparse_train_config_default()");
  sparse::model::validate_train_config(*train);
  return *train;
}

sparse::model::Trainer& trainer_of(const sparse_model* model) {
  sparse::require(model != nullptr, "model is NULL");
  return *model->trainer;
}

}  // namespace

sparse::model::Trainer& sparse::capi::model_trainer(sparse_model* model) {
  return trainer_of(model);
}

namespace {

sparse::Backend& context_backend(sparse_context* context) {
  sparse::require(context != nullptr, "context is NULL");
  sparse::require(context->backend != nullptr, "context has no backend");
  return *context->backend;
}

void check_tokens(const sparse::model::Trainer& t, const uint8_t* tokens, int64_t batch) {
  sparse::require(tokens != nullptr, "tokens is NULL");
  sparse::require(batch >= 1, "batch = ", batch, " must be >= 1");
  sparse::require(batch <= (int64_t{1} << 40) / t.model().dims().n, "batch = ", batch,
                  " is too large");
}

// The loaders' common frame: arguments checked, *out NULL on failure, the model holding a
// reference to `context`; `load(backend)` builds its trainer.
template <typename Load>
sparse_status load_model(const char* function, sparse_context* context, const char* path,
                         sparse_model** out, Load&& load) {
  if (out != nullptr) *out = nullptr;
  return sparse::capi::guard(function, [&] {
    sparse::require(out != nullptr, "out is NULL");
    sparse::require(path != nullptr, "path is NULL");
    sparse::Backend& backend = context_backend(context);
    auto model = std::make_unique<sparse_model>(context);
    model->trainer = load(backend);
    *out = model.release();
  });
}

}  // namespace

extern "C" {

SPARSE_API sparse_status sparse_model_config_default(sparse_model_config* config) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(config != nullptr, "config is NULL");
    *config = sparse::model::default_config();
  });
}

SPARSE_API sparse_status sparse_model_config_preset(const char* name, sparse_model_config* config) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(name != nullptr, "name is NULL");
    sparse::require(config != nullptr, "config is NULL");
    *config = sparse::model::preset_config(name);
  });
}

SPARSE_API sparse_status sparse_model_config_parameter_count(const sparse_model_config* config,
                                                             int64_t* count) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(count != nullptr, "count is NULL");
    *count = sparse::model::param_table(checked_config(config)).total;
  });
}

SPARSE_API sparse_status sparse_train_config_default(sparse_train_config* config) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(config != nullptr, "config is NULL");
    *config = sparse::model::default_train_config();
  });
}

SPARSE_API sparse_status sparse_model_create(sparse_context* context,
                                             const sparse_model_config* config,
                                             const sparse_train_config* train, sparse_model** out) {
  if (out != nullptr) *out = nullptr;
  return sparse::capi::guard(__func__, [&] {
    sparse::require(out != nullptr, "out is NULL");
    sparse::Backend& backend = context_backend(context);
    const sparse_model_config c = checked_config(config);
    const sparse_train_config t = checked_train(train);
    auto model = std::make_unique<sparse_model>(context);
    model->trainer = std::make_unique<sparse::model::Trainer>(c, t, backend);
    *out = model.release();
  });
}

SPARSE_API void sparse_model_destroy(sparse_model* model) { delete model; }

SPARSE_API sparse_status sparse_model_parameter_count(const sparse_model* model, int64_t* count) {
  return sparse::capi::guard(__func__, [&] {
    const auto& t = trainer_of(model);
    sparse::require(count != nullptr, "count is NULL");
    *count = t.model().table().total;
  });
}

SPARSE_API sparse_status sparse_model_get_config(const sparse_model* model,
                                                 sparse_model_config* config) {
  return sparse::capi::guard(__func__, [&] {
    const auto& t = trainer_of(model);
    sparse::require(config != nullptr, "config is NULL");
    *config = t.model().config();
  });
}

SPARSE_API sparse_status sparse_model_get_train_config(const sparse_model* model,
                                                       sparse_train_config* config) {
  return sparse::capi::guard(__func__, [&] {
    const auto& t = trainer_of(model);
    sparse::require(config != nullptr, "config is NULL");
    *config = t.train_config();
  });
}

SPARSE_API sparse_status sparse_model_step(const sparse_model* model, int64_t* step) {
  return sparse::capi::guard(__func__, [&] {
    const auto& t = trainer_of(model);
    sparse::require(step != nullptr, "step is NULL");
    *step = t.step;
  });
}

SPARSE_API sparse_status sparse_model_train_step(sparse_model* model, const uint8_t* tokens,
                                                 int64_t batch, sparse_train_stats* stats) {
  return sparse::capi::guard(__func__, [&] {
    auto& t = trainer_of(model);
    check_tokens(t, tokens, batch);
    if (stats != nullptr)
      sparse::require(stats->struct_size >= kTrainStatsMinSize,
                      "stats->struct_size = ", stats->struct_size,
                      " is smaller than the first version's ", kTrainStatsMinSize,
                      " bytes (sizeof(sparse_train_stats) = ", sizeof(sparse_train_stats), ")");
    const sparse_train_stats s = t.train_step(tokens, batch);
    if (stats != nullptr) {
      // A caller built against an older header gets the fields its struct has.
      const uint32_t size = stats->struct_size;
      std::memcpy(stats, &s, std::min<size_t>(size, sizeof s));
      stats->struct_size = size;
    }
  });
}

SPARSE_API sparse_status sparse_model_evaluate(sparse_model* model, const uint8_t* tokens,
                                               int64_t batch, double* bits_per_dim) {
  return sparse::capi::guard(__func__, [&] {
    auto& t = trainer_of(model);
    check_tokens(t, tokens, batch);
    sparse::require(bits_per_dim != nullptr, "bits_per_dim is NULL");
    *bits_per_dim = t.evaluate(tokens, batch);
  });
}

SPARSE_API sparse_status sparse_model_token_bits(sparse_model* model, const uint8_t* tokens,
                                                 int64_t batch, double* bits, size_t count) {
  return sparse::capi::guard(__func__, [&] {
    auto& t = trainer_of(model);
    check_tokens(t, tokens, batch);
    sparse::require(bits != nullptr, "bits is NULL");
    const int64_t needed = batch * t.model().dims().n;
    if (count < static_cast<size_t>(needed))
      sparse::throw_error(SPARSE_ERR_BUFFER_TOO_SMALL, "bits holds ", count,
                          " values; batch * seq_len = ", needed);
    t.token_bits(tokens, batch, bits);
  });
}

SPARSE_API sparse_status sparse_model_measure_memory(sparse_model* model, const uint8_t* tokens,
                                                     int64_t batch, int64_t* peak_bytes) {
  return sparse::capi::guard(__func__, [&] {
    auto& t = trainer_of(model);
    check_tokens(t, tokens, batch);
    sparse::require(peak_bytes != nullptr, "peak_bytes is NULL");
    *peak_bytes = t.measure_memory(tokens, batch);
  });
}

SPARSE_API sparse_status sparse_sample_params_default(sparse_sample_params* params) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(params != nullptr, "params is NULL");
    std::memset(params, 0, sizeof *params);
    params->struct_size = sizeof *params;
    params->temperature = 1.0f;
    params->seed = 1;
  });
}

SPARSE_API sparse_status sparse_model_sample(sparse_model* model,
                                             const sparse_sample_params* params,
                                             const uint8_t* prompt, int64_t prompt_len,
                                             uint8_t* out, int64_t length) {
  return sparse::capi::guard(__func__, [&] {
    auto& t = trainer_of(model);
    sparse::require(out != nullptr, "out is NULL");
    sparse_sample_params p;
    sparse_sample_params_default(&p);
    if (params != nullptr) {
      sparse::require(params->struct_size == sizeof p,
                      "params->struct_size = ", params->struct_size,
                      " does not match sizeof(sparse_sample_params) = ", sizeof p,
                      "; initialise with sparse_sample_params_default()");
      for (unsigned char byte : params->reserved)
        sparse::require(byte == 0, "params->reserved must be all zero");
      p = *params;
    }
    sparse::model::ThreadScope threads(t.num_threads());
    t.model().sample(prompt, prompt_len, out, length, static_cast<double>(p.temperature), p.seed);
  });
}

SPARSE_API sparse_status sparse_model_save(const sparse_model* model, const char* path) {
  return sparse::capi::guard(__func__, [&] {
    const auto& t = trainer_of(model);
    sparse::require(path != nullptr, "path is NULL");
    sparse::model::save_checkpoint(t, path);
  });
}

SPARSE_API sparse_status sparse_model_load(sparse_context* context, const char* path,
                                           sparse_model** out) {
  return load_model(__func__, context, path, out, [&](sparse::Backend& backend) {
    try {
      return sparse::model::load_checkpoint(path, backend);
    } catch (const sparse::Error& e) {
      if (e.status() != SPARSE_ERR_UNSUPPORTED) throw;
      sparse::throw_error(SPARSE_ERR_UNSUPPORTED, e.what(),
                          "; sparse_experimental_model_load_dtype() loads a checkpoint in another "
                          "dtype (SPARSE_DTYPE_F32 runs on every backend)");
    }
  });
}

SPARSE_API sparse_status sparse_experimental_model_load_dtype(sparse_context* context,
                                                              const char* path, sparse_dtype dtype,
                                                              sparse_model** out) {
  // The dtype is read as an int: a C caller may pass any value, and loading one outside the enum
  // as sparse_dtype is undefined behaviour.
  const int products = sparse::enum_value(dtype);
  return load_model(__func__, context, path, out, [&](sparse::Backend& backend) {
    return sparse::model::load_checkpoint(path, backend, products);
  });
}

SPARSE_API sparse_status sparse_model_restore(sparse_model* model, const char* path) {
  return sparse::capi::guard(__func__, [&] {
    auto& t = trainer_of(model);
    sparse::require(path != nullptr, "path is NULL");
    sparse::model::restore_checkpoint(t, path);
  });
}

SPARSE_API sparse_status sparse_train_progress_line(const sparse_train_stats* stats,
                                                    int64_t total_steps, double elapsed_seconds,
                                                    char* buffer, size_t size) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(stats != nullptr, "stats is NULL");
    sparse::require(buffer != nullptr, "buffer is NULL");
    sparse::require(size >= 1, "size is 0");
    const double tok_s =
        stats->seconds > 0 ? static_cast<double>(stats->tokens) / stats->seconds : 0.0;
    std::string eta = "?";
    if (total_steps > 0 && stats->step > 0 && elapsed_seconds >= 0) {
      const double left = elapsed_seconds / static_cast<double>(stats->step) *
                          static_cast<double>(std::max<int64_t>(0, total_steps - stats->step));
      const long long s = static_cast<long long>(std::llround(left));
      char buf[64];
      std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", s / 3600, (s / 60) % 60, s % 60);
      eta = buf;
    }
    char steps[64];
    if (total_steps > 0)
      std::snprintf(steps, sizeof steps, "%lld/%lld", static_cast<long long>(stats->step),
                    static_cast<long long>(total_steps));
    else
      std::snprintf(steps, sizeof steps, "%lld", static_cast<long long>(stats->step));
    const int n = std::snprintf(
        buffer, size, "step %s | loss %.4f | bpd %.4f | lr %.3g | %.0f tok/s | ETA %s", steps,
        stats->loss, stats->bits_per_dim, stats->learning_rate, tok_s, eta.c_str());
    if (n < 0 || static_cast<size_t>(n) >= size)
      sparse::throw_error(SPARSE_ERR_BUFFER_TOO_SMALL, "the progress line needs ", n + 1,
                          " bytes, the buffer has ", size);
  });
}

}  // extern "C"
