/* Unit tests of the requests waiting for a JWKS refetch (proxy/keywait.c), on a real libevent
 * loop: a fetch that ends answers every wait on its issuer (and only those), from another
 * thread too; a wait whose time is up is answered as such; a fetch that ended between the
 * refetch's request and the park still counts; the cap; every wait answered exactly once when
 * the worker stops. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "issuers.h"
#include "keywait.h"

struct answer {
    int calls;
    bool fetched;
};

static void on_answer(void *arg, bool fetched)
{
    struct answer *a = arg;
    a->calls++;
    a->fetched = fetched;
}

static struct gw_issuer g_is[2];
static struct event_base *g_base;
static struct gw_keywait *g_kw;

static void setup(void)
{
    memset(g_is, 0, sizeof g_is);
    ck_assert_int_eq(evthread_use_pthreads(), 0);
    g_base = event_base_new();
    ck_assert_ptr_nonnull(g_base);
    g_kw = gw_keywait_new(g_base);
    ck_assert_ptr_nonnull(g_kw);
}

static void teardown(void)
{
    gw_keywait_free(g_kw);
    event_base_free(g_base);
}

/* Runs the loop until it has nothing left to do, or ms pass. */
static void run_for(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(g_base, &tv);
    event_base_dispatch(g_base);
}

/* What the fetcher does when a fetch of is ends (jwks.c's fetch_ended, through server.c). */
static void fetch_ended(struct gw_issuer *is)
{
    atomic_fetch_add(&is->fetch_gen, 1);
    gw_keywait_fetched(g_kw);
}

START_TEST(test_keywait_a_fetch_answers_the_waits_of_its_issuer_only)
{
    struct answer a[3] = {{0}}, other = {0};
    for (int i = 0; i < 3; i++)
        ck_assert(gw_keywait_park(g_kw, &g_is[0], atomic_load(&g_is[0].fetch_gen), 5000,
                                  on_answer, &a[i]));
    ck_assert(gw_keywait_park(g_kw, &g_is[1], 0, 300, on_answer, &other));
    ck_assert_uint_eq(gw_keywait_count(g_kw), 4);
    run_for(20);
    ck_assert_int_eq(a[0].calls + a[1].calls + a[2].calls + other.calls, 0); /* nothing yet */
    fetch_ended(&g_is[0]);
    run_for(20);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(a[i].calls, 1);
        ck_assert(a[i].fetched);
    }
    ck_assert_int_eq(other.calls, 0);
    ck_assert_uint_eq(gw_keywait_count(g_kw), 1);
    run_for(500); /* the other issuer's wait runs out */
    ck_assert_int_eq(other.calls, 1);
    ck_assert(!other.fetched);
    ck_assert_uint_eq(gw_keywait_count(g_kw), 0);
    fetch_ended(&g_is[1]); /* answered already: not again */
    run_for(20);
    ck_assert_int_eq(other.calls, 1);
}
END_TEST

static void *fetcher_thread(void *arg)
{
    fetch_ended(arg);
    return NULL;
}

START_TEST(test_keywait_woken_from_another_thread)
{
    struct answer a = {0};
    ck_assert(gw_keywait_park(g_kw, &g_is[0], 0, 5000, on_answer, &a));
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, fetcher_thread, &g_is[0]), 0);
    pthread_join(t, NULL);
    run_for(200);
    ck_assert_int_eq(a.calls, 1);
    ck_assert(a.fetched);
}
END_TEST

/* The refetch was asked for at generation 0 and ended before the request parked: the wait
 * does not sit until its time is up. */
START_TEST(test_keywait_a_fetch_ended_before_the_park_counts)
{
    atomic_store(&g_is[0].fetch_gen, 1);
    struct answer a = {0};
    ck_assert(gw_keywait_park(g_kw, &g_is[0], 0, 5000, on_answer, &a));
    ck_assert_int_eq(a.calls, 0); /* never from inside the park */
    run_for(50);
    ck_assert_int_eq(a.calls, 1);
    ck_assert(a.fetched);
}
END_TEST

/* A callback that parks a new wait on the same issuer (a request verified again may meet
 * another unknown kid): that wait is not answered by the fetch that ended before it. */
static struct answer g_second;
static void park_again(void *arg, bool fetched)
{
    on_answer(arg, fetched);
    ck_assert(gw_keywait_park(g_kw, &g_is[0], atomic_load(&g_is[0].fetch_gen), 5000, on_answer,
                              &g_second));
}

START_TEST(test_keywait_callback_may_park_again)
{
    memset(&g_second, 0, sizeof g_second);
    struct answer a = {0};
    ck_assert(gw_keywait_park(g_kw, &g_is[0], 0, 5000, park_again, &a));
    fetch_ended(&g_is[0]);
    run_for(50);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(g_second.calls, 0);
    fetch_ended(&g_is[0]);
    run_for(50);
    ck_assert_int_eq(g_second.calls, 1);
}
END_TEST

START_TEST(test_keywait_cap_and_stop_answer_every_wait_once)
{
    struct answer *a = calloc(GW_KEYWAIT_MAX + 1, sizeof *a);
    ck_assert_ptr_nonnull(a);
    for (int i = 0; i < GW_KEYWAIT_MAX; i++)
        ck_assert(gw_keywait_park(g_kw, &g_is[i % 2], 0, 60000, on_answer, &a[i]));
    ck_assert(!gw_keywait_park(g_kw, &g_is[0], 0, 60000, on_answer, &a[GW_KEYWAIT_MAX]));
    ck_assert_uint_eq(gw_keywait_count(g_kw), GW_KEYWAIT_MAX);
    gw_keywait_cancel_all(g_kw); /* the worker stops */
    for (int i = 0; i <= GW_KEYWAIT_MAX; i++) {
        ck_assert_int_eq(a[i].calls, i < GW_KEYWAIT_MAX ? 1 : 0);
        ck_assert(!a[i].fetched);
    }
    ck_assert_uint_eq(gw_keywait_count(g_kw), 0);
    fetch_ended(&g_is[0]);
    run_for(20);
    for (int i = 0; i < GW_KEYWAIT_MAX; i++)
        ck_assert_int_eq(a[i].calls, 1);
    free(a);
}
END_TEST

static Suite *keywait_suite(void)
{
    Suite *s = suite_create("keywait");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_keywait_a_fetch_answers_the_waits_of_its_issuer_only);
    tcase_add_test(tc, test_keywait_woken_from_another_thread);
    tcase_add_test(tc, test_keywait_a_fetch_ended_before_the_park_counts);
    tcase_add_test(tc, test_keywait_callback_may_park_again);
    tcase_add_test(tc, test_keywait_cap_and_stop_answer_every_wait_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(keywait_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
