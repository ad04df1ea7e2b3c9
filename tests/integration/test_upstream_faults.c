/* A misbehaving upstream: the gateway in front of a scripted TLS server (this file's, on
 * loopback, with the sandbox's certificate) that answers each request with fixed bytes: cut
 * mid-body, oversized, not JSON, the wrong content type, broken chunking, ambiguous framing,
 * too slow, bytes past the answer. Each must give the caller a clean 502/504 in the upstream's
 * error shape and leave the gateway sound: the next request is served, and the gateway stops
 * cleanly (under the sanitizer build, a leak or an invalid access fails the test there). */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "harness.h"

/* ---- the scripted upstream ---- */

struct script {
    const char *first;  /* sent after the first request, when given */
    const char *answer; /* sent after each (other) request */
    size_t split;       /* > 0: answer[0..split) first, then pause_ms, then the rest */
    int pause_ms;
    bool close_after; /* close (without close_notify) after the answer */
};

#define MAX_CONNS 16
static struct {
    int lfd, port;
    SSL_CTX *ctx;
    struct script sc;
    pthread_t acceptor, conn[MAX_CONNS];
    atomic_int nconns, requests;
    atomic_bool stop;
} U;

static struct env E;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads one request (head and Content-Length body). Returns false when the peer is gone. */
static bool read_request(SSL *ssl)
{
    char buf[16384];
    size_t n = 0;
    char *end = NULL;
    buf[0] = '\0';
    while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
        if (n >= sizeof buf - 1)
            return false;
        int r = SSL_read(ssl, buf + n, (int)(sizeof buf - 1 - n));
        if (r <= 0)
            return false;
        n += (size_t)r;
        buf[n] = '\0';
    }
    size_t want = 0;
    for (char *p = buf; p < end; p = strstr(p, "\r\n") + 2)
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            want = strtoul(p + 15, NULL, 10);
    size_t have = n - (size_t)(end + 4 - buf);
    while (have < want) {
        int r = SSL_read(ssl, buf, (int)sizeof buf);
        if (r <= 0)
            return false;
        have += (size_t)r;
    }
    return true;
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(U.ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
        while (!U.stop && read_request(ssl)) {
            int k = ++U.requests;
            const char *a = k == 1 && U.sc.first ? U.sc.first : U.sc.answer;
            size_t len = strlen(a), first = U.sc.split ? U.sc.split : len;
            if (SSL_write(ssl, a, (int)first) <= 0)
                break;
            if (first < len) {
                sleep_ms(U.sc.pause_ms);
                if (SSL_write(ssl, a + first, (int)(len - first)) <= 0)
                    break;
            }
            if (U.sc.close_after)
                break;
        }
    }
    SSL_free(ssl); /* no SSL_shutdown: an abrupt close, as a crashed upstream would */
    close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    while (!U.stop) {
        struct pollfd p = {.fd = U.lfd, .events = POLLIN};
        if (poll(&p, 1, 50) != 1)
            continue;
        int fd = accept(U.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int i = U.nconns;
        if (i >= MAX_CONNS) {
            close(fd);
            continue;
        }
        if (pthread_create(&U.conn[i], NULL, serve, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        U.nconns = i + 1;
    }
    return NULL;
}

static void upstream_start(void)
{
    U.stop = false;
    U.nconns = U.requests = 0;
    U.ctx = SSL_CTX_new(TLS_server_method());
    ck_assert_ptr_nonnull(U.ctx);
    ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(U.ctx, GW_CERTS_DIR "/sandbox.crt"), 1);
    ck_assert_int_eq(
        SSL_CTX_use_PrivateKey_file(U.ctx, GW_CERTS_DIR "/sandbox.key", SSL_FILETYPE_PEM), 1);
    U.lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(U.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(0);
    ck_assert_int_eq(bind(U.lfd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    ck_assert_int_eq(getsockname(U.lfd, (struct sockaddr *)&a, &al), 0);
    U.port = ntohs(a.sin_port);
    ck_assert_int_eq(listen(U.lfd, 64), 0);
    ck_assert_int_eq(pthread_create(&U.acceptor, NULL, acceptor, NULL), 0);
}

static void upstream_stop(void)
{
    U.stop = true;
    pthread_join(U.acceptor, NULL);
    for (int i = 0; i < U.nconns; i++)
        pthread_join(U.conn[i], NULL);
    close(U.lfd);
    SSL_CTX_free(U.ctx);
}

static void setup(void)
{
    upstream_start();
    /* one worker: the pool the second request of a test reuses is the first one's */
    env_start(&E, &(struct env_opts){.no_sandbox = true,
                                     .upstream_port = U.port,
                                     .workers = 1,
                                     .upstream_json = "\"timeout_ms\": 1500"});
}

static void teardown(void)
{
    env_stop(&E);
    upstream_stop();
}

#define JSON_HEAD "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
#define USER_BODY "{\"id\":\"" SEED_USER "\",\"name\":\"Ada\"}"
#define GOOD_ANSWER JSON_HEAD "Content-Length: 42\r\n\r\n" USER_BODY

/* The caller's GET gets status with message in the body, in the upstream's error shape. */
static void expect_get(int status, const char *message)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_msg(r.status == status, "got %d, want %d: %s", r.status, status, r.body);
    if (message) {
        ck_assert_msg(strstr(r.body, message) != NULL, "body %s lacks \"%s\"", r.body, message);
        char want[64];
        snprintf(want, sizeof want, "{\"statusCode\":%d,", status);
        ck_assert_msg(strncmp(r.body, want, strlen(want)) == 0, "not the error shape: %s", r.body);
        const char *ct = response_header(&r, "Content-Type");
        ck_assert_msg(ct && strncmp(ct, "application/json", 16) == 0, "Content-Type %s", ct);
    }
    response_free(&r);
}

/* After the fault, the same gateway serves a good answer. */
static void then_served(void)
{
    U.sc = (struct script){.answer = GOOD_ANSWER};
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_msg(r.status == 200, "after the fault: %d %s", r.status, r.body);
    ck_assert_str_eq(r.body, USER_BODY);
    response_free(&r);
}

START_TEST(test_good_answer_passed_back)
{
    /* the scripted upstream itself: a well-formed answer goes through unchanged */
    U.sc = (struct script){.answer = GOOD_ANSWER};
    then_served();
    ck_assert_int_eq(U.requests, 1);
}
END_TEST

START_TEST(test_answer_cut_mid_body_is_502)
{
    U.sc = (struct script){.answer = JSON_HEAD "Content-Length: 100\r\n\r\n{\"id\":\"abc",
                           .close_after = true};
    expect_get(502, "before the answer was complete");
    ck_assert_int_eq(U.requests, 1); /* bytes arrived: not retried */
    then_served();
}
END_TEST

START_TEST(test_answer_cut_in_the_head_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 200 OK\r\nContent-Ty", .close_after = true};
    expect_get(502, "before the answer was complete");
    then_served();
}
END_TEST

START_TEST(test_oversized_content_length_is_502)
{
    U.sc = (struct script){.answer = JSON_HEAD "Content-Length: 17000000\r\n\r\n{\"id\":"};
    expect_get(502, "oversized");
    then_served();
}
END_TEST

START_TEST(test_oversized_chunk_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n1000001\r\n{\"id\":"};
    expect_get(502, "oversized upstream chunk");
    then_served();
}
END_TEST

START_TEST(test_invalid_json_is_502)
{
    U.sc = (struct script){.answer = JSON_HEAD "Content-Length: 8\r\n\r\n{\"id\":\"x"};
    expect_get(502, "not JSON");
    then_served();
}
END_TEST

START_TEST(test_json_with_bytes_after_the_value_is_502)
{
    U.sc = (struct script){.answer = JSON_HEAD "Content-Length: 4\r\n\r\n{}{}"};
    expect_get(502, "not JSON");
    then_served();
}
END_TEST

START_TEST(test_wrong_content_type_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                     "Content-Length: 13\r\n\r\n<html></html>"};
    expect_get(502, "text/html");
    then_served();
}
END_TEST

START_TEST(test_missing_content_type_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"};
    expect_get(502, "Content-Type");
    then_served();
}
END_TEST

START_TEST(test_json_error_answer_passed_back)
{
    /* an upstream error in JSON is the upstream's answer: passed back as it is */
    U.sc = (struct script){.answer = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; "
                                     "charset=utf-8\r\nContent-Length: 42\r\n\r\n"
                                     "{\"statusCode\":400,\"message\":\"Bad Request\"}"};
    expect_get(400, NULL);
    then_served();
}
END_TEST

/* An error status from a hop in between (an HTML 503 page, a plain-text 429) keeps its status
 * and its rate-limit headers, so callers still back off; the body becomes JSON in the
 * upstream's error shape. */
START_TEST(test_html_error_page_keeps_its_status_with_a_json_body)
{
    U.sc =
        (struct script){.answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n"
                                  "Content-Length: 22\r\n\r\n<h1>maintenance</h1>\r\n"};
    expect_get(503, "text/html");
    then_served();
}
END_TEST

START_TEST(test_plain_text_429_keeps_its_status_and_headers)
{
    U.sc =
        (struct script){.answer = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n"
                                  "Retry-After: 7\r\nX-RateLimit-Remaining: 0\r\n"
                                  "Content-Length: 4\r\n\r\nslow"};
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 429);
    ck_assert_str_eq(response_header(&r, "Retry-After"), "7");
    ck_assert_str_eq(response_header(&r, "X-RateLimit-Remaining"), "0");
    ck_assert_msg(strncmp(r.body, "{\"statusCode\":429,\"message\":", 28) == 0, "%s", r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "text/plain"));
    response_free(&r);
    then_served();
}
END_TEST

