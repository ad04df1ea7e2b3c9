#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"
#include "snapshot.h"
#include "tls.h"

#define MAX_HEAD_BYTES (32u << 10) /* status line and headers */
#define MAX_HEADER_LINES 100
#define MAX_CHUNK_LINE 1024 /* a chunk-size line */
#define MAX_TRAILER_BYTES (8u << 10)
#define MAX_BODY_BYTES (16u << 20)
#define IDLE_TIMEOUT_MS 30000 /* below common keep-alive timeouts of TLS front ends */

enum parse_state {
    RP_STATUS,
    RP_HEADERS,
    RP_BODY_LEN, /* Content-Length bytes left */
    RP_CHUNK_SIZE,
    RP_CHUNK_DATA,
    RP_CHUNK_END, /* CRLF after chunk data */
    RP_TRAILERS,
    RP_DONE,
};

struct up_conn {
    struct gw_upstream_pool *pool;
    struct up_conn *next, *prev; /* in the pool's list of all connections */
    struct bufferevent *bev;
    struct event *idle_timer;
    bool connected, idle, reused, keepalive;
    unsigned long generation; /* of the snapshot it was opened under: not reused under another */
    struct gw_upstream_call *call;
    enum parse_state ps;
    uint64_t left;
    size_t head_bytes, trailer_bytes, header_lines;
    bool got_bytes; /* any byte of the answer arrived */
    /* framing headers, seen whether or not the header is kept for the caller */
    int n_cl, n_te;
    uint64_t cl;
    bool te_chunked, cl_ok, conn_close;
};

struct gw_upstream_call {
    struct gw_upstream_pool *pool;
    struct gw_snapshot *snap; /* the request's (a reference): its upstream, CA and deadlines */
    struct gw_upstream_call *next, *prev;
    char *req;
    size_t len;
    bool retryable;
    int attempts;
    gw_upstream_cb cb;
    void *arg;
    struct up_conn *conn;
    struct event *deadline;
    struct event *fail_soon; /* delivers a failure found inside gw_upstream_send */
    bool connecting;
    double t0; /* gw_mono_ms() at send */
    struct gw_upstream_result res;
    char *hstore[GW_UPSTREAM_MAX_HEADERS * 2];
};

struct gw_upstream_pool {
    struct event_base *base;
    struct evdns_base *dns;
    const struct gw_snapshot *snap; /* borrowed: the snapshot connections are pooled under */
    bool draining;
    struct up_conn *conns;
    struct gw_upstream_call *calls;
    size_t nidle;
};

static void conn_free(struct up_conn *c);
static void start_attempt(struct gw_upstream_call *call);

static const struct gw_config *cfg_of(const struct gw_upstream_pool *p)
{
    return p->snap->cfg;
}

static void call_reset_headers(struct gw_upstream_call *call)
{
    for (size_t i = 0; i < (size_t)GW_UPSTREAM_MAX_HEADERS * 2; i++) {
        free(call->hstore[i]);
        call->hstore[i] = NULL;
    }
    call->res.nheaders = 0;
    call->res.status = 0;
    if (call->res.body)
        evbuffer_drain(call->res.body, evbuffer_get_length(call->res.body));
}

static void call_free(struct gw_upstream_call *call)
{
    struct gw_upstream_pool *p = call->pool;
    if (call->prev)
        call->prev->next = call->next;
    else
        p->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call_reset_headers(call);
    if (call->res.body)
        evbuffer_free(call->res.body);
    event_free(call->deadline);
    event_free(call->fail_soon);
    OPENSSL_clear_free(call->req, call->len); /* it holds the credential */
    gw_snapshot_unref(call->snap);
    free(call);
}

/* Ends the call: the callback runs once, then the call is freed. */
static void finish(struct gw_upstream_call *call)
{
    call->res.ms = gw_mono_ms() - call->t0;
    if (call->conn) {
        call->conn->call = NULL;
        call->conn = NULL;
    }
    event_del(call->deadline);
    call->cb(&call->res, call->arg);
    call_free(call);
}

static void fail(struct gw_upstream_call *call, enum gw_upstream_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct gw_upstream_call *call, enum gw_upstream_error e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->res.why, sizeof call->res.why, fmt, ap);
    va_end(ap);
    call->res.err = e;
    call->res.status = 0;
    struct up_conn *c = call->conn;
    call->conn = NULL;
    if (c) {
        c->call = NULL;
        conn_free(c); /* a connection that failed a call is never reused */
    }
    finish(call);
}

