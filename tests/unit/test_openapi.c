/* Unit tests of the OpenAPI model (proxy/openapi.c) against SPEC §3: the shipped Users API
 * document yields the seven ops, their scopes, credentials, parameters and body schemas, the
 * scope list, the permission flags and the Version values; broken documents are refused with a
 * message; a newer document with one more scope needs no code change. */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "openapi.h"

#define SHIPPED GW_TEST_DIR "/../proxy/openapi/users.openapi.json"
#define COMMON GW_TEST_DIR "/../proxy/openapi/common-schemas.json"

static struct gw_openapi *m; /* the shipped document, loaded per test */
static char g_tmp[64];       /* a scratch folder for the whole run */

static void load_shipped(void)
{
    char err[512];
    int rc = gw_openapi_load(gw_openapi_default_path(), &m, err, sizeof err);
    ck_assert_msg(rc == 0, "shipped document refused: %s", err);
    ck_assert_ptr_nonnull(m);
}

static void free_shipped(void)
{
    gw_openapi_free(m);
    m = NULL;
}

static void make_tmp(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/gwoapi.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_tmp));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tmp(void)
{
    if (g_tmp[0])
        nftw(g_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh folder under the scratch folder; returns its path (static buffer). */
static const char *subdir(const char *name)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    return path;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void copy_file(const char *from, const char *dir, const char *name)
{
    size_t len;
    char *buf = gw_read_file(from, 1 << 24, &len);
    ck_assert_ptr_nonnull(buf);
    write_text(dir, name, buf);
    free(buf);
}

static cJSON *read_shipped_tree(void)
{
    size_t len;
    char *buf = gw_read_file(SHIPPED, 1 << 24, &len);
    ck_assert_ptr_nonnull(buf);
    struct gw_json_error e;
    cJSON *doc = gw_json_parse(buf, len, NULL, &e);
    ck_assert_msg(doc != NULL, "%s", e.msg);
    free(buf);
    return doc;
}

static void write_tree(const char *dir, const char *name, const cJSON *doc)
{
    char *text = cJSON_Print(doc);
    ck_assert_ptr_nonnull(text);
    write_text(dir, name, text);
    cJSON_free(text);
}

static const cJSON *at(const cJSON *node, const char *const *keys)
{
    for (; *keys && node; keys++)
        node = cJSON_GetObjectItemCaseSensitive(node, *keys);
    return node;
}

/* Loads dir/name and expects refusal with exactly want (formatted with the document path). */
static void expect_refused(const char *path, const char *want)
{
    struct gw_openapi *bad = (struct gw_openapi *)1;
    char err[512];
    int rc = gw_openapi_load(path, &bad, err, sizeof err);
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_null(bad);
    ck_assert_str_eq(err, want);
}

/* ---- the shipped document ---- */

static const struct {
    const char *id;
    enum gw_method method;
    const char *path;
    const char *scope;
    enum gw_cred_kind cred;
    bool body;
} ops[] = {
    {"create-user", GW_M_POST, "/users/", "users.write", GW_CRED_AGENCY, true},
    {"search-users", GW_M_GET, "/users/search", "users.readonly", GW_CRED_AGENCY, false},
    {"filter-users-by-email", GW_M_POST, "/users/search/filter-by-email", "users.readonly",
     GW_CRED_AGENCY, true},
    {"get-user", GW_M_GET, "/users/{userId}", "users.readonly", GW_CRED_AGENCY, false},
    {"update-user", GW_M_PUT, "/users/{userId}", "users.write", GW_CRED_AGENCY, true},
    {"delete-user", GW_M_DELETE, "/users/{userId}", "users.write", GW_CRED_AGENCY, false},
    {"get-user-by-location", GW_M_GET, "/users/", "users.readonly", GW_CRED_LOCATION, false},
};
#define NOPS (sizeof ops / sizeof *ops)

START_TEST(test_openapi_default_path_is_the_shipped_document)
{
    const char *p = gw_openapi_default_path();
    const char *tail = "openapi/users.openapi.json";
    ck_assert_uint_ge(strlen(p), strlen(tail));
    ck_assert_str_eq(p + strlen(p) - strlen(tail), tail);
    ck_assert_int_eq(access(p, R_OK), 0);
    ck_assert_str_eq(m->path, p);
}
END_TEST

/* The shipped document marks the password a secret (a masked example): the audit record
 * redacts what the model names, on create and update; nothing else is marked. */
START_TEST(test_openapi_secret_members_from_the_document)
{
    static const char *const changing[] = {"create-user", "update-user"};
    for (size_t i = 0; i < 2; i++) {
        const struct gw_op *op = gw_openapi_op(m, changing[i]);
        ck_assert_ptr_nonnull(op);
        ck_assert(gw_openapi_secret(op, "password"));
        ck_assert(!gw_openapi_secret(op, "email"));
        ck_assert(!gw_openapi_secret(op, "firstName"));
        ck_assert_uint_eq(op->nsecret, 1);
    }
    ck_assert(!gw_openapi_secret(gw_openapi_op(m, "get-user"), "password"));
}
END_TEST

START_TEST(test_openapi_shipped_document_has_the_seven_ops)
{
    ck_assert_uint_eq(m->nops, 7);
    for (size_t i = 0; i < NOPS; i++) {
        const struct gw_op *op = gw_openapi_op(m, ops[i].id);
        ck_assert_msg(op != NULL, "no op %s", ops[i].id);
        ck_assert_str_eq(op->id, ops[i].id);
        ck_assert_msg(op->method == ops[i].method, "%s: method %s", ops[i].id,
                      gw_method_name(op->method));
        ck_assert_str_eq(op->path, ops[i].path);
    }
    ck_assert_ptr_null(gw_openapi_op(m, "patch-user"));
    ck_assert_ptr_null(gw_openapi_op(m, "Create-User"));
}
END_TEST

START_TEST(test_openapi_op_segments)
{
    const struct gw_op *op = gw_openapi_op(m, "create-user");
    ck_assert_uint_eq(op->nseg, 1);
    ck_assert_str_eq(op->seg[0], "users");
    op = gw_openapi_op(m, "filter-users-by-email");
    ck_assert_uint_eq(op->nseg, 3);
    ck_assert_str_eq(op->seg[2], "filter-by-email");
    op = gw_openapi_op(m, "get-user");
    ck_assert_uint_eq(op->nseg, 2);
    ck_assert_str_eq(op->seg[1], "{userId}");
}
END_TEST

START_TEST(test_openapi_required_scopes)
{
    for (size_t i = 0; i < NOPS; i++) {
        const struct gw_op *op = gw_openapi_op(m, ops[i].id);
        ck_assert_msg(op->scope != NULL, "%s has no scope", ops[i].id);
        ck_assert_msg(strcmp(op->scope, ops[i].scope) == 0, "%s needs %s, not %s", ops[i].id,
                      ops[i].scope, op->scope);
    }
}
END_TEST

START_TEST(test_openapi_credential_kinds)
{
    for (size_t i = 0; i < NOPS; i++) {
        const struct gw_op *op = gw_openapi_op(m, ops[i].id);
        ck_assert_msg(op->cred == ops[i].cred, "%s: cred %d", ops[i].id, (int)op->cred);
    }
}
END_TEST

START_TEST(test_openapi_security_alternatives)
{
    const struct gw_op *op = gw_openapi_op(m, "search-users");
    ck_assert_uint_eq(op->nsec, 2);
    ck_assert_str_eq(op->sec[0].scheme, "Agency-Access");
    ck_assert_uint_eq(op->sec[0].nscopes, 1);
    ck_assert_str_eq(op->sec[0].scopes[0], "users.readonly");
    ck_assert_str_eq(op->sec[1].scheme, "Location-Access");
    op = gw_openapi_op(m, "get-user-by-location");
    ck_assert_uint_eq(op->nsec, 1);
    ck_assert_str_eq(op->sec[0].scheme, "Location-Access");
    ck_assert(op->deprecated);
    ck_assert(!gw_openapi_op(m, "get-user")->deprecated);
}
END_TEST

START_TEST(test_openapi_synthesizes_undeclared_user_id)
{
    static const char *const with_synth[] = {"update-user", "delete-user"};
    for (size_t i = 0; i < 2; i++) {
        const struct gw_op *op = gw_openapi_op(m, with_synth[i]);
        ck_assert_uint_eq(op->nsynth, 1);
        ck_assert_str_eq(op->synth[0], "userId");
        const struct gw_param *p = gw_op_param(op, GW_IN_PATH, "userId");
        ck_assert_msg(p != NULL, "%s lacks userId", with_synth[i]);
        ck_assert(p->required);
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(p->schema, "type")->valuestring,
                         "string");
        ck_assert_ptr_null(gw_op_param(op, GW_IN_QUERY, "userId"));
    }
    /* get-user declares it: nothing synthesized */
    const struct gw_op *op = gw_openapi_op(m, "get-user");
    ck_assert_uint_eq(op->nsynth, 0);
    const struct gw_param *p = gw_op_param(op, GW_IN_PATH, "userId");
    ck_assert_ptr_nonnull(p);
    ck_assert(p->required);
    ck_assert_uint_eq(gw_openapi_op(m, "create-user")->nsynth, 0);
}
END_TEST

START_TEST(test_openapi_parameters)
{
    const struct gw_op *op = gw_openapi_op(m, "search-users");
    ck_assert_uint_eq(op->nparams, 12); /* Version + 11 query parameters */
    const struct gw_param *p = gw_op_param(op, GW_IN_QUERY, "companyId");
    ck_assert_ptr_nonnull(p);
    ck_assert(p->required);
    p = gw_op_param(op, GW_IN_QUERY, "enabled2waySync");
    ck_assert_ptr_nonnull(p);
    ck_assert(!p->required);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(p->schema, "type")->valuestring, "boolean");
    p = gw_op_param(op, GW_IN_HEADER, "Version");
    ck_assert_ptr_nonnull(p);
    ck_assert(p->required);
    ck_assert_ptr_null(gw_op_param(op, GW_IN_QUERY, "Version"));
    ck_assert_ptr_null(gw_op_param(op, GW_IN_QUERY, "companyid"));
    op = gw_openapi_op(m, "get-user-by-location");
    p = gw_op_param(op, GW_IN_QUERY, "locationId");
    ck_assert_ptr_nonnull(p);
    ck_assert(p->required);
}
END_TEST

