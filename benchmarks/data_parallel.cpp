#include "data_parallel.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "cli_common.hpp"
#include "option_checks.hpp"

namespace repro {
namespace {

std::shared_ptr<GradientReducer> make_mpi_group(const LaunchEnvironment& launch, double timeout);

// Prints a failure of rank `rank` of `size` and ends the whole job. Used where the other ranks
// have joined MPI and wait for this one: returning (or unwinding) would finalise MPI, which waits
// for them for ever, before the message is printed.
[[noreturn]] void end_job(int rank, int size, const std::string& message) {
  std::fprintf(stderr, "sparse-repro: error on rank %d of %d: %s\nsparse-repro: ending the job\n",
               rank, size, message.c_str());
  std::fflush(stderr);
  mpi_abort_job(1);
  std::_Exit(1);
}

// The CUDA device of a rank (DataParallel::cuda_device).
int local_cuda_device(const LaunchEnvironment& launch) {
  int32_t count = 0;
  if (sparse_cuda_device_count(&count) != SPARSE_OK || count <= 0) return 0;
  return launch.local_rank % count;
}

// SPARSE_REDUCER=nccl: the gradient summed by NCCL on the GPU (CUDA device `device`); MPI, when
// the process was launched as one of several ranks, carries NCCL's unique id and the scalar sums.
// A single process needs no launcher (a one-rank NCCL group).
std::shared_ptr<GradientReducer> make_group(const LaunchEnvironment& launch, double timeout) {
  const char* choice = std::getenv("SPARSE_REDUCER");
  const std::string reducer = choice != nullptr ? choice : "";
  if (reducer.empty() || reducer == "mpi") return make_mpi_group(launch, timeout);
  if (reducer != "nccl")
    throw std::runtime_error("SPARSE_REDUCER=" + reducer + ": expected mpi (the default) or nccl");
  if (!nccl_compiled())
    throw std::runtime_error("SPARSE_REDUCER=nccl but this sparse-repro was built without NCCL");
  std::shared_ptr<GradientReducer> bootstrap;
  if (launch.launched && launch.size > 1) bootstrap = make_mpi_group(launch, timeout);
  try {
    return make_nccl_reducer(bootstrap, local_cuda_device(launch));
  } catch (const std::exception& e) {
    const std::string message = std::string("SPARSE_REDUCER=nccl: ") + e.what();
    if (bootstrap) end_job(bootstrap->rank(), bootstrap->size(), message);
    throw std::runtime_error(message);
  }
}

std::shared_ptr<GradientReducer> make_mpi_group(const LaunchEnvironment& launch, double timeout) {
  if (!launch.launched) return make_single_process_reducer();
  if (!mpi_compiled()) {
    if (launch.size > 1)
      throw std::runtime_error("started as rank " + std::to_string(launch.rank) + " of " +
                               std::to_string(launch.size) + " (" + launch.source +
                               ") but this sparse-repro was built without MPI "
                               "(-Dmpi=enabled, libopenmpi-dev)");
    return make_single_process_reducer();
  }
  std::shared_ptr<GradientReducer> group;
  try {
    group = make_mpi_reducer(timeout);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("joining the MPI job: ") + e.what());
  }
  if (group->size() == launch.size && group->rank() == launch.rank) return group;
  // The variables describe a job MPI did not start (set by hand, an sbatch script's own, or
  // srun without an MPI plugin): every such process is a group of one, rank 0, and would train
  // and write the outputs alone. Only the process the variables call rank 0 goes on, alone.
  const std::string said = launch.source + " say rank " + std::to_string(launch.rank) +
                           (launch.size_given ? " of " + std::to_string(launch.size)
                                              : std::string(" (and no world size)")) +
                           ", but MPI started " +
                           (group->size() == 1 ? std::string("this process alone")
                                               : "rank " + std::to_string(group->rank()) + " of " +
                                                     std::to_string(group->size()));
  const std::string fix =
      "; start the ranks with mpirun or srun --mpi=pmix, or unset the launcher's variables to "
      "train in one process";
  if (group->size() > 1) end_job(group->rank(), group->size(), said + fix);
  if (launch.rank != 0) throw std::runtime_error(said + fix);
  std::fprintf(stderr, "sparse-repro: %s; training in one process (world size 1)\n", said.c_str());
  return group;
}

}  // namespace

