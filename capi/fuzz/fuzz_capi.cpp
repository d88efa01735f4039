// libFuzzer target for the public C ABI. The input is decoded into a sequence of ABI calls with
// structured fields (layouts of every pattern kind, tensor descriptors with odd shapes, strides,
// dtypes and memory kinds, attention forward/backward, contexts, model configurations and
// models, synthetic datasets, the small helpers), made the way a C caller makes them: every
// buffer the library may read or write is allocated at exactly the size the descriptor or the
// documented contract implies, so an accepted call that reads or writes out of bounds trips
// AddressSanitizer. A pointer that the library must not dereference (the call has to be refused
// first) points to a 1-byte buffer.
//
// Checked beyond "no crash": a failing call returns a known status other than
// SPARSE_ERR_INTERNAL and leaves a non-empty message; create functions leave *out NULL on
// failure; an accepted attention call on finite inputs gives finite outputs and, for small
// problems, matches the plain double-precision reference of tests/naive_attention.hpp.
//
// SPARSE_MEMORY_LIMIT is set low (from the input) so that huge sizes are refused, not allocated.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparse/experimental.h"
#include "sparse/sparse.h"
#include "tests/naive_attention.hpp"

extern "C" {
const char* shim_status_string(int v);
size_t shim_dtype_size(int v);
sparse_status shim_tensor_contiguous(sparse_tensor* out, void* data, int dtype, int32_t ndim,
                                     const int64_t* shape);
const char* shim_backend_name(int v);
sparse_status shim_backend_available(int v, int* available);
sparse_status shim_backend_status(int v, int* compiled, const char** reason);
sparse_status shim_context_copy(sparse_context* c, void* dst, int dst_memory, const void* src,
                                int src_memory, size_t bytes);
const char* shim_pattern_kind_name(int v);
sparse_status shim_pattern_default(sparse_pattern* p, int kind);
const char* shim_dataset_kind_name(int v);
sparse_status shim_dataset_desc_default(sparse_dataset_desc* d, int kind);
sparse_status shim_dataset_read(const sparse_dataset* d, int64_t first, int64_t count, int type,
                                void* out, size_t out_bytes);
sparse_status shim_dataset_next_batch(sparse_dataset* d, int64_t batch, int type, void* out,
                                      size_t out_bytes, int64_t* indices);
extern int shim_reducer_status;
extern const char* shim_reducer_message;
extern size_t shim_reducer_message_size;
sparse_status shim_hook_sum(void* user, float* data, int64_t count, sparse_memory memory,
                            char* error, size_t error_size);
sparse_status shim_hook_sum_f64(void* user, double* values, int64_t count, char* error,
                                size_t error_size);
sparse_status shim_hook_wait(void* user, char* error, size_t error_size);
}

namespace {

// Stores any int in a C enum field without loading it as the C++ enum type.
template <typename E>
void put(E& field, int value) {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
  std::memcpy(&field, &value, sizeof value);
}

[[noreturn]] void fail(const char* what, const char* call, long long value = 0) {
  std::fprintf(stderr, "fuzz_capi: %s: %s (%lld); last error: \"%s\"\n", call, what, value,
               sparse_last_error());
  std::abort();
}

// Set when the fuzzer's own gradient reducer returned SPARSE_ERR_INTERNAL, which the step passes
// on as documented, or a value outside sparse_status, which the library reports as
// SPARSE_ERR_INTERNAL by design.
bool reducer_returns_internal = false;

// Accepted and refused calls per function, printed at exit when FUZZ_CAPI_STATS is set (to show
// that the target reaches the accepted paths, not only the argument checks).
struct Counts {
  long ok = 0, failed = 0;
};
std::map<std::string, Counts>& counts() {
  static auto* table = new std::map<std::string, Counts>;  // outlives the atexit print
  return *table;
}
void print_counts() {
  for (const auto& [name, c] : counts())
    std::fprintf(stderr, "fuzz_capi: %-45s ok %8ld  refused %8ld\n", name.c_str(), c.ok, c.failed);
}
const bool stats = [] {
  if (std::getenv("FUZZ_CAPI_STATS") != nullptr) std::atexit(print_counts);
  return std::getenv("FUZZ_CAPI_STATS") != nullptr;
}();

// The invariants of every failing call.
sparse_status checked(sparse_status s, const char* call) {
  if (stats) {
    const char* paren = std::strchr(call, '(');
    Counts& c = counts()[std::string(call, paren != nullptr ? paren - call : std::strlen(call))];
    ++(s == SPARSE_OK ? c.ok : c.failed);
  }
  if (s == SPARSE_OK) return s;
  if (s > SPARSE_OK || s < SPARSE_ERR_BUFFER_TOO_SMALL) fail("unknown status", call, s);
  if (s == SPARSE_ERR_INTERNAL && !reducer_returns_internal) fail("internal error", call, s);
  const char* message = sparse_last_error();
  if (message == nullptr || message[0] == '\0') fail("failed without a message", call, s);
  return s;
}

#define CALL(expr) (sparse_clear_error(), checked((expr), #expr))

// A byte that a refused call must never read or write.
alignas(64) uint8_t sentinel[1];

// Exactly-sized heap buffers (AddressSanitizer's redzones start right after the last byte).
struct Buffer {
  std::unique_ptr<uint8_t[]> bytes;
  size_t size = 0;
  explicit Buffer(size_t n = 0) : bytes(n > 0 ? new uint8_t[n] : nullptr), size(n) {}
  uint8_t* data() { return bytes.get(); }
};

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Input {
 public:
  Input(const uint8_t* data, size_t size) : fdp_(data, size) {}
  FuzzedDataProvider& fdp() { return fdp_; }
  bool more() { return fdp_.remaining_bytes() > 0; }
  bool coin(int one_in) { return fdp_.ConsumeIntegralInRange<int>(1, one_in) == 1; }
  uint8_t byte() { return fdp_.ConsumeIntegral<uint8_t>(); }
  uint64_t u64() { return fdp_.ConsumeIntegral<uint64_t>(); }

  // Mostly small values, sometimes the boundaries and raw 64-bit values.
  int64_t i64(int64_t lo, int64_t hi) {
    hi = std::max(lo, hi);  // bounds derived from earlier (odd) values may cross
    switch (fdp_.ConsumeIntegralInRange<int>(0, 15)) {
      case 0: {
        static constexpr int64_t special[] = {0,
                                              -1,
                                              1,
                                              2,
                                              std::numeric_limits<int64_t>::max(),
                                              std::numeric_limits<int64_t>::min(),
                                              std::numeric_limits<int32_t>::max(),
                                              std::numeric_limits<int32_t>::min(),
                                              int64_t{1} << 31,
                                              int64_t{1} << 32,
                                              int64_t{1} << 40,
                                              int64_t{1} << 62,
                                              (int64_t{1} << 62) + 1,
                                              3037000500,
                                              65535,
                                              65536};
        return special[fdp_.ConsumeIntegralInRange<size_t>(0, std::size(special) - 1)];
      }
      case 1:
        return fdp_.ConsumeIntegral<int64_t>();
      case 2:
        return fdp_.ConsumeIntegralInRange<int64_t>(-3, 3);
      default:
        return fdp_.ConsumeIntegralInRange<int64_t>(lo, hi);
    }
  }
  int32_t i32(int64_t lo, int64_t hi) {
    const int64_t v = i64(lo, hi);
    return v < INT32_MIN || v > INT32_MAX ? static_cast<int32_t>(static_cast<uint64_t>(v))
                                          : static_cast<int32_t>(v);
  }
  float f32() {
    switch (fdp_.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        return std::numeric_limits<float>::quiet_NaN();
      case 1:
        return fdp_.ConsumeBool() ? std::numeric_limits<float>::infinity() : -1e30f;
      case 2:
        return fdp_.ConsumeFloatingPoint<float>();
      default:
        return static_cast<float>(fdp_.ConsumeIntegralInRange<int>(-400, 400)) / 100.0f;
    }
  }
  // An enum value: mostly one of the `count` known ones, sometimes anything.
  int enumeration(int count) {
    return coin(12) ? static_cast<int>(i64(-2, count + 2))
                    : fdp_.ConsumeIntegralInRange(0, count - 1);
  }
  std::string text(size_t max) { return fdp_.ConsumeRandomLengthString(max); }

 private:
  FuzzedDataProvider fdp_;
};

// ------------------------------------------------------------------------- state of one input

// What the naive reference needs to know about a layout.
struct LayoutRef {
  int64_t n = 0;
  int block = 0;
  int heads = 0;
  bool have_masks = false;
  std::vector<naive::Pattern> patterns;     // pattern layouts
  std::vector<std::vector<uint8_t>> masks;  // block layouts: per head n x n
};

struct State {
  sparse_context* context = nullptr;
  std::vector<sparse_layout*> layouts;
  std::vector<LayoutRef> refs;
  sparse_model* model = nullptr;
  int64_t model_params = 0;
  int64_t model_seq_len = 0;
  sparse_dataset* dataset = nullptr;
  double memory_limit = 0;  // SPARSE_MEMORY_LIMIT in bytes; 0 when it is set to junk
  ~State() {
    sparse_model_destroy(model);
    for (sparse_layout* l : layouts) sparse_layout_destroy(l);
    sparse_dataset_destroy(dataset);
    sparse_context_destroy(context);
  }
};

// Sets SPARSE_MEMORY_LIMIT to a number of bytes for one call, then puts the old text back.
class ScopedMemoryLimit {
 public:
  explicit ScopedMemoryLimit(double bytes) {
    if (const char* old = std::getenv("SPARSE_MEMORY_LIMIT")) old_ = old;
    setenv("SPARSE_MEMORY_LIMIT", std::to_string(static_cast<uint64_t>(bytes)).c_str(), 1);
  }
  ~ScopedMemoryLimit() { setenv("SPARSE_MEMORY_LIMIT", old_.c_str(), 1); }
  ScopedMemoryLimit(const ScopedMemoryLimit&) = delete;
  ScopedMemoryLimit& operator=(const ScopedMemoryLimit&) = delete;

