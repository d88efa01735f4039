// The CUDA backend's ModelOps<float>: argument plumbing, scratch memory and the device copies of
// attention key lists around the kernels of model_*.cu; forward products with a bias go through
// cuBLASLt's bias epilogue where it accepts them (mk::LinearBiasLt), else cuBLAS and the bias
// kernel. Operations are queued on the stream; the two that return a value (the loss and the
// squared norm) copy per-row or per-chunk partial sums to the host and add them there in order, in
// double.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/cuda/model_kernels.hpp"
#include "libsparse/cuda/model_ops_cuda.hpp"
#include "libsparse/error.hpp"

namespace sparse::cuda {
namespace {

namespace mk = model_ops;

// cuBLASLt's workspace for the bias epilogue (the size NVIDIA recommends for Hopper).
constexpr size_t kLtWorkspace = size_t{32} << 20;

// Device memory that grows on demand; growing waits for the work that may still use it.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* get(size_t bytes, cudaStream_t stream, const char* what) {
    if (bytes > bytes_) {
      if (ptr_ != nullptr) {
        check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        cudaFree(ptr_);
        ptr_ = nullptr;
        bytes_ = 0;
      }
      check_cuda(cudaMalloc(&ptr_, bytes), what);
      bytes_ = bytes;
    }
    return ptr_;
  }
  template <typename T>
  T* get(int64_t count, cudaStream_t stream, const char* what) {
    return static_cast<T*>(
        get(static_cast<size_t>(count < 1 ? 1 : count) * sizeof(T), stream, what));
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// One layout's key lists on the device, with the host copy they were made from (a later call
// reuses them only when its lists are equal element for element).
struct DeviceLists {
  int64_t seq = 0;
  int heads = 0;
  std::vector<std::vector<int64_t>> ptr;
  std::vector<std::vector<int32_t>> keys;
  Scratch d_ptr, d_keys, d_tptr, d_queries;
  mk::DeviceKeyLists view;

  bool equals(const ops::KeyLists& L) const {
    if (L.seq != seq || L.heads != heads) return false;
    for (int h = 0; h < heads; ++h) {
      const size_t np = static_cast<size_t>(seq + 1);
      if (std::memcmp(L.key_ptr[h], ptr[h].data(), np * sizeof(int64_t)) != 0) return false;
      if (!keys[h].empty() &&
          std::memcmp(L.keys[h], keys[h].data(), keys[h].size() * sizeof(int32_t)) != 0)
        return false;
    }
    return true;
  }
};

void upload(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

void download(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

class CudaModelOps final : public ModelOps<float> {
 public:
  CudaModelOps(int device, cudaStream_t stream, cublasHandle_t cublas, cudaDataType products,
               cublasLtHandle_t lt, std::string lt_off)
      : device_(device),
        s_(stream),
        blas_(cublas),
        products_(products),
        lt_(lt, std::move(lt_off)) {}

  const mk::LinearBiasLt& linear_bias() const { return lt_; }

  void layer_norm_forward(const float* x, const float* gamma, const float* beta, int64_t rows,
                          int64_t dim, float eps, float* y, float* mean, float* rstd) override {
    enter();
    mk::layer_norm_forward(x, gamma, beta, rows, dim, eps, y, mean, rstd, s_);
  }
  void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                           const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                           float* dbeta) override {
    enter();
    float* scratch = columns_.get<float>(mk::column_scratch(rows, dim), s_, "cudaMalloc (scratch)");
    mk::layer_norm_backward(dy, x, gamma, mean, rstd, rows, dim, dx, dgamma, dbeta, scratch, s_);
  }
  void linear_forward(const float* x, const float* w, const float* b, int64_t rows, int64_t in,
                      int64_t out, float* y) override {
    linear(x, w, b, rows, in, out, y);
  }
  void linear_backward(const float* dy, const float* x, const float* w, int64_t rows, int64_t in,
                       int64_t out, float* dx, bool accumulate_dx, float* dw, float* db) override {
    linear_grad(dy, x, w, rows, in, out, dx, accumulate_dx, dw, db);
  }
  void linear_forward_16(const void* x, sparse_dtype dtype, const float* w, const float* b,
                         int64_t rows, int64_t in, int64_t out, float* y) override {
    check_16(dtype);
    linear(mk::Operand::in_16_bits(x), w, b, rows, in, out, y);
  }
  void linear_backward_16(const float* dy, const void* x, sparse_dtype dtype, const float* w,
                          int64_t rows, int64_t in, int64_t out, float* dx, bool accumulate_dx,
                          float* dw, float* db) override {
    check_16(dtype);
    linear_grad(dy, mk::Operand::in_16_bits(x), w, rows, in, out, dx, accumulate_dx, dw, db);
  }
  void linear_transposed_forward(const float* x, const float* w, int64_t rows, int64_t in,
                                 int64_t out, float* y) override {
    enter();
    mk::gemm_xwt(gemm_inputs(rows, in, out), x, w, rows, in, out, y, 0.0f);
  }
  void linear_transposed_backward(const float* dy, const float* x, const float* w, int64_t rows,
                                  int64_t in, int64_t out, float* dx, float* dw) override {
    enter();
    // dx = dy w with w [out, in]; dw [out, in] += dy^T x.
    const mk::GemmInputs g = gemm_inputs(rows, in, out);
    mk::gemm_xw(g, dy, w, rows, out, in, dx, 0.0f);
    mk::gemm_xt_dy(g, dy, x, rows, out, in, dw, 1.0f);
  }
  void gelu_forward(const float* x, int64_t n, float* y) override {
    enter();
    mk::gelu_forward(x, n, y, s_);
  }
  void gelu_backward(const float* x, const float* dy, int64_t n, float* dx) override {
    enter();
    mk::gelu_backward(x, dy, n, dx, s_);
  }
  void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                         const float* token_table, const float* start,
                         const float* const* pos_tables, const ops::PositionShape& shape,
                         float* h) override {
    enter();
    mk::embedding_forward(tokens, batch, seq, dim, token_table, start, pos_tables, shape, h, s_);
  }
  void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                          const float* dh, const ops::PositionShape& shape, float* d_token_table,
                          float* d_start, float* const* d_pos_tables) override {
    enter();
    int32_t* order = order_.get<int32_t>(batch * seq, s_, "cudaMalloc (scratch)");
    int32_t* offsets = offsets_.get<int32_t>(258, s_, "cudaMalloc (scratch)");
    mk::embedding_backward(tokens, batch, seq, dim, dh, shape, d_token_table, d_start, d_pos_tables,
                           order, offsets, s_);
  }
  void dropout_forward(const float* x, int64_t n, double p, uint64_t seed, float* y) override {
    enter();
    mk::dropout(x, n, p, seed, y, s_);
  }
  void dropout_backward(const float* dy, int64_t n, double p, uint64_t seed, float* dx) override {
    enter();
    mk::dropout(dy, n, p, seed, dx, s_);  // the same mask and scale
  }
  double softmax_cross_entropy(const float* logits, const uint8_t* targets, int64_t rows,
                               int64_t vocab, float grad_scale, float* dlogits) override {
    enter();
    double* row_loss = losses_.get<double>(rows, s_, "cudaMalloc (scratch)");
    mk::softmax_cross_entropy(logits, targets, rows, vocab, grad_scale, dlogits, row_loss, s_);
    std::vector<double> host(static_cast<size_t>(rows));
    download(host.data(), row_loss, host.size() * sizeof(double), s_);
    double total = 0;
    for (double v : host) total += v;
    return total;
  }
  void listed_attention_forward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                float scale, const float* q, const float* k, const float* v,
                                float* out, float* lse) override {
    enter();
    mk::listed_attention_forward(device_lists(lists), batch, dqk, dv, scale, q, k, v, out, lse, s_);
  }
  void listed_attention_backward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                 float scale, const float* q, const float* k, const float* v,
                                 const float* out, const float* lse, const float* dout, float* dq,
                                 float* dk, float* dvv) override {
    enter();
    const mk::DeviceKeyLists& L = device_lists(lists);
    float* delta = delta_.get<float>(batch * lists.heads * lists.seq, s_, "cudaMalloc (scratch)");
    mk::listed_attention_backward(L, batch, dqk, dv, scale, q, k, v, out, lse, dout, dq, dk, dvv,
                                  delta, s_);
  }
  void decode_attention(const ops::KeyLists& lists, int64_t t, int64_t dqk, int64_t dv, float scale,
                        const float* q, const float* kcache, const float* vcache,
                        float* out) override {
    enter();
    // Only row t's keys travel: [heads + 1] offsets, then the keys, in one upload.
    std::vector<int64_t> ptr(static_cast<size_t>(lists.heads) + 1, 0);
    for (int h = 0; h < lists.heads; ++h)
      ptr[h + 1] = ptr[h] + lists.key_ptr[h][t + 1] - lists.key_ptr[h][t];
    std::vector<int32_t> keys(static_cast<size_t>(ptr.back()));
    for (int h = 0; h < lists.heads; ++h)
      std::memcpy(keys.data() + ptr[h], lists.keys[h] + lists.key_ptr[h][t],
                  static_cast<size_t>(ptr[h + 1] - ptr[h]) * sizeof(int32_t));
    const size_t ptr_bytes = ptr.size() * sizeof(int64_t);
    auto* base = static_cast<unsigned char*>(
        decode_.get(ptr_bytes + keys.size() * sizeof(int32_t) + 8, s_, "cudaMalloc (scratch)"));
    upload(base, ptr.data(), ptr_bytes, s_);
    upload(base + ptr_bytes, keys.data(), keys.size() * sizeof(int32_t), s_);
    mk::decode_attention(reinterpret_cast<const int64_t*>(base),
                         reinterpret_cast<const int32_t*>(base + ptr_bytes), lists.heads, scale,
                         dqk, dv, q, kcache, vcache, out, s_);
  }
  void add(const float* a, const float* b, int64_t n, float* y) override {
    enter();
    mk::add(a, b, n, y, s_);
  }
  void accumulate(float* y, const float* x, int64_t n) override {
    enter();
    mk::accumulate(y, x, n, s_);
  }
  void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
                 int64_t cols) override {
    enter();
    mk::copy_rows(src, src_stride, dst, dst_stride, rows, cols, s_);
  }
  double squared_norm(const float* x, int64_t n) override {
    enter();
    const int64_t chunks = (n + mk::kNormChunk - 1) / mk::kNormChunk;
    double* partial = norms_.get<double>(chunks, s_, "cudaMalloc (scratch)");
    mk::squared_norm_partials(x, n, partial, s_);
    std::vector<double> host(static_cast<size_t>(chunks));
    download(host.data(), partial, host.size() * sizeof(double), s_);
    double total = 0;
    for (double v : host) total += v;
    return total;
  }
  void hold_weights(const float* w, int64_t n) override {
    release_weights();
    if (products_ == CUDA_R_32F || w == nullptr || n <= 0) return;
    enter();
    void* copy = weights16_.get<uint16_t>(n, s_, "cudaMalloc (16-bit weights)");
    mk::round_to_16(w, n, products_, copy, s_);
    held_ = w;
    held16_ = copy;
    held_n_ = n;
  }
  void release_weights() noexcept override {
    held_ = nullptr;
    held16_ = nullptr;
    held_n_ = 0;
  }
  void round_to_16(const float* x, int64_t n, sparse_dtype dtype, void* y) override {
    enter();
    mk::round_to_16(x, n, type_16(dtype), y, s_);
  }
  void widen_from_16(const void* x, int64_t n, sparse_dtype dtype, float* y) override {
    enter();
    mk::widen_from_16(x, n, type_16(dtype), y, s_);
  }
  void adam_update(float* w, const float* g, float* m, float* v, const uint8_t* decay, int64_t n,
                   const ops::AdamStep& step) override {
    enter();
    mk::adam_update(w, g, m, v, decay, n, step, s_);
  }

 private:
  void enter() { check_cuda(cudaSetDevice(device_), "cudaSetDevice"); }
  static cudaDataType type_16(sparse_dtype dtype) {
    require(dtype == SPARSE_DTYPE_BF16 || dtype == SPARSE_DTYPE_F16, "16-bit conversion to dtype ",
            static_cast<int>(dtype), ": expected SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16");
    return dtype == SPARSE_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
  }

  // y = x w (+ b): with a bias, one cublasLtMatmul with the bias epilogue where cuBLASLt accepts
  // the product, else cublasGemmEx and the bias kernel.
  void linear(mk::Operand x, const float* w, const float* b, int64_t rows, int64_t in, int64_t out,
              float* y) {
    enter();
    const mk::GemmInputs g = gemm_inputs(rows, in, out);
    if (b != nullptr) {
      void* workspace = lt_.enabled()
                            ? lt_workspace_.get(kLtWorkspace, s_, "cudaMalloc (cuBLASLt workspace)")
                            : nullptr;
      if (lt_.run(g, x, w, b, rows, in, out, y, workspace, lt_.enabled() ? kLtWorkspace : 0))
        return;
    }
    mk::gemm_xw(g, x, w, rows, in, out, y, 0.0f);
    if (b != nullptr) mk::add_bias(b, rows, out, y, s_);
  }
  void linear_grad(const float* dy, mk::Operand x, const float* w, int64_t rows, int64_t in,
                   int64_t out, float* dx, bool accumulate_dx, float* dw, float* db) {
    enter();
    const mk::GemmInputs g = gemm_inputs(rows, in, out);
    if (dx != nullptr) mk::gemm_dyw_t(g, dy, w, rows, in, out, dx, accumulate_dx ? 1.0f : 0.0f);
    mk::gemm_xt_dy(g, x, dy, rows, in, out, dw, 1.0f);
    if (db != nullptr) {
      float* scratch =
          columns_.get<float>(mk::column_scratch(rows, out), s_, "cudaMalloc (scratch)");
      mk::column_sums(dy, rows, out, db, scratch, s_);
    }
  }
  // A 16-bit operand must be in the products' own type (the model stores activations in it).
  void check_16(sparse_dtype dtype) const {
    require(products_ != CUDA_R_32F && type_16(dtype) == products_, "a 16-bit operand of dtype ",
            static_cast<int>(dtype), " for products on ",
            products_ == CUDA_R_32F    ? "fp32"
            : products_ == CUDA_R_16BF ? "bf16"
                                       : "fp16",
            " inputs");
  }

  // The products' inputs for operands among [rows, in], [rows, out] and [in, out]; 16-bit
  // inputs get scratch for the larger operand's rounded copy.
  mk::GemmInputs gemm_inputs(int64_t rows, int64_t in, int64_t out) {
    mk::GemmInputs g;
    g.handle = blas_;
    g.type = products_;
    g.stream = s_;
    if (products_ != CUDA_R_32F) {
      const int64_t most = std::max({rows * in, rows * out, in * out});
      g.a16 = a16_.get<uint16_t>(most, s_, "cudaMalloc (16-bit operands)");
      g.b16 = b16_.get<uint16_t>(most, s_, "cudaMalloc (16-bit operands)");
      g.w32 = held_;
      g.w16 = held16_;
      g.wn = held_n_;
    }
    return g;
  }

  // The device copy of `lists` (made on first use; a few layouts are kept).
  const mk::DeviceKeyLists& device_lists(const ops::KeyLists& L) {
    for (auto& e : lists_)
      if (e->equals(L)) return e->view;
    if (lists_.size() >= 8) lists_.erase(lists_.begin());
    auto e = std::make_unique<DeviceLists>();
    e->seq = L.seq;
    e->heads = L.heads;
    const int64_t n = L.seq;
    std::vector<int64_t> ptr, tptr;
    std::vector<int32_t> keys, queries;
    for (int h = 0; h < L.heads; ++h) {
      const int64_t count = L.key_ptr[h][n];
      e->ptr.emplace_back(L.key_ptr[h], L.key_ptr[h] + n + 1);
      e->keys.emplace_back(L.keys[h], L.keys[h] + count);
      const int64_t base = static_cast<int64_t>(keys.size());
      for (int64_t i = 0; i <= n; ++i) ptr.push_back(base + L.key_ptr[h][i]);
      keys.insert(keys.end(), L.keys[h], L.keys[h] + count);
      // The transpose: queries of each key in increasing order.
      std::vector<int64_t> start(static_cast<size_t>(n) + 1, 0);
      for (int64_t e2 = 0; e2 < count; ++e2) ++start[static_cast<size_t>(L.keys[h][e2]) + 1];
      for (int64_t j = 0; j < n; ++j) start[j + 1] += start[j];
      for (int64_t j = 0; j <= n; ++j) tptr.push_back(base + start[j]);
      std::vector<int32_t> q(static_cast<size_t>(count));
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t e2 = L.key_ptr[h][i]; e2 < L.key_ptr[h][i + 1]; ++e2)
          q[static_cast<size_t>(fill[static_cast<size_t>(L.keys[h][e2])]++)] =
              static_cast<int32_t>(i);
      queries.insert(queries.end(), q.begin(), q.end());
    }
    auto put = [&](Scratch& dst, const auto& v) {
      using E = typename std::decay_t<decltype(v)>::value_type;
      void* p = dst.get(v.size() * sizeof(E) + 8, s_, "cudaMalloc (key lists)");
      upload(p, v.data(), v.size() * sizeof(E), s_);
      return p;
    };
    e->view.seq = n;
    e->view.heads = L.heads;
    e->view.ptr = static_cast<const int64_t*>(put(e->d_ptr, ptr));
    e->view.keys = static_cast<const int32_t*>(put(e->d_keys, keys));
    e->view.tptr = static_cast<const int64_t*>(put(e->d_tptr, tptr));
    e->view.queries = static_cast<const int32_t*>(put(e->d_queries, queries));
    lists_.push_back(std::move(e));
    return lists_.back()->view;
  }

  int device_;
  cudaStream_t s_;
  cublasHandle_t blas_;
  cudaDataType products_;
  Scratch a16_, b16_, columns_, order_, offsets_, losses_, norms_, delta_, decode_;
  // The held weights (hold_weights) and their 16-bit copy in weights16_.
  Scratch weights16_;
  const float* held_ = nullptr;
  const void* held16_ = nullptr;
  int64_t held_n_ = 0;
  std::vector<std::unique_ptr<DeviceLists>> lists_;
  mk::LinearBiasLt lt_;
  Scratch lt_workspace_;
};

}  // namespace

