/* upstream: the response parser (static, reached by including the module). */
#include "../../proxy/upstream.c"

#include <check.h>

struct parsed {
    int rc; /* 1 complete, 0 needs more, -1 refused */
    char why[128];
    int status;
    char *body;
    size_t body_len;
    bool keepalive;
    size_t nheaders;
};

/* Feeds text in two pieces (split at `split`, 0 = all at once) to a fresh parser. */
static struct parsed run(const char *text, size_t len, size_t split)
{
    struct parsed p = {0};
    struct gw_upstream_call call = {0};
    struct up_conn c = {0};
    call.res.body = evbuffer_new();
    struct evbuffer *in = evbuffer_new();
    reset_parser(&c);
    if (split && split < len) {
        evbuffer_add(in, text, split);
        p.rc = parse(&c, &call, in, p.why, sizeof p.why);
        if (p.rc == 0) {
            evbuffer_add(in, text + split, len - split);
            p.rc = parse(&c, &call, in, p.why, sizeof p.why);
        }
    } else {
        evbuffer_add(in, text, len);
        p.rc = parse(&c, &call, in, p.why, sizeof p.why);
    }
    p.status = call.res.status;
    p.body_len = evbuffer_get_length(call.res.body);
    p.body = malloc(p.body_len + 1);
    evbuffer_remove(call.res.body, p.body, p.body_len);
    p.body[p.body_len] = '\0';
    p.keepalive = c.keepalive;
    p.nheaders = call.res.nheaders;
    call_reset_headers(&call);
    evbuffer_free(call.res.body);
    evbuffer_free(in);
    return p;
}

static struct parsed run_s(const char *text)
{
    return run(text, strlen(text), 0);
}

START_TEST(test_upstream_content_length_answer)
{
    const char *t = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    "Content-Length: 10\r\n\r\n{\"id\":\"x\"}";
    for (size_t split = 0; split < strlen(t); split += 7) {
        struct parsed p = run(t, strlen(t), split);
        ck_assert_int_eq(p.rc, 1);
        ck_assert_int_eq(p.status, 201);
        ck_assert_str_eq(p.body, "{\"id\":\"x\"}");
        ck_assert(p.keepalive);
        ck_assert_uint_eq(p.nheaders, 2);
        free(p.body);
    }
}
END_TEST

START_TEST(test_upstream_chunked_answer_with_extensions_and_trailers)
{
    struct parsed p = run_s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "4;name=value\r\n{\"a\"\r\nA\r\n:12345678}\r\n0\r\nX-T: 1\r\n\r\n");
    ck_assert_int_eq(p.rc, 1);
    ck_assert_str_eq(p.body, "{\"a\":12345678}");
    free(p.body);
}
END_TEST

/* Many small chunks are ordinary (streaming writes): their size lines are not head bytes. */
START_TEST(test_upstream_many_small_chunks_accepted)
{
    size_t n = 7000;
    char *t = malloc(64 + n * 8);
    size_t w = (size_t)snprintf(t, 64, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < n; i++)
        w += (size_t)snprintf(t + w, 8, "1\r\nx\r\n");
    w += (size_t)snprintf(t + w, 8, "0\r\n\r\n");
    struct parsed p = run(t, w, 0);
    ck_assert_msg(p.rc == 1, "refused: %s", p.why);
    ck_assert_uint_eq(p.body_len, n);
    free(p.body);
    free(t);
}
END_TEST

START_TEST(test_upstream_bad_chunk_sizes_refused)
{
    static const char *const sizes[] = {"ffffffffffffffff",  "0x10", " 5", "+5", "-1", "",
                                        "10000000000000000", "5 ;x", "g"};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char t[256];
        snprintf(t, sizeof t,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n%s\r\nxx",
                 sizes[i]);
        struct parsed p = run_s(t);
        ck_assert_msg(p.rc == -1, "chunk size \"%s\" accepted", sizes[i]);
        free(p.body);
    }
}
END_TEST

