#!/usr/bin/python3
"""Checks what can be checked of deploy/ on a machine without systemd as init, a container
engine or a Kubernetes cluster:

  systemd/     the unit's hardening (and `systemd-analyze verify` + `security --offline`
               when systemd-analyze exists), the logrotate file (rename + SIGUSR1, never
               copytruncate, the paths of the configuration), and that the shipped
               gateway.json passes `ghl-gateway check` once its paths exist;
  container/   both stages on bookworm, a numeric non-root USER, COPY sources that exist,
               runtime packages covering every shared library the built binary needs;
  kubernetes/  every manifest parses as YAML and carries what deploy/ promises (3 replicas,
               probes on the admin port, resources, securityContext, config from ConfigMaps,
               secrets from Secrets, audit to stdout, Service/HPA/PDB/NetworkPolicy wired to
               the same pods), the ConfigMap's gateway.json and policies pass `ghl-gateway
               check`, and the rate limits stay within HighLevel's at maxReplicas;
               redis.yaml (the store of shared rate limits, applied on its own): one
               non-persistent, password-protected, non-root Redis 7 pod, its Service and
               NetworkPolicy wired to the gateway's, the ConfigMap's rate_limit.redis pointing
               at it, and, when redis-server is installed, its arguments run for real;
               prometheusrule.yaml (the alert rules for the Prometheus Operator, applied on
               its own): the groups of deploy/prometheus/ghl-gateway-rules.yml, unchanged.

usage: check-deploy.py REPO_ROOT GHL_GATEWAY_BINARY
Exit 0 when every check passes; 1 with every failure listed otherwise.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:
    print("FAIL: PyYAML is missing (Debian package python3-yaml; tests/lib-deps.sh installs it)")
    sys.exit(1)

ROOT, GATEWAY = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
DEPLOY = os.path.join(ROOT, "deploy")
failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)
    return cond


def read(*parts):
    with open(os.path.join(DEPLOY, *parts), encoding="utf-8") as f:
        return f.read()


def strip_comments(text):
    """The gateway's configuration allows // and /* */ comments outside strings."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load_config(text):
    import json
    return json.loads(strip_comments(text))


def commented_members(text, first):
    """Members a configuration keeps commented out ("// " before each line), from the line
    that starts with "first" through the end of that run of comment lines, as a dict; None
    when there is no such line or the lines are not JSON members."""
    import json
    lines = text.splitlines()
    body = re.compile(r"^\s*// ?(.*)$")
    start = next((i for i, l in enumerate(lines)
                  if body.match(l) and body.match(l).group(1).lstrip().startswith('"%s"' % first)),
                 None)
    if start is None:
        return None
    run = []
    for l in lines[start:]:
        m = body.match(l)
        if m is None:
            break
        run.append(m.group(1))
    try:
        return json.loads("{" + "\n".join(run).rstrip().rstrip(",") + "}")
    except ValueError:
        return None


def run_check(config_text, policies, label):
    """Recreates the configuration's file tree under a temporary directory (a self-signed
    certificate, an RSA public key, tokens, an HMAC key, the policies), points the JWKS URL
    at a closed local port (check only warns about it) and runs `ghl-gateway check`."""
    tmp = tempfile.mkdtemp(prefix="gw-deploy-")
    try:
        text = config_text
        for prefix in ("/etc/ghl-gateway/", "/var/lib/ghl-gateway/", "/var/log/ghl-gateway/"):
            text = text.replace('"' + prefix, '"' + tmp + prefix)
        text = re.sub(r'"jwks_url":\s*"[^"]*"', '"jwks_url": "https://127.0.0.1:1/jwks.json"', text)
        cfg = load_config(text)

        def parent(p):
            os.makedirs(os.path.dirname(p), exist_ok=True)
            return p

        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        tls = cfg["tls"]
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=ghl-gateway", "-days", "2", "-keyout", parent(tls["key"]),
                "-out", parent(tls["cert"]))
        if tls.get("client_ca"):
            shutil.copy(tls["cert"], parent(tls["client_ca"]))
        creds = cfg["credentials"]
        files = [creds["agency_token_file"]] + list(creds.get("location_token_files", {}).values())
        for p in files:
            with open(parent(p), "w") as f:
                f.write("pit-" + os.urandom(16).hex() + "\n")
        for issuer in cfg["auth"]["issuers"]:
            for key in issuer.get("keys", []):
                priv = os.path.join(tmp, "idp.key")
                openssl("genrsa", "-out", priv, "2048")
                openssl("pkey", "-in", priv, "-pubout", "-out", parent(key["pem_file"]))
        if cfg["audit"].get("hmac_key_file"):
            with open(parent(cfg["audit"]["hmac_key_file"]), "w") as f:
                f.write(os.urandom(32).hex())
        if cfg["audit"].get("file"):
            os.makedirs(os.path.dirname(cfg["audit"]["file"]), exist_ok=True)
        if cfg["access_log"].get("file"):
            os.makedirs(os.path.dirname(cfg["access_log"]["file"]), exist_ok=True)
        pdir = cfg["policies"]["dir"]
        os.makedirs(pdir, exist_ok=True)
        for name, body in policies.items():
            with open(os.path.join(pdir, name), "w") as f:
                f.write(body)
        path = os.path.join(tmp, "gateway.json")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([GATEWAY, "check", "-c", path], capture_output=True, text=True,
                           timeout=60)
        ok = check(r.returncode == 0, "%s: ghl-gateway check failed (exit %d):\n%s%s"
                   % (label, r.returncode, r.stdout, r.stderr))
        if ok:
            check("%d polic" % len(policies) in r.stdout,
                  "%s: check did not load the %d policies:\n%s" % (label, len(policies), r.stdout))
        return cfg
    finally:
        shutil.rmtree(tmp)


