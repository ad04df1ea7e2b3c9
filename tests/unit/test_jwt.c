/* Unit tests of JWT authentication (proxy/auth.c, proxy/token_cache.c) against SPEC §4: the
 * reason class of every refused token (research/jwt-negative-cases.md A-I), the accepted
 * principal and its scopes, the bearer header, and the verified-token cache.
 *
 * Tokens are built here from arbitrary header and payload BYTES (duplicate members, NULs,
 * floats) and signed with OpenSSL (HMAC, RSA PKCS#1 v1.5, ECDSA converted to raw R||S). The auth
 * comes from a config written at run time into a fresh folder, with keys generated at run time:
 *   https://idp.example.com     RS256 kid k1 (audiences default ["ghl-gateway"], leeway 60)
 *   https://two.example.com     RS256 k1 and k2
 *   https://ec.example.com      ES256 e1
 *   https://hs.example.com      HS256 h1 (a secret file)
 *   https://jwks.example.com    jwks_file: RS256 j1, EC j2 (no alg), oct o1, use:enc x1
 *   https://custom.example.com  one RS256 key without kid, audiences [], leeway 0,
 *                               max_lifetime 3600, subject_claim uid, scope_claims [perms]
 *   https://url.example.com     jwks_url (never fetched here: the tests install its keys as a
 *                               fetch would)
 *   https://alg.example.com     k1's RSA key pinned RS256 (r1), PS256 (p1), PS384 (p3), PS512
 *                               (p5); Ed25519 d1 (EdDSA); jwks_file: Ed25519 jd (no alg),
 *                               k2's key jp (PS256), an Ed448 key (left out)
 * and `now` fixed at NOW. */
#include <check.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "auth.h"
#include "b64url.h"
#include "config.h"
#include "jwks.h"
#include "keys.h"
#include "token_cache.h"

#define NOW 1700000000LL

/* ---- per-test allocations, freed by the checked teardown (the sanitizer build checks leaks) */

static void *g_garbage[4096];
static size_t g_ngarbage;

static void *keep(void *p)
{
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_lt(g_ngarbage, sizeof g_garbage / sizeof *g_garbage);
    g_garbage[g_ngarbage++] = p;
    return p;
}

static void free_garbage(void)
{
    while (g_ngarbage)
        free(g_garbage[--g_ngarbage]);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    ck_assert_int_ge(vasprintf(&s, f, ap), 0);
    va_end(ap);
    return keep(s);
}

/* ---- base64url and signing (independent of the code under test) ---- */

static const char B64U[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64u_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

static char *b64u(const void *data, size_t len)
{
    const unsigned char *in = data;
    char *out = keep(malloc(b64u_len(len) + 1));
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

struct signer {
    enum gw_alg alg; /* the algorithm actually used, whatever the header says */
    EVP_PKEY *pkey;
    const unsigned char *secret;
    size_t slen;
    bool der;     /* ECDSA: leave the signature DER-encoded */
    int pss_salt; /* PS: 0 for the hash's length (the right one), else this many bytes */
};

static size_t sign_bytes(const struct signer *s, const void *data, size_t dlen, unsigned char *sig)
{
    const char *name = gw_alg_name(s->alg);
    const EVP_MD *md = s->alg == GW_ALG_EDDSA        ? NULL
                       : strstr(name, "256") != NULL ? EVP_sha256()
                       : strstr(name, "384") != NULL ? EVP_sha384()
                                                     : EVP_sha512();
    if (gw_alg_is_hmac(s->alg)) {
        unsigned n = 0;
        ck_assert_ptr_nonnull(HMAC(md, s->secret, (int)s->slen, data, dlen, sig, &n));
        return n;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char buf[1024];
    size_t n = sizeof buf;
    ck_assert_int_eq(EVP_DigestSignInit(ctx, &pctx, md, NULL, s->pkey), 1);
    if (name[0] == 'P') { /* RSASSA-PSS: MGF1 with the same hash */
        ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 0);
        ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md), 0);
        ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(
                             pctx, s->pss_salt ? s->pss_salt : RSA_PSS_SALTLEN_DIGEST),
                         0);
    }
    ck_assert_int_eq(EVP_DigestSign(ctx, buf, &n, data, dlen), 1);
    EVP_MD_CTX_free(ctx);
    if (name[0] != 'E' || s->alg == GW_ALG_EDDSA || s->der) {
        memcpy(sig, buf, n);
        return n;
    }
    size_t half = s->alg == GW_ALG_ES256 ? 32 : s->alg == GW_ALG_ES384 ? 48 : 66;
    const unsigned char *p = buf;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
    ck_assert_ptr_nonnull(es);
    ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)half), (int)half);
    ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + half, (int)half), (int)half);
    ECDSA_SIG_free(es);
    return 2 * half;
}

/* header.payload (both base64url-encoded from raw bytes), signed by s. */
static char *tok_raw(const struct signer *s, const char *h, size_t hl, const char *p, size_t pl)
{
    char *in = fmt("%s.%s", b64u(h, hl), b64u(p, pl));
    unsigned char sig[1024];
    size_t n = sign_bytes(s, in, strlen(in), sig);
    return fmt("%s.%s", in, b64u(sig, n));
}

static char *tok(const struct signer *s, const char *h, const char *p)
{
    return tok_raw(s, h, strlen(h), p, strlen(p));
}

/* The three segments of a token joined after replacing the signature by raw bytes. */
static char *with_sig(const char *t, const void *sig, size_t n)
{
    const char *dot = strrchr(t, '.');
    return fmt("%.*s.%s", (int)(dot - t), t, b64u(sig, n));
}

/* ---- fixture ---- */

static char g_dir[64];
static EVP_PKEY *g_k1, *g_k2, *g_ec, *g_att, *g_ed, *g_ed_b, *g_ed448;
static unsigned char g_hs[40], g_oct[32];
static char *g_k1_pem;
static struct gw_config *g_cfg;
static struct gw_auth *g_auth;

enum {
    SK1,
    SK1_384,
    SK2,
    SEC,
    SEC_DER,
    SEC_384,
    SHS,
    SHS_WRONG,
    SATT,
    SPEM,
    SPEM_NONL,
    SOCT,
    SPS256,
    SPS384,
    SPS512,
    SPS256_SALT20,
    SPS256_K2,
    SED,
    SED_B,
    NSIGNERS
};
static struct signer g_sig[NSIGNERS];

#define ISS_IDP "https://idp.example.com"
#define C_BASE "\"iss\":\"https://idp.example.com\",\"sub\":\"user-1\",\"aud\":\"ghl-gateway\""
#define EXP_OK "\"exp\":1700000600"
#define P_OK "{" C_BASE "," EXP_OK "}"
#define H_K1 "{\"alg\":\"RS256\",\"kid\":\"k1\"}"

static void put_file(const char *rel, const void *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, rel);
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static char *pub_pem(EVP_PKEY *pk)
{
    BIO *b = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_PUBKEY(b, pk), 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}

static void bn_member(cJSON *o, const char *member, EVP_PKEY *pk, const char *param, int pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[512];
    ck_assert_int_eq(EVP_PKEY_get_bn_param(pk, param, &bn), 1);
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    char *s = b64u(buf, (size_t)n);
    cJSON_AddStringToObject(o, member, s);
}

