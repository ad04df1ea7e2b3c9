#include "rlstore.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "rlscript.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

enum state {
    ST_DOWN,       /* waiting for the backoff timer */
    ST_RESOLVING,  /* the host name through evdns */
    ST_CONNECTING, /* TCP or unix connect in progress */
    ST_HANDSHAKE,  /* AUTH, SELECT, SCRIPT LOAD sent */
    ST_UP          /* the script's sha known: calls go out */
};

struct gw_rlstore {
    struct event_base *base;
    struct evdns_base *dns;
    struct gw_metrics *m;
    struct gw_rlstore_shared *shared;
    int worker;
    /* what it connects to (copied: the snapshot that named them may go) */
    char *host, *unix_path, *username, *password, *url;
    size_t password_len;
    long port, db, timeout_ms, handshake_ms;
    char prefix[80];
    size_t prefix_len;
    enum state state;
    redisAsyncContext *ac;
    struct lookup *lookup; /* a host name being resolved */
    char sha[41];
    bool handshake_failed; /* an error answer during this connection's handshake */
    struct event *retry;     /* the backoff before the next connection */
    struct event *deadline;  /* the handshake's, and a stall's */
    struct event *drop;      /* drops ac from the loop, outside hiredis's callbacks */
    struct event *flush;     /* sends the batch of this loop pass, behind its requests */
    struct batch *open;      /* this loop pass's requests, not sent yet */
    long backoff_ms;
    double stalled_since; /* gw_mono_ms() of the first unanswered call since a reply; 0: none */
    bool usable;          /* as last counted in shared and shown in the metrics */
    bool freeing;
    bool drop_pending; /* until on_drop: no call goes out, a late reply revives nothing */
    char last_why[256]; /* the last failure logged, so that a repeated one is not */
};

#define BATCH_MAX 64 /* requests in one EVALSHA */

/* One request's place in a batch. */
struct call {
    gw_rlstore_cb cb;
    void *arg;
    unsigned char subject[32];
    int cost;
};

/* The requests of one loop pass, sent as one EVALSHA (rlscript.h: a batch). Freed when hiredis
 * has answered it (a reply, or NULL when the connection went) and its callers have been
 * answered (the reply, a failure or the timeout). */
struct batch {
    struct gw_rlstore *s;
    struct event timer;
    bool sent, answered;
    bool retried; /* NOSCRIPT: sent again once */
    double t0;
    long limits[5]; /* subject burst, per_seconds, upstream burst, per_seconds, daily */
    size_t n;
    struct call calls[BATCH_MAX];
};

/* A host name's resolution. evdns answers a cancelled lookup later, from the loop: the
 * lookup outlives a store freed meanwhile (s is then NULL) and is freed by that answer. */
struct lookup {
    struct gw_rlstore *s;
    struct evdns_getaddrinfo_request *req;
};

static void start_connect(struct gw_rlstore *s);
static void cancel_lookup(struct gw_rlstore *s);

/* ---- usable or not: the fallback of on_failure ---- */

static void set_usable(struct gw_rlstore *s, bool usable, const char *why)
{
    if (s->usable == usable)
        return;
    s->usable = usable;
    atomic_store(&s->m->store_fallback, !usable);
    if (usable) {
        s->last_why[0] = '\0';
        if (atomic_fetch_sub(&s->shared->unusable, 1) == 1)
            gw_log_info("rate-limit store %s: answering; limits are shared", s->url);
    } else if (atomic_fetch_add(&s->shared->unusable, 1) == 0) {
        gw_log_warn("rate-limit store %s: unusable (%s); rate_limit.redis.on_failure decides "
                    "until it answers again",
                    s->url, why);
    }
}

/* A failure worth a line in the error log: the first of its kind since the store last
 * answered (a store that stays down is not logged at every retry). */
