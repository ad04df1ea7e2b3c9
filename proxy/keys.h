/* keys: verification keys, each pinned to one algorithm, and the JWS signature layer.
 *
 * Owns: loading PEM public keys (RSA >= 2048 bits with an odd e >= 3, for RS* or PS*; EC on the
 * curve its algorithm names; Ed25519 for EdDSA, Ed448 refused), HMAC secrets (at least as long
 * as the hash, never PEM text), and JWK/JWKS documents (RSA, EC and OKP Ed25519 keys converted
 * with OpenSSL; "oct" keys, keys whose "use" is not "sig" and OKP keys on other curves are
 * ignored; a duplicate kid refuses the set); gw_sig_verify, the one signature check of every
 * algorithm (OpenSSL's EVP interface: PS* and EdDSA, which libjwt 1.10.2 lacks, are verified
 * here and nowhere else); and gw_jws_verify, which checks a compact JWS against one key with it
 * (strict lexical form, header, exact signature length, HMAC compared in constant time).
 *
 * Memory: a gw_key owns its strings, secret and EVP_PKEY (gw_key_clear wipes and frees). A
 * keyset is refcounted (gw_keyset_ref / gw_keyset_unref) because fetched JWKS sets are
 * swapped while requests may still hold the old one.
 * Threads: loading on any thread; a loaded key or keyset is immutable and shared.
 */
#ifndef GW_KEYS_H
#define GW_KEYS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>
#include <openssl/evp.h>

/* Up to GW_ALG_ES512 the same order as libjwt's jwt_alg_t, so those map one to one; the
 * algorithms after it are not libjwt's (1.10.2 has no PS* or EdDSA): never cast one to
 * jwt_alg_t (gw_alg_in_libjwt says which may be). */
enum gw_alg {
    GW_ALG_NONE = 0,
    GW_ALG_HS256,
    GW_ALG_HS384,
    GW_ALG_HS512,
    GW_ALG_RS256,
    GW_ALG_RS384,
    GW_ALG_RS512,
    GW_ALG_ES256,
    GW_ALG_ES384,
    GW_ALG_ES512,
    GW_ALG_PS256, /* RSASSA-PSS, MGF1 with the same hash, salt as long as the hash */
    GW_ALG_PS384,
    GW_ALG_PS512,
    GW_ALG_EDDSA, /* Ed25519 only (RFC 8037 "EdDSA") */
};

const char *gw_alg_name(enum gw_alg a);
/* Exact, case-sensitive ("rs256", "EDDSA" and "none" give GW_ALG_NONE). */
enum gw_alg gw_alg_from_name(const char *name);
bool gw_alg_is_hmac(enum gw_alg a);
/* HS*, RS* and ES*: the algorithms libjwt 1.10.2 has, whose gw_alg value is its jwt_alg_t. */
bool gw_alg_in_libjwt(enum gw_alg a);

struct gw_key {
    char *kid;               /* NULL when the key has none */
    enum gw_alg alg;         /* the only algorithm this key verifies */
    unsigned char *material; /* HS: the secret; public keys: SubjectPublicKeyInfo PEM text
                                (libjwt's input for RS/ES) */
    size_t material_len;
    EVP_PKEY *pkey; /* RS/PS/ES/EdDSA; NULL for HS */
};

struct gw_keyset {
    atomic_int refs;
    struct gw_key *keys;
    size_t n;
};

/* Each returns 0, or -1 with a message in why (which never contains key material). kid may be
 * NULL. A PEM key must be of alg's type: RSA (rsaEncryption) for RS* and PS*, EC for ES*,
 * Ed25519 for EdDSA. */
int gw_key_from_pem(const char *pem, size_t len, enum gw_alg alg, const char *kid,
                    struct gw_key *out, char *why, size_t whylen);
int gw_key_from_secret(const unsigned char *secret, size_t len, enum gw_alg alg, const char *kid,
                       struct gw_key *out, char *why, size_t whylen);
/* One JWK object. Its algorithm is its "alg", or when absent RS256 for RSA, ES256/384/512 by
 * the EC curve, EdDSA for OKP Ed25519. Returns 1 when loaded, 0 when the key is to be ignored
 * (why says why: an "oct" key, "use" not "sig", "key_ops" without "verify", an algorithm or
 * curve the gateway does not support (OKP Ed448, X25519, X448 among them), an RSA key under
 * 2048 bits or with a bad exponent: such a key can never verify a token, and the rest of an
 * IdP's set stays usable), -1 when it is invalid (bad or missing members, a point not on the
 * curve, an Ed25519 "x" that is not 32 bytes, an "alg" that does not fit the key: EdDSA on
 * RSA, PS256 on EC, RS256 on OKP...). */
int gw_key_from_jwk(const cJSON *jwk, struct gw_key *out, char *why, size_t whylen);
void gw_key_clear(struct gw_key *k);

/* A JWKS document {"keys":[...]}. Ignored keys are left out; invalid keys, a duplicate kid or a
 * set without one usable key refuse the document (NULL, why filled). One reference. */
struct gw_keyset *gw_jwks_parse(const char *buf, size_t len, char *why, size_t whylen);
struct gw_keyset *gw_keyset_ref(struct gw_keyset *s);
void gw_keyset_unref(struct gw_keyset *s);
/* Keeps the keys of a set not yet shared (one reference) for which keep answers true, in
 * order; the others are cleared. Returns how many are left. */
size_t gw_keyset_keep(struct gw_keyset *s, bool (*keep)(const struct gw_key *k, void *arg),
                      void *arg);
/* How many keys of old are not in next (a key stays when next holds one with the same kid,
 * algorithm and public key): replacing old by next withdraws them. Either may be NULL. */
size_t gw_keyset_withdrawn(const struct gw_keyset *old, const struct gw_keyset *next);

enum gw_jws_result {
    GW_JWS_OK = 0,
    GW_JWS_MALFORMED,     /* not three strict base64url segments, header not a JSON object
                             without duplicates, alg not a string, crit present, typ not JWT */
    GW_JWS_WRONG_ALG,     /* header alg is not exactly the key's pinned alg */
    GW_JWS_BAD_SIGNATURE, /* wrong length or does not verify */
};

/* True when typ (a JOSE header's "typ" string) is one the gateway accepts: JWT, or RFC 9068's
 * at+jwt (*at_jwt set), compared case-insensitively, with an optional "application/" prefix
 * (RFC 7515 §4.1.9). */
bool gw_jws_typ_ok(const char *typ, bool *at_jwt);

/* True when sig is a signature of msg under key with the key's pinned algorithm, of exactly the
 * algorithm's length (HS: the hash; RS/PS: the modulus; ES: twice the field, R||S as JWS
 * writes it; EdDSA: 64 bytes). OpenSSL EVP only: PS* with RSA_PKCS1_PSS_PADDING, MGF1 and a
 * salt length both of the algorithm's hash; EdDSA one-shot Ed25519 (no prehash). */
bool gw_sig_verify(const struct gw_key *key, const unsigned char *msg, size_t msglen,
                   const unsigned char *sig, size_t siglen);

/* Verifies the compact JWS token[0..len) with key through gw_sig_verify (OpenSSL only); the
 * payload is not interpreted. */
enum gw_jws_result gw_jws_verify(const char *token, size_t len, const struct gw_key *key);

#endif
