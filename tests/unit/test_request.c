/* Unit tests of the request state machine (proxy/request.c), driven through struct gw_req_env as
 * h2o's t/00unit/lib/core/proxy.c drives its proxy: every stage and every way out of it.
 *
 * The world of one test (built fresh in a folder of its own, mkdtemp):
 * - a real snapshot (gw_snapshot_build) on a configuration written here: one HS256 issuer (a
 *   secret file), an agency token, a Sub-Account token for location LOC1, a TLS certificate
 *   and key made here with OpenSSL, and two policies: a-admin (every op, everywhere, no read
 *   rules) for sub svc-admin, b-bot (company co1, location LOC1, grants account/user with
 *   contacts.write, redacts phone) for sub svc-bot;
 * - tokens signed here (HS256 with OpenSSL's HMAC): valid, expired, in their leeway, with a
 *   wrong signature, without users.write;
 * - a fake upstream that keeps each request's bytes and answers from the test's script (a
 *   status, headers and body, or a failure kind with `sent`) from the loop, never from inside
 *   send, as gw_upstream_send promises;
 * - a fake audit sink that keeps each record (parsed strictly as "{" members "}") and answers
 *   intent records as scripted: written, failed, never (audit.sync_timeout_ms passes), or
 *   written just as the deadline passes; abandon takes the item as audit.h says (freed at
 *   once, so a request that touched it afterwards would fail under AddressSanitizer);
 * - a fake client (the reply), the access log (struct gw_access copies), the trace of stages,
 *   a timeline of everything the request did outside, in order, and its error log (stderr,
 *   captured while it runs).
 *
 * Requests are built as conn.c builds them: the head scanned and parsed by gw_http1_scan and
 * gw_http1_parse (a refused one becomes rejected/kind/why), the body in an evbuffer. JSON texts
 * (bodies, answers, expected replies and records) are written with single quotes for double
 * quotes and ` for an apostrophe; dq() turns them back. */
#include <check.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cJSON.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include "auth.h"
#include "b64url.h"
#include "config.h"
#include "conn.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "openapi.h"
#include "ratelimit.h"
#include "request.h"
#include "rlscript.h"
#include "snapshot.h"
#include "token_cache.h"
#include "trace.h"

#define ISS "https://idp.test"
#define VERSION "2021-07-28"
#define SECRET "0123456789abcdef0123456789abcdef" /* 32 bytes: HS256's minimum */
#define AGENCY "agency-credential-0123"
#define LOC1_TOKEN "location-credential-LOC1"
#define CERT_SHA "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01"
#define DEFAULT_HOST "services.leadconnectorhq.com"
#define MAX 16
/* the env's replica (the audit log's); the snapshot's config names another, which a record
 * must not take: a reload does not change the replica of a chain */
#define TEST_REPLICA "gw-test-7"

/* ======================= the world of one test ======================= */

struct answer {
    enum gw_upstream_error err;
    bool sent;        /* for failures: a byte of the request may have left */
    int status;       /* for answers */
    char *headers;    /* "Name: value" lines separated by \n, or NULL */
    char *body;       /* or NULL */
    bool refuse_call; /* send returns NULL: the call cannot be started */
};

struct sent {
    char *bytes;
    bool retryable;
};

struct reply {
    int status;
    char *reason;
    char *hname[MAX * 5], *hvalue[MAX * 5];
    size_t nh;
    char *body;
    bool close;
};

struct record {
    enum gw_audit_event ev;
    char *members;
    cJSON *j; /* "{" members "}", parsed strictly */
};

enum intent_mode {
    INTENT_WRITTEN, /* the writer answers ok */
    INTENT_FAILED,  /* the writer answers: not written */
    INTENT_NEVER,   /* the writer never answers (a hung disk) */
    INTENT_LATE,    /* the writer answers as the deadline passes: abandon finds it answered */
};

struct opts {
    const char *url;      /* upstream.url; NULL: the default */
    bool no_agency;       /* credentials.agency_token_file null */
    bool include_reads;   /* audit.include_reads */
    long sync_timeout_ms; /* 0: 5000 */
    long subject_burst;   /* rate_limit.per_subject.burst per hour; 0: 100 */
    long upstream_burst;  /* rate_limit.upstream.burst per hour; 0: 100 */
    const char *openapi;  /* upstream.openapi (in the folder); NULL: the shipped document */
    long replicas;        /* rate_limit.replicas; 0: 1 */
    const char *on_failure; /* given: rate_limit.redis is set, with this on_failure */
};

/* The fake shared store (gw_req_env.store_check): what it does with a call. */
enum store_mode {
    STORE_VERDICT,  /* answers the scripted verdict, from the loop */
    STORE_UNUSABLE, /* refuses the call: store_check returns false */
    STORE_ERROR,    /* answers a failure (an error answer, the connection lost) */
    STORE_TIMEOUT,  /* answers no answer within timeout_ms */
};

static struct {
    char dir[64];
    struct gw_snapshot *snap;
    struct event_base *base;
    struct gw_token_cache *cache;
    struct gw_metrics *m;
    struct gw_rl *rl;
    struct gw_req_ids ids;
    struct gw_req_env env;
    int conn_token;         /* its address is the client connection handed back to reply */
    uint64_t read_max_body; /* the body limit the connection read under; 0: the snapshot's */
    bool no_ip;             /* the connection knows no peer address */
    bool no_trace;          /* the env has no trace (as the worker's) */
    /* the fake upstream */
    struct answer script[MAX];
    size_t nscript, next;
    /* the fake shared store */
    enum store_mode store_mode;
    struct gw_rlstore_answer store_answer; /* STORE_VERDICT's */
    struct gw_rlstore_ask store_ask;       /* the last call's */
    unsigned char store_subject[32];
    int store_calls;
    struct sent sent[MAX];
    size_t nsent;
    /* the fake audit sink */
    bool audit_on;
    enum intent_mode intent_mode;
    struct record recs[MAX];
    size_t nrecs;
    struct record abandoned; /* the outcome given with an abandoned intent */
    int nabandoned, abandon_calls;
    /* the client, the access log, the trace, the timeline */
    struct reply replies[MAX];
    size_t nreplies;
    struct gw_access logs[MAX];
    size_t nlogs;
    int done;
    enum gw_req_stage trace[64];
    size_t ntrace;
    char timeline[2048];
    char errlog[8192]; /* what the request wrote to the error log (stderr) */
    int saved_stderr;
} W;

static struct {
    char *admin, *bot, *nobody, *reader, *expired, *badsig, *leeway;
} T;

/* ---- files ---- */

/* A malloc'd copy of s with every ' turned into " and every ` into '. */
static char *dq(const char *s)
{
    char *d = strdup(s);
    ck_assert_ptr_nonnull(d);
    for (char *p = d; *p; p++)
        if (*p == '\'')
            *p = '"';
        else if (*p == '`')
            *p = '\'';
    return d;
}

static void put(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", W.dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* Writes a JSON file given with single quotes. */
static void put_json(const char *name, const char *text)
{
    char *t = dq(text);
    put(name, t);
    free(t);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A self-signed P-256 certificate and its key, for the snapshot's server TLS context. */
static void make_cert(void)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ck_assert(pk && x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"gw.test", -1, -1, 0);
    X509_set_issuer_name(x, n);
    ck_assert(X509_sign(x, pk, EVP_sha256()) > 0);
    char path[256];
    snprintf(path, sizeof path, "%s/gw.crt", W.dir);
    FILE *f = fopen(path, "w");
    ck_assert(f && PEM_write_X509(f, x) == 1);
    fclose(f);
    snprintf(path, sizeof path, "%s/gw.key", W.dir);
    f = fopen(path, "w");
    ck_assert(f && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

/* ---- tokens ---- */

/* An HS256 JWT of issuer ISS for sub with scope, issued and expiring at now + the offsets,
 * signed with secret. client_id and jti name the subject. */
static char *mint(const char *sub, const char *scope, long iat_off, long exp_off,
                  const char *secret)
{
    long long now = (long long)time(NULL);
    char claims[512];
    snprintf(claims, sizeof claims,
             "{\"iss\":\"" ISS "\",\"sub\":\"%s\",\"aud\":\"ghl-gateway\",\"scope\":\"%s\","
             "\"client_id\":\"cli-%s\",\"jti\":\"jti-%s\",\"iat\":%lld,\"exp\":%lld}",
             sub, scope, sub, sub, now + iat_off, now + exp_off);
    const char *header = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}";
    char input[1024];
    size_t n = gw_b64url_encode((const unsigned char *)header, strlen(header), input);
    input[n++] = '.';
    n += gw_b64url_encode((const unsigned char *)claims, strlen(claims), input + n);
    unsigned char mac[32];
    unsigned int maclen = 0;
    ck_assert_ptr_nonnull(HMAC(EVP_sha256(), secret, (int)strlen(secret),
                               (const unsigned char *)input, n, mac, &maclen));
    char *tok = malloc(n + 1 + GW_B64URL_ENCODED_SIZE(sizeof mac));
    memcpy(tok, input, n);
    tok[n] = '.';
    gw_b64url_encode(mac, maclen, tok + n + 1);
    return tok;
}

static void mint_tokens(void)
{
    const char *rw = "users.readonly users.write";
    T.admin = mint("svc-admin", rw, -60, 600, SECRET);
    T.bot = mint("svc-bot", rw, -60, 600, SECRET);
    T.nobody = mint("svc-nobody", rw, -60, 600, SECRET);
    T.reader = mint("svc-admin", "users.readonly", -60, 600, SECRET);
    T.expired = mint("svc-admin", rw, -7200, -3600, SECRET);
    T.badsig = mint("svc-admin", rw, -60, 600, "fedcba9876543210fedcba9876543210");
    T.leeway = mint("svc-admin", rw, -600, -10, SECRET); /* leeway_s is 60 */
}

/* ---- the snapshot ---- */

/* Writes gateway.json (o: what differs from the defaults, or NULL) and makes its snapshot the
 * one new requests start on. */
static void boot(const struct opts *o)
{
    static const struct opts none = {0};
    if (o == NULL)
        o = &none;
    char text[4096];
    snprintf(text, sizeof text,
             "{'listen':{'address':'127.0.0.1','port':18443},"
             "'tls':{'cert':'gw.crt','key':'gw.key'},"
             "'upstream':{'url':'%s','api_versions':['" VERSION "'],'openapi':%s%s%s},"
             "'credentials':{'agency_token_file':%s,"
             "'location_token_files':{'LOC1':'loc1.token'}},"
             "'auth':{'issuers':[{'issuer':'" ISS "','audiences':['ghl-gateway'],"
             "'keys':[{'kid':'k1','alg':'HS256','secret_file':'hs.secret'}]}]},"
             "'policies':{'dir':'policies'},"
             "'audit':{'file':null,'include_reads':%s,'sync_timeout_ms':%ld,"
             "'replica_id':'reloaded-elsewhere'},"
             "'rate_limit':{'per_subject':{'burst':%ld,'per_seconds':3600},"
             "'upstream':{'burst':%ld,'per_seconds':3600,'daily':200000},"
             "'replicas':%ld,'redis':%s%s%s},"
             "'limits':{'max_body_bytes':4096,'max_token_bytes':1024}}",
             o->url ? o->url : "https://" DEFAULT_HOST, o->openapi ? "'" : "",
             o->openapi ? o->openapi : "null", o->openapi ? "'" : "",
             o->no_agency ? "null" : "'agency.token'", o->include_reads ? "true" : "false",
             o->sync_timeout_ms ? o->sync_timeout_ms : 5000,
             o->subject_burst ? o->subject_burst : 100,
             o->upstream_burst ? o->upstream_burst : 100, o->replicas ? o->replicas : 1,
             o->on_failure ? "{'url':'redis://127.0.0.1:6390/1','on_failure':'" : "null",
             o->on_failure ? o->on_failure : "", o->on_failure ? "'}" : "");
    put_json("gateway.json", text);
    char path[256];
    snprintf(path, sizeof path, "%s/gateway.json", W.dir);
    struct gw_errs errs = {0};
    struct gw_snapshot *s = gw_snapshot_build(path, &errs);
    ck_assert_msg(s != NULL, "snapshot refused: %s", errs.problems.n ? errs.problems.v[0] : "?");
    gw_errs_free(&errs);
    if (W.cache) /* as a worker adopting a snapshot: its principals point into the old issuers */
        gw_token_cache_clear(W.cache);
    gw_snapshot_unref(W.snap);
    W.snap = s;
}

#define ALLOPS                                                                                     \
    "['create-user','search-users','filter-users-by-email','get-user','update-user',"              \
    "'delete-user','get-user-by-location']"

/* ======================= the fakes ======================= */

/* ---- randomness, as a failing DRBG answers ----
 * This definition takes the place of libcrypto's RAND_bytes for proxy/request.c (linked in
 * from gwcore); the real one is called through dlsym. Each test runs in its own process. */

static int rand_fail_n; /* the next n calls fail */

int RAND_bytes(unsigned char *buf, int num)
{
    if (rand_fail_n > 0) {
        rand_fail_n--;
        return 0;
    }
    int (*f)(unsigned char *, int) = (int (*)(unsigned char *, int))dlsym(RTLD_NEXT, "RAND_bytes");
    ck_assert_ptr_nonnull(f);
    return f(buf, num);
}

static void timeline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void timeline(const char *fmt, ...)
{
    size_t n = strlen(W.timeline);
    if (n && n + 1 < sizeof W.timeline)
        W.timeline[n++] = '|';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(W.timeline + n, sizeof W.timeline - n, fmt, ap);
    va_end(ap);
}

static struct gw_snapshot *fake_snapshot(void *arg)
{
    (void)arg;
    return W.snap;
}

/* ---- the upstream ---- */

struct call {
    struct answer *a;
    gw_upstream_cb cb;
    void *cbarg;
};

static const char *const fail_why[] = {
    [GW_UP_CONNECT] = "connect to services.leadconnectorhq.com:443: Connection refused",
    [GW_UP_TLS] = "TLS handshake with services.leadconnectorhq.com: certificate verify failed",
    [GW_UP_TIMEOUT] = "no answer within upstream.timeout_ms",
    [GW_UP_PROTOCOL] = "upstream closed the connection mid-answer",
    [GW_UP_SHUTDOWN] = "the worker is stopping",
};

/* Answers a call from the loop: the result lives only during the callback. */
static void deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct call *c = arg;
    struct answer *a = c->a;
    struct gw_upstream_result res = {.err = a->err, .ms = 12.5};
    res.sent = a->err == GW_UP_OK ? true : a->sent;
    res.body = evbuffer_new();
    char *hdrs = a->headers ? strdup(a->headers) : NULL;
    if (a->err != GW_UP_OK) {
        snprintf(res.why, sizeof res.why, "%s", fail_why[a->err]);
    } else {
        res.status = a->status;
        for (char *line = hdrs, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            char *colon = strstr(line, ": ");
            ck_assert_ptr_nonnull(colon);
            *colon = '\0';
            res.hname[res.nheaders] = line;
            res.hvalue[res.nheaders++] = colon + 2;
        }
        if (a->body)
            evbuffer_add(res.body, a->body, strlen(a->body));
    }
    c->cb(&res, c->cbarg);
    evbuffer_free(res.body);
    free(hdrs);
    free(c);
}

static struct gw_upstream_call *fake_send(void *arg, struct gw_snapshot *snap, const char *request,
                                          size_t len, bool retryable, gw_upstream_cb cb,
                                          void *cbarg)
{
    (void)arg;
    ck_assert_ptr_eq(snap, W.snap);
    ck_assert_msg(W.nsent < MAX, "too many upstream requests");
    char *bytes = malloc(len + 1);
    memcpy(bytes, request, len);
    bytes[len] = '\0';
    W.sent[W.nsent++] = (struct sent){bytes, retryable};
    timeline("upstream:%.*s", (int)strcspn(bytes, "\r"), bytes);
    ck_assert_msg(W.next < W.nscript, "an upstream request the test did not expect:\n%s", bytes);
    struct answer *a = &W.script[W.next++];
    if (a->refuse_call)
        return NULL;
    struct call *c = malloc(sizeof *c);
    *c = (struct call){a, cb, cbarg};
    const struct timeval now = {0, 0};
    ck_assert_int_eq(event_base_once(W.base, -1, EV_TIMEOUT, deliver, c, &now), 0);
    return (struct gw_upstream_call *)c;
}

/* ---- the shared rate-limit store: answers from the loop, never from inside the call ---- */

struct store_call {
    gw_rlstore_cb cb;
    void *arg;
};

static void store_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct store_call *c = arg;
    struct gw_rlstore_answer a = W.store_answer;
    if (W.store_mode == STORE_ERROR)
        a = (struct gw_rlstore_answer){.result = GW_RLSTORE_ERROR};
    else if (W.store_mode == STORE_TIMEOUT)
        a = (struct gw_rlstore_answer){.result = GW_RLSTORE_TIMEOUT};
    timeline("store answers");
    c->cb(c->arg, &a);
    free(c);
}

