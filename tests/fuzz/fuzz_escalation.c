/* No escalation, as a property (SPEC 6.3): for a random policy, caller, op, body and target,
 * every change the policy engine allows leaves a user that the policy could itself have
 * created, and for update-user and delete-user the target was such a user before the change.
 *
 * "Within the grant" is judged here by an oracle written apart from proxy/policy.c (its own
 * reading of the policy file, its own glob): the user's type and role are listed in
 * grant.types / grant.roles, each scope it holds matches grant.scopes (and with
 * within_caller_scopes is held by the caller; a list that is not known is within only under
 * ["*"] without that bound), each pinned flag has its pinned value, its locations and the keys
 * of a twilioPhone sent are inside the policy's locations, and an agency user needs locations
 * "*". The user that results is the target overlaid with the change (for a create, the body
 * over the OpenAPI defaults); permission flags are checked both as the upstream merges them
 * (flags not sent keep the target's) and as SPEC 6.3 models an update that sends permissions
 * (flags not sent take their defaults).
 *
 * Decisions are made as the live gateway makes them: the body validated against the op's
 * schema (invalid bodies are skipped), update and delete decided first without the target and,
 * when that allows, again with it.
 *
 * Input: text starting with '{' is one case in JSON, {"policy": {...}, "claims": {...},
 * "request": "PUT /users/u1", "body": {...}|null, "target": {...}|null} (the seed corpus holds
 * the admin takeover found when the gateway was attacked); any other input drives a generator
 * that draws the case from a small vocabulary. A counterexample aborts with the case printed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "openapi.h"
#include "policy.h"
#include "route.h"
#include "validate.h"

static struct gw_openapi *model;
static char dir[64], file_p[96];
static struct gw_config cfg; /* only its limits are read (body validation) */

static const char *const LOCS[] = {"L1", "L2", "L3"};
static const char *const TYPES[] = {"account", "agency", "Agency"};
static const char *const ROLES[] = {"admin", "user"};
static const char *const PATTERNS[] = {"contacts.write",     "contacts.*",     "conversations/*",
                                       "calendars.readonly", "payments.write", "*",
                                       "medias.readonly"};
static const char *const SCOPES[] = {"contacts.write",         "contacts/bulkActions.write",
                                     "conversations.readonly", "conversations/message.readonly",
                                     "calendars.readonly",     "payments.write",
                                     "medias.readonly"};
static const char *const FLAGS[] = {"paymentsEnabled", "settingsEnabled", "assignedDataOnly",
                                    "websitesEnabled", "contactsEnabled"};
#define N(a) (sizeof(a) / sizeof *(a))

/* ---- the oracle's own reading of a policy ---- */

struct list {
    const char *v[16];
    size_t n;
};

struct oracle {
    int loc; /* 0 "*", 1 list, 2 claim */
    struct list locations;
    const char *loc_claim;
    bool has_grant, within;
    struct list types, roles, scopes, sato;
    int pin[64]; /* by the model's flag index: -1 none, 0 false, 1 true */
};

