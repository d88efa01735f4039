#!/usr/bin/env bash
# Formatting gate: every tracked C, C++ and CUDA source is as clang-format 14 (Debian bookworm's
# clang-format-14, with the repository's .clang-format) writes it. Other clang-format versions
# format a few constructs differently, so the gate uses exactly this one.
#
#   tests/check_format.sh        check (exit 1 and the first differences when a file is off)
#   tests/check_format.sh --fix  rewrite the files in place
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$tool" >/dev/null; then
  echo "check_format: $tool is not installed (apt-get install clang-format-14)" >&2
  exit 2
fi
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp' '*.hpp' '*.cu' '*.cuh')
if [[ ${1:-} == --fix ]]; then
  "$tool" -i "${files[@]}"
  exit 0
fi
if ! "$tool" --dry-run --Werror "${files[@]}" 2> /tmp/check_format.$$; then
  grep -m 20 'error:' /tmp/check_format.$$ >&2 || true
  echo "check_format: $(grep -c 'error:' /tmp/check_format.$$) lines differ from $tool's" \
    "formatting; run tests/check_format.sh --fix" >&2
  rm -f /tmp/check_format.$$
  exit 1
fi
rm -f /tmp/check_format.$$
echo "check_format: ${#files[@]} files formatted as $tool writes them"