# ---------------------------------------------------------------------------------- systemd
def parse_unit(text):
    sections, cur = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def examples():
    d = os.path.join(ROOT, "policies", "examples")
    out = {}
    for n in sorted(os.listdir(d)):
        if n.endswith(".json"):
            with open(os.path.join(d, n), encoding="utf-8") as f:
                out[n] = f.read()
    return out


def check_systemd():
    unit_text = read("systemd", "ghl-gateway.service")
    unit = parse_unit(unit_text)
    svc = unit.get("Service", {})

    def one(key):
        v = svc.get(key)
        return v[-1] if v else None

    user = one("User")
    check(user not in (None, "", "root", "0"), "unit: User= must name a dedicated user, not %r" % user)
    check(one("DynamicUser") in (None, "no"), "unit: DynamicUser= would change the audit log's owner")
    check(one("NoNewPrivileges") == "yes", "unit: NoNewPrivileges=yes missing")
    check(one("ProtectSystem") == "strict", "unit: ProtectSystem=strict missing")
    check(one("CapabilityBoundingSet") == "", "unit: CapabilityBoundingSet= must be empty")
    check(one("AmbientCapabilities") in (None, ""), "unit: no ambient capabilities")
    check(one("ProtectHome") in ("yes", "read-only", "tmpfs"), "unit: ProtectHome missing")
    check(one("PrivateTmp") == "yes", "unit: PrivateTmp=yes missing")
    check(re.fullmatch(r"/bin/kill -HUP \$MAINPID", one("ExecReload") or "") is not None,
          "unit: ExecReload= must send SIGHUP to $MAINPID, got %r" % one("ExecReload"))
    start = one("ExecStart") or ""
    m = re.fullmatch(r"(\S+) run -c (\S+)", start)
    check(m is not None, "unit: ExecStart= must be '<binary> run -c <config>', got %r" % start)
    check(one("ExecStartPre") == (m.group(1) + " check -c " + m.group(2) if m else None),
          "unit: ExecStartPre= must run 'check' on the same configuration")
    rw = " ".join(svc.get("ReadWritePaths", [])).split()

    cfg_text = read("systemd", "gateway.json")
    cfg = load_config(cfg_text)
    check(m is not None and m.group(2) == "/etc/ghl-gateway/gateway.json",
          "unit: ExecStart= config path differs from the one deploy/systemd/README.md installs")
    for what, path in (("audit.file", cfg["audit"]["file"]), ("access_log.file", cfg["access_log"]["file"])):
        check(path is not None and os.path.dirname(path) in rw,
              "unit: ReadWritePaths= %s lacks the directory of %s (%s)" % (rw, what, path))
    check(cfg["audit"]["stdout"] is False, "systemd gateway.json: audit to stdout would land in the journal")
    drain_s = cfg["limits"]["drain_timeout_ms"] / 1000
    stop = one("TimeoutStopSec") or "90s"
    stop_s = float(stop.rstrip("s"))
    check(stop_s > drain_s, "unit: TimeoutStopSec=%s must exceed drain_timeout_ms (%g s)" % (stop, drain_s))
    check(cfg["listen"]["port"] >= 1024 or "CAP_NET_BIND_SERVICE" in (one("CapabilityBoundingSet") or ""),
          "unit: listening below 1024 needs CAP_NET_BIND_SERVICE")
    check(one("KillMode") in ("mixed", "control-group", None), "unit: KillMode=%s" % one("KillMode"))
    run_check(cfg_text, examples(), "deploy/systemd/gateway.json")

    # logrotate: every live directive (comments dropped), per file block
    lr = read("systemd", "logrotate")
    live = "\n".join(l.split("#", 1)[0] for l in lr.splitlines())
    blocks = dict(re.findall(r"^(/\S+)\s*\{(.*?)^\}", live, re.S | re.M))
    for what, path in (("audit.file", cfg["audit"]["file"]), ("access_log.file", cfg["access_log"]["file"])):
        body = blocks.get(path)
        if not check(body is not None, "logrotate: no block for %s (%s)" % (what, path)):
            continue
        words = body.split()
        check("copytruncate" not in words, "logrotate: %s uses copytruncate (loses records)" % path)
        check("nocreate" in words, "logrotate: %s: the gateway creates the new file itself" % path)
        post = re.search(r"postrotate(.*?)endscript", body, re.S)
        check(post is not None and re.search(r"-s USR1 ghl-gateway\.service|kill -USR1", post.group(1)),
              "logrotate: %s: postrotate must send SIGUSR1 to the gateway" % path)
        check("su ghl-gateway ghl-gateway" in body and user == "ghl-gateway",
              "logrotate: %s must rotate as the service user %r" % (path, user))
    check("compress" not in blocks.get(cfg["audit"]["file"], "").split(),
          "logrotate: the audit log must stay uncompressed (audit-verify reads it)")

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("SKIP: systemd-analyze not installed; the unit was checked by its directives only")
        return
    tmp = tempfile.mkdtemp(prefix="gw-unit-")
    try:
        path = os.path.join(tmp, "ghl-gateway.service")
        with open(path, "w") as f:
            f.write(unit_text.replace(m.group(1) if m else "/usr/local/bin/ghl-gateway", GATEWAY))
        r = subprocess.run([analyze, "verify", path], capture_output=True, text=True)
        # verify exits 0 on unknown keys too: any output is a finding
        noise = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
        check(r.returncode == 0 and not noise,
              "systemd-analyze verify: exit %d\n%s" % (r.returncode, "\n".join(noise)))
        r = subprocess.run([analyze, "security", "--offline=true", path], capture_output=True, text=True)
        lvl = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        if lvl is None and "offline" in r.stderr:
            print("SKIP: systemd-analyze security --offline not supported here")
        elif check(lvl is not None, "systemd-analyze security: no score:\n%s%s" % (r.stdout, r.stderr)):
            check(float(lvl.group(1)) <= 2.0, "systemd-analyze security: exposure %s > 2.0" % lvl.group(1))
            print("systemd-analyze security --offline: exposure %s" % lvl.group(1))
    finally:
        shutil.rmtree(tmp)


