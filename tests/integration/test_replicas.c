/* Integration: many replicas as one gateway (SPEC §11.2). Three ghl-gateway processes share one
 * real redis-server (Debian's, started here on a loopback port with a password, nothing saved)
 * and one ghl-sandbox. They show that a subject's burst is shared; that the replicas driven
 * well over HighLevel's burst never make the upstream answer 429 (the sandbox enforces it with
 * --rate-limit); that killing Redis switches to each on_failure mode (local: 1/replicas of the
 * limit, deny: 503, allow: through), counted and shown by ghl_gateway_ratelimit_fallback, and
 * that restarting it resumes sharing; and that `check` fails on a wrong password, naming the
 * config line.
 *
 * Under the valgrind label, the first replica runs under memcheck and the other two natively
 * (three gateways under memcheck would not fit two cores). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "harness.h"
#include "redis_harness.h"

#define NREPLICAS 3

static struct env R[NREPLICAS];
static struct redis_srv S;
static char password_file[400];

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* The options of every replica. */
struct setup {
    long subject_burst, subject_seconds;
    long upstream_burst, upstream_seconds;
    const char *on_failure;
    const char *sandbox_args;
};

/* Redis with a password, then the replicas: the first with the sandbox, the others pointed at
 * it. Each replica has its own folder, config, audit file and ports. */
static void start_all(const struct setup *st)
{
    char why[600];
    ck_assert_msg(redis_start(&S, &(struct redis_opts){.password = "s3cret-redis-pw"}, why,
                              sizeof why) == 0,
                  "%s", why);
    snprintf(password_file, sizeof password_file, "/tmp/gw-redis-pw.XXXXXX");
    int fd = mkstemp(password_file);
    ck_assert_int_ge(fd, 0);
    close(fd);
    write_text(password_file, "s3cret-redis-pw\n");
    char rl[1200];
    snprintf(rl, sizeof rl,
             "{ \"per_subject\": { \"burst\": %ld, \"per_seconds\": %ld },\n"
             "    \"upstream\": { \"burst\": %ld, \"per_seconds\": %ld, \"daily\": 1000000 },\n"
             "    \"replicas\": %d,\n"
             "    \"redis\": { \"url\": \"redis://127.0.0.1:%d/2\",\n"
             "               \"password_file\": \"%s\",\n"
             "               \"timeout_ms\": %d, \"on_failure\": \"%s\" } }",
             st->subject_burst, st->subject_seconds, st->upstream_burst, st->upstream_seconds,
             NREPLICAS, S.port, password_file, under_valgrind() ? 2000 : 500,
             st->on_failure ? st->on_failure : "local");
    for (int i = 0; i < NREPLICAS; i++)
        env_start(&R[i], &(struct env_opts){.rate_limit_json = rl,
                                            .sandbox_args = st->sandbox_args,
                                            .no_sandbox = i > 0,
                                            .upstream_port = i > 0 ? R[0].sandbox.port : 0,
                                            .native = i > 0,
                                            .workers = 2});
}

static void teardown(void)
{
    for (int i = NREPLICAS - 1; i >= 0; i--)
        env_stop(&R[i]);
    redis_stop(&S);
    if (password_file[0])
        unlink(password_file);
}

/* The value of the sample "name{labels}" (as written) in a replica's /metrics, or -1. */
static long long sample(int replica, const char *series)
{
    char *m = NULL;
    ck_assert_int_eq(admin_get(&R[replica], "/metrics", &m), 200);
    long long v = metrics_sample(m, series);
    free(m);
    return v;
}