static bool in(const struct list *l, const char *s)
{
    for (size_t i = 0; s && i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

/* "*" is any run of characters; written apart from the engine's, on purpose. */
static bool glob(const char *p, const char *s)
{
    if (*p == '\0')
        return *s == '\0';
    if (*p == '*')
        return glob(p + 1, s) || (*s && glob(p, s + 1));
    return *s == *p && glob(p + 1, s + 1);
}

static int read_list(const cJSON *a, struct list *out)
{
    out->n = 0;
    if (a == NULL)
        return 0;
    if (!cJSON_IsArray(a))
        return -1;
    for (const cJSON *e = a->child; e; e = e->next) {
        if (!cJSON_IsString(e) || out->n == N(out->v))
            return -1;
        out->v[out->n++] = e->valuestring;
    }
    return 0;
}

static int flag_index(const char *name)
{
    for (size_t i = 0; i < model->nperms && i < 64; i++)
        if (strcmp(model->perms[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* The policy as the oracle reads it; -1 for what it does not read (the case is skipped). */
static int read_oracle(const cJSON *pol, struct oracle *o)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < 64; i++)
        o->pin[i] = -1;
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(pol, "locations");
    if (cJSON_IsString(l) && strcmp(l->valuestring, "*") == 0) {
        o->loc = 0;
    } else if (cJSON_IsObject(l)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(l, "claim");
        if (!cJSON_IsString(c))
            return -1;
        o->loc = 2;
        o->loc_claim = c->valuestring;
    } else {
        o->loc = 1;
        if (read_list(l, &o->locations) != 0)
            return -1;
    }
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(pol, "grant");
    o->has_grant = g != NULL;
    if (g == NULL)
        return 0;
    if (read_list(cJSON_GetObjectItemCaseSensitive(g, "types"), &o->types) ||
        read_list(cJSON_GetObjectItemCaseSensitive(g, "roles"), &o->roles) ||
        read_list(cJSON_GetObjectItemCaseSensitive(g, "scopes"), &o->scopes) ||
        read_list(cJSON_GetObjectItemCaseSensitive(g, "scopes_assigned_to_only"), &o->sato))
        return -1;
    o->within = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "within_caller_scopes"));
    const cJSON *pins = cJSON_GetObjectItemCaseSensitive(g, "permissions");
    for (const cJSON *f = cJSON_IsObject(pins) ? pins->child : NULL; f; f = f->next) {
        int k = flag_index(f->string);
        if (k < 0 || !cJSON_IsBool(f))
            return -1;
        o->pin[k] = cJSON_IsTrue(f);
    }
    return 0;
}

/* ---- the case ---- */

struct scase {
    const cJSON *claims;
    const char *scopes[32]; /* the caller's, from its scope claim */
    size_t nscopes;
    const char *op; /* create-user, update-user or delete-user */
    const cJSON *body, *target;
};

static bool caller_holds(const struct scase *c, const char *s)
{
    for (size_t i = 0; i < c->nscopes; i++)
        if (strcmp(c->scopes[i], s) == 0)
            return true;
    return false;
}

static bool loc_ok(const struct oracle *o, const struct scase *c, const char *loc)
{
    if (o->loc == 0)
        return true;
    if (o->loc == 1)
        return in(&o->locations, loc);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->claims, o->loc_claim);
    if (cJSON_IsString(v))
        return strcmp(v->valuestring, loc) == 0;
    for (const cJSON *e = cJSON_IsArray(v) ? v->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && strcmp(e->valuestring, loc) == 0)
            return true;
    return false;
}

/* A user as the oracle sees it: each member known or not. */
struct user {
    const char *type, *role;
    const cJSON *locations; /* an array, or NULL: not known */
    const cJSON *scopes;    /* an array or a space-separated string, or NULL: not known */
    int flag[64];           /* -1: not known */
};

static const char *why_not; /* what the last within() found */
/* how many cases were decided and allowed, by op (printed at exit: a property that no allowed
 * decision reaches would hold vacuously) */
static unsigned long cases, allowed[3];

static bool scope_ok(const struct oracle *o, const struct scase *c, const char *s)
{
    bool m = false;
    for (size_t i = 0; i < o->scopes.n && !m; i++)
        m = glob(o->scopes.v[i], s);
    if (!m)
        why_not = "a scope outside grant.scopes";
    else if (o->within && !caller_holds(c, s))
        why_not = "a scope the caller does not hold";
    return m && (!o->within || caller_holds(c, s));
}

static bool all_star(const struct list *l)
{
    return l->n == 1 && strcmp(l->v[0], "*") == 0;
}

/* Is u within what o may grant, for caller c? needs_locations: a target must be inside. */
static bool within(const struct oracle *o, const struct scase *c, const struct user *u,
                   bool needs_locations)
{
    if (!o->has_grant)
        return (why_not = "a policy without grant"), false;
    if (!in(&o->types, u->type))
        return (why_not = "a type outside grant.types"), false;
    if (!in(&o->roles, u->role))
        return (why_not = "a role outside grant.roles"), false;
    if (strcasecmp(u->type, "agency") == 0 && o->loc != 0)
        return (why_not = "an agency user under a location-bound policy"), false;
    if (u->scopes == NULL) {
        if (!all_star(&o->scopes) || o->within)
            return (why_not = "scopes not known under a bounded grant"), false;
    } else if (cJSON_IsString(u->scopes)) {
        char *copy = strdup(u->scopes->valuestring), *save = NULL;
        bool ok = copy != NULL;
        for (char *w = copy ? strtok_r(copy, " ", &save) : NULL; w && ok;
             w = strtok_r(NULL, " ", &save))
            ok = scope_ok(o, c, w);
        free(copy);
        if (!ok)
            return false;
    } else {
        for (const cJSON *e = u->scopes->child; e; e = e->next)
            if (!cJSON_IsString(e) || !scope_ok(o, c, e->valuestring))
                return false;
    }
    for (size_t f = 0; f < model->nperms && f < 64; f++)
        if (o->pin[f] >= 0 && u->flag[f] != o->pin[f])
            return (why_not = "a pinned flag with another (or no known) value"), false;
    if (o->loc != 0) {
        if (u->locations == NULL || (needs_locations && u->locations->child == NULL))
            return (why_not = "locations not known under a location-bound policy"), false;
        for (const cJSON *e = u->locations->child; e; e = e->next)
            if (!cJSON_IsString(e) || !loc_ok(o, c, e->valuestring))
                return (why_not = "a location outside the policy"), false;
    }
    return true;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The flags of a user object: what it says, the document's default for a flag left out,
 * -1 for a flag that is neither. */
static void flags_of(const cJSON *perms, int flag[64])
{
    for (size_t f = 0; f < model->nperms && f < 64; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(perms, model->perms[f].name);
        if (cJSON_IsBool(v))
            flag[f] = cJSON_IsTrue(v);
        else if (v == NULL && model->perms[f].has_def)
            flag[f] = model->perms[f].def;
        else
            flag[f] = -1;
    }
}

static struct user user_of(const cJSON *u)
{
    struct user r;
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(u, "roles");
    r.type = jstr(roles, "type");
    r.role = jstr(roles, "role");
    r.locations = cJSON_GetObjectItemCaseSensitive(roles, "locationIds");
    if (!cJSON_IsArray(r.locations))
        r.locations = NULL;
    r.scopes = cJSON_GetObjectItemCaseSensitive(u, "scopes");
    if (!cJSON_IsArray(r.scopes) && !cJSON_IsString(r.scopes))
        r.scopes = NULL;
    const cJSON *perms = cJSON_GetObjectItemCaseSensitive(u, "permissions");
    if (perms && !cJSON_IsObject(perms)) {
        for (size_t f = 0; f < 64; f++)
            r.flag[f] = -1;
    } else {
        flags_of(perms, r.flag);
    }
    if (!cJSON_IsObject(roles))
        r.type = r.role = NULL;
    return r;
}

static void counterexample(const char *what, const struct scase *c, const char *policy_text)
{
    char *b = c->body ? cJSON_PrintUnformatted(c->body) : NULL;
    char *t = c->target ? cJSON_PrintUnformatted(c->target) : NULL;
    char *cl = cJSON_PrintUnformatted(c->claims);
    fprintf(stderr,
            "fuzz_escalation: ESCALATION: %s (%s)\n  policy: %s\n  claims: %s\n  op: %s\n"
            "  body: %s\n  target: %s\n",
            what, why_not ? why_not : "?", policy_text, cl ? cl : "?", c->op, b ? b : "null",
            t ? t : "null");
    abort();
}

/* Asserts the property on an allowed decision. */
static void check_allowed(const struct oracle *o, const struct scase *c, const char *policy_text)
{
    const cJSON *b = c->body;
    bool creating = strcmp(c->op, "create-user") == 0;
    if (!creating) {
        why_not = NULL;
        struct user before = user_of(c->target);
        if (before.type == NULL || before.role == NULL)
            why_not = "no type or role that can be read";
        if (why_not || !within(o, c, &before, true))
            counterexample("the target was not within the grant", c, policy_text);
        if (strcmp(c->op, "delete-user") == 0)
            return;
    }
    /* the user that results */
    struct user after = creating ? (struct user){0} : user_of(c->target);
    if (creating) {
        after.scopes = NULL;
        flags_of(NULL, after.flag);
    }
    const char *s;
    if ((s = jstr(b, "type")))
        after.type = s;
    if ((s = jstr(b, "role")))
        after.role = s;
    const cJSON *v;
    if (cJSON_IsArray(v = cJSON_GetObjectItemCaseSensitive(b, "locationIds")))
        after.locations = v;
    if (cJSON_IsArray(v = cJSON_GetObjectItemCaseSensitive(b, "scopes")))
        after.scopes = v;
    const cJSON *perms = cJSON_GetObjectItemCaseSensitive(b, "permissions");
    struct user spec_model = after; /* SPEC 6.3's model: defaults under the flags sent */
    if (cJSON_IsObject(perms)) {
        flags_of(NULL, spec_model.flag);
        for (size_t f = 0; f < model->nperms && f < 64; f++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(perms, model->perms[f].name);
            if (cJSON_IsBool(x))
                after.flag[f] = spec_model.flag[f] = cJSON_IsTrue(x);
        }
    }
    why_not = after.type == NULL || after.role == NULL ? "no type or role that can be read" : NULL;
    if (why_not || !within(o, c, &after, false))
        counterexample("the user that results is not within the grant", c, policy_text);
    if (!within(o, c, &spec_model, false))
        counterexample("the user that results (flags not sent at their defaults) is not within "
                       "the grant",
                       c, policy_text);
    /* scopesAssignedToOnly: the list sent; on create an unknown list only under ["*"] */
    const cJSON *sato = cJSON_GetObjectItemCaseSensitive(b, "scopesAssignedToOnly");
    if (creating && sato == NULL && (!all_star(&o->sato) || o->within))
        counterexample("a create left scopesAssignedToOnly to the upstream's default", c,
                       policy_text);
    for (const cJSON *e = cJSON_IsArray(sato) ? sato->child : NULL; e; e = e->next) {
        bool m = false;
        for (size_t i = 0; i < o->sato.n && !m; i++)
            m = glob(o->sato.v[i], e->valuestring);
        if (!m || (o->within && !caller_holds(c, e->valuestring)))
            counterexample("an assigned-to-only scope outside the grant", c, policy_text);
    }
    const cJSON *phones = cJSON_GetObjectItemCaseSensitive(b, "twilioPhone");
    for (const cJSON *e = cJSON_IsObject(phones) ? phones->child : NULL; e; e = e->next)
        if (!loc_ok(o, c, e->string))
            counterexample("a twilioPhone location outside the policy", c, policy_text);
}

/* ---- running one case ---- */

static void cleanup(void)
{
    fprintf(stderr,
            "fuzz_escalation: %lu cases decided; allowed: %lu create-user, %lu update-user, "
            "%lu delete-user\n",
            cases, allowed[0], allowed[1], allowed[2]);
    unlink(file_p);
    rmdir(dir);
    gw_openapi_free(model);
}

static void init(void)
{
    char err[256];
    if (gw_openapi_load(gw_openapi_default_path(), &model, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_escalation: %s\n", err);
        abort();
    }
    for (size_t i = 0; i < N(SCOPES); i++)
        if (!gw_openapi_has_scope(model, SCOPES[i])) {
            fprintf(stderr, "fuzz_escalation: %s is no scope of the document\n", SCOPES[i]);
            abort();
        }
    for (size_t i = 0; i < N(FLAGS); i++)
        if (flag_index(FLAGS[i]) < 0) {
            fprintf(stderr, "fuzz_escalation: %s is no flag of the document\n", FLAGS[i]);
            abort();
        }
    snprintf(dir, sizeof dir, "/tmp/gw-fuzz-escalation.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("fuzz_escalation: mkdtemp");
        abort();
    }
    snprintf(file_p, sizeof file_p, "%s/p.json", dir);
    cfg.limits.max_body_bytes = 65536;
    cfg.limits.max_json_depth = 16;
    atexit(cleanup);
}

static void decide(const struct gw_policies *ps, const struct scase *c, const struct gw_route *r,
                   const cJSON *target, bool pending, struct gw_decision *d)
{
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(c->claims, "sub");
    struct gw_decision_input in = {
        .claims = c->claims,
        .sub = cJSON_IsString(sub) ? sub->valuestring : "",
        .scopes = c->scopes,
        .nscopes = c->nscopes,
        .op = r->op,
        .route = r,
        .body = c->body,
        .target = target,
        .target_pending = pending,
    };
    gw_policy_decide(ps, model, &in, d);
    if (d->allowed && (d->reasons.n != 0 || d->policy == NULL))
        abort();
}

/* One case: policy (an object), claims, op, body (validated here), target. */
static void run_case(const cJSON *policy, cJSON *claims, const char *op_id, const cJSON *body,
                     const cJSON *target)
{
    struct oracle o;
    if (read_oracle(policy, &o) != 0)
        return;
    char *text = cJSON_PrintUnformatted(policy);
    FILE *f = text ? fopen(file_p, "w") : NULL;
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror("fuzz_escalation: write");
        abort();
    }
    struct gw_errs errs = {0};
    struct gw_policies *ps = gw_policies_load(dir, model, &errs);
    gw_errs_free(&errs);
    const struct gw_op *op = gw_openapi_op(model, op_id);
    if (ps == NULL || op == NULL) {
        gw_policies_free(ps);
        cJSON_free(text);
        return;
    }
    struct scase c = {.claims = claims, .op = op_id, .target = target};
    const cJSON *scope = cJSON_GetObjectItemCaseSensitive(claims, "scope");
    char *sc = cJSON_IsString(scope) ? strdup(scope->valuestring) : NULL, *save = NULL;
    for (char *w = sc ? strtok_r(sc, " ", &save) : NULL; w && c.nscopes < N(c.scopes);
         w = strtok_r(NULL, " ", &save))
        c.scopes[c.nscopes++] = w;
    /* the body as the gateway has it: validated against the op's schema */
    cJSON *valid = NULL;
    bool ok = true;
    if (op->body_schema) {
        char *btext = body ? cJSON_PrintUnformatted(body) : NULL;
        struct gw_msgs msgs = {0};
        enum gw_reply_kind kind;
        char msg[256];
        ok = btext && gw_validate_body(&cfg, op, "application/json", btext, strlen(btext), &valid,
                                       &msgs, &kind, msg, sizeof msg) == 0;
        gw_msgs_free(&msgs);
        cJSON_free(btext);
    }
    char path[32];
    snprintf(path, sizeof path, "%s", op->method == GW_M_POST ? "/users/" : "/users/u1");
    struct gw_route r;
    char why[160];
    if (ok && gw_route_match(model, gw_method_name(op->method), path, &r, why, sizeof why) ==
                  GW_ROUTE_OK) {
        c.body = valid;
        struct gw_decision d;
        bool needs = gw_policy_needs_target(op);
        decide(ps, &c, &r, NULL, needs, &d);
        if (d.allowed && needs) {
            gw_decision_free(&d);
            if (target)
                decide(ps, &c, &r, target, false, &d);
        }
        cases++;
        if (d.allowed && (!needs || target)) {
            allowed[op->method == GW_M_POST ? 0 : op->method == GW_M_PUT ? 1 : 2]++;
            check_allowed(&o, &c, text);
        }
        gw_decision_free(&d);
        gw_route_free(&r);
    }
    cJSON_Delete(valid);
    free(sc);
    gw_policies_free(ps);
    cJSON_free(text);
}

/* ---- the generator ---- */

struct src {
    const uint8_t *p;
    size_t n;
};

static unsigned take(struct src *s, unsigned range)
{
    if (range <= 1)
        return 0;
    unsigned v = 0;
    if (s->n) {
        v = *s->p++;
        s->n--;
    }
    return v % range;
}

static bool coin(struct src *s)
{
    return take(s, 2) != 0;
}

/* An array of a random subset of words (possibly empty). */
static cJSON *subset(struct src *s, const char *const *words, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    unsigned mask = take(s, 1u << n);
    for (size_t i = 0; i < n; i++)
        if (mask & (1u << i))
            cJSON_AddItemToArray(a, cJSON_CreateString(words[i]));
    return a;
}

static cJSON *flags(struct src *s)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < N(FLAGS); i++) {
        unsigned k = take(s, 3);
        if (k)
            cJSON_AddBoolToObject(o, FLAGS[i], k == 2);
    }
    return o;
}

