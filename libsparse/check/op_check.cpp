// The operation checker (see op_check.hpp).
#include "libsparse/check/op_check.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "libsparse/backend.hpp"
#include "libsparse/error.hpp"
#include "libsparse/layout.hpp"
#include "libsparse/model/buffer.hpp"
#include "libsparse/model/transformer.hpp"
#include "libsparse/random.hpp"
#include "sparse/layout.h"

namespace sparse::check {
namespace {

using model::Buffer;
using Vec = std::vector<double>;
using Outputs = std::vector<std::pair<std::string, Vec>>;

// What an operation's implementation sees: its backend, its table and the helpers that move data
// between host vectors (double) and the backend's memory (T).
template <typename T>
struct Env {
  using Scalar = T;
  Backend* backend = nullptr;
  ModelOps<T>* ops = nullptr;
  bool bench = false;
  double seconds = 0;  // per call, when bench

  Buffer<T> up(const Vec& v) {
    Buffer<T> b(backend, static_cast<int64_t>(v.size()));
    b = std::vector<T>(v.begin(), v.end());
    return b;
  }
  Buffer<uint8_t> up(const std::vector<uint8_t>& v) {
    Buffer<uint8_t> b(backend, static_cast<int64_t>(v.size()));
    b = v;
    return b;
  }
  Buffer<T> zeros(int64_t n) { return Buffer<T>(backend, n); }
  static Vec down(const Buffer<T>& b) {
    const std::vector<T> h = b.to_host();
    return Vec(h.begin(), h.end());
  }
  // Runs the operation once; with bench, repeatedly for about 20 ms and records the time per call
  // (the outputs are then not checked).
  template <typename F>
  void run(F&& f) {
    if (!bench) {
      f();
      return;
    }
    backend->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    int64_t calls = 0;
    double elapsed = 0;
    do {
      f();
      backend->synchronize();
      ++calls;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (elapsed < 0.02 && calls < 10000);
    seconds = elapsed / static_cast<double>(calls);
  }
};

// One check: f32 runs the operation on the checked table, f64 computes the reference on the
// CPU's double path (or on the host). dtype says which table: SPARSE_DTYPE_F32 the backend's
// fp32 operations, SPARSE_DTYPE_BF16 or SPARSE_DTYPE_F16 its mixed-precision ones.
struct Case {
  std::string op, shape;
  std::function<Outputs(Env<float>&)> f32;
  std::function<Outputs(Env<double>&)> f64;
  ModelOp needs = ModelOp::Count;  // ModelOp::Count: an attention kernel
  sparse_dtype dtype = SPARSE_DTYPE_F32;
  bool exact = false;  // the outputs must equal the reference exactly
};

const char* dtype_label(sparse_dtype dtype) {
  return dtype == SPARSE_DTYPE_BF16 ? "bf16" : dtype == SPARSE_DTYPE_F16 ? "f16" : "f32";
}

// Inputs: normal values with standard deviation `scale`, rounded to float so that both paths see
// the same numbers.
struct Inputs {
  uint64_t state;
  Vec normal(int64_t n, double scale = 1.0) {
    Vec v(static_cast<size_t>(n));
    for (double& x : v) x = static_cast<double>(static_cast<float>(scale * sparse::normal(state)));
    return v;
  }
  std::vector<uint8_t> bytes(int64_t n) {
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (auto& x : v) x = static_cast<uint8_t>(splitmix64_next(state) >> 56);
    return v;
  }
};

struct Tolerance {
  double normalised, atol, rtol;
};
constexpr Tolerance kF32{1e-9, 1e-5, 1e-4};
constexpr Tolerance kExact{0, 0, 0};

// Compares one output; appends the verdict to `line` and mismatch lines to `details`.
bool compare(const std::string& name, const Vec& ref, const Vec& out, const Tolerance& tol,
             int max_mismatches, std::string& line, std::vector<std::string>& details) {
  if (ref.size() != out.size()) {
    details.push_back("    " + name + ": " + std::to_string(out.size()) + " values, expected " +
                      std::to_string(ref.size()));
    return false;
  }
  // A log-sum-exp is -inf, by contract, for a query without keys: such an element matches when
  // both sides are -inf and is left out of the error sums. Any other NaN or Inf fails.
  const bool lse = name == "lse";
  auto empty_row = [&](size_t i) {
    return lse && std::isinf(ref[i]) && ref[i] < 0 && out[i] == ref[i];
  };
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (empty_row(i)) continue;
    num += (ref[i] - out[i]) * (ref[i] - out[i]);
    den += ref[i] * ref[i];
  }
  const double rms = ref.empty() ? 0.0 : std::sqrt(den / static_cast<double>(ref.size()));
  const double nerr = den > 0 ? num / den : num;
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (empty_row(i)) continue;
    const double d = std::abs(out[i] - ref[i]);
    const bool ok = std::isfinite(out[i]) && std::isfinite(ref[i]) &&
                    d <= tol.atol * rms + tol.rtol * std::abs(ref[i]);
    if (!ok && bad++ < max_mismatches) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "    %s[%zu]: %.9g, expected %.9g (|diff| %.3g, bound %.3g)",
                    name.c_str(), i, out[i], ref[i], d,
                    tol.atol * rms + tol.rtol * std::abs(ref[i]));
      details.push_back(buf);
    }
  }
  const bool pass = bad == 0 && std::isfinite(nerr) && nerr <= tol.normalised;
  char buf[160];
  std::snprintf(buf, sizeof buf, " %s %.1e", name.c_str(), nerr);
  line += buf;
  if (bad > 0)
    line += " (" + std::to_string(bad) + " elements out of bounds)";
  else if (!pass)
    details.push_back("    " + name + ": normalised error " + std::to_string(nerr) + " > " +
                      std::to_string(tol.normalised));
  return pass;
}

