// The MPI reducer (see reducer.hpp).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "parallel/reducer.hpp"

namespace repro {

bool mpi_compiled() noexcept { return true; }

namespace {

std::string mpi_message(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

// "0.3" below 10 s, "42" above (a timeout of 0.3 s once read "waited 0 s").
std::string seconds_text(double seconds) {
  char out[32];
  std::snprintf(out, sizeof out, seconds < 10 ? "%.1f" : "%.0f", seconds);
  return out;
}

// The time a rank has waited for the others, less the time it was itself not running: a gap of
// over 100 ms between two polls (which sleep 50 us) means this process was stopped (SIGSTOP, a
// debugger) or starved, and counting it would make this rank blame the others for its own delay
// (as rank 0, the one that names the missing ranks).
class WaitClock {
 public:
  double waited() {
    const auto now = std::chrono::steady_clock::now();
    const double gap = std::chrono::duration<double>(now - last_).count();
    if (gap > 0.1) stalled_ += gap;
    last_ = now;
    return std::chrono::duration<double>(now - start_).count() - stalled_;
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_ = start_;
  double stalled_ = 0;
};

// The arguments written one after the other, as a message.
template <typename... Args>
std::string text(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

void check_mpi(int code, const char* what) {
  if (code != MPI_SUCCESS)
    throw ReduceError(SPARSE_ERR_IO, text("MPI ", what, " failed: ", mpi_message(code)));
}

void require(bool condition, const std::string& message) {
  if (!condition) throw ReduceError(SPARSE_ERR_INVALID_ARGUMENT, message);
}

constexpr int kArrivalTag = 0x5a7;

class MpiReducer final : public GradientReducer {
 public:
  MpiReducer(double timeout_seconds, int64_t bucket_floats)
      : timeout_(timeout_seconds), bucket_(bucket_floats) {
    require(timeout_seconds > 0,
            text("the data-parallel timeout must be > 0 seconds, given ", timeout_seconds));
    require(bucket_floats >= 1 && bucket_floats <= (int64_t{1} << 28),
            text("bucket_floats = ", bucket_floats, " must be in [1, 2^28]"));
    int initialized = 0;
    check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized) {
      int provided = 0;
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided),
                "MPI_Init_thread");
      owns_mpi_ = true;
    }
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_dup(comm_, &gather_comm_), "MPI_Comm_dup");
    check_mpi(MPI_Comm_set_errhandler(gather_comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    arrivals_in_.assign(static_cast<size_t>(size_), 0);
    arrival_requests_.assign(static_cast<size_t>(size_), MPI_REQUEST_NULL);
  }
  ~MpiReducer() override {
    // After a timed-out or failed collective the group is broken: the program ends it with
    // mpi_abort_job(), and finalising here could wait for ever.
    if (failed_) return;
    MPI_Comm_free(&gather_comm_);
    MPI_Comm_free(&comm_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!owns_mpi_ || finalized) return;
    if (size_ > 1) {
      // MPI_Finalize waits for every rank, without a timeout: a rank that hangs after the run's
      // last collective (stopped, or stuck in its file system) would keep this one, and the job,
      // waiting for ever. The program's work is done here; after the timeout the process ends.
      std::thread([rank = rank_, size = size_, timeout = timeout_] {
        std::this_thread::sleep_for(std::chrono::duration<double>(timeout));
        std::fprintf(stderr,
                     "sparse-repro: rank %d of %d: leaving the MPI job (MPI_Finalize) waited %s s "
                     "(--rank-timeout) for the other ranks; one hangs after the end of the run "
                     "(this rank's work is complete); ending the process\n",
                     rank, size, seconds_text(timeout).c_str());
        std::fflush(stderr);
        std::_Exit(1);
      }).detach();
    }
    MPI_Finalize();
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* x, int64_t count, sparse_memory memory) override {
    begin_all_reduce_sum(x, count, memory);
    wait_all_reduce_sum();
  }

  bool overlaps() const override { return true; }

  // Starts the buckets of x[0, count) (each an MPI_Ialltoallv) and progresses the earlier ones.
  void begin_all_reduce_sum(float* x, int64_t count, sparse_memory memory) override {
    require(memory == SPARSE_MEMORY_HOST,
            "the MPI reducer sums host memory (the library stages device gradients)");
    require(count >= 0, text("count = ", count, " must be >= 0"));
    refuse_after_failure();
    if (!in_flight_) {
      in_flight_ = true;
      ++sequence_;
      post_arrival();
    }
    if (size_ > 1)
      for (int64_t off = 0; off < count; off += bucket_)
        start_bucket(x + off, std::min(bucket_, count - off));
    progress();
  }

  // Completes every bucket begun since the last wait, polling until the timeout.
  void wait_all_reduce_sum() override {
    refuse_after_failure();
    if (!in_flight_) return;
    WaitClock clock;
    for (int polls = 0; !progress(); ++polls) {
      if (polls < 2000) continue;
      const double waited = clock.waited();
      if (waited > timeout_) timed_out(stage_name(buckets_[gathered_]), waited);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    complete_arrival();
    used_ = gathering_ = gathered_ = 0;
    in_flight_ = false;
  }

  double all_reduce_sum(double value) override {
    if (size_ == 1) return value;
    std::vector<double> all(static_cast<size_t>(size_));
    MPI_Request request = MPI_REQUEST_NULL;
    run(MPI_Iallgather(&value, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, comm_, &request),
        "MPI_Iallgather");
    wait(request, "scalar sum");
    double sum = all[0];
    for (int r = 1; r < size_; ++r) sum += all[static_cast<size_t>(r)];
    return sum;
  }

  void broadcast(void* data, size_t bytes) override {
    if (size_ == 1) return;
    require(bytes <= (size_t{1} << 30), text("broadcast of ", bytes, " bytes is too large"));
    MPI_Request request = MPI_REQUEST_NULL;
    run(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, 0, comm_, &request), "MPI_Ibcast");
    wait(request, "broadcast");
  }

 private:
  // One bucket x[0, n) summed over the ranks in rank order: rank j receives slice j of every rank
  // (MPI_Ialltoallv on comm_), adds them in rank order, and the sums are gathered back into every
  // rank's x (MPI_Iallgatherv on gather_comm_). The arrays stay alive until the bucket completes.
  struct Bucket {
    float* x = nullptr;
    std::vector<int> counts, displs, recv_counts, recv_displs;
    std::vector<float> received;
    MPI_Request request = MPI_REQUEST_NULL;
    bool gathering = false;  // the all-gather is posted (else the reduce-scatter runs)
  };

  static const char* stage_name(const Bucket& b) {
    return b.gathering ? "all-gather (MPI_Iallgatherv)" : "reduce-scatter (MPI_Ialltoallv)";
  }

  void start_bucket(float* x, int64_t n) {
    if (used_ == buckets_.size()) buckets_.emplace_back();
    Bucket& b = buckets_[used_++];
    const size_t ranks = static_cast<size_t>(size_);
    b.x = x;
    b.gathering = false;
    b.counts.resize(ranks);
    b.displs.resize(ranks);
    for (size_t j = 0; j < ranks; ++j) {
      const int64_t lo = n * static_cast<int64_t>(j) / size_;
      const int64_t hi = n * static_cast<int64_t>(j + 1) / size_;
      b.displs[j] = static_cast<int>(lo);
      b.counts[j] = static_cast<int>(hi - lo);
    }
    const int mine = b.counts[static_cast<size_t>(rank_)];
    b.recv_counts.assign(ranks, mine);
    b.recv_displs.resize(ranks);
    for (size_t j = 0; j < ranks; ++j) b.recv_displs[j] = static_cast<int>(j) * mine;
    b.received.resize(ranks * static_cast<size_t>(mine));
    run(MPI_Ialltoallv(x, b.counts.data(), b.displs.data(), MPI_FLOAT, b.received.data(),
                       b.recv_counts.data(), b.recv_displs.data(), MPI_FLOAT, comm_, &b.request),
        "MPI_Ialltoallv");
  }

  // Advances the buckets without blocking: each finished reduce-scatter is summed and its
  // all-gather posted, in bucket order (every rank posts the collectives of a communicator in the
  // same order); finished all-gathers complete their buckets, also in order. Whether every bucket
  // begun is complete.
  bool progress() {
    while (gathering_ < used_) {
      Bucket& b = buckets_[gathering_];
      int done = 0;
      run(MPI_Test(&b.request, &done, MPI_STATUS_IGNORE), stage_name(b));
      if (!done) break;
      const size_t ranks = static_cast<size_t>(size_);
      const int mine = b.counts[static_cast<size_t>(rank_)];
      float* out = b.x + b.displs[static_cast<size_t>(rank_)];
      for (int i = 0; i < mine; ++i) {
        float sum = b.received[static_cast<size_t>(i)];
        for (size_t r = 1; r < ranks; ++r)
          sum += b.received[r * static_cast<size_t>(mine) + static_cast<size_t>(i)];
        out[i] = sum;
      }
      b.gathering = true;
      run(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, b.x, b.counts.data(), b.displs.data(),
                          MPI_FLOAT, gather_comm_, &b.request),
          "MPI_Iallgatherv");
      ++gathering_;
    }
    while (gathered_ < gathering_) {
      int done = 0;
      run(MPI_Test(&buckets_[gathered_].request, &done, MPI_STATUS_IGNORE),
          stage_name(buckets_[gathered_]));
      if (!done) break;
      ++gathered_;
    }
    return gathered_ == used_;
  }

  // After a failed or timed-out collective the group is broken: later calls fail at once rather
  // than wait for requests that never complete.
  void refuse_after_failure() const {
    if (failed_)
      throw ReduceError(SPARSE_ERR_IO, text("data-parallel rank ", rank_, " of ", size_,
                                            ": an earlier reduction failed; the group is broken"));
  }

  // Every rank but 0 tells rank 0 it has reached reduction `sequence_`, so that rank 0 can name
  // the ranks that never arrive.
  void post_arrival() {
    if (size_ == 1) return;
    if (rank_ == 0) {
      for (int r = 1; r < size_; ++r)
        run(MPI_Irecv(&arrivals_in_[static_cast<size_t>(r)], 1, MPI_LONG_LONG, r, kArrivalTag,
                      comm_, &arrival_requests_[static_cast<size_t>(r)]),
            "MPI_Irecv");
    } else {
      arrival_out_ = sequence_;
      run(MPI_Isend(&arrival_out_, 1, MPI_LONG_LONG, 0, kArrivalTag, comm_, &arrival_requests_[0]),
          "MPI_Isend");
    }
  }
  void complete_arrival() {
    for (MPI_Request& r : arrival_requests_)
      if (r != MPI_REQUEST_NULL) wait(r, "arrival message");
  }

  void run(int code, const char* what) {
    if (code == MPI_SUCCESS) return;
    failed_ = true;
    throw ReduceError(SPARSE_ERR_IO,
                      text("data-parallel rank ", rank_, " of ", size_, ": ", what,
                           " failed in reduction ", sequence_, ": ", mpi_message(code)));
  }

  // Waits for `request`, polling, until the timeout.
  void wait(MPI_Request& request, const char* what) {
    WaitClock clock;
    for (int polls = 0;; ++polls) {
      int done = 0;
      run(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (polls < 2000) continue;
      const double waited = clock.waited();
      if (waited > timeout_) timed_out(what, waited);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  [[noreturn]] void timed_out(const char* what, double waited) {
    failed_ = true;
    // Rank 0 names the ranks whose arrival message has not come; when all have come, one of them
    // stopped inside the collective, and the candidates are all the others.
    std::string missing, others;
    if (rank_ == 0) {
      for (int r = 1; r < size_; ++r) {
        others += (others.empty() ? "" : ", ") + std::to_string(r);
        MPI_Request& req = arrival_requests_[static_cast<size_t>(r)];
        int done = 1;
        if (req != MPI_REQUEST_NULL) MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (!done) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
    }
    const std::string who =
        rank_ != 0 ? "the other ranks (rank 0 names the ones missing)"
        : missing.empty()
            ? "rank(s) " + others + ", which reached this reduction but stopped inside it"
            : "rank(s) " + missing + ", which never reached this reduction";
    throw ReduceError(
        SPARSE_ERR_IO,
        text("data-parallel rank ", rank_, " of ", size_, ": the ", what, " of reduction ",
             sequence_, " waited ", seconds_text(waited), " s (timeout ", timeout_, " s) for ", who,
             "; a rank failed, hangs or never started"));
  }

  double timeout_;
  int64_t bucket_;
  bool owns_mpi_ = false;
  bool failed_ = false;
  MPI_Comm comm_ = MPI_COMM_NULL;         // reduce-scatters, scalars, broadcasts, arrivals
  MPI_Comm gather_comm_ = MPI_COMM_NULL;  // all-gathers
  int rank_ = 0, size_ = 1;
  long long sequence_ = 0;
  long long arrival_out_ = 0;
  std::vector<long long> arrivals_in_;
  std::vector<MPI_Request> arrival_requests_;
  // Buckets of the reduction in flight: [0, used_) begun, [0, gathering_) summed with their
  // all-gather posted, [0, gathered_) complete. Kept across reductions (no allocation per step).
  std::deque<Bucket> buckets_;
  size_t used_ = 0, gathering_ = 0, gathered_ = 0;
  bool in_flight_ = false;  // a reduction has begun and not been waited for
};

}  // namespace

std::unique_ptr<GradientReducer> make_mpi_reducer(double timeout_seconds, int64_t bucket_floats) {
  return std::make_unique<MpiReducer>(timeout_seconds, bucket_floats);
}

void mpi_abort_job(int code) noexcept {
  int initialized = 0, finalized = 0;
  if (MPI_Initialized(&initialized) != MPI_SUCCESS || !initialized) return;
  if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) return;
  MPI_Abort(MPI_COMM_WORLD, code);
}

}  // namespace repro
