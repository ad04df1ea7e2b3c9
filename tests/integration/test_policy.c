/* Integration: the policy engine on the live path (SPEC §6), proven by what reached the
 * upstream (the sandbox's journal), the answers, and `ghl-gateway explain` agreeing with the
 * live gateway on every case; and SIGHUP reloading the policies. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define LOC2 "Loc2BBBBBBBBBBBBBBBB"
#define U_LOC2 "UserLocTwo0000000002"
#define U_BOTH "UserBoth000000000003"
#define U_LOC1 "UserLocOne0000000004"
#define U_AGENCY "UserAgency0000000005"
#define U_ADMIN "UserAdmin00000000006"  /* LOC1, role admin */
#define U_SCOPE "UserScope00000000007"  /* LOC1, role user, holds payments.write */
#define U_PAYS "UserPays000000000008"   /* LOC1, role user, paymentsEnabled true (sent) */
#define U_PAYDEF "UserPayDef0000000009" /* LOC1, role user, paymentsEnabled left out */

static struct env E;
static char bot[4096];    /* svc-bot: the restricted policy "bot" */
static char nobody[4096]; /* svc-nobody: no policy names it */

#define BOT_CLAIMS                                                                                 \
    "{\"iss\":\"" ISSUER_RS "\",\"sub\":\"svc-bot\",\"aud\":\"ghl-gateway\","                      \
    "\"scope\":\"users.readonly users.write\"}"

static const char bot_policy[] =
    "{ \"name\": \"bot\",\n"
    "  \"subjects\": [ { \"iss\": \"" ISSUER_RS "\", \"sub\": \"svc-bot\" } ],\n"
    "  \"operations\": [\"create-user\", \"update-user\", \"delete-user\", \"get-user\",\n"
    "                 \"search-users\", \"filter-users-by-email\"],\n"
    "  \"companies\": [\"" COMPANY "\"],\n"
    "  \"locations\": [\"" LOC1 "\"],\n"
    "  \"grant\": { \"types\": [\"account\"], \"roles\": [\"user\"],\n"
    "             \"scopes\": [\"contacts.*\"], \"scopes_assigned_to_only\": [],\n"
    "             \"permissions\": { \"paymentsEnabled\": false }, \"max_locations\": 1 },\n"
    "  \"reads\": { \"redact\": [\"phone\", \"lcPhone\"] } }\n";

/* svc-test (the env's default token) may do everything: it fetches targets for explain. */
static const char admin_policy[] =
    "{ \"name\": \"admin\",\n"
    "  \"subjects\": [ { \"sub\": [\"svc-test\", \"svc-reader\"] } ],\n"
    "  \"operations\": [\"search-users\", \"filter-users-by-email\", \"get-user\", "
    "\"update-user\",\n"
    "                 \"delete-user\", \"get-user-by-location\", \"create-user\"],\n"
    "  \"companies\": \"*\", \"locations\": \"*\",\n"
    "  \"grant\": { \"types\": [\"account\", \"agency\"], \"roles\": [\"admin\", \"user\"],\n"
    "             \"scopes\": [\"*\"], \"scopes_assigned_to_only\": [\"*\"] } }\n";

/* A seed user of LOC1 with a role, scopes and permissions (JSON texts). */
#define SEED_IN_LOC1(id, role, scopes, perms)                                                      \
    "{\"id\":\"" id "\",\"companyId\":\"" COMPANY "\",\"firstName\":\"Tess\",\"lastName\":"        \
    "\"Target\",\"email\":\"" id "@example.com\",\"roles\":{\"type\":\"account\",\"role\":\"" role \
    "\",\"locationIds\":[\"" LOC1 "\"]},\"scopes\":" scopes ",\"permissions\":" perms "}"

