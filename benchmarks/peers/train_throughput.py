#!/usr/bin/env python3
"""Training throughput of libsparse against PyTorch on the CPU, measured side by side in one run;
writes results/cpu_training.md and results/cpu_training.json.

For each preset (default: cifar10-small at n = 3072 and imagenet64-small at n = 12288, both
strided), in fresh processes one after another on the same threads and batch:
  - libsparse: `sparse-repro bench-train` (dropout 0), without and with recomputation;
  - PyTorch, the same model (torch_model.py; checked equal to libsparse by
    test_torch_equivalence.py, which this driver runs first) with dense masked attention:
      sdpa   scaled_dot_product_attention + the pattern's boolean mask (fused CPU kernel),
             eagerly and under torch.compile (unless --no-compile; the warm-up step compiles)
      causal scaled_dot_product_attention(is_causal=True): plain dense attention, no pattern
      math   softmax(Q K^T + mask) V written out (optional, --math)
    each a full training step: forward, backward, global-norm clipping, Adam with L2 decay;
    and the sdpa variant again with torch.utils.checkpoint per layer (PyTorch's recomputation).
Seconds per step are the median of the timed steps, after untimed warm-up steps. The headline
ratio is against the fastest PyTorch variant of the same model (sdpa, compiled sdpa, math).

Memory: libsparse reports peak_activation_bytes (its allocator meter: activations and working
buffers of one forward/backward). PyTorch's activation peak is the growth of the process's peak
resident set (getrusage ru_maxrss) over its resident set after the warm-up steps (parameters,
gradients, Adam state and masks are allocated by then). Both processes' whole peak RSS (wait4)
is recorded as well.

Usage:
  benchmarks/peers/train_throughput.py [--build build-peer] [--threads N] [--batch 1]
      [--presets cifar10-small,imagenet64-small] [--steps 5,2] [--warmup 1] [--math]
      [--no-compile] [--no-check]
  benchmarks/peers/train_throughput.py --render results/cpu_training.json   (rewrite the .md)
      [--max-load 1.5 --wait-minutes 40] [--out results/cpu_training]
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from provenance import cpu_model, git_commit, write_atomically  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Throughput targets: the least ratio of libsparse tokens/s over the fastest PyTorch
# implementation of the same model (dense attention with the pattern as a mask), per n.
TARGETS = {3072: 2.0, 12288: 5.0}


# ---------------------------------------------------------------- worker: one PyTorch run

def rss_bytes():
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def torch_worker(args):
    import gc

    import torch

    sys.path.insert(0, HERE)
    import torch_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = torch_model.preset(args.preset)
    cfg.dropout = 0.0  # as bench-train: identical work in every step
    cfg.recompute = args.recompute
    if args.seq_len:
        cfg.seq_len = args.seq_len
    model = torch_model.SparseTransformer(cfg, attention=args.impl, init_seed=1)
    model.train()
    if args.compile:
        # Inductor compiles forward and backward on the first (warm-up) step.
        model.forward = torch.compile(model.forward)
    trainer = torch_model.Trainer(model)  # the library's defaults: lr 3.5e-4, L2 0.01, clip 1
    gen = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, 256, (args.batch, cfg.seq_len), generator=gen, dtype=torch.int64)
    for _ in range(args.warmup):
        trainer.step(tokens)
    gc.collect()
    baseline = rss_bytes()
    times, loss = [], float("nan")
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss, _ = trainer.step(tokens)  # .item() inside: the step has finished
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    median = statistics.median(times)
    print(json.dumps({
        "implementation": "pytorch-" + args.impl + ("-compiled" if args.compile else ""),
        "preset": args.preset, "compiled": bool(args.compile),
        "seq_len": cfg.seq_len, "layers": cfg.num_layers, "width": cfg.d_model,
        "heads": cfg.num_heads, "batch": args.batch, "recompute": cfg.recompute,
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for _, p in model.named_tensors()),
        "sdpa_backend": model.sdpa_backend(args.batch) + (" (eager dispatch)" if args.compile
                                                          else ""),
        "seconds_per_step": median, "step_seconds": times,
        "tokens_per_second": args.batch * cfg.seq_len / median,
        "baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
        "activation_peak_bytes": max(0, peak - baseline), "last_loss": loss,
        "qk_width": cfg.dqk, "ff_width": cfg.inner,
        # Floats per token a layer caches for its backward pass in libsparse (LayerCache in
        # libsparse/model/transformer.cpp): ln1 out, V, attention out, x + a, ln2 out (5 d),
        # Q and K (2 dqk), W1 out and GELU out (2 inner), two means and two rstds, and the
        # attention's log-sum-exp per head.
        "layer_cache_floats_per_token": 5 * cfg.d_model + 2 * cfg.dqk + 2 * cfg.inner + 4
        + cfg.num_heads,
        "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_mkl": torch.backends.mkl.is_available(),
        "torch_mkldnn": torch.backends.mkldnn.is_available()}))
    return 0


def flex_probe_worker():
    """Whether FlexAttention (block-sparse attention in PyTorch) can train on the CPU here."""
    import torch
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError as e:
        print(json.dumps({"flex_training_on_cpu": False, "reason": f"not importable: {e}"}))
        return 0
    q = torch.randn(1, 1, 128, 16, requires_grad=True)
    try:
        flex_attention(q, q, q).sum().backward()
        print(json.dumps({"flex_training_on_cpu": True, "reason": ""}))
    except Exception as e:  # report whatever PyTorch says
        print(json.dumps({"flex_training_on_cpu": False,
                          "reason": f"{type(e).__name__}: {e}"}))
    return 0


# ---------------------------------------------------------------- driver helpers

def run_measured(cmd, env=None):
    """Runs cmd; returns (stdout, whole-process peak RSS in bytes, wall seconds)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{stderr}{stdout}")
    return stdout, usage.ru_maxrss * 1024, time.perf_counter() - t0


