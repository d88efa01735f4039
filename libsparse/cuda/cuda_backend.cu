// The CUDA backend: device discovery, the context's stream, cuBLAS and cuBLASLt handles, the
// layout cache, the attention kernels (fp32: attention_fp32.cu; bf16/fp16 on tensor cores:
// attention_tc*.cu) and the model's operations in fp32 (model_ops_cuda.cu and the model_*.cu
// kernels).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "libsparse/backend.hpp"
#include "libsparse/cuda/attention_cuda.hpp"
#include "libsparse/cuda/cuda_check.hpp"
#include "libsparse/cuda/device_layout.hpp"
#include "libsparse/cuda/model_ops_cuda.hpp"
#include "libsparse/error.hpp"
#include "libsparse/layout.hpp"
#include "libsparse/resources.hpp"

namespace sparse {
namespace {

using cuda::check_cuda;

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, void* stream) : device_(device) {
    // SPARSE_CUDA_TC_FORWARD picks the bf16/fp16 forward kernel, read once here (before anything
    // is acquired, so a bad value fails the context cleanly): unset, empty or 2 the second
    // (cp.async pipelining and ldmatrix; 1.6 times the first on an H200, the same results), 1
    // the first.
    if (const char* fwd = std::getenv("SPARSE_CUDA_TC_FORWARD"); fwd != nullptr) {
      if (std::strcmp(fwd, "1") == 0)
        tc_forward_ = 1;
      else if (fwd[0] != '\0' && std::strcmp(fwd, "2") != 0)
        throw_invalid(
            "SPARSE_CUDA_TC_FORWARD must be 1 or 2 (the tensor-core forward kernel), not \"", fwd,
            "\"");
    }
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    name_ = prop.name;
    sm_ = prop.major * 10 + prop.minor;
    if (stream != nullptr) {
      stream_ = static_cast<cudaStream_t>(stream);
    } else {
      check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      owns_stream_ = true;
    }
    if (cublasCreate(&cublas_) != CUBLAS_STATUS_SUCCESS) {
      release();
      throw_error(SPARSE_ERR_DEVICE, "cublasCreate failed on device ", device);
    }
    // Unchecked, a failure would leave cuBLAS on the legacy default stream, unordered with the
    // non-blocking stream every other operation runs on.
    const cublasStatus_t set = cublasSetStream(cublas_, stream_);
    if (set != CUBLAS_STATUS_SUCCESS) {
      release();
      throw_error(SPARSE_ERR_DEVICE, "cublasSetStream failed on device ", device, " (status ",
                  static_cast<int>(set), ")");
    }
    // cuBLASLt serves the forward products with a bias (its bias epilogue); without it they run
    // through cuBLAS and the bias kernel, and the description says why.
    const cublasStatus_t lt = cublasLtCreate(&cublas_lt_);
    if (lt != CUBLAS_STATUS_SUCCESS) {
      cublas_lt_ = nullptr;
      lt_off_ = "cublasLtCreate failed (status " + std::to_string(static_cast<int>(lt)) + ")";
    }
    // SPARSE_CUDA_LT=0 is read here, once: the mixed-precision tables are made on first use, and
    // the first GPU run (2026-11-30) found them reading the environment of that later moment.
    const char* env = std::getenv("SPARSE_CUDA_LT");
    lt_disabled_ = env != nullptr && std::strcmp(env, "0") == 0;
    model_ops_ = make_ops(SPARSE_DTYPE_F32);
  }
  ~CudaBackend() override { release(); }

