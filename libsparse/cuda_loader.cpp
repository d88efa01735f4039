// The CUDA backend of libsparse.so: the module libsparse_cuda.so (libsparse/cuda_module.hpp),
// loaded with dlopen on the first request for CUDA, so that the library itself needs neither the
// CUDA runtime nor cuBLAS to load.
//
// The module is looked for in SPARSE_CUDA_MODULE (a path) when set, else next to libsparse.so
// itself, else on the library search path. Whether a device exists is asked of the driver
// (libcuda.so.1, also opened with dlopen) first, so that a process on a machine without a GPU
// never maps the CUDA libraries unless it asks for the CUDA backend by name. Every failure is a
// reason (cuda_unavailable_reason) or an Error with SPARSE_ERR_UNSUPPORTED naming the file and
// the loader's message.
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "libsparse/backend.hpp"
#include "libsparse/cuda_module.hpp"
#include "libsparse/error.hpp"
#include "sparse_config.h"
#include "sparse_cuda_module_hash.h"

namespace sparse {
namespace {

std::string dl_error() {
  const char* e = dlerror();
  return e != nullptr ? e : "unknown dlopen error";
}

// A symbol of a library opened with dlopen, as a function pointer.
template <typename Fn>
Fn symbol(void* handle, const char* name) {
  void* p = dlsym(handle, name);
  Fn fn = nullptr;
  static_assert(sizeof fn == sizeof p, "function and object pointers differ in size");
  std::memcpy(&fn, &p, sizeof fn);
  return fn;
}

// The folder of the file this code was loaded from (libsparse.so), with a trailing '/'; empty
// when it cannot be told.
std::string own_folder() {
  static const char anchor = 0;
  Dl_info info{};
  if (dladdr(&anchor, &info) == 0 || info.dli_fname == nullptr) return "";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
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

struct LoadedModule {
  const CudaModule* table = nullptr;
  std::string error;  // why table is nullptr
};

LoadedModule open_module() {
  LoadedModule m;
  void* handle = nullptr;
  std::string where;
  const char* env = std::getenv("SPARSE_CUDA_MODULE");
  if (env != nullptr && *env != '\0') {
    where = std::string(env) + " (SPARSE_CUDA_MODULE)";
    if (const char* kind = not_a_file(env); *kind != '\0') {
      m.error = detail::concat("SPARSE_CUDA_MODULE = ", env, " is ", kind,
                               ", expected the module file " SPARSE_CUDA_MODULE_FILE);
      return m;
    }
    handle = dlopen(env, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) m.error = dl_error();
  } else {
    const std::string folder = own_folder();
    const std::string beside = folder + SPARSE_CUDA_MODULE_FILE;
    if (!folder.empty() && access(beside.c_str(), F_OK) == 0) {
      // Present next to the library: its error (a missing libcudart or libcublas) is the one
      // that matters.
      where = beside;
      handle = dlopen(beside.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) m.error = dl_error();
    } else {
      where = std::string(SPARSE_CUDA_MODULE_FILE) + " (not in " +
              (folder.empty() ? std::string("the folder of libsparse.so") : folder) +
              ", then the library search path)";
      handle = dlopen(SPARSE_CUDA_MODULE_FILE, RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) m.error = dl_error();
    }
  }
  if (handle == nullptr) {
    m.error = detail::concat("the CUDA backend module could not be loaded: ", where, ": ", m.error,
                             " (the module needs the CUDA runtime and cuBLAS on the library "
                             "search path; SPARSE_CUDA_MODULE=/path/to/" SPARSE_CUDA_MODULE_FILE
                             " names it)");
    return m;
  }
  const auto entry = symbol<sparse_cuda_module_entry>(handle, SPARSE_CUDA_MODULE_ENTRY);
  const CudaModule* table = entry != nullptr ? entry() : nullptr;
  if (table == nullptr) {
    m.error = detail::concat("the CUDA backend module ", where, " has no entry point ",
                             SPARSE_CUDA_MODULE_ENTRY, ": not a libsparse CUDA module");
  } else if (table->struct_size != sizeof(CudaModule) || table->interface != kCudaModuleInterface ||
             std::strcmp(table->library_version, SPARSE_VERSION_STRING) != 0 ||
             std::strcmp(table->interface_hash, SPARSE_CUDA_MODULE_HASH) != 0) {
    // The table's first three fields keep their places in every version; the hash is read only
    // from a table of this size.
    const bool same_size = table->struct_size == sizeof(CudaModule);
    m.error = detail::concat(
        "the CUDA backend module ", where, " belongs to another build of libsparse (module ",
        table->library_version, ", interface ", table->interface, ", table of ", table->struct_size,
        " bytes, headers ", same_size ? table->interface_hash : "?", "; this library ",
        SPARSE_VERSION_STRING, ", interface ", kCudaModuleInterface, ", ", sizeof(CudaModule),
        " bytes, headers ", SPARSE_CUDA_MODULE_HASH,
        "): install the module built with this library");
  } else {
    m.table = table;
    return m;
  }
  dlclose(handle);
  return m;
}

const LoadedModule& module() {
  static const LoadedModule loaded = open_module();
  return loaded;
}

// The number of devices the CUDA driver reports, or 0 with the reason. The driver API has a
// stable C ABI (CUresult is an int, 0 on success).
int driver_device_count(std::string& reason) {
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) {
    reason = "no CUDA device is present (no CUDA driver: " + dl_error() + ")";
    return 0;
  }
  using Init = int (*)(unsigned);
  using Count = int (*)(int*);
  using ErrorName = int (*)(int, const char**);
  const auto init = symbol<Init>(driver, "cuInit");
  const auto count = symbol<Count>(driver, "cuDeviceGetCount");
  const auto error_name = symbol<ErrorName>(driver, "cuGetErrorName");
  if (init == nullptr || count == nullptr) {
    reason = "no CUDA device is present (libcuda.so.1 lacks cuInit or cuDeviceGetCount)";
    return 0;
  }
  int devices = 0;
  const int e = init(0);
  if (e == 0 && count(&devices) == 0 && devices > 0) return devices;
  const char* name = nullptr;
  if (e != 0 && error_name != nullptr) error_name(e, &name);
  const std::string error = name != nullptr ? name : "error " + std::to_string(e);
  reason = e != 0 ? "no CUDA device is present (cuInit: " + error + ")"
                  : "no CUDA device is present (no GPU visible to this process)";
  return 0;
}

struct Availability {
  int devices = 0;
  std::string reason;
};

Availability find_devices() {
  Availability a;
  if (driver_device_count(a.reason) == 0) return a;
  const LoadedModule& m = module();
  if (m.table == nullptr) {
    a.reason = m.error;
    return a;
  }
  a.devices = m.table->device_count();
  if (a.devices == 0) a.reason = m.table->unavailable_reason();
  return a;
}

const Availability& availability() {
  static const Availability a = find_devices();
  return a;
}

}  // namespace

bool cuda_compiled() noexcept { return true; }

int cuda_device_count() noexcept {
  try {
    return availability().devices;
  } catch (...) {
    return 0;
  }
}

std::string cuda_unavailable_reason() { return availability().reason; }

std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream, uint64_t seed) {
  const LoadedModule& m = module();
  if (m.table == nullptr) throw_error(SPARSE_ERR_UNSUPPORTED, m.error);
  return std::unique_ptr<Backend>(m.table->make_backend(device_index, stream, seed));
}

}  // namespace sparse
