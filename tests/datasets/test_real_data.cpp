// The real samples in $SPARSE_DATA_DIR (default <source root>/../shared/data): CIFAR-10 labels and
// pixel order, the enwik8 prefix and its split by byte offsets, the Brahms recording's length.
// Exits 77 (meson: SKIP) when the folder is absent.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "datasets/dataset.hpp"
#include "sparse/sparse.h"

namespace {

std::string data_dir;

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

bool exists(const std::string& path) { return std::ifstream(path).good(); }

struct Handle {
  sparse_dataset* d = nullptr;
  Handle(sparse_dataset_kind kind, const std::string& path, sparse_split split, int64_t len) {
    sparse_dataset_desc desc;
    REQUIRE(sparse_dataset_desc_default(&desc, kind) == SPARSE_OK);
    desc.path = path.c_str();
    desc.split = split;
    if (len >= 0) desc.seq_len = len;
    const sparse_status s = sparse_dataset_open(&desc, &d);
    INFO(sparse_last_error());
    REQUIRE(s == SPARSE_OK);
  }
  ~Handle() { sparse_dataset_destroy(d); }
  int64_t size() const {
    int64_t n = 0;
    REQUIRE(sparse_dataset_num_sequences(d, &n) == SPARSE_OK);
    return n;
  }
  std::vector<uint8_t> seq(int64_t i, int64_t len) const {
    std::vector<uint8_t> v(static_cast<size_t>(len));
    REQUIRE(sparse_dataset_read(d, i, 1, SPARSE_TOKENS_U8, v.data(), v.size()) == SPARSE_OK);
    return v;
  }
};

}  // namespace

TEST_CASE("CIFAR-10 sample: labels and pixel order") {
  const std::string path = data_dir + "/cifar10/data_batch_1-first100.bin";
  if (!exists(path)) return;
  const std::vector<uint8_t> raw = slurp(path);
  REQUIRE(raw.size() == 307300);
  Handle h(SPARSE_DATASET_CIFAR10, path, SPARSE_SPLIT_TRAIN, -1);
  REQUIRE(h.size() == 100);
  const int expected[10] = {6, 9, 9, 4, 1, 1, 2, 7, 8, 3};
  for (int i = 0; i < 10; ++i) {
    int32_t label = -1;
    REQUIRE(sparse_dataset_label(h.d, i, &label) == SPARSE_OK);
    CHECK(label == expected[i]);
  }
  // Every pixel of every record round-trips: sequence (p, c) = plane c, pixel p.
  int64_t mismatches = 0;
  for (int r = 0; r < 100; ++r) {
    const std::vector<uint8_t> s = h.seq(r, 3072);
    for (int p = 0; p < 1024; ++p)
      for (int c = 0; c < 3; ++c)
        mismatches += s[static_cast<size_t>(p * 3 + c)] !=
                      raw[static_cast<size_t>(r * 3073 + 1 + c * 1024 + p)];
  }
  CHECK(mismatches == 0);
}

TEST_CASE("enwik8 sample: starts with <mediawiki, splits by byte offsets") {
  const std::string path = data_dir + "/enwik8/enwik8-head-100000";
  if (!exists(path)) return;
  const std::vector<uint8_t> raw = slurp(path);
  REQUIRE(raw.size() == 100000);
  // 100,000 bytes: train [0, 90000), valid [90000, 95000), test [95000, 100000).
  const int64_t len = 1000;
  Handle train(SPARSE_DATASET_ENWIK8, path, SPARSE_SPLIT_TRAIN, len);
  Handle valid(SPARSE_DATASET_ENWIK8, path, SPARSE_SPLIT_VALID, len);
  Handle test(SPARSE_DATASET_ENWIK8, path, SPARSE_SPLIT_TEST, len);
  CHECK(train.size() == 90);
  CHECK(valid.size() == 5);
  CHECK(test.size() == 5);
  const std::vector<uint8_t> first = train.seq(0, len);
  CHECK(std::string(first.begin(), first.begin() + 10) == "<mediawiki");
  CHECK(train.seq(89, len) == std::vector<uint8_t>(raw.begin() + 89000, raw.begin() + 90000));
  CHECK(valid.seq(0, len) == std::vector<uint8_t>(raw.begin() + 90000, raw.begin() + 91000));
  CHECK(test.seq(4, len) == std::vector<uint8_t>(raw.begin() + 99000, raw.end()));
}

TEST_CASE("Brahms recording: 45.8 s, about 45.8 x 12,000 mu-law bytes") {
  const std::string path = data_dir + "/audio/brahms-hungarian-dance-5-22k-mono.ogg";
  if (!exists(path)) return;
  if (!sparse::data::audio_supported()) {
    MESSAGE("built without libsndfile: skipped");
    return;
  }
  const sparse::data::DecodedAudio a = sparse::data::decode_audio_file(path, 12000);
  MESSAGE("decoded ", a.source_seconds, " s at ", a.source_rate, " Hz -> ", a.mulaw.size(),
          " mu-law bytes");
  CHECK(a.source_rate == 22050);
  CHECK(a.source_seconds == doctest::Approx(45.8).epsilon(0.002));
  CHECK(std::fabs(static_cast<double>(a.mulaw.size()) - a.source_seconds * 12000) <= 3.0);
  // Through the ABI: one file is all train; 12,000-sample sequences.
  Handle h(SPARSE_DATASET_AUDIO, data_dir + "/audio", SPARSE_SPLIT_TRAIN, 12000);
  CHECK(h.size() == static_cast<int64_t>(a.mulaw.size()) / 12000);
  CHECK(h.seq(1, 12000) == std::vector<uint8_t>(a.mulaw.begin() + 12000, a.mulaw.begin() + 24000));
  // The file alone is split in time: the test split is the recording's last tenth.
  const size_t tenth = a.mulaw.size() / 10;
  Handle test(SPARSE_DATASET_AUDIO, path, SPARSE_SPLIT_TEST, 12000);
  CHECK(test.size() == static_cast<int64_t>(tenth / 12000));
  const auto test_start = static_cast<std::ptrdiff_t>(a.mulaw.size() - tenth);
  CHECK(test.seq(0, 12000) ==
        std::vector<uint8_t>(a.mulaw.begin() + test_start, a.mulaw.begin() + test_start + 12000));
  // Music is not silence: the codes spread over many levels.
  int levels[256] = {};
  for (uint8_t q : a.mulaw) levels[q] = 1;
  int used = 0;
  for (int l : levels) used += l;
  CHECK(used > 100);
}

int main(int argc, char** argv) {
  if (const char* env = std::getenv("SPARSE_DATA_DIR"); env != nullptr && *env != '\0') {
    data_dir = env;
  } else {
    const char* root = std::getenv("SPARSE_SOURCE_ROOT");
    data_dir = std::string(root != nullptr && *root ? root : ".") + "/../shared/data";
  }
  if (!exists(data_dir + "/README.md") &&
      !exists(data_dir + "/cifar10/data_batch_1-first100.bin")) {
    std::printf("SKIP: no real data samples at %s (set SPARSE_DATA_DIR)\n", data_dir.c_str());
    return 77;
  }
  std::printf("real data samples: %s\n", data_dir.c_str());
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
