// Classical audio: a folder of recordings (or one recording) decoded with libsndfile (WAV, FLAC,
// Ogg Vorbis/Opus, MP3 and the rest of what the installed libsndfile reads), mixed to mono by
// averaging the channels, resampled with libsamplerate (SRC_SINC_MEDIUM_QUALITY) to 12 kHz,
// mu-law encoded to 8 bits and cut into non-overlapping sequences (a trailing partial sequence of
// each recording is dropped; sequences never span two recordings).
//
// Split by file, deterministically: files are ordered by the 64-bit FNV-1a hash of their name
// (ties by name); the first floor(test_fraction * n) are test, the next
// floor(valid_fraction * n) are valid, the rest train. The assignment of a file therefore does
// not depend on the folder's path, and a folder of fewer than 10 files (default fractions) is all
// train.
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "datasets/dataset.hpp"
#include "datasets/io.hpp"
#include "libsparse/error.hpp"
#include "libsparse/file_io.hpp"
#include "sparse_config.h"

#if SPARSE_HAVE_SNDFILE
#include <samplerate.h>
#include <sndfile.h>
#endif
#if SPARSE_HAVE_FLAC
#include <FLAC/stream_decoder.h>
#endif
#if SPARSE_HAVE_OGG
#include <ogg/ogg.h>
#endif

namespace sparse::data {
#if SPARSE_HAVE_SNDFILE
namespace {

const char* const kExtensions[] = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff",
                                   ".aif", ".aifc", ".au",  ".caf", ".w64",  ".rf64"};

bool audio_name(const std::string& name) {
  const std::string l = lower(name);
  for (const char* e : kExtensions)
    if (ends_with(l, e)) return true;
  return false;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

class AudioSource final : public Source {
 public:
  AudioSource(std::vector<std::vector<uint8_t>> tracks, int64_t len)
      : tracks_(std::move(tracks)), len_(len) {
    for (size_t t = 0; t < tracks_.size(); ++t) {
      const int64_t n = static_cast<int64_t>(tracks_[t].size()) / len_;
      for (int64_t i = 0; i < n; ++i) index_.emplace_back(t, i * len_);
    }
  }
  int64_t size() const override { return static_cast<int64_t>(index_.size()); }
  int64_t seq_len() const override { return len_; }
  void read(int64_t index, uint8_t* out) const override {
    const auto& [t, start] = index_[static_cast<size_t>(index)];
    std::copy_n(tracks_[t].data() + start, len_, out);
  }

 private:
  std::vector<std::vector<uint8_t>> tracks_;
  std::vector<std::pair<size_t, int64_t>> index_;
  int64_t len_;
};

#if SPARSE_HAVE_OGG
// Walks every page of an Ogg file with libogg, which checks each page's CRC-32. libogg skips a
// page that fails it (and libvorbis/libopus then decode around the hole without an error), so
// any skipped or trailing bytes are reported here. A file of more than one logical stream
// (chained: one recording after another; grouped: several streams side by side) is refused:
// libsndfile decodes only the first stream, so the rest would go missing without a word.
void verify_ogg_pages(const std::string& path) {
  const BlobPtr blob = map_file(path);
  ogg_sync_state sync;
  ogg_sync_init(&sync);
  struct Clear {
    ogg_sync_state* s;
    ~Clear() { ogg_sync_clear(s); }
  } clear{&sync};
  const size_t kChunk = size_t{1} << 16;
  size_t fed = 0, pages = 0, streams = 0;
  uint64_t at = 0;  // file offset of the next unparsed byte
  for (;;) {
    ogg_page page;
    const long n = ogg_sync_pageseek(&sync, &page);
    if (n > 0) {
      if (ogg_page_bos(&page) != 0 && ++streams > 1)
        throw_error(SPARSE_ERR_FORMAT, "file ", path, ": ",
                    pages + 1 == streams ? "a grouped (multiplexed)" : "a chained",
                    " Ogg file: a second logical stream begins at byte ", at, " (page ", pages + 1,
                    "); only the first would be decoded, so the file is refused "
                    "(expected one stream per file: save each recording as its own file)");
      at += static_cast<uint64_t>(n);
      ++pages;
      continue;
    }
    if (n < 0)
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": corrupt Ogg data at byte ", at, " (", -n,
                  " bytes are not a page whose CRC-32 matches; libogg skips them)");
    if (fed == blob->size()) break;
    const size_t k = std::min(kChunk, blob->size() - fed);
    char* buf = ogg_sync_buffer(&sync, static_cast<long>(k));
    if (buf == nullptr) throw_error(SPARSE_ERR_OUT_OF_MEMORY, "file ", path, ": libogg buffer");
    std::copy_n(blob->data() + fed, k, buf);
    ogg_sync_wrote(&sync, static_cast<long>(k));
    fed += k;
  }
  if (at != blob->size())
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": truncated Ogg file (", blob->size() - at,
                " bytes after the last complete page at byte ", at, ")");
  if (pages == 0) throw_error(SPARSE_ERR_FORMAT, "file ", path, ": no Ogg pages");
}
#endif

