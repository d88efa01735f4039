#include "device_option.hpp"

#include <stdexcept>

namespace repro {

void add_device_options(CLI::App& app, DeviceOptions& o) {
  app.add_option("--backend", o.backend,
                 "where the model runs: cpu, or cuda (the first GPU; fails when none is present)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--dtype", o.dtype,
                 "precision of the model's matrix products: fp32, or bf16 / fp16 mixed precision "
                 "(16-bit product inputs, fp32 parameters and accumulation; fp16 with dynamic "
                 "loss scaling; CUDA only). eval and sample run any checkpoint in this "
                 "precision, whatever precision it was trained in")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
}

sparse_context* create_device_context(const DeviceOptions& o, int threads, int cuda_device) {
  sparse_settings s;
  sparse_settings_default(&s);
  if (o.backend == "cpu")
    s.backend = SPARSE_BACKEND_CPU;
  else if (o.backend == "cuda")
    s.backend = SPARSE_BACKEND_CUDA;
  else
    throw std::runtime_error("--backend " + o.backend + ": expected cpu or cuda");
  // Before any data is read or any checkpoint loaded: the CPU backend would refuse the model.
  if (s.backend == SPARSE_BACKEND_CPU && o.dtype != "fp32")
    throw std::runtime_error("--dtype " + o.dtype +
                             ": bf16/fp16 mixed precision runs on the CUDA backend only (the CPU "
                             "backend computes in fp32); give --backend cuda, or --dtype fp32");
  s.num_threads = threads;
  if (s.backend == SPARSE_BACKEND_CUDA) s.device_index = cuda_device;
  sparse_context* ctx = nullptr;
  const sparse_status st = sparse_context_create(&s, &ctx);
  if (st != SPARSE_OK)
    throw std::runtime_error("--backend " + o.backend +
                             (s.backend == SPARSE_BACKEND_CUDA && cuda_device != 0
                                  ? " (CUDA device " + std::to_string(cuda_device) + ")"
                                  : std::string()) +
                             ": " + sparse_status_string(st) + ": " + sparse_last_error());
  return ctx;
}

sparse_dtype model_dtype(const DeviceOptions& o) {
  if (o.dtype == "fp32") return SPARSE_DTYPE_F32;
  if (o.dtype == "bf16") return SPARSE_DTYPE_BF16;
  if (o.dtype == "fp16") return SPARSE_DTYPE_F16;
  throw std::runtime_error("--dtype " + o.dtype + ": expected fp32, bf16 or fp16");
}

}  // namespace repro
