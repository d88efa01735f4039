// The Sparse Transformer forward, backward, recomputation and incremental decoding.
#include "transformer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "error.hpp"
#include "resources.hpp"
#include "sparse/layout.h"

namespace sparse::model {

namespace {

constexpr double kLayerNormEps = 1e-5;
constexpr double kFinalNormEps = 1e-6;
constexpr int64_t kVocab = Dims::vocab;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform01(uint64_t& state) {
  return static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
}

// Box-Muller on our own generator, so initialisation is identical on every platform.
double normal(uint64_t& state) {
  const double u1 = 1.0 - uniform01(state);  // (0, 1]
  const double u2 = uniform01(state);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

sparse_pattern make_pattern(sparse_pattern_kind kind, int32_t head, const sparse_model_config& c) {
  sparse_pattern p;
  sparse_pattern_default(&p, kind);
  p.head = head;
  p.stride = c.stride;
  p.summary = c.summary;
  return p;
}

// The two head types of the configured pattern family.
std::pair<sparse_pattern_kind, sparse_pattern_kind> head_types(const sparse_model_config& c) {
  if (c.attention == SPARSE_MODEL_ATTENTION_FIXED)
    return {SPARSE_PATTERN_FIXED_BLOCK, SPARSE_PATTERN_FIXED_SUMMARY};
  return {SPARSE_PATTERN_STRIDED_ROW, SPARSE_PATTERN_STRIDED_COLUMN};
}

std::unique_ptr<Layout> layout_of(const sparse_model_config& c,
                                  const std::vector<sparse_pattern>& patterns) {
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = c.seq_len;
  desc.block_size = c.block_size;
  desc.num_heads = c.num_heads;
  desc.patterns = patterns.data();
  desc.num_patterns = static_cast<int32_t>(patterns.size());
  desc.transpose_strided_column = 1;
  return build_layout(desc);
}

}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t s = a;
  uint64_t x = splitmix64(s) ^ b;
  x = splitmix64(x) ^ c;
  x = splitmix64(x) ^ d;
  return splitmix64(x);
}

ops::KeyLists KeyListSet::view() const {
  ops::KeyLists v;
  v.seq = seq;
  v.heads = heads;
  v.key_ptr = ptr_view.data();
  v.keys = keys_view.data();
  return v;
}

KeyListSet key_lists_from_layout(const Layout& layout) {
  KeyListSet set;
  set.seq = layout.seq_len;
  set.heads = layout.num_heads;
  const int64_t n = layout.seq_len;
  set.ptr.resize(static_cast<size_t>(layout.num_heads));
  set.keys.resize(static_cast<size_t>(layout.num_heads));
  for (int h = 0; h < layout.num_heads; ++h) {
    // Heads with the same pattern share a HeadLayout; share their lists too.
    int same = -1;
    for (int e = 0; e < h && same < 0; ++e)
      if (layout.heads[static_cast<size_t>(e)] == layout.heads[static_cast<size_t>(h)]) same = e;
    if (same >= 0) {
      set.ptr[static_cast<size_t>(h)] = set.ptr[static_cast<size_t>(same)];
      set.keys[static_cast<size_t>(h)] = set.keys[static_cast<size_t>(same)];
      continue;
    }
    const HeadLayout& L = layout.head(h);
    const int B = L.block;
    std::vector<std::vector<int32_t>> rows(static_cast<size_t>(n));
    for (int64_t I = 0; I < L.num_blocks; ++I) {
      for (int64_t e = L.row_ptr[static_cast<size_t>(I)]; e < L.row_ptr[static_cast<size_t>(I) + 1];
           ++e) {
        const int64_t J = L.col_idx[static_cast<size_t>(e)];
        const int32_t id = L.mask_id[static_cast<size_t>(e)];
        const uint64_t* bits = id >= 0 ? L.mask(id) : nullptr;
        for (int r = 0; r < B; ++r) {
          const int64_t ti = I * B + r;
          const int64_t i = ti < L.n_computed ? L.natural(ti) : -1;
          if (i < 0) continue;
          for (int col = 0; col < B; ++col) {
            const int64_t tj = J * B + col;
            const int64_t j = tj < L.n_computed ? L.natural(tj) : -1;
            if (j < 0) continue;
            if (bits != nullptr &&
                ((bits[static_cast<size_t>(r) * L.words + (col >> 6)] >> (col & 63)) & 1u) == 0)
              continue;
            rows[static_cast<size_t>(i)].push_back(static_cast<int32_t>(j));
          }
        }
      }
    }
    std::vector<int64_t>& ptr = set.ptr[static_cast<size_t>(h)];
    std::vector<int32_t>& keys = set.keys[static_cast<size_t>(h)];
    ptr.assign(static_cast<size_t>(n) + 1, 0);
    for (int64_t i = 0; i < n; ++i) {
      auto& row = rows[static_cast<size_t>(i)];
      std::sort(row.begin(), row.end());
      ptr[static_cast<size_t>(i) + 1] =
          ptr[static_cast<size_t>(i)] + static_cast<int64_t>(row.size());
    }
    keys.reserve(static_cast<size_t>(ptr.back()));
    for (auto& row : rows) keys.insert(keys.end(), row.begin(), row.end());
  }
  for (int h = 0; h < layout.num_heads; ++h) {
    set.ptr_view.push_back(set.ptr[static_cast<size_t>(h)].data());
    set.keys_view.push_back(set.keys[static_cast<size_t>(h)].data());
  }
  return set;
}

ModelLayouts build_model_layouts(const sparse_model_config& c) {
  ModelLayouts m;
  m.layer_layout.assign(static_cast<size_t>(c.num_layers), 0);
  if (c.attention == SPARSE_MODEL_ATTENTION_DENSE) {
    m.layouts.push_back(layout_of(c, {make_pattern(SPARSE_PATTERN_DENSE, -1, c)}));
    return m;
  }
  const auto [type1, type2] = head_types(c);
  switch (c.head_mode) {
    case SPARSE_HEADS_INTERLEAVED: {
      m.layouts.push_back(layout_of(c, {make_pattern(type1, -1, c)}));
      m.layouts.push_back(layout_of(c, {make_pattern(type2, -1, c)}));
      const size_t len = strnlen(c.layer_cycle, sizeof c.layer_cycle);
      for (int64_t l = 0; l < c.num_layers; ++l)
        m.layer_layout[static_cast<size_t>(l)] =
            c.layer_cycle[static_cast<size_t>(l) % len] == '1' ? 0 : 1;
      break;
    }
    case SPARSE_HEADS_MERGED:
      m.layouts.push_back(layout_of(c, {make_pattern(type1, -1, c), make_pattern(type2, -1, c)}));
      break;
    case SPARSE_HEADS_MULTIHEAD: {
      std::vector<sparse_pattern> patterns;
      for (int32_t h = 0; h < c.num_heads; ++h)
        patterns.push_back(make_pattern(h % 2 == 0 ? type1 : type2, h, c));
      m.layouts.push_back(layout_of(c, patterns));
      break;
    }
  }
  return m;
}

// ---------------------------------------------------------------- Transformer

// Activations of one layer that its backward pass needs (the input x is the residual stream,
// kept by the caller).
template <typename T>
struct Transformer<T>::LayerCache {
  Buffer<T> y1, mean1, rstd1;  // ln1(x)
  Buffer<T> q, k, v;           // projections [rows, dqk | dqk | d]
  Buffer<T> att, lse;          // attention output [rows, d], log-sum-exp [batch, heads, n]
  Buffer<T> r;                 // x + a
  Buffer<T> y2, mean2, rstd2;  // ln2(r)
  Buffer<T> u, gel;            // W1 y2 + b1 and gelu(u) [rows, inner]
};

template <typename T>
Transformer<T>::Transformer(const sparse_model_config& config, Backend* backend)
    : config_(config), backend_(backend) {
  validate_config(config_);
  // Parameters, gradients and (in the trainer) Adam's two moments.
  check_memory(4.0 * sizeof(T) * parameter_estimate(config_),
               detail::concat("the model's parameters, gradients and optimiser moments (about ",
                              static_cast<int64_t>(std::min(parameter_estimate(config_), 9e18)),
                              " parameters of ", sizeof(T), " bytes, 4 copies)"));
  table_ = param_table(config_);
  dims_ = dims_of(config_);
  layouts_ = build_model_layouts(config_);
  key_lists_.resize(layouts_.layouts.size());
  params.assign(static_cast<size_t>(table_.total), T(0));
  grads.assign(static_cast<size_t>(table_.total), T(0));
}

template <typename T>
Transformer<T>::~Transformer() = default;

template <typename T>
void Transformer<T>::init_params(uint64_t seed) {
  for (size_t i = 0; i < table_.tensors.size(); ++i) {
    const TensorSpec& s = table_.tensors[i];
    T* dst = params.data() + s.offset;
    uint64_t state = mix_seed(seed, 0x1417, i);
    for (int64_t e = 0; e < s.size; ++e) {
      switch (s.init) {
        case Init::Zero:
          dst[e] = T(0);
          break;
        case Init::One:
          dst[e] = T(1);
          break;
        case Init::Normal:
          dst[e] = static_cast<T>(s.std * normal(state));
          break;
      }
    }
  }
}

template <typename T>
const KeyListSet& Transformer<T>::key_lists(int64_t layer) {
  const size_t id = static_cast<size_t>(layouts_.layer_layout[static_cast<size_t>(layer)]);
  if (!key_lists_[id])
    key_lists_[id] = std::make_unique<KeyListSet>(key_lists_from_layout(*layouts_.layouts[id]));
  return *key_lists_[id];
}

template <typename T>
void Transformer<T>::embed(const uint8_t* tokens, int64_t batch, T* h) const {
  ops::PositionShape shape;
  shape.num_dims = config_.num_position_dims;
  std::vector<const T*> tables;
  for (int k = 0; k < shape.num_dims; ++k) {
    shape.sizes[k] = config_.position_shape[k];
    tables.push_back(p(table_.tensors[static_cast<size_t>(table_.pos0 + k)]));
  }
  ops::embedding_forward(tokens, batch, dims_.n, dims_.d, p(table_.tensors[table_.token]),
                         p(table_.tensors[table_.start]), tables.data(), shape, h);
}

namespace {

// Views the rows of a [batch * n, heads * dh] projection as a [batch, heads, n, dh] tensor.
TensorView head_view(float* data, int64_t batch, int64_t heads, int64_t n, int64_t dh) {
  TensorView t;
  t.data = data;
  t.dtype = SPARSE_DTYPE_F32;
  t.memory = SPARSE_MEMORY_HOST;
  t.ndim = 4;
  t.shape = {batch, heads, n, dh};
  t.strides = {n * heads * dh, dh, heads * dh, 1};
  return t;
}

TensorView lse_view(float* data, int64_t batch, int64_t heads, int64_t n) {
  TensorView t;
  t.data = data;
  t.dtype = SPARSE_DTYPE_F32;
  t.memory = SPARSE_MEMORY_HOST;
  t.ndim = 3;
  t.shape = {batch, heads, n, 1};
  t.strides = {heads * n, n, 1, 0};
  return t;
}

// Copies [rows, heads * from] into [rows, heads * to] (to >= from), zero-padding each head.
template <typename T>
void pad_heads(const T* src, int64_t rows, int64_t heads, int64_t from, int64_t to, T* dst) {
  for (int64_t r = 0; r < rows * heads; ++r) {
    std::copy(src + r * from, src + (r + 1) * from, dst + r * to);
    std::fill(dst + r * to + from, dst + (r + 1) * to, T(0));
  }
}

template <typename T>
void unpad_heads(const T* src, int64_t rows, int64_t heads, int64_t from, int64_t to, T* dst) {
  for (int64_t r = 0; r < rows * heads; ++r)
    std::copy(src + r * from, src + r * from + to, dst + r * to);
}

}  // namespace

template <typename T>
void Transformer<T>::attention_forward(int64_t layer, int64_t batch, LayerCache& c) {
  const Dims& D = dims_;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D.head_qk)));
  if constexpr (std::is_same_v<T, float>) {
    if (!use_listed_attention) {
      require(backend_ != nullptr, "the model has no attention backend");
      const int64_t rows = batch * D.n;
      AttentionForwardArgs a;
      a.layout =
          layouts_.layouts[static_cast<size_t>(layouts_.layer_layout[static_cast<size_t>(layer)])]
              .get();
      a.scale = scale;
      Buffer<float> qp, kp;
      float* q = c.q.data();
      float* k = c.k.data();
      if (D.head_qk != D.head_v) {
        // The fused kernels take one head size for Q, K and V: zero-pad the half-size Q and K
        // (the dot products are unchanged).
        qp = Buffer<float>(&meter, rows * D.d);
        kp = Buffer<float>(&meter, rows * D.d);
        pad_heads(c.q.data(), rows, D.heads, D.head_qk, D.head_v, qp.data());
        pad_heads(c.k.data(), rows, D.heads, D.head_qk, D.head_v, kp.data());
        q = qp.data();
        k = kp.data();
      }
      a.q = head_view(q, batch, D.heads, D.n, D.head_v);
      a.k = head_view(k, batch, D.heads, D.n, D.head_v);
      a.v = head_view(c.v.data(), batch, D.heads, D.n, D.head_v);
      a.out = head_view(c.att.data(), batch, D.heads, D.n, D.head_v);
      a.lse = lse_view(c.lse.data(), batch, D.heads, D.n);
      backend_->attention_forward(a);
      return;
    }
  }
  ops::listed_attention_forward(key_lists(layer).view(), batch, D.head_qk, D.head_v, scale,
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
      Buffer<float> qp, kp, dqp, dkp;
      float *q = c.q.data(), *k = c.k.data(), *dqo = dq, *dko = dk;
      if (padded) {
        qp = Buffer<float>(&meter, rows * D.d);
        kp = Buffer<float>(&meter, rows * D.d);
        dqp = Buffer<float>(&meter, rows * D.d);
        dkp = Buffer<float>(&meter, rows * D.d);
        pad_heads(c.q.data(), rows, D.heads, D.head_qk, D.head_v, qp.data());
        pad_heads(c.k.data(), rows, D.heads, D.head_qk, D.head_v, kp.data());
        q = qp.data();
        k = kp.data();
        dqo = dqp.data();
        dko = dkp.data();
      }
      a.q = head_view(q, batch, D.heads, D.n, D.head_v);
      a.k = head_view(k, batch, D.heads, D.n, D.head_v);
      a.v = head_view(c.v.data(), batch, D.heads, D.n, D.head_v);
      a.out = head_view(c.att.data(), batch, D.heads, D.n, D.head_v);
      a.lse = lse_view(c.lse.data(), batch, D.heads, D.n);
      a.dout = head_view(const_cast<float*>(datt), batch, D.heads, D.n, D.head_v);
      a.dq = head_view(dqo, batch, D.heads, D.n, D.head_v);
      a.dk = head_view(dko, batch, D.heads, D.n, D.head_v);
      a.dv = head_view(dv, batch, D.heads, D.n, D.head_v);
      backend_->attention_backward(a);
      if (padded) {
        unpad_heads(dqp.data(), rows, D.heads, D.head_v, D.head_qk, dq);
        unpad_heads(dkp.data(), rows, D.heads, D.head_v, D.head_qk, dk);
      }
      return;
    }
  }
  ops::listed_attention_backward(key_lists(layer).view(), batch, D.head_qk, D.head_v, scale,
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
  MemoryMeter* m = &meter;
  c.y1 = Buffer<T>(m, rows * D.d);
  c.mean1 = Buffer<T>(m, rows);
  c.rstd1 = Buffer<T>(m, rows);
  ops::layer_norm_forward(x, P(kLn1Gain), P(kLn1Bias), rows, D.d, T(kLayerNormEps), c.y1.data(),
                          c.mean1.data(), c.rstd1.data());
  c.q = Buffer<T>(m, rows * D.dqk);
  c.k = Buffer<T>(m, rows * D.dqk);
  c.v = Buffer<T>(m, rows * D.d);
  ops::linear_forward(c.y1.data(), P(kWq), static_cast<const T*>(nullptr), rows, D.d, D.dqk,
                      c.q.data());
  ops::linear_forward(c.y1.data(), P(kWk), static_cast<const T*>(nullptr), rows, D.d, D.dqk,
                      c.k.data());
  ops::linear_forward(c.y1.data(), P(kWv), static_cast<const T*>(nullptr), rows, D.d, D.d,
                      c.v.data());
  c.att = Buffer<T>(m, rows * D.d);
  c.lse = Buffer<T>(m, batch * D.heads * D.n);
  attention_forward(layer, batch, c);
  {
    Buffer<T> a(m, rows * D.d);
    ops::linear_forward(c.att.data(), P(kWp), static_cast<const T*>(nullptr), rows, D.d, D.d,
                        a.data());
    ops::dropout_forward(a.data(), rows * D.d, drop, mix_seed(seed, layer, 0), a.data());
    c.r = Buffer<T>(m, rows * D.d);
    for (int64_t i = 0; i < rows * D.d; ++i) c.r.data()[i] = x[i] + a.data()[i];
  }
  c.y2 = Buffer<T>(m, rows * D.d);
  c.mean2 = Buffer<T>(m, rows);
  c.rstd2 = Buffer<T>(m, rows);
  ops::layer_norm_forward(c.r.data(), P(kLn2Gain), P(kLn2Bias), rows, D.d, T(kLayerNormEps),
                          c.y2.data(), c.mean2.data(), c.rstd2.data());
  c.u = Buffer<T>(m, rows * D.inner);
  c.gel = Buffer<T>(m, rows * D.inner);
  ops::linear_forward(c.y2.data(), P(kW1), P(kB1), rows, D.d, D.inner, c.u.data());
  ops::gelu_forward(c.u.data(), rows * D.inner, c.gel.data());
  Buffer<T> f(m, rows * D.d);
  ops::linear_forward(c.gel.data(), P(kW2), P(kB2), rows, D.inner, D.d, f.data());
  ops::dropout_forward(f.data(), rows * D.d, drop, mix_seed(seed, layer, 1), f.data());
  for (int64_t i = 0; i < rows * D.d; ++i) out[i] = c.r.data()[i] + f.data()[i];
}

