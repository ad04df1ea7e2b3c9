/* Unit tests of the strict JSON reader (proxy/json.c): what it accepts, what it refuses and
 * with which message, the line table, and the JSON string writer. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "json.h"

/* Parses buf[0..len) with opts; the tree is returned (caller deletes), *e always filled. */
static cJSON *parse_n(const char *buf, size_t len, const struct gw_json_opts *o,
                      struct gw_json_error *e)
{
    memset(e, 0x5a, sizeof *e); /* the parser must reset a dirty error struct */
    return gw_json_parse(buf, len, o, e);
}

static cJSON *parse(const char *s, struct gw_json_error *e)
{
    return parse_n(s, strlen(s), NULL, e);
}

/* gw_json_check (no tree) must agree with the parser on every case of this suite: the same
 * verdict and message, except for what only the parser checks (duplicate names, numbers out of
 * range, the size cap) and comments, which only the parser reads. */
static void check_agrees(const char *buf, size_t len, const struct gw_json_opts *o, bool parsed,
                         const char *why)
{
    if (o && (o->allow_comments || o->max_bytes))
        return;
    struct gw_json_error e;
    memset(&e, 0x5a, sizeof e);
    bool ok = gw_json_check(buf, len, o ? o->max_depth : 0, &e);
    if (parsed || strstr(why, "duplicate") || strstr(why, "out of range")) {
        ck_assert_msg(ok, "gw_json_check refused what the parser %s: %.80s: %s",
                      parsed ? "accepted" : "refuses only for its own checks", buf, e.msg);
        ck_assert_str_eq(e.msg, "");
    } else {
        ck_assert_msg(!ok, "gw_json_check accepted what the parser refused (%s): %.80s", why, buf);
    }
}

/* Asserts that buf[0..len) is refused with a message equal to want. */
#define REFUSED_N(buf, len, opts, want)                                                            \
    do {                                                                                           \
        struct gw_json_error e_;                                                                   \
        cJSON *v_ = parse_n((buf), (len), (opts), &e_);                                            \
        ck_assert_msg(v_ == NULL, "accepted: %s", (buf));                                          \
        ck_assert_str_eq(e_.msg, (want));                                                          \
        check_agrees((buf), (len), (opts), false, e_.msg);                                         \
    } while (0)
#define REFUSED(s, want) REFUSED_N((s), strlen(s), NULL, (want))

#define ACCEPTED(s)                                                                                \
    do {                                                                                           \
        struct gw_json_error e_;                                                                   \
        cJSON *v_ = parse((s), &e_);                                                               \
        ck_assert_msg(v_ != NULL, "refused %s: %s", (s), e_.msg);                                  \
        ck_assert_str_eq(e_.msg, "");                                                              \
        check_agrees((s), strlen(s), NULL, true, "");                                              \
        cJSON_Delete(v_);                                                                          \
    } while (0)

/* ---- valid documents ---- */