static void note_failure(struct gw_rlstore *s, const char *why)
{
    if (strcmp(s->last_why, why) == 0)
        return;
    snprintf(s->last_why, sizeof s->last_why, "%s", why);
    gw_log_warn("worker %d: rate-limit store %s: %s", s->worker, s->url, why);
}

/* ---- the connection ---- */

static struct timeval ms_tv(long ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

static void schedule_retry(struct gw_rlstore *s);

/* The connection (or its making) failed for why: unusable, said, tried again after the
 * backoff. */
static void lost(struct gw_rlstore *s, const char *why)
{
    set_usable(s, false, why);
    note_failure(s, why);
    schedule_retry(s);
}

static void schedule_retry(struct gw_rlstore *s)
{
    if (s->freeing)
        return;
    s->state = ST_DOWN;
    s->stalled_since = 0;
    evtimer_del(s->deadline);
    struct timeval tv = ms_tv(s->backoff_ms);
    evtimer_add(s->retry, &tv);
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

/* Ends the connection (from the loop, never inside a hiredis callback): calls in flight are
 * answered as failed by hiredis's own teardown, then a new connection after the backoff. */
static void drop(struct gw_rlstore *s, const char *why)
{
    s->drop_pending = true;
    set_usable(s, false, why);
    note_failure(s, why);
    event_active(s->drop, EV_TIMEOUT, 0);
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_rlstore *s = arg;
    s->drop_pending = false;
    redisAsyncContext *ac = s->ac;
    if (ac == NULL)
        return;
    set_usable(s, false, "connection dropped");
    s->ac = NULL; /* onDisconnect (when it comes) sees an old context */
    redisAsyncFree(ac);
    schedule_retry(s);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct gw_rlstore *s = ac->data;
    (void)status;
    if (s == NULL || ac != s->ac)
        return; /* dropped by us: on_drop goes on */
    s->ac = NULL; /* hiredis frees it on return */
    lost(s, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata);

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct gw_rlstore *s = ac->data;
    if (s == NULL || ac != s->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context on return (no onDisconnect follows) */
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
        s->ac = NULL;
        lost(s, why);
        return;
    }
    redisAsyncContext *c = s->ac;
    s->state = ST_HANDSHAKE;
    s->handshake_failed = false;
    /* pipelined: the server answers them in order */
    if (s->password) {
        const char *argv[3] = {"AUTH", s->username ? s->username : s->password, s->password};
        size_t lens[3] = {4, s->username ? strlen(s->username) : s->password_len,
                          s->password_len};
        int argc = s->username ? 3 : 2;
        redisAsyncCommandArgv(c, on_handshake, (void *)"AUTH", argc, argv, lens);
    }
    if (s->db) {
        char db[8];
        snprintf(db, sizeof db, "%ld", s->db);
        const char *argv[2] = {"SELECT", db};
        redisAsyncCommandArgv(c, on_handshake, (void *)"SELECT", 2, argv, NULL);
    }
    const char *argv[3] = {"SCRIPT", "LOAD", gw_rl_script};
    redisAsyncCommandArgv(c, on_handshake, (void *)"SCRIPT LOAD", 3, argv, NULL);
}

/* Keeps a script's sha from a SCRIPT LOAD answer. */
static bool take_sha(struct gw_rlstore *s, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING || r->len != 40)
        return false;
    memcpy(s->sha, r->str, 40);
    s->sha[40] = '\0';
    return true;
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct gw_rlstore *s = ac->data;
    const redisReply *r = reply;
    const char *step = privdata;
    if (s == NULL || ac != s->ac || r == NULL || s->handshake_failed)
        return; /* the connection went: on_disconnect or on_drop goes on */
    if (r->type == REDIS_REPLY_ERROR) {
        char why[240];
        /* AUTH's error names no secret; it is the server's words */
        snprintf(why, sizeof why, "%s refused: %.*s", step, (int)(r->len > 160 ? 160 : r->len),
                 r->str);
        s->handshake_failed = true;
        drop(s, why);
        return;
    }
    if (strcmp(step, "SCRIPT LOAD") != 0)
        return;
    if (!take_sha(s, r)) {
        s->handshake_failed = true;
        drop(s, "SCRIPT LOAD: an answer that is not a sha");
        return;
    }
    s->state = ST_UP;
    s->backoff_ms = BACKOFF_FIRST_MS;
    s->stalled_since = 0;
    evtimer_del(s->deadline);
    set_usable(s, true, NULL);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_rlstore *s = arg;
    if (s->state == ST_RESOLVING) {
        cancel_lookup(s);
        note_failure(s, "cannot resolve the host name in time");
        schedule_retry(s);
        return;
    }
    if (s->state == ST_CONNECTING || s->state == ST_HANDSHAKE)
        drop(s, "no answer to the connection's set-up in time");
    else if (s->state == ST_UP && s->stalled_since > 0)
        drop(s, "calls unanswered: the connection is stalled");
}

static void connect_to(struct gw_rlstore *s, const char *ip)
{
    redisAsyncContext *ac =
        s->unix_path ? redisAsyncConnectUnix(s->unix_path) : redisAsyncConnect(ip, (int)s->port);
    if (ac == NULL || ac->err) {
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        lost(s, why);
        return;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        schedule_retry(s);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    s->ac = ac;
    s->state = ST_CONNECTING;
}

static void on_resolved(int err, struct evutil_addrinfo *ai, void *arg)
{
    struct lookup *lk = arg;
    struct gw_rlstore *s = lk->s;
    free(lk);
    char ip[INET6_ADDRSTRLEN] = "";
    if (s && err == 0 && ai) {
        const void *a = ai->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        inet_ntop(ai->ai_family, a, ip, sizeof ip);
    }
    if (ai)
        evutil_freeaddrinfo(ai);
    if (s == NULL)
        return; /* the store was freed */
    s->lookup = NULL;
    if (ip[0] == '\0') {
        char why[200];
        snprintf(why, sizeof why, "cannot resolve %s: %s", s->host,
                 err == EVUTIL_EAI_CANCEL ? "no answer in time" : evutil_gai_strerror(err));
        lost(s, why);
        return;
    }
    connect_to(s, ip);
}

/* Stops a lookup in progress: its answer (later) finds no store. */
static void cancel_lookup(struct gw_rlstore *s)
{
    struct lookup *lk = s->lookup;
    if (lk == NULL)
        return;
    s->lookup = NULL;
    lk->s = NULL;
    if (lk->req)
        evdns_getaddrinfo_cancel(lk->req);
}

static void start_connect(struct gw_rlstore *s)
{
    struct timeval tv = ms_tv(s->handshake_ms);
    evtimer_add(s->deadline, &tv);
    unsigned char buf[16];
    if (s->unix_path || inet_pton(AF_INET, s->host, buf) == 1 ||
        inet_pton(AF_INET6, s->host, buf) == 1) {
        connect_to(s, s->host);
        return;
    }
    struct lookup *lk = calloc(1, sizeof *lk);
    if (lk == NULL) {
        schedule_retry(s);
        return;
    }
    lk->s = s;
    s->lookup = lk;
    s->state = ST_RESOLVING;
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(s->dns, s->host, NULL, &hints, on_resolved, lk);
    /* NULL: answered already (from the hosts file, or a failure): lk is gone */
    if (req && s->lookup == lk)
        lk->req = req;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_connect(arg);
}

/* ---- calls ---- */

/* Answers every request of b (once), counting each. r: the script's reply (a verdict). */
static void answer(struct batch *b, enum gw_rlstore_result result, const redisReply *r)
{
    if (b->answered)
        return;
    b->answered = true;
    if (b->sent)
        evtimer_del(&b->timer);
    struct gw_rlstore *s = b->s;
    enum gw_store_result k = result == GW_RLSTORE_VERDICT ? GW_STORE_OK
                             : result == GW_RLSTORE_TIMEOUT ? GW_STORE_TIMEOUT
                                                            : GW_STORE_ERROR;
    double secs = (gw_mono_ms() - b->t0) / 1000.0;
    for (size_t i = 0; i < b->n; i++) {
        struct gw_rlstore_answer a = {.result = result};
        if (result == GW_RLSTORE_VERDICT) {
            long long v[6];
            for (size_t j = 0; j < 6; j++)
                v[j] = r->element[6 * i + j]->integer;
            a.verdict = (struct gw_rl_verdict){.allowed = v[0] == 1,
                                               .retry_after_s = (long)v[2],
                                               .max = (long)v[3],
                                               .remaining = (long)v[4],
                                               .interval_ms = (long)v[5],
                                               .daily = v[1] == GW_RLS_DAILY};
            a.scope = (int)v[1];
        }
        gw_m_inc(&s->m->store_requests[k]);
        gw_m_observe(&s->m->store_dur, secs);
        b->calls[i].cb(b->calls[i].arg, &a);
    }
}

/* The script's answer for n requests: six integers each. */
static bool is_verdict(const redisReply *r, size_t n)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 6 * n)
        return false;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
    for (size_t i = 0; i < n; i++)
        if (r->element[6 * i + 1]->integer < 0 || r->element[6 * i + 1]->integer > GW_RLS_DAILY)
            return false;
    return true;
}