#if SPARSE_HAVE_FLAC
// Decodes a FLAC file with libFLAC, which checks every frame's CRC and, at the end, the MD5 of the
// decoded audio against STREAMINFO (an MD5 of all zeros means "not computed" and is skipped).
void verify_flac_md5(const std::string& path) {
  FLAC__StreamDecoder* d = FLAC__stream_decoder_new();
  if (d == nullptr) throw_error(SPARSE_ERR_OUT_OF_MEMORY, "file ", path, ": libFLAC decoder");
  struct Delete {
    FLAC__StreamDecoder* d;
    ~Delete() { FLAC__stream_decoder_delete(d); }
  } del{d};
  struct State {
    bool error = false;
    const char* status = "";
  } state;
  auto write = [](const FLAC__StreamDecoder*, const FLAC__Frame*, const FLAC__int32* const[],
                  void*) { return FLAC__STREAM_DECODER_WRITE_STATUS_CONTINUE; };
  auto error = [](const FLAC__StreamDecoder*, FLAC__StreamDecoderErrorStatus status, void* user) {
    auto* st = static_cast<State*>(user);
    if (!st->error) st->status = FLAC__StreamDecoderErrorStatusString[status];
    st->error = true;
  };
  FLAC__stream_decoder_set_md5_checking(d, true);
  if (FLAC__stream_decoder_init_file(d, path.c_str(), write, nullptr, error, &state) !=
      FLAC__STREAM_DECODER_INIT_STATUS_OK)
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": libFLAC cannot open it for the MD5 check");
  const bool decoded = FLAC__stream_decoder_process_until_end_of_stream(d) != 0;
  const bool md5_ok = FLAC__stream_decoder_finish(d) != 0;
  if (!decoded || state.error)
    throw_error(SPARSE_ERR_FORMAT, "file ", path,
                ": corrupt FLAC stream (libFLAC: ", state.error ? state.status : "decoding failed",
                ")");
  if (!md5_ok)
    throw_error(SPARSE_ERR_FORMAT, "file ", path,
                ": the MD5 of the decoded audio does not match the one in the FLAC STREAMINFO "
                "block (corrupt file)");
}
#endif

}  // namespace
#endif

bool audio_supported() { return SPARSE_HAVE_SNDFILE != 0; }

#if SPARSE_HAVE_SNDFILE
DecodedAudio decode_audio_file(const std::string& path, int32_t sample_rate) {
  require(sample_rate >= 1000 && sample_rate <= 384000, "sample_rate = ", sample_rate,
          " (expected 1000..384000)");
  SF_INFO info{};
  const int fd = open_regular_file(path, "file");
  SNDFILE* file = sf_open_fd(fd, SFM_READ, &info, SF_FALSE);
  if (file == nullptr) ::close(fd);
  if (file == nullptr)
    throw_error(SPARSE_ERR_FORMAT, "file ", path,
                ": not a readable audio file (libsndfile: ", sf_strerror(nullptr),
                "; expected WAV, FLAC, Ogg, MP3 or another format libsndfile supports)");
  struct Close {
    SNDFILE* f;
    int fd;
    SRC_STATE* s = nullptr;
    ~Close() {
      sf_close(f);
      ::close(fd);
      if (s != nullptr) src_delete(s);
    }
  } close{file, fd};
  if (info.channels < 1 || info.channels > 64 || info.samplerate < 1)
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": ", info.channels, " channels at ",
                info.samplerate, " Hz (expected 1..64 channels and a positive rate)");
  const int major = info.format & SF_FORMAT_TYPEMASK;
#if SPARSE_HAVE_OGG
  if (major == SF_FORMAT_OGG) verify_ogg_pages(path);
