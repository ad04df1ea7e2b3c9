#!/usr/bin/env bash
# The include-cycle lint must fail on a cycle and pass without one: run on a small tree made
# here, without and with a planted cycle, and on a copy of proxy/ with a planted cycle.
set -u
here=$(cd "$(dirname "$0")" && pwd)
lint=$here/include-cycles.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
expect() { # expect RC NAME FOLDER [TEXT]: the lint's exit code is RC and its output has TEXT
  local out rc
  out=$("$lint" "$3" 2>&1)
  rc=$?
  if [ "$rc" != "$1" ] || { [ -n "${4:-}" ] && ! grep -qF -- "$4" <<<"$out"; }; then
    echo "FAIL $2: want exit $1${4:+ and \"$4\"}, got exit $rc:"
    echo "$out" | sed 's/^/    /'
    fails=$((fails + 1))
  else
    echo "ok   $2"
  fi
}

# a -> b -> c (a lone header), main.c -> a; none of these may count as an edge: a module's own
# header, a system header, a header not in the folder, an include in a comment or a string
t=$tmp/tree
mkdir "$t"
printf '#include "a.h"\n#include "b.h"\n' >"$t/a.c"
printf '#include "b.h"\n#include <c.h>\n' >"$t/a.h"
printf '#include "b.h"\n#include "elsewhere.h"\n// #include "a.h"\n' >"$t/b.c"
printf '#include "c.h"\n/*\n#include "a.h"\n*/\n' >"$t/b.h"
printf 'static const char *s = "#include \\"a.h\\"";\n' >"$t/c.h"
printf '#include "a.h"\n' >"$t/main.c"
expect 0 "a tree without cycles passes" "$t" "no include cycles"

cp -r "$t" "$tmp/planted"
printf '#include "a.h"\n' >>"$tmp/planted/c.h"
expect 1 "a planted three-module cycle fails" "$tmp/planted" "include cycle: a -> b -> c -> a"
expect 1 "the planted cycle's include line is shown" "$tmp/planted" 'c.h:2: #include "a.h"'

cp -r "$t" "$tmp/two"
printf '#include "main.h"\n' >>"$tmp/two/b.c"
printf '#include "b.h"\n' >"$tmp/two/main.h"
expect 1 "a cycle through a .c file fails" "$tmp/two" "include cycle: b -> main -> b"

cp -r "$here/../../proxy" "$tmp/proxy"
printf '#include "server.h"\n' >>"$tmp/proxy/json.h"
expect 1 "a cycle planted in a copy of proxy/ fails" "$tmp/proxy" "include cycle: json -> server -> "
n=$(wc -l <"$tmp/proxy/json.h")
expect 1 "the planted include is named" "$tmp/proxy" "json.h:$n: #include \"server.h\""

[ "$fails" = 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "the include-cycle lint fails on cycles and passes without them"