/* A change the upstream reports done is passed through even when its body is not JSON: the
 * caller must learn it happened (a 502 would invite a retry that creates the user twice). */
START_TEST(test_create_done_with_a_body_that_is_not_json_passed_through)
{
    U.sc = (struct script){.answer = "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 7\r\n\r\ncreated"};
    const char *body = "{\"companyId\":\"" COMPANY "\",\"firstName\":\"Ada\",\"lastName\":\"L\","
                       "\"email\":\"ada.l@example.com\",\"password\":\"Str0ng!Passw0rd\","
                       "\"type\":\"account\",\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"]}";
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, body, &r), 0);
    ck_assert_msg(r.status == 201, "%d %s", r.status, r.body);
    ck_assert_str_eq(r.body, "created");
    response_free(&r);
    ck_assert_int_eq(U.requests, 1);
    then_served();
}
END_TEST

/* The protocol errors counted so far (ghl_gateway_upstream_errors_total{kind="protocol"}). */
static long protocol_errors(void)
{
    char *m = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    const char *at = strstr(m, "ghl_gateway_upstream_errors_total{kind=\"protocol\"} ");
    ck_assert_msg(at != NULL, "no protocol error series");
    long n = strtol(at + strlen("ghl_gateway_upstream_errors_total{kind=\"protocol\"} "), NULL, 10);
    free(m);
    return n;
}

