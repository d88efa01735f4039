// What every sparse-repro subcommand shares: the status check of library calls, owning handles of
// the library's objects, the --data KIND[:PATH] parse, and the library's file reader and atomic
// writer (sparse/experimental.h).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparse/experimental.h"
#include "sparse/sparse.h"

namespace repro {

// Throws std::runtime_error("what: status: the library's message") unless s is SPARSE_OK.
void check(sparse_status s, const std::string& what);

// sparse_last_error() without the "function: " that begins it, for messages that already say
// what failed (the library's file and memory checks name the file or the sizes).
std::string library_message(const char* function);

// Refuses, before allocating, a token buffer of `sequences` x `seq_len` bytes larger than the
// library's memory limit, naming `option` (e.g. "--batch 4"), the sizes and the limit.
void check_token_memory(int64_t sequences, int64_t seq_len, const std::string& option);

// Owning handles; each destroys its object (the destroy functions accept NULL).
using ContextPtr = std::unique_ptr<sparse_context, void (*)(sparse_context*)>;
using ModelPtr = std::unique_ptr<sparse_model, void (*)(sparse_model*)>;
using DatasetPtr = std::unique_ptr<sparse_dataset, void (*)(sparse_dataset*)>;
using LayoutPtr = std::unique_ptr<sparse_layout, void (*)(sparse_layout*)>;
inline ContextPtr own(sparse_context* c) { return ContextPtr(c, sparse_context_destroy); }
inline ModelPtr own(sparse_model* m) { return ModelPtr(m, sparse_model_destroy); }
inline DatasetPtr own(sparse_dataset* d) { return DatasetPtr(d, sparse_dataset_destroy); }
inline LayoutPtr own(sparse_layout* l) { return LayoutPtr(l, sparse_layout_destroy); }

// --data KIND[:PATH]: the dataset kind's name and the path after the first colon ("" if none).
struct DataSource {
  std::string kind, path;
};
DataSource parse_data_spec(const std::string& spec);

// The whole regular file `path` (a FIFO or device is refused, never blocked on); `what` names it
// in errors.
std::vector<unsigned char> read_regular_file(const std::string& path, const std::string& what);
// The file an output named `path` is written to (a symbolic link's final target), after checking
// that its folder exists and is writable and that it is not a device, FIFO or folder.
std::string resolve_output_path(const std::string& path, const std::string& what);
// Writes `text` to `path` through a temporary file unique to this call and a rename, so readers
// never see a half-written file and an existing file survives a failed write.
void write_file_atomically(const std::string& path, const std::string& text,
                           const std::string& what = "output");

// Adds subcommand `name`: `add` declares its options, and when it is the one parsed, `run` runs
// with them; a non-zero status returned by `run` becomes the program's (CLI::RuntimeError).
template <typename Options>
CLI::App* add_command(CLI::App& app, const std::string& name, const std::string& description,
                      void (*add)(CLI::App&, Options&), std::function<int(const Options&)> run) {
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(name, description);
  add(*command, *options);
  command->callback([options, run] {
    const int status = run(*options);
    if (status != 0) throw CLI::RuntimeError(status);
  });
  return command;
}

}  // namespace repro
