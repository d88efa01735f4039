// The operation checker: every model operation and every attention kernel of every backend
// available on this machine, against the CPU backend's double-precision path, over a sweep of
// shapes (in the manner of dav1d's checkasm), per dtype:
//   f32        every operation of the backend's fp32 table (Backend::model_ops_f32());
//   bf16, f16  the mixed-precision table (Backend::model_ops_mixed()), where the backend has one:
//              its matrix products (linear_forward, linear_backward, linear_transposed, and
//              linear_forward_16/linear_backward_16 on x converted by the table's round_to_16)
//              against the double path on the operands rounded to the dtype on the host (the
//              bias add and the bias gradient read fp32), and round_trip_16: round_to_16 then
//              widen_from_16 must equal the host's rounding exactly.
// On a machine without a GPU it checks the CPU backend's float path against its double path (the
// CPU has no mixed-precision table: one skip line per dtype), and any extra backends given.
//
// Each output is compared with a normalised error mse(ref, out) / mse(ref, 0) and a per-element
// bound |out - ref| <= atol * rms(ref) + rtol * |ref| for its dtype; NaN or Inf in an output always
// fails. The first mismatches are printed with their indices. Lines are labelled with the
// backend, the dtype, the operation and the shape ("cuda bf16 linear_forward [rows=17 ...]").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "sparse/common.h"

namespace sparse {
class Backend;
}

namespace sparse::check {

struct OpCheckOptions {
  bool bench = false;      // also time each operation on the checked backend
  uint64_t seed = 1;       // inputs
  std::string filter;      // only operations whose name contains this (empty: all)
  int max_mismatches = 5;  // printed per failing output
  std::function<void(const std::string&)> print;  // one line of output (no newline)
  // Backends checked after those of this machine, named in the report (not owned; they must
  // outlive the call). Internal: for tests of the checker itself.
  std::vector<std::pair<std::string, Backend*>> extra_backends;
};

struct OpCheckCounts {
  int checked = 0;  // checks run
  int failed = 0;   // of those, the ones that failed
  int skipped = 0;  // operations a backend does not support (a missing mixed table counts once)
};

// Runs the checks and returns their counts. An error of a backend inside a check is reported as a
// failure of the operation that raised it. Throws Error(SPARSE_ERR_INVALID_ARGUMENT) when the
// filter matches no operation (naming the operations), and the error of a backend that cannot
// start.
OpCheckCounts run_op_check(const OpCheckOptions& options);

// x rounded to `dtype` (SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16) to nearest even, subnormals
// included; beyond the largest finite value +-infinity; any other dtype returns x. The checker's
// host rounding of the mixed-precision operands.
double round_to_16_host(double x, sparse_dtype dtype);

}  // namespace sparse::check
