#!/usr/bin/env bash
# The GPU machine's one command: build with CUDA, run every test (the CUDA kernel check against
# the CPU reference included), compute-sanitizer memcheck and racecheck on a small sweep, and the
# GPU attention benchmarks; logs and tables go to $OUT (when set) and results/.
#
# The GPU machine has nvcc, ninja and pip's meson but not Debian's Eigen, doctest, CLI11 or
# nlohmann-json, and no network. So, in two steps:
#   tests/gpu_check.sh pack   # on a development machine: copy those headers into .gpu-carry/
#   tests/gpu_check.sh run    # on the GPU machine (device tool: carry [".gpu-carry"]);
#                             # steps may be named to split the work: run build test, ...
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu-carry

pack() {
  rm -rf "$carry"
  mkdir -p "$carry/include" "$carry/pkgconfig"
  for dir in eigen3 doctest nlohmann CLI; do
    [[ -d /usr/include/$dir ]] || { echo "missing /usr/include/$dir: run .ci/install-deps" >&2; exit 1; }
    cp -r "/usr/include/$dir" "$carry/include/"
  done
  local v_eigen v_json v_cli
  v_eigen=$(pkg-config --modversion eigen3)
  v_json=$(pkg-config --modversion nlohmann_json)
  v_cli=$(pkg-config --modversion CLI11)
  printf 'Name: Eigen3\nDescription: packed headers\nVersion: %s\nCflags: -I${pcfiledir}/../include/eigen3\n' \
    "$v_eigen" > "$carry/pkgconfig/eigen3.pc"
  printf 'Name: nlohmann_json\nDescription: packed headers\nVersion: %s\nCflags: -I${pcfiledir}/../include\n' \
    "$v_json" > "$carry/pkgconfig/nlohmann_json.pc"
  printf 'Name: CLI11\nDescription: packed headers\nVersion: %s\nCflags: -I${pcfiledir}/../include\n' \
    "$v_cli" > "$carry/pkgconfig/CLI11.pc"
  du -sh "$carry"
  echo "packed; now run on the GPU machine: tests/gpu_check.sh run (carry $carry)"
}

run() {
  # Steps (default all): build, test, sanitize, bench, peers. Each GPU command of the device tool
  # may run 10 minutes, so the steps can be run in separate calls on the same warm machine:
  #   tests/gpu_check.sh run build test   then   tests/gpu_check.sh run sanitize   ...
  local steps=("$@")
  [[ ${#steps[@]} -gt 0 ]] || steps=(build test sanitize bench peers)
  [[ -d $carry ]] || { echo "$carry missing: run 'tests/gpu_check.sh pack' first and carry it" >&2; exit 1; }
  out=${OUT:-$PWD/build-gpu-out}
  mkdir -p "$out" results
  export PKG_CONFIG_PATH="$PWD/$carry/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export CPLUS_INCLUDE_PATH="$PWD/$carry/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
  export PATH="/usr/local/cuda/bin:$PATH"
  local meson=(meson)
  command -v meson >/dev/null || meson=(python3 -m mesonbuild.mesonmain)
  local status=0 step
  for step in "${steps[@]}"; do
    echo "=== gpu_check: $step ($(date -u +%H:%M:%S))"
    case $step in
      build)
        local arch
        arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" || true
        if [[ ! -f build-gpu/build.ninja ]]; then
          "${meson[@]}" setup build-gpu -Dcuda=enabled -Dsndfile=disabled -Dgpu_arch="$arch" \
            > "$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
        fi
        ninja -C build-gpu > "$out/build.log" 2>&1 || { grep -E "error" -A5 "$out/build.log" | head -60; exit 1; }
        echo "built ($(grep -c . "$out/build.log") log lines)"
        ;;
      test)
        "${meson[@]}" test -C build-gpu --print-errorlogs > "$out/tests.log" 2>&1 || status=1
        grep -E "^ *[0-9]+/[0-9]+ |^Ok|^Fail|^Skipped" "$out/tests.log" | tail -45
        # The kernel check's own summary (doctest), whatever meson made of it.
        build-gpu/tests/test_cuda_attention > "$out/test_cuda_attention.log" 2>&1 || status=1
        grep -E "ERROR|test cases|assertions" "$out/test_cuda_attention.log" | head -30
        ;;
      sanitize)
        # The small sweep runs every kernel and dtype (fused fp32/bf16/fp16, unfused fp32).
        local tool
        for tool in memcheck racecheck; do
          if compute-sanitizer --tool "$tool" --error-exitcode 1 \
              build-gpu/tests/test_cuda_attention -tc="*small*" > "$out/sanitizer-$tool.log" 2>&1; then
            echo "compute-sanitizer $tool: clean"
          else
            echo "compute-sanitizer $tool: FAILED"; tail -30 "$out/sanitizer-$tool.log"; status=1
          fi
        done
        ;;
      bench)
        local ns=1024,2048,4096,8192,16384,32768,65536 dtype
        for dtype in f32 bf16 f16; do
          python3 benchmarks/cpu_attention_table.py --build build-gpu --backend cuda --n "$ns" \
            --patterns dense,local,strided,fixed --dtype "$dtype" --baseline cublas-dense \
            --out "results/gpu_attention_$dtype" > "$out/bench-$dtype.log" 2>&1 \
            || { tail -20 "$out/bench-$dtype.log"; status=1; }
        done
        # The 2019-style unfused path (stored scores), fp32, up to n = 16384.
        python3 benchmarks/cpu_attention_table.py --build build-gpu --backend cuda \
          --n 1024,2048,4096,8192,16384 --patterns strided,fixed --algorithm unfused \
          --out results/gpu_attention_unfused > "$out/bench-unfused.log" 2>&1 \
          || { tail -20 "$out/bench-unfused.log"; status=1; }
        ;;
      peers)
        python3 benchmarks/peers/gpu_attention_peers.py --build build-gpu \
          --out results/gpu_attention_peers > "$out/peers.log" 2>&1 \
          || { tail -20 "$out/peers.log"; status=1; }
        ;;
      *) echo "unknown step $step (build, test, sanitize, bench, peers)" >&2; exit 2 ;;
    esac
  done
  # One page with everything measured so far, then copies for $OUT.
  {
    echo "# GPU attention: kernel check, sanitizer, benchmarks"
    echo
    echo "Generated by \`tests/gpu_check.sh run\` on $(tail -1 "$out/gpu.txt" 2>/dev/null) at"
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo
    echo '## kernel check and sanitizer'
    echo
    echo '```'
    grep -hE "test cases|assertions" "$out/test_cuda_attention.log" 2>/dev/null || echo "(test step not run)"
    for tool in memcheck racecheck; do
      [[ -f $out/sanitizer-$tool.log ]] && echo "compute-sanitizer $tool: $(tail -1 "$out/sanitizer-$tool.log")"
    done
    echo '```'
    for part in gpu_attention_f32 gpu_attention_bf16 gpu_attention_f16 gpu_attention_unfused \
                gpu_attention_peers; do
      if [[ -f results/$part.md ]]; then echo; sed 's/^#/##/' "results/$part.md"; fi
    done
  } > results/gpu_attention.md
  cp results/gpu_attention*.md results/gpu_attention*.json* "$out/" 2>/dev/null || true
  tail -40 results/gpu_attention.md
  exit $status
}

case ${1:-} in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 pack | run [build] [test] [sanitize] [bench] [peers]" >&2; exit 2 ;;
esac
