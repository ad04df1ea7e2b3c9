#include "admit.h"

#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "openapi.h"
#include "route.h"
#include "snapshot.h"
#include "validate.h"

static int refuse(struct gw_admission *a, enum gw_reply_kind kind)
{
    a->ok = false;
    a->kind = kind;
    return -1;
}

const struct gw_credential *gw_admit_credential(const struct gw_snapshot *s,
                                                const struct gw_route *route, char *why,
                                                size_t whylen)
{
    const struct gw_op *op = route->op;
    if (op->cred == GW_CRED_AGENCY) {
        if (s->agency.token || (s->offline && s->cfg->credentials.agency_token_file))
            return &s->agency;
        snprintf(why, whylen, "no agency token is configured (credentials.agency_token_file)");
        return NULL;
    }
    if (op->cred == GW_CRED_LOCATION) {
        const char *loc = gw_route_query(route, "locationId");
        const struct gw_credential *c = loc ? gw_snapshot_location(s, loc) : NULL;
        if (c == NULL)
            snprintf(why, whylen,
                     "no Sub-Account token is configured for location %.64s "
                     "(credentials.location_token_files)",
                     loc ? loc : "");
        return c;
    }
    snprintf(why, whylen, "no credential fits %s", op->id);
    return NULL;
}

int gw_admit(const struct gw_snapshot *s, const struct gw_route *route,
             const struct gw_principal *p, const char *version, bool version_repeated,
             const char *content_type, const char *data, size_t len, struct gw_admission *out)
{
    memset(out, 0, sizeof *out);
    const struct gw_op *op = route->op;
    if (op->scope == NULL) {
        /* fail closed: a document that drops an op's scope must not open it to every token */
        snprintf(out->msg, sizeof out->msg, "the OpenAPI document names no scope for %s", op->id);
        return refuse(out, GW_R_UNAVAILABLE);
    }
    if (!gw_principal_holds_op_scopes(p, op))
        return refuse(out, GW_R_SCOPE);
    if (version_repeated)
        return refuse(out, GW_R_VERSION_INVALID);
    enum gw_reply_kind kind;
    if (gw_validate_version(s->cfg, version, &kind) != 0)
        return refuse(out, kind);
    if (gw_validate_query(route, &out->msgs) > 0)
        return refuse(out, GW_R_UNPROCESSABLE);
    if (gw_validate_body(s->cfg, op, content_type, data, len, &out->body, &out->msgs, &kind,
                         out->msg, sizeof out->msg) != 0)
        return refuse(out, kind);
    out->ok = true;
    return 0;
}

cJSON *gw_admission_take_body(struct gw_admission *a)
{
    cJSON *b = a->body;
    a->body = NULL;
    return b;
}

void gw_admission_free(struct gw_admission *a)
{
    cJSON_Delete(a->body);
    gw_msgs_free(&a->msgs);
    a->body = NULL;
}

void gw_admit_decide(const struct gw_snapshot *s, const struct gw_route *route,
                     const struct gw_principal *p, const cJSON *body, const cJSON *target,
                     bool target_pending, struct gw_decision *out)
{
    struct gw_decision_input in = {
        .claims = p->claims,
        .sub = p->sub,
        .scopes = (const char *const *)p->scopes,
        .nscopes = p->nscopes,
        .op = route->op,
        .route = route,
        .body = body,
        .target = target,
        .target_pending = target_pending,
    };
    gw_policy_decide(s->policies, s->api, &in, out);
}
