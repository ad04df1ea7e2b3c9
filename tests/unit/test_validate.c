/* Unit tests of request validation (proxy/validate.c) against SPEC §5: the Version header,
 * query parameters against the op's declaration (422 messages in the upstream's words), and
 * the body checks (415, 413, 400, object). The config is a zeroed struct with only the fields
 * validation reads; the ops come from the shipped OpenAPI document. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"
#include "openapi.h"
#include "route.h"
#include "validate.h"

static struct gw_openapi *m;
static struct gw_config cfg;
static char *versions[] = {"2021-07-28", NULL};

static void setup(void)
{
    char err[512];
    ck_assert_msg(gw_openapi_load(gw_openapi_default_path(), &m, err, sizeof err) == 0, "%s", err);
    memset(&cfg, 0, sizeof cfg);
    cfg.upstream.api_versions = versions;
    cfg.upstream.napi_versions = 1;
    cfg.limits.max_body_bytes = 1024;
    cfg.limits.max_json_depth = 4;
}

static void teardown(void)
{
    gw_openapi_free(m);
    m = NULL;
}

static const struct gw_op *op(const char *id)
{
    const struct gw_op *o = gw_openapi_op(m, id);
    ck_assert_msg(o != NULL, "no op %s", id);
    return o;
}

/* ---- Version ---- */

START_TEST(test_validate_version_missing)
{
    enum gw_reply_kind k = GW_R_KINDS;
    ck_assert_int_eq(gw_validate_version(&cfg, NULL, &k), -1);
    ck_assert_int_eq(k, GW_R_VERSION_MISSING);
}
END_TEST

START_TEST(test_validate_version_not_accepted)
{
    static const char *const bad[] = {"2021-07-29",  "",          "2021-07-28 ",
                                      " 2021-07-28", "2021-07-2", "2021-04-15"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        enum gw_reply_kind k = GW_R_KINDS;
        ck_assert_msg(gw_validate_version(&cfg, bad[i], &k) == -1, "accepted '%s'", bad[i]);
        ck_assert_int_eq(k, GW_R_VERSION_INVALID);
    }
}
END_TEST

START_TEST(test_validate_version_accepted)
{
    enum gw_reply_kind k = GW_R_KINDS;
    ck_assert_int_eq(gw_validate_version(&cfg, "2021-07-28", &k), 0);
    ck_assert_int_eq(k, GW_R_KINDS); /* untouched */
    /* every configured value is accepted */
    char *two[] = {"2021-07-28", "2021-04-15"};
    cfg.upstream.api_versions = two;
    cfg.upstream.napi_versions = 2;
    ck_assert_int_eq(gw_validate_version(&cfg, "2021-04-15", &k), 0);
    ck_assert_int_eq(gw_validate_version(&cfg, "2021-07-28", &k), 0);
}
END_TEST

/* ---- query ---- */

/* Routes target (GET) and validates its query; returns the messages (caller frees). */
static struct gw_msgs query_msgs(const char *method, const char *target, const char *want_op)
{
    struct gw_route r;
    char why[128];
    enum gw_route_result rc = gw_route_match(m, method, target, &r, why, sizeof why);
    ck_assert_msg(rc == GW_ROUTE_OK, "%s: %d %s", target, (int)rc, why);
    ck_assert_str_eq(r.op->id, want_op);
    struct gw_msgs out = {0};
    size_t n = gw_validate_query(&r, &out);
    ck_assert_uint_eq(n, out.n);
    gw_route_free(&r);
    return out;
}

#define ASSERT_MSGS(msgs, ...)                                                                     \
    do {                                                                                           \
        static const char *const want_[] = {__VA_ARGS__};                                          \
        size_t nw_ = sizeof want_ / sizeof *want_;                                                 \
        ck_assert_msg((msgs).n == nw_, "want %zu messages, got %zu (first: %s)", nw_, (msgs).n,    \
                      (msgs).n ? (msgs).v[0] : "-");                                               \
        for (size_t i_ = 0; i_ < nw_; i_++)                                                        \
            ck_assert_str_eq((msgs).v[i_], want_[i_]);                                             \
    } while (0)

START_TEST(test_validate_query_search_users_valid)
{
    struct gw_msgs q = query_msgs(
        "GET",
        "/users/search?companyId=c1&query=John&skip=0&limit=10&locationId=l1&type=agency&"
        "role=admin&ids=a,b&sort=dateAdded&sortDirection=asc&enabled2waySync=true",
        "search-users");
    ck_assert_uint_eq(q.n, 0);
    gw_msgs_free(&q);
    q = query_msgs("GET", "/users/search?companyId=c1&enabled2waySync=false", "search-users");
    ck_assert_uint_eq(q.n, 0);
    gw_msgs_free(&q);
}
END_TEST

