/* metrics: the counters and histograms of SPEC §10, one shard per worker.
 *
 * Each worker writes only its own shard, with relaxed atomic loads and stores (one writer: no
 * lock, no locked instruction on the request path); a scrape reads every shard and sums them.
 * Labels that come from the OpenAPI document or the policies (op, policy) are kept as copied
 * names in small fixed tables, so a reload that renames or adds ops needs no coordination;
 * past a table's size the extra label values are counted under "other".
 *
 * Memory: shards are plain structs inside the worker. Threads: gw_m_* writers on the owning
 * worker only; gw_metrics_render from any thread.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define GW_M_BUCKETS 15  /* 0.5 ms .. 30 s */
#define GW_M_OPS 16      /* distinct op labels */
#define GW_M_STATUSES 24 /* distinct statuses per op */
#define GW_M_DENIALS 64  /* distinct (policy, op) pairs */
#define GW_M_REASONS 16  /* auth failure reasons */
#define GW_M_NAME 64

extern const double gw_m_buckets[GW_M_BUCKETS];

typedef atomic_uint_fast64_t gw_counter;

struct gw_hist {
    gw_counter le[GW_M_BUCKETS]; /* non-cumulative here; cumulated on render */
    gw_counter count;
    gw_counter sum_ns;
};

struct gw_status_n {
    atomic_int status; /* 0: free */
    gw_counter n;
};

struct gw_op_m {
    char name[GW_M_NAME];
    atomic_bool used; /* set (release) after name is written */
    struct gw_status_n req[GW_M_STATUSES];
    struct gw_status_n up[GW_M_STATUSES];
    struct gw_hist dur;
};

struct gw_denial_m {
    char policy[GW_M_NAME], op[GW_M_NAME];
    atomic_bool used;
    gw_counter n;
};

enum gw_up_error_kind { GW_UPE_CONNECT, GW_UPE_TLS, GW_UPE_TIMEOUT, GW_UPE_PROTOCOL, GW_UPE_KINDS };
enum gw_rl_scope { GW_RL_SUBJECT, GW_RL_UPSTREAM, GW_RL_SCOPES };
/* answers of the shared rate-limit store (SPEC §11.2) */
enum gw_store_result { GW_STORE_OK, GW_STORE_ERROR, GW_STORE_TIMEOUT, GW_STORE_RESULTS };

/* what became of a request that waited for a JWKS refetch (SPEC §4.1) */
enum gw_key_wait_result { GW_KW_FOUND, GW_KW_NOT_FOUND, GW_KW_TIMEOUT, GW_KW_RESULTS };

struct gw_metrics {
    struct gw_op_m ops[GW_M_OPS];
    struct gw_denial_m denials[GW_M_DENIALS];
    struct gw_hist up_dur;
    gw_counter auth_failures[GW_M_REASONS];
    gw_counter cache_hits, cache_misses;
    gw_counter up_errors[GW_UPE_KINDS];
    gw_counter rate_limited[GW_RL_SCOPES];
    gw_counter store_requests[GW_STORE_RESULTS];
    struct gw_hist store_dur;
    gw_counter key_waits[GW_KW_RESULTS];
    atomic_bool store_fallback; /* this worker's store is unusable (on_failure decides) */
    atomic_size_t connections;  /* open client connections */
};

/* Writers (the owning worker only). op: the op's id, or NULL for a request no route matched. */
void gw_m_request(struct gw_metrics *m, const char *op, int status, double seconds);
void gw_m_upstream(struct gw_metrics *m, const char *op, int status, double seconds);
void gw_m_denial(struct gw_metrics *m, const char *policy, const char *op);
void gw_m_inc(gw_counter *c);
void gw_m_observe(struct gw_hist *h, double seconds);

/* Appends every metric of the shards (summed) in Prometheus text format 0.0.4. auth_names:
 * the reason class names by index (nreasons of them). */
void gw_metrics_render(struct evbuffer *out, struct gw_metrics *const *shards, size_t n,
                       const char *const *auth_names, size_t nreasons);

/* The daemon's own figures (SPEC §10), rendered after the workers' shards: the JWKS fetches
 * of the configuration's issuers, the audit log's statistics, reloads and the generation, the
 * certificates' expiry and the day's upstream budget. */
struct gw_audit_stats;
struct gw_m_jwks {
    const char *issuer;
    bool fetched; /* it has a jwks_url or discovery: ok and failed count its fetches */
    uint64_t ok, failed;
    size_t keys; /* the keys it can verify with now (gw_jwks_key_count) */
};
/* One set of certificates of the configuration in use (label cert: "serving", "client_ca",
 * "upstream_ca") and the seconds from now to its earliest notAfter (negative: expired). */
struct gw_m_cert {
    const char *cert;
    long long seconds;
};
struct gw_m_daemon {
    const struct gw_m_jwks *jwks; /* one per issuer */
    size_t njwks;
    const struct gw_audit_stats *audit;
    uint64_t reloads_ok, reloads_failed;
    unsigned long generation;
    const struct gw_m_cert *certs;
    size_t ncerts;
    /* the upstream's daily budget, when this process keeps it (no shared store) */
    bool daily_here;
    long daily_budget, daily_used;
};
void gw_metrics_render_daemon(struct evbuffer *out, const struct gw_m_daemon *d);

#endif
