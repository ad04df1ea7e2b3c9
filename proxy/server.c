#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "admin.h"
#include "admit.h"
#include "audit.h"
#include "metrics.h"
#include "ratelimit.h"
#include "conn.h"
#include "jwks.h"
#include "json.h"
#include "log.h"
#include "policy.h"
#include "reply.h"
#include "route.h"
#include "snapshot.h"
#include "token_cache.h"
#include "upstream.h"
#include "validate.h"
#include "worker.h"

#define REQUEST_ID_MAX 64
#define ACCESS_FLUSH_BYTES 65536 /* a worker's access log lines written at once from here on */

struct gw_daemon {
    const char *config_path;
    /* The current snapshot. Swapped by the main thread on SIGHUP; a worker takes its own
     * reference under snap_mu (a bare load could meet a snapshot being freed). */
    struct gw_snapshot *snap;
    pthread_mutex_t snap_mu;
    uint64_t reloads_ok, reloads_failed;
    struct gw_log *access;
    struct gw_audit *audit; /* for the daemon's life (audit.* changes need a restart) */
    struct gw_admin *admin;
    struct gw_rl *rl; /* rate limits: state shared by the workers, limits from the snapshot */
    struct gw_worker *workers;
    size_t nworkers;
    atomic_bool stopping;
    atomic_bool forced;    /* a second SIGTERM/SIGINT: stop without waiting */
    atomic_size_t running; /* workers whose loop has not ended */
    struct event_base *main_base;
    struct event *worker_done; /* activated by each worker as its loop ends */
};

/* One request from dispatch to reply. Owned by the worker; freed after its reply is sent. */
struct gw_req {
    struct gw_worker *w;
    struct gw_snapshot *snap;
    struct gw_conn *conn;
    struct gw_http_req *rq;
    char request_id[REQUEST_ID_MAX + 1];
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
};

