/* Unit tests of the request-schema validator (proxy/schema.c) against SPEC §5 and the contract in
 * schema.h: the bodies of create-user, update-user and filter-users-by-email are checked against
 * the shipped OpenAPI document, and every violation is reported, in the upstream's words, in the
 * schema's property order and then the unknown members in the order sent. Also: the defaults the
 * policy stage reads (gw_schema_default), a newer document with one more scope, and
 * gw_validate_body end to end (415, 413, 400, 422, success).
 *
 * Expected messages are written out here, except the scope enum lists, which are built from the
 * raw document (read with gw_json_parse, not through the model under test). Bodies are written
 * with single quotes for readability; J() turns them into JSON. */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "openapi.h"
#include "schema.h"
#include "validate.h"

#define SHIPPED GW_TEST_DIR "/../proxy/openapi/users.openapi.json"
#define COMMON GW_TEST_DIR "/../proxy/openapi/common-schemas.json"

static struct gw_openapi *m; /* the shipped document, loaded per test */
static cJSON *raw;           /* the shipped document as written (refs unresolved) */
static struct gw_config cfg;
static char *versions[] = {"2021-07-28", NULL};

static cJSON *read_tree(const char *path)
{
    size_t len;
    char *buf = gw_read_file(path, 1 << 24, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    struct gw_json_error e;
    cJSON *doc = gw_json_parse(buf, len, NULL, &e);
    ck_assert_msg(doc != NULL, "%s: %s", path, e.msg);
    free(buf);
    return doc;
}

static void setup(void)
{
    char err[512];
    ck_assert_msg(gw_openapi_load(gw_openapi_default_path(), &m, err, sizeof err) == 0, "%s", err);
    raw = read_tree(SHIPPED);
    memset(&cfg, 0, sizeof cfg);
    cfg.upstream.api_versions = versions;
    cfg.upstream.napi_versions = 1;
    cfg.limits.max_body_bytes = 1 << 16;
    cfg.limits.max_json_depth = 4;
}

static void teardown(void)
{
    gw_openapi_free(m);
    m = NULL;
    cJSON_Delete(raw);
    raw = NULL;
}

static const cJSON *at(const cJSON *node, const char *const *keys)
{
    for (; *keys && node; keys++)
        node = cJSON_GetObjectItemCaseSensitive(node, *keys);
    return node;
}

static const cJSON *schema_of(const struct gw_openapi *model, const char *opid)
{
    const struct gw_op *o = gw_openapi_op(model, opid);
    ck_assert_msg(o != NULL, "no op %s", opid);
    ck_assert_msg(o->body_schema != NULL, "%s has no body schema", opid);
    return o->body_schema;
}

/* ---- bodies ---- */

/* JSON from a text written with ' for " (no test value contains a quote). Static buffer. */
static const char *J(const char *sq)
{
    static char buf[8192];
    size_t n = strlen(sq);
    ck_assert_uint_lt(n, sizeof buf);
    for (size_t i = 0; i <= n; i++)
        buf[i] = sq[i] == '\'' ? '"' : sq[i];
    return buf;
}

static cJSON *P(const char *sq)
{
    const char *text = J(sq);
    struct gw_json_error e;
    cJSON *v = gw_json_parse(text, strlen(text), NULL, &e);
    ck_assert_msg(v != NULL, "test body does not parse: %s (%s)", text, e.msg);
    return v;
}

/* Replaces member name of o in place (keeping its position), or appends it; NULL removes it. */
static cJSON *set(cJSON *o, const char *name, const char *value_sq)
{
    if (value_sq == NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(o, name);
        return o;
    }
    cJSON *v = P(value_sq);
    if (cJSON_GetObjectItemCaseSensitive(o, name))
        cJSON_ReplaceItemInObjectCaseSensitive(o, name, v);
    else
        cJSON_AddItemToObject(o, name, v);
    return o;
}

#define MIN_CREATE                                                                                 \
    "{'companyId':'c1','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"              \
    "'password':'Secret-pass-123!','type':'account','role':'user','locationIds':['l1']}"
#define MIN_FILTER "{'companyId':'c1','emails':'a@example.com,b@example.com'}"

static const char *const create_required[] = {"companyId", "firstName", "lastName", "email",
                                              "password",  "type",      "role",     "locationIds"};

/* A permissions object with every flag of the document, each set to the opposite of its
 * documented default. */
static cJSON *all_permissions(void)
{
    const cJSON *props = at(
        raw, (const char *const[]){"components", "schemas", "PermissionsDto", "properties", NULL});
    ck_assert_ptr_nonnull(props);
    cJSON *p = cJSON_CreateObject();
    const cJSON *f;
    int n = 0;
    cJSON_ArrayForEach(f, props)
    {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(f, "default");
        cJSON_AddBoolToObject(p, f->string, !cJSON_IsTrue(d));
        n++;
    }
    ck_assert_int_eq(n, 38);
    return p;
}

static cJSON *full_create(void)
{
    cJSON *v = P(MIN_CREATE);
    set(v, "locationIds", "['l1','l2']");
    set(v, "phone", "'+15550100'");
    cJSON_AddItemToObject(v, "permissions", all_permissions());
    set(v, "scopes", "['contacts.write','campaigns.readonly','calendars/events.write']");
    set(v, "scopesAssignedToOnly", "['contacts.write']");
    set(v, "profilePhoto", "'https://example.com/a.png'");
    set(v, "twilioPhone", "{'l1':'+15550101','l2':''}");
    set(v, "platformLanguage", "'fr_CA'");
    return v;
}

static cJSON *full_update(void)
{
    cJSON *v = full_create();
    set(v, "email", NULL); /* deprecated on update */
    return v;
}

/* ---- expectations ---- */

/* Checks v (consumed) against the body schema of opid in model and asserts the exact list. */
static void expect_model(const struct gw_openapi *model, const char *opid, cJSON *v,
                         const char *const *want, size_t nw, int line)
{
    char *text = cJSON_PrintUnformatted(v);
    struct gw_msgs out = {0};
    size_t n = gw_schema_check(schema_of(model, opid), v, &out);
    char got[4096];
    size_t g = 0;
    got[0] = '\0';
    for (size_t i = 0; i < out.n && g < sizeof got - 1; i++)
        g += (size_t)snprintf(got + g, sizeof got - g, "\n    [%zu] %.300s", i, out.v[i]);
    ck_assert_msg(n == out.n, "line %d %s %s: returned %zu but appended %zu", line, opid, text, n,
                  out.n);
    ck_assert_msg(out.n == nw, "line %d %s: want %zu messages, got %zu:%s\n  input %.200s", line,
                  opid, nw, out.n, got, text);
    for (size_t i = 0; i < nw; i++)
        ck_assert_msg(strcmp(out.v[i], want[i]) == 0,
                      "line %d %s: message %zu (want %zu chars, got %zu)\n  want %.300s\n  got  "
                      "%.300s\n  input %.200s",
                      line, opid, i, strlen(want[i]), strlen(out.v[i]), want[i], out.v[i], text);
    gw_msgs_free(&out);
    cJSON_free(text);
    cJSON_Delete(v);
}

#define EXPECT_IN(model, opid, v, ...)                                                             \
    do {                                                                                           \
        const char *const w_[] = {__VA_ARGS__};                                                    \
        expect_model((model), (opid), (v), w_, sizeof w_ / sizeof *w_, __LINE__);                  \
    } while (0)
#define EXPECT(opid, v, ...) EXPECT_IN(m, opid, v, __VA_ARGS__)
#define EXPECT_OK_IN(model, opid, v) expect_model((model), (opid), (v), NULL, 0, __LINE__)
#define EXPECT_OK(opid, v) EXPECT_OK_IN(m, opid, v)

/* "<prefix>must be one of the following values: " + the enum at keys in doc, joined with ", ".
 * Caller frees. */
static char *enum_message(const cJSON *doc, const char *prefix, const char *const *keys,
                          size_t want_count)
{
    const cJSON *en = at(doc, keys);
    ck_assert_msg(cJSON_IsArray(en), "no enum");
    ck_assert_uint_eq((size_t)cJSON_GetArraySize(en), want_count);
    size_t cap = 64 + strlen(prefix), len;
    const cJSON *e;
    cJSON_ArrayForEach(e, en) cap += strlen(e->valuestring) + 2;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    len = (size_t)snprintf(s, cap, "%smust be one of the following values: ", prefix);
    bool first = true;
    cJSON_ArrayForEach(e, en)
    {
        len += (size_t)snprintf(s + len, cap - len, "%s%s", first ? "" : ", ", e->valuestring);
        first = false;
    }
    return s;
}

static char *scope_message(const cJSON *doc, const char *dto, const char *prop, size_t count)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "each value in %s ", prop);
    return enum_message(doc, prefix,
                        (const char *const[]){"components", "schemas", dto, "properties", prop,
                                              "items", "enum", NULL},
                        count);
}