static bool fake_store_check(void *arg, const struct gw_rlstore_ask *ask, gw_rlstore_cb cb,
                             void *cbarg)
{
    (void)arg;
    W.store_calls++;
    W.store_ask = *ask;
    memcpy(W.store_subject, ask->subject, 32);
    W.store_ask.subject = W.store_subject;
    timeline("store:cost %d", ask->cost);
    if (W.store_mode == STORE_UNUSABLE)
        return false;
    struct store_call *c = malloc(sizeof *c);
    *c = (struct store_call){cb, cbarg};
    const struct timeval now = {0, 0};
    ck_assert_int_eq(event_base_once(W.base, -1, EV_TIMEOUT, store_deliver, c, &now), 0);
    return true;
}

/* The env gets a store that does mode; a verdict is allowed unless refused_scope >= 0. */
static void use_store(enum store_mode mode, int refused_scope)
{
    W.env.store_check = fake_store_check;
    W.store_mode = mode;
    W.store_answer = (struct gw_rlstore_answer){
        .result = GW_RLSTORE_VERDICT,
        .verdict = {.allowed = refused_scope < 0, .retry_after_s = refused_scope < 0 ? 0 : 7,
                    .max = 5, .remaining = refused_scope < 0 ? 4 : 0, .interval_ms = 10000,
                    .daily = refused_scope == GW_RLS_DAILY},
        .scope = refused_scope < 0 ? GW_RLS_SUBJECT : refused_scope};
}

static struct answer *script(void)
{
    ck_assert(W.nscript < MAX);
    return &W.script[W.nscript++];
}

/* The upstream answers status with headers ("Name: value" lines joined by \n) and body (single
 * quotes become double quotes). */
static void up_answer(int status, const char *headers, const char *body)
{
    struct answer *a = script();
    a->status = status;
    a->headers = headers ? strdup(headers) : NULL;
    a->body = body ? dq(body) : NULL;
}

/* The upstream answers status with a JSON body. */
static void up_json(int status, const char *body)
{
    up_answer(status, "Content-Type: application/json; charset=utf-8", body);
}

/* The call fails with err; sent: a byte of the request may have left. */
static void up_fail(enum gw_upstream_error err, bool sent)
{
    struct answer *a = script();
    a->err = err;
    a->sent = sent;
}

static void up_refuse_call(void)
{
    script()->refuse_call = true;
}

/* ---- the audit sink ---- */

static void record(struct record *r, enum gw_audit_event ev, const char *members)
{
    r->ev = ev;
    r->members = strdup(members);
    size_t n = strlen(members);
    char *text = malloc(n + 3);
    text[0] = '{';
    memcpy(text + 1, members, n);
    text[n + 1] = '}';
    text[n + 2] = '\0';
    struct gw_json_error je;
    r->j = gw_json_parse(text, n + 2, NULL, &je);
    ck_assert_msg(r->j != NULL, "audit members are not JSON (%s): %s", je.msg, text);
    free(text);
}

static bool fake_audit_enabled(void *arg)
{
    (void)arg;
    return W.audit_on;
}

static void fake_audit_post(void *arg, enum gw_audit_event e, char *members)
{
    (void)arg;
    ck_assert(W.audit_on);
    ck_assert_ptr_nonnull(members);
    ck_assert(W.nrecs < MAX);
    record(&W.recs[W.nrecs++], e, members);
    timeline("audit:%s", gw_audit_event_name(e));
    free(members);
}

/* The writer's answer: the item is its submitter's again once its event is activated. */
static void answer_intent(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_audit_item *it = arg;
    it->ok = W.intent_mode == INTENT_WRITTEN;
    it->seq = it->ok ? 7 : 0;
    it->answered = true;
    event_active(it->done, EV_TIMEOUT, 0);
}

static void fake_audit_intent(void *arg, struct gw_audit_item *it)
{
    (void)arg;
    ck_assert(W.audit_on);
    ck_assert_int_eq(it->event, GW_AUDIT_INTENT);
    ck_assert_ptr_nonnull(it->done);
    ck_assert(W.nrecs < MAX);
    record(&W.recs[W.nrecs++], it->event, it->members);
    timeline("audit:intent");
    if (W.intent_mode == INTENT_WRITTEN || W.intent_mode == INTENT_FAILED) {
        const struct timeval now = {0, 0};
        ck_assert_int_eq(event_base_once(W.base, -1, EV_TIMEOUT, answer_intent, it, &now), 0);
    }
}

static bool fake_audit_answered(void *arg, const struct gw_audit_item *it)
{
    (void)arg;
    return it->answered;
}

/* As gw_audit_abandon: false (outcome freed) when the writer answered first; true when the
 * item is now the log's (freed here at once: the request must not touch it again). */
static bool fake_audit_abandon(void *arg, struct gw_audit_item *it, char *outcome)
{
    (void)arg;
    W.abandon_calls++;
    if (W.intent_mode == INTENT_LATE && !it->answered) {
        /* the writer gets the record on disk just now, as the deadline passes */
        it->ok = true;
        it->answered = true;
        event_active(it->done, EV_TIMEOUT, 0);
    }
    if (it->answered) {
        free(outcome);
        return false;
    }
    ck_assert_ptr_nonnull(outcome);
    record(&W.abandoned, GW_AUDIT_OUTCOME, outcome);
    W.nabandoned++;
    timeline("audit:abandoned");
    free(outcome);
    free(it->members);
    free(it);
    return true;
}

/* ---- the client, the access log, the trace ---- */