START_TEST(test_json_parses_every_value_type)
{
    struct gw_json_error e;
    const char *doc = "{\"s\":\"h\\u00e9llo\\n\",\"i\":-42,\"f\":2.5,\"t\":true,\"F\":false,"
                      "\"n\":null,\"a\":[1,\"x\",[],{}],\"o\":{\"k\":\"v\"},\"e\":\"\"}";
    cJSON *v = parse(doc, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert(cJSON_IsObject(v));
    ck_assert_int_eq(cJSON_GetArraySize(v), 9);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(v, "s")->valuestring, "h\xc3\xa9llo\n");
    ck_assert(cJSON_GetObjectItemCaseSensitive(v, "i")->valuedouble == -42.0);
    ck_assert(cJSON_GetObjectItemCaseSensitive(v, "f")->valuedouble == 2.5);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "t")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(v, "F")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(v, "n")));
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, "a");
    ck_assert(cJSON_IsArray(a));
    ck_assert_int_eq(cJSON_GetArraySize(a), 4);
    ck_assert(cJSON_GetArrayItem(a, 0)->valuedouble == 1.0);
    ck_assert_str_eq(cJSON_GetArrayItem(a, 1)->valuestring, "x");
    ck_assert(cJSON_IsArray(cJSON_GetArrayItem(a, 2)));
    ck_assert(cJSON_IsObject(cJSON_GetArrayItem(a, 3)));
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(v, "o"), "k")
                         ->valuestring,
                     "v");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(v, "e")->valuestring, "");
    /* members keep document order, and cJSON's list invariants hold (head->prev is the tail) */
    ck_assert_str_eq(v->child->string, "s");
    ck_assert_str_eq(v->child->prev->string, "e");
    char *printed = cJSON_PrintUnformatted(v);
    ck_assert_str_eq(printed, "{\"s\":\"h\xc3\xa9llo\\n\",\"i\":-42,\"f\":2.5,\"t\":true,"
                              "\"F\":false,\"n\":null,\"a\":[1,\"x\",[],{}],\"o\":{\"k\":\"v\"},"
                              "\"e\":\"\"}");
    cJSON_free(printed);
    cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_parses_scalars_at_top_level)
{
    struct gw_json_error e;
    cJSON *v = parse("\"x\"", &e);
    ck_assert(cJSON_IsString(v));
    cJSON_Delete(v);
    v = parse("17", &e);
    ck_assert(cJSON_IsNumber(v) && v->valuedouble == 17.0);
    cJSON_Delete(v);
    v = parse("true", &e);
    ck_assert(cJSON_IsTrue(v));
    cJSON_Delete(v);
    v = parse("null", &e);
    ck_assert(cJSON_IsNull(v));
    cJSON_Delete(v);
    v = parse("[]", &e);
    ck_assert(cJSON_IsArray(v) && v->child == NULL);
    cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_decodes_every_simple_escape)
{
    struct gw_json_error e;
    cJSON *v = parse("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\"", &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_str_eq(v->valuestring, "\"\\/\b\f\n\r\tA\xc3\xa9\xe2\x82\xac");
    cJSON_Delete(v);
    REFUSED("\"\\x41\"", "bad escape in string");
    REFUSED("\"\\u12G4\"", "bad \\u escape");
    REFUSED("\"\\u12\"", "bad \\u escape");
}
END_TEST

START_TEST(test_json_accepts_surrounding_whitespace)
{
    struct gw_json_error e;
    cJSON *v = parse(" \t\r\n {\"a\" : [ 1 , 2 ] } \n\t\r ", &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(v, "a")), 2);
    cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_buffer_need_not_be_nul_terminated)
{
    struct gw_json_error e;
    const char buf[] = "{\"a\":1}GARBAGE";
    cJSON *v = parse_n(buf, 7, NULL, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    cJSON_Delete(v);
    REFUSED_N(buf, 10, NULL, "unexpected data after the value");
    /* a string running to the end of the given length is unterminated, whatever follows */
    const char s[] = "\"abc\"";
    REFUSED_N(s, 4, NULL, "unterminated string");
}
END_TEST

/* ---- duplicates ---- */

START_TEST(test_json_refuses_duplicate_member_at_depth_0)
{
    REFUSED("{\"a\":1,\"b\":2,\"a\":3}", "duplicate member \"a\"");
}
END_TEST

START_TEST(test_json_refuses_duplicate_member_at_depth_3)
{
    REFUSED("{\"x\":{\"y\":{\"z\":{\"role\":\"admin\",\"type\":1,\"role\":\"user\"}}}}",
            "duplicate member \"role\"");
    /* inside an array, too */
    REFUSED("[{\"a\":[{\"k\":1,\"k\":1}]}]", "duplicate member \"k\"");
    /* a name's control bytes, DEL, quotes and backslashes are not written into the message
     * (it may reach a log line): each is a '?' */
    REFUSED("{\"a\\u0001\\u007f\\\"\\\\b\":1,\"a\\u0001\\u007f\\\"\\\\b\":2}",
            "duplicate member \"a????b\"");
}
END_TEST

START_TEST(test_json_refuses_duplicate_among_many_members)
{
    /* a dozen members: the pairwise path */
    REFUSED("{\"m1\":1,\"m2\":1,\"m3\":1,\"m4\":1,\"m5\":1,\"m6\":1,\"m7\":1,\"m8\":1,\"m9\":1,"
            "\"m10\":1,\"m5\":2,\"m11\":1}",
            "duplicate member \"m5\"");
    ACCEPTED("{\"m1\":1,\"m2\":1,\"m3\":1,\"m4\":1,\"m5\":1,\"m6\":1,\"m7\":1,\"m8\":1,\"m9\":1,"
             "\"m10\":1,\"m11\":1}");
    /* names that differ only in case, or by an escape spelling, are different / the same */
    ACCEPTED("{\"a\":1,\"A\":2}");
    REFUSED("{\"a\":1,\"\\u0061\":2}", "duplicate member \"a\"");
}
END_TEST

/* Builds {"k0":0,...,"k<n-1>":0} with the names at the given positions replaced. */
static char *object_of(size_t n, size_t at1, const char *name1, size_t at2, const char *name2)
{
    size_t cap = n * 40 + 3;
    char *s = malloc(cap), *o = s;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        char k[24];
        snprintf(k, sizeof k, "k%zu", i);
        const char *name = i == at1 ? name1 : i == at2 ? name2 : k;
        o += snprintf(o, cap - (size_t)(o - s), "%s\"%s\":0", i ? "," : "", name);
    }
    *o++ = '}';
    *o = '\0';
    return s;
}

