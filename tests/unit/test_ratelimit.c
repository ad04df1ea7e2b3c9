/* Unit: the GCRA buckets of ratelimit.c, keyed by subject ids (auth.c), and the metrics shards
 * of metrics.c and the daemon's rows (certificate expiry, the day's budget). */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "audit.h"
#include "auth.h"
#include "metrics.h"
#include "ratelimit.h"

#define S 1000000000ull /* one second in ns */

/* One request of iss + sub, keyed as the server keys it: by the principal's subject id. */
static void subject(struct gw_rl *rl, const char *iss, const char *sub, long burst,
                    long per_seconds, uint64_t now, struct gw_rl_verdict *v)
{
    unsigned char id[32];
    ck_assert_int_eq(gw_subject_id(iss, sub, id), 0);
    gw_rl_subject(rl, id, burst, per_seconds, now, v);
}

START_TEST(test_ratelimit_burst_then_refill)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    uint64_t t = 1000 * S;
    /* burst 3 per 30 s: three at once, remaining 2, 1, 0 */
    for (long i = 0; i < 3; i++) {
        subject(rl, "iss", "a", 3, 30, t, &v);
        ck_assert(v.allowed);
        ck_assert_int_eq(v.remaining, 2 - i);
        ck_assert_int_eq(v.max, 3);
        ck_assert_int_eq(v.interval_ms, 30000);
    }
    subject(rl, "iss", "a", 3, 30, t, &v);
    ck_assert(!v.allowed);
    ck_assert_int_eq(v.remaining, 0);
    ck_assert_int_eq(v.retry_after_s, 10); /* one token every 10 s */
    /* 9.5 s later: still refused, 1 s to go (rounded up) */
    subject(rl, "iss", "a", 3, 30, t + 9 * S + S / 2, &v);
    ck_assert(!v.allowed);
    ck_assert_int_eq(v.retry_after_s, 1);
    /* 10 s later: one more */
    subject(rl, "iss", "a", 3, 30, t + 10 * S, &v);
    ck_assert(v.allowed);
    ck_assert_int_eq(v.remaining, 0);
    /* a minute later the bucket is full again */
    subject(rl, "iss", "a", 3, 30, t + 70 * S, &v);
    ck_assert(v.allowed);
    ck_assert_int_eq(v.remaining, 2);
    gw_rl_free(rl);
}
END_TEST

START_TEST(test_ratelimit_subjects_are_separate_and_exact)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    subject(rl, "iss", "a", 1, 60, S, &v);
    ck_assert(v.allowed);
    subject(rl, "iss", "a", 1, 60, S, &v);
    ck_assert(!v.allowed);
    /* the same sub of another issuer, and a sub that shares a prefix, are other subjects */
    subject(rl, "iss2", "a", 1, 60, S, &v);
    ck_assert(v.allowed);
    subject(rl, "iss", "ab", 1, 60, S, &v);
    ck_assert(v.allowed);
    subject(rl, "is", "sa", 1, 60, S, &v);
    ck_assert(v.allowed);
    gw_rl_free(rl);
}
END_TEST

/* A subject of any length (SPEC §11): limited at its burst, and its bucket found again however
 * many requests it sends (a key cut at a buffer's size was never found again: such a subject
 * was never limited, and each of its requests took a bucket from another subject). */
START_TEST(test_ratelimit_long_subject_limited_at_its_burst_and_keeps_its_bucket)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    char iss[301], sub[701];
    memset(iss, 'i', sizeof iss - 1);
    iss[sizeof iss - 1] = '\0';
    memset(sub, 's', sizeof sub - 1);
    sub[sizeof sub - 1] = '\0';
    subject(rl, "iss", "short", 1, 60, S, &v); /* another subject, its bucket empty now */
    ck_assert(v.allowed);
    for (long i = 0; i < 3; i++) {
        subject(rl, iss, sub, 3, 60, S, &v);
        ck_assert(v.allowed);
        ck_assert_int_eq(v.remaining, 2 - i);
    }
    for (int i = 0; i < 3000; i++) {
        subject(rl, iss, sub, 3, 60, S, &v);
        ck_assert_msg(!v.allowed, "request %d past the burst allowed", i + 4);
        ck_assert_int_eq(v.retry_after_s, 20);
    }
    subject(rl, "iss", "short", 1, 60, S, &v); /* its bucket was not evicted meanwhile */
    ck_assert(!v.allowed);
    subject(rl, iss, sub, 3, 60, 21 * S, &v); /* one token 20 s later */
    ck_assert(v.allowed);
    gw_rl_free(rl);
}
END_TEST

