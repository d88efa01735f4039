// ImageNet 64x64 reader on an arbitrary file taken as one npz batch (zip + npy + shape checks).
#include "datasets/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::temp_path(".npz");
  fuzz::write_file(path, data, size);
  try {
    fuzz::drain(*sparse::data::open_imagenet64(path, sparse::data::Split::Train));
  } catch (const sparse::Error&) {
  }
  ::unlink(path.c_str());
  return 0;
}
