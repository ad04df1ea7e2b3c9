/* token_cache: verified tokens, so a token is verified once, not on every request.
 *
 * Keyed by the SHA-256 of the exact token string (strict base64url makes the string the only
 * spelling of the token); an entry is used only before its token's exp and while no key has
 * left its issuer's JWKS URL set since it was verified (gw_principal_key_current: a withdrawn
 * key's tokens are verified again, and refused); set-associative and bounded, replacing the
 * entry that expires first. One cache per worker: no lock.
 *
 * Memory: entries hold a principal reference; gw_token_cache_free drops them.
 * Threads: the owning worker's thread only.
 */
#ifndef GW_TOKEN_CACHE_H
#define GW_TOKEN_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct gw_principal;
struct gw_token_cache;

/* entries 0: a cache that never holds anything. */
struct gw_token_cache *gw_token_cache_new(size_t entries);
void gw_token_cache_free(struct gw_token_cache *c);

/* A principal reference (the caller unrefs), or NULL. now: seconds since the epoch. */
struct gw_principal *gw_token_cache_get(struct gw_token_cache *c, const unsigned char key[32],
                                        int64_t now);
/* Keeps p (takes its own reference) until `until` (seconds). */
void gw_token_cache_put(struct gw_token_cache *c, const unsigned char key[32],
                        struct gw_principal *p, int64_t until);
/* Drops everything (the issuers changed). */
void gw_token_cache_clear(struct gw_token_cache *c);

#endif
