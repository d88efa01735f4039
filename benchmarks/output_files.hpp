// The driver's output files: every one is checked before the work that produces it, written to a
// regular file only (a symbolic link's target is replaced, a device or FIFO refused), and every
// failed write is an error. The atomic writer is the library's (cli_common.hpp).
#pragma once

#include <initializer_list>
#include <string>

#include "cli_common.hpp"

namespace repro {

// Checks an output path before work starts (see resolve_output_path): its folder exists
// and is writable, and it is not an existing device, FIFO or folder. `option` names it in the
// error ("--checkpoint"). An empty path is accepted (no output).
void check_output_path(const std::string& path, const std::string& option);

// An output folder: created (one level) when missing, before the work that fills it; an error
// naming `option` when it cannot be, when it names something other than a folder (a file, a
// FIFO, a device), or when `files` in it could not be written (see check_output_path). An empty
// path is accepted (no output).
void make_output_folder(const std::string& folder, const std::string& option,
                        std::initializer_list<const char*> files = {});

// A JSON-lines log that grows by whole records: each line reaches the file in one write() as it
// is added (nothing is buffered in the process, so a kill loses no finished line and never glues
// two), and a failed or short write is an error naming the option and the reason.
class LineLog {
 public:
  LineLog() = default;
  // Opens `path` (a regular file; created when missing), truncated or appended to.
  LineLog(const std::string& path, const std::string& option, bool append);
  ~LineLog();
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;
  explicit operator bool() const { return fd_ >= 0; }
  void write_line(const std::string& line);

 private:
  std::string path_, option_;
  int fd_ = -1;
};

// Cuts a JSON-lines log back to its records of steps <= `step` (and drops a trailing partial
// line), atomically: a run resumed from a checkpoint at `step` then appends what follows it, and
// the log holds each step once. A missing file is left missing.
void truncate_log_to_step(const std::string& path, const std::string& option, long long step);

}  // namespace repro
