/* worker: the state one worker thread owns (private to server.c, conn.c and upstream.c).
 *
 * Each worker has its own event loop, evhttp, listening socket (SO_REUSEPORT), DNS resolver and
 * upstream pool; nothing in here is touched by another thread except `wake` (event_active from
 * the main thread) and the atomics of struct gw_daemon.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "metrics.h"

struct event_base;
struct evconnlistener;
struct evdns_base;
struct event;
struct gw_daemon;
struct gw_snapshot;
struct gw_token_cache;
struct gw_upstream_pool;

struct gw_worker {
    int id;
    pthread_t thread;
    struct gw_daemon *d;
    struct event_base *base;
    gw_conn_handler handler; /* what a complete request is handed to */
    struct evconnlistener *listener;
    struct evdns_base *dns;
    struct gw_upstream_pool *pool;
    struct event *wake;       /* activated by the main thread: look at d->stopping */
    struct gw_snapshot *snap; /* the snapshot new requests start on (a reference is held) */
    struct gw_conn *conns;    /* every open client connection */
    size_t nconns;
    size_t inflight;      /* requests between dispatch and reply */
    bool listener_paused; /* at limits.max_connections */
    bool draining;
    struct event *drain_timer;
    struct event *accept_resume;
    bool stopped; /* being torn down: no more loop exits to schedule */
    /* Verified tokens. Its principals point into w->snap's issuers: a new snapshot must clear
     * it (reload). */
    struct gw_token_cache *cache;
    struct gw_metrics m; /* this worker's shard, summed when scraped */
    /* Access log lines of this loop pass, written by one write(2) when the pass has handled
     * what was ready (access_flush is made active behind them) or when they grow large. */
    struct evbuffer *access_buf;
    struct event *access_flush;
    /* Audit records of this loop pass, handed to the writer together by audit_flush (made
     * active behind them): one lock and one wake-up of the writer per pass, not per record. */
    struct gw_audit_item *audit_head, *audit_tail;
    size_t audit_n;
    struct event *audit_flush;
    /* Random bytes for new request ids, drawn from RAND_bytes a pool at a time. */
    unsigned char rid_pool[4096];
    size_t rid_used;
};

/* Ends the worker's loop once it is draining and holds no connection and no request. */
void gw_worker_maybe_exit(struct gw_worker *w);

#endif
