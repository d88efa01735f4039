// resource_probe: runs libsparse (through its C ABI) under resource faults, for
// tests/test_resources.py, which checks that the process ends by itself with a clear status and
// never by a signal or an exit() inside a dependency.
//
// This executable defines pthread_create, which takes precedence over the C library's for every
// shared library of the process (OpenMP's included): it counts the threads started while a
// measurement is armed, and with RESOURCE_PROBE_FAIL_THREADS=1 it fails them with EAGAIN, as a
// process limit would.
//
//   resource_probe threads N          num_threads = N attention (forward + backward) on a fresh
//                                     thread; prints "started=S max_alive=A status=..."
//   resource_probe model-threads N    one training step of a small model with num_threads = N
//   resource_probe alloc-in-region N  a backward pass whose per-thread accumulators cannot be
//                                     allocated (RLIMIT_AS set just above the current size)
//   resource_probe context N          creates a context, prints its thread count
//   resource_probe layout-dense N     a dense causal layout of seq_len N, block 16
//   resource_probe model-layers N     sparse_model_create with N layers of width 1024
//   resource_probe model-layouts N    sparse_experimental_model_layouts of N layers (the count,
//                                     and the layouts of the first 8 layers); prints count=C
//   resource_probe time N             median time of attention with num_threads = N
// Every command prints "status=<code> message=<sparse_last_error()>" and exits 0 when the
// library returned (whatever the status), so a non-zero exit means the library ended the process.
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "sparse/experimental.h"
#include "sparse/sparse.h"

namespace {

std::atomic<bool> armed{false};
std::atomic<int> started{0}, alive{0}, max_alive{0};

struct Start {
  void* (*fn)(void*);
  void* arg;
};

void* tracked_start(void* p) {
  const Start s = *static_cast<Start*>(p);
  delete static_cast<Start*>(p);
  void* result = s.fn(s.arg);
  alive.fetch_sub(1);
  return result;
}

using CreateFn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);

}  // namespace

extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr,
                              void* (*start_routine)(void*), void* arg) {
  static const auto real = reinterpret_cast<CreateFn>(dlsym(RTLD_NEXT, "pthread_create"));
  if (!armed.load()) return real(thread, attr, start_routine, arg);
  const char* fail = std::getenv("RESOURCE_PROBE_FAIL_THREADS");
  if (fail != nullptr && std::strcmp(fail, "1") == 0) return EAGAIN;
  auto* s = new Start{start_routine, arg};
  const int now = alive.fetch_add(1) + 1;
  int seen = max_alive.load();
  while (now > seen && !max_alive.compare_exchange_weak(seen, now)) {
  }
  const int error = real(thread, attr, tracked_start, s);
  if (error != 0) {
    alive.fetch_sub(1);
    delete s;
    return error;
  }
  started.fetch_add(1);
  return 0;
}

namespace {

int report(sparse_status status) {
  std::printf("started=%d max_alive=%d status=%d message=%s\n", started.load(), max_alive.load(),
              static_cast<int>(status), sparse_last_error());
  return 0;
}

sparse_context* make_context(int threads, sparse_status* status) {
  sparse_settings settings;
  sparse_settings_default(&settings);
  settings.backend = SPARSE_BACKEND_CPU;
  settings.num_threads = threads;
  sparse_context* ctx = nullptr;
  *status = sparse_context_create(&settings, &ctx);
  return ctx;
}

// Causal attention on one head with block 64 and head_dim 64: products large enough for Eigen to
// want several threads of its own.
struct Attention {
  int64_t n;
  int64_t d = 64;
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv;
  sparse_tensor tq, tk, tv, tout, tlse, tdout, tdq, tdk, tdv;
  sparse_layout* layout = nullptr;

