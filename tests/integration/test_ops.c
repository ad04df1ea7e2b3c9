/* Integration: operations (SPEC §1.2, §10, §11): the metrics on /metrics and their counters
 * moving, rate limits per subject and for the upstream (429 with Retry-After and the
 * X-RateLimit-* headers, nothing sent upstream), and SIGHUP: a policy and the certificate
 * swapped while a request is in flight, a broken configuration kept out; the certificates'
 * expiry gauge following the files a reload brings; and the verified-token cache: never past
 * a token's exp, emptied by a reload that withdraws a key. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "harness.h"

static struct env E;

static void teardown(void)
{
    env_stop(&E);
}

/* The value of a sample line "name{labels} value" (labels as written), or -1. */
static long long sample(const char *text, const char *series)
{
    return metrics_sample(text, series);
}

/* Not inlined: once inlined, GCC 12's -Wdangling-pointer takes the text returned through &m
 * for a pointer to m itself (m's address escapes to admin_get). */
__attribute__((noinline)) static char *scrape(void)
{
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    return m;
}

static int get_as(const char *token, const char *path, struct response *r)
{
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    return send_req(&E, "GET", path, auth, NULL, r);
}

static const char admin_only_get[] =
    "{ \"name\": \"tester\", \"subjects\": [ { \"sub\": [\"svc-test\", \"svc-other\"] } ],\n"
    "  \"operations\": [\"get-user\", \"search-users\", \"update-user\"],\n"
    "  \"companies\": \"*\", \"locations\": \"*\" }\n";

