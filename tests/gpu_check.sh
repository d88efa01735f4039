#!/usr/bin/env bash
# The first GPU run in one device-tool call: the CUDA kernel checks against the CPU reference,
# the model's operations and 10 training steps on CUDA against the CPU, the same steps in bf16
# and fp16 against fp32 and a one-rank NCCL run against no reducer (tests/gpu_model_check.sh),
# compute-sanitizer, and the fp32/bf16/fp16 benchmarks, with every log and table packed into one
# archive that comes back even when a step hangs or the command is cut short.
#
# 1. Here (no GPU needed), once per commit:
#      tests/gpu_check.sh pack
#    builds build-gpu-pack/ (-Dcuda=enabled -Dgpu_arch=90 -Dnative=false) and copies the two CUDA
#    test programs, sparse-repro, libsparse.so.0, the CUDA backend module libsparse_cuda.so (next
#    to the library, where it loads it from), the NCCL reducer module (next to sparse-repro) and
#    the non-system shared libraries they need into .gpu-pack/ (git-ignored, a few MiB). The GPU machine has CUDA (runtime, cuBLAS,
#    compute-sanitizer) and PyTorch, but no Eigen, doctest, CLI11, nlohmann-json or libsndfile:
#    nothing is built there.
# 2. The device tool, first thing in a session that has a GPU (about 7 minutes):
#      run(command="bash tests/gpu_check.sh run", carry=[".gpu-pack"], timeout_s=480)
#    -> $OUT/gpu_check.tar.gz (every log, table and the provenance) and
#       $OUT/gpu_check_summary.txt (one line per step, also printed last).
# 3. Optional, at once (the machine stays warm only 30 s after a call; about 4 minutes):
#      run(command="bash tests/gpu_check.sh peers", carry=[".gpu-pack"], timeout_s=270)
#    -> $OUT/gpu_peers.tar.gz: the PyTorch operator's tests on CUDA tensors (torch_operator), then
#       libsparse vs PyTorch SDPA (flash, dense causal) and FlexAttention
#       with the same block mask (benchmarks/peers/gpu_attention_peers.py), then training steps
#       of imagenet64-small: `sparse-repro bench-train --backend cuda --dtype bf16` against the
#       same model in PyTorch, bf16 autocast and FlexAttention with the same block mask, tokens/s
#       and peak memory with their ratios (benchmarks/peers/gpu_train_peers.py, GPU_TRAIN_PEERS_S
#       = 100 s of the budget), then the paper's CIFAR-10 preset on CUDA in bf16, 3 steps of 4
#       sequences: `sparse-repro presets`, the full run's GPU-hours (the last GPU_PRESETS_S = 35 s),
#       after the same preset's step profiled per operation (SPARSE_PROFILE_OPS, GPU_PROFILE_S =
#       30 s: profile_cifar10.jsonl).
# 2+3 in one call (saves a machine start; about 4-6 minutes):
#      run(command="bash tests/gpu_check.sh all", carry=[".gpu-pack"], timeout_s=560)
# Short of device time (under about 5 minutes left, machine start included):
#      run(command="bash tests/gpu_check.sh quick", carry=[".gpu-pack"], timeout_s=175)
#    -> $OUT/gpu_quick.tar.gz: the kernel checks, memcheck, both forward kernels timed, the
#       forwards against SDPA and FlexAttention, the model's steps, racecheck (run_quick below).
# 4. A follow-up (one test case, a sanitizer tool) in the environment `run` sets up:
#      run(command="bash tests/gpu_check.sh exec .gpu-pack/tests/test_cuda_attention -tc='*x*'", ...)
# Unpack with `tar -xzf gpu_check.tar.gz` (a folder gpu_check/ with steps.tsv, provenance.txt,
# one log per step and the benchmark tables).
#
# `run` gives every step its own `timeout` inside an overall budget (GPU_CHECK_BUDGET seconds,
# default 400; peers: GPU_PEERS_BUDGET, default 230): a step that fails or times out does not
# stop the next, and a step that no longer fits is recorded as skipped. The archive is rewritten
# after every step and once more from the exit trap, so a timeout still returns what was done.
# SPARSE_REQUIRE_GPU=1 is set (unless given otherwise): "no CUDA device" is then a test failure,
# not a skip (exit 77).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD
pack_dir=.gpu-pack
pack_build=build-gpu-pack