#endif
  int err = 0;
  close.s = src_new(SRC_SINC_MEDIUM_QUALITY, 1, &err);
  if (close.s == nullptr) throw_error(SPARSE_ERR_INTERNAL, "libsamplerate: ", src_strerror(err));
  const double ratio = static_cast<double>(sample_rate) / info.samplerate;
  if (src_is_valid_ratio(ratio) == 0)
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": sample rate ", info.samplerate,
                " Hz cannot be resampled to ", sample_rate, " Hz (ratio outside 1/256..256)");
  constexpr sf_count_t kFrames = 8192;
  std::vector<float> frames(static_cast<size_t>(kFrames * info.channels));
  std::vector<float> mono(static_cast<size_t>(kFrames));
  std::vector<float> out(static_cast<size_t>(std::ceil(kFrames * ratio)) + 1024);
  DecodedAudio result;
  result.source_rate = info.samplerate;
  result.source_channels = info.channels;
  uint64_t total = 0;
  float peak = 0;
  auto run = [&](const float* in, long n, bool end) {
    SRC_DATA d{};
    d.data_in = in;
    d.input_frames = n;
    d.end_of_input = end ? 1 : 0;
    d.src_ratio = ratio;
    for (;;) {
      d.data_out = out.data();
      d.output_frames = static_cast<long>(out.size());
      if (int e = src_process(close.s, &d))
        throw_error(SPARSE_ERR_INTERNAL, "file ", path, ": libsamplerate: ", src_strerror(e));
      for (long i = 0; i < d.output_frames_gen; ++i)
        result.mulaw.push_back(mulaw_encode(out[static_cast<size_t>(i)]));
      d.data_in += d.input_frames_used;
      d.input_frames -= d.input_frames_used;
      if (d.input_frames == 0 && (!end || d.output_frames_gen == 0)) break;
    }
  };
  for (;;) {
    const sf_count_t n = sf_readf_float(file, frames.data(), kFrames);
    if (n <= 0) break;
    for (sf_count_t i = 0; i < n; ++i) {
      float s = 0;
      for (int c = 0; c < info.channels; ++c)
        s += frames[static_cast<size_t>(i * info.channels + c)];
      s /= static_cast<float>(info.channels);
      if (!std::isfinite(s)) s = 0;
      peak = std::max(peak, std::fabs(s));
      mono[static_cast<size_t>(i)] = s;
    }
    total += static_cast<uint64_t>(n);
    run(mono.data(), static_cast<long>(n), false);
  }
  if (sf_error(file) != SF_ERR_NO_ERROR)
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": decoding failed after ", total,
                " frames (libsndfile: ", sf_strerror(file), "; truncated or corrupt?)");
  // Ogg pages carry a CRC-32 and FLAC frames a CRC-16, and a frame or page that fails it is
  // dropped: for these containers the decoded length must equal the one libsndfile reads from the
  // stream (FLAC STREAMINFO, Ogg granule positions), when it gives one. For Ogg that length comes
  // from the pages themselves, so every page's CRC is checked as well (verify_ogg_pages, before
  // decoding).
  if ((major == SF_FORMAT_OGG || major == SF_FORMAT_FLAC) && info.frames > 0 &&
      info.frames != SF_COUNT_MAX && static_cast<uint64_t>(info.frames) != total)
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": decoded ", total, " frames, but the ",
                major == SF_FORMAT_OGG ? "Ogg" : "FLAC", " stream says ", info.frames,
                " (corrupt or truncated: ", major == SF_FORMAT_OGG ? "pages" : "frames",
                " that fail their CRC are dropped)");
#if SPARSE_HAVE_FLAC
  if (major == SF_FORMAT_FLAC) verify_flac_md5(path);
#endif
  if (total == 0)
    throw_error(SPARSE_ERR_FORMAT, "file ", path, ": no audio frames (expected a recording)");
  if (peak < 1e-5f)
    throw_error(SPARSE_ERR_FORMAT, "file ", path,
                ": silent (peak amplitude below 1e-5; expected audible audio)");
  run(mono.data(), 0, true);
  result.source_seconds = static_cast<double>(total) / info.samplerate;
  return result;
}

