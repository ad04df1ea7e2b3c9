/* explain: the offline evaluation behind `ghl-gateway explain` and `ghl-gateway policy-test`
 * (SPEC §1.1, §6.6). Given claims (instead of a signed token), a request line, a body and the
 * target user, it runs what the live gateway runs on a request, with the same functions:
 * routing (route.h), the principal read from the claims by the issuer's rules (auth.h), the
 * admission checks and the policy decision (admit.h), and for get-user the read rules on the
 * target (policy.h). The Version header is taken as valid (the first of
 * upstream.api_versions) and a body is sent as application/json.
 *
 * Memory: a result owns its reasons (gw_explain_free). Threads: any.
 */
#ifndef GW_EXPLAIN_H
#define GW_EXPLAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <cJSON.h>

#include "msgs.h"

struct gw_snapshot;

struct gw_explain_input {
    const cJSON *claims;
    const char *request; /* "METHOD PATH[?QUERY]" */
    const char *body;    /* the body's bytes, or NULL for none */
    size_t body_len;
    const cJSON *target; /* the user as the upstream has it (update, delete, get), or NULL */
};

struct gw_explain {
    bool allowed;
    int status;         /* denied: what the live gateway answers (401, 403, 404, 422, ...) */
    const char *op;     /* NULL when the request matches no route */
    const char *policy; /* the allowing policy; denied: the first whose subjects matched */
    struct gw_msgs reasons;
};

/* Returns 0 with out filled, or -1 when the request line is malformed (why filled). */
int gw_explain(const struct gw_snapshot *s, const struct gw_explain_input *in,
               struct gw_explain *out, char *why, size_t whylen);
void gw_explain_free(struct gw_explain *e);
/* {"allowed":..,"op":..,"policy":..,"reasons":[..],"status":..} (status only when denied). */
cJSON *gw_explain_json(const struct gw_explain *e);

/* Runs the cases of a policy-test file (SPEC §6.6): one line per failing case on out, then
 * "N passed, M failed". Returns the number of failed cases, or -1 when the file cannot be read
 * or is not a valid case list (the problem printed on err). */
int gw_policy_test(const struct gw_snapshot *s, const char *path, FILE *out, FILE *err);

#endif
