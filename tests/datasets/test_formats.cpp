// Readers on files in the real formats written by Python's own tarfile, gzip, zipfile and wave
// modules (make_fixtures.py), including damaged files. Expected contents come from the closed-form
// rules in make_fixtures.py, recomputed here.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "datasets/dataset.hpp"
#include "sparse/sparse.h"
#include "sparse_config.h"

#if SPARSE_HAVE_SNDFILE
#include <sndfile.h>
#endif

namespace {

std::string fixtures;

std::string fx(const std::string& rel) { return fixtures + "/" + rel; }

struct Opened {
  sparse_dataset* d = nullptr;
  sparse_status status = SPARSE_OK;
  std::string error;
  Opened(sparse_dataset_kind kind, const std::string& path, sparse_split split,
         int64_t seq_len = -1) {
    sparse_dataset_desc desc;
    REQUIRE(sparse_dataset_desc_default(&desc, kind) == SPARSE_OK);
    desc.path = path.c_str();
    desc.split = split;
    desc.shuffle = 0;
    if (seq_len >= 0) desc.seq_len = seq_len;
    status = sparse_dataset_open(&desc, &d);
    error = sparse_last_error();
  }
  ~Opened() { sparse_dataset_destroy(d); }
  int64_t size() const {
    int64_t n = -1;
    REQUIRE(sparse_dataset_num_sequences(d, &n) == SPARSE_OK);
    return n;
  }
  std::vector<uint8_t> seq(int64_t i) const {
    int64_t len = 0;
    REQUIRE(sparse_dataset_seq_len(d, &len) == SPARSE_OK);
    std::vector<uint8_t> v(static_cast<size_t>(len));
    REQUIRE(sparse_dataset_read(d, i, 1, SPARSE_TOKENS_U8, v.data(), v.size()) == SPARSE_OK);
    return v;
  }
  int32_t label(int64_t i) const {
    int32_t l = -2;
    REQUIRE(sparse_dataset_label(d, i, &l) == SPARSE_OK);
    return l;
  }
};

// Opening must fail with `status` and a message containing each of `needles`.
void expect_error(sparse_dataset_kind kind, const std::string& path, sparse_split split,
                  sparse_status status, std::vector<std::string> needles, int64_t seq_len = -1) {
  Opened o(kind, path, split, seq_len);
  INFO(path, ": ", o.error);
  CHECK(o.status == status);
  CHECK(o.d == nullptr);
  for (const std::string& n : needles) CHECK(o.error.find(n) != std::string::npos);
}

// CIFAR fixture record g: plane byte (c, p) and label.
int cifar_pixel(int g, int c, int p) { return (g * 31 + c * 101 + p * 7) % 256; }
int cifar_label(int g) { return (7 * g + 3) % 10; }

void check_cifar_image(const Opened& o, int64_t index, int g) {
  const std::vector<uint8_t> s = o.seq(index);
  REQUIRE(s.size() == 3072);
  bool ok = true;
  for (int p = 0; p < 1024; ++p)
    for (int c = 0; c < 3; ++c)
      ok = ok && s[static_cast<size_t>(p * 3 + c)] == cifar_pixel(g, c, p);
  CHECK(ok);
  CHECK(o.label(index) == cifar_label(g));
}

}  // namespace

TEST_CASE("CIFAR-10 from tar.gz, plain tar and folder: split rule, order and labels") {
  for (const char* path : {"cifar/cifar-10-binary.tar.gz", "cifar/plain.tar", "cifar/folder"}) {
    INFO(path);
    // 50 training records: valid = last round(4%) = 2, train = 48; test = 7.
    Opened train(SPARSE_DATASET_CIFAR10, fx(path), SPARSE_SPLIT_TRAIN);
    REQUIRE(train.status == SPARSE_OK);
    CHECK(train.size() == 48);
    for (int g : {0, 9, 10, 23, 47}) check_cifar_image(train, g, g);
    Opened valid(SPARSE_DATASET_CIFAR10, fx(path), SPARSE_SPLIT_VALID);
    REQUIRE(valid.status == SPARSE_OK);
    CHECK(valid.size() == 2);
    check_cifar_image(valid, 0, 48);
    check_cifar_image(valid, 1, 49);
    Opened test(SPARSE_DATASET_CIFAR10, fx(path), SPARSE_SPLIT_TEST);
    REQUIRE(test.status == SPARSE_OK);
    CHECK(test.size() == 7);
    for (int i = 0; i < 7; ++i) check_cifar_image(test, i, 1000 + i);
  }
}

