/* The policy loader on any file, against the shipped OpenAPI document; what it loads is then
 * decided on (every op, with and without a body, target and route) and used to filter fixed
 * replies. The input is written as a.json in a private folder made once; when it holds the
 * separator "\n--8<--\n", the part after it becomes b.json (two files: duplicate names, file
 * order, the first of several policies). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "openapi.h"
#include "policy.h"
#include "route.h"

#define SEP "\n--8<--\n"
#define MAX_OPS 32

static struct gw_openapi *model;
static char dir[64], file_a[96], file_b[96];
#define NTARGETS 5
static cJSON *claims, *body, *targets[NTARGETS], *list_reply, *user_reply;
static struct gw_route routes[MAX_OPS]; /* per op: its path with ?companyId=..&locationId=.. */
static bool have_route[MAX_OPS];
static const char *const scopes[] = {"users.write", "users.readonly", "contacts.write",
                                     "conversations.readonly"};

static cJSON *parse_fixed(const char *s)
{
    cJSON *v = cJSON_Parse(s);
    if (v == NULL)
        abort();
    return v;
}

static void cleanup(void)
{
    unlink(file_a);
    unlink(file_b);
    rmdir(dir);
    for (size_t i = 0; model && i < model->nops && i < MAX_OPS; i++)
        if (have_route[i])
            gw_route_free(&routes[i]);
    cJSON_Delete(claims);
    cJSON_Delete(body);
    for (size_t i = 0; i < NTARGETS; i++)
        cJSON_Delete(targets[i]);
    cJSON_Delete(list_reply);
    cJSON_Delete(user_reply);
    gw_openapi_free(model);
}

/* The op's path template with every {param} replaced by "u1", plus the query. */
static void make_route(size_t i)
{
    const struct gw_op *op = &model->ops[i];
    char t[512];
    size_t n = 0;
    for (const char *s = op->path; *s && n < sizeof t - 80; s++) {
        if (*s == '{') {
            const char *e = strchr(s, '}');
            if (e == NULL)
                break;
            memcpy(t + n, "u1", 2);
            n += 2;
            s = e;
        } else {
            t[n++] = *s;
        }
    }
    snprintf(t + n, sizeof t - n,
             "?companyId=ve9EPM428h8vShlRW1KT&locationId=C2QujeCh8ZnC7al2InWR");
    char why[160];
    if (gw_route_match(model, gw_method_name(op->method), t, &routes[i], why, sizeof why) ==
            GW_ROUTE_OK &&
        routes[i].op == op)
        have_route[i] = true;
    else
        gw_route_free(&routes[i]);
}