START_TEST(test_json_duplicates_on_both_paths)
{
    /* up to 48 members are compared pairwise on FNV-1a hashes, more are sorted: the same
     * answers either way, at the same member */
    static const size_t sizes[] = {2, 3, 16, 17, 47, 48, 49, 50, 200};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        char *ok = object_of(n, n, NULL, n, NULL);
        ACCEPTED(ok);
        free(ok);
        char *dup = object_of(n, 0, "same", n - 1, "same");
        REFUSED(dup, "duplicate member \"same\"");
        free(dup);
        /* two duplicated names: the message names the one whose repeat comes first */
        if (n >= 4) {
            char *two = object_of(n, 1, "k0", n - 1, "k2");
            struct gw_json_error e;
            cJSON *v = parse(two, &e);
            ck_assert_ptr_null(v);
            ck_assert_str_eq(e.msg, "duplicate member \"k0\"");
            ck_assert_uint_eq(e.offset, (size_t)(strstr(two, ",\"k0\"") + 1 - two));
            free(two);
        }
    }
    /* "costarring" and "liquid" have the same 32-bit FNV-1a hash: equal hashes are not
     * duplicates until the names compare equal */
    ACCEPTED("{\"costarring\":1,\"liquid\":2}");
    REFUSED("{\"costarring\":1,\"liquid\":2,\"costarring\":3}", "duplicate member \"costarring\"");
    char *big = object_of(60, 10, "costarring", 50, "liquid");
    ACCEPTED(big);
    free(big);
}
END_TEST

/* Plain ASCII is copied a run at a time: runs broken by escapes, multi-byte UTF-8 and the
 * closing quote decode exactly. */
