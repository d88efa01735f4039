#!/usr/bin/env python3
"""sparse-repro eval --sliding, baselines, table1 and report, against independent computations:

- sliding evaluation: stride == seq_len equals the plain evaluation of the same bytes; a smaller
  stride equals the bits of windows cut here (the paper's protocol written out in Python) scored
  through the Python binding's token_bits, every byte once;
- baselines: gzip/bzip2/xz costs of a text file's held-out bytes equal Python's zlib/bz2/lzma with
  the same settings and split rule; FLAC on generated WAV files; PNG/WebP on synthetic images;
- table1 --quick: three runs with the same budget; report re-renders its Markdown identically;
- report: results/bpd.md and memory_table.md re-render from their JSON to the committed tables,
  main_job.md with the numbers of its JSON, numbers of a small hand-written JSON appear in the
  tables, and bad input gives clear errors.

usage: test_drivers_report.py <sparse-repro> <libsparse.so> <source root> [<b_sanitize>]
"""
import bz2
import json
import lzma
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
import zlib

exe, libsparse, root = (os.path.abspath(a) for a in sys.argv[1:4])
# A sanitizer-instrumented libsparse.so cannot be loaded into an uninstrumented Python.
sanitized = len(sys.argv) > 4 and sys.argv[4] not in ("", "none")
os.environ["SPARSE_LIBRARY"] = libsparse
sys.path.insert(0, os.path.join(root, "capi", "bindings", "python"))


