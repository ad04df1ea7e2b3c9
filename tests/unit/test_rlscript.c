/* Unit: the Redis script of rlscript.c (SPEC §11.2), run by a real redis-server (tests/redis).
 *
 * The expected numbers come from the GCRA arithmetic of ratelimit.c, not from the script: a
 * bucket of `burst` per `per` seconds has emission interval T = per / burst and tolerance
 * tau = T * (burst - 1); a request passes when tat - now <= tau - (n - 1) * T, and a refused one
 * waits ceil((tat - now - tau + (n - 1) * T) / 1 s). Time is moved with ARGV[7]; the real time
 * that passes between calls (well under 0.1 s) is kept below every margin the numbers allow.
 *
 * One redis-server per test case, started by the runner (an unchecked fixture) and emptied at
 * the start of each test; the tests that stop or kill their store start one of their own.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "redis_harness.h"
#include "rlscript.h"

#define SEC 1000000LL        /* microseconds */
#define DAY_S 86400LL        /* seconds */
#define DAY (DAY_S * SEC)    /* microseconds */
#define KEY_S "gwtest:s:" ID /* the keys as rlscript.h names them, behind a prefix */
#define KEY_U "gwtest:u"
#define KEY_D "gwtest:d"
#define ID "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define KEY_S2 "gwtest:s:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

static struct redis_srv srv; /* the test case's server (the runner's child) */

/* The limits of one call: ARGV[1..5]. */
struct limits {
    long sb, sp;        /* per_subject burst, per_seconds */
    long ub, up, daily; /* upstream burst, per_seconds, daily */
};

/* The script's reply. */
struct verdict {
    long long allowed, scope, retry, max, remaining, interval_ms;
};

/* The store tests start their own servers in a folder the runner owns (through TMPDIR, which
 * redis_start follows): a test that fails on an assertion dies before redis_stop, and its
 * server's folder goes with this one. */
static char store_tmp[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : -1;
}

static void store_tmp_make(void)
{
    snprintf(store_tmp, sizeof store_tmp, "/tmp/gw-rlstore-XXXXXX");
    ck_assert_msg(mkdtemp(store_tmp) != NULL, "mkdtemp: %s", strerror(errno));
    ck_assert_int_eq(setenv("TMPDIR", store_tmp, 1), 0);
}

static void store_tmp_remove(void)
{
    unsetenv("TMPDIR");
    nftw(store_tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void start_srv(void)
{
    char why[1024];
    ck_assert_msg(redis_start(&srv, NULL, why, sizeof why) == 0, "redis_start: %s", why);
}

static void stop_srv(void)
{
    redis_stop(&srv);
}

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL, "%s: %s", fmt, c->errstr);
    return r;
}

/* Runs a command that answers an integer. */
static long long cmd_int(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL, "%s: %s", fmt, c->errstr);
    ck_assert_msg(r->type == REDIS_REPLY_INTEGER, "%s: type %d %s", fmt, r->type,
                  r->type == REDIS_REPLY_ERROR ? r->str : "");
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* A string reply parsed as a whole decimal integer (GET of a bucket, HGET of the budget). */
static long long cmd_num(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL && r->type == REDIS_REPLY_STRING, "%s: not a string", fmt);
    char *end;
    long long v = strtoll(r->str, &end, 10);
    ck_assert_msg(end != r->str && *end == '\0', "%s: \"%s\" is not an integer", fmt, r->str);
    freeReplyObject(r);
    return v;
}

