/* Integration: the audit log (SPEC §9) written by the live gateway: intent before a change
 * goes upstream and outcome after, denied records with every policy's reasons, nothing secret
 * in the file, audit-verify on the real log and on tampered copies, restarts and rotations,
 * failing closed when the file cannot be written, and group commit under concurrency. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static struct env E;
static struct env E2; /* a second gateway (another replica), when a test starts one */

#define PASSWORD "Pl41n-Secret-Passw0rd"
#define CREATE_BODY                                                                                \
    "{\"companyId\":\"" COMPANY "\",\"firstName\":\"Audit\",\"lastName\":\"Me\","                  \
    "\"email\":\"audit.me@example.com\",\"password\":\"" PASSWORD "\",\"type\":\"account\","       \
    "\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"]}"

static void teardown(void)
{
    env_stop(&E2); /* it may write into E's folder */
    env_stop(&E);
}

/* The audit file's records, parsed, in order (a NULL-terminated array). */
static cJSON **records(const char *path, int *n)
{
    char *text = slurp(path);
    int cap = 16;
    cJSON **v = calloc((size_t)cap, sizeof *v);
    *n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (*n + 2 > cap) {
            cap *= 2;
            v = realloc(v, (size_t)cap * sizeof *v);
        }
        v[*n] = cJSON_Parse(line);
        ck_assert_msg(v[*n] != NULL, "not JSON: %s", line);
        (*n)++;
        v[*n] = NULL;
    }
    free(text);
    return v;
}

static void records_free(cJSON **v)
{
    for (int i = 0; v && v[i]; i++)
        cJSON_Delete(v[i]);
    free(v);
}

static const char *sget(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The records of one request, in file order. */
static int of_request(cJSON **v, int n, const char *rid, cJSON **out, int cap)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *r = sget(v[i], "request_id");
        if (r && strcmp(r, rid) == 0 && k < cap)
            out[k++] = v[i];
    }
    return k;
}

static int verify(const char *args, char **out)
{
    char *cmd = NULL;
    ck_assert_int_ge(asprintf(&cmd, "%s audit-verify %s", bin_path("ghl-gateway"), args), 0);
    int rc = run_cmd(cmd, out);
    free(cmd);
    return rc;
}

static void assert_verifies(const char *args)
{
    char *out;
    int rc = verify(args, &out);
    ck_assert_msg(rc == 0 && strstr(out, "records verified"), "audit-verify %s: %d %s", args, rc,
                  out);
    free(out);
}

static void send_ok(const char *method, const char *path, const char *body, char *rid, size_t cap,
                    int want)
{
    struct response r;
    ck_assert_int_eq(send_req(&E, method, path, NULL, body, &r), 0);
    ck_assert_msg(r.status == want, "%s %s: %d %s", method, path, r.status, r.body);
    if (rid)
        snprintf(rid, cap, "%s", response_header(&r, "X-Request-Id"));
    response_free(&r);
}

/* The writer is asynchronous for records nobody waits for (outcome, denied): poll. */
static void wait_records(const char *path, int at_least)
{
    for (int i = 0; i < 100; i++) {
        int n;
        cJSON **v = records(path, &n);
        records_free(v);
        if (n >= at_least)
            return;
        usleep(50000);
    }
    ck_abort_msg("fewer than %d audit records in %s", at_least, path);
}

START_TEST(test_changes_write_intent_then_outcome_and_nothing_secret)
{
    env_start(&E, NULL);
    char rc_[80], ru[80], rd[80];
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, CREATE_BODY, &r), 0);
    ck_assert_int_eq(r.status, 201);
    snprintf(rc_, sizeof rc_, "%s", response_header(&r, "X-Request-Id"));
    cJSON *created = cJSON_Parse(r.body);
    char new_id[80];
    snprintf(new_id, sizeof new_id, "%s", sget(created, "id"));
    cJSON_Delete(created);
    response_free(&r);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"Byron\"}", ru, sizeof ru, 200);
    send_ok("DELETE", "/users/" SEED_USER, NULL, rd, sizeof rd, 200);
    send_ok("GET", "/users/search?companyId=" COMPANY, NULL, NULL, 0, 200); /* not audited */
    wait_records(E.audit_file, 6);

    int n;
    cJSON **v = records(E.audit_file, &n);
    ck_assert_int_eq(n, 6); /* reads are not audited without include_reads */
    char host[256];
    ck_assert_int_eq(gethostname(host, sizeof host), 0);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(cJSON_GetObjectItem(v[i], "seq")->valueint, i + 1);
        ck_assert_int_eq(cJSON_GetObjectItem(v[i], "v")->valueint, 1);
        ck_assert_str_eq(sget(v[i], "replica"), host); /* audit.replica_id null: the host name */
    }
    const char *rids[] = {rc_, ru, rd};
    const char *ops[] = {"create-user", "update-user", "delete-user"};
    int statuses[] = {201, 200, 200};
    for (int k = 0; k < 3; k++) {
        cJSON *mine[4];
        ck_assert_int_eq(of_request(v, n, rids[k], mine, 4), 2);
        ck_assert_str_eq(sget(mine[0], "event"), "intent");
        ck_assert_str_eq(sget(mine[1], "event"), "outcome");
        ck_assert_str_eq(sget(mine[0], "op"), ops[k]);
        ck_assert_str_eq(sget(mine[0], "policy"), "harness-all");
        ck_assert_ptr_null(cJSON_GetObjectItem(mine[0], "status"));
        ck_assert_int_eq(cJSON_GetObjectItem(mine[1], "status")->valueint, statuses[k]);
        ck_assert_str_eq(sget(mine[1], "upstream"), "answered");
        ck_assert_ptr_null(cJSON_GetObjectItem(mine[0], "upstream"));
        const cJSON *actor = cJSON_GetObjectItem(mine[0], "actor");
        ck_assert_str_eq(sget(actor, "sub"), "svc-test");
        ck_assert_str_eq(sget(actor, "iss"), ISSUER_RS);
        ck_assert_str_eq(sget(actor, "ip"), "127.0.0.1");
    }
    /* create: the change as validated, password redacted; the new id in the outcome */
    cJSON *c[2];
    of_request(v, n, rc_, c, 2);
    const cJSON *change = cJSON_GetObjectItem(c[0], "change");
    ck_assert_str_eq(sget(change, "password"), "[REDACTED]");
    ck_assert_str_eq(sget(change, "email"), "audit.me@example.com");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(c[0], "target"), "user_id")));
    ck_assert_str_eq(sget(cJSON_GetObjectItem(c[1], "target"), "user_id"), new_id);
    ck_assert_str_eq(sget(cJSON_GetObjectItem(c[1], "target"), "company_id"), COMPANY);
    /* update and delete: the target as fetched, before the change */
    cJSON *u[2];
    of_request(v, n, ru, u, 2);
    const cJSON *before = cJSON_GetObjectItem(u[0], "before");
    ck_assert_str_eq(sget(before, "type"), "account");
    ck_assert_str_eq(sget(before, "role"), "user");
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(before, "locationIds"), 0)->valuestring,
                     LOC1);
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(before, "permissions"));
    ck_assert_str_eq(sget(cJSON_GetObjectItem(u[0], "target"), "user_id"), SEED_USER);
    ck_assert_str_eq(sget(cJSON_GetObjectItem(u[0], "change"), "lastName"), "Byron");
    /* the intent was written before the change went upstream, the outcome after: the
     * sandbox's journal and the audit log stamp with this machine's clock, same format */
    for (int i = 0; i < journal_count(&E); i++) {
        cJSON *j = journal_entry(&E, i);
        if (strcmp(sget(j, "method"), "PUT") == 0) {
            ck_assert_str_le(sget(u[0], "ts"), sget(j, "ts"));
            ck_assert_str_ge(sget(u[1], "ts"), sget(j, "ts"));
        }
        cJSON_Delete(j);
    }
    records_free(v);

    /* nothing secret anywhere in the file */
    char *file = slurp(E.audit_file);
    ck_assert_ptr_null(strstr(file, PASSWORD));
    ck_assert_ptr_null(strstr(file, E.token));
    ck_assert_ptr_null(strstr(file, E.token_ro));
    ck_assert_ptr_null(strstr(file, AGENCY_TOKEN));
    ck_assert_ptr_null(strstr(file, LOC1_TOKEN));
    /* not even a token's signature (its last segment) */
    ck_assert_ptr_null(strstr(file, strrchr(E.token, '.') + 1));
    free(file);
    char args[700];
    snprintf(args, sizeof args, "%s", E.audit_file);
    assert_verifies(args);
}
END_TEST

