#include "device_option.hpp"

#include <stdexcept>

namespace repro {

void add_device_options(CLI::App& app, DeviceOptions& o) {
  app.add_option("--backend", o.backend,
                 "where the model runs: cpu, or cuda (the first GPU; fails when none is present)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--dtype", o.dtype,
                 "precision of the model's activations and matrix products: fp32 (bf16 and fp16 "
                 "mixed precision are not implemented yet)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
}

sparse_context* create_device_context(const DeviceOptions& o, int threads) {
  if (o.dtype != "fp32")
    throw std::runtime_error("--dtype " + o.dtype +
                             ": mixed precision is not implemented yet; use --dtype fp32");
  sparse_settings s;
  sparse_settings_default(&s);
  if (o.backend == "cpu")
    s.backend = SPARSE_BACKEND_CPU;
  else if (o.backend == "cuda")
    s.backend = SPARSE_BACKEND_CUDA;
  else
    throw std::runtime_error("--backend " + o.backend + ": expected cpu or cuda");
  s.num_threads = threads;
  sparse_context* ctx = nullptr;
  const sparse_status st = sparse_context_create(&s, &ctx);
  if (st != SPARSE_OK)
    throw std::runtime_error("--backend " + o.backend + ": " + sparse_status_string(st) + ": " +
                             sparse_last_error());
  return ctx;
}

}  // namespace repro