def last_json(stdout):
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if not rows:
        sys.exit("no JSON in output:\n" + stdout)
    return rows[-1]


def load():
    return tuple(round(x, 2) for x in os.getloadavg())


def wait_for_quiet(max_load, minutes):
    """Waits (up to `minutes`) until the 1-minute load average is below max_load."""
    deadline = time.time() + 60 * minutes
    while True:
        now = load()
        if now[0] < max_load:
            return now, True
        if time.time() >= deadline:
            print(f"load {now} still >= {max_load} after {minutes} min; measuring anyway",
                  flush=True)
            return now, False
        print(f"load {now} >= {max_load}; waiting...", flush=True)
        time.sleep(min(60, max(1, deadline - time.time())))


def mb(x):
    return f"{x / 1e6:.1f}"


def fmt_load(values):
    return " / ".join(f"{v:.2f}" for v in values)


def fmt_rate(x):
    return f"{x:,.0f}"


# ---------------------------------------------------------------- driver

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=None,
                    help="build directory with benchmarks/sparse-repro and libsparse.so "
                         "(default: build-peer, else build)")
    ap.add_argument("--threads", type=int, default=0, help="threads for both (0 = all CPUs)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--presets", default="cifar10-small,imagenet64-small")
    ap.add_argument("--steps", default="5,2", help="timed steps per preset")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--math", action="store_true",
                    help="also time PyTorch's written-out softmax attention")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the torch.compile'd PyTorch variant (its warm-up step compiles)")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the equivalence check (test_torch_equivalence.py)")
    ap.add_argument("--max-load", type=float, default=0.0,
                    help="wait until the 1-minute load average is below this (0 = don't wait)")
    ap.add_argument("--wait-minutes", type=float, default=40)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "cpu_training"))
    ap.add_argument("--render", metavar="JSON",
                    help="only rewrite OUT.md from a JSON file this driver wrote (no timing)")
    # Worker mode (internal): one PyTorch measurement in a fresh process.
    ap.add_argument("--worker", choices=["torch", "flex-probe"], help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="sdpa", help=argparse.SUPPRESS)
    ap.add_argument("--recompute", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seq-len", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            payload = json.load(f)
        write_atomically(args.out + ".md", markdown(payload))
        print(f"wrote {args.out}.md from {args.render}")
        return 0
    if args.worker == "flex-probe":
        return flex_probe_worker()
    if args.worker:
        args.steps = int(args.steps)
        return torch_worker(args)

    # The driver itself never imports PyTorch: its children's peak RSS (ru_maxrss survives
    # fork + exec) would otherwise include the driver's few hundred MB of framework.
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        sys.exit("PyTorch is not installed (python3 -m pip install torch): no peer to time")

    build = args.build
    if build is None:
        build = next((os.path.join(ROOT, b) for b in ("build-peer", "build")
                      if os.path.exists(os.path.join(ROOT, b, "benchmarks", "sparse-repro"))),
                     os.path.join(ROOT, "build"))
    exe = os.path.join(build, "benchmarks", "sparse-repro")
    libpath = os.path.join(build, "libsparse.so")
    if not os.path.exists(exe):
        sys.exit(f"{exe} not found: build first (meson setup build && ninja -C build)")
    threads = args.threads or os.cpu_count()
    presets = args.presets.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    steps += [steps[-1]] * (len(presets) - len(steps))
    command = shlex.join(["benchmarks/peers/train_throughput.py"] + sys.argv[1:])
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()

    check = None
    if not args.no_check:
        print("equivalence check: test_torch_equivalence.py", flush=True)
        proc = subprocess.run([sys.executable, os.path.join(HERE, "test_torch_equivalence.py"),
                               "--lib", libpath, "--threads", str(threads)],
                              capture_output=True, text=True)
        check = {"exit": proc.returncode, "output": proc.stdout.strip()}
        print(proc.stdout, proc.stderr, flush=True)
        if proc.returncode != 0:
            sys.exit("the PyTorch model does not match libsparse: not timing it")

    flex = last_json(subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                     "flex-probe"], capture_output=True, text=True).stdout)
    load_before, quiet = wait_for_quiet(args.max_load, args.wait_minutes) if args.max_load \
        else (load(), None)
    print(f"load average before timing: {load_before}", flush=True)

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    results = []
    for preset, nsteps in zip(presets, steps):
        def ours(recompute):
            cmd = [exe, "bench-train", "--preset", preset, "--batch", str(args.batch),
                   "--steps", str(nsteps), "--warmup", str(args.warmup), "--threads",
                   str(threads), "--recompute", str(recompute), "--json"]
            la = load()
            out, rss, wall = run_measured(cmd, env)
            row = last_json(out)
            row.update(peak_rss_bytes=rss, wall_seconds=wall, load_before=la, command=cmd[1:])
            return row

        def peer(impl, recompute=0, compiled=False):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "torch", "--preset",
                   preset, "--impl", impl, "--recompute", str(recompute), "--batch",
                   str(args.batch), "--steps", str(nsteps), "--warmup",
                   str(max(1, args.warmup) if compiled else args.warmup),
                   "--threads", str(threads)] + (["--compile"] if compiled else [])
            la = load()
            out, rss, wall = run_measured(cmd, env)
            row = last_json(out)
            row.update(process_peak_rss_bytes=rss, wall_seconds=wall, load_before=la)
            return row

        runs = {}
        for key, fn in (("libsparse", lambda: ours(0)), ("pytorch-sdpa", lambda: peer("sdpa")),
                        ("pytorch-sdpa-compiled", None if args.no_compile
                         else lambda: peer("sdpa", compiled=True)),
                        ("pytorch-causal", lambda: peer("causal")),
                        ("pytorch-math", (lambda: peer("math")) if args.math else None),
                        ("libsparse-recompute", lambda: ours(1)),
                        ("pytorch-sdpa-recompute", lambda: peer("sdpa", 1))):
            if fn is None:
                continue
            print(f"{preset}: {key} ...", end=" ", flush=True)
            runs[key] = fn()
            print(f"{runs[key]['seconds_per_step']:.3f} s/step, "
                  f"{runs[key]['tokens_per_second']:,.0f} tokens/s (load {runs[key]['load_before']})",
                  flush=True)
        results.append({"preset": preset, "steps": nsteps, "runs": runs})

    load_after = load()
    wall = time.perf_counter() - t_start
    tinfo = results[0]["runs"]["pytorch-sdpa"]
    info, info_rss, _ = run_measured([exe, "info"])
    info = info.strip()
    provenance = {
        "command": command, "commit": git_commit(),
        "date_utc": started.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(), "threads": threads, "batch": args.batch,
        "warmup_steps": args.warmup, "torch": tinfo["torch"],
        "torch_cpu_capability": tinfo["torch_cpu_capability"], "torch_mkl": tinfo["torch_mkl"],
        "torch_mkldnn": tinfo["torch_mkldnn"],
        "python": platform.python_version(), "library": info.splitlines()[0] if info else "",
        "library_build": info.splitlines()[1].strip() if len(info.splitlines()) > 1 else "",
        "sparse_repro_info_peak_rss_bytes": info_rss,
        "load_average_before": load_before, "load_average_after": load_after,
        "waited_for_quiet": quiet, "wall_seconds": round(wall, 1)}
    payload = {"provenance": provenance, "equivalence_check": check, "flex_attention": flex,
               "results": results}
    write_atomically(args.out + ".json", json.dumps(payload, indent=1) + "\n")
    write_atomically(args.out + ".md", markdown(payload))
    print(f"wrote {args.out}.md and {args.out}.json ({wall:.0f} s)")
    return 0


