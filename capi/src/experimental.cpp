// The experimental entry points (sparse/experimental.h): argument checks, then the engine.
#include "sparse/experimental.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "capi/src/guard.hpp"
#include "capi/src/model_internal.hpp"
#include "capi/src/tensor_checks.hpp"
#include "libsparse/backend.hpp"
#include "libsparse/check/op_check.hpp"
#include "libsparse/file_io.hpp"
#include "libsparse/layout.hpp"
#include "libsparse/model/config.hpp"
#include "libsparse/model/transformer.hpp"
#include "libsparse/parallel/reducer.hpp"
#include "libsparse/resources.hpp"
#include "libsparse/tensor.hpp"

namespace {

template <size_t N>
void require_zero(const uint8_t (&bytes)[N], const char* what) {
  for (uint8_t b : bytes) sparse::require(b == 0, what, " must be all zero");
}

void require_string(const char* s, const char* name) {
  sparse::require(s != nullptr, name, " is NULL");
}

// A tensor of the dense baseline: shaped and placed like q.
sparse::TensorView like_q(const sparse_tensor* t, const char* name, const sparse::TensorView& q) {
  const sparse::TensorView v = sparse::check_tensor(t, name, 4);
  sparse::capi::check_like(v, name, q);
  return v;
}

// The overlap callbacks took 16 of the 32 reserved bytes: the struct keeps its size.
static_assert(sizeof(void*) != 8 || sizeof(sparse_experimental_gradient_reducer) == 72,
              "sparse_experimental_gradient_reducer changed size");

// The caller's C reducer as the trainer's GradientReducer. Device gradients are staged through
// host memory when the hook accepts host memory only.
class HookReducer final : public sparse::GradientReducer {
 public:
  explicit HookReducer(const sparse_experimental_gradient_reducer& hook) : hook_(hook) {}
  int rank() const override { return hook_.rank; }
  int size() const override { return hook_.size; }
  bool overlaps() const override { return hook_.begin_all_reduce_sum != nullptr; }

  void begin(sparse::Backend& backend, float* x, int64_t count) override {
    backend.synchronize();  // the range is complete before the hook sees it
    const sparse_memory memory = backend.memory_kind();
    if (memory == SPARSE_MEMORY_HOST || hook_.memory == SPARSE_MEMORY_DEVICE) {
      call_begin(x, count, memory);
      return;
    }
    // Each range has its own host buffer, kept across steps (the ranges repeat); the deque grows
    // without moving the buffers of the ranges in flight.
    if (staged_ == ranges_.size()) ranges_.emplace_back();
    Staged& r = ranges_[staged_];
    r.device = x;
    r.host.resize(static_cast<size_t>(count));
    backend.copy(r.host.data(), SPARSE_MEMORY_HOST, x, memory,
                 static_cast<size_t>(count) * sizeof(float));
    call_begin(r.host.data(), count, SPARSE_MEMORY_HOST);
    ++staged_;  // in flight only once begun: a refused range is not copied back by wait()
  }

  void wait(sparse::Backend& backend) override {
    const size_t staged = staged_;
    staged_ = 0;
    char error[kErrorSize] = "";
    const int s = sparse::enum_value(hook_.wait_all_reduce_sum(hook_.user, error, sizeof error));
    if (s != SPARSE_OK) fail(s, error, "wait_all_reduce_sum");
    for (size_t i = 0; i < staged; ++i)
      backend.copy(ranges_[i].device, backend.memory_kind(), ranges_[i].host.data(),
                   SPARSE_MEMORY_HOST, ranges_[i].host.size() * sizeof(float));
  }

  void all_reduce_sum(sparse::Backend& backend, float* x, int64_t count) override {
    backend.synchronize();  // the backward pass is complete before the hook sees the gradient
    const sparse_memory memory = backend.memory_kind();
    const size_t bytes = static_cast<size_t>(count) * sizeof(float);
    if (memory == SPARSE_MEMORY_HOST || hook_.memory == SPARSE_MEMORY_DEVICE) {
      call(x, count, memory);
      return;
    }
    staging_.resize(static_cast<size_t>(count));
    backend.copy(staging_.data(), SPARSE_MEMORY_HOST, x, memory, bytes);
    call(staging_.data(), count, SPARSE_MEMORY_HOST);
    backend.copy(x, memory, staging_.data(), SPARSE_MEMORY_HOST, bytes);
  }