/* Redis's clock, the script's clock before the offset. */
static long long redis_time_us(redisContext *c)
{
    redisReply *r = cmd(c, "TIME");
    ck_assert(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
    long long us =
        strtoll(r->element[0]->str, NULL, 10) * SEC + strtoll(r->element[1]->str, NULL, 10);
    freeReplyObject(r);
    return us;
}

/* Loads the script; its SHA1 into sha. */
static void load(redisContext *c, char sha[41])
{
    redisReply *r = cmd(c, "SCRIPT LOAD %s", gw_rl_script);
    ck_assert_msg(r->type == REDIS_REPLY_STRING && r->len == 40, "SCRIPT LOAD: %s",
                  r->type == REDIS_REPLY_ERROR ? r->str : "?");
    memcpy(sha, r->str, 41);
    freeReplyObject(r);
}

/* A connection to srv over an empty database, with the script loaded. */
static redisContext *fresh(char sha[41])
{
    char why[512];
    redisContext *c = redis_connect(&srv, false, why, sizeof why);
    ck_assert_msg(c != NULL, "%s", why);
    redisReply *r = cmd(c, "FLUSHALL");
    freeReplyObject(r);
    load(c, sha);
    return c;
}

/* EVALSHA with the KEYS and ARGV of rlscript.h; NULL reply (a dead store) returned as -1. */
static int evalsha(redisContext *c, const char *sha, const char *skey, const struct limits *l,
                   long cost, long long offset_us, struct verdict *v, char *err, size_t errlen)
{
    char a[7][24];
    snprintf(a[0], sizeof a[0], "%ld", l->sb);
    snprintf(a[1], sizeof a[1], "%ld", l->sp);
    snprintf(a[2], sizeof a[2], "%ld", l->ub);
    snprintf(a[3], sizeof a[3], "%ld", l->up);
    snprintf(a[4], sizeof a[4], "%ld", l->daily);
    snprintf(a[5], sizeof a[5], "%ld", cost);
    snprintf(a[6], sizeof a[6], "%lld", offset_us);
    const char *argv[] = {"EVALSHA", sha,  "3",  skey, KEY_U, KEY_D, a[0],
                          a[1],      a[2], a[3], a[4], a[5],  a[6]};
    redisReply *r = redisCommandArgv(c, 13, argv, NULL);
    if (r == NULL) {
        snprintf(err, errlen, "%s", c->errstr);
        return -1;
    }
    int rc = -1;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s", r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 6) {
        snprintf(err, errlen, "reply of type %d, %zu elements", r->type, r->elements);
    } else {
        long long *out[] = {&v->allowed, &v->scope,     &v->retry,
                            &v->max,     &v->remaining, &v->interval_ms};
        rc = 0;
        for (size_t i = 0; i < 6; i++) {
            if (r->element[i]->type != REDIS_REPLY_INTEGER) {
                snprintf(err, errlen, "element %zu of type %d", i, r->element[i]->type);
                rc = -1;
                break;
            }
            *out[i] = r->element[i]->integer;
        }
    }
    freeReplyObject(r);
    return rc;
}

/* One call that must get an answer. */
static struct verdict call_key(redisContext *c, const char *sha, const char *skey,
                               const struct limits *l, long cost, long long offset_us)
{
    struct verdict v;
    char err[256];
    ck_assert_msg(evalsha(c, sha, skey, l, cost, offset_us, &v, err, sizeof err) == 0,
                  "EVALSHA: %s", err);
    return v;
}

static struct verdict call(redisContext *c, const char *sha, const struct limits *l, long cost,
                           long long offset_us)
{
    return call_key(c, sha, KEY_S, l, cost, offset_us);
}

static void expect(struct verdict v, long long allowed, long long scope, long long retry,
                   long long max, long long remaining, long long interval_ms)
{
    ck_assert_msg(v.allowed == allowed && v.scope == scope && v.retry == retry && v.max == max &&
                      v.remaining == remaining && v.interval_ms == interval_ms,
                  "got {%lld, %lld, %lld, %lld, %lld, %lld}, want {%lld, %lld, %lld, %lld, "
                  "%lld, %lld}",
                  v.allowed, v.scope, v.retry, v.max, v.remaining, v.interval_ms, allowed, scope,
                  retry, max, remaining, interval_ms);
}

/* Burst 5 per 10 s: T = 2 s, tau = 8 s. Five at one instant leave 4, 3, 2, 1, 0; the sixth
 * finds tat - now = 10 s, 2 s past tau. */
START_TEST(test_rlscript_burst_of_five_then_subject_refuses_for_one_interval)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {5, 10, 1000, 10, 1000000};
    for (long long i = 0; i < 5; i++)
        expect(call(c, sha, &l, 1, 0), 1, 0, 0, 5, 4 - i, 10000);
    expect(call(c, sha, &l, 1, 0), 0, GW_RLS_SUBJECT, 2, 5, 0, 10000);
    expect(call(c, sha, &l, 1, 0), 0, GW_RLS_SUBJECT, 2, 5, 0, 10000);
    redisFree(c);
}
END_TEST

/* After the burst, 1 s on the bucket still lacks 1 s; one interval (2 s) on, exactly one more
 * passes and leaves nothing, and the next waits a whole interval again. */
