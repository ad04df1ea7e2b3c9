/* Unit tests of the audit log (proxy/audit.c) through its public API: the line format and the
 * byte rule of the hash chain (recomputed here with OpenSSL, independently of the module),
 * HMAC keys, continuation across restarts and rotations (the last line, the state file
 * <file>.chain) and the refusals of gw_audit_open, waited records acknowledged on their own
 * event loop, failing writes (/dev/full, RLIMIT_FSIZE) that leave no partial line, and
 * gw_audit_verify on hand-made files with every kind of tampering (with the exact FILE:LINE of
 * its message).
 *
 * Each test works in a fresh folder (mkdtemp). Hand-made records are sealed by seal() below,
 * which implements the documented rule: hash = hex(SHA-256(prev || body)) or HMAC-SHA256(key,
 * prev || body), prev the 64 ASCII hex digits of the previous hash, body the line without its
 * newline and without ,"hash":"..." (so it ends with "prev":"..."}). */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "audit.h"
#include "config.h"
#include "json.h"

#define ZEROS "0000000000000000000000000000000000000000000000000000000000000000"
#define TS "2026-03-01T12:00:00.000Z"
#define KEY_A "k3y-A-0123456789abcdefghijklmnopqrstuvwxyz" /* 42 bytes */
#define KEY_B "k3y-B-0123456789abcdefghijklmnopqrstuvwxyz"

static char g_dir[64]; /* this test's folder */

/* ---- the folder ---- */

static void make_dir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/gwaudit.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_dir(void)
{
    if (g_dir[0])
        nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    g_dir[0] = '\0';
}

/* A path in the folder (one of a few rotating static buffers). */
static const char *in_dir(const char *name)
{
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

static void put_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static void put(const char *path, const char *text)
{
    put_file(path, text, strlen(text));
}

static char *slurp(const char *path, size_t *len)
{
    size_t n = 0;
    char *t = gw_read_file(path, 1u << 24, &n);
    ck_assert_msg(t != NULL, "cannot read %s", path);
    if (len)
        *len = n;
    return t;
}

/* The lines of a file, without their newlines (a NULL-terminated array). */
static char **lines_of(const char *path, size_t *n)
{
    size_t len;
    char *t = slurp(path, &len);
    char **v = calloc(len + 2, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(t + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - t) : len;
        v[k++] = strndup(t + i, e - i);
        i = e + 1;
    }
    free(t);
    *n = k;
    return v;
}

static void free_lines(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Writes lines (each without newline) back as a file, each with its newline. */
static void put_lines(const char *path, char *const *v, size_t n)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s\n", v[i]);
    ck_assert_int_eq(fclose(f), 0);
}

/* ---- the disk, as a failing or slow one answers ----
 * These definitions take the place of libc's fdatasync and fsync for proxy/audit.c (linked in
 * from gwcore); the real ones are called through dlsym. Each test runs in its own process. */

static atomic_int sync_fail_n;      /* the next n fdatasync calls fail ... */
static atomic_int sync_fail_errno;  /* ... with this errno ... */
static atomic_bool sync_fail_drops; /* ... and lose what was written since the last sync, as
                                       Linux may drop the dirty pages whose writeback failed */
static atomic_int sync_delay_ms;    /* every fdatasync sleeps this long first */
static atomic_int dir_syncs;        /* fsync calls on folders */
static off_t synced_size = -1;      /* the audit file's size at its last successful sync */

static int real_sync(const char *name, int fd)
{
    int (*f)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    ck_assert_ptr_nonnull(f);
    return f(fd);
}

int fdatasync(int fd)
{
    int ms = atomic_load(&sync_delay_ms);
    if (ms > 0)
        usleep((useconds_t)ms * 1000);
    if (atomic_load(&sync_fail_n) > 0) {
        atomic_fetch_sub(&sync_fail_n, 1);
        if (atomic_load(&sync_fail_drops) && synced_size >= 0)
            ck_assert_int_eq(ftruncate(fd, synced_size), 0);
        errno = atomic_load(&sync_fail_errno);
        return -1;
    }
    int rc = real_sync("fdatasync", fd);
    struct stat st;
    if (rc == 0 && fstat(fd, &st) == 0)
        synced_size = st.st_size;
    return rc;
}

int fsync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        atomic_fetch_add(&dir_syncs, 1);
    return real_sync("fsync", fd);
}

/* ---- the hash, independently of proxy/audit.c ---- */

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* hex(SHA-256(prev || body)), or HMAC-SHA256 with key, over one concatenated buffer. */
static void hash_of(const char *key, const char *prev, const char *body, size_t blen, char out[65])
{
    ck_assert_uint_eq(strlen(prev), 64);
    unsigned char *msg = malloc(64 + blen);
    memcpy(msg, prev, 64);
    memcpy(msg + 64, body, blen);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (key)
        ck_assert_ptr_nonnull(
            HMAC(EVP_sha256(), key, (int)strlen(key), msg, 64 + blen, md, &mdlen));
    else
        ck_assert_int_eq(EVP_Digest(msg, 64 + blen, md, &mdlen, EVP_sha256(), NULL), 1);
    free(msg);
    ck_assert_uint_eq(mdlen, 32);
    to_hex(md, 32, out);
}

/* A line from a body ending with '}': hashed with prev, the hash member put before the last
 * brace. Returns the line without newline (malloc'd); the hash into hash (when not NULL). */
static char *seal(const char *key, const char *prev, const char *body, char *hash)
{
    char h[65];
    size_t blen = strlen(body);
    ck_assert(blen > 0 && body[blen - 1] == '}');
    hash_of(key, prev, body, blen, h);
    char *line = malloc(blen + 80);
    snprintf(line, blen + 80, "%.*s,\"hash\":\"%s\"}", (int)(blen - 1), body, h);
    if (hash)
        memcpy(hash, h, 65);
    return line;
}

/* A well-formed record: seq, members and prev as given. */
static char *rec(const char *key, unsigned long long seq, const char *members, const char *prev,
                 char *hash)
{
    char *body = NULL;
    ck_assert_int_ge(asprintf(&body, "{\"v\":1,\"seq\":%llu,\"ts\":\"" TS "\",%s,\"prev\":\"%s\"}",
                              seq, members, prev),
                     0);
    char *line = seal(key, prev, body, hash);
    free(body);
    return line;
}

/* A valid hand-made chain of n records (n <= 16); hashes into h[1..n] (h[0] = zeros). */
static char **chain(const char *key, size_t n, char h[][65])
{
    char **v = calloc(n + 1, sizeof *v);
    memcpy(h[0], ZEROS, 65);
    for (size_t i = 1; i <= n; i++) {
        char m[128];
        snprintf(m, sizeof m, "\"event\":\"outcome\",\"sub\":\"alice\",\"n\":%zu", i);
        v[i - 1] = rec(key, i, m, h[i - 1], h[i]);
    }
    return v;
}

/* ---- gw_audit_verify into strings ---- */

static int v_rc;
static char v_out[4096], v_err[4096];

/* gw_audit_verify with the anchors given as --anchor would be ("[REPLICA:]SEQ:HASH"). */
static int verify_anchored(const char *const *files, size_t nfiles, const char *key,
                           const char *const *anchors, size_t nanchors, bool cont)
{
    struct gw_audit_anchor a[8];
    ck_assert_uint_le(nanchors, 8);
    for (size_t i = 0; i < nanchors; i++)
        ck_assert_msg(gw_audit_anchor_parse(anchors[i], &a[i]) == 0, "anchor %s", anchors[i]);
    struct gw_audit_verify_opts opts = {.key = (const unsigned char *)key,
                                        .keylen = key ? strlen(key) : 0,
                                        .anchors = a,
                                        .nanchors = nanchors,
                                        .cont = cont};
    char *o = NULL, *e = NULL;
    size_t on = 0, en = 0;
    FILE *out = open_memstream(&o, &on), *err = open_memstream(&e, &en);
    ck_assert(out && err);
    v_rc = gw_audit_verify(files, nfiles, &opts, out, err);
    fclose(out);
    fclose(err);
    snprintf(v_out, sizeof v_out, "%s", o);
    snprintf(v_err, sizeof v_err, "%s", e);
    free(o);
    free(e);
    return v_rc;
}

/* anchor_seq 0: no anchor; else SEQ:HASH, the only chain's. */
static int verify_files(const char *const *files, size_t nfiles, const char *key,
                        uint64_t anchor_seq, const char *anchor_hash, bool cont)
{
    char anchor[100];
    const char *anchors[] = {anchor};
    snprintf(anchor, sizeof anchor, "%llu:%s", (unsigned long long)anchor_seq,
             anchor_hash ? anchor_hash : "");
    return verify_anchored(files, nfiles, key, anchors, anchor_seq ? 1 : 0, cont);
}

static int verify1(const char *file, const char *key)
{
    return verify_files(&file, 1, key, 0, NULL, false);
}

/* The verification passed: one chain's line (none without records), then the count. */
#define ck_verified(n)                                                                             \
    do {                                                                                           \
        char want_[64];                                                                            \
        snprintf(want_, sizeof want_, "%d records verified\n", (int)(n));                          \
        ck_assert_msg(v_rc == 0, "verify rc %d: %s", v_rc, v_err);                                 \
        ck_assert_str_eq(v_err, "");                                                               \
        const char *nl_ = strchr(v_out, '\n');                                                     \
        if ((n) == 0)                                                                              \
            ck_assert_str_eq(v_out, want_);                                                        \
        else                                                                                       \
            ck_assert_msg(strncmp(v_out, "replica ", 8) == 0 && nl_ &&                             \
                              strcmp(nl_ + 1, want_) == 0,                                         \
                          "%s", v_out);                                                            \
    } while (0)

/* The verification fails with exactly this message on err (rc 1, nothing on out). */
#define ck_refused(msg)                                                                            \
    do {                                                                                           \
        ck_assert_int_eq(v_rc, 1);                                                                 \
        ck_assert_str_eq(v_err, msg);                                                              \
        ck_assert_str_eq(v_out, "");                                                               \
    } while (0)

/* ---- writing through the API ---- */

static struct gw_audit *open_log(const char *file, bool fsync, const char *keyfile, char *why,
                                 size_t whylen)
{
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.audit.file = (char *)file;
    cfg.audit.fsync = fsync;
    cfg.audit.hmac_key_file = (char *)keyfile;
    why[0] = '\0';
    return gw_audit_open(&cfg, why, whylen);
}

static struct gw_audit *open_ok(const char *file, bool fsync, const char *keyfile)
{
    char why[512];
    struct gw_audit *a = open_log(file, fsync, keyfile, why, sizeof why);
    ck_assert_msg(a != NULL, "gw_audit_open refused %s: %s", file, why);
    return a;
}

/* The refusal of gw_audit_open, in a static buffer. */
static const char *open_refused(const char *file, const char *keyfile)
{
    static char why[512];
    struct gw_audit *a = open_log(file, false, keyfile, why, sizeof why);
    ck_assert_msg(a == NULL, "gw_audit_open accepted %s", file);
    ck_assert_msg(why[0] != '\0', "a refusal without a reason");
    return why;
}

static char *members_for(long i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "outcome");
    cJSON_AddStringToObject(o, "sub", "alice");
    cJSON_AddNumberToObject(o, "i", (double)i);
    char *m = gw_audit_members(o);
    cJSON_Delete(o);
    ck_assert_ptr_nonnull(m);
    return m;
}

static void post_n(struct gw_audit *a, long first, long n)
{
    for (long i = first; i < first + n; i++)
        gw_audit_post(a, GW_AUDIT_OUTCOME, members_for(i));
}

/* open, start, post n, stop, free. */
static void write_records(const char *file, long n, bool fsync, const char *keyfile)
{
    struct gw_audit *a = open_ok(file, fsync, keyfile);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 1, n);
    gw_audit_stop(a);
    gw_audit_free(a);
}

/* The members of one line, parsed (cJSON; the caller deletes). */
static cJSON *parse_line(const char *line)
{
    cJSON *j = cJSON_Parse(line);
    ck_assert_msg(cJSON_IsObject(j), "not a JSON object: %s", line);
    return j;
}

static unsigned long long seq_of(const char *line)
{
    cJSON *j = parse_line(line);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "seq");
    ck_assert(cJSON_IsNumber(s));
    unsigned long long v = (unsigned long long)s->valuedouble;
    cJSON_Delete(j);
    return v;
}

/* "prev" or "hash" of a line, into out[65]. */
static void member_of(const char *line, const char *name, char out[65])
{
    cJSON *j = parse_line(line);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, name);
    ck_assert_msg(cJSON_IsString(s) && strlen(s->valuestring) == 64, "%s of %s", name, line);
    memcpy(out, s->valuestring, 65);
    cJSON_Delete(j);
}

/* Every line of file: the exact shape, seq first..first+n-1, each prev the hash before (the
 * first one's prev is first_prev), each hash recomputed here. */
static void check_chain(const char *file, const char *key, unsigned long long first,
                        const char *first_prev, size_t n)
{
    size_t got;
    char **v = lines_of(file, &got);
    ck_assert_uint_eq(got, n);
    char prev[65];
    memcpy(prev, first_prev, 65);
    for (size_t i = 0; i < n; i++) {
        const char *l = v[i];
        size_t len = strlen(l);
        char head[64];
        snprintf(head, sizeof head, "{\"v\":1,\"seq\":%llu,\"ts\":\"", first + i);
        ck_assert_msg(strncmp(l, head, strlen(head)) == 0, "line %zu: %s", i + 1, l);
        /* ts: 2026-03-01T12:00:00.000Z */
        const char *ts = l + strlen(head);
        ck_assert_msg(strlen(ts) > 26 && ts[4] == '-' && ts[10] == 'T' && ts[19] == '.' &&
                          ts[23] == 'Z' && ts[24] == '"' && ts[25] == ',',
                      "ts of line %zu: %s", i + 1, l);
        ck_assert_uint_eq(seq_of(l), first + i);
        char p[65], h[65], want[65];
        member_of(l, "prev", p);
        member_of(l, "hash", h);
        ck_assert_str_eq(p, prev);
        /* the tail is exactly ,"prev":"<prev>","hash":"<hash>"} */
        char tail[160];
        snprintf(tail, sizeof tail, ",\"prev\":\"%s\",\"hash\":\"%s\"}", p, h);
        ck_assert_uint_gt(len, strlen(tail));
        ck_assert_str_eq(l + len - strlen(tail), tail);
        /* the body: the line without ,"hash":"..." */
        size_t blen = len - 75 + 1;
        char *body = malloc(blen + 1);
        memcpy(body, l, blen - 1);
        body[blen - 1] = '}';
        body[blen] = '\0';
        hash_of(key, prev, body, blen, want);
        free(body);
        ck_assert_str_eq(h, want);
        memcpy(prev, h, 65);
    }
    free_lines(v);
}