std::string shape_text(std::initializer_list<std::pair<const char*, double>> dims) {
  std::ostringstream s;
  s << "[";
  bool first = true;
  for (const auto& [k, v] : dims) {
    s << (first ? "" : " ") << k << "=" << v;
    first = false;
  }
  return s.str() + "]";
}

// ------------------------------------------------------------------------ the model operations

// The linear operations on given inputs, for the fp32 cases and the mixed-precision ones (which
// run them with rounded inputs on the reference).
// The products' shapes (rows, in, out), for every dtype: one row, odd sizes, and a tile-sized one.
constexpr std::tuple<int64_t, int64_t, int64_t> kLinearShapes[] = {
    {1, 8, 256}, {17, 33, 65}, {96, 128, 256}};

struct LinearShape {
  int64_t rows, in, out;
};

auto linear_forward_op(LinearShape s, Vec x, Vec w, Vec b) {
  return [=](auto& e) -> Outputs {
    auto X = e.up(x), W = e.up(w), B = e.up(b), Y = e.zeros(s.rows * s.out);
    e.run([&] {
      e.ops->linear_forward(X.data(), W.data(), B.data(), s.rows, s.in, s.out, Y.data());
    });
    return {{"y", e.down(Y)}};
  };
}

// dx = dy w^T + dx0, dw = x^T dy and db; with dy_bias non-empty, db sums dy_bias instead of dy
// (in a second call).
auto linear_backward_op(LinearShape s, Vec dy, Vec x, Vec w, Vec dx0, Vec dy_bias = {}) {
  return [=](auto& e) -> Outputs {
    auto X = e.up(x), W = e.up(w), DY = e.up(dy), DX = e.up(dx0);
    auto DW = e.zeros(s.in * s.out), DB = e.zeros(s.out);
    e.run([&] {
      e.ops->linear_backward(DY.data(), X.data(), W.data(), s.rows, s.in, s.out, DX.data(), true,
                             DW.data(), dy_bias.empty() ? DB.data() : nullptr);
    });
    if (!dy_bias.empty()) {
      auto DYB = e.up(dy_bias), unused = e.zeros(s.in * s.out);
      e.ops->linear_backward(DYB.data(), X.data(), W.data(), s.rows, s.in, s.out, nullptr, false,
                             unused.data(), DB.data());
    }
    return {{"dx", e.down(DX)}, {"dw", e.down(DW)}, {"db", e.down(DB)}};
  };
}

auto linear_transposed_op(LinearShape s, Vec x, Vec w, Vec dy) {
  return [=](auto& e) -> Outputs {
    auto X = e.up(x), W = e.up(w), DY = e.up(dy);
    auto Y = e.zeros(s.rows * s.out), DX = e.zeros(s.rows * s.in), DW = e.zeros(s.in * s.out);
    e.run([&] {
      e.ops->linear_transposed_forward(X.data(), W.data(), s.rows, s.in, s.out, Y.data());
      e.ops->linear_transposed_backward(DY.data(), X.data(), W.data(), s.rows, s.in, s.out,
                                        DX.data(), DW.data());
    });
    return {{"y", e.down(Y)}, {"dx", e.down(DX)}, {"dw", e.down(DW)}};
  };
}

