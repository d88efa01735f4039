// The format baselines are lossless: FLAC (libsndfile) decodes back to the PCM it was given, in
// 16-bit and 8-bit; WebP lossless (libwebp) decodes back to the pixels. Decoding uses the
// libraries' readers, independent of the writers' code in benchmarks/baselines.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "baselines.hpp"

TEST_CASE("FLAC through libsndfile is lossless and smaller than raw PCM on tonal audio") {
  if (!repro::have_flac()) {
    MESSAGE("this build has no libsndfile: FLAC not tested");
    return;
  }
  std::mt19937 rng(5);
  std::normal_distribution<double> noise(0.0, 200.0);
  std::vector<int16_t> pcm(12000);
  for (size_t i = 0; i < pcm.size(); ++i)
    pcm[i] = static_cast<int16_t>(std::lround(
        8000.0 * std::sin(2 * 3.141592653589793 * 440.0 * static_cast<double>(i) / 12000.0) +
        noise(rng)));
  pcm[17] = 32767;  // the extremes survive too
  pcm[18] = -32768;
  const auto file = repro::flac_file(pcm, 12000);
  REQUIRE(file.size() > 4);
  CHECK(std::string(file.begin(), file.begin() + 4) == "fLaC");
  CHECK(file.size() < pcm.size() * 2);
  int rate = 0;
  CHECK(repro::decode_audio_16(file, &rate) == pcm);
  CHECK(rate == 12000);

  // 8-bit: the mu-law codes (minus 128) as they are stored in the held-out data.
  std::vector<int16_t> codes(5000);
  for (size_t i = 0; i < codes.size(); ++i)
    codes[i] = static_cast<int16_t>(static_cast<int>(rng() % 256) - 128);
  const auto file8 = repro::flac_file(codes, 12000, true);
  const auto back = repro::decode_audio_16(file8, &rate);
  REQUIRE(back.size() == codes.size());
  for (size_t i = 0; i < codes.size(); ++i) CHECK(back[i] == codes[i] * 256);
  CHECK_THROWS(repro::flac_file({300}, 12000, true));  // not an 8-bit value
  CHECK_THROWS(repro::flac_file({}, 12000));
}

TEST_CASE("mu-law tokens become the PCM that `sample` writes") {
  const std::vector<uint8_t> tokens = {0, 64, 127, 128, 200, 255};
  const auto pcm = repro::mulaw_to_pcm16(tokens);
  REQUIRE(pcm.size() == tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    // The inverse of q = round((F(x) + 1) / 2 x 255), F(x) = sign(x) ln(1 + 255 |x|) / ln 256.
    const double y = tokens[i] / 255.0 * 2 - 1;
    const double x = std::copysign((std::pow(256.0, std::fabs(y)) - 1) / 255.0, y);
    CHECK(std::abs(pcm[i] / 32767.0 - x) < 2e-4);
  }
}

TEST_CASE("WebP lossless through libwebp decodes to the same pixels") {
  if (!repro::have_webp()) {
    MESSAGE("this build has no libwebp: WebP not tested");
    return;
  }
  std::mt19937 rng(9);
  const int w = 17, h = 9;
  std::vector<uint8_t> rgb(static_cast<size_t>(w * h * 3));
  for (auto& v : rgb) v = static_cast<uint8_t>(rng());
  int dw = 0, dh = 0;
  CHECK(repro::webp_decode_rgb(repro::webp_lossless_image(rgb, w, h, 3), &dw, &dh) == rgb);
  CHECK((dw == w && dh == h));
  std::vector<uint8_t> gray(static_cast<size_t>(w * h));
  for (auto& v : gray) v = static_cast<uint8_t>(rng() % 16);
  const auto back = repro::webp_decode_rgb(repro::webp_lossless_image(gray, w, h, 1), &dw, &dh);
  REQUIRE(back.size() == gray.size() * 3);
  for (size_t i = 0; i < gray.size(); ++i)
    CHECK((back[3 * i] == gray[i] && back[3 * i + 1] == gray[i] && back[3 * i + 2] == gray[i]));
  // Bits per sub-pixel of two images = total file bits / sub-pixels.
  std::vector<uint8_t> two(gray);
  two.insert(two.end(), gray.begin(), gray.end());
  const double bits = repro::webp_bits_per_subpixel(two, w, h, 1);
  CHECK(bits ==
        doctest::Approx(8.0 * 2 *
                        static_cast<double>(repro::webp_lossless_image(gray, w, h, 1).size()) /
                        static_cast<double>(two.size())));
  CHECK_THROWS(repro::webp_lossless_image(gray, w, h + 1, 1));
}
