// Model configuration, presets and the parameter table (see config.hpp).
#include "libsparse/model/config.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <sstream>

#include "libsparse/error.hpp"
#include "libsparse/resources.hpp"

namespace sparse::model {

sparse_model_config default_config() {
  sparse_model_config c;
  std::memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.seq_len = 256;
  c.num_layers = 2;
  c.d_model = 64;
  c.num_heads = 2;
  c.attention = SPARSE_MODEL_ATTENTION_STRIDED;
  c.head_mode = SPARSE_HEADS_INTERLEAVED;
  c.stride = 16;
  c.summary = 4;
  c.block_size = 16;
  std::strcpy(c.layer_cycle, "12");
  c.half_qk = 0;
  c.half_ff = 0;
  c.dropout = 0.0f;
  c.tied_embeddings = 0;
  c.num_position_dims = 2;
  c.position_shape[0] = 16;
  c.position_shape[1] = 16;
  c.recompute = 0;
  c.seed = 1;
  c.output_init_std = 0.0f;
  c.row_attention = SPARSE_ROW_STRIDED;
  c.summary_variants = 1;
  return c;
}

namespace {

void set_positions(sparse_model_config& c, std::initializer_list<int64_t> sizes) {
  c.num_position_dims = static_cast<int32_t>(sizes.size());
  int i = 0;
  for (int64_t s : sizes) c.position_shape[i++] = s;
  for (; i < 4; ++i) c.position_shape[i] = 0;
}

}  // namespace

sparse_model_config preset_config(const std::string& name) {
  std::string base = name;
  const bool small = base.size() > 6 && base.compare(base.size() - 6, 6, "-small") == 0;
  if (small) base.resize(base.size() - 6);
  // "-openai": the configuration OpenAI's released code trained, where it differs from the
  // paper's formulas. Only CIFAR-10's training code (c10-58m) was released.
  const bool openai = base == "cifar10-openai";
  if (openai) base = "cifar10";
  sparse_model_config c = default_config();
  if (base == "cifar10") {
    // The shape of OpenAI's c10-58m: strided, l = one image row (32 pixels x 3 channels), one
    // column layer per three row layers ("2111").
    c.seq_len = 3072;
    c.num_layers = 128;
    c.d_model = 256;
    c.num_heads = 2;
    c.attention = SPARSE_MODEL_ATTENTION_STRIDED;
    c.stride = 96;
    c.block_size = 32;
    std::strcpy(c.layer_cycle, "2111");
    c.half_qk = 1;
    c.half_ff = 1;
    c.dropout = 0.25f;
    set_positions(c, {32, 32, 3});
  } else if (base == "enwik8") {
    c.seq_len = 12288;
    c.num_layers = 30;
    c.d_model = 512;
    c.num_heads = 8;
    c.attention = SPARSE_MODEL_ATTENTION_FIXED;
    c.stride = 128;
    c.summary = 32;
    c.block_size = 32;  // divides c, so summary blocks are fully useful
    c.dropout = 0.40f;
    set_positions(c, {96, 128});
  } else if (base == "imagenet64") {
    c.seq_len = 12288;
    c.num_layers = 48;
    c.d_model = 512;
    c.num_heads = 16;
    c.attention = SPARSE_MODEL_ATTENTION_STRIDED;
    c.stride = 128;
    c.block_size = 64;
    c.dropout = 0.01f;
    set_positions(c, {64, 64, 3});
  } else if (base == "audio") {
    c.seq_len = 65536;
    c.num_layers = 48;
    c.d_model = 512;
    c.num_heads = 16;
    c.attention = SPARSE_MODEL_ATTENTION_STRIDED;
    c.stride = 256;
    c.block_size = 64;
    c.dropout = 0.0f;
    set_positions(c, {256, 256});
  } else {
    throw_invalid("unknown model preset \"", name,
                  "\" (expected cifar10, cifar10-openai, enwik8, imagenet64, audio, optionally "
                  "with -small)");
  }
  // c10-58m's row layers are its 'local' attention over the last l positions, the query
  // included: l keys, where the paper's strided row formula gives l + 1.
  if (openai) c.row_attention = SPARSE_ROW_LOCAL;
  if (small) {
    c.num_layers = 4;
    c.d_model = 64;
    c.num_heads = 2;
  }
  return c;
}

void validate_config(const sparse_model_config& c) {
  require(c.seq_len >= 2, "seq_len = ", c.seq_len, " must be >= 2");
  require(c.seq_len <= (int64_t{1} << 30), "seq_len = ", c.seq_len, " is too large");
  require(c.num_layers >= 1, "num_layers = ", c.num_layers, " must be >= 1");
  require(c.num_heads >= 1, "num_heads = ", c.num_heads, " must be >= 1");
  require(c.d_model >= 1 && c.d_model % c.num_heads == 0, "d_model = ", c.d_model,
          " must be a positive multiple of num_heads = ", c.num_heads);
  require(!c.half_qk || c.d_model % (2 * c.num_heads) == 0, "half_qk needs d_model = ", c.d_model,
          " to be a multiple of 2 * num_heads = ", 2 * c.num_heads);
  // A C caller may store any int in the enum fields: read them as ints, since loading an
  // out-of-range value as the enum type is undefined in C++.
  int attention = 0, head_mode = 0;
  static_assert(sizeof attention == sizeof c.attention && sizeof head_mode == sizeof c.head_mode,
                "enum fields are int-sized");
  std::memcpy(&attention, &c.attention, sizeof attention);
  std::memcpy(&head_mode, &c.head_mode, sizeof head_mode);
  require(attention == SPARSE_MODEL_ATTENTION_DENSE ||
              attention == SPARSE_MODEL_ATTENTION_STRIDED ||
              attention == SPARSE_MODEL_ATTENTION_FIXED,
          "attention = ", attention, " is not a sparse_model_attention");
  require(head_mode == SPARSE_HEADS_INTERLEAVED || head_mode == SPARSE_HEADS_MERGED ||
              head_mode == SPARSE_HEADS_MULTIHEAD,
          "head_mode = ", head_mode, " is not a sparse_head_mode");
  if (c.attention != SPARSE_MODEL_ATTENTION_DENSE) {
    require(c.stride >= 1 && c.stride <= c.seq_len, "stride = ", c.stride,
            " must be in [1, seq_len = ", c.seq_len, "]");
    if (c.attention == SPARSE_MODEL_ATTENTION_FIXED) {
      require(c.summary >= 1 && c.summary <= c.stride, "summary = ", c.summary,
              " must be in [1, stride = ", c.stride, "]");
      require(c.summary_variants >= 0, "summary_variants = ", c.summary_variants,
              " must be >= 0 (0 and 1 are the paper's single summary offset)");
      require(c.summary * std::max<int64_t>(1, c.summary_variants) <= c.stride,
              "summary * summary_variants = ", c.summary, " * ", c.summary_variants,
              " exceeds stride = ", c.stride);
    }
    require(c.head_mode != SPARSE_HEADS_MULTIHEAD || c.num_heads >= 2,
            "head_mode MULTIHEAD needs num_heads >= 2, got ", c.num_heads);
  }
  require(c.block_size == 16 || c.block_size == 32 || c.block_size == 64 || c.block_size == 128,
          "block_size = ", c.block_size, " must be 16, 32, 64 or 128");
  const size_t cycle_len = strnlen(c.layer_cycle, sizeof c.layer_cycle);
  require(cycle_len < sizeof c.layer_cycle, "layer_cycle is not NUL-terminated");
  if (c.head_mode == SPARSE_HEADS_INTERLEAVED) {
    require(cycle_len >= 1, "layer_cycle is empty");
    for (size_t i = 0; i < cycle_len; ++i)
      require(c.layer_cycle[i] == '1' || c.layer_cycle[i] == '2', "layer_cycle = \"", c.layer_cycle,
              "\" may only contain '1' and '2'");
  }
  int row_attention = 0;
  static_assert(sizeof row_attention == sizeof c.row_attention, "enum fields are int-sized");
  std::memcpy(&row_attention, &c.row_attention, sizeof row_attention);
  require(row_attention == SPARSE_ROW_STRIDED || row_attention == SPARSE_ROW_LOCAL,
          "row_attention = ", row_attention, " is not a sparse_row_attention");
  require(c.summary_variants >= 0, "summary_variants = ", c.summary_variants, " must be >= 0");
  require(c.half_qk == 0 || c.half_qk == 1, "half_qk must be 0 or 1");
  require(c.half_ff == 0 || c.half_ff == 1, "half_ff must be 0 or 1");
  require(c.tied_embeddings == 0 || c.tied_embeddings == 1, "tied_embeddings must be 0 or 1");
  require(c.recompute == 0 || c.recompute == 1, "recompute must be 0 or 1");
  require(std::isfinite(c.dropout) && c.dropout >= 0.0f && c.dropout < 1.0f,
          "dropout = ", c.dropout, " must be in [0, 1)");
  require(std::isfinite(c.output_init_std) && c.output_init_std >= 0.0f,
          "output_init_std = ", c.output_init_std, " must be finite and >= 0");
  require(c.num_position_dims >= 1 && c.num_position_dims <= 4,
          "num_position_dims = ", c.num_position_dims, " must be in [1, 4]");
  int64_t product = 1;
  for (int k = 0; k < c.num_position_dims; ++k) {
    require(c.position_shape[k] >= 1 && c.position_shape[k] <= c.seq_len, "position_shape[", k,
            "] = ", c.position_shape[k], " must be in [1, seq_len]");
    product = std::min<int64_t>(product * c.position_shape[k], int64_t{1} << 40);
  }
  require(product >= c.seq_len, "the product of position_shape must be >= seq_len = ", c.seq_len);
  for (unsigned char byte : c.reserved) require(byte == 0, "config reserved bytes must be zero");
}

sparse_train_config default_train_config() {
  sparse_train_config t;
  std::memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  t.optimizer = SPARSE_OPTIMIZER_ADAM;
  t.learning_rate = 3.5e-4f;
  t.beta1 = 0.9f;
  t.beta2 = 0.999f;
  t.epsilon = 1e-8f;
  t.weight_decay = 0.01f;
  t.warmup_steps = 0;
  t.total_steps = 0;
  t.clip_norm = 1.0f;
  t.micro_batch = 0;
  t.dtype = SPARSE_DTYPE_F32;
  t.loss_scale = 0;
  t.loss_scale_window = 0;
  return t;
}

void validate_train_config(const sparse_train_config& t) {
  int optimizer = 0;  // read as an int, as in validate_config
  static_assert(sizeof optimizer == sizeof t.optimizer, "enum fields are int-sized");
  std::memcpy(&optimizer, &t.optimizer, sizeof optimizer);
  require(optimizer == SPARSE_OPTIMIZER_ADAM || optimizer == SPARSE_OPTIMIZER_ADAMW,
          "optimizer = ", optimizer, " is not a sparse_optimizer");
  require(std::isfinite(t.learning_rate) && t.learning_rate > 0,
          "learning_rate = ", t.learning_rate, " must be > 0");
  require(t.beta1 >= 0 && t.beta1 < 1, "beta1 = ", t.beta1, " must be in [0, 1)");
  require(t.beta2 >= 0 && t.beta2 < 1, "beta2 = ", t.beta2, " must be in [0, 1)");
  require(t.epsilon > 0 && std::isfinite(t.epsilon), "epsilon = ", t.epsilon, " must be > 0");
  require(t.weight_decay >= 0 && std::isfinite(t.weight_decay), "weight_decay = ", t.weight_decay,
          " must be >= 0");
  require(t.warmup_steps >= 0, "warmup_steps = ", t.warmup_steps, " must be >= 0");
  require(t.total_steps >= 0, "total_steps = ", t.total_steps, " must be >= 0");
  require(t.clip_norm >= 0 && std::isfinite(t.clip_norm), "clip_norm = ", t.clip_norm,
          " must be >= 0");
  require(t.micro_batch >= 0, "micro_batch = ", t.micro_batch, " must be >= 0");
  int dtype = 0;
  static_assert(sizeof dtype == sizeof t.dtype, "enum fields are int-sized");
  std::memcpy(&dtype, &t.dtype, sizeof dtype);
  require(dtype == SPARSE_DTYPE_F32 || dtype == SPARSE_DTYPE_BF16 || dtype == SPARSE_DTYPE_F16,
          "dtype = ", dtype, " must be SPARSE_DTYPE_F32, SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16");
  require(t.loss_scale >= 0 && std::isfinite(t.loss_scale), "loss_scale = ", t.loss_scale,
          " must be >= 0 and finite");
  if (t.loss_scale > 0) {
    // Unscaling (a division folded into the clipping factor) is exact only for powers of two;
    // below 2^-24 the scaled loss gradient of a typical batch underflows to zero in fp32.
    int exponent = 0;
    const float mantissa = std::frexp(t.loss_scale, &exponent);
    require(mantissa == 0.5f && exponent - 1 >= -24, "loss_scale = ", t.loss_scale,
            " must be 0 (the dtype's default) or a power of two from 2^-24 up (e.g. 65536)");
  }
  require(t.loss_scale_window >= 0, "loss_scale_window = ", t.loss_scale_window, " must be >= 0");
  for (unsigned char byte : t.reserved)
    require(byte == 0, "train config reserved bytes must be zero");
}

Dims dims_of(const sparse_model_config& c) {
  Dims d{};
  d.n = c.seq_len;
  d.d = c.d_model;
  d.heads = c.num_heads;
  d.layers = c.num_layers;
  d.dqk = c.half_qk ? d.d / 2 : d.d;
  d.head_qk = d.dqk / d.heads;
  d.head_v = d.d / d.heads;
  d.inner = c.half_ff ? 2 * d.d : 4 * d.d;
  return d;
}

double parameter_estimate(const sparse_model_config& c) {
  const Dims D = dims_of(c);
  const double d = D.d, dqk = D.dqk, inner = D.inner;
  double positions = 0;
  for (int k = 0; k < c.num_position_dims; ++k)
    positions += static_cast<double>(c.position_shape[k]);
  const double per_layer = 2 * d * dqk + 2 * d * d + 2 * d * inner + 5 * d + inner;
  return (Dims::vocab + 1 + positions + 2) * d + D.layers * per_layer +
         (c.tied_embeddings ? 0 : d * Dims::vocab);
}

ParamTable param_table(const sparse_model_config& c) {
  // The table keeps 12 records per layer and sizes tensors in int64: refuse sizes that could not
  // be held before listing anything.
  const double records = 12.0 * c.num_layers + 8;
  check_memory(records * (sizeof(TensorSpec) + 32),
               detail::concat("the parameter table of ", c.num_layers, " layers"));
  require(parameter_estimate(c) < 0x1p62, "the model is too large (about ", parameter_estimate(c),
          " parameters): reduce d_model, num_layers or position_shape");
  const Dims D = dims_of(c);
  const double d = static_cast<double>(D.d), N = static_cast<double>(D.layers);
  ParamTable t{};
  auto add = [&](std::string name, std::vector<int64_t> shape, Init init, double std, bool decay) {
    TensorSpec s;
    s.name = std::move(name);
    s.shape = std::move(shape);
    s.init = init;
    s.std = std;
    s.decay = decay;
    s.size = 1;
    for (int64_t x : s.shape) s.size *= x;
    s.offset = t.total;
    t.total += s.size;
    t.tensors.push_back(std::move(s));
    return static_cast<int>(t.tensors.size() - 1);
  };
  t.token = add("embed.token", {Dims::vocab, D.d}, Init::Normal, 0.01, true);
  t.start = add("embed.start", {D.d}, Init::Normal, 0.01, true);
  t.num_pos = c.num_position_dims;
  const double pos_std = 0.01 / std::sqrt(static_cast<double>(c.num_position_dims));
  t.pos0 = static_cast<int>(t.tensors.size());
  for (int k = 0; k < c.num_position_dims; ++k)
    add("embed.pos" + std::to_string(k), {c.position_shape[k], D.d}, Init::Normal, pos_std, true);
  t.first_layer = static_cast<int>(t.tensors.size());
  const double inner = static_cast<double>(D.inner);
  for (int64_t l = 0; l < D.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "ln1.gain", {D.d}, Init::One, 0, false);
    add(p + "ln1.bias", {D.d}, Init::Zero, 0, false);
    add(p + "attn.q", {D.d, D.dqk}, Init::Normal, std::sqrt(0.125 / d), true);
    add(p + "attn.k", {D.d, D.dqk}, Init::Normal, std::sqrt(0.125 / d), true);
    add(p + "attn.v", {D.d, D.d}, Init::Normal, std::sqrt(0.125 / d), true);
    add(p + "attn.proj", {D.d, D.d}, Init::Normal, std::sqrt(0.125 * 0.5 / (d * N)), true);
    add(p + "ln2.gain", {D.d}, Init::One, 0, false);
    add(p + "ln2.bias", {D.d}, Init::Zero, 0, false);
    add(p + "ff.w1", {D.d, D.inner}, Init::Normal, std::sqrt(0.125 / d), true);
    add(p + "ff.b1", {D.inner}, Init::Zero, 0, false);
    add(p + "ff.w2", {D.inner, D.d}, Init::Normal, std::sqrt(0.125 * 0.5 / (inner * N)), true);
    add(p + "ff.b2", {D.d}, Init::Zero, 0, false);
  }
  t.final_gain = add("final_ln.gain", {D.d}, Init::One, 0, false);
  t.final_bias = add("final_ln.bias", {D.d}, Init::Zero, 0, false);
  if (!c.tied_embeddings) {
    const double os = static_cast<double>(c.output_init_std);
    t.out = add("out.w", {D.d, Dims::vocab}, os > 0 ? Init::Normal : Init::Zero, os, true);
  }
  return t;
}

