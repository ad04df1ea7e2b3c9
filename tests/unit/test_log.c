/* Unit tests of the access log (proxy/log.c): the line format, the timestamp, and whole lines
 * when workers write their batches to the same pipe (stderr in a container). */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "json.h"
#include "log.h"

START_TEST(test_line_has_every_member_in_order)
{
    struct gw_access a = {.ts_ms = 1795740050123,
                          .request_id = "r1",
                          .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                          .ip = "127.0.0.1",
                          .method = "GET",
                          .path = "/users/x\"y",
                          .op = "get-user",
                          .status = 200,
                          .duration_ms = 2.5,
                          .sub = "svc",
                          .policy = NULL,
                          .auth_failure = NULL,
                          .upstream_status = 0,
                          .upstream_ms = -1,
                          .bytes_in = 610,
                          .bytes_out = 1287};
    struct evbuffer *b = evbuffer_new();
    gw_log_access_format(b, &a);
    size_t n = evbuffer_get_length(b);
    char *line = calloc(1, n + 1);
    evbuffer_remove(b, line, n);
    ck_assert_str_eq(line, "{\"ts\":\"2026-11-27T00:40:50.123Z\",\"request_id\":\"r1\","
                           "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"ip\":"
                           "\"127.0.0.1\",\"method\":\"GET\",\"path\":\"/users/x\\\"y\",\"op\":"
                           "\"get-user\",\"status\":200,\"duration_ms\":2.500,\"sub\":\"svc\","
                           "\"policy\":null,\"auth_failure\":null,\"upstream_status\":null,"
                           "\"upstream_ms\":null,\"bytes_in\":610,\"bytes_out\":1287}\n");
    free(line);
    evbuffer_free(b);
}
END_TEST

START_TEST(test_iso8601_matches_the_calendar)
{
    char t[40];
    gw_log_iso8601(0, t, sizeof t);
    ck_assert_str_eq(t, "1970-01-01T00:00:00.000Z");
    gw_log_iso8601(951782399999, t, sizeof t); /* the last ms of 2000-02-28 */
    ck_assert_str_eq(t, "2000-02-28T23:59:59.999Z");
    gw_log_iso8601(951782400000, t, sizeof t); /* a leap day */
    ck_assert_str_eq(t, "2000-02-29T00:00:00.000Z");
    gw_log_iso8601(951782400001, t, sizeof t); /* the same second again (cached) */
    ck_assert_str_eq(t, "2000-02-29T00:00:00.001Z");
}
END_TEST

/* The member's text for value v in a's line: name, then v as the JSON escaper writes it. */
static void assert_member_escaped(const char *name, const char *v, const char *line)
{
    struct evbuffer *want = evbuffer_new();
    gw_json_append_string(want, v);
    size_t wn = evbuffer_get_length(want);
    char *w = calloc(1, wn + 1), member[700];
    evbuffer_remove(want, w, wn);
    snprintf(member, sizeof member, "\"%s\":%s,", name, w);
    ck_assert_msg(strstr(line, member) != NULL, "%s: %s in %s", name, w, line);
    free(w);
    evbuffer_free(want);
}

/* Every string member is written as the JSON escaper writes it, whether it takes the plain
 * path (printable ASCII that fits beside its name) or the escaper: quotes, backslashes,
 * control characters, DEL, UTF-8, invalid bytes, and plain values of every length around
 * the plain path's room. */
START_TEST(test_string_members_are_written_as_the_escaper_writes_them)
{
    static const char *const odd[] = {"",
                                      "/users/abc",
                                      "a\"b",
                                      "back\\slash",
                                      "tab\there",
                                      "del\x7f",
                                      "caf\xc3\xa9",
                                      "bad\xff utf8",
                                      "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}"};
    size_t nodd = sizeof odd / sizeof *odd;
    char plain[200];
    for (size_t i = 0; i < nodd + 70; i++) {
        const char *v = odd[i < nodd ? i : 0];
        if (i >= nodd) { /* plain values of 130 to 199 characters */
            memset(plain, 'p', i - nodd + 130);
            plain[i - nodd + 130] = '\0';
            v = plain;
        }
        struct gw_access a = {.request_id = v, .path = v, .sub = v, .upstream_ms = -1};
        struct evbuffer *b = evbuffer_new();
        gw_log_access_format(b, &a);
        size_t n = evbuffer_get_length(b);
        char *line = calloc(1, n + 1);
        evbuffer_remove(b, line, n);
        assert_member_escaped("request_id", v, line);
        assert_member_escaped("path", v, line);
        assert_member_escaped("sub", v, line);
        ck_assert_ptr_nonnull(strstr(line, "\"trace_id\":null,"));
        free(line);
        evbuffer_free(b);
    }
}
END_TEST

/* ---- whole lines on a pipe ---- */

struct writer {
    struct gw_log *log;
    char tag;
    int batches;
};

#define LINES_PER_BATCH 600 /* about 60 KB: far more than PIPE_BUF */
#define LINE_LEN 100

static void *write_batches(void *arg)
{
    struct writer *w = arg;
    char line[LINE_LEN + 1];
    memset(line, w->tag, LINE_LEN - 1);
    line[LINE_LEN - 1] = '\n';
    line[LINE_LEN] = '\0';
    struct evbuffer *b = evbuffer_new();
    for (int i = 0; i < w->batches; i++) {
        for (int k = 0; k < LINES_PER_BATCH; k++)
            evbuffer_add(b, line, LINE_LEN);
        gw_log_write(w->log, b);
        ck_assert_uint_eq(evbuffer_get_length(b), 0);
    }
    evbuffer_free(b);
    return NULL;
}

/* Two workers write 60 KB batches to one pipe while the reader is slow: every line read is
 * whole (one writer's 99 bytes), none cut by the other's bytes. */
START_TEST(test_batches_to_a_pipe_keep_lines_whole)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    struct gw_log log = {.path = NULL, .fd = p[1], .pipe = true};
    struct writer a = {&log, 'a', 20}, c = {&log, 'c', 20};
    pthread_t ta, tc;
    pthread_create(&ta, NULL, write_batches, &a);
    pthread_create(&tc, NULL, write_batches, &c);
    size_t total = 2 * 20 * LINES_PER_BATCH, got = 0, bad = 0;
    char buf[LINE_LEN * 8], cur[LINE_LEN + 1];
    size_t curn = 0;
    while (got < total) {
        ssize_t r = read(p[0], buf, sizeof buf);
        ck_assert_int_gt(r, 0);
        for (ssize_t i = 0; i < r; i++) {
            if (curn < sizeof cur)
                cur[curn++] = buf[i];
            if (buf[i] != '\n')
                continue;
            bool whole = curn == LINE_LEN && (cur[0] == 'a' || cur[0] == 'c');
            for (size_t k = 1; whole && k < LINE_LEN - 1; k++)
                whole = cur[k] == cur[0];
            bad += !whole;
            got++;
            curn = 0;
        }
        usleep(50); /* a slow reader: the pipe fills, writers block mid-batch */
    }
    pthread_join(ta, NULL);
    pthread_join(tc, NULL);
    close(p[0]);
    close(p[1]);
    ck_assert_uint_eq(bad, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *t = tcase_create("log");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_line_has_every_member_in_order);
    tcase_add_test(t, test_iso8601_matches_the_calendar);
    tcase_add_test(t, test_string_members_are_written_as_the_escaper_writes_them);
    tcase_add_test(t, test_batches_to_a_pipe_keep_lines_whole);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