/* A connect failure, or a reused connection that closed before answering: a retryable call
 * gets one more attempt on a fresh connection. */
static void connect_failed(struct gw_upstream_call *call, enum gw_upstream_error e, const char *why)
{
    if (call->retryable && call->attempts < 2) {
        struct up_conn *c = call->conn;
        call->conn = NULL;
        if (c) {
            c->call = NULL;
            conn_free(c);
        }
        gw_log_info("upstream: %s; retrying once on a new connection", why);
        start_attempt(call);
        return;
    }
    fail(call, e, "%s", why);
}

static void reset_parser(struct up_conn *c)
{
    c->ps = RP_STATUS;
    c->left = 0;
    c->head_bytes = c->trailer_bytes = c->header_lines = 0;
    c->got_bytes = false;
    c->n_cl = c->n_te = 0;
    c->cl = 0;
    c->te_chunked = c->cl_ok = c->conn_close = false;
}

static void idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_free(arg);
}

static void make_idle(struct up_conn *c)
{
    struct gw_upstream_pool *p = c->pool;
    /* an answer that came before the whole request was sent leaves request bytes queued: the
     * next request would follow them on the wire */
    if (!c->keepalive || p->draining || c->generation != p->snap->generation ||
        p->nidle >= (size_t)cfg_of(p)->upstream.max_idle_connections ||
        evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
        conn_free(c);
        return;
    }
    c->idle = true;
    c->reused = true;
    reset_parser(c);
    p->nidle++;
    struct timeval tv = {IDLE_TIMEOUT_MS / 1000, IDLE_TIMEOUT_MS % 1000 * 1000L};
    evtimer_add(c->idle_timer, &tv);
    /* reading stays on: the server closing the connection is noticed while it is idle */
}

static void take_idle(struct up_conn *c)
{
    c->idle = false;
    c->pool->nidle--;
    evtimer_del(c->idle_timer);
}

/* Only these many digits: 16 hex digits already exceed any body the gateway accepts. */
static bool parse_decimal(const char *s, uint64_t *out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 15 || s[n] != '\0')
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (uint64_t)(s[i] - '0');
    *out = v;
    return true;
}

/* One header line of the answer. Framing headers are always examined; the first
 * GW_UPSTREAM_MAX_HEADERS are kept for the caller. Returns -1 on a malformed line. */
static int add_header(struct up_conn *c, struct gw_upstream_call *call, const char *line)
{
    const char *colon = strchr(line, ':');
    if (colon == NULL || colon == line)
        return -1;
    for (const char *p = line; p < colon; p++)
        if (*p == ' ' || *p == '\t' || (unsigned char)*p < 0x21 || (unsigned char)*p > 0x7E)
            return -1;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vl = strlen(v);
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    for (size_t i = 0; i < vl; i++)
        if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7F)
            return -1;
    char *n = strndup(line, (size_t)(colon - line));
    char *val = strndup(v, vl);
    if (n == NULL || val == NULL) {
        free(n);
        free(val);
        return -1;
    }
    if (strcasecmp(n, "Content-Length") == 0) {
        c->n_cl++;
        c->cl_ok = parse_decimal(val, &c->cl);
    } else if (strcasecmp(n, "Transfer-Encoding") == 0) {
        c->n_te++;
        c->te_chunked = strcasecmp(val, "chunked") == 0;
    } else if (strcasecmp(n, "Connection") == 0) {
        c->conn_close |= strcasestr(val, "close") != NULL;
    }
    size_t i = call->res.nheaders;
    if (i == GW_UPSTREAM_MAX_HEADERS) {
        free(n); /* past what is kept; the gateway passes back only a few headers anyway */
        free(val);
        return 0;
    }
    call->hstore[2 * i] = n;
    call->hstore[2 * i + 1] = val;
    call->res.hname[i] = n;
    call->res.hvalue[i] = val;
    call->res.nheaders++;
    return 0;
}

/* After the head: how is the body delimited? Only Content-Length and chunked are accepted:
 * with OpenSSL's SSL_OP_IGNORE_UNEXPECTED_EOF a close-delimited body could be cut short by a
 * forged FIN and look complete. Returns -1 (why set) when the head is unusable. */