/* Long subjects that share all but their last byte, and the same bytes split another way
 * between iss and sub, are other subjects: never one bucket. */
START_TEST(test_ratelimit_long_prefix_and_split_subjects_are_separate)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    char iss[301], a[701], b[701];
    memset(iss, 'i', sizeof iss - 1);
    iss[sizeof iss - 1] = '\0';
    memset(a, 's', sizeof a - 1);
    a[sizeof a - 1] = '\0';
    memcpy(b, a, sizeof b);
    b[sizeof b - 2] = 't';
    subject(rl, iss, a, 1, 60, S, &v);
    ck_assert(v.allowed);
    subject(rl, iss, a, 1, 60, S, &v);
    ck_assert(!v.allowed);
    subject(rl, iss, b, 1, 60, S, &v);
    ck_assert(v.allowed);
    /* "ab" + "c" and "a" + "bc": the same bytes, other subjects */
    subject(rl, "ab", "c", 1, 60, S, &v);
    ck_assert(v.allowed);
    subject(rl, "ab", "c", 1, 60, S, &v);
    ck_assert(!v.allowed);
    subject(rl, "a", "bc", 1, 60, S, &v);
    ck_assert(v.allowed);
    subject(rl, "abc", "", 1, 60, S, &v);
    ck_assert(v.allowed);
    /* the same long split made with the boundary moved by one byte */
    subject(rl, iss, a, 1, 60, S, &v);
    ck_assert(!v.allowed);
    iss[sizeof iss - 2] = '\0';
    char moved[702];
    snprintf(moved, sizeof moved, "i%s", a);
    subject(rl, iss, moved, 1, 60, S, &v);
    ck_assert(v.allowed);
    gw_rl_free(rl);
}
END_TEST

/* The id is a function of the pair alone (one subject, one bucket, in every worker and across
 * restarts) and differs for every pair tried. */
START_TEST(test_ratelimit_subject_ids_are_stable_and_distinct)
{
    static const char *const pairs[][2] = {
        {"ab", "c"},  {"a", "bc"},   {"abc", ""},   {"", "abc"},
        {"iss", "a"}, {"iss", "a "}, {"iss ", "a"}, {"is", "sa"},
    };
    enum { N = sizeof pairs / sizeof *pairs };
    unsigned char id[N][32], again[32];
    for (size_t i = 0; i < N; i++) {
        ck_assert_int_eq(gw_subject_id(pairs[i][0], pairs[i][1], id[i]), 0);
        ck_assert_int_eq(gw_subject_id(pairs[i][0], pairs[i][1], again), 0);
        ck_assert_mem_eq(id[i], again, 32);
        for (size_t k = 0; k < i; k++)
            ck_assert_msg(memcmp(id[i], id[k], 32) != 0, "%s+%s and %s+%s share an id", pairs[i][0],
                          pairs[i][1], pairs[k][0], pairs[k][1]);
    }
}
END_TEST

START_TEST(test_ratelimit_many_subjects_evict_idle_buckets)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    char sub[32];
    /* far more subjects than the table holds: the idle ones make room, none is refused */
    for (int i = 0; i < 200000; i++) {
        snprintf(sub, sizeof sub, "s%d", i);
        subject(rl, "iss", sub, 5, 1, S + (uint64_t)i, &v);
        ck_assert(v.allowed);
    }
    gw_rl_free(rl);
}
END_TEST

START_TEST(test_ratelimit_upstream_and_daily)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    int64_t wall = 86400 * 20000 + 3600; /* 01:00 UTC */
    ck_assert_int_eq(gw_rl_daily_used(rl, wall), 0);
    for (int i = 0; i < 4; i++) {
        gw_rl_upstream(rl, 4, 10, 6, S, wall, &v);
        ck_assert(v.allowed);
    }
    gw_rl_upstream(rl, 4, 10, 6, S, wall, &v);
    ck_assert(!v.allowed);
    ck_assert(!v.daily);
    ck_assert_int_eq(v.retry_after_s, 3); /* 2.5 s per token, rounded up */
    /* the refused call gave its unit back */
    ck_assert_int_eq(gw_rl_daily_used(rl, wall), 4);
    /* the refused call did not spend the daily budget: 2 more pass later, then the day's out */
    gw_rl_upstream(rl, 4, 10, 6, 100 * S, wall, &v);
    ck_assert(v.allowed);
    gw_rl_upstream(rl, 4, 10, 6, 100 * S, wall, &v);
    ck_assert(v.allowed);
    gw_rl_upstream(rl, 4, 10, 6, 100 * S, wall, &v);
    ck_assert(!v.allowed);
    ck_assert(v.daily);
    ck_assert_int_eq(v.max, 6);
    ck_assert_int_eq(v.retry_after_s, 86400 - 3600);
    ck_assert_int_eq(gw_rl_daily_used(rl, wall), 6);
    /* a new UTC day: nothing spent of it until a call */
    ck_assert_int_eq(gw_rl_daily_used(rl, wall + 86400), 0);
    gw_rl_upstream(rl, 4, 10, 6, 200 * S, wall + 86400, &v);
    ck_assert(v.allowed);
    ck_assert_int_eq(gw_rl_daily_used(rl, wall + 86400), 1);
    gw_rl_free(rl);
}
END_TEST

