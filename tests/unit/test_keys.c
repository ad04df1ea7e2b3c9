/* Unit tests of verification keys and the JWS layer (proxy/keys.c) against SPEC §4.3-4.5:
 * PEM public keys (RSA >= 2048 bits, odd e >= 3, for RS* and PS*; EC curve pinned by the alg;
 * Ed25519 for EdDSA, Ed448 refused; no private keys, no certificates), HMAC secrets (>= hash
 * length, never PEM text), JWK/JWKS loading (oct, non-signing and non-Ed25519 OKP keys ignored,
 * invalid keys and duplicate kids refused), gw_sig_verify and gw_jws_verify (RS/PS confusion,
 * PSS parameters, exact signature lengths, RFC 8037's Ed25519 example), and the Wycheproof
 * vectors (tests/unit/fixtures/wycheproof): JSON Web Signature / Key, also run through the whole
 * JWT path (gw_jwt_verify), and the raw RSASSA-PSS and Ed25519 signature files through
 * gw_sig_verify. Keys are generated at run time; no private key is committed. */
#include <check.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "config.h"
#include "auth.h"
#include "keys.h"

#define WP_DIR GW_TEST_DIR "/unit/fixtures/wycheproof/"

/* ---- helpers: base64url, signing (independent of the code under test) ---- */

static const char B64U[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64u(const void *data, size_t len)
{
    const unsigned char *in = data;
    char *out = malloc(len / 3 * 4 + 5);
    ck_assert_ptr_nonnull(out);
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64U[v >> 18 & 63];
        out[o++] = B64U[v >> 12 & 63];
        out[o++] = B64U[v >> 6 & 63];
        out[o++] = B64U[v & 63];
    }
    if (len - i >= 1) {
        unsigned v = (unsigned)in[i] << 16 | (len - i == 2 ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = B64U[v >> 18 & 63];
        out[o++] = B64U[v >> 12 & 63];
        if (len - i == 2)
            out[o++] = B64U[v >> 6 & 63];
    }
    out[o] = '\0';
    return out;
}

/* Lenient decoder for reading test data (JWK members, token headers). NULL on a foreign byte. */
static unsigned char *unb64u(const char *s, size_t len, size_t *outlen)
{
    unsigned char *out = malloc(len * 3 / 4 + 3);
    ck_assert_ptr_nonnull(out);
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = s[i] ? strchr(B64U, s[i]) : NULL;
        if (p == NULL) {
            free(out);
            return NULL;
        }
        acc = (acc << 6 | (unsigned)(p - B64U)) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *outlen = o;
    return out;
}

static const EVP_MD *alg_md(enum gw_alg a)
{
    switch (a) {
    case GW_ALG_HS256:
    case GW_ALG_RS256:
    case GW_ALG_ES256:
    case GW_ALG_PS256:
        return EVP_sha256();
    case GW_ALG_HS384:
    case GW_ALG_RS384:
    case GW_ALG_ES384:
    case GW_ALG_PS384:
        return EVP_sha384();
    case GW_ALG_EDDSA:
        return NULL;
    default:
        return EVP_sha512();
    }
}

static bool alg_is_es(enum gw_alg a)
{
    return a == GW_ALG_ES256 || a == GW_ALG_ES384 || a == GW_ALG_ES512;
}

/* RSASSA-PSS with md, MGF1 with mgf1 and a salt of saltlen bytes (or an RSA_PSS_SALTLEN_*
 * value): the right parameters for PSxxx are md, md, RSA_PSS_SALTLEN_DIGEST. Returns the
 * signature length written to sig (>= 1024 bytes). */
static size_t pss_sign(EVP_PKEY *pkey, const EVP_MD *md, const EVP_MD *mgf1, int saltlen,
                       const void *data, size_t dlen, unsigned char *sig)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    size_t n = 1024;
    ck_assert_int_eq(EVP_DigestSignInit(ctx, &pctx, md, NULL, pkey), 1);
    ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 0);
    ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, mgf1), 0);
    ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen), 0);
    ck_assert_int_eq(EVP_DigestSign(ctx, sig, &n, data, dlen), 1);
    EVP_MD_CTX_free(ctx);
    return n;
}

/* Signs data with alg: HMAC with secret, RSA PKCS#1 v1.5, RSASSA-PSS (PS: salt and MGF1 of
 * the hash), ECDSA (raw R||S unless der) or Ed25519 with pkey. Returns the signature length
 * written to sig (>= 1024 bytes). */
static size_t sign_bytes(enum gw_alg alg, EVP_PKEY *pkey, const void *secret, size_t slen, bool der,
                         const void *data, size_t dlen, unsigned char *sig)
{
    const EVP_MD *md = alg_md(alg);
    if (alg >= GW_ALG_HS256 && alg <= GW_ALG_HS512) {
        unsigned n = 0;
        ck_assert_ptr_nonnull(HMAC(md, secret, (int)slen, data, dlen, sig, &n));
        return n;
    }
    if (alg >= GW_ALG_PS256 && alg <= GW_ALG_PS512)
        return pss_sign(pkey, md, md, RSA_PSS_SALTLEN_DIGEST, data, dlen, sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char buf[1024];
    size_t n = sizeof buf;
    ck_assert_int_eq(EVP_DigestSignInit(ctx, NULL, md, NULL, pkey), 1);
    ck_assert_int_eq(EVP_DigestSign(ctx, buf, &n, data, dlen), 1);
    EVP_MD_CTX_free(ctx);
    if (!alg_is_es(alg) || der) {
        memcpy(sig, buf, n);
        return n;
    }
    size_t half = alg == GW_ALG_ES256 ? 32 : alg == GW_ALG_ES384 ? 48 : 66;
    const unsigned char *p = buf;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
    ck_assert_ptr_nonnull(es);
    ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)half), (int)half);
    ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + half, (int)half), (int)half);
    ECDSA_SIG_free(es);
    return 2 * half;
}

/* A compact JWS over the given header and payload BYTES. */
static char *make_jws(enum gw_alg alg, EVP_PKEY *pkey, const void *secret, size_t slen,
                      const char *hdr, size_t hlen, const char *pl, size_t plen)
{
    char *h = b64u(hdr, hlen), *p = b64u(pl, plen);
    size_t inlen = strlen(h) + 1 + strlen(p);
    char *in = malloc(inlen + 1);
    snprintf(in, inlen + 1, "%s.%s", h, p);
    unsigned char sig[1024];
    size_t n = sign_bytes(alg, pkey, secret, slen, false, in, inlen, sig);
    char *s = b64u(sig, n);
    char *tok = malloc(inlen + strlen(s) + 2);
    snprintf(tok, inlen + strlen(s) + 2, "%s.%s", in, s);
    free(h);
    free(p);
    free(in);
    free(s);
    return tok;
}

#define JWS(alg, pkey, hdr, pl)                                                                    \
    make_jws((alg), (pkey), NULL, 0, (hdr), sizeof(hdr) - 1, (pl), sizeof(pl) - 1)
#define JWS_HS(alg, secret, slen, hdr, pl)                                                         \
    make_jws((alg), NULL, (secret), (slen), (hdr), sizeof(hdr) - 1, (pl), sizeof(pl) - 1)

static char *pem_of(EVP_PKEY *pk, int kind)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (kind == 0) {
        ck_assert_int_eq(PEM_write_bio_PUBKEY(b, pk), 1);
    } else if (kind == 1) {
        ck_assert_int_eq(PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL), 1);
    } else {
        X509 *x = X509_new();
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, pk);
        X509_NAME *nm = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1, 0);
        X509_set_issuer_name(x, nm);
        ck_assert_int_gt(X509_sign(x, pk, EVP_sha256()), 0);
        ck_assert_int_eq(PEM_write_bio_X509(b, x), 1);
        X509_free(x);
    }
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}
#define PUB_PEM(pk) pem_of((pk), 0)
#define PRIV_PEM(pk) pem_of((pk), 1)
#define CERT_PEM(pk) pem_of((pk), 2)

static char *bn_b64u(const BIGNUM *bn, int pad)
{
    unsigned char buf[1024];
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    ck_assert_int_gt(n, 0);
    return b64u(buf, (size_t)n);
}

static char *param_b64u(EVP_PKEY *pk, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    ck_assert_int_eq(EVP_PKEY_get_bn_param(pk, name, &bn), 1);
    char *s = bn_b64u(bn, pad);
    BN_free(bn);
    return s;
}

/* The public JWK of an RSA, EC or OKP (Ed25519, Ed448, X25519) key (no alg, no kid). */
static cJSON *jwk_of(EVP_PKEY *pk)
{
    cJSON *j = cJSON_CreateObject();
    char *a, *b;
    const char *okp = EVP_PKEY_is_a(pk, "ED25519")  ? "Ed25519"
                      : EVP_PKEY_is_a(pk, "ED448")  ? "Ed448"
                      : EVP_PKEY_is_a(pk, "X25519") ? "X25519"
                                                    : NULL;
    if (okp) {
        unsigned char raw[64];
        size_t rl = sizeof raw;
        ck_assert_int_eq(EVP_PKEY_get_raw_public_key(pk, raw, &rl), 1);
        cJSON_AddStringToObject(j, "kty", "OKP");
        cJSON_AddStringToObject(j, "crv", okp);
        a = b64u(raw, rl);
        cJSON_AddStringToObject(j, "x", a);
        free(a);
        return j;
    }
    if (EVP_PKEY_is_a(pk, "RSA")) {
        cJSON_AddStringToObject(j, "kty", "RSA");
        a = param_b64u(pk, OSSL_PKEY_PARAM_RSA_N, 0);
        b = param_b64u(pk, OSSL_PKEY_PARAM_RSA_E, 0);
        cJSON_AddStringToObject(j, "n", a);
        cJSON_AddStringToObject(j, "e", b);
    } else {
        char group[64];
        size_t gl = 0;
        ck_assert_int_eq(EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                        sizeof group, &gl),
                         1);
        const char *crv = strcmp(group, "prime256v1") == 0  ? "P-256"
                          : strcmp(group, "secp384r1") == 0 ? "P-384"
                          : strcmp(group, "secp521r1") == 0 ? "P-521"
                                                            : group;
        int size = crv[2] == '2' ? 32 : crv[2] == '3' ? 48 : crv[2] == '5' ? 66 : 32;
        cJSON_AddStringToObject(j, "kty", "EC");
        cJSON_AddStringToObject(j, "crv", crv);
        a = param_b64u(pk, OSSL_PKEY_PARAM_EC_PUB_X, size);
        b = param_b64u(pk, OSSL_PKEY_PARAM_EC_PUB_Y, size);
        cJSON_AddStringToObject(j, "x", a);
        cJSON_AddStringToObject(j, "y", b);
    }
    free(a);
    free(b);
    return j;
}

static void jwk_set(cJSON *j, const char *name, const char *value)
{
    cJSON_DeleteItemFromObjectCaseSensitive(j, name);
    if (value)
        cJSON_AddStringToObject(j, name, value);
}

