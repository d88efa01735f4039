// The internal backend interface: one small table of operations per compute device.
//
// The CPU backend (reference_cpu/, Eigen) is always compiled and is the reference every other
// backend is checked against; the CUDA backend (libsparse/cuda/) is compiled when nvcc is found.
// The C layer validates arguments (shapes, dtypes, NULLs) before calling a backend, so backends
// only check what depends on them (supported dtypes, memory kinds) via supports_attention().
// Later issues extend this table with the model and trainer operations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sparse/attention.h"
#include "sparse/context.h"
#include "tensor.hpp"

namespace sparse {

class Layout;

// Arguments of block-sparse multi-head attention. Tensors are [batch, heads, seq, head_dim];
// lse is [batch, heads, seq] (natural row order), fp32.
struct AttentionForwardArgs {
  const Layout* layout = nullptr;
  float scale = 1.0f;
  sparse_attention_algorithm algorithm = SPARSE_ATTENTION_FUSED;
  TensorView q, k, v, out;
  TensorView lse;          // may have data == nullptr when not requested
};

struct AttentionBackwardArgs {
  const Layout* layout = nullptr;
  float scale = 1.0f;
  sparse_attention_algorithm algorithm = SPARSE_ATTENTION_FUSED;
  TensorView q, k, v, out, lse, dout;
  TensorView dq, dk, dv;
};

// Dense causal attention through the vendor GEMM library (cuBLAS on CUDA): the benchmarks'
// dense baseline, not part of the C ABI. Contiguous [batch, heads, seq, head_dim] tensors of one
// dtype; lse fp32 [batch, heads, seq]; the backward fields are used when `backward` is set.
struct DenseBaselineArgs {
  float scale = 1.0f;
  bool backward = false;
  TensorView q, k, v, out, lse, dout, dq, dk, dv;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual sparse_backend kind() const = 0;
  virtual std::string description() const = 0;
  virtual int num_threads() const = 0;
  virtual void synchronize() {}

  // Memory where this backend computes; copies wait for completion. free() accepts nullptr.
  virtual sparse_memory memory_kind() const = 0;
  virtual void* allocate(size_t bytes) = 0;
  virtual void free(void* ptr) noexcept = 0;
  virtual void copy(void* dst, sparse_memory dst_memory, const void* src,
                    sparse_memory src_memory, size_t bytes) = 0;

  // Empty string when the backend can run attention on tensors of this dtype and memory kind,
  // otherwise the reason (returned to the caller as SPARSE_ERR_UNSUPPORTED).
  virtual std::string supports_attention(sparse_dtype dtype, sparse_memory memory,
                                         int64_t head_dim,
                                         sparse_attention_algorithm algorithm) const = 0;
  // Scratch memory the backend allocates for one call (beyond the caller's tensors).
  virtual size_t attention_workspace_bytes(const Layout& layout, int64_t batch,
                                           int64_t head_dim, bool backward,
                                           sparse_attention_algorithm algorithm) const = 0;
  virtual void attention_forward(const AttentionForwardArgs& args) = 0;
  virtual void attention_backward(const AttentionBackwardArgs& args) = 0;
  // Runs the dense baseline (forward, and backward when args.backward); returns the reason when
  // this backend cannot (empty string on success).
  virtual std::string dense_attention_baseline(const DenseBaselineArgs& args) {
    (void)args;
    return "the dense GEMM baseline is implemented on the CUDA backend (cuBLAS) only";
  }
};

// reference_cpu/cpu_backend.cpp. num_threads == 0 means all hardware threads.
std::unique_ptr<Backend> make_cpu_backend(int num_threads, uint64_t seed);

// libsparse/cuda/ (or libsparse/cuda_stub.cpp in builds without CUDA, which throws
// SPARSE_ERR_UNSUPPORTED). `stream` is a cudaStream_t or nullptr.
std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream, uint64_t seed);
// Number of usable CUDA devices; 0 without CUDA support, a driver or a device. Never throws.
int cuda_device_count() noexcept;
// Whether this library was compiled with the CUDA backend.
bool cuda_compiled() noexcept;

}  // namespace sparse

// The object behind the opaque sparse_context handle.
struct sparse_context {
  sparse_settings settings{};
  std::unique_ptr<sparse::Backend> backend;
};
