#!/usr/bin/env bash
# Instructions per request through the real gateway, counted by callgrind: repeatable on a
# noisy machine (the same binary, inputs and environment give the same count), so a change's
# cost shows as a figure to compare with the one in docs/performance.md.
#
#   tests/bench/callgrind.sh [N] [get|create|create-noaudit]
#       N requests (default 2000) on one keep-alive connection, RS256: GET /users/{id} (default);
#       create-user with the audit file on (fsync true); create-user with the audit file off.
#       create minus create-noaudit is what the audit records of a change cost.
#   REDIS_PORT=P tests/bench/callgrind.sh ...
#       the same with rate_limit.redis on a redis-server on 127.0.0.1:P (started by the caller):
#       the gateway's own instructions for the shared store's round trip (Redis's are not in it).
#   ALG=PS256|PS384|PS512|EdDSA tests/bench/callgrind.sh ...
#       the token signed with that algorithm instead of RS256 (an RSA 2048 key, as RS256's, or an
#       Ed25519 key, made once in $BENCH_DIR/gateway; the token by ghl-gateway mint).
#   NO_CACHE=1 tests/bench/callgrind.sh ...
#       auth.token_cache_entries 0: every request verifies its token (the signature's cost).
#
# Runs the gateway twice under callgrind (N/10 and N + N/10 requests, one connection, the
# verified-token cache warm after the first unless NO_CACHE) and prints (Ir of the second - Ir
# of the first) / N: start-up and shutdown cancel out. Uses the peer benchmark's certificates
# and nginx upstream (../shared/bench, see run.sh); needs valgrind.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=${BENCH:-$(cd "$top/../shared/bench" 2>/dev/null && pwd)} ||
  { echo "the peer benchmark is not at ../shared/bench: set BENCH" >&2; exit 2; }
export BENCH_DIR=${BENCH_DIR:-/tmp/bench}
N=${1:-2000}
MODE=${2:-get}
ALG=${ALG:-RS256}
case $ALG in
  RS256|PS256|PS384|PS512|EdDSA) ;;
  *) echo "ALG: RS256, PS256, PS384, PS512 or EdDSA" >&2; exit 2 ;;
esac
CACHE_ENTRIES=65536
[ "${NO_CACHE:-0}" = 1 ] && CACHE_ENTRIES=0
case $MODE in
  get) AUDIT='{ "file": "audit/callgrind.jsonl" }'; SCOPE=users.readonly ;;
  create) AUDIT='{ "file": "audit/callgrind.jsonl", "fsync": true }'; SCOPE=users.write ;;
  create-noaudit) AUDIT='{ "file": null }'; SCOPE=users.write ;;
  *) echo "mode: get, create or create-noaudit" >&2; exit 2 ;;
esac
PY=/usr/bin/python3
GW=$BENCH_DIR/gateway
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
cmake -S "$top" -B "$top/build-bench" -DCMAKE_BUILD_TYPE=Release -DGW_TESTS=OFF >/dev/null
cmake --build "$top/build-bench" -j"$(nproc)" --target ghl-gateway >/dev/null
"$BENCH/certs.sh" >/dev/null
CERTS=$BENCH_DIR/certs
mkdir -p "$GW/policies" "$GW/audit"
cp "$top/tests/bench/bench-policy.json" "$GW/policies/bench.json"
echo "bench-agency-token" >"$GW/agency.token"
# the verification key: the peer benchmark's RS256 key, or one made here for PS*/EdDSA
KEY_PUB=$CERTS/jwt-rs256.pub.pem
case $ALG in
  PS*) KEY=$GW/jwt-ps.key ;;
  EdDSA) KEY=$GW/jwt-ed25519.key ;;
esac
if [ "$ALG" != RS256 ]; then
  KEY_PUB=$KEY.pub.pem
  if [ ! -s "$KEY" ]; then
    case $ALG in
      PS*) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEY" 2>/dev/null ;;
      EdDSA) openssl genpkey -algorithm ED25519 -out "$KEY" ;;
    esac
  fi
  openssl pkey -in "$KEY" -pubout -out "$KEY_PUB"
