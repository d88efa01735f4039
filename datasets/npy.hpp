// NumPy .npy headers (format versions 1, 2 and 3): magic, a Python dict literal with 'descr',
// 'fortran_order' and 'shape', and the data after it, whose size must match the shape exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sparse::data {

struct NpyArray {
  char kind = 0;         // 'u' unsigned, 'i' signed, 'b' bool, 'f' float
  size_t item_size = 0;  // bytes per element
  bool big_endian = false;
  bool fortran_order = false;
  std::vector<uint64_t> shape;
  uint64_t count = 0;      // product of the shape
  size_t data_offset = 0;  // where the elements start
};

// Parses the array at [data, data + size); `what` names it in errors (SPARSE_ERR_FORMAT).
NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& what);

// Element i of an integer array as int64 (bounds-checked by the caller through `count`).
int64_t npy_integer(const NpyArray& a, const uint8_t* data, uint64_t i);

}  // namespace sparse::data
