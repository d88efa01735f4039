// The NCCL reducer (see reducer.hpp): the module libsparse_repro_nccl.so, which sparse-repro
// loads with dlopen (nccl_loader.cpp) so that it starts without NCCL and the CUDA runtime.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <string>

#include "parallel/nccl_module.hpp"
#include "parallel/reducer.hpp"

namespace repro {
namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw ReduceError(SPARSE_ERR_DEVICE, std::string(what) + " failed: " + ncclGetErrorString(r));
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw ReduceError(SPARSE_ERR_DEVICE, std::string(what) + " failed: " + cudaGetErrorString(e));
}

class NcclReducer final : public GradientReducer {
 public:
  NcclReducer(std::shared_ptr<GradientReducer> bootstrap, int device)
      : bootstrap_(std::move(bootstrap)) {
    rank_ = bootstrap_->rank();
    size_ = bootstrap_->size();
    // No device (or no usable driver) is said plainly, not as cudaSetDevice's driver message.
    int devices = 0;
    const cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0)
      throw ReduceError(
          SPARSE_ERR_UNSUPPORTED,
          "NCCL needs a CUDA device and this process sees none (cudaGetDeviceCount: " +
              std::string(e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + ")");
    if (device >= devices)
      throw ReduceError(SPARSE_ERR_INVALID_ARGUMENT,
                        "NCCL on CUDA device " + std::to_string(device) + ": this process sees " +
                            std::to_string(devices) + " device(s) (local rank picks the device)");
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    bootstrap_->broadcast(&id, sizeof id);
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    const ncclResult_t r = ncclCommInitRank(&comm_, size_, id, rank_);
    if (r != ncclSuccess) {
      cudaStreamDestroy(stream_);
      check_nccl(r, "ncclCommInitRank");
    }
  }
  ~NcclReducer() override {
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  // The gradient stays on the device; the library has finished the backward pass when it calls.
  sparse_memory memory() const override { return SPARSE_MEMORY_DEVICE; }
  void all_reduce_sum(float* x, int64_t count, sparse_memory memory) override {
    begin_all_reduce_sum(x, count, memory);
    wait_all_reduce_sum();
  }

  // Overlap: each range's ncclAllReduce is queued on the reducer's stream, which runs beside the
  // backend's stream while the backward pass goes on; the wait completes the stream (with no
  // timeout, as the blocking sum: a rank that is gone leaves it waiting).
  bool overlaps() const override { return true; }
  void begin_all_reduce_sum(float* x, int64_t count, sparse_memory memory) override {
    if (memory != SPARSE_MEMORY_DEVICE)
      throw ReduceError(SPARSE_ERR_INVALID_ARGUMENT,
                        "the NCCL reducer needs the gradient in device memory (a CUDA backend)");
    if (count < 0)
      throw ReduceError(SPARSE_ERR_INVALID_ARGUMENT,
                        "count = " + std::to_string(count) + " must be >= 0");
    check_nccl(ncclAllReduce(x, x, static_cast<size_t>(count), ncclFloat, ncclSum, comm_, stream_),
               "ncclAllReduce");
  }
  void wait_all_reduce_sum() override {
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize after ncclAllReduce");
  }
  double all_reduce_sum(double value) override { return bootstrap_->all_reduce_sum(value); }
  void broadcast(void* data, size_t bytes) override { bootstrap_->broadcast(data, bytes); }

 private:
  std::shared_ptr<GradientReducer> bootstrap_;
  int rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

GradientReducer* make_reducer(std::shared_ptr<GradientReducer> bootstrap, int device) {
  return new NcclReducer(std::move(bootstrap), device);
}

const NcclModule kModule = {sizeof(NcclModule), kNcclModuleInterface, make_reducer};

}  // namespace
}  // namespace repro

extern "C" __attribute__((visibility("default"))) const repro::NcclModule* repro_nccl_module(void) {
  return &repro::kModule;
}
