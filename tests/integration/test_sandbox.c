/* Integration: ghl-sandbox's own contract where the other suites do not reach it (SPEC §13):
 * --rate-limit BURST/SECONDS, HighLevel's burst limit per token, asked straight (one TLS
 * connection to the sandbox, no gateway in between) and through the gateway; the 429 in the
 * journal with its status; the option's usage errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct env E;

static void teardown(void)
{
    env_stop(&E);
}

static long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A keep-alive TLS connection to port (the sandbox's or the gateway's). One connection, not
 * send_req's one per request with its wait for a close: the burst must be spent well within
 * the 400 ms one cell takes to come back. */
static void open_conn(struct tls_client *c, int port)
{
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    ck_assert_int_eq(tls_connect(c, port, 0, NULL, NULL, ca), 0);
}

/* GET path on c with that bearer token; the answer in r. */
static void get_on(struct tls_client *c, const char *token, const char *path, struct response *r)
{
    char raw[6144];
    int n = snprintf(raw, sizeof raw,
                     "GET %s HTTP/1.1\r\nHost: localhost\r\nVersion: 2021-07-28\r\n"
                     "Authorization: Bearer %s\r\nAccept: application/json\r\n\r\n",
                     path, token);
    ck_assert(n > 0 && (size_t)n < sizeof raw);
    ck_assert_int_eq(tls_send(c, raw, (size_t)n), 0);
    ck_assert_int_eq(tls_read_response(c, r, 10000, 0), 0);
}

/* A header of r as a number, or -1 when it is absent. */
static long header_num(const struct response *r, const char *name)
{
    const char *v = response_header(r, name);
    return v ? strtol(v, NULL, 10) : -1;
}

/* The journal's status for entry n: the number, 0 for null, -1 when the member is missing. */
static int journal_status(int n)
{
    cJSON *j = journal_entry(&E, n);
    ck_assert_ptr_nonnull(j);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "status");
    int st = cJSON_IsNumber(s) ? s->valueint : cJSON_IsNull(s) ? 0 : -1;
    cJSON_Delete(j);
    return st;
}

/* The 429 of --rate-limit 5/2: HighLevel's headers for a bucket of 5 over 2 s, none left,
 * a Retry-After of the wait for one cell (400 ms, so 1 s rounded up; 2 s at most), and a
 * body in the upstream's error shape. */
static void assert_limited(const struct response *r, bool retry_after)
{
    ck_assert_int_eq(r->status, 429);
    ck_assert_int_eq(header_num(r, "X-RateLimit-Max"), 5);
    ck_assert_int_eq(header_num(r, "X-RateLimit-Remaining"), 0);
    ck_assert_int_eq(header_num(r, "X-RateLimit-Interval-Milliseconds"), 2000);
    if (retry_after) {
        long ra = header_num(r, "Retry-After");
        ck_assert_msg(ra >= 1 && ra <= 2, "Retry-After %ld", ra);
    }
    cJSON *b = cJSON_Parse(r->body);
    ck_assert_msg(cJSON_IsObject(b), "429 body not JSON: %s", r->body);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(b, "statusCode");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(b, "message");
    ck_assert(cJSON_IsNumber(code) && code->valueint == 429);
    ck_assert(cJSON_IsString(msg) && msg->valuestring[0] != '\0');
    cJSON_Delete(b);
}

/* Five requests of one token pass with the bucket counting down, the sixth is refused, a
 * refused one spends nothing, the location token has a bucket of its own, an unknown token
 * has none (401, no burst headers), and after Retry-After the agency token passes again.
 * The six requests take a few milliseconds on one connection; a cell refills in 400 ms. */
