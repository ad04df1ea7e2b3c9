/* Unit tests of the policy engine (proxy/policy.c) against SPEC §6: loading and validating the
 * policy files of a folder against the shipped OpenAPI document, subject matching, every check
 * of §6.3 with its exact denial message, the decision across policies (§6.2), and the read
 * filter (visibility by location, redaction).
 *
 * Each test writes its policy files into a fresh folder (mkdtemp). Policy texts, claims, bodies
 * and user objects are written with single quotes for readability; put() and js() turn them
 * into double quotes. Decision inputs are built as the gateway builds them: the op and the query
 * come from gw_route_match, the caller's scopes from the space-separated "scope" claim. */
#include <check.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "openapi.h"
#include "policy.h"
#include "route.h"
#include "validate.h"

static struct gw_openapi *api; /* the shipped document, loaded once before the tests fork */
static char g_dir[64];         /* this test's policy folder */

static void load_api(void)
{
    char err[512];
    int rc = gw_openapi_load(gw_openapi_default_path(), &api, err, sizeof err);
    ck_assert_msg(rc == 0, "shipped document refused: %s", err);
}

static void free_api(void)
{
    gw_openapi_free(api);
    api = NULL;
}

static void make_dir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/gwpol.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_dir(void)
{
    if (g_dir[0])
        nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    g_dir[0] = '\0';
}

/* ---- helpers ---- */

/* A malloc'd copy of s with every ' turned into ". */
static char *dq(const char *s)
{
    char *d = strdup(s);
    ck_assert_ptr_nonnull(d);
    for (char *p = d; *p; p++)
        if (*p == '\'')
            *p = '"';
    return d;
}

static void put_raw(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* Writes a policy file (single quotes become double quotes). */
static void put(const char *name, const char *text)
{
    char *t = dq(text);
    put_raw(name, t);
    free(t);
}

/* Parses a single-quoted JSON text (NULL stays NULL). */
static cJSON *js(const char *text)
{
    if (text == NULL)
        return NULL;
    char *t = dq(text);
    struct gw_json_error e;
    cJSON *v = gw_json_parse(t, strlen(t), NULL, &e);
    ck_assert_msg(v != NULL, "test JSON refused (%s): %s", e.msg, t);
    free(t);
    return v;
}

static char *errs_text(const struct gw_errs *e)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    for (size_t i = 0; i < e->problems.n; i++)
        fprintf(f, "  [%zu] %s\n", i, e->problems.v[i]);
    fclose(f);
    return s;
}

static struct gw_policies *load_ok(void)
{
    struct gw_errs errs = {0};
    struct gw_policies *ps = gw_policies_load(g_dir, api, &errs);
    if (ps == NULL) {
        char *t = errs_text(&errs);
        ck_abort_msg("policies refused:\n%s", t);
    }
    ck_assert_msg(errs.problems.n == 0, "policies loaded with %zu errors: %s", errs.problems.n,
                  errs.problems.n ? errs.problems.v[0] : "");
    gw_errs_free(&errs);
    return ps;
}

/* Writes one policy as p.json and loads the folder. */
static struct gw_policies *load1(const char *text)
{
    put("p.json", text);
    return load_ok();
}

/* Loads the folder and expects refusal (NULL, at least one error). */
static void load_bad(struct gw_errs *errs)
{
    struct gw_policies *ps = gw_policies_load(g_dir, api, errs);
    if (ps != NULL) {
        gw_policies_free(ps);
        ck_abort_msg("policies accepted (%zu errors)", errs->problems.n);
    }
    ck_assert_msg(errs->problems.n >= 1, "refused without an error message");
}

/* True when one error line contains every one of the NULL-terminated substrings. */
static bool has_err_all(const struct gw_errs *e, ...)
{
    for (size_t i = 0; i < e->problems.n; i++) {
        va_list ap;
        va_start(ap, e);
        bool all = true;
        for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *))
            if (strstr(e->problems.v[i], w) == NULL) {
                all = false;
                break;
            }
        va_end(ap);
        if (all)
            return true;
    }
    return false;
}

#define ASSERT_ERR_HAS(errs, ...)                                                                  \
    do {                                                                                           \
        if (!has_err_all(&(errs), __VA_ARGS__, (const char *)NULL)) {                              \
            char *t_ = errs_text(&(errs));                                                         \
            ck_abort_msg("no error line containing all of [%s]; got %zu:\n%s", #__VA_ARGS__,       \
                         (errs).problems.n, t_);                                                   \
        }                                                                                          \
    } while (0)

/* Writes text as p.json, expects refusal with one line naming the file, the line and every
 * given substring. */
#define ASSERT_FILE_REFUSED(text, lineno, ...)                                                     \
    do {                                                                                           \
        put("p.json", (text));                                                                     \
        struct gw_errs e_ = {0};                                                                   \
        load_bad(&e_);                                                                             \
        ASSERT_ERR_HAS(e_, "p.json:" #lineno ":", __VA_ARGS__);                                    \
        gw_errs_free(&e_);                                                                         \
    } while (0)

/* Decides method + target with the given (single-quoted) claims, body and target user. */
static void decide(const struct gw_policies *ps, const char *claims, const char *method,
                   const char *target, const char *body, const char *tuser, struct gw_decision *d)
{
    struct gw_route r;
    char why[256];
    enum gw_route_result rc = gw_route_match(api, method, target, &r, why, sizeof why);
    ck_assert_msg(rc == GW_ROUTE_OK, "%s %s: route %d %s", method, target, (int)rc, why);
    cJSON *c = js(claims);
    cJSON *b = js(body);
    cJSON *t = js(tuser);
    const char *scopes[64];
    size_t ns = 0;
    char *sc = NULL;
    const cJSON *scj = cJSON_GetObjectItemCaseSensitive(c, "scope");
    if (cJSON_IsString(scj)) {
        sc = strdup(scj->valuestring);
        for (char *save = NULL, *w = strtok_r(sc, " ", &save); w && ns < 64;
             w = strtok_r(NULL, " ", &save))
            scopes[ns++] = w;
    }
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(c, "sub");
    struct gw_decision_input in = {
        .claims = c,
        .sub = cJSON_IsString(sub) ? sub->valuestring : "",
        .scopes = scopes,
        .nscopes = ns,
        .op = r.op,
        .route = &r,
        .body = b,
        .target = t,
    };
    memset(d, 0, sizeof *d);
    gw_policy_decide(ps, api, &in, d);
    free(sc);
    cJSON_Delete(c);
    cJSON_Delete(b);
    cJSON_Delete(t);
    gw_route_free(&r);
}

static char *reasons_text(const struct gw_decision *d)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    fprintf(f, "allowed=%d policy=%s reasons=%zu\n", d->allowed,
            d->policy ? gw_policy_name(d->policy) : "(null)", d->reasons.n);
    for (size_t i = 0; i < d->reasons.n; i++)
        fprintf(f, "  [%zu] %s\n", i, d->reasons.v[i]);
    fclose(f);
    return s;
}

static void check_allowed(const struct gw_decision *d, const char *pname)
{
    char *t = reasons_text(d);
    ck_assert_msg(d->allowed, "denied, want allowed by %s:\n%s", pname, t);
    ck_assert_msg(d->policy != NULL, "allowed without a policy");
    ck_assert_msg(strcmp(gw_policy_name(d->policy), pname) == 0, "allowed by %s, want %s",
                  gw_policy_name(d->policy), pname);
    ck_assert_msg(d->reasons.n == 0, "allowed with reasons:\n%s", t);
    free(t);
}

static void check_denied(const struct gw_decision *d, const char *pname, const char *const *want,
                         size_t nw)
{
    char *t = reasons_text(d);
    ck_assert_msg(!d->allowed, "allowed, want denied:\n%s", t);
    if (pname == NULL)
        ck_assert_msg(d->policy == NULL, "policy %s, want NULL:\n%s", gw_policy_name(d->policy), t);
    else
        ck_assert_msg(d->policy != NULL && strcmp(gw_policy_name(d->policy), pname) == 0,
                      "policy want %s:\n%s", pname, t);
    ck_assert_msg(d->reasons.n == nw, "want %zu reasons:\n%s", nw, t);
    for (size_t i = 0; i < nw; i++)
        ck_assert_msg(strcmp(d->reasons.v[i], want[i]) == 0, "reason [%zu] want \"%s\":\n%s", i,
                      want[i], t);
    free(t);
}

#define ASSERT_ALLOWED(ps, pname, claims, method, target, body, tuser)                             \
    do {                                                                                           \
        struct gw_decision d_;                                                                     \
        decide((ps), (claims), (method), (target), (body), (tuser), &d_);                          \
        check_allowed(&d_, (pname));                                                               \
        gw_decision_free(&d_);                                                                     \
    } while (0)

/* Denied by pname with first (the reason the 403 shows) as its first reason. */
#define ASSERT_DENIED_FIRST(ps, pname, claims, method, target, body, tuser, first)                 \
    do {                                                                                           \
        struct gw_decision d_;                                                                     \
        decide((ps), (claims), (method), (target), (body), (tuser), &d_);                          \
        char *t_ = reasons_text(&d_);                                                              \
        ck_assert_msg(!d_.allowed && d_.reasons.n > 0 && strcmp(d_.reasons.v[0], (first)) == 0,    \
                      "want denied first with \"%s\":\n%s", (first), t_);                          \
        ck_assert_msg(d_.policy &&strcmp(gw_policy_name(d_.policy), (pname)) == 0,                 \
                      "policy want %s:\n%s", (pname), t_);                                         \
        free(t_);                                                                                  \
        gw_decision_free(&d_);                                                                     \
    } while (0)

#define ASSERT_DENIED(ps, pname, claims, method, target, body, tuser, ...)                         \
    do {                                                                                           \
        static const char *const w_[] = {__VA_ARGS__};                                             \
        struct gw_decision d_;                                                                     \
        decide((ps), (claims), (method), (target), (body), (tuser), &d_);                          \
        check_denied(&d_, (pname), w_, sizeof w_ / sizeof *w_);                                    \
        gw_decision_free(&d_);                                                                     \
    } while (0)

/* ---- building blocks ---- */

#define ALLOPS                                                                                     \
    "['create-user','search-users','filter-users-by-email','get-user','update-user',"              \
    "'delete-user','get-user-by-location']"

/* A policy "p" for subject "bot" with every op, company c1, the given locations and more
 * members (rest starts with a comma, or is ""). */
#define POL(locations, rest)                                                                       \
    "{'name':'p','subjects':[{'sub':'bot'}],'operations':" ALLOPS                                  \
    ",'companies':['c1'],'locations':" locations rest "}"

#define BOT "{'iss':'https://idp.example.com','sub':'bot','scope':'users.write users.readonly'}"

/* A create-user body that is valid for the schema; extra members are appended. */
#define CREATE(extra)                                                                              \
    "{'companyId':'c1','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"              \
    "'password':'Secret-pass-123','type':'account','role':'user','locationIds':['L1']" extra "}"

#define GRANT_STD                                                                                  \
    ",'grant':{'types':['account'],'roles':['user'],'scopes':['contacts.*','conversations/*'],"    \
    "'scopes_assigned_to_only':['contacts.write']}"

/* A user-role account user in locs holding no scope and every flag at its default. */
#define ACCOUNT_IN(locs)                                                                           \
    "{'id':'u1','roles':{'type':'account','role':'user','locationIds':" locs "},'scopes':[]}"