START_TEST(test_rlscript_one_emission_interval_lets_exactly_one_more_through)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {5, 10, 1000, 10, 1000000};
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(call(c, sha, &l, 1, 0).allowed, 1);
    expect(call(c, sha, &l, 1, 1 * SEC), 0, GW_RLS_SUBJECT, 1, 5, 0, 10000);
    expect(call(c, sha, &l, 1, 2 * SEC), 1, 0, 0, 5, 0, 10000);
    expect(call(c, sha, &l, 1, 2 * SEC), 0, GW_RLS_SUBJECT, 2, 5, 0, 10000);
    /* four intervals later: four cells back, the fifth call of that instant is refused */
    for (long long i = 0; i < 4; i++)
        expect(call(c, sha, &l, 1, 10 * SEC), 1, 0, 0, 5, 3 - i, 10000);
    ck_assert_int_eq(call(c, sha, &l, 1, 10 * SEC).allowed, 0);
    redisFree(c);
}
END_TEST

/* Retry-After is whole seconds rounded up: T = 1.5 s says 2; T = 1.25 s says 2 too (rounding
 * to the nearest second would say 1), and 0.25 s left says 1, never 0. */
START_TEST(test_rlscript_retry_after_rounds_up_to_whole_seconds)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits a = {2, 3, 1000, 10, 1000000}; /* T = 1.5 s */
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(call_key(c, sha, KEY_S, &a, 1, 0).allowed, 1);
    expect(call_key(c, sha, KEY_S, &a, 1, 0), 0, GW_RLS_SUBJECT, 2, 2, 0, 3000);
    expect(call_key(c, sha, KEY_S, &a, 1, SEC), 0, GW_RLS_SUBJECT, 1, 2, 0, 3000);

    const struct limits b = {4, 5, 1000, 10, 1000000}; /* T = 1.25 s */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(call_key(c, sha, KEY_S2, &b, 1, 0).allowed, 1);
    expect(call_key(c, sha, KEY_S2, &b, 1, 0), 0, GW_RLS_SUBJECT, 2, 4, 0, 5000);
    expect(call_key(c, sha, KEY_S2, &b, 1, SEC), 0, GW_RLS_SUBJECT, 1, 4, 0, 5000);
    expect(call_key(c, sha, KEY_S2, &b, 1, SEC + SEC / 4), 1, 0, 0, 4, 0, 5000);
    redisFree(c);
}
END_TEST

/* The upstream bucket (1 per 1 s) refuses the second call: the subject's cell and the daily
 * unit the subject and budget checks allowed are not spent. A second on, the subject's
 * remaining goes on from 4 to 3 (2 had the refused call spent a cell). */
START_TEST(test_rlscript_upstream_refusal_spends_no_subject_cell_nor_daily_unit)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {5, 1000, 1, 1, 1000000}; /* subject T = 200 s */
    expect(call(c, sha, &l, 1, 0), 1, 0, 0, 5, 4, 1000000);
    long long tat = cmd_num(c, "GET " KEY_S);
    expect(call(c, sha, &l, 1, 0), 0, GW_RLS_UPSTREAM, 1, 1, 0, 1000);
    ck_assert_int_eq(cmd_num(c, "GET " KEY_S), tat);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 1);
    expect(call(c, sha, &l, 1, SEC), 1, 0, 0, 5, 3, 1000000);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 2);
    redisFree(c);
}
END_TEST

/* The subject refuses first: the upstream bucket and the daily budget are untouched. */
START_TEST(test_rlscript_subject_refusal_spends_no_upstream_cell_nor_daily_unit)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {1, 1000, 10, 100, 1000000};
    ck_assert_int_eq(call(c, sha, &l, 1, 0).allowed, 1);
    long long tat = cmd_num(c, "GET " KEY_U);
    expect(call(c, sha, &l, 1, 0), 0, GW_RLS_SUBJECT, 1000, 1, 0, 1000000);
    ck_assert_int_eq(cmd_num(c, "GET " KEY_U), tat);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 1);
    redisFree(c);
}
END_TEST

/* cost 2 (a change that first reads its target) takes two cells of the upstream bucket and two
 * units of the daily budget, but one cell of the subject's bucket: the subject made one
 * request. Upstream 10 per 100 s: T = 10 s, tau = 90 s. */