# -------------------------------------------------------------------------------- container
def check_container():
    text = read("container", "Dockerfile")
    # join continuation lines, drop comments
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    froms = [l.split()[1] for l in lines if l.upper().startswith("FROM ")]
    check(len(froms) >= 2, "Dockerfile: not a multi-stage build (%s)" % froms)
    check(all(f.startswith("debian:bookworm") for f in froms), "Dockerfile: every stage on bookworm: %s" % froms)
    last = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    final = lines[last:]
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    check(users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]),
          "Dockerfile: the runtime stage needs a numeric non-root USER, got %s" % users)
    for l in lines[:last]:
        if l.upper().startswith("COPY ") and "--from" not in l:
            for src in l.split()[1:-1]:
                check(os.path.exists(os.path.join(ROOT, src)), "Dockerfile: COPY source %s missing" % src)
    # the runtime packages cover every library the binary links
    installs = " ".join(l for l in final if "apt-get install" in l)
    pkgs = set(w for w in installs.split() if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w)) - {
        "apt-get", "install", "update", "rm", "noninteractive"}
    check(not any(p.endswith("-dev") for p in pkgs), "Dockerfile: -dev packages in the runtime image")
    # the libraries the binary names (DT_NEEDED) where ldd finds them; what those need in
    # turn comes with their packages' dependencies
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]",
                            subprocess.run(["readelf", "-d", GATEWAY], capture_output=True,
                                           text=True).stdout))
    check(len(needed) > 0, "readelf found no DT_NEEDED entry in %s" % GATEWAY)
    ldd = subprocess.run(["ldd", GATEWAY], capture_output=True, text=True).stdout
    libs = [path for name, path in re.findall(r"(\S+)\s+=>\s+(/\S+)", ldd) if name in needed]
    base = {"libc6", "libgcc-s1", "zlib1g", "libzstd1", "liblzma5"}   # in bookworm-slim already
    for lib in libs:
        real = os.path.realpath(lib)
        owner = None
        for p in (lib, real, "/usr" + lib if not lib.startswith("/usr") else lib[4:]):
            r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0]
                break
        if owner is None:
            failures.append("Dockerfile: no package owns %s" % lib)
            continue
        if re.fullmatch(r"lib(asan|ubsan|lsan|tsan)[0-9]+", owner):
            continue   # the sanitizer build's runtimes; the image is a release build
        check(owner in pkgs or owner in base,
              "Dockerfile: runtime stage lacks package %s (for %s)" % (owner, os.path.basename(lib)))
    check("ca-certificates" in pkgs, "Dockerfile: ca-certificates missing from the runtime image")
    check(any(l.upper().startswith("ENTRYPOINT") and "ghl-gateway" in l for l in final),
          "Dockerfile: ENTRYPOINT is not ghl-gateway")


