/* auth: authentication of callers by JWT bearer tokens (SPEC §4).
 *
 * Owns: the configured issuers with their keys (PEM, secrets, JWKS file, JWKS URL keys kept
 * up to date by jwks.c), the verification pipeline and the verified principal.
 *
 * The pipeline, in order: size cap; three strict canonical base64url segments; the header
 * parsed by the gateway (object, no duplicate members, alg a string, typ absent or JWT, no
 * crit; jwk/jku/x5u/x5c never used); the payload parsed strictly (object, no duplicates) and
 * its "iss" choosing the issuer; the key chosen by kid (or the issuer's only key) with its
 * pinned algorithm equal to the header's, exactly; the signature checked by the gateway's
 * OpenSSL layer (keys.h) and then, for the algorithms libjwt 1.10.2 has (HS*, RS*, ES*), by
 * libjwt, called only with a non-empty key, whose resulting alg must be the pinned one (PS* and
 * EdDSA: the OpenSSL layer alone decides); then the claims, with explicit types: exp
 * (required) / nbf / iat integer literals against leeway and the maximum lifetime, aud against
 * the audiences, the subject claim a non-empty string, the scope claims a space-separated
 * string or an array of strings.
 *
 * Memory: gw_auth_build returns an auth the caller frees (gw_auth_free) after stopping its
 * fetcher; a principal is refcounted (the token cache shares it between requests).
 * Threads: gw_jwt_verify from any worker; the auth is immutable but for the JWKS URL keysets,
 * which are swapped atomically.
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "issuers.h"
#include "keys.h"

struct gw_config;
struct gw_cfg_issuer;
struct gw_errs;
struct gw_op;

/* The reason classes of SPEC §4 (WWW-Authenticate, access log, metrics). */
enum gw_auth_reason {
    GW_AUTH_OK = 0,
    GW_AUTH_MISSING, /* no bearer token at all */
    GW_AUTH_MALFORMED,
    GW_AUTH_UNKNOWN_ISSUER,
    GW_AUTH_UNKNOWN_KEY,
    GW_AUTH_BAD_SIGNATURE,
    GW_AUTH_EXPIRED,
    GW_AUTH_NOT_YET_VALID,
    GW_AUTH_BAD_CLAIMS,
    GW_AUTH_AUDIENCE,
    GW_AUTH_BINDING, /* RFC 8705: not bound to the connection's client certificate (§4.3) */
    GW_AUTH_REASONS
};
const char *gw_auth_reason_name(enum gw_auth_reason r);

struct gw_principal {
    atomic_int refs;
    const struct gw_issuer *issuer;
    const char *iss, *sub;       /* point into claims */
    const char *client_id, *jti; /* may be NULL */
    int64_t exp;
    const char **scopes; /* point into claims */
    size_t nscopes;
    cJSON *claims;                /* the verified payload */
    unsigned char subject_id[32]; /* gw_subject_id(iss, sub): the rate limiter's key */
    unsigned long key_epoch;      /* the issuer's key_epoch when its key was chosen */
    const char *cnf_x5t;          /* cnf's x5t#S256 (RFC 8705), or NULL; points into claims */
};

/* The fixed-size id of the subject iss + sub, of any length: SHA-256 over each string prefixed
 * with its length (8 bytes, big-endian), so no split of the same bytes ("ab" + "c", "a" + "bc")
 * gives another subject's id and two subjects share one only by a SHA-256 collision. Computed
 * once per verified token, so a cache hit pays nothing. Returns 0, or -1 out of memory. */
int gw_subject_id(const char *iss, const char *sub, unsigned char out[32]);

/* Loads every issuer's keys from the config (check_files: they were checked to exist).
 * Returns 0, or -1 with every problem in errs. */
int gw_auth_build(const struct gw_config *cfg, struct gw_auth **out, struct gw_errs *errs);
void gw_auth_free(struct gw_auth *a);
/* The issuers' rules (issuer names, subject and scope claims) without their keys: for the
 * offline commands, which read claims instead of verifying tokens. NULL when out of memory. */
struct gw_auth *gw_auth_build_rules(const struct gw_config *cfg);

/* The whole pipeline. now: seconds since the epoch. Returns GW_AUTH_OK with *out (one
 * reference), or the reason the token is refused. Never logs. */
enum gw_auth_reason gw_jwt_verify(struct gw_auth *a, const char *token, size_t len, int64_t now,
                                  struct gw_principal **out);

/* A token refused unknown_key because its kid is not (yet) in its issuer's fetched JWKS: the
 * refetch it asked for may bring the key (SPEC §4.1). */
struct gw_key_miss {
    struct gw_issuer *issuer; /* NULL: nothing to wait for */
    int64_t refetch_at;       /* when the refetch starts (seconds) */
    unsigned long fetch_gen;  /* the issuer's fetch_gen before the refetch was asked for */
};
/* gw_jwt_verify, which also fills *miss (issuer NULL unless the token was refused for an
 * unknown kid of an issuer whose JWKS is fetched). miss NULL: an unknown kid asks for no
 * refetch (a request verified again after its wait asks only once). */
enum gw_auth_reason gw_jwt_verify_miss(struct gw_auth *a, const char *token, size_t len,
                                       int64_t now, struct gw_principal **out,
                                       struct gw_key_miss *miss);

/* SPEC §4.3: p may be used on a connection whose client certificate has this SHA-256 (hex,
 * lower-case; "" without one): true when p carries no cnf x5t#S256, or one equal to the
 * base64url of that hash. */
bool gw_principal_bound_to(const struct gw_principal *p, const char *cert_sha256_hex);

/* False once a key has left p's issuer's JWKS URL set since p was verified (SPEC §4.1): p may
 * have been verified with it, so a cache must not serve p again; verified anew, its token gets
 * unknown_key if its key is gone. One atomic load: the token cache's hit path. Any thread. */
bool gw_principal_key_current(const struct gw_principal *p);
bool gw_principal_has_scope(const struct gw_principal *p, const char *scope);
/* The caller holds every scope of at least one of the op's security requirements (an
 * alternative without scopes grants nothing). */
bool gw_principal_holds_op_scopes(const struct gw_principal *p, const struct gw_op *op);

/* A principal for claims given without a token (explain, policy-test): the issuer chosen by
 * iss, the subject and the scopes read exactly as for a verified token, the other claims
 * checked for type; no signature, time or audience check. Returns GW_AUTH_OK with *out (one
 * reference), GW_AUTH_UNKNOWN_ISSUER, or GW_AUTH_BAD_CLAIMS. claims is copied. */
enum gw_auth_reason gw_principal_from_claims(const struct gw_auth *a, const cJSON *claims,
                                             struct gw_principal **out);
struct gw_principal *gw_principal_ref(struct gw_principal *p);
void gw_principal_unref(struct gw_principal *p);

/* The token of an Authorization header value: "Bearer" (any case), one space, the token
 * (non-empty, no space). value NULL or repeated: the header was absent or sent more than once.
 * Returns GW_AUTH_OK (*token, *len set), GW_AUTH_MISSING (absent, or another scheme) or
 * GW_AUTH_MALFORMED (repeated, or a bearer value that is empty or malformed). */
enum gw_auth_reason gw_bearer_token(const char *value, bool repeated, const char **token,
                                    size_t *len);

#endif
