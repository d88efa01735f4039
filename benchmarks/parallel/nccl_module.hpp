// The interface between sparse-repro and its NCCL reducer module (libsparse_repro_nccl.so):
// one C-linkage entry point, REPRO_NCCL_MODULE_ENTRY, returning this table. The module is built
// with the driver and is refused when its table differs (struct_size, interface).
#pragma once

#include <cstdint>
#include <memory>

#include "parallel/reducer.hpp"

namespace repro {

// Raise whenever this table or GradientReducer changes.
constexpr uint32_t kNcclModuleInterface = 2;

struct NcclModule {
  uint32_t struct_size;
  uint32_t interface;
  // The reducer on CUDA device `device`; `bootstrap` is never null. Throws ReduceError. The
  // caller owns the result.
  GradientReducer* (*make_reducer)(std::shared_ptr<GradientReducer> bootstrap, int device);
};

}  // namespace repro

#define REPRO_NCCL_MODULE_ENTRY "repro_nccl_module"
#define REPRO_NCCL_MODULE_FILE "libsparse_repro_nccl.so"

extern "C" {
typedef const repro::NcclModule* (*repro_nccl_module_entry)(void);
}
