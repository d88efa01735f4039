#include "output_files.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace repro {

void check_output_path(const std::string& path, const std::string& option) {
  if (!path.empty()) resolve_output_path(path, option);
}

void make_output_folder(const std::string& folder, const std::string& option,
                        std::initializer_list<const char*> files) {
  if (folder.empty()) return;
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0) {
    if (::mkdir(folder.c_str(), 0755) != 0)
      throw std::runtime_error(option + " " + folder + ": cannot create the folder (" +
                               std::strerror(errno) + ")");
  } else if (!S_ISDIR(st.st_mode)) {
    const char* kind = S_ISREG(st.st_mode)    ? "a regular file"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "not a folder";
    throw std::runtime_error(option + " " + folder + " is " + kind + ", expected a folder");
  }
  for (const char* f : files) check_output_path(folder + "/" + f, option);
}

namespace {

// The process holding a flock(2) lock on the file `st` describes, from the kernel's table
// (/proc/locks: "1: FLOCK  ADVISORY  WRITE PID MAJOR:MINOR:INODE 0 EOF", the device numbers in
// hex); 0 when it cannot be told. The inode alone is matched when the device is not (a file on an
// overlay file system is listed under the device of the file system beneath), and only when one
// process holds such a lock.
long lock_holder(const struct stat& st) {
  std::ifstream table("/proc/locks");
  std::set<long> exact, same_inode;
  std::string line;
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string number, kind, mode, access, id;
    long pid = 0;
    if (!(fields >> number >> kind) || kind != "FLOCK") continue;  // "->": a waiter
    if (!(fields >> mode >> access >> pid >> id)) continue;
    unsigned major_id = 0, minor_id = 0;
    unsigned long long inode = 0;
    if (std::sscanf(id.c_str(), "%x:%x:%llu", &major_id, &minor_id, &inode) != 3) continue;
    if (inode != static_cast<unsigned long long>(st.st_ino) || pid <= 0) continue;
    same_inode.insert(pid);
    if (major_id == major(st.st_dev) && minor_id == minor(st.st_dev)) exact.insert(pid);
  }
  if (exact.size() == 1) return *exact.begin();
  if (exact.empty() && same_inode.size() == 1) return *same_inode.begin();
  return 0;
}

// The descriptor of an existing regular file `path` opened to be locked, or -1 when there is
// no such file (a missing output, or one check_output_path refuses).
int open_existing_regular(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  return ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
}

}  // namespace

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

FileLock::FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

FileLock FileLock::take(int fd, const std::string& path, const std::string& option,
                        const std::string& through) {
  FileLock lock;
  lock.fd_ = fd;
  const std::string locked = through.empty() ? path : through;
  int status = 0;
  do {
    status = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (status != 0 && errno == EINTR);
  if (status == 0) return lock;
  const int error = errno;
  if (error == EWOULDBLOCK) {
    struct stat st {};
    const long pid = ::fstat(fd, &st) == 0 ? lock_holder(st) : 0;
    throw std::runtime_error(
        option + " " + path + ": another run " +
        (pid > 0 ? "(pid " + std::to_string(pid) + ") " : std::string()) + "is writing it" +
        (through.empty() ? std::string() : " (it holds the lock on " + through + ")") +
        "; wait for that run to end, or give another " + option);
  }
  // Locks not offered here: the run goes on as before locks were taken, and says so.
  std::fprintf(stderr,
               "sparse-repro: %s %s: cannot lock %s (%s); a second run given the same %s would "
               "not be refused\n",
               option.c_str(), path.c_str(), locked.c_str(), std::strerror(error), option.c_str());
  return lock;
}

RunOutputsLock::RunOutputsLock(const std::string& checkpoint, const std::string& log) {
  if (!log.empty()) {
    // Checked now, taken by the run's LineLog: a lock held here would refuse that one too (the
    // locks of two descriptors conflict, even in one process).
    const int fd = open_existing_regular(log);
    if (fd >= 0) FileLock::take(fd, log, "--log");
  }
  if (!checkpoint.empty()) {
    const std::string target = resolve_output_path(checkpoint, "--checkpoint");
    const std::string lock_path = target + ".lock";
    const std::string not_regular = "--checkpoint " + checkpoint + ": its lock file " + lock_path +
                                    " is not a regular file; move it away";
    struct stat st {};
    if (::stat(lock_path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))  // never open a device
      throw std::runtime_error(not_regular);
    int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0666);
    // Another user's lock file in a shared folder: reading is enough to lock it.
    if (fd < 0 && errno == EACCES)
      fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
      throw std::runtime_error("--checkpoint " + checkpoint + ": cannot open its lock file " +
                               lock_path + " (" + std::strerror(errno) + ")");
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw std::runtime_error(not_regular);
    }
    checkpoint_ = FileLock::take(fd, checkpoint, "--checkpoint", lock_path);
  }
}

LineLog::LineLog(const std::string& path, const std::string& option, bool append, bool exclusive)
    : path_(resolve_output_path(path, option)), option_(option) {
  // Never O_TRUNC: a log locked by another run is left as it is.
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_APPEND, 0666);
  if (fd_ < 0)
    throw std::runtime_error(option + " " + path_ + ": cannot open (" + std::strerror(errno) + ")");
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode))
      throw std::runtime_error(option + " " + path_ + ": not a regular file");
    if (exclusive) {
      const int locked = ::dup(fd_);  // the lock lives while either descriptor is open
      if (locked < 0) throw std::runtime_error(option + " " + path_ + ": " + std::strerror(errno));
      lock_ = FileLock::take(locked, path, option);
    }
    if (!append && ::ftruncate(fd_, 0) != 0)
      throw std::runtime_error(option + " " + path_ + ": cannot empty it (" + std::strerror(errno) +
                               ")");
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

LineLog::~LineLog() {
  if (fd_ >= 0) ::close(fd_);
}

void LineLog::write_line(const std::string& line) {
  const std::string record = line + "\n";
  const char* p = record.data();
  size_t left = record.size();
  while (left > 0) {
    const ssize_t w = ::write(fd_, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      throw std::runtime_error(option_ + " " + path_ + ": write failed (" +
                               (w < 0 ? std::strerror(errno) : "no progress") + ")");
    p += w;
    left -= static_cast<size_t>(w);
  }
}

void truncate_log_to_step(const std::string& path, const std::string& option, long long step) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  // Held while the log is read and replaced.
  FileLock lock;
  const int fd = open_existing_regular(path);
  if (fd >= 0) lock = FileLock::take(fd, path, option);
  const std::vector<unsigned char> bytes = read_regular_file(path, option);
  std::string kept;
  std::string line;
  long long number = 0;
  for (unsigned char c : bytes) {
    if (c != '\n') {
      line += static_cast<char>(c);
      continue;
    }
    ++number;
    const auto record = nlohmann::json::parse(line, nullptr, false);
    // Whole lines are written at once, so every complete line of a step log is a record (only a
    // last line without its newline can be cut by a kill). Anything else is not this run's log:
    // it is left as it is rather than cut.
    if (record.is_discarded() || !record.is_object() || !record.contains("step") ||
        !record["step"].is_number_integer())
      throw std::runtime_error(option + " " + path + ": line " + std::to_string(number) +
                               " is not a step record of a loss log, so the file is not this "
                               "run's log; it was left unchanged (give another " +
                               option + " or move the file away)");
    if (record["step"].get<long long>() <= step) kept += line + "\n";
    line.clear();
  }
  write_file_atomically(path, kept, option);
}

}  // namespace repro