#define MUST_SCOPES                                                                                \
    "policy p: create-user must send scopes (the upstream's default is not documented)"
#define MUST_SATO                                                                                  \
    "policy p: create-user must send scopesAssignedToOnly (the upstream's default is not "         \
    "documented)"

/* ======================= 1. loading and validation ======================= */

START_TEST(test_policy_load_valid_example_shape)
{
    struct gw_policies *ps = load1(
        "{'name':'onboarding-bot','description':'d',"
        "'subjects':[{'iss':'https://idp.example.com','sub':'svc-onboarding'},{'groups':'it'}],"
        "'operations':['create-user','update-user','get-user','search-users'],"
        "'companies':['c1'],'locations':['L1'],"
        "'grant':{'types':['account'],'roles':['user'],"
        "'scopes':['contacts.write','conversations/*','calendars.*'],"
        "'scopes_assigned_to_only':['contacts.write'],'within_caller_scopes':false,"
        "'permissions':{'paymentsEnabled':false,'exportPaymentsEnabled':false,"
        "'settingsEnabled':false,'assignedDataOnly':true},'max_locations':5},"
        "'fields':{'forbid':['twilioPhone']},'reads':{'redact':['phone','lcPhone']}}");
    ck_assert_uint_eq(ps->n, 1);
    ck_assert_str_eq(gw_policy_name(ps->p), "onboarding-bot");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_load_unknown_top_level_key)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'colour':'red'\n}\n",
                        7, "colour");
}
END_TEST

/* Out-of-range and fractional caps are refused (and checked before any conversion: the fuzz
 * target found 1e19 converted to long, which is undefined). */
START_TEST(test_policy_load_max_locations_out_of_range)
{
    static const char *const bad[] = {"1e19", "-1e300", "2.5", "-1", "100001", "'3'"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[400];
        snprintf(text, sizeof text,
                 "{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                 "'companies':'*',\n'locations':'*',\n'grant':{\n'max_locations':%s\n}\n}\n",
                 bad[i]);
        ASSERT_FILE_REFUSED(text, 8, "grant.max_locations", "must be an integer");
    }
}
END_TEST

START_TEST(test_policy_load_unknown_key_in_grant)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'grant':{\n'types':['account'],\n"
                        "'colour':'red'\n}\n}\n",
                        9, "colour");
}
END_TEST

START_TEST(test_policy_load_unknown_key_in_fields)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'fields':{\n'forbid':['phone'],\n"
                        "'allow':['email']\n}\n}\n",
                        9, "allow");
}
END_TEST

START_TEST(test_policy_load_unknown_key_in_reads)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'reads':{\n'redact':['phone'],\n"
                        "'hide':['email']\n}\n}\n",
                        9, "hide");
}
END_TEST

START_TEST(test_policy_load_unknown_operation)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n"
                        "'operations':['get-user','make-user'],\n"
                        "'companies':'*',\n'locations':'*'\n}\n",
                        4, "operations", "make-user");
}
END_TEST

START_TEST(test_policy_load_unknown_permission_flag)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'grant':{\n'permissions':{\n"
                        "'paymentEnabled':false\n}\n}\n}\n",
                        9, "paymentEnabled");
}
END_TEST

START_TEST(test_policy_load_non_boolean_pin)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'grant':{\n'permissions':{\n"
                        "'paymentsEnabled':'no'\n}\n}\n}\n",
                        9, "paymentsEnabled");
}
END_TEST

START_TEST(test_policy_load_scope_pattern_matching_nothing)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'grant':{\n'types':[],\n"
                        "'scopes':['contacts.write','nosuch.*']\n}\n}\n",
                        9, "scopes", "nosuch.*");
}
END_TEST

START_TEST(test_policy_load_exact_scope_not_in_document)
{
    /* contacts.readonly is not one of the document's scopes; a pattern without '*' must be one */
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*',\n'grant':{\n'scopes':['*'],\n"
                        "'scopes_assigned_to_only':['contacts.readonly']\n}\n}\n",
                        9, "contacts.readonly");
}
END_TEST

START_TEST(test_policy_load_locations_number)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':5\n}\n",
                        6, "locations");
}
END_TEST

START_TEST(test_policy_load_locations_claim_not_string)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':{'claim':5}\n}\n",
                        6, "locations");
}
END_TEST

START_TEST(test_policy_load_locations_other_member)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[{'sub':'bot'}],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':{'other':'x'}\n}\n",
                        6, "locations");
}
END_TEST

START_TEST(test_policy_load_duplicate_name_across_files)
{
    put("a.json", "{'name':'dup-name','subjects':[{'sub':'bot'}],'operations':['get-user'],"
                  "'companies':'*','locations':'*'}");
    put("b.json", "{'name':'dup-name','subjects':[{'sub':'x'}],'operations':['get-user'],"
                  "'companies':'*','locations':'*'}");
    struct gw_errs e = {0};
    load_bad(&e);
    ASSERT_ERR_HAS(e, "b.json", "dup-name");
    gw_errs_free(&e);
}
END_TEST

START_TEST(test_policy_load_subjects_empty)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*'\n}\n",
                        3, "subjects");
}
END_TEST

/* A file with many problems shows them all, in one order: unknown keys first, then the members
 * in the order of the language (name, description, subjects, operations, companies, locations,
 * grant, fields, reads), each section the same way; warnings apart. */
START_TEST(test_policy_load_every_problem_in_order)
{
    put("p.json", "{\n'reads':{'redact':[5]},\n'locations':['*',5],\n'colour':1,\n"
                  "'grant':{'max_locations':-1,\n'hue':2,\n'types':'account'},\n"
                  "'companies':'c1',\n'name':'',\n'operations':['get-user','make-user'],\n"
                  "'description':5,\n'subjects':[{'groups':[5]}],\n'shade':3\n}\n");
    struct gw_errs e = {0};
    load_bad(&e);
    static const char *const want[] = {
        "p.json:4: colour: unknown key",
        "p.json:13: shade: unknown key",
        "p.json:9: name: a policy needs a non-empty name",
        "p.json:11: description: must be a string",
        "p.json:12: subjects.groups: entries must be non-empty strings",
        "p.json:12: subjects.groups: must list at least one value",
        "p.json:10: operations: unknown operation make-user",
        "p.json:8: companies: must be an array of strings",
        "p.json:3: locations: entries must be non-empty strings",
        "p.json:6: grant.hue: unknown key",
        "p.json:7: grant.types: must be an array of strings",
        "p.json:5: grant.max_locations: must be an integer from 0",
        "p.json:2: reads.redact: entries must be non-empty strings",
    };
    char *t = errs_text(&e);
    ck_assert_msg(e.problems.n == sizeof want / sizeof *want, "got:\n%s", t);
    for (size_t i = 0; i < e.problems.n; i++) {
        char w[512];
        snprintf(w, sizeof w, "%s/%s", g_dir, want[i]);
        ck_assert_msg(strcmp(e.problems.v[i], w) == 0, "[%zu] want %s, got:\n%s", i, w, t);
    }
    free(t);
    ck_assert_uint_eq(e.warnings.n, 1); /* the "*" read before the bad entry */
    char w[512];
    snprintf(w, sizeof w,
             "warning: %s/p.json:3: locations: \"*\" inside a list is a location id; "
             "\"locations\": \"*\" means every location",
             g_dir);
    ck_assert_str_eq(e.warnings.v[0], w);
    gw_errs_free(&e);
}
END_TEST

START_TEST(test_policy_load_subject_value_not_string)
{
    ASSERT_FILE_REFUSED("{\n'name':'p',\n'subjects':[\n{'sub':5}\n],\n'operations':['get-user'],\n"
                        "'companies':'*',\n'locations':'*'\n}\n",
                        4, "sub");
    remove_dir();
    make_dir();
    /* a list with a non-string element */
    put("p.json", "{\n'name':'p',\n'subjects':[\n{'groups':['a',5]}\n],\n"
                  "'operations':['get-user'],\n'companies':'*',\n'locations':'*'\n}\n");
    struct gw_errs e = {0};
    load_bad(&e);
    ASSERT_ERR_HAS(e, "p.json:4:", "groups");
    gw_errs_free(&e);
}
END_TEST

START_TEST(test_policy_load_invalid_json)
{
    put_raw("p.json", "{\n\"name\":\"p\",\n\"subjects\": [\n}\n");
    struct gw_errs e = {0};
    load_bad(&e);
    ASSERT_ERR_HAS(e, "p.json:4:");
    gw_errs_free(&e);
}
END_TEST

START_TEST(test_policy_load_comments_allowed)
{
    put_raw("p.json", "// the bot\n{\n  \"name\": \"p\", /* unique */\n"
                      "  \"subjects\": [{\"sub\": \"bot\"}],\n"
                      "  \"operations\": [\"get-user\"], // only reads\n"
                      "  \"companies\": \"*\",\n  \"locations\": \"*\"\n}\n");
    struct gw_policies *ps = load_ok();
    ck_assert_uint_eq(ps->n, 1);
    ck_assert_str_eq(gw_policy_name(ps->p), "p");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_load_empty_folder_is_empty_set_denying_all)
{
    struct gw_policies *ps = load_ok();
    ck_assert_uint_eq(ps->n, 0);
    ASSERT_DENIED(ps, NULL, BOT, "GET", "/users/u1", NULL, NULL, "no policy grants bot access");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_load_non_json_files_ignored)
{
    put_raw("README.txt", "not json {{{");
    put_raw("p.json.bak", "not json either");
    put_raw("notes.jsonc", "{ broken");
    put("p.json", POL("'*'", ""));
    struct gw_policies *ps = load_ok();
    ck_assert_uint_eq(ps->n, 1);
    ck_assert_str_eq(gw_policy_name(ps->p), "p");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_load_files_in_name_order)
{
    /* file names decide, not policy names */
    put("b.json", "{'name':'alpha','subjects':[{'sub':'bot'}],'operations':['get-user'],"
                  "'companies':'*','locations':'*'}");
    put("a.json", "{'name':'zeta','subjects':[{'sub':'bot'}],'operations':['get-user'],"
                  "'companies':'*','locations':'*'}");
    struct gw_policies *ps = load_ok();
    ck_assert_uint_eq(ps->n, 2);
    ck_assert_str_eq(gw_policy_name(ps->p), "zeta");
    ASSERT_ALLOWED(ps, "zeta", BOT, "GET", "/users/u1", NULL, NULL);
    gw_policies_free(ps);
}
END_TEST

/* ======================= 2. subjects ======================= */

