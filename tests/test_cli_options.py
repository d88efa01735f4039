#!/usr/bin/env python3
"""`sparse-repro` options as a new user meets them, one table row per case.

Refusals: every out-of-range or malformed value is an error naming the option, the range and the
value, before any work (no CLI11 "Value 0 not in range 0.000000 to 1797...", no internal field
names such as `count`, no std::bad_alloc); a misspelt subcommand names the closest one.
Fixable errors name the fix, and the fix works: a text split shorter than one sequence names a
--seq-len that fits (the same command with it then runs), a single CIFAR-10 record file or
ImageNet npz names --eval-split train. Output: train, eval and sample print one line for a
person (train and eval: bits/dim, the split, the checkpoint; sample: the file, its format, the
tokens), --json the JSON with the same figures; eval without --data takes the checkpoint's own
data; a quick main job refuses a folder holding a real run's results; sample PNGs are enlarged by
nearest neighbour (checked against the raw tokens)."""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

from png_gray import read_gray_png

exe = os.path.abspath(sys.argv[1])  # tests below also run it from other folders
# What a refusal must never say.
NEVER = ["1797", "0.000000", "A subcommand is required", "bad_alloc", "out of memory",
         "Could not convert"]
TINY = ["--preset", "enwik8-small", "--data", "synthetic_text", "--seq-len", "64", "--stride",
        "16", "--summary", "4", "--block", "16", "--layers", "1", "--width", "32", "--heads", "1",
        "--batch", "2", "--eval-sequences", "2", "--threads", "1", "--quiet"]


def tiny(*overrides):
    """TINY with the options in `overrides` (option, value, ...) replacing TINY's."""
    args = list(TINY)
    for option, value in zip(overrides[::2], overrides[1::2]):
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    return args


def run(args, timeout=120, cwd=None):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def refused(args, *words, timeout=60):
    r = run(args, timeout=timeout)
    shown = " ".join(args)
    assert r.returncode != 0, f"{shown}: expected a refusal, got exit 0:\n{r.stdout[-300:]}"
    for w in words:
        assert w in r.stderr, f"{shown}: {w!r} not in the error: {r.stderr!r}"
    for w in NEVER:
        assert w not in r.stderr, f"{shown}: {w!r} in the error: {r.stderr!r}"
    return r.stderr


