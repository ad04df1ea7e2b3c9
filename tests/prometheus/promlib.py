"""What the checks of tests/prometheus/ share: the metric names a real /metrics text offers,
the metric names a PromQL expression reads, Grafana's variables replaced by values promtool
accepts, and promtool itself."""
import os
import re
import shutil
import subprocess

# Series Prometheus makes itself: not the gateway's to offer.
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds",
                  "scrape_samples_scraped"}

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "Inf", "NaN"}


def promtool():
    """The path of promtool, or None (Debian package prometheus; tests/lib-deps.sh)."""
    for p in ("/usr/bin/promtool", shutil.which("promtool") or ""):
        if p and os.access(p, os.X_OK):
            return p
    return None


def run(args):
    """Runs a command; returns (exit status, stdout + stderr)."""
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    return r.returncode, r.stdout


def offered_names(text):
    """The series names a Prometheus text exposition offers: each family of a # TYPE line (a
    histogram as its _bucket, _sum and _count; a summary as itself, _sum and _count), and the
    name of every sample line."""
    names = set()
    for m in re.finditer(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$", text, re.M):
        name, kind = m.group(1), m.group(2)
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "summary":
            names |= {name, name + "_sum", name + "_count"}
        else:
            names.add(name)
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M):
        names.add(m.group(1))
    return names


def families(text):
    """Family name -> type, from the # TYPE lines."""
    return dict(re.findall(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$", text, re.M))


def metric_names(expr):
    """The metric names a PromQL expression selects: identifiers outside strings, label
    matchers, grouping lists and ranges that are neither functions, aggregations, keywords nor
    numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    e = re.sub(r"#[^\n]*", " ", e)  # comments
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"(?<![A-Za-z0-9_:])[0-9][A-Za-z0-9_.]*", " ", e)  # numbers and durations
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        after = e[m.end():].lstrip()
        if word in KEYWORDS or after.startswith("("):
            continue
        names.add(word)
    return names


def unknown_names(expr, offered):
    """The names expr reads that neither the gateway nor Prometheus offers."""
    return sorted(n for n in metric_names(expr) if n not in offered and n not in PROMETHEUS_OWN)


GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")


def grafana_expand(expr):
    """Grafana's variables replaced as a query of every job and instance would see them: the
    interval variables by 1m, any other variable (a label value) by .+ (the integration test
    substitutes the same)."""
    for v in GRAFANA_INTERVALS:
        expr = expr.replace("${%s}" % v[1:], "1m").replace(v, "1m")
    expr = re.sub(r"\$\{[A-Za-z0-9_]+(:[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_]+\]\]",
                  ".+", expr)
    return expr
