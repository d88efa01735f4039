// The model configurations of the paper's formulas and of OpenAI's released code, through the C
// ABI: which output positions a one-layer model lets one input token reach (changed by a
// perturbation, compared with token-level sets written out here), and OpenAI's 'fixed' heads
// (block + summary columns with per-head offsets, num_verts) key by key.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "sparse/sparse.h"

namespace {

struct Ctx {
  sparse_context* ctx = nullptr;
  Ctx() {
    sparse_settings s;
    sparse_settings_default(&s);
    s.backend = SPARSE_BACKEND_CPU;
    s.num_threads = 1;
    REQUIRE(sparse_context_create(&s, &ctx) == SPARSE_OK);
  }
  ~Ctx() { sparse_context_destroy(ctx); }
};

struct Model {
  sparse_model* m = nullptr;
  ~Model() { sparse_model_destroy(m); }
};

// allowed(head, i, j): does query i of `head` attend to key j.
using KeySet = std::function<bool(int, int64_t, int64_t)>;

// The token-level sets, each written from its own source's wording.
bool paper_strided_row(int64_t l, int64_t i, int64_t j) {  // paper, A(1)_i = {t, t + 1, ..., i}
  const int64_t t = i - l > 0 ? i - l : 0;                 // for t = max(0, i - l)
  return t <= j && j <= i;
}
bool openai_local(int64_t l, int64_t i, int64_t j) {  // band of width l, the query included
  return j <= i && i - j <= l - 1;
}
bool strided_column(int64_t l, int64_t i, int64_t j) { return j <= i && (i - j) % l == 0; }
bool fixed_block(int64_t l, int64_t i, int64_t j) { return j <= i && j / l == i / l; }
// Summary columns of offset group v: in every window [s, s + l) of the stride, the c positions
// that end c * v positions before the window's end.
bool fixed_summary(int64_t l, int64_t c, int64_t v, int64_t i, int64_t j) {
  if (j > i) return false;
  const int64_t s = (j / l) * l;
  const int64_t last = s + l - 1 - c * v;  // the group's last position
  return j <= last && j > last - c;
}

// For a one-layer model, token p enters the model at position p + 1 (inputs are shifted right
// behind the start token), and the prediction at position i reads the inputs at the keys its
// heads attend to and at i itself (the residual stream). So the bits of token i (i != p, whose
// target changes too) change exactly when p + 1 is one of those positions.
void check_reach(const sparse_model_config& config, const KeySet& allowed,
                 const std::vector<int64_t>& positions, const char* what) {
  CAPTURE(what);
  Ctx ctx;
  Model model;
  REQUIRE_MESSAGE(sparse_model_create(ctx.ctx, &config, nullptr, &model.m) == SPARSE_OK,
                  sparse_last_error());
  const int64_t n = config.seq_len;
  const int64_t batch = static_cast<int64_t>(positions.size()) + 1;
  std::mt19937_64 rng(11);
  std::vector<uint8_t> clean(static_cast<size_t>(n));
  for (auto& t : clean) t = static_cast<uint8_t>(rng() % 256);
  std::vector<uint8_t> tokens;
  for (int64_t b = 0; b < batch; ++b) tokens.insert(tokens.end(), clean.begin(), clean.end());
  for (size_t k = 0; k < positions.size(); ++k) {
    uint8_t& t = tokens[(k + 1) * static_cast<size_t>(n) + static_cast<size_t>(positions[k])];
    t = static_cast<uint8_t>(t ^ 0x5a);
  }
  std::vector<double> bits(static_cast<size_t>(batch * n));
  REQUIRE(sparse_model_token_bits(model.m, tokens.data(), batch, bits.data(), bits.size()) ==
          SPARSE_OK);
  int64_t mismatches = 0;
  for (size_t k = 0; k < positions.size(); ++k) {
    const int64_t p = positions[k];
    int64_t reached = 0, expected_reached = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (i == p) continue;
      bool expect = i == p + 1;
      for (int h = 0; h < config.num_heads && !expect; ++h) expect = allowed(h, i, p + 1);
      const double before = bits[static_cast<size_t>(i)];
      const double after = bits[(k + 1) * static_cast<size_t>(n) + static_cast<size_t>(i)];
      const bool changed = before != after;
      reached += changed;
      expected_reached += expect;
      if (changed != expect && ++mismatches <= 5)
        FAIL_CHECK("token " << p << " -> position " << i << ": "
                            << std::string(changed ? "changed" : "unchanged") << ", expected "
                            << std::string(expect ? "changed" : "unchanged") << " (bits " << before
                            << " vs " << after << ")");
    }
    CHECK(reached == expected_reached);
  }
  CHECK(mismatches == 0);
}

