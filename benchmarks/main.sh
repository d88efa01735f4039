#!/usr/bin/env bash
# The README's main command: installs what is missing, builds (with CUDA when nvcc is present)
# and runs the main job of sparse-repro.
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
  meson setup "$build"
fi
ninja -C "$build"
"$build/benchmarks/sparse-repro" main "$@"