START_TEST(test_validate_query_unknown_parameter)
{
    struct gw_msgs q = query_msgs("GET", "/users/search?companyId=c1&foo=1", "search-users");
    ASSERT_MSGS(q, "property foo should not exist");
    gw_msgs_free(&q);
    /* a header parameter is not a query parameter, nor is a path parameter */
    q = query_msgs("GET", "/users/search?companyId=c1&Version=2021-07-28", "search-users");
    ASSERT_MSGS(q, "property Version should not exist");
    gw_msgs_free(&q);
    q = query_msgs("GET", "/users/abc?userId=abc", "get-user");
    ASSERT_MSGS(q, "property userId should not exist");
    gw_msgs_free(&q);
    /* names are case-sensitive */
    q = query_msgs("GET", "/users/search?companyid=c1&companyId=c1", "search-users");
    ASSERT_MSGS(q, "property companyid should not exist");
    gw_msgs_free(&q);
}
END_TEST

START_TEST(test_validate_query_repeated_parameter)
{
    struct gw_msgs q = query_msgs("GET", "/users/search?companyId=a&companyId=b", "search-users");
    ASSERT_MSGS(q, "companyId must be given only once");
    gw_msgs_free(&q);
    /* one message per repeated name, however often it repeats */
    q = query_msgs("GET", "/users/search?companyId=a&limit=1&companyId=b&companyId=c&limit=2",
                   "search-users");
    ASSERT_MSGS(q, "companyId must be given only once", "limit must be given only once");
    gw_msgs_free(&q);
}
END_TEST

START_TEST(test_validate_query_required_parameter_missing)
{
    struct gw_msgs q = query_msgs("GET", "/users/search?query=John", "search-users");
    ASSERT_MSGS(q, "companyId should not be empty");
    gw_msgs_free(&q);
    q = query_msgs("GET", "/users/", "get-user-by-location");
    ASSERT_MSGS(q, "locationId should not be empty");
    gw_msgs_free(&q);
    q = query_msgs("GET", "/users?locationId=loc1", "get-user-by-location");
    ck_assert_uint_eq(q.n, 0);
    gw_msgs_free(&q);
    /* an empty value is empty too, as the upstream's IsNotEmpty says */
    q = query_msgs("GET", "/users/search?companyId=", "search-users");
    ASSERT_MSGS(q, "companyId should not be empty");
    gw_msgs_free(&q);
    q = query_msgs("GET", "/users/?locationId", "get-user-by-location");
    ASSERT_MSGS(q, "locationId should not be empty");
    gw_msgs_free(&q);
}
END_TEST

START_TEST(test_validate_query_boolean)
{
    static const char *const bad[] = {"yes", "1", "TRUE", "True", "", "true%20"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char t[128];
        snprintf(t, sizeof t, "/users/search?companyId=c1&enabled2waySync=%s", bad[i]);
        struct gw_msgs q = query_msgs("GET", t, "search-users");
        ASSERT_MSGS(q, "enabled2waySync must be a boolean value");
        gw_msgs_free(&q);
    }
}
END_TEST

START_TEST(test_validate_query_reports_every_violation_in_order)
{
    struct gw_msgs q = query_msgs(
        "GET", "/users/search?foo=1&enabled2waySync=yes&bar=2&enabled2waySync=no", "search-users");
    ASSERT_MSGS(q, "property foo should not exist", "enabled2waySync must be a boolean value",
                "property bar should not exist", "enabled2waySync must be given only once",
                "companyId should not be empty");
    gw_msgs_free(&q);
}
END_TEST

START_TEST(test_validate_query_ops_without_query_parameters)
{
    struct gw_msgs q = query_msgs("POST", "/users/?x=1", "create-user");
    ASSERT_MSGS(q, "property x should not exist");
    gw_msgs_free(&q);
    q = query_msgs("DELETE", "/users/abc", "delete-user");
    ck_assert_uint_eq(q.n, 0);
    gw_msgs_free(&q);
}
END_TEST

