// Downsampled ImageNet 64x64 (Chrabaszcz, Loshchilov and Hutter, 2017), npz version: each batch
// is a zip of .npy arrays, `data` (N x 12288 uint8: the 64x64 R plane, then G, then B) and
// `labels` (N integers, 1..1000). Stored members are used in place inside the mapped file;
// deflated ones are inflated once into an unlinked temporary file and mapped.
#include <algorithm>
#include <cstdlib>

#include "datasets/archive.hpp"
#include "datasets/dataset.hpp"
#include "datasets/npy.hpp"
#include "libsparse/error.hpp"

namespace sparse::data {
namespace {

constexpr int64_t kPlane = 64 * 64;

struct Batch {
  View data;
  NpyArray data_hdr;
  View labels;
  NpyArray labels_hdr;
  bool has_labels = false;
  int64_t n = 0;
};

std::string shape_string(const NpyArray& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(a.shape[i]);
  return s + (a.shape.size() == 1 ? ",)" : ")");
}

Batch load_npz(const std::string& path) {
  const View archive = whole(map_file(path));
  const std::vector<ZipEntry> entries = zip_entries(archive.data, archive.size, path);
  Batch b;
  const ZipEntry* data = zip_find(entries, "data.npy");
  if (data == nullptr)
    throw_error(SPARSE_ERR_FORMAT, "file ", path,
                ": expected an array 'data' (zip member data.npy) in the npz");
  {
    TempFileSink sink(path + " (data.npy)");
    b.data = zip_member(archive, *data, path, sink, [&] { return sink.finish(); });
  }
  const std::string what = path + " (data.npy)";
  b.data_hdr = parse_npy(b.data.data, b.data.size, what);
  const NpyArray& h = b.data_hdr;
  const bool flat = h.shape.size() == 2 && h.shape[1] == static_cast<uint64_t>(kImagenet64Dims);
  const bool planes =
      h.shape.size() == 4 && h.shape[1] == 3 && h.shape[2] == 64 && h.shape[3] == 64;
  if (h.kind != 'u' || h.item_size != 1 || h.fortran_order || !(flat || planes) || h.shape[0] == 0)
    throw_error(SPARSE_ERR_FORMAT, "file ", what, ": array of shape ", shape_string(h), " kind '",
                h.kind, h.item_size, "'", h.fortran_order ? " in Fortran order" : "",
                " (expected C-order uint8 of shape (N, 12288) or (N, 3, 64, 64), N >= 1)");
  b.n = static_cast<int64_t>(h.shape[0]);
  if (const ZipEntry* labels = zip_find(entries, "labels.npy")) {
    VectorSink sink(uint64_t{1} << 31);
    b.labels = zip_member(archive, *labels, path, sink,
                          [&] { return blob_from_vector(std::move(sink.bytes())); });
    const std::string lwhat = path + " (labels.npy)";
    b.labels_hdr = parse_npy(b.labels.data, b.labels.size, lwhat);
    const NpyArray& l = b.labels_hdr;
    if ((l.kind != 'i' && l.kind != 'u') || l.count != h.shape[0] || l.shape.empty() ||
        l.shape[0] != h.shape[0])
      throw_error(SPARSE_ERR_FORMAT, "file ", lwhat, ": array of shape ", shape_string(l),
                  " (expected ", h.shape[0], " integer labels, one per image)");
    b.has_labels = true;
  }
  return b;
}

class ImagenetSource final : public Source {
 public:
  explicit ImagenetSource(std::vector<Batch> batches) : batches_(std::move(batches)) {
    for (const Batch& b : batches_) {
      starts_.push_back(total_);
      total_ += b.n;
    }
  }
  int64_t size() const override { return total_; }
  int64_t seq_len() const override { return kImagenet64Dims; }
  void read(int64_t index, uint8_t* out) const override {
    int64_t i = 0;
    const Batch& b = locate(index, &i);
    const uint8_t* img = b.data.data + b.data_hdr.data_offset + i * kImagenet64Dims;
    for (int64_t p = 0; p < kPlane; ++p)
      for (int64_t c = 0; c < 3; ++c) out[p * 3 + c] = img[c * kPlane + p];
  }
  int32_t label(int64_t index) const override {
    int64_t i = 0;
    const Batch& b = locate(index, &i);
    if (!b.has_labels) return -1;
    return static_cast<int32_t>(npy_integer(b.labels_hdr, b.labels.data, static_cast<uint64_t>(i)));
  }

 private:
  const Batch& locate(int64_t index, int64_t* within) const {
    size_t k = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), index) -
                                   starts_.begin()) -
               1;
    *within = index - starts_[k];
    return batches_[k];
  }
  std::vector<Batch> batches_;
  std::vector<int64_t> starts_;
  int64_t total_ = 0;
};

// The batch number of "train_data_batch_<k>.npz", or 0 for other names.
long train_batch_number(const std::string& name) {
  const std::string prefix = "train_data_batch_";
  if (name.compare(0, prefix.size(), prefix) != 0 || !ends_with(name, ".npz")) return 0;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - 4);
  if (digits.empty() || digits.size() > 6 ||
      digits.find_first_not_of("0123456789") != std::string::npos)
    return 0;
  return std::strtol(digits.c_str(), nullptr, 10);
}

}  // namespace

SourcePtr open_imagenet64(const std::string& path, Split split) {
  std::vector<Batch> batches;
  if (!is_directory(path)) {
    if (split != Split::Train)
      throw_error(SPARSE_ERR_INVALID_ARGUMENT, "file ", path,
                  ": a single npz file is a custom set with a train split only (expected the "
                  "folder of batches for the ",
                  split_name(split), " split)");
    batches.push_back(load_npz(path));
    return std::make_unique<ImagenetSource>(std::move(batches));
  }
  if (split == Split::Valid)
    throw_error(SPARSE_ERR_INVALID_ARGUMENT, "folder ", path,
                ": ImageNet 64x64 has no validation split (the official validation file "
                "val_data.npz is the test split)");
  std::vector<std::string> files = list_files(path);
  if (split == Split::Test) {
    if (std::find(files.begin(), files.end(), "val_data.npz") == files.end())
      throw_error(SPARSE_ERR_IO, "folder ", path,
                  ": expected val_data.npz (the downsampled ImageNet 64x64 validation file)");
    batches.push_back(load_npz(join_path(path, "val_data.npz")));
  } else {
    std::vector<std::pair<long, std::string>> train;
    for (const std::string& f : files)
      if (long k = train_batch_number(f)) train.emplace_back(k, f);
    if (train.empty())
      throw_error(SPARSE_ERR_IO, "folder ", path,
                  ": expected train_data_batch_<k>.npz files (downsampled ImageNet 64x64)");
    std::sort(train.begin(), train.end());
    for (const auto& t : train) batches.push_back(load_npz(join_path(path, t.second)));
  }
  return std::make_unique<ImagenetSource>(std::move(batches));
}

}  // namespace sparse::data
