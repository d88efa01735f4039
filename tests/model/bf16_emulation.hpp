// A CPU backend that emulates mixed precision, to check the model's plumbing and the operation
// checker without a GPU: its "bf16" operations round each product operand to bf16 and hand it to
// the CPU's fp32 product (fp32 accumulation; the bias add and the bias gradient read fp32, as on
// CUDA), and its bf16 attention widens its 16-bit tensors, runs the CPU's fp32 attention and
// rounds the results to bf16 (what the tensor-core kernels compute, up to their internal
// rounding). A Fault makes it deliberately wrong, for tests that must see a checker fail.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "libsparse/backend.hpp"
#include "tests/attention_check.hpp"

namespace sparse::model::testing {

inline float round_bf16(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  b += 0x7fffu + ((b >> 16) & 1u);  // round to nearest even (finite inputs)
  b &= 0xffff0000u;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

inline uint16_t bf16_bits(float x) {
  const float r = round_bf16(x);
  uint32_t b;
  std::memcpy(&b, &r, sizeof b);
  return static_cast<uint16_t>(b >> 16);
}

inline float from_bf16_bits(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

struct Counts {
  int holds = 0, releases = 0, held_operands = 0, products = 0;
  int attention16 = 0, attention32 = 0;  // attention calls on bf16 and on fp32 tensors
  int operands16 = 0;                    // product operands stored in bf16
};

// Elements of a [batch, heads, n, dim] view over a dense block (its strides permute the shape).
inline int64_t elements(const TensorView& t) {
  return t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3];
}

// How the backend computes attention: the CPU's fp32 kernels as they are, bf16 tensors (widened,
// computed in fp32, rounded), or fp32 tensors rounded to bf16 before and after (the reference).
enum class Attention { Fp32, Bf16Tensors, RoundedFp32 };

// Deliberate errors of the bf16 operations (None: the emulation as described above).
enum class Fault {
  None,
  UnroundedProducts,    // the products read their operands unrounded (plain fp32 products)
  F16Weights,           // weight operands rounded to fp16 instead of bf16
  RoundedBiasGradient,  // db sums the bf16-rounded dy instead of the fp32 one
  TruncatingRound,      // round_to_16 truncates to bf16 instead of rounding to nearest even
};

// The CPU's fp32 operations with bf16-rounded product operands.
class Bf16Emulation final : public ModelOps<float> {
 public:
  Bf16Emulation(ModelOps<float>& cpu, bool use_held, Counts& counts, Fault fault = Fault::None)
      : cpu_(cpu), use_held_(use_held), n_(counts), fault_(fault) {}

  void hold_weights(const float* w, int64_t n) override {
    ++n_.holds;
    held_ = w;
    held_n_ = n;
    copy_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) copy_[static_cast<size_t>(i)] = round_bf16(w[i]);
  }
  void release_weights() noexcept override {
    ++n_.releases;
    held_ = nullptr;
    held_n_ = 0;
  }

  void linear_forward(const float* x, const float* w, const float* b, int64_t rows, int64_t in,
                      int64_t out, float* y) override {
    cpu_.linear_forward(rounded(x, rows * in, 0), weight(w, in * out, 1), b, rows, in, out, y);
  }
  void linear_backward(const float* dy, const float* x, const float* w, int64_t rows, int64_t in,
                       int64_t out, float* dx, bool accumulate_dx, float* dw, float* db) override {
    // db sums the unrounded dy (the CUDA bias gradient reads fp32).
    if (db != nullptr) {
      std::vector<float> zero(static_cast<size_t>(in * out), 0.0f);
      const float* sums = fault_ == Fault::RoundedBiasGradient ? rounded(dy, rows * out, 0) : dy;
      cpu_.linear_backward(sums, x, w, rows, in, out, nullptr, false, zero.data(), db);
    }
    cpu_.linear_backward(rounded(dy, rows * out, 0), rounded(x, rows * in, 1),
                         weight(w, in * out, 2), rows, in, out, dx, accumulate_dx, dw, nullptr);
  }
  // Activations stored in bf16: widened, then the products above (rounding them is exact).
  void linear_forward_16(const void* x, sparse_dtype dtype, const float* w, const float* b,
                         int64_t rows, int64_t in, int64_t out, float* y) override {
    linear_forward(widened(x, rows * in, dtype), w, b, rows, in, out, y);
  }
  void linear_backward_16(const float* dy, const void* x, sparse_dtype dtype, const float* w,
                          int64_t rows, int64_t in, int64_t out, float* dx, bool accumulate_dx,
                          float* dw, float* db) override {
    linear_backward(dy, widened(x, rows * in, dtype), w, rows, in, out, dx, accumulate_dx, dw, db);
  }
  void linear_transposed_forward(const float* x, const float* w, int64_t rows, int64_t in,
                                 int64_t out, float* y) override {
    cpu_.linear_transposed_forward(rounded(x, rows * in, 0), weight(w, in * out, 1), rows, in, out,
                                   y);
  }
  void linear_transposed_backward(const float* dy, const float* x, const float* w, int64_t rows,
                                  int64_t in, int64_t out, float* dx, float* dw) override {
    cpu_.linear_transposed_backward(rounded(dy, rows * out, 0), rounded(x, rows * in, 1),
                                    weight(w, in * out, 2), rows, in, out, dx, dw);
  }

  // Everything else is the CPU's fp32 operation.
  void layer_norm_forward(const float* x, const float* gamma, const float* beta, int64_t rows,
                          int64_t dim, float eps, float* y, float* mean, float* rstd) override {
    cpu_.layer_norm_forward(x, gamma, beta, rows, dim, eps, y, mean, rstd);
  }
  void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                           const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                           float* dbeta) override {
    cpu_.layer_norm_backward(dy, x, gamma, mean, rstd, rows, dim, dx, dgamma, dbeta);
  }
  void gelu_forward(const float* x, int64_t n, float* y) override { cpu_.gelu_forward(x, n, y); }
  void gelu_backward(const float* x, const float* dy, int64_t n, float* dx) override {
    cpu_.gelu_backward(x, dy, n, dx);
  }
  void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                         const float* token_table, const float* start,
                         const float* const* pos_tables, const ops::PositionShape& shape,
                         float* h) override {
    cpu_.embedding_forward(tokens, batch, seq, dim, token_table, start, pos_tables, shape, h);
  }
  void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                          const float* dh, const ops::PositionShape& shape, float* d_token_table,
                          float* d_start, float* const* d_pos_tables) override {
    cpu_.embedding_backward(tokens, batch, seq, dim, dh, shape, d_token_table, d_start,
                            d_pos_tables);
  }
  void dropout_forward(const float* x, int64_t n, double p, uint64_t seed, float* y) override {
    cpu_.dropout_forward(x, n, p, seed, y);
  }
  void dropout_backward(const float* dy, int64_t n, double p, uint64_t seed, float* dx) override {
    cpu_.dropout_backward(dy, n, p, seed, dx);
  }
  double softmax_cross_entropy(const float* logits, const uint8_t* targets, int64_t rows,
                               int64_t vocab, float grad_scale, float* dlogits) override {
    return cpu_.softmax_cross_entropy(logits, targets, rows, vocab, grad_scale, dlogits);
  }
  void listed_attention_forward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                float scale, const float* q, const float* k, const float* v,
                                float* out, float* lse) override {
    cpu_.listed_attention_forward(lists, batch, dqk, dv, scale, q, k, v, out, lse);
  }
  void listed_attention_backward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                 float scale, const float* q, const float* k, const float* v,
                                 const float* out, const float* lse, const float* dout, float* dq,
                                 float* dk, float* dvv) override {
    cpu_.listed_attention_backward(lists, batch, dqk, dv, scale, q, k, v, out, lse, dout, dq, dk,
                                   dvv);
  }
  void decode_attention(const ops::KeyLists& lists, int64_t t, int64_t dqk, int64_t dv, float scale,
                        const float* q, const float* kcache, const float* vcache,
                        float* out) override {
    cpu_.decode_attention(lists, t, dqk, dv, scale, q, kcache, vcache, out);
  }
  void add(const float* a, const float* b, int64_t n, float* y) override { cpu_.add(a, b, n, y); }
  void accumulate(float* y, const float* x, int64_t n) override { cpu_.accumulate(y, x, n); }
  void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
                 int64_t cols) override {
    cpu_.copy_rows(src, src_stride, dst, dst_stride, rows, cols);
  }
  double squared_norm(const float* x, int64_t n) override { return cpu_.squared_norm(x, n); }
  void round_to_16(const float* x, int64_t n, sparse_dtype dtype, void* y) override {
    REQUIRE(dtype == SPARSE_DTYPE_BF16);
    for (int64_t i = 0; i < n; ++i) {
      uint32_t b;
      std::memcpy(&b, &x[i], sizeof b);
      static_cast<uint16_t*>(y)[i] =
          fault_ == Fault::TruncatingRound ? static_cast<uint16_t>(b >> 16) : bf16_bits(x[i]);
    }
  }
  void widen_from_16(const void* x, int64_t n, sparse_dtype dtype, float* y) override {
    REQUIRE(dtype == SPARSE_DTYPE_BF16);
    for (int64_t i = 0; i < n; ++i) y[i] = from_bf16_bits(static_cast<const uint16_t*>(x)[i]);
  }
  void adam_update(float* w, const float* g, float* m, float* v, const uint8_t* decay, int64_t n,
                   const ops::AdamStep& step) override {
    CHECK(held_ == nullptr);  // the weights change only while nothing holds them
    cpu_.adam_update(w, g, m, v, decay, n, step);
  }

 private:
  const float* rounded(const float* x, int64_t n, int slot) {
    if (fault_ == Fault::UnroundedProducts) return x;
    std::vector<float>& r = scratch_[slot];
    r.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) r[static_cast<size_t>(i)] = round_bf16(x[i]);
    return r.data();
  }
  const float* widened(const void* x, int64_t n, sparse_dtype dtype) {
    REQUIRE(dtype == SPARSE_DTYPE_BF16);
    ++n_.operands16;
    widened_.resize(static_cast<size_t>(n));
    widen_from_16(x, n, dtype, widened_.data());
    return widened_.data();
  }
  const float* weight(const float* w, int64_t n, int slot) {
    ++n_.products;
    const bool inside = held_ != nullptr && w >= held_ && w + n <= held_ + held_n_;
    if (inside) ++n_.held_operands;
    if (fault_ == Fault::F16Weights) {
      std::vector<float>& r = scratch_[slot];
      r.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        r[static_cast<size_t>(i)] = ::check::round_to(SPARSE_DTYPE_F16, w[i]);
      return r.data();
    }
    if (use_held_ && inside) return copy_.data() + (w - held_);
    return rounded(w, n, slot);
  }

  ModelOps<float>& cpu_;
  bool use_held_;
  Counts& n_;
  Fault fault_;
  const float* held_ = nullptr;
  int64_t held_n_ = 0;
  std::vector<float> copy_;
  std::vector<float> scratch_[3];
  std::vector<float> widened_;
};