template <typename T>
void Transformer<T>::layer_backward(int64_t layer, const T* dout, const T* x, int64_t batch,
                                    uint64_t seed, bool train, LayerCache& c, T* dx) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const double drop = train ? static_cast<double>(config_.dropout) : 0.0;
  auto P = [&](LayerTensor t) { return p(table_.layer(layer, t)); };
  auto G = [&](LayerTensor t) { return g(table_.layer(layer, t)); };
  MemoryMeter* m = &meter;
  Buffer<T> t1(m, rows * D.d), t2(m, rows * D.d);
  // b = dropout(W2 gelu(W1 ln2(r) + b1) + b2)
  ops::dropout_backward(dout, rows * D.d, drop, mix_seed(seed, layer, 1), t1.data());
  {
    Buffer<T> dg(m, rows * D.inner);
    ops::linear_backward(t1.data(), c.gel.data(), P(kW2), rows, D.inner, D.d, dg.data(), false,
                         G(kW2), G(kB2));
    c.gel.release();
    ops::gelu_backward(c.u.data(), dg.data(), rows * D.inner, dg.data());
    c.u.release();
    ops::linear_backward(dg.data(), c.y2.data(), P(kW1), rows, D.d, D.inner, t2.data(), false,
                         G(kW1), G(kB1));
  }
  ops::layer_norm_backward(t2.data(), c.r.data(), P(kLn2Gain), c.mean2.data(), c.rstd2.data(), rows,
                           D.d, t1.data(), G(kLn2Gain), G(kLn2Bias));
  c.y2.release();
  c.r.release();
  for (int64_t i = 0; i < rows * D.d; ++i) t1.data()[i] += dout[i];  // dr = dx (residual) = da
  // a = dropout(W_p attention(q, k, v))
  ops::dropout_backward(t1.data(), rows * D.d, drop, mix_seed(seed, layer, 0), t2.data());
  {
    Buffer<T> datt(m, rows * D.d);
    ops::linear_backward(t2.data(), c.att.data(), P(kWp), rows, D.d, D.d, datt.data(), false,
                         G(kWp), static_cast<T*>(nullptr));
    Buffer<T> dq(m, rows * D.dqk), dk(m, rows * D.dqk), dv(m, rows * D.d);
    attention_backward(layer, batch, c, datt.data(), dq.data(), dk.data(), dv.data());
    datt.release();
    c.q.release();
    c.k.release();
    c.v.release();
    c.att.release();
    c.lse.release();
    ops::linear_backward(dq.data(), c.y1.data(), P(kWq), rows, D.d, D.dqk, t2.data(), false, G(kWq),
                         static_cast<T*>(nullptr));
    ops::linear_backward(dk.data(), c.y1.data(), P(kWk), rows, D.d, D.dqk, t2.data(), true, G(kWk),
                         static_cast<T*>(nullptr));
    ops::linear_backward(dv.data(), c.y1.data(), P(kWv), rows, D.d, D.d, t2.data(), true, G(kWv),
                         static_cast<T*>(nullptr));
  }
  ops::layer_norm_backward(t2.data(), x, P(kLn1Gain), c.mean1.data(), c.rstd1.data(), rows, D.d, dx,
                           G(kLn1Gain), G(kLn1Bias));
  for (int64_t i = 0; i < rows * D.d; ++i) dx[i] += t1.data()[i];
  c = LayerCache();
}