START_TEST(test_rlscript_cost_two_spends_two_upstream_cells_and_one_subject_cell)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {20, 1000, 10, 100, 1000};
    expect(call(c, sha, &l, 2, 0), 1, 0, 0, 20, 19, 1000000);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 2);
    for (long long i = 0; i < 7; i++) /* upstream cells 3..9 */
        expect(call(c, sha, &l, 1, 0), 1, 0, 0, 20, 18 - i, 1000000);
    /* one upstream cell left: cost 2 waits for the second (tat - now = 90 s, room 80 s) and
     * spends nothing */
    expect(call(c, sha, &l, 2, 0), 0, GW_RLS_UPSTREAM, 10, 10, 0, 100000);
    expect(call(c, sha, &l, 1, 0), 1, 0, 0, 20, 11, 1000000);
    expect(call(c, sha, &l, 1, 0), 0, GW_RLS_UPSTREAM, 10, 10, 0, 100000);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 10);
    redisFree(c);
}
END_TEST

/* A cost above the upstream burst is cut to the burst (else it could never pass), for the
 * bucket and for the daily budget alike. */
START_TEST(test_rlscript_cost_above_the_upstream_burst_spends_the_whole_burst)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {20, 1000, 1, 100, 1000};
    expect(call(c, sha, &l, 2, 0), 1, 0, 0, 20, 19, 1000000);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 1);
    expect(call(c, sha, &l, 1, 0), 0, GW_RLS_UPSTREAM, 100, 1, 0, 100000);
    redisFree(c);
}
END_TEST

/* The daily budget counts units: with 3 a day, cost 2 then cost 2 is refused (one left, as
 * remaining says) and cost 1 still passes. */
START_TEST(test_rlscript_cost_two_needs_two_daily_units)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {20, 1000, 100, 100, 3};
    long long now = redis_time_us(c);
    long long to_midnight = (now / DAY + 1) * DAY_S - now / SEC; /* for a run not at midnight */
    ck_assert_int_eq(call(c, sha, &l, 2, 0).allowed, 1);
    struct verdict v = call(c, sha, &l, 2, 0);
    ck_assert_int_eq(v.allowed, 0);
    ck_assert_int_eq(v.scope, GW_RLS_DAILY);
    ck_assert_int_eq(v.max, 3);
    ck_assert_int_eq(v.remaining, 1);
    ck_assert_int_eq(v.interval_ms, 86400000);
    ck_assert(v.retry >= to_midnight - 1 && v.retry <= to_midnight);
    expect(call(c, sha, &l, 1, 0), 1, 0, 0, 20, 18, 1000000);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 3);
    redisFree(c);
}
END_TEST

/* Daily 3, the clock moved to 999.5 s before a UTC midnight: the fourth call waits 1000 s
 * (rounded up) and spends neither bucket; the key expires at that midnight. Past it (0.5 s into
 * the next day) the count starts again, and the fourth waits a whole day. */
START_TEST(test_rlscript_daily_budget_refuses_until_utc_midnight_then_resets)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {1000, 10, 1000, 10, 3};
    long long t = redis_time_us(c);
    long long day = t / DAY + 1; /* tomorrow: its end lies ahead on Redis's real clock too */
    long long off = (day + 1) * DAY - 1000 * SEC + SEC / 2 - t;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(call(c, sha, &l, 1, off).allowed, 1);
    long long s_tat = cmd_num(c, "GET " KEY_S), u_tat = cmd_num(c, "GET " KEY_U);
    expect(call(c, sha, &l, 1, off), 0, GW_RLS_DAILY, 1000, 3, 0, 86400000);
    ck_assert_int_eq(cmd_num(c, "GET " KEY_S), s_tat);
    ck_assert_int_eq(cmd_num(c, "GET " KEY_U), u_tat);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " day"), day);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 3);
    ck_assert_int_eq(cmd_int(c, "EXPIRETIME " KEY_D), (day + 1) * DAY_S);

    off += 1000 * SEC; /* 0.5 s past midnight */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(call(c, sha, &l, 1, off).allowed, 1);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " day"), day + 1);
    expect(call(c, sha, &l, 1, off), 0, GW_RLS_DAILY, DAY_S, 3, 0, 86400000);
    ck_assert_int_eq(cmd_int(c, "EXPIRETIME " KEY_D), (day + 2) * DAY_S);
    redisFree(c);
}
END_TEST