static const char *const ops3[] = {"create-user", "update-user", "filter-users-by-email"};

/* A valid body of each op, for adding one fault to. */
static cJSON *base(const char *opid)
{
    if (strcmp(opid, "create-user") == 0)
        return P(MIN_CREATE);
    if (strcmp(opid, "update-user") == 0)
        return P("{}");
    return P(MIN_FILTER);
}

/* ---- valid bodies ---- */

START_TEST(test_schema_create_full_body_passes)
{
    EXPECT_OK("create-user", full_create());
}
END_TEST

START_TEST(test_schema_create_minimal_body_passes)
{
    EXPECT_OK("create-user", P(MIN_CREATE));
}
END_TEST

START_TEST(test_schema_update_empty_body_passes)
{
    EXPECT_OK("update-user", P("{}"));
}
END_TEST

START_TEST(test_schema_update_full_body_passes)
{
    EXPECT_OK("update-user", full_update());
    /* each member alone is fine too: nothing is required on update */
    cJSON *full = full_update();
    const cJSON *f;
    cJSON_ArrayForEach(f, full)
    {
        cJSON *one = cJSON_CreateObject();
        cJSON_AddItemToObject(one, f->string, cJSON_Duplicate(f, true));
        EXPECT_OK("update-user", one);
    }
    cJSON_Delete(full);
}
END_TEST

START_TEST(test_schema_filter_minimal_and_full_pass)
{
    EXPECT_OK("filter-users-by-email", P(MIN_FILTER));
    EXPECT_OK("filter-users-by-email",
              P("{'companyId':'c1','emails':'a@example.com','deleted':true,'skip':'10',"
                "'limit':'50','projection':'all'}"));
    EXPECT_OK("filter-users-by-email",
              P("{'companyId':'c1','emails':'a@example.com','deleted':false,'skip':'0',"
                "'limit':'25','projection':'id,email,firstName'}"));
}
END_TEST

START_TEST(test_schema_optional_empty_string_passes)
{
    /* "should not be empty" belongs to required members only */
    EXPECT_OK("create-user", set(P(MIN_CREATE), "phone", "''"));
    EXPECT_OK("update-user", P("{'firstName':'','companyId':'','password':''}"));
    EXPECT_OK("filter-users-by-email", set(P(MIN_FILTER), "projection", "''"));
}
END_TEST

/* ---- required members ---- */

START_TEST(test_schema_required_member_missing_alone)
{
    for (size_t i = 0; i < sizeof create_required / sizeof *create_required; i++) {
        const char *x = create_required[i];
        char empty[64], type[64];
        snprintf(empty, sizeof empty, "%s should not be empty", x);
        snprintf(type, sizeof type, "%s must be %s", x,
                 strcmp(x, "locationIds") == 0 ? "an array" : "a string");
        EXPECT("create-user", set(P(MIN_CREATE), x, NULL), empty, type);
    }
    EXPECT("filter-users-by-email", set(P(MIN_FILTER), "companyId", NULL),
           "companyId should not be empty", "companyId must be a string");
    EXPECT("filter-users-by-email", set(P(MIN_FILTER), "emails", NULL),
           "emails should not be empty", "emails must be a string");
}
END_TEST

START_TEST(test_schema_all_required_missing_in_property_order)
{
    static const char *const all[] = {
        "companyId should not be empty",   "companyId must be a string",
        "firstName should not be empty",   "firstName must be a string",
        "lastName should not be empty",    "lastName must be a string",
        "email should not be empty",       "email must be a string",
        "password should not be empty",    "password must be a string",
        "type should not be empty",        "type must be a string",
        "role should not be empty",        "role must be a string",
        "locationIds should not be empty", "locationIds must be an array"};
    expect_model(m, "create-user", P("{}"), all, 16, __LINE__);
    /* optional members sent do not change it */
    expect_model(m, "create-user", P("{'platformLanguage':'de','phone':'+1'}"), all, 16, __LINE__);
    EXPECT("filter-users-by-email", P("{}"), "companyId should not be empty",
           "companyId must be a string", "emails should not be empty", "emails must be a string");
    EXPECT("filter-users-by-email", P("{'deleted':true}"), "companyId should not be empty",
           "companyId must be a string", "emails should not be empty", "emails must be a string");
}
END_TEST

START_TEST(test_schema_required_string_empty)
{
    for (size_t i = 0; i < 7; i++) { /* the required strings of create-user */
        char want[64];
        snprintf(want, sizeof want, "%s should not be empty", create_required[i]);
        EXPECT("create-user", set(P(MIN_CREATE), create_required[i], "''"), want);
    }
    EXPECT("filter-users-by-email", set(P(MIN_FILTER), "companyId", "''"),
           "companyId should not be empty");
    EXPECT("filter-users-by-email", set(P(MIN_FILTER), "emails", "''"),
           "emails should not be empty");
}
END_TEST

/* ---- types ---- */

START_TEST(test_schema_string_given_other_types)
{
    static const char *const bad[] = {"5",      "0",  "-1.5", "true",       "false",
                                      "['c1']", "[]", "{}",   "{'id':'c1'}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        EXPECT("create-user", set(P(MIN_CREATE), "companyId", bad[i]),
               "companyId must be a string");
        EXPECT("create-user", set(P(MIN_CREATE), "password", bad[i]), "password must be a string");
        EXPECT("update-user", set(P("{}"), "companyId", bad[i]), "companyId must be a string");
        EXPECT("update-user", set(P("{}"), "profilePhoto", bad[i]),
               "profilePhoto must be a string");
        EXPECT("filter-users-by-email", set(P(MIN_FILTER), "emails", bad[i]),
               "emails must be a string");
        EXPECT("filter-users-by-email", set(P(MIN_FILTER), "skip", bad[i]),
               "skip must be a string");
    }
    /* skip and limit are strings, not numbers */
    EXPECT("filter-users-by-email", set(set(P(MIN_FILTER), "skip", "0"), "limit", "25"),
           "skip must be a string", "limit must be a string");
}
END_TEST