START_TEST(test_rate_limit_per_token_burst_then_refill)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--rate-limit 5/2"});
    struct tls_client c;
    struct response r;
    open_conn(&c, E.sandbox.port);
    long t0 = ms_now();
    for (long i = 0; i < 5; i++) {
        get_on(&c, AGENCY_TOKEN, "/users/" SEED_USER, &r);
        ck_assert_msg(r.status == 200, "request %ld: %d %s", i + 1, r.status, r.body);
        ck_assert_int_eq(header_num(&r, "X-RateLimit-Max"), 5);
        ck_assert_int_eq(header_num(&r, "X-RateLimit-Interval-Milliseconds"), 2000);
        ck_assert_int_eq(header_num(&r, "X-RateLimit-Remaining"), 4 - i);
        ck_assert_ptr_null(response_header(&r, "Retry-After"));
        response_free(&r);
    }
    get_on(&c, AGENCY_TOKEN, "/users/" SEED_USER, &r);
    long burst_ms = ms_now() - t0;
    ck_assert_msg(r.status == 429, "sixth request: %d after %ld ms", r.status, burst_ms);
    assert_limited(&r, true);
    long retry_after = header_num(&r, "Retry-After");
    response_free(&r);
    /* the refusal spent nothing: still refused, not later than before */
    get_on(&c, AGENCY_TOKEN, "/users/" SEED_USER, &r);
    assert_limited(&r, true);
    ck_assert_int_le(header_num(&r, "Retry-After"), retry_after);
    response_free(&r);

    get_on(&c, LOC1_TOKEN, "/users/" SEED_USER, &r);
    ck_assert_msg(r.status == 200, "location token: %d %s", r.status, r.body);
    ck_assert_int_eq(header_num(&r, "X-RateLimit-Remaining"), 4);
    response_free(&r);
    get_on(&c, "not-a-sandbox-token", "/users/" SEED_USER, &r);
    ck_assert_int_eq(r.status, 401);
    ck_assert_ptr_null(response_header(&r, "X-RateLimit-Remaining"));
    ck_assert_ptr_null(response_header(&r, "Retry-After"));
    response_free(&r);
    tls_close(&c);

    /* every request is in the journal with its answer's status, the 429s included */
    static const int want[] = {200, 200, 200, 200, 200, 429, 429, 200, 401};
    ck_assert_int_eq(journal_count(&E), 9);
    for (int i = 0; i < 9; i++) {
        int st = journal_status(i);
        ck_assert_msg(st == want[i], "journal line %d: status %d, want %d", i + 1, st, want[i]);
    }

    sleep((unsigned)retry_after);
    open_conn(&c, E.sandbox.port);
    get_on(&c, AGENCY_TOKEN, "/users/" SEED_USER, &r);
    ck_assert_msg(r.status == 200, "after %ld s: %d %s", retry_after, r.status, r.body);
    ck_assert_int_eq(header_num(&r, "X-RateLimit-Max"), 5);
    ck_assert_int_ge(header_num(&r, "X-RateLimit-Remaining"), 0);
    response_free(&r);
    tls_close(&c);
    ck_assert_int_eq(journal_status(9), 200);
}
END_TEST

/* Through the gateway (its own limits far above the sandbox's): the upstream's 429 reaches the
 * caller with HighLevel's headers, and the journal shows the refused request. The gateway's
 * first request also opens its upstream connection, so the 429 is looked for among the first
 * ten rather than at the sixth exactly. */
START_TEST(test_rate_limit_seen_through_the_gateway)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--rate-limit 5/2"});
    struct tls_client c;
    struct response r;
    int limited_at = 0;
    open_conn(&c, E.gateway.port);
    for (int i = 1; i <= 10 && limited_at == 0; i++) {
        get_on(&c, E.token, "/users/" SEED_USER, &r);
        if (r.status == 429) {
            limited_at = i;
            assert_limited(
                &r, false); /* the gateway passes Retry-After on only for a non-JSON answer */
        } else {
            ck_assert_msg(r.status == 200, "request %d: %d %s", i, r.status, r.body);
            ck_assert_int_eq(header_num(&r, "X-RateLimit-Max"), 5);
        }
        response_free(&r);
    }
    tls_close(&c);
    ck_assert_msg(limited_at != 0, "ten requests, none refused");
    ck_assert_msg(limited_at > 5, "refused at request %d, before the burst of 5 was spent",
                  limited_at);
    ck_assert_int_eq(journal_count(&E), limited_at);
    ck_assert_int_eq(journal_status(limited_at - 1), 429);
}
END_TEST

/* Each bad value exits 2 and names the option and what it expects. */
START_TEST(test_rate_limit_usage_errors)
{
    static const struct {
        const char *arg, *says;
    } bad[] = {
        {"0/10", "BURST must be a whole number from 1 to 1000000"},
        {"5", "expected BURST/SECONDS"},
        {"5/x", "SECONDS must be a whole number from 1 to 86400"},
        {"5/0", "SECONDS must be a whole number from 1 to 86400"},
        {"1000001/1", "BURST must be a whole number from 1 to 1000000"},
        {"5/86401", "SECONDS must be a whole number from 1 to 86400"},
        {"-5/2", "BURST must be"},
        {"5/2s", "SECONDS must be"},
        {"", "expected BURST/SECONDS"},
    };
    char dir[] = "/tmp/ghl-sbx-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char token[64];
    snprintf(token, sizeof token, "%s/agency.token", dir);
    FILE *f = fopen(token, "w");
    ck_assert_ptr_nonnull(f);
    fputs(AGENCY_TOKEN "\n", f);
    fclose(f);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[1024], *out = NULL;
        snprintf(cmd, sizeof cmd,
                 "%s --listen 127.0.0.1:0 --agency-token-file %s --rate-limit '%s'",
                 bin_path("ghl-sandbox"), token, bad[i].arg);
        int rc = run_cmd(cmd, &out);
        char want[128];
        snprintf(want, sizeof want, "--rate-limit %s: %s", bad[i].arg, bad[i].says);
        ck_assert_msg(rc == 2 && strstr(out, want) != NULL,
                      "--rate-limit '%s': exit %d, output: %s", bad[i].arg, rc, out);
        free(out);
    }
    unlink(token);
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sandbox");
    TCase *t = tcase_create("rate_limit");
    tcase_add_checked_fixture(t, NULL, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_rate_limit_per_token_burst_then_refill);
    tcase_add_test(t, test_rate_limit_seen_through_the_gateway);
    suite_add_tcase(s, t);
    TCase *u = tcase_create("usage");
    tcase_add_test(u, test_rate_limit_usage_errors);
    suite_add_tcase(s, u);
    return run_suite(s);
}