static int body_framing(struct up_conn *c, struct gw_upstream_call *call, bool http10,
                        const char **why)
{
    c->keepalive = !http10 && !c->conn_close;
    int st = call->res.status;
    if (c->n_te && c->n_cl) {
        *why = "ambiguous upstream framing (Transfer-Encoding and Content-Length)";
        return -1;
    }
    if (c->n_te) {
        if (c->n_te > 1 || !c->te_chunked) {
            *why = "unsupported upstream Transfer-Encoding";
            return -1;
        }
        c->ps = RP_CHUNK_SIZE;
        return 0;
    }
    if (st == 204 || st == 304) {
        c->ps = RP_DONE;
        return 0;
    }
    if (c->n_cl != 1 || !c->cl_ok || c->cl > MAX_BODY_BYTES) {
        *why = c->n_cl == 0  ? "upstream answer has neither Content-Length nor chunked framing"
               : c->n_cl > 1 ? "ambiguous upstream framing (several Content-Length)"
                             : "invalid or oversized upstream Content-Length";
        return -1;
    }
    c->left = c->cl;
    c->ps = c->cl ? RP_BODY_LEN : RP_DONE;
    return 0;
}

/* A chunk-size line: 1 to 16 hex digits, optionally ";extensions". */
static bool parse_chunk_size(const char *line, uint64_t *out)
{
    size_t n = strspn(line, "0123456789abcdefABCDEF");
    if (n == 0 || n > 16 || (line[n] != '\0' && line[n] != ';'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = line[i];
        v = (v << 4) | (uint64_t)(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
    }
    *out = v;
    return true;
}

/* How many bytes a line of the current state may have, including its CRLF. */
static size_t line_room(const struct up_conn *c)
{
    switch (c->ps) {
    case RP_STATUS:
    case RP_HEADERS:
        return MAX_HEAD_BYTES - c->head_bytes;
    case RP_TRAILERS:
        return MAX_TRAILER_BYTES - c->trailer_bytes;
    default:
        return MAX_CHUNK_LINE;
    }
}

/* Runs the response parser over what has arrived. Returns 1 when the answer is complete,
 * 0 when more is needed, -1 on a protocol error (why filled). */
static int parse(struct up_conn *c, struct gw_upstream_call *call, struct evbuffer *in, char *why,
                 size_t whylen)
{
    const char *err = NULL;
    for (;;) {
        switch (c->ps) {
        case RP_STATUS:
        case RP_HEADERS:
        case RP_CHUNK_SIZE:
        case RP_CHUNK_END:
        case RP_TRAILERS: {
            size_t room = line_room(c);
            struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_CRLF_STRICT);
            if (eol.pos < 0) {
                if (evbuffer_get_length(in) >= room) {
                    snprintf(why, whylen, "upstream answer line too long");
                    return -1;
                }
                return 0;
            }
            if ((size_t)eol.pos + 2 > room) {
                snprintf(why, whylen, "upstream answer line too long");
                return -1;
            }
            size_t n;
            char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
            if (line == NULL || strlen(line) != n) {
                free(line);
                snprintf(why, whylen, "malformed upstream answer (NUL in a line)");
                return -1;
            }
            if (c->ps == RP_STATUS || c->ps == RP_HEADERS)
                c->head_bytes += n + 2;
            else if (c->ps == RP_TRAILERS)
                c->trailer_bytes += n + 2;
            if (c->ps == RP_STATUS) {
                int st = 0;
                bool ok = n >= 12 && (strncmp(line, "HTTP/1.1 ", 9) == 0 ||
                                      strncmp(line, "HTTP/1.0 ", 9) == 0);
                for (int i = 9; ok && i < 12; i++) {
                    ok = line[i] >= '0' && line[i] <= '9';
                    st = st * 10 + (line[i] - '0');
                }
                ok = ok && (n == 12 || line[12] == ' ') && st >= 100 && st <= 599;
                if (!ok) {
                    err = "malformed upstream status line";
                } else {
                    call->res.status = st;
                    c->keepalive = line[7] == '1';
                    c->ps = RP_HEADERS;
                }
            } else if (c->ps == RP_HEADERS) {
                if (n == 0) {
                    int st = call->res.status;
                    if (st >= 100 && st < 200) { /* interim answer: the real one follows */
                        bool http11 = c->keepalive;
                        call_reset_headers(call);
                        reset_parser(c);
                        c->keepalive = http11;
                    } else if (body_framing(c, call, c->keepalive == false, &err) == 0) {
                        c->head_bytes = 0;
                    }
                } else if (++c->header_lines > MAX_HEADER_LINES) {
                    err = "too many upstream header lines";
                } else if (add_header(c, call, line) != 0) {
                    err = "malformed upstream header";
                }
            } else if (c->ps == RP_CHUNK_SIZE) {
                uint64_t sz;
                size_t have = evbuffer_get_length(call->res.body);
                if (!parse_chunk_size(line, &sz) || sz > MAX_BODY_BYTES - have) {
                    err = "malformed or oversized upstream chunk";
                } else if (sz == 0) {
                    c->ps = RP_TRAILERS;
                } else {
                    c->left = sz;
                    c->ps = RP_CHUNK_DATA;
                }
            } else if (c->ps == RP_CHUNK_END) {
                if (n != 0)
                    err = "malformed upstream chunk";
                c->ps = RP_CHUNK_SIZE;
            } else if (n == 0) { /* trailers are read and dropped */
                c->ps = RP_DONE;
            }
            free(line);
            if (err) {
                snprintf(why, whylen, "%s", err);
                return -1;
            }
            break;
        }
        case RP_BODY_LEN:
        case RP_CHUNK_DATA: {
            size_t have = evbuffer_get_length(in);
            if (have == 0)
                return 0;
            size_t take = have < c->left ? have : (size_t)c->left;
            evbuffer_remove_buffer(in, call->res.body, take);
            c->left -= take;
            if (c->left == 0)
                c->ps = c->ps == RP_BODY_LEN ? RP_DONE : RP_CHUNK_END;
            break;
        }
        case RP_DONE:
            return 1;
        }
    }
}

/* libevent 2.1's TLS bufferevent reads while SSL_pending() says a record's bytes are left, so
 * whole records that read-ahead buffered behind the first would wait for the next socket
 * event, which may never come: take them here. (The callback is deferred, so the bufferevent
 * is not inside an SSL call; a WANT_READ leaves the rest to the socket's next event.) */
static void take_buffered(struct bufferevent *bev, struct evbuffer *in)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    unsigned char buf[4096];
    while (ssl && SSL_has_pending(ssl)) {
        ERR_clear_error();
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r <= 0 || evbuffer_add(in, buf, (size_t)r) != 0)
            break;
    }
}