/* An op declared by hand, for the parameter types the shipped document does not use. */
START_TEST(test_validate_query_number_and_enum_types)
{
    struct gw_json_error e;
    cJSON *num = gw_json_parse("{\"type\":\"integer\"}", 18, NULL, &e);
    cJSON *en = gw_json_parse("{\"type\":\"string\",\"enum\":[\"asc\",\"desc\"]}", 39, NULL, &e);
    ck_assert_ptr_nonnull(num);
    ck_assert_ptr_nonnull(en);
    struct gw_param params[] = {
        {.name = "limit", .in = GW_IN_QUERY, .schema = num},
        {.name = "dir", .in = GW_IN_QUERY, .schema = en},
    };
    struct gw_op o = {.id = "hand-made", .params = params, .nparams = 2};
    struct gw_route r = {.op = &o, .nq = 2};
    r.qname[0] = "limit";
    r.qval[0] = "10";
    r.qname[1] = "dir";
    r.qval[1] = "desc";
    struct gw_msgs q = {0};
    ck_assert_uint_eq(gw_validate_query(&r, &q), 0);
    r.qval[0] = "ten";
    r.qval[1] = "up";
    ck_assert_uint_eq(gw_validate_query(&r, &q), 2);
    ASSERT_MSGS(q, "limit must be a number conforming to the specified constraints",
                "dir must be one of the following values: asc, desc");
    gw_msgs_free(&q);
    r.qval[0] = "";
    r.qval[1] = "DESC";
    ck_assert_uint_eq(gw_validate_query(&r, &q), 2);
    gw_msgs_free(&q);
    /* only plain decimal integers: no hex, inf, nan, space, sign, fraction or leading zero */
    static const char *const not_int[] = {"nan", "inf", "0x1A", " 5", "+5", "1.5", "05", "1e3"};
    r.qval[1] = "asc";
    for (size_t i = 0; i < sizeof not_int / sizeof *not_int; i++) {
        r.qval[0] = not_int[i];
        ck_assert_msg(gw_validate_query(&r, &q) == 1, "%s accepted as an integer", not_int[i]);
        gw_msgs_free(&q);
    }
    r.qval[0] = "-12";
    ck_assert_uint_eq(gw_validate_query(&r, &q), 0);
    cJSON_Delete(num);
    cJSON_Delete(en);
}
END_TEST

START_TEST(test_validate_msgs_grow_and_free)
{
    struct gw_msgs q = {0};
    for (int i = 0; i < 100; i++)
        gw_msgs_add(&q, "message %d", i);
    ck_assert_uint_eq(q.n, 100);
    ck_assert_str_eq(q.v[99], "message 99");
    gw_msgs_free(&q);
    ck_assert_uint_eq(q.n, 0);
    ck_assert_ptr_null(q.v);
}
END_TEST

/* ---- body ---- */

/* Runs gw_validate_body; returns its result, kind and message through the pointers. */
static int vbody(const char *opid, const char *ct, const char *data, size_t len, cJSON **body,
                 enum gw_reply_kind *kind, char *msg, size_t msglen)
{
    *kind = GW_R_KINDS;
    struct gw_msgs msgs = {0};
    int rc = gw_validate_body(&cfg, op(opid), ct, data, len, body, &msgs, kind, msg, msglen);
    if (rc != 0 && *kind == GW_R_UNPROCESSABLE && msgs.n) /* the schema's first message */
        snprintf(msg, msglen, "%s", msgs.v[0]);
    gw_msgs_free(&msgs);
    return rc;
}

#define BODY_REFUSED(opid, ct, data, len, want_kind, want_msg)                                     \
    do {                                                                                           \
        cJSON *b_ = (cJSON *)1;                                                                    \
        enum gw_reply_kind k_;                                                                     \
        char msg_[256];                                                                            \
        int rc_ = vbody((opid), (ct), (data), (len), &b_, &k_, msg_, sizeof msg_);                 \
        ck_assert_msg(rc_ == -1, "accepted %s", (data));                                           \
        ck_assert_ptr_null(b_);                                                                    \
        ck_assert_int_eq(k_, (want_kind));                                                         \
        ck_assert_str_eq(msg_, (want_msg));                                                        \
    } while (0)

static const char *const good = "{\"companyId\":\"c1\",\"emails\":\"a@b.c\"}";

