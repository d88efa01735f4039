#!/usr/bin/env python3
"""The pkg-config tests report SKIP (exit 77) with a line naming the missing tool when pkg-config
or the C compiler is not installed, instead of failing: each is run with a PATH that holds every
tool it uses except the one in its row.

usage: pkgconfig_skip.py <pkgconfig_link.py> <pkgconfig_build_tree.py> <build root> <source root>
                         <app.c>"""
import os
import shutil
import subprocess
import sys
import tempfile

link, build_tree, build, source, app = sys.argv[1:6]
TOOLS = ["pkg-config", "cc", "c++", "meson", "ninja"]
# (script arguments, the tool left out)
CASES = [
    ([link, build, app, "none"], "pkg-config"),
    ([link, build, app, "none"], "cc"),
    ([build_tree, build, source, app, "none"], "pkg-config"),
    ([build_tree, build, source, app, "none"], "cc"),
]

ran = 0
with tempfile.TemporaryDirectory() as tmp:
    for args, missing in CASES:
        present = [t for t in TOOLS if t != missing and shutil.which(t)]
        if missing != "pkg-config" and "pkg-config" not in present:
            continue  # without pkg-config on this machine the row cannot isolate the compiler
        bin_dir = os.path.join(tmp, "bin-without-" + missing)
        os.makedirs(bin_dir, exist_ok=True)
        for t in present:
            if not os.path.exists(os.path.join(bin_dir, t)):
                os.symlink(shutil.which(t), os.path.join(bin_dir, t))
        env = {k: v for k, v in os.environ.items() if k not in ("CC", "PATH")}
        env["PATH"] = bin_dir
        p = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                           timeout=120)
        shown = f"{os.path.basename(args[0])} without {missing}"
        assert p.returncode == 77, f"{shown}: exit {p.returncode}, expected 77 (SKIP):\n" \
            f"{p.stdout[-800:]}{p.stderr[-800:]}"
        assert f"SKIP: {missing} is not installed" in p.stdout, f"{shown}: {p.stdout!r}"
        ran += 1
print(f"ok: {ran} cases: the pkg-config tests skip, naming the missing tool")