START_TEST(test_schema_null_refused_for_optional_members)
{
    EXPECT("create-user", set(P(MIN_CREATE), "phone", "null"), "phone must be a string");
    EXPECT("create-user", set(P(MIN_CREATE), "permissions", "null"),
           "permissions must be an object");
    EXPECT("create-user", set(P(MIN_CREATE), "scopes", "null"), "scopes must be an array");
    EXPECT("create-user", set(P(MIN_CREATE), "twilioPhone", "null"),
           "twilioPhone must be an object");
    EXPECT("update-user", P("{'firstName':null}"), "firstName must be a string");
    EXPECT("update-user", P("{'locationIds':null}"), "locationIds must be an array");
    EXPECT("update-user", P("{'scopesAssignedToOnly':null}"),
           "scopesAssignedToOnly must be an array");
    EXPECT("filter-users-by-email", set(P(MIN_FILTER), "projection", "null"),
           "projection must be a string");
    EXPECT("filter-users-by-email", set(P(MIN_FILTER), "deleted", "null"),
           "deleted must be a boolean value");
}
END_TEST

START_TEST(test_schema_role_array_is_not_a_string)
{
    EXPECT("create-user", set(P(MIN_CREATE), "role", "['admin']"), "role must be a string");
    EXPECT("update-user", P("{'role':['admin']}"), "role must be a string");
    EXPECT("update-user", P("{'type':['agency']}"), "type must be a string");
}
END_TEST

START_TEST(test_schema_permission_flag_not_boolean)
{
    static const char *const bad[] = {"1", "0", "'true'", "null", "[true]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char perm[64];
        snprintf(perm, sizeof perm, "{'paymentsEnabled':%s}", bad[i]);
        EXPECT("create-user", set(P(MIN_CREATE), "permissions", perm),
               "permissions.paymentsEnabled must be a boolean value");
        EXPECT("update-user", set(P("{}"), "permissions", perm),
               "permissions.paymentsEnabled must be a boolean value");
    }
    /* valid flags beside it change nothing */
    EXPECT("update-user",
           P("{'permissions':{'campaignsEnabled':true,'paymentsEnabled':1,'botService':false}}"),
           "permissions.paymentsEnabled must be a boolean value");
    EXPECT_OK("update-user", P("{'permissions':{}}"));
}
END_TEST

START_TEST(test_schema_permissions_not_an_object)
{
    static const char *const bad[] = {"true", "false", "[]", "[{'paymentsEnabled':true}]",
                                      "'x'",  "5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        EXPECT("create-user", set(P(MIN_CREATE), "permissions", bad[i]),
               "permissions must be an object");
        EXPECT("update-user", set(P("{}"), "permissions", bad[i]), "permissions must be an object");
    }
}
END_TEST

START_TEST(test_schema_location_ids_not_an_array)
{
    static const char *const bad[] = {"'l1'", "'l1,l2'", "{'0':'l1'}", "1", "true"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        EXPECT("create-user", set(P(MIN_CREATE), "locationIds", bad[i]),
               "locationIds must be an array");
        EXPECT("update-user", set(P("{}"), "locationIds", bad[i]), "locationIds must be an array");
    }
}
END_TEST

START_TEST(test_schema_location_ids_element_not_a_string)
{
    static const char *const bad[] = {"['l1',5]", "[5]",       "[null]",
                                      "[['l1']]", "['l1',{}]", "[true,'l2']"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        EXPECT("create-user", set(P(MIN_CREATE), "locationIds", bad[i]),
               "each value in locationIds must be a string");
        EXPECT("update-user", set(P("{}"), "locationIds", bad[i]),
               "each value in locationIds must be a string");
    }
    EXPECT_OK("update-user", P("{'locationIds':[]}"));
    EXPECT_OK("update-user", P("{'locationIds':['a','b','c']}"));
}
END_TEST

START_TEST(test_schema_filter_deleted_not_boolean)
{
    static const char *const bad[] = {"'false'", "'true'", "0", "1", "[]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        EXPECT("filter-users-by-email", set(P(MIN_FILTER), "deleted", bad[i]),
               "deleted must be a boolean value");
}
END_TEST

/* ---- enums ---- */

START_TEST(test_schema_platform_language_not_in_enum)
{
    static const char *const want = "platformLanguage must be one of the following values: en_US, "
                                    "es, fr_CA, fr_FR, nl, de, pt_PT, pt_BR, it, sv, da, fi, no";
    static const char *const bad[] = {"'xx'", "'en_us'", "'EN_US'", "'en-US'",
                                      "'en'", "''",      "' no'"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        EXPECT("create-user", set(P(MIN_CREATE), "platformLanguage", bad[i]), want);
        EXPECT("update-user", set(P("{}"), "platformLanguage", bad[i]), want);
    }
    static const char *const ok[] = {"en_US", "es", "fr_CA", "fr_FR", "nl", "de", "pt_PT",
                                     "pt_BR", "it", "sv",    "da",    "fi", "no"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char v[16];
        snprintf(v, sizeof v, "'%s'", ok[i]);
        EXPECT_OK("create-user", set(P(MIN_CREATE), "platformLanguage", v));
        EXPECT_OK("update-user", set(P("{}"), "platformLanguage", v));
    }
}
END_TEST

START_TEST(test_schema_scopes_unknown_value)
{
    static const char *const dtos[] = {"CreateUserDto", "UpdateUserDto"};
    static const char *const props[] = {"scopes", "scopesAssignedToOnly"};
    for (size_t d = 0; d < 2; d++)
        for (size_t p = 0; p < 2; p++) {
            const char *opid = d == 0 ? "create-user" : "update-user";
            char *want = scope_message(raw, dtos[d], props[p], 189);
            EXPECT(opid, set(base(opid), props[p], "['contacts.write','users.readonly']"), want);
            EXPECT(opid, set(base(opid), props[p], "['Contacts.write']"), want);
            EXPECT(opid, set(base(opid), props[p], "['']"), want);
            EXPECT(opid, set(base(opid), props[p], "['contacts.write ']"), want);
            free(want);
        }
    /* the document's order, not a sorted one: the list starts with campaigns.readonly */
    char *want = scope_message(raw, "CreateUserDto", "scopes", 189);
    ck_assert_ptr_nonnull(strstr(want, "values: campaigns.readonly, campaigns.write, "));
    free(want);
}
END_TEST

