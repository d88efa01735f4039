// Arrays in a backend's memory, for the model's parameters, optimiser state and activations.
#pragma once

#include <algorithm>
#include <cstdint>
#include <new>
#include <vector>

#include "libsparse/backend.hpp"
#include "libsparse/error.hpp"

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

// Allocates host memory on 64-byte boundaries, like the backends' allocations.
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

// An array of n elements in `backend`'s memory, zero-filled on allocation, owned (freed by the
// backend that allocated it) and counted by a MemoryMeter while it lives when one is given.
// Allocations are 64-byte aligned, so that every buffer has the same alignment from run to run
// (vectorised code may round differently at different alignments; resuming from a checkpoint and
// recomputation must reproduce results bit for bit).
//
// Element access, iteration and comparison read the memory directly and are valid only for a
// backend whose memory is the host's; to_host() and assignment from a host vector work on any.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend* backend, int64_t n, MemoryMeter* meter = nullptr)
      : backend_(backend), size_(static_cast<size_t>(n)), meter_(meter) {
    require(backend_ != nullptr, "internal: buffer without a backend");
    if (size_ > 0) {
      data_ = static_cast<T*>(backend_->allocate(size_ * sizeof(T)));
      backend_->zero(data_, size_ * sizeof(T));
    }
    if (meter_) meter_->add(bytes());
  }
  Buffer(const Buffer& o) {
    if (o.backend_ == nullptr) return;
    *this = Buffer(o.backend_, static_cast<int64_t>(o.size_));
    copy_from(o.data_, o.memory());
  }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(const Buffer& o) {
    if (this == &o) return *this;
    if (o.backend_ == nullptr) {
      release();
      return *this;
    }
    if (size_ != o.size_ || backend_ == nullptr)
      *this = Buffer(backend_ ? backend_ : o.backend_, static_cast<int64_t>(o.size_));
    copy_from(o.data_, o.memory());
    return *this;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  // Copies host data of the same length into the buffer.
  template <typename A>
  Buffer& operator=(const std::vector<T, A>& host) {
    require(host.size() == size_, "internal: assigning ", host.size(), " values to a buffer of ",
            size_);
    copy_from(host.data(), SPARSE_MEMORY_HOST);
    return *this;
  }
  ~Buffer() { release(); }

  void release() noexcept {
    if (meter_) meter_->sub(bytes());
    if (backend_ && data_) backend_->free(data_);
    data_ = nullptr;
    size_ = 0;
    meter_ = nullptr;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  Backend* backend() const { return backend_; }
  std::vector<T> to_host() const {
    std::vector<T> v(size_);
    if (size_ > 0) backend_->copy(v.data(), SPARSE_MEMORY_HOST, data_, memory(), size_ * sizeof(T));
    return v;
  }

  // Host memory only.
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  bool operator==(const Buffer& o) const {
    return size_ == o.size_ && std::equal(begin(), end(), o.begin());
  }
  bool operator!=(const Buffer& o) const { return !(*this == o); }

 private:
  sparse_memory memory() const { return backend_ ? backend_->memory_kind() : SPARSE_MEMORY_HOST; }
  void copy_from(const T* src, sparse_memory src_memory) {
    if (size_ > 0) backend_->copy(data_, memory(), src, src_memory, size_ * sizeof(T));
  }
  void swap(Buffer& o) noexcept {
    std::swap(backend_, o.backend_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(meter_, o.meter_);
  }
  int64_t bytes() const { return static_cast<int64_t>(size_ * sizeof(T)); }

  Backend* backend_ = nullptr;
  T* data_ = nullptr;
  size_t size_ = 0;
  MemoryMeter* meter_ = nullptr;
};

}  // namespace sparse::model
