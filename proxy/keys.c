#include "keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "b64url.h"
#include "json.h"

#define MAX_KID 256
#define MIN_RSA_BITS 2048
#define MAX_JWKS_KEYS 64
#define ED25519_KEY_LEN 32
#define ED25519_SIG_LEN 64

/* F_RSA is PKCS#1 v1.5 (RS*), F_PSS RSASSA-PSS (PS*): both take the same RSA keys. */
enum family { F_NONE, F_HMAC, F_RSA, F_PSS, F_EC, F_EDDSA };

static const struct {
    const char *name;
    enum family family;
    const char *md;    /* digest name; NULL for EdDSA (no prehash) */
    size_t hash_len;   /* HS: the minimum secret length; PS: the salt length */
    const char *curve; /* EC: OpenSSL group name */
    const char *crv;   /* EC: JWK crv */
    size_t field;      /* EC: bytes of one coordinate */
} algs[] = {
    [GW_ALG_NONE] = {"none", F_NONE},
    [GW_ALG_HS256] = {"HS256", F_HMAC, "SHA256", 32},
    [GW_ALG_HS384] = {"HS384", F_HMAC, "SHA384", 48},
    [GW_ALG_HS512] = {"HS512", F_HMAC, "SHA512", 64},
    [GW_ALG_RS256] = {"RS256", F_RSA, "SHA256"},
    [GW_ALG_RS384] = {"RS384", F_RSA, "SHA384"},
    [GW_ALG_RS512] = {"RS512", F_RSA, "SHA512"},
    [GW_ALG_ES256] = {"ES256", F_EC, "SHA256", 0, "prime256v1", "P-256", 32},
    [GW_ALG_ES384] = {"ES384", F_EC, "SHA384", 0, "secp384r1", "P-384", 48},
    [GW_ALG_ES512] = {"ES512", F_EC, "SHA512", 0, "secp521r1", "P-521", 66},
    [GW_ALG_PS256] = {"PS256", F_PSS, "SHA256", 32},
    [GW_ALG_PS384] = {"PS384", F_PSS, "SHA384", 48},
    [GW_ALG_PS512] = {"PS512", F_PSS, "SHA512", 64},
    [GW_ALG_EDDSA] = {"EdDSA", F_EDDSA},
};
#define NALGS (sizeof algs / sizeof *algs)

const char *gw_alg_name(enum gw_alg a)
{
    return (size_t)a < NALGS ? algs[a].name : "?";
}

enum gw_alg gw_alg_from_name(const char *name)
{
    for (size_t i = 1; name && i < NALGS; i++)
        if (strcmp(name, algs[i].name) == 0)
            return (enum gw_alg)i;
    return GW_ALG_NONE;
}

bool gw_alg_is_hmac(enum gw_alg a)
{
    return (size_t)a < NALGS && algs[a].family == F_HMAC;
}

bool gw_alg_in_libjwt(enum gw_alg a)
{
    return a >= GW_ALG_HS256 && a <= GW_ALG_ES512;
}

static int fail(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return -1;
}

void gw_key_clear(struct gw_key *k)
{
    if (k == NULL)
        return;
    free(k->kid);
    if (k->material)
        OPENSSL_clear_free(k->material, k->material_len);
    EVP_PKEY_free(k->pkey);
    memset(k, 0, sizeof *k);
}

/* RSA (RS*, PS*): at least 2048 bits, e odd and at least 3. EC: on the curve the algorithm
 * names. EdDSA: Ed25519. */
