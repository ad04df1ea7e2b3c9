#include "request.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "admit.h"
#include "auth.h"
#include "conn.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "openapi.h"
#include "policy.h"
#include "ratelimit.h"
#include "reply.h"
#include "rlscript.h"
#include "route.h"
#include "snapshot.h"
#include "token_cache.h"
#include "trace.h"
#include "validate.h"

#define REQUEST_ID_MAX 64
#define REQUEST_ID_RANDOM 16 /* the random bytes of a request id the gateway makes */
#define MAX_REPLY_HEADERS (GW_UPSTREAM_MAX_HEADERS + 4)
/* the headers finish adds to every reply (X-Request-Id, traceparent): a caller leaves room */
#define FINISH_HEADERS 2

const char *gw_req_stage_name(enum gw_req_stage s)
{
    static const char *const names[GW_RS_STAGES] = {"read",    "authenticate", "validate",
                                                    "decide",  "fetch_target", "intent",
                                                    "forward", "outcome",      "reply"};
    return s < GW_RS_STAGES ? names[s] : "?";
}

/* One request from dispatch to reply; freed after its reply is handed to the client. */
struct gw_req {
    const struct gw_req_env *env;
    enum gw_req_stage stage;
    struct gw_snapshot *snap;
    struct gw_conn *conn;
    struct gw_http_req *rq;
    char request_id[REQUEST_ID_MAX + 1];
    struct gw_trace trace; /* the gateway's traceparent (SPEC §7) */
    char ip[INET6_ADDRSTRLEN];
    const char *method;
    int64_t ts_ms; /* wall clock, first byte */
    double t0;     /* gw_mono_ms() at the request's first byte */
    uint64_t bytes_in;
    struct gw_route route;
    bool routed;
    bool changes; /* the op changes users (gw_policy_op_changes_users): audited, passed back */
    cJSON *body;
    int upstream_status;
    double upstream_ms;
    bool upstream_sent; /* a byte of this call's request may have left (outcome "upstream") */
    bool upstream_paid; /* the shared store took its upstream calls (or on_failure "allow") */
    struct gw_principal *principal;   /* once authenticated (a reference) */
    const char *auth_failure;         /* the reason class, for the access log */
    const struct gw_credential *cred; /* the upstream credential of the op */
    const char *version;              /* the Version header (lives in rq) */
    const struct gw_policy *policy;   /* the allowing policy, or the first that matched */
    bool allowed;                     /* a policy allowed the request */
    cJSON *target;                    /* update/delete: the user as fetched (audit "before") */
    char *created_id;                 /* create-user done: the new user's id (its outcome) */
    struct gw_audit_item *intent;     /* a change's intent record, until the writer answers */
    struct event *intent_done;        /* the writer's answer, or audit.sync_timeout_ms passed */
    bool intent_written;              /* the change may go upstream: an outcome is owed */
    char cert_sha256[65];             /* the client certificate's SHA-256 (mTLS), or "" */
    bool waited_keys;                 /* has waited for a JWKS refetch (once at most) */
};

/* Enters stage s (the unit suite follows the flow through env->trace). */
static void enter(struct gw_req *r, enum gw_req_stage s)
{
    r->stage = s;
    if (r->env->trace)
        r->env->trace(r->env->arg, r->request_id, s);
}

static void req_free(struct gw_req *r)
{
    gw_audit_item_free(r->intent);
    if (r->intent_done)
        event_free(r->intent_done);
    cJSON_Delete(r->target);
    free(r->created_id);
    if (r->routed)
        gw_route_free(&r->route);
    cJSON_Delete(r->body);
    gw_principal_unref(r->principal);
    gw_snapshot_unref(r->snap);
    const struct gw_req_env *env = r->env;
    free(r);
    env->done(env->arg);
}

static bool valid_request_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- audit records (SPEC §9) ---- */

/* "name": */
#define KEY(b, name) GW_JBUF_LIT((b), "\"" name "\":")

/* What became of a change upstream (an outcome's "upstream"): answered, not_sent (no byte of
 * the request left: the change did not happen), or unknown (sent, no answer: it may have). */
static const char *upstream_fate(const struct gw_req *r)
{
    return r->upstream_status > 0 ? "answered" : r->upstream_sent ? "unknown" : "not_sent";
}

/* The members of r's record, in record order, written as JSON text (no tree: this runs for
 * every change and every denial). reasons: denied; status < 0: none (intent, denied);
 * created_id: create-user's new user; upstream: an outcome's upstream_fate, else NULL. Never a
 * token, a password or a credential. */
