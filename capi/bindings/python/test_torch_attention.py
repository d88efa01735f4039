#!/usr/bin/env python3
"""Tests of the sparse_attention package's PyTorch operator and Layout (CPU tensors).

    SPARSE_LIBRARY=build/libsparse.so python3 capi/bindings/python/test_torch_attention.py
    python3 capi/bindings/python/test_torch_attention.py   # the pip-installed package

With SPARSE_LIBRARY set the package is taken from this source tree, else the installed one.
Without PyTorch it prints SKIP and exits 77 (meson: skipped), or fails when SPARSE_REQUIRE_TORCH=1.

References are independent of the library: element masks from the token-level definitions
(reference.py), PyTorch's scaled_dot_product_attention in float64 with that mask, finite
differences (torch.autograd.gradcheck), and benchmarks/peers/torch_model.py trained with SDPA.
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    if os.environ.get("SPARSE_REQUIRE_TORCH") == "1":
        sys.exit("FAIL: PyTorch is not installed (SPARSE_REQUIRE_TORCH=1)")
    print("SKIP: PyTorch is not installed (pip install torch); the operator tests need it")
    sys.exit(77)

import warnings  # noqa: E402

import numpy as np  # noqa: E402

# Python puts this script's folder first on sys.path: keep it there only for the source tree.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
if os.environ.get("SPARSE_LIBRARY"):
    sys.path.insert(0, HERE)
import sparse_attention as sa  # noqa: E402
from sparse_attention import sparse_ctypes as sc  # noqa: E402

sys.path.insert(0, HERE)
import reference as ref  # noqa: E402


def pattern_dict(p):
    return {"kind": p.kind.name.lower(), "head": p.head, "window": p.window, "stride": p.stride,
            "summary": p.summary, "summary_variants": p.summary_variants, "causal": p.causal,
            "global_tokens": p.global_tokens, "random_blocks": p.random_blocks, "seed": p.seed}


def layouts(n=96, heads=2, block=16):
    """(name, Layout, reference element mask [heads, n, n] or None) for every pattern family.
    n is a multiple of neither stride nor window on purpose."""
    rng = np.random.default_rng(7)
    nb = -(-n // block)
    bm = rng.random((heads, nb, nb)) < 0.4
    bm[:, np.arange(nb), np.arange(nb)] = True  # every query keeps a key
    bm_mask = np.repeat(np.repeat(bm, block, axis=1), block, axis=2)[:, :n, :n]
    bm_mask &= np.tril(np.ones((n, n), bool))[None]
    cases = [
        ("dense", sa.Layout.dense(n, heads, block_size=block),
         [sc.Pattern.dense()]),
        ("strided", sa.Layout.strided(n, 20, heads, block_size=block),
         [sc.Pattern.strided_row(20, head=0), sc.Pattern.strided_column(20, head=1)]),
        ("strided merged", sa.Layout.strided(n, 20, heads, merged=True, block_size=block),
         [sc.Pattern.strided_row(20), sc.Pattern.strided_column(20)]),
        ("fixed", sa.Layout.fixed(n, 24, 4, heads, block_size=block),
         [sc.Pattern.fixed_block(24, head=0), sc.Pattern.fixed_summary(24, 4, head=1)]),
        ("local", sa.Layout.local(n, 23, heads, block_size=block), [sc.Pattern.local(23)]),
        ("sliding bidirectional",
         sa.Layout.sliding_window(n, 13, heads, causal=False, block_size=block),
         [sc.Pattern.sliding_window(13, causal=False)]),
        ("longformer", sa.Layout.longformer(n, 9, [0, 50], heads, block_size=block),
         [sc.Pattern.longformer(9, [0, 50])]),
        ("bigbird bidirectional",
         sa.Layout.bigbird(n, 9, [3], 2, seed=11, num_heads=heads, causal=False,
                           block_size=block),
         [sc.Pattern.bigbird(9, [3], 2, 11, causal=False)]),
        ("block mask", sa.Layout.from_block_mask(bm, n, block, causal=True), None),
    ]
    out = []
    for name, layout, pats in cases:
        mask = bm_mask if pats is None else ref.layout_masks([pattern_dict(p) for p in pats], n,
                                                             heads, block)
        out.append((name, layout, np.asarray(mask, bool)))
    return out


def sdpa_reference(q, k, v, mask, scale=None):
    """float64 SDPA with the boolean mask; rows without a key give 0 (as the library)."""
    m = torch.as_tensor(mask)
    has_key = m.any(-1, keepdim=True)
    m = m | ~has_key & (torch.arange(m.shape[-1]) == 0)  # one dummy key, zeroed below
    out = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=m,
                                         scale=scale)
    return out * has_key


def qkv(shape, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).requires_grad_(requires_grad) for _ in range(3)]


class LayoutTest(unittest.TestCase):
    def test_to_dense_matches_token_definitions(self):
        for name, layout, mask in layouts():
            with self.subTest(name):
                np.testing.assert_array_equal(layout.to_dense(), mask)

    def test_cached_per_description(self):
        a = sa.Layout.strided(128, 16, 4, block_size=32)
        self.assertIs(sa.Layout.strided(128, 16, 4, block_size=32), a)
        self.assertIsNot(sa.Layout.strided(128, 16, 4, block_size=16), a)
        self.assertIsNot(sa.Layout.strided(128, 17, 4, block_size=32), a)
        self.assertIsNot(sa.Layout.strided(256, 16, 4, block_size=32), a)
        bm = np.ones((1, 4, 4), bool)
        self.assertIs(sa.Layout.from_block_mask(bm, 128, 32),
                      sa.Layout.from_block_mask(bm, 128, 32))
        bm2 = bm.copy()
        bm2[0, 0, 3] = False
        self.assertIsNot(sa.Layout.from_block_mask(bm2, 128, 32),
                         sa.Layout.from_block_mask(bm, 128, 32))

    def test_module_holding_a_layout_deep_copies(self):
        # copy.deepcopy of a module (an EMA copy of a model) copied its Layout into a second
        # owner of the library handle; the copy is now the same cached object.
        import copy

        class Attend(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layout = sa.Layout.strided(64, 8, num_heads=2, block_size=16)

            def forward(self, q):
                return sa.attention(q, q, q, self.layout)

        m = Attend()
        ema = copy.deepcopy(m)
        self.assertIs(ema.layout, m.layout)
        q = torch.randn(1, 2, 64, 16)
        torch.testing.assert_close(ema(q), m(q), rtol=0, atol=0)

    def test_bad_descriptions_name_the_field(self):
        with self.assertRaisesRegex(sc.SparseError, "stride"):
            sa.Layout.strided(64, 0, 2, block_size=16)
        with self.assertRaisesRegex(ValueError, "num_heads"):
            sa.Layout.strided(64, 8, 1, block_size=16)
        with self.assertRaisesRegex(sc.SparseError, "block"):
            sa.Layout.dense(64, block_size=24)


class OperatorTest(unittest.TestCase):
    def test_forward_backward_match_sdpa_with_the_dense_mask(self):
        B, H, n, d = 2, 2, 96, 16
        for name, layout, _ in layouts(n, H, 16):
            with self.subTest(name):
                q, k, v = qkv((B, H, n, d), seed=1)
                mask = layout.to_dense()
                w = torch.randn(B, H, n, d, generator=torch.Generator().manual_seed(2))
                out = sa.attention(q, k, v, layout)
                (out * w).sum().backward()
                q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
                expect = sdpa_reference(q64, k64, v64, mask)
                (expect * w.double()).sum().backward()
                torch.testing.assert_close(out.double(), expect.detach(), rtol=0, atol=2e-5)
                for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
                    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-4)

    def test_strided_views_and_explicit_scale(self):
        # q, k, v as transposed views of one [B, n, 3, H, d] projection: no copies are made.
        B, H, n, d = 1, 2, 64, 8
        layout = sa.Layout.strided(n, 8, H, block_size=16)
        g = torch.Generator().manual_seed(3)
        qkv_ = torch.randn(B, n, 3, H, d, generator=g, requires_grad=True)
        q, k, v = (qkv_[:, :, i].transpose(1, 2) for i in range(3))
        self.assertFalse(q.is_contiguous())
        out = sa.attention(q, k, v, layout, scale=0.3)
        out.sum().backward()  # dout is an expanded (stride 0) tensor
        x = qkv_.detach().double().requires_grad_()
        q64, k64, v64 = (x[:, :, i].transpose(1, 2) for i in range(3))
        expect = sdpa_reference(q64, k64, v64, layout.to_dense(), scale=0.3)
        expect.sum().backward()
        torch.testing.assert_close(out.double(), expect.detach(), rtol=0, atol=2e-5)
        torch.testing.assert_close(qkv_.grad.double(), x.grad, rtol=0, atol=1e-4)

    def test_gradcheck_fp32(self):
        # The CPU backend computes in float32 only, so finite differences run in float32:
        # central differences with eps = 1e-2 have truncation error ~eps^2 |f'''| (< 1e-4 here)
        # and rounding error ~1e-7 |f| / eps (~1e-5); bounds atol 2e-3, rtol 2e-3.
        layout = sa.Layout.fixed(40, 8, 3, 2, block_size=16)
        q, k, v = qkv((1, 2, 40, 4), seed=4)
        with torch.no_grad():
            for t in (q, k, v):
                t.mul_(0.5)
        warnings.filterwarnings("ignore", "Input #", UserWarning)  # float32 on purpose
        ok = torch.autograd.gradcheck(lambda a, b, c: sa.attention(a, b, c, layout), (q, k, v),
                                      eps=1e-2, atol=2e-3, rtol=2e-3, nondet_tol=0.0)
        self.assertTrue(ok)

    def test_opcheck(self):
        # torch.library's own checks: schema, fake (meta) implementation, autograd registration.
        layout = sa.Layout.strided(48, 8, 2, block_size=16)
        q, k, v = qkv((1, 2, 48, 8), seed=5)
        torch.library.opcheck(torch.ops.sparse_attention.attention_fwd.default,
                              (q, k, v, layout.id, 0.0))
        lse = torch.zeros(1, 2, 48)
        torch.library.opcheck(torch.ops.sparse_attention.attention_bwd.default,
                              (q.detach(), k.detach(), v.detach(), q.detach(), lse,
                               torch.ones_like(q), layout.id, 0.0),
                              test_utils=("test_schema", "test_faketensor"))

    def test_torch_compile_fullgraph(self):
        layout = sa.Layout.strided(64, 16, 2, block_size=16)
        lin = torch.nn.Linear(8, 8)

        def f(q, k, v):
            out = sa.attention(torch.tanh(q), k * 2, v, layout)
            return lin(out).square().sum()

        compiled = torch.compile(f, fullgraph=True, backend="inductor")
        q, k, v = qkv((2, 2, 64, 8), seed=6)
        loss = compiled(q, k, v)
        loss.backward()
        grads = [t.grad.clone() for t in (q, k, v)]
        for t in (q, k, v):
            t.grad = None
        expect = f(q, k, v)
        expect.backward()
        torch.testing.assert_close(loss, expect, rtol=1e-5, atol=1e-5)
        for got, t in zip(grads, (q, k, v)):
            torch.testing.assert_close(got, t.grad, rtol=1e-5, atol=1e-5)

    def test_errors_name_what_is_wrong(self):
        layout = sa.Layout.strided(64, 16, 2, block_size=16)
        q, k, v = qkv((1, 4, 64, 8), requires_grad=False)
        with self.assertRaisesRegex(ValueError, "2 heads and seq_len 64"):
            sa.attention(q, k, v, layout)
        q, k, v = qkv((1, 2, 64, 8), requires_grad=False)
        with self.assertRaisesRegex(ValueError, "k has shape"):
            sa.attention(q, k[:, :, :32], v, layout)
        with self.assertRaisesRegex(TypeError, "Layout"):
            sa.attention(q, k, v, layout.to_dense())
        with self.assertRaisesRegex(sc.SparseError, "UNSUPPORTED"):
            sa.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), layout)

    @unittest.skipUnless(torch.cuda.is_available() and sa.backends()["cuda"],
                         "no CUDA device or libsparse without the CUDA backend")
    def test_cuda_matches_cpu(self):
        layout = sa.Layout.strided(256, 32, 2, block_size=64)
        q, k, v = qkv((2, 2, 256, 64), seed=8)
        out = sa.attention(q, k, v, layout)
        out.square().sum().backward()
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            qc, kc, vc = (t.detach().cuda().requires_grad_() for t in (q, k, v))
            outc = sa.attention(qc, kc, vc, layout)
            outc.square().sum().backward()
        stream.synchronize()
        # The default stream too (the legacy stream, handed over as cudaStreamLegacy).
        qd, kd, vd = (t.detach().cuda() for t in (q, k, v))
        torch.testing.assert_close(sa.attention(qd, kd, vd, layout).cpu(), out.detach(),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(outc.cpu(), out, rtol=1e-4, atol=1e-4)
        for tc, t in ((qc, q), (kc, k), (vc, v)):
            torch.testing.assert_close(tc.grad.cpu(), t.grad, rtol=1e-3, atol=1e-3)


class TrainingTest(unittest.TestCase):
    def test_tiny_model_trains_like_sdpa(self):
        sys.path.insert(0, os.path.join(ROOT, "benchmarks", "peers"))
        import torch_model as tm
        c = tm.ModelConfig(seq_len=128, num_layers=2, d_model=32, num_heads=2,
                           attention=tm.ATTENTION_STRIDED, head_mode=tm.HEADS_MULTIHEAD,
                           stride=12, block_size=16, position_shape=(8, 16), seed=1)
        layout = sa.Layout.strided(c.seq_len, c.stride, c.num_heads, block_size=c.block_size)
        # The model's own mask (token definitions in torch_model.py) is the layout's.
        self.assertEqual(len(tm.layer_masks(c)[0]), 1)
        np.testing.assert_array_equal(tm.layer_masks(c)[0][0].numpy(), layout.to_dense())

        class OpModel(tm.SparseTransformer):
            def attend(self, q, k, v, layer):
                return sa.attention(q, k, v, layout, scale=self.scale)

        class DenseOpModel(tm.SparseTransformer):  # a wrong layout, to show the check bites
            def attend(self, q, k, v, layer):
                return sa.attention(q, k, v, sa.Layout.dense(c.seq_len, c.num_heads,
                                                             block_size=c.block_size),
                                    scale=self.scale)

        # Learnable data: a period-12 sequence of letters, random phase per sequence.
        g = torch.Generator().manual_seed(9)
        phase = torch.randint(0, 12, (6, 2, 1), generator=g)
        tokens = 65 + (torch.arange(c.seq_len) + phase) % 12

        def run(model_cls):
            model = model_cls(c, attention="sdpa", init_seed=3)
            trainer = tm.Trainer(model, lr=3e-3)
            return np.array([trainer.step(tokens[s])[0] for s in range(tokens.shape[0])])

        ours, sdpa = run(OpModel), run(tm.SparseTransformer)
        np.testing.assert_allclose(ours, sdpa, rtol=2e-5)
        self.assertLess(ours[-1], ours[0] - 0.5)  # it trained
        wrong = run(DenseOpModel)
        self.assertGreater(np.abs(wrong[1:] / sdpa[1:] - 1).max(), 20 * 2e-5)


if __name__ == "__main__":
    torch.manual_seed(0)
    unittest.main(verbosity=2)