struct racer {
    struct gw_rl *rl;
    int allowed;
    unsigned char id[32];
};

static void *race(void *p)
{
    struct racer *r = p;
    struct gw_rl_verdict v;
    for (int i = 0; i < 1000; i++) {
        gw_rl_upstream(r->rl, 100, 3600, 1000000, S, 86400, &v);
        r->allowed += v.allowed;
        gw_rl_subject(r->rl, r->id, 50, 3600, S, &v);
        r->allowed += v.allowed ? 1000 : 0;
    }
    return NULL;
}

/* Four threads at the same instant: exactly the burst passes, for both kinds of bucket. */
START_TEST(test_ratelimit_is_exact_under_contention)
{
    struct gw_rl *rl = gw_rl_new();
    struct racer r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){rl, 0, {0}};
        ck_assert_int_eq(gw_subject_id("iss", "shared", r[i].id), 0);
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    int up = 0, sub = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        up += r[i].allowed % 1000;
        sub += r[i].allowed / 1000;
    }
    ck_assert_int_eq(up, 100);
    ck_assert_int_eq(sub, 50);
    gw_rl_free(rl);
}
END_TEST

static char *render(struct gw_metrics *const *shards, size_t n)
{
    static const char *const reasons[] = {"ok", "missing", "malformed"};
    struct evbuffer *b = evbuffer_new();
    gw_metrics_render(b, shards, n, reasons, 3);
    size_t len = evbuffer_get_length(b);
    char *t = malloc(len + 1);
    evbuffer_remove(b, t, len);
    t[len] = '\0';
    evbuffer_free(b);
    return t;
}

