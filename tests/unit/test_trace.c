/* Unit tests of the trace context (proxy/trace.c) against SPEC §7 and W3C Trace Context level
 * 1: which traceparent values are valid (version 00, lower-case hex, neither id all zeros,
 * exactly 55 characters, nothing else), and the gateway's own traceparent made from a valid
 * one (its trace id and sampled flag kept, a new parent id from the random bytes given) or a
 * new trace. Values are checked from heap copies of exactly their size, so the sanitizer build
 * catches a read past a short value's end. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT "00f067aa0ba902b7"
#define VALID "00-" TRACE "-" PARENT "-01"

/* gw_trace_valid on an exactly sized heap copy of s. */
static bool valid(const char *s)
{
    size_t n = strlen(s);
    char *c = malloc(n + 1);
    ck_assert_ptr_nonnull(c);
    memcpy(c, s, n + 1);
    bool v = gw_trace_valid(c);
    free(c);
    return v;
}

#define ASSERT_INVALID(s) ck_assert_msg(!valid(s), "accepted: \"%s\"", (s))
#define ASSERT_VALID(s) ck_assert_msg(valid(s), "refused: \"%s\"", (s))

/* ---- valid ---- */

START_TEST(test_trace_accepts_the_w3c_examples)
{
    ck_assert_uint_eq(strlen(VALID), GW_TRACEPARENT_LEN);
    ASSERT_VALID(VALID);                        /* sampled */
    ASSERT_VALID("00-" TRACE "-" PARENT "-00"); /* not sampled */
    /* flag bits level 1 does not define are still a valid header (they are not sent on) */
    ASSERT_VALID("00-" TRACE "-" PARENT "-ff");
    ASSERT_VALID("00-" TRACE "-" PARENT "-09");
}
END_TEST

START_TEST(test_trace_accepts_ids_with_one_bit_set)
{
    ASSERT_VALID("00-00000000000000000000000000000001-" PARENT "-01");
    ASSERT_VALID("00-10000000000000000000000000000000-" PARENT "-01");
    ASSERT_VALID("00-" TRACE "-0000000000000001-01");
    ASSERT_VALID("00-" TRACE "-8000000000000000-00");
}
END_TEST

/* ---- invalid ---- */

START_TEST(test_trace_refuses_upper_case_hex)
{
    ASSERT_INVALID("00-4BF92F3577B34DA6A3CE929D0E0E4736-" PARENT "-01");
    ASSERT_INVALID("00-4bf92f3577b34da6a3ce929d0e0e473A-" PARENT "-01");
    ASSERT_INVALID("00-" TRACE "-00F067AA0BA902B7-01");
    ASSERT_INVALID("00-" TRACE "-" PARENT "-0A");
}
END_TEST

START_TEST(test_trace_refuses_all_zero_ids)
{
    ASSERT_INVALID("00-00000000000000000000000000000000-" PARENT "-01");
    ASSERT_INVALID("00-" TRACE "-0000000000000000-01");
    ASSERT_INVALID("00-00000000000000000000000000000000-0000000000000000-00");
}
END_TEST

/* ff is forbidden by the W3C; SPEC §7 takes version 00 alone, so a later one starts a new
 * trace (with or without the fields a later version may add). */
START_TEST(test_trace_refuses_every_version_but_00)
{
    ASSERT_INVALID("ff-" TRACE "-" PARENT "-01");
    ASSERT_INVALID("01-" TRACE "-" PARENT "-01");
    ASSERT_INVALID("01-" TRACE "-" PARENT "-01-what-comes-later");
    ASSERT_INVALID("0f-" TRACE "-" PARENT "-01");
    ASSERT_INVALID("10-" TRACE "-" PARENT "-01");
    ASSERT_INVALID("FF-" TRACE "-" PARENT "-01");
    ASSERT_INVALID("0-" TRACE "-" PARENT "-01");
    ASSERT_INVALID("000-" TRACE "-" PARENT "-01");
}
END_TEST

