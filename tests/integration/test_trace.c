/* End to end: trace context (SPEC §7, §9, §10). The real gateway in front of the real sandbox
 * over TLS on loopback: what traceparent reached the upstream (the sandbox journal), what came
 * back to the caller, and the trace_id of the access log line and of the audit records. The
 * traceparent format is checked here on its own terms (not with the gateway's parser). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT "00f067aa0ba902b7"
#define CALLER_TP "00-" TRACE "-" PARENT "-01"

/* n lower-case hex digits at s, not all zeros. */
static bool id_hex(const char *s, size_t n)
{
    return strspn(s, "0123456789abcdef") >= n && strspn(s, "0") < n;
}

/* W3C level 1, version 00, as the gateway must send it: 00-<32>-<16>-<2>, ids not zero. */
static bool well_formed(const char *tp)
{
    return tp && strlen(tp) == 55 && strncmp(tp, "00-", 3) == 0 && id_hex(tp + 3, 32) &&
           tp[35] == '-' && id_hex(tp + 36, 16) && tp[52] == '-' &&
           strspn(tp + 53, "0123456789abcdef") == 2;
}

/* A request's answer: status, and copies of its X-Request-Id and traceparent. */
struct sent {
    int status;
    char rid[80];
    char tp[80];
};

static struct sent call(const char *method, const char *path, const char *extra, const char *body)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, method, path, extra, body, &r), 0);
    struct sent s = {.status = r.status};
    const char *v = response_header(&r, "X-Request-Id");
    snprintf(s.rid, sizeof s.rid, "%s", v ? v : "");
    v = response_header(&r, "traceparent");
    snprintf(s.tp, sizeof s.tp, "%s", v ? v : "");
    ck_assert_msg(well_formed(s.tp), "%s %s: the reply's traceparent \"%s\"", method, path, s.tp);
    ck_assert_msg(s.rid[0] != '\0', "%s %s: no X-Request-Id", method, path);
    response_free(&r);
    return s;
}

/* The traceparent of journal entry n (sent exactly once; no tracestate beside it), copied. */
static void journal_tp(int n, char out[80])
{
    cJSON *j = journal_entry(&E, n);
    ck_assert_ptr_nonnull(j);
    int count = 0;
    const char *tp = journal_header(j, "traceparent", &count);
    ck_assert_msg(count == 1 && tp, "journal entry %d: %d traceparent headers", n, count);
    ck_assert_ptr_null(journal_header(j, "tracestate", NULL));
    snprintf(out, 80, "%s", tp);
    cJSON_Delete(j);
}

