#!/usr/bin/env bash
# The test command: installs what is missing, builds (warnings are errors here), runs every test
# (ctest) in a normal build
# (unit, integration, lint — banned functions, cppcheck, clang-tidy, deploy manifests —, the
# policy cases, and label "valgrind": the integration suites with the gateway under memcheck),
# again in an AddressSanitizer + UndefinedBehaviorSanitizer build (all but lint and valgrind),
# builds a Release build with the tests and runs its unit suites,
# then runs each libFuzzer target briefly (GW_FUZZ_SECONDS, default 10). The last line printed
# is the summary.
# Usage: tests/run.sh
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source tests/lib-deps.sh
gw_install_missing || { echo "FAILED: could not install the build dependencies"; exit 1; }
jobs=$(nproc 2>/dev/null || echo 2)

results=()
status=0
run_build() { # name dir ctest-label-exclude cmake-args...
  local name=$1 dir=$2 exclude=$3; shift 3
  echo "== $name build ($dir)"
  if ! cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir.cmake.log" 2>&1 &&
       true; then
    cat "$dir.cmake.log"; results+=("$name: configure failed"); status=1; return
  fi
  if ! cmake --build "$dir" -j"$jobs" >"$dir.build.log" 2>&1; then
    tail -50 "$dir.build.log"; results+=("$name: build failed"); status=1; return
  fi
  local log="$dir/ctest.log"
  local filter=()
  [ -n "$exclude" ] && filter=(-LE "$exclude")
  (cd "$dir" && ctest -j2 --output-on-failure "${filter[@]}") | tee "$log"
  local line
  line=$(grep -E '^[0-9]+% tests passed' "$log" | tail -1)
  [ -n "$line" ] || line="no test summary"
  grep -q '^100% tests passed' "$log" || status=1
  results+=("$name: $line")
}

mkdir -p build
run_build release build "" -DGW_WERROR=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_build sanitize build-asan "^(lint|valgrind)$" -DGW_SANITIZE=ON -DGW_WERROR=ON
# What a user builds (-O3, no debug info: other inlining, other warnings), with the tests:
# built warning-free and its unit suites run.
run_build optimized build-o3 "^(integration|valgrind|lint|policy)$" -DCMAKE_BUILD_TYPE=Release \
  -DGW_WERROR=ON

echo "== fuzz targets (${GW_FUZZ_SECONDS:-10} s each, clang, ASan + UBSan)"
if tests/fuzz/run.sh "${GW_FUZZ_SECONDS:-10}"; then
  results+=("fuzz: no finding")
else
  results+=("fuzz: FAILED"); status=1
fi

echo
if [ $status -eq 0 ]; then
  echo "ALL TESTS PASSED — ${results[*]}"
else
  echo "TESTS FAILED — ${results[*]}"
fi
exit $status
