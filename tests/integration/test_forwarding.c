/* End to end: the real gateway in front of the real sandbox, over TLS on loopback. What the
 * upstream received is read from the sandbox journal. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct env E;

static void setup(void)
{
    env_start(&E, NULL);
}

static void teardown(void)
{
    env_stop(&E);
}

/* The only headers the upstream may ever see (SPEC §7). */
static const char *const allow_get[] = {"Host",          "Version",      "Accept",
                                        "Authorization", "X-Request-Id", "traceparent"};
static const char *const allow_body[] = {"Host",          "Version",       "Accept",
                                         "Authorization", "X-Request-Id",  "traceparent",
                                         "Content-Type",  "Content-Length"};

/* Everything a caller might send that must not reach the upstream. */
/* (the caller's own Authorization, its valid JWT, is added by send_req) */
#define HOSTILE_HEADERS                                                                            \
    "Cookie: session=caller-cookie\r\n"                                                            \
    "X-Forwarded-For: 10.9.9.9\r\n"                                                                \
    "X-Forwarded-Host: evil.example\r\n"                                                           \
    "X-Forwarded-Proto: http\r\n"                                                                  \
    "Forwarded: for=10.9.9.9\r\n"                                                                  \
    "Connection: keep-alive, X-Hop\r\n"                                                            \
    "X-Hop: hop-secret\r\n"                                                                        \
    "Keep-Alive: timeout=5\r\n"                                                                    \
    "TE: trailers\r\n"                                                                             \
    "Upgrade: h2c\r\n"                                                                             \
    "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"                                                  \
    "Accept-Encoding: gzip\r\n"                                                                    \
    "tracestate: congo=t61rcWkgMzE\r\n"                                                            \
    "X-Request-Id: caller-req.42_A\r\n"

static cJSON *last_entry(void)
{
    int n = journal_count(&E);
    ck_assert_int_gt(n, 0);
    cJSON *j = journal_entry(&E, n - 1);
    ck_assert_ptr_nonnull(j);
    return j;
}

