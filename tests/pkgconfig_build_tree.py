#!/usr/bin/env python3
"""The README's way of using the library from one's own program without installing it: its
shell block (PKG_CONFIG_PATH=$PWD/build/meson-uninstalled, `cc app.c $(pkg-config --cflags
--libs sparse)`, LD_LIBRARY_PATH=$PWD/build) is read from README.md and run as written, in a
folder whose `build` is this build tree and whose `app.c` is a small C program; so are the
alternatives its comments give (-Icapi/include -Lbuild -lsparse, -Wl,-rpath,$PWD/build) and the
Python binding line. Fails when the README's lines do not build and run the program.

usage: pkgconfig_build_tree.py <build root> <source root> <app.c> <b_sanitize>
Exit 77 (SKIP) without pkg-config or a C compiler, and in sanitizer builds (a program linked
against an instrumented libsparse.so needs the sanitizer's own flags, which the README's plain
line does not give)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

build, source, app = (os.path.abspath(a) for a in sys.argv[1:4])
sanitize = sys.argv[4] if len(sys.argv) > 4 else "none"
for tool in ("pkg-config", "cc"):
    if shutil.which(tool) is None:
        print(f"SKIP: {tool} is not installed")
        sys.exit(77)
if sanitize not in ("", "none"):
    print(f"SKIP: sanitizer build (b_sanitize={sanitize})")
    sys.exit(77)

readme = open(os.path.join(source, "README.md")).read()
m = re.search(r"without installing it:.*?```sh\n(.*?)```", readme, re.S)
if not m:
    sys.exit("README.md: no ```sh block after 'Using the library from your own program without "
             "installing it:'")
block = m.group(1)
lines = block.splitlines()


def line_starting(prefix):
    found = [l for l in lines if l.startswith(prefix)]
    if len(found) != 1:
        sys.exit(f"README.md: expected one line starting with {prefix!r} in the block:\n{block}")
    return found[0]


def command(line):
    """The line without its trailing comment."""
    return line.split("#", 1)[0].rstrip()


def alternative(line):
    """The command of an `# or: ...` comment."""
    alt = re.search(r"#\s*or:?\s*(.*)$", line)
    if not alt:
        sys.exit(f"README.md: no '# or:' alternative on {line!r}")
    return alt.group(1).strip()


export = command(line_starting("export PKG_CONFIG_PATH="))
compile_line = line_starting("cc app.c")
run_line = line_starting("LD_LIBRARY_PATH=")
python_lines = block[block.index("SPARSE_LIB_DIR="):].strip()


def sh(script, cwd):
    p = subprocess.run(["bash", "-ec", script], cwd=cwd, capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items()
                            if k not in ("PKG_CONFIG_PATH", "LD_LIBRARY_PATH", "SPARSE_LIB_DIR",
                                         "SPARSE_LIBRARY", "PYTHONPATH")})
    print(f"$ {script}\n{p.stdout}{p.stderr}", end="")
    if p.returncode != 0:
        sys.exit(f"the README's lines failed (exit {p.returncode}):\n{script}")
    return p.stdout


with tempfile.TemporaryDirectory() as tmp:
    # The user's folder: the repository's capi/ and build/ (this build tree), their app.c.
    os.symlink(build, os.path.join(tmp, "build"))
    os.symlink(os.path.join(source, "capi"), os.path.join(tmp, "capi"))
    shutil.copy(app, os.path.join(tmp, "app.c"))
    expect = "backend cpu"

    out = sh("\n".join([export, command(compile_line), command(run_line)]), tmp)
    assert expect in out, out
    os.remove(os.path.join(tmp, "app"))

    # The alternatives in the comments: plain -I/-L flags instead of pkg-config, an rpath
    # instead of LD_LIBRARY_PATH.
    plain = command(compile_line).replace("$(pkg-config --cflags --libs sparse)",
                                          alternative(compile_line))
    if plain == command(compile_line):
        sys.exit(f"README.md: the compile line does not use pkg-config as documented: "
                 f"{compile_line!r}")
    out = sh("\n".join([plain, command(run_line)]), tmp)
    assert expect in out, out
    rpath = alternative(run_line).replace("link with ", "")
    out = sh("\n".join([export, command(compile_line) + " " + rpath, "./app"]), tmp)
    assert expect in out, out

    # The Python binding line (needs numpy).
    try:
        import numpy  # noqa: F401
        sh(python_lines, tmp)
    except ImportError:
        print("note: numpy is not installed, the Python binding line is not run")
print("ok: the README's build-tree lines build and run a C program")
