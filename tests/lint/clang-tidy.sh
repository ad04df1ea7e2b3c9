#!/usr/bin/env bash
# clang-tidy on the gateway's code and the sandbox with the checked-in .clang-tidy (bugprone,
# cert, clang-analyzer with its security checks): any finding fails. A finding that is wrong
# gets an inline NOLINT(<check>) with its reason. Usage: clang-tidy.sh BUILD_DIR (a build
# configured with CMAKE_EXPORT_COMPILE_COMMANDS, which the top CMakeLists.txt sets).
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: clang-tidy.sh BUILD_DIR}
tidy=$(command -v clang-tidy || command -v clang-tidy-14) ||
  { echo "clang-tidy is not installed (tests/lib-deps.sh installs it)"; exit 1; }
[ -f "$build/compile_commands.json" ] || { echo "no $build/compile_commands.json"; exit 1; }
out=$(ls "$top"/proxy/*.c "$top"/tests/sandbox/*.c |
  xargs -P"$(nproc)" -n1 "$tidy" -p "$build" --quiet 2>&1 | grep -E "(warning|error):" | sort -u)
if [ -n "$out" ]; then
  echo "clang-tidy findings:"; echo "$out"; exit 1
fi
echo "clang-tidy: no findings in proxy/ and tests/sandbox/"