static const char *jstr(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The common assertions of every forwarded op. */
static void assert_forwarded(const cJSON *j, const char *method, const char *path,
                             const char *query, const char *token, bool body)
{
    ck_assert_str_eq(jstr(j, "method"), method);
    ck_assert_str_eq(jstr(j, "path"), path);
    ck_assert_str_eq(jstr(j, "query"), query);
    char want_auth[128];
    snprintf(want_auth, sizeof want_auth, "Bearer %s", token);
    ck_assert_str_eq(journal_header(j, "Authorization", NULL), want_auth);
    ck_assert_str_eq(journal_header(j, "Version", NULL), "2021-07-28");
    ck_assert_str_eq(journal_header(j, "Accept", NULL), "application/json");
    char host[64];
    snprintf(host, sizeof host, "localhost:%d", E.sandbox.port);
    ck_assert_str_eq(journal_header(j, "Host", NULL), host);
    ck_assert_str_eq(journal_header(j, "X-Request-Id", NULL), "caller-req.42_A");
    const char *tp = journal_header(j, "traceparent", NULL); /* the gateway's (test_trace.c) */
    ck_assert_msg(tp && strlen(tp) == 55 && strncmp(tp, "00-", 3) == 0, "traceparent %s", tp);
    /* the caller's token appears nowhere in what went upstream */
    char *line = cJSON_PrintUnformatted(j);
    ck_assert_ptr_null(strstr(line, E.token));
    ck_assert_ptr_null(strstr(line, "caller-cookie"));
    ck_assert_ptr_null(strstr(line, "hop-secret"));
    cJSON_free(line);
    if (body) {
        ck_assert_msg(journal_headers_are(j, allow_body, 8), "unexpected headers upstream");
        ck_assert_str_eq(journal_header(j, "Content-Type", NULL), "application/json");
    } else {
        ck_assert_msg(journal_headers_are(j, allow_get, 6), "unexpected headers upstream");
    }
}

START_TEST(test_create_user_forwarded_canonically)
{
    struct response r;
    /* odd whitespace and an escaped member name: the upstream gets the canonical form */
    const char *body = "{ \"companyId\" : \"" COMPANY "\",\n\t\"firstName\":\"Grace\","
                       "\"lastName\":\"Hopper\",\"email\":\"grace@example.com\","
                       "\"password\":\"Str0ng!Passw0rd\",\"type\":\"account\","
                       "\"\\u0072ole\":\"user\",\"locationIds\":[ \"" LOC1 "\" ] }";
    ck_assert_int_eq(send_req(&E, "POST", "/users", HOSTILE_HEADERS, body, &r), 0);
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(response_header(&r, "X-Request-Id"), "caller-req.42_A");
    ck_assert_ptr_nonnull(response_header(&r, "X-RateLimit-Remaining"));
    ck_assert_str_eq(response_header(&r, "Content-Type"), "application/json; charset=utf-8");
    ck_assert_ptr_nonnull(strstr(r.body, "\"firstName\":\"Grace\""));
    cJSON *j = last_entry();
    assert_forwarded(j, "POST", "/users/", "", AGENCY_TOKEN, true);
    ck_assert_str_eq(jstr(j, "body"),
                     "{\"companyId\":\"" COMPANY "\",\"firstName\":\"Grace\",\"lastName\":"
                     "\"Hopper\",\"email\":\"grace@example.com\",\"password\":\"Str0ng!Passw0rd\","
                     "\"type\":\"account\",\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"]}");
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_search_users_forwarded_with_canonical_query)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET",
                              "/users/search?companyId=" COMPANY "&query=Ada+Love&limit=%31%30",
                              HOSTILE_HEADERS, NULL, &r),
                     0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, SEED_USER));
    cJSON *j = last_entry();
    assert_forwarded(j, "GET", "/users/search", "companyId=" COMPANY "&query=Ada%20Love&limit=10",
                     AGENCY_TOKEN, false);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "body")));
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_filter_users_by_email_forwarded)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/search/filter-by-email", HOSTILE_HEADERS,
                              "{\"companyId\":\"" COMPANY "\",\"emails\":\"ada@example.com\"}", &r),
                     0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"count\":1"));
    cJSON *j = last_entry();
    assert_forwarded(j, "POST", "/users/search/filter-by-email", "", AGENCY_TOKEN, true);
    ck_assert_str_eq(jstr(j, "body"),
                     "{\"companyId\":\"" COMPANY "\",\"emails\":\"ada@example.com\"}");
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_get_user_forwarded)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, HOSTILE_HEADERS, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"email\":\"ada@example.com\""));
    cJSON *j = last_entry();
    assert_forwarded(j, "GET", "/users/" SEED_USER, "", AGENCY_TOKEN, false);
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_update_user_forwarded)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "PUT", "/users/" SEED_USER, HOSTILE_HEADERS,
                              "{\"firstName\":\"Augusta\"}", &r),
                     0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"firstName\":\"Augusta\""));
    cJSON *j = last_entry();
    assert_forwarded(j, "PUT", "/users/" SEED_USER, "", AGENCY_TOKEN, true);
    ck_assert_str_eq(jstr(j, "body"), "{\"firstName\":\"Augusta\"}");
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_delete_user_forwarded)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "DELETE", "/users/" SEED_USER, HOSTILE_HEADERS, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"succeded\":true"));
    cJSON *j = last_entry();
    assert_forwarded(j, "DELETE", "/users/" SEED_USER, "", AGENCY_TOKEN, false);
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_get_user_by_location_uses_the_location_token)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/?locationId=" LOC1, HOSTILE_HEADERS, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, SEED_USER));
    cJSON *j = last_entry();
    assert_forwarded(j, "GET", "/users/", "locationId=" LOC1, LOC1_TOKEN, false);
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_location_without_token_is_503_and_not_forwarded)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/users/?locationId=OtherLocation", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 503);
    ck_assert_ptr_nonnull(strstr(r.body, "\"statusCode\":503"));
    ck_assert_ptr_nonnull(strstr(r.body, "OtherLocation"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"error\":\"Service Unavailable\""));
    ck_assert_int_eq(journal_count(&E), 0);
    response_free(&r);
}
END_TEST

