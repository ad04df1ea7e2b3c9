#!/usr/bin/python3
"""Checks deploy/prometheus/ghl-gateway-rules.yml:

  - `promtool check rules` accepts it, and `promtool test rules` passes every file of
    deploy/prometheus/tests/ (which must load this rules file);
  - every alert has a severity (critical, warning, info) and the annotations summary,
    description and runbook_url, the last pointing at docs/runbook.md#<alert name in lower
    case>, a heading that exists there;
  - every alert has at least one promtool case where it fires and one where it does not;
  - every metric name the rules read, and every series the tests feed them, exists in a real
    gateway's /metrics (the file given, written by the prometheus_metrics_sample test), so a
    rule and its test cannot agree on a name the gateway does not have.

usage: check-rules.py --root REPO_ROOT --metrics METRICS_TEXT
Exit 0 when every check passes; 1 with every failure listed otherwise.
"""
import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promlib  # noqa: E402

try:
    import yaml
except ImportError:
    print("FAIL: PyYAML is missing (Debian package python3-yaml; tests/lib-deps.sh installs it)")
    sys.exit(1)

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--metrics", required=True)
args = ap.parse_args()
root = os.path.abspath(args.root)
rules_path = os.path.join(root, "deploy", "prometheus", "ghl-gateway-rules.yml")
tests_dir = os.path.join(root, "deploy", "prometheus", "tests")
runbook_path = os.path.join(root, "docs", "runbook.md")
failures = []


def fail(msg):
    failures.append(msg)


tool = promlib.promtool()
if tool is None:
    print("FAIL: promtool is missing (Debian package prometheus; tests/lib-deps.sh installs it)")
    sys.exit(1)

rc, out = promlib.run([tool, "check", "rules", rules_path])
print(out.rstrip())
if rc != 0:
    fail("promtool check rules failed (exit %d)" % rc)
test_files = sorted(glob.glob(os.path.join(tests_dir, "*.yml")))
if not test_files:
    fail("no promtool test files in %s" % tests_dir)
else:
    rc, out = promlib.run([tool, "test", "rules", *test_files])
    print(out.rstrip())
    if rc != 0:
        fail("promtool test rules failed (exit %d)" % rc)

with open(rules_path, encoding="utf-8") as f:
    rules = yaml.safe_load(f)
with open(runbook_path, encoding="utf-8") as f:
    headings = {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", f.read(), re.M)}
try:
    with open(args.metrics, encoding="utf-8") as f:
        offered = promlib.offered_names(f.read())
except OSError as e:
    print("FAIL: no /metrics sample (%s): run the prometheus_metrics_sample test" % e)
    sys.exit(1)

alerts = {}
for g in rules.get("groups", []):
    for r in g.get("rules", []):
        what = r.get("alert") or r.get("record")
        expr = str(r.get("expr", ""))
        names = promlib.metric_names(expr)
        if not names:
            fail("%s: the expression reads no metric" % what)
        for n in promlib.unknown_names(expr, offered):
            fail("%s: %s is not in the gateway's /metrics" % (what, n))
        if "alert" not in r:
            continue
        name = r["alert"]
        if name in alerts:
            fail("%s: defined twice" % name)
        alerts[name] = r
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            fail("%s: severity must be critical, warning or info" % name)
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                fail("%s: annotation %s missing" % (name, key))
        want = "docs/runbook.md#" + name.lower()
        if ann.get("runbook_url") != want:
            fail("%s: runbook_url must be %s, is %s" % (name, want, ann.get("runbook_url")))
        if name not in headings:
            fail("%s: docs/runbook.md has no heading '### %s'" % (name, name))

firing, quiet = set(), set()
for path in test_files:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    base = os.path.dirname(path)
    loaded = [os.path.realpath(os.path.join(base, p)) for p in doc.get("rule_files", [])]
    if os.path.realpath(rules_path) not in loaded:
        fail("%s: does not load %s" % (os.path.basename(path), rules_path))
    for t in doc.get("tests", []):
        for s in t.get("input_series", []):
            series = s.get("series", "")
            m = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", series)
            if m is None or (m.group(1) not in offered and m.group(1) not in promlib.PROMETHEUS_OWN):
                fail("%s: input series %s is not in the gateway's /metrics"
                     % (os.path.basename(path), series))
        for a in t.get("alert_rule_test", []):
            name = a.get("alertname")
            if name not in alerts:
                fail("%s: tests an alert the rules do not have: %s" % (os.path.basename(path), name))
            (firing if a.get("exp_alerts") else quiet).add(name)

for name in sorted(alerts):
    if name not in firing:
        fail("%s: no promtool case where it fires" % name)
    if name not in quiet:
        fail("%s: no promtool case where it does not fire" % name)

for f in failures:
    print("FAIL: " + f)
print("%d alerts, %d test files; %d problem(s)" % (len(alerts), len(test_files), len(failures)))
sys.exit(1 if failures else 0)
