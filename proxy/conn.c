#include "conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h> /* struct event embedded in a connection (ABI of libevent 2.1) */
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "snapshot.h"

#define RECORD_MAX 16384    /* one TLS record's worth of plaintext: the unit of reads and writes */
#define OUT_CAP (64u << 10) /* replies queued past this: read no further request until sent */

enum conn_state {
    ST_IDLE,    /* no byte of the next request yet (or the TLS handshake) */
    ST_HEAD,    /* reading a request head */
    ST_BODY,    /* reading body_left more bytes */
    ST_BUSY,    /* the handler has the request */
    ST_CLOSING, /* last reply queued: close once it has left */
    ST_DEAD,    /* socket closed while the handler had the request */
};

/* The connection does its own TLS I/O on the non-blocking socket (SSL_read/SSL_write), not
 * through libevent's TLS bufferevent: a reply is written at once and the write event is
 * subscribed only when the socket is full (the bufferevent subscribed and unsubscribed for
 * every write: two epoll_ctl calls each), reads take every record OpenSSL has (so read-ahead
 * is safe: one read(2) per segment instead of two per record), and an idle connection holds
 * two small buffers instead of a bufferevent. */
/* Every connection of one worker, and what they need from it. */
struct gw_conns {
    struct event_base *base;
    int id; /* the worker's, for the log */
    gw_conn_handler handle;
    void (*count)(void *arg, size_t n);
    void *arg;
    struct gw_snapshot *snap; /* borrowed from the worker: limits, and new connections' TLS */
    bool draining;
    struct gw_conn *head;
    size_t n;
};

struct gw_conn {
    struct gw_conns *set;
    struct gw_conn *next, *prev;
    int fd; /* -1 once closed (ST_DEAD) */
    SSL *ssl;
    struct event rd, wr; /* read and write interest on fd (assigned in place) */
    struct event timer;  /* the current deadline (assigned in place: no allocation) */
    struct event *kick;  /* deferred: read what was pipelined after an asynchronous reply;
                            made on first use (few connections pipeline) */
    struct evbuffer *in, *out;
    bool reading, writing; /* rd / wr added */
    bool handshaken;
    bool read_wants_write, write_wants_read; /* TLS needs the other direction first */
    size_t retry_len; /* an SSL_write that must be repeated with this length (0: none) */
    enum conn_state st;
    bool served_one; /* keep-alive: later heads get their deadline from their first byte */
    bool in_read;    /* inside process(): replies there need no kick */
    bool paused;     /* reading stopped until queued replies have left (OUT_CAP) */
    size_t scanned;  /* bytes of the current head already checked */
    uint64_t body_left;
    char peer[INET6_ADDRSTRLEN];
    /* The request being read or served; NULL between requests, so an idle keep-alive
     * connection does not hold a head's worth of header slots (SPEC §15, idle memory). */
    struct gw_http_req *rq;
    int64_t accepted_ms; /* the first request starts with the connection (its deadline too) */
    double accepted_mono;
    char *head; /* the current head, split in place into rq's strings */
    size_t head_len;
};

static const struct gw_config *cfg(const struct gw_conn *c)
{
    return c->set->snap->cfg;
}

static void arm(struct gw_conn *c, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(&c->timer, &tv);
}

static void reset_request(struct gw_conn *c)
{
    if (c->rq) {
        if (c->rq->body)
            evbuffer_free(c->rq->body);
        free(c->rq);
        c->rq = NULL;
    }
    if (c->head) /* it held the caller's Authorization header */
        OPENSSL_clear_free(c->head, c->head_len + 1);
    c->head = NULL;
    c->scanned = 0;
    c->body_left = 0;
}