/* A bucket's key lives as long as its bucket is not full: after three calls of T = 2 s
 * (subject) and T = 10 s (upstream), 6 s and 30 s at most. The daily key ends with the UTC day.
 * A fast bucket (T = 100 ms) is gone from Redis once full, and then starts full. */
START_TEST(test_rlscript_keys_expire_when_their_bucket_is_full_again)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits l = {5, 10, 10, 100, 1000};
    long long t0 = redis_time_us(c);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(call(c, sha, &l, 1, 0).allowed, 1);
    long long t1 = redis_time_us(c);
    long long s_ttl = cmd_int(c, "PTTL " KEY_S), u_ttl = cmd_int(c, "PTTL " KEY_U);
    ck_assert_msg(s_ttl > 6000 - 500 && s_ttl <= 6000, "subject PTTL %lld", s_ttl);
    ck_assert_msg(u_ttl > 30000 - 500 && u_ttl <= 30000, "upstream PTTL %lld", u_ttl);
    long long exp = cmd_int(c, "EXPIRETIME " KEY_D);
    ck_assert_msg(exp == (t0 / DAY + 1) * DAY_S || exp == (t1 / DAY + 1) * DAY_S,
                  "daily key expires at %lld", exp);

    const struct limits fast = {10, 1, 10, 1, 1000};
    cmd_int(c, "DEL " KEY_S " " KEY_U);
    expect(call(c, sha, &fast, 1, 0), 1, 0, 0, 10, 9, 1000);
    expect(call(c, sha, &fast, 1, 0), 1, 0, 0, 10, 8, 1000);
    s_ttl = cmd_int(c, "PTTL " KEY_S);
    ck_assert_msg(s_ttl > 0 && s_ttl <= 200, "subject PTTL %lld", s_ttl);
    usleep(300000);
    ck_assert_int_eq(cmd_int(c, "EXISTS " KEY_S " " KEY_U), 0);
    expect(call(c, sha, &fast, 1, 0), 1, 0, 0, 10, 9, 1000);
    redisFree(c);
}
END_TEST

static int has_key(redisReply *keys, const char *k)
{
    for (size_t i = 0; i < keys->elements; i++)
        if (strcmp(keys->element[i]->str, k) == 0)
            return 1;
    return 0;
}

/* The script writes its three keys and nothing else; a refused call writes nothing. The buckets
 * hold their arrival time in whole microseconds (never a float's 14 digits); the budget is a
 * hash of day and n. */
START_TEST(test_rlscript_writes_only_the_three_keys_of_its_header)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const struct limits none = {5, 10, 10, 100, 0};
    struct verdict v = call(c, sha, &none, 1, 0);
    ck_assert(v.allowed == 0 && v.scope == GW_RLS_DAILY && v.max == 0 && v.remaining == 0);
    ck_assert_int_eq(cmd_int(c, "DBSIZE"), 0);

    const struct limits l = {5, 10, 10, 100, 1000};
    long long t0 = redis_time_us(c);
    ck_assert_int_eq(call(c, sha, &l, 1, 0).allowed, 1);
    long long t1 = redis_time_us(c);
    redisReply *keys = cmd(c, "KEYS *");
    ck_assert_int_eq(keys->elements, 3);
    ck_assert(has_key(keys, KEY_S) && has_key(keys, KEY_U) && has_key(keys, KEY_D));
    freeReplyObject(keys);

    redisReply *r = cmd(c, "TYPE " KEY_D);
    ck_assert_str_eq(r->str, "hash");
    freeReplyObject(r);
    ck_assert_int_eq(cmd_int(c, "HLEN " KEY_D), 2);
    long long day = cmd_num(c, "HGET " KEY_D " day");
    ck_assert(day == t0 / DAY || day == t1 / DAY);
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 1);
    /* an empty bucket's tat is now + T: the subject's T is 2 s, the upstream's 10 s */
    long long s_tat = cmd_num(c, "GET " KEY_S), u_tat = cmd_num(c, "GET " KEY_U);
    ck_assert(s_tat >= t0 + 2 * SEC && s_tat <= t1 + 2 * SEC);
    ck_assert(u_tat >= t0 + 10 * SEC && u_tat <= t1 + 10 * SEC);
    redisFree(c);
}
END_TEST

