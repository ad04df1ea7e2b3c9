/* ratelimit: the token buckets of SPEC §11, shared by the workers of one process.
 *
 * Both limits are GCRA (the generic cell rate algorithm, a token bucket kept as one
 * "theoretical arrival time"): a bucket of `burst` requests refilled at burst / per_seconds a
 * second. The upstream bucket is one atomic word updated by compare-and-swap, and the upstream's
 * daily budget another (day number and count packed); per-subject buckets live in a hash table
 * of 64 shards, each with its own small lock, so workers contend only when they serve the same
 * shard at the same instant. A subject's bucket is keyed by its id, a SHA-256 digest of its whole
 * iss and sub (gw_subject_id in auth.h): fixed-size entries whatever the claims' lengths. Limits
 * are passed in on every call (they come from the current snapshot and may change on reload); the
 * state survives reloads.
 *
 * Memory: one limiter for the process (gw_rl_new / gw_rl_free). A subject's bucket is dropped
 * once it is full again and its shard needs the room. Threads: any.
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct gw_rl;

struct gw_rl_verdict {
    bool allowed;
    long retry_after_s; /* refused: seconds until a request would pass (at least 1) */
    long max;           /* X-RateLimit-Max: the burst (or the daily budget) */
    long remaining;     /* X-RateLimit-Remaining after this request */
    long interval_ms;   /* X-RateLimit-Interval-Milliseconds */
    bool daily;         /* refused by the daily budget */
};

struct gw_rl *gw_rl_new(void);
void gw_rl_free(struct gw_rl *rl);

/* One request of the subject whose id (gw_subject_id: SHA-256 of its length-prefixed iss and
 * sub) is given. now_ns: a monotonic clock. */
void gw_rl_subject(struct gw_rl *rl, const unsigned char subject[32], long burst, long per_seconds,
                   uint64_t now_ns, struct gw_rl_verdict *v);
/* One upstream call. wall_s: seconds since the epoch (the daily budget is per UTC day). */
void gw_rl_upstream(struct gw_rl *rl, long burst, long per_seconds, long daily, uint64_t now_ns,
                    int64_t wall_s, struct gw_rl_verdict *v);
/* Units of the in-process daily budget spent on the UTC day of wall_s (0 once it has turned):
 * for the metrics; with the shared store the day's count is kept in Redis instead. */
long gw_rl_daily_used(struct gw_rl *rl, int64_t wall_s);

#endif
