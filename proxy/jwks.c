#include "jwks.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "discovery.h"
#include "issuers.h"
#include "keys.h"
#include "log.h"
#include "tls.h"

#define FETCH_TIMEOUT_MS 5000
#define MAX_JWKS_BYTES (1u << 20)
#define MAX_HEAD_BYTES (16u << 10)
/* the longest wait between the fetches of an issuer that has no URL keys yet */
#define MAX_RETRY_S 60

/* ---- a bounded blocking HTTPS GET ---- */

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int split_url(const char *url, char *host, size_t hcap, char *port, size_t pcap,
                     const char **path)
{
    if (strncmp(url, "https://", 8) != 0)
        return -1;
    const char *h = url + 8, *e;
    if (*h == '[') {
        e = strchr(h, ']');
        if (e == NULL || (size_t)(e - h - 1) >= hcap)
            return -1;
        snprintf(host, hcap, "%.*s", (int)(e - h - 1), h + 1);
        e++;
    } else {
        e = h + strcspn(h, ":/");
        if (e == h || (size_t)(e - h) >= hcap)
            return -1;
        snprintf(host, hcap, "%.*s", (int)(e - h), h);
    }
    snprintf(port, pcap, "443");
    if (*e == ':') {
        size_t n = strspn(e + 1, "0123456789");
        if (n == 0 || n > 5)
            return -1;
        snprintf(port, pcap, "%.*s", (int)n, e + 1);
        e += 1 + n;
    }
    if (*e != '\0' && *e != '/')
        return -1;
    *path = *e ? e : "/";
    for (const char *p = *path; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7F)
            return -1;
    return 0;
}

