/*
 * libsparse: datasets as fixed-length token sequences, with seeded shuffling and batching.
 *
 * Kinds (see datasets/README.md for formats, splits and the rules for shorter files):
 * - SYNTHETIC_IMAGE / SYNTHETIC_TEXT: generated in memory from `seed`; the exact entropy of what
 *   was generated is available from sparse_dataset_entropy();
 * - CIFAR10: cifar-10-binary.tar.gz, its extracted folder, or one file of 3073-byte records;
 *   3072 tokens per image (32x32, raster order, channel innermost); train 48k / valid 2k / test
 * 10k;
 * - ENWIK8: enwik8 or enwik8.zip; bytes split 90M / 5M / 5M; TEXT: any raw byte file, same rule;
 *   both also read a zip of one file or a gzip file as the text it holds (bzip2, xz, zstd, 7-Zip
 *   and tar files are refused with SPARSE_ERR_FORMAT, naming the command that unpacks them);
 * - IMAGENET64: folder of downsampled-ImageNet npz batches (train_data_batch_<k>.npz, val_data.npz
 *   as the test split) or one .npz; 12288 tokens per image;
 * - AUDIO: folder of recordings (split by file) or one recording (split in time: train, valid,
 *   test in order), mono, 12 kHz, 8-bit mu-law. Needs a build with
 *   libsndfile and libsamplerate (SPARSE_ERR_UNSUPPORTED otherwise).
 * Tokens are bytes (vocabulary 256; synthetic kinds: `vocab`). Real data stays memory-mapped
 * (archives are decompressed once into unlinked temporary files), so a 100 MB or multi-gigabyte
 * set is never read into memory whole. A dataset handle is not thread-safe.
 */
#ifndef SPARSE_DATASETS_H
#define SPARSE_DATASETS_H

#include "sparse/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Dataset kinds. Values are stable. */
typedef enum sparse_dataset_kind {
  SPARSE_DATASET_SYNTHETIC_IMAGE = 0,
  SPARSE_DATASET_SYNTHETIC_TEXT = 1,
  SPARSE_DATASET_CIFAR10 = 2,
  SPARSE_DATASET_ENWIK8 = 3,
  SPARSE_DATASET_TEXT = 4,
  SPARSE_DATASET_IMAGENET64 = 5,
  SPARSE_DATASET_AUDIO = 6
} sparse_dataset_kind;

/* Splits. Values are stable. */
typedef enum sparse_split {
  SPARSE_SPLIT_TRAIN = 0,
  SPARSE_SPLIT_VALID = 1,
  SPARSE_SPLIT_TEST = 2
} sparse_split;

/* Element type of token buffers. Values are stable. */
typedef enum sparse_token_type {
  SPARSE_TOKENS_U8 = 0, /* uint8_t per token */
  SPARSE_TOKENS_I32 = 1 /* int32_t per token */
} sparse_token_type;

/* Static lowercase name of a kind ("synthetic_image", "synthetic_text", "cifar10", "enwik8",
 * "text", "imagenet64", "audio"), or "unknown". Never NULL. */
SPARSE_API const char* sparse_dataset_kind_name(sparse_dataset_kind kind);

/* Parses a kind name as above (case-insensitive).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments or an unknown name. */
SPARSE_API sparse_status sparse_dataset_kind_from_name(const char* name, sparse_dataset_kind* out);

/* What to open. Always initialise with sparse_dataset_desc_default(). */
typedef struct sparse_dataset_desc {
  uint32_t struct_size; /* sizeof(sparse_dataset_desc), set by the defaults function */
  sparse_dataset_kind kind;
  const char* path;      /* file or folder; NULL for synthetic kinds. Copied by open. */
  sparse_split split;    /* default SPARSE_SPLIT_TRAIN */
  int64_t seq_len;       /* tokens per sequence for ENWIK8/TEXT (default 12288), AUDIO (default
                            65536) and SYNTHETIC_TEXT (default 1024); for image kinds 0 or the
                            image's size (3072 CIFAR10, 12288 IMAGENET64, width x height) */
  uint64_t seed;         /* shuffling seed; for synthetic kinds also the generation seed
                            (mixed with the split, so splits differ). Default 0x5eed */
  int32_t shuffle;       /* 1 (default): a fresh seeded permutation every epoch; 0: in order */
  int32_t vocab;         /* synthetic: alphabet size 2..256 (default 256) */
  int64_t num_sequences; /* synthetic: sequences to generate (default 1024) */
  int32_t image_width;   /* synthetic image: width (default 32) */
  int32_t image_height;  /* synthetic image: height (default 32) */
  double noise_scale;    /* synthetic image: scale of the two-sided geometric noise (4.0) */
  int64_t copy_offset;   /* synthetic text: distance of the long-range copies (default 256) */
  double copy_prob;      /* synthetic text: probability of a copy (default 0.75) */
  double successor_bias; /* synthetic text: Markov kernel M(a, b) ~ bias^((b - a) mod vocab),
                            in (0, 1] (default 0.5) */
  int32_t sample_rate;   /* audio: resampling rate in Hz (default 12000) */
  int32_t reserved0;     /* must be zero */
  double valid_fraction; /* audio: fraction of files (of samples, for one recording) in the
                            valid split (default 0.1) */
  double test_fraction;  /* audio: fraction of files (of samples, for one recording) in the
                            test split (default 0.1) */
  uint8_t reserved[64];  /* must be zero; room for future fields */
} sparse_dataset_desc;

