// The boundary between the C ABI and the C++ engine. Every exported function runs its body
// through guard(), which maps exceptions to status codes and records the detail message; nothing
// thrown inside the library ever reaches the caller.
#pragma once

#include <new>
#include <string>

#include "libsparse/error.hpp"
#include "sparse/common.h"

namespace sparse::capi {

void set_last_error(const char* function, const char* message) noexcept;

template <typename Body>
sparse_status guard(const char* function, Body&& body) noexcept {
  try {
    body();
    return SPARSE_OK;
  } catch (const Error& e) {
    set_last_error(function, e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error(function, "out of memory");
    return SPARSE_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(function, (std::string("internal error: ") + e.what()).c_str());
    return SPARSE_ERR_INTERNAL;
  } catch (...) {
    set_last_error(function, "internal error: unknown exception");
    return SPARSE_ERR_INTERNAL;
  }
}

}  // namespace sparse::capi