/* ---- waiting on an event base ---- */

struct waiter {
    struct event_base *base;
    int fired;
};

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct waiter *w = arg;
    w->fired++;
    event_base_loopbreak(w->base);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Submits an intent record with members and runs a fresh event base until its event fires
 * (at most 5 s). Returns the item (ok and seq set); the caller frees it and its members. */
static struct gw_audit_item *submit_and_wait(struct gw_audit *a, char *members)
{
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    struct waiter w = {base, 0};
    struct gw_audit_item *it = calloc(1, sizeof *it);
    it->event = GW_AUDIT_INTENT;
    it->members = members;
    it->done = event_new(base, -1, 0, done_cb, &w);
    it->seq = 0;
    struct event *deadline = evtimer_new(base, deadline_cb, base);
    struct timeval tv = {5, 0};
    evtimer_add(deadline, &tv);
    ck_assert_int_eq(gw_audit_submit(a, it), 0);
    event_base_dispatch(base);
    ck_assert_msg(w.fired == 1, "the item's event did not fire (fired %d)", w.fired);
    event_free(it->done);
    it->done = NULL;
    event_free(deadline);
    event_base_free(base);
    return it;
}

static void free_item(struct gw_audit_item *it)
{
    free(it->members);
    free(it);
}

/* ================= the chain written through the API ================= */

START_TEST(test_written_log_has_seq_from_1_prev_chained_and_verifies)
{
    bool fsync = _i != 0;
    make_dir();
    const char *f = in_dir("audit.jsonl");
    write_records(f, 5, fsync, NULL);
    check_chain(f, NULL, 1, ZEROS, 5);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(5);
}
END_TEST

START_TEST(test_record_is_v_seq_ts_then_members_in_order_then_prev_and_hash)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "denied");
    cJSON_AddStringToObject(o, "sub", "b\"o\\b\n\xc3\xa9");
    cJSON_AddItemToObject(o, "reasons", cJSON_CreateStringArray((const char *[]){"x", "y"}, 2));
    cJSON_AddNullToObject(o, "status");
    char *m = gw_audit_members(o);
    cJSON_Delete(o);
    const char *want = "\"event\":\"denied\",\"sub\":\"b\\\"o\\\\b\\n\xc3\xa9\","
                       "\"reasons\":[\"x\",\"y\"],\"status\":null";
    ck_assert_str_eq(m, want);
    gw_audit_post(a, GW_AUDIT_DENIED, m);
    gw_audit_stop(a);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    gw_audit_free(a);

    size_t n;
    char **v = lines_of(f, &n);
    ck_assert_uint_eq(n, 1);
    /* {"v":1,"seq":1,"ts":"<24>",<members>,"prev":"<zeros>","hash":"<64>"} */
    const char *l = v[0];
    ck_assert_int_eq(strncmp(l, "{\"v\":1,\"seq\":1,\"ts\":\"", 21), 0);
    ck_assert_int_eq(strncmp(l + 21 + 24, "\",", 2), 0);
    ck_assert_int_eq(strncmp(l + 21 + 24 + 2, want, strlen(want)), 0);
    ck_assert_int_eq(
        strncmp(l + 21 + 24 + 2 + strlen(want), ",\"prev\":\"" ZEROS "\",\"hash\":\"", 9 + 64 + 10),
        0);
    ck_assert_uint_eq(strlen(l), 21 + 24 + 2 + strlen(want) + 9 + 64 + 10 + 64 + 2);
    free_lines(v);
    check_chain(f, NULL, 1, ZEROS, 1);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(1);
    ck_assert_uint_eq(st.records[GW_AUDIT_DENIED], 1);
    ck_assert_uint_eq(st.last_seq, 1);
}
END_TEST

START_TEST(test_hand_sealed_records_verify_byte_rule_matches)
{
    /* the other direction: records sealed by this file's reading of the rule verify */
    make_dir();
    const char *f = in_dir("hand.jsonl");
    char h[8][65];
    char **v = chain(NULL, 4, h);
    put_lines(f, v, 4);
    free_lines(v);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(4);
    /* and one with an HMAC key */
    v = chain(KEY_A, 3, h);
    put_lines(f, v, 3);
    free_lines(v);
    ck_assert_int_eq(verify1(f, KEY_A), 0);
    ck_verified(3);
}
END_TEST

START_TEST(test_stats_count_records_batches_and_fsyncs)
{
    bool fsync = _i != 0;
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, fsync, NULL);
    ck_assert(gw_audit_enabled(a));
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 1, 3);
    gw_audit_post(a, GW_AUDIT_READ, members_for(9));
    gw_audit_stop(a);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    char why[200];
    ck_assert(gw_audit_ready(a, why, sizeof why));
    gw_audit_free(a);
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 3);
    ck_assert_uint_eq(st.records[GW_AUDIT_READ], 1);
    ck_assert_uint_eq(st.records[GW_AUDIT_INTENT], 0);
    ck_assert_uint_eq(st.last_seq, 4);
    ck_assert_uint_eq(st.lost, 0);
    ck_assert_uint_eq(st.write_failures, 0);
    ck_assert_uint_ge(st.batches, 1);
    ck_assert_uint_le(st.batches, 4);
    if (fsync) { /* group commit: the first batch is synced; later ones may share a sync */
        ck_assert_uint_ge(st.fsyncs, 1);
        ck_assert_uint_le(st.fsyncs, st.batches);
    } else {
        ck_assert_uint_eq(st.fsyncs, 0);
    }
    ck_assert_uint_eq(st.write_le[7], st.batches); /* every batch took less than 1 s */
}
END_TEST

struct poster {
    struct gw_audit *a;
    long first;
};

static void *poster_main(void *arg)
{
    struct poster *p = arg;
    post_n(p->a, p->first, 200);
    return NULL;
}

START_TEST(test_concurrent_posts_make_one_contiguous_chain)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    pthread_t t[4];
    struct poster p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (struct poster){a, 1000L * i};
        ck_assert_int_eq(pthread_create(&t[i], NULL, poster_main, &p[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    gw_audit_stop(a);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    gw_audit_free(a);
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 800);
    ck_assert_uint_eq(st.lost, 0);
    check_chain(f, NULL, 1, ZEROS, 800);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(800);
}
END_TEST

START_TEST(test_log_without_sink_is_disabled_and_takes_nothing)
{
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char why[200] = "";
    struct gw_audit *a = gw_audit_open(&cfg, why, sizeof why);
    ck_assert_ptr_nonnull(a);
    ck_assert(!gw_audit_enabled(a));
    ck_assert_int_eq(gw_audit_start(a), 0);
    gw_audit_post(a, GW_AUDIT_OUTCOME, members_for(1)); /* freed, not counted */
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.lost, 0);
    ck_assert(gw_audit_ready(a, why, sizeof why));
    gw_audit_stop(a);
    gw_audit_free(a);
    ck_assert(!gw_audit_enabled(NULL));
}
END_TEST

START_TEST(test_submit_before_start_is_refused_and_post_counts_lost)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    struct gw_audit_item it = {.event = GW_AUDIT_INTENT};
    ck_assert_int_eq(gw_audit_submit(a, &it), -1);
    gw_audit_post(a, GW_AUDIT_OUTCOME, members_for(1));
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.lost, 1);
    gw_audit_free(a);
    size_t len;
    free(slurp(f, &len));
    ck_assert_uint_eq(len, 0);
}
END_TEST

/* ================= HMAC ================= */

START_TEST(test_hmac_log_verifies_only_with_its_key)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *kf = in_dir("key");
    put(kf, KEY_A "\n"); /* one trailing newline is not part of the key */
    write_records(f, 3, false, kf);
    check_chain(f, KEY_A, 1, ZEROS, 3);
    ck_assert_int_eq(verify1(f, KEY_A), 0);
    ck_verified(3);
    char want[512];
    verify1(f, NULL);
    snprintf(want, sizeof want, "%s:1: the hash does not match the record\n", f);
    ck_refused(want);
    verify1(f, KEY_B);
    snprintf(want, sizeof want,
             "%s:1: the hash does not match the record (or the key is not the one it was "
             "written with)\n",
             f);
    ck_refused(want);
}
END_TEST

START_TEST(test_hmac_key_of_31_bytes_is_refused_32_accepted)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *kf = in_dir("key");
    put(kf, "0123456789012345678901234567890"); /* 31 */
    const char *why = open_refused(f, kf);
    ck_assert_str_eq(why, "audit.hmac_key_file: the key has 31 bytes; at least 32");
    put(kf, "01234567890123456789012345678901\n"); /* 32 */
    write_records(f, 1, false, kf);
    ck_assert_int_eq(verify1(f, "01234567890123456789012345678901"), 0);
    ck_verified(1);
}
END_TEST

START_TEST(test_hmac_key_file_missing_or_with_spaces_is_refused)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *kf = in_dir("key");
    const char *why = open_refused(f, kf);
    ck_assert_msg(strstr(why, "audit.hmac_key_file: cannot read") != NULL, "%s", why);
    put(kf, "0123456789 0123456789 0123456789 0123456789");
    why = open_refused(f, kf);
    ck_assert_msg(strstr(why, "audit.hmac_key_file: ") && strstr(why, "holds a space"), "%s", why);
    ck_assert_msg(strstr(why, "0123456789") == NULL, "the key is echoed: %s", why);
}
END_TEST

START_TEST(test_open_with_another_key_refuses_the_last_record)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *ka = in_dir("ka"), *kb = in_dir("kb");
    put(ka, KEY_A);
    put(kb, KEY_B);
    write_records(f, 2, false, ka);
    const char *why = open_refused(f, kb);
    ck_assert_msg(strstr(why, "its last record does not verify (the hash does not match the "
                              "record (or the key is not the one it was written with))") != NULL,
                  "%s", why);
    why = open_refused(f, NULL);
    ck_assert_msg(strstr(why, "its last record does not verify") != NULL, "%s", why);
}
END_TEST

/* ================= continuation ================= */

START_TEST(test_reopened_log_continues_at_seq_4)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    write_records(f, 3, true, NULL);
    struct gw_audit *a = open_ok(f, true, NULL);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.last_seq, 3);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 4, 2);
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 5);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(5);
    /* the state file holds the chain's end */
    size_t n;
    char **v = lines_of(f, &n);
    char h[65], want[128];
    member_of(v[4], "hash", h);
    free_lines(v);
    snprintf(want, sizeof want, "5 %s clean\n", h);
    char *state = slurp(in_dir("audit.jsonl.chain"), NULL);
    ck_assert_str_eq(state, want);
    free(state);
}
END_TEST

START_TEST(test_long_last_line_is_found_for_continuation)
{
    /* a last line longer than the first 4096-byte window read from the end */
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 1, 1);
    char *big = malloc(30001);
    memset(big, 'x', 30000);
    big[30000] = '\0';
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "blob", big);
    free(big);
    gw_audit_post(a, GW_AUDIT_OUTCOME, gw_audit_members(o));
    cJSON_Delete(o);
    gw_audit_stop(a);
    gw_audit_free(a);
    write_records(f, 2, false, NULL); /* continues at 3 */
    check_chain(f, NULL, 1, ZEROS, 4);
    /* a file that is one long line */
    const char *g = in_dir("one.jsonl");
    char *m = malloc(20001);
    memcpy(m, "\"blob\":\"", 8);
    memset(m + 8, 'y', 19990);
    memcpy(m + 19998, "\"", 2);
    char *l = rec(NULL, 1, m, ZEROS, NULL);
    free(m);
    FILE *fp = fopen(g, "w");
    fprintf(fp, "%s\n", l);
    fclose(fp);
    free(l);
    write_records(g, 1, false, NULL);
    check_chain(g, NULL, 1, ZEROS, 2);
}
END_TEST

START_TEST(test_empty_file_continues_from_state_file)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    char h7[65], state[128];
    memset(h7, 'a', 64);
    h7[64] = '\0';
    put(f, "");
    snprintf(state, sizeof state, "7 %s clean\n", h7);
    put(in_dir("audit.jsonl.chain"), state);
    write_records(f, 2, false, NULL);
    check_chain(f, NULL, 8, h7, 2);
    verify1(f, NULL); /* a file that starts mid-chain needs --continue */
    char want[512];
    snprintf(want, sizeof want,
             "%s:1: seq 8 follows seq 0 (a record is missing, moved or "
             "inserted)\n",
             f);
    ck_refused(want);
    ck_assert_int_eq(verify_files(&f, 1, NULL, 0, NULL, true), 0);
    size_t n;
    char **v = lines_of(f, &n), h9[65];
    member_of(v[1], "hash", h9);
    free_lines(v);
    snprintf(want, sizeof want,
             "replica (none): seq 8 to 9, head %s, continuing from seq 8, prev %s; its records "
             "name no replica (written before replica ids)\n2 records verified\n",
             h9, h7);
    ck_assert_str_eq(v_out, want);
}
END_TEST

START_TEST(test_state_file_without_newline_is_read)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    char state[128];
    snprintf(state, sizeof state, "41 %s clean", ZEROS);
    put(in_dir("audit.jsonl.chain"), state);
    write_records(f, 1, false, NULL);
    check_chain(f, NULL, 42, ZEROS, 1);
}
END_TEST

