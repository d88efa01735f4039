#include "libsparse/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
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
  static std::atomic<unsigned> counter{0};
  // A name of this process, this call and this instant, created exclusively: two writers of the
  // same output never share a temporary file.
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    tmp = folder_of(target) + "/." + name_of(target).substr(0, 160) + ".tmp-" +
          std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
          std::to_string(static_cast<unsigned long long>(now) % 1000000007ull);
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
    step = "close";
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) throw errno;
    step = "rename";
    if (::rename(tmp.c_str(), target.c_str()) != 0) throw errno;
  } catch (int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw_error(SPARSE_ERR_IO, "cannot ", step, " ", what, " \"", target, "\" (through \"", tmp,
                "\"): ", std::strerror(err));
  }
  // The rename is durable once the folder is: best effort, the file itself is complete.
  const int dir = ::open(folder_of(target).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

}  // namespace sparse
