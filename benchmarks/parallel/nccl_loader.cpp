// The NCCL reducer of sparse-repro (see reducer.hpp), loaded with dlopen from the module
// libsparse_repro_nccl.so on the first SPARSE_REDUCER=nccl: the driver itself does not need NCCL
// or the CUDA runtime to start. The module is looked for in SPARSE_NCCL_MODULE (a path) when
// set, else next to the sparse-repro executable, else on the library search path.
#include <dlfcn.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "parallel/nccl_module.hpp"
#include "parallel/reducer.hpp"

namespace repro {

bool nccl_compiled() noexcept { return true; }

namespace {

std::string dl_error() {
  const char* e = dlerror();
  return e != nullptr ? e : "unknown dlopen error";
}

// The folder of the running executable, with a trailing '/'; empty when unknown.
std::string executable_folder() {
  char path[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return "";
  const std::string p(path, static_cast<size_t>(n));
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "" : p.substr(0, slash + 1);
}

// What `path` is when it names something other than a regular file (the loader would wait on a
// FIFO for a writer, or read a device without end); empty for a file, a missing path (the loader
// says so) and a bare name, which the loader looks up on the library search path.
const char* not_a_file(const char* path) {
  struct stat st {};
  if (std::strchr(path, '/') == nullptr || ::stat(path, &st) != 0 || S_ISREG(st.st_mode)) return "";
  if (S_ISDIR(st.st_mode)) return "a folder";
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISCHR(st.st_mode)) return "a character device";
  if (S_ISBLK(st.st_mode)) return "a block device";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  return "not a regular file";
}

const NcclModule* load_module() {
  std::string where;
  void* handle = nullptr;
  const char* env = std::getenv("SPARSE_NCCL_MODULE");
  if (env != nullptr && *env != '\0') {
    where = std::string(env) + " (SPARSE_NCCL_MODULE)";
    if (const char* kind = not_a_file(env); *kind != '\0')
      throw ReduceError(SPARSE_ERR_UNSUPPORTED, std::string("SPARSE_NCCL_MODULE = ") + env +
                                                    " is " + kind + ", expected the module file " +
                                                    REPRO_NCCL_MODULE_FILE);
    handle = dlopen(env, RTLD_NOW | RTLD_LOCAL);
  } else {
    const std::string beside = executable_folder() + REPRO_NCCL_MODULE_FILE;
    const bool there = beside.front() == '/' && access(beside.c_str(), F_OK) == 0;
    where = there ? beside : std::string(REPRO_NCCL_MODULE_FILE) + " (library search path)";
    handle = dlopen(there ? beside.c_str() : REPRO_NCCL_MODULE_FILE, RTLD_NOW | RTLD_LOCAL);
  }
  if (handle == nullptr)
    throw ReduceError(SPARSE_ERR_UNSUPPORTED,
                      "the NCCL reducer module could not be loaded: " + where + ": " + dl_error() +
                          " (it needs libnccl.so.2 and the CUDA runtime on the library search "
                          "path)");
  void* p = dlsym(handle, REPRO_NCCL_MODULE_ENTRY);
  repro_nccl_module_entry entry = nullptr;
  static_assert(sizeof entry == sizeof p, "function and object pointers differ in size");
  std::memcpy(&entry, &p, sizeof entry);
  const NcclModule* module = entry != nullptr ? entry() : nullptr;
  if (module == nullptr || module->struct_size != sizeof(NcclModule) ||
      module->interface != kNcclModuleInterface) {
    dlclose(handle);
    throw ReduceError(SPARSE_ERR_UNSUPPORTED, "the NCCL reducer module " + where +
                                                  " is not the one built with this sparse-repro");
  }
  return module;
}

}  // namespace

std::unique_ptr<GradientReducer> make_nccl_reducer(std::shared_ptr<GradientReducer> bootstrap,
                                                   int device) {
  static const NcclModule* module = load_module();
  if (bootstrap == nullptr) bootstrap = make_single_process_reducer();
  return std::unique_ptr<GradientReducer>(module->make_reducer(std::move(bootstrap), device));
}

}  // namespace repro
