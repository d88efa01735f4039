// sparse_experimental_model_layouts against the paper's factorized attention written out here
// token by token (naive_attention.hpp's predicates, paired into heads and layers by hand): for
// dense, strided (row and local row heads) and fixed models in every head mode, each layer's
// layout lets every head see exactly the keys the paper's definition gives it, and the strided
// column heads are computed in the transposed order the model uses.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "naive_attention.hpp"
#include "sparse/experimental.h"
#include "sparse/sparse.h"

namespace {

struct Case {
  const char* name;
  sparse_model_attention attention;
  sparse_head_mode head_mode;
  sparse_row_attention row;
  const char* cycle;
  int32_t summary_variants;
};

// The keys query i of `head` in `layer` may see, from the paper's definitions: strided pairs a
// row head (the previous l positions and i: l + 1 keys; OpenAI's local row: the last l, i
// included) with a column head (every l-th earlier position); fixed pairs a block head (i's own
// block of l) with a summary head (the last c positions of every block; with v variants, head h
// takes the v-th group of c from the end). Interleaved layers alternate the two by the layer
// cycle ('1' = row / block), merged layers attend to the union in every head, multihead layers
// give even heads the first and odd heads the second.
bool paper_allows(const Case& k, const sparse_model_config& c, int64_t layer, int head, int64_t i,
                  int64_t j) {
  if (j > i) return false;
  const int64_t l = c.stride;
  if (k.attention == SPARSE_MODEL_ATTENTION_DENSE) return true;
  bool first, second;
  if (k.attention == SPARSE_MODEL_ATTENTION_STRIDED) {
    first = k.row == SPARSE_ROW_LOCAL ? i - j < l : i - j <= l;
    second = (i - j) % l == 0;
  } else {
    first = j / l == i / l;
    const int64_t v = head % std::max(1, k.summary_variants);
    second = j % l >= l - c.summary * (v + 1) && j % l < l - c.summary * v;
  }
  switch (k.head_mode) {
    case SPARSE_HEADS_INTERLEAVED: {
      const std::string cycle = k.cycle;
      return cycle[static_cast<size_t>(layer) % cycle.size()] == '1' ? first : second;
    }
    case SPARSE_HEADS_MERGED:
      return first || second;
    case SPARSE_HEADS_MULTIHEAD:
      return head % 2 == 0 ? first : second;
  }
  return false;
}

// Whether `head` of a layer is a pure strided column head (the model computes those in the
// transposed order; a merged head's union is not one).
bool pure_column_head(const Case& k, int64_t layer, int head) {
  if (k.attention != SPARSE_MODEL_ATTENTION_STRIDED) return false;
  if (k.head_mode == SPARSE_HEADS_MULTIHEAD) return head % 2 == 1;
  if (k.head_mode == SPARSE_HEADS_MERGED) return false;
  const std::string cycle = k.cycle;
  return cycle[static_cast<size_t>(layer) % cycle.size()] == '2';
}

using LayoutPtr = std::unique_ptr<sparse_layout, void (*)(sparse_layout*)>;

}  // namespace