START_TEST(test_validate_body_needs_json_content_type)
{
    BODY_REFUSED("filter-users-by-email", "text/plain", good, strlen(good), GW_R_UNSUPPORTED_MEDIA,
                 "Content-Type must be application/json");
    BODY_REFUSED("filter-users-by-email", NULL, good, strlen(good), GW_R_UNSUPPORTED_MEDIA,
                 "Content-Type must be application/json");
    static const char *const bad[] = {"",
                                      "application/jsonp",
                                      "application/json; charset=latin1",
                                      "application/json; charset=utf-16",
                                      "application/json; charset=utf16",
                                      "application/json; charset=ascii",
                                      "application/json; charset=",
                                      "application/json;",
                                      "application/json; foo=bar",
                                      "application/json, text/plain",
                                      "application/x-www-form-urlencoded",
                                      "application/json; charset=utf-8; x=y",
                                      "application/json; charset=\"utf-8",
                                      "text/json"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BODY_REFUSED("create-user", bad[i], good, strlen(good), GW_R_UNSUPPORTED_MEDIA,
                     "Content-Type must be application/json");
}
END_TEST

START_TEST(test_validate_body_json_content_type_variants_accepted)
{
    static const char *const ok[] = {"application/json",
                                     "application/json; charset=UTF-8",
                                     "application/json;charset=utf-8",
                                     "APPLICATION/JSON",
                                     "application/json; charset=\"utf-8\"",
                                     "application/json ",
                                     "application/json\t;\tcharset=Utf-8 "};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        cJSON *b;
        enum gw_reply_kind k;
        char msg[128];
        int rc = vbody("filter-users-by-email", ok[i], good, strlen(good), &b, &k, msg, sizeof msg);
        ck_assert_msg(rc == 0, "'%s' refused: %s", ok[i], msg);
        ck_assert_ptr_nonnull(b);
        cJSON_Delete(b);
    }
}
END_TEST

START_TEST(test_validate_body_size_cap)
{
    /* exactly max_body_bytes is accepted, one more is 413 */
    char buf[1100];
    memset(buf, ' ', sizeof buf);
    memcpy(buf, good, strlen(good));
    cJSON *b;
    enum gw_reply_kind k;
    char msg[128];
    int rc = vbody("filter-users-by-email", "application/json", buf, 1024, &b, &k, msg, sizeof msg);
    ck_assert_msg(rc == 0, "%s", msg);
    cJSON_Delete(b);
    b = (cJSON *)1;
    rc = vbody("filter-users-by-email", "application/json", buf, 1025, &b, &k, msg, sizeof msg);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(k, GW_R_TOO_LARGE);
    ck_assert_ptr_null(b);
}
END_TEST

START_TEST(test_validate_body_invalid_json_is_400_with_parser_message)
{
    const char *trunc = "{\"a\":";
    BODY_REFUSED("create-user", "application/json", trunc, strlen(trunc), GW_R_BAD_REQUEST,
                 "invalid JSON body: unexpected end of input at byte 5");
    const char *dup = "{\"a\":1,\"b\":{\"x\":1,\"x\":2}}";
    BODY_REFUSED("update-user", "application/json", dup, strlen(dup), GW_R_BAD_REQUEST,
                 "invalid JSON body: duplicate member \"x\" at byte 18");
    const char *utf = "{\"a\":\"\xed\xa0\x80\"}";
    BODY_REFUSED("create-user", "application/json", utf, strlen(utf), GW_R_BAD_REQUEST,
                 "invalid JSON body: invalid UTF-8 in string at byte 6");
    BODY_REFUSED("create-user", "application/json", "", 0, GW_R_BAD_REQUEST,
                 "create-user needs a JSON request body");
    const char *comment = "{} // no comments in bodies";
    BODY_REFUSED("create-user", "application/json", comment, strlen(comment), GW_R_BAD_REQUEST,
                 "invalid JSON body: unexpected data after the value at byte 3");
}
END_TEST

START_TEST(test_validate_body_depth_cap_from_config)
{
    /* at the cap the body parses (and then meets the schema: 422, not 400) */
    const char *d4 = "{\"a\":{\"b\":{\"c\":[1]}}}";
    cJSON *b;
    enum gw_reply_kind k;
    char msg[128];
    ck_assert_int_eq(
        vbody("update-user", "application/json", d4, strlen(d4), &b, &k, msg, sizeof msg), -1);
    ck_assert_int_eq(k, GW_R_UNPROCESSABLE);
    ck_assert_str_eq(msg, "property a should not exist");
    const char *d5 = "{\"a\":{\"b\":{\"c\":[[1]]}}}";
    BODY_REFUSED("create-user", "application/json", d5, strlen(d5), GW_R_BAD_REQUEST,
                 "invalid JSON body: nesting deeper than 4 at byte 16");
}
END_TEST

