#!/usr/bin/env python3
"""capi/fuzz/run_fuzz.sh compiles the library from its own list of sources (clang with libFuzzer,
outside Meson). The list must be Meson's core_sources (every `core_sources += files(...)` of the
meson.build files) with the fuzzer's stand-ins: capi/fuzz/op_check_stub.cpp for
libsparse/check/op_check.cpp. A source added to Meson and not to the list links in every build
but the fuzzer's, which CI finds only at its last stage.

usage: check_fuzz_sources.py SOURCE_ROOT"""
import os
import re
import sys

STAND_INS = {"libsparse/check/op_check.cpp": "capi/fuzz/op_check_stub.cpp"}


def meson_core_sources(root):
    found = set()
    for folder, _, names in os.walk(root):
        rel = os.path.relpath(folder, root)
        if rel.split(os.sep)[0] in (".git", "build") or rel.startswith("build"):
            continue
        if "meson.build" not in names:
            continue
        text = open(os.path.join(folder, "meson.build"), encoding="utf-8").read()
        for block in re.findall(r"core_sources\s*\+=\s*files\((.*?)\)", text, flags=re.S):
            for name in re.findall(r"'([^']+)'", block):
                found.add(os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/"))
    return found


def fuzz_sources(root):
    text = open(os.path.join(root, "capi", "fuzz", "run_fuzz.sh"), encoding="utf-8").read()
    m = re.search(r"^sources=\((.*?)^\)", text, flags=re.S | re.M)
    if not m:
        sys.exit("check_fuzz_sources: no sources=( ... ) list in capi/fuzz/run_fuzz.sh")
    return set(m.group(1).split())


def main():
    root = os.path.abspath(sys.argv[1])
    want = {STAND_INS.get(s, s) for s in meson_core_sources(root)}
    have = fuzz_sources(root)
    if not want:
        sys.exit("check_fuzz_sources: found no core_sources in the meson.build files")
    missing, extra = sorted(want - have), sorted(have - want)
    for s in missing:
        print(f"capi/fuzz/run_fuzz.sh: {s} is in Meson's core_sources but not in the fuzzer's list")
    for s in extra:
        print(f"capi/fuzz/run_fuzz.sh: {s} is in the fuzzer's list but not in Meson's core_sources")
    print(f"{len(want)} core sources, {len(missing)} missing from the fuzzer's list, {len(extra)} extra")
    return 1 if missing or extra else 0


if __name__ == "__main__":
    sys.exit(main())
