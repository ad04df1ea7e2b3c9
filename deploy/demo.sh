#!/usr/bin/env bash
# The demo: installs what is missing, builds, makes development certificates and secrets,
# starts ghl-sandbox (a local stand-in for HighLevel's Users API) and the gateway in front of
# it, and prints curl commands to try. Runs until Ctrl-C. Usage: deploy/demo.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source tests/lib-deps.sh
gw_install_missing

echo "== building (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target ghl-gateway ghl-sandbox >/dev/null

certs/make-dev-certs.sh >/dev/null
run=deploy/demo-run
mkdir -p "$run/secrets" "$run/audit"
umask 077
[ -f "$run/secrets/agency.token" ] || openssl rand -hex 24 > "$run/secrets/agency.token"
[ -f "$run/secrets/location.token" ] || openssl rand -hex 24 > "$run/secrets/location.token"
umask 022
company=ve9EPM428h8vShlRW1KT
location=C2QujeCh8ZnC7al2InWR
cat > "$run/seed.json" <<JSON
[ { "id": "u1Ada0000000000000001", "companyId": "$company", "firstName": "Ada",
    "lastName": "Lovelace", "email": "ada@example.com",
    "roles": { "type": "account", "role": "user", "locationIds": ["$location"] } },
  { "id": "u2Grace00000000000002", "companyId": "$company", "firstName": "Grace",
    "lastName": "Hopper", "email": "grace@example.com",
    "roles": { "type": "account", "role": "admin", "locationIds": ["$location"] } } ]
JSON
gw_port=${GW_PORT:-8443}
sb_port=${SANDBOX_PORT:-9443}
cat > "$run/gateway.json" <<JSON
{
  // written by deploy/demo.sh: the gateway in front of ghl-sandbox on this machine
  "listen": { "address": "127.0.0.1", "port": $gw_port, "workers": 2 },
  "tls": { "cert": "../../certs/dev/gateway.crt", "key": "../../certs/dev/gateway.key" },
  "admin": { "address": "127.0.0.1", "port": 9901 },
  "upstream": { "url": "https://localhost:$sb_port", "ca_file": "../../certs/dev/ca.crt" },
  "credentials": { "agency_token_file": "secrets/agency.token",
                   "location_token_files": { "$location": "secrets/location.token" } },
  "policies": { "dir": "../../policies/examples" },
  "audit": { "file": "audit/audit.jsonl" },
  "access_log": { "file": "access.log" }
}
JSON

build/ghl-gateway check -c "$run/gateway.json"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo; echo "demo stopped"
}
trap cleanup INT TERM EXIT

build/ghl-sandbox --listen "127.0.0.1:$sb_port" --cert certs/dev/sandbox.crt \
  --key certs/dev/sandbox.key --agency-token-file "$run/secrets/agency.token" \
  --location-token "$location=$run/secrets/location.token" --seed "$run/seed.json" \
  --journal "$run/journal.jsonl" > "$run/sandbox.log" 2>&1 &
pids+=($!)
build/ghl-gateway run -c "$run/gateway.json" 2> "$run/gateway.log" &
pids+=($!)
for _ in $(seq 50); do
  curl -s -o /dev/null --cacert certs/dev/ca.crt "https://localhost:$gw_port/" && break
  sleep 0.1
done

c="curl -s --cacert $top/certs/dev/ca.crt -H 'Version: 2021-07-28'"
u="https://localhost:$gw_port"
cat <<TXT

ghl-sandbox (the stand-in for HighLevel) listens on https://localhost:$sb_port, the gateway on
$u. The gateway holds the HighLevel credentials; your commands never do.

NOTE: this build forwards without authenticating callers: JWT authentication and policies
arrive with the next issues. Requests are still checked (route, target, Version header,
query, strict JSON), and only the gateway's credential ever reaches the upstream.

Try (each command is one line):

  # search the company's users
  $c '$u/users/search?companyId=$company&query=ada'

  # read one user
  $c $u/users/u1Ada0000000000000001

  # create a user (201); the upstream gets the gateway's own serialization of the body
  $c -X POST $u/users/ -H 'Content-Type: application/json' -d '{"companyId":"$company","firstName":"Alan","lastName":"Turing","email":"alan@example.com","password":"Str0ng!Passw0rd","type":"account","role":"user","locationIds":["$location"]}'

  # users of a location: sent upstream with that location's Sub-Account token
  $c '$u/users/?locationId=$location'

  # refused by the gateway: unknown route (404), missing Version header (400), bad target (400)
  $c $u/contacts/abc
  curl -s --cacert $top/certs/dev/ca.crt $u/users/u1Ada0000000000000001
  $c $u/users/..%2f/x

What reached the upstream:   tail -f $top/$run/journal.jsonl
Access log:                  tail -f $top/$run/access.log
Press Ctrl-C to stop.
TXT
wait "${pids[1]}"
