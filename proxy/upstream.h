/* upstream: the HTTPS client to HighLevel, one pool per worker.
 *
 * Owns: keep-alive TLS connections (certificate and hostname verified, SNI sent), non-blocking
 * DNS (the worker's evdns base), the connect deadline (upstream.connect_timeout_ms, DNS + TCP +
 * TLS), the response deadline (upstream.timeout_ms, from the request being written), one retry
 * on a fresh connection for requests marked retryable (GET) when connecting fails or a reused
 * connection closes before any byte of the answer, and a strict HTTP/1.1 response parser
 * (Content-Length or chunked; head and body capped).
 *
 * Memory: gw_upstream_send copies the request bytes; the result passed to the callback,
 * including its body evbuffer and header strings, is valid only during the callback (move the
 * body out with evbuffer_add_buffer). The pool is freed with gw_upstream_pool_free, which ends
 * every call in flight with GW_UP_SHUTDOWN.
 * Threads: the owning worker's thread only.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evbuffer;
struct evdns_base;
struct gw_snapshot;

enum gw_upstream_error {
    GW_UP_OK = 0,
    GW_UP_CONNECT,  /* DNS, TCP or connect deadline: 502 */
    GW_UP_TLS,      /* handshake or certificate verification: 502 */
    GW_UP_TIMEOUT,  /* no complete answer within timeout_ms: 504 */
    GW_UP_PROTOCOL, /* malformed or oversized answer, or closed mid-answer: 502 */
    GW_UP_SHUTDOWN, /* the worker is stopping */
};

#define GW_UPSTREAM_MAX_HEADERS 64

struct gw_upstream_result {
    enum gw_upstream_error err;
    char why[192]; /* for errors: what happened, for the 502 message and the log */
    int status;    /* 0 when there was no answer */
    size_t nheaders;
    const char *hname[GW_UPSTREAM_MAX_HEADERS];
    const char *hvalue[GW_UPSTREAM_MAX_HEADERS];
    struct evbuffer *body;
    double ms; /* from send to answer (or failure) */
    /* Some byte of the request may have left: it was handed to a connected TLS connection.
     * False: none did (DNS, connect or handshake failed, or the call ended before); a change
     * not sent cannot have happened. */
    bool sent;
};

typedef void (*gw_upstream_cb)(struct gw_upstream_result *r, void *arg);

struct gw_upstream_pool;
struct gw_upstream_call;

/* A worker's pool on its loop and resolver. */
struct gw_upstream_pool *gw_upstream_pool_new(struct event_base *base, struct evdns_base *dns);
/* The snapshot whose connections may be kept for reuse (borrowed: the caller keeps it alive
 * while it is in use; set before the first send). Connections opened under another one are
 * not pooled, and changing it closes the idle ones (a reload may have changed the upstream,
 * its CA or the credentials); connections with a call in flight finish it first. */
void gw_upstream_pool_use(struct gw_upstream_pool *p, const struct gw_snapshot *snap);
/* The worker is draining: no connection is kept for reuse from now on, idle ones close. */
void gw_upstream_pool_drain(struct gw_upstream_pool *p);
void gw_upstream_pool_free(struct gw_upstream_pool *p);

/* Sends request[0..len) (a complete HTTP/1.1 request) under snap (the request's snapshot:
 * upstream, CA, deadlines; the call holds a reference) and calls cb exactly once, never from
 * inside this call. Returns the call, or NULL when it could not be started (out of memory). */
struct gw_upstream_call *gw_upstream_send(struct gw_upstream_pool *p, struct gw_snapshot *snap,
                                          const char *request, size_t len, bool retryable,
                                          gw_upstream_cb cb, void *arg);

/* Number of idle pooled connections (for tests and metrics). */
size_t gw_upstream_idle(const struct gw_upstream_pool *p);

#endif
