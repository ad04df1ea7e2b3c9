#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "audit.h"
#include "config.h"
#include "conn.h"
#include "keywait.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "rlstore.h"
#include "snapshot.h"
#include "token_cache.h"
#include "upstream.h"

#define ACCESS_FLUSH_BYTES 65536 /* a worker's access log lines written at once from here on */
#define ACCEPT_PAUSE_MS 100

struct gw_worker {
    int id;
    pthread_t thread;
    const struct gw_worker_shared *shared;
    struct event_base *base;
    struct evconnlistener *listener;
    struct evdns_base *dns;
    struct gw_upstream_pool *pool;
    struct gw_rlstore *store; /* the shared rate-limit store, when rate_limit.redis is set */
    struct gw_keywait *keywait; /* requests waiting for a JWKS refetch */
    struct gw_conns *conns; /* every open client connection */
    struct gw_req_env env;  /* what its requests get (request.h) */
    struct gw_req_ids ids;
    struct event *wake;       /* activated by the main thread: adopt, drain or stop */
    struct gw_snapshot *snap; /* the snapshot new requests start on (a reference is held) */
    size_t nconns;
    size_t inflight;      /* requests between dispatch and reply */
    bool listener_paused; /* at limits.max_connections */
    bool draining;
    struct event *drain_timer;
    struct event *accept_resume;
    bool stopped; /* being torn down: no more loop exits to schedule */
    /* Verified tokens. Its principals point into snap's issuers: a new snapshot clears it. */
    struct gw_token_cache *cache;
    struct gw_metrics m; /* this worker's shard, summed when scraped */
    /* Access log lines of this loop pass, written by one write(2) when the pass has handled
     * what was ready (access_flush is made active behind them) or when they grow large. */
    struct evbuffer *access_buf;
    struct event *access_flush;
    /* Audit records of this loop pass, handed to the writer together by audit_flush (made
     * active behind them): one lock and one wake-up of the writer per pass, not per record. */
    struct gw_audit_batch audit_batch;
    struct event *audit_flush;
};

/* Ends the loop once the worker is draining and holds no connection and no request. */
static void maybe_exit(struct gw_worker *w)
{
    if (w->draining && !w->stopped && w->nconns == 0 && w->inflight == 0)
        event_base_loopexit(w->base, NULL);
}

/* ---- what requests get (struct gw_req_env) ---- */

static struct gw_snapshot *env_snapshot(void *arg)
{
    struct gw_worker *w = arg;
    return w->snap;
}

static struct gw_upstream_call *env_send(void *arg, struct gw_snapshot *snap, const char *request,
                                         size_t len, bool retryable, gw_upstream_cb cb, void *cbarg)
{
    struct gw_worker *w = arg;
    return gw_upstream_send(w->pool, snap, request, len, retryable, cb, cbarg);
}

static bool env_store_check(void *arg, const struct gw_rlstore_ask *ask, gw_rlstore_cb cb,
                            void *cbarg)
{
    struct gw_worker *w = arg;
    return gw_rlstore_check(w->store, ask, cb, cbarg);
}

static bool env_key_wait(void *arg, struct gw_issuer *is, unsigned long gen, long ms,
                         gw_keywait_cb cb, void *cbarg)
{
    struct gw_worker *w = arg;
    return gw_keywait_park(w->keywait, is, gen, ms, cb, cbarg);
}

/* Hands the pass's records to the writer. Refused (the queue is full, the log is stopping):
 * waiting requests learn it (503), the other records count as lost. */
static void on_audit_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    gw_audit_batch_submit(w->shared->audit, &w->audit_batch);
}

/* Queues a record for this pass's hand-over. One too large to write is refused here. */
static void audit_enqueue(struct gw_worker *w, struct gw_audit_item *it)
{
    if (!gw_audit_fits(it)) {
        gw_log_error("audit: a %s record is too large to write", gw_audit_event_name(it->event));
        if (it->done)
            gw_audit_refuse(w->shared->audit, it);
        else
            gw_audit_lost(w->shared->audit, it);
        return;
    }
    gw_audit_batch_add(&w->audit_batch, it);
    event_active(w->audit_flush, EV_TIMEOUT, 0);
}

static bool env_audit_enabled(void *arg)
{
    struct gw_worker *w = arg;
    return gw_audit_enabled(w->shared->audit);
}

static void env_audit_post(void *arg, enum gw_audit_event e, char *members)
{
    struct gw_worker *w = arg;
    struct gw_audit_item *it = gw_audit_item_new(e, members);
    if (it)
        audit_enqueue(w, it);
    else
        gw_audit_lost(w->shared->audit, NULL);
}

