/* keywait: one worker's requests waiting for a JWKS refetch (SPEC §4.1).
 *
 * A request whose token names a kid its issuer's fetched JWKS does not hold asks for a refetch
 * (auth.c, jwks.c) and parks here, at most jwks_refetch_wait_ms, without blocking the loop.
 * Every fetch that ends moves its issuer's fetch_gen and wakes each worker
 * (gw_keywait_fetched, from the fetcher's thread); the worker then answers the waits whose
 * issuer's fetch_gen has moved since they parked. So every request that met the same
 * unknown kid (or any kid of that issuer) waits on the same refetch, in whichever worker.
 * A wait whose time runs out is answered too; each wait is answered exactly once, never from
 * inside gw_keywait_park.
 *
 * Memory: gw_keywait_new / gw_keywait_free (which answers what still waits, as timed out).
 * Threads: gw_keywait_fetched from any thread; everything else on the worker's thread.
 */
#ifndef GW_KEYWAIT_H
#define GW_KEYWAIT_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct gw_issuer;
struct gw_keywait;

/* fetched: a fetch of the issuer ended while the request waited (false: its time ran out, or
 * the worker is stopping). */
typedef void (*gw_keywait_cb)(void *arg, bool fetched);

/* At most this many requests wait in one worker; more are refused at once (an attacker's
 * tokens with made-up kids cannot hold more memory than that). */
#define GW_KEYWAIT_MAX 1024

struct gw_keywait *gw_keywait_new(struct event_base *base);
/* Answers every wait still parked (fetched false), then frees. */
void gw_keywait_free(struct gw_keywait *kw);
/* Parks a request until is->fetch_gen is no longer gen (read before the refetch was asked
 * for: a fetch that ends in between still counts), or ms pass. Returns false (nothing parked,
 * cb never called) when GW_KEYWAIT_MAX requests already wait, or out of memory. The issuer
 * must outlive the wait (the request holds its snapshot). */
bool gw_keywait_park(struct gw_keywait *kw, struct gw_issuer *is, unsigned long gen, long ms,
                     gw_keywait_cb cb, void *arg);
/* A fetch has ended (any thread): the worker looks at its waits on its loop. */
void gw_keywait_fetched(struct gw_keywait *kw);
/* Answers every wait now (fetched false): the worker is stopping. */
void gw_keywait_cancel_all(struct gw_keywait *kw);
size_t gw_keywait_count(const struct gw_keywait *kw);

#endif
