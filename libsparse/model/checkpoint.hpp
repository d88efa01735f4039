// Checkpoints in the safetensors layout: an 8-byte little-endian header length N, N bytes of
// JSON (padded with spaces to a multiple of 8), then the raw little-endian tensors.
//
// Tensors: "param.<name>", "adam_m.<name>", "adam_v.<name>" for every parameter tensor, F32, in
// that order. "__metadata__" (string values, as safetensors requires) holds "format", the model
// and trainer configurations, "step", "dropout_seed" (the dropout streams are functions of it
// and of the step, so these two are the whole random state; it must equal the model
// configuration's seed), "checksum", the FNV-1a 64 hash of the data section in hex, and
// "header_checksum", the FNV-1a 64 hash in hex of the 8 length bytes and the whole header with
// the 16 digits of this value read as '0' (so the configuration, step and tensor table are covered
// too). The loss scaler's state: "skipped_steps" (steps skipped for a non-finite gradient so far)
// and, for a run with dynamic loss scaling, "loss_scale" (the current scale, 17 significant
// digits, so it reads back exactly) and "loss_scale_clean_steps" (clean steps since its last
// change); all three are optional, and a file without them (an older one) resumes from the
// configured initial scale with no skipped steps. "format" is "sparse-checkpoint-2"; files of the
// older "sparse-checkpoint-1" (no header_checksum) are still read, their data checked by "checksum"
// alone.
#pragma once

#include <memory>
#include <string>

#include "libsparse/model/trainer.hpp"

namespace sparse::model {

// Writes `path` atomically (see write_file_atomically in file_io.hpp: a unique temporary file,
// renamed over the target; a symbolic link's target is replaced, a device or FIFO refused).
// Throws sparse::Error (SPARSE_ERR_IO).
void save_checkpoint(const Trainer& trainer, const std::string& path);

// Reads and validates a checkpoint and builds a trainer from it. Throws sparse::Error:
// SPARSE_ERR_IO when the file cannot be read, SPARSE_ERR_FORMAT when it is truncated, corrupted
// or inconsistent with its configuration. The trainer computes on `backend` (as for Trainer).
// A checkpoint whose trainer configuration asks for 16-bit matrix products the backend cannot
// run is refused with SPARSE_ERR_UNSUPPORTED naming the path and the dtype.
std::unique_ptr<Trainer> load_checkpoint(const std::string& path, Backend& backend);

// As load_checkpoint, with the trainer configuration's dtype (the precision of the matrix
// products) replaced by `products`, a caller's value read as an int (SPARSE_DTYPE_F32, BF16 or
// F16; SPARSE_ERR_INVALID_ARGUMENT otherwise). The parameters are stored in fp32 whatever the
// dtype, so any checkpoint loads in any dtype the backend runs. The trainer state (parameters, Adam
// moments, step, skipped steps) stays as saved; loss scaling follows the new configuration (a saved
// dynamic scale is restored only when the new configuration scales dynamically too).
std::unique_ptr<Trainer> load_checkpoint(const std::string& path, Backend& backend, int products);

// Loads into an existing trainer, whose model configuration must equal the checkpoint's
// (SPARSE_ERR_FORMAT otherwise); the trainer keeps its own trainer configuration and is unchanged
// on failure. The loss scaler's skipped steps are restored, and its scale and clean-step count
// too when the trainer scales dynamically and the checkpoint holds them.
void restore_checkpoint(Trainer& trainer, const std::string& path);

}  // namespace sparse::model
