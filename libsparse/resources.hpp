// Memory bounds. Layouts, attention calls and models estimate what they will allocate before
// allocating it and refuse (SPARSE_ERR_OUT_OF_MEMORY, naming the estimate and the bound) when the
// estimate exceeds the process's memory limit, instead of growing until the system kills them.
//
// The limit is SPARSE_MEMORY_LIMIT when set (bytes, with an optional K, M, G or T suffix in
// powers of 1024, or "unlimited"); otherwise the smallest of the machine's physical memory, the
// cgroup's memory.max and the RLIMIT_AS / RLIMIT_DATA limits of the process.
#pragma once

#include <cstdint>
#include <string>

namespace sparse {

struct MemoryLimit {
  double bytes = 0;    // +infinity when unlimited
  std::string source;  // where the figure comes from, for messages
};

// Reads the limit now (the environment and the limits may change while the process runs).
// Throws Error(SPARSE_ERR_INVALID_ARGUMENT) for an unreadable SPARSE_MEMORY_LIMIT.
MemoryLimit memory_limit();

// "1.50 GiB", "512 B".
std::string format_bytes(double bytes);

// Throws Error(SPARSE_ERR_OUT_OF_MEMORY) when `estimate_bytes` exceeds memory_limit(): the
// message names `what` (the object or call and the sizes it came from), the estimate and the
// limit. Estimates are doubles so that absurd sizes never overflow.
void check_memory(double estimate_bytes, const std::string& what);

}  // namespace sparse