def run(*args, check=True):
    p = subprocess.run([exe, *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit("sparse-repro %s failed (%d):\n%s%s" % (" ".join(args), p.returncode, p.stdout,
                                                           p.stderr))
    return p


def run_json(*args):
    out = run(*args).stdout
    return json.loads(out[out.index("{"):])


def text_bytes(n, seed):
    rng = random.Random(seed)
    words = ["sparse", "transformer", "attention", "the", "of", "and", "model", "bits", "<page>",
             "[[link]]", "1904.10509", "stride", "window", "context"]
    out = []
    while sum(len(w) + 1 for w in out) < n:
        out.append(rng.choice(words))
    return (" ".join(out)).encode()[:n]


def split_range(n, split):  # datasets/README.md: 90% / 5% / 5%
    a, b = n // 10 * 9 + (n % 10) * 9 // 10, n // 20 * 19 + (n % 20) * 19 // 20
    return {"train": (0, a), "valid": (a, b), "test": (b, n)}[split]


def check_sliding(tmp):
    data = text_bytes(40000, 1)
    path = os.path.join(tmp, "text.txt")
    open(path, "wb").write(data)
    model = os.path.join(tmp, "m.safetensors")
    run("train", "--preset", "enwik8-small", "--data", "text:" + path, "--seq-len", "32",
        "--stride", "8", "--summary", "4", "--block", "16", "--layers", "1", "--width", "32",
        "--heads", "2", "--steps", "30", "--batch", "4", "--lr", "3e-3", "--eval-sequences", "2",
        "--checkpoint", model, "--threads", "1", "--quiet")
    lo, hi = split_range(len(data), "test")
    test = data[lo:hi]
    whole = len(test) // 32 * 32
    plain = run_json("eval", "--checkpoint", model, "--data", "text:" + path, "--split", "test",
                     "--sequences", "100000", "--threads", "1", "--json")
    assert plain["sequences"] * 32 == whole, (plain, whole)
    same = run_json("eval", "--checkpoint", model, "--data", "text:" + path, "--split", "test",
                    "--sliding", "32", "--bytes", str(whole), "--threads", "1", "--json")
    assert same["bytes"] == whole and same["windows"] == whole // 32, same
    assert abs(same["bits_per_byte"] - plain["bits_per_dim"]) < 1e-6 * plain["bits_per_dim"], \
        (same, plain)
    assert plain["bits_per_dim"] < 7.5, plain  # it learned something: the comparison means more

    # Smaller stride: the windows cut here, scored through the binding.
    offset, length = 100, len(test) - 100 - 7  # a range that ends mid-stride
    slide = run_json("eval", "--checkpoint", model, "--data", "text:" + path, "--split", "test",
                     "--min-context", "24", "--offset", str(offset), "--bytes", str(length),
                     "--threads", "1", "--batch", "3", "--json")
    assert math.isfinite(slide["bits_per_byte"]) and slide["bytes"] == length, slide
    if sanitized:
        print("ok: sliding evaluation (stride n = plain); sanitized build: the comparison "
              "through the Python binding is skipped")
        return
    try:
        import numpy as np
    except ImportError:
        print("note: no numpy for this python3: the comparison through the binding is skipped")
        return
    import sparse_ctypes as sp
    stream = test[offset:offset + length]
    counted = [0] * length
    total = 0.0
    with sp.Context(backend="cpu", num_threads=1) as ctx, sp.Model.load(ctx, model) as m:
        starts = list(range(0, length - 32 + 1, 8))
        if starts[-1] + 32 < length:
            starts.append(length - 32)
        done = 0  # bytes [0, done) scored
        for s in starts:
            bits = m.token_bits(np.frombuffer(stream[s:s + 32], np.uint8))[0]
            for i in range(32):
                if s + i >= done:
                    counted[s + i] += 1
                    total += bits[i]
                    assert s == 0 or i >= 24, (s, i)  # at least the minimum context
            done = s + 32
    assert counted == [1] * length, "a byte was scored other than once"
    assert slide["bytes"] == length and slide["windows"] == len(starts), (slide, len(starts))
    assert slide["stride"] == 8 and slide["min_context"] == 24, slide
    assert abs(slide["bits_per_byte"] - total / length) < 1e-9 * total / length, \
        (slide["bits_per_byte"], total / length)
    assert math.isfinite(slide["bits_per_byte"])

    # Bad requests fail with a message, not a crash.
    for args, message in ((["--sliding", "33"], "larger than the model's seq_len"),
                          (["--min-context", "32"], "must be smaller"),
                          (["--sliding", "8", "--offset", "999999"], "past the end"),
                          (["--bytes", "64"], "apply to --sliding")):
        p = run("eval", "--checkpoint", model, "--data", "text:" + path, *args, check=False)
        assert p.returncode != 0 and message in p.stderr, (args, p.stderr)
    p = run("eval", "--checkpoint", model, "--data", "synthetic_image", "--sliding", "8",
            check=False)
    assert p.returncode != 0 and "evaluate text" in p.stderr, p.stderr
    print("ok: sliding evaluation (stride n = plain; stride 8 = the binding's windows)")


def check_baselines(tmp):
    data = text_bytes(60000, 2)
    path = os.path.join(tmp, "b.txt")
    open(path, "wb").write(data)
    t = run_json("baselines", "--data", "text:" + path, "--data-seq-len", "1", "--json")
    lo, hi = split_range(len(data), "test")
    train, held = data[:split_range(len(data), "train")[1]], data[lo:hi]
    assert t["held_out_bytes"] == len(held) and t["train_bytes"] == len(train), t

    def gz(b):
        c = zlib.compressobj(9, zlib.DEFLATED, 31, 9)
        return len(c.compress(b) + c.flush())

    def xz(b):
        return len(lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                                 preset=9 | lzma.PRESET_EXTREME))

    expected = {"gzip -9 (zlib)": gz, "bzip2 -9 (libbz2)": lambda b: len(bz2.compress(b, 9)),
                "xz -9e (liblzma)": xz}
    rows = {r["name"]: r["bits"] for r in t["rows"]}
    for name, size in expected.items():
        want = 8 * (size(train + held) - size(train)) / len(held)
        assert abs(rows[name] - want) < 1e-9, (name, rows[name], want)
    assert 0 < rows["zstd -19 (libzstd)"] < 8, rows

    # Audio: ten generated WAV files (fewer than 10 would all be train), 12 kHz mono 16-bit.
    folder = os.path.join(tmp, "audio")
    os.mkdir(folder)
    rng = random.Random(3)
    for k in range(10):
        with wave.open(os.path.join(folder, "clip%d.wav" % k), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(12000)
            f = 220 * (k + 1)
            w.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * f * i / 12000)
                                                           + rng.gauss(0, 300)))
                                   for i in range(6000)))
    p = run("baselines", "--data", "audio:" + folder, "--data-seq-len", "1024", "--json",
            check=False)
    if p.returncode != 0 and "unsupported" in p.stderr.lower():
        print("note: this build reads no audio (no libsndfile): audio baselines skipped")
        return check_image_baselines(path)
    a = json.loads(run("baselines", "--data", "audio:" + folder, "--data-seq-len", "1024",
                       "--json").stdout)
    assert a["unit"] == "bits per sample" and a["held_out_bytes"] > 0, a
    assert a["held_out_bytes"] % 1024 == 0, a
    rows = {r["name"]: r["bits"] for r in a["rows"]}
    flac16 = rows.get("FLAC -8 (libsndfile), 16-bit PCM", -1)
    flac8 = rows.get("FLAC -8 (libsndfile), 8-bit mu-law codes", -1)
    if flac16 < 0:
        print("note: no FLAC in this build")
    else:
        assert 0 < flac16 < 16 and 0 < flac8 < 8, rows  # tonal audio compresses
        md = run("baselines", "--data", "audio:" + folder, "--data-seq-len", "1024").stdout
        assert "| FLAC -8 (libsndfile), 8-bit mu-law codes | %.3f |" % flac8 in md, md

    check_image_baselines(path)


