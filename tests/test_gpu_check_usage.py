#!/usr/bin/env python3
"""tests/gpu_check.sh refuses a mode it lacks, and `exec` without a command, with its usage line
and exit 2, before it looks for the pack or starts anything (`exec` alone ran nothing and exited
0, so a device call that lost its command looked like a passing check)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "gpu_check.sh")


def main():
    failures = []
    for args in (["exec"], ["no-such-mode"], []):
        r = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, OUT=os.devnull))
        if r.returncode != 2 or "usage:" not in r.stderr or "exec COMMAND" not in r.stderr:
            failures.append(f"{args}: exit {r.returncode}, {r.stderr[-400:]!r}")
    for f in failures:
        print("FAIL:", f)
    print("gpu-check-usage:", "ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