#define RACERS 8
#define CALLS 40 /* per racer: 320 calls against a limit of 50 */
#define LIMIT 50

struct racer {
    const char *sha;
    const struct limits *l;
    pthread_barrier_t *go;
    int allowed;
    int wrong_scope; /* refusals by another limit than the one under test */
    int scope;       /* the limit under test */
    int remaining[CALLS];
    char err[256]; /* the first failure, for the main thread to report */
};

/* A batch (rlscript.h: the requests of one loop pass in one call) decides each request as if
 * it came alone, in order: subject A three times and B twice against a subject burst of 2 and
 * an upstream burst of 3, per hour. A is allowed, allowed again at cost 2 (the upstream's last
 * two cells), then refused by its subject; B finds the upstream empty, twice. Nothing of the
 * refused requests is spent, and the same requests one by one get the same answers. */
START_TEST(test_rlscript_batch_decides_each_request_in_order)
{
    char sha[41];
    redisContext *c = fresh(sha);
    const char *argv[] = {"EVALSHA", sha, "7", KEY_S, KEY_U, KEY_D, KEY_S, KEY_S, KEY_S2, KEY_S2,
                          "2", "3600", "3", "3600", "100", "1", "0", "2", "1", "1", "1"};
    redisReply *r = redisCommandArgv(c, 21, argv, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(r->type == REDIS_REPLY_ARRAY && r->elements == 30, "type %d, %zu elements",
                  r->type, r->elements);
    static const long long want[5][6] = {
        {1, 0, 0, 2, 1, 3600000},    /* A: 1 of 2 left */
        {1, 0, 0, 2, 0, 3600000},    /* A, cost 2: the upstream's last two cells */
        {0, 0, 1800, 2, 0, 3600000}, /* A: its subject refuses (T = 1800 s) */
        {0, 1, 1200, 3, 0, 3600000}, /* B: the upstream refuses (T = 1200 s) */
        {0, 1, 1200, 3, 0, 3600000}, /* B again: the same */
    };
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 6; j++)
            ck_assert_msg(r->element[6 * i + j]->integer == want[i][j],
                          "request %zu, element %zu: %lld, want %lld", i + 1, j,
                          r->element[6 * i + j]->integer, want[i][j]);
    freeReplyObject(r);
    /* spent: 3 upstream cells and 3 daily units; B's bucket untouched */
    ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), 3);
    ck_assert_int_eq(cmd_int(c, "EXISTS " KEY_S2), 0);
    /* the same five one by one give the same answers (after FLUSHALL) */
    freeReplyObject(cmd(c, "FLUSHALL"));
    const struct limits l = {.sb = 2, .sp = 3600, .ub = 3, .up = 3600, .daily = 100};
    expect(call(c, sha, &l, 1, 0), 1, 0, 0, 2, 1, 3600000);
    expect(call(c, sha, &l, 2, 0), 1, 0, 0, 2, 0, 3600000);
    expect(call(c, sha, &l, 1, 0), 0, 0, 1800, 2, 0, 3600000);
    expect(call_key(c, sha, KEY_S2, &l, 1, 0), 0, 1, 1200, 3, 0, 3600000);
    redisFree(c);
}
END_TEST

static void *race(void *arg)
{
    struct racer *r = arg;
    redisContext *c = redis_connect(&srv, false, r->err, sizeof r->err);
    pthread_barrier_wait(r->go);
    if (c == NULL)
        return NULL;
    for (int i = 0; i < CALLS; i++) {
        struct verdict v;
        if (evalsha(c, r->sha, KEY_S, r->l, 1, 0, &v, r->err, sizeof r->err) != 0)
            break;
        if (v.allowed)
            r->remaining[r->allowed++] = (int)v.remaining;
        else if (v.scope != r->scope)
            r->wrong_scope++;
    }
    redisFree(c);
    return NULL;
}

/* Eight clients, each on its own connection, race for one limit of 50 (no refill during the
 * test: T is thousands of seconds): exactly 50 pass, their remaining values are 49..0 each
 * once, and the daily count and both arrival times say 50 cells, whichever limit binds. */