sparse_model_config one_layer(sparse_model_attention attention, sparse_head_mode mode,
                              const char* cycle) {
  sparse_model_config c;
  sparse_model_config_default(&c);
  c.seq_len = 72;  // not a multiple of the block size nor of the stride
  c.num_layers = 1;
  c.d_model = 32;
  c.num_heads = 4;
  c.attention = attention;
  c.head_mode = mode;
  c.stride = 10;
  c.summary = 3;
  c.block_size = 16;
  std::strcpy(c.layer_cycle, cycle);
  c.position_shape[0] = 8;
  c.position_shape[1] = 10;
  c.output_init_std = 0.02f;  // a zero output layer would predict uniformly everywhere
  c.seed = 5;
  return c;
}

std::vector<int64_t> every_position(int64_t n) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i + 1 < n; ++i) p.push_back(i);
  return p;
}

}  // namespace

TEST_CASE("one input token reaches exactly the positions of each head kind's key set") {
  const int64_t l = 10, c = 3;
  const auto all = every_position(72);
  SUBCASE("strided row, the paper's formula: l + 1 keys") {
    check_reach(
        one_layer(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_INTERLEAVED, "1"),
        [&](int, int64_t i, int64_t j) { return paper_strided_row(l, i, j); }, all, "strided_row");
  }
  SUBCASE("strided row as OpenAI's local attention: l keys") {
    sparse_model_config cfg =
        one_layer(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_INTERLEAVED, "1");
    cfg.row_attention = SPARSE_ROW_LOCAL;
    check_reach(
        cfg, [&](int, int64_t i, int64_t j) { return openai_local(l, i, j); }, all, "local");
  }
  SUBCASE("strided column") {
    check_reach(
        one_layer(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_INTERLEAVED, "2"),
        [&](int, int64_t i, int64_t j) { return strided_column(l, i, j); }, all, "strided_column");
  }
  SUBCASE("merged local + column (OpenAI's local and strided heads in one)") {
    sparse_model_config cfg = one_layer(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_MERGED, "");
    cfg.row_attention = SPARSE_ROW_LOCAL;
    check_reach(
        cfg,
        [&](int, int64_t i, int64_t j) { return openai_local(l, i, j) || strided_column(l, i, j); },
        all, "merged local+column");
  }
  SUBCASE("multi-head: even heads local, odd heads column") {
    sparse_model_config cfg = one_layer(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_MULTIHEAD, "");
    cfg.row_attention = SPARSE_ROW_LOCAL;
    check_reach(
        cfg,
        [&](int h, int64_t i, int64_t j) {
          return h % 2 == 0 ? openai_local(l, i, j) : strided_column(l, i, j);
        },
        all, "multihead local/column");
  }
  SUBCASE("fixed block") {
    check_reach(
        one_layer(SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_INTERLEAVED, "1"),
        [&](int, int64_t i, int64_t j) { return fixed_block(l, i, j); }, all, "fixed_block");
  }
  SUBCASE("fixed summary, the paper's single offset") {
    check_reach(
        one_layer(SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_INTERLEAVED, "2"),
        [&](int, int64_t i, int64_t j) { return fixed_summary(l, c, 0, i, j); }, all,
        "fixed_summary");
  }
  SUBCASE("OpenAI's fixed: block + summary merged, per-head offsets (num_verts 3)") {
    sparse_model_config cfg = one_layer(SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_MERGED, "");
    cfg.summary_variants = 3;
    check_reach(
        cfg,
        [&](int h, int64_t i, int64_t j) {
          return fixed_block(l, i, j) || fixed_summary(l, c, h % 3, i, j);
        },
        all, "openai fixed");
  }
  SUBCASE("summary heads alone with per-head offsets (multi-head, num_verts 2)") {
    sparse_model_config cfg = one_layer(SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_MULTIHEAD, "");
    cfg.summary_variants = 2;
    check_reach(
        cfg,
        [&](int h, int64_t i, int64_t j) {
          return h % 2 == 0 ? fixed_block(l, i, j) : fixed_summary(l, c, h % 2, i, j);
        },
        all, "multihead fixed");
  }
}

