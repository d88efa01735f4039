"""Resources and threads: the library refuses what does not fit, uses the threads it is given (nested
OpenMP regions included) and never ends its host process.

usage: test_resources.py RESOURCE_PROBE SPARSE_REPRO

Each case runs tests/resource_probe.cpp (or the driver) in a child process and checks how the
child ended: by itself with a clean status, not by a signal or by an exit() inside OpenMP.
"""
import os
import re
import shutil
import subprocess
import sys

PROBE, REPRO = sys.argv[1], sys.argv[2]
# AddressSanitizer reserves terabytes of shadow memory at start, so a process under an
# address-space limit (ulimit -v) cannot even start: those cases are skipped in sanitizer builds.
ADDRESS_LIMITS = len(sys.argv) < 4 or sys.argv[3] in ("", "none")
failures = []


def run(args, env=None, timeout=120, prefix=()):
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        return subprocess.run(list(prefix) + list(args), env=full_env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, "timeout", "", "no answer in %d s" % timeout)


def probe(args, env=None, prefix=()):
    """Runs the probe; returns its fields, or how the process ended when it did not return."""
    r = run([PROBE] + args, env, timeout=60, prefix=prefix)
    if r.returncode != 0:
        return {"exit": r.returncode, "stderr": r.stderr.strip()[-300:]}
    m = re.search(r"(?:num_threads=(-?\d+) )?(?:count=(-?\d+) )?started=(\d+) max_alive=(\d+) "
                  r"status=(-?\d+) message=(.*)", r.stdout)
    if not m:
        return {"exit": 0, "stdout": r.stdout}
    return {"exit": 0, "num_threads": int(m.group(1) or -1), "count": int(m.group(2) or -1),
            "started": int(m.group(3)), "max_alive": int(m.group(4)), "status": int(m.group(5)),
            "message": m.group(6)}


def expect(name, ok, detail):
    print(("ok   " if ok else "FAIL ") + name + ": " + str(detail))
    if not ok:
        failures.append(name)


OK, INVALID, OOM = 0, -1, -2

# num_threads = N means N threads in all: with 1, Eigen must not start its own OpenMP team inside
# the library's region (OMP_NUM_THREADS=4 makes Eigen want 4 even on a small machine).
r = probe(["threads", "1"], {"OMP_NUM_THREADS": "4"})
expect("num_threads=1 starts no thread", r.get("status") == OK and r.get("started") == 0, r)
r = probe(["threads", "2"], {"OMP_NUM_THREADS": "4"})
expect("num_threads=2 runs at most 1 extra thread at a time",
       r.get("status") == OK and r.get("max_alive", 99) <= 1, r)
r = probe(["model-threads", "1"], {"OMP_NUM_THREADS": "4"})
expect("model training with num_threads=1 starts no thread",
       r.get("status") == OK and r.get("started") == 0, r)

# Thread creation failure: OpenMP (libgomp) calls exit(1) when pthread_create fails; the library
# must find out first and return an error.
for command in ["threads", "model-threads"]:
    r = probe([command, "2"], {"RESOURCE_PROBE_FAIL_THREADS": "1"})
    expect(command + ": failing pthread_create gives an error status",
           r.get("status") == OOM and "cannot run 2 threads" in r.get("message", ""), r)

# The same under a real process limit (ulimit -u). Root is exempt from RLIMIT_NPROC, so run as
# nobody when we are root.
prefix = None
if shutil.which("prlimit"):
    prefix = ["prlimit", "--nproc=2"]  # the probe's own calling thread is the second
    if os.geteuid() == 0:
        prefix = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + prefix
                  if shutil.which("setpriv") else None)
if prefix is None:
    print("skip prlimit --nproc: prlimit or setpriv missing")
else:
    r = probe(["threads", "2"], prefix=prefix)
    expect("prlimit --nproc=2: error status, not exit",
           r.get("status") == OOM and "cannot run 2 threads" in r.get("message", ""), r)

# A thread stack the address-space limit cannot hold (not in the issue: OMP_STACKSIZE above
# ulimit -v makes every OpenMP thread creation fail, which libgomp answers with exit(1)).
if shutil.which("prlimit") and ADDRESS_LIMITS:
    r = probe(["threads", "2"], {"OMP_STACKSIZE": "4G"}, prefix=["prlimit", "--as=3221225472"])
    expect("OMP_STACKSIZE=4G under ulimit -v 3G: error status, not exit",
           r.get("status") == OOM and "OMP_STACKSIZE" in r.get("message", ""), r)
elif not ADDRESS_LIMITS:
    print("skip OMP_STACKSIZE under ulimit -v: address-space limits and AddressSanitizer")

# Malformed OpenMP variables are ignored (with OpenMP's warning), not fatal.
for var, value in [("OMP_NUM_THREADS", "garbage"), ("OMP_PROC_BIND", "sideways"),
                   ("OMP_THREAD_LIMIT", "-3"), ("OMP_STACKSIZE", "lots")]:
    r = probe(["threads", "2"], {var: value})
    expect(var + "=" + value + " runs", r.get("status") == OK, r)

# OMP_THREAD_LIMIT below the asked thread count: refused by name instead of silently fewer.
r = probe(["context", "2"], {"OMP_THREAD_LIMIT": "1"})
expect("OMP_THREAD_LIMIT=1 refuses num_threads=2",
       r.get("status") == INVALID and "OMP_THREAD_LIMIT" in r.get("message", ""), r)
