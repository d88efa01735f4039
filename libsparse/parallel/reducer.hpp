// Data-parallel gradient reduction, as the trainer sees it.
//
// A reducer sums the gradient and the loss over the ranks of a data-parallel group. The trainer
// calls it once per optimiser step, after the backward pass and before clipping and the update,
// on the flat fp32 gradient (already scaled by 1 / (global batch * seq_len), so the sum is the
// global mean gradient). The library has the single-process reducer (nothing to do) and the
// adapter of the C hook sparse_experimental_gradient_reducer (capi/src/experimental.cpp); the
// MPI and NCCL reducers are the driver's, installed through that hook.
#pragma once

#include <cstdint>
#include <memory>

namespace sparse {

class Backend;

class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  // Replaces x[0, count) (in `backend`'s memory) by its sum over the ranks, on every rank.
  virtual void all_reduce_sum(Backend& /*backend*/, float* /*x*/, int64_t /*count*/) {}
  // The sum over the ranks of one value per rank (the same on every rank).
  virtual double all_reduce_sum(double value) { return value; }
};

std::unique_ptr<GradientReducer> make_single_process_reducer();

}  // namespace sparse