# ------------------------------------------------------------------ pack (development machine)

# Shared libraries the GPU machine provides itself (glibc, the C++ runtime, CUDA's own).
is_system_lib() {
  case $1 in
    linux-vdso.so* | ld-linux* | libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | \
      libstdc++.so* | libgcc_s.so* | libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | \
      libnccl.so*)  # NCCL (200+ MiB): PyTorch's nvidia-nccl wheel, or the stub below
      return 0 ;;
  esac
  return 1
}

pack() {
  export PATH=/usr/local/cuda/bin:$PATH
  local t0=$SECONDS
  if [[ ! -f $pack_build/build.ninja ]]; then
    meson setup "$pack_build" -Dcuda=enabled -Dgpu_arch=90 -Dnative=false > /dev/null ||
      { echo "pack: meson setup $pack_build failed" >&2; exit 1; }
  fi
  grep -q "cuda on (sm_90)" "$pack_build/sparse_config.h" ||
    { echo "pack: $pack_build is not a CUDA build for sm_90 (see $pack_build/sparse_config.h)" >&2; exit 1; }
  local targets=(tests/test_cuda_backend tests/test_cuda_attention benchmarks/sparse-repro)
  # The modules libsparse.so and sparse-repro load with dlopen, each from its own folder.
  local modules=(libsparse_cuda.so benchmarks/libsparse_repro_nccl.so)
  ninja -C "$pack_build" -j"${PACK_JOBS:-2}" "${targets[@]}" "${modules[@]}" ||
    { echo "pack: build failed" >&2; exit 1; }
  # Every CUDA object must know its headers, else an edit of a header alone (attention_tc.cuh)
  # leaves stale kernels in the pack: the first H200 run (2026-11-30) ran tensor-core objects
  # compiled before a fix to that header.
  python3 tests/cuda_header_deps.py "$(command -v ninja)" "$pack_build" > /dev/null ||
    { python3 tests/cuda_header_deps.py "$(command -v ninja)" "$pack_build" >&2;
      echo "pack: ninja does not track the CUDA objects' headers in $pack_build (rm -rf it)" >&2; exit 1; }
  rm -rf "$pack_dir"
  mkdir -p "$pack_dir/tests" "$pack_dir/benchmarks" "$pack_dir/lib"
  local t
  for t in "${targets[@]}" "${modules[@]}"; do cp "$pack_build/$t" "$pack_dir/$t"; done
  # One real file under the soname (links do not come back from the GPU machine, and the
  # binaries' RUNPATH is $ORIGIN/..).
  cp -L "$pack_build"/libsparse.so.[0-9] "$pack_dir/"
  # The non-system libraries the binaries load (OpenMP, libsndfile and its codecs, zlib, ...);
  # `run` links only those the GPU machine lacks into its library path.
  local libs
  libs=$(for t in "${targets[@]}" "${modules[@]}" libsparse.so.[0-9]; do ldd "$pack_build"/$t; done |
         awk '$2 == "=>" && $3 ~ /^\// {print $1 " " $3}' | sort -u)
  while read -r name path; do
    [[ -n $name ]] || continue
    [[ $name == libsparse.so* ]] && continue
    is_system_lib "$name" && continue
    cp -L "$path" "$pack_dir/lib/$name"
  done <<< "$libs"
  # sparse-repro's NCCL module links NCCL (SPARSE_REDUCER=nccl); where the GPU machine lacks
  # libnccl.so.2, `run` puts this stub on the library path, so the NCCL step fails with the
  # stub's message rather than a missing library.
  mkdir -p "$pack_dir/nccl-stub"
  gcc -shared -fPIC -O2 -Wall -Wextra -Werror -I/usr/local/cuda/include \
    -Wl,-soname,libnccl.so.2 -o "$pack_dir/nccl-stub/libnccl.so.2" tests/gpu_nccl_stub.c ||
    { echo "pack: building the NCCL stub failed" >&2; exit 1; }
  {
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!.gpu-pack' 2>/dev/null || echo ' (uncommitted changes)')"
    echo "packed $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -srm), $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')"
    echo "build $pack_build: meson setup -Dcuda=enabled -Dgpu_arch=90 -Dnative=false"
    echo "nvcc $(nvcc --version | sed -n 's/.*release //p')"
    echo "library $(grep -h SPARSE_BUILD_INFO "$pack_build/sparse_config.h" | cut -d'"' -f2)"
    echo "carried libraries: $(cd "$pack_dir/lib" && ls | tr '\n' ' ')"
  } > "$pack_dir/PACK.txt"
  cat "$pack_dir/PACK.txt"
  du -sh "$pack_dir"
  # What travels: tracked and untracked-not-ignored files, plus the carried folder (64 MiB).
  local tree_kib
  tree_kib=$(git ls-files -z --cached --others --exclude-standard | du -ck --files0-from=- | tail -1 | cut -f1)
  local pack_kib
  pack_kib=$(du -sk "$pack_dir" | cut -f1)
  echo "travels: working tree ${tree_kib} KiB + $pack_dir ${pack_kib} KiB = $(( (tree_kib + pack_kib) / 1024 )) MiB (limit 64)"
  (( tree_kib + pack_kib < 60 * 1024 )) || { echo "pack: too large to travel" >&2; exit 1; }
  echo "packed in $((SECONDS - t0)) s; on the GPU machine: tests/gpu_check.sh run (carry $pack_dir)"
}

