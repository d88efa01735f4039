// The Sparse Transformer of Child et al. (2019): pre-norm residual blocks of factorized sparse
// attention and a feed-forward network over byte tokens; forward, backward with optional
// recomputation, and incremental decoding with a key/value cache.
//
// Every computation goes through a backend's model operations (ModelOps<T>) on buffers in that
// backend's memory, so the model runs wherever its backend runs. Templated on the scalar type:
// Transformer<float> computes attention with the backend's fused block-sparse kernels;
// Transformer<double> computes it with plain loops over the keys each (head, query) is allowed,
// read from the same layouts, which makes a double-precision gradient check of the whole model
// against finite differences possible.
//
// Parameters and gradients live in one flat buffer each (layout in ParamTable), so the optimiser,
// gradient clipping and checkpoints each handle them in one place.
//
// Files: transformer.cpp (construction, embedding, whole-model passes), layer.cpp (one residual
// block forward and backward, attention), decoding.cpp (key/value cache and sampling),
// layouts.cpp (layouts and key lists of a configuration).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "libsparse/backend.hpp"
#include "libsparse/layout.hpp"
#include "libsparse/model/buffer.hpp"
#include "libsparse/model/config.hpp"
#include "libsparse/model/op_profile.hpp"
#include "libsparse/random.hpp"

namespace sparse::model {

// The keys each (head, query) attends to, in natural positions, read from a layout's blocks and
// element masks (exactly what the fused kernels compute).
struct KeyListSet {
  int64_t seq = 0;
  int heads = 0;
  std::vector<std::vector<int64_t>> ptr;   // per head, seq + 1 offsets
  std::vector<std::vector<int32_t>> keys;  // per head
  std::vector<const int64_t*> ptr_view;
  std::vector<const int32_t*> keys_view;
  ops::KeyLists view() const;
};
KeyListSet key_lists_from_layout(const Layout& layout);

// The layouts of a configuration: distinct layouts and, per layer, which one it uses (computed
// from the layer cycle, so a configuration of any depth costs no per-layer memory).
struct ModelLayouts {
  std::vector<std::unique_ptr<Layout>> layouts;
  // Interleaved heads: layer l uses layouts[cycle[l % cycle.size()] == '1' ? 0 : 1]. Empty: every
  // layer uses layouts[0].
  std::string cycle;
  int layer_layout(int64_t layer) const {
    if (cycle.empty()) return 0;
    return cycle[static_cast<size_t>(layer % static_cast<int64_t>(cycle.size()))] == '1' ? 0 : 1;
  }
};
ModelLayouts build_model_layouts(const sparse_model_config& c);

using sparse::mix_seed;

template <typename T>
class Transformer {
 private:
  // Declared first so that it is destroyed last, after every buffer it allocated.
  std::unique_ptr<Backend> own_backend_;

 public:
  // Computes on `backend` (not owned; it must outlive the model). nullptr gives the model a
  // private single-threaded CPU backend (the double-precision reference and tests). Throws
  // SPARSE_ERR_UNSUPPORTED with the reasons when the backend lacks a model operation for T.
  // `products` other than SPARSE_DTYPE_F32 (T = float only) selects the backend's mixed-precision
  // operations: fp32 storage, matrix products on 16-bit inputs with fp32 accumulation.
  Transformer(const sparse_model_config& config, Backend* backend,
              sparse_dtype products = SPARSE_DTYPE_F32);
  ~Transformer();

  const sparse_model_config& config() const { return config_; }
  const ParamTable& table() const { return table_; }
  const Dims& dims() const { return dims_; }

  Backend& backend() const { return *backend_; }
  ModelOps<T>& ops() const { return *ops_; }

  // In the backend's memory.
  Buffer<T> params;
  Buffer<T> grads;
  MemoryMeter meter;
  // Computes attention by the key lists even when T is float (tests; sampling always does).
  bool use_listed_attention = false;
  // Mixed precision: the activations whose every reader rounds them to the products' 16-bit
  // dtype (the inputs of matrix products; q, k, v and the attention output where the attention
  // runs in 16 bits) are stored rounded, in 2-byte elements: the same results bit for bit at
  // half their memory. False stores every activation in fp32 and runs the attention in fp32
  // (tests and memory comparisons).
  bool store_activations_in_16_bits = true;

  // OpenAI's initialisation (normal with each tensor's std; gains 1; biases and the untied
  // output projection 0), deterministic in `seed`.
  void init_params(uint64_t seed);

  // Called with grads[offset, offset + count) once the backward pass has finished adding to it
  // (its work queued on the backend); the pass does not touch that range again.
  using RangeReady = std::function<void(int64_t offset, int64_t count)>;

