/* conn: one client connection: TLS termination and the gateway's HTTP/1.1 server side.
 *
 * The request head is parsed here, strictly, once: this is the only HTTP parser that reads
 * client bytes, so nothing downstream can read the framing differently. Refused framing
 * (bare LF or CR, NUL, obs-fold, header names outside the token set, Transfer-Encoding, more
 * than one Content-Length or Host, targets not in origin form) is answered 400 and the
 * connection closed; heads past limits.max_header_bytes 431, bodies past max_body_bytes 413,
 * both closing. The connection owns its deadlines: TLS handshake + first head
 * (header_timeout_ms from accept), each later head (header_timeout_ms from its first byte),
 * body (body_timeout_ms from the end of the head), keep-alive idle (keepalive_timeout_ms).
 * Replies are written with Content-Length; a closing reply is followed by a TLS close_notify
 * once its last byte has left, then the socket is closed. TLS I/O is done here on the
 * non-blocking socket (SSL_read with read-ahead, SSL_write in the loop pass that queues the
 * reply, write interest only while the socket is full), not through a TLS bufferevent.
 *
 * Memory: a gw_conn is created by the listener callback and freed when it closes; a request
 * handed to the handler stays valid until gw_conn_reply is called for it. If the client goes
 * away meanwhile, the socket is closed at once and the gw_conn is freed by gw_conn_reply.
 * Threads: the worker's thread only.
 */
#ifndef GW_CONN_H
#define GW_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "http1.h"
#include "reply.h"

struct event_base;
struct evbuffer;
struct evconnlistener;
struct sockaddr;
struct gw_conn;

/* One request as read from the client. */
struct gw_http_req {
    bool rejected; /* refused while reading: reply `kind` (message in why), close */
    enum gw_reply_kind kind;
    const char *why;
    struct gw_http1_head head; /* method, target, headers (method may be NULL if rejected) */
    struct evbuffer *body;     /* exactly Content-Length bytes */
    uint64_t bytes_in;         /* head + body */
    int64_t started_ms;        /* wall clock at the request's first byte */
    double started_mono;       /* gw_mono_ms() at the same moment, for durations */
};

/* Called once per request (rejected ones included); the handler must eventually call
 * gw_conn_reply exactly once for it. */
typedef void (*gw_conn_handler)(struct gw_conn *c, struct gw_http_req *rq, void *arg);

/* A worker's connections (the set owns them), and what they need from the worker: its loop,
 * the handler of each request, and count, told the number of open connections whenever it
 * changes (the worker pauses accepting at limits.max_connections, and may exit once draining
 * leaves none). Returns NULL when out of memory. */
struct gw_conns;
struct gw_snapshot;
struct gw_conns *gw_conns_new(struct event_base *base, int id, gw_conn_handler handle,
                              void (*count)(void *arg, size_t n), void *arg);
/* The snapshot new connections take their TLS context from, and every connection its limits
 * (borrowed: the caller keeps it alive while it is in use). Set before the first accept. */
void gw_conns_use(struct gw_conns *set, struct gw_snapshot *snap);
size_t gw_conns_count(const struct gw_conns *set);
/* Graceful shutdown: closes every connection not in the middle of a request; the others close
 * after their reply. */
void gw_conns_drain(struct gw_conns *set);
/* Frees every connection and the set (worker teardown). */
void gw_conns_free(struct gw_conns *set);

/* evconnlistener callback; arg is the set. */
void gw_conn_accept(struct evconnlistener *l, int fd, struct sockaddr *sa, int salen, void *arg);

/* The single value of a header of the request (see gw_http1_header). */
static inline const char *gw_http_header(const struct gw_http_req *rq, const char *name,
                                         bool *repeated)
{
    return gw_http1_header(rq->head.hdr, rq->head.nhdr, name, repeated);
}

const char *gw_conn_peer(const struct gw_conn *c);
SSL *gw_conn_ssl(const struct gw_conn *c);

/* Sends the reply to the current request: status line, the given headers, Date,
 * Content-Length and (when closing) Connection: close, then body (drained from `body`). The
 * connection closes after it when close is set, the client asked, or the worker is draining.
 * Returns the number of body bytes queued. */
size_t gw_conn_reply(struct gw_conn *c, int status, const char *reason,
                     const struct gw_header *hdrs, size_t nhdrs, struct evbuffer *body, bool close);

#endif
