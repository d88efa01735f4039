// Datasets in the C ABI: sparse_dataset wraps a sparse::data::Source and its Loader.
#include "sparse/datasets.h"

#include <cctype>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "capi/src/guard.hpp"
#include "datasets/dataset.hpp"
#include "datasets/synthetic.hpp"

struct sparse_dataset {
  sparse::data::SourcePtr source;
  std::unique_ptr<sparse::data::Loader> loader;
  std::vector<uint8_t> scratch;
};

namespace {

constexpr sparse_dataset_kind kAllKinds[] = {SPARSE_DATASET_SYNTHETIC_IMAGE,
                                             SPARSE_DATASET_SYNTHETIC_TEXT,
                                             SPARSE_DATASET_CIFAR10,
                                             SPARSE_DATASET_ENWIK8,
                                             SPARSE_DATASET_TEXT,
                                             SPARSE_DATASET_IMAGENET64,
                                             SPARSE_DATASET_AUDIO};
constexpr size_t kDescMinSize = offsetof(sparse_dataset_desc, reserved);
constexpr uint64_t kDefaultSeed = 0x5eed;

const char* kind_name(int kind) {
  switch (kind) {
    case SPARSE_DATASET_SYNTHETIC_IMAGE:
      return "synthetic_image";
    case SPARSE_DATASET_SYNTHETIC_TEXT:
      return "synthetic_text";
    case SPARSE_DATASET_CIFAR10:
      return "cifar10";
    case SPARSE_DATASET_ENWIK8:
      return "enwik8";
    case SPARSE_DATASET_TEXT:
      return "text";
    case SPARSE_DATASET_IMAGENET64:
      return "imagenet64";
    case SPARSE_DATASET_AUDIO:
      return "audio";
    default:
      return "unknown";
  }
}

const sparse_dataset& checked(const sparse_dataset* d) {
  sparse::require(d != nullptr, "dataset is NULL");
  return *d;
}

size_t token_size(int type) {
  sparse::require(type == SPARSE_TOKENS_U8 || type == SPARSE_TOKENS_I32, "type = ", type,
                  " is not a known sparse_token_type");
  return type == SPARSE_TOKENS_U8 ? 1 : 4;
}

void check_buffer(const sparse_dataset& d, int64_t count, size_t tsize, const void* out,
                  size_t out_bytes) {
  sparse::require(out != nullptr, "out is NULL");
  const auto len = static_cast<uint64_t>(d.source->seq_len());
  const uint64_t need = static_cast<uint64_t>(count) * len * tsize;
  if (need > out_bytes)
    sparse::throw_error(SPARSE_ERR_BUFFER_TOO_SMALL, "out_bytes = ", out_bytes, " but ", count,
                        " sequences of ", len, " tokens of ", tsize, " bytes need ", need);
}

void put(sparse_dataset& d, int64_t index, int64_t slot, size_t tsize, void* out) {
  const auto len = static_cast<size_t>(d.source->seq_len());
  if (tsize == 1) {
    d.source->read(index, static_cast<uint8_t*>(out) + static_cast<size_t>(slot) * len);
    return;
  }
  d.scratch.resize(len);
  d.source->read(index, d.scratch.data());
  int32_t* dst = static_cast<int32_t*>(out) + static_cast<size_t>(slot) * len;
  for (size_t i = 0; i < len; ++i) dst[i] = d.scratch[i];
}

sparse::data::Split to_split(int split) {
  sparse::require(split >= SPARSE_SPLIT_TRAIN && split <= SPARSE_SPLIT_TEST,
                  "desc->split = ", split, " is not a known sparse_split");
  return static_cast<sparse::data::Split>(split);
}

uint64_t split_seed(uint64_t seed, int split) {
  sparse::data::SplitMix64 mix(seed ^ (0xA0761D6478BD642Full * static_cast<uint64_t>(split + 1)));
  return mix.next();
}

sparse::data::SourcePtr open_source(const sparse_dataset_desc& d, int kind) {
  using namespace sparse::data;
  const Split split = to_split(sparse::enum_value(d.split));
  auto need_path = [&] {
    sparse::require(d.path != nullptr && d.path[0] != '\0', "desc->path is NULL or empty (",
                    kind_name(kind), " reads a file or folder)");
    return std::string(d.path);
  };
  auto fixed_len = [&](int64_t len) {
    sparse::require(d.seq_len == 0 || d.seq_len == len, "desc->seq_len = ", d.seq_len, " but ",
                    kind_name(kind), " sequences have ", len, " tokens (pass 0 or ", len, ")");
  };
  switch (kind) {
    case SPARSE_DATASET_SYNTHETIC_IMAGE: {
      SyntheticImageOptions o;
      o.width = d.image_width;
      o.height = d.image_height;
      o.levels = d.vocab;
      o.noise_scale = d.noise_scale;
      o.count = d.num_sequences;
      o.seed = split_seed(d.seed, static_cast<int>(split));
      sparse::require(o.width >= 1 && o.height >= 1, "desc->image_width/height = ", o.width, " x ",
                      o.height, " (expected >= 1)");
      fixed_len(int64_t{o.width} * o.height);
      return synthetic_image(o);
    }
    case SPARSE_DATASET_SYNTHETIC_TEXT: {
      SyntheticTextOptions o;
      o.seq_len = d.seq_len;
      o.vocab = d.vocab;
      o.offset = d.copy_offset;
      o.copy_prob = d.copy_prob;
      o.rho = d.successor_bias;
      o.count = d.num_sequences;
      o.seed = split_seed(d.seed, static_cast<int>(split));
      return synthetic_text(o);
    }
    case SPARSE_DATASET_CIFAR10:
      fixed_len(3072);
      return open_cifar10(need_path(), split);
    case SPARSE_DATASET_ENWIK8:
    case SPARSE_DATASET_TEXT:
      return open_text(need_path(), split, d.seq_len, kind == SPARSE_DATASET_ENWIK8);
    case SPARSE_DATASET_IMAGENET64:
      fixed_len(kImagenet64Dims);
      return open_imagenet64(need_path(), split);
    case SPARSE_DATASET_AUDIO: {
      AudioOptions o;
      o.seq_len = d.seq_len;
      o.sample_rate = d.sample_rate;
      o.valid_fraction = d.valid_fraction;
      o.test_fraction = d.test_fraction;
      return open_audio(need_path(), split, o);
    }
    default:
      break;
  }
  sparse::throw_invalid("desc->kind = ", kind, " is not a known sparse_dataset_kind");
}

}  // namespace

