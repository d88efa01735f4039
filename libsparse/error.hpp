// Internal error handling. Engine code reports bad input and failures by throwing sparse::Error
// with the status the C ABI will return; the C layer (capi/src/guard.hpp) is the only place that
// catches, so no exception ever crosses the ABI.
#pragma once

#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "sparse/common.h"

namespace sparse {

class Error : public std::runtime_error {
 public:
  Error(sparse_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  sparse_status status() const noexcept { return status_; }

 private:
  sparse_status status_;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

// throw_error(SPARSE_ERR_FORMAT, "file ", path, ": expected ", n, " bytes")
template <typename... Args>
[[noreturn]] void throw_error(sparse_status status, Args&&... args) {
  throw Error(status, detail::concat(std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void throw_invalid(Args&&... args) {
  throw_error(SPARSE_ERR_INVALID_ARGUMENT, std::forward<Args>(args)...);
}

// The value of a caller-supplied C enum, read without loading it as the C++ enum type: a C caller
// may pass any int, and loading an out-of-range value as a C++ enum is undefined behaviour.
template <typename E>
int enum_value(const E& e) noexcept {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized on supported ABIs");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

inline bool known_dtype(int v) noexcept {
  return v == SPARSE_DTYPE_F32 || v == SPARSE_DTYPE_F16 || v == SPARSE_DTYPE_BF16 ||
         v == SPARSE_DTYPE_F64;
}

// Checks a caller-supplied condition; the message names what was wrong.
template <typename... Args>
void require(bool condition, Args&&... args) {
  if (!condition) throw_invalid(std::forward<Args>(args)...);
}

}  // namespace sparse
