// Loading a checkpoint in another precision (sparse_experimental_model_load_dtype): a checkpoint
// whose run computed in bf16 or fp16 loads on the CPU in fp32 and evaluates exactly as the same
// weights saved from an fp32 run; the plain loader still refuses it there, naming the dtype.
#include <doctest/doctest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backend.hpp"
#include "model/checkpoint.hpp"
#include "model/config.hpp"
#include "model/trainer.hpp"
#include "sparse/experimental.h"
#include "sparse/sparse.h"
#include "tests/model/tiny_model.hpp"

using namespace sparse;
using namespace sparse::model;

namespace {

// The CPU backend, claiming bf16 and fp16 matrix products with its fp32 operations: enough to
// build a trainer whose configuration says 16 bits and save its checkpoint on a machine without
// a GPU (nothing here computes with it).
class SixteenBitLabelBackend final : public Backend {
 public:
  SixteenBitLabelBackend() : cpu_(make_cpu_backend(1, 0)) {}
  sparse_backend kind() const override { return SPARSE_BACKEND_CPU; }
  std::string description() const override { return "16-bit label test backend"; }
  int num_threads() const override { return 1; }
  sparse_memory memory_kind() const override { return cpu_->memory_kind(); }
  void* allocate(size_t bytes) override { return cpu_->allocate(bytes); }
  void free(void* ptr) noexcept override { cpu_->free(ptr); }
  void copy(void* dst, sparse_memory dst_memory, const void* src, sparse_memory src_memory,
            size_t bytes) override {
    cpu_->copy(dst, dst_memory, src, src_memory, bytes);
  }
  void zero(void* ptr, size_t bytes) override { cpu_->zero(ptr, bytes); }
  std::string supports_attention(const Layout& layout, sparse_dtype dtype, sparse_memory memory,
                                 int64_t head_dim,
                                 sparse_attention_algorithm algorithm) const override {
    return cpu_->supports_attention(layout, dtype, memory, head_dim, algorithm);
  }
  size_t attention_workspace_bytes(const Layout& layout, int64_t batch, int64_t head_dim,
                                   bool backward,
                                   sparse_attention_algorithm algorithm) const override {
    return cpu_->attention_workspace_bytes(layout, batch, head_dim, backward, algorithm);
  }
  void attention_forward(const AttentionForwardArgs& a) override { cpu_->attention_forward(a); }
  void attention_backward(const AttentionBackwardArgs& a) override { cpu_->attention_backward(a); }
  std::string supports_op(ModelOp op, sparse_dtype dtype) const override {
    const bool half = dtype == SPARSE_DTYPE_BF16 || dtype == SPARSE_DTYPE_F16;
    return cpu_->supports_op(op, half ? SPARSE_DTYPE_F32 : dtype);
  }
  ModelOps<float>* model_ops_f32() override { return cpu_->model_ops<float>(); }
  ModelOps<float>* model_ops_mixed(sparse_dtype) override { return cpu_->model_ops<float>(); }

 private:
  std::unique_ptr<Backend> cpu_;
};

sparse_model_config config() {
  sparse_model_config c = testing::tiny_model_config();
  c.num_layers = 2;
  return c;
}

// The same trained-looking state in every trainer: random parameters (not the initialisation,
// which both runs would share anyway), Adam moments, a step count and skipped steps.
void set_state(Trainer& t) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<float> p(t.model().params.size()), m(p.size()), v(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] = normal(rng);
    m[i] = 0.01f * normal(rng);
    v[i] = 0.001f * static_cast<float>(i % 7);
  }
  t.model().params = p;
  t.adam_m = m;
  t.adam_v = v;
  t.step = 7;
  t.loss_scaler.skipped = 2;
}

struct Context {
  sparse_context* ctx = nullptr;
  Context() {
    sparse_settings s;
    sparse_settings_default(&s);
    s.backend = SPARSE_BACKEND_CPU;
    s.num_threads = 1;
    REQUIRE(sparse_context_create(&s, &ctx) == SPARSE_OK);
  }
  ~Context() { sparse_context_destroy(ctx); }
};

