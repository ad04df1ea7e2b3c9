/* Unit tests of the message list (proxy/msgs.c) and of a check's problems and warnings. */
#include <check.h>
#include <stdlib.h>

#include "msgs.h"

START_TEST(test_msgs_collects_formatted_messages)
{
    struct gw_msgs m = {0};
    gw_msgs_add(&m, "%s must be %d", "x", 1);
    for (int i = 0; i < 20; i++) /* past the first allocation */
        gw_msgs_add(&m, "m%d", i);
    ck_assert_uint_eq(m.n, 21);
    ck_assert_str_eq(m.v[0], "x must be 1");
    ck_assert_str_eq(m.v[20], "m19");
    gw_msgs_free(&m);
    ck_assert_uint_eq(m.n, 0);
    ck_assert_ptr_null(m.v);
    struct gw_errs e = {0};
    gw_msgs_add(&e.problems, "p");
    gw_msgs_add(&e.warnings, "w");
    gw_errs_free(&e);
    ck_assert_uint_eq(e.problems.n + e.warnings.n, 0);
}
END_TEST

static Suite *msgs_suite(void)
{
    Suite *s = suite_create("msgs");
    TCase *tc = tcase_create("msgs");
    tcase_add_test(tc, test_msgs_collects_formatted_messages);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(msgs_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
