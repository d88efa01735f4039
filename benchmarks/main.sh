#!/usr/bin/env bash
# The README's main command: installs what is missing, builds and runs the main job of
# sparse-repro. A fresh build compiles the CUDA backend only when a GPU is present (the main job
# trains on the CPU; `bash tests/run.sh` compiles CUDA whenever nvcc is there); an existing build
# folder keeps its configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/install-deps
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
build=${BUILD_DIR:-build}
if [[ -f "$build/build.ninja" ]]; then
  meson setup --reconfigure "$build" >/dev/null
else
  cuda=disabled
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    cuda=auto
  fi
  meson setup "$build" -Dcuda="$cuda"
fi
ninja -C "$build"
"$build/benchmarks/sparse-repro" main "$@"
