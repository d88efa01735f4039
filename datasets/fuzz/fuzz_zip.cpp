// zip central directory, local headers, stored and deflated members (in memory).
#include "datasets/archive.hpp"
#include "datasets/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparse::data;
  try {
    std::vector<uint8_t> copy(data, data + size);  // exact-size heap block: ASan sees overreads
    View archive = whole(blob_from_vector(std::move(copy)));
    const std::vector<ZipEntry> entries = zip_entries(archive.data, archive.size, "fuzz.zip");
    for (size_t i = 0; i < entries.size() && i < 8; ++i) {
      try {
        if (entries[i].size > (uint64_t{1} << 22)) continue;  // bound memory, not a bug
        VectorSink sink(uint64_t{1} << 22);
        View m = zip_member(archive, entries[i], "fuzz.zip", sink,
                            [&] { return blob_from_vector(std::move(sink.bytes())); });
        unsigned sum = 0;
        for (size_t k = 0; k < m.size; ++k) sum += m.data[k];
        volatile unsigned keep = sum;
        (void)keep;
      } catch (const sparse::Error&) {
      }
    }
  } catch (const sparse::Error&) {
  }
  return 0;
}