static cJSON *gen_policy(struct src *s)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", "p");
    cJSON *subj = cJSON_AddArrayToObject(p, "subjects");
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "sub", "s");
    cJSON_AddItemToArray(subj, e);
    static const char *const ops[] = {"create-user", "update-user", "delete-user", "get-user"};
    cJSON_AddItemToObject(p, "operations", cJSON_CreateStringArray(ops, 4));
    cJSON_AddStringToObject(p, "companies", "*");
    switch (take(s, 3)) {
    case 0:
        cJSON_AddStringToObject(p, "locations", "*");
        break;
    case 1: {
        cJSON *l = subset(s, LOCS, N(LOCS));
        if (cJSON_GetArraySize(l) == 0)
            cJSON_AddItemToArray(l, cJSON_CreateString("L1"));
        cJSON_AddItemToObject(p, "locations", l);
        break;
    }
    default: {
        cJSON *c = cJSON_AddObjectToObject(p, "locations");
        cJSON_AddStringToObject(c, "claim", "locs");
    }
    }
    if (take(s, 8) == 0)
        return p; /* no grant */
    cJSON *g = cJSON_AddObjectToObject(p, "grant");
    if (take(s, 6))
        cJSON_AddItemToObject(g, "types", subset(s, TYPES, N(TYPES)));
    if (take(s, 6))
        cJSON_AddItemToObject(g, "roles", subset(s, ROLES, N(ROLES)));
    if (take(s, 6))
        cJSON_AddItemToObject(g, "scopes", subset(s, PATTERNS, N(PATTERNS)));
    if (take(s, 6))
        cJSON_AddItemToObject(g, "scopes_assigned_to_only", subset(s, PATTERNS, N(PATTERNS)));
    if (coin(s))
        cJSON_AddBoolToObject(g, "within_caller_scopes", coin(s));
    if (coin(s))
        cJSON_AddItemToObject(g, "permissions", flags(s));
    if (take(s, 4) == 0)
        cJSON_AddNumberToObject(g, "max_locations", take(s, 4));
    return p;
}