static int send_batch(struct batch *b);

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct batch *b = privdata;
    struct gw_rlstore *s = b->s;
    const redisReply *r = reply;
    if (r == NULL) { /* the connection went */
        answer(b, GW_RLSTORE_ERROR, NULL);
        free(b);
        return;
    }
    if (ac == s->ac && s->stalled_since > 0 && !s->drop_pending) { /* it answers again */
        s->stalled_since = 0;
        if (s->state == ST_UP)
            set_usable(s, true, NULL);
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && ac == s->ac &&
        s->state == ST_UP) {
        /* the server lost its scripts (a restart, SCRIPT FLUSH): load it again; the batch
         * follows on the same connection, so the server runs it after the load */
        const char *argv[3] = {"SCRIPT", "LOAD", gw_rl_script};
        redisAsyncCommandArgv(s->ac, on_handshake, (void *)"SCRIPT LOAD", 3, argv, NULL);
        if (!b->retried && !b->answered) {
            b->retried = true;
            if (send_batch(b) == 0)
                return;
        }
        answer(b, GW_RLSTORE_ERROR, NULL);
        free(b);
        return;
    }
    if (is_verdict(r, b->n)) {
        answer(b, GW_RLSTORE_VERDICT, r);
        free(b);
        return;
    }
    char why[200];
    if (r->type == REDIS_REPLY_ERROR)
        snprintf(why, sizeof why, "the script failed: %.*s", (int)(r->len > 160 ? 160 : r->len),
                 r->str);
    else
        snprintf(why, sizeof why, "the script answered oddly");
    answer(b, GW_RLSTORE_ERROR, NULL);
    free(b);
    /* A server that can no longer take writes or this client (a failover left the address on
     * a replica, it is loading, the password changed): a new connection, resolved again. */
    static const char *const gone[] = {"READONLY", "LOADING", "MASTERDOWN", "NOAUTH",
                                       "WRONGPASS", "NOPERM"};
    bool reconnect = false;
    for (size_t i = 0; r->type == REDIS_REPLY_ERROR && i < sizeof gone / sizeof *gone; i++)
        reconnect |= strncmp(r->str, gone[i], strlen(gone[i])) == 0;
    if (reconnect && ac == s->ac && !s->drop_pending && !s->freeing)
        drop(s, why);
    else
        note_failure(s, why);
}

