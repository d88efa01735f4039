#!/usr/bin/env python3
"""Data-parallel `sparse-repro train` under mpirun (CPU ranks over OpenMPI).

- 2 ranks x --batch 2 against 1 process x --batch 4 --micro-batch 2: the same per-step loss, bits
  per dim and gradient norm, the same evaluation, and the same parameters and Adam moments, bit for
  bit (the reducer adds the ranks' gradients in rank order, as one process adds its micro-batches;
  the reference is the single-process trainer, which never calls MPI). The 2 ranks sum the
  gradient during the backward pass (--reduce-overlap on, the default); a third run with
  --reduce-overlap off (one sum after the backward pass) must equal them bit for bit too.
- a 2-rank run killed after a checkpoint and resumed under 2 ranks equals the uninterrupted run
  (log and checkpoint byte for byte); resuming on 1 rank keeps the global batch (--batch 4 given
  is accepted, --batch 3 refused naming 4), on 3 is refused.
- a rank killed with SIGKILL: mpirun ends the job non-zero within 30 s, naming rank 1; a rank
  stopped (SIGSTOP, alive but silent): rank 0's reduction times out after --rank-timeout 3 and the
  job ends non-zero, the message naming rank 1.
- ranks launched with different options (an MPMD launch, `-np 1 ... : -np 1 ...`): a different
  --seed (which would silently train different models) or --eval-every (whose reductions would
  run out of step and crash MPI) ends the job non-zero, naming the option and both values.
- eval and sample under mpirun -np 2: rank 0 alone runs them (one JSON document, one file).
- launcher variables without a launcher (SLURM_PROCID=1 SLURM_NTASKS=2 on a plain process): the
  process MPI starts alone is refused, naming the variables, unless they call it rank 0.
- a checkpoint without its run record resumed under 2 ranks with the original command line equals
  the resume with the record (the given --batch stands per rank).
- the whole job stopped longer than --rank-timeout and continued: no rank times out.
- rank 1 stopped at the end of the run: rank 0 prints its result and does not wait for ever.
- MPMD: a different --reduce-overlap is refused (it used to corrupt the heap); a rank failing at
  set-up (SPARSE_REDUCER=nccl on one rank) ends the job with its reason; ranks in different
  folders need the --log/--summary-out folder on rank 0 only, and different files behind one
  --data are refused.
Exit 77 (skip) when mpirun is missing or sparse-repro was built without MPI."""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

exe = sys.argv[1]
mpirun = shutil.which("mpirun")
if mpirun is None:
    print("SKIP: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)")
    sys.exit(77)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1", OMPI_MCA_rmaps_base_oversubscribe="1")
# Under AddressSanitizer: OpenMPI's plugins leave their strdup'ed strings behind at
# MPI_Finalize and are unloaded before LeakSanitizer reports, so no suppression can name them.
# Leak checking is off for the MPI processes only; every other AddressSanitizer check stays on.
env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS", ""), "detect_leaks=0"]))
TINY = ["--preset", "cifar10-small", "--data", "synthetic_image", "--image-width", "16",
        "--image-height", "8", "--layers", "2", "--width", "32", "--heads", "2", "--stride", "16",
        "--summary", "2", "--block", "16", "--dropout", "0.1", "--warmup", "2",
        "--eval-sequences", "10", "--threads", "1", "--quiet", "--lr", "0.003"]


def options(args, base):
    """base with the options in args replaced or added (each option takes one value or none)."""
    out = list(base)
    i = 0
    while i < len(args):
        name = args[i]
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if name in out:
            j = out.index(name)
            if has_value:
                out[j + 1] = args[i + 1]
        else:
            out += [name] + ([args[i + 1]] if has_value else [])
        i += 2 if has_value else 1
    return out