 private:
  std::string old_;
};

constexpr size_t kMaxLayouts = 4;
constexpr int64_t kMaxTensorBytes = int64_t{1} << 17;

// ------------------------------------------------------------------------------ layouts

void op_layout_create(Input& in, State& st) {
  sparse_layout_desc desc;
  if (CALL(sparse_layout_desc_default(&desc)) != SPARSE_OK) fail("defaults", "layout_desc");
  desc.seq_len = in.i64(1, 300);
  static constexpr int32_t blocks[] = {16, 32, 64, 128};
  desc.block_size = in.coin(16) ? in.i32(0, 256) : blocks[in.fdp().ConsumeIntegralInRange(0, 3)];
  desc.num_heads = in.coin(8) ? in.i32(0, 64) : in.fdp().ConsumeIntegralInRange(1, 4);
  int32_t num_patterns = in.coin(16) ? in.i32(-1, 40) : in.fdp().ConsumeIntegralInRange(1, 4);
  desc.num_patterns = num_patterns;
  if (in.coin(32)) desc.struct_size = static_cast<uint32_t>(in.i64(0, 300));
  if (in.coin(32)) desc.pattern_struct_size = static_cast<uint32_t>(in.i64(0, 300));
  if (in.coin(32)) desc.reserved[in.fdp().ConsumeIntegralInRange(0, 59)] = 1;
  if (in.coin(8)) desc.transpose_strided_column = in.i32(0, 2);

  const size_t count =
      num_patterns >= 1 && num_patterns <= 64 ? static_cast<size_t>(num_patterns) : 0;
  std::vector<sparse_pattern> patterns(count);
  std::vector<std::vector<int64_t>> globals(count);
  std::vector<naive::Pattern> ref(count);
  for (size_t i = 0; i < count; ++i) {
    sparse_pattern& p = patterns[i];
    const int kind = in.enumeration(9);
    if (shim_pattern_default(&p, kind) != SPARSE_OK) {
      sparse_pattern_default(&p, SPARSE_PATTERN_DENSE);
      put(p.kind, kind);  // an unknown kind, as a C caller may write it
    }
    p.head = in.coin(8) ? in.i32(-2, int64_t{desc.num_heads} + 1)
                        : -1 + in.fdp().ConsumeIntegralInRange(0, 2);
    const int64_t n = std::min(std::max<int64_t>(desc.seq_len, 1), int64_t{1} << 40);
    p.window = in.i64(1, n + 2);
    p.stride = in.i64(1, n);
    p.summary = in.i64(1, std::max<int64_t>(1, p.stride));
    if (in.coin(4)) p.summary_variants = in.i32(0, 8);
    if (in.coin(4)) p.causal = in.coin(4) ? in.i32(-1, 3) : 0;
    if (in.coin(3)) {
      const int64_t g = in.i64(0, 8);
      if (g >= 0 && g <= 64) {
        globals[i].resize(static_cast<size_t>(g));
        for (auto& t : globals[i])
          t = in.coin(16) ? in.i64(-1, n + 1) : in.fdp().ConsumeIntegralInRange<int64_t>(0, n - 1);
        p.global_tokens = globals[i].data();
      } else {
        // A count no array backs: negative or above seq_len (refused before the array is read),
        // else a NULL array.
        p.global_tokens = g < 0 || g > n ? reinterpret_cast<const int64_t*>(sentinel) : nullptr;
      }
      p.num_global_tokens = g;
    }
    if (in.coin(4)) p.random_blocks = in.i64(0, 4);
    p.seed = in.u64();
    naive::Pattern& r = ref[i];
    if (kind >= SPARSE_PATTERN_DENSE && kind <= SPARSE_PATTERN_BIGBIRD)
      r.kind = static_cast<sparse_pattern_kind>(kind);
    r.head = p.head;
    r.window = p.window;
    r.stride = p.stride;
    r.summary = p.summary;
    r.variants = p.summary_variants;
    r.causal = p.causal == 1;
    if (kind != SPARSE_PATTERN_DENSE && kind != SPARSE_PATTERN_SLIDING_WINDOW &&
        kind != SPARSE_PATTERN_LONGFORMER && kind != SPARSE_PATTERN_BIGBIRD)
      r.causal = true;
    if (p.num_global_tokens > 0 && p.global_tokens == globals[i].data()) r.globals = globals[i];
    r.random_blocks = p.random_blocks;
    r.seed = p.seed;
  }
  if (count > 0)
    desc.patterns = patterns.data();
  else  // num_patterns outside [1, 64]: refused (< 1) or more than this array holds (NULL)
    desc.patterns = num_patterns < 1 ? reinterpret_cast<const sparse_pattern*>(sentinel) : nullptr;
  if (in.coin(64)) desc.patterns = nullptr;
  // Listing a layout costs about (computed blocks) x block_size x patterns row operations, which
  // the memory limit bounds only through the blocks: under the input's own limit (256M allows
  // 11 million blocks) one call could run for minutes here. For this call the limit is lowered
  // so that what the library accepts stays under about 2^22 such operations (well under a second
  // with the sanitizers); larger layouts meet the library's own memory refusal instead.
  std::optional<ScopedMemoryLimit> work_bound;
  if (st.memory_limit > 0) {
    const double per_block =
        std::clamp<double>(desc.block_size, 16, 256) * std::clamp<double>(desc.num_patterns, 1, 64);
    constexpr double kBytesPerBlock = 20;  // as layout.cpp's kLayoutBytesPerBlock counts
    work_bound.emplace(std::min(st.memory_limit, kBytesPerBlock * (1 << 22) / per_block));
  }
  sparse_layout* layout = reinterpret_cast<sparse_layout*>(sentinel);
  const sparse_status s = CALL(sparse_layout_create(in.coin(64) ? nullptr : &desc, &layout));
  work_bound.reset();
  if (s != SPARSE_OK) {
    if (layout != nullptr) fail("*out not NULL after a failure", "sparse_layout_create");
    return;
  }
  if (layout == nullptr) fail("*out NULL after success", "sparse_layout_create");
  if (st.layouts.size() >= kMaxLayouts) {
    sparse_layout_destroy(layout);
    return;
  }
  LayoutRef lr;
  lr.n = desc.seq_len;
  lr.block = desc.block_size;
  lr.heads = desc.num_heads;
  lr.patterns = std::move(ref);
  lr.have_masks = lr.n <= 256 && desc.transpose_strided_column != 2;
  st.layouts.push_back(layout);
  st.refs.push_back(std::move(lr));
}

void op_layout_from_blocks(Input& in, State& st) {
  const int64_t n = in.i64(1, 300);
  static constexpr int32_t blocks[] = {16, 32, 64, 128};
  const int32_t block =
      in.coin(16) ? in.i32(0, 256) : blocks[in.fdp().ConsumeIntegralInRange(0, 3)];
  const int32_t heads = in.coin(8) ? in.i32(0, 64) : in.fdp().ConsumeIntegralInRange(1, 3);
  const int32_t causal = in.coin(4) ? in.i32(0, 2) : in.fdp().ConsumeIntegralInRange(0, 1);
  const bool valid_args =
      n >= 1 && heads >= 1 && (block == 16 || block == 32 || block == 64 || block == 128);
  const int64_t nb = valid_args ? n / block + (n % block != 0) : 0;
  Buffer mask, elements;
  const uint8_t* mask_ptr = nullptr;
  const uint8_t* element_ptr = nullptr;
  std::vector<std::vector<uint8_t>> ref;
  uint64_t rng = in.u64();
  const int density = in.fdp().ConsumeIntegralInRange(0, 8);
  if (!valid_args || nb >= 65536) {
    mask_ptr = in.coin(2) ? sentinel : nullptr;  // refused before the mask is read
  } else if (static_cast<double>(heads) * nb * nb <= (1 << 20)) {
    mask = Buffer(static_cast<size_t>(heads * nb * nb));
    size_t nnz = 0;
    // The library examines every element of every computed block: at most 2^24 of them here.
    for (size_t e = 0; e < mask.size; ++e) {
      const bool on = (splitmix(rng) % 8) < static_cast<uint64_t>(density) &&
                      (nnz + 1) * block * block <= (size_t{1} << 24);
      mask.data()[e] = on ? static_cast<uint8_t>(1 + e % 200) : 0;
      nnz += on;
    }
    mask_ptr = mask.data();
    if (in.coin(2) && nnz * block * block <= (size_t{1} << 22)) {
      elements = Buffer(nnz * block * block);
      for (size_t e = 0; e < elements.size; ++e) elements.data()[e] = splitmix(rng) % 4 != 0;
      element_ptr = elements.data();
    }
    if (n <= 256 && heads <= 4) {
      // The token-level mask of each head, straight from the documented definition.
      const uint8_t* el = element_ptr;
      for (int h = 0; h < heads; ++h) {
        std::vector<uint8_t> m(static_cast<size_t>(n * n), 0);
        for (int64_t I = 0; I < nb; ++I)
          for (int64_t J = 0; J < nb; ++J) {
            if (mask.data()[(h * nb + I) * nb + J] == 0) continue;
            for (int r = 0; r < block; ++r)
              for (int c = 0; c < block; ++c) {
                const int64_t i = I * block + r, j = J * block + c;
                bool ok = i < n && j < n && !(causal != 0 && j > i);
                if (el != nullptr && el[r * block + c] == 0) ok = false;
                if (ok) m[static_cast<size_t>(i * n + j)] = 1;
              }
            if (el != nullptr) el += block * block;
          }
        ref.push_back(std::move(m));
      }
    }
  }
  sparse_layout* layout = reinterpret_cast<sparse_layout*>(sentinel);
  const sparse_status s = CALL(
      sparse_layout_create_from_blocks(n, block, heads, mask_ptr, element_ptr, causal, &layout));
  if (s != SPARSE_OK) {
    if (layout != nullptr) fail("*out not NULL after a failure", "create_from_blocks");
    return;
  }
  if (st.layouts.size() >= kMaxLayouts) {
    sparse_layout_destroy(layout);
    return;
  }
  LayoutRef lr;
  lr.n = n;
  lr.block = block;
  lr.heads = heads;
  lr.have_masks = !ref.empty();
  lr.masks = std::move(ref);
  st.layouts.push_back(layout);
  st.refs.push_back(std::move(lr));
}

const sparse_layout* pick_layout(Input& in, State& st, const LayoutRef** ref) {
  *ref = nullptr;
  if (st.layouts.empty() || in.coin(32)) return nullptr;
  const size_t i = in.fdp().ConsumeIntegralInRange<size_t>(0, st.layouts.size() - 1);
  *ref = &st.refs[i];
  return st.layouts[i];
}

void op_layout_query(Input& in, State& st) {
  const LayoutRef* ref;
  const sparse_layout* layout = pick_layout(in, st, &ref);
  const int32_t heads = ref != nullptr ? ref->heads : 1;
  const int32_t head =
      in.coin(8) ? in.i32(-2, int64_t{heads} + 1) : in.fdp().ConsumeIntegralInRange(0, heads - 1);
  switch (in.fdp().ConsumeIntegralInRange(0, 2)) {
    case 0: {
      sparse_layout_stats stats;
      std::memset(&stats, 0, sizeof stats);
      stats.struct_size = in.coin(8) ? static_cast<uint32_t>(in.i64(0, 200)) : sizeof stats;
      CALL(sparse_layout_get_stats(layout, in.coin(3) ? -1 : head, in.coin(64) ? nullptr : &stats));
      break;
    }
    case 1: {
      // nb in the computed order may exceed the natural one (transposed heads); the size is the
      // caller's claim and the buffer holds exactly that.
      const int64_t nb = ref != nullptr ? (ref->n + ref->block - 1) / ref->block + 1 : 1;
      int64_t size = nb * nb + in.fdp().ConsumeIntegralInRange<int64_t>(-2 * nb, 2);
      if (size < 0 || size > (1 << 22)) size = 0;
      Buffer out(static_cast<size_t>(size));
      CALL(sparse_layout_block_mask(layout, head,
                                    size > 0 ? out.data() : (in.coin(2) ? nullptr : sentinel),
                                    static_cast<size_t>(size)));
      break;
    }
    default: {
      const int64_t n = ref != nullptr ? ref->n : 1;
      const int64_t query = in.i64(0, n - 1);
      int64_t size = n + in.fdp().ConsumeIntegralInRange<int64_t>(-2, 2);
      if (size < 0 || size > (1 << 22)) size = 0;
      Buffer out(static_cast<size_t>(size));
      CALL(sparse_layout_row_mask(layout, head, query,
                                  size > 0 ? out.data() : (in.coin(2) ? nullptr : sentinel),
                                  static_cast<size_t>(size)));
      break;
    }
  }
}

// ------------------------------------------------------------------------------- tensors

struct Tensor {
  sparse_tensor t{};
  Buffer buffer;
  bool backed = false;  // data holds every element the descriptor addresses
  bool finite = true;   // every addressed element is finite
};

// The offset of the last addressed element + 1, or -1 when it overflows int64 (or a dimension
// or stride is negative, which the library must refuse).
int64_t extent(const sparse_tensor& t, int ndim) {
  int64_t last = 0;
  for (int i = 0; i < ndim; ++i) {
    if (t.shape[i] < 0 || t.strides[i] < 0) return -1;
    if (t.shape[i] == 0) return 0;
  }
  for (int i = 0; i < ndim; ++i) {
    int64_t step;
    if (__builtin_mul_overflow(t.shape[i] - 1, t.strides[i], &step) ||
        __builtin_add_overflow(last, step, &last))
      return -1;
  }
  return last == std::numeric_limits<int64_t>::max() ? -1 : last + 1;
}

// A descriptor of `shape` (ndim = 4, or 3 for lse), mutated by the input, with a buffer sized
// from the final descriptor.
void make_tensor(Input& in, Tensor& x, const int64_t (&shape)[4], int ndim, uint64_t& rng) {
  sparse_tensor& t = x.t;
  std::memset(&t, 0, sizeof t);
  t.dtype = SPARSE_DTYPE_F32;
  t.memory = SPARSE_MEMORY_HOST;
  t.ndim = ndim;
  for (int i = 0; i < ndim; ++i) t.shape[i] = shape[i];
  // Row-major, or another order of the dimensions (e.g. [batch, seq, heads, dim] storage).
  int order[4] = {0, 1, 2, 3};
  if (in.coin(4))
    std::swap(order[in.fdp().ConsumeIntegralInRange(0, ndim - 1)],
              order[ndim - 1 - in.fdp().ConsumeIntegralInRange(0, ndim - 1)]);
  int64_t stride = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    t.strides[order[k]] = stride;
    if (__builtin_mul_overflow(stride, std::max<int64_t>(1, t.shape[order[k]]), &stride))
      stride = std::numeric_limits<int64_t>::max() / 2;
  }
  if (in.coin(6)) {
    int64_t& s = t.strides[in.fdp().ConsumeIntegralInRange(0, ndim - 1)];
    if (__builtin_add_overflow(s, in.fdp().ConsumeIntegralInRange(0, 3), &s))
      s = std::numeric_limits<int64_t>::max();
  }
  if (in.coin(10)) t.strides[in.fdp().ConsumeIntegralInRange(0, ndim - 1)] = 0;
  if (in.coin(16)) t.strides[in.fdp().ConsumeIntegralInRange(0, ndim - 1)] = in.i64(-2, 64);
  if (in.coin(16)) t.shape[in.fdp().ConsumeIntegralInRange(0, ndim - 1)] = in.i64(-1, 8);
  if (in.coin(32)) t.ndim = in.i32(0, 9);
  int dtype = SPARSE_DTYPE_F32;
  if (in.coin(24)) dtype = in.enumeration(4);
  put(t.dtype, dtype);
  if (in.coin(24)) put(t.memory, in.enumeration(2));
  if (in.coin(32)) t.device = in.i32(0, 2);
  const int64_t elements = extent(t, ndim);
  const size_t esize = std::max<size_t>(4, shim_dtype_size(dtype));
  if (elements < 0) {
    t.data = sentinel;  // no buffer can hold it: the library must refuse it unread
  } else if (elements == 0) {
    t.data = in.coin(2) ? nullptr : sentinel;
    x.backed = true;
  } else if (static_cast<double>(elements) * static_cast<double>(esize) <= kMaxTensorBytes &&
             !in.coin(48)) {
    x.buffer = Buffer(static_cast<size_t>(elements) * esize);
    auto* f = reinterpret_cast<float*>(x.buffer.data());
    const int special = in.coin(24) ? in.fdp().ConsumeIntegralInRange(0, 2) : -1;
    for (size_t e = 0; e < x.buffer.size / 4; ++e)
      f[e] = static_cast<float>(static_cast<int64_t>(splitmix(rng) % 2001) - 1000) / 500.0f;
    if (special >= 0) {
      f[splitmix(rng) % (x.buffer.size / 4)] =
          special == 0 ? std::numeric_limits<float>::quiet_NaN()
                       : (special == 1 ? std::numeric_limits<float>::infinity() : 3e38f);
      x.finite = false;  // 3e38 is finite, but its products overflow
    }
    t.data = x.buffer.data();
    x.backed = true;
  } else {
    t.data = nullptr;  // too large to back here: refused for its NULL data
  }
}