START_TEST(test_openapi_body_schemas_resolved)
{
    for (size_t i = 0; i < NOPS; i++) {
        const struct gw_op *op = gw_openapi_op(m, ops[i].id);
        if (ops[i].body) {
            ck_assert_msg(op->body_schema != NULL, "%s has no body schema", ops[i].id);
            ck_assert(op->body_required);
            ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(op->body_schema, "$ref"));
            ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(op->body_schema, "type")->valuestring,
                             "object");
        } else {
            ck_assert_msg(op->body_schema == NULL, "%s has a body schema", ops[i].id);
        }
    }
    const cJSON *cs = gw_openapi_op(m, "create-user")->body_schema;
    const cJSON *perm = at(cs, (const char *const[]){"properties", "permissions", NULL});
    ck_assert_ptr_nonnull(perm);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(perm, "$ref"));
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(perm, "properties");
    ck_assert(cJSON_IsObject(pp));
    ck_assert_int_eq(cJSON_GetArraySize(pp), 38);
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(cs, "required");
    ck_assert_int_eq(cJSON_GetArraySize(req), 8);
    const cJSON *fe = gw_openapi_op(m, "filter-users-by-email")->body_schema;
    ck_assert_ptr_nonnull(at(fe, (const char *const[]){"properties", "emails", NULL}));
    const cJSON *up = gw_openapi_op(m, "update-user")->body_schema;
    ck_assert(
        cJSON_IsTrue(at(up, (const char *const[]){"properties", "email", "deprecated", NULL})));
}
END_TEST

