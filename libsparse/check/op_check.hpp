// The operation checker: every model operation and every attention kernel of every backend
// available on this machine, against the CPU backend's double-precision path, over a sweep of
// shapes (in the manner of dav1d's checkasm). On a machine without a GPU it checks the CPU
// backend's float path against its double path.
//
// Each output is compared with a normalised error mse(ref, out) / mse(ref, 0) and a per-element
// bound |out - ref| <= atol * rms(ref) + rtol * |ref| for its dtype; NaN or Inf in an output always
// fails. The first mismatches are printed with their indices.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace sparse::check {

struct OpCheckOptions {
  bool bench = false;      // also time each operation on the checked backend
  uint64_t seed = 1;       // inputs
  std::string filter;      // only operations whose name contains this (empty: all)
  int max_mismatches = 5;  // printed per failing output
  std::function<void(const std::string&)> print;  // one line of output (no newline)
};

// Returns the number of failed checks (0 when everything passed). Never throws: an error of a
// backend is reported as a failure of the operation that raised it. A filter that matches no
// operation is one failure, reported by a line naming the operations that exist.
int run_op_check(const OpCheckOptions& options);

}  // namespace sparse::check