extern "C" {

SPARSE_API const char* sparse_dataset_kind_name(sparse_dataset_kind kind) {
  return kind_name(sparse::enum_value(kind));
}

SPARSE_API sparse_status sparse_dataset_kind_from_name(const char* name, sparse_dataset_kind* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(name != nullptr, "name is NULL");
    sparse::require(out != nullptr, "out is NULL");
    std::string l(name);
    for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (sparse_dataset_kind k : kAllKinds) {
      if (l == kind_name(k)) {
        *out = k;
        return;
      }
    }
    std::string names;
    for (sparse_dataset_kind k : kAllKinds)
      names += std::string(names.empty() ? "" : ", ") + kind_name(k);
    sparse::throw_invalid("unknown dataset kind \"", name, "\" (expected one of ", names, ")");
  });
}

SPARSE_API sparse_status sparse_dataset_desc_default(sparse_dataset_desc* desc,
                                                     sparse_dataset_kind kind) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(desc != nullptr, "desc is NULL");
    const int k = sparse::enum_value(kind);
    sparse::require(std::strcmp(kind_name(k), "unknown") != 0, "kind = ", k,
                    " is not a known sparse_dataset_kind");
    std::memset(desc, 0, sizeof *desc);
    desc->struct_size = sizeof *desc;
    desc->kind = kind;
    desc->path = nullptr;
    desc->split = SPARSE_SPLIT_TRAIN;
    desc->seq_len = k == SPARSE_DATASET_ENWIK8 || k == SPARSE_DATASET_TEXT ? 12288
                    : k == SPARSE_DATASET_AUDIO                            ? 65536
                    : k == SPARSE_DATASET_SYNTHETIC_TEXT                   ? 1024
                                                                           : 0;
    desc->seed = kDefaultSeed;
    desc->shuffle = 1;
    desc->vocab = 256;
    desc->num_sequences = 1024;
    desc->image_width = 32;
    desc->image_height = 32;
    desc->noise_scale = 4.0;
    desc->copy_offset = 256;
    desc->copy_prob = 0.75;
    desc->successor_bias = 0.5;
    desc->sample_rate = 12000;
    desc->valid_fraction = 0.1;
    desc->test_fraction = 0.1;
  });
}

