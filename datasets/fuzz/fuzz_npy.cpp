// .npy header parsing and integer element access (in memory).
#include "datasets/fuzz/fuzz_common.hpp"
#include "datasets/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparse::data;
  std::vector<uint8_t> copy(data, data + size);
  try {
    NpyArray a = parse_npy(copy.data(), copy.size(), "fuzz.npy");
    if ((a.kind == 'i' || a.kind == 'u') && a.count > 0) {
      volatile int64_t first = npy_integer(a, copy.data(), 0);
      volatile int64_t last = npy_integer(a, copy.data(), a.count - 1);
      (void)first;
      (void)last;
    }
  } catch (const sparse::Error&) {
  }
  return 0;
}