void add_model_cases(std::vector<Case>& cases, uint64_t seed) {
  Inputs in{seed};
  auto add = [&](const std::string& op, const std::string& shape, ModelOp needs, auto fn) {
    cases.push_back({op, shape, fn, fn, needs});
  };
  for (const auto& shape_rd : {std::pair<int64_t, int64_t>{1, 8}, {7, 33}, {64, 128}}) {
    const int64_t rows = shape_rd.first, dim = shape_rd.second;
    for (double scale : {1.0, 1e-3}) {
      const Vec x = in.normal(rows * dim, scale), gamma = in.normal(dim), beta = in.normal(dim);
      const Vec dy = in.normal(rows * dim);
      const std::string shape = shape_text({{"rows", rows}, {"dim", dim}, {"scale", scale}});
      add("layer_norm_forward", shape, ModelOp::LayerNorm, [=](auto& e) -> Outputs {
        using T = typename std::decay_t<decltype(e)>::Scalar;
        auto X = e.up(x), G = e.up(gamma), B = e.up(beta);
        auto Y = e.zeros(rows * dim), M = e.zeros(rows), R = e.zeros(rows);
        e.run([&] {
          e.ops->layer_norm_forward(X.data(), G.data(), B.data(), rows, dim, T(1e-5), Y.data(),
                                    M.data(), R.data());
        });
        return {{"y", e.down(Y)}, {"mean", e.down(M)}, {"rstd", e.down(R)}};
      });
      add("layer_norm_backward", shape, ModelOp::LayerNorm, [=](auto& e) -> Outputs {
        using T = typename std::decay_t<decltype(e)>::Scalar;
        auto X = e.up(x), G = e.up(gamma), B = e.up(beta), DY = e.up(dy);
        auto Y = e.zeros(rows * dim), M = e.zeros(rows), R = e.zeros(rows);
        e.ops->layer_norm_forward(X.data(), G.data(), B.data(), rows, dim, T(1e-5), Y.data(),
                                  M.data(), R.data());
        auto DX = e.zeros(rows * dim), DG = e.zeros(dim), DB = e.zeros(dim);
        e.run([&] {
          e.ops->layer_norm_backward(DY.data(), X.data(), G.data(), M.data(), R.data(), rows, dim,
                                     DX.data(), DG.data(), DB.data());
        });
        return {{"dx", e.down(DX)}, {"dgamma", e.down(DG)}, {"dbeta", e.down(DB)}};
      });
    }
  }
  for (const auto& linear : kLinearShapes) {
    const int64_t rows = std::get<0>(linear), nin = std::get<1>(linear), nout = std::get<2>(linear);
    const Vec x = in.normal(rows * nin), w = in.normal(nin * nout, 0.2), b = in.normal(nout);
    const Vec dy = in.normal(rows * nout), dx0 = in.normal(rows * nin);
    const std::string shape = shape_text({{"rows", rows}, {"in", nin}, {"out", nout}});
    const LinearShape s{rows, nin, nout};
    add("linear_forward", shape, ModelOp::Linear, linear_forward_op(s, x, w, b));
    add("linear_backward", shape, ModelOp::Linear, linear_backward_op(s, dy, x, w, dx0));
    add("linear_transposed", shape, ModelOp::Linear, linear_transposed_op(s, x, w, dy));
  }
  for (int64_t n : {1, 1000, 65536}) {
    const Vec x = in.normal(n, 3.0), dy = in.normal(n);
    const std::string shape = shape_text({{"n", static_cast<double>(n)}});
    add("gelu", shape, ModelOp::Gelu, [=](auto& e) -> Outputs {
      auto X = e.up(x), DY = e.up(dy), Y = e.zeros(n), DX = e.zeros(n);
      e.run([&] {
        e.ops->gelu_forward(X.data(), n, Y.data());
        e.ops->gelu_backward(X.data(), DY.data(), n, DX.data());
      });
      return {{"y", e.down(Y)}, {"dx", e.down(DX)}};
    });
    add("elementwise", shape, ModelOp::Elementwise, [=](auto& e) -> Outputs {
      auto X = e.up(x), DY = e.up(dy), Y = e.zeros(n), A = e.up(dy);
      e.run([&] {
        e.ops->add(X.data(), DY.data(), n, Y.data());
        e.ops->accumulate(A.data(), X.data(), n);
      });
      return {{"add", e.down(Y)}, {"accumulate", e.down(A)}};
    });
    add("squared_norm", shape, ModelOp::SquaredNorm, [=](auto& e) -> Outputs {
      auto X = e.up(x);
      double s = 0;
      e.run([&] { s = e.ops->squared_norm(X.data(), n); });
      return {{"sum", Vec{s}}};
    });
    for (double p : {0.0, 0.1, 0.5}) {
      add("dropout", shape_text({{"n", static_cast<double>(n)}, {"p", p}}), ModelOp::Dropout,
          [=](auto& e) -> Outputs {
            auto X = e.up(x), DY = e.up(dy), Y = e.zeros(n), DX = e.zeros(n);
            e.run([&] {
              e.ops->dropout_forward(X.data(), n, p, 77, Y.data());
              e.ops->dropout_backward(DY.data(), n, p, 77, DX.data());
            });
            return {{"y", e.down(Y)}, {"dx", e.down(DX)}};
          });
    }
    for (bool adamw : {false, true}) {
      const Vec w = in.normal(n), g = in.normal(n), m = in.normal(n, 0.1);
      Vec v = in.normal(n, 0.1);
      for (double& t : v) t = t * t;
      std::vector<uint8_t> decay = in.bytes(n);
      for (auto& d : decay) d &= 1;
      ops::AdamStep s;
      s.lr = 0.01f;
      s.beta1 = 0.9f;
      s.beta2 = 0.95f;
      s.c1 = 0.271f;
      s.c2 = 0.142625f;
      s.epsilon = 1e-8f;
      s.weight_decay = 0.1f;
      s.clip = 0.5f;
      s.adamw = adamw;
      add("adam_update", shape_text({{"n", static_cast<double>(n)}, {"adamw", adamw}}),
          ModelOp::AdamUpdate, [=](auto& e) -> Outputs {
            auto W = e.up(w), G = e.up(g), M = e.up(m), V = e.up(v);
            auto D = e.up(decay);
            e.run([&] {
              e.ops->adam_update(W.data(), G.data(), M.data(), V.data(), D.data(), n, s);
            });
            return {{"w", e.down(W)}, {"m", e.down(M)}, {"v", e.down(V)}};
          });
    }
  }
  for (const auto& shape_rsdc :
       {std::tuple<int64_t, int64_t, int64_t, int64_t>{5, 8, 16, 8}, {64, 32, 16, 16}}) {
    const int64_t rows = std::get<0>(shape_rsdc), src = std::get<1>(shape_rsdc),
                  dst = std::get<2>(shape_rsdc), cols = std::get<3>(shape_rsdc);
    const Vec x = in.normal(rows * src);
    add("copy_rows", shape_text({{"rows", rows}, {"src", src}, {"dst", dst}, {"cols", cols}}),
        ModelOp::Elementwise, [=](auto& e) -> Outputs {
          auto X = e.up(x), Y = e.up(Vec(static_cast<size_t>(rows * dst), 7.0));
          e.run([&] { e.ops->copy_rows(X.data(), src, Y.data(), dst, rows, cols); });
          return {{"y", e.down(Y)}};
        });
  }
  for (const auto& shape_bsd : {std::tuple<int64_t, int64_t, int64_t>{1, 12, 8}, {3, 64, 32}}) {
    const int64_t batch = std::get<0>(shape_bsd), seq = std::get<1>(shape_bsd),
                  dim = std::get<2>(shape_bsd);
    const Vec table = in.normal(256 * dim), start = in.normal(dim);
    const Vec p0 = in.normal(4 * dim), p1 = in.normal((seq / 4) * dim),
              dh = in.normal(batch * seq * dim);
    const std::vector<uint8_t> tokens = in.bytes(batch * seq);
    ops::PositionShape ps;
    ps.num_dims = 2;
    ps.sizes[0] = seq / 4;
    ps.sizes[1] = 4;
    add("embedding", shape_text({{"batch", batch}, {"seq", seq}, {"dim", dim}}), ModelOp::Embedding,
        [=](auto& e) -> Outputs {
          using T = typename std::decay_t<decltype(e)>::Scalar;
          auto TB = e.up(table), S = e.up(start), P0 = e.up(p1), P1 = e.up(p0), DH = e.up(dh);
          auto TK = e.up(tokens);
          auto H = e.zeros(batch * seq * dim), DT = e.zeros(256 * dim), DS = e.zeros(dim);
          auto DP0 = e.zeros((seq / 4) * dim), DP1 = e.zeros(4 * dim);
          const T* pos[2] = {P0.data(), P1.data()};
          T* dpos[2] = {DP0.data(), DP1.data()};
          e.run([&] {
            e.ops->embedding_forward(TK.data(), batch, seq, dim, TB.data(), S.data(), pos, ps,
                                     H.data());
            e.ops->embedding_backward(TK.data(), batch, seq, dim, DH.data(), ps, DT.data(),
                                      DS.data(), dpos);
          });
          return {{"h", e.down(H)},
                  {"dtable", e.down(DT)},
                  {"dstart", e.down(DS)},
                  {"dpos0", e.down(DP0)},
                  {"dpos1", e.down(DP1)}};
        });
  }
  for (const auto& shape_rv : {std::pair<int64_t, int64_t>{1, 256}, {100, 256}}) {
    const int64_t rows = shape_rv.first, vocab = shape_rv.second;
    const Vec z = in.normal(rows * vocab, 4.0);
    const std::vector<uint8_t> targets = in.bytes(rows);
    add("softmax_cross_entropy", shape_text({{"rows", rows}, {"vocab", vocab}}),
        ModelOp::SoftmaxCrossEntropy, [=](auto& e) -> Outputs {
          using T = typename std::decay_t<decltype(e)>::Scalar;
          auto Z = e.up(z), D = e.zeros(rows * vocab);
          auto TG = e.up(targets);
          double loss = 0;
          e.run([&] {
            loss =
                e.ops->softmax_cross_entropy(Z.data(), TG.data(), rows, vocab, T(0.25), D.data());
          });
          return {{"loss", Vec{loss}}, {"dlogits", e.down(D)}};
        });
  }
}

