// Byte-level text: enwik8 (the raw 100,000,000-byte file or enwik8.zip, inflated once into an
// unlinked temporary file and memory-mapped) and any raw byte file.
#include <algorithm>

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
    const uint8_t* p = bytes_.data + begin_ + static_cast<uint64_t>(index) * static_cast<uint64_t>(len_);
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

// The name of a compressed format whose signature starts the file, or nullptr.
const char* compressed_format(const BlobPtr& b) {
  struct Magic {
    const char* name;
    const char* bytes;
    size_t n;
  };
  static const Magic kMagics[] = {{"gzip", "\x1f\x8b\x08", 3},
                                  {"bzip2", "BZh", 3},
                                  {"xz",
                                   "\xfd"
                                   "7zXZ\x00",
                                   6},
                                  {"zstd", "\x28\xb5\x2f\xfd", 4},
                                  {"7-Zip", "7z\xbc\xaf\x27\x1c", 6}};
  for (const Magic& m : kMagics)
    if (b->size() >= m.n &&
        std::equal(b->data(), b->data() + m.n, reinterpret_cast<const uint8_t*>(m.bytes)))
      return m.name;
  return nullptr;
}

}  // namespace

ByteRange text_split_range(uint64_t n, Split split) {
  // floor(0.9 n) and floor(0.95 n) in integers (n < 2^57 keeps 20 n exact).
  const uint64_t a = n / 10 * 9 + (n % 10) * 9 / 10;
  const uint64_t b = n / 20 * 19 + (n % 20) * 19 / 20;
  switch (split) {
    case Split::Train: return {0, a};
    case Split::Valid: return {a, b};
    case Split::Test: return {b, n};
  }
  return {0, 0};
}

SourcePtr open_text(const std::string& path, Split split, int64_t seq_len, bool enwik8) {
  require(seq_len >= 1, "seq_len = ", seq_len, " (expected >= 1)");
  BlobPtr blob = map_file(path);
  View bytes;
  std::string what = path;
  // A file named .zip, or one that starts with a zip signature, must be a zip archive; any other
  // file is raw bytes (for enwik8, not a file in another compressed format).
  const bool zip_name = ends_with(lower(path), ".zip");
  if (zip_name && !is_zip(blob))
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": named .zip but not a zip archive (expected ",
                "the signature PK\\x03\\x04, found \"", head_of(blob), "\"",
                blob->size() == 0 ? ", an empty file" : "",
                "; a failed download? a raw text file must not be named .zip)");
  if (enwik8 && !is_zip(blob))
    if (const char* format = compressed_format(blob))
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": ", format,
                  "-compressed data (expected enwik8 as raw text or as enwik8.zip)");
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
  } else {
    bytes = whole(blob);
  }
  if (bytes.size == 0) throw_error(SPARSE_ERR_FORMAT, "file ", what, ": empty (expected text bytes)");
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
