#!/usr/bin/env bash
# STYLE.md: imports run one way. Fails (exit 1) on any cycle in the include graph of proxy/
# (or of the folder given), printing each cycle with the #include lines that make it.
#
# A module is x.c with x.h (a lone .h or .c is a module too); y -> x when y.c or y.h has
# #include "x.h" and x.h is in the folder (a module including its own header is no edge).
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$top/proxy}
[ -d "$dir" ] || { echo "no folder $dir" >&2; exit 2; }
exec /usr/bin/python3 - "$dir" <<'PY'
import os, re, sys

folder = sys.argv[1]
inc = re.compile(r'^\s*#\s*include\s*"([^"/]+)\.h"')
files = sorted(f for f in os.listdir(folder) if f.endswith((".c", ".h")))
headers = {f[:-2] for f in files if f.endswith(".h")}

def code_lines(text):
    """The lines of a C file with its comments blanked (line numbers kept)."""
    out, i, n, state = [], 0, len(text), None
    while i < n:
        c, two = text[i], text[i:i + 2]
        if state is None:
            if two == "/*":
                state, i = "block", i + 2
                out.append("  ")
                continue
            if two == "//":
                state, i = "line", i + 2
                out.append("  ")
                continue
            if c in "\"'":
                state = c
        elif state == "block":
            if two == "*/":
                state, i = None, i + 2
                out.append("  ")
                continue
            out.append("\n" if c == "\n" else " ")
            i += 1
            continue
        elif state == "line":
            if c == "\n":
                state = None
            else:
                out.append(" ")
                i += 1
                continue
        elif c == "\\":
            out.append(two)
            i += 2
            continue
        elif c == state or c == "\n":
            state = None
        out.append(c)
        i += 1
    return "".join(out).split("\n")

edges = {}  # module -> {module: [where, ...]}
for f in files:
    mod = f[:-2]
    edges.setdefault(mod, {})
    with open(os.path.join(folder, f), encoding="utf-8", errors="replace") as fh:
        for no, line in enumerate(code_lines(fh.read()), 1):
            m = inc.match(line)
            if m and m.group(1) in headers and m.group(1) != mod:
                edges[mod].setdefault(m.group(1), []).append("%s:%d: %s" % (f, no, line.strip()))

# Each include that lies on a cycle, with the shortest cycle it closes (a -> b, then the
# shortest way back from b to a), each cycle once: every include to undo is shown, and a tangle
# of many modules does not print the exponentially many cycles through it.
def shortest(src, dst):
    prev, todo = {src: None}, [src]
    for m in todo:
        if m == dst:
            path = []
            while m is not None:
                path.append(m)
                m = prev[m]
            return path[::-1]
        for n in sorted(edges[m]):
            if n not in prev:
                prev[n] = m
                todo.append(n)
    return None

cycles, seen = [], set()
for a in sorted(edges):
    for b in sorted(edges[a]):
        back = shortest(b, a)
        if back is None:
            continue
        c = [a] + back[:-1]
        k = c.index(min(c))
        c = c[k:] + c[:k]
        if tuple(c) not in seen:
            seen.add(tuple(c))
            cycles.append(c)
cycles.sort(key=lambda c: (len(c), c))  # the short ones, usually the ones to undo, first

for c in cycles:
    print("include cycle: " + " -> ".join(c + [c[0]]))
    for x, y in zip(c, c[1:] + [c[0]]):
        for where in edges[x][y]:
            print("  " + where)
if cycles:
    print("%d include cycle%s in %s: a small header of the types both sides need breaks one"
          % (len(cycles), "" if len(cycles) == 1 else "s", folder))
    sys.exit(1)
print("no include cycles in %s (%d modules)" % (folder, len(edges)))
PY
