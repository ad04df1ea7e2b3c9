#!/usr/bin/env bash
# A picture of a short benchmark: the request rate and the latency percentiles over time, as
# the gateway's own /metrics saw them (sampled every second), drawn with matplotlib.
#
#   tests/bench/picture.sh [PNG]     (default docs/img/bench-over-time.png)
#
# The gateway (Release build, one worker on core 0, RS256 tokens) in front of the peer
# benchmark's nginx upstream (../shared/bench's configuration, on port 19453); wrk on core 1 steps its
# connections through STEPS (default "10 50 100"), STEP_SECONDS each (default 10), on one GET.
# tests/bench/picture.py samples and draws. Installs wrk, nginx and python3-matplotlib when
# missing (Debian packages). Not part of tests/run.sh: it is a picture, not a test.
# Env: BENCH (../shared/bench), BENCH_DIR (/tmp/bench), STEPS, STEP_SECONDS.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=${BENCH:-$(cd "$top/../shared/bench" 2>/dev/null && pwd)} ||
  { echo "the peer benchmark is not at ../shared/bench: set BENCH" >&2; exit 2; }
export BENCH_DIR=${BENCH_DIR:-/tmp/bench}
PNG=$(realpath -m "${1:-$top/docs/img/bench-over-time.png}")
STEPS=${STEPS:-10 50 100}
STEP_SECONDS=${STEP_SECONDS:-10}
PY=/usr/bin/python3
GW=$BENCH_DIR/gateway
PORT=28450 ADMIN=29910 UPORT=19453

missing=()
for p in wrk nginx openssl python3-matplotlib build-essential cmake pkg-config libevent-dev \
  libssl-dev libjwt-dev libcjson-dev libhiredis-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cmake -S "$top" -B "$top/build-bench" -DCMAKE_BUILD_TYPE=Release -DGW_TESTS=OFF >/dev/null
cmake --build "$top/build-bench" -j"$(nproc)" --target ghl-gateway >/dev/null
"$BENCH/certs.sh" >/dev/null
CERTS=$BENCH_DIR/certs
mkdir -p "$GW/policies" "$GW/audit" "$(dirname "$PNG")"
cp "$top/tests/bench/bench-policy.json" "$GW/policies/bench.json"
echo "bench-agency-token" >"$GW/agency.token"
cat >"$GW/picture.json" <<EOF
{
  // tests/bench/picture.sh: run.sh's rs256 gateway, on its own ports
  "listen": { "address": "127.0.0.1", "port": $PORT, "workers": 1 },
  "tls": { "cert": "$CERTS/proxy.crt", "key": "$CERTS/proxy.key" },
  "admin": { "address": "127.0.0.1", "port": $ADMIN },
  "upstream": { "url": "https://127.0.0.1:$UPORT", "ca_file": "$CERTS/ca.crt",
                "max_idle_connections": 128 },
  "credentials": { "agency_token_file": "agency.token" },
  "auth": { "issuers": [ { "issuer": "proxy-bench", "audiences": [],
    "keys": [ { "alg": "RS256", "pem_file": "$CERTS/jwt-rs256.pub.pem" } ] } ] },
  "policies": { "dir": "policies" },
  "audit": { "file": "audit/picture.jsonl" },
  "access_log": { "file": "access-picture.log" },
  "rate_limit": { "per_subject": { "burst": 1000000000, "per_seconds": 1 },
                  "upstream": { "burst": 1000000000, "per_seconds": 1, "daily": 1000000000 } },
  "limits": { "max_connections": 20000 }
}
EOF
for p in $PORT $ADMIN $UPORT; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p is in use" >&2; exit 1; fi
done
# the bench's nginx upstream, but an instance of its own (own port, folder and pid file), so a
# benchmark running beside it that starts and stops the shared one cannot cut this one off
NGX=$BENCH_DIR/picture-nginx
mkdir -p "$NGX" "$BENCH_DIR/logs"
sed "s#/tmp/bench/nginx#$NGX#g; s#/tmp/bench/certs#$CERTS#g; s#/tmp/bench/logs#$BENCH_DIR/logs#g;
     s#127.0.0.1:19443#127.0.0.1:$UPORT#" "$BENCH/upstream-nginx.conf" >"$NGX/nginx.conf"
gw_pid=
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
  [ -s "$NGX/nginx.pid" ] && kill "$(cat "$NGX/nginx.pid")" 2>/dev/null
  return 0
}
trap cleanup EXIT
nginx -c "$NGX/nginx.conf" -p "$NGX/" -e "$BENCH_DIR/logs/picture-nginx-error.log"
for _ in $(seq 50); do ss -Hltn "sport = :$UPORT" | grep -q . && break; sleep 0.1; done
rm -f "$GW/audit/picture."*
(cd "$GW" && exec taskset -c 0 "$top/build-bench/ghl-gateway" run -c picture.json 2>>"$GW/gateway-picture.log") &
gw_pid=$!
for _ in $(seq 100); do ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.1; done
TOKEN=$("$PY" "$BENCH/mint-jwt.py" --alg RS256 --scope users.readonly --exp-in 7200)

read -ra steps <<<"$STEPS"
total=$(( ${#steps[@]} * STEP_SECONDS + 4 ))
samples=$GW/picture.jsonl
"$PY" "$top/tests/bench/picture.py" sample "http://127.0.0.1:$ADMIN/metrics" "$total" "$samples" &
sampler=$!
sleep 2 # an idle start: the picture begins at rest
phases="" at=2
for c in "${steps[@]}"; do
  phases+="$at:${c} conns,"
  echo "wrk: $c connections, ${STEP_SECONDS} s" >&2
  taskset -c 1 wrk -t2 -c"$c" -d"${STEP_SECONDS}s" --timeout 5s -s "$BENCH/wrk-auth.lua" \
    "https://127.0.0.1:$PORT/users/0IHuJvc2ofPAAA8GzTRi" -- "$TOKEN" | tail -1 >&2
  at=$((at + STEP_SECONDS))
done
wait "$sampler" || true
sampler=
"$PY" "$top/tests/bench/picture.py" draw "$samples" "$PNG" \
  "ghl-gateway, 1 worker, keep-alive GET with RS256 ($(date -u +%Y-%m-%d), $(git -C "$top" rev-parse --short HEAD))" \
  "$phases"
echo "$PNG ($(du -k "$PNG" | cut -f1) KB); samples in $samples" >&2
