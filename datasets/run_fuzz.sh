#!/usr/bin/env bash
# Builds a libFuzzer target (clang++ -fsanitize=fuzzer,address,undefined) for each parser of the
# project straight from its sources (the dataset readers, the checkpoint reader, the audio path)
# and runs each for a bounded time on a generated seed corpus.
#   datasets/run_fuzz.sh [BUILDDIR]      (work files go to BUILDDIR/datasets-fuzz)
# FUZZ_SECONDS (default 15) sets the time per target (0: each corpus is run once); FUZZ_TARGETS
# (default: all) a space-separated subset (cifar10 zip npy imagenet64 text checkpoint audio).
# Exits 0 with a SKIP message when clang or libFuzzer is missing (Debian: apt-get install clang
# libclang-rt-14-dev).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="${1:-build}"
[[ "$build" = /* ]] || build="$root/$build"
work="$build/datasets-fuzz"
# shellcheck source=../tests/fuzz_setup.sh
source "$root/tests/fuzz_setup.sh"
fuzz_time 15
mkdir -p "$work"

fuzz_compiler "$work" "datasets fuzzing"

# The parsers' build configuration: zlib on, audio off except for the audio target (libsndfile's
# and libFLAC's own parsers are not instrumented: they are not ours).
mkdir -p "$work/include" "$work/include-audio"
cat > "$work/include/sparse_config.h" <<'CFG'
#pragma once
#define SPARSE_HAVE_ZLIB 1
#define SPARSE_HAVE_SNDFILE 0
#define SPARSE_HAVE_FLAC 0
#define SPARSE_HAVE_OGG 0
#define SPARSE_HAVE_CUDA 0
CFG
targets=(${FUZZ_TARGETS:-cifar10 zip npy imagenet64 text checkpoint audio})
have_audio=0
if pkg-config --exists sndfile samplerate; then have_audio=1; fi
have_flac=0
if [[ $have_audio == 1 ]] && pkg-config --exists flac; then have_flac=1; fi
have_ogg=0
if [[ $have_audio == 1 ]] && pkg-config --exists ogg; then have_ogg=1; fi
sed -e "s/SNDFILE 0/SNDFILE $have_audio/" -e "s/FLAC 0/FLAC $have_flac/" -e "s/OGG 0/OGG $have_ogg/" \
  "$work/include/sparse_config.h" > "$work/include-audio/sparse_config.h"
base=(-std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined
      -I"$root" -I"$root/libsparse" -I"$root/capi/include" -I"$root/reference_cpu"
      $(pkg-config --cflags-only-I eigen3 2>/dev/null))
flags=(-I"$work/include" "${base[@]}")
sources=(io archive npy loader synthetic cifar10 text imagenet64)
start=$(date +%s)
objs=()
for s in "${sources[@]}"; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$here/$s.cpp" -o "$work/$s.o" &
  objs+=("$work/$s.o")
done
# The library files the readers use (inputs opened as regular files only; memory bounds).
for s in file_io resources; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/libsparse/$s.cpp" -o "$work/$s.o" &
  objs+=("$work/$s.o")
done
# The checkpoint reader and the model configuration it validates.
for s in checkpoint_format config; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/libsparse/model/$s.cpp" \
    -o "$work/model_$s.o" &
done
"$cxx" -I"$work/include-audio" "${base[@]}" -fsanitize=fuzzer-no-link -c "$here/audio.cpp" \
  -o "$work/audio.o" &
wait
python3 "$here/fuzz/make_seeds.py" "$work/seeds"

audio_libs=()
if [[ $have_audio == 1 ]]; then
  audio_libs=($(pkg-config --libs sndfile samplerate))
  if [[ $have_flac == 1 ]]; then audio_libs+=($(pkg-config --libs flac)); fi
  if [[ $have_ogg == 1 ]]; then audio_libs+=($(pkg-config --libs ogg)); fi
  mkdir -p "$work/seeds/audio"
  "$cxx" -std=c++17 -O1 "$here/fuzz/make_audio_seeds.cpp" $(pkg-config --libs sndfile) \
    -o "$work/make_audio_seeds" && "$work/make_audio_seeds" "$work/seeds/audio"
fi
# Checkpoint seeds are written by the library itself, when BUILDDIR holds a built libsparse.
mkdir -p "$work/seeds/checkpoint"
if [[ -f "$build/libsparse.so" ]]; then
  cc -std=c99 "$here/fuzz/make_checkpoint_seed.c" -I"$root/capi/include" -L"$build" -lsparse \
    -Wl,-rpath,"$build" -o "$work/make_checkpoint_seed" &&
    "$work/make_checkpoint_seed" "$work/seeds/checkpoint" ||
    echo "warning: no checkpoint seeds (make_checkpoint_seed failed)"
else
  echo "note: $build/libsparse.so not found; fuzz_checkpoint starts without seed checkpoints"
fi
for t in "${targets[@]}"; do
  case "$t" in
    checkpoint) extra=("$work/model_checkpoint_format.o" "$work/model_config.o") ;;
    audio)
      if [[ $have_audio == 0 ]]; then
        echo "SKIP fuzz_audio: libsndfile/libsamplerate not found"
        continue
      fi
      extra=("$work/audio.o" "${audio_libs[@]}") ;;
    *) extra=() ;;
  esac
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "$here/fuzz/fuzz_$t.cpp" "${objs[@]}" "${extra[@]}" -lz \
    -o "$work/fuzz_$t" &
done
wait
echo "fuzz targets built in $(( $(date +%s) - start )) s"
status=0
for t in "${targets[@]}"; do
  if [[ ! -x "$work/fuzz_$t" && ! ( $t == audio && $have_audio == 0 ) ]]; then
    echo "FAILED: fuzz_$t did not build"
    status=1
  fi
done

for t in "${targets[@]}"; do
  [[ -x "$work/fuzz_$t" ]] || continue
  corpus="$work/corpus_$t"
  mkdir -p "$corpus"
  cp -n "$work/seeds/$t"/* "$corpus"/ 2>/dev/null || true
  # Inputs that once crashed a target stay in its corpus as regression seeds.
  cp -n "$here/fuzz/regressions/$t"/* "$corpus"/ 2>/dev/null || true
  echo "=== fuzz_$t for ${seconds} s"
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
       LSAN_OPTIONS=suppressions="$here/fuzz/lsan.supp" \
       "$work/fuzz_$t" "${limit[@]}" -max_len=65536 -rss_limit_mb=2048 \
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
