/* Authentication end to end: tokens of every kind through the real gateway, scopes per op,
 * the challenges and reason classes, and a JWKS URL whose keys rotate. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct env E;

static void setup(void)
{
    env_start(&E, NULL);
}

static void teardown(void)
{
    env_stop(&E);
}

struct op {
    const char *name, *method, *path, *body;
    bool write;
};

#define CREATE_BODY                                                                                \
    "{\"companyId\":\"" COMPANY "\",\"firstName\":\"T\",\"lastName\":\"U\",\"email\":\"t%d@"       \
    "example.com\",\"password\":\"Str0ng!Passw0rd\",\"type\":\"account\",\"role\":\"user\","       \
    "\"locationIds\":[\"" LOC1 "\"]}"

static const struct op ops[] = {
    {"search-users", "GET", "/users/search?companyId=" COMPANY, NULL, false},
    {"filter-users-by-email", "POST", "/users/search/filter-by-email",
     "{\"companyId\":\"" COMPANY "\",\"emails\":\"ada@example.com\"}", false},
    {"get-user", "GET", "/users/" SEED_USER, NULL, false},
    {"get-user-by-location", "GET", "/users/?locationId=" LOC1, NULL, false},
    {"create-user", "POST", "/users/", CREATE_BODY, true},
    {"update-user", "PUT", "/users/" SEED_USER, "{\"firstName\":\"Ada\"}", true},
    {"delete-user", "DELETE", "/users/" SEED_USER, NULL, true},
};
#define NOPS (sizeof ops / sizeof *ops)

/* Every op with token: served (by the upstream) when the token holds the op's scope, else the
 * scope 401. */
static void every_op(const char *token, bool can_write, int round)
{
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    for (size_t i = 0; i < NOPS; i++) {
        /* a fresh email each round: the sandbox refuses a second user with the same one */
        char body[512] = "", mark[16];
        snprintf(mark, sizeof mark, "%d", round);
        const char *pct = ops[i].body ? strstr(ops[i].body, "%d") : NULL;
        if (pct)
            snprintf(body, sizeof body, "%.*s%s%s", (int)(pct - ops[i].body), ops[i].body, mark,
                     pct + 2);
        else if (ops[i].body)
            snprintf(body, sizeof body, "%s", ops[i].body);
        struct response r;
        ck_assert_int_eq(
            send_req(&E, ops[i].method, ops[i].path, auth, ops[i].body ? body : NULL, &r), 0);
        if (ops[i].write && !can_write) {
            ck_assert_msg(r.status == 401, "%s: %d", ops[i].name, r.status);
            ck_assert_str_eq(r.body,
                             "{\"statusCode\":401,\"message\":\"The token is not authorized for "
                             "this scope.\"}");
            ck_assert_str_eq(response_header(&r, "WWW-Authenticate"),
                             "Bearer realm=\"ghl-gateway\", error=\"insufficient_scope\", "
                             "scope=\"users.write\"");
        } else {
            ck_assert_msg(r.status >= 200 && r.status < 300, "%s: %d %s", ops[i].name, r.status,
                          r.body);
        }
        response_free(&r);
    }
}

START_TEST(test_rs256_es256_hs256_and_jwks_file_tokens)
{
    static const struct {
        const char *alg, *iss;
        const char *extra;
    } kinds[] = {
        {"RS256", ISSUER_RS, NULL},
        {"ES256", ISSUER_RS, NULL},
        {"HS256", ISSUER_HS, NULL},
        {"RS256", ISSUER_JWKS, "--kid j1"},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        char ro[4096], rw[4096];
        ck_assert_int_eq(mint(kinds[k].alg, kinds[k].iss, "reader", "users.readonly",
                              kinds[k].extra, ro, sizeof ro),
                         0);
        ck_assert_int_eq(mint(kinds[k].alg, kinds[k].iss, "writer", "users.readonly users.write",
                              kinds[k].extra, rw, sizeof rw),
                         0);
        every_op(ro, false, (int)k * 2);
        /* the seed user is deleted by the writer's round: the next kind starts again */
        env_stop(&E);
        env_start(&E, NULL);
        every_op(rw, true, (int)k * 2 + 1);
        env_stop(&E);
        env_start(&E, NULL);
    }
}
END_TEST