START_TEST(test_json_string_runs_between_escapes_and_utf8)
{
    struct gw_json_error e;
    cJSON *v =
        parse("[\"abc\\ndef\\\"g\xc3\xa9h\\u00e9ij\", \"\", \"x\", \"\\t\", \"\xe2\x82\xac\"]", &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_str_eq(cJSON_GetArrayItem(v, 0)->valuestring, "abc\ndef\"g\xc3\xa9h\xc3\xa9ij");
    ck_assert_str_eq(cJSON_GetArrayItem(v, 1)->valuestring, "");
    ck_assert_str_eq(cJSON_GetArrayItem(v, 2)->valuestring, "x");
    ck_assert_str_eq(cJSON_GetArrayItem(v, 3)->valuestring, "\t");
    ck_assert_str_eq(cJSON_GetArrayItem(v, 4)->valuestring, "\xe2\x82\xac");
    cJSON_Delete(v);
    /* a control character or DEL-adjacent bytes inside a run */
    REFUSED("\"abcdef\x01ghi\"", "control character in string");
    ACCEPTED("\"abc\x7f def\"");
    REFUSED("\"abcdef\xffghi\"", "invalid UTF-8 in string");
}
END_TEST

/* ---- the JSON text writer ---- */

/* What gw_jbuf_value writes of text, parsed back and compared with the parse of text. */
static void jbuf_round_trip(const char *text)
{
    struct gw_json_error e;
    cJSON *v = parse(text, &e);
    ck_assert_msg(v != NULL, "%s: %s", text, e.msg);
    struct gw_buf b = GW_BUF_INIT(1 << 20);
    gw_jbuf_value(&b, v);
    char *out = gw_buf_take(&b);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_null(b.p);
    cJSON *w = parse(out, &e);
    ck_assert_msg(w != NULL, "wrote %s: %s", out, e.msg);
    ck_assert_msg(cJSON_Compare(v, w, true), "%s -> %s", text, out);
    cJSON_Delete(v);
    cJSON_Delete(w);
    free(out);
}

START_TEST(test_json_writer_round_trips)
{
    jbuf_round_trip("{}");
    jbuf_round_trip("[]");
    jbuf_round_trip("null");
    jbuf_round_trip("[true,false,null,\"\",0,-0,1,-1,2147483648,9007199254740991,1e300,"
                    "0.1,-2.5e-8,3.141592653589793,1.0000000000000002]");
    jbuf_round_trip("{\"a\":{\"b\":[{\"c\":\"d\"}],\"e\":{}},\"f\":[[],[[]]]}");
    jbuf_round_trip("{\"q\\\"uote\":\"back\\\\slash \\u0001 \\u001f \\u007f tab\\t nl\\n "
                    "\xc3\xa9 \xf0\x9f\x98\x80 \\ud83d\\ude00\"}");
}
END_TEST

START_TEST(test_json_writer_text)
{
    struct gw_buf b = GW_BUF_INIT(1 << 20);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", 42);
    cJSON_AddNumberToObject(o, "x", 0.1);
    cJSON_AddNumberToObject(o, "big", 1e300);
    cJSON_AddNumberToObject(o, "nan", NAN);
    cJSON_AddStringToObject(o, "s", "a\"b\x01\x7f\xff");
    cJSON_AddNullToObject(o, "z");
    GW_JBUF_LIT(&b, "<");
    gw_jbuf_value(&b, o);
    gw_jbuf_string(&b, NULL);
    gw_jbuf_value(&b, NULL);
    GW_JBUF_LIT(&b, ">");
    char *t = gw_buf_take(&b);
    /* the same escapes as gw_json_append_string: control and DEL as \u00xx, a byte that is
     * not UTF-8 as U+FFFD; 15 significant digits when they read back the same */
    ck_assert_str_eq(t, "<{\"n\":42,\"x\":0.1,\"big\":1e+300,\"nan\":null,"
                        "\"s\":\"a\\\"b\\u0001\\u007f\\ufffd\",\"z\":null}nullnull>");
    free(t);
    struct evbuffer *ev = evbuffer_new();
    gw_json_append_string(ev, "a\"b\x01\x7f\xff");
    evbuffer_add(ev, "", 1);
    ck_assert_str_eq((const char *)evbuffer_pullup(ev, -1), "\"a\\\"b\\u0001\\u007f\\ufffd\"");
    evbuffer_free(ev);
    cJSON_Delete(o);
    /* a long string grows the buffer past its first size */
    char *big = malloc(100001);
    memset(big, 'q', 100000);
    big[100000] = '\0';
    big[500] = '\n';
    gw_jbuf_string(&b, big);
    t = gw_buf_take(&b);
    ck_assert_uint_eq(strlen(t), 100000 - 1 + 6 + 2);
    ck_assert_int_eq(memcmp(t + 501, "\\u000a", 6), 0);
    free(t);
    free(big);
}
END_TEST

/* Near its cap a string is written in pieces: only the bytes really written count, so text
 * that fits exactly is written, and one byte more fails the buffer (take gives NULL). */
START_TEST(test_json_writer_string_at_the_cap)
{
    char s[2000];
    memset(s, 'a', sizeof s - 1);
    s[sizeof s - 1] = '\0';
    s[1000] = '\x01';                       /* 6 bytes out */
    size_t want = sizeof s - 2 + 6 + 2 + 1; /* the rest, \u0001, the quotes, then "}" */
    struct gw_buf b = GW_BUF_INIT(want);
    gw_jbuf_string(&b, s);
    GW_JBUF_LIT(&b, "}");
    char *t = gw_buf_take(&b);
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(strlen(t), want);
    ck_assert_int_eq(memcmp(t + 1001, "\\u0001", 6), 0);
    ck_assert_str_eq(t + want - 2, "\"}");
    free(t);

    b = (struct gw_buf)GW_BUF_INIT(want - 1);
    gw_jbuf_string(&b, s);
    ck_assert(!b.failed);
    GW_JBUF_LIT(&b, "}");
    ck_assert(b.failed);
    ck_assert_ptr_null(gw_buf_take(&b));
    ck_assert_ptr_null(b.p);

    b = (struct gw_buf)GW_BUF_INIT(want - 3);
    gw_jbuf_string(&b, s); /* the closing quote does not fit */
    ck_assert(b.failed);
    ck_assert_uint_le(b.n, want - 3);
    ck_assert_ptr_null(gw_buf_take(&b));
}
END_TEST

/* ---- UTF-8 ---- */

START_TEST(test_json_refuses_invalid_utf8)
{
    REFUSED("\"\xc0\xaf\"", "invalid UTF-8 in string");         /* overlong '/' */
    REFUSED("\"\xe0\x80\xaf\"", "invalid UTF-8 in string");     /* overlong, 3 bytes */
    REFUSED("\"\xf0\x80\x80\xaf\"", "invalid UTF-8 in string"); /* overlong, 4 bytes */
    REFUSED("\"\xed\xa0\x80\"", "invalid UTF-8 in string");     /* surrogate U+D800 */
    REFUSED("\"\xe2\x82\"", "invalid UTF-8 in string");         /* truncated euro sign */
    REFUSED("\"\xff\"", "invalid UTF-8 in string");
    REFUSED("\"\x80\"", "invalid UTF-8 in string");             /* lone continuation */
    REFUSED("\"\xf4\x90\x80\x80\"", "invalid UTF-8 in string"); /* past U+10FFFF */
    REFUSED("{\"\xff\":1}", "invalid UTF-8 in string");         /* in a member name */
    /* truncated at the very end of the input */
    const char t[] = "\"\xe2\x82";
    REFUSED_N(t, 3, NULL, "unterminated string");
}
END_TEST

START_TEST(test_json_keeps_valid_multibyte_utf8)
{
    struct gw_json_error e;
    cJSON *v = parse("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"", &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_str_eq(v->valuestring, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf");
    cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_refuses_lone_surrogate_escapes)
{
    REFUSED("\"\\uD800\"", "lone surrogate \\uD800");
    REFUSED("\"\\uDC00\"", "lone surrogate \\uDC00");
    REFUSED("\"\\uD800\\u0041\"", "lone surrogate \\uD800");
    REFUSED("\"\\uD800x\"", "lone surrogate \\uD800");
    REFUSED("\"\\uDBFF\\uD800\"", "lone surrogate \\uDBFF"); /* high followed by high */
    REFUSED("\"\\uD800\\n\"", "lone surrogate \\uD800");
}
END_TEST

START_TEST(test_json_decodes_surrogate_pair_to_four_bytes)
{
    struct gw_json_error e;
    cJSON *v = parse("\"\\uD83D\\uDE00\"", &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_uint_eq(strlen(v->valuestring), 4);
    ck_assert_mem_eq(v->valuestring, "\xf0\x9f\x98\x80", 4);
    cJSON_Delete(v);
    v = parse("\"a\\udbff\\udfffb\"", &e); /* U+10FFFF, lower-case hex */
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_str_eq(v->valuestring, "a\xf4\x8f\xbf\xbf"
                                     "b");
    cJSON_Delete(v);
}
END_TEST

/* ---- NUL and control characters ---- */

START_TEST(test_json_refuses_nul)
{
    REFUSED("\"a\\u0000b\"", "NUL (\\u0000) in string");
    const char raw[] = "\"a\0b\"";
    REFUSED_N(raw, 5, NULL, "NUL byte in string");
    const char after[] = "{}\0";
    REFUSED_N(after, 3, NULL, "NUL byte after the value");
    const char key[] = "{\"a\0\":1}";
    REFUSED_N(key, 8, NULL, "NUL byte in string");
    const char top[] = "\0";
    REFUSED_N(top, 1, NULL, "invalid value");
}
END_TEST

START_TEST(test_json_refuses_control_characters_in_strings)
{
    REFUSED("\"a\tb\"", "control character in string");
    REFUSED("\"a\nb\"", "control character in string");
    REFUSED("\"\x01\"", "control character in string");
    REFUSED("\"\x1f\"", "control character in string");
    REFUSED("{\"a\rb\":1}", "control character in string");
    ACCEPTED("\"\\t\\u001f\"");
}
END_TEST

/* ---- depth ---- */

static char *nest(int depth, char open, char close)
{
    char *s = malloc((size_t)depth * 2 + 2);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < depth; i++)
        s[i] = open;
    s[depth] = '1';
    for (int i = 0; i < depth; i++)
        s[depth + 1 + i] = close;
    s[depth * 2 + 1] = '\0';
    return s;
}

START_TEST(test_json_depth_cap_is_inclusive)
{
    struct gw_json_opts o = {.max_depth = 5};
    struct gw_json_error e;
    char *ok = nest(5, '[', ']');
    cJSON *v = parse_n(ok, strlen(ok), &o, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    cJSON_Delete(v);
    char *deep = nest(6, '[', ']');
    REFUSED_N(deep, strlen(deep), &o, "nesting deeper than 5");
    ck_assert_ptr_null(parse_n(deep, strlen(deep), &o, &e));
    ck_assert_uint_eq(e.offset, 5); /* the opening bracket one too deep */
    /* objects count the same */
    const char *d5 = "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":1}}}}}";
    v = parse_n(d5, strlen(d5), &o, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    cJSON_Delete(v);
    const char *d6 = "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{}}}}}}";
    REFUSED_N(d6, strlen(d6), &o, "nesting deeper than 5");
    free(ok);
    free(deep);
}
END_TEST