/* RSA public key with the modulus of base and exponent e. */
static EVP_PKEY *rsa_with_e(EVP_PKEY *base, unsigned long e)
{
    BIGNUM *n = NULL, *be = BN_new();
    ck_assert_int_eq(EVP_PKEY_get_bn_param(base, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    BN_set_word(be, e);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pk = NULL;
    ck_assert_int_eq(EVP_PKEY_fromdata_init(c), 1);
    ck_assert_int_eq(EVP_PKEY_fromdata(c, &pk, EVP_PKEY_PUBLIC_KEY, params), 1);
    EVP_PKEY_CTX_free(c);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(be);
    return pk;
}

/* ---- fixture: keys generated once per run ---- */

static EVP_PKEY *g_rsa, *g_rsa_b, *g_rsa1024, *g_rsa_e3, *g_p256, *g_p384, *g_p521, *g_k256;
static EVP_PKEY *g_ed, *g_ed_b, *g_ed448, *g_x25519, *g_rsa_pss;
static char g_dir[64];

static EVP_PKEY *ec_gen(const char *curve)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    ck_assert_ptr_nonnull(pk);
    return pk;
}

static void setup_keys(void)
{
    g_rsa = EVP_RSA_gen(2048);
    g_rsa_b = EVP_RSA_gen(2048);
    g_rsa1024 = EVP_RSA_gen(1024);
    ck_assert_ptr_nonnull(g_rsa);
    ck_assert_ptr_nonnull(g_rsa_b);
    ck_assert_ptr_nonnull(g_rsa1024);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    BIGNUM *e = BN_new();
    BN_set_word(e, 3);
    ck_assert_int_eq(EVP_PKEY_keygen_init(c), 1);
    ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_keygen_bits(c, 2048), 0);
    ck_assert_int_gt(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(c, e), 0);
    ck_assert_int_eq(EVP_PKEY_generate(c, &g_rsa_e3), 1);
    BN_free(e);
    EVP_PKEY_CTX_free(c);
    g_p256 = ec_gen("P-256");
    g_p384 = ec_gen("P-384");
    g_p521 = ec_gen("P-521");
    g_k256 = ec_gen("secp256k1");
    g_ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    g_ed_b = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    g_ed448 = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
    g_x25519 = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    c = EVP_PKEY_CTX_new_from_name(NULL, "RSA-PSS", NULL); /* Q_keygen knows only "RSA" */
    ck_assert_int_eq(EVP_PKEY_keygen_init(c), 1);
    ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_keygen_bits(c, 2048), 0);
    ck_assert_int_eq(EVP_PKEY_generate(c, &g_rsa_pss), 1);
    EVP_PKEY_CTX_free(c);
    ck_assert(g_ed && g_ed_b && g_ed448 && g_x25519 && g_rsa_pss);
    snprintf(g_dir, sizeof g_dir, "/tmp/gwkeys.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown_keys(void)
{
    EVP_PKEY *all[] = {g_rsa,  g_rsa_b, g_rsa1024, g_rsa_e3, g_p256,   g_p384,   g_p521,
                       g_k256, g_ed,    g_ed_b,    g_ed448,  g_x25519, g_rsa_pss};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        EVP_PKEY_free(all[i]);
    if (g_dir[0])
        nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* gw_key_from_pem on a NUL-terminated PEM; returns its result (the refusal's reason in why)
 * and clears the key. */
static int pem_load_why(const char *pem, enum gw_alg alg, char *why, size_t whylen)
{
    struct gw_key k = {0};
    why[0] = '\0';
    int r = gw_key_from_pem(pem, strlen(pem), alg, "k", &k, why, whylen);
    if (r == 0) {
        ck_assert_int_eq(k.alg, alg);
        ck_assert_ptr_nonnull(k.pkey);
        gw_key_clear(&k);
    } else {
        ck_assert_msg(why[0] != '\0', "refusal without a reason");
    }
    return r;
}

static int pem_load(const char *pem, enum gw_alg alg)
{
    char why[256];
    return pem_load_why(pem, alg, why, sizeof why);
}

static int secret_load(const void *s, size_t len, enum gw_alg alg)
{
    struct gw_key k = {0};
    char why[256] = "";
    int r = gw_key_from_secret(s, len, alg, "h", &k, why, sizeof why);
    if (r == 0)
        gw_key_clear(&k);
    else
        ck_assert_msg(why[0] != '\0', "refusal without a reason");
    return r;
}

/* gw_key_from_jwk on a JWK given as JSON text. */
static int jwk_load_text(const char *text, struct gw_key *out)
{
    cJSON *j = cJSON_Parse(text);
    ck_assert_ptr_nonnull(j);
    char why[256] = "";
    struct gw_key k = {0};
    int r = gw_key_from_jwk(j, &k, why, sizeof why);
    cJSON_Delete(j);
    if (r != 1)
        ck_assert_msg(why[0] != '\0', "JWK result %d without a reason", r);
    if (r == 1 && out)
        *out = k;
    else if (r == 1)
        gw_key_clear(&k);
    return r;
}

static int jwk_load(const cJSON *j, struct gw_key *out)
{
    char *t = cJSON_PrintUnformatted(j);
    int r = jwk_load_text(t, out);
    free(t);
    return r;
}

/* ---- algorithm names ---- */

START_TEST(test_keys_alg_names_exact_and_case_sensitive)
{
    static const char *const names[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                        "RS512", "ES256", "ES384", "ES512", "PS256",
                                        "PS384", "PS512", "EdDSA"};
    for (int i = 0; i < 13; i++) {
        ck_assert_int_eq(gw_alg_from_name(names[i]), GW_ALG_HS256 + i);
        ck_assert_str_eq(gw_alg_name(GW_ALG_HS256 + i), names[i]);
        ck_assert(gw_alg_is_hmac(GW_ALG_HS256 + i) == (i < 3));
    }
    ck_assert_int_eq(GW_ALG_EDDSA, GW_ALG_HS256 + 12);
    static const char *const bad[] = {"none",   "None",   "NONE",    "rs256", "Rs256",  "RS256 ",
                                      " RS256", "ES256K", "ps256",   "PS1",   "RS1",    "HS",
                                      "",       "EDDSA",  "eddsa",   "Eddsa", "EdDSA ", "Ed25519",
                                      "Ed448",  "ES521",  "PS256\n", "OKP"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(gw_alg_from_name(bad[i]) == GW_ALG_NONE, "\"%s\" accepted", bad[i]);
    ck_assert(!gw_alg_is_hmac(GW_ALG_NONE));
}
END_TEST

/* The gw_alg values up to ES512 are libjwt's jwt_alg_t (auth.c passes them to it); PS* and
 * EdDSA are not libjwt's, and would land on JWT_ALG_TERM and beyond if cast. */
START_TEST(test_keys_alg_in_libjwt_is_jwt_alg_t)
{
    for (enum gw_alg a = GW_ALG_HS256; a <= GW_ALG_EDDSA; a++) {
        jwt_alg_t j = jwt_str_alg(gw_alg_name(a));
        if (a <= GW_ALG_ES512) {
            ck_assert_msg(gw_alg_in_libjwt(a), "%s", gw_alg_name(a));
            ck_assert_msg(j == (jwt_alg_t)a, "%s: jwt_alg_t %d, gw_alg %d", gw_alg_name(a), j, a);
        } else {
            ck_assert_msg(!gw_alg_in_libjwt(a), "%s", gw_alg_name(a));
            ck_assert_msg(j == JWT_ALG_INVAL, "libjwt knows %s", gw_alg_name(a));
        }
    }
    ck_assert(!gw_alg_in_libjwt(GW_ALG_NONE));
    ck_assert_int_eq(GW_ALG_PS256, JWT_ALG_TERM); /* why a cast would be wrong */
}
END_TEST

/* ---- PEM ---- */

START_TEST(test_keys_pem_rsa2048_loads_for_each_rs_alg)
{
    char *pem = PUB_PEM(g_rsa);
    for (enum gw_alg a = GW_ALG_RS256; a <= GW_ALG_RS512; a++) {
        struct gw_key k = {0};
        char why[256] = "";
        ck_assert_msg(gw_key_from_pem(pem, strlen(pem), a, "k1", &k, why, sizeof why) == 0,
                      "%s refused: %s", gw_alg_name(a), why);
        ck_assert_int_eq(k.alg, a);
        ck_assert_str_eq(k.kid, "k1");
        ck_assert_ptr_nonnull(k.pkey);
        ck_assert(EVP_PKEY_is_a(k.pkey, "RSA"));
        ck_assert_uint_gt(k.material_len, 0);
        ck_assert(memmem(k.material, k.material_len, "BEGIN PUBLIC KEY", 16) != NULL);
        gw_key_clear(&k);
    }
    struct gw_key k = {0};
    char why[64];
    ck_assert_int_eq(gw_key_from_pem(pem, strlen(pem), GW_ALG_RS256, NULL, &k, why, sizeof why), 0);
    ck_assert_ptr_null(k.kid);
    gw_key_clear(&k);
    free(pem);
}
END_TEST

START_TEST(test_keys_pem_rsa_exponent_3_loads)
{
    char *pem = PUB_PEM(g_rsa_e3);
    ck_assert_int_eq(pem_load(pem, GW_ALG_RS256), 0);
    free(pem);
}
END_TEST

START_TEST(test_keys_pem_rsa1024_refused)
{
    char *pem = PUB_PEM(g_rsa1024);
    ck_assert_int_eq(pem_load(pem, GW_ALG_RS256), -1);
    ck_assert_int_eq(pem_load(pem, GW_ALG_RS512), -1);
    free(pem);
}
END_TEST

START_TEST(test_keys_pem_rsa_bad_exponent_refused)
{
    unsigned long es[] = {1, 65536, 2};
    for (size_t i = 0; i < sizeof es / sizeof *es; i++) {
        EVP_PKEY *pk = rsa_with_e(g_rsa, es[i]);
        char *pem = PUB_PEM(pk);
        ck_assert_msg(pem_load(pem, GW_ALG_RS256) == -1, "e=%lu accepted", es[i]);
        free(pem);
        EVP_PKEY_free(pk);
    }
}
END_TEST

START_TEST(test_keys_pem_ec_curve_must_match_alg)
{
    char *p256 = PUB_PEM(g_p256), *p384 = PUB_PEM(g_p384), *p521 = PUB_PEM(g_p521);
    char *k256 = PUB_PEM(g_k256);
    ck_assert_int_eq(pem_load(p256, GW_ALG_ES256), 0);
    ck_assert_int_eq(pem_load(p384, GW_ALG_ES384), 0);
    ck_assert_int_eq(pem_load(p521, GW_ALG_ES512), 0);
    ck_assert_int_eq(pem_load(p256, GW_ALG_ES384), -1);
    ck_assert_int_eq(pem_load(p256, GW_ALG_ES512), -1);
    ck_assert_int_eq(pem_load(p384, GW_ALG_ES256), -1);
    ck_assert_int_eq(pem_load(p521, GW_ALG_ES384), -1);
    ck_assert_int_eq(pem_load(k256, GW_ALG_ES256), -1);
    free(p256);
    free(p384);
    free(p521);
    free(k256);
}
END_TEST

START_TEST(test_keys_pem_key_type_must_match_alg)
{
    char *rsa = PUB_PEM(g_rsa), *ec = PUB_PEM(g_p256);
    ck_assert_int_eq(pem_load(rsa, GW_ALG_ES256), -1);
    ck_assert_int_eq(pem_load(ec, GW_ALG_RS256), -1);
    ck_assert_int_eq(pem_load(rsa, GW_ALG_HS256), -1);
    ck_assert_int_eq(pem_load(rsa, GW_ALG_NONE), -1);
    free(rsa);
    free(ec);
}
END_TEST

START_TEST(test_keys_pem_private_key_refused)
{
    char *rsa = PRIV_PEM(g_rsa), *ec = PRIV_PEM(g_p256);
    ck_assert_int_eq(pem_load(rsa, GW_ALG_RS256), -1);
    ck_assert_int_eq(pem_load(ec, GW_ALG_ES256), -1);
    free(rsa);
    free(ec);
}
END_TEST

START_TEST(test_keys_pem_certificate_refused)
{
    char *rsa = CERT_PEM(g_rsa), *ec = CERT_PEM(g_p256);
    ck_assert(strstr(rsa, "BEGIN CERTIFICATE") != NULL);
    ck_assert_int_eq(pem_load(rsa, GW_ALG_RS256), -1);
    ck_assert_int_eq(pem_load(ec, GW_ALG_ES256), -1);
    free(rsa);
    free(ec);
}
END_TEST

START_TEST(test_keys_pem_garbage_refused)
{
    ck_assert_int_eq(pem_load("", GW_ALG_RS256), -1);
    ck_assert_int_eq(pem_load("not a key", GW_ALG_RS256), -1);
    ck_assert_int_eq(
        pem_load("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", GW_ALG_RS256), -1);
    char *pem = PUB_PEM(g_rsa);
    ck_assert_int_eq(strncmp(pem + 27, "MII", 3), 0);
    pem[28] = 'A'; /* the outer SEQUENCE length changed */
    ck_assert_int_eq(pem_load(pem, GW_ALG_RS256), -1);
    free(pem);
    pem = PUB_PEM(g_rsa);
    pem[strlen(pem) / 2] = '\0'; /* truncated */
    ck_assert_int_eq(pem_load(pem, GW_ALG_RS256), -1);
    free(pem);
}
END_TEST

/* PS* takes the RSA keys RS* takes, under the same rules (SPEC §4: at least 2048 bits). */
START_TEST(test_keys_pem_rsa_loads_for_each_ps_alg)
{
    char *pem = PUB_PEM(g_rsa), *weak = PUB_PEM(g_rsa1024), *ec = PUB_PEM(g_p256);
    for (enum gw_alg a = GW_ALG_PS256; a <= GW_ALG_PS512; a++) {
        struct gw_key k = {0};
        char why[256] = "";
        ck_assert_msg(gw_key_from_pem(pem, strlen(pem), a, "p", &k, why, sizeof why) == 0,
                      "%s refused: %s", gw_alg_name(a), why);
        ck_assert_int_eq(k.alg, a);
        ck_assert(EVP_PKEY_is_a(k.pkey, "RSA"));
        ck_assert(memmem(k.material, k.material_len, "BEGIN PUBLIC KEY", 16) != NULL);
        gw_key_clear(&k);
        ck_assert_msg(pem_load(weak, a) == -1, "%s: a 1024-bit key accepted", gw_alg_name(a));
        ck_assert_msg(pem_load(ec, a) == -1, "%s: an EC key accepted", gw_alg_name(a));
    }
    EVP_PKEY *e1 = rsa_with_e(g_rsa, 1);
    char *pe1 = PUB_PEM(e1);
    ck_assert_int_eq(pem_load(pe1, GW_ALG_PS256), -1);
    free(pe1);
    EVP_PKEY_free(e1);
    free(pem);
    free(weak);
    free(ec);
}
END_TEST

/* An id-RSASSA-PSS key brings its own hash and salt restrictions: refused with a reason, for
 * PS* (where the algorithm pins PSS) and RS* alike. */
START_TEST(test_keys_pem_rsa_pss_typed_key_refused)
{
    char *pem = PUB_PEM(g_rsa_pss);
    char why[256];
    ck_assert_int_eq(pem_load_why(pem, GW_ALG_PS256, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "RSA-PSS") != NULL, "%s", why);
    ck_assert_int_eq(pem_load(pem, GW_ALG_RS256), -1);
    free(pem);
}
END_TEST

START_TEST(test_keys_pem_ed25519_loads_for_eddsa_only)
{
    char *pem = PUB_PEM(g_ed);
    struct gw_key k = {0};
    char why[256] = "";
    ck_assert_msg(gw_key_from_pem(pem, strlen(pem), GW_ALG_EDDSA, "d", &k, why, sizeof why) == 0,
                  "refused: %s", why);
    ck_assert_int_eq(k.alg, GW_ALG_EDDSA);
    ck_assert(EVP_PKEY_is_a(k.pkey, "ED25519"));
    ck_assert_int_eq(EVP_PKEY_eq(k.pkey, g_ed), 1);
    ck_assert(memmem(k.material, k.material_len, "BEGIN PUBLIC KEY", 16) != NULL);
    gw_key_clear(&k);
    static const enum gw_alg others[] = {GW_ALG_RS256, GW_ALG_PS256, GW_ALG_ES256, GW_ALG_HS256,
                                         GW_ALG_NONE};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++)
        ck_assert_msg(pem_load(pem, others[i]) == -1, "an Ed25519 key accepted for %s",
                      gw_alg_name(others[i]));
    free(pem);
    /* the EdDSA algorithm with an RSA or EC key */
    char *rsa = PUB_PEM(g_rsa), *ec = PUB_PEM(g_p256), *x = PUB_PEM(g_x25519);
    ck_assert_int_eq(pem_load_why(rsa, GW_ALG_EDDSA, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "Ed25519") != NULL, "%s", why);
    ck_assert_int_eq(pem_load(ec, GW_ALG_EDDSA), -1);
    ck_assert_int_eq(pem_load(x, GW_ALG_EDDSA), -1); /* X25519 is key agreement */
    free(rsa);
    free(ec);
    free(x);
    char *priv = PRIV_PEM(g_ed);
    ck_assert_int_eq(pem_load(priv, GW_ALG_EDDSA), -1);
    free(priv);
}
END_TEST

START_TEST(test_keys_pem_ed448_refused_with_reason)
{
    char *pem = PUB_PEM(g_ed448);
    char why[256];
    ck_assert_int_eq(pem_load_why(pem, GW_ALG_EDDSA, why, sizeof why), -1);
    ck_assert_str_eq(why, "an EdDSA key must be Ed25519 (Ed448 is not supported)");
    ck_assert_int_eq(pem_load(pem, GW_ALG_RS256), -1);
    ck_assert_int_eq(pem_load(pem, GW_ALG_ES512), -1);
    free(pem);
}
END_TEST

/* ---- secrets ---- */

START_TEST(test_keys_secret_at_least_hash_length)
{
    unsigned char s[80];
    for (size_t i = 0; i < sizeof s; i++)
        s[i] = (unsigned char)(i * 7 + 1);
    static const struct {
        enum gw_alg alg;
        size_t min;
    } v[] = {{GW_ALG_HS256, 32}, {GW_ALG_HS384, 48}, {GW_ALG_HS512, 64}};
    for (size_t i = 0; i < 3; i++) {
        ck_assert_msg(secret_load(s, v[i].min, v[i].alg) == 0, "%s %zu refused",
                      gw_alg_name(v[i].alg), v[i].min);
        ck_assert_msg(secret_load(s, v[i].min - 1, v[i].alg) == -1, "%s %zu accepted",
                      gw_alg_name(v[i].alg), v[i].min - 1);
        ck_assert_int_eq(secret_load(s, 80, v[i].alg), 0);
        ck_assert_int_eq(secret_load(s, 0, v[i].alg), -1);
    }
    ck_assert_int_eq(secret_load(s, 32, GW_ALG_HS512), -1);
    struct gw_key k = {0};
    char why[64];
    ck_assert_int_eq(gw_key_from_secret(s, 40, GW_ALG_HS256, "h1", &k, why, sizeof why), 0);
    ck_assert_int_eq(k.alg, GW_ALG_HS256);
    ck_assert_str_eq(k.kid, "h1");
    ck_assert_uint_eq(k.material_len, 40);
    ck_assert(memcmp(k.material, s, 40) == 0);
    ck_assert_ptr_null(k.pkey);
    gw_key_clear(&k);
}
END_TEST

START_TEST(test_keys_secret_pem_text_refused)
{
    char *pem = PUB_PEM(g_rsa);
    ck_assert_int_eq(secret_load(pem, strlen(pem), GW_ALG_HS256), -1);
    ck_assert_int_eq(secret_load(pem, strlen(pem) - 1, GW_ALG_HS512), -1);
    free(pem);
    static const char fake[] = "-----BEGIN PRIVATE KEY-----\n"
                               "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
                               "-----END PRIVATE KEY-----\n";
    ck_assert_int_eq(secret_load(fake, sizeof fake - 1, GW_ALG_HS256), -1);
}
END_TEST

START_TEST(test_keys_secret_needs_hmac_alg)
{
    unsigned char s[64] = {1};
    ck_assert_int_eq(secret_load(s, 64, GW_ALG_RS256), -1);
    ck_assert_int_eq(secret_load(s, 64, GW_ALG_ES256), -1);
    ck_assert_int_eq(secret_load(s, 64, GW_ALG_NONE), -1);
}
END_TEST

/* ---- JWK ---- */

START_TEST(test_keys_jwk_rsa_and_ec_load)
{
    cJSON *j = jwk_of(g_rsa);
    jwk_set(j, "alg", "RS384");
    jwk_set(j, "kid", "r1");
    jwk_set(j, "use", "sig");
    struct gw_key k = {0};
    ck_assert_int_eq(jwk_load(j, &k), 1);
    ck_assert_int_eq(k.alg, GW_ALG_RS384);
    ck_assert_str_eq(k.kid, "r1");
    ck_assert_ptr_nonnull(k.pkey);
    ck_assert_int_eq(EVP_PKEY_eq(k.pkey, g_rsa), 1);
    gw_key_clear(&k);
    cJSON_Delete(j);

    j = jwk_of(g_p384);
    jwk_set(j, "alg", "ES384");
    ck_assert_int_eq(jwk_load(j, &k), 1);
    ck_assert_int_eq(k.alg, GW_ALG_ES384);
    ck_assert_ptr_null(k.kid);
    ck_assert_int_eq(EVP_PKEY_eq(k.pkey, g_p384), 1);
    gw_key_clear(&k);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_keys_jwk_without_alg_pinned_by_type_and_curve)
{
    struct {
        EVP_PKEY *pk;
        enum gw_alg want;
    } v[] = {{g_rsa, GW_ALG_RS256},
             {g_p256, GW_ALG_ES256},
             {g_p384, GW_ALG_ES384},
             {g_p521, GW_ALG_ES512}};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        cJSON *j = jwk_of(v[i].pk);
        struct gw_key k = {0};
        ck_assert_int_eq(jwk_load(j, &k), 1);
        ck_assert_msg(k.alg == v[i].want, "case %zu: alg %d, want %d", i, k.alg, v[i].want);
        ck_assert_int_eq(EVP_PKEY_eq(k.pkey, v[i].pk), 1);
        gw_key_clear(&k);
        cJSON_Delete(j);
    }
}
END_TEST

START_TEST(test_keys_jwk_ignored_kinds)
{
    ck_assert_int_eq(jwk_load_text("{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":"
                                   "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}",
                                   NULL),
                     0);
    cJSON *j = jwk_of(g_rsa);
    jwk_set(j, "use", "enc");
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    jwk_set(j, "use", NULL);
    cJSON_AddItemToObject(j, "key_ops", cJSON_CreateStringArray((const char *[]){"encrypt"}, 1));
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    cJSON_DeleteItemFromObject(j, "key_ops");
    cJSON_AddItemToObject(j, "key_ops",
                          cJSON_CreateStringArray((const char *[]){"sign", "verify"}, 2));
    ck_assert_int_eq(jwk_load(j, NULL), 1);
    cJSON_DeleteItemFromObject(j, "key_ops");
    jwk_set(j, "alg", "RSA-OAEP-256"); /* an algorithm the gateway does not verify with */
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    cJSON_Delete(j);
    j = jwk_of(g_p256);
    jwk_set(j, "use", "enc");
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_keys_jwk_rsa_invalid_members)
{
    cJSON *j = jwk_of(g_rsa);
    char *n = strdup(cJSON_GetObjectItem(j, "n")->valuestring);
    char *e = strdup(cJSON_GetObjectItem(j, "e")->valuestring);

    jwk_set(j, "n", NULL);
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* n missing */
    jwk_set(j, "n", n);
    jwk_set(j, "e", NULL);
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* e missing */
    jwk_set(j, "e", "AQA=");
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* padded */
    jwk_set(j, "e", "AQ+B");
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* std alphabet */
    jwk_set(j, "e", e);
    size_t nl = strlen(n);
    n[nl / 2] = '!';
    jwk_set(j, "n", n);
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* bad base64 in n */
    cJSON_DeleteItemFromObject(j, "n");
    cJSON_AddNumberToObject(j, "n", 12345);
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* n not a string */
    cJSON_Delete(j);

    j = jwk_of(g_rsa);
    jwk_set(j, "kty", NULL);
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* kty missing */
    cJSON_Delete(j);
    j = jwk_of(g_rsa);
    jwk_set(j, "alg", "ES256");
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* alg does not fit an RSA key */
    cJSON_Delete(j);
    free(n);
    free(e);
}
END_TEST

/* keys.h: weak RSA is "invalid" (-1), not "ignored" (0) */
/* A weak RSA key in a JWKS can never verify a token; it is left out (0), so the rest of an
 * IdP's set stays usable (keys.h). */
START_TEST(test_keys_jwk_weak_rsa_ignored)
{
    cJSON *j = jwk_of(g_rsa1024);
    ck_assert_int_eq(jwk_load(j, NULL), 0); /* 1024 bits */
    cJSON_Delete(j);
    j = jwk_of(g_rsa);
    jwk_set(j, "e", "AQ");
    ck_assert_int_eq(jwk_load(j, NULL), 0); /* e = 1 */
    jwk_set(j, "e", "AQAA");
    ck_assert_int_eq(jwk_load(j, NULL), 0); /* e = 65536, even */
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_keys_jwk_ec_point_not_on_curve_refused)
{
    cJSON *j = jwk_of(g_p256);
    size_t len;
    const char *y = cJSON_GetObjectItem(j, "y")->valuestring;
    unsigned char *raw = unb64u(y, strlen(y), &len);
    ck_assert_ptr_nonnull(raw);
    ck_assert_uint_eq(len, 32);
    raw[31] ^= 0x01;
    char *bad = b64u(raw, len);
    jwk_set(j, "y", bad);
    ck_assert_int_eq(jwk_load(j, NULL), -1);
    free(bad);
    free(raw);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_keys_jwk_ec_invalid_members)
{
    cJSON *j = jwk_of(g_p256);
    jwk_set(j, "alg", "ES384");
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* crv P-256, alg ES384 */
    jwk_set(j, "alg", "ES512");
    ck_assert_int_eq(jwk_load(j, NULL), -1);
    jwk_set(j, "alg", "RS256");
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* RSA alg on an EC key */
    jwk_set(j, "alg", NULL);
    jwk_set(j, "crv", "P-384");
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* P-256 coordinates named P-384 */
    cJSON_Delete(j);
    j = jwk_of(g_p384);
    jwk_set(j, "alg", "ES256");
    ck_assert_int_eq(jwk_load(j, NULL), -1);
    cJSON_Delete(j);
    j = jwk_of(g_p256);
    jwk_set(j, "x", NULL);
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* x missing */
    cJSON_Delete(j);
    j = jwk_of(g_p256);
    jwk_set(j, "y", "not*base64");
    ck_assert_int_eq(jwk_load(j, NULL), -1);
    cJSON_Delete(j);
}
END_TEST

/* keys.h: a missing member makes the key invalid (-1) */
START_TEST(test_keys_jwk_ec_without_crv_invalid)
{
    cJSON *j = jwk_of(g_p256);
    jwk_set(j, "crv", NULL);
    ck_assert_int_eq(jwk_load(j, NULL), -1);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_keys_jwk_rsa_alg_chooses_rs_or_ps)
{
    static const enum gw_alg v[] = {GW_ALG_PS256, GW_ALG_PS384, GW_ALG_PS512, GW_ALG_RS384};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        cJSON *j = jwk_of(g_rsa);
        jwk_set(j, "alg", gw_alg_name(v[i]));
        jwk_set(j, "kid", "p");
        struct gw_key k = {0};
        ck_assert_int_eq(jwk_load(j, &k), 1);
        ck_assert_msg(k.alg == v[i], "%s: pinned %s", gw_alg_name(v[i]), gw_alg_name(k.alg));
        ck_assert_int_eq(EVP_PKEY_eq(k.pkey, g_rsa), 1);
        gw_key_clear(&k);
        cJSON_Delete(j);
    }
    /* a weak RSA key is left out for PS as for RS */
    cJSON *j = jwk_of(g_rsa1024);
    jwk_set(j, "alg", "PS256");
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_keys_jwk_okp_ed25519_is_eddsa)
{
    const char *algs_[] = {NULL, "EdDSA"};
    for (size_t i = 0; i < 2; i++) {
        cJSON *j = jwk_of(g_ed);
        jwk_set(j, "alg", algs_[i]);
        jwk_set(j, "kid", "d1");
        jwk_set(j, "use", "sig");
        struct gw_key k = {0};
        ck_assert_int_eq(jwk_load(j, &k), 1);
        ck_assert_int_eq(k.alg, GW_ALG_EDDSA);
        ck_assert_str_eq(k.kid, "d1");
        ck_assert_int_eq(EVP_PKEY_eq(k.pkey, g_ed), 1);
        /* the same key through PEM: one key, one material */
        struct gw_key pk = {0};
        char *pem = PUB_PEM(g_ed), why[128];
        ck_assert_int_eq(
            gw_key_from_pem(pem, strlen(pem), GW_ALG_EDDSA, "d1", &pk, why, sizeof why), 0);
        ck_assert_uint_eq(pk.material_len, k.material_len);
        ck_assert(memcmp(pk.material, k.material, k.material_len) == 0);
        free(pem);
        gw_key_clear(&pk);
        gw_key_clear(&k);
        cJSON_Delete(j);
    }
}
END_TEST

/* OKP keys the gateway cannot use are left out of a set with a reason, as other unsupported
 * curves are: Ed448 (refused by SPEC §4), X25519 and X448 (key agreement). */
START_TEST(test_keys_jwk_okp_other_curves_ignored)
{
    cJSON *j = jwk_of(g_ed448);
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    jwk_set(j, "alg", "EdDSA");
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    cJSON_Delete(j);
    j = jwk_of(g_x25519);
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    jwk_set(j, "crv", "X448");
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    jwk_set(j, "crv", "P-256"); /* an EC curve name on an OKP key */
    ck_assert_int_eq(jwk_load(j, NULL), 0);
    cJSON_Delete(j);
    char why[256];
    struct gw_key k;
    cJSON *e = jwk_of(g_ed448);
    jwk_set(e, "kid", "e448");
    ck_assert_int_eq(gw_key_from_jwk(e, &k, why, sizeof why), 0);
    ck_assert_msg(strstr(why, "e448") && strstr(why, "Ed448") && strstr(why, "ignored"), "%s", why);
    cJSON_Delete(e);
}
END_TEST

START_TEST(test_keys_jwk_okp_invalid_members)
{
    cJSON *j = jwk_of(g_ed);
    char *x = strdup(cJSON_GetObjectItem(j, "x")->valuestring);
    size_t xl;
    unsigned char *raw = unb64u(x, strlen(x), &xl);
    ck_assert_uint_eq(xl, 32);
    char *x31 = b64u(raw, 31), *x33;
    unsigned char raw33[33];
    memcpy(raw33, raw, 32);
    raw33[32] = 0;
    x33 = b64u(raw33, 33);
    const char *bad_x[] = {x31, x33, "", "not*base64", NULL};
    for (size_t i = 0; i < sizeof bad_x / sizeof *bad_x; i++) {
        jwk_set(j, "x", bad_x[i]);
        ck_assert_msg(jwk_load(j, NULL) == -1, "x %s accepted", bad_x[i] ? bad_x[i] : "(none)");
    }
    char *padded = malloc(strlen(x) + 2);
    snprintf(padded, strlen(x) + 2, "%s=", x);
    jwk_set(j, "x", padded);
    ck_assert_int_eq(jwk_load(j, NULL), -1);
    cJSON_DeleteItemFromObject(j, "x");
    cJSON_AddNumberToObject(j, "x", 1);
    ck_assert_int_eq(jwk_load(j, NULL), -1);
    jwk_set(j, "x", x);
    ck_assert_int_eq(jwk_load(j, NULL), 1); /* the control */
    jwk_set(j, "crv", NULL);
    ck_assert_int_eq(jwk_load(j, NULL), -1); /* crv missing */
    cJSON_Delete(j);
    free(padded);
    free(x31);
    free(x33);
    free(raw);
    free(x);
}
END_TEST

/* A JWK's "alg" must fit its key type: EdDSA on RSA, PS256 on EC, RS256/PS256/ES256 on OKP. */
START_TEST(test_keys_jwk_alg_must_fit_the_key_type)
{
    static const struct {
        EVP_PKEY **pk;
        const char *alg;
    } v[] = {
        {&g_rsa, "EdDSA"}, {&g_rsa, "ES256"}, {&g_p256, "PS256"}, {&g_p256, "EdDSA"},
        {&g_ed, "RS256"},  {&g_ed, "PS256"},  {&g_ed, "ES256"},   {&g_ed, "HS256"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        cJSON *j = jwk_of(*v[i].pk);
        jwk_set(j, "alg", v[i].alg);
        char why[256] = "";
        struct gw_key k;
        int r = gw_key_from_jwk(j, &k, why, sizeof why);
        ck_assert_msg(r == -1, "case %zu (%s): %d", i, v[i].alg, r);
        ck_assert_msg(strstr(why, v[i].alg) != NULL, "case %zu: %s", i, why);
        cJSON_Delete(j);
    }
}
END_TEST

/* ---- JWKS ---- */

static struct gw_keyset *jwks(const char *text)
{
    char why[256] = "";
    struct gw_keyset *s = gw_jwks_parse(text, strlen(text), why, sizeof why);
    if (s == NULL)
        ck_assert_msg(why[0] != '\0', "JWKS refused without a reason");
    return s;
}

/* {"keys":[ ...members ]} with the given JWKs (consumed). */
static char *jwks_text(cJSON **members, size_t n)
{
    cJSON *doc = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(doc, "keys");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, members[i]);
    char *t = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return t;
}

static const struct gw_key *find_kid(const struct gw_keyset *s, const char *kid)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->keys[i].kid && strcmp(s->keys[i].kid, kid) == 0)
            return &s->keys[i];
    return NULL;
}

