#!/usr/bin/env python3
"""The ABI of libsparse as plain text: exported symbols, function prototypes, struct layouts,
enum values and integer constants.

Used by capi/abi/check.py (compare the built library with the committed capi/abi/sparse.abi),
capi/abi/update.py (regenerate it deliberately) and the bindings checks (the Julia module, the Rust
crate and the Python module are compared with the prototypes and layouts parsed here).

The headers are parsed with a small parser that understands exactly the C subset the public
headers use (see STYLE: one declaration per statement, named parameters, typedef'd structs and
enums). Layouts (sizeof, alignment, offsetof) and enum/#define values are not guessed: they come
from a C program generated from the parsed declarations and compiled against the headers.
"""
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INCLUDE_DIR = os.path.join(REPO, "capi", "include")
HEADER_DIR = os.path.join(INCLUDE_DIR, "sparse")
ABI_FILE = os.path.join(HERE, "sparse.abi")
# Headers outside the stable ABI: their functions (all named sparse_experimental_*) are exported
# and must be declared, but they are not part of the snapshot and may change in any release.
EXPERIMENTAL_HEADERS = ("experimental.h",)
EXPERIMENTAL_PREFIX = "sparse_experimental_"


class ParseError(Exception):
    pass


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _norm_type(text):
    """'const  sparse_tensor *' -> 'const sparse_tensor*'."""
    text = re.sub(r"\s+", " ", text.strip())
    text = re.sub(r"\s*\*\s*", "*", text)
    text = re.sub(r"\*(?=\w)", "* ", text)  # 'char*const' -> 'char* const'
    return text