static void fake_reply(void *arg, struct gw_conn *c, int status, const char *reason,
                       const struct gw_header *hdrs, size_t nhdrs, struct evbuffer *body,
                       bool close)
{
    (void)arg;
    ck_assert_ptr_eq(c, (struct gw_conn *)&W.conn_token);
    ck_assert(W.nreplies < MAX);
    struct reply *r = &W.replies[W.nreplies++];
    r->status = status;
    r->reason = strdup(reason);
    ck_assert(nhdrs <= sizeof r->hname / sizeof *r->hname);
    for (size_t i = 0; i < nhdrs; i++) {
        r->hname[i] = strdup(hdrs[i].name);
        r->hvalue[i] = strdup(hdrs[i].value);
    }
    r->nh = nhdrs;
    size_t n = body ? evbuffer_get_length(body) : 0;
    r->body = malloc(n + 1);
    if (n)
        evbuffer_remove(body, r->body, n);
    r->body[n] = '\0';
    r->close = close;
    timeline("reply:%d", status);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void fake_log(void *arg, const struct gw_access *a)
{
    (void)arg;
    ck_assert(W.nlogs < MAX);
    struct gw_access *c = &W.logs[W.nlogs++];
    *c = *a;
    c->request_id = dup_or_null(a->request_id);
    c->trace_id = dup_or_null(a->trace_id);
    c->ip = dup_or_null(a->ip);
    c->method = dup_or_null(a->method);
    c->path = dup_or_null(a->path);
    c->op = dup_or_null(a->op);
    c->sub = dup_or_null(a->sub);
    c->policy = dup_or_null(a->policy);
    c->auth_failure = dup_or_null(a->auth_failure);
    timeline("log:%d", a->status);
}

static void fake_done(void *arg)
{
    (void)arg;
    W.done++;
    timeline("done");
}

static void fake_trace(void *arg, const char *request_id, enum gw_req_stage s)
{
    (void)arg;
    ck_assert_ptr_nonnull(request_id);
    ck_assert(W.ntrace < sizeof W.trace / sizeof *W.trace);
    W.trace[W.ntrace++] = s;
}

/* ---- the error log ---- */

static int real_stderr = -1; /* the process's stderr, kept while a request's is captured */

static void errlog_begin(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/stderr", W.dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    W.saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(W.saved_stderr, 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

static void errlog_end(void)
{
    if (W.saved_stderr < 0)
        return;
    dup2(W.saved_stderr, STDERR_FILENO);
    close(W.saved_stderr);
    W.saved_stderr = -1;
    char path[128];
    snprintf(path, sizeof path, "%s/stderr", W.dir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(W.errlog, 1, sizeof W.errlog - 1, f);
    W.errlog[n] = '\0';
    fclose(f);
}

/* The error log holds exactly one line, an error naming the request and containing what. */
static void assert_logged_once(const char *what)
{
    const char *nl = strchr(W.errlog, '\n');
    ck_assert_msg(nl != NULL && nl[1] == '\0', "not one line: %s", W.errlog);
    ck_assert_msg(strstr(W.errlog, " error: request ") != NULL, "%s", W.errlog);
    ck_assert_msg(strstr(W.errlog, W.logs[0].request_id) != NULL, "%s", W.errlog);
    ck_assert_msg(strstr(W.errlog, what) != NULL, "no \"%s\" in: %s", what, W.errlog);
}

#define ASSERT_NOTHING_LOGGED() ck_assert_msg(W.errlog[0] == '\0', "logged: %s", W.errlog)

/* ---- set-up and teardown ---- */

static void setup(void)
{
#if defined(__SANITIZE_ADDRESS__)
    /* a sanitizer's report from inside a request must not land in its captured error log (set
     * here, in the test's own process: the sanitizer reopens its report file after a fork) */
    __sanitizer_set_report_fd((void *)(intptr_t)real_stderr);
#endif
    memset(&W, 0, sizeof W);
    W.saved_stderr = -1;
    snprintf(W.dir, sizeof W.dir, "/tmp/gwreq.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(W.dir));
    put("hs.secret", SECRET);
    put("agency.token", AGENCY "\n");
    put("loc1.token", LOC1_TOKEN "\n");
    make_cert();
    char path[256];
    snprintf(path, sizeof path, "%s/policies", W.dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    put_json("policies/a-admin.json",
             "{'name':'a-admin','subjects':[{'sub':'svc-admin'}],'operations':" ALLOPS ","
             "'companies':'*','locations':'*',"
             "'grant':{'types':['account','agency'],'roles':['admin','user'],'scopes':['*'],"
             "'scopes_assigned_to_only':['*']}}");
    put_json("policies/b-bot.json",
             "{'name':'b-bot','subjects':[{'sub':'svc-bot'}],'operations':" ALLOPS ","
             "'companies':['co1'],'locations':['LOC1'],"
             "'grant':{'types':['account'],'roles':['user'],'scopes':['contacts.write'],"
             "'scopes_assigned_to_only':['contacts.write']},"
             "'reads':{'redact':['phone']}}");
    boot(NULL);
    mint_tokens();
    W.base = event_base_new();
    W.cache = gw_token_cache_new(64);
    W.m = calloc(1, sizeof *W.m);
    W.rl = gw_rl_new();
    ck_assert(W.base && W.cache && W.m && W.rl);
    W.audit_on = true;
    W.env = (struct gw_req_env){
        .base = W.base,
        .cache = W.cache,
        .m = W.m,
        .rl = W.rl,
        .ids = &W.ids,
        .replica = TEST_REPLICA,
        .snapshot = fake_snapshot,
        .send = fake_send,
        .audit_enabled = fake_audit_enabled,
        .audit_post = fake_audit_post,
        .audit_intent = fake_audit_intent,
        .audit_answered = fake_audit_answered,
        .audit_abandon = fake_audit_abandon,
        .reply = fake_reply,
        .log = fake_log,
        .done = fake_done,
        .trace = fake_trace,
    };
}

/* Forgets what the last request did (the cache, limits and metrics stay). */
static void clear_capture(void)
{
    for (size_t i = 0; i < W.nscript; i++) {
        free(W.script[i].headers);
        free(W.script[i].body);
    }
    for (size_t i = 0; i < W.nsent; i++)
        free(W.sent[i].bytes);
    for (size_t i = 0; i < W.nrecs; i++) {
        free(W.recs[i].members);
        cJSON_Delete(W.recs[i].j);
    }
    free(W.abandoned.members);
    cJSON_Delete(W.abandoned.j);
    for (size_t i = 0; i < W.nreplies; i++) {
        struct reply *r = &W.replies[i];
        free(r->reason);
        free(r->body);
        for (size_t k = 0; k < r->nh; k++) {
            free(r->hname[k]);
            free(r->hvalue[k]);
        }
    }
    for (size_t i = 0; i < W.nlogs; i++) {
        struct gw_access *a = &W.logs[i];
        free((char *)a->request_id);
        free((char *)a->trace_id);
        free((char *)a->ip);
        free((char *)a->method);
        free((char *)a->path);
        free((char *)a->op);
        free((char *)a->sub);
        free((char *)a->policy);
        free((char *)a->auth_failure);
    }
    memset(W.script, 0, sizeof W.script);
    W.nscript = W.next = W.nsent = W.nrecs = W.nreplies = W.nlogs = W.ntrace = 0;
    memset(&W.abandoned, 0, sizeof W.abandoned);
    W.nabandoned = W.abandon_calls = W.done = 0;
    W.timeline[0] = '\0';
    W.errlog[0] = '\0';
}

static void teardown(void)
{
    errlog_end();
    clear_capture();
    gw_token_cache_free(W.cache); /* its principals point into the snapshot's issuers */
    gw_snapshot_unref(W.snap);
    gw_rl_free(W.rl);
    free(W.m);
    if (W.base)
        event_base_free(W.base);
    nftw(W.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(T.admin);
    free(T.bot);
    free(T.nobody);
    free(T.reader);
    free(T.expired);
    free(T.badsig);
    free(T.leeway);
    memset(&T, 0, sizeof T);
}

/* ======================= requests ======================= */

/* Hands the request head (with its body) to the state machine as conn.c does, and runs the
 * loop until nothing is left to do. The head is scanned and parsed under the snapshot's
 * limits (W.read_max_body: a connection that read it under a larger body limit). */
static void run_head(const char *head, size_t headlen, const char *body, const char *cert)
{
    char *h = malloc(headlen + 1);
    memcpy(h, head, headlen);
    h[headlen] = '\0';
    struct gw_http_req rq = {0};
    rq.body = evbuffer_new();
    rq.started_ms = gw_now_ms();
    rq.started_mono = gw_mono_ms();
    size_t scanned = 0;
    struct gw_http1_error err;
    long hl = gw_http1_scan((const unsigned char *)h, headlen, &scanned,
                            (size_t)W.snap->cfg->limits.max_header_bytes, &err);
    ck_assert_msg(hl != 0, "the test's head is incomplete");
    uint64_t max_body =
        W.read_max_body ? W.read_max_body : (uint64_t)W.snap->cfg->limits.max_body_bytes;
    if (hl < 0 || gw_http1_parse(h, (size_t)hl, max_body, &rq.head, &err) != 0) {
        rq.rejected = true;
        rq.kind = err.kind;
        rq.why = err.why;
    } else {
        size_t blen = body ? strlen(body) : 0;
        ck_assert_uint_eq(rq.head.content_length, blen);
        if (blen)
            evbuffer_add(rq.body, body, blen);
        rq.bytes_in = (uint64_t)hl + blen;
    }
    struct gw_req_client client = {.conn = (struct gw_conn *)&W.conn_token,
                                   .ip = W.no_ip ? NULL : "10.1.2.3",
                                   .cert_sha256 = cert};
    struct gw_req_env env = W.env;
    if (W.no_trace)
        env.trace = NULL;
    errlog_begin();
    gw_req_start(&env, &client, &rq);
    int rc = event_base_dispatch(W.base);
    errlog_end();
    ck_assert_int_eq(rc, 1); /* 1: no event was left */
    evbuffer_free(rq.body);
    free(h);
}

struct req {
    const char *method, *target;
    const char *token;   /* Authorization: Bearer <token>; NULL: no Authorization */
    const char *body;    /* single quotes become double quotes; with Content-Type JSON */
    const char *headers; /* more header lines, each ending with \r\n */
    bool no_version;     /* leave the Version header out */
    const char *cert;    /* the client certificate's SHA-256 (mTLS), or NULL */
};

static void send_req(struct req q)
{
    char *body = q.body ? dq(q.body) : NULL;
    char head[8192];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: gw.test\r\n", q.method, q.target);
    if (q.token)
        n += snprintf(head + n, sizeof head - (size_t)n, "Authorization: Bearer %s\r\n", q.token);
    if (!q.no_version)
        n += snprintf(head + n, sizeof head - (size_t)n, "Version: " VERSION "\r\n");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", strlen(body));
    n += snprintf(head + n, sizeof head - (size_t)n, "%s\r\n", q.headers ? q.headers : "");
    ck_assert((size_t)n < sizeof head);
    run_head(head, (size_t)n, body, q.cert);
    free(body);
}

/* Sends a request; the upstream answers from what the test scripted since the last one. */
#define CALL(...) send_req((struct req){__VA_ARGS__})

/* Starts a new request's capture (call before scripting its upstream answers). */
static void next_request(void)
{
    clear_capture();
}

/* ======================= assertions ======================= */

static const struct reply *the_reply(void)
{
    ck_assert_msg(W.nreplies == 1, "%zu replies (timeline %s)", W.nreplies, W.timeline);
    return &W.replies[0];
}

static const struct gw_access *the_log(void)
{
    ck_assert_msg(W.nlogs == 1, "%zu access log lines", W.nlogs);
    return &W.logs[0];
}

/* The value of the reply's header name, or NULL. */
static const char *hdr(const char *name)
{
    const struct reply *r = the_reply();
    const char *v = NULL;
    for (size_t i = 0; i < r->nh; i++)
        if (strcasecmp(r->hname[i], name) == 0) {
            ck_assert_msg(v == NULL, "header %s sent twice", name);
            v = r->hvalue[i];
        }
    return v;
}

/* The reply's header names, in order, joined by commas. */
static const char *hdr_names(void)
{
    static char names[1024];
    const struct reply *r = the_reply();
    names[0] = '\0';
    for (size_t i = 0; i < r->nh; i++) {
        size_t n = strlen(names);
        snprintf(names + n, sizeof names - n, "%s%s", i ? "," : "", r->hname[i]);
    }
    return names;
}

static bool is_hex32(const char *s)
{
    return s && strlen(s) == 32 && strspn(s, "0123456789abcdef") == 32;
}

/* The traceparent the request's reply carried: valid, and naming the access log's trace id. */
static const char *the_traceparent(void)
{
    const char *tp = hdr("traceparent");
    ck_assert_msg(tp && gw_trace_valid(tp), "traceparent %s", tp ? tp : "(none)");
    ck_assert_msg(strncmp(tp + 3, the_log()->trace_id, 32) == 0 && the_log()->trace_id[32] == 0,
                  "the reply's traceparent %s, the access log's trace_id %s", tp,
                  the_log()->trace_id);
    return tp;
}

/* The one reply: its status, phrase and exact body (single quotes for double), its
 * X-Request-Id, and the request ended once. */
#define ASSERT_REPLY(st, body_sq)                                                                  \
    do {                                                                                           \
        const struct reply *r_ = the_reply();                                                      \
        ck_assert_int_eq(r_->status, (st));                                                        \
        ck_assert_str_eq(r_->reason, gw_status_phrase(st));                                        \
        char *b_ = dq(body_sq);                                                                    \
        ck_assert_str_eq(r_->body, b_);                                                            \
        free(b_);                                                                                  \
        ck_assert_int_eq(W.done, 1);                                                               \
        ck_assert_str_eq(hdr("X-Request-Id"), the_log()->request_id);                              \
        (void)the_traceparent();                                                                   \
    } while (0)

#define ASSERT_STAGES(...)                                                                         \
    do {                                                                                           \
        const enum gw_req_stage s_[] = {__VA_ARGS__};                                              \
        char got_[512] = "", want_[512] = "";                                                      \
        for (size_t i_ = 0; i_ < W.ntrace; i_++)                                                   \
            snprintf(got_ + strlen(got_), sizeof got_ - strlen(got_), "%s ",                       \
                     gw_req_stage_name(W.trace[i_]));                                              \
        for (size_t i_ = 0; i_ < sizeof s_ / sizeof *s_; i_++)                                     \
            snprintf(want_ + strlen(want_), sizeof want_ - strlen(want_), "%s ",                   \
                     gw_req_stage_name(s_[i_]));                                                   \
        ck_assert_str_eq(got_, want_);                                                             \
    } while (0)

#define ASSERT_TIMELINE(text) ck_assert_str_eq(W.timeline, (text))

#define ASSERT_NOTHING_SENT() ck_assert_msg(W.nsent == 0, "sent upstream: %s", W.sent[0].bytes)

/* The access log line: status, op, policy, sub, auth_failure and upstream status. */
static void assert_log(int status, const char *op, const char *policy, const char *sub,
                       const char *auth_failure, int upstream_status)
{
    const struct gw_access *a = the_log();
    ck_assert_int_eq(a->status, status);
    ck_assert_pstr_eq(a->op, op);
    ck_assert_pstr_eq(a->policy, policy);
    ck_assert_pstr_eq(a->sub, sub);
    ck_assert_pstr_eq(a->auth_failure, auth_failure);
    ck_assert_int_eq(a->upstream_status, upstream_status);
    ck_assert_str_eq(a->ip, "10.1.2.3");
    ck_assert_uint_eq(a->bytes_out, strlen(the_reply()->body));
    ck_assert(a->duration_ms >= 0);
    if (upstream_status)
        ck_assert(a->upstream_ms == 12.5);
}

/* The i-th audit record: its event, then its members in record order, compared as text
 * with request_id (checked: the request's), replica (checked: the env's, right after
 * request_id, as SPEC §9 shows), trace_id (checked: the access log's, right after replica)
 * and duration_ms (checked: a number) taken out. */
static void assert_record_json(const struct record *rec, const char *event, const char *want_sq)
{
    ck_assert_str_eq(gw_audit_event_name(rec->ev), event);
    cJSON *j = cJSON_Duplicate(rec->j, 1);
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(j, "request_id");
    ck_assert(cJSON_IsString(rid));
    ck_assert_str_eq(rid->valuestring, W.nlogs ? W.logs[0].request_id : rid->valuestring);
    ck_assert_ptr_eq(j->child, rid);
    ck_assert_msg(rid->next && rid->next->string && strcmp(rid->next->string, "replica") == 0 &&
                      cJSON_IsString(rid->next) &&
                      strcmp(rid->next->valuestring, TEST_REPLICA) == 0,
                  "the member after request_id is not \"replica\":\"" TEST_REPLICA "\"");
    const cJSON *tid = rid->next->next;
    ck_assert_msg(tid && tid->string && strcmp(tid->string, "trace_id") == 0 &&
                      cJSON_IsString(tid) && is_hex32(tid->valuestring),
                  "the member after replica is not \"trace_id\" with 32 hex digits");
    if (W.nlogs)
        ck_assert_str_eq(tid->valuestring, W.logs[0].trace_id);
    cJSON_DeleteItemFromObjectCaseSensitive(j, "trace_id");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "replica");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "request_id");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "duration_ms");
    if (d) {
        ck_assert(cJSON_IsNumber(d) && d->valuedouble >= 0);
        cJSON_DeleteItemFromObjectCaseSensitive(j, "duration_ms");
    }
    char *got = cJSON_PrintUnformatted(j);
    char *want = dq(want_sq);
    ck_assert_str_eq(got, want);
    free(want);
    cJSON_free(got);
    cJSON_Delete(j);
}

static void assert_record(size_t i, const char *event, const char *want_sq)
{
    ck_assert_msg(i < W.nrecs, "no audit record %zu (%zu written)", i, W.nrecs);
    assert_record_json(&W.recs[i], event, want_sq);
}

/* The i-th upstream request, exactly (\r\n written as \n in want). */
static void assert_sent(size_t i, const char *want, bool retryable)
{
    ck_assert_msg(i < W.nsent, "no upstream request %zu (%zu sent)", i, W.nsent);
    char *w = malloc(strlen(want) * 2 + 1), *p = w;
    for (const char *s = want; *s; s++) {
        if (*s == '\n')
            *p++ = '\r';
        *p++ = *s;
    }
    *p = '\0';
    ck_assert_str_eq(W.sent[i].bytes, w);
    ck_assert(W.sent[i].retryable == retryable);
    free(w);
}

/* The upstream request's head for method path (with the request's id and traceparent, the
 * credential and no body). */
static char *up_head(const char *method, const char *path, const char *credential)
{
    char *s = malloc(1024);
    snprintf(s, 1024,
             "%s %s HTTP/1.1\nHost: " DEFAULT_HOST "\nVersion: " VERSION
             "\nAccept: application/json\nAuthorization: Bearer %s\nX-Request-Id: %s"
             "\ntraceparent: %s\n\n",
             method, path, credential, W.logs[0].request_id, the_traceparent());
    return s;
}

static void assert_sent_get(size_t i, const char *path, const char *credential)
{
    char *want = up_head("GET", path, credential);
    assert_sent(i, want, true);
    free(want);
}

/* The upstream request with a JSON body (its own serialization of the validated body). */
static void assert_sent_body(size_t i, const char *method, const char *path, const char *body_sq)
{
    char *body = dq(body_sq);
    char want[4096];
    snprintf(want, sizeof want,
             "%s %s HTTP/1.1\nHost: " DEFAULT_HOST "\nVersion: " VERSION
             "\nAccept: application/json\nAuthorization: Bearer " AGENCY
             "\nX-Request-Id: %s\ntraceparent: %s\nContent-Type: application/json"
             "\nContent-Length: %zu\n\n%s",
             method, path, W.logs[0].request_id, the_traceparent(), strlen(body), body);
    assert_sent(i, want, false);
    free(body);
}

/* The count of requests (or upstream answers) of op with status in the metrics shard. */
static uint64_t op_count(const char *op, int status, bool upstream)
{
    for (size_t i = 0; i < GW_M_OPS; i++) {
        const struct gw_op_m *o = &W.m->ops[i];
        if (!atomic_load(&o->used) || strcmp(o->name, op) != 0)
            continue;
        const struct gw_status_n *s = upstream ? o->up : o->req;
        for (size_t k = 0; k < GW_M_STATUSES; k++)
            if (atomic_load(&s[k].status) == status)
                return atomic_load(&s[k].n);
    }
    return 0;
}

static uint64_t denials(const char *policy, const char *op)
{
    for (size_t i = 0; i < GW_M_DENIALS; i++) {
        const struct gw_denial_m *d = &W.m->denials[i];
        if (atomic_load(&d->used) && strcmp(d->policy, policy) == 0 && strcmp(d->op, op) == 0)
            return atomic_load(&d->n);
    }
    return 0;
}

#define N(counter) ((uint64_t)atomic_load(&(counter)))

/* ---- shared texts ---- */

#define ACTOR(sub)                                                                                 \
    "'actor':{'iss':'" ISS "','sub':'" sub "','client_id':'cli-" sub "','jti':'jti-" sub           \
    "','ip':'10.1.2.3','cert_sha256':null}"
#define ACTOR_BOT ACTOR("svc-bot")
#define ACTOR_NOBODY ACTOR("svc-nobody")

#define CREATE_BODY                                                                                \
    "{'companyId':'co1','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"             \
    "'password':'Secret-pass-123','type':'account','role':'user','locationIds':['LOC1'],"          \
    "'scopes':['contacts.write'],'scopesAssignedToOnly':['contacts.write']}"

#define CREATE_CHANGE                                                                              \
    "'change':{'companyId':'co1','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"    \
    "'password':'[REDACTED]','type':'account','role':'user','locationIds':['LOC1'],"               \
    "'scopes':['contacts.write'],'scopesAssignedToOnly':['contacts.write']}"

/* A user of LOC1 that b-bot may touch (account user holding contacts.write). */
#define USER_IN                                                                                    \
    "{'id':'u1','firstName':'Old','phone':'+15550001','roles':{'type':'account','role':'user',"    \
    "'locationIds':['LOC1']},'scopes':['contacts.write'],'permissions':{'campaignsEnabled':true}}"
#define BEFORE_IN                                                                                  \
    "'before':{'type':'account','role':'user','locationIds':['LOC1'],'scopes':['contacts.write']," \
    "'permissions':{'campaignsEnabled':true}}"

/* A user of LOC9 (outside b-bot's locations), an admin. */
#define USER_OUT                                                                                   \
    "{'id':'u9','firstName':'Far','roles':{'type':'account','role':'admin',"                       \
    "'locationIds':['LOC9']},'scopes':['payments.write']}"

#define JSON_CT "application/json; charset=utf-8"

/* ======================= READ ======================= */

/* Framing conn.c refused (Transfer-Encoding) is answered at once: 400, closed. */
START_TEST(test_refused_framing_is_answered_400_and_closes)
{
    static const char head[] = "POST /users/ HTTP/1.1\r\nHost: gw.test\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
    run_head(head, sizeof head - 1, NULL, NULL);
    ASSERT_REPLY(400, "{'statusCode':400,'message':'Transfer-Encoding is not accepted on "
                      "requests','error':'Bad Request'}");
    ck_assert(the_reply()->close);
    ASSERT_STAGES(GW_RS_READ, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(W.nrecs, 0);
    assert_log(400, NULL, NULL, NULL, NULL, 0);
    ck_assert_str_eq(the_log()->method, "POST");
    ck_assert_ptr_null(the_log()->path);
    ck_assert(the_log()->upstream_ms < 0);
    ck_assert_uint_eq(op_count("create-user", 400, false), 0);
}
END_TEST

/* A head past limits.max_header_bytes is refused before its request line is read: no
 * method, no path; 431 and closed. */
START_TEST(test_head_too_large_is_answered_431_without_a_method)
{
    size_t n = 17000;
    char *head = malloc(n);
    int k = snprintf(head, n, "GET /users/u1 HTTP/1.1\r\nX-Pad: ");
    memset(head + k, 'a', n - (size_t)k);
    run_head(head, n, NULL, NULL);
    free(head);
    ASSERT_REPLY(431, "{'statusCode':431,'message':'request header fields too large',"
                      "'error':'Request Header Fields Too Large'}");
    ck_assert(the_reply()->close);
    ASSERT_STAGES(GW_RS_READ, GW_RS_REPLY);
    ck_assert_str_eq(the_log()->method, "");
    ck_assert_ptr_null(the_log()->op);
    ck_assert_uint_eq(the_log()->bytes_in, 0);
}
END_TEST

START_TEST(test_bad_target_is_answered_400_before_authentication)
{
    CALL(.method = "GET", .target = "/users/a%2Fb", .token = T.admin);
    ASSERT_REPLY(400,
                 "{'statusCode':400,'message':'percent-encoding in path','error':'Bad Request'}");
    ck_assert(!the_reply()->close);
    ASSERT_STAGES(GW_RS_READ, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(N(W.m->cache_misses), 0); /* the token was not looked at */
    assert_log(400, NULL, NULL, NULL, NULL, 0);
}
END_TEST

START_TEST(test_no_route_is_answered_404_in_the_upstreams_words)
{
    CALL(.method = "GET", .target = "/accounts/x", .token = T.admin);
    ASSERT_REPLY(404, "{'statusCode':404,'message':'Cannot GET /accounts/x','error':'Not Found'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_REPLY);
    assert_log(404, NULL, NULL, NULL, NULL, 0);
    ck_assert_str_eq(the_log()->path, "/accounts/x");

    next_request();
    CALL(.method = "PATCH", .target = "/users/u1", .token = T.admin);
    ASSERT_REPLY(404, "{'statusCode':404,'message':'Cannot PATCH /users/u1','error':'Not Found'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(op_count("get-user", 404, false), 0);
}
END_TEST

/* X-Request-Id: the caller's when it matches [A-Za-z0-9._-]{1,64}, else 32 new hex digits;
 * the same in the reply, the upstream request and the access log. */
START_TEST(test_request_id_is_the_callers_when_valid_else_new)
{
    up_json(200, USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin,
         .headers = "X-Request-Id: caller.req-1_A\r\n");
    ck_assert_str_eq(hdr("X-Request-Id"), "caller.req-1_A");
    ck_assert_str_eq(the_log()->request_id, "caller.req-1_A");
    assert_sent_get(0, "/users/u1", AGENCY);
    ck_assert_ptr_nonnull(strstr(W.sent[0].bytes, "\r\nX-Request-Id: caller.req-1_A\r\n"));

    static const char *const bad[] = {
        "X-Request-Id: has/slash\r\n",
        "X-Request-Id: a:b\r\n",
        "X-Request-Id: a[b\r\n",
        "X-Request-Id: a~b\r\n",
        "X-Request-Id: a\r\nX-Request-Id: b\r\n",
        "X-Request-Id: 12345678901234567890123456789012345678901234567890123456789012345\r\n",
    };
    char prev[40] = "";
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin, .headers = bad[i]);
        const char *id = hdr("X-Request-Id");
        ck_assert_msg(is_hex32(id), "%s: id %s", bad[i], id);
        ck_assert_str_ne(id, prev);
        snprintf(prev, sizeof prev, "%s", id);
        assert_sent_get(0, "/users/u1", AGENCY);
    }
}
END_TEST

#define CALLER_TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define CALLER_PARENT "00f067aa0ba902b7"

/* A valid traceparent (SPEC §7): its trace id and sampled flag go upstream and back with a new
 * parent id of the gateway's own; the access log has its trace id. tracestate goes nowhere. */
START_TEST(test_valid_traceparent_is_continued_with_a_new_parent_id)
{
    static const char *const flags[] = {"01", "00"};
    for (size_t i = 0; i < 2; i++) {
        next_request();
        up_json(200, USER_IN);
        char h[200];
        snprintf(h, sizeof h,
                 "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "-%s\r\n"
                 "tracestate: congo=t61rcWkgMzE\r\n",
                 flags[i]);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin, .headers = h);
        ASSERT_REPLY(200, USER_IN);
        const char *tp = the_traceparent();
        ck_assert_int_eq(strncmp(tp, "00-" CALLER_TRACE "-", 36), 0);
        ck_assert_str_eq(tp + 53, flags[i]);
        ck_assert_int_ne(strncmp(tp + 36, CALLER_PARENT, 16), 0);
        ck_assert_str_eq(the_log()->trace_id, CALLER_TRACE);
        assert_sent_get(0, "/users/u1", AGENCY); /* the reply's traceparent, and no tracestate */
    }
}
END_TEST

/* An invalid traceparent, or one sent twice, is replaced by a new trace (flags 00), a
 * different one each time. */
START_TEST(test_invalid_traceparent_starts_a_new_trace)
{
    static const char *const bad[] = {
        "traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-" CALLER_PARENT "-01\r\n",
        "traceparent: 00-00000000000000000000000000000000-" CALLER_PARENT "-01\r\n",
        "traceparent: 00-" CALLER_TRACE "-0000000000000000-01\r\n",
        "traceparent: ff-" CALLER_TRACE "-" CALLER_PARENT "-01\r\n",
        "traceparent: 01-" CALLER_TRACE "-" CALLER_PARENT "-01\r\n",
        "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "-1\r\n",
        "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "-01-00\r\n",
        "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "\r\n",
        "traceparent:\r\n",
        "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "-01\r\n"
        "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "-01\r\n",
    };
    char prev[33] = "";
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin, .headers = bad[i]);
        ASSERT_REPLY(200, USER_IN);
        const char *tp = the_traceparent();
        ck_assert_msg(strncmp(tp + 3, CALLER_TRACE, 32) != 0, "%s kept: %s", bad[i], tp);
        ck_assert_msg(strcmp(tp + 53, "00") == 0, "%s: flags of %s", bad[i], tp);
        ck_assert_str_ne(the_log()->trace_id, prev);
        snprintf(prev, sizeof prev, "%s", the_log()->trace_id);
        assert_sent_get(0, "/users/u1", AGENCY);
    }
}
END_TEST

/* One trace through a change: the target GET and the PUT carry the same traceparent (the
 * caller's trace id), and the intent and outcome records name that trace id. */
START_TEST(test_change_carries_the_callers_trace_to_every_call_and_record)
{
    up_json(200, USER_IN);
    up_json(200, "{'id':'u1','firstName':'Bo','roles':{'type':'account','role':'user',"
                 "'locationIds':['LOC1']}}");
    CALL(.method = "PUT", .target = "/users/u1", .token = T.bot, .body = "{'firstName':'Bo'}",
         .headers = "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "-01\r\n");
    ck_assert_int_eq(the_reply()->status, 200);
    ck_assert_str_eq(the_log()->trace_id, CALLER_TRACE);
    assert_sent_get(0, "/users/u1", AGENCY);
    assert_sent_body(1, "PUT", "/users/u1", "{'firstName':'Bo'}");
    ck_assert_uint_eq(W.nrecs, 2);
    for (size_t i = 0; i < W.nrecs; i++)
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(W.recs[i].j, "trace_id")->valuestring,
                         CALLER_TRACE);
}
END_TEST

/* A denied request's record, and a request refused before routing (framing), have the trace
 * too: in the reply, the access log line and the record. */
START_TEST(test_refused_requests_have_a_trace)
{
    CALL(.method = "GET", .target = "/users/u9", .token = T.nobody,
         .headers = "traceparent: 00-" CALLER_TRACE "-" CALLER_PARENT "-01\r\n");
    ck_assert_int_eq(the_reply()->status, 403);
    ck_assert_str_eq(the_log()->trace_id, CALLER_TRACE);
    (void)the_traceparent();
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(W.recs[0].j, "trace_id")->valuestring,
                     CALLER_TRACE);
    next_request();
    static const char head[] = "POST /users HTTP/1.1\r\nHost: gw.test\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
    run_head(head, strlen(head), NULL, NULL);
    ck_assert_int_eq(the_reply()->status, 400);
    ck_assert(is_hex32(the_log()->trace_id));
    (void)the_traceparent();
}
END_TEST

/* A request's random bytes are drawn at once from the worker's pool: 16 for a new request id,
 * then 24 for a new trace (trace id and span id) or 8 for a caller's trace continued (span id);
 * the pool is refilled once its last bytes are taken, or when fewer are left than a request
 * takes. */
START_TEST(test_request_id_pool_is_refilled_after_its_last_id)
{
    CALL(.method = "GET", .target = "/nowhere");
    ck_assert_uint_eq(W.ids.used, 40);
    W.ids.used = sizeof W.ids.pool - 40;
    memset(W.ids.pool + W.ids.used, 0xab, 16);
    memset(W.ids.pool + W.ids.used + 16, 0xcd, 16);
    memset(W.ids.pool + W.ids.used + 32, 0xef, 8);
    next_request();
    CALL(.method = "GET", .target = "/nowhere");
    ck_assert_str_eq(hdr("X-Request-Id"), "abababababababababababababababab");
    ck_assert_str_eq(hdr("traceparent"), "00-cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd-efefefefefefefef-00");
    ck_assert_str_eq(the_log()->trace_id, "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    ck_assert_uint_eq(W.ids.used, 0);
    next_request();
    CALL(.method = "GET", .target = "/nowhere");
    ck_assert(is_hex32(hdr("X-Request-Id")));
    ck_assert_str_ne(hdr("X-Request-Id"), "abababababababababababababababab");
    ck_assert_uint_eq(W.ids.used, 40);
    /* fewer than 40 bytes left: refilled, not read past its end */
    W.ids.used = sizeof W.ids.pool - 39;
    next_request();
    CALL(.method = "GET", .target = "/nowhere");
    ck_assert(is_hex32(hdr("X-Request-Id")));
    ck_assert_uint_eq(W.ids.used, 40);
    /* the caller's request id and traceparent kept: only a span id is drawn */
    next_request();
    CALL(.method = "GET", .target = "/nowhere",
         .headers = "X-Request-Id: mine\r\n"
                    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n");
    ck_assert_uint_eq(W.ids.used, 48);
    /* a new trace for a caller's own request id: 24 */
    next_request();
    CALL(.method = "GET", .target = "/nowhere", .headers = "X-Request-Id: mine\r\n");
    ck_assert_uint_eq(W.ids.used, 72);
}
END_TEST

/* ======================= AUTHENTICATE ======================= */

#define UNAUTHORIZED                                                                               \
    "{'statusCode':401,'message':'Invalid token: access token is invalid','error':'Unauthorized'}"

/* Without a bearer token the challenge has no error attribute (RFC 6750 §3). */
START_TEST(test_no_bearer_token_is_401_with_the_plain_challenge)
{
    static const char *const headers[] = {"", "Authorization: Basic dXNlcjpwYXNz\r\n"};
    for (size_t i = 0; i < 2; i++) {
        next_request();
        CALL(.method = "GET", .target = "/users/u1", .headers = headers[i]);
        ASSERT_REPLY(401, UNAUTHORIZED);
        ck_assert_str_eq(hdr("WWW-Authenticate"), "Bearer realm=\"ghl-gateway\"");
        ck_assert_str_eq(hdr_names(), "Content-Type,WWW-Authenticate,X-Request-Id,traceparent");
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_REPLY);
        ASSERT_NOTHING_SENT();
        ck_assert_uint_eq(W.nrecs, 0); /* failed authentication is not audited */
        assert_log(401, "get-user", NULL, NULL, "missing", 0);
    }
    ck_assert_uint_eq(N(W.m->auth_failures[GW_AUTH_MISSING]), 2);
    ck_assert_uint_eq(op_count("get-user", 401, false), 2);
}
END_TEST

/* A bad bearer token: 401 with error="invalid_token" and its reason class. */
START_TEST(test_bad_tokens_are_401_with_their_reason_class)
{
    char *longtok = malloc(1101);
    memset(longtok, 'a', 1100);
    longtok[1100] = '\0';
    const struct {
        const char *token, *headers, *reason;
        enum gw_auth_reason ar;
    } cases[] = {
        {T.badsig, NULL, "bad_signature", GW_AUTH_BAD_SIGNATURE},
        {T.expired, NULL, "expired", GW_AUTH_EXPIRED},
        {"abc", NULL, "malformed", GW_AUTH_MALFORMED},
        {T.admin, "Authorization: Bearer x.y.z\r\n", "malformed", GW_AUTH_MALFORMED},
        {longtok, NULL, "malformed", GW_AUTH_MALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        next_request();
        uint64_t before = N(W.m->auth_failures[cases[i].ar]);
        CALL(.method = "GET", .target = "/users/u1", .token = cases[i].token,
             .headers = cases[i].headers);
        ASSERT_REPLY(401, UNAUTHORIZED);
        char want[200];
        snprintf(want, sizeof want,
                 "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", "
                 "error_description=\"%s\"",
                 cases[i].reason);
        ck_assert_str_eq(hdr("WWW-Authenticate"), want);
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_REPLY);
        ASSERT_NOTHING_SENT();
        ck_assert_uint_eq(W.nrecs, 0);
        assert_log(401, "get-user", NULL, NULL, cases[i].reason, 0);
        ck_assert_uint_eq(N(W.m->auth_failures[cases[i].ar]), before + 1);
    }
    free(longtok);
}
END_TEST

/* A token past limits.max_token_bytes is refused before it is hashed or decoded: the cache is
 * not even asked. */
START_TEST(test_token_past_the_cap_is_refused_before_the_cache)
{
    char *longtok = malloc(1100);
    memset(longtok, 'a', 1099);
    longtok[1099] = '\0';
    memcpy(longtok, T.admin, strlen(T.admin)); /* a real token with bytes after it */
    CALL(.method = "GET", .target = "/users/u1", .token = longtok);
    free(longtok);
    ASSERT_REPLY(401, UNAUTHORIZED);
    ck_assert_uint_eq(N(W.m->cache_misses), 0);
    ck_assert_uint_eq(N(W.m->cache_hits), 0);
}
END_TEST

/* A verified token is kept: the second request is served from the worker's cache. */
START_TEST(test_second_request_with_a_token_is_served_from_the_cache)
{
    up_json(200, USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 200);
    ck_assert_uint_eq(N(W.m->cache_misses), 1);
    ck_assert_uint_eq(N(W.m->cache_hits), 0);
    next_request();
    up_json(200, USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 200);
    assert_log(200, "get-user", "a-admin", "svc-admin", NULL, 200);
    ck_assert_uint_eq(N(W.m->cache_misses), 1);
    ck_assert_uint_eq(N(W.m->cache_hits), 1);
}
END_TEST

/* A token past its exp but within the issuer's leeway is accepted, and not kept. */
START_TEST(test_token_in_its_leeway_is_accepted_but_not_cached)
{
    for (int i = 0; i < 2; i++) {
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.leeway);
        ck_assert_int_eq(the_reply()->status, 200);
    }
    ck_assert_uint_eq(N(W.m->cache_misses), 2);
    ck_assert_uint_eq(N(W.m->cache_hits), 0);
}
END_TEST

/* A subject over rate_limit.per_subject: 429 with Retry-After and X-RateLimit-*, nothing
 * sent; another subject is not limited by it. */
START_TEST(test_subject_over_its_rate_limit_gets_429)
{
    boot(&(struct opts){.subject_burst = 1});
    up_json(200, USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 200);
    next_request();
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ASSERT_REPLY(429, "{'statusCode':429,'message':'Too many requests',"
                      "'error':'Too Many Requests'}");
    ck_assert_str_eq(hdr_names(), "Content-Type,Retry-After,X-RateLimit-Max,X-RateLimit-Remaining,"
                                  "X-RateLimit-Interval-Milliseconds,X-Request-Id,traceparent");
    long ra = strtol(hdr("Retry-After"), NULL, 10);
    ck_assert_msg(ra >= 3590 && ra <= 3600, "Retry-After %ld", ra);
    ck_assert_str_eq(hdr("X-RateLimit-Max"), "1");
    ck_assert_str_eq(hdr("X-RateLimit-Remaining"), "0");
    ck_assert_str_eq(hdr("X-RateLimit-Interval-Milliseconds"), "3600000");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(W.nrecs, 0);
    assert_log(429, "get-user", NULL, "svc-admin", NULL, 0);
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_SUBJECT]), 1);
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_UPSTREAM]), 0);
    next_request();
    up_json(200, USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.bot);
    ck_assert_int_eq(the_reply()->status, 200);
}
END_TEST