static void assert_no_ref(const cJSON *node, int *count)
{
    for (const cJSON *c = node->child; c; c = c->next) {
        (*count)++;
        ck_assert_msg(c->string == NULL || strcmp(c->string, "$ref") != 0,
                      "$ref left in the resolved document: %s",
                      cJSON_IsString(c) ? c->valuestring : "?");
        assert_no_ref(c, count);
    }
}

START_TEST(test_openapi_resolved_document_has_no_ref)
{
    int count = 0;
    assert_no_ref(m->doc, &count);
    ck_assert_int_gt(count, 1000); /* the walk did visit the document */
    /* references into ../common/common-schemas.json were followed to the file beside it */
    const cJSON *s =
        at(m->doc, (const char *const[]){"paths", "/users/", "post", "responses", "400", "content",
                                         "application/json", "schema", "properties", "statusCode",
                                         "type", NULL});
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s->valuestring, "number");
    s = at(m->doc, (const char *const[]){"paths", "/users/search", "get", "responses", "422",
                                         "content", "application/json", "schema", "properties",
                                         "message", "type", NULL});
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s->valuestring, "array");
}
END_TEST

START_TEST(test_openapi_scope_list)
{
    ck_assert_uint_eq(m->nscopes, 189);
    for (size_t i = 1; i < m->nscopes; i++)
        ck_assert_msg(strcmp(m->scopes[i - 1], m->scopes[i]) < 0, "not sorted/unique at %zu: %s %s",
                      i, m->scopes[i - 1], m->scopes[i]);
    ck_assert_str_eq(m->scopes[0], "adPublishing.readonly");
    ck_assert(gw_openapi_has_scope(m, "contacts.write"));
    ck_assert(gw_openapi_has_scope(m, "campaigns.readonly"));
    ck_assert(gw_openapi_has_scope(m, m->scopes[0]));
    ck_assert(gw_openapi_has_scope(m, m->scopes[m->nscopes - 1]));
    ck_assert(!gw_openapi_has_scope(m, "users.readonly"));
    ck_assert(!gw_openapi_has_scope(m, "contacts"));
    ck_assert(!gw_openapi_has_scope(m, "contacts.write "));
    ck_assert(!gw_openapi_has_scope(m, "Contacts.write"));
    ck_assert(!gw_openapi_has_scope(m, ""));
}
END_TEST