SourcePtr open_audio(const std::string& path, Split split, const AudioOptions& o) {
  require(o.seq_len >= 1, "seq_len = ", o.seq_len, " (expected >= 1)");
  require(o.valid_fraction >= 0 && o.test_fraction >= 0 && o.valid_fraction + o.test_fraction < 1,
          "valid_fraction = ", o.valid_fraction, ", test_fraction = ", o.test_fraction,
          " (expected non-negative with a sum below 1)");
  std::vector<std::string> chosen;
  if (!is_directory(path)) {
    // One recording: split in time, like text. Train is the first 1 - valid - test of its
    // samples, then valid, then test (the recording's end).
    // Anything but a regular file is refused here, named for what it is (a FIFO without
    // blocking on it, a device, a missing path).
    if (!is_regular_file(path)) ::close(open_regular_file(path, "file"));
    std::vector<uint8_t> all = decode_audio_file(path, o.sample_rate).mulaw;
    const auto n = static_cast<double>(all.size());
    const auto n_test = static_cast<size_t>(std::floor(o.test_fraction * n));
    const auto n_valid = static_cast<size_t>(std::floor(o.valid_fraction * n));
    const size_t train_end = all.size() - n_test - n_valid;
    size_t begin = 0, end = train_end;
    if (split == Split::Valid) begin = train_end, end = train_end + n_valid;
    if (split == Split::Test) begin = train_end + n_valid, end = all.size();
    if (static_cast<int64_t>(end - begin) < o.seq_len)
      throw_error(SPARSE_ERR_FORMAT, "file ", path, ": the ", split_name(split), " split has ",
                  end - begin, " samples at ", o.sample_rate, " Hz, fewer than one sequence of ",
                  o.seq_len, " (a single recording is split in time: ", o.valid_fraction,
                  " valid, ", o.test_fraction, " test)");
    all.resize(end);  // keep [begin, end) in place rather than copying it
    all.erase(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(begin));
    std::vector<std::vector<uint8_t>> one;
    one.push_back(std::move(all));
    return std::make_unique<AudioSource>(std::move(one), o.seq_len);
  } else {
    std::vector<std::string> files;
    for (const std::string& f : list_files(path))
      if (audio_name(f)) files.push_back(f);
    if (files.empty())
      throw_error(SPARSE_ERR_IO, "folder ", path,
                  ": expected audio files (.wav, .flac, .ogg, .oga, .opus, .mp3, .aiff, .au, "
                  ".caf, .w64, .rf64), found none");
    std::sort(files.begin(), files.end(), [](const std::string& a, const std::string& b) {
      const uint64_t ha = fnv1a(a), hb = fnv1a(b);
      return ha != hb ? ha < hb : a < b;
    });
    const size_t n = files.size();
    const auto n_test = static_cast<size_t>(std::floor(o.test_fraction * static_cast<double>(n)));
    const auto n_valid = static_cast<size_t>(std::floor(o.valid_fraction * static_cast<double>(n)));
    size_t begin = 0, end = n_test;
    if (split == Split::Valid) begin = n_test, end = n_test + n_valid;
    if (split == Split::Train) begin = n_test + n_valid, end = n;
    if (begin == end)
      throw_error(SPARSE_ERR_INVALID_ARGUMENT, "folder ", path, ": ", n, " recordings leave the ",
                  split_name(split), " split empty (it gets floor(",
                  split == Split::Test ? o.test_fraction : o.valid_fraction, " x ", n, ") files)");
    for (size_t i = begin; i < end; ++i) chosen.push_back(join_path(path, files[i]));
  }
  std::vector<std::vector<uint8_t>> tracks;
  int64_t sequences = 0;
  for (const std::string& f : chosen) {
    tracks.push_back(decode_audio_file(f, o.sample_rate).mulaw);
    sequences += static_cast<int64_t>(tracks.back().size()) / o.seq_len;
  }
  if (sequences == 0)
    throw_error(SPARSE_ERR_FORMAT, "audio ", path, ": the ", split_name(split),
                " split's recordings are all shorter than one sequence of ", o.seq_len,
                " samples at ", o.sample_rate, " Hz");
  return std::make_unique<AudioSource>(std::move(tracks), o.seq_len);
}
#else
DecodedAudio decode_audio_file(const std::string& path, int32_t) {
  throw_error(SPARSE_ERR_UNSUPPORTED, "file ", path,
              ": audio needs libsndfile and libsamplerate, which this build of libsparse lacks");
}
SourcePtr open_audio(const std::string& path, Split, const AudioOptions&) {
  throw_error(SPARSE_ERR_UNSUPPORTED, "audio ", path,
              ": audio needs libsndfile and libsamplerate, which this build of libsparse lacks");
}
#endif

}  // namespace sparse::data
