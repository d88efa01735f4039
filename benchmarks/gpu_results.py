#!/usr/bin/env python3
"""results/gpu_attention.md and .json from the archives of `tests/gpu_check.sh run` and `peers`.

    tar -xzf gpu_check.tar.gz -C RUN2; tar -xzf gpu_peers.tar.gz -C PEERS
    benchmarks/gpu_results.py --check RUN2/gpu_check [--earlier RUN1/gpu_check] \
        [--peers PEERS/gpu_peers] [--exclude-peer libsparse] --notes results/gpu/findings_2026-11-30.md \
        --out results/gpu_attention

Reads: provenance.txt and steps.tsv of each run; attention_checks.jsonl (every comparison of a
GPU result with the CPU reference, tests/attention_check.hpp's record()); the sanitizer logs; the
benchmark JSON lines gpu_attention_<dtype>.jsonl (sparse-repro bench-attention through
benchmarks/cpu_attention_table.py); gpu_attention_peers.json (PyTorch SDPA and FlexAttention).
Writes the Markdown report (figures from those files; the hand-written findings come from
--notes) and one JSON document with the same figures. `--exclude-peer IMPL` leaves out a peer
implementation's timings that are known to be wrong (the reason goes into the notes)."""
import argparse
import collections
import contextlib
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import write_atomically  # noqa: E402

TENSORS = ("out", "lse", "dq", "dk", "dv")
# gpu_attention_<name>.jsonl; bf16_fwd1 / bf16_fwd2: the first / second 16-bit forward kernel
# (SPARSE_CUDA_TC_FORWARD=1 / 2, `gpu_check.sh quick`; `run`'s bf16 and f16 files time the first).
BENCH = ("bf16", "bf16_fwd1", "bf16_fwd2", "f16", "f32", "unfused")


class BadInput(Exception):
    """A file of the archive is missing or malformed (the message names it)."""


@contextlib.contextmanager
def reading(path, line=None):
    """Turns an error while reading `path` (at `line`) into a BadInput naming them."""
    where = f"{path}, line {line}" if line is not None else path
    try:
        yield
    except BadInput:
        raise
    except OSError as e:
        raise BadInput(f"{where}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}: not JSON ({e.msg})") from None
    except KeyError as e:
        raise BadInput(f"{where}: no field {e}") from None
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise BadInput(f"{where}: malformed ({type(e).__name__}: {e})") from None


def json_lines(path):
    """(line number, record) of each non-empty line of a JSON Lines file."""
    with reading(path), open(path, encoding="utf-8") as f:
        lines = list(enumerate(f, 1))
    for number, line in lines:
        if line.strip():
            with reading(path, number):
                r = json.loads(line)
                if not isinstance(r, dict):
                    raise BadInput(f"{path}, line {number}: not a JSON object")
            yield number, r


def read_provenance(folder):
    keep = ("command", "date", "gpu", "cuda (driver)", "nvcc", "pack: commit", "compute-sanitizer")
    prov = {}
    path = os.path.join(folder, "provenance.txt")
    with reading(path), open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition(": ")
            if key == "pack" and value.startswith("commit "):
                key, value = "pack: commit", value[len("commit "):]
            if key in keep and key not in prov:
                prov[key] = value
    return prov


def read_steps(folder):
    path = os.path.join(folder, "steps.tsv")
    with reading(path), open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    if not lines:
        raise BadInput(f"{path}: empty (no header line step, verdict, seconds, note)")
    head, rows = lines[0], lines[1:]
    missing = [k for k in ("step", "verdict", "seconds") if k not in head]
    if missing:
        raise BadInput(f"{path}: the header line has no column {', '.join(missing)}")
    # A row cut short (a run stopped while writing it) keeps its first columns.
    return [dict(zip(head, r + [""] * (len(head) - len(r)))) for r in rows]


