/* http1: the request-head reader, byte rules and head rules. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

/* Scans and parses a complete head given as a C string. Returns 0 or -1 (err filled). */
static int read_head(const char *text, struct gw_http1_head *h, struct gw_http1_error *err,
                     char **keep)
{
    size_t n = strlen(text), scanned = 0;
    long hl = gw_http1_scan((const unsigned char *)text, n, &scanned, 16384, err);
    if (hl < 0)
        return -1;
    ck_assert_int_eq(hl, (long)n);
    char *buf = malloc(n + 1);
    memcpy(buf, text, n);
    *keep = buf;
    return gw_http1_parse(buf, n, 65536, h, err);
}

#define REFUSED(text, want_kind, want_why)                                                         \
    do {                                                                                           \
        struct gw_http1_head h_;                                                                   \
        struct gw_http1_error e_;                                                                  \
        char *k_ = NULL;                                                                           \
        ck_assert_int_eq(read_head(text, &h_, &e_, &k_), -1);                                      \
        ck_assert_int_eq(e_.kind, want_kind);                                                      \
        if (want_why)                                                                              \
            ck_assert_str_eq(e_.why, (const char *)want_why);                                      \
        free(k_);                                                                                  \
    } while (0)

START_TEST(test_http1_reads_a_request)
{
    struct gw_http1_head h;
    struct gw_http1_error e;
    char *k;
    const char *t = "POST /users/?a=b HTTP/1.1\r\nHost: gw\r\nContent-Length: 12\r\n"
                    "X-Empty:\r\nX-Pad: \t spaced out \t\r\n\r\n";
    ck_assert_int_eq(read_head(t, &h, &e, &k), 0);
    ck_assert_str_eq(h.method, "POST");
    ck_assert_str_eq(h.target, "/users/?a=b");
    ck_assert(!h.http10);
    ck_assert_uint_eq(h.nhdr, 4);
    ck_assert_uint_eq(h.content_length, 12);
    ck_assert_str_eq(gw_http1_header(h.hdr, h.nhdr, "x-pad", NULL), "spaced out");
    ck_assert_str_eq(gw_http1_header(h.hdr, h.nhdr, "X-EMPTY", NULL), "");
    ck_assert(!h.wants_close);
    free(k);
}
END_TEST

START_TEST(test_http1_scan_is_incremental_and_needs_the_blank_line)
{
    const char *t = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
    size_t scanned = 0;
    struct gw_http1_error e;
    for (size_t n = 0; n < 27; n++)
        ck_assert_int_eq(gw_http1_scan((const unsigned char *)t, n, &scanned, 1024, &e), 0);
    ck_assert_int_eq(gw_http1_scan((const unsigned char *)t, strlen(t), &scanned, 1024, &e), 27);
}
END_TEST

