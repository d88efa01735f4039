// The CPU operations of the model against independent naive implementations (long double, plain
// formulas) and their backward passes against central finite differences in double precision.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "libsparse/cuda/model_launch.hpp"
#include "ops/ops.hpp"

using namespace sparse;

namespace {

using LD = long double;

std::vector<double> randn(size_t n, std::mt19937_64& rng, double std = 1.0) {
  std::normal_distribution<double> d(0.0, std);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

// Central differences of f with respect to every element of x (x is restored).
std::vector<double> numeric_grad(std::vector<double>& x, const std::function<double()>& f,
                                 double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f();
    x[i] = saved - h;
    const double down = f();
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// max |a - b| / (atol + rtol |b|) <= 1, reporting the first mismatch.
void check_close(const std::vector<double>& a, const std::vector<double>& b, double atol,
                 double rtol, const char* what) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::abs(a[i] - b[i]) > atol + rtol * std::abs(b[i])) {
      FAIL_CHECK(what << "[" << i << "]: " << a[i] << " vs expected " << b[i]);
      return;
    }
  }
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("layer norm matches the formula and its gradients match finite differences") {
  std::mt19937_64 rng(1);
  const int64_t rows = 5, dim = 7;
  auto x = randn(rows * dim, rng, 2.0), gamma = randn(dim, rng), beta = randn(dim, rng);
  const auto dy = randn(rows * dim, rng);
  std::vector<double> y(rows * dim), mean(rows), rstd(rows);
  ops::layer_norm_forward(x.data(), gamma.data(), beta.data(), rows, dim, 1e-5, y.data(),
                          mean.data(), rstd.data());
  std::vector<double> expect(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    LD m = 0, v = 0;
    for (int64_t c = 0; c < dim; ++c) m += x[r * dim + c];
    m /= dim;
    for (int64_t c = 0; c < dim; ++c) v += (x[r * dim + c] - m) * (x[r * dim + c] - m);
    v /= dim;
    for (int64_t c = 0; c < dim; ++c)
      expect[r * dim + c] =
          static_cast<double>((x[r * dim + c] - m) / std::sqrt(v + 1e-5L) * gamma[c] + beta[c]);
  }
  check_close(y, expect, 1e-12, 1e-12, "y");

  auto loss = [&] {
    std::vector<double> yy(rows * dim), mm(rows), ss(rows);
    ops::layer_norm_forward(x.data(), gamma.data(), beta.data(), rows, dim, 1e-5, yy.data(),
                            mm.data(), ss.data());
    return dot(yy, dy);
  };
  std::vector<double> dx(rows * dim), dgamma(dim, 0.5), dbeta(dim, -0.25);
  ops::layer_norm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), rows, dim,
                           dx.data(), dgamma.data(), dbeta.data());
  check_close(dx, numeric_grad(x, loss), 1e-7, 1e-6, "dx");
  auto ng = numeric_grad(gamma, loss), nb = numeric_grad(beta, loss);
  for (int64_t c = 0; c < dim; ++c) {  // accumulated onto the initial values
    ng[c] += 0.5;
    nb[c] -= 0.25;
  }
  check_close(dgamma, ng, 1e-7, 1e-6, "dgamma");
  check_close(dbeta, nb, 1e-7, 1e-6, "dbeta");
}