#define SEED_MORE                                                                                                                                                                                                       \
    "{\"id\":\"" U_LOC2 "\",\"companyId\":\"" COMPANY "\",\"firstName\":\"Bea\",\"lastName\":"                                                                                                                          \
    "\"Two\",\"email\":\"bea@example.com\",\"phone\":\"+15550002\",\"roles\":{\"type\":"                                                                                                                                \
    "\"account\",\"role\":\"user\",\"locationIds\":[\"" LOC2 "\"]}},"                                                                                                                                                   \
    "{\"id\":\"" U_BOTH "\",\"companyId\":\"" COMPANY "\",\"firstName\":\"Cy\",\"lastName\":"                                                                                                                           \
    "\"Both\",\"email\":\"cy@example.com\",\"phone\":\"+15550003\",\"roles\":{\"type\":"                                                                                                                                \
    "\"account\",\"role\":\"user\",\"locationIds\":[\"" LOC1 "\",\"" LOC2 "\"]}},"                                                                                                                                      \
    "{\"id\":\"" U_LOC1 "\",\"companyId\":\"" COMPANY "\",\"firstName\":\"Di\",\"lastName\":"                                                                                                                           \
    "\"One\",\"email\":\"di@example.com\",\"phone\":\"+15550004\",\"roles\":{\"type\":"                                                                                                                                 \
    "\"account\",\"role\":\"user\",\"locationIds\":[\"" LOC1                                                                                                                                                            \
    "\"]},\"scopes\":[\"contacts.write\"],"                                                                                                                                                                             \
    "\"permissions\":{\"paymentsEnabled\":false}}," SEED_IN_LOC1(U_ADMIN, "admin", "[]", "{\"paymentsEnabled\":false}") "," SEED_IN_LOC1(                                                                               \
        U_SCOPE, "user", "[\"contacts.write\",\"payments.write\"]",                                                                                                                                                     \
        "{\"paymentsEnabled\":false}") "," SEED_IN_LOC1(U_PAYS, "user", "[]",                                                                                                                                           \
                                                        "{\"paymentsEnabled\":true}") "," SEED_IN_LOC1(U_PAYDEF,                                                                                                        \
                                                                                                       "user",                                                                                                          \
                                                                                                       "[]",                                                                                                            \
                                                                                                       "{\"paymentsEnabled\":null}") ","                                                                                \
                                                                                                                                     "{\"id\":\"" U_AGENCY                                                              \
                                                                                                                                     "\",\"companyId\":\"" COMPANY                                                      \
                                                                                                                                     "\",\"firstName\":\"Ed\",\"lastName\":"                                            \
                                                                                                                                     "\"Agency\",\"email\":\"ed@example.com\",\"roles\":{\"type\":\"agency\",\"role\":" \
                                                                                                                                     "\"admin\"}}"

static void setup(void)
{
    env_start(&E, &(struct env_opts){
                      .seed_users = SEED_MORE,
                      .policies = {{"admin.json", admin_policy}, {"bot.json", bot_policy}},
                  });
    ck_assert_int_eq(
        mint("RS256", ISSUER_RS, "svc-bot", "users.readonly users.write", NULL, bot, sizeof bot),
        0);
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc-nobody", "users.readonly users.write", NULL,
                          nobody, sizeof nobody),
                     0);
}

static void teardown(void)
{
    env_stop(&E);
}

static int as(const char *token, const char *method, const char *path, const char *body,
              struct response *r)
{
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    return send_req(&E, method, path, auth, body, r);
}

static const char *message(const struct response *r, char *buf, size_t cap)
{
    cJSON *j = cJSON_Parse(r->body);
    const cJSON *m = cJSON_GetObjectItem(j, "message");
    snprintf(buf, cap, "%s", cJSON_IsString(m) ? m->valuestring : "");
    cJSON_Delete(j);
    return buf;
}

static void journal_is(int i, const char *method, const char *path)
{
    cJSON *j = journal_entry(&E, i);
    ck_assert_msg(j != NULL, "no journal entry %d", i);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "method")->valuestring, method);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "path")->valuestring, path);
    cJSON_Delete(j);
}

