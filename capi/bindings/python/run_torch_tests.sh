#!/usr/bin/env bash
# The PyTorch operator's tests against the pip-installed package, in a virtual environment of
# their own: the optional CI step (SPARSE_CI_TORCH=1 bash .ci/run), or by hand.
#   1. torch from PyPI into the venv (its Linux wheel pulls the nvidia-* CUDA packages: about
#      5.4 GB and 7 minutes here the first time; kept in the venv for later runs);
#   2. `pip install .` of this checkout (meson-python; CUDA off and no -march=native, so the
#      build is the CPU library only);
#   3. python -m sparse_attention info, then test_torch_attention.py with SPARSE_REQUIRE_TORCH=1
#      (the installed package and its bundled libsparse, not the source tree).
# usage: capi/bindings/python/run_torch_tests.sh [venv dir (default build-torch-venv)]
set -euo pipefail
cd "$(dirname "$0")/../../.."
venv=${1:-build-torch-venv}
t0=$(date +%s)
step() { echo "--- torch: $* ($(( $(date +%s) - t0 )) s)"; }

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  step "pip install torch numpy into $venv"
  "$venv/bin/pip" install --quiet torch numpy
fi
step "pip install . (meson-python)"
"$venv/bin/pip" install --quiet --force-reinstall --no-deps . \
  -Csetup-args=-Dcuda=disabled -Csetup-args=-Dnative=false
step "installed package"
(cd / && "$venv/bin/python" -m sparse_attention info)
step "test_torch_attention.py"
env -u SPARSE_LIBRARY -u SPARSE_LIB_DIR SPARSE_REQUIRE_TORCH=1 PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" capi/bindings/python/test_torch_attention.py
step "done"