START_TEST(test_openapi_permission_flags_in_document_order)
{
    static const char *const names[] = {"campaignsEnabled",
                                        "campaignsReadOnly",
                                        "contactsEnabled",
                                        "workflowsEnabled",
                                        "workflowsReadOnly",
                                        "triggersEnabled",
                                        "funnelsEnabled",
                                        "websitesEnabled",
                                        "opportunitiesEnabled",
                                        "dashboardStatsEnabled",
                                        "bulkRequestsEnabled",
                                        "appointmentsEnabled",
                                        "reviewsEnabled",
                                        "onlineListingsEnabled",
                                        "phoneCallEnabled",
                                        "conversationsEnabled",
                                        "assignedDataOnly",
                                        "adwordsReportingEnabled",
                                        "membershipEnabled",
                                        "facebookAdsReportingEnabled",
                                        "attributionsReportingEnabled",
                                        "settingsEnabled",
                                        "tagsEnabled",
                                        "leadValueEnabled",
                                        "marketingEnabled",
                                        "agentReportingEnabled",
                                        "botService",
                                        "socialPlanner",
                                        "bloggingEnabled",
                                        "invoiceEnabled",
                                        "affiliateManagerEnabled",
                                        "contentAiEnabled",
                                        "refundsEnabled",
                                        "recordPaymentEnabled",
                                        "cancelSubscriptionEnabled",
                                        "paymentsEnabled",
                                        "communitiesEnabled",
                                        "exportPaymentsEnabled"};
    ck_assert_uint_eq(m->nperms, 38);
    size_t ntrue = 0;
    for (size_t i = 0; i < 38; i++) {
        ck_assert_str_eq(m->perms[i].name, names[i]);
        ntrue += m->perms[i].def;
    }
    ck_assert_uint_eq(ntrue, 29);
    for (size_t i = 0; i < 38; i++) {
        if (strcmp(m->perms[i].name, "paymentsEnabled") == 0)
            ck_assert(m->perms[i].def);
        if (strcmp(m->perms[i].name, "campaignsReadOnly") == 0 ||
            strcmp(m->perms[i].name, "assignedDataOnly") == 0 ||
            strcmp(m->perms[i].name, "websitesEnabled") == 0)
            ck_assert(!m->perms[i].def);
    }
}
END_TEST

START_TEST(test_openapi_versions)
{
    ck_assert_uint_eq(m->nversions, 1);
    ck_assert_str_eq(m->versions[0], "2021-07-28");
}
END_TEST

START_TEST(test_openapi_method_names)
{
    static const enum gw_method all[] = {GW_M_GET,   GW_M_POST, GW_M_PUT,    GW_M_DELETE,
                                         GW_M_PATCH, GW_M_HEAD, GW_M_OPTIONS};
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < 7; i++) {
        ck_assert_str_eq(gw_method_name(all[i]), names[i]);
        ck_assert_int_eq(gw_method_from_name(names[i]), all[i]);
    }
    ck_assert_int_eq(gw_method_from_name("get"), 0);
    ck_assert_int_eq(gw_method_from_name("CONNECT"), 0);
    ck_assert_int_eq(gw_method_from_name(""), 0);
    ck_assert_str_eq(gw_method_name(0), "?");
    ck_assert_str_eq(gw_method_name(GW_M_GET | GW_M_POST), "?");
}
END_TEST