static char *audit_members(struct gw_req *r, enum gw_audit_event ev, const struct gw_msgs *reasons,
                           int status, const char *created_id, const char *upstream)
{
    struct gw_buf b = GW_BUF_INIT(GW_AUDIT_MAX_MEMBERS);
    const struct gw_op *op = r->route.op;
    const struct gw_principal *p = r->principal;
    KEY(&b, "request_id");
    gw_jbuf_string(&b, r->request_id);
    GW_JBUF_LIT(&b, ",");
    if (r->env->replica) {
        KEY(&b, "replica");
        gw_jbuf_string(&b, r->env->replica);
        GW_JBUF_LIT(&b, ",");
    }
    KEY(&b, "trace_id");
    gw_jbuf_string(&b, r->trace.trace_id);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "event");
    gw_jbuf_string(&b, gw_audit_event_name(ev));
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "op");
    gw_jbuf_string(&b, op->id);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "method");
    gw_jbuf_string(&b, r->method);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "path");
    gw_jbuf_string(&b, r->route.upstream_path);
    GW_JBUF_LIT(&b, ",\"actor\":{");
    KEY(&b, "iss");
    gw_jbuf_string(&b, p ? p->iss : NULL);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "sub");
    gw_jbuf_string(&b, p ? p->sub : NULL);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "client_id");
    gw_jbuf_string(&b, p ? p->client_id : NULL);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "jti");
    gw_jbuf_string(&b, p ? p->jti : NULL);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "ip");
    gw_jbuf_string(&b, r->ip);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "cert_sha256");
    gw_jbuf_string(&b, r->cert_sha256[0] ? r->cert_sha256 : NULL);
    /* the user touched: its id (the op's path parameter, or a created user's), and what the
     * policies see of the request: its company and the user's locations */
    GW_JBUF_LIT(&b, "},\"target\":{");
    KEY(&b, "user_id");
    gw_jbuf_string(&b, created_id ? created_id : r->route.npath > 0 ? r->route.pval[0] : NULL);
    GW_JBUF_LIT(&b, ",");
    struct gw_policy_about about;
    gw_policy_about(&r->route, r->body, r->target, &about);
    KEY(&b, "company_id");
    gw_jbuf_string(&b, about.company);
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "location_ids");
    if (about.locations) {
        gw_jbuf_value(&b, about.locations);
    } else {
        GW_JBUF_LIT(&b, "[");
        if (about.location)
            gw_jbuf_string(&b, about.location);
        GW_JBUF_LIT(&b, "]");
    }
    GW_JBUF_LIT(&b, "},");
    KEY(&b, "policy");
    gw_jbuf_string(&b, gw_policy_name(r->policy));
    GW_JBUF_LIT(&b, ",\"reasons\":[");
    for (size_t i = 0; reasons && i < reasons->n; i++) {
        if (i)
            GW_JBUF_LIT(&b, ",");
        gw_jbuf_string(&b, reasons->v[i]);
    }
    GW_JBUF_LIT(&b, "],");
    KEY(&b, "change"); /* the body as validated, its secret members redacted */
    if (cJSON_IsObject(r->body)) {
        GW_JBUF_LIT(&b, "{");
        for (const cJSON *m = r->body->child; m; m = m->next) {
            if (m != r->body->child)
                GW_JBUF_LIT(&b, ",");
            gw_jbuf_string(&b, m->string);
            GW_JBUF_LIT(&b, ":");
            /* the document's secrets; SPEC §9 names the password, whatever a document says */
            if (gw_openapi_secret(op, m->string) || strcmp(m->string, "password") == 0)
                GW_JBUF_LIT(&b, "\"[REDACTED]\"");
            else
                gw_jbuf_value(&b, m);
        }
        GW_JBUF_LIT(&b, "}");
    } else {
        gw_jbuf_value(&b, r->body);
    }
    GW_JBUF_LIT(&b, ",");
    KEY(&b, "before");
    if (r->target) { /* what the change is made to: the members that grant */
        bool first = true;
        const char *name;
        const cJSON *v;
        GW_JBUF_LIT(&b, "{");
        for (size_t i = 0; gw_policy_user_grant(r->target, i, &name, &v); i++) {
            if (v == NULL)
                continue; /* a member the upstream left out stays out */
            if (!first)
                GW_JBUF_LIT(&b, ",");
            first = false;
            gw_jbuf_string(&b, name);
            GW_JBUF_LIT(&b, ":");
            gw_jbuf_value(&b, v);
        }
        GW_JBUF_LIT(&b, "}");
    } else {
        GW_JBUF_LIT(&b, "null");
    }
    if (status >= 0) {
        char num[64];
        int n = snprintf(num, sizeof num, ",\"status\":%d,\"duration_ms\":%lld", status,
                         (long long)(gw_mono_ms() - r->t0));
        gw_buf_add(&b, num, (size_t)n);
    }
    if (upstream) {
        GW_JBUF_LIT(&b, ",");
        KEY(&b, "upstream");
        gw_jbuf_string(&b, upstream);
    }
    return gw_buf_take(&b);
}

static void audit_denied(struct gw_req *r, const struct gw_msgs *reasons)
{
    const struct gw_req_env *env = r->env;
    if (env->audit_enabled(env->arg))
        env->audit_post(env->arg, GW_AUDIT_DENIED,
                        audit_members(r, GW_AUDIT_DENIED, reasons, -1, NULL, NULL));
}

/* finish: the outcome a written intent owes, or the read record of an allowed read. */
static void audit_answer(struct gw_req *r)
{
    const struct gw_req_env *env = r->env;
    if (!env->audit_enabled(env->arg) || !r->routed || r->route.op == NULL)
        return;
    if (r->intent_written) {
        env->audit_post(env->arg, GW_AUDIT_OUTCOME,
                        audit_members(r, GW_AUDIT_OUTCOME, NULL, r->upstream_status, r->created_id,
                                      upstream_fate(r)));
        r->intent_written = false;
    } else if (r->allowed && r->snap->cfg->audit.include_reads && !r->changes) {
        env->audit_post(env->arg, GW_AUDIT_READ,
                        audit_members(r, GW_AUDIT_READ, NULL, r->upstream_status, NULL, NULL));
    }
}

/* n random bytes from the worker's pool, which RAND_bytes refills whole when fewer than n
 * are left (one call per ~100 requests, not one per request: the request path is counted in
 * instructions). NULL when there is no randomness now; the next draw tries again. */
static const unsigned char *draw(struct gw_req_ids *ids, size_t n)
{
    if (ids->used == 0 || n > sizeof ids->pool - ids->used) {
        ids->used = 0;
        if (RAND_bytes(ids->pool, sizeof ids->pool) != 1)
            return NULL;
    }
    const unsigned char *rnd = ids->pool + ids->used;
    ids->used += n;
    if (ids->used == sizeof ids->pool)
        ids->used = 0; /* the next draw refills */
    return rnd;
}

/* A new request id: 32 hex digits of REQUEST_ID_RANDOM random bytes (rnd), or 32 zeros
 * without randomness (rnd NULL). */
static void new_request_id(const unsigned char *rnd, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    for (; i < REQUEST_ID_RANDOM; i++) {
        out[2 * i] = rnd ? hex[rnd[i] >> 4] : '0';
        out[2 * i + 1] = rnd ? hex[rnd[i] & 15] : '0';
    }
    out[2 * i] = '\0';
}

/* Sends status + headers + body (drained from `body`), logs the request, frees r. hdrs has
 * room for FINISH_HEADERS more. */
static void finish(struct gw_req *r, int status, struct gw_header *hdrs, size_t nhdrs,
                   struct evbuffer *body, bool close)
{
    enter(r, GW_RS_REPLY);
    hdrs[nhdrs++] = (struct gw_header){"X-Request-Id", r->request_id};
    hdrs[nhdrs++] = (struct gw_header){"traceparent", r->trace.traceparent};
    audit_answer(r); /* the outcome a written intent owes, before the line that ends it */
    /* the request's strings live in the connection until the reply is sent: log first */
    const struct gw_access a = {
        .ts_ms = r->ts_ms,
        .request_id = r->request_id,
        .trace_id = r->trace.trace_id,
        .ip = r->ip,
        .method = r->method,
        .path = r->routed ? r->route.path : NULL,
        .op = r->routed && r->route.op ? r->route.op->id : NULL,
        .status = status,
        .sub = r->principal ? r->principal->sub : NULL,
        .policy = gw_policy_name(r->policy),
        .auth_failure = r->auth_failure,
        .upstream_status = r->upstream_status,
        .upstream_ms = r->upstream_ms,
        .bytes_in = r->bytes_in,
        .bytes_out = body ? evbuffer_get_length(body) : 0,
        .duration_ms = gw_mono_ms() - r->t0,
    };
    gw_m_request(r->env->m, a.op, status, a.duration_ms / 1000);
    r->env->log(r->env->arg, &a);
    r->env->reply(r->env->arg, r->conn, status, gw_status_phrase(status), hdrs, nhdrs, body, close);
    req_free(r);
}