START_TEST(test_json_default_depth_is_64)
{
    struct gw_json_error e;
    char *ok = nest(64, '[', ']');
    cJSON *v = parse_n(ok, strlen(ok), NULL, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    cJSON_Delete(v);
    char *deep = nest(65, '[', ']');
    REFUSED_N(deep, strlen(deep), NULL, "nesting deeper than 64");
    free(ok);
    free(deep);
}
END_TEST

START_TEST(test_json_depth_cap_above_512_is_clamped)
{
    struct gw_json_opts o = {.max_depth = 100000};
    char *deep = nest(513, '[', ']');
    REFUSED_N(deep, strlen(deep), &o, "nesting deeper than 512");
    free(deep);
}
END_TEST

/* ---- trailing data ---- */

START_TEST(test_json_refuses_trailing_bytes)
{
    REFUSED("{} x", "unexpected data after the value");
    REFUSED("1 2", "unexpected data after the value");
    REFUSED("{}}", "unexpected data after the value");
    REFUSED("[1],", "unexpected data after the value");
    REFUSED("", "unexpected end of input");
    REFUSED("   ", "unexpected end of input");
    REFUSED("[1,]", "invalid value");
    REFUSED("{\"a\":1,}", "expected a member name");
    REFUSED("{\"a\" 1}", "expected ':'");
    REFUSED("{\"a\":1 \"b\":2}", "expected ',' or '}'");
    REFUSED("[1 2]", "expected ',' or ']'");
    REFUSED("[1", "expected ',' or ']'");
    REFUSED("{'a':1}", "expected a member name");
    REFUSED("tru", "invalid value");
    REFUSED("nul", "invalid value");
    REFUSED("True", "invalid value");
}
END_TEST

/* ---- numbers ---- */

START_TEST(test_json_accepts_rfc_numbers)
{
    struct gw_json_error e;
    cJSON *v = parse("[-0, 1e5, 1.5E-3, 0, -12.25e+2, 0.5, 1E2]", &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    double want[] = {0.0, 100000.0, 0.0015, 0.0, -1225.0, 0.5, 100.0};
    for (int i = 0; i < 7; i++)
        ck_assert_msg(cJSON_GetArrayItem(v, i)->valuedouble == want[i], "item %d", i);
    ck_assert(signbit(cJSON_GetArrayItem(v, 0)->valuedouble));
    cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_refuses_non_rfc_numbers)
{
    REFUSED("01", "unexpected data after the value");
    REFUSED("[01]", "expected ',' or ']'");
    REFUSED("-01", "unexpected data after the value");
    REFUSED("1.", "invalid number");
    REFUSED("1.e5", "invalid number");
    REFUSED(".5", "invalid value");
    REFUSED("+1", "invalid value");
    REFUSED("-", "invalid value");
    REFUSED("1e", "invalid number");
    REFUSED("1e+", "invalid number");
    REFUSED("NaN", "invalid value");
    REFUSED("Infinity", "invalid value");
    REFUSED("-Infinity", "invalid value");
    REFUSED("0x10", "unexpected data after the value");
    REFUSED("1e999", "number out of range");
    REFUSED("-1e999", "number out of range");
    REFUSED("{\"a\":1e400}", "number out of range");
}
END_TEST

START_TEST(test_json_reads_underflow_as_zero)
{
    struct gw_json_error e;
    cJSON *v = parse("1e-400", &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert(v->valuedouble == 0.0);
    cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_refuses_overlong_number_literal)
{
    char s[80];
    memset(s, '1', 65);
    s[65] = '\0';
    REFUSED(s, "number too long");
    s[64] = '\0';
    ACCEPTED(s);
}
END_TEST

/* ---- comments ---- */

START_TEST(test_json_comments_only_when_allowed)
{
    const char *doc = "// head\n{ /* inline */ \"a\": 1, // tail\n \"b\": \"//not a comment\" }\n"
                      "/* end */";
    struct gw_json_error e;
    REFUSED(doc, "invalid value");
    struct gw_json_opts o = {.allow_comments = true};
    cJSON *v = parse_n(doc, strlen(doc), &o, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_int_eq(cJSON_GetArraySize(v), 2);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(v, "b")->valuestring, "//not a comment");
    cJSON_Delete(v);
    /* a // comment may end the input without a newline */
    v = parse_n("[1] // done", 11, &o, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_refuses_unterminated_block_comment)
{
    struct gw_json_opts o = {.allow_comments = true};
    const char *a = "{\"a\":1} /* never closed";
    REFUSED_N(a, strlen(a), &o, "unterminated comment");
    const char *b = "{ /* x */ \"a\": /* y * / 1}";
    REFUSED_N(b, strlen(b), &o, "unterminated comment");
    const char *c = "/*/ {}";
    REFUSED_N(c, strlen(c), &o, "unterminated comment");
    const char *d = "{} /";
    REFUSED_N(d, strlen(d), &o, "unexpected data after the value");
}
END_TEST

/* ---- positions ---- */

START_TEST(test_json_error_line_numbers)
{
    struct gw_json_error e;
    const char *doc = "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    tru\n  ]\n}\n";
    cJSON *v = parse(doc, &e);
    ck_assert_ptr_null(v);
    ck_assert_str_eq(e.msg, "invalid value");
    ck_assert_int_eq(e.line, 5);
    ck_assert_uint_eq(e.offset, (size_t)(strstr(doc, "tru\n") - doc));
    /* on the first line */
    v = parse("  x", &e);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(e.line, 1);
    ck_assert_uint_eq(e.offset, 2);
    /* CRLF lines and comments spanning lines are counted */
    struct gw_json_opts o = {.allow_comments = true};
    const char *c = "/* one\r\n two */\r\n{\r\n \"k\":\r\n \"v\"\r\n \"z\"}";
    v = parse_n(c, strlen(c), &o, &e);
    ck_assert_ptr_null(v);
    ck_assert_str_eq(e.msg, "expected ',' or '}'");
    ck_assert_int_eq(e.line, 6);
    /* past the end */
    v = parse("{\n\"a\":\n", &e);
    ck_assert_ptr_null(v);
    ck_assert_str_eq(e.msg, "unexpected end of input");
    ck_assert_int_eq(e.line, 3);
}
END_TEST

START_TEST(test_json_max_bytes_cap)
{
    struct gw_json_opts o = {.max_bytes = 5};
    struct gw_json_error e;
    cJSON *v = parse_n("[1,2]", 5, &o, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    cJSON_Delete(v);
    REFUSED_N("[1,22]", 6, &o, "document larger than 5 bytes");
}
END_TEST

START_TEST(test_json_lines_table_gives_member_lines)
{
    /* Members whose values are scalars: the line of the member name, across comments, blank
     * lines and a value on the next line. */
    struct gw_json_lines lines = {0};
    struct gw_json_opts o = {.lines = &lines, .allow_comments = true};
    struct gw_json_error e;
    const char *doc = "{\n"                          /* 1 */
                      "  \"a\": 1,\n"                /* 2 */
                      "  // comment\n"               /* 3 */
                      "  /* block\n"                 /* 4 */
                      "     comment */\n"            /* 5 */
                      "  \"b\":\n"                   /* 6 */
                      "\n"                           /* 7 */
                      "     \"x\",\n"                /* 8 */
                      "  \"c\": true, \"d\": null\n" /* 9 */
                      "}\n";
    cJSON *v = parse_n(doc, strlen(doc), &o, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetObjectItemCaseSensitive(v, "a")), 2);
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetObjectItemCaseSensitive(v, "b")), 6);
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetObjectItemCaseSensitive(v, "c")), 9);
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetObjectItemCaseSensitive(v, "d")), 9);
    ck_assert_int_eq(gw_json_line(&lines, NULL), 0);
    ck_assert_int_eq(gw_json_line(NULL, v), 0);
    cJSON *other = cJSON_CreateNull();
    ck_assert_int_eq(gw_json_line(&lines, other), 0); /* a node not from this parse */
    cJSON_Delete(other);
    cJSON_Delete(v);
    gw_json_lines_free(&lines);
    ck_assert_ptr_null(lines.node);
    ck_assert_uint_eq(lines.n, 0);
}
END_TEST

