// The Sparse Transformer (DESIGN.md section 4): forward, backward with optional recomputation,
// and incremental decoding with a key/value cache.
//
// Templated on the scalar type. Transformer<float> computes attention with the backend's fused
// block-sparse kernels; Transformer<double> computes it with plain loops over the keys each
// (head, query) is allowed, read from the same layouts, which makes a double-precision
// gradient check of the whole model against finite differences possible.
//
// Parameters and gradients live in one flat vector each (layout in ParamTable), so the optimiser,
// gradient clipping, a data-parallel all-reduce and checkpoints each handle them in one place.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "backend.hpp"
#include "config.hpp"
#include "layout.hpp"
#include "ops/ops.hpp"

namespace sparse::model {

// Bytes of activations and working buffers currently allocated by a forward/backward pass, and
// the peak since the last reset.
struct MemoryMeter {
  int64_t current = 0;
  int64_t peak = 0;
  void add(int64_t bytes) {
    current += bytes;
    if (current > peak) peak = current;
  }
  void sub(int64_t bytes) { current -= bytes; }
  void reset() { peak = current; }
};

// Allocates on 64-byte boundaries, so that every buffer has the same alignment from run to run
// (vectorised code may round differently at different alignments; resuming from a checkpoint and
// recomputation must reproduce results bit for bit).
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, size_t) { ::operator delete (p, std::align_val_t{64}); }
  bool operator==(const AlignedAllocator&) const { return true; }
  bool operator!=(const AlignedAllocator&) const { return false; }
};
template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

// A heap array whose size is counted by a MemoryMeter while it lives.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(MemoryMeter* meter, int64_t n) : data_(static_cast<size_t>(n)), meter_(meter) {
    if (meter_) meter_->add(bytes());
  }
  Buffer(Buffer&& o) noexcept : data_(std::move(o.data_)), meter_(o.meter_) {
    o.data_.clear();
    o.meter_ = nullptr;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::move(o.data_);
      meter_ = o.meter_;
      o.data_.clear();
      o.meter_ = nullptr;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
  void release() {
    if (meter_) meter_->sub(bytes());
    AlignedVector<T>().swap(data_);
    meter_ = nullptr;
  }
  T* data() { return data_.data(); }
  const T* data() const { return data_.data(); }
  int64_t size() const { return static_cast<int64_t>(data_.size()); }

 private:
  int64_t bytes() const { return static_cast<int64_t>(data_.size() * sizeof(T)); }
  AlignedVector<T> data_;
  MemoryMeter* meter_ = nullptr;
};

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

// The layouts of a configuration: distinct layouts and, per layer, which one it uses.
struct ModelLayouts {
  std::vector<std::unique_ptr<Layout>> layouts;
  std::vector<int> layer_layout;
};
ModelLayouts build_model_layouts(const sparse_model_config& c);

// A seed derived from several values (dropout streams per step, micro-batch, layer and site).
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0);

template <typename T>
class Transformer {
 public:
  // `backend` computes attention when T is float (not owned; may be nullptr for T = double or
  // when use_listed_attention is set).
  Transformer(const sparse_model_config& config, Backend* backend);
  ~Transformer();

  const sparse_model_config& config() const { return config_; }
  const ParamTable& table() const { return table_; }
  const Dims& dims() const { return dims_; }

  AlignedVector<T> params;
  AlignedVector<T> grads;
  MemoryMeter meter;
  // Computes attention by the key lists even when T is float (tests; sampling always does).
  bool use_listed_attention = false;

  // OpenAI's initialisation (normal with each tensor's std; gains 1; biases and the untied
  // output projection 0), deterministic in `seed`.
  void init_params(uint64_t seed);

  // Forward and backward on `batch` sequences of seq_len bytes. Adds grad_scale * d(sum of
  // per-token losses) / d(params) to `grads` and returns the sum of per-token losses in nats.
  // Dropout (when config.dropout > 0 and `train`) uses streams derived from `dropout_seed`.
  double forward_backward(const uint8_t* tokens, int64_t batch, T grad_scale, uint64_t dropout_seed,
                          bool train);
  // Sum of per-token losses without gradients; logits [batch * seq, 256] written when not NULL.
  double forward(const uint8_t* tokens, int64_t batch, uint64_t dropout_seed, bool train,
                 T* logits);

  // Incremental decoding: the logits at positions 0 .. length-1 of one sequence, computed one
  // position at a time with a key/value cache (teacher forcing with `tokens`).
  void incremental_logits(const uint8_t* tokens, int64_t length, T* logits);
  // Generates `length` bytes; the first prompt_len come from `prompt`.
  void sample(const uint8_t* prompt, int64_t prompt_len, uint8_t* out, int64_t length,
              double temperature, uint64_t seed);

 private:
  struct LayerCache;
  struct DecodeState;
  const T* p(const TensorSpec& s) const { return params.data() + s.offset; }
  T* g(const TensorSpec& s) { return grads.data() + s.offset; }
  void embed(const uint8_t* tokens, int64_t batch, T* h) const;
  void layer_forward(int64_t layer, const T* x, T* out, int64_t batch, uint64_t seed, bool train,
                     LayerCache& cache);
  void layer_backward(int64_t layer, const T* dout, const T* x, int64_t batch, uint64_t seed,
                      bool train, LayerCache& cache, T* dx);
  void attention_forward(int64_t layer, int64_t batch, LayerCache& c);
  void attention_backward(int64_t layer, int64_t batch, LayerCache& c, const T* datt, T* dq, T* dk,
                          T* dv);
  const KeyListSet& key_lists(int64_t layer);
  void decode_position(DecodeState& s, int64_t t, int prev_token, T* logits);

  sparse_model_config config_;
  ParamTable table_;
  Dims dims_;
  Backend* backend_;
  ModelLayouts layouts_;
  std::vector<std::unique_ptr<KeyListSet>> key_lists_;  // per layout, built on first use
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace sparse::model