  double all_reduce_sum(double value) override {
    char error[kErrorSize] = "";
    const int s =
        sparse::enum_value(hook_.all_reduce_sum_f64(hook_.user, &value, 1, error, sizeof error));
    if (s != SPARSE_OK) fail(s, error, "all_reduce_sum_f64");
    return value;
  }

 private:
  static constexpr size_t kErrorSize = 2048;

  void call_begin(float* x, int64_t count, sparse_memory memory) {
    char error[kErrorSize] = "";
    const int s = sparse::enum_value(
        hook_.begin_all_reduce_sum(hook_.user, x, count, memory, error, sizeof error));
    if (s != SPARSE_OK) fail(s, error, "begin_all_reduce_sum");
  }

  void call(float* x, int64_t count, sparse_memory memory) {
    char error[kErrorSize] = "";
    const int s =
        sparse::enum_value(hook_.all_reduce_sum(hook_.user, x, count, memory, error, sizeof error));
    if (s != SPARSE_OK) fail(s, error, "all_reduce_sum");
  }

  // `s` is read as an int: a C callback may return any value, and one outside the enumeration
  // cannot be loaded as sparse_status (undefined behaviour).
  [[noreturn]] static void fail(int s, char (&error)[kErrorSize], const char* what) {
    error[kErrorSize - 1] = '\0';
    // A value outside the enumeration would reach the caller as a status no caller knows.
    if (s > SPARSE_OK || s < SPARSE_ERR_BUFFER_TOO_SMALL) {
      sparse::throw_error(SPARSE_ERR_INTERNAL, "the gradient reducer's ", what, " returned status ",
                          s, ", which is not a sparse_status",
                          error[0] != '\0' ? " (its message: " : "", error,
                          error[0] != '\0' ? ")" : "");
    }
    const auto status = static_cast<sparse_status>(s);
    if (error[0] != '\0') sparse::throw_error(status, error);
    sparse::throw_error(status, "the gradient reducer's ", what, " failed (",
                        sparse_status_string(status), ")");
  }

  // A range begun from device memory: where it goes back after the wait, and its host copy.
  struct Staged {
    float* device = nullptr;
    std::vector<float> host;
  };

  sparse_experimental_gradient_reducer hook_;
  std::vector<float> staging_;
  std::deque<Staged> ranges_;
  size_t staged_ = 0;  // ranges_[0, staged_) are in flight
};

}  // namespace

extern "C" {

SPARSE_API sparse_status sparse_experimental_dense_attention(
    sparse_context* context, float scale, int backward, const sparse_tensor* q,
    const sparse_tensor* k, const sparse_tensor* v, sparse_tensor* out, sparse_tensor* lse,
    const sparse_tensor* dout, sparse_tensor* dq, sparse_tensor* dk, sparse_tensor* dv) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr && context->backend != nullptr, "context is NULL");
    sparse::require(std::isfinite(scale), "scale = ", scale, " is not finite");
    sparse::DenseBaselineArgs a;
    a.q = sparse::check_tensor(q, "q", 4);
    a.k = like_q(k, "k", a.q);
    a.v = like_q(v, "v", a.q);
    a.out = like_q(out, "out", a.q);
    a.lse = sparse::capi::check_lse(lse, a.q);
    a.backward = backward != 0;
    if (a.backward) {
      a.dout = like_q(dout, "dout", a.q);
      a.dq = like_q(dq, "dq", a.q);
      a.dk = like_q(dk, "dk", a.q);
      a.dv = like_q(dv, "dv", a.q);
    }
    a.scale = scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(a.q.shape[3]));
    const std::string why = context->backend->dense_attention_baseline(a);
    if (!why.empty()) sparse::throw_error(SPARSE_ERR_UNSUPPORTED, why);
  });
}

SPARSE_API sparse_status
sparse_experimental_op_check_options_default(sparse_experimental_op_check_options* options) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(options != nullptr, "options is NULL");
    std::memset(options, 0, sizeof *options);
    options->struct_size = sizeof *options;
    options->seed = 1;
    options->max_mismatches = 5;
  });
}