static int check_public_key(EVP_PKEY *pkey, enum gw_alg alg, char *why, size_t whylen)
{
    if (algs[alg].family == F_EDDSA) {
        if (EVP_PKEY_is_a(pkey, "ED25519"))
            return 0;
        return fail(why, whylen,
                    EVP_PKEY_is_a(pkey, "ED448")
                        ? "an EdDSA key must be Ed25519 (Ed448 is not supported)"
                        : "an EdDSA key must be Ed25519");
    }
    if (algs[alg].family == F_RSA || algs[alg].family == F_PSS) {
        /* an id-RSASSA-PSS key carries its own hash and salt rules: one place decides them */
        if (EVP_PKEY_is_a(pkey, "RSA-PSS"))
            return fail(why, whylen,
                        "an RSA-PSS (id-RSASSA-PSS) key: configure it as a plain RSA public "
                        "key (rsaEncryption)");
        if (!EVP_PKEY_is_a(pkey, "RSA"))
            return fail(why, whylen, "not an RSA key");
        if (EVP_PKEY_get_bits(pkey) < MIN_RSA_BITS)
            return fail(why, whylen, "RSA key shorter than 2048 bits");
        BIGNUM *e = NULL;
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
            return fail(why, whylen, "RSA key without an exponent");
        bool ok = BN_is_odd(e) && BN_cmp(e, BN_value_one()) > 0;
        BN_free(e);
        if (!ok)
            return fail(why, whylen, "RSA exponent must be odd and at least 3");
        return 0;
    }
    if (!EVP_PKEY_is_a(pkey, "EC"))
        return fail(why, whylen, "not an EC key");
    char group[64];
    size_t glen;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &glen) != 1 ||
        strcmp(group, algs[alg].curve) != 0) {
        snprintf(why, whylen, "%s needs a %s key", algs[alg].name, algs[alg].crv);
        return -1;
    }
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return ok ? 0 : fail(why, whylen, "EC point is not on the curve");
}

/* Takes pkey: checks it, and stores it with its SubjectPublicKeyInfo PEM (libjwt's input). */
static int adopt_public_key(EVP_PKEY *pkey, enum gw_alg alg, const char *kid, struct gw_key *out,
                            char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (check_public_key(pkey, alg, why, whylen) != 0) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n = 0;
    if (b == NULL || PEM_write_bio_PUBKEY(b, pkey) != 1 || (n = BIO_get_mem_data(b, &data)) <= 0) {
        BIO_free(b);
        EVP_PKEY_free(pkey);
        return fail(why, whylen, "cannot write the key as PEM");
    }
    out->material = OPENSSL_malloc((size_t)n + 1);
    out->kid = kid ? strdup(kid) : NULL;
    if (out->material == NULL || (kid && out->kid == NULL)) {
        BIO_free(b);
        EVP_PKEY_free(pkey);
        gw_key_clear(out);
        return fail(why, whylen, "out of memory");
    }
    memcpy(out->material, data, (size_t)n);
    out->material[n] = '\0';
    out->material_len = (size_t)n;
    BIO_free(b);
    out->pkey = pkey;
    out->alg = alg;
    return 0;
}

int gw_key_from_pem(const char *pem, size_t len, enum gw_alg alg, const char *kid,
                    struct gw_key *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if ((size_t)alg >= NALGS || algs[alg].family == F_NONE || algs[alg].family == F_HMAC)
        return fail(why, whylen, "a PEM key needs an RS*, PS*, ES* or EdDSA algorithm");
    if (memmem(pem, len, "PRIVATE KEY", 11) != NULL)
        return fail(why, whylen, "a private key: configure the public key");
    if (memmem(pem, len, "CERTIFICATE", 11) != NULL)
        return fail(why, whylen, "a certificate: configure the public key (BEGIN PUBLIC KEY)");
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    if (pkey == NULL)
        return fail(why, whylen, "not a PEM public key (BEGIN PUBLIC KEY)");
    return adopt_public_key(pkey, alg, kid, out, why, whylen);
}

int gw_key_from_secret(const unsigned char *secret, size_t len, enum gw_alg alg, const char *kid,
                       struct gw_key *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if ((size_t)alg >= NALGS || algs[alg].family != F_HMAC)
        return fail(why, whylen, "a secret needs an HS* algorithm");
    if (len < algs[alg].hash_len) {
        snprintf(why, whylen, "an %s secret must be at least %zu bytes (this one has %zu)",
                 algs[alg].name, algs[alg].hash_len, len);
        return -1;
    }
    /* a public key's PEM as an HMAC secret is the algorithm-confusion attack's key */
    if (memmem(secret, len, "-----BEGIN", 10) != NULL)
        return fail(why, whylen, "an HMAC secret must not be PEM text");
    out->material = OPENSSL_malloc(len);
    out->kid = kid ? strdup(kid) : NULL;
    if (out->material == NULL || (kid && out->kid == NULL)) {
        gw_key_clear(out);
        return fail(why, whylen, "out of memory");
    }
    memcpy(out->material, secret, len);
    out->material_len = len;
    out->alg = alg;
    return 0;
}

