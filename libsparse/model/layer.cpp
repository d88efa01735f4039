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

// Views the rows of a [batch * n, heads * dh] projection as a [batch, heads, n, dh] tensor in
// `backend`'s memory (and device).
TensorView head_view(const Backend& backend, void* data, sparse_dtype dtype, int64_t batch,
                     int64_t heads, int64_t n, int64_t dh) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.memory = backend.memory_kind();
  t.device = backend.device_index();
  t.ndim = 4;
  t.shape = {batch, heads, n, dh};
  t.strides = {n * heads * dh, dh, heads * dh, 1};
  return t;
}

TensorView lse_view(const Backend& backend, float* data, int64_t batch, int64_t heads, int64_t n) {
  TensorView t;
  t.data = data;
  t.dtype = SPARSE_DTYPE_F32;
  t.memory = backend.memory_kind();
  t.device = backend.device_index();
  t.ndim = 3;
  t.shape = {batch, heads, n, 1};
  t.strides = {heads * n, n, 1, 0};
  return t;
}

}  // namespace

template <typename T>
const Layout& Transformer<T>::layer_layout(int64_t layer) const {
  return *layouts_.layouts[static_cast<size_t>(layouts_.layer_layout(layer))];
}

template <typename T>
sparse_dtype Transformer<T>::stored_products() const {
  return store_activations_in_16_bits ? products_ : SPARSE_DTYPE_F32;
}

// The fused attention's dtype on this layer in mixed precision: the products' 16-bit dtype where
// the backend has 16-bit kernels for the layout, head and block size, else fp32 (as in fp32
// mode, and always for the attention by key lists).
template <typename T>
sparse_dtype Transformer<T>::stored_attention(int64_t layer) const {
  const sparse_dtype products = stored_products();
  if (!std::is_same_v<T, float> || use_listed_attention || products == SPARSE_DTYPE_F32)
    return SPARSE_DTYPE_F32;
  return backend_->supports_attention(layer_layout(layer), products, backend_->memory_kind(),
                                      dims_.head_v, SPARSE_ATTENTION_FUSED)
                 .empty()
             ? products
             : SPARSE_DTYPE_F32;
}

template <typename T>
template <typename Produce>
void Transformer<T>::store(Stored& s, sparse_dtype dtype, int64_t n, Produce&& produce) {
  s.release();
  if (dtype == SPARSE_DTYPE_F32) {
    s.full = buffer(n);
    produce(s.full.data());
    return;
  }
  Buffer<T> x = buffer(n);
  produce(x.data());
  s.half = Buffer<uint16_t>(backend_, n, &meter);
  s.dtype = dtype;
  ops_->round_to_16(x.data(), n, dtype, s.half.data());
}

template <typename T>
void Transformer<T>::product(const Stored& x, const T* w, const T* b, int64_t rows, int64_t in,
                             int64_t out, T* y) {
  if (x.in_16_bits())
    ops_->linear_forward_16(x.half.data(), x.dtype, w, b, rows, in, out, y);
  else
    ops_->linear_forward(x.full.data(), w, b, rows, in, out, y);
}

template <typename T>
void Transformer<T>::product_backward(const T* dy, const Stored& x, const T* w, int64_t rows,
                                      int64_t in, int64_t out, T* dx, bool accumulate_dx, T* dw,
                                      T* db) {
  if (x.in_16_bits())
    ops_->linear_backward_16(dy, x.half.data(), x.dtype, w, rows, in, out, dx, accumulate_dx, dw,
                             db);
  else
    ops_->linear_backward(dy, x.full.data(), w, rows, in, out, dx, accumulate_dx, dw, db);
}

// The fused kernels take one head size for Q, K and V: with half-size Q and K heads, Q and K
// zero-padded to the value head size (the dot products are unchanged). In fp32 the copies live
// only as long as one attention call: keeping them for the backward would save one copy per layer
// but cost more activation memory (twice q and k), so the backward pads again. In 16 bits the
// stored q and k are the padded ones (the same bytes as fp32 unpadded ones).
template <typename T>
void Transformer<T>::pad_qk(int64_t batch, LayerCache& c) {
  const Dims& D = dims_;
  if (c.qp.size() > 0) return;
  const int64_t rows = batch * D.n;
  c.qp = buffer(rows * D.d);
  c.kp = buffer(rows * D.d);
  ops_->copy_rows(c.q.full.data(), D.head_qk, c.qp.data(), D.head_v, rows * D.heads, D.head_qk);
  ops_->copy_rows(c.k.full.data(), D.head_qk, c.kp.data(), D.head_v, rows * D.heads, D.head_qk);
}

