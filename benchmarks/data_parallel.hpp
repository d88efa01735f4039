// Data-parallel training in sparse-repro train: the process group from the MPI launcher, the
// reducer attached to the model, the shard of each global batch, sharded evaluation and the
// world size a resumed run keeps its global batch across.
//
// Launched by mpirun or srun (rank, world size and local rank from the launcher's environment),
// every rank trains on --batch sequences of each global batch of world_size * --batch, in rank
// order, so N ranks see exactly the sequences one process with batch N * --batch sees. A rank
// that fails ends the job (MPI_Abort); a reduction that waits longer than --rank-timeout seconds
// for the other ranks fails naming the ranks that did not arrive.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/reducer.hpp"
#include "sparse/sparse.h"
#include "train_cli.hpp"

namespace repro {

class DataParallel {
 public:
  // Joins the MPI job when an MPI launcher started this process, else a group of one.
  explicit DataParallel(double timeout_seconds);
  int rank() const { return reducer_->rank(); }
  int size() const { return reducer_->size(); }
  bool root() const { return rank() == 0; }
  std::string describe() const;
  // The CUDA device of this rank: its local rank modulo the devices the process sees (each rank
  // of a machine on its own GPU; a launcher that shows each rank only its own GPU, e.g.
  // srun --gpus-per-task=1, gives device 0), or 0 when it sees none. The model's context and the
  // NCCL reducer both use it. Asks the library for the device count (loading the CUDA module):
  // only for a run that uses CUDA.
  int cuda_device() const;
  std::shared_ptr<GradientReducer> reducer() const { return reducer_; }

  // Attaches the reducer to `model`'s trainer (through the library's gradient-reducer hook); the
  // reducer outlives the model. With `overlap` a reducer that can sums the gradient's ranges
  // while the backward pass goes on.
  void attach(sparse_model* model, bool overlap) const;
  // Reads the next global batch of size() * batch sequences from `ds` into `global` and returns
  // this rank's shard (batch sequences).
  const uint8_t* next_shard(sparse_dataset* ds, int64_t batch, int64_t seq_len,
                            std::vector<uint8_t>& global) const;
  // Mean bits per dim over the first `count` sequences of `ds`, the sequences of each global batch
  // of size() * batch evaluated by their ranks and the sums added over the ranks.
  double evaluate(sparse_model* model, const sparse_dataset* ds, int64_t count, int batch,
                  int64_t* evaluated) const;
  // Throws on every rank whose `options` differ from rank 0's, naming each option that differs
  // (ranks launched with different arguments, e.g. an MPMD launch, would otherwise train
  // different models or call the reductions out of step).
  void check_same_options(const nlohmann::json& options) const;
  // Throws on every rank whose `fingerprint` of the data (the splits' sizes and checksums of
  // some sequences) differs from rank 0's, naming --data `data` and each value that differs.
  void check_same_data(const nlohmann::json& fingerprint, const std::string& data) const;
  // Waits, within --rank-timeout, until every rank has reached the end of the run, so that no
  // rank finalises MPI (which waits without a timeout) while another hangs; a timeout ends the
  // job naming the missing ranks.
  void finish() const;
  // A failure on one rank of several: prints it with the rank and ends the whole job.
  [[noreturn]] void abort_job(const std::string& message) const;

 private:
  // The entries of `values` that differ from rank 0's, one line each (name after `prefix`);
  // empty when all agree. Every rank must call it.
  std::string differences_from_root(const nlohmann::json& values, const std::string& prefix) const;

  LaunchEnvironment launch_;
  std::shared_ptr<GradientReducer> reducer_;
};

// --micro-batch, --rank-timeout and --reduce-overlap.
void add_data_parallel_options(CLI::App& app, TrainOptions& o);
// Sets o.world_size to the group's; a resumed run saved with another world size keeps its global
// batch (o.batch = saved world size * saved batch / size()) or is refused when size() does not
// divide it.
void keep_global_batch(TrainOptions& o, const DataParallel& dp);

}  // namespace repro