static void on_batch_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct batch *b = arg;
    struct gw_rlstore *s = b->s;
    if (s->stalled_since == 0) {
        s->stalled_since = gw_mono_ms();
        set_usable(s, false, "no answer within timeout_ms");
        struct timeval tv = ms_tv(s->handshake_ms);
        evtimer_add(s->deadline, &tv); /* still stalled then: reconnect */
    }
    answer(b, GW_RLSTORE_TIMEOUT, NULL); /* freed when hiredis answers */
}

/* ---- the EVALSHA in Redis's protocol, written here: hiredis's printf-style formatting cost
 * more per request than the rest of the call (callgrind) ---- */

/* u in decimal at at; returns the end. */
static char *put_num(char *at, unsigned long long u)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        *at++ = tmp[--n];
    return at;
}

static char *put_raw(char *at, const char *s, size_t n)
{
    memcpy(at, s, n);
    return at + n;
}

/* One bulk string: $len CRLF bytes CRLF. */
static char *put_bulk(char *at, const char *s, size_t n)
{
    *at++ = '$';
    at = put_num(at, n);
    at = put_raw(at, "\r\n", 2);
    at = put_raw(at, s, n);
    return put_raw(at, "\r\n", 2);
}

/* v as a bulk string (the limits and costs are never negative: 0 if one were) */
static char *put_num_bulk(char *at, long long v)
{
    char digits[24];
    char *end = put_num(digits, v < 0 ? 0 : (unsigned long long)v);
    return put_bulk(at, digits, (size_t)(end - digits));
}

