#!/usr/bin/env python3
"""Regenerates capi/abi/sparse.abi from a build: run after a deliberate API change.

usage: python3 capi/abi/update.py [builddir]       (default builddir: build)
Rebuilds the library in <builddir> (ninja), dumps its ABI, writes capi/abi/sparse.abi and prints
what changed. Review the diff and commit it with the header change (and the version bump).
"""
import difflib
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abi  # noqa: E402


def main():
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help")):
        print(__doc__)
        return 2
    build = sys.argv[1] if len(sys.argv) == 2 else os.path.join(abi.REPO, "build")
    lib = os.path.join(build, "libsparse.so")
    # The versioned file is the ninja target (libsparse.so is a symlink to it).
    target = [os.path.basename(os.path.realpath(lib))] if os.path.exists(lib) else []
    subprocess.run(["ninja", "-C", build] + target, check=True)
    new = abi.dump(lib)
    old = abi.read_abi_file() if os.path.exists(abi.ABI_FILE) else []
    with open(abi.ABI_FILE, "w", encoding="utf-8") as f:
        f.write("\n".join(abi.HEADER_COMMENT + new) + "\n")
    diff = list(difflib.unified_diff(old, new, "committed", "new", n=0, lineterm=""))
    print("\n".join(diff) if diff else "no change")
    print(f"wrote {os.path.relpath(abi.ABI_FILE)} ({len(new)} lines) from {lib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
