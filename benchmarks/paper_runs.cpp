#include "paper_runs.hpp"

namespace repro {

const std::vector<PaperRun>& paper_runs() {
  // Figures recalled from the paper (tables 1-4); the batch sizes are
  // OpenAI's released CIFAR-10 setting (16) and assumptions elsewhere.
  static const std::vector<PaperRun> runs = {
      {"CIFAR-10", "cifar10", 2.80, "PixelCNN++ 2.92, Image Transformer 2.90, PixelSNAIL 2.85", 120,
       48000, 16, "cifar-10-binary.tar.gz"},
      {"Enwik8", "enwik8", 0.99, "Transformer-XL 88M 1.03, Transformer-XL 277M 0.99", 80,
       90e6 / 12288, 16, "enwik8.zip"},
      {"ImageNet 64x64", "imagenet64", 3.44, "SPN 3.52", 70, 1.28e6, 16,
       "downsampled ImageNet 64x64 (see datasets/README.md on the variant)"},
      {"Classical music, 12 kHz", "audio", 1.97, "(none in the paper's table)", 0, 0, 16,
       "a folder of recordings"},
  };
  return runs;
}

double full_run_steps(const PaperRun& run) {
  return run.epochs * run.train_sequences / static_cast<double>(run.batch);
}

double flops_per_step(const sparse_model_config& cfg, int64_t params, int64_t batch) {
  const double tokens = static_cast<double>(batch * cfg.seq_len);
  const double n = static_cast<double>(cfg.seq_len), l = static_cast<double>(cfg.stride);
  const double head_dim = static_cast<double>(cfg.d_model) / cfg.num_heads;
  // Keys per query of the paper's patterns: about l for the local head, n / l (strided) or n c / l
  // (fixed summary) for the other, averaged over query positions; then over the two head types.
  // Dense attends to n / 2 keys on average. Attention products: 4 B^2 d forward and 10 B^2 d
  // backward per block and head, i.e. 14 d per query-key pair.
  double keys;
  if (cfg.attention == SPARSE_MODEL_ATTENTION_DENSE) {
    keys = n / 2;
  } else {
    const double other = cfg.attention == SPARSE_MODEL_ATTENTION_FIXED
                             ? n * static_cast<double>(cfg.summary) / l / 2
                             : n / l / 2;
    keys = (l + other) / 2;
  }
  const double attention = 14.0 * keys * head_dim * cfg.num_heads * cfg.num_layers * tokens;
  return 6.0 * static_cast<double>(params) * tokens + attention;
}

}  // namespace repro
