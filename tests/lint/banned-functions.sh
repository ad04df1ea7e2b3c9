#!/usr/bin/env bash
# STYLE.md bans atoi, atol, sprintf, strcpy, strcat, strtok, gets: fail if any appears in code.
top=$(cd "$(dirname "$0")/../.." && pwd)
hits=$(grep -rnE '\b(atoi|atol|sprintf|strcpy|strcat|strtok|gets)\s*\(' \
  "$top/proxy" "$top/tests" --include='*.c' --include='*.h' | grep -vE ':[0-9]+:\s*(/\*|//|\*)')
if [ -n "$hits" ]; then
  echo "banned functions used (see STYLE.md):"; echo "$hits"; exit 1
fi
echo "no banned functions"
