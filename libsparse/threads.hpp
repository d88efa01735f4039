// Thread control of the CPU backend and the model's CPU operations.
//
// - ThreadScope(N): the calling thread's OpenMP thread count is N while it lives, so every
//   parallel loop and every Eigen product started from it, nested ones included, uses N threads
//   in all. Before that it makes sure N threads can start (see ensure_threads): OpenMP runtimes end
//   the process when they cannot create a thread, so the library finds out first.
// - parallel_for / RegionErrors: exceptions must not leave an OpenMP region (that calls
//   std::terminate); they are caught per item and the first is rethrown after the region.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>

#include "sparse_config.h"

namespace sparse {

// The most threads OpenMP will run at once in this process (OMP_THREAD_LIMIT), or a very large
// number without a limit or without OpenMP.
int thread_limit();

// Makes sure `threads` threads (the caller and threads - 1 more) can run at the same time now:
// starts threads - 1 idle threads with the stack size OpenMP gives its own (OMP_STACKSIZE) and
// stops them again. Remembered per calling thread, as OpenMP keeps the threads it starts for a
// thread. Throws Error(SPARSE_ERR_OUT_OF_MEMORY) naming how many could start and why.
void ensure_threads(int threads);

class ThreadScope {
 public:
  explicit ThreadScope(int threads);
  ~ThreadScope();
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int previous_;
};

// Collects the first exception thrown by run() on any thread of a region.
class RegionErrors {
 public:
  template <typename Body>
  void run(Body&& body) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      body();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true);
    }
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  // Rethrows the first exception, if any (call after the region).
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr first_;
};

// body(item) for item in [0, count) on num_threads threads, dynamically scheduled.
template <typename Body>
void parallel_for(int64_t count, int num_threads, Body&& body) {
  RegionErrors errors;
#if SPARSE_HAVE_OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t item = 0; item < count; ++item) errors.run([&] { body(item); });
#else
  (void)num_threads;
  for (int64_t item = 0; item < count; ++item) errors.run([&] { body(item); });
#endif
  errors.rethrow();
}

}  // namespace sparse
