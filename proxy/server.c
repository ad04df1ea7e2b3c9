#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <event2/thread.h>

#include "admin.h"
#include "audit.h"
#include "auth.h"
#include "config.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "rlstore.h"
#include "snapshot.h"
#include "tls.h"
#include "worker.h"

struct gw_daemon {
    const char *config_path;
    /* The current snapshot. Swapped by the main thread on SIGHUP; a worker takes its own
     * reference under snap_mu (a bare load could meet a snapshot being freed). */
    struct gw_snapshot *snap;
    pthread_mutex_t snap_mu;
    uint64_t reloads_ok, reloads_failed;
    struct gw_log *access;
    struct gw_audit *audit; /* for the daemon's life (audit.* changes need a restart) */
    struct gw_admin *admin;
    struct gw_rl *rl; /* rate limits: state shared by the workers, limits from the snapshot */
    struct gw_rlstore_shared store; /* the workers' shared-store connections (SPEC §11.2) */
    struct gw_worker_shared shared;
    struct gw_worker **workers;
    size_t nworkers;
    atomic_bool stopping;
    atomic_bool forced;    /* a second SIGTERM/SIGINT: stop without waiting */
    atomic_size_t running; /* workers whose loop has not ended */
    struct event_base *main_base;
    struct event *worker_done; /* activated by the last worker as its loop ends */
};

/* The JWKS fetcher's thread: a fetch has ended (jwks.h); requests waiting for it are in
 * every worker. */
static void keys_fetched(void *arg)
{
    struct gw_daemon *d = arg;
    for (size_t i = 0; i < d->nworkers; i++)
        gw_worker_keys_fetched(d->workers[i]);
}

/* ---- what the workers read of the daemon (struct gw_worker_shared) ---- */

static struct gw_snapshot *current_snapshot(void *arg)
{
    struct gw_daemon *d = arg;
    pthread_mutex_lock(&d->snap_mu);
    struct gw_snapshot *s = gw_snapshot_ref(d->snap);
    pthread_mutex_unlock(&d->snap_mu);
    return s;
}

static bool is_stopping(void *arg)
{
    struct gw_daemon *d = arg;
    return atomic_load(&d->stopping);
}

static bool is_forced(void *arg)
{
    struct gw_daemon *d = arg;
    return atomic_load(&d->forced);
}

static void worker_exited(void *arg)
{
    struct gw_daemon *d = arg;
    if (atomic_fetch_sub(&d->running, 1) == 1)
        event_active(d->worker_done, EV_TIMEOUT, 0);
}

/* ---- main thread ---- */

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void warn_restart_needed(const struct gw_config *o, const struct gw_config *n)
{
    if (strcmp(o->listen.address, n->listen.address) != 0 || o->listen.port != n->listen.port ||
        o->listen.workers != n->listen.workers)
        gw_log_error("SIGHUP: listen changed; it takes effect on restart");
    if ((o->access_log.file == NULL) != (n->access_log.file == NULL) ||
        (o->access_log.file && strcmp(o->access_log.file, n->access_log.file) != 0))
        gw_log_error("SIGHUP: access_log.file changed; it takes effect on restart");
    if (o->auth.token_cache_entries != n->auth.token_cache_entries)
        gw_log_error("SIGHUP: auth.token_cache_entries changed; it takes effect on restart");
    if ((o->audit.file == NULL) != (n->audit.file == NULL) ||
        (o->audit.file && strcmp(o->audit.file, n->audit.file) != 0) ||
        o->audit.to_stdout != n->audit.to_stdout || o->audit.fsync != n->audit.fsync ||
        (o->audit.hmac_key_file == NULL) != (n->audit.hmac_key_file == NULL) ||
        (o->audit.hmac_key_file && strcmp(o->audit.hmac_key_file, n->audit.hmac_key_file) != 0))
        gw_log_error("SIGHUP: audit changed; the audit log keeps its settings until restart");
    const struct gw_cfg_redis *ro = &o->rate_limit.redis, *rn = &n->rate_limit.redis;
    if (ro->enabled != rn->enabled ||
        (ro->enabled && (!same_str(ro->url, rn->url) || !same_str(ro->username, rn->username) ||
                         !same_str(ro->password_file, rn->password_file) ||
                         !same_str(ro->key_prefix, rn->key_prefix) ||
                         ro->timeout_ms != rn->timeout_ms)))
        gw_log_error("SIGHUP: rate_limit.redis changed; the store's connection keeps its "
                     "settings until restart (its limits and on_failure apply now%s)",
                     ro->enabled && !rn->enabled ? "; with redis null, limits are kept here" : "");
}