START_TEST(test_schema_scopes_valid_list_passes)
{
    const cJSON *en = at(raw, (const char *const[]){"components", "schemas", "CreateUserDto",
                                                    "properties", "scopes", "items", "enum", NULL});
    ck_assert(cJSON_IsArray(en));
    /* every scope the document lists, all at once */
    cJSON *body = P(MIN_CREATE);
    cJSON_AddItemToObject(body, "scopes", cJSON_Duplicate(en, true));
    cJSON_AddItemToObject(body, "scopesAssignedToOnly", cJSON_Duplicate(en, true));
    EXPECT_OK("create-user", body);
    EXPECT_OK("update-user", P("{'scopes':['contacts.write','locations/tags.readonly'],"
                               "'scopesAssignedToOnly':['locations/tags.readonly']}"));
}
END_TEST

START_TEST(test_schema_scopes_empty_array_passes)
{
    EXPECT_OK("create-user", set(set(P(MIN_CREATE), "scopes", "[]"), "scopesAssignedToOnly", "[]"));
    EXPECT_OK("update-user", P("{'scopes':[],'scopesAssignedToOnly':[]}"));
}
END_TEST

START_TEST(test_schema_scopes_not_an_array)
{
    EXPECT("create-user", set(P(MIN_CREATE), "scopes", "'contacts.write'"),
           "scopes must be an array");
    EXPECT("update-user", P("{'scopesAssignedToOnly':{'contacts.write':true}}"),
           "scopesAssignedToOnly must be an array");
}
END_TEST

/* ---- unknown and deprecated members ---- */

START_TEST(test_schema_unknown_member_top_level)
{
    for (size_t i = 0; i < 3; i++) {
        EXPECT(ops3[i], set(base(ops3[i]), "isAdmin", "true"), "property isAdmin should not exist");
        /* whatever its value, null included */
        EXPECT(ops3[i], set(base(ops3[i]), "isAdmin", "null"), "property isAdmin should not exist");
        /* names are case-sensitive */
        EXPECT(ops3[i], set(base(ops3[i]), "PlatformLanguage", "'de'"),
               "property PlatformLanguage should not exist");
        /* a member of another op's schema is unknown here */
        EXPECT(ops3[i], set(base(ops3[i]), "users", "[]"), "property users should not exist");
    }
    EXPECT("filter-users-by-email", set(P(MIN_FILTER), "locationIds", "['l1']"),
           "property locationIds should not exist");
    EXPECT("update-user", P("{'emailChangeOTP':'123456'}"),
           "property emailChangeOTP should not exist");
    /* a name that looks like a format is printed as it is */
    EXPECT("update-user", P("{'a%s%n%d':1}"), "property a%s%n%d should not exist");
}
END_TEST

/* The name in a message is the member's whole name, however long (the body cap is the only
 * limit on it). */
START_TEST(test_schema_long_member_names_not_truncated)
{
    char name[1201], body[1300], want[1300];
    memset(name, 'k', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    snprintf(body, sizeof body, "{'%s':1}", name);
    snprintf(want, sizeof want, "property %s should not exist", name);
    EXPECT("update-user", P(body), want);
    snprintf(body, sizeof body, "{'permissions':{'%s':true}}", name);
    snprintf(want, sizeof want, "property permissions.%s should not exist", name);
    EXPECT("update-user", P(body), want);
    snprintf(body, sizeof body, "{'twilioPhone':{'%s':1}}", name);
    snprintf(want, sizeof want, "twilioPhone.%s must be a string", name);
    EXPECT("update-user", P(body), want);
}
END_TEST

START_TEST(test_schema_unknown_member_nested)
{
    EXPECT("create-user", set(P(MIN_CREATE), "permissions", "{'superUser':true}"),
           "property permissions.superUser should not exist");
    EXPECT("update-user", P("{'permissions':{'paymentsEnabled':true,'superUser':true}}"),
           "property permissions.superUser should not exist");
    EXPECT("update-user", P("{'permissions':{'PaymentsEnabled':true}}"),
           "property permissions.PaymentsEnabled should not exist");
}
END_TEST

START_TEST(test_schema_unknown_members_keep_sent_order)
{
    cJSON *v = P(MIN_CREATE);
    set(v, "zeta", "1");
    set(v, "alpha", "2");
    set(v, "isAdmin", "true");
    EXPECT("create-user", v, "property zeta should not exist", "property alpha should not exist",
           "property isAdmin should not exist");
    /* unknown members come after the declared members' messages, even when sent first */
    EXPECT("update-user", P("{'zz':1,'role':5,'aa':2,'firstName':false}"),
           "firstName must be a string", "role must be a string", "property zz should not exist",
           "property aa should not exist");
    EXPECT("update-user", P("{'permissions':{'y':true,'x':true}}"),
           "property permissions.y should not exist", "property permissions.x should not exist");
}
END_TEST

START_TEST(test_schema_update_deprecated_email_refused)
{
    EXPECT("update-user", P("{'email':'new@example.com'}"), "property email should not exist");
    EXPECT("update-user", P("{'firstName':'Ann','email':'new@example.com','role':'admin'}"),
           "property email should not exist");
    /* create-user requires it */
    EXPECT_OK("create-user", P(MIN_CREATE));
}
END_TEST

/* schema.h: a deprecated member is a declared one, so its message comes in property order
 * (email is the third property of UpdateUserDto), before the unknown members. */
START_TEST(test_schema_deprecated_member_in_property_order)
{
    EXPECT("update-user", P("{'isAdmin':1,'role':7,'email':'new@example.com','firstName':5}"),
           "firstName must be a string", "property email should not exist", "role must be a string",
           "property isAdmin should not exist");
}
END_TEST

/* ---- additionalProperties ---- */

START_TEST(test_schema_twilio_phone_map)
{
    EXPECT_OK("create-user", set(P(MIN_CREATE), "twilioPhone", "{'loc1':'+1555'}"));
    EXPECT_OK("update-user", P("{'twilioPhone':{}}"));
    EXPECT_OK("update-user", P("{'twilioPhone':{'loc1':'','any key at all':'+1555'}}"));
    EXPECT("create-user", set(P(MIN_CREATE), "twilioPhone", "{'loc1':5}"),
           "twilioPhone.loc1 must be a string");
    EXPECT("update-user", P("{'twilioPhone':{'loc1':'+1','loc2':true,'loc3':null}}"),
           "twilioPhone.loc2 must be a string", "twilioPhone.loc3 must be a string");
    EXPECT("update-user", P("{'twilioPhone':'+1555'}"), "twilioPhone must be an object");
    EXPECT("update-user", P("{'twilioPhone':['+1555']}"), "twilioPhone must be an object");
}
END_TEST

/* ---- several violations ---- */

START_TEST(test_schema_every_violation_reported_together)
{
    /* sent in another order than the schema's */
    cJSON *v =
        P("{'isAdmin':true,'platformLanguage':'xx','permissions':{'paymentsEnabled':'yes'}}");
    cJSON *min = P(MIN_CREATE);
    const cJSON *f;
    cJSON_ArrayForEach(f, min) cJSON_AddItemToObject(v, f->string, cJSON_Duplicate(f, true));
    cJSON_Delete(min);
    set(v, "companyId", "5");
    EXPECT("create-user", v, "companyId must be a string",
           "permissions.paymentsEnabled must be a boolean value",
           "platformLanguage must be one of the following values: en_US, es, fr_CA, fr_FR, nl, "
           "de, pt_PT, pt_BR, it, sv, da, fi, no",
           "property isAdmin should not exist");

    EXPECT("filter-users-by-email", P("{'x':1,'limit':25,'emails':5,'deleted':'no'}"),
           "companyId should not be empty", "companyId must be a string", "emails must be a string",
           "deleted must be a boolean value", "limit must be a string",
           "property x should not exist");

    char *sc = scope_message(raw, "UpdateUserDto", "scopes", 189);
    EXPECT("update-user",
           P("{'scopes':['nope'],'locationIds':'l1','email':'e@x.y','lastName':[],'q':0}"),
           "lastName must be a string", "property email should not exist",
           "locationIds must be an array", sc, "property q should not exist");
    free(sc);
}
END_TEST

/* A nested object's messages (its properties, then its unknown members) take its own place in
 * the parent's property order. */
START_TEST(test_schema_nested_messages_in_the_parents_property_slot)
{
    cJSON *v = P(MIN_CREATE);
    set(v, "companyId", "5");
    set(v, "platformLanguage", "'xx'");
    set(v, "permissions", "{'superUser':true,'paymentsEnabled':'yes','campaignsEnabled':0}");
    set(v, "twilioPhone", "{'l1':1}");
    EXPECT("create-user", v, "companyId must be a string",
           "permissions.campaignsEnabled must be a boolean value",
           "permissions.paymentsEnabled must be a boolean value",
           "property permissions.superUser should not exist", "twilioPhone.l1 must be a string",
           "platformLanguage must be one of the following values: en_US, es, fr_CA, fr_FR, nl, "
           "de, pt_PT, pt_BR, it, sv, da, fi, no");
}
END_TEST

START_TEST(test_schema_check_appends_and_counts)
{
    struct gw_msgs out = {0};
    gw_msgs_add(&out, "earlier");
    cJSON *v = P("{'role':1,'x':2}");
    ck_assert_uint_eq(gw_schema_check(schema_of(m, "update-user"), v, &out), 2);
    ck_assert_uint_eq(out.n, 3);
    ck_assert_str_eq(out.v[0], "earlier");
    ck_assert_str_eq(out.v[1], "role must be a string");
    ck_assert_str_eq(out.v[2], "property x should not exist");
    /* a valid value appends nothing */
    cJSON *ok = P("{'role':'admin'}");
    ck_assert_uint_eq(gw_schema_check(schema_of(m, "update-user"), ok, &out), 0);
    ck_assert_uint_eq(out.n, 3);
    cJSON_Delete(ok);
    cJSON_Delete(v);
    gw_msgs_free(&out);
}
END_TEST

START_TEST(test_schema_defaults_are_not_applied)
{
    cJSON *v = P(MIN_FILTER);
    cJSON *copy = cJSON_Duplicate(v, true);
    struct gw_msgs out = {0};
    ck_assert_uint_eq(gw_schema_check(schema_of(m, "filter-users-by-email"), v, &out), 0);
    ck_assert(cJSON_Compare(v, copy, true));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(v, "deleted"));
    cJSON_Delete(v);
    cJSON_Delete(copy);
    v = set(P(MIN_CREATE), "permissions", "{'paymentsEnabled':false}");
    copy = cJSON_Duplicate(v, true);
    ck_assert_uint_eq(gw_schema_check(schema_of(m, "create-user"), v, &out), 0);
    ck_assert(cJSON_Compare(v, copy, true));
    ck_assert_uint_eq(out.n, 0);
    cJSON_Delete(v);
    cJSON_Delete(copy);
}
END_TEST