bool all_finite(const sparse_tensor& t, int ndim, bool allow_neg_inf) {
  const auto* f = static_cast<const float*>(t.data);
  for (int64_t a = 0; a < t.shape[0]; ++a)
    for (int64_t b = 0; b < t.shape[1]; ++b)
      for (int64_t c = 0; c < t.shape[2]; ++c)
        for (int64_t d = 0; d < (ndim == 4 ? t.shape[3] : 1); ++d) {
          const float v = f[a * t.strides[0] + b * t.strides[1] + c * t.strides[2] +
                            (ndim == 4 ? d * t.strides[3] : 0)];
          if (std::isfinite(v)) continue;
          if (allow_neg_inf && v == -std::numeric_limits<float>::infinity()) continue;
          return false;
        }
  return true;
}

std::vector<double> gather(const sparse_tensor& t) {
  std::vector<double> v;
  const auto* f = static_cast<const float*>(t.data);
  for (int64_t a = 0; a < t.shape[0]; ++a)
    for (int64_t b = 0; b < t.shape[1]; ++b)
      for (int64_t c = 0; c < t.shape[2]; ++c)
        for (int64_t d = 0; d < t.shape[3]; ++d)
          v.push_back(f[a * t.strides[0] + b * t.strides[1] + c * t.strides[2] + d * t.strides[3]]);
  return v;
}

