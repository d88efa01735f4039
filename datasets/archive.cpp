// gzip, tar and zip read in place. See archive.hpp.
#include "datasets/archive.hpp"

#include <algorithm>
#include <cstring>

#include "libsparse/error.hpp"
#include "sparse_config.h"

#if SPARSE_HAVE_ZLIB
#include <zlib.h>
#endif

namespace sparse::data {
namespace {

constexpr size_t kChunk = size_t{1} << 18;

#if !SPARSE_HAVE_ZLIB
[[noreturn]] void no_zlib(const std::string& what) {
  throw_error(SPARSE_ERR_UNSUPPORTED, "file ", what,
              ": compressed data needs zlib, which this build of libsparse lacks");
}
#endif

}  // namespace

uint32_t crc32_of(const uint8_t* data, size_t size) {
#if SPARSE_HAVE_ZLIB
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (size > 0) {
    uInt n = static_cast<uInt>(std::min<size_t>(size, size_t{1} << 30));
    crc = ::crc32(crc, data, n);
    data += n;
    size -= n;
  }
  return static_cast<uint32_t>(crc);
#else
  static uint32_t table[256];
  static bool ready = [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return true;
  }();
  (void)ready;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
#endif
}

namespace {
uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t size) {
#if SPARSE_HAVE_ZLIB
  uLong c = crc;
  while (size > 0) {
    uInt n = static_cast<uInt>(std::min<size_t>(size, size_t{1} << 30));
    c = ::crc32(c, data, n);
    data += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
#else
  (void)crc;
  (void)data;
  (void)size;
  return 0;
#endif
}
}  // namespace

// ------------------------------------------------------------------------------------ streams

size_t MemoryStream::read(uint8_t* out, size_t n) {
  size_t k = std::min(n, size_ - pos_);
  if (k > 0) std::memcpy(out, data_ + pos_, k);
  pos_ += k;
  return k;
}

bool is_gzip(const uint8_t* data, size_t size) {
  return size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

#if SPARSE_HAVE_ZLIB
struct GzipStream::State {
  z_stream z{};
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;  // bytes of input handed to zlib so far
  bool finished = false;
};

GzipStream::GzipStream(const uint8_t* data, size_t size, std::string what)
    : state_(new State), what_(std::move(what)) {
  state_->data = data;
  state_->size = size;
  if (!is_gzip(data, size)) {
    delete state_;
    throw_error(SPARSE_ERR_FORMAT, "file ", what_, ": expected gzip data (magic 1f 8b)");
  }
  if (inflateInit2(&state_->z, 16 + MAX_WBITS) != Z_OK) {
    delete state_;
    throw_error(SPARSE_ERR_OUT_OF_MEMORY, "file ", what_, ": zlib could not initialise");
  }
}

GzipStream::~GzipStream() {
  inflateEnd(&state_->z);
  delete state_;
}

size_t GzipStream::read(uint8_t* out, size_t n) {
  State& s = *state_;
  n = std::min(n, size_t{1} << 30);
  while (!s.finished && n > 0) {
    if (s.z.avail_in == 0 && s.pos < s.size) {
      size_t k = std::min(s.size - s.pos, size_t{1} << 30);
      s.z.next_in = const_cast<Bytef*>(s.data + s.pos);
      s.z.avail_in = static_cast<uInt>(k);
      s.pos += k;
    }
    s.z.next_out = out;
    s.z.avail_out = static_cast<uInt>(n);
    int rc = inflate(&s.z, Z_NO_FLUSH);
    size_t produced = n - s.z.avail_out;
    if (rc == Z_STREAM_END) {
      // Another gzip member may follow; zero padding after the last one is tolerated.
      size_t rest_at = s.pos - s.z.avail_in;
      const uint8_t* rest = s.data + rest_at;
      size_t rest_n = s.size - rest_at;
      if (is_gzip(rest, rest_n)) {
        inflateReset(&s.z);
      } else if (std::all_of(rest, rest + rest_n, [](uint8_t b) { return b == 0; })) {
        s.finished = true;
      } else {
        throw_error(SPARSE_ERR_FORMAT, "file ", what_, ": expected end of file or another gzip ",
                    "member after the gzip stream, found ", rest_n, " other bytes");
      }
    } else if (rc == Z_BUF_ERROR && s.z.avail_in == 0 && s.pos >= s.size) {
      throw_error(SPARSE_ERR_FORMAT, "file ", what_,
                  ": truncated gzip stream (expected more compressed data)");
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      const std::string msg = s.z.msg != nullptr ? s.z.msg : "error";
      const char* hint = msg == "incorrect data check"
                             ? ": the CRC-32 of the inflated data does not match the gzip trailer"
                         : msg == "incorrect length check"
                             ? ": the inflated length does not match the gzip trailer's ISIZE"
                             : "";
      throw_error(SPARSE_ERR_FORMAT, "file ", what_, ": corrupt gzip data (zlib: ", msg, hint, ")");
    }
    if (produced > 0) return produced;
  }
  return 0;
}
#else
struct GzipStream::State {};
GzipStream::GzipStream(const uint8_t*, size_t, std::string what)
    : state_(nullptr), what_(std::move(what)) {
  no_zlib(what_);
}
GzipStream::~GzipStream() = default;
size_t GzipStream::read(uint8_t*, size_t) { return 0; }
#endif

// ------------------------------------------------------------------------------------ tar

namespace {}  // namespace

void read_to_end(ByteStream& in) {
  std::vector<uint8_t> buf(kChunk);
  while (in.read(buf.data(), buf.size()) > 0) {
  }
}

namespace {

size_t read_full(ByteStream& in, uint8_t* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t k = in.read(out + got, n - got);
    if (k == 0) break;
    got += k;
  }
  return got;
}

// Copies `n` bytes of `in` to `sink` (or discards them when sink is null).
void copy_bytes(ByteStream& in, uint64_t n, Sink* sink, const std::string& what,
                const std::string& member) {
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(n, kChunk)));
  while (n > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(n, buf.size()));
    size_t got = read_full(in, buf.data(), want);
    if (got < want)
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": truncated tar archive (member ", member,
                  " expects ", n - got, " more bytes)");
    if (sink != nullptr) sink->write(buf.data(), got);
    n -= got;
  }
}