START_TEST(test_keys_jwks_valid_set)
{
    cJSON *m[3] = {jwk_of(g_rsa), jwk_of(g_p256), jwk_of(g_p521)};
    jwk_set(m[0], "kid", "a");
    jwk_set(m[0], "alg", "RS512");
    jwk_set(m[1], "kid", "b");
    jwk_set(m[2], "kid", "c");
    jwk_set(m[2], "use", "sig");
    char *t = jwks_text(m, 3);
    struct gw_keyset *s = jwks(t);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->n, 3);
    ck_assert_int_eq(find_kid(s, "a")->alg, GW_ALG_RS512);
    ck_assert_int_eq(find_kid(s, "b")->alg, GW_ALG_ES256);
    ck_assert_int_eq(find_kid(s, "c")->alg, GW_ALG_ES512);
    ck_assert_ptr_eq(gw_keyset_ref(s), s);
    gw_keyset_unref(s);
    ck_assert_uint_eq(s->n, 3); /* still held */
    gw_keyset_unref(s);
    free(t);
}
END_TEST

/* A set of RSA key kid a (g_rsa unless other_rsa) with alg a_alg, and P-256 key kid b. */
static struct gw_keyset *set_ab(const char *a_kid, const char *a_alg, bool other_rsa, bool with_c)
{
    cJSON *m[3] = {jwk_of(other_rsa ? g_rsa_b : g_rsa), jwk_of(g_p256), jwk_of(g_p521)};
    jwk_set(m[0], "kid", a_kid);
    jwk_set(m[0], "alg", a_alg);
    jwk_set(m[1], "kid", "b");
    jwk_set(m[2], "kid", "c");
    if (!with_c)
        cJSON_Delete(m[2]);
    char *t = jwks_text(m, with_c ? 3 : 2);
    struct gw_keyset *s = jwks(t);
    ck_assert_ptr_nonnull(s);
    free(t);
    return s;
}

