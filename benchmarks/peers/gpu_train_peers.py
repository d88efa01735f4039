#!/usr/bin/env python3
"""Training throughput on the GPU, side by side in one run: libsparse (`sparse-repro bench-train
--backend cuda --dtype bf16`) against the same model in PyTorch (torch_model.py) on CUDA with
bf16 autocast (fp32 master weights, bf16 matrix products, as libsparse's mixed precision) and
FlexAttention with the same block mask (each of the model's masks at the library's block size:
full blocks, partial blocks through a mask_mod, untouched blocks skipped). Writes Markdown + JSON.

Each implementation runs in its own fresh process, one after the other, on the same preset and
batch, dropout 0: untimed warm-up steps (PyTorch compiles FlexAttention in them), then timed
steps; seconds per step is the median. Peak memory, two ways:
  - device: the process's peak GPU memory as nvidia-smi reports it, polled every 50 ms (context
    included, the same for both), when nvidia-smi is there;
  - activations: libsparse's peak_activation_bytes (its allocator meter) against PyTorch's
    torch.cuda.max_memory_allocated() growth over its allocation after the warm-up (parameters,
    gradients and Adam state are allocated by then).
The ratios printed are libsparse over PyTorch for tokens/s, PyTorch over libsparse for memory
(both > 1 when libsparse is ahead).

Usage:
  benchmarks/peers/gpu_train_peers.py [--build .gpu-pack] [--preset imagenet64-small]
      [--batch 4] [--steps 5] [--warmup 2] [--time-budget S] [--out results/gpu_train_peers]
  benchmarks/peers/gpu_train_peers.py --rehearse   (no GPU: the same control flow on the CPU,
      a shortened model, libsparse in fp32; PyTorch's FlexAttention block masks checked
      against SDPA with the dense masks on the forward, its timed steps with SDPA)
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def say(message):
    print(f"gpu_train_peers: {message}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--preset", default="imagenet64-small")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=0, help="override n (0: the preset's)")
    ap.add_argument("--layers", type=int, default=0, help="override layers (0: the preset's)")
    ap.add_argument("--time-budget", type=float, default=0,
                    help="seconds for both runs together (0: no limit)")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "gpu_train_peers"))
    ap.add_argument("--rehearse", action="store_true",
                    help="CPU only: the control flow with a shortened model")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    for name in ("batch", "steps"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be >= 1 (got {getattr(a, name)})")
    if a.warmup < 0:
        ap.error(f"--warmup must be >= 0 (got {a.warmup})")
    if a.rehearse:
        a.seq_len = a.seq_len or 512
        a.layers = a.layers or 1
        a.steps = min(a.steps, 2)
        a.warmup = min(a.warmup, 1)
    return a


# ---------------------------------------------------------------- worker: the PyTorch run

def worker(a):
    """One PyTorch training run; prints one JSON line."""
    import dataclasses
    import torch
    import torch_model as tm
    device = torch.device("cpu" if a.rehearse else "cuda")
    if not a.rehearse and not torch.cuda.is_available():
        raise SystemExit(f"PyTorch {torch.__version__} sees no CUDA device")
    c = tm.preset(a.preset)
    c = dataclasses.replace(c, dropout=0.0)
    if a.seq_len:
        c = dataclasses.replace(c, seq_len=a.seq_len)
    if a.layers:
        c = dataclasses.replace(c, num_layers=a.layers)
    torch.manual_seed(7)
    t0 = time.monotonic()
    model = tm.SparseTransformer(c, attention="flex", init_seed=1).to(device)
    model.prepare_flex(device, compile=not a.rehearse)
    mask_s = time.monotonic() - t0
    tokens = torch.randint(0, 256, (a.batch, c.seq_len), dtype=torch.int64, device=device)
    check = {}
    if a.rehearse:
        # FlexAttention has no backward on the CPU: check its block masks instead (the residual
        # stream after the layers against SDPA with the dense boolean masks, same weights; not
        # the logits, which a zero-initialised output layer makes 0), then time SDPA steps.
        sdpa = tm.SparseTransformer(c, attention="sdpa", init_seed=1)

        def hidden(m):
            h = m.embed(tokens)
            for layer in range(c.num_layers):
                h = m.layer(layer, h)
            return h

        with torch.no_grad():
            diff = (hidden(model) - hidden(sdpa)).abs().max().item()
        check = {"flex_vs_sdpa_max_abs_diff": diff}
        if not diff < 1e-4:
            raise SystemExit(f"FlexAttention's block masks disagree with the dense masks: "
                             f"max |difference| of the layers' output {diff}")
        model = sdpa
    trainer = tm.Trainer(model)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=not a.rehearse)

    def step():
        with autocast:
            return trainer.step(tokens)

    def sync():
        if not a.rehearse:
            torch.cuda.synchronize()

    w0 = time.monotonic()
    for _ in range(a.warmup):
        step()
    sync()
    warmup_s = time.monotonic() - w0
    base = torch.cuda.memory_allocated() if not a.rehearse else 0
    if not a.rehearse:
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], None
    for _ in range(a.steps):
        s0 = time.monotonic()
        loss, _ = step()
        sync()
        times.append(time.monotonic() - s0)
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() if not a.rehearse else 0
    print(json.dumps({
        "implementation": "pytorch-flex", "preset": a.preset, "seq_len": c.seq_len,
        "layers": c.num_layers, "width": c.d_model, "heads": c.num_heads,
        "block": c.block_size, "batch": a.batch, "dtype": "fp32" if a.rehearse else "bf16",
        "seconds_per_step": median, "tokens_per_second": a.batch * c.seq_len / median,
        "peak_activation_bytes": peak - base, "peak_allocated_bytes": peak,
        "mask_and_compile_setup_s": round(mask_s, 1), "warmup_s": round(warmup_s, 1),
        "last_loss": loss, "torch": torch.__version__, **check}), flush=True)


# ---------------------------------------------------------------- parent

class GpuMemoryPoller:
    """Peak used GPU memory (bytes) of one process, from nvidia-smi every 50 ms; None when
    nvidia-smi is not there or never listed the process."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, None, threading.Event()
        self.smi = shutil.which("nvidia-smi")
        self.thread = threading.Thread(target=self.poll, daemon=True)
        if self.smi:
            self.thread.start()

    def poll(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run([self.smi, "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=5).stdout
                for line in out.splitlines():
                    parts = [p.strip() for p in line.split(",")]
                    if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                        used = int(parts[1]) << 20  # MiB
                        self.peak = used if self.peak is None else max(self.peak, used)
            except (OSError, subprocess.SubprocessError):
                return
            self.stop.wait(0.05)

    def finish(self):
        self.stop.set()
        if self.smi:
            self.thread.join(timeout=10)
        return self.peak


def run_measured(name, cmd, timeout, env=None):
    """Runs cmd, returns (its last JSON line as a dict, or None, and a note)."""
    say(f"{name}: {' '.join(cmd)} (limit {int(timeout)} s)")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    poller = GpuMemoryPoller(proc.pid)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        poller.finish()
        return None, f"stopped after {int(timeout)} s"
    device_peak = poller.finish()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-3:]
        return None, f"exit {proc.returncode}: {' | '.join(tail)[:300]}"
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        return None, "no JSON line in the output"
    row = json.loads(lines[-1])
    row["device_peak_bytes"] = device_peak
    row["wall_s"] = round(wall, 1)
    return row, ""


def markdown(rows, prov, ratios):
    mib = lambda b: "n/a" if not b else f"{b / 2**20:.0f}"  # noqa: E731
    out = ["# Training throughput on the GPU: libsparse vs PyTorch + FlexAttention", "",
           f"Preset {prov['preset']} (n = {prov.get('seq_len', '?')}), batch {prov['batch']}, "
           f"{prov['steps']} timed steps after {prov['warmup']} warm-up steps, dropout 0; "
           f"{prov.get('gpu', 'no GPU')}; commit {prov['commit']}; {prov['date_utc']} UTC.", "",
           "| implementation | dtype | s/step | tokens/s | activations MiB | device peak MiB |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['implementation']} | | error: {r['error']} | | | |")
            continue
        out.append(f"| {r['implementation']} | {r['dtype']} | {r['seconds_per_step']:.4f} | "
                   f"{r['tokens_per_second']:.0f} | {mib(r['peak_activation_bytes'])} | "
                   f"{mib(r.get('device_peak_bytes'))} |")
    out += ["", "Ratios (above 1: libsparse ahead): " +
            ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in ratios.items()),
            ""]
    if prov.get("note"):
        out += [prov["note"], ""]
    return "\n".join(out)


def main(a):
    from provenance import git_commit, write_atomically
    t_start = time.monotonic()
    budget = a.time_budget if a.time_budget > 0 else float("inf")
    repro = os.path.join(a.build, "benchmarks", "sparse-repro")
    if not os.access(repro, os.X_OK):
        say(f"error: {repro} not found (--build)")
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    prov = {"commit": git_commit(), "date_utc": started.strftime("%Y-%m-%d %H:%M"),
            "preset": a.preset, "batch": a.batch, "steps": a.steps, "warmup": a.warmup,
            "command": " ".join(["benchmarks/peers/gpu_train_peers.py"] + sys.argv[1:]),
            "rehearsal": a.rehearse}
    if not a.rehearse:
        try:
            import torch
            prov["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
            prov["torch"] = torch.__version__
        except ImportError as e:
            say(f"error: PyTorch is not installed ({e})")
            return 2
    rows = []

    def left():
        return budget - (time.monotonic() - t_start) - 5

    # libsparse first: it compiles nothing, so it leaves the rest of the budget to PyTorch.
    lib = [repro, "bench-train", "--preset", a.preset, "--batch", str(a.batch), "--steps",
           str(a.steps), "--warmup", str(a.warmup), "--json", "--backend",
           "cpu" if a.rehearse else "cuda", "--dtype", "fp32" if a.rehearse else "bf16"]
    if a.seq_len:
        lib += ["--seq-len", str(a.seq_len)]
    if a.layers:
        lib += ["--layers", str(a.layers)]
    share = min(left() * 0.4, 600) if budget != float("inf") else 3600
    row, note = run_measured("libsparse", lib, share)
    rows.append(row if row else {"implementation": "libsparse", "error": note})
    if row:
        prov["seq_len"] = row.get("seq_len")
    # PyTorch in a fresh process of this script.
    worker_cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--preset", a.preset,
                  "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    if a.seq_len:
        worker_cmd += ["--seq-len", str(a.seq_len)]
    if a.layers:
        worker_cmd += ["--layers", str(a.layers)]
    if a.rehearse:
        worker_cmd.append("--rehearse")
    remaining = left() if budget != float("inf") else 3600
    if remaining < 10:
        rows.append({"implementation": "pytorch-flex", "error": "out of time"})
    else:
        row, note = run_measured("pytorch", worker_cmd, remaining)
        rows.append(row if row else {"implementation": "pytorch-flex", "error": note})

    ok = [r for r in rows if "error" not in r]
    ratios = {"tokens/s": None, "activations": None, "device peak": None}
    if len(ok) == 2:
        ours, theirs = ok
        ratios["tokens/s"] = ours["tokens_per_second"] / theirs["tokens_per_second"]
        if ours["peak_activation_bytes"] and theirs["peak_activation_bytes"]:
            ratios["activations"] = theirs["peak_activation_bytes"] / ours["peak_activation_bytes"]
        if ours.get("device_peak_bytes") and theirs.get("device_peak_bytes"):
            ratios["device peak"] = theirs["device_peak_bytes"] / ours["device_peak_bytes"]
    if a.rehearse:
        prov["note"] = ("Rehearsal on the CPU (fp32 both, shortened model): the control flow "
                        "only, not a measurement. FlexAttention (eager) is checked against SDPA "
                        "with the dense masks on the forward; the timed PyTorch steps use SDPA "
                        "(FlexAttention has no CPU backward).")
    prov["wall_s"] = round(time.monotonic() - t_start)
    write_atomically(a.out + ".json", json.dumps({"provenance": prov, "rows": rows,
                                                  "ratios": ratios}, indent=1))
    write_atomically(a.out + ".md", markdown(rows, prov, ratios))
    for r in rows:
        if "error" in r:
            say(f"{r['implementation']}: error: {r['error']}")
        else:
            say(f"{r['implementation']}: {r['tokens_per_second']:.0f} tokens/s, "
                + (f"FlexAttention vs SDPA max |diff| {r['flex_vs_sdpa_max_abs_diff']:.2e}, "
                   if "flex_vs_sdpa_max_abs_diff" in r else "")
                + f"{r['seconds_per_step']:.4f} s/step, activations "
                f"{r['peak_activation_bytes'] / 2**20:.0f} MiB, device peak "
                + (f"{r['device_peak_bytes'] / 2**20:.0f} MiB" if r.get("device_peak_bytes")
                   else "n/a"))
    say(f"wrote {a.out}.md and .json")
    say("ratios libsparse vs PyTorch (above 1: libsparse ahead): " +
        ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in ratios.items()))
    if len(ok) != 2:
        say("FAIL: " + "; ".join(f"{r['implementation']}: {r['error'][-90:]}" for r in rows
                                  if "error" in r))
        return 1
    return 0


if __name__ == "__main__":
    args = parse_args()
    if args.worker:
        worker(args)
    else:
        sys.exit(main(args))