LinearBiasStats linear_bias_stats(const ModelOps<float>& ops) {
  LinearBiasStats r;
  const auto* cuda = dynamic_cast<const CudaModelOps*>(&ops);
  if (cuda == nullptr) return r;
  const mk::LinearBiasLt& lt = cuda->linear_bias();
  r.lt_enabled = lt.enabled();
  r.lt_calls = lt.lt_calls();
  r.fallback_calls = lt.fallback_calls();
  r.note = lt.note();
  return r;
}

std::unique_ptr<ModelOps<float>> make_cuda_model_ops(int device, cudaStream_t stream,
                                                     cublasHandle_t cublas, cublasLtHandle_t lt,
                                                     const std::string& lt_off, bool lt_disabled,
                                                     sparse_dtype products) {
  require(
      products == SPARSE_DTYPE_F32 || products == SPARSE_DTYPE_BF16 || products == SPARSE_DTYPE_F16,
      "the CUDA model's matrix products take fp32, bf16 or fp16 inputs, not dtype ",
      static_cast<int>(products));
  const cudaDataType type = products == SPARSE_DTYPE_BF16  ? CUDA_R_16BF
                            : products == SPARSE_DTYPE_F16 ? CUDA_R_16F
                                                           : CUDA_R_32F;
  return std::make_unique<CudaModelOps>(
      device, stream, cublas, type, lt_disabled ? nullptr : lt,
      lt_disabled ? std::string("cuBLASLt bias epilogue disabled by SPARSE_CUDA_LT=0") : lt_off);
}

}  // namespace sparse::cuda