// The CPU backend, offering the emulation as its bf16 operations.
class EmulatingBackend final : public Backend {
 public:
  EmulatingBackend(bool use_held, Counts& counts, Attention attention = Attention::Fp32,
                   Fault fault = Fault::None)
      : cpu_(make_cpu_backend(1, 0)),
        ops_(*cpu_->model_ops<float>(), use_held, counts, fault),
        n_(counts),
        attention_(attention) {}
  sparse_backend kind() const override { return cpu_->kind(); }
  std::string description() const override { return "bf16 emulation"; }
  int num_threads() const override { return 1; }
  sparse_memory memory_kind() const override { return cpu_->memory_kind(); }
  // A device ordinal other than 0 (a CUDA context on another GPU): the attention calls check that
  // every tensor they are given names it.
  void set_device_index(int32_t device) { device_ = device; }
  int32_t device_index() const override { return device_; }
  void* allocate(size_t bytes) override { return cpu_->allocate(bytes); }
  void free(void* ptr) noexcept override { cpu_->free(ptr); }
  void copy(void* dst, sparse_memory dm, const void* src, sparse_memory sm, size_t n) override {
    cpu_->copy(dst, dm, src, sm, n);
  }
  void zero(void* ptr, size_t bytes) override { cpu_->zero(ptr, bytes); }
  std::string supports_attention(const Layout& l, sparse_dtype d, sparse_memory m, int64_t hd,
                                 sparse_attention_algorithm a) const override {
    if (d == SPARSE_DTYPE_BF16 && attention_ == Attention::Bf16Tensors)
      return cpu_->supports_attention(l, SPARSE_DTYPE_F32, m, hd, a);
    return cpu_->supports_attention(l, d, m, hd, a);
  }
  size_t attention_workspace_bytes(const Layout& l, int64_t b, int64_t hd, bool bw,
                                   sparse_attention_algorithm a) const override {
    return cpu_->attention_workspace_bytes(l, b, hd, bw, a);
  }
  void attention_forward(const AttentionForwardArgs& a) override {
    for (const TensorView* t : {&a.q, &a.k, &a.v, &a.out, &a.lse}) REQUIRE(t->device == device_);
    if (a.q.dtype == SPARSE_DTYPE_BF16) {
      ++n_.attention16;
      REQUIRE(attention_ == Attention::Bf16Tensors);
      REQUIRE(a.lse.dtype == SPARSE_DTYPE_F32);
      AttentionForwardArgs f = a;
      Widened q(a.q), k(a.k), v(a.v), out(a.out);
      f.q = q.view, f.k = k.view, f.v = v.view, f.out = out.view;
      cpu_->attention_forward(f);
      out.round_into(a.out);
      return;
    }
    ++n_.attention32;
    if (attention_ != Attention::RoundedFp32) return cpu_->attention_forward(a);
    AttentionForwardArgs f = a;
    Rounded q(a.q), k(a.k), v(a.v);
    f.q = q.view, f.k = k.view, f.v = v.view;
    cpu_->attention_forward(f);
    round_in_place(a.out);
  }
  void attention_backward(const AttentionBackwardArgs& a) override {
    for (const TensorView* t : {&a.q, &a.k, &a.v, &a.out, &a.lse, &a.dout, &a.dq, &a.dk, &a.dv})
      REQUIRE(t->device == device_);
    if (a.q.dtype == SPARSE_DTYPE_BF16) {
      ++n_.attention16;
      REQUIRE(attention_ == Attention::Bf16Tensors);
      AttentionBackwardArgs f = a;
      Widened q(a.q), k(a.k), v(a.v), out(a.out), dout(a.dout), dq(a.dq), dk(a.dk), dv(a.dv);
      f.q = q.view, f.k = k.view, f.v = v.view, f.out = out.view, f.dout = dout.view;
      f.dq = dq.view, f.dk = dk.view, f.dv = dv.view;
      cpu_->attention_backward(f);
      dq.round_into(a.dq);
      dk.round_into(a.dk);
      dv.round_into(a.dv);
      return;
    }
    ++n_.attention32;
    if (attention_ != Attention::RoundedFp32) return cpu_->attention_backward(a);
    AttentionBackwardArgs f = a;
    Rounded q(a.q), k(a.k), v(a.v), out(a.out), dout(a.dout);
    f.q = q.view, f.k = k.view, f.v = v.view, f.out = out.view, f.dout = dout.view;
    cpu_->attention_backward(f);
    round_in_place(a.dq);
    round_in_place(a.dk);
    round_in_place(a.dv);
  }
  std::string supports_op(ModelOp op, sparse_dtype dtype) const override {
    return cpu_->supports_op(op, dtype == SPARSE_DTYPE_BF16 ? SPARSE_DTYPE_F32 : dtype);
  }
  ModelOps<float>* model_ops_f32() override { return cpu_->model_ops<float>(); }
  ModelOps<float>* model_ops_mixed(sparse_dtype products) override {
    return products == SPARSE_DTYPE_BF16 ? &ops_ : nullptr;
  }

