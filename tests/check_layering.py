#!/usr/bin/env python3
"""Layering of the library's sources: every quoted #include is written from the repository root
(or names a public header "sparse/..." or the generated "sparse_config.h"), and libsparse/ never
includes reference_cpu/ (the engine reaches the CPU backend through make_cpu_backend() only).

Usage: check_layering.py SOURCE_ROOT. Exit status 1 with one line per violation."""
import os
import re
import sys

LIBRARY_DIRS = ["libsparse", "reference_cpu", "capi/src", "datasets"]
SUFFIXES = (".c", ".cpp", ".cc", ".h", ".hpp", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main() -> int:
    root = sys.argv[1]
    problems = []
    scanned = 0
    for top in LIBRARY_DIRS:
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if not name.endswith(SUFFIXES):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                scanned += 1
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for m in INCLUDE.finditer(text):
                    inc = m.group(1)
                    line = text.count("\n", 0, m.start()) + 1
                    where = f"{rel}:{line}: #include \"{inc}\""
                    if inc.startswith("sparse/") or inc == "sparse_config.h":
                        continue
                    if not os.path.isfile(os.path.join(root, inc)):
                        problems.append(f"{where}: not a path from the repository root")
                    elif rel.startswith("libsparse/") and inc.startswith("reference_cpu/"):
                        problems.append(f"{where}: libsparse/ must not include reference_cpu/ "
                                        "(use the backend interface and make_cpu_backend())")
    for p in problems:
        print(p)
    print(f"{scanned} files scanned, {len(problems)} layering violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