START_TEST(test_rotation_continues_the_chain_in_the_new_file)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *old = in_dir("audit.jsonl.1");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 1, 1);
    struct gw_audit_item *it = submit_and_wait(a, members_for(2)); /* 1 and 2 are on disk */
    ck_assert(it->ok);
    ck_assert_uint_eq(it->seq, 2);
    free_item(it);
    ck_assert_int_eq(rename(f, old), 0);
    gw_audit_reopen(a);
    post_n(a, 3, 2);
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(old, NULL, 1, ZEROS, 2);
    size_t n;
    char **v = lines_of(old, &n);
    char h2[65];
    member_of(v[1], "hash", h2);
    free_lines(v);
    check_chain(f, NULL, 3, h2, 2);
    const char *both[] = {old, f};
    ck_assert_int_eq(verify_files(both, 2, NULL, 0, NULL, false), 0);
    ck_verified(4);
}
END_TEST

START_TEST(test_open_refuses_last_record_with_altered_hash)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    write_records(f, 2, false, NULL);
    size_t n;
    char **v = lines_of(f, &n);
    char *h = strstr(v[1], "\"hash\":\"") + 8;
    h[10] = h[10] == '0' ? '1' : '0';
    put_lines(f, v, n);
    free_lines(v);
    const char *why = open_refused(f, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "audit.file %s:2: its last record does not verify (the hash does not match the "
             "record): check the file with ghl-gateway audit-verify (only a torn last line is "
             "repaired at start)",
             f);
    ck_assert_str_eq(why, want);
    /* a last line that is not a record at all */
    put(f, "hello\n");
    why = open_refused(f, NULL);
    ck_assert_msg(strstr(why, "its last record does not verify (the line does not end with "
                              ",\"hash\":\"<64 hex digits>\"})") != NULL,
                  "%s", why);
    /* an empty last line */
    write_records(in_dir("b.jsonl"), 1, false, NULL);
    FILE *fp = fopen(in_dir("b.jsonl"), "a");
    fputc('\n', fp);
    fclose(fp);
    why = open_refused(in_dir("b.jsonl"), NULL);
    ck_assert_msg(strstr(why, "its last record does not verify") != NULL, "%s", why);
}
END_TEST

START_TEST(test_open_refuses_state_seq_beyond_the_file)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    write_records(f, 3, false, NULL);
    char state[128];
    snprintf(state, sizeof state, "5 %s\n", ZEROS);
    put(in_dir("audit.jsonl.chain"), state);
    const char *why = open_refused(f, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "audit.file %s ends at seq 3 but the log had reached seq 5 (%s.chain): records "
             "are missing",
             f, f);
    ck_assert_str_eq(why, want);
    /* a state behind the file is fine (the state of an earlier reopen) */
    snprintf(state, sizeof state, "2 %s\n", ZEROS);
    put(in_dir("audit.jsonl.chain"), state);
    write_records(f, 1, false, NULL);
    check_chain(f, NULL, 1, ZEROS, 4);
}
END_TEST

static const char *const bad_states[] = {
    "",
    "\n",
    "abc\n",
    "5\n",
    "5 \n",
    "5 0000000000000000000000000000000000000000000000000000000000000000x\n",
    "5 000000000000000000000000000000000000000000000000000000000000000\n", /* 63 */
    "5 000000000000000000000000000000000000000000000000000000000000000G\n",
    "5 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", /* uppercase */
    "5  0000000000000000000000000000000000000000000000000000000000000000\n",
    "5x 0000000000000000000000000000000000000000000000000000000000000000\n",
    "99999999999999999999999 0000000000000000000000000000000000000000000000000000000000000000\n",
    /* found by review: a seq the chain cannot continue from (wraps, or past 2^53 - 1) */
    "-1 0000000000000000000000000000000000000000000000000000000000000000\n",
    "18446744073709551615 0000000000000000000000000000000000000000000000000000000000000000\n",
    "9007199254740991 0000000000000000000000000000000000000000000000000000000000000000\n",
    " +5 0000000000000000000000000000000000000000000000000000000000000000\n",
};

START_TEST(test_open_refuses_malformed_state_file)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    put(f, "");
    put(in_dir("audit.jsonl.chain"), bad_states[_i]);
    const char *why = open_refused(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "audit: the chain state %s.chain is unreadable or malformed", f);
    ck_assert_str_eq(why, want);
    /* also next to a file with records */
    write_records(in_dir("b.jsonl"), 1, false, NULL);
    put(in_dir("b.jsonl.chain"), bad_states[_i]);
    why = open_refused(in_dir("b.jsonl"), NULL);
    ck_assert_msg(strstr(why, "is unreadable or malformed") != NULL, "%s", why);
}
END_TEST

START_TEST(test_open_refuses_unopenable_file)
{
    make_dir();
    const char *why = open_refused(in_dir("no/such/dir/audit.jsonl"), NULL);
    ck_assert_msg(strstr(why, "audit.file: cannot open ") && strstr(why, "No such file"), "%s",
                  why);
    why = open_refused(g_dir, NULL); /* a directory */
    ck_assert_msg(strstr(why, "audit.file: cannot open ") != NULL, "%s", why);
}
END_TEST

/* ================= waited records ================= */

START_TEST(test_waited_item_fires_its_event_with_ok_and_seq)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 1, 2);
    struct gw_audit_item *it = submit_and_wait(a, members_for(3));
    ck_assert(it->ok);
    ck_assert_uint_eq(it->seq, 3);
    /* durable when acknowledged: the file already holds it */
    check_chain(f, NULL, 1, ZEROS, 3);
    free_item(it);
    it = submit_and_wait(a, members_for(4));
    ck_assert(it->ok);
    ck_assert_uint_eq(it->seq, 4);
    free_item(it);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.records[GW_AUDIT_INTENT], 2);
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 2);
    gw_audit_stop(a);
    gw_audit_free(a);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(4);
}
END_TEST

/* ================= lists and group commit ================= */

/* n records nobody waits for, members_for(first) .. members_for(first + n - 1), linked in
 * order; the caller hands them over or frees them with free_list. */
static struct gw_audit_item *item_list(enum gw_audit_event e, long first, size_t n)
{
    struct gw_audit_item *head = NULL, **tail = &head;
    for (size_t i = 0; i < n; i++) {
        struct gw_audit_item *it = gw_audit_item_new(e, members_for(first + (long)i));
        ck_assert_ptr_nonnull(it);
        ck_assert_ptr_null(it->next);
        ck_assert_ptr_null(it->done);
        *tail = it;
        tail = &it->next;
    }
    return head;
}

static void free_list(struct gw_audit_item *it)
{
    for (struct gw_audit_item *next; it; it = next) {
        next = it->next;
        free_item(it);
    }
}

static size_t list_len(const struct gw_audit_item *it)
{
    size_t n = 0;
    for (; it; it = it->next)
        n++;
    return n;
}

/* The "i" member of a line written from members_for(i). */
static long i_of(const char *line)
{
    cJSON *j = parse_line(line);
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(j, "i");
    ck_assert_msg(cJSON_IsNumber(i), "no i in %s", line);
    long v = (long)i->valuedouble;
    cJSON_Delete(j);
    return v;
}

/* Polls the stats of a running log (every millisecond, at most 5 s) until last_seq reaches
 * seq and fsyncs reaches fsyncs; returns them. */
static struct gw_audit_stats wait_stats(struct gw_audit *a, uint64_t seq, uint64_t fsyncs)
{
    struct gw_audit_stats st;
    for (int i = 0; i < 5000; i++) {
        gw_audit_get_stats(a, &st);
        if (st.last_seq >= seq && st.fsyncs >= fsyncs)
            return st;
        usleep(1000);
    }
    ck_abort_msg("after 5 s: last_seq %llu (waiting for %llu), fsyncs %llu (waiting for %llu)",
                 (unsigned long long)st.last_seq, (unsigned long long)seq,
                 (unsigned long long)st.fsyncs, (unsigned long long)fsyncs);
    return st;
}

START_TEST(test_submit_list_writes_its_items_in_order_with_consecutive_seq)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 1, 1);
    struct gw_audit_item *l = item_list(GW_AUDIT_OUTCOME, 2, 3);
    l->next->event = GW_AUDIT_DENIED;
    ck_assert_int_eq(gw_audit_submit_list(a, l, 3), 0); /* the log's now */
    ck_assert_int_eq(gw_audit_submit_list(a, NULL, 0), 0);
    post_n(a, 5, 1); /* after the list, not inside it */
    gw_audit_stop(a);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 5);
    size_t n;
    char **v = lines_of(f, &n);
    for (size_t k = 0; k < n; k++)
        ck_assert_int_eq(i_of(v[k]), (long)k + 1);
    free_lines(v);
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 4);
    ck_assert_uint_eq(st.records[GW_AUDIT_DENIED], 1);
    ck_assert_uint_eq(st.last_seq, 5);
    ck_assert_uint_eq(st.lost, 0);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(5);
}
END_TEST

START_TEST(test_submit_list_with_one_oversized_item_takes_none)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    struct gw_audit_item *l = item_list(GW_AUDIT_OUTCOME, 1, 3);
    /* the middle one: members one byte longer than a record may hold (64 MiB - 1024) */
    size_t big = (64u << 20) - 1024 + 1;
    char *m = malloc(big + 1);
    ck_assert_ptr_nonnull(m);
    memset(m, 'x', big);
    m[big] = '\0';
    free(l->next->members);
    l->next->members = m;
    ck_assert(gw_audit_fits(l));
    ck_assert(!gw_audit_fits(l->next));
    ck_assert_int_eq(gw_audit_submit_list(a, l, 3), -1);
    /* none was taken: the three are still the caller's, linked as they were */
    ck_assert_uint_eq(list_len(l), 3);
    m[big - 1] = '\0'; /* the limit itself fits */
    ck_assert(gw_audit_fits(l->next));
    /* what the server does with a refused list: each is freed and counted as lost */
    for (struct gw_audit_item *it = l, *next; it; it = next) {
        next = it->next;
        gw_audit_lost(a, it);
    }
    post_n(a, 4, 1);
    gw_audit_stop(a);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    gw_audit_free(a);
    ck_assert_uint_eq(st.lost, 3);
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 1);
    check_chain(f, NULL, 1, ZEROS, 1); /* nothing of the list, and no seq spent on it */
    size_t n;
    char **v = lines_of(f, &n);
    ck_assert_int_eq(i_of(v[0]), 4);
    free_lines(v);
}
END_TEST

START_TEST(test_submit_list_longer_than_the_queue_takes_none)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    /* one more than MAX_QUEUE (100000, audit.c) into an empty queue */
    struct gw_audit_item *l = item_list(GW_AUDIT_READ, 1, 100001);
    ck_assert_int_eq(gw_audit_submit_list(a, l, 100001), -1);
    ck_assert_uint_eq(list_len(l), 100001);
    free_list(l);
    l = item_list(GW_AUDIT_READ, 1, 2);
    ck_assert_int_eq(gw_audit_submit_list(a, l, 2), 0);
    gw_audit_stop(a);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    gw_audit_free(a);
    ck_assert_uint_eq(st.records[GW_AUDIT_READ], 2);
    ck_assert_uint_eq(st.lost, 0);
    check_chain(f, NULL, 1, ZEROS, 2);
}
END_TEST

START_TEST(test_submit_list_is_refused_before_start_and_after_stop)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    struct gw_audit_item *l = item_list(GW_AUDIT_OUTCOME, 1, 2);
    ck_assert_int_eq(gw_audit_submit_list(a, l, 2), -1);
    ck_assert_uint_eq(list_len(l), 2);
    ck_assert_int_eq(gw_audit_start(a), 0);
    gw_audit_stop(a);
    ck_assert_int_eq(gw_audit_submit_list(a, l, 2), -1);
    ck_assert_uint_eq(list_len(l), 2);
    free_list(l);
    ck_assert_ptr_null(gw_audit_item_new(GW_AUDIT_OUTCOME, NULL));
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.lost, 0); /* a refused list is not lost until its owner says so */
    gw_audit_free(a);
    size_t len;
    free(slurp(f, &len));
    ck_assert_uint_eq(len, 0);
}
END_TEST

START_TEST(test_batch_nobody_waits_for_is_synced_once_the_writer_is_idle)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    /* a fresh log: its records reach the disk with nothing else coming */
    ck_assert_int_eq(gw_audit_submit_list(a, item_list(GW_AUDIT_OUTCOME, 1, 3), 3), 0);
    struct gw_audit_stats st = wait_stats(a, 3, 1);
    check_chain(f, NULL, 1, ZEROS, 3);
    /* right after a sync (a waited record's): the batch below comes within SYNC_LAG_S of it,
     * is written without a sync, and is synced when the writer finds the queue empty */
    struct gw_audit_item *it = submit_and_wait(a, members_for(4));
    ck_assert(it->ok);
    free_item(it);
    struct gw_audit_stats st0;
    gw_audit_get_stats(a, &st0);
    ck_assert_uint_gt(st0.fsyncs, st.fsyncs);
    ck_assert_int_eq(gw_audit_submit_list(a, item_list(GW_AUDIT_OUTCOME, 5, 3), 3), 0);
    st = wait_stats(a, 7, st0.fsyncs + 1);
    ck_assert_uint_eq(st.batches, st0.batches + 1);
    usleep(20000);
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.fsyncs, st0.fsyncs + 1); /* one sync for the batch, idle or its own */
    check_chain(f, NULL, 1, ZEROS, 7);
    gw_audit_stop(a);
    gw_audit_free(a);
}
END_TEST

struct stats_waiter {
    struct event_base *base;
    struct gw_audit *a;
    int fired;
    struct gw_audit_stats st; /* when the event fired */
};

static void done_stats_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct stats_waiter *w = arg;
    w->fired++;
    gw_audit_get_stats(w->a, &w->st);
    event_base_loopbreak(w->base);
}