/* A request that fits one TLS record goes out at once: SSL_write on the connection's SSL
 * when nothing is queued in the bufferevent. Through bufferevent_write it waits for a write
 * event: two epoll_ctl calls and a loop pass per request. When SSL_write cannot finish now
 * (WANT_WRITE/WANT_READ) or fails, the bufferevent takes the same bytes: libevent 2.1 retries
 * them in one SSL_write of the same length (into an empty evbuffer they go as one chain of at
 * most 16 KB, and its per-write maximum is 16 KB: no rate limit or smaller single-write cap
 * may be set on these bufferevents, or the retry would be shorter and OpenSSL would refuse
 * it), from its own buffer, which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows (libevent sets
 * it too); an error shows there as the connection's error event. */
#define DIRECT_WRITE_MAX 16384
static void send_request(struct up_conn *c, struct gw_upstream_call *call)
{
    call->res.sent = true; /* from here bytes may leave, even when SSL_write reports WANT_* */
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl && call->len > 0 && call->len <= DIRECT_WRITE_MAX &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        ERR_clear_error();
        int r = SSL_write(ssl, call->req, (int)call->len);
        if (r > 0) { /* all of it (a part only in partial-write mode, not set here) */
            if ((size_t)r < call->len)
                bufferevent_write(c->bev, call->req + r, call->len - (size_t)r);
            return;
        }
        ERR_clear_error();
    }
    bufferevent_write(c->bev, call->req, call->len);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct up_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    take_buffered(bev, in);
    struct gw_upstream_call *call = c->call;
    if (call == NULL) {
        /* bytes on an idle connection: nothing is pending, so the connection is unusable */
        if (c->idle)
            take_idle(c);
        conn_free(c);
        return;
    }
    if (evbuffer_get_length(in) > 0)
        c->got_bytes = true;
    char why[128];
    int rc = parse(c, call, in, why, sizeof why);
    if (rc < 0) {
        fail(call, GW_UP_PROTOCOL, "%s", why);
        return;
    }
    if (rc == 0)
        return;
    bool leftover = evbuffer_get_length(in) > 0; /* bytes past the answer: not reusable */
    if (leftover)
        c->keepalive = false;
    c->call = NULL;
    call->conn = NULL;
    call->res.err = GW_UP_OK;
    make_idle(c);
    finish(call);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct up_conn *c = arg;
    struct gw_upstream_call *call = c->call;
    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        /* requests go out as soon as they are complete: no Nagle delay behind a delayed ACK */
        int one = 1;
        (void)setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (call == NULL) {
            conn_free(c);
            return;
        }
        call->connecting = false;
        event_del(call->deadline);
        long ms = call->snap->cfg->upstream.timeout_ms;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(call->deadline, &tv);
        call->res.sent = true; /* queued on a connected connection: it goes out when it can */
        bufferevent_write(c->bev, call->req, call->len);
        return;
    }
    if (call == NULL) { /* an idle connection closed or failed */
        if (c->idle)
            take_idle(c);
        conn_free(c);
        return;
    }
    char why[192];
    if (!c->connected) {
        int dns = bufferevent_socket_get_dns_error(c->bev);
        int sock = EVUTIL_SOCKET_ERROR();
        /* libevent also queues the bare SSL_get_error() code (library 0): skip those */
        unsigned long e, first = 0;
        while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
            if (first == 0 && ERR_GET_LIB(e) != 0)
                first = e;
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        if (dns) {
            snprintf(why, sizeof why, "cannot resolve upstream host: %s", evutil_gai_strerror(dns));
            connect_failed(call, GW_UP_CONNECT, why);
        } else if (vr != X509_V_OK) {
            fail(call, GW_UP_TLS, "upstream TLS failure: certificate not accepted (%s)",
                 X509_verify_cert_error_string(vr));
        } else if (first) {
            char es[128];
            ERR_error_string_n(first, es, sizeof es);
            fail(call, GW_UP_TLS, "upstream TLS failure: %s", es);
        } else {
            snprintf(why, sizeof why, "cannot connect to upstream: %s",
                     sock ? evutil_socket_error_to_string(sock) : "connection closed");
            connect_failed(call, GW_UP_CONNECT, why);
        }
        return;
    }
    /* connected: the answer did not complete */
    if (c->reused && !c->got_bytes) {
        connect_failed(call, GW_UP_CONNECT, "upstream closed a kept-alive connection");
        return;
    }
    fail(call, GW_UP_PROTOCOL, "upstream closed the connection before the answer was complete");
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_upstream_call *call = arg;
    if (call->connecting) {
        char why[96];
        snprintf(why, sizeof why, "cannot connect to upstream: no connection within %ld ms",
                 call->snap->cfg->upstream.connect_timeout_ms);
        connect_failed(call, GW_UP_CONNECT, why);
        return;
    }
    fail(call, GW_UP_TIMEOUT, "no upstream answer within %ld ms",
         call->snap->cfg->upstream.timeout_ms);
}

