/* HTTP/1.1 framing over TLS, raw bytes against the real gateway: every row of the evhttp
 * pitfalls table (../shared/research/libevent-proxy-notes.md §d) and the other ways a request
 * can be framed ambiguously, each its own test. The safety property each asserts: the refusal
 * is a 400 (431/413 for size) with Connection: close, the connection is closed after exactly
 * one reply, and nothing reaches the upstream (the sandbox journal). Every request carries a
 * valid token, and every smuggled request too, so a request the gateway wrongly split off would
 * be forwarded and show in the journal. */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct env E;

static void setup(void)
{
    env_start(&E, &(struct env_opts){.gateway_json = "\"limits\": { \"max_header_bytes\": 8192, "
                                                     "\"max_body_bytes\": 4096 }"});
}

static void teardown(void)
{
    env_stop(&E);
}

/* The head lines every test request starts with: a target the policy allows, Host, Version
 * and a valid token. */
static char *head(const char *request_line)
{
    char *s = NULL;
    ck_assert_int_ge(asprintf(&s,
                              "%s\r\nHost: l\r\nVersion: 2021-07-28\r\n"
                              "Authorization: Bearer %s\r\n",
                              request_line, E.token),
                     0);
    return s;
}

/* A request that would be forwarded if the gateway read it as a request of its own. */
static char *smuggled(void)
{
    char *h = head("GET /users/" SEED_USER " HTTP/1.1"), *s = NULL;
    ck_assert_int_ge(asprintf(&s, "%s\r\n", h), 0);
    free(h);
    return s;
}

/* tmpl with every {SM} replaced by sm and every {LEN} by its length. */
static char *fill(const char *tmpl, const char *sm)
{
    char len[24];
    snprintf(len, sizeof len, "%zu", strlen(sm));
    size_t cap = strlen(tmpl) + 1, n = 0;
    for (const char *p = tmpl; (p = strchr(p, '{')) != NULL; p++)
        cap += strlen(sm) + sizeof len;
    char *out = malloc(cap);
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "{SM}", 4) == 0) {
            n += (size_t)snprintf(out + n, cap - n, "%s", sm);
            p += 4;
        } else if (strncmp(p, "{LEN}", 5) == 0) {
            n += (size_t)snprintf(out + n, cap - n, "%s", len);
            p += 5;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

/* Sends raw[0..len) on a new connection and expects exactly one reply with status and
 * message (NULL: any), the connection closed after it (with Connection: close) or left open,
 * and the journal grown by upstream requests. */
static void expect_reply(const char *raw, size_t len, int status, const char *message, bool closed,
                         int upstream)
{
    int before = journal_count(&E);
    struct response r;
    ck_assert_int_eq(send_raw(&E, raw, len, &r), 0);
    ck_assert_msg(r.status == status, "got %d, want %d for:\n%s", r.status, status, raw);
    if (message)
        ck_assert_msg(strstr(r.body, message) != NULL, "body %s lacks \"%s\"", r.body, message);
    if (closed) {
        ck_assert_str_eq(response_header(&r, "Connection"), "close");
        ck_assert_msg(r.closed, "connection left open (or a second reply) after %d", status);
    } else {
        ck_assert_msg(!r.closed, "a well-framed request closed the connection");
    }
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), before + upstream);
}

/* Sends the head of request_line and then rest ({SM}: the smuggled request, {LEN}: its
 * length), and expects exactly one reply with status and message, the connection closed, and
 * nothing upstream. */
static void refused(const char *request_line, const char *rest_tmpl, int status,
                    const char *message)
{
    char *h = head(request_line), *sm = smuggled(), *rest = fill(rest_tmpl, sm), *raw = NULL;
    ck_assert_int_ge(asprintf(&raw, "%s%s", h, rest), 0);
    expect_reply(raw, strlen(raw), status, message, true, 0);
    free(h);
    free(sm);
    free(rest);
    free(raw);
}

#define FILTER "POST /users/search/filter-by-email HTTP/1.1"
#define GET "GET /users/" SEED_USER " HTTP/1.1"