void compare(const std::vector<double>& ref, const std::vector<double>& got, const char* what) {
  if (ref.size() != got.size()) fail("reference size differs", what);
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], g = got[i];
    if (std::isinf(r) && r == g) continue;
    if (!(std::fabs(r - g) <= 2e-3 + 2e-3 * std::fabs(r))) {
      std::fprintf(stderr, "fuzz_capi: %s[%zu] = %.9g, reference %.9g\n", what, i, g, r);
      fail("differs from the naive reference", what, static_cast<long long>(i));
    }
  }
}

// Builds the naive problem of a layout, when it is small enough to check.
std::optional<naive::Problem> reference_problem(const LayoutRef* ref, const sparse_tensor& q,
                                                double scale) {
  if (ref == nullptr || !ref->have_masks) return std::nullopt;
  const double work =
      static_cast<double>(q.shape[0]) * q.shape[1] * q.shape[2] * q.shape[2] * q.shape[3];
  if (work > 4e6 || ref->n > 256) return std::nullopt;
  naive::Problem pb{q.shape[0], q.shape[1], q.shape[2], q.shape[3], scale, {}};
  for (int h = 0; h < ref->heads; ++h)
    pb.masks.push_back(ref->masks.empty() ? naive::head_mask(ref->patterns, h, ref->n, ref->block)
                                          : ref->masks[static_cast<size_t>(h)]);
  return pb;
}

