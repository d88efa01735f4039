// Seeds for fuzz_audio, written with libsndfile: short recordings in the containers the audio
// path reads (WAV, FLAC, Ogg Vorbis, Ogg Opus, AIFF, AU), named so that the fuzz target's
// extension byte (the last byte of the file) is not relied on.
//   make_audio_seeds DIR
#include <sndfile.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  struct Seed {
    const char* name;
    int format, rate, channels, frames;
  } seeds[] = {{"pcm16.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 800},
               {"float-stereo.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 44100, 2, 441},
               {"u8.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_U8, 11025, 1, 1000},
               {"tone.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 8000, 1, 1600},
               {"tone24.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 16000, 2, 800},
               {"tone.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 8000, 1, 1600},
               {"tone.opus", SF_FORMAT_OGG | SF_FORMAT_OPUS, 8000, 1, 1600},
               {"tone.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 8000, 1, 400},
               {"tone.au", SF_FORMAT_AU | SF_FORMAT_ULAW, 8000, 1, 400}};
  int failed = 0;
  for (const Seed& s : seeds) {
    SF_INFO info{};
    info.samplerate = s.rate;
    info.channels = s.channels;
    info.format = s.format;
    const std::string path = std::string(argv[1]) + "/" + s.name;
    SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
    if (f == nullptr) {
      std::fprintf(stderr, "skipping %s: %s\n", s.name, sf_strerror(nullptr));
      ++failed;
      continue;
    }
    std::vector<float> x(static_cast<size_t>(s.frames * s.channels));
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = static_cast<float>(0.4 * std::sin(0.05 * static_cast<double>(i)));
    sf_writef_float(f, x.data(), s.frames);
    sf_close(f);
  }
  return failed == static_cast<int>(sizeof seeds / sizeof seeds[0]) ? 1 : 0;
}