/* ---- JWK ---- */

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A base64url member decoded into a new buffer; NULL if absent or not strict. */
static unsigned char *jb64(const cJSON *o, const char *k, size_t *len)
{
    const char *s = jstr(o, k);
    if (s == NULL || *s == '\0')
        return NULL;
    size_t sl = strlen(s);
    unsigned char *out = malloc(GW_B64URL_DECODED_MAX(sl));
    long n = out ? gw_b64url_decode(s, sl, out) : -1;
    if (n <= 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    ERR_clear_error();
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(const cJSON *jwk, char *why, size_t whylen)
{
    size_t nl = 0, el = 0;
    unsigned char *n = jb64(jwk, "n", &nl), *e = jb64(jwk, "e", &el);
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL;
    BIGNUM *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bn == NULL || be == NULL)
        snprintf(why, whylen, "RSA key without valid \"n\" and \"e\"");
    else if (bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        pkey = from_params("RSA", bld);
    if (pkey == NULL && bn && be)
        snprintf(why, whylen, "RSA key that OpenSSL does not accept");
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(const cJSON *jwk, enum gw_alg alg, char *why, size_t whylen)
{
    size_t xl = 0, yl = 0, f = algs[alg].field;
    unsigned char *x = jb64(jwk, "x", &xl), *y = jb64(jwk, "y", &yl);
    EVP_PKEY *pkey = NULL;
    if (x == NULL || y == NULL || xl != f || yl != f) {
        snprintf(why, whylen, "EC key without valid \"x\" and \"y\" of %zu bytes", f);
    } else {
        unsigned char point[1 + 2 * 66];
        point[0] = 0x04; /* uncompressed */
        memcpy(point + 1, x, f);
        memcpy(point + 1 + f, y, f);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld &&
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, algs[alg].curve, 0) ==
                1 &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * f) == 1)
            pkey = from_params("EC", bld);
        OSSL_PARAM_BLD_free(bld);
        if (pkey == NULL)
            snprintf(why, whylen, "EC point is not on the curve");
    }
    free(x);
    free(y);
    return pkey;
}

static EVP_PKEY *ed25519_from_jwk(const cJSON *jwk, char *why, size_t whylen)
{
    size_t xl = 0;
    unsigned char *x = jb64(jwk, "x", &xl);
    EVP_PKEY *pkey = NULL;
    if (x == NULL || xl != ED25519_KEY_LEN)
        snprintf(why, whylen, "Ed25519 key without a valid \"x\" of 32 bytes");
    else if ((pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl)) == NULL)
        snprintf(why, whylen, "Ed25519 key that OpenSSL does not accept");
    ERR_clear_error();
    free(x);
    return pkey;
}

/* The algorithm of an RSA, EC or OKP JWK: by type and curve, and its "alg" (name, may be NULL)
 * when present. Returns the algorithm, or GW_ALG_NONE with *rc 0 (the key is ignored) or -1 (it
 * is invalid) and why filled. */
static enum gw_alg jwk_alg(const cJSON *jwk, const char *kty, const char *name, const char *kid,
                           int *rc, char *why, size_t whylen)
{
    enum gw_alg by_type = GW_ALG_NONE;
    const char *crv = jstr(jwk, "crv");
    *rc = -1;
    if (strcmp(kty, "RSA") == 0) {
        by_type = GW_ALG_RS256;
    } else if (crv == NULL) {
        snprintf(why, whylen, "%s key %s without \"crv\"", kty, kid);
        return GW_ALG_NONE;
    } else if (strcmp(kty, "EC") == 0) {
        for (size_t i = 1; i < NALGS; i++)
            if (algs[i].crv && strcmp(algs[i].crv, crv) == 0)
                by_type = (enum gw_alg)i;
    } else if (strcmp(crv, "Ed25519") == 0) { /* OKP */
        by_type = GW_ALG_EDDSA;
    }
    if (by_type == GW_ALG_NONE) {
        /* Ed448 (RFC 8037's other EdDSA curve) is refused; X25519/X448 are for key agreement */
        snprintf(why, whylen, "key %s ignored: %s curve %s is not %s", kid, kty, crv,
                 kty[0] == 'E' ? "P-256, P-384 or P-521" : "Ed25519");
        *rc = 0;
        return GW_ALG_NONE;
    }
    if (name == NULL)
        return by_type;
    enum gw_alg named = gw_alg_from_name(name);
    if (named == GW_ALG_NONE) {
        snprintf(why, whylen, "key %s ignored: alg %s is not supported", kid, name);
        *rc = 0;
        return GW_ALG_NONE;
    }
    /* RS* and PS* take the same RSA keys: "alg" chooses (RS256 without one, SPEC §4) */
    bool rsa_alg = algs[named].family == F_RSA || algs[named].family == F_PSS;
    if (by_type == GW_ALG_RS256 ? rsa_alg : named == by_type)
        return named;
    snprintf(why, whylen, "key %s: alg %s does not fit kty %s%s%s", kid, name, kty,
             crv && by_type != GW_ALG_RS256 ? " crv " : "",
             crv && by_type != GW_ALG_RS256 ? crv : "");
    return GW_ALG_NONE;
}