// ------------------------------------------------------------------------ mixed precision

// A mixed-precision product rounds both of its inputs (x, w, dy) to the dtype, to nearest even,
// multiplies them exactly and accumulates in fp32; the bias add and the bias gradient db (sums of
// dy) read fp32. The reference runs the double path on the operands rounded here the same way,
// so the only error left is that of the fp32 accumulation, which the fp32 bounds already allow
// for: these cases use the fp32 tolerance.
void add_mixed_cases(std::vector<Case>& cases, uint64_t seed) {
  Inputs in{seed ^ 0x16b16};
  const sparse_dtype dtypes[] = {SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16};
  auto add = [&](sparse_dtype dtype, const std::string& op, const std::string& shape,
                 std::function<Outputs(Env<float>&)> f32,
                 std::function<Outputs(Env<double>&)> reference, bool exact = false) {
    Case c{op, shape, std::move(f32), std::move(reference), ModelOp::Linear};
    c.dtype = dtype;
    c.exact = exact;
    cases.push_back(std::move(c));
  };
  for (const auto& linear : kLinearShapes) {
    const int64_t rows = std::get<0>(linear), nin = std::get<1>(linear), nout = std::get<2>(linear);
    const Vec x = in.normal(rows * nin), w = in.normal(nin * nout, 0.2), b = in.normal(nout);
    const Vec dy = in.normal(rows * nout), dx0 = in.normal(rows * nin);
    const std::string shape = shape_text({{"rows", rows}, {"in", nin}, {"out", nout}});
    const LinearShape s{rows, nin, nout};
    for (sparse_dtype dtype : dtypes) {
      auto rounded = [dtype](Vec v) {
        for (double& t : v) t = round_to_16_host(t, dtype);
        return v;
      };
      const Vec rx = rounded(x), rw = rounded(w), rdy = rounded(dy);
      add(dtype, "linear_forward", shape, linear_forward_op(s, x, w, b),
          linear_forward_op(s, rx, rw, b));
      add(dtype, "linear_backward", shape, linear_backward_op(s, dy, x, w, dx0),
          linear_backward_op(s, rdy, rx, rw, dx0, dy));
      add(dtype, "linear_transposed", shape, linear_transposed_op(s, x, w, dy),
          linear_transposed_op(s, rx, rw, rdy));
      // x converted by the table's own round_to_16, as the model stores activations.
      add(
          dtype, "linear_forward_16", shape,
          [=](Env<float>& e) -> Outputs {
            auto X = e.up(x), W = e.up(w), B = e.up(b), Y = e.zeros(rows * nout);
            Buffer<uint16_t> X16(e.backend, rows * nin);
            e.ops->round_to_16(X.data(), rows * nin, dtype, X16.data());
            e.run([&] {
              e.ops->linear_forward_16(X16.data(), dtype, W.data(), B.data(), rows, nin, nout,
                                       Y.data());
            });
            return {{"y", e.down(Y)}};
          },
          linear_forward_op(s, rx, rw, b));
      add(
          dtype, "linear_backward_16", shape,
          [=](Env<float>& e) -> Outputs {
            auto X = e.up(x), W = e.up(w), DY = e.up(dy), DX = e.up(dx0);
            auto DW = e.zeros(nin * nout), DB = e.zeros(nout);
            Buffer<uint16_t> X16(e.backend, rows * nin);
            e.ops->round_to_16(X.data(), rows * nin, dtype, X16.data());
            e.run([&] {
              e.ops->linear_backward_16(DY.data(), X16.data(), dtype, W.data(), rows, nin, nout,
                                        DX.data(), true, DW.data(), DB.data());
            });
            return {{"dx", e.down(DX)}, {"dw", e.down(DW)}, {"db", e.down(DB)}};
          },
          linear_backward_op(s, rdy, rx, rw, dx0, dy));
    }
  }
  // round_to_16 then widen_from_16 against the host's rounding, exactly: values of every scale
  // the model meets, fp16's subnormals, its largest values, and ties of both dtypes (to even).
  Vec x = in.normal(4096);
  for (double scale : {1e-5, 1e-2, 1e2, 1e3}) {
    const Vec more = in.normal(1024, scale);
    x.insert(x.end(), more.begin(), more.end());
  }
  for (double t : {0.0, -0.0, 1.0, 1 + 0x1p-8, 1 + 3 * 0x1p-8, -(1 + 0x1p-8), 1 + 0x1p-11,
                   1 + 3 * 0x1p-11, -(1 + 3 * 0x1p-11), 0x1p-24, 0x1p-25, 3 * 0x1p-25, -0x1p-25,
                   0x1p-14 - 0x1p-25, 65504.0, 65519.0, -65519.0})
    x.push_back(t);
  const int64_t n = static_cast<int64_t>(x.size());
  for (sparse_dtype dtype : dtypes) {
    Vec rx = x;
    for (double& t : rx) t = round_to_16_host(t, dtype);
    add(
        dtype, "round_trip_16", shape_text({{"n", static_cast<double>(n)}}),
        [=](Env<float>& e) -> Outputs {
          auto X = e.up(x), Y = e.zeros(n);
          Buffer<uint16_t> H(e.backend, n);
          e.run([&] {
            e.ops->round_to_16(X.data(), n, dtype, H.data());
            e.ops->widen_from_16(H.data(), n, dtype, Y.data());
          });
          return {{"x", e.down(Y)}};
        },
        [rx](Env<double>&) -> Outputs {
          return {{"x", rx}};
        },
        true);
  }
}