void op_attention(Input& in, State& st) {
  const LayoutRef* ref;
  const sparse_layout* layout = pick_layout(in, st, &ref);
  int64_t shape[4] = {in.fdp().ConsumeIntegralInRange<int64_t>(1, 2),
                      ref != nullptr ? ref->heads : 1, ref != nullptr ? ref->n : 16,
                      in.fdp().ConsumeIntegralInRange<int64_t>(1, 20)};
  if (in.coin(16)) shape[0] = in.i64(0, 3);
  if (in.coin(16)) shape[3] = in.i64(0, 129);
  if (in.coin(32)) shape[1] = in.i64(0, 4);
  if (in.coin(32)) shape[2] = in.i64(0, 300);
  const int64_t lse_shape[4] = {shape[0], shape[1], shape[2], 1};
  uint64_t rng = in.u64();
  Tensor q, k, v, out, lse;
  make_tensor(in, q, shape, 4, rng);
  make_tensor(in, k, shape, 4, rng);
  make_tensor(in, v, shape, 4, rng);
  make_tensor(in, out, shape, 4, rng);
  make_tensor(in, lse, lse_shape, 3, rng);
  // Outputs aliasing inputs must be refused.
  if (in.coin(24)) out.t.data = q.t.data;
  if (in.coin(32)) lse.t.data = out.t.data;

  sparse_attention_params params;
  sparse_attention_params_default(&params);
  if (in.coin(4)) params.scale = in.f32();
  if (in.coin(4)) params.algorithm = in.coin(8) ? in.i32(-1, 3) : SPARSE_ATTENTION_UNFUSED;
  if (in.coin(32)) params.struct_size = static_cast<uint32_t>(in.i64(0, 200));
  if (in.coin(32)) params.reserved[in.fdp().ConsumeIntegralInRange(0, 55)] = 1;
  const sparse_attention_params* pp = in.coin(4) ? nullptr : &params;
  sparse_context* ctx = in.coin(32) ? nullptr : st.context;

  if (in.coin(8)) {  // the dense baseline (refused on the CPU backend, after its checks)
    const bool backward = in.fdp().ConsumeBool();
    Tensor dout, dq, dk, dv;
    make_tensor(in, dout, shape, 4, rng);
    make_tensor(in, dq, shape, 4, rng);
    make_tensor(in, dk, shape, 4, rng);
    make_tensor(in, dv, shape, 4, rng);
    CALL(sparse_experimental_dense_attention(ctx, in.f32(), backward, &q.t, &k.t, &v.t, &out.t,
                                             in.coin(8) ? nullptr : &lse.t, &dout.t, &dq.t, &dk.t,
                                             &dv.t));
    return;
  }
  if (in.coin(8)) {
    size_t bytes = 0;
    CALL(sparse_attention_workspace_size_params(ctx, layout, pp, in.i64(1, 4), in.i64(1, 64),
                                                in.i32(0, 1), in.coin(32) ? nullptr : &bytes));
    return;
  }
  const bool with_lse = !in.coin(6);
  const sparse_status s =
      CALL(sparse_attention_forward(ctx, layout, pp, in.coin(64) ? nullptr : &q.t, &k.t, &v.t,
                                    &out.t, with_lse ? &lse.t : nullptr));
  if (s != SPARSE_OK) return;
  if (!(q.backed && k.backed && v.backed && out.backed && (!with_lse || lse.backed)))
    fail("accepted a tensor whose data is not backed", "sparse_attention_forward");

  const float scale_value = pp != nullptr ? params.scale : 0.0f;
  const bool moderate = std::fabs(scale_value) <= 64.0f;
  const bool finite_inputs = q.finite && k.finite && v.finite;
  if (finite_inputs && moderate) {
    if (!all_finite(out.t, 4, false)) fail("non-finite output on finite inputs", "forward out");
    if (with_lse && !all_finite(lse.t, 3, true))
      fail("NaN or +inf lse on finite inputs", "forward lse");
  }
  const double scale = scale_value != 0.0f ? static_cast<double>(scale_value)
                                           : 1.0 / std::sqrt(static_cast<double>(shape[3]));
  std::optional<naive::Problem> pb;
  if (finite_inputs && std::fabs(scale_value) <= 4.0f) pb = reference_problem(ref, q.t, scale);
  if (pb) {
    std::vector<double> rout, rlse;
    naive::forward(*pb, gather(q.t), gather(k.t), gather(v.t), rout, rlse);
    compare(rout, gather(out.t), "forward out");
  }
  if (!with_lse || in.coin(3)) return;

  // The backward pass on the forward's results.
  Tensor dout, dq, dk, dv;
  make_tensor(in, dout, shape, 4, rng);
  make_tensor(in, dq, shape, 4, rng);
  make_tensor(in, dk, shape, 4, rng);
  make_tensor(in, dv, shape, 4, rng);
  if (in.coin(24)) dq.t.data = dk.t.data;
  if (in.coin(24)) dv.t.data = v.t.data;
  const sparse_status b =
      CALL(sparse_attention_backward(ctx, layout, pp, &q.t, &k.t, &v.t, &out.t,
                                     in.coin(32) ? nullptr : &lse.t, &dout.t, &dq.t, &dk.t, &dv.t));
  if (b != SPARSE_OK) return;
  if (!(dout.backed && dq.backed && dk.backed && dv.backed))
    fail("accepted a tensor whose data is not backed", "sparse_attention_backward");
  if (finite_inputs && moderate && dout.finite) {
    for (const Tensor* t : {&dq, &dk, &dv})
      if (!all_finite(t->t, 4, false)) fail("non-finite gradient on finite inputs", "backward");
    if (pb) {
      std::vector<double> rdq, rdk, rdv;
      naive::backward(*pb, gather(q.t), gather(k.t), gather(v.t), gather(dout.t), rdq, rdk, rdv);
      compare(rdq, gather(dq.t), "backward dq");
      compare(rdk, gather(dk.t), "backward dk");
      compare(rdv, gather(dv.t), "backward dv");
    }
  }
}

void op_tensor_contiguous(Input& in) {
  const int32_t ndim = in.coin(8) ? in.i32(0, 9) : in.fdp().ConsumeIntegralInRange(1, 8);
  int64_t shape[SPARSE_TENSOR_MAX_DIMS] = {};
  for (auto& s : shape) s = in.i64(0, 64);
  sparse_tensor t;
  const int dtype = in.enumeration(4);
  CALL(shim_tensor_contiguous(in.coin(32) ? nullptr : &t, sentinel, dtype, ndim,
                              in.coin(32) ? nullptr : shape));
  (void)shim_dtype_size(dtype);
}

// ------------------------------------------------------------------------------- contexts

