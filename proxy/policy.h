/* policy: who may touch which users, and what they may grant (SPEC §6).
 *
 * Owns: loading and validating the policy files of policies.dir against the OpenAPI model (op
 * names, permission flag names, scope patterns that must match a real scope, member names);
 * the decision of SPEC §6.2 with every check of §6.3, permission pins checked on EFFECTIVE
 * values (the document's defaults overlaid with what the request sends); and the read filter
 * (visibility by location, redaction) applied to what the upstream returns.
 *
 * The same gw_policy_decide serves the live gateway, `ghl-gateway explain` and
 * `ghl-gateway policy-test`.
 *
 * Memory: a policy set is loaded whole and freed with gw_policies_free; a decision's reasons
 * belong to the decision (gw_decision_free).
 * Threads: a loaded set is immutable; decide and filter from any thread.
 */
#ifndef GW_POLICY_H
#define GW_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#include "msgs.h"

struct gw_errs;
struct gw_op;
struct gw_openapi;
struct gw_route;

struct gw_policy;

struct gw_policies {
    struct gw_policy *p; /* in file-name order */
    size_t n;
};

/* Loads every *.json file of dir (comments allowed). Returns the set, or NULL with every
 * problem in errs as "file:line: member: message". An empty folder is a valid, empty set
 * (every request is then denied: no policy grants access). */
struct gw_policies *gw_policies_load(const char *dir, const struct gw_openapi *api,
                                     struct gw_errs *errs);
void gw_policies_free(struct gw_policies *ps);

const char *gw_policy_name(const struct gw_policy *p);
/* The i-th policy of a set (file-name order). */
const struct gw_policy *gw_policies_at(const struct gw_policies *ps, size_t i);

/* What a decision looks at. */
struct gw_decision_input {
    const cJSON *claims;       /* the principal's verified claims */
    const char *sub;           /* the principal's subject */
    const char *const *scopes; /* the scopes the caller holds */
    size_t nscopes;
    const struct gw_op *op;
    const struct gw_route *route; /* for the query (companyId, locationId) */
    const cJSON *body;            /* the validated body, or NULL */
    const cJSON *target;          /* update/delete: the user as the upstream has it; else NULL */
    bool target_pending;          /* update/delete before the target is fetched: every check but
                                     the target's (a request denied here is never fetched) */
};

struct gw_decision {
    bool allowed;
    const struct gw_policy *policy; /* the allowing policy; when denied, the first that matched
                                       the subject (NULL when none did) */
    struct gw_msgs reasons;         /* denied: every matching policy's violations, in file
                                       order; the first one is the 403 message */
};

/* Decides. Always fills out (free it with gw_decision_free). */
void gw_policy_decide(const struct gw_policies *ps, const struct gw_openapi *api,
                      const struct gw_decision_input *in, struct gw_decision *out);
void gw_decision_free(struct gw_decision *d);

/* Reads under the allowing policy p (SPEC §6.3 reads), applied to the upstream's answer.
 * gw_policy_visible: may the caller see this user object? (always true when p's locations
 * are "*"). gw_policy_filter_reply chooses by the op, never by the answer's shape:
 * - get-user (a GET with a path parameter): the answer must be a user object; one that is
 *   not visible gives GW_FILTER_FORBIDDEN (why filled: the answer becomes a 403);
 * - the other reads (search-users, filter-users-by-email, get-user-by-location): the answer
 *   must be an object with a "users" array of objects; users that are not visible are
 *   dropped and a numeric "count" is lowered by the number dropped;
 * - create-user and update-user: the answer must be a user object; only redaction applies;
 * - delete-user answers carry no user object and are left alone.
 * In every user object left, the members of p's reads.redact are removed. An answer of
 * another shape gives GW_FILTER_MALFORMED (why filled: the answer becomes a 502). The
 * caller's claims resolve {"claim": ...} locations. */
enum gw_filter_result { GW_FILTER_OK, GW_FILTER_FORBIDDEN, GW_FILTER_MALFORMED };
bool gw_policy_visible(const struct gw_policy *p, const cJSON *claims, const cJSON *user);
enum gw_filter_result gw_policy_filter_reply(const struct gw_policy *p, const struct gw_op *op,
                                             const cJSON *claims, cJSON *reply, char *why,
                                             size_t whylen);
/* get-user: a GET of one user by path parameter, whose answer is checked for visibility. */
bool gw_policy_reads_one_user(const struct gw_op *op);

/* What a request is about, in SPEC §6.3's terms (the audit record's target): the company it
 * names (companyId of the body, else of the query) and the locations of the user it touches
 * (roles.locationIds as fetched, else the body's locationIds, else the query's locationId).
 * Pointers into the inputs; target and body may be NULL. */
struct gw_policy_about {
    const char *company;    /* or NULL */
    const cJSON *locations; /* an array, or NULL */
    const char *location;   /* when locations is NULL: the query's locationId, or NULL */
};
void gw_policy_about(const struct gw_route *r, const cJSON *body, const cJSON *target,
                     struct gw_policy_about *out);
/* The members of a user object that grant (what the target rule checks: type, role and
 * locationIds of its roles, scopes, permissions), by index: i-th name and value (NULL when the
 * user has none). Returns false past the last. */
bool gw_policy_user_grant(const cJSON *user, size_t i, const char **name, const cJSON **value);

/* Ops that change an existing user (PUT, PATCH or DELETE on a path with a parameter:
 * update-user, delete-user): the decision needs the target user as the upstream has it. */
bool gw_policy_needs_target(const struct gw_op *op);

/* Ops that change users (create-user, update-user, delete-user): audited with an intent
 * record before they go upstream and an outcome record after (SPEC §9). */
bool gw_policy_op_changes_users(const struct gw_op *op);

/* True when the op's answers need the read filter under p (locations not "*", or redaction). */
bool gw_policy_filters_reads(const struct gw_policy *p);

#endif
