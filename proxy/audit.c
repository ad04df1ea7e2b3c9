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
#define BATCH_BYTES (4u << 20)      /* one write(); also the most kept unsynced (pending) */
#define MAX_KEY_FILE 4096           /* the HMAC key file */
#define MIN_KEY_BYTES 32            /* HMAC-SHA256: at least the hash's length */
#define RETRY_MS 1000               /* after a failed write */
#define SYNC_LAG_S 0.1 /* records nobody waits for are on disk within this, or when idle */
#define HASH_SUFFIX_LEN (9 + HEX_LEN + 2) /* ,"hash":"<64 hex>"} */
#define MAX_TORN_FILES 1000               /* <file>.torn, .torn.1 ... .torn.999 */
_Static_assert(GW_AUDIT_MAX_MEMBERS + 1024 == MAX_LINE, "a record's line is its members and 1 KiB");

static const char zeros[HEX_LEN + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

const double gw_audit_write_buckets[8] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1};

struct gw_audit {
    char *replica;    /* audit.replica_id: the chain's replica for the log's life; NULL: none */
    char *path;       /* NULL: no file sink */
    char *state_path; /* <path>.chain */
    char *dir;        /* their folder: synced after a create or a rename in it */
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

    /* the chain's end, the last record written: the writer's (read under mu for the stats) */
    uint64_t seq;
    char prev[HEX_LEN + 1];
    /* The file, the writer's. regular: synced (with audit.fsync) and cut back on failure.
     * durable: its size at the last successful sync. pending: the bytes written after that
     * without a sync (records nobody waited for), with their last seq and counts: written
     * again after a failure (rewrite: the file past durable must be cut first). */
    bool regular;
    off_t durable;
    struct gw_buf pending; /* at most BATCH_BYTES */
    uint64_t pending_seq, pending_counts[GW_AUDIT_EVENTS];
    bool rewrite;
    double last_sync;
    bool state_writing; /* the state file says "writing" for this file */

    /* under mu */
    struct gw_audit_stats st;
    bool ready;
    char why[300];
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

#define REPLICA_BUF (GW_REPLICA_ID_MAX + 1)

/* A record's "replica" into out ("" when it has none: written before replica ids). Returns 0,
 * or -1 when the member is there but no replica id. */
static int record_replica(const cJSON *j, char out[REPLICA_BUF])
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "replica");
    out[0] = '\0';
    if (r == NULL)
        return 0;
    if (!cJSON_IsString(r) || !gw_config_replica_id_ok(r->valuestring))
        return -1;
    snprintf(out, REPLICA_BUF, "%s", r->valuestring);
    return 0;
}

/* Checks one line (without its newline): its shape, its body as strict JSON, and its hash
 * over its own prev. Fills seq, prev, hash and replica ("" : none). Returns 0, or -1 with
 * why. */
static int check_line(const char *line, size_t len, const unsigned char *key, size_t keylen,
                      uint64_t *seq, char prev[HEX_LEN + 1], char hash[HEX_LEN + 1],
                      char replica[REPLICA_BUF], char *why, size_t whylen)
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
    } else if (record_replica(j, replica) != 0) {
        snprintf(why, whylen, "its replica is not a replica id");
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

/* A file holds one replica's chain: records without a replica (written before replica ids)
 * may only come before the first that names one (a log upgraded in place). have: what the
 * file's records named so far ("" : none), updated with rec. Returns 0, or -1 with why. */
static int one_replica(char have[REPLICA_BUF], const char *rec, char *why, size_t whylen)
{
    if (rec[0] == '\0' && have[0] != '\0') {
        snprintf(why, whylen,
                 "a record without a replica after records of replica %s (a file holds one "
                 "replica's chain)",
                 have);
        return -1;
    }
    if (rec[0] != '\0' && have[0] != '\0' && strcmp(rec, have) != 0) {
        snprintf(why, whylen,
                 "a record of replica %s in a file of replica %s (a file holds one replica's "
                 "chain)",
                 rec, have);
        return -1;
    }
    if (rec[0] != '\0')
        snprintf(have, REPLICA_BUF, "%s", rec);
    return 0;
}

/* ---- opening: where the chain continues ---- */

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

/* fsync of a folder: a file created or renamed in it is there after a crash. Returns 0, or -1
 * with errno. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* The last line of fd, which ends with a newline, without it into *line. Returns 0, or -1
 * with why (unreadable, or a line past MAX_LINE). */
static int last_line(int fd, off_t end, char **line, size_t *len, char *why, size_t whylen)
{
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
            return 0;
        }
        free(buf);
        if (want >= (size_t)MAX_LINE + 2) {
            snprintf(why, whylen, "its last line is longer than %u bytes", MAX_LINE);
            return -1;
        }
        want = want * 4 < (size_t)MAX_LINE + 2 ? want * 4 : (size_t)MAX_LINE + 2;
    }
}

/* The number of newlines in fd's first end bytes (the number of its last line), for messages. */
static size_t count_lines(int fd, off_t end)
{
    char buf[65536];
    size_t n = 0;
    for (off_t at = 0; at < end;) {
        ssize_t r = pread(fd, buf, sizeof buf, at);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r && at + i < end; i++)
            n += buf[i] == '\n';
        at += r;
    }
    return n;
}

/* The chain state file: the chain's end, and whether it is known to be the last record
 * written (clean). */
struct state {
    uint64_t seq;
    char hash[HEX_LEN + 1];
    bool clean;
};

/* "<seq> <hash> clean|writing\n" (the newline may be missing; a state without the word, from
 * an older version, reads as writing). Returns 1 with it, 0 when absent, -1 when unreadable
 * or malformed. */
static int read_state(const char *path, struct state *s)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    char buf[128];
    int rc = -1;
    if (fgets(buf, sizeof buf, f) && buf[0] >= '0' && buf[0] <= '9') { /* no sign, no space */
        char *end;
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        if (errno == 0 && end != buf && *end == ' ' && v < MAX_SEQ && strlen(end + 1) >= HEX_LEN &&
            is_hex64(end + 1)) {
            const char *rest = end + 1 + HEX_LEN;
            bool clean = strncmp(rest, " clean", 6) == 0;
            if (clean)
                rest += 6;
            else if (strncmp(rest, " writing", 8) == 0)
                rest += 8;
            if (*rest == '\n' || *rest == '\0') {
                s->seq = v;
                memcpy(s->hash, end + 1, HEX_LEN);
                s->hash[HEX_LEN] = '\0';
                s->clean = clean;
                rc = 1;
            }
        }
    }
    fclose(f);
    return rc;
}

/* Saves the chain's end (a->seq, a->prev) as clean or writing: written to <state>.tmp, synced,
 * renamed over the state file, and the folder synced, so a crash leaves the old state or the
 * new one. Returns 0, or -1 (logged). */