// ------------------------------------------------------------------------ attention

struct AttentionShape {
  int64_t batch, seq, heads, dim;
  int block;
  sparse_pattern_kind first, second;
};

std::shared_ptr<Layout> attention_layout(const AttentionShape& a) {
  std::vector<sparse_pattern> patterns(2);
  sparse_pattern_default(&patterns[0], a.first);
  sparse_pattern_default(&patterns[1], a.second);
  for (int h = 0; h < 2; ++h) {
    patterns[static_cast<size_t>(h)].head = h;
    patterns[static_cast<size_t>(h)].stride = 16;
    patterns[static_cast<size_t>(h)].summary = 4;
  }
  sparse_layout_desc desc;
  sparse_layout_desc_default(&desc);
  desc.seq_len = a.seq;
  desc.block_size = a.block;
  desc.num_heads = static_cast<int32_t>(a.heads);
  desc.patterns = patterns.data();
  desc.num_patterns = 2;
  desc.transpose_strided_column = 1;
  return std::shared_ptr<Layout>(build_layout(desc));
}

// [batch, seq, heads, dim] rows viewed as [batch, heads, seq, dim].
TensorView head_view(const Backend& backend, float* data, const AttentionShape& a, int64_t dim) {
  TensorView t;
  t.data = data;
  t.memory = backend.memory_kind();
  t.device = backend.device_index();
  t.ndim = dim > 0 ? 4 : 3;
  if (dim > 0) {
    t.shape = {a.batch, a.heads, a.seq, dim};
    t.strides = {a.seq * a.heads * dim, dim, a.heads * dim, 1};
  } else {
    t.shape = {a.batch, a.heads, a.seq, 1};
    t.strides = {a.heads * a.seq, a.seq, 1, 0};
  }
  return t;
}