void op_context(Input& in, State& st) {
  switch (in.fdp().ConsumeIntegralInRange(0, 3)) {
    case 0: {
      sparse_settings s;
      sparse_settings_default(&s);
      put(s.backend, in.coin(4) ? in.enumeration(3) : SPARSE_BACKEND_CPU);
      if (in.coin(4)) s.num_threads = in.i32(0, 4);
      if (in.coin(16)) s.device_index = in.i32(0, 2);
      s.seed = in.u64();
      if (in.coin(24)) s.struct_size = static_cast<uint32_t>(in.i64(0, 200));
      if (in.coin(32)) s.reserved[in.fdp().ConsumeIntegralInRange(0, 63)] = 1;
      sparse_context* c = reinterpret_cast<sparse_context*>(sentinel);
      const sparse_status r = CALL(sparse_context_create(in.coin(16) ? nullptr : &s, &c));
      if (r != SPARSE_OK) {
        if (c != nullptr) fail("*out not NULL after a failure", "sparse_context_create");
        return;
      }
      sparse_backend b;
      int32_t threads;
      sparse_memory m;
      if (CALL(sparse_context_backend(c, &b)) != SPARSE_OK ||
          CALL(sparse_context_num_threads(c, &threads)) != SPARSE_OK ||
          CALL(sparse_context_memory(c, &m)) != SPARSE_OK)
        fail("a query of a new context failed", "context");
      sparse_context_destroy(st.context);  // a model made on it keeps its own reference
      st.context = c;
      break;
    }
    case 1: {
      const int64_t bytes = in.i64(0, 4096);
      void* p = sentinel;
      const sparse_status r =
          CALL(sparse_context_alloc(st.context, static_cast<size_t>(bytes), &p));
      if (r != SPARSE_OK && p != nullptr) fail("*out not NULL after a failure", "context_alloc");
      if (r == SPARSE_OK && p != nullptr) {
        std::memset(p, 0xa5, static_cast<size_t>(bytes));  // the whole size must be usable
        sparse_context_free(st.context, p);
      }
      break;
    }
    case 2: {
      const int64_t bytes = in.i64(0, 512);
      const bool fits = bytes >= 0 && bytes <= 4096;
      Buffer a(fits ? static_cast<size_t>(bytes) : 0), b(fits ? static_cast<size_t>(bytes) : 0);
      void* dst = fits && bytes > 0 ? a.data() : (in.coin(2) ? nullptr : sentinel);
      const void* src = fits && bytes > 0 ? b.data() : (in.coin(2) ? nullptr : sentinel);
      if (fits && bytes > 0) std::memset(b.data(), 1, b.size);
      if (!fits) {
        // Only a refusal is acceptable for a size no buffer backs: make one certain.
        dst = nullptr;
      }
      CALL(shim_context_copy(st.context, dst, in.enumeration(2), src, in.enumeration(2),
                             static_cast<size_t>(bytes)));
      break;
    }
    default: {
      CALL(sparse_context_synchronize(st.context));
      int available = 0, compiled = 0, count = 0;
      const char* reason = nullptr;
      const int backend = in.enumeration(3);
      CALL(shim_backend_available(backend, in.coin(16) ? nullptr : &available));
      CALL(shim_backend_status(backend, &compiled, &reason));
      CALL(sparse_cuda_device_count(&count));
      (void)shim_backend_name(backend);
      sparse_backend parsed;
      const std::string name = in.text(12);
      CALL(sparse_backend_from_name(name.c_str(), &parsed));
      sparse_pattern_kind kind;
      CALL(sparse_pattern_kind_from_name(name.c_str(), &kind));
      sparse_dataset_kind dkind;
      CALL(sparse_dataset_kind_from_name(name.c_str(), &dkind));
      (void)shim_status_string(-in.enumeration(9));
      (void)shim_pattern_kind_name(in.enumeration(9));
      (void)shim_dataset_kind_name(in.enumeration(7));
      CALL(sparse_experimental_check_memory(in.fdp().ConsumeFloatingPoint<double>(),
                                            in.coin(16) ? nullptr : "fuzz"));
      break;
    }
  }
}

// --------------------------------------------------------------------------------- models

void mutate_model_config(Input& in, sparse_model_config& c) {
  static const char* presets[] = {"cifar10",        "enwik8",        "imagenet64",   "audio",
                                  "cifar10-openai", "cifar10-small", "enwik8-small", "nope"};
  if (in.coin(4)) {
    sparse_model_config p;
    if (sparse_model_config_preset(presets[in.fdp().ConsumeIntegralInRange(0, 7)], &p) == SPARSE_OK)
      c = p;
  }
  const int fields = in.fdp().ConsumeIntegralInRange(0, 6);
  for (int f = 0; f < fields; ++f) {
    switch (in.fdp().ConsumeIntegralInRange(0, 21)) {
      case 0:
        c.seq_len = in.i64(2, 256);
        break;
      case 1:
        c.num_layers = in.i32(1, 4);
        break;
      case 2:
        c.d_model = in.i32(1, 64);
        break;
      case 3:
        c.num_heads = in.i32(1, 4);
        break;
      case 4:
        put(c.attention, in.enumeration(3));
        break;
      case 5:
        put(c.head_mode, in.enumeration(3));
        break;
      case 6:
        c.stride = in.i64(1, 64);
        break;
      case 7:
        c.summary = in.i64(1, 16);
        break;
      case 8:
        c.block_size = in.i32(16, 128);
        break;
      case 9: {
        const std::string cycle = in.text(20);
        std::memset(c.layer_cycle, 0, sizeof c.layer_cycle);
        std::memcpy(c.layer_cycle, cycle.data(), std::min(cycle.size(), sizeof c.layer_cycle));
        break;
      }
      case 10:
        c.half_qk = in.i32(0, 1);
        break;
      case 11:
        c.half_ff = in.i32(0, 1);
        break;
      case 12:
        c.dropout = in.f32();
        break;
      case 13:
        c.tied_embeddings = in.i32(0, 1);
        break;
      case 14:
        c.num_position_dims = in.i32(1, 4);
        break;
      case 15:
        c.position_shape[in.fdp().ConsumeIntegralInRange(0, 3)] = in.i64(1, 64);
        break;
      case 16:
        c.recompute = in.i32(0, 1);
        break;
      case 17:
        c.output_init_std = in.f32();
        break;
      case 18:
        put(c.row_attention, in.enumeration(2));
        break;
      case 19:
        c.summary_variants = in.i32(0, 4);
        break;
      case 20:
        c.struct_size = static_cast<uint32_t>(in.i64(0, 400));
        break;
      default:
        c.reserved[in.fdp().ConsumeIntegralInRange(0, 51)] = 1;
        break;
    }
  }
}

void mutate_train_config(Input& in, sparse_train_config& t) {
  const int fields = in.fdp().ConsumeIntegralInRange(0, 4);
  for (int f = 0; f < fields; ++f) {
    switch (in.fdp().ConsumeIntegralInRange(0, 15)) {
      case 0:
        put(t.optimizer, in.enumeration(2));
        break;
      case 1:
        t.learning_rate = in.f32();
        break;
      case 2:
        t.beta1 = in.f32();
        break;
      case 3:
        t.beta2 = in.f32();
        break;
      case 4:
        t.epsilon = in.f32();
        break;
      case 5:
        t.weight_decay = in.f32();
        break;
      case 6:
        t.warmup_steps = in.i64(0, 4);
        break;
      case 7:
        t.total_steps = in.i64(0, 8);
        break;
      case 8:
        t.clip_norm = in.f32();
        break;
      case 9:
        t.micro_batch = in.i32(0, 3);
        break;
      case 10:
        put(t.dtype, in.enumeration(4));
        break;
      case 11:
        t.loss_scale = in.f32();
        break;
      case 12:
        t.loss_scale_window = in.i32(0, 4);
        break;
      case 13:
        t.struct_size = static_cast<uint32_t>(in.i64(0, 200));
        break;
      default:
        t.reserved[in.fdp().ConsumeIntegralInRange(0, 51)] = 1;
        break;
    }
  }
}

// A small model for the calls that run it: defaults scaled down.
void small_config(sparse_model_config& c) {
  c.seq_len = 64;
  c.num_layers = 2;
  c.d_model = 16;
  c.num_heads = 2;
  c.stride = 8;
  c.summary = 2;
  c.position_shape[0] = 8;
  c.position_shape[1] = 8;
}

