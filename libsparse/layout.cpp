#include "libsparse/layout.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "libsparse/error.hpp"
#include "libsparse/random.hpp"
#include "libsparse/resources.hpp"

namespace sparse {
namespace {

// A validated pattern applied to one head.
struct Term {
  sparse_pattern_kind kind = SPARSE_PATTERN_DENSE;
  int64_t window = 0;
  int64_t stride = 0;
  int64_t summary_lo = 0, summary_hi = 0;  // FIXED_SUMMARY: allowed j mod l in [lo, hi)
  bool causal = true;
  std::vector<int64_t> globals;  // sorted, unique
  int64_t random_blocks = 0;
  uint64_t seed = 0;
};

bool uses_window(sparse_pattern_kind k) {
  return k == SPARSE_PATTERN_LOCAL || k == SPARSE_PATTERN_SLIDING_WINDOW ||
         k == SPARSE_PATTERN_LONGFORMER || k == SPARSE_PATTERN_BIGBIRD;
}
bool uses_stride(sparse_pattern_kind k) {
  return k == SPARSE_PATTERN_STRIDED_ROW || k == SPARSE_PATTERN_STRIDED_COLUMN ||
         k == SPARSE_PATTERN_FIXED_BLOCK || k == SPARSE_PATTERN_FIXED_SUMMARY;
}
bool has_causal_flag(sparse_pattern_kind k) {
  return k == SPARSE_PATTERN_DENSE || k == SPARSE_PATTERN_SLIDING_WINDOW ||
         k == SPARSE_PATTERN_LONGFORMER || k == SPARSE_PATTERN_BIGBIRD;
}

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Sets bits [from, to] (inclusive, block-relative columns) of one mask row.
void set_bits(uint64_t* row, int64_t from, int64_t to) {
  for (int64_t c = from; c <= to;) {
    const int64_t word = c >> 6, bit = c & 63;
    const int64_t span = std::min<int64_t>(64 - bit, to - c + 1);
    const uint64_t bits = span == 64 ? ~uint64_t{0} : (((uint64_t{1} << span) - 1) << bit);
    row[word] |= bits;
    c += span;
  }
}

class HeadBuilder {
 public:
  HeadBuilder(int64_t n, int block, int head, std::vector<Term> terms, bool transpose_column)
      : n_(n), B_(block), head_(head), terms_(std::move(terms)) {
    out_.seq_len = n;
    out_.block = block;
    out_.words = (block + 63) / 64;
    out_.causal = true;
    for (const Term& t : terms_)
      if (!t.causal) out_.causal = false;
    bool pure_column = !terms_.empty() && transpose_column;
    for (const Term& t : terms_)
      if (t.kind != SPARSE_PATTERN_STRIDED_COLUMN || t.stride != terms_[0].stride)
        pure_column = false;
    if (pure_column) {
      out_.transposed = true;
      out_.stride = terms_[0].stride;
      out_.chunk = (n + out_.stride - 1) / out_.stride;
      out_.n_computed = out_.stride * out_.chunk;
    } else {
      out_.n_computed = n;
    }
    out_.num_blocks = (out_.n_computed + B_ - 1) / B_;
  }

  std::shared_ptr<const HeadLayout> build() {
    const int64_t nb = out_.num_blocks;
    const size_t mask_words = static_cast<size_t>(B_) * out_.words;
    std::vector<uint64_t> mask(mask_words);
    std::vector<int64_t> candidates;
    out_.row_ptr.assign(static_cast<size_t>(nb) + 1, 0);
    for (int64_t I = 0; I < nb; ++I) {
      candidates.clear();
      collect_candidates(I, candidates);
      std::sort(candidates.begin(), candidates.end());
      candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
      for (int64_t J : candidates) {
        std::fill(mask.begin(), mask.end(), 0);
        fill_block(I, J, mask.data());
        add_block(J, mask);
      }
      out_.row_ptr[static_cast<size_t>(I) + 1] = out_.nnz();
    }
    build_csc(out_);
    return std::make_shared<const HeadLayout>(std::move(out_));
  }

