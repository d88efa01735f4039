// The checkpoint format shared by the writer (checkpoint.cpp) and the reader
// (checkpoint_format.cpp, which has no dependency on the trainer, so it can be fuzzed alone).
// The layout is described in checkpoint.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "libsparse/model/config.hpp"
#include "libsparse/model/transformer.hpp"

namespace sparse::model::ckpt {

constexpr const char* kFormat = "sparse-checkpoint-2";
// The previous layout, whose checksum covers the tensor data only (no "header_checksum").
constexpr const char* kFormatV1 = "sparse-checkpoint-1";
constexpr const char* kZeroHex = "0000000000000000";

uint64_t fnv1a(const uint8_t* data, size_t size, uint64_t h = 0xcbf29ce484222325ull);
std::string hex64(uint64_t v);
std::string json_string(const std::string& s);
// FNV-1a 64 of the 8-byte length prefix and the header text, with the 16 hex digits of the
// "header_checksum" value, which start at `digits`, read as '0'.
uint64_t header_hash(const uint8_t* prefix, const std::string& header, size_t digits);
// "param.<name>", "adam_m.<name>", "adam_v.<name>" for every tensor, in file order.
std::vector<std::pair<std::string, const TensorSpec*>> tensor_names(const ParamTable& t);

// The validated contents of a checkpoint held in memory; `where` names it in errors. Throws
// sparse::Error (SPARSE_ERR_FORMAT) for any malformed, corrupted or inconsistent input.
struct CheckpointContents {
  sparse_model_config config;
  sparse_train_config train;
  int64_t step;
  AlignedVector<float> params, m, v;
  // The dynamic loss scaler's state; has_loss_scale is false for a run without dynamic scaling
  // and for files written before the scaler was saved (the configured initial scale applies).
  bool has_loss_scale = false;
  double loss_scale = 1;
  int64_t loss_scale_clean_steps = 0;
  int64_t skipped_steps = 0;
};
// The exact decimal text of a loss scale (17 significant digits: read back bit for bit).
std::string loss_scale_text(double scale);
CheckpointContents parse_checkpoint_bytes(const std::vector<uint8_t>& file,
                                          const std::string& where);

}  // namespace sparse::model::ckpt