TEST_CASE("linear layers match triple loops and finite differences") {
  std::mt19937_64 rng(2);
  const int64_t rows = 6, in = 5, out = 4;
  auto x = randn(rows * in, rng), w = randn(in * out, rng), b = randn(out, rng);
  const auto dy = randn(rows * out, rng);
  std::vector<double> y(rows * out);
  ops::linear_forward(x.data(), w.data(), b.data(), rows, in, out, y.data());
  std::vector<double> expect(rows * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      LD s = b[o];
      for (int64_t i = 0; i < in; ++i) s += static_cast<LD>(x[r * in + i]) * w[i * out + o];
      expect[r * out + o] = static_cast<double>(s);
    }
  check_close(y, expect, 1e-12, 1e-12, "y");
  auto loss = [&] {
    std::vector<double> yy(rows * out);
    ops::linear_forward(x.data(), w.data(), b.data(), rows, in, out, yy.data());
    return dot(yy, dy);
  };
  std::vector<double> dx(rows * in, 3.0), dw(in * out, 0.0), db(out, 0.0);
  ops::linear_backward(dy.data(), x.data(), w.data(), rows, in, out, dx.data(), false, dw.data(),
                       db.data());
  check_close(dx, numeric_grad(x, loss), 1e-7, 1e-6, "dx");
  check_close(dw, numeric_grad(w, loss), 1e-7, 1e-6, "dw");
  check_close(db, numeric_grad(b, loss), 1e-7, 1e-6, "db");
  // accumulate_dx adds to what is there.
  std::vector<double> dx2(rows * in, 1.0), dw2(in * out, 0.0);
  ops::linear_backward(dy.data(), x.data(), w.data(), rows, in, out, dx2.data(), true, dw2.data(),
                       static_cast<double*>(nullptr));
  for (size_t i = 0; i < dx.size(); ++i) CHECK(dx2[i] == doctest::Approx(dx[i] + 1.0));

  // The transposed form (tied output embedding): y = x w^T, w [out, in].
  auto wt = randn(out * in, rng);
  auto loss_t = [&] {
    std::vector<double> yy(rows * out);
    ops::linear_transposed_forward(x.data(), wt.data(), rows, in, out, yy.data());
    return dot(yy, dy);
  };
  std::vector<double> yt(rows * out);
  ops::linear_transposed_forward(x.data(), wt.data(), rows, in, out, yt.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      LD s = 0;
      for (int64_t i = 0; i < in; ++i) s += static_cast<LD>(x[r * in + i]) * wt[o * in + i];
      CHECK(yt[r * out + o] == doctest::Approx(static_cast<double>(s)).epsilon(1e-12));
    }
  std::vector<double> dxt(rows * in), dwt(out * in, 0.0);
  ops::linear_transposed_backward(dy.data(), x.data(), wt.data(), rows, in, out, dxt.data(),
                                  dwt.data());
  check_close(dxt, numeric_grad(x, loss_t), 1e-7, 1e-6, "dx (transposed)");
  check_close(dwt, numeric_grad(wt, loss_t), 1e-7, 1e-6, "dw (transposed)");
}

TEST_CASE("GELU is x * sigmoid(1.702 x) with the right derivative") {
  std::mt19937_64 rng(3);
  auto x = randn(50, rng, 3.0);
  const auto dy = randn(50, rng);
  std::vector<double> y(50), dx(50);
  ops::gelu_forward(x.data(), 50, y.data());
  for (size_t i = 0; i < x.size(); ++i)
    CHECK(y[i] == doctest::Approx(x[i] / (1.0 + std::exp(-1.702 * x[i]))).epsilon(1e-14));
  ops::gelu_backward(x.data(), dy.data(), 50, dx.data());
  auto loss = [&] {
    std::vector<double> yy(50);
    ops::gelu_forward(x.data(), 50, yy.data());
    return dot(yy, dy);
  };
  check_close(dx, numeric_grad(x, loss), 1e-7, 1e-6, "dx");
  // The float instance agrees with the double one.
  std::vector<float> xf(x.begin(), x.end()), yf(50);
  ops::gelu_forward(xf.data(), 50, yf.data());
  for (size_t i = 0; i < x.size(); ++i) CHECK(yf[i] == doctest::Approx(y[i]).epsilon(1e-5));
}

TEST_CASE("embeddings shift the input right and add one position table per coordinate") {
  std::mt19937_64 rng(4);
  const int64_t batch = 2, seq = 12, dim = 3;
  ops::PositionShape shape;
  shape.num_dims = 3;  // 2 rows x 3 columns x 2 channels
  shape.sizes[0] = 2;
  shape.sizes[1] = 3;
  shape.sizes[2] = 2;
  std::vector<uint8_t> tokens(batch * seq);
  for (auto& t : tokens) t = static_cast<uint8_t>(rng() % 256);
  auto table = randn(256 * dim, rng), start = randn(dim, rng);
  std::vector<std::vector<double>> pos;
  for (int k = 0; k < 3; ++k) pos.push_back(randn(shape.sizes[k] * dim, rng));
  const double* pos_ptr[3] = {pos[0].data(), pos[1].data(), pos[2].data()};
  std::vector<double> h(batch * seq * dim);
  ops::embedding_forward(tokens.data(), batch, seq, dim, table.data(), start.data(), pos_ptr, shape,
                         h.data());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      const int64_t row = t / 6, col = (t / 2) % 3, ch = t % 2;  // raster order, channel last
      for (int64_t c = 0; c < dim; ++c) {
        const double tok = t == 0 ? start[c] : table[tokens[b * seq + t - 1] * dim + c];
        const double e = tok + pos[0][row * dim + c] + pos[1][col * dim + c] + pos[2][ch * dim + c];
        CHECK(h[(b * seq + t) * dim + c] == doctest::Approx(e).epsilon(1e-14));
      }
    }
  const auto dh = randn(h.size(), rng);
  std::vector<double> dtable(table.size(), 0.0), dstart(dim, 0.0);
  std::vector<std::vector<double>> dpos;
  for (int k = 0; k < 3; ++k) dpos.emplace_back(pos[k].size(), 0.0);
  double* dpos_ptr[3] = {dpos[0].data(), dpos[1].data(), dpos[2].data()};
  ops::embedding_backward(tokens.data(), batch, seq, dim, dh.data(), shape, dtable.data(),
                          dstart.data(), dpos_ptr);
  auto loss = [&] {
    std::vector<double> hh(h.size());
    ops::embedding_forward(tokens.data(), batch, seq, dim, table.data(), start.data(), pos_ptr,
                           shape, hh.data());
    return dot(hh, dh);
  };
  check_close(dtable, numeric_grad(table, loss), 1e-7, 1e-6, "dtable");
  check_close(dstart, numeric_grad(start, loss), 1e-7, 1e-6, "dstart");
  for (int k = 0; k < 3; ++k) check_close(dpos[k], numeric_grad(pos[k], loss), 1e-7, 1e-6, "dpos");
}