/* ---- defaults ---- */

START_TEST(test_schema_default_of_permission_flags)
{
    const cJSON *perm = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(schema_of(m, "create-user"), "properties"), "permissions");
    ck_assert_ptr_nonnull(perm);
    const cJSON *d = gw_schema_default(perm, "paymentsEnabled");
    ck_assert_ptr_nonnull(d);
    ck_assert(cJSON_IsTrue(d));
    d = gw_schema_default(perm, "campaignsReadOnly");
    ck_assert_ptr_nonnull(d);
    ck_assert(cJSON_IsFalse(d));
    ck_assert_ptr_null(gw_schema_default(perm, "superUser"));
    ck_assert_ptr_null(gw_schema_default(perm, ""));
    ck_assert_ptr_null(gw_schema_default(perm, "PaymentsEnabled"));
    /* every flag agrees with the model's table (FACTS: 38 flags) */
    ck_assert_uint_eq(m->nperms, 38);
    for (size_t i = 0; i < m->nperms; i++) {
        d = gw_schema_default(perm, m->perms[i].name);
        ck_assert_msg(cJSON_IsBool(d), "%s has no boolean default", m->perms[i].name);
        ck_assert_msg(cJSON_IsTrue(d) == m->perms[i].def, "%s", m->perms[i].name);
    }
    /* the update schema's permissions are the same DTO */
    perm = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(schema_of(m, "update-user"), "properties"), "permissions");
    ck_assert(cJSON_IsFalse(gw_schema_default(perm, "websitesEnabled")));
    ck_assert(cJSON_IsTrue(gw_schema_default(perm, "exportPaymentsEnabled")));
}
END_TEST

START_TEST(test_schema_default_absent_or_documented)
{
    const cJSON *create = schema_of(m, "create-user");
    ck_assert_ptr_null(gw_schema_default(create, "phone"));
    ck_assert_ptr_null(gw_schema_default(create, "companyId"));
    ck_assert_ptr_null(gw_schema_default(create, "permissions"));
    ck_assert_ptr_null(gw_schema_default(create, "noSuchMember"));
    const cJSON *filter = schema_of(m, "filter-users-by-email");
    ck_assert_ptr_null(gw_schema_default(filter, "companyId"));
    ck_assert_ptr_null(gw_schema_default(filter, "projection"));
    ck_assert(cJSON_IsFalse(gw_schema_default(filter, "deleted")));
    const cJSON *d = gw_schema_default(filter, "skip");
    ck_assert(cJSON_IsString(d));
    ck_assert_str_eq(d->valuestring, "0");
    d = gw_schema_default(filter, "limit");
    ck_assert(cJSON_IsString(d));
    ck_assert_str_eq(d->valuestring, "25");
}
END_TEST

/* ---- a newer document ---- */

static char g_tmp[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

/* Appends scope to every "scopes"/"scopesAssignedToOnly" items enum in the tree; returns how many
 * enums it extended. */
static int add_scope_everywhere(cJSON *node, const char *scope)
{
    int n = 0;
    cJSON *c;
    cJSON_ArrayForEach(c, node)
    {
        if (c->string &&
            (strcmp(c->string, "scopes") == 0 || strcmp(c->string, "scopesAssignedToOnly") == 0)) {
            cJSON *en = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(c, "items"), "enum");
            if (cJSON_IsArray(en)) {
                cJSON_AddItemToArray(en, cJSON_CreateString(scope));
                n++;
            }
        }
        if (cJSON_IsObject(c) || cJSON_IsArray(c))
            n += add_scope_everywhere(c, scope);
    }
    return n;
}