START_TEST(test_trace_refuses_wrong_lengths)
{
    char v[80];
    /* 54: one flag digit; 56: one more character, of every kind */
    ASSERT_INVALID("00-" TRACE "-" PARENT "-0");
    ASSERT_INVALID("00-" TRACE "-" PARENT "-010");
    ASSERT_INVALID("00-" TRACE "-" PARENT "-01-");
    ASSERT_INVALID("00-" TRACE "-" PARENT "-01x");
    /* an id a digit short or long, the total length kept or not */
    ASSERT_INVALID("00-4bf92f3577b34da6a3ce929d0e0e473-" PARENT "-01");
    ASSERT_INVALID("00-4bf92f3577b34da6a3ce929d0e0e47360-" PARENT "-01");
    ASSERT_INVALID("00-4bf92f3577b34da6a3ce929d0e0e473-" PARENT "0-01");
    ASSERT_INVALID("00-" TRACE "-00f067aa0ba902b-01");
    ASSERT_INVALID("00-" TRACE "-00f067aa0ba902b70-01");
    ASSERT_INVALID("00-" TRACE "-00f067aa0ba902b-011");
    /* every prefix of a valid value, each from a buffer of exactly its size */
    for (size_t n = 0; n < GW_TRACEPARENT_LEN; n++) {
        memcpy(v, VALID, n);
        v[n] = '\0';
        ck_assert_msg(!valid(v), "the %zu-character prefix was accepted", n);
    }
}
END_TEST

START_TEST(test_trace_refuses_missing_or_moved_dashes)
{
    ASSERT_INVALID("00" TRACE "-" PARENT "-01");
    ASSERT_INVALID("00-" TRACE PARENT "-01");
    ASSERT_INVALID("00-" TRACE "-" PARENT "01");
    ASSERT_INVALID("00_" TRACE "_" PARENT "_01");
    ASSERT_INVALID("00-4bf92f3577b34da6a3ce929d0e0e473-6" PARENT "-01");
    ASSERT_INVALID("00-" TRACE "-00f067aa0ba902b-701");
    ASSERT_INVALID("00--" TRACE PARENT "-01");
}
END_TEST

START_TEST(test_trace_refuses_non_hex_and_whitespace)
{
    ASSERT_INVALID("00-4bf92f3577b34da6a3ce929d0e0e473g-" PARENT "-01");
    ASSERT_INVALID("00-" TRACE "-00f067aa0ba902bz-01");
    ASSERT_INVALID("00-" TRACE "-" PARENT "-0x");
    ASSERT_INVALID("00-" TRACE "-00f067aa 0ba902b-01");
    ASSERT_INVALID("00-+bf92f3577b34da6a3ce929d0e0e4736-" PARENT "-01");
    ASSERT_INVALID(VALID " ");  /* trailing whitespace */
    ASSERT_INVALID(VALID "\t"); /* (conn.c trims both around a header value) */
    ASSERT_INVALID(" " VALID);  /* leading */
    ASSERT_INVALID(VALID ",");  /* a list of two */
    ASSERT_INVALID(VALID "," VALID);
}
END_TEST

START_TEST(test_trace_refuses_empty_and_absent)
{
    ASSERT_INVALID("");
    ck_assert(!gw_trace_valid(NULL));
}
END_TEST

/* Every single-character change of a valid value: valid exactly when the character stays what
 * its position allows (the version's 0, a dash, a lower-case hex digit). */
START_TEST(test_trace_every_character_at_every_position)
{
    char v[GW_TRACEPARENT_LEN + 1];
    for (size_t i = 0; i < GW_TRACEPARENT_LEN; i++)
        for (int c = 1; c < 256; c++) {
            memcpy(v, VALID, sizeof v);
            v[i] = (char)c;
            bool want;
            if (i < 2)
                want = c == '0';
            else if (i == 2 || i == 35 || i == 52)
                want = c == '-';
            else
                want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            ck_assert_msg(gw_trace_valid(v) == want, "position %zu, byte %d: %s", i, c,
                          want ? "refused" : "accepted");
        }
}
END_TEST

/* ---- the gateway's traceparent ---- */

static const unsigned char RND[GW_TRACE_NEW_RANDOM] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
    0x0c, 0x0d, 0x0e, 0x0f, 0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87};

/* A valid caller's trace id and sampled flag are kept; its parent id is replaced by the span
 * id of the random bytes. */
START_TEST(test_trace_continues_a_valid_callers_trace)
{
    struct gw_trace t;
    gw_trace_make(&t, VALID, RND);
    ck_assert_str_eq(t.traceparent, "00-" TRACE "-0001020304050607-01");
    ck_assert_str_eq(t.trace_id, TRACE);
    ck_assert(gw_trace_valid(t.traceparent));
    gw_trace_make(&t, "00-" TRACE "-" PARENT "-00", RND + 16);
    ck_assert_str_eq(t.traceparent, "00-" TRACE "-f0e1d2c3b4a59687-00");
}
END_TEST

