#include "policy.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fields.h"
#include "json.h"
#include "openapi.h"
#include "route.h"

#define MAX_POLICY_BYTES (1u << 20)
#define MAX_POLICY_FILES 1024

struct strlist {
    char **v;
    size_t n;
};

struct subj_member {
    char *claim;
    struct strlist values; /* any of them */
};

struct subj_entry {
    struct subj_member *m; /* all of them */
    size_t n;
};

enum loc_kind { LOC_ALL, LOC_LIST, LOC_CLAIM };

struct pin {
    size_t flag; /* index into the model's permission flags (document order) */
    bool value;
};

struct gw_policy {
    char *name, *file;
    struct subj_entry *subjects;
    size_t nsubjects;
    struct strlist ops;
    bool companies_all;
    struct strlist companies;
    enum loc_kind loc;
    struct strlist locations;
    char *loc_claim;
    bool has_grant;
    struct strlist types, roles, scopes, sato;
    bool within;
    struct pin *pins;
    size_t npins;
    long max_locations; /* -1: no cap */
    struct strlist forbid, redact;
};

const char *gw_policy_name(const struct gw_policy *p)
{
    return p ? p->name : NULL;
}

const struct gw_policy *gw_policies_at(const struct gw_policies *ps, size_t i)
{
    return ps && i < ps->n ? &ps->p[i] : NULL;
}

/* ---- small helpers ---- */

static bool in_list(const struct strlist *l, const char *s)
{
    for (size_t i = 0; s && i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

/* "*" matches any run of characters (none included); everything else literally; the whole
 * string must match. Iterative, with one backtrack point: linear in practice. */
static bool glob_match(const char *pat, const char *s)
{
    const char *star = NULL, *retry = NULL;
    while (*s) {
        if (*pat == '*') {
            star = pat++;
            retry = s;
        } else if (*pat == *s) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++retry;
        } else {
            return false;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

static bool matches_any(const struct strlist *patterns, const char *s)
{
    for (size_t i = 0; i < patterns->n; i++)
        if (glob_match(patterns->v[i], s))
            return true;
    return false;
}

static void free_list(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void free_policy(struct gw_policy *p)
{
    free(p->name);
    free(p->file);
    for (size_t i = 0; i < p->nsubjects; i++) {
        for (size_t k = 0; k < p->subjects[i].n; k++) {
            free(p->subjects[i].m[k].claim);
            free_list(&p->subjects[i].m[k].values);
        }
        free(p->subjects[i].m);
    }
    free(p->subjects);
    free_list(&p->ops);
    free_list(&p->companies);
    free_list(&p->locations);
    free(p->loc_claim);
    free_list(&p->types);
    free_list(&p->roles);
    free_list(&p->scopes);
    free_list(&p->sato);
    free(p->pins);
    free_list(&p->forbid);
    free_list(&p->redact);
}

void gw_policies_free(struct gw_policies *ps)
{
    if (ps == NULL)
        return;
    for (size_t i = 0; i < ps->n; i++)
        free_policy(&ps->p[i]);
    free(ps->p);
    free(ps);
}

/* ---- loading ---- */

/* A policy file is read through the field tables of fields.h (policy_fields below), problems in
 * the order of the table after any unknown key; the forms the kinds cannot say (subjects,
 * companies, locations, permission pins) are custom readers, and what the OpenAPI document
 * decides (operations, scope patterns, member names) is checked once a list is read. The
 * reader's user is the OpenAPI model. */

#define ENTRIES "entries must be non-empty strings"

/* A list of a policy: an array of non-empty strings. Returns 0, or -1 (a problem added). */
static int read_list(struct gw_fields *x, const cJSON *v, const char *key, struct strlist *out)
{
    static const struct gw_field list = {"", GW_F_STRLIST, offsetof(struct strlist, v),
                                         .off2 = offsetof(struct strlist, n), .msg = ENTRIES};
    return gw_fields_read(x, v, out, &list, key);
}

static void read_description(struct gw_fields *x, const cJSON *v, void *base,
                             const struct gw_field *f, const char *key)
{
    (void)base, (void)f;
    if (v && !cJSON_IsString(v)) /* "" too: a description is not needed */
        gw_fields_problem(x, v, key, "must be a string");
}

/* The values of one claim: a string, or an array of them. */
static int read_values(struct gw_fields *x, const cJSON *v, const char *key, struct strlist *out)
{
    if (cJSON_IsString(v) && v->valuestring[0]) {
        out->v = calloc(2, sizeof *out->v);
        if (out->v == NULL || (out->v[0] = strdup(v->valuestring)) == NULL) {
            gw_fields_oom(x);
            return -1;
        }
        out->n = 1;
        return 0;
    }
    if (!cJSON_IsArray(v)) {
        gw_fields_problem(x, v, key, "must be a string or an array of strings");
        return -1;
    }
    return read_list(x, v, key, out);
}

/* [{claim: value or [values], ...}, ...]: the first problem stops the reading. */
static void read_subjects(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                          const char *key)
{
    (void)f;
    struct gw_policy *p = base;
    if (v == NULL)
        return;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) {
        gw_fields_problem(x, v, key, "must be a non-empty array of objects");
        return;
    }
    if ((p->subjects = calloc((size_t)cJSON_GetArraySize(v), sizeof *p->subjects)) == NULL) {
        gw_fields_oom(x);
        return;
    }
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsObject(e) || e->child == NULL) {
            gw_fields_problem(x, e, key, "each entry must be a non-empty object of claim: value");
            return;
        }
        struct subj_entry *se = &p->subjects[p->nsubjects++];
        if ((se->m = calloc((size_t)cJSON_GetArraySize(e), sizeof *se->m)) == NULL) {
            gw_fields_oom(x);
            return;
        }
        for (const cJSON *m = e->child; m; m = m->next) {
            struct subj_member *sm = &se->m[se->n++];
            if ((sm->claim = strdup(m->string)) == NULL) {
                gw_fields_oom(x);
                return;
            }
            char member[256];
            snprintf(member, sizeof member, "%s.%s", key, m->string);
            if (read_values(x, m, member, &sm->values) != 0 || sm->values.n == 0) {
                if (sm->values.n == 0 && cJSON_IsArray(m))
                    gw_fields_problem(x, m, member, "must list at least one value");
                return;
            }
        }
    }
}

/* "*" inside a list is an id like any other: said, since it looks like the "*" form. */
static void warn_star_in_list(struct gw_fields *x, const cJSON *v, const char *key,
                              const struct strlist *l, const char *what)
{
    if (in_list(l, "*"))
        gw_msgs_add(&x->errs->warnings,
                    "warning: %s:%d: %s: \"*\" inside a list is a %s id; \"%s\": \"*\" means "
                    "every %s",
                    x->file, gw_fields_line(x, v), key, what, key, what);
}

/* "*" or a list of company ids. */
static void read_companies(struct gw_fields *x, const cJSON *v, void *base,
                           const struct gw_field *f, const char *key)
{
    (void)f;
    struct gw_policy *p = base;
    if (v == NULL)
        return;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "*") == 0) {
        p->companies_all = true;
        return;
    }
    read_list(x, v, key, &p->companies);
    warn_star_in_list(x, v, key, &p->companies, "company");
}

