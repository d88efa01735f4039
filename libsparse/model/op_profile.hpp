// Where a model's time goes, one operation at a time: with SPARSE_PROFILE_OPS set when a model is
// made, every call of its model operations (ModelOps<T>) and of the backend's fused attention is
// timed, and the model reports the totals when it is destroyed.
//
//   SPARSE_PROFILE_OPS=1      a table on stderr: operation, calls, total seconds, mean
//                             microseconds, share of the profiled time
//   SPARSE_PROFILE_OPS=PATH   the same as one JSON line per model appended to PATH (JSON Lines;
//                             one write in append mode, so the models of one process and of
//                             several keep whole lines): {"profile": "sparse-model-ops",
//                             "synchronised": true, "backend", "ops": [{"op", "calls",
//                             "seconds"}, ...], "total_seconds"}
//
// Each timed call is bracketed by Backend::synchronize(), so a call's time is its own device time
// plus its launch and the synchronisation: the table attributes a step's time to operations, at
// the cost of the overlap between calls (a profiled run is slower than a plain one, and host work
// between calls is not counted). Unset, empty, 0, no, false or off: nothing is wrapped and
// nothing is timed; yes, true and on mean 1 (any case). A path that is not a regular file (a
// folder, a FIFO, a device) is refused on stderr, without blocking.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "libsparse/backend.hpp"
#include "libsparse/model_ops.hpp"

namespace sparse {

class OpProfile {
 public:
  // Null unless SPARSE_PROFILE_OPS is set (read once per model).
  static std::unique_ptr<OpProfile> from_environment(Backend& backend);
  ~OpProfile();  // writes the report (errors go to stderr: a destructor cannot throw)
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  // Times one call: synchronises, then again when it ends, and adds the time to `op`.
  class Scope {
   public:
    Scope(OpProfile* profile, const char* op) : profile_(profile), op_(op) {
      if (profile_ == nullptr) return;
      profile_->backend_.synchronize();
      start_ = std::chrono::steady_clock::now();
    }
    ~Scope() {
      if (profile_ == nullptr) return;
      try {
        profile_->backend_.synchronize();
      } catch (...) {  // the call's own error is already on its way
      }
      const std::chrono::duration<double> d = std::chrono::steady_clock::now() - start_;
      Entry& e = profile_->entries_[op_];
      ++e.calls;
      e.seconds += d.count();
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfile* profile_;
    const char* op_;
    std::chrono::steady_clock::time_point start_{};
  };

  struct Entry {
    int64_t calls = 0;
    double seconds = 0;
  };
  const std::map<std::string, Entry>& entries() const { return entries_; }

 private:
  OpProfile(Backend& backend, std::string destination)
      : backend_(backend), destination_(std::move(destination)) {}
  Backend& backend_;
  std::string destination_;  // "1": stderr; else a path
  std::map<std::string, Entry> entries_;
};

// `inner` with every call timed in `profile`; behaves exactly as `inner` otherwise.
template <typename T>
class ProfiledOps final : public ModelOps<T> {
 public:
  ProfiledOps(ModelOps<T>& inner, OpProfile& profile) : in_(inner), p_(&profile) {}

