/* The client edge: TLS, HTTP framing, limits, deadlines and graceful shutdown, each against the
 * real gateway, with the sandbox journal proving what did (not) reach the upstream. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct env E;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void setup(void)
{
    env_start(
        &E, &(struct env_opts){.gateway_json =
                                   "\"limits\": { \"max_header_bytes\": 4096, "
                                   "\"max_body_bytes\": 2048, \"header_timeout_ms\": 1500, "
                                   "\"body_timeout_ms\": 1500, \"keepalive_timeout_ms\": 1000 }"});
}

static void teardown(void)
{
    env_stop(&E);
}

static void ca_path(char *buf, size_t len)
{
    snprintf(buf, len, "%s/ca.crt", E.certs);
}

/* Sends raw bytes and expects one 400/413/431 reply, then the connection closed, and nothing
 * upstream. */
static void expect_refused(const char *raw, size_t len, int status, const char *message)
{
    struct response r;
    ck_assert_int_eq(send_raw(&E, raw, len, &r), 0);
    ck_assert_msg(r.status == status, "got %d, want %d for: %s", r.status, status, raw);
    if (message)
        ck_assert_msg(strstr(r.body, message) != NULL, "body %s lacks %s", r.body, message);
    ck_assert_str_eq(response_header(&r, "Connection"), "close");
    ck_assert_msg(r.closed, "connection left open after %d", status);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
}

#define GET_OK "GET /users/" SEED_USER " HTTP/1.1\r\nHost: l\r\nVersion: 2021-07-28\r\n"
#define SMUGGLED "GET /users/search?companyId=x HTTP/1.1\r\nHost: l\r\nVersion: 2021-07-28\r\n\r\n"