def train(ranks, args, timeout=300):
    cmd = ([exe] if ranks == 0 else [mpirun, "--oversubscribe", "-np", str(ranks), exe])
    return subprocess.run(cmd + ["train", "--json", *options(args, TINY)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def log_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def tensors(path):
    """name -> raw bytes of each tensor of a safetensors checkpoint."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    return {k: body[v["data_offsets"][0]:v["data_offsets"][1]]
            for k, v in header.items() if k != "__metadata__"}


def close(a, b, what):
    """Evaluations: one process averages each batch of 4 sequences, the ranks their 2 each and the
    sums are added over the ranks, so the double results may differ in the last bits (bound:
    1e-12 relative, far above double rounding of a sum of a few hundred terms)."""
    if a is None or b is None:
        assert a is None and b is None, f"{what}: {a} vs {b}"
        return
    assert abs(a - b) <= 1e-12 * abs(a), f"{what}: 1 process {a!r}, 2 ranks {b!r}"


def same_as_one_process(tmp):
    one = os.path.join(tmp, "one")
    two = os.path.join(tmp, "two")
    common = ["--steps", "8", "--eval-every", "4"]
    ok(train(0, common + ["--batch", "4", "--micro-batch", "2", "--log", one + ".jsonl",
                          "--checkpoint", one + ".ckpt", "--summary-out", one + ".json"]))
    r = ok(train(2, common + ["--batch", "2", "--log", two + ".jsonl",
                              "--checkpoint", two + ".ckpt", "--summary-out", two + ".json"]))
    assert r.stdout.count('"world_size"') == 1, "the summary must come from rank 0 only"
    after = os.path.join(tmp, "after")
    ok(train(2, common + ["--batch", "2", "--reduce-overlap", "off", "--log", after + ".jsonl",
                          "--checkpoint", after + ".ckpt", "--summary-out", after + ".json"]))
    a, b, c = log_records(one + ".jsonl"), log_records(two + ".jsonl"), log_records(after + ".jsonl")
    assert len(a) == len(b) == len(c) == 9, (len(a), len(b), len(c))  # 8 steps, eval at step 4
    for x, y, z in zip(a, b, c):
        for key in ("step", "loss", "bits_per_dim", "grad_norm", "lr"):
            assert x.get(key) == y.get(key), f"{key}: 1 process {x.get(key)}, 2 ranks {y.get(key)}"
            assert z.get(key) == y.get(key), f"{key}: overlap off {z.get(key)}, on {y.get(key)}"
        close(x.get("eval_bits_per_dim"), y.get("eval_bits_per_dim"), "eval_bits_per_dim")
        assert z.get("eval_bits_per_dim") == y.get("eval_bits_per_dim"), (z, y)
    ta, tb, tc = tensors(one + ".ckpt"), tensors(two + ".ckpt"), tensors(after + ".ckpt")
    assert ta.keys() == tb.keys() == tc.keys() and len(ta) > 0
    differing = [k for k in ta if ta[k] != tb[k]]
    assert not differing, f"tensors differ: {differing[:5]}"
    differing = [k for k in tb if tb[k] != tc[k]]
    assert not differing, f"tensors differ between overlap on and off: {differing[:5]}"
    sa, sb, sc = (json.load(open(p + ".json")) for p in (one, two, after))
    assert (sa["world_size"], sb["world_size"]) == (1, 2), (sa["world_size"], sb["world_size"])
    for key in ("global_batch", "tokens_seen"):
        assert sa[key] == sb[key], f"{key}: 1 process {sa[key]}, 2 ranks {sb[key]}"
    close(sa["eval_bits_per_dim"], sb["eval_bits_per_dim"], "final eval_bits_per_dim")
    assert sb["gradient_reducer"] == "mpi"
    overlap = (sa["reduce_overlap"], sb["reduce_overlap"], sc["reduce_overlap"])
    assert overlap == ("off", "on", "off"), overlap  # no reducer in the single process
    return ("2 ranks x 2 == 1 x 4 (micro 2), overlap on == off: 8 steps, losses, grad norms, "
            "evals, parameters, Adam bit for bit")


def rank_pid(marker, rank, timeout=60):
    """The pid of the sparse-repro rank `rank` whose command line contains `marker`."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if (cmd and cmd[0].endswith(b"sparse-repro") and marker.encode() in cmd and
                    f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ):
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} process found")


