// The checkpoint format: hashes, a small JSON reader for the safetensors header, and the parser
// that validates a whole checkpoint held in memory. See checkpoint.hpp for the layout.
#include "libsparse/model/checkpoint_format.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "libsparse/error.hpp"

namespace sparse::model::ckpt {
namespace {

constexpr uint64_t kMaxHeader = uint64_t{1} << 28;  // bytes of JSON header

}  // namespace

uint64_t fnv1a(const uint8_t* data, size_t size, uint64_t h) {
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

// FNV-1a 64 of the 8-byte length prefix and the header text, with the 16 hex digits of the
// "header_checksum" value, which start at `digits`, read as '0'.
uint64_t header_hash(const uint8_t* prefix, const std::string& header, size_t digits) {
  std::string text = header;
  text.replace(digits, 16, kZeroHex);
  return fnv1a(reinterpret_cast<const uint8_t*>(text.data()), text.size(), fnv1a(prefix, 8));
}

std::string loss_scale_text(double scale) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", scale);
  return buf;
}

namespace {

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
  size_t begin = 0, end = 0;            // the value's bytes in the parsed text
};

class JsonReader {
 public:
  JsonReader(const char* data, size_t size, std::string where)
      : start_(data), p_(data), end_(data + size), where_(std::move(where)) {}

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
    const size_t begin = static_cast<size_t>(p_ - start_);
    Json v = value_at(depth);
    v.begin = begin;
    v.end = static_cast<size_t>(p_ - start_);
    return v;
  }
  Json value_at(int depth) {
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

  const char* start_;
  const char* p_;
  const char* end_;
  std::string where_;
};

}  // namespace

std::vector<std::pair<std::string, const TensorSpec*>> tensor_names(const ParamTable& t) {
  std::vector<std::pair<std::string, const TensorSpec*>> names;
  for (const char* prefix : {"param.", "adam_m.", "adam_v."})
    for (const TensorSpec& s : t.tensors) names.emplace_back(prefix + s.name, &s);
  return names;
}

CheckpointContents parse_checkpoint_bytes(const std::vector<uint8_t>& file,
                                          const std::string& where) {
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
  const std::string& format = meta_str("format");
  const bool v1 = format == kFormatV1;
  if (format != kFormat && !v1)
    throw_error(SPARSE_ERR_FORMAT, where, ": format \"", format, "\", expected \"", kFormat,
                "\" (or the older \"", kFormatV1, "\")");
  const std::string header(reinterpret_cast<const char*>(file.data()) + 8,
                           static_cast<size_t>(header_len));
  auto header_sum = meta.members.find("header_checksum");
  if (v1 && header_sum != meta.members.end())
    throw_error(SPARSE_ERR_FORMAT, where, " is corrupted: format \"", kFormatV1,
                "\" has no header_checksum, but this header holds one");
  if (!v1) {
    // The header (configuration, step, seeds, tensor table) is covered by its own checksum; the
    // tensor data by "checksum" below.
    const std::string& given = meta_str("header_checksum");
    const Json& value = header_sum->second;
    if (given.size() != 16 || value.end - value.begin != 18 ||
        given.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw_error(SPARSE_ERR_FORMAT, where, ": header_checksum \"", given,
                  "\" is not 16 lowercase hex digits");
    const std::string computed = hex64(header_hash(file.data(), header, value.begin + 1));
    if (computed != given)
      throw_error(SPARSE_ERR_FORMAT, where, " is corrupted: the checksum of its header is ",
                  computed, ", the header says ", given);
  }
  CheckpointContents out;
  out.config = config_from_string(meta_str("model_config"));
  out.train = train_config_from_string(meta_str("train_config"));
  if (meta.members.count("dropout_seed") != 0 || !v1) {
    const std::string want = std::to_string(out.config.seed);
    if (meta_str("dropout_seed") != want)
      throw_error(SPARSE_ERR_FORMAT, where, ": dropout_seed \"", meta_str("dropout_seed"),
                  "\" differs from the model configuration's seed ", want);
  }
  auto count = [&](const char* key) -> int64_t {
    const std::string& s = meta_str(key);
    bool ok = !s.empty() && s.size() <= 18;
    for (char c : s) ok = ok && c >= '0' && c <= '9';
    if (!ok) throw_error(SPARSE_ERR_FORMAT, where, ": ", key, " \"", s, "\" is not a count");
    return std::stoll(s);
  };
  out.step = count("step");
  // The loss scaler's state, optional (absent in older files and in runs without dynamic
  // scaling).
  if (meta.members.count("skipped_steps") != 0) out.skipped_steps = count("skipped_steps");
  if (meta.members.count("loss_scale") != 0) {
    const std::string& s = meta_str("loss_scale");
    char* end = nullptr;
    const double scale = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(scale) || !(scale > 0))
      throw_error(SPARSE_ERR_FORMAT, where, ": loss_scale \"", s,
                  "\" is not a finite positive number");
    out.has_loss_scale = true;
    out.loss_scale = scale;
    out.loss_scale_clean_steps = count("loss_scale_clean_steps");
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
  for (const auto& entry : names) {
    const std::string& name = entry.first;  // a plain reference: lambdas below capture it
    const TensorSpec* spec = entry.second;
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

}  // namespace sparse::model::ckpt