START_TEST(test_request_id_generated_when_caller_sends_a_bad_one)
{
    struct response r;
    ck_assert_int_eq(
        send_req(&E, "GET", "/users/" SEED_USER, "X-Request-Id: bad id!\r\n", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    const char *rid = response_header(&r, "X-Request-Id");
    ck_assert_ptr_nonnull(rid);
    ck_assert_int_eq((int)strlen(rid), 32);
    char keep[64];
    snprintf(keep, sizeof keep, "%s", rid);
    cJSON *j = last_entry();
    ck_assert_str_eq(journal_header(j, "X-Request-Id", NULL), keep);
    cJSON_Delete(j);
    response_free(&r);
}
END_TEST

START_TEST(test_unknown_route_is_404_in_upstream_shape)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", "/contacts/abc", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.body, "{\"statusCode\":404,\"message\":\"Cannot GET /contacts/abc\","
                             "\"error\":\"Not Found\"}");
    response_free(&r);
    ck_assert_int_eq(send_req(&E, "PATCH", "/users/" SEED_USER, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.body,
                     "{\"statusCode\":404,\"message\":\"Cannot PATCH /users/" SEED_USER "\","
                     "\"error\":\"Not Found\"}");
    ck_assert(!r.closed);
    response_free(&r);
    ck_assert_int_eq(send_req(&E, "GET", "/users/abc-def", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_bad_targets_are_400)
{
    static const char *const bad[] = {"/users/../admin", "/users/%2e%2e/x", "/users//x",
                                      "/users/./x", "/users/abc#frag"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct response r;
        ck_assert_int_eq(send_req(&E, "GET", bad[i], NULL, NULL, &r), 0);
        ck_assert_msg(r.status == 400, "%s gave %d", bad[i], r.status);
        ck_assert_ptr_nonnull(strstr(r.body, "\"error\":\"Bad Request\""));
        response_free(&r);
    }
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_version_header_checked)
{
    struct response r;
    char raw[6144];
    snprintf(raw, sizeof raw,
             "GET /users/" SEED_USER
             " HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n",
             E.token);
    ck_assert_int_eq(send_raw(&E, raw, strlen(raw), &r), 0);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(r.body, "{\"statusCode\":400,\"message\":\"version header was not found.\"}");
    response_free(&r);
    snprintf(raw, sizeof raw,
             "GET /users/" SEED_USER " HTTP/1.1\r\nHost: localhost\r\nVersion: 2023-02-21\r\n"
             "Authorization: Bearer %s\r\n\r\n",
             E.token);
    ck_assert_int_eq(send_raw(&E, raw, strlen(raw), &r), 0);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(r.body, "{\"statusCode\":400,\"message\":\"version header is invalid\"}");
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_keep_alive_and_pipelining)
{
    struct tls_client c;
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    char *a1 = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    char *a2 = raw_request(&E, "GET", "/users/nobody", NULL);
    char two[12288];
    snprintf(two, sizeof two, "%s%s", a1, a2);
    free(a1);
    free(a2);
    ck_assert_int_eq(tls_send(&c, two, strlen(two)), 0);
    struct response a, b;
    ck_assert_int_eq(tls_read_response(&c, &a, 5000, 0), 0);
    ck_assert_int_eq(tls_read_response(&c, &b, 5000, 0), 0);
    ck_assert_int_eq(a.status, 200);
    ck_assert_int_eq(b.status, 400); /* the sandbox: User not found */
    ck_assert_ptr_nonnull(strstr(b.body, "User not found"));
    response_free(&a);
    response_free(&b);
    tls_close(&c);
    ck_assert_int_eq(journal_count(&E), 2);
}
END_TEST

START_TEST(test_access_log_line_per_request)
{
    struct response r;
    ck_assert_int_eq(
        send_req(&E, "GET", "/users/" SEED_USER, "X-Request-Id: log-me-1\r\n", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    char *log = slurp(E.access_log);
    char *line = strstr(log, "\"request_id\":\"log-me-1\"");
    ck_assert_msg(line != NULL, "no access log line: %s", log);
    while (line > log && line[-1] != '\n')
        line--;
    char *nl = strchr(line, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    cJSON *j = cJSON_Parse(line);
    ck_assert_ptr_nonnull(j);
    /* SPEC §10's members, in its order, and no other */
    static const char *const keys[] = {
        "ts",       "request_id",   "trace_id",        "ip",          "method",
        "path",     "op",           "status",          "duration_ms", "sub",
        "policy",   "auth_failure", "upstream_status", "upstream_ms", "bytes_in",
        "bytes_out"};
    const cJSON *m = j->child;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++, m = m->next)
        ck_assert_msg(m && strcmp(m->string, keys[i]) == 0, "member %zu is %s, not %s", i,
                      m ? m->string : "(none)", keys[i]);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "op")->valuestring, "get-user");
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(j, "status")->valueint, 200);
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(j, "upstream_status")->valueint, 200);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "ip")->valuestring, "127.0.0.1");
    ck_assert_ptr_null(strstr(log, AGENCY_TOKEN));
    cJSON_Delete(j);
    free(log);
}
END_TEST