START_TEST(test_batch_with_a_waiter_is_synced_before_the_waiter_is_told)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    struct event *deadline = evtimer_new(base, deadline_cb, base);
    /* back to back, each well within SYNC_LAG_S of the sync before: only the waiter makes
     * the writer sync */
    for (long k = 0; k < 5; k++) {
        struct stats_waiter w = {.base = base, .a = a};
        struct gw_audit_stats before;
        gw_audit_get_stats(a, &before);
        /* a waited intent between two records nobody waits for, handed over at once */
        struct gw_audit_item *l = item_list(GW_AUDIT_OUTCOME, 3 * k + 1, 3);
        struct gw_audit_item *it = l->next;
        it->event = GW_AUDIT_INTENT;
        it->done = event_new(base, -1, 0, done_stats_cb, &w);
        struct timeval tv = {5, 0};
        evtimer_add(deadline, &tv);
        ck_assert_int_eq(gw_audit_submit_list(a, l, 3), 0);
        event_base_dispatch(base);
        ck_assert_msg(w.fired == 1, "the item's event did not fire (fired %d)", w.fired);
        ck_assert(it->ok);
        ck_assert_uint_eq(it->seq, (uint64_t)(3 * k + 2));
        ck_assert_uint_eq(w.st.last_seq, (uint64_t)(3 * k + 3));
        ck_assert_msg(w.st.fsyncs > before.fsyncs,
                      "round %ld: told before a sync (fsyncs %llu, %llu before the batch)", k,
                      (unsigned long long)w.st.fsyncs, (unsigned long long)before.fsyncs);
        event_free(it->done);
        it->done = NULL;
        free_item(it);
    }
    event_free(deadline);
    event_base_free(base);
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 15);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(15);
}
END_TEST

/* ================= failures ================= */

START_TEST(test_dev_full_fails_waited_item_and_is_not_ready)
{
    /* audit.file is a symbolic link to /dev/full (so the state file stays in the folder) */
    make_dir();
    const char *f = in_dir("full");
    ck_assert_int_eq(symlink("/dev/full", f), 0);
    struct gw_audit *a = open_ok(f, true, NULL); /* a device has no last line */
    char why[300] = "";
    ck_assert(gw_audit_ready(a, why, sizeof why));
    ck_assert_int_eq(gw_audit_start(a), 0);
    gw_audit_post(a, GW_AUDIT_OUTCOME, members_for(1)); /* nobody waits: kept, retried */
    struct gw_audit_item *it = submit_and_wait(a, members_for(2));
    ck_assert(!it->ok);
    free_item(it);
    ck_assert(!gw_audit_ready(a, why, sizeof why));
    ck_assert_msg(strstr(why, "No space left") != NULL, "why: %s", why);
    char want[400];
    snprintf(want, sizeof want, "audit.file %s: No space left on device", f);
    ck_assert_str_eq(why, want);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    ck_assert_uint_gt(st.write_failures, 0);
    ck_assert_uint_eq(st.records[GW_AUDIT_INTENT] + st.records[GW_AUDIT_OUTCOME], 0);
    ck_assert_uint_eq(st.last_seq, 0);
    gw_audit_stop(a);
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.lost, 1); /* the posted record, still failing at stop */
    gw_audit_free(a);
}
END_TEST

START_TEST(test_failed_write_is_cut_off_and_its_seq_reused)
{
    /* RLIMIT_FSIZE: the write stops part way (EFBIG): no partial line may stay */
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, false, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    struct gw_audit_item *it = submit_and_wait(a, members_for(1));
    ck_assert(it->ok);
    free_item(it);
    size_t before;
    free(slurp(f, &before));

    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = before + 100; /* less than one record */
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    it = submit_and_wait(a, members_for(2));
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);
    ck_assert(!it->ok);
    free_item(it);
    char why[300];
    ck_assert(!gw_audit_ready(a, why, sizeof why));
    ck_assert_msg(strstr(why, "File too large") != NULL, "why: %s", why);
    size_t after;
    free(slurp(f, &after));
    ck_assert_uint_eq(after, before); /* the part written was cut off */

    it = submit_and_wait(a, members_for(3));
    ck_assert(it->ok);
    ck_assert_uint_eq(it->seq, 2); /* nothing of the failed record stayed: no gap */
    free_item(it);
    ck_assert(gw_audit_ready(a, why, sizeof why));
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 2);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(2);
}
END_TEST

/* ================= gw_audit_verify on hand-made files ================= */

static char hh[8][65]; /* hashes of the hand-made chain: hh[1..4] */

/* Writes the 4-record hand-made chain to F, with edit applied to the lines. */
static const char *hand_log(void)
{
    make_dir();
    return in_dir("log.jsonl");
}

static char **hand_lines(void)
{
    return chain(NULL, 4, hh);
}

START_TEST(test_verify_changed_byte_names_its_line)
{
    const char *f = hand_log();
    char **v = hand_lines();
    char *p = strstr(v[1], "alice");
    p[4] = 'f'; /* alicf */
    put_lines(f, v, 4);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:2: the hash does not match the record\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_deleted_middle_line)
{
    const char *f = hand_log();
    char **v = hand_lines();
    char *w[3] = {v[0], v[2], v[3]};
    put_lines(f, w, 3);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "%s:2: seq 3 follows seq 1 (a record is missing, moved or inserted)\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_deleted_last_line_is_caught_by_the_anchor_only)
{
    const char *f = hand_log();
    char **v = hand_lines();
    put_lines(f, v, 3);
    free_lines(v);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(3);
    verify_files(&f, 1, NULL, 4, hh[4], false);
    ck_refused("replica (none): the log ends at seq 3 and does not reach the anchor seq 4 (its "
               "tail is missing)\n");
}
END_TEST

START_TEST(test_verify_swapped_lines)
{
    const char *f = hand_log();
    char **v = hand_lines();
    char *w[4] = {v[0], v[2], v[1], v[3]};
    put_lines(f, w, 4);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "%s:2: seq 3 follows seq 1 (a record is missing, moved or inserted)\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_inserted_line)
{
    const char *f = hand_log();
    char **v = hand_lines();
    /* a forged record that chains correctly to line 2: the original seq 3 then comes second */
    char *forged = rec(NULL, 3, "\"event\":\"outcome\",\"sub\":\"mallory\"", hh[2], NULL);
    char *w[5] = {v[0], v[1], forged, v[2], v[3]};
    put_lines(f, w, 5);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "%s:4: seq 3 follows seq 3 (a record is missing, moved or inserted)\n", f);
    ck_refused(want);
    /* a copy of line 2 inserted after it */
    char *w2[5] = {v[0], v[1], v[1], v[2], v[3]};
    put_lines(f, w2, 5);
    verify1(f, NULL);
    snprintf(want, sizeof want,
             "%s:3: seq 2 follows seq 2 (a record is missing, moved or inserted)\n", f);
    ck_refused(want);
    free(forged);
    free_lines(v);
}
END_TEST

START_TEST(test_verify_replaced_record_with_own_valid_hash_breaks_prev)
{
    const char *f = hand_log();
    char **v = hand_lines();
    free(v[2]);
    v[2] = rec(NULL, 3, "\"event\":\"outcome\",\"sub\":\"mallory\"", hh[1], NULL);
    put_lines(f, v, 4);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:3: prev does not match the hash of the record before\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_first_record_must_chain_to_zeros)
{
    const char *f = hand_log();
    char h[65];
    char *l = rec(NULL, 1, "\"a\":1",
                  "1111111111111111111111111111111111111111111111111111111111111111", h);
    char *w[1] = {l};
    put_lines(f, w, 1);
    free(l);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "%s:1: prev does not match the hash of the record before (a log starts with 64 "
             "zeros)\n",
             f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_empty_line)
{
    const char *f = hand_log();
    char **v = hand_lines();
    char empty[] = "";
    char *w[5] = {v[0], v[1], empty, v[2], v[3]};
    put_lines(f, w, 5);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:3: the line does not end with ,\"hash\":\"<64 hex digits>\"}\n",
             f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_last_line_without_newline)
{
    const char *f = hand_log();
    char **v = hand_lines();
    put_lines(f, v, 4);
    free_lines(v);
    size_t len;
    free(slurp(f, &len));
    ck_assert_int_eq(truncate(f, (off_t)len - 1), 0);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:4: the last line is incomplete (no newline)\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_crlf_line_is_refused)
{
    const char *f = hand_log();
    char **v = hand_lines();
    size_t n = strlen(v[1]);
    v[1] = realloc(v[1], n + 2);
    memcpy(v[1] + n, "\r", 2);
    put_lines(f, v, 4);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:2: the line does not end with ,\"hash\":\"<64 hex digits>\"}\n",
             f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_non_json_line)
{
    const char *f = hand_log();
    char **v = hand_lines();
    char junk[] = "this is not a record";
    char *w[4] = {v[0], junk, v[2], v[3]};
    put_lines(f, w, 4);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:2: the line does not end with ,\"hash\":\"<64 hex digits>\"}\n",
             f);
    ck_refused(want);
    /* the right tail, a body that is not JSON (and a hash that matches it) */
    char body[256];
    snprintf(body, sizeof body, "{\"v\":1,\"seq\":2,\"a\":tru,\"prev\":\"%s\"}", hh[1]);
    char *bad = seal(NULL, hh[1], body, NULL);
    w[1] = bad;
    put_lines(f, w, 4);
    verify1(f, NULL);
    ck_assert_int_eq(v_rc, 1);
    snprintf(want, sizeof want, "%s:2: not a JSON record: ", f);
    ck_assert_msg(strncmp(v_err, want, strlen(want)) == 0, "%s", v_err);
    free(bad);
    free_lines(v);
}
END_TEST

START_TEST(test_verify_last_member_before_hash_must_be_prev)
{
    const char *f = hand_log();
    char body[256];
    snprintf(body, sizeof body, "{\"v\":1,\"seq\":1,\"ts\":\"" TS "\",\"prev\":\"%s\",\"x\":1}",
             ZEROS);
    char *l = seal(NULL, ZEROS, body, NULL);
    char *w[1] = {l};
    put_lines(f, w, 1);
    free(l);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:1: the record's last member before hash is not \"prev\"\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_duplicate_member_is_refused)
{
    const char *f = hand_log();
    char **v = hand_lines();
    char body[256];
    snprintf(body, sizeof body,
             "{\"v\":1,\"seq\":2,\"ts\":\"" TS "\",\"sub\":\"alice\",\"sub\":\"root\","
             "\"prev\":\"%s\"}",
             hh[1]);
    free(v[1]);
    v[1] = seal(NULL, hh[1], body, NULL);
    put_lines(f, v, 2);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:2: not a JSON record: duplicate member \"sub\"", f);
    ck_assert_int_eq(v_rc, 1);
    ck_assert_msg(strncmp(v_err, want, strlen(want)) == 0, "%s", v_err);
    /* a second "prev" (or a "hash" in the body) is refused the same way */
    snprintf(body, sizeof body,
             "{\"v\":1,\"seq\":1,\"ts\":\"" TS "\",\"prev\":\"%s\",\"prev\":\"%s\"}", ZEROS, ZEROS);
    char *l = seal(NULL, ZEROS, body, NULL);
    char *w[1] = {l};
    put_lines(f, w, 1);
    free(l);
    verify1(f, NULL);
    snprintf(want, sizeof want, "%s:1: not a JSON record: duplicate member \"prev\"", f);
    ck_assert_msg(strncmp(v_err, want, strlen(want)) == 0, "%s", v_err);
    snprintf(body, sizeof body,
             "{\"v\":1,\"seq\":1,\"ts\":\"" TS "\",\"hash\":\"x\",\"prev\":\"%s\"}", ZEROS);
    l = seal(NULL, ZEROS, body, NULL);
    w[0] = l;
    put_lines(f, w, 1);
    free(l);
    verify1(f, NULL);
    snprintf(want, sizeof want, "%s:1: not a version 1 record with a seq\n", f);
    ck_refused(want);
}
END_TEST

static const char *const not_v1_bodies[] = {
    "{\"v\":2,\"seq\":1,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"v\":\"1\",\"seq\":1,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"seq\":1,\"v\":1,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}", /* v not first */
    "{\"seq\":1,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"v\":1,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"v\":1,\"seq\":0,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"v\":1,\"seq\":-1,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"v\":1,\"seq\":1.5,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"v\":1,\"seq\":\"1\",\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
    "{\"v\":1,\"seq\":9007199254740992,\"ts\":\"" TS "\",\"prev\":\"" ZEROS "\"}",
};

