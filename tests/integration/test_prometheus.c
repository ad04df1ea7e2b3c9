/* Integration: the gateway's metrics as the real Prometheus reads them (Debian's `prometheus`,
 * started here on a free loopback port with deploy/prometheus/ghl-gateway-rules.yml, unchanged,
 * scraping the admin listener every second and evaluating every second). Prometheus's HTTP API
 * is asked: the target is up; the request counter moved by exactly the requests sent (raw
 * samples, not an extrapolated increase); a histogram quantile is a number; every rule, and
 * every expression of the Grafana dashboard (deploy/grafana), evaluates without error on real
 * series (vector matching is only checked there); and once the
 * audit log cannot be written (audit.file a symbolic link turned to /dev/full) a change is
 * refused and GhlGatewayAuditWriteFailing is pending or firing.
 *
 * Test case "sample" writes a real /metrics text (after traffic of every kind) to the file
 * named by GW_METRICS_SAMPLE, for the checks of the rules and the dashboard
 * (tests/prometheus/), and has promtool lint it. Not registered under valgrind: the timing is
 * Prometheus's, and the gateway's code here is the ops suite's. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PROMETHEUS "/usr/bin/prometheus"
#define PROMTOOL "/usr/bin/promtool"
#define RULES GW_SRC_DIR "/deploy/prometheus/ghl-gateway-rules.yml"
#define DASHBOARD GW_SRC_DIR "/deploy/grafana/ghl-gateway.json"
#define REQUESTS 25

static struct env E;
static pid_t prom_pid;
static int prom_port;

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* SIGTERM, then SIGKILL if it has not exited within 5 s; reaped either way. */
static void stop_prometheus(void)
{
    if (prom_pid <= 0)
        return;
    kill(prom_pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(prom_pid, NULL, WNOHANG) == prom_pid) {
            prom_pid = 0;
            return;
        }
        usleep(50000);
    }
    kill(prom_pid, SIGKILL);
    waitpid(prom_pid, NULL, 0);
    prom_pid = 0;
}

static void teardown(void)
{
    stop_prometheus(); /* first: its storage is in the env's folder */
    env_stop(&E);
}

/* Percent-encodes a PromQL expression for a query string (RFC 3986 unreserved kept). */
static void url_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s && n + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    ck_assert_msg(*s == '\0', "query too long to encode");
    out[n] = '\0';
}

/* GET path from Prometheus (HTTP/1.0: the answer ends with the connection), within 5 s.
 * Returns the status and the body in *body (malloc'd), or -1 when it cannot connect. */
static int prom_get(const char *path, char **body)
{
    *body = NULL;
    int fd = loopback_connect(prom_port);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[8400];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    ck_assert_int_lt(n, (int)sizeof req);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    close(fd);
    ck_assert_ptr_nonnull(buf);
    buf[len] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    char *b = strstr(buf, "\r\n\r\n");
    *body = strdup(b ? b + 4 : "");
    free(buf);
    return status;
}

/* An instant query. Returns data.result (the caller frees it with cJSON_Delete), or NULL with
 * the error in *err (static text or Prometheus's message, copied into errbuf). */
static cJSON *prom_query(const char *expr, char *errbuf, size_t cap)
{
    char enc[8000], path[8100];
    url_encode(expr, enc, sizeof enc);
    snprintf(path, sizeof path, "/api/v1/query?query=%s", enc);
    char *body;
    int status = prom_get(path, &body);
    cJSON *doc = body ? cJSON_Parse(body) : NULL;
    cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    cJSON *res = cJSON_DetachItemFromObjectCaseSensitive(data, "result");
    if (status != 200 || res == NULL) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(doc, "error");
        snprintf(errbuf, cap, "%d %s", status,
                 cJSON_IsString(e) ? e->valuestring : (body ? body : "(no answer)"));
        cJSON_Delete(res);
        res = NULL;
    }
    cJSON_Delete(doc);
    free(body);
    return res;
}

