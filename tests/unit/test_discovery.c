/* discovery: the document's URL from the issuer, and the jwks_uri a document may give (SPEC
 * §4.2): only from a strict JSON object whose issuer is the configured one, byte for byte. */
#include "../../proxy/discovery.c"

#include <check.h>

#define ISS "https://idp.example.com"

/* Parses doc (strlen) for ISS; returns the jwks_uri or NULL, with why in why. */
static char *parse(const char *doc, char *why, size_t whylen)
{
    why[0] = '\0';
    return gw_discovery_parse(doc, strlen(doc), ISS, why, whylen);
}

static void refused(const char *doc, const char *want_why)
{
    char why[300];
    char *uri = parse(doc, why, sizeof why);
    ck_assert_msg(uri == NULL, "accepted %s: %s", doc, uri);
    ck_assert_msg(strstr(why, want_why) != NULL, "%s: said \"%s\", not \"%s\"", doc, why, want_why);
}

START_TEST(test_discovery_url_drops_one_trailing_slash)
{
    char out[200], why[200];
    ck_assert_int_eq(gw_discovery_url("https://idp.example.com", out, sizeof out, why, sizeof why),
                     0);
    ck_assert_str_eq(out, "https://idp.example.com/.well-known/openid-configuration");
    ck_assert_int_eq(gw_discovery_url("https://idp.example.com/", out, sizeof out, why, sizeof why),
                     0);
    ck_assert_str_eq(out, "https://idp.example.com/.well-known/openid-configuration");
    /* an issuer with a path keeps it (Discovery 1.0 §4.1: the path comes first) */
    ck_assert_int_eq(
        gw_discovery_url("https://idp.example.com/tenant/", out, sizeof out, why, sizeof why), 0);
    ck_assert_str_eq(out, "https://idp.example.com/tenant/.well-known/openid-configuration");
    /* one slash only: the second is part of the issuer as written */
    ck_assert_int_eq(
        gw_discovery_url("https://idp.example.com//", out, sizeof out, why, sizeof why), 0);
    ck_assert_str_eq(out, "https://idp.example.com//.well-known/openid-configuration");
}
END_TEST

START_TEST(test_discovery_url_refuses_query_fragment_and_overflow)
{
    char out[64], why[200];
    ck_assert_int_eq(gw_discovery_url("https://i/?a=b", out, sizeof out, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "query or a fragment"));
    ck_assert_int_eq(gw_discovery_url("https://i/#x", out, sizeof out, why, sizeof why), -1);
    ck_assert_int_eq(gw_discovery_url("https://a-rather-long-issuer-name.example.com", out,
                                      sizeof out, why, sizeof why),
                     -1);
    ck_assert_ptr_nonnull(strstr(why, "too long"));
}
END_TEST

START_TEST(test_discovery_parse_takes_the_jwks_uri)
{
    char why[300];
    char *uri = parse("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://idp.example.com/keys\","
                      "\"response_types_supported\":[\"code\"],\"x\":{\"y\":[1,2,{}]}}",
                      why, sizeof why);
    ck_assert_ptr_nonnull(uri);
    ck_assert_str_eq(uri, "https://idp.example.com/keys");
    free(uri);
    /* another host, a port, a query: the document may put its keys anywhere over https */
    uri = parse("{\"jwks_uri\":\"https://keys.example.net:8443/k?v=2\",\"issuer\":\"" ISS "\"}",
                why, sizeof why);
    ck_assert_ptr_nonnull(uri);
    ck_assert_str_eq(uri, "https://keys.example.net:8443/k?v=2");
    free(uri);
}
END_TEST

START_TEST(test_discovery_parse_wants_one_strict_object)
{
    refused("[{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/k\"}]", "not a JSON object");
    refused("\"" ISS "\"", "not a JSON object");
    refused("null", "not a JSON object");
    refused("", "not valid JSON");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/k\"", "not valid JSON");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/k\"} {}", "not valid JSON");
    /* a duplicate member: two readers could take either value */
    refused("{\"issuer\":\"https://evil.example\",\"issuer\":\"" ISS "\","
            "\"jwks_uri\":\"https://i/k\"}",
            "duplicate member");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/k\","
            "\"jwks_uri\":\"https://evil.example/k\"}",
            "duplicate member");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/k\",\"m\":{\"a\":1,\"a\":2}}",
            "duplicate member");
}
END_TEST

