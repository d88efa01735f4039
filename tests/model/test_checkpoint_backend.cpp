// Checkpoints go through the backend's copies: a model whose memory the host cannot read
// directly (here a test backend that stores every byte XOR-scrambled, as a stand-in for device
// memory) saves the same bytes as the same model on the CPU, and loads back to them.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "backend.hpp"
#include "error.hpp"
#include "model/checkpoint.hpp"
#include "model/config.hpp"
#include "model/trainer.hpp"
#include "tests/model/tiny_model.hpp"

using namespace sparse;
using namespace sparse::model;

namespace {

constexpr uint8_t kScramble = 0x5a;

// Host memory reported as device memory, holding every byte XOR kScramble: only copy() reads
// and writes it correctly.
class ScrambledBackend final : public Backend {
 public:
  ScrambledBackend() : cpu_(make_cpu_backend(1, 0)) {}
  sparse_backend kind() const override { return SPARSE_BACKEND_CPU; }
  std::string description() const override { return "scrambled test memory"; }
  int num_threads() const override { return 1; }
  sparse_memory memory_kind() const override { return SPARSE_MEMORY_DEVICE; }
  void* allocate(size_t bytes) override { return cpu_->allocate(bytes); }
  void free(void* ptr) noexcept override { cpu_->free(ptr); }
  void copy(void* dst, sparse_memory dst_memory, const void* src, sparse_memory src_memory,
            size_t bytes) override {
    auto* d = static_cast<uint8_t*>(dst);
    const auto* s = static_cast<const uint8_t*>(src);
    const bool flip = dst_memory != src_memory;
    for (size_t i = 0; i < bytes; ++i) d[i] = flip ? s[i] ^ kScramble : s[i];
  }
  void zero(void* ptr, size_t bytes) override { std::memset(ptr, kScramble, bytes); }
  std::string supports_attention(const Layout&, sparse_dtype, sparse_memory, int64_t,
                                 sparse_attention_algorithm) const override {
    return "no attention";
  }
  size_t attention_workspace_bytes(const Layout&, int64_t, int64_t, bool,
                                   sparse_attention_algorithm) const override {
    return 0;
  }
  void attention_forward(const AttentionForwardArgs&) override {}
  void attention_backward(const AttentionBackwardArgs&) override {}
  std::string supports_op(ModelOp op, sparse_dtype dtype) const override {
    return cpu_->supports_op(op, dtype);
  }
  // The table is never called here (the test only initialises, saves and loads).
  ModelOps<float>* model_ops_f32() override { return cpu_->model_ops<float>(); }

 private:
  std::unique_ptr<Backend> cpu_;
};

std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

sparse_model_config small() { return testing::tiny_model_config(); }

// Distinct, recognisable moment values, the same for both trainers.
void fill_moments(Trainer& t) {
  std::vector<float> m(t.adam_m.size()), v(t.adam_v.size());
  for (size_t i = 0; i < m.size(); ++i) {
    m[i] = 0.001f * static_cast<float>(i) - 0.5f;
    v[i] = 0.002f * static_cast<float>(i);
  }
  t.adam_m = m;
  t.adam_v = v;
  t.step = 5;
}

}  // namespace

TEST_CASE("a checkpoint saved from non-host memory equals the CPU's, byte for byte") {
  const sparse_model_config c = small();
  const sparse_train_config tc = default_train_config();
  const std::string cpu_path = "ckpt_backend_cpu.safetensors";
  const std::string dev_path = "ckpt_backend_scrambled.safetensors";
  const std::string again_path = "ckpt_backend_again.safetensors";

  Trainer on_cpu(c, tc, 1);
  fill_moments(on_cpu);
  save_checkpoint(on_cpu, cpu_path);

  ScrambledBackend scrambled;
  Trainer on_dev(c, tc, scrambled);
  fill_moments(on_dev);
  save_checkpoint(on_dev, dev_path);

  const std::vector<char> want = read_all(cpu_path), got = read_all(dev_path);
  REQUIRE(want.size() > 100);
  CHECK(got == want);

  // Loading onto the scrambled backend and saving again reproduces the file.
  auto loaded = load_checkpoint(dev_path, scrambled);
  CHECK(loaded->step == 5);
  save_checkpoint(*loaded, again_path);
  CHECK(read_all(again_path) == want);

  for (const std::string& p : {cpu_path, dev_path, again_path}) std::remove(p.c_str());
}