# (arguments, words the error must contain)
OPTION_CASES = [
    (["train", "--steps", "0"], ["--steps", "at least 1", "given 0"]),
    (["train", "--steps", "abc"], ["--steps", "integer", '"abc"']),
    (["train", "--batch", "0"], ["--batch", "given 0"]),
    (["train", "--stride", "0"], ["--stride", "at least 1"]),
    (["train", "--layers", "-2"], ["--layers", "given -2"]),
    (["train", "--layers=-2"], ["--layers", "given -2"]),
    (["train", "--width", "-5"], ["--width", "given -5"]),
    (["train", "--heads", "0"], ["--heads"]),
    (["train", "--block", "0"], ["--block"]),
    (["train", "--seq-len", "-64"], ["--seq-len", "given -64"]),
    (["train", "--summary", "0"], ["--summary"]),
    (["train", "--dropout", "-0.5"], ["--dropout", "[0, 1)", "given -0.5"]),
    (["train", "--dropout", "1"], ["--dropout", "[0, 1)"]),
    (["train", "--lr", "0"], ["--lr", "greater than 0"]),
    (["train", "--lr", "nan"], ["--lr"]),
    (["train", "--warmup", "-1"], ["--warmup"]),
    (["train", "--recompute", "2"], ["--recompute", "0 to 1"]),
    (["train", "--eval-sequences", "0"], ["--eval-sequences"]),
    (["train", "--eval-split", "tset"], ["--eval-split", "train, valid or test", "tset"]),
    (["train", "--eval-every", "-3"], ["--eval-every"]),
    (["train", "--threads", "-1"], ["--threads"]),
    (["train", "--weight-decay", "-1"], ["--weight-decay"]),
    (["train", "--output-init-std", "-1"], ["--output-init-std"]),
    (["train", "--vocab", "1"], ["--vocab", "2 to 256"]),
    (["train", "--vocab", "300"], ["--vocab", "2 to 256"]),
    (["train", "--num-sequences", "0"], ["--num-sequences"]),
    (["train", "--image-width", "0"], ["--image-width"]),
    (["train", "--noise-scale", "0"], ["--noise-scale"]),
    (["train", "--copy-offset", "0"], ["--copy-offset"]),
    (["train", "--data-seq-len", "0"], ["--data-seq-len"]),
    (["train", "--summary-variants", "0"], ["--summary-variants"]),
    (["train", "--steps", "99999999999999999999999"], ["--steps"]),
    (["train", "--batch", "99999999999"], ["--batch", "2147483647"]),
    (["eval", "--checkpoint", "x", "--sequences", "0"], ["--sequences", "at least 1"]),
    (["eval", "--checkpoint", "x", "--split", "dev"], ["--split", "train, valid or test"]),
    (["eval", "--checkpoint", "x", "--batch", "0"], ["--batch"]),
    (["sample", "--checkpoint", "x", "--out", "y", "--length", "0"], ["--length"]),
    (["sample", "--checkpoint", "x", "--out", "y", "--temperature", "-1"], ["--temperature"]),
    (["sample", "--checkpoint", "x", "--out", "y", "--scale", "0"], ["--scale"]),
    (["bench-attention", "--n", "2^40"], ["--n", '"2^40"']),
    (["bench-attention", "--n", "1099511627776"], ["--n 1099511627776", "memory limit"]),
    # A filter that selects nothing is an error naming it and the operations, not "0 checks".
    (["check", "--filter", "no_such_operation"],
     ["--filter no_such_operation", "matches no operation", "layer_norm_forward"]),
    (["bench-attention", "--n", "1024,0"], ["--n", "given 0"]),
    (["bench-attention", "--heads", "0"], ["--heads"]),
    (["bench-attention", "--block", "24"], ["--block", "16, 32, 64 or 128"]),
    (["bench-attention", "--reps", "0"], ["--reps"]),
    (["bench-train", "--batch", "0"], ["--batch"]),
    (["bench-train", "--layers", "0"], ["--layers"]),
    (["memory-table", "--block", "24"], ["--block", "16, 32, 64 or 128"]),
    (["table1", "--steps", "0"], ["--steps"]),
    (["presets", "--steps", "0"], ["--steps"]),
    (["main", "--minutes", "0"], ["--minutes", "greater than 0"]),
    (["main", "--threads", "-2"], ["--threads"]),
    (["baselines", "--split", "train"], ["--split", "valid or test"]),
    (["baselines", "--max-train-bytes", "-1"], ["--max-train-bytes"]),
    (["trian"], ["unknown subcommand", '"trian"', 'did you mean "train"']),
    (["bench-atention"], ['did you mean "bench-attention"']),
    (["frobnicate"], ["unknown subcommand", "subcommands:"]),
    # A misspelt option names the one meant, also where it leaves a required option missing.
    (["train", "--step", "3"], ['train: unknown option "--step"', 'did you mean "--steps"',
                                "train --help"]),
    (["train", "--warmpu=5"], ['"--warmpu"', 'did you mean "--warmup"']),
    (["eval", "--chekpoint", "x.safetensors"], ['"--chekpoint"', 'did you mean "--checkpoint"']),
    (["sample", "--checkpoint", "x", "--output", "y.png"], ['"--output"', 'did you mean "--out"']),
    (["eval", "--check", "x"], ['"--check"', 'did you mean "--checkpoint"']),
    (["bench-attention", "--patern", "dense"], ['did you mean "--pattern"']),
    (["train", "--frobnicate"], ['unknown option "--frobnicate"', "train --help"]),
    # One dash, or a typographic dash copied from a document: CLI11 said only "--checkpoint is
    # required" for each.
    (["eval", "-checkpoint", "x"], ['"-checkpoint" has one dash', 'did you mean "--checkpoint"']),
    (["eval", "-chekpoint=x"], ['unknown option "-chekpoint"', 'did you mean "--checkpoint"']),
    (["eval", "\u2014checkpoint", "x"], ["typographic dash", 'did you mean "--checkpoint"']),
    (["train", "\u2013steps=3"], ["typographic dash", 'did you mean "--steps"']),
    # name=value without the dashes: CLI11 said only "--checkpoint is required".
    (["eval", "checkpoint=x"], ['"checkpoint=x" has no leading "--"',
                                'did you mean "--checkpoint=x"']),
    (["train", "--steps", "3", "seed=2"], ['"seed=2" has no leading "--"']),
    # An option of one value given twice: CLI11 said "--steps: At Most 1 required but received 2".
    (["train", "--steps", "2", "--steps=1"], ["train: --steps is given twice (2, then 1)",
                                              "give it once"]),
    (["sample", "--checkpoint", "x", "--out", "y", "--out", "z"], ["--out is given twice (y, then z)"]),
    # The second without a value: it said "(3, then --quiet)", an option shown as the value, or
    # "(3, then )".
    (["train", "--steps", "3", "--steps", "--quiet"],
     ["--steps is given twice (3, then with no value)"]),
    (["train", "--steps", "3", "--steps"], ["--steps is given twice (3, then with no value)"]),
    (["train", "--steps=3", "--steps="], ['--steps is given twice (3, then "")']),
    # An option where the one before it expects its value: CLI11 took it as the value
    # (--checkpoint --quiet saved the checkpoint as "--quiet"; memory-table wrote "./--json").
    (["train", "--checkpoint", "--quiet"], ["--checkpoint needs a value", '"--quiet", another option',
                                            "--checkpoint=VALUE"]),
    (["memory-table", "--output", "--json"], ["--output needs a value"]),
    # A value that begins with a dash is not taken for a one-dash option.
    (["sample", "--checkpoint", "x", "--out", "y", "--temperature", "-inf"],
     ["--temperature", "-inf", "at least 0"]),
    # The output is checked before the measurement (which takes a while).
    (["memory-table", "--measure", "--output", "/nonexistent-folder/t.md"],
     ["--output", "/nonexistent-folder"]),
    # A dataset's message quotes paths and other libraries' text: only "count = N" is a field.
    (["train", *tiny("--data", "text:/nonexistent/count/a.txt")], ["/nonexistent/count/a.txt"]),
    (["train", *tiny("--data", "audio:/dev/zero")], ["/dev/zero", "character device"]),
    # Seeds: decimal digits only ("-1" was taken as 2^64 - 1, "0x10" as 16); a value that begins
    # with a dash is the value's problem, not an unknown option "-5".
    (["train", "--seed", "-5"], ['--seed: must be a whole number in [0, 2^64 - 1], given "-5"']),
    (["train", "--data-seed", "0x10"], ["--data-seed", '"0x10"']),
    (["sample", "--checkpoint", "x", "--out", "y", "--seed", "18446744073709551616"],
     ["--seed", "18446744073709551616"]),
    ([], ["SUBCOMMAND", "subcommands:", "train, eval, sample"]),
    # Mixed precision on the CPU: refused naming --dtype and both fixes, before any data is read.
    (["train", *tiny("--dtype", "fp16", "--data", "text:/nonexistent")],
     ["--dtype fp16", "--backend cuda", "--dtype fp32"]),
    (["bench-train", "--dtype", "bf16"], ["--dtype bf16", "--backend cuda", "--dtype fp32"]),
    # bench-train has no --stride: the fix is named in its own options (it said "stride = 96 must
    # be in [1, seq_len = 5]", the library's fields).
    (["bench-train", "--preset", "cifar10-small", "--seq-len", "5"],
     ["--seq-len 5", "stride 96", "--seq-len 96 or more"]),
    # ... and above the preset's position grid (it said "the product of position_shape must be
    # >= seq_len = 5000").
    (["bench-train", "--preset", "cifar10-small", "--seq-len", "5000"],
     ["--seq-len 5000", "32 x 32 x 3 = 3072", "--seq-len 3072 or less"]),
    (["eval", "--checkpoint", "x", "--data", "synthetic_text", "--dtype", "bf16"],
     ["--dtype bf16", "--backend cuda"]),
    (["sample", "--checkpoint", "x", "--out", "y", "--dtype", "fp16"],
     ["--dtype fp16", "--backend cuda"]),
    # Errors the library finds, named by the option that sets the field.
    (["train", *tiny("--block", "24")], ["--block", "16, 32, 64 or 128"]),
    (["train", *tiny("--num-sequences", "99999999999")], ["--num-sequences"]),
    (["train", *tiny("--stride", "100")], ["--stride", "--seq-len"]),
    # Before any work, in the options' names (not the library's micro_batch / batch fields).
    (["train", *tiny("--batch", "3", "--micro-batch", "2")], ["--micro-batch 2", "--batch 3"]),
    # A data kind that reads a file, given without one: the form that works, not desc->path.
    (["train", *tiny("--data", "cifar10")], ["--data cifar10", "--data cifar10:PATH"]),
    (["train", *tiny("--data", "enwik8:")], ["--data enwik8:PATH"]),
    # Unknown names list the known ones.
    (["train", *tiny("--data", "foo")], ['"foo"', "synthetic_text", "enwik8", "audio"]),
    # A path given to a synthetic kind was ignored (the run was still named after it).
    (["train", *tiny("--data", "synthetic_text:/nonexistent")],
     ["--data synthetic_text:/nonexistent", "reads no file", "--data synthetic_text "]),
    (["bench-attention", "--pattern", "stried"], ['"stried"', "strided_row", "strided_merged"]),
    # bench-attention's layout fields are named by their options.
    (["bench-attention", "--n", "100"], ["--stride 128", "--n 100", "at most 100"]),
    (["bench-attention", "--pattern", "fixed", "--n", "256", "--stride", "64", "--summary", "100"],
     ["--summary 100", "--stride 64", "at most 64"]),
]