/* ======================= VALIDATE ======================= */

/* A token without the op's scope: 401 in HighLevel's words, error="insufficient_scope". */
START_TEST(test_scope_missing_is_401_insufficient_scope)
{
    CALL(.method = "POST", .target = "/users/", .token = T.reader, .body = CREATE_BODY);
    ASSERT_REPLY(401, "{'statusCode':401,'message':'The token is not authorized for this scope.'}");
    ck_assert_str_eq(hdr("WWW-Authenticate"),
                     "Bearer realm=\"ghl-gateway\", "
                     "error=\"insufficient_scope\", scope=\"users.write\"");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(W.nrecs, 0);
    assert_log(401, "create-user", NULL, "svc-admin", NULL, 0);
}
END_TEST

START_TEST(test_version_missing_or_invalid_is_400)
{
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin, .no_version = true);
    ASSERT_REPLY(400, "{'statusCode':400,'message':'version header was not found.'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    assert_log(400, "get-user", NULL, "svc-admin", NULL, 0);

    static const char *const bad[] = {"Version: 2020-01-01\r\n",
                                      "Version: 2021-07-28\r\n" /* a second one */};
    for (size_t i = 0; i < 2; i++) {
        next_request();
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin, .no_version = i == 0,
             .headers = bad[i]);
        ASSERT_REPLY(400, "{'statusCode':400,'message':'version header is invalid'}");
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_REPLY);
        ASSERT_NOTHING_SENT();
    }
}
END_TEST