static int write_state(struct gw_audit *a, bool clean)
{
    if (a->state_path == NULL)
        return 0;
    char *tmp = NULL, buf[128];
    if (asprintf(&tmp, "%s.tmp", a->state_path) < 0) {
        gw_log_error("audit: cannot save the chain state %s: out of memory", a->state_path);
        return -1;
    }
    int n = snprintf(buf, sizeof buf, "%llu %s %s\n", (unsigned long long)a->seq, a->prev,
                     clean ? "clean" : "writing");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int rc = fd >= 0 && n > 0 && write_all(fd, buf, (size_t)n) == 0 && fsync(fd) == 0 ? 0 : -1;
    int e = errno;
    if (fd >= 0 && close(fd) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && (rename(tmp, a->state_path) != 0 || sync_dir(a->dir) != 0)) {
        rc = -1;
        e = errno;
    }
    if (rc != 0)
        gw_log_error("audit: cannot save the chain state %s: %s", a->state_path, strerror(e));
    free(tmp);
    return rc;
}

/* What an audit file holds (scan_file). */
struct tail {
    bool exists, regular; /* a device or a pipe: exists, not regular (nothing to read back) */
    off_t size;
    uint64_t seq; /* the last whole record (0: none), its hash and replica ("" : none) */
    char hash[HEX_LEN + 1];
    char replica[REPLICA_BUF];
    uint64_t records; /* whole records verified (a whole scan only) */
    off_t cut;        /* with torn: where the torn bytes start */
    size_t torn;      /* the bytes after the last newline (0: the file ends with one) */
    char torn_head[40];
};

/* Verifies every line of fd (its first record taken as given, as audit-verify --continue
 * does), stopping at a last line without newline (torn). s: the state, whose record, if in the
 * file, must have its hash. Returns 0, -1 with why "FILE:LINE: ..." for damage, -2 when the
 * file cannot be read. */
static int scan_whole(int fd, const char *path, const unsigned char *key, size_t keylen,
                      const struct state *s, const char *state_path, struct tail *t, char *why,
                      size_t whylen)
{
    int dfd = dup(fd);
    FILE *in = dfd >= 0 ? fdopen(dfd, "re") : NULL;
    if (in == NULL) {
        snprintf(why, whylen, "%s: cannot read: %s", path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return -2;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    off_t at = 0;
    ssize_t got;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, in)) > 0) {
        lineno++;
        size_t n = (size_t)got;
        if (line[n - 1] != '\n') { /* getline's last line only */
            if (n > (size_t)MAX_LINE + 1) {
                snprintf(why, whylen,
                         "%s:%zu: the last line has no newline and is longer than a "
                         "record can be (%u bytes): not a torn write",
                         path, lineno, MAX_LINE);
                rc = -1;
                break;
            }
            t->cut = at;
            t->torn = n;
            size_t h = n < sizeof t->torn_head - 1 ? n : sizeof t->torn_head - 1;
            memcpy(t->torn_head, line, h);
            t->torn_head[h] = '\0';
            break;
        }
        uint64_t seq = 0;
        char p[HEX_LEN + 1], h[HEX_LEN + 1], r[REPLICA_BUF], lw[320];
        if (n - 1 > MAX_LINE) {
            snprintf(why, whylen, "%s:%zu: the line is longer than %u bytes", path, lineno,
                     MAX_LINE);
            rc = -1;
        } else if (check_line(line, n - 1, key, keylen, &seq, p, h, r, lw, sizeof lw) != 0 ||
                   one_replica(t->replica, r, lw, sizeof lw) != 0) {
            snprintf(why, whylen, "%s:%zu: %s", path, lineno, lw);
            rc = -1;
        } else if (t->seq != 0 && seq != t->seq + 1) {
            snprintf(why, whylen,
                     "%s:%zu: seq %llu follows seq %llu (a record is missing, moved or inserted)",
                     path, lineno, (unsigned long long)seq, (unsigned long long)t->seq);
            rc = -1;
        } else if (t->seq != 0 && strcmp(p, t->hash) != 0) {
            snprintf(why, whylen, "%s:%zu: prev does not match the hash of the record before", path,
                     lineno);
            rc = -1;
        } else if (s && s->seq == seq && strcmp(s->hash, h) != 0) {
            snprintf(why, whylen,
                     "%s:%zu: the record with seq %llu is not the one %s remembers: the file was "
                     "replaced or altered",
                     path, lineno, (unsigned long long)seq, state_path);
            rc = -1;
        }
        if (rc != 0)
            break;
        t->seq = seq;
        memcpy(t->hash, h, sizeof t->hash);
        t->records++;
        at += (off_t)n;
    }
    if (rc == 0 && ferror(in)) {
        snprintf(why, whylen, "%s: cannot read: %s", path, strerror(errno));
        rc = -2;
    }
    free(line);
    fclose(in);
    return rc;
}

/* What path holds: nothing (absent, empty, not a regular file), its last whole record (only
 * that one verified when the file ends with a newline, unless whole), and a torn last line
 * (then every record before it is verified). Returns 0, -1 with why for damage ("FILE:LINE:
 * ..."), -2 with why when the file cannot be read. */
static int scan_file(const char *path, const unsigned char *key, size_t keylen, bool whole,
                     const struct state *s, const char *state_path, struct tail *t, char *why,
                     size_t whylen)
{
    memset(t, 0, sizeof *t);
    memcpy(t->hash, zeros, sizeof t->hash);
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* the append descriptor cannot read */
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(why, whylen, "%s: cannot read: %s", path, strerror(errno));
        return -2;
    }
    t->exists = true;
    struct stat st;
    char c = '\n', err[300], *line = NULL;
    size_t len = 0;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -2;
    }
    t->regular = S_ISREG(st.st_mode);
    t->size = t->regular ? st.st_size : 0;
    if (t->size == 0) {
        /* empty, or a device (or a pipe): no last line to read */
    } else if (pread(fd, &c, 1, st.st_size - 1) != 1) {
        snprintf(why, whylen, "%s: cannot read: %s", path, strerror(errno));
        rc = -2;
    } else if (whole || c != '\n') {
        rc = scan_whole(fd, path, key, keylen, s, state_path, t, why, whylen);
    } else if (last_line(fd, st.st_size, &line, &len, err, sizeof err) != 0) {
        snprintf(why, whylen, "%s: %s", path, err);
        rc = -2;
    } else {
        char p[HEX_LEN + 1];
        if (check_line(line, len, key, keylen, &t->seq, p, t->hash, t->replica, err, sizeof err) !=
            0) {
            snprintf(why, whylen, "%s:%zu: its last record does not verify (%s)", path,
                     count_lines(fd, st.st_size), err);
            rc = -1;
        }
        free(line);
    }
    close(fd);
    return rc;
}

/* Where the chain continues (see audit.h): from the file's last whole record, or for a file
 * without one, from the state file when that is clean (or when the file holds only the torn
 * first record after it). Fills t and a->seq/prev; changes nothing (a torn last line is cut by
 * the caller). Returns 0, or -1 with why. */
