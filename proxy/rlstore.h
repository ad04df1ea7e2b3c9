/* rlstore: one worker's connection to the shared rate-limit store (SPEC §11.2): Redis, through
 * hiredis's asynchronous API on the worker's own libevent loop, so a request that asks the
 * store never blocks the loop.
 *
 * The calls made in one loop pass go to Redis together, as one batch of the script of
 * rlscript.h (one EVALSHA, one round trip, sent behind the pass's requests), and each is
 * answered through its callback exactly once: the store's verdict, or a failure (error,
 * connection lost, no answer within timeout_ms), for the whole batch. What a failure means for
 * the request (on_failure) is the caller's to decide.
 *
 * The connection: a host name is resolved through the worker's evdns base (never a blocking
 * lookup on the loop), then AUTH (username and password_file), SELECT, SCRIPT LOAD; the store
 * is usable once the script's sha is known. A lost connection, a failed handshake or a call
 * without an answer makes it unusable: a new connection is tried after a backoff (100 ms
 * doubling to 5 s), and a store whose calls stall past the handshake deadline is dropped and
 * reconnected. NOSCRIPT (the server lost its scripts) reloads the script and repeats the call
 * once. Going unusable and usable again is logged once for the process each way (the workers
 * share a count, struct gw_rlstore_shared) and shown per worker in the metrics shard
 * (store_fallback).
 *
 * Memory: gw_rlstore_new / gw_rlstore_free (pending calls are answered as failed first). The
 * password is kept in memory only (wiped on free), never logged.
 * Threads: the worker's thread only, but gw_rlstore_probe (check: a blocking connection).
 */
#ifndef GW_RLSTORE_H
#define GW_RLSTORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "ratelimit.h"

struct event_base;
struct evdns_base;
struct gw_cfg_redis;
struct gw_metrics;
struct gw_rlstore;

/* Shared by the workers' stores of one process (the daemon owns it). */
struct gw_rlstore_shared {
    atomic_int unusable; /* workers whose store is unusable: 0 <-> 1 is logged */
};

/* One request's limits (the snapshot's, with nothing divided: the store holds the whole). */
struct gw_rlstore_ask {
    const unsigned char *subject; /* gw_subject_id: 32 bytes */
    long subject_burst, subject_per_seconds;
    long upstream_burst, upstream_per_seconds, daily;
    int cost; /* upstream calls the request will make: 1, or 2 with a target fetch */
};

enum gw_rlstore_result {
    GW_RLSTORE_VERDICT, /* the store answered: see verdict and scope */
    GW_RLSTORE_ERROR,   /* an error answer or the connection lost */
    GW_RLSTORE_TIMEOUT  /* no answer within timeout_ms */
};

struct gw_rlstore_answer {
    enum gw_rlstore_result result;
    struct gw_rl_verdict verdict;
    int scope; /* enum gw_rlscript_scope of the limit that refused */
};

typedef void (*gw_rlstore_cb)(void *arg, const struct gw_rlstore_answer *a);

/* The store for one worker; connecting starts at once. password: the password_file's value or
 * NULL (copied). shared outlives the store. Returns NULL when out of memory. */
struct gw_rlstore *gw_rlstore_new(struct event_base *base, struct evdns_base *dns,
                                  const struct gw_cfg_redis *cfg, const char *password,
                                  struct gw_metrics *m, struct gw_rlstore_shared *shared,
                                  int worker);
void gw_rlstore_free(struct gw_rlstore *s);

/* True when a call would go to the store now (connected, script loaded, not stalled). */
bool gw_rlstore_usable(const struct gw_rlstore *s);

/* Sends one request's check. Returns false (cb not called) when the store is unusable now;
 * else cb is called exactly once, never from inside this call. */
bool gw_rlstore_check(struct gw_rlstore *s, const struct gw_rlstore_ask *ask, gw_rlstore_cb cb,
                      void *arg);

/* For `check` (SPEC §11.2): connects (blocking, bounded by the timeout), authenticates,
 * selects the database and loads the script. 0, or -1 with why filled. */
int gw_rlstore_probe(const struct gw_cfg_redis *cfg, const char *password, char *why,
                     size_t whylen);

#endif
