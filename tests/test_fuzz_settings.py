#!/usr/bin/env python3
"""The fuzz scripts (capi/fuzz/run_fuzz.sh, datasets/run_fuzz.sh) refuse an FUZZ_SECONDS or
FUZZ_JOBS that is not a whole number, before building anything: libFuzzer reads -max_total_time
with atoi, so "junk" or "-3" meant 0, which is no time limit at all (the CI step never ended)."""
import os
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = [os.path.join(ROOT, "capi", "fuzz", "run_fuzz.sh"),
           os.path.join(ROOT, "datasets", "run_fuzz.sh")]


def run(script, build, **env):
    e = dict(os.environ, **env)
    # Run from another folder: the scripts find the sources from their own path. Its own session,
    # so that a script that went on to build is stopped with all its compilers.
    p = subprocess.Popen(["bash", script, build], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=build, start_new_session=True)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def main():
    with tempfile.TemporaryDirectory() as build:
        cases = [(s, {"FUZZ_SECONDS": v}, "FUZZ_SECONDS") for s in SCRIPTS
                 for v in ("junk", "-3", "1.5", "0x10", "1 2")]
        cases.append((SCRIPTS[0], {"FUZZ_JOBS": "0"}, "FUZZ_JOBS"))
        cases.append((SCRIPTS[0], {"FUZZ_JOBS": "many"}, "FUZZ_JOBS"))
        for script, env, named in cases:
            r = run(script, build, **env)
            assert r is not None, f"{script} with {env} did not stop (built and fuzzed instead)"
            assert r.returncode == 2 and named in r.stderr and \
                f'given "{list(env.values())[0]}"' in r.stderr, (script, env, r.returncode,
                                                              r.stdout[-400:], r.stderr[-400:])
            assert not os.path.exists(os.path.join(build, "capi-fuzz", "obj")), \
                "the fuzz target was being built"
    print("ok: fuzz scripts refuse unreadable FUZZ_SECONDS and FUZZ_JOBS")


if __name__ == "__main__":
    sys.exit(main())
