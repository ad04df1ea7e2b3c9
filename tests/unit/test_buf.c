/* Unit tests of the capped growing buffer (proxy/buf.c): the cap given where a buffer is made,
 * the failed state past it, taking the bytes, and the wiping of a buffer that may hold a
 * credential. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

START_TEST(test_buf_appends_up_to_the_cap_exactly)
{
    struct gw_buf b = GW_BUF_INIT(10);
    ck_assert_int_eq(gw_buf_str(&b, "0123"), 0);
    ck_assert_int_eq(gw_buf_add(&b, "456789", 6), 0);
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.n, 10);
    ck_assert_str_eq(b.p, "0123456789"); /* NUL-terminated after every append */
    char *t = gw_buf_take(&b);
    ck_assert_str_eq(t, "0123456789");
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_uint_eq(b.max, 10); /* empty again, with its cap */
    free(t);
}
END_TEST

START_TEST(test_buf_past_the_cap_fails_and_keeps_failing)
{
    struct gw_buf b = GW_BUF_INIT(10);
    gw_buf_str(&b, "01234");
    ck_assert_int_eq(gw_buf_str(&b, "567890"), -1); /* 11 bytes */
    ck_assert(b.failed);
    ck_assert_uint_eq(b.n, 5);                 /* what it held before the append that failed */
    ck_assert_str_eq(b.p, "01234");            /* nothing of that append */
    ck_assert_int_eq(gw_buf_str(&b, "5"), -1); /* would fit, but the buffer has failed */
    ck_assert_int_eq(gw_buf_printf(&b, "%d", 5), -1);
    ck_assert_ptr_null(gw_buf_space(&b, 0));
    ck_assert_uint_eq(b.n, 5);
    ck_assert_ptr_null(gw_buf_take(&b)); /* the bytes are freed */
    ck_assert_ptr_null(b.p);
    ck_assert(!b.failed); /* a taken buffer starts again */
    ck_assert_int_eq(gw_buf_str(&b, "ok"), 0);
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_buf_huge_append_fails_without_overflow)
{
    struct gw_buf b = GW_BUF_INIT(1 << 20);
    gw_buf_str(&b, "x");
    ck_assert_ptr_null(gw_buf_space(&b, SIZE_MAX));
    ck_assert_ptr_null(gw_buf_space(&b, SIZE_MAX - 1));
    ck_assert(b.failed);
    ck_assert_uint_eq(b.n, 1);
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_buf_empty_take_gives_an_empty_string)
{
    struct gw_buf b = GW_BUF_INIT(0);
    char *t = gw_buf_take(&b);
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t, "");
    free(t);
    ck_assert_int_eq(gw_buf_add(&b, NULL, 0), 0); /* 0 bytes fit a cap of 0 */
    ck_assert_int_eq(gw_buf_str(&b, "x"), -1);
    ck_assert_ptr_null(gw_buf_take(&b));
    ck_assert_int_eq(gw_buf_printf(&b, "%s", ""), 0);
    ck_assert_int_eq(gw_buf_printf(&b, "%d", 1), -1); /* printed in place, then found too long */
    ck_assert_str_eq(b.p, "");
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_buf_grows_past_its_first_allocation)
{
    struct gw_buf b = GW_BUF_INIT(1 << 20);
    for (int i = 0; i < 10000; i++)
        ck_assert_int_eq(gw_buf_add(&b, "0123456789", 10), 0);
    ck_assert_uint_eq(b.n, 100000);
    ck_assert_uint_eq(strlen(b.p), 100000);
    ck_assert_int_eq(memcmp(b.p + 99990, "0123456789", 10), 0);
    ck_assert_uint_le(b.alloc, (size_t)(1 << 20) + 1);
    gw_buf_free(&b);
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(b.alloc, 0);
}
END_TEST