std::string field_string(const uint8_t* p, size_t n) {
  size_t len = 0;
  while (len < n && p[len] != 0) ++len;
  return std::string(reinterpret_cast<const char*>(p), len);
}

// Octal (NUL/space padded) or GNU base-256 number.
bool parse_number(const uint8_t* p, size_t n, uint64_t* out) {
  if (p[0] & 0x80) {
    if (p[0] != 0x80) return false;  // negative or too large
    uint64_t v = 0;
    for (size_t i = 1; i < n; ++i) {
      if (v >> 55) return false;
      v = (v << 8) | p[i];
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < n && p[i] == ' ') ++i;
  uint64_t v = 0;
  bool any = false;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v >> 60) return false;
    v = v * 8 + static_cast<uint64_t>(p[i] - '0');
    any = true;
  }
  for (; i < n; ++i)
    if (p[i] != ' ' && p[i] != 0) return false;
  *out = v;
  return any;
}

std::string pax_path(const std::vector<uint8_t>& rec) {
  // Records: "<length> <key>=<value>\n".
  std::string path;
  size_t pos = 0;
  while (pos < rec.size()) {
    size_t len = 0, i = pos;
    while (i < rec.size() && rec[i] >= '0' && rec[i] <= '9' && len < rec.size()) {
      len = len * 10 + static_cast<size_t>(rec[i] - '0');
      ++i;
    }
    if (len == 0 || i >= rec.size() || rec[i] != ' ' || len > rec.size() - pos) break;
    std::string body(reinterpret_cast<const char*>(rec.data()) + i + 1, pos + len - (i + 1));
    if (!body.empty() && body.back() == '\n') body.pop_back();
    if (body.compare(0, 5, "path=") == 0) path = body.substr(5);
    pos += len;
  }
  return path;
}

}  // namespace