def markdown(payload):
    p, results, check = payload["provenance"], payload["results"], payload["equivalence_check"]
    md = ["# CPU training throughput: libsparse vs PyTorch (same model, dense masked attention)\n",
          "Generated by `benchmarks/peers/train_throughput.py`; do not edit by hand. "
          "Ratios are measured side by side in one run on one machine; absolute rates are "
          "only meaningful on this machine and load.\n",
          "| provenance | |", "|---|---|"]
    rows = [("command", f"`{p['command']}`"), ("commit", p["commit"]),
            ("date (UTC)", p["date_utc"]), ("CPU", f"{p['cpu']} ({p['logical_cpus']} logical CPUs)"),
            ("threads", f"{p['threads']} (libsparse --threads, torch.set_num_threads, "
                        "OMP_NUM_THREADS)"),
            ("batch", p["batch"]), ("warm-up steps", p["warmup_steps"]),
            ("PyTorch", f"{p['torch']} (PyPI wheel; CPU capability {p['torch_cpu_capability']}, "
                        f"MKL {p['torch_mkl']}, oneDNN {p['torch_mkldnn']})"),
            ("Python", p["python"]), ("libsparse", f"{p['library']}; {p['library_build']}"),
            ("load average (1, 5, 15 min)", f"before timing {fmt_load(p['load_average_before'])}"
                                            f", after {fmt_load(p['load_average_after'])}" +
             ("" if p["waited_for_quiet"] is None else
              " (waited for a quiet machine)" if p["waited_for_quiet"] else
              " (machine never got quiet: timings are noisy)")),
            ("wall time", f"{p['wall_seconds']} s")]
    md += [f"| {k} | {v} |" for k, v in rows]
    md.append("")

    md.append("## Models\n")
    md.append("| preset | n | layers | d | heads | pattern | stride | block | parameters | "
              "timed steps |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        o = r["runs"]["libsparse"]
        md.append(f"| {r['preset']} | {o['seq_len']} | {o['layers']} | {o['width']} | "
                  f"{o['heads']} | {pattern_name(r['preset'])} | {o['stride']} | {o['block']} | "
                  f"{o['parameters']:,} | {r['steps']} |")
    md.append("")

    md.append("## Throughput (training step: forward, backward, clipping, Adam)\n")
    md.append("Headline: libsparse against the fastest PyTorch implementation of the same model "
              "(dense attention with the pattern as a mask) measured in this run.\n")
    md.append("| preset | n | libsparse tokens/s | fastest PyTorch, same model | tokens/s | "
              "**ratio** | target ratio |")
    md.append("|---|---|---|---|---|---|---|")
    for r in results:
        o = r["runs"]["libsparse"]
        key, best = best_same_model(r["runs"])
        ratio = o["tokens_per_second"] / best["tokens_per_second"]
        target = TARGETS.get(o["seq_len"])
        verdict = "" if target is None else (f">= {target:g}x: " +
                                             ("met" if ratio >= target else "**not met**"))
        md.append(f"| {r['preset']} | {o['seq_len']} | {fmt_rate(o['tokens_per_second'])} | "
                  f"{VARIANTS[key]} | {fmt_rate(best['tokens_per_second'])} | "
                  f"**{ratio:.2f}x** | {verdict} |")
    md.append("")
    md.append("Every run, in the order they ran (ratio = libsparse tokens/s / this run's "
              "tokens/s; load = the 1-minute load average just before the run started, which "
              "still includes this benchmark's own previous runs: two busy threads alone "
              "approach 2):\n")
    md.append("| preset | n | implementation | attention kernel | s/step | tokens/s | ratio | "
              "loss after the timed steps | load |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        o = r["runs"]["libsparse"]
        for key, run in r["runs"].items():
            kernel = run.get("sdpa_backend", "libsparse block-sparse (fused)")
            md.append(f"| {r['preset']} | {run['seq_len']} | {VARIANTS[key]} | {kernel} | "
                      f"{run['seconds_per_step']:.3f} | {fmt_rate(run['tokens_per_second'])} | "
                      f"{o['tokens_per_second'] / run['tokens_per_second']:.2f}x | "
                      f"{run['last_loss']:.5f} | {run['load_before'][0]} |")
    md.append("")
    md.append("The PyTorch runs of one preset start from the same initialisation and data, so "
              "their losses after the timed steps agree (libsparse initialises with its own "
              "generator). \"Dense causal\" is the same network with plain causal attention "
              "and no pattern: a different, dense model of the same size, for reference only. "
              "Recompute rows keep only the residual stream per layer (libsparse) or checkpoint "
              "each layer (torch.utils.checkpoint).\n")
    flex = payload.get("flex_attention") or {}
    if flex.get("flex_training_on_cpu"):
        md.append("FlexAttention (PyTorch's block-sparse attention) can train on the CPU with this "
                  "PyTorch but is not timed here (the targets are set against dense masked "
                  "attention).\n")
    elif flex:
        md.append("FlexAttention (PyTorch's block-sparse attention, the closest PyTorch peer to "
                  "libsparse's kernels) cannot be a training peer on the CPU with this PyTorch: "
                  f"\"{flex.get('reason', '')}\"\n")

    md.append("## Peak memory of one training step\n")
    md.append("| preset | n | libsparse activations, no recompute | with recompute | "
              "residual streams (N+1) B n d x 4 | recompute excess over the streams | "
              "one layer's cache + logits | libsparse recompute tokens/s | "
              "PyTorch activations (RSS growth), no recompute | with torch.utils.checkpoint | "
              "process peak RSS: libsparse / PyTorch SDPA |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        o, orc = r["runs"]["libsparse"], r["runs"]["libsparse-recompute"]
        s, src = r["runs"]["pytorch-sdpa"], r["runs"]["pytorch-sdpa-recompute"]
        stream = o["batch"] * o["seq_len"] * o["width"] * 4
        streams = (o["layers"] + 1) * stream
        excess = orc["peak_activation_bytes"] - streams
        tokens = o["batch"] * o["seq_len"]
        cache = tokens * s["layer_cache_floats_per_token"] * 4
        logits = tokens * 256 * 4
        md.append(f"| {r['preset']} | {o['seq_len']} | {mb(o['peak_activation_bytes'])} MB | "
                  f"{mb(orc['peak_activation_bytes'])} MB | {mb(streams)} MB | "
                  f"{mb(excess)} MB = {excess / stream:.1f} streams | "
                  f"{mb(cache)} + {mb(logits)} = {mb(cache + logits)} MB | "
                  f"{fmt_rate(orc['tokens_per_second'])} | {mb(s['activation_peak_bytes'])} MB | "
                  f"{mb(src['activation_peak_bytes'])} MB | {mb(o['peak_rss_bytes'])} MB / "
                  f"{mb(s['process_peak_rss_bytes'])} MB (after warm-up "
                  f"{mb(s['baseline_rss_bytes'])} MB) |")
    md.append("")
    md.append("libsparse activations: `peak_activation_bytes` of `sparse-repro bench-train` (its "
              "allocator meter over every activation and working buffer of the step). PyTorch "
              "activations: peak resident set (getrusage ru_maxrss) minus the resident set after "
              "the warm-up steps, when parameters, gradients, Adam state and the [n, n] boolean "
              "masks already exist; it is an upper estimate (allocator slack counts). Process peak "
              "RSS: ru_maxrss of each whole process (wait4), including libraries and, for PyTorch, "
              "the masks and the framework (`sparse-repro info` alone peaks at "
              f"{mb(payload['provenance']['sparse_repro_info_peak_rss_bytes'])} MB: this build "
              "loads the CUDA runtime). The recomputation target is one residual "
              "stream per layer plus one layer's working set; the excess column is what the "
              "recompute peak holds beyond the N + 1 residual streams, in units of one stream "
              "(B n d fp32), to compare with one layer's cached activations (counted from the "
              "layer cache in libsparse/model/transformer.cpp: 5 d + 2 d_qk + 2 d_ff + heads + 4 "
              "floats per token) plus the logits buffer (256 floats per token); what remains "
              "beyond those are the backward pass's temporaries of one layer.\n")

    md.append("## Same model: equivalence check\n")
    if check is None:
        md.append("Not run in this invocation (--no-check).\n")
    else:
        md.append("`benchmarks/peers/test_torch_equivalence.py` (run by this driver before timing, "
                  f"exit status {check['exit']}): libsparse trains tiny models of every pattern "
                  "family and head combination, saves checkpoints (parameters replaced by large "
                  "random values and loaded back with `sparse_model_load`); PyTorch loads them, "
                  "and the losses of `sparse_model_evaluate`, of one training step, the gradient "
                  "norms and the parameters after one Adam step are compared.\n")
        md.append("```\n" + check["output"] + "\n```\n")
    return "\n".join(md)


VARIANTS = {
    "libsparse": "libsparse",
    "libsparse-recompute": "libsparse, recompute",
    "pytorch-sdpa": "PyTorch SDPA + mask",
    "pytorch-sdpa-compiled": "PyTorch SDPA + mask, torch.compile",
    "pytorch-math": "PyTorch softmax(QK^T + mask) V",
    "pytorch-causal": "PyTorch SDPA dense causal (no pattern)",
    "pytorch-sdpa-recompute": "PyTorch SDPA + mask, checkpointed",
}
SAME_MODEL = ("pytorch-sdpa", "pytorch-sdpa-compiled", "pytorch-math")


def best_same_model(runs):
    key = max((k for k in SAME_MODEL if k in runs), key=lambda k: runs[k]["tokens_per_second"])
    return key, runs[key]


def pattern_name(preset):
    base = preset[:-6] if preset.endswith("-small") else preset
    return {"cifar10": "strided, interleaved \"2111\", half-size QK and FF",
            "enwik8": "fixed (c = 32), interleaved \"12\"",
            "imagenet64": "strided, interleaved \"12\"",
            "audio": "strided, interleaved \"12\""}.get(base, "?")


if __name__ == "__main__":
    sys.exit(main())