static int continue_chain(struct gw_audit *a, struct tail *t, char *why, size_t whylen)
{
    struct state s;
    int have = read_state(a->state_path, &s);
    if (have < 0) {
        snprintf(why, whylen, "audit: the chain state %s is unreadable or malformed",
                 a->state_path);
        return -1;
    }
    char err[600];
    int rc = scan_file(a->path, a->key, a->keylen, false, have ? &s : NULL, a->state_path, t, err,
                       sizeof err);
    if (rc != 0) {
        snprintf(why, whylen, "audit.file %s%s", err,
                 rc == -2 ? ""
                          : ": check the file with ghl-gateway audit-verify (only a torn last "
                            "line is repaired at start)");
        return -1;
    }
    if (t->seq > 0) {
        if (have && s.seq == t->seq && strcmp(s.hash, t->hash) != 0) {
            snprintf(why, whylen,
                     "audit.file %s: its last record (seq %llu) is not the one %s remembers: "
                     "the file was replaced or altered",
                     a->path, (unsigned long long)t->seq, a->state_path);
            return -1;
        }
        if (have && s.seq > t->seq) {
            snprintf(why, whylen,
                     "audit.file %s ends at seq %llu but the log had reached seq %llu (%s): "
                     "records are missing",
                     a->path, (unsigned long long)t->seq, (unsigned long long)s.seq, a->state_path);
            return -1;
        }
        if (a->replica && t->replica[0] && strcmp(t->replica, a->replica) != 0) {
            snprintf(why, whylen,
                     "audit.file %s holds the chain of replica %s, but audit.replica_id is %s: a "
                     "chain belongs to one replica (give each replica its own audit.file, or set "
                     "audit.replica_id to %s to continue this chain)",
                     a->path, t->replica, a->replica, t->replica);
            return -1;
        }
        a->seq = t->seq;
        memcpy(a->prev, t->hash, sizeof a->prev);
    } else {
        /* A torn line alone is the first record after the state's (a crash during the first
         * write to this file) when it starts with that seq: nothing whole came after it. */
        char next[48];
        snprintf(next, sizeof next, "{\"v\":1,\"seq\":%llu,",
                 (unsigned long long)(have ? s.seq + 1 : 1));
        bool torn_next = t->torn > 0 && strncmp(t->torn_head, next, strlen(next)) == 0;
        if (have && !s.clean && !torn_next) {
            snprintf(why, whylen,
                     "audit.file %s %s, but the chain state %s knows seq %llu and records may "
                     "have been written after it (no clean stop since it was saved): continuing "
                     "would fork the chain. Restore the file that holds the records after seq "
                     "%llu as %s (the file moved aside, or a rotated file not yet reopened); a "
                     "torn last line is repaired at start. Moving a file aside is never the "
                     "recovery",
                     a->path,
                     !t->exists    ? "is missing"
                     : !t->regular ? "is not a regular file (its records cannot be read back)"
                     : t->torn     ? "holds no whole record (only a torn line)"
                                   : "is empty",
                     a->state_path, (unsigned long long)s.seq, (unsigned long long)s.seq, a->path);
            return -1;
        }
        if (have) {
            a->seq = s.seq; /* a new file after a rotation or a clean stop */
            memcpy(a->prev, s.hash, sizeof a->prev);
        }
    }
    a->st.last_seq = a->seq;
    return 0;
}

/* Moves the torn bytes of path (from t->cut to the end) into path.torn (.torn.N when that
 * exists), synced with its folder before path is cut and synced: a crash in between leaves the
 * bytes in both. Fills torn_path. Returns 0, or -1 with why. */
