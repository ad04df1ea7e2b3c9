#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) into build-fuzz/ and runs each for
# SECONDS (default 10) from the seed corpus in tests/fuzz/corpus/<target>/. A crash, a leak or
# a timeout fails the run; the input is left in build-fuzz/crashes/. Usage: tests/fuzz/run.sh [SECONDS]
set -euo pipefail
secs=${1:-10}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
command -v clang >/dev/null || { echo "clang is needed for the fuzz targets"; exit 1; }
CC=clang cmake -S . -B build-fuzz -DGW_FUZZ=ON -DGW_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >build-fuzz.cmake.log 2>&1 || { cat build-fuzz.cmake.log; exit 1; }
targets=(json http1 route config upstream jwt schema policy audit)
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >build-fuzz.build.log 2>&1 ||
  { tail -40 build-fuzz.build.log; exit 1; }
mkdir -p build-fuzz/crashes
failed=0
for t in "${targets[@]}"; do
  work=build-fuzz/corpus/$t
  mkdir -p "$work"
  cp -n tests/fuzz/corpus/$t/* "$work"/ 2>/dev/null || true
  if build-fuzz/tests/fuzz/fuzz_$t "$work" -max_total_time="$secs" -max_len=16384 -timeout=10 \
       -artifact_prefix=build-fuzz/crashes/$t- >build-fuzz/fuzz_$t.log 2>&1; then
    echo "fuzz_$t: $(grep -oE 'Done [0-9]+ runs in [0-9]+ second' build-fuzz/fuzz_$t.log | tail -1), no finding"
  else
    echo "fuzz_$t: FAILED"; tail -30 build-fuzz/fuzz_$t.log; failed=1
  fi
done
exit $failed
