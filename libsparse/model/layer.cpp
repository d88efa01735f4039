// One residual block of the Transformer, forward and backward, and its attention.
#include <cmath>
#include <deque>
#include <type_traits>
#include <utility>
#include <vector>

#include "libsparse/error.hpp"
#include "libsparse/model/transformer_impl.hpp"

namespace sparse::model {

namespace {

// Views the rows of a [batch * n, heads * dh] projection as a [batch, heads, n, dh] tensor.
TensorView head_view(sparse_memory memory, float* data, int64_t batch, int64_t heads, int64_t n,
                     int64_t dh) {
  TensorView t;
  t.data = data;
  t.dtype = SPARSE_DTYPE_F32;
  t.memory = memory;
  t.ndim = 4;
  t.shape = {batch, heads, n, dh};
  t.strides = {n * heads * dh, dh, heads * dh, 1};
  return t;
}

TensorView lse_view(sparse_memory memory, float* data, int64_t batch, int64_t heads, int64_t n) {
  TensorView t;
  t.data = data;
  t.dtype = SPARSE_DTYPE_F32;
  t.memory = memory;
  t.ndim = 3;
  t.shape = {batch, heads, n, 1};
  t.strides = {heads * n, n, 1, 0};
  return t;
}

// The dtype of the fused attention on this layout: the 16-bit product dtype in mixed precision
// where the backend has 16-bit kernels for the head and block size, else fp32.
sparse_dtype attention_dtype(const Backend& backend, sparse_dtype products, const Layout& layout,
                             const Dims& D) {
  if (products == SPARSE_DTYPE_F32) return SPARSE_DTYPE_F32;
  return backend.supports_attention(layout, products, backend.memory_kind(), D.head_v,
                                    SPARSE_ATTENTION_FUSED)
                 .empty()
             ? products
             : SPARSE_DTYPE_F32;
}

// The [batch, heads, n, head_v] tensors of one fused attention call, from fp32 [batch * n,
// heads * head_v] buffers. In 16 bits, an input is rounded into a 16-bit copy and an output is
// written to a 16-bit buffer that widen_outputs() widens into its fp32 one (lse stays fp32);
// in fp32 the views are the buffers themselves.
class HeadViews {
 public:
  HeadViews(Backend& backend, ModelOps<float>& ops, MemoryMeter& meter, sparse_dtype dtype,
            int64_t batch, const Dims& D)
      : backend_(backend),
        ops_(ops),
        meter_(meter),
        dtype_(dtype),
        batch_(batch),
        D_(D),
        count_(batch * D.n * D.d) {}
  bool rounded() const { return dtype_ != SPARSE_DTYPE_F32; }
  TensorView input(float* x) {
    if (!rounded()) return view(x);
    copies_.emplace_back(&backend_, count_, &meter_);
    ops_.round_to_16(x, count_, dtype_, copies_.back().data());
    return view(copies_.back().data());
  }
  TensorView output(float* y) {
    if (!rounded()) return view(y);
    copies_.emplace_back(&backend_, count_, &meter_);
    outputs_.emplace_back(&copies_.back(), y);
    return view(copies_.back().data());
  }
  void widen_outputs() {
    for (const auto& [from, to] : outputs_) ops_.widen_from_16(from->data(), count_, dtype_, to);
  }

 private:
  TensorView view(void* data) const {
    TensorView t = head_view(backend_.memory_kind(), static_cast<float*>(data), batch_, D_.heads,
                             D_.n, D_.head_v);
    t.dtype = dtype_;
    return t;
  }