/* "*", a list of location ids, or {"claim": name}: the caller's own locations. */
static void read_locations(struct gw_fields *x, const cJSON *v, void *base,
                           const struct gw_field *f, const char *key)
{
    (void)f;
    struct gw_policy *p = base;
    if (v == NULL)
        return;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "*") == 0) {
        p->loc = LOC_ALL;
        return;
    }
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "claim");
        if (cJSON_GetArraySize(v) != 1 || !cJSON_IsString(c) || c->valuestring[0] == '\0') {
            gw_fields_problem(x, v, key, "an object must be {\"claim\": \"<claim name>\"}");
            return;
        }
        p->loc = LOC_CLAIM;
        if ((p->loc_claim = strdup(c->valuestring)) == NULL)
            gw_fields_oom(x);
        return;
    }
    if (!cJSON_IsArray(v)) {
        gw_fields_problem(x, v, key,
                          "must be \"*\", an array of location ids or {\"claim\": name}");
        return;
    }
    p->loc = LOC_LIST;
    read_list(x, v, key, &p->locations);
    warn_star_in_list(x, v, key, &p->locations, "location");
}

/* {flag: true|false}: the flags the document declares, pinned. */
static void read_pins(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                      const char *key)
{
    (void)f;
    struct gw_policy *p = base;
    const struct gw_openapi *api = x->user;
    if (v == NULL)
        return;
    if (!cJSON_IsObject(v)) {
        gw_fields_problem(x, v, key, "must be an object of flag: true|false");
        return;
    }
    if ((p->pins = calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof *p->pins)) == NULL) {
        gw_fields_oom(x);
        return;
    }
    for (const cJSON *m = v->child; m; m = m->next) {
        char member[256];
        snprintf(member, sizeof member, "%s.%s", key, m->string);
        size_t idx = api->nperms;
        for (size_t k = 0; k < api->nperms; k++)
            if (strcmp(api->perms[k].name, m->string) == 0)
                idx = k;
        if (idx == api->nperms)
            gw_fields_problem(x, m, member, "unknown permission flag");
        else if (!cJSON_IsBool(m))
            gw_fields_problem(x, m, member, "must be true or false");
        else
            p->pins[p->npins++] = (struct pin){idx, cJSON_IsTrue(m)};
    }
}

/* The list a field has just read. */
static struct strlist field_list(void *base, const struct gw_field *f)
{
    return (struct strlist){*GW_FIELD_AT(base, f->off, char **),
                            *GW_FIELD_AT(base, f->off2, size_t)};
}

static void check_operations(struct gw_fields *x, const cJSON *v, void *base,
                             const struct gw_field *f, const char *key)
{
    struct strlist ops = field_list(base, f);
    for (size_t i = 0; i < ops.n; i++)
        if (gw_openapi_op(x->user, ops.v[i]) == NULL)
            gw_fields_problem(x, v, key, "unknown operation %s", ops.v[i]);
}

