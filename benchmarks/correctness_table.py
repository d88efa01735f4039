#!/usr/bin/env python3
"""The correctness table of the GPU kernels: from the JSON lines that tests/test_cuda_attention
writes with SPARSE_CHECK_RECORD=FILE (one line per comparison of a GPU result with the CPU
reference, passing or not), the largest normalised error sum (g - w)^2 / sum w^2 of each output
(out, lse, dq, dk, dv) per kernel, head size, block size and layout, the largest per-row relative
error, and the comparisons that failed.

Usage: benchmarks/correctness_table.py RECORD.jsonl [--provenance FILE] [--out OUT.md]
Without --out the table goes to standard output; with it, the file is written atomically.
Exit status 1, with a message, when a line is not a comparison record (named with its line number
and the field), when the file holds none (an empty record: the test did not run on a GPU) or when
a file cannot be read or written.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import write_atomically  # noqa: E402

TENSORS = ["out", "lse", "dq", "dk", "dv"]
FIELDS = ["kernel", "layout", "tensor", "head_dim", "block_size", "norm_error", "worst_row", "ok"]


def _field_error(r):
    """Why the record `r` (a dict with every field of FIELDS) has a field of the wrong kind, or
    None. A non-finite error (NaN, Infinity: Python's json reads them) becomes None, as the
    recorder writes it."""
    for k in ("kernel", "layout"):
        if not isinstance(r[k], str) or not r[k]:
            return f"{k} must be a non-empty string, given {json.dumps(r[k])}"
    if r["tensor"] not in TENSORS:
        return f"tensor must be one of {', '.join(TENSORS)}, given {json.dumps(r['tensor'])}"
    for k in ("head_dim", "block_size"):
        if isinstance(r[k], bool) or not isinstance(r[k], int):
            return f"{k} must be an integer, given {json.dumps(r[k])}"
    for k in ("norm_error", "worst_row"):
        v = r[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"{k} must be a number or null, given {json.dumps(v)}"
        if v is not None and not math.isfinite(v):
            r[k] = None
    if not isinstance(r["ok"], bool):
        return f"ok must be true or false, given {json.dumps(r['ok'])}"
    return None


def read_records(path):
    records = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
            missing = [k for k in FIELDS if not isinstance(r, dict) or k not in r]
            if missing:
                raise ValueError(f"{path}:{number}: not a comparison record (no {', '.join(missing)})")
            error = _field_error(r)
            if error:
                raise ValueError(f"{path}:{number}: {error}")
            records.append(r)
    if not records:
        raise ValueError(f"{path}: no comparison records (empty: did the test run on a GPU, with "
                         "SPARSE_CHECK_RECORD set?)")
    return records


def worst(values):
    """The largest value; None (a non-finite error, written as null) wins."""
    if any(v is None for v in values):
        return None
    return max(values) if values else None


def cell(value, present):
    if not present:
        return "-"
    return "non-finite" if value is None else f"{value:.2e}"


def md(text):
    """`text` as one Markdown table cell: '|' escaped, line breaks as spaces."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def render(records):
    kernels = []  # in the order the test ran them
    for r in records:
        if r["kernel"] not in kernels:
            kernels.append(r["kernel"])
    groups = {}
    for r in records:
        key = (kernels.index(r["kernel"]), r["head_dim"], r["block_size"], r["layout"])
        groups.setdefault(key, []).append(r)
    failed = [r for r in records if not r["ok"]]
    lines = [
        f"{len(records)} comparisons of a GPU result with the CPU reference, "
        f"{len(failed)} failed. Each cell is the largest normalised error "
        "sum (g - w)^2 / sum w^2 over the cases of its row (shapes, storage orders, logit "
        "scales); 'worst row' is the largest ||g_r - w_r|| / ||w_r|| over every output's rows.",
        "",
        "| kernel | head_dim | block | layout | comparisons | " + " | ".join(TENSORS) +
        " | worst row | failed |",
        "|---|---:|---:|---|---:|" + "---:|" * len(TENSORS) + "---:|---:|",
    ]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3])):
        rs = groups[key]
        cells = []
        for t in TENSORS:
            of_t = [r["norm_error"] for r in rs if r["tensor"] == t]
            cells.append(cell(worst(of_t), bool(of_t)))
        rows = [r["worst_row"] for r in rs]
        lines.append(f"| {md(kernels[key[0]])} | {key[1]} | {key[2]} | {md(key[3])} | {len(rs)} | " +
                     " | ".join(cells) + f" | {cell(worst(rows), True)} | "
                     f"{sum(1 for r in rs if not r['ok'])} |")
    if failed:
        lines += ["", "Failed comparisons (the test's log has their first mismatches):", ""]
        for r in failed:
            lines.append(f"- {md(r['kernel'])}, {md(r['layout'])}, head_dim {r['head_dim']}, block "
                         f"{r['block_size']}, n {r.get('n', '?')}: {r['tensor']} normalised error "
                         f"{cell(r['norm_error'], True)}, {r.get('bad_elements', '?')} bad "
                         f"elements, {r.get('bad_rows', '?')} bad rows")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", help="the JSON lines written with SPARSE_CHECK_RECORD")
    ap.add_argument("--provenance", help="a text file put first, in a code block")
    ap.add_argument("--out", help="the Markdown table (default: standard output)")
    args = ap.parse_args()
    try:
        records = read_records(args.record)
        text = "# GPU kernels against the CPU reference\n\n"
        if args.provenance:
            with open(args.provenance, encoding="utf-8") as f:
                text += "```\n" + f.read().rstrip("\n") + "\n```\n\n"
        text += render(records)
        if args.out:
            write_atomically(args.out, text)
        else:
            sys.stdout.write(text)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        print(f"correctness_table: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