  // Adds block (current row, J) with the given element mask unless it is empty.
  void add_block(int64_t J, const std::vector<uint64_t>& mask) {
    int64_t bits = 0;
    for (uint64_t w : mask) bits += __builtin_popcountll(w);
    if (bits == 0) return;
    out_.col_idx.push_back(static_cast<int32_t>(J));
    out_.useful_elements += bits;
    if (bits == static_cast<int64_t>(B_) * B_) {
      out_.mask_id.push_back(-1);
      ++out_.full_blocks;
      return;
    }
    out_.mask_id.push_back(intern_mask(mask));
  }

  static void build_csc(HeadLayout& h) {
    const int64_t nb = h.num_blocks;
    h.col_ptr.assign(static_cast<size_t>(nb) + 1, 0);
    for (int32_t J : h.col_idx) ++h.col_ptr[static_cast<size_t>(J) + 1];
    for (int64_t J = 0; J < nb; ++J) h.col_ptr[J + 1] += h.col_ptr[J];
    h.row_idx.resize(h.col_idx.size());
    h.col_to_csr.resize(h.col_idx.size());
    std::vector<int64_t> next(h.col_ptr.begin(), h.col_ptr.end() - 1);
    for (int64_t I = 0; I < nb; ++I) {
      for (int64_t k = h.row_ptr[I]; k < h.row_ptr[I + 1]; ++k) {
        const int64_t pos = next[h.col_idx[k]]++;
        h.row_idx[pos] = static_cast<int32_t>(I);
        h.col_to_csr[pos] = k;
      }
    }
  }

  // An upper bound on the computed blocks: the candidate key blocks of every row, counted per
  // pattern (overlaps twice) and capped at the row's length, so the memory a layout needs is
  // known before any block is listed. Stops counting once the total passes `stop_at`.
  double nnz_upper_bound(double stop_at) const {
    const int64_t nb = out_.num_blocks;
    auto blocks = [&](int64_t j0, int64_t j1) -> double {  // key positions [j0, j1]
      j0 = std::max<int64_t>(j0, 0);
      j1 = std::min<int64_t>(j1, out_.n_computed - 1);
      return j0 > j1 ? 0.0 : static_cast<double>(j1 / B_ - j0 / B_ + 1);
    };
    double total = 0;
    for (int64_t I = 0; I < nb && total <= stop_at; ++I) {
      const int64_t r0 = I * B_;
      const int64_t r1 = std::min(r0 + B_, out_.n_computed) - 1;
      double row = 0;
      if (out_.transposed) row = blocks((r0 / out_.chunk) * out_.chunk, r1);
      for (const Term& t : terms_) {
        if (out_.transposed) break;
        const int64_t cap = t.causal ? r1 : n_ - 1;
        switch (t.kind) {
          case SPARSE_PATTERN_DENSE:
            row += blocks(0, cap);
            break;
          case SPARSE_PATTERN_LOCAL:
            row += blocks(r0 - t.window + 1, r1);
            break;
          case SPARSE_PATTERN_STRIDED_ROW:
            row += blocks(r0 - t.stride, r1);
            break;
          case SPARSE_PATTERN_STRIDED_COLUMN:
            row += blocks(0, r1);
            break;
          case SPARSE_PATTERN_FIXED_BLOCK:
            row += blocks((r0 / t.stride) * t.stride, r1);
            break;
          case SPARSE_PATTERN_FIXED_SUMMARY:
            row += std::min(blocks(0, r1), static_cast<double>(r1 / t.stride + 1) *
                                               ((t.summary_hi - t.summary_lo + B_ - 1) / B_ + 1));
            break;
          case SPARSE_PATTERN_SLIDING_WINDOW:
          case SPARSE_PATTERN_LONGFORMER:
          case SPARSE_PATTERN_BIGBIRD: {
            row += blocks(r0 - t.window + 1, t.causal ? r1 : r1 + t.window - 1);
            row += static_cast<double>(std::upper_bound(t.globals.begin(), t.globals.end(), cap) -
                                       t.globals.begin());
            auto it = std::lower_bound(t.globals.begin(), t.globals.end(), r0);
            if (it != t.globals.end() && *it <= r1) row += blocks(0, cap);
            row += static_cast<double>(t.random_blocks);
            break;
          }
        }
      }
      total += std::min(row, static_cast<double>(out_.causal ? I + 1 : nb));
    }
    return total;
  }

  HeadLayout& out() { return out_; }