# ------------------------------------------------------------------ run (GPU machine)

setup_env() {
  [[ -x $pack_dir/tests/test_cuda_attention ]] ||
    { echo "$pack_dir missing: run 'tests/gpu_check.sh pack' here first and carry it" >&2; exit 2; }
  chmod u+x "$pack_dir"/tests/* "$pack_dir"/benchmarks/* 2> /dev/null
  export SPARSE_REQUIRE_GPU=${SPARSE_REQUIRE_GPU:-1}
  export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
  local cuda_bins
  for cuda_bins in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
    [[ -d $cuda_bins ]] && PATH=$PATH:$cuda_bins
  done
  export PATH
  sanitizer=$(command -v compute-sanitizer ||
              find /usr/local/cuda* /opt/nvidia -name compute-sanitizer -type f -perm -u+x 2>/dev/null | head -1)
  [[ -n $sanitizer ]] || sanitizer="compute-sanitizer-not-found"
  # Libraries the binaries need and this machine lacks: CUDA's (cuBLAS is found in the toolkit
  # or in PyTorch's nvidia-* wheels), then the carried ones not installed here.
  local extra=/tmp/gpu_check_libs name dir
  rm -rf "$extra"
  mkdir -p "$extra"
  for name in $(cd "$pack_dir/lib" && ls); do
    ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$name " || ln -sf "$root/$pack_dir/lib/$name" "$extra/$name"
  done
  local path="$root/$pack_dir:$extra"
  # NCCL from PyTorch's wheel (site-packages/nvidia/nccl/lib), else the packed stub.
  local nccl_dir
  nccl_dir=$(python3 -c 'import glob, os, site
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for f in sorted(glob.glob(os.path.join(d, "nvidia", "nccl", "lib", "libnccl.so*"))):
        print(os.path.dirname(f)); raise SystemExit' 2>/dev/null)
  if [[ -z $nccl_dir ]] && ldconfig -p 2>/dev/null | grep -q "libnccl.so.2 "; then
    nccl_dir=system
  fi
  if [[ -n $nccl_dir ]]; then
    SPARSE_NCCL="found in $nccl_dir"
    [[ $nccl_dir != system ]] && path="$path:$nccl_dir"
  else
    SPARSE_NCCL="missing (no site-packages/nvidia/nccl/lib, none in ldconfig): the stub is loaded"
    path="$path:$root/$pack_dir/nccl-stub"
  fi
  export SPARSE_NCCL
  echo "NCCL: libnccl.so.2 $SPARSE_NCCL"
  local roots=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda)
  local site
  site=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) || site=""
  for dir in $site; do [[ -d $dir/nvidia ]] && roots+=("$dir/nvidia"); done
  for name in $(LD_LIBRARY_PATH=$path ldd "$pack_dir/libsparse.so."[0-9] "$pack_dir/libsparse_cuda.so" "$pack_dir"/tests/* "$pack_dir"/benchmarks/* 2>/dev/null |
                awk '/not found/ {print $1}' | sort -u); do
    dir=$(find "${roots[@]}" -name "$name" 2>/dev/null | head -1)
    [[ -n $dir ]] && path="$path:$(dirname "$dir")"
  done
  export LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  SPARSE_LIBRARY=$(echo "$root/$pack_dir"/libsparse.so.[0-9])
  export SPARSE_LIBRARY
  SPARSE_GIT_COMMIT=$(sed -n 's/^commit //p' "$pack_dir/PACK.txt")
  export SPARSE_GIT_COMMIT
}

provenance() {
  echo "command: tests/gpu_check.sh $*"
  echo "device-tool call: run(command=\"bash tests/gpu_check.sh $*\", carry=[\"$pack_dir\"])"
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host: $(uname -srm), $(nproc) CPUs"
  sed 's/^/pack: /' "$pack_dir/PACK.txt"
  if command -v nvidia-smi > /dev/null; then
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm --format=csv,noheader 2>&1 | head -4 | paste -sd';')"
    echo "cuda (driver): $(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)"
  else
    echo "gpu: no nvidia-smi on this machine"
  fi
  echo "nvcc: $(nvcc --version 2>/dev/null | sed -n 's/.*release //p' || echo none)"
  echo "compute-sanitizer: $sanitizer"
  echo "LD_LIBRARY_PATH: $LD_LIBRARY_PATH"
  echo "SPARSE_REQUIRE_GPU: $SPARSE_REQUIRE_GPU"
  echo "NCCL: libnccl.so.2 $SPARSE_NCCL"
  echo "--- ldd"
  ldd "$pack_dir/libsparse.so."[0-9] "$pack_dir/libsparse_cuda.so" "$pack_dir/tests/test_cuda_attention" 2>&1
}

# Globals used by step and the exit trap.
t_start=$SECONDS
budget=400
sanitizer=""
work=""
logs=""
out=""
archive_name=""
child=""
finished=0

write_archive() {
  [[ -n $logs && -d $logs ]] || return 0
  if [[ $finished == 0 ]]; then
    printf 'elapsed %d s of budget %d s\n' "$((SECONDS - t_start))" "$budget" > "$logs/elapsed.txt"
  fi
  column -t -s $'\t' "$logs/steps.tsv" > "$logs/summary.txt" 2>/dev/null || cp "$logs/steps.tsv" "$logs/summary.txt"
  tar -czf "$out/.$archive_name.tmp" -C "$work" "$(basename "$logs")" 2>/dev/null &&
    mv -f "$out/.$archive_name.tmp" "$out/$archive_name"
  cp "$logs/summary.txt" "$out/${archive_name%%.*}_summary.txt" 2>/dev/null || true
}

on_exit() {
  local rc=$?
  trap - EXIT TERM INT HUP
  if [[ -n $child ]] && kill -0 "$child" 2> /dev/null; then
    kill -TERM "$child" 2> /dev/null
    sleep 1
    kill -KILL "$child" 2> /dev/null
    printf '%s\t%s\t%s\t%s\n' "$current" "interrupted" "$((SECONDS - step_t0))" "the command was stopped (signal)" >> "$logs/steps.tsv"
  fi
  echo "finished: $(date -u '+%H:%M:%S') after $((SECONDS - t_start)) s (exit $rc)" >> "$logs/elapsed.txt"
  finished=1
  write_archive
  echo "=== $archive_name: $(du -h "$out/$archive_name" 2>/dev/null | cut -f1) in $out"
  cat "$logs/summary.txt" 2>/dev/null
  exit "$rc"
}

current=""
step_t0=0
status=0
# step NAME TIMEOUT_S COMMAND...: runs COMMAND with its output in NAME.log, at most TIMEOUT_S
# seconds and never past the overall budget (less 15 s for the archive).
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - t_start) - 15))
  (( limit > left )) && limit=$left
  current=$name
  step_t0=$SECONDS
  if (( limit < 5 )); then
    printf '%s\t%s\t%s\t%s\n' "$name" "skipped" 0 "out of time (budget $budget s)" >> "$logs/steps.tsv"
    echo "--- $name: skipped, out of time"
    return 0
  fi
  echo "--- $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
  { echo "\$ $*"; echo "# limit ${limit} s, started $(date -u '+%H:%M:%S UTC')"; } > "$logs/$name.log"
  timeout -k 5 "$limit" "$@" >> "$logs/$name.log" 2>&1 &
  child=$!
  wait "$child"
  local rc=$?
  child=""
  local secs=$((SECONDS - step_t0)) verdict note
  case $rc in
    0) verdict=ok note="" ;;
    77) verdict=skipped note="exit 77: no CUDA device" ;;
    124 | 137) verdict=TIMEOUT note="stopped after ${limit} s" status=1 ;;
    *) verdict=FAILED note="exit $rc" status=1 ;;
  esac
  # The last line that says what happened (doctest's summary, the sanitizer's error count).
  local last
  last=$(grep -E "test cases:|ERROR SUMMARY|RACECHECK SUMMARY|SKIP:|FAIL:|Error|error:|failed \(exit|gpu_attention_peers:|gpu_train_peers:|correctness_table:|checks, [0-9]+ failed|^ok:|^sparse-repro:" "$logs/$name.log" 2>/dev/null | tail -1 | tr '\t' ' ' | cut -c1-160)
  [[ -n $last ]] && note="${note:+$note; }$last"
  printf '%s\t%s\t%s\t%s\n' "$name" "$verdict" "$secs" "$note" >> "$logs/steps.tsv"
  echo "    $verdict in ${secs} s${note:+: $note}"
  write_archive
}

start_run() {  # start_run ARCHIVE_NAME LOG_FOLDER BUDGET ARGS...
  archive_name=$1
  local folder=$2
  budget=$3
  shift 3
  out=${OUT:-$root/build-gpu-out}
  mkdir -p "$out"
  work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
  logs=$work/$folder
  mkdir -p "$logs"
  printf 'step\tverdict\tseconds\tnote\n' > "$logs/steps.tsv"
  trap on_exit EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
  setup_env
  provenance "$@" > "$logs/provenance.txt" 2>&1
  sed -n '/^gpu:/p;/^cuda/p;/^pack: commit/p' "$logs/provenance.txt"
  write_archive
}

# bench_forward_v2 LIMIT ARGS...: the second 16-bit forward kernel, bf16, forward only, on the
# dense causal and strided layouts (gpu_attention_bf16_fwd2).
bench_forward_v2() {
  local limit=$1
  shift
  step bench_bf16_fwd2 "$limit" env SPARSE_CUDA_TC_FORWARD=2 python3 benchmarks/cpu_attention_table.py \
    --build "$pack_dir" --backend cuda --patterns dense,strided --baseline layout --mode fwd \
    --dtype bf16 "$@" --out "$logs/gpu_attention_bf16_fwd2"
}

# A short check for a small device budget (about 2.5 minutes; GPU_QUICK_BUDGET, default 150):
# the two CUDA test programs, memcheck, both 16-bit forward kernels timed, the dense causal and
# strided forwards against SDPA and FlexAttention side by side, 10 model steps against the CPU,
# racecheck, then training against PyTorch while time remains. One archive, gpu_quick.tar.gz.
run_quick() {
  start_run gpu_quick.tar.gz gpu_quick "${GPU_QUICK_BUDGET:-150}" quick
  local p=$pack_dir
  step test_cuda_backend 30 "$p/tests/test_cuda_backend"
  step test_cuda_attention 100 env SPARSE_CHECK_RECORD="$logs/attention_checks.jsonl" \
    "$p/tests/test_cuda_attention"
  step correctness_table 10 python3 benchmarks/correctness_table.py \
    "$logs/attention_checks.jsonl" --provenance "$logs/provenance.txt" \
    --out "$logs/gpu_correctness.md"
  step sanitizer_memcheck 30 "$sanitizer" --tool memcheck --error-exitcode 1 --print-limit 50 \
    "$p/tests/test_cuda_attention" -tc="*sanitizer sweep*"
  step bench_bf16_fwd1 15 env SPARSE_CUDA_TC_FORWARD=1 python3 benchmarks/cpu_attention_table.py \
    --build "$p" --backend cuda --patterns dense,strided --baseline layout --mode fwd \
    --dtype bf16 --n 16384,65536 --out "$logs/gpu_attention_bf16_fwd1"
  bench_forward_v2 15 --n 16384,65536
  step peers 45 python3 benchmarks/peers/gpu_attention_peers.py --build "$p" --n 16384 \
    --head-dim 64 --pattern dense,strided --modes fwd --time-budget 30 \
    --out "$logs/gpu_attention_peers"
  step model_train 30 bash tests/gpu_model_check.sh train "$p"
  step sanitizer_racecheck 40 "$sanitizer" --tool racecheck --error-exitcode 1 --print-limit 50 \
    "$p/tests/test_cuda_attention" -tc="*sanitizer sweep*"
  local left=$((budget - (SECONDS - t_start) - 20))
  step train_peers "$left" python3 benchmarks/peers/gpu_train_peers.py --build "$p" \
    --preset imagenet64-small --batch 4 --steps 5 --warmup 2 --time-budget $((left - 5)) \
    --out "$logs/gpu_train_peers"
  exit $status
}

run_main() {
  start_run gpu_check.tar.gz gpu_check "${GPU_CHECK_BUDGET:-400}" run
  local p=$pack_dir
  # 1. The two CUDA test programs, directly (the whole CPU suite is not rebuilt there).
  step test_cuda_backend 60 "$p/tests/test_cuda_backend"
  # 2. The model on the GPU: every model operation against the CPU in double (sparse-repro
  #    check), then 10 training steps of a small preset on CUDA fp32 against the CPU (losses,
  #    final parameters, checkpoints evaluated across backends, greedy decoding).
  step model_ops 60 bash tests/gpu_model_check.sh ops "$p"
  step model_train 90 bash tests/gpu_model_check.sh train "$p"
  # The same 10 steps in bf16 and fp16 mixed precision against CUDA fp32 (stated bounds), and a
  # one-process NCCL data-parallel run (overlap on and off) whose losses equal the run without a
  # reducer bit for bit.
  step model_mixed 60 bash tests/gpu_model_check.sh mixed "$p"
  step model_nccl 55 bash tests/gpu_model_check.sh nccl "$p"
  # Every comparison with the CPU, passing or not, is recorded (attention_check.hpp's record())
  # and made into the correctness table: the largest normalised error per kernel, head size,
  # block size and layout (gpu_correctness.md, for results/gpu_attention.md).
  step test_cuda_attention 220 env SPARSE_CHECK_RECORD="$logs/attention_checks.jsonl" \
    "$p/tests/test_cuda_attention"
  step correctness_table 10 python3 benchmarks/correctness_table.py \
    "$logs/attention_checks.jsonl" --provenance "$logs/provenance.txt" \
    --out "$logs/gpu_correctness.md"
  # 3. compute-sanitizer on the sweep made for it: every kernel and dtype, every block size and
  #    head size, rows of several blocks, n not a multiple of the block, padded rows.
  local tool limit
  for tool in memcheck racecheck; do
    limit=60
    [[ $tool == racecheck ]] && limit=80
    step "sanitizer_$tool" "$limit" "$sanitizer" --tool "$tool" --error-exitcode 1 \
      --print-limit 50 "$p/tests/test_cuda_attention" -tc="*sanitizer sweep*"
  done
  # 4. The benchmarks: bf16, fp16 (tensor cores), fp32, and the unfused fp32 path, against the
  #    cuBLAS dense baseline; each writes a Markdown table and JSON lines.
  local patterns=dense,local,strided,fixed
  local bench=(python3 benchmarks/cpu_attention_table.py --build "$p" --backend cuda
               --patterns "$patterns" --baseline cublas-dense)
  # bench_bf16 and bench_f16 time the first 16-bit forward kernel (SPARSE_CUDA_TC_FORWARD=1);
  # bench_bf16_fwd2 the second (the default since 2026-11-30), forward only, beside bench_bf16's
  # forward rows (same shapes; its dense column is the v2 kernel on the dense causal layout).
  step bench_bf16 60 env SPARSE_CUDA_TC_FORWARD=1 "${bench[@]}" --dtype bf16 --n 4096,16384,65536 \
    --out "$logs/gpu_attention_bf16"
  bench_forward_v2 15 --n 16384,65536
  step bench_f16 40 env SPARSE_CUDA_TC_FORWARD=1 "${bench[@]}" --dtype f16 --n 4096,16384 \
    --out "$logs/gpu_attention_f16"
  step bench_f32 50 "${bench[@]}" --dtype f32 --n 4096,16384 --out "$logs/gpu_attention_f32"
  step bench_unfused 30 python3 benchmarks/cpu_attention_table.py --build "$p" --backend cuda \
    --patterns strided,fixed --algorithm unfused --n 4096,16384 --out "$logs/gpu_attention_unfused"
  exit $status
}

run_peers() {
  start_run gpu_peers.tar.gz gpu_peers "${GPU_PEERS_BUDGET:-230}" peers
  # The PyTorch operator (capi/bindings/python/sparse_attention) on CUDA tensors against the CPU,
  # on a side stream and on the legacy default stream (its test_cuda_matches_cpu).
  step torch_operator 90 env SPARSE_REQUIRE_TORCH=1 python3 capi/bindings/python/test_torch_attention.py
  # The attention alone first, then whole training steps (GPU_TRAIN_PEERS_S of the budget).
  local train_s=${GPU_TRAIN_PEERS_S:-100}
  local left=$((budget - (SECONDS - t_start) - 25 - train_s))
  step peers $((left + 5)) python3 benchmarks/peers/gpu_attention_peers.py --build "$pack_dir" \
    --n 4096,16384,65536 --head-dim 64,128 --pattern strided --time-budget "$left" \
    --out "$logs/gpu_attention_peers"
  # libsparse bench-train --backend cuda --dtype bf16 against the same model in PyTorch (bf16
  # autocast, FlexAttention with the same block mask) on imagenet64-small: tokens/s, memory.
  # GPU_PRESETS_S of the budget stays for the paper's CIFAR-10 preset after it.
  local presets_s=${GPU_PRESETS_S:-35} profile_s=${GPU_PROFILE_S:-30}
  left=$((budget - (SECONDS - t_start) - 20 - presets_s - profile_s))
  step train_peers $((left + 5)) python3 benchmarks/peers/gpu_train_peers.py --build "$pack_dir" \
    --preset imagenet64-small --batch 4 --steps 5 --warmup 2 --time-budget "$left" \
    --out "$logs/gpu_train_peers"
  # Where the paper's CIFAR-10 step spends its time: every model operation and attention call
  # timed between synchronisations (SPARSE_PROFILE_OPS, JSON in the archive).
  left=$((budget - (SECONDS - t_start) - 15 - presets_s))
  step profile_cifar10 "$left" env SPARSE_PROFILE_OPS="$logs/profile_cifar10.jsonl" \
    "$pack_dir/benchmarks/sparse-repro" bench-train --preset cifar10 --backend cuda --dtype bf16 \
    --batch 4 --steps 2 --warmup 1
  # The paper's full CIFAR-10 model (128 layers, n = 3072) on the GPU in bf16: the measured time
  # per sequence and the full run's GPU-hours (presets.md).
  left=$((budget - (SECONDS - t_start) - 15))
  step presets_cifar10 "$left" "$pack_dir/benchmarks/sparse-repro" presets --only cifar10 \
    --steps 3 --batch 4 --backend cuda --dtype bf16 --out "$logs/presets_gpu"
  exit $status
}

usage() {
  echo "usage: $0 pack | run | peers | all | quick | exec COMMAND [ARGS...]   (see the top of this file)" >&2
}

case ${1:-} in
  pack) pack ;;
  run) run_main ;;
  peers) run_peers ;;
  quick) run_quick ;;
  # Both in one device call (one machine start instead of two): the archives of run and peers.
  all)
    GPU_CHECK_BUDGET=${GPU_CHECK_BUDGET:-300} bash "$0" run  # leaves peers its 230 s within 560
    rc=$?
    bash "$0" peers || rc=1
    exit "$rc" ;;
  # A follow-up check in the same environment: tests/gpu_check.sh exec COMMAND [ARGS...]
  exec)
    shift
    (( $# > 0 )) || { usage; exit 2; }
    setup_env > /dev/null
    exec "$@" ;;
  *) usage; exit 2 ;;
esac