  Attention(int64_t seq_len, sparse_pattern_kind kind) : n(seq_len) {
    const size_t size = static_cast<size_t>(n * d);
    for (auto* t : {&q, &k, &v, &out, &dout, &dq, &dk, &dv}) t->assign(size, 0.0f);
    lse.assign(static_cast<size_t>(n), 0.0f);
    for (size_t i = 0; i < size; ++i) {
      q[i] = static_cast<float>((i * 7919) % 97) / 97.0f - 0.5f;
      k[i] = static_cast<float>((i * 104729) % 89) / 89.0f - 0.5f;
      v[i] = static_cast<float>((i * 15485863) % 83) / 83.0f - 0.5f;
      dout[i] = static_cast<float>((i * 32452843) % 79) / 79.0f - 0.5f;
    }
    const int64_t shape[4] = {1, 1, n, d};
    const std::pair<sparse_tensor*, std::vector<float>*> four[] = {
        {&tq, &q},       {&tk, &k},   {&tv, &v},   {&tout, &out},
        {&tdout, &dout}, {&tdq, &dq}, {&tdk, &dk}, {&tdv, &dv}};
    for (const auto& [t, data] : four)
      sparse_tensor_contiguous(t, data->data(), SPARSE_DTYPE_F32, 4, shape);
    sparse_tensor_contiguous(&tlse, lse.data(), SPARSE_DTYPE_F32, 3, shape);
    sparse_pattern p;
    sparse_pattern_default(&p, kind);
    p.window = 64;
    sparse_layout_desc desc;
    sparse_layout_desc_default(&desc);
    desc.seq_len = n;
    desc.block_size = 64;
    desc.num_heads = 1;
    desc.patterns = &p;
    desc.num_patterns = 1;
    if (sparse_layout_create(&desc, &layout) != SPARSE_OK) {
      std::printf("layout: %s\n", sparse_last_error());
      std::exit(2);
    }
  }
  ~Attention() { sparse_layout_destroy(layout); }
  sparse_status forward(sparse_context* ctx) {
    return sparse_attention_forward(ctx, layout, nullptr, &tq, &tk, &tv, &tout, &tlse);
  }
  sparse_status backward(sparse_context* ctx) {
    return sparse_attention_backward(ctx, layout, nullptr, &tq, &tk, &tv, &tout, &tlse, &tdout,
                                     &tdq, &tdk, &tdv);
  }
};

// Runs `body` on a new thread (OpenMP keeps a thread pool per calling thread, so a fresh caller
// shows every thread a call starts), with thread counting armed while it runs.
template <typename Body>
int on_fresh_thread(Body&& body) {
  int code = 0;
  std::thread caller([&] {
    armed.store(true);
    code = body();
    armed.store(false);
  });
  caller.join();
  return code;
}

int run_threads(int threads) {
  sparse_status status;
  sparse_context* ctx = make_context(threads, &status);
  if (status != SPARSE_OK) return report(status);
  Attention a(1024, SPARSE_PATTERN_DENSE);
  const int code = on_fresh_thread([&] {
    sparse_status s = a.forward(ctx);
    if (s == SPARSE_OK) s = a.backward(ctx);
    return report(s);
  });
  sparse_context_destroy(ctx);
  return code;
}

int run_model_threads(int threads) {
  sparse_status status;
  sparse_context* ctx = make_context(threads, &status);
  if (status != SPARSE_OK) return report(status);
  sparse_model_config config;
  sparse_model_config_default(&config);
  config.seq_len = 256;
  config.d_model = 256;
  config.num_heads = 2;
  config.block_size = 64;
  sparse_model* model = nullptr;
  std::vector<uint8_t> tokens(static_cast<size_t>(2 * config.seq_len));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint8_t>(i * 31 + 7);
  const int code = on_fresh_thread([&] {
    sparse_status s = sparse_model_create(ctx, &config, nullptr, &model);
    if (s == SPARSE_OK) s = sparse_model_train_step(model, tokens.data(), 2, nullptr);
    return report(s);
  });
  sparse_model_destroy(model);
  sparse_context_destroy(ctx);
  return code;
}

size_t address_space_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  size_t kb = 0;
  while (status >> key) {
    if (key == "VmSize:") {
      status >> kb;
      return kb * 1024;
    }
    status.ignore(1 << 20, '\n');
  }
  return 0;
}

