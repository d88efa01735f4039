#!/usr/bin/env python3
"""Layering of the library's sources: every quoted #include is written from the repository root
(or names a public header "sparse/..." or a header the top-level meson.build generates, such as
"sparse_config.h"), and libsparse/ never
includes reference_cpu/ (the engine reaches the CPU backend through make_cpu_backend() only).

The driver (benchmarks/, sparse-repro) is a client of the C ABI: its sources include only the
public headers "sparse/*.h", its own headers (paths from its file's folder or from benchmarks/),
the headers it generates itself (the outputs named in benchmarks/meson.build) and system or
third-party headers; never a library source, its generated sparse_config.h or an internal header
through an include path (<backend.hpp>).

Usage: check_layering.py SOURCE_ROOT. Exit status 1 with one line per violation."""
import os
import re
import sys

LIBRARY_DIRS = ["libsparse", "reference_cpu", "capi/src", "datasets"]
SUFFIXES = (".c", ".cpp", ".cc", ".h", ".hpp", ".cu", ".cuh")
INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"', re.M)
ANY_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"]+)[>"]', re.M)
DRIVER_DIR = "benchmarks"


def sources(root, top):
    """(folder, path from the root, text) of every C/C++/CUDA source below root/top."""
    for dirpath, _, files in os.walk(os.path.join(root, top)):
        for name in sorted(files):
            if name.endswith(SUFFIXES):
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    yield dirpath, os.path.relpath(path, root), f.read()


def driver_problems(root):
    """Includes of the driver's sources that are not the public ABI, its own or third-party."""
    problems, scanned = [], 0
    driver = os.path.join(root, DRIVER_DIR)
    with open(os.path.join(driver, "meson.build"), encoding="utf-8") as f:
        generated = set(re.findall(r"output:\s*'([^']+\.h)'", f.read()))
    internal_names = set(library_generated(root))
    for top in LIBRARY_DIRS:
        for _, _, files in os.walk(os.path.join(root, top)):
            internal_names.update(n for n in files if n.endswith(SUFFIXES))
    for dirpath, rel, text in sources(root, DRIVER_DIR):
        scanned += 1
        for m in ANY_INCLUDE.finditer(text):
            quote, inc = m.groups()
            line = text.count("\n", 0, m.start()) + 1
            shown = f'"{inc}"' if quote == '"' else f"<{inc}>"
            where = f"{rel}:{line}: #include {shown}"
            public = inc.startswith("sparse/") and os.path.isfile(
                os.path.join(root, "capi", "include", inc))
            if public:
                continue
            if quote == '"':
                candidates = [os.path.join(dirpath, inc), os.path.join(driver, inc)]
                inside = os.path.realpath(driver) + os.sep
                if any(os.path.isfile(c) and os.path.realpath(c).startswith(inside)
                       for c in candidates):
                    continue
                if inc in generated:
                    continue
                problems.append(f"{where}: the driver includes only the public headers "
                                "sparse/*.h, its own headers and the ones it generates")
            elif (inc.split("/")[0] in LIBRARY_DIRS or inc.startswith("capi/")
                  or ("/" not in inc and inc in internal_names)):
                problems.append(f"{where}: an internal header of the library; the driver "
                                "uses the C ABI (sparse/*.h, sparse/experimental.h)")
    return problems, scanned


def library_generated(root):
    """The headers the top-level build generates for the library (sparse_config.h, the CUDA
    module's interface hash): included by bare name."""
    with open(os.path.join(root, "meson.build"), encoding="utf-8") as f:
        text = f.read()
    names = set(re.findall(r"output:\s*'([^']+\.h)'", text))
    return names | {"sparse_config.h"}


def main() -> int:
    root = sys.argv[1]
    problems = []
    scanned = 0
    generated = library_generated(root)
    for top in LIBRARY_DIRS:
        for _, rel, text in sources(root, top):
            scanned += 1
            for m in INCLUDE.finditer(text):
                inc = m.group(1)
                line = text.count("\n", 0, m.start()) + 1
                where = f"{rel}:{line}: #include \"{inc}\""
                if inc.startswith("sparse/") or inc in generated:
                    continue
                if not os.path.isfile(os.path.join(root, inc)):
                    problems.append(f"{where}: not a path from the repository root")
                elif rel.startswith("libsparse/") and inc.startswith("reference_cpu/"):
                    problems.append(f"{where}: libsparse/ must not include reference_cpu/ "
                                    "(use the backend interface and make_cpu_backend())")
    driver, driver_scanned = driver_problems(root)
    problems += driver
    scanned += driver_scanned
    for p in problems:
        print(p)
    print(f"{scanned} files scanned, {len(problems)} layering violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