START_TEST(test_http1_byte_rules)
{
    static const struct {
        const char *text;
        size_t len;
        const char *why;
    } bad[] = {
        {"GET / HTTP/1.1\nHost: x\n\n", 24, "bare LF in request head"},
        {"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n", 28, "bare CR in request head"},
        {"GET / HTTP/1.1\r\nHost: \0x\r\n\r\n", 28, "NUL byte in request head"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t scanned = 0;
        struct gw_http1_error e;
        ck_assert_int_eq(
            gw_http1_scan((const unsigned char *)bad[i].text, bad[i].len, &scanned, 1024, &e), -1);
        ck_assert_int_eq(e.kind, GW_R_BAD_FRAMING);
        ck_assert_str_eq(e.why, bad[i].why);
    }
}
END_TEST

START_TEST(test_http1_head_cap_is_431)
{
    char big[300];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    size_t scanned = 0;
    struct gw_http1_error e;
    ck_assert_int_eq(gw_http1_scan((const unsigned char *)big, 100, &scanned, 256, &e), 0);
    ck_assert_int_eq(gw_http1_scan((const unsigned char *)big, sizeof big, &scanned, 256, &e), -1);
    ck_assert_int_eq(e.kind, GW_R_HEADERS_TOO_LARGE);
}
END_TEST

START_TEST(test_http1_request_line_rules)
{
    REFUSED("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING, "malformed request line");
    REFUSED("GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING, "malformed request line");
    REFUSED("G@T / HTTP/1.1\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING, "malformed request line");
    REFUSED("GET http://evil/x HTTP/1.1\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING,
            "request target is not in origin form");
    REFUSED("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING,
            "request target is not in origin form");
    REFUSED("GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING,
            "invalid character in request target");
    REFUSED("GET / HTTP/2.0\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING, "unsupported HTTP version");
    REFUSED("GET / http/1.1\r\nHost: x\r\n\r\n", GW_R_BAD_FRAMING, "unsupported HTTP version");
}
END_TEST

START_TEST(test_http1_header_rules)
{
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n", GW_R_BAD_FRAMING,
            "invalid header name");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", GW_R_BAD_FRAMING, "invalid header name");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", GW_R_BAD_FRAMING,
            "folded header line");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01z\r\n\r\n", GW_R_BAD_FRAMING,
            "control character in a header value");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", GW_R_BAD_FRAMING,
            "Transfer-Encoding is not accepted on requests");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",
            GW_R_BAD_FRAMING, "more than one Content-Length");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", GW_R_BAD_FRAMING,
            "invalid Content-Length");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\n", GW_R_BAD_FRAMING,
            "invalid Content-Length");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999\r\n\r\n",
            GW_R_BAD_FRAMING, "invalid Content-Length");
    REFUSED("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", GW_R_BAD_FRAMING, "more than one Host");
    REFUSED("GET / HTTP/1.1\r\n\r\n", GW_R_BAD_FRAMING, "missing Host");
    REFUSED("HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", GW_R_BAD_FRAMING,
            "a HEAD or TRACE request cannot have a body");
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", GW_R_BAD_FRAMING,
            "unsupported Expect header");
    REFUSED("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", GW_R_TOO_LARGE, NULL);
}
END_TEST

START_TEST(test_http1_connection_semantics)
{
    struct gw_http1_head h;
    struct gw_http1_error e;
    char *k;
    ck_assert_int_eq(read_head("GET / HTTP/1.0\r\n\r\n", &h, &e, &k), 0);
    ck_assert(h.http10);
    ck_assert(h.wants_close); /* HTTP/1.0 closes unless it asks to keep alive */
    free(k);
    ck_assert_int_eq(read_head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h, &e, &k), 0);
    ck_assert(!h.wants_close);
    free(k);
    ck_assert_int_eq(
        read_head("GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, close\r\n\r\n", &h, &e, &k), 0);
    ck_assert(h.wants_close);
    free(k);
    ck_assert_int_eq(
        read_head("GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", &h, &e, &k), 0);
    ck_assert(!h.wants_close); /* a token, not a substring */
    free(k);
    ck_assert_int_eq(read_head("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
                               "Content-Length: 2\r\n\r\n",
                               &h, &e, &k),
                     0);
    ck_assert(h.expect_continue);
    free(k);
}
END_TEST

START_TEST(test_http1_header_lookup)
{
    struct gw_header hs[] = {{"A", "1"}, {"b", "2"}, {"a", "3"}};
    bool rep;
    ck_assert_ptr_null(gw_http1_header(hs, 3, "a", &rep));
    ck_assert(rep);
    ck_assert_str_eq(gw_http1_header(hs, 3, "B", &rep), "2");
    ck_assert(!rep);
    ck_assert_ptr_null(gw_http1_header(hs, 3, "c", &rep));
    ck_assert(!rep);
}
END_TEST

START_TEST(test_http1_too_many_headers_is_431)
{
    char *t = malloc(GW_MAX_HEADERS * 8 + 64);
    size_t w = (size_t)snprintf(t, 64, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < GW_MAX_HEADERS; i++)
        w += (size_t)snprintf(t + w, 8, "X: %d\r\n", i % 10);
    snprintf(t + w, 3, "\r\n");
    REFUSED(t, GW_R_HEADERS_TOO_LARGE, NULL);
    free(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("http1");
    TCase *t = tcase_create("head");
    tcase_add_test(t, test_http1_reads_a_request);
    tcase_add_test(t, test_http1_scan_is_incremental_and_needs_the_blank_line);
    tcase_add_test(t, test_http1_byte_rules);
    tcase_add_test(t, test_http1_head_cap_is_431);
    tcase_add_test(t, test_http1_request_line_rules);
    tcase_add_test(t, test_http1_header_rules);
    tcase_add_test(t, test_http1_connection_semantics);
    tcase_add_test(t, test_http1_header_lookup);
    tcase_add_test(t, test_http1_too_many_headers_is_431);
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
