/* The upstream side: failures map to 502/504 with the SPEC bodies, verified TLS, the single
 * GET retry, mutual TLS at the edge, and a graceful SIGTERM. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "harness.h"

static struct env E;

static void teardown(void)
{
    env_stop(&E);
}

START_TEST(test_upstream_down_is_502)
{
    env_start(&E, &(struct env_opts){.no_sandbox = true,
                                     .upstream_json = "\"connect_timeout_ms\": 1000"});
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 502);
    ck_assert_msg(strstr(r.body, "\"statusCode\":502,\"message\":\"cannot connect to upstream") !=
                      NULL,
                  "%s", r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "\"error\":\"Bad Gateway\""));
    response_free(&r);
}
END_TEST

START_TEST(test_slow_upstream_is_504)
{
    /* The sandbox answers only after delay_ms; the 504 must come at the 500 ms deadline, well
     * before that. Under memcheck the client handshake, the token check and the upstream
     * handshake alone take a second or more, so the sandbox waits longer there: the bound
     * stays "before the upstream would have answered". */
    const long delay_ms = under_valgrind() ? 10000 : 2000;
    char sandbox_args[64];
    snprintf(sandbox_args, sizeof sandbox_args, "--delay-ms %ld", delay_ms);
    env_start(&E, &(struct env_opts){.sandbox_args = sandbox_args,
                                     .upstream_json = "\"timeout_ms\": 500"});
    struct response r;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ck_assert_int_eq(r.status, 504);
    ck_assert_str_eq(r.body, "{\"statusCode\":504,\"message\":\"upstream timed out\","
                             "\"error\":\"Gateway Timeout\"}");
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    ck_assert_msg(ms >= 500, "504 came after %ld ms, before the 500 ms deadline", ms);
    ck_assert_msg(ms < delay_ms - 100, "504 came after %ld ms, not at the 500 ms deadline", ms);
    response_free(&r);
}
END_TEST

START_TEST(test_wrong_upstream_certificate_name_is_502)
{
    env_start(&E, &(struct env_opts){.sandbox_cert = "wrongname"});
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 502);
    ck_assert_msg(strstr(r.body, "certificate") != NULL, "%s", r.body);
    response_free(&r);
    /* nothing was sent over the unverified connection */
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_upstream_error_status_passed_back)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--fail-every 1"});
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 500);
    ck_assert_str_eq(r.body, "{\"statusCode\":500,\"message\":\"Internal server error\"}");
    ck_assert_ptr_nonnull(response_header(&r, "X-RateLimit-Max"));
    response_free(&r);
}
END_TEST

/* The sandbox closes every second request without answering: the gateway's second GET lands
 * on a kept-alive connection that dies, and is retried once on a new one. */
START_TEST(test_get_retried_once_when_a_reused_connection_closes)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--drop-every 2", .workers = 1});
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 3);
}
END_TEST

/* A PUT is fetched first (its target GET may be retried), but is itself never sent twice. */
START_TEST(test_put_not_retried)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--drop-every 2", .workers = 1});
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    ck_assert_int_eq(send_req(&E, "PUT", "/users/" SEED_USER, NULL, "{\"firstName\":\"X\"}", &r),
                     0);
    ck_assert_int_eq(r.status, 502);
    response_free(&r);
    /* GET; the target GET of the PUT (dropped, then retried); the PUT (dropped, not retried) */
    ck_assert_int_eq(journal_count(&E), 4);
    static const char *const methods[] = {"GET", "GET", "GET", "PUT"};
    for (int i = 0; i < 4; i++) {
        cJSON *j = journal_entry(&E, i);
        ck_assert_ptr_nonnull(j);
        ck_assert_str_eq(cJSON_GetObjectItem(j, "method")->valuestring, methods[i]);
        cJSON_Delete(j);
    }
}
END_TEST

