#!/usr/bin/env python3
"""Side-by-side GPU timing of block-sparse attention: libsparse's fused kernels (through ctypes,
capi/bindings/python/sparse_ctypes.py), PyTorch scaled_dot_product_attention (dense causal, flash
backend) and PyTorch FlexAttention with the *same* block mask, forward and forward + backward, in
one run on one GPU. Writes Markdown + JSON with provenance.

usage: benchmarks/peers/gpu_attention_peers.py [--build build] [--n 16384,4096,65536]
           [--head-dim 64,128] [--pattern strided,fixed,dense] [--time-budget S]
           [--out results/gpu_attention_peers]
       benchmarks/peers/gpu_attention_peers.py --dry-run      (no GPU, no PyTorch: the plan, each
           configuration's computed blocks and FLOPs, from the library's layouts)
       benchmarks/peers/gpu_attention_peers.py --self-check   (CPU only: checks that the
           FlexAttention mask built here equals the library's layout, element by element)

Patterns: strided and fixed (the paper's, heads alternating between its two rules) and dense (the
dense causal layout: the same work as SDPA's causal attention, so `vs SDPA rate` there compares
the kernels themselves). The same block mask: FlexAttention's BlockMask is built from the layout's own block mask
(sparse_layout_block_mask: 0 skipped, 1 partial, 2 full), partial blocks through a mask_mod that
applies the pattern's token-level rule. Heads the library computes in the transposed order
(strided column heads) are given to FlexAttention in that same order (q, k, v gathered per head,
padding masked), so both compute the same blocks; the gather is outside the timed region.

FLOPs: 4 B^2 d per computed block forward, 14 B^2 d forward + backward (backward = 2.5x forward);
SDPA dense causal is counted as n (n + 1) / 2 elements. `TFLOP/s` is computed-block FLOPs over
time (for SDPA: dense causal FLOPs over time). Timings: CUDA events around each repetition,
median of --reps after --warmup runs, the L2 cache flushed (a buffer of twice its size
overwritten) before every repetition, outside the timed region; inputs bf16 from torch.randn
(never zeros).

FlexAttention runs compiled, never on its unfused eager path: every (shape, mode) is compiled on
purpose (the compile caches reset, torch.compile(fullgraph=True, dynamic=False), recompile
limits raised), warm-up runs do the compiling, the timed repetitions run with recompiles made
errors, and PyTorch's "unfused implementation" warning is an error: a configuration that would
fall back is recorded as an error, never timed. Results are written after every configuration,
and --time-budget stops starting new ones, so a cut-short run still leaves its table.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "capi", "bindings", "python"))
sys.path.insert(0, os.path.dirname(HERE))


def fail(message):
    sys.stderr.write(f"gpu_attention_peers: {message}\n")
    sys.exit(2)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--n", default="16384,4096,65536",
                    help="sequence lengths, in the order run (the most telling first)")
    ap.add_argument("--head-dim", default="64,128")
    ap.add_argument("--pattern", default="strided,fixed")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--summary", type=int, default=32)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--time-budget", type=float, default=0,
                    help="seconds; no configuration starts after this (0: no limit)")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "gpu_attention_peers"))
    ap.add_argument("--self-check", action="store_true",
                    help="CPU only: compare the FlexAttention masks with the layout and exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the configurations with their computed blocks and FLOPs, then exit")
    a = ap.parse_args()
    try:
        a.n_list = [int(x) for x in a.n.split(",")]
        a.d_list = [int(x) for x in a.head_dim.split(",")]
    except ValueError:
        fail(f"--n and --head-dim take comma-separated integers (got --n {a.n!r}, "
             f"--head-dim {a.head_dim!r})")
    a.patterns = a.pattern.split(",")
    a.mode_list = a.modes.split(",")
    for p in a.patterns:
        if p not in ("strided", "fixed", "dense"):
            fail(f"--pattern takes strided, fixed and/or dense (got {p!r})")
    for m in a.mode_list:
        if m not in ("fwd", "fwdbwd"):
            fail(f"--modes takes fwd and/or fwdbwd (got {m!r})")
    if any(n < 1 for n in a.n_list) or any(d < 1 for d in a.d_list):
        fail("--n and --head-dim must be positive")
    return a


def configurations(a):
    """(d, n, pattern, mode) in the order run: per shape, forward then forward + backward."""
    return [(d, n, p, m) for d in a.d_list for n in a.n_list for p in a.patterns
            for m in a.mode_list]


def flop_factor(mode):
    return 4.0 if mode == "fwd" else 14.0


def dry_run(a):
    sp = import_sparse(a.build)
    print(f"{'d':>4} {'n':>6} {'pattern':>8} {'mode':>7} {'nnz_blocks':>10} {'density':>8} "
          f"{'GFLOP':>9} {'SDPA GFLOP':>10}")
    for d, n, pattern, mode in configurations(a):
        layout, _ = make_layout(sp, pattern, n, a)
        st = layout.stats()
        flops = flop_factor(mode) * st["nnz_blocks"] * a.block ** 2 * d * a.batch
        dense = flop_factor(mode) * a.batch * a.heads * n * (n + 1) / 2 * d
        print(f"{d:>4} {n:>6} {pattern:>8} {mode:>7} {st['nnz_blocks']:>10} "
              f"{100 * st['density']:>7.2f}% {flops / 1e9:>9.1f} {dense / 1e9:>10.1f}")
    shapes = len(a.d_list) * len(a.n_list) * len(a.patterns) * len(a.mode_list)
    print(f"{shapes} FlexAttention compilations (one per shape and mode)")
    return 0


def import_torch(need_cuda):
    try:
        import torch  # noqa: F401
    except ImportError as e:
        fail(f"PyTorch is not installed ({e}); this script runs on the GPU machine")
    import torch
    if need_cuda and not torch.cuda.is_available():
        fail(f"PyTorch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is "
             "False); run it on the GPU machine")
    return torch


def import_sparse(build):
    lib = os.path.join(build, "libsparse.so")
    if "SPARSE_LIBRARY" not in os.environ and os.path.exists(lib):
        os.environ["SPARSE_LIBRARY"] = lib
    try:
        import sparse_ctypes as sp
        sp.library()
    except Exception as e:  # noqa: BLE001 - report any load failure plainly
        fail(f"cannot load libsparse ({e}); build it first or set SPARSE_LIBRARY")
    return sp


# ------------------------------------------------------------------ patterns and masks

def head_kinds(pattern, heads):
    """Per head: the token rule of the bench's multi-head patterns (heads alternate)."""
    if pattern == "strided":
        return ["strided_row" if h % 2 == 0 else "strided_column" for h in range(heads)]
    if pattern == "fixed":
        return ["fixed_block" if h % 2 == 0 else "fixed_summary" for h in range(heads)]
    if pattern == "dense":  # the dense causal layout: the same work as SDPA's causal attention
        return ["dense"] * heads
    raise ValueError(f"unknown pattern {pattern!r} (strided, fixed or dense)")


