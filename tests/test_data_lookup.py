#!/usr/bin/env python3
"""The real-data samples folder of `sparse-repro` does not depend on the current folder, and a
missing sample is said on the console and in the table.

- run from an unrelated folder with no SPARSE_DATA_DIR, `table1 --quick` uses the Enwik8 sample
  of <source root>/../shared/data (the same file, checked with os.path.samefile) when it is there,
  and reports it missing otherwise;
- --data-dir wins over SPARSE_DATA_DIR;
- SPARSE_DATA_DIR naming an empty folder: `table1 --quick` and `main --quick` say on stderr that
  the sample (its path) is not there and which option names the folder, and write the same into
  dense_vs_sparse.md / main_job.md and their JSON.

usage: test_data_lookup.py <sparse-repro> <source root>"""
import json
import os
import subprocess
import sys
import tempfile

exe, root = (os.path.abspath(a) for a in sys.argv[1:3])
sample = os.path.join("enwik8", "enwik8-head-100000")
shipped = os.path.join(root, "..", "shared", "data", sample)


def run(args, cwd, env):
    p = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("sparse-repro %s failed (%d):\n%s" % (" ".join(args), p.returncode, p.stderr))
    return p


def table1(out, cwd, env, *extra):
    p = run(["table1", "--quick", "--threads", "1", "--out", out, *extra], cwd, env)
    return p, json.load(open(os.path.join(out, "dense_vs_sparse.json"))), \
        open(os.path.join(out, "dense_vs_sparse.md")).read()


def text_path(table):
    names = [d["data"] for d in table["datasets"] if d["data"].startswith("text:")]
    return names[0][len("text:"):] if names else None


def check_missing(p, md, table, key, missing):
    assert "the Enwik8 sample %s is not there" % missing in p.stderr, p.stderr
    assert "--data-dir DIR or SPARSE_DATA_DIR" in p.stderr, p.stderr
    assert table[key] == missing, table
    assert "Not run: the sample `%s` was not found" % missing in md, md


base_env = {k: v for k, v in os.environ.items() if k != "SPARSE_DATA_DIR"}
with tempfile.TemporaryDirectory() as tmp:
    elsewhere = os.path.join(tmp, "elsewhere")  # no ../shared/data beside it
    os.makedirs(elsewhere)

    # 1. From an unrelated folder, without SPARSE_DATA_DIR.
    out = os.path.join(tmp, "t1")
    p, table, md = table1(out, elsewhere, base_env)
    if os.path.exists(shipped):
        path = text_path(table)
        assert path is not None, "the Enwik8 sample was not found from %s:\n%s" % (elsewhere,
                                                                                  p.stderr)
        assert os.path.samefile(os.path.join(elsewhere, path), shipped), (path, shipped)
        assert "enwik8_sample_missing" not in table, table
        print("ok: the shipped sample is found from another folder:", path)
    else:
        assert text_path(table) is None and "is not there" in p.stderr, p.stderr
        print("note: no shipped samples beside the source tree; only the missing case is checked")

    # 2. SPARSE_DATA_DIR naming a folder without the sample: said on the console and in the
    # table, by table1 and by the main job.
    empty = os.path.join(tmp, "empty-data")
    os.makedirs(empty)
    env = dict(base_env, SPARSE_DATA_DIR=empty)
    missing = os.path.join(empty, sample)
    out = os.path.join(tmp, "t2")
    p, table, md = table1(out, elsewhere, env)
    assert text_path(table) is None, table
    check_missing(p, md, table, "enwik8_sample_missing", missing)
    # The report renders the same from the JSON.
    os.remove(os.path.join(out, "dense_vs_sparse.md"))
    run(["report", "--dir", out, "--no-plots"], elsewhere, env)
    assert open(os.path.join(out, "dense_vs_sparse.md")).read() == md
    # Under CI's sanitizer build (SPARSE_CI_SANITIZED=1, .ci/run) the main job's run and case 3
    # are left out: they take minutes there, main-job-quick runs the main job under the
    # sanitizers, and case 3 goes through the lookup code that cases 1 and 2 have just run.
    sanitized = os.environ.get("SPARSE_CI_SANITIZED") == "1"
    if not sanitized:
        out = os.path.join(tmp, "main")
        p = run(["main", "--quick", "--threads", "1", "--out", out], elsewhere, env)
        check_missing(p, open(os.path.join(out, "main_job.md")).read(),
                      json.load(open(os.path.join(out, "main_job.json"))), "enwik8_sample_missing",
                      missing)
    print("ok: a missing sample is reported on the console and in the tables")

    # 3. --data-dir wins over SPARSE_DATA_DIR.
    if os.path.exists(shipped) and not sanitized:
        out = os.path.join(tmp, "t3")
        data = os.path.dirname(os.path.dirname(shipped))
        p, table, md = table1(out, elsewhere, env, "--data-dir", data)
        assert text_path(table) is not None and os.path.samefile(text_path(table), shipped), table
        assert "is not there" not in p.stderr, p.stderr
        print("ok: --data-dir overrides SPARSE_DATA_DIR")
