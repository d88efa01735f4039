#!/usr/bin/env bash
# Instruction counts (valgrind callgrind) of the same work under two builds, for comparisons that
# wall time cannot settle on a shared machine: counts repeat exactly for the same binary, inputs
# and environment, whatever else the machine runs.
#
#   benchmarks/instruction_counts.sh BEFORE_BUILD AFTER_BUILD
#
# Runs, one thread each: (1) capi/bindings/c/attention_example.c (strided fwd+bwd, n 2048, l 64)
# built once against the C ABI and run on each build's libsparse.so; (2) one bench-train step of
# cifar10-small (batch 1) with each build's sparse-repro. Prints the counts and the ratios.
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
sed 's/  settings.backend = SPARSE_BACKEND_CPU;/&\n  settings.num_threads = 1;/' \
  "$root/capi/bindings/c/attention_example.c" > "$work/attention1.c"
cc -O2 -std=c99 "$work/attention1.c" -I"$root/capi/include" -L"$after" -lsparse -lm \
  -o "$work/attention1"
count() {  # count LABEL command...
  local label=$1; shift
  OMP_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$work/$label.out" "$@" \
    > /dev/null 2> "$work/$label.err"
  grep -o 'Collected : [0-9]*' "$work/$label.err" | awk '{print $3}'
}
a1=$(LD_LIBRARY_PATH=$before count a1 "$work/attention1" 2048 64)
a2=$(LD_LIBRARY_PATH=$after count a2 "$work/attention1" 2048 64)
t1=$(count t1 "$before/benchmarks/sparse-repro" bench-train --preset cifar10-small --batch 1 \
  --steps 1 --warmup 0 --threads 1)
t2=$(count t2 "$after/benchmarks/sparse-repro" bench-train --preset cifar10-small --batch 1 \
  --steps 1 --warmup 0 --threads 1)
printf '| work | before | after | after / before |\n|---|---|---|---|\n'
printf '| attention fwd+bwd (strided, n 2048) | %s | %s | %.4f |\n' "$a1" "$a2" \
  "$(python3 -c "print($a2 / $a1)")"
printf '| one training step (cifar10-small) | %s | %s | %.4f |\n' "$t1" "$t2" \
  "$(python3 -c "print($t2 / $t1)")"