START_TEST(test_validate_body_must_be_an_object)
{
    static const char *const bad[] = {"[]",  "[{\"companyId\":\"c1\"}]", "\"x\"", "1", "null",
                                      "true"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        BODY_REFUSED("create-user", "application/json", bad[i], strlen(bad[i]), GW_R_BAD_REQUEST,
                     "the request body must be a JSON object");
}
END_TEST

START_TEST(test_validate_body_ops_without_body)
{
    static const char *const ids[] = {"get-user", "delete-user", "search-users",
                                      "get-user-by-location"};
    for (size_t i = 0; i < 4; i++) {
        char want[128];
        snprintf(want, sizeof want, "%s takes no request body", ids[i]);
        BODY_REFUSED(ids[i], "application/json", "{}", 2, GW_R_BAD_REQUEST, want);
        cJSON *b = (cJSON *)1;
        enum gw_reply_kind k;
        char msg[64];
        /* an empty body is fine, whatever the content type */
        ck_assert_int_eq(vbody(ids[i], "text/plain", "", 0, &b, &k, msg, sizeof msg), 0);
        ck_assert_ptr_null(b);
        ck_assert_int_eq(vbody(ids[i], NULL, NULL, 0, &b, &k, msg, sizeof msg), 0);
    }
}
END_TEST

START_TEST(test_validate_body_returns_the_object)
{
    const char *data = "{\"companyId\":\"c1\",\"emails\":\"a@b.c\",\"deleted\":false}TRAILING";
    cJSON *b = NULL;
    enum gw_reply_kind k;
    char msg[128];
    /* the length given is the body: the bytes after it are not read */
    int rc = vbody("filter-users-by-email", "application/json; charset=utf-8", data,
                   strlen(data) - 8, &b, &k, msg, sizeof msg);
    ck_assert_msg(rc == 0, "%s", msg);
    ck_assert(cJSON_IsObject(b));
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(b, "companyId")->valuestring, "c1");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(b, "emails")->valuestring, "a@b.c");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(b, "deleted")));
    ck_assert_str_eq(msg, "");
    cJSON_Delete(b);
}
END_TEST

START_TEST(test_validate_body_message_truncated_to_buffer)
{
    const char *dup = "{\"aaaaaaaaaaaa\":1,\"aaaaaaaaaaaa\":2}";
    cJSON *b;
    enum gw_reply_kind k;
    char msg[16];
    ck_assert_int_eq(
        vbody("create-user", "application/json", dup, strlen(dup), &b, &k, msg, sizeof msg), -1);
    ck_assert_uint_eq(strlen(msg), sizeof msg - 1);
    ck_assert_str_eq(msg, "invalid JSON bo");
}
END_TEST

static Suite *validate_suite(void)
{
    Suite *s = suite_create("validate");
    TCase *tv = tcase_create("version");
    tcase_add_checked_fixture(tv, setup, teardown);
    tcase_add_test(tv, test_validate_version_missing);
    tcase_add_test(tv, test_validate_version_not_accepted);
    tcase_add_test(tv, test_validate_version_accepted);
    suite_add_tcase(s, tv);
    TCase *tq = tcase_create("query");
    tcase_add_checked_fixture(tq, setup, teardown);
    tcase_add_test(tq, test_validate_query_search_users_valid);
    tcase_add_test(tq, test_validate_query_unknown_parameter);
    tcase_add_test(tq, test_validate_query_repeated_parameter);
    tcase_add_test(tq, test_validate_query_required_parameter_missing);
    tcase_add_test(tq, test_validate_query_boolean);
    tcase_add_test(tq, test_validate_query_reports_every_violation_in_order);
    tcase_add_test(tq, test_validate_query_ops_without_query_parameters);
    tcase_add_test(tq, test_validate_query_number_and_enum_types);
    tcase_add_test(tq, test_validate_msgs_grow_and_free);
    suite_add_tcase(s, tq);
    TCase *tb = tcase_create("body");
    tcase_add_checked_fixture(tb, setup, teardown);
    tcase_add_test(tb, test_validate_body_needs_json_content_type);
    tcase_add_test(tb, test_validate_body_json_content_type_variants_accepted);
    tcase_add_test(tb, test_validate_body_size_cap);
    tcase_add_test(tb, test_validate_body_invalid_json_is_400_with_parser_message);
    tcase_add_test(tb, test_validate_body_depth_cap_from_config);
    tcase_add_test(tb, test_validate_body_must_be_an_object);
    tcase_add_test(tb, test_validate_body_ops_without_body);
    tcase_add_test(tb, test_validate_body_returns_the_object);
    tcase_add_test(tb, test_validate_body_message_truncated_to_buffer);
    suite_add_tcase(s, tb);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(validate_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