template <typename T>
void Transformer<T>::attention_forward(int64_t layer, int64_t batch, LayerCache& c) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D.head_qk)));
  if constexpr (std::is_same_v<T, float>) {
    if (!use_listed_attention) {
      auto view = [&](void* data, sparse_dtype dtype) {
        return head_view(*backend_, data, dtype, batch, D.heads, D.n, D.head_v);
      };
      AttentionForwardArgs a;
      a.layout = &layer_layout(layer);
      a.scale = scale;
      a.lse = lse_view(*backend_, c.lse.data(), batch, D.heads, D.n);
      if (c.v.in_16_bits()) {  // q, k (padded) and v stored in the attention's 16-bit dtype
        const sparse_dtype dtype = c.v.dtype;
        c.att.release();
        c.att.half = Buffer<uint16_t>(backend_, rows * D.d, &meter);
        c.att.dtype = dtype;
        a.q = view(c.q.half.data(), dtype);
        a.k = view(c.k.half.data(), dtype);
        a.v = view(c.v.half.data(), dtype);
        a.out = view(c.att.half.data(), dtype);
        {
          const OpProfile::Scope timed(profile_.get(), "attention_forward");
          backend_->attention_forward(a);
        }
        return;
      }
      float* q = c.q.full.data();
      float* k = c.k.full.data();
      if (D.head_qk != D.head_v) {
        pad_qk(batch, c);
        q = c.qp.data();
        k = c.kp.data();
      }
      c.att.release();
      c.att.full = buffer(rows * D.d);
      a.q = view(q, SPARSE_DTYPE_F32);
      a.k = view(k, SPARSE_DTYPE_F32);
      a.v = view(c.v.full.data(), SPARSE_DTYPE_F32);
      a.out = view(c.att.full.data(), SPARSE_DTYPE_F32);
      {
        const OpProfile::Scope timed(profile_.get(), "attention_forward");
        backend_->attention_forward(a);
      }
      c.qp.release();
      c.kp.release();
      return;
    }
  }
  c.att.release();
  c.att.full = buffer(rows * D.d);
  ops_->listed_attention_forward(key_lists(layer).view(), batch, D.head_qk, D.head_v, scale,
                                 c.q.full.data(), c.k.full.data(), c.v.full.data(),
                                 c.att.full.data(), c.lse.data());
}