template <typename T>
double Transformer<T>::forward(const uint8_t* tokens, int64_t batch, uint64_t dropout_seed,
                               bool train, T* logits_out) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  MemoryMeter* m = &meter;
  Buffer<T> h(m, rows * D.d), next(m, rows * D.d);
  embed(tokens, batch, h.data());
  for (int64_t l = 0; l < D.layers; ++l) {
    LayerCache c;
    layer_forward(l, h.data(), next.data(), batch, dropout_seed, train, c);
    std::swap(h, next);
  }
  Buffer<T> y(m, rows * D.d), mean(m, rows), rstd(m, rows);
  ops::layer_norm_forward(h.data(), p(table_.tensors[table_.final_gain]),
                          p(table_.tensors[table_.final_bias]), rows, D.d, T(kFinalNormEps),
                          y.data(), mean.data(), rstd.data());
  Buffer<T> logits(m, rows * kVocab);
  if (table_.out >= 0)
    ops::linear_forward(y.data(), p(table_.tensors[table_.out]), static_cast<const T*>(nullptr),
                        rows, D.d, kVocab, logits.data());
  else
    ops::linear_transposed_forward(y.data(), p(table_.tensors[table_.token]), rows, D.d, kVocab,
                                   logits.data());
  if (logits_out != nullptr) std::copy(logits.data(), logits.data() + rows * kVocab, logits_out);
  return ops::softmax_cross_entropy(logits.data(), tokens, rows, kVocab, T(0),
                                    static_cast<T*>(nullptr));
}