  Backend& backend_;
  ModelOps<float>& ops_;
  MemoryMeter& meter_;
  sparse_dtype dtype_;
  int64_t batch_;
  const Dims& D_;
  int64_t count_;
  std::deque<Buffer<uint16_t>> copies_;  // a deque: pointers to its elements stay valid
  std::vector<std::pair<Buffer<uint16_t>*, float*>> outputs_;
};

}  // namespace

// The fused kernels take one head size for Q, K and V: with half-size Q and K heads, Q and K
// zero-padded to the value head size (the dot products are unchanged). The copies live only as
// long as one attention call: keeping them for the backward would save one copy per layer but
// cost more activation memory (twice q and k), so the backward pads again.
template <typename T>
void Transformer<T>::pad_qk(int64_t batch, LayerCache& c) {
  const Dims& D = dims_;
  if (c.qp.size() > 0) return;
  const int64_t rows = batch * D.n;
  c.qp = buffer(rows * D.d);
  c.kp = buffer(rows * D.d);
  ops_->copy_rows(c.q.data(), D.head_qk, c.qp.data(), D.head_v, rows * D.heads, D.head_qk);
  ops_->copy_rows(c.k.data(), D.head_qk, c.kp.data(), D.head_v, rows * D.heads, D.head_qk);
}

template <typename T>
void Transformer<T>::attention_forward(int64_t layer, int64_t batch, LayerCache& c) {
  const Dims& D = dims_;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D.head_qk)));
  if constexpr (std::is_same_v<T, float>) {
    if (!use_listed_attention) {
      AttentionForwardArgs a;
      a.layout =
          layouts_.layouts[static_cast<size_t>(layouts_.layer_layout[static_cast<size_t>(layer)])]
              .get();
      a.scale = scale;
      float* q = c.q.data();
      float* k = c.k.data();
      if (D.head_qk != D.head_v) {
        pad_qk(batch, c);
        q = c.qp.data();
        k = c.kp.data();
      }
      HeadViews views(*backend_, *ops_, meter, attention_dtype(*backend_, products_, *a.layout, D),
                      batch, D);
      a.q = views.input(q);
      a.k = views.input(k);
      a.v = views.input(c.v.data());
      a.out = views.output(c.att.data());
      a.lse = lse_view(backend_->memory_kind(), c.lse.data(), batch, D.heads, D.n);
      if (views.rounded()) {  // the views read 16-bit copies: the padded fp32 ones can go
        c.qp.release();
        c.kp.release();
      }
      backend_->attention_forward(a);
      views.widen_outputs();
      c.qp.release();
      c.kp.release();
      return;
    }
  }
  ops_->listed_attention_forward(key_lists(layer).view(), batch, D.head_qk, D.head_v, scale,
                                 c.q.data(), c.k.data(), c.v.data(), c.att.data(), c.lse.data());
}

template <typename T>
void Transformer<T>::attention_backward(int64_t layer, int64_t batch, LayerCache& c, const T* datt,
                                        T* dq, T* dk, T* dv) {
  const Dims& D = dims_;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D.head_qk)));
  if constexpr (std::is_same_v<T, float>) {
    if (!use_listed_attention) {
      const int64_t rows = batch * D.n;
      AttentionBackwardArgs a;
      a.layout =
          layouts_.layouts[static_cast<size_t>(layouts_.layer_layout[static_cast<size_t>(layer)])]
              .get();
      a.scale = scale;
      const bool padded = D.head_qk != D.head_v;
      Buffer<float> dqp, dkp;
      float *q = c.q.data(), *k = c.k.data(), *dqo = dq, *dko = dk;
      if (padded) {
        pad_qk(batch, c);
        q = c.qp.data();
        k = c.kp.data();
        dqp = buffer(rows * D.d);
        dkp = buffer(rows * D.d);
        dqo = dqp.data();
        dko = dkp.data();
      }
      HeadViews views(*backend_, *ops_, meter, attention_dtype(*backend_, products_, *a.layout, D),
                      batch, D);
      a.q = views.input(q);
      a.k = views.input(k);
      a.v = views.input(c.v.data());
      a.out = views.input(c.att.data());
      a.lse = lse_view(backend_->memory_kind(), c.lse.data(), batch, D.heads, D.n);
      a.dout = views.input(const_cast<float*>(datt));
      a.dq = views.output(dqo);
      a.dk = views.output(dko);
      a.dv = views.output(dv);
      if (views.rounded()) {  // the views read 16-bit copies: the padded fp32 ones can go
        c.qp.release();
        c.kp.release();
      }
      backend_->attention_backward(a);
      views.widen_outputs();
      if (padded) {
        ops_->copy_rows(dqp.data(), D.head_v, dq, D.head_qk, rows * D.heads, D.head_qk);
        ops_->copy_rows(dkp.data(), D.head_v, dk, D.head_qk, rows * D.heads, D.head_qk);
      }
      return;
    }
  }
  ops_->listed_attention_backward(key_lists(layer).view(), batch, D.head_qk, D.head_v, scale,
                                  c.q.data(), c.k.data(), c.v.data(), c.att.data(), c.lse.data(),
                                  datt, dq, dk, dv);
}