static cJSON *jwk_of(EVP_PKEY *pk, const char *kid)
{
    cJSON *j = cJSON_CreateObject();
    if (EVP_PKEY_is_a(pk, "ED25519") || EVP_PKEY_is_a(pk, "ED448")) {
        unsigned char raw[64];
        size_t rl = sizeof raw;
        ck_assert_int_eq(EVP_PKEY_get_raw_public_key(pk, raw, &rl), 1);
        cJSON_AddStringToObject(j, "kty", "OKP");
        cJSON_AddStringToObject(j, "crv", EVP_PKEY_is_a(pk, "ED448") ? "Ed448" : "Ed25519");
        cJSON_AddStringToObject(j, "x", b64u(raw, rl));
    } else if (EVP_PKEY_is_a(pk, "RSA")) {
        cJSON_AddStringToObject(j, "kty", "RSA");
        bn_member(j, "n", pk, OSSL_PKEY_PARAM_RSA_N, 0);
        bn_member(j, "e", pk, OSSL_PKEY_PARAM_RSA_E, 0);
    } else {
        cJSON_AddStringToObject(j, "kty", "EC");
        cJSON_AddStringToObject(j, "crv", "P-256");
        bn_member(j, "x", pk, OSSL_PKEY_PARAM_EC_PUB_X, 32);
        bn_member(j, "y", pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    }
    if (kid)
        cJSON_AddStringToObject(j, "kid", kid);
    return j;
}

static const char CONFIG[] =
    "{ \"limits\": { \"max_token_bytes\": 8192 },\n"
    "  \"auth\": { \"issuers\": [\n"
    "    { \"issuer\": \"https://idp.example.com\",\n"
    "      \"keys\": [ { \"kid\": \"k1\", \"alg\": \"RS256\", \"pem_file\": \"k1.pem\" } ] },\n"
    "    { \"issuer\": \"https://two.example.com\",\n"
    "      \"keys\": [ { \"kid\": \"k1\", \"alg\": \"RS256\", \"pem_file\": \"k1.pem\" },\n"
    "                { \"kid\": \"k2\", \"alg\": \"RS256\", \"pem_file\": \"k2.pem\" } ] },\n"
    "    { \"issuer\": \"https://ec.example.com\",\n"
    "      \"keys\": [ { \"kid\": \"e1\", \"alg\": \"ES256\", \"pem_file\": \"e1.pem\" } ] },\n"
    "    { \"issuer\": \"https://hs.example.com\",\n"
    "      \"keys\": [ { \"kid\": \"h1\", \"alg\": \"HS256\", \"secret_file\": \"hs.secret\" } ] "
    "},\n"
    "    { \"issuer\": \"https://jwks.example.com\", \"jwks_file\": \"jwks.json\" },\n"
    "    { \"issuer\": \"https://custom.example.com\", \"audiences\": [],\n"
    "      \"keys\": [ { \"alg\": \"RS256\", \"pem_file\": \"k1.pem\" } ],\n"
    "      \"leeway_s\": 0, \"max_lifetime_s\": 3600,\n"
    "      \"subject_claim\": \"uid\", \"scope_claims\": [\"perms\"] },\n"
    "    { \"issuer\": \"https://url.example.com\",\n"
    "      \"jwks_url\": \"https://127.0.0.1:9/jwks.json\" },\n"
    "    { \"issuer\": \"https://alg.example.com\", \"jwks_file\": \"alg-jwks.json\",\n"
    "      \"keys\": [ { \"kid\": \"r1\", \"alg\": \"RS256\", \"pem_file\": \"k1.pem\" },\n"
    "                { \"kid\": \"p1\", \"alg\": \"PS256\", \"pem_file\": \"k1.pem\" },\n"
    "                { \"kid\": \"p3\", \"alg\": \"PS384\", \"pem_file\": \"k1.pem\" },\n"
    "                { \"kid\": \"p5\", \"alg\": \"PS512\", \"pem_file\": \"k1.pem\" },\n"
    "                { \"kid\": \"d1\", \"alg\": \"EdDSA\", \"pem_file\": \"ed.pem\" } ] }\n"
    "  ] } }\n";

static void setup_auth(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/gwjwt.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    g_k1 = EVP_RSA_gen(2048);
    g_k2 = EVP_RSA_gen(2048);
    g_att = EVP_RSA_gen(2048);
    g_ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g_ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    g_ed_b = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    g_ed448 = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
    ck_assert(g_k1 && g_k2 && g_att && g_ec && g_ed && g_ed_b && g_ed448);
    for (size_t i = 0; i < sizeof g_hs; i++)
        g_hs[i] = (unsigned char)('a' + i % 26);
    for (size_t i = 0; i < sizeof g_oct; i++)
        g_oct[i] = (unsigned char)(0x80 + i);

    g_k1_pem = pub_pem(g_k1);
    char *k2 = pub_pem(g_k2), *e1 = pub_pem(g_ec);
    put_file("k1.pem", g_k1_pem, strlen(g_k1_pem));
    put_file("k2.pem", k2, strlen(k2));
    put_file("e1.pem", e1, strlen(e1));
    free(k2);
    free(e1);
    unsigned char sec[sizeof g_hs + 1];
    memcpy(sec, g_hs, sizeof g_hs);
    sec[sizeof g_hs] = '\n'; /* one trailing newline is not part of the secret */
    put_file("hs.secret", sec, sizeof sec);

    cJSON *doc = cJSON_CreateObject(), *keys = cJSON_AddArrayToObject(doc, "keys");
    cJSON *j1 = jwk_of(g_k2, "j1");
    cJSON_AddStringToObject(j1, "alg", "RS256");
    cJSON_AddStringToObject(j1, "use", "sig");
    cJSON_AddItemToArray(keys, j1);
    cJSON_AddItemToArray(keys, jwk_of(g_ec, "j2"));
    cJSON *o1 = cJSON_CreateObject();
    cJSON_AddStringToObject(o1, "kty", "oct");
    cJSON_AddStringToObject(o1, "kid", "o1");
    cJSON_AddStringToObject(o1, "alg", "HS256");
    cJSON_AddStringToObject(o1, "k", b64u(g_oct, sizeof g_oct));
    cJSON_AddItemToArray(keys, o1);
    cJSON *x1 = jwk_of(g_k1, "x1");
    cJSON_AddStringToObject(x1, "use", "enc");
    cJSON_AddItemToArray(keys, x1);
    char *text = cJSON_PrintUnformatted(doc);
    put_file("jwks.json", text, strlen(text));
    free(text);
    cJSON_Delete(doc);

    char *ed = pub_pem(g_ed);
    put_file("ed.pem", ed, strlen(ed));
    free(ed);
    doc = cJSON_CreateObject();
    keys = cJSON_AddArrayToObject(doc, "keys");
    cJSON_AddItemToArray(keys, jwk_of(g_ed_b, "jd"));
    cJSON *jp = jwk_of(g_k2, "jp");
    cJSON_AddStringToObject(jp, "alg", "PS256");
    cJSON_AddItemToArray(keys, jp);
    cJSON *j448 = jwk_of(g_ed448, "j448");
    cJSON_AddStringToObject(j448, "alg", "EdDSA");
    cJSON_AddItemToArray(keys, j448);
    text = cJSON_PrintUnformatted(doc);
    put_file("alg-jwks.json", text, strlen(text));
    free(text);
    cJSON_Delete(doc);

    char path[256];
    snprintf(path, sizeof path, "%s/gateway.json", g_dir);
    struct gw_errs errs = {0};
    g_cfg = gw_config_parse(path, CONFIG, sizeof CONFIG - 1, false, &errs);
    ck_assert_msg(g_cfg != NULL, "config refused: %s", errs.problems.n ? errs.problems.v[0] : "?");
    ck_assert_msg(gw_auth_build(g_cfg, &g_auth, &errs) == 0, "auth refused: %s",
                  errs.problems.n ? errs.problems.v[0] : "?");
    gw_errs_free(&errs);

    size_t pl = strlen(g_k1_pem);
    g_sig[SK1] = (struct signer){GW_ALG_RS256, g_k1};
    g_sig[SK1_384] = (struct signer){GW_ALG_RS384, g_k1};
    g_sig[SK2] = (struct signer){GW_ALG_RS256, g_k2};
    g_sig[SEC] = (struct signer){GW_ALG_ES256, g_ec};
    g_sig[SEC_DER] = (struct signer){GW_ALG_ES256, g_ec, .der = true};
    g_sig[SEC_384] = (struct signer){GW_ALG_ES384, g_ec};
    g_sig[SHS] = (struct signer){GW_ALG_HS256, NULL, g_hs, sizeof g_hs};
    g_sig[SHS_WRONG] = (struct signer){GW_ALG_HS256, NULL, g_oct, sizeof g_oct};
    g_sig[SATT] = (struct signer){GW_ALG_RS256, g_att};
    g_sig[SPEM] = (struct signer){GW_ALG_HS256, NULL, (unsigned char *)g_k1_pem, pl};
    g_sig[SPEM_NONL] = (struct signer){GW_ALG_HS256, NULL, (unsigned char *)g_k1_pem, pl - 1};
    g_sig[SOCT] = (struct signer){GW_ALG_HS256, NULL, g_oct, sizeof g_oct};
    g_sig[SPS256] = (struct signer){GW_ALG_PS256, g_k1};
    g_sig[SPS384] = (struct signer){GW_ALG_PS384, g_k1};
    g_sig[SPS512] = (struct signer){GW_ALG_PS512, g_k1};
    g_sig[SPS256_SALT20] = (struct signer){GW_ALG_PS256, g_k1, .pss_salt = 20};
    g_sig[SPS256_K2] = (struct signer){GW_ALG_PS256, g_k2};
    g_sig[SED] = (struct signer){GW_ALG_EDDSA, g_ed};
    g_sig[SED_B] = (struct signer){GW_ALG_EDDSA, g_ed_b};
    free_garbage();
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown_auth(void)
{
    if (g_auth)
        gw_auth_free(g_auth);
    if (g_cfg)
        gw_config_free(g_cfg);
    EVP_PKEY_free(g_k1);
    EVP_PKEY_free(g_k2);
    EVP_PKEY_free(g_att);
    EVP_PKEY_free(g_ec);
    EVP_PKEY_free(g_ed);
    EVP_PKEY_free(g_ed_b);
    EVP_PKEY_free(g_ed448);
    free(g_k1_pem);
    if (g_dir[0])
        nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- verification helpers ---- */

static const char *rname(enum gw_auth_reason r)
{
    static const char *const n[] = {"OK",          "MISSING",       "MALFORMED", "UNKNOWN_ISSUER",
                                    "UNKNOWN_KEY", "BAD_SIGNATURE", "EXPIRED",   "NOT_YET_VALID",
                                    "BAD_CLAIMS",  "AUDIENCE"};
    return (unsigned)r < sizeof n / sizeof *n ? n[r] : "?";
}

static enum gw_auth_reason verify_n(const char *t, size_t len, struct gw_principal **out)
{
    struct gw_principal *p = NULL;
    enum gw_auth_reason r = gw_jwt_verify(g_auth, t, len, NOW, &p);
    if (r == GW_AUTH_OK)
        ck_assert_msg(p != NULL, "OK without a principal");
    if (out)
        *out = p;
    else if (p)
        gw_principal_unref(p);
    return r;
}

#define EXPECT(t, want)                                                                            \
    do {                                                                                           \
        const char *t_ = (t);                                                                      \
        enum gw_auth_reason r_ = verify_n(t_, strlen(t_), NULL);                                   \
        ck_assert_msg(r_ == (want), "line %d: got %s, want %s for %.300s", __LINE__, rname(r_),    \
                      rname(want), t_);                                                            \
    } while (0)

/* A verified principal (the caller unrefs). */
static struct gw_principal *principal(const char *t)
{
    struct gw_principal *p = NULL;
    enum gw_auth_reason r = verify_n(t, strlen(t), &p);
    ck_assert_msg(r == GW_AUTH_OK, "refused (%s): %.300s", rname(r), t);
    return p;
}

/* ---- table-driven cases: one named row each ---- */

struct lit {
    const char *s;
    size_t n;
};
#define L(x)                                                                                       \
    {                                                                                              \
        (x), sizeof(x) - 1                                                                         \
    }

struct jcase {
    const char *name;
    int signer;
    struct lit h, p;
    enum gw_auth_reason want;
};

static void run_case(const struct jcase *c)
{
    char *t = tok_raw(&g_sig[c->signer], c->h.s, c->h.n, c->p.s, c->p.n);
    enum gw_auth_reason r = verify_n(t, strlen(t), NULL);
    ck_assert_msg(r == c->want, "%s: got %s, want %s", c->name, rname(r), rname(c->want));
}

/* B/D: header (JOSE) parsing */
static const struct jcase header_cases[] = {
    {"valid RS256 token", SK1, L(H_K1), L(P_OK), GW_AUTH_OK},
    {"typ JWT", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"), L(P_OK), GW_AUTH_OK},
    {"typ jwt (case-insensitive)", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"jwt\"}"),
     L(P_OK), GW_AUTH_OK},
    {"whitespace inside the header JSON", SK1, L("{ \"alg\" : \"RS256\" ,\n \"kid\":\"k1\" }"),
     L(P_OK), GW_AUTH_OK},
    {"alg missing", SK1, L("{\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg a number", SK1, L("{\"alg\":256,\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg null", SK1, L("{\"alg\":null,\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg an array", SK1, L("{\"alg\":[\"RS256\"],\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg lowercase rs256", SK1, L("{\"alg\":\"rs256\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"alg Rs256", SK1, L("{\"alg\":\"Rs256\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg ES256K", SK1, L("{\"alg\":\"ES256K\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg RS1", SK1, L("{\"alg\":\"RS1\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg PS256 on k1, pinned RS256", SK1, L("{\"alg\":\"PS256\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_UNKNOWN_KEY},
    {"alg EdDSA on k1, pinned RS256", SK1, L("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_UNKNOWN_KEY},
    {"alg EDDSA", SK1, L("{\"alg\":\"EDDSA\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg Ed25519", SK1, L("{\"alg\":\"Ed25519\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg ps256", SK1, L("{\"alg\":\"ps256\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg InvalidAlg", SK1, L("{\"alg\":\"InvalidAlg\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"alg empty", SK1, L("{\"alg\":\"\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg with trailing space", SK1, L("{\"alg\":\"RS256 \",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"alg none signed anyway", SK1, L("{\"alg\":\"none\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"alg NONE", SK1, L("{\"alg\":\"NONE\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg None", SK1, L("{\"alg\":\"None\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"alg nOnE kid none", SK1, L("{\"alg\":\"nOnE\",\"kid\":\"none\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"duplicate alg RS256 then HS256 (PEM-MACed)", SPEM,
     L("{\"alg\":\"RS256\",\"alg\":\"HS256\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"duplicate alg RS256 then HS256 (RSA-signed)", SK1,
     L("{\"alg\":\"RS256\",\"alg\":\"HS256\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"duplicate alg HS256 then RS256", SK1,
     L("{\"alg\":\"HS256\",\"alg\":\"RS256\",\"kid\":\"k1\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"duplicate alg, same value", SK1, L("{\"alg\":\"RS256\",\"alg\":\"RS256\",\"kid\":\"k1\"}"),
     L(P_OK), GW_AUTH_MALFORMED},
    {"duplicate kid", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"header an array", SK1, L("[{\"alg\":\"RS256\",\"kid\":\"k1\"}]"), L(P_OK), GW_AUTH_MALFORMED},
    {"header a string", SK1, L("\"RS256\""), L(P_OK), GW_AUTH_MALFORMED},
    {"header a number", SK1, L("256"), L(P_OK), GW_AUTH_MALFORMED},
    {"header not JSON", SK1, L("{\"alg\":\"RS256\",\"typ\":\"JWT\", this is a invalid json}"),
     L(P_OK), GW_AUTH_MALFORMED},
    {"header with junk after the object", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\"}x"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"header with a raw NUL then junk", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\"}\0junk"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"header with a \\u0000 escape", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\\u0000\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    /* RFC 9068 access tokens (SPEC rev 2 §4 item 3), any case, with or without application/ */
    {"typ at+jwt", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"at+jwt\"}"), L(P_OK),
     GW_AUTH_OK},
    {"typ application/AT+JWT", SK1,
     L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"application/AT+JWT\"}"), L(P_OK),
     GW_AUTH_OK},
    {"typ application/jwt", SK1,
     L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"application/jwt\"}"), L(P_OK), GW_AUTH_OK},
    {"typ jwt+at", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"jwt+at\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"typ at+jwt with a suffix", SK1,
     L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"at+jwt2\"}"), L(P_OK), GW_AUTH_MALFORMED},
    {"typ application/ alone", SK1,
     L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"application/\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"typ application/application/at+jwt", SK1,
     L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"application/application/at+jwt\"}"),
     L(P_OK), GW_AUTH_MALFORMED},
    {"typ dpop+jwt", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"dpop+jwt\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"typ JWE", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWE\"}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"typ a number", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":1}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"crit [exp]", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"crit\":[\"exp\"],\"exp\":1}"),
     L(P_OK), GW_AUTH_MALFORMED},
    {"crit []", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"crit\":[]}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"b64 false with crit", SK1,
     L("{\"alg\":\"RS256\",\"kid\":\"k1\",\"b64\":false,\"crit\":[\"b64\"]}"), L(P_OK),
     GW_AUTH_MALFORMED},
    {"kid an array", SK1, L("{\"alg\":\"RS256\",\"kid\":[\"k1\"]}"), L(P_OK), GW_AUTH_MALFORMED},
    {"kid a number", SK1, L("{\"alg\":\"RS256\",\"kid\":1}"), L(P_OK), GW_AUTH_MALFORMED},
    {"kid an object", SK1, L("{\"alg\":\"RS256\",\"kid\":{\"k1\":1}}"), L(P_OK), GW_AUTH_MALFORMED},
};

START_TEST(test_jwt_header_cases)
{
    run_case(&header_cases[_i]);
}
END_TEST

/* G: payload (claims) parsing */
static const struct jcase payload_cases[] = {
    {"payload an array", SK1, L(H_K1), L("[" P_OK "]"), GW_AUTH_MALFORMED},
    {"payload a string", SK1, L(H_K1), L("\"foo\""), GW_AUTH_MALFORMED},
    {"payload a number", SK1, L(H_K1), L("123400"), GW_AUTH_MALFORMED},
    {"payload null", SK1, L(H_K1), L("null"), GW_AUTH_MALFORMED},
    {"payload not JSON", SK1, L(H_K1), L("{" C_BASE "," EXP_OK), GW_AUTH_MALFORMED},
    {"payload with junk after the object", SK1, L(H_K1), L(P_OK "junk"), GW_AUTH_MALFORMED},
    {"payload with a raw NUL then junk", SK1, L(H_K1), L(P_OK "\0{\"sub\":\"admin\"}"),
     GW_AUTH_MALFORMED},
    {"payload with a raw NUL inside a string", SK1, L(H_K1),
     L("{\"iss\":\"https://"
       "idp.example.com\",\"sub\":\"user\0admin\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_MALFORMED},
    {"payload with a \\u0000 escape", SK1, L(H_K1),
     L("{\"iss\":\"https://"
       "idp.example.com\",\"sub\":\"user\\u0000admin\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_MALFORMED},
    {"payload with invalid UTF-8", SK1, L(H_K1),
     L("{\"iss\":\"https://idp.example.com\",\"sub\":\"\xff\xfe\",\"aud\":\"ghl-gateway\"," EXP_OK
       "}"),
     GW_AUTH_MALFORMED},
    {"duplicate sub", SK1, L(H_K1), L("{" C_BASE "," EXP_OK ",\"sub\":\"admin\"}"),
     GW_AUTH_MALFORMED},
    {"duplicate scope", SK1, L(H_K1),
     L("{" C_BASE "," EXP_OK ",\"scope\":\"users.readonly\",\"scope\":\"users.write\"}"),
     GW_AUTH_MALFORMED},
    {"duplicate exp", SK1, L(H_K1), L("{" C_BASE "," EXP_OK ",\"exp\":1700000600}"),
     GW_AUTH_MALFORMED},
    {"duplicate aud", SK1, L(H_K1), L("{" C_BASE "," EXP_OK ",\"aud\":\"other\"}"),
     GW_AUTH_MALFORMED},
    {"duplicate iss", SK1, L(H_K1),
     L("{" C_BASE "," EXP_OK ",\"iss\":\"https://two.example.com\"}"), GW_AUTH_MALFORMED},
    {"duplicate member in a nested object", SK1, L(H_K1),
     L("{" C_BASE "," EXP_OK ",\"x\":{\"a\":1,\"a\":2}}"), GW_AUTH_MALFORMED},
    {"other claims of any type are fine", SK1, L(H_K1),
     L("{" C_BASE "," EXP_OK ",\"x\":{\"a\":[1,2.5,null,true]},\"jti\":\"j\"}"), GW_AUTH_OK},
};

START_TEST(test_jwt_payload_cases)
{
    run_case(&payload_cases[_i]);
}
END_TEST

/* I: issuer */
static const struct jcase issuer_cases[] = {
    {"iss unknown", SK1, L(H_K1),
     L("{\"iss\":\"https://evil.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_UNKNOWN_ISSUER},
    {"iss with a trailing slash", SK1, L(H_K1),
     L("{\"iss\":\"https://idp.example.com/\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_UNKNOWN_ISSUER},
    {"iss http instead of https", SK1, L(H_K1),
     L("{\"iss\":\"http://idp.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_UNKNOWN_ISSUER},
    {"iss in another case", SK1, L(H_K1),
     L("{\"iss\":\"https://IDP.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_UNKNOWN_ISSUER},
    {"iss missing", SK1, L(H_K1), L("{\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_UNKNOWN_ISSUER},
    {"iss a number", SK1, L(H_K1),
     L("{\"iss\":1,\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"), GW_AUTH_UNKNOWN_ISSUER},
    {"iss an array", SK1, L(H_K1),
     L("{\"iss\":[\"https://idp.example.com\"],\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_UNKNOWN_ISSUER},
    {"iss null", SK1, L(H_K1), L("{\"iss\":null,\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_UNKNOWN_ISSUER},
    {"iss empty", SK1, L(H_K1),
     L("{\"iss\":\"\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"), GW_AUTH_UNKNOWN_ISSUER},
};

START_TEST(test_jwt_issuer_cases)
{
    run_case(&issuer_cases[_i]);
}
END_TEST

#define P_TWO                                                                                      \
    "{\"iss\":\"https://two.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"
#define P_EC "{\"iss\":\"https://ec.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"
#define P_HS "{\"iss\":\"https://hs.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"
#define P_JWKS                                                                                     \
    "{\"iss\":\"https://jwks.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"
#define P_CUSTOM(rest) "{\"iss\":\"https://custom.example.com\",\"uid\":\"c-1\"" rest "}"

/* D/E: key choice and the pinned algorithm */
static const struct jcase key_cases[] = {
    {"kid unknown", SK1, L("{\"alg\":\"RS256\",\"kid\":\"k9\"}"), L(P_OK), GW_AUTH_UNKNOWN_KEY},
    {"kid a path", SK1, L("{\"alg\":\"RS256\",\"kid\":\"../../../../etc/passwd\"}"), L(P_OK),
     GW_AUTH_UNKNOWN_KEY},
    {"kid empty", SK1, L("{\"alg\":\"RS256\",\"kid\":\"\"}"), L(P_OK), GW_AUTH_UNKNOWN_KEY},
    {"kid of another issuer", SK2, L("{\"alg\":\"RS256\",\"kid\":\"k2\"}"), L(P_OK),
     GW_AUTH_UNKNOWN_KEY},
    {"no kid, issuer with one key", SK1, L("{\"alg\":\"RS256\"}"), L(P_OK), GW_AUTH_OK},
    {"no kid, issuer with two keys", SK1, L("{\"alg\":\"RS256\"}"), L(P_TWO), GW_AUTH_UNKNOWN_KEY},
    {"two keys, kid k2 signed by k2", SK2, L("{\"alg\":\"RS256\",\"kid\":\"k2\"}"), L(P_TWO),
     GW_AUTH_OK},
    {"two keys, kid k1 signed by k2", SK2, L("{\"alg\":\"RS256\",\"kid\":\"k1\"}"), L(P_TWO),
     GW_AUTH_BAD_SIGNATURE},
    {"RS384 header on the RS256 key", SK1_384, L("{\"alg\":\"RS384\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_UNKNOWN_KEY},
    {"ES256 header on the RSA key", SEC, L("{\"alg\":\"ES256\",\"kid\":\"k1\"}"), L(P_OK),
     GW_AUTH_UNKNOWN_KEY},
    {"RS256 header on the EC key", SK1, L("{\"alg\":\"RS256\",\"kid\":\"e1\"}"), L(P_EC),
     GW_AUTH_UNKNOWN_KEY},
    {"ES384 header on the P-256 key", SEC_384, L("{\"alg\":\"ES384\",\"kid\":\"e1\"}"), L(P_EC),
     GW_AUTH_UNKNOWN_KEY},
    {"RS256 header on the HMAC key", SK1, L("{\"alg\":\"RS256\",\"kid\":\"h1\"}"), L(P_HS),
     GW_AUTH_UNKNOWN_KEY},
    {"HS384 header on the HS256 key", SHS, L("{\"alg\":\"HS384\",\"kid\":\"h1\"}"), L(P_HS),
     GW_AUTH_UNKNOWN_KEY},
    {"ES256 valid", SEC, L("{\"alg\":\"ES256\",\"kid\":\"e1\"}"), L(P_EC), GW_AUTH_OK},
    {"ES256 signature DER-encoded", SEC_DER, L("{\"alg\":\"ES256\",\"kid\":\"e1\"}"), L(P_EC),
     GW_AUTH_BAD_SIGNATURE},
    {"HS256 valid", SHS, L("{\"alg\":\"HS256\",\"kid\":\"h1\"}"), L(P_HS), GW_AUTH_OK},
    {"HS256 no kid, one key", SHS, L("{\"alg\":\"HS256\"}"), L(P_HS), GW_AUTH_OK},
    {"HS256 MACed with another secret", SHS_WRONG, L("{\"alg\":\"HS256\",\"kid\":\"h1\"}"), L(P_HS),
     GW_AUTH_BAD_SIGNATURE},
    {"HS256 issuer, MACed with the RSA public PEM", SPEM, L("{\"alg\":\"HS256\",\"kid\":\"h1\"}"),
     L(P_HS), GW_AUTH_BAD_SIGNATURE},
    {"JWKS RSA key j1", SK2, L("{\"alg\":\"RS256\",\"kid\":\"j1\"}"), L(P_JWKS), GW_AUTH_OK},
    {"JWKS EC key without alg: ES256 by curve", SEC, L("{\"alg\":\"ES256\",\"kid\":\"j2\"}"),
     L(P_JWKS), GW_AUTH_OK},
    {"JWKS EC key with an ES384 header", SEC_384, L("{\"alg\":\"ES384\",\"kid\":\"j2\"}"),
     L(P_JWKS), GW_AUTH_UNKNOWN_KEY},
    {"JWKS RS256 key with RS384 header", SK1_384, L("{\"alg\":\"RS384\",\"kid\":\"j1\"}"),
     L(P_JWKS), GW_AUTH_UNKNOWN_KEY},
    {"JWKS oct key is ignored", SOCT, L("{\"alg\":\"HS256\",\"kid\":\"o1\"}"), L(P_JWKS),
     GW_AUTH_UNKNOWN_KEY},
    {"JWKS use:enc key is ignored", SK1, L("{\"alg\":\"RS256\",\"kid\":\"x1\"}"), L(P_JWKS),
     GW_AUTH_UNKNOWN_KEY},
    {"JWKS kid j1 signed by another key", SK1, L("{\"alg\":\"RS256\",\"kid\":\"j1\"}"), L(P_JWKS),
     GW_AUTH_BAD_SIGNATURE},
    {"signed by an unconfigured key", SATT, L(H_K1), L(P_OK), GW_AUTH_BAD_SIGNATURE},
};

START_TEST(test_jwt_key_cases)
{
    run_case(&key_cases[_i]);
}
END_TEST

/* PS* and EdDSA (SPEC §4 items 3-5): verified by the OpenSSL layer alone (libjwt 1.10.2 has
 * neither); each key pinned to one algorithm, so one RSA key pinned RS256 (r1) and PS256 (p1)
 * never verifies the other's tokens, whichever padding the signature has. */
#define P_ALG                                                                                      \
    "{\"iss\":\"https://alg.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\"," EXP_OK "}"
#define H_ALG(alg, kid) L("{\"alg\":\"" alg "\",\"kid\":\"" kid "\"}")
static const struct jcase alg_cases[] = {
    {"PS256 valid", SPS256, H_ALG("PS256", "p1"), L(P_ALG), GW_AUTH_OK},
    {"PS384 valid", SPS384, H_ALG("PS384", "p3"), L(P_ALG), GW_AUTH_OK},
    {"PS512 valid", SPS512, H_ALG("PS512", "p5"), L(P_ALG), GW_AUTH_OK},
    {"EdDSA valid", SED, H_ALG("EdDSA", "d1"), L(P_ALG), GW_AUTH_OK},
    {"RS256 valid on the same RSA key", SK1, H_ALG("RS256", "r1"), L(P_ALG), GW_AUTH_OK},
    {"JWKS Ed25519 without alg", SED_B, H_ALG("EdDSA", "jd"), L(P_ALG), GW_AUTH_OK},
    {"JWKS RSA with alg PS256", SPS256_K2, H_ALG("PS256", "jp"), L(P_ALG), GW_AUTH_OK},
    {"JWKS Ed448 key left out", SED, H_ALG("EdDSA", "j448"), L(P_ALG), GW_AUTH_UNKNOWN_KEY},
    {"PS256 header on the key pinned RS256", SPS256, H_ALG("PS256", "r1"), L(P_ALG),
     GW_AUTH_UNKNOWN_KEY},
    {"RS256 header on the key pinned PS256", SK1, H_ALG("RS256", "p1"), L(P_ALG),
     GW_AUTH_UNKNOWN_KEY},
    {"PS256 header, PKCS#1 v1.5 signature", SK1, H_ALG("PS256", "p1"), L(P_ALG),
     GW_AUTH_BAD_SIGNATURE},
    {"RS256 header, PSS signature", SPS256, H_ALG("RS256", "r1"), L(P_ALG), GW_AUTH_BAD_SIGNATURE},
    {"PS384 header on the key pinned PS256", SPS384, H_ALG("PS384", "p1"), L(P_ALG),
     GW_AUTH_UNKNOWN_KEY},
    {"PS256 header, PS384 signature", SPS384, H_ALG("PS256", "p1"), L(P_ALG),
     GW_AUTH_BAD_SIGNATURE},
    {"PS256 with a 20-byte salt", SPS256_SALT20, H_ALG("PS256", "p1"), L(P_ALG),
     GW_AUTH_BAD_SIGNATURE},
    {"PS256 signed by another RSA key", SPS256_K2, H_ALG("PS256", "p1"), L(P_ALG),
     GW_AUTH_BAD_SIGNATURE},
    {"EdDSA header on the RSA key", SED, H_ALG("EdDSA", "r1"), L(P_ALG), GW_AUTH_UNKNOWN_KEY},
    {"PS256 header on the Ed25519 key", SPS256, H_ALG("PS256", "d1"), L(P_ALG),
     GW_AUTH_UNKNOWN_KEY},
    {"EdDSA signed by another Ed25519 key", SED_B, H_ALG("EdDSA", "d1"), L(P_ALG),
     GW_AUTH_BAD_SIGNATURE},
    {"EdDSA alg spelled EDDSA", SED, H_ALG("EDDSA", "d1"), L(P_ALG), GW_AUTH_MALFORMED},
    {"HS256 header on the Ed25519 key", SPEM, H_ALG("HS256", "d1"), L(P_ALG), GW_AUTH_UNKNOWN_KEY},
    /* the claims are checked as for any token */
    {"EdDSA expired", SED, H_ALG("EdDSA", "d1"),
     L("{\"iss\":\"https://alg.example.com\",\"sub\":\"u\",\"aud\":\"ghl-gateway\","
       "\"exp\":1699990000}"),
     GW_AUTH_EXPIRED},
    {"PS256 for another audience", SPS256, H_ALG("PS256", "p1"),
     L("{\"iss\":\"https://alg.example.com\",\"sub\":\"u\",\"aud\":\"other\"," EXP_OK "}"),
     GW_AUTH_AUDIENCE},
    {"PS512 without sub", SPS512, H_ALG("PS512", "p5"),
     L("{\"iss\":\"https://alg.example.com\",\"aud\":\"ghl-gateway\"," EXP_OK "}"),
     GW_AUTH_BAD_CLAIMS},
};

START_TEST(test_jwt_alg_cases)
{
    run_case(&alg_cases[_i]);
}
END_TEST

/* Exact lengths through the whole pipeline: 256 bytes for PS256 on a 2048-bit key, 64 for
 * EdDSA. */
START_TEST(test_jwt_ps_eddsa_signature_lengths)
{
    static const struct {
        int signer;
        const char *hdr;
        size_t len;
    } v[] = {{SPS256, "{\"alg\":\"PS256\",\"kid\":\"p1\"}", 256},
             {SED, "{\"alg\":\"EdDSA\",\"kid\":\"d1\"}", 64}};
    for (size_t i = 0; i < 2; i++) {
        char *t = tok(&g_sig[v[i].signer], v[i].hdr, P_ALG);
        EXPECT(t, GW_AUTH_OK);
        const char *d2 = strrchr(t, '.');
        unsigned char sig[1024];
        size_t n = sign_bytes(&g_sig[v[i].signer], t, (size_t)(d2 - t), sig);
        ck_assert_uint_eq(n, v[i].len);
        EXPECT(with_sig(t, sig, n), GW_AUTH_OK);
        EXPECT(with_sig(t, sig, n - 1), GW_AUTH_BAD_SIGNATURE);
        sig[n] = 0;
        EXPECT(with_sig(t, sig, n + 1), GW_AUTH_BAD_SIGNATURE);
        unsigned char pre[1025] = {0};
        memcpy(pre + 1, sig, n);
        EXPECT(with_sig(t, pre, n + 1), GW_AUTH_BAD_SIGNATURE);
        sig[n - 1] ^= 0x01;
        EXPECT(with_sig(t, sig, n), GW_AUTH_BAD_SIGNATURE);
    }
}
END_TEST

/* H: time claims; NOW = 1700000000, leeway 60, max_lifetime 86400 (custom: 0 and 3600) */
#define P_T(times) L("{" C_BASE "," times "}")
static const struct jcase time_cases[] = {
    {"exp = now - leeway + 1 (now == exp + leeway - 1)", SK1, L(H_K1), P_T("\"exp\":1699999941"),
     GW_AUTH_OK},
    {"exp = now - leeway (now == exp + leeway)", SK1, L(H_K1), P_T("\"exp\":1699999940"),
     GW_AUTH_EXPIRED},
    {"exp an hour ago", SK1, L(H_K1), P_T("\"exp\":1699996400"), GW_AUTH_EXPIRED},
    {"nbf = now + leeway (now + leeway == nbf)", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":1700000060"),
     GW_AUTH_OK},
    {"nbf = now + leeway + 1", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":1700000061"),
     GW_AUTH_NOT_YET_VALID},
    {"nbf in the past", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":1699990000"), GW_AUTH_OK},
    {"iat = now + leeway", SK1, L(H_K1), P_T(EXP_OK ",\"iat\":1700000060"), GW_AUTH_OK},
    {"iat = now + leeway + 1", SK1, L(H_K1), P_T(EXP_OK ",\"iat\":1700000061"),
     GW_AUTH_NOT_YET_VALID},
    {"iat an hour in the future", SK1, L(H_K1), P_T(EXP_OK ",\"iat\":1700003600"),
     GW_AUTH_NOT_YET_VALID},
    {"exp - iat == max_lifetime", SK1, L(H_K1), P_T("\"iat\":1700000000,\"exp\":1700086400"),
     GW_AUTH_OK},
    {"exp - iat == max_lifetime + 1", SK1, L(H_K1), P_T("\"iat\":1700000000,\"exp\":1700086401"),
     GW_AUTH_BAD_CLAIMS},
    {"exp - iat too long though exp - now is not", SK1, L(H_K1),
     P_T("\"iat\":1699999900,\"exp\":1700086350"), GW_AUTH_BAD_CLAIMS},
    {"no iat, exp - now == max_lifetime", SK1, L(H_K1), P_T("\"exp\":1700086400"), GW_AUTH_OK},
    {"no iat, exp - now == max_lifetime + 1", SK1, L(H_K1), P_T("\"exp\":1700086401"),
     GW_AUTH_BAD_CLAIMS},
    {"exp far in the future", SK1, L(H_K1), P_T("\"exp\":4102444800"), GW_AUTH_BAD_CLAIMS},
    {"exp missing", SK1, L(H_K1), P_T("\"iat\":1700000000"), GW_AUTH_BAD_CLAIMS},
    {"exp a float 1700000600.5", SK1, L(H_K1), P_T("\"exp\":1700000600.5"), GW_AUTH_BAD_CLAIMS},
    {"exp a float 1700000600.0", SK1, L(H_K1), P_T("\"exp\":1700000600.0"), GW_AUTH_BAD_CLAIMS},
    {"exp exponent form 1.7000006e9", SK1, L(H_K1), P_T("\"exp\":1.7000006e9"), GW_AUTH_BAD_CLAIMS},
    {"exp exponent form 17000006E2", SK1, L(H_K1), P_T("\"exp\":17000006E2"), GW_AUTH_BAD_CLAIMS},
    {"exp a string", SK1, L(H_K1), P_T("\"exp\":\"1700000600\""), GW_AUTH_BAD_CLAIMS},
    {"exp null", SK1, L(H_K1), P_T("\"exp\":null"), GW_AUTH_BAD_CLAIMS},
    {"exp true", SK1, L(H_K1), P_T("\"exp\":true"), GW_AUTH_BAD_CLAIMS},
    {"exp an array", SK1, L(H_K1), P_T("\"exp\":[1700000600]"), GW_AUTH_BAD_CLAIMS},
    {"exp 0", SK1, L(H_K1), P_T("\"exp\":0"), GW_AUTH_BAD_CLAIMS},
    {"exp negative", SK1, L(H_K1), P_T("\"exp\":-1"), GW_AUTH_BAD_CLAIMS},
    {"nbf 0 (the epoch)", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":0"), GW_AUTH_OK},
    {"iat 0 (the epoch) makes the lifetime too long", SK1, L(H_K1), P_T(EXP_OK ",\"iat\":0"),
     GW_AUTH_BAD_CLAIMS},
    {"nbf negative", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":-1"), GW_AUTH_BAD_CLAIMS},
    {"a claim past int64 (libjwt's parser refuses it)", SK1, L(H_K1),
     P_T(EXP_OK ",\"org\":18446744073709551615"), GW_AUTH_BAD_CLAIMS},
    {"a nested claim past int64", SK1, L(H_K1), P_T(EXP_OK ",\"x\":{\"y\":[-9300000000000000000]}"),
     GW_AUTH_BAD_CLAIMS},
    {"a large float claim is fine", SK1, L(H_K1), P_T(EXP_OK ",\"big\":1.8e19"), GW_AUTH_OK},
    {"nbf a string", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":\"1699990000\""), GW_AUTH_BAD_CLAIMS},
    {"nbf a float", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":1699990000.5"), GW_AUTH_BAD_CLAIMS},
    {"nbf null", SK1, L(H_K1), P_T(EXP_OK ",\"nbf\":null"), GW_AUTH_BAD_CLAIMS},
    {"iat a string", SK1, L(H_K1), P_T(EXP_OK ",\"iat\":\"1699990000\""), GW_AUTH_BAD_CLAIMS},
    {"iat a float 1699999990.0", SK1, L(H_K1), P_T(EXP_OK ",\"iat\":1699999990.0"),
     GW_AUTH_BAD_CLAIMS},
    {"custom leeway 0: exp == now", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000000")), GW_AUTH_EXPIRED},
    {"custom leeway 0: exp == now + 1", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000001")), GW_AUTH_OK},
    {"custom leeway 0: nbf == now + 1", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000600,\"nbf\":1700000001")), GW_AUTH_NOT_YET_VALID},
    {"custom leeway 0: nbf == now", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000600,\"nbf\":1700000000")), GW_AUTH_OK},
    {"custom max_lifetime 3600: exp == now + 3601", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700003601")), GW_AUTH_BAD_CLAIMS},
    {"custom max_lifetime 3600: exp == now + 3600", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700003600")), GW_AUTH_OK},
};

START_TEST(test_jwt_time_cases)
{
    run_case(&time_cases[_i]);
}
END_TEST

/* I: audience and subject */
#define P_AUD(aud) L("{\"iss\":\"https://idp.example.com\",\"sub\":\"user-1\"" aud "," EXP_OK "}")
#define P_SUB(sub)                                                                                 \
    L("{\"iss\":\"https://idp.example.com\",\"aud\":\"ghl-gateway\"" sub "," EXP_OK "}")
#define X5T "o8Rz6Qxr5W_rLxOQzZ9IoGd9U9bWbWl4JCTjmXbdx_Y" /* 43 characters */
#define P_CNF(cnf) L("{" C_BASE ",\"cnf\":" cnf "," EXP_OK "}")
static const struct jcase claim_cases[] = {
    /* RFC 8705 §3.1: cnf an object; its x5t#S256 the base64url of a SHA-256 */
    {"cnf x5t#S256", SK1, L(H_K1), P_CNF("{\"x5t#S256\":\"" X5T "\"}"), GW_AUTH_OK},
    {"cnf empty", SK1, L(H_K1), P_CNF("{}"), GW_AUTH_OK},
    /* another confirmation method (DPoP's jkt, a jwk): bound to something the gateway cannot
     * check, so not usable as a bearer token */
    {"cnf jkt", SK1, L(H_K1), P_CNF("{\"jkt\":\"abc\"}"), GW_AUTH_BINDING},
    {"cnf x5t#S256 and jkt", SK1, L(H_K1),
     P_CNF("{\"x5t#S256\":\"" X5T "\",\"jkt\":\"abc\"}"), GW_AUTH_BINDING},
    {"cnf a string", SK1, L(H_K1), P_CNF("\"" X5T "\""), GW_AUTH_BAD_CLAIMS},
    {"cnf null", SK1, L(H_K1), P_CNF("null"), GW_AUTH_BAD_CLAIMS},
    {"cnf x5t#S256 a number", SK1, L(H_K1), P_CNF("{\"x5t#S256\":1}"), GW_AUTH_BAD_CLAIMS},
    {"cnf x5t#S256 too short", SK1, L(H_K1), P_CNF("{\"x5t#S256\":\"o8Rz6Qxr5W\"}"),
     GW_AUTH_BAD_CLAIMS},
    {"cnf x5t#S256 padded", SK1, L(H_K1),
     P_CNF("{\"x5t#S256\":\"o8Rz6Qxr5W_rLxOQzZ9IoGd9U9bWbWl4JCTjmXbdx_=\"}"), GW_AUTH_BAD_CLAIMS},
    {"cnf x5t#S256 in base64", SK1, L(H_K1),
     P_CNF("{\"x5t#S256\":\"o8Rz6Qxr5W/rLxOQzZ9IoGd9U9bWbWl4JCTjmXbdx+Y\"}"), GW_AUTH_BAD_CLAIMS},
    {"aud the string", SK1, L(H_K1), P_AUD(",\"aud\":\"ghl-gateway\""), GW_AUTH_OK},
    {"aud an array holding it", SK1, L(H_K1), P_AUD(",\"aud\":[\"other\",\"ghl-gateway\"]"),
     GW_AUTH_OK},
    {"aud another string", SK1, L(H_K1), P_AUD(",\"aud\":\"other\""), GW_AUTH_AUDIENCE},
    {"aud an array without it", SK1, L(H_K1), P_AUD(",\"aud\":[\"a\",\"b\"]"), GW_AUTH_AUDIENCE},
    {"aud an empty array", SK1, L(H_K1), P_AUD(",\"aud\":[]"), GW_AUTH_AUDIENCE},
    {"aud missing", SK1, L(H_K1), P_AUD(""), GW_AUTH_AUDIENCE},
    {"aud in another case", SK1, L(H_K1), P_AUD(",\"aud\":\"GHL-GATEWAY\""), GW_AUTH_AUDIENCE},
    {"aud with a trailing slash", SK1, L(H_K1), P_AUD(",\"aud\":\"ghl-gateway/\""),
     GW_AUTH_AUDIENCE},
    {"aud a prefix of it", SK1, L(H_K1), P_AUD(",\"aud\":\"ghl-gate\""), GW_AUTH_AUDIENCE},
    {"aud a number", SK1, L(H_K1), P_AUD(",\"aud\":5"), GW_AUTH_BAD_CLAIMS},
    {"aud an object", SK1, L(H_K1), P_AUD(",\"aud\":{\"ghl-gateway\":1}"), GW_AUTH_BAD_CLAIMS},
    {"aud null", SK1, L(H_K1), P_AUD(",\"aud\":null"), GW_AUTH_BAD_CLAIMS},
    {"aud an array of numbers", SK1, L(H_K1), P_AUD(",\"aud\":[1,2]"), GW_AUTH_BAD_CLAIMS},
    {"aud an array with a non-string", SK1, L(H_K1), P_AUD(",\"aud\":[\"ghl-gateway\",5]"),
     GW_AUTH_BAD_CLAIMS},
    {"audiences []: aud missing", SK1, L("{\"alg\":\"RS256\"}"), L(P_CUSTOM(",\"exp\":1700000600")),
     GW_AUTH_OK},
    {"audiences []: aud anything", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000600,\"aud\":\"whatever\"")), GW_AUTH_OK},
    {"audiences []: aud an array", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000600,\"aud\":[\"x\",\"y\"]")), GW_AUTH_OK},
    {"sub missing", SK1, L(H_K1), P_SUB(""), GW_AUTH_BAD_CLAIMS},
    {"sub empty", SK1, L(H_K1), P_SUB(",\"sub\":\"\""), GW_AUTH_BAD_CLAIMS},
    {"sub a number", SK1, L(H_K1), P_SUB(",\"sub\":5"), GW_AUTH_BAD_CLAIMS},
    {"sub null", SK1, L(H_K1), P_SUB(",\"sub\":null"), GW_AUTH_BAD_CLAIMS},
    {"sub an array", SK1, L(H_K1), P_SUB(",\"sub\":[\"user-1\"]"), GW_AUTH_BAD_CLAIMS},
    {"custom subject claim present, no sub", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000600")), GW_AUTH_OK},
    {"custom subject claim missing, sub present", SK1, L("{\"alg\":\"RS256\"}"),
     L("{\"iss\":\"https://custom.example.com\",\"sub\":\"s\",\"exp\":1700000600}"),
     GW_AUTH_BAD_CLAIMS},
    {"custom subject claim a number", SK1, L("{\"alg\":\"RS256\"}"),
     L("{\"iss\":\"https://custom.example.com\",\"uid\":7,\"exp\":1700000600}"),
     GW_AUTH_BAD_CLAIMS},
    {"scope a number", SK1, L(H_K1), L("{" C_BASE "," EXP_OK ",\"scope\":5}"), GW_AUTH_BAD_CLAIMS},
    {"scope null", SK1, L(H_K1), L("{" C_BASE "," EXP_OK ",\"scope\":null}"), GW_AUTH_BAD_CLAIMS},
    {"scope an array with a non-string", SK1, L(H_K1),
     L("{" C_BASE "," EXP_OK ",\"scope\":[\"users.readonly\",5]}"), GW_AUTH_BAD_CLAIMS},
    {"scp an array with a nested array", SK1, L(H_K1),
     L("{" C_BASE "," EXP_OK ",\"scp\":[[\"users.readonly\"]]}"), GW_AUTH_BAD_CLAIMS},
    {"scp an object", SK1, L(H_K1), L("{" C_BASE "," EXP_OK ",\"scp\":{\"users.readonly\":1}}"),
     GW_AUTH_BAD_CLAIMS},
    {"custom scope claim of the wrong type", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000600,\"perms\":true")), GW_AUTH_BAD_CLAIMS},
    {"a scope claim not configured may have any type", SK1, L("{\"alg\":\"RS256\"}"),
     L(P_CUSTOM(",\"exp\":1700000600,\"scope\":5")), GW_AUTH_OK},
};

START_TEST(test_jwt_claim_cases)
{
    run_case(&claim_cases[_i]);
}
END_TEST

/* ---- structure and encoding (B, C) ---- */

static char *valid_k1(void)
{
    return tok(&g_sig[SK1], H_K1, P_OK);
}

/* t with segment seg (0-2) changed by op at its middle or end. */
static char *mutate(const char *t, int seg, int op)
{
    const char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    const char *start = seg == 0 ? t : seg == 1 ? d1 + 1 : d2 + 1;
    const char *end = seg == 0 ? d1 : seg == 1 ? d2 : t + strlen(t);
    size_t mid = (size_t)(start - t) + (size_t)(end - start) / 2, at_end = (size_t)(end - t);
    static const char *const ins[] = {"=", " ", ".", "!", "?", "#", "\n", "%3D", "\xc3\xa9", "\t"};
    if (op < 10) {
        size_t pos = op == 0 ? at_end : mid;
        return fmt("%.*s%s%s", (int)pos, t, ins[op], t + pos);
    }
    char *c = fmt("%s", t);
    c[mid] = op == 10 ? '+' : '/';
    return c;
}

START_TEST(test_jwt_valid_token_verifies)
{
    EXPECT(valid_k1(), GW_AUTH_OK);
}
END_TEST

START_TEST(test_jwt_junk_in_each_segment_is_malformed)
{
    char *t = valid_k1();
    for (int seg = 0; seg < 3; seg++)
        for (int op = 0; op < 12; op++) {
            char *m = mutate(t, seg, op);
            enum gw_auth_reason r = verify_n(m, strlen(m), NULL);
            ck_assert_msg(r == GW_AUTH_MALFORMED, "segment %d op %d: got %s for %s", seg, op,
                          rname(r), m);
        }
}
END_TEST

START_TEST(test_jwt_padding_on_each_segment_is_malformed)
{
    char *t = valid_k1();
    const char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    int h = (int)(d1 - t), p = (int)(d2 - d1 - 1);
    EXPECT(fmt("%.*s==.%s", h, t, d1 + 1), GW_AUTH_MALFORMED);
    EXPECT(fmt("%.*s==.%s", h + 1 + p, t, d2 + 1), GW_AUTH_MALFORMED);
    EXPECT(fmt("%s==", t), GW_AUTH_MALFORMED);
    EXPECT(fmt("%s=", t), GW_AUTH_MALFORMED);
}
END_TEST

/* Sets a non-zero unused bit in a segment's last character, keeping it in the alphabet. */
START_TEST(test_jwt_noncanonical_last_character_is_malformed)
{
    /* a payload whose encoding has unused bits, and the RS256 signature (256 bytes: 4 unused) */
    char *t = tok(&g_sig[SK1], H_K1, "{" C_BASE "," EXP_OK ",\"x\":\"a\"}");
    char *t2 = tok(&g_sig[SK1], H_K1, "{" C_BASE "," EXP_OK ",\"x\":\"ab\"}");
    EXPECT(t, GW_AUTH_OK);
    EXPECT(t2, GW_AUTH_OK);
    int changed = 0;
    char *both[2] = {t, t2};
    for (int k = 0; k < 2; k++)
        for (int seg = 0; seg < 3; seg++) {
            const char *d1 = strchr(both[k], '.'), *d2 = strchr(d1 + 1, '.');
            const char *start = seg == 0 ? both[k] : seg == 1 ? d1 + 1 : d2 + 1;
            const char *end = seg == 0 ? d1 : seg == 1 ? d2 : both[k] + strlen(both[k]);
            size_t len = (size_t)(end - start);
            if (len % 4 == 0)
                continue;
            char *m = fmt("%s", both[k]);
            char *last = m + (end - both[k]) - 1;
            size_t v = (size_t)(strchr(B64U, *last) - B64U);
            *last = B64U[v | 1];
            enum gw_auth_reason r = verify_n(m, strlen(m), NULL);
            ck_assert_msg(r == GW_AUTH_MALFORMED, "token %d segment %d: got %s", k, seg, rname(r));
            changed++;
        }
    ck_assert_int_ge(changed, 3);
}
END_TEST

START_TEST(test_jwt_missing_and_extra_segments_are_malformed)
{
    char *t = valid_k1();
    const char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    int h = (int)(d1 - t), hp = (int)(d2 - t);
    const char *v[] = {
        "",
        ".",
        "..",
        "...",
        "invalidToken",
        fmt("%.*s", hp, t),            /* h.p */
        fmt("%.*s", hp + 1, t),        /* h.p. */
        fmt("%.*s", h, t),             /* h */
        fmt("%.*s.", h, t),            /* h. */
        fmt("%s", d1),                 /* .p.s */
        fmt("%s", d1 + 1),             /* p.s */
        fmt("%.*s.%s", h, t, d2),      /* h..s */
        fmt("%.*s%s", h, t, d2),       /* h.s */
        fmt("%s.", t),                 /* h.p.s. */
        fmt("%s.%s", t, d2 + 1),       /* h.p.s.s */
        fmt("%.*s.%s", hp, t, d1 + 1), /* h.p.p.s */
        fmt(".%s", t),                 /* .h.p.s */
        fmt("%s.AAAA.AAAA", t),        /* JWE shape */
        fmt(" %s", t),
        fmt("%s ", t),
        fmt("%s\n", t),
        "{\"payload\":\"Zm9v\",\"signatures\":[{\"protected\":\"eyJhbGciOiJSUzI1NiJ9\","
        "\"signature\":\"AAAA\"}]}",
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        enum gw_auth_reason r = verify_n(v[i], strlen(v[i]), NULL);
        ck_assert_msg(r == GW_AUTH_MALFORMED, "case %zu: got %s for \"%.120s\"", i, rname(r), v[i]);
    }
}
END_TEST

START_TEST(test_jwt_alg_none_is_malformed)
{
    static const char *const hdrs[] = {
        "{\"alg\":\"none\"}",
        "{\"alg\":\"none\",\"kid\":\"k1\"}",
        "{\"alg\":\"NONE\",\"kid\":\"k1\"}",
        "{\"alg\":\"None\"}",
        "{\"alg\":\"nOnE\"}",
        "{\"alg\":\"none\",\"kid\":\"none\"}",
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof *hdrs; i++) {
        char *hp = fmt("%s.%s", b64u(hdrs[i], strlen(hdrs[i])), b64u(P_OK, strlen(P_OK)));
        const char *v[] = {
            fmt("%s.", hp),                                 /* empty signature */
            hp,                                             /* absent signature */
            fmt("%s.%s", hp, b64u("garbage", 7)),           /* garbage signature */
            fmt("%s.%s", hp, strrchr(valid_k1(), '.') + 1), /* a real RS256 signature */
        };
        for (size_t j = 0; j < 4; j++) {
            enum gw_auth_reason r = verify_n(v[j], strlen(v[j]), NULL);
            ck_assert_msg(r == GW_AUTH_MALFORMED, "%s, signature form %zu: got %s", hdrs[i], j,
                          rname(r));
        }
    }
}
END_TEST

/* E: libjwt's alg confusion. The HS256 header does not fit k1's pinned RS256, which the
 * pipeline treats as a key-choice failure (unknown_key); a wrong MAC would be bad_signature.
 * Either way it must never verify. */
START_TEST(test_jwt_hs256_maced_with_rsa_public_pem_refused)
{
    ck_assert_int_eq(g_k1_pem[strlen(g_k1_pem) - 1], '\n');
    const char *hdrs[] = {"{\"alg\":\"HS256\",\"kid\":\"k1\"}", "{\"alg\":\"HS256\"}",
                          "{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"};
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < 3; i++) {
            char *t = tok(&g_sig[s == 0 ? SPEM : SPEM_NONL], hdrs[i], P_OK);
            enum gw_auth_reason r = verify_n(t, strlen(t), NULL);
            ck_assert_msg(r == GW_AUTH_UNKNOWN_KEY || r == GW_AUTH_BAD_SIGNATURE,
                          "%s (%s trailing newline): got %s", hdrs[i], s == 0 ? "with" : "without",
                          rname(r));
        }
}
END_TEST

START_TEST(test_jwt_signature_wrong_length_or_value)
{
    char *t = valid_k1();
    EXPECT(with_sig(t, "\0", 1), GW_AUTH_BAD_SIGNATURE);
    unsigned char zero[512] = {0};
    EXPECT(with_sig(t, zero, 256), GW_AUTH_BAD_SIGNATURE);
    EXPECT(with_sig(t, zero, 255), GW_AUTH_BAD_SIGNATURE);
    EXPECT(with_sig(t, zero, 257), GW_AUTH_BAD_SIGNATURE);
    EXPECT(with_sig(t, zero, 512), GW_AUTH_BAD_SIGNATURE);
    /* the real signature truncated by one byte, and with a zero byte appended */
    unsigned char sig[1024];
    const char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    size_t n = sign_bytes(&g_sig[SK1], t, (size_t)(d2 - t), sig);
    ck_assert_uint_eq(n, 256);
    EXPECT(with_sig(t, sig, 256), GW_AUTH_OK);
    EXPECT(with_sig(t, sig, 255), GW_AUTH_BAD_SIGNATURE);
    sig[256] = 0;
    EXPECT(with_sig(t, sig, 257), GW_AUTH_BAD_SIGNATURE);
    sig[0] ^= 0x01;
    EXPECT(with_sig(t, sig, 256), GW_AUTH_BAD_SIGNATURE);
    sig[0] ^= 0x01;
    sig[255] ^= 0x80;
    EXPECT(with_sig(t, sig, 256), GW_AUTH_BAD_SIGNATURE);

    /* ES256: 64 bytes exactly */
    char *e = tok(&g_sig[SEC], "{\"alg\":\"ES256\",\"kid\":\"e1\"}", P_EC);
    EXPECT(e, GW_AUTH_OK);
    d1 = strchr(e, '.');
    d2 = strchr(d1 + 1, '.');
    n = sign_bytes(&g_sig[SEC], e, (size_t)(d2 - e), sig);
    ck_assert_uint_eq(n, 64);
    EXPECT(with_sig(e, sig, 64), GW_AUTH_OK);
    sig[64] = 0;
    EXPECT(with_sig(e, sig, 65), GW_AUTH_BAD_SIGNATURE);
    EXPECT(with_sig(e, sig, 63), GW_AUTH_BAD_SIGNATURE);
    unsigned char swapped[64];
    memcpy(swapped, sig + 32, 32);
    memcpy(swapped + 32, sig, 32);
    EXPECT(with_sig(e, swapped, 64), GW_AUTH_BAD_SIGNATURE);
    EXPECT(with_sig(e, zero, 64), GW_AUTH_BAD_SIGNATURE);

    /* HS256: 32 bytes exactly */
    char *h = tok(&g_sig[SHS], "{\"alg\":\"HS256\",\"kid\":\"h1\"}", P_HS);
    d1 = strchr(h, '.');
    d2 = strchr(d1 + 1, '.');
    n = sign_bytes(&g_sig[SHS], h, (size_t)(d2 - h), sig);
    ck_assert_uint_eq(n, 32);
    EXPECT(with_sig(h, sig, 32), GW_AUTH_OK);
    EXPECT(with_sig(h, sig, 16), GW_AUTH_BAD_SIGNATURE);
    EXPECT(with_sig(h, sig, 31), GW_AUTH_BAD_SIGNATURE);
    sig[32] = 0;
    EXPECT(with_sig(h, sig, 33), GW_AUTH_BAD_SIGNATURE);
    sig[31] ^= 1;
    EXPECT(with_sig(h, sig, 32), GW_AUTH_BAD_SIGNATURE);
}
END_TEST

START_TEST(test_jwt_modified_header_or_payload_under_old_signature)
{
    char *t = valid_k1();
    const char *sig = strrchr(t, '.') + 1;
    const char *h2 = "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}";
    const char *p2 = "{" C_BASE ",\"exp\":1700000601}";
    EXPECT(fmt("%s.%s.%s", b64u(h2, strlen(h2)), b64u(P_OK, strlen(P_OK)), sig),
           GW_AUTH_BAD_SIGNATURE);
    EXPECT(fmt("%s.%s.%s", b64u(H_K1, strlen(H_K1)), b64u(p2, strlen(p2)), sig),
           GW_AUTH_BAD_SIGNATURE);
}
END_TEST

START_TEST(test_jwt_kid_length_capped)
{
    char kid[300];
    memset(kid, 'a', sizeof kid);
    kid[256] = '\0';
    EXPECT(tok(&g_sig[SK1], fmt("{\"alg\":\"RS256\",\"kid\":\"%s\"}", kid), P_OK),
           GW_AUTH_UNKNOWN_KEY);
    kid[256] = 'a';
    kid[257] = '\0';
    EXPECT(tok(&g_sig[SK1], fmt("{\"alg\":\"RS256\",\"kid\":\"%s\"}", kid), P_OK),
           GW_AUTH_MALFORMED);
}
END_TEST

/* The token length for a header of hl bytes and a payload of pl bytes, RS256-signed. */
static size_t rs_len(size_t hl, size_t pl)
{
    return b64u_len(hl) + 1 + b64u_len(pl) + 1 + b64u_len(256);
}

/* A k1 token of exactly `want` bytes (a padding claim and header whitespace adjusted). */
static char *token_of_length(size_t want)
{
    for (int sp = 0; sp < 3; sp++) {
        const char *h = fmt("{\"alg\":\"RS256\",%.*s\"kid\":\"k1\"}", sp, "  ");
        for (size_t pad = 0; pad < want; pad++) {
            size_t pl = strlen("{" C_BASE "," EXP_OK ",\"pad\":\"\"}") + pad;
            size_t n = rs_len(strlen(h), pl);
            if (n > want)
                break;
            if (n == want) {
                char *padding = keep(malloc(pad + 1));
                memset(padding, 'x', pad);
                padding[pad] = '\0';
                char *t =
                    tok(&g_sig[SK1], h, fmt("{" C_BASE "," EXP_OK ",\"pad\":\"%s\"}", padding));
                ck_assert_uint_eq(strlen(t), want);
                return t;
            }
        }
    }
    ck_abort_msg("no token of %zu bytes", want);
    return NULL;
}

START_TEST(test_jwt_size_cap)
{
    ck_assert_uint_eq(g_auth->max_token_bytes, 8192);
    EXPECT(token_of_length(8192), GW_AUTH_OK);
    EXPECT(token_of_length(8193), GW_AUTH_MALFORMED);
    /* a long but legal claim well under the cap is fine */
    EXPECT(token_of_length(6000), GW_AUTH_OK);
}
END_TEST

START_TEST(test_jwt_megabyte_header_is_malformed)
{
    size_t n = 1 << 20;
    char *h = keep(malloc(n + 64));
    int o = snprintf(h, 64, "{\"alg\":\"RS256\",\"kid\":\"k1\",\"x\":\"");
    memset(h + o, 'A', n);
    memcpy(h + o + n, "\"}", 3);
    char *hp = fmt("%s.%s", b64u(h, strlen(h)), b64u(P_OK, strlen(P_OK)));
    EXPECT(fmt("%s.%s", hp, strrchr(valid_k1(), '.') + 1), GW_AUTH_MALFORMED);
    /* and a megabyte of dots / of one segment character */
    char *dots = keep(malloc(n + 1));
    memset(dots, '.', n);
    dots[n] = '\0';
    EXPECT(dots, GW_AUTH_MALFORMED);
    memset(dots, 'A', n);
    EXPECT(dots, GW_AUTH_MALFORMED);
}
END_TEST

START_TEST(test_jwt_deep_json_is_malformed)
{
    char deep[4001];
    memset(deep, '[', 2000);
    memset(deep + 2000, ']', 2000);
    deep[4000] = '\0';
    EXPECT(tok(&g_sig[SK1], H_K1, fmt("{" C_BASE "," EXP_OK ",\"x\":%s}", deep)),
           GW_AUTH_MALFORMED);
}
END_TEST

/* D: attacker-supplied keys in the header are never used */
START_TEST(test_jwt_embedded_jwk_and_jku_ignored)
{
    cJSON *j = jwk_of(g_att, "k1");
    char *jwk = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    keep(jwk);
    const char *h = fmt("{\"alg\":\"RS256\",\"kid\":\"k1\",\"jwk\":%s,"
                        "\"jku\":\"https://evil.example/jwks\",\"x5u\":\"https://evil.example/x\","
                        "\"x5c\":[\"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\"]}",
                        jwk);
    EXPECT(tok(&g_sig[SK1], h, P_OK), GW_AUTH_OK);             /* the configured key verifies */
    EXPECT(tok(&g_sig[SATT], h, P_OK), GW_AUTH_BAD_SIGNATURE); /* the embedded key does not */
    const char *nokid = fmt("{\"alg\":\"RS256\",\"jwk\":%s}", jwk);
    EXPECT(tok(&g_sig[SATT], nokid, P_OK), GW_AUTH_BAD_SIGNATURE);
    EXPECT(tok(&g_sig[SATT], nokid, P_TWO), GW_AUTH_UNKNOWN_KEY);
    const char *jku = "{\"alg\":\"RS256\",\"jku\":\"https://evil.example/jwks\",\"kid\":\"evil\"}";
    EXPECT(tok(&g_sig[SATT], jku, P_OK), GW_AUTH_UNKNOWN_KEY);
}
END_TEST

/* ---- the principal and its scopes ---- */

START_TEST(test_jwt_principal_fields)
{
    struct gw_principal *p = principal(tok(
        &g_sig[SK1], H_K1, "{" C_BASE ",\"exp\":1700000600,\"iat\":1699999990,\"scope\":\"a b\"}"));
    ck_assert_str_eq(p->iss, ISS_IDP);
    ck_assert_str_eq(p->sub, "user-1");
    ck_assert_int_eq(p->exp, 1700000600);
    ck_assert_ptr_nonnull(p->issuer);
    ck_assert_str_eq(p->issuer->cfg->issuer, ISS_IDP);
    ck_assert_ptr_nonnull(p->claims);
    ck_assert(cJSON_IsObject(p->claims));
    unsigned char id[32];
    ck_assert_int_eq(gw_subject_id(ISS_IDP, "user-1", id), 0);
    ck_assert_mem_eq(p->subject_id, id, 32); /* the rate limiter's key, made once */
    ck_assert(gw_principal_key_current(p));
    ck_assert_int_eq(atomic_load(&p->refs), 1);
    ck_assert_ptr_eq(gw_principal_ref(p), p);
    ck_assert_int_eq(atomic_load(&p->refs), 2);
    gw_principal_unref(p);
    ck_assert_int_eq(atomic_load(&p->refs), 1);
    gw_principal_unref(p);

    p = principal(tok(&g_sig[SK1], "{\"alg\":\"RS256\"}",
                      P_CUSTOM(",\"exp\":1700000600,\"sub\":\"not-this\"")));
    ck_assert_str_eq(p->sub, "c-1"); /* the configured subject claim */
    ck_assert_str_eq(p->issuer->cfg->issuer, "https://custom.example.com");
    gw_principal_unref(p);

    p = principal(tok(&g_sig[SHS], "{\"alg\":\"HS256\",\"kid\":\"h1\"}", P_HS));
    ck_assert_str_eq(p->iss, "https://hs.example.com");
    gw_principal_unref(p);
}
END_TEST

static struct gw_principal *with_scopes(const char *claims)
{
    return principal(tok(&g_sig[SK1], H_K1, fmt("{" C_BASE "," EXP_OK "%s}", claims)));
}

START_TEST(test_jwt_scope_string_split_on_spaces)
{
    struct gw_principal *p = with_scopes(",\"scope\":\"users.readonly users.write\"");
    ck_assert(gw_principal_has_scope(p, "users.readonly"));
    ck_assert(gw_principal_has_scope(p, "users.write"));
    ck_assert(!gw_principal_has_scope(p, "users"));
    ck_assert(!gw_principal_has_scope(p, "users.read"));
    ck_assert(!gw_principal_has_scope(p, "users.readonly users.write"));
    ck_assert(!gw_principal_has_scope(p, ""));
    ck_assert_uint_eq(p->nscopes, 2);
    gw_principal_unref(p);

    p = with_scopes(",\"scope\":\"  users.write   users.readonly \"");
    ck_assert(gw_principal_has_scope(p, "users.write"));
    ck_assert(gw_principal_has_scope(p, "users.readonly"));
    ck_assert(!gw_principal_has_scope(p, ""));
    gw_principal_unref(p);
}
END_TEST

START_TEST(test_jwt_scope_exact_match_only)
{
    struct gw_principal *p = with_scopes(",\"scope\":\"users.readonly-x\"");
    ck_assert(!gw_principal_has_scope(p, "users.readonly"));
    ck_assert(gw_principal_has_scope(p, "users.readonly-x"));
    gw_principal_unref(p);
    p = with_scopes(",\"scope\":\"users.readonlyusers.write\"");
    ck_assert(!gw_principal_has_scope(p, "users.readonly"));
    ck_assert(!gw_principal_has_scope(p, "users.write"));
    gw_principal_unref(p);
    p = with_scopes(",\"scope\":\"Users.Readonly\"");
    ck_assert(!gw_principal_has_scope(p, "users.readonly"));
    gw_principal_unref(p);
    p = with_scopes(",\"scope\":\"users.write,users.readonly\"");
    ck_assert(!gw_principal_has_scope(p, "users.readonly"));
    gw_principal_unref(p);
    p = with_scopes("");
    ck_assert(!gw_principal_has_scope(p, "users.readonly"));
    ck_assert_uint_eq(p->nscopes, 0);
    gw_principal_unref(p);
    p = with_scopes(",\"scope\":\"\"");
    ck_assert(!gw_principal_has_scope(p, "users.readonly"));
    ck_assert(!gw_principal_has_scope(p, ""));
    gw_principal_unref(p);
}
END_TEST

START_TEST(test_jwt_scp_array_and_string)
{
    struct gw_principal *p = with_scopes(",\"scp\":[\"users.write\",\"users.readonly\"]");
    ck_assert(gw_principal_has_scope(p, "users.write"));
    ck_assert(gw_principal_has_scope(p, "users.readonly"));
    ck_assert(!gw_principal_has_scope(p, "users"));
    gw_principal_unref(p);
    p = with_scopes(",\"scp\":\"users.write users.readonly\"");
    ck_assert(gw_principal_has_scope(p, "users.write"));
    ck_assert(gw_principal_has_scope(p, "users.readonly"));
    gw_principal_unref(p);
    p = with_scopes(",\"scp\":[]");
    ck_assert(!gw_principal_has_scope(p, "users.write"));
    gw_principal_unref(p);
    /* both claims count */
    p = with_scopes(",\"scope\":\"users.readonly\",\"scp\":[\"users.write\"]");
    ck_assert(gw_principal_has_scope(p, "users.readonly"));
    ck_assert(gw_principal_has_scope(p, "users.write"));
    gw_principal_unref(p);
    /* SPEC §3: an array in any configured scope claim */
    p = with_scopes(",\"scope\":[\"users.write\"]");
    ck_assert(gw_principal_has_scope(p, "users.write"));
    gw_principal_unref(p);
}
END_TEST

/* SPEC §3: a scope is "an element of an array claim": the element is one scope, not split */
START_TEST(test_jwt_scp_array_element_is_one_scope)
{
    struct gw_principal *p = with_scopes(",\"scp\":[\"users.write users.readonly\"]");
    ck_assert(!gw_principal_has_scope(p, "users.write"));
    ck_assert(!gw_principal_has_scope(p, "users.readonly"));
    ck_assert(gw_principal_has_scope(p, "users.write users.readonly"));
    gw_principal_unref(p);
}
END_TEST

START_TEST(test_jwt_custom_scope_claim)
{
    struct gw_principal *p =
        principal(tok(&g_sig[SK1], "{\"alg\":\"RS256\"}",
                      P_CUSTOM(",\"exp\":1700000600,\"perms\":[\"users.write\"],"
                               "\"scope\":\"users.readonly\"")));
    ck_assert(gw_principal_has_scope(p, "users.write"));
    ck_assert(!gw_principal_has_scope(p, "users.readonly")); /* not a configured claim */
    gw_principal_unref(p);
}
END_TEST

/* SPEC §4.3: a principal with cnf x5t#S256 is bound to the certificate whose SHA-256 that is
 * (given in hex, as the connection has it); one without is bound to none. */
START_TEST(test_jwt_principal_bound_to_its_certificate)
{
    unsigned char md[32];
    char hex[65], other[65], x5t[48];
    for (size_t i = 0; i < sizeof md; i++)
        md[i] = (unsigned char)(i * 37 + 5);
    for (size_t i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
        snprintf(other + 2 * i, 3, "%02x", (unsigned)(md[i] ^ (i == 31)));
    }
    gw_b64url_encode(md, sizeof md, x5t);
    char payload[400];
    snprintf(payload, sizeof payload, "{" C_BASE ",\"cnf\":{\"x5t#S256\":\"%s\"}," EXP_OK "}",
             x5t);
    char *t = tok(&g_sig[SK1], H_K1, payload);
    struct gw_principal *p = NULL;
    ck_assert_int_eq(verify_n(t, strlen(t), &p), GW_AUTH_OK);
    ck_assert_str_eq(p->cnf_x5t, x5t);
    ck_assert(gw_principal_bound_to(p, hex));
    ck_assert(!gw_principal_bound_to(p, other));
    ck_assert(!gw_principal_bound_to(p, ""));
    hex[7] = 'G'; /* not hex */
    ck_assert(!gw_principal_bound_to(p, hex));
    gw_principal_unref(p);
    t = tok(&g_sig[SK1], H_K1, P_OK);
    ck_assert_int_eq(verify_n(t, strlen(t), &p), GW_AUTH_OK);
    ck_assert_ptr_null(p->cnf_x5t);
    ck_assert(gw_principal_bound_to(p, ""));
    ck_assert(gw_principal_bound_to(p, other));
    gw_principal_unref(p);
}
END_TEST

START_TEST(test_jwt_reason_names)
{
    static const char *const want[] = {
        NULL,      "missing",       "malformed",  "unknown_issuer", "unknown_key", "bad_signature",
        "expired", "not_yet_valid", "bad_claims", "audience",    "binding"};
    for (int r = GW_AUTH_MISSING; r < GW_AUTH_REASONS; r++) {
        const char *n = gw_auth_reason_name((enum gw_auth_reason)r);
        ck_assert_msg(n && strcmp(n, want[r]) == 0, "reason %d: %s", r, n ? n : "(null)");
    }
}
END_TEST

/* ---- A: the bearer header ---- */

static enum gw_auth_reason bearer(const char *v, bool repeated, const char **t, size_t *n)
{
    *t = NULL;
    *n = 0;
    return gw_bearer_token(v, repeated, t, n);
}

START_TEST(test_jwt_bearer_token_extraction)
{
    const char *t;
    size_t n;
    const char *v = "Bearer abc.def.ghi";
    ck_assert_int_eq(bearer(v, false, &t, &n), GW_AUTH_OK);
    ck_assert_ptr_eq(t, v + 7);
    ck_assert_uint_eq(n, 11);
    ck_assert_int_eq(bearer("bearer abc", false, &t, &n), GW_AUTH_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(strncmp(t, "abc", 3), 0);
    ck_assert_int_eq(bearer("BEARER abc", false, &t, &n), GW_AUTH_OK);
    ck_assert_int_eq(bearer("bEaReR abc", false, &t, &n), GW_AUTH_OK);
}
END_TEST

START_TEST(test_jwt_bearer_missing_or_other_scheme)
{
    const char *t;
    size_t n;
    ck_assert_int_eq(bearer(NULL, false, &t, &n), GW_AUTH_MISSING);
    ck_assert_int_eq(bearer("Basic dXNlcjpwYXNz", false, &t, &n), GW_AUTH_MISSING);
    ck_assert_int_eq(bearer("Digest username=\"a\"", false, &t, &n), GW_AUTH_MISSING);
}
END_TEST

START_TEST(test_jwt_bearer_malformed)
{
    const char *t;
    size_t n;
    static const char *const bad[] = {
        "Bearer",      "Bearer ",          "Bearer  abc", "Bearer abc def",
        "Bearer abc ", "Bearer abc .jjjj", "Bearer a,b",  "Bearer\tabc",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        enum gw_auth_reason r = bearer(bad[i], false, &t, &n);
        if (i == 6) /* "a,b" is one token to this layer; it then fails as a JWT */
            ck_assert_msg(r == GW_AUTH_OK || r == GW_AUTH_MALFORMED, "\"%s\": %s", bad[i],
                          rname(r));
        else
            ck_assert_msg(r == GW_AUTH_MALFORMED, "\"%s\": got %s", bad[i], rname(r));
    }
    /* the header sent twice */
    ck_assert_int_eq(bearer("Bearer abc", true, &t, &n), GW_AUTH_MALFORMED);
}
END_TEST

/* ---- the token cache ---- */

static void sha(const char *s, unsigned char out[32])
{
    SHA256((const unsigned char *)s, strlen(s), out);
}

static struct gw_principal *cache_principal(void)
{
    return principal(valid_k1());
}

START_TEST(test_jwt_cache_put_get_until_expiry)
{
    struct gw_principal *p = cache_principal();
    unsigned char k[32], other[32];
    sha("token-a", k);
    sha("token-b", other);
    struct gw_token_cache *c = gw_token_cache_new(64);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(gw_token_cache_get(c, k, NOW));
    gw_token_cache_put(c, k, p, NOW + 600);
    ck_assert_int_eq(atomic_load(&p->refs), 2); /* the cache holds its own reference */
    struct gw_principal *g = gw_token_cache_get(c, k, NOW);
    ck_assert_ptr_eq(g, p);
    gw_principal_unref(g);
    ck_assert_ptr_null(gw_token_cache_get(c, other, NOW));
    g = gw_token_cache_get(c, k, NOW + 599);
    ck_assert_ptr_eq(g, p);
    gw_principal_unref(g);
    ck_assert_ptr_null(gw_token_cache_get(c, k, NOW + 600)); /* now >= until */
    ck_assert_ptr_null(gw_token_cache_get(c, k, NOW + 10000));
    gw_token_cache_free(c);
    ck_assert_int_eq(atomic_load(&p->refs), 1);
    gw_principal_unref(p);
}
END_TEST

START_TEST(test_jwt_cache_clear)
{
    struct gw_principal *p = cache_principal();
    unsigned char k[32];
    sha("token-a", k);
    struct gw_token_cache *c = gw_token_cache_new(64);
    gw_token_cache_put(c, k, p, NOW + 600);
    gw_token_cache_clear(c);
    ck_assert_ptr_null(gw_token_cache_get(c, k, NOW));
    ck_assert_int_eq(atomic_load(&p->refs), 1);
    gw_token_cache_put(c, k, p, NOW + 600); /* still usable after clear */
    struct gw_principal *g = gw_token_cache_get(c, k, NOW);
    ck_assert_ptr_eq(g, p);
    gw_principal_unref(g);
    gw_token_cache_free(c);
    ck_assert_int_eq(atomic_load(&p->refs), 1);
    gw_principal_unref(p);
}
END_TEST

START_TEST(test_jwt_cache_zero_entries_holds_nothing)
{
    struct gw_principal *p = cache_principal();
    unsigned char k[32];
    sha("token-a", k);
    struct gw_token_cache *c = gw_token_cache_new(0);
    gw_token_cache_put(c, k, p, NOW + 600);
    ck_assert_ptr_null(gw_token_cache_get(c, k, NOW));
    gw_token_cache_free(c);
    ck_assert_int_eq(atomic_load(&p->refs), 1);
    gw_principal_unref(p);
}
END_TEST

START_TEST(test_jwt_cache_bounded_evicts_earliest_expiry)
{
    struct gw_principal *p = cache_principal();
    struct gw_token_cache *c = gw_token_cache_new(16);
    unsigned char keep_key[32], k[32];
    sha("long-lived", keep_key);
    gw_token_cache_put(c, keep_key, p, NOW + 1000000);
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "token-%d", i);
        sha(name, k);
        gw_token_cache_put(c, k, p, NOW + 1000 + i);
    }
    int held = 0;
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "token-%d", i);
        sha(name, k);
        struct gw_principal *g = gw_token_cache_get(c, k, NOW);
        if (g) {
            held++;
            gw_principal_unref(g);
        }
        if (i == 0)
            ck_assert_msg(g == NULL, "the earliest-expiring entry was kept");
        if (i == N - 1)
            ck_assert_msg(g == p, "the latest entry was not kept");
    }
    ck_assert_msg(held >= 1 && held <= 256, "%d entries held by a 16-entry cache", held);
    /* every eviction dropped its reference: the cache holds exactly one per entry */
    ck_assert_int_eq(atomic_load(&p->refs), 1 + held + 1);
    struct gw_principal *g = gw_token_cache_get(c, keep_key, NOW);
    ck_assert_msg(g == p, "the entry that expires last was evicted");
    gw_principal_unref(g);
    gw_token_cache_free(c);
    ck_assert_int_eq(atomic_load(&p->refs), 1);
    gw_principal_unref(p);
}
END_TEST

/* ---- key withdrawal (SPEC §4.1) ---- */

#define ISS_URL "https://url.example.com"
#define P_URL "{\"iss\":\"" ISS_URL "\",\"sub\":\"user-1\",\"aud\":\"ghl-gateway\"," EXP_OK "}"

static struct gw_issuer *url_issuer(void)
{
    for (size_t i = 0; i < g_auth->nissuers; i++)
        if (strcmp(g_auth->issuers[i].cfg->issuer, ISS_URL) == 0)
            return &g_auth->issuers[i];
    ck_abort_msg("no issuer " ISS_URL);
    return NULL;
}

/* A JWKS document of key a (kid akid) and, unless NULL, key b, parsed as a fetch parses it. */
static struct gw_keyset *url_set(EVP_PKEY *a, const char *akid, EVP_PKEY *b, const char *bkid)
{
    cJSON *doc = cJSON_CreateObject(), *keys = cJSON_AddArrayToObject(doc, "keys");
    cJSON_AddItemToArray(keys, jwk_of(a, akid));
    if (b)
        cJSON_AddItemToArray(keys, jwk_of(b, bkid));
    char *text = cJSON_PrintUnformatted(doc), why[200] = "";
    cJSON_Delete(doc);
    struct gw_keyset *s = gw_jwks_parse(text, strlen(text), why, sizeof why);
    free(text);
    ck_assert_msg(s != NULL, "%s", why);
    return s;
}

/* A JWKS refresh that no longer lists a kid: the tokens verified with it and cached are not
 * served again, and verified anew they get unknown_key; a refresh that returns the same keys
 * (a new parse of them) keeps the cache serving. */
START_TEST(test_jwt_cache_drops_tokens_of_a_withdrawn_key)
{
    struct gw_issuer *is = url_issuer();
    ck_assert_uint_eq(gw_jwks_install(is, url_set(g_k1, "u1", g_k2, "u2")), 0);
    char *t1 = tok(&g_sig[SK1], "{\"alg\":\"RS256\",\"kid\":\"u1\"}", P_URL);
    char *t2 = tok(&g_sig[SK2], "{\"alg\":\"RS256\",\"kid\":\"u2\"}", P_URL);
    unsigned char k1[32], k2[32];
    sha(t1, k1);
    sha(t2, k2);
    struct gw_principal *p1 = principal(t1), *p2 = principal(t2), *g;
    struct gw_token_cache *c = gw_token_cache_new(64);
    gw_token_cache_put(c, k1, p1, NOW + 600);
    gw_token_cache_put(c, k2, p2, NOW + 600);

    ck_assert_uint_eq(gw_jwks_install(is, url_set(g_k2, "u2", g_k1, "u1")), 0); /* same keys */
    ck_assert_ptr_eq(g = gw_token_cache_get(c, k1, NOW), p1);
    gw_principal_unref(g);
    ck_assert_ptr_eq(g = gw_token_cache_get(c, k2, NOW), p2);
    gw_principal_unref(g);

    ck_assert_uint_eq(gw_jwks_install(is, url_set(g_k2, "u2", NULL, NULL)), 1); /* u1 leaves */
    ck_assert(!gw_principal_key_current(p1)); /* also held by a request in flight */
    ck_assert_ptr_null(gw_token_cache_get(c, k1, NOW));
    EXPECT(t1, GW_AUTH_UNKNOWN_KEY);
    /* the issuer's other cached tokens are verified once more, and cached again */
    ck_assert_ptr_null(gw_token_cache_get(c, k2, NOW));
    struct gw_principal *p2b = principal(t2);
    gw_token_cache_put(c, k2, p2b, NOW + 600);
    ck_assert_ptr_eq(g = gw_token_cache_get(c, k2, NOW), p2b);
    gw_principal_unref(g);
    ck_assert_int_eq(atomic_load(&p1->refs), 1); /* the cache let go of the dropped entries */
    ck_assert_int_eq(atomic_load(&p2->refs), 1);

    /* kid u1 back with another key: t1 (signed by the old one) is refused as a bad signature */
    ck_assert_uint_eq(gw_jwks_install(is, url_set(g_k2, "u2", g_att, "u1")), 0);
    EXPECT(t1, GW_AUTH_BAD_SIGNATURE);
    /* kid u2 now names another key: its cached token is not served */
    ck_assert_uint_eq(gw_jwks_install(is, url_set(g_att, "u2", NULL, NULL)), 2);
    ck_assert_ptr_null(gw_token_cache_get(c, k2, NOW));
    EXPECT(t2, GW_AUTH_BAD_SIGNATURE);

    gw_token_cache_free(c);
    gw_principal_unref(p1);
    gw_principal_unref(p2);
    gw_principal_unref(p2b);
    gw_jwks_install(is, NULL);
}
END_TEST

/* The epoch is the issuer's: a key leaving one issuer's URL set leaves the tokens of another
 * issuer (configured keys, which only a reload changes, and a reload empties the caches)
 * current. */
START_TEST(test_jwt_cache_withdrawal_is_per_issuer)
{
    struct gw_issuer *is = url_issuer();
    gw_jwks_install(is, url_set(g_k1, "u1", NULL, NULL));
    struct gw_principal *p = principal(valid_k1());
    ck_assert_uint_eq(gw_jwks_install(is, url_set(g_k2, "u2", NULL, NULL)), 1);
    ck_assert(gw_principal_key_current(p));
    gw_principal_unref(p);
    gw_jwks_install(is, NULL);
}
END_TEST

static Suite *jwt_suite(void)
{
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("jwt");
    tcase_add_unchecked_fixture(tc, setup_auth, teardown_auth);
    tcase_add_checked_fixture(tc, NULL, free_garbage);
    tcase_set_timeout(tc, 60);
#define LOOP(fn, table) tcase_add_loop_test(tc, fn, 0, (int)(sizeof table / sizeof *table))
    LOOP(test_jwt_header_cases, header_cases);
    LOOP(test_jwt_payload_cases, payload_cases);
    LOOP(test_jwt_issuer_cases, issuer_cases);
    LOOP(test_jwt_key_cases, key_cases);
    LOOP(test_jwt_time_cases, time_cases);
    LOOP(test_jwt_claim_cases, claim_cases);
    LOOP(test_jwt_alg_cases, alg_cases);
    tcase_add_test(tc, test_jwt_ps_eddsa_signature_lengths);
    tcase_add_test(tc, test_jwt_valid_token_verifies);
    tcase_add_test(tc, test_jwt_junk_in_each_segment_is_malformed);
    tcase_add_test(tc, test_jwt_padding_on_each_segment_is_malformed);
    tcase_add_test(tc, test_jwt_noncanonical_last_character_is_malformed);
    tcase_add_test(tc, test_jwt_missing_and_extra_segments_are_malformed);
    tcase_add_test(tc, test_jwt_alg_none_is_malformed);
    tcase_add_test(tc, test_jwt_hs256_maced_with_rsa_public_pem_refused);
    tcase_add_test(tc, test_jwt_signature_wrong_length_or_value);
    tcase_add_test(tc, test_jwt_modified_header_or_payload_under_old_signature);
    tcase_add_test(tc, test_jwt_kid_length_capped);
    tcase_add_test(tc, test_jwt_size_cap);
    tcase_add_test(tc, test_jwt_megabyte_header_is_malformed);
    tcase_add_test(tc, test_jwt_deep_json_is_malformed);
    tcase_add_test(tc, test_jwt_embedded_jwk_and_jku_ignored);
    tcase_add_test(tc, test_jwt_principal_fields);
    tcase_add_test(tc, test_jwt_scope_string_split_on_spaces);
    tcase_add_test(tc, test_jwt_scope_exact_match_only);
    tcase_add_test(tc, test_jwt_scp_array_and_string);
    tcase_add_test(tc, test_jwt_scp_array_element_is_one_scope);
    tcase_add_test(tc, test_jwt_custom_scope_claim);
    tcase_add_test(tc, test_jwt_reason_names);
    tcase_add_test(tc, test_jwt_principal_bound_to_its_certificate);
    tcase_add_test(tc, test_jwt_bearer_token_extraction);
    tcase_add_test(tc, test_jwt_bearer_missing_or_other_scheme);
    tcase_add_test(tc, test_jwt_bearer_malformed);
    tcase_add_test(tc, test_jwt_cache_put_get_until_expiry);
    tcase_add_test(tc, test_jwt_cache_clear);
    tcase_add_test(tc, test_jwt_cache_zero_entries_holds_nothing);
    tcase_add_test(tc, test_jwt_cache_bounded_evicts_earliest_expiry);
    tcase_add_test(tc, test_jwt_cache_drops_tokens_of_a_withdrawn_key);
    tcase_add_test(tc, test_jwt_cache_withdrawal_is_per_issuer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jwt_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
