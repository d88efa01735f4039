// Data-parallel gradient reduction, as the trainer sees it.
//
// A reducer sums the gradient and the loss over the ranks of a data-parallel group, on the flat
// fp32 gradient (already scaled by 1 / (global batch * seq_len), so the sum is the global mean
// gradient), before clipping and the update. A reducer that overlaps() is given the gradient in
// ranges as the last micro-batch's backward pass completes them (begin, in the order of the
// backward: the head, the layers from last to first, the embeddings; disjoint, covering the
// gradient once), then wait() once per step; any other is called once, all_reduce_sum, after the
// backward pass. The library has the single-process reducer (nothing to do) and the
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

  // Whether the trainer may use begin() and wait() instead of all_reduce_sum(float*).
  virtual bool overlaps() const { return false; }
  // Starts replacing x[0, count) (in `backend`'s memory, whose work on it is queued, maybe not
  // finished) by its sum over the ranks; the caller neither reads nor writes it until wait()
  // returns. This default sums it at once.
  virtual void begin(Backend& backend, float* x, int64_t count) {
    all_reduce_sum(backend, x, count);
  }
  // Completes every sum begun since the last wait().
  virtual void wait(Backend& /*backend*/) {}
};

std::unique_ptr<GradientReducer> make_single_process_reducer();

}  // namespace sparse
