#!/usr/bin/env python3
"""Installs the build into a temporary DESTDIR, then compiles and runs a C program against it
using only `pkg-config` (shared and static), as a user of the installed library would.

Exit 77 (SKIP), with a line saying which, when pkg-config or the C compiler ($CC, else cc) is not
installed."""
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

build_dir, source, sanitize = sys.argv[1], sys.argv[2], sys.argv[3]
cc = shlex.split(os.environ.get("CC") or "cc")
for tool in ("pkg-config", cc[0]):
    if shutil.which(tool) is None:
        print(f"SKIP: {tool} is not installed: the installed library cannot be linked through "
              "pkg-config here")
        sys.exit(77)
extra = [] if sanitize in ("", "none") else ["-fsanitize=" + sanitize]

with tempfile.TemporaryDirectory() as tmp:
    dest = os.path.join(tmp, "dest")
    subprocess.run(["meson", "install", "-C", build_dir, "--no-rebuild", "--quiet",
                    "--destdir", dest], check=True, stdout=subprocess.DEVNULL)
    pcs = []
    for root, _, files in os.walk(dest):
        pcs += [os.path.join(root, f) for f in files if f == "sparse.pc"]
    if len(pcs) != 1:
        sys.exit(f"expected one installed sparse.pc, found {pcs}")
    pc_dir = os.path.dirname(pcs[0])
    # The .pc file names the configured prefix; point it at the DESTDIR copy.
    prefix = subprocess.run(["pkg-config", "--variable=prefix", pcs[0]], check=True,
                            capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, PKG_CONFIG_PATH=pc_dir)
    define = "--define-variable=prefix=" + dest + prefix

    def pkg(*args):
        return subprocess.run(["pkg-config", define, *args, "sparse"], check=True,
                              capture_output=True, text=True, env=env).stdout.split()

    cflags, libs = pkg("--cflags"), pkg("--libs")
    libdir = pkg("--variable=libdir")[0]
    exe = os.path.join(tmp, "consumer")
    cmd = [*cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", *extra, source, "-o", exe,
           *cflags, *libs]
    print(" ".join(cmd))
    subprocess.run(cmd, check=True)
    run_env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    subprocess.run([exe], check=True, env=run_env)

    if shutil.which("c++") and not extra:
        # Static linking: Libs.private carries the C++ runtime, OpenMP and CUDA libraries.
        static_libs = pkg("--libs", "--static")
        exe_static = exe + "-static"
        cmd = ["c++", "-x", "c", source, "-x", "none", "-o", exe_static, *cflags, "-L" + libdir,
               "-Wl,-Bstatic", "-lsparse", "-Wl,-Bdynamic",
               *[f for f in static_libs if f != "-lsparse"], "-fopenmp"]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)
        subprocess.run([exe_static], check=True)
print("ok: linked through pkg-config and ran")