int gw_key_from_jwk(const cJSON *jwk, struct gw_key *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(jwk))
        return fail(why, whylen, "a key is not a JSON object");
    const char *kty = jstr(jwk, "kty");
    const cJSON *kidv = cJSON_GetObjectItemCaseSensitive(jwk, "kid");
    if (kty == NULL)
        return fail(why, whylen, "a key without \"kty\"");
    if (kidv && (!cJSON_IsString(kidv) || strlen(kidv->valuestring) > MAX_KID))
        return fail(why, whylen, "\"kid\" must be a string of at most 256 characters");
    const char *kid = kidv ? kidv->valuestring : NULL;
    const cJSON *use = cJSON_GetObjectItemCaseSensitive(jwk, "use");
    if (use && !(cJSON_IsString(use) && strcmp(use->valuestring, "sig") == 0)) {
        snprintf(why, whylen, "key %s ignored: \"use\" is not \"sig\"", kid ? kid : "(no kid)");
        return 0;
    }
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(jwk, "key_ops");
    if (ops) {
        bool verify = false;
        for (const cJSON *o = cJSON_IsArray(ops) ? ops->child : NULL; o; o = o->next)
            verify |= cJSON_IsString(o) && strcmp(o->valuestring, "verify") == 0;
        if (!verify) {
            snprintf(why, whylen, "key %s ignored: \"key_ops\" lacks \"verify\"",
                     kid ? kid : "(no kid)");
            return 0;
        }
    }
    bool rsa = strcmp(kty, "RSA") == 0, ec = strcmp(kty, "EC") == 0, okp = strcmp(kty, "OKP") == 0;
    const char *name = kid ? kid : "(no kid)";
    if (!rsa && !ec && !okp) {
        /* SPEC §4: oct keys in a JWKS are ignored (HMAC keys never mix with public keys) */
        snprintf(why, whylen, "key %s ignored: kty %s is not RSA, EC or OKP", name, kty);
        return 0;
    }
    const cJSON *algv = cJSON_GetObjectItemCaseSensitive(jwk, "alg");
    if (algv && !cJSON_IsString(algv))
        return fail(why, whylen, "\"alg\" must be a string");
    int rc = 0;
    enum gw_alg alg = jwk_alg(jwk, kty, algv ? algv->valuestring : NULL, name, &rc, why, whylen);
    if (alg == GW_ALG_NONE)
        return rc;
    EVP_PKEY *pkey = rsa  ? rsa_from_jwk(jwk, why, whylen)
                     : ec ? ec_from_jwk(jwk, alg, why, whylen)
                          : ed25519_from_jwk(jwk, why, whylen);
    if (pkey == NULL)
        return -1;
    char inner[160];
    if (adopt_public_key(pkey, alg, kid, out, inner, sizeof inner) != 0) {
        /* weak RSA keys are left out, not fatal: the rest of an IdP's set stays usable */
        snprintf(why, whylen, "key %s %s: %s", name, rsa ? "ignored" : "invalid", inner);
        return rsa ? 0 : -1;
    }
    return 1;
}

