/* OpenID Connect discovery end to end (SPEC §4.2): the real gateway finds an issuer's JWKS
 * through <issuer>/.well-known/openid-configuration served over TLS by openssl s_server,
 * refuses documents of another issuer or with an http jwks_uri (and check warns), follows a
 * moved jwks_uri at a refresh while a bad document keeps the last good keys (across a reload
 * too), and gets its keys without a reload once a provider that was down at start answers
 * (the same retry serves a jwks_url). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct env E;

/* One test's identity provider: a folder served over https, its issuer and its two keys. */
struct idp {
    char dir[64];
    int port;
    pid_t srv; /* 0 while not serving */
    char issuer[64];
    char *ja, *jb; /* JWKs of key A (the test RS256 key, kid a1) and key B (made now, kid b1) */
    char ta[4096], tb[4096]; /* tokens signed with each */
};

static void write_doc(const struct idp *p, const char *name, const char *text)
{
    char path[300], tmp[320];
    snprintf(path, sizeof path, "%s/%s", p->dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(rename(tmp, path), 0); /* a fetch never reads half a document */
}

/* The discovery document: issuer and jwks_uri as given (NULL: the idp's own issuer). */
static void write_discovery(const struct idp *p, const char *issuer, const char *jwks_uri)
{
    char doc[1024];
    snprintf(doc, sizeof doc,
             "{\"issuer\":\"%s\",\"jwks_uri\":\"%s\",\"response_types_supported\":[\"code\"],"
             "\"id_token_signing_alg_values_supported\":[\"RS256\"]}",
             issuer ? issuer : p->issuer, jwks_uri);
    write_doc(p, ".well-known/openid-configuration", doc);
}

static void write_keys(const struct idp *p, const char *name, const char *jwk)
{
    char doc[4096];
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", jwk);
    write_doc(p, name, doc);
}

/* A folder with key B, the issuer https://127.0.0.1:port (the port chosen now; served by
 * idp_serve), jwks.json holding key A and a document pointing at it. */
static void idp_make(struct idp *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/ghl-disc-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(p->dir));
    char wk[128];
    snprintf(wk, sizeof wk, "%s/.well-known", p->dir);
    ck_assert_int_eq(mkdir(wk, 0755), 0);
    make_key_b(p->dir);
    char apub[400], bpub[400];
    snprintf(apub, sizeof apub, "%s/jwt-rs256.pub.pem", GW_CERTS_DIR);
    snprintf(bpub, sizeof bpub, "%s/b.pub", p->dir);
    p->ja = jwk_from_pem(apub, "a1");
    p->jb = jwk_from_pem(bpub, "b1");
    ck_assert_ptr_nonnull(p->ja);
    ck_assert_ptr_nonnull(p->jb);
    p->port = free_port();
    /* 127.0.0.1, not localhost: the sandbox certificate names the address, and a minimal
     * machine has no /etc/hosts for the system resolver */
    snprintf(p->issuer, sizeof p->issuer, "https://127.0.0.1:%d", p->port);
    write_keys(p, "jwks.json", p->ja);
    char uri[128];
    snprintf(uri, sizeof uri, "%s/jwks.json", p->issuer);
    write_discovery(p, NULL, uri);
    char bextra[200];
    snprintf(bextra, sizeof bextra, "--kid b1 --key %s/b.key", p->dir);
    ck_assert_int_eq(
        mint("RS256", p->issuer, "svc", "users.readonly", "--kid a1", p->ta, sizeof p->ta), 0);
    /* mint() names its own --key; a second --key wins in ghl-gateway mint's parsing */
    ck_assert_int_eq(mint("RS256", p->issuer, "svc", "users.readonly", bextra, p->tb, sizeof p->tb),
                     0);
}

static void idp_serve(struct idp *p)
{
    p->srv = serve_dir_at(p->dir, p->port);
}

static void idp_free(struct idp *p)
{
    if (p->srv > 0) {
        kill(p->srv, SIGTERM);
        waitpid(p->srv, NULL, 0);
    }
    free(p->ja);
    free(p->jb);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    run_cmd(cmd, NULL);
}

/* The gateway with one issuer (its CA the test CA) and a policy that lets its subjects read:
 * with discovery, or with the jwks_url of jwks.json (url); more: extra members of the issuer. */