def check_options():
    for args, words in OPTION_CASES:
        refused(args, *words)
    # Values that begin with a dash, short options and '--' are not taken for misspelt options.
    # --version names the driver's commit and the library's version (it said "A subcommand is
    # required").
    r = run(["--version"])
    assert r.returncode == 0 and "sparse-repro " in r.stdout and "libsparse " in r.stdout, (
        r.stdout, r.stderr)
    # Nor is a name=value word that is the value of the option before it.
    for args in [["eval", "-h"],
                 ["train", "--summary-out", "steps=3", "-h"],
                 ["eval", "-h", "--", "-checkpoint"]]:
        r = run(args)
        assert r.returncode == 0 and "Usage:" in r.stdout, (args, r.stderr)
    # The internal field name is gone from the library's message about the count.
    err = refused(["train", *tiny("--num-sequences", "99999999999")], "--num-sequences")
    assert "count" not in err, err
    for args in [["train", *tiny("--data", "cifar10")], ["bench-attention", "--n", "100"],
                 ["train", *tiny("--data", "foo")], ["train", *tiny("--data", ":")],
                 ["bench-attention", "--pattern", "stried"]]:
        err = refused(args)
        assert "desc->" not in err and "patterns[0]" not in err and "_from_name" not in err, err
    # The stride bench-attention suggests for a short --n works.
    err = refused(["bench-attention", "--n", "100"])
    stride = err.split("e.g. --stride ")[1].split()[0]
    r = run(["bench-attention", "--n", "100", "--stride", stride, "--reps", "1", "--json"])
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["n"] == 100, r.stderr
    print(f"ok: {len(OPTION_CASES)} refusals name the option, the range and the value")