START_TEST(test_metrics_present_and_moving)
{
    env_start(&E, &(struct env_opts){.policies = {{"tester.json", admin_only_get}}});
    char *m = scrape();
    static const char *const names[] = {
        "ghl_gateway_requests_total",
        "ghl_gateway_request_duration_seconds",
        "ghl_gateway_auth_failures_total",
        "ghl_gateway_policy_denials_total",
        "ghl_gateway_upstream_requests_total",
        "ghl_gateway_upstream_duration_seconds",
        "ghl_gateway_upstream_errors_total",
        "ghl_gateway_audit_records_total",
        "ghl_gateway_audit_write_seconds",
        "ghl_gateway_rate_limited_total",
        "ghl_gateway_token_cache_hits_total",
        "ghl_gateway_token_cache_misses_total",
        "ghl_gateway_jwks_fetches_total",
        "ghl_gateway_reloads_total",
        "ghl_gateway_audit_last_seq",
        "ghl_gateway_connections_active",
        "ghl_gateway_config_generation",
        "ghl_gateway_jwks_keys",
        "ghl_gateway_tls_cert_expiry_seconds",
        "ghl_gateway_ratelimit_daily_budget",
        "ghl_gateway_ratelimit_daily_remaining",
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char want[200];
        snprintf(want, sizeof want, "# TYPE %s ", names[i]);
        ck_assert_msg(strstr(m, want) != NULL, "%s missing:\n%s", names[i], m);
    }
    ck_assert_int_eq(sample(m, "ghl_gateway_config_generation"), 1);
    /* every issuer's keys, whatever their source: ISSUER_RS has two "keys", ISSUER_JWKS one
     * from its file */
    ck_assert_int_eq(sample(m, "ghl_gateway_jwks_keys{issuer=\"" ISSUER_RS "\"}"), 2);
    ck_assert_int_eq(sample(m, "ghl_gateway_jwks_keys{issuer=\"" ISSUER_HS "\"}"), 1);
    ck_assert_int_eq(sample(m, "ghl_gateway_jwks_keys{issuer=\"" ISSUER_JWKS "\"}"), 1);
    /* none of them fetches its keys: no fetch counters */
    ck_assert_ptr_null(strstr(m, "ghl_gateway_jwks_fetches_total{"));
    free(m);

    struct response r;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    ck_assert_int_eq(
        send_req(&E, "GET", "/users/" SEED_USER, "Authorization: Bearer x.y.z\r\n", NULL, &r), 0);
    ck_assert_int_eq(r.status, 401);
    response_free(&r);
    char nobody[4096];
    ck_assert_int_eq(
        mint("RS256", ISSUER_RS, "svc-nobody", "users.readonly", NULL, nobody, sizeof nobody), 0);
    ck_assert_int_eq(get_as(nobody, "/users/" SEED_USER, &r), 0);
    ck_assert_int_eq(r.status, 403);
    response_free(&r);
    ck_assert_int_eq(send_req(&E, "GET", "/nowhere", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    response_free(&r);

    m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_requests_total{op=\"get-user\",status=\"200\"}"), 3);
    ck_assert_int_eq(sample(m, "ghl_gateway_requests_total{op=\"get-user\",status=\"401\"}"), 1);
    ck_assert_int_eq(sample(m, "ghl_gateway_requests_total{op=\"get-user\",status=\"403\"}"), 1);
    ck_assert_int_eq(sample(m, "ghl_gateway_requests_total{op=\"none\",status=\"404\"}"), 1);
    ck_assert_int_eq(
        sample(m, "ghl_gateway_upstream_requests_total{op=\"get-user\",status=\"200\"}"), 3);
    ck_assert_int_eq(sample(m, "ghl_gateway_auth_failures_total{reason=\"malformed\"}"), 1);
    ck_assert_int_eq(sample(m, "ghl_gateway_policy_denials_total{policy=\"none\",op=\"get-user\"}"),
                     1);
    ck_assert_int_eq(sample(m, "ghl_gateway_request_duration_seconds_count{op=\"get-user\"}"), 5);
    ck_assert_int_eq(sample(m, "ghl_gateway_upstream_duration_seconds_count"), 3);
    /* the same token three times: verified once per worker at most, then from the cache */
    long long hits = sample(m, "ghl_gateway_token_cache_hits_total");
    long long misses = sample(m, "ghl_gateway_token_cache_misses_total");
    ck_assert_msg(hits >= 1 && misses >= 2 && hits + misses == 5, "hits %lld misses %lld", hits,
                  misses);
    ck_assert_msg(sample(m, "ghl_gateway_connections_active") >= 0, "%s", m);
    free(m);
}
END_TEST

START_TEST(test_per_subject_limit)
{
    env_start(&E,
              &(struct env_opts){
                  .rate_limit_json = "{ \"per_subject\": { \"burst\": 3, \"per_seconds\": 60 }, "
                                     "\"upstream\": { \"burst\": 1000, \"per_seconds\": 1 } }",
              });
    struct response r;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 429);
    ck_assert_str_eq(r.body,
                     "{\"statusCode\":429,\"message\":\"Too many requests\",\"error\":\"Too Many "
                     "Requests\"}");
    long ra = strtol(response_header(&r, "Retry-After"), NULL, 10);
    ck_assert_msg(ra >= 1 && ra <= 20, "Retry-After %ld", ra); /* one token per 20 s */
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Max"), "3");
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Remaining"), "0");
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Interval-Milliseconds"), "60000");
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 3); /* the refused one never went upstream */
    /* another subject has its own bucket */
    ck_assert_int_eq(get_as(E.token_ro, "/users/" SEED_USER, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    char *m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_rate_limited_total{scope=\"subject\"}"), 1);
    ck_assert_int_eq(sample(m, "ghl_gateway_rate_limited_total{scope=\"upstream\"}"), 0);
    free(m);
}
END_TEST

/* A subject of any length (SPEC §11): a 600-character sub is limited exactly at its burst and
 * stays limited (its bucket is found again), while a subject whose sub differs only in its last
 * character has its own bucket. (A key cut at 512 bytes read past the end of iss, never found
 * the subject's bucket again and so never limited it.) */