/* The user as the upstream has it (fetched with svc-test, under the admin policy). */
static char *fetch_user(const char *id)
{
    char path[100];
    snprintf(path, sizeof path, "/users/%s", id);
    struct response r;
    ck_assert_int_eq(send_req(&E, "GET", path, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    char *copy = strdup(r.body);
    response_free(&r);
    return copy;
}

static char *write_tmp(const char *name, const char *text)
{
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/%s", E.dir, name), 0);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Runs `ghl-gateway explain` on the env's config for the same request and asserts that it
 * agrees with the live answer: allowed exactly when the live request reached its upstream
 * answer, and when denied the same status with the live message as its first reason. */
static void explain_agrees(const char *claims, const char *method, const char *path,
                           const char *body, const char *target, const struct response *live)
{
    char *cf = write_tmp("explain-claims.json", claims);
    char *bf = body ? write_tmp("explain-body.json", body) : NULL;
    char *tf = target ? write_tmp("explain-target.json", target) : NULL;
    char *cmd = NULL, *out = NULL;
    ck_assert_int_ge(
        asprintf(&cmd, "%s explain -c %s --claims @%s --request '%s %s'%s%s%s%s 2>/dev/null",
                 bin_path("ghl-gateway"), E.config, cf, method, path, bf ? " --body @" : "",
                 bf ? bf : "", tf ? " --target @" : "", tf ? tf : ""),
        0);
    int rc = run_cmd(cmd, &out);
    const char *last = strrchr(out, '{') ? strstr(out, "{\"allowed\"") : NULL;
    cJSON *j = last ? cJSON_Parse(last) : NULL;
    ck_assert_msg(j != NULL, "explain printed no JSON: %s", out);
    bool allowed = cJSON_IsTrue(cJSON_GetObjectItem(j, "allowed"));
    bool live_allowed = live->status >= 200 && live->status < 300;
    ck_assert_msg(allowed == live_allowed, "explain says %s, the gateway answered %d: %s / %s",
                  allowed ? "allowed" : "denied", live->status, out, live->body);
    ck_assert_int_eq(rc, allowed ? 0 : 1);
    if (!allowed) {
        char msg[600];
        const cJSON *reasons = cJSON_GetObjectItem(j, "reasons");
        ck_assert_int_eq((int)cJSON_GetObjectItem(j, "status")->valuedouble, live->status);
        ck_assert_str_eq(cJSON_GetArrayItem(reasons, 0)->valuestring,
                         message(live, msg, sizeof msg));
    }
    cJSON_Delete(j);
    free(out);
    free(cmd);
    free(cf);
    free(bf);
    free(tf);
}

START_TEST(test_update_outside_the_locations_sends_only_the_target_get)
{
    struct response r;
    char msg[600];
    ck_assert_int_eq(as(bot, "PUT", "/users/" U_LOC2, "{\"firstName\":\"X\"}", &r), 0);
    ck_assert_int_eq(r.status, 403);
    /* named only as outside: the caller learns no location id (SPEC 6.4) */
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: user " U_LOC2 " is outside this policy's locations");
    ck_assert_ptr_null(strstr(r.body, LOC2));
    ck_assert_ptr_null(strstr(r.head, LOC2));
    ck_assert_int_eq(journal_count(&E), 1);
    journal_is(0, "GET", "/users/" U_LOC2);
    char *target = fetch_user(U_LOC2);
    explain_agrees(BOT_CLAIMS, "PUT", "/users/" U_LOC2, "{\"firstName\":\"X\"}", target, &r);
    free(target);
    response_free(&r);

    /* one location of two outside is enough to refuse */
    ck_assert_int_eq(as(bot, "PUT", "/users/" U_BOTH, "{\"firstName\":\"X\"}", &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: user " U_BOTH " is outside this policy's locations");
    ck_assert_ptr_null(strstr(r.body, LOC2));
    ck_assert_ptr_null(strstr(r.body, LOC1));
    int n = journal_count(&E);
    journal_is(n - 1, "GET", "/users/" U_BOTH);
    target = fetch_user(U_BOTH);
    explain_agrees(BOT_CLAIMS, "PUT", "/users/" U_BOTH, "{\"firstName\":\"X\"}", target, &r);
    free(target);
    response_free(&r);

    /* an agency user reaches every location: outside any location-bound policy */
    ck_assert_int_eq(as(bot, "PUT", "/users/" U_AGENCY, "{\"firstName\":\"X\"}", &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: user " U_AGENCY " is outside this policy's locations");
    n = journal_count(&E);
    journal_is(n - 1, "GET", "/users/" U_AGENCY);
    target = fetch_user(U_AGENCY);
    explain_agrees(BOT_CLAIMS, "PUT", "/users/" U_AGENCY, "{\"firstName\":\"X\"}", target, &r);
    free(target);
    response_free(&r);
    /* no PUT ever reached the upstream */
    n = journal_count(&E);
    for (int i = 0; i < n; i++) {
        cJSON *j = journal_entry(&E, i);
        ck_assert_str_eq(cJSON_GetObjectItem(j, "method")->valuestring, "GET");
        cJSON_Delete(j);
    }
}
END_TEST

START_TEST(test_delete_outside_the_locations_sends_only_the_target_get)
{
    struct response r;
    char msg[600];
    ck_assert_int_eq(as(bot, "DELETE", "/users/" U_LOC2, NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: user " U_LOC2 " is outside this policy's locations");
    ck_assert_ptr_null(strstr(r.body, LOC2));
    /* the audit record keeps every reason, the location among them */
    char rid[80], want[200];
    snprintf(rid, sizeof rid, "\"request_id\":\"%s\"", response_header(&r, "X-Request-Id"));
    char *audit = wait_for_text(E.audit_file, rid, 5000);
    const char *rec = strstr(audit, rid);
    ck_assert_msg(rec != NULL, "no audit record for %s: %s", rid, audit);
    const char *eol = strchr(rec, '\n');
    snprintf(want, sizeof want, "policy bot: user %s is in location %s, outside this policy",
             U_LOC2, LOC2);
    const char *at = strstr(rec, want);
    ck_assert_msg(at != NULL && (eol == NULL || at < eol), "the denied record lacks \"%s\": %s",
                  want, rec);
    ck_assert_ptr_nonnull(strstr(rec, "\"event\":\"denied\""));
    free(audit);
    ck_assert_int_eq(journal_count(&E), 1);
    journal_is(0, "GET", "/users/" U_LOC2);
    /* the user is still there */
    char *target = fetch_user(U_LOC2);
    explain_agrees(BOT_CLAIMS, "DELETE", "/users/" U_LOC2, NULL, target, &r);
    free(target);
    response_free(&r);
}
END_TEST

START_TEST(test_allowed_update_and_delete_fetch_then_change)
{
    struct response r;
    char *before = fetch_user(U_LOC1); /* journal 0 */
    ck_assert_int_eq(as(bot, "PUT", "/users/" U_LOC1, "{\"lastName\":\"Changed\"}", &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"Changed\""));
    /* reads.redact holds for the user objects a change returns too */
    ck_assert_ptr_null(strstr(r.body, "\"phone\""));
    ck_assert_int_eq(journal_count(&E), 3);
    journal_is(1, "GET", "/users/" U_LOC1);
    journal_is(2, "PUT", "/users/" U_LOC1);
    explain_agrees(BOT_CLAIMS, "PUT", "/users/" U_LOC1, "{\"lastName\":\"Changed\"}", before, &r);
    response_free(&r);

    ck_assert_int_eq(as(bot, "DELETE", "/users/" U_LOC1, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(journal_count(&E), 5);
    journal_is(3, "GET", "/users/" U_LOC1);
    journal_is(4, "DELETE", "/users/" U_LOC1);
    explain_agrees(BOT_CLAIMS, "DELETE", "/users/" U_LOC1, NULL, before, &r);
    response_free(&r);
    free(before);
}
END_TEST

/* No escalation through the target (SPEC 6.3): the bot grants the user role, scopes contacts.*
 * and paymentsEnabled false only, so it may change or delete only users it could have created.
 * Found when the gateway was attacked: it could send a password to an admin of its location.
 * Each refused target costs only its GET upstream; the user within the grant is changed. */
START_TEST(test_update_and_delete_only_targets_within_the_grant)
{
    static const struct {
        const char *id, *message;
    } refused[] = {
        {U_ADMIN, "policy bot: user " U_ADMIN " has role admin, which this policy may not grant"},
        {U_SCOPE, "policy bot: user " U_SCOPE
                  " holds scope payments.write, which this policy may not grant"},
        {U_PAYS, "policy bot: user " U_PAYS
                 " has permissions.paymentsEnabled true, which this policy pins to false"},
        {U_PAYDEF, "policy bot: user " U_PAYDEF " has permissions.paymentsEnabled true (the "
                   "default), which this policy pins to false"},
    };
    const char *password = "{\"password\":\"Takeover-2026-x!\"}";
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        char path[80], msg[600];
        snprintf(path, sizeof path, "/users/%s", refused[i].id);
        for (int del = 0; del < 2; del++) {
            struct response r;
            int before = journal_count(&E);
            ck_assert_int_eq(as(bot, del ? "DELETE" : "PUT", path, del ? NULL : password, &r), 0);
            ck_assert_msg(r.status == 403, "%s %s: %d %s", del ? "DELETE" : "PUT", path, r.status,
                          r.body);
            ck_assert_str_eq(message(&r, msg, sizeof msg), refused[i].message);
            /* only the target's GET went upstream */
            ck_assert_int_eq(journal_count(&E), before + 1);
            journal_is(before, "GET", path);
            char *target = fetch_user(refused[i].id);
            explain_agrees(BOT_CLAIMS, del ? "DELETE" : "PUT", path, del ? NULL : password, target,
                           &r);
            free(target);
            response_free(&r);
        }
    }
    /* the sandbox answered the defaulted flag by leaving it out */
    char *paydef = fetch_user(U_PAYDEF);
    ck_assert_ptr_null(strstr(paydef, "paymentsEnabled"));
    free(paydef);
    /* a user-role user of its location, within every pin and scope: changed */
    struct response r;
    char *before = fetch_user(U_LOC1);
    int n = journal_count(&E);
    ck_assert_int_eq(as(bot, "PUT", "/users/" U_LOC1, password, &r), 0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    ck_assert_int_eq(journal_count(&E), n + 2);
    journal_is(n, "GET", "/users/" U_LOC1);
    journal_is(n + 1, "PUT", "/users/" U_LOC1);
    cJSON *j = journal_entry(&E, n + 1);
    ck_assert_ptr_nonnull(strstr(cJSON_GetObjectItem(j, "body")->valuestring, "Takeover-2026-x!"));
    cJSON_Delete(j);
    explain_agrees(BOT_CLAIMS, "PUT", "/users/" U_LOC1, password, before, &r);
    free(before);
    response_free(&r);
}
END_TEST

/* A target that does not exist: the upstream's answer to the GET is passed back as it is, and
 * nothing is changed. */
START_TEST(test_missing_target_passes_the_upstream_answer)
{
    struct response r, g;
    ck_assert_int_eq(as(bot, "DELETE", "/users/UserNone000000000099", NULL, &r), 0);
    ck_assert_int_eq(journal_count(&E), 1);
    journal_is(0, "GET", "/users/UserNone000000000099");
    ck_assert_int_eq(send_req(&E, "GET", "/users/UserNone000000000099", NULL, NULL, &g), 0);
    ck_assert_int_ge(g.status, 400);
    ck_assert_int_eq(r.status, g.status);
    ck_assert_str_eq(r.body, g.body);
    response_free(&g);
    response_free(&r);
}
END_TEST

#define CREATE_HEAD                                                                                \
    "{\"companyId\":\"" COMPANY "\",\"firstName\":\"New\",\"lastName\":\"Hire\","                  \
    "\"email\":\"new.hire@example.com\",\"password\":\"Secret-123x\",\"type\":\"account\","        \
    "\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"],\"scopes\":[\"contacts.write\"],"            \
    "\"scopesAssignedToOnly\":[]"

START_TEST(test_create_checked_on_effective_permissions)
{
    struct response r;
    char msg[600];
    /* no permissions sent: paymentsEnabled defaults to true, which the pin refuses */
    const char *body = CREATE_HEAD "}";
    ck_assert_int_eq(as(bot, "POST", "/users/", body, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: permissions.paymentsEnabled defaults to true but must be "
                     "false; send it explicitly");
    ck_assert_int_eq(journal_count(&E), 0);
    explain_agrees(BOT_CLAIMS, "POST", "/users/", body, NULL, &r);
    response_free(&r);

    /* a scope outside the ceiling */
    body =
        "{\"companyId\":\"" COMPANY "\",\"firstName\":\"New\",\"lastName\":\"Hire\","
        "\"email\":\"new.hire@example.com\",\"password\":\"Secret-123x\",\"type\":\"account\","
        "\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"],\"scopes\":[\"payments/records.write\"],"
        "\"scopesAssignedToOnly\":[],\"permissions\":{\"paymentsEnabled\":false}}";
    ck_assert_int_eq(as(bot, "POST", "/users/", body, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: scope payments/records.write is not grantable");
    explain_agrees(BOT_CLAIMS, "POST", "/users/", body, NULL, &r);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);

    /* the flag sent explicitly: allowed, and the upstream gets it */
    body = CREATE_HEAD ",\"permissions\":{\"paymentsEnabled\":false}}";
    ck_assert_int_eq(as(bot, "POST", "/users/", body, &r), 0);
    ck_assert_msg(r.status == 201 || r.status == 200, "status %d: %s", r.status, r.body);
    ck_assert_int_eq(journal_count(&E), 1);
    cJSON *j = journal_entry(&E, 0);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "method")->valuestring, "POST");
    ck_assert_ptr_nonnull(
        strstr(cJSON_GetObjectItem(j, "body")->valuestring, "\"paymentsEnabled\":false"));
    cJSON_Delete(j);
    explain_agrees(BOT_CLAIMS, "POST", "/users/", body, NULL, &r);
    response_free(&r);
}
END_TEST

START_TEST(test_reads_filtered_and_redacted)
{
    struct response r;
    char msg[600];
    /* get-user of a user outside: the upstream was asked, the caller is refused */
    ck_assert_int_eq(as(bot, "GET", "/users/" U_LOC2, NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: user " U_LOC2 " is outside this policy's locations");
    ck_assert_int_eq(journal_count(&E), 1);
    char *target = fetch_user(U_LOC2);
    explain_agrees(BOT_CLAIMS, "GET", "/users/" U_LOC2, NULL, target, &r);
    free(target);
    response_free(&r);

    /* inside (one of its two locations is enough to see it): shown without phone */
    ck_assert_int_eq(as(bot, "GET", "/users/" U_BOTH, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "cy@example.com"));
    ck_assert_ptr_null(strstr(r.body, "\"phone\""));
    ck_assert_ptr_null(strstr(r.body, "+15550003"));
    target = fetch_user(U_BOTH);
    ck_assert_ptr_nonnull(strstr(target, "+15550003")); /* the admin policy redacts nothing */
    explain_agrees(BOT_CLAIMS, "GET", "/users/" U_BOTH, NULL, target, &r);
    free(target);
    response_free(&r);

    /* a list: the user outside is dropped, count lowered, phones gone */
    const char *body = "{\"companyId\":\"" COMPANY "\",\"emails\":\"ada@example.com,"
                       "bea@example.com,cy@example.com\",\"projection\":\"all\"}";
    ck_assert_int_eq(as(bot, "POST", "/users/search/filter-by-email", body, &r), 0);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    ck_assert_ptr_nonnull(j);
    const cJSON *users = cJSON_GetObjectItem(j, "users");
    ck_assert_int_eq(cJSON_GetArraySize(users), 2);
    ck_assert_int_eq((int)cJSON_GetObjectItem(j, "count")->valuedouble, 2);
    const cJSON *u;
    cJSON_ArrayForEach(u, users)
    {
        ck_assert_str_ne(cJSON_GetObjectItem(u, "id")->valuestring, U_LOC2);
        ck_assert_ptr_null(cJSON_GetObjectItem(u, "phone"));
    }
    cJSON_Delete(j);
    ck_assert_ptr_null(strstr(r.body, "+1555"));
    explain_agrees(BOT_CLAIMS, "POST", "/users/search/filter-by-email", body, NULL, &r);
    response_free(&r);
    /* the list was asked for upstream (and answered with all three: see the admin's view) */
    int n = journal_count(&E);
    journal_is(n - 1, "POST", "/users/search/filter-by-email");

    /* search-users must name a location under a location-bound policy */
    ck_assert_int_eq(as(bot, "GET", "/users/search?companyId=" COMPANY, NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: search-users must name a locationId");
    ck_assert_int_eq(journal_count(&E), n);
    explain_agrees(BOT_CLAIMS, "GET", "/users/search?companyId=" COMPANY, NULL, NULL, &r);
    response_free(&r);
    ck_assert_int_eq(
        as(bot, "GET", "/users/search?companyId=" COMPANY "&locationId=" LOC2, NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg), "policy bot: location " LOC2 " is not allowed");
    explain_agrees(BOT_CLAIMS, "GET", "/users/search?companyId=" COMPANY "&locationId=" LOC2, NULL,
                   NULL, &r);
    response_free(&r);
    ck_assert_int_eq(
        as(bot, "GET", "/users/search?companyId=" COMPANY "&locationId=" LOC1, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "di@example.com"));
    ck_assert_ptr_null(strstr(r.body, "+1555"));
    explain_agrees(BOT_CLAIMS, "GET", "/users/search?companyId=" COMPANY "&locationId=" LOC1, NULL,
                   NULL, &r);
    response_free(&r);
}
END_TEST

START_TEST(test_no_policy_no_access)
{
    struct response r;
    char msg[600];
    ck_assert_int_eq(as(nobody, "GET", "/users/" SEED_USER, NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg), "no policy grants svc-nobody access");
    ck_assert_int_eq(journal_count(&E), 0);
    explain_agrees("{\"iss\":\"" ISSUER_RS "\",\"sub\":\"svc-nobody\","
                   "\"scope\":\"users.readonly users.write\"}",
                   "GET", "/users/" SEED_USER, NULL, NULL, &r);
    response_free(&r);
    /* a change by a caller no policy names: refused before the target is fetched (found in
     * review: the GET used to go first, telling such a caller which users exist) */
    ck_assert_int_eq(as(nobody, "DELETE", "/users/UserNone000000000099", NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg), "no policy grants svc-nobody access");
    response_free(&r);
    ck_assert_int_eq(as(nobody, "PUT", "/users/" SEED_USER, "{\"firstName\":\"X\"}", &r), 0);
    ck_assert_int_eq(r.status, 403);
    explain_agrees("{\"iss\":\"" ISSUER_RS "\",\"sub\":\"svc-nobody\","
                   "\"scope\":\"users.readonly users.write\"}",
                   "PUT", "/users/" SEED_USER, "{\"firstName\":\"X\"}", NULL, &r);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
    /* the bot may not write twilioPhone... it has no fields.forbid; but it may not change a
     * user's type to agency: refused before the fetch too */
    ck_assert_int_eq(as(bot, "PUT", "/users/" SEED_USER, "{\"type\":\"agency\"}", &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg), "policy bot: type agency is not grantable");
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
    /* an op the policy does not list */
    ck_assert_int_eq(as(bot, "GET", "/users/?locationId=" LOC1, NULL, &r), 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(message(&r, msg, sizeof msg),
                     "policy bot: operation get-user-by-location is not allowed");
    explain_agrees(BOT_CLAIMS, "GET", "/users/?locationId=" LOC1, NULL, NULL, &r);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

/* Polls until a request as token gets want (the workers take a new snapshot when woken). */
static int status_within(const char *token, const char *path, int want, int ms)
{
    struct response r;
    int got = 0;
    for (int waited = 0; waited <= ms; waited += 100) {
        ck_assert_int_eq(as(token, "GET", path, NULL, &r), 0);
        got = r.status;
        response_free(&r);
        if (got == want)
            break;
        usleep(100000);
    }
    return got;
}

static const char newbie_policy[] =
    "{ \"name\": \"newbie\", \"subjects\": [ { \"sub\": \"svc-new\" } ],\n"
    "  \"operations\": [\"get-user\"], \"companies\": \"*\", \"locations\": \"*\" }\n";

START_TEST(test_sighup_reload_keeps_the_old_set_on_error)
{
    char newbie[4096];
    ck_assert_int_eq(
        mint("RS256", ISSUER_RS, "svc-new", "users.readonly", NULL, newbie, sizeof newbie), 0);
    ck_assert_int_eq(status_within(newbie, "/users/" SEED_USER, 403, 0), 403);

    /* a broken file (an unknown key) next to a new valid policy: the whole set is refused */
    env_write_policy(&E, "newbie.json", newbie_policy);
    env_write_policy(
        &E, "zz-broken.json",
        "{ \"name\": \"broken\", \"subjects\": [ { \"sub\": \"x\" } ],\n"
        "  \"operations\": [\"get-user\"], \"companies\": \"*\", \"locations\": \"*\",\n"
        "  \"grnat\": {} }\n");
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    char *log = wait_for_text(E.gateway.log, "reload failed", 5000);
    ck_assert_msg(strstr(log, "reload failed") != NULL, "no reload failure logged: %s", log);
    ck_assert_msg(strstr(log, "zz-broken.json:3: grnat: unknown key") != NULL,
                  "the problem is not named: %s", log);
    free(log);
    /* still serving with the old set: the bot as before, the new subject still refused */
    ck_assert_int_eq(status_within(bot, "/users/" SEED_USER, 200, 0), 200);
    ck_assert_int_eq(status_within(newbie, "/users/" SEED_USER, 403, 0), 403);

    /* fixed: the new subject is allowed once the workers have the new snapshot */
    env_write_policy(&E, "zz-broken.json", NULL);
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    ck_assert_int_eq(status_within(newbie, "/users/" SEED_USER, 200, 5000), 200);
    ck_assert_int_eq(status_within(bot, "/users/" SEED_USER, 200, 0), 200);
    /* and a policy removed is gone */
    env_write_policy(&E, "newbie.json", NULL);
    ck_assert_int_eq(kill(E.gateway.pid, SIGHUP), 0);
    ck_assert_int_eq(status_within(newbie, "/users/" SEED_USER, 403, 5000), 403);
    log = slurp(E.gateway.log);
    ck_assert_ptr_nonnull(strstr(log, "reloaded"));
    free(log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("policy");
    TCase *t = tcase_create("live");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_update_outside_the_locations_sends_only_the_target_get);
    tcase_add_test(t, test_delete_outside_the_locations_sends_only_the_target_get);
    tcase_add_test(t, test_allowed_update_and_delete_fetch_then_change);
    tcase_add_test(t, test_update_and_delete_only_targets_within_the_grant);
    tcase_add_test(t, test_missing_target_passes_the_upstream_answer);
    tcase_add_test(t, test_create_checked_on_effective_permissions);
    tcase_add_test(t, test_reads_filtered_and_redacted);
    tcase_add_test(t, test_no_policy_no_access);
    tcase_add_test(t, test_sighup_reload_keeps_the_old_set_on_error);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