/* What a JWKS refresh withdraws (SPEC §4.1): a key of the old set that the new one does not
 * hold with the same kid, algorithm and public key. A new parse of the same document, or one
 * that adds a key, withdraws nothing. */
START_TEST(test_keys_jwks_withdrawn_counts_keys_that_left)
{
    struct gw_keyset *old = set_ab("a", "RS256", false, false);
    struct {
        struct gw_keyset *next;
        size_t withdrawn;
    } cases[] = {
        {set_ab("a", "RS256", false, false), 0}, /* the same document fetched again */
        {set_ab("a", "RS256", false, true), 0},  /* a key added (a rotation's first step) */
        {set_ab("x", "RS256", false, false), 1}, /* kid a gone (the same key under another kid) */
        {set_ab("a", "RS256", true, false), 1},  /* kid a now names another key */
        {set_ab("a", "RS512", false, false), 1}, /* kid a now pins another algorithm */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ck_assert_msg(gw_keyset_withdrawn(old, cases[i].next) == cases[i].withdrawn,
                      "case %zu: %zu withdrawn", i, gw_keyset_withdrawn(old, cases[i].next));
        gw_keyset_unref(cases[i].next);
    }
    cJSON *only_b[1] = {jwk_of(g_p256)};
    jwk_set(only_b[0], "kid", "b");
    char *t = jwks_text(only_b, 1);
    struct gw_keyset *b = jwks(t);
    free(t);
    ck_assert_uint_eq(gw_keyset_withdrawn(old, b), 1); /* kid a left */
    ck_assert_uint_eq(gw_keyset_withdrawn(b, old), 0);
    ck_assert_uint_eq(gw_keyset_withdrawn(NULL, old), 0); /* the first fetch */
    ck_assert_uint_eq(gw_keyset_withdrawn(old, NULL), 2);
    gw_keyset_unref(b);
    gw_keyset_unref(old);
}
END_TEST

START_TEST(test_keys_jwks_duplicate_kid_refused)
{
    cJSON *m[2] = {jwk_of(g_rsa), jwk_of(g_rsa_b)};
    jwk_set(m[0], "kid", "same");
    jwk_set(m[1], "kid", "same");
    char *t = jwks_text(m, 2);
    ck_assert_ptr_null(jwks(t));
    free(t);
}
END_TEST

START_TEST(test_keys_jwks_oct_and_enc_keys_ignored)
{
    cJSON *m[4] = {jwk_of(g_rsa),
                   cJSON_Parse("{\"kty\":\"oct\",\"kid\":\"o\",\"alg\":\"HS256\","
                               "\"k\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
                               "Hh8\"}"),
                   jwk_of(g_p256), jwk_of(g_rsa_b)};
    jwk_set(m[0], "kid", "r");
    jwk_set(m[2], "kid", "e");
    jwk_set(m[2], "use", "enc");
    jwk_set(m[3], "kid", "x");
    jwk_set(m[3], "alg", "RSA-OAEP-256");
    char *t = jwks_text(m, 4);
    struct gw_keyset *s = jwks(t);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->n, 1);
    ck_assert_str_eq(s->keys[0].kid, "r");
    ck_assert_ptr_null(find_kid(s, "o"));
    ck_assert_ptr_null(find_kid(s, "e"));
    gw_keyset_unref(s);
    free(t);
}
END_TEST

START_TEST(test_keys_jwks_invalid_key_refuses_set)
{
    cJSON *m[2] = {jwk_of(g_rsa), jwk_of(g_rsa_b)};
    jwk_set(m[0], "kid", "good");
    jwk_set(m[1], "kid", "bad");
    jwk_set(m[1], "n", NULL); /* missing n */
    char *t = jwks_text(m, 2);
    ck_assert_ptr_null(jwks(t));
    free(t);

    cJSON *m2[2] = {jwk_of(g_rsa), jwk_of(g_rsa_b)};
    jwk_set(m2[0], "kid", "good");
    jwk_set(m2[1], "kid", "bad");
    jwk_set(m2[1], "e", "AQ==");
    t = jwks_text(m2, 2);
    ck_assert_ptr_null(jwks(t));
    free(t);

    cJSON *m3[2] = {jwk_of(g_rsa), jwk_of(g_p256)};
    jwk_set(m3[0], "kid", "good");
    jwk_set(m3[1], "kid", "bad");
    jwk_set(m3[1], "alg", "ES384");
    t = jwks_text(m3, 2);
    ck_assert_ptr_null(jwks(t));
    free(t);
}
END_TEST

