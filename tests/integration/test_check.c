/* ghl-gateway check: what an operator sees for a good and a broken configuration. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/ghl-check-XXXXXX");
    ck_assert(mkdtemp(dir) != NULL);
    char p[400];
    snprintf(p, sizeof p, "%s/policies", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/audit", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/agency.token", dir);
    FILE *f = fopen(p, "w");
    fputs("a-token\n", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/empty.token", dir);
    fclose(fopen(p, "w"));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}

/* Writes gw.json with the given members after a valid base and runs check on it. */
static int check_config(const char *listen, const char *credentials, const char *extra, char **out)
{
    char path[400], cfg[4096];
    snprintf(path, sizeof path, "%s/gw.json", dir);
    snprintf(cfg, sizeof cfg,
             "{\n"
             "  \"listen\": %s,\n"
             "  \"tls\": { \"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\" },\n"
             "  \"upstream\": { \"ca_file\": \"%s/ca.crt\" },\n"
             "  \"credentials\": %s,\n"
             "  \"policies\": { \"dir\": \"policies\" }%s\n"
             "}\n",
             listen ? listen : "{ \"port\": 18443 }", GW_CERTS_DIR, GW_CERTS_DIR, GW_CERTS_DIR,
             credentials ? credentials : "{ \"agency_token_file\": \"agency.token\" }",
             extra ? extra : "");
    FILE *f = fopen(path, "w");
    fputs(cfg, f);
    fclose(f);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), path);
    return run_cmd(cmd, out);
}

START_TEST(test_check_accepts_a_valid_config_with_a_summary)
{
    char *out;
    ck_assert_int_eq(check_config(NULL, NULL, NULL, &out), 0);
    ck_assert_msg(strstr(out, "configuration is valid") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "7 operations") != NULL, "%s", out);
    /* the location op has no credential: a warning that names it, not a failure */
    ck_assert_msg(strstr(out, "warning: op get-user-by-location has no credential") != NULL, "%s",
                  out);
    free(out);
}
END_TEST

START_TEST(test_check_rejects_an_unknown_key_with_file_and_line)
{
    char *out;
    ck_assert_int_eq(check_config("{ \"port\": 18443, \"workerz\": 2 }", NULL, NULL, &out), 1);
    char want[400];
    snprintf(want, sizeof want, "%s/gw.json:2: listen.workerz: unknown key", dir);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    ck_assert_msg(strstr(out, "configuration is valid") == NULL, "%s", out);
    free(out);
}
END_TEST

START_TEST(test_check_rejects_a_missing_cert_file)
{
    char *out;
    char extra[600];
    snprintf(extra, sizeof extra, ",\n  \"admin\": { \"port\": 9902 }");
    /* replace the cert path by one that does not exist */
    char path[400], cfg[2048];
    snprintf(path, sizeof path, "%s/gw.json", dir);
    snprintf(cfg, sizeof cfg,
             "{\n  \"tls\": { \"cert\": \"certs/missing.crt\", \"key\": \"%s/gateway.key\" },\n"
             "  \"upstream\": { \"ca_file\": \"%s/ca.crt\" },\n"
             "  \"credentials\": { \"agency_token_file\": \"agency.token\" },\n"
             "  \"policies\": { \"dir\": \"policies\" }\n}\n",
             GW_CERTS_DIR, GW_CERTS_DIR);
    FILE *f = fopen(path, "w");
    fputs(cfg, f);
    fclose(f);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), path);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    char want[400];
    snprintf(want, sizeof want,
             "gw.json:2: tls.cert: cannot read %s/certs/missing.crt: No such file or directory",
             dir);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    free(out);
}
END_TEST

START_TEST(test_check_reports_every_problem)
{
    char *out;
    ck_assert_int_eq(check_config("{ \"port\": 0, \"address\": \"localhost\" }",
                                  "{ \"agency_token_file\": \"empty.token\" }",
                                  ",\n  \"limits\": { \"max_body_bytes\": \"big\" }", &out),
                     1);
    ck_assert_msg(strstr(out, "listen.port: must be between 1 and 65535") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "listen.address: must be an IPv4 or IPv6 address") != NULL, "%s",
                  out);
    ck_assert_msg(strstr(out, "limits.max_body_bytes: must be an integer") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "3 problems found") != NULL, "%s", out);
    free(out);
    /* the empty token file is found once the rest is valid */
    ck_assert_int_eq(check_config(NULL, "{ \"agency_token_file\": \"empty.token\" }", NULL, &out),
                     1);
    ck_assert_msg(strstr(out, "empty.token is empty") != NULL, "%s", out);
    free(out);
}
END_TEST

