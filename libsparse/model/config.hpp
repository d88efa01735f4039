// Model configuration: defaults, the paper's presets, validation, and the table of parameter
// tensors (names, shapes, initialisation) that the model, the optimiser and checkpoints share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sparse/model.h"

namespace sparse::model {

sparse_model_config default_config();
// Throws sparse::Error (invalid argument) for an unknown name.
sparse_model_config preset_config(const std::string& name);
// Throws sparse::Error naming the bad field.
void validate_config(const sparse_model_config& c);

sparse_train_config default_train_config();
void validate_train_config(const sparse_train_config& t);

// Derived sizes.
struct Dims {
  int64_t n, d, heads, layers;
  int64_t dqk;      // total width of the query/key projections (d or d / 2)
  int64_t head_qk;  // dqk / heads
  int64_t head_v;   // d / heads
  int64_t inner;    // feed-forward inner width (4d or 2d)
  static constexpr int64_t vocab = 256;
};
Dims dims_of(const sparse_model_config& c);

enum class Init { Normal, Zero, One };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  Init init = Init::Normal;
  double std = 0.0;
  bool decay = false;  // weight decay applies
  int64_t offset = 0;  // in the flat parameter vector
  int64_t size = 0;
};

// Parameter tensors of one layer, in the order of the flat vector.
enum LayerTensor {
  kLn1Gain,
  kLn1Bias,
  kWq,
  kWk,
  kWv,
  kWp,
  kLn2Gain,
  kLn2Bias,
  kW1,
  kB1,
  kW2,
  kB2,
  kLayerTensors
};

struct ParamTable {
  std::vector<TensorSpec> tensors;
  int64_t total = 0;
  int token, start, pos0, num_pos;  // indices into tensors
  int first_layer;  // layer l tensor t is tensors[first_layer + l * kLayerTensors + t]
  int final_gain, final_bias;
  int out = -1;  // -1 when tied
  const TensorSpec& layer(int64_t l, LayerTensor t) const {
    return tensors[static_cast<size_t>(first_layer + l * kLayerTensors + t)];
  }
};
ParamTable param_table(const sparse_model_config& c);
// The parameter count of a valid configuration, in double precision (no overflow for absurd
// sizes), to check memory before param_table() lists and sizes the tensors.
double parameter_estimate(const sparse_model_config& c);

// Canonical "key=value;..." text of a config (checkpoints store it and compare it).
std::string config_to_string(const sparse_model_config& c);
// The fields in which two configurations differ, as "name: A vs B" joined by "; " (empty when
// they are equal); float fields are compared and shown by value.
std::string config_differences(const sparse_model_config& a, const sparse_model_config& b);
sparse_model_config config_from_string(const std::string& s);
std::string train_config_to_string(const sparse_train_config& t);
sparse_train_config train_config_from_string(const std::string& s);

}  // namespace sparse::model