START_TEST(test_keys_jwks_weak_rsa_key_left_out)
{
    cJSON *m[2] = {jwk_of(g_rsa), jwk_of(g_rsa1024)};
    jwk_set(m[0], "kid", "good");
    jwk_set(m[1], "kid", "weak");
    char *t = jwks_text(m, 2);
    struct gw_keyset *s = jwks(t);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->n, 1);
    ck_assert_str_eq(s->keys[0].kid, "good");
    gw_keyset_unref(s);
    free(t);
    /* alone, it leaves nothing usable: the set is refused (jwks_text took m's members) */
    cJSON *weak = jwk_of(g_rsa1024);
    t = jwks_text(&weak, 1);
    ck_assert_ptr_null(jwks(t));
    free(t);
}
END_TEST

START_TEST(test_keys_jwks_point_not_on_curve_refuses_set)
{
    cJSON *j = jwk_of(g_p256);
    const char *x = cJSON_GetObjectItem(j, "x")->valuestring;
    size_t len;
    unsigned char *raw = unb64u(x, strlen(x), &len);
    raw[0] ^= 0x80;
    char *bad = b64u(raw, len);
    jwk_set(j, "x", bad);
    jwk_set(j, "kid", "p");
    char *t = jwks_text(&j, 1);
    ck_assert_ptr_null(jwks(t));
    free(t);
    free(bad);
    free(raw);
}
END_TEST

START_TEST(test_keys_jwks_without_usable_key_refused)
{
    ck_assert_ptr_null(jwks("{\"keys\":[]}"));
    ck_assert_ptr_null(jwks("{\"keys\":[{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":"
                            "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}]}"));
    cJSON *j = jwk_of(g_rsa);
    jwk_set(j, "use", "enc");
    char *t = jwks_text(&j, 1);
    ck_assert_ptr_null(jwks(t));
    free(t);
}
END_TEST

START_TEST(test_keys_jwks_not_a_jwks_document_refused)
{
    static const char *const bad[] = {"",
                                      "not json",
                                      "[]",
                                      "{}",
                                      "{\"keys\":{}}",
                                      "{\"keys\":null}",
                                      "{\"keys\":[1]}",
                                      "\"keys\"",
                                      "{\"keys\":[]",
                                      "null"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(jwks(bad[i]) == NULL, "accepted: %s", bad[i]);
    /* a duplicate "keys" member: two parsers could pick different sets */
    cJSON *a = jwk_of(g_rsa);
    jwk_set(a, "kid", "a");
    char *ja = cJSON_PrintUnformatted(a);
    size_t n = 2 * strlen(ja) + 64;
    char *t = malloc(n);
    snprintf(t, n, "{\"keys\":[%s],\"keys\":[%s]}", ja, ja);
    ck_assert_ptr_null(jwks(t));
    free(t);
    free(ja);
    cJSON_Delete(a);
}
END_TEST

/* A set with Ed25519, PS256 and Ed448 keys: the Ed448 key is left out, the rest usable; a set of
 * Ed448 keys alone has nothing usable and is refused. */
START_TEST(test_keys_jwks_okp_and_ps_keys)
{
    cJSON *m[4] = {jwk_of(g_ed), jwk_of(g_ed448), jwk_of(g_rsa), jwk_of(g_x25519)};
    jwk_set(m[0], "kid", "d");
    jwk_set(m[1], "kid", "x448");
    jwk_set(m[1], "alg", "EdDSA");
    jwk_set(m[2], "kid", "p");
    jwk_set(m[2], "alg", "PS384");
    jwk_set(m[3], "kid", "x25519");
    char *t = jwks_text(m, 4);
    struct gw_keyset *s = jwks(t);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->n, 2);
    ck_assert_int_eq(find_kid(s, "d")->alg, GW_ALG_EDDSA);
    ck_assert_int_eq(find_kid(s, "p")->alg, GW_ALG_PS384);
    ck_assert_ptr_null(find_kid(s, "x448"));
    gw_keyset_unref(s);
    free(t);
    cJSON *only = jwk_of(g_ed448);
    t = jwks_text(&only, 1);
    ck_assert_ptr_null(jwks(t));
    free(t);
    /* an invalid OKP key refuses the set, as an invalid EC key does */
    cJSON *m2[2] = {jwk_of(g_rsa), jwk_of(g_ed)};
    jwk_set(m2[1], "x", "AAAA");
    t = jwks_text(m2, 2);
    ck_assert_ptr_null(jwks(t));
    free(t);
}
END_TEST

/* ---- gw_jws_verify ---- */

static struct gw_key pem_key(EVP_PKEY *pk, enum gw_alg alg)
{
    char *pem = PUB_PEM(pk);
    struct gw_key k = {0};
    char why[256] = "";
    ck_assert_msg(gw_key_from_pem(pem, strlen(pem), alg, "k", &k, why, sizeof why) == 0, "%s", why);
    free(pem);
    return k;
}

static enum gw_jws_result jws_verify(const char *tok, const struct gw_key *k)
{
    return gw_jws_verify(tok, strlen(tok), k);
}

START_TEST(test_keys_jws_each_alg_verifies)
{
    struct {
        enum gw_alg alg;
        EVP_PKEY *pk;
        const char *hdr;
    } v[] = {
        {GW_ALG_RS256, g_rsa, "{\"alg\":\"RS256\"}"},
        {GW_ALG_RS384, g_rsa, "{\"alg\":\"RS384\"}"},
        {GW_ALG_RS512, g_rsa, "{\"alg\":\"RS512\"}"},
        {GW_ALG_ES256, g_p256, "{\"alg\":\"ES256\"}"},
        {GW_ALG_ES384, g_p384, "{\"alg\":\"ES384\"}"},
        {GW_ALG_ES512, g_p521, "{\"alg\":\"ES512\"}"},
        {GW_ALG_PS256, g_rsa, "{\"alg\":\"PS256\"}"},
        {GW_ALG_PS384, g_rsa, "{\"alg\":\"PS384\"}"},
        {GW_ALG_PS512, g_rsa, "{\"alg\":\"PS512\"}"},
        {GW_ALG_EDDSA, g_ed, "{\"alg\":\"EdDSA\"}"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        struct gw_key k = pem_key(v[i].pk, v[i].alg);
        char *tok = make_jws(v[i].alg, v[i].pk, NULL, 0, v[i].hdr, strlen(v[i].hdr), "foo", 3);
        ck_assert_msg(jws_verify(tok, &k) == GW_JWS_OK, "%s refused", gw_alg_name(v[i].alg));
        char *c = &tok[strlen(tok) - 3]; /* a signature character changed */
        *c = *c == 'A' ? 'B' : 'A';
        ck_assert_msg(jws_verify(tok, &k) == GW_JWS_BAD_SIGNATURE, "%s modified: %d",
                      gw_alg_name(v[i].alg), jws_verify(tok, &k));
        free(tok);
        gw_key_clear(&k);
    }
    unsigned char sec[64];
    memset(sec, 0x5a, sizeof sec);
    const char *hs[] = {"{\"alg\":\"HS256\"}", "{\"alg\":\"HS384\"}", "{\"alg\":\"HS512\"}"};
    for (int i = 0; i < 3; i++) {
        struct gw_key k = {0};
        char why[64];
        ck_assert_int_eq(
            gw_key_from_secret(sec, sizeof sec, GW_ALG_HS256 + i, NULL, &k, why, sizeof why), 0);
        char *tok =
            make_jws(GW_ALG_HS256 + i, NULL, sec, sizeof sec, hs[i], strlen(hs[i]), "{}", 2);
        ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_OK);
        free(tok);
        tok = make_jws(GW_ALG_HS256 + i, NULL, sec, sizeof sec - 1, hs[i], strlen(hs[i]), "{}", 2);
        ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_BAD_SIGNATURE);
        free(tok);
        gw_key_clear(&k);
    }
}
END_TEST

START_TEST(test_keys_jws_header_alg_must_equal_pinned_alg)
{
    struct gw_key k = pem_key(g_rsa, GW_ALG_RS256);
    char *tok = JWS(GW_ALG_RS384, g_rsa, "{\"alg\":\"RS384\"}", "foo");
    ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_WRONG_ALG);
    free(tok);
    tok = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"rs256\"}", "foo");
    ck_assert_int_ne(jws_verify(tok, &k), GW_JWS_OK);
    free(tok);
    /* HS256 MACed with the RSA public key's PEM bytes (libjwt's alg confusion) */
    char *pem = PUB_PEM(g_rsa);
    tok = make_jws(GW_ALG_HS256, NULL, pem, strlen(pem), "{\"alg\":\"HS256\"}", 15, "foo", 3);
    ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_WRONG_ALG);
    free(tok);
    free(pem);
    tok = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"none\"}", "foo");
    ck_assert_int_ne(jws_verify(tok, &k), GW_JWS_OK);
    free(tok);
    gw_key_clear(&k);
}
END_TEST

START_TEST(test_keys_jws_header_strictness)
{
    struct gw_key k = pem_key(g_rsa, GW_ALG_RS256);
    static const char *const bad[] = {
        "{\"alg\":\"RS256\",\"alg\":\"HS256\"}",
        "{\"alg\":\"RS256\",\"crit\":[\"exp\"]}",
        "{\"alg\":\"RS256\",\"typ\":\"at+jwt+\"}",
        "{\"alg\":\"RS256\",\"typ\":\"JOSE\"}",
        "[\"RS256\"]",
        "{\"alg\":256}",
        "{\"typ\":\"JWT\"}",
        "{\"alg\":\"RS256\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *tok = make_jws(GW_ALG_RS256, g_rsa, NULL, 0, bad[i], strlen(bad[i]), "foo", 3);
        enum gw_jws_result r = jws_verify(tok, &k);
        ck_assert_msg(r == GW_JWS_MALFORMED, "%s: %d", bad[i], r);
        free(tok);
    }
    char *tok = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"RS256\",\"typ\":\"jwt\"}", "foo");
    ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_OK);
    free(tok);
    tok = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"RS256\",\"typ\":\"application/at+JWT\"}", "foo");
    ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_OK);
    free(tok);
    /* the payload is not interpreted at this layer */
    tok = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"RS256\"}", "not json at all");
    ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_OK);
    free(tok);
    gw_key_clear(&k);
}
END_TEST

START_TEST(test_keys_jws_structure)
{
    struct gw_key k = pem_key(g_rsa, GW_ALG_RS256);
    char *tok = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"RS256\"}", "foo");
    size_t n = strlen(tok);
    char *buf = malloc(n + 8);
    char *dot2 = strrchr(tok, '.');
    ck_assert_int_eq(gw_jws_verify(tok, (size_t)(dot2 - tok), &k), GW_JWS_MALFORMED); /* h.p */
    ck_assert_int_eq(gw_jws_verify(tok, (size_t)(dot2 - tok) + 1, &k), GW_JWS_MALFORMED);
    snprintf(buf, n + 8, "%s.", tok);
    ck_assert_int_eq(jws_verify(buf, &k), GW_JWS_MALFORMED); /* h.p.s. */
    snprintf(buf, n + 8, "%s.AA", tok);
    ck_assert_int_eq(jws_verify(buf, &k), GW_JWS_MALFORMED); /* h.p.s.x */
    snprintf(buf, n + 8, "%s=", tok);
    ck_assert_int_eq(jws_verify(buf, &k), GW_JWS_MALFORMED);
    ck_assert_int_eq(jws_verify("", &k), GW_JWS_MALFORMED);
    ck_assert_int_eq(jws_verify("..", &k), GW_JWS_MALFORMED);
    /* the signature one byte short: 255 bytes */
    char *s = dot2 + 1;
    size_t sl;
    unsigned char *raw = unb64u(s, strlen(s), &sl);
    ck_assert_uint_eq(sl, 256);
    char *shorter = b64u(raw, 255);
    snprintf(buf, n + 8, "%.*s.%s", (int)(dot2 - tok), tok, shorter);
    ck_assert_int_eq(jws_verify(buf, &k), GW_JWS_BAD_SIGNATURE);
    free(shorter);
    free(raw);
    free(buf);
    free(tok);
    gw_key_clear(&k);
}
END_TEST

START_TEST(test_keys_jws_ecdsa_der_signature_refused)
{
    struct gw_key k = pem_key(g_p256, GW_ALG_ES256);
    static const char hdr[] = "{\"alg\":\"ES256\"}";
    char *h = b64u(hdr, sizeof hdr - 1), *p = b64u("foo", 3);
    char in[128];
    snprintf(in, sizeof in, "%s.%s", h, p);
    unsigned char sig[1024];
    size_t n = sign_bytes(GW_ALG_ES256, g_p256, NULL, 0, true, in, strlen(in), sig);
    char *s = b64u(sig, n);
    char tok[512];
    snprintf(tok, sizeof tok, "%s.%s", in, s);
    ck_assert_int_eq(jws_verify(tok, &k), GW_JWS_BAD_SIGNATURE);
    free(h);
    free(p);
    free(s);
    gw_key_clear(&k);
}
END_TEST