  void layer_norm_forward(const T* x, const T* gamma, const T* beta, int64_t rows, int64_t dim,
                          T eps, T* y, T* mean, T* rstd) override {
    OpProfile::Scope s(p_, "layer_norm_forward");
    in_.layer_norm_forward(x, gamma, beta, rows, dim, eps, y, mean, rstd);
  }
  void layer_norm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                           int64_t rows, int64_t dim, T* dx, T* dgamma, T* dbeta) override {
    OpProfile::Scope s(p_, "layer_norm_backward");
    in_.layer_norm_backward(dy, x, gamma, mean, rstd, rows, dim, dx, dgamma, dbeta);
  }
  void linear_forward(const T* x, const T* w, const T* b, int64_t rows, int64_t in, int64_t out,
                      T* y) override {
    OpProfile::Scope s(p_, "linear_forward");
    in_.linear_forward(x, w, b, rows, in, out, y);
  }
  void linear_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in, int64_t out,
                       T* dx, bool accumulate_dx, T* dw, T* db) override {
    OpProfile::Scope s(p_, "linear_backward");
    in_.linear_backward(dy, x, w, rows, in, out, dx, accumulate_dx, dw, db);
  }
  void linear_transposed_forward(const T* x, const T* w, int64_t rows, int64_t in, int64_t out,
                                 T* y) override {
    OpProfile::Scope s(p_, "linear_transposed_forward");
    in_.linear_transposed_forward(x, w, rows, in, out, y);
  }
  void linear_transposed_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in,
                                  int64_t out, T* dx, T* dw) override {
    OpProfile::Scope s(p_, "linear_transposed_backward");
    in_.linear_transposed_backward(dy, x, w, rows, in, out, dx, dw);
  }
  void gelu_forward(const T* x, int64_t n, T* y) override {
    OpProfile::Scope s(p_, "gelu_forward");
    in_.gelu_forward(x, n, y);
  }
  void gelu_backward(const T* x, const T* dy, int64_t n, T* dx) override {
    OpProfile::Scope s(p_, "gelu_backward");
    in_.gelu_backward(x, dy, n, dx);
  }
  void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                         const T* token_table, const T* start, const T* const* pos_tables,
                         const ops::PositionShape& shape, T* h) override {
    OpProfile::Scope s(p_, "embedding_forward");
    in_.embedding_forward(tokens, batch, seq, dim, token_table, start, pos_tables, shape, h);
  }
  void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                          const T* dh, const ops::PositionShape& shape, T* d_token_table,
                          T* d_start, T* const* d_pos_tables) override {
    OpProfile::Scope s(p_, "embedding_backward");
    in_.embedding_backward(tokens, batch, seq, dim, dh, shape, d_token_table, d_start,
                           d_pos_tables);
  }
  void dropout_forward(const T* x, int64_t n, double p, uint64_t seed, T* y) override {
    OpProfile::Scope s(p_, "dropout_forward");
    in_.dropout_forward(x, n, p, seed, y);
  }
  void dropout_backward(const T* dy, int64_t n, double p, uint64_t seed, T* dx) override {
    OpProfile::Scope s(p_, "dropout_backward");
    in_.dropout_backward(dy, n, p, seed, dx);
  }
  double softmax_cross_entropy(const T* logits, const uint8_t* targets, int64_t rows, int64_t vocab,
                               T grad_scale, T* dlogits) override {
    OpProfile::Scope s(p_, "softmax_cross_entropy");
    return in_.softmax_cross_entropy(logits, targets, rows, vocab, grad_scale, dlogits);
  }
  void listed_attention_forward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                T scale, const T* q, const T* k, const T* v, T* out,
                                T* lse) override {
    OpProfile::Scope s(p_, "listed_attention_forward");
    in_.listed_attention_forward(lists, batch, dqk, dv, scale, q, k, v, out, lse);
  }
  void listed_attention_backward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                 T scale, const T* q, const T* k, const T* v, const T* out,
                                 const T* lse, const T* dout, T* dq, T* dk, T* dvv) override {
    OpProfile::Scope s(p_, "listed_attention_backward");
    in_.listed_attention_backward(lists, batch, dqk, dv, scale, q, k, v, out, lse, dout, dq, dk,
                                  dvv);
  }
  void decode_attention(const ops::KeyLists& lists, int64_t t, int64_t dqk, int64_t dv, T scale,
                        const T* q, const T* kcache, const T* vcache, T* out) override {
    OpProfile::Scope s(p_, "decode_attention");
    in_.decode_attention(lists, t, dqk, dv, scale, q, kcache, vcache, out);
  }
  void add(const T* a, const T* b, int64_t n, T* y) override {
    OpProfile::Scope s(p_, "add");
    in_.add(a, b, n, y);
  }
  void accumulate(T* y, const T* x, int64_t n) override {
    OpProfile::Scope s(p_, "accumulate");
    in_.accumulate(y, x, n);
  }
  void copy_rows(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                 int64_t cols) override {
    OpProfile::Scope s(p_, "copy_rows");
    in_.copy_rows(src, src_stride, dst, dst_stride, rows, cols);
  }
  void hold_weights(const T* w, int64_t n) override {
    OpProfile::Scope s(p_, "hold_weights");
    in_.hold_weights(w, n);
  }
  void release_weights() noexcept override { in_.release_weights(); }
  void round_to_16(const T* x, int64_t n, sparse_dtype dtype, void* y) override {
    OpProfile::Scope s(p_, "round_to_16");
    in_.round_to_16(x, n, dtype, y);
  }
  void widen_from_16(const void* x, int64_t n, sparse_dtype dtype, T* y) override {
    OpProfile::Scope s(p_, "widen_from_16");
    in_.widen_from_16(x, n, dtype, y);
  }
  void linear_forward_16(const void* x, sparse_dtype dtype, const T* w, const T* b, int64_t rows,
                         int64_t in, int64_t out, T* y) override {
    OpProfile::Scope s(p_, "linear_forward_16");
    in_.linear_forward_16(x, dtype, w, b, rows, in, out, y);
  }
  void linear_backward_16(const T* dy, const void* x, sparse_dtype dtype, const T* w, int64_t rows,
                          int64_t in, int64_t out, T* dx, bool accumulate_dx, T* dw,
                          T* db) override {
    OpProfile::Scope s(p_, "linear_backward_16");
    in_.linear_backward_16(dy, x, dtype, w, rows, in, out, dx, accumulate_dx, dw, db);
  }
  double squared_norm(const T* x, int64_t n) override {
    OpProfile::Scope s(p_, "squared_norm");
    return in_.squared_norm(x, n);
  }
  void adam_update(T* w, const T* g, T* m, T* v, const uint8_t* decay, int64_t n,
                   const ops::AdamStep& step) override {
    OpProfile::Scope s(p_, "adam_update");
    in_.adam_update(w, g, m, v, decay, n, step);
  }

 private:
  ModelOps<T>& in_;
  OpProfile* p_;
};

}  // namespace sparse
