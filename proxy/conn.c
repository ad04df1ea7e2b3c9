#include "conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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
#include <event2/listener.h>

#include "log.h"
#include "snapshot.h"
#include "worker.h"

#define MAX_METHOD 24
#define WRITE_TIMEOUT_S 30 /* a client that stops reading its reply */

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
    struct event *timer; /* the current deadline */
    struct event *kick;  /* deferred: read what was pipelined after an asynchronous reply */
    enum conn_state st;
    bool served_one;     /* keep-alive: later heads get their deadline from their first byte */
    bool in_read;        /* inside on_read: replies there need no kick */
    size_t scanned;      /* bytes of the current head already checked */
    uint64_t body_left;
    char peer[INET6_ADDRSTRLEN];
    struct gw_http_req rq;
    char *head;          /* the current head, split in place into rq's strings */
    char why[128];
    char method[MAX_METHOD];
    char target[256];    /* echo of a refused request's target, for its 404 message */
};

static const struct gw_config *cfg(const struct gw_conn *c)
{
    return c->w->snap->cfg;
}

static void arm(struct gw_conn *c, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void reset_request(struct gw_conn *c)
{
    if (c->rq.body)
        evbuffer_drain(c->rq.body, evbuffer_get_length(c->rq.body));
    struct evbuffer *keep = c->rq.body;
    memset(&c->rq, 0, sizeof c->rq);
    c->rq.body = keep;
    free(c->head);
    c->head = NULL;
    c->scanned = 0;
    c->body_left = 0;
    c->why[0] = '\0';
}

static void conn_free(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    event_free(c->timer);
    event_free(c->kick);
    if (c->bev)
        bufferevent_free(c->bev);
    reset_request(c);
    if (c->rq.body)
        evbuffer_free(c->rq.body);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
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
        evtimer_del(c->timer);
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
    if (c->st == ST_IDLE || c->st == ST_HEAD || c->st == ST_BODY)
        conn_free(c); /* deadline passed: close without a reply (there is no complete request) */
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct gw_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return; /* TLS handshake done */
    conn_drop(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    if (c->st != ST_CLOSING)
        return;
    /* Everything has left: say goodbye at the TLS level, then close. The output buffer is
     * empty, so the close_notify written directly cannot interleave with queued records. */
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl && SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    conn_free(c);
}

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static void dispatch(struct gw_conn *c)
{
    c->st = ST_BUSY;
    evtimer_del(c->timer);
    c->w->handler(c, &c->rq, c->w);
}

static void reject(struct gw_conn *c, enum gw_reply_kind kind, const char *why)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_disable(c->bev, EV_READ);
    snprintf(c->why, sizeof c->why, "%s", why ? why : "");
    c->rq.rejected = true;
    c->rq.kind = kind;
    c->rq.why = c->why;
    if (c->rq.method == NULL)
        c->rq.method = c->method;
    if (c->rq.target == NULL)
        c->rq.target = c->target;
    dispatch(c);
}

/* Does a comma-separated header value list the token? */
static bool has_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == n && strncasecmp(v, tok, n) == 0)
            return true;
        v = e;
    }
    return false;
}

/* Splits and checks a complete head (its bytes end with CRLFCRLF and hold no NUL, bare CR or
 * bare LF). Returns 0 with the request filled, or -1 after reject(). */
