#include "cli_common.hpp"

#include <stdexcept>

namespace repro {

void check(sparse_status s, const std::string& what) {
  if (s != SPARSE_OK)
    throw std::runtime_error(what + ": " + sparse_status_string(s) + ": " + sparse_last_error());
}

DataSource parse_data_spec(const std::string& spec) {
  const auto colon = spec.find(':');
  if (colon == std::string::npos) return {spec, ""};
  return {spec.substr(0, colon), spec.substr(colon + 1)};
}

namespace {}  // namespace

std::string library_message(const char* function) {
  const std::string message = sparse_last_error();
  const std::string prefix = std::string(function) + ": ";
  return message.compare(0, prefix.size(), prefix) == 0 ? message.substr(prefix.size()) : message;
}

void check_token_memory(int64_t sequences, int64_t seq_len, const std::string& option) {
  const std::string what = option + ": " + std::to_string(sequences) + " sequences of " +
                           std::to_string(seq_len) + " tokens (1 byte each)";
  if (sparse_experimental_check_memory(
          static_cast<double>(sequences) * static_cast<double>(seq_len), what.c_str()) != SPARSE_OK)
    throw std::runtime_error(library_message("sparse_experimental_check_memory"));
}

namespace {

// The library's file calls report errors that already name the file and the reason.
void check_file(sparse_status s, const char* function) {
  if (s != SPARSE_OK) throw std::runtime_error(library_message(function));
}

}  // namespace

std::vector<unsigned char> read_regular_file(const std::string& path, const std::string& what) {
  std::vector<unsigned char> bytes;
  auto sink = [](void* user, const void* data, size_t size) {
    auto* out = static_cast<std::vector<unsigned char>*>(user);
    const auto* p = static_cast<const unsigned char*>(data);
    out->assign(p, p + size);
  };
  check_file(sparse_experimental_read_file(path.c_str(), what.c_str(), sink, &bytes),
             "sparse_experimental_read_file");
  return bytes;
}

std::string resolve_output_path(const std::string& path, const std::string& what) {
  std::vector<char> buffer(path.size() + 4096);
  for (;;) {
    const sparse_status s = sparse_experimental_resolve_output_path(path.c_str(), what.c_str(),
                                                                    buffer.data(), buffer.size());
    if (s != SPARSE_ERR_BUFFER_TOO_SMALL) {
      check_file(s, "sparse_experimental_resolve_output_path");
      return buffer.data();
    }
    buffer.resize(buffer.size() * 2);
  }
}

void write_file_atomically(const std::string& path, const std::string& text,
                           const std::string& what) {
  check_file(
      sparse_experimental_write_file_atomic(path.c_str(), what.c_str(), text.data(), text.size()),
      "sparse_experimental_write_file_atomic");
}

}  // namespace repro