void op_model_config(Input& in, State& st) {
  sparse_model_config c;
  sparse_model_config_default(&c);
  if (in.coin(2)) small_config(c);
  mutate_model_config(in, c);
  int64_t params = 0;
  CALL(sparse_model_config_parameter_count(in.coin(32) ? nullptr : &c, &params));
  if (in.coin(2)) {
    int32_t count = 0;
    const int32_t capacity = in.coin(4) ? in.i32(-1, 3) : 2;
    sparse_layout* layouts[2] = {nullptr, nullptr};
    const bool layers_fit = c.num_layers >= 0 && c.num_layers <= 4096;
    std::vector<int32_t> layer_layout(layers_fit ? static_cast<size_t>(c.num_layers) : 0);
    // layouts holds 2 handles; a larger claimed capacity would be the caller's error.
    const int32_t cap = capacity > 2 ? 2 : capacity;
    const sparse_status s = CALL(sparse_experimental_model_layouts(
        &c, in.coin(4) ? nullptr : layouts, cap, &count,
        layers_fit && !layer_layout.empty() ? layer_layout.data() : nullptr));
    if (s == SPARSE_OK) {
      for (int32_t l : layer_layout)
        if (l < 0 || l >= count) fail("layer_layout out of range", "model_layouts", l);
      for (sparse_layout* l : layouts) sparse_layout_destroy(l);
    }
    return;
  }
  if (st.model != nullptr) return;
  sparse_train_config t;
  sparse_train_config_default(&t);
  mutate_train_config(in, t);
  sparse_model* m = reinterpret_cast<sparse_model*>(sentinel);
  const sparse_status s = CALL(
      sparse_model_create(in.coin(32) ? nullptr : st.context, &c, in.coin(4) ? nullptr : &t, &m));
  if (s != SPARSE_OK) {
    if (m != nullptr) fail("*out not NULL after a failure", "sparse_model_create");
    return;
  }
  st.model = m;
  sparse_model_parameter_count(m, &st.model_params);
  st.model_seq_len = c.seq_len;
  sparse_model_config got;
  if (CALL(sparse_model_get_config(m, &got)) != SPARSE_OK || got.seq_len != c.seq_len)
    fail("get_config disagrees", "sparse_model_get_config");
}

void op_model_run(Input& in, State& st) {
  sparse_model* m = in.coin(32) ? nullptr : st.model;
  // Running a model costs time: only small ones are run.
  if (st.model != nullptr && (st.model_params > 50000 || st.model_seq_len > 128)) m = nullptr;
  const int64_t n = st.model != nullptr ? st.model_seq_len : 64;
  const int64_t batch = in.coin(16) ? in.i64(0, 3) : in.fdp().ConsumeIntegralInRange<int64_t>(1, 2);
  const bool fits = batch >= 1 && batch <= 4;
  Buffer tokens(fits ? static_cast<size_t>(batch * n) : 0);
  for (size_t i = 0; i < tokens.size; ++i) tokens.data()[i] = static_cast<uint8_t>(i * 37 + batch);
  // A batch no buffer backs must be refused unread (NULL tokens make sure of it).
  const uint8_t* tok = fits ? tokens.data() : nullptr;
  switch (in.fdp().ConsumeIntegralInRange(0, 6)) {
    case 0: {
      sparse_train_stats stats;
      std::memset(&stats, 0, sizeof stats);
      stats.struct_size = in.coin(8) ? static_cast<uint32_t>(in.i64(0, 120)) : sizeof stats;
      shim_reducer_status = SPARSE_OK;
      CALL(sparse_model_train_step(m, tok, batch, in.coin(4) ? nullptr : &stats));
      break;
    }
    case 1: {
      double bpd = 0;
      if (CALL(sparse_model_evaluate(m, tok, batch, &bpd)) == SPARSE_OK && !std::isfinite(bpd))
        fail("non-finite bits per dim", "sparse_model_evaluate");
      break;
    }
    case 2: {
      int64_t count = fits ? batch * n + in.fdp().ConsumeIntegralInRange<int64_t>(-2, 1) : 0;
      if (count < 0) count = 0;
      std::vector<double> bits(static_cast<size_t>(count));
      CALL(sparse_model_token_bits(m, tok, batch, count > 0 ? bits.data() : nullptr,
                                   static_cast<size_t>(count)));
      break;
    }
    case 3: {
      int64_t peak = 0;
      CALL(sparse_model_measure_memory(m, tok, batch, &peak));
      break;
    }
    case 4: {
      sparse_sample_params p;
      sparse_sample_params_default(&p);
      if (in.coin(3)) p.temperature = in.f32();
      p.seed = in.u64();
      if (in.coin(32)) p.struct_size = static_cast<uint32_t>(in.i64(0, 100));
      if (in.coin(32)) p.reserved[in.fdp().ConsumeIntegralInRange(0, 31)] = 1;
      const int64_t length = in.i64(1, n);
      const int64_t prompt_len = in.coin(2) ? 0 : in.i64(0, length);
      const bool length_fits = length >= 0 && length <= 4096;
      const bool prompt_fits = prompt_len >= 0 && prompt_len <= 4096;
      Buffer out(length_fits ? static_cast<size_t>(length) : 0);
      Buffer prompt(prompt_fits ? static_cast<size_t>(prompt_len) : 0);
      for (size_t i = 0; i < prompt.size; ++i) prompt.data()[i] = static_cast<uint8_t>(i);
      // Sizes no buffer backs: NULL pointers, which the library must refuse.
      CALL(sparse_model_sample(m, in.coin(4) ? nullptr : &p,
                               prompt.size > 0 ? prompt.data() : nullptr, prompt_len,
                               length_fits && length > 0 ? out.data() : nullptr, length));
      break;
    }
    case 5: {
      sparse_experimental_gradient_reducer r;
      sparse_experimental_gradient_reducer_default(&r);
      r.rank = in.coin(4) ? in.i32(0, 3) : 0;
      r.size = in.coin(4) ? in.i32(1, 3) : 1;
      put(r.memory, in.enumeration(2));
      r.all_reduce_sum = in.coin(16) ? nullptr : shim_hook_sum;
      r.all_reduce_sum_f64 = in.coin(16) ? nullptr : shim_hook_sum_f64;
      if (in.coin(2)) {
        r.begin_all_reduce_sum = shim_hook_sum;
        r.wait_all_reduce_sum = in.coin(16) ? nullptr : shim_hook_wait;
      }
      if (in.coin(32)) r.struct_size = static_cast<uint32_t>(in.i64(0, 100));
      if (in.coin(32)) r.reserved[in.fdp().ConsumeIntegralInRange(0, 15)] = 1;
      if (CALL(sparse_experimental_model_set_gradient_reducer(m, in.coin(8) ? nullptr : &r)) !=
          SPARSE_OK)
        return;
      shim_reducer_status = in.coin(2) ? SPARSE_OK : in.i32(-8, 1);
      const std::string message = in.text(3000);
      shim_reducer_message = message.data();
      shim_reducer_message_size = message.size();
      reducer_returns_internal = shim_reducer_status == SPARSE_ERR_INTERNAL ||
                                 shim_reducer_status > SPARSE_OK ||
                                 shim_reducer_status < SPARSE_ERR_BUFFER_TOO_SMALL;
      CALL(sparse_model_train_step(m, tok, batch, nullptr));
      reducer_returns_internal = false;
      // The model keeps the reducer: later steps call it after `message` is gone.
      shim_reducer_status = SPARSE_OK;
      shim_reducer_message = nullptr;
      shim_reducer_message_size = 0;
      int64_t skipped = 0;
      CALL(sparse_experimental_model_skipped_steps(m, &skipped));
      break;
    }
    default: {
      sparse_train_stats stats;
      std::memset(&stats, 0, sizeof stats);
      stats.struct_size = sizeof stats;
      stats.step = in.i64(0, 100);
      stats.loss = in.f32();
      stats.bits_per_dim = in.f32();
      stats.learning_rate = in.coin(4) ? in.fdp().ConsumeFloatingPoint<double>() : 3e-4;
      stats.tokens = in.i64(0, 1 << 20);
      stats.seconds = in.fdp().ConsumeFloatingPoint<double>();
      const int64_t size = in.fdp().ConsumeIntegralInRange<int64_t>(0, 600);
      Buffer buffer(static_cast<size_t>(size));
      CALL(sparse_train_progress_line(
          &stats, in.i64(0, 1000), in.fdp().ConsumeFloatingPoint<double>(),
          size > 0 ? reinterpret_cast<char*>(buffer.data()) : nullptr, static_cast<size_t>(size)));
      break;
    }
  }
}

