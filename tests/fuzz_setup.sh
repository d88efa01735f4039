# Sourced by the fuzz scripts (datasets/run_fuzz.sh, capi/fuzz/run_fuzz.sh): the checks and the
# compiler they share.

# fuzz_time DEFAULT: checks FUZZ_SECONDS (DEFAULT when unset) and sets `seconds` and `limit`, the
# libFuzzer options that bound a run. libFuzzer reads -max_total_time with atoi, so "junk", ""
# and 0 would all mean "run forever": anything but a whole number is refused (exit 2), and 0
# runs the corpus once (-runs=0). FUZZ_SEED, when set, fixes libFuzzer's random seed (a whole
# number, at least 1): the run then tries the same inputs in the same order on every machine, a
# slower machine a prefix of a faster one's (CI sets it, so that a finding there can be replayed).
fuzz_time() {
  local seed="${FUZZ_SEED-}"
  if [[ -n "$seed" ]] && ! [[ "$seed" =~ ^[0-9]+$ && $((10#$seed)) -ge 1 ]]; then
    echo "$(basename "$0"): FUZZ_SEED must be a whole number of at least 1 (libFuzzer's random" \
      "seed), given \"$seed\"" >&2
    exit 2
  fi
  seconds="${FUZZ_SECONDS:-$1}"
  if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "$(basename "$0"): FUZZ_SECONDS must be a whole number of seconds (0: run the corpus" \
      "once), given \"$seconds\"" >&2
    exit 2
  fi
  seconds=$((10#$seconds))
  limit=(-max_total_time="$seconds")
  ((seconds > 0)) || limit=(-runs=0)
  [[ -z "$seed" ]] || limit+=(-seed="$((10#$seed))")
}

# fuzz_compiler WORK WHAT: sets `cxx` to a clang++ that links libFuzzer (a probe built in WORK),
# or says "SKIP WHAT: ..." with the Debian packages to install and exits 0.
fuzz_compiler() {
  local work=$1 what=$2 c
  cxx=""
  for c in clang++ clang++-14; do
    if command -v "$c" >/dev/null; then cxx="$c"; break; fi
  done
  if [[ -z "$cxx" ]]; then
    echo "SKIP $what: clang++ not found (apt-get install clang libclang-rt-14-dev)"
    exit 0
  fi
  printf '#include <cstdint>\n#include <cstddef>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' \
    > "$work/probe.cpp"
  if ! "$cxx" -fsanitize=fuzzer "$work/probe.cpp" -o "$work/probe" 2>"$work/probe.log"; then
    echo "SKIP $what: $cxx cannot link libFuzzer (apt-get install libclang-rt-14-dev):"
    cat "$work/probe.log"
    exit 0
  fi
}
