// Shared helpers of the dataset fuzz targets: write the input to a per-process file so the
// readers run through their real entry points (open, mmap, parse, read every sequence).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "datasets/dataset.hpp"
#include "libsparse/error.hpp"

namespace fuzz {

inline std::string temp_path(const char* suffix) {
  return "/tmp/sparse-fuzz-" + std::to_string(::getpid()) + suffix;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
}

// Reads every sequence and label; any out-of-bounds access trips AddressSanitizer.
inline void drain(const sparse::data::Source& s) {
  std::vector<uint8_t> buf(static_cast<size_t>(s.seq_len()));
  unsigned sum = 0;
  for (int64_t i = 0; i < s.size(); ++i) {
    s.read(i, buf.data());
    for (uint8_t b : buf) sum += b;
    sum += static_cast<unsigned>(s.label(i));
  }
  volatile unsigned sink = sum;
  (void)sink;
}

}  // namespace fuzz