static int cut_torn(const char *path, const char *dir, const struct tail *t, char *torn_path,
                    size_t tplen, char *why, size_t whylen)
{
    int out = -1;
    for (int i = 0; i < MAX_TORN_FILES && out < 0; i++) {
        int n = i ? snprintf(torn_path, tplen, "%s.torn.%d", path, i)
                  : snprintf(torn_path, tplen, "%s.torn", path);
        if (n < 0 || (size_t)n >= tplen) {
            errno = ENAMETOOLONG;
            break;
        }
        out = open(torn_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (out < 0 && errno != EEXIST)
            break;
    }
    if (out < 0) {
        snprintf(why, whylen, "cannot create %s: %s", torn_path, strerror(errno));
        return -1;
    }
    int in = open(path, O_RDWR | O_CLOEXEC);
    char buf[65536];
    int rc = in >= 0 ? 0 : -1;
    for (off_t at = t->cut; rc == 0 && at < t->size;) {
        size_t want = t->size - at < (off_t)sizeof buf ? (size_t)(t->size - at) : sizeof buf;
        ssize_t r = pread(in, buf, want, at);
        if (r <= 0 || write_all(out, buf, (size_t)r) != 0)
            rc = -1;
        at += r > 0 ? r : 0;
    }
    if (rc == 0 &&
        (fsync(out) != 0 || sync_dir(dir) != 0 || ftruncate(in, t->cut) != 0 || fsync(in) != 0))
        rc = -1;
    int e = errno;
    if (close(out) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (in >= 0)
        close(in);
    if (rc != 0)
        snprintf(why, whylen, "cannot move its torn last line to %s: %s", torn_path, strerror(e));
    return rc;
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* The folder of path, for sync_dir (malloc'd). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
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
    a->pending = (struct gw_buf)GW_BUF_INIT(BATCH_BYTES);
    memcpy(a->prev, zeros, sizeof a->prev);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->to_stdout = cfg->audit.to_stdout;
    a->fsync = cfg->audit.fsync;
    char err[300];
    if (cfg->audit.replica_id && (a->replica = strdup(cfg->audit.replica_id)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto bad;
    }
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
        a->dir = a->path ? dir_of(a->path) : NULL;
        if (a->path == NULL || a->dir == NULL ||
            asprintf(&a->state_path, "%s.chain", a->path) < 0) {
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
    struct tail t;
    if (continue_chain(a, &t, why, whylen) != 0)
        goto bad;
    if (t.torn > 0) { /* as a write-ahead log's recovery does: a human is not needed for it */
        char torn[4200], err[400];
        if (cut_torn(a->path, a->dir, &t, torn, sizeof torn, err, sizeof err) != 0) {
            snprintf(why, whylen, "audit.file %s: %s", a->path, err);
            goto bad;
        }
        a->st.repairs++;
        gw_log_warn("audit: %s ended in a torn line (%zu bytes: a crash during a write; no "
                    "change was sent on it): moved to %s; the chain continues from seq %llu",
                    a->path, t.torn, torn, (unsigned long long)a->seq);
    }
    a->fd = open_file(a->path);
    struct stat st;
    if (a->fd < 0 || fstat(a->fd, &st) != 0) {
        snprintf(why, whylen, "audit.file: cannot open %s: %s", a->path, strerror(errno));
        goto bad;
    }
    a->regular = S_ISREG(st.st_mode);
    a->durable = a->regular ? st.st_size : 0;
    if (a->regular && sync_dir(a->dir) != 0) { /* the file, if just created, survives a crash */
        snprintf(why, whylen, "audit.file %s: cannot sync its folder %s: %s", a->path, a->dir,
                 strerror(errno));
        goto bad;
    }
    return a;
bad:
    gw_audit_free(a);
    return NULL;
}

int gw_audit_inspect(const struct gw_config *cfg, uint64_t *seq, char *note, size_t notelen,
                     char *why, size_t whylen)
{
    *seq = 0;
    if (notelen)
        note[0] = '\0';
    struct gw_audit *a = audit_new(cfg, why, whylen);
    if (a == NULL)
        return -1;
    struct tail t;
    int rc = a->path ? continue_chain(a, &t, why, whylen) : 0;
    if (rc == 0 && a->path && t.torn > 0)
        snprintf(note, notelen,
                 "%s ends in a torn line (%zu bytes): run moves it to %s.torn (.torn.N when that "
                 "exists) and continues from seq %llu",
                 a->path, t.torn, a->path, (unsigned long long)a->seq);
    *seq = a->seq;
    gw_audit_free(a);
    return rc;
}

bool gw_audit_enabled(const struct gw_audit *a)
{
    return a && (a->path || a->to_stdout);
}

const char *gw_audit_replica(const struct gw_audit *a)
{
    return a ? a->replica : NULL;
}

/* ---- the writer ---- */

/* Appends the line of it (seq and prev advanced in *seq / prev). */
static int compose(const struct gw_audit *a, const struct gw_audit_item *it, uint64_t seq,
                   char prev[HEX_LEN + 1], struct gw_buf *out)
{
    char ts[40];
    gw_log_iso8601(gw_now_ms(), ts, sizeof ts);
    size_t start = out->n;
    gw_buf_printf(out, "{\"v\":1,\"seq\":%llu,\"ts\":\"%s\",", (unsigned long long)seq, ts);
    gw_buf_str(out, it->members);
    GW_JBUF_LIT(out, ",\"prev\":\"");
    gw_buf_add(out, prev, HEX_LEN);
    GW_JBUF_LIT(out, "\"}");
    char hash[HEX_LEN + 1];
    if (out->failed ||
        chain_hash(a->key, a->keylen, prev, out->p + start, out->n - start, hash) != 0)
        return -1;
    gw_buf_truncate(out, out->n - 1); /* the closing brace: the hash member goes before it */
    GW_JBUF_LIT(out, ",\"hash\":\"");
    gw_buf_add(out, hash, HEX_LEN);
    GW_JBUF_LIT(out, "\"}\n");
    if (out->failed)
        return -1;
    memcpy(prev, hash, HEX_LEN + 1);
    return 0;
}
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A failed write or sync: not ready until a write succeeds again. */
static void note_failure(struct gw_audit *a, const char *why)
{
    pthread_mutex_lock(&a->mu);
    a->st.write_failures++;
    if (a->ready)
        gw_log_error("audit: %s; changes are refused (503) until a write succeeds", why);
    a->ready = false;
    snprintf(a->why, sizeof a->why, "%s", why);
    pthread_mutex_unlock(&a->mu);
}

/* Records up to seq are on disk (or written, where nothing is synced): counted, and the log is
 * ready again. */
static void note_durable(struct gw_audit *a, uint64_t seq, const uint64_t counts[GW_AUDIT_EVENTS],
                         bool synced)
{
    pthread_mutex_lock(&a->mu);
    for (int e = 0; e < GW_AUDIT_EVENTS; e++)
        a->st.records[e] += counts[e];
    a->st.last_seq = seq;
    if (synced)
        a->st.fsyncs++;
    if (!a->ready)
        gw_log_info("audit: writing again (seq %llu)", (unsigned long long)seq);
    a->ready = true;
    pthread_mutex_unlock(&a->mu);
}

/* The stdout sink gets records once the file has them on disk. */
static void copy_to_stdout(struct gw_audit *a, const char *p, size_t n)
{
    if (a->out_fd >= 0 && n > 0 && write_all(a->out_fd, p, n) != 0)
        gw_log_error("audit.stdout: %s (the file has the records)", strerror(errno));
}

/* After a failed write or sync the file is cut back to its durable size: what follows it may
 * be a partial line, or bytes whose pages a failed sync dropped (Linux reports the next sync
 * of such a file as a success). The pending records are written again before the next sync. */
static void cut_back(struct gw_audit *a)
{
    if (!a->regular)
        return; /* a device cannot be cut, nor synced */
    if (ftruncate(a->fd, a->durable) != 0)
        gw_log_error("audit: cannot cut a failed write off %s: %s", a->path, strerror(errno));
    a->rewrite = true;
}

/* Before a write after a failure: the file back to its durable size and the pending records
 * in it again, the same bytes (seq and hashes). Returns 0 or -1 (errno). */
static int rewrite_pending(struct gw_audit *a)
{
    if (!a->rewrite)
        return 0;
    if (ftruncate(a->fd, a->durable) != 0 || write_all(a->fd, a->pending.p, a->pending.n) != 0)
        return -1;
    a->rewrite = false;
    return 0;
}

/* The pending records and b are on disk: counted, copied to stdout, forgotten. */
static void synced(struct gw_audit *a, const struct gw_buf *b, uint64_t seq,
                   const uint64_t counts[GW_AUDIT_EVENTS])
{
    uint64_t all[GW_AUDIT_EVENTS];
    for (int e = 0; e < GW_AUDIT_EVENTS; e++) {
        all[e] = a->pending_counts[e] + (counts ? counts[e] : 0);
        a->pending_counts[e] = 0;
    }
    a->durable += (off_t)(a->pending.n + (b ? b->n : 0));
    copy_to_stdout(a, a->pending.p, a->pending.n);
    if (b)
        copy_to_stdout(a, b->p, b->n);
    gw_buf_reset(&a->pending);
    a->last_sync = now_s();
    note_durable(a, b ? seq : a->pending_seq, all, true);
}

/* Writes b (records up to seq, with counts) to the sinks; with sync, b and every pending record
 * are then on disk. Returns 0, or -1 with why (the file cut back). */
static int put_batch(struct gw_audit *a, struct gw_buf *b, uint64_t seq,
                     const uint64_t counts[GW_AUDIT_EVENTS], bool sync, char *why, size_t whylen)
{
    if (a->fd < 0) { /* stdout alone */
        if (a->out_fd >= 0 && write_all(a->out_fd, b->p, b->n) != 0) {
            snprintf(why, whylen, "audit.stdout: %s", strerror(errno));
            return -1;
        }
        note_durable(a, seq, counts, false);
        return 0;
    }
    /* a crash from here on may leave records after the state: it must not read as clean */
    if (!a->state_writing) {
        if (write_state(a, false) != 0) {
            snprintf(why, whylen, "audit: cannot mark the chain state %s as being written",
                     a->state_path);
            return -1;
        }
        a->state_writing = true;
    }
    if (rewrite_pending(a) != 0 || write_all(a->fd, b->p, b->n) != 0)
        goto fail;
    if (!(a->fsync && a->regular)) { /* written is all a device, or a log without fsync, gets */
        if (a->regular)
            a->durable += (off_t)b->n;
        copy_to_stdout(a, b->p, b->n);
        note_durable(a, seq, counts, false);
        return 0;
    }
    /* kept until a sync succeeds; when memory runs out, synced now */
    if (!sync && gw_buf_add(&a->pending, b->p, b->n) == 0) {
        for (int e = 0; e < GW_AUDIT_EVENTS; e++)
            a->pending_counts[e] += counts[e];
        a->pending_seq = seq;
        return 0;
    }
    if (fdatasync(a->fd) != 0)
        goto fail;
    synced(a, b, seq, counts);
    return 0;
fail:;
    int e = errno;
    cut_back(a);
    snprintf(why, whylen, "audit.file %s: %s", a->path, strerror(e));
    return -1;
}

/* Puts the pending records on disk (idle, before a reopen, at stop, and again every RETRY_MS
 * after a failed sync). Returns 0, or -1 (a write failure, noted). */
static int make_durable(struct gw_audit *a)
{
    if (a->fd < 0 || !a->regular || (a->pending.n == 0 && !a->rewrite))
        return 0;
    if (rewrite_pending(a) != 0 || (a->pending.n > 0 && fdatasync(a->fd) != 0)) {
        char why[300];
        snprintf(why, sizeof why, "audit.file %s: %s", a->path, strerror(errno));
        cut_back(a);
        note_failure(a, why);
        return -1;
    }
    if (a->pending.n > 0)
        synced(a, NULL, 0, NULL);
    return 0;
}

static void reopen_file(struct gw_audit *a)
{
    if (a->path == NULL)
        return;
    if (make_durable(a) != 0) { /* the renamed file keeps every record it was given */
        gw_log_error("audit: SIGUSR1: the last records of %s are not on disk; still writing it",
                     a->path);
        return;
    }
    int fd = open_file(a->path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        gw_log_error("audit: SIGUSR1: cannot reopen %s: %s; still writing the old file", a->path,
                     strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    bool regular = S_ISREG(st.st_mode);
    if (regular && sync_dir(a->dir) != 0) {
        gw_log_error("audit: SIGUSR1: cannot sync the folder of %s: %s; still writing the old file",
                     a->path, strerror(errno));
        close(fd);
        return;
    }
    close(a->fd);
    a->fd = fd;
    a->regular = regular;
    a->durable = regular ? st.st_size : 0;
    a->rewrite = false;
    /* until the new file has a record, a restart continues the chain from the state (clean);
     * if it cannot be saved, the state stays "writing" and a restart before that refuses */
    write_state(a, true);
    a->state_writing = false;
    gw_log_info("audit: SIGUSR1: %s reopened at seq %llu", a->path, (unsigned long long)a->seq);
}

/* A batch written (or not): its items told or freed. Under mu, so that a submitter abandons a
 * waited item either before (the log's then: its event is not touched) or after (answered).
 * An abandoned intent written after all is followed by the outcome its submitter gave: the
 * list of those is returned. Failed items nobody waits for are appended to *rt (to retry). */
static struct gw_audit_item *answer_batch(struct gw_audit *a, struct gw_audit_item *batch, bool ok,
                                          struct gw_audit_item ***rt)
{
    struct gw_audit_item *follow = NULL, **ft = &follow;
    pthread_mutex_lock(&a->mu);
    for (struct gw_audit_item *it = batch, *next; it; it = next) {
        next = it->next;
        it->next = NULL;
        if (it->abandoned && ok && it->outcome) {
            free(it->members);
            it->members = it->outcome;
            it->outcome = NULL;
            it->event = GW_AUDIT_OUTCOME;
            it->done = NULL;
            it->abandoned = false;
            *ft = it;
            ft = &it->next;
        } else if (it->abandoned || (it->done == NULL && ok)) {
            free(it->outcome);
            free(it->members);
            free(it);
        } else if (it->done) {
            it->ok = ok;
            it->answered = true;
            event_active(it->done, EV_TIMEOUT, 0); /* it belongs to its submitter now */
        } else {
            **rt = it;
            *rt = &it->next;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return follow;
}

/* Writes the items of list in order, in batches of about BATCH_BYTES, and tells the waiting
 * ones. After a failed batch the rest fails with it (the file keeps the order of events).
 * Returns the failed items nobody waits for (to retry), in order. */
static struct gw_audit_item *write_items(struct gw_audit *a, struct gw_audit_item *list)
{
    struct gw_audit_item *retry = NULL, **rt = &retry;
    /* whole records, at least one: the last may start just under BATCH_BYTES */
    struct gw_buf b = GW_BUF_INIT(BATCH_BYTES + MAX_LINE);
    while (list) {
        struct gw_audit_item *batch = list, *last = NULL;
        uint64_t seq = a->seq, counts[GW_AUDIT_EVENTS] = {0};
        char prev[HEX_LEN + 1], why[300] = "";
        memcpy(prev, a->prev, sizeof prev);
        bool ok = true, waited = false;
        gw_buf_reset(&b);
        double t0 = now_s();
        for (struct gw_audit_item *it = list; it; it = it->next) {
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
            waited |= it->done != NULL;
            last = it;
            if (b.n >= BATCH_BYTES)
                break; /* one write per BATCH_BYTES */
        }
        if (ok) {
            list = last->next;
            last->next = NULL;
        } else {
            list = NULL; /* the batch and the rest fail together */
        }
        /* Group commit: a batch is synced when a request waits for one of its records (an
         * intent: the change goes upstream only once it is on disk), when the last sync is
         * SYNC_LAG_S old, when BATCH_BYTES wait for one, or after a failure. Other batches
         * (outcomes, denials, reads) are written now and synced with the next synced batch, or when
         * the writer goes idle: so concurrent changes do not queue behind syncs nobody waits for.
         */
        bool sync = waited || t0 - a->last_sync >= SYNC_LAG_S ||
                    a->pending.n + b.n >= BATCH_BYTES || a->rewrite;
        if (ok)
            ok = put_batch(a, &b, seq, counts, sync, why, sizeof why) == 0;
        double dt = now_s() - t0;
        if (ok) {
            pthread_mutex_lock(&a->mu);
            a->seq = seq;
            memcpy(a->prev, prev, sizeof prev);
            a->st.batches++;
            a->st.write_seconds_sum += dt;
            for (int i = 0; i < 8; i++)
                if (dt <= gw_audit_write_buckets[i])
                    a->st.write_le[i]++;
            pthread_mutex_unlock(&a->mu);
        } else {
            note_failure(a, why);
        }
        struct gw_audit_item *follow = answer_batch(a, batch, ok, &rt);
        if (follow) { /* written next, before the rest */
            struct gw_audit_item *t = follow;
            while (t->next)
                t = t->next;
            t->next = list;
            list = follow;
        }
    }
    gw_buf_free(&b);
    return retry;
}

/* The writer's last pass: everything written is put on disk and, when it is, the state saved
 * as clean; what could not be written is counted as lost. */
static void writer_stop(struct gw_audit *a, struct gw_audit_item *retry)
{
    bool durable = make_durable(a) == 0 && a->pending.n == 0 && !a->rewrite;
    if (durable && a->fd >= 0 && a->regular && !a->fsync && fdatasync(a->fd) != 0) {
        char why[300]; /* SIGTERM syncs the file even without audit.fsync (SPEC §1.2) */
        snprintf(why, sizeof why, "audit.file %s: %s", a->path, strerror(errno));
        note_failure(a, why);
        durable = false;
    }
    size_t lost = 0;
    for (struct gw_audit_item *it = retry, *next; it; it = next) {
        next = it->next;
        free(it->members);
        free(it);
        lost++;
    }
    for (int e = 0; e < GW_AUDIT_EVENTS && a->pending.n > 0; e++)
        lost += a->pending_counts[e];
    if (lost)
        gw_log_error("audit: %zu record(s) could not be written before stopping", lost);
    pthread_mutex_lock(&a->mu);
    a->st.lost += lost;
    uint64_t last = a->st.last_seq;
    pthread_mutex_unlock(&a->mu);
    if (durable)
        write_state(a, true);
    else if (a->path)
        gw_log_error("audit: the records after seq %llu are not on disk: the chain state %s is "
                     "not saved as clean",
                     (unsigned long long)last, a->state_path);
}

static void *writer_main(void *arg)
{
    struct gw_audit *a = arg;
    struct gw_audit_item *retry = NULL;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        while (a->head == NULL && !a->stop && !a->reopen) {
            if (retry || a->rewrite) {
                /* after a failure: try again in a while, or as soon as more arrives */
                struct timespec t;
                clock_gettime(CLOCK_REALTIME, &t);
                t.tv_sec += RETRY_MS / 1000;
                a->waiting = true;
                pthread_cond_timedwait(&a->cv, &a->mu, &t);
                a->waiting = false;
                break;
            }
            if (a->pending.n > 0)
                break; /* idle: put what was written on disk */
            a->waiting = true;
            pthread_cond_wait(&a->cv, &a->mu);
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
        if (list)
            retry = write_items(a, list);
        else
            make_durable(a); /* idle, or a failed sync tried again */
        if (stop) {          /* submit refuses from now on: one pass wrote what was queued */
            writer_stop(a, retry);
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
}

void gw_audit_free(struct gw_audit *a)
{
    if (a == NULL)
        return;
    gw_audit_stop(a);
    for (struct gw_audit_item *it = a->head, *next; it; it = next) {
        next = it->next;
        if (it->done && !it->abandoned) {
            it->ok = false;
            continue; /* its submitter's */
        }
        free(it->outcome);
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
    gw_buf_free(&a->pending);
    free(a->replica);
    free(a->path);
    free(a->state_path);
    free(a->dir);
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
    return it->members != NULL && strlen(it->members) <= GW_AUDIT_MAX_MEMBERS;
}

int gw_audit_submit_list(struct gw_audit *a, struct gw_audit_item *head, size_t n)
{
    struct gw_audit_item *tail = NULL;
    for (struct gw_audit_item *it = head; it; it = it->next) {
        if (!gw_audit_fits(it)) {
            gw_log_error("audit: a %s record of more than %u bytes is refused",
                         gw_audit_event_name(it->event), GW_AUDIT_MAX_MEMBERS);
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

void gw_audit_batch_add(struct gw_audit_batch *b, struct gw_audit_item *it)
{
    it->next = NULL;
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    b->n++;
}

void gw_audit_batch_submit(struct gw_audit *a, struct gw_audit_batch *b)
{
    struct gw_audit_item *list = b->head;
    size_t n = b->n;
    *b = (struct gw_audit_batch){0};
    if (list == NULL || gw_audit_submit_list(a, list, n) == 0)
        return;
    for (struct gw_audit_item *it = list, *next; it; it = next) {
        next = it->next;
        it->next = NULL;
        if (it->done)
            gw_audit_refuse(a, it);
        else
            gw_audit_lost(a, it);
    }
}

struct gw_audit_item *gw_audit_item_waited(enum gw_audit_event e, char *members, struct event *done)
{
    struct gw_audit_item *it = gw_audit_item_new(e, members);
    if (it)
        it->done = done;
    return it;
}

void gw_audit_item_free(struct gw_audit_item *it)
{
    if (it) {
        free(it->members);
        free(it);
    }
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

bool gw_audit_answered(struct gw_audit *a, const struct gw_audit_item *it)
{
    pthread_mutex_lock(&a->mu);
    bool answered = it->answered;
    pthread_mutex_unlock(&a->mu);
    return answered;
}

bool gw_audit_abandon(struct gw_audit *a, struct gw_audit_item *it, char *outcome)
{
    pthread_mutex_lock(&a->mu);
    bool taken = !it->answered;
    if (taken) {
        it->abandoned = true;
        it->outcome = outcome;
        a->st.sync_timeouts++;
        /* a hung disk: not ready (/readyz) until a write gets through again */
        a->ready = false;
        snprintf(a->why, sizeof a->why,
                 "%s: a record was not on disk within audit.sync_timeout_ms (a slow or hung "
                 "disk)",
                 a->path ? a->path : "audit.stdout");
    }
    pthread_mutex_unlock(&a->mu);
    if (!taken)
        free(outcome);
    return taken;
}

void gw_audit_refuse(struct gw_audit *a, struct gw_audit_item *it)
{
    pthread_mutex_lock(&a->mu);
    bool abandoned = it->abandoned;
    if (!abandoned) {
        it->ok = false;
        it->answered = true;
        event_active(it->done, EV_TIMEOUT, 0);
    }
    pthread_mutex_unlock(&a->mu);
    if (abandoned) {
        free(it->outcome);
        free(it->members);
        free(it);
    }
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

_Static_assert(sizeof(((struct gw_audit_anchor *)0)->replica) == REPLICA_BUF,
               "an anchor holds a replica id");

int gw_audit_anchor_parse(const char *arg, struct gw_audit_anchor *a)
{
    memset(a, 0, sizeof *a);
    const char *seq = arg, *colon = strchr(arg, ':');
    if (colon && strchr(colon + 1, ':')) { /* REPLICA:SEQ:HASH (an id has no ':') */
        size_t n = (size_t)(colon - arg);
        if (n == 0 || n >= REPLICA_BUF)
            return -1;
        memcpy(a->replica, arg, n);
        if (!gw_config_replica_id_ok(a->replica))
            return -1;
        seq = colon + 1;
        colon = strchr(seq, ':');
    }
    if (colon == NULL || seq[0] < '0' || seq[0] > '9') /* strtoull takes signs and spaces */
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(seq, &end, 10);
    if (errno || end != colon || v == 0 || v > MAX_SEQ || strlen(colon + 1) != HEX_LEN ||
        !is_hex64(colon + 1))
        return -1;
    a->seq = v;
    memcpy(a->hash, colon + 1, HEX_LEN + 1);
    return 0;
}

/* What the first pass learned of one file: its chain's replica, its first and last records,
 * where the anchors' seqs are in it, and its first problem. */
struct vfile {
    const char *path;
    bool lines;                /* it has some: an empty file holds no chain's records */
    char replica[REPLICA_BUF]; /* "" : its records name none */
    /* the records before its first problem: how many, the first's seq and prev, the last's
     * seq and hash */
    uint64_t records, first_seq, last_seq;
    char first_prev[HEX_LEN + 1], last_hash[HEX_LEN + 1];
    size_t bad_line; /* its first problem's line (0: none) and what it is */
    char why[320];
    size_t *anchor_line; /* per anchor: the line with its seq (0: not among the records) */
    bool *anchor_ok;     /* per anchor: that line has its hash */
    size_t chain;
};

/* For grouping only, the replica a line names, verified or not ("" : none, or not a record). */
static void line_replica(const char *line, size_t n, char out[REPLICA_BUF])
{
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 64};
    cJSON *j = n <= MAX_LINE + 1 ? gw_json_parse(line, n, &o, &je) : NULL;
    if (j == NULL || record_replica(j, out) != 0)
        out[0] = '\0';
    cJSON_Delete(j);
}

/* One line of f, whose earlier lines all verified: checked on its own and against the line
 * before (the links between files are the second pass's). */
static void verify_line(struct vfile *f, size_t lineno, const char *line, size_t n,
                        const struct gw_audit_verify_opts *o)
{
    uint64_t seq = 0;
    char p[HEX_LEN + 1], h[HEX_LEN + 1], r[REPLICA_BUF] = "", why[320];
    if (line[n - 1] != '\n')
        snprintf(why, sizeof why, "the last line is incomplete (no newline)");
    else if (n - 1 > MAX_LINE)
        snprintf(why, sizeof why, "the line is longer than %u bytes", MAX_LINE);
    else if (check_line(line, n - 1, o->key, o->keylen, &seq, p, h, r, why, sizeof why) != 0 ||
             one_replica(f->replica, r, why, sizeof why) != 0)
        ;
    else if (f->records && seq != f->last_seq + 1)
        snprintf(why, sizeof why,
                 "seq %llu follows seq %llu (a record is missing, moved or inserted)",
                 (unsigned long long)seq, (unsigned long long)f->last_seq);
    else if (f->records && strcmp(p, f->last_hash) != 0)
        snprintf(why, sizeof why, "prev does not match the hash of the record before");
    else
        why[0] = '\0';
    if (why[0]) {
        f->bad_line = lineno;
        snprintf(f->why, sizeof f->why, "%s", why);
        if (f->replica[0] == '\0')
            line_replica(line, n, f->replica);
        return;
    }
    if (f->records++ == 0) {
        f->first_seq = seq;
        memcpy(f->first_prev, p, sizeof f->first_prev);
    }
    f->last_seq = seq;
    memcpy(f->last_hash, h, sizeof f->last_hash);
    for (size_t k = 0; k < o->nanchors; k++)
        if (o->anchors[k].seq == seq) {
            f->anchor_line[k] = lineno;
            f->anchor_ok[k] = strcmp(o->anchors[k].hash, h) == 0;
        }
}

/* The first pass over a file. After its first problem only the replica is still to learn
 * (from any line that names one). Returns 0, or 2 when it cannot be read (said on err). */
static int verify_scan(struct vfile *f, const struct gw_audit_verify_opts *o, FILE *err)
{
    FILE *in = fopen(f->path, "re");
    if (in == NULL) {
        fprintf(err, "%s: cannot read: %s\n", f->path, strerror(errno));
        return 2;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    while ((f->bad_line == 0 || f->replica[0] == '\0') && (got = getline(&line, &cap, in)) > 0) {
        f->lines = true;
        if (f->bad_line == 0)
            verify_line(f, ++lineno, line, (size_t)got, o);
        else
            line_replica(line, (size_t)got, f->replica);
    }
    int rc = 0;
    if (ferror(in)) {
        fprintf(err, "%s: cannot read: %s\n", f->path, strerror(errno));
        rc = 2;
    }
    free(line);
    fclose(in);
    return rc;
}

/* A file whose records name no replica (written before replica ids) and that a later file of
 * a named replica continues (its first record follows this one's last: seq and prev) is in
 * that replica's chain: a log upgraded in place verifies in one run. The link is checked again
 * with the chain. */
static void adopt_unnamed(struct vfile *v, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        struct vfile *f = &v[i];
        if (f->replica[0] || f->records == 0 || f->bad_line)
            continue;
        for (size_t j = i + 1; j < n; j++)
            if (v[j].records && v[j].first_seq == f->last_seq + 1 &&
                strcmp(v[j].first_prev, f->last_hash) == 0) {
                memcpy(f->replica, v[j].replica, sizeof f->replica);
                break;
            }
    }
}

/* Does anchor k apply to the chain of replica? An anchor without a replica is the only
 * chain's. */
static bool anchor_applies(const struct gw_audit_verify_opts *o, size_t k, const char *replica)
{
    return o->anchors[k].replica[0] == '\0' || strcmp(o->anchors[k].replica, replica) == 0;
}

/* The second pass over one chain, whose first file is v[start]: its files (in the order
 * given) linked, its first record, its anchors. Prints its line on out and adds its records
 * to *total, or says its first problem on err. Returns 0 or 1. */
static int verify_chain(const struct vfile *v, size_t n, size_t start,
                        const struct gw_audit_verify_opts *o, bool *reached, uint64_t *total,
                        FILE *out, FILE *err)
{
    const char *replica = v[start].replica;
    uint64_t count = 0, last = 0, first_seq = 0;
    char prev[HEX_LEN + 1], cont_prev[HEX_LEN + 1] = "";
    memcpy(prev, zeros, sizeof prev);
    for (size_t i = start; i < n; i++) {
        const struct vfile *f = &v[i];
        if (!f->lines || f->chain != v[start].chain)
            continue;
        if (f->records && count == 0 && o->cont) {
            memcpy(cont_prev, f->first_prev, sizeof cont_prev);
        } else if (f->records && f->first_seq != last + 1) {
            fprintf(err,
                    "%s:1: seq %llu follows seq %llu (a record is missing, moved or inserted)\n",
                    f->path, (unsigned long long)f->first_seq, (unsigned long long)last);
            return 1;
        } else if (f->records && strcmp(f->first_prev, prev) != 0) {
            fprintf(err, "%s:1: prev does not match the hash of the record before%s\n", f->path,
                    count == 0 ? " (a log starts with 64 zeros)" : "");
            return 1;
        }
        size_t bad = f->bad_line, ak = 0;
        for (size_t k = 0; k < o->nanchors; k++)
            if (anchor_applies(o, k, replica) && f->anchor_line[k] && !f->anchor_ok[k] &&
                (bad == 0 || f->anchor_line[k] < bad)) {
                bad = f->anchor_line[k];
                ak = k + 1;
            }
        if (ak) {
            fprintf(err, "%s:%zu: seq %llu does not have the anchor's hash\n", f->path, bad,
                    (unsigned long long)o->anchors[ak - 1].seq);
            return 1;
        }
        if (bad) {
            fprintf(err, "%s:%zu: %s\n", f->path, bad, f->why);
            return 1;
        }
        for (size_t k = 0; k < o->nanchors; k++)
            reached[k] |= anchor_applies(o, k, replica) && f->anchor_line[k];
        if (count == 0)
            first_seq = f->first_seq;
        count += f->records;
        last = f->last_seq;
        memcpy(prev, f->last_hash, sizeof prev);
    }
    const char *name = replica[0] ? replica : "(none)";
    for (size_t k = 0; k < o->nanchors; k++) {
        if (!anchor_applies(o, k, replica) || reached[k])
            continue;
        if (first_seq > o->anchors[k].seq)
            fprintf(err, "replica %s: the log starts at seq %llu, after the anchor seq %llu\n",
                    name, (unsigned long long)first_seq, (unsigned long long)o->anchors[k].seq);
        else
            fprintf(err,
                    "replica %s: the log ends at seq %llu and does not reach the anchor seq "
                    "%llu (its tail is missing)\n",
                    name, (unsigned long long)last, (unsigned long long)o->anchors[k].seq);
        return 1;
    }
    fprintf(out, "replica %s: seq %llu to %llu, head %s", name, (unsigned long long)first_seq,
            (unsigned long long)last, prev);
    if (cont_prev[0])
        fprintf(out, ", continuing from seq %llu, prev %s", (unsigned long long)first_seq,
                cont_prev);
    if (replica[0] == '\0')
        fprintf(out, "; its records name no replica (written before replica ids)");
    fputc('\n', out);
    *total += count;
    return 0;
}

int gw_audit_verify(const char *const *files, size_t nfiles, const struct gw_audit_verify_opts *o,
                    FILE *out, FILE *err)
{
    size_t na = o->nanchors, nchains = 0;
    struct vfile *v = calloc(nfiles + 1, sizeof *v);
    size_t *lines = calloc(nfiles * na + 1, sizeof *lines);
    bool *oks = calloc(nfiles * na + 1, sizeof *oks), *reached = calloc(na + 1, sizeof *reached);
    int rc = 0;
    if (v == NULL || lines == NULL || oks == NULL || reached == NULL) {
        fprintf(err, "out of memory\n");
        rc = 2;
    }
    for (size_t i = 0; rc == 0 && i < nfiles; i++) {
        v[i].path = files[i];
        v[i].anchor_line = lines + i * na;
        v[i].anchor_ok = oks + i * na;
        rc = verify_scan(&v[i], o, err);
    }
    if (rc != 0)
        goto out;
    adopt_unnamed(v, nfiles);
    /* one chain per replica, in the order of their first files */
    for (size_t i = 0; i < nfiles; i++) {
        size_t j = 0;
        while (j < i && !(v[j].lines && strcmp(v[j].replica, v[i].replica) == 0))
            j++;
        if (v[i].lines)
            v[i].chain = j < i ? v[j].chain : nchains++;
    }
    for (size_t k = 0; k < na; k++)
        if (o->anchors[k].replica[0] == '\0' && nchains > 1) {
            fprintf(err,
                    "--anchor %llu:%s names no replica, but the files hold the chains of %zu "
                    "replicas: give --anchor REPLICA:SEQ:HASH\n",
                    (unsigned long long)o->anchors[k].seq, o->anchors[k].hash, nchains);
            rc = 2;
            goto out;
        }
    uint64_t total = 0;
    for (size_t i = 0, c = 0; i < nfiles; i++)
        if (v[i].lines && v[i].chain == c) { /* the first file of the next chain */
            rc |= verify_chain(v, nfiles, i, o, reached, &total, out, err);
            c++;
        }
    for (size_t k = 0; k < na; k++) {
        const struct gw_audit_anchor *a = &o->anchors[k];
        size_t i = 0;
        while (i < nfiles && !(v[i].lines && anchor_applies(o, k, v[i].replica)))
            i++;
        if (i < nfiles)
            continue; /* its chain's: verify_chain said what it found */
        if (a->replica[0])
            fprintf(
                err,
                "replica %s: no file given holds its records, but --anchor names its seq %llu\n",
                a->replica, (unsigned long long)a->seq);
        else
            fprintf(err, "the files hold no record: none reaches the anchor seq %llu\n",
                    (unsigned long long)a->seq);
        rc = 1;
    }
    if (rc == 0)
        fprintf(out, "%llu records verified\n", (unsigned long long)total);
out:
    free(v);
    free(lines);
    free(oks);
    free(reached);
    return rc;
}

/* ---- audit-repair ---- */

int gw_audit_repair(const char *file, const unsigned char *key, size_t keylen, FILE *out, FILE *err)
{
    char *state_path = NULL, why[700];
    char *dir = dir_of(file);
    if (dir == NULL || asprintf(&state_path, "%s.chain", file) < 0) {
        fprintf(err, "out of memory\n");
        free(dir);
        return 2;
    }
    struct state s;
    struct tail t;
    int have = read_state(state_path, &s), rc = 0;
    if (have < 0) {
        fprintf(err, "%s: the chain state %s is unreadable or malformed\n", file, state_path);
        rc = 1;
    } else if ((rc = scan_file(file, key, keylen, true, have ? &s : NULL, state_path, &t, why,
                               sizeof why)) != 0) {
        fprintf(err, "%s\n", why);
        rc = rc == -2 ? 2 : 1;
    } else if (!t.exists || !t.regular) {
        fprintf(err, "%s: %s\n", file, t.exists ? "not a regular file" : "no such file");
        rc = 2;
    } else if (have && t.seq > 0 && s.seq > t.seq) {
        fprintf(err,
                "%s ends at seq %llu but the log had reached seq %llu (%s): records are "
                "missing\n",
                file, (unsigned long long)t.seq, (unsigned long long)s.seq, state_path);
        rc = 1;
    } else if (t.torn == 0) {
        fprintf(out, "%s: nothing to repair (%llu records verified%s)\n", file,
                (unsigned long long)t.records, t.seq ? "" : "; the file holds none");
    } else {
        char torn[4200];
        if (cut_torn(file, dir, &t, torn, sizeof torn, why, sizeof why) != 0) {
            fprintf(err, "%s: %s\n", file, why);
            rc = 2;
        } else if (t.seq) {
            fprintf(out,
                    "%s: the torn last line (%zu bytes) moved to %s; %llu records verified, "
                    "the chain ends at seq %llu\n",
                    file, t.torn, torn, (unsigned long long)t.records, (unsigned long long)t.seq);
        } else {
            fprintf(out,
                    "%s: the torn last line (%zu bytes) moved to %s; the file holds no "
                    "whole record\n",
                    file, t.torn, torn);
        }
    }
    free(state_path);
    free(dir);
    return rc;
}