START_TEST(test_json_lines_table_nested_scalar_members)
{
    struct gw_json_lines lines = {0};
    struct gw_json_opts o = {.lines = &lines};
    struct gw_json_error e;
    const char *doc = "{\"s\": {\n"    /* 1 */
                      "  \"p\": 1,\n"  /* 2 */
                      "  \"t\": {\n"   /* 3 */
                      "    \"q\": 2\n" /* 4 */
                      "}}}";
    cJSON *v = parse_n(doc, strlen(doc), &o, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(v, "s");
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetObjectItemCaseSensitive(sec, "p")), 2);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(sec, "t");
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetObjectItemCaseSensitive(t, "q")), 4);
    cJSON_Delete(v);
    gw_json_lines_free(&lines);
}
END_TEST

/* Containers, array elements and the root get the line where they start, not where they end. */
START_TEST(test_json_lines_table_containers_and_elements)
{
    struct gw_json_lines lines = {0};
    struct gw_json_opts o = {.lines = &lines};
    const char *s = "{\n \"x\": 1,\n \"a\": [\n  \"p\",\n\n  5,\n  {\"q\":1}\n ]\n}";
    struct gw_json_error e;
    cJSON *v = gw_json_parse(s, strlen(s), &o, &e);
    ck_assert_ptr_nonnull(v);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, "a");
    ck_assert_int_eq(gw_json_line(&lines, v), 1);
    ck_assert_int_eq(gw_json_line(&lines, a), 3);
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetArrayItem(a, 0)), 4);
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetArrayItem(a, 1)), 6);
    ck_assert_int_eq(gw_json_line(&lines, cJSON_GetArrayItem(a, 2)), 7);
    cJSON_Delete(v);
    gw_json_lines_free(&lines);
}
END_TEST

