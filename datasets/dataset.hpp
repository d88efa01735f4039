// Datasets as fixed-length token sequences, and the seeded shuffling/batching over them.
//
// A Source serves `size()` sequences of `seq_len()` tokens in [0, vocab()); reading one never
// touches more than that sequence's bytes (the data stays memory-mapped). Readers:
//   open_cifar10      cifar-10-binary.tar.gz, an extracted folder, or one file of records
//   open_text         enwik8 (raw file or enwik8.zip) and any raw byte file
//   open_imagenet64   downsampled ImageNet 64x64 npz batches (folder or one .npz)
//   open_audio        a folder of recordings (libsndfile + libsamplerate), 12 kHz 8-bit mu-law
//   synthetic_image / synthetic_text   processes with exactly known entropy (synthetic.hpp)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sparse::data {

enum class Split { Train = 0, Valid = 1, Test = 2 };
const char* split_name(Split s);

struct Entropy {
  double bits_per_dim = 0;      // mean over all tokens of H(x_t | x_<t), the process's exact
                                // conditional entropy at the contexts that occurred
  double nll_bits_per_dim = 0;  // mean of -log2 p(x_t | x_<t) of the tokens that were drawn
};

class Source {
 public:
  virtual ~Source() = default;
  virtual int64_t size() const = 0;
  virtual int64_t seq_len() const = 0;
  virtual int32_t vocab() const { return 256; }
  // Writes sequence `index` (0 <= index < size()) as seq_len() tokens.
  virtual void read(int64_t index, uint8_t* out) const = 0;
  // Class label of sequence `index`, or -1 where the dataset has none.
  virtual int32_t label(int64_t) const { return -1; }
  virtual std::optional<Entropy> entropy() const { return std::nullopt; }
};
using SourcePtr = std::unique_ptr<Source>;

// CIFAR-10: 32x32x3 images as 3072 tokens in raster order, channel innermost.
// Split rule: the training records (data_batch_1..5, in order) are split into train = all but
// the last round(4% of them) and valid = that last 4% (48,000 / 2,000 for the real 50,000);
// test = test_batch. A single record file (any name) is a custom set served as train only.
constexpr int64_t kCifarRecord = 3073;
SourcePtr open_cifar10(const std::string& path, Split split);

// Byte-level text. Split rule: train = bytes [0, floor(0.9 n)), valid = [floor(0.9 n),
// floor(0.95 n)), test = [floor(0.95 n), n), i.e. 90M / 5M / 5M for enwik8's 100,000,000 bytes.
// Sequences are the consecutive non-overlapping windows of seq_len bytes of the split (a
// trailing partial window is dropped). `enwik8` additionally requires at most 100,000,000 bytes
// and, for a .zip, the member "enwik8".
SourcePtr open_text(const std::string& path, Split split, int64_t seq_len, bool enwik8);
struct ByteRange {
  uint64_t begin = 0, end = 0;
};
ByteRange text_split_range(uint64_t n, Split split);

// ImageNet 64x64 (Chrabaszcz et al. 2017 npz batches): 12288 tokens per image, raster order,
// channel innermost. train = train_data_batch_*.npz (numeric order), test = val_data.npz; there
// is no validation split. A single .npz path is a custom set served as train only.
constexpr int64_t kImagenet64Dims = 64 * 64 * 3;
SourcePtr open_imagenet64(const std::string& path, Split split);

// Audio: see audio.cpp for the pipeline and the split rule.
struct AudioOptions {
  int64_t seq_len = 0;
  int32_t sample_rate = 12000;
  double valid_fraction = 0.1;
  double test_fraction = 0.1;
};
SourcePtr open_audio(const std::string& path, Split split, const AudioOptions& options);
// One recording decoded, mixed to mono, resampled to `sample_rate` and mu-law encoded.
struct DecodedAudio {
  std::vector<uint8_t> mulaw;
  double source_seconds = 0;
  int32_t source_rate = 0;
  int32_t source_channels = 0;
};
DecodedAudio decode_audio_file(const std::string& path, int32_t sample_rate);
bool audio_supported();

// 8-bit mu-law (mu = 255) on [-1, 1]: q = round((F(x) + 1) / 2 * 255), F(x) = sign(x)
// ln(1 + 255 |x|) / ln 256; the inverse maps q back to the centre value of its level.
uint8_t mulaw_encode(float x);
float mulaw_decode(uint8_t q);

// Seeded shuffling and batching. Epoch e visits every sequence once in the order of a
// Fisher-Yates permutation drawn from splitmix64(seed, e) (or in index order without shuffling).
class Loader {
 public:
  Loader(const Source& source, uint64_t seed, bool shuffle);
  // The next sequence index, moving to the next epoch after the last one.
  int64_t next();
  void seek(uint64_t epoch, int64_t position);
  uint64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  const std::vector<int64_t>& order() const { return order_; }

 private:
  void build_order();
  const Source& source_;
  uint64_t seed_;
  bool shuffle_;
  uint64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> order_;
};

// The permutation of [0, n) used for epoch `epoch` under `seed` (exposed for tests).
std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, uint64_t epoch);

}  // namespace sparse::data
