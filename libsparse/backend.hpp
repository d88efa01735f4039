// The internal backend interface: one table of operations per compute device.
//
// A backend owns a memory (memory_kind(): host or device) and executes, in issue order, on one
// stream: block-sparse attention, and the model's operations (model_ops.hpp) for each scalar type
// it implements. The model and the trainer reach a device only through this interface; the CPU
// backend (reference_cpu/, Eigen) implements everything and is the reference every other backend
// is checked against; the CUDA backend (libsparse/cuda/) is compiled when nvcc is found.
//
// Callers ask before they call: supports_attention() and supports_op() return an empty string
// when the backend can do the work, otherwise the reason (surfaced as SPARSE_ERR_UNSUPPORTED).
// The C layer validates arguments (shapes, dtypes, NULLs) before calling a backend, so backends
// only check what depends on them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "libsparse/model_ops.hpp"
#include "libsparse/tensor.hpp"
#include "sparse/attention.h"
#include "sparse/context.h"

namespace sparse {

class Layout;

// Arguments of block-sparse multi-head attention. Tensors are [batch, heads, seq, head_dim];
// lse is [batch, heads, seq] (natural row order), fp32.
struct AttentionForwardArgs {
  const Layout* layout = nullptr;
  float scale = 1.0f;
  sparse_attention_algorithm algorithm = SPARSE_ATTENTION_FUSED;
  TensorView q, k, v, out;
  TensorView lse;  // may have data == nullptr when not requested
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

  // Memory where this backend computes. allocate() returns 64-byte aligned memory owned by the
  // caller until free() (which accepts nullptr); copies and zero() wait for completion of the
  // work issued before them.
  virtual sparse_memory memory_kind() const = 0;
  // The device ordinal of that memory (sparse_tensor.device of the tensors the backend accepts):
  // the CUDA device of a CUDA context, 0 for host memory.
  virtual int32_t device_index() const { return 0; }
  virtual void* allocate(size_t bytes) = 0;
  virtual void free(void* ptr) noexcept = 0;
  virtual void copy(void* dst, sparse_memory dst_memory, const void* src, sparse_memory src_memory,
                    size_t bytes) = 0;
  virtual void zero(void* ptr, size_t bytes) = 0;

  // Empty string when the backend can run attention with this layout on tensors of this dtype
  // and memory kind, otherwise the reason (returned to the caller as SPARSE_ERR_UNSUPPORTED).
  virtual std::string supports_attention(const Layout& layout, sparse_dtype dtype,
                                         sparse_memory memory, int64_t head_dim,
                                         sparse_attention_algorithm algorithm) const = 0;
  // Scratch memory the backend allocates for one call (beyond the caller's tensors).
  virtual size_t attention_workspace_bytes(const Layout& layout, int64_t batch, int64_t head_dim,
                                           bool backward,
                                           sparse_attention_algorithm algorithm) const = 0;
  virtual void attention_forward(const AttentionForwardArgs& args) = 0;
  virtual void attention_backward(const AttentionBackwardArgs& args) = 0;
  // Runs the dense baseline (forward, and backward when args.backward); returns the reason when
  // this backend cannot (empty string on success).
  virtual std::string dense_attention_baseline(const DenseBaselineArgs& args) {
    (void)args;
    return "the dense GEMM baseline is implemented on the CUDA backend (cuBLAS) only";
  }

  // The model's operations. supports_op() says whether `op` is implemented for `dtype`
  // (SPARSE_DTYPE_F32 for training, SPARSE_DTYPE_F64 for the double-precision reference);
  // model_ops_f32/f64() return the table, or nullptr when the backend has none for that type.
  virtual std::string supports_op(ModelOp op, sparse_dtype dtype) const {
    (void)dtype;
    return std::string("this backend does not implement the model operation ") + model_op_name(op);
  }
  virtual ModelOps<float>* model_ops_f32() { return nullptr; }
  virtual ModelOps<double>* model_ops_f64() { return nullptr; }
  // Mixed precision: the fp32 operations with matrix products on `products` inputs
  // (SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16) and fp32 accumulation; supports_op(op, products)
  // says whether the backend offers them. nullptr when it has none.
  virtual ModelOps<float>* model_ops_mixed(sparse_dtype products) {
    (void)products;
    return nullptr;
  }
  template <typename T>
  ModelOps<T>* model_ops();
};

template <>
inline ModelOps<float>* Backend::model_ops<float>() {
  return model_ops_f32();
}
template <>
inline ModelOps<double>* Backend::model_ops<double>() {
  return model_ops_f64();
}

// The reasons why `backend` cannot run every model operation for `dtype`, separated by "; ";
// empty when it can.
std::string unsupported_model_ops(const Backend& backend, sparse_dtype dtype);

// The factories. The CPU backend (reference_cpu/cpu_backend.cpp) is the only way libsparse/
// reaches reference_cpu/. num_threads == 0 means all hardware threads.
std::unique_ptr<Backend> make_cpu_backend(int num_threads, uint64_t seed);

// libsparse/cuda/ in the static library and the CUDA module; in libsparse.so the loader of
// that module (libsparse/cuda_loader.cpp); libsparse/cuda_stub.cpp in builds without CUDA, which
// throws SPARSE_ERR_UNSUPPORTED. `stream` is a cudaStream_t or nullptr.
std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream, uint64_t seed);
// Number of usable CUDA devices; 0 without CUDA support, a driver, a device or (libsparse.so)
// a loadable CUDA module. Never throws.
int cuda_device_count() noexcept;
// Why the CUDA backend cannot run here (no CUDA in this build, the module or the CUDA libraries
// cannot be loaded, no driver, no device); empty when cuda_device_count() > 0.
std::string cuda_unavailable_reason();
// Whether this library was compiled with the CUDA backend.
bool cuda_compiled() noexcept;

}  // namespace sparse

// The object behind the opaque sparse_context handle. It is reference counted: the caller's
// reference (released by sparse_context_destroy) and one per model made on it, so the backend a
// model computes on lives until the model is destroyed too.
struct sparse_context {
  sparse_settings settings{};
  std::unique_ptr<sparse::Backend> backend;
  std::atomic<int64_t> references{1};
};

namespace sparse {
// Takes a reference to `context` (not NULL); release_context() drops it and deletes the context
// with its last reference.
inline sparse_context* retain_context(sparse_context* context) noexcept {
  context->references.fetch_add(1, std::memory_order_relaxed);
  return context;
}
inline void release_context(sparse_context* context) noexcept {
  if (context != nullptr && context->references.fetch_sub(1, std::memory_order_acq_rel) == 1)
    delete context;
}
}  // namespace sparse