/* More pipelined requests than the input cap (max_header_bytes + max_body_bytes + 4 KB, here
 * 12 KB) in one write: reading pauses at the cap and resumes as replies go out, including the
 * records TLS read ahead before the pause. Every request is answered, in order. */
START_TEST(test_pipelining_past_the_input_cap)
{
    struct env_opts o = {
        .gateway_json = "\"limits\": { \"max_header_bytes\": 4096, \"max_body_bytes\": 4096 }"};
    env_start(&E, &o);
    struct tls_client c;
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", E.certs);
    ck_assert_int_eq(tls_connect(&c, E.gateway.port, 0, NULL, NULL, ca), 0);
    char *one = raw_request(&E, "GET", "/users/" SEED_USER, NULL);
    size_t n1 = strlen(one), n = 40;
    ck_assert_uint_gt(n1 * n, 12288 + 4096);
    /* one TLS record per request, all sent before the first reply: TLS read-ahead takes many
     * small records from the socket at once, and those left when reading pauses at the cap
     * are in OpenSSL's buffer, where no socket event announces them */
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(tls_send(&c, one, n1), 0);
    free(one);
    for (size_t i = 0; i < n; i++) {
        struct response r;
        ck_assert_msg(tls_read_response(&c, &r, 10000, 0) == 0, "reply %zu of %zu missing", i + 1,
                      n);
        ck_assert_int_eq(r.status, 200);
        response_free(&r);
    }
    tls_close(&c);
    ck_assert_int_eq(journal_count(&E), (int)n);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("forwarding");
    TCase *t = tcase_create("ops");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_create_user_forwarded_canonically);
    tcase_add_test(t, test_search_users_forwarded_with_canonical_query);
    tcase_add_test(t, test_filter_users_by_email_forwarded);
    tcase_add_test(t, test_get_user_forwarded);
    tcase_add_test(t, test_update_user_forwarded);
    tcase_add_test(t, test_delete_user_forwarded);
    tcase_add_test(t, test_get_user_by_location_uses_the_location_token);
    tcase_add_test(t, test_location_without_token_is_503_and_not_forwarded);
    tcase_add_test(t, test_request_id_generated_when_caller_sends_a_bad_one);
    tcase_add_test(t, test_unknown_route_is_404_in_upstream_shape);
    tcase_add_test(t, test_bad_targets_are_400);
    tcase_add_test(t, test_version_header_checked);
    tcase_add_test(t, test_keep_alive_and_pipelining);
    tcase_add_test(t, test_access_log_line_per_request);
    suite_add_tcase(s, t);
    TCase *p = tcase_create("pipelining");
    tcase_add_checked_fixture(p, NULL, teardown);
    tcase_set_timeout(p, 60);
    tcase_add_test(p, test_pipelining_past_the_input_cap);
    suite_add_tcase(s, p);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
