// Safetensors checkpoints (see checkpoint.hpp): writing, loading and restoring.
#include "libsparse/model/checkpoint.hpp"

#include <cstring>
#include <sstream>
#include <vector>

#include "libsparse/error.hpp"
#include "libsparse/file_io.hpp"
#include "libsparse/model/checkpoint_format.hpp"

namespace sparse::model {
namespace {

using namespace ckpt;

// The parameters and Adam moments copied to the host (through the backend: they may live in
// device memory).
struct HostState {
  std::vector<float> params, m, v;
  const std::vector<float>& of(const std::string& name) const {
    if (name.rfind("param.", 0) == 0) return params;
    if (name.rfind("adam_m.", 0) == 0) return m;
    return v;
  }
};

// The loss scaler's metadata entries: the skipped steps always, the scale and the clean steps
// since its last change only when the scale is dynamic.
std::string loss_scaler_metadata(const Trainer& trainer) {
  const LossScaler& s = trainer.loss_scaler;
  std::string out = ",\"skipped_steps\":" + json_string(std::to_string(s.skipped));
  if (s.dynamic)
    out += ",\"loss_scale\":" + json_string(loss_scale_text(s.scale)) +
           ",\"loss_scale_clean_steps\":" + json_string(std::to_string(s.clean));
  return out;
}

// Restores the loss scaler's state where the checkpoint holds it and the trainer scales
// dynamically; otherwise the trainer keeps its configured initial scale.
void restore_loss_scaler(LossScaler& s, const CheckpointContents& l) {
  s.skipped = l.skipped_steps;
  if (s.dynamic && l.has_loss_scale) {
    s.scale = l.loss_scale;
    s.clean = l.loss_scale_clean_steps;
  }
}

std::vector<uint8_t> read_file(const std::string& path) {
  return read_regular_file(path, "checkpoint");
}

}  // namespace

namespace {
CheckpointContents parse_checkpoint(const std::string& path) {
  return parse_checkpoint_bytes(read_file(path), "checkpoint \"" + path + "\"");
}
}  // namespace

void save_checkpoint(const Trainer& trainer, const std::string& path) {
  require(!path.empty(), "path is empty");
  const ParamTable& table = trainer.model().table();
  const auto names = tensor_names(table);
  // Data section first (its checksum goes into the header).
  uint64_t total = 0;
  for (const auto& entry : names) total += static_cast<uint64_t>(entry.second->size) * 4;
  std::vector<uint8_t> data(static_cast<size_t>(total));
  const HostState host{trainer.model().params.to_host(), trainer.adam_m.to_host(),
                       trainer.adam_v.to_host()};
  std::ostringstream tensors;
  uint64_t offset = 0;
  for (const auto& [name, spec] : names) {
    const uint64_t bytes = static_cast<uint64_t>(spec->size) * 4;
    std::memcpy(data.data() + offset, host.of(name).data() + spec->offset, bytes);
    tensors << "," << json_string(name) << ":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < spec->shape.size(); ++i) tensors << (i ? "," : "") << spec->shape[i];
    tensors << "],\"data_offsets\":[" << offset << "," << offset + bytes << "]}";
    offset += bytes;
  }
  std::string header =
      "{\"__metadata__\":{\"format\":" + json_string(kFormat) +
      ",\"model_config\":" + json_string(config_to_string(trainer.model().config())) +
      ",\"train_config\":" + json_string(train_config_to_string(trainer.train_config())) +
      ",\"step\":" + json_string(std::to_string(trainer.step)) + loss_scaler_metadata(trainer) +
      ",\"dropout_seed\":" + json_string(std::to_string(trainer.model().config().seed)) +
      ",\"checksum\":" + json_string(hex64(fnv1a(data.data(), data.size()))) +
      ",\"header_checksum\":\"";
  const size_t digits = header.size();
  header += std::string(kZeroHex) + "\"}" + tensors.str() + "}";
  while (header.size() % 8 != 0) header += ' ';
  uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  header.replace(digits, 16, hex64(header_hash(len, header, digits)));

  write_file_atomically(
      path, {{len, 8}, {header.data(), header.size()}, {data.data(), data.size()}}, "checkpoint");
}

namespace {

const char* products_name(sparse_dtype dtype) {
  switch (dtype) {
    case SPARSE_DTYPE_F32:
      return "fp32";
    case SPARSE_DTYPE_BF16:
      return "bf16";
    case SPARSE_DTYPE_F16:
      return "fp16";
    default:
      return "an unknown dtype";
  }
}

// The trainer of checkpoint `l` (read from `path`), its state as saved. `replaced` says whether
// the caller chose the dtype (otherwise it is the checkpoint's own).
std::unique_ptr<Trainer> trainer_from(CheckpointContents& l, Backend& backend,
                                      const std::string& path, bool replaced) {
  std::unique_ptr<Trainer> trainer;
  try {
    trainer = std::make_unique<Trainer>(l.config, l.train, backend);
  } catch (const Error& e) {
    if (e.status() != SPARSE_ERR_UNSUPPORTED || l.train.dtype == SPARSE_DTYPE_F32) throw;
    const char* dtype = products_name(l.train.dtype);
    if (replaced)
      throw_error(SPARSE_ERR_UNSUPPORTED, "checkpoint \"", path, "\" cannot be loaded with ", dtype,
                  " matrix products: ", e.what());
    throw_error(
        SPARSE_ERR_UNSUPPORTED, "checkpoint \"", path, "\" was trained with ", dtype,
        " matrix products (its trainer configuration's dtype), which cannot run here: ", e.what());
  }
  trainer->model().params = std::move(l.params);
  trainer->adam_m = std::move(l.m);
  trainer->adam_v = std::move(l.v);
  trainer->step = l.step;
  restore_loss_scaler(trainer->loss_scaler, l);
  return trainer;
}

}  // namespace

std::unique_ptr<Trainer> load_checkpoint(const std::string& path, Backend& backend) {
  require(!path.empty(), "path is empty");
  CheckpointContents l = parse_checkpoint(path);
  return trainer_from(l, backend, path, false);
}

std::unique_ptr<Trainer> load_checkpoint(const std::string& path, Backend& backend, int products) {
  require(!path.empty(), "path is empty");
  require(
      products == SPARSE_DTYPE_F32 || products == SPARSE_DTYPE_BF16 || products == SPARSE_DTYPE_F16,
      "dtype = ", products,
      " must be SPARSE_DTYPE_F32, SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16 (the precision of the "
      "matrix products)");
  CheckpointContents l = parse_checkpoint(path);
  l.train.dtype = static_cast<sparse_dtype>(products);
  return trainer_from(l, backend, path, true);
}

void restore_checkpoint(Trainer& trainer, const std::string& path) {
  trainer.require_not_stepping();
  require(!path.empty(), "path is empty");
  CheckpointContents l = parse_checkpoint(path);
  if (config_to_string(trainer.model().config()) != config_to_string(l.config))
    throw_error(SPARSE_ERR_FORMAT, "checkpoint \"", path,
                "\" was written by a model with a different configuration (checkpoint vs this "
                "model: ",
                config_differences(l.config, trainer.model().config()), ")");
  trainer.model().params = std::move(l.params);
  trainer.adam_m = std::move(l.m);
  trainer.adam_v = std::move(l.v);
  trainer.step = l.step;
  restore_loss_scaler(trainer.loss_scaler, l);
}

}  // namespace sparse::model
