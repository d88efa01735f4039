// Data-parallel gradient reduction for sparse-repro: one interface, three implementations, each
// installed on a model's trainer through the library's hook
// (sparse_experimental_model_set_gradient_reducer, sparse/experimental.h).
//
// A reducer sums arrays and scalars over the ranks of a data-parallel group. The trainer calls it
// once per optimiser step, after the backward pass and before clipping and the update, on the
// flat fp32 gradient (already scaled by 1 / (global batch * seq_len), so the sum is the global
// mean gradient); or, when the reducer overlaps() and the run allows it (--reduce-overlap on),
// begins a sum per parameter range as the backward pass completes it and waits for them all
// before clipping. Implementations:
//   - none (make_single_process_reducer): one process; nothing to do.
//   - MPI (make_mpi_reducer, mpi_reducer.cpp): the gradient in buckets, each summed in rank order
//     0, 1, ..., N-1 (a reduce-scatter by MPI_Ialltoallv, the sums, an MPI_Iallgatherv), so the
//     result is the same bit for bit on every rank and equals one process adding the ranks'
//     shards in that order, with or without overlap. Host memory: the library stages a device
//     gradient through the host. Overlapped, the buckets of each range are started at once and
//     progressed at every later begin (MPI progresses only inside MPI calls).
//   - NCCL (make_nccl_reducer, nccl_reducer.cpp): ncclAllReduce on the device gradient, on the
//     reducer's own CUDA stream; the NCCL unique id is broadcast over the bootstrap (MPI) reducer;
//     the summation order is NCCL's.
// The MPI and NCCL implementations are built only when their libraries are found; builds without
// them get factories that throw (ReduceError with SPARSE_ERR_UNSUPPORTED).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "sparse/experimental.h"
#include "sparse/sparse.h"

namespace repro {

// A failed reduction, with the status the training step reports.
class ReduceError : public std::runtime_error {
 public:
  ReduceError(sparse_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  sparse_status status() const { return status_; }

 private:
  sparse_status status_;
};

class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual std::string name() const { return "none"; }
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  // The memory all_reduce_sum(float*) accepts.
  virtual sparse_memory memory() const { return SPARSE_MEMORY_HOST; }
  // Replaces x[0, count) (in `memory`) by its sum over the ranks, on every rank.
  virtual void all_reduce_sum(float* /*x*/, int64_t /*count*/, sparse_memory /*memory*/) {}
  // The sum over the ranks of one value per rank, added in rank order (the same on every rank).
  virtual double all_reduce_sum(double value) { return value; }
  // Whether begin_all_reduce_sum and wait_all_reduce_sum are offered.
  virtual bool overlaps() const { return false; }
  // Starts replacing x[0, count) (complete, in `memory`) by its sum over the ranks; the caller
  // leaves it alone until wait_all_reduce_sum() returns. Every rank begins the same ranges in the
  // same order.
  virtual void begin_all_reduce_sum(float* x, int64_t count, sparse_memory memory) {
    all_reduce_sum(x, count, memory);
  }
  // Completes every sum begun since the last wait; the timeout of all_reduce_sum applies.
  virtual void wait_all_reduce_sum() {}
  // Copies `bytes` bytes of host memory from rank 0 to every other rank.
  virtual void broadcast(void* /*data*/, size_t /*bytes*/) {}
};

std::unique_ptr<GradientReducer> make_single_process_reducer();

// Installs `reducer` on `model`'s trainer (the model keeps a pointer: `reducer` must outlive it
// or be replaced first), with the overlap callbacks when `overlap` and reducer.overlaps(). Throws
// std::runtime_error with the library's message.
void attach_reducer(sparse_model* model, GradientReducer& reducer, bool overlap);

// Whether this build has the MPI and NCCL reducers.
bool mpi_compiled() noexcept;
bool nccl_compiled() noexcept;

// The launch environment as the MPI launcher (mpirun, srun) describes it, read from the
// environment before MPI is initialised: OpenMPI (OMPI_COMM_WORLD_*), PMIx (PMIX_RANK), MPICH
// and Intel MPI (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID) and SLURM (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID). launched is false when none is set (a plain process).
struct LaunchEnvironment {
  bool launched = false;
  std::string source;  // the variables read, e.g. "OMPI_COMM_WORLD_*"
  int rank = 0, size = 1, local_rank = 0;
  bool size_given = false;  // the variables named the world size (else size is 1)
};
LaunchEnvironment launch_environment();
// Unsets the variables launch_environment() reads: this process, and those it starts, are then
// a plain process each.
void forget_launch_environment();

// MPI over MPI_COMM_WORLD. Initialises MPI (MPI_THREAD_FUNNELED) unless it already is, and
// finalises it when the reducer that initialised it is destroyed. Errors return (MPI_ERRORS_RETURN)
// and become ReduceError. A collective that has waited `timeout_seconds` for the other ranks
// throws SPARSE_ERR_IO naming the ranks that have not arrived at the current step (rank 0 knows
// them; other ranks name rank 0's group as a whole). bucket_floats: elements per bucket.
std::unique_ptr<GradientReducer> make_mpi_reducer(double timeout_seconds,
                                                  int64_t bucket_floats = int64_t{1} << 22);

// Ends every process of the MPI job with `code` (MPI_Abort): after a reducer error, so that the
// launcher stops the ranks that still wait. Returns when MPI is not initialised.
void mpi_abort_job(int code) noexcept;

// NCCL on CUDA device `device`: `bootstrap` (an MPI reducer; nullptr for a single process)
// carries the unique id from rank 0 to the others and the scalar sums.
std::unique_ptr<GradientReducer> make_nccl_reducer(std::shared_ptr<GradientReducer> bootstrap,
                                                   int device);

}  // namespace repro
