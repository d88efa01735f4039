#!/usr/bin/env python3
"""`sparse-repro train` / `sample` with hostile files and resumed runs, one table row per case.

Files: a FIFO as input or output never blocks and is never replaced; a device is refused and kept;
a symbolic link is kept and its target written; an output in a missing folder (or a read-only one,
when not root) or on a folder is refused before any training step; a failed write of the loss log
is an error; a second run given the checkpoint or log of a run in progress is refused, naming the
output and the first run's pid, and leaves that run's log whole, while a killed run's locks block
nothing; --checkpoint-every + kill -9 + --resume gives the uninterrupted run's log and checkpoint
byte for byte. Under a launcher's variables (rank r of 2), eval and sample run on rank 0 alone.
Resume: every run option that differs from the saved run is refused with the option, the saved and
the given value; --extend-to continues a finished run with the stated schedule, checked against the
closed-form warm-up + cosine."""
import json
import math
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

exe = sys.argv[1]
data_dir = os.environ.get("SPARSE_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..",
                                                          "shared", "data"))
enwik8 = os.path.join(data_dir, "enwik8", "enwik8-head-100000")
TINY = ["--preset", "enwik8-small", "--data", "synthetic_text", "--seq-len", "64", "--stride", "16",
        "--summary", "4", "--block", "16", "--layers", "1", "--width", "32", "--heads", "1", "--batch", "2",
        "--eval-sequences", "2", "--threads", "1", "--quiet", "--lr", "0.003", "--warmup", "3",
        "--json"]


def run(args, timeout=60, limit_file_size=None):
    def limits():
        if limit_file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limits)


FLAGS = {"--resume", "--quiet", "--json"}


def train_args(*extra):
    """The train command line: TINY with `extra` options replacing TINY's values of the same
    options."""
    def pairs(args):
        out, i = {}, 0
        while i < len(args):
            if args[i] in FLAGS:
                out[args[i]] = None
                i += 1
            else:
                out[args[i]] = args[i + 1]
                i += 2
        return out
    merged = {**pairs(TINY), **pairs(list(extra))}
    return [exe, "train", *[a for k, v in merged.items() for a in ([k] if v is None else [k, v])]]


def train(tmp, *extra, **kw):
    return run(train_args(*extra)[1:], **kw)


def refused(r, *words):
    assert r.returncode != 0, f"expected a refusal, got exit 0:\n{r.stdout[-400:]}"
    for w in words:
        assert w in r.stderr, f"{w!r} not in the error: {r.stderr!r}"


def log_records(path):
    return [json.loads(line) for line in open(path)]


def summary(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout[r.stdout.index("{"):])


# ---------------------------------------------------------------- kind: files
def fifo_data(tmp):
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    refused(train(tmp, "--data", "text:" + fifo, "--steps", "1", timeout=20), "FIFO", fifo)


def fifo_checkpoint_resume(tmp):
    fifo = os.path.join(tmp, "m")
    os.mkfifo(fifo)
    refused(train(tmp, "--checkpoint", fifo, "--resume", "--steps", "1", timeout=20), "FIFO")


def fifo_checkpoint_output(tmp):
    fifo, log = os.path.join(tmp, "m"), os.path.join(tmp, "log")
    os.mkfifo(fifo)
    refused(train(tmp, "--checkpoint", fifo, "--log", log, "--steps", "2", timeout=20),
            "--checkpoint", "FIFO")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced"
    assert not os.path.exists(log), "training ran before the output was checked"


def make_checkpoint(tmp, steps="2"):
    m = os.path.join(tmp, "m")
    summary(train(tmp, "--checkpoint", m, "--steps", steps))
    return m


def device_out(tmp):
    dev = os.path.join(tmp, "full")
    os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 7))  # the /dev/full device
    m = make_checkpoint(tmp)
    refused(run(["sample", "--checkpoint", m, "--out", dev, "--length", "8"]), "character device")
    assert stat.S_ISCHR(os.stat(dev).st_mode), "the device node was replaced"
    refused(train(tmp, "--checkpoint", dev, "--steps", "1"), "--checkpoint", "character device")


