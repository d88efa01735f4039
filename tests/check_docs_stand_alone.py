#!/usr/bin/env python3
"""The repository's own text stands alone: no document, source file or script (outside results/,
whose committed tables the drivers-report test checks) points at the issue tracker for what it
means, or names a document that is not in the repository (a design brief kept beside it, say).

Checked: in Markdown documents every Markdown file named resolves from the document's folder, the
repository root or results/, except the tables the drivers write under results/ (the README lists
some before they exist); in other files every document named in capitals (README.md, the
convention for documents, as opposed to the tables the drivers write) resolves the same way.
Names built at run time ("/README.md" after a folder) and patterns (`*.md`) are not names.

Usage: check_docs_stand_alone.py SOURCE_ROOT. Exit 1 with one line per citation."""
import os
import re
import sys

root = os.path.abspath(sys.argv[1])
SUFFIXES = (".md", ".py", ".c", ".cpp", ".cc", ".h", ".hpp", ".cu", ".cuh", ".sh", ".build",
            ".txt", ".in", ".map", ".toml", ".json")
SKIP_DIRS = {"results", "subprojects", "__pycache__", "first-steps", "node_modules"}
MARKDOWN = re.compile(r"[A-Za-z0-9_./*-]+\.md\b")
TRACKER = re.compile(r"\bissues? #?[0-9]+\b", re.I)


def is_build_dir(path):
    return os.path.exists(os.path.join(path, "meson-private")) or \
        os.path.exists(os.path.join(path, "build.ninja"))


def files():
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and
                         not is_build_dir(os.path.join(dirpath, d)))
        for name in sorted(names):
            if name.endswith(SUFFIXES) or name in ("README", "meson_options.txt"):
                yield os.path.join(dirpath, name)


problems = []
for path in files():
    rel = os.path.relpath(path, root)
    try:
        text = open(path, encoding="utf-8").read()
    except UnicodeDecodeError:
        continue
    for number, line in enumerate(text.splitlines(), 1):
        for m in TRACKER.finditer(line):
            problems.append(f"{rel}:{number}: cites the issue tracker ({m.group(0)!r})")
        for name in set(MARKDOWN.findall(line)):
            base = name.split("/")[-1]
            if name.startswith("/") or "*" in name or base.startswith(("NAME.", "FILE.", "OUT.")):
                continue
            if rel.endswith(".md") and name.startswith("results/"):
                continue
            if not rel.endswith(".md") and not re.fullmatch(r"[A-Z_]+\.md", base):
                continue
            bases = (os.path.dirname(path), root, os.path.join(root, "results"))
            if not any(os.path.exists(os.path.join(b, name)) for b in bases):
                problems.append(f"{rel}:{number}: names {name}, which is not in the repository")
for p in problems:
    print(p)
if problems:
    sys.exit(1)
print("ok: no file names a document outside the repository or the issue tracker")