START_TEST(test_policy_subject_iss_and_sub)
{
    struct gw_policies *ps =
        load1("{'name':'p','subjects':[{'iss':'https://idp.example.com','sub':'bot'}],"
              "'operations':['get-user'],'companies':'*','locations':'*'}");
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/u1", NULL, NULL);
    ASSERT_DENIED(ps, NULL, "{'iss':'https://other.example.com','sub':'bot'}", "GET", "/users/u1",
                  NULL, NULL, "no policy grants bot access");
    ASSERT_DENIED(ps, NULL, "{'iss':'https://idp.example.com','sub':'bot2'}", "GET", "/users/u1",
                  NULL, NULL, "no policy grants bot2 access");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_subject_groups_array_claim_contains_value)
{
    struct gw_policies *ps = load1("{'name':'p','subjects':[{'groups':'it-admins'}],"
                                   "'operations':['get-user'],'companies':'*','locations':'*'}");
    ASSERT_ALLOWED(ps, "p", "{'sub':'s1','groups':['staff','it-admins']}", "GET", "/users/u1", NULL,
                   NULL);
    ASSERT_ALLOWED(ps, "p", "{'sub':'s1','groups':'it-admins'}", "GET", "/users/u1", NULL, NULL);
    ASSERT_DENIED(ps, NULL, "{'sub':'s1','groups':['staff','it-admins-2']}", "GET", "/users/u1",
                  NULL, NULL, "no policy grants s1 access");
    ASSERT_DENIED(ps, NULL, "{'sub':'s1','groups':'it'}", "GET", "/users/u1", NULL, NULL,
                  "no policy grants s1 access");
    ASSERT_DENIED(ps, NULL, "{'sub':'s1'}", "GET", "/users/u1", NULL, NULL,
                  "no policy grants s1 access");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_subject_value_list_any_of)
{
    struct gw_policies *ps = load1("{'name':'p','subjects':[{'sub':['alice','bot']}],"
                                   "'operations':['get-user'],'companies':'*','locations':'*'}");
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/u1", NULL, NULL);
    ASSERT_ALLOWED(ps, "p", "{'sub':'alice'}", "GET", "/users/u1", NULL, NULL);
    ASSERT_DENIED(ps, NULL, "{'sub':'carol'}", "GET", "/users/u1", NULL, NULL,
                  "no policy grants carol access");
    /* list against an array claim: any element of the list contained */
    gw_policies_free(ps);
    remove_dir();
    make_dir();
    ps = load1("{'name':'p','subjects':[{'groups':['a','b']}],"
               "'operations':['get-user'],'companies':'*','locations':'*'}");
    ASSERT_ALLOWED(ps, "p", "{'sub':'s','groups':['x','b']}", "GET", "/users/u1", NULL, NULL);
    ASSERT_DENIED(ps, NULL, "{'sub':'s','groups':['x','c']}", "GET", "/users/u1", NULL, NULL,
                  "no policy grants s access");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_subject_all_members_must_match)
{
    struct gw_policies *ps =
        load1("{'name':'p','subjects':[{'iss':'https://idp.example.com','groups':'ops'}],"
              "'operations':['get-user'],'companies':'*','locations':'*'}");
    ASSERT_ALLOWED(ps, "p", "{'iss':'https://idp.example.com','sub':'s','groups':['ops']}", "GET",
                   "/users/u1", NULL, NULL);
    ASSERT_DENIED(ps, NULL, "{'iss':'https://evil.example.com','sub':'s','groups':['ops']}", "GET",
                  "/users/u1", NULL, NULL, "no policy grants s access");
    ASSERT_DENIED(ps, NULL, "{'iss':'https://idp.example.com','sub':'s','groups':['dev']}", "GET",
                  "/users/u1", NULL, NULL, "no policy grants s access");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_subject_other_claim_types_never_match)
{
    struct gw_policies *ps = load1("{'name':'p','subjects':[{'level':'5'},{'admin':'true'}],"
                                   "'operations':['get-user'],'companies':'*','locations':'*'}");
    ASSERT_DENIED(ps, NULL, "{'sub':'s','level':5}", "GET", "/users/u1", NULL, NULL,
                  "no policy grants s access");
    ASSERT_DENIED(ps, NULL, "{'sub':'s','admin':true}", "GET", "/users/u1", NULL, NULL,
                  "no policy grants s access");
    ASSERT_DENIED(ps, NULL, "{'sub':'s','level':{'v':'5'}}", "GET", "/users/u1", NULL, NULL,
                  "no policy grants s access");
    ASSERT_ALLOWED(ps, "p", "{'sub':'s','level':'5'}", "GET", "/users/u1", NULL, NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_no_matching_policy_names_sub)
{
    put("a.json", "{'name':'a','subjects':[{'sub':'alice'}],'operations':" ALLOPS
                  ",'companies':'*','locations':'*'}");
    put("b.json", "{'name':'b','subjects':[{'groups':'ops'}],'operations':" ALLOPS
                  ",'companies':'*','locations':'*'}");
    struct gw_policies *ps = load_ok();
    ASSERT_DENIED(ps, NULL, BOT, "DELETE", "/users/u1", NULL, ACCOUNT_IN("['L1']"),
                  "no policy grants bot access");
    gw_policies_free(ps);
}
END_TEST

/* ======================= 3. checks ======================= */

START_TEST(test_policy_op_not_allowed_stops_further_checks)
{
    struct gw_policies *ps =
        load1("{'name':'p','subjects':[{'sub':'bot'}],'operations':['get-user','search-users'],"
              "'companies':['c1'],'locations':['L1']}");
    /* wrong company, wrong location, no grant: only the operation is reported */
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  "{'companyId':'c9','firstName':'A','lastName':'B','email':'a@b.co',"
                  "'password':'Secret-pass-123','type':'agency','role':'admin',"
                  "'locationIds':['L9'],'scopes':['contacts.write']}",
                  NULL, "policy p: operation create-user is not allowed");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, ACCOUNT_IN("['L9']"),
                  "policy p: operation delete-user is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/u1", NULL, NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_company_in_body)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD));
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  "{'companyId':'c9','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"
                  "'password':'Secret-pass-123','type':'account','role':'user',"
                  "'locationIds':['L1'],'scopes':[],'scopesAssignedToOnly':[]}",
                  NULL, "policy p: company c9 is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/",
                   CREATE(",'scopes':[],'scopesAssignedToOnly':[]"), NULL);
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/search/filter-by-email",
                  "{'companyId':'c2','emails':'a@b.co'}", NULL,
                  "policy p: company c2 is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/search/filter-by-email",
                   "{'companyId':'c1','emails':'a@b.co'}", NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_company_in_query)
{
    struct gw_policies *ps = load1(POL("'*'", ""));
    ASSERT_DENIED(ps, "p", BOT, "GET", "/users/search?companyId=c9&locationId=L1", NULL, NULL,
                  "policy p: company c9 is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/search?companyId=c1&locationId=L1", NULL, NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_company_star_allows_any)
{
    struct gw_policies *ps = load1("{'name':'p','subjects':[{'sub':'bot'}],'operations':" ALLOPS
                                   ",'companies':'*','locations':'*'}");
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/search?companyId=anything", NULL, NULL);
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/search/filter-by-email",
                   "{'companyId':'zz','emails':'a@b.co'}", NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_locations_from_body_in_order)
{
    struct gw_policies *ps = load1(POL("['L1','L2']", ""));
    /* no grant: no target is within it either (who may not grant may not touch) */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'locationIds':['L9','L1','L8']}",
                  ACCOUNT_IN("['L1']"), "policy p: location L9 is not allowed",
                  "policy p: location L8 is not allowed",
                  "policy p: user u1 has type account, which this policy may not grant",
                  "policy p: user u1 has role user, which this policy may not grant",
                  "policy p: grants nothing; the request sets locationIds");
    gw_policies_free(ps);
    remove_dir();
    make_dir();
    ps = load1(POL("['L1','L2']", ",'grant':{'types':['account'],'roles':['user']}"));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'locationIds':['L9','L1','L8']}",
                  ACCOUNT_IN("['L1']"), "policy p: location L9 is not allowed",
                  "policy p: location L8 is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'locationIds':['L2','L1']}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_locations_from_query)
{
    struct gw_policies *ps = load1(POL("['L1']", ""));
    ASSERT_DENIED(ps, "p", BOT, "GET", "/users/?locationId=L9", NULL, NULL,
                  "policy p: location L9 is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/?locationId=L1", NULL, NULL);
    ASSERT_DENIED(ps, "p", BOT, "GET", "/users/search?companyId=c1&locationId=L2", NULL, NULL,
                  "policy p: location L2 is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/search?companyId=c1&locationId=L1", NULL, NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_locations_from_claim_array)
{
    struct gw_policies *ps = load1(POL("{'claim':'locations'}", ""));
    const char *c = "{'sub':'bot','locations':['L1','L2']}";
    ASSERT_ALLOWED(ps, "p", c, "GET", "/users/?locationId=L2", NULL, NULL);
    ASSERT_DENIED(ps, "p", c, "GET", "/users/?locationId=L3", NULL, NULL,
                  "policy p: location L3 is not allowed");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_locations_from_claim_string)
{
    struct gw_policies *ps = load1(POL("{'claim':'loc'}", ""));
    const char *c = "{'sub':'bot','loc':'L1'}";
    ASSERT_ALLOWED(ps, "p", c, "GET", "/users/?locationId=L1", NULL, NULL);
    ASSERT_DENIED(ps, "p", c, "GET", "/users/?locationId=L2", NULL, NULL,
                  "policy p: location L2 is not allowed");
    /* the claim absent: an empty list (nothing allowed) */
    ASSERT_DENIED(ps, "p", "{'sub':'bot'}", "GET", "/users/?locationId=L1", NULL, NULL,
                  "policy p: location L1 is not allowed");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_search_users_must_name_location_when_restricted)
{
    struct gw_policies *ps = load1(POL("['L1']", ""));
    ASSERT_DENIED(ps, "p", BOT, "GET", "/users/search?companyId=c1", NULL, NULL,
                  "policy p: search-users must name a locationId");
    ASSERT_DENIED(ps, "p", BOT, "GET", "/users/search?companyId=c1&query=ann", NULL, NULL,
                  "policy p: search-users must name a locationId");
    gw_policies_free(ps);
    remove_dir();
    make_dir();
    ps = load1(POL("{'claim':'locations'}", ""));
    ASSERT_DENIED(ps, "p", "{'sub':'bot','locations':['L1']}", "GET", "/users/search?companyId=c1",
                  NULL, NULL, "policy p: search-users must name a locationId");
    gw_policies_free(ps);
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ""));
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/search?companyId=c1", NULL, NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_reads_not_checked_at_decision)
{
    /* get-user and filter-by-email name no location; visibility is the read filter's job */
    struct gw_policies *ps = load1(POL("['L1']", ""));
    ASSERT_ALLOWED(ps, "p", BOT, "GET", "/users/u9", NULL, NULL);
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/search/filter-by-email",
                   "{'companyId':'c1','emails':'a@b.co'}", NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_target_outside_locations_update_and_delete)
{
    struct gw_policies *ps = load1(POL("['L1','L2']", GRANT_STD));
    /* the caller is told only that the user is outside (the 403 shows the first reason); the
     * reasons after it, for the audit record, say where */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}",
                  ACCOUNT_IN("['L1','L9','L2','L8']"),
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 is in location L9, outside this policy",
                  "policy p: user u1 is in location L8, outside this policy");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, ACCOUNT_IN("['L7']"),
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 is in location L7, outside this policy");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}",
                   ACCOUNT_IN("['L2','L1']"));
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL, ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_target_without_location)
{
    struct gw_policies *ps = load1(POL("['L1']", GRANT_STD));
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'account','role':'user'},'scopes':[]}",
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 has no location inside this policy");
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}",
                  "{'id':'u1','roles':{'type':'account','role':'user','locationIds':'L1'},"
                  "'scopes':[]}",
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 has no location inside this policy");
    /* without roles: outside too (SPEC 6.4), and refused */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}", "{'id':'u1'}",
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 has no roles this policy can check");
    gw_policies_free(ps);
    /* under "*" a target without locations is fine */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", GRANT_STD));
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                   "{'id':'u1','roles':{'type':'account','role':'user'},'scopes':[]}");
    /* but a target answer without roles is refused everywhere */
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, "{'id':'u1','scopes':[]}",
                  "policy p: user u1 has no roles this policy can check");
    gw_policies_free(ps);
}
END_TEST

