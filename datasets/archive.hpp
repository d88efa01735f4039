// Archive formats read in place: gzip streams (zlib), tar (ustar, GNU long names, pax paths) and
// zip (central directory, stored and deflated members, zip64). Every parser works on a byte
// range and checks each length against it before reading, so malformed input gives an Error
// (SPARSE_ERR_FORMAT naming `what` and the expectation), never an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "datasets/io.hpp"

namespace sparse::data {

// A forward-only byte source.
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Reads up to n bytes; returns 0 only at the end of the stream.
  virtual size_t read(uint8_t* out, size_t n) = 0;
};

class MemoryStream final : public ByteStream {
 public:
  MemoryStream(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t read(uint8_t* out, size_t n) override;

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Decompresses a gzip file (one or more members) held in memory. Needs zlib
// (SPARSE_ERR_UNSUPPORTED otherwise).
class GzipStream final : public ByteStream {
 public:
  GzipStream(const uint8_t* data, size_t size, std::string what);
  ~GzipStream() override;
  GzipStream(const GzipStream&) = delete;
  GzipStream& operator=(const GzipStream&) = delete;
  size_t read(uint8_t* out, size_t n) override;

 private:
  struct State;
  State* state_;
  std::string what_;
};

bool is_gzip(const uint8_t* data, size_t size);

// Reads and discards the rest of `in`. For a GzipStream this verifies every member's trailer
// (CRC-32 and length of the inflated data), which zlib checks only when a member is read to its
// end.
void read_to_end(ByteStream& in);

struct TarMember {
  std::string name;  // full path inside the archive
  uint64_t size = 0;
};

// Walks a tar stream. For each regular file, `select` returns a sink for its bytes or nullptr to
// skip it. The stream is read to its end, also after the end-of-archive blocks, so a gzip
// stream's trailers are verified before tar_extract returns. Errors: SPARSE_ERR_FORMAT for bad
// header checksums, sizes, a truncated stream or (from the stream) a failed integrity check.
void tar_extract(ByteStream& in, const std::string& what,
                 const std::function<Sink*(const TarMember&)>& select);

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t local_header_offset = 0;
};

// Reads the central directory of a zip archive held in [data, data + size).
std::vector<ZipEntry> zip_entries(const uint8_t* data, size_t size, const std::string& what);
const ZipEntry* zip_find(const std::vector<ZipEntry>& entries, const std::string& name);

// The member's compressed bytes (after its local header), bounds-checked.
View zip_raw_member(const View& archive, const ZipEntry& entry, const std::string& what);

// The member's bytes: for a stored member a view into the archive itself (CRC checked), for a
// deflated one the inflated bytes written to `sink` (size and CRC checked) and then returned by
// `finish`. `finish` turns the sink's contents into a blob.
View zip_member(const View& archive, const ZipEntry& entry, const std::string& what, Sink& sink,
                const std::function<BlobPtr()>& finish);

// Inflates raw deflate data (no zlib/gzip header) into `sink`, expecting exactly `expected` bytes.
void inflate_raw(const uint8_t* data, size_t size, uint64_t expected, Sink& sink,
                 const std::string& what, uint32_t* crc_out);

uint32_t crc32_of(const uint8_t* data, size_t size);

}  // namespace sparse::data
