#!/usr/bin/env bash
# The GPU machine's one command: build with CUDA, run every test (the CUDA kernel check against
# the CPU reference included), compute-sanitizer memcheck and racecheck on a small sweep, and the
# GPU attention benchmarks; logs and tables go to $OUT (when set) and results/.
#
# The GPU machine has nvcc, ninja and pip's meson but not Debian's Eigen, doctest, CLI11 or
# nlohmann-json, and no network. So, in two steps:
#   tests/gpu_check.sh pack   # on a development machine: copy those headers into .gpu-carry/
#   tests/gpu_check.sh run    # on the GPU machine (device tool: carry [".gpu-carry"])
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
  [[ -d $carry ]] || { echo "$carry missing: run 'tests/gpu_check.sh pack' first and carry it" >&2; exit 1; }
  out=${OUT:-$PWD/build-gpu-out}
  mkdir -p "$out" results
  export PKG_CONFIG_PATH="$PWD/$carry/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export CPLUS_INCLUDE_PATH="$PWD/$carry/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
  export PATH="/usr/local/cuda/bin:$PATH"
  local meson=(meson)
  command -v meson >/dev/null || meson=(python3 -m mesonbuild.mesonmain)
  local arch
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" || true
  "${meson[@]}" setup build-gpu -Dcuda=enabled -Dsndfile=disabled -Dgpu_arch="$arch" \
    > "$out/setup.log" 2>&1 || { tail -40 "$out/setup.log"; exit 1; }
  ninja -C build-gpu > "$out/build.log" 2>&1 || { grep -E "error" -A5 "$out/build.log" | head -60; exit 1; }
  local status=0
  "${meson[@]}" test -C build-gpu --print-errorlogs > "$out/tests.log" 2>&1 || status=1
  grep -E "^ *[0-9]+/[0-9]+ |^Ok|^Fail|^Skipped" "$out/tests.log" | tail -40
  for tool in memcheck racecheck; do
    if compute-sanitizer --tool "$tool" --error-exitcode 1 \
        build-gpu/tests/test_cuda_attention -tc="*small*" > "$out/sanitizer-$tool.log" 2>&1; then
      echo "compute-sanitizer $tool: clean"
    else
      echo "compute-sanitizer $tool: FAILED"; tail -20 "$out/sanitizer-$tool.log"; status=1
    fi
  done
  python3 benchmarks/cpu_attention_table.py --build build-gpu --backend cuda \
    --n 1024,2048,4096,8192,16384,32768,65536 --out results/gpu_attention > "$out/bench.log" 2>&1 \
    || { tail -20 "$out/bench.log"; status=1; }
  cp results/gpu_attention.md results/gpu_attention.jsonl "$out/" 2>/dev/null || true
  tail -30 "$out/bench.log"
  exit $status
}

case ${1:-} in
  pack) pack ;;
  run) run ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