START_TEST(test_no_token_gets_the_plain_challenge)
{
    struct response r;
    const char *raw = "GET /users/" SEED_USER " HTTP/1.1\r\nHost: l\r\nVersion: 2021-07-28\r\n\r\n";
    ck_assert_int_eq(send_raw(&E, raw, strlen(raw), &r), 0);
    ck_assert_int_eq(r.status, 401);
    ck_assert_str_eq(r.body, "{\"statusCode\":401,\"message\":\"Invalid token: access token is "
                             "invalid\",\"error\":\"Unauthorized\"}");
    ck_assert_str_eq(response_header(&r, "WWW-Authenticate"), "Bearer realm=\"ghl-gateway\"");
    response_free(&r);
    /* another scheme is no bearer token either */
    ck_assert_int_eq(
        send_req(&E, "GET", "/users/" SEED_USER, "Authorization: Basic Zm9vOmJhcg==\r\n", NULL, &r),
        0);
    ck_assert_int_eq(r.status, 401);
    ck_assert_str_eq(response_header(&r, "WWW-Authenticate"), "Bearer realm=\"ghl-gateway\"");
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
    char *log = slurp(E.access_log);
    ck_assert_ptr_nonnull(strstr(log, "\"auth_failure\":\"missing\""));
    free(log);
}
END_TEST

/* Each refusal names its reason class in the challenge and the access log; none is forwarded,
 * and no token is written anywhere. */
START_TEST(test_bad_tokens_name_their_reason)
{
    char good[4096], t[4096];
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc", "users.readonly", NULL, good, sizeof good), 0);
    long now = (long)time(NULL);
    char extra[128];
    struct {
        const char *reason;
        char token[4096];
    } cases[8];
    size_t n = 0;
    /* expired beyond the 60 s leeway */
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc", "users.readonly", "--ttl -120", cases[n].token,
                          sizeof cases[n].token),
                     0);
    cases[n++].reason = "expired";
    snprintf(extra, sizeof extra, "--claim nbf=%ld", now + 3600);
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc", "users.readonly", extra, cases[n].token,
                          sizeof cases[n].token),
                     0);
    cases[n++].reason = "not_yet_valid";
    ck_assert_int_eq(mint("RS256", "https://other.test", "svc", "users.readonly", NULL,
                          cases[n].token, sizeof cases[n].token),
                     0);
    cases[n++].reason = "unknown_issuer";
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc", "users.readonly", "--claim aud='\"other\"'",
                          cases[n].token, sizeof cases[n].token),
                     0);
    cases[n++].reason = "audience";
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc", "users.readonly", "--kid nope", cases[n].token,
                          sizeof cases[n].token),
                     0);
    cases[n++].reason = "unknown_key";
    /* one changed character in the signature */
    snprintf(t, sizeof t, "%s", good);
    char *last = t + strlen(t) - 5;
    *last = *last == 'A' ? 'B' : 'A';
    snprintf(cases[n].token, sizeof cases[n].token, "%s", t);
    cases[n++].reason = "bad_signature";
    snprintf(cases[n].token, sizeof cases[n].token, "not-a-jwt");
    cases[n++].reason = "malformed";
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc", "users.readonly", "--claim exp=1.5e12",
                          cases[n].token, sizeof cases[n].token),
                     0);
    cases[n++].reason = "bad_claims";
    for (size_t i = 0; i < n; i++) {
        char auth[4200], want[200];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", cases[i].token);
        struct response r;
        ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, auth, NULL, &r), 0);
        ck_assert_msg(r.status == 401, "%s: %d", cases[i].reason, r.status);
        snprintf(want, sizeof want,
                 "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", error_description=\"%s\"",
                 cases[i].reason);
        ck_assert_str_eq(response_header(&r, "WWW-Authenticate"), want);
        ck_assert_str_eq(r.body, "{\"statusCode\":401,\"message\":\"Invalid token: access token "
                                 "is invalid\",\"error\":\"Unauthorized\"}");
        response_free(&r);
    }
    ck_assert_int_eq(journal_count(&E), 0);
    char *log = slurp(E.access_log);
    for (size_t i = 0; i < n; i++) {
        char field[80];
        snprintf(field, sizeof field, "\"auth_failure\":\"%s\"", cases[i].reason);
        ck_assert_msg(strstr(log, field) != NULL, "access log lacks %s", field);
        ck_assert_msg(strstr(log, cases[i].token) == NULL, "a token reached the access log");
    }
    free(log);
    char *glog = slurp(E.gateway.log);
    ck_assert_ptr_null(strstr(glog, good));
    free(glog);
}
END_TEST

