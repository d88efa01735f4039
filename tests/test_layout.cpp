// Layouts against the token-level definitions (naive_attention.hpp), the block statistics
// measured with an independent mask computation (n = 8192, l = 128, block 64), and bad inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "test_support.hpp"

using naive::Pattern;
using support::LayoutPtr;

namespace {

// Every query row of every head: the layout's exported row mask equals the naive definition.
void check_rows_match(const std::vector<Pattern>& patterns, int64_t n, int block, int heads,
                      int transpose = 1) {
  LayoutPtr layout;
  REQUIRE_MESSAGE(support::make_layout(patterns, n, block, heads, layout, transpose) == SPARSE_OK,
                  sparse_last_error());
  std::vector<uint8_t> row(static_cast<size_t>(n));
  for (int h = 0; h < heads; ++h) {
    const auto mask = naive::head_mask(patterns, h, n, block);
    int64_t useful = 0;
    for (uint8_t m : mask) useful += m;
    for (int64_t i = 0; i < n; ++i) {
      REQUIRE(sparse_layout_row_mask(layout.get(), h, i, row.data(), row.size()) == SPARSE_OK);
      for (int64_t j = 0; j < n; ++j) {
        if (row[static_cast<size_t>(j)] != mask[static_cast<size_t>(i * n + j)]) {
          FAIL_CHECK("head " << h << " query " << i << " key " << j << ": layout "
                             << int(row[static_cast<size_t>(j)]) << " naive "
                             << int(mask[static_cast<size_t>(i * n + j)]) << " (n " << n
                             << ", block " << block << ")");
          return;
        }
      }
    }
    sparse_layout_stats st;
    st.struct_size = sizeof st;
    REQUIRE(sparse_layout_get_stats(layout.get(), h, &st) == SPARSE_OK);
    CHECK(st.useful_elements == useful);
    CHECK(st.computed_elements >= useful);
  }
}

Pattern make(sparse_pattern_kind kind, int64_t stride = 0, int64_t summary = 0, int head = -1) {
  Pattern p;
  p.kind = kind;
  p.stride = stride;
  p.summary = summary;
  p.head = head;
  p.window = stride;
  return p;
}

double density(const std::vector<Pattern>& patterns, int64_t n, int block, int transpose,
               double* effective = nullptr) {
  LayoutPtr layout;
  REQUIRE(support::make_layout(patterns, n, block, 1, layout, transpose) == SPARSE_OK);
  sparse_layout_stats st;
  st.struct_size = sizeof st;
  REQUIRE(sparse_layout_get_stats(layout.get(), 0, &st) == SPARSE_OK);
  if (effective) *effective = st.effective_density;
  return st.density;
}

}  // namespace

TEST_CASE("every pattern kind matches its token-level definition") {
  const int64_t n = 150;  // not a multiple of any block size
  for (int block : {16, 32, 64, 128}) {
    CAPTURE(block);
    check_rows_match({make(SPARSE_PATTERN_DENSE)}, n, block, 1);
    check_rows_match({make(SPARSE_PATTERN_LOCAL, 20)}, n, block, 1);
    check_rows_match({make(SPARSE_PATTERN_STRIDED_ROW, 12)}, n, block, 1);
    check_rows_match({make(SPARSE_PATTERN_STRIDED_COLUMN, 12)}, n, block, 1, 1);
    check_rows_match({make(SPARSE_PATTERN_STRIDED_COLUMN, 12)}, n, block, 1, 0);
    check_rows_match({make(SPARSE_PATTERN_STRIDED_COLUMN, 7)}, n, block, 1, 1);  // 7 !| 150
    check_rows_match({make(SPARSE_PATTERN_FIXED_BLOCK, 24)}, n, block, 1);
    check_rows_match({make(SPARSE_PATTERN_FIXED_SUMMARY, 24, 5)}, n, block, 1);
    Pattern variants = make(SPARSE_PATTERN_FIXED_SUMMARY, 32, 8);
    variants.variants = 3;  // OpenAI's per-head offsets
    check_rows_match({variants}, n, block, 4);
    Pattern bidir = make(SPARSE_PATTERN_SLIDING_WINDOW, 9);
    bidir.causal = false;
    check_rows_match({bidir}, n, block, 1);
    check_rows_match({make(SPARSE_PATTERN_SLIDING_WINDOW, 9)}, n, block, 1);
    Pattern longformer = make(SPARSE_PATTERN_LONGFORMER, 6);
    longformer.globals = {0, 77, 149, 77};
    check_rows_match({longformer}, n, block, 1);
    longformer.causal = false;
    check_rows_match({longformer}, n, block, 1);
    Pattern bigbird = make(SPARSE_PATTERN_BIGBIRD, 5);
    bigbird.globals = {3};
    bigbird.random_blocks = 1;
    bigbird.seed = 99;
    check_rows_match({bigbird}, n, block, 3);
    bigbird.causal = false;
    check_rows_match({bigbird}, n, block, 3);
  }
}

