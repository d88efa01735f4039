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

struct OpCheckCounts {
  int checked = 0;  // checks run
  int failed = 0;   // of those, the ones that failed
  int skipped = 0;  // operations a backend does not support
};

// Runs the checks and returns their counts. An error of a backend inside a check is reported as a
// failure of the operation that raised it. Throws Error(SPARSE_ERR_INVALID_ARGUMENT) when the
// filter matches no operation (naming the operations), and the error of a backend that cannot
// start.
OpCheckCounts run_op_check(const OpCheckOptions& options);

}  // namespace sparse::check