/* The signature bytes of a compact JWS (decoded), and the JWS with other signature bytes. */
static unsigned char *jws_sig(const char *tok, size_t *len)
{
    const char *s = strrchr(tok, '.') + 1;
    unsigned char *raw = unb64u(s, strlen(s), len);
    ck_assert_ptr_nonnull(raw);
    return raw;
}

static char *jws_with_sig(const char *tok, const unsigned char *sig, size_t n)
{
    const char *dot = strrchr(tok, '.');
    char *s = b64u(sig, n);
    size_t cap = (size_t)(dot - tok) + strlen(s) + 2;
    char *out = malloc(cap);
    snprintf(out, cap, "%.*s.%s", (int)(dot - tok), tok, s);
    free(s);
    return out;
}

/* SPEC §4: the header alg must equal the pinned one exactly, so one RSA key pinned RS256 never
 * verifies a PS256 token and the reverse, whichever padding the signature really has. */
START_TEST(test_keys_jws_rs_ps_confusion_refused_both_ways)
{
    struct gw_key rs = pem_key(g_rsa, GW_ALG_RS256), ps = pem_key(g_rsa, GW_ALG_PS256);
    char *t_ps = JWS(GW_ALG_PS256, g_rsa, "{\"alg\":\"PS256\"}", "foo");
    char *t_rs = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"RS256\"}", "foo");
    ck_assert_int_eq(jws_verify(t_ps, &ps), GW_JWS_OK); /* the controls */
    ck_assert_int_eq(jws_verify(t_rs, &rs), GW_JWS_OK);
    ck_assert_int_eq(jws_verify(t_ps, &rs), GW_JWS_WRONG_ALG);
    ck_assert_int_eq(jws_verify(t_rs, &ps), GW_JWS_WRONG_ALG);
    /* the header names the pinned alg, the signature has the other padding */
    char *rs_hdr_pss = JWS(GW_ALG_PS256, g_rsa, "{\"alg\":\"RS256\"}", "foo");
    char *ps_hdr_pkcs1 = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"PS256\"}", "foo");
    ck_assert_int_eq(jws_verify(rs_hdr_pss, &rs), GW_JWS_BAD_SIGNATURE);
    ck_assert_int_eq(jws_verify(ps_hdr_pkcs1, &ps), GW_JWS_BAD_SIGNATURE);
    /* and at the raw layer: a PSS signature under the RS key, a PKCS#1 one under the PS key */
    static const char msg[] = "m";
    unsigned char sig[1024];
    size_t n = sign_bytes(GW_ALG_PS256, g_rsa, NULL, 0, false, msg, 1, sig);
    ck_assert(gw_sig_verify(&ps, (const unsigned char *)msg, 1, sig, n));
    ck_assert(!gw_sig_verify(&rs, (const unsigned char *)msg, 1, sig, n));
    n = sign_bytes(GW_ALG_RS256, g_rsa, NULL, 0, false, msg, 1, sig);
    ck_assert(gw_sig_verify(&rs, (const unsigned char *)msg, 1, sig, n));
    ck_assert(!gw_sig_verify(&ps, (const unsigned char *)msg, 1, sig, n));
    /* PS384 and PS512 against a key pinned PS256 */
    struct gw_key ps384 = pem_key(g_rsa, GW_ALG_PS384);
    char *t_384 = JWS(GW_ALG_PS384, g_rsa, "{\"alg\":\"PS384\"}", "foo");
    ck_assert_int_eq(jws_verify(t_384, &ps), GW_JWS_WRONG_ALG);
    ck_assert_int_eq(jws_verify(t_384, &ps384), GW_JWS_OK);
    char *h256_s384 = JWS(GW_ALG_PS384, g_rsa, "{\"alg\":\"PS256\"}", "foo");
    ck_assert_int_eq(jws_verify(h256_s384, &ps), GW_JWS_BAD_SIGNATURE);
    free(t_ps);
    free(t_rs);
    free(rs_hdr_pss);
    free(ps_hdr_pkcs1);
    free(t_384);
    free(h256_s384);
    gw_key_clear(&rs);
    gw_key_clear(&ps);
    gw_key_clear(&ps384);
}
END_TEST

/* RFC 7518 §3.5: MGF1 with the same hash and a salt as long as the hash. A PSS signature with
 * other parameters is a valid RSASSA-PSS signature, but not a PS256 one. */
START_TEST(test_keys_sig_pss_parameters_pinned)
{
    struct gw_key k = pem_key(g_rsa, GW_ALG_PS256);
    static const unsigned char msg[] = "payload";
    unsigned char sig[1024];
    struct {
        const EVP_MD *md, *mgf1;
        int salt;
        bool ok;
    } v[] = {
        {EVP_sha256(), EVP_sha256(), 32, true},
        {EVP_sha256(), EVP_sha256(), RSA_PSS_SALTLEN_DIGEST, true},
        {EVP_sha256(), EVP_sha256(), 0, false},
        {EVP_sha256(), EVP_sha256(), 20, false},
        {EVP_sha256(), EVP_sha256(), 33, false},
        {EVP_sha256(), EVP_sha256(), RSA_PSS_SALTLEN_MAX, false},
        {EVP_sha256(), EVP_sha1(), 32, false},
        {EVP_sha256(), EVP_sha512(), 32, false},
        {EVP_sha384(), EVP_sha384(), 32, false},
        {EVP_sha512(), EVP_sha256(), 32, false},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        size_t n = pss_sign(g_rsa, v[i].md, v[i].mgf1, v[i].salt, msg, sizeof msg, sig);
        ck_assert_msg(gw_sig_verify(&k, msg, sizeof msg, sig, n) == v[i].ok, "case %zu", i);
    }
    gw_key_clear(&k);
    k = pem_key(g_rsa, GW_ALG_PS512);
    size_t n = pss_sign(g_rsa, EVP_sha512(), EVP_sha512(), 64, msg, sizeof msg, sig);
    ck_assert(gw_sig_verify(&k, msg, sizeof msg, sig, n));
    n = pss_sign(g_rsa, EVP_sha512(), EVP_sha512(), 32, msg, sizeof msg, sig);
    ck_assert(!gw_sig_verify(&k, msg, sizeof msg, sig, n));
    gw_key_clear(&k);
}
END_TEST

/* A signature is exactly the modulus' bytes (PS) or 64 bytes (EdDSA): a leading or trailing
 * zero, one byte less or an empty signature is refused before any arithmetic. */
START_TEST(test_keys_sig_exact_lengths)
{
    struct gw_key ps = pem_key(g_rsa, GW_ALG_PS256), ed = pem_key(g_ed, GW_ALG_EDDSA);
    struct {
        const struct gw_key *k;
        enum gw_alg alg;
        EVP_PKEY *pk;
        size_t want;
    } v[] = {{&ps, GW_ALG_PS256, g_rsa, 256}, {&ed, GW_ALG_EDDSA, g_ed, 64}};
    static const unsigned char msg[] = "eyJhbGciOiJQUzI1NiJ9.Zm9v";
    for (size_t i = 0; i < 2; i++) {
        unsigned char sig[1024], b[1026];
        size_t n = sign_bytes(v[i].alg, v[i].pk, NULL, 0, false, msg, sizeof msg - 1, sig);
        ck_assert_uint_eq(n, v[i].want);
        ck_assert(gw_sig_verify(v[i].k, msg, sizeof msg - 1, sig, n));
        b[0] = 0;
        memcpy(b + 1, sig, n);
        ck_assert(!gw_sig_verify(v[i].k, msg, sizeof msg - 1, b, n + 1)); /* 00 || sig */
        memcpy(b, sig, n);
        b[n] = 0;
        ck_assert(!gw_sig_verify(v[i].k, msg, sizeof msg - 1, b, n + 1)); /* sig || 00 */
        ck_assert(!gw_sig_verify(v[i].k, msg, sizeof msg - 1, sig, n - 1));
        ck_assert(!gw_sig_verify(v[i].k, msg, sizeof msg - 1, sig + 1, n - 1));
        ck_assert(!gw_sig_verify(v[i].k, msg, sizeof msg - 1, sig, 0));
        sig[n / 2] ^= 0x01;
        ck_assert(!gw_sig_verify(v[i].k, msg, sizeof msg - 1, sig, n));
    }
    /* through the JWS layer: an Ed25519 signature one byte short */
    char *t = JWS(GW_ALG_EDDSA, g_ed, "{\"alg\":\"EdDSA\"}", "foo");
    size_t sl;
    unsigned char *raw = jws_sig(t, &sl);
    ck_assert_uint_eq(sl, 64);
    char *shorter = jws_with_sig(t, raw, 63);
    ck_assert_int_eq(jws_verify(shorter, &ed), GW_JWS_BAD_SIGNATURE);
    free(shorter);
    free(raw);
    free(t);
    gw_key_clear(&ps);
    gw_key_clear(&ed);
}
END_TEST

START_TEST(test_keys_jws_eddsa_refuses_other_keys_and_algs)
{
    struct gw_key ed = pem_key(g_ed, GW_ALG_EDDSA), rs = pem_key(g_rsa, GW_ALG_RS256);
    char *other = JWS(GW_ALG_EDDSA, g_ed_b, "{\"alg\":\"EdDSA\"}", "foo");
    ck_assert_int_eq(jws_verify(other, &ed), GW_JWS_BAD_SIGNATURE); /* another Ed25519 key */
    char *t = JWS(GW_ALG_EDDSA, g_ed, "{\"alg\":\"EdDSA\"}", "foo");
    ck_assert_int_eq(jws_verify(t, &rs), GW_JWS_WRONG_ALG); /* EdDSA token, RSA key */
    char *t_rs = JWS(GW_ALG_RS256, g_rsa, "{\"alg\":\"RS256\"}", "foo");
    ck_assert_int_eq(jws_verify(t_rs, &ed), GW_JWS_WRONG_ALG);
    static const char *const spellings[] = {"{\"alg\":\"EDDSA\"}", "{\"alg\":\"eddsa\"}",
                                            "{\"alg\":\"Ed25519\"}"};
    for (size_t i = 0; i < 3; i++) {
        char *x = make_jws(GW_ALG_EDDSA, g_ed, NULL, 0, spellings[i], strlen(spellings[i]), "f", 1);
        ck_assert_msg(jws_verify(x, &ed) == GW_JWS_WRONG_ALG, "%s", spellings[i]);
        free(x);
    }
    free(other);
    free(t);
    free(t_rs);
    gw_key_clear(&ed);
    gw_key_clear(&rs);
}
END_TEST

/* RFC 8037 Appendix A.4: the Ed25519 JWS over "Example of Ed25519 signing", verified with the
 * key of A.2 loaded from its JWK; one bit flipped in the signature or the payload refuses it.
 * A.1's private key signs it again to the same bytes (Ed25519 is deterministic). */
#define RFC8037_X "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define RFC8037_D "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
#define RFC8037_JWS                                                                                \
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-"        \
    "09PGcvMg3"                                                                                    \
    "AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

