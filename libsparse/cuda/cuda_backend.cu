// The CUDA backend: device discovery, the context's stream and cuBLAS handle.
//
// Attention kernels land here with the CUDA kernels issue; until then the backend reports
// SPARSE_ERR_UNSUPPORTED for attention, so callers learn it instead of getting wrong results.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "backend.hpp"
#include "error.hpp"

namespace sparse {
namespace {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw_error(SPARSE_ERR_DEVICE, what, ": ", cudaGetErrorName(status), " (",
                cudaGetErrorString(status), ")");
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, void* stream) : device_(device) {
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
    cublasSetStream(cublas_, stream_);
  }
  ~CudaBackend() override { release(); }

  sparse_backend kind() const override { return SPARSE_BACKEND_CUDA; }
  std::string description() const override {
    return "cuda device " + std::to_string(device_) + " (" + name_ + ", sm_" +
           std::to_string(sm_) + ")";
  }
  int num_threads() const override { return 1; }
  void synchronize() override {
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  std::string supports_attention(sparse_dtype, sparse_memory, int64_t) const override {
    return "CUDA attention kernels are not implemented yet in this version";
  }
  size_t attention_workspace_bytes(const Layout&, int64_t, int64_t, bool) const override {
    return 0;
  }
  void attention_forward(const AttentionForwardArgs&) override {
    throw_error(SPARSE_ERR_UNSUPPORTED, supports_attention(SPARSE_DTYPE_F32,
                                                           SPARSE_MEMORY_DEVICE, 0));
  }
  void attention_backward(const AttentionBackwardArgs&) override {
    throw_error(SPARSE_ERR_UNSUPPORTED, supports_attention(SPARSE_DTYPE_F32,
                                                           SPARSE_MEMORY_DEVICE, 0));
  }

 private:
  void release() noexcept {
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

std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream, uint64_t) {
  const int count = cuda_device_count();
  if (count == 0)
    throw_error(SPARSE_ERR_UNSUPPORTED,
                "the CUDA backend was requested but no CUDA device is present (no driver or no "
                "GPU visible to this process)");
  if (device_index >= count)
    throw_invalid("device_index ", device_index, " is out of range: ", count,
                  " CUDA device(s) present");
  return std::make_unique<CudaBackend>(device_index, stream);
}

}  // namespace sparse
