#!/usr/bin/env python3
"""CPU speed of the sparse_attention PyTorch operator against PyTorch's own ways to compute the
same attention, side by side in one process on the same tensors and threads:

  sparse_attention   sparse_attention.attention(q, k, v, layout)  (libsparse's CPU backend)
  sdpa+mask          F.scaled_dot_product_attention(q, k, v, attn_mask=layout.to_dense())
                     (PyTorch's fused CPU flash-attention kernel with a boolean mask)
  flex               FlexAttention (torch.compile'd, fullgraph) with a BlockMask built by
                     create_block_mask from the pattern's token rule (forward only: PyTorch has no
                     CPU backward for FlexAttention)

Forward, and forward + backward for the first two (gradients of sum(out * w)). Before timing,
each peer's output is checked against the operator's (max |diff| recorded). Times are medians of
--reps runs after one warm-up; the ratio column divides a peer's time by the operator's.

    python3 benchmarks/peers/torch_attention_cpu.py --n 4096,16384 --out results/torch_attention_cpu

Needs PyTorch and the sparse_attention package (pip install ., or SPARSE_LIBRARY=<build>/
libsparse.so to use capi/bindings/python from this tree). Writes <out>.md and <out>.json
atomically.
"""
import argparse
import json
import os
import statistics
import sys
import time
import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from provenance import cpu_model, git_commit, write_atomically  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="4096,16384", help="sequence lengths, comma-separated")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--stride", type=int, default=128, help="strided pattern: l")
    p.add_argument("--threads", type=int, default=0, help="0 = os.cpu_count()")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-backward", action="store_true")
    p.add_argument("--out", default="", help="write <out>.md and <out>.json")
    return p.parse_args()


