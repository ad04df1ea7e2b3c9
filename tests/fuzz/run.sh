#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) into build-fuzz/ and runs each for
# SECONDS (default 10) from the seed corpus in tests/fuzz/corpus/<target>/. A crash, a leak or
# a timeout fails the run; the input is left in build-fuzz/crashes/. Usage: tests/fuzz/run.sh [SECONDS]
# Env: FUZZ_JOBS (1): targets run this many at a time; FUZZ_TARGETS: a subset ("json jwt").
# A target's dictionary, tests/fuzz/<target>.dict, is used when present.
set -euo pipefail
secs=${1:-10}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
command -v clang >/dev/null || { echo "clang is needed for the fuzz targets"; exit 1; }
CC=clang cmake -S . -B build-fuzz -DGW_FUZZ=ON -DGW_TESTS=OFF -DGW_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >build-fuzz.cmake.log 2>&1 || { cat build-fuzz.cmake.log; exit 1; }
targets=(json http1 route config upstream jwt schema policy audit escalation ratelimit discovery trace)
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >build-fuzz.build.log 2>&1 ||
  { tail -40 build-fuzz.build.log; exit 1; }
mkdir -p build-fuzz/crashes
[ -n "${FUZZ_TARGETS:-}" ] && read -ra targets <<<"$FUZZ_TARGETS"
jobs=${FUZZ_JOBS:-1}
one() { # one TARGET: runs it, prints its line; exit status 1 on a finding
  local t=$1 work=build-fuzz/corpus/$1 dict=()
  mkdir -p "$work"
  cp -n tests/fuzz/corpus/$t/* "$work"/ 2>/dev/null || true
  [ -f tests/fuzz/$t.dict ] && dict=(-dict=tests/fuzz/$t.dict)
  if build-fuzz/tests/fuzz/fuzz_$t "$work" "${dict[@]}" -max_total_time="$secs" -max_len=16384 \
       -timeout=10 -artifact_prefix=build-fuzz/crashes/$t- >build-fuzz/fuzz_$t.log 2>&1; then
    echo "fuzz_$t: $(grep -oE 'Done [0-9]+ runs in [0-9]+ second' build-fuzz/fuzz_$t.log | tail -1), no finding"
  else
    echo "fuzz_$t: FAILED"; tail -30 build-fuzz/fuzz_$t.log; return 1
  fi
}
failed=0
pids=()
for t in "${targets[@]}"; do
  one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit $failed
