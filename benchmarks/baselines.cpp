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
  put(16, 4);                                      // fmt chunk size
  put(1, 2);                                       // PCM
  put(1, 2);                                       // mono
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

}  // namespace repro