SPARSE_API sparse_status sparse_dataset_open(const sparse_dataset_desc* desc,
                                             sparse_dataset** out) {
  if (out != nullptr) *out = nullptr;
  return sparse::capi::guard(__func__, [&] {
    sparse::require(desc != nullptr, "desc is NULL");
    sparse::require(out != nullptr, "out is NULL");
    sparse::require(desc->struct_size >= kDescMinSize, "desc->struct_size = ", desc->struct_size,
                    " is too small (at least ", kDescMinSize,
                    "); initialise desc with sparse_dataset_desc_default()");
    sparse_dataset_desc d;
    std::memset(&d, 0, sizeof d);
    std::memcpy(&d, desc, desc->struct_size < sizeof d ? desc->struct_size : sizeof d);
    sparse::require(d.reserved0 == 0, "desc->reserved0 must be zero");
    for (unsigned char byte : d.reserved)
      sparse::require(byte == 0, "desc->reserved must be all zero");
    sparse::require(d.shuffle == 0 || d.shuffle == 1, "desc->shuffle = ", d.shuffle,
                    " (expected 0 or 1)");
    auto ds = std::make_unique<sparse_dataset>();
    ds->source = open_source(d, sparse::enum_value(d.kind));
    ds->loader = std::make_unique<sparse::data::Loader>(*ds->source, d.seed, d.shuffle != 0);
    *out = ds.release();
  });
}

SPARSE_API void sparse_dataset_destroy(sparse_dataset* dataset) { delete dataset; }

SPARSE_API sparse_status sparse_dataset_num_sequences(const sparse_dataset* dataset, int64_t* out) {
  return sparse::capi::guard(__func__, [&] {
    const sparse_dataset& d = checked(dataset);
    sparse::require(out != nullptr, "out is NULL");
    *out = d.source->size();
  });
}

SPARSE_API sparse_status sparse_dataset_seq_len(const sparse_dataset* dataset, int64_t* out) {
  return sparse::capi::guard(__func__, [&] {
    const sparse_dataset& d = checked(dataset);
    sparse::require(out != nullptr, "out is NULL");
    *out = d.source->seq_len();
  });
}

SPARSE_API sparse_status sparse_dataset_vocab_size(const sparse_dataset* dataset, int32_t* out) {
  return sparse::capi::guard(__func__, [&] {
    const sparse_dataset& d = checked(dataset);
    sparse::require(out != nullptr, "out is NULL");
    *out = d.source->vocab();
  });
}

SPARSE_API sparse_status sparse_dataset_read(const sparse_dataset* dataset, int64_t first,
                                             int64_t count, sparse_token_type type, void* out,
                                             size_t out_bytes) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(dataset != nullptr, "dataset is NULL");
    sparse_dataset& d = *const_cast<sparse_dataset*>(dataset);
    const size_t tsize = token_size(sparse::enum_value(type));
    const int64_t n = d.source->size();
    sparse::require(first >= 0 && count >= 0 && first <= n && count <= n - first, "sequences [",
                    first, ", ", first, " + ", count, ") are outside [0, ", n, ")");
    check_buffer(d, count, tsize, out, out_bytes);
    for (int64_t i = 0; i < count; ++i) put(d, first + i, i, tsize, out);
  });
}

