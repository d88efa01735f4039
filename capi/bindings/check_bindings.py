#!/usr/bin/env python3
"""Checks the Julia module and the Rust crate's raw declarations against the C headers and the
built library, without needing Julia or a Rust compiler.

usage: check_bindings.py <libsparse.so> [--lang julia|rust|all] [--cc CC]

Julia (capi/bindings/julia/Sparse.jl and test/runtests.jl): every `ccall((:sparse_x, lib), R,
(T1, ...), a1, ...)` names a function that is exported by the library and declared in a header,
with as many argument types as the C prototype has parameters, as many arguments as types, and
argument/return types compatible with the prototype (Cint for enums, Ptr/Ref for pointers, ...).
Rust (capi/bindings/rust/src/ffi.rs): the same for every `pub fn sparse_x(...)` in the extern
block. Both: every function of the headers the binding covers is bound, and every struct mirror
(`# C: name` above a Julia struct; `#[repr(C)] pub struct name` in Rust) has the compiled C
size, alignment, field names, offsets and sizes.
"""
import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "abi"))
import abi  # noqa: E402

JULIA_FILES = [os.path.join(HERE, "julia", "Sparse.jl"),
               os.path.join(HERE, "julia", "test", "runtests.jl")]
RUST_FFI = os.path.join(HERE, "rust", "src", "ffi.rs")
# Headers whose every function each binding must bind.
BOUND_HEADERS = {"julia": ("common.h", "context.h", "layout.h", "attention.h", "model.h",
                           "datasets.h"),
                 "rust": ("common.h", "context.h", "layout.h", "attention.h", "model.h",
                          "datasets.h")}

SIZES = {"i32": 4, "u32": 4, "f32": 4, "i64": 8, "u64": 8, "usize": 8, "f64": 8, "u8": 1,
         "char": 1, "ptr": 8}


# ------------------------------------------------------------------ C side

C_SCALARS = {"int": "i32", "int32_t": "i32", "uint32_t": "u32", "int64_t": "i64",
             "uint64_t": "u64", "size_t": "usize", "float": "f32", "double": "f64",
             "uint8_t": "u8", "char": "char", "void": "void"}


def c_canon(ctype, h):
    t = re.sub(r"\bconst\b", "", ctype).strip()
    if t.endswith("*"):
        return "ptr(" + c_canon(t[:-1], h) + ")"
    if t in C_SCALARS:
        return C_SCALARS[t]
    if t in h.enums:
        return "i32"
    if t in h.structs:
        return f"struct({t})"
    if t in h.opaque:
        return "opaque"
    raise ValueError(f"unknown C type {ctype!r}")


def compatible(binding, c):
    """Canonical binding type vs canonical C type."""
    if binding == c:
        return True
    if {binding, c} == {"u8", "char"}:
        return True
    if binding == "ptr(void)" and c == "ptr(opaque)":
        return True  # handles as void pointers
    bp, cp = binding.startswith("ptr("), c.startswith("ptr(")
    if bp and cp:
        return compatible(binding[4:-1], c[4:-1])
    return False


# ------------------------------------------------------------------ parsing helpers