static const char pol_first[] =
    "{ \"name\": \"a-first\", \"subjects\": [ { \"sub\": \"svc-bot\" } ],\n"
    "  \"operations\": [\"get-user\"], \"companies\": \"*\", \"locations\": \"*\" }\n";
static const char pol_second[] =
    "{ \"name\": \"b-second\", \"subjects\": [ { \"sub\": \"svc-bot\" } ],\n"
    "  \"operations\": [\"create-user\"], \"companies\": \"*\", \"locations\": [\"Elsewhere\"],\n"
    "  \"grant\": { \"types\": [\"account\"], \"roles\": [\"user\"], \"scopes\": [\"*\"],\n"
    "             \"scopes_assigned_to_only\": [\"*\"] } }\n";

START_TEST(test_denied_record_carries_every_policy_reason)
{
    env_start(&E, &(struct env_opts){.policies = {{"a.json", pol_first}, {"b.json", pol_second}}});
    char bot[4096];
    ck_assert_int_eq(
        mint("RS256", ISSUER_RS, "svc-bot", "users.readonly users.write", NULL, bot, sizeof bot),
        0);
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", bot);
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", auth, CREATE_BODY, &r), 0);
    ck_assert_int_eq(r.status, 403);
    char rid[80];
    snprintf(rid, sizeof rid, "%s", response_header(&r, "X-Request-Id"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
    wait_records(E.audit_file, 1);
    int n;
    cJSON **v = records(E.audit_file, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(sget(v[0], "event"), "denied");
    ck_assert_str_eq(sget(v[0], "request_id"), rid);
    ck_assert_str_eq(sget(v[0], "policy"), "a-first");
    const cJSON *reasons = cJSON_GetObjectItem(v[0], "reasons");
    ck_assert_int_eq(cJSON_GetArraySize(reasons), 2);
    ck_assert_str_eq(cJSON_GetArrayItem(reasons, 0)->valuestring,
                     "policy a-first: operation create-user is not allowed");
    ck_assert_str_eq(cJSON_GetArrayItem(reasons, 1)->valuestring,
                     "policy b-second: location " LOC1 " is not allowed");
    ck_assert_str_eq(sget(cJSON_GetObjectItem(v[0], "change"), "password"), "[REDACTED]");
    ck_assert_str_eq(sget(cJSON_GetObjectItem(v[0], "actor"), "sub"), "svc-bot");
    records_free(v);
    char *file = slurp(E.audit_file);
    ck_assert_ptr_null(strstr(file, PASSWORD));
    ck_assert_ptr_null(strstr(file, bot));
    free(file);
}
END_TEST

/* Writes lines (an array of strings) to path, each with its newline. */
static void write_lines(const char *path, char **lines, int n)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\n", lines[i]);
    fclose(f);
}

static int split_lines(char *text, char **lines, int cap)
{
    int n = 0;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l && n < cap; l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    return n;
}

/* audit-verify on a copy: expect exit 1 and the bad line named. */
static void assert_refused(const char *path, const char *extra, const char *want)
{
    char args[1200], *out;
    snprintf(args, sizeof args, "%s %s", path, extra ? extra : "");
    int rc = verify(args, &out);
    ck_assert_msg(rc == 1, "audit-verify %s: exit %d, expected 1: %s", args, rc, out);
    ck_assert_msg(strstr(out, want) != NULL, "audit-verify %s: \"%s\" not in: %s", args, want, out);
    free(out);
}

START_TEST(test_verify_detects_every_kind_of_tampering)
{
    env_start(&E, NULL);
    for (int i = 0; i < 3; i++) {
        char body[100];
        snprintf(body, sizeof body, "{\"lastName\":\"V%d\"}", i);
        send_ok("PUT", "/users/" SEED_USER, body, NULL, 0, 200);
    }
    wait_records(E.audit_file, 6);
    assert_verifies(E.audit_file);
    char *text = slurp(E.audit_file);
    char *lines[16];
    int n = split_lines(text, lines, 16);
    ck_assert_int_eq(n, 6);
    char copy[700];
    snprintf(copy, sizeof copy, "%s/copy.jsonl", E.dir);

    /* one changed byte: V1 -> W1 in the third record */
    char *changed = strdup(lines[2]);
    char *at = strstr(changed, "\"V1\"");
    ck_assert_ptr_nonnull(at);
    at[1] = 'W';
    char *l2[16];
    memcpy(l2, lines, sizeof lines);
    l2[2] = changed;
    write_lines(copy, l2, n);
    assert_refused(copy, NULL, "copy.jsonl:3: the hash does not match");
    free(changed);

    /* one line deleted (not the last) */
    memcpy(l2, lines, sizeof lines);
    memmove(&l2[1], &l2[2], (size_t)(n - 2) * sizeof *l2);
    write_lines(copy, l2, n - 1);
    assert_refused(copy, NULL, "copy.jsonl:2: seq 3 follows seq 1");

    /* two lines swapped */
    memcpy(l2, lines, sizeof lines);
    l2[2] = lines[3];
    l2[3] = lines[2];
    write_lines(copy, l2, n);
    assert_refused(copy, NULL, "copy.jsonl:3: seq 4 follows seq 2");

    /* a line inserted (a valid record, repeated) */
    memcpy(l2, lines, sizeof lines);
    memmove(&l2[3], &l2[2], (size_t)(n - 2) * sizeof *l2);
    l2[2] = lines[1];
    write_lines(copy, l2, n + 1);
    assert_refused(copy, NULL, "copy.jsonl:3: seq 2 follows seq 2");

    /* the tail cut off: the chain alone cannot tell, the anchor can */
    write_lines(copy, lines, n - 1);
    char args[900], *out;
    snprintf(args, sizeof args, "%s", copy);
    assert_verifies(args);
    cJSON *last = cJSON_Parse(lines[n - 1]);
    char anchor[200];
    snprintf(anchor, sizeof anchor, "--anchor %d:%s", cJSON_GetObjectItem(last, "seq")->valueint,
             sget(last, "hash"));
    cJSON_Delete(last);
    assert_refused(copy, anchor, "does not reach the anchor seq 6");
    snprintf(args, sizeof args, "%s %s", E.audit_file, anchor);
    assert_verifies(args);

    /* a record forged whole: its own hash recomputed does not help without the chain */
    memcpy(l2, lines, sizeof lines);
    l2[0] = lines[1];
    write_lines(copy, l2, 1);
    assert_refused(copy, NULL, "copy.jsonl:1: seq 2 follows seq 0");
    snprintf(args, sizeof args, "%s --continue", copy);
    ck_assert_int_eq(verify(args, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "continuing from seq 2"));
    free(out);
    free(text);
}
END_TEST

START_TEST(test_hmac_chain_needs_the_key)
{
    char key[700];
    /* the key file is written before the gateway starts: a temporary name in /tmp */
    snprintf(key, sizeof key, "/tmp/ghl-audit-key-%d", (int)getpid());
    FILE *f = fopen(key, "w");
    fputs("0123456789abcdef0123456789abcdef-audit-key\n", f);
    fclose(f);
    char extra[900];
    snprintf(extra, sizeof extra,
             "\"audit\": { \"file\": \"audit/audit.jsonl\", "
             "\"hmac_key_file\": \"%s\" }",
             key);
    env_start(&E, &(struct env_opts){.gateway_json = extra});
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"H\"}", NULL, 0, 200);
    wait_records(E.audit_file, 2);
    char args[1500], *out;
    snprintf(args, sizeof args, "%s --key %s", E.audit_file, key);
    assert_verifies(args);
    /* without the key, or with another, the chain does not verify */
    assert_refused(E.audit_file, NULL, ":1: the hash does not match");
    char wrong[700];
    snprintf(wrong, sizeof wrong, "%s/wrong.key", E.dir);
    f = fopen(wrong, "w");
    fputs("0123456789abcdef0123456789abcdef-audit-kez\n", f);
    fclose(f);
    snprintf(args, sizeof args, "--key %s", wrong);
    assert_refused(E.audit_file, args, "or the key is not the one it was written with");
    (void)out;
    unlink(key);
}
END_TEST

START_TEST(test_restart_and_rotation_keep_the_chain)
{
    env_start(&E, NULL);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"R1\"}", NULL, 0, 200);
    wait_records(E.audit_file, 2);
    ck_assert_int_eq(env_stop_gateway(&E, 10000), 0);
    env_start_gateway(&E);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"R2\"}", NULL, 0, 200);
    wait_records(E.audit_file, 4);
    assert_verifies(E.audit_file);

    /* rotation: the file moved aside, SIGUSR1, the next record starts the new file */
    char old[700], both[1500], *out;
    snprintf(old, sizeof old, "%s.1", E.audit_file);
    ck_assert_int_eq(rename(E.audit_file, old), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);
    char *log = wait_for_text(E.gateway.log, "reopened at seq 4", 2500);
    ck_assert_msg(strstr(log, "reopened at seq 4") != NULL, "%s", log);
    free(log);
    /* a restart before the new file has a record: the chain continues from the state file */
    ck_assert_int_eq(env_stop_gateway(&E, 10000), 0);
    env_start_gateway(&E);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"R3\"}", NULL, 0, 200);
    wait_records(E.audit_file, 2);
    int n;
    cJSON **v = records(E.audit_file, &n);
    ck_assert_int_eq(cJSON_GetObjectItem(v[0], "seq")->valueint, 5);
    records_free(v);
    snprintf(both, sizeof both, "%s %s", old, E.audit_file);
    assert_verifies(both);
    /* the new file alone: its first record does not start a log... */
    assert_refused(E.audit_file, NULL, ":1: seq 5 follows seq 0");
    /* ...but verifies as a continuation */
    snprintf(both, sizeof both, "%s --continue", E.audit_file);
    ck_assert_int_eq(verify(both, &out), 0);
    free(out);
}
END_TEST