def symlink_out(tmp):
    m = make_checkpoint(tmp)
    target, link = os.path.join(tmp, "real.bin"), os.path.join(tmp, "link.bin")
    open(target, "wb").write(b"old")
    os.symlink("real.bin", link)  # relative, resolved against the link's folder
    r = run(["sample", "--checkpoint", m, "--out", link, "--length", "16"])
    assert r.returncode == 0, r.stderr
    assert os.path.islink(link), "the symbolic link was replaced"
    assert os.path.getsize(target) == 16, "the link's target was not written"
    # A checkpoint saved through a link: the link stays, the target loads.
    mlink = os.path.join(tmp, "mlink")
    os.symlink(m, mlink)
    summary(train(tmp, "--checkpoint", mlink, "--resume", "--steps", "2"))
    assert os.path.islink(mlink)


def bench_output_fifo(tmp):
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    refused(run(["bench-attention", "--pattern", "dense", "--n", "64", "--threads", "1",
                 "--output", fifo], timeout=30), "--output", "FIFO")


def missing_folder(tmp):
    log = os.path.join(tmp, "log")
    refused(train(tmp, "--checkpoint", os.path.join(tmp, "no", "m"), "--log", log,
                  "--steps", "3"), "--checkpoint", "does not exist")
    assert not os.path.exists(log), "training ran before the output was checked"


def summary_is_folder(tmp):
    log = os.path.join(tmp, "log")
    refused(train(tmp, "--summary-out", tmp, "--log", log, "--steps", "3"), "--summary-out",
            "folder")
    assert not os.path.exists(log), "training ran before the output was checked"


def read_only_folder(tmp):
    if os.geteuid() == 0:
        print("  (skipped: root writes in read-only folders)")
        return
    ro = os.path.join(tmp, "ro")
    os.mkdir(ro, 0o555)
    refused(train(tmp, "--checkpoint", os.path.join(ro, "m"), "--steps", "2"), "--checkpoint",
            "cannot write")


def log_write_fails(tmp):
    log = os.path.join(tmp, "log")
    r = train(tmp, "--log", log, "--steps", "20", limit_file_size=300)
    refused(r, "--log", log)


