// CIFAR-10 binary version: cifar-10-binary.tar.gz read in place, an extracted folder, or one file
// of records. Each record is 1 label byte and 3072 pixel bytes (1024 R, 1024 G, 1024 B planes,
// row-major); a sequence is the image in raster order with the channel innermost.
#include <algorithm>
#include <map>

#include "datasets/archive.hpp"
#include "datasets/dataset.hpp"
#include "libsparse/error.hpp"

namespace sparse::data {
namespace {

constexpr int64_t kPixels = 1024;
constexpr int64_t kMaxRecordsPerBatch = 10000;

struct RecordFile {
  View bytes;
  std::string name;
  int64_t records = 0;
};

// Validates the size (a non-zero multiple of 3073, at most 10,000 records in a canonical batch)
// and every label (0..9).
RecordFile validate(View bytes, const std::string& name, bool canonical) {
  RecordFile f;
  f.name = name;
  if (bytes.size == 0 || bytes.size % kCifarRecord != 0)
    throw_error(SPARSE_ERR_FORMAT, "file ", name, ": ", bytes.size,
                " bytes (expected a non-zero multiple of the 3073-byte CIFAR-10 record: 1 label "
                "byte + 3072 pixel bytes)");
  f.records = static_cast<int64_t>(bytes.size / kCifarRecord);
  if (canonical && f.records > kMaxRecordsPerBatch)
    throw_error(SPARSE_ERR_FORMAT, "file ", name, ": ", f.records,
                " records (expected at most 10000 per CIFAR-10 batch file)");
  for (int64_t r = 0; r < f.records; ++r) {
    uint8_t label = bytes.data[r * kCifarRecord];
    if (label > 9)
      throw_error(SPARSE_ERR_FORMAT, "file ", name, ": record ", r, " has label ", int(label),
                  " (expected 0..9; not CIFAR-10 binary data?)");
  }
  f.bytes = std::move(bytes);
  return f;
}

class CifarSource final : public Source {
 public:
  CifarSource(std::vector<RecordFile> files, int64_t begin, int64_t count)
      : files_(std::move(files)), begin_(begin), count_(count) {
    int64_t acc = 0;
    for (const RecordFile& f : files_) {
      starts_.push_back(acc);
      acc += f.records;
    }
  }
  int64_t size() const override { return count_; }
  int64_t seq_len() const override { return kPixels * 3; }
  void read(int64_t index, uint8_t* out) const override {
    const uint8_t* rec = record(index);
    for (int64_t p = 0; p < kPixels; ++p)
      for (int64_t c = 0; c < 3; ++c) out[p * 3 + c] = rec[1 + c * kPixels + p];
  }
  int32_t label(int64_t index) const override { return record(index)[0]; }

 private:
  const uint8_t* record(int64_t index) const {
    const int64_t r = begin_ + index;
    size_t f =
        static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), r) - starts_.begin()) -
        1;
    return files_[f].bytes.data + (r - starts_[f]) * kCifarRecord;
  }
  std::vector<RecordFile> files_;
  std::vector<int64_t> starts_;
  int64_t begin_, count_;
};

std::vector<std::string> needed_names(Split split) {
  if (split == Split::Test) return {"test_batch.bin"};
  return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
          "data_batch_5.bin"};
}

SourcePtr make_split(std::vector<RecordFile> files, Split split, const std::string& path) {
  int64_t total = 0;
  for (const RecordFile& f : files) total += f.records;
  if (split == Split::Test) return std::make_unique<CifarSource>(std::move(files), 0, total);
  const int64_t valid = (total * 4 + 50) / 100;  // round(4%): 2,000 of 50,000
  if (split == Split::Valid) {
    if (valid == 0)
      throw_error(SPARSE_ERR_FORMAT, "CIFAR-10 ", path, ": ", total,
                  " training records leave an empty validation split (expected at least 13)");
    return std::make_unique<CifarSource>(std::move(files), total - valid, valid);
  }
  return std::make_unique<CifarSource>(std::move(files), 0, total - valid);
}

SourcePtr from_archive(const std::string& path, BlobPtr blob, Split split) {
  const std::vector<std::string> names = needed_names(split);
  std::map<std::string, std::unique_ptr<TempFileSink>> sinks;
  std::map<std::string, std::string> member_of;  // base name -> the member read for it
  auto select = [&](const TarMember& m) -> Sink* {
    const std::string base = basename_of(m.name);
    if (std::find(names.begin(), names.end(), base) == names.end()) return nullptr;
    // Two members of one name (in two folders, or appended): reading either would silently
    // leave the other out.
    if (const auto seen = member_of.find(base); seen != member_of.end())
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": two members named ", base, " (",
                  seen->second, " and ", m.name, "); expected one");
    member_of[base] = m.name;
    auto sink = std::make_unique<TempFileSink>(path + " (member " + m.name + ")");
    Sink* raw = sink.get();
    sinks[base] = std::move(sink);
    return raw;
  };
  if (is_gzip(blob->data(), blob->size())) {
    GzipStream gz(blob->data(), blob->size(), path);
    tar_extract(gz, path, select);
  } else {
    MemoryStream plain(blob->data(), blob->size());
    tar_extract(plain, path, select);
  }
  blob.reset();  // the compressed archive is no longer needed
  std::vector<RecordFile> files;
  for (const std::string& name : names) {
    auto it = sinks.find(name);
    if (it == sinks.end())
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": expected a member ", name,
                  " (cifar-10-binary.tar.gz holds cifar-10-batches-bin/data_batch_1..5.bin and "
                  "test_batch.bin)");
    files.push_back(validate(whole(it->second->finish()), path + " (member " + name + ")", true));
  }
  return make_split(std::move(files), split, path);
}

SourcePtr from_folder(const std::string& path, Split split) {
  std::vector<RecordFile> files;
  for (const std::string& name : needed_names(split)) {
    std::string file = join_path(path, name);
    if (!is_regular_file(file)) {
      std::string nested = join_path(join_path(path, "cifar-10-batches-bin"), name);
      if (!is_regular_file(nested))
        throw_error(SPARSE_ERR_IO, "folder ", path, ": expected the file ", name,
                    " (the extracted CIFAR-10 binary version)");
      file = nested;
    }
    files.push_back(validate(whole(map_file(file)), file, true));
  }
  return make_split(std::move(files), split, path);
}

bool looks_like_tar(const std::string& path, const BlobPtr& blob) {
  const std::string l = lower(path);
  if (ends_with(l, ".tar") || ends_with(l, ".tar.gz") || ends_with(l, ".tgz")) return true;
  return blob->size() >= 262 && std::equal(blob->data() + 257, blob->data() + 262, "ustar");
}

}  // namespace

SourcePtr open_cifar10(const std::string& path, Split split) {
  if (is_directory(path)) return from_folder(path, split);
  BlobPtr blob = map_file(path);
  if (is_gzip(blob->data(), blob->size()) || looks_like_tar(path, blob))
    return from_archive(path, std::move(blob), split);
  if (split != Split::Train)
    throw_error(SPARSE_ERR_INVALID_ARGUMENT, "file ", path,
                ": a single CIFAR-10 record file is a custom set with a train split only (",
                "expected the archive or the extracted folder for the ", split_name(split),
                " split)");
  std::vector<RecordFile> files;
  files.push_back(validate(whole(blob), path, false));
  const int64_t n = files[0].records;
  return std::make_unique<CifarSource>(std::move(files), 0, n);
}

}  // namespace sparse::data
