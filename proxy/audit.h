/* audit: the tamper-evident audit log (SPEC §9).
 *
 * Owns: the audit file (and the stdout sink), the hash chain (SHA-256, or HMAC-SHA256 with
 * audit.hmac_key_file), seq, the chain state file <file>.chain, and one writer thread with
 * group commit: workers hand records over without blocking their event loop (a worker hands
 * over a loop pass's records at once); the writer takes every record queued and writes them
 * with one write() per batch. With audit.fsync it syncs with one fdatasync() every batch a
 * request waits for (an intent record), and only then tells those requests that it is durable;
 * batches nobody waits for are synced with the next such batch, when the last sync is 100 ms
 * old, when 4 MiB wait for a sync, when the writer is idle, before a reopen and at stop (so the
 * fsync count can be lower than the batch count).
 *
 * Durability: a record counts as written (stats, last_seq, the stdout copy) once it is on disk.
 * The bytes written since the last successful sync are kept in memory: every failed write or
 * sync (any errno: after a failed fsync Linux may drop the dirty pages and report the next
 * fsync as a success) cuts the file back to its last durable size, and those bytes are written
 * again before the next sync, with the same seq and hashes. A failed batch's intent records
 * fail (the change is not forwarded: 503); its other records are kept and retried; the log is
 * not ready (/readyz) until a write succeeds again. A file that is not a regular file (a
 * device, a pipe) is written but never synced nor cut. A new file and the state file are made
 * durable in their folder (fsync of the folder after create and rename).
 *
 * The line format, which audit-verify checks and docs/audit.md documents for other verifiers:
 *   {"v":1,"seq":N,"ts":"...",<members>,"prev":"<64 hex>","hash":"<64 hex>"}\n
 * hash = hex(SHA-256(prev || body)), or HMAC-SHA256 with the key, where prev is the 64 ASCII
 * hex digits of the previous record's hash (64 zeros for the first record) and body is the
 * line without its newline and without ,"hash":"..." (so it ends with "prev":"..."}).
 *
 * The chain never forks. The state file holds "<seq> <hash> clean|writing": clean is saved at
 * a stop with every record on disk and at a reopen, and before the first record after either
 * the state is durably marked writing. On start the chain continues from the file's last
 * record (which must verify, and not end before the state's seq); a missing or empty file
 * continues from the state only when it is clean (otherwise the records after it are in a file
 * that was moved or lost: open refuses and says so). A torn last line (no final newline: a
 * crash during a write; no change was forwarded on it) is repaired at open: every record before
 * it is verified, the torn bytes go to <file>.torn (.torn.N when that exists) and are cut off.
 * SIGUSR1 reopens the file: the first record of a new file chains to the last one of the old.
 *
 * A chain belongs to one replica (SPEC §9): the log keeps audit.replica_id as it was at open
 * for its life (request.c writes it into every record, after request_id), open refuses a file
 * whose last record names another replica, and a file's records name one replica (records
 * without one, written before replica ids, may only come first: a log upgraded in place).
 *
 * Memory: a waited item belongs to its submitter (the writer only sets ok and seq and activates
 * its event, under the log's lock) until the submitter abandons it (gw_audit_abandon): then
 * it is the log's; other items belong to the log once submitted. Threads: submit, abandon and
 * the stats from any thread; open/start/stop/free from the main thread; the writer is the
 * log's own thread.
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
    /* under the log's lock: */
    bool answered;  /* ok and seq are set and done was activated */
    bool abandoned; /* its submitter stopped waiting: the log's, and done is not touched */
    char *outcome;  /* with abandoned: the members of the record written after it, if it is */
};

struct gw_audit;

/* Opens the file and continues its chain (see above), repairing a torn last line (logged as a
 * warning, counted in stats.repairs). Returns NULL with why filled: the file cannot be opened
 * or made durable, a record does not verify (why names FILE:LINE), it ends before the seq the
 * state file remembers (records were removed), or it is missing or empty and the state is not
 * clean. cfg's audit.file NULL and stdout false: a log that writes nothing (and never fails). */