def second_run_refused(tmp):
    # While a run writes its checkpoint and log, a second run given either of them (or resuming
    # the checkpoint) is refused before any work, naming the output and the first run's pid; the
    # first run's log stays whole (every line a record, steps 1, 2, ... in order). The first run is
    # then killed with SIGKILL: the kernel drops its locks, and a new run given the same outputs
    # trains (a crashed run leaves no lock behind).
    m, log, out = (os.path.join(tmp, name) for name in ("m", "m.log", "s.json"))
    first = subprocess.Popen(train_args("--checkpoint", m, "--log", log, "--summary-out", out,
                                        "--steps", "1000000", "--eval-every", "20"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            if os.path.exists(m) and os.path.exists(log) and len(open(log).readlines()) >= 30:
                break
            time.sleep(0.01)
        assert first.poll() is None, f"the first run ended: {first.stderr.read()}"
        before = len(log_records(log))
        m2, log2 = os.path.join(tmp, "m2"), os.path.join(tmp, "m2.log")
        for extra, option in [(["--checkpoint", m, "--log", log, "--summary-out", out], "--log"),
                              (["--checkpoint", m2, "--log", log], "--log"),
                              (["--checkpoint", m, "--log", log2], "--checkpoint"),
                              (["--checkpoint", m, "--resume"], "--checkpoint")]:
            r = train(tmp, *extra, "--steps", "5")
            assert first.poll() is None, "the first run ended before the second was refused"
            refused(r, option, "another run (pid %d) is writing it" % first.pid)
        assert not [f for f in os.listdir(tmp) if f.startswith("m2")], os.listdir(tmp)
    finally:
        first.kill()
        first.wait()
    records = log_records(log)  # every line a whole record
    steps = [x["step"] for x in records if "loss" in x]
    assert len(records) >= before and steps == list(range(1, len(steps) + 1)), steps[:50]
    assert os.path.exists(m + ".lock"), "the checkpoint's lock file is missing"
    r = summary(train(tmp, "--checkpoint", m, "--log", log, "--summary-out", out, "--steps", "3"))
    assert r["steps"] == 3 and [x["step"] for x in log_records(log)] == [1, 2, 3], r
    assert not [f for f in os.listdir(tmp) if "tmp" in f], "temporary files left behind"


def one_process_commands(tmp):
    # Under a launcher with 2 ranks (its variables set here by hand), eval and sample run on rank 0
    # alone: rank 1 exits 0 at once with no output and writes no file; rank 0 prints one JSON
    # document and one note on stderr, and writes the sample.
    m = make_checkpoint(tmp)
    plain = {k: v for k, v in os.environ.items()
             if not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_", "SLURM_"))}
    for rank_vars in ({"OMPI_COMM_WORLD_RANK": "%d", "OMPI_COMM_WORLD_SIZE": "2"},
                      {"SLURM_PROCID": "%d", "SLURM_NTASKS": "2"}):
        for rank in (1, 0):
            env = dict(plain, **{k: v.replace("%d", str(rank)) for k, v in rank_vars.items()})
            out = os.path.join(tmp, "sample%d.bin" % rank)
            for cmd in (["eval", "--checkpoint", m, "--sequences", "2", "--threads", "1", "--json"],
                        ["sample", "--checkpoint", m, "--out", out, "--length", "8", "--json"]):
                r = subprocess.run([exe, *cmd], capture_output=True, text=True, timeout=60,
                                   env=env)
                assert r.returncode == 0, (rank, cmd[0], r.stderr)
                if rank == 1:
                    assert r.stdout == "" and r.stderr == "", (cmd[0], r.stdout, r.stderr)
                    continue
                result = json.loads(r.stdout)  # one document
                assert r.stderr.count("runs in one process") == 1, r.stderr
                assert ("bits_per_dim" if cmd[0] == "eval" else "tokens") in result, result
            assert os.path.exists(out) == (rank == 0), (rank, rank_vars)


def kill_and_resume(tmp):
    steps = "150"
    big = ["--seq-len", "128", "--width", "64", "--layers", "2", "--steps", steps]
    ref_m, ref_log = os.path.join(tmp, "ref"), os.path.join(tmp, "ref.log")
    ref_summary = summary(train(tmp, *big, "--checkpoint", ref_m, "--log", ref_log, timeout=300))
    m, log = os.path.join(tmp, "m"), os.path.join(tmp, "m.log")
    p = subprocess.Popen(train_args(*big, "--checkpoint", m, "--log", log,
                                    "--checkpoint-every", "7"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(m) and os.path.exists(log) and len(open(log).readlines()) >= 24:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    r = run(["train", "--checkpoint", m, "--log", log, "--resume", "--quiet", "--json"], timeout=300)
    assert "resuming" in r.stderr and summary(r)["resumed_from_step"] % 7 == 0, r.stderr
    # The run's settings (threads, evaluation) come back from its record too, so the final
    # evaluation is the uninterrupted run's.
    for key in ("eval_bits_per_dim", "eval_sequences"):
        assert summary(r)[key] == ref_summary[key], (key, summary(r)[key], ref_summary[key])
    strip = lambda recs: [{k: v for k, v in x.items() if k != "seconds"} for x in recs]
    assert strip(log_records(log)) == strip(log_records(ref_log)), "the resumed log differs"
    assert open(m, "rb").read() == open(ref_m, "rb").read(), "the resumed checkpoint differs"


def stop_signal_and_resume(tmp):
    # SIGTERM (a scheduler's preemption) stops the run at the end of a step, saves the checkpoint
    # there (no --checkpoint-every) and exits 143; the resumed run ends where an uninterrupted one
    # does, bit for bit. SIGINT without --checkpoint exits 130, saying nothing was saved.
    big = ["--seq-len", "128", "--width", "64", "--layers", "2", "--steps", "150"]
    ref_m, ref_log = os.path.join(tmp, "ref"), os.path.join(tmp, "ref.log")
    summary(train(tmp, *big, "--checkpoint", ref_m, "--log", ref_log, timeout=300))
    m, log = os.path.join(tmp, "m"), os.path.join(tmp, "m.log")
    p = subprocess.Popen(train_args(*big, "--checkpoint", m, "--log", log),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(log) and len(open(log).readlines()) >= 10:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err)
    lines = len(log_records(log))
    assert f"stopped by SIGTERM after step {lines} of 150" in err and "--resume" in err, err
    assert out == "", out  # no summary: the run is not finished
    assert json.load(open(m + ".run.json"))["step"] == lines
    r = run(["train", "--checkpoint", m, "--log", log, "--resume", "--quiet", "--json"], timeout=300)
    assert summary(r)["resumed_from_step"] == lines, r.stderr
    strip = lambda recs: [{k: v for k, v in x.items() if k != "seconds"} for x in recs]
    assert strip(log_records(log)) == strip(log_records(ref_log)), "the resumed log differs"
    assert open(m, "rb").read() == open(ref_m, "rb").read(), "the resumed checkpoint differs"
    log2 = os.path.join(tmp, "n.log")
    p = subprocess.Popen(train_args(*big, "--log", log2), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    while time.time() < deadline + 120 and p.poll() is None:
        if os.path.exists(log2) and len(open(log2).readlines()) >= 2:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT and "stopped by SIGINT" in err, (p.returncode, err)
    assert "nothing was saved (no --checkpoint)" in err, err


# ---------------------------------------------------------------- kind: resume
def shorter_seq_len(tmp):
    if not os.path.exists(enwik8):
        print("  (skipped: no enwik8 sample)")
        return
    m = os.path.join(tmp, "m")
    base = ["train", "--preset", "enwik8-small", "--data", "text:" + enwik8, "--threads", "1",
            "--eval-sequences", "4", "--quiet", "--checkpoint", m]
    assert run(base + ["--seq-len", "256", "--steps", "2"], timeout=300).returncode == 0
    refused(run(base + ["--resume", "--seq-len", "128", "--steps", "3"], timeout=300),
            "--seq-len", "256", "128")


def lr_of(cfg_lr, warmup, total, step):
    if step < warmup:
        return cfg_lr * (step + 1) / warmup
    return cfg_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def extend_finished_run(tmp):
    m, log = os.path.join(tmp, "m"), os.path.join(tmp, "log")
    summary(train(tmp, "--checkpoint", m, "--log", log, "--steps", "30"))
    refused(train(tmp, "--checkpoint", m, "--resume", "--steps", "60"), "--steps", "30", "60",
            "--extend-to")
    out = os.path.join(tmp, "summary.json")
    finished = train(tmp, "--checkpoint", m, "--log", log, "--resume", "--summary-out", out)
    assert summary(finished)["steps_this_run"] == 0 and "finished" in finished.stderr
    # Nothing was trained: no figures of training (null, not zeros), and a note saying so, in the
    # printed summary, the --summary-out file and the one-line summary.
    for s in (summary(finished), json.load(open(out))):
        for key in ("train_seconds", "seconds_per_step", "peak_activation_bytes",
                    "final_train_loss"):
            assert s[key] is None, (key, s[key])
        assert "nothing trained" in s["note"], s
    line = run([a for a in train_args("--checkpoint", m, "--resume")[1:] if a != "--json"])
    assert line.returncode == 0 and "nothing trained" in line.stdout and " 0.0 s" not in line.stdout, \
        line.stdout
    s = summary(train(tmp, "--checkpoint", m, "--log", log, "--resume", "--extend-to", "60"))
    assert (s["steps"], s["steps_this_run"], s["resumed_from_step"]) == (60, 30, 30), s
    # Seconds per step of the steps this run trained.
    assert abs(s["seconds_per_step"] - s["train_seconds"] / 30) <= 1e-9 * s["train_seconds"], s
    recs = [x for x in log_records(log) if "lr" in x]
    assert [x["step"] for x in recs] == list(range(1, 61))
    # The extended steps use the learning rate of a 60-step run at the same step (closed form and
    # an uninterrupted 60-step run): no second warm-up from 0.
    ref_log = os.path.join(tmp, "ref.log")
    summary(train(tmp, "--log", ref_log, "--steps", "60"))
    ref = [x["lr"] for x in log_records(ref_log) if "lr" in x]
    for x in recs[30:]:
        want = lr_of(0.003, 3, 60, x["step"] - 1)
        assert want > 0 and abs(x["lr"] - want) <= 1e-6 * 0.003, (x, want)
        assert x["lr"] == ref[x["step"] - 1], (x, ref[x["step"] - 1])
    # --help says the same (it once promised a rise from 0).
    help_text = " ".join(run(["train", "--help"]).stdout.split())
    assert "no second warm-up" in help_text and "rises from 0" not in help_text, help_text


def option_conflicts(tmp):
    m = make_checkpoint(tmp, steps="4")
    conflicts = [("--batch", "3", "2"), ("--lr", "0.001", "0.003"), ("--dropout", "0.2", "has "),
                 ("--data", "synthetic_image", "synthetic_text"), ("--width", "64", "32"),
                 ("--optimizer", "adamw", "adam"), ("--data-seed", "7", str(0x5eed)),
                 ("--warmup", "5", "3"), ("--seed", "9", "1")]
    for option, given, saved in conflicts:
        r = run(["train", "--checkpoint", m, "--resume", "--quiet", option, given])
        refused(r, option, saved, given)
        assert "has -1" not in r.stderr and "has 0," not in r.stderr, r.stderr  # no placeholder
    # Options equal to the saved ones are accepted (the run is finished: nothing to train).
    s = summary(train(tmp, "--checkpoint", m, "--resume", "--steps", "4"))
    assert (s["steps"], s["resumed_from_step"], s["steps_this_run"]) == (4, 4, 0), s


def resume_effective_values(tmp):
    # Options the saved run left to the preset or the default, given on resume with the values
    # in effect, are no conflict; a real conflict names the value in effect, not a placeholder.
    m = os.path.join(tmp, "m")
    at = TINY.index("--layers")
    base = [exe, "train", *TINY[:at], *TINY[at + 2:]]  # the preset's layer count
    s = summary(subprocess.run(base + ["--checkpoint", m, "--steps", "2"], capture_output=True,
                               text=True, timeout=120))
    layers = s["layers"]
    # The defaults the public headers document: weight decay 0.01, synthetic text of 1024
    # sequences over 256 symbols with copies at distance 256; micro-batch = the whole --batch 2.
    same = ["--layers", str(layers), "--weight-decay", "0.01", "--micro-batch", "2", "--vocab",
            "256", "--num-sequences", "1024", "--copy-offset", "256", "--data-seq-len", "64"]
    r = run(["train", "--checkpoint", m, "--resume", "--quiet", "--json", *same])
    assert r.returncode == 0, r.stderr
    assert (summary(r)["steps"], summary(r)["steps_this_run"]) == (2, 0), summary(r)
    for option, given, saved in [("--layers", str(layers + 1), str(layers)),
                                 ("--vocab", "16", "256"), ("--micro-batch", "1", "2")]:
        refused(run(["train", "--checkpoint", m, "--resume", "--quiet", option, given]), option,
                "has " + saved, "given " + given)


def resume_keeps_dtype(tmp):
    # The precision is part of the run: the record keeps --dtype, and a resume without it takes
    # the saved one (a 16-bit run does not continue in fp32 behind the user's back). On this CPU
    # a saved fp16 run cannot continue, so the resume must stop naming --dtype fp16.
    m = make_checkpoint(tmp)
    record_path = m + ".run.json"
    record = json.load(open(record_path))
    assert record["options"].get("dtype") == "fp32", record["options"]
    record["options"]["dtype"] = "fp16"
    with open(record_path, "w") as f:
        json.dump(record, f)
    refused(run(["train", "--checkpoint", m, "--resume", "--quiet", "--extend-to", "8"]),
            "--dtype fp16")


def record_from_another_save(tmp):
    # The run record is written before the checkpoint and names the step of the checkpoint it was
    # written with and of the one it replaces: a run stopped between the two renames (the record
    # one save ahead) resumes from the checkpoint on disk; a record and a checkpoint from two runs
    # are refused, not continued as one run with the other's options.
    m = make_checkpoint(tmp, steps="3")
    record_path = m + ".run.json"
    record = json.load(open(record_path))
    assert record["step"] == 3 and "previous_step" not in record, record
    shutil.copy(m, m + ".at3")
    summary(run(["train", "--checkpoint", m, "--resume", "--quiet", "--json", "--extend-to", "4"]))
    record = json.load(open(record_path))
    assert record["step"] == 4 and record["previous_step"] == 3, record
    # Stopped after the record's rename, before the checkpoint's: the step-3 checkpoint stands.
    shutil.copy(m + ".at3", m)
    r = summary(run(["train", "--checkpoint", m, "--resume", "--quiet", "--json",
                     "--extend-to", "5"]))
    assert r["resumed_from_step"] == 3, r
    record = json.load(open(record_path))
    assert record["step"] == 5 and record["previous_step"] == 3, record
    record["step"], record["previous_step"] = 1, 2
    with open(record_path, "w") as f:
        json.dump(record, f)
    refused(run(["train", "--checkpoint", m, "--resume", "--quiet", "--extend-to", "6"]),
            "written with the checkpoint of step 1 (replacing that of step 2)", "holds step 5",
            "different runs")
    # A damaged step names the record, not only the JSON library's words.
    for key in ("step", "previous_step"):
        record[key] = "4"
        with open(record_path, "w") as f:
            json.dump(record, f)
        refused(run(["train", "--checkpoint", m, "--resume", "--quiet", "--extend-to", "6"]),
                "cannot read the run record " + record_path, f'"{key}" is "4", not a whole number')
        record[key] = 4


def relabel_checkpoint_dtype(src, dst, dtype):
    """Writes to `dst` the checkpoint `src` with its trainer configuration saying the run computed
    its matrix products in `dtype` (sparse_dtype value: 1 fp16, 2 bf16), as a run on a GPU saves
    it, and the header checksum recomputed (FNV-1a 64 over the 8 length bytes and the header with
    its own 16 digits read as '0')."""
    blob = open(src, "rb").read()
    n = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + n].decode()
    assert header.count(";dtype=0;") == 1, header[:400]
    header = header.replace(";dtype=0;", f";dtype={dtype};")
    key = '"header_checksum":"'
    digits = header.index(key) + len(key)
    header = header[:digits] + "0" * 16 + header[digits + 16:]
    h = 0xcbf29ce484222325
    for byte in blob[:8] + header.encode():
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    header = header[:digits] + f"{h:016x}" + header[digits + 16:]
    with open(dst, "wb") as f:
        f.write(blob[:8] + header.encode() + blob[8 + n:])


def eval_16bit_checkpoint_on_cpu(tmp):
    # A checkpoint of a bf16 or fp16 run evaluates and samples on the CPU in fp32 (its parameters
    # are fp32 whatever the run's precision): the same bits per dim and the same sample as the same
    # weights saved by an fp32 run, and the JSON says which precision computed them.
    m = make_checkpoint(tmp)
    data = ["--data", "synthetic_text"]
    out = os.path.join(tmp, "s.bin")

    def evaluate(path, *extra):
        return run(["eval", "--checkpoint", path, *data, "--sequences", "2", "--threads", "1",
                    "--json", *extra])

    def sample(path):
        r = summary(run(["sample", "--checkpoint", path, "--out", out, "--length", "8",
                         "--threads", "1", "--json"]))
        return r, open(out, "rb").read()

    want = summary(evaluate(m))
    assert want["dtype"] == "fp32", want
    want_sample = sample(m)[1]
    for dtype, name in [(2, "bf16"), (1, "fp16")]:
        relabelled = os.path.join(tmp, name)
        relabel_checkpoint_dtype(m, relabelled, dtype)
        got = summary(evaluate(relabelled))
        assert got["dtype"] == "fp32", got
        assert got["bits_per_dim"] == want["bits_per_dim"], (name, got, want)
        got_sample, tokens = sample(relabelled)
        assert got_sample["dtype"] == "fp32", got_sample
        assert tokens == want_sample, name
        # 16-bit products on the CPU stay refused, naming the option and the fix.
        refused(evaluate(relabelled, "--dtype", name), "--dtype " + name, "--backend cuda")


def resume_with_foreign_log(tmp):
    # A --log that is not a loss log (here a user's notes) is refused on resume, not cut to nothing.
    m = make_checkpoint(tmp)
    notes = os.path.join(tmp, "notes.txt")
    text = "".join(f"{i}\n" for i in range(1, 1001))
    with open(notes, "w") as f:
        f.write(text)
    refused(run(["train", "--checkpoint", m, "--log", notes, "--resume", "--quiet"]), "--log",
            "line 1", "not a step record")
    assert open(notes).read() == text, "the file given as --log was changed"


def eval_checkpoint_is_input(tmp):
    # eval without --data reads the checkpoint's run record: the checkpoint is an input, so a
    # missing one, a folder or a FIFO is named as the checkpoint it is (not as a missing run record
    # or an output), and a checkpoint in a read-only folder evaluates.
    missing = os.path.join(tmp, "missing")
    r = run(["eval", "--checkpoint", missing, "--threads", "1"])
    refused(r, "checkpoint", missing, "No such file")
    assert "run record" not in r.stderr, r.stderr
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    for path, kind in [(tmp, "folder"), (fifo, "FIFO")]:
        r = run(["eval", "--checkpoint", path, "--threads", "1"], timeout=20)
        refused(r, "checkpoint", path, kind, "expected a regular file")
        assert "outputs" not in r.stderr, r.stderr
    if os.geteuid() == 0:
        print("  (read-only folder skipped: root writes in read-only folders)")
        return
    m = make_checkpoint(tmp)
    ro = os.path.join(tmp, "ro")
    os.mkdir(ro)
    for name in ["m", "m.run.json"]:
        with open(os.path.join(tmp, name), "rb") as src, open(os.path.join(ro, name), "wb") as dst:
            dst.write(src.read())
    os.chmod(ro, 0o555)
    args = ["--sequences", "2", "--threads", "1", "--json"]
    got = summary(run(["eval", "--checkpoint", os.path.join(ro, "m"), *args]))
    want = summary(run(["eval", "--checkpoint", m, "--data", "synthetic_text", *args]))
    assert got["bits_per_dim"] == want["bits_per_dim"], (got, want)


CASES = [fifo_data, fifo_checkpoint_resume, fifo_checkpoint_output, device_out, symlink_out,
         bench_output_fifo, missing_folder, summary_is_folder, read_only_folder, log_write_fails,
         second_run_refused, one_process_commands, kill_and_resume, stop_signal_and_resume,
         shorter_seq_len,
         extend_finished_run, option_conflicts, resume_effective_values, resume_keeps_dtype,
         record_from_another_save, resume_with_foreign_log,
         eval_16bit_checkpoint_on_cpu, eval_checkpoint_is_input]

failed = []
for case in CASES:
    print(case.__name__, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            case(tmp)
        except (AssertionError, subprocess.TimeoutExpired) as e:
            print(f"  FAILED: {type(e).__name__}: {e}", flush=True)
            failed.append(case.__name__)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
print("all cases passed")