START_TEST(test_unwritable_audit_refuses_changes)
{
    /* audit.file is a symbolic link: pointed at /dev/full (every write fails with ENOSPC,
     * even for root) and reopened with SIGUSR1 */
    char real[700], link[700], cmd[2400];
    env_start(&E,
              &(struct env_opts){.gateway_json = "\"audit\": { \"file\": \"audit/link.jsonl\" }"});
    snprintf(real, sizeof real, "%s/audit/real.jsonl", E.dir);
    snprintf(link, sizeof link, "%s/audit/link.jsonl", E.dir);
    /* the gateway created link.jsonl as a file: make it a link to real.jsonl, reopen */
    snprintf(cmd, sizeof cmd, "mv '%s' '%s' && ln -s real.jsonl '%s'", link, real, link);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);
    usleep(300000);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"W1\"}", NULL, 0, 200);
    char *body;
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 200);
    free(body);
    int before = journal_count(&E);

    snprintf(cmd, sizeof cmd, "ln -sfn /dev/full '%s'", link);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);
    usleep(300000);
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, CREATE_BODY, &r), 0);
    ck_assert_int_eq(r.status, 503);
    ck_assert_ptr_nonnull(strstr(r.body, "the audit log cannot be written"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), before); /* nothing went upstream */
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 503);
    ck_assert_msg(strstr(body, "audit") != NULL, "%s", body);
    free(body);
    char *metrics;
    ck_assert_int_eq(admin_get(&E, "/metrics", &metrics), 200);
    ck_assert_ptr_null(strstr(metrics, "ghl_gateway_audit_write_failures_total 0\n"));
    free(metrics);

    /* back to a writable file: ready again after the next write */
    snprintf(cmd, sizeof cmd, "ln -sfn real.jsonl '%s'", link);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);
    usleep(300000);
    send_ok("POST", "/users/", CREATE_BODY, NULL, 0, 201);
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 200);
    free(body);
    wait_records(real, 4);
    assert_verifies(real);
}
END_TEST

