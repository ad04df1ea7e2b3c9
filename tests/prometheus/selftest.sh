#!/usr/bin/env bash
# The checks of the alert rules and the dashboard must fail when a rule's expression or a
# metric name is broken: each case copies deploy/prometheus, deploy/grafana and docs/runbook.md
# into a folder of its own, plants one fault, and expects check-rules.py or check-dashboard.py
# to exit 1 naming it; the unchanged copy must pass.
#   tests/prometheus/selftest.sh METRICS_TEXT      (a real /metrics, as the checks take)
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
metrics=${1:?usage: selftest.sh METRICS_TEXT}
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
n=0

# copy: a fresh tree with the files the checks read; prints its path
copy() {
  n=$((n + 1))
  local t=$tmp/t$n
  mkdir -p "$t/deploy" "$t/docs"
  cp -r "$root/deploy/prometheus" "$root/deploy/grafana" "$t/deploy/"
  cp "$root/docs/runbook.md" "$t/docs/"
  echo "$t"
}

# plant FILE OLD NEW: replaces the first OLD (a literal string, which must be there) by NEW
plant() {
  "$PY" - "$@" <<'EOF' || { echo "FAIL: cannot plant in $1"; exit 2; }
import sys
path, old, new = sys.argv[1:4]
text = open(path, encoding="utf-8").read()
if old not in text:
    sys.exit(1)
open(path, "w", encoding="utf-8").write(text.replace(old, new, 1))
EOF
}

# expect RC NAME CHECK TREE TEXT: CHECK (rules or dashboard) on TREE exits RC, output has TEXT
expect() {
  local out rc
  out=$("$PY" "$here/check-$3.py" --root "$4" --metrics "$metrics" 2>&1)
  rc=$?
  if [ "$rc" != "$1" ] || ! grep -qF -- "$5" <<<"$out"; then
    echo "FAIL $2: want exit $1 and \"$5\", got exit $rc:"
    echo "$out" | sed 's/^/    /'
    fails=$((fails + 1))
  else
    echo "ok   $2: $(grep -F -- "$5" <<<"$out" | head -1 | sed 's/^ *//')"
  fi
}

rules=deploy/prometheus/ghl-gateway-rules.yml
dash=deploy/grafana/ghl-gateway.json

t=$(copy)
expect 0 "the rules as shipped pass" rules "$t" "0 problem(s)"
expect 0 "the dashboard as shipped passes" dashboard "$t" "0 problem(s)"

t=$(copy)
plant "$t/$rules" "increase(ghl_gateway_audit_write_failures_total[5m])" \
  "increase(ghl_gateway_audit_write_failure_total[5m])"
expect 1 "a rule reading a metric the gateway does not have" rules "$t" \
  "GhlGatewayAuditWriteFailing: ghl_gateway_audit_write_failure_total is not in the gateway's /metrics"
expect 1 "... also fails its promtool case" rules "$t" "alertname: GhlGatewayAuditWriteFailing"

t=$(copy)
plant "$t/$rules" '/ sum by (job) (rate(ghl_gateway_requests_total[5m])) > 0.05' \
  '/ sum by (job) (rate(ghl_gateway_requests_total[5m])) > 0.5'
expect 1 "a rule's threshold changed" rules "$t" "alertname: GhlGatewayServerErrors"

t=$(copy)
plant "$t/$rules" 'ghl_gateway_ratelimit_daily_remaining == 0' 'ghl_gateway_ratelimit_daily_remaining != 0'
expect 1 "a rule's comparison inverted" rules "$t" "alertname: GhlGatewayDailyBudgetExhausted"

t=$(copy)
plant "$t/$rules" 'increase(ghl_gateway_audit_records_lost_total[15m]) > 0' \
  'increase(ghl_gateway_audit_records_lost_total[15m] > 0'
expect 1 "a rule that does not parse" rules "$t" "promtool check rules failed"

t=$(copy)
plant "$t/docs/runbook.md" "### GhlGatewayReloadFailed" "### Reload failed"
expect 1 "an alert without its runbook paragraph" rules "$t" \
  "GhlGatewayReloadFailed: docs/runbook.md has no heading"

t=$(copy)
plant "$t/deploy/prometheus/tests/auth-config.yml" "      - eval_time: 1m
        alertname: GhlGatewayReloadFailed
        exp_alerts: []" ""
plant "$t/deploy/prometheus/tests/auth-config.yml" "      - eval_time: 25m
        alertname: GhlGatewayReloadFailed
        exp_alerts: []" ""
expect 1 "an alert with no case where it does not fire" rules "$t" \
  "GhlGatewayReloadFailed: no promtool case where it does not fire"

t=$(copy)
plant "$t/$dash" "max by (instance) (ghl_gateway_audit_last_seq{" \
  "max by (instance) (ghl_gateway_audit_lastseq{"
expect 1 "a dashboard panel reading a metric the gateway does not have" dashboard "$t" \
  "ghl_gateway_audit_lastseq is not in the gateway's /metrics"

t=$(copy)
plant "$t/$dash" "sum by (reason) (rate(ghl_gateway_auth_failures_total{" \
  "sum by (reason) (rate(ghl_gateway_auth_failures_total{job}{"
expect 1 "a dashboard expression that does not parse" dashboard "$t" \
  "promtool check rules on the dashboard's expressions failed"

t=$(copy)
plant "$t/$dash" 'histogram_quantile(0.99, sum by (le) (rate(ghl_gateway_upstream_duration_seconds_bucket' \
  'histogram_quantile(0.99, sum by (le) (ghl_gateway_upstream_duration_seconds_bucket'
expect 1 "a dashboard expression of the wrong type (rate of an instant vector)" dashboard "$t" \
  "promtool check rules on the dashboard's expressions failed"

if [ $fails -eq 0 ]; then
  echo "self-test: every planted fault was caught"
else
  echo "self-test: $fails case(s) failed"
fi
[ $fails -eq 0 ]