// ---------------------------------------------------------------- text form
namespace {

std::map<std::string, std::string> parse_pairs(const std::string& s, const char* what) {
  std::map<std::string, std::string> m;
  std::istringstream in(s);
  std::string item;
  while (std::getline(in, item, ';')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      throw_error(SPARSE_ERR_FORMAT, what, ": \"", item, "\" is not key=value");
    m[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return m;
}

struct Reader {
  std::map<std::string, std::string> m;
  const char* what;
  const std::string& get(const std::string& key) const {
    auto it = m.find(key);
    if (it == m.end()) throw_error(SPARSE_ERR_FORMAT, what, " lacks \"", key, "\"");
    return it->second;
  }
  int64_t i64(const std::string& key) const {
    const std::string& v = get(key);
    try {
      size_t used = 0;
      const long long x = std::stoll(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw_error(SPARSE_ERR_FORMAT, what, ": ", key, " = \"", v, "\" is not an integer");
  }
  uint64_t u64(const std::string& key) const {
    const std::string& v = get(key);
    try {
      size_t used = 0;
      const unsigned long long x = std::stoull(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw_error(SPARSE_ERR_FORMAT, what, ": ", key, " = \"", v, "\" is not an integer");
  }
  float f32(const std::string& key) const {
    // Floats are stored as their bit patterns so that they round-trip exactly.
    const uint64_t bits = u64(key);
    const uint32_t b32 = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &b32, sizeof f);
    return f;
  }
};

std::string float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return std::to_string(b);
}

}  // namespace

std::string config_to_string(const sparse_model_config& c) {
  std::ostringstream o;
  o << "seq_len=" << c.seq_len << ";num_layers=" << c.num_layers << ";d_model=" << c.d_model
    << ";num_heads=" << c.num_heads << ";attention=" << static_cast<int>(c.attention)
    << ";head_mode=" << static_cast<int>(c.head_mode) << ";stride=" << c.stride
    << ";summary=" << c.summary << ";block_size=" << c.block_size
    << ";layer_cycle=" << std::string(c.layer_cycle, strnlen(c.layer_cycle, sizeof c.layer_cycle))
    << ";half_qk=" << c.half_qk << ";half_ff=" << c.half_ff
    << ";dropout_bits=" << float_bits(c.dropout) << ";tied_embeddings=" << c.tied_embeddings
    << ";num_position_dims=" << c.num_position_dims;
  for (int k = 0; k < 4; ++k) o << ";position_shape" << k << "=" << c.position_shape[k];
  o << ";recompute=" << c.recompute << ";seed=" << c.seed
    << ";output_init_std_bits=" << float_bits(c.output_init_std);
  // Written only when they differ from the paper's choice, so that a paper configuration's
  // checkpoint header is byte for byte what earlier versions wrote.
  if (c.row_attention != SPARSE_ROW_STRIDED)
    o << ";row_attention=" << static_cast<int>(c.row_attention);
  if (c.summary_variants > 1) o << ";summary_variants=" << c.summary_variants;
  return o.str();
}

std::string config_differences(const sparse_model_config& a, const sparse_model_config& b) {
  std::ostringstream out;
  auto field = [&](const char* name, const auto& x, const auto& y) {
    if (x == y) return;
    if (out.tellp() > 0) out << "; ";
    out << name << ": " << x << " vs " << y;
  };
  field("seq_len", a.seq_len, b.seq_len);
  field("num_layers", a.num_layers, b.num_layers);
  field("d_model", a.d_model, b.d_model);
  field("num_heads", a.num_heads, b.num_heads);
  field("attention", static_cast<int>(a.attention), static_cast<int>(b.attention));
  field("head_mode", static_cast<int>(a.head_mode), static_cast<int>(b.head_mode));
  field("stride", a.stride, b.stride);
  field("summary", a.summary, b.summary);
  field("block_size", a.block_size, b.block_size);
  field("layer_cycle", std::string(a.layer_cycle, strnlen(a.layer_cycle, sizeof a.layer_cycle)),
        std::string(b.layer_cycle, strnlen(b.layer_cycle, sizeof b.layer_cycle)));
  field("half_qk", a.half_qk, b.half_qk);
  field("half_ff", a.half_ff, b.half_ff);
  field("dropout", a.dropout, b.dropout);
  field("tied_embeddings", a.tied_embeddings, b.tied_embeddings);
  field("num_position_dims", a.num_position_dims, b.num_position_dims);
  for (int k = 0; k < 4; ++k) {
    const std::string name = "position_shape[" + std::to_string(k) + "]";
    field(name.c_str(), a.position_shape[k], b.position_shape[k]);
  }
  field("recompute", a.recompute, b.recompute);
  field("seed", a.seed, b.seed);
  field("output_init_std", a.output_init_std, b.output_init_std);
  field("row_attention", static_cast<int>(a.row_attention), static_cast<int>(b.row_attention));
  field("summary_variants", std::max<int32_t>(1, a.summary_variants),
        std::max<int32_t>(1, b.summary_variants));
  return out.str();
}

sparse_model_config config_from_string(const std::string& s) {
  Reader r{parse_pairs(s, "checkpoint model config"), "checkpoint model config"};
  sparse_model_config c = default_config();
  c.seq_len = r.i64("seq_len");
  c.num_layers = static_cast<int32_t>(r.i64("num_layers"));
  c.d_model = static_cast<int32_t>(r.i64("d_model"));
  c.num_heads = static_cast<int32_t>(r.i64("num_heads"));
  const int64_t attention = r.i64("attention"), head_mode = r.i64("head_mode");
  if (attention < SPARSE_MODEL_ATTENTION_DENSE || attention > SPARSE_MODEL_ATTENTION_FIXED ||
      head_mode < SPARSE_HEADS_INTERLEAVED || head_mode > SPARSE_HEADS_MULTIHEAD)
    throw_error(SPARSE_ERR_FORMAT, "checkpoint model config: attention = ", attention,
                ", head_mode = ", head_mode, " (expected 0..2 each)");
  c.attention = static_cast<sparse_model_attention>(attention);
  c.head_mode = static_cast<sparse_head_mode>(head_mode);
  c.stride = r.i64("stride");
  c.summary = r.i64("summary");
  c.block_size = static_cast<int32_t>(r.i64("block_size"));
  const std::string cycle = r.get("layer_cycle");
  if (cycle.size() >= sizeof c.layer_cycle)
    throw_error(SPARSE_ERR_FORMAT, "checkpoint model config: layer_cycle is too long");
  std::memset(c.layer_cycle, 0, sizeof c.layer_cycle);
  std::memcpy(c.layer_cycle, cycle.data(), cycle.size());
  c.half_qk = static_cast<int32_t>(r.i64("half_qk"));
  c.half_ff = static_cast<int32_t>(r.i64("half_ff"));
  c.dropout = r.f32("dropout_bits");
  c.tied_embeddings = static_cast<int32_t>(r.i64("tied_embeddings"));
  c.num_position_dims = static_cast<int32_t>(r.i64("num_position_dims"));
  for (int k = 0; k < 4; ++k) c.position_shape[k] = r.i64("position_shape" + std::to_string(k));
  c.recompute = static_cast<int32_t>(r.i64("recompute"));
  c.seed = r.u64("seed");
  // Absent from checkpoints written before API 0.3: those models used the zero initialisation.
  if (r.m.count("output_init_std_bits")) c.output_init_std = r.f32("output_init_std_bits");
  // Absent from checkpoints of the paper's row heads and single summary offset (and from every
  // checkpoint written before API 0.4).
  if (r.m.count("row_attention")) {
    const int64_t row = r.i64("row_attention");
    if (row != SPARSE_ROW_STRIDED && row != SPARSE_ROW_LOCAL)
      throw_error(SPARSE_ERR_FORMAT, "checkpoint model config: row_attention = ", row,
                  " (expected 0 or 1)");
    c.row_attention = static_cast<sparse_row_attention>(row);
  }
  if (r.m.count("summary_variants")) {
    const int64_t variants = r.i64("summary_variants");
    if (variants < 0 || variants > INT32_MAX)
      throw_error(SPARSE_ERR_FORMAT, "checkpoint model config: summary_variants = ", variants,
                  " is out of range");
    c.summary_variants = static_cast<int32_t>(variants);
  }
  try {
    validate_config(c);
  } catch (const Error& e) {
    throw_error(SPARSE_ERR_FORMAT, "checkpoint model config is invalid: ", e.what());
  }
  return c;
}

std::string train_config_to_string(const sparse_train_config& t) {
  std::ostringstream o;
  o << "optimizer=" << static_cast<int>(t.optimizer)
    << ";learning_rate_bits=" << float_bits(t.learning_rate)
    << ";beta1_bits=" << float_bits(t.beta1) << ";beta2_bits=" << float_bits(t.beta2)
    << ";epsilon_bits=" << float_bits(t.epsilon)
    << ";weight_decay_bits=" << float_bits(t.weight_decay) << ";warmup_steps=" << t.warmup_steps
    << ";total_steps=" << t.total_steps << ";clip_norm_bits=" << float_bits(t.clip_norm)
    << ";micro_batch=" << t.micro_batch << ";dtype=" << static_cast<int>(t.dtype)
    << ";loss_scale_bits=" << float_bits(t.loss_scale)
    << ";loss_scale_window=" << t.loss_scale_window;
  return o.str();
}

sparse_train_config train_config_from_string(const std::string& s) {
  Reader r{parse_pairs(s, "checkpoint train config"), "checkpoint train config"};
  sparse_train_config t = default_train_config();
  const int64_t optimizer = r.i64("optimizer");
  if (optimizer != SPARSE_OPTIMIZER_ADAM && optimizer != SPARSE_OPTIMIZER_ADAMW)
    throw_error(SPARSE_ERR_FORMAT, "checkpoint train config: optimizer = ", optimizer,
                " is not a sparse_optimizer");
  t.optimizer = static_cast<sparse_optimizer>(optimizer);
  t.learning_rate = r.f32("learning_rate_bits");
  t.beta1 = r.f32("beta1_bits");
  t.beta2 = r.f32("beta2_bits");
  t.epsilon = r.f32("epsilon_bits");
  t.weight_decay = r.f32("weight_decay_bits");
  t.warmup_steps = r.i64("warmup_steps");
  t.total_steps = r.i64("total_steps");
  t.clip_norm = r.f32("clip_norm_bits");
  t.micro_batch = static_cast<int32_t>(r.i64("micro_batch"));
  // Absent in files written before mixed precision: fp32 without loss scaling.
  if (r.m.count("dtype") != 0) {
    const int64_t dtype = r.i64("dtype");
    if (dtype != SPARSE_DTYPE_F32 && dtype != SPARSE_DTYPE_BF16 && dtype != SPARSE_DTYPE_F16)
      throw_error(SPARSE_ERR_FORMAT, "checkpoint train config: dtype = ", dtype,
                  " is not SPARSE_DTYPE_F32, SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16");
    t.dtype = static_cast<sparse_dtype>(dtype);
  }
  if (r.m.count("loss_scale_bits") != 0) t.loss_scale = r.f32("loss_scale_bits");
  if (r.m.count("loss_scale_window") != 0)
    t.loss_scale_window = static_cast<int32_t>(r.i64("loss_scale_window"));
  try {
    validate_train_config(t);
  } catch (const Error& e) {
    throw_error(SPARSE_ERR_FORMAT, "checkpoint train config is invalid: ", e.what());
  }
  return t;
}

}  // namespace sparse::model