static void init(void)
{
    char err[256];
    if (gw_openapi_load(gw_openapi_default_path(), &model, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_policy: %s\n", err);
        abort();
    }
    snprintf(dir, sizeof dir, "/tmp/gw-fuzz-policy.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("fuzz_policy: mkdtemp");
        abort();
    }
    snprintf(file_a, sizeof file_a, "%s/a.json", dir);
    snprintf(file_b, sizeof file_b, "%s/b.json", dir);
    for (size_t i = 0; i < model->nops && i < MAX_OPS; i++)
        make_route(i);
    claims = parse_fixed("{\"iss\":\"https://idp.example.com\",\"sub\":\"svc-onboarding\","
                         "\"groups\":[\"support\",\"gateway-admins\",7],"
                         "\"locations\":[\"C2QujeCh8ZnC7al2InWR\",\"L2\"],\"loc\":\"L2\","
                         "\"n\":1,\"o\":{\"a\":\"b\"}}");
    body = parse_fixed("{\"companyId\":\"ve9EPM428h8vShlRW1KT\",\"firstName\":\"Ann\","
                       "\"lastName\":\"Lee\",\"email\":\"ann@example.com\",\"password\":\"pw\","
                       "\"phone\":\"+15550100\",\"type\":\"account\",\"role\":\"user\","
                       "\"locationIds\":[\"C2QujeCh8ZnC7al2InWR\",\"L2\"],"
                       "\"permissions\":{\"assignedDataOnly\":true,\"paymentsEnabled\":true},"
                       "\"scopes\":[\"contacts.write\",\"users.write\",\"calendars.write\"],"
                       "\"scopesAssignedToOnly\":[\"contacts.write\"],"
                       "\"twilioPhone\":{\"C2QujeCh8ZnC7al2InWR\":\"+1\",\"L9\":\"\"}}");
    /* targets for the target rules: locations, and type, role, scopes and flags within the
     * grant (an admin, scopes as a string, an answer without roles, without scopes) */
    targets[0] =
        parse_fixed("{\"id\":\"u1\",\"name\":\"Ann Lee\",\"phone\":\"+15550100\","
                    "\"roles\":{\"type\":\"account\",\"role\":\"user\","
                    "\"locationIds\":[\"C2QujeCh8ZnC7al2InWR\",\"M2QrtfVt8ZnC7cv2InDL\"]}}");
    targets[1] =
        parse_fixed("{\"id\":\"u1\",\"roles\":{\"type\":\"account\",\"role\":\"admin\","
                    "\"locationIds\":[\"C2QujeCh8ZnC7al2InWR\"]},\"scopes\":[\"contacts.write\","
                    "\"payments.write\"],\"permissions\":{\"paymentsEnabled\":false,"
                    "\"assignedDataOnly\":true}}");
    targets[2] =
        parse_fixed("{\"id\":\"u1\",\"roles\":{\"type\":\"account\",\"role\":\"user\","
                    "\"locationIds\":[\"L2\"]},\"scopes\":\"contacts.write  calendars.write\","
                    "\"permissions\":{\"paymentsEnabled\":\"no\"}}");
    targets[3] = parse_fixed("{\"id\":\"u1\",\"scopes\":[],\"permissions\":[]}");
    targets[4] = parse_fixed("{\"roles\":{\"type\":\"Agency\",\"role\":\"user\"},"
                             "\"scopes\":[\"contacts.write\",7]}");
    list_reply = parse_fixed(
        "{\"users\":["
        "{\"id\":\"u1\",\"phone\":\"+1\",\"lcPhone\":{\"x\":1},\"roles\":{\"type\":\"account\","
        "\"locationIds\":[\"C2QujeCh8ZnC7al2InWR\"]}},"
        "{\"id\":\"u2\",\"phone\":\"+2\",\"roles\":{\"type\":\"account\","
        "\"locationIds\":[\"M2QrtfVt8ZnC7cv2InDL\",\"L2\"]}},"
        "{\"id\":\"u3\",\"roles\":{\"type\":\"agency\",\"locationIds\":[]}},"
        "{\"id\":\"u4\",\"roles\":{\"locationIds\":[\"elsewhere\",5]}},"
        "{\"id\":\"u5\"}],\"count\":5}");
    user_reply = parse_fixed("{\"id\":\"u2\",\"name\":\"Bo\",\"email\":\"bo@example.com\","
                             "\"phone\":\"+2\",\"lcPhone\":\"+2\",\"roles\":{\"type\":\"account\","
                             "\"locationIds\":[\"L2\"]}}");
    atexit(cleanup);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror("fuzz_policy: write");
        abort();
    }
}