START_TEST(test_per_subject_limit_with_a_600_character_sub)
{
    env_start(&E,
              &(struct env_opts){
                  .rate_limit_json = "{ \"per_subject\": { \"burst\": 3, \"per_seconds\": 60 }, "
                                     "\"upstream\": { \"burst\": 1000, \"per_seconds\": 1 } }",
              });
    char sub[601], other[601], tok[4096], tok_other[4096];
    memset(sub, 'x', sizeof sub - 1);
    sub[sizeof sub - 1] = '\0';
    memcpy(other, sub, sizeof other);
    other[sizeof other - 2] = 'y';
    ck_assert_int_eq(mint("RS256", ISSUER_RS, sub, "users.readonly", NULL, tok, sizeof tok), 0);
    ck_assert_int_eq(
        mint("RS256", ISSUER_RS, other, "users.readonly", NULL, tok_other, sizeof tok_other), 0);
    struct response r;
    for (int i = 0; i < 3; i++) { /* new connections: both workers share the buckets */
        ck_assert_int_eq(get_as(tok, "/users/" SEED_USER, &r), 0);
        ck_assert_msg(r.status == 200, "request %d: %d %s", i + 1, r.status, r.body);
        response_free(&r);
    }
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(get_as(tok, "/users/" SEED_USER, &r), 0);
        ck_assert_msg(r.status == 429, "request %d past the burst: %d", i + 4, r.status);
        long ra = strtol(response_header(&r, "Retry-After"), NULL, 10);
        ck_assert_msg(ra >= 1 && ra <= 20, "Retry-After %ld", ra); /* one token per 20 s */
        ck_assert_str_eq(response_header(&r, "X-RateLimit-Max"), "3");
        ck_assert_str_eq(response_header(&r, "X-RateLimit-Remaining"), "0");
        response_free(&r);
    }
    ck_assert_int_eq(get_as(tok_other, "/users/" SEED_USER, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 4); /* the refused ones never went upstream */
    char *m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_rate_limited_total{scope=\"subject\"}"), 4);
    free(m);
}
END_TEST

START_TEST(test_upstream_budget_shared_by_callers)
{
    env_start(&E,
              &(struct env_opts){
                  .rate_limit_json = "{ \"per_subject\": { \"burst\": 100, \"per_seconds\": 1 }, "
                                     "\"upstream\": { \"burst\": 4, \"per_seconds\": 60 } }",
              });
    struct response r;
    int ok = 0, limited = 0;
    for (int i = 0; i < 6; i++) { /* two callers, three requests each, interleaved */
        ck_assert_int_eq(get_as(i % 2 ? E.token_ro : E.token, "/users/" SEED_USER, &r), 0);
        if (r.status == 200)
            ok++;
        else if (r.status == 429) {
            limited++;
            ck_assert_str_eq(response_header(&r, "X-RateLimit-Max"), "4");
            ck_assert_ptr_nonnull(response_header(&r, "Retry-After"));
        }
        response_free(&r);
    }
    ck_assert_int_eq(ok, 4);
    ck_assert_int_eq(limited, 2);
    ck_assert_int_eq(journal_count(&E), 4);
    char *m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_rate_limited_total{scope=\"upstream\"}"), 2);
    ck_assert_int_eq(sample(m, "ghl_gateway_rate_limited_total{scope=\"subject\"}"), 0);
    free(m);
}
END_TEST

START_TEST(test_upstream_daily_budget)
{
    env_start(&E,
              &(struct env_opts){
                  .rate_limit_json = "{ \"per_subject\": { \"burst\": 100, \"per_seconds\": 1 }, "
                                     "\"upstream\": { \"burst\": 100, \"per_seconds\": 1, "
                                     "\"daily\": 2 } }",
              });
    struct response r;
    for (int i = 0; i < 2; i++) {
        char *m = scrape(); /* what is left of the day before each call */
        ck_assert_int_eq(sample(m, "ghl_gateway_ratelimit_daily_budget"), 2);
        ck_assert_int_eq(sample(m, "ghl_gateway_ratelimit_daily_remaining"), 2 - i);
        free(m);
        ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 429);
    char *m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_ratelimit_daily_remaining"), 0);
    ck_assert_int_eq(sample(m, "ghl_gateway_rate_limited_total{scope=\"upstream\"}"), 1);
    free(m);
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Max"), "2");
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Interval-Milliseconds"), "86400000");
    long ra = strtol(response_header(&r, "Retry-After"), NULL, 10);
    ck_assert_msg(ra >= 1 && ra <= 86400, "Retry-After %ld", ra); /* until 00:00 UTC */
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 2);
}
END_TEST

static void copy_file(const char *from, const char *to)
{
    char *cmd = NULL;
    ck_assert_int_ge(asprintf(&cmd, "cp '%s' '%s.tmp' && mv '%s.tmp' '%s'", from, to, to, to), 0);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    free(cmd);
}

