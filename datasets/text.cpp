// Byte-level text: enwik8 (the raw 100,000,000-byte file or enwik8.zip, inflated once into an
// unlinked temporary file and memory-mapped) and any raw byte file, also from a zip archive of
// one file or from gzip (inflated the same way). Other compressed formats and tar archives are
// refused, naming the command that unpacks them.
#include <algorithm>
#include <string>
#include <vector>

#include "datasets/archive.hpp"
#include "datasets/dataset.hpp"
#include "libsparse/error.hpp"

namespace sparse::data {
namespace {

constexpr uint64_t kEnwik8Bytes = 100000000;

class TextSource final : public Source {
 public:
  TextSource(View bytes, uint64_t begin, int64_t count, int64_t len)
      : bytes_(std::move(bytes)), begin_(begin), count_(count), len_(len) {}
  int64_t size() const override { return count_; }
  int64_t seq_len() const override { return len_; }
  void read(int64_t index, uint8_t* out) const override {
    const uint8_t* p =
        bytes_.data + begin_ + static_cast<uint64_t>(index) * static_cast<uint64_t>(len_);
    std::copy(p, p + len_, out);
  }

 private:
  View bytes_;
  uint64_t begin_;
  int64_t count_, len_;
};

bool is_zip(const BlobPtr& b) {
  return b->size() >= 4 && b->data()[0] == 'P' && b->data()[1] == 'K' &&
         ((b->data()[2] == 3 && b->data()[3] == 4) || (b->data()[2] == 5 && b->data()[3] == 6));
}

// The first bytes of a file for an error message, non-printable ones as '.'.
std::string head_of(const BlobPtr& b) {
  std::string s;
  for (size_t i = 0; i < std::min<size_t>(b->size(), 24); ++i) {
    const uint8_t c = b->data()[i];
    s += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '.';
  }
  return s;
}

// A compressed format (other than zip and gzip, which are read) whose signature starts the file.
struct CompressedFormat {
  const char* name;
  const char* decompress;  // the command that decompresses FILE
};

const CompressedFormat* compressed_format(const uint8_t* data, size_t size) {
  struct Magic {
    CompressedFormat format;
    const char* bytes;
    size_t n;
  };
  static const Magic kMagics[] = {{{"bzip2", "bunzip2 -k FILE"}, "BZh", 3},
                                  {{"xz", "unxz -k FILE"},
                                   "\xfd"
                                   "7zXZ\x00",
                                   6},
                                  {{"zstd", "unzstd FILE"}, "\x28\xb5\x2f\xfd", 4},
                                  {{"7-Zip", "7z x FILE"}, "7z\xbc\xaf\x27\x1c", 6}};
  for (const Magic& m : kMagics)
    if (size >= m.n && std::equal(data, data + m.n, reinterpret_cast<const uint8_t*>(m.bytes)))
      return &m.format;
  return nullptr;
}

const CompressedFormat* compressed_format(const BlobPtr& b) {
  return compressed_format(b->data(), b->size());
}

// The format of compressed data found inside a zip member or a gzip stream (gzip and zip
// included: read once, not layer after layer), or nullptr.
const CompressedFormat* inner_compressed_format(const uint8_t* data, size_t size) {
  static const CompressedFormat kGzip{"gzip", ""}, kZip{"zip", ""};
  if (is_gzip(data, size)) return &kGzip;
  if (size >= 4 && data[0] == 'P' && data[1] == 'K' && data[2] == 3 && data[3] == 4) return &kZip;
  return compressed_format(data, size);
}

std::string with_file(std::string command, const std::string& path) {
  return command.replace(command.find("FILE"), 4, path);
}

// A tar archive: "ustar" at byte 257 of its first header (POSIX and GNU).
bool is_tar(const View& v) {
  static const uint8_t kUstar[] = {'u', 's', 't', 'a', 'r'};
  return v.size >= 262 && std::equal(kUstar, kUstar + 5, v.data + 257);
}

}  // namespace

ByteRange text_split_range(uint64_t n, Split split) {
  // floor(0.9 n) and floor(0.95 n) in integers (n < 2^57 keeps 20 n exact).
  const uint64_t a = n / 10 * 9 + (n % 10) * 9 / 10;
  const uint64_t b = n / 20 * 19 + (n % 20) * 19 / 20;
  switch (split) {
    case Split::Train:
      return {0, a};
    case Split::Valid:
      return {a, b};
    case Split::Test:
      return {b, n};
  }
  return {0, 0};
}

SourcePtr open_text(const std::string& path, Split split, int64_t seq_len, bool enwik8) {
  require(seq_len >= 1, "seq_len = ", seq_len, " (expected >= 1)");
  BlobPtr blob = map_file(path);
  View bytes;
  std::string what = path;
  // A file named .zip, or one that starts with a zip signature, must be a zip archive (of one
  // file, which is the text); a gzip file is the text it inflates to; a file in another
  // compressed format or a tar archive is refused (training on the compressed bytes would go
  // unnoticed); any other file is the text's raw bytes.
  const bool zip_name = ends_with(lower(path), ".zip");
  if (zip_name && !is_zip(blob))
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": named .zip but not a zip archive (expected ",
                "the signature PK\\x03\\x04, found \"", head_of(blob), "\"",
                blob->size() == 0 ? ", an empty file" : "",
                "; a failed download? a raw text file must not be named .zip)");
  if (!is_zip(blob))
    if (const CompressedFormat* format = compressed_format(blob))
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": ", format->name,
                  "-compressed data, which is not read (text is read as raw bytes, from a zip "
                  "archive of one file or from gzip); decompress it first (",
                  with_file(format->decompress, path), ") and give the decompressed file");
  if (is_zip(blob)) {
    const View archive = whole(blob);
    const std::vector<ZipEntry> entries = zip_entries(archive.data, archive.size, path);
    // The text is the archive's one file: with several, reading one of them would silently leave
    // the others out.
    std::vector<const ZipEntry*> files;
    std::string names;
    for (const ZipEntry& e : entries)
      if (!e.name.empty() && e.name.back() != '/') {
        files.push_back(&e);
        names += (names.empty() ? "" : ", ") + e.name;
      }
    if (files.size() > 1)
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": a zip archive of ", files.size(), " files (",
                  names, "); expected exactly one",
                  enwik8 ? ", named enwik8" : " (extract the one to read)");
    const ZipEntry* entry = files.empty() ? nullptr : files[0];
    if (enwik8 && entry != nullptr && entry->name != "enwik8") entry = nullptr;
    if (entry == nullptr)
      throw_error(SPARSE_ERR_FORMAT, "file ", path,
                  enwik8 ? ": expected a zip member named enwik8"
                         : ": expected a zip archive with exactly one file",
                  names.empty() ? " (it holds no file)" : " (it holds " + names + ")");
    if (enwik8 && entry->size != kEnwik8Bytes)
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": member enwik8 has ", entry->size,
                  " bytes (expected 100000000)");
    TempFileSink sink(path + " (member " + entry->name + ")");
    bytes = zip_member(archive, *entry, path, sink, [&] { return sink.finish(); });
    what = path + " (member " + entry->name + ")";
  } else if (is_gzip(blob->data(), blob->size())) {
    // Inflated once into an unlinked temporary file; the trailers (CRC-32 and length of each
    // member) are checked on the way.
    what = path + " (inflated from gzip)";
    GzipStream gz(blob->data(), blob->size(), path);
    TempFileSink sink(what);
    std::vector<uint8_t> buffer(size_t{1} << 20);
    for (size_t n; (n = gz.read(buffer.data(), buffer.size())) > 0;) {
      sink.write(buffer.data(), n);
      if (enwik8 && sink.written() > kEnwik8Bytes)
        throw_error(SPARSE_ERR_FORMAT, "file ", path,
                    ": inflates to more than enwik8's 100000000 bytes");
    }
    bytes = whole(sink.finish());
  } else {
    bytes = whole(blob);
  }
  if (what != path)
    if (const CompressedFormat* format = inner_compressed_format(bytes.data, bytes.size))
      throw_error(SPARSE_ERR_FORMAT, "file ", what, ": ", format->name,
                  "-compressed data, which is not read (one layer of zip or gzip is read as the "
                  "text it holds); decompress it fully and give the text");
  if (is_tar(bytes))
    throw_error(SPARSE_ERR_FORMAT, "file ", what,
                ": a tar archive, not text (extract the file to read: tar -xf ", path, ")");
  if (bytes.size == 0)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": empty (expected text bytes)");
  if (enwik8 && bytes.size > kEnwik8Bytes)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": ", bytes.size,
                " bytes (expected at most enwik8's 100000000)");
  const ByteRange r = text_split_range(bytes.size, split);
  const int64_t count = static_cast<int64_t>((r.end - r.begin) / static_cast<uint64_t>(seq_len));
  if (count == 0)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": the ", split_name(split), " split has ",
                r.end - r.begin, " bytes, fewer than one sequence of ", seq_len);
  return std::make_unique<TextSource>(std::move(bytes), r.begin, count, seq_len);
}

}  // namespace sparse::data