START_TEST(test_two_authorization_headers_refused)
{
    char auth[9000];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\nAuthorization: Bearer %s\r\n", E.token,
             E.token_ro);
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, auth, NULL, &r), 0);
    ck_assert_int_eq(r.status, 401);
    ck_assert_ptr_nonnull(strstr(response_header(&r, "WWW-Authenticate"), "malformed"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

/* A newer document that dropped an op's security must not open the op to every token. */
START_TEST(test_op_without_scope_in_the_document_fails_closed)
{
    char dir[] = "/tmp/ghl-oapi-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *doc = slurp(GW_SRC_DIR "/proxy/openapi/users.openapi.json");
    cJSON *j = cJSON_Parse(doc);
    free(doc);
    ck_assert_ptr_nonnull(j);
    cJSON *get = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "paths"), "/users/{userId}"), "get");
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(get, "security"));
    cJSON_DeleteItemFromObject(get, "security");
    char path[300], cmd[800];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    char *text = cJSON_Print(j);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "cp %s/proxy/openapi/common-schemas.json %s/", GW_SRC_DIR, dir);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    char up[400];
    snprintf(up, sizeof up, "\"openapi\": \"%s\"", path);
    env_start(&E, &(struct env_opts){.upstream_json = up});
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 503);
    ck_assert_ptr_nonnull(strstr(r.body, "names no scope for get-user"));
    response_free(&r);
    /* the other ops keep their scopes */
    ck_assert_int_eq(send_req(&E, "GET", "/users/search?companyId=" COMPANY, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 1);
    char *out;
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), E.config);
    ck_assert_int_eq(run_cmd(cmd, &out), 0);
    ck_assert_msg(strstr(out, "warning: op get-user has no scope in the OpenAPI document") != NULL,
                  "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

/* ---- JWKS URL ---- */

/* ghl_gateway_jwks_refetch_waits_total{result="result"} */
static long long waits(const char *result)
{
    char *m = NULL, series[120];
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    snprintf(series, sizeof series, "ghl_gateway_jwks_refetch_waits_total{result=\"%s\"}",
             result);
    long long v = metrics_sample(m, series);
    free(m);
    return v;
}

static int status_with(const char *token)
{
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    struct response r;
    if (send_req(&E, "GET", "/users/" SEED_USER, auth, NULL, &r) != 0)
        return -1;
    int st = r.status;
    response_free(&r);
    return st;
}

START_TEST(test_jwks_url_rotation_and_failed_fetch)
{
    char dir[] = "/tmp/ghl-jwks-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char cmd[1200];
    make_key_b(dir); /* key A: the test RS256 key; key B: made now */
    char apub[400], bpub[400];
    snprintf(apub, sizeof apub, "%s/jwt-rs256.pub.pem", GW_CERTS_DIR);
    snprintf(bpub, sizeof bpub, "%s/b.pub", dir);
    char *ja = jwk_from_pem(apub, "a1"), *jb = jwk_from_pem(bpub, "b1");
    ck_assert_ptr_nonnull(ja);
    ck_assert_ptr_nonnull(jb);
    const char *one[] = {ja};
    write_jwks(dir, one, 1);
    int port;
    pid_t srv = serve_dir(dir, &port);
    char auth[1024];
    /* 127.0.0.1, not localhost: the fetch uses the system resolver, and a minimal machine
     * (a debootstrap chroot) has no /etc/hosts; the certificate names the address too */
    snprintf(auth, sizeof auth,
             "{ \"issuers\": [ { \"issuer\": \"https://rot.test\", \"jwks_url\": "
             "\"https://127.0.0.1:%d/jwks.json\", \"jwks_ca_file\": \"%s/ca.crt\", "
             "\"jwks_refetch_min_s\": 1, \"jwks_refetch_wait_ms\": %d } ] }",
             port, GW_CERTS_DIR, under_valgrind() ? 15000 : 2000);
    env_start(&E, &(struct env_opts){.auth_json = auth});

    char ta[4096], tb[4096], tc[4096];
    char bextra[500], cextra[500];
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", "--kid a1", ta, sizeof ta), 0);
    snprintf(bextra, sizeof bextra, "--kid b1 --key %s/b.key", dir);
    /* mint() names its own --key; a second --key wins in ghl-gateway mint's parsing */
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", bextra, tb, sizeof tb), 0);
    snprintf(cextra, sizeof cextra, "--kid c1 --key %s/b.key", dir);
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", cextra, tc, sizeof tc), 0);
    ck_assert_int_eq(status_with(ta), 200); /* fetched at start */
    ck_assert_int_eq(status_with(tb), 401); /* not published yet */

    const char *two[] = {ja, jb};
    write_jwks(dir, two, 2);
    /* SPEC §4.1: the first request with the rotated key waits for the refetch its unknown kid
     * asks for (at most one a second here), and gets 200: a rotation costs no 401 */
    usleep(1100000); /* the refetch after tb's 401 above is allowed again */
    ck_assert_int_eq(status_with(tb), 200);
    ck_assert_int_eq(waits("found"), 1);
    ck_assert_int_eq(waits("not_found"), 1); /* tb before its key was published */

    /* the JWKS goes away: a refetch fails and the last good keys stay */
    char path[400];
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    unlink(path);
    usleep(1200000);
    ck_assert_int_eq(status_with(tc), 401); /* unknown kid c1: waits for a refetch, which fails */
    ck_assert_int_eq(waits("not_found"), 2);
    ck_assert_int_eq(waits("timeout"), 0);
    char *glog = NULL;
    for (int i = 0; i < 30; i++) {
        usleep(200000);
        free(glog);
        glog = slurp(E.gateway.log);
        if (strstr(glog, "keeping the last good keys"))
            break;
    }
    ck_assert_msg(strstr(glog, "keeping the last good keys") != NULL, "%s", glog);
    ck_assert_int_eq(status_with(ta), 200);
    ck_assert_int_eq(status_with(tb), 200);

    /* a reload while the JWKS is gone: the new configuration starts from the last good keys */
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    free(glog);
    glog = wait_for_text(E.gateway.log, "SIGHUP: reloaded", 5000);
    ck_assert_msg(strstr(glog, "SIGHUP: reloaded") != NULL, "%s", glog);
    ck_assert_msg(strstr(glog, "the last good keys stay in use") != NULL, "%s", glog);
    free(glog);
    glog = NULL;
    usleep(200000); /* the workers adopt the new snapshot when woken */
    ck_assert_int_eq(status_with(ta), 200);
    ck_assert_int_eq(status_with(tb), 200);
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    free(ja);
    free(jb);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

/* SPEC §4.1: a key that leaves the JWKS (a refresh no longer lists its kid) stops working at
 * the refresh, without a reload, even for a token every worker has verified and cached: 401
 * unknown_key. The key that stays keeps working. */
START_TEST(test_jwks_url_withdrawn_key_refused_though_cached)
{
    char dir[] = "/tmp/ghl-jwks-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    make_key_b(dir);
    char apub[400], bpub[400];
    snprintf(apub, sizeof apub, "%s/jwt-rs256.pub.pem", GW_CERTS_DIR);
    snprintf(bpub, sizeof bpub, "%s/b.pub", dir);
    char *ja = jwk_from_pem(apub, "a1"), *jb = jwk_from_pem(bpub, "b1");
    ck_assert_ptr_nonnull(ja);
    ck_assert_ptr_nonnull(jb);
    const char *both[] = {ja, jb}, *only_b[] = {jb};
    write_jwks(dir, both, 2);
    int port;
    pid_t srv = serve_dir(dir, &port);
    char auth[1024];
    snprintf(auth, sizeof auth,
             "{ \"issuers\": [ { \"issuer\": \"https://rot.test\", \"jwks_url\": "
             "\"https://127.0.0.1:%d/jwks.json\", \"jwks_ca_file\": \"%s/ca.crt\", "
             "\"jwks_refresh_s\": 1 } ] }",
             port, GW_CERTS_DIR);
    env_start(&E, &(struct env_opts){.auth_json = auth}); /* two workers, two token caches */
    char ta[4096], tb[4096], bextra[500];
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", "--kid a1", ta, sizeof ta), 0);
    snprintf(bextra, sizeof bextra, "--kid b1 --key %s/b.key", dir);
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", bextra, tb, sizeof tb), 0);

    /* a new connection each: the kernel spreads them over both workers, which cache ta */
    int n = under_valgrind() ? 8 : 20;
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(status_with(ta), 200);
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    const char *hits = strstr(m, "\nghl_gateway_token_cache_hits_total ");
    ck_assert_ptr_nonnull(hits);
    ck_assert_msg(strtol(hits + 36, NULL, 10) >= n - 2, "ta not served from the caches: %s", hits);
    free(m);

    write_jwks(dir, only_b, 1); /* a1 withdrawn at the identity provider */
    char *glog = wait_for_text(E.gateway.log, "https://rot.test: 1 key loaded", 10000);
    ck_assert_msg(strstr(glog, "https://rot.test: 1 key loaded") != NULL, "%s", glog);
    free(glog);
    for (int i = 0; i < n; i++) {
        char hdr[4200];
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", ta);
        struct response r;
        ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, hdr, NULL, &r), 0);
        ck_assert_msg(r.status == 401, "request %d with the withdrawn key: %d", i + 1, r.status);
        ck_assert_str_eq(response_header(&r, "WWW-Authenticate"),
                         "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", "
                         "error_description=\"unknown_key\"");
        response_free(&r);
    }
    ck_assert_int_eq(status_with(tb), 200);
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    free(ja);
    free(jb);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

/* A JWKS server on a fresh key pair (b1 in dir) and a gateway whose issuer https://rot.test
 * fetches it; *srv, *port: the server. */
static void start_rotating(char *dir, pid_t *srv, char **ja, char **jb, const char *more)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    make_key_b(dir);
    char apub[400], bpub[400];
    snprintf(apub, sizeof apub, "%s/jwt-rs256.pub.pem", GW_CERTS_DIR);
    snprintf(bpub, sizeof bpub, "%s/b.pub", dir);
    *ja = jwk_from_pem(apub, "a1");
    *jb = jwk_from_pem(bpub, "b1");
    ck_assert_ptr_nonnull(*ja);
    ck_assert_ptr_nonnull(*jb);
    const char *one[] = {*ja};
    write_jwks(dir, one, 1);
    int port;
    *srv = serve_dir(dir, &port);
    char auth[1024];
    snprintf(auth, sizeof auth,
             "{ \"issuers\": [ { \"issuer\": \"https://rot.test\", \"jwks_url\": "
             "\"https://127.0.0.1:%d/jwks.json\", \"jwks_ca_file\": \"%s/ca.crt\"%s } ] }",
             port, GW_CERTS_DIR, more);
    env_start(&E, &(struct env_opts){.auth_json = auth});
}