/* Found in review: a target whose roles.type is missing or odd must not pass as "not an
 * agency user" under a policy that covers every location but may not touch agency users. */
START_TEST(test_policy_target_odd_shapes_fail_closed)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD));
    static const struct {
        const char *user, *first;
    } odd[] = {
        {"{'id':'u1','roles':[{'type':'agency'}],'scopes':[]}",
         "policy p: user u1 has no roles this policy can check"},
        {"{'id':'u1','roles':{'type':['agency'],'role':'user'},'scopes':[]}",
         "policy p: user u1 has no roles.type this policy can check"},
        {"{'id':'u1','type':'agency','scopes':[]}",
         "policy p: user u1 has no roles this policy can check"},
        {"{'id':'u1'}", "policy p: user u1 has no roles this policy can check"},
        {"{'id':'u1','roles':{'role':'user'},'scopes':[]}",
         "policy p: user u1 has no roles.type this policy can check"},
        {"{'id':'u1','roles':{'type':'account'},'scopes':[]}",
         "policy p: user u1 has no roles.role this policy can check"},
        {"{'id':'u1','roles':'agency','scopes':[]}",
         "policy p: user u1 has no roles this policy can check"},
        {"{'id':'u1','roles':{'type':'Agency','role':'user','locationIds':['L1']},'scopes':[]}",
         "policy p: user u1 has type Agency, which this policy may not grant"},
        {"{'id':'u1','roles':{'type':'account','role':'user'},'scopes':'contacts.write'}", NULL},
        {"{'id':'u1','roles':{'type':'account','role':'user'},'scopes':{'a':1}}",
         "policy p: user u1 has scopes this policy cannot read"},
        {"{'id':'u1','roles':{'type':'account','role':'user'},'scopes':['contacts.write',5]}",
         "policy p: user u1 has a scope that is not a string"},
    };
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        if (odd[i].first)
            ASSERT_DENIED_FIRST(ps, "p", BOT, "DELETE", "/users/u1", NULL, odd[i].user,
                                odd[i].first);
        else
            ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL, odd[i].user);
    }
    gw_policies_free(ps);
    /* a policy that may grant everything still needs to see what the user is */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ",'grant':{'types':['account','agency'],'roles':['user','admin'],"
                          "'scopes':['*']}"));
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, "{'id':'u1'}",
                  "policy p: user u1 has no roles this policy can check");
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                   "{'id':'u1','roles':{'type':'agency','role':'admin'}}");
    gw_policies_free(ps);
    /* restricted: location ids that are not strings are outside */
    remove_dir();
    make_dir();
    ps = load1(POL("['L1']", GRANT_STD));
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'account','role':'user','locationIds':['L1',7]},"
                  "'scopes':[]}",
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 is in location (not a string), outside this policy");
    gw_policies_free(ps);
}
END_TEST

/* The first pass of update/delete, before the target is fetched: every check but the
 * target's; without target_pending, no target fails closed. */
START_TEST(test_policy_target_pending)
{
    struct gw_policies *ps = load1(POL("['L1']", GRANT_STD));
    cJSON *c = js(BOT);
    struct gw_route route;
    char why[200];
    ck_assert_int_eq(gw_route_match(api, "DELETE", "/users/u1", &route, why, sizeof why),
                     GW_ROUTE_OK);
    const char *scopes[] = {"users.write"};
    struct gw_decision_input in = {.claims = c,
                                   .sub = "bot",
                                   .scopes = scopes,
                                   .nscopes = 1,
                                   .op = route.op,
                                   .route = &route,
                                   .target_pending = true};
    struct gw_decision d;
    gw_policy_decide(ps, api, &in, &d);
    ck_assert(d.allowed);
    gw_decision_free(&d);
    in.target_pending = false;
    gw_policy_decide(ps, api, &in, &d);
    ck_assert(!d.allowed);
    ck_assert_str_eq(d.reasons.v[0], "policy p: the user to change is not known");
    gw_decision_free(&d);
    /* a caller no policy names is refused before any fetch */
    cJSON *other = js("{'iss':'https://idp.example.com','sub':'someone'}");
    in.claims = other;
    in.sub = "someone";
    in.target_pending = true;
    gw_policy_decide(ps, api, &in, &d);
    ck_assert(!d.allowed);
    ck_assert_str_eq(d.reasons.v[0], "no policy grants someone access");
    gw_decision_free(&d);
    cJSON_Delete(other);
    gw_route_free(&route);
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_agency_target_restricted_locations)
{
    /* agency in grant.types but locations not "*" */
    struct gw_policies *ps =
        load1(POL("['L1']", ",'grant':{'types':['account','agency'],'roles':['user','admin']}"));
    /* an agency user reaches every location: outside any list, whatever its locationIds */
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'agency','role':'admin'},'scopes':[]}",
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 is an agency user");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'agency','role':'admin','locationIds':['L1']},"
                  "'scopes':[]}",
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 is an agency user");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_agency_target_needs_agency_in_types)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD));
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'agency','role':'user'},'scopes':[]}",
                  "policy p: user u1 has type agency, which this policy may not grant");
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}",
                  "{'id':'u1','roles':{'type':'agency','role':'user'},'scopes':[]}",
                  "policy p: user u1 has type agency, which this policy may not grant");
    gw_policies_free(ps);
    /* no grant at all: no agency in types either */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ""));
    ASSERT_DENIED_FIRST(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                        "{'id':'u1','roles':{'type':'agency','role':'admin'},'scopes':[]}",
                        "policy p: user u1 has type agency, which this policy may not grant");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_agency_target_allowed_with_star_and_agency_type)
{
    struct gw_policies *ps =
        load1(POL("'*'", ",'grant':{'types':['account','agency'],'roles':['user','admin']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                   "{'id':'u1','roles':{'type':'agency','role':'admin'},'scopes':[]}");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}",
                   "{'id':'u1','roles':{'type':'agency','role':'admin'},'scopes':[]}");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_grant_type_and_role)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'type':'agency'}", ACCOUNT_IN("['L1']"),
                  "policy p: type agency is not grantable");
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'role':'admin'}", ACCOUNT_IN("['L1']"),
                  "policy p: role admin is not grantable");
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'role':'admin','type':'agency'}",
                  ACCOUNT_IN("['L1']"), "policy p: type agency is not grantable",
                  "policy p: role admin is not grantable");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'type':'account','role':'user'}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_grant_scope_globs)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD));
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1",
                   "{'scopes':['contacts.write','contacts.a.b','conversations/message.readonly',"
                   "'conversations/']}",
                   ACCOUNT_IN("['L1']"));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1",
                  "{'scopes':['contactsx.write','contacts.write','calendars.write',"
                  "'conversations.write','xcontacts.write']}",
                  ACCOUNT_IN("['L1']"), "policy p: scope contactsx.write is not grantable",
                  "policy p: scope calendars.write is not grantable",
                  "policy p: scope conversations.write is not grantable",
                  "policy p: scope xcontacts.write is not grantable");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_grant_scope_star_in_middle_and_everything)
{
    struct gw_policies *ps =
        load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],"
                         "'scopes':['calendars*write'],'scopes_assigned_to_only':['*']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1",
                   "{'scopes':['calendars.write','calendars/events.write'],"
                   "'scopesAssignedToOnly':['locations.create','contacts.write']}",
                   ACCOUNT_IN("['L1']"));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'scopes':['calendars.readonly']}",
                  ACCOUNT_IN("['L1']"), "policy p: scope calendars.readonly is not grantable");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_within_caller_scopes_on)
{
    struct gw_policies *ps =
        load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],"
                         "'scopes':['contacts.*','conversations/*'],"
                         "'scopes_assigned_to_only':['contacts.write','conversations.write'],"
                         "'within_caller_scopes':true}"));
    const char *c = "{'sub':'bot','scope':'users.write contacts.write'}";
    ASSERT_DENIED(ps, "p", c, "PUT", "/users/u1",
                  "{'scopes':['contacts.write','conversations/message.readonly']}",
                  ACCOUNT_IN("['L1']"),
                  "policy p: scope conversations/message.readonly is not held by the caller");
    ASSERT_DENIED(ps, "p", c, "PUT", "/users/u1",
                  "{'scopesAssignedToOnly':['conversations.write','contacts.write']}",
                  ACCOUNT_IN("['L1']"),
                  "policy p: scope conversations.write is not held by the caller");
    ASSERT_ALLOWED(ps, "p", c, "PUT", "/users/u1",
                   "{'scopes':['contacts.write'],'scopesAssignedToOnly':['contacts.write']}",
                   ACCOUNT_IN("['L1']"));
    /* exact words, never substrings of the scope claim */
    ASSERT_DENIED(ps, "p", "{'sub':'bot','scope':'users.write contacts.writes'}", "PUT",
                  "/users/u1", "{'scopes':['contacts.write']}", ACCOUNT_IN("['L1']"),
                  "policy p: scope contacts.write is not held by the caller");
    gw_policies_free(ps);
    /* under "*" ceilings too, a bound by the caller's scopes needs the lists sent: left out,
     * the upstream's undocumented default would escape it */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],'scopes':['*'],"
                          "'scopes_assigned_to_only':['*'],'within_caller_scopes':true}"));
    ASSERT_DENIED(ps, "p", c, "POST", "/users/", CREATE(""), NULL, MUST_SCOPES, MUST_SATO);
    ASSERT_ALLOWED(ps, "p", c, "POST", "/users/",
                   CREATE(",'scopes':['contacts.write'],'scopesAssignedToOnly':[]"), NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_within_caller_scopes_off)
{
    struct gw_policies *ps = load1(POL(
        "'*'", ",'grant':{'types':['account'],'roles':['user'],"
               "'scopes':['contacts.*','conversations/*'],"
               "'scopes_assigned_to_only':['conversations.write'],'within_caller_scopes':false}"));
    const char *c = "{'sub':'bot','scope':'users.write'}";
    ASSERT_ALLOWED(ps, "p", c, "PUT", "/users/u1",
                   "{'scopes':['contacts.write','conversations/message.readonly'],"
                   "'scopesAssignedToOnly':['conversations.write']}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
    /* and off by default */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", GRANT_STD));
    ASSERT_ALLOWED(ps, "p", c, "PUT", "/users/u1", "{'scopes':['contacts.write']}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_scopes_assigned_to_only)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD));
    ASSERT_DENIED(
        ps, "p", BOT, "PUT", "/users/u1",
        "{'scopesAssignedToOnly':['contacts.write','conversations.write',"
        "'contacts/bulkActions.write']}",
        ACCOUNT_IN("['L1']"),
        "policy p: scope conversations.write is not grantable as assigned-to-only",
        "policy p: scope contacts/bulkActions.write is not grantable as assigned-to-only");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'scopesAssignedToOnly':['contacts.write']}",
                   ACCOUNT_IN("['L1']"));
    /* scopes before scopesAssignedToOnly, whatever the body's order */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1",
                  "{'scopesAssignedToOnly':['conversations.write'],'scopes':['calendars.write']}",
                  ACCOUNT_IN("['L1']"), "policy p: scope calendars.write is not grantable",
                  "policy p: scope conversations.write is not grantable as assigned-to-only");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_create_must_send_scope_lists)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD));
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL, MUST_SCOPES, MUST_SATO);
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/", CREATE(",'scopes':['contacts.write']"), NULL,
                  MUST_SATO);
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/", CREATE(",'scopesAssignedToOnly':[]"), NULL,
                  MUST_SCOPES);
    /* [] counts as sent */
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/",
                   CREATE(",'scopes':[],'scopesAssignedToOnly':[]"), NULL);
    /* update-user need not send them */
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}", ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_create_need_not_send_scopes_under_star)
{
    struct gw_policies *ps =
        load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],'scopes':['*'],"
                         "'scopes_assigned_to_only':['*']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL);
    gw_policies_free(ps);
    /* only one of them "*" */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],'scopes':['*'],"
                          "'scopes_assigned_to_only':['contacts.write']}"));
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL, MUST_SATO);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_omitted_grant_lists_are_empty)
{
    struct gw_policies *ps = load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/",
                   CREATE(",'scopes':[],'scopesAssignedToOnly':[]"), NULL);
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  CREATE(",'scopes':['contacts.write'],'scopesAssignedToOnly':['contacts.write']"),
                  NULL, "policy p: scope contacts.write is not grantable",
                  "policy p: scope contacts.write is not grantable as assigned-to-only");
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL, MUST_SCOPES, MUST_SATO);
    gw_policies_free(ps);
    /* grant {}: no type, no role */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ",'grant':{}"));
    ASSERT_DENIED(
        ps, "p", BOT, "PUT", "/users/u1", "{'type':'account','role':'user'}", ACCOUNT_IN("['L1']"),
        "policy p: user u1 has type account, which this policy may not grant",
        "policy p: user u1 has role user, which this policy may not grant",
        "policy p: type account is not grantable", "policy p: role user is not grantable");
    /* and so it touches no user at all, even to empty its lists */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1",
                  "{'scopes':[],'scopesAssignedToOnly':[],'permissions':{'paymentsEnabled':true}}",
                  ACCOUNT_IN("['L1']"),
                  "policy p: user u1 has type account, which this policy may not grant",
                  "policy p: user u1 has role user, which this policy may not grant");
    gw_policies_free(ps);
    /* types and roles given, the other lists omitted: lists may be emptied */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1",
                   "{'scopes':[],'scopesAssignedToOnly':[],'permissions':{'paymentsEnabled':true}}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_without_grant_denies_each_granting_member)
{
    struct gw_policies *ps = load1(POL("'*'", ""));
    /* body order shuffled: the reasons follow the catalogue's order */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1",
                  "{'locationIds':['L1'],'permissions':{'contactsEnabled':true},"
                  "'scopesAssignedToOnly':[],'scopes':[],'role':'user','type':'account',"
                  "'firstName':'X'}",
                  ACCOUNT_IN("['L1']"),
                  "policy p: user u1 has type account, which this policy may not grant",
                  "policy p: user u1 has role user, which this policy may not grant",
                  "policy p: grants nothing; the request sets type",
                  "policy p: grants nothing; the request sets role",
                  "policy p: grants nothing; the request sets scopes",
                  "policy p: grants nothing; the request sets scopesAssignedToOnly",
                  "policy p: grants nothing; the request sets permissions",
                  "policy p: grants nothing; the request sets locationIds");
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'scopes':[]}", ACCOUNT_IN("['L1']"),
                  "policy p: user u1 has type account, which this policy may not grant",
                  "policy p: user u1 has role user, which this policy may not grant",
                  "policy p: grants nothing; the request sets scopes");
    /* who may not grant may not touch: not even a name */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}", ACCOUNT_IN("['L1']"),
                  "policy p: user u1 has type account, which this policy may not grant",
                  "policy p: user u1 has role user, which this policy may not grant");
    /* create-user always sets type, role and locationIds */
    struct gw_decision d;
    decide(ps, BOT, "POST", "/users/", CREATE(",'scopes':[],'scopesAssignedToOnly':[]"), NULL, &d);
    char *t = reasons_text(&d);
    ck_assert_msg(!d.allowed, "create-user allowed without grant");
    ck_assert_msg(d.reasons.n >= 3, "%s", t);
    ck_assert_str_eq(d.reasons.v[0], "policy p: grants nothing; the request sets type");
    free(t);
    gw_decision_free(&d);
    gw_policies_free(ps);
}
END_TEST

