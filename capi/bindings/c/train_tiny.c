/*
 * libsparse from C: train a tiny Sparse Transformer (strided attention) for a few steps on a
 * byte sequence with a simple structure, printing bits per dim, then evaluate and sample.
 *
 *   cc -std=c99 train_tiny.c $(pkg-config --cflags --libs sparse)
 *   ./a.out [steps]          (default 40)
 */
#include <sparse/sparse.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                             \
  do {                                                                          \
    sparse_status status_ = (call);                                             \
    if (status_ != SPARSE_OK) {                                                 \
      fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call, \
              sparse_status_string(status_), sparse_last_error());              \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

enum { BATCH = 4 };

/* Each sequence repeats a random 8-letter word: after the first 8 bytes everything is
 * predictable from the byte 8 positions back, which strided attention (stride 8) sees. */
static void make_batch(uint8_t* tokens, int64_t seq_len, uint64_t* state) {
  int64_t b, i;
  for (b = 0; b < BATCH; ++b) {
    uint8_t word[8];
    for (i = 0; i < 8; ++i) {
      *state = *state * 6364136223846793005ull + 1442695040888963407ull;
      word[i] = (uint8_t)('a' + (*state >> 33) % 26);
    }
    for (i = 0; i < seq_len; ++i) tokens[b * seq_len + i] = word[i % 8];
  }
}

int main(int argc, char** argv) {
  const int steps = argc > 1 ? atoi(argv[1]) : 40;
  sparse_settings settings;
  sparse_context* ctx = NULL;
  sparse_model_config config;
  sparse_train_config train;
  sparse_train_stats stats;
  sparse_model* model = NULL;
  sparse_sample_params sample;
  uint64_t state = 42;
  uint8_t *tokens, *held_out, text[65];
  int64_t params = 0;
  double before = 0.0, after = 0.0;
  char line[256];
  int step;

  CHECK(sparse_settings_default(&settings));
  settings.backend = SPARSE_BACKEND_CPU;
  CHECK(sparse_context_create(&settings, &ctx));

  CHECK(sparse_model_config_default(&config)); /* 2 layers, d 64, 2 heads, strided, n 256 */
  config.seq_len = 64;
  config.stride = 8;
  config.position_shape[0] = 8;
  config.position_shape[1] = 8;
  CHECK(sparse_train_config_default(&train));
  train.learning_rate = 3e-3f;
  train.warmup_steps = 5;
  CHECK(sparse_model_create(ctx, &config, &train, &model));
  CHECK(sparse_model_parameter_count(model, &params));
  printf("tiny model: %d layers, d %d, %d heads, strided l=%lld, n=%lld, %lld parameters\n",
         config.num_layers, config.d_model, config.num_heads, (long long)config.stride,
         (long long)config.seq_len, (long long)params);

  tokens = malloc((size_t)(BATCH * config.seq_len));
  held_out = malloc((size_t)(BATCH * config.seq_len));
  if (tokens == NULL || held_out == NULL) return 1;
  make_batch(held_out, config.seq_len, &state);
  CHECK(sparse_model_evaluate(model, held_out, BATCH, &before));

  stats.struct_size = sizeof stats;
  for (step = 0; step < steps; ++step) {
    make_batch(tokens, config.seq_len, &state);
    CHECK(sparse_model_train_step(model, tokens, BATCH, &stats));
    if (step % 10 == 9 || step == steps - 1) {
      CHECK(
          sparse_train_progress_line(&stats, steps, stats.seconds * (step + 1), line, sizeof line));
      printf("%s\n", line);
    }
  }
  CHECK(sparse_model_evaluate(model, held_out, BATCH, &after));
  printf("held-out bits per dim: %.4f before training, %.4f after %d steps\n", before, after,
         steps);

  /* Continue a prompt greedily: the model should keep repeating the word. */
  CHECK(sparse_sample_params_default(&sample));
  sample.temperature = 0.0f;
  CHECK(sparse_model_sample(model, &sample, (const uint8_t*)"sparsity", 8, text, 64));
  text[64] = '\0';
  printf("sample: %s\n", (const char*)text);

  free(tokens);
  free(held_out);
  sparse_model_destroy(model);
  sparse_context_destroy(ctx);
  if (!(after < before - 1.0)) {
    fprintf(stderr, "FAILED: training did not lower bits per dim\n");
    return 1;
  }
  return 0;
}