fi
REDIS_JSON=""
[ -z "${REDIS_PORT:-}" ] ||
  REDIS_JSON=', "redis": { "url": "redis://127.0.0.1:'$REDIS_PORT'/0", "timeout_ms": 5000 }'
cat >"$GW/callgrind.json" <<EOF
{
  "listen": { "address": "127.0.0.1", "port": 28449, "workers": 1 },
  "tls": { "cert": "$CERTS/proxy.crt", "key": "$CERTS/proxy.key" },
  "admin": { "address": "127.0.0.1", "port": 29909 },
  "upstream": { "url": "https://127.0.0.1:19443", "ca_file": "$CERTS/ca.crt" },
  "credentials": { "agency_token_file": "agency.token" },
  "auth": { "issuers": [ { "issuer": "proxy-bench", "audiences": [],
    "keys": [ { "alg": "$ALG", "pem_file": "$KEY_PUB" } ] } ],
    "token_cache_entries": $CACHE_ENTRIES },
  "policies": { "dir": "policies" },
  "audit": $AUDIT,
  "access_log": { "file": "access-callgrind.log" },
  "rate_limit": { "per_subject": { "burst": 1000000000, "per_seconds": 1 },
                  "upstream": { "burst": 1000000000, "per_seconds": 1, "daily": 1000000000 }$REDIS_JSON }
}
EOF
started_upstream=0
if ! ss -Hltn "sport = :19443" | grep -q .; then "$BENCH/upstream.sh" start >/dev/null; started_upstream=1; fi
trap '[ $started_upstream = 1 ] && "$BENCH/upstream.sh" stop >/dev/null 2>&1 || true' EXIT
if [ "$ALG" = RS256 ]; then
  TOKEN=$("$PY" "$BENCH/mint-jwt.py" --alg RS256 --scope $SCOPE --exp-in 7200)
else
  TOKEN=$("$top/build-bench/ghl-gateway" mint --key "$KEY" --alg "$ALG" --iss proxy-bench \
    --sub bench-user-1 --scope $SCOPE --ttl 7200)
fi

count() { # count REQUESTS -> total Ir of a gateway run serving them
  local out=$GW/callgrind.$1 pid
  rm -f "$out" "$GW/audit/callgrind."*
  (cd "$GW" && exec valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$top/build-bench/ghl-gateway" run -c callgrind.json 2>>"$GW/gateway-callgrind.log") &
  pid=$!
  for _ in $(seq 100); do ss -Hltn "sport = :28449" | grep -q . && break; sleep 0.2; done
  "$PY" - "$1" "$TOKEN" "$CERTS/ca.crt" "$MODE" <<'EOF'
import http.client, ssl, sys
n, token, ca, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = http.client.HTTPSConnection("127.0.0.1", 28449, context=ssl.create_default_context(cafile=ca))
h = {"Authorization": "Bearer " + token, "Version": "2021-07-28"}
# the body of tests/bench/wrk-create.lua
body = ('{"companyId":"ve9EPM428h8vShlRW1KT","firstName":"Ada","lastName":"Lovelace",'
        '"email":"ada@example.com","password":"Str0ng!Passw0rd","type":"account","role":"user",'
        '"locationIds":["C2QujeCh8ZnC7al2InWR"],"scopes":["contacts.write"],'
        '"scopesAssignedToOnly":["contacts.write"]}')
for _ in range(n):
    if mode == "get":
        c.request("GET", "/users/abc", headers=h)
    else:
        c.request("POST", "/users/", body=body, headers=dict(h, **{"Content-Type": "application/json"}))
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit("status %d" % r.status)
EOF
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:/ {print $2}' "$out"
}
small=$(count $((N / 10)))
big=$(count $((N + N / 10)))
CACHE_WHAT="cache warm"
[ "$CACHE_ENTRIES" = 0 ] && CACHE_WHAT="token cache off"
case $MODE in
  get) what="keep-alive GET /users/{id}, $ALG, $CACHE_WHAT" ;;
  create) what="keep-alive create-user, audit file on (fsync), $ALG, $CACHE_WHAT" ;;
  create-noaudit) what="keep-alive create-user, audit file off, $ALG, $CACHE_WHAT" ;;
esac
echo "instructions per request ($what): $(( (big - small) / N ))"