#define PIN_PAY                                                                                    \
    ",'grant':{'types':['account'],'roles':['user'],'scopes':['*'],'scopes_assigned_to_only':['*'" \
    "],'permissions':{'paymentsEnabled':false}}"

START_TEST(test_policy_denies_default_payments_flag)
{
    struct gw_policies *ps = load1(POL("'*'", PIN_PAY));
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL,
                  "policy p: permissions.paymentsEnabled defaults to true but must be false; "
                  "send it explicitly");
    /* a permissions object without the flag: the default still applies */
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  CREATE(",'permissions':{'contactsEnabled':true}"), NULL,
                  "policy p: permissions.paymentsEnabled defaults to true but must be false; "
                  "send it explicitly");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_create_with_pinned_value_sent_allowed)
{
    struct gw_policies *ps = load1(POL("'*'", PIN_PAY));
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/",
                   CREATE(",'permissions':{'paymentsEnabled':false}"), NULL);
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  CREATE(",'permissions':{'paymentsEnabled':true}"), NULL,
                  "policy p: permissions.paymentsEnabled is true but must be false");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_pin_satisfied_by_default_allowed)
{
    struct gw_policies *ps =
        load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],'scopes':['*'],"
                         "'scopes_assigned_to_only':['*'],'permissions':{'contactsEnabled':true,"
                         "'websitesEnabled':false}}"));
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL);
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  CREATE(",'permissions':{'websitesEnabled':true,'contactsEnabled':false}"), NULL,
                  "policy p: permissions.contactsEnabled is false but must be true",
                  "policy p: permissions.websitesEnabled is true but must be false");
    gw_policies_free(ps);
}
END_TEST

/* A user-role account user in L1 whose paymentsEnabled is false (within PIN_PAY). */
#define ACCOUNT_NOPAY                                                                              \
    "{'id':'u1','roles':{'type':'account','role':'user','locationIds':['L1']},'scopes':[],"        \
    "'permissions':{'paymentsEnabled':false}}"

/* An update that sends no permissions changes no flag: the request's are not checked, the
 * target's own flags are (target within the grant). */
START_TEST(test_policy_update_without_permissions_not_pin_checked)
{
    struct gw_policies *ps = load1(POL("'*'", PIN_PAY));
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1",
                   "{'firstName':'X','scopes':['contacts.write']}", ACCOUNT_NOPAY);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_update_with_unrelated_flag_checks_defaults)
{
    struct gw_policies *ps = load1(POL("'*'", PIN_PAY));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'permissions':{'contactsEnabled':false}}",
                  ACCOUNT_NOPAY,
                  "policy p: permissions.paymentsEnabled defaults to true but must be false; "
                  "send it explicitly");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1",
                   "{'permissions':{'contactsEnabled':false,'paymentsEnabled':false}}",
                   ACCOUNT_NOPAY);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_pins_in_document_flag_order)
{
    /* written in the policy in another order; the document has assignedDataOnly, then
     * settingsEnabled, then paymentsEnabled */
    struct gw_policies *ps =
        load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],'scopes':['*'],"
                         "'scopes_assigned_to_only':['*'],'permissions':{'paymentsEnabled':false,"
                         "'settingsEnabled':false,'assignedDataOnly':true}}"));
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL,
                  "policy p: permissions.assignedDataOnly defaults to false but must be true; "
                  "send it explicitly",
                  "policy p: permissions.settingsEnabled defaults to true but must be false; "
                  "send it explicitly",
                  "policy p: permissions.paymentsEnabled defaults to true but must be false; "
                  "send it explicitly");
    /* sent in yet another order, mixing sent and defaulted */
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  CREATE(",'permissions':{'paymentsEnabled':true,'assignedDataOnly':false}"), NULL,
                  "policy p: permissions.assignedDataOnly is false but must be true",
                  "policy p: permissions.settingsEnabled defaults to true but must be false; "
                  "send it explicitly",
                  "policy p: permissions.paymentsEnabled is true but must be false");
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/",
                   CREATE(",'permissions':{'paymentsEnabled':false,'assignedDataOnly':true,"
                          "'settingsEnabled':false}"),
                   NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_max_locations)
{
    struct gw_policies *ps =
        load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user'],'max_locations':2}"));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'locationIds':['L1','L2','L3']}",
                  ACCOUNT_IN("['L1']"), "policy p: 3 locations exceed the limit of 2");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'locationIds':['L1','L2']}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
    /* omitted: no cap */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ",'grant':{'types':['account'],'roles':['user']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1",
                   "{'locationIds':['L1','L2','L3','L4','L5','L6','L7','L8','L9']}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_fields_forbid)
{
    struct gw_policies *ps = load1(POL("'*'", GRANT_STD ",'fields':{'forbid':['twilioPhone']}"));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X','twilioPhone':{}}",
                  ACCOUNT_IN("['L1']"), "policy p: field twilioPhone may not be written");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X','phone':'+15550100'}",
                   ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
    /* firstName may be forbidden too */
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", GRANT_STD ",'fields':{'forbid':['firstName']}"));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'firstName':'X'}", ACCOUNT_IN("['L1']"),
                  "policy p: field firstName may not be written");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_several_violations_in_order)
{
    struct gw_policies *ps = load1(
        "{'name':'p','subjects':[{'sub':'bot'}],'operations':" ALLOPS
        ",'companies':['c1'],'locations':['L1','L2','L3'],"
        "'grant':{'types':['account'],'roles':['user'],'scopes':['contacts.*'],"
        "'scopes_assigned_to_only':['contacts.write'],'permissions':{'paymentsEnabled':false},"
        "'max_locations':2},'fields':{'forbid':['twilioPhone']}}");
    /* body members in an order unlike the checks' */
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  "{'twilioPhone':{},'permissions':{'paymentsEnabled':true},"
                  "'scopesAssignedToOnly':['conversations.write'],'scopes':['calendars.write'],"
                  "'role':'admin','type':'agency','locationIds':['L1','L9','L2'],"
                  "'companyId':'c9','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"
                  "'password':'Secret-pass-123'}",
                  NULL, "policy p: company c9 is not allowed",
                  "policy p: location L9 is not allowed", "policy p: type agency is not grantable",
                  "policy p: role admin is not grantable",
                  "policy p: scope calendars.write is not grantable",
                  "policy p: scope conversations.write is not grantable as assigned-to-only",
                  "policy p: permissions.paymentsEnabled is true but must be false",
                  "policy p: 3 locations exceed the limit of 2",
                  "policy p: an agency user reaches every location; only a policy whose "
                  "locations are \"*\" may create one",
                  "policy p: field twilioPhone may not be written");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_several_violations_update_with_target)
{
    struct gw_policies *ps =
        load1("{'name':'p','subjects':[{'sub':'bot'}],'operations':" ALLOPS
              ",'companies':['c1'],'locations':['L1'],"
              "'grant':{'types':['account'],'roles':['user'],'scopes':['contacts.*']},"
              "'fields':{'forbid':['phone']}}");
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1",
                  "{'phone':'+1555','role':'admin','locationIds':['L5'],'companyId':'c2'}",
                  ACCOUNT_IN("['L1','L6']"), "policy p: company c2 is not allowed",
                  "policy p: location L5 is not allowed",
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 is in location L6, outside this policy",
                  "policy p: role admin is not grantable",
                  "policy p: field phone may not be written");
    gw_policies_free(ps);
}
END_TEST

/* ---- target within the grant (SPEC 6.3): no escalation through the target ---- */