static void stop_rotating(const char *dir, pid_t srv, char *ja, char *jb)
{
    kill(srv, SIGCONT);
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    free(ja);
    free(jb);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}

static long long jwks_fetches(void)
{
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    long long v = metrics_sample(
        m, "ghl_gateway_jwks_fetches_total{issuer=\"https://rot.test\",result=\"ok\"}");
    free(m);
    return v;
}

/* SPEC §4.1: requests meeting the same unknown kid at once, on two connections (and so, in
 * general, two workers), wait on the same refetch: both get 200 and the JWKS is fetched once
 * more, not twice. */
START_TEST(test_rotation_waits_are_shared_by_concurrent_requests)
{
    char dir[] = "/tmp/ghl-jwks-XXXXXX";
    pid_t srv;
    char *ja, *jb;
    char more[80];
    snprintf(more, sizeof more, ", \"jwks_refetch_min_s\": 1, \"jwks_refetch_wait_ms\": %d",
             under_valgrind() ? 15000 : 3000);
    start_rotating(dir, &srv, &ja, &jb, more);
    char tb[4096], bextra[500];
    snprintf(bextra, sizeof bextra, "--kid b1 --key %s/b.key", dir);
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", bextra, tb, sizeof tb), 0);
    const char *two[] = {ja, jb};
    write_jwks(dir, two, 2); /* rotated at the identity provider; the gateway has not seen it */
    long long before = jwks_fetches();
    char ca[600], *raw = NULL;
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    ck_assert_int_ge(asprintf(&raw,
                              "GET /users/" SEED_USER " HTTP/1.1\r\nHost: localhost\r\n"
                              "Version: 2021-07-28\r\nAuthorization: Bearer %s\r\n\r\n",
                              tb),
                     0);
    enum { N = 4 };
    struct tls_client c[N];
    /* connected first, then sent together: the refetch waits for jwks_refetch_min_s after the
     * fetch at start, so all of them meet the unknown kid before it ends */
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tls_connect(&c[i], E.gateway.port, 0, NULL, NULL, ca), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tls_send(&c[i], raw, strlen(raw)), 0);
    for (int i = 0; i < N; i++) {
        struct response r;
        ck_assert_int_eq(tls_read_response(&c[i], &r, under_valgrind() ? 30000 : 8000, 0), 0);
        ck_assert_msg(r.status == 200, "request %d: %d %s", i, r.status, r.body);
        response_free(&r);
        tls_close(&c[i]);
    }
    free(raw);
    ck_assert_int_eq(waits("found"), N);
    ck_assert_int_eq(jwks_fetches() - before, 1);
    stop_rotating(dir, srv, ja, jb);
}
END_TEST