/* The value of the first sample of an instant vector query, or NAN when the vector is empty. */
static double query_value(const char *expr)
{
    char err[600];
    cJSON *res = prom_query(expr, err, sizeof err);
    ck_assert_msg(res != NULL, "%s: %s", expr, err);
    double v = NAN;
    const cJSON *first = cJSON_GetArrayItem(res, 0);
    const cJSON *pair = cJSON_GetObjectItemCaseSensitive(first, "value");
    const cJSON *text = cJSON_GetArrayItem(pair, 1);
    if (cJSON_IsString(text))
        v = strtod(text->valuestring, NULL);
    cJSON_Delete(res);
    return v;
}

/* Polls expr (every 200 ms, up to ms) until its first value equals want. Returns the last. */
static double wait_value(const char *expr, double want, int ms)
{
    long long end = now_ms() + ms;
    double v;
    while ((v = query_value(expr)) != want && now_ms() < end)
        usleep(200000);
    return v;
}

static void start_prometheus(void)
{
    ck_assert_msg(access(PROMETHEUS, X_OK) == 0,
                  PROMETHEUS " is missing: install Debian's prometheus (tests/lib-deps.sh does)");
    char dir[700], cfg[800], data[800], log[800], listen[64], a1[900], a2[900], a3[100];
    snprintf(dir, sizeof dir, "%s/prometheus", E.dir);
    snprintf(cfg, sizeof cfg, "%s/prometheus.yml", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(log, sizeof log, "%s/prometheus.log", dir);
    char mk[900];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", data);
    ck_assert_int_eq(run_cmd(mk, NULL), 0);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    /* the shipped rules as they are: the audit alert has no `for`, so it shows at once */
    fprintf(f,
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files:\n"
            "  - %s\n"
            "scrape_configs:\n"
            "  - job_name: ghl-gateway\n"
            "    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n",
            RULES, E.admin_port);
    fclose(f);
    prom_port = free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", prom_port);
    snprintf(a1, sizeof a1, "--config.file=%s", cfg);
    snprintf(a2, sizeof a2, "--storage.tsdb.path=%s", data);
    snprintf(a3, sizeof a3, "--web.listen-address=%s", listen);
    char *argv[] = {PROMETHEUS, a1, a2, a3, "--log.level=warn", NULL};
    prom_pid = spawn_in(argv, log, dir);
    ck_assert_int_gt(prom_pid, 0);
    /* the port answers before the TSDB is open: ready is /-/ready's 200 */
    long long end = now_ms() + 20000;
    int status = -1;
    while (now_ms() < end) {
        char *body;
        status = prom_get("/-/ready", &body);
        free(body);
        if (status == 200)
            break;
        ck_assert_msg(waitpid(prom_pid, NULL, WNOHANG) == 0, "prometheus exited:\n%.3000s",
                      slurp(log));
        usleep(100000);
    }
    ck_assert_msg(status == 200, "prometheus not ready within 20 s:\n%.3000s", slurp(log));
}

static void get_user(int want)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, want);
    response_free(&r);
}

/* Every rule group loaded from the file, and every rule evaluated without error. */
static void assert_rules_healthy(void)
{
    long long end = now_ms() + 5000;
    for (;;) {
        char *body;
        ck_assert_int_eq(prom_get("/api/v1/rules", &body), 200);
        cJSON *doc = cJSON_Parse(body);
        free(body);
        const cJSON *groups = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(doc, "data"), "groups");
        int rules = 0, unevaluated = 0;
        const cJSON *g, *r;
        cJSON_ArrayForEach(g, groups)
        {
            cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(g, "rules"))
            {
                const cJSON *h = cJSON_GetObjectItemCaseSensitive(r, "health");
                const cJSON *name = cJSON_GetObjectItemCaseSensitive(r, "name");
                const cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "lastError");
                rules++;
                if (cJSON_IsString(h) && strcmp(h->valuestring, "unknown") == 0)
                    unevaluated++;
                else
                    ck_assert_msg(cJSON_IsString(h) && strcmp(h->valuestring, "ok") == 0,
                                  "rule %s: %s", cJSON_IsString(name) ? name->valuestring : "?",
                                  cJSON_IsString(err) ? err->valuestring : "no health");
            }
        }
        cJSON_Delete(doc);
        ck_assert_int_ge(rules, 20);
        if (unevaluated == 0)
            return;
        ck_assert_msg(now_ms() < end, "%d rules not evaluated after 5 s", unevaluated);
        usleep(200000);
    }
}