static int parse_head(struct gw_conn *c, size_t n, uint64_t *content_length)
{
    char *h = c->head;
    char *eol = strstr(h, "\r\n");
    *eol = '\0';
    char *sp1 = strchr(h, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == h || sp2 == sp1 + 1 || strchr(sp2 + 1, ' ')) {
        reject(c, GW_R_BAD_FRAMING, "malformed request line");
        return -1;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    snprintf(c->method, sizeof c->method, "%s", h);
    snprintf(c->target, sizeof c->target, "%s", sp1 + 1);
    size_t mlen = (size_t)(sp1 - h);
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar((unsigned char)h[i]) || mlen >= MAX_METHOD) {
            reject(c, GW_R_BAD_FRAMING, "malformed request line");
            return -1;
        }
    for (const char *p = sp1 + 1; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7E) {
            reject(c, GW_R_BAD_FRAMING, "invalid character in request target");
            return -1;
        }
    if (sp1[1] != '/') {
        reject(c, GW_R_BAD_FRAMING, "request target is not in origin form");
        return -1;
    }
    bool http11 = strcmp(sp2 + 1, "HTTP/1.1") == 0;
    bool http10 = strcmp(sp2 + 1, "HTTP/1.0") == 0;
    if (!http11 && !http10) {
        reject(c, GW_R_BAD_FRAMING, "unsupported HTTP version");
        return -1;
    }
    c->rq.method = h;
    c->rq.target = sp1 + 1;

    int n_cl = 0, n_host = 0, n_te = 0;
    bool expect_continue = false, keep_alive = false, close = false;
    uint64_t cl = 0;
    char *line = eol + 2, *end = h + n - 2; /* the final empty line */
    while (line < end) {
        char *le = strstr(line, "\r\n");
        *le = '\0';
        if (*line == ' ' || *line == '\t') {
            reject(c, GW_R_BAD_FRAMING, "folded header line");
            return -1;
        }
        char *colon = line;
        while (*colon && is_tchar((unsigned char)*colon))
            colon++;
        if (colon == line || *colon != ':') {
            reject(c, GW_R_BAD_FRAMING, "invalid header name");
            return -1;
        }
        *colon = '\0';
        char *v = colon + 1, *ve = le;
        while (*v == ' ' || *v == '\t')
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = '\0';
        for (const char *p = v; *p; p++) {
            unsigned char ch = (unsigned char)*p;
            if ((ch < 0x20 && ch != '\t') || ch == 0x7F) {
                reject(c, GW_R_BAD_FRAMING, "control character in a header value");
                return -1;
            }
        }
        if (c->rq.nhdr == GW_MAX_HEADERS) {
            reject(c, GW_R_HEADERS_TOO_LARGE, NULL);
            return -1;
        }
        c->rq.hdr[c->rq.nhdr].name = line;
        c->rq.hdr[c->rq.nhdr].value = v;
        c->rq.nhdr++;
        if (strcasecmp(line, "content-length") == 0) {
            n_cl++;
            size_t vl = strlen(v);
            if (vl == 0 || vl > 15 || strspn(v, "0123456789") != vl) {
                reject(c, GW_R_BAD_FRAMING, "invalid Content-Length");
                return -1;
            }
            cl = strtoull(v, NULL, 10);
        } else if (strcasecmp(line, "transfer-encoding") == 0) {
            n_te++;
        } else if (strcasecmp(line, "host") == 0) {
            n_host++;
        } else if (strcasecmp(line, "connection") == 0) {
            close |= has_token(v, "close");
            keep_alive |= has_token(v, "keep-alive");
        } else if (strcasecmp(line, "expect") == 0) {
            if (strcasecmp(v, "100-continue") != 0) {
                reject(c, GW_R_BAD_FRAMING, "unsupported Expect header");
                return -1;
            }
            expect_continue = true;
        }
        line = le + 2;
    }
    if (n_te) {
        reject(c, GW_R_BAD_FRAMING, "Transfer-Encoding is not accepted on requests");
        return -1;
    }
    if (n_cl > 1) {
        reject(c, GW_R_BAD_FRAMING, "more than one Content-Length");
        return -1;
    }
    if (n_host > 1 || (http11 && n_host == 0)) {
        reject(c, GW_R_BAD_FRAMING, n_host ? "more than one Host" : "missing Host");
        return -1;
    }
    if (cl > (uint64_t)cfg(c)->limits.max_body_bytes) {
        reject(c, GW_R_TOO_LARGE, NULL);
        return -1;
    }
    c->rq.wants_close = close || (http10 && !keep_alive);
    if (expect_continue && cl > 0 && http11 &&
        evbuffer_get_length(bufferevent_get_input(c->bev)) < cl)
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    *content_length = cl;
    return 0;
}

/* Finds the end of the head, checking bytes as they arrive. Returns the head's length, 0 when
 * more is needed, or -1 after reject(). */
static long scan_head(struct gw_conn *c, struct evbuffer *in)
{
    size_t cap = (size_t)cfg(c)->limits.max_header_bytes;
    size_t len = evbuffer_get_length(in);
    size_t want = len < cap ? len : cap;
    const unsigned char *h = evbuffer_pullup(in, (ev_ssize_t)want);
    if (h == NULL)
        return 0;
    for (size_t i = c->scanned; i < want; i++) {
        unsigned char b = h[i];
        if (b == 0) {
            reject(c, GW_R_BAD_FRAMING, "NUL byte in request head");
            return -1;
        }
        if (b == '\n' && (i == 0 || h[i - 1] != '\r')) {
            reject(c, GW_R_BAD_FRAMING, "bare LF in request head");
            return -1;
        }
        if (i > 0 && h[i - 1] == '\r' && b != '\n') {
            reject(c, GW_R_BAD_FRAMING, "bare CR in request head");
            return -1;
        }
        if (b == '\n' && i >= 3 && h[i - 2] == '\n' && h[i - 3] == '\r')
            return (long)(i + 1);
    }
    c->scanned = want;
    if (len >= cap) {
        reject(c, GW_R_HEADERS_TOO_LARGE, NULL);
        return -1;
    }
    return 0;
}

