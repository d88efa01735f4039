#!/usr/bin/env python3
"""Fails unless the shared library exports only `sparse_` symbols (and exports some)."""
import subprocess
import sys

lib = sys.argv[1]
out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True,
                     text=True).stdout
symbols = [line.split()[-1] for line in out.splitlines() if line.strip()]
bad = [s for s in symbols if not s.startswith("sparse_")]
print(f"{lib}: {len(symbols)} exported symbols")
if not symbols:
    sys.exit("no exported symbols at all")
if bad:
    print("symbols outside the sparse_ prefix:")
    for s in bad[:50]:
        print("  ", s)
    sys.exit(1)
for required in ("sparse_context_create", "sparse_status_string", "sparse_attention_forward"):
    if required not in symbols:
        sys.exit(f"missing export {required}")
print("ok: every export starts with sparse_")