struct gw_audit *gw_audit_open(const struct gw_config *cfg, char *why, size_t whylen);
/* check: what gw_audit_open would find and do, changing nothing. Returns 0 with the seq the
 * chain would continue from and in note what open would repair first ("" when nothing), or
 * -1 with why. */
int gw_audit_inspect(const struct gw_config *cfg, uint64_t *seq, char *note, size_t notelen,
                     char *why, size_t whylen);
int gw_audit_start(struct gw_audit *a);
/* Writes what is queued, syncs, saves the state file and joins the writer. */
void gw_audit_stop(struct gw_audit *a);
void gw_audit_free(struct gw_audit *a);
/* SIGUSR1: the writer reopens the file before its next write. */
void gw_audit_reopen(struct gw_audit *a);

/* Hands an item over. Returns 0, or -1 when the queue is full (the item is not taken). A waited
 * item's submitter learns the result from its event, then asks gw_audit_answered. */
int gw_audit_submit(struct gw_audit *a, struct gw_audit_item *it);
/* Hands over a list of n items (linked by next, in order) at once: one lock, one wake-up of
 * the writer. All or none: returns 0, or -1 (none taken) when they do not fit the queue, one
 * is too large, or the log is stopping. */
int gw_audit_submit_list(struct gw_audit *a, struct gw_audit_item *head, size_t n);
/* Records handed over together (a worker's loop pass): one lock and one wake-up of the writer
 * for all of them. Written by the functions below only; starts zeroed. */
struct gw_audit_batch {
    struct gw_audit_item *head, *tail;
    size_t n;
};
void gw_audit_batch_add(struct gw_audit_batch *b, struct gw_audit_item *it);
/* Hands the batch over, which is empty after. Refused (the queue is full, the log stopping):
 * its waited items are answered failed (gw_audit_refuse), the others counted lost. */
void gw_audit_batch_submit(struct gw_audit *a, struct gw_audit_batch *b);
/* Builds a record nobody waits for from members (taken). NULL when out of memory (members
 * freed). */
struct gw_audit_item *gw_audit_item_new(enum gw_audit_event e, char *members);
/* Builds a record its submitter waits for (an intent): done, an event of the submitter's loop,
 * is activated once it is on disk or failed (then it->ok says which). members taken; NULL when
 * out of memory (members freed). */
struct gw_audit_item *gw_audit_item_waited(enum gw_audit_event e, char *members,
                                           struct event *done);
/* Frees an item that is its submitter's (answered, refused, or never handed over). */
void gw_audit_item_free(struct gw_audit_item *it);
/* The longest members a record may have: its line, with the members around them, stays within
 * what audit-verify reads (64 MiB). The cap of a buffer the members are written into. */
#define GW_AUDIT_MAX_MEMBERS ((64u << 20) - 1024)
/* Is the record small enough to be written (gw_audit_submit refuses larger ones)? */
bool gw_audit_fits(const struct gw_audit_item *it);
/* A record that could not be handed over: freed (it may be NULL: one that could not even be
 * built) and counted as lost. */
void gw_audit_lost(struct gw_audit *a, struct gw_audit_item *it);
/* A record nobody waits for: builds the item from members (taken) and submits it; on failure
 * frees members and counts the record as lost. */
void gw_audit_post(struct gw_audit *a, enum gw_audit_event e, char *members);

/* Has the writer answered the waited item it (ok and seq set; its event activated)? Once true
 * it stays true, and the item is its submitter's again. */
bool gw_audit_answered(struct gw_audit *a, const struct gw_audit_item *it);
/* The submitter stops waiting (audit.sync_timeout_ms). Returns false when the writer answered
 * first (the item stays the submitter's; outcome is freed). Returns true when the item is now
 * the log's: its event is never touched again (the submitter may free it), the item is freed
 * by the log, and if the record is written after all, a record with the members outcome
 * (taken; may be NULL) follows it, so the log says the change was not sent. Counted in
 * stats.sync_timeouts; the log is not ready until a write succeeds again. */
