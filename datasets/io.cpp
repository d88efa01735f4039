// Memory maps, temporary files and directory listings for the dataset readers.
#include "datasets/io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "libsparse/error.hpp"
#include "libsparse/file_io.hpp"

namespace sparse::data {
namespace {

class MappedBlob final : public Blob {
 public:
  MappedBlob(int fd, size_t size, const std::string& what) {
    if (size == 0) return;  // mmap rejects empty maps; an empty blob needs none
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
      throw_error(SPARSE_ERR_IO, "file ", what, ": cannot map ", size, " bytes (",
                  std::strerror(errno), ")");
    data_ = static_cast<const uint8_t*>(p);
    size_ = size;
  }
  ~MappedBlob() override {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
};

class VectorBlob final : public Blob {
 public:
  explicit VectorBlob(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {
    data_ = bytes_.data();
    size_ = bytes_.size();
  }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace

View whole(BlobPtr blob) {
  View v;
  v.data = blob->data();
  v.size = blob->size();
  v.owner = std::move(blob);
  return v;
}

BlobPtr map_file(const std::string& path) {
  const int fd = open_regular_file(path, "file");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw_error(SPARSE_ERR_IO, "file ", path, ": cannot stat (", std::strerror(err), ")");
  }
  try {
    auto blob = std::make_shared<MappedBlob>(fd, static_cast<size_t>(st.st_size), path);
    ::close(fd);
    return blob;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

BlobPtr blob_from_vector(std::vector<uint8_t> bytes) {
  return std::make_shared<VectorBlob>(std::move(bytes));
}

void VectorSink::write(const uint8_t* bytes, size_t n) {
  if (n > limit_ - bytes_.size())
    throw_error(SPARSE_ERR_FORMAT, "output exceeds the limit of ", limit_, " bytes");
  bytes_.insert(bytes_.end(), bytes, bytes + n);
}

TempFileSink::TempFileSink(std::string what) : what_(std::move(what)) {
  const char* dir = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/libsparse-dataset-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  fd_ = ::mkstemp(name.data());
  if (fd_ < 0)
    throw_error(SPARSE_ERR_IO, "temporary file ", tmpl, " for ", what_, ": cannot create (",
                std::strerror(errno), ")");
  ::unlink(name.data());  // lives only as long as the descriptor and the map
}

TempFileSink::~TempFileSink() {
  if (fd_ >= 0) ::close(fd_);
}

void TempFileSink::write(const uint8_t* bytes, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd_, bytes, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_error(SPARSE_ERR_IO, "temporary file for ", what_, ": write failed (",
                  std::strerror(errno), ")");
    }
    bytes += w;
    n -= static_cast<size_t>(w);
    written_ += static_cast<uint64_t>(w);
  }
}

BlobPtr TempFileSink::finish() {
  auto blob = std::make_shared<MappedBlob>(fd_, static_cast<size_t>(written_),
                                           "temporary file for " + what_);
  ::close(fd_);
  fd_ = -1;
  return blob;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<std::string> list_files(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr)
    throw_error(SPARSE_ERR_IO, "folder ", dir, ": cannot open (", std::strerror(errno), ")");
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    if (is_regular_file(join_path(dir, name))) names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string basename_of(const std::string& path) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;
  size_t slash = path.rfind('/', end - 1);
  return slash == std::string::npos ? path.substr(0, end) : path.substr(slash + 1, end - slash - 1);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace sparse::data