TEST_CASE("windows as long as the sequence or longer, up to INT64_MAX") {
  // i + window - 1 overflowed for a non-causal window near INT64_MAX (UBSan, found by the C ABI
  // fuzzer); every such window reaches every key.
  for (int64_t window :
       {int64_t{149}, int64_t{150}, int64_t{151}, std::numeric_limits<int64_t>::max() - 1,
        std::numeric_limits<int64_t>::max()}) {
    CAPTURE(window);
    check_rows_match({make(SPARSE_PATTERN_LOCAL, window)}, 150, 32, 1);
    for (auto kind :
         {SPARSE_PATTERN_SLIDING_WINDOW, SPARSE_PATTERN_LONGFORMER, SPARSE_PATTERN_BIGBIRD}) {
      Pattern p = make(kind, window);
      p.causal = false;
      if (kind != SPARSE_PATTERN_SLIDING_WINDOW) p.globals = {5};
      check_rows_match({p}, 150, 32, 2);
      p.causal = true;
      check_rows_match({p}, 150, 32, 2);
    }
  }
}

TEST_CASE("merged heads, split heads and unnamed heads") {
  // Merged: one head attends to the union of row and column (natural order, not transposed).
  check_rows_match({make(SPARSE_PATTERN_STRIDED_ROW, 10), make(SPARSE_PATTERN_STRIDED_COLUMN, 10)},
                   100, 16, 1);
  // Split: head 0 row, head 1 column (transposed), head 2 named by nobody (attends nothing).
  check_rows_match(
      {make(SPARSE_PATTERN_STRIDED_ROW, 10, 0, 0), make(SPARSE_PATTERN_STRIDED_COLUMN, 10, 0, 1)},
      100, 16, 3);
  check_rows_match(
      {make(SPARSE_PATTERN_FIXED_BLOCK, 16, 0, 0), make(SPARSE_PATTERN_FIXED_SUMMARY, 16, 4, 1),
       make(SPARSE_PATTERN_LOCAL, 8, 0, 1)},
      97, 32, 2);
}

TEST_CASE("randomized sweep of patterns, lengths and block sizes") {
  std::mt19937_64 rng(20261123);
  for (int trial = 0; trial < 60; ++trial) {
    const int block = 16 << (rng() % 4);
    const int64_t n = 1 + static_cast<int64_t>(rng() % 200);  // includes n < block
    const int heads = 1 + static_cast<int>(rng() % 3);
    std::vector<Pattern> patterns;
    const int count = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < count; ++k)
      patterns.push_back(
          support::random_pattern(rng, n, static_cast<int>(rng() % (heads + 1)) - 1, block));
    CAPTURE(trial);
    CAPTURE(n);
    CAPTURE(block);
    check_rows_match(patterns, n, block, heads, static_cast<int>(rng() % 2));
  }
}

TEST_CASE("block statistics match an independent mask computation (n = 8192, l = 128, block 64)") {
  const int64_t n = 8192;
  double eff = 0;
  CHECK(density({make(SPARSE_PATTERN_STRIDED_ROW, 128)}, n, 64, 1) ==
        doctest::Approx(0.046).epsilon(0.03));
  CHECK(density({make(SPARSE_PATTERN_STRIDED_COLUMN, 128)}, n, 64, 0, &eff) ==
        doctest::Approx(0.50).epsilon(0.02));
  CHECK(eff == doctest::Approx(0.0156).epsilon(0.03));
  CHECK(density({make(SPARSE_PATTERN_STRIDED_COLUMN, 128)}, n, 64, 1) ==
        doctest::Approx(0.0155).epsilon(0.03));
  CHECK(density({make(SPARSE_PATTERN_FIXED_BLOCK, 128)}, n, 64, 1) ==
        doctest::Approx(0.023).epsilon(0.03));
  CHECK(density({make(SPARSE_PATTERN_FIXED_SUMMARY, 128, 32)}, n, 64, 1, &eff) ==
        doctest::Approx(0.50).epsilon(0.02));
  CHECK(eff == doctest::Approx(0.5).epsilon(0.02));
  // A block size that divides c keeps summary blocks fully useful.
  density({make(SPARSE_PATTERN_FIXED_SUMMARY, 128, 32)}, n, 32, 1, &eff);
  CHECK(eff == doctest::Approx(1.0).epsilon(0.02));
  // The summary head costs O(n^2 c / l): a quarter of dense attention at the Enwik8 setting.
  CHECK(density({make(SPARSE_PATTERN_FIXED_SUMMARY, 128, 32)}, 12288, 32, 1) ==
        doctest::Approx(0.25).epsilon(0.02));
}

