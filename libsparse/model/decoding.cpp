// Incremental decoding with a key/value cache, and sampling.
#include <algorithm>
#include <cmath>
#include <limits>

#include "libsparse/error.hpp"
#include "libsparse/model/transformer_impl.hpp"

namespace sparse::model {

template <typename T>
typename Transformer<T>::DecodeState Transformer<T>::decode_state() {
  const Dims& D = dims_;
  DecodeState s;
  for (int64_t l = 0; l < D.layers; ++l) {
    s.kcache.emplace_back(backend_, D.n * D.dqk);
    s.vcache.emplace_back(backend_, D.n * D.d);
  }
  for (auto* v : {&s.x, &s.y, &s.att, &s.a, &s.r, &s.f}) *v = Buffer<T>(backend_, D.d);
  s.q = Buffer<T>(backend_, D.dqk);
  for (auto* v : {&s.u, &s.gel}) *v = Buffer<T>(backend_, D.inner);
  s.mean = Buffer<T>(backend_, 1);
  s.rstd = Buffer<T>(backend_, 1);
  s.logits = Buffer<T>(backend_, kVocab);
  return s;
}

template <typename T>
void Transformer<T>::decode_position(DecodeState& s, int64_t t, int prev_token, T* logits) {
  const Dims& D = dims_;
  const sparse_memory mem = backend_->memory_kind();
  // Embedding of position t (input shifted right: token t-1, or the start vector).
  const T* src = t == 0 ? p(table_.tensors[table_.start])
                        : p(table_.tensors[table_.token]) + static_cast<int64_t>(prev_token) * D.d;
  backend_->copy(s.x.data(), mem, src, mem, static_cast<size_t>(D.d) * sizeof(T));
  const ops::PositionShape shape = position_shape();
  for (int k = 0; k < shape.num_dims; ++k)
    ops_->accumulate(
        s.x.data(),
        p(table_.tensors[static_cast<size_t>(table_.pos0 + k)]) + shape.coordinate(t, k) * D.d,
        D.d);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D.head_qk)));
  const T* none = nullptr;
  for (int64_t l = 0; l < D.layers; ++l) {
    auto P = [&](LayerTensor tt) { return p(table_.layer(l, tt)); };
    ops_->layer_norm_forward(s.x.data(), P(kLn1Gain), P(kLn1Bias), 1, D.d, T(kLayerNormEps),
                             s.y.data(), s.mean.data(), s.rstd.data());
    T* kc = s.kcache[static_cast<size_t>(l)].data() + t * D.dqk;
    T* vc = s.vcache[static_cast<size_t>(l)].data() + t * D.d;
    ops_->linear_forward(s.y.data(), P(kWq), none, 1, D.d, D.dqk, s.q.data());
    ops_->linear_forward(s.y.data(), P(kWk), none, 1, D.d, D.dqk, kc);
    ops_->linear_forward(s.y.data(), P(kWv), none, 1, D.d, D.d, vc);
    ops_->decode_attention(key_lists(l).view(), t, D.head_qk, D.head_v, scale, s.q.data(),
                           s.kcache[static_cast<size_t>(l)].data(),
                           s.vcache[static_cast<size_t>(l)].data(), s.att.data());
    ops_->linear_forward(s.att.data(), P(kWp), none, 1, D.d, D.d, s.a.data());
    ops_->add(s.x.data(), s.a.data(), D.d, s.r.data());
    ops_->layer_norm_forward(s.r.data(), P(kLn2Gain), P(kLn2Bias), 1, D.d, T(kLayerNormEps),
                             s.y.data(), s.mean.data(), s.rstd.data());
    ops_->linear_forward(s.y.data(), P(kW1), P(kB1), 1, D.d, D.inner, s.u.data());
    ops_->gelu_forward(s.u.data(), D.inner, s.gel.data());
    ops_->linear_forward(s.gel.data(), P(kW2), P(kB2), 1, D.inner, D.d, s.f.data());
    ops_->add(s.r.data(), s.f.data(), D.d, s.x.data());
  }
  ops_->layer_norm_forward(s.x.data(), p(table_.tensors[table_.final_gain]),
                           p(table_.tensors[table_.final_bias]), 1, D.d, T(kFinalNormEps),
                           s.y.data(), s.mean.data(), s.rstd.data());
  if (table_.out >= 0)
    ops_->linear_forward(s.y.data(), p(table_.tensors[static_cast<size_t>(table_.out)]), none, 1,
                         D.d, kVocab, s.logits.data());
  else
    ops_->linear_transposed_forward(s.y.data(), p(table_.tensors[table_.token]), 1, D.d, kVocab,
                                    s.logits.data());
  backend_->copy(logits, SPARSE_MEMORY_HOST, s.logits.data(), mem,
                 static_cast<size_t>(kVocab) * sizeof(T));
}

template <typename T>
void Transformer<T>::incremental_logits(const uint8_t* tokens, int64_t length, T* logits) {
  require(length >= 1 && length <= dims_.n, "length = ", length,
          " must be in [1, seq_len = ", dims_.n, "]");
  const WeightsHeld held(*this);
  DecodeState s = decode_state();
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
  const WeightsHeld held(*this);
  DecodeState s = decode_state();
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

#define SPARSE_INSTANTIATE_DECODING(T)                                                           \
  template typename Transformer<T>::DecodeState Transformer<T>::decode_state();                  \
  template void Transformer<T>::decode_position(Transformer<T>::DecodeState&, int64_t, int, T*); \
  template void Transformer<T>::incremental_logits(const uint8_t*, int64_t, T*);                 \
  template void Transformer<T>::sample(const uint8_t*, int64_t, uint8_t*, int64_t, double,       \
                                       uint64_t);
SPARSE_INSTANTIATE_DECODING(float)
SPARSE_INSTANTIATE_DECODING(double)

}  // namespace sparse::model
