/* Unit tests of the gateway's own responses (proxy/reply.c) against SPEC §8: status, reason,
 * whether the connection closes, and the exact body bytes of every kind. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "json.h"
#include "reply.h"

/* The body of kind k as a NUL-terminated string (caller frees). */
static char *body(enum gw_reply_kind k, const char *msg, const char *const *msgs, size_t n)
{
    struct evbuffer *b = evbuffer_new();
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(gw_reply_body(b, k, msg, msgs, n), 0);
    size_t len = evbuffer_get_length(b);
    char *s = malloc(len + 1);
    ck_assert_ptr_nonnull(s);
    evbuffer_remove(b, s, len);
    s[len] = '\0';
    evbuffer_free(b);
    return s;
}

/* SPEC §8, one row per kind; "<what>" kinds are given the message "MSG". */
static const struct {
    enum gw_reply_kind k;
    int status;
    const char *reason;
    bool closes;
    const char *body;
} rows[] = {
    {GW_R_UNAUTHORIZED, 401, "Unauthorized", false,
     "{\"statusCode\":401,\"message\":\"Invalid token: access token is invalid\","
     "\"error\":\"Unauthorized\"}"},
    {GW_R_SCOPE, 401, "Unauthorized", false,
     "{\"statusCode\":401,\"message\":\"The token is not authorized for this scope.\"}"},
    {GW_R_VERSION_MISSING, 400, "Bad Request", false,
     "{\"statusCode\":400,\"message\":\"version header was not found.\"}"},
    {GW_R_VERSION_INVALID, 400, "Bad Request", false,
     "{\"statusCode\":400,\"message\":\"version header is invalid\"}"},
    {GW_R_BAD_REQUEST, 400, "Bad Request", false,
     "{\"statusCode\":400,\"message\":\"MSG\",\"error\":\"Bad Request\"}"},
    {GW_R_BAD_FRAMING, 400, "Bad Request", true,
     "{\"statusCode\":400,\"message\":\"MSG\",\"error\":\"Bad Request\"}"},
    {GW_R_FORBIDDEN, 403, "Forbidden", false,
     "{\"statusCode\":403,\"message\":\"MSG\",\"error\":\"Forbidden\"}"},
    {GW_R_NOT_FOUND, 404, "Not Found", false,
     "{\"statusCode\":404,\"message\":\"MSG\",\"error\":\"Not Found\"}"},
    {GW_R_TOO_LARGE, 413, "Payload Too Large", true,
     "{\"statusCode\":413,\"message\":\"request entity too large\",\"error\":\"Payload Too "
     "Large\"}"},
    {GW_R_HEADERS_TOO_LARGE, 431, "Request Header Fields Too Large", true,
     "{\"statusCode\":431,\"message\":\"request header fields too large\",\"error\":\"Request "
     "Header Fields Too Large\"}"},
    {GW_R_UNSUPPORTED_MEDIA, 415, "Unsupported Media Type", false,
     "{\"statusCode\":415,\"message\":\"MSG\",\"error\":\"Unsupported Media Type\"}"},
    {GW_R_UNPROCESSABLE, 422, "Unprocessable Entity", false,
     "{\"statusCode\":422,\"message\":[\"MSG\"],\"error\":\"Unprocessable Entity\"}"},
    {GW_R_RATE_LIMITED, 429, "Too Many Requests", false,
     "{\"statusCode\":429,\"message\":\"Too many requests\",\"error\":\"Too Many Requests\"}"},
    {GW_R_BAD_GATEWAY, 502, "Bad Gateway", false,
     "{\"statusCode\":502,\"message\":\"MSG\",\"error\":\"Bad Gateway\"}"},
    {GW_R_UNAVAILABLE, 503, "Service Unavailable", false,
     "{\"statusCode\":503,\"message\":\"MSG\",\"error\":\"Service Unavailable\"}"},
    {GW_R_TIMEOUT, 504, "Gateway Timeout", false,
     "{\"statusCode\":504,\"message\":\"upstream timed out\",\"error\":\"Gateway Timeout\"}"},
};
#define NROWS (sizeof rows / sizeof *rows)

START_TEST(test_reply_table_covers_every_kind)
{
    ck_assert_uint_eq(NROWS, GW_R_KINDS);
    bool seen[GW_R_KINDS] = {false};
    for (size_t i = 0; i < NROWS; i++)
        seen[rows[i].k] = true;
    for (size_t k = 0; k < GW_R_KINDS; k++)
        ck_assert_msg(seen[k], "kind %zu has no row", k);
}
END_TEST

START_TEST(test_reply_status_reason_and_closes)
{
    for (size_t i = 0; i < NROWS; i++) {
        ck_assert_msg(gw_reply_status(rows[i].k) == rows[i].status, "kind %d: status %d",
                      (int)rows[i].k, gw_reply_status(rows[i].k));
        ck_assert_str_eq(gw_reply_reason(rows[i].k), rows[i].reason);
        ck_assert_msg(gw_reply_closes(rows[i].k) == rows[i].closes, "kind %d: closes",
                      (int)rows[i].k);
    }
}
END_TEST

