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

// Whether this build has libsndfile (FLAC) and libwebp (WebP lossless).
bool have_flac();
bool have_webp();

// FLAC file contents (libsndfile, mono, at `sample_rate`) of 16-bit samples, or of 8-bit samples
// when `eight_bit` (each value must then fit in int8). Throws when libsndfile is missing or fails.
std::vector<uint8_t> flac_file(const std::vector<int16_t>& samples, int sample_rate,
                               bool eight_bit = false);
// Decodes a FLAC (or any libsndfile format) held in memory to 16-bit mono samples; throws on
// error. Used by the tests to check that flac_file is lossless.
std::vector<int16_t> decode_audio_16(const std::vector<uint8_t>& file, int* sample_rate);

// 8-bit mu-law tokens -> 16-bit PCM through sparse_mulaw_decode (what `sample` writes as WAV).
std::vector<int16_t> mulaw_to_pcm16(const std::vector<uint8_t>& tokens);

// WebP lossless (libwebp, the encoder's default lossless effort) of one 8-bit image with 1 or 3
// channels (1 channel is encoded as gray RGB: WebP has no gray mode). Throws when libwebp is
// missing or fails.
std::vector<uint8_t> webp_lossless_image(const std::vector<uint8_t>& pixels, int width, int height,
                                         int channels);
// Decodes WebP to RGB (tests); throws on error.
std::vector<uint8_t> webp_decode_rgb(const std::vector<uint8_t>& file, int* width, int* height);
// Total bits of the WebP lossless images / total sub-pixels of `images` (as png_bits_per_subpixel);
// negative when libwebp is not available.
double webp_bits_per_subpixel(const std::vector<uint8_t>& images, int width, int height,
                              int channels);

}  // namespace repro
