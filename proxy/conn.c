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
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h> /* struct event embedded in a connection (ABI of libevent 2.1) */
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "log.h"
#include "snapshot.h"
#include "worker.h"

#define REPLY_COALESCE_MAX 16384 /* one TLS record's worth of plaintext */
#define WRITE_TIMEOUT_S 30       /* backstop: no byte of a reply accepted for this long */
#define OUT_CAP (64u << 10)      /* replies queued past this: read no further request until sent */

enum conn_state {
    ST_IDLE,    /* no byte of the next request yet (or the TLS handshake) */
    ST_HEAD,    /* reading a request head */
    ST_BODY,    /* reading body_left more bytes */
    ST_BUSY,    /* the handler has the request */
    ST_CLOSING, /* last reply queued: close once it has left */
    ST_DEAD,    /* socket closed while the handler had the request */
};

struct gw_conn {
    struct gw_worker *w;
    struct gw_conn *next, *prev;
    struct bufferevent *bev;
    SSL *ssl;
    struct event timer; /* the current deadline (assigned in place: no allocation) */
    struct event *kick; /* deferred: read what was pipelined after an asynchronous reply;
                           made on first use (few connections pipeline) */
    enum conn_state st;
    bool served_one; /* keep-alive: later heads get their deadline from their first byte */
    bool in_read;    /* inside on_read: replies there need no kick */
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
    return c->w->snap->cfg;
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

static void conn_free(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    event_del(&c->timer);
    if (c->kick)
        event_free(c->kick);
    if (c->bev)
        bufferevent_free(c->bev);
    reset_request(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    atomic_store_explicit(&w->m.connections, w->nconns, memory_order_relaxed);
    if (w->listener_paused && !w->draining &&
        w->nconns < (size_t)w->snap->cfg->limits.max_connections) {
        evconnlistener_enable(w->listener);
        w->listener_paused = false;
    }
    free(c);
    gw_worker_maybe_exit(w);
}

/* The peer is gone or must be cut off. A request with the handler stays until its reply. */
static void conn_drop(struct gw_conn *c)
{
    if (c->st == ST_BUSY) {
        bufferevent_free(c->bev);
        c->bev = NULL;
        c->ssl = NULL; /* freed with the bufferevent */
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

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct gw_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return; /* TLS handshake done */
    conn_drop(c);
}

/* Between requests a connection holds no TLS record buffers: SSL_MODE_RELEASE_BUFFERS frees
 * them when a record is consumed, but the TLS bufferevent reads once more (to an empty socket)
 * and that read sets up a fresh 16 KB buffer again. SSL_free_buffers keeps anything pending. */
static void idle_buffers(struct gw_conn *c)
{
    (void)SSL_free_buffers(c->ssl);
}

static void process(struct gw_conn *c);

/* Everything queued has left. */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    if (c->st == ST_CLOSING) {
        /* say goodbye at the TLS level, then close: the output buffer is empty, so the
         * close_notify written directly cannot interleave with queued records */
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (ssl && SSL_is_init_finished(ssl))
            SSL_shutdown(ssl);
        conn_free(c);
        return;
    }
    if (c->st != ST_IDLE)
        return;
    arm(c, cfg(c)->limits.keepalive_timeout_ms); /* the reply is out: now the idle deadline */
    if (!c->paused && c->ssl && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
        idle_buffers(c);
    if (c->paused) {
        c->paused = false;
        bufferevent_enable(c->bev, EV_READ);
        process(c);
    }
}

static void dispatch(struct gw_conn *c)
{
    c->st = ST_BUSY;
    evtimer_del(&c->timer);
    c->w->handler(c, c->rq, c->w);
}

/* The request is refused: nothing more is read, and the handler answers it and closes. */
static void reject(struct gw_conn *c, const struct gw_http1_error *err)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_disable(c->bev, EV_READ);
    c->rq->rejected = true;
    c->rq->kind = err->kind;
    c->rq->why = err->why;
    dispatch(c);
}

/* Reads requests until one is handed to the handler or more bytes are needed. */
static void process(struct gw_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_read = true;
    for (;;) {
        if (c->st == ST_IDLE && evbuffer_get_length(bufferevent_get_output(c->bev)) > OUT_CAP) {
            /* a client that pipelines and does not read its replies: stop reading until
             * they have left (on_write resumes), so the output cannot grow without bound */
            c->paused = true;
            bufferevent_disable(c->bev, EV_READ);
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
                gw_log_error("worker %d: cannot read a request (out of memory)", c->w->id);
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
                bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
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
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct gw_conn *c = arg;
    if (c->st == ST_BUSY || c->st == ST_CLOSING)
        return; /* stays buffered; the read high-water mark stops reading */
    process(c);
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
    if (c->kick == NULL && (c->kick = event_new(c->w->base, -1, 0, on_kick, c)) == NULL) {
        gw_log_error("worker %d: cannot schedule a pipelined request (out of memory)", c->w->id);
        return; /* read again when more bytes arrive */
    }
    event_active(c->kick, EV_TIMEOUT, 0);
}

void gw_conn_accept(struct evconnlistener *l, int fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)salen;
    struct gw_worker *w = arg;
    const struct gw_config *cf = w->snap->cfg;
    /* A reply is written as it is ready, often in more than one TLS record: without this,
     * Nagle's algorithm holds the last segment back until the client's delayed ACK (40 ms). */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct gw_conn *c = calloc(1, sizeof *c);
    SSL *ssl = c ? SSL_new(w->snap->server_ctx) : NULL;
    if (ssl == NULL)
        goto fail;
    c->w = w;
    c->bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    /* Owned by the bufferevent from here, even when it failed: libevent 2.1's error path may
     * already have freed the SSL and closed the socket, and a second close could hit another
     * thread's new descriptor. */
    fd = -1;
    ssl = NULL;
    if (c->bev == NULL)
        goto fail;
    c->ssl = bufferevent_openssl_get_ssl(c->bev);
    evtimer_assign(&c->timer, w->base, on_timer, c);
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof c->peer);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    /* Reading pauses once a whole request plus a little is buffered: pipelined requests wait
     * for the reply to the one before them without growing the buffer. */
    bufferevent_setwatermark(c->bev, EV_READ, 0,
                             (size_t)(cf->limits.max_header_bytes + cf->limits.max_body_bytes) +
                                 4096);
    struct timeval wt = {WRITE_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->st = ST_IDLE;
    c->accepted_ms = gw_now_ms();
    c->accepted_mono = gw_mono_ms();
    arm(c, cf->limits.header_timeout_ms); /* TLS handshake + first head */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    atomic_store_explicit(&w->m.connections, w->nconns, memory_order_relaxed);
    if (w->nconns >= (size_t)cf->limits.max_connections && !w->listener_paused) {
        evconnlistener_disable(w->listener);
        w->listener_paused = true;
    }
    return;
fail:
    gw_log_error("worker %d: cannot set up a connection (out of memory)", w->id);
    if (c) {
        if (c->bev)
            bufferevent_free(c->bev);
        free(c);
    }
    SSL_free(ssl);
    if (fd >= 0)
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
    close = close || c->rq->head.wants_close || c->rq->rejected || c->w->draining ||
            cfg(c)->limits.keepalive_timeout_ms == 0;
    bool head_only = c->rq->head.method && strcmp(c->rq->head.method, "HEAD") == 0;
    size_t blen = body ? evbuffer_get_length(body) : 0;
    struct evbuffer *out = bufferevent_get_output(c->bev);
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
    /* One contiguous chunk: the TLS layer writes each chunk as its own record (and write(2)),
     * so head and body together cost one record, one system call and one segment. */
    if (evbuffer_get_length(out) <= REPLY_COALESCE_MAX)
        evbuffer_pullup(out, -1);
    reset_request(c);
    /* The client has body_timeout_ms to take the reply; the keep-alive deadline starts once
     * it is out (on_write). */
    arm(c, cfg(c)->limits.body_timeout_ms);
    if (close) {
        c->st = ST_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
        return blen;
    }
    c->st = ST_IDLE;
    c->served_one = true;
    if (!c->in_read && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        kick(c);
    return blen;
}

void gw_conn_close_idle(struct gw_worker *w)
{
    struct gw_conn *c = w->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->st != ST_IDLE)
            continue;
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            conn_free(c);
        } else { /* a reply is still leaving: close once it has (on_write) */
            c->st = ST_CLOSING;
            bufferevent_disable(c->bev, EV_READ);
        }
    }
}

void gw_conn_free_all(struct gw_worker *w)
{
    while (w->conns)
        conn_free(w->conns);
}