template <typename T>
void Transformer<T>::attention_backward(int64_t layer, int64_t batch, LayerCache& c, const T* datt,
                                        T* dq, T* dk, T* dv) {
  const Dims& D = dims_;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D.head_qk)));
  if constexpr (std::is_same_v<T, float>) {
    if (!use_listed_attention) {
      auto view = [&](const void* data, sparse_dtype dtype) {
        return head_view(*backend_, const_cast<void*>(data), dtype, batch, D.heads, D.n, D.head_v);
      };
      const int64_t rows = batch * D.n;
      AttentionBackwardArgs a;
      a.layout = &layer_layout(layer);
      a.scale = scale;
      a.lse = lse_view(*backend_, c.lse.data(), batch, D.heads, D.n);
      // With half-size Q/K heads the kernels' dq and dk are padded to head_v.
      const bool padded = D.head_qk != D.head_v;
      Buffer<float> dqp, dkp;
      float *dqo = dq, *dko = dk;
      if (padded) {
        dqp = buffer(rows * D.d);
        dkp = buffer(rows * D.d);
        dqo = dqp.data();
        dko = dkp.data();
      }
      if (c.v.in_16_bits()) {  // 16-bit tensors in and out; the gradients widened to fp32
        const sparse_dtype dtype = c.v.dtype;
        const int64_t count = rows * D.d;
        Buffer<uint16_t> dout(backend_, count, &meter), dq16(backend_, count, &meter),
            dk16(backend_, count, &meter), dv16(backend_, count, &meter);
        ops_->round_to_16(datt, count, dtype, dout.data());
        a.q = view(c.q.half.data(), dtype);
        a.k = view(c.k.half.data(), dtype);
        a.v = view(c.v.half.data(), dtype);
        a.out = view(c.att.half.data(), dtype);
        a.dout = view(dout.data(), dtype);
        a.dq = view(dq16.data(), dtype);
        a.dk = view(dk16.data(), dtype);
        a.dv = view(dv16.data(), dtype);
        {
          const OpProfile::Scope timed(profile_.get(), "attention_backward");
          backend_->attention_backward(a);
        }
        ops_->widen_from_16(dq16.data(), count, dtype, dqo);
        ops_->widen_from_16(dk16.data(), count, dtype, dko);
        ops_->widen_from_16(dv16.data(), count, dtype, dv);
      } else {
        const float* q = c.q.full.data();
        const float* k = c.k.full.data();
        if (padded) {
          pad_qk(batch, c);
          q = c.qp.data();
          k = c.kp.data();
        }
        a.q = view(q, SPARSE_DTYPE_F32);
        a.k = view(k, SPARSE_DTYPE_F32);
        a.v = view(c.v.full.data(), SPARSE_DTYPE_F32);
        a.out = view(c.att.full.data(), SPARSE_DTYPE_F32);
        a.dout = view(datt, SPARSE_DTYPE_F32);
        a.dq = view(dqo, SPARSE_DTYPE_F32);
        a.dk = view(dko, SPARSE_DTYPE_F32);
        a.dv = view(dv, SPARSE_DTYPE_F32);
        {
          const OpProfile::Scope timed(profile_.get(), "attention_backward");
          backend_->attention_backward(a);
        }
      }
      if (padded) {
        ops_->copy_rows(dqp.data(), D.head_v, dq, D.head_qk, rows * D.heads, D.head_qk);
        ops_->copy_rows(dkp.data(), D.head_v, dk, D.head_qk, rows * D.heads, D.head_qk);
      }
      return;
    }
  }
  ops_->listed_attention_backward(key_lists(layer).view(), batch, D.head_qk, D.head_v, scale,
                                  c.q.full.data(), c.k.full.data(), c.v.full.data(),
                                  c.att.full.data(), c.lse.data(), datt, dq, dk, dv);
}

template <typename T>
void Transformer<T>::layer_forward(int64_t layer, const T* x, T* out, int64_t batch, uint64_t seed,
                                   bool train, LayerCache& c) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const double drop = train ? static_cast<double>(config_.dropout) : 0.0;
  const T* none = nullptr;
  auto P = [&](LayerTensor t) { return p(table_.layer(layer, t)); };
  const sparse_dtype products16 = stored_products(), attention16 = stored_attention(layer);
  c.mean1 = buffer(rows);
  c.rstd1 = buffer(rows);
  store(c.y1, products16, rows * D.d, [&](T* y) {
    ops_->layer_norm_forward(x, P(kLn1Gain), P(kLn1Bias), rows, D.d, T(kLayerNormEps), y,
                             c.mean1.data(), c.rstd1.data());
  });
  // In 16 bits the attention reads q and k padded to head_v: they are stored padded.
  const bool pad16 = attention16 != SPARSE_DTYPE_F32 && D.head_qk != D.head_v;
  for (auto [s, w] : {std::pair{&c.q, kWq}, std::pair{&c.k, kWk}}) {
    store(*s, attention16, rows * (pad16 ? D.d : D.dqk), [&, w = w](T* y) {
      if (!pad16) return product(c.y1, P(w), none, rows, D.d, D.dqk, y);
      Buffer<T> unpadded = buffer(rows * D.dqk);
      product(c.y1, P(w), none, rows, D.d, D.dqk, unpadded.data());
      ops_->copy_rows(unpadded.data(), D.head_qk, y, D.head_v, rows * D.heads, D.head_qk);
    });
  }
  store(c.v, attention16, rows * D.d,
        [&](T* y) { product(c.y1, P(kWv), none, rows, D.d, D.d, y); });
  c.lse = buffer(batch * D.heads * D.n);
  attention_forward(layer, batch, c);
  {
    Buffer<T> a = buffer(rows * D.d);
    product(c.att, P(kWp), none, rows, D.d, D.d, a.data());
    ops_->dropout_forward(a.data(), rows * D.d, drop, mix_seed(seed, layer, 0), a.data());
    c.r = buffer(rows * D.d);
    ops_->add(x, a.data(), rows * D.d, c.r.data());
  }
  c.mean2 = buffer(rows);
  c.rstd2 = buffer(rows);
  store(c.y2, products16, rows * D.d, [&](T* y) {
    ops_->layer_norm_forward(c.r.data(), P(kLn2Gain), P(kLn2Bias), rows, D.d, T(kLayerNormEps), y,
                             c.mean2.data(), c.rstd2.data());
  });
  c.u = buffer(rows * D.inner);
  product(c.y2, P(kW1), P(kB1), rows, D.d, D.inner, c.u.data());
  store(c.gel, products16, rows * D.inner,
        [&](T* y) { ops_->gelu_forward(c.u.data(), rows * D.inner, y); });
  Buffer<T> f = buffer(rows * D.d);
  product(c.gel, P(kW2), P(kB2), rows, D.inner, D.d, f.data());
  ops_->dropout_forward(f.data(), rows * D.d, drop, mix_seed(seed, layer, 1), f.data());
  ops_->add(c.r.data(), f.data(), rows * D.d, out);
}