static void decide_all(const struct gw_policies *ps)
{
    for (size_t i = 0; i < model->nops && i < MAX_OPS; i++) {
        for (int k = 0; k < 8 + 4 * NTARGETS; k++) {
            struct gw_decision_input in = {
                .claims = claims,
                .sub = "svc-onboarding",
                .scopes = scopes,
                .nscopes = sizeof scopes / sizeof *scopes,
                .op = &model->ops[i],
                .route = (k & 4) && have_route[i] ? &routes[i] : NULL,
                .body = (k & 1) ? body : NULL,
                .target = k >= 8    ? targets[(k - 8) / 4]
                          : (k & 2) ? targets[0]
                                    : NULL,
            };
            struct gw_decision d;
            gw_policy_decide(ps, model, &in, &d);
            if (d.allowed ? (d.policy == NULL || d.reasons.n != 0) : d.reasons.n == 0)
                abort(); /* allowed by a policy with no reason, or denied with one */
            for (size_t r = 0; r < d.reasons.n; r++)
                if (d.reasons.v[r] == NULL || d.reasons.v[r][0] == '\0')
                    abort();
            if (d.policy && gw_policy_name(d.policy) == NULL)
                abort();
            gw_decision_free(&d);
        }
    }
}

static void filter_all(const struct gw_policy *p)
{
    bool filters = gw_policy_filters_reads(p);
    for (const cJSON *u = cJSON_GetObjectItemCaseSensitive(list_reply, "users")->child; u;
         u = u->next)
        if (!filters && !gw_policy_visible(p, claims, u))
            abort(); /* locations "*": everything is visible */
    for (size_t i = 0; i < model->nops; i++) {
        const struct gw_op *op = &model->ops[i];
        char why[256];
        /* the list reads: a list is filtered, never refused, and count follows the users */
        bool list_op = op->method != GW_M_DELETE && !gw_policy_needs_target(op) &&
                       !gw_policy_reads_one_user(op) &&
                       !cJSON_GetObjectItemCaseSensitive(
                           cJSON_GetObjectItemCaseSensitive(op->body_schema, "properties"), "type");
        cJSON *l = cJSON_Duplicate(list_reply, true);
        why[0] = '\0';
        enum gw_filter_result fr = gw_policy_filter_reply(p, op, claims, l, why, sizeof why);
        if (fr != GW_FILTER_OK && why[0] == '\0')
            abort(); /* a refusal says why */
        if (list_op) {
            if (fr != GW_FILTER_OK)
                abort();
            const cJSON *users = cJSON_GetObjectItemCaseSensitive(l, "users");
            const cJSON *count = cJSON_GetObjectItemCaseSensitive(l, "count");
            if (!cJSON_IsNumber(count) || count->valueint != cJSON_GetArraySize(users))
                abort(); /* count follows the users dropped */
            if (!filters && !cJSON_Compare(l, list_reply, true))
                abort();
        }
        cJSON_Delete(l);
        cJSON *s = cJSON_Duplicate(user_reply, true);
        why[0] = '\0';
        fr = gw_policy_filter_reply(p, op, claims, s, why, sizeof why);
        if (fr != GW_FILTER_OK && why[0] == '\0')
            abort(); /* a refusal says why */
        if (list_op && fr != GW_FILTER_MALFORMED)
            abort(); /* a single user is not a list */
        if (!list_op && fr == GW_FILTER_MALFORMED)
            abort(); /* a user object is what get, create and update answer */
        if (!filters && fr == GW_FILTER_OK && !cJSON_Compare(s, user_reply, true))
            abort();
        cJSON_Delete(s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (model == NULL)
        init();
    if (size > (1u << 20))
        return 0;
    const uint8_t *sep = memmem(data, size, SEP, sizeof SEP - 1);
    if (sep) {
        write_file(file_a, data, (size_t)(sep - data));
        size_t off = (size_t)(sep - data) + sizeof SEP - 1;
        write_file(file_b, data + off, size - off);
    } else {
        write_file(file_a, data, size);
        unlink(file_b);
    }
    struct gw_errs errs = {0};
    struct gw_policies *ps = gw_policies_load(dir, model, &errs);
    if ((ps == NULL) != (errs.problems.n != 0))
        abort(); /* a refusal always says why, and a set with errors is never returned */
    if (ps) {
        if (ps->n != (sep ? 2u : 1u))
            abort(); /* one policy per file */
        decide_all(ps);
        filter_all(ps->p);
        gw_policies_free(ps);
    }
    gw_errs_free(&errs);
    return 0;
}
