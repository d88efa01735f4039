// Internal access to the trainer behind a sparse_model handle, for the driver and the tests
// (not part of the C ABI).
#pragma once

#include "libsparse/model/trainer.hpp"
#include "sparse/model.h"

namespace sparse::capi {

// The trainer of `model`; throws sparse::Error when model is NULL.
sparse::model::Trainer& model_trainer(sparse_model* model);

}  // namespace sparse::capi
