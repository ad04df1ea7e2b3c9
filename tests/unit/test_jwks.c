/* jwks: the bounded HTTPS GET against servers that misbehave at the socket level; the retry
 * schedule of an issuer without keys; which issuers keep their keys across a reload. */
#include "../../proxy/jwks.c"

#include <check.h>
#include <netinet/in.h>
#include <signal.h>

struct drip {
    int listen_fd;
    int interval_ms;
    const char *bytes;
    size_t len;
};

/* Accepts one connection and sends its bytes one at a time, slowly, then holds it open. */
static void *drip_server(void *arg)
{
    struct drip *d = arg;
    int c = accept(d->listen_fd, NULL, NULL);
    for (size_t i = 0; c >= 0 && i < d->len; i++) {
        if (write(c, d->bytes + i, 1) != 1)
            break;
        usleep((useconds_t)d->interval_ms * 1000);
    }
    usleep(300000);
    if (c >= 0)
        close(c);
    return NULL;
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A server that drips a TLS record a byte at a time cannot hold the call past its deadline
 * (a per-read socket timeout would let it, forever). */
START_TEST(test_https_get_deadline_holds_against_a_dripping_server)
{
    static char record[64];
    memcpy(record, "\x16\x03\x03\x40\x00", 5); /* a handshake record header promising 16 KiB */
    memset(record + 5, 'x', sizeof record - 5);
    int port;
    struct drip d = {.interval_ms = 100, .bytes = record, .len = sizeof record};
    d.listen_fd = listen_any(&port);
    pthread_t th;
    signal(SIGPIPE, SIG_IGN);
    pthread_create(&th, NULL, drip_server, &d);
    char url[64], why[300];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/jwks.json", port);
    char *body = NULL;
    size_t len = 0;
    long t0 = mono_ms();
    int rc = gw_https_get(url, NULL, 1000, 1 << 20, &body, &len, why, sizeof why);
    long took = mono_ms() - t0;
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_null(body);
    ck_assert_msg(took < 2500, "the 1000 ms deadline took %ld ms", took);
    ck_assert_msg(strstr(why, "timed out") != NULL, "%s", why);
    pthread_join(th, NULL);
    close(d.listen_fd);
}
END_TEST

START_TEST(test_https_get_refuses_what_is_not_an_https_url)
{
    char *body = NULL, why[300];
    size_t len;
    static const char *const bad[] = {"http://example.com/jwks", "https://", "https://h:x/",
                                      "https://h/a b", "ftp://h/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(gw_https_get(bad[i], NULL, 500, 1024, &body, &len, why, sizeof why), -1);
        ck_assert_ptr_null(body);
    }
}
END_TEST

START_TEST(test_https_get_connection_refused)
{
    int port;
    int fd = listen_any(&port);
    close(fd); /* nobody listens there now */
    char url[64], why[300], *body = NULL;
    size_t len;
    snprintf(url, sizeof url, "https://127.0.0.1:%d/", port);
    ck_assert_int_eq(gw_https_get(url, NULL, 1000, 1024, &body, &len, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "cannot connect") != NULL, "%s", why);
}
END_TEST

START_TEST(test_dechunk)
{
    char ok[] = "4\r\nabcd\r\na;x=y\r\n0123456789\r\n0\r\n\r\n";
    ck_assert_int_eq(dechunk(ok, strlen(ok)), 14);
    ck_assert_int_eq(memcmp(ok, "abcd0123456789", 14), 0);
    char short_data[] = "9\r\nabc\r\n0\r\n\r\n";
    ck_assert_int_eq(dechunk(short_data, strlen(short_data)), -1);
    char no_end[] = "3\r\nabc\r\n";
    ck_assert_int_eq(dechunk(no_end, strlen(no_end)), -1);
    char huge[] = "ffffffffff\r\nabc\r\n0\r\n\r\n";
    ck_assert_int_eq(dechunk(huge, strlen(huge)), -1);
    char junk[] = "zz\r\n";
    ck_assert_int_eq(dechunk(junk, strlen(junk)), -1);
}
END_TEST

/* An issuer without URL keys (its provider away at start) is retried after 1 s, doubling up to
 * min(jwks_refresh_s, 60 s); one with keys, or after a success, waits for its refresh. */
START_TEST(test_retry_backoff_while_an_issuer_has_no_keys)
{
    static const struct {
        long refresh_s;
        int64_t waits[9];
    } cases[] = {
        {600, {1, 2, 4, 8, 16, 32, 60, 60, 60}},
        {5, {1, 2, 4, 5, 5, 5, 5, 5, 5}},
        {1, {1, 1, 1, 1, 1, 1, 1, 1, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        struct gw_cfg_issuer ci = {
            .issuer = "https://i", .discovery = true, .jwks_refresh_s = cases[c].refresh_s};
        struct gw_issuer is = {.cfg = &ci};
        pthread_mutex_init(&is.url_mu, NULL);
        struct gw_auth a = {.issuers = &is, .nissuers = 1};
        struct gw_jwks_fetcher *f = gw_jwks_fetcher_new(&a);
        ck_assert_ptr_nonnull(f);
        for (int k = 0; k < 9; k++) {
            int64_t before = now_s();
            ck_assert_int_eq(schedule(f, 0, before, true, false), cases[c].waits[k]);
            ck_assert_int_ge(f->st[0].next_due, before + cases[c].waits[k]);
            ck_assert_int_le(f->st[0].next_due, now_s() + cases[c].waits[k]);
        }
        /* a success: the refresh interval again, and the next failure starts at 1 s */
        ck_assert_int_eq(schedule(f, 0, 1000, true, true), 0);
        ck_assert_int_eq(f->st[0].next_due, 1000 + cases[c].refresh_s);
        ck_assert_int_eq(schedule(f, 0, now_s(), true, false), 1);
        /* with last good keys a failure keeps them until the refresh: no hurry */
        struct gw_keyset held = {.n = 0};
        is.url_keys = &held;
        ck_assert_int_eq(schedule(f, 0, 2000, true, false), 0);
        ck_assert_int_eq(f->st[0].next_due, 2000 + cases[c].refresh_s);
        /* an unknown kid's refetch, good or not, leaves the next refresh (which reads the
         * discovery document again) where it was */
        ck_assert_int_eq(schedule(f, 0, 2100, false, true), 0);
        ck_assert_int_eq(schedule(f, 0, 2200, false, false), 0);
        ck_assert_int_eq(f->st[0].next_due, 2000 + cases[c].refresh_s);
        ck_assert_int_eq(f->st[0].last_attempt, 2200);
        is.url_keys = NULL;
        gw_jwks_fetcher_free(f);
        pthread_mutex_destroy(&is.url_mu);
    }
}
END_TEST

START_TEST(test_reload_keeps_keys_from_the_same_source)
{
    struct gw_cfg_issuer url_a = {.issuer = "https://i", .jwks_url = "https://i/a"};
    struct gw_cfg_issuer url_a2 = {.issuer = "https://i", .jwks_url = "https://i/a"};
    struct gw_cfg_issuer url_b = {.issuer = "https://i", .jwks_url = "https://i/b"};
    struct gw_cfg_issuer disc = {.issuer = "https://i", .discovery = true};
    struct gw_cfg_issuer disc2 = {.issuer = "https://i", .discovery = true};
    struct gw_cfg_issuer disc_j = {.issuer = "https://j", .discovery = true};
    ck_assert(same_source(&url_a, &url_a2));
    ck_assert(!same_source(&url_a, &url_b));
    ck_assert(same_source(&disc, &disc2));
    ck_assert(!same_source(&disc, &disc_j));
    /* switching between a jwks_url and discovery starts from nothing */
    ck_assert(!same_source(&disc, &url_a));
    ck_assert(!same_source(&url_a, &disc));
    ck_assert(gw_jwks_fetched(&disc) && gw_jwks_fetched(&url_a));
    struct gw_cfg_issuer keys_only = {.issuer = "https://i"};
    ck_assert(!gw_jwks_fetched(&keys_only));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("jwks");
    TCase *t = tcase_create("https_get");
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_https_get_deadline_holds_against_a_dripping_server);
    tcase_add_test(t, test_https_get_refuses_what_is_not_an_https_url);
    tcase_add_test(t, test_https_get_connection_refused);
    tcase_add_test(t, test_dechunk);
    suite_add_tcase(s, t);
    TCase *r = tcase_create("fetcher");
    tcase_add_test(r, test_retry_backoff_while_an_issuer_has_no_keys);
    tcase_add_test(r, test_reload_keeps_keys_from_the_same_source);
    suite_add_tcase(s, r);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
