#include "metrics.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "audit.h"

const double gw_m_buckets[GW_M_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25,   0.5,   1,      2.5,   5,    10,    30};

/* One writer per shard: a relaxed load and store is enough (and needs no locked add). */
void gw_m_inc(gw_counter *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void add(gw_counter *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

static uint64_t get(const gw_counter *c)
{
    return atomic_load_explicit((gw_counter *)c, memory_order_relaxed);
}

void gw_m_observe(struct gw_hist *h, double seconds)
{
    if (seconds < 0)
        seconds = 0;
    size_t i = 0;
    while (i < GW_M_BUCKETS && seconds > gw_m_buckets[i])
        i++;
    if (i < GW_M_BUCKETS)
        gw_m_inc(&h->le[i]);
    gw_m_inc(&h->count);
    add(&h->sum_ns, (uint64_t)(seconds * 1e9));
}

/* The op's table entry, claimed on first use; NULL when the table is full. */
static struct gw_op_m *op_entry(struct gw_metrics *m, const char *op)
{
    const char *name = op ? op : "none";
    for (size_t i = 0; i < GW_M_OPS; i++) {
        struct gw_op_m *e = &m->ops[i];
        if (!atomic_load_explicit(&e->used, memory_order_acquire)) {
            snprintf(e->name, sizeof e->name, "%s", i == GW_M_OPS - 1 ? "other" : name);
            atomic_store_explicit(&e->used, true, memory_order_release);
            return e;
        }
        if (strcmp(e->name, name) == 0 || i == GW_M_OPS - 1)
            return e; /* the last entry takes every op past the table */
    }
    return NULL;
}

static void count_status(struct gw_status_n *t, int status)
{
    for (size_t i = 0; i < GW_M_STATUSES; i++) {
        int s = atomic_load_explicit(&t[i].status, memory_order_relaxed);
        if (s == status) {
            gw_m_inc(&t[i].n);
            return;
        }
        if (s == 0) { /* count first, then publish the slot */
            gw_m_inc(&t[i].n);
            atomic_store_explicit(&t[i].status, status, memory_order_release);
            return;
        }
    }
    /* more distinct statuses than slots: counted under the last one's class, not lost */
    gw_m_inc(&t[GW_M_STATUSES - 1].n);
}

void gw_m_request(struct gw_metrics *m, const char *op, int status, double seconds)
{
    struct gw_op_m *e = op_entry(m, op);
    count_status(e->req, status);
    gw_m_observe(&e->dur, seconds);
}

void gw_m_upstream(struct gw_metrics *m, const char *op, int status, double seconds)
{
    struct gw_op_m *e = op_entry(m, op);
    count_status(e->up, status);
    gw_m_observe(&m->up_dur, seconds);
}

void gw_m_denial(struct gw_metrics *m, const char *policy, const char *op)
{
    const char *p = policy ? policy : "none";
    for (size_t i = 0; i < GW_M_DENIALS; i++) {
        struct gw_denial_m *d = &m->denials[i];
        bool last = i == GW_M_DENIALS - 1;
        if (!atomic_load_explicit(&d->used, memory_order_acquire)) {
            snprintf(d->policy, sizeof d->policy, "%s", last ? "other" : p);
            snprintf(d->op, sizeof d->op, "%s", last ? "other" : op);
            atomic_store_explicit(&d->used, true, memory_order_release);
            gw_m_inc(&d->n);
            return;
        }
        if (last || (strcmp(d->policy, p) == 0 && strcmp(d->op, op) == 0)) {
            gw_m_inc(&d->n);
            return;
        }
    }
}

/* ---- rendering ---- */

/* A label value as Prometheus wants it: backslash, quote and newline escaped. */
static void label(struct evbuffer *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            evbuffer_add_printf(out, "\\%c", *v);
        else if (*v == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, v, 1);
    }
}

static void help(struct evbuffer *out, const char *name, const char *type, const char *text)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

struct hist_sum {
    uint64_t le[GW_M_BUCKETS], count, sum_ns;
};

static void hist_add(struct hist_sum *s, const struct gw_hist *h)
{
    for (size_t i = 0; i < GW_M_BUCKETS; i++)
        s->le[i] += get(&h->le[i]);
    s->count += get(&h->count);
    s->sum_ns += get(&h->sum_ns);
}

static void hist_render(struct evbuffer *out, const char *name, const char *op,
                        const struct hist_sum *s)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < GW_M_BUCKETS; i++) {
        cum += s->le[i];
        evbuffer_add_printf(out, "%s_bucket{", name);
        if (op) {
            evbuffer_add_printf(out, "op=\"");
            label(out, op);
            evbuffer_add_printf(out, "\",");
        }
        evbuffer_add_printf(out, "le=\"%g\"} %llu\n", gw_m_buckets[i], (unsigned long long)cum);
    }
    const char *sep = op ? "," : "";
    evbuffer_add_printf(out, "%s_bucket{", name);
    if (op) {
        evbuffer_add_printf(out, "op=\"");
        label(out, op);
        evbuffer_add_printf(out, "\"");
    }
    evbuffer_add_printf(out, "%sle=\"+Inf\"} %llu\n", sep, (unsigned long long)s->count);
    for (int k = 0; k < 2; k++) {
        evbuffer_add_printf(out, "%s_%s", name, k ? "count" : "sum");
        if (op) {
            evbuffer_add_printf(out, "{op=\"");
            label(out, op);
            evbuffer_add_printf(out, "\"}");
        }
        if (k)
            evbuffer_add_printf(out, " %llu\n", (unsigned long long)s->count);
        else
            evbuffer_add_printf(out, " %.6f\n", (double)s->sum_ns / 1e9);
    }
}

