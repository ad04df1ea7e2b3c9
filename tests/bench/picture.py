#!/usr/bin/python3
"""Samples a gateway's /metrics once a second while a benchmark runs, then draws the request
rate and the latency percentiles over time as a PNG (matplotlib).

  picture.py sample URL SECONDS FILE    GET URL (the admin listener's /metrics) every second
                                        for SECONDS, one JSON line per second: the time, the
                                        requests answered, the cumulative counts of the request
                                        duration histogram (every op summed) and of the
                                        upstream duration histogram
  picture.py draw FILE PNG [TITLE] [PHASES]
                                        the picture; PHASES ("SECONDS:LABEL,..." from the start
                                        of the sampling) marks the load steps

Percentiles are computed per second from the histogram buckets, interpolating linearly inside
a bucket as Prometheus's histogram_quantile does: their resolution is the buckets' (0.5, 1,
2.5, 5, 10, 25 ms ...). Used by tests/bench/picture.sh; not a test.
"""
import json
import re
import sys
import time
import urllib.request

REQ = "ghl_gateway_requests_total"
REQ_H = "ghl_gateway_request_duration_seconds_bucket"
UP_H = "ghl_gateway_upstream_duration_seconds_bucket"


def scrape(url):
    """(requests answered, {le: count} of the request histogram, {le: count} upstream)."""
    text = urllib.request.urlopen(url, timeout=2).read().decode()
    total, req, up = 0.0, {}, {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        le = re.search(r'le="([^"]+)"', labels)
        if name == REQ:
            total += value
        elif name == REQ_H and le:
            req[le.group(1)] = req.get(le.group(1), 0.0) + value
        elif name == UP_H and le:
            up[le.group(1)] = up.get(le.group(1), 0.0) + value
    return total, req, up


def sample(url, seconds, path):
    start = time.time()
    with open(path, "w") as f:
        for i in range(int(seconds) + 1):
            time.sleep(max(0.0, start + i - time.time()))
            try:
                total, req, up = scrape(url)
            except OSError:
                continue  # not up yet, or gone: a gap in the picture
            f.write(json.dumps({"t": round(time.time() - start, 3), "requests": total,
                                "req": req, "up": up}) + "\n")
            f.flush()


def les_counts(row, key, les):
    return [row[key].get(le, 0.0) for le in les]


def quantile(q, les, counts):
    """histogram_quantile over one interval's bucket increases (cumulative, les ascending)."""
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, counts):
        if c >= rank:
            if le == float("inf"):
                return prev_le  # past the last bucket: its lower bound, as Prometheus does
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return prev_le


def draw(path, png, title="", phases=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]

    def les(key):
        seen = {le for r in rows for le in r[key]}
        return sorted(seen, key=lambda b: float("inf") if b == "+Inf" else float(b))

    req_les, up_les = les("req"), les("up")
    req_x = [float("inf") if b == "+Inf" else float(b) for b in req_les]
    up_x = [float("inf") if b == "+Inf" else float(b) for b in up_les]
    t, rate, lat, up99 = [], [], {q: [] for q in (0.5, 0.9, 0.99)}, []
    for a, b in zip(rows, rows[1:]):
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        t.append(b["t"])
        rate.append((b["requests"] - a["requests"]) / dt)
        d = [y - x for x, y in zip(les_counts(a, "req", req_les), les_counts(b, "req", req_les))]
        for q in lat:
            v = quantile(q, req_x, d) if d else None
            lat[q].append(v * 1000 if v is not None else float("nan"))
        du = [y - x for x, y in zip(les_counts(a, "up", up_les), les_counts(b, "up", up_les))]
        v = quantile(0.99, up_x, du) if du else None
        up99.append(v * 1000 if v is not None else float("nan"))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, dpi=80)
    ax1.plot(t, rate, color="tab:blue", linewidth=1.2)
    ax1.set_ylabel("requests / s")
    ax1.set_ylim(bottom=0)
    ax1.grid(alpha=0.3)
    ax1.set_title(title or "ghl-gateway under load", fontsize=11)
    for q, style in ((0.5, "-"), (0.9, "--"), (0.99, "-")):
        ax2.plot(t, lat[q], style, linewidth=1.2 if q != 0.99 else 1.6,
                 label="p%g (request)" % (q * 100))
    ax2.plot(t, up99, ":", color="tab:gray", linewidth=1.2, label="p99 (upstream call)")
    ax2.set_ylabel("latency, ms (from the histograms)")
    ax2.set_xlabel("seconds")
    ax2.set_yscale("log")  # p50 and the tail on one axis
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper left", fontsize=8, ncol=4)
    for part in filter(None, phases.split(",")):
        at, _, label = part.partition(":")
        for ax in (ax1, ax2):
            ax.axvline(float(at), color="tab:red", alpha=0.3, linewidth=0.8)
        ax1.annotate(label, (float(at), 0), xytext=(3, 3), textcoords="offset points",
                     fontsize=8, color="tab:red")
    fig.tight_layout()
    fig.savefig(png)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "sample":
        sample(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) in (4, 5, 6) and sys.argv[1] == "draw":
        draw(*sys.argv[2:])
    else:
        sys.exit(__doc__)
