// Progress for work that can run long without output of its own: while a Heartbeat lives, a
// thread prints "  ... WHAT: still running, N s" to stderr every `period` seconds (nothing when
// the work ends sooner).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

namespace repro {

class Heartbeat {
 public:
  explicit Heartbeat(std::string what, std::chrono::seconds period = std::chrono::seconds(15))
      : what_(std::move(what)), period_(period), thread_([this] { run(); }) {}
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

 private:
  void run() {
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, period_, [this] { return done_; })) {
      const auto s =
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start)
              .count();
      std::fprintf(stderr, "  ... %s: still running, %lld s\n", what_.c_str(),
                   static_cast<long long>(s));
    }
  }

  std::string what_;
  std::chrono::seconds period_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace repro