START_TEST(test_verify_refuses_records_not_version_1_with_seq)
{
    const char *f = hand_log();
    char *l = seal(NULL, ZEROS, not_v1_bodies[_i], NULL);
    char *w[1] = {l};
    put_lines(f, w, 1);
    free(l);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:1: not a version 1 record with a seq\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_uppercase_hash_is_refused)
{
    const char *f = hand_log();
    char **v = hand_lines();
    char *h = strstr(v[0], "\"hash\":\"") + 8;
    for (int i = 0; i < 64; i++)
        if (h[i] >= 'a' && h[i] <= 'f')
            h[i] = (char)(h[i] - 'a' + 'A');
    put_lines(f, v, 4);
    free_lines(v);
    verify1(f, NULL);
    char want[512];
    snprintf(want, sizeof want, "%s:1: the line does not end with ,\"hash\":\"<64 hex digits>\"}\n",
             f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_anchor_matches_beyond_end_and_wrong_hash)
{
    const char *f = hand_log();
    char **v = hand_lines();
    put_lines(f, v, 4);
    free_lines(v);
    ck_assert_int_eq(verify_files(&f, 1, NULL, 2, hh[2], false), 0);
    ck_verified(4);
    ck_assert_int_eq(verify_files(&f, 1, NULL, 4, hh[4], false), 0);
    ck_verified(4);
    verify_files(&f, 1, NULL, 9, hh[4], false);
    ck_refused("replica (none): the log ends at seq 4 and does not reach the anchor seq 9 (its "
               "tail is missing)\n");
    verify_files(&f, 1, NULL, 2, hh[3], false);
    char want[512];
    snprintf(want, sizeof want, "%s:2: seq 2 does not have the anchor's hash\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_cont_starts_mid_chain)
{
    const char *f = hand_log();
    char **v = hand_lines();
    put_lines(f, v + 2, 2); /* seq 3 and 4 */
    free_lines(v);
    ck_assert_int_eq(verify_files(&f, 1, NULL, 0, NULL, true), 0);
    char want[512];
    snprintf(want, sizeof want,
             "replica (none): seq 3 to 4, head %s, continuing from seq 3, prev %s; its records "
             "name no replica (written before replica ids)\n2 records verified\n",
             hh[4], hh[2]);
    ck_assert_str_eq(v_out, want);
    ck_assert_str_eq(v_err, "");
    /* the anchor still applies */
    ck_assert_int_eq(verify_files(&f, 1, NULL, 4, hh[4], true), 0);
    verify_files(&f, 1, NULL, 3, hh[4], true);
    ck_assert_int_eq(v_rc, 1);
    snprintf(want, sizeof want, "%s:1: seq 3 does not have the anchor's hash\n", f);
    ck_assert_str_eq(v_err, want);
    /* without cont */
    verify1(f, NULL);
    snprintf(want, sizeof want,
             "%s:1: seq 3 follows seq 0 (a record is missing, moved or inserted)\n", f);
    ck_refused(want);
}
END_TEST

START_TEST(test_verify_across_files_counts_lines_per_file)
{
    make_dir();
    const char *a = in_dir("a.jsonl"), *b = in_dir("b.jsonl");
    char **v = chain(NULL, 4, hh);
    put_lines(a, v, 2);
    put_lines(b, v + 2, 2);
    const char *both[] = {a, b};
    ck_assert_int_eq(verify_files(both, 2, NULL, 0, NULL, false), 0);
    ck_verified(4);
    const char *wrong[] = {b, a};
    verify_files(wrong, 2, NULL, 0, NULL, false);
    char want[512];
    snprintf(want, sizeof want,
             "%s:1: seq 3 follows seq 0 (a record is missing, moved or inserted)\n", b);
    ck_refused(want);
    /* a bad line in the second file is named by that file's own line number */
    free(v[3]);
    v[3] = strdup("{}");
    put_lines(b, v + 2, 2);
    verify_files(both, 2, NULL, 0, NULL, false);
    snprintf(want, sizeof want, "%s:2: the line does not end with ,\"hash\":\"<64 hex digits>\"}\n",
             b);
    ck_refused(want);
    free_lines(v);
}
END_TEST

START_TEST(test_verify_unreadable_file_returns_2)
{
    make_dir();
    const char *f = in_dir("missing.jsonl");
    verify1(f, NULL);
    ck_assert_int_eq(v_rc, 2);
    char want[512];
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory\n", f);
    ck_assert_str_eq(v_err, want);
    ck_assert_str_eq(v_out, "");
    /* after a good file, too */
    const char *g = in_dir("good.jsonl");
    write_records(g, 1, false, NULL);
    const char *two[] = {g, f};
    ck_assert_int_eq(verify_files(two, 2, NULL, 0, NULL, false), 2);
    ck_assert_str_eq(v_err, want);
    /* found by review: a read error is not "0 records verified" */
    verify1(g_dir, NULL);
    ck_assert_int_eq(v_rc, 2);
    ck_assert_msg(strstr(v_err, "cannot read: Is a directory") != NULL, "%s", v_err);
    ck_assert_str_eq(v_out, "");
}
END_TEST

/* found by review: a state file naming the file's last seq with another hash means the file
 * is not the one the gateway wrote */
START_TEST(test_open_refuses_state_with_the_same_seq_and_another_hash)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    write_records(f, 2, false, NULL);
    put(in_dir("audit.jsonl.chain"),
        "2 1111111111111111111111111111111111111111111111111111111111111111\n");
    const char *why = open_refused(f, NULL);
    ck_assert_msg(strstr(why, "is not the one") != NULL, "%s", why);
}
END_TEST

START_TEST(test_verify_empty_file_is_zero_records)
{
    make_dir();
    const char *f = in_dir("empty.jsonl");
    put(f, "");
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(0);
}
END_TEST

/* ================= one replica's chain ================= */

/* gw_audit_open (or, with inspect, gw_audit_inspect) as replica. */
static struct gw_audit *open_as(const char *file, const char *replica, char *why, size_t whylen)
{
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.audit.file = (char *)file;
    cfg.audit.replica_id = (char *)replica;
    why[0] = '\0';
    return gw_audit_open(&cfg, why, whylen);
}

/* Records 1..n of replica (NULL: without one, as written before replica ids), continuing
 * from seq first with prev; hashes into h[first..first+n-1] (h[first-1] is prev). */
static void replica_lines(char **v, const char *replica, size_t first, size_t n, char h[][65])
{
    for (size_t i = 0; i < n; i++) {
        char m[200];
        size_t seq = first + i;
        if (replica)
            snprintf(m, sizeof m, "\"request_id\":\"r%zu\",\"replica\":\"%s\",\"event\":\"denied\"",
                     seq, replica);
        else
            snprintf(m, sizeof m, "\"request_id\":\"r%zu\",\"event\":\"denied\"", seq);
        v[i] = rec(NULL, seq, m, h[seq - 1], h[seq]);
    }
}

START_TEST(test_open_continues_only_its_own_replicas_chain)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    char h[8][65], *v[4] = {0}, why[600];
    memcpy(h[0], ZEROS, 65);
    replica_lines(v, "gw-a", 1, 2, h);
    put_lines(f, v, 2);
    struct gw_audit *a = open_as(f, "gw-b", why, sizeof why);
    ck_assert_ptr_null(a);
    char want[1200];
    snprintf(want, sizeof want,
             "audit.file %s holds the chain of replica gw-a, but audit.replica_id is gw-b: a "
             "chain belongs to one replica (give each replica its own audit.file, or set "
             "audit.replica_id to gw-a to continue this chain)",
             f);
    ck_assert_str_eq(why, want);
    /* check says the same */
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.audit.file = (char *)f;
    cfg.audit.replica_id = "gw-b";
    uint64_t seq;
    char note[300];
    ck_assert_int_eq(gw_audit_inspect(&cfg, &seq, note, sizeof note, why, sizeof why), -1);
    ck_assert_str_eq(why, want);
    /* its own replica continues it */
    a = open_as(f, "gw-a", why, sizeof why);
    ck_assert_msg(a != NULL, "%s", why);
    ck_assert_str_eq(gw_audit_replica(a), "gw-a");
    gw_audit_free(a);
    free(v[0]);
    free(v[1]);
}
END_TEST

START_TEST(test_open_continues_a_log_written_before_replica_ids)
{
    /* an upgrade in place: the records without a replica are any replica's past */
    make_dir();
    const char *f = in_dir("audit.jsonl");
    char h[8][65], *v[4] = {0}, why[600];
    memcpy(h[0], ZEROS, 65);
    replica_lines(v, NULL, 1, 2, h);
    put_lines(f, v, 2);
    struct gw_audit *a = open_as(f, "gw-b", why, sizeof why);
    ck_assert_msg(a != NULL, "%s", why);
    ck_assert_int_eq(gw_audit_start(a), 0);
    gw_audit_post(a, GW_AUDIT_DENIED, strdup("\"request_id\":\"r3\",\"replica\":\"gw-b\""));
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 3);
    free(v[0]);
    free(v[1]);
}
END_TEST

START_TEST(test_open_refuses_a_file_mixing_replicas_before_a_torn_line)
{
    /* a torn last line makes open read every record: a file holds one replica's chain */
    make_dir();
    const char *f = in_dir("audit.jsonl");
    char h[8][65], *v[4] = {0}, why[600];
    memcpy(h[0], ZEROS, 65);
    replica_lines(v, "gw-a", 1, 1, h);
    replica_lines(v + 1, "gw-b", 2, 1, h);
    put_lines(f, v, 2);
    FILE *t = fopen(f, "a");
    fputs("{\"v\":1,\"seq\":3,", t);
    fclose(t);
    ck_assert_ptr_null(open_as(f, "gw-a", why, sizeof why));
    char want[600];
    snprintf(want, sizeof want,
             "%s:2: a record of replica gw-b in a file of replica gw-a (a file holds one "
             "replica's chain)",
             f);
    ck_assert_msg(strstr(why, want) != NULL, "%s", why);
    /* records without a replica after records of one: refused as well */
    free(v[1]);
    replica_lines(v + 1, NULL, 2, 1, h);
    put_lines(f, v, 2);
    t = fopen(f, "a");
    fputs("{\"v\":1,\"seq\":3,", t);
    fclose(t);
    ck_assert_ptr_null(open_as(f, "gw-a", why, sizeof why));
    snprintf(want, sizeof want,
             "%s:2: a record without a replica after records of replica gw-a (a file holds one "
             "replica's chain)",
             f);
    ck_assert_msg(strstr(why, want) != NULL, "%s", why);
    free(v[0]);
    free(v[1]);
}
END_TEST

START_TEST(test_open_refuses_a_replica_that_is_no_replica_id)
{
    /* hashed like any member, but no gateway writes it */
    static const char *const bad[] = {"\"replica\":\"\"", "\"replica\":null",
                                      "\"replica\":\"gw a\"", "\"replica\":7"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        make_dir();
        const char *f = in_dir("audit.jsonl");
        char h[2][65], why[600], m[100];
        memcpy(h[0], ZEROS, 65);
        snprintf(m, sizeof m, "\"request_id\":\"r1\",%s,\"event\":\"denied\"", bad[i]);
        char *l = rec(NULL, 1, m, h[0], h[1]);
        put_lines(f, &l, 1);
        free(l);
        ck_assert_ptr_null(open_as(f, "gw-a", why, sizeof why));
        ck_assert_msg(strstr(why, ":1: its last record does not verify (its replica is not a "
                                  "replica id)") != NULL,
                      "%s: %s", bad[i], why);
        remove_dir();
    }
}
END_TEST

/* ================= audit-verify over several replicas ================= */

static char ha[8][65], hb[8][65]; /* the hashes of replica gw-a's and gw-b's chains */

/* gw-a's chain in a1 (seq 1-2) and a2 (seq 3-4), gw-b's in b1 (seq 1-3). */
static void two_replicas(const char **a1, const char **a2, const char **b1)
{
    make_dir();
    *a1 = in_dir("a/audit.jsonl.1");
    *a2 = in_dir("a/audit.jsonl");
    *b1 = in_dir("b/audit.jsonl");
    ck_assert_int_eq(mkdir(in_dir("a"), 0700), 0);
    ck_assert_int_eq(mkdir(in_dir("b"), 0700), 0);
    char *v[4];
    memcpy(ha[0], ZEROS, 65);
    memcpy(hb[0], ZEROS, 65);
    replica_lines(v, "gw-a", 1, 4, ha);
    put_lines(*a1, v, 2);
    put_lines(*a2, v + 2, 2);
    for (int i = 0; i < 4; i++)
        free(v[i]);
    replica_lines(v, "gw-b", 1, 3, hb);
    put_lines(*b1, v, 3);
    for (int i = 0; i < 3; i++)
        free(v[i]);
}

START_TEST(test_verify_groups_the_files_of_each_replica)
{
    const char *a1, *a2, *b1;
    two_replicas(&a1, &a2, &b1);
    char want[600];
    /* one line per replica, in the order of their first files, whatever comes between */
    const char *mixed[] = {a1, b1, a2};
    ck_assert_int_eq(verify_files(mixed, 3, NULL, 0, NULL, false), 0);
    snprintf(want, sizeof want,
             "replica gw-a: seq 1 to 4, head %s\nreplica gw-b: seq 1 to 3, head %s\n"
             "7 records verified\n",
             ha[4], hb[3]);
    ck_assert_str_eq(v_out, want);
    ck_assert_str_eq(v_err, "");
    const char *b_first[] = {b1, a1, a2};
    ck_assert_int_eq(verify_files(b_first, 3, NULL, 0, NULL, false), 0);
    snprintf(want, sizeof want,
             "replica gw-b: seq 1 to 3, head %s\nreplica gw-a: seq 1 to 4, head %s\n"
             "7 records verified\n",
             hb[3], ha[4]);
    ck_assert_str_eq(v_out, want);
}
END_TEST

START_TEST(test_verify_one_replicas_files_out_of_order_fail)
{
    const char *a1, *a2, *b1;
    two_replicas(&a1, &a2, &b1);
    const char *swapped[] = {a2, b1, a1};
    ck_assert_int_eq(verify_files(swapped, 3, NULL, 0, NULL, false), 1);
    char want[600];
    snprintf(want, sizeof want,
             "%s:1: seq 3 follows seq 0 (a record is missing, moved or inserted)\n", a2);
    ck_assert_str_eq(v_err, want);
    /* the other chain is still verified and shown; no total for a failed run */
    snprintf(want, sizeof want, "replica gw-b: seq 1 to 3, head %s\n", hb[3]);
    ck_assert_str_eq(v_out, want);
    /* a replica's file missing in the middle: the next one does not follow */
    const char *a2_only[] = {b1, a2};
    verify_files(a2_only, 2, NULL, 0, NULL, false);
    ck_assert_int_eq(v_rc, 1);
    snprintf(want, sizeof want,
             "%s:1: seq 3 follows seq 0 (a record is missing, moved or inserted)\n", a2);
    ck_assert_str_eq(v_err, want);
}
END_TEST

START_TEST(test_verify_one_broken_chain_fails_the_whole_run)
{
    const char *a1, *a2, *b1;
    two_replicas(&a1, &a2, &b1);
    size_t n;
    char **v = lines_of(b1, &n);
    char *p = strstr(v[1], "denied");
    p[0] = 'D';
    put_lines(b1, v, n);
    free_lines(v);
    const char *all[] = {a1, a2, b1};
    ck_assert_int_eq(verify_files(all, 3, NULL, 0, NULL, false), 1);
    char want[600];
    snprintf(want, sizeof want, "%s:2: the hash does not match the record\n", b1);
    ck_assert_str_eq(v_err, want);
    snprintf(want, sizeof want, "replica gw-a: seq 1 to 4, head %s\n", ha[4]);
    ck_assert_str_eq(v_out, want);
    /* both broken: each chain names its own first bad line */
    v = lines_of(a1, &n);
    free(v[0]);
    v[0] = strdup("{}");
    put_lines(a1, v, n);
    free_lines(v);
    ck_assert_int_eq(verify_files(all, 3, NULL, 0, NULL, false), 1);
    snprintf(want, sizeof want,
             "%s:1: the line does not end with ,\"hash\":\"<64 hex digits>\"}\n"
             "%s:2: the hash does not match the record\n",
             a1, b1);
    ck_assert_str_eq(v_err, want);
    ck_assert_str_eq(v_out, "");
}
END_TEST