// ------------------------------------------------------------------------------- datasets

void op_dataset(Input& in, State& st) {
  if (st.dataset == nullptr || in.coin(6)) {
    const int kind = in.coin(8) ? in.enumeration(7)
                                : (in.fdp().ConsumeBool() ? SPARSE_DATASET_SYNTHETIC_IMAGE
                                                          : SPARSE_DATASET_SYNTHETIC_TEXT);
    sparse_dataset_desc d;
    if (shim_dataset_desc_default(&d, kind) != SPARSE_OK)
      sparse_dataset_desc_default(&d, SPARSE_DATASET_SYNTHETIC_TEXT);
    put(d.kind, kind);
    d.path = nullptr;  // files are the parser fuzzers' business
    d.num_sequences = in.i64(1, 8);
    d.seq_len = in.coin(2) ? 0 : in.i64(1, 256);
    d.image_width = in.i32(1, 16);
    d.image_height = in.i32(1, 16);
    if (in.coin(4)) d.vocab = in.i32(2, 256);
    if (in.coin(4)) d.copy_offset = in.i64(0, 300);
    if (in.coin(8)) d.copy_prob = in.fdp().ConsumeFloatingPoint<double>();
    if (in.coin(8)) d.successor_bias = in.fdp().ConsumeFloatingPoint<double>();
    if (in.coin(8)) d.noise_scale = in.fdp().ConsumeFloatingPoint<double>();
    if (in.coin(8)) put(d.split, in.enumeration(3));
    if (in.coin(8)) d.shuffle = in.i32(0, 1);
    if (in.coin(32)) d.struct_size = static_cast<uint32_t>(in.i64(0, 300));
    if (in.coin(32)) d.reserved0 = 1;
    sparse_dataset* ds = reinterpret_cast<sparse_dataset*>(sentinel);
    const sparse_status s = CALL(sparse_dataset_open(&d, &ds));
    if (s != SPARSE_OK) {
      if (ds != nullptr) fail("*out not NULL after a failure", "sparse_dataset_open");
      return;
    }
    sparse_dataset_destroy(st.dataset);
    st.dataset = ds;
    return;
  }
  int64_t count = 0, len = 0;
  int32_t vocab = 0;
  if (CALL(sparse_dataset_num_sequences(st.dataset, &count)) != SPARSE_OK ||
      CALL(sparse_dataset_seq_len(st.dataset, &len)) != SPARSE_OK ||
      CALL(sparse_dataset_vocab_size(st.dataset, &vocab)) != SPARSE_OK)
    fail("a query of an open dataset failed", "dataset");
  const int type = in.enumeration(2);
  const size_t tsize = type == SPARSE_TOKENS_I32 ? 4 : 1;
  switch (in.fdp().ConsumeIntegralInRange(0, 3)) {
    case 0:
    case 1: {
      const bool batch = in.fdp().ConsumeBool();
      const int64_t first = in.i64(0, count);
      const int64_t n = in.i64(0, 3);
      const double want =
          static_cast<double>(n) * static_cast<double>(len) * static_cast<double>(tsize);
      int64_t bytes = want >= 0 && want <= (1 << 22) ? static_cast<int64_t>(want) : 0;
      bytes += in.fdp().ConsumeIntegralInRange<int64_t>(-2, 0);
      if (bytes < 0) bytes = 0;
      Buffer out(static_cast<size_t>(bytes));
      uint8_t* ptr = bytes > 0 ? out.data() : (in.coin(2) ? nullptr : sentinel);
      std::vector<int64_t> indices(n >= 1 && n <= 3 ? static_cast<size_t>(n) : 0);
      if (batch)
        CALL(shim_dataset_next_batch(st.dataset, n, type, ptr, static_cast<size_t>(bytes),
                                     indices.empty() ? nullptr : indices.data()));
      else
        CALL(shim_dataset_read(st.dataset, first, n, type, ptr, static_cast<size_t>(bytes)));
      break;
    }
    case 2: {
      uint64_t epoch = 0;
      int64_t pos = 0;
      CALL(sparse_dataset_position(st.dataset, &epoch, &pos));
      CALL(sparse_dataset_seek(st.dataset, in.u64(), in.i64(0, count)));
      int32_t label = 0;
      CALL(sparse_dataset_label(st.dataset, in.i64(0, count), &label));
      double bpd = 0, nll = 0;
      CALL(sparse_dataset_entropy(st.dataset, &bpd, &nll));
      break;
    }
    default: {
      const size_t n = in.fdp().ConsumeIntegralInRange<size_t>(0, 64);
      std::vector<float> f(n);
      for (float& x : f) x = in.f32();
      std::vector<uint8_t> b(n);
      CALL(sparse_mulaw_encode(n > 0 ? f.data() : nullptr, n, n > 0 ? b.data() : nullptr));
      CALL(sparse_mulaw_decode(n > 0 ? b.data() : nullptr, n, n > 0 ? f.data() : nullptr));
      for (float x : f)
        if (!(x >= -1.0f && x <= 1.0f))
          fail("mu-law decode outside [-1, 1]", "sparse_mulaw_decode");
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  // The memory limit huge sizes are refused against (an unreadable value, sometimes).
  static constexpr struct {
    const char* text;
    double bytes;  // 0: not a size
  } limits[] = {{"64M", 64 << 20}, {"16M", 16 << 20}, {"256M", 256 << 20},
                {"1M", 1 << 20},   {"4K", 4 << 10},   {"junk", 0}};
  const int limit =
      in.coin(16) ? in.fdp().ConsumeIntegralInRange(0, 5) : in.fdp().ConsumeIntegralInRange(0, 1);
  setenv("SPARSE_MEMORY_LIMIT", limits[limit].text, 1);
  State st;
  st.memory_limit = limits[limit].bytes;
  sparse_settings s;
  sparse_settings_default(&s);
  s.backend = SPARSE_BACKEND_CPU;
  s.num_threads = 1;
  if (CALL(sparse_context_create(&s, &st.context)) != SPARSE_OK) fail("no CPU context", "setup");
  for (int ops = 0; ops < 48 && in.more(); ++ops) {
    switch (in.fdp().ConsumeIntegralInRange(0, 11)) {
      case 0:
      case 1:
        op_layout_create(in, st);
        break;
      case 2:
        op_layout_from_blocks(in, st);
        break;
      case 3:
        op_layout_query(in, st);
        break;
      case 4:
      case 5:
      case 6:
        op_attention(in, st);
        break;
      case 7:
        op_tensor_contiguous(in);
        break;
      case 8:
        op_context(in, st);
        break;
      case 9:
        op_model_config(in, st);
        break;
      case 10:
        op_model_run(in, st);
        break;
      default:
        op_dataset(in, st);
        break;
    }
  }
  return 0;
}