SPARSE_API sparse_status sparse_experimental_op_check(
    const sparse_experimental_op_check_options* options, int64_t* checked, int64_t* failed) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(options != nullptr, "options is NULL");
    sparse::require(
        options->struct_size == sizeof *options, "options->struct_size = ", options->struct_size,
        " does not match sizeof(sparse_experimental_op_check_options) = ", sizeof *options,
        "; initialise with sparse_experimental_op_check_options_default()");
    require_zero(options->reserved, "options->reserved");
    sparse::require(options->max_mismatches >= 0,
                    "options->max_mismatches = ", options->max_mismatches, " must be >= 0");
    sparse::check::OpCheckOptions o;
    o.bench = options->bench != 0;
    o.seed = options->seed;
    o.filter = options->filter != nullptr ? options->filter : "";
    o.max_mismatches = options->max_mismatches;
    if (options->print != nullptr) {
      void (*print)(void*, const char*) = options->print;
      void* user = options->user;
      o.print = [print, user](const std::string& line) { print(user, line.c_str()); };
    }
    const sparse::check::OpCheckCounts counts = sparse::check::run_op_check(o);
    if (checked != nullptr) *checked = counts.checked;
    if (failed != nullptr) *failed = counts.failed;
  });
}

SPARSE_API sparse_status
sparse_experimental_gradient_reducer_default(sparse_experimental_gradient_reducer* reducer) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(reducer != nullptr, "reducer is NULL");
    std::memset(reducer, 0, sizeof *reducer);
    reducer->struct_size = sizeof *reducer;
    reducer->rank = 0;
    reducer->size = 1;
    reducer->memory = SPARSE_MEMORY_HOST;
  });
}

SPARSE_API sparse_status sparse_experimental_model_skipped_steps(sparse_model* model,
                                                                 int64_t* skipped) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(skipped != nullptr, "skipped is NULL");
    *skipped = sparse::capi::model_trainer(model).loss_scaler.skipped;
  });
}

SPARSE_API sparse_status sparse_experimental_model_set_gradient_reducer(
    sparse_model* model, const sparse_experimental_gradient_reducer* reducer) {
  return sparse::capi::guard(__func__, [&] {
    sparse::model::Trainer& trainer = sparse::capi::model_trainer(model);
    if (reducer == nullptr) {
      trainer.set_reducer(nullptr);
      return;
    }
    sparse::require(
        reducer->struct_size == sizeof *reducer, "reducer->struct_size = ", reducer->struct_size,
        " does not match sizeof(sparse_experimental_gradient_reducer) = ", sizeof *reducer,
        "; initialise with sparse_experimental_gradient_reducer_default()");
    sparse::require(reducer->size >= 1, "reducer->size = ", reducer->size, " must be >= 1");
    sparse::require(reducer->rank >= 0 && reducer->rank < reducer->size,
                    "reducer->rank = ", reducer->rank, " must be in [0, size = ", reducer->size,
                    ")");
    const int memory = sparse::enum_value(reducer->memory);
    sparse::require(memory == SPARSE_MEMORY_HOST || memory == SPARSE_MEMORY_DEVICE,
                    "reducer->memory = ", memory, " is not a sparse_memory");
    sparse::require(reducer->all_reduce_sum != nullptr, "reducer->all_reduce_sum is NULL");
    sparse::require(reducer->all_reduce_sum_f64 != nullptr, "reducer->all_reduce_sum_f64 is NULL");
    const bool begin = reducer->begin_all_reduce_sum != nullptr;
    const bool wait = reducer->wait_all_reduce_sum != nullptr;
    sparse::require(begin == wait, "reducer->", begin ? "wait" : "begin",
                    "_all_reduce_sum is NULL but reducer->", begin ? "begin" : "wait",
                    "_all_reduce_sum is set: the overlap takes both or neither");
    require_zero(reducer->reserved, "reducer->reserved");
    trainer.set_reducer(std::make_shared<HookReducer>(*reducer));
  });
}