/* A new request begins with its first byte. Returns -1 when out of memory. */
static int new_request(struct gw_conn *c)
{
    c->rq = calloc(1, sizeof *c->rq);
    if (c->rq == NULL || (c->rq->body = evbuffer_new()) == NULL) {
        free(c->rq);
        c->rq = NULL;
        return -1;
    }
    if (c->served_one) {
        c->rq->started_ms = gw_now_ms();
        c->rq->started_mono = gw_mono_ms();
    } else {
        c->rq->started_ms = c->accepted_ms;
        c->rq->started_mono = c->accepted_mono;
    }
    return 0;
}

/* Closes the socket and frees the TLS state (the connection object stays). */
static void close_socket(struct gw_conn *c)
{
    event_del(&c->rd);
    event_del(&c->wr);
    c->reading = c->writing = false;
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void set_read(struct gw_conn *c, bool on)
{
    if (on == c->reading || c->fd < 0)
        return;
    if (on)
        event_add(&c->rd, NULL);
    else
        event_del(&c->rd);
    c->reading = on;
    /* reading resumes (after the input cap): records read ahead before the pause are in
     * OpenSSL's buffer, not the socket, so epoll would not report them */
    if (on && c->handshaken && c->ssl && SSL_has_pending(c->ssl))
        event_active(&c->rd, EV_READ, 0);
}

static void set_write(struct gw_conn *c, bool on)
{
    if (on == c->writing || c->fd < 0)
        return;
    if (on)
        event_add(&c->wr, NULL);
    else
        event_del(&c->wr);
    c->writing = on;
}

/* Reading pauses once a whole request plus a little is buffered (pipelined requests wait for
 * the reply to the one before them), while replies pile up (OUT_CAP), after a refused request
 * and once the connection is closing. */
static void update_read(struct gw_conn *c)
{
    size_t cap = (size_t)(cfg(c)->limits.max_header_bytes + cfg(c)->limits.max_body_bytes) + 4096;
    set_read(c, c->st != ST_CLOSING && c->st != ST_DEAD && !c->paused &&
                    !(c->rq && c->rq->rejected) && evbuffer_get_length(c->in) < cap);
}

/* Takes every record the TLS layer has buffered (read-ahead) into c->in, up to the reading
 * cap; what is still in the socket is read when epoll reports it again. Returns -1 when the
 * peer is gone or TLS failed. */
static int tls_read(struct gw_conn *c)
{
    size_t cap = (size_t)(cfg(c)->limits.max_header_bytes + cfg(c)->limits.max_body_bytes) + 4096;
    unsigned char buf[RECORD_MAX];
    size_t used = 0; /* of buf: what must be wiped */
    int rc = 0;
    while (evbuffer_get_length(c->in) < cap) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, sizeof buf);
        if (r > 0) {
            if ((size_t)r > used)
                used = (size_t)r;
            if (evbuffer_add(c->in, buf, (size_t)r) != 0) {
                rc = -1;
                break;
            }
            if (!SSL_has_pending(c->ssl))
                break; /* the socket is likely empty: epoll (level-triggered) says if not */
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) { /* a TLS message to send before reading on */
            c->read_wants_write = true;
            set_write(c, true);
            break;
        }
        rc = -1; /* close_notify, EOF, reset or a TLS error */
        break;
    }
    OPENSSL_cleanse(buf, used); /* it held the caller's Authorization header */
    return rc;
}

/* Writes c->out. Returns 0 (all written, or waiting for the socket) or -1 (failed). */
static int tls_write(struct gw_conn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        size_t n = c->retry_len;
        if (n == 0) {
            n = evbuffer_get_length(c->out);
            if (n > RECORD_MAX)
                n = RECORD_MAX;
        }
        const unsigned char *p = evbuffer_pullup(c->out, (ev_ssize_t)n);
        if (p == NULL)
            return -1;
        ERR_clear_error();
        int r = SSL_write(c->ssl, p, (int)n);
        if (r > 0) {
            evbuffer_drain(c->out, (size_t)r);
            c->retry_len = 0;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c->retry_len = n; /* OpenSSL wants the same write again */
            if (e == SSL_ERROR_WANT_WRITE)
                set_write(c, true);
            else
                c->write_wants_read = true;
            return 0;
        }
        return -1;
    }
    set_write(c, false);
    return 0;
}