  sparse_backend kind() const override { return SPARSE_BACKEND_CUDA; }
  int32_t device_index() const override { return device_; }
  // The device, the bf16/fp16 forward kernel, and how the fp32 forward products with a bias have
  // run so far.
  std::string description() const override {
    const cuda::LinearBiasStats lt =
        model_ops_ != nullptr ? cuda::linear_bias_stats(*model_ops_) : cuda::LinearBiasStats{};
    std::string bias =
        lt.lt_enabled ? "linear bias: cuBLASLt epilogue" : "linear bias: cuBLAS + bias kernel";
    if (lt.lt_calls + lt.fallback_calls > 0)
      bias += " (" + std::to_string(lt.lt_calls) + " epilogue, " +
              std::to_string(lt.fallback_calls) + " fallback calls)";
    if (!lt.note.empty()) bias += "; " + lt.note;
    const std::string forward = tc_forward_ == 2 ? "16-bit forward: v2 (cp.async, ldmatrix)"
                                                 : "16-bit forward: v1 (SPARSE_CUDA_TC_FORWARD=1)";
    return "cuda device " + std::to_string(device_) + " (" + name_ + ", sm_" + std::to_string(sm_) +
           "; " + forward + "; " + bias + ")";
  }
  int num_threads() const override { return 1; }
  void synchronize() override {
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  sparse_memory memory_kind() const override { return SPARSE_MEMORY_DEVICE; }
  void* allocate(size_t bytes) override {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status != cudaSuccess)
      check_cuda(
          status,
          detail::concat("cudaMalloc of ", format_bytes(static_cast<double>(bytes))).c_str());
    return p;
  }
  void free(void* ptr) noexcept override {
    if (ptr != nullptr) cudaFree(ptr);
  }
  void copy(void* dst, sparse_memory dst_memory, const void* src, sparse_memory src_memory,
            size_t bytes) override {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    const cudaMemcpyKind kind =
        src_memory == SPARSE_MEMORY_HOST
            ? (dst_memory == SPARSE_MEMORY_HOST ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
            : (dst_memory == SPARSE_MEMORY_HOST ? cudaMemcpyDeviceToHost
                                                : cudaMemcpyDeviceToDevice);
    check_cuda(cudaMemcpyAsync(dst, src, bytes, kind, stream_), "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  void zero(void* ptr, size_t bytes) override {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    check_cuda(cudaMemsetAsync(ptr, 0, bytes, stream_), "cudaMemsetAsync");
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  // Every model operation in fp32 (the training type), and mixed precision (bf16 or fp16 matrix
  // product inputs, the rest fp32); the double-precision reference path stays on the CPU.
  std::string supports_op(ModelOp op, sparse_dtype dtype) const override {
    if (dtype == SPARSE_DTYPE_F64)
      return std::string("the CUDA backend implements the model operation ") + model_op_name(op) +
             " in fp32, bf16 and fp16 only (the fp64 reference runs on the CPU backend)";
    if ((dtype == SPARSE_DTYPE_BF16 || dtype == SPARSE_DTYPE_F16) && sm_ < 80)
      return "mixed precision needs compute capability 8.0 or newer (this device is sm_" +
             std::to_string(sm_) + ")";
    return {};
  }
  ModelOps<float>* model_ops_f32() override { return model_ops_.get(); }
  ModelOps<float>* model_ops_mixed(sparse_dtype products) override {
    if (products != SPARSE_DTYPE_BF16 && products != SPARSE_DTYPE_F16) return nullptr;
    std::unique_ptr<ModelOps<float>>& ops = products == SPARSE_DTYPE_BF16 ? bf16_ops_ : f16_ops_;
    if (ops == nullptr) ops = make_ops(products);
    return ops.get();
  }
  std::string supports_attention(const Layout& layout, sparse_dtype dtype, sparse_memory memory,
                                 int64_t head_dim,
                                 sparse_attention_algorithm algorithm) const override {
    if (memory != SPARSE_MEMORY_DEVICE)
      return "the CUDA backend needs tensors in device memory (SPARSE_MEMORY_DEVICE)";
    if (algorithm == SPARSE_ATTENTION_UNFUSED && dtype != SPARSE_DTYPE_F32)
      return "the CUDA backend computes the unfused algorithm (SPARSE_ATTENTION_UNFUSED) in fp32 "
             "only; use SPARSE_ATTENTION_FUSED for bf16/fp16";
    if (dtype == SPARSE_DTYPE_BF16 || dtype == SPARSE_DTYPE_F16) {
      if (sm_ < 80)
        return "the bf16/fp16 attention kernels need a GPU of compute capability 8.0 or newer "
               "(this one is sm_" +
               std::to_string(sm_) + ")";
      return cuda::tensor_core_support(layout.block, head_dim);
    }
    if (dtype != SPARSE_DTYPE_F32)
      return "the CUDA backend computes attention in fp32, bf16 and fp16 (not fp64)";
    if (head_dim > cuda::kMaxHeadDim)
      return "head_dim " + std::to_string(head_dim) + " exceeds the CUDA kernels' limit of " +
             std::to_string(cuda::kMaxHeadDim);
    return {};
  }
  size_t attention_workspace_bytes(const Layout& layout, int64_t batch, int64_t, bool backward,
                                   sparse_attention_algorithm algorithm) const override {
    // Backward: the row statistic delta = dout . out (rounded up to 256 bytes).
    const size_t delta =
        backward
            ? align(static_cast<size_t>(batch * layout.num_heads * layout.seq_len) * sizeof(float))
            : 0;
    if (algorithm != SPARSE_ATTENTION_UNFUSED) return delta;
    // Unfused: the scores of every computed block (forward), P and dS (backward).
    const size_t scores = align(cuda::unfused_scores_bytes(layout, batch));
    return delta + (backward ? 2 : 1) * scores;
  }
  void attention_forward(const AttentionForwardArgs& args) override {
    check_device(args.q.device);
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    const cuda::DeviceLayout& dl = layouts_.get(*args.layout, stream_);
    if (args.algorithm == SPARSE_ATTENTION_UNFUSED) {
      ensure_workspace(attention_workspace_bytes(*args.layout, args.q.shape[0], args.q.shape[3],
                                                 false, args.algorithm));
      cuda::attention_forward_unfused(dl, args, static_cast<float*>(workspace_), stream_);
    } else if (args.q.dtype == SPARSE_DTYPE_F32) {
      cuda::attention_forward_fp32(dl, args, stream_);
    } else {
      cuda::attention_forward_tc(dl, args, stream_, tc_forward_);
    }
  }
  void attention_backward(const AttentionBackwardArgs& args) override {
    check_device(args.q.device);
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    ensure_workspace(attention_workspace_bytes(*args.layout, args.q.shape[0], args.q.shape[3], true,
                                               args.algorithm));
    const cuda::DeviceLayout& dl = layouts_.get(*args.layout, stream_);
    float* delta = static_cast<float*>(workspace_);
    if (args.algorithm == SPARSE_ATTENTION_UNFUSED) {
      auto* base = static_cast<unsigned char*>(workspace_);
      const size_t delta_bytes = align(
          static_cast<size_t>(args.q.shape[0] * args.q.shape[1] * args.q.shape[2]) * sizeof(float));
      const size_t scores = align(cuda::unfused_scores_bytes(*args.layout, args.q.shape[0]));
      cuda::attention_backward_unfused(
          dl, args, delta, reinterpret_cast<float*>(base + delta_bytes),
          reinterpret_cast<float*>(base + delta_bytes + scores), stream_);
    } else if (args.q.dtype == SPARSE_DTYPE_F32) {
      cuda::attention_backward_fp32(dl, args, delta, stream_);
    } else {
      cuda::attention_backward_tc(dl, args, delta, stream_);
    }
  }

  std::string dense_attention_baseline(const DenseBaselineArgs& args) override {
    const std::string why = cuda::dense_baseline_check(args);
    if (!why.empty()) return why;
    check_device(args.q.device);
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    const size_t bytes = cuda::dense_baseline_workspace(args);
    size_t free_bytes = 0, total_bytes = 0;
    check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    if (bytes > workspace_bytes_ && bytes - workspace_bytes_ > free_bytes / 10 * 9)
      return "the dense baseline needs " + std::to_string(bytes >> 20) +
             " MiB of n x n buffers; the GPU has " + std::to_string(free_bytes >> 20) + " MiB free";
    ensure_workspace(bytes);
    cuda::dense_baseline_run(args, cublas_, stream_, workspace_);
    return {};
  }

 private:
  static size_t align(size_t bytes) { return (bytes + 255) / 256 * 256; }

  std::unique_ptr<ModelOps<float>> make_ops(sparse_dtype products) {
    return cuda::make_cuda_model_ops(device_, stream_, cublas_, cublas_lt_, lt_off_, lt_disabled_,
                                     products);
  }

  // Grows the backend's workspace to at least `bytes` (waiting for work that may still use it).
  void ensure_workspace(size_t bytes) {
    if (bytes <= workspace_bytes_) return;
    if (workspace_ != nullptr) {
      check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      cudaFree(workspace_);
      workspace_ = nullptr;
      workspace_bytes_ = 0;
    }
    check_cuda(cudaMalloc(&workspace_, bytes), "cudaMalloc (attention workspace)");
    workspace_bytes_ = bytes;
  }

  void check_device(int32_t tensor_device) const {
    require(tensor_device == device_, "tensors live on CUDA device ", tensor_device,
            " but the context runs on device ", device_);
  }

  void release() noexcept {
    if (model_ops_ != nullptr && stream_ != nullptr) cudaStreamSynchronize(stream_);
    model_ops_.reset();
    bf16_ops_.reset();
    f16_ops_.reset();
    if (workspace_ != nullptr) cudaFree(workspace_);
    workspace_ = nullptr;
    if (cublas_lt_ != nullptr) cublasLtDestroy(cublas_lt_);
    cublas_lt_ = nullptr;
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    cublas_ = nullptr;
    if (owns_stream_ && stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  int device_;
  int sm_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  bool owns_stream_ = false;
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t cublas_lt_ = nullptr;
  std::string lt_off_;        // why cublas_lt_ is null
  bool lt_disabled_ = false;  // SPARSE_CUDA_LT=0 when the backend was made
  int tc_forward_ = 2;        // SPARSE_CUDA_TC_FORWARD when the backend was made
  std::unique_ptr<ModelOps<float>> model_ops_, bf16_ops_, f16_ops_;
  cuda::LayoutCache layouts_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace

int cuda_device_count() noexcept {
  int count = 0;
  // Without a driver or a device this returns an error; both mean "no usable GPU".
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state
    return 0;
  }
  return count;
}

bool cuda_compiled() noexcept { return true; }

std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no CUDA device is present (cudaGetDeviceCount: ") + cudaGetErrorString(e) +
           ")";
  }
  return count > 0 ? "" : "no CUDA device is present (no GPU visible to this process)";
}

std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream, uint64_t) {
  const int count = cuda_device_count();
  if (count == 0)
    throw_error(SPARSE_ERR_UNSUPPORTED, "the CUDA backend was requested but ",
                cuda_unavailable_reason());
  if (device_index >= count)
    throw_invalid("device_index ", device_index, " is out of range: ", count,
                  " CUDA device(s) present");
  return std::make_unique<CudaBackend>(device_index, stream);
}

}  // namespace sparse
