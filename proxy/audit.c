#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "config.h"
#include "json.h"
#include "log.h"
#include "snapshot.h"

#define HEX_LEN 64
#define MAX_QUEUE 100000 /* records waiting for the writer */
/* One record: the body (limits.max_body_bytes, at most 16 MiB) and the target as fetched (the
 * upstream's answers are capped at 16 MiB) fit; the writer refuses anything longer, so every
 * line it writes can be read back by open and by audit-verify. */
#define MAX_LINE (64u << 20)
#define MAX_SEQ 9007199254740991ull /* 2^53 - 1: exact in every JSON reader */
#define BATCH_BYTES (4u << 20)      /* one write() */
#define MAX_KEY_FILE 4096           /* the HMAC key file */
#define MIN_KEY_BYTES 32            /* HMAC-SHA256: at least the hash's length */
#define RETRY_MS 1000               /* after a failed write */
#define SYNC_LAG_S 0.1 /* records nobody waits for are on disk within this, or when idle */
#define HASH_SUFFIX_LEN (9 + HEX_LEN + 2) /* ,"hash":"<64 hex>"} */

static const char zeros[HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

const double gw_audit_write_buckets[8] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1};

struct gw_audit {
    char *path;       /* NULL: no file sink */
    char *state_path; /* <path>.chain */
    bool to_stdout, fsync;
    unsigned char *key; /* HMAC key, or NULL for SHA-256 */
    size_t keylen;
    int fd, out_fd;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gw_audit_item *head, *tail; /* the queue */
    size_t qlen;
    bool stop, reopen;
    bool waiting; /* the writer sleeps on cv: a submitter wakes it (otherwise it will look) */

    /* the chain: written by the writer only (and read under mu for the stats) */
    uint64_t seq;
    char prev[HEX_LEN + 1];
    /* the writer's: records written but not yet synced (none waits for them), and when the
     * last sync was */
    bool unsynced;
    double last_sync;

    /* under mu */
    struct gw_audit_stats st;
    bool ready;
    char why[200];
};

const char *gw_audit_event_name(enum gw_audit_event e)
{
    static const char *const names[GW_AUDIT_EVENTS] = {"intent", "outcome", "denied", "read"};
    return e < GW_AUDIT_EVENTS ? names[e] : "?";
}

/* ---- the hash ---- */

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* hash = hex(SHA-256(prev || body)) or HMAC-SHA256(key, prev || body). Returns 0 or -1. */
static int chain_hash(const unsigned char *key, size_t keylen, const char *prev, const char *body,
                      size_t len, char out[HEX_LEN + 1])
{
    unsigned char md[32];
    size_t mdlen = 0;
    int rc = -1;
    if (key == NULL) {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        unsigned int n = 0;
        if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
            EVP_DigestUpdate(c, prev, HEX_LEN) == 1 && EVP_DigestUpdate(c, body, len) == 1 &&
            EVP_DigestFinal_ex(c, md, &n) == 1 && n == sizeof md) {
            mdlen = n;
            rc = 0;
        }
        EVP_MD_CTX_free(c);
    } else {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end()};
        if (c && EVP_MAC_init(c, key, keylen, params) == 1 &&
            EVP_MAC_update(c, (const unsigned char *)prev, HEX_LEN) == 1 &&
            EVP_MAC_update(c, (const unsigned char *)body, len) == 1 &&
            EVP_MAC_final(c, md, &mdlen, sizeof md) == 1 && mdlen == sizeof md)
            rc = 0;
        EVP_MAC_CTX_free(c);
        EVP_MAC_free(mac);
    }
    if (rc == 0)
        to_hex(md, mdlen, out);
    return rc;
}