START_TEST(test_verify_refuses_a_file_mixing_replicas)
{
    make_dir();
    const char *f = in_dir("mixed.jsonl");
    char h[8][65], *v[4];
    memcpy(h[0], ZEROS, 65);
    replica_lines(v, "gw-a", 1, 2, h);
    replica_lines(v + 2, "gw-b", 3, 1, h);
    put_lines(f, v, 3);
    verify1(f, NULL);
    char want[600];
    snprintf(want, sizeof want,
             "%s:3: a record of replica gw-b in a file of replica gw-a (a file holds one "
             "replica's chain)\n",
             f);
    ck_refused(want);
    free(v[2]);
    replica_lines(v + 2, NULL, 3, 1, h);
    put_lines(f, v, 3);
    verify1(f, NULL);
    snprintf(want, sizeof want,
             "%s:3: a record without a replica after records of replica gw-a (a file holds one "
             "replica's chain)\n",
             f);
    ck_refused(want);
    /* a replica that is no replica id */
    free(v[2]);
    v[2] = rec(NULL, 3, "\"request_id\":\"r3\",\"replica\":\"gw a\"", h[2], h[3]);
    put_lines(f, v, 3);
    verify1(f, NULL);
    snprintf(want, sizeof want, "%s:3: its replica is not a replica id\n", f);
    ck_refused(want);
    for (int i = 0; i < 3; i++)
        free(v[i]);
}
END_TEST

START_TEST(test_verify_records_without_replica_are_one_chain)
{
    /* written before replica ids: one chain, shown as replica (none) */
    make_dir();
    const char *l1 = in_dir("old.jsonl.1"), *l2 = in_dir("old.jsonl");
    char h[8][65], *v[6], want[800];
    memcpy(h[0], ZEROS, 65);
    replica_lines(v, NULL, 1, 4, h);
    put_lines(l1, v, 2);
    put_lines(l2, v + 2, 2);
    const char *both[] = {l1, l2};
    ck_assert_int_eq(verify_files(both, 2, NULL, 0, NULL, false), 0);
    snprintf(want, sizeof want,
             "replica (none): seq 1 to 4, head %s; its records name no replica (written before "
             "replica ids)\n4 records verified\n",
             h[4]);
    ck_assert_str_eq(v_out, want);
    /* upgraded in place: the file that goes on with replica gw-a takes the older files into
     * its chain (they verify with it, from seq 1) */
    const char *up = in_dir("up.jsonl");
    replica_lines(v + 4, "gw-a", 5, 2, h);
    put_lines(up, v + 4, 2);
    const char *three[] = {l1, l2, up};
    ck_assert_int_eq(verify_files(three, 3, NULL, 0, NULL, false), 0);
    snprintf(want, sizeof want, "replica gw-a: seq 1 to 6, head %s\n6 records verified\n", h[6]);
    ck_assert_str_eq(v_out, want);
    /* one file with both: the same */
    put_lines(up, v + 2, 4);
    const char *two[] = {l1, up};
    ck_assert_int_eq(verify_files(two, 2, NULL, 0, NULL, false), 0);
    ck_assert_str_eq(v_out, want);
    /* the old files of another replica's chain stay a chain of their own, from seq 1 */
    const char *a1, *a2, *b1;
    remove_dir();
    two_replicas(&a1, &a2, &b1);
    put_lines(in_dir("old.jsonl"), v, 4);
    const char *others[] = {in_dir("old.jsonl"), a1, a2};
    ck_assert_int_eq(verify_files(others, 3, NULL, 0, NULL, false), 0);
    snprintf(want, sizeof want,
             "replica (none): seq 1 to 4, head %s; its records name no replica (written before "
             "replica ids)\nreplica gw-a: seq 1 to 4, head %s\n8 records verified\n",
             h[4], ha[4]);
    ck_assert_str_eq(v_out, want);
    for (int i = 0; i < 6; i++)
        free(v[i]);
}
END_TEST

START_TEST(test_verify_anchors_name_their_replica)
{
    const char *a1, *a2, *b1;
    two_replicas(&a1, &a2, &b1);
    const char *all[] = {a1, a2, b1};
    char anchor_a[100], anchor_b[100], want[800];
    snprintf(anchor_a, sizeof anchor_a, "gw-a:4:%s", ha[4]);
    snprintf(anchor_b, sizeof anchor_b, "gw-b:2:%s", hb[2]);
    const char *both[] = {anchor_a, anchor_b};
    ck_assert_int_eq(verify_anchored(all, 3, NULL, both, 2, false), 0);
    ck_assert_str_eq(v_err, "");
    /* gw-b's tail cut: only its chain fails */
    snprintf(anchor_b, sizeof anchor_b, "gw-b:5:%s", hb[3]);
    ck_assert_int_eq(verify_anchored(all, 3, NULL, both, 2, false), 1);
    ck_assert_str_eq(v_err, "replica gw-b: the log ends at seq 3 and does not reach the anchor "
                            "seq 5 (its tail is missing)\n");
    snprintf(want, sizeof want, "replica gw-a: seq 1 to 4, head %s\n", ha[4]);
    ck_assert_str_eq(v_out, want);
    /* another record at the anchor's seq */
    snprintf(anchor_a, sizeof anchor_a, "gw-a:2:%s", hb[2]);
    const char *one[] = {anchor_a};
    ck_assert_int_eq(verify_anchored(all, 3, NULL, one, 1, false), 1);
    snprintf(want, sizeof want, "%s:2: seq 2 does not have the anchor's hash\n", a1);
    ck_assert_str_eq(v_err, want);
    /* a replica whose files are all missing */
    snprintf(anchor_a, sizeof anchor_a, "gw-c:1:%s", ha[1]);
    ck_assert_int_eq(verify_anchored(all, 3, NULL, one, 1, false), 1);
    ck_assert_str_eq(v_err, "replica gw-c: no file given holds its records, but --anchor names "
                            "its seq 1\n");
    /* without a replica: only when the files hold one chain */
    snprintf(anchor_a, sizeof anchor_a, "4:%s", ha[4]);
    ck_assert_int_eq(verify_anchored(all, 3, NULL, one, 1, false), 2);
    snprintf(want, sizeof want,
             "--anchor 4:%s names no replica, but the files hold the chains of 2 replicas: give "
             "--anchor REPLICA:SEQ:HASH\n",
             ha[4]);
    ck_assert_str_eq(v_err, want);
    ck_assert_str_eq(v_out, "");
    const char *a_only[] = {a1, a2};
    ck_assert_int_eq(verify_anchored(a_only, 2, NULL, one, 1, false), 0);
}
END_TEST

START_TEST(test_verify_continue_takes_each_chains_first_record_as_given)
{
    const char *a1, *a2, *b1;
    two_replicas(&a1, &a2, &b1);
    const char *rotated[] = {a2, b1};
    ck_assert_int_eq(verify_files(rotated, 2, NULL, 0, NULL, true), 0);
    char want[800];
    snprintf(want, sizeof want,
             "replica gw-a: seq 3 to 4, head %s, continuing from seq 3, prev %s\n"
             "replica gw-b: seq 1 to 3, head %s, continuing from seq 1, prev %s\n"
             "5 records verified\n",
             ha[4], ha[2], hb[3], ZEROS);
    ck_assert_str_eq(v_out, want);
}
END_TEST

START_TEST(test_anchor_parse_takes_an_optional_replica)
{
    struct gw_audit_anchor a;
    char arg[200];
    snprintf(arg, sizeof arg, "12:%s", ZEROS);
    ck_assert_int_eq(gw_audit_anchor_parse(arg, &a), 0);
    ck_assert_str_eq(a.replica, "");
    ck_assert_uint_eq(a.seq, 12);
    ck_assert_str_eq(a.hash, ZEROS);
    snprintf(arg, sizeof arg, "gw-7d9f.abc_1:9007199254740991:%s", ZEROS);
    ck_assert_int_eq(gw_audit_anchor_parse(arg, &a), 0);
    ck_assert_str_eq(a.replica, "gw-7d9f.abc_1");
    ck_assert_uint_eq(a.seq, 9007199254740991ull);
    static const char *const bad[] = {
        "0:" ZEROS,
        "-1:" ZEROS,
        " 1:" ZEROS,
        "+1:" ZEROS,
        "1x:" ZEROS,
        "1:" ZEROS "0",
        "1:"
        "000000000000000000000000000000000000000000000000000000000000000A",
        ":1:" ZEROS,
        "gw a:1:" ZEROS,
        "a:b:1:" ZEROS,
        "9007199254740992:" ZEROS,
        "1",
        "gw:1",
        "gw:1:"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(gw_audit_anchor_parse(bad[i], &a) == -1, "accepted %s", bad[i]);
}
END_TEST

/* ================= gw_audit_members ================= */

START_TEST(test_members_are_the_object_without_braces_in_insertion_order)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "zeta", "1");
    cJSON_AddNumberToObject(o, "alpha", 2);
    cJSON *in = cJSON_CreateObject();
    cJSON_AddBoolToObject(in, "b", true);
    cJSON_AddItemToObject(o, "mid", in);
    cJSON_AddItemToObject(o, "arr", cJSON_CreateIntArray((const int[]){3, 1, 2}, 3));
    cJSON_AddNullToObject(o, "a");
    char *m = gw_audit_members(o);
    ck_assert_str_eq(m,
                     "\"zeta\":\"1\",\"alpha\":2,\"mid\":{\"b\":true},\"arr\":[3,1,2],\"a\":null");
    free(m);
    cJSON_Delete(o);

    o = cJSON_CreateObject();
    m = gw_audit_members(o);
    ck_assert_str_eq(m, "");
    free(m);
    cJSON_Delete(o);
}
END_TEST

START_TEST(test_members_of_a_non_object_is_null)
{
    cJSON *x = cJSON_CreateArray();
    ck_assert_ptr_null(gw_audit_members(x));
    cJSON_Delete(x);
    x = cJSON_CreateString("{a}");
    ck_assert_ptr_null(gw_audit_members(x));
    cJSON_Delete(x);
    x = cJSON_CreateNumber(1);
    ck_assert_ptr_null(gw_audit_members(x));
    cJSON_Delete(x);
}
END_TEST

START_TEST(test_event_names)
{
    ck_assert_str_eq(gw_audit_event_name(GW_AUDIT_INTENT), "intent");
    ck_assert_str_eq(gw_audit_event_name(GW_AUDIT_OUTCOME), "outcome");
    ck_assert_str_eq(gw_audit_event_name(GW_AUDIT_DENIED), "denied");
    ck_assert_str_eq(gw_audit_event_name(GW_AUDIT_READ), "read");
    ck_assert_str_eq(gw_audit_event_name((enum gw_audit_event)7), "?");
}
END_TEST

/* ================= the chain state: clean or writing ================= */

static char *state_of(const char *file)
{
    char p[300];
    snprintf(p, sizeof p, "%s.chain", file);
    return slurp(p, NULL);
}

/* The hash of the last line of file. */
static void last_hash(const char *file, char out[65])
{
    size_t n;
    char **v = lines_of(file, &n);
    ck_assert_uint_gt(n, 0);
    member_of(v[n - 1], "hash", out);
    free_lines(v);
}

START_TEST(test_state_is_writing_before_the_first_record_and_clean_at_stop_and_rotation)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *old = in_dir("audit.jsonl.1");
    write_records(f, 2, true, NULL);
    char h[65], want[160];
    last_hash(f, h);
    snprintf(want, sizeof want, "2 %s clean\n", h);
    char *st = state_of(f);
    ck_assert_str_eq(st, want); /* a clean stop: the last record written */
    free(st);

    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    st = state_of(f);
    ck_assert_str_eq(st, want); /* nothing written yet: still clean */
    free(st);
    struct gw_audit_item *it = submit_and_wait(a, members_for(3));
    ck_assert(it->ok);
    free_item(it);
    snprintf(want, sizeof want, "2 %s writing\n", h);
    st = state_of(f);
    ck_assert_str_eq(st, want); /* saved before record 3: a crash now is not a clean stop */
    free(st);

    /* rotation: clean at the reopen, writing again before the new file's first record */
    ck_assert_int_eq(rename(f, old), 0);
    gw_audit_reopen(a);
    for (int i = 0; i < 5000 && access(f, F_OK) != 0; i++)
        usleep(1000);
    char h3[65];
    last_hash(old, h3);
    snprintf(want, sizeof want, "3 %s clean\n", h3);
    for (int i = 0; i < 5000; i++) { /* the state is saved right after the new file is made */
        st = state_of(f);
        if (strcmp(st, want) == 0)
            break;
        free(st);
        st = NULL;
        usleep(1000);
    }
    ck_assert_msg(st != NULL, "the state after the reopen is not \"%s\"", want);
    free(st);
    it = submit_and_wait(a, members_for(4));
    ck_assert(it->ok);
    free_item(it);
    snprintf(want, sizeof want, "3 %s writing\n", h3);
    st = state_of(f);
    ck_assert_str_eq(st, want);
    free(st);
    gw_audit_stop(a);
    gw_audit_free(a);
    last_hash(f, h);
    snprintf(want, sizeof want, "4 %s clean\n", h);
    st = state_of(f);
    ck_assert_str_eq(st, want);
    free(st);
}
END_TEST

/* A "crash": the file and its state as they are while records are being written (copied
 * before the log stops, then put back after it). */
struct image {
    char *file, *state;
    size_t flen;
};

static struct image crash_image(const char *f)
{
    struct image im;
    im.file = slurp(f, &im.flen);
    im.state = state_of(f);
    return im;
}