/* The onboarding bot's shape: user role only, some scopes, pins. */
#define BOT_GRANT                                                                                  \
    ",'grant':{'types':['account'],'roles':['user'],'scopes':['contacts.*','conversations/*'],"    \
    "'scopes_assigned_to_only':['contacts.write'],"                                                \
    "'permissions':{'paymentsEnabled':false,'assignedDataOnly':true}}"

/* A user in L1 with the given role, scopes and permissions members (each a JSON fragment). */
#define USER_IN_L1(role, scopes, perms)                                                            \
    "{'id':'u1','roles':{'type':'account','role':" role ",'locationIds':['L1']},'scopes':" scopes  \
    ",'permissions':" perms "}"

#define BOT_PERMS "{'paymentsEnabled':false,'assignedDataOnly':true}"

/* Found when the gateway was attacked: a user-role-only policy could send a password to an
 * admin of its location. The admin is refused for update (whatever the body) and delete. */
START_TEST(test_policy_target_admin_refused_for_update_and_delete)
{
    struct gw_policies *ps = load1(POL("['L1']", BOT_GRANT));
    const char *admin = USER_IN_L1("'admin'", "['contacts.write']", BOT_PERMS);
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'password':'Takeover-1234!'}", admin,
                  "policy p: user u1 has role admin, which this policy may not grant");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, admin,
                  "policy p: user u1 has role admin, which this policy may not grant");
    /* lowering its privileges needs a policy that could grant them too */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'role':'user'}", admin,
                  "policy p: user u1 has role admin, which this policy may not grant");
    /* the same user with the user role is within the grant */
    const char *user = USER_IN_L1("'user'", "['contacts.write']", BOT_PERMS);
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'password':'Reset-1234!x'}", user);
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL, user);
    gw_policies_free(ps);
    /* a policy that grants admin may touch admins */
    remove_dir();
    make_dir();
    ps = load1(POL("['L1']", ",'grant':{'types':['account'],'roles':['user','admin'],"
                             "'scopes':['contacts.*'],'permissions':{'paymentsEnabled':false,"
                             "'assignedDataOnly':true}}"));
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'password':'Reset-1234!x'}", admin);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_target_scope_outside_the_grant)
{
    struct gw_policies *ps = load1(POL("['L1']", BOT_GRANT));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'password':'Takeover-1234!'}",
                  USER_IN_L1("'user'",
                             "['contacts.write','payments.write','conversations/message.readonly']",
                             BOT_PERMS),
                  "policy p: user u1 holds scope payments.write, which this policy may not grant");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  USER_IN_L1("'user'", "['settings.write']", BOT_PERMS),
                  "policy p: user u1 holds scope settings.write, which this policy may not grant");
    /* the document declares scopes a string: space-separated words, each checked */
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  USER_IN_L1("'user'", "'contacts.write  payments.write '", BOT_PERMS),
                  "policy p: user u1 holds scope payments.write, which this policy may not grant");
    ASSERT_ALLOWED(
        ps, "p", BOT, "DELETE", "/users/u1", NULL,
        USER_IN_L1("'user'", "'contacts.write conversations/message.readonly'", BOT_PERMS));
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                   USER_IN_L1("'user'", "''", BOT_PERMS));
    /* an answer without scopes says nothing of what the user holds */
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'account','role':'user','locationIds':['L1']},"
                  "'permissions':" BOT_PERMS "}",
                  "policy p: user u1 is answered without its scopes, so this policy cannot tell "
                  "whether it may grant them");
    /* a scope longer than any real one is not grantable (and not copied whole) */
    char big[700];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *user = NULL;
    ck_assert_int_ge(asprintf(&user, USER_IN_L1("'user'", "['%s']", BOT_PERMS), big), 0);
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, user,
                  "policy p: user u1 holds a scope of 699 characters, which this policy may not "
                  "grant");
    free(user);
    gw_policies_free(ps);
    /* scopes ["*"]: any scope, and an unknown list, are within */
    remove_dir();
    make_dir();
    ps = load1(POL("['L1']", ",'grant':{'types':['account'],'roles':['user'],'scopes':['*']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                   USER_IN_L1("'user'", "['payments.write']", "{}"));
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                   "{'id':'u1','roles':{'type':'account','role':'user','locationIds':['L1']}}");
    gw_policies_free(ps);
    /* within_caller_scopes: the target's scopes must be the caller's too */
    remove_dir();
    make_dir();
    ps = load1(POL("['L1']", ",'grant':{'types':['account'],'roles':['user'],'scopes':['*'],"
                             "'within_caller_scopes':true}"));
    const char *caller = "{'sub':'bot','scope':'users.write contacts.write'}";
    ASSERT_DENIED(ps, "p", caller, "DELETE", "/users/u1", NULL,
                  USER_IN_L1("'user'", "['contacts.write','medias.readonly']", "{}"),
                  "policy p: user u1 holds scope medias.readonly, which the caller does not hold");
    ASSERT_ALLOWED(ps, "p", caller, "DELETE", "/users/u1", NULL,
                   USER_IN_L1("'user'", "['contacts.write']", "{}"));
    ASSERT_DENIED(ps, "p", caller, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'account','role':'user','locationIds':['L1']}}",
                  "policy p: user u1 is answered without its scopes, so this policy cannot tell "
                  "whether it may grant them");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_target_pinned_flags)
{
    struct gw_policies *ps = load1(POL("['L1']", BOT_GRANT));
    /* sent by the upstream with another value */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'password':'Takeover-1234!'}",
                  USER_IN_L1("'user'", "[]", "{'paymentsEnabled':true,'assignedDataOnly':true}"),
                  "policy p: user u1 has permissions.paymentsEnabled true, which this policy "
                  "pins to false");
    /* left out: the document's default (assignedDataOnly false, paymentsEnabled true), in the
     * document's flag order */
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, USER_IN_L1("'user'", "[]", "{}"),
                  "policy p: user u1 has permissions.assignedDataOnly false (the default), "
                  "which this policy pins to true",
                  "policy p: user u1 has permissions.paymentsEnabled true (the default), which "
                  "this policy pins to false");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  "{'id':'u1','roles':{'type':'account','role':'user','locationIds':['L1']},"
                  "'scopes':[]}",
                  "policy p: user u1 has permissions.assignedDataOnly false (the default), "
                  "which this policy pins to true",
                  "policy p: user u1 has permissions.paymentsEnabled true (the default), which "
                  "this policy pins to false");
    /* an update that sends every pinned flag still may not touch a user outside the pins:
     * the pins hold on the user before the change as well */
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1",
                  "{'permissions':{'paymentsEnabled':false,'assignedDataOnly':true}}",
                  USER_IN_L1("'user'", "[]", "{'paymentsEnabled':true,'assignedDataOnly':true}"),
                  "policy p: user u1 has permissions.paymentsEnabled true, which this policy "
                  "pins to false");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                  USER_IN_L1("'user'", "[]", "{'paymentsEnabled':'no','assignedDataOnly':true}"),
                  "policy p: user u1 has a permissions.paymentsEnabled that is not true or false");
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, USER_IN_L1("'user'", "[]", "[false]"),
                  "policy p: user u1 has permissions this policy cannot read");
    /* flags the policy does not pin are anything */
    ASSERT_ALLOWED(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                   USER_IN_L1("'user'", "[]",
                              "{'paymentsEnabled':false,'assignedDataOnly':true,"
                              "'settingsEnabled':true,'someNewFlag':1}"));
    gw_policies_free(ps);
}
END_TEST

/* A location-bound policy names a target outside its locations only as outside: the first
 * reason (the 403's message) holds no location id, role, scope or flag of that user; the
 * reasons after it (the audit record's) hold them all. Inside, the exact reason comes first. */
START_TEST(test_policy_outside_target_reveals_nothing)
{
    struct gw_policies *ps = load1(POL("['L1']", BOT_GRANT));
    static const char *const outside[] = {
        "{'id':'u1','roles':{'type':'account','role':'admin','locationIds':['L7']},"
        "'scopes':['payments.write'],'permissions':{'paymentsEnabled':true}}",
        "{'id':'u1','roles':{'type':'account','role':'admin','locationIds':['L1','L7']},"
        "'scopes':['payments.write']}",
        "{'id':'u1','roles':{'type':'agency','role':'admin'},'scopes':['payments.write']}",
        "{'id':'u1','roles':{'type':'account','role':'user','locationIds':[]},'scopes':[]}",
        "{'id':'u1','scopes':[]}",
    };
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++) {
        struct gw_decision d;
        decide(ps, BOT, "PUT", "/users/u1", "{'password':'Takeover-1234!'}", outside[i], &d);
        char *t = reasons_text(&d);
        ck_assert_msg(!d.allowed && d.reasons.n >= 2, "%s", t);
        ck_assert_str_eq(d.reasons.v[0], "policy p: user u1 is outside this policy's locations");
        ck_assert_msg(strstr(d.reasons.v[0], "L7") == NULL, "%s", t);
        free(t);
        gw_decision_free(&d);
    }
    /* the audit's reasons are complete */
    ASSERT_DENIED(ps, "p", BOT, "DELETE", "/users/u1", NULL, outside[0],
                  "policy p: user u1 is outside this policy's locations",
                  "policy p: user u1 is in location L7, outside this policy",
                  "policy p: user u1 has role admin, which this policy may not grant",
                  "policy p: user u1 holds scope payments.write, which this policy may not grant",
                  "policy p: user u1 has permissions.assignedDataOnly false (the default), which "
                  "this policy pins to true",
                  "policy p: user u1 has permissions.paymentsEnabled true, which this policy "
                  "pins to false");
    /* inside: the exact reason first */
    ASSERT_DENIED_FIRST(ps, "p", BOT, "DELETE", "/users/u1", NULL,
                        USER_IN_L1("'admin'", "['payments.write']", BOT_PERMS),
                        "policy p: user u1 has role admin, which this policy may not grant");
    gw_policies_free(ps);
}
END_TEST

/* An agency user reaches every location (locationIds [] included): only a policy whose
 * locations are "*" may create one or make one, even with agency in grant.types. */
START_TEST(test_policy_agency_user_needs_every_location)
{
    struct gw_policies *ps =
        load1(POL("['L1']", ",'grant':{'types':['account','agency'],'roles':['user'],"
                            "'scopes':['*'],'scopes_assigned_to_only':['*']}"));
    static const char *const msg_create = "policy p: an agency user reaches every location; only "
                                          "a policy whose locations are \"*\" may create one";
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  "{'companyId':'c1','firstName':'Ann','lastName':'Lee','email':'a@example.com',"
                  "'password':'Secret-pass-123','type':'agency','role':'user','locationIds':[]}",
                  NULL, msg_create);
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  "{'companyId':'c1','firstName':'Ann','lastName':'Lee','email':'a@example.com',"
                  "'password':'Secret-pass-123','type':'Agency','role':'user','locationIds':["
                  "'L1']}",
                  NULL, "policy p: type Agency is not grantable",
                  "policy p: an agency user reaches every location; only a policy whose "
                  "locations are \"*\" may create one");
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1", "{'type':'agency'}", ACCOUNT_IN("['L1']"),
                  "policy p: an agency user reaches every location; only a policy whose "
                  "locations are \"*\" may make one");
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/", CREATE(""), NULL);
    gw_policies_free(ps);
    remove_dir();
    make_dir();
    ps = load1(POL("'*'", ",'grant':{'types':['account','agency'],'roles':['user'],"
                          "'scopes':['*'],'scopes_assigned_to_only':['*']}"));
    ASSERT_ALLOWED(ps, "p", BOT, "POST", "/users/",
                   "{'companyId':'c1','firstName':'Ann','lastName':'Lee','email':'a@example.com',"
                   "'password':'Secret-pass-123','type':'agency','role':'user','locationIds':[]}",
                   NULL);
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'type':'agency'}", ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
}
END_TEST