START_TEST(test_upstream_close_delimited_answer_refused)
{
    struct parsed p = run_s("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":");
    ck_assert_int_eq(p.rc, -1);
    ck_assert_str_eq(p.why, "upstream answer has neither Content-Length nor chunked framing");
    free(p.body);
}
END_TEST

START_TEST(test_upstream_ambiguous_framing_refused)
{
    static const char *const heads[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\x01\r\nContent-Length: 0\r\n\r\n",
        "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
        struct parsed p = run_s(heads[i]);
        ck_assert_msg(p.rc == -1, "head %zu accepted (%d)", i, p.rc);
        free(p.body);
    }
}
END_TEST

/* Past the headers kept for the caller, framing headers still count. */
START_TEST(test_upstream_framing_header_after_many_headers)
{
    char t[8192];
    size_t w = (size_t)snprintf(t, sizeof t, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 80; i++)
        w += (size_t)snprintf(t + w, sizeof t - w, "X-H%d: v\r\n", i);
    snprintf(t + w, sizeof t - w, "Content-Length: 2\r\n\r\n{}");
    struct parsed p = run_s(t);
    ck_assert_int_eq(p.rc, 1);
    ck_assert_str_eq(p.body, "{}");
    ck_assert_uint_eq(p.nheaders, GW_UPSTREAM_MAX_HEADERS);
    free(p.body);
    /* but not without end */
    w = (size_t)snprintf(t, sizeof t, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 101; i++)
        w += (size_t)snprintf(t + w, sizeof t - w, "X: %d\r\n", i);
    snprintf(t + w, sizeof t - w, "Content-Length: 0\r\n\r\n");
    p = run_s(t);
    ck_assert_int_eq(p.rc, -1);
    free(p.body);
}
END_TEST

START_TEST(test_upstream_interim_answer_skipped)
{
    struct parsed p = run_s("HTTP/1.1 100 Continue\r\nX: y\r\n\r\nHTTP/1.1 200 OK\r\n"
                            "Content-Length: 2\r\n\r\nok");
    ck_assert_int_eq(p.rc, 1);
    ck_assert_int_eq(p.status, 200);
    ck_assert_uint_eq(p.nheaders, 1); /* the interim answer's headers are gone */
    free(p.body);
}
END_TEST

START_TEST(test_upstream_connection_close_and_http10_not_kept)
{
    struct parsed p = run_s("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    ck_assert_int_eq(p.rc, 1);
    ck_assert(!p.keepalive);
    free(p.body);
    p = run_s("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    ck_assert_int_eq(p.rc, 1);
    ck_assert(!p.keepalive);
    free(p.body);
    p = run_s("HTTP/1.1 204 No Content\r\n\r\n");
    ck_assert_int_eq(p.rc, 1);
    ck_assert(p.keepalive);
    free(p.body);
}
END_TEST

START_TEST(test_upstream_head_and_line_caps)
{
    size_t n = MAX_HEAD_BYTES + 100;
    char *t = malloc(n + 64);
    size_t w = (size_t)snprintf(t, 64, "HTTP/1.1 200 OK\r\nX: ");
    memset(t + w, 'a', n - w);
    struct parsed p = run(t, n, 0); /* no end of line in sight */
    ck_assert_int_eq(p.rc, -1);
    ck_assert_str_eq(p.why, "upstream answer line too long");
    free(p.body);
    const char *chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;";
    w = (size_t)snprintf(t, n, "%s", chunk);
    memset(t + w, 'e', 2000);
    p = run(t, w + 2000, 0);
    ck_assert_int_eq(p.rc, -1);
    free(p.body);
    free(t);
}
END_TEST

START_TEST(test_upstream_incomplete_answer_needs_more)
{
    /* bare LF never ends a line: the answer never completes (and the deadline ends it) */
    struct parsed b = run_s("HTTP/1.1 200 OK\nContent-Length: 0\n\n");
    ck_assert_int_eq(b.rc, 0);
    free(b.body);
    struct parsed p = run_s("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
    ck_assert_int_eq(p.rc, 0);
    free(p.body);
    p = run_s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n");
    ck_assert_int_eq(p.rc, 0);
    free(p.body);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *t = tcase_create("parse");
    tcase_add_test(t, test_upstream_content_length_answer);
    tcase_add_test(t, test_upstream_chunked_answer_with_extensions_and_trailers);
    tcase_add_test(t, test_upstream_many_small_chunks_accepted);
    tcase_add_test(t, test_upstream_bad_chunk_sizes_refused);
    tcase_add_test(t, test_upstream_close_delimited_answer_refused);
    tcase_add_test(t, test_upstream_ambiguous_framing_refused);
    tcase_add_test(t, test_upstream_framing_header_after_many_headers);
    tcase_add_test(t, test_upstream_interim_answer_skipped);
    tcase_add_test(t, test_upstream_connection_close_and_http10_not_kept);
    tcase_add_test(t, test_upstream_head_and_line_caps);
    tcase_add_test(t, test_upstream_incomplete_answer_needs_more);
    suite_add_tcase(s, t);
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
