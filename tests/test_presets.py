#!/usr/bin/env python3
"""`sparse-repro presets --only cifar10 --steps 1`: the paper's full CIFAR-10 model trains one step
on this machine, and the table's cost columns follow from the paper's schedule (120 epochs of
48,000 images, batch 16 -> 360,000 steps) and the measured time, computed here independently.

usage: test_presets.py SPARSE_REPRO"""
import json
import math
import os
import subprocess
import sys
import tempfile

exe = sys.argv[1]
root = os.environ.get("SPARSE_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), ".."))
data_dir = os.environ.get("SPARSE_DATA_DIR", os.path.join(root, "..", "shared", "data"))

with tempfile.TemporaryDirectory() as out:
    proc = subprocess.run([exe, "presets", "--only", "cifar10", "--steps", "1", "--threads", "1",
                           "--out", out, "--data-dir", data_dir], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sparse-repro presets failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.load(open(os.path.join(out, "presets.json")))
    md = open(os.path.join(out, "presets.md")).read()
    assert "commit" in doc["provenance"]
    (row,) = doc["presets"]
    assert row["preset"] == "cifar10" and row["seq_len"] == 3072 and row["layers"] == 128, row
    # The paper's CIFAR-10 model: 458,752 parameters per layer; embeddings and the output layer come on top.
    assert 128 * 458752 < row["parameters"] < 128 * 458752 + 2_000_000, row["parameters"]
    assert row["steps_run"] == 1
    assert (row["backend"], row["dtype"], row["batch"]) == ("cpu", "fp32", 1), row
    assert "(cpu, fp32, batch 1)" in md and "est. time on this machine" in md
    assert math.isfinite(row["eval_bits_per_dim"]) and 0 < row["eval_bits_per_dim"] < 9
    steps = 120 * 48000 / 16
    assert row["full_run_steps"] == steps and row["full_run_batch"] == 16
    hours = row["seconds_per_sequence"] * 16 * steps / 3600
    assert abs(row["full_run_hours_here"] - hours) < 1e-9 * hours, (row, hours)
    # At least the dense products: 6 FLOPs per parameter per token.
    tokens = 16 * 3072 * steps
    assert row["full_run_flops"] >= 6 * row["parameters"] * tokens
    assert abs(row["full_run_flops"] - row["flops_per_sequence"] * 16 * steps) < \
        1e-9 * row["full_run_flops"]
    if os.path.exists(os.path.join(data_dir, "cifar10")):
        assert row["data"].startswith("CIFAR-10 sample"), row["data"]
    assert "| cifar10 |" in md and f"{row['full_run_flops'] / 1e18:.1f} EFLOP" in md

# The output folder is made (or refused) before any training: a folder that cannot be created is
# an error naming --out, and no preset has started.
with tempfile.TemporaryDirectory() as tmp:
    blocker = os.path.join(tmp, "file")
    open(blocker, "w").close()
    proc = subprocess.run([exe, "presets", "--only", "cifar10", "--steps", "1", "--out",
                           os.path.join(blocker, "out"), "--data-dir", data_dir],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--out" in proc.stderr and "cannot create" in proc.stderr, \
        proc.stderr
    assert "preset on" not in proc.stderr, proc.stderr
    # --backend / --dtype are checked first: bf16 on the CPU is refused by name (mixed precision
    # is CUDA's) before the folder is made or any preset starts.
    fresh = os.path.join(tmp, "fresh")
    proc = subprocess.run([exe, "presets", "--only", "cifar10", "--steps", "1", "--out", fresh,
                           "--dtype", "bf16", "--data-dir", data_dir],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--dtype bf16" in proc.stderr, proc.stderr
    assert not os.path.exists(fresh) and "preset on" not in proc.stderr, proc.stderr
print("ok")