SPARSE_API sparse_status sparse_experimental_model_layouts(const sparse_model_config* config,
                                                           sparse_layout** layouts,
                                                           int32_t capacity, int32_t* count,
                                                           int32_t* layer_layout) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(config != nullptr, "config is NULL");
    sparse::require(count != nullptr, "count is NULL");
    sparse::require(config->struct_size == sizeof(sparse_model_config),
                    "config->struct_size = ", config->struct_size,
                    " does not match sizeof(sparse_model_config) = ", sizeof(sparse_model_config),
                    "; initialise with sparse_model_config_default()");
    sparse::require(capacity >= 0, "capacity = ", capacity, " must be >= 0");
    sparse::model::validate_config(*config);
    sparse::model::ModelLayouts built = sparse::model::build_model_layouts(*config);
    const auto n = static_cast<int32_t>(built.layouts.size());
    *count = n;
    if (layouts != nullptr && capacity < n)
      sparse::throw_error(SPARSE_ERR_BUFFER_TOO_SMALL, "the model uses ", n,
                          " layouts, layouts holds capacity = ", capacity);
    // Every handle is made before any is handed out, so a failure leaves nothing to free.
    std::vector<std::unique_ptr<sparse_layout>> handles;
    if (layouts != nullptr)
      for (auto& layout : built.layouts) {
        handles.push_back(std::make_unique<sparse_layout>());
        handles.back()->layout = std::move(layout);
      }
    if (layer_layout != nullptr)
      for (int32_t l = 0; l < config->num_layers; ++l) layer_layout[l] = built.layer_layout(l);
    for (size_t i = 0; i < handles.size(); ++i) layouts[i] = handles[i].release();
  });
}

SPARSE_API sparse_status sparse_experimental_check_memory(double estimate_bytes, const char* what) {
  return sparse::capi::guard(__func__, [&] {
    require_string(what, "what");
    sparse::require(estimate_bytes >= 0, "estimate_bytes = ", estimate_bytes,
                    " must be a number of bytes >= 0");
    sparse::check_memory(estimate_bytes, what);
  });
}

SPARSE_API sparse_status sparse_experimental_read_file(const char* path, const char* what,
                                                       void (*sink)(void* user, const void* data,
                                                                    size_t size),
                                                       void* user) {
  return sparse::capi::guard(__func__, [&] {
    require_string(path, "path");
    require_string(what, "what");
    sparse::require(sink != nullptr, "sink is NULL");
    const std::vector<unsigned char> bytes = sparse::read_regular_file(path, what);
    sink(user, bytes.data(), bytes.size());
  });
}

SPARSE_API sparse_status sparse_experimental_resolve_output_path(const char* path, const char* what,
                                                                 char* buffer, size_t size) {
  return sparse::capi::guard(__func__, [&] {
    require_string(path, "path");
    require_string(what, "what");
    sparse::require(buffer != nullptr, "buffer is NULL");
    const std::string resolved = sparse::resolve_output_path(path, what);
    if (resolved.size() + 1 > size)
      sparse::throw_error(SPARSE_ERR_BUFFER_TOO_SMALL, "the resolved path of ", what, " needs ",
                          resolved.size() + 1, " bytes, the buffer has ", size);
    std::memcpy(buffer, resolved.c_str(), resolved.size() + 1);
  });
}

SPARSE_API sparse_status sparse_experimental_write_file_atomic(const char* path, const char* what,
                                                               const void* data, size_t size) {
  return sparse::capi::guard(__func__, [&] {
    require_string(path, "path");
    require_string(what, "what");
    sparse::require(data != nullptr || size == 0, "data is NULL but size = ", size);
    sparse::write_file_atomically(path, {{data, size}}, what);
  });
}

SPARSE_API sparse_status sparse_experimental_backend_status(sparse_backend backend, int* compiled,
                                                            const char** reason) {
  thread_local std::string reason_text;
  if (reason != nullptr) *reason = "";
  return sparse::capi::guard(__func__, [&] {
    const int b = sparse::enum_value(backend);
    sparse::require(b == SPARSE_BACKEND_AUTO || b == SPARSE_BACKEND_CPU || b == SPARSE_BACKEND_CUDA,
                    "unknown backend value ", b);
    const bool cuda = b == SPARSE_BACKEND_CUDA;
    if (compiled != nullptr) *compiled = cuda ? sparse::cuda_compiled() : 1;
    reason_text = cuda ? sparse::cuda_unavailable_reason() : std::string();
    if (reason != nullptr) *reason = reason_text.c_str();
  });
}

}  // extern "C"