START_TEST(test_sigterm_lets_the_request_in_flight_finish)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--delay-ms 1000"});
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    struct tls_client c;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    ck_assert_int_eq(tls_send(&c, raw, strlen(raw)), 0);
    usleep(300000);
    pid_t gw = E.gateway.pid;
    kill(gw, SIGTERM);
    usleep(200000);
    /* no new connections once stopping */
    struct tls_client c2;
    ck_assert_int_ne(tls_connect(&c2, E.gateway.port, 0, NULL, NULL, ca), 0);
    tls_close(&c2);
    struct response r;
    ck_assert_int_eq(tls_read_response(&c, &r, 5000, 500), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, SEED_USER));
    ck_assert_str_eq(response_header(&r, "Connection"), "close");
    response_free(&r);
    tls_close(&c);
    ck_assert_int_eq(env_stop_gateway(&E, 5000), 0);
    free(raw);
}
END_TEST

START_TEST(test_mtls_requires_a_trusted_client_certificate)
{
    char tls[700];
    snprintf(tls, sizeof tls, "\"client_ca\": \"%s/ca.crt\"", GW_CERTS_DIR);
    env_start(&E, &(struct env_opts){.tls_json = tls});
    char ca[600], crt[600], key[600], rcrt[600], rkey[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    snprintf(crt, sizeof crt, "%s/client.crt", E.certs);
    snprintf(key, sizeof key, "%s/client.key", E.certs);
    snprintf(rcrt, sizeof rcrt, "%s/rogue-client.crt", E.certs);
    snprintf(rkey, sizeof rkey, "%s/rogue-client.key", E.certs);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    struct response r;
    struct tls_client c;
    /* with the organisation's client certificate */
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, crt, key, ca), 0);
    ck_assert_int_eq(tls_send(&c, raw, strlen(raw)), 0);
    ck_assert_int_eq(tls_read_response(&c, &r, 5000, 0), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    tls_close(&c);
    /* without one, and with one from another CA: no HTTP answer (TLS 1.3 reports it late) */
    const char *certs[][2] = {{NULL, NULL}, {rcrt, rkey}};
    for (int i = 0; i < 2; i++) {
        bool answered = tls_connect(&c, E.gateway.port, 0, certs[i][0], certs[i][1], ca) == 0 &&
                        tls_send(&c, raw, strlen(raw)) == 0 &&
                        tls_read_response(&c, &r, 3000, 0) == 0;
        ck_assert_msg(!answered, "case %d got an HTTP answer", i);
        tls_close(&c);
    }
    ck_assert_int_eq(journal_count(&E), 1);
    free(raw);
}
END_TEST

/* The client gives up while the upstream is still answering: the gateway must neither crash
 * nor leak when the answer arrives for a connection that is gone (the sanitizer build checks
 * the exit status), and it keeps serving. */
START_TEST(test_client_gone_while_the_upstream_answers)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--delay-ms 700", .workers = 1});
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    for (int i = 0; i < 3; i++) {
        struct tls_client c;
        ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
        ck_assert_int_eq(tls_send(&c, raw, strlen(raw)), 0);
        usleep(100000);
        tls_close(&c);
    }
    usleep(1500000); /* the answers arrive for connections that are gone */
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 4);
    char *log = slurp(E.access_log);
    int lines = 0;
    for (char *p = log; *p; p++)
        lines += *p == '\n';
    free(log);
    ck_assert_int_eq(lines, 4); /* one line per request, the abandoned ones too */
    free(raw);
}
END_TEST

/* limits.max_connections: past it, new connections wait (not served, not refused); the ones
 * already open keep being served, and a freed slot lets a waiting one in. */
