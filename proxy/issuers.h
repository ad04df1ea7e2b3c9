/* issuers: the configured issuers with their keys, as auth.c builds them and jwks.c keeps
 * their JWKS URL keysets up to date: the types the two share, so that neither includes the
 * other's header.
 *
 * Memory: built and freed by auth.c (gw_auth_build, gw_auth_free); jwks.c only swaps url_keys.
 * Threads: immutable once built, but for url_keys (under url_mu), key_epoch and refetch_wanted.
 */
#ifndef GW_ISSUERS_H
#define GW_ISSUERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

struct gw_cfg_issuer;
struct gw_jwks_fetcher;
struct gw_key;
struct gw_keyset;

struct gw_issuer {
    const struct gw_cfg_issuer *cfg; /* issuer, audiences, leeway, lifetime, claim names */
    struct gw_key *keys;             /* from "keys" (pem_file / secret_file) */
    size_t nkeys;
    struct gw_keyset *file_keys; /* from jwks_file, or NULL */
    /* from jwks_url: the last good fetch, or NULL. Read (and referenced) and swapped only under
     * url_mu: a bare atomic load could pick up a set the fetcher frees before the reference
     * is taken. */
    struct gw_keyset *url_keys;
    pthread_mutex_t url_mu;
    /* moves, under url_mu and with the swap, when a key leaves the URL set (gw_jwks_install):
     * a principal verified at another epoch is not served from a cache */
    atomic_ulong key_epoch;
    atomic_llong refetch_wanted; /* an unknown kid was seen: when (seconds), 0 if not */
    /* moves after every fetch of the issuer's JWKS ends, good or not, once its keys are
     * installed (and when its fetcher stops): a request waiting for a refetch (SPEC §4.1) is
     * decided again once it has moved */
    atomic_ulong fetch_gen;
};

struct gw_auth {
    struct gw_issuer *issuers;
    size_t nissuers;
    size_t max_token_bytes;
    struct gw_jwks_fetcher *fetcher; /* NULL when no issuer has a jwks_url */
};

#endif