def check_files(tmp):
    # A folder as checkpoint: a clear refusal, not "out of memory".
    refused(["eval", "--checkpoint", tmp, "--data", "synthetic_text"], tmp, "folder")
    refused(["sample", "--checkpoint", tmp, "--out", os.path.join(tmp, "s.bin")], tmp, "folder")
    print("ok: a folder as checkpoint is refused as a folder")
    # A checkpoint that does not exist: one message naming --checkpoint (eval, sample) or
    # --resume and the path, without library function names or a missing-record warning.
    missing = os.path.join(tmp, "missing.safetensors")
    for args, words in [(["eval", "--checkpoint", missing], ["--checkpoint", "cannot open"]),
                        (["sample", "--checkpoint", missing, "--out", os.path.join(tmp, "s.txt")],
                         ["--checkpoint", "cannot open"]),
                        (["train", *tiny("--checkpoint", missing), "--resume"],
                         ["--resume", "does not exist", "without --resume"])]:
        err = refused(args, missing, *words)
        assert "sparse_" not in err and "no record" not in err and err.count("\n") == 1, err
    print("ok: a missing checkpoint is named once, with the option")
    # eval without --data from another folder than train's: the run record's relative data path
    # is named with both fixes, and running from train's folder works.
    sub = os.path.join(tmp, "run-folder")
    os.mkdir(sub)
    with open(os.path.join(sub, "text.txt"), "wb") as f:
        f.write(bytes(range(256)) * 16)
    r = run(["train", *tiny("--data", "text:text.txt", "--steps", "1"), "--checkpoint", "m.st"],
            cwd=sub)
    assert r.returncode == 0, r.stderr
    r = run(["eval", "--checkpoint", os.path.join(sub, "m.st")], cwd=tmp)
    assert r.returncode != 0 and "text:text.txt" in r.stderr and "run eval from that folder" in \
        r.stderr and "--data KIND:PATH" in r.stderr and "sparse_" not in r.stderr, r.stderr
    r = run(["eval", "--checkpoint", "m.st", "--sequences", "2"], cwd=sub)
    assert r.returncode == 0 and "test split of text:text.txt" in r.stdout, r.stderr
    resume = ["train", "--resume", "--extend-to", "2", "--quiet", "--checkpoint"]
    r = run([*resume, os.path.join(sub, "m.st")], cwd=tmp)
    assert r.returncode != 0 and "text:text.txt" in r.stderr and "resume from that folder" in \
        r.stderr and "sparse_" not in r.stderr, r.stderr
    r = run([*resume, "m.st"], cwd=sub)
    assert r.returncode == 0, r.stderr
    print("ok: eval and train --resume name the run record's relative data path elsewhere")
    # An output folder that names a file or a FIFO: refused naming --out, the path and what it is,
    # before any work (main measured the memory table first, and named no option).
    afile, fifo = os.path.join(tmp, "afile"), os.path.join(tmp, "fifo")
    open(afile, "w").close()
    os.mkfifo(fifo)
    for path, kind in [(afile, "a regular file"), (fifo, "a FIFO")]:
        for args in [["presets", "--only", "cifar10", "--steps", "1"], ["table1", "--quick"],
                     ["main", "--minutes", "0.01"]]:
            err = refused([*args, "--out", path], "--out", path, kind, "expected a folder",
                          timeout=20)
            assert "measuring" not in err and "preset on" not in err and "--log" not in err, err
    print("ok: an output folder that is a file or a FIFO is refused before any work")
    # A presets --batch its synthetic source cannot hold: the error names the preset and --batch.
    refused(["presets", "--only", "imagenet64", "--batch", "2147483647", "--steps", "1", "--out",
             ""], "imagenet64 preset", "--batch 2147483647", timeout=30)
    # A batch whose tokens alone exceed the memory limit: refused before allocating, naming
    # --batch, the sizes and the limit (it was the generic "out of memory" of a failed vector).
    for args in [["train", "--preset", "cifar10-small", "--data", "synthetic_image", "--steps", "1"],
                 ["bench-train", "--preset", "cifar10-small"]]:
        refused([*args, "--batch", "2147483647"], "--batch 2147483647: 2147483647 sequences of",
                "TiB", "memory limit", timeout=30)
    print("ok: a batch too large for the memory limit is refused naming --batch")


