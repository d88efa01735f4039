// The single-process reducer (see reducer.hpp).
#include "libsparse/parallel/reducer.hpp"

namespace sparse {

std::unique_ptr<GradientReducer> make_single_process_reducer() {
  return std::make_unique<GradientReducer>();
}

}  // namespace sparse