TEST_CASE("cifar10-openai is OpenAI's c10-58m attention; cifar10 keeps the paper's formula") {
  sparse_model_config paper, openai;
  REQUIRE(sparse_model_config_preset("cifar10", &paper) == SPARSE_OK);
  REQUIRE(sparse_model_config_preset("cifar10-openai", &openai) == SPARSE_OK);
  // c10-58m: 128 layers of width 256, 2 heads, cycle "column, row, row, row", l = 96 (one image
  // row), block 32, half-size QK and FF, residual dropout 0.25, zero output projection.
  CHECK(openai.num_layers == 128);
  CHECK(openai.d_model == 256);
  CHECK(openai.num_heads == 2);
  CHECK(openai.stride == 96);
  CHECK(openai.block_size == 32);
  CHECK(std::string(openai.layer_cycle) == "2111");
  CHECK(openai.half_qk == 1);
  CHECK(openai.half_ff == 1);
  CHECK(openai.dropout == 0.25f);
  CHECK(openai.output_init_std == 0.0f);
  CHECK(openai.row_attention == SPARSE_ROW_LOCAL);
  CHECK(paper.row_attention == SPARSE_ROW_STRIDED);
  // Everything else is the same model.
  sparse_model_config same = openai;
  same.row_attention = SPARSE_ROW_STRIDED;
  CHECK(std::memcmp(&same, &paper, sizeof paper) == 0);

  // One layer of each kind at the full n = 3072, width 32: the row layer reaches l = 96
  // positions for OpenAI's preset and l + 1 = 97 for the paper's; the column layer every l-th.
  const int64_t l = 96;
  const std::vector<int64_t> probes = {0, 1, 30, 95, 96, 97, 1500, 2975, 2976, 3000, 3070};
  for (const char* name : {"cifar10", "cifar10-openai"}) {
    sparse_model_config cfg;
    REQUIRE(sparse_model_config_preset(name, &cfg) == SPARSE_OK);
    cfg.num_layers = 1;
    cfg.d_model = 32;
    cfg.output_init_std = 0.02f;
    const bool local = cfg.row_attention == SPARSE_ROW_LOCAL;
    std::strcpy(cfg.layer_cycle, "1");
    check_reach(
        cfg,
        [&](int, int64_t i, int64_t j) {
          return local ? openai_local(l, i, j) : paper_strided_row(l, i, j);
        },
        probes, name);
    std::strcpy(cfg.layer_cycle, "2");
    check_reach(
        cfg, [&](int, int64_t i, int64_t j) { return strided_column(l, i, j); }, probes, name);
  }
}

TEST_CASE("OpenAI's fixed heads: block + summary columns with per-head offsets, key by key") {
  for (int64_t l : {128, 256}) {
    for (int64_t c : {8, 16, 32}) {
      for (int32_t num_verts : {1, 2, 4}) {
        const int64_t n = 3 * l - 40;  // a partial last window
        const int heads = 4;
        CAPTURE(l);
        CAPTURE(c);
        CAPTURE(num_verts);
        sparse_pattern p[2];
        sparse_pattern_default(&p[0], SPARSE_PATTERN_FIXED_BLOCK);
        sparse_pattern_default(&p[1], SPARSE_PATTERN_FIXED_SUMMARY);
        for (auto& q : p) {
          q.stride = l;
          q.summary = c;
        }
        p[1].summary_variants = num_verts;
        sparse_layout_desc d;
        sparse_layout_desc_default(&d);
        d.seq_len = n;
        d.block_size = 32;
        d.num_heads = heads;
        d.patterns = p;
        d.num_patterns = 2;
        sparse_layout* layout = nullptr;
        REQUIRE_MESSAGE(sparse_layout_create(&d, &layout) == SPARSE_OK, sparse_last_error());
        std::vector<uint8_t> row(static_cast<size_t>(n));
        int64_t mismatches = 0;
        for (int h = 0; h < heads; ++h)
          for (int64_t i = 0; i < n; ++i) {
            REQUIRE(sparse_layout_row_mask(layout, h, i, row.data(), row.size()) == SPARSE_OK);
            for (int64_t j = 0; j < n; ++j) {
              const bool want = fixed_block(l, i, j) || fixed_summary(l, c, h % num_verts, i, j);
              if ((row[static_cast<size_t>(j)] != 0) != want && ++mismatches <= 3)
                FAIL_CHECK("head " << h << " query " << i << " key " << j);
            }
          }
        sparse_layout_destroy(layout);
        CHECK(mismatches == 0);
      }
    }
  }
}