DataParallel::DataParallel(double timeout_seconds)
    : launch_(launch_environment()), reducer_(make_group(launch_, timeout_seconds)) {}

int DataParallel::cuda_device() const { return local_cuda_device(launch_); }

std::string DataParallel::describe() const {
  return "rank " + std::to_string(rank()) + " of " + std::to_string(size()) + " (" +
         reducer_->name() + (launch_.launched ? ", " + launch_.source : std::string()) +
         ", local rank " + std::to_string(launch_.local_rank) + ")";
}

void DataParallel::attach(sparse_model* model, bool overlap) const {
  attach_reducer(model, *reducer_, overlap);
}

const uint8_t* DataParallel::next_shard(sparse_dataset* ds, int64_t batch, int64_t seq_len,
                                        std::vector<uint8_t>& global) const {
  const int64_t total = batch * size();
  if (global.size() != static_cast<size_t>(total * seq_len)) {  // the first step's allocation
    check_token_memory(total, seq_len,
                       "--batch " + std::to_string(batch) +
                           (size() > 1 ? " on " + std::to_string(size()) + " ranks" : ""));
    global.resize(static_cast<size_t>(total * seq_len));
  }
  check(
      sparse_dataset_next_batch(ds, total, SPARSE_TOKENS_U8, global.data(), global.size(), nullptr),
      "batch");
  return global.data() + static_cast<size_t>(rank()) * static_cast<size_t>(batch * seq_len);
}

double DataParallel::evaluate(sparse_model* model, const sparse_dataset* ds, int64_t count,
                              int batch, int64_t* evaluated) const {
  sparse_model_config cfg;
  check(sparse_model_get_config(model, &cfg), "config");
  int64_t n = 0, size_ds = 0;
  check(sparse_dataset_seq_len(ds, &n), "dataset");
  check(sparse_dataset_num_sequences(ds, &size_ds), "dataset");
  if (n != cfg.seq_len)
    throw std::runtime_error("the data's sequences have " + std::to_string(n) +
                             " tokens but the model's seq_len is " + std::to_string(cfg.seq_len));
  count = std::min(count, size_ds);
  const int64_t global = static_cast<int64_t>(batch) * size();
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(batch, count));
  check_token_memory(rows, n, "--batch " + std::to_string(batch));
  std::vector<uint8_t> tokens(static_cast<size_t>(rows * n));
  double local = 0;
  for (int64_t done = 0; done < count; done += global) {
    const int64_t lo = done + static_cast<int64_t>(rank()) * batch;
    const int64_t hi = std::min({lo + batch, done + global, count});
    if (lo >= hi) continue;
    check(sparse_dataset_read(ds, lo, hi - lo, SPARSE_TOKENS_U8, tokens.data(), tokens.size()),
          "read");
    double bpd = 0;
    check(sparse_model_evaluate(model, tokens.data(), hi - lo, &bpd), "evaluate");
    local += bpd * static_cast<double>(hi - lo);
  }
  double total = 0;
  try {
    total = reducer_->all_reduce_sum(local);
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  if (evaluated) *evaluated = count;
  return count > 0 ? total / static_cast<double>(count) : std::nan("");
}

std::string DataParallel::differences_from_root(const nlohmann::json& values,
                                                const std::string& prefix) const {
  if (size() == 1) return {};
  const std::string mine = values.dump();
  uint64_t length = mine.size();
  reducer_->broadcast(&length, sizeof length);
  std::string at_root = root() ? mine : std::string(static_cast<size_t>(length), '\0');
  reducer_->broadcast(at_root.data(), at_root.size());
  if (at_root == mine) return {};
  const nlohmann::json theirs = nlohmann::json::parse(at_root);
  std::string differences;
  for (const auto& [name, value] : values.items()) {
    const nlohmann::json other = theirs.contains(name) ? theirs[name] : nlohmann::json(nullptr);
    if (other != value)
      differences += "\n  " + prefix + name + ": " + value.dump() + " on this rank, " +
                     other.dump() + " on rank 0";
  }
  return differences;
}

