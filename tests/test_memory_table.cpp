// The memory table's formula against the figures printed in the paper, and its sparse columns
// against block counts worked out by hand.
#include <doctest/doctest.h>

#include "memory_table.hpp"

TEST_CASE("n^2 x 4 heads x 4 bytes (x 64 layers) reproduces every printed figure") {
  const auto rows = repro::paper_memory_rows();
  REQUIRE(rows.size() == 4);
  // Printed precision: "1.0 GB" has one decimal, "16 MB" none, and so on.
  const int stored_decimals[4] = {1, 1, 0, 0};
  const int recomputed_decimals[4] = {0, 0, 1, 1};
  for (size_t r = 0; r < rows.size(); ++r) {
    CAPTURE(rows[r].data);
    const double one = repro::dense_attention_bytes_one_layer(rows[r].n);
    CHECK(repro::matches_paper_figure(one * 64, rows[r].paper_stored_bytes, stored_decimals[r]));
    CHECK(repro::matches_paper_figure(one, rows[r].paper_recomputed_bytes, recomputed_decimals[r]));
  }
  // Exact values: 3072^2 * 16 = 150,994,944 bytes; 24,000^2 * 16 * 64 = 589,824,000,000.
  CHECK(repro::dense_attention_bytes_one_layer(3072) == 150994944.0);
  CHECK(repro::dense_attention_bytes_one_layer(24000) * 64 == 589824000000.0);
  // A wrong formula (one head) must not match.
  CHECK_FALSE(
      repro::matches_paper_figure(repro::dense_attention_bytes_one_layer(3072) / 4, 151e6, 0));
}

TEST_CASE("sparse columns count computed blocks") {
  const auto table = repro::memory_table_json(true, 64);
  // CIFAR-10, strided l = 96, block 64, n = 3072 (48 blocks): the row head touches the diagonal
  // and the previous two blocks (i - 96 reaches back two blocks from a block's first row);
  // the transposed column head has chunks of 32 rows, so each 64-block holds two chunks:
  // 48 diagonal blocks. Row head: 1 + 2 + 46 * 3 = 141 blocks. Two heads of each type.
  const auto& cifar = table["rows"][1]["sparse"];
  const double blocks = 141 + 48;
  CHECK(cifar["sparse_recomputed_bytes"].get<double>() ==
        doctest::Approx(2 * blocks * 64 * 64 * 4));
  CHECK(table["rows"][1]["matches_paper"].get<bool>());
}
