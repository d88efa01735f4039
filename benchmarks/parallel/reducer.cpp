// The single-process reducer, the launch environment and the library hook (see reducer.hpp).
#include "parallel/reducer.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace repro {

std::unique_ptr<GradientReducer> make_single_process_reducer() {
  return std::make_unique<GradientReducer>();
}

namespace {

// The integer value of environment variable `name`, or -1 when unset or not a number.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > (1L << 30)) return -1;
  return static_cast<int>(x);
}

// The hook's callbacks: no exception leaves them; a failure becomes a status and its message.
template <typename Body>
sparse_status guarded(Body&& body, char* error, size_t error_size) noexcept {
  sparse_status status = SPARSE_ERR_INTERNAL;
  const char* message = "unknown exception";
  std::string text;
  try {
    body();
    return SPARSE_OK;
  } catch (const ReduceError& e) {
    status = e.status();
    text = e.what();
  } catch (const std::exception& e) {
    text = e.what();
  } catch (...) {
    text = message;
  }
  if (error != nullptr && error_size > 0) std::snprintf(error, error_size, "%s", text.c_str());
  return status;
}

sparse_status reduce_floats(void* user, float* data, int64_t count, sparse_memory memory,
                            char* error, size_t error_size) {
  return guarded([&] { static_cast<GradientReducer*>(user)->all_reduce_sum(data, count, memory); },
                 error, error_size);
}

sparse_status begin_floats(void* user, float* data, int64_t count, sparse_memory memory,
                           char* error, size_t error_size) {
  return guarded(
      [&] { static_cast<GradientReducer*>(user)->begin_all_reduce_sum(data, count, memory); },
      error, error_size);
}

sparse_status wait_floats(void* user, char* error, size_t error_size) {
  return guarded([&] { static_cast<GradientReducer*>(user)->wait_all_reduce_sum(); }, error,
                 error_size);
}

sparse_status reduce_doubles(void* user, double* values, int64_t count, char* error,
                             size_t error_size) {
  return guarded(
      [&] {
        auto* reducer = static_cast<GradientReducer*>(user);
        for (int64_t i = 0; i < count; ++i) values[i] = reducer->all_reduce_sum(values[i]);
      },
      error, error_size);
}

}  // namespace

void attach_reducer(sparse_model* model, GradientReducer& reducer, bool overlap) {
  sparse_experimental_gradient_reducer hook;
  sparse_experimental_gradient_reducer_default(&hook);
  hook.rank = reducer.rank();
  hook.size = reducer.size();
  hook.memory = reducer.memory();
  hook.user = &reducer;
  hook.all_reduce_sum = reduce_floats;
  hook.all_reduce_sum_f64 = reduce_doubles;
  if (overlap && reducer.overlaps()) {
    hook.begin_all_reduce_sum = begin_floats;
    hook.wait_all_reduce_sum = wait_floats;
  }
  const sparse_status s = sparse_experimental_model_set_gradient_reducer(model, &hook);
  if (s != SPARSE_OK)
    throw std::runtime_error(std::string("gradient reducer: ") + sparse_status_string(s) + ": " +
                             sparse_last_error());
}

namespace {

struct LaunchSource {
  const char *rank, *size, *local, *label;
};
// In order of precedence: a launcher's own variables before the resource manager's.
const LaunchSource kLaunchSources[] = {
    {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_*"},
    {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK"},
    {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "PMI_RANK/PMI_SIZE"},
    {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_PROCID/SLURM_NTASKS"},
};

}  // namespace

void forget_launch_environment() {
  for (const LaunchSource& s : kLaunchSources) {
    ::unsetenv(s.rank);
    ::unsetenv(s.size);
    ::unsetenv(s.local);
  }
}

LaunchEnvironment launch_environment() {
  LaunchEnvironment e;
  for (const LaunchSource& s : kLaunchSources) {
    const int rank = env_int(s.rank);
    if (rank < 0) continue;
    e.launched = true;
    e.source = s.label;
    e.rank = rank;
    const int own = env_int(s.size);
    const int size = own > 0 ? own : env_int("SLURM_NTASKS");
    e.size_given = size > 0;
    e.size = e.size_given ? size : 1;
    const int local = env_int(s.local);
    e.local_rank =
        local >= 0 ? local : (env_int("SLURM_LOCALID") >= 0 ? env_int("SLURM_LOCALID") : 0);
    break;
  }
  return e;
}

}  // namespace repro