template <typename T>
double Transformer<T>::forward_backward(const uint8_t* tokens, int64_t batch, T grad_scale,
                                        uint64_t dropout_seed, bool train) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const bool recompute = config_.recompute != 0;
  MemoryMeter* m = &meter;
  // The residual stream entering each layer, and the layer caches unless recomputing.
  std::vector<Buffer<T>> h(static_cast<size_t>(D.layers) + 1);
  std::vector<LayerCache> caches(recompute ? 0 : static_cast<size_t>(D.layers));
  h[0] = Buffer<T>(m, rows * D.d);
  embed(tokens, batch, h[0].data());
  for (int64_t l = 0; l < D.layers; ++l) {
    const size_t i = static_cast<size_t>(l);
    h[i + 1] = Buffer<T>(m, rows * D.d);
    LayerCache scratch;
    layer_forward(l, h[i].data(), h[i + 1].data(), batch, dropout_seed, train,
                  recompute ? scratch : caches[i]);
  }
  // Final norm, logits and loss.
  const TensorSpec& fg = table_.tensors[table_.final_gain];
  const TensorSpec& fb = table_.tensors[table_.final_bias];
  Buffer<T> dh(m, rows * D.d);
  double loss = 0;
  {
    Buffer<T> y(m, rows * D.d), mean(m, rows), rstd(m, rows);
    ops::layer_norm_forward(h.back().data(), p(fg), p(fb), rows, D.d, T(kFinalNormEps), y.data(),
                            mean.data(), rstd.data());
    Buffer<T> logits(m, rows * kVocab);
    Buffer<T> dy(m, rows * D.d);
    if (table_.out >= 0) {
      const TensorSpec& w = table_.tensors[static_cast<size_t>(table_.out)];
      ops::linear_forward(y.data(), p(w), static_cast<const T*>(nullptr), rows, D.d, kVocab,
                          logits.data());
      loss = ops::softmax_cross_entropy(logits.data(), tokens, rows, kVocab, grad_scale,
                                        logits.data());
      ops::linear_backward(logits.data(), y.data(), p(w), rows, D.d, kVocab, dy.data(), false, g(w),
                           static_cast<T*>(nullptr));
    } else {
      const TensorSpec& e = table_.tensors[table_.token];
      ops::linear_transposed_forward(y.data(), p(e), rows, D.d, kVocab, logits.data());
      loss = ops::softmax_cross_entropy(logits.data(), tokens, rows, kVocab, grad_scale,
                                        logits.data());
      ops::linear_transposed_backward(logits.data(), y.data(), p(e), rows, D.d, kVocab, dy.data(),
                                      g(e));
    }
    ops::layer_norm_backward(dy.data(), h.back().data(), p(fg), mean.data(), rstd.data(), rows, D.d,
                             dh.data(), g(fg), g(fb));
  }
  h.back().release();
  Buffer<T> dx(m, rows * D.d);
  for (int64_t l = D.layers - 1; l >= 0; --l) {
    const size_t i = static_cast<size_t>(l);
    LayerCache recomputed;
    if (recompute) {
      // Rebuild this layer's activations from its input; the dropout masks are functions of the
      // same seeds, so the recomputed activations equal the original ones bit for bit.
      Buffer<T> discard(m, rows * D.d);
      layer_forward(l, h[i].data(), discard.data(), batch, dropout_seed, train, recomputed);
    }
    layer_backward(l, dh.data(), h[i].data(), batch, dropout_seed, train,
                   recompute ? recomputed : caches[i], dx.data());
    std::swap(dh, dx);
    if (l > 0) h[i].release();
  }
  ops::PositionShape shape;
  shape.num_dims = config_.num_position_dims;
  std::vector<T*> dpos;
  for (int k = 0; k < shape.num_dims; ++k) {
    shape.sizes[k] = config_.position_shape[k];
    dpos.push_back(g(table_.tensors[static_cast<size_t>(table_.pos0 + k)]));
  }
  ops::embedding_backward(tokens, batch, D.n, D.d, dh.data(), shape,
                          g(table_.tensors[table_.token]), g(table_.tensors[table_.start]),
                          dpos.data());
  return loss;
}

