#include "baselines.hpp"

#include <stdexcept>

#include "baselines_config.h"
#if REPRO_HAVE_ZLIB
#include <zlib.h>
#endif
#if REPRO_HAVE_LZMA
#include <lzma.h>
#endif
#if REPRO_HAVE_BZIP2
#include <bzlib.h>
#endif
#if REPRO_HAVE_ZSTD
#include <zstd.h>
#endif
#if REPRO_HAVE_PNG
#include <png.h>
#endif
#if REPRO_HAVE_SNDFILE
#include <sndfile.h>
#endif
#if REPRO_HAVE_WEBP
#include <webp/decode.h>
#include <webp/encode.h>
#endif

#include <algorithm>
#include <cstring>

#include "sparse/sparse.h"

namespace repro {
namespace {

using Bytes = std::vector<uint8_t>;

// Compressed size in bytes, or -1 when the codec is not built in.
int64_t gzip_size(const Bytes& in) {
#if REPRO_HAVE_ZLIB
  z_stream s{};
  if (deflateInit2(&s, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  Bytes out(deflateBound(&s, in.size()) + 64);
  s.next_in = const_cast<Bytes::value_type*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&s, Z_FINISH);
  const int64_t size = static_cast<int64_t>(s.total_out);
  deflateEnd(&s);
  if (rc != Z_STREAM_END) throw std::runtime_error("deflate failed");
  return size;
#else
  (void)in;
  return -1;
#endif
}

int64_t xz_size(const Bytes& in) {
#if REPRO_HAVE_LZMA
  Bytes out(lzma_stream_buffer_bound(in.size()));
  size_t pos = 0;
  if (lzma_easy_buffer_encode(9 | LZMA_PRESET_EXTREME, LZMA_CHECK_CRC64, nullptr, in.data(),
                              in.size(), out.data(), &pos, out.size()) != LZMA_OK)
    throw std::runtime_error("lzma_easy_buffer_encode failed");
  return static_cast<int64_t>(pos);
#else
  (void)in;
  return -1;
#endif
}

int64_t bzip2_size(const Bytes& in) {
#if REPRO_HAVE_BZIP2
  unsigned int size = static_cast<unsigned int>(in.size() + in.size() / 100 + 600);
  Bytes out(size);
  if (BZ2_bzBuffToBuffCompress(reinterpret_cast<char*>(out.data()), &size,
                               const_cast<char*>(reinterpret_cast<const char*>(in.data())),
                               static_cast<unsigned int>(in.size()), 9, 0, 0) != BZ_OK)
    throw std::runtime_error("BZ2_bzBuffToBuffCompress failed");
  return size;
#else
  (void)in;
  return -1;
#endif
}

int64_t zstd_size(const Bytes& in) {
#if REPRO_HAVE_ZSTD
  Bytes out(ZSTD_compressBound(in.size()));
  const size_t size = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 19);
  if (ZSTD_isError(size)) throw std::runtime_error("ZSTD_compress failed");
  return static_cast<int64_t>(size);
#else
  (void)in;
  return -1;
#endif
}

}  // namespace

std::vector<CompressorResult> conditional_compression(const Bytes& train, const Bytes& test) {
  if (test.empty()) throw std::runtime_error("no held-out bytes to compress");
  Bytes both(train);
  both.insert(both.end(), test.begin(), test.end());
  struct Codec {
    const char* name;
    int64_t (*size)(const Bytes&);
  };
  const Codec codecs[] = {{"gzip -9 (zlib)", gzip_size},
                          {"bzip2 -9 (libbz2)", bzip2_size},
                          {"xz -9e (liblzma)", xz_size},
                          {"zstd -19 (libzstd)", zstd_size}};
  std::vector<CompressorResult> results;
  for (const Codec& c : codecs) {
    CompressorResult r;
    r.name = c.name;
    const int64_t with = c.size(both);
    if (with < 0) {
      r.available = false;
      r.bits_per_byte = -1;
    } else {
      const int64_t alone = train.empty() ? 0 : c.size(train);
      r.bits_per_byte = 8.0 * static_cast<double>(with - alone) / static_cast<double>(test.size());
    }
    results.push_back(r);
  }
  return results;
}

#if REPRO_HAVE_PNG
namespace {
void png_append(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<Bytes*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}
void png_flush(png_structp) {}

// Encodes one image; false when libpng reports an error. Kept free of C++ objects between
// setjmp and the libpng calls that may longjmp back.
bool encode_png(const uint8_t* pixels, int width, int height, int channels, Bytes* out) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (png == nullptr || info == nullptr) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, out, png_append, png_flush);
  png_set_compression_level(png, 9);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y)
    png_write_row(png, const_cast<png_bytep>(pixels + static_cast<size_t>(y) * width * channels));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}
}  // namespace
#endif

Bytes png_image(const Bytes& pixels, int width, int height, int channels) {
#if REPRO_HAVE_PNG
  if ((channels != 1 && channels != 3) ||
      pixels.size() != static_cast<size_t>(width) * height * channels)
    throw std::runtime_error("png: pixel count does not match the image shape");
  Bytes out;
  if (!encode_png(pixels.data(), width, height, channels, &out))
    throw std::runtime_error("libpng: encoding failed");
  return out;
#else
  (void)pixels;
  (void)width;
  (void)height;
  (void)channels;
  throw std::runtime_error("this build has no libpng: cannot write PNG");
#endif
}

