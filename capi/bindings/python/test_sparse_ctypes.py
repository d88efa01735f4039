#!/usr/bin/env python3
"""Tests of the Python binding against independent numpy computations on the CPU backend.

Run: SPARSE_LIBRARY=build/libsparse.so python3 capi/bindings/python/test_sparse_ctypes.py
(meson test -C build --suite bindings runs it). Needs numpy: when this interpreter lacks it, the
script re-runs itself with /usr/bin/python3 (Debian's python3-numpy, installed by
.ci/install-deps); with no numpy anywhere it exits 77 (meson: SKIP), or fails when
SPARSE_REQUIRE_NUMPY=1 (CI).
"""
import ctypes
import os
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def _reexec_or_skip():
    for exe in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(exe) and os.path.realpath(exe) != os.path.realpath(sys.executable):
            import subprocess
            if subprocess.run([exe, "-c", "import numpy"], capture_output=True).returncode == 0:
                os.execv(exe, [exe, os.path.abspath(__file__)] + sys.argv[1:])
    msg = "numpy is not installed for any python3 (install python3-numpy: .ci/install-deps)"
    if os.environ.get("SPARSE_REQUIRE_NUMPY") == "1":
        sys.exit("FAIL: " + msg)
    print("SKIP: " + msg)
    sys.exit(77)


try:
    import numpy as np
except ImportError:
    if __name__ == "__main__":
        _reexec_or_skip()
    raise

import unittest  # noqa: E402

sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "abi"))
import reference as ref  # noqa: E402
import sparse_ctypes as sp  # noqa: E402

# Headers whose every function this module binds.
BOUND_HEADERS = ("common.h", "context.h", "layout.h", "attention.h", "model.h", "datasets.h")


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def pattern_dict(p):
    return {"kind": p.kind.name.lower(), "head": p.head, "window": p.window, "stride": p.stride,
            "summary": p.summary, "summary_variants": p.summary_variants, "causal": p.causal,
            "global_tokens": p.global_tokens, "random_blocks": p.random_blocks, "seed": p.seed}


def reference_masks(patterns, n, heads, block):
    return ref.layout_masks([pattern_dict(p) for p in patterns], n, heads, block)


P = sp.Pattern
# (name, seq_len, block, heads, patterns, transpose): cover every kind, merged heads, a head no
# pattern names, lengths that are not multiples of the block or the stride.
LAYOUT_CASES = [
    ("dense-causal", 70, 16, 1, [P.dense()], True),
    ("dense-bidirectional", 70, 16, 1, [P.dense(causal=False)], True),
    ("local", 90, 16, 1, [P.local(7)], True),
    ("strided", 100, 16, 2, [P.strided_row(10, head=0), P.strided_column(10, head=1)], True),
    ("strided-column-ragged", 101, 16, 1, [P.strided_column(9)], True),
    ("strided-column-natural", 101, 16, 1, [P.strided_column(9)], False),
    ("fixed", 96, 16, 2, [P.fixed_block(12, head=0), P.fixed_summary(12, 3, head=1)], True),
    ("fixed-variants", 96, 16, 3, [P.fixed_summary(16, 4, summary_variants=3)], True),
    ("merged", 80, 16, 1, [P.strided_row(9), P.strided_column(9)], True),
    ("empty-head", 64, 16, 2, [P.fixed_block(8, head=0)], True),
    ("sliding", 77, 16, 2, [P.sliding_window(6, head=0),
                            P.sliding_window(6, head=1, causal=False)], True),
    ("longformer", 77, 16, 2, [P.longformer(5, [0, 17, 17, 76], head=0),
                               P.longformer(5, [3, 40], head=1, causal=False)], True),
    ("bigbird", 130, 16, 3, [P.bigbird(5, [1], 2, 42),
                             P.bigbird(3, [], 3, 7, head=2, causal=False)], True),
]


