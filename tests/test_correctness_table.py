#!/usr/bin/env python3
"""benchmarks/correctness_table.py on hand-made records whose maxima are known: one row per
kernel, head size, block size and layout, the largest normalised error of each output, a
non-finite error shown as such and counted as failed, '-' for an output a case did not compare,
kernels in the order they ran; a line that is not a record is refused with its line number."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "correctness_table.py")


def rec(kernel, layout, tensor, norm, worst_row=1e-3, ok=True, d=64, block=64):
    return {"kernel": kernel, "layout": layout, "tensor": tensor, "batch": 1, "heads": 2,
            "n": 256, "head_dim": d, "block_size": block, "order": 0, "q_scale": 1,
            "norm_error": norm, "worst_row": worst_row, "bad_elements": 0 if ok else 3,
            "bad_rows": 0, "ok": ok}


def run(lines, *args):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "record.jsonl")
        with open(path, "wb") as f:
            f.write(b"".join(x if isinstance(x, bytes) else x.encode() for x in lines))
        r = subprocess.run([sys.executable, SCRIPT, path, *args], capture_output=True, text=True)
        return r


def main():
    records = [
        rec("fused bf16", "strided_row(l=8)+strided_column(l=8)", "out", 1e-5),
        rec("fused bf16", "strided_row(l=8)+strided_column(l=8)", "out", 3e-5, worst_row=2e-2),
        rec("fused bf16", "strided_row(l=8)+strided_column(l=8)", "lse", 2e-7),
        rec("fused bf16", "strided_row(l=8)+strided_column(l=8)", "dq", 4e-4),
        rec("fused bf16", "strided_row(l=8)+strided_column(l=8)", "dk", 1e-4),
        rec("fused bf16", "strided_row(l=8)+strided_column(l=8)", "dv", None, None, ok=False),
        rec("fused fp32", "dense", "out", 1e-12, d=32, block=16),
        rec("fused bf16", "dense", "out", 5e-6, d=128),
    ]
    r = run([json.dumps(x) + "\n" for x in records])
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| fused")]
    assert rows == [
        "| fused bf16 | 64 | 64 | strided_row(l=8)+strided_column(l=8) | 6 | 3.00e-05 | 2.00e-07 "
        "| 4.00e-04 | 1.00e-04 | non-finite | non-finite | 1 |",
        "| fused bf16 | 128 | 64 | dense | 1 | 5.00e-06 | - | - | - | - | 1.00e-03 | 0 |",
        "| fused fp32 | 32 | 16 | dense | 1 | 1.00e-12 | - | - | - | - | 1.00e-03 | 0 |",
    ], "\n".join(rows)
    assert "8 comparisons of a GPU result with the CPU reference, 1 failed" in r.stdout, r.stdout
    assert "- fused bf16, strided_row(l=8)+strided_column(l=8), head_dim 64, block 64, n 256: dv " \
           "normalised error non-finite, 3 bad elements" in r.stdout, r.stdout

    # --out and --provenance: the file holds the provenance first, then the same table.
    with tempfile.TemporaryDirectory() as tmp:
        prov = os.path.join(tmp, "provenance.txt")
        with open(prov, "w") as f:
            f.write("gpu: NVIDIA H200\n")
        out = os.path.join(tmp, "table.md")
        r2 = run([json.dumps(x) + "\n" for x in records], "--provenance", prov, "--out", out)
        assert r2.returncode == 0 and r2.stdout == "", r2.stderr
        text = open(out).read()
        assert text.startswith("# GPU kernels against the CPU reference\n\n```\ngpu: NVIDIA H200\n```"), text
        assert rows[0] in text

    # Not a record: refused, naming the line.
    bad = run([json.dumps(records[0]) + "\n", "\n", json.dumps({"kernel": "x"}) + "\n"])
    assert bad.returncode == 1 and "record.jsonl:3" in bad.stderr and "tensor" in bad.stderr, bad.stderr
    bad = run(["{not json\n"])
    assert bad.returncode == 1 and "record.jsonl:1: not JSON" in bad.stderr, bad.stderr

    # Fields of the wrong kind are refused naming the line and the field (a string error raised
    # ValueError from the formatting, a string head_dim a TypeError from the sort, a string "ok"
    # counted as passing, an unknown tensor was dropped from the cells but counted).
    for field, value, named in [("norm_error", "abc", "norm_error must be a number or null"),
                                ("head_dim", "64", "head_dim must be an integer"),
                                ("ok", "false", "ok must be true or false"),
                                ("tensor", "dbias", "tensor must be one of out, lse"),
                                ("kernel", 7, "kernel must be a non-empty string")]:
        r = dict(records[0], **{field: value})
        bad = run([json.dumps(records[0]) + "\n", json.dumps(r) + "\n"])
        assert bad.returncode == 1 and "record.jsonl:2: " + named in bad.stderr, (field, bad.stderr)
    # An empty record (the test skipped: no GPU) is not a table of 0 comparisons, 0 failed.
    bad = run([])
    assert bad.returncode == 1 and "no comparison records" in bad.stderr, (bad.stdout, bad.stderr)
    bad = run([json.dumps(records[0]) + "\n", b"\xff\xfe\n"])
    assert bad.returncode == 1 and "record.jsonl:2: not UTF-8" in bad.stderr, bad.stderr
    # NaN and Infinity (which Python's json reads) are non-finite errors, as null is.
    nan = dict(records[6], norm_error=float("nan"), worst_row=float("inf"))
    r = run([json.dumps(nan) + "\n"])
    assert r.returncode == 0 and "| fused fp32 | 32 | 16 | dense | 1 | non-finite |" in r.stdout, r.stdout
    # A missing --provenance file and an unwritable --out: a message, not a traceback.
    for args, named in [(["--provenance", "/nonexistent/p.txt"], "/nonexistent/p.txt"),
                        (["--out", "/proc/table.md"], "/proc")]:
        bad = run([json.dumps(records[0]) + "\n"], *args)
        assert bad.returncode == 1 and bad.stderr.startswith("correctness_table: ") and \
            named in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    # A '|' or a line break in a kernel or layout name does not break the table's row.
    odd = dict(records[6], kernel="fused|odd\nname", layout="a|b")
    r = run([json.dumps(odd) + "\n"])
    assert r.returncode == 0 and "| fused\\|odd name | 32 | 16 | a\\|b | 1 |" in r.stdout, r.stdout
    print("ok: correctness table")


if __name__ == "__main__":
    main()