START_TEST(test_max_connections_holds_new_connections)
{
    env_start(&E, &(struct env_opts){.workers = 1,
                                     .gateway_json = "\"limits\": { \"max_connections\": 2 }"});
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    struct tls_client a, b;
    ck_assert_int_eq(tls_connect(&a, E.gateway.port, 0, NULL, NULL, ca), 0);
    ck_assert_int_eq(tls_connect(&b, E.gateway.port, 0, NULL, NULL, ca), 0);
    /* the third TCP connection lands in the backlog; its TLS handshake is not answered */
    int fd = loopback_connect(E.gateway.port);
    ck_assert_int_ge(fd, 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    ck_assert_int_le(SSL_connect(ssl), 0); /* ClientHello sent, no answer yet */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 700), 0);
    /* the two admitted connections are served meanwhile */
    struct response r;
    ck_assert_int_eq(tls_send(&a, raw, strlen(raw)), 0);
    ck_assert_int_eq(tls_read_response(&a, &r, 5000, 0), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    /* one leaves: the waiting connection gets its handshake */
    tls_close(&a);
    ck_assert_int_eq(poll(&p, 1, 3000), 1);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    tls_close(&b);
    free(raw);
}
END_TEST

/* Thousands of idle connections past limits.max_connections: the gateway takes no more than
 * its limit (the rest wait in the kernel's backlog, or are refused by it), and the caller it
 * already serves goes on being served meanwhile; when the flood leaves, a new caller is
 * served. The admin listener answers throughout. */
START_TEST(test_thousands_of_idle_connections_past_max_connections)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    enum { FLOOD = 3000 };
    ck_assert_msg(rl.rlim_cur > FLOOD + 200, "descriptor limit %lu", (unsigned long)rl.rlim_cur);
    env_start(&E, &(struct env_opts){.workers = 1,
                                     .gateway_json = "\"limits\": { \"max_connections\": 100, "
                                                     "\"header_timeout_ms\": 30000 }"});
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    char *raw = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    struct tls_client a;
    ck_assert_int_eq(tls_connect(&a, E.gateway.port, 0, NULL, NULL, ca), 0);
    struct response r;
    ck_assert_int_eq(tls_send(&a, raw, strlen(raw)), 0);
    ck_assert_int_eq(tls_read_response(&a, &r, 5000, 0), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    static int flood[FLOOD];
    struct sockaddr_in sa = loopback(E.gateway.port);
    int opened = 0;
    for (int i = 0; i < FLOOD; i++) {
        flood[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(flood[i], 0);
        if (connect(flood[i], (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EINPROGRESS)
            opened++;
    }
    ck_assert_int_gt(opened, 1000);
    usleep(500000);
    /* the served caller: three more requests on its connection, each answered */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tls_send(&a, raw, strlen(raw)), 0);
        ck_assert_int_eq(tls_read_response(&a, &r, 5000, 0), 0);
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    char *metrics = NULL;
    ck_assert_int_eq(admin_get(&E, "/metrics", &metrics), 200);
    /* open connections never pass the limit */
    const char *m = strstr(metrics, "\nghl_gateway_connections_active ");
    ck_assert_ptr_nonnull(m);
    long open_now = strtol(m + strlen("\nghl_gateway_connections_active "), NULL, 10);
    ck_assert_msg(open_now >= 1 && open_now <= 100, "%ld connections open", open_now);
    free(metrics);
    for (int i = 0; i < FLOOD; i++)
        close(flood[i]);
    tls_close(&a);
    /* a new caller after the flood */
    for (int i = 0; i < 50; i++) {
        if (send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r) == 0 && r.status == 200)
            break;
        response_free(&r);
        usleep(100000);
    }
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    free(raw);
}
END_TEST

/* A reply still leaving when SIGTERM arrives is sent whole before the connection closes. */
START_TEST(test_sigterm_does_not_cut_a_reply_being_sent)
{
    env_start(&E, &(struct env_opts){.extra_users = 3000, .workers = 1});
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    struct tls_client c;
    tls_client_rcvbuf = 4096; /* so that the reply stays queued in the gateway */
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    tls_client_rcvbuf = 0;
    char *raw = raw_request(&E, "GET", "/users/search?companyId=" COMPANY "&limit=5000", NULL);
    ck_assert_int_eq(tls_send(&c, raw, strlen(raw)), 0);
    usleep(1500000); /* the answer (megabytes) is queued; the client has not read it */
    pid_t gw = E.gateway.pid;
    kill(gw, SIGTERM);
    usleep(300000);
    struct response r;
    ck_assert_int_eq(tls_read_response(&c, &r, 10000, 2000), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_gt(r.body_len, 1000000);
    ck_assert_ptr_nonnull(strstr(r.body + r.body_len - 40, "\"count\":3001}"));
    ck_assert(r.closed);
    response_free(&r);
    tls_close(&c);
    ck_assert_int_eq(env_stop_gateway(&E, 5000), 0);
    free(raw);
}
END_TEST

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

/* A client that pipelines requests and never reads the replies: the gateway stops reading
 * instead of queueing replies without bound. */
START_TEST(test_pipelining_without_reading_is_bounded)
{
    env_start(&E, &(struct env_opts){.workers = 1});
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    struct tls_client c;
    tls_client_rcvbuf = 4096;
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    tls_client_rcvbuf = 0;
    struct timeval stall = {0, 500000}; /* a write that waits this long: the gateway stopped */
    setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &stall, sizeof stall);
    SSL_set_mode(c.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE);
    long before = rss_kb(E.gateway.pid);
    /* each request is answered by a 404 six times its size */
    static const char one[] = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    char chunk[64 * 1024];
    size_t per = sizeof one - 1, k = 0;
    while (k + per <= sizeof chunk) {
        memcpy(chunk + k, one, per);
        k += per;
    }
    size_t sent = 0;
    bool stalled = false;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > 8000)
            break;
        size_t off = sent % k; /* a partial write goes on where it stopped */
        int w = SSL_write(c.ssl, chunk + off, (int)(k - off));
        if (w <= 0) {
            ERR_clear_error();
            stalled = true;
            break;
        }
        sent += (size_t)w;
    }
    long after = rss_kb(E.gateway.pid);
    ck_assert_msg(stalled && sent < (16u << 20), "the gateway kept reading: %zu bytes taken", sent);
    /* Bounded queues mean little growth; the allowance covers the sanitizer build, whose
     * allocator keeps freed memory in quarantine (unbounded queues grow by gigabytes here). */
    ck_assert_msg(after - before < 300000, "gateway memory grew by %ld kB (%zu bytes sent)",
                  after - before, sent);
    tls_close(&c);
    /* still serving others */
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
}
END_TEST