Bytes wav_mono16(const std::vector<float>& samples, int sample_rate) {
  Bytes out;
  auto put = [&](uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  const auto data_bytes = static_cast<uint32_t>(samples.size() * 2);
  out.insert(out.end(), {'R', 'I', 'F', 'F'});
  put(36 + data_bytes, 4);
  out.insert(out.end(), {'W', 'A', 'V', 'E', 'f', 'm', 't', ' '});
  put(16, 4);  // fmt chunk size
  put(1, 2);   // PCM
  put(1, 2);   // mono
  put(static_cast<uint32_t>(sample_rate), 4);
  put(static_cast<uint32_t>(sample_rate) * 2, 4);  // byte rate
  put(2, 2);                                       // block align
  put(16, 2);                                      // bits per sample
  out.insert(out.end(), {'d', 'a', 't', 'a'});
  put(data_bytes, 4);
  for (float x : samples) {
    const float c = x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
    put(static_cast<uint32_t>(static_cast<uint16_t>(static_cast<int16_t>(c * 32767.0f))), 2);
  }
  return out;
}

double png_bits_per_subpixel(const Bytes& images, int width, int height, int channels) {
#if REPRO_HAVE_PNG
  const size_t image_bytes = static_cast<size_t>(width) * height * channels;
  if (image_bytes == 0 || images.size() % image_bytes != 0)
    throw std::runtime_error("png baseline: data is not a whole number of images");
  if (channels != 1 && channels != 3) throw std::runtime_error("png baseline: 1 or 3 channels");
  size_t total = 0;
  Bytes out;
  for (size_t offset = 0; offset < images.size(); offset += image_bytes) {
    out.clear();
    if (!encode_png(images.data() + offset, width, height, channels, &out))
      throw std::runtime_error("libpng: encoding failed");
    total += out.size();
  }
  return 8.0 * static_cast<double>(total) / static_cast<double>(images.size());
#else
  (void)images;
  (void)width;
  (void)height;
  (void)channels;
  return -1;
#endif
}

bool have_flac() { return REPRO_HAVE_SNDFILE != 0; }
bool have_webp() { return REPRO_HAVE_WEBP != 0; }

#if REPRO_HAVE_SNDFILE
namespace {
// A growable in-memory file for libsndfile's virtual I/O (the FLAC writer seeks back to finish
// its header).
struct MemoryFile {
  Bytes data;
  sf_count_t pos = 0;
};
sf_count_t vio_length(void* user) {
  return static_cast<sf_count_t>(static_cast<MemoryFile*>(user)->data.size());
}
sf_count_t vio_seek(sf_count_t offset, int whence, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const sf_count_t base = whence == SEEK_SET   ? 0
                          : whence == SEEK_CUR ? f->pos
                                               : static_cast<sf_count_t>(f->data.size());
  if (base + offset < 0) return -1;
  f->pos = base + offset;
  return f->pos;
}
sf_count_t vio_read(void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const auto size = static_cast<sf_count_t>(f->data.size());
  const sf_count_t n = std::max<sf_count_t>(0, std::min(count, size - f->pos));
  if (n > 0) std::memcpy(ptr, f->data.data() + f->pos, static_cast<size_t>(n));
  f->pos += n;
  return n;
}
sf_count_t vio_write(const void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const auto end = static_cast<size_t>(f->pos + count);
  if (end > f->data.size()) f->data.resize(end);
  std::memcpy(f->data.data() + f->pos, ptr, static_cast<size_t>(count));
  f->pos += count;
  return count;
}
sf_count_t vio_tell(void* user) { return static_cast<MemoryFile*>(user)->pos; }
SF_VIRTUAL_IO memory_io() { return {vio_length, vio_seek, vio_read, vio_write, vio_tell}; }
}  // namespace
#endif

Bytes flac_file(const std::vector<int16_t>& samples, int sample_rate, bool eight_bit) {
#if REPRO_HAVE_SNDFILE
  if (samples.empty()) throw std::runtime_error("flac: no samples to encode");
  if (eight_bit)
    for (int16_t s : samples)
      if (s < -128 || s > 127) throw std::runtime_error("flac: an 8-bit sample is out of range");
  MemoryFile file;
  SF_VIRTUAL_IO io = memory_io();
  SF_INFO info{};
  info.samplerate = sample_rate;
  info.channels = 1;
  info.format = SF_FORMAT_FLAC | (eight_bit ? SF_FORMAT_PCM_S8 : SF_FORMAT_PCM_16);
  SNDFILE* sf = sf_open_virtual(&io, SFM_WRITE, &info, &file);
  if (sf == nullptr)
    throw std::runtime_error(std::string("libsndfile: cannot open a FLAC writer: ") +
                             sf_strerror(nullptr));
  // Compression level 1.0 = FLAC's highest (-8).
  double level = 1.0;
  sf_command(sf, SFC_SET_COMPRESSION_LEVEL, &level, sizeof level);
  // 8-bit FLAC takes its samples as shorts scaled by 256 (libsndfile's integer conversion).
  std::vector<short> buf(samples.begin(), samples.end());
  if (eight_bit)
    for (auto& s : buf) s = static_cast<short>(s * 256);
  const sf_count_t written = sf_write_short(sf, buf.data(), static_cast<sf_count_t>(buf.size()));
  const std::string error = sf_strerror(sf);
  if (sf_close(sf) != 0 || written != static_cast<sf_count_t>(buf.size()))
    throw std::runtime_error("libsndfile: FLAC encoding failed: " + error);
  return file.data;
#else
  (void)samples;
  (void)sample_rate;
  (void)eight_bit;
  throw std::runtime_error("this build has no libsndfile: cannot write FLAC");
#endif
}

std::vector<int16_t> decode_audio_16(const Bytes& bytes, int* sample_rate) {
#if REPRO_HAVE_SNDFILE
  MemoryFile file;
  file.data = bytes;
  SF_VIRTUAL_IO io = memory_io();
  SF_INFO info{};
  SNDFILE* sf = sf_open_virtual(&io, SFM_READ, &info, &file);
  if (sf == nullptr)
    throw std::runtime_error(std::string("libsndfile: cannot decode: ") + sf_strerror(nullptr));
  if (info.channels != 1) {
    sf_close(sf);
    throw std::runtime_error("decode_audio_16: expected mono");
  }
  std::vector<short> buf(static_cast<size_t>(info.frames));
  const sf_count_t got = sf_read_short(sf, buf.data(), info.frames);
  sf_close(sf);
  if (got != info.frames) throw std::runtime_error("libsndfile: short read");
  if (sample_rate) *sample_rate = info.samplerate;
  return std::vector<int16_t>(buf.begin(), buf.end());
#else
  (void)bytes;
  (void)sample_rate;
  throw std::runtime_error("this build has no libsndfile: cannot decode audio");
#endif
}

std::vector<int16_t> mulaw_to_pcm16(const Bytes& tokens) {
  std::vector<float> x(tokens.size());
  if (sparse_mulaw_decode(tokens.data(), tokens.size(), x.data()) != SPARSE_OK)
    throw std::runtime_error(std::string("mu-law decode: ") + sparse_last_error());
  std::vector<int16_t> pcm(tokens.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float c = std::min(1.0f, std::max(-1.0f, x[i]));
    pcm[i] = static_cast<int16_t>(c * 32767.0f);  // as wav_mono16 writes it
  }
  return pcm;
}

Bytes webp_lossless_image(const Bytes& pixels, int width, int height, int channels) {
#if REPRO_HAVE_WEBP
  if ((channels != 1 && channels != 3) || width <= 0 || height <= 0 ||
      pixels.size() != static_cast<size_t>(width) * height * channels)
    throw std::runtime_error("webp: pixel count does not match the image shape");
  Bytes rgb;
  const Bytes* src = &pixels;
  if (channels == 1) {
    rgb.resize(pixels.size() * 3);
    for (size_t i = 0; i < pixels.size(); ++i)
      rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = pixels[i];
    src = &rgb;
  }
  uint8_t* out = nullptr;
  const size_t size = WebPEncodeLosslessRGB(src->data(), width, height, 3 * width, &out);
  if (size == 0 || out == nullptr) throw std::runtime_error("libwebp: lossless encoding failed");
  Bytes file(out, out + size);
  WebPFree(out);
  return file;
#else
  (void)pixels;
  (void)width;
  (void)height;
  (void)channels;
  throw std::runtime_error("this build has no libwebp: cannot write WebP");
#endif
}

Bytes webp_decode_rgb(const Bytes& file, int* width, int* height) {
#if REPRO_HAVE_WEBP
  int w = 0, h = 0;
  uint8_t* rgb = WebPDecodeRGB(file.data(), file.size(), &w, &h);
  if (rgb == nullptr) throw std::runtime_error("libwebp: cannot decode");
  Bytes out(rgb, rgb + static_cast<size_t>(w) * h * 3);
  WebPFree(rgb);
  if (width) *width = w;
  if (height) *height = h;
  return out;
#else
  (void)file;
  (void)width;
  (void)height;
  throw std::runtime_error("this build has no libwebp: cannot decode WebP");
#endif
}

double webp_bits_per_subpixel(const Bytes& images, int width, int height, int channels) {
  if (!have_webp()) return -1;
  const size_t image_bytes = static_cast<size_t>(width) * height * channels;
  if (image_bytes == 0 || images.size() % image_bytes != 0)
    throw std::runtime_error("webp baseline: data is not a whole number of images");
  size_t total = 0;
  for (size_t offset = 0; offset < images.size(); offset += image_bytes) {
    const Bytes one(images.begin() + static_cast<std::ptrdiff_t>(offset),
                    images.begin() + static_cast<std::ptrdiff_t>(offset + image_bytes));
    total += webp_lossless_image(one, width, height, channels).size();
  }
  return 8.0 * static_cast<double>(total) / static_cast<double>(images.size());
}

}  // namespace repro