START_TEST(test_reply_exact_bodies)
{
    static const char *const one[] = {"MSG"};
    for (size_t i = 0; i < NROWS; i++) {
        char *b = body(rows[i].k, "MSG", one, 1);
        ck_assert_msg(strcmp(b, rows[i].body) == 0, "kind %d:\n got  %s\n want %s", (int)rows[i].k,
                      b, rows[i].body);
        free(b);
    }
}
END_TEST

START_TEST(test_reply_bodies_are_strict_json_objects)
{
    static const char *const msgs[] = {"a \"b\"", "c\\d"};
    for (size_t i = 0; i < NROWS; i++) {
        char *b = body(rows[i].k, "x\n\"y\"", msgs, 2);
        struct gw_json_error e;
        cJSON *v = gw_json_parse(b, strlen(b), NULL, &e);
        ck_assert_msg(v != NULL, "kind %d: %s: %s", (int)rows[i].k, e.msg, b);
        ck_assert(cJSON_IsObject(v));
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(v, "statusCode");
        ck_assert(cJSON_IsNumber(sc));
        ck_assert_int_eq((int)sc->valuedouble, rows[i].status);
        cJSON_Delete(v);
        free(b);
    }
}
END_TEST

START_TEST(test_reply_fixed_kinds_ignore_the_message)
{
    char *b = body(GW_R_UNAUTHORIZED, "secret detail", NULL, 0);
    ck_assert_str_eq(b, rows[0].body);
    ck_assert_ptr_null(strstr(b, "secret"));
    free(b);
    b = body(GW_R_SCOPE, "users.write", NULL, 0);
    ck_assert_str_eq(b, "{\"statusCode\":401,\"message\":\"The token is not authorized for this "
                        "scope.\"}");
    free(b);
}
END_TEST

START_TEST(test_reply_unprocessable_lists_every_message)
{
    static const char *const msgs[] = {"property foo should not exist",
                                       "companyId must be a string"};
    char *b = body(GW_R_UNPROCESSABLE, NULL, msgs, 2);
    ck_assert_str_eq(b, "{\"statusCode\":422,\"message\":[\"property foo should not exist\","
                        "\"companyId must be a string\"],\"error\":\"Unprocessable Entity\"}");
    free(b);
    b = body(GW_R_UNPROCESSABLE, NULL, NULL, 0);
    ck_assert_str_eq(b, "{\"statusCode\":422,\"message\":[],\"error\":\"Unprocessable Entity\"}");
    free(b);
}
END_TEST

START_TEST(test_reply_message_is_escaped)
{
    char *b = body(GW_R_FORBIDDEN, "policy \"bot\": scope a\\b is not grantable\n", NULL, 0);
    ck_assert_str_eq(b, "{\"statusCode\":403,\"message\":\"policy \\\"bot\\\": scope a\\\\b is not "
                        "grantable\\u000a\",\"error\":\"Forbidden\"}");
    free(b);
    b = body(GW_R_NOT_FOUND, "Cannot GET /users/\xff", NULL, 0);
    ck_assert_str_eq(b, "{\"statusCode\":404,\"message\":\"Cannot GET /users/\\ufffd\","
                        "\"error\":\"Not Found\"}");
    free(b);
}
END_TEST

START_TEST(test_reply_given_kind_without_message_uses_reason)
{
    char *b = body(GW_R_BAD_GATEWAY, NULL, NULL, 0);
    ck_assert_str_eq(b,
                     "{\"statusCode\":502,\"message\":\"Bad Gateway\",\"error\":\"Bad Gateway\"}");
    free(b);
}
END_TEST

START_TEST(test_reply_appends_to_existing_buffer)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "HEAD|", 5);
    ck_assert_int_eq(gw_reply_body(b, GW_R_TIMEOUT, NULL, NULL, 0), 0);
    size_t len = evbuffer_get_length(b);
    char *s = calloc(1, len + 1);
    evbuffer_remove(b, s, len);
    ck_assert_str_eq(s, "HEAD|{\"statusCode\":504,\"message\":\"upstream timed out\","
                        "\"error\":\"Gateway Timeout\"}");
    free(s);
    evbuffer_free(b);
}
END_TEST

static Suite *reply_suite(void)
{
    Suite *s = suite_create("reply");
    TCase *tc = tcase_create("reply");
    tcase_add_test(tc, test_reply_table_covers_every_kind);
    tcase_add_test(tc, test_reply_status_reason_and_closes);
    tcase_add_test(tc, test_reply_exact_bodies);
    tcase_add_test(tc, test_reply_bodies_are_strict_json_objects);
    tcase_add_test(tc, test_reply_fixed_kinds_ignore_the_message);
    tcase_add_test(tc, test_reply_unprocessable_lists_every_message);
    tcase_add_test(tc, test_reply_message_is_escaped);
    tcase_add_test(tc, test_reply_given_kind_without_message_uses_reason);
    tcase_add_test(tc, test_reply_appends_to_existing_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(reply_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
