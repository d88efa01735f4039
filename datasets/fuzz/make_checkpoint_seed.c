/*
 * Seeds for fuzz_checkpoint: small checkpoints written by libsparse itself (sparse_model_save),
 * one per attention kind, with tied and untied embeddings.
 *   make_checkpoint_seed DIR      (linked against the libsparse of a build folder)
 */
#include <sparse/sparse.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char** argv) {
  sparse_settings settings;
  sparse_context* ctx = NULL;
  int k;
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  if (sparse_settings_default(&settings) != SPARSE_OK) return 1;
  settings.backend = SPARSE_BACKEND_CPU;
  if (sparse_context_create(&settings, &ctx) != SPARSE_OK) return 1;
  for (k = 0; k < 2; ++k) {
    sparse_model_config c;
    sparse_model* m = NULL;
    char path[4096];
    sparse_model_config_default(&c);
    /* Small enough for the fuzzer's input limit: d 4, one layer, tiny position tables. */
    c.seq_len = 16;
    c.num_layers = 1;
    c.d_model = 4;
    c.num_heads = 1;
    c.stride = 4;
    c.summary = 2;
    c.attention = k == 0 ? SPARSE_MODEL_ATTENTION_STRIDED : SPARSE_MODEL_ATTENTION_FIXED;
    c.tied_embeddings = k;
    c.position_shape[0] = 4;
    c.position_shape[1] = 4;
    if (sparse_model_create(ctx, &c, NULL, &m) != SPARSE_OK) {
      fprintf(stderr, "make_checkpoint_seed: %s\n", sparse_last_error());
      return 1;
    }
    snprintf(path, sizeof path, "%s/tiny%d.safetensors", argv[1], k);
    if (sparse_model_save(m, path) != SPARSE_OK) {
      fprintf(stderr, "make_checkpoint_seed: %s\n", sparse_last_error());
      return 1;
    }
    sparse_model_destroy(m);
  }
  sparse_context_destroy(ctx);
  return 0;
}
