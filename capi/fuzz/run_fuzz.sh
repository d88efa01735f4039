#!/usr/bin/env bash
# Builds the libFuzzer target of the public C ABI (clang++ -fsanitize=fuzzer,address,undefined)
# with the whole CPU library compiled from its sources (no CUDA: the stub backend), and runs it
# for a bounded time on a seed corpus plus the inputs of capi/fuzz/regressions (each once crashed
# or broke an invariant of the target).
#   capi/fuzz/run_fuzz.sh [BUILDDIR]      (work files go to BUILDDIR/capi-fuzz)
# FUZZ_SECONDS (default 30) sets the fuzzing time (0: the corpus is run once, no new inputs);
# FUZZ_JOBS (default: all cores) the parallel compilations. Exits 0 with a SKIP message when
# clang or libFuzzer is missing (Debian: apt-get install clang libclang-rt-14-dev). Uses ccache
# when it is installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-build}"
[[ "$build" = /* ]] || build="$root/$build"
work="$build/capi-fuzz"
jobs="${FUZZ_JOBS:-$(nproc)}"
if ! [[ "$jobs" =~ ^[0-9]+$ ]] || ((10#$jobs < 1)); then
  echo "run_fuzz.sh: FUZZ_JOBS must be a whole number of parallel compilations (at least 1)," \
    "given \"$jobs\"" >&2
  exit 2
fi
# shellcheck source=../../tests/fuzz_setup.sh
source "$root/tests/fuzz_setup.sh"
fuzz_time 30
mkdir -p "$work/obj" "$work/include"

fuzz_compiler "$work" "C ABI fuzzing"
launcher=()
if command -v ccache >/dev/null; then launcher=(ccache); fi

# The library as a CPU-only build without OpenMP (single-threaded kernels: deterministic runs) and
# without libsndfile (audio files are the datasets fuzzers' business).
cat > "$work/include/sparse_config.h" <<'CFG'
#pragma once
#define SPARSE_HAVE_CUDA 0
#define SPARSE_HAVE_MPI 0
#define SPARSE_HAVE_NCCL 0
#define SPARSE_HAVE_OPENMP 0
#define SPARSE_HAVE_SNDFILE 0
#define SPARSE_HAVE_ZLIB 1
#define SPARSE_HAVE_FLAC 0
#define SPARSE_HAVE_OGG 0
#define SPARSE_VERSION_STRING "fuzz"
#define SPARSE_BUILD_INFO "fuzz build (clang, address+undefined+fuzzer)"
CFG
flags=(-std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -DSPARSE_BUILDING_LIBRARY -I"$work/include" -I"$root" -I"$root/libsparse"
       -I"$root/capi/include" -I"$root/reference_cpu"
       $(pkg-config --cflags-only-I eigen3 2>/dev/null | sed 's/-I/-isystem /g'))
# The core library's sources (meson's core_sources without the CUDA module loader).
sources=(
  capi/src/core.cpp capi/src/context.cpp capi/src/layout.cpp capi/src/attention.cpp
  capi/src/model.cpp capi/src/datasets.cpp capi/src/experimental.cpp
  libsparse/backend.cpp libsparse/tensor.cpp libsparse/cuda_stub.cpp libsparse/layout.cpp
  libsparse/file_io.cpp libsparse/resources.cpp libsparse/threads.cpp
  libsparse/parallel/reducer.cpp capi/fuzz/op_check_stub.cpp
  libsparse/model/config.cpp libsparse/model/transformer.cpp libsparse/model/layer.cpp
  libsparse/model/decoding.cpp libsparse/model/layouts.cpp libsparse/model/trainer.cpp
  libsparse/model/checkpoint.cpp libsparse/model/checkpoint_format.cpp libsparse/model/op_profile.cpp
  reference_cpu/cpu_backend.cpp reference_cpu/attention_cpu.cpp reference_cpu/ops/ops.cpp
  datasets/io.cpp datasets/archive.cpp datasets/npy.cpp datasets/loader.cpp
  datasets/synthetic.cpp datasets/cifar10.cpp datasets/text.cpp datasets/imagenet64.cpp
  datasets/audio.cpp
)
start=$(date +%s)
objs=()
for s in "${sources[@]}"; do objs+=("$work/obj/${s//\//_}.o"); done
export cxx work root
printf '%s\n' "${sources[@]}" |
  xargs -P "$jobs" -I{} bash -c 'src="$1"; shift; o="$work/obj/${src//\//_}.o";
    "$@" -fsanitize=fuzzer-no-link -c "$root/$src" -o "$o" || { echo "FAILED: $src"; exit 255; }' \
    _ {} "${launcher[@]}" "$cxx" "${flags[@]}"
"${launcher[@]}" "$cxx" "${flags[@]}" -fsanitize=fuzzer -c "$here/fuzz_capi.cpp" \
  -o "$work/obj/fuzz_capi.o"
# The calls that pass enums by value go through C, where any int is a valid argument.
"${launcher[@]}" "${cxx/clang++/clang}" -std=c99 -O1 -g -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined -I"$root/capi/include" -c "$here/enum_shim.c" \
  -o "$work/obj/enum_shim.o"
"$cxx" "${flags[@]}" -fsanitize=fuzzer "$work/obj/fuzz_capi.o" "$work/obj/enum_shim.o" "${objs[@]}" \
  -lz -lpthread -ldl \
  -o "$work/fuzz_capi"
echo "fuzz_capi built in $(( $(date +%s) - start )) s"

corpus="$work/corpus"
mkdir -p "$corpus"
python3 "$here/make_seeds.py" "$corpus"
# Inputs that once crashed the target stay in its corpus as regression seeds.
cp -n "$here/regressions"/* "$corpus"/ 2>/dev/null || true
echo "=== fuzz_capi for ${seconds} s"
status=0
if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
     "$work/fuzz_capi" "${limit[@]}" -max_len=4096 -rss_limit_mb=2048 \
     -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix="$work/crash_" \
     "$corpus" >"$work/fuzz_capi.log" 2>&1; then
  echo "FAILED: fuzz_capi (log: $work/fuzz_capi.log)"
  tail -40 "$work/fuzz_capi.log"
  status=1
else
  grep -E "stat::number_of_executed_units|cov:" "$work/fuzz_capi.log" | tail -2
fi
echo "C ABI fuzzing finished in $(( $(date +%s) - start )) s"
exit $status