template <typename T>
void Transformer<T>::layer_backward(int64_t layer, const T* dout, const T* x, int64_t batch,
                                    uint64_t seed, bool train, LayerCache& c, T* dx) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const double drop = train ? static_cast<double>(config_.dropout) : 0.0;
  T* none = nullptr;
  auto P = [&](LayerTensor t) { return p(table_.layer(layer, t)); };
  auto G = [&](LayerTensor t) { return g(table_.layer(layer, t)); };
  Buffer<T> t1 = buffer(rows * D.d), t2 = buffer(rows * D.d);
  // b = dropout(W2 gelu(W1 ln2(r) + b1) + b2)
  ops_->dropout_backward(dout, rows * D.d, drop, mix_seed(seed, layer, 1), t1.data());
  {
    Buffer<T> dg = buffer(rows * D.inner);
    product_backward(t1.data(), c.gel, P(kW2), rows, D.inner, D.d, dg.data(), false, G(kW2),
                     G(kB2));
    c.gel.release();
    ops_->gelu_backward(c.u.data(), dg.data(), rows * D.inner, dg.data());
    c.u.release();
    product_backward(dg.data(), c.y2, P(kW1), rows, D.d, D.inner, t2.data(), false, G(kW1), G(kB1));
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
    product_backward(t2.data(), c.att, P(kWp), rows, D.d, D.d, datt.data(), false, G(kWp), none);
    Buffer<T> dq = buffer(rows * D.dqk), dk = buffer(rows * D.dqk), dv = buffer(rows * D.d);
    attention_backward(layer, batch, c, datt.data(), dq.data(), dk.data(), dv.data());
    datt.release();
    for (Stored* s : {&c.q, &c.k, &c.v, &c.att}) s->release();
    c.qp.release();
    c.kp.release();
    c.lse.release();
    product_backward(dq.data(), c.y1, P(kWq), rows, D.d, D.dqk, t2.data(), false, G(kWq), none);
    product_backward(dk.data(), c.y1, P(kWk), rows, D.d, D.dqk, t2.data(), true, G(kWk), none);
    product_backward(dv.data(), c.y1, P(kWv), rows, D.d, D.d, t2.data(), true, G(kWv), none);
  }
  ops_->layer_norm_backward(t2.data(), x, P(kLn1Gain), c.mean1.data(), c.rstd1.data(), rows, D.d,
                            dx, G(kLn1Gain), G(kLn1Bias));
  ops_->accumulate(dx, t1.data(), rows * D.d);
  c = LayerCache();
}

#define SPARSE_INSTANTIATE_LAYER(T)                                                               \
  template const Layout& Transformer<T>::layer_layout(int64_t) const;                             \
  template sparse_dtype Transformer<T>::stored_products() const;                                  \
  template sparse_dtype Transformer<T>::stored_attention(int64_t) const;                          \
  template void Transformer<T>::product(const Transformer<T>::Stored&, const T*, const T*,        \
                                        int64_t, int64_t, int64_t, T*);                           \
  template void Transformer<T>::product_backward(const T*, const Transformer<T>::Stored&,         \
                                                 const T*, int64_t, int64_t, int64_t, T*, bool,   \
                                                 T*, T*);                                         \
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