def text_file(tmp, size):
    # Varied printable bytes (a deterministic linear congruential stream).
    x, out = 12345, bytearray()
    for _ in range(size):
        x = (1103515245 * x + 12345) % 2 ** 31
        out.append(32 + (x >> 16) % 90)
    path = os.path.join(tmp, f"text{size}.txt")
    open(path, "wb").write(bytes(out))
    return path


def check_fixable(tmp):
    # 20,000 bytes: the test split (last 5%) is 1,000 bytes, shorter than the preset's 12,288.
    path = text_file(tmp, 20000)
    small = ["--stride", "16", "--summary", "4", "--block", "16", "--layers", "1", "--width", "32",
             "--heads", "1", "--batch", "1", "--eval-sequences", "1", "--threads", "1", "--quiet",
             "--steps", "1"]
    err = refused(["train", "--preset", "enwik8-small", "--data", "text:" + path, *small],
                  "--seq-len", "fits the test split", "1000 tokens")
    n = err.split("--seq-len ")[1].split()[0]
    assert int(n) <= 1000 and int(n) % 16 == 0, err
    r = run(["train", "--preset", "enwik8-small", "--data", "text:" + path, *small, "--seq-len", n])
    assert r.returncode == 0, f"the suggested --seq-len {n} does not work: {r.stderr}"
    # CIFAR-10 records (label + 3072 bytes) in one file: it has a train split only.
    cifar = os.path.join(tmp, "records.bin")
    open(cifar, "wb").write(b"".join(bytes([i % 10]) + bytes((i * 7 + j) % 256 for j in range(3072))
                                     for i in range(20)))
    c = ["train", "--preset", "cifar10-small", "--data", "cifar10:" + cifar, "--steps", "1",
         "--batch", "1", "--eval-sequences", "1", "--layers", "1", "--threads", "1", "--quiet"]
    refused(c, "--eval-split train")
    r = run(c + ["--eval-split", "train"], timeout=300)
    assert r.returncode == 0, r.stderr
    # One ImageNet 64x64 npz (numpy's format: a zip of data.npy, uint8 (2, 12288)) is the same.
    npz = os.path.join(tmp, "images.npz")
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 12288), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("data.npy", npy + bytes(i % 251 for i in range(2 * 12288)))
    c = ["train", "--preset", "imagenet64-small", "--data", "imagenet64:" + npz, "--steps", "1",
         "--batch", "1", "--eval-sequences", "1", "--layers", "1", "--width", "32", "--heads",
         "1", "--threads", "1", "--quiet"]
    refused(c, "--eval-split train")
    r = run(c + ["--eval-split", "train"], timeout=300)
    assert r.returncode == 0, r.stderr
    print(f"ok: fixable data errors name the option and a value that works (--seq-len {n})")