/* The distinct op names of every shard (at most GW_M_OPS * n). */
static size_t op_names(struct gw_metrics *const *shards, size_t n, const char **names, size_t cap)
{
    size_t k = 0;
    for (size_t s = 0; s < n; s++)
        for (size_t i = 0; i < GW_M_OPS; i++) {
            const struct gw_op_m *e = &shards[s]->ops[i];
            if (!atomic_load_explicit((atomic_bool *)&e->used, memory_order_acquire))
                break;
            bool seen = false;
            for (size_t j = 0; j < k && !seen; j++)
                seen = strcmp(names[j], e->name) == 0;
            if (!seen && k < cap)
                names[k++] = e->name;
        }
    return k;
}

/* counter{op,status} summed over shards, for the req (upstream false) or up table. */
static void status_render(struct evbuffer *out, const char *metric,
                          struct gw_metrics *const *shards, size_t n, const char **names,
                          size_t nnames, bool upstream)
{
    for (size_t j = 0; j < nnames; j++) {
        int statuses[GW_M_STATUSES * 8];
        uint64_t counts[GW_M_STATUSES * 8];
        size_t ns = 0;
        for (size_t s = 0; s < n; s++)
            for (size_t i = 0; i < GW_M_OPS; i++) {
                const struct gw_op_m *e = &shards[s]->ops[i];
                if (!atomic_load_explicit((atomic_bool *)&e->used, memory_order_acquire))
                    break;
                if (strcmp(e->name, names[j]) != 0)
                    continue;
                const struct gw_status_n *t = upstream ? e->up : e->req;
                for (size_t q = 0; q < GW_M_STATUSES; q++) {
                    int st = atomic_load_explicit((atomic_int *)&t[q].status, memory_order_acquire);
                    if (st == 0)
                        break;
                    size_t at = 0;
                    while (at < ns && statuses[at] != st)
                        at++;
                    if (at == ns) {
                        if (ns == sizeof statuses / sizeof *statuses)
                            continue;
                        statuses[ns] = st;
                        counts[ns++] = 0;
                    }
                    counts[at] += get(&t[q].n);
                }
            }
        for (size_t q = 0; q < ns; q++) {
            evbuffer_add_printf(out, "%s{op=\"", metric);
            label(out, names[j]);
            evbuffer_add_printf(out, "\",status=\"%d\"} %llu\n", statuses[q],
                                (unsigned long long)counts[q]);
        }
    }
}

