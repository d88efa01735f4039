// Safetensors checkpoints (see checkpoint.hpp): writing, loading and restoring.
#include "checkpoint.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "checkpoint_format.hpp"
#include "error.hpp"

namespace sparse::model {
namespace {

using namespace ckpt;

const AlignedVector<float>& source_of(const Trainer& tr, const std::string& name) {
  if (name.rfind("param.", 0) == 0) return tr.model().params;
  if (name.rfind("adam_m.", 0) == 0) return tr.adam_m;
  return tr.adam_v;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw_error(SPARSE_ERR_IO, "cannot open checkpoint \"", path, "\": ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw_error(SPARSE_ERR_IO, "cannot read checkpoint \"", path, "\"");
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> data(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(data.data()), size))
    throw_error(SPARSE_ERR_IO, "cannot read checkpoint \"", path, "\"");
  return data;
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
  std::ostringstream tensors;
  uint64_t offset = 0;
  for (const auto& [name, spec] : names) {
    const uint64_t bytes = static_cast<uint64_t>(spec->size) * 4;
    std::memcpy(data.data() + offset, source_of(trainer, name).data() + spec->offset, bytes);
    tensors << "," << json_string(name) << ":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < spec->shape.size(); ++i) tensors << (i ? "," : "") << spec->shape[i];
    tensors << "],\"data_offsets\":[" << offset << "," << offset + bytes << "]}";
    offset += bytes;
  }
  std::string header =
      "{\"__metadata__\":{\"format\":" + json_string(kFormat) +
      ",\"model_config\":" + json_string(config_to_string(trainer.model().config())) +
      ",\"train_config\":" + json_string(train_config_to_string(trainer.train_config())) +
      ",\"step\":" + json_string(std::to_string(trainer.step)) +
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

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr)
    throw_error(SPARSE_ERR_IO, "cannot create \"", tmp, "\": ", std::strerror(errno));
  bool ok = std::fwrite(len, 1, 8, f) == 8 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            (data.empty() || std::fwrite(data.data(), 1, data.size(), f) == data.size()) &&
            std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw_error(SPARSE_ERR_IO, "cannot write \"", tmp, "\": ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw_error(SPARSE_ERR_IO, "cannot rename \"", tmp, "\" to \"", path, "\": ", std::strerror(e));
  }
}

std::unique_ptr<Trainer> load_checkpoint(const std::string& path, int num_threads) {
  require(!path.empty(), "path is empty");
  CheckpointContents l = parse_checkpoint(path);
  auto trainer = std::make_unique<Trainer>(l.config, l.train, num_threads);
  trainer->model().params = std::move(l.params);
  trainer->adam_m = std::move(l.m);
  trainer->adam_v = std::move(l.v);
  trainer->step = l.step;
  return trainer;
}

void restore_checkpoint(Trainer& trainer, const std::string& path) {
  require(!path.empty(), "path is empty");
  CheckpointContents l = parse_checkpoint(path);
  const std::string mine = config_to_string(trainer.model().config());
  const std::string theirs = config_to_string(l.config);
  if (mine != theirs)
    throw_error(SPARSE_ERR_FORMAT, "checkpoint \"", path,
                "\" was written by a model with a different configuration (", theirs,
                ") than this model's (", mine, ")");
  trainer.model().params = std::move(l.params);
  trainer.adam_m = std::move(l.m);
  trainer.adam_v = std::move(l.v);
  trainer.step = l.step;
}

}  // namespace sparse::model