struct worker_arg {
    int i;
    int status;
};

static void *update_one(void *p)
{
    struct worker_arg *a = p;
    char body[100];
    snprintf(body, sizeof body, "{\"lastName\":\"C%d\"}", a->i);
    struct response r;
    if (send_req(&E, "PUT", "/users/" SEED_USER, NULL, body, &r) == 0)
        a->status = r.status;
    response_free(&r);
    return NULL;
}

static unsigned long long metric(const char *text, const char *name)
{
    const char *at = text;
    size_t n = strlen(name);
    while ((at = strstr(at, name)) != NULL) {
        if ((at == text || at[-1] == '\n') && at[n] == ' ')
            return strtoull(at + n + 1, NULL, 10);
        at += n;
    }
    return 0;
}

START_TEST(test_group_commit_under_concurrency)
{
    env_start(&E, &(struct env_opts){.workers = 2});
    enum { MAX_N = 200 };
    const int N = under_valgrind() ? 40 : MAX_N; /* memcheck serves tens of times slower */
    static struct worker_arg args[MAX_N];
    pthread_t t[MAX_N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct worker_arg){.i = i};
        ck_assert_int_eq(pthread_create(&t[i], NULL, update_one, &args[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++)
        ck_assert_msg(args[i].status == 200, "update %d: %d", i, args[i].status);
    wait_records(E.audit_file, 2 * N);
    int n;
    cJSON **v = records(E.audit_file, &n);
    ck_assert_int_eq(n, 2 * N);
    int intents = 0, outcomes = 0;
    for (int i = 0; i < n; i++) {
        const char *ev = sget(v[i], "event");
        intents += strcmp(ev, "intent") == 0;
        outcomes += strcmp(ev, "outcome") == 0;
    }
    records_free(v);
    ck_assert_int_eq(intents, N);
    ck_assert_int_eq(outcomes, N);
    assert_verifies(E.audit_file);
    char *m;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    unsigned long long fsyncs = metric(m, "ghl_gateway_audit_fsyncs_total");
    unsigned long long last = metric(m, "ghl_gateway_audit_last_seq");
    free(m);
    ck_assert_int_eq((int)last, 2 * N);
    ck_assert_msg(fsyncs > 0 && fsyncs < (unsigned long long)(2 * N), "%llu fsyncs for %d records",
                  fsyncs, 2 * N);
    fprintf(stderr, "group commit: %d records, %llu fsyncs\n", 2 * N, fsyncs);
}
END_TEST

START_TEST(test_reads_audited_when_asked)
{
    env_start(&E, &(struct env_opts){.gateway_json = "\"audit\": { \"include_reads\": true }"});
    char rid[80];
    send_ok("GET", "/users/" SEED_USER, NULL, rid, sizeof rid, 200);
    wait_records(E.audit_file, 1);
    int n;
    cJSON **v = records(E.audit_file, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(sget(v[0], "event"), "read");
    ck_assert_str_eq(sget(v[0], "request_id"), rid);
    ck_assert_int_eq(cJSON_GetObjectItem(v[0], "status")->valueint, 200);
    records_free(v);
}
END_TEST

/* A torn last line is repaired (check says run will, audit-repair does it by hand); a last
 * line that is whole but wrong refuses run, check and audit-repair alike, naming the line. */
START_TEST(test_torn_tail_is_repaired_other_damage_refuses_start)
{
    env_start(&E, NULL);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"T\"}", NULL, 0, 200);
    wait_records(E.audit_file, 2);
    ck_assert_int_eq(env_stop_gateway(&E, 10000), 0);
    char cmd[1400], repair[1400], *out;
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), E.config);
    snprintf(repair, sizeof repair, "%s audit-repair %s", bin_path("ghl-gateway"), E.audit_file);
    ck_assert_int_eq(run_cmd(cmd, &out), 0);
    ck_assert_msg(strstr(out, "audit chain continues at seq 3") != NULL, "%s", out);
    ck_assert_ptr_null(strstr(out, "audit repair at start"));
    free(out);
    FILE *f = fopen(E.audit_file, "a");
    fputs("{\"v\":1,\"seq\":3", f); /* a torn write */
    fclose(f);
    ck_assert_int_eq(run_cmd(cmd, &out), 0);
    ck_assert_msg(strstr(out, "audit repair at start: ") && strstr(out, "ends in a torn line") &&
                      strstr(out, "audit chain continues at seq 3"),
                  "%s", out);
    free(out);
    ck_assert_int_eq(run_cmd(repair, &out), 0);
    ck_assert_msg(strstr(out, "the torn last line (14 bytes) moved to ") &&
                      strstr(out, "the chain ends at seq 2"),
                  "%s", out);
    free(out);
    ck_assert_int_eq(run_cmd(repair, &out), 0);
    ck_assert_msg(strstr(out, "nothing to repair (2 records verified)"), "%s", out);
    free(out);
    /* a complete line that does not verify: refused, named, left as it is */
    char *text = slurp(E.audit_file);
    char *name = NULL; /* in the last record (the outcome) */
    for (char *at = strstr(text, "\"T\""); at; at = strstr(at + 1, "\"T\""))
        name = at;
    ck_assert_ptr_nonnull(name);
    name[1] = 'U';
    f = fopen(E.audit_file, "w");
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "audit.jsonl:2: its last record does not verify") != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "timeout 20 %s run -c %s", bin_path("ghl-gateway"), E.config);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "audit.jsonl:2: its last record does not verify") != NULL, "%s", out);
    free(out);
    ck_assert_int_eq(run_cmd(repair, &out), 1);
    ck_assert_msg(strstr(out, "audit.jsonl:2: the hash does not match the record"), "%s", out);
    free(out);
    char *after = slurp(E.audit_file);
    ck_assert_str_eq(after, text);
    free(after);
    free(text);
}
END_TEST

/* ---- crashes: the chain never forks, seq never goes back (SPEC §9) ---- */

/* The seq of the first and last whole lines of path (a torn last line is left out); returns
 * how many whole lines there are. */
static int whole_seqs(const char *path, long *first, long *last)
{
    char *text = slurp(path);
    int n = 0;
    *first = *last = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        ck_assert_msg(j != NULL, "not JSON: %s", line);
        long seq = (long)cJSON_GetObjectItem(j, "seq")->valuedouble;
        cJSON_Delete(j);
        if (n++ == 0)
            *first = seq;
        *last = seq;
    }
    free(text);
    return n;
}

static void append_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* kill -9: no drain, no sync, no chain state saved. */
static void crash(void)
{
    ck_assert_int_eq(kill(E.gateway.pid, SIGKILL), 0);
    waitpid(E.gateway.pid, NULL, 0);
    E.gateway.pid = 0;
}

