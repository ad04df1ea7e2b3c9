/* audit: the tamper-evident audit log (SPEC §9).
 *
 * Owns: the audit file (and the stdout sink), the hash chain (SHA-256, or HMAC-SHA256 with
 * audit.hmac_key_file), seq, and one writer thread with group commit: workers hand records
 * over without blocking their event loop (a worker hands over a loop pass's records at once);
 * the writer takes every record queued and writes them with one write(). With audit.fsync it
 * syncs with one fdatasync() every batch a request waits for (an intent record), and only
 * then tells those requests that it is durable; batches nobody waits for are synced with the
 * next such batch, when the last sync is 100 ms old, when the writer is idle, before a reopen
 * and at stop (so the fsync count can be lower than the batch count). A failed write is cut back
 * off the file (ftruncate to the size before it), so the file never holds a partial line; the
 * records nobody waits for are kept and retried, intent records fail (the change is not forwarded:
 * 503), and the log is not ready (/readyz) until a write succeeds again.
 *
 * The line format, which audit-verify checks and README.md documents for other verifiers:
 *   {"v":1,"seq":N,"ts":"...",<members>,"prev":"<64 hex>","hash":"<64 hex>"}\n
 * hash = hex(SHA-256(prev || body)), or HMAC-SHA256 with the key, where prev is the 64 ASCII
 * hex digits of the previous record's hash (64 zeros for the first record) and body is the
 * line without its newline and without ,"hash":"..." (so it ends with "prev":"..."}).
 *
 * On start the chain continues from the file's last record (which must be a complete line
 * whose hash verifies), or, for an empty file (after a rotation), from the state file
 * <file>.chain written at every reopen and at stop; seq never goes back. SIGUSR1 reopens the
 * file: the first record of a new file chains to the last one of the old.
 *
 * Memory: a waited item belongs to its submitter (the writer only sets ok and activates its
 * event); other items belong to the log once submitted. Threads: submit and the stats from any
 * thread; open/start/stop/free from the main thread; the writer is the log's own thread.
 */
#ifndef GW_AUDIT_H
#define GW_AUDIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cJSON.h>

struct event;
struct gw_config;

enum gw_audit_event { GW_AUDIT_INTENT, GW_AUDIT_OUTCOME, GW_AUDIT_DENIED, GW_AUDIT_READ };
#define GW_AUDIT_EVENTS 4
const char *gw_audit_event_name(enum gw_audit_event e);

/* One record on its way to the writer. */
struct gw_audit_item {
    struct gw_audit_item *next;
    enum gw_audit_event event;
    char *members; /* malloc'd: the record's members between "ts" and "prev", without braces */
    /* A submitter that waits (intent records) gives an event of its own loop: the writer sets
     * ok and activates it once the record is on disk (or failed). NULL: nobody waits, and the
     * log frees the item. */
    struct event *done;
    bool ok;
    uint64_t seq; /* set with ok */
};

struct gw_audit;

/* Opens the file and continues its chain (see above). Returns NULL with why filled: the file
 * cannot be opened, its last line is incomplete or does not verify, or it ends before the seq
 * the state file remembers (records were removed). cfg's audit.file NULL and stdout false: a
 * log that writes nothing (and never fails). */
struct gw_audit *gw_audit_open(const struct gw_config *cfg, char *why, size_t whylen);
/* check: what gw_audit_open would find, without creating or opening the file for writing.
 * Returns 0 with the seq the chain would continue from, or -1 with why. */
int gw_audit_inspect(const struct gw_config *cfg, uint64_t *seq, char *why, size_t whylen);
int gw_audit_start(struct gw_audit *a);
/* Writes what is queued, syncs, saves the state file and joins the writer. */
void gw_audit_stop(struct gw_audit *a);
void gw_audit_free(struct gw_audit *a);
/* SIGUSR1: the writer reopens the file before its next write. */
void gw_audit_reopen(struct gw_audit *a);

/* Hands an item over. Returns 0, or -1 when the queue is full (the item is not taken). */
int gw_audit_submit(struct gw_audit *a, struct gw_audit_item *it);
/* Hands over a list of n items (linked by next, in order) at once: one lock, one wake-up of
 * the writer. All or none: returns 0, or -1 (none taken) when they do not fit the queue, one
 * is too large, or the log is stopping. */
int gw_audit_submit_list(struct gw_audit *a, struct gw_audit_item *head, size_t n);
/* Builds a record nobody waits for from members (taken). NULL when out of memory (members
 * freed). */
struct gw_audit_item *gw_audit_item_new(enum gw_audit_event e, char *members);
/* Is the record small enough to be written (gw_audit_submit refuses larger ones)? */
bool gw_audit_fits(const struct gw_audit_item *it);
/* A record that could not be handed over: freed (it may be NULL: one that could not even be
 * built) and counted as lost. */
void gw_audit_lost(struct gw_audit *a, struct gw_audit_item *it);
/* A record nobody waits for: builds the item from members (taken) and submits it; on failure
 * frees members and counts the record as lost. */
void gw_audit_post(struct gw_audit *a, enum gw_audit_event e, char *members);

struct gw_audit_stats {
    uint64_t records[GW_AUDIT_EVENTS];
    uint64_t fsyncs, write_failures, lost;
    uint64_t last_seq;
    double write_seconds_sum; /* write + sync time of the batches */
    uint64_t batches;
    uint64_t write_le[8]; /* batch write+sync time histogram, cumulative le buckets below */
};
extern const double gw_audit_write_buckets[8];
void gw_audit_get_stats(struct gw_audit *a, struct gw_audit_stats *out);
/* False after a failed write, until one succeeds; why names the failure. */
bool gw_audit_ready(struct gw_audit *a, char *why, size_t whylen);
bool gw_audit_enabled(const struct gw_audit *a);

/* The members of a record as a JSON text without braces (malloc'd), from an object whose
 * members are in record order. */
char *gw_audit_members(const cJSON *o);

/* audit-verify: the files in order. key: HMAC key or NULL; anchor_seq 0: none. Prints
 * "N records verified" on out and returns 0, or names the first bad line on err and returns 1
 * (2 when a file cannot be read). */
int gw_audit_verify(const char *const *files, size_t nfiles, const unsigned char *key,
                    size_t keylen, uint64_t anchor_seq, const char *anchor_hash, bool cont,
                    FILE *out, FILE *err);

#endif
