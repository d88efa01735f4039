// Thread control (see threads.hpp).
#include "libsparse/threads.hpp"

#include <pthread.h>

#include <cctype>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "libsparse/error.hpp"
#if SPARSE_HAVE_OPENMP
#include <omp.h>
#endif

namespace sparse {
namespace {

// The stack size OpenMP (libgomp) gives the threads it starts: OMP_STACKSIZE, else
// GOMP_STACKSIZE, as a number with an optional B, K, M or G suffix (default K); 0 = the default.
size_t openmp_stack_size() {
  for (const char* name : {"OMP_STACKSIZE", "GOMP_STACKSIZE"}) {
    const char* env = std::getenv(name);
    if (env == nullptr) continue;
    char* end = nullptr;
    const unsigned long long value = std::strtoull(env, &end, 10);
    if (end == env) continue;  // OpenMP ignores a malformed value, so do we
    while (std::isspace(static_cast<unsigned char>(*end))) ++end;
    unsigned shift = 10;
    switch (std::toupper(static_cast<unsigned char>(*end))) {
      case 'B':
        shift = 0;
        break;
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case '\0':
        break;
      default:
        continue;
    }
    if (value > (ULLONG_MAX >> shift)) return SIZE_MAX;
    return static_cast<size_t>(value << shift);
  }
  return 0;
}

struct Gate {
  std::mutex mutex;
  std::condition_variable open;
  bool released = false;
};

void* wait_at_gate(void* arg) {
  auto* gate = static_cast<Gate*>(arg);
  std::unique_lock<std::mutex> lock(gate->mutex);
  gate->open.wait(lock, [&] { return gate->released; });
  return nullptr;
}

}  // namespace

int thread_limit() {
#if SPARSE_HAVE_OPENMP
  return omp_get_thread_limit();
#else
  return INT_MAX;
#endif
}

void ensure_threads(int threads) {
#if SPARSE_HAVE_OPENMP
  thread_local int proven = 1;
  if (threads <= proven) return;
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0)
    throw_error(SPARSE_ERR_OUT_OF_MEMORY, "pthread_attr_init failed");
  const size_t stack = openmp_stack_size();
  int error = stack > 0 ? pthread_attr_setstacksize(&attr, stack) : 0;
  Gate gate;
  std::vector<pthread_t> started;
  started.reserve(static_cast<size_t>(threads));
  for (int t = 1; t < threads && error == 0; ++t) {
    pthread_t id;
    error = pthread_create(&id, &attr, wait_at_gate, &gate);
    if (error == 0) started.push_back(id);
  }
  pthread_attr_destroy(&attr);
  {
    std::lock_guard<std::mutex> lock(gate.mutex);
    gate.released = true;
  }
  gate.open.notify_all();
  for (pthread_t id : started) pthread_join(id, nullptr);
  if (error != 0)
    throw_error(SPARSE_ERR_OUT_OF_MEMORY, "cannot run ", threads, " threads: only ",
                started.size() + 1, " could start (pthread_create: ", std::strerror(error),
                "); a process limit (ulimit -u, ulimit -v) or OMP_STACKSIZE",
                stack > 0 ? (" = " + std::to_string(stack) + " bytes") : std::string(),
                " is too tight for this thread count; ask for fewer threads (num_threads)");
  proven = threads;
#else
  (void)threads;
#endif
}

ThreadScope::ThreadScope(int threads) : previous_(0) {
#if SPARSE_HAVE_OPENMP
  ensure_threads(threads);
  previous_ = omp_get_max_threads();
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

ThreadScope::~ThreadScope() {
#if SPARSE_HAVE_OPENMP
  omp_set_num_threads(previous_);
#endif
}

}  // namespace sparse
