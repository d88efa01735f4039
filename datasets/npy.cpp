// .npy header parsing. See npy.hpp.
#include "datasets/npy.hpp"

#include <cstring>

#include "datasets/io.hpp"
#include "libsparse/error.hpp"

namespace sparse::data {
namespace {

class DictParser {
 public:
  DictParser(const char* p, size_t n, const std::string& what) : p_(p), n_(n), what_(what) {}

  [[noreturn]] void fail(const std::string& expected) const {
    throw_error(SPARSE_ERR_FORMAT, "file ", what_, ": npy header: expected ", expected,
                " at offset ", i_);
  }
  void ws() {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  bool peek(char c) {
    ws();
    return i_ < n_ && p_[i_] == c;
  }
  void expect(char c) {
    if (!peek(c)) fail(std::string("'") + c + "'");
    ++i_;
  }
  std::string string() {
    ws();
    if (i_ >= n_ || (p_[i_] != '\'' && p_[i_] != '"')) fail("a quoted string");
    char q = p_[i_++];
    size_t start = i_;
    while (i_ < n_ && p_[i_] != q) ++i_;
    if (i_ >= n_) fail("a closing quote");
    return std::string(p_ + start, p_ + i_++);
  }
  bool boolean() {
    ws();
    if (n_ - i_ >= 4 && std::memcmp(p_ + i_, "True", 4) == 0) {
      i_ += 4;
      return true;
    }
    if (n_ - i_ >= 5 && std::memcmp(p_ + i_, "False", 5) == 0) {
      i_ += 5;
      return false;
    }
    fail("True or False");
  }
  uint64_t integer() {
    ws();
    if (i_ >= n_ || p_[i_] < '0' || p_[i_] > '9') fail("a non-negative integer");
    uint64_t v = 0;
    while (i_ < n_ && p_[i_] >= '0' && p_[i_] <= '9') {
      if (v > (UINT64_MAX - 9) / 10) fail("an integer that fits 64 bits");
      v = v * 10 + static_cast<uint64_t>(p_[i_++] - '0');
    }
    if (i_ < n_ && p_[i_] == 'L') ++i_;  // Python 2 longs
    return v;
  }
  std::vector<uint64_t> tuple() {
    expect('(');
    std::vector<uint64_t> out;
    while (!peek(')')) {
      if (out.size() >= 32) fail("at most 32 dimensions");
      out.push_back(integer());
      if (!peek(',')) break;
      ++i_;
    }
    expect(')');
    return out;
  }

 private:
  const char* p_;
  size_t n_;
  size_t i_ = 0;
  const std::string& what_;
};

}  // namespace

NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& what) {
  if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": expected a .npy array (magic \\x93NUMPY)");
  uint8_t major = data[6];
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = le16(data + 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw_error(SPARSE_ERR_FORMAT, "file ", what, ": truncated .npy header");
    header_len = le32(data + 8);
    header_start = 12;
  } else {
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": .npy format version ", int(major),
                " (expected 1, 2 or 3)");
  }
  if (header_len > size - header_start)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": .npy header of ", header_len,
                " bytes runs past the end of the data (truncated)");
  NpyArray a;
  a.data_offset = header_start + header_len;
  DictParser d(reinterpret_cast<const char*>(data + header_start), header_len, what);
  bool have_descr = false, have_order = false, have_shape = false;
  std::string descr;
  d.expect('{');
  while (!d.peek('}')) {
    std::string key = d.string();
    d.expect(':');
    if (key == "descr") {
      if (d.peek('[')) d.fail("a simple dtype string (structured dtypes are not supported)");
      descr = d.string();
      have_descr = true;
    } else if (key == "fortran_order") {
      a.fortran_order = d.boolean();
      have_order = true;
    } else if (key == "shape") {
      a.shape = d.tuple();
      have_shape = true;
    } else {
      d.fail("the keys 'descr', 'fortran_order', 'shape' (found '" + key + "')");
    }
    if (!d.peek(',')) break;
    d.expect(',');
  }
  d.expect('}');
  if (!have_descr || !have_order || !have_shape)
    throw_error(SPARSE_ERR_FORMAT, "file ", what,
                ": npy header lacks 'descr', 'fortran_order' or 'shape'");
  if (descr.size() < 3 || std::strchr("<>|=", descr[0]) == nullptr ||
      std::strchr("uibf", descr[1]) == nullptr)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": dtype '", descr,
                "' (expected a numeric dtype such as '|u1' or '<i8')");
  a.big_endian = descr[0] == '>';
  a.kind = descr[1];
  size_t item = 0;
  for (size_t i = 2; i < descr.size(); ++i) {
    if (descr[i] < '0' || descr[i] > '9' || item > 64)
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": dtype '", descr, "' has a bad size");
    item = item * 10 + static_cast<size_t>(descr[i] - '0');
  }
  if (item != 1 && item != 2 && item != 4 && item != 8)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": dtype '", descr,
                "' (expected elements of 1, 2, 4 or 8 bytes)");
  a.item_size = item;
  uint64_t count = 1;
  for (uint64_t dim : a.shape) {
    if (dim != 0 && count > UINT64_MAX / dim)
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": npy shape overflows");
    count *= dim;
  }
  a.count = count;
  const uint64_t body = size - a.data_offset;
  if (count > UINT64_MAX / item || count * item != body)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": npy shape needs ",
                count > UINT64_MAX / item ? UINT64_MAX : count * item, " bytes of data, found ",
                body, " (truncated or oversized array)");
  return a;
}

int64_t npy_integer(const NpyArray& a, const uint8_t* data, uint64_t i) {
  const uint8_t* p = data + a.data_offset + i * a.item_size;
  uint64_t v = 0;
  for (size_t k = 0; k < a.item_size; ++k) {
    uint64_t byte = p[a.big_endian ? k : a.item_size - 1 - k];
    v = (v << 8) | byte;
  }
  if (a.kind == 'i' && a.item_size < 8) {
    uint64_t sign = uint64_t{1} << (8 * a.item_size - 1);
    if (v & sign) v |= ~((sign << 1) - 1);
  }
  return static_cast<int64_t>(v);
}

}  // namespace sparse::data
