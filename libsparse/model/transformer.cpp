// The Transformer's construction, initialisation, embedding and whole-model passes.
#include "libsparse/model/transformer.hpp"

#include <algorithm>
#include <cmath>

#include "libsparse/error.hpp"
#include "libsparse/model/transformer_impl.hpp"
#include "libsparse/resources.hpp"

namespace sparse::model {

template <typename T>
Transformer<T>::Transformer(const sparse_model_config& config, Backend* backend,
                            sparse_dtype products)
    : config_(config), backend_(backend), ops_(nullptr) {
  validate_config(config_);
  // Parameters, gradients and (in the trainer) Adam's two moments.
  check_memory(4.0 * sizeof(T) * parameter_estimate(config_),
               detail::concat("the model's parameters, gradients and optimiser moments (about ",
                              static_cast<int64_t>(std::min(parameter_estimate(config_), 9e18)),
                              " parameters of ", sizeof(T), " bytes, 4 copies)"));
  if (backend_ == nullptr) {
    own_backend_ = make_cpu_backend(1, 0);
    backend_ = own_backend_.get();
  }
  const bool mixed = products != SPARSE_DTYPE_F32;
  products_ = products;
  if (mixed && !std::is_same_v<T, float>)
    throw_error(SPARSE_ERR_UNSUPPORTED,
                "mixed precision (16-bit matrix products) applies to the fp32 model only");
  const sparse_dtype dtype = mixed                      ? products
                             : std::is_same_v<T, float> ? SPARSE_DTYPE_F32
                                                        : SPARSE_DTYPE_F64;
  const std::string why = unsupported_model_ops(*backend_, dtype);
  if constexpr (std::is_same_v<T, float>)
    ops_ = mixed ? backend_->model_ops_mixed(products) : backend_->model_ops<T>();
  else
    ops_ = backend_->model_ops<T>();
  if (!why.empty() || ops_ == nullptr)
    throw_error(SPARSE_ERR_UNSUPPORTED, "the model cannot run on the ", backend_->description(),
                " backend: ", why.empty() ? "it has no model operations" : why);
  profile_ = OpProfile::from_environment(*backend_);
  if (profile_ != nullptr) {
    profiled_ops_ = std::make_unique<ProfiledOps<T>>(*ops_, *profile_);
    ops_ = profiled_ops_.get();
  }
  table_ = param_table(config_);
  dims_ = dims_of(config_);
  layouts_ = build_model_layouts(config_);
  key_lists_.resize(layouts_.layouts.size());
  params = Buffer<T>(backend_, table_.total);
  grads = Buffer<T>(backend_, table_.total);
}

template <typename T>
Transformer<T>::~Transformer() = default;

template <typename T>
void Transformer<T>::init_params(uint64_t seed) {
  AlignedVector<T> host(static_cast<size_t>(table_.total), T(0));
  for (size_t i = 0; i < table_.tensors.size(); ++i) {
    const TensorSpec& s = table_.tensors[i];
    T* dst = host.data() + s.offset;
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
  params = host;
}

template <typename T>
const KeyListSet& Transformer<T>::key_lists(int64_t layer) {
  const size_t id = static_cast<size_t>(layouts_.layer_layout(layer));
  if (!key_lists_[id])
    key_lists_[id] = std::make_unique<KeyListSet>(key_lists_from_layout(*layouts_.layouts[id]));
  return *key_lists_[id];
}

template <typename T>
const uint8_t* Transformer<T>::upload_tokens(const uint8_t* tokens, int64_t count) {
  if (tokens_.size() != static_cast<size_t>(count)) tokens_ = Buffer<uint8_t>(backend_, count);
  backend_->copy(tokens_.data(), backend_->memory_kind(), tokens, SPARSE_MEMORY_HOST,
                 static_cast<size_t>(count));
  return tokens_.data();
}

template <typename T>
ops::PositionShape Transformer<T>::position_shape() const {
  ops::PositionShape shape;
  shape.num_dims = config_.num_position_dims;
  for (int k = 0; k < shape.num_dims; ++k) shape.sizes[k] = config_.position_shape[k];
  return shape;
}

template <typename T>
void Transformer<T>::embed(const uint8_t* tokens, int64_t batch, T* h) {
  const ops::PositionShape shape = position_shape();
  std::vector<const T*> tables;
  for (int k = 0; k < shape.num_dims; ++k)
    tables.push_back(p(table_.tensors[static_cast<size_t>(table_.pos0 + k)]));
  ops_->embedding_forward(tokens, batch, dims_.n, dims_.d, p(table_.tensors[table_.token]),
                          p(table_.tensors[table_.start]), tables.data(), shape, h);
}

template <typename T>
double Transformer<T>::forward(const uint8_t* host_tokens, int64_t batch, uint64_t dropout_seed,
                               bool train, T* logits_out) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const uint8_t* tokens = upload_tokens(host_tokens, rows);
  const WeightsHeld held(*this);
  Buffer<T> h = buffer(rows * D.d), next = buffer(rows * D.d);
  embed(tokens, batch, h.data());
  for (int64_t l = 0; l < D.layers; ++l) {
    LayerCache c;
    layer_forward(l, h.data(), next.data(), batch, dropout_seed, train, c);
    std::swap(h, next);
  }
  Buffer<T> y = buffer(rows * D.d), mean = buffer(rows), rstd = buffer(rows);
  ops_->layer_norm_forward(h.data(), p(table_.tensors[table_.final_gain]),
                           p(table_.tensors[table_.final_bias]), rows, D.d, T(kFinalNormEps),
                           y.data(), mean.data(), rstd.data());
  Buffer<T> logits = buffer(rows * kVocab);
  if (table_.out >= 0)
    ops_->linear_forward(y.data(), p(table_.tensors[table_.out]), static_cast<const T*>(nullptr),
                         rows, D.d, kVocab, logits.data());
  else
    ops_->linear_transposed_forward(y.data(), p(table_.tensors[table_.token]), rows, D.d, kVocab,
                                    logits.data());
  if (logits_out != nullptr)
    backend_->copy(logits_out, SPARSE_MEMORY_HOST, logits.data(), backend_->memory_kind(),
                   static_cast<size_t>(rows * kVocab) * sizeof(T));
  return ops_->softmax_cross_entropy(logits.data(), tokens, rows, kVocab, T(0),
                                     static_cast<T*>(nullptr));
}

template <typename T>
double Transformer<T>::forward_backward(const uint8_t* host_tokens, int64_t batch, T grad_scale,
                                        uint64_t dropout_seed, bool train,
                                        const RangeReady& ready) {
  const Dims& D = dims_;
  const int64_t rows = batch * D.n;
  const bool recompute = config_.recompute != 0;
  const uint8_t* tokens = upload_tokens(host_tokens, rows);
  const WeightsHeld held(*this);
  // The residual stream entering each layer, and the layer caches unless recomputing.
  std::vector<Buffer<T>> h(static_cast<size_t>(D.layers) + 1);
  std::vector<LayerCache> caches(recompute ? 0 : static_cast<size_t>(D.layers));
  h[0] = buffer(rows * D.d);
  embed(tokens, batch, h[0].data());
  for (int64_t l = 0; l < D.layers; ++l) {
    const size_t i = static_cast<size_t>(l);
    h[i + 1] = buffer(rows * D.d);
    LayerCache scratch;
    layer_forward(l, h[i].data(), h[i + 1].data(), batch, dropout_seed, train,
                  recompute ? scratch : caches[i]);
  }
  // Final norm, logits and loss.
  const TensorSpec& fg = table_.tensors[table_.final_gain];
  const TensorSpec& fb = table_.tensors[table_.final_bias];
  Buffer<T> dh = buffer(rows * D.d);
  double loss = 0;
  {
    Buffer<T> y = buffer(rows * D.d), mean = buffer(rows), rstd = buffer(rows);
    ops_->layer_norm_forward(h.back().data(), p(fg), p(fb), rows, D.d, T(kFinalNormEps), y.data(),
                             mean.data(), rstd.data());
    Buffer<T> logits = buffer(rows * kVocab);
    Buffer<T> dy = buffer(rows * D.d);
    if (table_.out >= 0) {
      const TensorSpec& w = table_.tensors[static_cast<size_t>(table_.out)];
      ops_->linear_forward(y.data(), p(w), static_cast<const T*>(nullptr), rows, D.d, kVocab,
                           logits.data());
      loss = ops_->softmax_cross_entropy(logits.data(), tokens, rows, kVocab, grad_scale,
                                         logits.data());
      ops_->linear_backward(logits.data(), y.data(), p(w), rows, D.d, kVocab, dy.data(), false,
                            g(w), static_cast<T*>(nullptr));
    } else {
      const TensorSpec& e = table_.tensors[table_.token];
      ops_->linear_transposed_forward(y.data(), p(e), rows, D.d, kVocab, logits.data());
      loss = ops_->softmax_cross_entropy(logits.data(), tokens, rows, kVocab, grad_scale,
                                         logits.data());
      ops_->linear_transposed_backward(logits.data(), y.data(), p(e), rows, D.d, kVocab, dy.data(),
                                       g(e));
    }
    ops_->layer_norm_backward(dy.data(), h.back().data(), p(fg), mean.data(), rstd.data(), rows,
                              D.d, dh.data(), g(fg), g(fb));
  }
  // The parameter groups' ranges (param_table's order: embeddings, layers, final norm, out.w).
  const int64_t head = fg.offset;
  auto layer_start = [&](int64_t l) {
    return l < D.layers ? table_.layer(l, kLn1Gain).offset : head;
  };
  if (ready) ready(head, table_.total - head);
  h.back().release();
  Buffer<T> dx = buffer(rows * D.d);
  for (int64_t l = D.layers - 1; l >= 0; --l) {
    const size_t i = static_cast<size_t>(l);
    LayerCache recomputed;
    if (recompute) {
      // Rebuild this layer's activations from its input; the dropout masks are functions of the
      // same seeds, so the recomputed activations equal the original ones bit for bit.
      Buffer<T> discard = buffer(rows * D.d);
      layer_forward(l, h[i].data(), discard.data(), batch, dropout_seed, train, recomputed);
    }
    layer_backward(l, dh.data(), h[i].data(), batch, dropout_seed, train,
                   recompute ? recomputed : caches[i], dx.data());
    std::swap(dh, dx);
    if (l > 0) h[i].release();
    if (ready) ready(layer_start(l), layer_start(l + 1) - layer_start(l));
  }
  std::vector<T*> dpos;
  for (int k = 0; k < config_.num_position_dims; ++k)
    dpos.push_back(g(table_.tensors[static_cast<size_t>(table_.pos0 + k)]));
  ops_->embedding_backward(tokens, batch, D.n, D.d, dh.data(), position_shape(),
                           g(table_.tensors[table_.token]), g(table_.tensors[table_.start]),
                           dpos.data());
  if (ready) ready(0, layer_start(0));
  return loss;
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace sparse::model
