#!/usr/bin/env python3
"""benchmarks/text_scaling.py on a generated text file with two tiny step counts:

- each run's tokens seen equal steps x batch 16 x n 128 (the main job's text settings);
- the held-out figure is the valid and test figures weighted by their windows, and lies between
  them; both splits together are the last 10% of the file in 128-byte windows;
- the Markdown table shows the JSON's numbers, and the xz row comes from main_job.json;
- bad input (a missing data file) fails with a message naming it, and writes nothing.

usage: test_text_scaling.py <sparse-repro> <source root>
"""
import json
import math
import os
import random
import subprocess
import sys
import tempfile

exe, root = (os.path.abspath(a) for a in sys.argv[1:3])
script = os.path.join(root, "benchmarks", "text_scaling.py")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


with tempfile.TemporaryDirectory() as tmp:
    # Word-like text, 40 kB: the held-out part is 4,000 bytes = 31 windows of 128.
    rng = random.Random(5)
    words = ["the", "sparse", "transformer", "attention", "of", "a", "byte", "model", "[[link]]"]
    text = " ".join(rng.choice(words) for _ in range(9000)).encode()[:40000]
    data = os.path.join(tmp, "sample.txt")
    with open(data, "wb") as f:
        f.write(text)
    out = os.path.join(tmp, "out")
    os.makedirs(out)
    with open(os.path.join(out, "main_job.json"), "w") as f:
        json.dump({"enwik8_sample_baselines": {"gzip -9 (zlib)": 3.5, "xz -9e (liblzma)": 1.25}}, f)
    p = subprocess.run([sys.executable, script, "--repro", exe, "--data", "text:" + data,
                        "--steps", "4,2", "--out", out], capture_output=True, text=True)
    check(p.returncode == 0, f"text_scaling.py exit {p.returncode}: {p.stderr}")
    with open(os.path.join(out, "enwik8_sample_scaling.json")) as f:
        res = json.load(f)
    with open(os.path.join(out, "enwik8_sample_scaling.md")) as f:
        md = f.read()
    runs = res["runs"]
    check([r["steps"] for r in runs] == [2, 4], f"steps {[r['steps'] for r in runs]}")
    held_windows = (len(text) - len(text) * 9 // 10) // 128
    for r in runs:
        check(r["tokens_seen"] == r["steps"] * 16 * 128, f"tokens seen {r['tokens_seen']}")
        check(r["held_out_bytes"] in (held_windows * 128, (held_windows - 1) * 128),
              f"held-out bytes {r['held_out_bytes']} vs {held_windows} windows")
        lo = min(r["valid_bits_per_byte"], r["test_bits_per_byte"])
        hi = max(r["valid_bits_per_byte"], r["test_bits_per_byte"])
        check(lo - 1e-12 <= r["held_out_bits_per_byte"] <= hi + 1e-12, "held-out between splits")
        check(f"{r['held_out_bits_per_byte']:.3f} |" in md, f"{r['held_out_bits_per_byte']:.3f} in md")
        check(4.0 < r["held_out_bits_per_byte"] < 8.5, f"plausible bits {r['held_out_bits_per_byte']}")
    check(res["xz_bits_per_byte"] == 1.25 and "| 1.250 |" in md, "xz row from main_job.json")
    a, b = runs
    per = (a["held_out_bits_per_byte"] - b["held_out_bits_per_byte"]) / math.log2(2)
    if per > 0:
        check(f"fell {per:.3f} bits per doubling" in md, "per-doubling sentence")
    check(res["provenance"]["commit"] != "", "provenance commit")

    # Bad input.
    out2 = os.path.join(tmp, "out2")
    p = subprocess.run([sys.executable, script, "--repro", exe, "--data",
                        "text:" + os.path.join(tmp, "missing.txt"), "--out", out2],
                       capture_output=True, text=True)
    check(p.returncode != 0 and "missing.txt" in p.stderr, f"missing file: {p.stderr!r}")
    check(not os.path.exists(os.path.join(out2, "enwik8_sample_scaling.md")), "nothing written")

print("FAIL" if failures else "PASS")
sys.exit(1 if failures else 0)