START_TEST(test_rlscript_exact_under_eight_concurrent_clients)
{
    static const struct limits phases[] = {
        {LIMIT, 1000000, 1000, 1000000, 1000000}, /* subject: T 20,000 s; upstream T 1,000 s */
        {1000, 1000000, LIMIT, 1000000, 1000000}, /* upstream: T 20,000 s */
        {1000, 1000000, 1000, 1000000, LIMIT},    /* daily */
    };
    static const int scopes[] = {GW_RLS_SUBJECT, GW_RLS_UPSTREAM, GW_RLS_DAILY};
    for (size_t p = 0; p < 3; p++) {
        char sha[41];
        redisContext *c = fresh(sha);
        const struct limits *l = &phases[p];
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, RACERS + 1);
        struct racer r[RACERS];
        pthread_t t[RACERS];
        for (int i = 0; i < RACERS; i++) {
            memset(&r[i], 0, sizeof r[i]);
            r[i].sha = sha;
            r[i].l = l;
            r[i].go = &go;
            r[i].scope = scopes[p];
            ck_assert_int_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
        }
        long long t0 = redis_time_us(c);
        pthread_barrier_wait(&go);
        int allowed = 0, seen[LIMIT] = {0};
        for (int i = 0; i < RACERS; i++) {
            pthread_join(t[i], NULL);
            ck_assert_msg(r[i].err[0] == '\0', "racer %d: %s", i, r[i].err);
            ck_assert_int_eq(r[i].wrong_scope, 0);
            allowed += r[i].allowed;
            for (int j = 0; j < r[i].allowed; j++)
                if (r[i].remaining[j] >= 0 && r[i].remaining[j] < LIMIT)
                    seen[r[i].remaining[j]]++;
        }
        long long t1 = redis_time_us(c);
        pthread_barrier_destroy(&go);
        ck_assert_msg(allowed == LIMIT, "phase %zu: %d allowed", p, allowed);
        ck_assert_int_eq(cmd_num(c, "HGET " KEY_D " n"), LIMIT);
        long long ts = l->sp * SEC / l->sb, tu = l->up * SEC / l->ub;
        long long s_tat = cmd_num(c, "GET " KEY_S), u_tat = cmd_num(c, "GET " KEY_U);
        ck_assert(s_tat >= t0 + LIMIT * ts && s_tat <= t1 + LIMIT * ts);
        ck_assert(u_tat >= t0 + LIMIT * tu && u_tat <= t1 + LIMIT * tu);
        if (p == 0) /* the subject's remaining: each value once */
            for (int k = 0; k < LIMIT; k++)
                ck_assert_msg(seen[k] == 1, "remaining %d seen %d times", k, seen[k]);
        redisFree(c);
    }
}
END_TEST

/* The script through an ACL user over the unix socket, as a managed Redis with users runs it;
 * without AUTH the store refuses it. */
START_TEST(test_rlscript_runs_for_an_acl_user_over_the_unix_socket)
{
    struct redis_srv own;
    char why[1024];
    const struct redis_opts o = {.password = "default-pw-71c2",
                                 .user = "gateway",
                                 .user_password = "gateway-pw-0e9d",
                                 .unix_socket = true};
    ck_assert_msg(redis_start(&own, &o, why, sizeof why) == 0, "redis_start: %s", why);
    redisContext *c = redis_connect(&own, true, why, sizeof why);
    ck_assert_msg(c != NULL, "%s", why);
    redisReply *r = cmd(c, "ACL WHOAMI");
    ck_assert_str_eq(r->str, "gateway");
    freeReplyObject(r);
    char sha[41];
    load(c, sha);
    const struct limits l = {5, 10, 10, 100, 1000};
    expect(call(c, sha, &l, 1, 0), 1, 0, 0, 5, 4, 10000);
    redisFree(c);

    c = redisConnectWithTimeout("127.0.0.1", own.port, (struct timeval){1, 0});
    ck_assert(c != NULL && c->err == 0);
    r = cmd(c, "EVALSHA %s 0", sha);
    ck_assert_msg(r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0, "%s",
                  r->type == REDIS_REPLY_ERROR ? r->str : "not refused");
    freeReplyObject(r);
    redisFree(c);
    ck_assert_int_eq(redis_stop(&own), 0);
}
END_TEST

/* A killed store fails the call (the connection's error, not a reply); restarted on its port it
 * has lost the script (NOSCRIPT, the gateway's cue to load it again) and every bucket. */