static void start_gateway_with(const struct idp *p, bool url, const char *more)
{
    char auth[1024], policy[1024], source[200];
    if (url)
        snprintf(source, sizeof source, "\"jwks_url\": \"%s/jwks.json\"", p->issuer);
    else
        snprintf(source, sizeof source, "\"discovery\": true");
    snprintf(auth, sizeof auth,
             "{ \"issuers\": [ { \"issuer\": \"%s\", %s, "
             "\"jwks_ca_file\": \"%s/ca.crt\"%s%s } ] }",
             p->issuer, source, GW_CERTS_DIR, more ? ", " : "", more ? more : "");
    snprintf(policy, sizeof policy,
             "{ \"name\": \"discovered\",\n"
             "  \"subjects\": [ { \"iss\": [\"%s\"] } ],\n"
             "  \"operations\": [\"get-user\"],\n"
             "  \"companies\": \"*\", \"locations\": \"*\" }\n",
             p->issuer);
    env_start(&E, &(struct env_opts){.auth_json = auth, .policies = {{"disc.json", policy}}});
}

static void start_gateway(const struct idp *p, const char *more)
{
    start_gateway_with(p, false, more);
}

static void teardown(void)
{
    env_stop(&E);
}

/* The answer to a get-user with token; with reason, a 401 must name it. */
static int status_with(const char *token)
{
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    struct response r;
    if (send_req(&E, "GET", "/users/" SEED_USER, auth, NULL, &r) != 0)
        return -1;
    int st = r.status;
    if (st == 401)
        ck_assert_str_eq(response_header(&r, "WWW-Authenticate"),
                         "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", "
                         "error_description=\"unknown_key\"");
    response_free(&r);
    return st;
}

static long long metric(const struct idp *p, const char *name, const char *more_labels)
{
    char *m = NULL, series[256];
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    snprintf(series, sizeof series, "%s{issuer=\"%s\"%s}", name, p->issuer,
             more_labels ? more_labels : "");
    long long v = metrics_sample(m, series);
    free(m);
    return v;
}

/* ghl-gateway check on the env's config: its exit status, its output in *out. */
static int check_config(char **out)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), E.config);
    return run_cmd(cmd, out);
}

START_TEST(test_discovery_finds_the_jwks)
{
    struct idp p;
    idp_make(&p);
    idp_serve(&p);
    start_gateway(&p, NULL);
    ck_assert_int_eq(status_with(p.ta), 200);
    ck_assert_int_eq(status_with(p.tb), 401); /* not published */
    ck_assert_int_eq(journal_count(&E), 1);
    char *glog = slurp(E.gateway.log), want[200];
    snprintf(want, sizeof want, "JWKS of issuer %s: 1 key loaded from %s/jwks.json", p.issuer,
             p.issuer);
    ck_assert_msg(strstr(glog, want) != NULL, "%s", glog);
    free(glog);
    ck_assert_int_ge(metric(&p, "ghl_gateway_jwks_fetches_total", ",result=\"ok\""), 1);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_fetches_total", ",result=\"error\""), 0);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_keys", NULL), 1);
    char *out;
    ck_assert_int_eq(check_config(&out), 0);
    ck_assert_msg(strstr(out, "+ JWKS by discovery") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "warning: auth.issuers[0]") == NULL, "%s", out);
    free(out);
    idp_free(&p);
}
END_TEST

/* SPEC §4.1 with discovery: the identity provider rotates (key B published beside A); the
 * first token signed with B waits for the refetch its unknown kid asks for, at the jwks_uri
 * the document gave, and gets 200. */
START_TEST(test_discovery_rotation_first_request_passes)
{
    struct idp p;
    idp_make(&p);
    idp_serve(&p);
    char more[120];
    snprintf(more, sizeof more, "\"jwks_refetch_min_s\": 1, \"jwks_refetch_wait_ms\": %d",
             under_valgrind() ? 15000 : 3000);
    start_gateway(&p, more);
    ck_assert_int_eq(status_with(p.ta), 200);
    const char *both[] = {p.ja, p.jb};
    write_jwks(p.dir, both, 2);
    ck_assert_int_eq(status_with(p.tb), 200); /* the first request with the new key */
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    ck_assert_int_eq(metrics_sample(m, "ghl_gateway_jwks_refetch_waits_total{result=\"found\"}"),
                     1);
    free(m);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_keys", NULL), 2);
    idp_free(&p);
}
END_TEST