/* SIGHUP (SPEC §1.2): everything is loaded and validated first; only a complete new snapshot
 * replaces the current one. Requests in flight finish on the snapshot they started with. */
static void reload(struct gw_daemon *d)
{
    if (atomic_load(&d->stopping))
        return;
    struct gw_errs errs = {0};
    struct gw_snapshot *next = gw_snapshot_build(d->config_path, &errs);
    for (size_t i = 0; i < errs.warnings.n; i++)
        gw_log_info("%s", errs.warnings.v[i]);
    if (next == NULL) {
        for (size_t i = 0; i < errs.problems.n; i++)
            gw_log_error("%s", errs.problems.v[i]);
        gw_log_error("SIGHUP: reload failed (%zu problem%s); still serving generation %lu",
                     errs.problems.n, errs.problems.n == 1 ? "" : "s", d->snap->generation);
        d->reloads_failed++;
        gw_errs_free(&errs);
        return;
    }
    gw_errs_free(&errs);
    gw_jwks_adopt_keys(next->auth, d->snap->auth);
    int jwks_failed = gw_jwks_fetcher_start(next->auth->fetcher);
    if (jwks_failed)
        gw_log_error("SIGHUP: %d JWKS URL%s could not be fetched now; the last good keys stay "
                     "in use and the fetch is retried in the background",
                     jwks_failed, jwks_failed == 1 ? "" : "s");
    warn_restart_needed(d->snap->cfg, next->cfg);
    const struct gw_credential *po = &d->snap->redis, *pn = &next->redis;
    if (next->cfg->rate_limit.redis.enabled &&
        ((po->token == NULL) != (pn->token == NULL) || po->len != pn->len ||
         (po->token && CRYPTO_memcmp(po->token, pn->token, po->len) != 0)))
        gw_log_error("SIGHUP: the rate-limit store's password changed; the store's connections "
                     "keep the old one until restart");
    /* a chain belongs to one replica: the records keep the id the log was opened with (said
     * at every reload until a restart, so a second reload does not hide it) */
    const char *rid = gw_audit_replica(d->audit), *want = next->cfg->audit.replica_id;
    if (rid && want && strcmp(rid, want) != 0)
        gw_log_error("SIGHUP: audit.replica_id is %s in the file, but the audit records keep "
                     "replica %s until restart",
                     want, rid);
    pthread_mutex_lock(&d->snap_mu);
    struct gw_snapshot *old = d->snap;
    gw_snapshot_follow(next, old);
    d->snap = next;
    pthread_mutex_unlock(&d->snap_mu);
    /* the old keys stay usable by requests in flight; only its refreshing stops */
    gw_jwks_fetcher_stop(old->auth->fetcher);
    for (size_t i = 0; i < d->nworkers; i++)
        gw_worker_wake(d->workers[i]);
    d->reloads_ok++;
    gw_log_info("SIGHUP: reloaded %s: generation %lu, %zu polic%s", d->config_path,
                next->generation, next->policies->n, next->policies->n == 1 ? "y" : "ies");
    gw_snapshot_unref(old);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct gw_daemon *d = arg;
    if (sig == SIGTERM || sig == SIGINT) {
        if (atomic_exchange(&d->stopping, true)) {
            gw_log_info("second %s: stopping now", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            atomic_store(&d->forced, true);
        } else {
            gw_log_info("%s: stopping: no new connections; draining requests in flight "
                        "(again to stop at once)",
                        sig == SIGTERM ? "SIGTERM" : "SIGINT");
        }
        for (size_t i = 0; i < d->nworkers; i++)
            gw_worker_wake(d->workers[i]);
    } else if (sig == SIGUSR1) {
        if (gw_log_reopen(d->access) != 0)
            gw_log_error("SIGUSR1: cannot reopen the access log: %s", strerror(errno));
        else
            gw_log_info("SIGUSR1: access log reopened");
        gw_audit_reopen(d->audit); /* the writer logs how it went */
    } else if (sig == SIGHUP) {
        reload(d);
    }
}

/* ---- admin listener ---- */

static bool admin_ready(void *arg, char *why, size_t whylen)
{
    struct gw_daemon *d = arg;
    if (atomic_load(&d->stopping)) {
        snprintf(why, whylen, "stopping");
        return false;
    }
    char aw[250];
    if (!gw_audit_ready(d->audit, aw, sizeof aw)) {
        snprintf(why, whylen, "the audit log cannot be written: %s", aw);
        return false;
    }
    return true; /* the snapshot (config, keys, policies) loaded whole, or we would not run */
}

static void admin_metrics(void *arg, struct evbuffer *out)
{
    struct gw_daemon *d = arg;
    struct gw_metrics *shards[256];
    size_t n = d->nworkers < 256 ? d->nworkers : 256;
    for (size_t i = 0; i < n; i++)
        shards[i] = gw_worker_metrics(d->workers[i]);
    const char *reasons[GW_AUTH_REASONS];
    for (int i = 0; i < GW_AUTH_REASONS; i++)
        reasons[i] = gw_auth_reason_name((enum gw_auth_reason)i);
    gw_metrics_render(out, shards, n, reasons, GW_AUTH_REASONS);
    /* the current configuration's issuers: their keys, and the fetches of those that fetch
     * them (counted from its start) */
    struct gw_auth *au = d->snap->auth;
    struct gw_m_jwks jwks[64];
    size_t nj = 0;
    for (size_t i = 0; i < au->nissuers && nj < sizeof jwks / sizeof *jwks; i++) {
        jwks[nj].issuer = au->issuers[i].cfg->issuer;
        jwks[nj].fetched = gw_jwks_fetched(au->issuers[i].cfg);
        jwks[nj].keys = gw_jwks_key_count(&au->issuers[i]);
        gw_jwks_counts(au->fetcher, i, &jwks[nj].ok, &jwks[nj].failed);
        nj++;
    }
    struct gw_audit_stats st;
    gw_audit_get_stats(d->audit, &st);
    /* the certificates of the snapshot in use, as its contexts hold them (a reload that
     * brings new files brings new contexts) */
    const struct gw_config *c = d->snap->cfg;
    struct gw_m_cert certs[3];
    size_t nc = 0;
    if (gw_tls_expiry(d->snap->server_ctx, GW_TLS_SERVING, &certs[nc].seconds) == 0)
        certs[nc++].cert = "serving";
    if (c->tls.client_ca &&
        gw_tls_expiry(d->snap->server_ctx, GW_TLS_TRUSTED, &certs[nc].seconds) == 0)
        certs[nc++].cert = "client_ca";
    if (c->upstream.ca_file && /* not the system store: its roots are not ours to renew */
        gw_tls_expiry(d->snap->upstream_ctx, GW_TLS_TRUSTED, &certs[nc].seconds) == 0)
        certs[nc++].cert = "upstream_ca";
    long replicas = c->rate_limit.replicas, daily = c->rate_limit.upstream.daily;
    long budget = replicas > 1 ? daily / replicas : daily; /* request.c's share */
    struct gw_m_daemon dm = {.jwks = jwks,
                             .njwks = nj,
                             .audit = &st,
                             .reloads_ok = d->reloads_ok,
                             .reloads_failed = d->reloads_failed,
                             .generation = d->snap->generation,
                             .certs = certs,
                             .ncerts = nc,
                             .daily_here = !c->rate_limit.redis.enabled,
                             .daily_budget = budget < 1 ? 1 : budget,
                             .daily_used = gw_rl_daily_used(d->rl, (int64_t)time(NULL))};
    gw_metrics_render_daemon(out, &dm);
}

static void on_workers_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_daemon *d = arg;
    event_base_loopexit(d->main_base, NULL);
}

