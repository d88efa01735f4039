// CIFAR-10 reader on arbitrary bytes: as a .tar(.gz) archive (gzip + tar + record checks) or,
// when the first byte is odd, as a single record file.
#include "datasets/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const bool record_file = size > 0 && (data[0] & 1) && data[0] != 0x1f;
  const std::string path = fuzz::temp_path(record_file ? ".bin" : ".tar");
  fuzz::write_file(path, data, size);
  for (auto split :
       {sparse::data::Split::Train, sparse::data::Split::Valid, sparse::data::Split::Test}) {
    try {
      fuzz::drain(*sparse::data::open_cifar10(path, split));
    } catch (const sparse::Error&) {
    }
    if (record_file) break;
  }
  ::unlink(path.c_str());
  return 0;
}