struct gw_keyset *gw_jwks_parse(const char *buf, size_t len, char *why, size_t whylen)
{
    struct gw_json_error je;
    struct gw_json_opts o = {.max_bytes = 1u << 20, .max_depth = 8};
    cJSON *doc = gw_json_parse(buf, len, &o, &je);
    if (doc == NULL) {
        snprintf(why, whylen, "JWKS is not valid JSON: %s at byte %zu", je.msg, je.offset);
        return NULL;
    }
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    if (!cJSON_IsObject(doc) || !cJSON_IsArray(keys)) {
        cJSON_Delete(doc);
        snprintf(why, whylen, "JWKS must be an object with a \"keys\" array");
        return NULL;
    }
    int n = cJSON_GetArraySize(keys);
    if (n > MAX_JWKS_KEYS) {
        cJSON_Delete(doc);
        snprintf(why, whylen, "JWKS with more than %d keys", MAX_JWKS_KEYS);
        return NULL;
    }
    struct gw_keyset *s = calloc(1, sizeof *s);
    if (s == NULL || (n && (s->keys = calloc((size_t)n, sizeof *s->keys)) == NULL)) {
        free(s);
        cJSON_Delete(doc);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    /* a kid used twice is ambiguous, whether or not both keys are usable */
    for (const cJSON *a = keys->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next) {
            const char *ka = jstr(a, "kid"), *kb = jstr(b, "kid");
            if (ka && kb && strcmp(ka, kb) == 0) {
                snprintf(why, whylen, "JWKS uses kid %.64s twice", ka);
                goto bad;
            }
        }
    for (const cJSON *k = keys->child; k; k = k->next) {
        char kwhy[200];
        int rc = gw_key_from_jwk(k, &s->keys[s->n], kwhy, sizeof kwhy);
        if (rc < 0) {
            snprintf(why, whylen, "JWKS: %s", kwhy);
            goto bad;
        }
        if (rc == 1)
            s->n++;
    }
    if (s->n == 0) {
        snprintf(why, whylen, "JWKS holds no usable RSA, EC or Ed25519 signing key");
        goto bad;
    }
    cJSON_Delete(doc);
    return s;
bad:
    cJSON_Delete(doc);
    gw_keyset_unref(s);
    return NULL;
}

struct gw_keyset *gw_keyset_ref(struct gw_keyset *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

/* Keys in a keyset are public (a JWKS's "oct" keys are ignored): a plain compare will do. */
static bool same_key(const struct gw_key *a, const struct gw_key *b)
{
    return a->alg == b->alg && (a->kid == NULL) == (b->kid == NULL) &&
           (a->kid == NULL || strcmp(a->kid, b->kid) == 0) && a->material_len == b->material_len &&
           memcmp(a->material, b->material, a->material_len) == 0;
}

size_t gw_keyset_withdrawn(const struct gw_keyset *old, const struct gw_keyset *next)
{
    size_t gone = 0;
    for (size_t i = 0; old && i < old->n; i++) {
        bool kept = false;
        for (size_t k = 0; next && k < next->n && !kept; k++)
            kept = same_key(&old->keys[i], &next->keys[k]);
        gone += !kept;
    }
    return gone;
}

size_t gw_keyset_keep(struct gw_keyset *s, bool (*keep)(const struct gw_key *k, void *arg),
                      void *arg)
{
    size_t w = 0;
    for (size_t k = 0; k < s->n; k++) {
        if (!keep(&s->keys[k], arg)) {
            gw_key_clear(&s->keys[k]);
            continue;
        }
        s->keys[w++] = s->keys[k];
    }
    s->n = w;
    return w;
}

void gw_keyset_unref(struct gw_keyset *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < s->n; i++)
        gw_key_clear(&s->keys[i]);
    free(s->keys);
    free(s);
}

/* ---- the signature layer ---- */

bool gw_jws_typ_ok(const char *typ, bool *at_jwt)
{
    if (strncasecmp(typ, "application/", 12) == 0)
        typ += 12;
    *at_jwt = strcasecmp(typ, "at+jwt") == 0;
    return *at_jwt || strcasecmp(typ, "JWT") == 0;
}

static enum gw_jws_result check_header(const unsigned char *h, size_t n, const struct gw_key *key)
{
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 8};
    cJSON *hdr = gw_json_parse((const char *)h, n, &o, &je);
    enum gw_jws_result r = GW_JWS_MALFORMED;
    if (cJSON_IsObject(hdr)) {
        const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
        const cJSON *typ = cJSON_GetObjectItemCaseSensitive(hdr, "typ");
        bool at_jwt;
        if (!cJSON_IsString(alg) || cJSON_GetObjectItemCaseSensitive(hdr, "crit") != NULL ||
            (typ && !(cJSON_IsString(typ) && gw_jws_typ_ok(typ->valuestring, &at_jwt))))
            r = GW_JWS_MALFORMED;
        else if (strcmp(alg->valuestring, algs[key->alg].name) != 0)
            r = GW_JWS_WRONG_ALG;
        else
            r = GW_JWS_OK;
    }
    cJSON_Delete(hdr);
    return r;
}