START_TEST(test_rlscript_killed_store_fails_and_restarts_empty_without_the_script)
{
    struct redis_srv own;
    char why[1024], sha[41];
    const struct redis_opts o = {.password = "pw-a41b"};
    ck_assert_msg(redis_start(&own, &o, why, sizeof why) == 0, "redis_start: %s", why);
    int port = own.port;
    redisContext *c = redis_connect(&own, false, why, sizeof why);
    ck_assert_msg(c != NULL, "%s", why);
    load(c, sha);
    const struct limits l = {5, 10, 10, 100, 1000};
    for (long long i = 0; i < 5; i++)
        expect(call(c, sha, &l, 1, 0), 1, 0, 0, 5, 4 - i, 10000);

    ck_assert_int_eq(redis_kill(&own), 0);
    struct verdict v;
    ck_assert_int_eq(evalsha(c, sha, KEY_S, &l, 1, 0, &v, why, sizeof why), -1);
    ck_assert(c->err != 0);
    redisFree(c);

    ck_assert_msg(redis_restart(&own, why, sizeof why) == 0, "redis_restart: %s", why);
    ck_assert_int_eq(own.port, port);
    c = redis_connect(&own, false, why, sizeof why);
    ck_assert_msg(c != NULL, "%s", why);
    ck_assert_int_eq(evalsha(c, sha, KEY_S, &l, 1, 0, &v, why, sizeof why), -1);
    ck_assert_msg(strncmp(why, "NOSCRIPT", 8) == 0, "%s", why);
    char again[41];
    load(c, again);
    ck_assert_str_eq(again, sha);
    expect(call(c, sha, &l, 1, 0), 1, 0, 0, 5, 4, 10000);
    redisFree(c);

    /* a graceful restart too: same port, still answering */
    ck_assert_msg(redis_restart(&own, why, sizeof why) == 0, "redis_restart: %s", why);
    ck_assert_int_eq(own.port, port);
    c = redis_connect(&own, false, why, sizeof why);
    ck_assert_msg(c != NULL, "%s", why);
    ck_assert_int_eq(cmd_int(c, "DBSIZE"), 0);
    redisFree(c);
    char dir[sizeof own.dir];
    memcpy(dir, own.dir, sizeof dir);
    ck_assert_int_eq(redis_stop(&own), 0);
    ck_assert_int_eq(access(dir, F_OK), -1); /* its folder is gone */
    ck_assert_int_eq(redis_stop(&own), 0);   /* and a second stop is harmless */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rlscript");
    TCase *t = tcase_create("script");
    tcase_set_timeout(t, 60);
    tcase_add_unchecked_fixture(t, start_srv, stop_srv);
    tcase_add_test(t, test_rlscript_burst_of_five_then_subject_refuses_for_one_interval);
    tcase_add_test(t, test_rlscript_one_emission_interval_lets_exactly_one_more_through);
    tcase_add_test(t, test_rlscript_retry_after_rounds_up_to_whole_seconds);
    tcase_add_test(t, test_rlscript_upstream_refusal_spends_no_subject_cell_nor_daily_unit);
    tcase_add_test(t, test_rlscript_subject_refusal_spends_no_upstream_cell_nor_daily_unit);
    tcase_add_test(t, test_rlscript_cost_two_spends_two_upstream_cells_and_one_subject_cell);
    tcase_add_test(t, test_rlscript_cost_above_the_upstream_burst_spends_the_whole_burst);
    tcase_add_test(t, test_rlscript_cost_two_needs_two_daily_units);
    tcase_add_test(t, test_rlscript_daily_budget_refuses_until_utc_midnight_then_resets);
    tcase_add_test(t, test_rlscript_keys_expire_when_their_bucket_is_full_again);
    tcase_add_test(t, test_rlscript_writes_only_the_three_keys_of_its_header);
    tcase_add_test(t, test_rlscript_exact_under_eight_concurrent_clients);
    tcase_add_test(t, test_rlscript_batch_decides_each_request_in_order);
    suite_add_tcase(s, t);
    TCase *store = tcase_create("store");
    tcase_set_timeout(store, 60);
    tcase_add_unchecked_fixture(store, store_tmp_make, store_tmp_remove);
    tcase_add_test(store, test_rlscript_runs_for_an_acl_user_over_the_unix_socket);
    tcase_add_test(store, test_rlscript_killed_store_fails_and_restarts_empty_without_the_script);
    suite_add_tcase(s, store);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