/* One of the gateway's own replies (SPEC §8); extra: one more header, or NULL. */
static void reply_extra(struct gw_req *r, enum gw_reply_kind kind, const char *msg,
                        const char *const *msgs, size_t nmsgs, const struct gw_header *extra,
                        size_t nextra)
{
    struct evbuffer *b = evbuffer_new();
    struct gw_header h[8] = {{"Content-Type", "application/json; charset=utf-8"}};
    size_t nh = 1;
    for (size_t i = 0; i < nextra && nh + FINISH_HEADERS < sizeof h / sizeof *h; i++)
        h[nh++] = extra[i];
    if (b == NULL || gw_reply_body(b, kind, msg, msgs, nmsgs) != 0) {
        if (b)
            evbuffer_drain(b, evbuffer_get_length(b));
        finish(r, 500, h, 1, b, true); /* b may be NULL: finish sends no body then */
        if (b)
            evbuffer_free(b);
        return;
    }
    finish(r, gw_reply_status(kind), h, nh, b, gw_reply_closes(kind));
    evbuffer_free(b);
}

static void reply_with(struct gw_req *r, enum gw_reply_kind kind, const char *msg,
                       const char *const *msgs, size_t nmsgs, const struct gw_header *extra)
{
    reply_extra(r, kind, msg, msgs, nmsgs, extra, extra ? 1 : 0);
}

/* 429 (SPEC §11): Retry-After and HighLevel's X-RateLimit-* headers of the limit that
 * refused. */
static void reply_limited(struct gw_req *r, const struct gw_rl_verdict *v, enum gw_rl_scope scope)
{
    gw_m_inc(&r->env->m->rate_limited[scope]);
    char ra[24], max[24], rem[24], iv[24];
    snprintf(ra, sizeof ra, "%ld", v->retry_after_s);
    snprintf(max, sizeof max, "%ld", v->max);
    snprintf(rem, sizeof rem, "%ld", v->remaining);
    snprintf(iv, sizeof iv, "%ld", v->interval_ms);
    struct gw_header h[4] = {{"Retry-After", ra},
                             {"X-RateLimit-Max", max},
                             {"X-RateLimit-Remaining", rem},
                             {"X-RateLimit-Interval-Milliseconds", iv}};
    reply_extra(r, GW_R_RATE_LIMITED, NULL, NULL, 0, h, 4);
}

/* This replica's share of a limit (SPEC §11.1): 1/replicas of it, at least 1. */
static long share(long limit, long replicas)
{
    long v = replicas > 1 ? limit / replicas : limit;
    return v < 1 ? 1 : v;
}

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void reply_error(struct gw_req *r, enum gw_reply_kind kind, const char *msg,
                        const char *const *msgs, size_t nmsgs)
{
    reply_with(r, kind, msg, msgs, nmsgs, NULL);
}

/* 401 with the RFC 6750 challenge: no error attribute when no bearer token was offered. */
static void reply_unauthenticated(struct gw_req *r, enum gw_auth_reason why)
{
    char challenge[160];
    if (why == GW_AUTH_MISSING)
        snprintf(challenge, sizeof challenge, "Bearer realm=\"ghl-gateway\"");
    else
        snprintf(challenge, sizeof challenge,
                 "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", "
                 "error_description=\"%s\"",
                 gw_auth_reason_name(why));
    struct gw_header h = {"WWW-Authenticate", challenge};
    reply_with(r, GW_R_UNAUTHORIZED, NULL, NULL, 0, &h);
}

_Static_assert(GW_AUTH_REASONS <= 16, "worker stats hold 16 reason counters");

/* The principal of the request's bearer token: from the worker's cache, or verified now;
 * then bound to the connection's client certificate if the token says so (SPEC §4.3, checked
 * on every request: a cached principal may come from another connection). *miss: what a
 * refusal for an unknown kid may wait for. */
static enum gw_auth_reason authenticate(struct gw_req *r, struct gw_key_miss *miss)
{
    *miss = (struct gw_key_miss){0};
    bool repeated;
    const char *value = gw_http_header(r->rq, "Authorization", &repeated);
    const char *token = NULL;
    size_t len = 0;
    enum gw_auth_reason why = gw_bearer_token(value, repeated, &token, &len);
    if (why != GW_AUTH_OK)
        return why;
    if (len > r->snap->auth->max_token_bytes)
        return GW_AUTH_MALFORMED; /* before any hashing or decoding */
    unsigned char key[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, len, key);
    int64_t now = (int64_t)time(NULL);
    const struct gw_req_env *env = r->env;
    r->principal = gw_token_cache_get(env->cache, key, now);
    if (r->principal) {
        gw_m_inc(&env->m->cache_hits);
    } else {
        gw_m_inc(&env->m->cache_misses);
        why = gw_jwt_verify_miss(r->snap->auth, token, len, now, &r->principal,
                                 r->waited_keys ? NULL : miss);
        if (why != GW_AUTH_OK)
            return why;
        /* a token in its leeway is not kept, nor one verified after a wait: the worker may
         * have adopted a newer snapshot (and emptied its cache) meanwhile */
        if (r->principal->exp > now && !r->waited_keys)
            gw_token_cache_put(env->cache, key, r->principal, r->principal->exp);
    }
    return gw_principal_bound_to(r->principal, r->cert_sha256) ? GW_AUTH_OK : GW_AUTH_BINDING;
}

static bool pass_back(const char *name)
{
    return strcasecmp(name, "Content-Type") == 0 || strncasecmp(name, "X-RateLimit-", 12) == 0;
}

/* One upstream request being built (send_upstream). */
struct up_req {
    const struct gw_req *r;
    const char *body; /* the serialized body, or NULL */
    size_t body_len;
    /* values formatted for this request (all are taken before use); config.c caps the host at
     * 255 bytes, so "[host]:65535" fits */
    char host[300];
    char length[24];
};

static const char *up_host(struct up_req *u, size_t *len)
{
    const struct gw_config *cfg = u->r->snap->cfg;
    bool v6 = strchr(cfg->upstream.host, ':') != NULL;
    if (cfg->upstream.port == 443 && !v6) {
        *len = strlen(cfg->upstream.host);
        return cfg->upstream.host;
    }
    int n = cfg->upstream.port == 443
                ? snprintf(u->host, sizeof u->host, "[%s]", cfg->upstream.host)
                : snprintf(u->host, sizeof u->host, "%s%s%s:%ld", v6 ? "[" : "", cfg->upstream.host,
                           v6 ? "]" : "", cfg->upstream.port);
    *len = n > 0 && (size_t)n < sizeof u->host ? (size_t)n : 0;
    return *len ? u->host : NULL;
}