/* A duplicate is reported where the repeated name is, so a file:line points at it. */
START_TEST(test_json_duplicate_reported_at_the_second_name)
{
    const char *s = "{\n \"listen\": 1,\n \"other\": 2,\n \"listen\": 3\n}";
    struct gw_json_error e;
    ck_assert_ptr_null(gw_json_parse(s, strlen(s), NULL, &e));
    ck_assert_str_eq(e.msg, "duplicate member \"listen\"");
    ck_assert_int_eq(e.line, 4);
    ck_assert_uint_eq(e.offset, (size_t)(strstr(s + 10, "\"listen\"") - s));
}
END_TEST

START_TEST(test_json_error_struct_optional)
{
    cJSON *v = gw_json_parse("{\"a\":1,\"a\":2}", 13, NULL, NULL);
    ck_assert_ptr_null(v);
    v = gw_json_parse("{}", 2, NULL, NULL);
    ck_assert_ptr_nonnull(v);
    cJSON_Delete(v);
}
END_TEST

/* ---- gw_read_file ---- */

START_TEST(test_json_read_file_caps_size)
{
    char dir[] = "/tmp/gwjson.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/f", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 10000; i++)
        fputc('a' + i % 26, f);
    fclose(f);
    size_t len = 0;
    char *buf = gw_read_file(path, 1 << 20, &len);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(len, 10000);
    ck_assert_int_eq(buf[9999], 'a' + 9999 % 26);
    ck_assert_int_eq(buf[10000], '\0');
    free(buf);
    /* exactly at the cap is allowed ("at most max_bytes") */
    buf = gw_read_file(path, 10000, &len);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(len, 10000);
    free(buf);
    errno = 0;
    ck_assert_ptr_null(gw_read_file(path, 9999, &len));
    ck_assert_int_eq(errno, EFBIG);
    ck_assert_ptr_null(gw_read_file(dir, 100, &len));
    ck_assert_int_eq(errno, EISDIR);
    unlink(path);
    ck_assert_ptr_null(gw_read_file(path, 100, &len));
    ck_assert_int_eq(errno, ENOENT);
    rmdir(dir);
}
END_TEST

/* ---- gw_json_append_string ---- */

