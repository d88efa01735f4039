#!/usr/bin/env python3
"""Checks that ninja knows the headers of every CUDA object, so that an edit of a header alone
(attention_tc.cuh holds all of the tensor-core kernels) rebuilds the objects that include it.

Usage: cuda_header_deps.py NINJA BUILD_DIR
Every object compiled from a .cu file must list its headers in `ninja -t deps`, and the
tensor-core instance objects must list libsparse/cuda/attention_tc.cuh.
"""
import re
import subprocess
import sys


def main() -> int:
    ninja, build_dir = sys.argv[1], sys.argv[2]
    text = subprocess.run([ninja, "-C", build_dir, "-t", "deps"], check=True,
                          capture_output=True, text=True).stdout
    # Blocks: "<object>: #deps N, deps mtime ... (VALID)" followed by indented paths.
    blocks = re.split(r"^(?=\S)", text, flags=re.M)
    objects = {}
    for block in blocks:
        m = re.match(r"(\S+\.cu\.o): #deps (\d+)", block)
        if m:
            objects[m.group(1)] = block.split("\n")[1:]
    if not objects:
        print(f"no CUDA object in `ninja -C {build_dir} -t deps` (is the build complete?)")
        return 1
    bad = []
    for obj, paths in sorted(objects.items()):
        headers = [p.strip() for p in paths if p.strip() and not p.strip().endswith(".cu")]
        if not headers:
            bad.append(f"{obj}: ninja recorded no headers")
        elif "attention_tc_" in obj and not any(
                h.endswith("libsparse/cuda/attention_tc.cuh") for h in headers):
            bad.append(f"{obj}: libsparse/cuda/attention_tc.cuh is not among its "
                       f"{len(headers)} recorded headers")
    for line in bad:
        print(line)
    print(f"{len(objects)} CUDA objects, {len(bad)} without their headers")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