static const char *up_version(struct up_req *u, size_t *len)
{
    *len = strlen(u->r->version);
    return u->r->version;
}

static const char *up_accept(struct up_req *u, size_t *len)
{
    (void)u;
    *len = 16;
    return "application/json";
}

static const char *up_credential(struct up_req *u, size_t *len)
{
    *len = u->r->cred->len;
    return u->r->cred->token;
}

static const char *up_request_id(struct up_req *u, size_t *len)
{
    *len = strlen(u->r->request_id);
    return u->r->request_id;
}

static const char *up_traceparent(struct up_req *u, size_t *len)
{
    *len = GW_TRACEPARENT_LEN;
    return u->r->trace.traceparent;
}

static const char *up_content_type(struct up_req *u, size_t *len)
{
    *len = 16;
    return u->body ? "application/json" : NULL;
}

static const char *up_content_length(struct up_req *u, size_t *len)
{
    if (u->body == NULL)
        return NULL;
    char tmp[24];
    size_t i = sizeof tmp, v = u->body_len;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    *len = sizeof tmp - i;
    memcpy(u->length, tmp + i, *len);
    return u->length;
}

/* The headers of every upstream request, and the only ones (SPEC §7: nothing from the caller
 * is copied); a value function answering NULL leaves its header out of this request. Each
 * line starts with `head` (the name, and the credential's scheme before its value). */
#define UP_HEADER(head, value)                                                                     \
    {                                                                                              \
        head, sizeof(head) - 1, value                                                              \
    }
static const struct {
    const char *head;
    size_t len;
    const char *(*value)(struct up_req *u, size_t *len);
} up_headers[] = {
    UP_HEADER("Host: ", up_host),
    UP_HEADER("Version: ", up_version),
    UP_HEADER("Accept: ", up_accept),
    UP_HEADER("Authorization: Bearer ", up_credential),
    UP_HEADER("X-Request-Id: ", up_request_id),
    UP_HEADER("traceparent: ", up_traceparent),
    UP_HEADER("Content-Type: ", up_content_type),
    UP_HEADER("Content-Length: ", up_content_length),
};
#undef UP_HEADER
#define UP_HEADERS (sizeof up_headers / sizeof *up_headers)

/* Appends n bytes at *at (the request's buffer was sized for all of them). */
static void put(char **at, const char *s, size_t n)
{
    memcpy(*at, s, n);
    *at += n;
}

/* FORWARD (or FETCH_TARGET, with target_only: the GET of the user a change would touch: same
 * path, no query, no body): one request upstream with the op's credential, within HighLevel's
 * own limits (refused here, not upstream). */