void tar_extract(ByteStream& in, const std::string& what,
                 const std::function<Sink*(const TarMember&)>& select) {
  uint8_t hdr[512];
  std::string next_name;  // from a GNU long-name or pax header
  for (uint64_t index = 0;; ++index) {
    size_t got = read_full(in, hdr, sizeof hdr);
    if (got == 0) return;  // end of stream at a block boundary (end blocks missing): accept
    if (got < sizeof hdr)
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": truncated tar archive (expected a ",
                  "512-byte header block, found ", got, " bytes)");
    if (std::all_of(hdr, hdr + 512, [](uint8_t b) { return b == 0; })) {
      // End-of-archive blocks: the stream is still read to its end, so that a compressed
      // stream's own integrity fields (the gzip trailers' CRC-32 and length) are verified.
      read_to_end(in);
      return;
    }
    uint64_t stored = 0;
    if (!parse_number(hdr + 148, 8, &stored))
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": tar header ", index,
                  " has no valid checksum field (expected a tar archive)");
    uint64_t sum = 0;
    for (size_t i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : hdr[i];
    if (sum != stored)
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": tar header ", index,
                  " checksum mismatch (expected ", stored, ", computed ", sum,
                  "): not a tar archive or corrupt");
    uint64_t size = 0;
    if (!parse_number(hdr + 124, 12, &size) || size > (uint64_t{1} << 40))
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": tar header ", index,
                  " has an invalid size field");
    std::string name = field_string(hdr, 100);
    if (std::memcmp(hdr + 257, "ustar", 5) == 0) {
      std::string prefix = field_string(hdr + 345, 155);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    char type = static_cast<char>(hdr[156]);
    if (type == 'L' || type == 'x') {
      if (size > (1u << 20))
        throw_error(SPARSE_ERR_FORMAT, "file ", what, ": tar extended header ", index, " of ", size,
                    " bytes (expected at most 1 MiB)");
      VectorSink meta;
      copy_bytes(in, size, &meta, what, name);
      if (type == 'L') {
        next_name = field_string(meta.bytes().data(), meta.bytes().size());
      } else {
        std::string p = pax_path(meta.bytes());
        if (!p.empty()) next_name = p;
      }
    } else {
      if (!next_name.empty()) {
        name = next_name;
        next_name.clear();
      }
      Sink* sink = nullptr;
      if (type == '0' || type == '\0' || type == '7') {
        TarMember m;
        m.name = name;
        m.size = size;
        sink = select(m);
      }
      copy_bytes(in, size, sink, what, name);
    }
    uint64_t pad = (512 - size % 512) % 512;
    copy_bytes(in, pad, nullptr, what, name);
  }
}

// ------------------------------------------------------------------------------------ zip

namespace {
constexpr uint32_t kEocd = 0x06054b50, kEocd64 = 0x06064b50, kLocator64 = 0x07064b50,
                   kCentral = 0x02014b50, kLocal = 0x04034b50;

[[noreturn]] void zip_error(const std::string& what, const std::string& msg) {
  throw_error(SPARSE_ERR_FORMAT, "file ", what, ": ", msg);
}
}  // namespace