static char *append(const char *s)
{
    struct evbuffer *b = evbuffer_new();
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(gw_json_append_string(b, s), 0);
    size_t n = evbuffer_get_length(b);
    char *out = malloc(n + 1);
    ck_assert_ptr_nonnull(out);
    evbuffer_remove(b, out, n);
    out[n] = '\0';
    evbuffer_free(b);
    return out;
}

#define APPENDS(in, want)                                                                          \
    do {                                                                                           \
        char *o_ = append(in);                                                                     \
        ck_assert_str_eq(o_, (want));                                                              \
        free(o_);                                                                                  \
    } while (0)

START_TEST(test_json_append_string_escapes)
{
    APPENDS("", "\"\"");
    APPENDS("plain text/ok", "\"plain text/ok\"");
    APPENDS("say \"hi\"", "\"say \\\"hi\\\"\"");
    APPENDS("a\\b", "\"a\\\\b\"");
    APPENDS("\x01\n\t\x1f\x7f", "\"\\u0001\\u000a\\u0009\\u001f\\u007f\"");
}
END_TEST

START_TEST(test_json_append_string_replaces_invalid_utf8)
{
    APPENDS("a\xff"
            "b",
            "\"a\\ufffdb\"");
    APPENDS("\xc0\xaf", "\"\\ufffd\\ufffd\"");
    APPENDS("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
    APPENDS("x\xe2\x82", "\"x\\ufffd\\ufffd\"");
    APPENDS("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
}
END_TEST

START_TEST(test_json_append_string_output_parses_back)
{
    /* long enough to cross the writer's internal chunk several times */
    char in[3001];
    for (int i = 0; i < 3000; i++)
        in[i] = "a\"\\\x01\xc3\xa9"[i % 6];
    in[3000] = '\0';
    char *out = append(in);
    struct gw_json_error e;
    cJSON *v = parse(out, &e);
    ck_assert_msg(v != NULL, "%s", e.msg);
    ck_assert_str_eq(v->valuestring, in);
    cJSON_Delete(v);
    free(out);
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_json_parses_every_value_type);
    tcase_add_test(tc, test_json_duplicates_on_both_paths);
    tcase_add_test(tc, test_json_writer_round_trips);
    tcase_add_test(tc, test_json_writer_text);
    tcase_add_test(tc, test_json_writer_string_at_the_cap);
    tcase_add_test(tc, test_json_string_runs_between_escapes_and_utf8);
    tcase_add_test(tc, test_json_parses_scalars_at_top_level);
    tcase_add_test(tc, test_json_decodes_every_simple_escape);
    tcase_add_test(tc, test_json_accepts_surrounding_whitespace);
    tcase_add_test(tc, test_json_buffer_need_not_be_nul_terminated);
    tcase_add_test(tc, test_json_refuses_duplicate_member_at_depth_0);
    tcase_add_test(tc, test_json_lines_table_containers_and_elements);
    tcase_add_test(tc, test_json_duplicate_reported_at_the_second_name);
    tcase_add_test(tc, test_json_refuses_duplicate_member_at_depth_3);
    tcase_add_test(tc, test_json_refuses_duplicate_among_many_members);
    tcase_add_test(tc, test_json_refuses_invalid_utf8);
    tcase_add_test(tc, test_json_keeps_valid_multibyte_utf8);
    tcase_add_test(tc, test_json_refuses_lone_surrogate_escapes);
    tcase_add_test(tc, test_json_decodes_surrogate_pair_to_four_bytes);
    tcase_add_test(tc, test_json_refuses_nul);
    tcase_add_test(tc, test_json_refuses_control_characters_in_strings);
    tcase_add_test(tc, test_json_depth_cap_is_inclusive);
    tcase_add_test(tc, test_json_default_depth_is_64);
    tcase_add_test(tc, test_json_depth_cap_above_512_is_clamped);
    tcase_add_test(tc, test_json_refuses_trailing_bytes);
    tcase_add_test(tc, test_json_accepts_rfc_numbers);
    tcase_add_test(tc, test_json_refuses_non_rfc_numbers);
    tcase_add_test(tc, test_json_reads_underflow_as_zero);
    tcase_add_test(tc, test_json_refuses_overlong_number_literal);
    tcase_add_test(tc, test_json_comments_only_when_allowed);
    tcase_add_test(tc, test_json_refuses_unterminated_block_comment);
    tcase_add_test(tc, test_json_error_line_numbers);
    tcase_add_test(tc, test_json_max_bytes_cap);
    tcase_add_test(tc, test_json_lines_table_gives_member_lines);
    tcase_add_test(tc, test_json_lines_table_nested_scalar_members);
    tcase_add_test(tc, test_json_error_struct_optional);
    tcase_add_test(tc, test_json_read_file_caps_size);
    suite_add_tcase(s, tc);
    TCase *tw = tcase_create("write");
    tcase_add_test(tw, test_json_append_string_escapes);
    tcase_add_test(tw, test_json_append_string_replaces_invalid_utf8);
    tcase_add_test(tw, test_json_append_string_output_parses_back);
    suite_add_tcase(s, tw);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(json_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