static const char *status_reason(int code)
{
    static const struct {
        int code;
        const char *reason;
    } t[] = {
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {409, "Conflict"},
        {413, "Payload Too Large"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Entity"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (t[i].code == code)
            return t[i].reason;
    return code < 300 ? "OK" : code < 500 ? "Client Error" : "Server Error";
}

static void req_free(struct gw_req *r)
{
    if (r->intent) {
        free(r->intent->members);
        free(r->intent);
    }
    if (r->intent_done)
        event_free(r->intent_done);
    cJSON_Delete(r->target);
    free(r->created_id);
    if (r->routed)
        gw_route_free(&r->route);
    cJSON_Delete(r->body);
    gw_principal_unref(r->principal);
    struct gw_worker *w = r->w;
    w->inflight--;
    gw_snapshot_unref(r->snap);
    free(r);
    gw_worker_maybe_exit(w);
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

#define MAX_REPLY_HEADERS (GW_UPSTREAM_MAX_HEADERS + 4)

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
    /* the user touched: its id, its company, its locations (as fetched, else as asked) */
    GW_JBUF_LIT(&b, "},\"target\":{");
    const char *uid = created_id;
    for (size_t i = 0; uid == NULL && i < r->route.npath; i++)
        if (strcmp(r->route.pname[i], "userId") == 0)
            uid = r->route.pval[i];
    KEY(&b, "user_id");
    gw_jbuf_string(&b, uid);
    GW_JBUF_LIT(&b, ",");
    const cJSON *company = cJSON_GetObjectItemCaseSensitive(r->body, "companyId");
    KEY(&b, "company_id");
    gw_jbuf_string(&b, cJSON_IsString(company) ? company->valuestring
                                               : gw_route_query(&r->route, "companyId"));
    GW_JBUF_LIT(&b, ",");
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(r->target, "roles");
    const cJSON *locs = cJSON_GetObjectItemCaseSensitive(roles, "locationIds");
    if (!cJSON_IsArray(locs))
        locs = cJSON_GetObjectItemCaseSensitive(r->body, "locationIds");
    KEY(&b, "location_ids");
    if (cJSON_IsArray(locs)) {
        gw_jbuf_value(&b, locs);
    } else {
        const char *qloc = gw_route_query(&r->route, "locationId");
        GW_JBUF_LIT(&b, "[");
        if (qloc)
            gw_jbuf_string(&b, qloc);
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
    KEY(&b, "change"); /* the body as sent, its password (a top-level member) redacted */
    if (cJSON_IsObject(r->body)) {
        GW_JBUF_LIT(&b, "{");
        for (const cJSON *m = r->body->child; m; m = m->next) {
            if (m != r->body->child)
                GW_JBUF_LIT(&b, ",");
            gw_jbuf_string(&b, m->string);
            GW_JBUF_LIT(&b, ":");
            if (strcmp(m->string, "password") == 0)
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
        const struct {
            const cJSON *from;
            const char *name;
        } granting[] = {{roles, "type"},
                        {roles, "role"},
                        {roles, "locationIds"},
                        {r->target, "scopes"},
                        {r->target, "permissions"}};
        bool first = true;
        GW_JBUF_LIT(&b, "{");
        for (size_t i = 0; i < sizeof granting / sizeof *granting; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(granting[i].from, granting[i].name);
            if (v == NULL)
                continue; /* a member the upstream left out stays out */
            if (!first)
                GW_JBUF_LIT(&b, ",");
            first = false;
            gw_jbuf_string(&b, granting[i].name);
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

/* Hands the pass's records to the writer (see struct gw_worker). Refused (the queue is full,
 * the log is stopping): waiting requests learn it (503), the other records count as lost. */
static void on_audit_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    struct gw_audit_item *list = w->audit_head;
    size_t n = w->audit_n;
    w->audit_head = w->audit_tail = NULL;
    w->audit_n = 0;
    if (list == NULL || gw_audit_submit_list(w->d->audit, list, n) == 0)
        return;
    for (struct gw_audit_item *it = list, *next; it; it = next) {
        next = it->next;
        it->next = NULL;
        if (it->done)
            gw_audit_refuse(w->d->audit, it);
        else
            gw_audit_lost(w->d->audit, it);
    }
}

/* Queues a record for this pass's hand-over. One too large to write is refused here. */
static void audit_enqueue(struct gw_worker *w, struct gw_audit_item *it)
{
    if (!gw_audit_fits(it)) {
        gw_log_error("audit: a %s record is too large to write", gw_audit_event_name(it->event));
        if (it->done)
            gw_audit_refuse(w->d->audit, it);
        else
            gw_audit_lost(w->d->audit, it);
        return;
    }
    it->next = NULL;
    if (w->audit_tail)
        w->audit_tail->next = it;
    else
        w->audit_head = it;
    w->audit_tail = it;
    w->audit_n++;
    event_active(w->audit_flush, EV_TIMEOUT, 0);
}

/* A record nobody waits for (members taken). */
static void audit_post(struct gw_worker *w, enum gw_audit_event e, char *members)
{
    struct gw_audit_item *it = gw_audit_item_new(e, members);
    if (it)
        audit_enqueue(w, it);
    else
        gw_audit_lost(w->d->audit, NULL);
}

static void audit_denied(struct gw_req *r, const struct gw_msgs *reasons)
{
    struct gw_audit *a = r->w->d->audit;
    if (gw_audit_enabled(a))
        audit_post(r->w, GW_AUDIT_DENIED,
                   audit_members(r, GW_AUDIT_DENIED, reasons, -1, NULL, NULL));
}

/* finish: the outcome a written intent owes, or the read record of an allowed read. */
static void audit_answer(struct gw_req *r)
{
    struct gw_audit *a = r->w->d->audit;
    if (!gw_audit_enabled(a) || !r->routed || r->route.op == NULL)
        return;
    if (r->intent_written) {
        audit_post(r->w, GW_AUDIT_OUTCOME,
                   audit_members(r, GW_AUDIT_OUTCOME, NULL, r->upstream_status, r->created_id,
                                 upstream_fate(r)));
        r->intent_written = false;
    } else if (r->allowed && r->snap->cfg->audit.include_reads &&
               !r->changes) {
        audit_post(r->w, GW_AUDIT_READ,
                   audit_members(r, GW_AUDIT_READ, NULL, r->upstream_status, NULL, NULL));
    }
}

/* A new request id: 32 hex digits of 16 random bytes. The worker draws them from
 * RAND_bytes a pool at a time (one call per 256 ids instead of one per request). */
static void new_request_id(struct gw_worker *w, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    if (w->rid_used == 0 || w->rid_used + 16 > sizeof w->rid_pool) {
        if (RAND_bytes(w->rid_pool, sizeof w->rid_pool) != 1) {
            /* no randomness now: this id alone is zeros, the next one tries again */
            memset(out, '0', 32);
            out[32] = '\0';
            w->rid_used = 0;
            return;
        }
        w->rid_used = 0;
    }
    const unsigned char *rnd = w->rid_pool + w->rid_used;
    w->rid_used += 16;
    if (w->rid_used == sizeof w->rid_pool)
        w->rid_used = 0; /* the next call refills */
    for (size_t i = 0; i < 16; i++) {
        out[2 * i] = hex[rnd[i] >> 4];
        out[2 * i + 1] = hex[rnd[i] & 15];
    }
    out[32] = '\0';
}

static void on_access_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    gw_log_write(w->d->access, w->access_buf);
}

/* Sends status + headers + body (drained from `body`), logs the request, frees r. */
static void finish(struct gw_req *r, int status, struct gw_header *hdrs, size_t nhdrs,
                   struct evbuffer *body, bool close)
{
    hdrs[nhdrs++] = (struct gw_header){"X-Request-Id", r->request_id};
    struct gw_access a = {
        .ts_ms = r->ts_ms,
        .request_id = r->request_id,
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
    };
    /* the request's strings live in the connection until the reply is sent: log first */
    audit_answer(r);
    a.bytes_out = body ? evbuffer_get_length(body) : 0;
    a.duration_ms = gw_mono_ms() - r->t0;
    gw_m_request(&r->w->m, a.op, status, a.duration_ms / 1000);
    struct gw_worker *w = r->w;
    if (w->access_buf) {
        gw_log_access_format(w->access_buf, &a);
        if (evbuffer_get_length(w->access_buf) >= ACCESS_FLUSH_BYTES)
            gw_log_write(w->d->access, w->access_buf);
        else /* behind the events of this pass, before the reply can leave (next pass) */
            event_active(w->access_flush, EV_TIMEOUT, 0);
    } else {
        gw_log_access(w->d->access, &a);
    }
    gw_conn_reply(r->conn, status, status_reason(status), hdrs, nhdrs, body, close);
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
    for (size_t i = 0; i < nextra && nh + 1 < sizeof h / sizeof *h; i++)
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
    gw_m_inc(&r->w->m.rate_limited[scope]);
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

/* The principal of the request's bearer token: from the worker's cache, or verified now. */
static enum gw_auth_reason authenticate(struct gw_req *r)
{
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
    struct gw_worker *w = r->w;
    r->principal = gw_token_cache_get(w->cache, key, now);
    if (r->principal) {
        gw_m_inc(&w->m.cache_hits);
        return GW_AUTH_OK;
    }
    gw_m_inc(&w->m.cache_misses);
    why = gw_jwt_verify(r->snap->auth, token, len, now, &r->principal);
    if (why == GW_AUTH_OK && r->principal->exp > now) /* a token in its leeway is not kept */
        gw_token_cache_put(w->cache, key, r->principal, r->principal->exp);
    return why;
}

static bool pass_back(const char *name)
{
    return strcasecmp(name, "Content-Type") == 0 || strncasecmp(name, "X-RateLimit-", 12) == 0;
}

/* Appends to a growing buffer that may hold a credential: every copy is wiped on release. */
struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->n + n + 1) * 2;
        char *np = OPENSSL_malloc(nc);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        if (b->p) {
            memcpy(np, b->p, b->n);
            OPENSSL_clear_free(b->p, b->cap);
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Sends one request upstream with the op's credential: the client's request (whole) or,
 * with target_only, the GET of the user it changes (same path, no query, no body). */
static void send_upstream(struct gw_req *r, bool target_only, gw_upstream_cb cb)
{
    const struct gw_config *cfg = r->snap->cfg;
    const char *method = target_only ? "GET" : r->method;
    r->upstream_status = 0; /* the status logged and audited is this call's */
    r->upstream_sent = false;
    /* HighLevel's own limits, for every caller together: refused here, not upstream */
    const struct gw_config *rc = r->snap->cfg;
    struct gw_rl_verdict v;
    gw_rl_upstream(r->w->d->rl, rc->rate_limit.upstream.burst, rc->rate_limit.upstream.per_seconds,
                   rc->rate_limit.upstream.daily, mono_ns(), (int64_t)time(NULL), &v);
    if (!v.allowed) {
        reply_limited(r, &v, GW_RL_UPSTREAM);
        return;
    }
    char *query = target_only ? strdup("") : gw_route_query_string(&r->route);
    char *body = r->body && !target_only ? cJSON_PrintUnformatted(r->body) : NULL;
    if (query == NULL || (r->body && !target_only && body == NULL)) {
        free(query);
        cJSON_free(body);
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    struct sbuf b = {0};
    char line[512];
    sb_str(&b, method);
    sb_str(&b, " ");
    sb_str(&b, r->route.upstream_path);
    if (query[0]) {
        sb_str(&b, "?");
        sb_str(&b, query);
    }
    bool v6 = strchr(cfg->upstream.host, ':') != NULL;
    if (cfg->upstream.port == 443)
        snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s%s%s\r\n", v6 ? "[" : "",
                 cfg->upstream.host, v6 ? "]" : "");
    else
        snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s%s%s:%ld\r\n", v6 ? "[" : "",
                 cfg->upstream.host, v6 ? "]" : "", cfg->upstream.port);
    sb_str(&b, line);
    sb_str(&b, "Version: ");
    sb_str(&b, r->version);
    sb_str(&b, "\r\nAccept: application/json\r\nAuthorization: Bearer ");
    sb_add(&b, r->cred->token, r->cred->len);
    sb_str(&b, "\r\nX-Request-Id: ");
    sb_str(&b, r->request_id);
    sb_str(&b, "\r\n");
    if (body) {
        snprintf(line, sizeof line, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 strlen(body));
        sb_str(&b, line);
        sb_str(&b, body);
    } else {
        sb_str(&b, "\r\n");
    }
    free(query);
    cJSON_free(body);
    if (b.oom) {
        if (b.p)
            OPENSSL_clear_free(b.p, b.cap);
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    bool retryable = target_only || r->route.op->method == GW_M_GET;
    struct gw_upstream_call *call =
        gw_upstream_send(r->w->pool, r->snap, b.p, b.n, retryable, cb, r);
    OPENSSL_clear_free(b.p, b.cap);
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
        gw_m_upstream(&r->w->m, r->route.op->id, res->status, res->ms / 1000);
        return false;
    }
    gw_m_inc(&r->w->m.up_errors[res->err == GW_UP_CONNECT   ? GW_UPE_CONNECT
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
    for (size_t i = 0; i < res->nheaders && n + 1 < MAX_REPLY_HEADERS; i++)
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
 * next (read rules), so only its Content-Type is checked here. Returns true when r was
 * answered. */
static bool refuse_non_json(struct gw_req *r, struct gw_upstream_result *res, bool parsed_later)
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
    gw_m_inc(&r->w->m.up_errors[GW_UPE_PROTOCOL]);
    gw_log_error("request %s: %s %s: %s", r->request_id, r->method, r->route.upstream_path, why);
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
    for (size_t i = 0; i < res->nheaders && n + 2 < MAX_REPLY_HEADERS; i++)
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
    gw_m_inc(&r->w->m.up_errors[GW_UPE_PROTOCOL]);
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

static void on_upstream(struct gw_upstream_result *res, void *arg)
{
    struct gw_req *r = arg;
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
    if (refuse_non_json(r, res, filtered))
        return;
    char why[300];
    if (!filtered) {
        pass_answer(r, res, NULL);
        return;
    }
    cJSON *reply = parse_answer(res->body);
    if (reply == NULL) {
        snprintf(why, sizeof why,
                 "the upstream's answer is not JSON, so policy %s's read rules cannot be applied",
                 gw_policy_name(r->policy));
        reply_error(r, GW_R_BAD_GATEWAY, why, NULL, 0);
        return;
    }
    struct evbuffer *out;
    enum gw_filter_result fr = filter_answer(r, reply, &out, why, sizeof why);
    if (fr != GW_FILTER_OK) {
        r->allowed = false;
        if (fr == GW_FILTER_FORBIDDEN) {
            gw_m_denial(&r->w->m, gw_policy_name(r->policy), r->route.op->id);
            struct gw_msgs m = {0};
            gw_msgs_add(&m, "%s", why);
            audit_denied(r, &m);
            gw_msgs_free(&m);
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
    struct gw_audit *a = r->w->d->audit;
    if (r->intent == NULL)
        return;
    if (!gw_audit_answered(a, r->intent)) {
        /* A hung or slow disk must not hold the change (and its connection) for ever. The
         * record is the log's from here; if it is written after all, this outcome follows it. */
        r->upstream_sent = false;
        char *outcome = audit_members(r, GW_AUDIT_OUTCOME, NULL, 0, NULL, upstream_fate(r));
        if (gw_audit_abandon(a, r->intent, outcome)) {
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
    free(r->intent->members);
    free(r->intent);
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
    struct gw_audit_item *it = calloc(1, sizeof *it);
    if (it)
        it->members = audit_members(r, GW_AUDIT_INTENT, NULL, -1, NULL, NULL);
    if (r->intent_done == NULL)
        r->intent_done = event_new(r->w->base, -1, 0, on_intent, r);
    long ms = r->snap->cfg->audit.sync_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (it == NULL || it->members == NULL || r->intent_done == NULL ||
        event_add(r->intent_done, &tv) != 0) {
        if (it)
            free(it->members);
        free(it);
        reply_error(r, GW_R_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    it->event = GW_AUDIT_INTENT;
    it->done = r->intent_done;
    r->intent = it;
    audit_enqueue(r->w, it); /* on_intent follows: written, refused (503) or too late (503) */
}

/* The policy decision (SPEC 6.2) on what the request asks. update-user and delete-user are
 * decided twice: first on the request alone (target_pending: a caller the policies refuse
 * costs no upstream call and learns nothing about the user), then, with the target user
 * fetched, on everything. Allowed: the next step goes upstream. Denied: 403, first reason. */
static void decide(struct gw_req *r, const cJSON *target, bool target_pending)
{
    struct gw_decision d;
    gw_admit_decide(r->snap, &r->route, r->principal, r->body, target, target_pending, &d);
    r->policy = d.policy;
    r->allowed = d.allowed;
    if (!d.allowed) {
        gw_m_denial(&r->w->m, gw_policy_name(r->policy), r->route.op->id);
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
    else if (r->changes && gw_audit_enabled(r->w->d->audit))
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
        if (!refuse_non_json(r, res, false))
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

static void handle(struct gw_conn *conn, struct gw_http_req *rq, void *arg)
{
    struct gw_worker *w = arg;
    struct gw_req *r = calloc(1, sizeof *r);
    if (r == NULL) {
        gw_conn_reply(conn, 503, "Service Unavailable", NULL, 0, NULL, true);
        return;
    }
    r->w = w;
    r->conn = conn;
    r->rq = rq;
    r->snap = gw_snapshot_ref(w->snap);
    r->upstream_ms = -1;
    w->inflight++;
    r->t0 = rq->started_mono;
    r->ts_ms = rq->started_ms;
    r->bytes_in = rq->bytes_in;
    r->method = rq->head.method ? rq->head.method : "";
    snprintf(r->ip, sizeof r->ip, "%s", gw_conn_peer(conn));

    bool repeated;
    const char *rid = gw_http_header(rq, "X-Request-Id", &repeated);
    if (valid_request_id(rid)) {
        snprintf(r->request_id, sizeof r->request_id, "%s", rid);
    } else {
        new_request_id(r->w, r->request_id);
    }
    if (rq->rejected) {
        reply_error(r, rq->kind, rq->why, NULL, 0);
        return;
    }
    SSL *ssl = r->snap->cfg->tls.client_ca ? gw_conn_ssl(conn) : NULL;
    X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (peer && X509_digest(peer, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32)
        for (size_t i = 0; i < mdlen; i++) /* the audit records' actor.cert_sha256 */
            snprintf(r->cert_sha256 + 2 * i, 3, "%02x", md[i]);

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
    const struct gw_op *op = r->route.op;
    r->changes = gw_policy_op_changes_users(op);
    enum gw_auth_reason ar = authenticate(r);
    if (ar != GW_AUTH_OK) {
        gw_m_inc(&w->m.auth_failures[ar]);
        r->auth_failure = gw_auth_reason_name(ar);
        reply_unauthenticated(r, ar);
        return;
    }
    const struct gw_config *lc = r->snap->cfg;
    struct gw_rl_verdict rv;
    gw_rl_subject(w->d->rl, r->principal->subject_id, lc->rate_limit.per_subject.burst,
                  lc->rate_limit.per_subject.per_seconds, mono_ns(), &rv);
    if (!rv.allowed) {
        reply_limited(r, &rv, GW_RL_SUBJECT);
        return;
    }
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
    r->body = adm.body;
    adm.body = NULL;
    gw_admission_free(&adm);
    r->version = version;
    decide(r, NULL, gw_policy_needs_target(op));
}

/* ---- workers ---- */

void gw_worker_maybe_exit(struct gw_worker *w)
{
    if (w->draining && !w->stopped && w->nconns == 0 && w->inflight == 0)
        event_base_loopexit(w->base, NULL);
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    gw_log_error("worker %d: drain timeout with %zu request(s) in flight; closing", w->id,
                 w->inflight);
    event_base_loopexit(w->base, NULL);
}

/* Takes the daemon's current snapshot when it is not the worker's one: new connections and
 * requests use it from now on; requests in flight keep theirs. Verified tokens are forgotten
 * (their principals belong to the old issuers, and the keys may have changed). */
static void adopt_snapshot(struct gw_worker *w)
{
    pthread_mutex_lock(&w->d->snap_mu);
    struct gw_snapshot *s = w->d->snap == w->snap ? NULL : gw_snapshot_ref(w->d->snap);
    pthread_mutex_unlock(&w->d->snap_mu);
    if (s == NULL)
        return;
    gw_token_cache_clear(w->cache);
    gw_snapshot_unref(w->snap);
    w->snap = s;
    gw_upstream_close_idle(w->pool);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    adopt_snapshot(w);
    if (atomic_load(&w->d->forced)) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    if (!atomic_load(&w->d->stopping) || w->draining)
        return;
    w->draining = true;
    evconnlistener_disable(w->listener);
    gw_conn_close_idle(w);
    long ms = w->snap->cfg->limits.drain_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(w->drain_timer, &tv);
    gw_worker_maybe_exit(w);
}

static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;
    event_base_dispatch(w->base);
    if (atomic_fetch_sub(&w->d->running, 1) == 1)
        event_active(w->d->worker_done, EV_TIMEOUT, 0);
    return NULL;
}

#define ACCEPT_PAUSE_MS 100

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    if (!w->draining && !w->listener_paused)
        evconnlistener_enable(w->listener);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct gw_worker *w = arg;
    int e = EVUTIL_SOCKET_ERROR();
    gw_log_error("worker %d: accept: %s; pausing accepts for %d ms", w->id,
                 evutil_socket_error_to_string(e), ACCEPT_PAUSE_MS);
    /* EMFILE leaves the socket readable: without a pause the loop would spin */
    evconnlistener_disable(l);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000L};
    evtimer_add(w->accept_resume, &tv);
}

static int listen_addr(const struct gw_config *cfg, struct sockaddr_storage *ss, socklen_t *sl)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, cfg->listen.address, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)cfg->listen.port);
        *sl = sizeof *s4;
        return 0;
    }
    if (inet_pton(AF_INET6, cfg->listen.address, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)cfg->listen.port);
        *sl = sizeof *s6;
        return 0;
    }
    return -1;
}

/* The workers' sockets share the port with SO_REUSEPORT, which would also let them share it
 * with another running instance (old credentials, old policies) without a word. A socket
 * without SO_REUSEPORT cannot bind beside a listening one: try that first. */
static int port_is_free(const struct gw_config *cfg)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (listen_addr(cfg, &ss, &sl) != 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&ss, sl);
    int e = errno;
    close(fd);
    if (rc != 0) {
        gw_log_error("cannot listen on %s:%ld: %s%s", cfg->listen.address, cfg->listen.port,
                     strerror(e), e == EADDRINUSE ? " (is another ghl-gateway running?)" : "");
        return -1;
    }
    return 0;
}

static int worker_setup(struct gw_daemon *d, struct gw_worker *w, int id)
{
    const struct gw_config *cfg = d->snap->cfg;
    w->id = id;
    w->d = d;
    w->snap = gw_snapshot_ref(d->snap);
    w->base = event_base_new();
    if (w->base == NULL)
        return -1;
    w->dns = evdns_base_new(w->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (w->dns == NULL)
        w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    w->pool = gw_upstream_pool_new(w);
    w->wake = event_new(w->base, -1, 0, on_wake, w);
    w->drain_timer = evtimer_new(w->base, on_drain_deadline, w);
    w->accept_resume = evtimer_new(w->base, on_accept_resume, w);
    w->access_buf = evbuffer_new();
    w->access_flush = event_new(w->base, -1, 0, on_access_flush, w);
    w->audit_flush = event_new(w->base, -1, 0, on_audit_flush, w);
    w->handler = handle;
    long entries = cfg->auth.token_cache_entries;
    w->cache =
        gw_token_cache_new(entries ? (size_t)(entries + (long)d->nworkers - 1) / d->nworkers : 0);
    if (w->dns == NULL || w->pool == NULL || w->wake == NULL || w->drain_timer == NULL ||
        w->accept_resume == NULL || w->cache == NULL || w->access_buf == NULL ||
        w->access_flush == NULL || w->audit_flush == NULL)
        return -1;

    struct sockaddr_storage ss;
    socklen_t sl;
    if (listen_addr(cfg, &ss, &sl) != 0)
        return -1;
    w->listener = evconnlistener_new_bind(w->base, gw_conn_accept, w,
                                          LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                          1024, (struct sockaddr *)&ss, (int)sl);
    if (w->listener == NULL) {
        gw_log_error("cannot listen on %s:%ld: %s", cfg->listen.address, cfg->listen.port,
                     strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(w->listener, on_accept_error);
    return 0;
}

static void worker_teardown(struct gw_worker *w)
{
    w->stopped = true;
    /* ends any call still in flight (after a drain timeout) before the connections go */
    gw_upstream_pool_free(w->pool);
    gw_conn_free_all(w);
    gw_token_cache_free(w->cache); /* before the snapshot its principals point into */
    if (w->listener)
        evconnlistener_free(w->listener);
    if (w->wake)
        event_free(w->wake);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->accept_resume)
        event_free(w->accept_resume);
    if (w->access_buf) { /* the lines of the last pass */
        gw_log_write(w->d->access, w->access_buf);
        evbuffer_free(w->access_buf);
        w->access_buf = NULL;
    }
    if (w->access_flush)
        event_free(w->access_flush);
    if (w->audit_flush) { /* the records of the last pass */
        on_audit_flush(-1, 0, w);
        event_free(w->audit_flush);
    }
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->base)
        event_base_free(w->base); /* runs the finalizers of freed bufferevents */
    gw_snapshot_unref(w->snap);
}

/* ---- main thread ---- */

/* What a reload cannot change in a running process (the listeners, the workers, the access
 * log and the token caches are set up at start): named, so the operator knows. */
static void warn_restart_needed(const struct gw_config *o, const struct gw_config *n)
{
    if (strcmp(o->listen.address, n->listen.address) != 0 || o->listen.port != n->listen.port ||
        o->listen.workers != n->listen.workers)
        gw_log_error("SIGHUP: listen changed; it takes effect on restart");
    if ((o->access_log.file == NULL) != (n->access_log.file == NULL) ||
        (o->access_log.file && strcmp(o->access_log.file, n->access_log.file) != 0))
        gw_log_error("SIGHUP: access_log.file changed; it takes effect on restart");
    if (o->auth.token_cache_entries != n->auth.token_cache_entries)
        gw_log_error("SIGHUP: auth.token_cache_entries changed; it takes effect on restart");
    if ((o->audit.file == NULL) != (n->audit.file == NULL) ||
        (o->audit.file && strcmp(o->audit.file, n->audit.file) != 0) ||
        o->audit.to_stdout != n->audit.to_stdout || o->audit.fsync != n->audit.fsync ||
        (o->audit.hmac_key_file == NULL) != (n->audit.hmac_key_file == NULL) ||
        (o->audit.hmac_key_file && strcmp(o->audit.hmac_key_file, n->audit.hmac_key_file) != 0))
        gw_log_error("SIGHUP: audit changed; the audit log keeps its settings until restart");
}

/* SIGHUP (SPEC §1.2): everything is loaded and validated first; only a complete new snapshot
 * replaces the current one. Requests in flight finish on the snapshot they started with. */
static void reload(struct gw_daemon *d)
{
    if (atomic_load(&d->stopping))
        return;
    struct gw_errs errs = {0};
    struct gw_snapshot *next = gw_snapshot_build(d->config_path, &errs);
    for (size_t i = 0; i < errs.warnings.n; i++)
        gw_log_info("%s", errs.warnings.v[i]);
    if (next == NULL) {
        for (size_t i = 0; i < errs.problems.n; i++)
            gw_log_error("%s", errs.problems.v[i]);
        gw_log_error("SIGHUP: reload failed (%zu problem%s); still serving generation %lu",
                     errs.problems.n, errs.problems.n == 1 ? "" : "s", d->snap->generation);
        d->reloads_failed++;
        gw_errs_free(&errs);
        return;
    }
    gw_errs_free(&errs);
    gw_jwks_adopt_keys(next->auth, d->snap->auth);
    int jwks_failed = gw_jwks_fetcher_start(next->auth->fetcher);
    if (jwks_failed)
        gw_log_error("SIGHUP: %d JWKS URL%s could not be fetched now; the last good keys stay "
                     "in use and the fetch is retried in the background",
                     jwks_failed, jwks_failed == 1 ? "" : "s");
    warn_restart_needed(d->snap->cfg, next->cfg);
    pthread_mutex_lock(&d->snap_mu);
    struct gw_snapshot *old = d->snap;
    next->generation = old->generation + 1;
    d->snap = next;
    pthread_mutex_unlock(&d->snap_mu);
    /* the old keys stay usable by requests in flight; only its refreshing stops */
    gw_jwks_fetcher_stop(old->auth->fetcher);
    for (size_t i = 0; i < d->nworkers; i++)
        event_active(d->workers[i].wake, EV_TIMEOUT, 0);
    d->reloads_ok++;
    gw_log_info("SIGHUP: reloaded %s: generation %lu, %zu polic%s", d->config_path,
                next->generation, next->policies->n, next->policies->n == 1 ? "y" : "ies");
    gw_snapshot_unref(old);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct gw_daemon *d = arg;
    if (sig == SIGTERM || sig == SIGINT) {
        if (atomic_exchange(&d->stopping, true)) {
            gw_log_info("second %s: stopping now", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            atomic_store(&d->forced, true);
        } else {
            gw_log_info("%s: stopping: no new connections; draining requests in flight "
                        "(again to stop at once)",
                        sig == SIGTERM ? "SIGTERM" : "SIGINT");
        }
        for (size_t i = 0; i < d->nworkers; i++)
            event_active(d->workers[i].wake, EV_TIMEOUT, 0);
    } else if (sig == SIGUSR1) {
        if (gw_log_reopen(d->access) != 0)
            gw_log_error("SIGUSR1: cannot reopen the access log: %s", strerror(errno));
        else
            gw_log_info("SIGUSR1: access log reopened");
        gw_audit_reopen(d->audit); /* the writer logs how it went */
    } else if (sig == SIGHUP) {
        reload(d);
    }
}

/* ---- admin listener ---- */

static bool admin_ready(void *arg, char *why, size_t whylen)
{
    struct gw_daemon *d = arg;
    if (atomic_load(&d->stopping)) {
        snprintf(why, whylen, "stopping");
        return false;
    }
    char aw[250];
    if (!gw_audit_ready(d->audit, aw, sizeof aw)) {
        snprintf(why, whylen, "the audit log cannot be written: %s", aw);
        return false;
    }
    return true; /* the snapshot (config, keys, policies) loaded whole, or we would not run */
}

static void admin_metrics(void *arg, struct evbuffer *out)
{
    struct gw_daemon *d = arg;
    struct gw_metrics *shards[256];
    size_t n = d->nworkers < 256 ? d->nworkers : 256;
    for (size_t i = 0; i < n; i++)
        shards[i] = &d->workers[i].m;
    const char *reasons[GW_AUTH_REASONS];
    for (int i = 0; i < GW_AUTH_REASONS; i++)
        reasons[i] = gw_auth_reason_name((enum gw_auth_reason)i);
    gw_metrics_render(out, shards, n, reasons, GW_AUTH_REASONS);
    /* JWKS fetches of the current configuration's issuers (counted from its start) */
    const struct gw_auth *au = d->snap->auth;
    evbuffer_add_printf(out, "# HELP ghl_gateway_jwks_fetches_total JWKS URL fetches, by issuer "
                             "and result (since the configuration was loaded).\n"
                             "# TYPE ghl_gateway_jwks_fetches_total counter\n");
    for (size_t i = 0; i < au->nissuers; i++) {
        if (au->issuers[i].cfg->jwks_url == NULL)
            continue;
        uint64_t ok = 0, fail = 0;
        gw_jwks_counts(au->fetcher, i, &ok, &fail);
        for (int k = 0; k < 2; k++) {
            evbuffer_add_printf(out, "ghl_gateway_jwks_fetches_total{issuer=\"");
            for (const char *c = au->issuers[i].cfg->issuer; *c; c++)
                evbuffer_add_printf(out, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
            evbuffer_add_printf(out, "\",result=\"%s\"} %llu\n", k ? "error" : "ok",
                                (unsigned long long)(k ? fail : ok));
        }
    }
    struct gw_audit_stats st;
    gw_audit_get_stats(d->audit, &st);
    evbuffer_add_printf(out, "# HELP ghl_gateway_audit_records_total Audit records written.\n"
                             "# TYPE ghl_gateway_audit_records_total counter\n");
    for (int e = 0; e < GW_AUDIT_EVENTS; e++)
        evbuffer_add_printf(out, "ghl_gateway_audit_records_total{event=\"%s\"} %llu\n",
                            gw_audit_event_name((enum gw_audit_event)e),
                            (unsigned long long)st.records[e]);
    evbuffer_add_printf(out,
                        "# HELP ghl_gateway_audit_write_seconds Time to write and sync one batch "
                        "of audit records.\n# TYPE ghl_gateway_audit_write_seconds histogram\n");
    for (int i = 0; i < 8; i++)
        evbuffer_add_printf(out, "ghl_gateway_audit_write_seconds_bucket{le=\"%g\"} %llu\n",
                            gw_audit_write_buckets[i], (unsigned long long)st.write_le[i]);
    evbuffer_add_printf(out,
                        "ghl_gateway_audit_write_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "ghl_gateway_audit_write_seconds_sum %.6f\n"
                        "ghl_gateway_audit_write_seconds_count %llu\n",
                        (unsigned long long)st.batches, st.write_seconds_sum,
                        (unsigned long long)st.batches);
    evbuffer_add_printf(
        out,
        "# HELP ghl_gateway_audit_last_seq The seq of the last audit record on disk (an anchor "
        "for audit-verify).\n# TYPE ghl_gateway_audit_last_seq gauge\n"
        "ghl_gateway_audit_last_seq %llu\n"
        "# HELP ghl_gateway_audit_fsyncs_total fdatasync calls on the audit file (group "
        "commit: one per batch).\n# TYPE ghl_gateway_audit_fsyncs_total counter\n"
        "ghl_gateway_audit_fsyncs_total %llu\n"
        "# HELP ghl_gateway_audit_write_failures_total Failed audit writes.\n"
        "# TYPE ghl_gateway_audit_write_failures_total counter\n"
        "ghl_gateway_audit_write_failures_total %llu\n"
        "# HELP ghl_gateway_audit_records_lost_total Audit records that could not be written.\n"
        "# TYPE ghl_gateway_audit_records_lost_total counter\n"
        "ghl_gateway_audit_records_lost_total %llu\n"
        "# HELP ghl_gateway_audit_sync_timeouts_total Changes refused (503, not sent) because "
        "their intent record was not on disk within audit.sync_timeout_ms.\n"
        "# TYPE ghl_gateway_audit_sync_timeouts_total counter\n"
        "ghl_gateway_audit_sync_timeouts_total %llu\n"
        "# HELP ghl_gateway_audit_repairs_total Torn last lines of the audit file cut off at "
        "start.\n# TYPE ghl_gateway_audit_repairs_total counter\n"
        "ghl_gateway_audit_repairs_total %llu\n",
        (unsigned long long)st.last_seq, (unsigned long long)st.fsyncs,
        (unsigned long long)st.write_failures, (unsigned long long)st.lost,
        (unsigned long long)st.sync_timeouts, (unsigned long long)st.repairs);
    evbuffer_add_printf(out,
                        "# HELP ghl_gateway_reloads_total SIGHUP reloads.\n"
                        "# TYPE ghl_gateway_reloads_total counter\n"
                        "ghl_gateway_reloads_total{result=\"ok\"} %llu\n"
                        "ghl_gateway_reloads_total{result=\"error\"} %llu\n"
                        "# HELP ghl_gateway_config_generation The configuration in use.\n"
                        "# TYPE ghl_gateway_config_generation gauge\n"
                        "ghl_gateway_config_generation %lu\n",
                        (unsigned long long)d->reloads_ok, (unsigned long long)d->reloads_failed,
                        d->snap->generation);
}

static void on_workers_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_daemon *d = arg;
    event_base_loopexit(d->main_base, NULL);
}

int gw_server_run(const char *config_path)
{
    struct gw_errs errs = {0};
    struct gw_snapshot *snap = gw_snapshot_build(config_path, &errs);
    for (size_t i = 0; i < errs.warnings.n; i++)
        gw_log_info("%s", errs.warnings.v[i]);
    if (snap == NULL) {
        for (size_t i = 0; i < errs.problems.n; i++)
            gw_log_error("%s", errs.problems.v[i]);
        gw_errs_free(&errs);
        return 1;
    }
    gw_errs_free(&errs);
    signal(SIGPIPE, SIG_IGN);
    /* JWKS URLs: fetched once before serving, then kept fresh by their own thread */
    int jwks_failed = gw_jwks_fetcher_start(snap->auth->fetcher);
    if (jwks_failed)
        gw_log_error("%d JWKS URL%s could not be fetched at start; retrying in the background",
                     jwks_failed, jwks_failed == 1 ? "" : "s");
    if (evthread_use_pthreads() != 0) {
        gw_snapshot_unref(snap);
        return 1;
    }
    struct gw_daemon d;
    memset(&d, 0, sizeof d);
    d.snap = snap;
    d.config_path = config_path;
    pthread_mutex_init(&d.snap_mu, NULL);
    snap->generation = 1;
    atomic_init(&d.stopping, false);
    d.access = gw_log_open(snap->cfg->access_log.file);
    if (d.access == NULL) {
        gw_log_error("access_log.file: cannot open %s: %s", snap->cfg->access_log.file,
                     strerror(errno));
        gw_snapshot_unref(snap);
        return 1;
    }
    char why[1200];
    d.rl = gw_rl_new();
    d.audit = d.rl ? gw_audit_open(snap->cfg, why, sizeof why) : NULL;
    if (d.rl == NULL)
        snprintf(why, sizeof why, "out of memory");
    if (d.audit == NULL || gw_audit_start(d.audit) != 0) {
        gw_log_error("%s", d.audit ? "audit: cannot start the writer thread" : why);
        gw_audit_free(d.audit);
        gw_rl_free(d.rl);
        gw_log_close(d.access);
        gw_snapshot_unref(snap);
        return 1;
    }
    d.nworkers = (size_t)snap->cfg->listen.workers;
    d.workers = calloc(d.nworkers, sizeof *d.workers);
    d.main_base = event_base_new();
    d.worker_done = d.main_base ? event_new(d.main_base, -1, 0, on_workers_done, &d) : NULL;
    int rc = 1;
    size_t started = 0, set_up = 0;
    struct event *sigs[4] = {0};
    if (d.workers == NULL || d.main_base == NULL || d.worker_done == NULL)
        goto out;
    /* Signals first: once a listener is bound, clients can connect, and a SIGTERM from then on
     * must drain, not kill. */
    static const int signo[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        sigs[i] = evsignal_new(d.main_base, signo[i], on_signal, &d);
        if (sigs[i] == NULL || event_add(sigs[i], NULL) != 0)
            goto out;
    }
    if (port_is_free(snap->cfg) != 0)
        goto out;
    struct gw_admin_ops aops = {admin_ready, admin_metrics, &d};
    d.admin = gw_admin_start(d.main_base, snap->cfg, &aops, why, sizeof why);
    if (d.admin == NULL) {
        gw_log_error("%s", why);
        goto out;
    }
    for (; set_up < d.nworkers; set_up++)
        if (worker_setup(&d, &d.workers[set_up], (int)set_up) != 0) {
            set_up++;
            goto out;
        }
    atomic_init(&d.running, d.nworkers);
    for (; started < d.nworkers; started++)
        if (pthread_create(&d.workers[started].thread, NULL, worker_main, &d.workers[started]) != 0)
            goto out;
    gw_log_info("listening on %s:%ld (TLS, %zu worker%s); upstream %s", snap->cfg->listen.address,
                snap->cfg->listen.port, d.nworkers, d.nworkers == 1 ? "" : "s",
                snap->cfg->upstream.url);
    event_base_dispatch(d.main_base);
    rc = 0;
out:
    if (rc != 0 && started > 0) {
        atomic_store(&d.stopping, true);
        for (size_t i = 0; i < started; i++)
            event_active(d.workers[i].wake, EV_TIMEOUT, 0);
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(d.workers[i].thread, NULL);
    for (size_t i = 0; i < set_up; i++) /* records a worker's last pass had not handed over */
        if (d.workers[i].audit_flush)
            on_audit_flush(-1, 0, &d.workers[i]);
    /* the writer answers the intents still queued on the workers' (stopped) loops, so it
     * stops before they are torn down; the file is synced and the chain state saved */
    gw_audit_stop(d.audit);
    for (size_t i = 0; i < set_up; i++)
        worker_teardown(&d.workers[i]);
    /* From here a late signal must not kill the process half way through its teardown: freeing
     * the signal events puts back the default action, so block and then ignore them first. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, NULL);
    for (int i = 0; i < 4; i++)
        if (sigs[i])
            event_free(sigs[i]);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    gw_admin_free(d.admin);
    if (d.worker_done)
        event_free(d.worker_done);
    if (d.main_base)
        event_base_free(d.main_base);
    free(d.workers);
    gw_log_close(d.access);
    gw_audit_free(d.audit);
    gw_rl_free(d.rl);
    gw_snapshot_unref(d.snap);
    pthread_mutex_destroy(&d.snap_mu);
    if (rc == 0)
        gw_log_info("stopped");
    return rc;
}