template <typename T>
void Transformer<T>::layer_forward(int64_t layer, const T* x, T* out, int64_t batch, uint64_t seed,
                                   bool train, LayerCache& c) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const double drop = train ? static_cast<double>(config_.dropout) : 0.0;
  auto P = [&](LayerTensor t) { return p(table_.layer(layer, t)); };
  c.y1 = buffer(rows * D.d);
  c.mean1 = buffer(rows);
  c.rstd1 = buffer(rows);
  ops_->layer_norm_forward(x, P(kLn1Gain), P(kLn1Bias), rows, D.d, T(kLayerNormEps), c.y1.data(),
                           c.mean1.data(), c.rstd1.data());
  c.q = buffer(rows * D.dqk);
  c.k = buffer(rows * D.dqk);
  c.v = buffer(rows * D.d);
  ops_->linear_forward(c.y1.data(), P(kWq), static_cast<const T*>(nullptr), rows, D.d, D.dqk,
                       c.q.data());
  ops_->linear_forward(c.y1.data(), P(kWk), static_cast<const T*>(nullptr), rows, D.d, D.dqk,
                       c.k.data());
  ops_->linear_forward(c.y1.data(), P(kWv), static_cast<const T*>(nullptr), rows, D.d, D.d,
                       c.v.data());
  c.att = buffer(rows * D.d);
  c.lse = buffer(batch * D.heads * D.n);
  attention_forward(layer, batch, c);
  {
    Buffer<T> a = buffer(rows * D.d);
    ops_->linear_forward(c.att.data(), P(kWp), static_cast<const T*>(nullptr), rows, D.d, D.d,
                         a.data());
    ops_->dropout_forward(a.data(), rows * D.d, drop, mix_seed(seed, layer, 0), a.data());
    c.r = buffer(rows * D.d);
    ops_->add(x, a.data(), rows * D.d, c.r.data());
  }
  c.y2 = buffer(rows * D.d);
  c.mean2 = buffer(rows);
  c.rstd2 = buffer(rows);
  ops_->layer_norm_forward(c.r.data(), P(kLn2Gain), P(kLn2Bias), rows, D.d, T(kLayerNormEps),
                           c.y2.data(), c.mean2.data(), c.rstd2.data());
  c.u = buffer(rows * D.inner);
  c.gel = buffer(rows * D.inner);
  ops_->linear_forward(c.y2.data(), P(kW1), P(kB1), rows, D.d, D.inner, c.u.data());
  ops_->gelu_forward(c.u.data(), rows * D.inner, c.gel.data());
  Buffer<T> f = buffer(rows * D.d);
  ops_->linear_forward(c.gel.data(), P(kW2), P(kB2), rows, D.inner, D.d, f.data());
  ops_->dropout_forward(f.data(), rows * D.d, drop, mix_seed(seed, layer, 1), f.data());
  ops_->add(c.r.data(), f.data(), rows * D.d, out);
}