/* A refetch that does not end within jwks_refetch_wait_ms (the JWKS server hangs): the
 * request is answered 401 unknown_key when its wait is over, counted as a timeout; and a kid
 * met when the next refetch is further off than the wait (jwks_refetch_min_s) does not wait. */
START_TEST(test_rotation_wait_times_out_and_only_waits_for_a_due_refetch)
{
    char dir[] = "/tmp/ghl-jwks-XXXXXX";
    pid_t srv;
    char *ja, *jb;
    start_rotating(dir, &srv, &ja, &jb,
                   ", \"jwks_refetch_min_s\": 1, \"jwks_refetch_wait_ms\": 1500");
    char tb[4096], bextra[500];
    snprintf(bextra, sizeof bextra, "--kid b1 --key %s/b.key", dir);
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", bextra, tb, sizeof tb), 0);
    const char *two[] = {ja, jb};
    write_jwks(dir, two, 2);
    ck_assert_int_eq(kill(srv, SIGSTOP), 0); /* connections queue, nothing answers */
    usleep(1100000);
    ck_assert_int_eq(status_with(tb), 401);
    ck_assert_int_eq(waits("timeout"), 1);
    ck_assert_int_eq(waits("found") + waits("not_found"), 0);
    ck_assert_int_eq(kill(srv, SIGCONT), 0);
    /* the hung fetch gives up after its 5 s; the next one brings b1 */
    int st = 0;
    for (int i = 0; i < 40 && st != 200; i++) {
        usleep(250000);
        st = status_with(tb);
    }
    ck_assert_int_eq(st, 200);
    env_stop(&E);
    stop_rotating(dir, srv, ja, jb);

    /* jwks_refetch_min_s 30: right after the fetch at start, an unknown kid's refetch is 30 s
     * off, past the 2 s wait: refused at once, no wait counted */
    char dir2[] = "/tmp/ghl-jwks-XXXXXX";
    start_rotating(dir2, &srv, &ja, &jb, ", \"jwks_refetch_min_s\": 30");
    snprintf(bextra, sizeof bextra, "--kid b1 --key %s/b.key", dir2);
    ck_assert_int_eq(
        mint("RS256", "https://rot.test", "svc", "users.readonly", bextra, tb, sizeof tb), 0);
    ck_assert_int_eq(status_with(tb), 401);
    ck_assert_int_eq(waits("found") + waits("not_found") + waits("timeout"), 0);
    stop_rotating(dir2, srv, ja, jb);
}
END_TEST

