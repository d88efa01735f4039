/*
 * libsparse: attention patterns and block layouts.
 *
 * A pattern says, per head, which keys j each query i attends to (positions are 0-based). A
 * layout is what the kernels compute from it: the sequence is cut into blocks of `block_size`
 * positions, a block (I, J) is computed when any (i, j) inside it is allowed, and inside computed
 * blocks the element mask is applied exactly, so attention over a layout equals attention with the
 * token-level definition below.
 *
 * Token-level definitions (l = stride, c = summary width, w = window):
 *   DENSE            j <= i                        (all j when causal == 0)
 *   LOCAL            i - w < j <= i
 *   STRIDED_ROW      max(0, i - l) <= j <= i                     (paper's strided head type 1)
 *   STRIDED_COLUMN   j <= i and (i - j) mod l == 0               (paper's strided head type 2)
 *   FIXED_BLOCK      j <= i and floor(j / l) == floor(i / l)     (paper's fixed head type 1)
 *   FIXED_SUMMARY    j <= i and l - c*(v+1) <= j mod l < l - c*v (paper's fixed head type 2
 *                    with v = 0; v = head mod summary_variants gives OpenAI's per-head offsets)
 *   SLIDING_WINDOW   |i - j| < w                   (i - w < j <= i when causal)
 *   LONGFORMER       SLIDING_WINDOW, plus every query attends to the global tokens and every
 *                    global token attends to all keys (then j <= i when causal)
 *   BIGBIRD          LONGFORMER, plus `random_blocks` random key blocks per query block row,
 *                    drawn from `seed` and the head index (then j <= i when causal)
 *
 * BigBird's random blocks of head h and query block row I (block units, nb = number of blocks,
 * range R = I + 1 when causal else nb): if random_blocks >= R, all R blocks; otherwise with
 * x = seed ^ (0x9E3779B97F4A7C15 * (h + 1)) ^ (0xBF58476D1CE4E5B9 * (I + 1)), repeat
 * { x += 0x9E3779B97F4A7C15; z = x; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
 *   z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^= z >> 31; take block z mod R unless already
 * taken } until random_blocks distinct blocks are taken (splitmix64, all arithmetic mod 2^64).
 * A random block contributes every key j of the block (j <= i when causal).
 *
 * Several patterns may name the same head: that head attends to the union of their sets (the
 * paper's "merged" heads). A head that no pattern names attends to nothing (its output is zero).
 *
 * A head whose only patterns are STRIDED_COLUMN with one stride l is computed in the transposed
 * order of the paper (position p is placed at (p mod l) * ceil(n / l) + floor(p / l), padded and
 * masked when l does not divide n); there it is causal attention inside chunks and truly
 * block-sparse. In natural order it touches about half of all blocks.
 */
#ifndef SPARSE_LAYOUT_H
#define SPARSE_LAYOUT_H

#include "sparse/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Pattern kinds. Values are stable; new kinds are appended. */
typedef enum sparse_pattern_kind {
  SPARSE_PATTERN_DENSE = 0,
  SPARSE_PATTERN_LOCAL = 1,
  SPARSE_PATTERN_STRIDED_ROW = 2,
  SPARSE_PATTERN_STRIDED_COLUMN = 3,
  SPARSE_PATTERN_FIXED_BLOCK = 4,
  SPARSE_PATTERN_FIXED_SUMMARY = 5,
  SPARSE_PATTERN_SLIDING_WINDOW = 6,
  SPARSE_PATTERN_LONGFORMER = 7,
  SPARSE_PATTERN_BIGBIRD = 8
} sparse_pattern_kind;

/* Static lowercase name ("dense", "strided_row", ...) or "unknown". Never NULL. */
SPARSE_API const char* sparse_pattern_kind_name(sparse_pattern_kind kind);
/* Parses a name as printed by sparse_pattern_kind_name().
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments or an unknown name. */
SPARSE_API sparse_status sparse_pattern_kind_from_name(const char* name, sparse_pattern_kind* out);

/* One pattern applied to one head (or all heads). Fill with sparse_pattern_default(). Only the
 * fields the kind uses are read. */
typedef struct sparse_pattern {
  sparse_pattern_kind kind;
  int32_t head;                 /* head index, or -1 for every head (default -1) */
  int64_t window;               /* w: LOCAL, SLIDING_WINDOW, LONGFORMER, BIGBIRD (>= 1) */
  int64_t stride;               /* l: STRIDED_*, FIXED_* (>= 1, <= seq_len) */
  int64_t summary;              /* c: FIXED_SUMMARY (1 <= c <= l) */
  int32_t summary_variants;     /* FIXED_SUMMARY per-head offsets; 1 = the paper (default 1),
                                   c * summary_variants <= l */
  int32_t causal;               /* SLIDING_WINDOW, LONGFORMER, BIGBIRD: 1 causal, 0 bidirectional
                                   (default 1); the paper's patterns are always causal */
  const int64_t* global_tokens; /* LONGFORMER, BIGBIRD: positions, each in [0, seq_len) */
  int64_t num_global_tokens;    /* <= seq_len; duplicates are allowed */
  int64_t random_blocks;        /* BIGBIRD: random key blocks per query block row (>= 0) */
  uint64_t seed;                /* BIGBIRD: seed of the random blocks */
} sparse_pattern;