/* kill -9 while n updates are in flight. */
static void crash_mid_traffic(int n)
{
    enum { MAX_N = 32 };
    static struct worker_arg args[MAX_N];
    pthread_t t[MAX_N];
    for (int i = 0; i < n && i < MAX_N; i++) {
        args[i] = (struct worker_arg){.i = i};
        ck_assert_int_eq(pthread_create(&t[i], NULL, update_one, &args[i]), 0);
    }
    usleep(under_valgrind() ? 300000 : 20000);
    crash();
    for (int i = 0; i < n && i < MAX_N; i++)
        pthread_join(t[i], NULL);
}

/* The gateway's `run` on the env's config, bounded (it must refuse, not serve). */
static int run_refused(char **out)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "timeout 20 %s run -c %s", bin_path("ghl-gateway"), E.config);
    return run_cmd(cmd, out);
}

static unsigned long long metric_now(const char *name)
{
    char *m;
    ck_assert_int_eq(admin_get(&E, "/metrics", &m), 200);
    unsigned long long v = metric(m, name);
    free(m);
    return v;
}

START_TEST(test_crash_torn_tail_and_move_aside_never_fork_the_chain)
{
    env_start(&E, NULL);
    char old[700], moved[700], torn[700], msg[200], *out;
    snprintf(old, sizeof old, "%s.1", E.audit_file);
    snprintf(moved, sizeof moved, "%s.moved", E.audit_file);
    snprintf(torn, sizeof torn, "%s.torn", E.audit_file);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"K0\"}", NULL, 0, 200);
    crash_mid_traffic(16);
    long first, last;
    int n = whole_seqs(E.audit_file, &first, &last);
    ck_assert_msg(n >= 2 && first == 1 && last == n, "%d lines, seq %ld..%ld", n, first, last);

    /* a torn write, as a crash during one leaves it */
    char half[80];
    snprintf(half, sizeof half, "{\"v\":1,\"seq\":%ld,\"ts\":\"2026-12-", last + 1);
    append_text(E.audit_file, half);
    /* run repairs it by itself at start: no human needed after an OOM kill */
    env_start_gateway(&E);
    snprintf(msg, sizeof msg, "the chain continues from seq %ld", last);
    char *log = wait_for_text(E.gateway.log, msg, 2500);
    ck_assert_msg(strstr(log, "warning: audit: ") && strstr(log, "ended in a torn line") &&
                      strstr(log, torn) && strstr(log, msg),
                  "%s", log);
    free(log);
    char *cut = slurp(torn); /* the kill may have torn a write of its own before these bytes */
    size_t cl = strlen(cut), hl = strlen(half);
    ck_assert_msg(cl >= hl && strcmp(cut + cl - hl, half) == 0, "%s", cut);
    free(cut);
    ck_assert_int_eq(metric_now("ghl_gateway_audit_repairs_total"), 1);
    ck_assert_int_eq(metric_now("ghl_gateway_audit_last_seq"), last);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"K1\"}", NULL, 0, 200);
    wait_records(E.audit_file, (int)last + 2);
    assert_verifies(E.audit_file); /* from seq 1: the torn bytes are not in the chain */
    long top;
    ck_assert_int_eq(whole_seqs(E.audit_file, &first, &top), last + 2);

    /* rotation, records in the new file, then a crash */
    ck_assert_int_eq(rename(E.audit_file, old), 0);
    ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);
    snprintf(msg, sizeof msg, "reopened at seq %ld", top);
    log = wait_for_text(E.gateway.log, msg, 2500);
    ck_assert_msg(strstr(log, msg), "%s", log);
    free(log);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"K2\"}", NULL, 0, 200);
    wait_records(E.audit_file, 1);
    crash();
    ck_assert_int_ge(whole_seqs(E.audit_file, &first, &last), 1);
    ck_assert_int_eq(first, top + 1);
    top = last;

    /* moving the file aside (what the old refusal advised): run refuses, names the seq the
     * state knows and how to recover, and creates nothing */
    ck_assert_int_eq(rename(E.audit_file, moved), 0);
    ck_assert_int_eq(run_refused(&out), 1);
    ck_assert_msg(strstr(out, "is missing, but the chain state") &&
                      strstr(out, "Restore the file that holds the records after seq") &&
                      strstr(out, "Moving a file aside is never the recovery"),
                  "%s", out);
    free(out);
    ck_assert_int_eq(access(E.audit_file, F_OK), -1);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), E.config);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "is missing, but the chain state"), "%s", out);
    free(out);

    /* the recovery: the file put back; the chain continues after its last record */
    ck_assert_int_eq(rename(moved, E.audit_file), 0);
    env_start_gateway(&E);
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"K3\"}", NULL, 0, 200);
    ck_assert_int_eq(env_stop_gateway(&E, under_valgrind() ? 60000 : 10000), 0);
    ck_assert_int_eq(whole_seqs(E.audit_file, &first, &last), last - first + 1);
    ck_assert_int_eq(last, top + 2);
    char both[1500];
    snprintf(both, sizeof both, "%s %s", old, E.audit_file);
    assert_verifies(both); /* one chain across the files, from seq 1, no seq twice */
}
END_TEST

START_TEST(test_seq_never_goes_back_across_crash_rotation_and_restart)
{
    env_start(&E, NULL);
    char rotated[4][700], msg[100];
    long first, last, top = 0;
    int wait = under_valgrind() ? 60000 : 10000;
    /* each step: one change, whose intent must be the record after every one before */
#define STEP(tag)                                                                                  \
    do {                                                                                           \
        send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"" tag "\"}", NULL, 0, 200);           \
        char *l_ = wait_for_text(E.audit_file, "\"" tag "\"},\"before\"", 2500);                   \
        free(l_);                                                                                  \
        ck_assert_int_ge(whole_seqs(E.audit_file, &first, &last), 1);                              \
        ck_assert_msg(last >= top + 1, tag ": the file ends at seq %ld, after %ld", last, top);    \
        top = last;                                                                                \
    } while (0)
