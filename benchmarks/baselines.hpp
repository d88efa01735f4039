// What a user gets without a model: general-purpose compressors (gzip, bzip2, xz, zstd) and
// PNG, measured on the same held-out bytes the model is evaluated on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace repro {

struct CompressorResult {
  std::string name;       // "xz -9e", ...
  double bits_per_byte;   // of the held-out bytes, given the training bytes
  bool available = true;  // false when this build lacks the library
};

// Cost of `test` after `train` with each compressor: 8 (|C(train + test)| - |C(train)|) / |test|.
// This is what a compressor that has seen the training bytes pays for the held-out bytes.
std::vector<CompressorResult> conditional_compression(const std::vector<uint8_t>& train,
                                                      const std::vector<uint8_t>& test);

// PNG (libpng, compression level 9, best filter per row chosen by libpng) of each
// `width` x `height` x `channels` image in `images` (8-bit, row-major, channels interleaved):
// total bits / total sub-pixels. Returns a negative value when libpng is not available.
// PNG file contents of one 8-bit image (1 or 3 channels interleaved); throws when libpng is
// missing or fails.
std::vector<uint8_t> png_image(const std::vector<uint8_t>& pixels, int width, int height,
                               int channels);

// 16-bit PCM WAV file contents of mono samples in [-1, 1] (written by hand: a 44-byte RIFF header
// and little-endian samples; the format is fixed and tiny).
std::vector<uint8_t> wav_mono16(const std::vector<float>& samples, int sample_rate);

double png_bits_per_subpixel(const std::vector<uint8_t>& images, int width, int height,
                             int channels);

}  // namespace repro