/* A body that is not declared JSON (or declared twice) is 415. */
START_TEST(test_body_not_declared_json_is_415)
{
    static const char *const ctypes[] = {
        "Content-Type: text/plain\r\n",
        "Content-Type: application/json\r\nContent-Type: application/json\r\n",
    };
    for (size_t i = 0; i < 2; i++) {
        next_request();
        char head[2048];
        int n = snprintf(head, sizeof head,
                         "POST /users/ HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer %s\r\n"
                         "Version: " VERSION "\r\n%sContent-Length: 2\r\n\r\n",
                         T.admin, ctypes[i]);
        run_head(head, (size_t)n, "{}", NULL);
        ASSERT_REPLY(415, "{'statusCode':415,'message':'Content-Type must be application/json',"
                          "'error':'Unsupported Media Type'}");
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_REPLY);
        ASSERT_NOTHING_SENT();
        assert_log(415, "create-user", NULL, "svc-admin", NULL, 0);
        ck_assert_uint_eq(the_log()->bytes_in, (uint64_t)n + 2);
    }
}
END_TEST

/* A body past limits.max_body_bytes (4096 here) is 413, and the connection closes: refused by
 * the connection as it reads the head (straight to REPLY), and by VALIDATE when the
 * connection read it under a larger limit. */
START_TEST(test_body_too_large_is_413_and_closes)
{
    char body[5000];
    int n = snprintf(body, sizeof body, "{'firstName':'");
    memset(body + n, 'x', 4500);
    snprintf(body + n + 4500, sizeof body - (size_t)n - 4500, "'}");
    for (int i = 0; i < 2; i++) {
        next_request();
        W.read_max_body = i == 0 ? 0 : 65536;
        CALL(.method = "POST", .target = "/users/", .token = T.admin, .body = body);
        ASSERT_REPLY(413, "{'statusCode':413,'message':'request entity too large',"
                          "'error':'Payload Too Large'}");
        ck_assert(the_reply()->close);
        if (i == 0)
            ASSERT_STAGES(GW_RS_READ, GW_RS_REPLY);
        else
            ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_REPLY);
        ASSERT_NOTHING_SENT();
    }
}
END_TEST

START_TEST(test_schema_violations_are_422_all_together)
{
    CALL(.method = "POST", .target = "/users/", .token = T.admin,
         .body = "{'companyId':'co1','firstName':'Ann','lastName':'Lee','email':'a@b.c',"
                 "'password':'x','type':'account','role':'user','locationIds':['LOC1'],"
                 "'colour':'red'}");
    ASSERT_REPLY(422, "{'statusCode':422,'message':['property colour should not exist'],"
                      "'error':'Unprocessable Entity'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(W.nrecs, 0);
    assert_log(422, "create-user", NULL, "svc-admin", NULL, 0);
}
END_TEST

START_TEST(test_body_that_is_not_json_is_400)
{
    CALL(.method = "POST", .target = "/users/", .token = T.admin, .body = "{'a':1,'a':2}");
    ASSERT_REPLY(400, "{'statusCode':400,'message':'invalid JSON body: duplicate member \\'a\\' "
                      "at byte 7','error':'Bad Request'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
}
END_TEST

/* ======================= DECIDE ======================= */

/* A denial: 403 with the first reason, a denied record with every reason, counted. */
START_TEST(test_policy_denial_is_403_with_a_denied_record)
{
    CALL(.method = "POST", .target = "/users/", .token = T.bot,
         .body = "{'companyId':'co2','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"
                 "'password':'Secret-pass-123','type':'account','role':'admin',"
                 "'locationIds':['LOC1'],'scopes':[],'scopesAssignedToOnly':[]}");
    ASSERT_REPLY(403, "{'statusCode':403,'message':'policy b-bot: company co2 is not allowed',"
                      "'error':'Forbidden'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ASSERT_TIMELINE("audit:denied|log:403|reply:403|done");
    ck_assert_uint_eq(W.nrecs, 1);
    assert_record(0, "denied",
                  "{'event':'denied','op':'create-user','method':'POST','path':'/users/'," ACTOR_BOT
                  ",'target':{'user_id':null,'company_id':'co2',"
                  "'location_ids':['LOC1']},'policy':'b-bot',"
                  "'reasons':['policy b-bot: company co2 is not allowed',"
                  "'policy b-bot: role admin is not grantable'],"
                  "'change':{'companyId':'co2','firstName':'Ann','lastName':'Lee',"
                  "'email':'ann@example.com','password':'[REDACTED]',"
                  "'type':'account','role':'admin','locationIds':['LOC1'],"
                  "'scopes':[],'scopesAssignedToOnly':[]},'before':null}");
    assert_log(403, "create-user", "b-bot", "svc-bot", NULL, 0);
    ck_assert_uint_eq(denials("b-bot", "create-user"), 1);
}
END_TEST

/* A subject no policy names: 403 "no policy grants"; the record names no policy. With the
 * audit sink off nothing is recorded. */
START_TEST(test_subject_without_a_policy_is_403)
{
    CALL(.method = "GET", .target = "/users/u1", .token = T.nobody);
    ASSERT_REPLY(403, "{'statusCode':403,'message':'no policy grants svc-nobody access',"
                      "'error':'Forbidden'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_REPLY);
    assert_record(
        0, "denied",
        "{'event':'denied','op':'get-user','method':'GET','path':'/users/u1'," ACTOR_NOBODY
        ",'target':{'user_id':'u1','company_id':null,'location_ids':[]},"
        "'policy':null,'reasons':['no policy grants svc-nobody access'],"
        "'change':null,'before':null}");
    assert_log(403, "get-user", NULL, "svc-nobody", NULL, 0);

    next_request();
    W.audit_on = false;
    CALL(.method = "GET", .target = "/users/u1", .token = T.nobody);
    ck_assert_int_eq(the_reply()->status, 403);
    ck_assert_uint_eq(W.nrecs, 0);
    ASSERT_TIMELINE("log:403|reply:403|done");
}
END_TEST

/* No credential fits: 503 naming the missing one, after the policy allowed. */
START_TEST(test_no_credential_is_503_naming_it)
{
    CALL(.method = "GET", .target = "/users/?locationId=LOC2", .token = T.admin);
    ASSERT_REPLY(503, "{'statusCode':503,'message':'no Sub-Account token is configured for "
                      "location LOC2 (credentials.location_token_files)',"
                      "'error':'Service Unavailable'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    assert_log(503, "get-user-by-location", "a-admin", "svc-admin", NULL, 0);

    boot(&(struct opts){.no_agency = true});
    next_request();
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    ASSERT_REPLY(503, "{'statusCode':503,'message':'no agency token is configured "
                      "(credentials.agency_token_file)','error':'Service Unavailable'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(W.nrecs, 0); /* no intent: the change was never going upstream */
}
END_TEST

/* ======================= reads ======================= */

/* get-user under a policy without read rules: the upstream request from the allow-list only
 * (nothing of the caller's own headers), the answer passed back as it came with only
 * Content-Type and X-RateLimit-* of its headers. */
START_TEST(test_get_user_is_forwarded_from_the_allow_list_and_passed_back)
{
    up_answer(200,
              "Content-Type: application/json\nX-RateLimit-Remaining: 99\nSet-Cookie: a=b\n"
              "Connection: keep-alive\nX-RateLimit-Max: 100",
              USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin,
         .headers = "Cookie: s=1\r\nX-Forwarded-For: 1.2.3.4\r\nAccept-Encoding: gzip\r\n"
                    "Accept: text/html\r\ntraceparent: junk\r\n"
                    "tracestate: congo=t61rcWkgMzE\r\n");
    ASSERT_REPLY(200, USER_IN);
    ck_assert_str_eq(hdr_names(),
                     "Content-Type,X-RateLimit-Remaining,X-RateLimit-Max,X-Request-Id,traceparent");
    ck_assert_str_eq(hdr("Content-Type"), "application/json");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                  GW_RS_OUTCOME, GW_RS_REPLY);
    ck_assert_uint_eq(W.nsent, 1);
    assert_sent_get(0, "/users/u1", AGENCY);
    ck_assert_uint_eq(W.nrecs, 0); /* reads are not audited without include_reads */
    ASSERT_TIMELINE("upstream:GET /users/u1 HTTP/1.1|log:200|reply:200|done");
    ASSERT_NOTHING_LOGGED();
    assert_log(200, "get-user", "a-admin", "svc-admin", NULL, 200);
    ck_assert_uint_eq(op_count("get-user", 200, false), 1);
    ck_assert_uint_eq(op_count("get-user", 200, true), 1);
}
END_TEST

/* Under b-bot: the user's phone is redacted. */
START_TEST(test_get_user_answer_is_redacted_by_the_read_rules)
{
    up_json(200, USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(200, "{'id':'u1','firstName':'Old','roles':{'type':'account','role':'user',"
                      "'locationIds':['LOC1']},'scopes':['contacts.write'],"
                      "'permissions':{'campaignsEnabled':true}}");
    ck_assert_str_eq(hdr("Content-Type"), JSON_CT);
    assert_log(200, "get-user", "b-bot", "svc-bot", NULL, 200);
}
END_TEST

/* get-user of a user outside b-bot's locations: 403 after the answer, a denied record. */
START_TEST(test_get_user_outside_the_policy_is_403_with_a_denied_record)
{
    up_json(200, USER_OUT);
    CALL(.method = "GET", .target = "/users/u9", .token = T.bot);
    ASSERT_REPLY(403, "{'statusCode':403,'message':'policy b-bot: user u9 is outside this "
                      "policy`s locations','error':'Forbidden'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                  GW_RS_OUTCOME, GW_RS_REPLY);
    ASSERT_TIMELINE("upstream:GET /users/u9 HTTP/1.1|audit:denied|log:403|reply:403|done");
    assert_record(0, "denied",
                  "{'event':'denied','op':'get-user','method':'GET','path':'/users/u9'," ACTOR_BOT
                  ",'target':{'user_id':'u9','company_id':null,'location_ids':[]},"
                  "'policy':'b-bot','reasons':['policy b-bot: user u9 is outside "
                  "this policy`s locations'],'change':null,'before':null}");
    assert_log(403, "get-user", "b-bot", "svc-bot", NULL, 200);
    ck_assert_uint_eq(denials("b-bot", "get-user"), 1);
}
END_TEST

/* A 2xx read without a body has nothing to filter: passed back as it came. */
START_TEST(test_empty_read_answer_is_passed_back_under_read_rules)
{
    up_answer(200, NULL, NULL);
    CALL(.method = "GET", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(200, "");
    ck_assert_str_eq(hdr_names(), "X-Request-Id,traceparent");
    assert_log(200, "get-user", "b-bot", "svc-bot", NULL, 200);
}
END_TEST

/* A list under b-bot: users outside are dropped, count lowered, the others redacted; the
 * query goes upstream re-encoded. */
START_TEST(test_search_list_is_filtered_and_its_count_lowered)
{
    up_json(200, "{'users':[" USER_IN "," USER_OUT "],'count':2}");
    CALL(.method = "GET", .target = "/users/search?companyId=co1&locationId=LOC1&query=a%20b",
         .token = T.bot);
    ASSERT_REPLY(200, "{'users':[{'id':'u1','firstName':'Old','roles':{'type':'account',"
                      "'role':'user','locationIds':['LOC1']},'scopes':['contacts.write'],"
                      "'permissions':{'campaignsEnabled':true}}],'count':1}");
    assert_sent_get(0, "/users/search?companyId=co1&locationId=LOC1&query=a%20b", AGENCY);
    assert_log(200, "search-users", "b-bot", "svc-bot", NULL, 200);
}
END_TEST

/* A list answer of another shape cannot be filtered: 502, counted and logged as an answer
 * that is not JSON is. */
START_TEST(test_malformed_list_is_502)
{
    up_json(200, "{'users':'none','count':0}");
    uint64_t before = N(W.m->up_errors[GW_UPE_PROTOCOL]);
    CALL(.method = "GET", .target = "/users/search?companyId=co1&locationId=LOC1", .token = T.bot);
    ASSERT_REPLY(502, "{'statusCode':502,'message':'the upstream`s answer to search-users is "
                      "not a list of users','error':'Bad Gateway'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                  GW_RS_OUTCOME, GW_RS_REPLY);
    ck_assert_uint_eq(W.nrecs, 0); /* not a denial */
    ck_assert_uint_eq(denials("b-bot", "search-users"), 0);
    assert_log(502, "search-users", "b-bot", "svc-bot", NULL, 200);
    ck_assert_uint_eq(N(W.m->up_errors[GW_UPE_PROTOCOL]), before + 1);
}
END_TEST

/* get-user-by-location goes upstream with that location's Sub-Account token. */
START_TEST(test_get_user_by_location_uses_the_location_token)
{
    up_json(200, "{'users':[],'count':0}");
    CALL(.method = "GET", .target = "/users?locationId=LOC1", .token = T.bot);
    ASSERT_REPLY(200, "{'users':[],'count':0}");
    assert_sent_get(0, "/users/?locationId=LOC1", LOC1_TOKEN);
}
END_TEST

/* With audit.include_reads an allowed read gets a read record with the upstream's status;
 * the target is what the query names. */
START_TEST(test_include_reads_writes_a_read_record)
{
    boot(&(struct opts){.include_reads = true});
    up_json(200, "{'users':[],'count':0}");
    CALL(.method = "GET", .target = "/users/search?companyId=co1&locationId=LOC1", .token = T.bot,
         .cert = CERT_SHA);
    ck_assert_int_eq(the_reply()->status, 200);
    ASSERT_TIMELINE("upstream:GET /users/search?companyId=co1&locationId=LOC1 HTTP/1.1|"
                    "audit:read|log:200|reply:200|done");
    assert_record(0, "read",
                  "{'event':'read','op':'search-users','method':'GET','path':'/users/search',"
                  "'actor':{'iss':'" ISS "','sub':'svc-bot','client_id':'cli-svc-bot',"
                  "'jti':'jti-svc-bot','ip':'10.1.2.3','cert_sha256':'" CERT_SHA "'},"
                  "'target':{'user_id':null,'company_id':'co1','location_ids':['LOC1']},"
                  "'policy':'b-bot','reasons':[],'change':null,'before':null,'status':200}");

    /* a read the read rules refuse is a denial, not a read */
    next_request();
    up_json(200, USER_OUT);
    CALL(.method = "GET", .target = "/users/u9", .token = T.bot);
    ck_assert_int_eq(the_reply()->status, 403);
    ck_assert_uint_eq(W.nrecs, 1);
    ck_assert_int_eq(W.recs[0].ev, GW_AUDIT_DENIED);

    /* and a change is never a read, even one allowed that ends before its intent */
    next_request();
    up_json(404, "{'statusCode':404,'message':'User not found'}");
    CALL(.method = "DELETE", .target = "/users/u1", .token = T.bot);
    ck_assert_int_eq(the_reply()->status, 404);
    ck_assert_uint_eq(W.nrecs, 0);
}
END_TEST

/* ======================= upstream failures ======================= */

START_TEST(test_upstream_failures_are_502_or_504)
{
    const struct {
        enum gw_upstream_error err;
        int status;
        enum gw_up_error_kind kind;
        const char *body;
    } cases[] = {
        {GW_UP_CONNECT, 502, GW_UPE_CONNECT,
         "{'statusCode':502,'message':'connect to services.leadconnectorhq.com:443: Connection "
         "refused','error':'Bad Gateway'}"},
        {GW_UP_TLS, 502, GW_UPE_TLS,
         "{'statusCode':502,'message':'TLS handshake with services.leadconnectorhq.com: "
         "certificate verify failed','error':'Bad Gateway'}"},
        {GW_UP_PROTOCOL, 502, GW_UPE_PROTOCOL,
         "{'statusCode':502,'message':'upstream closed the connection mid-answer',"
         "'error':'Bad Gateway'}"},
        {GW_UP_TIMEOUT, 504, GW_UPE_TIMEOUT,
         "{'statusCode':504,'message':'upstream timed out','error':'Gateway Timeout'}"},
    };
    uint64_t want[GW_UPE_KINDS] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        next_request();
        up_fail(cases[i].err, cases[i].err == GW_UP_PROTOCOL);
        want[cases[i].kind]++;
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
        ASSERT_REPLY(cases[i].status, cases[i].body);
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                      GW_RS_OUTCOME, GW_RS_REPLY);
        assert_log(cases[i].status, "get-user", "a-admin", "svc-admin", NULL, 0);
        ck_assert(the_log()->upstream_ms == 12.5);
        char logged[256];
        snprintf(logged, sizeof logged, "GET /users/u1: %s", fail_why[cases[i].err]);
        assert_logged_once(logged);
        for (int k = 0; k < GW_UPE_KINDS; k++)
            ck_assert_uint_eq(N(W.m->up_errors[k]), want[k]);
    }
}
END_TEST

/* The upstream call could not even be started: 503. */
START_TEST(test_upstream_call_not_started_is_503)
{
    up_refuse_call();
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ASSERT_REPLY(503, "{'statusCode':503,'message':'out of memory','error':'Service Unavailable'}");
    ck_assert_uint_eq(W.nsent, 1);
}
END_TEST

/* The worker stops while the call is in flight: no reply, no access log line, the request ends
 * once. */
START_TEST(test_shutdown_ends_a_read_without_a_reply)
{
    up_fail(GW_UP_SHUTDOWN, true);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_uint_eq(W.nreplies, 0);
    ck_assert_uint_eq(W.nlogs, 0);
    ck_assert_int_eq(W.done, 1);
    ck_assert_uint_eq(W.nrecs, 0);
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                  GW_RS_OUTCOME);
    ASSERT_TIMELINE("upstream:GET /users/u1 HTTP/1.1|done");
    ASSERT_NOTHING_LOGGED();
    for (int k = 0; k < GW_UPE_KINDS; k++)
        ck_assert_uint_eq(N(W.m->up_errors[k]), 0);
}
END_TEST

/* A change in flight when the worker stops still gets its outcome: unknown when a byte may
 * have left, not_sent when none did. */
START_TEST(test_shutdown_during_a_change_records_its_outcome)
{
    static const char *const fate[] = {"unknown", "not_sent"};
    for (int i = 0; i < 2; i++) {
        next_request();
        up_fail(GW_UP_SHUTDOWN, i == 0);
        CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
        ck_assert_uint_eq(W.nreplies, 0);
        ck_assert_int_eq(W.done, 1);
        ASSERT_TIMELINE("audit:intent|upstream:POST /users/ HTTP/1.1|audit:outcome|done");
        char want[2048];
        snprintf(want, sizeof want,
                 "{'event':'outcome','op':'create-user','method':'POST','path':'/users/'," ACTOR_BOT
                 ",'target':{'user_id':null,'company_id':'co1',"
                 "'location_ids':['LOC1']},'policy':'b-bot','reasons':[]," CREATE_CHANGE
                 ",'before':null,'status':0,'upstream':'%s'}",
                 fate[i]);
        assert_record(1, "outcome", want);
    }
}
END_TEST

/* ======================= answers that are not JSON ======================= */

/* A read answered 2xx with something that is not JSON becomes the gateway's 502, counted as a
 * protocol error and logged (docs/requests.md, step 8); under read rules the strict parser is
 * the check. */
START_TEST(test_read_answer_not_json_is_502)
{
    const struct {
        const char *token, *headers, *body, *reply;
    } cases[] = {
        {T.admin, "Content-Type: text/html", "<html></html>",
         "{'statusCode':502,'message':'the upstream`s answer (status 200) has Content-Type "
         "text/html, not JSON','error':'Bad Gateway'}"},
        {T.admin, "Server: hop\nX-RateLimit-Remaining: 5", "{}",
         "{'statusCode':502,'message':'the upstream`s answer (status 200) has no "
         "Content-Type, not JSON','error':'Bad Gateway'}"},
        {T.admin, "Content-Type: application/yaml", "{}",
         "{'statusCode':502,'message':'the upstream`s answer (status 200) has Content-Type "
         "application/yaml, not JSON','error':'Bad Gateway'}"},
        {T.admin, "Content-Type: application/json", "{'id':",
         "{'statusCode':502,'message':'the upstream`s answer (status 200) is not JSON: "
         "unexpected end of input at byte 6','error':'Bad Gateway'}"},
        {T.bot, "Content-Type: application/jsonp", "{}",
         "{'statusCode':502,'message':'the upstream`s answer (status 200) has Content-Type "
         "application/jsonp, not JSON','error':'Bad Gateway'}"},
        {T.bot, "Content-Type: application/json", "{'id':",
         "{'statusCode':502,'message':'the upstream`s answer is not JSON, so policy b-bot`s "
         "read rules cannot be applied','error':'Bad Gateway'}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        next_request();
        uint64_t before = N(W.m->up_errors[GW_UPE_PROTOCOL]);
        up_answer(200, cases[i].headers, cases[i].body);
        CALL(.method = "GET", .target = "/users/u1", .token = cases[i].token);
        ASSERT_REPLY(502, cases[i].reply);
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                      GW_RS_OUTCOME, GW_RS_REPLY);
        ck_assert_int_eq(the_log()->upstream_status, 200);
        ck_assert_uint_eq(N(W.m->up_errors[GW_UPE_PROTOCOL]), before + 1);
        assert_logged_once("GET /users/u1: the upstream's answer ");
    }
}
END_TEST

/* An error status that is not JSON (a proxy's page) keeps its status and its rate-limit
 * headers, with a body in the upstream's error shape. */
START_TEST(test_error_answer_not_json_keeps_its_status)
{
    up_answer(429,
              "Content-Type: text/html\nRetry-After: 5\nX-RateLimit-Remaining: 0\nServer: proxy",
              "<html>slow down</html>");
    CALL(.method = "GET", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(429, "{'statusCode':429,'message':'the upstream`s answer (status 429) has "
                      "Content-Type text/html, not JSON'}");
    ck_assert_str_eq(hdr_names(),
                     "Content-Type,Retry-After,X-RateLimit-Remaining,X-Request-Id,traceparent");
    ck_assert_str_eq(hdr("Content-Type"), JSON_CT);
    ck_assert_str_eq(hdr("Retry-After"), "5");
    ck_assert_uint_eq(N(W.m->up_errors[GW_UPE_PROTOCOL]), 1);
    assert_logged_once("GET /users/u1: the upstream's answer (status 429) has Content-Type "
                       "text/html, not JSON");
    assert_log(429, "get-user", "b-bot", "svc-bot", NULL, 429);

    next_request();
    up_answer(503, "Content-Type: application/json", "not json");
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ASSERT_REPLY(503, "{'statusCode':503,'message':'the upstream`s answer (status 503) is not "
                      "JSON: invalid value at byte 0'}");

    /* an error answer that is JSON is passed back as it came */
    next_request();
    up_json(404, "{'statusCode':404,'message':'User not found'}");
    CALL(.method = "GET", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(404, "{'statusCode':404,'message':'User not found'}");
    assert_log(404, "get-user", "b-bot", "svc-bot", NULL, 404);
}
END_TEST

/* A change the upstream reports done is passed back as it came even when the gateway cannot
 * read it: a 502 would invite a retry that repeats the change. Counted as a protocol error. */
START_TEST(test_change_done_with_an_answer_not_json_is_passed_back)
{
    const struct {
        const char *token, *headers, *body;
        bool audit;
    } cases[] = {
        /* b-bot's read rules need the tree */
        {T.bot, "Content-Type: application/json", "{'id':"},
        {T.bot, "Content-Type: application/json", "['not','a','user']"},
        {T.bot, "Content-Type: text/html", "<p>created</p>"},
        /* no read rules, no audit: only checked */
        {T.admin, "Content-Type: application/json", "{'id':"},
        /* no read rules, audited: parsed for the new user's id */
        {T.admin, "Content-Type: application/json", "{'id':", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        next_request();
        W.audit_on = cases[i].audit;
        uint64_t before = N(W.m->up_errors[GW_UPE_PROTOCOL]);
        up_answer(201, cases[i].headers, cases[i].body);
        CALL(.method = "POST", .target = "/users/", .token = cases[i].token, .body = CREATE_BODY);
        ASSERT_REPLY(201, cases[i].body);
        ck_assert_str_eq(hdr("Content-Type"), strchr(cases[i].headers, ' ') + 1);
        if (cases[i].audit)
            ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE,
                          GW_RS_INTENT, GW_RS_FORWARD, GW_RS_OUTCOME, GW_RS_REPLY);
        else
            ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE,
                          GW_RS_FORWARD, GW_RS_OUTCOME, GW_RS_REPLY);
        ck_assert_uint_eq(N(W.m->up_errors[GW_UPE_PROTOCOL]), before + 1);
        assert_logged_once("POST /users/: ");
        ck_assert_ptr_nonnull(
            strstr(W.errlog, "; the change is done, so the answer is passed back as it came"));
        assert_log(201, "create-user", i < 3 ? "b-bot" : "a-admin", i < 3 ? "svc-bot" : "svc-admin",
                   NULL, 201);
    }
    /* the audited one's outcome knows no new id */
    ck_assert_uint_eq(W.nrecs, 2);
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(W.recs[1].j, "target");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(target, "user_id")));
}
END_TEST

/* A change done with a JSON answer, or none, goes back as it came where no read rule applies. */
START_TEST(test_change_done_passes_back_without_read_rules)
{
    W.audit_on = false;
    up_json(201, "{'id':'new7','firstName':'Ann','phone':'+1555'}");
    CALL(.method = "POST", .target = "/users/", .token = T.admin, .body = CREATE_BODY);
    ASSERT_REPLY(201, "{'id':'new7','firstName':'Ann','phone':'+1555'}");
    ck_assert_uint_eq(N(W.m->up_errors[GW_UPE_PROTOCOL]), 0);

    next_request();
    W.audit_on = true;
    up_answer(201, NULL, NULL);
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    ASSERT_REPLY(201, "");
    ck_assert_uint_eq(N(W.m->up_errors[GW_UPE_PROTOCOL]), 0);
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(W.recs[1].j, "target");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(target, "user_id")));
}
END_TEST

/* ======================= HighLevel's own limit ======================= */

/* Over rate_limit.upstream: 429 from the gateway, nothing sent. */
START_TEST(test_upstream_limit_is_429_and_nothing_is_sent)
{
    boot(&(struct opts){.upstream_burst = 1});
    up_json(200, USER_IN);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 200);
    next_request();
    CALL(.method = "GET", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(429, "{'statusCode':429,'message':'Too many requests',"
                      "'error':'Too Many Requests'}");
    ck_assert_str_eq(hdr("X-RateLimit-Max"), "1");
    ck_assert_str_eq(hdr("X-RateLimit-Remaining"), "0");
    ck_assert_str_eq(hdr("X-RateLimit-Interval-Milliseconds"), "3600000");
    ck_assert(strtol(hdr("Retry-After"), NULL, 10) >= 3590);
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                  GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    assert_log(429, "get-user", "b-bot", "svc-bot", NULL, 0);
    ck_assert(the_log()->upstream_ms < 0);
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_UPSTREAM]), 1);
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_SUBJECT]), 0);
}
END_TEST

