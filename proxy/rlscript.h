/* rlscript: the server-side script that keeps the rate limits of SPEC §11.2 in Redis.
 *
 * One call checks and updates, atomically, the three limits a request meets: its subject's
 * GCRA bucket, the upstream credential's GCRA burst bucket and the credential's daily budget.
 * All three pass and are spent together, or nothing is spent. One call may carry the requests
 * of one event-loop pass (a batch): they are decided one after the other in their order, each
 * as if it came alone; the shared upstream and daily keys, and a subject's key however many of
 * its requests the batch holds, are read once and written once. The clock is Redis's own (TIME),
 * so replicas with drifting clocks agree; a bucket's key expires when the bucket is full again,
 * the daily key at the end of its UTC day.
 *
 * The arithmetic is the in-process limiter's (ratelimit.c), in microseconds: a bucket of
 * `burst` refilled at burst / per_seconds a second, emission interval T = per_seconds / burst,
 * tolerance tau = T * (burst - 1). A request that will make `cost` upstream calls (2 for a
 * change that first reads its target) spends `cost` cells of the upstream bucket and `cost`
 * units of the daily budget, both cut to the upstream burst (else it could never pass), and
 * one cell of its subject's bucket whatever the cost (the subject sent one request).
 *
 * KEYS[1] the subject's bucket   (prefix "s:" and the subject id in hex)
 * KEYS[2] the upstream bucket    (prefix "u")
 * KEYS[3] the daily budget       (prefix "d": a hash {day, n}; day = days since the epoch, UTC)
 * ARGV[1] per_subject.burst      ARGV[2] per_subject.per_seconds
 * ARGV[3] upstream.burst         ARGV[4] upstream.per_seconds     ARGV[5] upstream.daily
 * ARGV[6] cost (1 or 2)
 * ARGV[7] microseconds added to Redis's clock: 0 from the gateway; tests move time with it
 * A batch of n requests: KEYS[4..n+2] the subject buckets of requests 2..n (a subject may come
 * twice) and ARGV[8..n+6] their costs; the limits in ARGV[1..5] are the same for all.
 *
 * Reply: an array of six integers per request, in order (six for one request):
 * {allowed, scope, retry_after_s, max, remaining, interval_ms}
 * with scope 0 = subject, 1 = upstream burst, 2 = daily budget (of the limit that refused;
 * when allowed: 0, and max / remaining / interval_ms are the subject's). A refusal spends
 * nothing; the daily budget's remaining is the units left today (one left refuses a cost of 2).
 */
#ifndef GW_RLSCRIPT_H
#define GW_RLSCRIPT_H

enum gw_rlscript_scope { GW_RLS_SUBJECT = 0, GW_RLS_UPSTREAM = 1, GW_RLS_DAILY = 2 };

extern const char gw_rl_script[];

#endif