static void restore_image(const char *f, struct image *im)
{
    char p[300];
    put_file(f, im->file, im->flen);
    snprintf(p, sizeof p, "%s.chain", f);
    put(p, im->state);
    free(im->file);
    free(im->state);
}

/* Records 1..2 with a clean stop, then 3..5 written by a log that "crashes". */
static void write_and_crash(const char *f)
{
    write_records(f, 2, true, NULL);
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 3, 2);
    struct gw_audit_item *it = submit_and_wait(a, members_for(5));
    ck_assert(it->ok);
    free_item(it);
    struct image im = crash_image(f);
    gw_audit_stop(a);
    gw_audit_free(a);
    restore_image(f, &im);
}

START_TEST(test_file_moved_aside_after_a_crash_refuses_and_says_how_to_recover)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *moved = in_dir("audit.jsonl.moved");
    write_and_crash(f);
    ck_assert_int_eq(rename(f, moved), 0);
    const char *why = open_refused(f, NULL);
    ck_assert_msg(strstr(why, " is missing, but the chain state ") &&
                      strstr(why, "knows seq 2 and records may have been written after it") &&
                      strstr(why, "Restore the file that holds the records after seq 2") &&
                      strstr(why, "Moving a file aside is never the recovery"),
                  "%s", why);
    ck_assert_int_eq(access(f, F_OK), -1); /* refused before creating it */
    put(f, "");                            /* an empty file is no better */
    why = open_refused(f, NULL);
    ck_assert_msg(strstr(why, " is empty, but the chain state "), "%s", why);
    /* check (gw_audit_inspect) says the same */
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.audit.file = (char *)f;
    uint64_t seq;
    char note[300], w[1200];
    ck_assert_int_eq(gw_audit_inspect(&cfg, &seq, note, sizeof note, w, sizeof w), -1);
    ck_assert_msg(strstr(w, "knows seq 2"), "%s", w);
    /* the recovery: the file put back; the chain continues from its last record */
    ck_assert_int_eq(rename(moved, f), 0);
    write_records(f, 1, true, NULL);
    check_chain(f, NULL, 1, ZEROS, 6);
}
END_TEST

START_TEST(test_missing_file_continues_only_from_a_clean_state)
{
    make_dir();
    const char *f = in_dir("audit.jsonl"), *g = in_dir("b.jsonl");
    char h[65], state[160];
    /* a state from before this rule ("<seq> <hash>") is not known to be clean */
    memset(h, 'c', 64);
    h[64] = '\0';
    snprintf(state, sizeof state, "7 %s\n", h);
    put(in_dir("audit.jsonl.chain"), state);
    const char *why = open_refused(f, NULL);
    ck_assert_msg(strstr(why, "knows seq 7"), "%s", why);
    snprintf(state, sizeof state, "7 %s writing\n", h);
    put(in_dir("audit.jsonl.chain"), state);
    why = open_refused(f, NULL);
    ck_assert_msg(strstr(why, "knows seq 7"), "%s", why);
    snprintf(state, sizeof state, "7 %s clean\n", h);
    put(in_dir("audit.jsonl.chain"), state);
    write_records(f, 1, false, NULL);
    check_chain(f, NULL, 8, h, 1);
    /* a file with records continues from them whatever the state says (behind them) */
    write_and_crash(g);
    write_records(g, 1, true, NULL);
    check_chain(g, NULL, 1, ZEROS, 6);
}
END_TEST

/* ================= a torn last line ================= */

/* The length of the torn line append_torn writes for seq. */
static size_t torn_len(unsigned long long seq)
{
    char *l = rec(NULL, seq, "\"event\":\"outcome\",\"sub\":\"torn\"", ZEROS, NULL);
    size_t half = strlen(l) / 2;
    free(l);
    return half;
}

/* Appends the first half of a sealed record with seq to file (no newline): a torn write. */
static size_t append_torn(const char *file, unsigned long long seq)
{
    char *l = rec(NULL, seq, "\"event\":\"outcome\",\"sub\":\"torn\"", ZEROS, NULL);
    size_t half = torn_len(seq);
    FILE *fp = fopen(file, "a");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(l, 1, half, fp), half);
    ck_assert_int_eq(fclose(fp), 0);
    free(l);
    return half;
}

START_TEST(test_torn_last_line_is_cut_into_file_torn_and_the_chain_continues)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    write_and_crash(f); /* records 1..5, the state "writing" */
    size_t len0;
    char *before = slurp(f, &len0);
    size_t half = append_torn(f, 6);
    /* check says what run will do, and changes nothing */
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.audit.file = (char *)f;
    uint64_t seq;
    char note[600], why[600];
    ck_assert_int_eq(gw_audit_inspect(&cfg, &seq, note, sizeof note, why, sizeof why), 0);
    ck_assert_uint_eq(seq, 5);
    ck_assert_msg(strstr(note, "ends in a torn line") && strstr(note, "continues from seq 5"), "%s",
                  note);
    size_t len1;
    free(slurp(f, &len1));
    ck_assert_uint_eq(len1, len0 + half);
    ck_assert_int_eq(access(in_dir("audit.jsonl.torn"), F_OK), -1);

    struct gw_audit *a = open_ok(f, true, NULL);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.repairs, 1);
    ck_assert_uint_eq(st.last_seq, 5);
    ck_assert_int_eq(gw_audit_start(a), 0);
    post_n(a, 6, 1);
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 6);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(6);
    /* the cut bytes, exactly */
    size_t tl;
    char *torn = slurp(in_dir("audit.jsonl.torn"), &tl);
    ck_assert_uint_eq(tl, half);
    char *l = rec(NULL, 6, "\"event\":\"outcome\",\"sub\":\"torn\"", ZEROS, NULL);
    ck_assert_int_eq(memcmp(torn, l, half), 0);
    free(l);
    free(torn);
    free(before);
    /* a second one goes to .torn.1 */
    append_torn(f, 7);
    write_records(f, 1, true, NULL);
    check_chain(f, NULL, 1, ZEROS, 7);
    ck_assert_int_eq(access(in_dir("audit.jsonl.torn.1"), F_OK), 0);
}
END_TEST

START_TEST(test_torn_tail_after_damage_refuses_names_the_line_and_changes_nothing)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    write_records(f, 4, false, NULL);
    size_t n;
    char **v = lines_of(f, &n);
    char *at = strstr(v[1], "\"i\":2");
    ck_assert_ptr_nonnull(at);
    at[4] = '7';
    put_lines(f, v, n);
    free_lines(v);
    append_torn(f, 5);
    size_t len0;
    char *before = slurp(f, &len0);
    const char *why = open_refused(f, NULL);
    char want[600];
    snprintf(want, sizeof want,
             "audit.file %s:2: the hash does not match the record: check the file with "
             "ghl-gateway audit-verify (only a torn last line is repaired at start)",
             f);
    ck_assert_str_eq(why, want);
    size_t len1;
    char *after = slurp(f, &len1);
    ck_assert_uint_eq(len1, len0);
    ck_assert_int_eq(memcmp(before, after, len0), 0);
    ck_assert_int_eq(access(in_dir("audit.jsonl.torn"), F_OK), -1);
    free(before);
    free(after);
    /* a record missing before the torn line */
    write_records(in_dir("b.jsonl"), 3, false, NULL);
    v = lines_of(in_dir("b.jsonl"), &n);
    char *l2[3] = {v[0], v[2]};
    put_lines(in_dir("b.jsonl"), l2, 2);
    free_lines(v);
    append_torn(in_dir("b.jsonl"), 4);
    why = open_refused(in_dir("b.jsonl"), NULL);
    ck_assert_msg(strstr(why, "b.jsonl:2: seq 3 follows seq 1"), "%s", why);
}
END_TEST

START_TEST(test_file_of_only_a_torn_line_continues_when_it_is_the_next_record)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    char state[160];
    char h[65];
    memset(h, 'd', 64);
    h[64] = '\0';
    /* a crash during the first write after the state was marked writing */
    snprintf(state, sizeof state, "9 %s writing\n", h);
    put(in_dir("audit.jsonl.chain"), state);
    put(f, "");
    append_torn(f, 10);
    write_records(f, 1, false, NULL);
    check_chain(f, NULL, 10, h, 1);
    /* a torn line that is not the next record proves nothing */
    const char *g = in_dir("b.jsonl");
    put(in_dir("b.jsonl.chain"), state);
    put(g, "");
    append_torn(g, 12);
    const char *why = open_refused(g, NULL);
    ck_assert_msg(strstr(why, "holds no whole record (only a torn line)") &&
                      strstr(why, "knows seq 9"),
                  "%s", why);
}
END_TEST

/* gw_audit_repair into strings */
static int r_rc;
static char r_out[2048], r_err[2048];

static int repair(const char *file, const char *key)
{
    char *o = NULL, *e = NULL;
    size_t on = 0, en = 0;
    FILE *out = open_memstream(&o, &on), *err = open_memstream(&e, &en);
    r_rc = gw_audit_repair(file, (const unsigned char *)key, key ? strlen(key) : 0, out, err);
    fclose(out);
    fclose(err);
    snprintf(r_out, sizeof r_out, "%s", o);
    snprintf(r_err, sizeof r_err, "%s", e);
    free(o);
    free(e);
    return r_rc;
}

START_TEST(test_audit_repair_cuts_a_torn_line_and_refuses_other_damage)
{
    make_dir();
    const char *f = in_dir("rot.jsonl"); /* a rotated file: no state of its own */
    char h[8][65];
    char **v = chain(KEY_A, 4, h);
    put_lines(f, v + 1, 3); /* seq 2..4: the first record taken as given */
    append_torn(f, 5);
    ck_assert_int_eq(repair(f, NULL), 1); /* without the key nothing verifies */
    ck_assert_msg(strstr(r_err, "rot.jsonl:1: the hash does not match"), "%s", r_err);
    size_t half = torn_len(5);
    ck_assert_int_eq(repair(f, KEY_A), 0);
    char want[600];
    snprintf(want, sizeof want,
             "%s: the torn last line (%zu bytes) moved to %s.torn; 3 records verified, the chain "
             "ends at seq 4\n",
             f, half, f);
    ck_assert_str_eq(r_out, want);
    ck_assert_str_eq(r_err, "");
    ck_assert_int_eq(repair(f, KEY_A), 0);
    snprintf(want, sizeof want, "%s: nothing to repair (3 records verified)\n", f);
    ck_assert_str_eq(r_out, want);
    const char *files[] = {f};
    ck_assert_int_eq(verify_files(files, 1, KEY_A, 0, NULL, true), 0);

    /* a whole last line that is wrong: 1, nothing changed */
    v[3][strlen(v[3]) - 3] ^= 1;
    put_lines(f, v, 4);
    size_t l0, l1;
    free(slurp(f, &l0));
    ck_assert_int_eq(repair(f, KEY_A), 1);
    ck_assert_msg(strstr(r_err, "rot.jsonl:4: "), "%s", r_err);
    free(slurp(f, &l1));
    ck_assert_uint_eq(l0, l1);
    free_lines(v);
    /* a file that is not there */
    ck_assert_int_eq(repair(in_dir("none.jsonl"), NULL), 2);
}
END_TEST

/* ================= durability ================= */

START_TEST(test_new_file_and_state_are_synced_with_their_folder)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    int at_open = atomic_load(&dir_syncs);
    ck_assert_int_ge(at_open, 1); /* the new file */
    ck_assert_int_eq(gw_audit_start(a), 0);
    struct gw_audit_item *it = submit_and_wait(a, members_for(1));
    ck_assert(it->ok);
    free_item(it);
    ck_assert_int_ge(atomic_load(&dir_syncs), at_open + 1); /* the state, renamed */
    int before = atomic_load(&dir_syncs);
    ck_assert_int_eq(rename(f, in_dir("audit.jsonl.1")), 0);
    gw_audit_reopen(a);
    it = submit_and_wait(a, members_for(2));
    ck_assert(it->ok);
    free_item(it);
    /* the new file, the state saved clean at the reopen, the state marked writing */
    ck_assert_int_ge(atomic_load(&dir_syncs), before + 3);
    gw_audit_stop(a);
    gw_audit_free(a);
}
END_TEST

static const int sync_errnos[] = {EIO, ENOSPC, EROFS, EINVAL, EDQUOT};

START_TEST(test_every_sync_error_fails_the_waited_record)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    struct gw_audit_item *it = submit_and_wait(a, members_for(1));
    ck_assert(it->ok);
    free_item(it);
    size_t len0;
    free(slurp(f, &len0));
    atomic_store(&sync_fail_errno, sync_errnos[_i]);
    atomic_store(&sync_fail_n, 1);
    it = submit_and_wait(a, members_for(2));
    ck_assert_msg(!it->ok, "errno %d ignored", sync_errnos[_i]);
    free_item(it);
    char why[300], want[400];
    ck_assert(!gw_audit_ready(a, why, sizeof why));
    snprintf(want, sizeof want, "audit.file %s: %s", f, strerror(sync_errnos[_i]));
    ck_assert_str_eq(why, want);
    size_t len1;
    free(slurp(f, &len1));
    ck_assert_uint_eq(len1, len0); /* cut back: the record is not in the file */
    it = submit_and_wait(a, members_for(3));
    ck_assert(it->ok);
    ck_assert_uint_eq(it->seq, 2);
    free_item(it);
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 2);
}
END_TEST