/* Sets `pattern` to `kind` with the defaults above (window, stride, summary 0: must be set).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL or an unknown kind. */
SPARSE_API sparse_status sparse_pattern_default(sparse_pattern* pattern, sparse_pattern_kind kind);

/* Description of a layout. Fill with sparse_layout_desc_default(). */
typedef struct sparse_layout_desc {
  uint32_t struct_size; /* sizeof(sparse_layout_desc) */
  int64_t seq_len;      /* n >= 1 */
  int32_t block_size;   /* 16, 32, 64 or 128 (default 64) */
  int32_t num_heads;    /* >= 1 (default 1) */
  const sparse_pattern* patterns;
  int32_t num_patterns;             /* >= 1 */
  uint32_t pattern_struct_size;     /* sizeof(sparse_pattern), set by the defaults function */
  int32_t transpose_strided_column; /* 1: compute pure strided-column heads in the transposed
                                       order (default); 0: natural order */
  uint8_t reserved[60];             /* must be zero */
} sparse_layout_desc;

/* Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL. */
SPARSE_API sparse_status sparse_layout_desc_default(sparse_layout_desc* desc);

typedef struct sparse_layout sparse_layout;

/* Builds a layout. On failure *out is NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT naming the field (struct_size or pattern_struct_size not
 * those sparse_layout_desc_default() sets, non-zero reserved bytes, seq_len < 1, unsupported
 * block size, head out of range, stride < 1 or > seq_len, summary outside [1, stride],
 * window < 1, a global token out of range, more global tokens than positions, NULL patterns,
 * ...); SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_layout_create(const sparse_layout_desc* desc, sparse_layout** out);

/* Builds a layout from a user-supplied block mask: `block_mask` holds num_heads x nb x nb bytes
 * (nb = ceil(seq_len / block_size)), row-major, non-zero = computed. `element_mask` may be NULL
 * (every element of a computed block is allowed, except positions >= seq_len); otherwise it holds,
 * for each computed block in (head, I, J) row-major order, block_size x block_size bytes,
 * non-zero = allowed. When `causal` is non-zero, elements with j > i are removed as well.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT; SPARSE_ERR_OUT_OF_MEMORY. */
SPARSE_API sparse_status sparse_layout_create_from_blocks(int64_t seq_len, int32_t block_size,
                                                          int32_t num_heads,
                                                          const uint8_t* block_mask,
                                                          const uint8_t* element_mask,
                                                          int32_t causal, sparse_layout** out);

/* NULL is accepted. */
SPARSE_API void sparse_layout_destroy(sparse_layout* layout);

/* Statistics of one head (head >= 0) or of all heads together (head == -1). */
typedef struct sparse_layout_stats {
  uint32_t struct_size;
  int64_t seq_len;
  int32_t block_size;
  int32_t num_heads;
  int32_t transposed;        /* 1 if the head is computed in the strided-column order (for
                                head == -1: number of such heads) */
  int64_t num_blocks;        /* blocks per side in the computed order: ceil(n' / block_size) */
  int64_t nnz_blocks;        /* computed blocks */
  int64_t full_blocks;       /* computed blocks with every element allowed */
  int64_t dense_blocks;      /* blocks of the dense layout on the same heads: nb (nb + 1) / 2
                                per causal head, nb^2 per bidirectional one (natural order) */
  int64_t useful_elements;   /* allowed (query, key) pairs */
  int64_t computed_elements; /* nnz_blocks * block_size^2 */
  double density;            /* nnz_blocks / dense_blocks */
  double effective_density;  /* useful_elements / computed_elements */
  size_t memory_bytes;       /* host memory the layout holds */
} sparse_layout_stats;

/* Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments, a head out of range or a too small
 * struct_size (set stats->struct_size = sizeof(sparse_layout_stats) before the call). */
SPARSE_API sparse_status sparse_layout_get_stats(const sparse_layout* layout, int32_t head,
                                                 sparse_layout_stats* stats);

/* Writes the block mask of `head` in the order the kernels compute it: nb x nb bytes, row-major,
 * 0 = skipped, 1 = computed with a partial element mask, 2 = computed, all elements allowed.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT; SPARSE_ERR_BUFFER_TOO_SMALL if size < nb * nb. */
SPARSE_API sparse_status sparse_layout_block_mask(const sparse_layout* layout, int32_t head,
                                                  uint8_t* out, size_t size);

/* Writes the keys query `query` (natural position) attends to: seq_len bytes, 1 = attends.
 * Computed from the layout (blocks and element masks), so it shows exactly what the kernels do.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT; SPARSE_ERR_BUFFER_TOO_SMALL if size < seq_len. */
SPARSE_API sparse_status sparse_layout_row_mask(const sparse_layout* layout, int32_t head,
                                                int64_t query, uint8_t* out, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* SPARSE_LAYOUT_H */