/* The access log line of request rid, parsed (waits for the worker's batch to be written). */
static cJSON *access_line(const char *rid)
{
    char needle[120];
    snprintf(needle, sizeof needle, "\"request_id\":\"%s\"", rid);
    char *log = wait_for_text(E.access_log, needle, 5000);
    char *line = strstr(log, needle);
    ck_assert_msg(line != NULL, "no access log line for %s: %s", rid, log);
    while (line > log && line[-1] != '\n')
        line--;
    char *nl = strchr(line, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    cJSON *j = cJSON_Parse(line);
    ck_assert_ptr_nonnull(j);
    /* SPEC §10's order: trace_id right after request_id */
    ck_assert_ptr_nonnull(j->child->next);
    ck_assert_str_eq(j->child->next->string, "request_id");
    ck_assert_ptr_nonnull(j->child->next->next);
    ck_assert_str_eq(j->child->next->next->string, "trace_id");
    free(log);
    return j;
}

static const char *jstr(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A valid caller's traceparent keeps its trace id and flags upstream, with a new parent id of
 * the gateway's (16 lower-case hex digits, not zero, not the caller's); the caller gets the
 * gateway's traceparent back, and the access log has the trace id. tracestate goes nowhere. */
START_TEST(test_valid_traceparent_keeps_its_trace_id_upstream)
{
    static const char *const flags[] = {"01", "00"};
    for (int i = 0; i < 2; i++) {
        char extra[300];
        snprintf(extra, sizeof extra,
                 "traceparent: 00-" TRACE "-" PARENT "-%s\r\ntracestate: congo=t61rcWkgMzE\r\n",
                 flags[i]);
        struct sent s = call("GET", "/users/" SEED_USER, extra, NULL);
        ck_assert_int_eq(s.status, 200);
        char up[80];
        journal_tp(i, up);
        ck_assert_msg(well_formed(up), "upstream traceparent %s", up);
        ck_assert_int_eq(strncmp(up, "00-" TRACE "-", 36), 0);
        ck_assert_int_ne(strncmp(up + 36, PARENT, 16), 0);
        ck_assert_str_eq(up + 53, flags[i]);
        ck_assert_str_eq(s.tp, up); /* the caller learns the gateway's span */
        cJSON *a = access_line(s.rid);
        ck_assert_str_eq(jstr(a, "trace_id"), TRACE);
        cJSON_Delete(a);
    }
}
END_TEST

/* An invalid traceparent is replaced by a new trace (flags 00), a different one each time. */
START_TEST(test_invalid_traceparent_is_replaced_by_a_new_trace)
{
    static const char *const bad[] = {
        "traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-" PARENT "-01\r\n", /* upper case */
        "traceparent: 00-" TRACE "-00F067AA0BA902B7-01\r\n",
        "traceparent: 00-00000000000000000000000000000000-" PARENT "-01\r\n", /* zero ids */
        "traceparent: 00-" TRACE "-0000000000000000-01\r\n",
        "traceparent: ff-" TRACE "-" PARENT "-01\r\n", /* version ff, and a later one */
        "traceparent: 01-" TRACE "-" PARENT "-01\r\n",
        "traceparent: 00-" TRACE "-" PARENT "-1\r\n", /* 54 and 56 characters */
        "traceparent: 00-" TRACE "-" PARENT "-011\r\n",
        "traceparent: " CALLER_TP "\r\ntraceparent: " CALLER_TP "\r\n", /* sent twice */
    };
    int n = (int)(sizeof bad / sizeof *bad);
    char seen[16][33];
    for (int i = 0; i < n; i++) {
        struct sent s = call("GET", "/users/" SEED_USER, bad[i], NULL);
        ck_assert_int_eq(s.status, 200);
        char up[80];
        journal_tp(i, up);
        ck_assert_msg(well_formed(up), "%s: upstream %s", bad[i], up);
        ck_assert_msg(strncmp(up + 3, TRACE, 32) != 0, "%s: the trace id was kept", bad[i]);
        ck_assert_str_eq(up + 53, "00");
        ck_assert_str_eq(s.tp, up);
        snprintf(seen[i], sizeof seen[i], "%.32s", up + 3);
        for (int k = 0; k < i; k++)
            ck_assert_str_ne(seen[k], seen[i]);
        cJSON *a = access_line(s.rid);
        ck_assert_str_eq(jstr(a, "trace_id"), seen[i]);
        cJSON_Delete(a);
    }
}
END_TEST

/* No traceparent: the gateway starts the trace, upstream and back. */
START_TEST(test_missing_traceparent_is_created)
{
    struct sent s = call("GET", "/users/" SEED_USER, NULL, NULL);
    ck_assert_int_eq(s.status, 200);
    char up[80];
    journal_tp(0, up);
    ck_assert_str_eq(s.tp, up);
    ck_assert_str_eq(up + 53, "00");
    cJSON *a = access_line(s.rid);
    ck_assert_int_eq(strncmp(jstr(a, "trace_id"), up + 3, 32), 0);
    cJSON_Delete(a);
}
END_TEST

/* The audit records of request rid, once n of them are written (the outcome is written after
 * the reply: poll). */
static int records_of(const char *rid, cJSON **out, int n)
{
    char needle[120];
    snprintf(needle, sizeof needle, "\"request_id\":\"%s\"", rid);
    for (int waited = 0; waited <= 5000; waited += 50) {
        char *text = slurp(E.audit_file);
        int got = 0;
        for (char *l = strstr(text, needle); l && got < n; l = strstr(l + 1, needle))
            got++;
        if (got == n) {
            got = 0;
            for (char *line = text, *nl; *line && got < n; line = nl + 1) {
                nl = strchr(line, '\n');
                if (nl == NULL)
                    break; /* a line still being written */
                *nl = '\0';
                if (strstr(line, needle))
                    out[got++] = cJSON_Parse(line);
            }
            free(text);
            return got;
        }
        free(text);
        usleep(50000);
    }
    return 0;
}

/* One trace id for a change, everywhere: upstream (create-user's POST; update-user's target
 * GET and its PUT, with the same traceparent), in the access log line, and in the intent and
 * outcome records, right after replica. */
START_TEST(test_trace_id_is_the_same_upstream_in_the_access_log_and_the_audit_records)
{
    struct sent s = call("POST", "/users", "traceparent: " CALLER_TP "\r\n",
                         "{\"companyId\":\"" COMPANY "\",\"firstName\":\"Trace\","
                         "\"lastName\":\"Me\",\"email\":\"trace.me@example.com\","
                         "\"password\":\"Str0ng!Passw0rd\",\"type\":\"account\","
                         "\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"]}");
    ck_assert_int_eq(s.status, 201);
    char up[80];
    journal_tp(0, up);
    ck_assert_str_eq(s.tp, up);
    ck_assert_int_eq(strncmp(up, "00-" TRACE "-", 36), 0);
    cJSON *a = access_line(s.rid);
    ck_assert_str_eq(jstr(a, "trace_id"), TRACE);
    cJSON_Delete(a);
    cJSON *rec[2];
    ck_assert_int_eq(records_of(s.rid, rec, 2), 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_ptr_nonnull(rec[i]);
        ck_assert_str_eq(jstr(rec[i], "event"), i == 0 ? "intent" : "outcome");
        ck_assert_str_eq(jstr(rec[i], "trace_id"), TRACE);
        const cJSON *replica = cJSON_GetObjectItemCaseSensitive(rec[i], "replica");
        ck_assert_ptr_nonnull(replica);
        ck_assert_str_eq(replica->next->string, "trace_id");
        cJSON_Delete(rec[i]);
    }

    /* update-user: a new trace, the same for the target GET and the PUT */
    s = call("PUT", "/users/" SEED_USER, NULL, "{\"lastName\":\"Traced\"}");
    ck_assert_int_eq(s.status, 200);
    char get[80], put[80];
    journal_tp(1, get);
    journal_tp(2, put);
    cJSON *g = journal_entry(&E, 1), *p = journal_entry(&E, 2);
    ck_assert_str_eq(jstr(g, "method"), "GET");
    ck_assert_str_eq(jstr(p, "method"), "PUT");
    cJSON_Delete(g);
    cJSON_Delete(p);
    ck_assert_str_eq(get, put);
    ck_assert_str_eq(s.tp, put);
    ck_assert_int_eq(records_of(s.rid, rec, 2), 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(strncmp(jstr(rec[i], "trace_id"), put + 3, 32), 0);
        cJSON_Delete(rec[i]);
    }
}
END_TEST