/* Loads a copy of the shipped document with "newscope.write" in every scope enum. */
static struct gw_openapi *load_newer(cJSON **tree)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/gwschema.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_tmp));
    cJSON *doc = read_tree(SHIPPED);
    ck_assert_int_eq(add_scope_everywhere(doc, "newscope.write"), 4);
    char path[128], err[512];
    char *text = cJSON_Print(doc);
    snprintf(path, sizeof path, "%s/users.openapi.json", g_tmp);
    write_text(path, text);
    cJSON_free(text);
    size_t len;
    char *common = gw_read_file(COMMON, 1 << 24, &len);
    ck_assert_ptr_nonnull(common);
    char cpath[128];
    snprintf(cpath, sizeof cpath, "%s/common-schemas.json", g_tmp);
    write_text(cpath, common);
    free(common);
    struct gw_openapi *n = NULL;
    ck_assert_msg(gw_openapi_load(path, &n, err, sizeof err) == 0, "%s", err);
    *tree = doc;
    return n;
}

START_TEST(test_schema_newer_document_scope_accepted)
{
    cJSON *tree;
    struct gw_openapi *n = load_newer(&tree);
    nftw(g_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);

    EXPECT_OK_IN(n, "create-user", set(P(MIN_CREATE), "scopes", "['newscope.write']"));
    EXPECT_OK_IN(n, "create-user",
                 set(P(MIN_CREATE), "scopesAssignedToOnly", "['contacts.write','newscope.write']"));
    EXPECT_OK_IN(n, "update-user", P("{'scopes':['newscope.write']}"));

    /* the shipped model refuses it */
    char *old = scope_message(raw, "CreateUserDto", "scopes", 189);
    EXPECT("create-user", set(P(MIN_CREATE), "scopes", "['newscope.write']"), old);
    free(old);

    /* and the newer model's message lists the new scope, last */
    char *neu = scope_message(tree, "CreateUserDto", "scopes", 190);
    size_t nl = strlen(neu);
    ck_assert_str_eq(neu + nl - strlen(", newscope.write"), ", newscope.write");
    EXPECT_IN(n, "create-user", set(P(MIN_CREATE), "scopes", "['oldscope.write']"), neu);
    free(neu);

    gw_openapi_free(n);
    cJSON_Delete(tree);
}
END_TEST

/* ---- hand-written schemas: the parts of the subset the Users document does not use ---- */

static void expect_hand(const char *schema_sq, const char *value_sq, const char *const *want,
                        size_t nw, int line)
{
    cJSON *schema = P(schema_sq);
    cJSON *v = P(value_sq);
    struct gw_msgs out = {0};
    size_t n = gw_schema_check(schema, v, &out);
    ck_assert_msg(n == out.n && n == nw, "line %d: want %zu messages, got %zu (first: %s)", line,
                  nw, out.n, out.n ? out.v[0] : "-");
    for (size_t i = 0; i < nw; i++)
        ck_assert_msg(strcmp(out.v[i], want[i]) == 0, "line %d [%zu]: want '%s' got '%s'", line, i,
                      want[i], out.v[i]);
    gw_msgs_free(&out);
    cJSON_Delete(v);
    cJSON_Delete(schema);
}

#define HAND(schema, value, ...)                                                                   \
    do {                                                                                           \
        const char *const w_[] = {__VA_ARGS__};                                                    \
        expect_hand((schema), (value), w_, sizeof w_ / sizeof *w_, __LINE__);                      \
    } while (0)
#define HAND_OK(schema, value) expect_hand((schema), (value), NULL, 0, __LINE__)

START_TEST(test_schema_nullable_accepts_null)
{
    const char *s = "{'type':'object','properties':{'a':{'type':'string','nullable':true},"
                    "'b':{'type':'string'},'c':{'type':'boolean','nullable':true}}}";
    HAND_OK(s, "{'a':null,'c':null}");
    HAND(s, "{'a':null,'b':null,'c':null}", "b must be a string");
    HAND(s, "{'a':1,'c':'x'}", "a must be a string", "c must be a boolean value");
}
END_TEST

START_TEST(test_schema_number_and_integer_types)
{
    const char *s = "{'type':'object','properties':{'n':{'type':'number'},'i':{'type':'integer'}}}";
    HAND_OK(s, "{'n':1.5,'i':-3}");
    HAND_OK(s, "{'n':0,'i':0}");
    HAND(s, "{'n':'1','i':1.5}", "n must be a number conforming to the specified constraints",
         "i must be an integer number");
    HAND(s, "{'n':true,'i':'2'}", "n must be a number conforming to the specified constraints",
         "i must be an integer number");
    HAND(s, "{'n':null,'i':null}", "n must be a number conforming to the specified constraints",
         "i must be an integer number");
}
END_TEST

START_TEST(test_schema_free_form_object_accepts_any_members)
{
    HAND_OK("{'type':'object'}", "{'x':1,'y':{'z':[2]}}");
    const char *s = "{'type':'object','properties':{'o':{'type':'object'}}}";
    HAND_OK(s, "{'o':{'anything':1,'else':null}}");
    HAND(s, "{'o':[]}", "o must be an object");
    HAND(s, "{'o':{},'p':1}", "property p should not exist");
}
END_TEST

START_TEST(test_schema_deep_names_and_nested_required)
{
    const char *s = "{'type':'object','properties':{'a':{'type':'object','required':['r'],"
                    "'properties':{'r':{'type':'string'},'b':{'type':'object','properties':{"
                    "'c':{'type':'string'}}}}}}}";
    HAND_OK(s, "{'a':{'r':'x','b':{'c':'y'}}}");
    HAND(s, "{'a':{'r':'x','b':{'c':1,'d':2}}}", "a.b.c must be a string",
         "property a.b.d should not exist");
    HAND(s, "{'a':{}}", "a.r should not be empty", "a.r must be a string");
    HAND(s, "{'a':{'r':''}}", "a.r should not be empty");
    HAND_OK(s, "{}");
}
END_TEST

/* ---- gw_validate_body end to end ---- */

struct vres {
    int rc;
    cJSON *body;
    struct gw_msgs msgs;
    enum gw_reply_kind kind;
    char msg[256];
};

static struct vres vbody(const char *opid, const char *ct, const char *data, size_t len)
{
    struct vres r = {.rc = 99, .body = (cJSON *)1, .kind = GW_R_KINDS};
    const struct gw_op *o = gw_openapi_op(m, opid);
    ck_assert_ptr_nonnull(o);
    r.rc = gw_validate_body(&cfg, o, ct, data, len, &r.body, &r.msgs, &r.kind, r.msg, sizeof r.msg);
    return r;
}

/* Refused with kind and (for 400/415) the message; no schema message collected. */
static void expect_refused(const char *opid, const char *ct, const char *data, size_t len,
                           enum gw_reply_kind kind, const char *msg, int line)
{
    struct vres r = vbody(opid, ct, data, len);
    ck_assert_msg(r.rc == -1, "line %d: accepted (%d)", line, r.rc);
    ck_assert_msg(r.body == NULL, "line %d: body not NULL", line);
    ck_assert_msg(r.kind == kind, "line %d: kind %d, want %d (msg %s, first of %zu msgs: %s)", line,
                  (int)r.kind, (int)kind, r.msg, r.msgs.n, r.msgs.n ? r.msgs.v[0] : "-");
    if (msg)
        ck_assert_msg(strcmp(r.msg, msg) == 0, "line %d:\n  want %s\n  got  %s", line, msg, r.msg);
    ck_assert_msg(r.msgs.n == 0, "line %d: %zu schema messages (first %s)", line, r.msgs.n,
                  r.msgs.n ? r.msgs.v[0] : "-");
    gw_msgs_free(&r.msgs);
}

