#!/usr/bin/env python3
"""Results say when they were measured on a loaded machine: the provenance block of a results
file (memory-table's JSON and Markdown) and bench-train's JSON carry the 1-minute load average
taken before the work, checked against /proc/loadavg read just before and just after the command
(the kernel updates it every 5 seconds, so the recorded value is one of the two readings).

usage: test_provenance_load.py SPARSE_REPRO. Exit 77 (SKIP) without /proc/loadavg."""
import json
import os
import re
import subprocess
import sys

exe = sys.argv[1]
if not os.path.exists("/proc/loadavg"):
    print("SKIP: no /proc/loadavg on this system")
    sys.exit(77)


def load():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_between(args):
    """The command's stdout and the load average just before and just after it."""
    before = load()
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)
    after = load()
    assert p.returncode == 0, f"{' '.join(args)}: {p.stderr}"
    return p.stdout, min(before, after) - 0.006, max(before, after) + 0.006


def within(value, lo, hi, what):
    assert lo <= value <= hi, f"{what}: {value} not within /proc/loadavg's [{lo}, {hi}]"


out, lo, hi = run_between(["memory-table", "--json"])
prov = json.loads(out)["provenance"]
within(prov["load_average_1min"], lo, hi, "memory-table --json provenance")

out, lo, hi = run_between(["memory-table"])
m = re.search(r"^\| load \| ([0-9.]+) \(1-minute load average when the run started, on (\d+) "
              r"logical CPUs", out, re.M)
assert m, f"no load row in the provenance block:\n{out[:900]}"
within(float(m.group(1)), lo - 0.005, hi + 0.005, "memory-table Markdown load row")
assert int(m.group(2)) == os.cpu_count(), (m.group(2), os.cpu_count())

out, lo, hi = run_between(["bench-train", "--preset", "cifar10-small", "--layers", "1",
                           "--seq-len", "256", "--steps", "1", "--warmup", "0", "--threads", "1",
                           "--json"])
within(json.loads(out)["load_average_1min"], lo, hi, "bench-train --json")
print("ok: provenance and bench-train record the 1-minute load average (%.2f here)" % load())