void DataParallel::check_same_options(const nlohmann::json& options) const {
  const std::string differences = differences_from_root(options, "--");
  if (differences.empty()) return;
  throw std::runtime_error(
      "the ranks were started with different options; every rank of a data-parallel run needs "
      "the same (mpirun -np N sparse-repro train OPTIONS):" +
      differences);
}

void DataParallel::check_same_data(const nlohmann::json& fingerprint,
                                   const std::string& data) const {
  const std::string differences = differences_from_root(fingerprint, "");
  if (differences.empty()) return;
  throw std::runtime_error(
      "--data " + data +
      " is not the same data on every rank (a copy on this machine that differs from rank 0's, "
      "or a relative path that names another file from this rank's folder); every rank must "
      "read the same files:" +
      differences);
}

void DataParallel::finish() const {
  if (size() == 1) return;
  try {
    reducer_->all_reduce_sum(0.0);
  } catch (const std::exception& e) {
    abort_job(std::string("at the end of the run (rank 0 had written its outputs unless it is "
                          "the rank named): ") +
              e.what());
  }
}

void DataParallel::abort_job(const std::string& message) const { end_job(rank(), size(), message); }

void add_data_parallel_options(CLI::App& app, TrainOptions& o) {
  app.add_option("--micro-batch", o.micro_batch,
                 "split each rank's --batch into micro-batches of this many sequences (their "
                 "gradients added in order; 0 = one micro-batch)")
      ->check(integer_in(0, kIntMax));
  app.add_option("--rank-timeout", o.rank_timeout,
                 "data parallel (mpirun/srun): a reduction that waits this many seconds for the "
                 "other ranks ends the job, naming the ranks that did not arrive (the ranks also "
                 "wait for rank 0's checkpoint writes: keep it above a checkpoint's write time; "
                 "start-up, MPI_Init, is not covered: mpirun --timeout or srun --time bound it)")
      ->check(number_in(0, kInf, true))
      ->capture_default_str();
  app.add_option("--reduce-overlap", o.reduce_overlap,
                 "data parallel: on = sum each parameter range's gradient over the ranks while "
                 "the backward pass computes the rest (the same results bit for bit), off = one "
                 "sum after the backward pass")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
}

void keep_global_batch(TrainOptions& o, const DataParallel& dp) {
  const int saved = o.world_size;
  o.world_size = dp.size();
  if (!o.resume || saved == dp.size()) return;
  const int64_t global = static_cast<int64_t>(saved) * o.batch;
  if (global % dp.size() != 0)
    throw std::runtime_error(
        "--resume: the run in " + o.checkpoint + " was trained on " + std::to_string(saved) +
        " rank(s) x --batch " + std::to_string(o.batch) + " = a global batch of " +
        std::to_string(global) + " sequences, which " + std::to_string(dp.size()) +
        " ranks cannot share equally; resume on a number of ranks that divides " +
        std::to_string(global));
  const int batch = static_cast<int>(global / dp.size());
  // The saved run computed each rank's batch in micro-batches of o.batch sequences (or of
  // --micro-batch): keeping that size keeps the dropout masks and the order of the gradient sums,
  // so the resumed run continues it bit for bit. When the new per-rank batch is smaller, the same
  // global batch is kept but the sums run in another order (results differ by rounding).
  if (o.micro_batch == 0) {
    if (batch % o.batch == 0) {
      o.micro_batch = o.batch;
    } else if (dp.root()) {
      std::fprintf(stderr,
                   "--resume: the saved run's ranks each summed %d sequences at once; with %d "
                   "per rank the gradient is summed in another order, so this run continues the "
                   "saved one up to rounding, not bit for bit\n",
                   o.batch, batch);
    }
  }
  if (o.micro_batch > 0 && batch % o.micro_batch != 0)
    throw std::runtime_error(
        "--resume: on " + std::to_string(dp.size()) + " ranks the global batch " +
        std::to_string(global) + " gives --batch " + std::to_string(batch) +
        ", which the run's --micro-batch " + std::to_string(o.micro_batch) + " does not divide");
  if (dp.root())
    std::fprintf(stderr,
                 "--resume: the run was saved on %d rank(s) x --batch %d; on %d rank(s) each "
                 "takes --batch %d (the same global batch of %lld sequences)\n",
                 saved, o.batch, dp.size(), batch, static_cast<long long>(global));
  o.batch = batch;
}

}  // namespace repro