def check_image_baselines(path):
    # Images: PNG and WebP per synthetic image.
    i = run_json("baselines", "--data", "synthetic_image", "--image-width", "16",
                 "--image-height", "8", "--num-sequences", "64", "--json")
    rows = {r["name"]: r["bits"] for r in i["rows"]}
    assert i["unit"] == "bits per sub-pixel", i
    for name in ("PNG (libpng, level 9)", "WebP lossless (libwebp)"):  # -1: not in this build
        assert rows[name] == -1 or 0 < rows[name] < 16, rows
    p = run("baselines", "--data", "text:" + path, "--split", "train", check=False)
    assert p.returncode != 0 and "valid or test" in p.stderr, p.stderr
    print("ok: baselines (text = Python's zlib/bz2/lzma; FLAC; PNG/WebP)")


def check_attention_alone(d, md):
    """The attention-alone figures of a dense_vs_sparse.json dataset, against closed forms."""
    runs = {r["attention"]: r for r in d["runs"]}
    dense = runs["dense"]
    batch, heads, n, block = dense["batch"], dense["heads"], dense["seq_len"], dense["block"]
    nb = -(-n // block)
    # Every layer of the dense model computes the nb (nb + 1) / 2 causal blocks of every head.
    assert dense["attention_computed_blocks"] == dense["layers"] * heads * nb * (nb + 1) // 2, d
    assert dense["attention_dense_blocks"] == dense["attention_computed_blocks"], d
    scores = lambda r: 2 * 4 * batch * (r["attention_computed_blocks"] // r["layers"]) * block**2
    # The unfused backward pass stores P and dS of every computed block (fp32): for the dense
    # model exactly one layer's blocks, plus small per-thread tiles.
    assert scores(dense) <= dense["attention_stored_scores_bytes"] < scores(dense) + (1 << 20), d
    for name in ("strided", "fixed"):
        r = runs[name]
        assert r["attention_dense_blocks"] == dense["attention_dense_blocks"], r
        assert 0 < r["attention_computed_blocks"] < dense["attention_computed_blocks"], r
        assert r["attention_stored_scores_bytes"] <= dense["attention_stored_scores_bytes"], r
    for r in d["runs"]:
        assert r["attention_seconds_per_step"] > 0 and r["attention_rounds"] >= 1, r
        assert 0 < r["attention_workspace_bytes"] and 0 < r["attention_layout_bytes"], r
        row = "| %s | %d (%.0f%%) | %.1f ms | %.1f ms |" % (
            r["attention"], r["attention_computed_blocks"],
            100.0 * r["attention_computed_blocks"] / r["attention_dense_blocks"],
            1000 * r["seconds_per_step"], 1000 * r["attention_seconds_per_step"])
        assert row in md, (row, md)


def check_files_cited(res):
    """Published tables stand alone: every Markdown file they name is in the repository."""
    for name in sorted(os.listdir(res)):
        if not name.endswith(".md"):
            continue
        for cited in set(re.findall(r"[A-Za-z0-9_./-]+\.md\b", open(os.path.join(res, name)).read())):
            assert any(os.path.exists(os.path.join(base, cited)) for base in (res, root)), \
                "%s cites %s, which is not in the repository" % (name, cited)


def check_table1_and_report(tmp):
    out = os.path.join(tmp, "t1")
    run("table1", "--quick", "--no-text", "--out", out, "--threads", "1")
    t = json.load(open(os.path.join(out, "dense_vs_sparse.json")))
    assert t["quick"] and t["provenance"]["command"].startswith("sparse-repro table1"), t
    (d,) = t["datasets"]
    assert [r["attention"] for r in d["runs"]] == ["dense", "strided", "fixed"], d
    assert len({(r["steps"], r["tokens_seen"], r["parameters"]) for r in d["runs"]}) == 1, d
    md = open(os.path.join(out, "dense_vs_sparse.md")).read()
    for r in d["runs"]:
        assert "| %s | %.3f |" % (r["attention"], r["bits_per_dim"]) in md, (r, md)
        assert "%.1f ms" % (1000 * r["seconds_per_step"]) in md
        assert os.path.exists(os.path.join(out, "table1_synthetic_%s_loss.jsonl" % r["attention"]))
    check_attention_alone(d, md)
    os.remove(os.path.join(out, "dense_vs_sparse.md"))
    run("report", "--dir", out, "--no-plots")
    assert open(os.path.join(out, "dense_vs_sparse.md")).read() == md

    # The committed results re-render to the committed Markdown.
    res = os.path.join(tmp, "results")
    shutil.copytree(os.path.join(root, "results"), res)
    committed = {n: open(os.path.join(res, n)).read()
                 for n in ("bpd.md", "memory_table.md", "dense_vs_sparse.md")}
    job = json.load(open(os.path.join(res, "main_job.json")))
    # A small baselines JSON next to them, hand-written.
    small = {"provenance": job["provenance"], "data": "text:x", "kind": "text", "split": "test",
             "train_bytes": 90, "held_out_bytes": 5, "unit": "bits per byte", "unit_of": "bytes",
             "rows": [{"name": "gzip -9 (zlib)", "bits": 3.14159, "note": "given"},
                      {"name": "missing", "bits": -1}]}
    open(os.path.join(res, "baselines_small.json"), "w").write(json.dumps(small))
    p = run("report", "--dir", res, "--no-plots")
    for name in ("main_job.md", "bpd.md", "memory_table.md", "baselines_small.md"):
        assert "wrote %s" % os.path.join(res, name) in p.stdout, p.stdout
    assert open(os.path.join(res, "bpd.md")).read() == committed["bpd.md"]
    assert "wrote %s" % os.path.join(res, "dense_vs_sparse.md") in p.stdout, p.stdout
    assert open(os.path.join(res, "dense_vs_sparse.md")).read() == committed["dense_vs_sparse.md"]
    committed_table = json.load(open(os.path.join(res, "dense_vs_sparse.json")))
    for d in committed_table["datasets"]:
        check_attention_alone(d, committed["dense_vs_sparse.md"])
    check_files_cited(res)
    # The main job's own Markdown equals report's rendering (tests/test_main_job.py checks that on
    # a fresh run); here the committed JSON, whatever its age, renders with all of its numbers.
    new = open(os.path.join(res, "main_job.md")).read()
    assert new.startswith("# Main job: small-scale bits per dim\n"), new[:80]
    assert "`%s`" % job["provenance"]["command"] in new
    table = lambda text: text[text.index("| data |"):]
    assert table(open(os.path.join(res, "memory_table.md")).read()) == \
        table(committed["memory_table.md"])
    for r in job["synthetic"]:
        assert "| %.3f |" % r["eval_bits_per_dim"] in new
        assert "| %d | %d | %d |" % (r["steps"], r["tokens_seen"], r["parameters"]) in new
    for name, bits in job.get("enwik8_sample_baselines", {}).items():
        assert "| %s, cost of the held-out bytes after the training bytes | | | | %.3f |" % (
            name, bits) in new, name
    if "enwik8_sample" in job:
        assert "%.3f" % job["enwik8_sample"]["held_out_bits_per_byte"] in new
    b = open(os.path.join(res, "baselines_small.md")).read()
    assert "| gzip -9 (zlib) | 3.142 | given |" in b and "not available in this build" in b, b

    # Plots when matplotlib is there.
    p = run("report", "--dir", res)
    try:
        import matplotlib  # noqa: F401
        for png in ("loss_curves.png", "attention_time_vs_n.png", "attention_memory_vs_n.png"):
            assert open(os.path.join(res, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n", png
    except ImportError:
        assert "plots skipped: matplotlib" in p.stdout, p.stdout

    # A --python that is not there: an error after the tables (it was "plots skipped", exit 0).
    p = run("report", "--dir", res, "--python", os.path.join(tmp, "no-such-python"), check=False)
    assert p.returncode != 0 and "--python" in p.stderr and "no such program" in p.stderr, p.stderr
    assert "wrote " in p.stdout, p.stdout
    # A folder or a file that is not executable: not a program either (the shell said
    # "Permission denied" and the report "plots.py failed (exit 126)").
    plain = os.path.join(tmp, "not-executable")
    open(plain, "w").close()
    for bad in (tmp, plain):
        p = run("report", "--dir", res, "--python", bad, check=False)
        assert p.returncode != 0 and f"--python {bad}: no such program" in p.stderr, (bad, p.stderr)

    # Bad input.
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    p = run("report", "--dir", empty, check=False)
    assert p.returncode != 0 and "no result JSON" in p.stderr, p.stderr
    open(os.path.join(empty, "main_job.json"), "w").write("{\"provenance\": ")
    p = run("report", "--dir", empty, check=False)
    assert p.returncode != 0 and "main_job.json: not valid JSON" in p.stderr, p.stderr
    open(os.path.join(empty, "main_job.json"), "w").write("{\"synthetic\": []}")
    p = run("report", "--dir", empty, check=False)
    assert p.returncode != 0 and "missing or malformed field" in p.stderr, p.stderr
    print("ok: table1 --quick and report (committed results re-render identically)")


with tempfile.TemporaryDirectory() as tmp:
    check_sliding(tmp)
    check_baselines(tmp)
    check_table1_and_report(tmp)