// ---------------------------------------------------------------- incremental decoding

template <typename T>
struct Transformer<T>::DecodeState {
  std::vector<std::vector<T>> kcache, vcache;  // per layer [n, heads, head_qk | head_v]
  std::vector<T> x, y, mean, rstd, q, k, v, att, a, r, u, gel, f, scores;
};

template <typename T>
void Transformer<T>::decode_position(DecodeState& s, int64_t t, int prev_token, T* logits) {
  const Dims& D = dims_;
  // Embedding of position t (input shifted right: token t-1, or the start vector).
  const T* src = t == 0 ? p(table_.tensors[table_.start])
                        : p(table_.tensors[table_.token]) + static_cast<int64_t>(prev_token) * D.d;
  std::copy(src, src + D.d, s.x.begin());
  ops::PositionShape shape;
  shape.num_dims = config_.num_position_dims;
  for (int k = 0; k < shape.num_dims; ++k) shape.sizes[k] = config_.position_shape[k];
  for (int k = 0; k < shape.num_dims; ++k) {
    const T* pos =
        p(table_.tensors[static_cast<size_t>(table_.pos0 + k)]) + shape.coordinate(t, k) * D.d;
    for (int64_t c = 0; c < D.d; ++c) s.x[static_cast<size_t>(c)] += pos[c];
  }
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D.head_qk)));
  const T* none = nullptr;
  for (int64_t l = 0; l < D.layers; ++l) {
    auto P = [&](LayerTensor tt) { return p(table_.layer(l, tt)); };
    ops::layer_norm_forward(s.x.data(), P(kLn1Gain), P(kLn1Bias), 1, D.d, T(kLayerNormEps),
                            s.y.data(), s.mean.data(), s.rstd.data());
    T* kc = s.kcache[static_cast<size_t>(l)].data() + t * D.dqk;
    T* vc = s.vcache[static_cast<size_t>(l)].data() + t * D.d;
    ops::linear_forward(s.y.data(), P(kWq), none, 1, D.d, D.dqk, s.q.data());
    ops::linear_forward(s.y.data(), P(kWk), none, 1, D.d, D.dqk, kc);
    ops::linear_forward(s.y.data(), P(kWv), none, 1, D.d, D.d, vc);
    const KeyListSet& lists = key_lists(l);
    for (int64_t h = 0; h < D.heads; ++h) {
      const int64_t* ptr = lists.ptr[static_cast<size_t>(h)].data();
      const int32_t* keys = lists.keys[static_cast<size_t>(h)].data();
      T* out = s.att.data() + h * D.head_v;
      std::fill(out, out + D.head_v, T(0));
      const int64_t begin = ptr[t], end = ptr[t + 1];
      if (begin == end) continue;
      const T* qh = s.q.data() + h * D.head_qk;
      T mx = -std::numeric_limits<T>::infinity();
      s.scores.resize(static_cast<size_t>(end - begin));
      for (int64_t e = begin; e < end; ++e) {
        const T* kj = s.kcache[static_cast<size_t>(l)].data() + keys[e] * D.dqk + h * D.head_qk;
        T dot = 0;
        for (int64_t c = 0; c < D.head_qk; ++c) dot += qh[c] * kj[c];
        s.scores[static_cast<size_t>(e - begin)] = dot * scale;
        mx = std::max(mx, dot * scale);
      }
      T sum = 0;
      for (T& z : s.scores) sum += (z = std::exp(z - mx));
      for (int64_t e = begin; e < end; ++e) {
        const T w = s.scores[static_cast<size_t>(e - begin)] / sum;
        const T* vj = s.vcache[static_cast<size_t>(l)].data() + keys[e] * D.d + h * D.head_v;
        for (int64_t c = 0; c < D.head_v; ++c) out[c] += w * vj[c];
      }
    }
    ops::linear_forward(s.att.data(), P(kWp), none, 1, D.d, D.d, s.a.data());
    for (int64_t c = 0; c < D.d; ++c)
      s.r[static_cast<size_t>(c)] = s.x[static_cast<size_t>(c)] + s.a[static_cast<size_t>(c)];
    ops::layer_norm_forward(s.r.data(), P(kLn2Gain), P(kLn2Bias), 1, D.d, T(kLayerNormEps),
                            s.y.data(), s.mean.data(), s.rstd.data());
    ops::linear_forward(s.y.data(), P(kW1), P(kB1), 1, D.d, D.inner, s.u.data());
    ops::gelu_forward(s.u.data(), D.inner, s.gel.data());
    ops::linear_forward(s.gel.data(), P(kW2), P(kB2), 1, D.inner, D.d, s.f.data());
    for (int64_t c = 0; c < D.d; ++c)
      s.x[static_cast<size_t>(c)] = s.r[static_cast<size_t>(c)] + s.f[static_cast<size_t>(c)];
  }
  ops::layer_norm_forward(s.x.data(), p(table_.tensors[table_.final_gain]),
                          p(table_.tensors[table_.final_bias]), 1, D.d, T(kFinalNormEps),
                          s.y.data(), s.mean.data(), s.rstd.data());
  if (table_.out >= 0)
    ops::linear_forward(s.y.data(), p(table_.tensors[static_cast<size_t>(table_.out)]), none, 1,
                        D.d, kVocab, logits);
  else
    ops::linear_transposed_forward(s.y.data(), p(table_.tensors[table_.token]), 1, D.d, kVocab,
                                   logits);
}