/* ---- a newer document ---- */

static void add_scope(cJSON *doc, const char *dto, const char *prop, const char *scope)
{
    cJSON *en = (cJSON *)at(doc, (const char *const[]){"components", "schemas", dto, "properties",
                                                       prop, "items", "enum", NULL});
    ck_assert_msg(cJSON_IsArray(en), "%s.%s has no enum", dto, prop);
    cJSON_AddItemToArray(en, cJSON_CreateString(scope));
}

START_TEST(test_openapi_newer_document_with_extra_scope_loads)
{
    const char *dir = subdir("newer");
    cJSON *doc = read_shipped_tree();
    add_scope(doc, "CreateUserDto", "scopes", "widgets.write");
    add_scope(doc, "CreateUserDto", "scopesAssignedToOnly", "widgets.write");
    add_scope(doc, "UpdateUserDto", "scopes", "widgets.write");
    add_scope(doc, "UpdateUserDto", "scopesAssignedToOnly", "widgets.write");
    write_tree(dir, "users.openapi.json", doc);
    cJSON_Delete(doc);
    copy_file(COMMON, dir, "common-schemas.json");

    char path[256], err[512];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    struct gw_openapi *n = NULL;
    int rc = gw_openapi_load(path, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(n->nscopes, 190);
    ck_assert(gw_openapi_has_scope(n, "widgets.write"));
    ck_assert(gw_openapi_has_scope(n, "contacts.write"));
    for (size_t i = 1; i < n->nscopes; i++)
        ck_assert(strcmp(n->scopes[i - 1], n->scopes[i]) < 0);
    ck_assert_uint_eq(n->nops, 7);
    ck_assert_uint_eq(n->nperms, 38);
    gw_openapi_free(n);
}
END_TEST

START_TEST(test_openapi_scope_in_one_enum_counts)
{
    const char *dir = subdir("oneenum");
    cJSON *doc = read_shipped_tree();
    add_scope(doc, "UpdateUserDto", "scopesAssignedToOnly", "gadgets.readonly");
    write_tree(dir, "users.openapi.json", doc);
    cJSON_Delete(doc);
    copy_file(COMMON, dir, "common-schemas.json");
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    struct gw_openapi *n = NULL;
    ck_assert_msg(gw_openapi_load(path, &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n->nscopes, 190);
    ck_assert(gw_openapi_has_scope(n, "gadgets.readonly"));
    gw_openapi_free(n);
}
END_TEST

/* ---- refused documents ---- */

START_TEST(test_openapi_broken_ref_refused)
{
    const char *dir = subdir("brokenref");
    cJSON *doc = read_shipped_tree();
    cJSON *schema =
        (cJSON *)at(doc, (const char *const[]){"paths", "/users/", "post", "requestBody", "content",
                                               "application/json", "schema", NULL});
    ck_assert_ptr_nonnull(schema);
    cJSON_ReplaceItemInObjectCaseSensitive(schema, "$ref",
                                           cJSON_CreateString("#/components/schemas/NoSuchDto"));
    write_tree(dir, "users.openapi.json", doc);
    cJSON_Delete(doc);
    copy_file(COMMON, dir, "common-schemas.json");
    char path[256];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    expect_refused(path, "$ref \"#/components/schemas/NoSuchDto\" points at nothing");
}
END_TEST

START_TEST(test_openapi_ref_to_missing_file_refused)
{
    const char *dir = subdir("otherfile");
    cJSON *doc = read_shipped_tree();
    cJSON *schema =
        (cJSON *)at(doc, (const char *const[]){"paths", "/users/", "post", "requestBody", "content",
                                               "application/json", "schema", NULL});
    cJSON_ReplaceItemInObjectCaseSensitive(
        schema, "$ref", cJSON_CreateString("../../elsewhere/other.json#/components/x"));
    write_tree(dir, "users.openapi.json", doc);
    cJSON_Delete(doc);
    copy_file(COMMON, dir, "common-schemas.json");
    char path[256], want[512];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    /* only the file name counts: it is looked for beside the document, never elsewhere */
    snprintf(want, sizeof want, "%s/other.json: No such file or directory", dir);
    expect_refused(path, want);
}
END_TEST

START_TEST(test_openapi_missing_common_schemas_refused)
{
    const char *dir = subdir("nocommon");
    copy_file(SHIPPED, dir, "users.openapi.json");
    char path[256], want[512];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    snprintf(want, sizeof want, "%s/common-schemas.json: No such file or directory", dir);
    expect_refused(path, want);
}
END_TEST

START_TEST(test_openapi_invalid_common_schemas_refused)
{
    const char *dir = subdir("badcommon");
    copy_file(SHIPPED, dir, "users.openapi.json");
    write_text(dir, "common-schemas.json", "{\n  \"a\": 1,\n  \"a\": 2\n}\n");
    char path[256], want[512];
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    /* the message points at the repeated member, on line 3 */
    snprintf(want, sizeof want, "%s/common-schemas.json:3: duplicate member \"a\"", dir);
    expect_refused(path, want);
}
END_TEST

START_TEST(test_openapi_non_openapi_json_refused)
{
    const char *dir = subdir("notopenapi");
    char path[256], want[512];
    write_text(dir, "swagger.json", "{\"swagger\": \"2.0\", \"paths\": {}}");
    snprintf(path, sizeof path, "%s/swagger.json", dir);
    snprintf(want, sizeof want, "%s: not an OpenAPI 3 document", path);
    expect_refused(path, want);
    write_text(dir, "array.json", "[1, 2]");
    snprintf(path, sizeof path, "%s/array.json", dir);
    snprintf(want, sizeof want, "%s: not a JSON object", path);
    expect_refused(path, want);
    write_text(dir, "nopaths.json", "{\"openapi\": \"3.0.0\"}");
    snprintf(path, sizeof path, "%s/nopaths.json", dir);
    snprintf(want, sizeof want, "%s: no paths", path);
    expect_refused(path, want);
    write_text(dir, "noops.json", "{\"openapi\": \"3.0.0\", \"paths\": {\"/x\": {}}}");
    snprintf(path, sizeof path, "%s/noops.json", dir);
    snprintf(want, sizeof want, "%s: no operations", path);
    expect_refused(path, want);
}
END_TEST

START_TEST(test_openapi_invalid_json_refused)
{
    const char *dir = subdir("invalid");
    char path[256], want[512];
    write_text(dir, "users.openapi.json", "{\n  \"openapi\": \"3.0.0\",\n}\n");
    snprintf(path, sizeof path, "%s/users.openapi.json", dir);
    snprintf(want, sizeof want, "%s:3: expected a member name", path);
    expect_refused(path, want);
    snprintf(path, sizeof path, "%s/missing.json", dir);
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    expect_refused(path, want);
}
END_TEST

START_TEST(test_openapi_structural_errors_refused)
{
    const char *dir = subdir("structure");
    char path[256];
    write_text(dir, "dupid.json",
               "{\"openapi\": \"3.0.0\", \"paths\": {"
               "\"/a\": {\"get\": {\"operationId\": \"x\"}},"
               "\"/b\": {\"get\": {\"operationId\": \"x\"}}}}");
    snprintf(path, sizeof path, "%s/dupid.json", dir);
    expect_refused(path, "operationId x appears twice");
    write_text(dir, "noid.json", "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": {\"put\": {}}}}");
    snprintf(path, sizeof path, "%s/noid.json", dir);
    expect_refused(path, "PUT /a has no operationId");
    write_text(dir, "cycle.json",
               "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": {\"get\": {\"operationId\": \"a\"}}},"
               "\"components\": {\"schemas\": {\"A\": {\"$ref\": \"#/components/schemas/B\"},"
               "\"B\": {\"$ref\": \"#/components/schemas/A\"}}}}");
    snprintf(path, sizeof path, "%s/cycle.json", dir);
    expect_refused(path, "$ref chain deeper than 32 (cyclic?)");
    write_text(
        dir, "emptyseg.json",
        "{\"openapi\": \"3.0.0\", \"paths\": {\"/a//b\": {\"get\": {\"operationId\": \"a\"}}}}");
    snprintf(path, sizeof path, "%s/emptyseg.json", dir);
    expect_refused(path, "path \"/a//b\" has an empty segment");
    write_text(dir, "nobodyschema.json",
               "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": {\"post\": {\"operationId\": \"a\","
               "\"requestBody\": {\"content\": {\"text/plain\": {}}}}}}}");
    snprintf(path, sizeof path, "%s/nobodyschema.json", dir);
    expect_refused(path, "a: request body without an application/json schema");
}
END_TEST

START_TEST(test_openapi_minimal_document_loads)
{
    /* the tables come from whatever document is given, not from names in C */
    const char *dir = subdir("minimal");
    write_text(dir, "mini.json",
               "{\"openapi\": \"3.1.0\", \"paths\": {\"/things/{thingId}/parts\": {"
               "\"parameters\": [{\"name\": \"thingId\", \"in\": \"path\", \"schema\": "
               "{\"type\": \"string\"}}],"
               "\"get\": {\"operationId\": \"list-parts\","
               "\"parameters\": [{\"name\": \"Version\", \"in\": \"header\", \"required\": true,"
               "\"schema\": {\"type\": \"string\", \"enum\": [\"v1\", \"v2\"]}},"
               "{\"name\": \"c\", \"in\": \"cookie\"}],"
               "\"security\": [{\"Location-Access\": [\"parts.readonly\"]}]}}}}");
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/mini.json", dir);
    struct gw_openapi *n = NULL;
    ck_assert_msg(gw_openapi_load(path, &n, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(n->nops, 1);
    const struct gw_op *op = gw_openapi_op(n, "list-parts");
    ck_assert_ptr_nonnull(op);
    ck_assert_str_eq(op->scope, "parts.readonly");
    /* Location-Access without a locationId query parameter: no credential fits */
    ck_assert_int_eq(op->cred, GW_CRED_NONE);
    ck_assert_uint_eq(op->nparams, 2); /* the cookie parameter is dropped */
    ck_assert_uint_eq(op->nsynth, 0);  /* declared at path level */
    ck_assert_uint_eq(n->nversions, 2);
    ck_assert_str_eq(n->versions[1], "v2");
    ck_assert_uint_eq(n->nscopes, 0);
    ck_assert_uint_eq(n->nperms, 0);
    gw_openapi_free(n);
}
END_TEST

static Suite *openapi_suite(void)
{
    Suite *s = suite_create("openapi");
    TCase *tc = tcase_create("shipped");
    tcase_add_checked_fixture(tc, load_shipped, free_shipped);
    tcase_add_test(tc, test_openapi_default_path_is_the_shipped_document);
    tcase_add_test(tc, test_openapi_shipped_document_has_the_seven_ops);
    tcase_add_test(tc, test_openapi_secret_members_from_the_document);
    tcase_add_test(tc, test_openapi_op_segments);
    tcase_add_test(tc, test_openapi_required_scopes);
    tcase_add_test(tc, test_openapi_credential_kinds);
    tcase_add_test(tc, test_openapi_security_alternatives);
    tcase_add_test(tc, test_openapi_synthesizes_undeclared_user_id);
    tcase_add_test(tc, test_openapi_parameters);
    tcase_add_test(tc, test_openapi_body_schemas_resolved);
    tcase_add_test(tc, test_openapi_resolved_document_has_no_ref);
    tcase_add_test(tc, test_openapi_scope_list);
    tcase_add_test(tc, test_openapi_permission_flags_in_document_order);
    tcase_add_test(tc, test_openapi_versions);
    tcase_add_test(tc, test_openapi_method_names);
    suite_add_tcase(s, tc);
    TCase *td = tcase_create("documents");
    tcase_add_unchecked_fixture(td, make_tmp, remove_tmp);
    tcase_add_test(td, test_openapi_newer_document_with_extra_scope_loads);
    tcase_add_test(td, test_openapi_scope_in_one_enum_counts);
    tcase_add_test(td, test_openapi_broken_ref_refused);
    tcase_add_test(td, test_openapi_ref_to_missing_file_refused);
    tcase_add_test(td, test_openapi_missing_common_schemas_refused);
    tcase_add_test(td, test_openapi_invalid_common_schemas_refused);
    tcase_add_test(td, test_openapi_non_openapi_json_refused);
    tcase_add_test(td, test_openapi_invalid_json_refused);
    tcase_add_test(td, test_openapi_structural_errors_refused);
    tcase_add_test(td, test_openapi_minimal_document_loads);
    suite_add_tcase(s, td);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(openapi_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
