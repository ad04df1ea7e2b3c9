/* Unit: the GCRA buckets of ratelimit.c and the metrics shards of metrics.c. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "metrics.h"
#include "ratelimit.h"

#define S 1000000000ull /* one second in ns */

START_TEST(test_ratelimit_burst_then_refill)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    uint64_t t = 1000 * S;
    /* burst 3 per 30 s: three at once, remaining 2, 1, 0 */
    for (long i = 0; i < 3; i++) {
        gw_rl_subject(rl, "iss", "a", 3, 30, t, &v);
        ck_assert(v.allowed);
        ck_assert_int_eq(v.remaining, 2 - i);
        ck_assert_int_eq(v.max, 3);
        ck_assert_int_eq(v.interval_ms, 30000);
    }
    gw_rl_subject(rl, "iss", "a", 3, 30, t, &v);
    ck_assert(!v.allowed);
    ck_assert_int_eq(v.remaining, 0);
    ck_assert_int_eq(v.retry_after_s, 10); /* one token every 10 s */
    /* 9.5 s later: still refused, 1 s to go (rounded up) */
    gw_rl_subject(rl, "iss", "a", 3, 30, t + 9 * S + S / 2, &v);
    ck_assert(!v.allowed);
    ck_assert_int_eq(v.retry_after_s, 1);
    /* 10 s later: one more */
    gw_rl_subject(rl, "iss", "a", 3, 30, t + 10 * S, &v);
    ck_assert(v.allowed);
    ck_assert_int_eq(v.remaining, 0);
    /* a minute later the bucket is full again */
    gw_rl_subject(rl, "iss", "a", 3, 30, t + 70 * S, &v);
    ck_assert(v.allowed);
    ck_assert_int_eq(v.remaining, 2);
    gw_rl_free(rl);
}
END_TEST

START_TEST(test_ratelimit_subjects_are_separate_and_exact)
{
    struct gw_rl *rl = gw_rl_new();
    struct gw_rl_verdict v;
    gw_rl_subject(rl, "iss", "a", 1, 60, S, &v);
    ck_assert(v.allowed);
    gw_rl_subject(rl, "iss", "a", 1, 60, S, &v);
    ck_assert(!v.allowed);
    /* the same sub of another issuer, and a sub that shares a prefix, are other subjects */
    gw_rl_subject(rl, "iss2", "a", 1, 60, S, &v);
    ck_assert(v.allowed);
    gw_rl_subject(rl, "iss", "ab", 1, 60, S, &v);
    ck_assert(v.allowed);
    gw_rl_subject(rl, "is", "sa", 1, 60, S, &v);
    ck_assert(v.allowed);
    gw_rl_free(rl);
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
        gw_rl_subject(rl, "iss", sub, 5, 1, S + (uint64_t)i, &v);
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
    for (int i = 0; i < 4; i++) {
        gw_rl_upstream(rl, 4, 10, 6, S, wall, &v);
        ck_assert(v.allowed);
    }
    gw_rl_upstream(rl, 4, 10, 6, S, wall, &v);
    ck_assert(!v.allowed);
    ck_assert(!v.daily);
    ck_assert_int_eq(v.retry_after_s, 3); /* 2.5 s per token, rounded up */
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
    /* a new UTC day */
    gw_rl_upstream(rl, 4, 10, 6, 200 * S, wall + 86400, &v);
    ck_assert(v.allowed);
    gw_rl_free(rl);
}
END_TEST

struct racer {
    struct gw_rl *rl;
    int allowed;
};

static void *race(void *p)
{
    struct racer *r = p;
    struct gw_rl_verdict v;
    for (int i = 0; i < 1000; i++) {
        gw_rl_upstream(r->rl, 100, 3600, 1000000, S, 86400, &v);
        r->allowed += v.allowed;
        gw_rl_subject(r->rl, "iss", "shared", 50, 3600, S, &v);
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
        r[i] = (struct racer){rl, 0};
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

int main(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *t = tcase_create("ratelimit");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_ratelimit_burst_then_refill);
    tcase_add_test(t, test_ratelimit_subjects_are_separate_and_exact);
    tcase_add_test(t, test_ratelimit_many_subjects_evict_idle_buckets);
    tcase_add_test(t, test_ratelimit_upstream_and_daily);
    tcase_add_test(t, test_ratelimit_is_exact_under_contention);
    tcase_add_test(t, test_metrics_shards_sum_and_escape);
    tcase_add_test(t, test_metrics_tables_overflow_into_other);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
