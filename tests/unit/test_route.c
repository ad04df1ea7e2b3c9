/* Unit tests of request routing (proxy/route.c) against SPEC §3: method + target -> op, path
 * parameters, the canonical upstream path, the strict target rules (400), unknown routes
 * (404), and query decoding and re-encoding. The op table is the shipped OpenAPI document. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "openapi.h"
#include "route.h"

static struct gw_openapi *m;

static void load_model(void)
{
    char err[512];
    ck_assert_msg(gw_openapi_load(gw_openapi_default_path(), &m, err, sizeof err) == 0, "%s", err);
}

static void free_model(void)
{
    gw_openapi_free(m);
    m = NULL;
}

/* Matches and expects GW_ROUTE_OK with op id; r is filled (caller frees). */
#define ROUTES_TO(M_, T_, R_, ID_)                                                                 \
    do {                                                                                           \
        char why_[128];                                                                            \
        enum gw_route_result rc_ = gw_route_match(m, (M_), (T_), (R_), why_, sizeof why_);         \
        ck_assert_msg(rc_ == GW_ROUTE_OK, "%s %s: result %d (%s)", (M_), (T_), (int)rc_, why_);    \
        ck_assert_str_eq((R_)->op->id, (ID_));                                                     \
    } while (0)

/* Expects 404; the path kept for the message is checked (unless P_ is NULL). */
#define NOT_FOUND(M_, T_, P_)                                                                      \
    do {                                                                                           \
        struct gw_route r_;                                                                        \
        char why_[128];                                                                            \
        const char *p_ = (P_);                                                                     \
        enum gw_route_result rc_ = gw_route_match(m, (M_), (T_), &r_, why_, sizeof why_);          \
        ck_assert_msg(rc_ == GW_ROUTE_NOT_FOUND, "%s %s: result %d (%s) op %s", (M_), (T_),        \
                      (int)rc_, why_, r_.op ? r_.op->id : "-");                                    \
        ck_assert_ptr_null(r_.op);                                                                 \
        if (p_ != NULL)                                                                            \
            ck_assert_str_eq(r_.path, p_);                                                         \
        gw_route_free(&r_);                                                                        \
    } while (0)

/* Expects 400 with the reason W_. */
#define BAD_TARGET(M_, T_, W_)                                                                     \
    do {                                                                                           \
        struct gw_route r_;                                                                        \
        char why_[128];                                                                            \
        enum gw_route_result rc_ = gw_route_match(m, (M_), (T_), &r_, why_, sizeof why_);          \
        ck_assert_msg(rc_ == GW_ROUTE_BAD_TARGET, "%s %s: result %d", (M_), (T_), (int)rc_);       \
        ck_assert_str_eq(why_, (W_));                                                              \
        ck_assert_ptr_null(r_.op);                                                                 \
        gw_route_free(&r_);                                                                        \
    } while (0)

/* ---- matching ---- */

START_TEST(test_route_create_user_with_and_without_slash)
{
    struct gw_route r;
    ROUTES_TO("POST", "/users/", &r, "create-user");
    ck_assert_str_eq(r.upstream_path, "/users/");
    ck_assert_str_eq(r.path, "/users/");
    ck_assert_uint_eq(r.npath, 0);
    ck_assert_uint_eq(r.nq, 0);
    gw_route_free(&r);
    ROUTES_TO("POST", "/users", &r, "create-user");
    ck_assert_str_eq(r.upstream_path, "/users/");
    ck_assert_str_eq(r.path, "/users");
    gw_route_free(&r);
}
END_TEST

START_TEST(test_route_search_is_not_a_user_id)
{
    struct gw_route r;
    ROUTES_TO("GET", "/users/search", &r, "search-users");
    ck_assert_str_eq(r.upstream_path, "/users/search");
    ck_assert_uint_eq(r.npath, 0);
    gw_route_free(&r);
    ROUTES_TO("GET", "/users/search?companyId=c1", &r, "search-users");
    ck_assert_str_eq(r.path, "/users/search");
    gw_route_free(&r);
    /* a user whose id merely starts with "search" is a user */
    ROUTES_TO("GET", "/users/search2", &r, "get-user");
    ck_assert_str_eq(r.pval[0], "search2");
    gw_route_free(&r);
}
END_TEST

