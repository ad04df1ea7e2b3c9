/* jwks: keeps the keys of issuers with a jwks_url, or with discovery, up to date.
 *
 * One thread fetches each URL over verified TLS (the issuer's jwks_ca_file, or the system
 * store; hostname checked; at most 1 MiB; 200 only; connecting, TLS and reading all within
 * 5 s; name resolution is the system resolver's, with its own timeouts) when started and every
 * jwks_refresh_s, and again when a worker reports an unknown kid, at most once every
 * jwks_refetch_min_s per issuer. With discovery (SPEC §4.2) the start and every refresh first
 * fetch <issuer>/.well-known/openid-configuration the same way, and read the JWKS at its
 * jwks_uri once its issuer is the configured one (discovery.c); an unknown kid's refetch reads
 * the JWKS at the last valid document's jwks_uri, without the document. A good document
 * replaces the issuer's URL keyset atomically; a key it no longer holds is withdrawn with the
 * swap (gw_jwks_install); a failed fetch (the discovery document's included) keeps the last
 * good keys. While an issuer has no URL keys, a failed fetch is retried after 1 s, doubling up
 * to min(jwks_refresh_s, 60 s). Fetching never happens on a worker's event loop.
 *
 * Memory: the fetcher belongs to its gw_auth (gw_auth_free stops and frees it).
 * Threads: gw_jwks_request_refetch from any thread; start/stop from the main thread.
 */
#ifndef GW_JWKS_H
#define GW_JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_auth;
struct gw_cfg_issuer;
struct gw_issuer;
struct gw_keyset;
struct gw_jwks_fetcher;

/* True when the fetcher keeps this issuer's keys: it has a jwks_url, or discovery. */
bool gw_jwks_fetched(const struct gw_cfg_issuer *ci);

struct gw_jwks_fetcher *gw_jwks_fetcher_new(struct gw_auth *a);
/* Fetches every issuer's keys once (each within a few seconds; twice that with discovery),
 * then starts the thread. Returns the number of issuers whose keys could not be fetched (they
 * have no URL keys until a retry works). */
int gw_jwks_fetcher_start(struct gw_jwks_fetcher *f);
/* Stops the thread (if started) and waits for it; the keys fetched so far stay in use (a
 * replaced snapshot's fetcher is stopped on reload, on the main thread). */
void gw_jwks_fetcher_stop(struct gw_jwks_fetcher *f);
/* Stops the thread (if started) and frees the fetcher. */
void gw_jwks_fetcher_free(struct gw_jwks_fetcher *f);

/* Reload: issuers of `to` whose issuer and jwks_url are those of an issuer of `from`, or whose
 * issuer is that of a discovery issuer of `from` and has discovery too, start with its last
 * good URL keys (a failed fetch at reload then keeps them, as at any other
 * time). Call before starting to's fetcher. */
void gw_jwks_adopt_keys(struct gw_auth *to, struct gw_auth *from);

/* Makes set (its reference taken; may be NULL) the issuer's URL keys and releases the old set.
 * When a key of the old set is not in the new one, the issuer's key_epoch moves with the swap,
 * so every worker's cache drops the tokens verified before it, before the new set answers a
 * request (SPEC §4.1). Returns the number of keys withdrawn. Any thread; one writer per issuer
 * at a time (its fetcher, or the reload before that fetcher starts). */
size_t gw_jwks_install(struct gw_issuer *is, struct gw_keyset *set);

/* check: fetches each issuer's keys once (discovery document first) and adds a warning for
 * each that fails. */
struct gw_errs;
void gw_jwks_check(struct gw_auth *a, struct gw_errs *errs);

/* A worker saw a kid it does not know for this issuer (now: seconds). Returns the time
 * (seconds) at which the refetch will start: now, or later when the last fetch was less than
 * jwks_refetch_min_s ago; INT64_MAX when the issuer has no fetcher. */
int64_t gw_jwks_request_refetch(struct gw_auth *a, struct gw_issuer *is, int64_t now);

/* The process's listener for ended fetches (SPEC §4.1: requests wait for a refetch): fn(arg)
 * is called on the fetcher's thread after every fetch has ended and its keys are installed
 * (the issuer's fetch_gen has moved), and when a fetcher stops. fn must only wake someone.
 * NULL removes it; once this returns, fn is no longer running nor called. */
void gw_jwks_listen(void (*fn)(void *arg), void *arg);

/* Fetch counts, for the metrics: per issuer index. A fetch is one round: the discovery
 * document and the JWKS, or the JWKS alone. */
void gw_jwks_counts(const struct gw_jwks_fetcher *f, size_t issuer, uint64_t *ok, uint64_t *fail);
/* The keys an issuer can verify with now, for the metrics: its configured keys, its JWKS
 * file's and its last good fetched set's. Any thread. */
size_t gw_jwks_key_count(struct gw_issuer *is);

/* A bounded blocking HTTPS GET (used by the fetcher; public for tests). On success returns 0,
 * *body (malloc'd, NUL-terminated) and *len; else -1 with why. ca_file NULL: system store. */
int gw_https_get(const char *url, const char *ca_file, int timeout_ms, size_t max_bytes,
                 char **body, size_t *len, char *why, size_t whylen);

#endif