/* Upstream answers with status 429 a replica has seen, summed over its ops. */
static long long upstream_429s(int replica)
{
    char *m = NULL;
    ck_assert_int_eq(admin_get(&R[replica], "/metrics", &m), 200);
    long long total = 0;
    char *save = NULL;
    for (char *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        if (strncmp(line, "ghl_gateway_upstream_requests_total{", 36) == 0 &&
            strstr(line, "status=\"429\""))
            total += strtoll(strrchr(line, ' ') + 1, NULL, 10);
    free(m);
    return total;
}

/* Waits (up to ms) until every replica shows ghl_gateway_ratelimit_fallback == want. */
static bool wait_fallback(long long want, int ms)
{
    long end = now_ms() + ms;
    do {
        bool all = true;
        for (int i = 0; i < NREPLICAS; i++)
            all &= sample(i, "ghl_gateway_ratelimit_fallback") == want;
        if (all)
            return true;
        sleep_ms(100);
    } while (now_ms() < end);
    return false;
}

static int get(int replica, const char *token)
{
    char auth[4200] = "";
    if (token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    struct response r;
    ck_assert_int_eq(
        send_req(&R[replica], "GET", "/users/" SEED_USER, token ? auth : NULL, NULL, &r), 0);
    int status = r.status;
    if (status == 429) {
        const char *max = response_header(&r, "X-RateLimit-Max");
        ck_assert_ptr_nonnull(max);
        ck_assert_ptr_nonnull(response_header(&r, "Retry-After"));
    }
    response_free(&r);
    return status;
}

/* A subject's burst is one burst across the replicas: 6 per minute, two through each replica,
 * and the seventh is refused wherever it comes in. Each replica alone would have let 6 pass. */
START_TEST(test_subject_burst_is_shared)
{
    start_all(&(struct setup){.subject_burst = 6, .subject_seconds = 60,
                              .upstream_burst = 1000, .upstream_seconds = 1});
    ck_assert(wait_fallback(0, 10000));
    for (int k = 0; k < 6; k++)
        ck_assert_int_eq(get(k % NREPLICAS, NULL), 200);
    for (int i = 0; i < NREPLICAS; i++)
        ck_assert_int_eq(get(i, NULL), 429);
    ck_assert_int_eq(journal_count(&R[0]), 6);
    long long ok = 0;
    for (int i = 0; i < NREPLICAS; i++) {
        long long n = sample(i, "ghl_gateway_ratelimit_store_requests_total{result=\"ok\"}");
        ck_assert_int_ge(n, 3);
        ok += n;
        ck_assert_int_eq(sample(i, "ghl_gateway_ratelimit_store_requests_total{result=\"error\"}"),
                         0);
        ck_assert_int_ge(sample(i, "ghl_gateway_ratelimit_store_duration_seconds_count"), 3);
    }
    ck_assert_int_eq(ok, 9); /* each request counted once */
    /* the 429 names the shared limit, not a replica's share */
    struct response r;
    ck_assert_int_eq(send_req(&R[1], "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 429);
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Max"), "6");
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Remaining"), "0");
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Interval-Milliseconds"), "60000");
    response_free(&r);
}
END_TEST

/* A GET of the seed user with token, ready to send; its length. */
static int raw_get(char *raw, size_t cap, const char *token)
{
    int n = snprintf(raw, cap,
                     "GET /users/" SEED_USER " HTTP/1.1\r\nHost: localhost\r\n"
                     "Version: 2021-07-28\r\nAuthorization: Bearer %s\r\n\r\n",
                     token);
    ck_assert(n > 0 && (size_t)n < cap);
    return n;
}

/* One GET on a kept-alive connection to a replica (connected on first use): no wait for a
 * close between requests, so the replicas can be driven faster than the limits refill. */
static int keepalive_get(struct tls_client *c, int replica, const char *token)
{
    if (c->ssl == NULL) {
        char ca[600];
        snprintf(ca, sizeof ca, "%s/ca.crt", R[replica].certs);
        ck_assert_int_eq(tls_connect(c, R[replica].gateway.port, 0, NULL, NULL, ca), 0);
    }
    char raw[4600];
    int n = raw_get(raw, sizeof raw, token);
    ck_assert_int_eq(tls_send(c, raw, (size_t)n), 0);
    struct response r;
    ck_assert_int_eq(tls_read_response(c, &r, 30000, 0), 0);
    int status = r.status;
    response_free(&r);
    return status;
}

/* HighLevel's burst (the sandbox keeps 20 per 60 s per token, as --rate-limit) is never
 * exceeded by the three replicas together, although each is driven past it by a caller of its
 * own: the gateway refuses (429, nothing sent) instead of the upstream. */
START_TEST(test_upstream_never_answers_429)
{
    start_all(&(struct setup){.subject_burst = 1000, .subject_seconds = 1,
                              .upstream_burst = 20, .upstream_seconds = 60,
                              .sandbox_args = "--rate-limit 20/60"});
    ck_assert(wait_fallback(0, 10000));
    char tokens[NREPLICAS][4096];
    struct tls_client clients[NREPLICAS];
    memset(clients, 0, sizeof clients);
    for (int i = 0; i < NREPLICAS; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "svc-caller-%d", i);
        ck_assert_int_eq(mint("RS256", ISSUER_RS, sub, "users.readonly users.write", NULL,
                              tokens[i], sizeof tokens[i]),
                         0);
    }
    int passed = 0, limited = 0, sent = 0;
    long t0 = now_ms();
    for (int k = 0; k < 25; k++)
        for (int i = 0; i < NREPLICAS; i++) {
            if (i == 0 && under_valgrind() && k % 5 != 0)
                continue; /* the replica under memcheck is slow: the others drive the load */
            int st = keepalive_get(&clients[i], i, tokens[i]);
            ck_assert_msg(st == 200 || st == 429, "status %d", st);
            passed += st == 200;
            limited += st == 429;
            sent++;
        }
    double secs = (double)(now_ms() - t0) / 1000.0;
    for (int i = 0; i < NREPLICAS; i++)
        tls_close(&clients[i]);
    long long up429 = 0;
    for (int i = 0; i < NREPLICAS; i++)
        up429 += upstream_429s(i);
    ck_assert_msg(up429 == 0, "the upstream answered 429 %lld times", up429);
    /* at most the burst and what refilled meanwhile (one every 3 s) went through */
    ck_assert_msg(passed <= 20 + (int)(secs / 3.0) + 1, "%d of %d passed in %.1f s", passed, sent,
                  secs);
    ck_assert_msg(passed >= 20, "%d of %d passed in %.1f s", passed, sent, secs);
    ck_assert_int_eq(limited, sent - passed);
    ck_assert_int_gt(limited, 0);
    ck_assert_int_eq(journal_count(&R[0]), passed);
}
END_TEST

/* Redis killed: each replica keeps 1/3 of the subject's burst in its own process (on_failure
 * "local"), logs the switch once, and shows it; Redis back: the replicas share again. */
START_TEST(test_store_lost_local_share_then_resumed)
{
    start_all(&(struct setup){.subject_burst = 30, .subject_seconds = 600,
                              .upstream_burst = 1000, .upstream_seconds = 1});
    ck_assert(wait_fallback(0, 10000));
    ck_assert_int_eq(get(2, NULL), 200); /* shared: one cell of 30 */
    ck_assert_int_eq(redis_kill(&S), 0);
    ck_assert(wait_fallback(1, 10000));
    /* replica 0 alone: 10 (30 / 3 replicas), then refused */
    for (int k = 0; k < 10; k++) {
        int st = get(0, NULL);
        ck_assert_msg(st == 200, "request %d after the kill: %d; store timeouts before it: %lld",
                      k + 1, st,
                      sample(0, "ghl_gateway_ratelimit_store_requests_total{result=\"timeout\"}"));
    }
    ck_assert_int_eq(get(0, NULL), 429);
    ck_assert_int_eq(get(1, NULL), 200); /* another replica has its own share */
    char *log = slurp(R[0].gateway.log);
    const char *first = strstr(log, "unusable");
    ck_assert_msg(first != NULL, "%s", log);
    ck_assert_ptr_null(strstr(first + 1, "unusable")); /* once, not per worker or retry */
    free(log);

    char why[600];
    ck_assert_msg(redis_restart(&S, why, sizeof why) == 0, "%s", why);
    ck_assert(wait_fallback(0, 15000)); /* backoff at most 5 s */
    log = wait_for_text(R[0].gateway.log, "limits are shared", 1000);
    ck_assert_msg(strstr(log, "limits are shared") != NULL, "%s", log);
    free(log);
    /* the restarted store is empty: 30 shared again, through any replica */
    int ok = 0;
    for (int k = 0; k < 31; k++)
        ok += get(k % NREPLICAS, NULL) == 200;
    ck_assert_int_eq(ok, 30);
}
END_TEST

/* on_failure "deny": while Redis is down a request is 503 and nothing goes upstream. */
START_TEST(test_store_lost_deny)
{
    start_all(&(struct setup){.subject_burst = 30, .subject_seconds = 60,
                              .upstream_burst = 1000, .upstream_seconds = 1,
                              .on_failure = "deny"});
    ck_assert(wait_fallback(0, 10000));
    ck_assert_int_eq(get(2, NULL), 200);
    ck_assert_int_eq(redis_kill(&S), 0);
    ck_assert(wait_fallback(1, 10000));
    struct response r;
    ck_assert_int_eq(send_req(&R[2], "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 503);
    ck_assert_ptr_nonnull(strstr(r.body, "rate-limit store unavailable"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&R[0]), 1);
    char why[600];
    ck_assert_msg(redis_restart(&S, why, sizeof why) == 0, "%s", why);
    ck_assert(wait_fallback(0, 15000));
    ck_assert_int_eq(get(2, NULL), 200);
}
END_TEST

/* on_failure "allow": while Redis is down requests pass with no limit at all. */
START_TEST(test_store_lost_allow)
{
    start_all(&(struct setup){.subject_burst = 3, .subject_seconds = 600,
                              .upstream_burst = 3, .upstream_seconds = 600,
                              .on_failure = "allow"});
    ck_assert(wait_fallback(0, 10000));
    ck_assert_int_eq(redis_kill(&S), 0);
    ck_assert(wait_fallback(1, 10000));
    for (int k = 0; k < 6; k++)
        ck_assert_int_eq(get(0, NULL), 200);
    ck_assert_int_eq(journal_count(&R[0]), 6);
}
END_TEST

/* check connects, authenticates and loads the script: a wrong password is a problem at the
 * line of rate_limit.redis; the right one passes and says where the limits are kept. */
START_TEST(test_check_needs_the_right_password)
{
    start_all(&(struct setup){.subject_burst = 30, .subject_seconds = 60,
                              .upstream_burst = 1000, .upstream_seconds = 1});
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s check -c %s 2>&1", bin_path("ghl-gateway"), R[1].config);
    ck_assert_msg(run_cmd(cmd, &out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "rate limits shared on redis://127.0.0.1:") != NULL, "%s", out);
    free(out);
    write_text(password_file, "not-the-password\n");
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    char *cfg = slurp(R[1].config), want[700];
    int line = 1;
    for (const char *c = cfg; *c && c < strstr(cfg, "\"redis\":"); c++)
        line += *c == '\n';
    free(cfg);
    snprintf(want, sizeof want, "%s:%d: rate_limit.redis: ", R[1].config, line);
    ck_assert_msg(strstr(out, want) != NULL, "no \"%s\" in: %s", want, out);
    ck_assert_msg(strstr(out, "AUTH refused") != NULL, "%s", out);
    ck_assert_ptr_null(strstr(out, "not-the-password")); /* a secret is never echoed */
    free(out);
    /* no server at all */
    redis_stop(&S);
    write_text(password_file, "s3cret-redis-pw\n");
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "rate_limit.redis: cannot connect") != NULL, "%s", out);
    free(out);
}
END_TEST

/* Requests that arrive together are checked together: twenty sent at once to one replica (one
 * worker) go to Redis in fewer calls than requests (one EVALSHA per loop pass), and exactly the
 * subject's burst of 10 passes among them. */
START_TEST(test_requests_of_one_pass_share_one_call)
{
    start_all(&(struct setup){.subject_burst = 10, .subject_seconds = 600,
                              .upstream_burst = 1000, .upstream_seconds = 1});
    ck_assert(wait_fallback(0, 10000));
    enum { N = 20 };
    struct tls_client c[N];
    memset(c, 0, sizeof c);
    char ca[600], raw[4600];
    snprintf(ca, sizeof ca, "%s/ca.crt", R[1].certs);
    int n = raw_get(raw, sizeof raw, R[1].token);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tls_connect(&c[i], R[1].gateway.port, 0, NULL, NULL, ca), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tls_send(&c[i], raw, (size_t)n), 0);
    int ok = 0, limited = 0;
    for (int i = 0; i < N; i++) {
        struct response r;
        ck_assert_int_eq(tls_read_response(&c[i], &r, 30000, 0), 0);
        ok += r.status == 200;
        limited += r.status == 429;
        response_free(&r);
        tls_close(&c[i]);
    }
    ck_assert_int_eq(ok, 10);
    ck_assert_int_eq(limited, 10);
    ck_assert_int_eq(sample(1, "ghl_gateway_ratelimit_store_requests_total{result=\"ok\"}"), N);
    char why[300];
    struct redisContext *rc = redis_connect(&S, false, why, sizeof why);
    ck_assert_msg(rc != NULL, "%s", why);
    redisReply *info = redisCommand(rc, "INFO commandstats");
    ck_assert_ptr_nonnull(info);
    const char *at = strstr(info->str, "cmdstat_evalsha:calls=");
    ck_assert_ptr_nonnull(at);
    long calls = strtol(at + strlen("cmdstat_evalsha:calls="), NULL, 10);
    freeReplyObject(info);
    redisFree(rc);
    ck_assert_msg(calls < N, "%ld EVALSHA calls for %d requests", calls, N);
    ck_assert_int_ge(calls, 1);
}
END_TEST

/* A store that turns read-only under the gateway (a failover left its address on a replica)
 * answers READONLY: the replica drops that connection and says why, the request goes as
 * on_failure says (local: through, within the share), and once the server takes writes again
 * the limits are shared again. */
START_TEST(test_store_turned_read_only_is_dropped)
{
    start_all(&(struct setup){.subject_burst = 30, .subject_seconds = 600,
                              .upstream_burst = 1000, .upstream_seconds = 1});
    ck_assert(wait_fallback(0, 10000));
    char why[300];
    struct redisContext *rc = redis_connect(&S, false, why, sizeof why);
    ck_assert_msg(rc != NULL, "%s", why);
    freeReplyObject(redisCommand(rc, "REPLICAOF 127.0.0.1 1"));
    ck_assert_int_eq(get(2, NULL), 200); /* the store failed: this replica's share */
    ck_assert_int_ge(sample(2, "ghl_gateway_ratelimit_store_requests_total{result=\"error\"}"),
                     1);
    char *log = wait_for_text(R[2].gateway.log, "READONLY", 5000);
    ck_assert_msg(strstr(log, "unusable (the script failed: READONLY") != NULL, "%s", log);
    free(log);
    freeReplyObject(redisCommand(rc, "REPLICAOF NO ONE"));
    redisFree(rc);
    ck_assert(wait_fallback(0, 15000));
    long long ok = sample(2, "ghl_gateway_ratelimit_store_requests_total{result=\"ok\"}");
    ck_assert_int_eq(get(2, NULL), 200);
    ck_assert_int_eq(sample(2, "ghl_gateway_ratelimit_store_requests_total{result=\"ok\"}"),
                     ok + 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("replicas");
    TCase *t = tcase_create("replicas");
    tcase_set_timeout(t, 120);
    tcase_add_checked_fixture(t, NULL, teardown);
    tcase_add_test(t, test_subject_burst_is_shared);
    tcase_add_test(t, test_upstream_never_answers_429);
    tcase_add_test(t, test_store_lost_local_share_then_resumed);
    tcase_add_test(t, test_store_lost_deny);
    tcase_add_test(t, test_store_lost_allow);
    tcase_add_test(t, test_check_needs_the_right_password);
    tcase_add_test(t, test_requests_of_one_pass_share_one_call);
    tcase_add_test(t, test_store_turned_read_only_is_dropped);
    suite_add_tcase(s, t);
    return run_suite(s);
}
