// The CPU backend: Eigen kernels threaded with OpenMP.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "attention_cpu.hpp"
#include "backend.hpp"
#include "eigen.hpp"
#include "error.hpp"
#include "layout.hpp"
#include "resources.hpp"
#include "sparse_config.h"
#include "threads.hpp"
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
           std::to_string(EIGEN_MAJOR_VERSION) + "." + std::to_string(EIGEN_MINOR_VERSION) +
           ", " + std::to_string(threads_) + " threads, SIMD " + Eigen::SimdInstructionSetsInUse() +
           ")";
  }
  int num_threads() const override { return threads_; }
  sparse_memory memory_kind() const override { return SPARSE_MEMORY_HOST; }
  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void free(void* ptr) noexcept override { std::free(ptr); }
  void copy(void* dst, sparse_memory dst_memory, const void* src, sparse_memory src_memory,
            size_t bytes) override {
    require(dst_memory == SPARSE_MEMORY_HOST && src_memory == SPARSE_MEMORY_HOST,
            "the CPU backend copies host memory only");
    std::memmove(dst, src, bytes);
  }
  std::string supports_attention(sparse_dtype dtype, sparse_memory memory, int64_t,
                                 sparse_attention_algorithm) const override {
    if (memory != SPARSE_MEMORY_HOST)
      return "the CPU backend needs tensors in host memory (SPARSE_MEMORY_HOST)";
    if (dtype != SPARSE_DTYPE_F32) return "the CPU backend computes attention in fp32 only";
    return {};
  }
  size_t attention_workspace_bytes(const Layout& layout, int64_t batch, int64_t head_dim,
                                   bool backward,
                                   sparse_attention_algorithm algorithm) const override {
    return algorithm == SPARSE_ATTENTION_UNFUSED
               ? cpu::attention_workspace_bytes_unfused(layout, batch, head_dim, backward,
                                                        threads_)
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
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int num_threads, uint64_t) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace sparse