/* The target GET spends the last call: the change, its intent written, is refused before it
 * leaves, and its outcome says not_sent. */
START_TEST(test_upstream_limit_after_the_intent_records_not_sent)
{
    boot(&(struct opts){.upstream_burst = 1});
    up_json(200, USER_IN);
    CALL(.method = "PUT", .target = "/users/u1", .token = T.bot, .body = "{'firstName':'Bo'}");
    ck_assert_int_eq(the_reply()->status, 429);
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FETCH_TARGET,
                  GW_RS_DECIDE, GW_RS_INTENT, GW_RS_FORWARD, GW_RS_REPLY);
    ASSERT_TIMELINE("upstream:GET /users/u1 HTTP/1.1|audit:intent|audit:outcome|log:429|"
                    "reply:429|done");
    assert_record(
        1, "outcome",
        "{'event':'outcome','op':'update-user','method':'PUT','path':'/users/u1'," ACTOR_BOT
        ",'target':{'user_id':'u1','company_id':null,'location_ids':["
        "'LOC1']},'policy':'b-bot','reasons':[],"
        "'change':{'firstName':'Bo'}," BEFORE_IN ",'status':0,'upstream':'not_sent'}");
}
END_TEST

/* ======================= create-user and the audit log ======================= */

/* The intent is on disk before the request goes upstream; the outcome follows the answer with
 * the new user's id; the password is never in a record; the answer is redacted. */
START_TEST(test_create_user_writes_intent_then_forwards_then_outcome)
{
    up_json(201, "{'id':'new1','firstName':'Ann','phone':'+1555','roles':{'type':'account',"
                 "'role':'user','locationIds':['LOC1']}}");
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    ASSERT_REPLY(201, "{'id':'new1','firstName':'Ann','roles':{'type':'account','role':'user',"
                      "'locationIds':['LOC1']}}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_INTENT,
                  GW_RS_FORWARD, GW_RS_OUTCOME, GW_RS_REPLY);
    ASSERT_TIMELINE("audit:intent|upstream:POST /users/ HTTP/1.1|audit:outcome|log:201|"
                    "reply:201|done");
    assert_sent_body(0, "POST", "/users/", CREATE_BODY);
    assert_record(0, "intent",
                  "{'event':'intent','op':'create-user','method':'POST','path':'/users/'," ACTOR_BOT
                  ",'target':{'user_id':null,'company_id':'co1',"
                  "'location_ids':['LOC1']},'policy':'b-bot','reasons':[]," CREATE_CHANGE
                  ",'before':null}");
    assert_record(
        1, "outcome",
        "{'event':'outcome','op':'create-user','method':'POST','path':'/users/'," ACTOR_BOT
        ",'target':{'user_id':'new1','company_id':'co1',"
        "'location_ids':['LOC1']},'policy':'b-bot','reasons':[]," CREATE_CHANGE
        ",'before':null,'status':201,"
        "'upstream':'answered'}");
    for (size_t i = 0; i < W.nrecs; i++)
        ck_assert_ptr_null(strstr(W.recs[i].members, "Secret-pass-123"));
    ck_assert_ptr_null(strstr(W.sent[0].bytes, T.bot)); /* the caller's token stays here */
    ASSERT_NOTHING_LOGGED();
    assert_log(201, "create-user", "b-bot", "svc-bot", NULL, 201);
    ck_assert_uint_eq(W.abandon_calls, 0);
}
END_TEST

/* Without read rules an audited create still reads the new user's id, and passes the answer
 * back untouched. */
START_TEST(test_create_user_without_read_rules_records_the_new_id)
{
    up_json(201, "{'id':'new2','phone':'+1555'}");
    CALL(.method = "POST", .target = "/users/", .token = T.admin, .body = CREATE_BODY);
    ASSERT_REPLY(201, "{'id':'new2','phone':'+1555'}");
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(W.recs[1].j, "target");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(target, "user_id")->valuestring, "new2");

    /* an answer without a string id names no user */
    next_request();
    up_json(201, "{'id':7,'firstName':'Ann'}");
    CALL(.method = "POST", .target = "/users/", .token = T.admin, .body = CREATE_BODY);
    ASSERT_REPLY(201, "{'id':7,'firstName':'Ann'}");
    target = cJSON_GetObjectItemCaseSensitive(W.recs[1].j, "target");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(target, "user_id")));

    /* an upstream refusal of the change is passed back; the outcome has its status */
    next_request();
    up_json(400, "{'statusCode':400,'message':'email taken'}");
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    ASSERT_REPLY(400, "{'statusCode':400,'message':'email taken'}");
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(W.recs[1].j, "status")->valueint, 400);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(W.recs[1].j, "upstream")->valuestring,
                     "answered");
}
END_TEST