static bool is_hex64(const char *s)
{
    for (int i = 0; i < HEX_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Checks one line (without its newline): its shape, its body as strict JSON, and its hash
 * over its own prev. Fills seq, prev and hash. Returns 0, or -1 with why. */
static int check_line(const char *line, size_t len, const unsigned char *key, size_t keylen,
                      uint64_t *seq, char prev[HEX_LEN + 1], char hash[HEX_LEN + 1], char *why,
                      size_t whylen)
{
    static const char hk[] = ",\"hash\":\"", pk[] = ",\"prev\":\"";
    if (len < HASH_SUFFIX_LEN + 9 + HEX_LEN + 2 || line[len - 1] != '}' || line[len - 2] != '"' ||
        memcmp(line + len - HASH_SUFFIX_LEN, hk, 9) != 0 ||
        !is_hex64(line + len - HASH_SUFFIX_LEN + 9)) {
        snprintf(why, whylen, "the line does not end with ,\"hash\":\"<64 hex digits>\"}");
        return -1;
    }
    memcpy(hash, line + len - HASH_SUFFIX_LEN + 9, HEX_LEN);
    hash[HEX_LEN] = '\0';
    size_t blen = len - HASH_SUFFIX_LEN + 1; /* the body: up to the hash member, then '}' */
    char *body = malloc(blen + 1);
    if (body == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    memcpy(body, line, blen - 1);
    body[blen - 1] = '}';
    body[blen] = '\0';
    int rc = -1;
    if (blen < 9 + HEX_LEN + 2 || memcmp(body + blen - (9 + HEX_LEN + 2), pk, 9) != 0 ||
        !is_hex64(body + blen - HEX_LEN - 2)) {
        snprintf(why, whylen, "the record's last member before hash is not \"prev\"");
        goto out;
    }
    memcpy(prev, body + blen - HEX_LEN - 2, HEX_LEN);
    prev[HEX_LEN] = '\0';
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 64};
    cJSON *j = gw_json_parse(body, blen, &o, &je);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "v");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "seq");
    if (j == NULL) {
        snprintf(why, whylen, "not a JSON record: %s", je.msg);
    } else if (!cJSON_IsObject(j) || !cJSON_IsNumber(v) || v->valuedouble != 1 || j->child != v ||
               !cJSON_IsNumber(s) || s->valuedouble < 1 || s->valuedouble > (double)MAX_SEQ ||
               s->valuedouble != (double)(uint64_t)s->valuedouble ||
               cJSON_GetObjectItemCaseSensitive(j, "hash") != NULL) {
        snprintf(why, whylen, "not a version 1 record with a seq");
    } else {
        *seq = (uint64_t)s->valuedouble;
        char want[HEX_LEN + 1];
        if (chain_hash(key, keylen, prev, body, blen, want) != 0)
            snprintf(why, whylen, "cannot compute the hash");
        else if (CRYPTO_memcmp(want, hash, HEX_LEN) != 0)
            snprintf(why, whylen, "the hash does not match the record%s",
                     key ? " (or the key is not the one it was written with)" : "");
        else
            rc = 0;
    }
    cJSON_Delete(j);
out:
    free(body);
    return rc;
}

/* ---- opening: where the chain continues ---- */

/* The last line of fd (without its newline) into *line. Returns 1 with it, 0 for an empty
 * file, -1 with why (unreadable, an incomplete last line, or a line past MAX_LINE). */
static int last_line(int fd, char **line, size_t *len, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "cannot stat: %s", strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0)
        return 0; /* a device (or a pipe) has no last line to continue from */
    off_t end = st.st_size;
    char c;
    if (pread(fd, &c, 1, end - 1) != 1 || c != '\n') {
        snprintf(why, whylen,
                 "its last line is incomplete (a crash during a write?): check it with "
                 "ghl-gateway audit-verify and move it aside");
        return -1;
    }
    size_t want = 4096;
    for (;;) {
        if ((off_t)want > end)
            want = (size_t)end;
        char *buf = malloc(want);
        if (buf == NULL || pread(fd, buf, want, end - (off_t)want) != (ssize_t)want) {
            free(buf);
            snprintf(why, whylen, "cannot read: %s", strerror(errno));
            return -1;
        }
        /* the newline before the last line (excluding the final one) */
        size_t i = want - 1;
        while (i > 0 && buf[i - 1] != '\n')
            i--;
        if (i > 0 || (off_t)want == end) {
            *len = want - 1 - i;
            *line = malloc(*len + 1);
            if (*line == NULL) {
                free(buf);
                snprintf(why, whylen, "out of memory");
                return -1;
            }
            memcpy(*line, buf + i, *len);
            (*line)[*len] = '\0';
            free(buf);
            return 1;
        }
        free(buf);
        if (want >= (size_t)MAX_LINE + 2) {
            snprintf(why, whylen, "its last line is longer than %u bytes", MAX_LINE);
            return -1;
        }
        want = want * 4 < (size_t)MAX_LINE + 2 ? want * 4 : (size_t)MAX_LINE + 2;
    }
}

