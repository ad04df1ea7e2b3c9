#include "explain.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"
#include "auth.h"
#include "json.h"
#include "openapi.h"
#include "policy.h"
#include "route.h"
#include "snapshot.h"

#define MAX_CASES_BYTES (8u << 20)
#define MAX_REQUEST_LINE 8192

#define deny(e, code, ...)                                                                         \
    do {                                                                                           \
        (e)->allowed = false;                                                                      \
        (e)->status = (code);                                                                      \
        gw_msgs_add(&(e)->reasons, __VA_ARGS__);                                                   \
    } while (0)

/* The reasons of an admission refusal, in the words the live gateway answers with. */
static void admission_reasons(const struct gw_admission *a, const struct gw_op *op,
                              struct gw_explain *e)
{
    e->allowed = false;
    e->status = gw_reply_status(a->kind);
    switch (a->kind) {
    case GW_R_SCOPE:
        gw_msgs_add(&e->reasons, "The token is not authorized for this scope. (%s needs %s)",
                    op->id, op->scope);
        break;
    case GW_R_UNPROCESSABLE:
        for (size_t i = 0; i < a->msgs.n; i++)
            gw_msgs_add(&e->reasons, "%s", a->msgs.v[i]);
        break;
    case GW_R_TOO_LARGE:
        gw_msgs_add(&e->reasons, "request entity too large");
        break;
    default:
        gw_msgs_add(&e->reasons, "%s", a->msg[0] ? a->msg : gw_reply_reason(a->kind));
        break;
    }
}

int gw_explain(const struct gw_snapshot *s, const struct gw_explain_input *in,
               struct gw_explain *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    /* "METHOD SP TARGET": one space, nothing else */
    const char *sp = in->request ? strchr(in->request, ' ') : NULL;
    size_t rlen = in->request ? strlen(in->request) : 0;
    if (sp == NULL || sp == in->request || sp[1] == '\0' || strchr(sp + 1, ' ') ||
        rlen > MAX_REQUEST_LINE) {
        snprintf(why, whylen, "the request must be 'METHOD PATH[?QUERY]', e.g. 'GET /users/abc'");
        return -1;
    }
    char method[16];
    size_t mlen = (size_t)(sp - in->request);
    if (mlen >= sizeof method) {
        snprintf(why, whylen, "unknown method in the request");
        return -1;
    }
    memcpy(method, in->request, mlen);
    method[mlen] = '\0';

    char msg[700];
    struct gw_route route;
    enum gw_route_result rr = gw_route_match(s->api, method, sp + 1, &route, msg, sizeof msg);
    if (rr == GW_ROUTE_BAD_TARGET) {
        deny(out, 400, "%s", msg);
        gw_route_free(&route);
        return 0;
    }
    if (rr == GW_ROUTE_NOT_FOUND) {
        snprintf(msg, sizeof msg, "Cannot %s %.512s", method, route.path ? route.path : "");
        deny(out, 404, "%s", msg);
        gw_route_free(&route);
        return 0;
    }
    const struct gw_op *op = route.op;
    out->op = op->id;

    struct gw_principal *p = NULL;
    enum gw_auth_reason ar = gw_principal_from_claims(s->auth, in->claims, &p);
    if (ar != GW_AUTH_OK) {
        const cJSON *iss = cJSON_GetObjectItemCaseSensitive(in->claims, "iss");
        if (ar == GW_AUTH_UNKNOWN_ISSUER) {
            deny(out, 401, "unknown_issuer: iss %s is not a configured issuer",
                 cJSON_IsString(iss) ? iss->valuestring : "(missing)");
        } else {
            deny(out, 401,
                 "%s: the claims lack a valid subject, or a scope or client claim is not a "
                 "string",
                 gw_auth_reason_name(ar));
        }
        gw_route_free(&route);
        return 0;
    }

    const char *version = s->cfg->upstream.napi_versions ? s->cfg->upstream.api_versions[0] : NULL;
    struct gw_admission adm;
    if (gw_admit(s, &route, p, version, false, in->body ? "application/json" : NULL,
                 in->body ? in->body : "", in->body ? in->body_len : 0, &adm) != 0) {
        admission_reasons(&adm, op, out);
        goto done;
    }
    bool needs_target = gw_policy_needs_target(op);
    struct gw_decision d;
    /* as the live path: update/delete are decided on the request alone first */
    gw_admit_decide(s, &route, p, adm.body, NULL, needs_target, &d);
    if (d.allowed) {
        if (gw_admit_credential(s, &route, msg, sizeof msg) == NULL) {
            out->policy = gw_policy_name(d.policy);
            deny(out, 503, "%s", msg);
            gw_decision_free(&d);
            goto done;
        }
        if (needs_target) {
            gw_decision_free(&d);
            gw_admit_decide(s, &route, p, adm.body, in->target, false, &d);
        }
    }
    out->allowed = d.allowed;
    out->policy = gw_policy_name(d.policy);
    if (!d.allowed) {
        out->status = 403;
        for (size_t i = 0; i < d.reasons.n; i++)
            gw_msgs_add(&out->reasons, "%s", d.reasons.v[i]);
    } else if (in->target && gw_policy_reads_one_user(op) && gw_policy_filters_reads(d.policy)) {
        /* get-user: the read rules on the user the upstream would answer with */
        cJSON *copy = cJSON_Duplicate(in->target, true);
        enum gw_filter_result fr =
            copy ? gw_policy_filter_reply(d.policy, op, p->claims, copy, msg, sizeof msg)
                 : GW_FILTER_OK;
        if (fr != GW_FILTER_OK)
            deny(out, fr == GW_FILTER_FORBIDDEN ? 403 : 502, "%s", msg);
        cJSON_Delete(copy);
    }
    gw_decision_free(&d);
done:
    gw_admission_free(&adm);
    gw_principal_unref(p);
    gw_route_free(&route);
    return 0;
}

