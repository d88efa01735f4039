/*
 * libsparse from C: build the paper's strided layout, run block-sparse attention forward and
 * backward on random data, print checksums. Also checks a few output rows against a direct
 * computation from the token-level definition in layout.h, and shows an error report.
 *
 *   cc -std=c99 attention_example.c $(pkg-config --cflags --libs sparse) -lm
 *   ./a.out [seq_len] [stride]          (defaults 1024 and 32)
 */
#include <math.h>
#include <sparse/sparse.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                             \
  do {                                                                          \
    sparse_status status_ = (call);                                             \
    if (status_ != SPARSE_OK) {                                                 \
      fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call, \
              sparse_status_string(status_), sparse_last_error());              \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

enum { BATCH = 2, HEADS = 2, HEAD_DIM = 64, BLOCK = 32 };

static uint64_t rng_state = 0x1234567u;

/* Uniform in [-1, 1): xorshift64*. */
static float uniform(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (float)((double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0 * 2.0 -
                 1.0);
}

static float* random_tensor(size_t n) {
  float* x = malloc(n * sizeof *x);
  size_t i;
  if (x == NULL) exit(1);
  for (i = 0; i < n; ++i) x[i] = uniform();
  return x;
}

/* The paper's strided heads: head 0 "row" (the previous l positions), head 1 "column" (every
 * l-th position). */
static int attends(int head, int64_t i, int64_t j, int64_t stride) {
  if (j > i) return 0;
  if (head == 0) return i - j <= stride;
  return (i - j) % stride == 0;
}

/* Dot product of two rows of HEAD_DIM elements, in double precision. */
static double dot(const float* a, const float* b) {
  double s = 0.0;
  size_t c;
  for (c = 0; c < HEAD_DIM; ++c) s += (double)a[c] * (double)b[c];
  return s;
}

/* out[b, h, i, :] computed directly (double precision); returns the max abs difference. */
static double check_row(const float* q, const float* k, const float* v, const float* out, int64_t n,
                        int64_t stride, int b, int h, int64_t i) {
  const size_t base = ((size_t)b * HEADS + (size_t)h) * (size_t)n * HEAD_DIM;
  const float* qi = q + base + (size_t)i * HEAD_DIM;
  const double scale = 1.0 / sqrt((double)HEAD_DIM);
  double acc[HEAD_DIM] = {0}, max_score = -INFINITY, total = 0.0, worst = 0.0;
  int64_t j;
  size_t c;
  for (j = 0; j <= i; ++j)
    if (attends(h, i, j, stride)) {
      const double s = scale * dot(qi, k + base + (size_t)j * HEAD_DIM);
      if (s > max_score) max_score = s;
    }
  for (j = 0; j <= i; ++j)
    if (attends(h, i, j, stride)) {
      const float* vj = v + base + (size_t)j * HEAD_DIM;
      const double p = exp(scale * dot(qi, k + base + (size_t)j * HEAD_DIM) - max_score);
      total += p;
      for (c = 0; c < HEAD_DIM; ++c) acc[c] += p * (double)vj[c];
    }
  for (c = 0; c < HEAD_DIM; ++c) {
    const double d = fabs(acc[c] / total - (double)out[base + (size_t)i * HEAD_DIM + c]);
    if (d > worst) worst = d;
  }
  return worst;
}

/* Checksum: the sum of absolute values. */
static double sum(const float* x, size_t n) {
  double s = 0.0;
  size_t i;
  for (i = 0; i < n; ++i) s += fabs((double)x[i]);
  return s;
}

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? atoll(argv[1]) : 1024;
  const int64_t stride = argc > 2 ? atoll(argv[2]) : 32;
  const int64_t shape[4] = {BATCH, HEADS, n, HEAD_DIM};
  const int64_t lse_shape[3] = {BATCH, HEADS, n};
  const size_t count = (size_t)BATCH * HEADS * (size_t)n * HEAD_DIM;
  sparse_settings settings;
  sparse_context* ctx = NULL;
  sparse_pattern patterns[2];
  sparse_layout_desc desc;
  sparse_layout* layout = NULL;
  sparse_layout_stats stats;
  sparse_tensor tq, tk, tv, tout, tlse, tdout, tdq, tdk, tdv;
  float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv;
  double worst = 0.0;
  int h;

  printf("libsparse %s (%s)\n", sparse_version_string(), sparse_build_info());
  CHECK(sparse_settings_default(&settings));
  settings.backend = SPARSE_BACKEND_CPU;
  CHECK(sparse_context_create(&settings, &ctx));

  /* The strided pattern of the paper, one head of each type. */
  CHECK(sparse_pattern_default(&patterns[0], SPARSE_PATTERN_STRIDED_ROW));
  patterns[0].head = 0;
  patterns[0].stride = stride;
  CHECK(sparse_pattern_default(&patterns[1], SPARSE_PATTERN_STRIDED_COLUMN));
  patterns[1].head = 1;
  patterns[1].stride = stride;
  CHECK(sparse_layout_desc_default(&desc));
  desc.seq_len = n;
  desc.block_size = BLOCK;
  desc.num_heads = HEADS;
  desc.patterns = patterns;
  desc.num_patterns = 2;
  CHECK(sparse_layout_create(&desc, &layout));
  for (h = -1; h < HEADS; ++h) {
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    CHECK(sparse_layout_get_stats(layout, h, &stats));
    printf(
        "layout n=%lld l=%lld block=%d head %2d: %lld of %lld dense blocks (density %.4f, "
        "effective %.4f)%s\n",
        (long long)n, (long long)stride, BLOCK, h, (long long)stats.nnz_blocks,
        (long long)stats.dense_blocks, stats.density, stats.effective_density,
        h >= 0 && stats.transposed ? ", transposed order" : "");
  }

  q = random_tensor(count);
  k = random_tensor(count);
  v = random_tensor(count);
  dout = random_tensor(count);
  out = malloc(count * sizeof *out);
  dq = malloc(count * sizeof *dq);
  dk = malloc(count * sizeof *dk);
  dv = malloc(count * sizeof *dv);
  lse = malloc((size_t)BATCH * HEADS * (size_t)n * sizeof *lse);
  if (!out || !dq || !dk || !dv || !lse) return 1;
  CHECK(sparse_tensor_contiguous(&tq, q, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tk, k, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tv, v, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tout, out, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tdout, dout, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tdq, dq, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tdk, dk, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tdv, dv, SPARSE_DTYPE_F32, 4, shape));
  CHECK(sparse_tensor_contiguous(&tlse, lse, SPARSE_DTYPE_F32, 3, lse_shape));

  /* NULL params: scale 1 / sqrt(head_dim). */
  CHECK(sparse_attention_forward(ctx, layout, NULL, &tq, &tk, &tv, &tout, &tlse));
  CHECK(sparse_attention_backward(ctx, layout, NULL, &tq, &tk, &tv, &tout, &tlse, &tdout, &tdq,
                                  &tdk, &tdv));
  printf("checksum (sum |x|): out %.6f  lse %.6f  dq %.6f  dk %.6f  dv %.6f\n", sum(out, count),
         sum(lse, (size_t)BATCH * HEADS * (size_t)n), sum(dq, count), sum(dk, count),
         sum(dv, count));

  for (h = 0; h < HEADS; ++h) {
    const int64_t rows[4] = {0, stride, n / 2 + 1, n - 1};
    int r;
    for (r = 0; r < 4; ++r) {
      const double d = check_row(q, k, v, out, n, stride, 1, h, rows[r]);
      if (d > worst) worst = d;
    }
  }
  printf("max |out - direct| over 8 rows: %.2e\n", worst);

  /* Errors come back as a status and a message, never as a crash. */
  desc.block_size = 24;
  {
    sparse_layout* bad = NULL;
    const sparse_status s = sparse_layout_create(&desc, &bad);
    printf("block_size 24 -> %s: %s\n", sparse_status_string(s), sparse_last_error());
    if (s != SPARSE_ERR_INVALID_ARGUMENT || bad != NULL) worst = INFINITY;
  }

  free(q), free(k), free(v), free(out), free(lse), free(dout), free(dq), free(dk), free(dv);
  sparse_layout_destroy(layout);
  sparse_context_destroy(ctx);
  if (!(worst < 1e-4)) {
    fprintf(stderr, "FAILED: output differs from the direct computation\n");
    return 1;
  }
  return 0;
}
