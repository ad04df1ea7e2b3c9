/* Request validation end to end: what the schema refuses never reaches the upstream, what it
 * accepts arrives in the gateway's own serialization, and a newer document needs no code. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct env E;

static void teardown(void)
{
    env_stop(&E);
}

#define CREATE(scopes)                                                                             \
    "{\"companyId\":\"" COMPANY "\",\"firstName\":\"Grace\",\"lastName\":\"Hopper\","              \
    "\"email\":\"grace@example.com\",\"password\":\"Str0ng!Passw0rd\",\"type\":\"account\","       \
    "\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"],\"scopes\":" scopes "}"

START_TEST(test_schema_violations_are_one_422_and_never_forwarded)
{
    env_start(&E, NULL);
    struct response r;
    const char *body =
        "{\"companyId\":5,\"firstName\":\"G\",\"lastName\":\"H\",\"email\":\"g@h.io\","
        "\"password\":\"Str0ng!Passw0rd\",\"type\":\"account\",\"role\":[\"admin\"],"
        "\"locationIds\":[\"" LOC1 "\"],\"permissions\":{\"paymentsEnabled\":1},"
        "\"isAdmin\":true}";
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, body, &r), 0);
    ck_assert_int_eq(r.status, 422);
    ck_assert_str_eq(r.body, "{\"statusCode\":422,\"message\":[\"companyId must be a string\","
                             "\"role must be a string\",\"permissions.paymentsEnabled must be a "
                             "boolean value\",\"property isAdmin should not exist\"],"
                             "\"error\":\"Unprocessable Entity\"}");
    response_free(&r);
    /* the deprecated email on update */
    ck_assert_int_eq(send_req(&E, "PUT", "/users/" SEED_USER, NULL, "{\"email\":\"new@x.io\"}", &r),
                     0);
    ck_assert_int_eq(r.status, 422);
    ck_assert_ptr_nonnull(strstr(r.body, "property email should not exist"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

START_TEST(test_ambiguous_json_never_reaches_the_upstream)
{
    env_start(&E, NULL);
    const char *dup = "{\"companyId\":\"" COMPANY "\",\"role\":\"user\",\"role\":\"admin\"}";
    const char *deep_dup = "{\"permissions\":{\"a\":{\"b\":{\"c\":1,\"c\":2}}}}";
    const char *lone = "{\"firstName\":\"\\ud800\"}";
    const char *bad_utf8 = "{\"firstName\":\"\xc3\x28\"}";
    const char *const cases[][2] = {
        {"POST", dup}, {"PUT", deep_dup}, {"PUT", lone}, {"PUT", bad_utf8}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct response r;
        const char *path = strcmp(cases[i][0], "POST") == 0 ? "/users/" : "/users/" SEED_USER;
        ck_assert_int_eq(send_req(&E, cases[i][0], path, NULL, cases[i][1], &r), 0);
        ck_assert_msg(r.status == 400, "case %zu: %d %s", i, r.status, r.body);
        ck_assert_ptr_nonnull(strstr(r.body, "invalid JSON body"));
        response_free(&r);
    }
    ck_assert_int_eq(journal_count(&E), 0);
}
END_TEST

/* A copy of the shipped document with one more grantable scope, as HighLevel adds them. */
static void newer_document(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/ghl-newdoc-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *doc = slurp(GW_SRC_DIR "/proxy/openapi/users.openapi.json");
    cJSON *j = cJSON_Parse(doc);
    free(doc);
    ck_assert_ptr_nonnull(j);
    cJSON *schemas = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "components"), "schemas");
    int added = 0;
    static const char *const dtos[] = {"CreateUserDto", "UpdateUserDto"};
    static const char *const props[] = {"scopes", "scopesAssignedToOnly"};
    for (int d = 0; d < 2; d++)
        for (int p = 0; p < 2; p++) {
            cJSON *en = cJSON_GetObjectItem(
                cJSON_GetObjectItem(
                    cJSON_GetObjectItem(
                        cJSON_GetObjectItem(cJSON_GetObjectItem(schemas, dtos[d]), "properties"),
                        props[p]),
                    "items"),
                "enum");
            ck_assert_ptr_nonnull(en);
            cJSON_AddItemToArray(en, cJSON_CreateString("newscope.write"));
            added++;
        }
    ck_assert_int_eq(added, 4);
    char path[300], cmd[700];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    char *text = cJSON_Print(j);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "cp %s/proxy/openapi/common-schemas.json %s/", GW_SRC_DIR, dir);
    ck_assert_int_eq(run_cmd(cmd, NULL), 0);
}

START_TEST(test_a_newer_document_brings_its_scopes_without_code)
{
    /* with the shipped document the scope does not exist */
    env_start(&E, NULL);
    struct response r;
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, CREATE("[\"newscope.write\"]"), &r), 0);
    ck_assert_int_eq(r.status, 422);
    ck_assert_ptr_nonnull(
        strstr(r.body, "each value in scopes must be one of the following values"));
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 0);
    env_stop(&E);

    /* gateway and sandbox on the newer document: it passes, and reaches the upstream */
    char dir[64];
    newer_document(dir, sizeof dir);
    char up[400], sb[400];
    snprintf(up, sizeof up, "\"openapi\": \"%s/users.openapi.json\"", dir);
    snprintf(sb, sizeof sb, "--openapi %s/users.openapi.json", dir);
    env_start(&E, &(struct env_opts){.upstream_json = up, .sandbox_args = sb});
    ck_assert_int_eq(send_req(&E, "POST", "/users/", NULL, CREATE("[\"newscope.write\"]"), &r), 0);
    ck_assert_msg(r.status == 201, "%d %s", r.status, r.body);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 1);
    cJSON *j = journal_entry(&E, 0);
    ck_assert_ptr_nonnull(
        strstr(cJSON_GetObjectItem(j, "body")->valuestring, "\"scopes\":[\"newscope.write\"]"));
    cJSON_Delete(j);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("validation");
    TCase *t = tcase_create("bodies");
    tcase_add_checked_fixture(t, NULL, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_schema_violations_are_one_422_and_never_forwarded);
    tcase_add_test(t, test_ambiguous_json_never_reaches_the_upstream);
    tcase_add_test(t, test_a_newer_document_brings_its_scopes_without_code);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
