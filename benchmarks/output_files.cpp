#include "output_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

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

LineLog::LineLog(const std::string& path, const std::string& option, bool append)
    : path_(resolve_output_path(path, option)), option_(option) {
  fd_ = ::open(path_.c_str(),
               O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | (append ? O_APPEND : O_TRUNC), 0666);
  if (fd_ < 0)
    throw std::runtime_error(option + " " + path_ + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error(option + " " + path_ + ": not a regular file");
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
