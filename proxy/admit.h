/* admit: what happens to an authenticated request before it may go upstream, in one place for
 * the live gateway and for `explain` / `policy-test`, so that they cannot disagree.
 *
 * In order: the op's scope (503 when the document names none: fail closed; 401 when the
 * caller lacks it, SPEC §4), the Version header (400), the query and the body against the
 * OpenAPI document (422, 415, 413, 400: SPEC §5); then the policy decision (403, SPEC §6) and
 * the upstream credential the op needs (503, SPEC §3), so that a caller the policies refuse
 * learns nothing about which credentials exist. update-user and delete-user are decided twice
 * (gw_policy_needs_target): on the request alone first, and only when that allows, on the
 * target user the credential then fetches. The read rules then apply to the answer
 * (gw_policy_filter_reply).
 *
 * Memory: an admission owns the validated body and its messages (gw_admission_free).
 * Threads: any; the snapshot and the principal are only read.
 */
#ifndef GW_ADMIT_H
#define GW_ADMIT_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#include "msgs.h"
#include "policy.h"
#include "reply.h"

struct gw_credential;
struct gw_principal;
struct gw_route;
struct gw_snapshot;

struct gw_admission {
    bool ok;
    enum gw_reply_kind kind; /* when not ok: the reply */
    char msg[256];           /* for the kinds that carry a message */
    struct gw_msgs msgs;     /* 422: every violation */
    cJSON *body;             /* the validated body, or NULL (ops without one) */
};

/* Checks everything before the policy. version/version_repeated: the Version header;
 * content_type: NULL when absent or repeated. Always fills out; returns 0 when admitted. */
int gw_admit(const struct gw_snapshot *s, const struct gw_route *route,
             const struct gw_principal *p, const char *version, bool version_repeated,
             const char *content_type, const char *data, size_t len, struct gw_admission *out);
void gw_admission_free(struct gw_admission *a);
/* The validated body, now the caller's (cJSON_Delete); the admission no longer holds it. */
cJSON *gw_admission_take_body(struct gw_admission *a);

/* The credential the op is sent upstream with (SPEC §3), or NULL with why (503). */
const struct gw_credential *gw_admit_credential(const struct gw_snapshot *s,
                                                const struct gw_route *route, char *why,
                                                size_t whylen);

/* The policy decision for an admitted request. target: update/delete, the user as fetched,
 * else NULL; target_pending: update/delete before the fetch (every check but the target's). */
void gw_admit_decide(const struct gw_snapshot *s, const struct gw_route *route,
                     const struct gw_principal *p, const cJSON *body, const cJSON *target,
                     bool target_pending, struct gw_decision *out);

#endif