/* The gateway's own replies carry the trace too: an unknown route (404, the caller's trace
 * kept), no token (401), and a request refused before routing (a request line that is not
 * HTTP/1.x: 400, and its access log line has a trace id). Nothing went upstream. */
START_TEST(test_gateway_replies_carry_the_trace)
{
    struct sent s = call("GET", "/contacts/x", "traceparent: " CALLER_TP "\r\n", NULL);
    ck_assert_int_eq(s.status, 404);
    ck_assert_int_eq(strncmp(s.tp, "00-" TRACE "-", 36), 0);
    s = call("GET", "/users/" SEED_USER, "Authorization: Bearer not-a-token\r\n", NULL);
    ck_assert_int_eq(s.status, 401);
    cJSON *a = access_line(s.rid);
    ck_assert_int_eq(strncmp(jstr(a, "trace_id"), s.tp + 3, 32), 0);
    cJSON_Delete(a);

    static const char raw[] = "GET /users/" SEED_USER " HTTP/7.0\r\nHost: localhost\r\n\r\n";
    struct response r;
    ck_assert_int_eq(send_raw(&E, raw, strlen(raw), &r), 0);
    ck_assert_int_eq(r.status, 400);
    char rid[80], tp[80];
    snprintf(rid, sizeof rid, "%s", response_header(&r, "X-Request-Id"));
    snprintf(tp, sizeof tp, "%s", response_header(&r, "traceparent"));
    response_free(&r);
    ck_assert_msg(well_formed(tp), "traceparent %s", tp);
    a = access_line(rid);
    ck_assert_int_eq(strncmp(jstr(a, "trace_id"), tp + 3, 32), 0);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(a, "op")));
    cJSON_Delete(a);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("trace");
    TCase *t = tcase_create("traceparent");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_valid_traceparent_keeps_its_trace_id_upstream);
    tcase_add_test(t, test_invalid_traceparent_is_replaced_by_a_new_trace);
    tcase_add_test(t, test_missing_traceparent_is_created);
    tcase_add_test(t, test_trace_id_is_the_same_upstream_in_the_access_log_and_the_audit_records);
    tcase_add_test(t, test_gateway_replies_carry_the_trace);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
