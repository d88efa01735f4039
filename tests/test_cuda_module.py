"""libsparse.so and sparse-repro load without the CUDA libraries; the CUDA backend is a module.

usage: test_cuda_module.py LIBSPARSE_SO CUDA_MODULE_OR_EMPTY SPARSE_REPRO BACKEND_PROBE B_SANITIZE

- readelf: libsparse.so and sparse-repro need neither libcudart, libcublas nor libnccl (the CUDA
  module libsparse_cuda.so needs libcudart, libcublas and libcublasLt and exports one entry
  point);
- under an address-space limit far below what cuBLAS maps (~750 MB), `sparse-repro info` and a
  C program creating a CPU context (tests/backend_probe.c) run (skipped in sanitizer builds,
  whose shadow memory cannot fit under any such limit);
- asking for CUDA with SPARSE_CUDA_MODULE naming a missing file, a module whose CUDA library is
  missing, a module of another build and a file that is no module gives SPARSE_ERR_UNSUPPORTED
  with a message naming the file and the loader's reason; `info` and
  sparse_experimental_backend_status() say why CUDA is unavailable.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

LIB, MODULE, REPRO, PROBE = sys.argv[1:5]
SANITIZED = len(sys.argv) > 5 and sys.argv[5] not in ("", "none")
UNSUPPORTED = -3
# cuBLAS alone maps about 750 MB of address space; the CPU path of the library and the driver
# (OpenMP, libsndfile, OpenMPI's libmpi) fit in well under half of it.
ADDRESS_LIMIT = 400 * 1000 * 1000
CUDA_LIBS = re.compile(r"libcudart|libcublas|libnccl|libcuda\.")
failures = []


def expect(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (": " + str(detail) if detail else ""))
    if not ok:
        failures.append(name)


def run(args, env=None, timeout=120):
    full = dict(os.environ)
    full.update(env or {})
    try:
        return subprocess.run(args, env=full, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, "timeout", "", "no answer in %d s" % timeout)


def needed(path):
    out = run(["readelf", "-d", path]).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def probe(backend, env=None, prefix=(), timeout=120):
    r = run(list(prefix) + [PROBE, backend], env, timeout)
    m = re.search(r"status=(-?\d+) backend=(\S+) available=(-?\d+) compiled=(-?\d+) "
                  r"reason=(.*) message=(.*)", r.stdout)
    if r.returncode != 0 or not m:
        return {"exit": r.returncode, "stderr": r.stderr.strip()[-400:]}
    return {"exit": 0, "status": int(m.group(1)), "backend": m.group(2),
            "available": int(m.group(3)), "compiled": int(m.group(4)), "reason": m.group(5),
            "message": m.group(6)}


def compile_so(tmp, name, source, extra=()):
    src = os.path.join(tmp, name + ".c")
    with open(src, "w") as f:
        f.write(source)
    out = os.path.join(tmp, name)
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", src, "-o", out, *extra],
                   check=True)
    return out


if shutil.which("readelf"):
    for path in (LIB, REPRO):
        deps = needed(path)
        bad = [d for d in deps if CUDA_LIBS.search(d)]
        expect("%s needs no CUDA library" % os.path.basename(path), not bad and deps, deps)
    if MODULE:
        deps = needed(MODULE)
        expect("the module carries libcudart, libcublas and libcublasLt",
               all(any(d.startswith(lib + ".so") for d in deps)
                   for lib in ("libcudart", "libcublas", "libcublasLt")), deps)
        exports = run(["nm", "-D", "--defined-only", MODULE]).stdout.split()
        expect("the module exports its entry point only",
               [s for s in exports if not re.fullmatch(r"[0-9a-f]+|[A-Za-z]", s)]
               == ["sparse_cuda_module"], exports)
else:
    print("skip readelf checks: no readelf")

if SANITIZED:
    print("skip address-space limit: sanitizer build")
elif not shutil.which("prlimit"):
    print("skip address-space limit: no prlimit")
else:
    limit = ["prlimit", "--as=%d" % ADDRESS_LIMIT]
    r = run(limit + [REPRO, "info"])
    expect("sparse-repro info under --as=%d" % ADDRESS_LIMIT,
           r.returncode == 0 and "backend cpu : available" in r.stdout,
           (r.returncode, r.stdout.strip()[-300:], r.stderr.strip()[-300:]))
    p = probe("cpu", prefix=limit)
    expect("a CPU context under --as=%d" % ADDRESS_LIMIT,
           p.get("status") == 0 and p.get("backend") == "cpu", p)
    p = probe("auto", prefix=limit)
    expect("an AUTO context under --as=%d runs (on the CPU without a device)" % ADDRESS_LIMIT,
           p.get("status") == 0 and p.get("backend") in ("cpu", "cuda"), p)

with tempfile.TemporaryDirectory() as tmp:
    missing = os.path.join(tmp, "hidden", "libsparse_cuda.so")
    p = probe("cuda", {"SPARSE_CUDA_MODULE": missing})
    if MODULE:
        expect("a missing module: unsupported, naming the path",
               p.get("status") == UNSUPPORTED and missing in p.get("message", "")
               and "No such file" in p.get("message", ""), p)
    else:
        expect("a build without CUDA: unsupported",
               p.get("status") == UNSUPPORTED and p.get("compiled") == 0
               and "no CUDA backend" in p.get("message", ""), p)

    if MODULE:
        # A module whose CUDA library is missing: linked against a library removed afterwards.
        dep = compile_so(tmp, "libsparse_test_gone.so", "int sparse_test_gone(void) { return 1; }\n")
        needs = compile_so(tmp, "needs_gone.so",
                           "int sparse_test_gone(void);\n"
                           "int sparse_cuda_module_user(void) { return sparse_test_gone(); }\n",
                           ["-L" + tmp, "-l:libsparse_test_gone.so", "-Wl,--no-as-needed"])
        os.remove(dep)
        p = probe("cuda", {"SPARSE_CUDA_MODULE": needs})
        expect("a module missing a library it needs: unsupported, with the loader's message",
               p.get("status") == UNSUPPORTED and needs in p.get("message", "")
               and "libsparse_test_gone.so" in p.get("message", ""), p)

        # A module of another build: the entry point answers a table of another interface.
        stale = compile_so(tmp, "stale.so",
                           "#include <stdint.h>\n"
                           "static const struct { uint32_t size, interface; const char* version;\n"
                           "  void* f[3]; } table = {40, 0, \"0.0.1\", {0, 0, 0}};\n"
                           "const void* sparse_cuda_module(void) { return &table; }\n")
        p = probe("cuda", {"SPARSE_CUDA_MODULE": stale})
        expect("a module of another build: refused, naming both versions",
               p.get("status") == UNSUPPORTED and "another build" in p.get("message", "")
               and "0.0.1" in p.get("message", ""), p)

        # A FIFO or a device is refused before the loader opens it (opening a FIFO would wait for
        # a writer; reading a device would not end), naming the variable and what the path is.
        fifo = os.path.join(tmp, "module-fifo")
        os.mkfifo(fifo)
        for path, kind in [(fifo, "a FIFO"), ("/dev/zero", "a character device")]:
            p = probe("cuda", {"SPARSE_CUDA_MODULE": path}, timeout=20)
            expect("SPARSE_CUDA_MODULE naming %s: unsupported at once" % kind,
                   p.get("status") == UNSUPPORTED and path in p.get("message", "")
                   and kind in p.get("message", ""), p)

        other = compile_so(tmp, "other.so", "int not_a_module(void) { return 0; }\n")
        p = probe("cuda", {"SPARSE_CUDA_MODULE": other})
        expect("a library without the entry point: refused",
               p.get("status") == UNSUPPORTED and "no entry point" in p.get("message", ""), p)

    # The driver's NCCL reducer is a module of its own, loaded on SPARSE_REDUCER=nccl.
    missing_nccl = os.path.join(tmp, "hidden", "libsparse_repro_nccl.so")
    r = run([REPRO, "train", "--preset", "cifar10-small", "--steps", "1", "--backend", "cpu"],
            {"SPARSE_REDUCER": "nccl", "SPARSE_NCCL_MODULE": missing_nccl})
    expect("SPARSE_REDUCER=nccl with a missing NCCL module: an error naming it",
           r.returncode not in (0, -6, -11) and
           (missing_nccl + ": cannot open" in r.stderr or "built without NCCL" in r.stderr),
           (r.returncode, r.stderr.strip()[-300:]))
    nccl_fifo = os.path.join(tmp, "nccl-fifo")
    os.mkfifo(nccl_fifo)
    r = run([REPRO, "train", "--preset", "cifar10-small", "--steps", "1", "--backend", "cpu"],
            {"SPARSE_REDUCER": "nccl", "SPARSE_NCCL_MODULE": nccl_fifo}, timeout=30)
    expect("SPARSE_NCCL_MODULE naming a FIFO: an error at once",
           r.returncode not in (0, -6, -11, "timeout") and
           (nccl_fifo + " is a FIFO" in r.stderr or "built without NCCL" in r.stderr),
           (r.returncode, r.stderr.strip()[-300:]))

    # The module found next to libsparse.so: without a device the module's own error comes back
    # through the library with its status (an exception thrown in the module, caught outside).
    p = probe("cuda")
    if MODULE and p.get("status") == 0:
        print("skip no-device checks: a CUDA device is present")
    elif MODULE:
        expect("the module next to libsparse.so loads; no device: unsupported",
               p.get("status") == UNSUPPORTED and "no CUDA device is present" in
               p.get("message", "") and "could not be loaded" not in p.get("message", ""), p)
        expect("the status query gives the reason",
               p.get("available") == 0 and p.get("compiled") == 1 and
               "no CUDA device is present" in p.get("reason", ""), p)
        r = run([REPRO, "info"])
        expect("info: cuda compiled in, not available, with the reason",
               re.search(r"^backend cuda: compiled in, not available on this machine: no CUDA "
                         r"device is present", r.stdout, re.M) is not None, r.stdout)
        # The NCCL reducer without a device says so, not cudaSetDevice's driver message.
        r = run([REPRO, "train", "--preset", "cifar10-small", "--steps", "1", "--backend", "cpu"],
                {"SPARSE_REDUCER": "nccl"}, timeout=60)
        expect("SPARSE_REDUCER=nccl without a device: an error saying no device is seen",
               r.returncode not in (0, -6, -11, "timeout") and
               ("NCCL needs a CUDA device and this process sees none" in r.stderr or
                "built without NCCL" in r.stderr or "cannot open" in r.stderr),
               (r.returncode, r.stderr.strip()[-300:]))
    else:
        r = run([REPRO, "info"])
        expect("info: cuda not compiled", "backend cuda: not compiled into this build" in r.stdout,
               r.stdout)

if failures:
    sys.exit("%d failure(s): %s" % (len(failures), ", ".join(failures)))
print("ok: every check passed")