template <typename T>
void Transformer<T>::layer_backward(int64_t layer, const T* dout, const T* x, int64_t batch,
                                    uint64_t seed, bool train, LayerCache& c, T* dx) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const double drop = train ? static_cast<double>(config_.dropout) : 0.0;
  auto P = [&](LayerTensor t) { return p(table_.layer(layer, t)); };
  auto G = [&](LayerTensor t) { return g(table_.layer(layer, t)); };
  Buffer<T> t1 = buffer(rows * D.d), t2 = buffer(rows * D.d);
  // b = dropout(W2 gelu(W1 ln2(r) + b1) + b2)
  ops_->dropout_backward(dout, rows * D.d, drop, mix_seed(seed, layer, 1), t1.data());
  {
    Buffer<T> dg = buffer(rows * D.inner);
    ops_->linear_backward(t1.data(), c.gel.data(), P(kW2), rows, D.inner, D.d, dg.data(), false,
                          G(kW2), G(kB2));
    c.gel.release();
    ops_->gelu_backward(c.u.data(), dg.data(), rows * D.inner, dg.data());
    c.u.release();
    ops_->linear_backward(dg.data(), c.y2.data(), P(kW1), rows, D.d, D.inner, t2.data(), false,
                          G(kW1), G(kB1));
  }
  ops_->layer_norm_backward(t2.data(), c.r.data(), P(kLn2Gain), c.mean2.data(), c.rstd2.data(),
                            rows, D.d, t1.data(), G(kLn2Gain), G(kLn2Bias));
  c.y2.release();
  c.r.release();
  ops_->accumulate(t1.data(), dout, rows * D.d);  // dr = dx (residual) = da
  // a = dropout(W_p attention(q, k, v))
  ops_->dropout_backward(t1.data(), rows * D.d, drop, mix_seed(seed, layer, 0), t2.data());
  {
    Buffer<T> datt = buffer(rows * D.d);
    ops_->linear_backward(t2.data(), c.att.data(), P(kWp), rows, D.d, D.d, datt.data(), false,
                          G(kWp), static_cast<T*>(nullptr));
    Buffer<T> dq = buffer(rows * D.dqk), dk = buffer(rows * D.dqk), dv = buffer(rows * D.d);
    attention_backward(layer, batch, c, datt.data(), dq.data(), dk.data(), dv.data());
    datt.release();
    c.q.release();
    c.k.release();
    c.qp.release();
    c.kp.release();
    c.v.release();
    c.att.release();
    c.lse.release();
    ops_->linear_backward(dq.data(), c.y1.data(), P(kWq), rows, D.d, D.dqk, t2.data(), false,
                          G(kWq), static_cast<T*>(nullptr));
    ops_->linear_backward(dk.data(), c.y1.data(), P(kWk), rows, D.d, D.dqk, t2.data(), true, G(kWk),
                          static_cast<T*>(nullptr));
    ops_->linear_backward(dv.data(), c.y1.data(), P(kWv), rows, D.d, D.d, t2.data(), true, G(kWv),
                          static_cast<T*>(nullptr));
  }
  ops_->layer_norm_backward(t2.data(), x, P(kLn1Gain), c.mean1.data(), c.rstd1.data(), rows, D.d,
                            dx, G(kLn1Gain), G(kLn1Bias));
  ops_->accumulate(dx, t1.data(), rows * D.d);
  c = LayerCache();
}

#define SPARSE_INSTANTIATE_LAYER(T)                                                               \
  template void Transformer<T>::pad_qk(int64_t, Transformer<T>::LayerCache&);                     \
  template void Transformer<T>::attention_forward(int64_t, int64_t, Transformer<T>::LayerCache&); \
  template void Transformer<T>::attention_backward(int64_t, int64_t, Transformer<T>::LayerCache&, \
                                                   const T*, T*, T*, T*);                         \
  template void Transformer<T>::layer_forward(int64_t, const T*, T*, int64_t, uint64_t, bool,     \
                                              Transformer<T>::LayerCache&);                       \
  template void Transformer<T>::layer_backward(int64_t, const T*, const T*, int64_t, uint64_t,    \
                                               bool, Transformer<T>::LayerCache&, T*);
SPARSE_INSTANTIATE_LAYER(float)
SPARSE_INSTANTIATE_LAYER(double)

}  // namespace sparse::model
