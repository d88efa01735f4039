#include "baselines_cmd.hpp"

#include <iostream>
#include <memory>
#include <stdexcept>
#include <vector>

#include "baselines.hpp"
#include "cli_common.hpp"
#include "option_checks.hpp"
#include "output_files.hpp"
#include "provenance.hpp"
#include "report.hpp"
#include "sparse/sparse.h"

namespace repro {
namespace {

// All sequences of a split, concatenated in index order.
std::vector<uint8_t> split_bytes(const DataSpec& spec, sparse_split split) {
  // Text is one stream: sequences of one byte keep every byte of the split (longer sequences
  // would drop the split's tail).
  const std::string kind = parse_data_spec(spec.spec).kind;
  const bool text = kind == "text" || kind == "enwik8";
  DatasetPtr ds = open_dataset(spec, split, text && spec.seq_len == 0 ? 1 : 0);
  int64_t count = 0, n = 0;
  check(sparse_dataset_num_sequences(ds.get(), &count), "dataset");
  check(sparse_dataset_seq_len(ds.get(), &n), "dataset");
  std::vector<uint8_t> bytes(static_cast<size_t>(count * n));
  if (count > 0)
    check(sparse_dataset_read(ds.get(), 0, count, SPARSE_TOKENS_U8, bytes.data(), bytes.size()),
          "read " + spec.spec);
  return bytes;
}

sparse_split held_out_split(const std::string& name) {
  if (name == "valid") return SPARSE_SPLIT_VALID;
  if (name == "test") return SPARSE_SPLIT_TEST;
  throw std::runtime_error("--split must be valid or test (the held-out data), not \"" + name +
                           "\"");
}

struct ImageShape {
  int width = 0, height = 0, channels = 0;
};

// The image shape of an image kind; width 0 for the others.
ImageShape image_shape(const std::string& kind, const DataSpec& spec) {
  if (kind == "cifar10") return {32, 32, 3};
  if (kind == "imagenet64") return {64, 64, 3};
  if (kind == "synthetic_image") {
    sparse_dataset_desc desc;
    check(sparse_dataset_desc_default(&desc, SPARSE_DATASET_SYNTHETIC_IMAGE), "defaults");
    return {spec.image_width > 0 ? spec.image_width : static_cast<int>(desc.image_width),
            spec.image_height > 0 ? spec.image_height : static_cast<int>(desc.image_height), 1};
  }
  return {};
}

}  // namespace

void add_baselines_options(CLI::App& app, BaselinesOptions& o) {
  add_data_options(app, o.data);
  app.add_option("--split", o.split, "the held-out split (valid or test)")
      ->check(one_of({"valid", "test"}))
      ->capture_default_str();
  app.add_option("--max-train-bytes", o.max_train_bytes,
                 "compressors are given only the last this many training bytes (0 = all)")
      ->check(integer_in(0));
  app.add_option("--max-held-out-bytes", o.max_held_out_bytes,
                 "evaluate the first this many held-out bytes (0 = all; images: whole images)")
      ->check(integer_in(0));
  app.add_option("--json-out", o.json_out, "write the table's JSON (with provenance) here");
  app.add_option("--output", o.markdown_out, "write the Markdown table here");
  app.add_flag("--json", o.json, "print JSON instead of Markdown");
}

nlohmann::json run_baselines(const BaselinesOptions& o) {
  const std::string kind = parse_data_spec(o.data.spec).kind;
  std::vector<uint8_t> train = split_bytes(o.data, SPARSE_SPLIT_TRAIN);
  std::vector<uint8_t> held = split_bytes(o.data, held_out_split(o.split));
  const ImageShape image = image_shape(kind, o.data);
  const size_t unit = image.width > 0 ? static_cast<size_t>(image.width) * image.height *
                                            static_cast<size_t>(image.channels)
                                      : 1;
  if (o.max_held_out_bytes > 0 && held.size() > static_cast<size_t>(o.max_held_out_bytes)) {
    const size_t keep = static_cast<size_t>(o.max_held_out_bytes) / unit * unit;
    if (keep == 0)
      throw std::runtime_error("--max-held-out-bytes is smaller than one image (" +
                               std::to_string(unit) + " bytes)");
    held.resize(keep);
  }
  if (held.empty())
    throw std::runtime_error("the " + o.split + " split of " + o.data.spec +
                             " is empty (audio: fewer than 10 files put every file in train, "
                             "or the files are shorter than --data-seq-len)");
  if (o.max_train_bytes > 0 && train.size() > static_cast<size_t>(o.max_train_bytes))
    train.erase(train.begin(), train.end() - o.max_train_bytes);

  nlohmann::json rows = nlohmann::json::array();
  for (const auto& c : conditional_compression(train, held))
    rows.push_back({{"name", c.name},
                    {"bits", c.available ? c.bits_per_byte : -1.0},
                    {"note", "given the training bytes"}});
  std::string unit_name = "bits per byte", unit_of = "bytes";
  if (image.width > 0) {
    unit_name = "bits per sub-pixel";
    unit_of = "sub-pixels";
    const std::string shape = std::to_string(image.width) + "x" + std::to_string(image.height) +
                              "x" + std::to_string(image.channels);
    rows.push_back(
        {{"name", "PNG (libpng, level 9)"},
         {"bits", png_bits_per_subpixel(held, image.width, image.height, image.channels)},
         {"note", "one file per " + shape + " image"}});
    rows.push_back(
        {{"name", "WebP lossless (libwebp)"},
         {"bits", webp_bits_per_subpixel(held, image.width, image.height, image.channels)},
         {"note", "one file per " + shape + " image" +
                      std::string(image.channels == 1 ? ", gray stored as RGB" : "")}});
  } else if (kind == "audio") {
    unit_name = "bits per sample";
    unit_of = "samples (12 kHz, 8-bit mu-law)";
    if (have_flac()) {
      const auto pcm = mulaw_to_pcm16(held);
      std::vector<int16_t> codes(held.size());
      for (size_t i = 0; i < held.size(); ++i) codes[i] = static_cast<int16_t>(held[i] - 128);
      const double samples = static_cast<double>(held.size());
      rows.push_back({{"name", "FLAC -8 (libsndfile), 16-bit PCM"},
                      {"bits", 8.0 * static_cast<double>(flac_file(pcm, 12000).size()) / samples},
                      {"note", "the held-out mu-law samples decoded to 16-bit PCM, one file"}});
      rows.push_back(
          {{"name", "FLAC -8 (libsndfile), 8-bit mu-law codes"},
           {"bits", 8.0 * static_cast<double>(flac_file(codes, 12000, true).size()) / samples},
           {"note", "the held-out tokens themselves (code - 128), one file"}});
    } else {
      rows.push_back({{"name", "FLAC (libsndfile)"}, {"bits", -1.0}, {"note", ""}});
    }
  }
  return {{"data", o.data.spec},
          {"kind", kind},
          {"split", o.split},
          {"train_bytes", train.size()},
          {"held_out_bytes", held.size()},
          {"unit", unit_name},
          {"unit_of", unit_of},
          {"rows", rows}};
}

void register_baselines(CLI::App& app, int argc, char** argv) {
  auto o = std::make_shared<BaselinesOptions>();
  auto* cmd = app.add_subcommand(
      "baselines", "gzip/bzip2/xz/zstd, PNG/WebP (images), FLAC (audio) on held-out data");
  add_baselines_options(*cmd, *o);
  cmd->callback([o, argc, argv] {
    const nlohmann::json prov = provenance(argc, argv);  // before the work: the load it found
    auto table = run_baselines(*o);
    table["provenance"] = prov;
    const std::string md = baselines_markdown(table);
    std::cout << (o->json ? table.dump(2) + "\n" : md);
    if (!o->json_out.empty()) write_file_atomically(o->json_out, table.dump(2) + "\n");
    if (!o->markdown_out.empty()) write_file_atomically(o->markdown_out, md);
  });
}

}  // namespace repro
