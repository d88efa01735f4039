// Text/enwik8 reader on an arbitrary file (raw bytes, or a zip when it starts with PK).
#include "datasets/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::temp_path(".txt");
  fuzz::write_file(path, data, size);
  const int64_t len = size > 0 ? 1 + data[size - 1] % 64 : 1;
  for (bool enwik8 : {false, true})
    for (auto split :
         {sparse::data::Split::Train, sparse::data::Split::Valid, sparse::data::Split::Test}) {
      try {
        fuzz::drain(*sparse::data::open_text(path, split, len, enwik8));
      } catch (const sparse::Error&) {
      }
    }
  ::unlink(path.c_str());
  return 0;
}
