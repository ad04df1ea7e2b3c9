/* worker: one worker thread and everything it owns: its event loop, its listening socket
 * (SO_REUSEPORT), its client connections (conn), its upstream pool and DNS resolver, its token
 * cache, its metrics shard, the snapshot its new requests start on, and the batching of its
 * access log lines and audit records per loop pass. Requests (request.c) run on its loop with
 * what it gives them (struct gw_req_env).
 *
 * What the workers share is handed in by the daemon (struct gw_worker_shared) and outlives
 * them. The struct is private to worker.c.
 *
 * Memory: gw_worker_new / gw_worker_free. Threads: gw_worker_new, gw_worker_start,
 * gw_worker_join, gw_worker_finish and gw_worker_free from the main thread; gw_worker_wake
 * gw_worker_keys_fetched and gw_worker_metrics from any thread; everything else runs on the worker's own thread.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <stdbool.h>
#include <stddef.h>

struct gw_audit;
struct gw_config;
struct gw_log;
struct gw_metrics;
struct gw_rl;
struct gw_rlstore_shared;
struct gw_snapshot;
struct gw_worker;

/* What the workers share, owned by the daemon. */
struct gw_worker_shared {
    struct gw_audit *audit;
    struct gw_log *access;
    struct gw_rl *rl;
    struct gw_rlstore_shared *store; /* the workers' shared-store connections (SPEC §11.2) */
    size_t nworkers; /* the token cache's entries are shared out among them */
    /* the daemon's current snapshot, as a new reference (workers adopt it when woken) */
    struct gw_snapshot *(*snapshot)(void *arg);
    bool (*stopping)(void *arg); /* drain: stop accepting, finish what is in flight */
    bool (*forced)(void *arg);   /* stop now */
    void (*exited)(void *arg);   /* a worker's loop has ended (called on its thread) */
    void *arg;
};

/* 0 when the listen address of cfg is free, else -1 with the failure logged: the workers bind
 * it with SO_REUSEPORT, which would let them share it with another running instance. */
int gw_worker_port_free(const struct gw_config *cfg);
/* Sets up worker id on snap (a reference is taken): its loop, listener, pool, cache. Returns
 * NULL with the failure logged. */
struct gw_worker *gw_worker_new(const struct gw_worker_shared *shared, int id,
                                struct gw_snapshot *snap);
/* Runs the worker's loop on a thread of its own. Returns 0 or -1. */
int gw_worker_start(struct gw_worker *w);
void gw_worker_join(struct gw_worker *w);
/* From any thread: the worker looks at the daemon's snapshot and stopping flags. */
void gw_worker_wake(struct gw_worker *w);
/* From any thread (the JWKS fetcher's): a fetch has ended; requests waiting for one are
 * looked at (keywait.h). */
void gw_worker_keys_fetched(struct gw_worker *w);
/* After its loop has ended: hands over the audit records of its last pass (before the audit
 * log stops, so that it answers the intents still queued). */
void gw_worker_finish(struct gw_worker *w);
void gw_worker_free(struct gw_worker *w);
/* The worker's metrics shard (read by a scrape from any thread). */
struct gw_metrics *gw_worker_metrics(struct gw_worker *w);

#endif