def correctness(folder):
    path = os.path.join(folder, "attention_checks.jsonl")
    agg = collections.OrderedDict()
    total = failed = 0
    for number, r in json_lines(path):
        with reading(path, number):
            total += 1
            failed += not r["ok"]
            key = (r["kernel"], r["head_dim"])
            a = agg.setdefault(key, {"kernel": r["kernel"], "head_dim": r["head_dim"],
                                     "block_sizes": set(), "layouts": set(), "comparisons": 0,
                                     "failed": 0, "max_norm_error": {}, "worst_row": 0.0})
            a["comparisons"] += 1
            a["failed"] += not r["ok"]
            a["block_sizes"].add(r["block_size"])
            a["layouts"].add(r["layout"])
            err = r["norm_error"] if r["norm_error"] is not None else math.inf
            t = r["tensor"]
            a["max_norm_error"][t] = max(a["max_norm_error"].get(t, 0.0), err)
            a["worst_row"] = max(a["worst_row"], r["worst_row"] or 0.0)
    rows = []
    for a in sorted(agg.values(), key=lambda a: (a["kernel"], a["head_dim"])):
        a["block_sizes"] = sorted(a["block_sizes"])
        a["layouts"] = len(a["layouts"])
        rows.append(a)
    return {"comparisons": total, "failed": failed, "by_kernel": rows}


def sanitizer(folder):
    found = {}
    for tool in ("memcheck", "racecheck"):
        path = os.path.join(folder, f"sanitizer_{tool}.log")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if "SUMMARY" in ln]
        found[tool] = lines[-1] if lines else "no summary line"
    return found


def benchmarks(folder):
    rows = []
    for name in BENCH:
        path = os.path.join(folder, f"gpu_attention_{name}.jsonl")
        if not os.path.exists(path):
            continue
        for number, r in json_lines(path):
            with reading(path, number):
                if "pattern" not in r:
                    continue
                rows.append({k: r.get(k) for k in (
                    "dtype", "algorithm", "mode", "pattern", "n", "heads", "head_dim", "block",
                    "density", "time_sparse_s", "time_dense_s", "dense_baseline", "time_ratio",
                    "tflops_computed")})
                if name.endswith("_fwd2"):
                    rows[-1]["algorithm"] += " (forward v2)"
                elif name.endswith("_fwd1"):
                    rows[-1]["algorithm"] += " (forward v1)"
    return rows


def peers(folder, exclude):
    path = os.path.join(folder, "gpu_attention_peers.json")
    with reading(path):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        prov = doc["provenance"]
        needs = [(prov, ("command", "torch", "reps", "shapes"), "provenance"),
                 (prov["shapes"], ("batch", "heads"), "provenance.shapes")]
        needs += [(r, ("impl", "mode", "n", "head_dim"), f"rows[{i}]")
                  for i, r in enumerate(doc["rows"])]
        for record, keys, what in needs:
            missing = [k for k in keys if k not in record]
            if missing:
                raise BadInput(f"{path}: {what} has no field {', '.join(missing)}")
        rows = [r for r in doc["rows"] if r["impl"] not in exclude]
    return prov, rows


def fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def markdown(doc, notes):
    md = ["# GPU attention kernels on an H200: correctness, sanitizers, timings\n",
          "Generated by `benchmarks/gpu_results.py` from the archives of `tests/gpu_check.sh run` "
          "(and `peers`); the findings section is written by hand (`--notes`). Do not edit the "
          "figures by hand.\n"]
    md.append("## Provenance\n")
    for label, run in doc["runs"].items():
        p = run["provenance"]
        md.append(f"- **{label}**: `{p.get('command', '?')}` on {p.get('gpu', '?')} (driver, "
                  f"memory, compute capability, max SM clock), CUDA driver {p.get('cuda (driver)', '?')}, "
                  f"{p.get('date', '?')}; binaries built here with nvcc {p.get('nvcc', '?')} from commit "
                  f"{p.get('pack: commit', '?')}.")
    md.append("")
    if notes:
        md.append(notes.rstrip() + "\n")
    for label, run in doc["runs"].items():
        md.append(f"## Steps of the {label}\n")
        md.append("| step | verdict | seconds | note |\n|---|---|---:|---|")
        for s in run["steps"]:
            note = s.get("note", "").replace("|", "/")
            md.append(f"| {s['step']} | {s['verdict']} | {s['seconds']} | {note} |")
        md.append("")
    c = doc["correctness"]
    md.append("## Correctness against the CPU reference\n")
    md.append(f"{c['comparisons']} comparisons of a GPU result with the CPU reference on the same "
              f"(rounded) inputs, {c['failed']} failed (the rule and its bounds: "
              "`tests/attention_check.hpp`). Each cell is the largest normalised error "
              "sum (g - w)^2 / sum w^2 of that output over the cases (layouts, shapes, storage "
              "orders, logit scales); the table per kernel, head size, block size and layout is "
              "`results/gpu/gpu_correctness.md`. 'worst row' is the largest ||g_r - w_r|| / "
              "||w_r||: a dq or dk row whose terms cancel is bounded by the size of its terms "
              "(the terms rule), not by its own small norm, so it can exceed 1 in a passing "
              "comparison; so can the normalised error of a dq or dk that is zero in exact "
              "arithmetic (one key per query).\n")
    md.append("| kernel | head_dim | block sizes | layouts | comparisons | "
              + " | ".join(TENSORS) + " | worst row | failed |")
    md.append("|---|---:|---|---:|---:|" + "---:|" * len(TENSORS) + "---:|---:|")
    for r in c["by_kernel"]:
        errs = " | ".join(fmt(r["max_norm_error"].get(t), ".2e") for t in TENSORS)
        md.append(f"| {r['kernel']} | {r['head_dim']} | {','.join(map(str, r['block_sizes']))} | "
                  f"{r['layouts']} | {r['comparisons']} | {errs} | {r['worst_row']:.2e} | "
                  f"{r['failed']} |")
    md.append("")
    md.append("## compute-sanitizer\n")
    for tool, line in doc["sanitizer"].items():
        md.append(f"- {tool} (`test_cuda_attention -tc=\"*sanitizer sweep*\"`): `{line}`")
    md.append("")
    md.append("## Timings: libsparse against the cuBLAS dense baseline (same run)\n")
    md.append("`sparse-repro bench-attention --backend cuda` through "
              "`benchmarks/cpu_attention_table.py` (its full tables: `results/gpu/`). TFLOP/s "
              "counts the computed blocks' flops; `vs dense` = our time / the dense causal "
              "attention's time (cuBLAS GEMMs and a softmax kernel for the fused kernels, the same "
              "kernels on the dense layout for the unfused one).\n")
    md.append("| dtype | algorithm | mode | pattern | n | heads | head_dim | density | our s | "
              "dense s | vs dense | TFLOP/s |")
    md.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in doc["benchmarks"]:
        md.append(f"| {r['dtype']} | {r['algorithm']} | {r['mode']} | {r['pattern']} | {r['n']} | "
                  f"{r['heads']} | {r['head_dim']} | {100 * r['density']:.2f}% | "
                  f"{fmt(r['time_sparse_s'], '.5f')} | {fmt(r['time_dense_s'], '.5f')} | "
                  f"{fmt(r['time_ratio'], '.3f')} | {fmt(r['tflops_computed'], '.1f')} |")
    md.append("")
    if doc.get("peers"):
        p = doc["peers"]
        md.append("## PyTorch on the same GPU\n")
        md.append(f"`{p['provenance']['command']}`: torch {p['provenance']['torch']}, batch "
                  f"{p['provenance']['shapes']['batch']}, {p['provenance']['shapes']['heads']} "
                  f"heads, bf16, CUDA events, median of {p['provenance']['reps']} after an L2 "
                  f"flush. Left out: {', '.join(p['excluded']) or 'nothing'} (see the findings).\n")
        md.append("| implementation | pattern | mode | n | head_dim | s | TFLOP/s | error |")
        md.append("|---|---|---|---:|---:|---:|---:|---|")
        for r in p["rows"]:
            err = (r.get("error") or "")[:90].replace("|", "/")
            md.append(f"| {r['impl']} | {r.get('pattern', 'dense causal')} | {r['mode']} | "
                      f"{r['n']} | {r['head_dim']} | {fmt(r.get('time_s'), '.5f')} | "
                      f"{fmt(r.get('tflops'), '.1f')} | {err} |")
        md.append("")
        if doc.get("vs_sdpa"):
            md.append("Rates against SDPA's (the issue's target: bf16 fused forward on computed "
                      "blocks >= 0.5 of SDPA's rate at n = 16384, d = 64). `peers`: our dense "
                      "causal layout timed in the peers run itself, beside SDPA (same tensors, "
                      "same heads): the kernels side by side. `bench`: our rate from the check "
                      "run's benchmark (2 heads) against SDPA's from the peers run (4 heads): "
                      "rates, not times, are compared.\n")
            md.append("| source | mode | n | head_dim | kernel | pattern (ours) | ours TFLOP/s | "
                      "SDPA TFLOP/s | ratio |")
            md.append("|---|---|---:|---:|---|---|---:|---:|---:|")
            for r in doc["vs_sdpa"]:
                md.append(f"| {r['source']} | {r['mode']} | {r['n']} | {r['head_dim']} | "
                          f"{r['algorithm']} | {r['pattern']} | {r['ours']:.1f} | "
                          f"{r['sdpa']:.1f} | {r['ratio']:.2f} |")
            md.append("")
    return "\n".join(md) + "\n"


