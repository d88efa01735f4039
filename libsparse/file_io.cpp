#include "libsparse/file_io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "libsparse/error.hpp"

namespace sparse {
namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

std::string folder_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string name_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void write_all(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t w = ::write(fd, p, size);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw errno;
    }
    p += w;
    size -= static_cast<size_t>(w);
  }
}

// Temporary files of the writer are named PREFIX + "PID-COUNTER-CLOCK" beside the target.
std::string temp_prefix(const std::string& target) {
  return "." + name_of(target).substr(0, 160) + ".tmp-";
}

// The process id in a temporary file name of `prefix`, or 0 when `name` is not one.
pid_t temp_owner(const std::string& name, const std::string& prefix) {
  if (name.compare(0, prefix.size(), prefix) != 0) return 0;
  // PID-COUNTER-CLOCK: three decimal numbers.
  long long pid = 0;
  int fields = 0;
  size_t digits = 0;
  for (size_t i = prefix.size(); i <= name.size(); ++i) {
    const char c = i < name.size() ? name[i] : '-';
    if (c >= '0' && c <= '9') {
      if (++digits > 18) return 0;
      if (fields == 0) pid = pid * 10 + (c - '0');
      continue;
    }
    if (c != '-' || digits == 0) return 0;
    ++fields;
    digits = 0;
  }
  return fields == 3 && pid > 0 && pid <= 0x7fffffff ? static_cast<pid_t>(pid) : 0;
}

// Removes the temporary files of this writer's naming whose process has ended (a writer killed
// after naming its temporary file and before the rename): they would otherwise accumulate beside
// the target. A file of a live process, or of one this process may not signal, is kept.
void remove_stale_temps(const std::string& folder, const std::string& prefix) {
  DIR* dir = ::opendir(folder.c_str());
  if (dir == nullptr) return;
  while (const dirent* e = ::readdir(dir)) {
    const pid_t pid = temp_owner(e->d_name, prefix);
    if (pid == 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
    (void)::unlinkat(::dirfd(dir), e->d_name, 0);
  }
  ::closedir(dir);
}

}  // namespace

int open_regular_file(const std::string& path, const std::string& what) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    throw_error(SPARSE_ERR_IO, what, " \"", path, "\": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const int err = errno;
    ::close(fd);
    if (!S_ISREG(st.st_mode) && st.st_mode != 0)
      throw_error(SPARSE_ERR_IO, what, " \"", path, "\" is ", kind_of(st.st_mode),
                  ", expected a regular file");
    throw_error(SPARSE_ERR_IO, what, " \"", path, "\": cannot stat (", std::strerror(err), ")");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    const int err = errno;
    ::close(fd);
    throw_error(SPARSE_ERR_IO, what, " \"", path, "\": ", std::strerror(err));
  }
  return fd;
}

std::vector<unsigned char> read_regular_file(const std::string& path, const std::string& what) {
  const int fd = open_regular_file(path, what);
  std::vector<unsigned char> data;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) data.reserve(static_cast<size_t>(st.st_size));
  unsigned char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw_error(SPARSE_ERR_IO, "cannot read ", what, " \"", path, "\": ", std::strerror(err));
    }
    if (r == 0) break;
    data.insert(data.end(), buf, buf + r);
  }
  ::close(fd);
  return data;
}