/* The certificate a new connection is shown equals the one in pem_path. */
static bool server_shows(const char *pem_path)
{
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    struct tls_client c;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    X509 *peer = SSL_get1_peer_certificate(c.ssl);
    FILE *f = fopen(pem_path, "r");
    X509 *want = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    bool same = peer && want && X509_cmp(peer, want) == 0;
    X509_free(peer);
    X509_free(want);
    tls_close(&c);
    return same;
}

static const char deny_get[] =
    "{ \"name\": \"harness-all\", \"subjects\": [ { \"sub\": \"svc-test\" } ],\n"
    "  \"operations\": [\"search-users\"], \"companies\": \"*\", \"locations\": \"*\" }\n";

START_TEST(test_sighup_swaps_policy_and_certificate_in_flight)
{
    char dir[] = "/tmp/ghl-tls-XXXXXX", path[700], certs[600];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(certs, sizeof certs, "%s", GW_CERTS_DIR);
    char src[700], dst[700];
    snprintf(src, sizeof src, "%s/gateway.crt", certs);
    snprintf(dst, sizeof dst, "%s/gateway.crt", dir);
    copy_file(src, dst);
    snprintf(src, sizeof src, "%s/gateway.key", certs);
    snprintf(dst, sizeof dst, "%s/gateway.key", dir);
    copy_file(src, dst);
    env_start(&E, &(struct env_opts){.tls_dir = dir, .sandbox_args = "--delay-ms 1500"});
    snprintf(path, sizeof path, "%s/gateway.crt", certs);
    ck_assert(server_shows(path));

    /* a request in flight on the old configuration */
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    struct tls_client c;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    ck_assert_int_eq(tls_send(&c, raw, strlen(raw)), 0);
    free(raw);
    usleep(300000);

    /* meanwhile: another certificate (the sandbox's, same CA and names), and a policy that no
     * longer lets svc-test read a user */
    snprintf(src, sizeof src, "%s/sandbox.crt", certs);
    snprintf(dst, sizeof dst, "%s/gateway.crt", dir);
    copy_file(src, dst);
    snprintf(src, sizeof src, "%s/sandbox.key", certs);
    snprintf(dst, sizeof dst, "%s/gateway.key", dir);
    copy_file(src, dst);
    env_write_policy(&E, "harness-all.json", deny_get);
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    usleep(300000);

    /* the request in flight completes on its own snapshot */
    struct response r;
    ck_assert_int_eq(tls_read_response(&c, &r, 5000, 0), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    tls_close(&c);
    /* new connections see the new certificate, new requests the new policy */
    snprintf(path, sizeof path, "%s/sandbox.crt", certs);
    ck_assert(server_shows(path));
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_ptr_nonnull(strstr(r.body, "operation get-user is not allowed"));
    response_free(&r);
    char *m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_config_generation"), 2);
    ck_assert_int_eq(sample(m, "ghl_gateway_reloads_total{result=\"ok\"}"), 1);
    free(m);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

/* Waits (up to 2.5 s) for the configuration generation to reach g. */
static void wait_generation(long long g)
{
    long long now = -1;
    for (int i = 0; i < 50 && now != g; i++) {
        char *m = scrape();
        now = sample(m, "ghl_gateway_config_generation");
        free(m);
        if (now != g)
            usleep(50000);
    }
    ck_assert_int_eq(now, g);
}

/* Seconds from now to the earliest notAfter among the PEM certificates in path. */
static long long seconds_left(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    long long min = 0;
    bool any = false;
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        int days, secs;
        ck_assert_int_eq(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
        long long s = (long long)days * 86400 + secs;
        if (!any || s < min)
            min = s;
        any = true;
        X509_free(x);
    }
    ERR_clear_error(); /* the end of the file */
    fclose(f);
    ck_assert(any);
    return min;
}

/* The gauge of one certificate set, checked against the files it came from (a few seconds
 * pass between the two readings). */
static void assert_expiry(const char *m, const char *cert, const char *path)
{
    char series[100];
    snprintf(series, sizeof series, "ghl_gateway_tls_cert_expiry_seconds{cert=\"%s\"}", cert);
    long long got = sample(m, series), want = seconds_left(path);
    ck_assert_msg(got > 0 && got <= want && got >= want - 10, "%s: %lld, the file says %lld", cert,
                  got, want);
}

START_TEST(test_cert_expiry_follows_the_certificates_in_use)
{
    /* a serving pair and a client CA file the test swaps: the development set first (825
     * days), then the 30-day certificates of make-test-certs.sh */
    char dir[] = "/tmp/ghl-exp-XXXXXX", src[700], crt[700], key[700], cas[700], tls[800];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(crt, sizeof crt, "%s/gateway.crt", dir);
    snprintf(key, sizeof key, "%s/gateway.key", dir);
    snprintf(cas, sizeof cas, "%s/clients.crt", dir);
    snprintf(src, sizeof src, "%s/gateway.crt", GW_CERTS_DIR);
    copy_file(src, crt);
    snprintf(src, sizeof src, "%s/gateway.key", GW_CERTS_DIR);
    copy_file(src, key);
    snprintf(src, sizeof src, "%s/ca.crt", GW_CERTS_DIR);
    copy_file(src, cas);
    snprintf(tls, sizeof tls, "\"client_ca\": \"%s\"", cas);
    env_start(&E, &(struct env_opts){.tls_dir = dir, .tls_json = tls});
    char *m = scrape();
    assert_expiry(m, "serving", crt);
    assert_expiry(m, "client_ca", cas);
    snprintf(src, sizeof src, "%s/ca.crt", GW_CERTS_DIR); /* upstream.ca_file */
    assert_expiry(m, "upstream_ca", src);
    ck_assert_int_gt(sample(m, "ghl_gateway_tls_cert_expiry_seconds{cert=\"serving\"}"),
                     800LL * 86400);
    free(m);

    /* new files, SIGHUP: the gauge is the new snapshot's; of two CAs the one that ends first */
    snprintf(src, sizeof src, "%s/wrongname.crt", GW_CERTS_DIR);
    copy_file(src, crt);
    snprintf(src, sizeof src, "%s/wrongname.key", GW_CERTS_DIR);
    copy_file(src, key);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "cat '%s/ca.crt' '%s/rogue-ca.crt' > '%s'", GW_CERTS_DIR,
             GW_CERTS_DIR, cas);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    wait_generation(2);
    m = scrape();
    assert_expiry(m, "serving", crt);
    assert_expiry(m, "client_ca", cas);
    ck_assert_int_lt(sample(m, "ghl_gateway_tls_cert_expiry_seconds{cert=\"serving\"}"),
                     31LL * 86400);
    ck_assert_int_lt(sample(m, "ghl_gateway_tls_cert_expiry_seconds{cert=\"client_ca\"}"),
                     31LL * 86400);
    free(m);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

START_TEST(test_sighup_with_a_broken_config_keeps_the_old_one)
{
    env_start(&E, NULL);
    char *good = slurp(E.config);
    FILE *f = fopen(E.config, "w");
    fprintf(f, "%s", good);
    fputs("{ trailing junk", f);
    fclose(f);
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    char *log = wait_for_text(E.gateway.log, "reload failed", 2500);
    ck_assert_msg(strstr(log, "reload failed") != NULL, "%s", log);
    free(log);
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    char *m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_reloads_total{result=\"error\"}"), 1);
    ck_assert_int_eq(sample(m, "ghl_gateway_reloads_total{result=\"ok\"}"), 0);
    ck_assert_int_eq(sample(m, "ghl_gateway_config_generation"), 1);
    free(m);
    char *body;
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 200);
    free(body);
    ck_assert_int_eq(admin_get(&E, "/healthz", &body), 200);
    free(body);
    /* fixed: the next SIGHUP takes it */
    f = fopen(E.config, "w");
    fputs(good, f);
    fclose(f);
    free(good);
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    wait_generation(2);
}
END_TEST