void gw_explain_free(struct gw_explain *e)
{
    gw_msgs_free(&e->reasons);
}

cJSON *gw_explain_json(const struct gw_explain *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *r = cJSON_CreateArray();
    if (o == NULL || r == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(r);
        return NULL;
    }
    cJSON_AddBoolToObject(o, "allowed", e->allowed);
    if (e->op)
        cJSON_AddStringToObject(o, "op", e->op);
    else
        cJSON_AddNullToObject(o, "op");
    if (e->policy)
        cJSON_AddStringToObject(o, "policy", e->policy);
    else
        cJSON_AddNullToObject(o, "policy");
    for (size_t i = 0; i < e->reasons.n; i++)
        cJSON_AddItemToArray(r, cJSON_CreateString(e->reasons.v[i]));
    cJSON_AddItemToObject(o, "reasons", r);
    if (!e->allowed)
        cJSON_AddNumberToObject(o, "status", e->status);
    return o;
}

/* ---- policy-test ---- */

static const char *const case_keys[] = {"name",   "claims", "request",         "body",
                                        "target", "expect", "reason_contains", "description",
                                        NULL};

/* Checks one case's shape. Returns NULL when valid, else what is wrong. */
static const char *case_problem(const cJSON *c, const char **bad_key)
{
    *bad_key = NULL;
    if (!cJSON_IsObject(c))
        return "a case must be an object";
    for (const cJSON *m = c->child; m; m = m->next) {
        bool known = false;
        for (const char *const *k = case_keys; *k && !known; k++)
            known = strcmp(*k, m->string) == 0;
        if (!known) {
            *bad_key = m->string;
            return "unknown key";
        }
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, "name");
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return "name must be a non-empty string";
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(c, "claims")))
        return "claims must be an object";
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "request")))
        return "request must be a string 'METHOD PATH[?QUERY]'";
    v = cJSON_GetObjectItemCaseSensitive(c, "target");
    if (v && !cJSON_IsNull(v) && !cJSON_IsObject(v))
        return "target must be an object or null";
    v = cJSON_GetObjectItemCaseSensitive(c, "expect");
    if (!cJSON_IsString(v) ||
        (strcmp(v->valuestring, "allow") != 0 && strcmp(v->valuestring, "deny") != 0))
        return "expect must be \"allow\" or \"deny\"";
    v = cJSON_GetObjectItemCaseSensitive(c, "reason_contains");
    if (v && !cJSON_IsString(v))
        return "reason_contains must be a string";
    v = cJSON_GetObjectItemCaseSensitive(c, "description");
    if (v && !cJSON_IsString(v))
        return "description must be a string";
    return NULL;
}