r = probe(["context", "0"], {"OMP_THREAD_LIMIT": "1"})
expect("OMP_THREAD_LIMIT=1 caps num_threads=0 at 1",
       r.get("status") == OK and r.get("num_threads") == 1, r)

# An allocation failing inside an OpenMP region (std::bad_alloc would call std::terminate).
if ADDRESS_LIMITS:
    r = probe(["alloc-in-region", "2"], {"SPARSE_MEMORY_LIMIT": "unlimited"})
    expect("bad_alloc inside a parallel region gives an error status",
           r.get("status") == OOM and "out of memory" in r.get("message", ""), r)
else:
    print("skip bad_alloc inside a parallel region: it limits the address space, which "
          "AddressSanitizer's shadow memory does not allow")

# Memory bounds, checked before allocating.
r = probe(["layout-dense", "4194304"], {"SPARSE_MEMORY_LIMIT": "16G"})
expect("dense layout n=4194304 block 16 refused with the figure",
       r.get("status") == OOM and "computed blocks" in r.get("message", "")
       and "16.00 GiB" in r.get("message", "") and "SPARSE_MEMORY_LIMIT" in r.get("message", ""),
       r)
r = probe(["layout-dense", "65536"], {"SPARSE_MEMORY_LIMIT": "16G"})
expect("dense layout n=65536 block 16 (160 MiB) still builds", r.get("status") == OK, r)
r = probe(["layout-dense", "4096"], {"SPARSE_MEMORY_LIMIT": "12 parsecs"})
expect("malformed SPARSE_MEMORY_LIMIT is named",
       r.get("status") == INVALID and "SPARSE_MEMORY_LIMIT" in r.get("message", ""), r)
# The grammar: a decimal integer with an optional binary K/M/G/T suffix (or KiB..TiB); anything
# else, zero, and sizes above 2^63 - 1 bytes are refused naming the variable and the value.
for bad, why in [("0x10", "expected a decimal"), ("1.5G", "expected a decimal"),
                 ("1e3", "expected a decimal"), ("16GB", "expected a decimal"),
                 ("-5", "expected a decimal"), ("16 G", "expected a decimal"),
                 ("0", "zero bytes"), ("99999999999999999999", "too large"),
                 ("8388608T", "too large"), ("9223372036854775808", "too large")]:
    r = probe(["layout-dense", "4096"], {"SPARSE_MEMORY_LIMIT": bad})
    expect("SPARSE_MEMORY_LIMIT=%s refused" % bad,
           r.get("status") == INVALID and 'SPARSE_MEMORY_LIMIT = "%s"' % bad in r.get("message", "")
           and why in r.get("message", ""), r)
# The same bound written four ways (16 * 2^30 bytes), and the largest accepted value.
for good in ["17179869184", "16g", " 16GiB ", "16384M"]:
    r = probe(["layout-dense", "4194304"], {"SPARSE_MEMORY_LIMIT": good})
    expect("SPARSE_MEMORY_LIMIT=%r is 16 GiB" % good,
           r.get("status") == OOM and "16.00 GiB" in r.get("message", ""), r)
r = probe(["layout-dense", "4096"], {"SPARSE_MEMORY_LIMIT": "8388607T"})
expect("SPARSE_MEMORY_LIMIT=8388607T (2^63 - 2^40 bytes) accepted", r.get("status") == OK, r)
r = probe(["model-layers", "1000000000"], {"SPARSE_MEMORY_LIMIT": "16G"})
expect("a model of 10^9 layers is refused with the figure",
       r.get("status") == OOM and "parameters" in r.get("message", ""), r)
# The layouts of a model of 2^31 - 1 layers: two layouts, and no per-layer memory (the map of
# layers to layouts is computed, not stored: 8 GiB as int32 per layer).
if shutil.which("prlimit") and ADDRESS_LIMITS:
    r = probe(["model-layouts", "2147483647"], prefix=["prlimit", "--as=1073741824"])
    expect("sparse_experimental_model_layouts of 2^31 - 1 layers under ulimit -v 1G",
           r.get("status") == OK and r.get("count") == 2, r)

d = run([REPRO, "bench-attention", "--pattern", "dense", "--n", "4194304", "--block", "16"],
        {"SPARSE_MEMORY_LIMIT": "16G"}, timeout=60)
# At once: before the GEMM rate is measured (seconds; a minute under a sanitizer on a loaded
# machine) and before the table's header is printed.
expect("bench-attention dense n=4194304 refused at once",
       d.returncode == 1 and "--n 4194304" in d.stderr and "memory limit" in d.stderr
       and d.stdout.strip() == "", (d.returncode, d.stdout.strip(), d.stderr.strip()))
d = run([REPRO, "bench-attention", "--n", str(2**40)], timeout=60)
expect("bench-attention --n 2^40 names the option and the limit",
       d.returncode == 1 and "--n " + str(2**40) in d.stderr and "memory limit" in d.stderr
       and "bad_alloc" not in d.stderr, (d.returncode, d.stderr.strip()))

if failures:
    print("%d failure(s): %s" % (len(failures), ", ".join(failures)))
    sys.exit(1)