TEST_CASE("dropout masks are reproducible from the seed and have the right rate") {
  const int64_t n = 200000;
  std::vector<double> x(n, 1.0), y(n), y2(n), dx(n);
  const double p = 0.25;
  ops::dropout_forward(x.data(), n, p, 42, y.data());
  ops::dropout_forward(x.data(), n, p, 42, y2.data());
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    CHECK_MESSAGE(y[i] == y2[i], "index " << i);
    if (y[i] != 0) {
      ++kept;
      CHECK(y[i] == doctest::Approx(1.0 / (1.0 - p)));
    }
    if (y[i] != y2[i]) break;
  }
  // Binomial(n, 0.75): the standard deviation of the kept share is ~0.001.
  CHECK(static_cast<double>(kept) / n == doctest::Approx(0.75).epsilon(0.01));
  // The backward pass applies the same mask and scale.
  std::vector<double> dy(n, 2.0);
  ops::dropout_backward(dy.data(), n, p, 42, dx.data());
  for (int64_t i = 0; i < n; i += 97) CHECK(dx[i] == 2.0 * y[i]);
  // Another seed gives another mask; p = 0 is the identity.
  ops::dropout_forward(x.data(), n, p, 43, y2.data());
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += (y[i] != y2[i]);
  CHECK(differ > n / 4);
  ops::dropout_forward(x.data(), n, 0.0, 42, y2.data());
  for (int64_t i = 0; i < n; i += 101) CHECK(y2[i] == 1.0);
}

TEST_CASE("softmax cross-entropy is in nats and its gradient matches finite differences") {
  std::mt19937_64 rng(5);
  const int64_t rows = 4, vocab = 256;
  auto logits = randn(rows * vocab, rng, 3.0);
  std::vector<uint8_t> targets = {0, 17, 255, 128};
  std::vector<double> dlogits(rows * vocab);
  const double loss =
      ops::softmax_cross_entropy(logits.data(), targets.data(), rows, vocab, 0.5, dlogits.data());
  LD expect = 0;
  for (int64_t r = 0; r < rows; ++r) {
    LD sum = 0;
    for (int64_t c = 0; c < vocab; ++c) sum += std::exp(static_cast<LD>(logits[r * vocab + c]));
    expect += std::log(sum) - logits[r * vocab + targets[r]];
  }
  CHECK(loss == doctest::Approx(static_cast<double>(expect)).epsilon(1e-13));
  // Uniform logits cost ln 256 nats (8 bits) per row.
  std::vector<double> zeros(rows * vocab, 0.0);
  CHECK(ops::softmax_cross_entropy(zeros.data(), targets.data(), rows, vocab, 1.0,
                                   static_cast<double*>(nullptr)) ==
        doctest::Approx(rows * std::log(256.0)));
  auto f = [&] {
    return 0.5 * ops::softmax_cross_entropy(logits.data(), targets.data(), rows, vocab, 0.0,
                                            static_cast<double*>(nullptr));
  };
  check_close(dlogits, numeric_grad(logits, f), 1e-8, 1e-6, "dlogits");
}

