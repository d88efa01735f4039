// The CPU backend: Eigen kernels threaded with OpenMP. Every operation runs on the calling thread
// (and its OpenMP team) and is complete when it returns.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "libsparse/backend.hpp"
#include "libsparse/error.hpp"
#include "libsparse/layout.hpp"
#include "libsparse/resources.hpp"
#include "libsparse/threads.hpp"
#include "reference_cpu/attention_cpu.hpp"
#include "reference_cpu/eigen.hpp"
#include "reference_cpu/ops/ops.hpp"
#include "sparse_config.h"
#if SPARSE_HAVE_OPENMP
#include <omp.h>
#endif

namespace sparse {
namespace {

int hardware_threads() {
#if SPARSE_HAVE_OPENMP
  return omp_get_num_procs();
#else
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
#endif
}

// The model operations of reference_cpu/ops, in host memory.
template <typename T>
class CpuModelOps final : public ModelOps<T> {
 public:
  void layer_norm_forward(const T* x, const T* gamma, const T* beta, int64_t rows, int64_t dim,
                          T eps, T* y, T* mean, T* rstd) override {
    ops::layer_norm_forward(x, gamma, beta, rows, dim, eps, y, mean, rstd);
  }
  void layer_norm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                           int64_t rows, int64_t dim, T* dx, T* dgamma, T* dbeta) override {
    ops::layer_norm_backward(dy, x, gamma, mean, rstd, rows, dim, dx, dgamma, dbeta);
  }
  void linear_forward(const T* x, const T* w, const T* b, int64_t rows, int64_t in, int64_t out,
                      T* y) override {
    ops::linear_forward(x, w, b, rows, in, out, y);
  }
  void linear_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in, int64_t out,
                       T* dx, bool accumulate_dx, T* dw, T* db) override {
    ops::linear_backward(dy, x, w, rows, in, out, dx, accumulate_dx, dw, db);
  }
  void linear_transposed_forward(const T* x, const T* w, int64_t rows, int64_t in, int64_t out,
                                 T* y) override {
    ops::linear_transposed_forward(x, w, rows, in, out, y);
  }
  void linear_transposed_backward(const T* dy, const T* x, const T* w, int64_t rows, int64_t in,
                                  int64_t out, T* dx, T* dw) override {
    ops::linear_transposed_backward(dy, x, w, rows, in, out, dx, dw);
  }
  void gelu_forward(const T* x, int64_t n, T* y) override { ops::gelu_forward(x, n, y); }
  void gelu_backward(const T* x, const T* dy, int64_t n, T* dx) override {
    ops::gelu_backward(x, dy, n, dx);
  }
  void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                         const T* token_table, const T* start, const T* const* pos_tables,
                         const ops::PositionShape& shape, T* h) override {
    ops::embedding_forward(tokens, batch, seq, dim, token_table, start, pos_tables, shape, h);
  }
  void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                          const T* dh, const ops::PositionShape& shape, T* d_token_table,
                          T* d_start, T* const* d_pos_tables) override {
    ops::embedding_backward(tokens, batch, seq, dim, dh, shape, d_token_table, d_start,
                            d_pos_tables);
  }
  void dropout_forward(const T* x, int64_t n, double p, uint64_t seed, T* y) override {
    ops::dropout_forward(x, n, p, seed, y);
  }
  void dropout_backward(const T* dy, int64_t n, double p, uint64_t seed, T* dx) override {
    ops::dropout_backward(dy, n, p, seed, dx);
  }
  double softmax_cross_entropy(const T* logits, const uint8_t* targets, int64_t rows, int64_t vocab,
                               T grad_scale, T* dlogits) override {
    return ops::softmax_cross_entropy(logits, targets, rows, vocab, grad_scale, dlogits);
  }
  void listed_attention_forward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                T scale, const T* q, const T* k, const T* v, T* out,
                                T* lse) override {
    ops::listed_attention_forward(lists, batch, dqk, dv, scale, q, k, v, out, lse);
  }
  void listed_attention_backward(const ops::KeyLists& lists, int64_t batch, int64_t dqk, int64_t dv,
                                 T scale, const T* q, const T* k, const T* v, const T* out,
                                 const T* lse, const T* dout, T* dq, T* dk, T* dvv) override {
    ops::listed_attention_backward(lists, batch, dqk, dv, scale, q, k, v, out, lse, dout, dq, dk,
                                   dvv);
  }
  void decode_attention(const ops::KeyLists& lists, int64_t t, int64_t dqk, int64_t dv, T scale,
                        const T* q, const T* kcache, const T* vcache, T* out) override {
    ops::decode_attention(lists, t, dqk, dv, scale, q, kcache, vcache, out);
  }
  void add(const T* a, const T* b, int64_t n, T* y) override { ops::add(a, b, n, y); }
  void accumulate(T* y, const T* x, int64_t n) override { ops::accumulate(y, x, n); }
  void copy_rows(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                 int64_t cols) override {
    ops::copy_rows(src, src_stride, dst, dst_stride, rows, cols);
  }
  double squared_norm(const T* x, int64_t n) override { return ops::squared_norm(x, n); }
  void adam_update(T* w, const T* g, T* m, T* v, const uint8_t* decay, int64_t n,
                   const ops::AdamStep& step) override {
    ops::adam_update(w, g, m, v, decay, n, step);
  }
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads)
      : threads_(num_threads > 0 ? num_threads : std::min(hardware_threads(), thread_limit())) {
#if !SPARSE_HAVE_OPENMP
    threads_ = 1;  // without OpenMP the kernels run on the calling thread
#endif
    require(threads_ <= thread_limit(), "num_threads = ", threads_,
            " is more than OpenMP's thread limit of ", thread_limit(),
            " (OMP_THREAD_LIMIT) in this process");
  }
  sparse_backend kind() const override { return SPARSE_BACKEND_CPU; }
  std::string description() const override {
    return "cpu (Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." +
           std::to_string(EIGEN_MAJOR_VERSION) + "." + std::to_string(EIGEN_MINOR_VERSION) + ", " +
           std::to_string(threads_) + " threads, SIMD " + Eigen::SimdInstructionSetsInUse() + ")";
  }
  int num_threads() const override { return threads_; }
  sparse_memory memory_kind() const override { return SPARSE_MEMORY_HOST; }
  void* allocate(size_t bytes) override {
    void* p = bytes <= SIZE_MAX - 63 ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr;
    if (p == nullptr)
      throw_error(SPARSE_ERR_OUT_OF_MEMORY, "cannot allocate ",
                  format_bytes(static_cast<double>(bytes)), " of host memory");
    return p;
  }
  void free(void* ptr) noexcept override { std::free(ptr); }
  void copy(void* dst, sparse_memory dst_memory, const void* src, sparse_memory src_memory,
            size_t bytes) override {
    require(dst_memory == SPARSE_MEMORY_HOST && src_memory == SPARSE_MEMORY_HOST,
            "the CPU backend copies host memory only");
    std::memmove(dst, src, bytes);
  }
  void zero(void* ptr, size_t bytes) override { std::memset(ptr, 0, bytes); }
  std::string supports_attention(const Layout&, sparse_dtype dtype, sparse_memory memory, int64_t,
                                 sparse_attention_algorithm) const override {
    if (memory != SPARSE_MEMORY_HOST)
      return "the CPU backend needs tensors in host memory (SPARSE_MEMORY_HOST)";
    if (dtype != SPARSE_DTYPE_F32) {
      const std::string given = dtype == SPARSE_DTYPE_F16    ? "SPARSE_DTYPE_F16"
                                : dtype == SPARSE_DTYPE_BF16 ? "SPARSE_DTYPE_BF16"
                                                             : "SPARSE_DTYPE_F64";
      return "the CPU backend computes attention in fp32 only (SPARSE_DTYPE_F32), not " + given;
    }
    return {};
  }
  size_t attention_workspace_bytes(const Layout& layout, int64_t batch, int64_t head_dim,
                                   bool backward,
                                   sparse_attention_algorithm algorithm) const override {
    return algorithm == SPARSE_ATTENTION_UNFUSED
               ? cpu::attention_workspace_bytes_unfused(layout, batch, head_dim, backward, threads_)
               : cpu::attention_workspace_bytes(layout, batch, head_dim, backward, threads_);
  }
  void attention_forward(const AttentionForwardArgs& args) override {
    check_workspace(*args.layout, args.q.shape[0], args.q.shape[3], false, args.algorithm);
    ThreadScope scope(threads_);
    if (args.algorithm == SPARSE_ATTENTION_UNFUSED)
      cpu::attention_forward_unfused(args, threads_);
    else
      cpu::attention_forward(args, threads_);
  }
  void attention_backward(const AttentionBackwardArgs& args) override {
    check_workspace(*args.layout, args.q.shape[0], args.q.shape[3], true, args.algorithm);
    ThreadScope scope(threads_);
    if (args.algorithm == SPARSE_ATTENTION_UNFUSED)
      cpu::attention_backward_unfused(args, threads_);
    else
      cpu::attention_backward(args, threads_);
  }

  std::string supports_op(ModelOp, sparse_dtype dtype) const override {
    if (dtype != SPARSE_DTYPE_F32 && dtype != SPARSE_DTYPE_F64)
      return "the CPU backend computes the model in fp32 and fp64 only (bf16/fp16 mixed "
             "precision needs the CUDA backend)";
    return {};
  }
  ModelOps<float>* model_ops_f32() override { return &ops_f32_; }
  ModelOps<double>* model_ops_f64() override { return &ops_f64_; }

 private:
  void check_workspace(const Layout& layout, int64_t batch, int64_t head_dim, bool backward,
                       sparse_attention_algorithm algorithm) const {
    const size_t bytes = attention_workspace_bytes(layout, batch, head_dim, backward, algorithm);
    check_memory(static_cast<double>(bytes),
                 detail::concat("the ", backward ? "backward" : "forward", " pass's workspace (",
                                algorithm == SPARSE_ATTENTION_UNFUSED ? "unfused" : "fused",
                                ", batch = ", batch, ", head_dim = ", head_dim,
                                ", seq_len = ", layout.seq_len, ", ", threads_, " threads)"));
  }

  int threads_;
  CpuModelOps<float> ops_f32_;
  CpuModelOps<double> ops_f64_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int num_threads, uint64_t) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace sparse