#define ROTATE(i)                                                                                  \
    do {                                                                                           \
        snprintf(rotated[i], sizeof rotated[i], "%s.%d", E.audit_file, (i) + 1);                   \
        ck_assert_int_eq(rename(E.audit_file, rotated[i]), 0);                                     \
        ck_assert_int_eq(kill(E.gateway.pid, SIGUSR1), 0);                                         \
        snprintf(msg, sizeof msg, "reopened at seq %ld", top);                                     \
        char *l_ = wait_for_text(E.gateway.log, msg, 2500);                                        \
        ck_assert_msg(strstr(l_, msg), "%s", l_);                                                  \
        free(l_);                                                                                  \
    } while (0)
    STEP("S1");
    crash(); /* a crash with records after the state saved at start */
    env_start_gateway(&E);
    STEP("S2");
    ck_assert_int_eq(first, 1);
    ROTATE(0);
    crash(); /* a crash right after a rotation: the new file is empty, the state clean */
    env_start_gateway(&E);
    long before = top;
    STEP("S3");
    ck_assert_int_eq(first, before + 1);
    ROTATE(1);
    before = top;
    STEP("S4");
    ck_assert_int_eq(first, before + 1);
    crash(); /* a crash after the new file's first records */
    env_start_gateway(&E);
    STEP("S5");
    ck_assert_int_eq(env_stop_gateway(&E, wait), 0);
    /* a rotation while stopped (a clean stop: the state is the last record written) */
    snprintf(rotated[2], sizeof rotated[2], "%s.3", E.audit_file);
    ck_assert_int_eq(rename(E.audit_file, rotated[2]), 0);
    env_start_gateway(&E);
    before = top;
    STEP("S6");
    ck_assert_int_eq(first, before + 1);
    ck_assert_int_eq(env_stop_gateway(&E, wait), 0);
#undef STEP
#undef ROTATE
    char all[4000];
    snprintf(all, sizeof all, "%s %s %s %s", rotated[0], rotated[1], rotated[2], E.audit_file);
    assert_verifies(all);
}
END_TEST

/* ---- a disk that is full, failing or slow ---- */

static char g_mnt[128];

static void unmount_fs(void)
{
    if (g_mnt[0]) {
        umount2(g_mnt, MNT_DETACH);
        rmdir(g_mnt);
        g_mnt[0] = '\0';
    }
}

START_TEST(test_full_file_system_refuses_changes_and_forwards_nothing)
{
    /* a real one: a 256 KB tmpfs holds the audit file (we run as root in the test container) */
    snprintf(g_mnt, sizeof g_mnt, "/tmp/ghl-auditfs-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_mnt));
    atexit(unmount_fs);
    if (mount("tmpfs", g_mnt, "tmpfs", 0, "size=256k") != 0) {
        rmdir(g_mnt);
        g_mnt[0] = '\0';
        fprintf(stderr,
                "note: cannot mount a tmpfs (%s); test_failing_sync covers a failing disk "
                "through the sync shim\n",
                strerror(errno));
        return;
    }
    char audit[300], filler[300], json[600];
    snprintf(audit, sizeof audit, "%s/audit.jsonl", g_mnt);
    snprintf(filler, sizeof filler, "%s/filler", g_mnt);
    snprintf(json, sizeof json, "\"audit\": { \"file\": \"%s\" }", audit);
    env_start(&E, &(struct env_opts){.gateway_json = json});
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"F1\"}", NULL, 0, 200);
    wait_records(audit, 2);
    /* the file system fills up */
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    char block[4096];
    memset(block, 'x', sizeof block);
    while (write(fd, block, sizeof block) > 0)
        ;
    while (write(fd, block, 1) > 0) /* to the last byte */
        ;
    ck_assert_int_eq(errno, ENOSPC);
    close(fd);
    int before = journal_count(&E);
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, CREATE_BODY, &r), 0);
    ck_assert_int_eq(r.status, 503);
    ck_assert_msg(strstr(r.body, "the audit log cannot be written; the change was not sent"), "%s",
                  r.body);
    char rid[80];
    snprintf(rid, sizeof rid, "%s", response_header(&r, "X-Request-Id"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), before); /* nothing went upstream */
    char *body;
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 503);
    ck_assert_msg(strstr(body, "No space left on device"), "%s", body);
    free(body);
    ck_assert_uint_gt(metric_now("ghl_gateway_audit_write_failures_total"), 0);
    /* space again: the next change is written and sent */
    ck_assert_int_eq(unlink(filler), 0);
    send_ok("POST", "/users/", CREATE_BODY, NULL, 0, 201);
    ck_assert_int_eq(journal_count(&E), before + 1);
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 200);
    free(body);
    ck_assert_int_eq(env_stop_gateway(&E, under_valgrind() ? 60000 : 10000), 0);
    assert_verifies(audit);
    char *text = slurp(audit);
    ck_assert_ptr_null(strstr(text, rid)); /* the refused change left no record */
    free(text);
    int n;
    cJSON **v = records(audit, &n);
    ck_assert_int_eq(n, 4);
    records_free(v);
}
END_TEST

/* The sync shim (tests/integration/sync_shim.c) preloaded into the gateway: its control file
 * (ctl) says how the disk answers fsync and fdatasync. */
static char g_ctl[128];

static void set_disk(const char *how)
{
    FILE *f = fopen(g_ctl, "w");
    ck_assert_ptr_nonnull(f);
    fputs(how, f);
    ck_assert_int_eq(fclose(f), 0);
}

static void remove_ctl(void)
{
    if (g_ctl[0])
        unlink(g_ctl);
}

/* env_start with the shim (the disk healthy) and the given gateway_json. */
static void start_with_shim(const char *gateway_json)
{
    snprintf(g_ctl, sizeof g_ctl, "/tmp/ghl-sync-ctl-%d", (int)getpid());
    atexit(remove_ctl);
    set_disk("");
    char env[1500];
    const char *asan = getenv("ASAN_OPTIONS");
    /* under AddressSanitizer its runtime must come first; a preload before it is fine here */
    snprintf(env, sizeof env,
             "LD_PRELOAD=%s GW_SYNC_SHIM=%s ASAN_OPTIONS=%s%sverify_asan_link_order=0",
             GW_SYNC_SHIM_PATH, g_ctl, asan ? asan : "", asan && *asan ? ":" : "");
    env_start(&E, &(struct env_opts){.gateway_json = gateway_json, .gateway_env = env});
}

/* Waits until /metrics says the records up to seq are on disk. */
static void wait_durable(unsigned long long seq)
{
    for (int i = 0; i < 200; i++) {
        if (metric_now("ghl_gateway_audit_last_seq") >= seq)
            return;
        usleep(25000);
    }
    ck_abort_msg("ghl_gateway_audit_last_seq did not reach %llu", seq);
}

/* EIO, and EROFS (a file system remounted read-only after an error), which fsync errors the
 * writer once ignored along with EINVAL */
static const int sync_errnos[] = {EIO, EROFS};