/* twilioPhone is keyed by location id: each key is a location the request names. */
START_TEST(test_policy_twilio_phone_keys_are_locations)
{
    struct gw_policies *ps = load1(POL("['L1','L2']", GRANT_STD));
    ASSERT_DENIED(ps, "p", BOT, "PUT", "/users/u1",
                  "{'twilioPhone':{'L1':'+15550100','L9':'+15550101','L8':''}}",
                  ACCOUNT_IN("['L1']"), "policy p: location L9 is not allowed",
                  "policy p: location L8 is not allowed");
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  CREATE(",'scopes':[],'scopesAssignedToOnly':[],'twilioPhone':{'L9':'+1555'}"),
                  NULL, "policy p: location L9 is not allowed");
    /* a location named twice is reported once */
    ASSERT_DENIED(ps, "p", BOT, "POST", "/users/",
                  "{'companyId':'c1','firstName':'Ann','lastName':'Lee','email':'a@example.com',"
                  "'password':'Secret-pass-123','type':'account','role':'user','locationIds':["
                  "'L9'],'scopes':[],'scopesAssignedToOnly':[],'twilioPhone':{'L9':'+1555'}}",
                  NULL, "policy p: location L9 is not allowed");
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'twilioPhone':{'L1':'+15550100','L2':''}}",
                   ACCOUNT_IN("['L1']"));
    ASSERT_ALLOWED(ps, "p", BOT, "PUT", "/users/u1", "{'twilioPhone':{}}", ACCOUNT_IN("['L1']"));
    gw_policies_free(ps);
    /* locations from a claim */
    remove_dir();
    make_dir();
    ps = load1(POL("{'claim':'locs'}", GRANT_STD));
    const char *c = "{'sub':'bot','scope':'users.write','locs':['L3']}";
    ASSERT_DENIED(ps, "p", c, "PUT", "/users/u1", "{'twilioPhone':{'L1':'+1555'}}",
                  ACCOUNT_IN("['L3']"), "policy p: location L1 is not allowed");
    ASSERT_ALLOWED(ps, "p", c, "PUT", "/users/u1", "{'twilioPhone':{'L3':'+1555'}}",
                   ACCOUNT_IN("['L3']"));
    gw_policies_free(ps);
}
END_TEST

/* ======================= 4. decision across policies ======================= */

START_TEST(test_policy_first_allowing_policy_wins)
{
    put("10-alpha.json", "{'name':'alpha','subjects':[{'sub':'bot'}],'operations':['get-user'],"
                         "'companies':'*','locations':'*'}");
    put("20-beta.json", "{'name':'beta','subjects':[{'sub':'bot'}],'operations':['delete-user'],"
                        "'companies':'*','locations':'*',"
                        "'grant':{'types':['account'],'roles':['user']}}");
    put("30-gamma.json", "{'name':'gamma','subjects':[{'sub':'bot'}],'operations':" ALLOPS
                         ",'companies':'*','locations':'*',"
                         "'grant':{'types':['account'],'roles':['user']}}");
    struct gw_policies *ps = load_ok();
    ck_assert_uint_eq(ps->n, 3);
    struct gw_decision d;
    decide(ps, BOT, "DELETE", "/users/u1", NULL, ACCOUNT_IN("['L1']"), &d);
    char *t = reasons_text(&d);
    ck_assert_msg(d.allowed, "%s", t);
    ck_assert_msg(d.policy && strcmp(gw_policy_name(d.policy), "beta") == 0, "%s", t);
    free(t);
    gw_decision_free(&d);
    ASSERT_ALLOWED(ps, "alpha", BOT, "GET", "/users/u1", NULL, NULL);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_all_deny_reasons_of_every_matching_policy)
{
    put("a.json", "{'name':'zed','subjects':[{'sub':'bot'}],'operations':['get-user'],"
                  "'companies':'*','locations':'*'}");
    put("b.json", "{'name':'acme','subjects':[{'groups':'ops'}],'operations':" ALLOPS
                  ",'companies':['c1'],'locations':['L1']}");
    struct gw_policies *ps = load_ok();
    ASSERT_DENIED(ps, "zed", "{'sub':'bot','groups':['ops']}", "GET",
                  "/users/search?companyId=c9&locationId=L9", NULL, NULL,
                  "policy zed: operation search-users is not allowed",
                  "policy acme: company c9 is not allowed",
                  "policy acme: location L9 is not allowed");
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_non_matching_policy_contributes_nothing)
{
    put("a.json", "{'name':'other','subjects':[{'sub':'someone-else'}],'operations':['get-user'],"
                  "'companies':'*','locations':'*'}");
    put("b.json", "{'name':'mine','subjects':[{'sub':'bot'}],'operations':['get-user'],"
                  "'companies':'*','locations':'*'}");
    put("c.json", "{'name':'allows-but-not-me','subjects':[{'sub':'carol'}],'operations':" ALLOPS
                  ",'companies':'*','locations':'*'}");
    struct gw_policies *ps = load_ok();
    ASSERT_DENIED(ps, "mine", BOT, "DELETE", "/users/u1", NULL, ACCOUNT_IN("['L1']"),
                  "policy mine: operation delete-user is not allowed");
    gw_policies_free(ps);
}
END_TEST

/* ======================= 5. reads ======================= */

#define RPOL(locations, rest)                                                                      \
    "{'name':'p','subjects':[{'sub':'bot'}],'operations':" ALLOPS                                  \
    ",'companies':'*','locations':" locations rest "}"

static const struct gw_op *op(const char *id)
{
    const struct gw_op *o = gw_openapi_op(api, id);
    ck_assert_msg(o != NULL, "no op %s", id);
    return o;
}

/* Compares a tree with a single-quoted expected JSON text. */
static void assert_json_eq(const cJSON *got, const char *want_text)
{
    cJSON *want = js(want_text);
    if (!cJSON_Compare(got, want, true)) {
        char *g = cJSON_PrintUnformatted(got);
        char *w = cJSON_PrintUnformatted(want);
        ck_abort_msg("JSON differs\n  want %s\n  got  %s", w, g);
    }
    cJSON_Delete(want);
}