/* The state file: "<seq> <hash>\n", the chain's end at the last reopen or stop. Returns 1
 * with it, 0 when absent, -1 when unreadable or malformed. */
static int read_state(const char *path, uint64_t *seq, char hash[HEX_LEN + 1])
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    char buf[128];
    int rc = -1;
    if (fgets(buf, sizeof buf, f) && buf[0] >= '0' && buf[0] <= '9') { /* no sign, no space */
        char *end;
        errno = 0;
        unsigned long long s = strtoull(buf, &end, 10);
        if (errno == 0 && end != buf && *end == ' ' && s < MAX_SEQ && strlen(end + 1) >= HEX_LEN &&
            is_hex64(end + 1) && (end[1 + HEX_LEN] == '\n' || end[1 + HEX_LEN] == '\0')) {
            *seq = s;
            memcpy(hash, end + 1, HEX_LEN);
            hash[HEX_LEN] = '\0';
            rc = 1;
        }
    }
    fclose(f);
    return rc;
}

static void write_state(struct gw_audit *a)
{
    if (a->state_path == NULL)
        return;
    char tmp[4200], buf[128];
    snprintf(tmp, sizeof tmp, "%s.tmp", a->state_path);
    int n = snprintf(buf, sizeof buf, "%llu %s\n", (unsigned long long)a->seq, a->prev);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || write(fd, buf, (size_t)n) != n || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, a->state_path) != 0) {
        gw_log_error("audit: cannot save the chain state %s: %s", a->state_path, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* A log with its settings and key, no descriptor open. NULL with why. */
static struct gw_audit *audit_new(const struct gw_config *cfg, char *why, size_t whylen)
{
    struct gw_audit *a = calloc(1, sizeof *a);
    if (a == NULL) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    a->fd = -1;
    a->out_fd = -1;
    a->ready = true;
    memcpy(a->prev, zeros, sizeof a->prev);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->to_stdout = cfg->audit.to_stdout;
    a->fsync = cfg->audit.fsync;
    char err[300];
    if (cfg->audit.hmac_key_file) {
        a->key = (unsigned char *)gw_read_secret(cfg->audit.hmac_key_file, MAX_KEY_FILE, &a->keylen,
                                                 err, sizeof err);
        if (a->key == NULL) {
            snprintf(why, whylen, "audit.hmac_key_file: %s", err);
            goto bad;
        }
        if (a->keylen < MIN_KEY_BYTES) {
            snprintf(why, whylen, "audit.hmac_key_file: the key has %zu bytes; at least %d",
                     a->keylen, MIN_KEY_BYTES);
            goto bad;
        }
    }
    if (cfg->audit.file) {
        a->path = strdup(cfg->audit.file);
        if (a->path == NULL || asprintf(&a->state_path, "%s.chain", a->path) < 0) {
            a->state_path = NULL;
            snprintf(why, whylen, "out of memory");
            goto bad;
        }
    }
    return a;
bad:
    gw_audit_free(a);
    return NULL;
}

/* Where the chain continues: the file's last record (which must verify), or the state file
 * for an empty or absent file. Returns 0, or -1 with why. */
static int continue_chain(struct gw_audit *a, char *why, size_t whylen)
{
    char err[300];
    char *line = NULL;
    size_t len = 0;
    int rfd = open(a->path, O_RDONLY | O_CLOEXEC); /* the append descriptor cannot read */
    int got = rfd >= 0 ? last_line(rfd, &line, &len, err, sizeof err) : errno == ENOENT ? 0 : -1;
    if (rfd >= 0)
        close(rfd);
    else if (got < 0)
        snprintf(err, sizeof err, "cannot read: %s", strerror(errno));
    if (got < 0) {
        snprintf(why, whylen, "audit.file %s: %s", a->path, err);
        return -1;
    }
    uint64_t sseq = 0;
    char shash[HEX_LEN + 1];
    int state = read_state(a->state_path, &sseq, shash);
    if (state < 0) {
        snprintf(why, whylen, "audit: the chain state %s is unreadable or malformed",
                 a->state_path);
        free(line);
        return -1;
    }
    if (got == 1) {
        char prev[HEX_LEN + 1];
        int rc = check_line(line, len, a->key, a->keylen, &a->seq, prev, a->prev, err, sizeof err);
        free(line);
        if (rc != 0) {
            snprintf(why, whylen,
                     "audit.file %s: its last record does not verify (%s): check the file with "
                     "ghl-gateway audit-verify",
                     a->path, err);
            return -1;
        }
        if (state == 1 && sseq == a->seq && strcmp(shash, a->prev) != 0) {
            snprintf(why, whylen,
                     "audit.file %s: its last record (seq %llu) is not the one %s remembers: "
                     "the file was replaced or altered",
                     a->path, (unsigned long long)a->seq, a->state_path);
            return -1;
        }
        if (state == 1 && sseq > a->seq) {
            snprintf(why, whylen,
                     "audit.file %s ends at seq %llu but the log had reached seq %llu (%s): "
                     "records are missing",
                     a->path, (unsigned long long)a->seq, (unsigned long long)sseq, a->state_path);
            return -1;
        }
    } else if (state == 1) {
        a->seq = sseq; /* a new file after a rotation: continue the old one's chain */
        memcpy(a->prev, shash, sizeof a->prev);
    }
    a->st.last_seq = a->seq;
    return 0;
}

struct gw_audit *gw_audit_open(const struct gw_config *cfg, char *why, size_t whylen)
{
    struct gw_audit *a = audit_new(cfg, why, whylen);
    if (a == NULL)
        return NULL;
    if (a->to_stdout && (a->out_fd = fcntl(1, F_DUPFD_CLOEXEC, 3)) < 0) {
        snprintf(why, whylen, "audit.stdout: %s", strerror(errno));
        goto bad;
    }
    if (a->path == NULL)
        return a;
    a->fd = open_file(a->path);
    if (a->fd < 0) {
        snprintf(why, whylen, "audit.file: cannot open %s: %s", a->path, strerror(errno));
        goto bad;
    }
    if (continue_chain(a, why, whylen) != 0)
        goto bad;
    return a;
bad:
    gw_audit_free(a);
    return NULL;
}

int gw_audit_inspect(const struct gw_config *cfg, uint64_t *seq, char *why, size_t whylen)
{
    *seq = 0;
    struct gw_audit *a = audit_new(cfg, why, whylen);
    if (a == NULL)
        return -1;
    int rc = a->path ? continue_chain(a, why, whylen) : 0;
    *seq = a->seq;
    gw_audit_free(a);
    return rc;
}

bool gw_audit_enabled(const struct gw_audit *a)
{
    return a && (a->path || a->to_stdout);
}

/* ---- the writer ---- */

struct buf {
    char *p;
    size_t n, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (n == 0) /* b->p may still be NULL, and memcpy() must not see it even for 0 bytes */
        return 0;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* Appends the line of it (seq and prev advanced in *seq / prev). */
static int compose(const struct gw_audit *a, const struct gw_audit_item *it, uint64_t seq,
                   char prev[HEX_LEN + 1], struct buf *out)
{
    char ts[40], head[128];
    gw_log_iso8601(gw_now_ms(), ts, sizeof ts);
    int hn = snprintf(head, sizeof head, "{\"v\":1,\"seq\":%llu,\"ts\":\"%s\",",
                      (unsigned long long)seq, ts);
    if (hn < 0 || (size_t)hn >= sizeof head) /* a cut head would be signed into the chain */
        return -1;
    size_t start = out->n;
    if (buf_add(out, head, (size_t)hn) != 0 || buf_add(out, it->members, strlen(it->members)) ||
        buf_add(out, ",\"prev\":\"", 9) || buf_add(out, prev, HEX_LEN) || buf_add(out, "\"}", 2))
        return -1;
    char hash[HEX_LEN + 1];
    if (chain_hash(a->key, a->keylen, prev, out->p + start, out->n - start, hash) != 0)
        return -1;
    out->n--; /* the closing brace: the hash member goes before it */
    if (buf_add(out, ",\"hash\":\"", 9) || buf_add(out, hash, HEX_LEN) || buf_add(out, "\"}\n", 3))
        return -1;
    memcpy(prev, hash, HEX_LEN + 1);
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The file's size, or -1 when it is not a regular file (nothing to cut back). */
static off_t file_size(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : -1;
}

/* Writes b to the sinks; with sync, syncs the file. Returns 0, or -1 with why, the file cut
 * back to `before` (its size before the records being written: no partial line stays). */
static int flush_batch(struct gw_audit *a, const struct buf *b, bool sync, off_t before, char *why,
                       size_t whylen)
{
    if (a->fd >= 0) {
        if (write_all(a->fd, b->p, b->n) != 0 ||
            (sync && fdatasync(a->fd) != 0 && errno != EINVAL && errno != EROFS)) {
            int e = errno;
            if (before >= 0 && ftruncate(a->fd, before) != 0)
                gw_log_error("audit: cannot cut a failed write off %s: %s", a->path,
                             strerror(errno));
            snprintf(why, whylen, "audit.file %s: %s", a->path, strerror(e));
            return -1;
        }
        if (sync) {
            pthread_mutex_lock(&a->mu);
            a->st.fsyncs++;
            pthread_mutex_unlock(&a->mu);
        }
        if (a->out_fd >= 0 && write_all(a->out_fd, b->p, b->n) != 0)
            gw_log_error("audit.stdout: %s (the file has the records)", strerror(errno));
        return 0;
    }
    if (a->out_fd >= 0 && write_all(a->out_fd, b->p, b->n) != 0) {
        snprintf(why, whylen, "audit.stdout: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Syncs records written without a sync (see write_items). A failure is a write failure:
 * not ready until a write succeeds. */
static void sync_file(struct gw_audit *a)
{
    a->unsynced = false;
    a->last_sync = now_s();
    if (a->fd < 0)
        return;
    if (fdatasync(a->fd) != 0 && errno != EINVAL && errno != EROFS) {
        int e = errno;
        pthread_mutex_lock(&a->mu);
        a->st.write_failures++;
        if (a->ready)
            gw_log_error("audit: sync %s: %s; changes are refused (503) until a write succeeds",
                         a->path, strerror(e));
        a->ready = false;
        snprintf(a->why, sizeof a->why, "audit.file %s: %s", a->path, strerror(e));
        pthread_mutex_unlock(&a->mu);
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->st.fsyncs++;
    pthread_mutex_unlock(&a->mu);
}

static void reopen_file(struct gw_audit *a)
{
    if (a->path == NULL)
        return;
    int fd = open_file(a->path);
    if (fd < 0) {
        gw_log_error("audit: SIGUSR1: cannot reopen %s: %s; still writing the old file", a->path,
                     strerror(errno));
        return;
    }
    if (a->unsynced) /* the renamed file keeps every record it was given */
        sync_file(a);
    close(a->fd);
    a->fd = fd;
    write_state(a); /* a new empty file continues this chain, even across a restart */
    gw_log_info("audit: SIGUSR1: %s reopened at seq %llu", a->path, (unsigned long long)a->seq);
}

/* Writes the items of list (in order), then tells the waiting ones. Returns the items that
 * failed and nobody waits for (to retry), in order. */
static struct gw_audit_item *write_items(struct gw_audit *a, struct gw_audit_item *list)
{
    struct buf b = {0};
    uint64_t seq = a->seq;
    char prev[HEX_LEN + 1];
    memcpy(prev, a->prev, sizeof prev);
    char why[300] = "";
    bool ok = true;
    size_t n = 0;
    uint64_t counts[GW_AUDIT_EVENTS] = {0};
    double t0 = now_s();
    off_t before = file_size(a->fd);
    for (struct gw_audit_item *it = list; it && ok; it = it->next) {
        if (seq >= MAX_SEQ) {
            snprintf(why, sizeof why, "seq %llu is the last a chain can hold",
                     (unsigned long long)seq);
            ok = false;
            break;
        }
        if (compose(a, it, seq + 1, prev, &b) != 0) {
            snprintf(why, sizeof why, "out of memory composing a record");
            ok = false;
            break;
        }
        it->seq = ++seq;
        counts[it->event]++;
        n++;
        if (b.n >= BATCH_BYTES && it->next) {
            /* one write per BATCH_BYTES; the sync comes once, at the end */
            ok = flush_batch(a, &b, false, before, why, sizeof why) == 0;
            b.n = 0;
        }
    }
    /* Group commit: a batch is synced when a request waits for one of its records (an intent:
     * the change goes upstream only once it is on disk), or when the last sync is SYNC_LAG_S
     * old. Other batches (outcomes, denials, reads) are written now and synced with the next
     * synced batch, or when the writer goes idle: so concurrent changes do not queue behind
     * syncs nobody waits for. */
    bool waited = false;
    for (struct gw_audit_item *it = list; it && !waited; it = it->next)
        waited = it->done != NULL;
    bool sync = a->fsync && (waited || t0 - a->last_sync >= SYNC_LAG_S);
    if (!ok) {
        if (before >= 0 && ftruncate(a->fd, before) != 0) /* a part may have been written */
            gw_log_error("audit: cannot cut a failed write off %s: %s", a->path, strerror(errno));
    } else if ((ok = flush_batch(a, &b, sync, before, why, sizeof why) == 0) && a->fsync &&
               a->fd >= 0) {
        a->unsynced = !sync;
        if (sync)
            a->last_sync = t0;
    }
    free(b.p);
    double dt = now_s() - t0;
    pthread_mutex_lock(&a->mu);
    if (ok) {
        a->seq = seq;
        memcpy(a->prev, prev, sizeof prev);
        for (int e = 0; e < GW_AUDIT_EVENTS; e++)
            a->st.records[e] += counts[e];
        a->st.last_seq = seq;
        a->st.batches++;
        a->st.write_seconds_sum += dt;
        for (int i = 0; i < 8; i++)
            if (dt <= gw_audit_write_buckets[i])
                a->st.write_le[i]++;
        if (!a->ready)
            gw_log_info("audit: writing again (seq %llu)", (unsigned long long)seq);
        a->ready = true;
    } else {
        a->st.write_failures++;
        if (a->ready)
            gw_log_error("audit: %s; changes are refused (503) until a write succeeds", why);
        a->ready = false;
        snprintf(a->why, sizeof a->why, "%s", why);
    }
    pthread_mutex_unlock(&a->mu);
    /* a failed batch: the whole batch is off the file (nothing was acknowledged) */
    struct gw_audit_item *retry = NULL, **rt = &retry;
    for (struct gw_audit_item *it = list, *next; it; it = next) {
        next = it->next;
        it->next = NULL;
        if (it->done) {
            it->ok = ok;
            event_active(it->done, EV_TIMEOUT, 0); /* it belongs to its submitter now */
        } else if (ok) {
            free(it->members);
            free(it);
        } else {
            *rt = it;
            rt = &it->next;
        }
    }
    return retry;
}

static void *writer_main(void *arg)
{
    struct gw_audit *a = arg;
    struct gw_audit_item *retry = NULL;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        if (a->unsynced && a->head == NULL && retry == NULL && !a->stop && !a->reopen) {
            pthread_mutex_unlock(&a->mu); /* idle: put what was written on disk */
            sync_file(a);
            continue;
        }
        while (a->head == NULL && retry == NULL && !a->stop && !a->reopen) {
            a->waiting = true;
            pthread_cond_wait(&a->cv, &a->mu);
            a->waiting = false;
        }
        if (retry && a->head == NULL && !a->stop && !a->reopen && a->unsynced) {
            pthread_mutex_unlock(&a->mu); /* what was written before the failure: on disk */
            sync_file(a);
            continue;
        }
        if (retry && a->head == NULL && !a->stop && !a->reopen) {
            /* after a failure: try again in a while, or as soon as more arrives */
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_sec += RETRY_MS / 1000;
            a->waiting = true;
            pthread_cond_timedwait(&a->cv, &a->mu, &t);
            a->waiting = false;
        }
        bool reopen = a->reopen, stop = a->stop;
        a->reopen = false;
        struct gw_audit_item *list = a->head;
        a->head = a->tail = NULL;
        a->qlen = 0;
        pthread_mutex_unlock(&a->mu);
        if (reopen)
            reopen_file(a);
        if (retry) { /* the failed records go first: the file keeps the order of events */
            struct gw_audit_item *t = retry;
            while (t->next)
                t = t->next;
            t->next = list;
            list = retry;
        }
        retry = list ? write_items(a, list) : NULL;
        if (stop) { /* submit refuses from now on: one pass wrote what was queued */
            if (a->unsynced)
                sync_file(a);
            size_t lost = 0;
            for (struct gw_audit_item *it = retry, *next; it; it = next) {
                next = it->next;
                free(it->members);
                free(it);
                lost++;
            }
            if (lost)
                gw_log_error("audit: %zu record(s) could not be written before stopping", lost);
            pthread_mutex_lock(&a->mu);
            a->st.lost += lost;
            pthread_mutex_unlock(&a->mu);
            return NULL;
        }
    }
}

int gw_audit_start(struct gw_audit *a)
{
    if (!gw_audit_enabled(a) || a->started)
        return 0;
    if (pthread_create(&a->thread, NULL, writer_main, a) != 0)
        return -1;
    a->started = true;
    return 0;
}

void gw_audit_stop(struct gw_audit *a)
{
    if (a == NULL || !a->started)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->started = false;
    if (a->fd >= 0 && fsync(a->fd) != 0 && errno != EINVAL)
        gw_log_error("audit: fsync %s at stop: %s", a->path, strerror(errno));
    write_state(a);
}

void gw_audit_free(struct gw_audit *a)
{
    if (a == NULL)
        return;
    gw_audit_stop(a);
    for (struct gw_audit_item *it = a->head, *next; it; it = next) {
        next = it->next;
        if (it->done) {
            it->ok = false;
            continue; /* its submitter's */
        }
        free(it->members);
        free(it);
    }
    if (a->fd >= 0)
        close(a->fd);
    if (a->out_fd >= 0)
        close(a->out_fd);
    if (a->key)
        OPENSSL_clear_free(a->key, a->keylen + 1);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a->path);
    free(a->state_path);
    free(a);
}

void gw_audit_reopen(struct gw_audit *a)
{
    if (a == NULL || !a->started)
        return;
    pthread_mutex_lock(&a->mu);
    a->reopen = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

bool gw_audit_fits(const struct gw_audit_item *it)
{
    return it->members != NULL && strlen(it->members) <= MAX_LINE - 1024;
}

int gw_audit_submit_list(struct gw_audit *a, struct gw_audit_item *head, size_t n)
{
    struct gw_audit_item *tail = NULL;
    for (struct gw_audit_item *it = head; it; it = it->next) {
        if (!gw_audit_fits(it)) {
            gw_log_error("audit: a %s record of more than %u bytes is refused",
                         gw_audit_event_name(it->event), MAX_LINE - 1024);
            return -1;
        }
        tail = it;
    }
    if (tail == NULL)
        return 0;
    pthread_mutex_lock(&a->mu);
    if (a->qlen + n > MAX_QUEUE || a->stop || !a->started) {
        pthread_mutex_unlock(&a->mu);
        return -1;
    }
    if (a->tail)
        a->tail->next = head;
    else
        a->head = head;
    a->tail = tail;
    a->qlen += n;
    if (a->waiting)
        pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

int gw_audit_submit(struct gw_audit *a, struct gw_audit_item *it)
{
    it->next = NULL;
    return gw_audit_submit_list(a, it, 1);
}

struct gw_audit_item *gw_audit_item_new(enum gw_audit_event e, char *members)
{
    struct gw_audit_item *it = members ? calloc(1, sizeof *it) : NULL;
    if (it == NULL) {
        free(members);
        return NULL;
    }
    it->event = e;
    it->members = members;
    return it;
}

void gw_audit_lost(struct gw_audit *a, struct gw_audit_item *it)
{
    const char *e = it ? gw_audit_event_name(it->event) : "";
    if (it) {
        free(it->members);
        free(it);
    }
    pthread_mutex_lock(&a->mu);
    a->st.lost++;
    pthread_mutex_unlock(&a->mu);
    gw_log_error("audit: a %s%srecord was lost (%s)", e, *e ? " " : "",
                 *e ? "the queue is full or the log is stopping" : "out of memory");
}

void gw_audit_post(struct gw_audit *a, enum gw_audit_event e, char *members)
{
    if (members == NULL || !gw_audit_enabled(a)) {
        free(members);
        return;
    }
    struct gw_audit_item *it = gw_audit_item_new(e, members);
    if (it == NULL) {
        pthread_mutex_lock(&a->mu);
        a->st.lost++;
        pthread_mutex_unlock(&a->mu);
        gw_log_error("audit: a %s record was lost (out of memory)", gw_audit_event_name(e));
        return;
    }
    if (gw_audit_submit(a, it) != 0)
        gw_audit_lost(a, it);
}

void gw_audit_get_stats(struct gw_audit *a, struct gw_audit_stats *out)
{
    pthread_mutex_lock(&a->mu);
    *out = a->st;
    pthread_mutex_unlock(&a->mu);
}

bool gw_audit_ready(struct gw_audit *a, char *why, size_t whylen)
{
    pthread_mutex_lock(&a->mu);
    bool r = a->ready;
    if (!r)
        snprintf(why, whylen, "%s", a->why);
    pthread_mutex_unlock(&a->mu);
    return r;
}

char *gw_audit_members(const cJSON *o)
{
    char *t = cJSON_PrintUnformatted(o);
    if (t == NULL)
        return NULL;
    size_t n = strlen(t);
    if (n < 2 || t[0] != '{' || t[n - 1] != '}') {
        cJSON_free(t);
        return NULL;
    }
    char *m = malloc(n - 1);
    if (m) {
        memcpy(m, t + 1, n - 2);
        m[n - 2] = '\0';
    }
    cJSON_free(t);
    return m;
}

/* ---- audit-verify ---- */

int gw_audit_verify(const char *const *files, size_t nfiles, const unsigned char *key,
                    size_t keylen, uint64_t anchor_seq, const char *anchor_hash, bool cont,
                    FILE *out, FILE *err)
{
    uint64_t last = 0, count = 0, first_seq = 1;
    char prev[HEX_LEN + 1];
    memcpy(prev, zeros, sizeof prev);
    bool first = true, anchored = false;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (size_t f = 0; f < nfiles && rc == 0; f++) {
        FILE *in = fopen(files[f], "re");
        if (in == NULL) {
            fprintf(err, "%s: cannot read: %s\n", files[f], strerror(errno));
            rc = 2;
            break;
        }
        size_t lineno = 0;
        ssize_t got;
        while (rc == 0 && (got = getline(&line, &cap, in)) >= 0) {
            lineno++;
            size_t n = (size_t)got;
            uint64_t seq;
            char p[HEX_LEN + 1], h[HEX_LEN + 1], why[200];
            if (n == 0 || line[n - 1] != '\n') {
                fprintf(err, "%s:%zu: the last line is incomplete (no newline)\n", files[f],
                        lineno);
                rc = 1;
            } else if (n - 1 > MAX_LINE) {
                fprintf(err, "%s:%zu: the line is longer than %u bytes\n", files[f], lineno,
                        MAX_LINE);
                rc = 1;
            } else if (check_line(line, n - 1, key, keylen, &seq, p, h, why, sizeof why) != 0) {
                fprintf(err, "%s:%zu: %s\n", files[f], lineno, why);
                rc = 1;
            } else if (first && cont) {
                fprintf(out, "continuing from seq %llu, prev %s\n", (unsigned long long)seq, p);
                first_seq = seq;
            } else if (seq != last + 1) {
                fprintf(err,
                        "%s:%zu: seq %llu follows seq %llu (a record is missing, moved or "
                        "inserted)\n",
                        files[f], lineno, (unsigned long long)seq, (unsigned long long)last);
                rc = 1;
            } else if (strcmp(p, prev) != 0) {
                fprintf(err, "%s:%zu: prev does not match the hash of the record before%s\n",
                        files[f], lineno, first ? " (a log starts with 64 zeros)" : "");
                rc = 1;
            }
            if (rc != 0)
                break;
            first = false;
            last = seq;
            memcpy(prev, h, sizeof prev);
            count++;
            if (anchor_seq && seq == anchor_seq) {
                if (strcmp(h, anchor_hash) != 0) {
                    fprintf(err, "%s:%zu: seq %llu does not have the anchor's hash\n", files[f],
                            lineno, (unsigned long long)seq);
                    rc = 1;
                }
                anchored = true;
            }
        }
        if (rc == 0 && ferror(in)) {
            fprintf(err, "%s: cannot read: %s\n", files[f], strerror(errno));
            rc = 2;
        }
        fclose(in);
    }
    free(line);
    if (rc != 0)
        return rc;
    if (anchor_seq && !anchored && first_seq > anchor_seq) {
        fprintf(err, "the log starts at seq %llu, after the anchor seq %llu\n",
                (unsigned long long)first_seq, (unsigned long long)anchor_seq);
        return 1;
    }
    if (anchor_seq && !anchored) {
        fprintf(err,
                "the log ends at seq %llu and does not reach the anchor seq %llu (its tail is "
                "missing)\n",
                (unsigned long long)last, (unsigned long long)anchor_seq);
        return 1;
    }
    fprintf(out, "%llu records verified\n", (unsigned long long)count);
    return 0;
}