# ------------------------------------------------------------------------------- kubernetes
def check_kubernetes():
    kdir = os.path.join(DEPLOY, "kubernetes")
    docs = {}
    for n in sorted(os.listdir(kdir)):
        if not n.endswith(".yaml"):
            continue
        try:
            with open(os.path.join(kdir, n), encoding="utf-8") as f:
                docs[n] = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            failures.append("%s: not YAML: %s" % (n, e))
    by_kind = {}
    for n, ds in docs.items():
        for d in ds:
            check(isinstance(d, dict) and "apiVersion" in d and "kind" in d, "%s: a document without apiVersion/kind" % n)
            # applied on their own: the store (check_redis), the alert rules (check_rules)
            if n not in ("redis.yaml", "prometheusrule.yaml"):
                by_kind.setdefault(d.get("kind"), []).append((n, d))

    kus = docs.get("kustomization.yaml", [{}])[0]
    res = kus.get("resources", [])
    check(all(os.path.exists(os.path.join(kdir, r)) for r in res), "kustomization: missing resources %s" % res)
    check("secret.example.yaml" not in res, "kustomization: must not apply the example Secret")
    for n in docs:
        if n not in ("kustomization.yaml", "secret.example.yaml", "redis.yaml",
                     "prometheusrule.yaml"):
            check(n in res, "kustomization: %s is not listed" % n)
    check("prometheusrule.yaml" not in res,
          "kustomization: prometheusrule.yaml needs the Prometheus Operator's CRDs: apply it "
          "on its own, not with the gateway")
    check_rules(docs.get("prometheusrule.yaml", []))

    dep = [d for _, d in by_kind.get("Deployment", [])]
    if not check(len(dep) == 1, "kubernetes: expected one Deployment, found %d" % len(dep)):
        return
    dep = dep[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(spec.get("replicas") == 3, "Deployment: replicas must be 3, is %s" % spec.get("replicas"))
    sel = spec["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in sel.items()), "Deployment: selector does not match the pod labels")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "Deployment: pod runAsNonRoot")
    check(pod.get("automountServiceAccountToken") is False, "Deployment: service account token mounted")
    c = pod["containers"][0]
    csc = c.get("securityContext", {})
    check(csc.get("readOnlyRootFilesystem") is True, "Deployment: readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "Deployment: allowPrivilegeEscalation")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "Deployment: capabilities drop ALL")
    check(csc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True, "Deployment: runAsNonRoot")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    dockerfile_user = re.search(r"^USER (\d+)", read("container", "Dockerfile"), re.M)
    check(dockerfile_user is not None and uid == int(dockerfile_user.group(1)),
          "Deployment: runAsUser %s differs from the image's USER" % uid)
    r = c.get("resources", {})
    check(all(r.get(a, {}).get(b) for a in ("requests", "limits") for b in ("cpu", "memory")),
          "Deployment: resources requests and limits for cpu and memory")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    cms = {d["metadata"]["name"]: d for _, d in by_kind.get("ConfigMap", [])}
    cfg_cm = next((d for d in cms.values() if "gateway.json" in d.get("data", {})), None)
    if not check(cfg_cm is not None, "kubernetes: no ConfigMap with gateway.json"):
        return
    cfg_text = cfg_cm["data"]["gateway.json"]
    cfg = load_config(cfg_text)
    admin_port = cfg["admin"]["port"]
    check(ports.get("admin") == admin_port, "Deployment: container port 'admin' %s != admin.port %s"
          % (ports.get("admin"), admin_port))
    check(ports.get("https") == cfg["listen"]["port"], "Deployment: container port 'https' != listen.port")
    check(cfg["admin"]["address"] == "0.0.0.0", "ConfigMap: admin.address must be reachable by the kubelet")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        h = c.get(probe, {}).get("httpGet", {})
        check(h.get("path") == path and h.get("port") in ("admin", admin_port),
              "Deployment: %s must GET %s on the admin port, got %s" % (probe, path, h))
    check(cfg["audit"]["stdout"] is True and cfg["audit"]["file"] is None,
          "ConfigMap: audit must go to stdout (file null) for the log pipeline")
    check(cfg["access_log"]["file"] is None, "ConfigMap: access log to stderr")
    check(cfg["listen"]["workers"] >= 1, "ConfigMap: listen.workers 0 counts the node's cores")

    # the projected volume: config and policies from ConfigMaps, secrets from Secrets, and
    # every file the configuration names is there
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    projected = {}
    for v in pod.get("volumes", []):
        if "projected" not in v or v["name"] not in mounts:
            continue
        root = mounts[v["name"]]["mountPath"]
        check(mounts[v["name"]].get("readOnly") is True, "Deployment: %s must be mounted read-only" % root)
        for src in v["projected"]["sources"]:
            kind = "configMap" if "configMap" in src else "secret" if "secret" in src else None
            if kind is None:
                continue
            for it in src[kind].get("items", []):
                projected[root + "/" + it["path"]] = (kind, src[kind]["name"], it["key"])
    check(projected.get("/etc/ghl-gateway/gateway.json", ("",))[0] == "configMap",
          "Deployment: gateway.json not projected from a ConfigMap")
    secret_files = [cfg["tls"]["cert"], cfg["tls"]["key"], cfg["credentials"]["agency_token_file"],
                    cfg["audit"]["hmac_key_file"]] + list(cfg["credentials"]["location_token_files"].values())
    secret_files += [k["pem_file"] for i in cfg["auth"]["issuers"] for k in i.get("keys", [])]
    for p in secret_files:
        if p is None:
            continue
        check(projected.get(p, ("",))[0] == "secret", "Deployment: %s is not projected from a Secret" % p)
    pol_cm = [d for d in cms.values() if d is not cfg_cm]
    policies = {}
    for d in pol_cm:
        for k, body in d.get("data", {}).items():
            policies[k] = body
            where = cfg["policies"]["dir"] + "/" + k
            check(projected.get(where, ("",))[:2] == ("configMap", d["metadata"]["name"]),
                  "Deployment: policy %s of ConfigMap %s is not projected to %s" % (k, d["metadata"]["name"], where))
    for path, (kind, name, key) in projected.items():
        if path.startswith(cfg["policies"]["dir"] + "/"):
            check(key in policies, "Deployment: projects policy %s that no ConfigMap has" % key)
    ex = examples()
    for k, body in policies.items():
        check(ex.get(k) == body, "ConfigMap: policy %s differs from policies/examples/%s" % (k, k))
    example_secret = [d for d in docs.get("secret.example.yaml", [])]
    have = {(d["metadata"]["name"], k) for d in example_secret for k in d.get("stringData", {})}
    for path, (kind, name, key) in projected.items():
        if kind == "secret":
            check((name, key) in have, "secret.example.yaml: no %s in Secret %s" % (key, name))
    for d in example_secret:
        for k, v in d.get("stringData", {}).items():
            check("REPLACE" in v, "secret.example.yaml: %s/%s holds a value, not a placeholder" % (d["metadata"]["name"], k))

    # Service, HPA, PDB, NetworkPolicy wired to the same pods
    svcs = [d for _, d in by_kind.get("Service", [])]
    check(len(svcs) >= 1, "kubernetes: no Service")
    for s in svcs:
        check(s["spec"]["selector"] == sel, "Service %s: selector differs" % s["metadata"]["name"])
        for p in s["spec"]["ports"]:
            check(p["targetPort"] in ports or p["targetPort"] in ports.values(),
                  "Service %s: targetPort %s is no container port" % (s["metadata"]["name"], p["targetPort"]))
    hpa = [d for _, d in by_kind.get("HorizontalPodAutoscaler", [])]
    max_rep = 1
    if check(len(hpa) == 1, "kubernetes: expected one HorizontalPodAutoscaler"):
        h = hpa[0]["spec"]
        check(h["scaleTargetRef"]["kind"] == "Deployment" and h["scaleTargetRef"]["name"] == dep["metadata"]["name"],
              "HPA: does not scale the Deployment")
        check(h["minReplicas"] >= 3 and h["maxReplicas"] >= h["minReplicas"], "HPA: replicas %s..%s" % (h["minReplicas"], h["maxReplicas"]))
        max_rep = h["maxReplicas"]
    pdb = [d for _, d in by_kind.get("PodDisruptionBudget", [])]
    if check(len(pdb) == 1, "kubernetes: expected one PodDisruptionBudget"):
        check(pdb[0]["spec"]["selector"]["matchLabels"] == sel, "PDB: selector differs")
        check(0 < pdb[0]["spec"].get("minAvailable", 0) < spec["replicas"],
              "PDB: minAvailable must leave room for drains")
    nps = [d for _, d in by_kind.get("NetworkPolicy", [])]
    if check(len(nps) == 1, "kubernetes: expected one NetworkPolicy"):
        np = nps[0]["spec"]
        check(np["podSelector"]["matchLabels"] == sel, "NetworkPolicy: podSelector differs")
        check(set(np.get("policyTypes", [])) == {"Ingress", "Egress"}, "NetworkPolicy: both policy types")
        # the rule to redis.yaml's pods on 6379 (check_redis), then DNS and 443 only
        to_redis = [e for e in np.get("egress", [])
                    if [p.get("port") for p in e.get("ports", [])] == [6379]]
        check(len(to_redis) == 1 and to_redis[0].get("to") == [{"podSelector": {"matchLabels": REDIS_LABELS}}]
              and to_redis[0]["ports"][0].get("protocol") == "TCP",
              "NetworkPolicy: egress on TCP 6379 must go to the pods of redis.yaml only, got %s" % to_redis)
        eports = sorted({(p["protocol"], p["port"]) for e in np.get("egress", []) if e not in to_redis
                         for p in e.get("ports", [])})
        check(eports == [("TCP", 53), ("TCP", 443), ("UDP", 53)],
              "NetworkPolicy: egress must be DNS, 443 and Redis only, got %s" % eports)
        check(all(e.get("ports") for e in np.get("egress", [])), "NetworkPolicy: an egress rule without ports")
        iports = {p["port"] for i in np.get("ingress", []) for p in i.get("ports", [])}
        check(iports <= {cfg["listen"]["port"], admin_port, "https", "admin"}, "NetworkPolicy: ingress %s" % iports)

    # HighLevel: 100 requests per 10 s and 200,000 per day per app. Without rate_limit.replicas
    # (this build) every replica enforces what is written; with it (SPEC §11) what is written
    # is the whole, and a replica without the shared store enforces 1/replicas of it.
    rl = cfg["rate_limit"]["upstream"]
    shares = cfg["rate_limit"].get("replicas")
    copies = max_rep if shares is None else 1
    check(shares is None or shares >= max_rep,
          "ConfigMap: rate_limit.replicas %s below maxReplicas %d" % (shares, max_rep))
    per_s = rl["burst"] / rl["per_seconds"]
    check(per_s * copies <= 10.0 + 1e-9 and rl["burst"] * copies <= 100,
          "ConfigMap: upstream rate x %d exceeds HighLevel's 100/10 s" % copies)
    check(rl.get("daily") and rl["daily"] * copies <= 200000,
          "ConfigMap: upstream daily x %d exceeds 200,000" % copies)
    check_redis(docs.get("redis.yaml", []), c, pod, cfg, cfg_text, max_rep, example_secret)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    check(grace > pre_s + cfg["limits"]["drain_timeout_ms"] / 1000,
          "Deployment: terminationGracePeriodSeconds %s <= preStop %s + drain" % (grace, pre_s))
    run_check(cfg_text, policies, "deploy/kubernetes/configmap.yaml gateway.json")


# ------------------------------------------------------------------------------- alert rules
def check_rules(docs):
    """prometheusrule.yaml: a PrometheusRule holding exactly the groups of
    deploy/prometheus/ghl-gateway-rules.yml (it is generated from them: no drift), which
    promtool accepts when it is installed."""
    if not check(len(docs) == 1, "prometheusrule.yaml: expected one document, got %d" % len(docs)):
        return
    d = docs[0]
    check(d.get("apiVersion") == "monitoring.coreos.com/v1" and d.get("kind") == "PrometheusRule",
          "prometheusrule.yaml: must be a monitoring.coreos.com/v1 PrometheusRule")
    check(d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/name") == "ghl-gateway",
          "prometheusrule.yaml: label app.kubernetes.io/name: ghl-gateway")
    with open(os.path.join(DEPLOY, "prometheus", "ghl-gateway-rules.yml"), encoding="utf-8") as f:
        groups = yaml.safe_load(f)["groups"]
    kgroups = d.get("spec", {}).get("groups")
    if not check(kgroups == groups,
                 "prometheusrule.yaml: its groups differ from deploy/prometheus/ghl-gateway-rules.yml"
                 " (%s): run deploy/prometheus/make-prometheusrule.py"
                 % ", ".join(sorted({g.get("name", "?") for g in (kgroups or []) if g not in groups}
                                    | {g["name"] for g in groups if g not in (kgroups or [])}))):
        return
    tool = shutil.which("promtool")
    if tool is None:
        print("SKIP: promtool not installed; prometheusrule.yaml was compared with the rules file only")
        return
    tmp = tempfile.mkdtemp(prefix="gw-rules-")
    try:
        path = os.path.join(tmp, "rules.yml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"groups": kgroups}, f, sort_keys=False)
        r = subprocess.run([tool, "check", "rules", path], capture_output=True, text=True)
        check(r.returncode == 0, "prometheusrule.yaml: promtool check rules on its groups:\n%s%s"
              % (r.stdout, r.stderr))
    finally:
        shutil.rmtree(tmp)


# ------------------------------------------------------------------------------------- redis
REDIS_LABELS = {"app.kubernetes.io/name": "ghl-gateway-redis"}
GATEWAY_LABELS = {"app.kubernetes.io/name": "ghl-gateway"}


def mebibytes(q):
    """A Kubernetes memory quantity (Mi, Gi, M, G) or a Redis one (mb, gb) in MiB."""
    m = re.fullmatch(r"([0-9]+)(Mi|Gi|M|G|mb|gb)", str(q))
    if m is None:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return {"Mi": n, "mb": n, "Gi": n * 1024, "gb": n * 1024,
            "M": n * 1e6 / 2**20, "G": n * 1e9 / 2**20}[unit]


def redis_args(args):
    """Redis's "--name value" arguments as a dict (each option takes one value here)."""
    out = {}
    check(len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]),
          "redis.yaml: args must be --option value pairs, got %s" % args)
    for k, v in zip(args[::2], args[1::2]):
        out[k[2:]] = v
    return out


def check_redis(docs, gw_container, gw_pod, cfg, cfg_text, max_rep, example_secret):
    """redis.yaml against SPEC §11.2 and the gateway's manifests: the Redis they point at."""
    if not check(docs, "kubernetes: redis.yaml missing or empty"):
        return
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    if not check(sorted((k, len(v)) for k, v in kinds.items())
                 == [("Deployment", 1), ("NetworkPolicy", 1), ("Service", 1)],
                 "redis.yaml: expected one Deployment, Service and NetworkPolicy, got %s"
                 % {k: len(v) for k, v in kinds.items()}):
        return
    dep, svc, np = kinds["Deployment"][0], kinds["Service"][0], kinds["NetworkPolicy"][0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(spec["selector"]["matchLabels"] == REDIS_LABELS and
          all(labels.get(k) == v for k, v in REDIS_LABELS.items()),
          "redis.yaml: Deployment selector/labels must be %s" % REDIS_LABELS)
    check(not all(labels.get(k) == v for k, v in GATEWAY_LABELS.items()),
          "redis.yaml: the Redis pods carry the gateway's labels (its Services would send clients there)")
    check(spec.get("replicas") == 1, "redis.yaml: one Redis pod (the buckets live in one place)")
    check(spec.get("strategy", {}).get("type") == "Recreate",
          "redis.yaml: strategy Recreate (never two stores behind the Service)")
    check(pod.get("automountServiceAccountToken") is False, "redis.yaml: service account token mounted")
    psc = pod.get("securityContext", {})
    c = pod["containers"][0]
    csc = c.get("securityContext", {})
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    check((csc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True and isinstance(uid, int) and uid > 0,
          "redis.yaml: runAsNonRoot with a numeric non-root runAsUser, got %s" % uid)
    check(csc.get("readOnlyRootFilesystem") is True, "redis.yaml: readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "redis.yaml: allowPrivilegeEscalation")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "redis.yaml: capabilities drop ALL")
    check(re.fullmatch(r"redis:7(\.[0-9.]+)?(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?", c.get("image", "")) is not None,
          "redis.yaml: image must be Redis 7, got %s" % c.get("image"))
    r = c.get("resources", {})
    check(all(r.get(a, {}).get(b) for a in ("requests", "limits") for b in ("cpu", "memory")),
          "redis.yaml: resources requests and limits for cpu and memory")

    args = redis_args(c.get("args", []))
    check(c.get("command") in (None, ["redis-server"]), "redis.yaml: command must be redis-server")
    check(args.get("save") == "", "redis.yaml: --save \"\" (no RDB), got %r" % args.get("save"))
    check(args.get("appendonly") == "no", "redis.yaml: --appendonly no, got %r" % args.get("appendonly"))
    check(args.get("maxmemory-policy") == "volatile-ttl",
          "redis.yaml: --maxmemory-policy volatile-ttl, got %r" % args.get("maxmemory-policy"))
    maxmem, limit = mebibytes(args.get("maxmemory")), mebibytes(r.get("limits", {}).get("memory"))
    check(maxmem is not None and limit is not None and maxmem < limit,
          "redis.yaml: --maxmemory %s must be set below the memory limit %s"
          % (args.get("maxmemory"), r.get("limits", {}).get("memory")))
    pw = re.fullmatch(r"\$\(([A-Z_][A-Z0-9_]*)\)", args.get("requirepass", ""))
    env = {e["name"]: e for e in c.get("env", [])}
    ref = env.get(pw.group(1), {}).get("valueFrom", {}).get("secretKeyRef") if pw else None
    check(ref is not None, "redis.yaml: --requirepass must be $(VAR) of an env var from a Secret")
    check(pw is not None and pw.group(1) == "REDISCLI_AUTH",
          "redis.yaml: the password variable must be REDISCLI_AUTH (what the probe's redis-cli reads)")
    probe = c.get("readinessProbe", {}).get("exec", {}).get("command", [])
    check(probe[:1] == ["redis-cli"] and "ping" in probe and "-e" in probe,
          "redis.yaml: readiness must be 'redis-cli -e ping' (without -e an error reply exits 0), got %s" % probe)
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports.get("redis") == 6379, "redis.yaml: container port 'redis' 6379")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    check("/data" in mounts, "redis.yaml: /data (the working directory) must be a writable volume")

    check(svc["spec"].get("type", "ClusterIP") == "ClusterIP" and svc["spec"].get("clusterIP") != "None",
          "redis.yaml: the Service must be a ClusterIP Service")
    check(svc["spec"]["selector"] == REDIS_LABELS, "redis.yaml: Service selector differs")
    sports = svc["spec"]["ports"]
    check(len(sports) == 1 and sports[0]["port"] == 6379 and sports[0]["targetPort"] in ("redis", 6379),
          "redis.yaml: the Service must expose 6379 to the container's redis port, got %s" % sports)
    n = np["spec"]
    check(n["podSelector"]["matchLabels"] == REDIS_LABELS, "redis.yaml: NetworkPolicy podSelector differs")
    check(set(n.get("policyTypes", [])) == {"Ingress", "Egress"} and not n.get("egress"),
          "redis.yaml: NetworkPolicy must deny all egress")
    check(n.get("ingress") == [{"from": [{"podSelector": {"matchLabels": GATEWAY_LABELS}}],
                                "ports": [{"protocol": "TCP", "port": 6379}]}],
          "redis.yaml: ingress must be the gateway's pods on TCP 6379 only, got %s" % n.get("ingress"))

    # the gateway's side: rate_limit.redis (set, or commented out until Redis is applied),
    # rate_limit.replicas, the password file from the same Secret
    rl = cfg["rate_limit"]
    if "redis" in rl:
        members = {"replicas": rl.get("replicas"), "redis": rl["redis"]}
    else:  # kept commented out until redis.yaml is applied
        members = commented_members(cfg_text, "redis") or {}
        members = {"replicas": rl.get("replicas"), **members}
    if not check(members and isinstance(members.get("redis"), dict),
                 "ConfigMap: no rate_limit.redis, set or commented out, to point at redis.yaml"):
        return
    red = members["redis"]
    check(members.get("replicas") == max_rep,
          "ConfigMap: rate_limit.replicas %s must be the HPA's maxReplicas %d" % (members.get("replicas"), max_rep))
    check(red.get("url") == "redis://%s:%d/0" % (svc["metadata"]["name"], sports[0]["port"]),
          "ConfigMap: rate_limit.redis.url %s is not redis.yaml's Service" % red.get("url"))
    check(red.get("on_failure", "local") in ("local", "deny", "allow"),
          "ConfigMap: rate_limit.redis.on_failure %r" % red.get("on_failure"))
    pf = red.get("password_file") or ""
    gmounts = {m["mountPath"]: m for m in gw_container.get("volumeMounts", [])}
    vol = next((v for v in gw_pod.get("volumes", [])
                if gmounts.get(os.path.dirname(pf), {}).get("name") == v["name"]), None)
    sec = (vol or {}).get("secret", {})
    items = {it["path"]: it["key"] for it in sec.get("items", [])}
    check(vol is not None and gmounts[os.path.dirname(pf)].get("readOnly") is True,
          "Deployment: rate_limit.redis.password_file %r is not on a read-only Secret volume" % pf)
    check(ref is not None and sec.get("secretName") == ref.get("name") and
          items.get(os.path.basename(pf)) == ref.get("key"),
          "Deployment: password_file %r is not the Secret key Redis reads (%s)" % (pf, ref))
    have = {(d["metadata"]["name"], k) for d in example_secret for k in d.get("stringData", {})}
    check(ref is not None and (ref["name"], ref["key"]) in have,
          "secret.example.yaml: no %s in Secret %s" % (ref and ref["key"], ref and ref["name"]))
    run_redis(args)


def run_redis(args):
    """Starts redis-server with the manifest's arguments (a throwaway password, a Unix socket
    in a temporary folder instead of a port) and asks it what it was told: the password is
    required, nothing is saved, and the eviction policy is the manifest's."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        print("SKIP: redis-server not installed; redis.yaml's arguments were checked by name only")
        return
    tmp = tempfile.mkdtemp(prefix="gw-redis-")
    sock = os.path.join(tmp, "redis.sock")
    password = os.urandom(16).hex()
    argv = [server]
    for k, v in args.items():
        argv += ["--" + k, password if k == "requirepass" else v]
    argv += ["--port", "0", "--unixsocket", sock, "--dir", tmp, "--daemonize", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def ask(*cmd, auth=True):
            env = dict(os.environ, REDISCLI_AUTH=password) if auth else {
                k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
            return subprocess.run([cli, "-e", "-s", sock, *cmd], capture_output=True, text=True,
                                  env=env, timeout=10)
        for _ in range(100):
            if os.path.exists(sock) or proc.poll() is not None:
                break
            time.sleep(0.05)
        ping = ask("ping")
        if not check(ping.returncode == 0 and ping.stdout.strip() == "PONG",
                     "redis.yaml: redis-server with its args did not answer the probe: %s%s"
                     % (ping.stdout, ping.stderr)):
            return
        check(ask("ping", auth=False).returncode != 0,
              "redis.yaml: redis-server answered without the password")
        for key, want in (("save", ""), ("appendonly", "no"), ("maxmemory-policy", "volatile-ttl")):
            got = ask("config", "get", key).stdout.splitlines()
            check(got[1:2] == [want], "redis.yaml: redis-server's %s is %s, not %r" % (key, got[1:], want))
        print("redis-server %s: the args of redis.yaml run, password required"
              % subprocess.run([server, "--version"], capture_output=True, text=True).stdout.split()[2])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp)


for part in (check_systemd, check_container, check_kubernetes):
    try:
        part()
    except (KeyError, TypeError, IndexError, ValueError, OSError, subprocess.SubprocessError) as e:
        failures.append("%s: stopped at %s: %r" % (part.__name__, type(e).__name__, e))

for f in failures:
    print("FAIL: " + f)
print("%d checks passed, %d failed" % (passed, len(failures)))
sys.exit(1 if failures else 0)