png_pixels = read_gray_png


# The one-line summaries of train, eval and sample, and their --json: (arguments, with {M} the
# text model (seq_len 64), {I} the 16 x 8 image model, {X} a text file, {T} the temporary
# folder; words the line must contain; fields the JSON must have). The line's figure must equal
# the JSON's, printed to 4 decimals.
OUTPUT_CASES = [
    (["eval", "--checkpoint", "{M}", "--sequences", "2", "--threads", "1"],
     ["bits/dim", "the test split of synthetic_text", "2 sequences of 64", "checkpoint {M}"],
     {"split": "test", "sequences": 2, "seq_len": 64, "data": "synthetic_text"}),
    (["eval", "--checkpoint", "{M}", "--data", "text:{X}", "--split", "valid", "--sequences", "3",
      "--threads", "1"],
     ["bits/dim", "the valid split of text:{X}", "3 sequences of 64", "checkpoint {M}"],
     {"split": "valid", "sequences": 3, "data": "text:{X}"}),
    (["eval", "--checkpoint", "{M}", "--data", "text:{X}", "--min-context", "48", "--bytes",
      "256", "--threads", "1"],
     ["bits/byte", "the test split of text:{X}", "256 bytes from byte 0",
      "windows of 64 with stride 16", "at least 48 bytes of context", "checkpoint {M}"],
     {"protocol": "sliding", "stride": 16, "bytes": 256, "windows": 13}),
    (["sample", "--checkpoint", "{M}", "--out", "{T}/s.txt", "--length", "16", "--threads", "1"],
     ["wrote {T}/s.txt", "raw bytes", "16 tokens", "temperature 1", "seed 1", "checkpoint {M}"],
     {"out": "{T}/s.txt", "tokens": 16, "format": "raw bytes"}),
    (["sample", "--checkpoint", "{M}", "--out", "{T}/s.wav", "--length", "32", "--seed", "5",
      "--threads", "1"],
     ["wrote {T}/s.wav", "wav, 12 kHz mono 16-bit", "32 tokens", "seed 5"],
     {"tokens": 32, "seed": 5}),
    (["sample", "--checkpoint", "{I}", "--out", "{T}/s.png", "--threads", "1"],
     ["wrote {T}/s.png", "png 16x8x1, each token 16x16 pixels", "128 tokens"],
     {"tokens": 128}),
]