/* A key: the prefix, then what follows it (tail), then the subject id in hex (or none). */
static char *put_key(char *at, const struct gw_rlstore *s, const char *tail,
                     const unsigned char *id)
{
    static const char digits[] = "0123456789abcdef";
    size_t plen = s->prefix_len, tlen = strlen(tail);
    *at++ = '$';
    at = put_num(at, plen + tlen + (id ? 64 : 0));
    at = put_raw(at, "\r\n", 2);
    at = put_raw(at, s->prefix, plen);
    at = put_raw(at, tail, tlen);
    for (size_t i = 0; id && i < 32; i++) {
        *at++ = digits[id[i] >> 4];
        *at++ = digits[id[i] & 15];
    }
    return put_raw(at, "\r\n", 2);
}

static int send_batch(struct batch *b)
{
    struct gw_rlstore *s = b->s;
    if (s->ac == NULL)
        return -1;
    /* 2n + 11 arguments: the sha, n + 2 keys of at most 140 bytes with their header, n + 6
     * numbers */
    char small[2048];
    size_t need = 600 + b->n * 190;
    char *cmd = need <= sizeof small ? small : malloc(need);
    if (cmd == NULL)
        return -1;
    char *at = put_raw(cmd, "*", 1);
    at = put_num(at, 2 * b->n + 11);
    at = put_raw(at, "\r\n$7\r\nEVALSHA\r\n", 15);
    at = put_bulk(at, s->sha, 40);
    size_t nkeys = b->n + 2;
    at = put_num_bulk(at, (long long)nkeys);
    at = put_key(at, s, "s:", b->calls[0].subject);
    at = put_key(at, s, "u", NULL);
    at = put_key(at, s, "d", NULL);
    for (size_t i = 1; i < b->n; i++)
        at = put_key(at, s, "s:", b->calls[i].subject);
    for (int i = 0; i < 5; i++)
        at = put_num_bulk(at, b->limits[i]);
    at = put_num_bulk(at, b->calls[0].cost);
    at = put_raw(at, "$1\r\n0\r\n", 7);
    for (size_t i = 1; i < b->n; i++)
        at = put_num_bulk(at, b->calls[i].cost);
    int rc = redisAsyncFormattedCommand(s->ac, on_reply, b, cmd, (size_t)(at - cmd));
    if (cmd != small)
        free(cmd);
    return rc == REDIS_OK ? 0 : -1;
}

/* Sends this loop pass's batch: made active by its first request, it runs behind the
 * requests of the pass. */
