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

// An exclusive lock held on an open file with flock(2). The kernel releases it when the
// descriptor is closed, which happens when the process ends however it ends: a run that crashed
// or was killed never leaves a lock that blocks the next one, and no file needs cleaning up. A
// file system without flock (Lustre mounted without -o flock) gets a note on stderr and no lock.
class FileLock {
 public:
  FileLock() = default;
  ~FileLock();
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  // Locks the open descriptor `fd` of output `path` (and closes it with the lock); when another
  // process holds the lock, closes it and throws an error naming `option`, `path` and that
  // process ("another run (pid N) is writing it"). `through`: the file locked, when it is not
  // `path` itself (a companion lock file).
  static FileLock take(int fd, const std::string& path, const std::string& option,
                       const std::string& through = "");

 private:
  int fd_ = -1;
};

// The lock a training run holds on its outputs until it ends; a second run given the same
// --checkpoint or --log while the first writes them is refused before any work, naming the output
// and the process that writes it. The checkpoint is replaced by a rename at every save (a new
// file each time), so it is locked through a companion file that stays: CHECKPOINT.lock beside it
// (beside the target of a symbolic link), an empty file that is created once and never removed
// (removing it would let two runs lock two different files). The loss log is written in place and
// locked itself, by LineLog; here it is only checked, so that the second run stops before its
// model is built and before a resumed run cuts the log back. --summary-out is not locked: it is
// written once, whole, by a rename at the end. Empty paths lock nothing.
class RunOutputsLock {
 public:
  RunOutputsLock(const std::string& checkpoint, const std::string& log);

 private:
  FileLock checkpoint_;
};

// A JSON-lines log that grows by whole records: each line reaches the file in one write() as it
// is added, at its end (O_APPEND; nothing is buffered in the process, so a kill loses no finished
// line and never glues two, and processes appending to one log never split each other's lines),
// and a failed or short write is an error naming the option and the reason.
class LineLog {
 public:
  LineLog() = default;
  // Opens `path` (a regular file; created when missing), emptied or appended to. `exclusive`:
  // the log of one run, locked (FileLock) before it is emptied, so that a second run given the
  // same log is refused and leaves the first's log whole; otherwise several processes may append.
  LineLog(const std::string& path, const std::string& option, bool append, bool exclusive = false);
  ~LineLog();
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;
  explicit operator bool() const { return fd_ >= 0; }
  void write_line(const std::string& line);

 private:
  std::string path_, option_;
  int fd_ = -1;
  FileLock lock_;  // when exclusive: a duplicate of fd_ (one open file, one lock)
};

// Cuts a JSON-lines log back to its records of steps <= `step` (and drops a trailing partial
// line), atomically: a run resumed from a checkpoint at `step` then appends what follows it, and
// the log holds each step once. A missing file is left missing. Refused, unchanged, while another
// process holds the log's lock (LineLog).
void truncate_log_to_step(const std::string& path, const std::string& option, long long step);

}  // namespace repro
