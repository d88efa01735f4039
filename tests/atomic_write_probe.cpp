// atomic_write_probe: writes a file through the library's atomic writer, for
// tests/test_atomic_write.py (which kills it in the middle of the write).
//
//   atomic_write_probe PATH MIB   writes MIB mebibytes of the byte 'x' to PATH, announcing
//                                 "writing" on stdout first; prints "written" when done
// Exits 1 with the library's message when the write fails.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "libsparse/error.hpp"
#include "libsparse/file_io.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: atomic_write_probe PATH MIB\n");
    return 2;
  }
  const long mib = std::atol(argv[2]);
  const std::vector<char> chunk(size_t{1} << 20, 'x');
  const std::vector<sparse::Bytes> parts(static_cast<size_t>(mib), {chunk.data(), chunk.size()});
  std::printf("writing\n");
  std::fflush(stdout);
  try {
    sparse::write_file_atomically(argv[1], parts, "output");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::printf("written\n");
  return 0;
}