START_TEST(test_duplicate_content_length_refused_and_closed)
{
    char raw[512];
    int n = snprintf(raw, sizeof raw, GET_OK "Content-Length: 0\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(SMUGGLED), SMUGGLED);
    expect_refused(raw, (size_t)n, 400, "more than one Content-Length");
}
END_TEST

START_TEST(test_transfer_encoding_with_content_length_refused)
{
    const char *raw = "POST /users/search/filter-by-email HTTP/1.1\r\nHost: l\r\n"
                      "Version: 2021-07-28\r\nContent-Type: application/json\r\n"
                      "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "0\r\n\r\n" SMUGGLED;
    expect_refused(raw, strlen(raw), 400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_chunked_request_refused)
{
    const char *raw = "POST /users/ HTTP/1.1\r\nHost: l\r\nVersion: 2021-07-28\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    expect_refused(raw, strlen(raw), 400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_header_name_with_space_refused)
{
    char raw[512];
    int n = snprintf(raw, sizeof raw, GET_OK "Content-Length : %zu\r\n\r\n%s", strlen(SMUGGLED),
                     SMUGGLED);
    expect_refused(raw, (size_t)n, 400, "invalid header name");
}
END_TEST

START_TEST(test_bare_lf_refused)
{
    const char *raw = "GET /users/" SEED_USER " HTTP/1.1\nHost: l\nVersion: 2021-07-28\n\n";
    expect_refused(raw, strlen(raw), 400, "bare LF");
}
END_TEST

START_TEST(test_nul_in_head_refused)
{
    const char raw[] = "GET /users/" SEED_USER " HTTP/1.1\r\nHost: l\r\nX-A: a\0b\r\n"
                       "Version: 2021-07-28\r\n\r\n";
    expect_refused(raw, sizeof raw - 1, 400, "NUL");
}
END_TEST

START_TEST(test_obs_fold_refused)
{
    const char *raw = GET_OK "X-A: a\r\n  folded\r\n\r\n";
    expect_refused(raw, strlen(raw), 400, "folded");
}
END_TEST

START_TEST(test_absolute_form_target_refused)
{
    const char *raw = "GET https://evil.example/users/x HTTP/1.1\r\nHost: evil.example\r\n"
                      "Version: 2021-07-28\r\n\r\n";
    expect_refused(raw, strlen(raw), 400, "origin form");
}
END_TEST

START_TEST(test_missing_and_duplicate_host_refused)
{
    const char *raw = "GET /users/" SEED_USER " HTTP/1.1\r\nVersion: 2021-07-28\r\n\r\n";
    expect_refused(raw, strlen(raw), 400, "missing Host");
    raw = GET_OK "Host: other\r\n\r\n";
    expect_refused(raw, strlen(raw), 400, "more than one Host");
}
END_TEST

START_TEST(test_head_too_large_is_431_and_closed)
{
    char raw[8192];
    int n = snprintf(raw, sizeof raw, GET_OK "X-Pad: ");
    memset(raw + n, 'a', 5000);
    n += 5000;
    n += snprintf(raw + n, sizeof raw - (size_t)n, "\r\n\r\n");
    expect_refused(raw, (size_t)n, 431, "request header fields too large");
}
END_TEST

START_TEST(test_body_too_large_is_413_before_the_body)
{
    /* only the head is sent: the refusal must not wait for 3000 bytes that never come */
    const char *raw = "POST /users/ HTTP/1.1\r\nHost: l\r\nVersion: 2021-07-28\r\n"
                      "Content-Type: application/json\r\nContent-Length: 3000\r\n\r\n";
    expect_refused(raw, strlen(raw), 413, "request entity too large");
}
END_TEST

START_TEST(test_plain_http_on_tls_port_gets_no_http_response)
{
    int fd = loopback_connect(E.gateway.port);
    ck_assert_int_ge(fd, 0);
    const char *raw = GET_OK "\r\n";
    ck_assert_int_eq((int)write(fd, raw, strlen(raw)), (int)strlen(raw));
    char buf[512] = {0};
    struct pollfd p = {.fd = fd, .events = POLLIN};
    size_t got = 0;
    while (poll(&p, 1, 3000) == 1) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    ck_assert_msg(strstr(buf, "HTTP/") == NULL, "plain text answer on the TLS port: %s", buf);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_tls_1_1_refused_and_1_2_accepted)
{
    char ca[600];
    ca_path(ca, sizeof ca);
    struct tls_client c;
    ck_assert_int_ne(tls_connect(&c, E.gateway.port, TLS1_1_VERSION, NULL, NULL, ca), 0);
    tls_close(&c);
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, TLS1_2_VERSION, NULL, NULL, ca), 0);
    ck_assert_str_eq(SSL_get_version(c.ssl), "TLSv1.2");
    tls_close(&c);
}
END_TEST

START_TEST(test_slow_head_cut_off_at_the_header_deadline)
{
    char ca[600];
    ca_path(ca, sizeof ca);
    struct tls_client c;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    const char *raw = GET_OK "\r\n";
    long t0 = now_ms(), cut = -1;
    for (size_t i = 0; i < strlen(raw); i++) {
        if (tls_send(&c, raw + i, 1) != 0) {
            cut = now_ms() - t0;
            break;
        }
        int st = tls_wait_closed(&c, 1000); /* one byte a second */
        ck_assert_msg(st != 2, "a slow head got an answer");
        if (st == 1) {
            cut = now_ms() - t0;
            break;
        }
    }
    tls_close(&c);
    ck_assert_msg(cut >= 0, "never cut off");
    /* the deadline is 1.5 s from the connection, whatever the client keeps sending */
    ck_assert_msg(cut >= 1300 && cut <= 3500, "cut off after %ld ms", cut);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_slow_body_cut_off_at_the_body_deadline)
{
    char ca[600];
    ca_path(ca, sizeof ca);
    struct tls_client c;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    const char *head = "POST /users/ HTTP/1.1\r\nHost: l\r\nVersion: 2021-07-28\r\n"
                       "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    ck_assert_int_eq(tls_send(&c, head, strlen(head)), 0);
    long t0 = now_ms(), cut = -1;
    for (int i = 0; i < 20; i++) {
        int st = tls_wait_closed(&c, 500);
        ck_assert_msg(st != 2, "a slow body got an answer");
        if (st == 1 || tls_send(&c, " ", 1) != 0) {
            cut = now_ms() - t0;
            break;
        }
    }
    tls_close(&c);
    ck_assert_msg(cut >= 1200 && cut <= 3500, "cut off after %ld ms", cut);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_idle_keep_alive_connection_closed)
{
    char ca[600];
    ca_path(ca, sizeof ca);
    struct tls_client c;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    ck_assert_int_eq(tls_send(&c, raw, strlen(raw)), 0);
    free(raw);
    struct response r;
    ck_assert_int_eq(tls_read_response(&c, &r, 5000, 0), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert(!r.closed);
    response_free(&r);
    long t0 = now_ms();
    ck_assert_int_eq(tls_wait_closed(&c, 4000), 1);
    long idle = now_ms() - t0;
    ck_assert_msg(idle >= 800 && idle <= 3000, "idle connection closed after %ld ms", idle);
    tls_close(&c);
}
END_TEST

/* Milliseconds until the gateway closes fd (reads skipped), or -1 after limit_ms. */
static long ms_until_closed(int fd, int limit_ms)
{
    long t0 = now_ms();
    char buf[4096];
    for (;;) {
        long left = limit_ms - (now_ms() - t0);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) != 1)
            return -1;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return now_ms() - t0;
    }
}