/* An issuer written with a trailing '/' (as some providers publish it): the document is
 * still at <issuer without it>/.well-known/..., and its issuer must keep the '/'. */
START_TEST(test_discovery_issuer_with_a_trailing_slash)
{
    struct idp p;
    idp_make(&p);
    char uri[128];
    snprintf(uri, sizeof uri, "%s/jwks.json", p.issuer);
    size_t n = strlen(p.issuer);
    snprintf(p.issuer + n, sizeof p.issuer - n, "/");
    write_discovery(&p, NULL, uri);
    ck_assert_int_eq(
        mint("RS256", p.issuer, "svc", "users.readonly", "--kid a1", p.ta, sizeof p.ta), 0);
    idp_serve(&p);
    start_gateway(&p, NULL);
    ck_assert_int_eq(status_with(p.ta), 200);
    idp_free(&p);
}
END_TEST

/* A document is refused (of another issuer, or with an http jwks_uri): tokens get
 * unknown_key, the log names the reason, the failure is counted, and check warns naming the
 * issuer. */
static void refused_document(bool other_issuer)
{
    struct idp p;
    idp_make(&p);
    char uri[128], reason[256];
    if (other_issuer) {
        snprintf(uri, sizeof uri, "%s/jwks.json", p.issuer);
        write_discovery(&p, "https://other.test", uri);
        snprintf(reason, sizeof reason,
                 "issuer \"https://other.test\" in the document is not the configured issuer");
    } else {
        snprintf(uri, sizeof uri, "http://127.0.0.1:%d/jwks.json", p.port);
        write_discovery(&p, NULL, uri);
        snprintf(reason, sizeof reason, "jwks_uri \"%s\" is not an https URL", uri);
    }
    idp_serve(&p);
    start_gateway(&p, NULL);
    ck_assert_int_eq(status_with(p.ta), 401);
    ck_assert_int_eq(journal_count(&E), 0);
    char want[512];
    snprintf(want, sizeof want, "JWKS of issuer %s: discovery: %s; no keys from it yet", p.issuer,
             reason);
    char *glog = wait_for_text(E.gateway.log, want, 3000);
    ck_assert_msg(strstr(glog, want) != NULL, "wanted %s in\n%s", want, glog);
    free(glog);
    ck_assert_int_ge(metric(&p, "ghl_gateway_jwks_fetches_total", ",result=\"error\""), 1);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_fetches_total", ",result=\"ok\""), 0);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_keys", NULL), 0);
    char *out;
    ck_assert_int_eq(check_config(&out), 0); /* a warning, not a problem */
    snprintf(want, sizeof want,
             "warning: auth.issuers[0] %s: discovery: %s (the gateway keeps trying)", p.issuer,
             reason);
    ck_assert_msg(strstr(out, want) != NULL, "wanted %s in\n%s", want, out);
    free(out);
    idp_free(&p);
}

START_TEST(test_discovery_document_of_another_issuer_refused)
{
    refused_document(true);
}
END_TEST

START_TEST(test_discovery_http_jwks_uri_refused)
{
    refused_document(false);
}
END_TEST

/* A document moving its jwks_uri takes effect at the next refresh, without a reload (the key
 * no longer published is withdrawn); a later document of another issuer keeps the last good
 * keys, and so does a reload while it is served. */