/* Reads requests until one is handed to the handler or more bytes are needed. */
static void process(struct gw_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->in_read = true;
    for (;;) {
        if (c->st == ST_IDLE) {
            /* RFC 9112 2.2: empty lines before a request line are ignored */
            unsigned char two[2];
            while (evbuffer_copyout(in, two, 2) == 2 && two[0] == '\r' && two[1] == '\n')
                evbuffer_drain(in, 2);
            size_t len = evbuffer_get_length(in);
            if (len == 0 || (len == 1 && evbuffer_pullup(in, 1)[0] == '\r'))
                break;
            c->st = ST_HEAD;
            c->rq.started_ms = gw_now_ms();
            if (c->served_one)
                arm(c, cfg(c)->limits.header_timeout_ms);
        }
        if (c->st == ST_HEAD) {
            long hl = scan_head(c, in);
            if (hl <= 0)
                break;
            c->head = malloc((size_t)hl + 1);
            if (c->head == NULL) {
                conn_free(c);
                return;
            }
            evbuffer_remove(in, c->head, (size_t)hl);
            c->head[hl] = '\0';
            uint64_t cl;
            if (parse_head(c, (size_t)hl, &cl) != 0)
                break;
            c->rq.bytes_in = (uint64_t)hl + cl;
            c->body_left = cl;
            if (cl == 0) {
                dispatch(c);
                if (c->st != ST_IDLE)
                    break;
                continue;
            }
            c->st = ST_BODY;
            arm(c, cfg(c)->limits.body_timeout_ms);
        }
        if (c->st == ST_BODY) {
            size_t have = evbuffer_get_length(in);
            size_t take = have < c->body_left ? have : (size_t)c->body_left;
            if (take == 0)
                break;
            evbuffer_remove_buffer(in, c->rq.body, take);
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

void gw_conn_accept(struct evconnlistener *l, int fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)salen;
    struct gw_worker *w = arg;
    const struct gw_config *cf = w->snap->cfg;
    struct gw_conn *c = calloc(1, sizeof *c);
    SSL *ssl = c ? SSL_new(w->snap->server_ctx) : NULL;
    if (ssl == NULL)
        goto fail;
    c->w = w;
    c->bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL)
        goto fail;
    fd = -1;  /* owned by the bufferevent */
    ssl = NULL;
    c->ssl = bufferevent_openssl_get_ssl(c->bev);
    c->timer = evtimer_new(w->base, on_timer, c);
    c->kick = event_new(w->base, -1, 0, on_kick, c);
    c->rq.body = evbuffer_new();
    if (c->timer == NULL || c->kick == NULL || c->rq.body == NULL)
        goto fail;
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
    c->rq.started_ms = gw_now_ms();
    arm(c, cf->limits.header_timeout_ms); /* TLS handshake + first head */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
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
        if (c->timer)
            event_free(c->timer);
        if (c->kick)
            event_free(c->kick);
        if (c->rq.body)
            evbuffer_free(c->rq.body);
        free(c);
    }
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
}

const char *gw_http_header(const struct gw_http_req *rq, const char *name, bool *repeated)
{
    const char *found = NULL;
    int n = 0;
    for (size_t i = 0; i < rq->nhdr; i++)
        if (strcasecmp(rq->hdr[i].name, name) == 0) {
            found = rq->hdr[i].value;
            n++;
        }
    if (repeated)
        *repeated = n > 1;
    return n == 1 ? found : NULL;
}

const char *gw_conn_peer(const struct gw_conn *c)
{
    return c->peer;
}

SSL *gw_conn_ssl(const struct gw_conn *c)
{
    return c->ssl;
}

static void http_date(char *buf, size_t len)
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
    snprintf(buf, len, "%s", cached);
}

size_t gw_conn_reply(struct gw_conn *c, int status, const char *reason,
                     const struct gw_header *hdrs, size_t nhdrs, struct evbuffer *body,
                     bool close)
{
    if (c->st == ST_DEAD) {
        conn_free(c);
        return 0;
    }
    close = close || c->rq.wants_close || c->rq.rejected || c->w->draining ||
            cfg(c)->limits.keepalive_timeout_ms == 0;
    bool head_only = c->rq.method && strcmp(c->rq.method, "HEAD") == 0;
    size_t blen = body ? evbuffer_get_length(body) : 0;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char date[40];
    http_date(date, sizeof date);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, reason, date);
    for (size_t i = 0; i < nhdrs; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", hdrs[i].name, hdrs[i].value);
    evbuffer_add_printf(out, "Content-Length: %zu\r\n%s\r\n", blen,
                        close ? "Connection: close\r\n" : "");
    if (blen && !head_only)
        evbuffer_add_buffer(out, body);
    reset_request(c);
    if (close) {
        c->st = ST_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
        evtimer_del(c->timer);
        return blen;
    }
    c->st = ST_IDLE;
    c->served_one = true;
    arm(c, cfg(c)->limits.keepalive_timeout_ms);
    if (!c->in_read && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        event_active(c->kick, EV_TIMEOUT, 0);
    return blen;
}

void gw_conn_close_idle(struct gw_worker *w)
{
    struct gw_conn *c = w->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->st == ST_IDLE)
            conn_free(c);
    }
}

void gw_conn_free_all(struct gw_worker *w)
{
    while (w->conns)
        conn_free(w->conns);
}
