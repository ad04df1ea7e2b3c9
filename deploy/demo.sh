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
other=M2QrtfVt8ZnC7cv2InDL
elsewhere=Xq81LpZt4mNc0aWv6RbD
# Ada is a user the onboarding bot could have created (its role, scopes and pinned flags);
# Edsger is an admin of the same location, which the bot may not touch.
bot_flags='"assignedDataOnly": true, "settingsEnabled": false, "refundsEnabled": false,
    "recordPaymentEnabled": false, "cancelSubscriptionEnabled": false, "paymentsEnabled": false,
    "exportPaymentsEnabled": false'
cat > "$run/seed.json" <<JSON
[ { "id": "u1Ada0000000000000001", "companyId": "$company", "firstName": "Ada",
    "lastName": "Lovelace", "email": "ada@example.com", "phone": "+15550101",
    "roles": { "type": "account", "role": "user", "locationIds": ["$location"] },
    "scopes": ["contacts.write"], "permissions": { $bot_flags } },
  { "id": "u4Edsger000000000004", "companyId": "$company", "firstName": "Edsger",
    "lastName": "Dijkstra", "email": "edsger@example.com",
    "roles": { "type": "account", "role": "admin", "locationIds": ["$location"] },
    "scopes": ["contacts.write"], "permissions": { $bot_flags } },
  { "id": "u2Grace00000000000002", "companyId": "$company", "firstName": "Grace",
    "lastName": "Hopper", "email": "grace@example.com", "phone": "+15550102",
    "roles": { "type": "account", "role": "admin", "locationIds": ["$location", "$other"] } },
  { "id": "u3Linus00000000000003", "companyId": "$company", "firstName": "Linus",
    "lastName": "Pauling", "email": "linus@example.com", "phone": "+15550103",
    "roles": { "type": "account", "role": "user", "locationIds": ["$elsewhere"] } } ]
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

mint() { # sub scope [more mint arguments]
  local sub=$1 scope=$2
  shift 2
  build/ghl-gateway mint --key certs/dev/jwt-rs256.key --alg RS256 --kid demo-rs256 \
    --iss https://idp.example.com --aud ghl-gateway --sub "$sub" --scope "$scope" --ttl 3600 "$@"
}
writer=$(mint svc-onboarding "users.readonly users.write")
reader=$(mint support-agent users.readonly --claim 'groups=["support"]')
c="curl -s --cacert $top/certs/dev/ca.crt -H 'Version: 2021-07-28'"
u="https://localhost:$gw_port"
hire='"companyId":"'$company'","firstName":"Alan","lastName":"Turing","email":"alan@example.com","password":"Str0ng!Passw0rd","type":"account","role":"user","locationIds":["'$location'"],"scopes":["contacts.write","conversations.readonly"],"scopesAssignedToOnly":["contacts.write"]'
pins='"permissions":{"assignedDataOnly":true,"settingsEnabled":false,"refundsEnabled":false,"recordPaymentEnabled":false,"cancelSubscriptionEnabled":false,"paymentsEnabled":false,"exportPaymentsEnabled":false}'
cat <<TXT

ghl-sandbox (the stand-in for HighLevel) listens on https://localhost:$sb_port, the gateway on
$u. The gateway holds the HighLevel credentials; your commands never do: they carry a JWT
from the organisation's identity provider (here: minted with the development key, valid 1 h).
The policies are policies/examples/: WRITER is the onboarding bot (onboarding-bot.json),
READER a support agent (support-console.json). Every change and every denial is written to
the audit log (deploy/demo-run/audit/audit.jsonl), hash-chained.

First, in your shell (one line each):

  export WRITER='$writer'
  export READER='$reader'

Then try:

  # create a new hire as the onboarding bot: allowed (201), every pinned permission sent
  $c -H "Authorization: Bearer \$WRITER" -X POST $u/users/ -H 'Content-Type: application/json' -d '{$hire,$pins}'

  # the same without "permissions": 403. Left out, the flags take their upstream defaults
  # (assignedDataOnly false, paymentsEnabled true, ...), which the policy's pins refuse: the
  # gateway checks what the upstream would apply, not only what is sent
  $c -H "Authorization: Bearer \$WRITER" -X POST $u/users/ -H 'Content-Type: application/json' -d '{$hire}'

  # read a user as the support console: phone and lcPhone are redacted by its policy
  $c -H "Authorization: Bearer \$READER" $u/users/u1Ada0000000000000001

  # search one of its locations (redacted too); a user outside its locations is refused (403)
  $c -H "Authorization: Bearer \$READER" '$u/users/search?companyId=$company&locationId=$location'
  $c -H "Authorization: Bearer \$READER" $u/users/u3Linus00000000000003

  # the bot may not touch a user outside its location: the gateway fetches the user first,
  # decides, and never sends the PUT (see the journal below: only a GET)
  $c -H "Authorization: Bearer \$WRITER" -X PUT $u/users/u3Linus00000000000003 -H 'Content-Type: application/json' -d '{"lastName":"P."}'

  # the bot may reset the password of a user it could have created (200), but not of an
  # admin of its own location (403: a policy touches only users within its grant)
  $c -H "Authorization: Bearer \$WRITER" -X PUT $u/users/u1Ada0000000000000001 -H 'Content-Type: application/json' -d '{"password":"N3w-Passw0rd-2026!"}'
  $c -H "Authorization: Bearer \$WRITER" -X PUT $u/users/u4Edsger000000000004 -H 'Content-Type: application/json' -d '{"password":"N3w-Passw0rd-2026!"}'

  # the support console may not write at all: 401 (its token lacks users.write)
  $c -i -H "Authorization: Bearer \$READER" -X DELETE $u/users/u1Ada0000000000000001

  # no token: 401 with WWW-Authenticate: Bearer realm="ghl-gateway"
  $c -i $u/users/u1Ada0000000000000001

  # ask the gateway offline why (same code as the live path; exit 0 allowed, 1 denied)
  build/ghl-gateway explain -c $run/gateway.json --claims '{"iss":"https://idp.example.com","sub":"svc-onboarding","scope":"users.write"}' --request 'POST /users/' --body '{$hire}'

  # run the example policies' test cases
  build/ghl-gateway policy-test -c policies/tests/gateway.json policies/tests/onboarding-bot.cases.json

  # the audit log: who changed which user, what it was before, what the upstream said
  tail -n 4 $run/audit/audit.jsonl
  build/ghl-gateway audit-verify $run/audit/audit.jsonl
  curl -s http://127.0.0.1:9901/readyz; curl -s http://127.0.0.1:9901/metrics | grep audit_last_seq

What reached the upstream:   tail -f $top/$run/journal.jsonl
Access log:                  tail -f $top/$run/access.log
Press Ctrl-C to stop.
TXT
wait "${pids[1]}"