def main():
    try:
        report()
    except BadInput as e:
        sys.exit(f"gpu_results: {e}")


def report():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", required=True, help="the unpacked gpu_check folder of the run")
    ap.add_argument("--earlier", help="an earlier run's gpu_check folder (its provenance and steps are listed)")
    ap.add_argument("--peers", help="the unpacked gpu_peers folder")
    ap.add_argument("--exclude-peer", action="append", default=[],
                    help="a peer implementation whose timings are left out")
    ap.add_argument("--notes", help="Markdown file with the hand-written findings")
    ap.add_argument("--out", required=True, help="output path without extension")
    a = ap.parse_args()
    for folder in filter(None, (a.check, a.earlier, a.peers)):
        if not os.path.isdir(folder):
            sys.exit(f"gpu_results: {folder} is not a folder (unpack the archive first)")
    runs = collections.OrderedDict()
    if a.earlier:
        runs["earlier run"] = {"provenance": read_provenance(a.earlier), "steps": read_steps(a.earlier)}
    runs["latest run"] = {"provenance": read_provenance(a.check), "steps": read_steps(a.check)}
    doc = {"runs": runs, "correctness": correctness(a.check), "sanitizer": sanitizer(a.check),
           "benchmarks": benchmarks(a.check)}
    if a.peers:
        prov, rows = peers(a.peers, set(a.exclude_peer))
        # A folder of `gpu_check.sh peers` has its run's provenance and steps; a peers JSON run
        # on its own (`gpu_check.sh exec`) carries its provenance inside.
        if os.path.exists(os.path.join(a.peers, "provenance.txt")):
            runs["peers run"] = {"provenance": read_provenance(a.peers),
                                 "steps": read_steps(a.peers)}
        doc["peers"] = {"provenance": prov, "rows": rows, "excluded": a.exclude_peer}
        sdpa = {(r["mode"], r["n"], r["head_dim"]): r["tflops"] for r in rows
                if r["impl"] == "sdpa-flash-dense" and r.get("tflops")}
        # Ours on the dense causal layout in the peers run: the same work as SDPA's.
        doc["vs_sdpa"] = [
            {"source": "peers", "mode": r["mode"], "n": r["n"], "head_dim": r["head_dim"],
             "algorithm": "fused", "pattern": "dense", "ours": r["tflops"],
             "sdpa": sdpa[(r["mode"], r["n"], r["head_dim"])],
             "ratio": r["tflops"] / sdpa[(r["mode"], r["n"], r["head_dim"])]}
            for r in rows
            if r["impl"] == "libsparse" and r.get("pattern") == "dense" and r.get("tflops")
            and (r["mode"], r["n"], r["head_dim"]) in sdpa]
        doc["vs_sdpa"] += [
            {"source": "bench", "mode": b["mode"], "n": b["n"], "head_dim": b["head_dim"],
             "algorithm": b["algorithm"], "pattern": b["pattern"],
             "ours": b["tflops_computed"],
             "sdpa": sdpa[(b["mode"], b["n"], b["head_dim"])],
             "ratio": b["tflops_computed"] / sdpa[(b["mode"], b["n"], b["head_dim"])]}
            for b in doc["benchmarks"]
            if b["dtype"] == "bf16" and b["algorithm"].startswith("fused") and b["tflops_computed"]
            and (b["mode"], b["n"], b["head_dim"]) in sdpa]
    notes = ""
    if a.notes:
        with reading(a.notes), open(a.notes, encoding="utf-8") as f:
            notes = f.read()
    write_atomically(a.out + ".json", json.dumps(doc, indent=1, default=list) + "\n")
    write_atomically(a.out + ".md", markdown(doc, notes))
    print(f"gpu_results: wrote {a.out}.md and {a.out}.json "
          f"({doc['correctness']['comparisons']} comparisons, {len(doc['benchmarks'])} timings)")


if __name__ == "__main__":
    main()