static cJSON *gen_claims(struct src *s)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "iss", "https://idp.example.com");
    cJSON_AddStringToObject(c, "sub", "s");
    char scope[512] = "users.write users.readonly";
    unsigned mask = take(s, 1u << N(SCOPES));
    for (size_t i = 0; i < N(SCOPES); i++)
        if (mask & (1u << i)) {
            strncat(scope, " ", sizeof scope - strlen(scope) - 1);
            strncat(scope, SCOPES[i], sizeof scope - strlen(scope) - 1);
        }
    cJSON_AddStringToObject(c, "scope", scope);
    cJSON_AddItemToObject(c, "locs", subset(s, LOCS, N(LOCS)));
    return c;
}

static cJSON *phones(struct src *s)
{
    cJSON *o = cJSON_CreateObject();
    unsigned mask = take(s, 1u << N(LOCS));
    for (size_t i = 0; i < N(LOCS); i++)
        if (mask & (1u << i))
            cJSON_AddStringToObject(o, LOCS[i], "+15550100");
    return o;
}

static cJSON *gen_body(struct src *s, bool creating)
{
    cJSON *b = cJSON_CreateObject();
    if (creating) {
        cJSON_AddStringToObject(b, "companyId", "c1");
        cJSON_AddStringToObject(b, "firstName", "Ann");
        cJSON_AddStringToObject(b, "lastName", "Lee");
        cJSON_AddStringToObject(b, "email", "ann@example.com");
    }
    if (creating || coin(s))
        cJSON_AddStringToObject(b, "password", "Secret-pass-123");
    if (creating || take(s, 3) == 0)
        cJSON_AddStringToObject(b, "type", TYPES[take(s, N(TYPES))]);
    if (creating || take(s, 3) == 0)
        cJSON_AddStringToObject(b, "role", ROLES[take(s, N(ROLES))]);
    if (creating || take(s, 3) == 0)
        cJSON_AddItemToObject(b, "locationIds", subset(s, LOCS, N(LOCS)));
    if (take(s, 3))
        cJSON_AddItemToObject(b, "scopes", subset(s, SCOPES, N(SCOPES)));
    if (take(s, 3))
        cJSON_AddItemToObject(b, "scopesAssignedToOnly", subset(s, SCOPES, N(SCOPES)));
    if (coin(s))
        cJSON_AddItemToObject(b, "permissions", flags(s));
    if (take(s, 4) == 0)
        cJSON_AddItemToObject(b, "twilioPhone", phones(s));
    return b;
}