 private:
  int32_t intern_mask(const std::vector<uint64_t>& mask) {
    uint64_t hash = 1469598103934665603ull;
    for (uint64_t w : mask) hash = (hash ^ w) * 1099511628211ull;
    auto& ids = mask_index_[hash];
    const size_t words = mask.size();
    for (int32_t id : ids)
      if (std::equal(mask.begin(), mask.end(), out_.masks.begin() + id * words)) return id;
    const auto id = static_cast<int32_t>(out_.masks.size() / words);
    out_.masks.insert(out_.masks.end(), mask.begin(), mask.end());
    ids.push_back(id);
    return id;
  }

  // Key blocks of query block row I that may hold allowed pairs (a superset; empty blocks are
  // dropped after their masks are computed).
  void collect_candidates(int64_t I, std::vector<int64_t>& out) {
    const int64_t nb = out_.num_blocks;
    const int64_t r0 = I * B_;
    const int64_t r1 = std::min(r0 + B_, out_.n_computed) - 1;
    auto add_range = [&](int64_t j0, int64_t j1) {  // key positions [j0, j1]
      j0 = std::max<int64_t>(j0, 0);
      j1 = std::min<int64_t>(j1, out_.n_computed - 1);
      for (int64_t J = j0 / B_; j0 <= j1 && J <= j1 / B_; ++J) out.push_back(J);
    };
    if (out_.transposed) {
      add_range((r0 / out_.chunk) * out_.chunk, r1);
      return;
    }
    for (const Term& t : terms_) {
      const int64_t cap = t.causal ? r1 : n_ - 1;
      switch (t.kind) {
        case SPARSE_PATTERN_DENSE:
          add_range(0, cap);
          break;
        case SPARSE_PATTERN_LOCAL:
          add_range(r0 - t.window + 1, r1);
          break;
        case SPARSE_PATTERN_STRIDED_ROW:
          add_range(r0 - t.stride, r1);
          break;
        case SPARSE_PATTERN_STRIDED_COLUMN:
          add_range(0, r1);
          break;
        case SPARSE_PATTERN_FIXED_BLOCK:
          add_range((r0 / t.stride) * t.stride, r1);
          break;
        case SPARSE_PATTERN_FIXED_SUMMARY:
          for (int64_t base = 0; base <= r1; base += t.stride)
            add_range(base + t.summary_lo, std::min(base + t.summary_hi - 1, r1));
          break;
        case SPARSE_PATTERN_SLIDING_WINDOW:
        case SPARSE_PATTERN_LONGFORMER:
        case SPARSE_PATTERN_BIGBIRD: {
          add_range(r0 - t.window + 1, t.causal ? r1 : r1 + t.window - 1);
          if (t.globals.empty() && t.random_blocks == 0) break;
          // Global columns.
          for (int64_t g : t.globals) {
            if (g > cap) break;
            out.push_back(g / B_);
          }
          // A global query row attends to every key.
          auto it = std::lower_bound(t.globals.begin(), t.globals.end(), r0);
          if (it != t.globals.end() && *it <= r1) add_range(0, cap);
          if (t.kind == SPARSE_PATTERN_BIGBIRD && t.random_blocks > 0) {
            const int64_t range = t.causal ? I + 1 : nb;
            for (int64_t J : bigbird_random_blocks(t.seed, head_, I, range, t.random_blocks))
              out.push_back(J);
          }
          break;
        }
      }
    }
  }

