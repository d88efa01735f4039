#!/usr/bin/env python3
"""Held-out bits per byte of the main job's small Enwik8-sample model against training length.

The main job trains its text model for a few minutes and lands far from xz. This script
measures how the held-out figure falls as the run gets longer, each length a complete run with its
own warm-up and cosine schedule (not points along one run), so that the time a CPU run would need
to reach xz can be estimated from measurements instead of guessed.

For each step count it runs `sparse-repro train` with the main job's text settings
(main_job_text_run in benchmarks/main_job.cpp: fixed attention l = 16, c = 4, n = 128, 4 layers x
128, 4 heads, batch 16, lr 2e-3, output_init_std 0.02), evaluates the checkpoint on the valid and
test splits (together the last 10% of the sample, as in the main job), and writes
enwik8_sample_scaling.{json,md} to --out with provenance. The xz figure comes from the main job's
JSON (main_job.json) when present.

Usage: text_scaling.py [--steps 600,1500,4000] [--jobs 2] [--threads 1] [--out results]
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provenance  # noqa: E402

# The main job's text run (benchmarks/main_job.cpp, main_job_text_run).
MAIN_JOB_TEXT = ["--preset", "enwik8-small", "--seq-len", "128", "--attention", "fixed",
                 "--stride", "16", "--summary", "4", "--block", "16", "--layers", "4",
                 "--width", "128", "--heads", "4", "--dropout", "0", "--batch", "16",
                 "--lr", "2e-3", "--output-init-std", "0.02"]
BATCH, SEQ_LEN = 16, 128


def one_run(repro, data, steps, threads, work, extra):
    name = f"steps{steps}" + ("-" + "-".join(a.strip("-") for a in extra) if extra else "")
    # The main job's settings, with later options (e.g. --dropout) overriding earlier ones.
    base = list(MAIN_JOB_TEXT)
    for i in range(0, len(extra), 2):
        if extra[i] in base:
            j = base.index(extra[i])
            del base[j:j + 2]
    ckpt = os.path.join(work, name + ".safetensors")
    summary = os.path.join(work, name + ".json")
    cmd = [repro, "train", *base, *extra, "--data", data, "--steps", str(steps),
           "--warmup", str(max(1, steps // 20)), "--eval-split", "valid",
           "--eval-sequences", "1000", "--threads", str(threads), "--quiet",
           "--checkpoint", ckpt, "--summary-out", summary]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    with open(summary, encoding="utf-8") as f:
        s = json.load(f)
    test = json.loads(subprocess.run(
        [repro, "eval", "--checkpoint", ckpt, "--data", data, "--split", "test",
         "--sequences", "1000", "--threads", str(threads), "--json"],
        check=True, capture_output=True, text=True).stdout)
    nv, nt = s["eval_sequences"], test["sequences"]
    held_out = (s["eval_bits_per_dim"] * nv + test["bits_per_dim"] * nt) / (nv + nt)
    return {"name": name, "steps": steps, "extra": extra, "tokens_seen": s["tokens_seen"],
            "train_seconds": s["train_seconds"], "wall_seconds": wall,
            "seconds_per_step": s["seconds_per_step"], "parameters": s["parameters"],
            "final_train_bits": s["final_train_loss"] / math.log(2),
            "valid_bits_per_byte": s["eval_bits_per_dim"], "test_bits_per_byte": test["bits_per_dim"],
            "held_out_bits_per_byte": held_out, "held_out_bytes": (nv + nt) * SEQ_LEN,
            "commit": provenance.git_commit(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(os.path.relpath(c) if c == repro else c for c in cmd)}


def xz_figure(folder):
    """xz's cost of the same held-out bytes (valid + test) from the main job's JSON."""
    path = os.path.join(folder, "main_job.json")
    if not os.path.exists(path):
        return None, None
    with open(path, encoding="utf-8") as f:
        table = json.load(f).get("enwik8_sample_baselines", {})
    for k, v in table.items():
        if k.startswith("xz") and isinstance(v, (int, float)):
            return float(v), "main_job.json"
    return None, None


def render(runs, prov, xz, xz_source, train_bytes):
    lines = ["# Enwik8 sample: held-out bits per byte against training length", "",
             "| provenance | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in prov.items()]
    lines += ["", "The main job's small text model (fixed attention l = 16, c = 4, n = 128, "
              "4 layers x 128, 4 heads, 0.86M parameters, batch 16, lr 2e-3, output_init_std "
              "0.02), trained on the first 90% of the file for each length as a "
              "complete run (warm-up, cosine decay to zero), then evaluated on the last 10% "
              "(valid + test splits, 128-byte windows).", "",
              "| steps | tokens seen | epochs of the training bytes | train time (s) | last-batch "
              "train bits | held-out bits/byte | commit |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        epochs = r["tokens_seen"] / train_bytes
        lines.append(f"| {r['steps']}{' ' + ' '.join(r['extra']) if r['extra'] else ''} | "
                     f"{r['tokens_seen']:,} | {epochs:.0f} | {r['train_seconds']:.0f} | "
                     f"{r['final_train_bits']:.3f} | {r['held_out_bits_per_byte']:.3f} | "
                     f"{r.get('commit', '')} |")
    if xz is not None:
        lines.append(f"| xz -9e, cost of the held-out bytes after the training bytes "
                     f"(`{xz_source}`) | | | | | {xz:.3f} | |")
    plain = [r for r in runs if not r["extra"]]
    last = plain[-1] if plain else None
    stalled = False
    if len(plain) >= 2:
        a, b = plain[-2], plain[-1]
        train_drop = a["final_train_bits"] - b["final_train_bits"]
        held_drop = a["held_out_bits_per_byte"] - b["held_out_bits_per_byte"]
        stalled = train_drop > 4 * max(held_drop, 0.0) and b["held_out_bits_per_byte"] - \
            b["final_train_bits"] > 0.3
        if stalled:
            lines += ["", f"From {a['steps']} to {b['steps']} steps the training bits fell "
                      f"{train_drop:.3f} but the held-out bits only {held_drop:.3f}: the longest "
                      f"runs memorise the training bytes (last-batch train {b['final_train_bits']:.2f} "
                      f"bits against {b['held_out_bits_per_byte']:.2f} held out). Without "
                      "regularisation, more steps do not bring the held-out figure towards "
                      "xz; rows with dropout, where present, show what it buys."]
    if len(plain) >= 2 and xz is not None and not stalled:
        a, b = plain[-2], plain[-1]
        doublings = math.log2(b["tokens_seen"] / a["tokens_seen"])
        per = (a["held_out_bits_per_byte"] - b["held_out_bits_per_byte"]) / doublings
        lines += ["", f"Between the two longest runs the held-out figure fell {per:.3f} bits per "
                  "doubling of the tokens seen."]
        gap = b["held_out_bits_per_byte"] - xz
        if per > 0 and gap > 0:
            need = gap / per
            factor = 2 ** need
            hours = b["train_seconds"] * factor / 3600
            lines.append(
                f"Even if that rate held (it has been falling), reaching xz's {xz:.3f} would need "
                f"{need:.1f} more doublings: {factor:.0f}x the longest run's tokens, about "
                f"{hours:.1f} hours of training at this run's speed, with regularisation against "
                "overfitting the training bytes on top.")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repro", default=os.path.join(provenance.ROOT, "build/benchmarks/sparse-repro"))
    ap.add_argument("--data", default=None, help="text:PATH (default: the shared Enwik8 sample)")
    ap.add_argument("--steps", default="600,1500,4000")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="threads per run")
    ap.add_argument("--work", default=None, help="folder for checkpoints (default: a temporary one)")
    ap.add_argument("--out", default=os.path.join(provenance.ROOT, "results"))
    ap.add_argument("--dropout", type=float, default=None,
                    help="residual dropout for these runs (default: the main job's, 0)")
    ap.add_argument("--append", action="store_true",
                    help="keep the runs already in OUT/enwik8_sample_scaling.json (a run of the "
                         "same steps and options is replaced)")
    args = ap.parse_args()
    data = args.data
    if data is None:
        data_dir = os.environ.get("SPARSE_DATA_DIR",
                                  os.path.join(os.path.dirname(provenance.ROOT), "shared/data"))
        data = "text:" + os.path.join(data_dir, "enwik8/enwik8-head-100000")
    if not os.path.exists(data.split(":", 1)[1]):
        sys.exit(f"text_scaling.py: {data.split(':', 1)[1]} does not exist")
    if not os.access(args.repro, os.X_OK):
        sys.exit(f"text_scaling.py: {args.repro} is not an executable (build first)")
    steps = [int(s) for s in args.steps.split(",") if s]
    if not steps or min(steps) < 1:
        sys.exit("text_scaling.py: --steps must list positive step counts")
    work = args.work or tempfile.mkdtemp(prefix="text_scaling-")
    os.makedirs(work, exist_ok=True)
    started = time.time()
    # Longest first, so the parallel lanes finish together.
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        extra = [] if args.dropout is None else ["--dropout", repr(args.dropout)]
        if args.dropout is not None and not 0 <= args.dropout < 1:
            sys.exit("text_scaling.py: --dropout must be in [0, 1)")
        futures = [pool.submit(one_run, args.repro, data, s, args.threads, work, extra)
                   for s in sorted(steps, reverse=True)]
        runs = [f.result() for f in futures]
    for r in runs:
        print(f"{r['steps']:>6} steps  held-out {r['held_out_bits_per_byte']:.3f} bits/byte  "
              f"({r['train_seconds']:.0f} s) {' '.join(r['extra'])}")
    json_path = os.path.join(args.out, "enwik8_sample_scaling.json")
    if args.append and os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as f:
            previous = json.load(f)
        old = previous["runs"]
        for r in old:
            r.setdefault("commit", previous["provenance"]["commit"])
            r.setdefault("date_utc", previous["provenance"]["date_utc"])
        names = {r["name"] for r in runs}
        runs += [r for r in old if r["name"] not in names]
    runs.sort(key=lambda r: (r["extra"], r["steps"]))
    xz, xz_source = xz_figure(args.out)
    prov = {"command": "text_scaling.py " + " ".join(sys.argv[1:]),
            "commit": provenance.git_commit(), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                          time.gmtime()),
            "cpu": provenance.cpu_model(), "logical_cpus": os.cpu_count(),
            "runs_at_once": args.jobs, "threads_per_run": args.threads,
            "wall_minutes": round((time.time() - started) / 60, 1),
            "data": data.split(":", 1)[0] + ":" + os.path.relpath(data.split(":", 1)[1])}
    provenance.write_atomically(os.path.join(args.out, "enwik8_sample_scaling.md"),
                                render(runs, prov, xz, xz_source,
                                       os.path.getsize(data.split(":", 1)[1]) * 9 // 10))
    provenance.write_atomically(
        json_path,
        json.dumps({"provenance": prov, "runs": runs, "xz_bits_per_byte": xz}, indent=1) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        for r in runs:
            try:
                os.remove(os.path.join(work, r["name"] + ".safetensors"))
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