TEST_CASE("CIFAR-10: damaged inputs") {
  const auto F = SPARSE_ERR_FORMAT;
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/truncated.tar.gz"), SPARSE_SPLIT_TRAIN, F,
               {"truncated.tar.gz", "truncated"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/corrupt.tar.gz"), SPARSE_SPLIT_TRAIN, F,
               {"corrupt.tar.gz"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/not-gzip.tar.gz"), SPARSE_SPLIT_TRAIN, F,
               {"not-gzip.tar.gz", "gzip"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/short-record.tar.gz"), SPARSE_SPLIT_TRAIN, F,
               {"data_batch_3.bin", "multiple of the 3073-byte"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/bad-label.tar.gz"), SPARSE_SPLIT_VALID, F,
               {"data_batch_2.bin", "record 0 has label 11", "expected 0..9"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/two-batch1.tar.gz"), SPARSE_SPLIT_TRAIN, F,
               {"two-batch1.tar.gz", "cifar-10-batches-bin/data_batch_1.bin",
                "cifar-10-batches-bin/copy/data_batch_1.bin"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/missing-member.tar.gz"), SPARSE_SPLIT_TRAIN, F,
               {"missing-member.tar.gz", "data_batch_4.bin"});
  // The test split does not need the missing member.
  Opened test(SPARSE_DATASET_CIFAR10, fx("cifar/missing-member.tar.gz"), SPARSE_SPLIT_TEST);
  CHECK(test.status == SPARSE_OK);
  // The gzip trailers (CRC-32 and length of each member) are verified even though the tar
  // archive ends (end-of-archive blocks) before them. make_fixtures.py checks each file with
  // Python's gzip module and `gzip -t`.
  for (sparse_split split : {SPARSE_SPLIT_TRAIN, SPARSE_SPLIT_TEST}) {
    expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/bad-crc.tar.gz"), split, F,
                 {"bad-crc.tar.gz", "CRC-32", "gzip trailer"});
    expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/bad-isize.tar.gz"), split, F,
                 {"bad-isize.tar.gz", "ISIZE"});
    expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/no-trailer.tar.gz"), split, F,
                 {"no-trailer.tar.gz", "truncated gzip"});
    expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/cut-trailer.tar.gz"), split, F,
                 {"cut-trailer.tar.gz", "truncated gzip"});
    expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/two-members-bad-crc1.tar.gz"), split, F,
                 {"two-members-bad-crc1.tar.gz", "CRC-32"});
    expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/two-members-bad-crc2.tar.gz"), split, F,
                 {"two-members-bad-crc2.tar.gz", "CRC-32"});
  }
  {
    Opened two(SPARSE_DATASET_CIFAR10, fx("cifar/two-members.tar.gz"), SPARSE_SPLIT_TRAIN);
    INFO(two.error);
    REQUIRE(two.status == SPARSE_OK);
    CHECK(two.size() == 48);
    for (int g : {0, 25, 47}) check_cifar_image(two, g, g);
  }
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/garbage.tar"), SPARSE_SPLIT_TRAIN, F,
               {"garbage.tar", "checksum"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/oversized"), SPARSE_SPLIT_TRAIN, F,
               {"data_batch_5.bin", "10001 records", "at most 10000"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("cifar/nowhere"), SPARSE_SPLIT_TRAIN, SPARSE_ERR_IO,
               {"nowhere"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("imagenet-empty"), SPARSE_SPLIT_TRAIN, SPARSE_ERR_IO,
               {"imagenet-empty", "data_batch_1.bin"});
  // A single record file (here one batch) is a train-only custom set.
  const std::string single = fx("cifar/folder/cifar-10-batches-bin/data_batch_2.bin");
  Opened one(SPARSE_DATASET_CIFAR10, single, SPARSE_SPLIT_TRAIN);
  REQUIRE(one.status == SPARSE_OK);
  CHECK(one.size() == 10);
  check_cifar_image(one, 3, 13);
  expect_error(SPARSE_DATASET_CIFAR10, single, SPARSE_SPLIT_TEST, SPARSE_ERR_INVALID_ARGUMENT,
               {"data_batch_2.bin", "train split only"});
  expect_error(SPARSE_DATASET_CIFAR10, fx("text/text.bin"), SPARSE_SPLIT_TRAIN, F,
               {"text.bin", "1019 bytes", "3073"});
}

TEST_CASE("text: split rule and windows") {
  // n = 1019: train [0, 917), valid [917, 968), test [968, 1019).
  auto byte = [](int64_t i) { return static_cast<uint8_t>((i * 7 + i / 13) % 256); };
  struct Case {
    sparse_split split;
    int64_t begin, end;
  } cases[] = {
      {SPARSE_SPLIT_TRAIN, 0, 917}, {SPARSE_SPLIT_VALID, 917, 968}, {SPARSE_SPLIT_TEST, 968, 1019}};
  for (const Case& c : cases) {
    for (const char* path :
         {"text/text.bin", "text/one-member.zip", "text/text.bin.gz", "text/two-members.bin.gz"}) {
#if !SPARSE_HAVE_ZLIB
      if (std::string(path).find(".gz") != std::string::npos) continue;
#endif
      INFO(path, " split ", int(c.split));
      Opened o(SPARSE_DATASET_TEXT, fx(path), c.split, 10);
      REQUIRE(o.status == SPARSE_OK);
      CHECK(o.size() == (c.end - c.begin) / 10);
      for (int64_t s : {int64_t{0}, o.size() - 1}) {
        const std::vector<uint8_t> v = o.seq(s);
        bool ok = true;
        for (int64_t t = 0; t < 10; ++t)
          ok = ok && v[static_cast<size_t>(t)] == byte(c.begin + s * 10 + t);
        CHECK(ok);
      }
    }
  }
  expect_error(SPARSE_DATASET_TEXT, fx("text/text.bin"), SPARSE_SPLIT_VALID, SPARSE_ERR_FORMAT,
               {"text.bin", "valid split has 51 bytes", "100"}, 100);
  expect_error(SPARSE_DATASET_TEXT, fx("text/empty.bin"), SPARSE_SPLIT_TRAIN, SPARSE_ERR_FORMAT,
               {"empty.bin", "empty"});
  expect_error(SPARSE_DATASET_TEXT, fx("text/text.bin"), SPARSE_SPLIT_TRAIN,
               SPARSE_ERR_INVALID_ARGUMENT, {"seq_len"}, 0);
}

TEST_CASE("enwik8: zip of the real size, 90M / 5M / 5M") {
  // Byte i of the fixture is (i / 1,000,000) % 256.
  struct Case {
    sparse_split split;
    int64_t count;
    uint8_t first, last;
  } cases[] = {{SPARSE_SPLIT_TRAIN, 90000000 / 12288, 0, 89},
               {SPARSE_SPLIT_VALID, 5000000 / 12288, 90, 94},
               {SPARSE_SPLIT_TEST, 5000000 / 12288, 95, 99}};
  for (const Case& c : cases) {
    Opened o(SPARSE_DATASET_ENWIK8, fx("text/enwik8.zip"), c.split);
    INFO(o.error);
    REQUIRE(o.status == SPARSE_OK);
    CHECK(o.size() == c.count);
    CHECK(o.seq(0).front() == c.first);
    CHECK(o.seq(o.size() - 1).back() == (c.split == SPARSE_SPLIT_TRAIN ? 89 : c.last));
  }
  expect_error(SPARSE_DATASET_ENWIK8, fx("text/enwik8-truncated.zip"), SPARSE_SPLIT_TRAIN,
               SPARSE_ERR_FORMAT, {"enwik8-truncated.zip"});
  expect_error(SPARSE_DATASET_ENWIK8, fx("text/wrong-member.zip"), SPARSE_SPLIT_TRAIN,
               SPARSE_ERR_FORMAT, {"wrong-member.zip", "enwik8"});
  // A zip of several files is refused naming them, not read in part (for text too).
  expect_error(SPARSE_DATASET_ENWIK8, fx("text/enwik8-and-readme.zip"), SPARSE_SPLIT_TRAIN,
               SPARSE_ERR_FORMAT, {"enwik8-and-readme.zip", "2 files", "enwik8, README"});
  expect_error(SPARSE_DATASET_TEXT, fx("text/two-members.zip"), SPARSE_SPLIT_TRAIN,
               SPARSE_ERR_FORMAT, {"two-members.zip", "2 files", "notes.txt, more.txt"}, 10);
  expect_error(SPARSE_DATASET_TEXT, fx("text/enwik8-and-readme.zip"), SPARSE_SPLIT_TRAIN,
               SPARSE_ERR_FORMAT, {"enwik8-and-readme.zip", "enwik8, README"}, 10);
  expect_error(SPARSE_DATASET_ENWIK8, fx("text/enwik8-oversized"), SPARSE_SPLIT_TRAIN,
               SPARSE_ERR_FORMAT, {"enwik8-oversized", "100000001", "at most"});
}

TEST_CASE("enwik8 and text: a file named .zip must be a zip; local headers must agree") {
  const auto F = SPARSE_ERR_FORMAT;
  // An HTML error page saved as enwik8.zip (a failed download) is not trained on as raw text.
  for (auto kind : {SPARSE_DATASET_ENWIK8, SPARSE_DATASET_TEXT}) {
    expect_error(kind, fx("text/html/enwik8.zip"), SPARSE_SPLIT_TRAIN, F,
                 {"enwik8.zip", "named .zip but not a zip archive", "<!DOCTYPE html>"}, 100);
    expect_error(kind, fx("text/html/enwik8.ZIP"), SPARSE_SPLIT_TRAIN, F,
                 {"enwik8.ZIP", "not a zip archive", "empty"}, 100);
  }
  // The local header repeats the central directory's name and CRC-32: a disagreement is
  // corruption (Python's zipfile refuses the name mismatch too).
  expect_error(SPARSE_DATASET_TEXT, fx("text/local-name.zip"), SPARSE_SPLIT_TRAIN, F,
               {"local-name.zip", "notes.txt", "disagrees with the central directory"}, 100);
  expect_error(SPARSE_DATASET_TEXT, fx("text/local-crc.zip"), SPARSE_SPLIT_TRAIN, F,
               {"local-crc.zip", "disagrees with the central directory"}, 100);
}

TEST_CASE("enwik8 and text: gzip is read as the text it holds, other compressed formats refused") {
  const auto F = SPARSE_ERR_FORMAT;
  for (auto kind : {SPARSE_DATASET_ENWIK8, SPARSE_DATASET_TEXT}) {
#if SPARSE_HAVE_ZLIB
    // "<mediawiki>" x 1000 = 11,000 bytes: the train split's 9,900 are 900 sequences of 11.
    Opened gz(kind, fx("text/enwik8.gz"), SPARSE_SPLIT_TRAIN, 11);
    INFO(gz.error);
    REQUIRE(gz.status == SPARSE_OK);
    CHECK(gz.size() == 900);
    for (int64_t i : {int64_t{0}, int64_t{899}}) {
      const std::vector<uint8_t> v = gz.seq(i);
      CHECK(std::string(v.begin(), v.end()) == "<mediawiki>");
    }
    expect_error(kind, fx("text/bad-crc.bin.gz"), SPARSE_SPLIT_TRAIN, F,
                 {"bad-crc.bin.gz", "CRC-32", "gzip trailer"}, 10);
    expect_error(kind, fx("text/text.tar.gz"), SPARSE_SPLIT_TRAIN, F,
                 {"text.tar.gz (inflated from gzip)", "tar archive", "tar -xf"}, 10);
    // Compressed data inside gzip is refused too, naming the format inside.
    expect_error(kind, fx("text/text.bin.bz2.gz"), SPARSE_SPLIT_TRAIN, F,
                 {"text.bin.bz2.gz (inflated from gzip)", "bzip2-compressed"}, 10);
    expect_error(kind, fx("text/text.bin.gz.gz"), SPARSE_SPLIT_TRAIN, F,
                 {"text.bin.gz.gz (inflated from gzip)", "gzip-compressed"}, 10);
#else
    expect_error(kind, fx("text/enwik8.gz"), SPARSE_SPLIT_TRAIN, SPARSE_ERR_UNSUPPORTED,
                 {"enwik8.gz", "zlib"}, 11);
#endif
    // Refused with the format and the command that decompresses the file, never read as bytes.
    const struct {
      const char* file;
      const char* format;
      const char* command;
    } refused[] = {{"text.bin.bz2", "bzip2-compressed", "bunzip2 -k "},
                   {"text.bin.xz", "xz-compressed", "unxz -k "},
                   {"text.bin.zst", "zstd-compressed", "unzstd "},
                   {"text.bin.7z", "7-Zip-compressed", "7z x "},
                   {"text.tar", "a tar archive", "tar -xf "}};
    if (kind == SPARSE_DATASET_TEXT)
      expect_error(kind, fx("text/text.bin.xz.zip"), SPARSE_SPLIT_TRAIN, F,
                   {"text.bin.xz.zip (member text.bin.xz)", "xz-compressed"}, 10);
    for (const auto& r : refused) {
      const std::string p = fx(std::string("text/") + r.file);
      expect_error(kind, p, SPARSE_SPLIT_TRAIN, F, {p, r.format, std::string(r.command) + p}, 10);
    }
  }
}

namespace {
int imagenet_pixel(int g, int c, int p) { return (g * 13 + c * 59 + p * 5) % 256; }
void check_imagenet(const Opened& o, int64_t index, int g) {
  const std::vector<uint8_t> s = o.seq(index);
  REQUIRE(s.size() == 12288);
  bool ok = true;
  for (int p = 0; p < 4096; ++p)
    for (int c = 0; c < 3; ++c)
      ok = ok && s[static_cast<size_t>(p * 3 + c)] == imagenet_pixel(g, c, p);
  CHECK(ok);
  CHECK(o.label(index) == 1 + (g * 37) % 1000);
}
}  // namespace

TEST_CASE("ImageNet 64x64 npz: stored and deflated batches, numeric order, val as test") {
  Opened train(SPARSE_DATASET_IMAGENET64, fx("imagenet"), SPARSE_SPLIT_TRAIN);
  INFO(train.error);
  REQUIRE(train.status == SPARSE_OK);
  CHECK(train.size() == 6);  // batches 1 (3, stored), 2 (2, deflated), 10 (1, deflated)
  for (int g = 0; g < 6; ++g) check_imagenet(train, g, g);
  Opened test(SPARSE_DATASET_IMAGENET64, fx("imagenet"), SPARSE_SPLIT_TEST);
  REQUIRE(test.status == SPARSE_OK);
  CHECK(test.size() == 2);
  check_imagenet(test, 0, 100);
  check_imagenet(test, 1, 101);
  Opened planes(SPARSE_DATASET_IMAGENET64, fx("imagenet-bad/planes.npz"), SPARSE_SPLIT_TRAIN);
  REQUIRE(planes.status == SPARSE_OK);  // (N, 3, 64, 64) is the same layout
  check_imagenet(planes, 1, 1);
}

TEST_CASE("ImageNet 64x64 npz: damaged inputs") {
  const auto F = SPARSE_ERR_FORMAT;
  const auto T = SPARSE_SPLIT_TRAIN;
  const auto K = SPARSE_DATASET_IMAGENET64;
  expect_error(K, fx("imagenet-bad/no-data.npz"), T, F, {"no-data.npz", "'data'"});
  expect_error(K, fx("imagenet-bad/wrong-shape.npz"), T, F,
               {"wrong-shape.npz", "(2, 12287)", "12288"});
  expect_error(K, fx("imagenet-bad/float.npz"), T, F, {"float.npz", "uint8"});
  expect_error(K, fx("imagenet-bad/labels-mismatch.npz"), T, F, {"labels.npy", "(3,)"});
  expect_error(K, fx("imagenet-bad/truncated.npz"), T, F, {"truncated.npz"});
  expect_error(K, fx("imagenet-bad/corrupt.npz"), T, F, {"corrupt.npz"});
  expect_error(K, fx("imagenet-bad/crc.npz"), T, F, {"crc.npz", "CRC"});
  expect_error(K, fx("imagenet-bad/deflated-crc.npz"), T, F,
               {"deflated-crc.npz", "data.npy", "CRC-32 mismatch"});
  expect_error(K, fx("imagenet-empty"), T, SPARSE_ERR_IO, {"imagenet-empty", "train_data_batch"});
  expect_error(K, fx("imagenet-empty"), SPARSE_SPLIT_TEST, SPARSE_ERR_IO, {"val_data.npz"});
  expect_error(K, fx("imagenet"), SPARSE_SPLIT_VALID, SPARSE_ERR_INVALID_ARGUMENT,
               {"no validation split"});
  expect_error(K, fx("text/text.bin"), T, F, {"text.bin", "zip"});
}

TEST_CASE("audio: WAV mixed to mono, resampled to 12 kHz, mu-law") {
  if (!sparse::data::audio_supported()) {
    Opened o(SPARSE_DATASET_AUDIO, fx("audio/one"), SPARSE_SPLIT_TRAIN, 1000);
    CHECK(o.status == SPARSE_ERR_UNSUPPORTED);
    return;
  }
  // 1.5 s stereo at 24 kHz with L = s + d, R = s - d: the mono mix is s = 0.5 sin(2 pi 440 t).
  const sparse::data::DecodedAudio a =
      sparse::data::decode_audio_file(fx("audio/one/tone.wav"), 12000);
  CHECK(a.source_rate == 24000);
  CHECK(a.source_channels == 2);
  CHECK(a.source_seconds == doctest::Approx(1.5));
  CHECK(std::abs(static_cast<double>(a.mulaw.size()) - 18000.0) <= 2.0);
  // Away from the edges the decoded samples follow s at 12 kHz (the 3 kHz difference cancels).
  // Mu-law's step near 0.5 is about 0.012 (half a level 0.006); allow the resampler's delay-free
  // error on top.
  double worst = 0;
  for (size_t i = 600; i + 600 < a.mulaw.size(); ++i) {
    const double t = static_cast<double>(i) / 12000.0;
    const double s = 0.5 * std::sin(2 * M_PI * 440 * t);
    worst = std::max(worst, std::fabs(sparse::data::mulaw_decode(a.mulaw[i]) - s));
  }
  MESSAGE("worst deviation from the mono 440 Hz tone: ", worst);
  CHECK(worst < 0.02);
  Opened o(SPARSE_DATASET_AUDIO, fx("audio/one"), SPARSE_SPLIT_TRAIN, 1000);
  REQUIRE(o.status == SPARSE_OK);
  CHECK(o.size() == static_cast<int64_t>(a.mulaw.size()) / 1000);
  CHECK(o.seq(2) == std::vector<uint8_t>(a.mulaw.begin() + 2000, a.mulaw.begin() + 3000));

  // The file itself (not its folder) is one recording split in time: of its N decoded samples,
  // test is the last floor(0.1 N), valid the floor(0.1 N) before them, train the rest, each cut
  // into whole sequences from its start.
  const size_t n = a.mulaw.size(), tenth = n / 10;
  const size_t train_end = n - 2 * tenth;
  auto part = [&](size_t from, size_t len) {
    return std::vector<uint8_t>(a.mulaw.begin() + static_cast<std::ptrdiff_t>(from),
                                a.mulaw.begin() + static_cast<std::ptrdiff_t>(from + len));
  };
  Opened tr(SPARSE_DATASET_AUDIO, fx("audio/one/tone.wav"), SPARSE_SPLIT_TRAIN, 1000);
  Opened va(SPARSE_DATASET_AUDIO, fx("audio/one/tone.wav"), SPARSE_SPLIT_VALID, 1000);
  Opened te(SPARSE_DATASET_AUDIO, fx("audio/one/tone.wav"), SPARSE_SPLIT_TEST, 1000);
  REQUIRE(tr.status == SPARSE_OK);
  REQUIRE(va.status == SPARSE_OK);
  REQUIRE(te.status == SPARSE_OK);
  CHECK(tr.size() == static_cast<int64_t>(train_end / 1000));
  CHECK(va.size() == static_cast<int64_t>(tenth / 1000));
  CHECK(te.size() == static_cast<int64_t>(tenth / 1000));
  CHECK(tr.seq(tr.size() - 1) == part((train_end / 1000 - 1) * 1000, 1000));
  CHECK(va.seq(0) == part(train_end, 1000));
  CHECK(te.seq(0) == part(train_end + tenth, 1000));
  // A split shorter than one sequence is an error naming it (valid and test have ~1800 samples).
  expect_error(SPARSE_DATASET_AUDIO, fx("audio/one/tone.wav"), SPARSE_SPLIT_VALID,
               SPARSE_ERR_FORMAT, {"tone.wav", "valid split", "fewer than one sequence"}, 2000);
}

TEST_CASE("audio: FLAC written by libsndfile") {
#if SPARSE_HAVE_SNDFILE
  const std::string path = fx("audio/flac/tone.flac");
  std::filesystem::create_directories(fx("audio/flac"));
  SF_INFO info{};
  info.samplerate = 16000;
  info.channels = 1;
  info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  REQUIRE(f != nullptr);
  std::vector<float> x(16000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.3f * std::sin(2 * M_PI * 250 * i / 16000.0);
  REQUIRE(sf_writef_float(f, x.data(), 16000) == 16000);
  sf_close(f);
  const sparse::data::DecodedAudio a = sparse::data::decode_audio_file(path, 12000);
  CHECK(a.source_seconds == doctest::Approx(1.0));
  CHECK(std::abs(static_cast<double>(a.mulaw.size()) - 12000.0) <= 2.0);
  double worst = 0;
  for (size_t i = 500; i + 500 < a.mulaw.size(); ++i)
    worst = std::max(worst, std::fabs(sparse::data::mulaw_decode(a.mulaw[i]) -
                                      0.3 * std::sin(2 * M_PI * 250 * i / 12000.0)));
  CHECK(worst < 0.02);
#else
  MESSAGE("built without libsndfile");
#endif
}

#if SPARSE_HAVE_SNDFILE
namespace {
// Writes `seconds` of a two-tone mono signal with libsndfile in `format`.
void write_tone(const std::string& path, int format, int rate, int seconds) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = 1;
  info.format = format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  REQUIRE_MESSAGE(f != nullptr, sf_strerror(nullptr));
  std::vector<float> x(static_cast<size_t>(rate * seconds));
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(0.3 * std::sin(2 * M_PI * 250 * i / rate) +
                              0.1 * std::sin(2 * M_PI * 1700 * i / rate));
  REQUIRE(sf_writef_float(f, x.data(), static_cast<sf_count_t>(x.size())) ==
          static_cast<sf_count_t>(x.size()));
  sf_close(f);
}

std::vector<char> bytes_of(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  std::vector<char> out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

void write_bytes(const std::string& path, const std::vector<char>& b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(std::fwrite(b.data(), 1, b.size(), f) == b.size());
  std::fclose(f);
}

std::string decode_error(const std::string& path) {
  try {
    sparse::data::decode_audio_file(path, 12000);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
}  // namespace
#endif

TEST_CASE("audio: integrity fields of Ogg pages and FLAC frames and MD5") {
#if SPARSE_HAVE_SNDFILE
  std::filesystem::create_directories(fx("audio/integrity"));
  // Ogg: each page has a CRC-32. libogg drops a page that fails it without an error (and
  // libsndfile then also reports the shortened length), so a damaged file used to decode to less
  // audio. A flip in the middle page, in the last page, and a cut-off last page.
  std::string e;
  std::vector<char> b;
  for (const char* kind : {"ogg", "opus"}) {
    const std::string ogg = fx(std::string("audio/integrity/tone.") + kind);
    if (std::string(kind) == "ogg")
      write_tone(ogg, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 22050, 4);
    else
      write_tone(ogg, SF_FORMAT_OGG | SF_FORMAT_OPUS, 48000, 2);
    CHECK(decode_error(ogg).empty());
    const std::vector<char> good = bytes_of(ogg);
    for (size_t at : {good.size() / 2, good.size() - 40, good.size()}) {
      b = good;
      if (at == good.size())
        b.resize(good.size() - 40);
      else
        b[at] ^= 0x10;
      const std::string bad = fx("audio/integrity/bad.") + kind;
      write_bytes(bad, b);
      e = decode_error(bad);
      INFO(kind, " at ", at, ": ", e);
      CHECK(e.find("bad.") != std::string::npos);
      CHECK((e.find("corrupt Ogg data") != std::string::npos ||
             e.find("truncated Ogg") != std::string::npos));
    }
    // More than one logical stream: libsndfile decodes only the first, so the rest would be lost.
    // Chained: two recordings one after the other (the second begins where the first file
    // ended); grouped: the second stream's first page right after the first's.
    const std::string other = fx("audio/integrity/other.") + kind;
    write_tone(other,
               (std::string(kind) == "ogg" ? SF_FORMAT_VORBIS : SF_FORMAT_OPUS) | SF_FORMAT_OGG,
               48000, 1);
    const std::vector<char> second = bytes_of(other);
    b = good;
    b.insert(b.end(), second.begin(), second.end());
    write_bytes(fx("audio/integrity/chained.") + kind, b);
    e = decode_error(fx("audio/integrity/chained.") + kind);
    INFO(e);
    CHECK(e.find(std::string("chained.") + kind) != std::string::npos);
    CHECK(e.find("a chained Ogg file") != std::string::npos);
    CHECK(e.find("second logical stream begins at byte " + std::to_string(good.size())) !=
          std::string::npos);
    // An Ogg page: 27-byte header, then as many lacing values as byte 26 says, then their sum.
    const auto page_size = [](const std::vector<char>& v, size_t at) {
      REQUIRE(std::string(v.begin() + at, v.begin() + at + 4) == "OggS");
      const size_t segments = static_cast<uint8_t>(v[at + 26]);
      size_t size = 27 + segments;
      for (size_t i = 0; i < segments; ++i) size += static_cast<uint8_t>(v[at + 27 + i]);
      return size;
    };
    const size_t first_page = page_size(good, 0);
    b = good;
    b.insert(b.begin() + first_page, second.begin(), second.begin() + page_size(second, 0));
    write_bytes(fx("audio/integrity/grouped.") + kind, b);
    e = decode_error(fx("audio/integrity/grouped.") + kind);
    CHECK(e.find(std::string("grouped.") + kind) != std::string::npos);
    CHECK((e.find("a grouped (multiplexed) Ogg file") != std::string::npos ||
           e.find("not a readable audio file") != std::string::npos));
  }

  // FLAC: a damaged frame fails its CRC-16; a STREAMINFO MD5 that does not match the decoded
  // audio is corruption too (bytes 26..41: "fLaC", the 4-byte block header, 18 bytes of
  // STREAMINFO before the MD5).
  const std::string flac = fx("audio/integrity/tone.flac");
  write_tone(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 2);
  CHECK(decode_error(flac).empty());
  b = bytes_of(flac);
  REQUIRE(std::string(b.begin(), b.begin() + 4) == "fLaC");
  REQUIRE((b[4] & 0x7f) == 0);  // the first metadata block is STREAMINFO
  REQUIRE(std::count(b.begin() + 26, b.begin() + 42, 0) < 16);  // an MD5 was written
  std::vector<char> frame = b;
  frame[frame.size() / 2] ^= 0x10;
  write_bytes(fx("audio/integrity/frame.flac"), frame);
  CHECK(decode_error(fx("audio/integrity/frame.flac")).find("frame.flac") != std::string::npos);
  b[30] ^= 0x01;
  write_bytes(fx("audio/integrity/md5.flac"), b);
  e = decode_error(fx("audio/integrity/md5.flac"));
#if SPARSE_HAVE_FLAC
  CHECK(e.find("md5.flac") != std::string::npos);
  CHECK(e.find("MD5") != std::string::npos);
#else
  MESSAGE("built without libFLAC: the FLAC MD5 is not checked");
#endif
#else
  MESSAGE("built without libsndfile");
#endif
}

TEST_CASE("audio: split by file and bad input") {
  if (!sparse::data::audio_supported()) return;
  // Ten files of 0.5 s at 12 kHz (6000 samples = 6 sequences of 1000), track k at amplitude
  // (k + 1) / 12. Test and valid get floor(0.1 x 10) = 1 file each: the two smallest FNV-1a
  // hashes of the names.
  auto fnv = [](const std::string& s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
  };
  std::vector<std::pair<uint64_t, int>> order;
  for (int k = 0; k < 10; ++k) {
    char name[32];
    std::snprintf(name, sizeof name, "track%02d.wav", k);
    order.emplace_back(fnv(name), k);
  }
  std::sort(order.begin(), order.end());
  auto tracks_of = [&](sparse_split split) {
    Opened o(SPARSE_DATASET_AUDIO, fx("audio/ten"), split, 1000);
    INFO(o.error);
    REQUIRE(o.status == SPARSE_OK);
    std::multiset<int> seen;
    for (int64_t i = 0; i < o.size(); ++i) {
      double peak = 0;
      for (uint8_t q : o.seq(i))
        peak = std::max(peak, std::fabs(double(sparse::data::mulaw_decode(q))));
      seen.insert(static_cast<int>(std::lround(peak * 12 - 1)));
    }
    return seen;
  };
  const std::multiset<int> test = tracks_of(SPARSE_SPLIT_TEST),
                           valid = tracks_of(SPARSE_SPLIT_VALID),
                           train = tracks_of(SPARSE_SPLIT_TRAIN);
  CHECK(test.size() == 6);
  CHECK(test.count(order[0].second) == 6);
  CHECK(valid.size() == 6);
  CHECK(valid.count(order[1].second) == 6);
  CHECK(train.size() == 48);
  for (size_t j = 2; j < 10; ++j) CHECK(train.count(order[j].second) == 6);

  const auto F = SPARSE_ERR_FORMAT;
  const auto A = SPARSE_DATASET_AUDIO;
  expect_error(A, fx("audio-bad/silent.wav"), SPARSE_SPLIT_TRAIN, F, {"silent.wav", "silent"}, 100);
  expect_error(A, fx("audio-bad/empty.wav"), SPARSE_SPLIT_TRAIN, F, {"empty.wav", "no audio"}, 100);
  expect_error(A, fx("audio-bad/noise.wav"), SPARSE_SPLIT_TRAIN, F, {"noise.wav", "audio file"},
               100);
  expect_error(A, fx("audio/empty"), SPARSE_SPLIT_TRAIN, SPARSE_ERR_IO,
               {"audio/empty", "expected audio files"}, 100);
  expect_error(A, fx("audio/one"), SPARSE_SPLIT_TEST, SPARSE_ERR_INVALID_ARGUMENT,
               {"test split empty"}, 100);
  expect_error(A, fx("audio/one"), SPARSE_SPLIT_TRAIN, F, {"shorter than one sequence"}, 100000);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PYTHON make_fixtures.py [doctest options]\n", argv[0]);
    return 2;
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/sparse-fixtures-XXXXXX";
  std::vector<char> buf(dir.begin(), dir.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) return 2;
  fixtures = buf.data();
  const std::string cmd = std::string("'") + argv[1] + "' '" + argv[2] + "' '" + fixtures + "'";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "fixture generation failed: %s\n", cmd.c_str());
    return 2;
  }
  doctest::Context ctx;
  ctx.applyCommandLine(argc - 2, argv + 2);
  const int rc = ctx.run();
  std::filesystem::remove_all(fixtures);
  return rc;
}