START_TEST(test_route_filter_by_email)
{
    struct gw_route r;
    ROUTES_TO("POST", "/users/search/filter-by-email", &r, "filter-users-by-email");
    ck_assert_str_eq(r.upstream_path, "/users/search/filter-by-email");
    gw_route_free(&r);
    NOT_FOUND("GET", "/users/search/filter-by-email", "/users/search/filter-by-email");
    NOT_FOUND("POST", "/users/search", "/users/search");
}
END_TEST

START_TEST(test_route_user_id_ops)
{
    static const struct {
        const char *method, *id;
    } t[] = {{"GET", "get-user"}, {"PUT", "update-user"}, {"DELETE", "delete-user"}};
    for (size_t i = 0; i < 3; i++) {
        struct gw_route r;
        ROUTES_TO(t[i].method, "/users/abc123", &r, t[i].id);
        ck_assert_uint_eq(r.npath, 1);
        ck_assert_str_eq(r.pname[0], "userId");
        ck_assert_str_eq(r.pval[0], "abc123");
        ck_assert_str_eq(r.upstream_path, "/users/abc123");
        ck_assert_str_eq(r.path, "/users/abc123");
        gw_route_free(&r);
    }
}
END_TEST

START_TEST(test_route_get_user_by_location)
{
    struct gw_route r;
    ROUTES_TO("GET", "/users/?locationId=X", &r, "get-user-by-location");
    ck_assert_str_eq(r.upstream_path, "/users/");
    ck_assert_str_eq(r.path, "/users/");
    ck_assert_uint_eq(r.nq, 1);
    ck_assert_str_eq(r.qname[0], "locationId");
    ck_assert_str_eq(r.qval[0], "X");
    ck_assert_str_eq(gw_route_query(&r, "locationId"), "X");
    gw_route_free(&r);
    ROUTES_TO("GET", "/users?locationId=X", &r, "get-user-by-location");
    ck_assert_str_eq(r.upstream_path, "/users/");
    gw_route_free(&r);
}
END_TEST

START_TEST(test_route_user_id_length_limits)
{
    char target[128] = "/users/";
    memset(target + 7, 'a', 64);
    target[71] = '\0';
    struct gw_route r;
    ROUTES_TO("GET", target, &r, "get-user");
    ck_assert_uint_eq(strlen(r.pval[0]), 64);
    gw_route_free(&r);
    target[71] = 'a';
    target[72] = '\0';
    NOT_FOUND("GET", target, target);
}
END_TEST