/* ---- the rows of the table ---- */

START_TEST(test_te_chunked_with_content_length)
{
    refused(FILTER,
            "Content-Type: application/json\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_two_content_lengths_with_a_request_in_the_body)
{
    refused(GET, "Content-Length: 0\r\nContent-Length: {LEN}\r\n\r\n{SM}", 400,
            "more than one Content-Length");
}
END_TEST

START_TEST(test_two_equal_content_lengths)
{
    refused(GET, "Content-Length: {LEN}\r\nContent-Length: {LEN}\r\n\r\n{SM}", 400,
            "more than one Content-Length");
}
END_TEST

START_TEST(test_content_length_list)
{
    refused(GET, "Content-Length: {LEN}, {LEN}\r\n\r\n{SM}", 400, "invalid Content-Length");
}
END_TEST

START_TEST(test_te_gzip_chunked)
{
    refused(FILTER,
            "Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            "0\r\n\r\n{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_te_chunked_gzip)
{
    refused(FILTER,
            "Content-Type: application/json\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
            "{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_te_identity_without_content_length)
{
    /* a body with no length: read as the next request by a parser that ignores the TE */
    refused(GET, "Transfer-Encoding: identity\r\n\r\n{SM}", 400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_te_in_capitals_and_padded)
{
    refused(FILTER,
            "Content-Type: application/json\r\ntransfer-ENCODING:   CHUNKED  \r\n\r\n"
            "0\r\n\r\n{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_space_before_colon)
{
    refused(GET, "Content-Length : {LEN}\r\n\r\n{SM}", 400, "invalid header name");
}
END_TEST

START_TEST(test_tab_before_colon)
{
    refused(GET, "Content-Length\t: {LEN}\r\n\r\n{SM}", 400, "invalid header name");
}
END_TEST

START_TEST(test_content_length_plus_sign)
{
    refused(GET, "Content-Length: +{LEN}\r\n\r\n{SM}", 400, "invalid Content-Length");
}
END_TEST

START_TEST(test_content_length_negative)
{
    refused(GET, "Content-Length: -1\r\n\r\n{SM}", 400, "invalid Content-Length");
}
END_TEST

START_TEST(test_content_length_hex)
{
    refused(GET, "Content-Length: 0x1c\r\n\r\n{SM}", 400, "invalid Content-Length");
}
END_TEST

START_TEST(test_content_length_overflow)
{
    /* 2^64 + 28 would wrap to 28 in a 64-bit parser */
    refused(GET, "Content-Length: 18446744073709551644\r\n\r\n{SM}", 400, "invalid Content-Length");
}
END_TEST

START_TEST(test_content_length_empty)
{
    refused(GET, "Content-Length:\r\n\r\n{SM}", 400, "invalid Content-Length");
}
END_TEST

START_TEST(test_chunk_size_in_hex_form)
{
    refused(FILTER,
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0x2\r\n{}\r\n0\r\n\r\n{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_chunk_extension)
{
    refused(FILTER,
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            "2;a=b\r\n{}\r\n0\r\n\r\n{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_chunk_data_without_crlf)
{
    refused(FILTER,
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            "2\r\n{}0\r\n\r\n{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_chunked_trailer_fields)
{
    refused(FILTER,
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            "2\r\n{}\r\n0\r\nAuthorization: Bearer x\r\n\r\n{SM}",
            400, "Transfer-Encoding");
}
END_TEST

START_TEST(test_obs_fold_continuation)
{
    refused(GET, "X-A: a\r\n folded\r\n\r\n{SM}", 400, "folded header line");
}
END_TEST

START_TEST(test_obs_fold_of_content_length)
{
    /* unfolded, this would read "Content-Length: 0 <n>" */
    refused(GET, "Content-Length: 0\r\n\t{LEN}\r\n\r\n{SM}", 400, "folded header line");
}
END_TEST

START_TEST(test_bare_lf_line_endings)
{
    refused(GET, "X-A: a\nContent-Length: {LEN}\n\n{SM}", 400, "bare LF");
}
END_TEST

START_TEST(test_bare_cr_in_a_header)
{
    refused(GET, "X-A: a\rContent-Length: {LEN}\r\n\r\n{SM}", 400, "bare CR");
}
END_TEST

START_TEST(test_nul_in_a_header_value)
{
    /* a template cannot hold a NUL: built by hand */
    char *h = head(GET);
    static const char tail[] = "X-A: a\0b\r\n\r\n";
    size_t hn = strlen(h), n = hn + sizeof tail - 1;
    char *raw = malloc(n);
    memcpy(raw, h, hn);
    memcpy(raw + hn, tail, sizeof tail - 1);
    expect_reply(raw, n, 400, "NUL", true, 0);
    free(h);
    free(raw);
}
END_TEST

START_TEST(test_control_character_in_a_header_value)
{
    refused(GET, "X-A: a\x01z\r\n\r\n", 400, "control character");
}
END_TEST

START_TEST(test_header_name_outside_the_token_set)
{
    refused(GET, "X-\xc3\xa9: a\r\n\r\n", 400, "invalid header name");
    refused(GET, "X(A): a\r\n\r\n", 400, "invalid header name");
    refused(GET, ": a\r\n\r\n", 400, "invalid header name");
}
END_TEST

START_TEST(test_missing_host)
{
    char *raw = NULL;
    ck_assert_int_ge(
        asprintf(&raw, GET "\r\nVersion: 2021-07-28\r\nAuthorization: Bearer %s\r\n\r\n", E.token),
        0);
    expect_reply(raw, strlen(raw), 400, "missing Host", true, 0);
    free(raw);
}
END_TEST

START_TEST(test_duplicate_host)
{
    refused(GET, "Host: other.example\r\n\r\n", 400, "more than one Host");
}
END_TEST

START_TEST(test_absolute_form_target)
{
    refused("GET https://evil.example/users/" SEED_USER " HTTP/1.1", "\r\n", 400, "origin form");
}
END_TEST

START_TEST(test_authority_form_target)
{
    refused("CONNECT services.leadconnectorhq.com:443 HTTP/1.1", "\r\n", 400, "origin form");
}
END_TEST

START_TEST(test_asterisk_form_target)
{
    refused("OPTIONS * HTTP/1.1", "\r\n", 400, "origin form");
}
END_TEST

START_TEST(test_space_in_the_target)
{
    refused("GET /users/" SEED_USER " x HTTP/1.1", "\r\n", 400, "malformed request line");
}
END_TEST

START_TEST(test_http2_request_line)
{
    refused("GET /users/" SEED_USER " HTTP/2.0", "\r\n", 400, "unsupported HTTP version");
    /* the HTTP/2 connection preface on an HTTP/1.1 connection */
    refused("PRI * HTTP/2.0", "\r\nSM\r\n\r\n", 400, NULL);
}
END_TEST

START_TEST(test_version_spelled_otherwise)
{
    refused("GET /users/" SEED_USER " http/1.1", "\r\n", 400, "unsupported HTTP version");
    refused("GET /users/" SEED_USER " HTTP/1.10", "\r\n", 400, "unsupported HTTP version");
}
END_TEST

START_TEST(test_trace_with_a_body)
{
    /* HEAD and TRACE may not have a body (a HEAD reply has no body for this client to read) */
    refused("TRACE /users/" SEED_USER " HTTP/1.1", "Content-Length: {LEN}\r\n\r\n{SM}", 400,
            "cannot have a body");
}
END_TEST

START_TEST(test_unsupported_expect)
{
    refused(GET, "Expect: 200-ok\r\n\r\n", 400, "Expect");
}
END_TEST

START_TEST(test_head_over_the_limit_is_431)
{
    char pad[9000];
    memset(pad, 'a', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    char *tmpl = NULL;
    ck_assert_int_ge(asprintf(&tmpl, "X-Pad: %s\r\n\r\n{SM}", pad), 0);
    refused(GET, tmpl, 431, "request header fields too large");
    free(tmpl);
}
END_TEST

START_TEST(test_body_over_the_limit_is_413)
{
    refused(FILTER, "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{SM}", 413,
            "request entity too large");
}
END_TEST

/* ---- framings that are unambiguous: accepted, and the body stays a body ---- */

/* A request whose Content-Length covers a whole request: that request is the body (not JSON:
 * 400), one reply, the connection stays usable, and nothing reaches the upstream. */
START_TEST(test_a_request_inside_a_body_stays_a_body)
{
    char *h = head(FILTER), *sm = smuggled(), *raw = NULL;
    ck_assert_int_ge(asprintf(&raw,
                              "%sContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                              h, strlen(sm), sm),
                     0);
    expect_reply(raw, strlen(raw), 400, NULL, false, 0);
    free(h);
    free(sm);
    free(raw);
}
END_TEST

/* Content-Length with leading zeros is 1*DIGIT: the body is exactly that many bytes. */
START_TEST(test_content_length_with_leading_zeros)
{
    const char *body = "{\"companyId\":\"" COMPANY "\",\"emails\":\"nobody@example.com\"}";
    char *h = head(FILTER), *raw = NULL;
    ck_assert_int_ge(
        asprintf(&raw, "%sContent-Type: application/json\r\nContent-Length: 000%zu\r\n\r\n%s", h,
                 strlen(body), body),
        0);
    int before = journal_count(&E);
    expect_reply(raw, strlen(raw), 200, NULL, false, 1);
    cJSON *j = journal_entry(&E, before);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "body")->valuestring, body);
    cJSON_Delete(j);
    free(h);
    free(raw);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("framing");
    TCase *t = tcase_create("framing");
    /* a gateway and sandbox per test: teardown fails the test when the gateway does not
     * stop cleanly (under the sanitizers: a leak or an invalid access) */
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_te_chunked_with_content_length);
    tcase_add_test(t, test_two_content_lengths_with_a_request_in_the_body);
    tcase_add_test(t, test_two_equal_content_lengths);
    tcase_add_test(t, test_content_length_list);
    tcase_add_test(t, test_te_gzip_chunked);
    tcase_add_test(t, test_te_chunked_gzip);
    tcase_add_test(t, test_te_identity_without_content_length);
    tcase_add_test(t, test_te_in_capitals_and_padded);
    tcase_add_test(t, test_space_before_colon);
    tcase_add_test(t, test_tab_before_colon);
    tcase_add_test(t, test_content_length_plus_sign);
    tcase_add_test(t, test_content_length_negative);
    tcase_add_test(t, test_content_length_hex);
    tcase_add_test(t, test_content_length_overflow);
    tcase_add_test(t, test_content_length_empty);
    tcase_add_test(t, test_chunk_size_in_hex_form);
    tcase_add_test(t, test_chunk_extension);
    tcase_add_test(t, test_chunk_data_without_crlf);
    tcase_add_test(t, test_chunked_trailer_fields);
    tcase_add_test(t, test_obs_fold_continuation);
    tcase_add_test(t, test_obs_fold_of_content_length);
    tcase_add_test(t, test_bare_lf_line_endings);
    tcase_add_test(t, test_bare_cr_in_a_header);
    tcase_add_test(t, test_nul_in_a_header_value);
    tcase_add_test(t, test_control_character_in_a_header_value);
    tcase_add_test(t, test_header_name_outside_the_token_set);
    tcase_add_test(t, test_missing_host);
    tcase_add_test(t, test_duplicate_host);
    tcase_add_test(t, test_absolute_form_target);
    tcase_add_test(t, test_authority_form_target);
    tcase_add_test(t, test_asterisk_form_target);
    tcase_add_test(t, test_space_in_the_target);
    tcase_add_test(t, test_http2_request_line);
    tcase_add_test(t, test_version_spelled_otherwise);
    tcase_add_test(t, test_trace_with_a_body);
    tcase_add_test(t, test_unsupported_expect);
    tcase_add_test(t, test_head_over_the_limit_is_431);
    tcase_add_test(t, test_body_over_the_limit_is_413);
    tcase_add_test(t, test_a_request_inside_a_body_stays_a_body);
    tcase_add_test(t, test_content_length_with_leading_zeros);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