START_TEST(test_keys_rfc8037_ed25519_example)
{
    struct gw_key k = {0};
    ck_assert_int_eq(
        jwk_load_text("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" RFC8037_X "\"}", &k), 1);
    ck_assert_int_eq(k.alg, GW_ALG_EDDSA);
    ck_assert_int_eq(jws_verify(RFC8037_JWS, &k), GW_JWS_OK);
    size_t sl;
    unsigned char *sig = jws_sig(RFC8037_JWS, &sl);
    ck_assert_uint_eq(sl, 64);
    for (size_t bit = 0; bit < 64 * 8; bit += 37) {
        sig[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        char *t = jws_with_sig(RFC8037_JWS, sig, sl);
        ck_assert_msg(jws_verify(t, &k) == GW_JWS_BAD_SIGNATURE, "bit %zu flipped: accepted", bit);
        free(t);
        sig[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    /* one bit of the payload: "Example" -> "Dxample" ('E' 0x45 -> 'D' 0x44; the second
     * character carries the first byte's last two bits: "RX" -> "RH") */
    char *t = strdup(RFC8037_JWS);
    char *p = strchr(t, '.') + 1;
    ck_assert_int_eq(strncmp(p, "RXhh", 4), 0);
    p[1] = 'H';
    size_t pl = 0;
    unsigned char *dec = unb64u(p, (size_t)(strchr(p, '.') - p), &pl);
    ck_assert(pl == 26 && memcmp(dec, "Dxample of Ed25519 signing", 26) == 0);
    free(dec);
    ck_assert_int_eq(jws_verify(t, &k), GW_JWS_BAD_SIGNATURE);
    free(t);
    /* A.1's private key gives A.4's signature */
    size_t dl = 0;
    unsigned char *d = unb64u(RFC8037_D, strlen(RFC8037_D), &dl);
    EVP_PKEY *priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, dl);
    ck_assert_ptr_nonnull(priv);
    ck_assert_int_eq(EVP_PKEY_eq(priv, k.pkey), 1);
    unsigned char again[1024];
    const char *in = RFC8037_JWS;
    size_t inlen = (size_t)(strrchr(in, '.') - in);
    ck_assert_uint_eq(sign_bytes(GW_ALG_EDDSA, priv, NULL, 0, false, in, inlen, again), 64);
    ck_assert(memcmp(again, sig, 64) == 0);
    EVP_PKEY_free(priv);
    OPENSSL_cleanse(d, dl);
    free(d);
    free(sig);
    gw_key_clear(&k);
}
END_TEST

/* ---- Wycheproof ---- */

struct wp_key {
    bool loaded;
    struct gw_key one;     /* single JWK or secret */
    struct gw_keyset *set; /* JWKS */
    struct gw_key *oct;    /* all-oct keysets, loaded as secrets */
    size_t noct;
    bool is_set;
};

struct wp_tally {
    int run, skipped, passed, invalid_full_run, repinned;
    char fails[4096];
    size_t flen;
};

static void wp_fail(struct wp_tally *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wp_fail(struct wp_tally *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (t->flen < sizeof t->fails - 1) {
        int n = vsnprintf(t->fails + t->flen, sizeof t->fails - t->flen, fmt, ap);
        if (n > 0)
            t->flen += (size_t)n;
        if (t->flen > sizeof t->fails - 1)
            t->flen = sizeof t->fails - 1;
    }
    va_end(ap);
}

static cJSON *wp_read(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s%s", WP_DIR, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    cJSON *j = cJSON_ParseWithLength(buf, n);
    free(buf);
    ck_assert_msg(j != NULL, "%s is not JSON", path);
    return j;
}

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A secret from an oct JWK through gw_key_from_secret, with the JWK hygiene the gateway applies
 * to every key (use sig, key_ops with verify, a supported HMAC alg). */
static int wp_load_oct(const cJSON *jwk, struct gw_key *out)
{
    const char *alg = jstr(jwk, "alg"), *use = jstr(jwk, "use"), *k = jstr(jwk, "k");
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(jwk, "key_ops");
    if (alg == NULL || !gw_alg_is_hmac(gw_alg_from_name(alg)) || k == NULL)
        return -1;
    if (use && strcmp(use, "sig") != 0)
        return -1;
    if (ops) {
        bool verify = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, ops) verify |=
            cJSON_IsString(e) && strcmp(e->valuestring, "verify") == 0;
        if (!verify)
            return -1;
    }
    size_t len;
    unsigned char *raw = unb64u(k, strlen(k), &len);
    if (raw == NULL)
        return -1;
    char why[256];
    int r =
        gw_key_from_secret(raw, len, gw_alg_from_name(alg), jstr(jwk, "kid"), out, why, sizeof why);
    OPENSSL_cleanse(raw, len);
    free(raw);
    return r;
}

/* A public JWK through gw_key_from_jwk; a P-521 key labelled "ES521" is pinned by its curve. */
static int wp_load_jwk(const cJSON *jwk, struct gw_key *out)
{
    cJSON *dup = cJSON_Duplicate(jwk, true);
    const char *alg = jstr(dup, "alg"), *crv = jstr(dup, "crv");
    if (alg && crv && strcmp(alg, "ES521") == 0 && strcmp(crv, "P-521") == 0)
        cJSON_DeleteItemFromObjectCaseSensitive(dup, "alg");
    char why[256];
    int r = gw_key_from_jwk(dup, out, why, sizeof why);
    cJSON_Delete(dup);
    return r == 1 ? 0 : -1;
}

static bool all_oct(const cJSON *keys)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, keys) if (!jstr(e, "kty") ||
                                    strcmp(jstr(e, "kty"), "oct") != 0) return false;
    return true;
}

/* Loads a group's key (wk->loaded false when the gateway refuses it). */
static void wp_load_group(const cJSON *g, struct wp_key *wk)
{
    memset(wk, 0, sizeof *wk);
    const cJSON *pub = cJSON_GetObjectItemCaseSensitive(g, "public");
    if (pub == NULL)
        pub = cJSON_GetObjectItemCaseSensitive(g, "private");
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(pub, "keys");
    if (keys == NULL) {
        const char *kty = jstr(pub, "kty");
        int r = kty && strcmp(kty, "oct") == 0 ? wp_load_oct(pub, &wk->one)
                                               : wp_load_jwk(pub, &wk->one);
        wk->loaded = r == 0;
        return;
    }
    wk->is_set = true;
    if (all_oct(keys)) {
        /* an HMAC issuer: secrets, one per kid (config.c refuses a kid used twice) */
        size_t n = (size_t)cJSON_GetArraySize(keys);
        wk->oct = calloc(n, sizeof *wk->oct);
        const cJSON *e;
        cJSON_ArrayForEach(e, keys)
        {
            const char *kid = jstr(e, "kid");
            for (size_t i = 0; i < wk->noct; i++)
                if (kid && wk->oct[i].kid && strcmp(kid, wk->oct[i].kid) == 0)
                    return; /* refused */
            if (wp_load_oct(e, &wk->oct[wk->noct]) != 0)
                return;
            wk->noct++;
        }
        wk->loaded = wk->noct > 0;
        return;
    }
    char *text = cJSON_PrintUnformatted(pub);
    char why[256];
    wk->set = gw_jwks_parse(text, strlen(text), why, sizeof why);
    free(text);
    wk->loaded = wk->set != NULL;
}

static void wp_free_key(struct wp_key *wk)
{
    if (!wk->is_set && wk->loaded)
        gw_key_clear(&wk->one);
    for (size_t i = 0; i < wk->noct; i++)
        gw_key_clear(&wk->oct[i]);
    free(wk->oct);
    if (wk->set)
        gw_keyset_unref(wk->set);
}

/* The keys a group holds, as an array of pointers. */
static size_t wp_keys(const struct wp_key *wk, const struct gw_key **out, size_t max)
{
    size_t n = 0;
    if (!wk->loaded)
        return 0;
    if (!wk->is_set)
        out[n++] = &wk->one;
    for (size_t i = 0; i < wk->noct && n < max; i++)
        out[n++] = &wk->oct[i];
    for (size_t i = 0; wk->set && i < wk->set->n && n < max; i++)
        out[n++] = &wk->set->keys[i];
    return n;
}

/* The key a token selects: by its header's kid, or the only key. */
static const struct gw_key *wp_select(const struct wp_key *wk, const char *tok)
{
    const struct gw_key *ks[16];
    size_t n = wp_keys(wk, ks, 16);
    if (n == 0)
        return NULL;
    if (!wk->is_set)
        return ks[0];
    const char *dot = strchr(tok, '.');
    size_t hl;
    unsigned char *h = dot ? unb64u(tok, (size_t)(dot - tok), &hl) : NULL;
    cJSON *hdr = h ? cJSON_ParseWithLength((const char *)h, hl) : NULL;
    free(h);
    const char *kid = hdr ? jstr(hdr, "kid") : NULL;
    const struct gw_key *found = NULL;
    for (size_t i = 0; i < n; i++)
        if (kid ? (ks[i]->kid && strcmp(ks[i]->kid, kid) == 0) : n == 1)
            found = ks[i];
    cJSON_Delete(hdr);
    return found;
}

static void put_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* An auth with one issuer holding the group's keys, from a config written at run time. */
static struct gw_auth *wp_auth(const struct wp_key *wk, int gid, struct gw_config **cfgp)
{
    const struct gw_key *ks[16];
    size_t n = wp_keys(wk, ks, 16);
    if (n == 0)
        return NULL;
    cJSON *doc = cJSON_CreateObject(), *auth = cJSON_AddObjectToObject(doc, "auth");
    cJSON *iss = cJSON_CreateObject(), *keys = cJSON_AddArrayToObject(iss, "keys");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(auth, "issuers"), iss);
    cJSON_AddStringToObject(iss, "issuer", "https://wycheproof.example");
    cJSON_AddArrayToObject(iss, "audiences");
    for (size_t i = 0; i < n; i++) {
        char path[256];
        bool hs = gw_alg_is_hmac(ks[i]->alg);
        snprintf(path, sizeof path, "%s/wp%d-%zu.%s", g_dir, gid, i, hs ? "secret" : "pem");
        unsigned char *buf = malloc(ks[i]->material_len + 1);
        memcpy(buf, ks[i]->material, ks[i]->material_len);
        buf[ks[i]->material_len] = '\n'; /* one trailing newline is not part of a secret */
        put_file(path, buf, ks[i]->material_len + (hs ? 1 : 0));
        free(buf);
        cJSON *k = cJSON_CreateObject();
        if (ks[i]->kid)
            cJSON_AddStringToObject(k, "kid", ks[i]->kid);
        cJSON_AddStringToObject(k, "alg", gw_alg_name(ks[i]->alg));
        cJSON_AddStringToObject(k, hs ? "secret_file" : "pem_file", path);
        cJSON_AddItemToArray(keys, k);
    }
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    char cpath[256];
    snprintf(cpath, sizeof cpath, "%s/wp%d.json", g_dir, gid);
    struct gw_errs errs = {0};
    struct gw_config *cfg = gw_config_parse(cpath, text, strlen(text), false, &errs);
    ck_assert_msg(cfg != NULL, "group %d: config refused: %s\n%s", gid,
                  errs.problems.n ? errs.problems.v[0] : "?", text);
    struct gw_auth *a = NULL;
    ck_assert_msg(gw_auth_build(cfg, &a, &errs) == 0, "group %d: auth refused: %s", gid,
                  errs.problems.n ? errs.problems.v[0] : "?");
    gw_errs_free(&errs);
    free(text);
    *cfgp = cfg;
    return a;
}

static bool skipped_tc(const char *file, int tc)
{
    return strcmp(file, "json_web_signature_test.json") == 0 &&
           (tc == 367 || tc == 370 || tc == 372 || tc == 373);
}

/* RFC 7520's Figure 20 is a PS384 JWS, but the groups of tcId 346 and 350 give its key as a JWK
 * with "alg":"PS256". SPEC §4 pins a JWK's key to its "alg", so the gateway refuses the token
 * for its header alg (WRONG_ALG) where the vector says "valid"; the same key pinned PS384 must
 * verify it, which is what these cases check instead. */
static bool pinned_otherwise(const char *file, int tc)
{
    return strcmp(file, "json_web_signature_test.json") == 0 && (tc == 346 || tc == 350);
}

static bool verifies_repinned(const char *tok, const struct gw_key *k, enum gw_alg alg)
{
    struct gw_key re = {0};
    char why[128];
    ck_assert_int_eq(gw_key_from_pem((const char *)k->material, k->material_len, alg, NULL, &re,
                                     why, sizeof why),
                     0);
    bool ok = gw_jws_verify(tok, strlen(tok), &re) == GW_JWS_OK;
    gw_key_clear(&re);
    return ok;
}

/* Runs one file: every supported group through gw_jws_verify, and every invalid vector through
 * gw_jwt_verify with an issuer holding the group's keys. */
static void wp_run(const char *file, struct wp_tally *t, int *full_accepted)
{
    cJSON *root = wp_read(file);
    const cJSON *g;
    int gid = 0;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(root, "testGroups"))
    {
        gid++;
        const char *comment = jstr(g, "comment");
        const cJSON *tests = cJSON_GetObjectItemCaseSensitive(g, "tests");
        bool jwe = comment && strncmp(comment, "jwe", 3) == 0;
        struct wp_key wk;
        if (jwe) {
            t->skipped += cJSON_GetArraySize(tests);
            continue;
        }
        wp_load_group(g, &wk);
        bool roca = comment && strstr(comment, "roca") != NULL;
        struct gw_config *cfg = NULL;
        struct gw_auth *auth = wp_auth(&wk, gid, &cfg);
        const cJSON *tc;
        cJSON_ArrayForEach(tc, tests)
        {
            int id = cJSON_GetObjectItemCaseSensitive(tc, "tcId")->valueint;
            if (skipped_tc(file, id)) {
                t->skipped++;
                continue;
            }
            const cJSON *jws = cJSON_GetObjectItemCaseSensitive(tc, "jws");
            char *tok =
                cJSON_IsString(jws) ? strdup(jws->valuestring) : cJSON_PrintUnformatted(jws);
            bool want = strcmp(jstr(tc, "result"), "valid") == 0;
            const struct gw_key *k = wp_select(&wk, tok);
            enum gw_jws_result r = k ? gw_jws_verify(tok, strlen(tok), k) : GW_JWS_MALFORMED;
            bool got = k && r == GW_JWS_OK;
            t->run++;
            if (pinned_otherwise(file, id)) {
                t->repinned++;
                if (want && r == GW_JWS_WRONG_ALG && verifies_repinned(tok, k, GW_ALG_PS384))
                    t->passed++;
                else
                    wp_fail(t, " %s#%d(not refused for its alg, or not PS384)", file + 9, id);
            } else if (got == want || roca)
                t->passed++;
            else
                wp_fail(t, " %s#%d(%s,%s: %s)", file + 9, id, comment, jstr(tc, "comment"),
                        k ? (got ? "accepted" : "refused") : "no key");
            if (!want && auth) {
                struct gw_principal *p = NULL;
                enum gw_auth_reason ar = gw_jwt_verify(auth, tok, strlen(tok), 1700000000, &p);
                t->invalid_full_run++;
                if (ar == GW_AUTH_OK) {
                    (*full_accepted)++;
                    wp_fail(t, " full-path-accepted:%s#%d", file + 9, id);
                    gw_principal_unref(p);
                }
            }
            free(tok);
        }
        if (auth)
            gw_auth_free(auth);
        if (cfg)
            gw_config_free(cfg);
        wp_free_key(&wk);
    }
    cJSON_Delete(root);
}