static void print_reasons(FILE *out, const struct gw_explain *e)
{
    for (size_t i = 0; i < e->reasons.n; i++)
        fprintf(out, "%s%s", i ? " | " : "", e->reasons.v[i]);
}

/* Runs one valid case. Returns true when it passed; prints why not. */
static bool run_case(const struct gw_snapshot *s, const cJSON *c, FILE *out)
{
    const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(c, "body");
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(c, "target");
    bool want_allow =
        strcmp(cJSON_GetObjectItemCaseSensitive(c, "expect")->valuestring, "allow") == 0;
    const cJSON *contains = cJSON_GetObjectItemCaseSensitive(c, "reason_contains");
    char *text = body && !cJSON_IsNull(body) ? cJSON_PrintUnformatted(body) : NULL;
    struct gw_explain_input in = {
        .claims = cJSON_GetObjectItemCaseSensitive(c, "claims"),
        .request = cJSON_GetObjectItemCaseSensitive(c, "request")->valuestring,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .target = cJSON_IsObject(target) ? target : NULL,
    };
    struct gw_explain e;
    char why[200];
    bool pass = false;
    if (gw_explain(s, &in, &e, why, sizeof why) != 0) {
        fprintf(out, "FAIL %s: %s\n", name, why);
        cJSON_free(text);
        return false;
    }
    if (e.allowed != want_allow) {
        fprintf(out, "FAIL %s: expected %s, got %s", name, want_allow ? "allow" : "deny",
                e.allowed ? "allow" : "deny");
        if (e.allowed)
            fprintf(out, " (policy %s)", e.policy ? e.policy : "?");
        else {
            fprintf(out, " (%d: ", e.status);
            print_reasons(out, &e);
            fprintf(out, ")");
        }
        fprintf(out, "\n");
    } else if (contains && !e.allowed) {
        for (size_t i = 0; i < e.reasons.n && !pass; i++)
            pass = strstr(e.reasons.v[i], contains->valuestring) != NULL;
        if (!pass) {
            fprintf(out, "FAIL %s: denied, but no reason contains \"%s\" (", name,
                    contains->valuestring);
            print_reasons(out, &e);
            fprintf(out, ")\n");
        }
    } else if (contains) {
        fprintf(out, "FAIL %s: reason_contains is given but the case expects allow\n", name);
    } else {
        pass = true;
    }
    gw_explain_free(&e);
    cJSON_free(text);
    return pass;
}

int gw_policy_test(const struct gw_snapshot *s, const char *path, FILE *out, FILE *err)
{
    size_t len;
    char *buf = gw_read_file(path, MAX_CASES_BYTES, &len);
    if (buf == NULL) {
        fprintf(err, "%s: cannot read: %s\n", path, strerror(errno));
        return -1;
    }
    struct gw_json_lines lines = {0};
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 32, .allow_comments = true, .lines = &lines};
    cJSON *cases = gw_json_parse(buf, len, &o, &je);
    free(buf);
    if (cases == NULL) {
        fprintf(err, "%s:%d: %s\n", path, je.line, je.msg);
        gw_json_lines_free(&lines);
        return -1;
    }
    int rc = 0;
    if (!cJSON_IsArray(cases) || cJSON_GetArraySize(cases) == 0) {
        fprintf(err, "%s:1: a policy-test file is a non-empty array of cases\n", path);
        rc = -1;
    }
    int idx = 0;
    for (const cJSON *c = rc == 0 ? cases->child : NULL; c; c = c->next, idx++) {
        const char *bad_key, *problem = case_problem(c, &bad_key);
        if (problem) {
            fprintf(err, "%s:%d: case %d: %s%s%s\n", path, gw_json_line(&lines, c), idx + 1,
                    bad_key ? bad_key : "", bad_key ? ": " : "", problem);
            rc = -1;
        }
    }
    gw_json_lines_free(&lines);
    if (rc != 0) {
        cJSON_Delete(cases);
        return -1;
    }
    int passed = 0, failed = 0;
    for (const cJSON *c = cases->child; c; c = c->next) {
        if (run_case(s, c, out))
            passed++;
        else
            failed++;
    }
    fprintf(out, "%d passed, %d failed\n", passed, failed);
    cJSON_Delete(cases);
    return failed;
}