/* ---- typ (SPEC §4 item 3, RFC 9068) ---- */

/* A token of ISSUER_RS's key k1 (or of iss) with the header given. */
static char *token_with_header(const char *iss, const char *header)
{
    char key[400], payload[600];
    snprintf(key, sizeof key, "%s/jwt-rs256.key", GW_CERTS_DIR);
    long now = (long)time(NULL);
    snprintf(payload, sizeof payload,
             "{\"iss\":\"%s\",\"sub\":\"svc-typ\",\"aud\":\"ghl-gateway\","
             "\"scope\":\"users.readonly\",\"iat\":%ld,\"exp\":%ld}",
             iss, now, now + 600);
    char *t = sign_jws_rs256(key, header, payload);
    ck_assert_ptr_nonnull(t);
    return t;
}

static void expect_status(const char *token, int status, const char *reason, const char *what)
{
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, auth, NULL, &r), 0);
    ck_assert_msg(r.status == status, "%s: %d %s", what, r.status, r.body);
    if (reason) {
        char want[200];
        snprintf(want, sizeof want,
                 "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", "
                 "error_description=\"%s\"",
                 reason);
        const char *got = response_header(&r, "WWW-Authenticate");
        ck_assert_msg(got && strcmp(got, want) == 0, "%s: %s", what, got ? got : "(none)");
    }
    response_free(&r);
}