double evaluate(sparse_model* model, const std::vector<uint8_t>& tokens, int64_t batch) {
  double bpd = 0;
  REQUIRE(sparse_model_evaluate(model, tokens.data(), batch, &bpd) == SPARSE_OK);
  return bpd;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("a bf16 or fp16 checkpoint evaluates on the CPU in fp32 as the same fp32 weights do") {
  const sparse_model_config c = config();
  const int64_t batch = 3;
  const std::vector<uint8_t> tokens = testing::random_tokens(batch * c.seq_len, 5);

  // The reference: the same state saved from an fp32 run, loaded and evaluated by the plain
  // loader.
  const std::string fp32_path = "load_dtype_fp32.safetensors";
  {
    Trainer fp32(c, default_train_config(), 1);
    set_state(fp32);
    save_checkpoint(fp32, fp32_path);
  }
  Context context;
  sparse_model* reference = nullptr;
  REQUIRE(sparse_model_load(context.ctx, fp32_path.c_str(), &reference) == SPARSE_OK);
  const double want = evaluate(reference, tokens, batch);
  sparse_model_destroy(reference);
  CHECK(want > 0.5);

  for (sparse_dtype trained : {SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
    const std::string name = trained == SPARSE_DTYPE_BF16 ? "bf16" : "fp16";
    CAPTURE(name);
    const std::string path = "load_dtype_" + name + ".safetensors";
    sparse_train_config tc = default_train_config();
    tc.dtype = trained;
    tc.learning_rate = 0.002f;
    {
      SixteenBitLabelBackend labelled;
      Trainer run(c, tc, labelled);
      set_state(run);
      save_checkpoint(run, path);
    }

    // The plain loader keeps the run's dtype, which the CPU backend cannot run.
    sparse_model* refused = nullptr;
    CHECK(sparse_model_load(context.ctx, path.c_str(), &refused) == SPARSE_ERR_UNSUPPORTED);
    CHECK(refused == nullptr);
    const std::string message = sparse_last_error();
    CHECK(contains(message, path));
    CHECK(contains(message, "trained with " + name));
    CHECK(contains(message, "sparse_experimental_model_load_dtype"));

    // Asking for that dtype by name is refused the same way.
    CHECK(sparse_experimental_model_load_dtype(context.ctx, path.c_str(), trained, &refused) ==
          SPARSE_ERR_UNSUPPORTED);
    CHECK(refused == nullptr);
    CHECK(contains(sparse_last_error(), "loaded with " + name));

    // In fp32 it loads, with the rest of the configuration and the state as saved.
    sparse_model* model = nullptr;
    REQUIRE(sparse_experimental_model_load_dtype(context.ctx, path.c_str(), SPARSE_DTYPE_F32,
                                                 &model) == SPARSE_OK);
    sparse_train_config got;
    REQUIRE(sparse_model_get_train_config(model, &got) == SPARSE_OK);
    CHECK(got.dtype == SPARSE_DTYPE_F32);
    CHECK(got.learning_rate == 0.002f);
    int64_t step = 0, skipped = 0;
    REQUIRE(sparse_model_step(model, &step) == SPARSE_OK);
    REQUIRE(sparse_experimental_model_skipped_steps(model, &skipped) == SPARSE_OK);
    CHECK(step == 7);
    CHECK(skipped == 2);
    CHECK(evaluate(model, tokens, batch) == want);
    sparse_model_destroy(model);
    std::remove(path.c_str());
  }

  // The fp32 checkpoint through the new loader, in fp32: the same.
  sparse_model* model = nullptr;
  REQUIRE(sparse_experimental_model_load_dtype(context.ctx, fp32_path.c_str(), SPARSE_DTYPE_F32,
                                               &model) == SPARSE_OK);
  CHECK(evaluate(model, tokens, batch) == want);
  sparse_model_destroy(model);

  // Bad arguments: a dtype that is no product precision, NULLs.
  for (int bad : {int{SPARSE_DTYPE_F64}, 7, -1}) {
    CAPTURE(bad);
    model = reinterpret_cast<sparse_model*>(&bad);
    CHECK(sparse_experimental_model_load_dtype(context.ctx, fp32_path.c_str(),
                                               static_cast<sparse_dtype>(bad),
                                               &model) == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK(model == nullptr);
    CHECK(contains(sparse_last_error(), "dtype = " + std::to_string(bad)));
  }
  CHECK(sparse_experimental_model_load_dtype(nullptr, fp32_path.c_str(), SPARSE_DTYPE_F32,
                                             &model) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_experimental_model_load_dtype(context.ctx, nullptr, SPARSE_DTYPE_F32, &model) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_experimental_model_load_dtype(context.ctx, fp32_path.c_str(), SPARSE_DTYPE_F32,
                                             nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_experimental_model_load_dtype(context.ctx, "no_such_load_dtype.safetensors",
                                             SPARSE_DTYPE_F32, &model) == SPARSE_ERR_IO);
  std::remove(fp32_path.c_str());
}

TEST_CASE("training in bf16 or fp16 on the CPU is still refused where the model is created") {
  Context context;
  const sparse_model_config c = config();
  for (sparse_dtype dtype : {SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
    sparse_train_config tc;
    sparse_train_config_default(&tc);
    tc.dtype = dtype;
    sparse_model* model = nullptr;
    CHECK(sparse_model_create(context.ctx, &c, &tc, &model) == SPARSE_ERR_UNSUPPORTED);
    CHECK(model == nullptr);
    CHECK(contains(sparse_last_error(), "fp32 and fp64 only"));
  }
}