/* Grafana's variables as the dashboard check substitutes them (tests/prometheus/promlib.py):
 * every job and instance, a 1 m rate window. */
static void grafana_expand(const char *in, char *out, size_t cap)
{
    static const struct {
        const char *from, *to;
    } vars[] = {{"$__rate_interval", "1m"},
                {"$__interval", "1m"},
                {"$__range", "5m"},
                {"$job", ".+"},
                {"$instance", ".+"}};
    size_t n = 0;
    while (*in && n + 1 < cap) {
        size_t k = 0;
        while (k < sizeof vars / sizeof *vars && strncmp(in, vars[k].from, strlen(vars[k].from)))
            k++;
        if (k < sizeof vars / sizeof *vars) {
            n += (size_t)snprintf(out + n, cap - n, "%s", vars[k].to);
            in += strlen(vars[k].from);
        } else {
            out[n++] = *in++;
        }
    }
    ck_assert_msg(*in == '\0' && n < cap, "expression too long");
    out[n] = '\0';
}

/* Every panel target's expression of the dashboard, run as an instant query: Prometheus's own
 * evaluation (vector matching, functions on real series) must accept it. Returns how many. */
static int query_dashboard(const cJSON *panels)
{
    int n = 0;
    const cJSON *p, *t;
    cJSON_ArrayForEach(p, panels)
    {
        n += query_dashboard(cJSON_GetObjectItemCaseSensitive(p, "panels")); /* rows */
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(p, "targets"))
        {
            const cJSON *expr = cJSON_GetObjectItemCaseSensitive(t, "expr");
            if (!cJSON_IsString(expr))
                continue;
            char q[6000], err[600];
            grafana_expand(expr->valuestring, q, sizeof q);
            cJSON *res = prom_query(q, err, sizeof err);
            ck_assert_msg(res != NULL, "dashboard expression %s: %s", q, err);
            cJSON_Delete(res);
            n++;
        }
    }
    return n;
}

START_TEST(test_prometheus_scrapes_counts_and_fires_the_audit_alert)
{
    /* audit.file a symbolic link (to a real file first), so that it can be turned to
     * /dev/full, where every write fails, even for root (as in test_audit) */
    env_start(&E,
              &(struct env_opts){.gateway_json = "\"audit\": { \"file\": \"audit/link.jsonl\" }"});
    char link[700], cmd[2400];
    snprintf(link, sizeof link, "%s/audit/link.jsonl", E.dir);
    snprintf(cmd, sizeof cmd, "mv '%s' '%s/audit/real.jsonl' && ln -s real.jsonl '%s'", link, E.dir,
             link);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);
    start_prometheus();

    /* the target is up and the counter's series exists (one request) before counting */
    get_user(200);
    const char *series = "ghl_gateway_requests_total{op=\"get-user\",status=\"200\"}";
    ck_assert_msg(wait_value("up{job=\"ghl-gateway\"}", 1, 10000) == 1, "the target is not up");
    ck_assert_msg(wait_value(series, 1, 10000) == 1, "the first request was not scraped");

    for (int i = 0; i < REQUESTS; i++)
        get_user(200);
    /* a scrape that started after the last answer: its sample's timestamp is later */
    double done_s = (double)now_ms() / 1000.0;
    char ts[200];
    snprintf(ts, sizeof ts, "timestamp(%s)", series);
    long long end = now_ms() + 10000;
    double at;
    while (!((at = query_value(ts)) > done_s) && now_ms() < end)
        usleep(200000);
    ck_assert_msg(at > done_s, "no scrape after the requests within 10 s");
    double v = query_value(series);
    ck_assert_msg(v == 1 + REQUESTS, "Prometheus has %g, the gateway answered %d", v, 1 + REQUESTS);
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    ck_assert_int_eq(metrics_sample(m, series), 1 + REQUESTS);
    free(m);

    double p90 = query_value("histogram_quantile(0.9, sum by (le) (rate("
                             "ghl_gateway_request_duration_seconds_bucket{op=\"get-user\"}[1m])))");
    ck_assert_msg(isfinite(p90) && p90 > 0 && p90 <= 30, "p90 %g", p90);

    assert_rules_healthy();
    char *dash = slurp(DASHBOARD);
    cJSON *d = cJSON_Parse(dash);
    free(dash);
    ck_assert_msg(d != NULL, "%s is not JSON", DASHBOARD);
    ck_assert_int_ge(query_dashboard(cJSON_GetObjectItemCaseSensitive(d, "panels")), 20);
    cJSON_Delete(d);
    ck_assert_msg(query_value("ALERTS{alertname=\"GhlGatewayAuditWriteFailing\"}") != 1,
                  "the audit alert fires before any failure");

    /* the audit log cannot be written: a change is refused, and the alert follows */
    snprintf(cmd, sizeof cmd, "ln -sfn /dev/full '%s'", link);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);
    usleep(300000);
    struct response r;
    ck_assert_int_eq(send_req(&E, "PUT", "/users/" SEED_USER, NULL, "{\"lastName\":\"P\"}", &r), 0);
    ck_assert_int_eq(r.status, 503);
    response_free(&r);
    end = now_ms() + 15000;
    char state[32] = "";
    while (now_ms() < end && state[0] == '\0') {
        char err[600];
        cJSON *res =
            prom_query("ALERTS{alertname=\"GhlGatewayAuditWriteFailing\"}", err, sizeof err);
        ck_assert_msg(res != NULL, "ALERTS: %s", err);
        const cJSON *metric =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 0), "metric");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(metric, "alertstate");
        const cJSON *inst = cJSON_GetObjectItemCaseSensitive(metric, "instance");
        if (cJSON_IsString(s)) {
            char want[64];
            snprintf(want, sizeof want, "127.0.0.1:%d", E.admin_port);
            ck_assert_str_eq(cJSON_IsString(inst) ? inst->valuestring : "", want);
            snprintf(state, sizeof state, "%s", s->valuestring);
        }
        cJSON_Delete(res);
        if (state[0] == '\0')
            usleep(250000);
    }
    ck_assert_msg(strcmp(state, "firing") == 0 || strcmp(state, "pending") == 0,
                  "GhlGatewayAuditWriteFailing not pending or firing within 15 s (state '%s')",
                  state);
}
END_TEST

