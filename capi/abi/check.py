#!/usr/bin/env python3
"""ABI guard: fails loudly when the built library's ABI differs from capi/abi/sparse.abi.

usage: check.py <libsparse.so> [--cc "cc"] [--abi capi/abi/sparse.abi]

Checks, in order:
  1. every function declared SPARSE_API in capi/include/sparse/*.h is exported, and every
     exported symbol is declared in a header (experimental.h included: its sparse_experimental_*
     functions are checked for this only, they are outside the snapshot);
  2. the soname's major version is SPARSE_API_VERSION_MAJOR;
  3. exported symbols, prototypes, struct sizes/alignments/field offsets, enum values and integer
     constants equal the committed list line for line (struct layouts only when the committed
     list was made on the same platform).
To accept a deliberate change: python3 capi/abi/update.py <builddir>, then commit sparse.abi.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import abi  # noqa: E402

LAYOUT_PREFIXES = ("struct ", "  field ", "enum ")


def contextual(lines):
    """Indented lines (fields, enum constants) prefixed with their struct or enum, so every line
    is unique and a difference names where it is."""
    out, owner = [], ""
    for line in lines:
        if line.startswith("  "):
            out.append(f"{owner}: {line.strip()}")
        else:
            owner = " ".join(line.split()[:2])
            out.append(line)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("lib")
    ap.add_argument("--cc", default=None, help="C compiler command (default: $CC or cc)")
    ap.add_argument("--abi", default=abi.ABI_FILE)
    args = ap.parse_args()

    failures = []
    h = abi.parse_headers(experimental=True)
    exported = set(abi.exported_symbols(args.lib))
    declared = set(h.functions)
    for name in sorted(declared - exported):
        failures.append(f"declared in {h.origin[name]} but not exported by the library: {name}")
    for name in sorted(exported - declared):
        failures.append(f"exported by the library but declared in no public header: {name}")

    current = abi.dump(args.lib, args.cc)
    so = abi.soname(args.lib)
    major = next(line for line in current if line.startswith("define SPARSE_API_VERSION_MAJOR"))
    if not so.endswith(".so." + major.split()[-1]):
        failures.append(f"soname {so} does not end in the API major version ({major})")

    committed = abi.read_abi_file(args.abi) if os.path.exists(args.abi) else []
    if not committed:
        print(f"ABI GUARD FAILED: no committed list in {args.abi}; "
              "create it with python3 capi/abi/update.py <builddir>")
        return 1
    same_platform = committed[:1] == current[:1]
    if not same_platform:
        print(f"note: {os.path.relpath(args.abi)} was made on '{committed[0]}', this is "
              f"'{current[0]}': struct layouts are not compared")

        def keep(lines):
            return [x for x in lines[1:] if not x.startswith(LAYOUT_PREFIXES)]
        cur_cmp, com_cmp = keep(current), keep(committed)
    else:
        cur_cmp, com_cmp = current, committed
    cur_cmp, com_cmp = contextual(cur_cmp), contextual(com_cmp)
    removed = [x for x in com_cmp if x not in set(cur_cmp)]
    added = [x for x in cur_cmp if x not in set(com_cmp)]
    order_changed = not removed and not added and cur_cmp != com_cmp

    for name in sorted(declared):
        experimental = h.origin[name] in abi.EXPERIMENTAL_HEADERS
        if experimental != name.startswith(abi.EXPERIMENTAL_PREFIX):
            failures.append(f"{name} (in {h.origin[name]}): functions of the experimental headers, "
                            f"and only they, are named {abi.EXPERIMENTAL_PREFIX}*")
    print(f"{args.lib}: {len(exported)} exported symbols, {len(declared)} declared functions, "
          f"{len(h.structs)} structs, {len(h.enums)} enums")
    if removed or added or order_changed:
        failures.append("the ABI differs from the committed list " + os.path.relpath(args.abi))
        if removed:
            print("\nIn the committed list but not in this build (removed or changed: an ABI "
                  "BREAK unless the committed list is stale; bump SPARSE_API_VERSION_MAJOR):")
            for x in removed:
                print("  - " + x)
        if added:
            print("\nIn this build but not in the committed list (added or changed; additions "
                  "alone are compatible: bump SPARSE_API_VERSION_MINOR):")
            for x in added:
                print("  + " + x)
        if order_changed:
            print("\nsame lines in a different order (fields or enum constants reordered)")
        print("\nIf the change is deliberate: python3 capi/abi/update.py <builddir> and commit "
              "capi/abi/sparse.abi.")
    if failures:
        print("\nABI GUARD FAILED:")
        for f in failures:
            print("  * " + f)
        return 1
    print("ok: the ABI matches " + os.path.relpath(args.abi))
    return 0


if __name__ == "__main__":
    sys.exit(main())
