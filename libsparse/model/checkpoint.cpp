// Safetensors checkpoints (see checkpoint.hpp), with a small JSON reader for their header.
#include "libsparse/model/checkpoint.hpp"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "libsparse/error.hpp"

namespace sparse::model {
namespace {

constexpr const char* kFormat = "sparse-checkpoint-1";
constexpr uint64_t kMaxHeader = uint64_t{1} << 28;

uint64_t fnv1a(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// ---------------------------------------------------------------- a small JSON reader
// Enough JSON for safetensors headers: objects, arrays, strings, non-negative integers (other
// values are parsed and kept as text). Nesting is limited, so hostile input cannot overflow the
// stack.
struct Json {
  enum Kind { Object, Array, String, Number, Other } kind = Other;
  std::string text;                     // String, Number, Other
  std::vector<Json> items;              // Array
  std::map<std::string, Json> members;  // Object
  std::vector<std::string> order;       // Object keys in file order
};

class JsonReader {
 public:
  JsonReader(const char* data, size_t size, std::string where)
      : p_(data), end_(data + size), where_(std::move(where)) {}

  Json parse() {
    Json v = value(0);
    skip();
    if (p_ != end_) fail("unexpected text after the JSON header");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw_error(SPARSE_ERR_FORMAT, where_, ": corrupted header: ", what);
  }
  void skip() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\t' || *p_ == '\r')) ++p_;
  }
  void expect(char c) {
    skip();
    if (p_ >= end_ || *p_ != c) fail(std::string("expected '") + c + "'");
    ++p_;
  }
  Json value(int depth) {
    if (depth > 8) fail("nested too deeply");
    skip();
    if (p_ >= end_) fail("unexpected end");
    Json v;
    if (*p_ == '{') {
      v.kind = Json::Object;
      ++p_;
      skip();
      if (p_ < end_ && *p_ == '}') {
        ++p_;
        return v;
      }
      for (;;) {
        skip();
        std::string key = string();
        expect(':');
        Json member = value(depth + 1);
        if (v.members.count(key)) fail("duplicate key \"" + key + "\"");
        v.order.push_back(key);
        v.members.emplace(std::move(key), std::move(member));
        skip();
        if (p_ < end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (*p_ == '[') {
      v.kind = Json::Array;
      ++p_;
      skip();
      if (p_ < end_ && *p_ == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        v.items.push_back(value(depth + 1));
        skip();
        if (p_ < end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (*p_ == '"') {
      v.kind = Json::String;
      v.text = string();
      return v;
    }
    const char* start = p_;
    while (p_ < end_ && (std::isalnum(static_cast<unsigned char>(*p_)) || *p_ == '-' ||
                         *p_ == '+' || *p_ == '.'))
      ++p_;
    if (p_ == start) fail("unexpected character");
    v.text.assign(start, p_);
    v.kind = Json::Other;
    bool digits = !v.text.empty() && v.text.size() <= 19;
    for (char c : v.text) digits = digits && c >= '0' && c <= '9';
    if (digits) v.kind = Json::Number;
    return v;
  }
  std::string string() {
    skip();
    if (p_ >= end_ || *p_ != '"') fail("expected a string");
    ++p_;
    std::string out;
    while (p_ < end_ && *p_ != '"') {
      char c = *p_++;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c == '\\') {
        if (p_ >= end_) fail("unexpected end in a string");
        const char e = *p_++;
        switch (e) {
          case '"':
          case '\\':
          case '/':
            out += e;
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'n':
            out += '\n';
            break;
          case 'r':
            out += '\r';
            break;
          case 't':
            out += '\t';
            break;
          case 'u': {
            if (end_ - p_ < 4) fail("bad \\u escape");
            unsigned code = 0;
            for (int i = 0; i < 4; ++i) {
              const char h = *p_++;
              code <<= 4;
              if (h >= '0' && h <= '9')
                code |= static_cast<unsigned>(h - '0');
              else if (h >= 'a' && h <= 'f')
                code |= static_cast<unsigned>(h - 'a' + 10);
              else if (h >= 'A' && h <= 'F')
                code |= static_cast<unsigned>(h - 'A' + 10);
              else
                fail("bad \\u escape");
            }
            if (code >= 0x80) fail("non-ASCII \\u escape");
            out += static_cast<char>(code);
            break;
          }
          default:
            fail("bad escape");
        }
      } else {
        out += c;
      }
    }
    if (p_ >= end_) fail("unterminated string");
    ++p_;
    return out;
  }

  const char* p_;
  const char* end_;
  std::string where_;
};

std::vector<std::pair<std::string, const TensorSpec*>> tensor_names(const ParamTable& t) {
  std::vector<std::pair<std::string, const TensorSpec*>> names;
  for (const char* prefix : {"param.", "adam_m.", "adam_v."})
    for (const TensorSpec& s : t.tensors) names.emplace_back(prefix + s.name, &s);
  return names;
}

const Buffer<float>& source_of(const Trainer& tr, const std::string& name) {
  if (name.rfind("param.", 0) == 0) return tr.model().params;
  if (name.rfind("adam_m.", 0) == 0) return tr.adam_m;
  return tr.adam_v;
}

struct Loaded {
  sparse_model_config config;
  sparse_train_config train;
  int64_t step;
  AlignedVector<float> params, m, v;
};

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

Loaded parse_checkpoint(const std::string& path) {
  const std::vector<uint8_t> file = read_file(path);
  const std::string where = "checkpoint \"" + path + "\"";
  if (file.size() < 8)
    throw_error(SPARSE_ERR_FORMAT, where, " is truncated: ", file.size(),
                " bytes, shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file[static_cast<size_t>(i)];
  if (header_len > kMaxHeader || header_len > file.size() - 8)
    throw_error(SPARSE_ERR_FORMAT, where, " is truncated or corrupted: header length ", header_len,
                " but the file has ", file.size(), " bytes");
  const Json root =
      JsonReader(reinterpret_cast<const char*>(file.data()) + 8, header_len, where).parse();
  if (root.kind != Json::Object) throw_error(SPARSE_ERR_FORMAT, where, ": header is not an object");
  auto meta_it = root.members.find("__metadata__");
  if (meta_it == root.members.end() || meta_it->second.kind != Json::Object)
    throw_error(SPARSE_ERR_FORMAT, where,
                " has no __metadata__ object (not a libsparse checkpoint)");
  const Json& meta = meta_it->second;
  auto meta_str = [&](const char* key) -> const std::string& {
    auto it = meta.members.find(key);
    if (it == meta.members.end() || it->second.kind != Json::String)
      throw_error(SPARSE_ERR_FORMAT, where, ": __metadata__ lacks the string \"", key, "\"");
    return it->second.text;
  };
  if (meta_str("format") != kFormat)
    throw_error(SPARSE_ERR_FORMAT, where, ": format \"", meta_str("format"), "\", expected \"",
                kFormat, "\"");
  Loaded out;
  out.config = config_from_string(meta_str("model_config"));
  out.train = train_config_from_string(meta_str("train_config"));
  {
    const std::string& s = meta_str("step");
    bool ok = !s.empty() && s.size() <= 18;
    for (char c : s) ok = ok && c >= '0' && c <= '9';
    if (!ok) throw_error(SPARSE_ERR_FORMAT, where, ": step \"", s, "\" is not a count");
    out.step = std::stoll(s);
  }
  const uint8_t* data = file.data() + 8 + header_len;
  const uint64_t data_size = file.size() - 8 - header_len;
  if (meta_str("checksum").size() != 16)
    throw_error(SPARSE_ERR_FORMAT, where, ": checksum is not 16 hex digits");

  const ParamTable table = param_table(out.config);
  const auto names = tensor_names(table);
  if (root.members.size() != names.size() + 1)
    throw_error(SPARSE_ERR_FORMAT, where, " holds ", root.members.size() - 1,
                " tensors but its configuration has ", names.size());
  out.params.assign(static_cast<size_t>(table.total), 0.0f);
  out.m = out.params;
  out.v = out.params;
  uint64_t expected_end = 0;
  for (const auto& [name, spec] : names) {
    auto it = root.members.find(name);
    if (it == root.members.end())
      throw_error(SPARSE_ERR_FORMAT, where, " lacks tensor \"", name, "\"");
    const Json& t = it->second;
    auto field = [&](const char* key) -> const Json& {
      auto f = t.members.find(key);
      if (t.kind != Json::Object || f == t.members.end())
        throw_error(SPARSE_ERR_FORMAT, where, ": tensor \"", name, "\" lacks \"", key, "\"");
      return f->second;
    };
    if (field("dtype").kind != Json::String || field("dtype").text != "F32")
      throw_error(SPARSE_ERR_FORMAT, where, ": tensor \"", name, "\" has dtype ",
                  field("dtype").text, ", expected F32");
    const Json& shape = field("shape");
    bool shape_ok = shape.kind == Json::Array && shape.items.size() == spec->shape.size();
    for (size_t i = 0; shape_ok && i < shape.items.size(); ++i)
      shape_ok = shape.items[i].kind == Json::Number &&
                 std::to_string(spec->shape[i]) == shape.items[i].text;
    if (!shape_ok) {
      std::ostringstream want;
      for (size_t i = 0; i < spec->shape.size(); ++i) want << (i ? ", " : "[") << spec->shape[i];
      throw_error(SPARSE_ERR_FORMAT, where, ": tensor \"", name,
                  "\" does not have the shape its configuration gives, ", want.str(), "]");
    }
    const Json& off = field("data_offsets");
    if (off.kind != Json::Array || off.items.size() != 2 || off.items[0].kind != Json::Number ||
        off.items[1].kind != Json::Number)
      throw_error(SPARSE_ERR_FORMAT, where, ": tensor \"", name, "\" has bad data_offsets");
    const uint64_t begin = std::stoull(off.items[0].text), end = std::stoull(off.items[1].text);
    const uint64_t bytes = static_cast<uint64_t>(spec->size) * sizeof(float);
    if (begin != expected_end || end < begin || end - begin != bytes)
      throw_error(SPARSE_ERR_FORMAT, where, ": tensor \"", name, "\" has data_offsets [", begin,
                  ", ", end, "], expected [", expected_end, ", ", expected_end + bytes, "]");
    if (end > data_size)
      throw_error(SPARSE_ERR_FORMAT, where, " is truncated: tensor \"", name, "\" ends at byte ",
                  end, " of a data section of ", data_size, " bytes");
    expected_end = end;
    AlignedVector<float>& dst = name.rfind("param.", 0) == 0    ? out.params
                                : name.rfind("adam_m.", 0) == 0 ? out.m
                                                                : out.v;
    std::memcpy(dst.data() + spec->offset, data + begin, bytes);
  }
  if (expected_end != data_size)
    throw_error(SPARSE_ERR_FORMAT, where, " has ", data_size - expected_end,
                " bytes after its last tensor");
  if (hex64(fnv1a(data, static_cast<size_t>(data_size))) != meta_str("checksum"))
    throw_error(SPARSE_ERR_FORMAT, where,
                " is corrupted: the checksum of its tensor data does not match its header");
  return out;
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
      ",\"checksum\":" + json_string(hex64(fnv1a(data.data(), data.size()))) + "}" + tensors.str() +
      "}";
  while (header.size() % 8 != 0) header += ' ';
  uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));

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

std::unique_ptr<Trainer> load_checkpoint(const std::string& path, Backend& backend) {
  require(!path.empty(), "path is empty");
  Loaded l = parse_checkpoint(path);
  auto trainer = std::make_unique<Trainer>(l.config, l.train, backend);
  trainer->model().params = std::move(l.params);
  trainer->adam_m = std::move(l.m);
  trainer->adam_v = std::move(l.v);
  trainer->step = l.step;
  return trainer;
}

void restore_checkpoint(Trainer& trainer, const std::string& path) {
  require(!path.empty(), "path is empty");
  Loaded l = parse_checkpoint(path);
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
