#!/usr/bin/env python3
"""`sparse-repro main --quick` end to end: every file it promises is written, the tables show the
numbers of its JSON, and its compressor baselines on the Enwik8 sample equal the same costs
computed here independently with Python's zlib, bz2 and lzma on bytes split by this script
(first 90% train, the next 5% + 5% held out, cut into whole sequences of the model's length).

usage: test_main_job.py SPARSE_REPRO   (data: $SPARSE_DATA_DIR or <source root>/../shared/data)"""
import bz2
import json
import lzma
import os
import subprocess
import sys
import tempfile
import zlib

exe = sys.argv[1]
root = os.environ.get("SPARSE_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), ".."))
data_dir = os.environ.get("SPARSE_DATA_DIR", os.path.join(root, "..", "shared", "data"))
enwik8 = os.path.join(data_dir, "enwik8", "enwik8-head-100000")


def gzip_size(b):  # gzip container, level 9, memLevel 9: the driver's deflateInit2 settings
    c = zlib.compressobj(9, zlib.DEFLATED, 31, 9)
    return len(c.compress(b) + c.flush())


def xz_size(b):
    return len(lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                             preset=9 | lzma.PRESET_EXTREME))


def conditional(size, train, held):
    return 8.0 * (size(train + held) - size(train)) / len(held)


def fmt(x):
    return f"{x:.3f}"


with tempfile.TemporaryDirectory() as out:
    proc = subprocess.run([exe, "main", "--quick", "--threads", "1", "--out", out,
                           "--data-dir", data_dir], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sparse-repro main failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    have_text = os.path.exists(enwik8)
    expected = ["main_job.md", "main_job.json", "bpd.md", "memory_table.md", "memory_table.json",
                "synthetic_strided_loss.jsonl", "synthetic_local_loss.jsonl"]
    if have_text:
        expected.append("enwik8_sample_loss.jsonl")
    for name in expected:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 0, f"{name} missing or empty"
    assert not [f for f in os.listdir(out) if ".tmp" in f], "temporary files left behind"

    # The memory table: the paper's eight figures, and the two measured one-layer columns. The
    # unfused (2019-style) pass keeps the scores of every computed block, P and dS in the
    # backward: its workspace is at least twice the table's analytic one-layer sparse figure,
    # and the process really touched most of it.
    table = json.load(open(os.path.join(out, "memory_table.json")))
    assert len(table["rows"]) == 4 and all(r["matches_paper"] for r in table["rows"])
    for r in table["rows"]:
        fused, unfused = r["measured"], r["measured_unfused"]
        assert "error" not in fused and "error" not in unfused, (fused, unfused)
        assert unfused["algorithm"] == "unfused" and fused["algorithm"] == "fused"
        analytic = r["sparse"]["sparse_recomputed_bytes"]
        assert unfused["workspace_bytes"] >= 2 * analytic, (r["n"], unfused, analytic)
        assert unfused["attention_bytes"] >= 0.8 * unfused["workspace_bytes"], (r["n"], unfused)
        assert unfused["attention_bytes"] > fused["attention_bytes"], (r["n"], fused, unfused)

    job = json.load(open(os.path.join(out, "main_job.json")))
    md = open(os.path.join(out, "main_job.md")).read()
    # `sparse-repro report` re-renders the job's Markdown from its JSON to the same text.
    bpd_md = open(os.path.join(out, "bpd.md")).read()
    proc = subprocess.run([exe, "report", "--dir", out, "--no-plots"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert open(os.path.join(out, "main_job.md")).read() == md, "report changed main_job.md"
    assert open(os.path.join(out, "bpd.md")).read() == bpd_md, "report changed bpd.md"
    for key in ("commit", "date_utc", "cpu", "command", "library", "load_average_1min"):
        assert key in job["provenance"], f"provenance lacks {key}"
    entropy = job["synthetic_exact_entropy"]
    assert 0 < entropy < 4, f"16-level source entropy {entropy} out of (0, 4)"
    names = sorted(r["name"] for r in job["synthetic"])
    assert names == ["local-only", "strided"], names
    for r in job["synthetic"]:
        assert r["tokens_seen"] == r["steps"] * r["batch"] * r["seq_len"], r
        assert fmt(r["eval_bits_per_dim"]) in md, f"{r['name']} bits/dim not in main_job.md"
        assert r["exact_entropy_bits_per_dim"] == entropy
    # A loss curve has one line per step.
    for name, r in (("strided", job["synthetic"][0]), ):
        lines = [json.loads(x) for x in open(os.path.join(out, f"synthetic_{name}_loss.jsonl"))
                 if '"loss"' in x]
        assert len(lines) == r["steps"], (len(lines), r["steps"])

    if not have_text:
        print(f"SKIP Enwik8 part: {enwik8} absent")
        sys.exit(0)
    text = job["enwik8_sample"]
    n = text["seq_len"]
    data = open(enwik8, "rb").read()
    a, b = len(data) * 9 // 10, len(data) * 19 // 20  # floor(0.9 N), floor(0.95 N)
    whole = lambda x: x[:len(x) // n * n]
    train = whole(data[:a])
    held = whole(data[a:b]) + whole(data[b:])
    assert text["held_out_bytes"] == len(held), (text["held_out_bytes"], len(held))
    base = job["enwik8_sample_baselines"]
    mine = {"gzip -9 (zlib)": conditional(gzip_size, train, held),
            "bzip2 -9 (libbz2)": conditional(lambda x: len(bz2.compress(x, 9)), train, held),
            "xz -9e (liblzma)": conditional(xz_size, train, held)}
    for name, bits in mine.items():
        got = base[name]
        # Same algorithms and settings; a different library build may differ by a few bytes.
        assert abs(got - bits) < 0.01, f"{name}: driver {got:.4f} vs Python {bits:.4f} bits/byte"
        assert fmt(got) in md, f"{name} figure not in main_job.md"
        print(f"{name}: driver {got:.4f}, Python {bits:.4f} bits/byte")
    assert fmt(text["held_out_bits_per_byte"]) in md
    bpd = open(os.path.join(out, "bpd.md")).read()
    for paper in ("2.80", "0.99", "3.44", "1.97"):
        assert paper in bpd, f"paper figure {paper} missing from bpd.md"
print("ok")