void add_attention_cases(std::vector<Case>& cases, uint64_t seed) {
  Inputs in{seed ^ 0xa77};
  const std::vector<AttentionShape> shapes = {
      {1, 64, 2, 16, 16, SPARSE_PATTERN_STRIDED_ROW, SPARSE_PATTERN_STRIDED_COLUMN},
      {2, 100, 2, 32, 16, SPARSE_PATTERN_FIXED_BLOCK, SPARSE_PATTERN_FIXED_SUMMARY},
      {1, 256, 2, 64, 32, SPARSE_PATTERN_STRIDED_ROW, SPARSE_PATTERN_STRIDED_COLUMN},
  };
  for (const AttentionShape& a : shapes) {
    auto layout = attention_layout(a);
    auto lists = std::make_shared<model::KeyListSet>(model::key_lists_from_layout(*layout));
    const int64_t n = a.batch * a.seq * a.heads * a.dim;
    const Vec q = in.normal(n), k = in.normal(n), v = in.normal(n), dout = in.normal(n);
    const std::string shape = shape_text({{"batch", a.batch},
                                          {"seq", a.seq},
                                          {"heads", a.heads},
                                          {"dim", a.dim},
                                          {"block", a.block}}) +
                              " " + sparse_pattern_kind_name(a.first) + "/" +
                              sparse_pattern_kind_name(a.second);
    for (sparse_attention_algorithm algo : {SPARSE_ATTENTION_FUSED, SPARSE_ATTENTION_UNFUSED}) {
      const std::string name =
          algo == SPARSE_ATTENTION_FUSED ? "attention_fused" : "attention_unfused";
      cases.push_back({name, shape, {}, {}, ModelOp::Count});
      auto fn = [=](auto& e) -> Outputs {
        using T = typename std::decay_t<decltype(e)>::Scalar;
        auto Q = e.up(q), K = e.up(k), V = e.up(v), DO = e.up(dout);
        auto O = e.zeros(n), L = e.zeros(a.batch * a.heads * a.seq);
        auto DQ = e.zeros(n), DK = e.zeros(n), DV = e.zeros(n);
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(a.dim)));
        if constexpr (std::is_same_v<T, float>) {
          const std::string why = e.backend->supports_attention(
              *layout, SPARSE_DTYPE_F32, e.backend->memory_kind(), a.dim, algo);
          if (!why.empty()) throw_error(SPARSE_ERR_UNSUPPORTED, why);
          const Backend& on = *e.backend;
          AttentionForwardArgs f;
          f.layout = layout.get();
          f.scale = scale;
          f.algorithm = algo;
          f.q = head_view(on, Q.data(), a, a.dim);
          f.k = head_view(on, K.data(), a, a.dim);
          f.v = head_view(on, V.data(), a, a.dim);
          f.out = head_view(on, O.data(), a, a.dim);
          f.lse = head_view(on, L.data(), a, 0);
          AttentionBackwardArgs b;
          b.layout = layout.get();
          b.scale = scale;
          b.algorithm = algo;
          b.q = f.q;
          b.k = f.k;
          b.v = f.v;
          b.out = f.out;
          b.lse = f.lse;
          b.dout = head_view(on, DO.data(), a, a.dim);
          b.dq = head_view(on, DQ.data(), a, a.dim);
          b.dk = head_view(on, DK.data(), a, a.dim);
          b.dv = head_view(on, DV.data(), a, a.dim);
          e.run([&] {
            e.backend->attention_forward(f);
            e.backend->attention_backward(b);
          });
        } else {
          e.run([&] {
            e.ops->listed_attention_forward(lists->view(), a.batch, a.dim, a.dim, scale, Q.data(),
                                            K.data(), V.data(), O.data(), L.data());
            e.ops->listed_attention_backward(lists->view(), a.batch, a.dim, a.dim, scale, Q.data(),
                                             K.data(), V.data(), O.data(), L.data(), DO.data(),
                                             DQ.data(), DK.data(), DV.data());
          });
        }
        return {{"out", e.down(O)},
                {"lse", e.down(L)},
                {"dq", e.down(DQ)},
                {"dk", e.down(DK)},
                {"dv", e.down(DV)}};
      };
      cases.back().f32 = fn;
      cases.back().f64 = fn;
    }
    // The model's listed attention and decoding step in float against double.
    cases.push_back({"listed_attention", shape, {}, {}, ModelOp::ListedAttention});
    auto listed = [=](auto& e) -> Outputs {
      using T = typename std::decay_t<decltype(e)>::Scalar;
      auto Q = e.up(q), K = e.up(k), V = e.up(v), DO = e.up(dout);
      auto O = e.zeros(n), L = e.zeros(a.batch * a.heads * a.seq);
      auto DQ = e.zeros(n), DK = e.zeros(n), DV = e.zeros(n), OD = e.zeros(a.heads * a.dim);
      const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(a.dim)));
      const int64_t t = a.seq - 3;
      e.run([&] {
        e.ops->listed_attention_forward(lists->view(), a.batch, a.dim, a.dim, scale, Q.data(),
                                        K.data(), V.data(), O.data(), L.data());
        e.ops->listed_attention_backward(lists->view(), a.batch, a.dim, a.dim, scale, Q.data(),
                                         K.data(), V.data(), O.data(), L.data(), DO.data(),
                                         DQ.data(), DK.data(), DV.data());
        e.ops->decode_attention(lists->view(), t, a.dim, a.dim, scale,
                                Q.data() + t * a.heads * a.dim, K.data(), V.data(), OD.data());
      });
      return {{"out", e.down(O)}, {"lse", e.down(L)}, {"dq", e.down(DQ)},
              {"dk", e.down(DK)}, {"dv", e.down(DV)}, {"decode", e.down(OD)}};
    };
    cases.back().f32 = listed;
    cases.back().f64 = listed;
  }
}

}  // namespace

