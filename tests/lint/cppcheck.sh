#!/usr/bin/env bash
# Static analysis of the gateway's code with cppcheck (warnings, portability, errors): any
# finding fails. A finding that is wrong gets an inline "cppcheck-suppress <id>" with a reason.
top=$(cd "$(dirname "$0")/../.." && pwd)
command -v cppcheck >/dev/null || { echo "cppcheck is not installed (tests/lib-deps.sh installs it)"; exit 1; }
out=$(cppcheck --quiet --enable=warning,portability --inline-suppr --std=c11 --error-exitcode=1 \
  -I "$top/proxy" "$top/proxy/"*.c "$top/tests/sandbox/"*.c 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
  echo "cppcheck findings:"; echo "$out"; exit 1
fi
echo "cppcheck: no findings in proxy/ and tests/sandbox/"