std::vector<ZipEntry> zip_entries(const uint8_t* data, size_t size, const std::string& what) {
  if (size < 22)
    zip_error(what, "expected a zip archive (too short for an end-of-directory record)");
  size_t eocd = SIZE_MAX;
  size_t lowest = size >= 22 + 65535 ? size - 22 - 65535 : 0;
  for (size_t p = size - 22 + 1; p-- > lowest;) {
    if (le32(data + p) == kEocd && p + 22 + le16(data + p + 20) <= size) {
      eocd = p;
      break;
    }
  }
  if (eocd == SIZE_MAX)
    zip_error(
        what,
        "expected a zip archive (no end-of-central-directory record; truncated or not a zip)");
  const uint8_t* e = data + eocd;
  if (le16(e + 4) != 0 || le16(e + 6) != 0)
    zip_error(what, "multi-disk zip archives are not supported (expected a single file)");
  uint64_t count = le16(e + 10);
  uint64_t cd_size = le32(e + 12);
  uint64_t cd_offset = le32(e + 16);
  if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    if (eocd < 20 || le32(data + eocd - 20) != kLocator64)
      zip_error(what, "expected a zip64 end-of-directory locator");
    uint64_t z64 = le64(data + eocd - 20 + 8);
    if (z64 > size || size - z64 < 56 || le32(data + z64) != kEocd64)
      zip_error(what, "zip64 end-of-directory record is missing or out of bounds");
    count = le64(data + z64 + 32);
    cd_size = le64(data + z64 + 40);
    cd_offset = le64(data + z64 + 48);
  }
  if (cd_offset > size || cd_size > size - cd_offset)
    zip_error(what, "central directory lies outside the file (truncated zip?)");
  if (count > cd_size / 46)
    zip_error(what, "central directory claims " + std::to_string(count) +
                        " entries, more than fit in its " + std::to_string(cd_size) + " bytes");
  std::vector<ZipEntry> out;
  out.reserve(static_cast<size_t>(count));
  const uint8_t* p = data + cd_offset;
  const uint8_t* end = p + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (end - p < 46 || le32(p) != kCentral)
      zip_error(what, "central directory entry " + std::to_string(i) + " is corrupt");
    ZipEntry z;
    z.flags = le16(p + 8);
    z.method = le16(p + 10);
    z.crc32 = le32(p + 16);
    z.compressed_size = le32(p + 20);
    z.size = le32(p + 24);
    size_t name_len = le16(p + 28), extra_len = le16(p + 30), comment_len = le16(p + 32);
    z.local_header_offset = le32(p + 42);
    if (static_cast<size_t>(end - p) < 46 + name_len + extra_len + comment_len)
      zip_error(what, "central directory entry " + std::to_string(i) + " runs past the directory");
    z.name.assign(reinterpret_cast<const char*>(p + 46), name_len);
    // zip64 extended information: the fields that are saturated, in this order.
    const uint8_t* x = p + 46 + name_len;
    const uint8_t* xend = x + extra_len;
    while (xend - x >= 4) {
      uint16_t id = le16(x), len = le16(x + 2);
      if (static_cast<size_t>(xend - x - 4) < len) break;
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* fend = f + len;
        auto take = [&](uint64_t* v) {
          if (*v != 0xFFFFFFFFu) return;
          if (fend - f < 8) zip_error(what, "zip64 extra field of " + z.name + " is too short");
          *v = le64(f);
          f += 8;
        };
        take(&z.size);
        take(&z.compressed_size);
        take(&z.local_header_offset);
      }
      x += 4 + len;
    }
    if (z.flags & 1) zip_error(what, "member " + z.name + " is encrypted (not supported)");
    out.push_back(std::move(z));
    p += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