void gw_metrics_render(struct evbuffer *out, struct gw_metrics *const *shards, size_t n,
                       const char *const *auth_names, size_t nreasons)
{
    const char *names[GW_M_OPS * 64];
    size_t nnames = op_names(shards, n, names, sizeof names / sizeof *names);

    help(out, "ghl_gateway_requests_total", "counter", "Requests answered, by op and status.");
    status_render(out, "ghl_gateway_requests_total", shards, n, names, nnames, false);
    help(out, "ghl_gateway_request_duration_seconds", "histogram",
         "Time from the request's first byte to its reply, by op.");
    for (size_t j = 0; j < nnames; j++) {
        struct hist_sum h = {0};
        for (size_t s = 0; s < n; s++)
            for (size_t i = 0; i < GW_M_OPS; i++) {
                const struct gw_op_m *e = &shards[s]->ops[i];
                if (!atomic_load_explicit((atomic_bool *)&e->used, memory_order_acquire))
                    break;
                if (strcmp(e->name, names[j]) == 0)
                    hist_add(&h, &e->dur);
            }
        hist_render(out, "ghl_gateway_request_duration_seconds", names[j], &h);
    }

    help(out, "ghl_gateway_auth_failures_total", "counter",
         "Requests refused by authentication, by reason class.");
    for (size_t r = 1; r < nreasons && r < GW_M_REASONS; r++) {
        uint64_t v = 0;
        for (size_t s = 0; s < n; s++)
            v += get(&shards[s]->auth_failures[r]);
        evbuffer_add_printf(out, "ghl_gateway_auth_failures_total{reason=\"%s\"} %llu\n",
                            auth_names[r], (unsigned long long)v);
    }

    help(out, "ghl_gateway_policy_denials_total", "counter",
         "Requests denied by policy, by the first matching policy (none: no policy) and op.");
    for (size_t s = 0; s < n; s++)
        for (size_t i = 0; i < GW_M_DENIALS; i++) {
            const struct gw_denial_m *d = &shards[s]->denials[i];
            if (!atomic_load_explicit((atomic_bool *)&d->used, memory_order_acquire))
                break;
            /* the first shard holding a pair prints the sum over all */
            bool earlier = false;
            for (size_t p = 0; p < s && !earlier; p++)
                for (size_t q = 0; q < GW_M_DENIALS && !earlier; q++) {
                    const struct gw_denial_m *o = &shards[p]->denials[q];
                    if (!atomic_load_explicit((atomic_bool *)&o->used, memory_order_acquire))
                        break;
                    earlier = strcmp(o->policy, d->policy) == 0 && strcmp(o->op, d->op) == 0;
                }
            if (earlier)
                continue;
            uint64_t v = 0;
            for (size_t p = s; p < n; p++)
                for (size_t q = 0; q < GW_M_DENIALS; q++) {
                    const struct gw_denial_m *o = &shards[p]->denials[q];
                    if (!atomic_load_explicit((atomic_bool *)&o->used, memory_order_acquire))
                        break;
                    if (strcmp(o->policy, d->policy) == 0 && strcmp(o->op, d->op) == 0)
                        v += get(&o->n);
                }
            evbuffer_add_printf(out, "ghl_gateway_policy_denials_total{policy=\"");
            label(out, d->policy);
            evbuffer_add_printf(out, "\",op=\"");
            label(out, d->op);
            evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)v);
        }

    help(out, "ghl_gateway_upstream_requests_total", "counter",
         "Answers from the upstream, by op and status (target fetches included).");
    status_render(out, "ghl_gateway_upstream_requests_total", shards, n, names, nnames, true);
    help(out, "ghl_gateway_upstream_duration_seconds", "histogram",
         "Time from an upstream request being sent to its answer.");
    struct hist_sum uh = {0};
    for (size_t s = 0; s < n; s++)
        hist_add(&uh, &shards[s]->up_dur);
    hist_render(out, "ghl_gateway_upstream_duration_seconds", NULL, &uh);

    static const char *const kinds[GW_UPE_KINDS] = {"connect", "tls", "timeout", "protocol"};
    help(out, "ghl_gateway_upstream_errors_total", "counter",
         "Upstream calls without an answer, by kind.");
    for (size_t k = 0; k < GW_UPE_KINDS; k++) {
        uint64_t v = 0;
        for (size_t s = 0; s < n; s++)
            v += get(&shards[s]->up_errors[k]);
        evbuffer_add_printf(out, "ghl_gateway_upstream_errors_total{kind=\"%s\"} %llu\n", kinds[k],
                            (unsigned long long)v);
    }
    static const char *const scopes[GW_RL_SCOPES] = {"subject", "upstream"};
    help(out, "ghl_gateway_rate_limited_total", "counter",
         "Requests answered 429, by the limit that refused them.");
    for (size_t k = 0; k < GW_RL_SCOPES; k++) {
        uint64_t v = 0;
        for (size_t s = 0; s < n; s++)
            v += get(&shards[s]->rate_limited[k]);
        evbuffer_add_printf(out, "ghl_gateway_rate_limited_total{scope=\"%s\"} %llu\n", scopes[k],
                            (unsigned long long)v);
    }
    static const char *const results[GW_STORE_RESULTS] = {"ok", "error", "timeout"};
    help(out, "ghl_gateway_ratelimit_store_requests_total", "counter",
         "Calls to the shared rate-limit store (Redis), by result.");
    for (size_t k = 0; k < GW_STORE_RESULTS; k++) {
        uint64_t v = 0;
        for (size_t s = 0; s < n; s++)
            v += get(&shards[s]->store_requests[k]);
        evbuffer_add_printf(out, "ghl_gateway_ratelimit_store_requests_total{result=\"%s\"} %llu\n",
                            results[k], (unsigned long long)v);
    }
    help(out, "ghl_gateway_ratelimit_store_duration_seconds", "histogram",
         "Time from a call to the shared rate-limit store to its answer.");
    struct hist_sum sh = {0};
    bool fallback = false;
    for (size_t s = 0; s < n; s++) {
        hist_add(&sh, &shards[s]->store_dur);
        fallback |= atomic_load_explicit(&shards[s]->store_fallback, memory_order_relaxed);
    }
    hist_render(out, "ghl_gateway_ratelimit_store_duration_seconds", NULL, &sh);
    help(out, "ghl_gateway_ratelimit_fallback", "gauge",
         "1 while the shared rate-limit store is unusable and on_failure decides.");
    evbuffer_add_printf(out, "ghl_gateway_ratelimit_fallback %d\n", fallback ? 1 : 0);
    static const char *const waits[GW_KW_RESULTS] = {"found", "not_found", "timeout"};
    help(out, "ghl_gateway_jwks_refetch_waits_total", "counter",
         "Requests that met an unknown kid and waited for their issuer's JWKS refetch, by what "
         "came of it: found (the kid was in the new set), not_found, timeout.");
    for (size_t k = 0; k < GW_KW_RESULTS; k++) {
        uint64_t v = 0;
        for (size_t s = 0; s < n; s++)
            v += get(&shards[s]->key_waits[k]);
        evbuffer_add_printf(out, "ghl_gateway_jwks_refetch_waits_total{result=\"%s\"} %llu\n",
                            waits[k], (unsigned long long)v);
    }
    uint64_t hits = 0, misses = 0;
    size_t conns = 0;
    for (size_t s = 0; s < n; s++) {
        hits += get(&shards[s]->cache_hits);
        misses += get(&shards[s]->cache_misses);
        conns += atomic_load_explicit(&shards[s]->connections, memory_order_relaxed);
    }
    help(out, "ghl_gateway_token_cache_hits_total", "counter",
         "Bearer tokens found verified in the cache.");
    evbuffer_add_printf(out, "ghl_gateway_token_cache_hits_total %llu\n", (unsigned long long)hits);
    help(out, "ghl_gateway_token_cache_misses_total", "counter",
         "Bearer tokens verified (not in the cache).");
    evbuffer_add_printf(out, "ghl_gateway_token_cache_misses_total %llu\n",
                        (unsigned long long)misses);
    help(out, "ghl_gateway_connections_active", "gauge", "Open client connections.");
    evbuffer_add_printf(out, "ghl_gateway_connections_active %zu\n", conns);
}

