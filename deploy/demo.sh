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
  "auth": { "issuers": [ {
    "issuer": "https://idp.example.com",
    "audiences": ["ghl-gateway"],
    "keys": [ { "kid": "demo-rs256", "alg": "RS256", "pem_file": "../../certs/dev/jwt-rs256.pub.pem" } ]
  } ] },
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

mint() { # sub scope
  build/ghl-gateway mint --key certs/dev/jwt-rs256.key --alg RS256 --kid demo-rs256 \
    --iss https://idp.example.com --aud ghl-gateway --sub "$1" --scope "$2" --ttl 3600
}
writer=$(mint onboarding-bot "users.readonly users.write")
reader=$(mint support-console "users.readonly")
c="curl -s --cacert $top/certs/dev/ca.crt -H 'Version: 2021-07-28'"
u="https://localhost:$gw_port"
cat <<TXT

ghl-sandbox (the stand-in for HighLevel) listens on https://localhost:$sb_port, the gateway on
$u. The gateway holds the HighLevel credentials; your commands never do: they carry a JWT
from the organisation's identity provider (here: minted with the development key, valid 1 h).

NOTE: policies and the audit log arrive with later issues. Today the gateway authenticates
the caller (JWT, scope per operation), checks the request (route, target, Version, query,
strict JSON), and forwards it with its own credential.

First, in your shell (one line each):

  export WRITER='$writer'
  export READER='$reader'

Then try:

  # search the company's users (users.readonly)
  $c -H "Authorization: Bearer \$READER" '$u/users/search?companyId=$company&query=ada'

  # read one user
  $c -H "Authorization: Bearer \$READER" $u/users/u1Ada0000000000000001

  # create a user (users.write): 201; the upstream gets the gateway's own serialization
  $c -H "Authorization: Bearer \$WRITER" -X POST $u/users/ -H 'Content-Type: application/json' -d '{"companyId":"$company","firstName":"Alan","lastName":"Turing","email":"alan@example.com","password":"Str0ng!Passw0rd","type":"account","role":"user","locationIds":["$location"]}'

  # the same with the read-only token: 401, "The token is not authorized for this scope."
  $c -i -H "Authorization: Bearer \$READER" -X POST $u/users/ -H 'Content-Type: application/json' -d '{"companyId":"$company","firstName":"Alan","lastName":"Turing","email":"alan2@example.com","password":"Str0ng!Passw0rd","type":"account","role":"user","locationIds":["$location"]}'

  # no token: 401 with WWW-Authenticate: Bearer realm="ghl-gateway"
  $c -i $u/users/u1Ada0000000000000001

  # users of a location: sent upstream with that location's Sub-Account token
  $c -H "Authorization: Bearer \$READER" '$u/users/?locationId=$location'

  # refused by the gateway: unknown route (404), bad target (400)
  $c -H "Authorization: Bearer \$READER" $u/contacts/abc
  $c -H "Authorization: Bearer \$READER" $u/users/..%2f/x

  # mint your own: build/ghl-gateway mint --key certs/dev/jwt-rs256.key --alg RS256 --kid demo-rs256 --iss https://idp.example.com --aud ghl-gateway --sub me --scope users.readonly

What reached the upstream:   tail -f $top/$run/journal.jsonl
Access log:                  tail -f $top/$run/access.log
Press Ctrl-C to stop.
TXT
wait "${pids[1]}"
