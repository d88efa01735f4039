// Byte storage for the dataset readers: read-only memory maps of files, unlinked temporary files
// that decompressed archive members are written to (then mapped, so a 100 MB Enwik8 or a
// multi-gigabyte ImageNet batch is never held in process memory), and small in-memory sinks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sparse::data {

// A read-only byte region that owns its storage (a memory map or a vector).
class Blob {
 public:
  virtual ~Blob() = default;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 protected:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};
using BlobPtr = std::shared_ptr<const Blob>;

// A window into a blob that keeps the blob alive.
struct View {
  BlobPtr owner;
  const uint8_t* data = nullptr;
  size_t size = 0;
};

View whole(BlobPtr blob);

// Maps `path` read-only. Errors: SPARSE_ERR_IO naming the file.
BlobPtr map_file(const std::string& path);
BlobPtr blob_from_vector(std::vector<uint8_t> bytes);

// Where decompressed bytes go.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(const uint8_t* bytes, size_t n) = 0;
  virtual uint64_t written() const = 0;
};

class VectorSink final : public Sink {
 public:
  explicit VectorSink(uint64_t limit = UINT64_MAX) : limit_(limit) {}
  void write(const uint8_t* bytes, size_t n) override;
  uint64_t written() const override { return bytes_.size(); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
  uint64_t limit_;
};

// Writes to an unlinked file in $TMPDIR (or /tmp); finish() maps it and returns the blob.
class TempFileSink final : public Sink {
 public:
  explicit TempFileSink(std::string what);
  ~TempFileSink() override;
  TempFileSink(const TempFileSink&) = delete;
  TempFileSink& operator=(const TempFileSink&) = delete;
  void write(const uint8_t* bytes, size_t n) override;
  uint64_t written() const override { return written_; }
  BlobPtr finish();

 private:
  std::string what_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
// Regular files directly inside `dir` (names only, sorted). Errors: SPARSE_ERR_IO.
std::vector<std::string> list_files(const std::string& dir);
std::string basename_of(const std::string& path);
std::string join_path(const std::string& dir, const std::string& name);
std::string lower(std::string s);
bool ends_with(const std::string& s, const std::string& suffix);

inline uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t le64(const uint8_t* p) {
  return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32);
}

}  // namespace sparse::data