START_TEST(test_route_unknown_paths_are_404)
{
    NOT_FOUND("GET", "/contacts/", "/contacts/");
    NOT_FOUND("GET", "/", "/");
    NOT_FOUND("GET", "/Users/", "/Users/");
    NOT_FOUND("GET", "/users/abc/extra", "/users/abc/extra");
    NOT_FOUND("GET", "/users-x", "/users-x");
    NOT_FOUND("PATCH", "/users/abc", "/users/abc");
    NOT_FOUND("DELETE", "/users/", "/users/");
    NOT_FOUND("PUT", "/users", "/users");
    NOT_FOUND("get", "/users/abc", "/users/abc"); /* methods are case-sensitive */
    NOT_FOUND("FOO", "/users/abc", "/users/abc");
    NOT_FOUND("GET", "/users/abc-123", "/users/abc-123");
    NOT_FOUND("GET", "/users/abc_123", "/users/abc_123");
    NOT_FOUND("GET", "/users/abc@x", "/users/abc@x");
    /* more segments than any template may have */
    NOT_FOUND("GET", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r", NULL);
}
END_TEST

/* ---- bad targets ---- */

START_TEST(test_route_dot_segments_are_400)
{
    BAD_TARGET("GET", "/users/..", "dot segment in path");
    BAD_TARGET("GET", "/users/../users/abc", "dot segment in path");
    BAD_TARGET("GET", "/users/.", "dot segment in path");
    BAD_TARGET("GET", "/./users/abc", "dot segment in path");
    BAD_TARGET("GET", "/users/./", "dot segment in path");
}
END_TEST

START_TEST(test_route_empty_segments_are_400)
{
    BAD_TARGET("GET", "//users/abc", "empty path segment");
    BAD_TARGET("GET", "/users//abc", "empty path segment");
    BAD_TARGET("POST", "/users//", "empty path segment");
}
END_TEST

START_TEST(test_route_percent_in_path_is_400)
{
    BAD_TARGET("GET", "/users/%2e%2e", "percent-encoding in path");
    BAD_TARGET("GET", "/users/abc%31", "percent-encoding in path");
    BAD_TARGET("GET", "/%75sers/", "percent-encoding in path");
}
END_TEST

START_TEST(test_route_fragment_is_400)
{
    BAD_TARGET("GET", "/users/abc#frag", "fragment in request target");
    BAD_TARGET("GET", "/users/?locationId=x#frag", "fragment in request target");
    BAD_TARGET("GET", "/users/#", "fragment in request target");
}
END_TEST

START_TEST(test_route_non_origin_form_is_400)
{
    BAD_TARGET("GET", "users/abc", "request target is not in origin form");
    BAD_TARGET("GET", "http://services.leadconnectorhq.com/users/abc",
               "request target is not in origin form");
    BAD_TARGET("OPTIONS", "*", "request target is not in origin form");
    BAD_TARGET("GET", "", "request target is not in origin form");
}
END_TEST

START_TEST(test_route_invalid_characters_are_400)
{
    BAD_TARGET("GET", "/users/\"abc\"", "invalid character in path");
    BAD_TARGET("GET", "/users/a\\b", "invalid character in path");
    BAD_TARGET("GET", "/users/a b", "invalid character in path");
    BAD_TARGET("GET", "/users/<x>", "invalid character in path");
    BAD_TARGET("GET", "/users/\xc3\xa9", "invalid character in path");
    BAD_TARGET("GET", "/users/a\tb", "invalid character in path");
    BAD_TARGET("GET", "/users/search?q=\"x\"", "invalid character in query");
    BAD_TARGET("GET", "/users/search?q=a\\b", "invalid character in query");
    BAD_TARGET("GET", "/users/search?q=a b", "invalid character in query");
    BAD_TARGET("GET", "/users/search?q=\xc3\xa9", "invalid character in query");
}
END_TEST

/* ---- query ---- */

START_TEST(test_route_query_decoding)
{
    struct gw_route r;
    ROUTES_TO("GET", "/users/search?companyId=a%20b&query=x+y&role=%C3%A9&sort=%c3%a9&type=a%2Bb",
              &r, "search-users");
    ck_assert_uint_eq(r.nq, 5);
    ck_assert_str_eq(r.qname[0], "companyId");
    ck_assert_str_eq(r.qval[0], "a b");
    ck_assert_str_eq(r.qname[1], "query");
    ck_assert_str_eq(r.qval[1], "x y");
    ck_assert_str_eq(r.qval[2], "\xc3\xa9");
    ck_assert_str_eq(r.qval[3], "\xc3\xa9");
    ck_assert_str_eq(r.qval[4], "a+b");
    gw_route_free(&r);
    /* names are decoded too; a name without '=' has an empty value; '?' and '/' are data */
    ROUTES_TO("GET", "/users/search?compan%79Id=1&flag&q=a?b/c=d", &r, "search-users");
    ck_assert_uint_eq(r.nq, 3);
    ck_assert_str_eq(r.qname[0], "companyId");
    ck_assert_str_eq(r.qname[1], "flag");
    ck_assert_str_eq(r.qval[1], "");
    ck_assert_str_eq(r.qval[2], "a?b/c=d");
    gw_route_free(&r);
}
END_TEST

START_TEST(test_route_malformed_escapes_are_400)
{
    BAD_TARGET("GET", "/users/search?companyId=%G1", "malformed percent-encoding in query");
    BAD_TARGET("GET", "/users/search?companyId=%", "malformed percent-encoding in query");
    BAD_TARGET("GET", "/users/search?companyId=a%4", "malformed percent-encoding in query");
    BAD_TARGET("GET", "/users/search?companyId=%4&x=1", "malformed percent-encoding in query");
    BAD_TARGET("GET", "/users/search?%=1", "malformed percent-encoding in query");
    BAD_TARGET("GET", "/users/search?=1", "query parameter without a name");
}
END_TEST

START_TEST(test_route_decoded_control_characters_are_400)
{
    BAD_TARGET("GET", "/users/search?companyId=a%00b", "query is not clean UTF-8");
    BAD_TARGET("GET", "/users/search?companyId=a%0A", "query is not clean UTF-8");
    BAD_TARGET("GET", "/users/search?companyId=a%0d%0aX-Evil:1", "query is not clean UTF-8");
    BAD_TARGET("GET", "/users/search?companyId=%7F", "query is not clean UTF-8");
    BAD_TARGET("GET", "/users/search?companyId=%C2%80", "query is not clean UTF-8"); /* C1 */
    BAD_TARGET("GET", "/users/search?a%09=1", "query is not clean UTF-8");
}
END_TEST

START_TEST(test_route_decoded_invalid_utf8_is_400)
{
    BAD_TARGET("GET", "/users/search?companyId=%FF", "query is not clean UTF-8");
    BAD_TARGET("GET", "/users/search?companyId=%C3", "query is not clean UTF-8");
    BAD_TARGET("GET", "/users/search?companyId=%C0%AF", "query is not clean UTF-8");
    BAD_TARGET("GET", "/users/search?companyId=%ED%A0%80", "query is not clean UTF-8");
    struct gw_route r;
    ROUTES_TO("GET", "/users/search?companyId=%F0%9F%98%80", &r, "search-users");
    ck_assert_str_eq(r.qval[0], "\xf0\x9f\x98\x80");
    gw_route_free(&r);
}
END_TEST

static char *many_params(int n)
{
    char *t = malloc(32 + (size_t)n * 8);
    ck_assert_ptr_nonnull(t);
    size_t w = (size_t)snprintf(t, 32, "/users/search?");
    for (int i = 0; i < n; i++)
        w += (size_t)snprintf(t + w, 16, "%sp%d=1", i ? "&" : "", i);
    return t;
}

START_TEST(test_route_query_parameter_count_cap)
{
    char *t = many_params(64);
    struct gw_route r;
    ROUTES_TO("GET", t, &r, "search-users");
    ck_assert_uint_eq(r.nq, 64);
    ck_assert_str_eq(r.qname[63], "p63");
    gw_route_free(&r);
    free(t);
    t = many_params(65);
    BAD_TARGET("GET", t, "too many query parameters");
    free(t);
}
END_TEST

START_TEST(test_route_empty_query_pieces_skipped)
{
    struct gw_route r;
    ROUTES_TO("GET", "/users/search?a=1&&b=2&", &r, "search-users");
    ck_assert_uint_eq(r.nq, 2);
    ck_assert_str_eq(r.qname[0], "a");
    ck_assert_str_eq(r.qname[1], "b");
    ck_assert_str_eq(r.qval[1], "2");
    gw_route_free(&r);
    ROUTES_TO("GET", "/users/search?", &r, "search-users");
    ck_assert_uint_eq(r.nq, 0);
    char *qs = gw_route_query_string(&r);
    ck_assert_str_eq(qs, "");
    free(qs);
    gw_route_free(&r);
    ROUTES_TO("GET", "/users/search?&&&", &r, "search-users");
    ck_assert_uint_eq(r.nq, 0);
    gw_route_free(&r);
}
END_TEST

START_TEST(test_route_query_string_reencodes_canonically)
{
    struct gw_route r;
    ROUTES_TO("GET",
              "/users/search?companyId=a+b&query=%c3%a9&sort=A-Z_.~09&x=%2F/&flag&y=a%3Db'(!)", &r,
              "search-users");
    char *qs = gw_route_query_string(&r);
    ck_assert_str_eq(
        qs, "companyId=a%20b&query=%C3%A9&sort=A-Z_.~09&x=%2F%2F&flag=&y=a%3Db%27%28%21%29");
    free(qs);
    gw_route_free(&r);
    /* order kept, repeated names kept */
    ROUTES_TO("GET", "/users/search?b=2&a=1&b=3", &r, "search-users");
    qs = gw_route_query_string(&r);
    ck_assert_str_eq(qs, "b=2&a=1&b=3");
    ck_assert_str_eq(gw_route_query(&r, "b"), "2"); /* the first of a repeated name */
    ck_assert_ptr_null(gw_route_query(&r, "c"));
    free(qs);
    gw_route_free(&r);
}
END_TEST

/* A document whose parameter templates come before the static ones: the static segment still
 * wins, so the outcome does not depend on the document's order. */
START_TEST(test_route_static_segment_beats_parameter_in_any_order)
{
    struct gw_openapi *saved = m, *doc = NULL;
    char err[256];
    ck_assert_msg(gw_openapi_load(GW_TEST_DIR "/unit/fixtures/route-order.openapi.json", &doc, err,
                                  sizeof err) == 0,
                  "%s", err);
    m = doc;
    struct gw_route r;
    ROUTES_TO("GET", "/things/special", &r, "get-special");
    ck_assert_uint_eq(r.npath, 0);
    gw_route_free(&r);
    ROUTES_TO("GET", "/things/abc", &r, "get-thing");
    ck_assert_str_eq(r.pname[0], "thingId");
    ck_assert_str_eq(r.pval[0], "abc");
    gw_route_free(&r);
    ROUTES_TO("GET", "/things/special/parts/p1", &r, "get-special-part");
    ck_assert_uint_eq(r.npath, 1);
    ck_assert_str_eq(r.pval[0], "p1");
    gw_route_free(&r);
    ROUTES_TO("GET", "/things/t1/parts/p2", &r, "get-part");
    ck_assert_uint_eq(r.npath, 2);
    ck_assert_str_eq(r.pname[0], "thingId");
    ck_assert_str_eq(r.pval[0], "t1");
    ck_assert_str_eq(r.pname[1], "partId");
    ck_assert_str_eq(r.pval[1], "p2");
    ck_assert_str_eq(r.upstream_path, "/things/t1/parts/p2");
    gw_route_free(&r);
    m = saved;
    gw_openapi_free(doc);
}
END_TEST

START_TEST(test_route_free_resets)
{
    struct gw_route r;
    ROUTES_TO("GET", "/users/abc", &r, "get-user");
    gw_route_free(&r);
    ck_assert_ptr_null(r.mem);
    ck_assert_ptr_null(r.op);
    ck_assert_uint_eq(r.npath, 0);
    gw_route_free(&r); /* twice is harmless */
}
END_TEST

static Suite *route_suite(void)
{
    Suite *s = suite_create("route");
    TCase *tc = tcase_create("match");
    tcase_add_checked_fixture(tc, load_model, free_model);
    tcase_add_test(tc, test_route_create_user_with_and_without_slash);
    tcase_add_test(tc, test_route_search_is_not_a_user_id);
    tcase_add_test(tc, test_route_filter_by_email);
    tcase_add_test(tc, test_route_user_id_ops);
    tcase_add_test(tc, test_route_get_user_by_location);
    tcase_add_test(tc, test_route_user_id_length_limits);
    tcase_add_test(tc, test_route_unknown_paths_are_404);
    tcase_add_test(tc, test_route_static_segment_beats_parameter_in_any_order);
    tcase_add_test(tc, test_route_free_resets);
    suite_add_tcase(s, tc);
    TCase *tb = tcase_create("target");
    tcase_add_checked_fixture(tb, load_model, free_model);
    tcase_add_test(tb, test_route_dot_segments_are_400);
    tcase_add_test(tb, test_route_empty_segments_are_400);
    tcase_add_test(tb, test_route_percent_in_path_is_400);
    tcase_add_test(tb, test_route_fragment_is_400);
    tcase_add_test(tb, test_route_non_origin_form_is_400);
    tcase_add_test(tb, test_route_invalid_characters_are_400);
    suite_add_tcase(s, tb);
    TCase *tq = tcase_create("query");
    tcase_add_checked_fixture(tq, load_model, free_model);
    tcase_add_test(tq, test_route_query_decoding);
    tcase_add_test(tq, test_route_malformed_escapes_are_400);
    tcase_add_test(tq, test_route_decoded_control_characters_are_400);
    tcase_add_test(tq, test_route_decoded_invalid_utf8_is_400);
    tcase_add_test(tq, test_route_query_parameter_count_cap);
    tcase_add_test(tq, test_route_empty_query_pieces_skipped);
    tcase_add_test(tq, test_route_query_string_reencodes_canonically);
    suite_add_tcase(s, tq);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(route_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