void gw_metrics_render_daemon(struct evbuffer *out, const struct gw_m_daemon *d)
{
    help(out, "ghl_gateway_jwks_fetches_total", "counter",
         "JWKS fetches (with discovery, the document and then the JWKS), by issuer and "
         "result (since the configuration was loaded).");
    for (size_t i = 0; i < d->njwks; i++)
        for (int k = 0; k < 2 && d->jwks[i].fetched; k++) {
            evbuffer_add_printf(out, "ghl_gateway_jwks_fetches_total{issuer=\"");
            label(out, d->jwks[i].issuer);
            evbuffer_add_printf(out, "\",result=\"%s\"} %llu\n", k ? "error" : "ok",
                                (unsigned long long)(k ? d->jwks[i].failed : d->jwks[i].ok));
        }
    help(out, "ghl_gateway_jwks_keys", "gauge",
         "Keys an issuer can verify tokens with now: configured, from its JWKS file and from "
         "its last good JWKS fetch.");
    for (size_t i = 0; i < d->njwks; i++) {
        evbuffer_add_printf(out, "ghl_gateway_jwks_keys{issuer=\"");
        label(out, d->jwks[i].issuer);
        evbuffer_add_printf(out, "\"} %zu\n", d->jwks[i].keys);
    }
    const struct gw_audit_stats *st = d->audit;
    help(out, "ghl_gateway_audit_records_total", "counter", "Audit records written.");
    for (int e = 0; e < GW_AUDIT_EVENTS; e++)
        evbuffer_add_printf(out, "ghl_gateway_audit_records_total{event=\"%s\"} %llu\n",
                            gw_audit_event_name((enum gw_audit_event)e),
                            (unsigned long long)st->records[e]);
    help(out, "ghl_gateway_audit_write_seconds", "histogram",
         "Time to write and sync one batch of audit records.");
    for (int i = 0; i < 8; i++)
        evbuffer_add_printf(out, "ghl_gateway_audit_write_seconds_bucket{le=\"%g\"} %llu\n",
                            gw_audit_write_buckets[i], (unsigned long long)st->write_le[i]);
    evbuffer_add_printf(out,
                        "ghl_gateway_audit_write_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "ghl_gateway_audit_write_seconds_sum %.6f\n"
                        "ghl_gateway_audit_write_seconds_count %llu\n",
                        (unsigned long long)st->batches, st->write_seconds_sum,
                        (unsigned long long)st->batches);
    static const struct {
        const char *name, *type, *help;
    } audit_rows[] = {
        {"ghl_gateway_audit_last_seq", "gauge",
         "The seq of the last audit record on disk (an anchor for audit-verify)."},
        {"ghl_gateway_audit_fsyncs_total", "counter",
         "fdatasync calls on the audit file (group commit: one per batch)."},
        {"ghl_gateway_audit_write_failures_total", "counter", "Failed audit writes."},
        {"ghl_gateway_audit_records_lost_total", "counter",
         "Audit records that could not be written."},
        {"ghl_gateway_audit_sync_timeouts_total", "counter",
         "Changes refused (503, not sent) because their intent record was not on disk within "
         "audit.sync_timeout_ms."},
        {"ghl_gateway_audit_repairs_total", "counter",
         "Torn last lines of the audit file cut off at start."},
    };
    const uint64_t audit_values[] = {st->last_seq, st->fsyncs,        st->write_failures,
                                     st->lost,     st->sync_timeouts, st->repairs};
    for (size_t i = 0; i < sizeof audit_rows / sizeof *audit_rows; i++) {
        help(out, audit_rows[i].name, audit_rows[i].type, audit_rows[i].help);
        evbuffer_add_printf(out, "%s %llu\n", audit_rows[i].name,
                            (unsigned long long)audit_values[i]);
    }
    help(out, "ghl_gateway_reloads_total", "counter", "SIGHUP reloads.");
    evbuffer_add_printf(out,
                        "ghl_gateway_reloads_total{result=\"ok\"} %llu\n"
                        "ghl_gateway_reloads_total{result=\"error\"} %llu\n",
                        (unsigned long long)d->reloads_ok, (unsigned long long)d->reloads_failed);
    help(out, "ghl_gateway_config_generation", "gauge", "The configuration in use.");
    evbuffer_add_printf(out, "ghl_gateway_config_generation %lu\n", d->generation);
    help(out, "ghl_gateway_tls_cert_expiry_seconds", "gauge",
         "Seconds until the earliest notAfter of a set of certificates of the configuration in "
         "use, negative once expired: serving (the certificate and its chain), client_ca, "
         "upstream_ca (tls.client_ca and upstream.ca_file, when set).");
    for (size_t i = 0; i < d->ncerts; i++)
        evbuffer_add_printf(out, "ghl_gateway_tls_cert_expiry_seconds{cert=\"%s\"} %lld\n",
                            d->certs[i].cert, d->certs[i].seconds);
    /* with the shared store the day's count is in Redis: no figure rather than a wrong one */
    help(out, "ghl_gateway_ratelimit_daily_budget", "gauge",
         "Upstream calls this process may make per UTC day (rate_limit.upstream.daily, or its "
         "1/replicas share); absent with the shared store.");
    if (d->daily_here)
        evbuffer_add_printf(out, "ghl_gateway_ratelimit_daily_budget %ld\n", d->daily_budget);
    help(out, "ghl_gateway_ratelimit_daily_remaining", "gauge",
         "Upstream calls left in this process's budget for the current UTC day; absent with the "
         "shared store.");
    if (d->daily_here)
        evbuffer_add_printf(out, "ghl_gateway_ratelimit_daily_remaining %ld\n",
                            d->daily_used < d->daily_budget ? d->daily_budget - d->daily_used : 0);
}