START_TEST(test_records_of_a_failed_sync_are_written_again_with_their_seq)
{
    /* Records nobody waits for are written without a sync; the sync that follows fails and,
     * as Linux may after a failed writeback, their bytes are gone from the file while the next
     * sync would succeed. They must be written again, not presumed durable. */
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    struct gw_audit_item *it = submit_and_wait(a, members_for(1)); /* on disk, synced */
    ck_assert(it->ok);
    free_item(it);
    struct gw_audit_stats st0, st;
    gw_audit_get_stats(a, &st0);
    atomic_store(&sync_fail_errno, EIO);
    atomic_store(&sync_fail_drops, true);
    atomic_store(&sync_fail_n, 1);
    /* within SYNC_LAG_S of that sync: written, not synced; then the idle sync fails */
    ck_assert_int_eq(gw_audit_submit_list(a, item_list(GW_AUDIT_OUTCOME, 2, 3), 3), 0);
    for (int i = 0; i < 5000; i++) {
        gw_audit_get_stats(a, &st);
        if (st.write_failures > 0)
            break;
        usleep(1000);
    }
    ck_assert_uint_eq(st.write_failures, 1);
    ck_assert_uint_eq(st.batches, st0.batches + 1); /* the batch itself was written */
    ck_assert_uint_eq(st.fsyncs, st0.fsyncs);
    ck_assert_uint_eq(st.last_seq, 1); /* 2..4 are not claimed: they are not on disk */
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 0);
    char why[300];
    ck_assert(!gw_audit_ready(a, why, sizeof why));
    /* the next sync succeeds: 2..4 are written again before it, with the same seq */
    it = submit_and_wait(a, members_for(5));
    ck_assert(it->ok);
    ck_assert_uint_eq(it->seq, 5);
    free_item(it);
    gw_audit_get_stats(a, &st);
    ck_assert_uint_eq(st.last_seq, 5);
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 3);
    ck_assert(gw_audit_ready(a, why, sizeof why));
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 5);
    size_t n;
    char **v = lines_of(f, &n);
    for (size_t k = 0; k < n; k++)
        ck_assert_int_eq(i_of(v[k]), (long)k + 1);
    free_lines(v);
    ck_assert_int_eq(verify1(f, NULL), 0);
    ck_verified(5);
}
END_TEST

START_TEST(test_records_not_on_disk_at_stop_leave_the_state_writing)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    struct gw_audit_item *it = submit_and_wait(a, members_for(1));
    ck_assert(it->ok);
    free_item(it);
    atomic_store(&sync_fail_errno, EIO);
    atomic_store(&sync_fail_n, 1000);
    post_n(a, 2, 2);
    gw_audit_stop(a);
    struct gw_audit_stats st;
    gw_audit_get_stats(a, &st);
    gw_audit_free(a);
    ck_assert_uint_eq(st.lost, 2);
    ck_assert_uint_eq(st.last_seq, 1);
    char *state = state_of(f);
    ck_assert_msg(strstr(state, " writing\n") != NULL, "%s", state);
    free(state);
    check_chain(f, NULL, 1, ZEROS, 1);
}
END_TEST

/* ================= a submitter that stops waiting ================= */

START_TEST(test_abandoned_intent_written_late_is_followed_by_its_outcome)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    atomic_store(&sync_delay_ms, 400); /* a slow disk */
    struct event_base *base = event_base_new();
    struct waiter w = {base, 0};
    struct gw_audit_item *it = calloc(1, sizeof *it);
    it->event = GW_AUDIT_INTENT;
    it->members = members_for(1);
    it->done = event_new(base, -1, 0, done_cb, &w);
    ck_assert_int_eq(gw_audit_submit(a, it), 0);
    usleep(50000); /* the writer is in its sync now */
    ck_assert(!gw_audit_answered(a, it));
    struct event *done = it->done;
    ck_assert(gw_audit_abandon(a, it, members_for(2)));
    /* the item is the log's now, and its event is never activated (the request that owned it
     * may be gone): after the writer is done with it, nothing fired */
    char why[300];
    ck_assert(!gw_audit_ready(a, why, sizeof why)); /* a hung disk is not ready... */
    ck_assert_msg(strstr(why, "not on disk within audit.sync_timeout_ms"), "%s", why);
    struct gw_audit_stats st = wait_stats(a, 2, 0);
    ck_assert(gw_audit_ready(a, why, sizeof why));               /* ...until a write gets through */
    ck_assert_int_eq(event_base_loop(base, EVLOOP_NONBLOCK), 1); /* no event pending or active */
    ck_assert_int_eq(w.fired, 0);
    event_free(done);
    event_base_free(base);
    ck_assert_uint_eq(st.sync_timeouts, 1);
    ck_assert_uint_eq(st.records[GW_AUDIT_INTENT], 1);
    ck_assert_uint_eq(st.records[GW_AUDIT_OUTCOME], 1);
    atomic_store(&sync_delay_ms, 0);
    /* answered first: abandoning is refused and the item stays the submitter's */
    it = submit_and_wait(a, members_for(3));
    ck_assert(it->ok);
    ck_assert(gw_audit_answered(a, it));
    ck_assert(!gw_audit_abandon(a, it, members_for(99)));
    free_item(it);
    gw_audit_stop(a);
    gw_audit_get_stats(a, &st);
    gw_audit_free(a);
    ck_assert_uint_eq(st.sync_timeouts, 1);
    check_chain(f, NULL, 1, ZEROS, 3);
    size_t n;
    char **v = lines_of(f, &n);
    for (size_t k = 0; k < n; k++)
        ck_assert_int_eq(i_of(v[k]), (long)k + 1); /* the intent, its outcome, the next */
    free_lines(v);
}
END_TEST

START_TEST(test_abandoned_intent_that_fails_is_freed_without_an_outcome)
{
    make_dir();
    const char *f = in_dir("audit.jsonl");
    struct gw_audit *a = open_ok(f, true, NULL);
    ck_assert_int_eq(gw_audit_start(a), 0);
    atomic_store(&sync_delay_ms, 300);
    atomic_store(&sync_fail_errno, EIO);
    atomic_store(&sync_fail_n, 1);
    struct gw_audit_item *it = calloc(1, sizeof *it);
    struct event_base *base = event_base_new();
    struct waiter w = {base, 0};
    it->event = GW_AUDIT_INTENT;
    it->members = members_for(1);
    it->done = event_new(base, -1, 0, done_cb, &w);
    ck_assert_int_eq(gw_audit_submit(a, it), 0);
    usleep(50000);
    struct event *done = it->done;
    ck_assert(gw_audit_abandon(a, it, members_for(2)));
    event_free(done);
    event_base_free(base);
    for (int i = 0; i < 5000; i++) {
        struct gw_audit_stats st;
        gw_audit_get_stats(a, &st);
        if (st.write_failures > 0)
            break;
        usleep(1000);
    }
    atomic_store(&sync_delay_ms, 0);
    post_n(a, 3, 1);
    gw_audit_stop(a);
    gw_audit_free(a);
    check_chain(f, NULL, 1, ZEROS, 1); /* neither the intent nor an outcome for it */
    size_t n;
    char **v = lines_of(f, &n);
    ck_assert_int_eq(i_of(v[0]), 3);
    free_lines(v);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("audit");
    TCase *t;

    t = tcase_create("write");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_loop_test(t, test_written_log_has_seq_from_1_prev_chained_and_verifies, 0, 2);
    tcase_add_test(t, test_record_is_v_seq_ts_then_members_in_order_then_prev_and_hash);
    tcase_add_test(t, test_hand_sealed_records_verify_byte_rule_matches);
    tcase_add_loop_test(t, test_stats_count_records_batches_and_fsyncs, 0, 2);
    tcase_add_test(t, test_concurrent_posts_make_one_contiguous_chain);
    tcase_add_test(t, test_log_without_sink_is_disabled_and_takes_nothing);
    tcase_add_test(t, test_submit_before_start_is_refused_and_post_counts_lost);
    suite_add_tcase(s, t);

    t = tcase_create("hmac");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_hmac_log_verifies_only_with_its_key);
    tcase_add_test(t, test_hmac_key_of_31_bytes_is_refused_32_accepted);
    tcase_add_test(t, test_hmac_key_file_missing_or_with_spaces_is_refused);
    tcase_add_test(t, test_open_with_another_key_refuses_the_last_record);
    suite_add_tcase(s, t);

    t = tcase_create("continuation");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_reopened_log_continues_at_seq_4);
    tcase_add_test(t, test_long_last_line_is_found_for_continuation);
    tcase_add_test(t, test_empty_file_continues_from_state_file);
    tcase_add_test(t, test_state_file_without_newline_is_read);
    tcase_add_test(t, test_rotation_continues_the_chain_in_the_new_file);
    tcase_add_test(t, test_open_refuses_last_record_with_altered_hash);
    tcase_add_test(t, test_open_refuses_state_seq_beyond_the_file);
    tcase_add_loop_test(t, test_open_refuses_malformed_state_file, 0,
                        (int)(sizeof bad_states / sizeof bad_states[0]));
    tcase_add_test(t, test_open_refuses_unopenable_file);
    tcase_add_test(t, test_open_refuses_state_with_the_same_seq_and_another_hash);
    suite_add_tcase(s, t);

    t = tcase_create("replica");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_add_test(t, test_open_continues_only_its_own_replicas_chain);
    tcase_add_test(t, test_open_continues_a_log_written_before_replica_ids);
    tcase_add_test(t, test_open_refuses_a_file_mixing_replicas_before_a_torn_line);
    tcase_add_test(t, test_open_refuses_a_replica_that_is_no_replica_id);
    suite_add_tcase(s, t);
    t = tcase_create("replicas");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_add_test(t, test_verify_groups_the_files_of_each_replica);
    tcase_add_test(t, test_verify_one_replicas_files_out_of_order_fail);
    tcase_add_test(t, test_verify_one_broken_chain_fails_the_whole_run);
    tcase_add_test(t, test_verify_refuses_a_file_mixing_replicas);
    tcase_add_test(t, test_verify_records_without_replica_are_one_chain);
    tcase_add_test(t, test_verify_anchors_name_their_replica);
    tcase_add_test(t, test_verify_continue_takes_each_chains_first_record_as_given);
    tcase_add_test(t, test_anchor_parse_takes_an_optional_replica);
    suite_add_tcase(s, t);
    t = tcase_create("chain state");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_state_is_writing_before_the_first_record_and_clean_at_stop_and_rotation);
    tcase_add_test(t, test_file_moved_aside_after_a_crash_refuses_and_says_how_to_recover);
    tcase_add_test(t, test_missing_file_continues_only_from_a_clean_state);
    suite_add_tcase(s, t);

    t = tcase_create("repair");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_torn_last_line_is_cut_into_file_torn_and_the_chain_continues);
    tcase_add_test(t, test_torn_tail_after_damage_refuses_names_the_line_and_changes_nothing);
    tcase_add_test(t, test_file_of_only_a_torn_line_continues_when_it_is_the_next_record);
    tcase_add_test(t, test_audit_repair_cuts_a_torn_line_and_refuses_other_damage);
    suite_add_tcase(s, t);

    t = tcase_create("durability");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_new_file_and_state_are_synced_with_their_folder);
    tcase_add_loop_test(t, test_every_sync_error_fails_the_waited_record, 0,
                        (int)(sizeof sync_errnos / sizeof sync_errnos[0]));
    tcase_add_test(t, test_records_of_a_failed_sync_are_written_again_with_their_seq);
    tcase_add_test(t, test_records_not_on_disk_at_stop_leave_the_state_writing);
    tcase_add_test(t, test_abandoned_intent_written_late_is_followed_by_its_outcome);
    tcase_add_test(t, test_abandoned_intent_that_fails_is_freed_without_an_outcome);
    suite_add_tcase(s, t);

    t = tcase_create("waited");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_waited_item_fires_its_event_with_ok_and_seq);
    tcase_add_test(t, test_dev_full_fails_waited_item_and_is_not_ready);
    tcase_add_test(t, test_failed_write_is_cut_off_and_its_seq_reused);
    suite_add_tcase(s, t);

    t = tcase_create("lists");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_submit_list_writes_its_items_in_order_with_consecutive_seq);
    tcase_add_test(t, test_submit_list_with_one_oversized_item_takes_none);
    tcase_add_test(t, test_submit_list_longer_than_the_queue_takes_none);
    tcase_add_test(t, test_submit_list_is_refused_before_start_and_after_stop);
    suite_add_tcase(s, t);

    t = tcase_create("group commit");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_batch_nobody_waits_for_is_synced_once_the_writer_is_idle);
    tcase_add_test(t, test_batch_with_a_waiter_is_synced_before_the_waiter_is_told);
    suite_add_tcase(s, t);

    t = tcase_create("verify");
    tcase_add_checked_fixture(t, NULL, remove_dir);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_verify_changed_byte_names_its_line);
    tcase_add_test(t, test_verify_deleted_middle_line);
    tcase_add_test(t, test_verify_deleted_last_line_is_caught_by_the_anchor_only);
    tcase_add_test(t, test_verify_swapped_lines);
    tcase_add_test(t, test_verify_inserted_line);
    tcase_add_test(t, test_verify_replaced_record_with_own_valid_hash_breaks_prev);
    tcase_add_test(t, test_verify_first_record_must_chain_to_zeros);
    tcase_add_test(t, test_verify_empty_line);
    tcase_add_test(t, test_verify_last_line_without_newline);
    tcase_add_test(t, test_verify_crlf_line_is_refused);
    tcase_add_test(t, test_verify_non_json_line);
    tcase_add_test(t, test_verify_last_member_before_hash_must_be_prev);
    tcase_add_test(t, test_verify_duplicate_member_is_refused);
    tcase_add_loop_test(t, test_verify_refuses_records_not_version_1_with_seq, 0,
                        (int)(sizeof not_v1_bodies / sizeof not_v1_bodies[0]));
    tcase_add_test(t, test_verify_uppercase_hash_is_refused);
    tcase_add_test(t, test_verify_anchor_matches_beyond_end_and_wrong_hash);
    tcase_add_test(t, test_verify_cont_starts_mid_chain);
    tcase_add_test(t, test_verify_across_files_counts_lines_per_file);
    tcase_add_test(t, test_verify_unreadable_file_returns_2);
    tcase_add_test(t, test_verify_empty_file_is_zero_records);
    suite_add_tcase(s, t);

    t = tcase_create("members");
    tcase_add_test(t, test_members_are_the_object_without_braces_in_insertion_order);
    tcase_add_test(t, test_members_of_a_non_object_is_null);
    tcase_add_test(t, test_event_names);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    evthread_use_pthreads(); /* as the server does: the writer activates events of our bases */
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    libevent_global_shutdown();
    return failed ? 1 : 0;
}