START_TEST(test_failing_sync_refuses_changes_and_keeps_the_chain)
{
    start_with_shim("\"audit\": { \"include_reads\": true }");
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"E1\"}", NULL, 0, 200);
    wait_durable(2);
    char how[32];
    snprintf(how, sizeof how, "fail %d", sync_errnos[_i]); /* the disk fails under the gateway */
    set_disk(how);
    int before = journal_count(&E);
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, CREATE_BODY, &r), 0);
    ck_assert_int_eq(r.status, 503);
    ck_assert_msg(strstr(r.body, "the audit log cannot be written; the change was not sent"), "%s",
                  r.body);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), before);
    char *body;
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 503);
    ck_assert_msg(strstr(body, strerror(sync_errnos[_i])), "%s", body);
    free(body);
    ck_assert_int_eq(metric_now("ghl_gateway_audit_last_seq"), 2);
    /* a read's record nobody waits for, while the disk fails: kept and written later */
    char rid[80];
    send_ok("GET", "/users/" SEED_USER, NULL, rid, sizeof rid, 200);
    usleep(300000);
    ck_assert_int_eq(metric_now("ghl_gateway_audit_last_seq"), 2);
    set_disk("");
    send_ok("POST", "/users/", CREATE_BODY, NULL, 0, 201);
    ck_assert_int_eq(journal_count(&E), before + 2); /* the read, the create */
    ck_assert_int_eq(env_stop_gateway(&E, under_valgrind() ? 60000 : 10000), 0);
    assert_verifies(E.audit_file);
    int n;
    cJSON **v = records(E.audit_file, &n);
    ck_assert_int_eq(n, 5); /* the update and the create (intent and outcome each), the read */
    cJSON *mine[2];
    ck_assert_int_eq(of_request(v, n, rid, mine, 2), 1);
    ck_assert_str_eq(sget(mine[0], "event"), "read");
    records_free(v);
}
END_TEST

START_TEST(test_sync_slower_than_sync_timeout_answers_503_and_forwards_nothing)
{
    start_with_shim("\"audit\": { \"sync_timeout_ms\": 300 }");
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"D1\"}", NULL, 0, 200);
    wait_durable(2);
    set_disk("delay 2000"); /* a disk that takes 2 s per sync */
    int before = journal_count(&E);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, CREATE_BODY, &r), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    ck_assert_int_eq(r.status, 503);
    ck_assert_msg(strstr(r.body, "the audit log did not confirm the intent in time; the change "
                                 "was not sent"),
                  "%s", r.body);
    ck_assert_msg(ms >= 250 && ms < 1800, "answered after %ld ms", ms);
    char rid[80];
    snprintf(rid, sizeof rid, "%s", response_header(&r, "X-Request-Id"));
    response_free(&r);
    ck_assert_int_eq(metric_now("ghl_gateway_audit_sync_timeouts_total"), 1);
    char *body;
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 503); /* a hung disk is not ready */
    ck_assert_msg(strstr(body, "audit.sync_timeout_ms"), "%s", body);
    free(body);
    /* the intent is written late: an outcome follows it saying the change was not sent */
    set_disk("");
    char *log = wait_for_text(E.audit_file, "\"not_sent\"", 5000);
    free(log);
    ck_assert_int_eq(admin_get(&E, "/readyz", &body), 200); /* written again: ready */
    free(body);
    ck_assert_int_eq(journal_count(&E), before); /* nothing went upstream, then or later */
    ck_assert_int_eq(env_stop_gateway(&E, 10000), 0);
    assert_verifies(E.audit_file);
    int n;
    cJSON **v = records(E.audit_file, &n);
    cJSON *mine[4];
    ck_assert_int_eq(of_request(v, n, rid, mine, 4), 2);
    ck_assert_str_eq(sget(mine[0], "event"), "intent");
    ck_assert_str_eq(sget(mine[1], "event"), "outcome");
    ck_assert_int_eq(cJSON_GetObjectItem(mine[1], "seq")->valueint,
                     cJSON_GetObjectItem(mine[0], "seq")->valueint + 1);
    ck_assert_int_eq(cJSON_GetObjectItem(mine[1], "status")->valueint, 0);
    ck_assert_str_eq(sget(mine[1], "upstream"), "not_sent");
    records_free(v);
}
END_TEST

/* ---- what an outcome says about the upstream ---- */

START_TEST(test_outcome_of_a_change_never_sent_says_not_sent)
{
    env_start(&E, &(struct env_opts){.no_sandbox = true});
    char rid[80];
    send_ok("POST", "/users/", CREATE_BODY, rid, sizeof rid, 502); /* nobody listens upstream */
    wait_records(E.audit_file, 2);
    int n;
    cJSON **v = records(E.audit_file, &n);
    cJSON *mine[4];
    ck_assert_int_eq(of_request(v, n, rid, mine, 4), 2);
    ck_assert_str_eq(sget(mine[1], "event"), "outcome");
    ck_assert_int_eq(cJSON_GetObjectItem(mine[1], "status")->valueint, 0);
    ck_assert_str_eq(sget(mine[1], "upstream"), "not_sent");
    records_free(v);
}
END_TEST

START_TEST(test_outcome_of_a_change_sent_without_answer_says_unknown)
{
    env_start(&E, &(struct env_opts){.sandbox_args = "--delay-ms 1500",
                                     .upstream_json = "\"timeout_ms\": 300"});
    char rid[80];
    int before = journal_count(&E);
    send_ok("POST", "/users/", CREATE_BODY, rid, sizeof rid, 504);
    ck_assert_int_eq(journal_count(&E), before + 1); /* it reached the upstream: it may be done */
    wait_records(E.audit_file, 2);
    int n;
    cJSON **v = records(E.audit_file, &n);
    cJSON *mine[4];
    ck_assert_int_eq(of_request(v, n, rid, mine, 4), 2);
    ck_assert_int_eq(cJSON_GetObjectItem(mine[1], "status")->valueint, 0);
    ck_assert_str_eq(sget(mine[1], "upstream"), "unknown");
    records_free(v);
}
END_TEST

/* audit.stdout for containers: the same lines on stdout (here: the gateway's log) */
START_TEST(test_stdout_sink)
{
    env_start(
        &E, &(struct env_opts){.gateway_json = "\"audit\": { \"file\": null, \"stdout\": true }"});
    char rid[80];
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"S\"}", rid, sizeof rid, 200);
    char *log = wait_for_text(E.gateway.log, "\"event\":\"outcome\"", 2500);
    ck_assert_msg(strstr(log, "{\"v\":1,\"seq\":1,") != NULL, "%s", log);
    ck_assert_msg(strstr(log, "\"event\":\"outcome\"") != NULL, "%s", log);
    ck_assert_ptr_nonnull(strstr(log, rid));
    free(log);
    ck_assert_int_eq(access(E.audit_file, F_OK), -1); /* no file sink */
}
END_TEST

/* SPEC §9 "many replicas": two gateways (replicas gw-a and gw-b) in front of one sandbox,
 * each with its own audit file in one folder; audit-verify on the folder's files shows one
 * chain per replica, and a changed line in one file fails the run naming it. A SIGHUP that
 * changes replica_id does not change the records' replica (a chain belongs to one replica),
 * and check refuses the file to the new id. */
