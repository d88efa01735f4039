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
        with open(path, "w") as f:
            f.write("".join(lines))
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
    print("ok: correctness table")


if __name__ == "__main__":
    main()