/* Level 1 defines the sampled bit alone and has the others sent as zeros. */
START_TEST(test_trace_keeps_the_sampled_flag_only)
{
    static const struct {
        const char *in, *out;
    } flags[] = {{"00", "00"}, {"01", "01"}, {"02", "00"}, {"03", "01"}, {"09", "01"},
                 {"80", "00"}, {"fe", "00"}, {"ff", "01"}, {"a1", "01"}};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        char in[GW_TRACEPARENT_LEN + 1];
        snprintf(in, sizeof in, "00-" TRACE "-" PARENT "-%s", flags[i].in);
        ck_assert(gw_trace_valid(in));
        struct gw_trace t;
        gw_trace_make(&t, in, RND);
        ck_assert_msg(strcmp(t.traceparent + 53, flags[i].out) == 0, "flags %s became %s",
                      flags[i].in, t.traceparent + 53);
    }
}
END_TEST

/* No valid caller's traceparent: a new trace id and span id from the random bytes, flags 00. */
START_TEST(test_trace_starts_a_new_trace)
{
    struct gw_trace t;
    gw_trace_make(&t, NULL, RND);
    ck_assert_str_eq(t.traceparent, "00-000102030405060708090a0b0c0d0e0f-f0e1d2c3b4a59687-00");
    ck_assert_str_eq(t.trace_id, "000102030405060708090a0b0c0d0e0f");
    ck_assert(gw_trace_valid(t.traceparent));
}
END_TEST

/* Random bytes that are zeros, or none at all (RAND_bytes failing), still make valid ids. */
START_TEST(test_trace_ids_are_never_all_zeros)
{
    static const unsigned char zeros[GW_TRACE_NEW_RANDOM];
    struct gw_trace t;
    gw_trace_make(&t, NULL, zeros);
    ck_assert_str_eq(t.traceparent, "00-00000000000000000000000000000001-0000000000000001-00");
    ck_assert(gw_trace_valid(t.traceparent));
    gw_trace_make(&t, NULL, NULL);
    ck_assert_str_eq(t.traceparent, "00-00000000000000000000000000000001-0000000000000001-00");
    gw_trace_make(&t, VALID, zeros);
    ck_assert_str_eq(t.traceparent, "00-" TRACE "-0000000000000001-01");
    gw_trace_make(&t, VALID, NULL);
    ck_assert_str_eq(t.traceparent, "00-" TRACE "-0000000000000001-01");
    /* only the last byte zero, or only the first: as drawn */
    unsigned char one[GW_TRACE_NEW_RANDOM] = {0};
    one[0] = 0x80;
    one[16] = 0x01;
    gw_trace_make(&t, NULL, one);
    ck_assert_str_eq(t.traceparent, "00-80000000000000000000000000000000-0100000000000000-00");
}
END_TEST

/* gw_trace_make reads exactly the random bytes the header names: a continued trace 8, a new
 * one 24 (exactly sized heap buffers: the sanitizer build catches a read past them). */
START_TEST(test_trace_reads_only_the_random_bytes_it_takes)
{
    unsigned char *span = malloc(GW_TRACE_SPAN_RANDOM), *all = malloc(GW_TRACE_NEW_RANDOM);
    ck_assert_ptr_nonnull(span);
    ck_assert_ptr_nonnull(all);
    memset(span, 0x5a, GW_TRACE_SPAN_RANDOM);
    memset(all, 0xa5, GW_TRACE_NEW_RANDOM);
    struct gw_trace t;
    gw_trace_make(&t, VALID, span);
    ck_assert_str_eq(t.traceparent, "00-" TRACE "-5a5a5a5a5a5a5a5a-01");
    gw_trace_make(&t, NULL, all);
    ck_assert_str_eq(t.traceparent, "00-a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5-a5a5a5a5a5a5a5a5-00");
    free(span);
    free(all);
}
END_TEST

static Suite *trace_suite(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("traceparent");
    tcase_add_test(tc, test_trace_accepts_the_w3c_examples);
    tcase_add_test(tc, test_trace_accepts_ids_with_one_bit_set);
    tcase_add_test(tc, test_trace_refuses_upper_case_hex);
    tcase_add_test(tc, test_trace_refuses_all_zero_ids);
    tcase_add_test(tc, test_trace_refuses_every_version_but_00);
    tcase_add_test(tc, test_trace_refuses_wrong_lengths);
    tcase_add_test(tc, test_trace_refuses_missing_or_moved_dashes);
    tcase_add_test(tc, test_trace_refuses_non_hex_and_whitespace);
    tcase_add_test(tc, test_trace_refuses_empty_and_absent);
    tcase_add_test(tc, test_trace_every_character_at_every_position);
    tcase_add_test(tc, test_trace_continues_a_valid_callers_trace);
    tcase_add_test(tc, test_trace_keeps_the_sampled_flag_only);
    tcase_add_test(tc, test_trace_starts_a_new_trace);
    tcase_add_test(tc, test_trace_ids_are_never_all_zeros);
    tcase_add_test(tc, test_trace_reads_only_the_random_bytes_it_takes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(trace_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