START_TEST(test_policy_visible_by_location)
{
    struct gw_policies *ps = load1(RPOL("['L1','L2']", ""));
    cJSON *c = js(BOT);
    struct {
        const char *user;
        bool visible;
    } cases[] = {
        {"{'id':'u1','roles':{'type':'account','locationIds':['L9','L2']}}", true},
        {"{'id':'u1','roles':{'type':'account','locationIds':['L1']}}", true},
        {"{'id':'u1','roles':{'type':'account','locationIds':['L9']}}", false},
        {"{'id':'u1','roles':{'type':'account','locationIds':[]}}", false},
        {"{'id':'u1','roles':{'type':'agency','role':'admin'}}", false},
        {"{'id':'u1','email':'a@b.co'}", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cJSON *u = js(cases[i].user);
        ck_assert_msg(gw_policy_visible(ps->p, c, u) == cases[i].visible, "case %zu: %s", i,
                      cases[i].user);
        cJSON_Delete(u);
    }
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_visible_star_and_claim)
{
    struct gw_policies *ps = load1(RPOL("'*'", ""));
    cJSON *c = js(BOT);
    cJSON *u = js("{'id':'u1','email':'a@b.co'}");
    ck_assert(gw_policy_visible(ps->p, c, u));
    cJSON_Delete(u);
    cJSON_Delete(c);
    gw_policies_free(ps);
    remove_dir();
    make_dir();
    ps = load1(RPOL("{'claim':'locations'}", ""));
    c = js("{'sub':'bot','locations':['L3']}");
    u = js("{'id':'u1','roles':{'locationIds':['L3']}}");
    ck_assert(gw_policy_visible(ps->p, c, u));
    cJSON_Delete(u);
    u = js("{'id':'u1','roles':{'locationIds':['L1']}}");
    ck_assert(!gw_policy_visible(ps->p, c, u));
    cJSON_Delete(u);
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_get_user_outside_locations_refused)
{
    struct gw_policies *ps = load1(RPOL("['L1']", ""));
    cJSON *c = js(BOT);
    cJSON *reply = js("{'id':'u9','name':'X','roles':{'type':'account','locationIds':['L9']}}");
    char why[256] = "";
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("get-user"), c, reply, why, sizeof why),
                     GW_FILTER_FORBIDDEN);
    ck_assert_str_eq(why, "policy p: user u9 is outside this policy's locations");
    cJSON_Delete(reply);
    /* a user without roles.locationIds */
    reply = js("{'id':'u8','name':'Agency'}");
    why[0] = '\0';
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("get-user"), c, reply, why, sizeof why),
                     GW_FILTER_FORBIDDEN);
    ck_assert_str_eq(why, "policy p: user u8 is outside this policy's locations");
    cJSON_Delete(reply);
    /* visible: passes unchanged */
    reply = js("{'id':'u1','phone':'+1','roles':{'type':'account','locationIds':['L1']}}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("get-user"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply,
                   "{'id':'u1','phone':'+1','roles':{'type':'account','locationIds':['L1']}}");
    cJSON_Delete(reply);
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_list_drops_invisible_and_lowers_count)
{
    struct gw_policies *ps = load1(RPOL("['L1','L2']", ""));
    cJSON *c = js(BOT);
    cJSON *reply = js("{'users':["
                      "{'id':'a','roles':{'locationIds':['L1']}},"
                      "{'id':'b','roles':{'locationIds':['L9']}},"
                      "{'id':'c','roles':{'type':'agency'}},"
                      "{'id':'d'},"
                      "{'id':'e','roles':{'locationIds':['L8','L2']}}],'count':5}");
    char why[256] = "";
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("search-users"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply, "{'users':[{'id':'a','roles':{'locationIds':['L1']}},"
                          "{'id':'e','roles':{'locationIds':['L8','L2']}}],'count':2}");
    cJSON_Delete(reply);
    /* count is the total of matches, not the page: lowered by the number dropped */
    reply = js("{'users':[{'id':'a','roles':{'locationIds':['L1']}},"
               "{'id':'b','roles':{'locationIds':['L9']}}],'count':40}");
    ck_assert_int_eq(
        gw_policy_filter_reply(ps->p, op("filter-users-by-email"), c, reply, why, sizeof why),
        GW_FILTER_OK);
    assert_json_eq(reply, "{'users':[{'id':'a','roles':{'locationIds':['L1']}}],'count':39}");
    cJSON_Delete(reply);
    /* get-user-by-location: no count in the answer, none added */
    reply = js("{'users':[{'id':'a','roles':{'locationIds':['L1']}},"
               "{'id':'b','roles':{'locationIds':['L9']}}]}");
    ck_assert_int_eq(
        gw_policy_filter_reply(ps->p, op("get-user-by-location"), c, reply, why, sizeof why),
        GW_FILTER_OK);
    assert_json_eq(reply, "{'users':[{'id':'a','roles':{'locationIds':['L1']}}]}");
    cJSON_Delete(reply);
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_redact_single_and_list)
{
    struct gw_policies *ps = load1(RPOL("['L1']", ",'reads':{'redact':['phone','lcPhone']}"));
    cJSON *c = js(BOT);
    char why[256] = "";
    cJSON *reply = js("{'id':'u1','email':'a@b.co','phone':'+1','lcPhone':{'L1':1},"
                      "'roles':{'locationIds':['L1']}}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("get-user"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply, "{'id':'u1','email':'a@b.co','roles':{'locationIds':['L1']}}");
    cJSON_Delete(reply);
    reply = js("{'users':[{'id':'a','phone':'+1','roles':{'locationIds':['L1']}},"
               "{'id':'b','lcPhone':{},'roles':{'locationIds':['L9']}},"
               "{'id':'c','lcPhone':{},'phone':'+2','roles':{'locationIds':['L1']}}],'count':3}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("search-users"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply, "{'users':[{'id':'a','roles':{'locationIds':['L1']}},"
                          "{'id':'c','roles':{'locationIds':['L1']}}],'count':2}");
    cJSON_Delete(reply);
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_redact_under_star_locations)
{
    struct gw_policies *ps = load1(RPOL("'*'", ",'reads':{'redact':['phone']}"));
    cJSON *c = js(BOT);
    char why[256] = "";
    cJSON *reply = js("{'id':'u1','phone':'+1','email':'a@b.co'}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("get-user"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply, "{'id':'u1','email':'a@b.co'}");
    cJSON_Delete(reply);
    reply =
        js("{'users':[{'id':'a','phone':'+1'},{'id':'b','phone':'+2','roles':{'type':'agency'}}],"
           "'count':7}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("search-users"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply, "{'users':[{'id':'a'},{'id':'b','roles':{'type':'agency'}}],'count':7}");
    cJSON_Delete(reply);
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

/* Found in review: answers are filtered by what the op returns, never by their shape. */
START_TEST(test_policy_filter_by_op_not_shape)
{
    struct gw_policies *ps = load1(RPOL("['L1']", ",'reads':{'redact':['phone']}"));
    cJSON *c = js(BOT);
    char why[256] = "";
    /* a get-user answer with a "users" member is still one user, and this one is outside */
    cJSON *reply = js("{'id':'abc','roles':{'locationIds':['L9']},'users':[]}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("get-user"), c, reply, why, sizeof why),
                     GW_FILTER_FORBIDDEN);
    cJSON_Delete(reply);
    /* a get-user answer that is not an object, a list answer that is not a list */
    static const char *const not_user[] = {"[{'id':'a'}]", "'text'", "7", "null"};
    for (size_t i = 0; i < sizeof not_user / sizeof *not_user; i++) {
        reply = js(not_user[i]);
        ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("get-user"), c, reply, why, sizeof why),
                         GW_FILTER_MALFORMED);
        ck_assert_int_eq(
            gw_policy_filter_reply(ps->p, op("create-user"), c, reply, why, sizeof why),
            GW_FILTER_MALFORMED);
        cJSON_Delete(reply);
    }
    static const char *const not_list[] = {"{'id':'a','roles':{'locationIds':['L1']}}",
                                           "{'users':{'id':'a'}}", "{'users':['a']}",
                                           "{'users':[],'count':'3'}", "[{'users':[]}]"};
    for (size_t i = 0; i < sizeof not_list / sizeof *not_list; i++) {
        reply = js(not_list[i]);
        why[0] = '\0';
        ck_assert_int_eq(
            gw_policy_filter_reply(ps->p, op("search-users"), c, reply, why, sizeof why),
            GW_FILTER_MALFORMED);
        ck_assert_msg(strstr(why, "search-users") != NULL, "%s", why);
        cJSON_Delete(reply);
    }
    /* writes: redaction only, never a visibility refusal */
    reply = js("{'id':'n1','phone':'+1','roles':{'locationIds':['L9']}}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("update-user"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply, "{'id':'n1','roles':{'locationIds':['L9']}}");
    cJSON_Delete(reply);
    /* delete answers are left alone */
    reply = js("{'succeded':true,'message':'Queued deleting user with e-mail a@b.co','phone':1}");
    ck_assert_int_eq(gw_policy_filter_reply(ps->p, op("delete-user"), c, reply, why, sizeof why),
                     GW_FILTER_OK);
    assert_json_eq(reply, "{'succeded':true,'message':'Queued deleting user with e-mail a@b.co',"
                          "'phone':1}");
    cJSON_Delete(reply);
    cJSON_Delete(c);
    gw_policies_free(ps);
}
END_TEST

START_TEST(test_policy_filters_reads_flag)
{
    struct {
        const char *text;
        bool filters;
    } cases[] = {
        {RPOL("'*'", ""), false},
        {RPOL("'*'", ",'reads':{'redact':[]}"), false},
        {RPOL("'*'", ",'reads':{'redact':['phone']}"), true},
        {RPOL("['L1']", ""), true},
        {RPOL("{'claim':'locations'}", ""), true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        remove_dir();
        make_dir();
        struct gw_policies *ps = load1(cases[i].text);
        ck_assert_msg(gw_policy_filters_reads(ps->p) == cases[i].filters, "case %zu: %s", i,
                      cases[i].text);
        gw_policies_free(ps);
    }
}
END_TEST

static Suite *policy_suite(void)
{
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("policy");
    tcase_add_unchecked_fixture(tc, load_api, free_api);
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_set_timeout(tc, 30);
    /* 1 */
    tcase_add_test(tc, test_policy_load_valid_example_shape);
    tcase_add_test(tc, test_policy_load_unknown_top_level_key);
    tcase_add_test(tc, test_policy_load_every_problem_in_order);
    tcase_add_test(tc, test_policy_load_unknown_key_in_grant);
    tcase_add_test(tc, test_policy_load_unknown_key_in_fields);
    tcase_add_test(tc, test_policy_load_unknown_key_in_reads);
    tcase_add_test(tc, test_policy_load_unknown_operation);
    tcase_add_test(tc, test_policy_load_unknown_permission_flag);
    tcase_add_test(tc, test_policy_load_non_boolean_pin);
    tcase_add_test(tc, test_policy_load_scope_pattern_matching_nothing);
    tcase_add_test(tc, test_policy_load_exact_scope_not_in_document);
    tcase_add_test(tc, test_policy_load_locations_number);
    tcase_add_test(tc, test_policy_load_locations_claim_not_string);
    tcase_add_test(tc, test_policy_load_locations_other_member);
    tcase_add_test(tc, test_policy_load_duplicate_name_across_files);
    tcase_add_test(tc, test_policy_load_subjects_empty);
    tcase_add_test(tc, test_policy_load_subject_value_not_string);
    tcase_add_test(tc, test_policy_load_invalid_json);
    tcase_add_test(tc, test_policy_load_comments_allowed);
    tcase_add_test(tc, test_policy_load_empty_folder_is_empty_set_denying_all);
    tcase_add_test(tc, test_policy_load_non_json_files_ignored);
    tcase_add_test(tc, test_policy_load_files_in_name_order);
    /* 2 */
    tcase_add_test(tc, test_policy_subject_iss_and_sub);
    tcase_add_test(tc, test_policy_subject_groups_array_claim_contains_value);
    tcase_add_test(tc, test_policy_subject_value_list_any_of);
    tcase_add_test(tc, test_policy_subject_all_members_must_match);
    tcase_add_test(tc, test_policy_subject_other_claim_types_never_match);
    tcase_add_test(tc, test_policy_no_matching_policy_names_sub);
    /* 3 */
    tcase_add_test(tc, test_policy_op_not_allowed_stops_further_checks);
    tcase_add_test(tc, test_policy_company_in_body);
    tcase_add_test(tc, test_policy_company_in_query);
    tcase_add_test(tc, test_policy_company_star_allows_any);
    tcase_add_test(tc, test_policy_locations_from_body_in_order);
    tcase_add_test(tc, test_policy_locations_from_query);
    tcase_add_test(tc, test_policy_locations_from_claim_array);
    tcase_add_test(tc, test_policy_locations_from_claim_string);
    tcase_add_test(tc, test_policy_search_users_must_name_location_when_restricted);
    tcase_add_test(tc, test_policy_reads_not_checked_at_decision);
    tcase_add_test(tc, test_policy_target_outside_locations_update_and_delete);
    tcase_add_test(tc, test_policy_target_without_location);
    tcase_add_test(tc, test_policy_target_odd_shapes_fail_closed);
    tcase_add_test(tc, test_policy_filter_by_op_not_shape);
    tcase_add_test(tc, test_policy_target_pending);
    tcase_add_test(tc, test_policy_agency_target_restricted_locations);
    tcase_add_test(tc, test_policy_agency_target_needs_agency_in_types);
    tcase_add_test(tc, test_policy_agency_target_allowed_with_star_and_agency_type);
    tcase_add_test(tc, test_policy_grant_type_and_role);
    tcase_add_test(tc, test_policy_grant_scope_globs);
    tcase_add_test(tc, test_policy_grant_scope_star_in_middle_and_everything);
    tcase_add_test(tc, test_policy_within_caller_scopes_on);
    tcase_add_test(tc, test_policy_within_caller_scopes_off);
    tcase_add_test(tc, test_policy_scopes_assigned_to_only);
    tcase_add_test(tc, test_policy_create_must_send_scope_lists);
    tcase_add_test(tc, test_policy_create_need_not_send_scopes_under_star);
    tcase_add_test(tc, test_policy_omitted_grant_lists_are_empty);
    tcase_add_test(tc, test_policy_without_grant_denies_each_granting_member);
    tcase_add_test(tc, test_policy_denies_default_payments_flag);
    tcase_add_test(tc, test_policy_create_with_pinned_value_sent_allowed);
    tcase_add_test(tc, test_policy_pin_satisfied_by_default_allowed);
    tcase_add_test(tc, test_policy_update_without_permissions_not_pin_checked);
    tcase_add_test(tc, test_policy_update_with_unrelated_flag_checks_defaults);
    tcase_add_test(tc, test_policy_pins_in_document_flag_order);
    tcase_add_test(tc, test_policy_max_locations);
    tcase_add_test(tc, test_policy_load_max_locations_out_of_range);
    tcase_add_test(tc, test_policy_fields_forbid);
    tcase_add_test(tc, test_policy_several_violations_in_order);
    tcase_add_test(tc, test_policy_several_violations_update_with_target);
    tcase_add_test(tc, test_policy_target_admin_refused_for_update_and_delete);
    tcase_add_test(tc, test_policy_target_scope_outside_the_grant);
    tcase_add_test(tc, test_policy_target_pinned_flags);
    tcase_add_test(tc, test_policy_outside_target_reveals_nothing);
    tcase_add_test(tc, test_policy_agency_user_needs_every_location);
    tcase_add_test(tc, test_policy_twilio_phone_keys_are_locations);
    /* 4 */
    tcase_add_test(tc, test_policy_first_allowing_policy_wins);
    tcase_add_test(tc, test_policy_all_deny_reasons_of_every_matching_policy);
    tcase_add_test(tc, test_policy_non_matching_policy_contributes_nothing);
    /* 5 */
    tcase_add_test(tc, test_policy_visible_by_location);
    tcase_add_test(tc, test_policy_visible_star_and_claim);
    tcase_add_test(tc, test_policy_get_user_outside_locations_refused);
    tcase_add_test(tc, test_policy_list_drops_invisible_and_lowers_count);
    tcase_add_test(tc, test_policy_redact_single_and_list);
    tcase_add_test(tc, test_policy_redact_under_star_locations);
    tcase_add_test(tc, test_policy_filters_reads_flag);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(policy_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