#define REFUSED(opid, data, kind, msg)                                                             \
    expect_refused((opid), "application/json", (data), strlen(data), (kind), (msg), __LINE__)

static size_t last_index(const char *hay, const char *needle)
{
    const char *last = NULL;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        last = p;
    ck_assert_ptr_nonnull(last);
    return (size_t)(last - hay);
}

START_TEST(test_validate_body_schema_violations_are_422)
{
    const char *data = J("{'companyId':5,'emails':'a@b.c','deleted':'false','isAdmin':true}");
    struct vres r = vbody("filter-users-by-email", "application/json", data, strlen(data));
    ck_assert_int_eq(r.rc, -1);
    ck_assert_int_eq(r.kind, GW_R_UNPROCESSABLE);
    ck_assert_ptr_null(r.body);
    ck_assert_uint_eq(r.msgs.n, 3);
    ck_assert_str_eq(r.msgs.v[0], "companyId must be a string");
    ck_assert_str_eq(r.msgs.v[1], "deleted must be a boolean value");
    ck_assert_str_eq(r.msgs.v[2], "property isAdmin should not exist");
    gw_msgs_free(&r.msgs);

    data = J("{'email':'new@example.com'}");
    r = vbody("update-user", "application/json; charset=utf-8", data, strlen(data));
    ck_assert_int_eq(r.rc, -1);
    ck_assert_int_eq(r.kind, GW_R_UNPROCESSABLE);
    ck_assert_ptr_null(r.body);
    ck_assert_uint_eq(r.msgs.n, 1);
    ck_assert_str_eq(r.msgs.v[0], "property email should not exist");
    gw_msgs_free(&r.msgs);

    data = J("{}");
    r = vbody("create-user", "application/json", data, strlen(data));
    ck_assert_int_eq(r.rc, -1);
    ck_assert_int_eq(r.kind, GW_R_UNPROCESSABLE);
    ck_assert_uint_eq(r.msgs.n, 16);
    ck_assert_str_eq(r.msgs.v[0], "companyId should not be empty");
    ck_assert_str_eq(r.msgs.v[15], "locationIds must be an array");
    gw_msgs_free(&r.msgs);
}
END_TEST

START_TEST(test_validate_body_valid_returns_the_object)
{
    cJSON *full = full_create();
    char *text = cJSON_PrintUnformatted(full);
    struct vres r = vbody("create-user", "application/json", text, strlen(text));
    ck_assert_msg(r.rc == 0, "refused: %s / %s", r.msg, r.msgs.n ? r.msgs.v[0] : "-");
    ck_assert_uint_eq(r.msgs.n, 0);
    ck_assert_ptr_nonnull(r.body);
    ck_assert(cJSON_Compare(r.body, full, true)); /* as sent: no defaults added */
    cJSON_Delete(r.body);
    cJSON_free(text);
    cJSON_Delete(full);

    r = vbody("update-user", "application/json", "{}", 2);
    ck_assert_int_eq(r.rc, 0);
    ck_assert(cJSON_IsObject(r.body));
    ck_assert_ptr_null(r.body->child);
    ck_assert_uint_eq(r.msgs.n, 0);
    cJSON_Delete(r.body);

    const char *data = J(MIN_FILTER);
    r = vbody("filter-users-by-email", "application/json", data, strlen(data));
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.msgs.n, 0);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(r.body, "deleted"));
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(r.body, "companyId")->valuestring, "c1");
    cJSON_Delete(r.body);
}
END_TEST

START_TEST(test_validate_body_duplicate_member_is_400)
{
    char want[128];
    /* depth 0, in an otherwise valid body */
    const char *d0 = J("{'companyId':'a','emails':'e@x.y','companyId':'b'}");
    snprintf(want, sizeof want, "invalid JSON body: duplicate member \"companyId\" at byte %zu",
             last_index(d0, "\"companyId\""));
    REFUSED("filter-users-by-email", d0, GW_R_BAD_REQUEST, want);
    /* depth 3, in a body that also breaks the schema: 400 comes first */
    const char *d3 = J("{'companyId':'c','emails':'e','x':{'y':{'z':1,'z':2}}}");
    snprintf(want, sizeof want, "invalid JSON body: duplicate member \"z\" at byte %zu",
             last_index(d3, "\"z\""));
    REFUSED("filter-users-by-email", d3, GW_R_BAD_REQUEST, want);
    /* depth 2, in a declared object */
    const char *d2 = J("{'permissions':{'paymentsEnabled':true,'paymentsEnabled':false}}");
    snprintf(want, sizeof want,
             "invalid JSON body: duplicate member \"paymentsEnabled\" at byte %zu",
             last_index(d2, "\"paymentsEnabled\""));
    REFUSED("update-user", d2, GW_R_BAD_REQUEST, want);
    /* a member of the twilioPhone map */
    const char *dm = J("{'twilioPhone':{'l1':'+1','l1':'+2'}}");
    snprintf(want, sizeof want, "invalid JSON body: duplicate member \"l1\" at byte %zu",
             last_index(dm, "\"l1\""));
    REFUSED("update-user", dm, GW_R_BAD_REQUEST, want);
}
END_TEST

START_TEST(test_validate_body_invalid_utf8_is_400)
{
    const char *bad = "{\"firstName\":\"\xc0\xaf\"}"; /* overlong '/' */
    REFUSED("update-user", bad, GW_R_BAD_REQUEST,
            "invalid JSON body: invalid UTF-8 in string at byte 14");
    const char *bad2 = "{\"companyId\":\"c1\",\"emails\":\"a\xff\"}";
    REFUSED("filter-users-by-email", bad2, GW_R_BAD_REQUEST,
            "invalid JSON body: invalid UTF-8 in string at byte 29");
}
END_TEST

START_TEST(test_validate_body_lone_surrogate_is_400)
{
    const char *hi = "{\"firstName\":\"\\ud800\"}";
    REFUSED("update-user", hi, GW_R_BAD_REQUEST,
            "invalid JSON body: lone surrogate \\uD800 at byte 14");
    const char *lo = "{\"firstName\":\"a\\udc00b\"}";
    REFUSED("update-user", lo, GW_R_BAD_REQUEST,
            "invalid JSON body: lone surrogate \\uDC00 at byte 15");
    /* a proper pair is fine */
    const char *pair = "{\"firstName\":\"\\ud83d\\ude00\"}";
    struct vres r = vbody("update-user", "application/json", pair, strlen(pair));
    ck_assert_int_eq(r.rc, 0);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(r.body, "firstName")->valuestring,
                     "\xf0\x9f\x98\x80");
    cJSON_Delete(r.body);
}
END_TEST

