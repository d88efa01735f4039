#!/usr/bin/env python3
"""Draws the PNG plots of results/ from the JSON the drivers wrote (no run of anything):

- loss_curves.png: training bits per dim vs step of every `*_loss.jsonl` of `sparse-repro train
  --log` (the main job's runs; every step faintly, a running mean over it), with the held-out
  evaluations as points and the synthetic source's exact entropy as a dashed line;
- dense_vs_sparse_loss.png: the same for the `table1_*_loss.jsonl` runs of `sparse-repro table1`;
- attention_time_vs_n.png: time of sparse vs dense attention vs sequence length, forward and
  forward+backward (cpu_attention.jsonl of benchmarks/cpu_attention_table.py);
- attention_memory_vs_n.png: attention memory vs sequence length, dense (the paper's figure) vs
  block-sparse vs this library's fused kernels, analytic and measured (memory_table.json).

Usage: benchmarks/plots.py [RESULTS_DIR]   (default: results/ of the source tree)
Exit status 3 when matplotlib is missing (`sparse-repro report` reports it as skipped); a plot
whose input is missing is skipped with a message. PNGs are written atomically.
"""
import glob
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("plots.py: matplotlib is not installed for %s (.ci/install-deps installs it: "
          "python3 -m pip install matplotlib)" % sys.executable, file=sys.stderr)
    sys.exit(3)


def save(fig, path):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-",
                               suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print("wrote", path)


def read_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit("plots.py: %s line %d is not JSON: %s" % (path, number, e))
    return rows


def provenance_note(prov):
    if not prov:
        return ""
    return "commit %s, %s, %s" % (prov.get("commit", "?"), prov.get("date_utc", "?"),
                                  prov.get("cpu", "?"))


def smooth(values, window):
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_plot(files, path, title, note, entropy=None, held_out=None):
    if not files:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for f in files:
        rows = read_jsonl(f)
        train = [(r["step"], r["bits_per_dim"]) for r in rows if "bits_per_dim" in r]
        evals = [(r["step"], r["eval_bits_per_dim"]) for r in rows if "eval_bits_per_dim" in r]
        if not train:
            continue
        steps, bits = zip(*train)
        label = os.path.basename(f)[:-len("_loss.jsonl")]
        evals = sorted(set(evals) | set((held_out or {}).get(label, [])))
        window = max(1, len(bits) // 50)
        # Every step faintly (a spike stays visible), the running mean over it.
        line, = ax.plot(steps, smooth(list(bits), window), label=label + " (train, smoothed)")
        if window > 1:
            ax.plot(steps, bits, color=line.get_color(), alpha=0.25, linewidth=0.6)
        if evals:
            ax.plot(*zip(*evals), "o", color=line.get_color(), markeredgecolor="black",
                    label=label + " (held out)")
    if entropy is not None:
        ax.axhline(entropy, color="black", linestyle="--", linewidth=1,
                   label="exact entropy of the synthetic source (%.3f)" % entropy)
    ax.set_xlabel("step")
    ax.set_ylabel("bits per dim")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7)
    save(fig, path)
    return True


def time_plot(path_in, path_out):
    rows = [r for r in read_jsonl(path_in) if r.get("backend", "cpu") == "cpu"]
    if not rows:
        return False
    modes = [m for m in ("fwd", "fwdbwd") if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for pattern in sorted({r["pattern"] for r in rows}):
            pts = sorted((r["n"], r["time_sparse_s"]) for r in rows
                         if r["mode"] == mode and r["pattern"] == pattern)
            if pts:
                ax.plot(*zip(*pts), "o-", label=pattern)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel("seconds")
        ax.set_title("attention %s, CPU (%s threads)" %
                     ("forward" if mode == "fwd" else "forward + backward", rows[0]["threads"]))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.text(0.01, -0.02, "source: %s (sparse-repro bench-attention)" % os.path.basename(path_in),
             fontsize=7)
    save(fig, path_out)
    return True


def memory_plot(path_in, path_out):
    with open(path_in, encoding="utf-8") as f:
        table = json.load(f)
    rows = sorted(table["rows"], key=lambda r: r["n"])
    n = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(n, [r["recomputed_bytes"] for r in rows], "o-",
            label="dense attention matrices, one layer (paper)")
    if all("sparse" in r for r in rows):
        ax.plot(n, [r["sparse"]["sparse_recomputed_bytes"] for r in rows], "s-",
                label="block-sparse, computed blocks, one layer")
        ax.plot(n, [r["sparse"]["fused_bytes_one_layer"] for r in rows], "^-",
                label="fused kernels: log-sum-exp only, one layer")
    if all("measured" in r for r in rows):
        ax.plot(n, [r["measured"]["attention_bytes"] for r in rows], "d-",
                label="measured: fused fwd+bwd, one layer (CPU)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n")
    ax.set_ylabel("bytes")
    ax.set_title("attention memory vs sequence length (4 heads, fp32)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, -0.02, "source: %s; %s" % (os.path.basename(path_in),
                                              provenance_note(table.get("provenance"))),
             fontsize=7)
    save(fig, path_out)
    return True


def held_out_points(job):
    """The main job's held-out evaluations by loss-file label: (step, bits per dim)."""
    points = {}
    for run in job.get("synthetic", []):
        points["synthetic_" + ("local" if run.get("name") == "local-only" else "strided")] = [
            (e["step"], e["bits_per_dim"]) for e in run.get("evals", [])]
    text = job.get("enwik8_sample")
    if text and "held_out_bits_per_byte" in text:
        points["enwik8_sample"] = [(text["steps"], text["held_out_bits_per_byte"])]
    return points


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "results")
    if not os.path.isdir(results):
        sys.exit("plots.py: %s is not a folder" % results)
    drawn = 0
    losses = sorted(glob.glob(os.path.join(results, "*_loss.jsonl")))
    main_runs = [f for f in losses if not os.path.basename(f).startswith("table1_")]
    table1_runs = [f for f in losses if os.path.basename(f).startswith("table1_")]
    for runs, source, what, out, title in (
            (main_runs, "main_job.json", "runs of the main job", "loss_curves.png",
             "training loss curves"),
            (table1_runs, "dense_vs_sparse.json", "sparse-repro table1", "dense_vs_sparse_loss.png",
             "dense vs strided vs fixed attention: training loss")):
        note, entropy = "", None
        if os.path.exists(os.path.join(results, source)):
            with open(os.path.join(results, source), encoding="utf-8") as f:
                job = json.load(f)
            note = what + "; " + provenance_note(job.get("provenance"))
            entropy = job.get("synthetic_exact_entropy")
        drawn += loss_plot(runs, os.path.join(results, out), title, note, entropy,
                           held_out_points(job) if source == "main_job.json" else None)
    for name, plot, out in (("cpu_attention.jsonl", time_plot, "attention_time_vs_n.png"),
                            ("memory_table.json", memory_plot, "attention_memory_vs_n.png")):
        path = os.path.join(results, name)
        if os.path.exists(path):
            drawn += plot(path, os.path.join(results, out))
        else:
            print("plots.py: no %s in %s: %s skipped" % (name, results, out))
    if drawn == 0:
        sys.exit("plots.py: nothing to plot in %s" % results)


if __name__ == "__main__":
    main()