bool gw_audit_abandon(struct gw_audit *a, struct gw_audit_item *it, char *outcome);
/* A waited item that could not be handed over (refused by submit, or too large): answered with
 * ok false and its event activated; an abandoned one is freed. */
void gw_audit_refuse(struct gw_audit *a, struct gw_audit_item *it);

struct gw_audit_stats {
    uint64_t records[GW_AUDIT_EVENTS]; /* on disk (written, for a log without sync) */
    uint64_t fsyncs, write_failures, lost;
    uint64_t sync_timeouts;   /* waited records abandoned by their submitter */
    uint64_t repairs;         /* torn last lines cut off at open */
    uint64_t last_seq;        /* of the last record on disk: never one that a crash could undo */
    double write_seconds_sum; /* write + sync time of the batches */
    uint64_t batches;
    uint64_t write_le[8]; /* batch write+sync time histogram, cumulative le buckets below */
};
extern const double gw_audit_write_buckets[8];
void gw_audit_get_stats(struct gw_audit *a, struct gw_audit_stats *out);
/* False after a failed write, until one succeeds; why names the failure. */
bool gw_audit_ready(struct gw_audit *a, char *why, size_t whylen);
bool gw_audit_enabled(const struct gw_audit *a);
/* audit.replica_id when the log was opened: the "replica" of the records written to it, fixed
 * for its life (a chain belongs to one replica). NULL: none was configured. */
const char *gw_audit_replica(const struct gw_audit *a);

/* The members of a record as a JSON text without braces (malloc'd), from an object whose
 * members are in record order. */
char *gw_audit_members(const cJSON *o);

/* audit-verify's --anchor [REPLICA:]SEQ:HASH: the chain of replica ("" : the only chain the
 * files hold) must reach seq, and that record have hash. */
struct gw_audit_anchor {
    char replica[65]; /* a replica id (config.h) or "" */
    uint64_t seq;
    char hash[65];
};
/* Parses arg into a. Returns 0, or -1 when it is not [REPLICA:]SEQ:HASH (a replica id, seq 1
 * to 2^53 - 1 in decimal, the hash as 64 lowercase hex digits). */
int gw_audit_anchor_parse(const char *arg, struct gw_audit_anchor *a);

struct gw_audit_verify_opts {
    const unsigned char *key; /* the HMAC key, or NULL */
    size_t keylen;
    const struct gw_audit_anchor *anchors;
    size_t nanchors;
    bool cont; /* each chain's first record is taken as given (a rotated file) */
};
/* audit-verify: files of one or more replicas. Each file's records belong to one replica (the
 * "replica" of its records; none: written before replica ids, a chain of their own unless a
 * later file of a replica continues them); the files of each replica, in the order given, are
 * one chain. Verifies every chain and prints one line per chain on out ("replica R: seq F to
 * L, head H"), then "N records verified", and returns 0; or names each broken chain's first
 * bad line on err (the other chains' lines still on out) and returns 1. Returns 2 when a file
 * cannot be read or an anchor without a replica meets several chains (nothing on out). */
int gw_audit_verify(const char *const *files, size_t nfiles, const struct gw_audit_verify_opts *o,
                    FILE *out, FILE *err);

/* audit-repair: verifies every record of file (its first taken as given, as --continue; the
 * last whole one against <file>.chain when that exists) and cuts a torn last line into
 * file.torn (.torn.N), synced before the cut. Prints what it did on out and returns 0
 * (repaired, or nothing to repair), or names the bad line on err and returns 1 (nothing
 * changed), 2 when the file cannot be read or the repair cannot be written. key: HMAC key or
 * NULL. */
int gw_audit_repair(const char *file, const unsigned char *key, size_t keylen, FILE *out,
                    FILE *err);

#endif
