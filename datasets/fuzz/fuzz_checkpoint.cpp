// Checkpoint reader (safetensors length, JSON header, __metadata__, configurations, tensor table,
// checksums) on arbitrary bytes. Each input is parsed as given and again with its header and data
// checksums recomputed, so that mutations also reach the checks behind the checksums.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "libsparse/error.hpp"
#include "libsparse/model/checkpoint_format.hpp"

namespace {

uint64_t fnv1a(const uint8_t* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// Writes hex64(h) over the 16 characters after `key` in the header, if they are there.
bool patch(std::vector<uint8_t>& f, size_t header_end, const std::string& key, size_t* at) {
  const std::string text(f.begin() + 8, f.begin() + static_cast<std::ptrdiff_t>(header_end));
  const size_t k = text.find(key);
  if (k == std::string::npos || k + key.size() + 16 > text.size()) return false;
  *at = 8 + k + key.size();
  return true;
}

void put_hex(std::vector<uint8_t>& f, size_t at, uint64_t h) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  for (size_t i = 0; i < 16; ++i) f[at + i] = static_cast<uint8_t>(hex[i]);
}

void parse(const std::vector<uint8_t>& file) {
  try {
    const sparse::model::ckpt::CheckpointContents c =
        sparse::model::ckpt::parse_checkpoint_bytes(file, "fuzz checkpoint");
    float sum = 0;
    for (float x : c.params) sum += x;
    for (float x : c.v) sum += x;
    volatile float sink = sum + static_cast<float>(c.step);
    (void)sink;
  } catch (const sparse::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> file(data, data + size);
  parse(file);
  if (size < 8) return 0;
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | file[static_cast<size_t>(i)];
  if (len > size - 8) return 0;
  const size_t header_end = 8 + static_cast<size_t>(len);
  size_t at = 0;
  if (patch(file, header_end, "\"checksum\":\"", &at))
    put_hex(file, at, fnv1a(file.data() + header_end, size - header_end));
  if (patch(file, header_end, "\"header_checksum\":\"", &at)) {
    for (size_t i = 0; i < 16; ++i) file[at + i] = '0';
    put_hex(file, at, fnv1a(file.data(), header_end));
  }
  parse(file);
  return 0;
}