START_TEST(test_typ_at_jwt_accepted_and_required_where_configured)
{
    char auth[1400];
    snprintf(auth, sizeof auth,
             "{ \"issuers\": [\n"
             "  { \"issuer\": \"" ISSUER_RS "\", \"keys\": [ { \"kid\": \"k1\", \"alg\": \"RS256\", "
             "\"pem_file\": \"%s/jwt-rs256.pub.pem\" } ] },\n"
             "  { \"issuer\": \"https://rot.test\", \"require_typ\": \"at+jwt\", \"keys\": [ { "
             "\"kid\": \"k1\", \"alg\": \"RS256\", \"pem_file\": \"%s/jwt-rs256.pub.pem\" } ] } ] }",
             GW_CERTS_DIR, GW_CERTS_DIR);
    env_start(&E, &(struct env_opts){.auth_json = auth});
    static const struct {
        const char *typ; /* NULL: no typ */
        int plain, required; /* the status without and with require_typ */
        const char *reason_plain, *reason_required;
    } cases[] = {
        {"at+jwt", 200, 200, NULL, NULL},
        {"application/at+jwt", 200, 200, NULL, NULL},
        {"AT+JWT", 200, 200, NULL, NULL},
        {"Application/At+Jwt", 200, 200, NULL, NULL},
        {"JWT", 200, 401, NULL, "bad_claims"},
        {"application/jwt", 200, 401, NULL, "bad_claims"},
        {NULL, 200, 401, NULL, "bad_claims"},
        {"jwt+at", 401, 401, "malformed", "malformed"},
        {"at+jwt ", 401, 401, "malformed", "malformed"},
        {"application/", 401, 401, "malformed", "malformed"},
        {"JOSE", 401, 401, "malformed", "malformed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char header[200], what[120];
        if (cases[i].typ)
            snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"%s\"}",
                     cases[i].typ);
        else
            snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"k1\"}");
        char *t = token_with_header(ISSUER_RS, header);
        snprintf(what, sizeof what, "typ %s", cases[i].typ ? cases[i].typ : "(none)");
        expect_status(t, cases[i].plain, cases[i].reason_plain, what);
        free(t);
        t = token_with_header("https://rot.test", header);
        snprintf(what, sizeof what, "typ %s with require_typ",
                 cases[i].typ ? cases[i].typ : "(none)");
        expect_status(t, cases[i].required, cases[i].reason_required, what);
        free(t);
    }
}
END_TEST

/* ---- certificate-bound tokens (SPEC §4.3, RFC 8705) ---- */

/* GET one user over a TLS connection with the client certificate crt/key. */
static int status_over_mtls(const char *token, const char *crt, const char *key)
{
    char ca[600], *raw = NULL;
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    ck_assert_int_ge(asprintf(&raw,
                              "GET /users/" SEED_USER " HTTP/1.1\r\nHost: localhost\r\n"
                              "Version: 2021-07-28\r\nAuthorization: Bearer %s\r\n\r\n",
                              token),
                     0);
    struct tls_client c;
    struct response r;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, crt, key, ca), 0);
    ck_assert_int_eq(tls_send(&c, raw, strlen(raw)), 0);
    ck_assert_int_eq(tls_read_response(&c, &r, under_valgrind() ? 30000 : 5000, 0), 0);
    int st = r.status;
    if (st == 401)
        ck_assert_str_eq(response_header(&r, "WWW-Authenticate"),
                         "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", "
                         "error_description=\"binding\"");
    response_free(&r);
    tls_close(&c);
    free(raw);
    return st;
}