static void env_audit_intent(void *arg, struct gw_audit_item *it)
{
    audit_enqueue(arg, it);
}

static bool env_audit_answered(void *arg, const struct gw_audit_item *it)
{
    struct gw_worker *w = arg;
    return gw_audit_answered(w->shared->audit, it);
}

static bool env_audit_abandon(void *arg, struct gw_audit_item *it, char *outcome)
{
    struct gw_worker *w = arg;
    return gw_audit_abandon(w->shared->audit, it, outcome);
}

static void env_reply(void *arg, struct gw_conn *c, int status, const char *reason,
                      const struct gw_header *hdrs, size_t nhdrs, struct evbuffer *body, bool close)
{
    (void)arg;
    gw_conn_reply(c, status, reason, hdrs, nhdrs, body, close);
}

static void on_access_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    gw_log_write(w->shared->access, w->access_buf);
}

static void env_log(void *arg, const struct gw_access *a)
{
    struct gw_worker *w = arg;
    gw_log_access_format(w->access_buf, a);
    if (evbuffer_get_length(w->access_buf) >= ACCESS_FLUSH_BYTES)
        gw_log_write(w->shared->access, w->access_buf);
    else /* behind the events of this pass, before the reply can leave (next pass) */
        event_active(w->access_flush, EV_TIMEOUT, 0);
}

static void env_done(void *arg)
{
    struct gw_worker *w = arg;
    w->inflight--;
    maybe_exit(w);
}

/* ---- connections ---- */

/* A request read by a connection (conn's handler). */
static void on_request(struct gw_conn *c, struct gw_http_req *rq, void *arg)
{
    struct gw_worker *w = arg;
    w->inflight++;
    char cert[65] = "";
    SSL *ssl = w->snap->cfg->tls.client_ca ? gw_conn_ssl(c) : NULL;
    X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (peer && X509_digest(peer, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32)
        for (size_t i = 0; i < mdlen; i++) /* the audit records' actor.cert_sha256 */
            snprintf(cert + 2 * i, 3, "%02x", md[i]);
    struct gw_req_client client = {.conn = c, .ip = gw_conn_peer(c), .cert_sha256 = cert};
    gw_req_start(&w->env, &client, rq);
}

/* The number of open connections changed (conn's count). */
static void on_conn_count(void *arg, size_t n)
{
    struct gw_worker *w = arg;
    w->nconns = n;
    atomic_store_explicit(&w->m.connections, n, memory_order_relaxed);
    size_t max = (size_t)w->snap->cfg->limits.max_connections;
    if (n >= max && !w->listener_paused) {
        evconnlistener_disable(w->listener);
        w->listener_paused = true;
    } else if (n < max && w->listener_paused && !w->draining) {
        evconnlistener_enable(w->listener);
        w->listener_paused = false;
    }
    maybe_exit(w);
}

/* ---- the loop ---- */

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
    struct gw_snapshot *s = w->shared->snapshot(w->shared->arg);
    if (s == w->snap) {
        gw_snapshot_unref(s);
        return;
    }
    gw_token_cache_clear(w->cache);
    gw_snapshot_unref(w->snap);
    w->snap = s;
    gw_conns_use(w->conns, s);
    gw_upstream_pool_use(w->pool, s);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_worker *w = arg;
    adopt_snapshot(w);
    if (w->shared->forced(w->shared->arg)) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    if (!w->shared->stopping(w->shared->arg) || w->draining)
        return;
    w->draining = true;
    evconnlistener_disable(w->listener);
    gw_upstream_pool_drain(w->pool);
    gw_conns_drain(w->conns);
    long ms = w->snap->cfg->limits.drain_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(w->drain_timer, &tv);
    maybe_exit(w);
}

static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;
    event_base_dispatch(w->base);
    w->shared->exited(w->shared->arg);
    return NULL;
}

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

/* ---- set-up and teardown ---- */

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
int gw_worker_port_free(const struct gw_config *cfg)
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