const ZipEntry* zip_find(const std::vector<ZipEntry>& entries, const std::string& name) {
  for (const ZipEntry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

View zip_raw_member(const View& archive, const ZipEntry& entry, const std::string& what) {
  const uint64_t off = entry.local_header_offset;
  if (off > archive.size || archive.size - off < 30 || le32(archive.data + off) != kLocal)
    zip_error(what, "local header of member " + entry.name + " is missing or out of bounds");
  const uint8_t* local = archive.data + off;
  const size_t name_len = le16(local + 26);
  uint64_t start = off + 30 + name_len + le16(local + 28);
  if (start > archive.size)
    zip_error(what, "local header of member " + entry.name + " runs past the end of the file");
  // The local header repeats the central directory's name, method and (unless bit 3 defers them
  // to a data descriptor) CRC-32; a disagreement means one of the two copies is corrupt.
  const std::string local_name(reinterpret_cast<const char*>(local + 30), name_len);
  if (local_name != entry.name || le16(local + 8) != entry.method ||
      (!(le16(local + 6) & 8) && le32(local + 14) != entry.crc32))
    zip_error(what, "local header of member " + entry.name +
                        " disagrees with the central directory (name \"" + local_name +
                        "\", method " + std::to_string(le16(local + 8)) + ", CRC-32 " +
                        std::to_string(le32(local + 14)) + " vs method " +
                        std::to_string(entry.method) + ", CRC-32 " + std::to_string(entry.crc32) +
                        "; corrupt zip)");
  if (archive.size - start < entry.compressed_size)
    zip_error(what, "member " + entry.name + " expects " + std::to_string(entry.compressed_size) +
                        " compressed bytes beyond the end of the file (truncated zip?)");
  View v;
  v.owner = archive.owner;
  v.data = archive.data + start;
  v.size = static_cast<size_t>(entry.compressed_size);
  return v;
}

void inflate_raw(const uint8_t* data, size_t size, uint64_t expected, Sink& sink,
                 const std::string& what, uint32_t* crc_out) {
#if SPARSE_HAVE_ZLIB
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
    throw_error(SPARSE_ERR_OUT_OF_MEMORY, "file ", what, ": zlib could not initialise");
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  std::vector<uint8_t> buf(kChunk);
  uint64_t total = 0;
  uint32_t crc = crc32_update(0, nullptr, 0);
  size_t pos = 0;
  for (;;) {
    if (z.avail_in == 0 && pos < size) {
      size_t k = std::min(size - pos, size_t{1} << 30);
      z.next_in = const_cast<Bytef*>(data + pos);
      z.avail_in = static_cast<uInt>(k);
      pos += k;
    }
    z.next_out = buf.data();
    z.avail_out = static_cast<uInt>(buf.size());
    int rc = inflate(&z, Z_NO_FLUSH);
    size_t produced = buf.size() - z.avail_out;
    if (produced > expected - total)
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": inflates to more than the expected ",
                  expected, " bytes");
    total += produced;
    crc = crc32_update(crc, buf.data(), produced);
    sink.write(buf.data(), produced);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR && z.avail_in == 0 && pos >= size)
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": truncated deflate stream (expected ",
                  expected, " bytes, got ", total, ")");
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      throw_error(SPARSE_ERR_FORMAT, "file ", what,
                  ": corrupt deflate data (zlib: ", z.msg != nullptr ? z.msg : "error", ")");
  }
  if (total != expected)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": inflated to ", total, " bytes, expected ",
                expected);
  if (crc_out != nullptr) *crc_out = crc;
#else
  (void)data;
  (void)size;
  (void)expected;
  (void)sink;
  (void)crc_out;
  no_zlib(what);
#endif
}

View zip_member(const View& archive, const ZipEntry& entry, const std::string& what, Sink& sink,
                const std::function<BlobPtr()>& finish) {
  View raw = zip_raw_member(archive, entry, what);
  const std::string member = what + " (member " + entry.name + ")";
  if (entry.method == 0) {
    if (entry.compressed_size != entry.size)
      zip_error(member, "stored member has compressed size " +
                            std::to_string(entry.compressed_size) + " != size " +
                            std::to_string(entry.size));
    if (crc32_of(raw.data, raw.size) != entry.crc32)
      zip_error(member, "CRC-32 mismatch (corrupt zip member)");
    return raw;
  }
  if (entry.method != 8)
    zip_error(member, "compression method " + std::to_string(entry.method) +
                          " (expected 0 stored or 8 deflated)");
  uint32_t crc = 0;
  inflate_raw(raw.data, raw.size, entry.size, sink, member, &crc);
  if (crc != entry.crc32) zip_error(member, "CRC-32 mismatch (corrupt zip member)");
  return whole(finish());
}

}  // namespace sparse::data