std::string resolve_output_path(const std::string& path, const std::string& what) {
  if (path.empty()) throw_error(SPARSE_ERR_IO, what, ": the path is empty");
  std::string target = path;
  struct stat st {};
  int hops = 0;
  while (::lstat(target.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    if (++hops > 40)
      throw_error(SPARSE_ERR_IO, what, " \"", path, "\": too many levels of symbolic links");
    std::vector<char> link(static_cast<size_t>(st.st_size > 0 ? st.st_size : 255) + 2);
    const ssize_t n = ::readlink(target.c_str(), link.data(), link.size());
    if (n < 0 || static_cast<size_t>(n) >= link.size())
      throw_error(SPARSE_ERR_IO, what, " \"", path, "\": cannot read the symbolic link ", target);
    const std::string to(link.data(), static_cast<size_t>(n));
    target = to[0] == '/' ? to : folder_of(target) + "/" + to;
  }
  const bool exists = ::lstat(target.c_str(), &st) == 0;
  if (!exists && errno != ENOENT)
    throw_error(SPARSE_ERR_IO, what, " \"", target, "\": ", std::strerror(errno));
  const std::string via =
      target == path ? "" : " (the target of the symbolic link \"" + path + "\")";
  if (exists && !S_ISREG(st.st_mode))
    throw_error(SPARSE_ERR_IO, what, " \"", target, "\"", via, " is ", kind_of(st.st_mode),
                "; outputs are written to regular files only");
  const std::string folder = folder_of(target);
  struct stat dir {};
  if (::stat(folder.c_str(), &dir) != 0 || !S_ISDIR(dir.st_mode))
    throw_error(SPARSE_ERR_IO, what, " \"", target, "\"", via, ": the folder \"", folder,
                "\" does not exist");
  if (::access(folder.c_str(), W_OK | X_OK) != 0)
    throw_error(SPARSE_ERR_IO, what, " \"", target, "\"", via, ": cannot write in the folder \"",
                folder, "\" (", std::strerror(errno), ")");
  return target;
}

void write_file_atomically(const std::string& path, const std::vector<Bytes>& parts,
                           const std::string& what) {
  const std::string target = resolve_output_path(path, what);
  const std::string folder = folder_of(target);
  const std::string prefix = temp_prefix(target);
  remove_stale_temps(folder, prefix);
  static std::atomic<unsigned> counter{0};
  // A name of this process, this call and this instant: two writers of the same output never
  // share a temporary file.
  auto unique_name = [&] {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    return folder + "/" + prefix + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
           "-" + std::to_string(static_cast<unsigned long long>(now) % 1000000007ull);
  };
  // The data goes to an unnamed file (O_TMPFILE), which a killed writer leaves nowhere; it gets
  // its temporary name only once complete, just before the rename. Where the file system or the
  // kernel has no O_TMPFILE (or /proc is not mounted to name it), a named temporary file is
  // created exclusively instead.
  std::string tmp;
  int fd = -1;
#ifdef O_TMPFILE
  if (::access("/proc/self/fd", X_OK) == 0)
    fd = ::open(folder.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
#endif
  const bool unnamed = fd >= 0;
  bool named = !unnamed;  // tmp names the file
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = unique_name();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 100))
      throw_error(SPARSE_ERR_IO, "cannot create the temporary file \"", tmp, "\" for ", what, " \"",
                  target, "\": ", std::strerror(errno));
  }
  const char* step = "write";
  try {
    struct stat old {};
    if (::stat(target.c_str(), &old) == 0) (void)::fchmod(fd, old.st_mode & 07777);
    for (const Bytes& part : parts) write_all(fd, part.data, part.size);
    step = "flush";
    if (::fsync(fd) != 0) throw errno;
    if (unnamed) {
      step = "name";
      char self[64];
      std::snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
      for (int attempt = 0;; ++attempt) {
        tmp = unique_name();
        if (::linkat(AT_FDCWD, self, AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) break;
        if (errno != EEXIST || attempt >= 100) throw errno;
      }
      named = true;
    }
    step = "close";
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) throw errno;
    step = "rename";
    if (::rename(tmp.c_str(), target.c_str()) != 0) throw errno;
  } catch (int err) {
    if (fd >= 0) ::close(fd);
    if (named) ::unlink(tmp.c_str());
    if (!named) tmp = "an unnamed temporary file in " + folder;
    throw_error(SPARSE_ERR_IO, "cannot ", step, " ", what, " \"", target, "\" (through \"", tmp,
                "\"): ", std::strerror(err));
  }
  // The rename is durable once the folder is: best effort, the file itself is complete.
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

}  // namespace sparse