static void flush_open(struct gw_rlstore *s)
{
    struct batch *b = s->open;
    if (b == NULL)
        return;
    s->open = NULL;
    if (!gw_rlstore_usable(s) || send_batch(b) != 0) {
        answer(b, GW_RLSTORE_ERROR, NULL);
        free(b);
        return;
    }
    b->sent = true;
    evtimer_assign(&b->timer, s->base, on_batch_timeout, b);
    struct timeval tv = ms_tv(s->timeout_ms);
    evtimer_add(&b->timer, &tv);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush_open(arg);
}

bool gw_rlstore_check(struct gw_rlstore *s, const struct gw_rlstore_ask *ask, gw_rlstore_cb cb,
                      void *arg)
{
    if (!gw_rlstore_usable(s))
        return false;
    long want[5] = {ask->subject_burst, ask->subject_per_seconds, ask->upstream_burst,
                    ask->upstream_per_seconds, ask->daily};
    struct batch *b = s->open;
    if (b && (b->n == BATCH_MAX || memcmp(b->limits, want, sizeof want) != 0)) {
        flush_open(s); /* full, or another snapshot's limits: it leaves now */
        b = s->open;   /* (a failed send's answers could have started another) */
        if (!gw_rlstore_usable(s) ||
            (b && (b->n == BATCH_MAX || memcmp(b->limits, want, sizeof want) != 0)))
            return false;
    }
    if (b == NULL) {
        b = malloc(sizeof *b); /* not zeroed: 64 calls' room, filled as they come */
        if (b == NULL)
            return false;
        b->s = s;
        b->sent = b->answered = b->retried = false;
        b->n = 0;
        b->t0 = gw_mono_ms();
        memcpy(b->limits, want, sizeof want);
        s->open = b;
        event_active(s->flush, EV_TIMEOUT, 0);
    }
    struct call *c = &b->calls[b->n++];
    c->cb = cb;
    c->arg = arg;
    c->cost = ask->cost;
    memcpy(c->subject, ask->subject, 32);
    return true;
}

bool gw_rlstore_usable(const struct gw_rlstore *s)
{
    return s && !s->freeing && !s->drop_pending && s->state == ST_UP && s->ac &&
           s->stalled_since == 0;
}

/* ---- life ---- */

static long handshake_ms(long timeout_ms)
{
    long ms = 20 * timeout_ms;
    return ms < 1000 ? 1000 : ms > 5000 ? 5000 : ms;
}

struct gw_rlstore *gw_rlstore_new(struct event_base *base, struct evdns_base *dns,
                                  const struct gw_cfg_redis *cfg, const char *password,
                                  struct gw_metrics *m, struct gw_rlstore_shared *shared,
                                  int worker)
{
    struct gw_rlstore *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->base = base;
    s->dns = dns;
    s->m = m;
    s->shared = shared;
    s->worker = worker;
    s->port = cfg->port;
    s->db = cfg->db;
    s->timeout_ms = cfg->timeout_ms;
    s->handshake_ms = handshake_ms(cfg->timeout_ms);
    s->backoff_ms = BACKOFF_FIRST_MS;
    snprintf(s->prefix, sizeof s->prefix, "%s", cfg->key_prefix ? cfg->key_prefix : "");
    s->prefix_len = strlen(s->prefix);
    s->url = strdup(cfg->url ? cfg->url : "redis");
    s->host = cfg->host ? strdup(cfg->host) : NULL;
    s->unix_path = cfg->unix_path ? strdup(cfg->unix_path) : NULL;
    s->username = cfg->username ? strdup(cfg->username) : NULL;
    if (password) {
        s->password_len = strlen(password);
        s->password = OPENSSL_malloc(s->password_len + 1);
        if (s->password)
            memcpy(s->password, password, s->password_len + 1);
    }
    s->retry = evtimer_new(base, on_retry, s);
    s->deadline = evtimer_new(base, on_deadline, s);
    s->drop = event_new(base, -1, 0, on_drop, s);
    s->flush = event_new(base, -1, 0, on_flush, s);
    /* unusable until the first connection is set up (counted, not logged) */
    atomic_store(&m->store_fallback, true);
    atomic_fetch_add(&shared->unusable, 1);
    if (s->url == NULL || (cfg->host && s->host == NULL) ||
        (cfg->unix_path && s->unix_path == NULL) || (cfg->username && s->username == NULL) ||
        (password && s->password == NULL) || s->retry == NULL || s->deadline == NULL ||
        s->drop == NULL || s->flush == NULL || (s->host == NULL && s->unix_path == NULL)) {
        gw_rlstore_free(s);
        return NULL;
    }
    start_connect(s);
    return s;
}