def timed(fn, reps):
    fn()  # warm-up (compiles FlexAttention on its first call)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    a = parse_args()
    if os.environ.get("SPARSE_LIBRARY"):
        sys.path.insert(0, os.path.join(ROOT, "capi", "bindings", "python"))
    import torch
    import torch.nn.functional as F
    import sparse_attention as sa
    from sparse_attention import sparse_ctypes as sc

    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    ns = [int(x) for x in a.n.split(",")]
    B, H, d, l = a.batch, a.heads, a.head_dim, a.stride
    rows = []
    wall0 = time.monotonic()
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, fullgraph=True, dynamic=False)
    except Exception as e:  # an older PyTorch
        flex, flex_error = None, f"{type(e).__name__}: {e}"

    def mask_mod(b, h, q_idx, kv_idx):  # even heads strided row, odd heads strided column
        causal = kv_idx <= q_idx
        row = q_idx - kv_idx <= l
        column = (q_idx - kv_idx) % l == 0
        return causal & torch.where(h % 2 == 0, row, column)

    for n in ns:
        layout = sa.Layout.strided(n, l, H, block_size=a.block)
        g = torch.Generator().manual_seed(n)
        q, k, v, w = (torch.randn(B, H, n, d, generator=g) for _ in range(4))
        dense = torch.from_numpy(layout.to_dense())
        base = {"n": n, "batch": B, "heads": H, "head_dim": d, "block": a.block, "stride": l,
                "density": round(layout.density, 4)}

        def add(impl, mode, seconds, diff=None, note=""):
            rows.append(dict(base, impl=impl, mode=mode, seconds=seconds,
                             max_abs_diff=diff, note=note))
            print(json.dumps(rows[-1]), flush=True)

        with torch.no_grad():
            ours = sa.attention(q, k, v, layout)
            add("sparse_attention", "forward", timed(lambda: sa.attention(q, k, v, layout),
                                                     a.reps))
            ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
            add("sdpa+mask", "forward",
                timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense), a.reps),
                float((ref - ours).abs().max()))
            del ref
            if flex is None:
                add("flex", "forward", None, note=flex_error)
            else:
                try:
                    bm = create_block_mask(mask_mod, 1, H, n, n, device="cpu")
                    fo = flex(q, k, v, block_mask=bm)
                    add("flex", "forward", timed(lambda: flex(q, k, v, block_mask=bm), a.reps),
                        float((fo - ours).abs().max()))
                    del fo, bm
                except Exception as e:
                    add("flex", "forward", None, note=f"{type(e).__name__}: {str(e)[:200]}")
        if a.no_backward:
            continue
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

        def ours_fb():
            for t in (qg, kg, vg):
                t.grad = None
            (sa.attention(qg, kg, vg, layout) * w).sum().backward()

        def sdpa_fb():
            for t in (qg, kg, vg):
                t.grad = None
            (F.scaled_dot_product_attention(qg, kg, vg, attn_mask=dense) * w).sum().backward()

        ours_fb()
        mine = [t.grad.clone() for t in (qg, kg, vg)]
        add("sparse_attention", "forward+backward", timed(ours_fb, a.reps))
        try:
            sdpa_fb()
            diff = max(float((t.grad - m).abs().max()) for t, m in zip((qg, kg, vg), mine))
            add("sdpa+mask", "forward+backward", timed(sdpa_fb, a.reps), diff)
        except Exception as e:  # e.g. out of memory at large n
            add("sdpa+mask", "forward+backward", None, note=f"{type(e).__name__}: {e}"[:200])
        add("flex", "forward+backward", None,
            note="not run: PyTorch has no CPU backward for FlexAttention")
        del mine, qg, kg, vg

    for r in rows:
        mine = next(x for x in rows if x["n"] == r["n"] and x["mode"] == r["mode"]
                    and x["impl"] == "sparse_attention")
        r["ratio"] = (round(r["seconds"] / mine["seconds"], 2)
                      if r["seconds"] and mine["seconds"] else None)

    prov = {
        "command": "python3 benchmarks/peers/torch_attention_cpu.py " + " ".join(sys.argv[1:]),
        "commit": git_commit(ROOT),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu_model()}, {os.cpu_count()} logical CPUs",
        "threads": threads,
        "load_average_1min_before": round(load, 2),
        "torch": f"{torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()})",
        "library": f"libsparse {sc.version()}; {sc.build_info()}; {sc.library()._name}",
        "wall_s": round(time.monotonic() - wall0, 1),
    }
    if not a.out:
        return 0
    md = ["# The PyTorch operator on the CPU: sparse_attention vs SDPA + mask vs FlexAttention", "",
          "Generated by `benchmarks/peers/torch_attention_cpu.py`; do not edit by hand.", "",
          "| provenance | |", "|---|---|"]
    md += [f"| {k.replace('_', ' ')} | {('`' + v + '`') if k == 'command' else v} |"
           for k, v in prov.items()]
    md += ["", f"Strided pattern (even heads row, odd heads column, l = {l}), batch {B}, {H} "
           f"heads, head_dim {d}, block {a.block}, fp32. `ratio` = the peer's time / "
           "sparse_attention's (above 1: the operator is faster). `max |diff|` = largest "
           "difference of the peer's output (gradients for forward+backward) from the "
           "operator's. SDPA gets the layout's [heads, n, n] boolean mask "
           "(`layout.to_dense()`); FlexAttention a BlockMask from create_block_mask over the "
           "same token rule, compiled with fullgraph=True (the first, compiling call is not "
           "timed).", "",
           "| n | mode | impl | seconds | ratio | max abs diff | note |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = f"{r['seconds']:.4f}" if r["seconds"] else "-"
        diff = f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] is not None else "-"
        md.append(f"| {r['n']} | {r['mode']} | {r['impl']} | {s} | "
                  f"{r['ratio'] if r['ratio'] else '-'} | {diff} | {r['note']} |")
    write_atomically(a.out + ".md", "\n".join(md) + "\n")
    write_atomically(a.out + ".json", json.dumps({"provenance": prov, "rows": rows}, indent=1)
                     + "\n")
    print(f"wrote {a.out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