TEST_CASE("block mask export and user-supplied layouts") {
  LayoutPtr layout;
  REQUIRE(support::make_layout({make(SPARSE_PATTERN_LOCAL, 16)}, 64, 16, 1, layout) == SPARSE_OK);
  std::vector<uint8_t> blocks(16);
  REQUIRE(sparse_layout_block_mask(layout.get(), 0, blocks.data(), blocks.size()) == SPARSE_OK);
  // Window 16 at block 16: diagonal blocks (partial, causal) and the sub-diagonal (partial).
  const uint8_t expected[16] = {1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1};
  for (int k = 0; k < 16; ++k) CHECK(int(blocks[static_cast<size_t>(k)]) == int(expected[k]));
  CHECK(sparse_layout_block_mask(layout.get(), 0, blocks.data(), 15) ==
        SPARSE_ERR_BUFFER_TOO_SMALL);

  // User layout: blocks (0,0) and (1,0) with a custom element mask on the second block.
  const int64_t n = 20;  // two blocks of 16, the second partial
  uint8_t block_mask[4] = {1, 0, 1, 0};
  std::vector<uint8_t> element(2 * 16 * 16, 1);
  for (int r = 0; r < 16; ++r) element[static_cast<size_t>(256 + r * 16 + 3)] = 0;  // key 3
  sparse_layout* user = nullptr;
  REQUIRE(sparse_layout_create_from_blocks(n, 16, 1, block_mask, element.data(), 1, &user) ==
          SPARSE_OK);
  LayoutPtr user_ptr(user);
  std::vector<uint8_t> row(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    REQUIRE(sparse_layout_row_mask(user, 0, i, row.data(), row.size()) == SPARSE_OK);
    for (int64_t j = 0; j < n; ++j) {
      const bool want = j < 16 && j <= i && !(i >= 16 && j == 3);
      CHECK(bool(row[static_cast<size_t>(j)]) == want);
    }
  }
}