/* Each pattern must match a scope of the document: a typo would otherwise grant nothing. */
static void check_scope_patterns(struct gw_fields *x, const cJSON *v, void *base,
                                 const struct gw_field *f, const char *key)
{
    const struct gw_openapi *api = x->user;
    struct strlist pats = field_list(base, f);
    for (size_t i = 0; i < pats.n; i++) {
        bool hit = false;
        for (size_t k = 0; k < api->nscopes && !hit; k++)
            hit = glob_match(pats.v[i], api->scopes[k]);
        if (!hit) {
            gw_fields_problem(x, v, key, "pattern %s matches no scope of the OpenAPI document",
                              pats.v[i]);
            return;
        }
    }
}

/* The member names requests can write: the properties of every op's body schema. */
static bool writable_member(const struct gw_openapi *api, const char *name)
{
    for (size_t i = 0; i < api->nops; i++) {
        const cJSON *props =
            cJSON_GetObjectItemCaseSensitive(api->ops[i].body_schema, "properties");
        if (cJSON_GetObjectItemCaseSensitive(props, name))
            return true;
    }
    return false;
}

static void check_writable(struct gw_fields *x, const cJSON *v, void *base,
                           const struct gw_field *f, const char *key)
{
    struct strlist names = field_list(base, f);
    for (size_t i = 0; i < names.n; i++)
        if (!writable_member(x->user, names.v[i]))
            gw_fields_problem(x, v, key, "%s is no member of any request body", names.v[i]);
}

static void grant_given(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                        const char *key)
{
    (void)x, (void)v, (void)f, (void)key;
    ((struct gw_policy *)base)->has_grant = true;
}

#define P(member) offsetof(struct gw_policy, member)

static const struct gw_field grant_fields[] = {
    {"types", GW_F_STRLIST, P(types.v), .off2 = P(types.n), .msg = ENTRIES},
    {"roles", GW_F_STRLIST, P(roles.v), .off2 = P(roles.n), .msg = ENTRIES},
    {"scopes", GW_F_STRLIST, P(scopes.v), .off2 = P(scopes.n), .msg = ENTRIES,
     .after = check_scope_patterns},
    {"scopes_assigned_to_only", GW_F_STRLIST, P(sato.v), .off2 = P(sato.n), .msg = ENTRIES,
     .after = check_scope_patterns},
    {"within_caller_scopes", GW_F_BOOL, P(within)},
    {"permissions", GW_F_CUSTOM, .custom = read_pins},
    {"max_locations", GW_F_INT, P(max_locations), 0, 100000, .idef = -1 /* no cap */,
     .msg = "must be an integer from 0"},
    {NULL},
};
static const struct gw_field fields_fields[] = {
    {"forbid", GW_F_STRLIST, P(forbid.v), .off2 = P(forbid.n), .msg = ENTRIES,
     .after = check_writable},
    {NULL},
};
static const struct gw_field reads_fields[] = {
    {"redact", GW_F_STRLIST, P(redact.v), .off2 = P(redact.n), .msg = ENTRIES},
    {NULL},
};
static const struct gw_field policy_fields[] = {
    {"name", GW_F_STR, P(name), .required = "a policy needs a non-empty name",
     .msg = "a policy needs a non-empty name"},
    {"description", GW_F_CUSTOM, .custom = read_description},
    {"subjects", GW_F_CUSTOM, .custom = read_subjects, .required = "is required"},
    {"operations", GW_F_STRLIST, P(ops.v), .off2 = P(ops.n), .msg = ENTRIES,
     .required = "is required", .after = check_operations},
    {"companies", GW_F_CUSTOM, .custom = read_companies,
     .required = "is required (\"*\" or a list of company ids)"},
    {"locations", GW_F_CUSTOM, .custom = read_locations,
     .required = "is required (\"*\", a list, or {\"claim\": name})"},
    {"grant", GW_F_SECTION, .sub = grant_fields, .after = grant_given},
    {"fields", GW_F_SECTION, .sub = fields_fields},
    {"reads", GW_F_SECTION, .sub = reads_fields},
    {NULL},
};