START_TEST(test_validate_body_deeper_than_limit_is_400)
{
    /* max_json_depth 4: five nested containers are refused before the schema is looked at */
    const char *d5 = J("{'companyId':'c','emails':'e','x':{'a':{'b':{'c':{}}}}}");
    char want[128];
    snprintf(want, sizeof want, "invalid JSON body: nesting deeper than 4 at byte %zu",
             last_index(d5, "{}"));
    REFUSED("filter-users-by-email", d5, GW_R_BAD_REQUEST, want);
    const char *a5 = J("{'locationIds':[[[[]]]]}");
    snprintf(want, sizeof want, "invalid JSON body: nesting deeper than 4 at byte %zu",
             last_index(a5, "[]"));
    REFUSED("update-user", a5, GW_R_BAD_REQUEST, want);
    /* four is parsed, and then the schema speaks */
    const char *d4 = J("{'companyId':'c','emails':'e','x':{'a':{'b':{}}}}");
    struct vres r = vbody("filter-users-by-email", "application/json", d4, strlen(d4));
    ck_assert_int_eq(r.rc, -1);
    ck_assert_int_eq(r.kind, GW_R_UNPROCESSABLE);
    ck_assert_uint_eq(r.msgs.n, 1);
    ck_assert_str_eq(r.msgs.v[0], "property x should not exist");
    gw_msgs_free(&r.msgs);
    /* the cap is the config's */
    cfg.limits.max_json_depth = 1;
    const char *p2 = J("{'permissions':{}}");
    REFUSED("update-user", p2, GW_R_BAD_REQUEST,
            "invalid JSON body: nesting deeper than 1 at byte 15");
}
END_TEST

START_TEST(test_validate_body_415_and_413_before_the_schema)
{
    const char *bad = J("{'isAdmin':true}"); /* breaks the schema too */
    expect_refused("update-user", "text/plain", bad, strlen(bad), GW_R_UNSUPPORTED_MEDIA,
                   "Content-Type must be application/json", __LINE__);
    expect_refused("update-user", NULL, bad, strlen(bad), GW_R_UNSUPPORTED_MEDIA,
                   "Content-Type must be application/json", __LINE__);
    /* not even JSON: the content type is judged first */
    expect_refused("create-user", "text/plain", "{not json", 9, GW_R_UNSUPPORTED_MEDIA,
                   "Content-Type must be application/json", __LINE__);
    cfg.limits.max_body_bytes = 10;
    expect_refused("update-user", "application/json", bad, strlen(bad), GW_R_TOO_LARGE, NULL,
                   __LINE__);
    /* exactly the cap is read, and judged by the schema */
    const char *ten = J("{'x':'12'}");
    ck_assert_uint_eq(strlen(ten), 10);
    struct vres r = vbody("update-user", "application/json", ten, 10);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_int_eq(r.kind, GW_R_UNPROCESSABLE);
    ck_assert_uint_eq(r.msgs.n, 1);
    ck_assert_str_eq(r.msgs.v[0], "property x should not exist");
    gw_msgs_free(&r.msgs);
    /* content type comes before size */
    expect_refused("update-user", "text/plain", bad, strlen(bad), GW_R_UNSUPPORTED_MEDIA,
                   "Content-Type must be application/json", __LINE__);
}
END_TEST

static Suite *schema_suite(void)
{
    Suite *s = suite_create("schema");
    TCase *tv = tcase_create("valid");
    tcase_add_checked_fixture(tv, setup, teardown);
    tcase_add_test(tv, test_schema_create_full_body_passes);
    tcase_add_test(tv, test_schema_create_minimal_body_passes);
    tcase_add_test(tv, test_schema_update_empty_body_passes);
    tcase_add_test(tv, test_schema_update_full_body_passes);
    tcase_add_test(tv, test_schema_filter_minimal_and_full_pass);
    tcase_add_test(tv, test_schema_optional_empty_string_passes);
    suite_add_tcase(s, tv);

    TCase *tr = tcase_create("rules");
    tcase_add_checked_fixture(tr, setup, teardown);
    tcase_add_test(tr, test_schema_required_member_missing_alone);
    tcase_add_test(tr, test_schema_all_required_missing_in_property_order);
    tcase_add_test(tr, test_schema_required_string_empty);
    tcase_add_test(tr, test_schema_string_given_other_types);
    tcase_add_test(tr, test_schema_null_refused_for_optional_members);
    tcase_add_test(tr, test_schema_role_array_is_not_a_string);
    tcase_add_test(tr, test_schema_permission_flag_not_boolean);
    tcase_add_test(tr, test_schema_permissions_not_an_object);
    tcase_add_test(tr, test_schema_location_ids_not_an_array);
    tcase_add_test(tr, test_schema_location_ids_element_not_a_string);
    tcase_add_test(tr, test_schema_filter_deleted_not_boolean);
    tcase_add_test(tr, test_schema_platform_language_not_in_enum);
    tcase_add_test(tr, test_schema_scopes_unknown_value);
    tcase_add_test(tr, test_schema_scopes_valid_list_passes);
    tcase_add_test(tr, test_schema_scopes_empty_array_passes);
    tcase_add_test(tr, test_schema_scopes_not_an_array);
    tcase_add_test(tr, test_schema_unknown_member_top_level);
    tcase_add_test(tr, test_schema_unknown_member_nested);
    tcase_add_test(tr, test_schema_long_member_names_not_truncated);
    tcase_add_test(tr, test_schema_unknown_members_keep_sent_order);
    tcase_add_test(tr, test_schema_update_deprecated_email_refused);
    tcase_add_test(tr, test_schema_deprecated_member_in_property_order);
    tcase_add_test(tr, test_schema_twilio_phone_map);
    tcase_add_test(tr, test_schema_every_violation_reported_together);
    tcase_add_test(tr, test_schema_nested_messages_in_the_parents_property_slot);
    tcase_add_test(tr, test_schema_check_appends_and_counts);
    tcase_add_test(tr, test_schema_defaults_are_not_applied);
    suite_add_tcase(s, tr);

    TCase *td = tcase_create("defaults");
    tcase_add_checked_fixture(td, setup, teardown);
    tcase_add_test(td, test_schema_default_of_permission_flags);
    tcase_add_test(td, test_schema_default_absent_or_documented);
    tcase_add_test(td, test_schema_newer_document_scope_accepted);
    suite_add_tcase(s, td);

    TCase *th = tcase_create("hand-written");
    tcase_add_checked_fixture(th, setup, teardown);
    tcase_add_test(th, test_schema_nullable_accepts_null);
    tcase_add_test(th, test_schema_number_and_integer_types);
    tcase_add_test(th, test_schema_free_form_object_accepts_any_members);
    tcase_add_test(th, test_schema_deep_names_and_nested_required);
    suite_add_tcase(s, th);

    TCase *tb = tcase_create("validate_body");
    tcase_add_checked_fixture(tb, setup, teardown);
    tcase_add_test(tb, test_validate_body_schema_violations_are_422);
    tcase_add_test(tb, test_validate_body_valid_returns_the_object);
    tcase_add_test(tb, test_validate_body_duplicate_member_is_400);
    tcase_add_test(tb, test_validate_body_invalid_utf8_is_400);
    tcase_add_test(tb, test_validate_body_lone_surrogate_is_400);
    tcase_add_test(tb, test_validate_body_deeper_than_limit_is_400);
    tcase_add_test(tb, test_validate_body_415_and_413_before_the_schema);
    suite_add_tcase(s, tb);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(schema_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