static void send_upstream(struct gw_req *r, bool target_only, gw_upstream_cb cb)
{
    enter(r, target_only ? GW_RS_FETCH_TARGET : GW_RS_FORWARD);
    const char *method = target_only ? "GET" : r->method;
    r->upstream_status = 0; /* the status logged and audited is this call's */
    r->upstream_sent = false;
    const struct gw_config *rc = r->snap->cfg;
    if (!r->upstream_paid) {
        long n = rc->rate_limit.replicas;
        struct gw_rl_verdict v;
        gw_rl_upstream(r->env->rl, share(rc->rate_limit.upstream.burst, n),
                       rc->rate_limit.upstream.per_seconds, share(rc->rate_limit.upstream.daily, n),
                       mono_ns(), (int64_t)time(NULL), &v);
        if (!v.allowed) {
            reply_limited(r, &v, GW_RL_UPSTREAM);
            return;
        }
    }
    char *query = target_only ? strdup("") : gw_route_query_string(&r->route);
    char *body = r->body && !target_only ? cJSON_PrintUnformatted(r->body) : NULL;
    if (query == NULL || (r->body && !target_only && body == NULL)) {
        free(query);
        cJSON_free(body);
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    /* the values first, so that the request is built in one buffer of its exact size (it holds
     * the credential: wiped when freed) */
    struct up_req u = {.r = r, .body = body, .body_len = body ? strlen(body) : 0};
    const char *values[UP_HEADERS];
    size_t lens[UP_HEADERS];
    size_t mlen = strlen(method), plen = strlen(r->route.upstream_path), qlen = strlen(query);
    size_t total = mlen + 1 + plen + (qlen ? 1 + qlen : 0) + 11 + 2 + u.body_len;
    for (size_t i = 0; i < UP_HEADERS; i++) {
        lens[i] = 0;
        values[i] = up_headers[i].value(&u, &lens[i]);
        if (values[i])
            total += up_headers[i].len + lens[i] + 2;
    }
    char *req = OPENSSL_malloc(total);
    if (req == NULL) {
        free(query);
        cJSON_free(body);
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    char *at = req;
    put(&at, method, mlen);
    put(&at, " ", 1);
    put(&at, r->route.upstream_path, plen);
    if (qlen) {
        put(&at, "?", 1);
        put(&at, query, qlen);
    }
    put(&at, " HTTP/1.1\r\n", 11);
    for (size_t i = 0; i < UP_HEADERS; i++)
        if (values[i]) {
            put(&at, up_headers[i].head, up_headers[i].len);
            put(&at, values[i], lens[i]);
            put(&at, "\r\n", 2);
        }
    put(&at, "\r\n", 2);
    if (body)
        put(&at, body, u.body_len);
    free(query);
    cJSON_free(body);
    bool retryable = target_only || r->route.op->method == GW_M_GET;
    struct gw_upstream_call *call =
        r->env->send(r->env->arg, r->snap, req, total, retryable, cb, r);
    OPENSSL_clear_free(req, total);
    if (call == NULL)
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
}

/* An upstream call that brought no answer. Returns true when r is finished. */
static bool upstream_failed(struct gw_req *r, struct gw_upstream_result *res, const char *method)
{
    r->upstream_ms = res->ms;
    r->upstream_sent = res->sent;
    if (res->err == GW_UP_SHUTDOWN) {
        /* the worker is being torn down: its connections are freed right after. A change
         * already sent still owes its outcome (status 0: no answer) */
        audit_answer(r);
        req_free(r);
        return true;
    }
    if (res->err == GW_UP_OK) {
        gw_m_upstream(r->env->m, r->route.op->id, res->status, res->ms / 1000);
        return false;
    }
    gw_m_inc(&r->env->m->up_errors[res->err == GW_UP_CONNECT   ? GW_UPE_CONNECT
                                   : res->err == GW_UP_TLS     ? GW_UPE_TLS
                                   : res->err == GW_UP_TIMEOUT ? GW_UPE_TIMEOUT
                                                               : GW_UPE_PROTOCOL]);
    gw_log_error("request %s: %s %s: %s", r->request_id, method, r->route.upstream_path, res->why);
    if (res->err == GW_UP_TIMEOUT)
        reply_error(r, GW_R_TIMEOUT, NULL, NULL, 0);
    else
        reply_error(r, GW_R_BAD_GATEWAY, res->why, NULL, 0);
    return true;
}

/* Passes the upstream's answer back: status, the headers clients may see, and the body
 * (replaced when the read rules rewrote it). */
static void pass_answer(struct gw_req *r, struct gw_upstream_result *res, struct evbuffer *body)
{
    r->upstream_status = res->status;
    struct gw_header h[MAX_REPLY_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < res->nheaders && n + FINISH_HEADERS < MAX_REPLY_HEADERS; i++)
        if (pass_back(res->hname[i]))
            h[n++] = (struct gw_header){res->hname[i], res->hvalue[i]};
    finish(r, res->status, h, n, body ? body : res->body, false);
}

/* Parses an upstream answer body (strict JSON, as bounded as the upstream parser left it). */
static cJSON *parse_answer(struct evbuffer *body)
{
    size_t len = evbuffer_get_length(body);
    const char *data = len ? (const char *)evbuffer_pullup(body, -1) : "";
    if (data == NULL)
        return NULL; /* out of memory: no tree, as for an answer that is not JSON */
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 32};
    return gw_json_parse(data, len, &o, &je);
}

/* Whether an answer with a body is JSON, by its Content-Type (application/json, parameters
 * allowed) and, with bytes, by its bytes (gw_json_check: no tree). Returns 1, 0 with why
 * filled, or -1 when the body cannot be made contiguous (out of memory). */
static int answer_is_json(const struct gw_upstream_result *res, bool bytes, char *why,
                          size_t whylen)
{
    size_t len = evbuffer_get_length(res->body);
    if (len == 0)
        return 1;
    const char *ct = NULL;
    for (size_t i = 0; i < res->nheaders && ct == NULL; i++)
        if (strcasecmp(res->hname[i], "Content-Type") == 0)
            ct = res->hvalue[i];
    size_t tl = ct ? strcspn(ct, "; \t") : 0;
    if (ct == NULL) {
        snprintf(why, whylen, "the upstream's answer (status %d) has no Content-Type, not JSON",
                 res->status);
        return 0;
    }
    if (tl != 16 || strncasecmp(ct, "application/json", 16) != 0) {
        snprintf(why, whylen, "the upstream's answer (status %d) has Content-Type %.60s, not JSON",
                 res->status, ct);
        return 0;
    }
    if (!bytes)
        return 1;
    const char *data = (const char *)evbuffer_pullup(res->body, -1);
    if (data == NULL)
        return -1;
    struct gw_json_error je;
    if (!gw_json_check(data, len, 32, &je)) {
        snprintf(why, whylen, "the upstream's answer (status %d) is not JSON: %s at byte %zu",
                 res->status, je.msg, je.offset);
        return 0;
    }
    return 1;
}

/* An answer that is not JSON (answer_is_json) from a misbehaving hop: callers are promised
 * the upstream's JSON. A successful read becomes the gateway's 502; an error status (a 429 or
 * a 503 page from a proxy in between) keeps its status and X-RateLimit-* headers with a body
 * in the upstream's error shape, so callers still back off (a change the upstream reports
 * done never comes here: answer_change). parsed_later: the body is read by the strict parser
 * next (read rules), so only its Content-Type is checked here. method: the call's (the target
 * fetch is a GET whatever the request's method). Returns true when r was answered. */
static bool refuse_non_json(struct gw_req *r, struct gw_upstream_result *res, const char *method,
                            bool parsed_later)
{
    bool success = res->status >= 200 && res->status <= 299;
    char why[300];
    int ok = answer_is_json(res, !parsed_later, why, sizeof why);
    if (ok == 1)
        return false;
    if (ok < 0) {
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return true;
    }
    gw_m_inc(&r->env->m->up_errors[GW_UPE_PROTOCOL]);
    gw_log_error("request %s: %s %s: %s", r->request_id, method, r->route.upstream_path, why);
    if (success) {
        reply_error(r, GW_R_BAD_GATEWAY, why, NULL, 0);
        return true;
    }
    struct gw_buf b = GW_BUF_INIT(sizeof why * 6 + 64); /* the message escaped, and the rest */
    char head[48];
    int hn = snprintf(head, sizeof head, "{\"statusCode\":%d,\"message\":", res->status);
    gw_buf_add(&b, head, (size_t)hn);
    gw_jbuf_string(&b, why);
    GW_JBUF_LIT(&b, "}");
    char *text = gw_buf_take(&b);
    struct evbuffer *out = text ? evbuffer_new() : NULL;
    if (out == NULL || evbuffer_add(out, text, strlen(text)) != 0) {
        free(text);
        if (out)
            evbuffer_free(out);
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return true;
    }
    free(text);
    struct gw_header h[MAX_REPLY_HEADERS];
    size_t n = 0;
    h[n++] = (struct gw_header){"Content-Type", "application/json; charset=utf-8"};
    for (size_t i = 0; i < res->nheaders && n + FINISH_HEADERS < MAX_REPLY_HEADERS; i++)
        if (strncasecmp(res->hname[i], "X-RateLimit-", 12) == 0 ||
            strcasecmp(res->hname[i], "Retry-After") == 0)
            h[n++] = (struct gw_header){res->hname[i], res->hvalue[i]};
    finish(r, res->status, h, n, out, false);
    evbuffer_free(out);
    return true;
}

/* The read rules of the allowing policy (visibility by location, redaction) on a parsed
 * answer (taken). OK: *out is the answer to send, or NULL when out of memory. */
static enum gw_filter_result filter_answer(struct gw_req *r, cJSON *reply, struct evbuffer **out,
                                           char *why, size_t whylen)
{
    *out = NULL;
    enum gw_filter_result fr =
        gw_policy_filter_reply(r->policy, r->route.op, r->principal->claims, reply, why, whylen);
    if (fr == GW_FILTER_OK) {
        char *text = cJSON_PrintUnformatted(reply);
        struct evbuffer *b = text ? evbuffer_new() : NULL;
        if (b && evbuffer_add(b, text, strlen(text)) == 0)
            *out = b;
        else if (b)
            evbuffer_free(b);
        cJSON_free(text);
    }
    cJSON_Delete(reply);
    return fr;
}

/* An answer the gateway cannot use as it promises (not JSON, not of the op's shape) to a
 * change the upstream reports done: counted and logged as a protocol error, and passed back
 * as it came. */
static void pass_done_change(struct gw_req *r, struct gw_upstream_result *res, const char *why)
{
    gw_m_inc(&r->env->m->up_errors[GW_UPE_PROTOCOL]);
    gw_log_error("request %s: %s %s: %s; the change is done, so the answer is passed back as it "
                 "came",
                 r->request_id, r->method, r->route.upstream_path, why);
    pass_answer(r, res, NULL);
}

/* A change (create, update, delete) the upstream reports done (2xx), with or without an audit
 * file, under any policy: the caller must learn that it happened, and a 502 would invite a
 * retry that repeats it, so the answer always goes back (pass_done_change when the gateway
 * cannot use it). Its body is parsed once when something needs the tree (the read rules, or
 * an audited create's new user id for the outcome record); otherwise only checked. */
static void answer_change(struct gw_req *r, struct gw_upstream_result *res)
{
    char why[300];
    bool filtered = gw_policy_filters_reads(r->policy);
    bool wants_id = r->intent_written && r->route.op->method == GW_M_POST;
    int ok = answer_is_json(res, !(filtered || wants_id), why, sizeof why);
    if (ok != 1 || evbuffer_get_length(res->body) == 0 || !(filtered || wants_id)) {
        if (ok == 1)
            pass_answer(r, res, NULL);
        else
            pass_done_change(r, res, ok < 0 ? "out of memory checking the answer" : why);
        return;
    }
    cJSON *reply = parse_answer(res->body);
    if (reply == NULL) {
        pass_done_change(r, res, "the upstream's answer is not JSON");
        return;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(reply, "id");
    if (wants_id && cJSON_IsString(id))
        r->created_id = strdup(id->valuestring);
    if (!filtered) {
        cJSON_Delete(reply);
        pass_answer(r, res, NULL);
        return;
    }
    struct evbuffer *out;
    enum gw_filter_result fr = filter_answer(r, reply, &out, why, sizeof why);
    if (fr != GW_FILTER_OK || out == NULL) {
        pass_done_change(r, res, fr != GW_FILTER_OK ? why : "out of memory applying read rules");
        return;
    }
    pass_answer(r, res, out);
    evbuffer_free(out);
}

/* OUTCOME: the upstream's answer to the forwarded request (or its failure), then REPLY. */
static void on_upstream(struct gw_upstream_result *res, void *arg)
{
    struct gw_req *r = arg;
    enter(r, GW_RS_OUTCOME);
    if (upstream_failed(r, res, r->method))
        return;
    r->upstream_status = res->status;
    bool success = res->status >= 200 && res->status <= 299;
    if (success && r->changes) {
        answer_change(r, res);
        return;
    }
    bool filtered =
        success && gw_policy_filters_reads(r->policy) && evbuffer_get_length(res->body) > 0;
    if (refuse_non_json(r, res, r->method, filtered))
        return;
    char why[300];
    if (!filtered) {
        pass_answer(r, res, NULL);
        return;
    }
    cJSON *reply = parse_answer(res->body);
    if (reply == NULL) { /* the parse is this answer's JSON check: counted and logged as one */
        snprintf(why, sizeof why,
                 "the upstream's answer is not JSON, so policy %s's read rules cannot be applied",
                 gw_policy_name(r->policy));
        gw_m_inc(&r->env->m->up_errors[GW_UPE_PROTOCOL]);
        gw_log_error("request %s: %s %s: %s", r->request_id, r->method, r->route.upstream_path,
                     why);
        reply_error(r, GW_R_BAD_GATEWAY, why, NULL, 0);
        return;
    }
    struct evbuffer *out;
    enum gw_filter_result fr = filter_answer(r, reply, &out, why, sizeof why);
    if (fr != GW_FILTER_OK) {
        r->allowed = false;
        if (fr == GW_FILTER_FORBIDDEN) {
            gw_m_denial(r->env->m, gw_policy_name(r->policy), r->route.op->id);
            struct gw_msgs m = {0};
            gw_msgs_add(&m, "%s", why);
            audit_denied(r, &m);
            gw_msgs_free(&m);
        } else { /* not the op's shape: as an answer that is not JSON */
            gw_m_inc(&r->env->m->up_errors[GW_UPE_PROTOCOL]);
            gw_log_error("request %s: %s %s: %s", r->request_id, r->method, r->route.upstream_path,
                         why);
        }
        reply_error(r, fr == GW_FILTER_FORBIDDEN ? GW_R_FORBIDDEN : GW_R_BAD_GATEWAY, why, NULL, 0);
        return;
    }
    if (out == NULL) {
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    pass_answer(r, res, out);
    evbuffer_free(out);
}

static void on_target(struct gw_upstream_result *res, void *arg);

/* The writer's answer about r's intent record, or audit.sync_timeout_ms passed (on r's
 * worker; whichever comes first: the other is dropped). */
static void on_intent(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_req *r = arg;
    const struct gw_req_env *env = r->env;
    if (r->intent == NULL)
        return;
    if (!env->audit_answered(env->arg, r->intent)) {
        /* A hung or slow disk must not hold the change (and its connection) for ever. The
         * record is the log's from here; if it is written after all, this outcome follows it. */
        r->upstream_sent = false;
        char *outcome = audit_members(r, GW_AUDIT_OUTCOME, NULL, 0, NULL, upstream_fate(r));
        if (env->audit_abandon(env->arg, r->intent, outcome)) {
            r->intent = NULL;
            gw_log_error("request %s: %s %s: the audit log did not confirm the intent record "
                         "within audit.sync_timeout_ms (%ld ms); the change was not sent",
                         r->request_id, r->method, r->route.upstream_path,
                         r->snap->cfg->audit.sync_timeout_ms);
            reply_error(r, GW_R_UNAVAILABLE,
                        "the audit log did not confirm the intent in time; the change was not "
                        "sent",
                        NULL, 0);
            return;
        }
    }
    event_del(r->intent_done); /* the writer's answer, if it came as the deadline passed */
    bool ok = r->intent->ok;
    gw_audit_item_free(r->intent);
    r->intent = NULL;
    if (!ok) {
        reply_error(r, GW_R_UNAVAILABLE, "the audit log cannot be written; the change was not sent",
                    NULL, 0);
        return;
    }
    r->intent_written = true;
    send_upstream(r, false, on_upstream);
}

/* SPEC §9: a change goes upstream only after its intent record is written (and, with
 * audit.fsync, on disk), within audit.sync_timeout_ms. The worker's loop keeps running
 * meanwhile. */
static void write_intent(struct gw_req *r)
{
    enter(r, GW_RS_INTENT);
    if (r->intent_done == NULL)
        r->intent_done = event_new(r->env->base, -1, 0, on_intent, r);
    struct gw_audit_item *it =
        r->intent_done
            ? gw_audit_item_waited(GW_AUDIT_INTENT,
                                   audit_members(r, GW_AUDIT_INTENT, NULL, -1, NULL, NULL),
                                   r->intent_done)
            : NULL;
    long ms = r->snap->cfg->audit.sync_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (it == NULL || event_add(r->intent_done, &tv) != 0) {
        gw_audit_item_free(it);
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    r->intent = it;
    /* on_intent follows: written, refused (503) or too late (503) */
    r->env->audit_intent(r->env->arg, it);
}

/* The policy decision (SPEC 6.2) on what the request asks. update-user and delete-user are
 * decided twice: first on the request alone (target_pending: a caller the policies refuse
 * costs no upstream call and learns nothing about the user), then, with the target user
 * fetched, on everything. Allowed: the next step goes upstream. Denied: 403, first reason. */
static void decide(struct gw_req *r, const cJSON *target, bool target_pending)
{
    enter(r, GW_RS_DECIDE);
    struct gw_decision d;
    gw_admit_decide(r->snap, &r->route, r->principal, r->body, target, target_pending, &d);
    r->policy = d.policy;
    r->allowed = d.allowed;
    if (!d.allowed) {
        gw_m_denial(r->env->m, gw_policy_name(r->policy), r->route.op->id);
        audit_denied(r, &d.reasons); /* every matching policy's reasons */
        reply_error(r, GW_R_FORBIDDEN, d.reasons.n ? d.reasons.v[0] : "denied by policy", NULL, 0);
        gw_decision_free(&d);
        return;
    }
    gw_decision_free(&d);
    char why[200];
    if (r->cred == NULL &&
        (r->cred = gw_admit_credential(r->snap, &r->route, why, sizeof why)) == NULL) {
        reply_error(r, GW_R_UNAVAILABLE, why, NULL, 0);
        return;
    }
    if (target_pending)
        send_upstream(r, true, on_target); /* GET the user, then decide again */
    else if (r->changes && r->env->audit_enabled(r->env->arg))
        write_intent(r); /* the change goes upstream once its intent is on disk */
    else
        send_upstream(r, false, on_upstream);
}

/* The answer to the GET of the user an update or delete would change. */
static void on_target(struct gw_upstream_result *res, void *arg)
{
    struct gw_req *r = arg;
    if (upstream_failed(r, res, "GET"))
        return;
    if (res->status < 200 || res->status > 299) {
        r->upstream_status = res->status;
        if (!refuse_non_json(r, res, "GET", false))
            pass_answer(r, res, NULL); /* a user that does not exist, 401, 429 ... */
        return;
    }
    if (res->status != 200) { /* no user object to decide on */
        r->upstream_status = res->status;
        char why[120];
        snprintf(why, sizeof why, "the upstream answered %d to the GET of the user to change",
                 res->status);
        reply_error(r, GW_R_BAD_GATEWAY, why, NULL, 0);
        return;
    }
    cJSON *target = parse_answer(res->body);
    if (!cJSON_IsObject(target)) {
        cJSON_Delete(target);
        r->upstream_status = res->status;
        reply_error(r, GW_R_BAD_GATEWAY,
                    "the upstream's answer for the user to change is not a JSON object", NULL, 0);
        return;
    }
    r->target = target; /* the audit records' "before" */
    decide(r, target, false);
}

/* VALIDATE: scope, Version, query and body against the OpenAPI document (admit.c); then
 * DECIDE, update and delete first on the request alone. */
static void validate(struct gw_req *r)
{
    enter(r, GW_RS_VALIDATE);
    struct gw_http_req *rq = r->rq;
    const struct gw_op *op = r->route.op;
    bool repeated;
    const char *version = gw_http_header(rq, "Version", &repeated);
    bool version_repeated = repeated;
    size_t blen = evbuffer_get_length(rq->body);
    const char *bdata = blen ? (const char *)evbuffer_pullup(rq->body, -1) : "";
    const char *ctype = gw_http_header(rq, "Content-Type", &repeated);
    struct gw_admission adm;
    if (gw_admit(r->snap, &r->route, r->principal, version, version_repeated,
                 repeated ? NULL : ctype, bdata, blen, &adm) != 0) {
        char challenge[300];
        struct gw_header h = {"WWW-Authenticate", challenge};
        if (adm.kind == GW_R_SCOPE)
            snprintf(challenge, sizeof challenge,
                     "Bearer realm=\"ghl-gateway\", error=\"insufficient_scope\", scope=\"%s\"",
                     op->scope);
        reply_with(r, adm.kind, adm.msg, (const char *const *)adm.msgs.v, adm.msgs.n,
                   adm.kind == GW_R_SCOPE ? &h : NULL);
        gw_admission_free(&adm);
        return;
    }
    r->body = gw_admission_take_body(&adm);
    gw_admission_free(&adm);
    r->version = version;
    decide(r, NULL, gw_policy_needs_target(op));
}

/* The subject's limit kept in this process: without a shared store, or when it failed and
 * on_failure is "local" (this replica's share, 11.1); then VALIDATE. */
static void limit_locally(struct gw_req *r)
{
    const struct gw_config *lc = r->snap->cfg;
    struct gw_rl_verdict rv;
    gw_rl_subject(r->env->rl, r->principal->subject_id,
                  share(lc->rate_limit.per_subject.burst, lc->rate_limit.replicas),
                  lc->rate_limit.per_subject.per_seconds, mono_ns(), &rv);
    if (!rv.allowed) {
        reply_limited(r, &rv, GW_RL_SUBJECT);
        return;
    }
    validate(r);
}

/* The shared store could not decide (SPEC §11.2): rate_limit.redis.on_failure does. */
static void store_failed(struct gw_req *r)
{
    switch (r->snap->cfg->rate_limit.redis.on_failure) {
    case GW_RLF_DENY:
        reply_error(r, GW_R_UNAVAILABLE, "rate-limit store unavailable", NULL, 0);
        return;
    case GW_RLF_ALLOW:
        r->upstream_paid = true;
        validate(r);
        return;
    default:
        limit_locally(r);
    }
}

/* The shared store's answer: all three limits passed and were spent together, or the one
 * that refused. */
static void on_store(void *arg, const struct gw_rlstore_answer *a)
{
    struct gw_req *r = arg;
    if (a->result != GW_RLSTORE_VERDICT) {
        store_failed(r);
        return;
    }
    if (!a->verdict.allowed) {
        reply_limited(r, &a->verdict, a->scope == GW_RLS_SUBJECT ? GW_RL_SUBJECT : GW_RL_UPSTREAM);
        return;
    }
    r->upstream_paid = true;
    validate(r);
}

static void authenticated(struct gw_req *r, enum gw_auth_reason ar);

/* The refetch a request waited for has ended (fetched), or its wait is over: the token is
 * verified again, on the keys there are now. */
static void on_keys(void *arg, bool fetched)
{
    struct gw_req *r = arg;
    struct gw_key_miss miss;
    enum gw_auth_reason ar = authenticate(r, &miss);
    enum gw_key_wait_result res = ar != GW_AUTH_UNKNOWN_KEY ? GW_KW_FOUND
                                  : fetched                 ? GW_KW_NOT_FOUND
                                                            : GW_KW_TIMEOUT;
    gw_m_inc(&r->env->m->key_waits[res]);
    authenticated(r, ar);
}

/* SPEC §4.1: a token refused for a kid its issuer's JWKS does not hold waits for the refetch
 * it asked for, once, at most jwks_refetch_wait_ms, when that refetch starts within the wait
 * (jwks_refetch_min_s may put it later). Returns true when the request is parked. */
static bool wait_for_keys(struct gw_req *r, const struct gw_key_miss *miss)
{
    const struct gw_req_env *env = r->env;
    if (r->waited_keys || miss->issuer == NULL || env->key_wait == NULL)
        return false;
    long ms = miss->issuer->cfg->jwks_refetch_wait_ms;
    int64_t now = (int64_t)time(NULL);
    if (ms <= 0 || (miss->refetch_at - now) * 1000 >= ms)
        return false;
    r->waited_keys = true;
    return env->key_wait(env->arg, miss->issuer, miss->fetch_gen, ms, on_keys, r);
}

/* AUTHENTICATE: the bearer token (401 with the reason class; an unknown kid may first wait
 * for its issuer's refetch), then the rate limits (429): in the shared store when there is
 * one (one round trip for the subject's bucket and the upstream calls the request will make),
 * else the subject's here and the upstream's when the call is sent; then VALIDATE. */
static void authenticate_and_limit(struct gw_req *r)
{
    enter(r, GW_RS_AUTHENTICATE);
    struct gw_key_miss miss;
    enum gw_auth_reason ar = authenticate(r, &miss);
    if (ar == GW_AUTH_UNKNOWN_KEY && wait_for_keys(r, &miss))
        return; /* on_keys goes on */
    authenticated(r, ar);
}

static void authenticated(struct gw_req *r, enum gw_auth_reason ar)
{
    const struct gw_req_env *env = r->env;
    if (ar != GW_AUTH_OK) {
        gw_m_inc(&env->m->auth_failures[ar]);
        r->auth_failure = gw_auth_reason_name(ar);
        reply_unauthenticated(r, ar);
        return;
    }
    const struct gw_config *lc = r->snap->cfg;
    if (!lc->rate_limit.redis.enabled || env->store_check == NULL) {
        limit_locally(r);
        return;
    }
    struct gw_rlstore_ask ask = {
        .subject = r->principal->subject_id,
        .subject_burst = lc->rate_limit.per_subject.burst,
        .subject_per_seconds = lc->rate_limit.per_subject.per_seconds,
        .upstream_burst = lc->rate_limit.upstream.burst,
        .upstream_per_seconds = lc->rate_limit.upstream.per_seconds,
        .daily = lc->rate_limit.upstream.daily,
        .cost = gw_policy_needs_target(r->route.op) ? 2 : 1,
    };
    if (!env->store_check(env->arg, &ask, on_store, r))
        store_failed(r); /* unusable now */
}

/* READ: the request as the connection read it (a refused one is answered at once), its id,
 * its route (400 for a bad target, 404 for no route); then AUTHENTICATE. */
void gw_req_start(const struct gw_req_env *env, const struct gw_req_client *client,
                  struct gw_http_req *rq)
{
    struct gw_req *r = calloc(1, sizeof *r);
    if (r == NULL) {
        env->reply(env->arg, client->conn, 503, gw_status_phrase(503), NULL, 0, NULL, true);
        env->done(env->arg);
        return;
    }
    r->env = env;
    r->conn = client->conn;
    r->rq = rq;
    r->snap = gw_snapshot_ref(env->snapshot(env->arg));
    r->upstream_ms = -1;
    r->t0 = rq->started_mono;
    r->ts_ms = rq->started_ms;
    r->bytes_in = rq->bytes_in;
    r->method = rq->head.method ? rq->head.method : "";
    snprintf(r->ip, sizeof r->ip, "%s", client->ip ? client->ip : "");
    snprintf(r->cert_sha256, sizeof r->cert_sha256, "%s",
             client->cert_sha256 ? client->cert_sha256 : "");
    bool repeated;
    const char *rid = gw_http_header(rq, "X-Request-Id", &repeated);
    bool own_id = !valid_request_id(rid);
    const char *tp = gw_http_header(rq, "traceparent", &repeated); /* NULL: absent or twice */
    bool continued = gw_trace_valid(tp);
    /* the request's random bytes in one draw: its id's (unless the caller's is kept), then
     * its trace's */
    const unsigned char *rnd =
        draw(env->ids, (own_id ? REQUEST_ID_RANDOM : 0) +
                           (continued ? GW_TRACE_SPAN_RANDOM : GW_TRACE_NEW_RANDOM));
    if (own_id)
        new_request_id(rnd, r->request_id);
    else
        snprintf(r->request_id, sizeof r->request_id, "%s", rid);
    gw_trace_make(&r->trace, continued ? tp : NULL, rnd && own_id ? rnd + REQUEST_ID_RANDOM : rnd);
    enter(r, GW_RS_READ);
    if (rq->rejected) {
        reply_error(r, rq->kind, rq->why, NULL, 0);
        return;
    }
    char why[160];
    enum gw_route_result rr =
        gw_route_match(r->snap->api, r->method, rq->head.target, &r->route, why, sizeof why);
    r->routed = true;
    if (rr == GW_ROUTE_BAD_TARGET) {
        reply_error(r, GW_R_BAD_REQUEST, why, NULL, 0);
        return;
    }
    if (rr == GW_ROUTE_NOT_FOUND) {
        char msg[600];
        snprintf(msg, sizeof msg, "Cannot %s %.512s", r->method,
                 r->route.path ? r->route.path : "");
        reply_error(r, GW_R_NOT_FOUND, msg, NULL, 0);
        return;
    }
    r->changes = gw_policy_op_changes_users(r->route.op);
    authenticate_and_limit(r);
}
