/* request: one request from the moment its bytes are read to its reply, as a state machine.
 *
 * The stages (enum gw_req_stage), each entered by one function, in SPEC order:
 *   READ -> AUTHENTICATE -> VALIDATE -> DECIDE [-> FETCH_TARGET -> DECIDE] -> INTENT -> FORWARD
 *        -> OUTCOME -> REPLY
 * READ: the connection handed over a whole request (or a refused one: straight to REPLY); its
 * request id and its trace context (trace.c: the caller's traceparent continued, else a new
 * trace), which go upstream, back to the caller, into the access log and every audit record.
 * AUTHENTICATE: the route, the bearer token (the worker's cache, else verified), the subject's
 * rate limit. VALIDATE: scope, Version, query and body (admit.c). DECIDE: the policies on the
 * request alone; update-user and delete-user then FETCH_TARGET (GET the user upstream) and
 * DECIDE again on it. INTENT: a change waits for its audit intent record (audit.fsync: on disk,
 * within audit.sync_timeout_ms). FORWARD: the upstream request, built from one allow-list of
 * headers, under HighLevel's own limit. OUTCOME: the upstream's answer (or failure): read rules,
 * the outcome record a written intent owes. REPLY: the one reply, the access log line, the
 * request freed. Any stage may end the request with one of the gateway's own replies.
 *
 * The audit members are drawn from the OpenAPI model and the policy module: the user touched
 * is the op's path parameter, secret members (gw_openapi_secret) are redacted, the company,
 * locations and granting members are the policy's (gw_policy_company, ...).
 *
 * What a request needs from where it runs comes in struct gw_req_env: the worker gives the
 * real loop, upstream pool, audit log and client connection; the unit suite gives fakes.
 *
 * Memory: a request is allocated by gw_req_start and freed once its reply is handed to the
 * client (env->done is then called). Threads: the worker's thread only.
 */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "audit.h"
#include "http1.h"
#include "keywait.h"
#include "rlstore.h"
#include "upstream.h"

struct event_base;
struct evbuffer;
struct gw_access;
struct gw_conn;
struct gw_http_req;
struct gw_issuer;
struct gw_metrics;
struct gw_rl;
struct gw_snapshot;
struct gw_token_cache;

enum gw_req_stage {
    GW_RS_READ,
    GW_RS_AUTHENTICATE,
    GW_RS_VALIDATE,
    GW_RS_DECIDE,
    GW_RS_FETCH_TARGET,
    GW_RS_INTENT,
    GW_RS_FORWARD,
    GW_RS_OUTCOME,
    GW_RS_REPLY,
    GW_RS_STAGES
};
const char *gw_req_stage_name(enum gw_req_stage s);

/* Random bytes for new request ids and trace context (trace.h), drawn a pool at a time (one
 * RAND_bytes per 4096 bytes: a request takes at most 40). The worker holds one; only
 * request.c reads and writes it. */
struct gw_req_ids {
    unsigned char pool[4096];
    size_t used;
};

/* What a request needs from where it runs. The functions get arg. */
struct gw_req_env {
    struct event_base *base;
    struct gw_token_cache *cache; /* verified tokens (may hold nothing) */
    struct gw_metrics *m;         /* the worker's shard */
    struct gw_rl *rl;             /* rate limits, shared by the workers */
    struct gw_req_ids *ids;
    /* the "replica" of the audit records: the audit log's (gw_audit_replica), which stays
     * for the process's life whatever a reload says; NULL: records without one */
    const char *replica;
    /* the snapshot a new request starts on (borrowed: the request takes a reference) */
    struct gw_snapshot *(*snapshot)(void *arg);
    /* the upstream: as gw_upstream_send (cb exactly once, never from inside) */
    struct gw_upstream_call *(*send)(void *arg, struct gw_snapshot *snap, const char *request,
                                     size_t len, bool retryable, gw_upstream_cb cb, void *cbarg);
    /* the audit log (SPEC §9). enabled: records are kept at all. post: a record nobody waits
     * for (members taken). intent: a record the request waits for, answered through it->done
     * (see audit.h: the item is the request's until abandoned); answered and abandon as
     * gw_audit_answered and gw_audit_abandon. */
    bool (*audit_enabled)(void *arg);
    void (*audit_post)(void *arg, enum gw_audit_event e, char *members);
    void (*audit_intent)(void *arg, struct gw_audit_item *it);
    bool (*audit_answered)(void *arg, const struct gw_audit_item *it);
    bool (*audit_abandon)(void *arg, struct gw_audit_item *it, char *outcome);
    /* the shared rate-limit store (SPEC §11.2), as gw_rlstore_check; NULL without one */
    bool (*store_check)(void *arg, const struct gw_rlstore_ask *ask, gw_rlstore_cb cb,
                        void *cbarg);
    /* a JWKS refetch (SPEC §4.1), as gw_keywait_park: cb exactly once, never from inside;
     * false: the request cannot wait (refused at once). NULL: no waiting */
    bool (*key_wait)(void *arg, struct gw_issuer *is, unsigned long gen, long ms,
                     gw_keywait_cb cb, void *cbarg);
    /* the client: the reply (as gw_conn_reply: body drained) and the access log line */
    void (*reply)(void *arg, struct gw_conn *c, int status, const char *reason,
                  const struct gw_header *hdrs, size_t nhdrs, struct evbuffer *body, bool close);
    void (*log)(void *arg, const struct gw_access *a);
    /* the request is over (its reply handed to the client, or the worker is stopping) */
    void (*done)(void *arg);
    /* optional: told every stage a request enters (the unit suite follows the flow) */
    void (*trace)(void *arg, const char *request_id, enum gw_req_stage s);
    void *arg;
};

/* The client side of one request: where its reply goes and who sent it. */
struct gw_req_client {
    struct gw_conn *conn; /* handed back to env->reply only */
    const char *ip;
    const char *cert_sha256; /* the client certificate's SHA-256 in hex (mTLS), or "" */
};

/* Starts a request read from a client (rq stays valid until its reply). Every request ends
 * with exactly one env->reply, then env->done. */
void gw_req_start(const struct gw_req_env *env, const struct gw_req_client *client,
                  struct gw_http_req *rq);

#endif