/* Sends method path (body) and expects the upstream's status and body as they came, one more
 * protocol error counted, and the log saying why. */
static void expect_passed_as_it_came(const char *method, const char *path, const char *body,
                                     int status, const char *answer_body)
{
    long before = protocol_errors();
    struct response r;
    ck_assert_int_eq(send_req(&E, method, path, NULL, body, &r), 0);
    ck_assert_msg(r.status == status, "%s %s: %d %s", method, path, r.status, r.body);
    ck_assert_str_eq(r.body, answer_body);
    response_free(&r);
    ck_assert_int_eq(protocol_errors(), before + 1);
    char *log = wait_for_text(E.gateway.log, "the change is done", 5000);
    ck_assert_msg(strstr(log, "the change is done") != NULL, "not logged: %s", log);
    free(log);
}

#define CREATE_BODY                                                                                \
    "{\"companyId\":\"" COMPANY "\",\"firstName\":\"Ada\",\"lastName\":\"L\","                     \
    "\"email\":\"ada.l@example.com\",\"password\":\"Str0ng!Passw0rd\","                            \
    "\"type\":\"account\",\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"]}"
#define TARGET_BODY                                                                                \
    "{\"id\":\"" SEED_USER "\",\"roles\":{\"type\":\"account\",\"role\":\"user\","                 \
    "\"locationIds\":[\"" LOC1 "\"]},\"scopes\":[]}"
