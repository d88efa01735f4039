#!/usr/bin/env python3
"""benchmarks/gpu_results.py on hand-made gpu_check / gpu_peers folders whose figures are known:
the largest normalised error per kernel and head size, the failed count, the sanitizer summary
lines, the timings, SDPA's rows kept and an excluded implementation's rows left out, and our rate
over SDPA's where the mode, n and head size match; a missing folder is refused by name, and so
is a missing or malformed file of the archive (no traceback)."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_results.py")


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def run_folder(path, command):
    os.makedirs(path)
    write(os.path.join(path, "provenance.txt"),
          f"command: tests/gpu_check.sh {command}\ndate: 2026-11-30 19:17:52 UTC\n"
          "pack: commit abc123\ngpu: NVIDIA H200, 580, 143771 MiB, 9.0, 1980 MHz\n"
          "cuda (driver): 13.0\nnvcc: 13.0\n")
    write(os.path.join(path, "steps.tsv"),
          "step\tverdict\tseconds\tnote\ntest_cuda_attention\tok\t48\t\n")


def rec(kernel, d, tensor, norm, ok=True, worst=1e-3):
    return json.dumps({"kernel": kernel, "layout": f"dense d{d}", "tensor": tensor, "batch": 1,
                       "heads": 1, "n": 64, "head_dim": d, "block_size": 16, "order": 0,
                       "q_scale": 1, "norm_error": norm, "worst_row": worst,
                       "bad_elements": 0 if ok else 1, "bad_rows": 0, "ok": ok}) + "\n"


def main():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        check_dir = os.path.join(tmp, "run", "gpu_check")
        peers_dir = os.path.join(tmp, "peers", "gpu_peers")
        run_folder(check_dir, "run")
        run_folder(peers_dir, "peers")
        write(os.path.join(check_dir, "attention_checks.jsonl"),
              rec("fused bf16", 64, "out", 2e-6) + rec("fused bf16", 64, "out", 5e-6, worst=0.25)
              + rec("fused bf16", 64, "dq", 4e-5, ok=False) + rec("fused fp32", 32, "lse", 1e-14)
              + rec("fused fp32", 32, "dk", None, ok=False))
        write(os.path.join(check_dir, "sanitizer_memcheck.log"),
              "========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n")
        bench = {"dtype": "bf16", "algorithm": "fused", "mode": "fwd", "pattern": "dense",
                 "n": 16384, "heads": 2, "head_dim": 64, "block": 64, "density": 1.0,
                 "time_sparse_s": 0.0016, "time_dense_s": 0.002, "dense_baseline": "cublas-dense",
                 "time_ratio": 0.8, "tflops_computed": 48.0}
        write(os.path.join(check_dir, "gpu_attention_bf16.jsonl"),
              json.dumps({"provenance": "not a timing row"}) + "\n" + json.dumps(bench) + "\n")
        # The second forward kernel's file: its rows are named as such (rate 96: 0.5 of SDPA's).
        write(os.path.join(check_dir, "gpu_attention_bf16_fwd2.jsonl"),
              json.dumps(dict(bench, tflops_computed=96.0)) + "\n")
        peers = {"provenance": {"command": "gpu_attention_peers.py", "torch": "2.11",
                                "shapes": {"batch": 1, "heads": 4}, "reps": 20},
                 "rows": [{"n": 16384, "head_dim": 64, "mode": "fwd", "impl": "sdpa-flash-dense",
                           "time_s": 0.0007, "tflops": 192.0},
                          {"n": 16384, "head_dim": 64, "mode": "fwd", "impl": "libsparse",
                           "pattern": "strided", "time_s": 1e-5, "tflops": 1126.0},
                          {"n": 16384, "head_dim": 64, "mode": "fwd", "impl": "flex-attention",
                           "pattern": "strided", "error": "InductorError: tiles"}]}
        write(os.path.join(peers_dir, "gpu_attention_peers.json"), json.dumps(peers))
        notes = os.path.join(tmp, "notes.md")
        write(notes, "## Findings\n\nHAND-WRITTEN\n")
        out = os.path.join(tmp, "out", "gpu_attention")
        os.makedirs(os.path.dirname(out))
        r = subprocess.run([sys.executable, SCRIPT, "--check", check_dir, "--peers", peers_dir,
                            "--exclude-peer", "libsparse", "--notes", notes, "--out", out],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"exit {r.returncode}: {r.stderr}")
        if r.returncode == 0:
            doc = json.load(open(out + ".json", encoding="utf-8"))
            md = open(out + ".md", encoding="utf-8").read()
            c = doc["correctness"]
            check(c["comparisons"] == 5 and c["failed"] == 2, f"counts {c['comparisons']}, {c['failed']}")
            by = {(k["kernel"], k["head_dim"]): k for k in c["by_kernel"]}
            bf = by.get(("fused bf16", 64), {})
            check(bf.get("max_norm_error", {}).get("out") == 5e-6, f"bf16 out max {bf}")
            check(bf.get("worst_row") == 0.25 and bf.get("failed") == 1, f"bf16 row/failed {bf}")
            fp = by.get(("fused fp32", 32), {})
            check(fp.get("max_norm_error", {}).get("dk") == float("inf"), f"fp32 dk {fp}")
            check("| fused fp32 | 32 | 16 | 1 | 2 | - | 1.00e-14 | - | inf |" in md,
                  "fp32 row of the Markdown table")
            check(doc["sanitizer"].get("memcheck") == "========= ERROR SUMMARY: 0 errors",
                  f"sanitizer {doc['sanitizer']}")
            check([(b["algorithm"], b["tflops_computed"]) for b in doc["benchmarks"]]
                  == [("fused", 48.0), ("fused (forward v2)", 96.0)],
                  f"benchmarks {doc['benchmarks']}")
            impls = [p["impl"] for p in doc["peers"]["rows"]]
            check(impls == ["sdpa-flash-dense", "flex-attention"], f"peer rows {impls}")
            check("1126" not in md, "an excluded row's figure in the Markdown")
            vs = doc["vs_sdpa"]
            check(len(vs) == 2 and abs(vs[0]["ratio"] - 0.25) < 1e-12
                  and abs(vs[1]["ratio"] - 0.5) < 1e-12, f"vs SDPA {vs}")
            check("HAND-WRITTEN" in md
                  and "| bench | fwd | 16384 | 64 | fused | dense | 48.0 | 192.0 | 0.25 |" in md,
                  "notes or the ratio row in the Markdown")
        r = subprocess.run([sys.executable, SCRIPT, "--check", os.path.join(tmp, "missing"),
                            "--out", out], capture_output=True, text=True)
        check(r.returncode != 0 and "missing is not a folder" in r.stderr,
              f"missing folder: exit {r.returncode}, {r.stderr!r}")
        # Broken archives: a clear message naming the file, never a traceback.
        import shutil

        def broken(what, name, edit, folder="check", expect=None):
            work = os.path.join(tmp, "broken", what.replace(" ", "_"))
            c, pe = os.path.join(work, "gpu_check"), os.path.join(work, "gpu_peers")
            shutil.copytree(check_dir, c)
            shutil.copytree(peers_dir, pe)
            target = os.path.join(c if folder == "check" else pe, name)
            if edit is None:
                os.remove(target)
            else:
                write(target, edit)
            r = subprocess.run([sys.executable, SCRIPT, "--check", c, "--peers", pe, "--out",
                                os.path.join(work, "o")], capture_output=True, text=True)
            check(r.returncode != 0 and "Traceback" not in r.stderr and name in r.stderr
                  and (expect is None or expect in r.stderr),
                  f"{what}: exit {r.returncode}, {r.stderr[-600:]!r}")

        broken("no provenance", "provenance.txt", None)
        broken("empty steps", "steps.tsv", "")
        broken("broken jsonl line", "attention_checks.jsonl",
               rec("fused bf16", 64, "out", 2e-6) + '{"kernel": "fused\n', expect="line 2")
        broken("record without ok", "attention_checks.jsonl", '{"kernel": "k"}\n', expect="ok")
        broken("broken benchmark line", "gpu_attention_bf16.jsonl", "garbage\n", expect="line 1")
        broken("peers not JSON", "gpu_attention_peers.json", "{", folder="peers")
        broken("peers without provenance", "gpu_attention_peers.json",
               json.dumps({"rows": []}), folder="peers", expect="provenance")
        broken("peers provenance without command", "gpu_attention_peers.json",
               json.dumps({"provenance": {}, "rows": []}), folder="peers", expect="command")
        r = subprocess.run([sys.executable, SCRIPT, "--check", check_dir, "--notes",
                            os.path.join(tmp, "no-notes.md"), "--out", out],
                           capture_output=True, text=True)
        check(r.returncode != 0 and "Traceback" not in r.stderr and "no-notes.md" in r.stderr,
              f"missing notes: exit {r.returncode}, {r.stderr[-600:]!r}")
        # A peers JSON on its own (no provenance.txt or steps.tsv beside it, as `gpu_check.sh exec`
        # writes it) with our dense causal layout timed beside SDPA: that rate (96 of 192: 0.5)
        # comes first, from the peers run; the first forward kernel's file is named as such.
        alone = os.path.join(tmp, "alone")
        os.makedirs(alone)
        dense = {"n": 16384, "head_dim": 64, "mode": "fwd", "impl": "libsparse",
                 "pattern": "dense", "time_s": 0.0014, "tflops": 96.0}
        write(os.path.join(alone, "gpu_attention_peers.json"),
              json.dumps(dict(peers, rows=peers["rows"][:1] + [dense])))
        quick = os.path.join(tmp, "quick", "gpu_quick")
        shutil.copytree(check_dir, quick)
        os.rename(os.path.join(quick, "gpu_attention_bf16.jsonl"),
                  os.path.join(quick, "gpu_attention_bf16_fwd1.jsonl"))
        r = subprocess.run([sys.executable, SCRIPT, "--check", quick, "--peers", alone, "--out",
                            out], capture_output=True, text=True)
        check(r.returncode == 0, f"peers alone: exit {r.returncode}, {r.stderr[-600:]!r}")
        if r.returncode == 0:
            doc = json.load(open(out + ".json"))
            vs = [(v["source"], v["algorithm"], round(v["ratio"], 12)) for v in doc["vs_sdpa"]]
            check(vs == [("peers", "fused", 0.5), ("bench", "fused (forward v1)", 0.25),
                         ("bench", "fused (forward v2)", 0.5)], f"peers alone: vs SDPA {vs}")
            check("peers run" not in doc["runs"], f"peers alone: runs {list(doc['runs'])}")
            md = open(out + ".md", encoding="utf-8").read()
            check("| peers | fwd | 16384 | 64 | fused | dense | 96.0 | 192.0 | 0.50 |" in md,
                  "peers alone: the peers rate in the Markdown")
        # Peers without SDPA rows: the report, without the side-by-side rates.
        nosdpa = dict(peers, rows=[r for r in peers["rows"] if r["impl"] != "sdpa-flash-dense"])
        pe = os.path.join(tmp, "nosdpa", "gpu_peers")
        shutil.copytree(peers_dir, pe)
        write(os.path.join(pe, "gpu_attention_peers.json"), json.dumps(nosdpa))
        r = subprocess.run([sys.executable, SCRIPT, "--check", check_dir, "--peers", pe, "--out",
                            out], capture_output=True, text=True)
        check(r.returncode == 0 and json.load(open(out + ".json"))["vs_sdpa"] == [],
              f"peers without SDPA: exit {r.returncode}, {r.stderr[-600:]!r}")
    for f in failures:
        print("FAIL:", f)
    print("gpu-results:", "ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