TEST_CASE("a model's layouts are the paper's patterns in every layer and head") {
  const Case cases[] = {
      {"dense", SPARSE_MODEL_ATTENTION_DENSE, SPARSE_HEADS_INTERLEAVED, SPARSE_ROW_STRIDED, "12",
       1},
      {"strided interleaved 112", SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_INTERLEAVED,
       SPARSE_ROW_STRIDED, "112", 1},
      {"strided interleaved local rows", SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_INTERLEAVED,
       SPARSE_ROW_LOCAL, "12", 1},
      {"strided merged", SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_MERGED, SPARSE_ROW_STRIDED,
       "12", 1},
      {"strided multihead", SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_MULTIHEAD,
       SPARSE_ROW_STRIDED, "12", 1},
      {"fixed interleaved 21", SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_INTERLEAVED,
       SPARSE_ROW_STRIDED, "21", 1},
      {"fixed interleaved, 2 summary variants", SPARSE_MODEL_ATTENTION_FIXED,
       SPARSE_HEADS_INTERLEAVED, SPARSE_ROW_STRIDED, "12", 2},
      {"fixed merged", SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_MERGED, SPARSE_ROW_STRIDED, "12",
       1},
      {"fixed multihead", SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_MULTIHEAD, SPARSE_ROW_STRIDED,
       "12", 1},
  };
  for (const Case& k : cases) {
    CAPTURE(k.name);
    sparse_model_config c;
    REQUIRE(sparse_model_config_default(&c) == SPARSE_OK);
    c.attention = k.attention;
    c.head_mode = k.head_mode;
    c.row_attention = k.row;
    std::snprintf(c.layer_cycle, sizeof c.layer_cycle, "%s", k.cycle);
    c.summary_variants = k.summary_variants;
    c.num_layers = 4;
    c.seq_len = 96;  // not a multiple of the stride or the block: partial blocks at the end
    c.block_size = 16;
    c.stride = 12;
    c.summary = 3;
    c.num_heads = 4;
    c.d_model = 16;
    c.num_position_dims = 1;
    c.position_shape[0] = c.seq_len;
    const int64_t n = c.seq_len;

    int32_t count = -1;
    std::vector<int32_t> layer_layout(static_cast<size_t>(c.num_layers), -1);
    REQUIRE_MESSAGE(
        sparse_experimental_model_layouts(&c, nullptr, 0, &count, layer_layout.data()) == SPARSE_OK,
        sparse_last_error());
    const bool interleaved =
        k.attention != SPARSE_MODEL_ATTENTION_DENSE && k.head_mode == SPARSE_HEADS_INTERLEAVED;
    CHECK(count == (interleaved ? 2 : 1));
    std::vector<sparse_layout*> raw(3, nullptr);
    REQUIRE(sparse_experimental_model_layouts(&c, raw.data(), 3, &count, layer_layout.data()) ==
            SPARSE_OK);
    CHECK(raw[static_cast<size_t>(count)] == nullptr);  // nothing written past *count
    std::vector<LayoutPtr> layouts;
    for (int32_t i = 0; i < count; ++i) layouts.emplace_back(raw[i], sparse_layout_destroy);

    std::vector<uint8_t> row(static_cast<size_t>(n));
    for (int64_t layer = 0; layer < c.num_layers; ++layer) {
      CAPTURE(layer);
      const int32_t index = layer_layout[static_cast<size_t>(layer)];
      REQUIRE(index >= 0);
      REQUIRE(index < count);
      const sparse_layout* layout = layouts[static_cast<size_t>(index)].get();
      for (int head = 0; head < c.num_heads; ++head) {
        CAPTURE(head);
        sparse_layout_stats st;
        st.struct_size = sizeof st;
        REQUIRE(sparse_layout_get_stats(layout, head, &st) == SPARSE_OK);
        CHECK(st.seq_len == n);
        CHECK(st.block_size == c.block_size);
        CHECK(st.num_heads == c.num_heads);
        CHECK(st.transposed == (pure_column_head(k, layer, head) ? 1 : 0));
        int64_t mismatches = 0;
        for (int64_t i = 0; i < n; ++i) {
          REQUIRE(sparse_layout_row_mask(layout, head, i, row.data(), row.size()) == SPARSE_OK);
          for (int64_t j = 0; j < n; ++j) {
            const bool want = paper_allows(k, c, layer, head, i, j);
            if ((row[static_cast<size_t>(j)] != 0) != want && mismatches++ < 3)
              FAIL_CHECK("query " << i << " key " << j << ": layout "
                                  << int(row[static_cast<size_t>(j)]) << ", paper " << want);
          }
        }
        CHECK(mismatches == 0);
      }
    }
  }
}

TEST_CASE("sparse_experimental_model_layouts: bad arguments and a too small array") {
  sparse_model_config c;
  REQUIRE(sparse_model_config_default(&c) == SPARSE_OK);
  c.seq_len = 64;
  c.stride = 8;
  c.summary = 1;
  c.num_layers = 2;
  c.num_position_dims = 1;
  c.position_shape[0] = 64;
  c.attention = SPARSE_MODEL_ATTENTION_STRIDED;
  c.head_mode = SPARSE_HEADS_INTERLEAVED;
  int32_t count = 0;
  sparse_layout* one[1] = {nullptr};
  int32_t layers[2] = {-1, -1};
  CHECK(sparse_experimental_model_layouts(&c, one, 1, &count, layers) ==
        SPARSE_ERR_BUFFER_TOO_SMALL);
  CHECK(count == 2);
  CHECK(one[0] == nullptr);
  CHECK(layers[0] == -1);
  CHECK(std::string(sparse_last_error()).find("capacity = 1") != std::string::npos);
  CHECK(sparse_experimental_model_layouts(nullptr, one, 1, &count, layers) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_experimental_model_layouts(&c, one, 1, nullptr, layers) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(sparse_experimental_model_layouts(&c, one, -1, &count, layers) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  sparse_model_config bad = c;
  bad.stride = 1000;
  CHECK(sparse_experimental_model_layouts(&bad, nullptr, 0, &count, nullptr) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("stride") != std::string::npos);
  bad = c;
  bad.struct_size = 4;
  CHECK(sparse_experimental_model_layouts(&bad, nullptr, 0, &count, nullptr) ==
        SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("struct_size") != std::string::npos);
}