def balanced(text, start):
    """Index just past the ')' matching the '(' at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "({[":
            depth += 1
        elif text[i] in ")}]":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced parentheses")


def split_top(text):
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    last = "".join(cur).strip()
    if last:
        parts.append(last)
    return parts


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


# ------------------------------------------------------------------ Julia

J_SCALARS = {"Cint": "i32", "Int32": "i32", "Cuint": "u32", "UInt32": "u32", "Int64": "i64",
             "Clonglong": "i64", "UInt64": "u64", "Culonglong": "u64", "Csize_t": "usize",
             "Cfloat": "f32", "Float32": "f32", "Cdouble": "f64", "Float64": "f64",
             "UInt8": "u8", "Cuchar": "u8", "Cchar": "char", "Int8": "char", "Cvoid": "void",
             "Cstring": "ptr(char)"}


def julia_canon(t, mirrors):
    t = t.strip()
    t = re.sub(r"^(Sparse|S)\.", "", t)
    m = re.match(r"^(Ptr|Ref)\{(.*)\}$", t)
    if m:
        return "ptr(" + julia_canon(m.group(2), mirrors) + ")"
    if t in J_SCALARS:
        return J_SCALARS[t]
    if t in mirrors:
        return f"struct({mirrors[t]})"
    raise ValueError(f"unknown Julia type {t!r}")


def julia_elem(t, mirrors):
    """(canonical element type, count) of a Julia field type."""
    m = re.match(r"^NTuple\{(\d+),\s*(.+)\}$", t.strip())
    if m:
        return julia_canon(m.group(2), mirrors), int(m.group(1))
    return julia_canon(t, mirrors), 1


def parse_julia_structs(text):
    """{julia name: (c name, [(field, type)])} for structs annotated '# C: name'."""
    out = {}
    for m in re.finditer(r"^# C: (\w+)\s*\nstruct (\w+)\s*\n(.*?)^end", text, re.M | re.S):
        fields = []
        for line in m.group(3).splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, typ = line.split("::", 1)
                fields.append((name.strip(), typ.strip()))
        out[m.group(2)] = (m.group(1), fields)
    return out


def parse_julia_ccalls(path, text):
    calls = []
    for m in re.finditer(r"\bccall\(", text):
        start = m.end() - 1
        end = balanced(text, start)
        args = split_top(text[start + 1:end - 1])
        where = f"{os.path.relpath(path)}:{line_of(text, m.start())}"
        fm = re.match(r"^\(\s*:(\w+)\s*,\s*[\w.]+\s*\)$", args[0]) if args else None
        if not fm or len(args) < 3:
            calls.append((where, None, None, None, None))
            continue
        types = args[2].strip()
        if not (types.startswith("(") and types.endswith(")")):
            calls.append((where, fm.group(1), args[1], None, None))
            continue
        calls.append((where, fm.group(1), args[1], split_top(types[1:-1]), len(args) - 3))
    return calls


def check_julia(h, exported, probe):
    problems, bound, ncalls = [], set(), 0
    texts = {p: open(p, encoding="utf-8").read() for p in JULIA_FILES if os.path.exists(p)}
    if JULIA_FILES[0] not in texts:
        return [f"{JULIA_FILES[0]} is missing"], 0
    structs = parse_julia_structs(texts[JULIA_FILES[0]])
    mirrors = {j: c for j, (c, _) in structs.items()}
    for path, text in texts.items():
        for where, name, ret, types, nargs in parse_julia_ccalls(path, text):
            ncalls += 1
            if name is None:
                problems.append(f"{where}: cannot parse this ccall (use the form "
                                "ccall((:sparse_x, libsparse), R, (T1, ...), a1, ...))")
                continue
            if types is None:
                problems.append(f"{where}: {name}: argument types must be a literal tuple")
                continue
            if name not in exported:
                problems.append(f"{where}: {name} is not exported by the library")
            if name not in h.functions:
                problems.append(f"{where}: {name} is declared in no header")
                continue
            bound.add(name)
            cret, cparams, pnames, _ = h.functions[name]
            if len(types) != len(cparams):
                problems.append(f"{where}: {name} takes {len(cparams)} arguments in C, the "
                                f"ccall declares {len(types)}")
            if nargs != len(types):
                problems.append(f"{where}: {name}: {len(types)} argument types but {nargs} "
                                "arguments passed")
            try:
                if not compatible(julia_canon(ret, mirrors), c_canon(cret, h)):
                    problems.append(f"{where}: {name} returns {cret} in C, ccall says {ret}")
                for i, (jt, ct) in enumerate(zip(types, cparams)):
                    if not compatible(julia_canon(jt, mirrors), c_canon(ct, h)):
                        problems.append(f"{where}: {name} argument {i + 1} ({pnames[i]}) is "
                                        f"{ct} in C, the ccall says {jt}")
            except ValueError as e:
                problems.append(f"{where}: {name}: {e}")
    problems += missing(h, bound, "julia", "Sparse.jl has no ccall of")
    for jname, (cname, fields) in structs.items():
        problems += check_layout(h, probe, cname, f"Sparse.jl struct {jname}",
                                 [(f, *julia_elem(t, mirrors)) for f, t in fields])
    for cname in h.structs:
        if h.origin[cname] in BOUND_HEADERS["julia"] and cname not in mirrors.values():
            problems.append(f"Sparse.jl has no struct mirror ('# C: {cname}') of {cname}")
    return problems, ncalls


# ------------------------------------------------------------------ Rust

R_SCALARS = {"c_int": "i32", "i32": "i32", "c_uint": "u32", "u32": "u32", "i64": "i64",
             "u64": "u64", "usize": "usize", "f32": "f32", "c_float": "f32", "f64": "f64",
             "c_double": "f64", "u8": "u8", "c_uchar": "u8", "c_char": "char", "i8": "char",
             "c_void": "void"}


def rust_canon(t, aliases, structs, opaque):
    t = t.strip()
    m = re.match(r"^\*(mut|const)\s+(.+)$", t)
    if m:
        return "ptr(" + rust_canon(m.group(2), aliases, structs, opaque) + ")"
    if t in aliases:
        return rust_canon(aliases[t], aliases, structs, opaque)
    if t in R_SCALARS:
        return R_SCALARS[t]
    if t in structs:
        return f"struct({t})"
    if t in opaque:
        return "opaque"
    raise ValueError(f"unknown Rust type {t!r}")


def check_rust(h, exported, probe):
    problems, bound = [], set()
    if not os.path.exists(RUST_FFI):
        return [f"{RUST_FFI} is missing"], 0
    text = re.sub(r"//[^\n]*", "", open(RUST_FFI, encoding="utf-8").read())
    aliases = dict(re.findall(r"pub type (\w+)\s*=\s*([\w:]+)\s*;", text))
    consts = {k: int(v) for k, v in re.findall(r"pub const (\w+)\s*:\s*usize\s*=\s*(\d+)\s*;",
                                               text)}
    structs, opaque = {}, set()
    for m in re.finditer(r"#\[repr\(C\)\][^\n]*\n(?:#\[[^\n]*\n)*pub struct (\w+)\s*\{(.*?)\}",
                         text, re.S):
        fields = [tuple(x.strip() for x in f.split(":", 1))
                  for f in split_top(m.group(2))]
        if all(f[0].startswith("_") for f in fields):
            opaque.add(m.group(1))
        else:
            structs[m.group(1)] = [(f[0].replace("pub ", "").strip(), f[1]) for f in fields]
    ext = re.search(r'extern "C"\s*\{', text)
    if not ext:
        return ["ffi.rs has no extern \"C\" block"], 0
    block = text[ext.end() - 1:balanced(text, ext.end() - 1)]
    nfns = 0
    for m in re.finditer(r"pub fn (\w+)\s*\(", block):
        nfns += 1
        name = m.group(1)
        end = balanced(block, m.end() - 1)
        params = split_top(block[m.end():end - 1])
        rm = re.match(r"\s*->\s*([^;]+);", block[end:])
        ret = rm.group(1).strip() if rm else "c_void"
        where = f"ffi.rs:{line_of(text, ext.end() + m.start())}"
        if name not in exported:
            problems.append(f"{where}: {name} is not exported by the library")
        if name not in h.functions:
            problems.append(f"{where}: {name} is declared in no header")
            continue
        bound.add(name)
        cret, cparams, pnames, _ = h.functions[name]
        if len(params) != len(cparams):
            problems.append(f"{where}: {name} takes {len(cparams)} arguments in C, ffi.rs "
                            f"declares {len(params)}")
        try:
            if not compatible(rust_canon(ret, aliases, structs, opaque), c_canon(cret, h)):
                problems.append(f"{where}: {name} returns {cret} in C, ffi.rs says {ret}")
            for i, (p, ct) in enumerate(zip(params, cparams)):
                rt = p.split(":", 1)[1]
                if not compatible(rust_canon(rt, aliases, structs, opaque), c_canon(ct, h)):
                    problems.append(f"{where}: {name} argument {i + 1} ({pnames[i]}) is {ct} in "
                                    f"C, ffi.rs says {rt.strip()}")
        except ValueError as e:
            problems.append(f"{where}: {name}: {e}")
    problems += missing(h, bound, "rust", "ffi.rs does not declare")

    def elem(t):
        m = re.match(r"^\[(.+);\s*(\w+)\]$", t.strip())
        if m:
            n = int(m.group(2)) if m.group(2).isdigit() else consts[m.group(2)]
            return rust_canon(m.group(1), aliases, structs, opaque), n
        return rust_canon(t, aliases, structs, opaque), 1
    for name, fields in structs.items():
        if name not in h.structs:
            problems.append(f"ffi.rs struct {name} is not a struct of the headers")
            continue
        problems += check_layout(h, probe, name, f"ffi.rs struct {name}",
                                 [(f, *elem(t)) for f, t in fields])
    for cname in h.structs:
        if h.origin[cname] in BOUND_HEADERS["rust"] and cname not in structs:
            problems.append(f"ffi.rs has no #[repr(C)] struct {cname}")
    return problems, nfns


# ------------------------------------------------------------------ shared

def missing(h, bound, lang, what):
    return [f"{what} {name} ({hdr})" for name, (_, _, _, hdr) in sorted(h.functions.items())
            if hdr in BOUND_HEADERS[lang] and name not in bound]


def check_layout(h, probe, cname, label, fields):
    """fields: [(name, canonical element type, count)] of a binding's mirror of C struct cname."""
    if cname not in h.structs:
        return [f"{label} mirrors {cname}, which is not a struct of the headers"]
    problems = []
    size, align, cfields = abi.layout_of(h, probe, cname)
    names = [f for f, _, _ in fields]
    if names != list(cfields):
        return [f"{label}: fields {names} but C {cname} has {list(cfields)}"]
    off, max_align = 0, 1
    for name, canon, count in fields:
        base = "ptr" if canon.startswith("ptr(") else canon
        if base not in SIZES:
            problems.append(f"{label}.{name}: unsupported field type {canon}")
            continue
        es = SIZES[base]
        off = (off + es - 1) // es * es
        max_align = max(max_align, es)
        coff, csize, ctype, carr = cfields[name]
        if (off, es * count) != (coff, csize):
            problems.append(f"{label}.{name}: offset {off} size {es * count}, C has offset {coff} "
                            f"size {csize}")
        if not compatible(canon, c_canon(ctype, h)):
            problems.append(f"{label}.{name}: element type {canon} vs C {ctype}")
        off = coff + csize  # continue from C's truth so one error does not cascade
    total = (off + max_align - 1) // max_align * max_align
    if (total, max_align) != (size, align):
        problems.append(f"{label}: size {total} align {max_align}, C {cname} has size {size} "
                        f"align {align}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("lib")
    ap.add_argument("--lang", choices=["julia", "rust", "all"], default="all")
    ap.add_argument("--cc", default=None)
    args = ap.parse_args()
    h = abi.parse_headers()
    probe = abi.probe(h, args.cc)
    exported = set(abi.exported_symbols(args.lib))
    failed = False
    for lang, fn in (("julia", check_julia), ("rust", check_rust)):
        if args.lang not in (lang, "all"):
            continue
        problems, count = fn(h, exported, probe)
        print(f"{lang}: {count} foreign calls/declarations checked against "
              f"{len(h.functions)} header prototypes and {len(exported)} exports")
        for p in problems:
            print("  FAIL " + p)
        failed |= bool(problems)
        if not problems:
            print(f"ok: the {lang} binding matches the headers and the library")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