/* A token served from the cache stops working at its exp: the cache is no way around expiry
 * (leeway 0 here, so exp is the exact end). */
START_TEST(test_cached_token_not_served_past_exp)
{
    struct env_opts o = {
        .workers = 1, /* one token cache, so the later requests are hits */
        .auth_json =
            "{ \"issuers\": [ { \"issuer\": \"" ISSUER_HS "\", \"audiences\": [], "
            "\"leeway_s\": 0, \"keys\": [ { \"alg\": \"HS256\", \"secret_file\": \"" GW_CERTS_DIR
            "/jwt-hs256.secret\" } ] } ] }"};
    env_start(&E, &o);
    char tok[4096];
    /* under memcheck three requests can take seconds (CI saw the third answered 401) */
    int ttl = under_valgrind() ? 15 : 3;
    char ttl_arg[16];
    snprintf(ttl_arg, sizeof ttl_arg, "--ttl %d", ttl);
    ck_assert_int_eq(
        mint("HS256", ISSUER_HS, "svc-test", "users.readonly", ttl_arg, tok, sizeof tok), 0);
    time_t minted = time(NULL);
    struct response r;
    for (int i = 0; i < 3; i++) { /* verified once, then from the cache */
        ck_assert_int_eq(get_as(tok, "/users/" SEED_USER, &r), 0);
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    char *m = scrape();
    long long hits = sample(m, "ghl_gateway_token_cache_hits_total");
    long long misses = sample(m, "ghl_gateway_token_cache_misses_total");
    free(m);
    ck_assert_int_ge(hits, 1);
    while (time(NULL) < minted + ttl + 1) /* past exp (minted + ttl, + 1 if the second turned) */
        usleep(100000);
    ck_assert_int_eq(get_as(tok, "/users/" SEED_USER, &r), 0);
    ck_assert_int_eq(r.status, 401);
    response_free(&r);
    m = scrape();
    ck_assert_int_eq(sample(m, "ghl_gateway_auth_failures_total{reason=\"expired\"}"), 1);
    ck_assert_int_eq(sample(m, "ghl_gateway_token_cache_hits_total"), hits); /* not a hit */
    ck_assert_int_eq(sample(m, "ghl_gateway_token_cache_misses_total"), misses + 1);
    free(m);
}
END_TEST

/* A reload that withdraws a key empties the cache: a token signed with that key, verified and
 * cached before, is refused at once; tokens of the keys still configured keep working. */
START_TEST(test_reload_withdrawing_a_key_drops_its_cached_tokens)
{
    struct env_opts o = {.workers = 1}; /* one token cache, so the second request is a hit */
    env_start(&E, &o);
    char es[4096];
    ck_assert_int_eq(mint("ES256", ISSUER_RS, "svc-test", "users.readonly", NULL, es, sizeof es),
                     0);
    struct response r;
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(get_as(es, "/users/" SEED_USER, &r), 0);
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    char *m = scrape();
    ck_assert_int_ge(sample(m, "ghl_gateway_token_cache_hits_total"), 1);
    free(m);
    /* the ES256 key e1 is withdrawn: its entry now names kid e2 */
    char *cfg = slurp(E.config);
    char *at = strstr(cfg, "\"kid\": \"e1\"");
    ck_assert_ptr_nonnull(at);
    at[9] = '2';
    FILE *f = fopen(E.config, "w");
    fputs(cfg, f);
    fclose(f);
    free(cfg);
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    wait_generation(2);
    ck_assert_int_eq(get_as(es, "/users/" SEED_USER, &r), 0);
    ck_assert_int_eq(r.status, 401);
    response_free(&r);
    ck_assert_int_eq(get_as(E.token, "/users/" SEED_USER, &r), 0); /* RS256 kid k1: kept */
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops");
    TCase *t = tcase_create("ops");
    tcase_add_checked_fixture(t, NULL, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_metrics_present_and_moving);
    tcase_add_test(t, test_per_subject_limit);
    tcase_add_test(t, test_per_subject_limit_with_a_600_character_sub);
    tcase_add_test(t, test_cached_token_not_served_past_exp);
    tcase_add_test(t, test_reload_withdrawing_a_key_drops_its_cached_tokens);
    tcase_add_test(t, test_upstream_budget_shared_by_callers);
    tcase_add_test(t, test_upstream_daily_budget);
    tcase_add_test(t, test_sighup_swaps_policy_and_certificate_in_flight);
    tcase_add_test(t, test_sighup_with_a_broken_config_keeps_the_old_one);
    tcase_add_test(t, test_cert_expiry_follows_the_certificates_in_use);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
