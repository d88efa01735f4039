// Names of the model operations and the check that a backend implements all of them.
#include "libsparse/backend.hpp"

namespace sparse {

const char* model_op_name(ModelOp op) {
  switch (op) {
    case ModelOp::LayerNorm:
      return "layer_norm";
    case ModelOp::Linear:
      return "linear";
    case ModelOp::Gelu:
      return "gelu";
    case ModelOp::Embedding:
      return "embedding";
    case ModelOp::Dropout:
      return "dropout";
    case ModelOp::SoftmaxCrossEntropy:
      return "softmax_cross_entropy";
    case ModelOp::Elementwise:
      return "elementwise";
    case ModelOp::ListedAttention:
      return "listed_attention";
    case ModelOp::AdamUpdate:
      return "adam_update";
    case ModelOp::SquaredNorm:
      return "squared_norm";
    case ModelOp::Count:
      break;
  }
  return "unknown";
}

std::string unsupported_model_ops(const Backend& backend, sparse_dtype dtype) {
  std::string reasons;
  for (int i = 0; i < static_cast<int>(ModelOp::Count); ++i) {
    const std::string why = backend.supports_op(static_cast<ModelOp>(i), dtype);
    // A reason shared by every operation is said once.
    if (!why.empty() && reasons.find(why) == std::string::npos)
      reasons += (reasons.empty() ? "" : "; ") + why;
  }
  return reasons;
}

}  // namespace sparse