void gw_rlstore_free(struct gw_rlstore *s)
{
    if (s == NULL)
        return;
    s->freeing = true;
    cancel_lookup(s);
    if (s->open) { /* requests of this pass not sent: answered as failed */
        struct batch *b = s->open;
        s->open = NULL;
        answer(b, GW_RLSTORE_ERROR, NULL);
        free(b);
    }
    if (s->ac) {
        redisAsyncContext *ac = s->ac;
        s->ac = NULL;
        redisAsyncFree(ac); /* answers the calls in flight as failed */
    }
    if (!s->usable)
        atomic_fetch_sub(&s->shared->unusable, 1);
    if (s->retry)
        event_free(s->retry);
    if (s->deadline)
        event_free(s->deadline);
    if (s->drop)
        event_free(s->drop);
    if (s->flush)
        event_free(s->flush);
    if (s->password)
        OPENSSL_clear_free(s->password, s->password_len + 1);
    free(s->url);
    free(s->host);
    free(s->unix_path);
    free(s->username);
    free(s);
}

/* ---- check: the same set-up, blocking ---- */

int gw_rlstore_probe(const struct gw_cfg_redis *cfg, const char *password, char *why,
                     size_t whylen)
{
    long ms = handshake_ms(cfg->timeout_ms);
    struct timeval tv = ms_tv(ms);
    redisContext *c = cfg->unix_path ? redisConnectUnixWithTimeout(cfg->unix_path, tv)
                                     : redisConnectWithTimeout(cfg->host, (int)cfg->port, tv);
    if (c == NULL || c->err) {
        snprintf(why, whylen, "cannot connect to %s: %s", cfg->url,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    char db[8];
    snprintf(db, sizeof db, "%ld", cfg->db);
    const char *user = cfg->username ? cfg->username : password;
    struct {
        const char *name;
        bool wanted;
        int argc;
        const char *argv[3];
    } steps[] = {
        {"AUTH", password != NULL, cfg->username ? 3 : 2, {"AUTH", user, password}},
        {"SELECT", cfg->db != 0, 2, {"SELECT", db}},
        {"SCRIPT LOAD", true, 3, {"SCRIPT", "LOAD", gw_rl_script}},
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof steps / sizeof *steps; i++) {
        if (!steps[i].wanted)
            continue;
        redisReply *r = redisCommandArgv(c, steps[i].argc, steps[i].argv, NULL);
        if (r == NULL) {
            snprintf(why, whylen, "%s: %s: %s", cfg->url, steps[i].name,
                     c->errstr[0] ? c->errstr : "no answer");
            rc = -1;
        } else if (r->type == REDIS_REPLY_ERROR) {
            snprintf(why, whylen, "%s: %s refused: %.*s", cfg->url, steps[i].name,
                     (int)(r->len > 160 ? 160 : r->len), r->str);
            rc = -1;
        } else if (i == 2 && (r->type != REDIS_REPLY_STRING || r->len != 40)) {
            snprintf(why, whylen, "%s: SCRIPT LOAD: an answer that is not a sha", cfg->url);
            rc = -1;
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return rc;
}
