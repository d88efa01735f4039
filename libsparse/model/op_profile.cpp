#include "libsparse/model/op_profile.hpp"

#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "libsparse/error.hpp"
#include "libsparse/file_io.hpp"
#include "libsparse/model/checkpoint_format.hpp"

namespace sparse {

namespace {

bool is_one_of(const char* value, std::initializer_list<const char*> words) {
  for (const char* w : words)
    if (::strcasecmp(value, w) == 0) return true;
  return false;
}

}  // namespace

std::unique_ptr<OpProfile> OpProfile::from_environment(Backend& backend) {
  const char* value = std::getenv("SPARSE_PROFILE_OPS");
  if (value == nullptr || *value == '\0' || is_one_of(value, {"0", "no", "false", "off"}))
    return nullptr;
  // A switch word is not a file name: the table on stderr, as for 1.
  if (is_one_of(value, {"yes", "true", "on"})) value = "1";
  return std::unique_ptr<OpProfile>(new OpProfile(backend, value));
}

namespace {

// Appends `line` (ending in a newline) to the regular file `path` names (resolve_output_path:
// a link is followed, a folder, device, FIFO or socket refused) with one write(2) in O_APPEND
// mode, so that the models of one process (table1 trains three) and several processes add whole
// lines, never splitting or overwriting one another's. O_NONBLOCK: should a FIFO appear there
// after the check, open(2) fails (ENXIO) instead of waiting for a reader.
void append_line(const std::string& path, const std::string& line) {
  const std::string target = resolve_output_path(path, "the operation profile");
  const int fd =
      ::open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd < 0)
    throw_error(SPARSE_ERR_IO, "cannot open the operation profile ", path, ": ",
                std::strerror(errno));
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  const ssize_t n = regular ? ::write(fd, line.data(), line.size()) : -1;
  const int err = errno;
  ::close(fd);
  if (!regular)
    throw_error(SPARSE_ERR_IO, "the operation profile ", path, " is not a regular file");
  if (n != static_cast<ssize_t>(line.size()))
    throw_error(SPARSE_ERR_IO, "cannot write the operation profile ", path, ": ",
                n < 0 ? std::strerror(err) : "short write");
}

}  // namespace

OpProfile::~OpProfile() {
  std::vector<std::pair<std::string, Entry>> rows(entries_.begin(), entries_.end());
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second.seconds > b.second.seconds;
  });
  double total = 0;
  for (const auto& r : rows) total += r.second.seconds;
  try {
    if (destination_ == "1") {
      std::fprintf(stderr,
                   "libsparse: model operations (SPARSE_PROFILE_OPS; each call synchronised): "
                   "%.3f s in all\n%-28s %10s %12s %12s %7s\n",
                   total, "operation", "calls", "total s", "mean us", "share");
      for (const auto& [name, e] : rows)
        std::fprintf(stderr, "%-28s %10lld %12.6f %12.2f %6.1f%%\n", name.c_str(),
                     static_cast<long long>(e.calls), e.seconds,
                     e.calls > 0 ? 1e6 * e.seconds / static_cast<double>(e.calls) : 0.0,
                     total > 0 ? 100.0 * e.seconds / total : 0.0);
      return;
    }
    std::string doc = "{\"profile\": \"sparse-model-ops\", \"synchronised\": true, \"backend\": " +
                      model::ckpt::json_string(backend_.description()) + ", \"ops\": [";
    char buf[64];
    for (size_t i = 0; i < rows.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%.9g", rows[i].second.seconds);
      doc += std::string(i ? ", " : "") + "{\"op\": " + model::ckpt::json_string(rows[i].first) +
             ", \"calls\": " + std::to_string(rows[i].second.calls) + ", \"seconds\": " + buf + "}";
    }
    std::snprintf(buf, sizeof buf, "%.9g", total);
    doc += std::string("], \"total_seconds\": ") + buf + "}\n";
    append_line(destination_, doc);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "libsparse: SPARSE_PROFILE_OPS: %s\n", e.what());
  }
}

}  // namespace sparse