/* Fills `desc` with the defaults for `kind` (see the fields above).
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL or an unknown kind. */
SPARSE_API sparse_status sparse_dataset_desc_default(sparse_dataset_desc* desc,
                                                     sparse_dataset_kind kind);

typedef struct sparse_dataset sparse_dataset;

/* Opens (or, for synthetic kinds, generates) a dataset split. On failure *out is NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL, bad struct_size, unknown kind or split, values out
 * of range, a split the source does not have); SPARSE_ERR_IO (a file or folder cannot be opened,
 * an expected file is missing, an empty folder); SPARSE_ERR_FORMAT (truncated, oversized or
 * corrupt files, wrong record sizes, silent audio ...; the message names the file and what was
 * expected); SPARSE_ERR_UNSUPPORTED (audio without libsndfile, archives without zlib). */
SPARSE_API sparse_status sparse_dataset_open(const sparse_dataset_desc* desc, sparse_dataset** out);

/* Releases a dataset. NULL is accepted and ignored. */
SPARSE_API void sparse_dataset_destroy(sparse_dataset* dataset);

/* Number of sequences in the split, tokens per sequence, and the vocabulary size.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL arguments. */
SPARSE_API sparse_status sparse_dataset_num_sequences(const sparse_dataset* dataset, int64_t* out);
SPARSE_API sparse_status sparse_dataset_seq_len(const sparse_dataset* dataset, int64_t* out);
SPARSE_API sparse_status sparse_dataset_vocab_size(const sparse_dataset* dataset, int32_t* out);

/* Copies sequences [first, first + count) in index order into `out`, sequence after sequence
 * (count x seq_len tokens of `type`). `out_bytes` is the buffer's size in bytes.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL, an unknown type, a range outside the split);
 * SPARSE_ERR_BUFFER_TOO_SMALL. */
SPARSE_API sparse_status sparse_dataset_read(const sparse_dataset* dataset, int64_t first,
                                             int64_t count, sparse_token_type type, void* out,
                                             size_t out_bytes);

/* Fills `out` with the next `batch_size` sequences of the seeded order (batch_size x seq_len
 * tokens), moving on to the next epoch (a new permutation) when the split is exhausted, so a
 * batch may span two epochs. If `indices` is not NULL it receives the batch_size sequence
 * indices. Errors: as sparse_dataset_read, and batch_size < 1. */
SPARSE_API sparse_status sparse_dataset_next_batch(sparse_dataset* dataset, int64_t batch_size,
                                                   sparse_token_type type, void* out,
                                                   size_t out_bytes, int64_t* indices);

/* Where the batching stands: the epoch and the number of sequences of it already served.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL dataset (either output may be NULL). */
SPARSE_API sparse_status sparse_dataset_position(const sparse_dataset* dataset, uint64_t* epoch,
                                                 int64_t* position);

/* Moves the batching to `position` (0..num_sequences) of `epoch`, e.g. to resume training.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL or a position out of range. */
SPARSE_API sparse_status sparse_dataset_seek(sparse_dataset* dataset, uint64_t epoch,
                                             int64_t position);

/* Class label of sequence `index` (0..9 CIFAR-10; ImageNet's stored labels, 1..1000), or -1 for
 * datasets without labels. Errors: SPARSE_ERR_INVALID_ARGUMENT (NULL, index out of range). */
SPARSE_API sparse_status sparse_dataset_label(const sparse_dataset* dataset, int64_t index,
                                              int32_t* out);

/* Synthetic kinds: the exact entropy of the generated split in bits per token, i.e. the mean over
 * all tokens of the entropy of the process's conditional distribution given everything before
 * it (the best achievable expected bits per dim), and the mean -log2 probability of the tokens
 * actually drawn (what an ideal model scores on this very data). Either output may be NULL.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL dataset; SPARSE_ERR_UNSUPPORTED for real data. */
SPARSE_API sparse_status sparse_dataset_entropy(const sparse_dataset* dataset, double* bits_per_dim,
                                                double* nll_bits_per_dim);

/* 8-bit mu-law (mu = 255) as used for audio: encode maps [-1, 1] (clamped; NaN as 0) to
 * round((F(x) + 1) / 2 * 255) with F(x) = sign(x) ln(1 + 255|x|) / ln 256; decode is F's inverse
 * at the level's value. `in` and `out` may not overlap.
 * Errors: SPARSE_ERR_INVALID_ARGUMENT for NULL buffers with n > 0. */
SPARSE_API sparse_status sparse_mulaw_encode(const float* in, size_t n, uint8_t* out);
SPARSE_API sparse_status sparse_mulaw_decode(const uint8_t* in, size_t n, float* out);

/* 1 if this build reads audio (libsndfile and libsamplerate), else 0. */
SPARSE_API int sparse_dataset_audio_supported(void);

#ifdef __cplusplus
}
#endif

#endif /* SPARSE_DATASETS_H */