START_TEST(test_two_replicas_verify_together)
{
    env_start(&E, &(struct env_opts){.gateway_json = "\"audit\": { \"file\": \"audit/gw-a.jsonl\", "
                                                     "\"replica_id\": \"gw-a\" }"});
    char b_json[900], file_a[700], file_b[700];
    snprintf(file_a, sizeof file_a, "%s/audit/gw-a.jsonl", E.dir);
    snprintf(file_b, sizeof file_b, "%s/audit/gw-b.jsonl", E.dir);
    snprintf(b_json, sizeof b_json, "\"audit\": { \"file\": \"%s\", \"replica_id\": \"gw-b\" }",
             file_b);
    env_start(&E2, &(struct env_opts){.no_sandbox = true,
                                      .upstream_port = E.sandbox.port,
                                      .gateway_json = b_json});
    char rid_a[80], rid_b[80];
    send_ok("PUT", "/users/" SEED_USER, "{\"lastName\":\"A\"}", rid_a, sizeof rid_a, 200);
    struct response r;
    ck_assert_int_eq(send_req(&E2, "PUT", "/users/" SEED_USER, NULL, "{\"lastName\":\"B\"}", &r),
                     0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    snprintf(rid_b, sizeof rid_b, "%s", response_header(&r, "X-Request-Id"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 4); /* each: the GET of the target, then the PUT */
    wait_records(file_a, 2);
    wait_records(file_b, 2);
    /* each record names its replica, right after request_id (and its trace_id after that) */
    const char *files[] = {file_a, file_b}, *ids[] = {"gw-a", "gw-b"}, *rids[] = {rid_a, rid_b};
    for (int k = 0; k < 2; k++) {
        char want[200], *text = slurp(files[k]);
        snprintf(want, sizeof want, "\"request_id\":\"%s\",\"replica\":\"%s\",\"trace_id\":\"",
                 rids[k], ids[k]);
        const char *at = text;
        for (int n = 0; n < 2; n++) { /* intent and outcome */
            at = strstr(at, want);
            ck_assert_msg(at != NULL, "record %d of %s: %s", n + 1, ids[k], text);
            at += strlen(want);
            ck_assert_msg(strspn(at, "0123456789abcdef") == 32 &&
                              strncmp(at + 32, "\",\"event\":", 10) == 0,
                          "%s", text);
        }
        free(text);
    }
    char args[1500], *out;
    snprintf(args, sizeof args, "%s/audit/*.jsonl", E.dir);
    ck_assert_int_eq(verify(args, &out), 0);
    char *a_line = strstr(out, "replica gw-a: seq 1 to 2, head ");
    char *b_line = strstr(out, "replica gw-b: seq 1 to 2, head ");
    ck_assert_msg(a_line && b_line && a_line < b_line && strstr(out, "\n4 records verified\n"),
                  "%s", out);
    free(out);

    /* a SIGHUP that renames the replica: said in the log, the records keep gw-b */
    char *cfg = slurp(E2.config), *at = strstr(cfg, "\"gw-b\"");
    ck_assert_ptr_nonnull(at);
    memcpy(at, "\"gw-c\"", 6);
    FILE *f = fopen(E2.config, "w");
    fputs(cfg, f);
    fclose(f);
    free(cfg);
    kill(E2.gateway.pid, SIGHUP);
    char *log = wait_for_text(E2.gateway.log, "SIGHUP: reloaded", 5000);
    ck_assert_msg(strstr(log, "audit.replica_id is gw-c in the file, but the audit records keep "
                              "replica gw-b until restart"),
                  "%s", log);
    free(log);
    ck_assert_int_eq(send_req(&E2, "PUT", "/users/" SEED_USER, NULL, "{\"lastName\":\"C\"}", &r),
                     0);
    ck_assert_int_eq(r.status, 200);
    response_free(&r);
    wait_records(file_b, 4);
    int n;
    cJSON **v = records(file_b, &n);
    ck_assert_str_eq(sget(v[3], "replica"), "gw-b");
    records_free(v);
    /* a restart would refuse: the file is gw-b's chain */
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), E2.config);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "holds the chain of replica gw-b, but audit.replica_id is gw-c"),
                  "%s", out);
    free(out);

    /* one changed line in one replica's file: the run fails naming it; the other chain is
     * still shown */
    ck_assert_int_eq(env_stop_gateway(&E2, 10000), 0);
    snprintf(cmd, sizeof cmd, "mkdir %s/copy && cp %s %s %s/copy/", E.dir, file_a, file_b, E.dir);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
    char copy_b[800];
    snprintf(copy_b, sizeof copy_b, "%s/copy/gw-b.jsonl", E.dir);
    char *text = slurp(copy_b), *second = strchr(text, '\n') + 1, *b = strstr(second, "\"B\"");
    ck_assert_ptr_nonnull(b);
    b[1] = 'X';
    f = fopen(copy_b, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    snprintf(args, sizeof args, "%s/copy/*.jsonl", E.dir);
    ck_assert_int_eq(verify(args, &out), 1);
    char want[900];
    snprintf(want, sizeof want, "%s:2: the hash does not match the record", copy_b);
    ck_assert_msg(strstr(out, want) && strstr(out, "replica gw-a: seq 1 to 2, head ") &&
                      !strstr(out, "replica gw-b:") && !strstr(out, "records verified"),
                  "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("audit");
    TCase *t = tcase_create("audit");
    tcase_add_checked_fixture(t, NULL, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_changes_write_intent_then_outcome_and_nothing_secret);
    tcase_add_test(t, test_denied_record_carries_every_policy_reason);
    tcase_add_test(t, test_verify_detects_every_kind_of_tampering);
    tcase_add_test(t, test_hmac_chain_needs_the_key);
    tcase_add_test(t, test_restart_and_rotation_keep_the_chain);
    tcase_add_test(t, test_unwritable_audit_refuses_changes);
    tcase_add_test(t, test_group_commit_under_concurrency);
    tcase_add_test(t, test_reads_audited_when_asked);
    tcase_add_test(t, test_stdout_sink);
    tcase_add_test(t, test_two_replicas_verify_together);
    tcase_add_test(t, test_torn_tail_is_repaired_other_damage_refuses_start);
    tcase_add_test(t, test_crash_torn_tail_and_move_aside_never_fork_the_chain);
    tcase_add_test(t, test_seq_never_goes_back_across_crash_rotation_and_restart);
    tcase_add_test(t, test_full_file_system_refuses_changes_and_forwards_nothing);
    tcase_add_loop_test(t, test_failing_sync_refuses_changes_and_keeps_the_chain, 0,
                        (int)(sizeof sync_errnos / sizeof sync_errnos[0]));
    tcase_add_test(t, test_outcome_of_a_change_never_sent_says_not_sent);
    tcase_add_test(t, test_outcome_of_a_change_sent_without_answer_says_unknown);
    /* a window of a few hundred milliseconds against a delayed sync: not under memcheck */
    if (!under_valgrind())
        tcase_add_test(t, test_sync_slower_than_sync_timeout_answers_503_and_forwards_nothing);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
