/* snapshot: one immutable bundle of everything a request needs from configuration: the config,
 * the OpenAPI model, the issuers, the policies, the upstream credentials and the TLS contexts.
 * Built whole (all or nothing), then shared by the workers; a request takes a reference at its
 * start and finishes on that snapshot even if a newer one is swapped in.
 *
 * Memory: gw_snapshot_build returns a snapshot with one reference; gw_snapshot_ref adds one,
 * gw_snapshot_unref drops one and frees on the last (wiping the credentials).
 * Threads: build on the main thread; ref/unref and reads from any thread.
 */
#ifndef GW_SNAPSHOT_H
#define GW_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "config.h"
#include "auth.h"
#include "openapi.h"
#include "policy.h"

struct gw_credential {
    char *location_id; /* NULL for the agency token */
    char *token;       /* header-safe characters only; never logged */
    size_t len;
};

struct gw_snapshot {
    atomic_int refs;
    unsigned long generation;
    struct gw_config *cfg;
    struct gw_openapi *api;
    struct gw_auth *auth;            /* issuers and their keys */
    struct gw_policies *policies;    /* policies.dir, validated against api */
    struct gw_credential agency;     /* token NULL when not configured */
    struct gw_credential *locations; /* sorted by location_id */
    struct gw_credential redis;      /* rate_limit.redis.password_file's value (token NULL: none) */
    size_t nlocations;
    SSL_CTX *server_ctx;
    SSL_CTX *upstream_ctx;
    bool offline; /* gw_snapshot_build_offline: no tokens, keys or TLS contexts */
};

/* Loads the config at path and everything it names. Returns NULL with every problem in errs;
 * warnings (which do not fail) go to errs->warnings in both cases. */
struct gw_snapshot *gw_snapshot_build(const char *path, struct gw_errs *errs);
/* For the offline commands (explain, policy-test), which decide but never serve: the config
 * (named files not checked), the OpenAPI document, the policies and the issuers' claim rules.
 * No key, certificate or credential file is read: which credentials are configured is known
 * from the config alone (offline is set). */
struct gw_snapshot *gw_snapshot_build_offline(const char *path, struct gw_errs *errs);
/* next replaces prev (NULL: the first of the process): its generation is prev's plus one. */
void gw_snapshot_follow(struct gw_snapshot *next, const struct gw_snapshot *prev);
struct gw_snapshot *gw_snapshot_ref(struct gw_snapshot *s);
void gw_snapshot_unref(struct gw_snapshot *s);

/* The Sub-Account credential of a location, or NULL (offline: its token is NULL). */
const struct gw_credential *gw_snapshot_location(const struct gw_snapshot *s,
                                                 const char *location_id);

/* Reads a secret file: the whole file but one trailing newline; 1..max bytes of visible
 * ASCII. Returns a malloc'd copy (wipe it with OPENSSL_clear_free) or NULL with why filled. */
char *gw_read_secret(const char *path, size_t max, size_t *len, char *why, size_t whylen);

#endif
