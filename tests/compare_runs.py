#!/usr/bin/env python3
"""Compares two training runs of the same model from the same initialisation and data (one per
backend): the per-step losses of their --log files (relative difference), the parameters of
their final --checkpoint files (safetensors, F32; relative L2 difference per tensor and over
all), and optionally the bits per dim of `sparse-repro eval` JSON outputs. Exit 1 when a bound
is exceeded. Standard library only (runs on the GPU machine as is)."""
import argparse
import array
import json
import math
import struct
import sys


def losses(path):
    with open(path) as f:
        return [json.loads(line)["loss"] for line in f if line.strip()]


def tensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__" or not name.startswith("param."):
            continue
        if spec["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {spec['dtype']}, expected F32")
        begin, end = spec["data_offsets"]
        a = array.array("f")
        a.frombytes(data[begin:end])
        if sys.byteorder != "little":
            a.byteswap()
        out[name] = a
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--logs", nargs=2, required=True, metavar=("REF", "OTHER"))
    ap.add_argument("--checkpoints", nargs=2, metavar=("REF", "OTHER"))
    ap.add_argument("--evals", nargs="*", default=[], metavar="JSON",
                    help="eval outputs whose bits_per_dim must agree")
    ap.add_argument("--loss-rtol", type=float, default=1e-5)
    ap.add_argument("--param-rtol", type=float, default=1e-4,
                    help="bound on the relative L2 difference of all parameters")
    a = ap.parse_args()
    ok = True

    ref, other = losses(a.logs[0]), losses(a.logs[1])
    if len(ref) != len(other) or not ref:
        print(f"FAIL losses: {len(ref)} steps vs {len(other)}")
        return 1
    worst = 0.0
    for step, (x, y) in enumerate(zip(ref, other), 1):
        rel = abs(x - y) / max(abs(x), 1e-30)
        worst = max(worst, rel)
        print(f"step {step:3d}  loss {x:.9f}  {y:.9f}  rel {rel:.2e}")
    verdict = worst <= a.loss_rtol and all(math.isfinite(v) for v in other)
    ok &= verdict
    print(f"{'ok  ' if verdict else 'FAIL'} losses: max relative difference {worst:.2e} "
          f"(bound {a.loss_rtol:g}) over {len(ref)} steps")

    if a.checkpoints:
        tr, to = tensors(a.checkpoints[0]), tensors(a.checkpoints[1])
        if sorted(tr) != sorted(to):
            print("FAIL parameters: the checkpoints hold different tensors")
            return 1
        num = den = 0.0
        worst_name, worst_rel = "", 0.0
        for name in sorted(tr):
            x, y = tr[name], to[name]
            if len(x) != len(y):
                print(f"FAIL parameters: {name} has {len(y)} values, expected {len(x)}")
                return 1
            n = sum((p - q) ** 2 for p, q in zip(x, y))
            d = sum(p * p for p in x)
            if not all(math.isfinite(q) for q in y):
                n = math.inf
            num, den = num + n, den + d
            rel = math.sqrt(n / d) if d > 0 else math.sqrt(n)
            if rel >= worst_rel:
                worst_name, worst_rel = name, rel
        total = math.sqrt(num / den) if den > 0 else math.sqrt(num)
        verdict = total <= a.param_rtol
        ok &= verdict
        print(f"{'ok  ' if verdict else 'FAIL'} parameters: relative L2 difference {total:.2e} "
              f"(bound {a.param_rtol:g}) over {len(tr)} tensors; largest {worst_rel:.2e} in "
              f"{worst_name}")

    if a.evals:
        bits = [json.load(open(p))["bits_per_dim"] for p in a.evals]
        spread = (max(bits) - min(bits)) / max(abs(bits[0]), 1e-30)
        verdict = spread <= a.loss_rtol
        ok &= verdict
        print(f"{'ok  ' if verdict else 'FAIL'} evals: bits per dim {bits}, relative spread "
              f"{spread:.2e} (bound {a.loss_rtol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