struct gw_worker *gw_worker_new(const struct gw_worker_shared *shared, int id,
                                struct gw_snapshot *snap)
{
    struct gw_worker *w = calloc(1, sizeof *w);
    if (w == NULL) {
        gw_log_error("worker %d: out of memory", id);
        return NULL;
    }
    const struct gw_config *cfg = snap->cfg;
    w->id = id;
    w->shared = shared;
    w->snap = gw_snapshot_ref(snap);
    w->base = event_base_new();
    if (w->base == NULL)
        goto fail;
    w->dns = evdns_base_new(w->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (w->dns == NULL)
        w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    w->pool = w->dns ? gw_upstream_pool_new(w->base, w->dns) : NULL;
    w->conns = gw_conns_new(w->base, id, on_request, on_conn_count, w);
    w->wake = event_new(w->base, -1, 0, on_wake, w);
    w->drain_timer = evtimer_new(w->base, on_drain_deadline, w);
    w->accept_resume = evtimer_new(w->base, on_accept_resume, w);
    w->access_buf = evbuffer_new();
    w->access_flush = event_new(w->base, -1, 0, on_access_flush, w);
    w->audit_flush = event_new(w->base, -1, 0, on_audit_flush, w);
    w->keywait = gw_keywait_new(w->base);
    long entries = cfg->auth.token_cache_entries;
    size_t n = shared->nworkers ? shared->nworkers : 1;
    w->cache = gw_token_cache_new(entries ? (size_t)(entries + (long)n - 1) / n : 0);
    if (w->dns == NULL || w->pool == NULL || w->conns == NULL || w->wake == NULL ||
        w->drain_timer == NULL || w->accept_resume == NULL || w->cache == NULL ||
        w->access_buf == NULL || w->access_flush == NULL || w->audit_flush == NULL ||
        w->keywait == NULL)
        goto fail;
    /* the store's connection settings are the first snapshot's: a reload that changes them
     * is told to restart (server.c) */
    if (cfg->rate_limit.redis.enabled && shared->store &&
        (w->store = gw_rlstore_new(w->base, w->dns, &cfg->rate_limit.redis, snap->redis.token,
                                   &w->m, shared->store, id)) == NULL)
        goto fail;
    gw_conns_use(w->conns, snap);
    gw_upstream_pool_use(w->pool, snap);
    w->env = (struct gw_req_env){
        .base = w->base,
        .cache = w->cache,
        .m = &w->m,
        .rl = shared->rl,
        .ids = &w->ids,
        .replica = gw_audit_replica(shared->audit),
        .snapshot = env_snapshot,
        .send = env_send,
        .store_check = w->store ? env_store_check : NULL,
        .key_wait = env_key_wait,
        .audit_enabled = env_audit_enabled,
        .audit_post = env_audit_post,
        .audit_intent = env_audit_intent,
        .audit_answered = env_audit_answered,
        .audit_abandon = env_audit_abandon,
        .reply = env_reply,
        .log = env_log,
        .done = env_done,
        .arg = w,
    };
    struct sockaddr_storage ss;
    socklen_t sl;
    if (listen_addr(cfg, &ss, &sl) != 0)
        goto fail;
    w->listener = evconnlistener_new_bind(w->base, gw_conn_accept, w->conns,
                                          LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                          1024, (struct sockaddr *)&ss, (int)sl);
    if (w->listener == NULL) {
        gw_log_error("cannot listen on %s:%ld: %s", cfg->listen.address, cfg->listen.port,
                     strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(w->listener, on_accept_error);
    return w;
fail:
    gw_worker_free(w);
    return NULL;
}

int gw_worker_start(struct gw_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void gw_worker_join(struct gw_worker *w)
{
    pthread_join(w->thread, NULL);
}

void gw_worker_wake(struct gw_worker *w)
{
    event_active(w->wake, EV_TIMEOUT, 0);
}

void gw_worker_keys_fetched(struct gw_worker *w)
{
    gw_keywait_fetched(w->keywait);
}

void gw_worker_finish(struct gw_worker *w)
{
    if (w->audit_flush) /* the records of the last pass */
        on_audit_flush(-1, 0, w);
}

struct gw_metrics *gw_worker_metrics(struct gw_worker *w)
{
    return &w->m;
}

void gw_worker_free(struct gw_worker *w)
{
    if (w == NULL)
        return;
    w->stopped = true;
    /* a request still waiting for a refetch (a drain that timed out) is decided now, on the
     * keys it has */
    gw_keywait_free(w->keywait);
    /* ends any call still in flight (after a drain timeout) before the connections go; a
     * request that waited on the store goes on as its on_failure says, into the pool */
    gw_rlstore_free(w->store);
    gw_upstream_pool_free(w->pool);
    gw_conns_free(w->conns);
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
        gw_log_write(w->shared->access, w->access_buf);
        evbuffer_free(w->access_buf);
    }
    if (w->access_flush)
        event_free(w->access_flush);
    if (w->audit_flush) {
        on_audit_flush(-1, 0, w);
        event_free(w->audit_flush);
    }
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->base)
        event_base_free(w->base); /* runs the finalizers of freed bufferevents */
    gw_snapshot_unref(w->snap);
    free(w);
}