static size_t signature_size(const struct gw_key *key)
{
    switch (algs[key->alg].family) {
    case F_HMAC:
        return algs[key->alg].hash_len;
    case F_RSA:
    case F_PSS:
        return (size_t)EVP_PKEY_get_size(key->pkey); /* the modulus' bytes */
    case F_EC:
        return 2 * algs[key->alg].field;
    case F_EDDSA:
        return ED25519_SIG_LEN;
    default:
        return 0;
    }
}

static bool verify_hmac(const struct gw_key *key, const unsigned char *msg, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    const EVP_MD *md = EVP_get_digestbyname(algs[key->alg].md);
    if (md == NULL ||
        HMAC(md, key->material, (int)key->material_len, msg, len, mac, &maclen) == NULL)
        return false;
    bool ok = maclen == siglen && CRYPTO_memcmp(mac, sig, siglen) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return ok;
}

/* RSASSA-PSS as RFC 7518 §3.5 pins it: MGF1 with the signature's hash, a salt exactly as long
 * as that hash (a verifier that accepts any salt length accepts what the signer never meant). */
static bool pss_params(EVP_PKEY_CTX *pctx, enum gw_alg alg)
{
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, algs[alg].md, NULL) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, (int)algs[alg].hash_len) > 0;
}

static bool verify_pkey(const struct gw_key *key, const unsigned char *msg, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    enum family f = algs[key->alg].family;
    unsigned char *der = NULL;
    int derlen = 0;
    if (f == F_EC) {
        /* JWS carries R||S; OpenSSL verifies DER */
        size_t fl = algs[key->alg].field;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, (int)fl, NULL), *s = BN_bin2bn(sig + fl, (int)fl, NULL);
        if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
            ECDSA_SIG_free(es);
            BN_free(r);
            BN_free(s);
            return false;
        }
        derlen = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (derlen <= 0)
            return false;
        sig = der;
        siglen = (size_t)derlen;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    /* EdDSA hashes inside the signature scheme: no digest, and one call over the whole input */
    bool ok =
        ctx &&
        EVP_DigestVerifyInit_ex(ctx, &pctx, algs[key->alg].md, NULL, NULL, key->pkey, NULL) == 1 &&
        (f != F_PSS || pss_params(pctx, key->alg)) &&
        EVP_DigestVerify(ctx, sig, siglen, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok;
}

bool gw_sig_verify(const struct gw_key *key, const unsigned char *msg, size_t msglen,
                   const unsigned char *sig, size_t siglen)
{
    if (key == NULL || (size_t)key->alg >= NALGS || algs[key->alg].family == F_NONE ||
        (algs[key->alg].family != F_HMAC && key->pkey == NULL))
        return false;
    size_t want = signature_size(key);
    if (want == 0 || siglen != want)
        return false;
    if (algs[key->alg].family == F_HMAC)
        return verify_hmac(key, msg, msglen, sig, siglen);
    return verify_pkey(key, msg, msglen, sig, siglen);
}

enum gw_jws_result gw_jws_verify(const char *token, size_t len, const struct gw_key *key)
{
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(token + len - d1 - 1)) : NULL;
    /* the payload may be empty in a JWS (not in a JWT: jwt.c requires an object) */
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', (size_t)(token + len - d2 - 1)) ||
        d1 == token || d2 + 1 == token + len)
        return GW_JWS_MALFORMED;
    size_t hl = (size_t)(d1 - token), pl = (size_t)(d2 - d1 - 1),
           sl = (size_t)(token + len - d2 - 1);
    size_t cap = GW_B64URL_DECODED_MAX(len);
    unsigned char *buf = malloc(cap * 3);
    if (buf == NULL)
        return GW_JWS_MALFORMED;
    unsigned char *h = buf, *p = buf + cap, *s = buf + 2 * cap;
    long hn = gw_b64url_decode(token, hl, h);
    long pn = gw_b64url_decode(d1 + 1, pl, p);
    long sn = gw_b64url_decode(d2 + 1, sl, s);
    enum gw_jws_result r = GW_JWS_MALFORMED;
    if (hn > 0 && pn >= 0 && sn > 0)
        r = check_header(h, (size_t)hn, key);
    if (r == GW_JWS_OK &&
        !gw_sig_verify(key, (const unsigned char *)token, (size_t)(d2 - token), s, (size_t)sn))
        r = GW_JWS_BAD_SIGNATURE;
    OPENSSL_clear_free(buf, cap * 3); /* decoded claims */
    return r;
}