START_TEST(test_cert_bound_tokens_only_on_their_certificate)
{
    char dir[] = "/tmp/ghl-bind-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char cmd[2400], *out = NULL;
    /* a second client certificate from the same trusted CA */
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-subj /CN=other-client -keyout other.key -out other.csr 2>/dev/null && "
             "printf 'extendedKeyUsage=clientAuth\\n' > other.ext && "
             "openssl x509 -req -in other.csr -CA %s/ca.crt -CAkey %s/ca.key -CAcreateserial "
             "-CAserial other.srl -days 2 -extfile other.ext -out other.crt 2>/dev/null",
             dir, GW_CERTS_DIR, GW_CERTS_DIR);
    ck_assert_int_eq(run_cmd(cmd, &out), 0);
    free(out);
    char tls[700], auth[1400];
    snprintf(tls, sizeof tls, "\"client_ca\": \"%s/ca.crt\"", GW_CERTS_DIR);
    snprintf(auth, sizeof auth,
             "{ \"issuers\": [\n"
             "  { \"issuer\": \"" ISSUER_RS "\", \"keys\": [ { \"kid\": \"k1\", \"alg\": \"RS256\", "
             "\"pem_file\": \"%s/jwt-rs256.pub.pem\" } ] },\n"
             "  { \"issuer\": \"https://rot.test\", \"require_cert_binding\": true, \"keys\": [ { "
             "\"kid\": \"k1\", \"alg\": \"RS256\", \"pem_file\": \"%s/jwt-rs256.pub.pem\" } ] } ] }",
             GW_CERTS_DIR, GW_CERTS_DIR);
    env_start(&E, &(struct env_opts){.tls_json = tls, .auth_json = auth});
    char crt[600], key[600], ocrt[600], okey[600], thumb[48], othumb[48];
    snprintf(crt, sizeof crt, "%s/client.crt", E.certs);
    snprintf(key, sizeof key, "%s/client.key", E.certs);
    snprintf(ocrt, sizeof ocrt, "%s/other.crt", dir);
    snprintf(okey, sizeof okey, "%s/other.key", dir);
    ck_assert_int_eq(cert_thumbprint(crt, thumb), 0);
    ck_assert_int_eq(cert_thumbprint(ocrt, othumb), 0);
    ck_assert_str_ne(thumb, othumb);
    char bound[4096], unbound[4096], required[4096], required_unbound[4096], extra[200];
    snprintf(extra, sizeof extra, "--kid k1 --claim 'cnf={\"x5t#S256\":\"%s\"}'", thumb);
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc-bound", "users.readonly", extra, bound,
                          sizeof bound),
                     0);
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc-free", "users.readonly", "--kid k1", unbound,
                          sizeof unbound),
                     0);
    ck_assert_int_eq(mint("RS256", "https://rot.test", "svc-req", "users.readonly", extra,
                          required, sizeof required),
                     0);
    ck_assert_int_eq(mint("RS256", "https://rot.test", "svc-req", "users.readonly", "--kid k1",
                          required_unbound, sizeof required_unbound),
                     0);
    /* twice each: the second is served from the token cache, and is checked all the same */
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(status_over_mtls(bound, crt, key), 200);
        ck_assert_int_eq(status_over_mtls(bound, ocrt, okey), 401);
        ck_assert_int_eq(status_over_mtls(unbound, ocrt, okey), 200);
        ck_assert_int_eq(status_over_mtls(required, crt, key), 200);
        ck_assert_int_eq(status_over_mtls(required, ocrt, okey), 401);
        ck_assert_int_eq(status_over_mtls(required_unbound, crt, key), 401);
    }
    /* the reason class in the metrics and the access log */
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    ck_assert_int_eq(metrics_sample(m, "ghl_gateway_auth_failures_total{reason=\"binding\"}"), 6);
    free(m);
    char *alog = wait_for_text(E.access_log, "\"auth_failure\":\"binding\"", 5000);
    ck_assert_msg(strstr(alog, "\"auth_failure\":\"binding\"") != NULL, "%s", alog);
    free(alog);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("auth");
    TCase *t = tcase_create("tokens");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_rs256_es256_hs256_and_jwks_file_tokens);
    tcase_add_test(t, test_no_token_gets_the_plain_challenge);
    tcase_add_test(t, test_bad_tokens_name_their_reason);
    tcase_add_test(t, test_two_authorization_headers_refused);
    suite_add_tcase(s, t);
    TCase *j = tcase_create("jwks_url");
    tcase_add_checked_fixture(j, NULL, teardown);
    tcase_set_timeout(j, 60);
    tcase_add_test(j, test_jwks_url_rotation_and_failed_fetch);
    tcase_add_test(j, test_jwks_url_withdrawn_key_refused_though_cached);
    tcase_add_test(j, test_op_without_scope_in_the_document_fails_closed);
    tcase_add_test(j, test_rotation_waits_are_shared_by_concurrent_requests);
    tcase_add_test(j, test_rotation_wait_times_out_and_only_waits_for_a_due_refetch);
    tcase_add_test(j, test_typ_at_jwt_accepted_and_required_where_configured);
    tcase_add_test(j, test_cert_bound_tokens_only_on_their_certificate);
    suite_add_tcase(s, j);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
