// Opening inputs and writing outputs, for every reader and writer of the project: inputs must be
// regular files (a FIFO would block open or read forever, a device is not data), and outputs are
// written atomically to regular files only, through a temporary file unique to the writer.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace sparse {

// Opens `path` read-only (close-on-exec) without ever blocking on a FIFO, and refuses anything
// but a regular file. `what` names the file in messages ("checkpoint", "file"). Returns the
// descriptor, in blocking mode. Errors: SPARSE_ERR_IO naming the file and what it is.
int open_regular_file(const std::string& path, const std::string& what);

// Reads a whole regular file. Errors: as open_regular_file, and SPARSE_ERR_IO on a failed read.
std::vector<unsigned char> read_regular_file(const std::string& path, const std::string& what);

// The file an output named `path` is written to: `path` itself, or, when `path` is a symbolic
// link, the file it finally points to (so the link is kept and its target replaced). Checks what
// can be checked before the work that produces the output: the folder exists and is writable,
// and an existing file (or link target) is a regular file, not a device, FIFO, socket or folder.
// Errors: SPARSE_ERR_IO naming `what`, the path and the reason.
std::string resolve_output_path(const std::string& path, const std::string& what);

// A piece of an output file.
struct Bytes {
  const void* data;
  size_t size;
};

// Writes the concatenation of `parts` to the file `path` names (see resolve_output_path): into an
// unnamed file in the same folder (O_TMPFILE), flushed to disk, then linked under a temporary name
// unique to this writer (so concurrent writers never share one) and renamed over the target.
// Without O_TMPFILE the temporary name is created exclusively first. Readers see the old file or
// the complete new one; an existing file keeps its permission bits. On failure the temporary file
// is removed and the target is unchanged; a writer killed while writing leaves no file, and
// temporary files of this naming left by processes that have ended are removed by the next write
// of the same target.
// Errors: SPARSE_ERR_IO naming `what`, the path and the system's reason.
void write_file_atomically(const std::string& path, const std::vector<Bytes>& parts,
                           const std::string& what);

}  // namespace sparse