static cJSON *gen_target(struct src *s)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "id", "u1");
    if (take(s, 8)) {
        cJSON *r = cJSON_AddObjectToObject(t, "roles");
        if (take(s, 8))
            cJSON_AddStringToObject(r, "type", TYPES[take(s, N(TYPES))]);
        if (take(s, 8))
            cJSON_AddStringToObject(r, "role", ROLES[take(s, N(ROLES))]);
        if (take(s, 6))
            cJSON_AddItemToObject(r, "locationIds", subset(s, LOCS, N(LOCS)));
    }
    switch (take(s, 4)) {
    case 0:
        break; /* answered without scopes */
    case 1: {  /* as the document declares it: one string */
        cJSON *a = subset(s, SCOPES, N(SCOPES));
        char words[512] = "";
        for (const cJSON *e = a->child; e; e = e->next) {
            strncat(words, e->valuestring, sizeof words - strlen(words) - 1);
            strncat(words, " ", sizeof words - strlen(words) - 1);
        }
        cJSON_Delete(a);
        cJSON_AddStringToObject(t, "scopes", words);
        break;
    }
    default:
        cJSON_AddItemToObject(t, "scopes", subset(s, SCOPES, N(SCOPES)));
    }
    if (take(s, 4))
        cJSON_AddItemToObject(t, "permissions", flags(s));
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (model == NULL)
        init();
    if (size > 65536)
        return 0;
    if (size && data[0] == '{') {
        struct gw_json_error je;
        struct gw_json_opts o = {.max_depth = 16};
        cJSON *j = gw_json_parse((const char *)data, size, &o, &je);
        const cJSON *pol = cJSON_GetObjectItemCaseSensitive(j, "policy");
        cJSON *claims = cJSON_GetObjectItemCaseSensitive(j, "claims");
        const char *req = jstr(j, "request");
        const cJSON *body = cJSON_GetObjectItemCaseSensitive(j, "body");
        const cJSON *target = cJSON_GetObjectItemCaseSensitive(j, "target");
        static const struct {
            const char *request, *op;
        } ops[] = {{"POST /users/", "create-user"},
                   {"PUT /users/u1", "update-user"},
                   {"DELETE /users/u1", "delete-user"}};
        for (size_t i = 0; req && cJSON_IsObject(pol) && cJSON_IsObject(claims) && i < N(ops); i++)
            if (strcmp(req, ops[i].request) == 0)
                run_case(pol, claims, ops[i].op, cJSON_IsObject(body) ? body : NULL,
                         cJSON_IsObject(target) ? target : NULL);
        cJSON_Delete(j);
        return 0;
    }
    struct src s = {data, size};
    cJSON *pol = gen_policy(&s);
    cJSON *claims = gen_claims(&s);
    unsigned k = take(&s, 3);
    static const char *const ops[] = {"create-user", "update-user", "delete-user"};
    cJSON *body = k == 2 ? NULL : gen_body(&s, k == 0);
    cJSON *target = k == 0 ? NULL : gen_target(&s);
    run_case(pol, claims, ops[k], body, target);
    cJSON_Delete(pol);
    cJSON_Delete(claims);
    cJSON_Delete(body);
    cJSON_Delete(target);
    return 0;
}