/* The intent cannot be written: 503, nothing forwarded, no outcome. */
START_TEST(test_create_user_with_the_intent_failing_is_503_and_not_forwarded)
{
    W.intent_mode = INTENT_FAILED;
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    ASSERT_REPLY(503, "{'statusCode':503,'message':'the audit log cannot be written; the change "
                      "was not sent','error':'Service Unavailable'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_INTENT,
                  GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ASSERT_TIMELINE("audit:intent|log:503|reply:503|done");
    ck_assert_uint_eq(W.nrecs, 1);
    assert_log(503, "create-user", "b-bot", "svc-bot", NULL, 0);
}
END_TEST

/* The intent is not confirmed within audit.sync_timeout_ms: 503, nothing forwarded; the item
 * is abandoned to the log with the outcome to write after it if it lands: not_sent. */
START_TEST(test_create_user_with_the_intent_never_confirmed_is_503_and_abandoned)
{
    boot(&(struct opts){.sync_timeout_ms = 30});
    W.intent_mode = INTENT_NEVER;
    double t0 = gw_mono_ms();
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    /* it waited for the deadline (with slack: libevent's clock may be the coarse one) */
    ck_assert(gw_mono_ms() - t0 >= 20);
    ASSERT_REPLY(503, "{'statusCode':503,'message':'the audit log did not confirm the intent in "
                      "time; the change was not sent','error':'Service Unavailable'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_INTENT,
                  GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ASSERT_TIMELINE("audit:intent|audit:abandoned|log:503|reply:503|done");
    ck_assert_int_eq(W.nabandoned, 1);
    assert_logged_once("POST /users/: the audit log did not confirm the intent record within "
                       "audit.sync_timeout_ms (30 ms); the change was not sent");
    assert_record_json(
        &W.abandoned, "outcome",
        "{'event':'outcome','op':'create-user','method':'POST','path':'/users/'," ACTOR_BOT
        ",'target':{'user_id':null,'company_id':'co1',"
        "'location_ids':['LOC1']},'policy':'b-bot',"
        "'reasons':[]," CREATE_CHANGE ",'before':null,'status':0,'upstream':'not_sent'}");
    ck_assert_uint_eq(W.nrecs, 1); /* no outcome of its own: it was handed over */
}
END_TEST

/* The writer answers just as the deadline passes (abandon finds it answered): the change goes
 * on as if in time, once. */
START_TEST(test_intent_answered_as_the_deadline_passes_goes_on)
{
    boot(&(struct opts){.sync_timeout_ms = 10});
    W.intent_mode = INTENT_LATE;
    up_json(201, "{'id':'new3','roles':{'type':'account','role':'user','locationIds':['LOC1']}}");
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    ck_assert_int_eq(the_reply()->status, 201);
    ck_assert_int_eq(W.abandon_calls, 1);
    ck_assert_int_eq(W.nabandoned, 0);
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_INTENT,
                  GW_RS_FORWARD, GW_RS_OUTCOME, GW_RS_REPLY);
    ASSERT_TIMELINE("audit:intent|upstream:POST /users/ HTTP/1.1|audit:outcome|log:201|"
                    "reply:201|done");
}
END_TEST

/* Writes the shipped OpenAPI document (and its common schemas) into the folder with the
 * password no longer marked secret and create-user's phone marked secret instead (masked
 * examples are HighLevel's mark). */
static void put_document_with_other_secrets(void)
{
    size_t n;
    char *doc = gw_read_file(gw_openapi_default_path(), 4 << 20, &n);
    ck_assert_ptr_nonnull(doc);
    const struct {
        const char *from, *to;
    } edits[] = {{"\"example\": \"*******\"", "\"example\": \"hunter2\""},
                 {"\"example\": \"+18832327657\"", "\"example\": \"****\""}};
    for (size_t e = 0; e < 2; e++) {
        size_t fl = strlen(edits[e].from), tl = strlen(edits[e].to), hits = 0;
        ck_assert_uint_le(tl, fl);
        for (char *p = strstr(doc, edits[e].from); p; p = strstr(p + tl, edits[e].from)) {
            memcpy(p, edits[e].to, tl);
            memmove(p + tl, p + fl, strlen(p + fl) + 1);
            hits++;
        }
        ck_assert_uint_eq(hits, 2); /* create-user and update-user */
    }
    put("users.openapi.json", doc);
    free(doc);
    char common[PATH_MAX];
    snprintf(common, sizeof common, "%s", gw_openapi_default_path());
    snprintf(strrchr(common, '/'), sizeof common - (size_t)(strrchr(common, '/') - common),
             "/common-schemas.json");
    doc = gw_read_file(common, 4 << 20, &n);
    ck_assert_ptr_nonnull(doc);
    put("common-schemas.json", doc);
    free(doc);
}

static const struct gw_op *op_named(const char *id)
{
    for (size_t i = 0; i < W.snap->api->nops; i++)
        if (strcmp(W.snap->api->ops[i].id, id) == 0)
            return &W.snap->api->ops[i];
    ck_abort_msg("no op %s", id);
    return NULL;
}

/* The members the document marks secret are redacted in the records, and the password always
 * (SPEC §9), whatever the document says. */
START_TEST(test_secret_members_and_the_password_are_redacted_whatever_the_document_says)
{
    put_document_with_other_secrets();
    boot(&(struct opts){.openapi = "users.openapi.json"});
    ck_assert(!gw_openapi_secret(op_named("create-user"), "password"));
    ck_assert(gw_openapi_secret(op_named("create-user"), "phone"));
    up_json(201, "{'id':'new5','roles':{'type':'account','role':'user','locationIds':['LOC1']}}");
    CALL(.method = "POST", .target = "/users/", .token = T.bot,
         .body = "{'companyId':'co1','firstName':'Ann','lastName':'Lee','email':'ann@example.com',"
                 "'password':'Secret-pass-123','phone':'+15550001','type':'account',"
                 "'role':'user','locationIds':['LOC1'],'scopes':[],'scopesAssignedToOnly':[]}");
    ck_assert_int_eq(the_reply()->status, 201);
    ck_assert_uint_eq(W.nrecs, 2);
    for (size_t i = 0; i < 2; i++) {
        const cJSON *change = cJSON_GetObjectItemCaseSensitive(W.recs[i].j, "change");
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(change, "password")->valuestring,
                         "[REDACTED]");
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(change, "phone")->valuestring,
                         "[REDACTED]");
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(change, "email")->valuestring,
                         "ann@example.com");
    }
    /* what goes upstream is the body itself */
    ck_assert_ptr_nonnull(strstr(W.sent[0].bytes, "\"password\":\"Secret-pass-123\""));
    ck_assert_ptr_nonnull(strstr(W.sent[0].bytes, "\"phone\":\"+15550001\""));
}
END_TEST

/* With the audit sink off a change goes straight upstream: no intent, no outcome. */
START_TEST(test_create_user_with_the_audit_sink_off_goes_straight_upstream)
{
    W.audit_on = false;
    up_json(201, "{'id':'new4','roles':{'type':'account','role':'user','locationIds':['LOC1']}}");
    CALL(.method = "POST", .target = "/users/", .token = T.bot, .body = CREATE_BODY);
    ck_assert_int_eq(the_reply()->status, 201);
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FORWARD,
                  GW_RS_OUTCOME, GW_RS_REPLY);
    ASSERT_TIMELINE("upstream:POST /users/ HTTP/1.1|log:201|reply:201|done");
    assert_sent_body(0, "POST", "/users/", CREATE_BODY);
}
END_TEST

/* ======================= update-user and delete-user ======================= */

/* The target is fetched (GET, retryable), decided on again, then the change is audited and
 * forwarded; "before" is what grants in the target. */
START_TEST(test_update_user_within_the_policy_fetches_decides_and_forwards)
{
    up_json(200, USER_IN);
    up_json(200, "{'id':'u1','firstName':'Bo','phone':'+1555','roles':{'type':'account',"
                 "'role':'user','locationIds':['LOC1']}}");
    CALL(.method = "PUT", .target = "/users/u1", .token = T.bot,
         .body = "{'firstName':'Bo','password':'New-pass-456'}");
    ASSERT_REPLY(200, "{'id':'u1','firstName':'Bo','roles':{'type':'account','role':'user',"
                      "'locationIds':['LOC1']}}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FETCH_TARGET,
                  GW_RS_DECIDE, GW_RS_INTENT, GW_RS_FORWARD, GW_RS_OUTCOME, GW_RS_REPLY);
    ASSERT_TIMELINE("upstream:GET /users/u1 HTTP/1.1|audit:intent|upstream:PUT /users/u1 HTTP/1.1|"
                    "audit:outcome|log:200|reply:200|done");
    assert_sent_get(0, "/users/u1", AGENCY);
    assert_sent_body(1, "PUT", "/users/u1", "{'firstName':'Bo','password':'New-pass-456'}");
    const char *common = "'op':'update-user','method':'PUT','path':'/users/u1'," ACTOR_BOT
                         ",'target':{'user_id':'u1','company_id':null,'location_ids':['LOC1']},"
                         "'policy':'b-bot','reasons':[],'change':{'firstName':'Bo',"
                         "'password':'[REDACTED]'}," BEFORE_IN;
    char want[2048];
    snprintf(want, sizeof want, "{'event':'intent',%s}", common);
    assert_record(0, "intent", want);
    snprintf(want, sizeof want, "{'event':'outcome',%s,'status':200,'upstream':'answered'}",
             common);
    assert_record(1, "outcome", want);
    assert_log(200, "update-user", "b-bot", "svc-bot", NULL, 200);
}
END_TEST

/* The target GET answered is not the change: an update whose intent is never confirmed hands
 * over an outcome that says not_sent, with the target as "before". */
START_TEST(test_update_user_with_the_intent_never_confirmed_gives_not_sent)
{
    boot(&(struct opts){.sync_timeout_ms = 20});
    W.intent_mode = INTENT_NEVER;
    up_json(200, USER_IN);
    CALL(.method = "PUT", .target = "/users/u1", .token = T.bot, .body = "{'firstName':'Bo'}");
    ck_assert_int_eq(the_reply()->status, 503);
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FETCH_TARGET,
                  GW_RS_DECIDE, GW_RS_INTENT, GW_RS_REPLY);
    ASSERT_TIMELINE("upstream:GET /users/u1 HTTP/1.1|audit:intent|audit:abandoned|log:503|"
                    "reply:503|done");
    assert_record_json(&W.abandoned, "outcome",
                       "{'event':'outcome','op':'update-user','method':'PUT','path':'/users/u1',"
                       "" ACTOR_BOT ",'target':{'user_id':'u1','company_id':null,"
                       "'location_ids':['LOC1']},'policy':'b-bot','reasons':[],"
                       "'change':{'firstName':'Bo'}," BEFORE_IN
                       ",'status':0,'upstream':'not_sent'}");
}
END_TEST

/* A target outside the policy's locations: 403 naming it only as outside (nothing else about
 * it); the record keeps every reason. Only the GET went upstream. */
START_TEST(test_update_user_of_a_target_outside_is_403_naming_it_only_as_outside)
{
    up_json(200, USER_OUT);
    CALL(.method = "PUT", .target = "/users/u9", .token = T.bot, .body = "{'firstName':'Bo'}");
    ASSERT_REPLY(403, "{'statusCode':403,'message':'policy b-bot: user u9 is outside this "
                      "policy`s locations','error':'Forbidden'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FETCH_TARGET,
                  GW_RS_DECIDE, GW_RS_REPLY);
    ASSERT_TIMELINE("upstream:GET /users/u9 HTTP/1.1|audit:denied|log:403|reply:403|done");
    ck_assert_uint_eq(W.nsent, 1);
    ck_assert_uint_eq(W.nrecs, 1);
    const cJSON *reasons = cJSON_GetObjectItemCaseSensitive(W.recs[0].j, "reasons");
    ck_assert_int_gt(cJSON_GetArraySize(reasons), 1);
    ck_assert_str_eq(cJSON_GetArrayItem(reasons, 0)->valuestring,
                     "policy b-bot: user u9 is outside this policy's locations");
    const cJSON *before = cJSON_GetObjectItemCaseSensitive(W.recs[0].j, "before");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(before, "role")->valuestring, "admin");
    ck_assert_uint_eq(denials("b-bot", "update-user"), 1);
}
END_TEST