/* audit.replica_id: shown in the summary; one that is no replica id named at its line */
START_TEST(test_check_shows_the_replica_and_refuses_a_bad_one)
{
    char *out;
    ck_assert_int_eq(
        check_config(NULL, NULL, ",\n  \"audit\": { \"replica_id\": \"gw-7d9f-abc12\" }", &out), 0);
    ck_assert_msg(strstr(out, "(fsync), replica gw-7d9f-abc12\n") != NULL, "%s", out);
    free(out);
    ck_assert_int_eq(check_config(NULL, NULL, ",\n  \"audit\": { \"replica_id\": \"gw 1\" }", &out),
                     1);
    char want[600];
    snprintf(want, sizeof want,
             "%s/gw.json:7: audit.replica_id: must be null (the host name) or 1 to 64 letters, "
             "digits, '.', '_' or '-', starting with a letter or digit\n",
             dir);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    free(out);
}
END_TEST

static void write_policy(const char *name, const char *text)
{
    char p[400];
    snprintf(p, sizeof p, "%s/policies/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* A broken policy set fails check with every problem at file:line: member, and stops run. */
START_TEST(test_check_and_run_refuse_a_broken_policy)
{
    write_policy("good.json", "{ \"name\": \"good\", \"subjects\": [ { \"sub\": \"a\" } ],\n"
                              "  \"operations\": [\"get-user\"], \"companies\": \"*\",\n"
                              "  \"locations\": \"*\" }\n");
    char *out;
    ck_assert_int_eq(check_config(NULL, NULL, NULL, &out), 0);
    ck_assert_msg(strstr(out, "1 policy (good)") != NULL, "%s", out);
    free(out);
    write_policy("bad.json", "{ \"name\": \"bad\", \"subjects\": [ { \"sub\": \"b\" } ],\n"
                             "  \"operations\": [\"get-user\", \"drop-user\"],\n"
                             "  \"companies\": \"*\", \"locations\": \"*\",\n"
                             "  \"grant\": { \"scopes\": [\"contactz.*\"],\n"
                             "             \"permissions\": { \"paymentEnabled\": false } } }\n");
    ck_assert_int_eq(check_config(NULL, NULL, NULL, &out), 1);
    ck_assert_msg(strstr(out, "bad.json:2: operations: unknown operation drop-user") != NULL, "%s",
                  out);
    ck_assert_msg(strstr(out, "bad.json:4: grant.scopes: pattern contactz.* matches no scope") !=
                      NULL,
                  "%s", out);
    ck_assert_msg(strstr(out, "bad.json:5: grant.permissions.paymentEnabled: unknown permission "
                              "flag") != NULL,
                  "%s", out);
    free(out);
    /* run refuses to start with the same messages */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s run -c %s/gw.json", bin_path("ghl-gateway"), dir);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "unknown operation drop-user") != NULL, "%s", out);
    free(out);
    /* and so do the offline commands */
    snprintf(cmd, sizeof cmd,
             "%s explain -c %s/gw.json --claims '{\"sub\":\"a\"}' --request 'GET /users/abc'",
             bin_path("ghl-gateway"), dir);
    ck_assert_int_eq(run_cmd(cmd, &out), 2);
    ck_assert_msg(strstr(out, "unknown operation drop-user") != NULL, "%s", out);
    free(out);
}
END_TEST

START_TEST(test_check_usage_errors_exit_2)
{
    char cmd[600], *out;
    snprintf(cmd, sizeof cmd, "%s check", bin_path("ghl-gateway"));
    ck_assert_int_eq(run_cmd(cmd, &out), 2);
    ck_assert_msg(strstr(out, "usage: ghl-gateway check -c FILE") != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s frobnicate", bin_path("ghl-gateway"));
    ck_assert_int_eq(run_cmd(cmd, &out), 2);
    free(out);
    /* audit-repair: a file is required; --help says what it does */
    snprintf(cmd, sizeof cmd, "%s audit-repair", bin_path("ghl-gateway"));
    ck_assert_int_eq(run_cmd(cmd, &out), 2);
    ck_assert_msg(strstr(out, "usage: ghl-gateway audit-repair FILE [--key FILE]") != NULL, "%s",
                  out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s audit-repair a.jsonl b.jsonl", bin_path("ghl-gateway"));
    ck_assert_int_eq(run_cmd(cmd, &out), 2);
    free(out);
    snprintf(cmd, sizeof cmd, "%s audit-repair --help", bin_path("ghl-gateway"));
    ck_assert_int_eq(run_cmd(cmd, &out), 0);
    ck_assert_msg(strstr(out, "torn last line") && strstr(out, "FILE.torn"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --help", bin_path("ghl-gateway"));
    ck_assert_int_eq(run_cmd(cmd, &out), 0);
    ck_assert_msg(strstr(out, "ghl-gateway audit-repair FILE") != NULL, "%s", out);
    free(out);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("check");
    TCase *t = tcase_create("check");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_check_accepts_a_valid_config_with_a_summary);
    tcase_add_test(t, test_check_rejects_an_unknown_key_with_file_and_line);
    tcase_add_test(t, test_check_rejects_a_missing_cert_file);
    tcase_add_test(t, test_check_reports_every_problem);
    tcase_add_test(t, test_check_shows_the_replica_and_refuses_a_bad_one);
    tcase_add_test(t, test_check_usage_errors_exit_2);
    tcase_add_test(t, test_check_and_run_refuse_a_broken_policy);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