TEST_CASE("bad layout arguments give their error and a message") {
  LayoutPtr layout;
  auto expect = [&](sparse_status status, const char* fragment) {
    CHECK(status == SPARSE_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE(std::string(sparse_last_error()).find(fragment) != std::string::npos,
                  sparse_last_error());
    CHECK(layout == nullptr);
  };
  expect(support::make_layout({make(SPARSE_PATTERN_DENSE)}, 0, 64, 1, layout), "seq_len");
  expect(support::make_layout({make(SPARSE_PATTERN_DENSE)}, 100, 48, 1, layout), "block_size");
  expect(support::make_layout({make(SPARSE_PATTERN_DENSE)}, 100, 64, 0, layout), "num_heads");
  expect(support::make_layout({make(SPARSE_PATTERN_STRIDED_ROW, 101)}, 100, 64, 1, layout),
         "larger than seq_len");
  expect(support::make_layout({make(SPARSE_PATTERN_STRIDED_ROW, 0)}, 100, 64, 1, layout), "stride");
  expect(support::make_layout({make(SPARSE_PATTERN_FIXED_SUMMARY, 16, 17)}, 100, 64, 1, layout),
         "summary");
  expect(support::make_layout({make(SPARSE_PATTERN_LOCAL, 0)}, 100, 64, 1, layout), "window");
  expect(support::make_layout({make(SPARSE_PATTERN_DENSE, 0, 0, 2)}, 100, 64, 2, layout), "head");
  Pattern lf = make(SPARSE_PATTERN_LONGFORMER, 4);
  lf.globals.assign(11, 0);
  expect(support::make_layout({lf}, 10, 16, 1, layout), "too many global tokens");
  lf.globals = {10};
  expect(support::make_layout({lf}, 10, 16, 1, layout), "global_tokens[0]");
  Pattern bb = make(SPARSE_PATTERN_BIGBIRD, 4);
  bb.random_blocks = 5;
  expect(support::make_layout({bb}, 64, 16, 1, layout), "random_blocks");
  // Sizes whose arithmetic overflows int64_t are refused, not wrapped: seq_len + block_size when
  // counting blocks, summary * summary_variants.
  const int64_t max = std::numeric_limits<int64_t>::max();
  expect(support::make_layout({make(SPARSE_PATTERN_DENSE)}, max, 64, 1, layout), "seq_len");
  Pattern fs = make(SPARSE_PATTERN_FIXED_SUMMARY, int64_t{1} << 37, int64_t{1} << 37);
  fs.variants = 1 << 27;  // 2^37 * 2^27 = 2^64 wraps to 0
  expect(support::make_layout({fs}, int64_t{1} << 37, 128, 1, layout), "summary_variants");
  // Ten million heads of one pattern: their tables are bounded by the memory limit before they
  // are allocated.
  REQUIRE(::setenv("SPARSE_MEMORY_LIMIT", "64M", 1) == 0);
  CHECK(support::make_layout({make(SPARSE_PATTERN_DENSE)}, 16, 16, 10000000, layout) ==
        SPARSE_ERR_OUT_OF_MEMORY);
  CHECK(std::string(sparse_last_error()).find("num_heads = 10000000") != std::string::npos);
  CHECK(layout == nullptr);
  // 2^31 - 1 block rows, and a head that no pattern names: its rows have no block, so counting
  // blocks against the limit ran through all of them (seconds; minutes under the sanitizers)
  // before the per-row tables (32 GiB per head) were refused.
  CHECK(support::make_layout({make(SPARSE_PATTERN_LOCAL, 16, 0, 0)}, 16 * ((int64_t{1} << 31) - 1),
                             16, 2, layout) == SPARSE_ERR_OUT_OF_MEMORY);
  CHECK(std::string(sparse_last_error()).find("2147483647 block rows") != std::string::npos);
  CHECK(layout == nullptr);
  REQUIRE(::unsetenv("SPARSE_MEMORY_LIMIT") == 0);
  const uint8_t one_block = 1;
  sparse_layout* blocks = nullptr;
  CHECK(sparse_layout_create_from_blocks(max, 16, 1, &one_block, nullptr, 0, &blocks) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("seq_len") != std::string::npos);
  CHECK(blocks == nullptr);

  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = 10;
  sparse_layout* raw = reinterpret_cast<sparse_layout*>(0x1);
  CHECK(sparse_layout_create(&desc, &raw) == SPARSE_ERR_INVALID_ARGUMENT);  // patterns NULL
  CHECK(raw == nullptr);
  CHECK(sparse_layout_create(nullptr, &raw) == SPARSE_ERR_INVALID_ARGUMENT);
  sparse_pattern p;
  CHECK(sparse_pattern_default(&p, static_cast<sparse_pattern_kind>(77)) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  sparse_pattern_kind kind;
  CHECK(sparse_pattern_kind_from_name("strided_column", &kind) == SPARSE_OK);
  CHECK(kind == SPARSE_PATTERN_STRIDED_COLUMN);
  CHECK(sparse_pattern_kind_from_name("triangle", &kind) == SPARSE_ERR_INVALID_ARGUMENT);
  {  // the message lists every name that would have worked
    const std::string message = sparse_last_error();
    CHECK(message.find("\"triangle\"") != std::string::npos);
    for (int k = SPARSE_PATTERN_DENSE; k <= SPARSE_PATTERN_BIGBIRD; ++k)
      CHECK_MESSAGE(message.find(sparse_pattern_kind_name(static_cast<sparse_pattern_kind>(k))) !=
                        std::string::npos,
                    message);
  }
  CHECK(sparse_layout_get_stats(nullptr, 0, nullptr) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_layout_create_from_blocks(10, 16, 1, nullptr, nullptr, 1, &raw) ==
        SPARSE_ERR_INVALID_ARGUMENT);

  REQUIRE(support::make_layout({make(SPARSE_PATTERN_DENSE)}, 10, 16, 1, layout) == SPARSE_OK);
  std::vector<uint8_t> row(10);
  CHECK(sparse_layout_row_mask(layout.get(), 1, 0, row.data(), row.size()) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_layout_row_mask(layout.get(), 0, 10, row.data(), row.size()) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_layout_row_mask(layout.get(), 0, 0, row.data(), 9) == SPARSE_ERR_BUFFER_TOO_SMALL);
  sparse_layout_stats st;
  st.struct_size = 8;
  CHECK(sparse_layout_get_stats(layout.get(), 0, &st) == SPARSE_ERR_INVALID_ARGUMENT);
}