START_TEST(test_discovery_moved_jwks_uri_followed_and_bad_document_keeps_keys)
{
    struct idp p;
    idp_make(&p);
    idp_serve(&p);
    start_gateway(&p, "\"jwks_refresh_s\": 1");
    ck_assert_int_eq(status_with(p.ta), 200);
    ck_assert_int_eq(status_with(p.tb), 401);

    write_keys(&p, "jwks2.json", p.jb);
    char uri2[128], want[300];
    snprintf(uri2, sizeof uri2, "%s/jwks2.json", p.issuer);
    write_discovery(&p, NULL, uri2);
    snprintf(want, sizeof want, "JWKS of issuer %s: 1 key loaded from %s", p.issuer, uri2);
    char *glog = wait_for_text(E.gateway.log, want, 10000);
    ck_assert_msg(strstr(glog, want) != NULL, "%s", glog);
    free(glog);
    ck_assert_int_eq(status_with(p.tb), 200);
    ck_assert_int_eq(status_with(p.ta), 401); /* a1 left with the old jwks_uri */

    /* another issuer's document, pointing back at key A: refused, key B stays */
    char uri1[128];
    snprintf(uri1, sizeof uri1, "%s/jwks.json", p.issuer);
    write_discovery(&p, "https://127.0.0.1", uri1);
    snprintf(want, sizeof want,
             "JWKS of issuer %s: discovery: issuer \"https://127.0.0.1\" in the document is not "
             "the configured issuer; keeping the last good keys",
             p.issuer);
    glog = wait_for_text(E.gateway.log, want, 10000);
    ck_assert_msg(strstr(glog, want) != NULL, "%s", glog);
    free(glog);
    usleep(1500000); /* another refresh or two: still refused, still key B */
    ck_assert_int_eq(status_with(p.tb), 200);
    ck_assert_int_eq(status_with(p.ta), 401);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_keys", NULL), 1);
    ck_assert_int_ge(metric(&p, "ghl_gateway_jwks_fetches_total", ",result=\"error\""), 2);

    /* a reload while the document is bad: the new configuration starts from key B */
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    glog = wait_for_text(E.gateway.log, "SIGHUP: reloaded", 10000);
    ck_assert_msg(strstr(glog, "SIGHUP: reloaded") != NULL, "%s", glog);
    ck_assert_msg(strstr(glog, "the last good keys stay in use") != NULL, "%s", glog);
    free(glog);
    usleep(200000); /* the workers adopt the new snapshot when woken */
    ck_assert_int_eq(status_with(p.tb), 200);
    ck_assert_int_eq(status_with(p.ta), 401);
    idp_free(&p);
}
END_TEST

/* The provider is down when the gateway starts: its tokens get unknown_key, and once it
 * answers they pass within the retry backoff, without a reload. The same for a jwks_url. */
static void provider_down_at_start_then_up(bool url)
{
    struct idp p;
    idp_make(&p);                      /* not served yet */
    start_gateway_with(&p, url, NULL); /* jwks_refresh_s 600: only the backoff fetches soon */
    ck_assert_int_eq(status_with(p.ta), 401);
    char want[200];
    snprintf(want, sizeof want, "JWKS of issuer %s: %scannot connect to 127.0.0.1", p.issuer,
             url ? "" : "discovery: ");
    char *glog = slurp(E.gateway.log);
    ck_assert_msg(strstr(glog, want) != NULL, "%s", glog);
    ck_assert_msg(strstr(glog, "no keys from it yet (its tokens get 401 unknown_key), trying "
                               "again in 1 s") != NULL,
                  "%s", glog);
    free(glog);
    sleep(2);
    ck_assert_int_eq(status_with(p.ta), 401);
    idp_serve(&p);
    /* the retries so far were 1, 2 (perhaps 4) s apart: the next one is at most 8 s away */
    int st = 0;
    for (int i = 0; i < 75 && st != 200; i++) {
        usleep(200000);
        st = status_with(p.ta);
    }
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_keys", NULL), 1);
    ck_assert_int_ge(metric(&p, "ghl_gateway_jwks_fetches_total", ",result=\"error\""), 2);
    ck_assert_int_eq(metric(&p, "ghl_gateway_jwks_fetches_total", ",result=\"ok\""), 1);
    glog = slurp(E.gateway.log);
    ck_assert_ptr_null(strstr(glog, "SIGHUP"));
    free(glog);
    idp_free(&p);
}

START_TEST(test_discovery_provider_down_at_start_then_up)
{
    provider_down_at_start_then_up(false);
}
END_TEST

START_TEST(test_jwks_url_provider_down_at_start_then_up)
{
    provider_down_at_start_then_up(true);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("discovery");
    TCase *t = tcase_create("discovery");
    tcase_add_checked_fixture(t, NULL, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_discovery_finds_the_jwks);
    tcase_add_test(t, test_discovery_rotation_first_request_passes);
    tcase_add_test(t, test_discovery_issuer_with_a_trailing_slash);
    tcase_add_test(t, test_discovery_document_of_another_issuer_refused);
    tcase_add_test(t, test_discovery_http_jwks_uri_refused);
    tcase_add_test(t, test_discovery_moved_jwks_uri_followed_and_bad_document_keeps_keys);
    tcase_add_test(t, test_discovery_provider_down_at_start_then_up);
    tcase_add_test(t, test_jwks_url_provider_down_at_start_then_up);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