START_TEST(test_discovery_parse_issuer_must_match_byte_for_byte)
{
    refused("{\"jwks_uri\":\"https://i/k\"}", "has no \"issuer\"");
    refused("{\"issuer\":null,\"jwks_uri\":\"https://i/k\"}",
            "\"issuer\" in the document is not a string");
    refused("{\"issuer\":[\"" ISS "\"],\"jwks_uri\":\"https://i/k\"}", "is not a string");
    refused("{\"issuer\":\"" ISS "/\",\"jwks_uri\":\"https://i/k\"}",
            "issuer \"" ISS "/\" in the document is not the configured issuer");
    refused("{\"issuer\":\"https://IDP.example.com\",\"jwks_uri\":\"https://i/k\"}",
            "issuer \"https://IDP.example.com\" in the document is not the configured issuer");
    refused("{\"issuer\":\"http://idp.example.com\",\"jwks_uri\":\"https://i/k\"}",
            "not the configured issuer");
    refused("{\"issuer\":\"https://idp.example\",\"jwks_uri\":\"https://i/k\"}",
            "not the configured issuer");
    refused("{\"issuer\":\"\",\"jwks_uri\":\"https://i/k\"}", "issuer \"\" in the document");
    /* NUL, escaped or raw, is refused by the strict reader, never compared up to it */
    refused("{\"issuer\":\"" ISS "\\u0000x\",\"jwks_uri\":\"https://i/k\"}", "not valid JSON");
    char why[300];
    static const char raw[] = "{\"issuer\":\"" ISS "\0x\",\"jwks_uri\":\"https://i/k\"}";
    ck_assert_ptr_null(gw_discovery_parse(raw, sizeof raw - 1, ISS, why, sizeof why));
    ck_assert_msg(strstr(why, "not valid JSON") != NULL, "%s", why);
    /* the same bytes written with escapes are the same string */
    char *uri = parse("{\"issuer\":\"https:\\/\\/idp.example.com\",\"jwks_uri\":\"https://i/k\"}",
                      why, sizeof why);
    ck_assert_ptr_nonnull(uri);
    free(uri);
}
END_TEST

START_TEST(test_discovery_parse_jwks_uri_must_be_https)
{
    refused("{\"issuer\":\"" ISS "\"}", "has no \"jwks_uri\"");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":null}",
            "\"jwks_uri\" in the document is not a string");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":42}", "is not a string");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":{\"u\":\"https://i/k\"}}", "is not a string");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"http://i/k\"}",
            "jwks_uri \"http://i/k\" is not an https URL");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"HTTPS://i/k\"}", "is not an https URL");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"/keys\"}", "is not an https URL");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"\"}", "is not an https URL");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://\"}", "has no host");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https:///k\"}", "has no host");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://:443/k\"}", "has no host");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://u:p@i/k\"}", "user information");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/k#frag\"}", "has a fragment");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/a b\"}", "not printable ASCII");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/\\r\\nX: y\"}",
            "not printable ASCII");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/\xc3\xa9\"}", "not printable ASCII");
    refused("{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/k\\u0000\"}", "not valid JSON");
}
END_TEST

START_TEST(test_discovery_parse_jwks_uri_length_capped)
{
    size_t cap = GW_DISCOVERY_MAX_URI;
    char *doc = malloc(cap + 200);
    char why[300];
    for (int extra = 0; extra <= 1; extra++) {
        size_t path = cap - strlen("https://i/") + (size_t)extra;
        int n = snprintf(doc, cap + 200, "{\"issuer\":\"" ISS "\",\"jwks_uri\":\"https://i/");
        memset(doc + n, 'a', path);
        snprintf(doc + n + path, 10, "\"}");
        char *uri = parse(doc, why, sizeof why);
        if (extra == 0) {
            ck_assert_ptr_nonnull(uri);
            ck_assert_uint_eq(strlen(uri), cap);
        } else {
            ck_assert_ptr_null(uri);
            ck_assert_msg(strstr(why, "is too long") != NULL, "%s", why);
            /* the message quotes an excerpt, not the whole value */
            ck_assert_uint_lt(strlen(why), 200);
        }
        free(uri);
    }
    free(doc);
}
END_TEST

/* What the document says goes into the log: nothing in it may start a line or an escape. */
START_TEST(test_discovery_parse_messages_quote_only_printable_bytes)
{
    char why[300];
    ck_assert_ptr_null(parse("{\"issuer\":\"https://x\\n2026 info: forged\\\"\\\\\",\"jwks_uri\":"
                             "\"https://i/k\"}",
                             why, sizeof why));
    ck_assert_str_eq(why, "issuer \"https://x?2026 info: forged??\" in the document is not the "
                          "configured issuer");
    ck_assert_ptr_null(
        parse("{\"issuer\":\"https://\xc3\xa9\",\"jwks_uri\":\"https://i/k\"}", why, sizeof why));
    ck_assert_ptr_nonnull(strstr(why, "\"https://??\""));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("discovery");
    TCase *t = tcase_create("document");
    tcase_add_test(t, test_discovery_url_drops_one_trailing_slash);
    tcase_add_test(t, test_discovery_url_refuses_query_fragment_and_overflow);
    tcase_add_test(t, test_discovery_parse_takes_the_jwks_uri);
    tcase_add_test(t, test_discovery_parse_wants_one_strict_object);
    tcase_add_test(t, test_discovery_parse_issuer_must_match_byte_for_byte);
    tcase_add_test(t, test_discovery_parse_jwks_uri_must_be_https);
    tcase_add_test(t, test_discovery_parse_jwks_uri_length_capped);
    tcase_add_test(t, test_discovery_parse_messages_quote_only_printable_bytes);
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