def wait_lines(path, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError("the run ended early: " + proc.stderr.read()[-2000:])
        if os.path.exists(path) and sum(1 for _ in open(path)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


def start(ranks, args):
    cmd = [mpirun, "--oversubscribe", "-np", str(ranks), exe, "train", "--json", *options(args, TINY)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


SLOW = ["--image-width", "32", "--image-height", "16", "--width", "64"]


def resume_two_ranks(tmp):
    ref = os.path.join(tmp, "ref")
    cut = os.path.join(tmp, "cut")
    args = SLOW + ["--steps", "120", "--batch", "2", "--checkpoint-every", "10"]
    ok(train(2, args + ["--checkpoint", ref + ".ckpt", "--log", ref + ".jsonl"]))
    p = start(2, args + ["--checkpoint", cut + ".ckpt", "--log", cut + ".jsonl"])
    wait_lines(cut + ".jsonl", 25, p)
    # mpirun passes SIGTERM on: the ranks agree to stop after one step and save it there, unless
    # mpirun ends them first (then the last --checkpoint-every save stands).
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    interrupted = len(log_records(cut + ".jsonl"))
    r = ok(train(2, SLOW + ["--checkpoint", cut + ".ckpt", "--log", cut + ".jsonl", "--resume"]))
    assert "resuming" in r.stderr, r.stderr
    resumed_from = json.loads(r.stdout)["resumed_from_step"]
    assert resumed_from < 120 and (resumed_from == interrupted or resumed_from % 10 == 0), \
        (resumed_from, interrupted)
    strip = lambda recs: [{k: v for k, v in x.items() if k != "seconds"} for x in recs]
    assert strip(log_records(cut + ".jsonl")) == strip(log_records(ref + ".jsonl"))
    assert open(cut + ".ckpt", "rb").read() == open(ref + ".ckpt", "rb").read()
    # Another world size: 1 rank keeps the global batch of 4, 3 ranks cannot share it.
    shutil.copy(ref + ".ckpt", cut + ".ckpt")
    shutil.copy(ref + ".ckpt.run.json", cut + ".ckpt.run.json")
    r = train(3, SLOW + ["--checkpoint", cut + ".ckpt", "--resume", "--extend-to", "121"])
    assert r.returncode != 0 and "3 ranks cannot share" in r.stderr, r.stderr[-2000:]
    # On 1 rank the run's --batch is 4: given, it is accepted; another value is refused naming 4.
    r = train(0, SLOW + ["--checkpoint", cut + ".ckpt", "--resume", "--extend-to", "121",
                         "--batch", "3"])
    assert r.returncode != 0 and "kept with --batch 4; given 3" in r.stderr, r.stderr[-2000:]
    r = ok(train(0, SLOW + ["--checkpoint", cut + ".ckpt", "--resume", "--extend-to", "121",
                            "--batch", "4"]))
    s = json.loads(r.stdout)
    assert (s["batch"], s["world_size"], s["global_batch"]) == (4, 1, 4), s
    # A checkpoint without its run record: the number of ranks it was trained on is unknown, so
    # the given --batch stands per rank (it was taken as a 1-rank run's and halved). With the
    # original command line, the run continues exactly as with the record.
    shutil.copy(ref + ".ckpt", cut + ".ckpt")
    shutil.copy(ref + ".ckpt.run.json", cut + ".ckpt.run.json")
    ok(train(2, SLOW + ["--checkpoint", cut + ".ckpt", "--resume", "--extend-to", "121"]))
    norec = os.path.join(tmp, "norec")
    shutil.copy(ref + ".ckpt", norec + ".ckpt")
    r = ok(train(2, args + ["--checkpoint", norec + ".ckpt", "--resume", "--extend-to", "121"]))
    s = json.loads(r.stdout)
    assert "no record" in r.stderr and (s["batch"], s["global_batch"]) == (2, 4), (s, r.stderr)
    with_record, without = tensors(cut + ".ckpt"), tensors(norec + ".ckpt")
    differing = [k for k in with_record if with_record[k] != without.get(k)]
    assert not differing, f"resumed without the record: tensors differ: {differing[:5]}"
    return (f"killed at step {interrupted}, resumed from {resumed_from} under 2 ranks: log and "
            "checkpoint equal the uninterrupted run; 1 rank keeps the global batch 4, 3 refused; "
            "without the run record the given --batch stands (same parameters as with it)")


def dead_rank(tmp, how):
    log = os.path.join(tmp, f"dead_{how}.jsonl")
    p = start(2, ["--steps", "100000", "--batch", "2", "--log", log, "--rank-timeout", "3"])
    try:
        wait_lines(log, 3, p)
        pid = rank_pid(log, 1)
        t0 = time.time()
        os.kill(pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        _, err = p.communicate(timeout=60)
        elapsed = time.time() - t0
    finally:
        if p.poll() is None:
            p.kill()
        try:
            os.kill(pid, signal.SIGKILL)
        except (OSError, UnboundLocalError):
            pass
    assert p.returncode != 0, "mpirun exited 0 after a rank died"
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end"
    if how == "killed":
        assert "rank 1" in err, err[-2000:]
    else:
        assert "for rank(s) 1, which" in err and "timeout 3 s" in err, err[-2000:]
    return f"rank 1 {how}: job ended with status {p.returncode} after {elapsed:.1f} s, naming rank 1"


def job_suspended(tmp):
    # The whole job stopped for longer than --rank-timeout and continued (Ctrl-Z, a scheduler's
    # suspend): a rank's wait leaves out the time it was itself not running, so no rank times out
    # for it (rank 0 used to blame rank 1 for its own stop), and training goes on.
    log = os.path.join(tmp, "suspended.jsonl")
    p = start(2, SLOW + ["--steps", "100000", "--batch", "2", "--log", log, "--rank-timeout", "2"])
    try:
        wait_lines(log, 3, p)
        pids = [rank_pid(log, 0), rank_pid(log, 1)]
        for _ in range(3):
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(3)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.5)
        lines = len(log_records(log))
        wait_lines(log, lines + 3, p)
        assert p.poll() is None, "the job ended"
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=60)
    return "stopped 3 x 3 s (timeout 2 s), continued: no rank timed out, training went on"


def hang_at_exit(tmp):
    # Rank 1 stopped once rank 0 writes the final checkpoint: rank 0 prints its result, and its
    # last meeting with the ranks (a barrier, then MPI_Finalize, which has no timeout of its own)
    # ends within --rank-timeout, naming what it waited for; rank 0 used to wait for ever. (When
    # rank 1 is stopped after both have passed MPI_Finalize, rank 0 has exited and only mpirun
    # waits for the stopped process: that is the launcher's, and is accepted.)
    ckpt = os.path.join(tmp, "exit.ckpt")
    p = start(2, SLOW + ["--steps", "3", "--batch", "2", "--checkpoint", ckpt, "--rank-timeout",
                         "3", "--eval-sequences", "40"])
    pid = None
    try:
        t0 = time.time()
        while not os.path.exists(ckpt) and time.time() - t0 < 120 and p.poll() is None:
            if pid is None:
                try:
                    pid = rank_pid(ckpt, 1, timeout=0.01)
                except AssertionError:
                    pass
            time.sleep(0.002)
        assert pid is not None and os.path.exists(ckpt), "no checkpoint, or no rank 1 found"
        os.kill(pid, signal.SIGSTOP)
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 15:
            time.sleep(0.1)
        elapsed = time.time() - t0
        ended = p.poll() is not None
        if not ended:
            try:
                rank_pid(ckpt, 0, timeout=0.5)
                rank0_alive = True
            except AssertionError:
                rank0_alive = False
            assert not rank0_alive, f"rank 0 still waits {elapsed:.0f} s after rank 1 stopped"
            os.kill(pid, signal.SIGKILL)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    assert '"world_size": 2' in out, "rank 0's result was not printed:\n" + out[-1000:]
    if not ended:
        return "rank 1 stopped after MPI_Finalize: rank 0 exited with its result; mpirun waited"
    assert p.returncode != 0, "exit 0 with a rank stopped"
    assert "MPI_Finalize" in err or "at the end of the run" in err, err[-2000:]
    return f"rank 1 stopped at the end: result printed, job ended after {elapsed:.1f} s"


def mpmd_options(tmp):
    base = ["train", "--json", *options(["--steps", "2", "--batch", "1"], TINY)]
    shown = []
    # --reduce-overlap cuts the gradient into the collectives' buckets: ranks that differed
    # called mismatched collectives (heap corruption) before it was compared.
    for option, value, given in (("--seed", "2", "1"), ("--eval-every", "1", "0"),
                                 ("--reduce-overlap", "\"off\"", "\"on\"")):
        cmd = [mpirun, "--oversubscribe", "-np", "1", exe, *base, ":", "-np", "1", exe, *base,
               option, value.strip('"')]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        elapsed = time.time() - t0
        assert r.returncode != 0, f"{option} differing across ranks: exit 0:\n{r.stderr[-1000:]}"
        assert f"{option}: {value} on this rank, {given} on rank 0" in r.stderr, r.stderr[-2000:]
        assert '"world_size"' not in r.stdout, "a summary was written"
        shown.append(f"{option} ({elapsed:.1f} s)")
    # A rank that fails while the group is set up (here: NCCL asked for on one rank, which has no
    # GPU or no NCCL) ends the job with its reason; it used to wait in MPI_Finalize, unprinted,
    # until --rank-timeout.
    cmd = [mpirun, "--oversubscribe", "-np", "1", exe, *base, ":", "-np", "1", "-x",
           "SPARSE_REDUCER=nccl", exe, *base]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.time() - t0
    assert r.returncode != 0 and "SPARSE_REDUCER=nccl" in r.stderr, r.stderr[-2000:]
    assert elapsed < 60, f"took {elapsed:.1f} s"
    shown.append(f"a rank failing at set-up named ({elapsed:.1f} s)")
    return "refused, naming " + ", ".join(shown)


def per_rank_folders(tmp):
    # Ranks started in different folders (-wdir): the log and summary are rank 0's alone, so only
    # rank 0 needs their folder; a data file that differs between the folders is refused.
    a, b = os.path.join(tmp, "wa"), os.path.join(tmp, "wb")
    os.makedirs(os.path.join(a, "out"))
    os.makedirs(b)
    for folder, text in ((a, bytes(range(256)) * 400), (b, b"a" * 102400)):
        with open(os.path.join(folder, "t.txt"), "wb") as f:
            f.write(text)
    def mpmd(extra):
        base = [os.path.abspath(exe), "train", "--json",
                *options(["--steps", "2", "--batch", "1", "--log", "out/l.jsonl", "--summary-out",
                          "out/s.json", *extra], TINY)]
        cmd = [mpirun, "--oversubscribe", "-np", "1", "-wdir", a, *base, ":", "-np", "1", "-wdir",
               b, *base]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    r = ok(mpmd([]))
    assert json.load(open(os.path.join(a, "out", "s.json")))["world_size"] == 2
    assert not os.path.exists(os.path.join(b, "out")), "rank 1 wrote outputs"
    text = ["--preset", "enwik8-small", "--data", "text:t.txt", "--seq-len", "256", "--layers", "1",
            "--width", "32", "--heads", "2", "--stride", "16"]
    r = mpmd(text)
    assert r.returncode != 0, "ranks reading different files trained:\n" + r.stdout[-500:]
    assert "--data text:t.txt is not the same data on every rank" in r.stderr, r.stderr[-2000:]
    assert "train split" in r.stderr, r.stderr[-2000:]
    return ("log/summary folders needed on rank 0 only; different files behind one --data "
            "refused")


def one_process_commands(tmp):
    m = os.path.join(tmp, "one.ckpt")
    ok(train(2, ["--steps", "1", "--batch", "1", "--checkpoint", m]))
    two = [mpirun, "--oversubscribe", "-np", "2", exe]
    r = ok(subprocess.run(two + ["eval", "--checkpoint", m, "--sequences", "2", "--json"],
                          capture_output=True, text=True, timeout=120, env=env))
    result = json.loads(r.stdout)  # one JSON document, not one per rank
    assert "bits_per_dim" in result and r.stderr.count("runs in one process") == 1, r.stderr
    out = os.path.join(tmp, "one.bin")
    r = ok(subprocess.run(two + ["sample", "--checkpoint", m, "--out", out, "--length", "8",
                                 "--json"], capture_output=True, text=True, timeout=120, env=env))
    assert json.loads(r.stdout)["tokens"] == 8 and os.path.getsize(out) == 8, r.stdout
    return "eval and sample under 2 ranks: one JSON document, one file, one note"


def usage_errors_once(tmp):
    """A bad command line is the same on every rank: one message (rank 0's), not one per rank."""
    three = [mpirun, "--oversubscribe", "-np", "3", exe]
    for args, text in ((["train", "--steps", "0"], "--steps: must be an integer"),
                       (["train", "--stpes", "3"], 'unknown option "--stpes"'),
                       (["trian"], 'did you mean "train"')):
        r = subprocess.run(three + args, capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode != 0, f"{args}: exit 0"
        assert (r.stdout + r.stderr).count(text) == 1, f"{args}:\n{r.stdout}{r.stderr}"
    # Only the second command line of an MPMD launch is wrong: rank 0 cannot speak for it, so that
    # rank prints its own error (it used to exit 2 in silence), and the job ends.
    good = ["train", "--json", *options(["--steps", "2", "--batch", "1"], TINY)]
    cmd = [mpirun, "--oversubscribe", "-np", "1", exe, *good, ":", "-np", "2", exe, "train",
           "--stpes", "3"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode != 0, f"MPMD with a misspelt option on rank 1: exit 0\n{r.stderr[-1000:]}"
    assert (r.stdout + r.stderr).count('unknown option "--stpes"') == 1, r.stdout + r.stderr
    assert time.time() - t0 < 60, f"took {time.time() - t0:.1f} s"
    # SLURM variables set by hand, with no srun (no SLURM_STEP_ID): no rank 0 prints for rank 1.
    plain = {k: v for k, v in env.items()
             if not k.startswith(("OMPI_", "PMIX_", "PMI_", "SLURM_"))}
    r = subprocess.run([exe, "train", "--steps", "0"], capture_output=True, text=True, timeout=60,
                       env=dict(plain, SLURM_PROCID="1", SLURM_NTASKS="3"))
    assert r.returncode != 0 and "--steps: must be an integer" in r.stderr, r.stderr
    return ("a bad value, a misspelt option and a misspelt subcommand under 3 ranks: one message "
            "each; an MPMD launch's second command line and SLURM variables without srun: shown")


def launcher_variables(tmp):
    plain = {k: v for k, v in env.items()
             if not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_", "SLURM_"))}
    args = [exe, "train", "--json", *options(["--steps", "1", "--batch", "1"], TINY)]
    slurm = dict(plain, SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_LOCALID="1")
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=slurm)
    assert r.returncode != 0, "SLURM rank 1 of 2 without srun trained alone:\n" + r.stdout[-500:]
    assert "SLURM_PROCID/SLURM_NTASKS say rank 1 of 2" in r.stderr, r.stderr[-2000:]
    r = ok(subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env=dict(slurm, SLURM_PROCID="0", SLURM_LOCALID="0")))
    assert json.loads(r.stdout)["world_size"] == 1 and "rank 0 of 2" in r.stderr, r.stderr
    # A rank without a world size was called "rank 1 of 1".
    r = subprocess.run(args, capture_output=True, text=True, timeout=120,
                       env=dict(plain, SLURM_PROCID="1"))
    assert r.returncode != 0 and "say rank 1 (and no world size)" in r.stderr, r.stderr[-2000:]
    return "SLURM rank 1 of 2 refused naming the variables; rank 0 of 2 trains alone, saying so"


def main():
    probe = subprocess.run([exe, "train", "--help"], capture_output=True, text=True)
    if "--rank-timeout" not in probe.stdout:
        print("SKIP: sparse-repro without data-parallel options")
        return 77
    r = subprocess.run([mpirun, "--oversubscribe", "-np", "1", exe, "train", "--json", *TINY, "--steps",
                        "1", "--batch", "1"], capture_output=True, text=True, env=env, timeout=120)
    if r.returncode == 0 and '"gradient_reducer": "none"' in r.stdout:
        print("SKIP: sparse-repro was built without MPI")
        return 77
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("same-as-one-process", lambda: same_as_one_process(tmp)),
                 ("resume-2-ranks", lambda: resume_two_ranks(tmp)),
                 ("rank-killed", lambda: dead_rank(tmp, "killed")),
                 ("rank-stopped", lambda: dead_rank(tmp, "stopped")),
                 ("job-suspended", lambda: job_suspended(tmp)),
                 ("hang-at-exit", lambda: hang_at_exit(tmp)),
                 ("mpmd-options", lambda: mpmd_options(tmp)),
                 ("per-rank-folders", lambda: per_rank_folders(tmp)),
                 ("one-process-commands", lambda: one_process_commands(tmp)),
                 ("usage-errors-once", lambda: usage_errors_once(tmp)),
                 ("launcher-variables", lambda: launcher_variables(tmp))]
        only = sys.argv[2:] or [name for name, _ in cases]
        for name, case in cases:
            if name not in only:
                continue
            try:
                print(f"PASS {name}: {case()}")
            except Exception as e:  # one row per case
                failures += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
