#!/usr/bin/env python3
"""SPARSE_PROFILE_OPS: the model's per-operation profile counts the calls the architecture
implies (pre-norm blocks: two layer norms per layer and a final one; six products per layer,
query, key, value, output and the feed-forward's two, and the head's; one loss per step; one
fused attention forward and backward per layer), every time is non-negative and the total is
within the run's wall time; one JSON line per model appended to a path (a second run adds a
line, the first stays), a table on stderr for 1 (and yes/true/on), nothing when unset (or
0/no/false/off), and an unwritable path or a FIFO is reported without failing or blocking the run.

Usage: test_op_profile.py SPARSE_REPRO"""
import json
import os
import subprocess
import sys
import tempfile
import time

exe = os.path.abspath(sys.argv[1])
LAYERS, STEPS, WARMUP = 3, 2, 1
ARGS = ["bench-train", "--preset", "cifar10-small", "--layers", str(LAYERS), "--seq-len", "384",
        "--batch", "1", "--steps", str(STEPS), "--warmup", str(WARMUP), "--recompute", "0",
        "--threads", "1"]


def run(value, cwd=None):
    env = dict(os.environ)
    env.pop("SPARSE_PROFILE_OPS", None)
    if value is not None:
        env["SPARSE_PROFILE_OPS"] = value
    t0 = time.monotonic()
    try:
        r = subprocess.run([exe, *ARGS], capture_output=True, text=True, env=env, timeout=60,
                           cwd=cwd)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"SPARSE_PROFILE_OPS={value}: the run did not end in 60 s")
    return r, time.monotonic() - t0


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "profile.jsonl")
        r, wall = run(path)
        assert r.returncode == 0, r.stderr
        lines = open(path).read().splitlines()
        assert len(lines) == 1, lines
        doc = json.loads(lines[0])
        assert doc["profile"] == "sparse-model-ops" and doc["synchronised"] is True, doc
        ops = {o["op"]: o for o in doc["ops"]}
        steps = STEPS + WARMUP
        want = {"layer_norm_forward": (2 * LAYERS + 1) * steps,
                "layer_norm_backward": (2 * LAYERS + 1) * steps,
                "linear_forward": (6 * LAYERS + 1) * steps,
                "softmax_cross_entropy": steps,
                "attention_forward": LAYERS * steps,
                "attention_backward": LAYERS * steps,
                "adam_update": steps}
        for op, calls in want.items():
            got = ops.get(op, {}).get("calls")
            assert got == calls, f"{op}: {got} calls, expected {calls}"
        assert all(o["seconds"] >= 0 and o["calls"] > 0 for o in doc["ops"]), doc["ops"]
        total = sum(o["seconds"] for o in doc["ops"])
        assert abs(total - doc["total_seconds"]) <= 1e-6 * max(1.0, total), doc["total_seconds"]
        assert 0 < doc["total_seconds"] < wall, (doc["total_seconds"], wall)

        r, _ = run(path)
        lines = open(path).read().splitlines()
        assert len(lines) == 2 and json.loads(lines[0]) == doc, "a second run replaced the first's line"
        assert json.loads(lines[1])["profile"] == "sparse-model-ops"

        r, _ = run("1")
        assert r.returncode == 0 and "SPARSE_PROFILE_OPS" in r.stderr, r.stderr
        assert any(line.split()[:2] == ["attention_forward", str(LAYERS * steps)]
                   for line in r.stderr.splitlines()), r.stderr

        os.remove(path)
        r, _ = run(None)
        assert r.returncode == 0 and "SPARSE_PROFILE_OPS" not in r.stderr and not os.path.exists(path)

        bad = os.path.join(tmp, "no-such-folder", "p.jsonl")
        r, _ = run(bad)
        assert r.returncode == 0 and "SPARSE_PROFILE_OPS" in r.stderr and "no-such-folder" in r.stderr, \
            r.stderr
        # A FIFO (no reader) is not a file to append to: refused at once; the run used to hang at
        # the end, blocked in open(2).
        fifo = os.path.join(tmp, "fifo")
        os.mkfifo(fifo)
        r, _ = run(fifo)
        assert r.returncode == 0 and "is a FIFO" in r.stderr, r.stderr

        # Switch words, in the current folder: 0/no/false/off profile nothing, yes/true/on print
        # the table; neither becomes a file of that name.
        for word, table in (("0", False), ("off", False), ("No", False), ("yes", True),
                            ("TRUE", True), ("on", True)):
            r, _ = run(word, cwd=tmp)
            assert r.returncode == 0, r.stderr
            assert ("libsparse: model operations" in r.stderr) == table, (word, r.stderr)
            assert not os.path.exists(os.path.join(tmp, word)), f"a file named {word!r} was written"
    print("ok: operation profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
