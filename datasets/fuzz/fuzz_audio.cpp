// Audio path on an arbitrary file: libsndfile decoding (and, for FLAC, libFLAC's MD5 check) as the
// project drives it, then the project's own code on what it returns: channel mixing, resampling,
// mu-law, the frame-count check and the single-recording time split. libsndfile and libFLAC are
// not instrumented; the input's last byte picks the file name's extension.
#include "datasets/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* const kSuffixes[] = {".wav", ".flac", ".ogg", ".opus", ".aiff", ".au", ".raw"};
  const char* suffix = kSuffixes[size > 0 ? data[size - 1] % 7 : 0];
  const std::string path = fuzz::temp_path(suffix);
  fuzz::write_file(path, data, size);
  try {
    const sparse::data::DecodedAudio a = sparse::data::decode_audio_file(path, 12000);
    unsigned sum = 0;
    for (uint8_t q : a.mulaw) sum += q;
    volatile unsigned sink = sum;
    (void)sink;
    sparse::data::AudioOptions o;
    o.seq_len = 64;
    try {
      fuzz::drain(*sparse::data::open_audio(path, sparse::data::Split::Train, o));
    } catch (const sparse::Error&) {
    }
  } catch (const sparse::Error&) {
  }
  ::unlink(path.c_str());
  return 0;
}
