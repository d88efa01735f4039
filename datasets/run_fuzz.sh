#!/usr/bin/env bash
# Builds a libFuzzer target (clang++ -fsanitize=fuzzer,address,undefined) for each dataset parser
# straight from the parser sources and runs each for a bounded time on a generated seed corpus.
#   datasets/run_fuzz.sh [BUILDDIR]      (work files go to BUILDDIR/datasets-fuzz)
# FUZZ_SECONDS (default 15) sets the time per target. Exits 0 with a SKIP message when clang or
# libFuzzer is missing (Debian: apt-get install clang libclang-rt-14-dev).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="${1:-build}"
[[ "$build" = /* ]] || build="$root/$build"
work="$build/datasets-fuzz"
seconds="${FUZZ_SECONDS:-15}"
mkdir -p "$work"

cxx=""
for c in clang++ clang++-14; do
  if command -v "$c" >/dev/null; then cxx="$c"; break; fi
done
if [[ -z "$cxx" ]]; then
  echo "SKIP datasets fuzzing: clang++ not found (apt-get install clang libclang-rt-14-dev)"
  exit 0
fi
printf '#include <cstdint>\n#include <cstddef>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' \
  > "$work/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer "$work/probe.cpp" -o "$work/probe" 2>"$work/probe.log"; then
  echo "SKIP datasets fuzzing: $cxx cannot link libFuzzer (apt-get install libclang-rt-14-dev):"
  cat "$work/probe.log"
  exit 0
fi

# The parsers' build configuration: zlib on, audio off (libsndfile's own parsers are not ours).
mkdir -p "$work/include"
cat > "$work/include/sparse_config.h" <<'CFG'
#pragma once
#define SPARSE_HAVE_ZLIB 1
#define SPARSE_HAVE_SNDFILE 0
#define SPARSE_HAVE_CUDA 0
CFG
flags=(-std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -I"$work/include" -I"$root" -I"$root/libsparse" -I"$root/capi/include")
sources=(io archive npy loader synthetic cifar10 text imagenet64)
start=$(date +%s)
objs=()
for s in "${sources[@]}"; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$here/$s.cpp" -o "$work/$s.o" &
  objs+=("$work/$s.o")
done
wait
python3 "$here/fuzz/make_seeds.py" "$work/seeds"

targets=(cifar10 zip npy imagenet64 text)
for t in "${targets[@]}"; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "$here/fuzz/fuzz_$t.cpp" "${objs[@]}" -lz -o "$work/fuzz_$t" &
done
wait
echo "fuzz targets built in $(( $(date +%s) - start )) s"

status=0
for t in "${targets[@]}"; do
  corpus="$work/corpus_$t"
  mkdir -p "$corpus"
  cp -n "$work/seeds/$t"/* "$corpus"/ 2>/dev/null || true
  echo "=== fuzz_$t for ${seconds} s"
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
       "$work/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
       -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix="$work/crash_${t}_" \
       "$corpus" >"$work/fuzz_$t.log" 2>&1; then
    echo "FAILED: fuzz_$t (log: $work/fuzz_$t.log)"
    tail -40 "$work/fuzz_$t.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$work/fuzz_$t.log" | tail -2
  fi
done
echo "datasets fuzzing finished in $(( $(date +%s) - start )) s"
exit $status