TEST_CASE("attention over key lists matches dense masked attention and finite differences") {
  std::mt19937_64 rng(6);
  const int64_t batch = 2, n = 9, heads = 2, dqk = 3, dv = 4;
  // Head 0: causal window of 3; head 1: every other key (and query 4 has no key).
  std::vector<std::vector<int64_t>> ptr(heads, std::vector<int64_t>(n + 1, 0));
  std::vector<std::vector<int32_t>> keys(heads);
  std::vector<std::vector<std::vector<bool>>> mask(
      heads, std::vector<std::vector<bool>>(n, std::vector<bool>(n)));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        const bool a = h == 0 ? (i - j < 3) : ((i - j) % 2 == 0 && i != 4);
        mask[h][i][j] = a;
        if (a) keys[h].push_back(static_cast<int32_t>(j));
      }
      ptr[h][i + 1] = static_cast<int64_t>(keys[h].size());
    }
  const int64_t* ptrs[2] = {ptr[0].data(), ptr[1].data()};
  const int32_t* keyp[2] = {keys[0].data(), keys[1].data()};
  ops::KeyLists lists;
  lists.seq = n;
  lists.heads = heads;
  lists.key_ptr = ptrs;
  lists.keys = keyp;
  auto q = randn(batch * n * heads * dqk, rng), k = randn(batch * n * heads * dqk, rng),
       v = randn(batch * n * heads * dv, rng);
  const double scale = 0.7;
  std::vector<double> out(batch * n * heads * dv), lse(batch * heads * n);
  ops::listed_attention_forward(lists, batch, dqk, dv, scale, q.data(), k.data(), v.data(),
                                out.data(), lse.data());
  // Dense reference: softmax over all j with masked scores set to -inf.
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i) {
        std::vector<LD> s(n, -INFINITY);
        LD m = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          if (!mask[h][i][j]) continue;
          LD d = 0;
          for (int64_t c = 0; c < dqk; ++c)
            d += static_cast<LD>(q[((b * n + i) * heads + h) * dqk + c]) *
                 k[((b * n + j) * heads + h) * dqk + c];
          s[j] = d * scale;
          m = std::max(m, s[j]);
        }
        LD sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += mask[h][i][j] ? std::exp(s[j] - m) : 0;
        for (int64_t c = 0; c < dv; ++c) {
          LD o = 0;
          for (int64_t j = 0; j < n; ++j)
            if (mask[h][i][j])
              o += std::exp(s[j] - m) / sum * v[((b * n + j) * heads + h) * dv + c];
          CHECK(out[((b * n + i) * heads + h) * dv + c] ==
                doctest::Approx(static_cast<double>(sum > 0 ? o : 0)).epsilon(1e-12));
        }
        if (sum > 0)
          CHECK(lse[(b * heads + h) * n + i] ==
                doctest::Approx(static_cast<double>(m + std::log(sum))));
        else
          CHECK(std::isinf(lse[(b * heads + h) * n + i]));
      }
  const auto dout = randn(out.size(), rng);
  std::vector<double> dq(q.size()), dk(k.size()), dvv(v.size());
  ops::listed_attention_backward(lists, batch, dqk, dv, scale, q.data(), k.data(), v.data(),
                                 out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                                 dvv.data());
  auto loss = [&] {
    std::vector<double> o(out.size()), l(lse.size());
    ops::listed_attention_forward(lists, batch, dqk, dv, scale, q.data(), k.data(), v.data(),
                                  o.data(), l.data());
    return dot(o, dout);
  };
  check_close(dq, numeric_grad(q, loss), 1e-7, 1e-6, "dq");
  check_close(dk, numeric_grad(k, loss), 1e-7, 1e-6, "dk");
  check_close(dvv, numeric_grad(v, loss), 1e-7, 1e-6, "dv");
}

// The CUDA column reductions' grid (host arithmetic, checked here without a GPU): every row and
// column covered exactly once by chunks of kColumnChunk rows and blocks of 256 columns, within
// CUDA's limits (gridDim.y <= 65535) up to the audio preset's 65536 positions x 128 sequences.
TEST_CASE("the CUDA column sums' grid covers the rows within the grid limits") {
  namespace mk = sparse::cuda::model_ops;
  const int64_t block = 256;
  for (int64_t rows : {int64_t{1}, int64_t{127}, int64_t{128}, int64_t{129}, int64_t{12288} * 16,
                       int64_t{65536} * 128, int64_t{65536} * 1024})
    for (int64_t cols : {int64_t{1}, int64_t{256}, int64_t{257}, int64_t{2048}, int64_t{8192}}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const mk::Grid2 g = mk::column_partials_grid(rows, cols, block);
      CHECK(g.x <= 2147483647);
      CHECK(g.y <= 65535);
      CHECK(mk::grid_fits(g));
      const int64_t chunks = rows / 128 + (rows % 128 != 0 ? 1 : 0);
      const int64_t col_blocks = cols / block + (cols % block != 0 ? 1 : 0);
      CHECK(g.x == chunks);  // column_partials_kernel reads the chunk from blockIdx.x
      CHECK(g.y == col_blocks);
      CHECK(mk::column_scratch(rows, cols) == chunks * cols);
    }
}