TEST_CASE("c10-58m's local layout: 290,352 keys per head in 378 blocks (n 3072, l 96, block 32)") {
  sparse_pattern p;
  sparse_pattern_default(&p, SPARSE_PATTERN_LOCAL);
  p.window = 96;
  sparse_layout_desc d;
  sparse_layout_desc_default(&d);
  d.seq_len = 3072;
  d.block_size = 32;
  d.num_heads = 1;
  d.patterns = &p;
  d.num_patterns = 1;
  sparse_layout* layout = nullptr;
  REQUIRE(sparse_layout_create(&d, &layout) == SPARSE_OK);
  sparse_layout_stats st;
  st.struct_size = sizeof st;
  REQUIRE(sparse_layout_get_stats(layout, 0, &st) == SPARSE_OK);
  sparse_layout_destroy(layout);
  // sum over i of min(i + 1, 96) = 96 * 97 / 2 + (3072 - 96) * 96; block rows 0-2 hold 1-3
  // blocks, the other 93 four.
  CHECK(st.useful_elements == 96 * 97 / 2 + (3072 - 96) * 96);
  CHECK(st.nnz_blocks == 1 + 2 + 3 + 93 * 4);
}

TEST_CASE("row_attention and summary_variants: validated, kept in checkpoints, old ones load") {
  Ctx ctx;
  sparse_model_config c = one_layer(SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_MERGED, "");
  c.summary_variants = 4;  // 4 * 3 > 10
  Model bad;
  CHECK(sparse_model_create(ctx.ctx, &c, nullptr, &bad.m) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("summary_variants") != std::string::npos);
  c.summary_variants = -1;
  CHECK(sparse_model_create(ctx.ctx, &c, nullptr, &bad.m) == SPARSE_ERR_INVALID_ARGUMENT);
  c = one_layer(SPARSE_MODEL_ATTENTION_STRIDED, SPARSE_HEADS_MERGED, "");
  c.row_attention = static_cast<sparse_row_attention>(7);
  CHECK(sparse_model_create(ctx.ctx, &c, nullptr, &bad.m) == SPARSE_ERR_INVALID_ARGUMENT);
  CHECK(std::string(sparse_last_error()).find("row_attention") != std::string::npos);

  // A config from a caller that predates the fields (reserved bytes zero) is the paper's.
  c = one_layer(SPARSE_MODEL_ATTENTION_FIXED, SPARSE_HEADS_MERGED, "");
  c.summary_variants = 0;
  Model old;
  REQUIRE(sparse_model_create(ctx.ctx, &c, nullptr, &old.m) == SPARSE_OK);

  c.summary_variants = 3;
  c.attention = SPARSE_MODEL_ATTENTION_FIXED;
  c.row_attention = SPARSE_ROW_LOCAL;
  Model m;
  REQUIRE(sparse_model_create(ctx.ctx, &c, nullptr, &m.m) == SPARSE_OK);
  const std::string path = "/tmp/sparse_openai_config_" + std::to_string(std::random_device{}());
  REQUIRE(sparse_model_save(m.m, path.c_str()) == SPARSE_OK);
  Model back;
  REQUIRE(sparse_model_load(ctx.ctx, path.c_str(), &back.m) == SPARSE_OK);
  sparse_model_config got;
  REQUIRE(sparse_model_get_config(back.m, &got) == SPARSE_OK);
  CHECK(got.summary_variants == 3);
  CHECK(got.row_attention == SPARSE_ROW_LOCAL);
  std::remove(path.c_str());
}