class Masks(unittest.TestCase):
    """The layout's row masks and statistics against the token-level definitions."""

    def test_row_masks_match_definitions(self):
        for name, n, block, heads, pats, transpose in LAYOUT_CASES:
            with self.subTest(name), sp.Layout(n, pats, heads, block, transpose) as layout:
                expect = reference_masks(pats, n, heads, block)
                for h in range(heads):
                    got = layout.mask(h)
                    bad = np.argwhere(got != expect[h])
                    self.assertEqual(len(bad), 0, f"{name} head {h}: first differences (i, j) "
                                     f"{bad[:5].tolist()}")
                    self.assertEqual(layout.stats(h)["useful_elements"], int(expect[h].sum()))
                self.assertEqual(layout.stats()["useful_elements"], int(expect.sum()))

    def test_reference_masks_are_not_trivial(self):
        # Guards the reference itself: the paper's strided heads at n = 64, l = 8.
        m = ref.layout_masks([{"kind": "strided_row", "stride": 8, "head": 0},
                              {"kind": "strided_column", "stride": 8, "head": 1}], 64, 2, 16)
        self.assertEqual(m[0][20].nonzero()[0].tolist(), list(range(12, 21)))
        self.assertEqual(m[1][20].nonzero()[0].tolist(), [4, 12, 20])

    def test_transposed_column_head_is_sparse(self):
        n, l = 1024, 32
        with sp.Layout(n, [P.strided_column(l)], 1, 32) as t, \
                sp.Layout(n, [P.strided_column(l)], 1, 32, False) as nat:
            st, sn = t.stats(0), nat.stats(0)
            self.assertEqual(st["transposed"], 1)
            self.assertEqual(sn["transposed"], 0)
            self.assertLess(st["nnz_blocks"], sn["nnz_blocks"] / 4)
            self.assertEqual(st["useful_elements"], sn["useful_elements"])

    def test_out_of_range_integers_are_refused_not_wrapped(self):
        # ctypes would store 2**64 + 256 as 256: the binding refuses it, naming the field.
        for kwargs, field in [({"seq_len": 2**64 + 256}, "seq_len"),
                              ({"num_heads": 2**31}, "num_heads")]:
            args = {"seq_len": 256, "num_heads": 1, **kwargs}
            with self.assertRaises(ValueError) as cm:
                sp.Layout(args["seq_len"], sp.Pattern.strided_row(16), args["num_heads"], 64)
            self.assertIn(field, str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            sp.Layout(256, sp.Pattern.strided_row(2**64 + 16), 1, 64)
        self.assertIn("stride", str(cm.exception))

    def test_from_blocks(self):
        n, b = 40, 16
        bm = np.array([[[1, 0, 0], [0, 1, 0], [1, 0, 1]]], np.uint8)
        with sp.Layout.from_blocks(n, b, bm, causal=True) as layout:
            i, j = np.arange(n)[:, None], np.arange(n)[None, :]
            expect = (bm[0][i // b, j // b] > 0) & (j <= i)
            np.testing.assert_array_equal(layout.mask(0), expect)
            self.assertEqual(layout.block_mask(0)[1, 1], 1)  # partial: causal diagonal
        # Masks are non-zero = computed/allowed whatever their dtype: the uint8 cast made 0.5
        # and 256 into 0, silently dropping those blocks and elements.
        for scale in (0.5, 256):
            with self.subTest(scale=scale), \
                    sp.Layout.from_blocks(n, b, bm.astype(np.int64) * scale, causal=True) as layout:
                np.testing.assert_array_equal(layout.mask(0), expect)
        em = np.ones((int(bm.sum()), b, b)) * 0.5
        with sp.Layout.from_blocks(n, b, bm, element_mask=em, causal=True) as layout:
            np.testing.assert_array_equal(layout.mask(0), expect)


CASES = [
    # (name, batch, heads, n, d, block, patterns, scale)
    ("strided-multihead", 2, 2, 200, 32, 32, [P.strided_row(14, head=0),
                                               P.strided_column(14, head=1)], None),
    ("fixed-merged", 1, 1, 128, 64, 16, [P.fixed_block(16), P.fixed_summary(16, 4)], 0.3),
    ("empty-head", 1, 2, 64, 32, 16, [P.local(9, head=0)], None),
    ("bigbird-bidirectional", 1, 2, 96, 32, 32, [P.bigbird(8, [0, 50], 1, 3, causal=False)],
     None),
]


class Attention(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = sp.Context("cpu", num_threads=2)

    @classmethod
    def tearDownClass(cls):
        cls.ctx.close()

    def run_case(self, case, strided=False):
        name, b, h, n, d, block, pats, scale = case
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        if strided:  # [b, n, h, d] storage seen as [b, h, n, d]: non-contiguous strides
            q, k, v, dout = (rand(rng, (b, n, h, d)).transpose(0, 2, 1, 3) for _ in range(4))
        else:
            q, k, v, dout = (rand(rng, (b, h, n, d)) for _ in range(4))
        s = sp.default_scale(d) if scale is None else scale
        masks = reference_masks(pats, n, h, block)
        with sp.Layout(n, pats, h, block) as layout:
            if strided:  # outputs as views into larger buffers
                big = np.full((b, h, n, d + 5), np.nan, np.float32)
                out = big[..., 2:2 + d]
                lse = np.full((b, h, n, 2), np.nan, np.float32)[..., 1]
                sp.attention_forward(self.ctx, layout, q, k, v, out=out, lse=lse, scale=scale)
                self.assertTrue(np.isnan(big[..., :2]).all() and np.isnan(big[..., 2 + d:]).all())
            else:
                out, lse = sp.attention_forward(self.ctx, layout, q, k, v, scale=scale)
            grads = sp.attention_backward(self.ctx, layout, q, k, v, out, lse, dout, scale=scale)
        e_out, e_lse, _ = ref.attention_forward(q, k, v, masks, s)
        e_grads = ref.attention_backward(q, k, v, dout, masks, s)
        np.testing.assert_allclose(out, e_out, rtol=1e-4, atol=2e-5, err_msg=name + " out")
        finite = np.isfinite(e_lse)
        np.testing.assert_array_equal(np.isfinite(lse), finite, err_msg=name + " lse finite")
        self.assertTrue((lse[~finite] == -np.inf).all(), name + " empty rows: lse -inf")
        np.testing.assert_allclose(lse[finite], e_lse[finite], rtol=1e-5, atol=5e-5,
                                   err_msg=name + " lse")
        for g, e, gname in zip(grads, e_grads, ("dq", "dk", "dv")):
            tol = 2e-4 * max(1.0, float(np.abs(e).max()))
            np.testing.assert_allclose(g, e, rtol=1e-3, atol=tol, err_msg=f"{name} {gname}")
        return out, lse, grads, masks

    def test_forward_backward_against_numpy(self):
        for case in CASES:
            with self.subTest(case[0]):
                self.run_case(case)

    def test_strided_views(self):
        for case in CASES[:2]:
            with self.subTest(case[0]):
                self.run_case(case, strided=True)

    def test_empty_rows(self):
        out, lse, grads, masks = self.run_case(CASES[2])
        self.assertFalse(masks[1].any())
        self.assertTrue((out[:, 1] == 0).all())
        self.assertTrue((lse[:, 1] == -np.inf).all())
        for g in grads:
            self.assertTrue((g[:, 1] == 0).all())

    def test_reference_gradients_by_finite_differences(self):
        # The numpy reference's analytic backward against central differences of its forward.
        rng = np.random.default_rng(5)
        q, k, v, dout = (rng.standard_normal((1, 1, 9, 4)) for _ in range(4))
        masks = ref.layout_masks([{"kind": "local", "window": 4}], 9, 1, 16)
        grads = ref.attention_backward(q, k, v, dout, masks, 0.7)
        eps = 1e-6
        for x, g in zip((q, k, v), grads):
            for idx in [(0, 0, 0, 0), (0, 0, 4, 2), (0, 0, 8, 3)]:
                old = x[idx]
                x[idx] = old + eps
                up = (ref.attention_forward(q, k, v, masks, 0.7)[0] * dout).sum()
                x[idx] = old - eps
                down = (ref.attention_forward(q, k, v, masks, 0.7)[0] * dout).sum()
                x[idx] = old
                self.assertAlmostEqual((up - down) / (2 * eps), g[idx], places=6)

    def test_torch_like_descriptors(self):
        class FakeTorch:  # the duck-typed interface Tensor.from_torch reads
            def __init__(self, a):
                self.a, self.shape, self.dtype, self.is_cuda = a, a.shape, "torch.float32", False

            def data_ptr(self):
                return self.a.ctypes.data

            def stride(self):
                return tuple(s // self.a.itemsize for s in self.a.strides)

        rng = np.random.default_rng(1)
        q, k, v = (rand(rng, (1, 1, 48, 32)) for _ in range(3))
        out = np.zeros_like(q)
        with sp.Layout(48, [P.strided_row(8)], 1, 16) as layout:
            t = [sp.Tensor.from_torch(FakeTorch(a)) for a in (q, k, v, out)]
            sp.attention_forward(self.ctx, layout, *t[:3], out=t[3], with_lse=False)
        e_out = ref.attention_forward(q, k, v, reference_masks([P.strided_row(8)], 48, 1, 16),
                                      sp.default_scale(32))[0]
        np.testing.assert_allclose(out, e_out, rtol=1e-4, atol=2e-5)

    def test_context_memory(self):
        # Host memory on the CPU backend; the same calls give device memory on a CUDA context,
        # which is how the GPU benchmarks feed the library without the CUDA toolkit.
        self.assertEqual(self.ctx.memory, sp.Memory.HOST)
        rng = np.random.default_rng(2)
        q, k, v = (rand(rng, (1, 2, 64, 32)) for _ in range(3))
        pats = [P.fixed_block(16, head=0), P.fixed_summary(16, 4, head=1)]
        with sp.Layout(64, pats, 2, 16) as layout:
            bufs = [self.ctx.to_context(a) for a in (q, k, v)]
            ob, ot = self.ctx.empty(q.shape)
            lb, lt = self.ctx.empty(q.shape[:3])
            sp.attention_forward(self.ctx, layout, *(t for _, t in bufs), out=ot, lse=lt)
            out, lse = ob.copy_to(np.empty_like(q)), lb.copy_to(np.empty(q.shape[:3], np.float32))
            for b in [ob, lb] + [b for b, _ in bufs]:
                b.close()
                b.close()
        e_out, e_lse, _ = ref.attention_forward(q, k, v, reference_masks(pats, 64, 2, 16),
                                                sp.default_scale(32))
        np.testing.assert_allclose(out, e_out, rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(lse, e_lse, rtol=1e-5, atol=5e-5)
        with sp.Buffer(self.ctx, 0) as empty:
            self.assertIsNone(empty.ptr)
        with self.assertRaises(ValueError):
            sp.Buffer(self.ctx, 16).copy_from(np.zeros(3, np.float32))

    def test_context_closed_before_its_buffer(self):
        # Context.close() with a Buffer open made the Buffer's close raise "Context is closed"
        # (swallowed in __del__): its memory was never freed. The destroy now waits for it.
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        nbytes = 256 << 20
        ctx = sp.Context("cpu", num_threads=1)
        buf = ctx.alloc(nbytes)
        buf.copy_from(np.ones(nbytes // 4, np.float32))  # touches every page
        ctx.close()
        with self.assertRaises(ValueError):  # closed for new work ...
            ctx.alloc(16)
        with self.assertRaises(ValueError):
            buf.copy_to(np.zeros(nbytes // 4, np.float32))
        if os.path.exists("/proc/self/statm"):
            before = rss()
            buf.close()  # ... and destroyed with its last buffer
            self.assertLess(rss(), before - nbytes // 2)
        buf.close()
        ctx.close()

    def test_buffer_is_not_copied(self):
        # copy.copy(buf) made a second owner of the same memory: both closes freed it (glibc:
        # "double free detected", abort) and counted twice against the context's open buffers.
        import copy
        import pickle
        buf = self.ctx.alloc(16)
        for f in (copy.copy, copy.deepcopy, pickle.dumps):
            with self.assertRaises(TypeError):
                f(buf)
        buf.close()
        # The other handles: a Context, Model or Dataset copy was a second owner too (copy.copy
        # returned one: both closes destroyed the handle); a Layout never changes and is shared.
        for make in (lambda: sp.Context("cpu", num_threads=1),
                     lambda: sp.Model(self.ctx, tiny_config())):
            h = make()
            for f in (copy.copy, copy.deepcopy, pickle.dumps):
                with self.assertRaises(TypeError):
                    f(h)
            h.close()
        layout = sp.Layout(64, [P.dense()], 2, 16)
        self.assertIs(copy.copy(layout), layout)
        self.assertIs(copy.deepcopy({"l": layout})["l"], layout)
        with self.assertRaises(TypeError):
            pickle.dumps(layout)
        layout.close()
        # The operator's cached Layout (sparse_attention.layout): deep-copied with the module
        # holding it (an EMA copy of a model), it stays the one object, not a second owner.
        from sparse_attention import layout as cached
        shared = cached.Layout.dense(64, num_heads=2, block_size=16)
        self.assertIs(copy.deepcopy([shared])[0], shared)
        self.assertIs(copy.copy(shared), shared)

    def test_unfused_algorithm_matches_fused(self):
        rng = np.random.default_rng(9)
        with sp.Layout(150, [P.strided_row(12, head=0), P.strided_column(12, head=1)], 2,
                       32) as layout:
            q, k, v, g = (rng.standard_normal((2, 2, 150, 32)).astype(np.float32)
                          for _ in range(4))
            results = []
            for algorithm in (sp.ATTENTION_FUSED, sp.ATTENTION_UNFUSED):
                out, lse = sp.attention_forward(self.ctx, layout, q, k, v, algorithm=algorithm)
                grads = sp.attention_backward(self.ctx, layout, q, k, v, out, lse, g,
                                              algorithm=algorithm)
                results.append((out, lse) + tuple(grads))
            for a, b in zip(*results):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
            fused = sp.attention_workspace_size(self.ctx, layout, 2, 32, backward=True)
            unfused = sp.attention_workspace_size(self.ctx, layout, 2, 32, backward=True,
                                                  algorithm=sp.ATTENTION_UNFUSED)
            blocks = layout.stats()["nnz_blocks"]
            self.assertGreaterEqual(unfused, 2 * 2 * blocks * 32 * 32 * 4)
            self.assertGreater(unfused, fused)

    def test_workspace_size(self):
        with sp.Layout(256, [P.strided_row(16)], 2, 32) as layout:
            self.assertGreaterEqual(sp.attention_workspace_size(self.ctx, layout, 1, 64), 0)
            with self.assertRaises(sp.SparseError) as e:
                sp.attention_workspace_size(self.ctx, layout, 0, 64)
            self.assertEqual(e.exception.status, sp.Status.INVALID_ARGUMENT)


class Errors(unittest.TestCase):
    """Bad input comes back as SparseError (status + message) or ValueError, never a crash."""

    @classmethod
    def setUpClass(cls):
        cls.ctx = sp.Context(sp.Backend.CPU, num_threads=1)
        cls.layout = sp.Layout(64, [P.strided_row(8)], 2, 16)

    @classmethod
    def tearDownClass(cls):
        cls.layout.close()
        cls.ctx.close()

    def qkv(self, shape=(1, 2, 64, 32), dtype=np.float32):
        rng = np.random.default_rng(0)
        return [rng.standard_normal(shape).astype(dtype) for _ in range(3)]

    def test_library_rejects_wrong_seq_len(self):
        q, k, v = self.qkv((1, 2, 48, 32))
        t = [sp.Tensor.from_array(a) for a in (q, k, v, np.zeros_like(q))]
        st = sp.library().sparse_attention_forward(self.ctx.handle, self.layout.handle, None,
                                                   *(ctypes.byref(x) for x in t), None)
        self.assertEqual(st, sp.Status.INVALID_ARGUMENT)
        self.assertIn("seq_len", sp.last_error())
        with self.assertRaises(ValueError):  # the Python layer checks before calling
            sp.attention_forward(self.ctx, self.layout, q, k, v)

    def test_unsupported_dtype(self):
        q, k, v = self.qkv(dtype=np.float64)
        with self.assertRaises(sp.SparseError) as e:
            sp.attention_forward(self.ctx, self.layout, q, k, v, out=np.zeros_like(q),
                                 with_lse=False)
        self.assertEqual(e.exception.status, sp.Status.UNSUPPORTED)
        self.assertIn("not SPARSE_DTYPE_F64", e.exception.message)  # names the dtype given
        for dt, name in [(np.float16, "SPARSE_DTYPE_F16")]:
            a = q.astype(dt)
            with self.assertRaises(sp.SparseError) as e:
                sp.attention_forward(self.ctx, self.layout, a, a, a, with_lse=False)
            self.assertIn(name, e.exception.message)

    def test_torch_dtypes_without_sparse_dtype_are_unsupported(self):
        # The PyTorch operator's README: other dtypes raise SparseError (UNSUPPORTED) naming
        # the dtype; an int64 tensor raised ValueError from Tensor.from_torch.
        class FakeInt64:
            shape, dtype, is_cuda = (1, 2, 64, 32), "torch.int64", False

            def data_ptr(self):
                return 0

            def stride(self):
                return (4096, 2048, 32, 1)

        with self.assertRaises(sp.SparseError) as e:
            sp.Tensor.from_torch(FakeInt64())
        self.assertEqual(e.exception.status, sp.Status.UNSUPPORTED)
        self.assertIn("torch.int64", e.exception.message)

    def test_overlapping_output(self):
        q, k, v = self.qkv()
        with self.assertRaises(sp.SparseError) as e:
            sp.attention_forward(self.ctx, self.layout, q, k, v, out=q)
        self.assertEqual(e.exception.status, sp.Status.INVALID_ARGUMENT)
        self.assertIn("out", e.exception.message)

    def test_bad_scale(self):
        q, k, v = self.qkv()
        with self.assertRaises(sp.SparseError) as e:
            sp.attention_forward(self.ctx, self.layout, q, k, v, scale=float("nan"))
        self.assertIn("scale", e.exception.message)

    def test_bad_layouts(self):
        for pats, heads, block, word in [
                ([P.fixed_summary(8, 9)], 1, 16, "summary"),
                ([P.strided_row(100)], 1, 16, "stride"),
                ([P.local(0)], 1, 16, "window"),
                ([P.dense(head=3)], 2, 16, "head"),
                ([P.dense()], 1, 24, "block"),
                ([P.longformer(4, [64])], 1, 16, "global")]:
            with self.subTest(word):
                with self.assertRaises(sp.SparseError) as e:
                    sp.Layout(64, pats, heads, block)
                self.assertEqual(e.exception.status, sp.Status.INVALID_ARGUMENT)
                self.assertIn(word, e.exception.message)

    def test_python_side_checks(self):
        q, k, v = self.qkv()
        ro = np.zeros_like(q)
        ro.flags.writeable = False
        with self.assertRaises(ValueError):
            sp.attention_forward(self.ctx, self.layout, q, k, v, out=ro)
        with self.assertRaises(ValueError):  # negative strides cannot be described
            sp.attention_forward(self.ctx, self.layout, q[:, :, ::-1], k, v)
        with self.assertRaises(ValueError):
            sp.attention_forward(self.ctx, self.layout, q, k[:, :, :, :16], v)
        closed = sp.Layout(64, [P.dense()], 2, 16)
        closed.close()
        closed.close()  # idempotent
        with self.assertRaises(ValueError):
            sp.attention_forward(self.ctx, closed, q, k, v)

    def test_shapes_whose_element_count_overflows_are_refused(self):
        # q, k, v broadcast over 2**62 batches (stride 0: a description of 16 KiB each): 2**75
        # elements, a count that wraps around in 64 bits; the library returned OK without
        # computing anything. It must refuse before touching memory.
        q, k, v = self.qkv()
        out = np.zeros_like(q)
        shape = (2**62,) + q.shape[1:]
        inputs = [sp.Tensor.from_pointer(a.ctypes.data, shape, (0,) + tuple(
            s // 4 for s in a.strides[1:])) for a in (q, k, v)]
        big_out = sp.Tensor.from_pointer(out.ctypes.data, shape)
        with self.assertRaises(sp.SparseError) as e:
            sp.attention_forward(self.ctx, self.layout, *inputs, out=big_out, with_lse=False)
        self.assertEqual(e.exception.status, sp.Status.INVALID_ARGUMENT)
        self.assertIn("q of shape [4611686018427387904, 2, 64, 32]", e.exception.message)
        self.assertIn("64-bit", e.exception.message)
        self.assertFalse(out.any())
        # The same broadcast inputs with a batch that fits are computed (batch 3, stride 0).
        shape3 = (3,) + q.shape[1:]
        inputs3 = [sp.Tensor.from_pointer(a.ctypes.data, shape3, (0,) + tuple(
            s // 4 for s in a.strides[1:])) for a in (q, k, v)]
        out3, _ = sp.attention_forward(self.ctx, self.layout, *inputs3,
                                       out=np.zeros(shape3, np.float32), with_lse=False)
        ref, _ = sp.attention_forward(self.ctx, self.layout, q, k, v)
        for b in range(3):
            np.testing.assert_array_equal(out3[b], ref[0])

    def test_context_settings_are_refused_not_wrapped(self):
        # ctypes stored num_threads 2**40 as 0 (= all hardware threads) and seed -1 as 2**64 - 1.
        for kwargs, field in [({"num_threads": 2**40}, "num_threads"),
                              ({"num_threads": 2**32 + 1}, "num_threads"),
                              ({"device_index": 2**32}, "device_index"),
                              ({"seed": -1}, "seed"), ({"seed": 2**64}, "seed")]:
            with self.subTest(field), self.assertRaises(ValueError) as cm:
                sp.Context("cpu", **kwargs)
            self.assertIn(field, str(cm.exception))
        with sp.Context("cpu", num_threads=1, seed=2**64 - 1) as c:
            self.assertEqual(c.num_threads, 1)
            for nbytes in (-1, 2**64):  # size_t: -1 was "cannot allocate 16.00 EiB"
                with self.subTest(nbytes=nbytes), self.assertRaises(ValueError) as cm:
                    c.alloc(nbytes)
                self.assertIn("nbytes", str(cm.exception))
            with self.assertRaises(ValueError):
                c.empty((2, -3))

    def test_from_blocks_block_size_zero_names_it(self):
        with self.assertRaises(ValueError) as cm:  # was ZeroDivisionError
            sp.Layout.from_blocks(64, 0, np.ones((1, 4, 4), np.uint8))
        self.assertIn("block_size = 0", str(cm.exception))
        with self.assertRaises(ValueError) as cm:  # was silently cut to 64
            sp.Layout(64.5, [P.dense()], 1, 16)
        self.assertIn("seq_len", str(cm.exception))

    def test_cuda_without_gpu_or_build(self):
        if sp.backend_available("cuda"):
            self.skipTest("a CUDA device is available")
        with self.assertRaises(sp.SparseError) as e:
            sp.Context("cuda")
        self.assertEqual(e.exception.status, sp.Status.UNSUPPORTED)
        self.assertEqual(sp.Context("auto").backend, sp.Backend.CPU)

    def test_names_and_statuses(self):
        with self.assertRaises(sp.SparseError) as e:
            sp.Context("tpu")
        self.assertEqual(e.exception.status, sp.Status.INVALID_ARGUMENT)
        self.assertEqual(sp.status_string(sp.Status.BUFFER_TOO_SMALL), "buffer too small")
        self.assertEqual(sp.status_string(12345), "unknown status")
        self.assertEqual(sp.api_version() >> 16, sp.API_VERSION_MAJOR)
        self.assertRegex(sp.version(), r"^\d+\.\d+\.\d+$")
        self.assertEqual(P("fixed_summary", stride=4, summary=2).kind, sp.PatternKind.FIXED_SUMMARY)
        for kind in sp.PatternKind:
            self.assertEqual(sp.library().sparse_pattern_kind_name(kind).decode(),
                             kind.name.lower())


def tiny_config(**fields):
    base = dict(seq_len=32, num_layers=2, d_model=16, num_heads=2, stride=4, block_size=16,
                position_shape=[8, 4])
    base.update(fields)
    return sp.model_config(**base)


class Model(unittest.TestCase):
    """The model API through the binding: documented invariants, not numbers of its own."""

    @classmethod
    def setUpClass(cls):
        cls.ctx = sp.Context("cpu", num_threads=1)
        rng = np.random.default_rng(0)
        cls.tokens = rng.integers(0, 256, (2, 32), dtype=np.uint8)

    @classmethod
    def tearDownClass(cls):
        cls.ctx.close()

    def test_train_evaluate_sample(self):
        cfg = tiny_config()
        with sp.Model(self.ctx, cfg, sp.train_config(learning_rate=3e-3, warmup_steps=0)) as m:
            self.assertEqual(m.parameter_count, sp.parameter_count(cfg))
            self.assertEqual((m.config.d_model, m.config.layer_cycle), (16, b"12"))
            self.assertAlmostEqual(m.train_config.learning_rate, 3e-3, places=7)
            before = m.evaluate(self.tokens)
            self.assertEqual(before, m.evaluate(self.tokens))  # evaluation changes nothing
            bits = m.token_bits(self.tokens)
            self.assertEqual(bits.shape, self.tokens.shape)
            self.assertAlmostEqual(float(bits.mean()), before, places=5)
            stats = [m.train_step(self.tokens) for _ in range(15)]
            self.assertEqual(m.step, 15)
            self.assertEqual(stats[-1]["step"], 15)
            self.assertEqual(stats[-1]["tokens"], self.tokens.size)
            for st in stats:
                self.assertAlmostEqual(st["bits_per_dim"], st["loss"] / np.log(2), places=9)
            self.assertLess(m.evaluate(self.tokens), before - 0.5)  # it fits the batch
            self.assertIn("step 15/30", sp.progress_line(stats[-1], 30, 1.0))
            g1 = m.sample(32, b"abc", temperature=0.0)
            self.assertEqual(g1, m.sample(32, b"abc", temperature=0.0))
            self.assertEqual((len(g1), g1[:3]), (32, b"abc"))
            self.assertEqual(m.sample(20, seed=7), m.sample(20, seed=7))
            self.assertGreater(m.measure_memory(self.tokens), 0)
            with self.assertRaises(sp.SparseError):
                m.sample(33)  # longer than seq_len
            with self.assertRaises(ValueError):
                m.train_step(self.tokens[:, :31])

    def test_checkpoint_resume_is_exact(self):
        import tempfile
        cfg, tc = tiny_config(), sp.train_config(learning_rate=1e-3)
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, 256, (2, 32), dtype=np.uint8) for _ in range(4)]
        with tempfile.TemporaryDirectory() as tmp, sp.Model(self.ctx, cfg, tc) as m:
            path = os.path.join(tmp, "tiny.safetensors")
            for b in batches[:2]:
                m.train_step(b)
            m.save(path)
            cont = [m.train_step(b)["loss"] for b in batches[2:]]
            with sp.Model.load(self.ctx, path) as r:
                self.assertEqual(r.step, 2)
                self.assertEqual([r.train_step(b)["loss"] for b in batches[2:]], cont)
            m.restore(path)
            self.assertEqual(m.step, 2)
            with open(path, "r+b") as f:  # corrupt the payload
                f.seek(-8, os.SEEK_END)
                f.write(b"garbage!")
            with self.assertRaises(sp.SparseError) as e:
                sp.Model.load(self.ctx, path)
            self.assertEqual(e.exception.status, sp.Status.FORMAT)
            with self.assertRaises(sp.SparseError) as e:
                sp.Model.load(self.ctx, os.path.join(tmp, "missing"))
            self.assertEqual(e.exception.status, sp.Status.IO)

    def test_config_errors(self):
        with self.assertRaises(sp.SparseError) as e:
            sp.Model(self.ctx, tiny_config(d_model=15))
        self.assertEqual(e.exception.status, sp.Status.INVALID_ARGUMENT)
        with self.assertRaises(sp.SparseError):
            sp.model_config("no-such-preset")
        with self.assertRaises(AttributeError):
            sp.model_config(no_such_field=1)
        big = sp.model_config("cifar10")
        self.assertEqual((big.num_layers, big.d_model, big.layer_cycle), (128, 256, b"2111"))
        self.assertGreater(sp.parameter_count(big), 10**7)

    def test_position_shape_list_sets_the_number_of_tables(self):
        c = sp.model_config(seq_len=96, position_shape=(4, 8, 3))
        self.assertEqual(c.num_position_dims, 3)
        self.assertEqual(list(c.position_shape), [4, 8, 3, 0])
        c = sp.model_config(seq_len=96, position_shape=[96, 1], num_position_dims=1)
        self.assertEqual(c.num_position_dims, 1)
        with self.assertRaises(ValueError):
            sp.model_config(position_shape=[])

    def test_tokens_outside_bytes_are_refused_not_wrapped(self):
        # np.ascontiguousarray(tokens, dtype=np.uint8) turned 300 into 44, -1 into 255 and 3.7
        # into 3: the model trained on other tokens than the caller's, without a word.
        with sp.Model(self.ctx, tiny_config()) as m:
            wide = self.tokens.astype(np.int64)
            self.assertEqual(m.evaluate(wide), m.evaluate(self.tokens))  # in range: accepted
            self.assertEqual(m.evaluate(self.tokens.tolist()), m.evaluate(self.tokens))
            for bad, word in [(wide + 256, "[0, 255]"), (wide - 256, "[0, 255]"),
                              (self.tokens.astype(np.float64) + 0.5, "float64"),
                              (self.tokens.astype(bool), "bool")]:
                for f in (m.evaluate, m.train_step, m.token_bits, m.measure_memory):
                    with self.subTest(word, f=f.__name__), self.assertRaises(ValueError) as cm:
                        f(bad)
                    self.assertIn(word, str(cm.exception))
            self.assertEqual(m.step, 0)

    def test_paths_with_nul_bytes_are_refused(self):
        # ctypes cut "dir/x\0y" to "dir/x": save wrote another file than the one named.
        import tempfile
        with tempfile.TemporaryDirectory() as tmp, sp.Model(self.ctx, tiny_config()) as m:
            bad = os.path.join(tmp, "x\0y.safetensors")
            for f in (m.save, m.restore, lambda p: sp.Model.load(self.ctx, p),
                      lambda p: sp.Dataset("text", p, seq_len=8)):
                with self.assertRaises(ValueError) as cm:
                    f(bad)
                self.assertIn("NUL", str(cm.exception))
            self.assertEqual(os.listdir(tmp), [])
            good = os.path.join(tmp, "ü ñ 模型 with spaces.safetensors")  # unicode, spaces
            m.save(good)
            with sp.Model.load(self.ctx, good) as r:
                self.assertEqual(r.config.d_model, 16)
            with self.assertRaises(sp.SparseError) as e:  # a folder is not a checkpoint
                m.save(tmp)
            self.assertEqual(e.exception.status, sp.Status.IO)
            self.assertIn("folder", e.exception.message)

    def test_config_integers_are_refused_not_wrapped(self):
        # ctypes stored num_layers 2**33 as 0: the library then named a value the caller never
        # gave (num_layers = 0).
        for fields, field in [({"num_layers": 2**33}, "num_layers"),
                              ({"seq_len": 2**64 + 32}, "seq_len"), ({"seed": -1}, "seed")]:
            with self.subTest(field), self.assertRaises(ValueError) as cm:
                sp.model_config(**fields)
            self.assertIn(field, str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            sp.train_config(warmup_steps=2**63)
        self.assertIn("warmup_steps", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            sp.Dataset("synthetic_text", seq_len=2**64 + 8)
        self.assertIn("seq_len", str(cm.exception))
        with self.assertRaises(ValueError) as cm:  # was KeyError: 'BOGUS'
            sp.Dataset("synthetic_text", split="bogus")
        self.assertIn("train, valid, test", str(cm.exception))
        with sp.Model(self.ctx, tiny_config()) as m:
            with self.assertRaises(ValueError) as cm:
                m.sample(8, seed=2**64)
            self.assertIn("seed", str(cm.exception))
            with self.assertRaises(sp.SparseError) as e:  # was a MemoryError allocating 1 TiB
                m.sample(2**40)
            self.assertIn("length = 1099511627776", e.exception.message)


class Datasets(unittest.TestCase):
    def test_text_file_splits(self):
        # datasets/README.md: train = bytes [0, 0.9 n), valid = [0.9 n, 0.95 n), consecutive
        # windows of seq_len; checked against the file itself.
        import tempfile
        data = np.random.default_rng(3).integers(0, 256, 10000, dtype=np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bytes.bin")
            data.tofile(path)
            with sp.Dataset("text", path, seq_len=100, shuffle=0) as d:
                self.assertEqual((len(d), d.seq_len, d.vocab_size), (90, 100, 256))
                np.testing.assert_array_equal(d.read(0, 90), data[:9000].reshape(90, 100))
                np.testing.assert_array_equal(d.read(5, 2, np.int32),
                                              data[500:700].reshape(2, 100).astype(np.int32))
                tokens, idx = d.next_batch(3)
                np.testing.assert_array_equal(idx, [0, 1, 2])
                self.assertEqual(d.position, (0, 3))
                self.assertEqual(d.label(0), -1)
                with self.assertRaises(sp.SparseError) as e:
                    d.read(89, 2)
                self.assertEqual(e.exception.status, sp.Status.INVALID_ARGUMENT)
                with self.assertRaises(sp.SparseError) as e:
                    d.entropy()
                self.assertEqual(e.exception.status, sp.Status.UNSUPPORTED)
            with sp.Dataset("text", path, "valid", seq_len=100) as d:
                np.testing.assert_array_equal(d.read(0, 5), data[9000:9500].reshape(5, 100))
        with self.assertRaises(sp.SparseError) as e:
            sp.Dataset("text", "/nonexistent/file", seq_len=100)
        self.assertEqual(e.exception.status, sp.Status.IO)

    def test_synthetic_batches_cover_an_epoch(self):
        with sp.Dataset(sp.DatasetKind.SYNTHETIC_TEXT, seq_len=64, num_sequences=12, vocab=16,
                        seed=5) as d:
            self.assertEqual((len(d), d.seq_len, d.vocab_size), (12, 64, 16))
            tokens, idx = d.next_batch(12)
            self.assertEqual(sorted(idx.tolist()), list(range(12)))  # one shuffled epoch
            np.testing.assert_array_equal(tokens, d.read(0, 12)[idx])
            self.assertTrue((tokens < 16).all())
            self.assertIn(d.position, [(0, 12), (1, 0)])  # epoch done (or rolled over)
            d.seek(0, 4)
            np.testing.assert_array_equal(d.next_batch(2)[1], idx[4:6])
            entropy, nll = d.entropy()
            self.assertTrue(0 < entropy <= 4.0 and 0 < nll, (entropy, nll))

    def test_mulaw_against_its_formula(self):
        x = np.linspace(-1.2, 1.2, 1001).astype(np.float32)
        c = np.clip(x.astype(np.float64), -1, 1)
        f = np.sign(c) * np.log1p(255 * np.abs(c)) / np.log(256)
        np.testing.assert_array_equal(sp.mulaw_encode(x), np.round((f + 1) / 2 * 255))
        q = np.arange(256, dtype=np.uint8)
        t = q / 255 * 2 - 1
        np.testing.assert_allclose(sp.mulaw_decode(q), np.sign(t) * (256 ** np.abs(t) - 1) / 255,
                                   atol=1e-6)
        self.assertIn(sp.audio_supported(), (True, False))


class Bindings(unittest.TestCase):
    """The ctypes declarations against the headers and the compiled struct layouts."""

    def test_prototypes_match_headers(self):
        import abi
        h = abi.parse_headers()
        for name, (ret, types, _, header) in h.functions.items():
            if header not in BOUND_HEADERS:
                continue
            with self.subTest(name):
                self.assertTrue(name in sp.PROTOTYPES, f"{name} ({header}) is not bound")
                res, args = sp.PROTOTYPES[name]
                self.assertEqual(len(args), len(types), f"{name}: arity")
                for a, t in zip(args, types):
                    is_ptr = a in (ctypes.c_void_p, ctypes.c_char_p) or \
                        isinstance(a, type(ctypes.POINTER(ctypes.c_int)))
                    self.assertEqual(is_ptr, t.endswith("*"), f"{name}: {a} for {t}")
                self.assertEqual(res is None, ret == "void", f"{name}: return type")
        for name in sp.PROTOTYPES:
            self.assertTrue(name in h.functions, f"{name} is bound but declared in no header")

    def test_struct_sizes_reported_by_the_library(self):
        lib = sp.library()
        for cls, fn in [(sp.Settings, "sparse_settings_default"),
                        (sp.LayoutDesc, "sparse_layout_desc_default"),
                        (sp.AttentionParams, "sparse_attention_params_default")]:
            s = cls()
            sp.check(getattr(lib, fn)(ctypes.byref(s)))
            self.assertEqual(s.struct_size, ctypes.sizeof(cls), cls.__name__)
        d = sp.LayoutDesc()
        sp.check(lib.sparse_layout_desc_default(ctypes.byref(d)))
        self.assertEqual(d.pattern_struct_size, ctypes.sizeof(sp.PatternStruct))
        t = sp.Tensor()
        shape = (ctypes.c_int64 * 3)(2, 3, 4)
        sp.check(lib.sparse_tensor_contiguous(ctypes.byref(t), None, sp.DType.F64, 3, shape))
        self.assertEqual((t.ndim, t.dtype, list(t.strides)[:3]), (3, 3, [12, 4, 1]))

    def test_struct_layouts_match_compiled_headers(self):
        import abi
        import shutil
        if not shutil.which(os.environ.get("CC", "cc").split()[0]):
            self.skipTest("no C compiler")
        h = abi.parse_headers()
        p = abi.probe(h)
        for cname, cls in sp.STRUCTS.items():
            with self.subTest(cname):
                size, align, fields = abi.layout_of(h, p, cname)
                self.assertEqual(ctypes.sizeof(cls), size)
                self.assertEqual(ctypes.alignment(cls), align)
                self.assertEqual([f for f, _ in cls._fields_], list(fields))
                for f, _ in cls._fields_:
                    self.assertEqual(getattr(cls, f).offset, fields[f][0], f)
                    self.assertEqual(getattr(cls, f).size, fields[f][1], f)
        for (enum_name, const), value in p["const"].items():
            py = {"sparse_status": sp.Status, "sparse_dtype": sp.DType,
                  "sparse_memory": sp.Memory, "sparse_backend": sp.Backend,
                  "sparse_pattern_kind": sp.PatternKind}.get(enum_name)
            if py is not None:
                self.assertEqual(p["enum"][enum_name], ctypes.sizeof(ctypes.c_int))
                short = const.split("_", 2)[2] if enum_name != "sparse_status" else \
                    const.replace("SPARSE_ERR_", "").replace("SPARSE_", "")
                if enum_name == "sparse_pattern_kind":
                    short = const.replace("SPARSE_PATTERN_", "")
                self.assertEqual(py[short], value, const)
        self.assertEqual(p["define"]["SPARSE_TENSOR_MAX_DIMS"], sp.TENSOR_MAX_DIMS)
        self.assertEqual(p["define"]["SPARSE_API_VERSION_MAJOR"], sp.API_VERSION_MAJOR)


if __name__ == "__main__":
    unittest.main(verbosity=2)
