#!/usr/bin/python3
"""Checks deploy/grafana/ghl-gateway.json:

  - its shape: a "datasource" variable of type datasource (prometheus) that every panel and
    target uses, unique panel ids, every panel with a target and every target with an expr;
  - every target's expr, and every query variable's metric, with Grafana's variables replaced
    (promlib.grafana_expand), written as recording rules to a generated rules file that
    `promtool check rules` must accept (PromQL syntax and types, as Prometheus parses them);
  - every metric name those expressions read exists in a real gateway's /metrics (the file
    given, written by the prometheus_metrics_sample test; a histogram's _bucket, _sum and
    _count belong to its family);
  - the families the operators' guide promises on the dashboard are on it.

Families of /metrics the dashboard does not show are listed as a note, not a failure. The
integration test (integration_prometheus) also runs every expression against a real Prometheus.

usage: check-dashboard.py --root REPO_ROOT --metrics METRICS_TEXT [--keep DIR]
Exit 0 when every check passes; 1 with every failure listed otherwise.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promlib  # noqa: E402

try:
    import yaml
except ImportError:
    print("FAIL: PyYAML is missing (Debian package python3-yaml; tests/lib-deps.sh installs it)")
    sys.exit(1)

# the list: requests and status by op, latency percentiles, auth failures by reason,
# policy denials, upstream status and latency, rate limiting and the daily budget, audit write
# latency and last seq, token cache hit ratio, connections, JWKS, certificates
REQUIRED = [
    "ghl_gateway_requests_total", "ghl_gateway_request_duration_seconds_bucket",
    "ghl_gateway_auth_failures_total", "ghl_gateway_policy_denials_total",
    "ghl_gateway_upstream_requests_total", "ghl_gateway_upstream_duration_seconds_bucket",
    "ghl_gateway_upstream_errors_total", "ghl_gateway_rate_limited_total",
    "ghl_gateway_ratelimit_daily_remaining", "ghl_gateway_audit_write_seconds_bucket",
    "ghl_gateway_audit_last_seq", "ghl_gateway_token_cache_hits_total",
    "ghl_gateway_token_cache_misses_total", "ghl_gateway_connections_active",
    "ghl_gateway_jwks_fetches_total", "ghl_gateway_jwks_refetch_waits_total",
    "ghl_gateway_tls_cert_expiry_seconds",
]
DS_UID = "${datasource}"

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--metrics", required=True)
ap.add_argument("--keep", help="write the generated rules file into this folder")
args = ap.parse_args()
path = os.path.join(os.path.abspath(args.root), "deploy", "grafana", "ghl-gateway.json")
failures = []


def fail(msg):
    failures.append(msg)


tool = promlib.promtool()
if tool is None:
    print("FAIL: promtool is missing (Debian package prometheus; tests/lib-deps.sh installs it)")
    sys.exit(1)
try:
    with open(args.metrics, encoding="utf-8") as f:
        sample = f.read()
except OSError as e:
    print("FAIL: no /metrics sample (%s): run the prometheus_metrics_sample test" % e)
    sys.exit(1)
offered = promlib.offered_names(sample)
try:
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    print("FAIL: %s: %s" % (path, e))
    sys.exit(1)

variables = dash.get("templating", {}).get("list", [])
ds = [v for v in variables if v.get("name") == "datasource"]
if not (ds and ds[0].get("type") == "datasource" and ds[0].get("query") == "prometheus"):
    fail("no variable 'datasource' of type datasource (prometheus)")


def uses_ds(obj):
    d = obj.get("datasource")
    return isinstance(d, dict) and d.get("uid") == DS_UID and d.get("type") == "prometheus"


def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))


exprs = []  # (record name, where, expr as written)
for v in variables:
    if v.get("type") != "query":
        continue
    if not uses_ds(v):
        fail("variable %s: datasource is not ${datasource}" % v.get("name"))
    qv = v.get("query")
    text = qv.get("query", "") if isinstance(qv, dict) else str(qv or "")
    m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*", text)
    if m is None:
        fail("variable %s: expected label_values(SELECTOR, LABEL), got %r" % (v.get("name"), text))
        continue
    exprs.append(("ghl_gateway_dashboard:variable_%s" % v["name"], "variable " + v["name"],
                  m.group(1)))

ids = set()
for p in walk(dash.get("panels", [])):
    pid, title = p.get("id"), p.get("title", "?")
    if pid in ids or not isinstance(pid, int):
        fail("panel %r: id %r missing or not unique" % (title, pid))
    ids.add(pid)
    if p.get("type") == "row":
        continue
    if not isinstance(p.get("gridPos"), dict):
        fail("panel %r: no gridPos" % title)
    if not uses_ds(p):
        fail("panel %r: datasource is not ${datasource}" % title)
    targets = p.get("targets", [])
    if not targets:
        fail("panel %r: no target" % title)
    refs = set()
    for t in targets:
        ref = t.get("refId", "")
        if not re.fullmatch(r"[A-Za-z0-9_]+", ref) or ref in refs:
            fail("panel %r: refId %r missing, not a name or not unique" % (title, ref))
        refs.add(ref)
        if not uses_ds(t):
            fail("panel %r target %s: datasource is not ${datasource}" % (title, ref))
        if not str(t.get("expr", "")).strip():
            fail("panel %r target %s: no expr" % (title, ref))
            continue
        exprs.append(("ghl_gateway_dashboard:panel%d_%s" % (pid, ref),
                      "panel %r target %s" % (title, ref), t["expr"]))

used = set()
for _, where, expr in exprs:
    names = promlib.metric_names(promlib.grafana_expand(expr))
    used |= names
    if not names:
        fail("%s: reads no metric" % where)
    for n in promlib.unknown_names(promlib.grafana_expand(expr), offered):
        fail("%s: %s is not in the gateway's /metrics" % (where, n))
for n in REQUIRED:
    if n not in used:
        fail("the dashboard shows no %s" % n)

tmp = tempfile.mkdtemp(prefix="gw-dashboard-")
try:
    rules_path = os.path.join(args.keep or tmp, "dashboard-rules.yml")
    rules = {"groups": [{"name": "ghl-gateway-dashboard",
                         "rules": [{"record": rec, "expr": promlib.grafana_expand(e)}
                                   for rec, _, e in exprs]}]}
    with open(rules_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(rules, f, sort_keys=False, width=1000)
    rc, out = promlib.run([tool, "check", "rules", rules_path])
    print(out.rstrip())
    if rc != 0:
        fail("promtool check rules on the dashboard's expressions failed (exit %d)" % rc)
finally:
    shutil.rmtree(tmp)

shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
missing = sorted(f for f in promlib.families(sample) if f not in shown)
if missing:
    print("note: families of /metrics not on the dashboard: " + ", ".join(missing))
for f in failures:
    print("FAIL: " + f)
print("%d expressions in %d panels; %d problem(s)" % (len(exprs), len(ids), len(failures)))
sys.exit(1 if failures else 0)