  // `tokens` and `logits` are host memory.
  // Forward and backward on `batch` sequences of seq_len bytes. Adds grad_scale * d(sum of
  // per-token losses) / d(params) to `grads` and returns the sum of per-token losses in nats.
  // Dropout (when config.dropout > 0 and `train`) uses streams derived from `dropout_seed`.
  // `ready` (when set) is called as the backward completes the parameter groups, in this order,
  // each a contiguous range, together covering every parameter once: the head (the final layer
  // norm, and out.w unless the embeddings are tied), each layer from last to first, then the
  // embeddings (with a tied token embedding, whose gradient the head also adds to).
  double forward_backward(const uint8_t* tokens, int64_t batch, T grad_scale, uint64_t dropout_seed,
                          bool train, const RangeReady& ready = {});
  // Sum of per-token losses without gradients; logits [batch * seq, 256] written when not NULL.
  double forward(const uint8_t* tokens, int64_t batch, uint64_t dropout_seed, bool train,
                 T* logits);

  // While a WeightsHeld is alive the backend may read a 16-bit copy of the parameters made when
  // the outermost one was created (ModelOps::hold_weights), so the parameters must not change
  // during its life. Each pass below holds them itself; the trainer holds them over a whole step
  // (every micro-batch), so that they are rounded once per optimiser update.
  class WeightsHeld {
   public:
    explicit WeightsHeld(Transformer& t) : t_(&t) {
      if (t_->weights_held_ == 0) t_->ops_->hold_weights(t_->params.data(), t_->params.size());
      ++t_->weights_held_;
    }
    WeightsHeld(const WeightsHeld&) = delete;
    WeightsHeld& operator=(const WeightsHeld&) = delete;
    ~WeightsHeld() {
      if (--t_->weights_held_ == 0) t_->ops_->release_weights();
    }

   private:
    Transformer* t_;
  };

  // Incremental decoding: the logits at positions 0 .. length-1 of one sequence, computed one
  // position at a time with a key/value cache (teacher forcing with `tokens`).
  void incremental_logits(const uint8_t* tokens, int64_t length, T* logits);
  // Generates `length` bytes; the first prompt_len come from `prompt`.
  void sample(const uint8_t* prompt, int64_t prompt_len, uint8_t* out, int64_t length,
              double temperature, uint64_t seed);

 private:
  struct Stored;
  struct LayerCache;
  struct DecodeState;
  const T* p(const TensorSpec& s) const { return params.data() + s.offset; }
  T* g(const TensorSpec& s) { return grads.data() + s.offset; }
  // A zero-filled activation buffer counted by the meter.
  Buffer<T> buffer(int64_t n) { return Buffer<T>(backend_, n, &meter); }
  // Copies host tokens into the backend's memory.
  const uint8_t* upload_tokens(const uint8_t* tokens, int64_t count);
  ops::PositionShape position_shape() const;
  void embed(const uint8_t* tokens, int64_t batch, T* h);
  void layer_forward(int64_t layer, const T* x, T* out, int64_t batch, uint64_t seed, bool train,
                     LayerCache& cache);
  void layer_backward(int64_t layer, const T* dout, const T* x, int64_t batch, uint64_t seed,
                      bool train, LayerCache& cache, T* dx);
  // The 16-bit dtype activations are stored in (SPARSE_DTYPE_F32: none), for the products'
  // inputs and for the attention's tensors of `layer`.
  sparse_dtype stored_products() const;
  sparse_dtype stored_attention(int64_t layer) const;
  const Layout& layer_layout(int64_t layer) const;
  // Fills `s` with the n values `produce` writes into a T buffer, rounded when `dtype` is 16-bit.
  template <typename Produce>
  void store(Stored& s, sparse_dtype dtype, int64_t n, Produce&& produce);
  // linear_forward / linear_backward of ModelOps on a stored x.
  void product(const Stored& x, const T* w, const T* b, int64_t rows, int64_t in, int64_t out,
               T* y);
  void product_backward(const T* dy, const Stored& x, const T* w, int64_t rows, int64_t in,
                        int64_t out, T* dx, bool accumulate_dx, T* dw, T* db);
  void attention_forward(int64_t layer, int64_t batch, LayerCache& c);
  void pad_qk(int64_t batch, LayerCache& c);
  void attention_backward(int64_t layer, int64_t batch, LayerCache& c, const T* datt, T* dq, T* dk,
                          T* dv);
  const KeyListSet& key_lists(int64_t layer);
  void decode_position(DecodeState& s, int64_t t, int prev_token, T* logits);
  DecodeState decode_state();

  sparse_model_config config_;
  ParamTable table_;
  Dims dims_;
  Backend* backend_;
  ModelOps<T>* ops_;
  // SPARSE_PROFILE_OPS (op_profile.hpp): the profile, and ops_ wrapped so that each call is
  // timed in it; both null otherwise.
  std::unique_ptr<OpProfile> profile_;
  std::unique_ptr<ModelOps<T>> profiled_ops_;
  Buffer<uint8_t> tokens_;
  ModelLayouts layouts_;
  std::vector<std::unique_ptr<KeyListSet>> key_lists_;  // per layout, built on first use
  int weights_held_ = 0;                                // live WeightsHeld objects
  // The matrix products' input dtype (SPARSE_DTYPE_F32, or 16 bits in mixed precision, where the
  // fused attention also runs in 16 bits where the backend has kernels for it).
  sparse_dtype products_ = SPARSE_DTYPE_F32;
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace sparse::model