int run_alloc_in_region(int threads) {
  sparse_status status;
  sparse_context* ctx = make_context(threads, &status);
  if (status != SPARSE_OK) return report(status);
  // A local layout: cheap blocks, but the backward's dK / dV accumulators are seq_len x head_dim
  // per thread (32 MiB each here), allocated inside the parallel region.
  Attention a(131072, SPARSE_PATTERN_LOCAL);
  Attention warm(256, SPARSE_PATTERN_LOCAL);
  status = warm.forward(ctx);  // starts OpenMP's threads before the limit
  if (status == SPARSE_OK) status = warm.backward(ctx);
  if (status == SPARSE_OK) status = a.forward(ctx);
  if (status != SPARSE_OK) return report(status);
  struct rlimit limit {};
  limit.rlim_cur = limit.rlim_max = address_space_bytes() + (16u << 20);
  setrlimit(RLIMIT_AS, &limit);
  status = a.backward(ctx);
  const int code = report(status);
  sparse_context_destroy(ctx);
  return code;
}

int run_context(int threads) {
  sparse_status status;
  sparse_context* ctx = make_context(threads, &status);
  int32_t count = -1;
  if (status == SPARSE_OK) sparse_context_num_threads(ctx, &count);
  std::printf("num_threads=%d ", count);
  report(status);
  sparse_context_destroy(ctx);
  return 0;
}

// A dense causal layout of seq_len N and block 16 through sparse_layout_create.
int run_layout_dense(int64_t n) {
  sparse_pattern p;
  sparse_pattern_default(&p, SPARSE_PATTERN_DENSE);
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = n;
  desc.block_size = 16;
  desc.patterns = &p;
  desc.num_patterns = 1;
  sparse_layout* layout = nullptr;
  const int code = report(sparse_layout_create(&desc, &layout));
  sparse_layout_destroy(layout);
  return code;
}

// A model of N layers of width 1024 (sparse_model_create only).
int run_model_layers(int64_t layers) {
  sparse_status status;
  sparse_context* ctx = make_context(1, &status);
  if (status != SPARSE_OK) return report(status);
  sparse_model_config config;
  sparse_model_config_default(&config);
  config.num_layers = static_cast<int32_t>(layers);
  config.d_model = 1024;
  sparse_model* model = nullptr;
  const int code = report(sparse_model_create(ctx, &config, nullptr, &model));
  sparse_model_destroy(model);
  sparse_context_destroy(ctx);
  return code;
}

// The layouts of a model of N interleaved layers: how many there are (no handles), then layer
// 0's and 1's through a config of the first 8 layers (the map does not depend on the depth).
int run_model_layouts(int64_t layers) {
  sparse_model_config config;
  sparse_model_config_default(&config);
  config.num_layers = static_cast<int32_t>(layers);
  config.head_mode = SPARSE_HEADS_INTERLEAVED;
  int32_t count = -1;
  const sparse_status status =
      sparse_experimental_model_layouts(&config, nullptr, 0, &count, nullptr);
  std::printf("count=%d ", count);
  return report(status);
}

// Median seconds of 5 forward + backward passes with num_threads = N (dense causal, n = 2048,
// block 64, head_dim 64), for comparing thread counts side by side.
int run_time(int threads) {
  sparse_status status;
  sparse_context* ctx = make_context(threads, &status);
  if (status != SPARSE_OK) return report(status);
  Attention a(2048, SPARSE_PATTERN_DENSE);
  std::vector<double> times;
  for (int r = 0; r < 6 && status == SPARSE_OK; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    status = a.forward(ctx);
    if (status == SPARSE_OK) status = a.backward(ctx);
    if (r > 0)
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  std::printf("num_threads=%d seconds=%.4f ", threads,
              times.empty() ? -1.0 : times[times.size() / 2]);
  report(status);
  sparse_context_destroy(ctx);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: resource_probe threads|model-threads|alloc-in-region|context N\n");
    return 2;
  }
  const std::string command = argv[1];
  const int threads = std::atoi(argv[2]);
  if (command == "layout-dense") return run_layout_dense(std::atoll(argv[2]));
  if (command == "model-layers") return run_model_layers(std::atoll(argv[2]));
  if (command == "model-layouts") return run_model_layouts(std::atoll(argv[2]));
  if (command == "threads") return run_threads(threads);
  if (command == "model-threads") return run_model_threads(threads);
  if (command == "alloc-in-region") return run_alloc_in_region(threads);
  if (command == "context") return run_context(threads);
  if (command == "time") return run_time(threads);
  std::fprintf(stderr, "unknown command %s\n", command.c_str());
  return 2;
}