/* SO_REUSEPORT would let a second instance share the port silently: it must refuse to start. */
START_TEST(test_second_instance_on_the_same_port_refused)
{
    env_start(&E, NULL);
    char cmd[800], *out;
    snprintf(cmd, sizeof cmd, "timeout 10 %s run -c %s", bin_path("ghl-gateway"), E.config);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "is another ghl-gateway running?") != NULL, "%s", out);
    free(out);
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *t = tcase_create("upstream");
    tcase_add_checked_fixture(t, NULL, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_upstream_down_is_502);
    tcase_add_test(t, test_slow_upstream_is_504);
    tcase_add_test(t, test_wrong_upstream_certificate_name_is_502);
    tcase_add_test(t, test_upstream_error_status_passed_back);
    tcase_add_test(t, test_get_retried_once_when_a_reused_connection_closes);
    tcase_add_test(t, test_put_not_retried);
    tcase_add_test(t, test_sigterm_lets_the_request_in_flight_finish);
    tcase_add_test(t, test_mtls_requires_a_trusted_client_certificate);
    tcase_add_test(t, test_client_gone_while_the_upstream_answers);
    tcase_add_test(t, test_max_connections_holds_new_connections);
    tcase_add_test(t, test_thousands_of_idle_connections_past_max_connections);
    tcase_add_test(t, test_sigterm_does_not_cut_a_reply_being_sent);
    tcase_add_test(t, test_pipelining_without_reading_is_bounded);
    tcase_add_test(t, test_second_instance_on_the_same_port_refused);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
