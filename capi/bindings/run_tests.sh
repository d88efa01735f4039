#!/usr/bin/env bash
# Bindings against an *installed* copy of a build: installs <builddir> into a temporary DESTDIR,
# then through pkg-config (PKG_CONFIG_SYSROOT_DIR points it at the copy)
#   1. builds the C examples with -Werror and runs them;
#   2. runs the Rust crate's tests (cargo test --offline; build.rs finds the library through
#      pkg-config; artefacts in <builddir>/bindings-rust-target);
#   3. runs the Python tests with the installed libsparse.so (numpy required), then the PyTorch
#      operator's tests (skipped when python3 has no torch).
# The ABI guard and the Julia/Rust declaration checks are meson tests (suite 'bindings').
#
# usage: capi/bindings/run_tests.sh [builddir]     (relative to the repository root; default build)
# .ci/run calls it with build-ci after the main tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
if [[ ! -f "$build/build.ninja" ]]; then
  echo "run_tests.sh: $build is not a configured build directory" >&2
  exit 1
fi
t0=$(date +%s)
step() { echo "--- bindings: $* ($(( $(date +%s) - t0 )) s)"; }

ninja -C "$build" >/dev/null
sanitize=$(meson introspect "$build" --buildoptions |
  python3 -c 'import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"))')

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/dest"
meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null
mapfile -t pcs < <(find "$dest" -name sparse.pc)
if [[ ${#pcs[@]} -ne 1 ]]; then
  echo "run_tests.sh: expected one installed sparse.pc, found ${#pcs[*]}" >&2
  exit 1
fi
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "${pcs[0]}")
export PKG_CONFIG_SYSROOT_DIR="$dest"
libdir=$(pkg-config --variable=libdir sparse)
[[ -f "$libdir/libsparse.so" ]] || { echo "no libsparse.so in $libdir" >&2; exit 1; }
step "installed into $dest; pkg-config: $(pkg-config --cflags --libs sparse)"

# ---------------------------------------------------------------- 1. C examples
extra=()
if [[ "$sanitize" != "none" ]]; then extra=("-fsanitize=$sanitize"); fi
for src in capi/bindings/c/*.c; do
  exe="$tmp/$(basename "${src%.c}")"
  # shellcheck disable=SC2046  # pkg-config output is meant to be split
  "${CC:-cc}" -std=c99 -Wall -Wextra -Werror -pedantic "${extra[@]}" "$src" -o "$exe" \
    $(pkg-config --cflags --libs sparse) -lm
  step "C example $(basename "$src")"
  LD_LIBRARY_PATH="$libdir" "$exe"
done

if [[ "$sanitize" != "none" ]]; then
  step "sanitized build ($sanitize): skipping Rust and Python (they load an uninstrumented runtime)"
  exit 0
fi

# ---------------------------------------------------------------- 2. Rust
if command -v cargo >/dev/null; then
  step "cargo test --offline (capi/bindings/rust)"
  export CARGO_TARGET_DIR="$PWD/$build/bindings-rust-target"
  cargo test --offline --quiet --manifest-path capi/bindings/rust/Cargo.toml
  cargo run --offline --quiet --manifest-path capi/bindings/rust/Cargo.toml --example attention
else
  step "SKIP Rust: cargo is not installed"
fi

# ---------------------------------------------------------------- 3. Python
step "python tests (installed library)"
if ! SPARSE_LIBRARY="$libdir/libsparse.so" SPARSE_REQUIRE_NUMPY=1 PYTHONDONTWRITEBYTECODE=1 \
    python3 capi/bindings/python/test_sparse_ctypes.py >"$tmp/python.log" 2>&1; then
  cat "$tmp/python.log"
  echo "python tests failed" >&2
  exit 1
fi
tail -n 3 "$tmp/python.log"

# The PyTorch operator (skipped, exit 77, when this python3 has no torch; the optional CI step
# capi/bindings/python/run_torch_tests.sh installs it in a venv).
step "python torch operator tests (installed library)"
rc=0
SPARSE_LIBRARY="$libdir/libsparse.so" PYTHONDONTWRITEBYTECODE=1 \
  python3 capi/bindings/python/test_torch_attention.py >"$tmp/torch.log" 2>&1 || rc=$?
if [[ $rc -eq 77 ]]; then
  tail -n 1 "$tmp/torch.log"
elif [[ $rc -ne 0 ]]; then
  cat "$tmp/torch.log"
  echo "python torch tests failed" >&2
  exit 1
else
  tail -n 3 "$tmp/torch.log"
fi
step "done"