static int connect_within(const char *host, const char *port, long deadline, char *why,
                          size_t whylen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            snprintf(why, whylen, "cannot connect to %s: %s", host, strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        long left = deadline - mono_ms();
        int err = 0;
        socklen_t el = sizeof err;
        if (left <= 0 || poll(&p, 1, (int)left) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
            snprintf(why, whylen, "cannot connect to %s: %s", host,
                     err ? strerror(err) : "timed out");
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    return fd; /* still non-blocking: every TLS step below waits with poll() on the deadline */
}

/* Runs one TLS step (op returns SSL's result) until it completes or the deadline passes: a
 * server sending a byte at a time cannot hold the call past the deadline. Returns op's result
 * (> 0), or <= 0 on failure (*timed_out tells a deadline apart). */
static int tls_step(SSL *ssl, int fd, long deadline, int (*op)(SSL *, void *, int), void *buf,
                    int len, bool *timed_out)
{
    *timed_out = false;
    for (;;) {
        ERR_clear_error();
        int r = op(ssl, buf, len);
        if (r > 0)
            return r;
        int e = SSL_get_error(ssl, r);
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (ev == 0)
            return r;
        long left = deadline - mono_ms();
        struct pollfd p = {.fd = fd, .events = ev};
        if (left <= 0 || poll(&p, 1, (int)left) != 1) {
            *timed_out = true;
            return 0;
        }
    }
}

static int op_connect(SSL *ssl, void *buf, int len)
{
    (void)buf;
    (void)len;
    return SSL_connect(ssl);
}

static int op_write(SSL *ssl, void *buf, int len)
{
    return SSL_write(ssl, buf, len);
}

static int op_read(SSL *ssl, void *buf, int len)
{
    return SSL_read(ssl, buf, len);
}

/* Decodes a chunked body in place. Returns its length or -1. */
static long dechunk(char *b, size_t n)
{
    size_t r = 0, w = 0;
    for (;;) {
        char *eol = memmem(b + r, n - r, "\r\n", 2);
        if (eol == NULL)
            return -1;
        size_t digits = strspn(b + r, "0123456789abcdefABCDEF");
        if (digits == 0 || digits > 8)
            return -1;
        unsigned long sz = strtoul(b + r, NULL, 16);
        r = (size_t)(eol - b) + 2;
        if (sz == 0)
            return (long)w;
        if (sz > n - r || n - r - sz < 2 || memcmp(b + r + sz, "\r\n", 2) != 0)
            return -1;
        memmove(b + w, b + r, sz);
        w += sz;
        r += sz + 2;
    }
}

/* The status of "HTTP/1.x NNN" ending in a space or the line's end, or -1: exactly three
 * digits, as the upstream reader wants (a scanf %3d would take "2000" for 200). */
static int status_code(const char *line)
{
    if (strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ')
        return -1;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (line[i] < '0' || line[i] > '9')
            return -1;
        st = st * 10 + (line[i] - '0');
    }
    return line[12] == ' ' || line[12] == '\r' ? st : -1;
}

int gw_https_get(const char *url, const char *ca_file, int timeout_ms, size_t max_bytes,
                 char **body, size_t *len, char *why, size_t whylen)
{
    char host[256], port[8];
    const char *path;
    *body = NULL;
    if (split_url(url, host, sizeof host, port, sizeof port, &path) != 0) {
        snprintf(why, whylen, "not an https URL: %.200s", url);
        return -1;
    }
    long deadline = mono_ms() + timeout_ms;
    int fd = connect_within(host, port, deadline, why, whylen);
    if (fd < 0)
        return -1;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    char *buf = NULL;
    int rc = -1;
    if (ctx == NULL)
        goto out;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if ((ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        snprintf(why, whylen, "cannot load the CA %s", ca_file ? ca_file : "(system store)");
        goto out;
    }
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || gw_tls_client_prepare(ssl, host) != 0)
        goto out;
    bool timed_out;
    if (tls_step(ssl, fd, deadline, op_connect, NULL, 0, &timed_out) != 1) {
        long vr = SSL_get_verify_result(ssl);
        char es[160];
        gw_tls_error_string(es, sizeof es);
        snprintf(why, whylen, "TLS with %s failed: %s", host,
                 timed_out         ? "timed out"
                 : vr != X509_V_OK ? X509_verify_cert_error_string(vr)
                                   : es);
        goto out;
    }
    char req[1024];
    int rl = snprintf(req, sizeof req,
                      "GET %s HTTP/1.1\r\nHost: %s%s%s\r\nAccept: application/json\r\n"
                      "User-Agent: ghl-gateway\r\nConnection: close\r\n\r\n",
                      path, host, strcmp(port, "443") ? ":" : "", strcmp(port, "443") ? port : "");
    if (rl <= 0 || (size_t)rl >= sizeof req ||
        tls_step(ssl, fd, deadline, op_write, req, rl, &timed_out) != rl) {
        snprintf(why, whylen, "cannot send the request to %s", host);
        goto out;
    }
    size_t cap = max_bytes + MAX_HEAD_BYTES, n = 0;
    buf = malloc(cap + 1);
    bool clean_close = false;
    while (buf && n < cap) {
        int r = tls_step(ssl, fd, deadline, op_read, buf + n, (int)(cap - n), &timed_out);
        if (timed_out) {
            snprintf(why, whylen, "%s did not answer within %d ms", host, timeout_ms);
            goto out;
        }
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        clean_close = SSL_get_error(ssl, r) == SSL_ERROR_ZERO_RETURN;
        break;
    }
    if (buf == NULL || n >= cap) {
        snprintf(why, whylen, "answer from %s is larger than %zu bytes", host, max_bytes);
        goto out;
    }
    buf[n] = '\0';
    char *hend = strstr(buf, "\r\n\r\n");
    int status = hend ? status_code(buf) : -1;
    if (status < 0) {
        snprintf(why, whylen, "malformed answer from %s", host);
        goto out;
    }
    if (status != 200) {
        snprintf(why, whylen, "%s answered %d", host, status);
        goto out;
    }
    *hend = '\0';
    char *b = hend + 4;
    size_t blen = n - (size_t)(b - buf);
    const char *te = strcasestr(buf, "\r\nTransfer-Encoding:");
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (te) {
        long d = dechunk(b, blen);
        if (d < 0) {
            snprintf(why, whylen, "malformed chunked answer from %s", host);
            goto out;
        }
        blen = (size_t)d;
    } else if (cl) {
        unsigned long want = strtoul(cl + 17, NULL, 10);
        if (want != blen) {
            snprintf(why, whylen, "truncated answer from %s", host);
            goto out;
        }
    } else if (!clean_close) {
        snprintf(why, whylen, "answer from %s not delimited", host);
        goto out;
    }
    *body = malloc(blen + 1);
    if (*body == NULL)
        goto out;
    memcpy(*body, b, blen);
    (*body)[blen] = '\0';
    *len = blen;
    rc = 0;
out:
    free(buf);
    if (ssl) {
        SSL_shutdown(ssl); /* non-blocking: sends close_notify if it can, never waits */
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
    ERR_clear_error();
    close(fd);
    return rc;
}

/* ---- the fetcher ---- */

struct state {
    _Atomic int64_t last_attempt; /* read by workers (gw_jwks_request_refetch) */
    int64_t next_due;
    int64_t retry_s; /* the last wait after a failure while the issuer had no URL keys, or 0 */
    char *jwks_uri;  /* discovery: the jwks_uri of the last valid document, or NULL */
    atomic_ullong ok, fail;
};

struct gw_jwks_fetcher {
    struct gw_auth *a;
    struct state *st; /* per issuer */
    pthread_t thread;
    atomic_bool started; /* read by workers (gw_jwks_request_refetch) */
    bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

struct gw_jwks_fetcher *gw_jwks_fetcher_new(struct gw_auth *a)
{
    struct gw_jwks_fetcher *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->st = calloc(a->nissuers + 1, sizeof *f->st);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (f->st == NULL || pthread_mutex_init(&f->mu, NULL) != 0 ||
        pthread_cond_init(&f->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        free(f->st);
        free(f);
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    f->a = a;
    return f;
}

/* A fetched key whose kid is not one of the issuer's configured keys (gw_keyset_keep). */
static bool not_configured(const struct gw_key *key, void *arg)
{
    const struct gw_issuer *is = arg;
    const char *kid = key->kid;
    bool clash = false;
    for (size_t s = 0; kid && s < is->nkeys; s++)
        clash |= is->keys[s].kid && strcmp(is->keys[s].kid, kid) == 0;
    for (size_t s = 0; kid && is->file_keys && s < is->file_keys->n; s++)
        clash |= is->file_keys->keys[s].kid && strcmp(is->file_keys->keys[s].kid, kid) == 0;
    if (clash)
        gw_log_error("JWKS of issuer %s: kid %.64s is also a configured key; left out",
                     is->cfg->issuer, kid);
    return !clash;
}

/* The listener of ended fetches (gw_jwks_listen): one per process. */
static pthread_mutex_t listen_mu = PTHREAD_MUTEX_INITIALIZER;
static void (*listen_fn)(void *arg);
static void *listen_arg;

void gw_jwks_listen(void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&listen_mu);
    listen_fn = fn;
    listen_arg = arg;
    pthread_mutex_unlock(&listen_mu);
}

/* A fetch of issuer is ended (or will never come): whoever waits for it is told. */
static void fetch_ended(struct gw_issuer *is)
{
    atomic_fetch_add(&is->fetch_gen, 1);
    pthread_mutex_lock(&listen_mu);
    if (listen_fn)
        listen_fn(listen_arg);
    pthread_mutex_unlock(&listen_mu);
}

/* ---- discovery and the fetch of an issuer's key set ---- */

bool gw_jwks_fetched(const struct gw_cfg_issuer *ci)
{
    return ci->jwks_url != NULL || ci->discovery;
}

/* A discovery issuer's document, fetched like a JWKS (same CA, size and deadline) and checked
 * (gw_discovery_parse). On success *uri is its jwks_uri (the one before is freed). Returns 0,
 * or -1 with why ("discovery: ..."). */
static int discover(const struct gw_cfg_issuer *ci, char **uri, char *why, size_t whylen)
{
    char url[1024], inner[300], *body = NULL, *found = NULL;
    size_t len = 0;
    if (gw_discovery_url(ci->issuer, url, sizeof url, inner, sizeof inner) == 0 &&
        gw_https_get(url, ci->jwks_ca_file, FETCH_TIMEOUT_MS, MAX_JWKS_BYTES, &body, &len, inner,
                     sizeof inner) == 0)
        found = gw_discovery_parse(body, len, ci->issuer, inner, sizeof inner);
    free(body);
    if (found == NULL) {
        snprintf(why, whylen, "discovery: %s", inner);
        return -1;
    }
    free(*uri);
    *uri = found;
    return 0;
}

/* The issuer's key set as its identity provider publishes it now: from its jwks_url, or with
 * discovery from the jwks_uri of its document. *uri (discovery only) keeps the jwks_uri of the
 * last valid document between calls; the document is read again when rediscover, or when
 * none was valid yet. A document that fails fails the fetch (no JWKS is read then, not even
 * from the jwks_uri before). Returns the set (one reference), or NULL with why. */
static struct gw_keyset *fetch_keyset(const struct gw_cfg_issuer *ci, char **uri, bool rediscover,
                                      char *why, size_t whylen)
{
    const char *url = ci->jwks_url;
    if (ci->discovery) {
        if ((rediscover || *uri == NULL) && discover(ci, uri, why, whylen) != 0)
            return NULL;
        url = *uri;
    }
    char *body = NULL, inner[300];
    size_t len = 0;
    struct gw_keyset *set = NULL;
    if (gw_https_get(url, ci->jwks_ca_file, FETCH_TIMEOUT_MS, MAX_JWKS_BYTES, &body, &len, inner,
                     sizeof inner) == 0)
        set = gw_jwks_parse(body, len, inner, sizeof inner);
    free(body);
    if (set == NULL) {
        /* a discovered URL is named: the configuration does not say which one it was */
        if (ci->discovery)
            snprintf(why, whylen, "JWKS at %.200s: %s", url, inner);
        else
            snprintf(why, whylen, "%s", inner);
    }
    return set;
}

static bool has_url_keys(struct gw_issuer *is)
{
    pthread_mutex_lock(&is->url_mu);
    bool has = is->url_keys != NULL;
    pthread_mutex_unlock(&is->url_mu);
    return has;
}

/* When issuer i is fetched next after a fetch that began at started: jwks_refresh_s after a
 * refresh (a refetch leaves the next refresh where it was), or,
 * after a failure while it has no URL keys (a start with its identity provider away), sooner:
 * 1 s after this attempt ended, doubling up to min(jwks_refresh_s, MAX_RETRY_S), so its tokens
 * work soon after the provider is back. Returns the wait of a retry, or 0. */
static int64_t schedule(struct gw_jwks_fetcher *f, size_t i, int64_t started, bool refresh,
                        bool ok)
{
    struct gw_issuer *is = &f->a->issuers[i];
    struct state *st = &f->st[i];
    int64_t cap = is->cfg->jwks_refresh_s < MAX_RETRY_S ? is->cfg->jwks_refresh_s : MAX_RETRY_S;
    st->last_attempt = started;
    /* only a refresh moves the next one: an unknown kid's refetch reads no discovery document,
     * and refetches asked for at least every jwks_refetch_min_s must not put the document's
     * next reading off for ever (SPEC §4.2: a new jwks_uri takes effect at a refresh) */
    if (refresh)
        st->next_due = started + is->cfg->jwks_refresh_s;
    if (ok || has_url_keys(is)) {
        st->retry_s = 0;
        return 0;
    }
    st->retry_s = st->retry_s == 0 ? 1 : st->retry_s * 2 < cap ? st->retry_s * 2 : cap;
    st->next_due = now_s() + st->retry_s;
    return st->retry_s;
}

/* One fetch of issuer i's keys, begun at now (rediscover: a refresh or the start, which read a
 * discovery document again; an unknown kid's refetch reads the JWKS at the last good
 * jwks_uri). Installs a good set, counts and logs the outcome, and schedules the next fetch.
 * Runs on the fetcher's thread (or on the main thread before it starts). */
static bool fetch_one(struct gw_jwks_fetcher *f, size_t i, int64_t now, bool rediscover)
{
    struct gw_issuer *is = &f->a->issuers[i];
    const struct gw_cfg_issuer *ci = is->cfg;
    struct state *st = &f->st[i];
    char why[600];
    struct gw_keyset *set = fetch_keyset(ci, &st->jwks_uri, rediscover, why, sizeof why);
    /* a kid names one key: URL keys may not shadow (or be shadowed by) configured ones */
    if (set && gw_keyset_keep(set, not_configured, is) == 0) {
        gw_keyset_unref(set);
        set = NULL;
        snprintf(why, sizeof why, "no usable key left");
    }
    if (set == NULL) {
        atomic_fetch_add(&st->fail, 1);
        int64_t retry = schedule(f, i, now, rediscover, false);
        if (retry)
            gw_log_error("JWKS of issuer %s: %s; no keys from it yet (its tokens get 401 "
                         "unknown_key), trying again in %lld s",
                         ci->issuer, why, (long long)retry);
        else
            gw_log_error("JWKS of issuer %s: %s; keeping the last good keys", ci->issuer, why);
        return false;
    }
    atomic_fetch_add(&st->ok, 1);
    schedule(f, i, now, rediscover, true);
    size_t n = set->n, gone = gw_jwks_install(is, set);
    gw_log_info("JWKS of issuer %s: %zu key%s loaded from %s", ci->issuer, n, n == 1 ? "" : "s",
                ci->discovery ? st->jwks_uri : ci->jwks_url);
    if (gone)
        gw_log_info("JWKS of issuer %s: %zu key%s withdrawn: the tokens verified with %s are "
                    "refused from now on, cached or not",
                    ci->issuer, gone, gone == 1 ? "" : "s", gone == 1 ? "it" : "them");
    return true;
}

size_t gw_jwks_install(struct gw_issuer *is, struct gw_keyset *set)
{
    pthread_mutex_lock(&is->url_mu);
    struct gw_keyset *old = is->url_keys;
    /* the epoch moves in the same critical section as the swap, and workers read the set and
     * the epoch together: once a worker can see the new set, its cache sees the new epoch and
     * drops every principal verified before (SPEC §4.1) */
    size_t gone = gw_keyset_withdrawn(old, set);
    if (gone)
        atomic_fetch_add(&is->key_epoch, 1);
    is->url_keys = set;
    pthread_mutex_unlock(&is->url_mu);
    gw_keyset_unref(old); /* a request still verifying with it holds its own reference */
    return gone;
}

static void *fetch_loop(void *arg)
{
    struct gw_jwks_fetcher *f = arg;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        int64_t now = now_s(), wake = now + 3600;
        bool fetched = false;
        for (size_t i = 0; i < f->a->nissuers; i++) {
            struct gw_issuer *is = &f->a->issuers[i];
            const struct gw_cfg_issuer *ci = is->cfg;
            if (!gw_jwks_fetched(ci))
                continue;
            struct state *st = &f->st[i];
            int64_t wanted = atomic_load(&is->refetch_wanted);
            int64_t refetch_at = wanted ? st->last_attempt + ci->jwks_refetch_min_s : INT64_MAX;
            if (now >= st->next_due || now >= refetch_at) {
                bool refresh = now >= st->next_due;
                atomic_store(&is->refetch_wanted, 0);
                pthread_mutex_unlock(&f->mu);
                fetch_one(f, i, now, refresh);
                fetch_ended(is);
                pthread_mutex_lock(&f->mu);
                /* a refetch asked for during the fetch found nobody waiting: start the scan
                 * again rather than sleep past it */
                fetched = true;
                break;
            }
            if (st->next_due < wake)
                wake = st->next_due;
            if (refetch_at < wake)
                wake = refetch_at;
        }
        if (f->stop)
            break;
        if (fetched)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = wake - now_s();
        ts.tv_sec += wait > 0 ? wait : 0;
        if (wait > 0)
            pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int gw_jwks_fetcher_start(struct gw_jwks_fetcher *f)
{
    if (f == NULL)
        return 0;
    int failed = 0;
    int64_t now = now_s();
    for (size_t i = 0; i < f->a->nissuers; i++) {
        if (!gw_jwks_fetched(f->a->issuers[i].cfg))
            continue;
        failed += !fetch_one(f, i, now, true);
    }
    if (pthread_create(&f->thread, NULL, fetch_loop, f) == 0)
        f->started = true;
    else
        gw_log_error("cannot start the JWKS fetcher thread");
    return failed;
}

void gw_jwks_fetcher_stop(struct gw_jwks_fetcher *f)
{
    if (f == NULL || !f->started)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    f->started = false;
    /* no fetch of these issuers comes any more: requests waiting for one are decided now */
    for (size_t i = 0; i < f->a->nissuers; i++)
        if (gw_jwks_fetched(f->a->issuers[i].cfg))
            fetch_ended(&f->a->issuers[i]);
}

void gw_jwks_fetcher_free(struct gw_jwks_fetcher *f)
{
    if (f == NULL)
        return;
    gw_jwks_fetcher_stop(f);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    for (size_t i = 0; i < f->a->nissuers; i++)
        free(f->st[i].jwks_uri);
    free(f->st);
    free(f);
}

int64_t gw_jwks_request_refetch(struct gw_auth *a, struct gw_issuer *is, int64_t now)
{
    struct gw_jwks_fetcher *f = a->fetcher;
    if (f == NULL || !atomic_load(&f->started))
        return INT64_MAX; /* no fetch will come: a reload replaced this configuration */
    int64_t at = atomic_load(&f->st[is - a->issuers].last_attempt) + is->cfg->jwks_refetch_min_s;
    if (at < now)
        at = now;
    long long expected = 0;
    if (!atomic_compare_exchange_strong(&is->refetch_wanted, &expected, now))
        return at; /* already asked: no lock taken for every unknown kid an attacker sends */
    pthread_mutex_lock(&f->mu);
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return at;
}

void gw_jwks_check(struct gw_auth *a, struct gw_errs *errs)
{
    for (size_t i = 0; i < a->nissuers; i++) {
        const struct gw_cfg_issuer *ci = a->issuers[i].cfg;
        if (!gw_jwks_fetched(ci))
            continue;
        char why[600], *uri = NULL;
        struct gw_keyset *set = fetch_keyset(ci, &uri, true, why, sizeof why);
        free(uri);
        /* a discovery issuer has no URL in the file to name: the issuer names it */
        if (set == NULL && ci->discovery)
            gw_msgs_add(&errs->warnings,
                        "warning: auth.issuers[%zu] %s: %s (the gateway keeps trying)", i,
                        ci->issuer, why);
        else if (set == NULL)
            gw_msgs_add(&errs->warnings,
                        "warning: auth.issuers[%zu].jwks_url: %s (the gateway keeps trying)", i,
                        why);
        gw_keyset_unref(set);
    }
}

void gw_jwks_counts(const struct gw_jwks_fetcher *f, size_t issuer, uint64_t *ok, uint64_t *fail)
{
    *ok = f ? atomic_load(&f->st[issuer].ok) : 0;
    *fail = f ? atomic_load(&f->st[issuer].fail) : 0;
}

size_t gw_jwks_key_count(struct gw_issuer *is)
{
    pthread_mutex_lock(&is->url_mu);
    size_t n = is->url_keys ? is->url_keys->n : 0;
    pthread_mutex_unlock(&is->url_mu);
    return n + is->nkeys + (is->file_keys ? is->file_keys->n : 0);
}

/* Two configurations of one issuer whose keys come from the same place: the same jwks_url,
 * or both by discovery (the document is the issuer's own). */
static bool same_source(const struct gw_cfg_issuer *a, const struct gw_cfg_issuer *b)
{
    if (strcmp(a->issuer, b->issuer) != 0 || a->discovery != b->discovery)
        return false;
    return a->discovery || (a->jwks_url && b->jwks_url && strcmp(a->jwks_url, b->jwks_url) == 0);
}

void gw_jwks_adopt_keys(struct gw_auth *to, struct gw_auth *from)
{
    for (size_t i = 0; i < to->nissuers; i++) {
        struct gw_issuer *t = &to->issuers[i];
        if (!gw_jwks_fetched(t->cfg))
            continue;
        for (size_t k = 0; k < from->nissuers; k++) {
            struct gw_issuer *f = &from->issuers[k];
            if (!same_source(f->cfg, t->cfg))
                continue;
            pthread_mutex_lock(&f->url_mu);
            struct gw_keyset *set = f->url_keys ? gw_keyset_ref(f->url_keys) : NULL;
            pthread_mutex_unlock(&f->url_mu);
            gw_jwks_install(t, set);
            break;
        }
    }
}