def check_outputs(tmp):
    m = os.path.join(tmp, "m.safetensors")
    r = run(["train", *tiny("--steps", "2", "--checkpoint", m)])
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert len(line.splitlines()) == 1 and "bits/dim" in line and m in line, line
    assert "{" not in line, line
    s = json.loads(run(["train", *TINY, "--steps", "2", "--json"]).stdout)
    assert s["steps"] == 2 and s["checkpoint"] is None, s
    img = os.path.join(tmp, "img.safetensors")
    r = run(["train", "--preset", "cifar10-small", "--data", "synthetic_image", "--image-width",
             "16", "--image-height", "8", "--stride", "16", "--block", "16", "--steps", "1",
             "--quiet", "--eval-sequences", "1", "--layers", "1", "--checkpoint", img,
             "--threads", "1"])
    assert r.returncode == 0, r.stderr
    # A text model (seq_len 64) evaluated on images: the error names --data, both lengths and the
    # way out (it said only "the data's sequences have 1024 tokens").
    refused(["eval", "--checkpoint", m, "--data", "synthetic_image"], "--data synthetic_image",
            "1024 tokens", m, "seq_len 64", "without --data")
    names = {"{M}": m, "{I}": img, "{X}": text_file(tmp, 20000), "{T}": tmp}

    def fill(x):
        if isinstance(x, str):
            for k, v in names.items():
                x = x.replace(k, v)
        return x

    for args, words, fields in OUTPUT_CASES:
        args = [fill(a) for a in args]
        shown = " ".join(args)
        r = run(args)
        assert r.returncode == 0, f"{shown}: {r.stderr}"
        line = r.stdout.strip()
        assert len(line.splitlines()) == 1 and "{" not in line, f"{shown}: {r.stdout!r}"
        for w in words:
            assert fill(w) in line, f"{shown}: {fill(w)!r} not in {line!r}"
        j = run([*args, "--json"])
        assert j.returncode == 0, f"{shown} --json: {j.stderr}"
        result = json.loads(j.stdout)
        for k, v in fields.items():
            assert result[k] == fill(v), f"{shown} --json: {k} = {result[k]!r}, expected {v!r}"
        figure = result.get("bits_per_dim", result.get("bits_per_byte"))
        if figure is not None:
            assert f"{figure:.4f}" in line, f"{shown}: {figure:.4f} (the JSON's) not in {line!r}"
        if args[0] == "sample":
            assert os.path.getsize(result["out"]) > 0, result
    print(f"ok: {len(OUTPUT_CASES) + 1} one-line summaries (train, eval, sample) and their --json")

    # eval without --data: the checkpoint's data (its run record), equal to giving it.
    e = run(["eval", "--checkpoint", m, "--sequences", "2", "--threads", "1", "--json"])
    assert e.returncode == 0, e.stderr
    given = run(["eval", "--checkpoint", m, "--sequences", "2", "--threads", "1", "--data",
                 "synthetic_text", "--data-seq-len", "64", "--json"])
    assert json.loads(e.stdout) == json.loads(given.stdout), (e.stdout, given.stdout)
    os.remove(m + ".run.json")
    refused(["eval", "--checkpoint", m], "--data", "run record")
    # Sample PNG: 16 x 8 tokens, enlarged 16 times by default, or --scale K; each pixel is the
    # token at (y // K, x // K) of the raw sample with the same seed.
    raw = os.path.join(tmp, "s.bin")
    assert run(["sample", "--checkpoint", img, "--out", raw, "--seed", "3", "--threads",
                "1"]).returncode == 0
    tokens = open(raw, "rb").read()
    for scale, args in ((16, []), (3, ["--scale", "3"]), (1, ["--scale", "1"])):
        png = os.path.join(tmp, f"s{scale}.png")
        r = run(["sample", "--checkpoint", img, "--out", png, "--seed", "3", "--threads", "1",
                 *args])
        assert r.returncode == 0, r.stderr
        w, h, rows = png_pixels(png)
        assert (w, h) == (16 * scale, 8 * scale), (w, h, scale)
        for y in range(h):
            assert rows[y] == bytes(tokens[(y // scale) * 16 + x // scale] for x in range(w)), y
    print("ok: train's one-line summary and --json; eval takes the checkpoint's data; PNG scale")


def check_quick_main(tmp):
    real = os.path.join(tmp, "results")
    os.mkdir(real)
    record = json.dumps({"quick": False, "marker": 1})
    open(os.path.join(real, "main_job.json"), "w").write(record)
    refused(["main", "--quick", "--out", real], "--quick", real, "real run", "--out")
    assert os.listdir(real) == ["main_job.json"], os.listdir(real)
    assert open(os.path.join(real, "main_job.json")).read() == record
    print("ok: a quick main job refuses a folder holding a real run's results")


def check_sizes(tmp):
    # Sizes beyond what the checkpoint can use are refused or clamped before any allocation: an
    # eval --batch larger than the sequences evaluated gives the result of a batch of them (not
    # "out of memory"), and a sample --length beyond the model's seq_len names --length and the
    # limit, as does a PNG whose --length is not the model's image size.
    m = os.path.join(tmp, "sizes.safetensors")
    r = run(["train", *tiny("--steps", "1", "--checkpoint", m)])
    assert r.returncode == 0, r.stderr
    args = ["eval", "--checkpoint", m, "--sequences", "2", "--threads", "1", "--json"]
    want = json.loads(run([*args, "--batch", "2"]).stdout)
    r = run([*args, "--batch", str(2 ** 31 - 1)])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["bits_per_dim"] == want["bits_per_dim"] and got["sequences"] == 2, (got, want)
    out = os.path.join(tmp, "sizes.bin")
    for length in ["65", "100000", str(2 ** 63 - 1)]:
        refused(["sample", "--checkpoint", m, "--out", out, "--length", length],
                "--length " + length, "seq_len = 64")
    png = os.path.join(tmp, "sizes.png")
    refused(["sample", "--checkpoint", m, "--out", png, "--length", "8"], "--length 8", "64")
    assert not os.path.exists(out)
    print("ok: eval --batch beyond --sequences is clamped; sample --length beyond seq_len refused")


with tempfile.TemporaryDirectory() as tmp:
    check_options()
    check_files(tmp)
    check_fixable(tmp)
    check_outputs(tmp)
    check_quick_main(tmp)
    check_sizes(tmp)
print("ok: all")
