// The operation checker in the fuzz build: refused. clang 14 cannot compile op_check.cpp (it
// captures structured bindings in lambdas, a C++20 feature GCC accepts in C++17 mode), and the
// checker takes no caller-controlled sizes worth fuzzing: it runs its own fixed sweep.
#include "libsparse/check/op_check.hpp"
#include "libsparse/error.hpp"

namespace sparse::check {

OpCheckCounts run_op_check(const OpCheckOptions&) {
  throw_error(SPARSE_ERR_UNSUPPORTED, "the operation checker is not part of the fuzz build");
}

double round_to_16_host(double x, sparse_dtype) { return x; }

}  // namespace sparse::check