START_TEST(test_metrics_shards_sum_and_escape)
{
    struct gw_metrics *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    gw_m_request(a, "get-user", 200, 0.0007);
    gw_m_request(a, "get-user", 200, 0.003);
    gw_m_request(b, "get-user", 200, 45);
    gw_m_request(b, "get-user", 404, 0.1);
    gw_m_request(b, NULL, 404, 0.001);
    gw_m_denial(a, "odd \"name\"\\", "get-user");
    gw_m_denial(b, "odd \"name\"\\", "get-user");
    gw_m_inc(&a->auth_failures[2]);
    struct gw_metrics *shards[] = {a, b};
    char *t = render(shards, 2);
    ck_assert_ptr_nonnull(
        strstr(t, "ghl_gateway_requests_total{op=\"get-user\",status=\"200\"} 3\n"));
    ck_assert_ptr_nonnull(
        strstr(t, "ghl_gateway_requests_total{op=\"get-user\",status=\"404\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "ghl_gateway_requests_total{op=\"none\",status=\"404\"} 1\n"));
    /* cumulative buckets; 45 s lies past the last bucket (30 s) */
    ck_assert_ptr_nonnull(
        strstr(t, "ghl_gateway_request_duration_seconds_bucket{op=\"get-user\",le=\"0.001\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(t, "ghl_gateway_request_duration_seconds_bucket{op=\"get-user\",le=\"0.005\"} 2\n"));
    ck_assert_ptr_nonnull(
        strstr(t, "ghl_gateway_request_duration_seconds_bucket{op=\"get-user\",le=\"30\"} 3\n"));
    ck_assert_ptr_nonnull(
        strstr(t, "ghl_gateway_request_duration_seconds_bucket{op=\"get-user\",le=\"+Inf\"} 4\n"));
    ck_assert_ptr_nonnull(
        strstr(t, "ghl_gateway_request_duration_seconds_count{op=\"get-user\"} 4\n"));
    ck_assert_ptr_nonnull(strstr(t,
                                 "ghl_gateway_policy_denials_total{policy=\"odd \\\"name\\\"\\\\\","
                                 "op=\"get-user\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(t, "ghl_gateway_auth_failures_total{reason=\"malformed\"} 1\n"));
    free(t);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_metrics_tables_overflow_into_other)
{
    struct gw_metrics *a = calloc(1, sizeof *a);
    char op[32];
    for (int i = 0; i < GW_M_OPS + 5; i++) {
        snprintf(op, sizeof op, "op-%d", i);
        gw_m_request(a, op, 200, 0.01);
    }
    for (int s = 100; s < 100 + GW_M_STATUSES + 3; s++)
        gw_m_request(a, "op-0", s, 0.01);
    struct gw_metrics *shards[] = {a};
    char *t = render(shards, 1);
    ck_assert_ptr_nonnull(strstr(t, "op=\"other\",status=\"200\"} 6\n"));
    ck_assert_ptr_null(strstr(t, "op=\"op-20\""));
    /* every request is counted somewhere: the per-op counts add up */
    long long total = 0;
    const char *key = "ghl_gateway_request_duration_seconds_count{";
    for (const char *at = strstr(t, key); at; at = strstr(at + 1, key))
        total += strtoll(strchr(at, '}') + 2, NULL, 10);
    ck_assert_int_eq(total, GW_M_OPS + 5 + GW_M_STATUSES + 3);
    free(t);
    free(a);
}
END_TEST

static char *render_daemon(const struct gw_m_daemon *d)
{
    struct evbuffer *b = evbuffer_new();
    gw_metrics_render_daemon(b, d);
    size_t len = evbuffer_get_length(b);
    char *t = malloc(len + 1);
    evbuffer_remove(b, t, len);
    t[len] = '\0';
    evbuffer_free(b);
    return t;
}

START_TEST(test_metrics_cert_expiry_and_daily_budget_rows)
{
    struct gw_audit_stats st = {0};
    const struct gw_m_cert certs[] = {{"serving", 5184000}, {"upstream_ca", -30}};
    struct gw_m_daemon d = {.audit = &st,
                            .certs = certs,
                            .ncerts = 2,
                            .daily_here = true,
                            .daily_budget = 20000,
                            .daily_used = 1234};
    char *t = render_daemon(&d);
    ck_assert_ptr_nonnull(strstr(t, "# TYPE ghl_gateway_tls_cert_expiry_seconds gauge\n"));
    ck_assert_ptr_nonnull(strstr(t, "\nghl_gateway_tls_cert_expiry_seconds{cert=\"serving\"} "
                                    "5184000\n"));
    ck_assert_ptr_nonnull(strstr(t, "{cert=\"upstream_ca\"} -30\n")); /* expired: negative */
    ck_assert_ptr_nonnull(strstr(t, "\nghl_gateway_ratelimit_daily_budget 20000\n"));
    ck_assert_ptr_nonnull(strstr(t, "\nghl_gateway_ratelimit_daily_remaining 18766\n"));
    free(t);
    /* a reload that lowered the budget below what is spent: none left, not a negative count */
    d.daily_budget = 1000;
    t = render_daemon(&d);
    ck_assert_ptr_nonnull(strstr(t, "\nghl_gateway_ratelimit_daily_remaining 0\n"));
    free(t);
    /* the shared store keeps the day: the families are declared, with no sample */
    d.daily_here = false;
    d.ncerts = 0;
    t = render_daemon(&d);
    ck_assert_ptr_nonnull(strstr(t, "# TYPE ghl_gateway_ratelimit_daily_remaining gauge\n"));
    ck_assert_ptr_null(strstr(t, "\nghl_gateway_ratelimit_daily_remaining "));
    ck_assert_ptr_null(strstr(t, "\nghl_gateway_ratelimit_daily_budget "));
    ck_assert_ptr_null(strstr(t, "\nghl_gateway_tls_cert_expiry_seconds{"));
    free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *t = tcase_create("ratelimit");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_ratelimit_burst_then_refill);
    tcase_add_test(t, test_ratelimit_subjects_are_separate_and_exact);
    tcase_add_test(t, test_ratelimit_long_subject_limited_at_its_burst_and_keeps_its_bucket);
    tcase_add_test(t, test_ratelimit_long_prefix_and_split_subjects_are_separate);
    tcase_add_test(t, test_ratelimit_subject_ids_are_stable_and_distinct);
    tcase_add_test(t, test_ratelimit_many_subjects_evict_idle_buckets);
    tcase_add_test(t, test_ratelimit_upstream_and_daily);
    tcase_add_test(t, test_ratelimit_is_exact_under_contention);
    tcase_add_test(t, test_metrics_shards_sum_and_escape);
    tcase_add_test(t, test_metrics_tables_overflow_into_other);
    tcase_add_test(t, test_metrics_cert_expiry_and_daily_budget_rows);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