/* run and skipped are pinned: a reader that silently reads less fails. */
static void wp_file_test(const char *file, int run, int skipped)
{
    struct wp_tally t = {0};
    int full_accepted = 0;
    wp_run(file, &t, &full_accepted);
    printf("wycheproof %s: run %d / skipped %d / passed %d (%d of them refused as pinned to "
           "another alg); invalid through gw_jwt_verify: %d run, %d accepted\n",
           file, t.run, t.skipped, t.passed, t.repinned, t.invalid_full_run, full_accepted);
    fflush(stdout);
    ck_assert_msg(t.run == run && t.skipped == skipped, "%s: %d vectors run, %d skipped", file,
                  t.run, t.skipped);
    ck_assert_msg(t.passed == t.run && full_accepted == 0, "%s: %d of %d failed:%s", file,
                  t.run - t.passed + full_accepted, t.run, t.fails);
}

START_TEST(test_keys_wycheproof_json_web_signature)
{
    wp_file_test("json_web_signature_test.json", 397, 4);
}
END_TEST

START_TEST(test_keys_wycheproof_json_web_key)
{
    wp_file_test("json_web_key_test.json", 26, 0);
}
END_TEST

START_TEST(test_keys_wycheproof_json_web_crypto_jws)
{
    wp_file_test("json_web_crypto_test.json", 49, 34);
}
END_TEST

/* ---- Wycheproof signature files: RSASSA-PSS and Ed25519 through gw_sig_verify ---- */

/* Each file's key is loaded through the production loaders (its JWK, and its PEM, which must
 * give the same key), and every test case goes through gw_sig_verify, the function
 * gw_jws_verify calls. "valid" must verify and "invalid" must not. These files hold no
 * "acceptable" case; one would be run and counted (either outcome passes: Wycheproof uses it
 * for inputs a strict verifier may refuse), and the count is pinned, so a new one is noticed.
 * The counts are pinned too: a reader that reads nothing fails. */
static const struct wp_sig_file {
    const char *file;
    enum gw_alg alg;
    const char *sha; /* the group's "sha" and "mgfSha" (PSS) */
    int slen;        /* the group's "sLen" (PSS) */
    int groups, valid, invalid;
} wp_sig_files[] = {
    {"rsa_pss_2048_sha256_mgf1_32_test.json", GW_ALG_PS256, "SHA-256", 32, 1, 63, 45},
    {"rsa_pss_3072_sha256_mgf1_32_test.json", GW_ALG_PS256, "SHA-256", 32, 1, 63, 45},
    {"rsa_pss_4096_sha256_mgf1_32_test.json", GW_ALG_PS256, "SHA-256", 32, 1, 63, 45},
    {"rsa_pss_2048_sha384_mgf1_48_test.json", GW_ALG_PS384, "SHA-384", 48, 1, 95, 46},
    {"rsa_pss_4096_sha384_mgf1_48_test.json", GW_ALG_PS384, "SHA-384", 48, 1, 95, 46},
    {"rsa_pss_4096_sha512_mgf1_64_test.json", GW_ALG_PS512, "SHA-512", 64, 1, 132, 47},
    {"ed25519_test.json", GW_ALG_EDDSA, NULL, 0, 77, 88, 62},
};

static unsigned char *unhex(const char *h, size_t *len)
{
    size_t n = strlen(h);
    ck_assert_msg(n % 2 == 0, "odd hex length");
    unsigned char *out = malloc(n / 2 + 1);
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v = 0;
        ck_assert_msg(sscanf(h + 2 * i, "%2x", &v) == 1, "bad hex");
        out[i] = (unsigned char)v;
    }
    *len = n / 2;
    return out;
}

static void wp_sig_group_key(const struct wp_sig_file *f, const cJSON *g, struct gw_key *k)
{
    if (f->sha) {
        const cJSON *slen = cJSON_GetObjectItemCaseSensitive(g, "sLen");
        ck_assert_msg(strcmp(jstr(g, "sha"), f->sha) == 0 && strcmp(jstr(g, "mgf"), "MGF1") == 0 &&
                          strcmp(jstr(g, "mgfSha"), f->sha) == 0 && cJSON_IsNumber(slen) &&
                          slen->valueint == f->slen,
                      "%s: a group whose parameters are not %s's", f->file, gw_alg_name(f->alg));
    }
    char why[256] = "";
    int r =
        gw_key_from_jwk(cJSON_GetObjectItemCaseSensitive(g, "publicKeyJwk"), k, why, sizeof why);
    ck_assert_msg(r == 1, "%s: JWK not loaded (%d): %s", f->file, r, why);
    ck_assert_msg(k->alg == f->alg, "%s: JWK pinned %s", f->file, gw_alg_name(k->alg));
    const char *pem = jstr(g, "publicKeyPem");
    struct gw_key pk = {0};
    ck_assert_msg(pem && gw_key_from_pem(pem, strlen(pem), f->alg, NULL, &pk, why, sizeof why) == 0,
                  "%s: PEM not loaded: %s", f->file, why);
    ck_assert_int_eq(EVP_PKEY_eq(pk.pkey, k->pkey), 1);
    gw_key_clear(&pk);
}

START_TEST(test_keys_wycheproof_signature_files)
{
    const struct wp_sig_file *f = &wp_sig_files[_i];
    cJSON *root = wp_read(f->file);
    int groups = 0, valid = 0, invalid = 0, acceptable = 0, accepted_acceptable = 0;
    struct wp_tally t = {0};
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(root, "testGroups"))
    {
        groups++;
        struct gw_key k = {0};
        wp_sig_group_key(f, g, &k);
        const cJSON *tc;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(g, "tests"))
        {
            size_t ml, sl;
            unsigned char *msg = unhex(jstr(tc, "msg"), &ml), *sig = unhex(jstr(tc, "sig"), &sl);
            const char *result = jstr(tc, "result");
            bool got = gw_sig_verify(&k, msg, ml, sig, sl);
            int id = cJSON_GetObjectItemCaseSensitive(tc, "tcId")->valueint;
            if (strcmp(result, "valid") == 0) {
                valid++;
                if (!got)
                    wp_fail(&t, " #%d(valid refused: %s)", id, jstr(tc, "comment"));
            } else if (strcmp(result, "invalid") == 0) {
                invalid++;
                if (got)
                    wp_fail(&t, " #%d(invalid accepted: %s)", id, jstr(tc, "comment"));
            } else {
                ck_assert_str_eq(result, "acceptable");
                acceptable++;
                accepted_acceptable += got;
            }
            free(msg);
            free(sig);
        }
        gw_key_clear(&k);
    }
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(root, "numberOfTests");
    printf("wycheproof %s (%s): %d groups; valid %d accepted; invalid %d refused; acceptable %d "
           "(%d accepted)%s\n",
           f->file, gw_alg_name(f->alg), groups, valid, invalid, acceptable, accepted_acceptable,
           t.flen ? "; FAILED:" : "");
    fflush(stdout);
    ck_assert_msg(t.flen == 0, "%s:%s", f->file, t.fails);
    ck_assert_int_eq(groups, f->groups);
    ck_assert_int_eq(valid, f->valid);
    ck_assert_int_eq(invalid, f->invalid);
    ck_assert_int_eq(acceptable, 0);
    ck_assert_int_eq(valid + invalid + acceptable, total->valueint);
    cJSON_Delete(root);
}
END_TEST

static Suite *keys_suite(void)
{
    Suite *s = suite_create("keys");
    TCase *tc = tcase_create("keys");
    tcase_add_unchecked_fixture(tc, setup_keys, teardown_keys);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_keys_alg_names_exact_and_case_sensitive);
    tcase_add_test(tc, test_keys_alg_in_libjwt_is_jwt_alg_t);
    tcase_add_test(tc, test_keys_pem_rsa2048_loads_for_each_rs_alg);
    tcase_add_test(tc, test_keys_pem_rsa_exponent_3_loads);
    tcase_add_test(tc, test_keys_pem_rsa1024_refused);
    tcase_add_test(tc, test_keys_pem_rsa_bad_exponent_refused);
    tcase_add_test(tc, test_keys_pem_ec_curve_must_match_alg);
    tcase_add_test(tc, test_keys_pem_key_type_must_match_alg);
    tcase_add_test(tc, test_keys_pem_private_key_refused);
    tcase_add_test(tc, test_keys_pem_certificate_refused);
    tcase_add_test(tc, test_keys_pem_garbage_refused);
    tcase_add_test(tc, test_keys_pem_rsa_loads_for_each_ps_alg);
    tcase_add_test(tc, test_keys_pem_rsa_pss_typed_key_refused);
    tcase_add_test(tc, test_keys_pem_ed25519_loads_for_eddsa_only);
    tcase_add_test(tc, test_keys_pem_ed448_refused_with_reason);
    tcase_add_test(tc, test_keys_secret_at_least_hash_length);
    tcase_add_test(tc, test_keys_secret_pem_text_refused);
    tcase_add_test(tc, test_keys_secret_needs_hmac_alg);
    tcase_add_test(tc, test_keys_jwk_rsa_and_ec_load);
    tcase_add_test(tc, test_keys_jwk_without_alg_pinned_by_type_and_curve);
    tcase_add_test(tc, test_keys_jwk_ignored_kinds);
    tcase_add_test(tc, test_keys_jwk_rsa_invalid_members);
    tcase_add_test(tc, test_keys_jwk_weak_rsa_ignored);
    tcase_add_test(tc, test_keys_jwk_ec_point_not_on_curve_refused);
    tcase_add_test(tc, test_keys_jwk_ec_invalid_members);
    tcase_add_test(tc, test_keys_jwk_ec_without_crv_invalid);
    tcase_add_test(tc, test_keys_jwk_rsa_alg_chooses_rs_or_ps);
    tcase_add_test(tc, test_keys_jwk_okp_ed25519_is_eddsa);
    tcase_add_test(tc, test_keys_jwk_okp_other_curves_ignored);
    tcase_add_test(tc, test_keys_jwk_okp_invalid_members);
    tcase_add_test(tc, test_keys_jwk_alg_must_fit_the_key_type);
    tcase_add_test(tc, test_keys_jwks_valid_set);
    tcase_add_test(tc, test_keys_jwks_withdrawn_counts_keys_that_left);
    tcase_add_test(tc, test_keys_jwks_duplicate_kid_refused);
    tcase_add_test(tc, test_keys_jwks_oct_and_enc_keys_ignored);
    tcase_add_test(tc, test_keys_jwks_invalid_key_refuses_set);
    tcase_add_test(tc, test_keys_jwks_weak_rsa_key_left_out);
    tcase_add_test(tc, test_keys_jwks_point_not_on_curve_refuses_set);
    tcase_add_test(tc, test_keys_jwks_without_usable_key_refused);
    tcase_add_test(tc, test_keys_jwks_not_a_jwks_document_refused);
    tcase_add_test(tc, test_keys_jwks_okp_and_ps_keys);
    tcase_add_test(tc, test_keys_jws_each_alg_verifies);
    tcase_add_test(tc, test_keys_jws_header_alg_must_equal_pinned_alg);
    tcase_add_test(tc, test_keys_jws_header_strictness);
    tcase_add_test(tc, test_keys_jws_structure);
    tcase_add_test(tc, test_keys_jws_ecdsa_der_signature_refused);
    tcase_add_test(tc, test_keys_jws_rs_ps_confusion_refused_both_ways);
    tcase_add_test(tc, test_keys_sig_pss_parameters_pinned);
    tcase_add_test(tc, test_keys_sig_exact_lengths);
    tcase_add_test(tc, test_keys_jws_eddsa_refuses_other_keys_and_algs);
    tcase_add_test(tc, test_keys_rfc8037_ed25519_example);
    tcase_add_test(tc, test_keys_wycheproof_json_web_signature);
    tcase_add_test(tc, test_keys_wycheproof_json_web_key);
    tcase_add_test(tc, test_keys_wycheproof_json_web_crypto_jws);
    tcase_add_loop_test(tc, test_keys_wycheproof_signature_files, 0,
                        (int)(sizeof wp_sig_files / sizeof *wp_sig_files));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(keys_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