int gw_server_run(const char *config_path)
{
    struct gw_errs errs = {0};
    struct gw_snapshot *snap = gw_snapshot_build(config_path, &errs);
    for (size_t i = 0; i < errs.warnings.n; i++)
        gw_log_info("%s", errs.warnings.v[i]);
    if (snap == NULL) {
        for (size_t i = 0; i < errs.problems.n; i++)
            gw_log_error("%s", errs.problems.v[i]);
        gw_errs_free(&errs);
        return 1;
    }
    gw_errs_free(&errs);
    signal(SIGPIPE, SIG_IGN);
    /* JWKS URLs: fetched once before serving, then kept fresh by their own thread */
    int jwks_failed = gw_jwks_fetcher_start(snap->auth->fetcher);
    if (jwks_failed)
        gw_log_error("%d JWKS URL%s could not be fetched at start; retrying in the background",
                     jwks_failed, jwks_failed == 1 ? "" : "s");
    if (evthread_use_pthreads() != 0) {
        gw_snapshot_unref(snap);
        return 1;
    }
    struct gw_daemon d;
    memset(&d, 0, sizeof d);
    d.snap = snap;
    d.config_path = config_path;
    pthread_mutex_init(&d.snap_mu, NULL);
    gw_snapshot_follow(snap, NULL);
    atomic_init(&d.stopping, false);
    d.access = gw_log_open(snap->cfg->access_log.file);
    if (d.access == NULL) {
        gw_log_error("access_log.file: cannot open %s: %s", snap->cfg->access_log.file,
                     strerror(errno));
        gw_snapshot_unref(snap);
        return 1;
    }
    char why[1200];
    d.rl = gw_rl_new();
    d.audit = d.rl ? gw_audit_open(snap->cfg, why, sizeof why) : NULL;
    if (d.rl == NULL)
        snprintf(why, sizeof why, "out of memory");
    if (d.audit == NULL || gw_audit_start(d.audit) != 0) {
        gw_log_error("%s", d.audit ? "audit: cannot start the writer thread" : why);
        gw_audit_free(d.audit);
        gw_rl_free(d.rl);
        gw_log_close(d.access);
        gw_snapshot_unref(snap);
        return 1;
    }
    d.nworkers = (size_t)snap->cfg->listen.workers;
    d.workers = calloc(d.nworkers, sizeof(struct gw_worker *));
    d.shared = (struct gw_worker_shared){.audit = d.audit,
                                         .access = d.access,
                                         .rl = d.rl,
                                         .store = &d.store,
                                         .nworkers = d.nworkers,
                                         .snapshot = current_snapshot,
                                         .stopping = is_stopping,
                                         .forced = is_forced,
                                         .exited = worker_exited,
                                         .arg = &d};
    d.main_base = event_base_new();
    d.worker_done = d.main_base ? event_new(d.main_base, -1, 0, on_workers_done, &d) : NULL;
    int rc = 1;
    size_t started = 0, set_up = 0;
    struct event *sigs[4] = {0};
    if (d.workers == NULL || d.main_base == NULL || d.worker_done == NULL)
        goto out;
    /* Signals first: once a listener is bound, clients can connect, and a SIGTERM from then on
     * must drain, not kill. */
    static const int signo[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        sigs[i] = evsignal_new(d.main_base, signo[i], on_signal, &d);
        if (sigs[i] == NULL || event_add(sigs[i], NULL) != 0)
            goto out;
    }
    if (gw_worker_port_free(snap->cfg) != 0)
        goto out;
    struct gw_admin_ops aops = {admin_ready, admin_metrics, &d};
    d.admin = gw_admin_start(d.main_base, snap->cfg, &aops, why, sizeof why);
    if (d.admin == NULL) {
        gw_log_error("%s", why);
        goto out;
    }
    for (; set_up < d.nworkers; set_up++)
        if ((d.workers[set_up] = gw_worker_new(&d.shared, (int)set_up, snap)) == NULL)
            goto out;
    gw_jwks_listen(keys_fetched, &d); /* every worker is set up */
    atomic_init(&d.running, d.nworkers);
    for (; started < d.nworkers; started++)
        if (gw_worker_start(d.workers[started]) != 0)
            goto out;
    gw_log_info("listening on %s:%ld (TLS, %zu worker%s); upstream %s", snap->cfg->listen.address,
                snap->cfg->listen.port, d.nworkers, d.nworkers == 1 ? "" : "s",
                snap->cfg->upstream.url);
    event_base_dispatch(d.main_base);
    rc = 0;
out:
    if (rc != 0 && started > 0) {
        atomic_store(&d.stopping, true);
        for (size_t i = 0; i < started; i++)
            gw_worker_wake(d.workers[i]);
    }
    for (size_t i = 0; i < started; i++)
        gw_worker_join(d.workers[i]);
    gw_jwks_listen(NULL, NULL); /* before the workers go */
    for (size_t i = 0; i < set_up; i++) /* records a worker's last pass had not handed over */
        gw_worker_finish(d.workers[i]);
    /* the writer answers the intents still queued on the workers' (stopped) loops, so it
     * stops before they are torn down; the file is synced and the chain state saved */
    gw_audit_stop(d.audit);
    for (size_t i = 0; i < set_up; i++)
        gw_worker_free(d.workers[i]);
    /* From here a late signal must not kill the process half way through its teardown: freeing
     * the signal events puts back the default action, so block and then ignore them first. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, NULL);
    for (int i = 0; i < 4; i++)
        if (sigs[i])
            event_free(sigs[i]);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    gw_admin_free(d.admin);
    if (d.worker_done)
        event_free(d.worker_done);
    if (d.main_base)
        event_base_free(d.main_base);
    free(d.workers);
    gw_log_close(d.access);
    gw_audit_free(d.audit);
    gw_rl_free(d.rl);
    gw_snapshot_unref(d.snap);
    pthread_mutex_destroy(&d.snap_mu);
    if (rc == 0)
        gw_log_info("stopped");
    return rc;
}