double round_to_16_host(double x, sparse_dtype dtype) {
  if (dtype != SPARSE_DTYPE_BF16 && dtype != SPARSE_DTYPE_F16) return x;
  if (!std::isfinite(x) || x == 0) return x;
  // Stored fraction bits, the exponent of the smallest normal number and the largest finite value.
  const bool bf16 = dtype == SPARSE_DTYPE_BF16;
  const int fraction_bits = bf16 ? 7 : 10;
  const int min_exponent = bf16 ? -126 : -14;
  const double largest = bf16 ? 0x1.fep127 : 65504.0;
  // The spacing of the representable values around x (constant below the normal range); the
  // quotient is exact and nearbyint rounds it to nearest even.
  const int exponent = std::max(std::ilogb(x), min_exponent);
  const double spacing = std::ldexp(1.0, exponent - fraction_bits);
  const double r = std::nearbyint(x / spacing) * spacing;
  return std::abs(r) > largest ? std::copysign(HUGE_VAL, x) : r;
}

OpCheckCounts run_op_check(const OpCheckOptions& options) {
  auto print = [&](const std::string& s) {
    if (options.print) options.print(s);
  };
  std::vector<Case> cases;
  add_model_cases(cases, options.seed);
  add_mixed_cases(cases, options.seed);
  add_attention_cases(cases, options.seed);
  auto selected = [&](const Case& c) {
    return options.filter.empty() || c.op.find(options.filter) != std::string::npos;
  };
  if (std::none_of(cases.begin(), cases.end(), selected)) {
    std::string names;
    for (const Case& c : cases)
      if (names.find(" " + c.op + ",") == std::string::npos) names += " " + c.op + ",";
    names.pop_back();
    throw_invalid("filter \"", options.filter, "\" matches no operation; the operations are",
                  names);
  }

  std::unique_ptr<Backend> reference = make_cpu_backend(1, 0);
  Env<double> ref;
  ref.backend = reference.get();
  ref.ops = reference->model_ops<double>();
  require(ref.ops != nullptr, "internal: the CPU backend has no double-precision operations");

  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<std::pair<std::string, Backend*>> backends;
  owned.push_back(make_cpu_backend(0, 0));
  backends.emplace_back("cpu", owned.back().get());
  if (cuda_device_count() > 0) {
    owned.push_back(make_cuda_backend(0, nullptr, 0));
    backends.emplace_back("cuda", owned.back().get());
  } else {
    print("cuda: no device on this machine, not checked");
  }
  for (const auto& [name, backend] : options.extra_backends) {
    require(backend != nullptr, "internal: the extra backend ", name, " is NULL");
    backends.emplace_back(name, backend);
  }

  OpCheckCounts counts;
  for (const auto& [bname, backend] : backends) {
    print("backend " + bname + ": " + backend->description());
    for (sparse_dtype dtype : {SPARSE_DTYPE_F32, SPARSE_DTYPE_BF16, SPARSE_DTYPE_F16}) {
      auto in_table = [&](const Case& c) { return c.dtype == dtype && selected(c); };
      if (std::none_of(cases.begin(), cases.end(), in_table)) continue;
      Env<float> env;
      env.backend = backend;
      const std::string dname = dtype_label(dtype);
      if (dtype == SPARSE_DTYPE_F32) {
        env.ops = backend->model_ops<float>();
      } else {
        // A backend without mixed precision (or refusing it here) is one skip line per dtype.
        env.ops = backend->model_ops_mixed(dtype);
        const std::string why = env.ops == nullptr ? std::string("no mixed-precision operations")
                                                   : backend->supports_op(ModelOp::Linear, dtype);
        if (!why.empty()) {
          ++counts.skipped;
          print("skip " + bname + " " + dname + ": " + why);
          continue;
        }
      }
      for (const Case& c : cases) {
        if (!in_table(c)) continue;
        const std::string label = bname + " " + dname + " " + c.op + " " + c.shape;
        if (c.needs != ModelOp::Count && dtype == SPARSE_DTYPE_F32) {
          const std::string why = backend->supports_op(c.needs, SPARSE_DTYPE_F32);
          if (!why.empty() || env.ops == nullptr) {
            ++counts.skipped;
            print("skip " + label + ": " + (why.empty() ? "no float operations" : why));
            continue;
          }
        }
        std::string line;
        std::vector<std::string> details;
        bool pass = true;
        try {
          env.bench = false;
          ref.bench = false;
          const Outputs want = c.f64(ref);
          const Outputs got = c.f32(env);
          for (size_t i = 0; i < want.size(); ++i)
            pass &= compare(want[i].first, want[i].second, got[i].second, c.exact ? kExact : kF32,
                            options.max_mismatches, line, details);
          if (options.bench) {
            env.bench = true;
            c.f32(env);
            char buf[64];
            std::snprintf(buf, sizeof buf, "  [%.3g us/call]", env.seconds * 1e6);
            line += buf;
          }
        } catch (const Error& e) {
          if (e.status() == SPARSE_ERR_UNSUPPORTED) {
            ++counts.skipped;
            print("skip " + label + ": " + e.what());
            continue;
          }
          pass = false;
          details.push_back(std::string("    error: ") + e.what());
        } catch (const std::exception& e) {
          pass = false;
          details.push_back(std::string("    error: ") + e.what());
        }
        ++counts.checked;
        if (!pass) ++counts.failed;
        print((pass ? "ok   " : "FAIL ") + label + ":" + line);
        for (const std::string& d : details) print(d);
      }
    }
  }
  print(std::to_string(counts.checked) + " checks, " + std::to_string(counts.failed) + " failed, " +
        std::to_string(counts.skipped) + " not supported (skipped)");
  return counts;
}

}  // namespace sparse::check