static void on_fail_soon(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fail(arg, GW_UP_CONNECT, "cannot open an upstream connection");
}

/* A connection opened under snap: its host, CA and client context; pooled only while snap is
 * the worker's current one. */
static struct up_conn *conn_new(struct gw_upstream_pool *p, const struct gw_snapshot *snap)
{
    const struct gw_config *cfg = snap->cfg;
    struct up_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->generation = snap->generation;
    SSL *ssl = SSL_new(snap->upstream_ctx);
    if (ssl == NULL || gw_tls_client_prepare(ssl, cfg->upstream.host) != 0) {
        SSL_free(ssl);
        free(c);
        return NULL;
    }
    /* one read(2) per segment, not a record header then its body; on_read takes the records
     * read ahead that the TLS bufferevent does not look for (take_buffered) */
    SSL_set_read_ahead(ssl, 1);
    c->bev = bufferevent_openssl_socket_new(p->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    c->idle_timer = evtimer_new(p->base, idle_timeout, c);
    if (c->bev == NULL || c->idle_timer == NULL) {
        /* a failed bufferevent_openssl_socket_new may already have freed the SSL */
        if (c->bev)
            bufferevent_free(c->bev);
        if (c->idle_timer)
            event_free(c->idle_timer);
        free(c);
        return NULL;
    }
    c->pool = p;
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    if (bufferevent_socket_connect_hostname(c->bev, p->dns, AF_UNSPEC, cfg->upstream.host,
                                            (int)cfg->upstream.port) != 0) {
        /* the error event is delivered (deferred) by libevent */
    }
    return c;
}

static void conn_free(struct up_conn *c)
{
    struct gw_upstream_pool *p = c->pool;
    if (c->idle) {
        c->idle = false;
        p->nidle--;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->idle_timer);
    bufferevent_free(c->bev);
    free(c);
}

static struct up_conn *pick_idle(struct gw_upstream_pool *p, unsigned long generation)
{
    /* Newest idle connection first: it is the least likely to have been closed. Only one
     * opened under the call's own snapshot: a request that started before a reload must not
     * take its credential to the new upstream, nor a new request to the old one. */
    for (struct up_conn *c = p->conns; c; c = c->next)
        if (c->idle && c->generation == generation)
            return c;
    return NULL;
}

static void start_attempt(struct gw_upstream_call *call)
{
    struct gw_upstream_pool *p = call->pool;
    const struct gw_config *cfg = call->snap->cfg;
    call->attempts++;
    call_reset_headers(call);
    struct up_conn *c = call->attempts == 1 ? pick_idle(p, call->snap->generation) : NULL;
    if (c) {
        take_idle(c);
        /* move to the front: the list is kept newest-used first */
        if (c->prev) {
            c->prev->next = c->next;
            if (c->next)
                c->next->prev = c->prev;
            c->prev = NULL;
            c->next = p->conns;
            p->conns->prev = c;
            p->conns = c;
        }
        c->call = call;
        call->conn = c;
        call->connecting = false;
        long ms = cfg->upstream.timeout_ms;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(call->deadline, &tv);
        send_request(c, call);
        return;
    }
    c = conn_new(p, call->snap);
    if (c == NULL) {
        event_active(call->fail_soon, EV_TIMEOUT, 0);
        return;
    }
    c->call = call;
    call->conn = c;
    call->connecting = true;
    long ms = cfg->upstream.connect_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(call->deadline, &tv);
}

struct gw_upstream_call *gw_upstream_send(struct gw_upstream_pool *p, struct gw_snapshot *snap,
                                          const char *request, size_t len, bool retryable,
                                          gw_upstream_cb cb, void *arg)
{
    struct gw_upstream_call *call = calloc(1, sizeof *call);
    if (call == NULL)
        return NULL;
    call->pool = p;
    call->snap = gw_snapshot_ref(snap);
    call->req = OPENSSL_malloc(len);
    call->res.body = evbuffer_new();
    call->deadline = evtimer_new(p->base, on_deadline, call);
    call->fail_soon = event_new(p->base, -1, 0, on_fail_soon, call);
    if (call->req == NULL || call->res.body == NULL || call->deadline == NULL ||
        call->fail_soon == NULL) {
        OPENSSL_free(call->req);
        if (call->res.body)
            evbuffer_free(call->res.body);
        if (call->deadline)
            event_free(call->deadline);
        if (call->fail_soon)
            event_free(call->fail_soon);
        gw_snapshot_unref(call->snap);
        free(call);
        return NULL;
    }
    memcpy(call->req, request, len);
    call->len = len;
    call->retryable = retryable;
    call->cb = cb;
    call->arg = arg;
    call->t0 = gw_mono_ms();
    call->next = p->calls;
    if (p->calls)
        p->calls->prev = call;
    p->calls = call;
    start_attempt(call);
    return call;
}

struct gw_upstream_pool *gw_upstream_pool_new(struct event_base *base, struct evdns_base *dns)
{
    struct gw_upstream_pool *p = calloc(1, sizeof *p);
    if (p) {
        p->base = base;
        p->dns = dns;
    }
    return p;
}

static void close_idle(struct gw_upstream_pool *p)
{
    struct up_conn *c = p->conns;
    while (c) {
        struct up_conn *next = c->next;
        if (c->idle)
            conn_free(c);
        c = next;
    }
}

void gw_upstream_pool_use(struct gw_upstream_pool *p, const struct gw_snapshot *snap)
{
    bool changed = p->snap != NULL && p->snap != snap;
    p->snap = snap;
    if (changed) /* the upstream, its CA or the credentials may have changed */
        close_idle(p);
}

void gw_upstream_pool_drain(struct gw_upstream_pool *p)
{
    p->draining = true;
    close_idle(p);
}

void gw_upstream_pool_free(struct gw_upstream_pool *p)
{
    if (p == NULL)
        return;
    while (p->calls)
        fail(p->calls, GW_UP_SHUTDOWN, "the gateway is shutting down");
    struct up_conn *c = p->conns;
    while (c) {
        struct up_conn *next = c->next;
        conn_free(c);
        c = next;
    }
    free(p);
}

size_t gw_upstream_idle(const struct gw_upstream_pool *p)
{
    return p->nidle;
}