def _split_top(text, sep):
    """Splits at `sep` outside (), {} and []."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _declarator(decl):
    """'const int64_t* shape' -> ('const int64_t*', 'shape', None); 'int64_t s[8]' ->
    ('int64_t', 's', '8'); 'int (*cb)(void*, int)' -> ('int (*)(void*, int)', 'cb', None)."""
    decl = re.sub(r"\s+", " ", decl.strip())
    m = re.match(r"^(.*)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)$", decl)
    if m:  # function pointer
        args = ", ".join(_norm_type(_declarator(a)[0]) if a.strip() != "void" else "void"
                         for a in _split_top(m.group(3), ","))
        return f"{_norm_type(m.group(1))} (*)({args})", m.group(2), None
    m = re.match(r"^(.*?[\s\*])(\w+)\s*(?:\[\s*(\w*)\s*\])?$", decl)
    if not m or not m.group(1).strip():
        return _norm_type(decl), None, None
    return _norm_type(m.group(1)), m.group(2), m.group(3)


class Header:
    def __init__(self):
        self.functions = {}  # name -> (return type, [param types], [param names], header)
        self.structs = {}    # name -> [(field name, type, array length or None)]
        self.opaque = set()
        self.enums = {}      # name -> [constant names]
        self.defines = []    # integer #defines (names)
        self.origin = {}     # declaration name -> header file


def parse_headers(header_dir=HEADER_DIR, experimental=False):
    """Parses capi/include/sparse/*.h: the stable headers, and with experimental=True also the
    experimental ones (EXPERIMENTAL_HEADERS)."""
    h = Header()
    files = sorted(f for f in os.listdir(header_dir) if f.endswith(".h")
                   and (experimental or f not in EXPERIMENTAL_HEADERS))
    if not files:
        raise ParseError(f"no headers in {header_dir}")
    for fname in files:
        _parse_one(os.path.join(header_dir, fname), fname, h)
    return h


def _parse_one(path, fname, h):
    with open(path, encoding="utf-8") as f:
        text = _strip_comments(f.read())
    # Join continued preprocessor lines, then collect integer #defines and drop directives.
    text = re.sub(r"\\\n", " ", text)
    body = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            m = re.match(r"#\s*define\s+(SPARSE_\w+)\s+(.+)$", s)
            if m and m.group(1) != "SPARSE_API" and not m.group(1).endswith("_H"):
                h.defines.append(m.group(1))
                h.origin[m.group(1)] = fname
            continue
        body.append(line)
    text = "\n".join(body)
    text = re.sub(r'extern\s+"C"\s*\{', " ", text)  # only ever inside #ifdef __cplusplus
    # The only other top-level braces are the closing ones of extern "C" (directives removed
    # above leave an unmatched '}'): drop a '}' that closes nothing.
    out, depth = [], 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                continue
            depth -= 1
        out.append(ch)
    text = "".join(out)
    for stmt in _split_top(text, ";"):
        stmt = re.sub(r"\s+", " ", stmt).strip()
        if not stmt:
            continue
        m = re.match(r"^typedef (struct|enum) (\w+) \{(.*)\} (\w+)$", stmt)
        if m:
            kind, tag, inner, name = m.groups()
            if tag != name:
                raise ParseError(f"{fname}: typedef {kind} {tag} ... {name}: tag and name differ")
            h.origin[name] = fname
            if kind == "enum":
                consts = []
                for item in _split_top(inner, ","):
                    item = item.strip()
                    if item:
                        consts.append(item.split("=")[0].strip())
                h.enums[name] = consts
            else:
                fields = []
                for decl in _split_top(inner, ";"):
                    if not decl.strip():
                        continue
                    # (commas inside parentheses separate a function pointer's parameters)
                    if len(_split_top(decl, ",")) > 1:
                        raise ParseError(f"{fname}: one field per declaration please: {decl}")
                    ftype, fname_, arr = _declarator(decl)
                    if fname_ is None:
                        raise ParseError(f"{fname}: cannot parse field '{decl}' of {name}")
                    fields.append((fname_, ftype, arr))
                h.structs[name] = fields
            continue
        m = re.match(r"^typedef struct (\w+) (\w+)$", stmt)
        if m:
            h.opaque.add(m.group(2))
            h.origin[m.group(2)] = fname
            continue
        m = re.match(r"^SPARSE_API (.+?)\b(sparse_\w+) ?\((.*)\)$", stmt)
        if m:
            ret, name, params = m.groups()
            types, names = [], []
            if params.strip() not in ("void", ""):
                for p in _split_top(params, ","):
                    t, n, arr = _declarator(p)
                    if arr is not None:
                        t += "*"
                    types.append(t)
                    names.append(n)
            h.functions[name] = (_norm_type(ret), types, names, fname)
            h.origin[name] = fname
            continue
        raise ParseError(f"{fname}: unrecognised top-level statement: {stmt[:120]}")


# ------------------------------------------------------------------ compiled probe

def _probe_source(h):
    lines = ["#include <stddef.h>", "#include <stdio.h>"]
    lines += [f'#include "sparse/{f}"' for f in sorted(set(h.origin.values()))]
    lines.append("int main(void) {")
    for name in sorted(h.structs):
        lines.append(f'  printf("struct {name} %zu %zu\\n", sizeof({name}), _Alignof({name}));')
        for field, _, _ in h.structs[name]:
            lines.append(f'  printf("field {name} {field} %zu %zu\\n", offsetof({name}, {field}),'
                         f' sizeof((({name}*)0)->{field}));')
    for name in sorted(h.enums):
        lines.append(f'  printf("enum {name} %zu\\n", sizeof({name}));')
        for c in h.enums[name]:
            lines.append(f'  printf("const {name} {c} %lld\\n", (long long)({c}));')
    for d in sorted(h.defines):
        lines.append(f'  printf("define {d} %lld\\n", (long long)({d}));')
    lines.append("  return 0;\n}")
    return "\n".join(lines) + "\n"


def probe(h, cc=None):
    """Compiles and runs the layout probe. Returns {'struct': {name: (size, align)},
    'field': {(struct, field): (offset, size)}, 'enum': {name: size},
    'const': {(enum, name): value}, 'define': {name: value}}."""
    cc = cc or os.environ.get("CC") or "cc"
    cc_cmd = cc.split() if isinstance(cc, str) else list(cc)
    if not shutil.which(cc_cmd[0]):
        raise FileNotFoundError(f"C compiler '{cc_cmd[0]}' not found (set CC)")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "abi_probe.c")
        exe = os.path.join(tmp, "abi_probe")
        with open(src, "w", encoding="utf-8") as f:
            f.write(_probe_source(h))
        subprocess.run(cc_cmd + ["-std=c11", "-I", INCLUDE_DIR, src, "-o", exe], check=True)
        out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    r = {"struct": {}, "field": {}, "enum": {}, "const": {}, "define": {}}
    for line in out.splitlines():
        w = line.split()
        if w[0] == "struct":
            r["struct"][w[1]] = (int(w[2]), int(w[3]))
        elif w[0] == "field":
            r["field"][(w[1], w[2])] = (int(w[3]), int(w[4]))
        elif w[0] == "enum":
            r["enum"][w[1]] = int(w[2])
        elif w[0] == "const":
            r["const"][(w[1], w[2])] = int(w[3])
        elif w[0] == "define":
            r["define"][w[1]] = int(w[2])
    return r


# ------------------------------------------------------------------ the library

def exported_symbols(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True,
                         text=True).stdout
    return sorted({line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()})


def soname(lib):
    out = subprocess.run(["objdump", "-p", lib], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"SONAME\s+(\S+)", out)
    return m.group(1) if m else "(none)"


def platform_tag():
    return f"{platform.machine()} {platform.system().lower()} ptr{struct.calcsize('P') * 8}"


def dump(lib, cc=None, header_dir=HEADER_DIR):
    """The ABI as a list of text lines (the format of sparse.abi)."""
    h = parse_headers(header_dir)
    p = probe(h, cc)
    lines = [f"platform {platform_tag()}", f"soname {soname(lib)}"]
    lines += [f"symbol {s}" for s in exported_symbols(lib)
              if not s.startswith(EXPERIMENTAL_PREFIX)]
    for name in sorted(h.functions):
        ret, types, _, _ = h.functions[name]
        lines.append(f"function {name}({', '.join(types)}) -> {ret}")
    for name in sorted(h.opaque):
        lines.append(f"opaque {name}")
    for name in sorted(h.structs):
        size, align = p["struct"][name]
        lines.append(f"struct {name} size {size} align {align}")
        for field, ftype, arr in h.structs[name]:
            off, fsize = p["field"][(name, field)]
            decl = f"{ftype} {field}" + (f"[{arr}]" if arr is not None else "")
            lines.append(f"  field {off:4d} +{fsize:<4d} {decl}")
    for name in sorted(h.enums):
        lines.append(f"enum {name} size {p['enum'][name]}")
        for c in h.enums[name]:
            lines.append(f"  {c} = {p['const'][(name, c)]}")
    for d in sorted(h.defines):
        lines.append(f"define {d} = {p['define'][d]}")
    return lines


HEADER_COMMENT = [
    "# The ABI of libsparse: exported symbols, prototypes, struct layouts, enum values, constants.",
    "# Checked by capi/abi/check.py (meson test 'abi-guard'). Do not edit by hand: after a",
    "# deliberate API change run   python3 capi/abi/update.py <builddir>   and commit the diff",
    "# (added lines: bump SPARSE_API_VERSION_MINOR; changed or removed lines: bump MAJOR).",
]


def read_abi_file(path=ABI_FILE):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def layout_of(h, p, name):
    """(size, align, {field: (offset, size, type, array)}) of a struct, from a probe."""
    size, align = p["struct"][name]
    fields = {}
    for field, ftype, arr in h.structs[name]:
        off, fsize = p["field"][(name, field)]
        fields[field] = (off, fsize, ftype, arr)
    return size, align, fields


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: abi.py <libsparse.so>   (prints the ABI dump)")
    print("\n".join(dump(sys.argv[1])))