#define TARGET_ANSWER JSON_HEAD "Content-Length: 121\r\n\r\n" TARGET_BODY

/* With the audit file off, a change the upstream reports done with a body that is not JSON
 * is passed back as it came (it used to be a 502, inviting a retry that repeats the change). */
START_TEST(test_change_done_passed_through_with_the_audit_file_off)
{
    env_stop(&E);
    env_start(&E, &(struct env_opts){.no_sandbox = true,
                                     .upstream_port = U.port,
                                     .workers = 1,
                                     .gateway_json = "\"audit\": { \"file\": null }"});
    U.sc = (struct script){.answer = "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 7\r\n\r\ncreated"};
    expect_passed_as_it_came("POST", "/users/", CREATE_BODY, 201, "created");
    ck_assert_int_eq(U.requests, 1);
    then_served();
}
END_TEST

/* Under a policy with read rules, a change done whose answer the rules cannot read (not JSON,
 * or not of the op's shape) is passed back as it came, unfiltered: create, update, delete. */
START_TEST(test_change_done_passed_through_under_read_rules)
{
    env_stop(&E);
    env_start(&E, &(struct env_opts){
                      .no_sandbox = true,
                      .upstream_port = U.port,
                      .workers = 1,
                      .policies = {{"redacting.json",
                                    "{ \"name\": \"redacting\", \"subjects\": [ { \"sub\": "
                                    "\"svc-test\" } ], \"operations\": [\"create-user\", "
                                    "\"update-user\", \"delete-user\", \"get-user\"], "
                                    "\"companies\": \"*\", \"locations\": \"*\", \"grant\": { "
                                    "\"types\": [\"account\"], \"roles\": [\"user\"], "
                                    "\"scopes\": [\"*\"], \"scopes_assigned_to_only\": [\"*\"] }, "
                                    "\"reads\": { \"redact\": [\"phone\"] } }"}}});
    U.sc = (struct script){.answer = JSON_HEAD "Content-Length: 6\r\n\r\n{\"id\":"};
    expect_passed_as_it_came("POST", "/users/", CREATE_BODY, 200, "{\"id\":");
    U.requests = 0;
    U.sc = (struct script){.first = TARGET_ANSWER,
                           .answer = JSON_HEAD "Content-Length: 9\r\n\r\n[\"a\",\"b\"]"};
    expect_passed_as_it_came("PUT", "/users/" SEED_USER, "{\"firstName\":\"Ada\"}", 200,
                             "[\"a\",\"b\"]");
    ck_assert_int_eq(U.requests, 2); /* the target's GET, then the PUT */
    U.requests = 0;
    U.sc = (struct script){.first = TARGET_ANSWER,
                           .answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 6\r\n\r\nqueued"};
    expect_passed_as_it_came("DELETE", "/users/" SEED_USER, NULL, 200, "queued");
    ck_assert_int_eq(U.requests, 2);
    then_served();
}
END_TEST

START_TEST(test_bad_chunk_size_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"};
    expect_get(502, "chunk");
    then_served();
}
END_TEST

START_TEST(test_chunk_without_crlf_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n"};
    expect_get(502, NULL);
    then_served();
}
END_TEST

START_TEST(test_content_length_and_chunked_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     "2\r\n{}\r\n0\r\n\r\n"};
    expect_get(502, NULL);
    then_served();
}
END_TEST

START_TEST(test_two_content_lengths_is_502)
{
    U.sc =
        (struct script){.answer = JSON_HEAD "Content-Length: 2\r\nContent-Length: 4\r\n\r\n{}{}"};
    expect_get(502, NULL);
    then_served();
}
END_TEST