def make_layout(sp, pattern, n, a):
    kinds = head_kinds(pattern, a.heads)
    patterns = []
    for h, kind in enumerate(kinds):
        if kind == "strided_row":
            patterns.append(sp.Pattern.strided_row(a.stride, head=h))
        elif kind == "strided_column":
            patterns.append(sp.Pattern.strided_column(a.stride, head=h))
        elif kind == "fixed_block":
            patterns.append(sp.Pattern.fixed_block(a.stride, head=h))
        elif kind == "dense":
            patterns.append(sp.Pattern.dense(head=h))
        else:
            patterns.append(sp.Pattern.fixed_summary(a.stride, a.summary, head=h))
    return sp.Layout(n, patterns, num_heads=a.heads, block_size=a.block), kinds


class ComputedOrder:
    """Per head, the natural position of each computed index (the library's order: natural, or
    the strided-column transposed order p = (t mod chunk) l + t div chunk); N = padded length."""

    def __init__(self, torch, layout, kinds, n, a, device):
        nb = max(layout.stats(h)["num_blocks"] for h in range(a.heads))
        self.N = nb * a.block
        t = torch.arange(self.N, device=device)
        rows = []
        for h in range(a.heads):
            if layout.stats(h)["transposed"]:
                chunk = -(-n // a.stride)
                p = (t % chunk) * a.stride + t // chunk
                p = torch.where(t < chunk * a.stride, p, torch.full_like(p, n))
            else:
                p = t
            rows.append(torch.where(p < n, p, torch.full_like(p, n)))
        self.pos = torch.stack(rows)  # [heads, N], n = padding
        self.n = n

    def gather(self, torch, x):
        """x [b, h, n, d] -> [b, h, N, d] in computed order, padding rows zero."""
        pad = torch.zeros_like(x[:, :, :1])
        xp = torch.cat([x, pad], dim=2)
        idx = self.pos[None, :, :, None].expand(x.shape[0], -1, -1, x.shape[3])
        return torch.gather(xp, 2, idx)


def token_rule(torch, kinds, a, qp, kp, h):
    """The token-level rule of capi/include/sparse/layout.h on natural positions (tensors)."""
    l, c = a.stride, a.summary
    causal = kp <= qp
    rules = {
        "strided_row": causal & (qp - kp <= l),
        "strided_column": causal & ((qp - kp) % l == 0),
        "fixed_block": causal & (qp // l == kp // l),
        "fixed_summary": causal & (kp % l >= l - c),
        "dense": causal,
    }
    out = torch.zeros_like(causal)
    for head, kind in enumerate(kinds):
        out = torch.where(h == head, rules[kind], out)
    return out


def make_mask_mod(torch, order, kinds, a):
    pos, n = order.pos, order.n

    def mask_mod(b, h, q_idx, kv_idx):
        qp = pos[h, q_idx]
        kp = pos[h, kv_idx]
        return (qp < n) & (kp < n) & token_rule(torch, kinds, a, qp, kp, h)

    return mask_mod


def make_block_mask(torch, layout, order, kinds, a, device):
    """FlexAttention BlockMask from the layout's block mask (computed order, per head)."""
    from torch.nn.attention.flex_attention import BlockMask
    nb = order.N // a.block
    full = torch.zeros(a.heads, nb, nb, dtype=torch.bool)
    part = torch.zeros(a.heads, nb, nb, dtype=torch.bool)
    for h in range(a.heads):
        m = torch.from_numpy(layout.block_mask(h).astype("int64"))
        k = m.shape[0]
        full[h, :k, :k] = m == 2
        part[h, :k, :k] = m == 1

    def lists(x):
        num = x.sum(-1).to(torch.int32)
        idx = torch.argsort(x.to(torch.int8), dim=-1, descending=True, stable=True)
        return num[None].to(device), idx[None].to(torch.int32).to(device)

    kv_num, kv_idx = lists(part)
    full_num, full_idx = lists(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx,
                                    BLOCK_SIZE=(a.block, a.block),
                                    mask_mod=make_mask_mod(torch, order, kinds, a),
                                    seq_lengths=(order.N, order.N))


# ------------------------------------------------------------------ self-check (CPU)

def self_check(a):
    torch = import_torch(False)
    sp = import_sparse(a.build)
    import numpy as np
    small = argparse.Namespace(**vars(a))
    small.stride, small.summary, small.block, small.heads = 12, 4, 16, 4
    bad = 0
    for pattern in ("strided", "fixed", "dense"):
        for n in (50, 97, 160):
            layout, kinds = make_layout(sp, pattern, n, small)
            order = ComputedOrder(torch, layout, kinds, n, small, "cpu")
            q = torch.arange(n)
            for h in range(small.heads):
                want = layout.mask(h)
                got = token_rule(torch, kinds, small, q[:, None], q[None, :],
                                 torch.tensor(h)).numpy()
                if not np.array_equal(got, want):
                    bad += 1
                    print(f"mask mismatch: {pattern} n={n} head {h} ({kinds[h]})")
            # The BlockMask's blocks must be exactly the layout's in computed order.
            mm = make_mask_mod(torch, order, kinds, small)
            t = torch.arange(order.N)
            for h in range(small.heads):
                elem = mm(0, torch.tensor(h), t[:, None], t[None, :])
                nb = order.N // small.block
                blocks = elem.reshape(nb, small.block, nb, small.block).any(3).any(1).numpy()
                lm = layout.block_mask(h) > 0
                k = lm.shape[0]
                if not (np.array_equal(blocks[:k, :k], lm) and not blocks[k:].any()
                        and not blocks[:, k:].any()):
                    bad += 1
                    print(f"block mismatch: {pattern} n={n} head {h} ({kinds[h]})")
            # FlexAttention (eager, CPU, fp32) on the computed order equals the library's CPU
            # backend once scattered back to natural order.
            try:
                from torch.nn.attention.flex_attention import flex_attention
                bm = make_block_mask(torch, layout, order, kinds, small, "cpu")
                gen = torch.Generator().manual_seed(n)
                q4, k4, v4 = (torch.randn(1, small.heads, n, 32, generator=gen)
                              for _ in range(3))
                o = flex_attention(*(order.gather(torch, x) for x in (q4, k4, v4)),
                                   block_mask=bm)
                want, _ = sp.attention_forward(sp.Context("cpu"), layout, q4.numpy(),
                                               k4.numpy(), v4.numpy())
                got = torch.zeros(1, small.heads, n + 1, 32)
                idx = order.pos[None, :, :, None].expand(1, -1, -1, 32)
                got.scatter_(2, idx, o)
                got = got[:, :, :n].numpy()
                rows_with_keys = np.array([[layout.row_mask(h, i).any() for i in range(n)]
                                           for h in range(small.heads)])
                diff = np.abs(got - want)[0][rows_with_keys].max()
                if not diff < 1e-4:
                    bad += 1
                    print(f"flex vs library: {pattern} n={n}: max |diff| {diff}")
            except Exception as e:  # noqa: BLE001
                bad += 1
                print(f"flex on CPU failed: {pattern} n={n}: {e}")
    print("self-check:", "ok" if bad == 0 else f"{bad} mismatches")
    return 0 if bad == 0 else 1


# ------------------------------------------------------------------ timing

def timed(torch, fn, reps, warmup, flush, during=None):
    """Median seconds of fn over `reps` repetitions (CUDA events), each after an L2 flush
    (`flush`, outside the events); `during` is a context manager wrapped around the timed
    repetitions (not the warm-up)."""
    import contextlib
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    with during if during is not None else contextlib.nullcontext():
        for _ in range(reps):
            flush.zero_()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def compiled_flex(torch, flex_attention):
    """A freshly compiled FlexAttention (compile caches reset, so this shape compiles on
    purpose instead of hitting a recompile limit and falling back)."""
    import torch._dynamo
    torch._dynamo.reset()
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, 1024)
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(cfg, name):
            setattr(cfg, name, True)
    compiled = torch.compile(flex_attention, fullgraph=True, dynamic=False)
    # The kernel's tiles must divide the block mask's blocks (FlexAttention's default tiles are
    # 128 wide; ours are a.block = 64): forward BLOCK_M x BLOCK_N, backward dK/dV
    # BLOCK_M1 x BLOCK_N1 and dQ BLOCK_M2 x BLOCK_N2.
    def flex(q, k, v, block_mask):
        t = block_mask.BLOCK_SIZE[0]
        return compiled(q, k, v, block_mask=block_mask,
                        kernel_options={"BLOCK_M": t, "BLOCK_N": t, "BLOCK_M1": t // 2,
                                        "BLOCK_N1": t, "BLOCK_M2": t, "BLOCK_N2": t // 2})
    return flex


def no_recompile(torch):
    """Context for timed repetitions: a recompile (which could end on the eager path) raises."""
    return torch._dynamo.config.patch(error_on_recompile=True)


def run(a):
    import time
    import warnings
    t0 = time.monotonic()
    torch = import_torch(True)
    sp = import_sparse(a.build)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import flex_attention
    import torch.nn.functional as F
    from provenance import git_commit, write_atomically

    # FlexAttention's eager (unfused) path announces itself with this warning: make it an error.
    warnings.filterwarnings("error", message=".*unfused implementation.*")
    dev = torch.device("cuda")
    # PyTorch's default stream is the legacy stream, whose handle is 0, and libsparse reads a
    # null cuda_stream as "the context's own stream" (non-blocking): the first GPU run
    # (2026-11-30) timed our kernels with events on a stream they did not run on and reported
    # 1126 TFLOP/s. 0x1 is cudaStreamLegacy, as in sparse_attention/torch_ops.py.
    stream = torch.cuda.current_stream()
    ctx = sp.Context("cuda", cuda_stream=stream.cuda_stream or 0x1)
    l2 = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 64 << 20) or (64 << 20)
    flush = torch.empty(2 * l2 // 4, dtype=torch.float32, device=dev)
    started = datetime.datetime.now(datetime.timezone.utc)
    prov = {"commit": git_commit(), "date_utc": started.strftime("%Y-%m-%d %H:%M"),
            "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "cuda": torch.version.cuda, "libsparse": sp.version(), "build": sp.build_info(),
            "command": " ".join(["benchmarks/peers/gpu_attention_peers.py"] + sys.argv[1:]),
            "l2_flush_bytes": 2 * l2, "reps": a.reps, "warmup": a.warmup,
            "shapes": {"batch": a.batch, "heads": a.heads, "block": a.block, "stride": a.stride,
                       "summary": a.summary, "dtype": "bf16"}}
    rows = []

    def save(note=""):
        prov["wall_s"] = round(time.monotonic() - t0)
        prov["note"] = note
        write_atomically(a.out + ".json", json.dumps({"provenance": prov, "rows": rows},
                                                     indent=1))
        write_atomically(a.out + ".md", markdown(rows, prov))

    def attempt(row, fn, during=None):
        try:
            t = fn() if during is None else fn(during)
            row.update(time_s=t)
        except Exception as e:  # noqa: BLE001 - record and go on
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        return row

    tensors = {}
    note = "complete"
    for d, n, pattern, mode in configurations(a):
        if a.time_budget and time.monotonic() - t0 > a.time_budget:
            note = f"stopped by --time-budget {a.time_budget:g} s before d={d} n={n} {pattern} {mode}"
            print(note, flush=True)
            break
        if tensors.get("key") != (d, n):
            tensors.clear()
            torch.cuda.empty_cache()
            shape = (a.batch, a.heads, n, d)
            gen = torch.Generator(device=dev).manual_seed(n * 1000 + d)
            q, k, v, dout = (torch.randn(shape, device=dev, dtype=torch.bfloat16, generator=gen)
                             for _ in range(4))
            tensors.update(key=(d, n), q=q, k=k, v=v, dout=dout, sdpa_done=set())
        q, k, v, dout = tensors["q"], tensors["k"], tensors["v"], tensors["dout"]
        shape = tuple(q.shape)
        bwd = mode == "fwdbwd"
        ff = flop_factor(mode)
        # SDPA dense causal, flash backend only (an error, not a fallback, if flash cannot run).
        if mode not in tensors["sdpa_done"]:
            tensors["sdpa_done"].add(mode)
            dense_elems = a.batch * a.heads * n * (n + 1) / 2
            qs, ks, vs = (x.detach().clone().requires_grad_(bwd) for x in (q, k, v))

            def sdpa():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
                if bwd:
                    o.backward(dout)

            row = attempt({"n": n, "head_dim": d, "mode": mode, "impl": "sdpa-flash-dense"},
                          lambda: timed(torch, sdpa, a.reps, a.warmup, flush))
            if "time_s" in row:
                row["tflops"] = ff * dense_elems * d / row["time_s"] / 1e12
            rows.append(row)
            del qs, ks, vs
        layout, kinds = make_layout(sp, pattern, n, a)
        st = layout.stats()
        flops = ff * st["nnz_blocks"] * a.block ** 2 * d * a.batch
        base = {"n": n, "head_dim": d, "mode": mode, "pattern": pattern,
                "nnz_blocks": st["nnz_blocks"], "density": st["density"],
                "effective_density": st["effective_density"]}
        # libsparse, fused bf16 kernels, through ctypes on PyTorch's stream.
        out = torch.empty_like(q)
        lse = torch.empty(shape[:3], device=dev, dtype=torch.float32)
        dq, dk, dv = (torch.empty_like(q) for _ in range(3))
        T = sp.Tensor.from_torch
        tq, tk, tv, to, tl, tdo = T(q), T(k), T(v), T(out), T(lse), T(dout)
        tdq, tdk, tdv = T(dq), T(dk), T(dv)

        def ours():
            sp.attention_forward(ctx, layout, tq, tk, tv, out=to, lse=tl)
            if bwd:
                sp.attention_backward(ctx, layout, tq, tk, tv, to, tl, tdo, dq=tdq, dk=tdk,
                                      dv=tdv)

        row = attempt(dict(base, impl="libsparse"),
                      lambda: timed(torch, ours, a.reps, a.warmup, flush))
        if "time_s" in row:
            row["tflops"] = flops / row["time_s"] / 1e12
        rows.append(row)
        del out, lse, dq, dk, dv
        # FlexAttention with the same block mask, computed order, compiled for this shape.
        row_flex = dict(base, impl="flex-attention")

        def flex_time():
            order = ComputedOrder(torch, layout, kinds, n, a, dev)
            bm = make_block_mask(torch, layout, order, kinds, a, dev)
            qf, kf, vf, df = (order.gather(torch, x) for x in (q, k, v, dout))
            qf, kf, vf = (x.detach().requires_grad_(bwd) for x in (qf, kf, vf))
            flex = compiled_flex(torch, flex_attention)
            c0 = time.monotonic()

            def flex_run():
                o = flex(qf, kf, vf, block_mask=bm)
                if bwd:
                    o.backward(df)

            flex_run()  # compiles (forward, and backward when bwd)
            torch.cuda.synchronize()
            row_flex["compile_s"] = round(time.monotonic() - c0, 1)
            return timed(torch, flex_run, a.reps, a.warmup, flush, during=no_recompile(torch))

        attempt(row_flex, flex_time)
        if "time_s" in row_flex:
            row_flex["tflops"] = flops / row_flex["time_s"] / 1e12
        rows.append(row_flex)
        print(json.dumps(row), json.dumps(row_flex), flush=True)
        save("partial: running")
    save(note)
    print(markdown(rows, prov))
    return 0


def markdown(rows, prov):
    md = ["# GPU block-sparse attention vs PyTorch SDPA and FlexAttention\n",
          "Generated by `benchmarks/peers/gpu_attention_peers.py`; do not edit by hand. All "
          "timings from one run on one GPU (CUDA events, median).\n",
          "| provenance | |", "|---|---|"]
    for key in ("command", "commit", "date_utc", "gpu", "torch", "cuda", "libsparse", "build",
                "l2_flush_bytes", "reps", "warmup", "wall_s", "note"):
        if key in prov:
            md.append(f"| {key} | {prov[key]} |")
    md.append(f"| shapes | {json.dumps(prov['shapes'])} |\n")
    md.append("`TFLOP/s`: computed-block FLOPs / time (SDPA: dense causal FLOPs / time). "
              "`vs SDPA rate` = our TFLOP/s / SDPA's (target >= 0.7 forward, >= 0.6 forward + "
              "backward); `vs Flex time` = our time / FlexAttention's (target <= 1).\n")
    sdpa = {(r["n"], r["head_dim"], r["mode"]): r for r in rows if r["impl"].startswith("sdpa")}
    for mode in ("fwd", "fwdbwd"):
        md.append(f"## {'forward' if mode == 'fwd' else 'forward + backward'}\n")
        md.append("| pattern | d | n | density | ours s | ours TFLOP/s | Flex s | SDPA s | "
                  "SDPA TFLOP/s | vs SDPA rate | vs Flex time |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|")
        by = {}
        for r in rows:
            if r["mode"] == mode and "pattern" in r:
                by.setdefault((r["pattern"], r["head_dim"], r["n"]), {})[r["impl"]] = r
        for (pattern, d, n), impls in sorted(by.items()):
            ours, fl = impls.get("libsparse", {}), impls.get("flex-attention", {})
            sd = sdpa.get((n, d, mode), {})

            def f(r, key, fmt):
                return fmt.format(r[key]) if key in r else ("error" if "error" in r else "-")

            rate = (f"{ours['tflops'] / sd['tflops']:.2f}" if "tflops" in ours and
                    "tflops" in sd else "-")
            vs_flex = (f"{ours['time_s'] / fl['time_s']:.2f}" if "time_s" in ours and
                       "time_s" in fl else "-")
            md.append(f"| {pattern} | {d} | {n} | {100 * ours.get('density', math.nan):.2f}% | "
                      f"{f(ours, 'time_s', '{:.5f}')} | {f(ours, 'tflops', '{:.1f}')} | "
                      f"{f(fl, 'time_s', '{:.5f}')} | {f(sd, 'time_s', '{:.5f}')} | "
                      f"{f(sd, 'tflops', '{:.1f}')} | {rate} | {vs_flex} |")
        md.append("")
    errors = [r for r in rows if "error" in r]
    if errors:
        md.append("## errors\n")
        for r in errors:
            md.append(f"- {r['impl']} {r.get('pattern', '')} n={r['n']} d={r['head_dim']} "
                      f"{r['mode']}: {r['error']}")
        md.append("")
    return "\n".join(md)


def main():
    a = parse_args()
    if a.dry_run:
        return dry_run(a)
    if a.self_check:
        return self_check(a)
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
