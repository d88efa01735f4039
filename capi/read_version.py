#!/usr/bin/env python3
"""Prints MAJOR.MINOR.PATCH read from capi/include/sparse/version.h (used by meson.build)."""
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
parts = []
for name in ("MAJOR", "MINOR", "PATCH"):
    m = re.search(r"#define\s+SPARSE_API_VERSION_%s\s+(\d+)" % name, text)
    if not m:
        sys.exit("version.h: SPARSE_API_VERSION_%s not found" % name)
    parts.append(m.group(1))
print(".".join(parts))