START_TEST(test_answer_without_length_is_502)
{
    U.sc = (struct script){.answer = JSON_HEAD "\r\n{}", .close_after = true};
    expect_get(502, NULL);
    then_served();
}
END_TEST

START_TEST(test_garbage_status_line_is_502)
{
    U.sc = (struct script){.answer = "HTTP/1.1 2x0 OK\r\nContent-Type: application/json\r\n"
                                     "Content-Length: 2\r\n\r\n{}"};
    expect_get(502, NULL);
    then_served();
}
END_TEST

START_TEST(test_slow_body_is_504)
{
    /* the head at once, the body after the deadline (1.5 s) */
    U.sc =
        (struct script){.answer = GOOD_ANSWER, .split = strlen(JSON_HEAD) + 10, .pause_ms = 3000};
    expect_get(504, "upstream timed out");
    then_served();
}
END_TEST

START_TEST(test_slow_but_in_time_is_served)
{
    U.sc = (struct script){.answer = GOOD_ANSWER, .split = strlen(JSON_HEAD) + 10, .pause_ms = 300};
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, USER_BODY);
    response_free(&r);
}
END_TEST

START_TEST(test_bytes_after_the_answer_are_not_a_second_answer)
{
    /* a second, different answer queued behind the first: the connection must not go back to
     * the pool, or the next caller would get "Eve" */
    U.sc = (struct script){.answer = GOOD_ANSWER JSON_HEAD "Content-Length: 14\r\n\r\n"
                                                           "{\"name\":\"Eve\"}"};
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, USER_BODY);
    response_free(&r);
    then_served();
    ck_assert_int_eq(U.requests, 2);
    ck_assert_int_eq(U.nconns, 2); /* the second request on a new connection */
}
END_TEST

START_TEST(test_pooled_connection_reused_after_a_good_answer)
{
    /* the counterpart of the test above: with nothing after the answer, the connection is
     * reused */
    U.sc = (struct script){.answer = GOOD_ANSWER};
    then_served();
    then_served();
    ck_assert_int_eq(U.requests, 2);
    ck_assert_int_eq(U.nconns, 1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("upstream_faults");
    TCase *t = tcase_create("faults");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_good_answer_passed_back);
    tcase_add_test(t, test_answer_cut_mid_body_is_502);
    tcase_add_test(t, test_answer_cut_in_the_head_is_502);
    tcase_add_test(t, test_oversized_content_length_is_502);
    tcase_add_test(t, test_oversized_chunk_is_502);
    tcase_add_test(t, test_invalid_json_is_502);
    tcase_add_test(t, test_json_with_bytes_after_the_value_is_502);
    tcase_add_test(t, test_wrong_content_type_is_502);
    tcase_add_test(t, test_missing_content_type_is_502);
    tcase_add_test(t, test_json_error_answer_passed_back);
    tcase_add_test(t, test_html_error_page_keeps_its_status_with_a_json_body);
    tcase_add_test(t, test_plain_text_429_keeps_its_status_and_headers);
    tcase_add_test(t, test_create_done_with_a_body_that_is_not_json_passed_through);
    tcase_add_test(t, test_change_done_passed_through_with_the_audit_file_off);
    tcase_add_test(t, test_change_done_passed_through_under_read_rules);
    tcase_add_test(t, test_bad_chunk_size_is_502);
    tcase_add_test(t, test_chunk_without_crlf_is_502);
    tcase_add_test(t, test_content_length_and_chunked_is_502);
    tcase_add_test(t, test_two_content_lengths_is_502);
    tcase_add_test(t, test_answer_without_length_is_502);
    tcase_add_test(t, test_garbage_status_line_is_502);
    tcase_add_test(t, test_slow_body_is_504);
    tcase_add_test(t, test_slow_but_in_time_is_served);
    tcase_add_test(t, test_bytes_after_the_answer_are_not_a_second_answer);
    tcase_add_test(t, test_pooled_connection_reused_after_a_good_answer);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