static void conn_free(struct gw_conn *c)
{
    struct gw_conns *set = c->set;
    event_del(&c->timer);
    if (c->kick)
        event_free(c->kick);
    close_socket(c);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    reset_request(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        set->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    set->n--;
    free(c);
    set->count(set->arg, set->n);
}

/* The peer is gone or must be cut off. A request with the handler stays until its reply. */
static void conn_drop(struct gw_conn *c)
{
    if (c->st == ST_BUSY) {
        close_socket(c);
        evtimer_del(&c->timer);
        c->st = ST_DEAD;
        return;
    }
    conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_conn *c = arg;
    /* A deadline passed: a head or body not complete in time, a keep-alive connection idle too
     * long, or a reply not taken by the client in time. Close without a reply. */
    if (c->st != ST_BUSY && c->st != ST_DEAD)
        conn_free(c);
}

/* Between requests a connection holds no TLS record buffers: SSL_MODE_RELEASE_BUFFERS frees
 * them when a record is consumed, but the last read (to an empty socket) sets up a fresh 16 KB
 * buffer again. SSL_free_buffers keeps anything pending. */
static void idle_buffers(struct gw_conn *c)
{
    (void)SSL_free_buffers(c->ssl);
}

static void process(struct gw_conn *c);
static void queue_out(struct gw_conn *c, const void *data, size_t n);

/* Everything queued has left. */
static void sent(struct gw_conn *c)
{
    if (c->st == ST_CLOSING) {
        /* say goodbye at the TLS level, then close: nothing else is queued */
        if (c->ssl && c->handshaken)
            SSL_shutdown(c->ssl);
        conn_free(c);
        return;
    }
    if (c->st != ST_IDLE)
        return;
    arm(c, cfg(c)->limits.keepalive_timeout_ms); /* the reply is out: now the idle deadline */
    if (!c->paused && c->ssl && evbuffer_get_length(c->in) == 0)
        idle_buffers(c);
    if (c->paused) {
        c->paused = false;
        update_read(c);
        process(c);
    }
}

static void dispatch(struct gw_conn *c)
{
    c->st = ST_BUSY;
    evtimer_del(&c->timer);
    c->set->handle(c, c->rq, c->set->arg);
}

/* The request is refused: nothing more is read, and the handler answers it and closes. */
static void reject(struct gw_conn *c, const struct gw_http1_error *err)
{
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    c->rq->rejected = true;
    c->rq->kind = err->kind;
    c->rq->why = err->why;
    update_read(c);
    dispatch(c);
}

/* Reads requests until one is handed to the handler or more bytes are needed. */
static void process(struct gw_conn *c)
{
    struct evbuffer *in = c->in;
    c->in_read = true;
    for (;;) {
        if (c->st == ST_IDLE && evbuffer_get_length(c->out) > OUT_CAP) {
            /* a client that pipelines and does not read its replies: stop reading until
             * they have left (sent() resumes), so the output cannot grow without bound */
            c->paused = true;
            update_read(c);
            break;
        }
        if (c->st == ST_IDLE) {
            /* RFC 9112 2.2: empty lines before a request line are ignored */
            unsigned char two[2];
            while (evbuffer_copyout(in, two, 2) == 2 && two[0] == '\r' && two[1] == '\n')
                evbuffer_drain(in, 2);
            size_t len = evbuffer_get_length(in);
            if (len == 0 || (len == 1 && evbuffer_pullup(in, 1)[0] == '\r'))
                break;
            if (new_request(c) != 0) {
                gw_log_error("worker %d: cannot read a request (out of memory)", c->set->id);
                conn_free(c);
                return;
            }
            c->st = ST_HEAD;
            if (c->served_one)
                arm(c, cfg(c)->limits.header_timeout_ms);
        }
        if (c->st == ST_HEAD) {
            const struct gw_config *cf = cfg(c);
            size_t len = evbuffer_get_length(in);
            size_t cap = (size_t)cf->limits.max_header_bytes;
            const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(len < cap ? len : cap));
            struct gw_http1_error err;
            long hl = gw_http1_scan(p, len, &c->scanned, cap, &err);
            if (hl < 0)
                reject(c, &err);
            if (hl <= 0)
                break;
            c->head = malloc((size_t)hl + 1);
            c->head_len = (size_t)hl;
            if (c->head == NULL) {
                conn_free(c);
                return;
            }
            evbuffer_remove(in, c->head, (size_t)hl);
            if (gw_http1_parse(c->head, (size_t)hl, (uint64_t)cf->limits.max_body_bytes,
                               &c->rq->head, &err) != 0) {
                reject(c, &err);
                break;
            }
            uint64_t cl = c->rq->head.content_length;
            c->rq->bytes_in = (uint64_t)hl + cl;
            c->body_left = cl;
            if (cl == 0) {
                dispatch(c);
                if (c->st != ST_IDLE)
                    break;
                continue;
            }
            if (c->rq->head.expect_continue && !c->rq->head.http10 && evbuffer_get_length(in) < cl)
                queue_out(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            c->st = ST_BODY;
            arm(c, cf->limits.body_timeout_ms);
        }
        if (c->st == ST_BODY) {
            size_t have = evbuffer_get_length(in);
            size_t take = have < c->body_left ? have : (size_t)c->body_left;
            if (take == 0)
                break;
            evbuffer_remove_buffer(in, c->rq->body, take);
            c->body_left -= take;
            if (c->body_left > 0)
                break;
            dispatch(c);
            if (c->st != ST_IDLE)
                break;
            continue;
        }
        break; /* BUSY, CLOSING: pipelined bytes wait */
    }
    if (c->st == ST_IDLE && c->ssl && evbuffer_get_length(in) == 0)
        idle_buffers(c);
    c->in_read = false;
    update_read(c); /* the buffer may have room again, or the connection is closing */
}

static void on_readable(evutil_socket_t fd, short what, void *arg);

/* The TLS handshake, driven by either direction's readiness (the header deadline, armed at
 * accept, covers it). A failed handshake closes the connection without a reply. */
static void handshake(struct gw_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshaken = true;
        set_write(c, false);
        set_read(c, true);
        on_readable(c->fd, EV_READ, c); /* the client may have sent its request already */
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        set_write(c, false);
        set_read(c, true);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        set_write(c, true);
    } else {
        conn_free(c);
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_conn *c = arg;
    if (!c->handshaken) {
        handshake(c);
        return;
    }
    if (c->write_wants_read) { /* a write waited for this */
        c->write_wants_read = false;
        if (tls_write(c) != 0) {
            conn_drop(c);
            return;
        }
        if (evbuffer_get_length(c->out) == 0) {
            sent(c);
            return; /* sent() reads on (or freed c) */
        }
    }
    if (tls_read(c) != 0) {
        conn_drop(c);
        return;
    }
    if (c->st == ST_BUSY || c->st == ST_CLOSING) {
        update_read(c); /* buffered until the reply; stop at the cap */
        return;
    }
    process(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_conn *c = arg;
    if (c->fd < 0)
        return;
    if (!c->handshaken) {
        handshake(c);
        return;
    }
    if (c->read_wants_write) {
        c->read_wants_write = false;
        set_write(c, false);
        on_readable(c->fd, EV_READ, c);
        return;
    }
    if (evbuffer_get_length(c->out) > 0 && tls_write(c) != 0) {
        conn_drop(c);
        return;
    }
    if (evbuffer_get_length(c->out) == 0)
        sent(c);
}

/* Queues bytes for the client and writes them in this loop pass (no wait for writability). */
static void queue_out(struct gw_conn *c, const void *data, size_t n)
{
    evbuffer_add(c->out, data, n);
    event_active(&c->wr, EV_WRITE, 0);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_conn *c = arg;
    if (c->st == ST_IDLE)
        process(c);
}

/* Reads the pipelined bytes after this callback returns (not from inside the reply). */
static void kick(struct gw_conn *c)
{
    if (c->kick == NULL && (c->kick = event_new(c->set->base, -1, 0, on_kick, c)) == NULL) {
        gw_log_error("worker %d: cannot schedule a pipelined request (out of memory)", c->set->id);
        return; /* read again when more bytes arrive */
    }
    event_active(c->kick, EV_TIMEOUT, 0);
}

void gw_conn_accept(struct evconnlistener *l, int fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)salen;
    struct gw_conns *set = arg;
    const struct gw_config *cf = set->snap->cfg;
    /* A reply is written as it is ready, often in more than one TLS record: without this,
     * Nagle's algorithm holds the last segment back until the client's delayed ACK (40 ms). */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct gw_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto fail;
    c->set = set;
    c->fd = fd;
    c->ssl = SSL_new(set->snap->server_ctx);
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    /* the listener made fd non-blocking (accept4 with SOCK_NONBLOCK) */
    if (c->ssl == NULL || c->in == NULL || c->out == NULL || SSL_set_fd(c->ssl, fd) != 1)
        goto fail;
    /* read-ahead: one read(2) takes what the socket has, not a record header then its body
     * (tls_read always reads until OpenSSL has nothing buffered); pullups move the buffer */
    SSL_set_read_ahead(c->ssl, 1);
    SSL_set_mode(c->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_accept_state(c->ssl);
    event_assign(&c->rd, set->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    event_assign(&c->wr, set->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    evtimer_assign(&c->timer, set->base, on_timer, c);
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof c->peer);
    set_read(c, true); /* the handshake starts with the client's hello */
    c->st = ST_IDLE;
    c->accepted_ms = gw_now_ms();
    c->accepted_mono = gw_mono_ms();
    arm(c, cf->limits.header_timeout_ms); /* TLS handshake + first head */
    c->next = set->head;
    if (set->head)
        set->head->prev = c;
    set->head = c;
    set->n++;
    set->count(set->arg, set->n);
    return;
fail:
    gw_log_error("worker %d: cannot set up a connection (out of memory)", set->id);
    if (c) {
        if (c->ssl)
            SSL_free(c->ssl);
        if (c->in)
            evbuffer_free(c->in);
        if (c->out)
            evbuffer_free(c->out);
        free(c);
    }
    close(fd);
}

const char *gw_conn_peer(const struct gw_conn *c)
{
    return c->peer;
}

SSL *gw_conn_ssl(const struct gw_conn *c)
{
    return c->ssl;
}

/* The Date header's value for this second (formatted once per second and thread). */
static const char *http_date(void)
{
    static _Thread_local time_t last;
    static _Thread_local char cached[40];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return cached;
}

/* v in decimal at buf (at least 21 bytes, not terminated); returns the length. */
static size_t fmt_uint(char *buf, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(buf, tmp + i, sizeof tmp - i);
    return sizeof tmp - i;
}

size_t gw_conn_reply(struct gw_conn *c, int status, const char *reason,
                     const struct gw_header *hdrs, size_t nhdrs, struct evbuffer *body, bool close)
{
    if (c->st == ST_DEAD) {
        conn_free(c);
        return 0;
    }
    close = close || c->rq->head.wants_close || c->rq->rejected || c->set->draining ||
            cfg(c)->limits.keepalive_timeout_ms == 0;
    bool head_only = c->rq->head.method && strcmp(c->rq->head.method, "HEAD") == 0;
    size_t blen = body ? evbuffer_get_length(body) : 0;
    struct evbuffer *out = c->out;
    /* the head in one buffer, without printf: this runs for every reply */
    char head[2048];
    size_t n = 0;
    bool fits = true;
#define HEAD_ADD(p, l)                                                                             \
    do {                                                                                           \
        size_t l_ = (l);                                                                           \
        if (fits && n + l_ <= sizeof head) {                                                       \
            memcpy(head + n, (p), l_);                                                             \
            n += l_;                                                                               \
        } else {                                                                                   \
            fits = false;                                                                          \
        }                                                                                          \
    } while (0)
#define HEAD_STR(str) HEAD_ADD((str), strlen(str))
    char num[24];
    HEAD_STR("HTTP/1.1 ");
    HEAD_ADD(num, fmt_uint(num, (unsigned long long)(status > 0 ? status : 0)));
    HEAD_STR(" ");
    HEAD_STR(reason);
    HEAD_STR("\r\nDate: ");
    HEAD_STR(http_date());
    HEAD_STR("\r\n");
    for (size_t i = 0; i < nhdrs; i++) {
        HEAD_STR(hdrs[i].name);
        HEAD_STR(": ");
        HEAD_STR(hdrs[i].value);
        HEAD_STR("\r\n");
    }
    HEAD_STR("Content-Length: ");
    HEAD_ADD(num, fmt_uint(num, blen));
    HEAD_STR(close ? "\r\nConnection: close\r\n\r\n" : "\r\n\r\n");
#undef HEAD_STR
#undef HEAD_ADD
    if (fits) {
        evbuffer_add(out, head, n);
    } else { /* an unusually long head (long header values): the general way */
        evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, reason, http_date());
        for (size_t i = 0; i < nhdrs; i++)
            evbuffer_add_printf(out, "%s: %s\r\n", hdrs[i].name, hdrs[i].value);
        evbuffer_add_printf(out, "Content-Length: %zu\r\n%s\r\n", blen,
                            close ? "Connection: close\r\n" : "");
    }
    if (blen && !head_only)
        evbuffer_add_buffer(out, body);
    /* written in this loop pass, up to RECORD_MAX bytes per record: head and body together
     * cost one record, one system call and one segment */
    event_active(&c->wr, EV_WRITE, 0);
    reset_request(c);
    /* The client has body_timeout_ms to take the reply; the keep-alive deadline starts once
     * it is out (sent()). */
    arm(c, cfg(c)->limits.body_timeout_ms);
    if (close) {
        c->st = ST_CLOSING;
        update_read(c);
        return blen;
    }
    c->st = ST_IDLE;
    c->served_one = true;
    update_read(c);
    if (!c->in_read && evbuffer_get_length(c->in) > 0)
        kick(c);
    return blen;
}

struct gw_conns *gw_conns_new(struct event_base *base, int id, gw_conn_handler handle,
                              void (*count)(void *arg, size_t n), void *arg)
{
    struct gw_conns *set = calloc(1, sizeof *set);
    if (set == NULL)
        return NULL;
    set->base = base;
    set->id = id;
    set->handle = handle;
    set->count = count;
    set->arg = arg;
    return set;
}

void gw_conns_use(struct gw_conns *set, struct gw_snapshot *snap)
{
    set->snap = snap;
}

size_t gw_conns_count(const struct gw_conns *set)
{
    return set->n;
}

void gw_conns_drain(struct gw_conns *set)
{
    set->draining = true;
    struct gw_conn *c = set->head, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->st != ST_IDLE)
            continue;
        if (evbuffer_get_length(c->out) == 0) {
            conn_free(c);
        } else { /* a reply is still leaving: close once it has (sent()) */
            c->st = ST_CLOSING;
            update_read(c);
        }
    }
}

void gw_conns_free(struct gw_conns *set)
{
    if (set == NULL)
        return;
    struct gw_conn *c = set->head;
    while (c) {
        struct gw_conn *next = c->next;
        conn_free(c);
        c = next;
    }
    free(set);
}