/* Reads path into p. Returns 0, or -1 with the problems in x->errs (none: out of memory). */
static int load_one(struct gw_fields *x, const char *path, struct gw_policy *p)
{
    size_t len;
    char *buf = gw_read_file(path, MAX_POLICY_BYTES, &len);
    if (buf == NULL) {
        gw_msgs_add(&x->errs->problems, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 16, .allow_comments = true, .lines = &x->lines};
    cJSON *root = gw_json_parse(buf, len, &o, &je);
    free(buf);
    if (root == NULL) {
        gw_msgs_add(&x->errs->problems, "%s:%d: %s", path, je.line, je.msg);
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        gw_msgs_add(&x->errs->problems, "%s:1: a policy must be a JSON object", path);
        cJSON_Delete(root);
        return -1;
    }
    size_t before = x->errs->problems.n;
    gw_fields_defaults(x, p, policy_fields);
    if ((p->file = strdup(path)) == NULL)
        gw_fields_oom(x);
    else
        gw_fields_walk(x, root, p, policy_fields, "");
    cJSON_Delete(root);
    return x->errs->problems.n > before || x->oom ? -1 : 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct gw_policies *gw_policies_load(const char *dir, const struct gw_openapi *api,
                                     struct gw_errs *errs)
{
    struct gw_policies *ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return NULL;
    DIR *d = opendir(dir);
    if (d == NULL) {
        gw_msgs_add(&errs->problems, "policies.dir: cannot open %s: %s", dir, strerror(errno));
        free(ps);
        return NULL;
    }
    char *names[MAX_POLICY_FILES] = {0};
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < 6 || strcmp(e->d_name + l - 5, ".json") != 0)
            continue;
        if (n == MAX_POLICY_FILES) {
            gw_msgs_add(&errs->problems, "policies.dir: more than %d policy files",
                        MAX_POLICY_FILES);
            break;
        }
        if ((names[n] = strdup(e->d_name)) == NULL) {
            gw_msgs_add(&errs->problems, "policies.dir: out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    ps->p = calloc(n + 1, sizeof *ps->p);
    size_t before = errs->problems.n;
    for (size_t i = 0; i < n && ps->p; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct gw_fields x = {
            .file = path, .dir = ".", .errs = errs, .unknown_first = true, .user = api};
        struct gw_policy *p = &ps->p[ps->n++];
        size_t had = errs->problems.n;
        if (load_one(&x, path, p) != 0 && errs->problems.n == had)
            gw_msgs_add(&errs->problems, "%s: out of memory", path);
        gw_json_lines_free(&x.lines);
        for (size_t k = 0; p->name && k + 1 < ps->n; k++)
            if (ps->p[k].name && strcmp(ps->p[k].name, p->name) == 0)
                gw_msgs_add(&errs->problems, "%s: name: %s is also the name of %s", path, p->name,
                            ps->p[k].file);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    if (ps->p == NULL || errs->problems.n > before) {
        gw_policies_free(ps);
        return NULL;
    }
    return ps;
}

/* ---- deciding ---- */

/* A claim matches a value list: a string equal to one, or an array of strings holding one. */
static bool claim_matches(const cJSON *claim, const struct strlist *values)
{
    if (cJSON_IsString(claim))
        return in_list(values, claim->valuestring);
    if (cJSON_IsArray(claim))
        for (const cJSON *e = claim->child; e; e = e->next)
            if (cJSON_IsString(e) && in_list(values, e->valuestring))
                return true;
    return false;
}

static bool subject_matches(const struct gw_policy *p, const cJSON *claims)
{
    for (size_t i = 0; i < p->nsubjects; i++) {
        const struct subj_entry *se = &p->subjects[i];
        bool all = true;
        for (size_t k = 0; k < se->n && all; k++)
            all = claim_matches(cJSON_GetObjectItemCaseSensitive(claims, se->m[k].claim),
                                &se->m[k].values);
        if (all)
            return true;
    }
    return false;
}

/* Is location allowed under p for these claims? */
static bool location_allowed(const struct gw_policy *p, const cJSON *claims, const char *loc)
{
    if (p->loc == LOC_ALL)
        return true;
    if (p->loc == LOC_LIST)
        return in_list(&p->locations, loc);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(claims, p->loc_claim);
    if (cJSON_IsString(c))
        return strcmp(c->valuestring, loc) == 0;
    for (const cJSON *e = cJSON_IsArray(c) ? c->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && strcmp(e->valuestring, loc) == 0)
            return true;
    return false;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool held(const struct gw_decision_input *in, const char *scope)
{
    for (size_t i = 0; i < in->nscopes; i++)
        if (strcmp(in->scopes[i], scope) == 0)
            return true;
    return false;
}

static bool all_star(const struct strlist *l)
{
    return l->n == 1 && strcmp(l->v[0], "*") == 0;
}

static bool body_declares(const struct gw_op *op, const char *member)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(op->body_schema, "properties");
    return cJSON_GetObjectItemCaseSensitive(props, member) != NULL;
}

static bool has_path_param(const struct gw_op *op);

bool gw_policy_needs_target(const struct gw_op *op)
{
    return has_path_param(op) && (op->method & (GW_M_PUT | GW_M_PATCH | GW_M_DELETE));
}

/* Ops whose body can grant something (create-user, update-user). */
static bool op_grants(const struct gw_op *op)
{
    return body_declares(op, "type") || body_declares(op, "role") ||
           body_declares(op, "permissions") || body_declares(op, "scopes") ||
           body_declares(op, "scopesAssignedToOnly") || body_declares(op, "locationIds");
}

bool gw_policy_op_changes_users(const struct gw_op *op)
{
    return gw_policy_needs_target(op) || (op->method == GW_M_POST && body_declares(op, "type"));
}

static void check_scopes(const struct gw_policy *p, const struct gw_decision_input *in,
                         const cJSON *arr, const struct strlist *ceiling, const char *suffix,
                         struct gw_msgs *out)
{
    for (const cJSON *e = cJSON_IsArray(arr) ? arr->child : NULL; e; e = e->next) {
        if (!cJSON_IsString(e))
            continue; /* the schema already refused it */
        if (!matches_any(ceiling, e->valuestring))
            gw_msgs_add(out, "policy %s: scope %s is not grantable%s", p->name, e->valuestring,
                        suffix);
        else if (p->within && !held(in, e->valuestring))
            gw_msgs_add(out, "policy %s: scope %s is not held by the caller", p->name,
                        e->valuestring);
    }
}

static void check_grants(const struct gw_policy *p, const struct gw_openapi *api,
                         const struct gw_decision_input *in, struct gw_msgs *out)
{
    const cJSON *b = in->body;
    static const char *const granting[] = {
        "type", "role", "scopes", "scopesAssignedToOnly", "permissions", "locationIds"};
    if (!p->has_grant) {
        for (size_t i = 0; i < sizeof granting / sizeof *granting; i++)
            if (cJSON_GetObjectItemCaseSensitive(b, granting[i]))
                gw_msgs_add(out, "policy %s: grants nothing; the request sets %s", p->name,
                            granting[i]);
        return;
    }
    const char *type = jstr(b, "type"), *role = jstr(b, "role");
    if (type && !in_list(&p->types, type))
        gw_msgs_add(out, "policy %s: type %s is not grantable", p->name, type);
    if (role && !in_list(&p->roles, role))
        gw_msgs_add(out, "policy %s: role %s is not grantable", p->name, role);
    const cJSON *scopes = cJSON_GetObjectItemCaseSensitive(b, "scopes");
    const cJSON *sato = cJSON_GetObjectItemCaseSensitive(b, "scopesAssignedToOnly");
    check_scopes(p, in, scopes, &p->scopes, "", out);
    check_scopes(p, in, sato, &p->sato, " as assigned-to-only", out);
    /* POST of a body that declares type: create-user (filter-by-email has no such member) */
    bool creating = in->op->method == GW_M_POST && body_declares(in->op, "type");
    /* The upstream's default for a missing list is not documented: a ceiling (or a bound by
     * the caller's own scopes) can only hold on lists that are sent. */
    if (creating && scopes == NULL && (!all_star(&p->scopes) || p->within) &&
        body_declares(in->op, "scopes"))
        gw_msgs_add(out,
                    "policy %s: %s must send scopes (the upstream's default is not documented)",
                    p->name, in->op->id);
    if (creating && sato == NULL && (!all_star(&p->sato) || p->within) &&
        body_declares(in->op, "scopesAssignedToOnly"))
        gw_msgs_add(out,
                    "policy %s: %s must send scopesAssignedToOnly (the upstream's default is not "
                    "documented)",
                    p->name, in->op->id);
    /* Pins hold on EFFECTIVE values: what the upstream will apply is the document's default
     * for every flag not sent. On update, only when the request sends permissions. */
    const cJSON *perms = cJSON_GetObjectItemCaseSensitive(b, "permissions");
    if (p->npins && (creating || perms != NULL) && body_declares(in->op, "permissions")) {
        for (size_t f = 0; f < api->nperms; f++) {
            const struct pin *pin = NULL;
            for (size_t k = 0; k < p->npins; k++)
                if (p->pins[k].flag == f)
                    pin = &p->pins[k];
            if (pin == NULL)
                continue;
            const cJSON *sent = cJSON_GetObjectItemCaseSensitive(perms, api->perms[f].name);
            if (cJSON_IsBool(sent)) {
                if (cJSON_IsTrue(sent) != pin->value)
                    gw_msgs_add(out, "policy %s: permissions.%s is %s but must be %s", p->name,
                                api->perms[f].name, cJSON_IsTrue(sent) ? "true" : "false",
                                pin->value ? "true" : "false");
            } else if (!api->perms[f].has_def) {
                gw_msgs_add(out,
                            "policy %s: permissions.%s has no documented default but must be "
                            "%s; send it explicitly",
                            p->name, api->perms[f].name, pin->value ? "true" : "false");
            } else if (api->perms[f].def != pin->value) {
                gw_msgs_add(out,
                            "policy %s: permissions.%s defaults to %s but must be %s; send it "
                            "explicitly",
                            p->name, api->perms[f].name, api->perms[f].def ? "true" : "false",
                            pin->value ? "true" : "false");
            }
        }
    }
    const cJSON *locs = cJSON_GetObjectItemCaseSensitive(b, "locationIds");
    if (p->max_locations >= 0 && cJSON_GetArraySize(locs) > p->max_locations)
        gw_msgs_add(out, "policy %s: %d locations exceed the limit of %ld", p->name,
                    cJSON_GetArraySize(locs), p->max_locations);
    /* an agency user reaches every location, whatever its locationIds say ([] included) */
    if (type && strcasecmp(type, "agency") == 0 && p->loc != LOC_ALL)
        gw_msgs_add(out,
                    "policy %s: an agency user reaches every location; only a policy whose "
                    "locations are \"*\" may %s one",
                    p->name, creating ? "create" : "make");
}

/* Is every location of a user object inside p for these claims? A user without roles, without
 * locations, or of type agency (agency users reach every location) is not. */
static bool target_inside(const struct gw_policy *p, const cJSON *claims, const cJSON *roles)
{
    if (p->loc == LOC_ALL)
        return true;
    const char *type = jstr(roles, "type");
    const cJSON *locs = cJSON_GetObjectItemCaseSensitive(roles, "locationIds");
    if (!cJSON_IsObject(roles) || (type && strcasecmp(type, "agency") == 0) ||
        !cJSON_IsArray(locs) || locs->child == NULL)
        return false;
    for (const cJSON *e = locs->child; e; e = e->next)
        if (!cJSON_IsString(e) || !location_allowed(p, claims, e->valuestring))
            return false;
    return true;
}

/* Where the target's locations break a location-bound policy, one reason each. */
static void target_location_reasons(const struct gw_policy *p, const struct gw_decision_input *in,
                                    const cJSON *roles, const char *id, struct gw_msgs *out)
{
    const char *type = jstr(roles, "type");
    if (type && strcasecmp(type, "agency") == 0)
        gw_msgs_add(out, "policy %s: user %.64s is an agency user", p->name, id);
    const cJSON *locs = cJSON_GetObjectItemCaseSensitive(roles, "locationIds");
    if (!cJSON_IsArray(locs) || locs->child == NULL) {
        if (type == NULL || strcasecmp(type, "agency") != 0)
            gw_msgs_add(out, "policy %s: user %.64s has no location inside this policy", p->name,
                        id);
        return;
    }
    for (const cJSON *e = locs->child; e; e = e->next)
        if (!cJSON_IsString(e) || !location_allowed(p, in->claims, e->valuestring))
            gw_msgs_add(out, "policy %s: user %.64s is in location %.64s, outside this policy",
                        p->name, id, cJSON_IsString(e) ? e->valuestring : "(not a string)");
}

/* One scope the target holds, against what p may grant. */
static void target_scope(const struct gw_policy *p, const struct gw_decision_input *in,
                         const char *id, const char *scope, size_t len, struct gw_msgs *out)
{
    char one[256];
    if (len >= sizeof one) { /* no scope of the document is this long */
        gw_msgs_add(out,
                    "policy %s: user %.64s holds a scope of %zu characters, which this "
                    "policy may not grant",
                    p->name, id, len);
        return;
    }
    memcpy(one, scope, len);
    one[len] = '\0';
    if (!matches_any(&p->scopes, one))
        gw_msgs_add(out, "policy %s: user %.64s holds scope %s, which this policy may not grant",
                    p->name, id, one);
    else if (p->within && !held(in, one))
        gw_msgs_add(out, "policy %s: user %.64s holds scope %s, which the caller does not hold",
                    p->name, id, one);
}

/* The scopes the target holds: "scopes", an array of strings or (as the document declares it)
 * one space-separated string. An answer without them says nothing about what the user holds
 * (the upstream's default for a user created without a list is not documented): within the
 * grant only when the grant covers every scope. */
static void target_scopes(const struct gw_policy *p, const struct gw_decision_input *in,
                          const cJSON *t, const char *id, struct gw_msgs *out)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "scopes");
    if (s == NULL) {
        if (!all_star(&p->scopes) || p->within)
            gw_msgs_add(out,
                        "policy %s: user %.64s is answered without its scopes, so this policy "
                        "cannot tell whether it may grant them",
                        p->name, id);
        return;
    }
    if (cJSON_IsString(s)) {
        for (const char *w = s->valuestring; *w;) {
            size_t n = strcspn(w, " ");
            if (n)
                target_scope(p, in, id, w, n, out);
            w += n;
            w += strspn(w, " ");
        }
        return;
    }
    if (!cJSON_IsArray(s)) {
        gw_msgs_add(out, "policy %s: user %.64s has scopes this policy cannot read", p->name, id);
        return;
    }
    for (const cJSON *e = s->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            gw_msgs_add(out, "policy %s: user %.64s has a scope that is not a string", p->name, id);
        else
            target_scope(p, in, id, e->valuestring, strlen(e->valuestring), out);
    }
}

/* Every flag p pins, on the target's values (a flag the answer leaves out has the document's
 * default, as the upstream applies it). */
static void target_pins(const struct gw_policy *p, const struct gw_openapi *api, const cJSON *t,
                        const char *id, struct gw_msgs *out)
{
    if (p->npins == 0)
        return;
    const cJSON *perms = cJSON_GetObjectItemCaseSensitive(t, "permissions");
    if (perms && !cJSON_IsObject(perms)) {
        gw_msgs_add(out, "policy %s: user %.64s has permissions this policy cannot read", p->name,
                    id);
        return;
    }
    for (size_t f = 0; f < api->nperms; f++) { /* in the document's order */
        const struct pin *pin = NULL;
        for (size_t k = 0; k < p->npins && pin == NULL; k++)
            if (p->pins[k].flag == f)
                pin = &p->pins[k];
        if (pin == NULL)
            continue;
        const char *name = api->perms[f].name;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(perms, name);
        if (v && !cJSON_IsBool(v)) {
            gw_msgs_add(out, "policy %s: user %.64s has a permissions.%s that is not true or false",
                        p->name, id, name);
        } else if (v == NULL && !api->perms[f].has_def) {
            gw_msgs_add(out,
                        "policy %s: user %.64s is answered without permissions.%s, which has no "
                        "documented default; this policy pins it to %s",
                        p->name, id, name, pin->value ? "true" : "false");
        } else {
            bool value = v ? cJSON_IsTrue(v) : api->perms[f].def;
            if (value != pin->value)
                gw_msgs_add(out,
                            "policy %s: user %.64s has permissions.%s %s%s, which this "
                            "policy pins to %s",
                            p->name, id, name, value ? "true" : "false", v ? "" : " (the default)",
                            pin->value ? "true" : "false");
        }
    }
}

/* The user an update or delete would touch, as the upstream answered for it (SPEC §6.3 target,
 * and target within the grant): every location inside p, and no escalation through the
 * target: p may change or delete only a user it could have created, so the user's type, role,
 * scopes and pinned flags must all be grantable by p, whatever the request changes.
 * A target not entirely inside p's locations is named to the caller only as outside (the first
 * reason, which the 403 shows): the reasons after it, for the audit record, say why and what
 * else p could not grant (SPEC §6.4). */
static void check_target(const struct gw_policy *p, const struct gw_openapi *api,
                         const struct gw_decision_input *in, struct gw_msgs *out)
{
    const cJSON *t = in->target;
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(t, "roles");
    const char *id = jstr(t, "id");
    if (id == NULL)
        id = in->route && in->route->npath ? in->route->pval[0] : "(unknown)";
    if (!target_inside(p, in->claims, roles)) {
        gw_msgs_add(out, "policy %s: user %.64s is outside this policy's locations", p->name, id);
        if (cJSON_IsObject(roles))
            target_location_reasons(p, in, roles, id, out);
    }
    if (!cJSON_IsObject(roles)) {
        gw_msgs_add(out, "policy %s: user %.64s has no roles this policy can check", p->name, id);
        return;
    }
    const char *type = jstr(roles, "type"), *role = jstr(roles, "role");
    if (type == NULL)
        gw_msgs_add(out, "policy %s: user %.64s has no roles.type this policy can check", p->name,
                    id);
    else if (!in_list(&p->types, type))
        gw_msgs_add(out, "policy %s: user %.64s has type %.64s, which this policy may not grant",
                    p->name, id, type);
    if (role == NULL)
        gw_msgs_add(out, "policy %s: user %.64s has no roles.role this policy can check", p->name,
                    id);
    else if (!in_list(&p->roles, role))
        gw_msgs_add(out, "policy %s: user %.64s has role %.64s, which this policy may not grant",
                    p->name, id, role);
    target_scopes(p, in, t, id, out);
    target_pins(p, api, t, id, out);
}

/* The company a request names: companyId of its body, else of its query. */
static const char *request_company(const struct gw_route *r, const cJSON *body)
{
    const char *company = jstr(body, "companyId");
    return company == NULL && r ? gw_route_query(r, "companyId") : company;
}

void gw_policy_about(const struct gw_route *r, const cJSON *body, const cJSON *target,
                     struct gw_policy_about *out)
{
    out->company = request_company(r, body);
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(target, "roles");
    out->locations = cJSON_GetObjectItemCaseSensitive(roles, "locationIds");
    if (!cJSON_IsArray(out->locations))
        out->locations = cJSON_GetObjectItemCaseSensitive(body, "locationIds");
    if (!cJSON_IsArray(out->locations))
        out->locations = NULL;
    out->location = out->locations == NULL && r ? gw_route_query(r, "locationId") : NULL;
}

bool gw_policy_user_grant(const cJSON *user, size_t i, const char **name, const cJSON **value)
{
    static const struct {
        bool in_roles;
        const char *name;
    } granting[] = {
        {true, "type"},    {true, "role"},         {true, "locationIds"},
        {false, "scopes"}, {false, "permissions"},
    };
    if (i >= sizeof granting / sizeof *granting)
        return false;
    const cJSON *from =
        granting[i].in_roles ? cJSON_GetObjectItemCaseSensitive(user, "roles") : user;
    *name = granting[i].name;
    *value = cJSON_GetObjectItemCaseSensitive(from, granting[i].name);
    return true;
}

/* Every violation of p, in the order of SPEC §6.3. */
static void check_policy(const struct gw_policy *p, const struct gw_openapi *api,
                         const struct gw_decision_input *in, struct gw_msgs *out)
{
    const struct gw_op *op = in->op;
    if (!in_list(&p->ops, op->id)) {
        gw_msgs_add(out, "policy %s: operation %s is not allowed", p->name, op->id);
        return;
    }
    const char *company = request_company(in->route, in->body);
    if (company && !p->companies_all && !in_list(&p->companies, company))
        gw_msgs_add(out, "policy %s: company %s is not allowed", p->name, company);
    const cJSON *locs = cJSON_GetObjectItemCaseSensitive(in->body, "locationIds");
    for (const cJSON *e = cJSON_IsArray(locs) ? locs->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && !location_allowed(p, in->claims, e->valuestring))
            gw_msgs_add(out, "policy %s: location %s is not allowed", p->name, e->valuestring);
    /* twilioPhone is keyed by location id: a number set in a location is a write there */
    const cJSON *phones = cJSON_GetObjectItemCaseSensitive(in->body, "twilioPhone");
    for (const cJSON *e = cJSON_IsObject(phones) ? phones->child : NULL; e; e = e->next) {
        bool listed = false; /* already named by locationIds */
        for (const cJSON *l = cJSON_IsArray(locs) ? locs->child : NULL; l && !listed; l = l->next)
            listed = cJSON_IsString(l) && strcmp(l->valuestring, e->string) == 0;
        if (!listed && !location_allowed(p, in->claims, e->string))
            gw_msgs_add(out, "policy %s: location %.100s is not allowed", p->name, e->string);
    }
    const char *qloc = in->route ? gw_route_query(in->route, "locationId") : NULL;
    if (qloc && !location_allowed(p, in->claims, qloc))
        gw_msgs_add(out, "policy %s: location %s is not allowed", p->name, qloc);
    /* a list op that may name a location must name one under a location-bound policy */
    const struct gw_param *lp = gw_op_param(op, GW_IN_QUERY, "locationId");
    if (p->loc != LOC_ALL && lp && !lp->required && qloc == NULL)
        gw_msgs_add(out, "policy %s: %s must name a locationId", p->name, op->id);
    if (gw_policy_needs_target(op)) {
        if (in->target)
            check_target(p, api, in, out);
        else if (!in->target_pending) /* fail closed: never decide a change blind */
            gw_msgs_add(out, "policy %s: the user to change is not known", p->name);
    }
    if (in->body)
        check_grants(p, api, in, out);
    for (size_t i = 0; i < p->forbid.n; i++)
        if (cJSON_GetObjectItemCaseSensitive(in->body, p->forbid.v[i]))
            gw_msgs_add(out, "policy %s: field %s may not be written", p->name, p->forbid.v[i]);
}

void gw_policy_decide(const struct gw_policies *ps, const struct gw_openapi *api,
                      const struct gw_decision_input *in, struct gw_decision *out)
{
    memset(out, 0, sizeof *out);
    bool any = false;
    for (size_t i = 0; ps && i < ps->n; i++) {
        const struct gw_policy *p = &ps->p[i];
        if (!subject_matches(p, in->claims))
            continue;
        if (!any)
            out->policy = p;
        any = true;
        struct gw_msgs mine = {0};
        check_policy(p, api, in, &mine);
        if (mine.n == 0) {
            gw_msgs_free(&out->reasons); /* rules are never combined across policies */
            out->allowed = true;
            out->policy = p;
            return;
        }
        for (size_t k = 0; k < mine.n; k++)
            gw_msgs_add(&out->reasons, "%s", mine.v[k]);
        gw_msgs_free(&mine);
    }
    if (!any)
        gw_msgs_add(&out->reasons, "no policy grants %s access", in->sub ? in->sub : "(unknown)");
}

void gw_decision_free(struct gw_decision *d)
{
    gw_msgs_free(&d->reasons);
    memset(d, 0, sizeof *d);
}

/* ---- reads ---- */

bool gw_policy_filters_reads(const struct gw_policy *p)
{
    return p && (p->loc != LOC_ALL || p->redact.n > 0);
}

bool gw_policy_visible(const struct gw_policy *p, const cJSON *claims, const cJSON *user)
{
    if (p->loc == LOC_ALL)
        return true;
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(user, "roles");
    const cJSON *locs = cJSON_GetObjectItemCaseSensitive(roles, "locationIds");
    for (const cJSON *e = cJSON_IsArray(locs) ? locs->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && location_allowed(p, claims, e->valuestring))
            return true;
    return false;
}

static void redact(const struct gw_policy *p, cJSON *user)
{
    for (size_t i = 0; i < p->redact.n; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(user, p->redact.v[i]);
}

static bool has_path_param(const struct gw_op *op)
{
    for (size_t i = 0; i < op->nseg; i++)
        if (op->seg[i][0] == '{')
            return true;
    return false;
}

bool gw_policy_reads_one_user(const struct gw_op *op)
{
    return op->method == GW_M_GET && has_path_param(op);
}

enum gw_filter_result gw_policy_filter_reply(const struct gw_policy *p, const struct gw_op *op,
                                             const cJSON *claims, cJSON *reply, char *why,
                                             size_t whylen)
{
    if (op->method == GW_M_DELETE)
        return GW_FILTER_OK; /* {"succeded": ..., "message": ...}: no user object */
    bool writes = gw_policy_needs_target(op) || op_grants(op);
    bool one = writes || gw_policy_reads_one_user(op);
    if (one) {
        if (!cJSON_IsObject(reply)) {
            snprintf(why, whylen, "the upstream's answer to %s is not a user object", op->id);
            return GW_FILTER_MALFORMED;
        }
        if (!writes && !gw_policy_visible(p, claims, reply)) {
            const char *id = jstr(reply, "id");
            snprintf(why, whylen, "policy %s: user %.64s is outside this policy's locations",
                     p->name, id ? id : "(unknown)");
            return GW_FILTER_FORBIDDEN;
        }
        redact(p, reply);
        return GW_FILTER_OK;
    }
    cJSON *users = cJSON_GetObjectItemCaseSensitive(reply, "users");
    cJSON *count = cJSON_GetObjectItemCaseSensitive(reply, "count");
    if (!cJSON_IsObject(reply) || !cJSON_IsArray(users) || (count && !cJSON_IsNumber(count))) {
        snprintf(why, whylen, "the upstream's answer to %s is not a list of users", op->id);
        return GW_FILTER_MALFORMED;
    }
    for (const cJSON *u = users->child; u; u = u->next)
        if (!cJSON_IsObject(u)) {
            snprintf(why, whylen, "the upstream's answer to %s holds a user that is not an object",
                     op->id);
            return GW_FILTER_MALFORMED;
        }
    int dropped = 0;
    cJSON *u = users->child;
    while (u) {
        cJSON *next = u->next;
        if (!gw_policy_visible(p, claims, u)) {
            cJSON_Delete(cJSON_DetachItemViaPointer(users, u));
            dropped++;
        } else {
            redact(p, u);
        }
        u = next;
    }
    if (dropped && count)
        cJSON_SetNumberValue(count, count->valuedouble - dropped);
    return GW_FILTER_OK;
}
