#!/usr/bin/env python3
"""The library's atomic file writer (libsparse/file_io.cpp) under kill -9.

usage: test_atomic_write.py ATOMIC_WRITE_PROBE

A writer killed with SIGKILL in the middle of a large write leaves the old file intact and no
temporary file beside it; temporary files of the writer's naming (.NAME.tmp-PID-COUNTER-CLOCK) left
by processes that have ended are removed by the next write of the same target, those of live
processes are kept; a completed write replaces the file with the new bytes."""
import os
import signal
import subprocess
import sys
import tempfile
import time

PROBE = sys.argv[1]
failures = []


def expect(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)), flush=True)
    if not ok:
        failures.append(name)


def written_bytes(pid, folder):
    """Bytes written so far to the probe's open file in `folder` (0 while none is open)."""
    fds = "/proc/%d/fd" % pid
    try:
        for fd in os.listdir(fds):
            try:
                link = os.readlink(os.path.join(fds, fd))
                if link.startswith(folder + "/"):
                    return os.stat(os.path.join(fds, fd)).st_size
            except OSError:
                continue
    except OSError:
        pass
    return 0


def killed_mid_write(folder):
    target = os.path.join(folder, "model.ckpt")
    old = b"the old checkpoint\n"
    open(target, "wb").write(old)
    p = subprocess.Popen([PROBE, target, "4096"], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"writing\n"
    deadline, seen = time.time() + 60, 0
    while time.time() < deadline and seen < (16 << 20):
        seen = written_bytes(p.pid, folder)
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.wait()
    expect("the writer was killed in the middle of the write",
           p.returncode == -signal.SIGKILL and seen >= (16 << 20), (p.returncode, seen))
    left = sorted(os.listdir(folder))
    expect("a killed writer leaves no temporary file", left == ["model.ckpt"], left)
    expect("the old file is intact", open(target, "rb").read() == old)


def stale_temps(folder):
    target = os.path.join(folder, "out.bin")
    open(target, "wb").write(b"old")
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = ".out.bin.tmp-%d-0-12345" % ended.pid
    live = ".out.bin.tmp-%d-0-12345" % os.getpid()
    other = ".other.bin.tmp-%d-0-12345" % ended.pid  # another target's: not this write's
    for name in (stale, live, other):
        open(os.path.join(folder, name), "wb").write(b"partial")
    r = subprocess.run([PROBE, target, "1"], capture_output=True)
    expect("a small write succeeds", r.returncode == 0, r.stderr)
    expect("the new bytes replace the file", open(target, "rb").read() == b"x" * (1 << 20))
    left = sorted(os.listdir(folder))
    expect("an ended writer's temporary file is removed, a live one's and another target's kept",
           left == sorted([other, live, "out.bin"]), left)


for case in (killed_mid_write, stale_temps):
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        case(os.path.realpath(tmp))
if failures:
    sys.exit("%d failure(s): %s" % (len(failures), ", ".join(failures)))
print("all cases passed")