SPARSE_API sparse_status sparse_dataset_next_batch(sparse_dataset* dataset, int64_t batch_size,
                                                   sparse_token_type type, void* out,
                                                   size_t out_bytes, int64_t* indices) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(dataset != nullptr, "dataset is NULL");
    sparse_dataset& d = *dataset;
    const size_t tsize = token_size(sparse::enum_value(type));
    sparse::require(batch_size >= 1, "batch_size = ", batch_size, " (expected >= 1)");
    check_buffer(d, batch_size, tsize, out, out_bytes);
    for (int64_t i = 0; i < batch_size; ++i) {
      const int64_t index = d.loader->next();
      put(d, index, i, tsize, out);
      if (indices != nullptr) indices[i] = index;
    }
  });
}

SPARSE_API sparse_status sparse_dataset_position(const sparse_dataset* dataset, uint64_t* epoch,
                                                 int64_t* position) {
  return sparse::capi::guard(__func__, [&] {
    const sparse_dataset& d = checked(dataset);
    // The loader moves to the next epoch lazily; report a finished epoch as the next one's start.
    uint64_t e = d.loader->epoch();
    int64_t p = d.loader->position();
    if (p >= d.source->size()) {
      ++e;
      p = 0;
    }
    if (epoch != nullptr) *epoch = e;
    if (position != nullptr) *position = p;
  });
}

SPARSE_API sparse_status sparse_dataset_seek(sparse_dataset* dataset, uint64_t epoch,
                                             int64_t position) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(dataset != nullptr, "dataset is NULL");
    dataset->loader->seek(epoch, position);
  });
}

SPARSE_API sparse_status sparse_dataset_label(const sparse_dataset* dataset, int64_t index,
                                              int32_t* out) {
  return sparse::capi::guard(__func__, [&] {
    const sparse_dataset& d = checked(dataset);
    sparse::require(out != nullptr, "out is NULL");
    sparse::require(index >= 0 && index < d.source->size(), "index = ", index, " is outside [0, ",
                    d.source->size(), ")");
    *out = d.source->label(index);
  });
}

SPARSE_API sparse_status sparse_dataset_entropy(const sparse_dataset* dataset, double* bits_per_dim,
                                                double* nll_bits_per_dim) {
  return sparse::capi::guard(__func__, [&] {
    const sparse_dataset& d = checked(dataset);
    const auto e = d.source->entropy();
    if (!e)
      sparse::throw_error(SPARSE_ERR_UNSUPPORTED,
                          "the exact entropy is known only for synthetic datasets");
    if (bits_per_dim != nullptr) *bits_per_dim = e->bits_per_dim;
    if (nll_bits_per_dim != nullptr) *nll_bits_per_dim = e->nll_bits_per_dim;
  });
}

SPARSE_API sparse_status sparse_mulaw_encode(const float* in, size_t n, uint8_t* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(n == 0 || (in != nullptr && out != nullptr), "in or out is NULL");
    for (size_t i = 0; i < n; ++i) out[i] = sparse::data::mulaw_encode(in[i]);
  });
}

SPARSE_API sparse_status sparse_mulaw_decode(const uint8_t* in, size_t n, float* out) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(n == 0 || (in != nullptr && out != nullptr), "in or out is NULL");
    for (size_t i = 0; i < n; ++i) out[i] = sparse::data::mulaw_decode(in[i]);
  });
}

SPARSE_API int sparse_dataset_audio_supported(void) {
  return sparse::data::audio_supported() ? 1 : 0;
}

}  // extern "C"