/* A change the request alone is denied for is refused before any upstream call. */
START_TEST(test_update_user_denied_on_the_request_alone_fetches_nothing)
{
    CALL(.method = "PUT", .target = "/users/u1", .token = T.bot, .body = "{'role':'admin'}");
    ASSERT_REPLY(403, "{'statusCode':403,'message':'policy b-bot: role admin is not grantable',"
                      "'error':'Forbidden'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    const cJSON *before = cJSON_GetObjectItemCaseSensitive(W.recs[0].j, "before");
    ck_assert(cJSON_IsNull(before));
}
END_TEST

/* The target GET's own answers: an error status is passed back (404), a 2xx without a user
 * object is 502. */
START_TEST(test_target_fetch_answers_are_passed_back_or_502)
{
    up_json(404, "{'statusCode':404,'message':'User not found'}");
    CALL(.method = "DELETE", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(404, "{'statusCode':404,'message':'User not found'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FETCH_TARGET,
                  GW_RS_REPLY);
    ASSERT_TIMELINE("upstream:GET /users/u1 HTTP/1.1|log:404|reply:404|done");
    assert_log(404, "delete-user", "b-bot", "svc-bot", NULL, 404);

    const struct {
        int status;
        const char *headers, *body, *reply;
    } cases[] = {
        {204, NULL, NULL,
         "{'statusCode':502,'message':'the upstream answered 204 to the GET of the user to "
         "change','error':'Bad Gateway'}"},
        {200, "Content-Type: text/html", "<html></html>",
         "{'statusCode':502,'message':'the upstream`s answer for the user to change is not a "
         "JSON object','error':'Bad Gateway'}"},
        {200, NULL, NULL,
         "{'statusCode':502,'message':'the upstream`s answer for the user to change is not a "
         "JSON object','error':'Bad Gateway'}"},
        {200, "Content-Type: application/json", "['u1']",
         "{'statusCode':502,'message':'the upstream`s answer for the user to change is not a "
         "JSON object','error':'Bad Gateway'}"},
        {500, "Content-Type: text/html", "<html>oops</html>",
         "{'statusCode':500,'message':'the upstream`s answer (status 500) has Content-Type "
         "text/html, not JSON'}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        next_request();
        up_answer(cases[i].status, cases[i].headers, cases[i].body);
        CALL(.method = "PUT", .target = "/users/u1", .token = T.bot, .body = "{'firstName':'Bo'}");
        int st = cases[i].status == 500 ? 500 : 502;
        ASSERT_REPLY(st, cases[i].reply);
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE,
                      GW_RS_FETCH_TARGET, GW_RS_REPLY);
        ck_assert_uint_eq(W.nsent, 1);
        ck_assert_uint_eq(W.nrecs, 0);
        assert_log(st, "update-user", "b-bot", "svc-bot", NULL, cases[i].status);
    }
    /* the error log names the call that brought the answer: the GET */
    assert_logged_once("GET /users/u1: the upstream's answer (status 500) has Content-Type "
                       "text/html, not JSON");
}
END_TEST

/* The target GET failing: 504 on a timeout, nothing changed. */
START_TEST(test_target_fetch_timeout_is_504)
{
    up_fail(GW_UP_TIMEOUT, true);
    CALL(.method = "DELETE", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(504,
                 "{'statusCode':504,'message':'upstream timed out','error':'Gateway Timeout'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FETCH_TARGET,
                  GW_RS_REPLY);
    ck_assert_uint_eq(W.nrecs, 0);
    ck_assert_uint_eq(N(W.m->up_errors[GW_UPE_TIMEOUT]), 1);

    /* and the worker stopping meanwhile ends it without a reply or a record */
    next_request();
    up_fail(GW_UP_SHUTDOWN, true);
    CALL(.method = "DELETE", .target = "/users/u1", .token = T.bot);
    ck_assert_uint_eq(W.nreplies, 0);
    ck_assert_int_eq(W.done, 1);
    ck_assert_uint_eq(W.nrecs, 0);
}
END_TEST

/* delete-user of a target within: forwarded without a body; the answer (no user object) goes
 * back. A target whose role the policy may not grant: 403 with the exact reason. */
START_TEST(test_delete_user_within_is_forwarded_and_a_higher_role_is_403)
{
    up_json(200, USER_IN);
    up_json(200, "{'succeded':true,'message':'Queued deleting user with e-mail a@b.c'}");
    CALL(.method = "DELETE", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(200, "{'succeded':true,'message':'Queued deleting user with e-mail a@b.c'}");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE, GW_RS_FETCH_TARGET,
                  GW_RS_DECIDE, GW_RS_INTENT, GW_RS_FORWARD, GW_RS_OUTCOME, GW_RS_REPLY);
    assert_sent_get(0, "/users/u1", AGENCY);
    char *want = up_head("DELETE", "/users/u1", AGENCY);
    assert_sent(1, want, false);
    free(want);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(W.recs[1].j, "upstream")->valuestring,
                     "answered");

    next_request();
    up_json(200, "{'id':'u1','roles':{'type':'account','role':'admin','locationIds':['LOC1']},"
                 "'scopes':['contacts.write']}");
    CALL(.method = "DELETE", .target = "/users/u1", .token = T.bot);
    ASSERT_REPLY(403, "{'statusCode':403,'message':'policy b-bot: user u1 has role admin, which "
                      "this policy may not grant','error':'Forbidden'}");
    ck_assert_uint_eq(W.nsent, 1);
    ck_assert_int_eq(W.recs[0].ev, GW_AUDIT_DENIED);
}
END_TEST

/* ======================= the upstream's Host ======================= */

/* Host names the upstream URL's host, with :port when the port is not 443; an IPv6 literal in
 * brackets. */
START_TEST(test_upstream_host_header_follows_the_url)
{
    const struct {
        const char *url, *host;
    } cases[] = {
        {"https://127.0.0.1:8443", "127.0.0.1:8443"},
        {"https://[::1]", "[::1]"},
        {"https://[::1]:8443/", "[::1]:8443"},
        {"https://api.example.com:443", "api.example.com"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        boot(&(struct opts){.url = cases[i].url});
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
        ck_assert_int_eq(the_reply()->status, 200);
        char want[128];
        snprintf(want, sizeof want, "GET /users/u1 HTTP/1.1\r\nHost: %s\r\n", cases[i].host);
        ck_assert_msg(strncmp(W.sent[0].bytes, want, strlen(want)) == 0, "%s: %s", cases[i].url,
                      W.sent[0].bytes);
    }
}
END_TEST

/* The trace is optional (the worker gives none), and a connection without a peer address is
 * logged and audited with an empty ip. */
START_TEST(test_request_runs_without_a_trace_or_a_peer_address)
{
    W.no_trace = true;
    W.no_ip = true;
    up_json(200, USER_OUT);
    CALL(.method = "GET", .target = "/users/u9", .token = T.bot);
    ck_assert_int_eq(the_reply()->status, 403);
    ck_assert_uint_eq(W.ntrace, 0);
    ck_assert_str_eq(the_log()->ip, "");
    const cJSON *actor = cJSON_GetObjectItemCaseSensitive(W.recs[0].j, "actor");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(actor, "ip")->valuestring, "");
}
END_TEST

/* Without randomness a new request id is 32 zeros and a new trace the valid ...01 ids (a
 * caller's trace keeps its trace id), and the next request tries again. */
START_TEST(test_request_id_without_randomness_is_zeros_once)
{
    rand_fail_n = 1;
    CALL(.method = "GET", .target = "/nowhere");
    ck_assert_int_eq(rand_fail_n, 0);
    ck_assert_str_eq(hdr("X-Request-Id"), "00000000000000000000000000000000");
    ck_assert_str_eq(hdr("traceparent"), "00-00000000000000000000000000000001-0000000000000001-00");
    ck_assert_int_eq(the_reply()->status, 404);
    next_request();
    rand_fail_n = 1;
    CALL(.method = "GET", .target = "/nowhere",
         .headers = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n");
    ck_assert_str_eq(hdr("traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-01");
    next_request();
    CALL(.method = "GET", .target = "/nowhere");
    ck_assert(is_hex32(hdr("X-Request-Id")));
    ck_assert_str_ne(hdr("X-Request-Id"), "00000000000000000000000000000000");
    ck_assert_str_ne(the_log()->trace_id, "00000000000000000000000000000001");
    ck_assert_uint_eq(W.ids.used, 40);
}
END_TEST

START_TEST(test_stage_names)
{
    static const char *const names[] = {"read",    "authenticate", "validate",
                                        "decide",  "fetch_target", "intent",
                                        "forward", "outcome",      "reply"};
    for (int s = 0; s < GW_RS_STAGES; s++)
        ck_assert_str_eq(gw_req_stage_name((enum gw_req_stage)s), names[s]);
    ck_assert_str_eq(gw_req_stage_name(GW_RS_STAGES), "?");
}
END_TEST

/* ======================= the shared rate-limit store (SPEC §11.2) ======================= */

/* The store's verdict decides alone: it gets the whole limits (not a replica's share) and
 * the subject, and a request it allowed meets no limit kept here (the local ones, 1 an hour,
 * would have refused the second). */
START_TEST(test_store_allowed_is_the_only_limit)
{
    boot(&(struct opts){.subject_burst = 1, .upstream_burst = 1, .replicas = 3,
                        .on_failure = "local"});
    use_store(STORE_VERDICT, -1);
    for (int i = 0; i < 2; i++) {
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
        ck_assert_int_eq(the_reply()->status, 200);
        ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_VALIDATE, GW_RS_DECIDE,
                      GW_RS_FORWARD, GW_RS_OUTCOME, GW_RS_REPLY);
    }
    ck_assert_int_eq(W.store_calls, 2);
    ck_assert_int_eq(W.store_ask.cost, 1);
    ck_assert_int_eq(W.store_ask.subject_burst, 1);
    ck_assert_int_eq(W.store_ask.subject_per_seconds, 3600);
    ck_assert_int_eq(W.store_ask.upstream_burst, 1);
    ck_assert_int_eq(W.store_ask.upstream_per_seconds, 3600);
    ck_assert_int_eq(W.store_ask.daily, 200000);
    ck_assert_int_eq(N(W.m->rate_limited[GW_RL_SUBJECT]) + N(W.m->rate_limited[GW_RL_UPSTREAM]),
                     0);
}
END_TEST

/* A change that reads its target first pays for both upstream calls in its one round trip. */
START_TEST(test_store_charges_two_calls_for_a_change_with_a_target)
{
    boot(&(struct opts){.upstream_burst = 1, .on_failure = "local"});
    use_store(STORE_VERDICT, -1);
    up_json(200, USER_IN);
    up_json(200, "{'succeded':true,'message':'Queued deleting user with e-mail a@b.c'}");
    CALL(.method = "DELETE", .target = "/users/u1", .token = T.bot);
    ck_assert_int_eq(the_reply()->status, 200);
    ck_assert_int_eq(W.store_calls, 1);
    ck_assert_int_eq(W.store_ask.cost, 2);
    ck_assert_uint_eq(W.nsent, 2); /* the local upstream burst of 1 was not consulted */
}
END_TEST

/* Refused by the store: 429 with the refusing limit's headers, counted by scope (the daily
 * budget is the upstream's), nothing sent. */
START_TEST(test_store_refusal_is_429_with_its_headers)
{
    boot(&(struct opts){.on_failure = "local"});
    use_store(STORE_VERDICT, GW_RLS_SUBJECT);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ASSERT_REPLY(429, "{'statusCode':429,'message':'Too many requests',"
                      "'error':'Too Many Requests'}");
    ck_assert_str_eq(hdr("Retry-After"), "7");
    ck_assert_str_eq(hdr("X-RateLimit-Max"), "5");
    ck_assert_str_eq(hdr("X-RateLimit-Remaining"), "0");
    ck_assert_str_eq(hdr("X-RateLimit-Interval-Milliseconds"), "10000");
    ASSERT_STAGES(GW_RS_READ, GW_RS_AUTHENTICATE, GW_RS_REPLY);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_SUBJECT]), 1);
    next_request();
    use_store(STORE_VERDICT, GW_RLS_DAILY);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 429);
    ASSERT_NOTHING_SENT();
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_UPSTREAM]), 1);
}
END_TEST

/* on_failure "deny": a store that failed answers 503 and nothing is sent. */
START_TEST(test_store_failure_deny_is_503)
{
    boot(&(struct opts){.on_failure = "deny"});
    use_store(STORE_ERROR, -1);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ASSERT_REPLY(503, "{'statusCode':503,'message':'rate-limit store unavailable',"
                      "'error':'Service Unavailable'}");
    ASSERT_NOTHING_SENT();
    next_request();
    use_store(STORE_UNUSABLE, -1);
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 503);
    ASSERT_NOTHING_SENT();
}
END_TEST

/* on_failure "allow": through, with no limit at all (the local ones would refuse). */
START_TEST(test_store_failure_allow_passes_without_limits)
{
    boot(&(struct opts){.subject_burst = 1, .upstream_burst = 1, .on_failure = "allow"});
    use_store(STORE_UNUSABLE, -1);
    for (int i = 0; i < 3; i++) {
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
        ck_assert_int_eq(the_reply()->status, 200);
    }
}
END_TEST

/* on_failure "local" (the default): this replica's share, 1/replicas of each limit. */
START_TEST(test_store_failure_local_keeps_this_replicas_share)
{
    boot(&(struct opts){.subject_burst = 6, .replicas = 3, .on_failure = "local"});
    use_store(STORE_TIMEOUT, -1);
    for (int i = 0; i < 2; i++) {
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
        ck_assert_int_eq(the_reply()->status, 200);
    }
    next_request();
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 429);
    ck_assert_str_eq(hdr("X-RateLimit-Max"), "2");
    ASSERT_NOTHING_SENT();
}
END_TEST

/* Without a store, rate_limit.replicas shares every limit out (SPEC §11.1): 1/2 of the
 * subject's 4 and of the upstream's 4. */
START_TEST(test_replicas_without_a_store_keep_their_share)
{
    boot(&(struct opts){.subject_burst = 4, .upstream_burst = 4, .replicas = 2});
    for (int i = 0; i < 2; i++) {
        next_request();
        up_json(200, USER_IN);
        CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
        ck_assert_int_eq(the_reply()->status, 200);
    }
    next_request();
    CALL(.method = "GET", .target = "/users/u1", .token = T.admin);
    ck_assert_int_eq(the_reply()->status, 429);
    ck_assert_str_eq(hdr("X-RateLimit-Max"), "2");
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_SUBJECT]), 1);
    next_request(); /* another subject meets the upstream's share: 2 were spent */
    CALL(.method = "GET", .target = "/users/u1", .token = T.bot);
    ck_assert_int_eq(the_reply()->status, 429);
    ck_assert_uint_eq(N(W.m->rate_limited[GW_RL_UPSTREAM]), 1);
    ck_assert_int_eq(W.store_calls, 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("request");
    TCase *t;

    t = tcase_create("read");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_refused_framing_is_answered_400_and_closes);
    tcase_add_test(t, test_head_too_large_is_answered_431_without_a_method);
    tcase_add_test(t, test_bad_target_is_answered_400_before_authentication);
    tcase_add_test(t, test_no_route_is_answered_404_in_the_upstreams_words);
    tcase_add_test(t, test_request_id_is_the_callers_when_valid_else_new);
    tcase_add_test(t, test_valid_traceparent_is_continued_with_a_new_parent_id);
    tcase_add_test(t, test_invalid_traceparent_starts_a_new_trace);
    tcase_add_test(t, test_refused_requests_have_a_trace);
    tcase_add_test(t, test_request_id_pool_is_refilled_after_its_last_id);
    tcase_add_test(t, test_request_id_without_randomness_is_zeros_once);
    tcase_add_test(t, test_request_runs_without_a_trace_or_a_peer_address);
    tcase_add_test(t, test_stage_names);
    suite_add_tcase(s, t);

    t = tcase_create("authenticate");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_no_bearer_token_is_401_with_the_plain_challenge);
    tcase_add_test(t, test_bad_tokens_are_401_with_their_reason_class);
    tcase_add_test(t, test_token_past_the_cap_is_refused_before_the_cache);
    tcase_add_test(t, test_second_request_with_a_token_is_served_from_the_cache);
    tcase_add_test(t, test_token_in_its_leeway_is_accepted_but_not_cached);
    tcase_add_test(t, test_subject_over_its_rate_limit_gets_429);
    suite_add_tcase(s, t);

    t = tcase_create("shared store");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_store_allowed_is_the_only_limit);
    tcase_add_test(t, test_store_charges_two_calls_for_a_change_with_a_target);
    tcase_add_test(t, test_store_refusal_is_429_with_its_headers);
    tcase_add_test(t, test_store_failure_deny_is_503);
    tcase_add_test(t, test_store_failure_allow_passes_without_limits);
    tcase_add_test(t, test_store_failure_local_keeps_this_replicas_share);
    tcase_add_test(t, test_replicas_without_a_store_keep_their_share);
    suite_add_tcase(s, t);

    t = tcase_create("validate");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_scope_missing_is_401_insufficient_scope);
    tcase_add_test(t, test_version_missing_or_invalid_is_400);
    tcase_add_test(t, test_body_not_declared_json_is_415);
    tcase_add_test(t, test_body_too_large_is_413_and_closes);
    tcase_add_test(t, test_schema_violations_are_422_all_together);
    tcase_add_test(t, test_body_that_is_not_json_is_400);
    suite_add_tcase(s, t);

    t = tcase_create("decide");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_policy_denial_is_403_with_a_denied_record);
    tcase_add_test(t, test_subject_without_a_policy_is_403);
    tcase_add_test(t, test_no_credential_is_503_naming_it);
    suite_add_tcase(s, t);

    t = tcase_create("reads");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_get_user_is_forwarded_from_the_allow_list_and_passed_back);
    tcase_add_test(t, test_get_user_answer_is_redacted_by_the_read_rules);
    tcase_add_test(t, test_get_user_outside_the_policy_is_403_with_a_denied_record);
    tcase_add_test(t, test_empty_read_answer_is_passed_back_under_read_rules);
    tcase_add_test(t, test_search_list_is_filtered_and_its_count_lowered);
    tcase_add_test(t, test_malformed_list_is_502);
    tcase_add_test(t, test_get_user_by_location_uses_the_location_token);
    tcase_add_test(t, test_include_reads_writes_a_read_record);
    tcase_add_test(t, test_upstream_host_header_follows_the_url);
    suite_add_tcase(s, t);

    t = tcase_create("upstream");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_upstream_failures_are_502_or_504);
    tcase_add_test(t, test_upstream_call_not_started_is_503);
    tcase_add_test(t, test_shutdown_ends_a_read_without_a_reply);
    tcase_add_test(t, test_shutdown_during_a_change_records_its_outcome);
    tcase_add_test(t, test_read_answer_not_json_is_502);
    tcase_add_test(t, test_error_answer_not_json_keeps_its_status);
    tcase_add_test(t, test_change_done_with_an_answer_not_json_is_passed_back);
    tcase_add_test(t, test_change_done_passes_back_without_read_rules);
    tcase_add_test(t, test_upstream_limit_is_429_and_nothing_is_sent);
    tcase_add_test(t, test_upstream_limit_after_the_intent_records_not_sent);
    suite_add_tcase(s, t);

    t = tcase_create("changes");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_create_user_writes_intent_then_forwards_then_outcome);
    tcase_add_test(t, test_create_user_without_read_rules_records_the_new_id);
    tcase_add_test(t, test_create_user_with_the_intent_failing_is_503_and_not_forwarded);
    tcase_add_test(t, test_create_user_with_the_intent_never_confirmed_is_503_and_abandoned);
    tcase_add_test(t, test_intent_answered_as_the_deadline_passes_goes_on);
    tcase_add_test(t, test_create_user_with_the_audit_sink_off_goes_straight_upstream);
    tcase_add_test(t, test_secret_members_and_the_password_are_redacted_whatever_the_document_says);
    tcase_add_test(t, test_update_user_within_the_policy_fetches_decides_and_forwards);
    tcase_add_test(t, test_change_carries_the_callers_trace_to_every_call_and_record);
    tcase_add_test(t, test_update_user_with_the_intent_never_confirmed_gives_not_sent);
    tcase_add_test(t, test_update_user_of_a_target_outside_is_403_naming_it_only_as_outside);
    tcase_add_test(t, test_update_user_denied_on_the_request_alone_fetches_nothing);
    tcase_add_test(t, test_target_fetch_answers_are_passed_back_or_502);
    tcase_add_test(t, test_target_fetch_timeout_is_504);
    tcase_add_test(t, test_delete_user_within_is_forwarded_and_a_higher_role_is_403);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    real_stderr = dup(STDERR_FILENO);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