/* A real /metrics text after traffic of every kind, linted by promtool, kept for the checks of
 * tests/prometheus/ (GW_METRICS_SAMPLE names the file; unset, the test only lints). */
START_TEST(test_metrics_sample_after_traffic)
{
    env_start(&E, NULL);
    get_user(200);
    struct response r;
    ck_assert_int_eq(
        send_req(&E, "GET", "/users/" SEED_USER, "Authorization: Bearer x.y.z\r\n", NULL, &r), 0);
    ck_assert_int_eq(r.status, 401);
    response_free(&r);
    ck_assert_int_eq(send_req(&E, "GET", "/nowhere", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    response_free(&r);
    ck_assert_int_eq(send_req(&E, "PUT", "/users/" SEED_USER, NULL, "{\"lastName\":\"S\"}", &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    const char *out = getenv("GW_METRICS_SAMPLE");
    char path[700];
    if (out == NULL) {
        snprintf(path, sizeof path, "%s/metrics.txt", E.dir);
        out = path;
    }
    FILE *f = fopen(out, "w");
    ck_assert_msg(f != NULL, "%s: %s", out, strerror(errno));
    ck_assert_int_eq(fputs(m, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    free(m);
    /* Prometheus's own parser and linter (help text, suffixes, types) accept it */
    char cmd[900], *lint = NULL;
    snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < '%s'", out);
    int rc = run_cmd(cmd, &lint);
    ck_assert_msg(rc == 0, "promtool check metrics (exit %d):\n%.3000s", rc, lint ? lint : "");
    free(lint);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("prometheus");
    TCase *scrape = tcase_create("scrape");
    tcase_add_checked_fixture(scrape, NULL, teardown);
    tcase_set_timeout(scrape, 90);
    tcase_add_test(scrape, test_prometheus_scrapes_counts_and_fires_the_audit_alert);
    suite_add_tcase(s, scrape);
    TCase *sample = tcase_create("sample");
    tcase_add_checked_fixture(sample, NULL, teardown);
    tcase_set_timeout(sample, 60);
    tcase_add_test(sample, test_metrics_sample_after_traffic);
    suite_add_tcase(s, sample);
    return run_suite(s);
}