START_TEST(test_stalled_tls_handshake_cut_off_at_the_header_deadline)
{
    /* no ClientHello at all */
    int fd = loopback_connect(E.gateway.port);
    ck_assert_int_ge(fd, 0);
    long cut = ms_until_closed(fd, 6000);
    close(fd);
    ck_assert_msg(cut >= 1300 && cut <= 3500, "a silent connection closed after %ld ms", cut);
    /* a ClientHello record header promising 512 bytes, ten of them, then nothing */
    fd = loopback_connect(E.gateway.port);
    ck_assert_int_ge(fd, 0);
    static const unsigned char part[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01,
                                         0xfc, 0x03, 0x03, 0,    0,    0,    0};
    ck_assert_int_eq((int)write(fd, part, sizeof part), (int)sizeof part);
    cut = ms_until_closed(fd, 6000);
    close(fd);
    ck_assert_msg(cut >= 1300 && cut <= 3500, "a stalled handshake closed after %ld ms", cut);
    /* the gateway serves the next caller */
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
}
END_TEST

/* A client that goes away in the middle of its head or its body: nothing reaches the upstream,
 * nothing is left behind (the teardown's clean stop, under the sanitizers or valgrind), and
 * the next caller is served. */
START_TEST(test_client_gone_mid_head_and_mid_body)
{
    char ca[600];
    ca_path(ca, sizeof ca);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    struct tls_client c;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    ck_assert_int_eq(tls_send(&c, raw, strlen(raw) / 2), 0);
    usleep(100000);
    tls_close(&c);
    const char *body = "{\"companyId\":\"" COMPANY "\",\"firstName\":\"Half\"";
    char head[256];
    snprintf(head, sizeof head,
             "POST /users/ HTTP/1.1\r\nHost: l\r\nVersion: 2021-07-28\r\n"
             "Content-Type: application/json\r\nContent-Length: 400\r\n");
    char *post = NULL;
    ck_assert_int_ge(asprintf(&post, "%sAuthorization: Bearer %s\r\n\r\n%s", head, E.token, body),
                     0);
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    ck_assert_int_eq(tls_send(&c, post, strlen(post)), 0);
    usleep(100000);
    tls_close(&c);
    usleep(200000);
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 1); /* only the last request */
    free(post);
    free(raw);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("edge");
    TCase *t = tcase_create("framing");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_duplicate_content_length_refused_and_closed);
    tcase_add_test(t, test_transfer_encoding_with_content_length_refused);
    tcase_add_test(t, test_chunked_request_refused);
    tcase_add_test(t, test_header_name_with_space_refused);
    tcase_add_test(t, test_bare_lf_refused);
    tcase_add_test(t, test_nul_in_head_refused);
    tcase_add_test(t, test_obs_fold_refused);
    tcase_add_test(t, test_absolute_form_target_refused);
    tcase_add_test(t, test_missing_and_duplicate_host_refused);
    tcase_add_test(t, test_head_too_large_is_431_and_closed);
    tcase_add_test(t, test_body_too_large_is_413_before_the_body);
    tcase_add_test(t, test_plain_http_on_tls_port_gets_no_http_response);
    tcase_add_test(t, test_tls_1_1_refused_and_1_2_accepted);
    if (!under_valgrind()) {
        /* windows of a few hundred ms around a deadline: memcheck's slowdown of the handshake
         * shifts them (the native builds run them) */
        tcase_add_test(t, test_slow_head_cut_off_at_the_header_deadline);
        tcase_add_test(t, test_slow_body_cut_off_at_the_body_deadline);
        tcase_add_test(t, test_idle_keep_alive_connection_closed);
        tcase_add_test(t, test_stalled_tls_handshake_cut_off_at_the_header_deadline);
    }
    tcase_add_test(t, test_client_gone_mid_head_and_mid_body);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