 private:
  // An fp32 copy of a bf16 tensor, same strides.
  struct Widened {
    explicit Widened(const TensorView& t) : data(static_cast<size_t>(elements(t))), view(t) {
      const auto* h = static_cast<const uint16_t*>(t.data);
      for (size_t i = 0; i < data.size(); ++i) data[i] = from_bf16_bits(h[i]);
      view.data = data.data();
      view.dtype = SPARSE_DTYPE_F32;
    }
    void round_into(const TensorView& t) const {
      auto* h = static_cast<uint16_t*>(t.data);
      for (size_t i = 0; i < data.size(); ++i) h[i] = bf16_bits(data[i]);
    }
    std::vector<float> data;
    TensorView view;
  };
  // A bf16-rounded copy of an fp32 tensor, same strides.
  struct Rounded {
    explicit Rounded(const TensorView& t) : data(static_cast<size_t>(elements(t))), view(t) {
      const auto* x = static_cast<const float*>(t.data);
      for (size_t i = 0; i < data.size(); ++i) data[i] = round_bf16(x[i]);
      view.data = data.data();
    }
    std::vector<float> data;
    TensorView view;
  };
  static void round_in_place(const TensorView& t) {
    auto* x = static_cast<float*>(t.data);
    for (int64_t i = 0; i < elements(t); ++i) x[i] = round_bf16(x[i]);
  }

  std::unique_ptr<Backend> cpu_;
  Bf16Emulation ops_;
  Counts& n_;
  int32_t device_ = 0;
  Attention attention_;
};

}  // namespace sparse::model::testing