  // ORs into `mask` the allowed pairs of block (I, J).
  void fill_block(int64_t I, int64_t J, uint64_t* mask) {
    const int64_t c0 = J * B_;
    const int64_t cmax = std::min<int64_t>(c0 + B_, out_.n_computed) - 1;
    // Whether J is one of the random blocks of row I, per BigBird term.
    std::vector<char> random_hit(terms_.size(), 0);
    for (size_t k = 0; k < terms_.size(); ++k) {
      const Term& t = terms_[k];
      if (t.kind != SPARSE_PATTERN_BIGBIRD || t.random_blocks == 0) continue;
      const int64_t range = t.causal ? I + 1 : out_.num_blocks;
      const auto drawn = bigbird_random_blocks(t.seed, head_, I, range, t.random_blocks);
      random_hit[k] = std::find(drawn.begin(), drawn.end(), J) != drawn.end();
    }
    for (int r = 0; r < B_; ++r) {
      const int64_t i = I * B_ + r;
      if (i >= out_.n_computed) break;
      uint64_t* row = mask + static_cast<size_t>(r) * out_.words;
      auto set = [&](int64_t j0, int64_t j1) {  // absolute key positions, inclusive
        j0 = std::max(j0, c0);
        j1 = std::min(j1, cmax);
        if (j0 <= j1) set_bits(row, j0 - c0, j1 - c0);
      };
      if (out_.transposed) {
        if (out_.natural(i) < 0) continue;  // padding query
        set((i / out_.chunk) * out_.chunk, i);
        continue;
      }
      for (size_t k = 0; k < terms_.size(); ++k) {
        const Term& t = terms_[k];
        const int64_t cap = t.causal ? i : n_ - 1;
        switch (t.kind) {
          case SPARSE_PATTERN_DENSE:
            set(0, cap);
            break;
          case SPARSE_PATTERN_LOCAL:
            set(i - t.window + 1, i);
            break;
          case SPARSE_PATTERN_STRIDED_ROW:
            set(i - t.stride, i);
            break;
          case SPARSE_PATTERN_STRIDED_COLUMN: {
            // j = i - k l, k >= 0: the first such j >= c0, then every l-th up to min(i, cmax).
            const int64_t first = c0 + ((i - c0) % t.stride + t.stride) % t.stride;
            for (int64_t j = first; j <= std::min(i, cmax); j += t.stride) set(j, j);
            break;
          }
          case SPARSE_PATTERN_FIXED_BLOCK:
            set((i / t.stride) * t.stride, i);
            break;
          case SPARSE_PATTERN_FIXED_SUMMARY:
            for (int64_t base = floor_div(c0, t.stride) * t.stride; base <= std::min(i, cmax);
                 base += t.stride)
              set(base + t.summary_lo, std::min(base + t.summary_hi - 1, i));
            break;
          case SPARSE_PATTERN_SLIDING_WINDOW:
          case SPARSE_PATTERN_LONGFORMER:
          case SPARSE_PATTERN_BIGBIRD: {
            set(i - t.window + 1, t.causal ? i : i + t.window - 1);
            if (std::binary_search(t.globals.begin(), t.globals.end(), i)) set(0, cap);
            for (auto it = std::lower_bound(t.globals.begin(), t.globals.end(), c0);
                 it != t.globals.end() && *it <= std::min(cap, cmax); ++it)
              set(*it, *it);
            if (random_hit[k]) set(c0, cap);
            break;
          }
        }
      }
    }
  }