namespace {
template <typename T>
void resize_state(std::vector<T>& v, int64_t n) {
  v.assign(static_cast<size_t>(n), T(0));
}
}  // namespace

template <typename T>
void Transformer<T>::incremental_logits(const uint8_t* tokens, int64_t length, T* logits) {
  require(length >= 1 && length <= dims_.n, "length = ", length,
          " must be in [1, seq_len = ", dims_.n, "]");
  const Dims& D = dims_;
  DecodeState s;
  s.kcache.assign(static_cast<size_t>(D.layers), std::vector<T>(static_cast<size_t>(D.n * D.dqk)));
  s.vcache.assign(static_cast<size_t>(D.layers), std::vector<T>(static_cast<size_t>(D.n * D.d)));
  for (auto* v : {&s.x, &s.y, &s.att, &s.a, &s.r, &s.f}) resize_state(*v, D.d);
  for (auto* v : {&s.q}) resize_state(*v, D.dqk);
  for (auto* v : {&s.u, &s.gel}) resize_state(*v, D.inner);
  resize_state(s.mean, 1);
  resize_state(s.rstd, 1);
  for (int64_t t = 0; t < length; ++t)
    decode_position(s, t, t == 0 ? -1 : tokens[t - 1], logits + t * kVocab);
}

template <typename T>
void Transformer<T>::sample(const uint8_t* prompt, int64_t prompt_len, uint8_t* out, int64_t length,
                            double temperature, uint64_t seed) {
  const Dims& D = dims_;
  require(length >= 1 && length <= D.n, "length = ", length, " must be in [1, seq_len = ", D.n,
          "]");
  require(prompt_len >= 0 && prompt_len <= length, "prompt_len = ", prompt_len,
          " must be in [0, length = ", length, "]");
  require(prompt_len == 0 || prompt != nullptr, "prompt is NULL but prompt_len = ", prompt_len);
  require(std::isfinite(temperature) && temperature >= 0, "temperature = ", temperature,
          " must be >= 0");
  DecodeState s;
  s.kcache.assign(static_cast<size_t>(D.layers), std::vector<T>(static_cast<size_t>(D.n * D.dqk)));
  s.vcache.assign(static_cast<size_t>(D.layers), std::vector<T>(static_cast<size_t>(D.n * D.d)));
  for (auto* v : {&s.x, &s.y, &s.att, &s.a, &s.r, &s.f}) resize_state(*v, D.d);
  resize_state(s.q, D.dqk);
  for (auto* v : {&s.u, &s.gel}) resize_state(*v, D.inner);
  resize_state(s.mean, 1);
  resize_state(s.rstd, 1);
  std::vector<T> logits(static_cast<size_t>(kVocab));
  std::vector<double> prob(static_cast<size_t>(kVocab));
  uint64_t state = mix_seed(seed, 0x5a3b1e);
  for (int64_t t = 0; t < length; ++t) {
    // Position t sees the bytes before it (the cache holds their keys and values) and predicts
    // byte t; prompt positions keep the prompt's byte.
    decode_position(s, t, t == 0 ? -1 : out[t - 1], logits.data());
    if (t < prompt_len) {
      out[t] = prompt[t];
      continue;
    }
    int choice = 0;
    if (temperature == 0) {
      for (int c = 1; c < kVocab; ++c)
        if (logits[static_cast<size_t>(c)] > logits[static_cast<size_t>(choice)]) choice = c;
    } else {
      double mx = -std::numeric_limits<double>::infinity();
      for (int c = 0; c < kVocab; ++c)
        mx = std::max(mx, static_cast<double>(logits[static_cast<size_t>(c)]) / temperature);
      double sum = 0;
      for (int c = 0; c < kVocab; ++c)
        sum += (prob[static_cast<size_t>(c)] = std::exp(
                    static_cast<double>(logits[static_cast<size_t>(c)]) / temperature - mx));
      double u = uniform01(state) * sum;
      choice = kVocab - 1;
      for (int c = 0; c < kVocab; ++c) {
        u -= prob[static_cast<size_t>(c)];
        if (u < 0) {
          choice = c;
          break;
        }
      }
    }
    out[t] = static_cast<uint8_t>(choice);
  }
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace sparse::model