START_TEST(test_buf_printf_grows_and_respects_the_cap)
{
    struct gw_buf b = GW_BUF_INIT(3000);
    ck_assert_int_eq(gw_buf_printf(&b, "%s=%d;", "a", 1), 0);
    char big[2000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ck_assert_int_eq(gw_buf_printf(&b, "[%s]", big), 0); /* past the first 1 KiB */
    ck_assert_uint_eq(b.n, 4 + 2001);
    ck_assert_int_eq(strncmp(b.p, "a=1;[zzz", 8), 0);
    ck_assert_str_eq(b.p + b.n - 2, "z]");
    ck_assert_int_eq(gw_buf_printf(&b, "%s", big), -1); /* 2005 + 1999 > 3000 */
    ck_assert(b.failed);
    ck_assert_uint_eq(b.n, 2005);
    ck_assert_uint_eq(strlen(b.p), 2005); /* a cut text written past n is not left readable */
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_buf_space_then_advance_writes_in_place)
{
    struct gw_buf b = GW_BUF_INIT(64);
    gw_buf_str(&b, "ab");
    char *o = gw_buf_space(&b, 10);
    ck_assert_ptr_nonnull(o);
    memcpy(o, "cde", 3);
    gw_buf_advance(&b, 3); /* fewer than asked for */
    ck_assert_str_eq(b.p, "abcde");
    ck_assert_ptr_null(gw_buf_space(&b, 60)); /* 5 + 60 > 64 */
    ck_assert(b.failed);
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_buf_truncate_and_reset)
{
    struct gw_buf b = GW_BUF_INIT(8);
    gw_buf_str(&b, "abcdef}");
    gw_buf_truncate(&b, b.n - 1);
    ck_assert_str_eq(b.p, "abcdef");
    gw_buf_truncate(&b, 100); /* more than held: nothing */
    ck_assert_uint_eq(b.n, 6);
    gw_buf_str(&b, "xyz"); /* 9 > 8 */
    ck_assert(b.failed);
    char *p = b.p;
    gw_buf_reset(&b);
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_ptr_eq(b.p, p); /* the memory is kept */
    ck_assert_str_eq(b.p, "");
    ck_assert_int_eq(gw_buf_str(&b, "12345678"), 0);
    gw_buf_free(&b);
}
END_TEST

/* A buffer that may hold a credential: it behaves the same, and the bytes it stops holding are
 * wiped at once (what OPENSSL_clear_free wipes at free cannot be looked at afterwards). */
START_TEST(test_buf_wipe_buffer_behaves_the_same_and_wipes_what_it_drops)
{
    struct gw_buf b = GW_BUF_INIT_WIPE(4096);
    ck_assert(b.wipe);
    gw_buf_str(&b, "Authorization: Bearer ");
    gw_buf_str(&b, "secret-token");
    size_t at = strlen("Authorization: Bearer ");
    gw_buf_truncate(&b, at);
    for (size_t i = at; i < at + strlen("secret-token"); i++)
        ck_assert_int_eq(b.p[i], 0);
    gw_buf_str(&b, "another");
    gw_buf_reset(&b);
    for (size_t i = 0; i < at + strlen("another"); i++)
        ck_assert_int_eq(b.p[i], 0);
    for (int i = 0; i < 300; i++) /* grows (no realloc: copied, the old copy wiped) */
        ck_assert_int_eq(gw_buf_str(&b, "0123456789"), 0);
    ck_assert_uint_eq(b.n, 3000);
    ck_assert_int_eq(gw_buf_str(&b, "x"), 0);
    ck_assert_int_eq(gw_buf_printf(&b, "%02d", 7), 0);
    ck_assert_str_eq(b.p + 3000, "x07");
    gw_buf_free(&b);
    ck_assert(b.wipe); /* kept for the next use */
    ck_assert_ptr_null(b.p);
}
END_TEST

static Suite *buf_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("buf");
    tcase_add_test(tc, test_buf_appends_up_to_the_cap_exactly);
    tcase_add_test(tc, test_buf_past_the_cap_fails_and_keeps_failing);
    tcase_add_test(tc, test_buf_huge_append_fails_without_overflow);
    tcase_add_test(tc, test_buf_empty_take_gives_an_empty_string);
    tcase_add_test(tc, test_buf_grows_past_its_first_allocation);
    tcase_add_test(tc, test_buf_printf_grows_and_respects_the_cap);
    tcase_add_test(tc, test_buf_space_then_advance_writes_in_place);
    tcase_add_test(tc, test_buf_truncate_and_reset);
    tcase_add_test(tc, test_buf_wipe_buffer_behaves_the_same_and_wipes_what_it_drops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(buf_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