  int64_t n_;
  int B_;
  int head_;
  std::vector<Term> terms_;
  HeadLayout out_;
  std::unordered_map<uint64_t, std::vector<int32_t>> mask_index_;
};

Term validate_term(const sparse_pattern& p, int index, int64_t n, int64_t nb) {
  const std::string name = "patterns[" + std::to_string(index) + "]";
  Term t;
  const int kind_value = enum_value(p.kind);
  require(kind_value >= SPARSE_PATTERN_DENSE && kind_value <= SPARSE_PATTERN_BIGBIRD, name,
          ".kind = ", kind_value, " is not a known sparse_pattern_kind");
  t.kind = p.kind;
  const char* kind = sparse_pattern_kind_name(p.kind);
  if (uses_window(p.kind)) {
    require(p.window >= 1, name, " (", kind, "): window = ", p.window, " must be >= 1");
    // A window of seq_len or more reaches every key: stored as seq_len, so that i + window
    // cannot overflow for a window near INT64_MAX.
    t.window = std::min(p.window, n);
  }
  if (uses_stride(p.kind)) {
    require(p.stride >= 1, name, " (", kind, "): stride = ", p.stride, " must be >= 1");
    require(p.stride <= n, name, " (", kind, "): stride = ", p.stride,
            " is larger than seq_len = ", n);
    t.stride = p.stride;
  }
  if (p.kind == SPARSE_PATTERN_FIXED_SUMMARY) {
    require(p.summary >= 1 && p.summary <= p.stride, name, " (", kind, "): summary = ", p.summary,
            " must be in [1, stride = ", p.stride, "]");
    require(p.summary_variants >= 1, name, " (", kind, "): summary_variants = ", p.summary_variants,
            " must be >= 1");
    // summary * summary_variants <= stride, without the product (it may overflow int64_t).
    require(p.summary_variants <= p.stride / p.summary, name, " (", kind,
            "): summary = ", p.summary, " times summary_variants = ", p.summary_variants,
            " exceeds stride = ", p.stride);
  }
  if (has_causal_flag(p.kind)) {
    require(p.causal == 0 || p.causal == 1, name, ".causal = ", p.causal, " must be 0 or 1");
    t.causal = p.causal == 1;
  }
  if (p.kind == SPARSE_PATTERN_LONGFORMER || p.kind == SPARSE_PATTERN_BIGBIRD) {
    require(p.num_global_tokens >= 0, name, ".num_global_tokens = ", p.num_global_tokens,
            " is negative");
    require(p.num_global_tokens <= n, name, ": too many global tokens (", p.num_global_tokens,
            " for seq_len = ", n, ")");
    require(p.num_global_tokens == 0 || p.global_tokens != nullptr, name,
            ".global_tokens is NULL but num_global_tokens = ", p.num_global_tokens);
    for (int64_t g = 0; g < p.num_global_tokens; ++g) {
      require(p.global_tokens[g] >= 0 && p.global_tokens[g] < n, name, ".global_tokens[", g,
              "] = ", p.global_tokens[g], " is outside [0, seq_len = ", n, ")");
      t.globals.push_back(p.global_tokens[g]);
    }
    std::sort(t.globals.begin(), t.globals.end());
    t.globals.erase(std::unique(t.globals.begin(), t.globals.end()), t.globals.end());
  }
  if (p.kind == SPARSE_PATTERN_BIGBIRD) {
    require(p.random_blocks >= 0 && p.random_blocks <= nb, name,
            ".random_blocks = ", p.random_blocks, " must be in [0, number of key blocks = ", nb,
            "]");
    t.random_blocks = p.random_blocks;
    t.seed = p.seed;
  }
  return t;
}

// Host bytes of a layout: per computed block a column index, a mask id, a row index and a CSR
// position (CSR and CSC); per block row and column an offset.
constexpr double kLayoutBytesPerBlock = 2 * sizeof(int32_t) + sizeof(int32_t) + sizeof(int64_t);
double layout_bytes(double blocks, int64_t nb, int heads) {
  return blocks * kLayoutBytesPerBlock +
         static_cast<double>(heads) * 2.0 * static_cast<double>(nb + 1) * sizeof(int64_t);
}

void check_block_size(int64_t block) {
  require(block == 16 || block == 32 || block == 64 || block == 128, "block_size = ", block,
          " is not supported (16, 32, 64 or 128)");
}

}  // namespace

Layout::Layout()
    : serial([] {
        static std::atomic<uint64_t> next{1};
        return next.fetch_add(1);
      }()) {}

size_t HeadLayout::memory_bytes() const {
  return sizeof(*this) + row_ptr.capacity() * sizeof(int64_t) +
         col_idx.capacity() * sizeof(int32_t) + mask_id.capacity() * sizeof(int32_t) +
         col_ptr.capacity() * sizeof(int64_t) + row_idx.capacity() * sizeof(int32_t) +
         col_to_csr.capacity() * sizeof(int64_t) + masks.capacity() * sizeof(uint64_t);
}

size_t Layout::memory_bytes() const {
  size_t total = sizeof(*this) + heads.capacity() * sizeof(heads[0]);
  std::vector<const HeadLayout*> seen;
  for (const auto& h : heads) {
    if (std::find(seen.begin(), seen.end(), h.get()) != seen.end()) continue;
    seen.push_back(h.get());
    total += h->memory_bytes();
  }
  return total;
}

std::vector<int64_t> bigbird_random_blocks(uint64_t seed, int head, int64_t row, int64_t range,
                                           int64_t count) {
  std::vector<int64_t> blocks;
  if (range <= 0 || count <= 0) return blocks;
  if (count >= range) {
    for (int64_t J = 0; J < range; ++J) blocks.push_back(J);
    return blocks;
  }
  uint64_t state = seed ^ (kSplitmix64Increment * (static_cast<uint64_t>(head) + 1)) ^
                   (0xBF58476D1CE4E5B9ull * (static_cast<uint64_t>(row) + 1));
  while (static_cast<int64_t>(blocks.size()) < count) {
    const uint64_t z = splitmix64_next(state);
    const auto J = static_cast<int64_t>(z % static_cast<uint64_t>(range));
    if (std::find(blocks.begin(), blocks.end(), J) == blocks.end()) blocks.push_back(J);
  }
  return blocks;
}

std::unique_ptr<Layout> build_layout(const sparse_layout_desc& desc) {
  require(desc.seq_len >= 1, "seq_len = ", desc.seq_len, " must be >= 1");
  check_block_size(desc.block_size);
  require(desc.num_heads >= 1, "num_heads = ", desc.num_heads, " must be >= 1");
  require(desc.patterns != nullptr, "patterns is NULL");
  require(desc.num_patterns >= 1, "num_patterns = ", desc.num_patterns, " must be >= 1");
  require(desc.pattern_struct_size == sizeof(sparse_pattern),
          "pattern_struct_size = ", desc.pattern_struct_size,
          " does not match this library's sizeof(sparse_pattern) = ", sizeof(sparse_pattern),
          "; initialise with sparse_layout_desc_default()");
  require(desc.transpose_strided_column == 0 || desc.transpose_strided_column == 1,
          "transpose_strided_column = ", desc.transpose_strided_column, " must be 0 or 1");
  const int64_t n = desc.seq_len;
  const int64_t nb = n / desc.block_size + (n % desc.block_size != 0);  // n + block may overflow
  require(nb < (int64_t{1} << 31), "seq_len = ", n, " gives ", nb, " blocks of ", desc.block_size,
          " per side, more than the limit of 2^31 - 1 (block indices are 32-bit)");

  // Per head: its terms, its signature text and its handle, before the heads are told apart.
  constexpr double kBytesPerHead = sizeof(std::vector<Term>) + sizeof(std::string) + 64 +
                                   sizeof(std::shared_ptr<const HeadLayout>);
  check_memory(kBytesPerHead * desc.num_heads,
               detail::concat("the layout's per-head tables (num_heads = ", desc.num_heads, ")"));
  std::vector<std::vector<Term>> head_terms(static_cast<size_t>(desc.num_heads));
  std::vector<std::string> signature(static_cast<size_t>(desc.num_heads));
  for (int index = 0; index < desc.num_patterns; ++index) {
    const sparse_pattern& p = desc.patterns[index];
    require(p.head >= -1 && p.head < desc.num_heads, "patterns[", index, "].head = ", p.head,
            " is outside [-1, num_heads = ", desc.num_heads, ")");
    const Term base = validate_term(p, index, n, nb);
    for (int h = 0; h < desc.num_heads; ++h) {
      if (p.head != -1 && p.head != h) continue;
      Term t = base;
      std::string sig = detail::concat(static_cast<int>(t.kind), ":", t.window, ":", t.stride, ":",
                                       t.causal ? 1 : 0, ":", t.random_blocks, ":", t.seed);
      if (t.kind == SPARSE_PATTERN_FIXED_SUMMARY) {
        const int64_t v = h % p.summary_variants;
        t.summary_lo = p.stride - p.summary * (v + 1);
        t.summary_hi = p.stride - p.summary * v;
        sig += detail::concat(":", t.summary_lo, ":", t.summary_hi);
      }
      for (int64_t g : t.globals) sig += detail::concat(",", g);
      if (t.kind == SPARSE_PATTERN_BIGBIRD) sig += detail::concat(":head", h);
      signature[static_cast<size_t>(h)] += sig + ";";
      head_terms[static_cast<size_t>(h)].push_back(std::move(t));
    }
  }

  // The memory the distinct heads need, checked before anything is listed.
  {
    const MemoryLimit limit = memory_limit();
    std::map<std::string, int> distinct;
    for (int h = 0; h < desc.num_heads; ++h) distinct.emplace(signature[static_cast<size_t>(h)], h);
    // The per-row tables first: counting blocks visits every block row, and a head that no
    // pattern names has no block to stop the count early.
    const double row_bytes = layout_bytes(0, nb, static_cast<int>(distinct.size()));
    check_memory(row_bytes, detail::concat("the layout's block-row tables (seq_len = ", n,
                                           ", block_size = ", desc.block_size, ": ", nb,
                                           " block rows, ", distinct.size(), " distinct head(s))"));
    const double stop_at = (limit.bytes - row_bytes) / kLayoutBytesPerBlock;
    double blocks = 0;
    for (const auto& entry : distinct) {
      const int h = entry.second;
      if (blocks <= stop_at)
        blocks += HeadBuilder(n, desc.block_size, h, head_terms[static_cast<size_t>(h)],
                              desc.transpose_strided_column == 1)
                      .nnz_upper_bound(stop_at - blocks);
    }
    check_memory(layout_bytes(blocks, nb, static_cast<int>(distinct.size())),
                 detail::concat("the layout (seq_len = ", n, ", block_size = ", desc.block_size,
                                ", ", distinct.size(), " distinct head(s), ",
                                blocks > stop_at ? "more than " : "up to ",
                                static_cast<int64_t>(std::min(blocks, 9e18)), " computed blocks)"));
  }

  auto layout = std::make_unique<Layout>();
  layout->seq_len = n;
  layout->block = desc.block_size;
  layout->num_heads = desc.num_heads;
  std::map<std::string, std::shared_ptr<const HeadLayout>> built;
  for (int h = 0; h < desc.num_heads; ++h) {
    auto& slot = built[signature[static_cast<size_t>(h)]];
    if (!slot) {
      slot = HeadBuilder(n, desc.block_size, h, head_terms[static_cast<size_t>(h)],
                         desc.transpose_strided_column == 1)
                 .build();
    }
    layout->heads.push_back(slot);
  }
  return layout;
}

std::unique_ptr<Layout> build_layout_from_blocks(int64_t seq_len, int block, int num_heads,
                                                 const uint8_t* block_mask,
                                                 const uint8_t* element_mask, bool causal) {
  require(seq_len >= 1, "seq_len = ", seq_len, " must be >= 1");
  check_block_size(block);
  require(num_heads >= 1, "num_heads = ", num_heads, " must be >= 1");
  require(block_mask != nullptr, "block_mask is NULL");
  const int64_t nb = seq_len / block + (seq_len % block != 0);  // seq_len + block may overflow
  require(nb < (int64_t{1} << 16), "seq_len = ", seq_len,
          " is too long for a dense user block mask (at most 65535 blocks per side)");
  double blocks = 0;
  const size_t mask_bytes = static_cast<size_t>(num_heads) * nb * nb;
  for (size_t e = 0; e < mask_bytes; ++e) blocks += block_mask[e] != 0;
  check_memory(
      layout_bytes(blocks, nb, num_heads),
      detail::concat("the layout (seq_len = ", seq_len, ", block_size = ", block, ", ", num_heads,
                     " head(s), ", static_cast<int64_t>(blocks), " computed blocks)"));
  auto layout = std::make_unique<Layout>();
  layout->seq_len = seq_len;
  layout->block = block;
  layout->num_heads = num_heads;
  const uint8_t* element = element_mask;
  for (int h = 0; h < num_heads; ++h) {
    HeadBuilder builder(seq_len, block, h, {}, false);
    HeadLayout& out = builder.out();
    out.causal = causal;
    out.row_ptr.assign(static_cast<size_t>(nb) + 1, 0);
    std::vector<uint64_t> mask(static_cast<size_t>(block) * out.words);
    for (int64_t I = 0; I < nb; ++I) {
      for (int64_t J = 0; J < nb; ++J) {
        if (block_mask[(static_cast<size_t>(h) * nb + I) * nb + J] == 0) continue;
        std::fill(mask.begin(), mask.end(), 0);
        for (int r = 0; r < block; ++r) {
          const int64_t i = I * block + r;
          for (int c = 0; c < block; ++c) {
            const int64_t j = J * block + c;
            bool allowed = i < seq_len && j < seq_len && !(causal && j > i);
            if (element != nullptr && element[static_cast<size_t>(r) * block + c] == 0)
              allowed = false;
            if (allowed)
              mask[static_cast<size_t>(r) * out.words + c / 64] |= uint64_t{1} << (c % 64);
          }
        }
        if (element != nullptr) element += static_cast<size_t>(block) * block;
        builder.add_block(J, mask);
      }
      out.row_ptr[static_cast<size_t>(I) + 1] = out.nnz();
    }
    HeadBuilder::build_csc(out);
    layout->heads.push_back(std::make_shared<const HeadLayout>(std::move(out)));
  }
  return layout;
}

}  // namespace sparse
