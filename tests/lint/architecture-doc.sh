#!/usr/bin/env bash
# docs/architecture.md names every module of proxy/: fail (exit 1) naming each proxy/*.c the
# page does not mention, else exit 0. A module counts as mentioned when the page holds its file
# name as a word (`worker.c`, proxy/worker.c) or its name in backticks (`worker`), as a module
# table writes it; `log` is not found inside `catalog.c`.
# Usage: tests/lint/architecture-doc.sh [TOP]   (TOP: the repository, default this one's)
#        tests/lint/architecture-doc.sh --self-test
set -uo pipefail

check() { # top: prints the verdict, returns 0 or 1
  local top=$1 page=$1/docs/architecture.md missing=() f m
  if [ ! -f "$page" ]; then
    echo "docs/architecture.md does not exist"; return 1
  fi
  for f in "$top"/proxy/*.c; do
    [ -e "$f" ] || continue
    m=$(basename "$f" .c)
    grep -qE "(^|[^A-Za-z0-9_.-])${m//./\\.}\.c([^A-Za-z0-9_]|$)|\`${m//./\\.}\`" "$page" ||
      missing+=("proxy/$m.c")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "docs/architecture.md does not mention: ${missing[*]}"; return 1
  fi
  echo "docs/architecture.md mentions every proxy/*.c"
}

# shellcheck disable=SC2016 # the backticks in the pages written below are Markdown, not shell
self_test() { # the check on small trees, each with the verdict it must give
  local tmp fails=0 out
  tmp=$(mktemp -d) || return 1
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/proxy" "$tmp/docs"
  touch "$tmp/proxy/log.c" "$tmp/proxy/worker.c" "$tmp/proxy/token_cache.c" "$tmp/proxy/log.h"
  expect() { # want-status want-text what
    out=$(check "$tmp"); local rc=$?
    if [ $rc -ne "$1" ] || ! grep -qF -- "$2" <<<"$out"; then
      echo "self-test FAILED: $3: exit $rc, said: $out"; fails=$((fails + 1))
    fi
  }
  expect 1 "does not exist" "no page"
  printf '# Architecture\n\n| `worker` | ... |\n| `token_cache` | ... |\n' > "$tmp/docs/architecture.md"
  expect 1 "does not mention: proxy/log.c" "a module left out"
  printf 'catalog.c and `logs` and log.cc and blog.c\n' >> "$tmp/docs/architecture.md"
  expect 1 "does not mention: proxy/log.c" "names that only contain the module's"
  printf 'proxy/log.c writes the access log.\n' >> "$tmp/docs/architecture.md"
  expect 0 "mentions every" "every module mentioned"
  touch "$tmp/proxy/request.c" "$tmp/proxy/metrics.c"
  expect 1 "does not mention: proxy/metrics.c proxy/request.c" "two new modules, both named"
  [ $fails -eq 0 ] && echo "self-test passed"
  return $((fails > 0))
}

case "${1:-}" in
  --self-test) self_test ;;
  -*) echo "usage: $0 [TOP] | --self-test" >&2; exit 2 ;;
  *) check "${1:-$(cd "$(dirname "$0")/../.." && pwd)}" ;;
esac
