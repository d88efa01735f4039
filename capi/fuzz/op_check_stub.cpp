// The operation checker in the fuzz build: refused. It takes no caller-controlled sizes worth
// fuzzing (it runs its own fixed sweep), and leaving it out keeps the fuzz build short.
#include "libsparse/check/op_check.hpp"
#include "libsparse/error.hpp"

namespace sparse::check {

OpCheckCounts run_op_check(const OpCheckOptions&) {
  throw_error(SPARSE_ERR_UNSUPPORTED, "the operation checker is not part of the fuzz build");
}

double round_to_16_host(double x, sparse_dtype) { return x; }

}  // namespace sparse::check
