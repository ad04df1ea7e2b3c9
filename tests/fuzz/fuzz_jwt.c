/* The token path on any bytes: the bearer header, the whole verification pipeline against
 * issuers of every algorithm family (HS256; RS256; PS256/384/512 on one RSA key; EdDSA), and
 * the JWKS loader, and claims with cnf and the certificate binding. First byte: which one.
 *
 * The PS and EdDSA public keys are fixed (below) so that the corpus can hold tokens they verify
 * (corpus/jwt/ps256, ps512, eddsa): those seeds take the fuzzer past the signature into the
 * claims. They are expired at the fixed `now`, and their private keys were thrown away after
 * signing them, so no input can pass. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "json.h"

#define NISSUERS 4

static struct gw_auth *auth;
static struct gw_cfg_issuer cfgs[NISSUERS];
static char *aud[] = {"ghl-gateway"};
static char *scope_claims[] = {"scope", "scp"};

/* RSA 2048 (PS256 kid p1, PS384 p3, PS512 p5) and Ed25519 (EdDSA kid d1): the corpus' keys */
static const char ps_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                             "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuOi0rVUSKuRibYzgMGJy\n"
                             "tCo2WfntNx9yIAaIQXCtsokuRosFIT445Xnta7t5wprzr1Do/snbeExojiGZvL9p\n"
                             "tRG9Hkszl+DOSGBo+XFP/Y9zSna8HfIsb3GBLwzz+sCgK20XHTyfBsCAd4QwLcWl\n"
                             "qwHXYfcgCtUHmSxO0Y8NZaHbgI5iSlg5Hpx6R4nhyAPcSUMgTN+z4KoiUM6OErmv\n"
                             "hymSxog5I0FSFphbGj5jSCdGqj1TgvQ/rHuc8jdEKujVbpYWo6b2SwwcU+tuLz1A\n"
                             "rugPp6KaoRQIZotNzzWcyR9GY0RqSz4vEtfXkjQz7BUVGXuYwTXA/GYyn4VVJ4La\n"
                             "8wIDAQAB\n"
                             "-----END PUBLIC KEY-----\n";
static const char ed_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                             "MCowBQYDK2VwAyEA18bwSL5wwsseqpPj8HxT0/f/raIgAh/+kce8zYcn4l8=\n"
                             "-----END PUBLIC KEY-----\n";

static void add_pem_key(struct gw_issuer *is, const char *pem, enum gw_alg alg, const char *kid)
{
    char why[200];
    if (gw_key_from_pem(pem, strlen(pem), alg, kid, &is->keys[is->nkeys++], why, sizeof why) != 0)
        abort();
}

static void init(void)
{
    auth = calloc(1, sizeof *auth);
    auth->issuers = calloc(NISSUERS, sizeof *auth->issuers);
    for (int i = 0; i < NISSUERS; i++)
        pthread_mutex_init(&auth->issuers[i].url_mu, NULL);
    auth->nissuers = NISSUERS;
    auth->max_token_bytes = 8192;
    const char *names[NISSUERS] = {"https://hs.fuzz", "https://rs.fuzz", "https://ps.fuzz",
                                   "https://ed.fuzz"};
    for (int i = 0; i < NISSUERS; i++) {
        cfgs[i].issuer = (char *)names[i];
        cfgs[i].audiences = aud;
        cfgs[i].naudiences = i > 0;
        cfgs[i].leeway_s = 60;
        cfgs[i].max_lifetime_s = 86400;
        cfgs[i].scope_claims = scope_claims;
        cfgs[i].nscope_claims = 2;
        cfgs[i].subject_claim = "sub";
        auth->issuers[i].cfg = &cfgs[i];
        auth->issuers[i].keys = calloc(3, sizeof(struct gw_key));
    }
    auth->issuers[0].nkeys = auth->issuers[1].nkeys = 1;
    char why[200];
    static const unsigned char secret[32] = "fuzzing-secret-of-32-bytes-long!";
    if (gw_key_from_secret(secret, 32, GW_ALG_HS256, NULL, &auth->issuers[0].keys[0], why,
                           sizeof why) != 0)
        abort();
    EVP_PKEY *k = EVP_RSA_gen(2048);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    char *pem;
    long n = BIO_get_mem_data(b, &pem);
    if (gw_key_from_pem(pem, (size_t)n, GW_ALG_RS256, "k1", &auth->issuers[1].keys[0], why,
                        sizeof why) != 0)
        abort();
    BIO_free(b);
    EVP_PKEY_free(k);
    add_pem_key(&auth->issuers[2], ps_pem, GW_ALG_PS256, "p1");
    add_pem_key(&auth->issuers[2], ps_pem, GW_ALG_PS384, "p3");
    add_pem_key(&auth->issuers[2], ps_pem, GW_ALG_PS512, "p5");
    add_pem_key(&auth->issuers[3], ed_pem, GW_ALG_EDDSA, "d1");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (auth == NULL)
        init();
    if (size < 1)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: {
        struct gw_principal *p = NULL;
        enum gw_auth_reason r = gw_jwt_verify(auth, s, n, 1700000000, &p);
        if ((r == GW_AUTH_OK) != (p != NULL))
            abort();
        /* nothing but a correctly signed, unexpired token can pass: the fuzzer holds no private
         * key, and the seeds that verify expired long before `now` */
        if (r == GW_AUTH_OK)
            abort();
        gw_principal_unref(p);
        break;
    }
    case 1: {
        char *z = malloc(n + 1);
        memcpy(z, s, n);
        z[n] = '\0';
        const char *tok;
        size_t len;
        if (gw_bearer_token(z, false, &tok, &len) == GW_AUTH_OK &&
            (len == 0 || tok < z || tok + len > z + n))
            abort();
        free(z);
        break;
    }
    case 3: {
        /* claims as explain reads them, with a cnf (RFC 8705) and the certificate binding
         * against a thumbprint in hex taken from the input's first 64 bytes */
        struct gw_json_error je;
        cJSON *claims = gw_json_parse(s, n, NULL, &je);
        struct gw_principal *p = NULL;
        if (claims && gw_principal_from_claims(auth, claims, &p) == GW_AUTH_OK) {
            char hex[65] = {0};
            memcpy(hex, s, n < 64 ? n : 64);
            (void)gw_principal_bound_to(p, hex);
            gw_principal_unref(p);
        }
        cJSON_Delete(claims);
        break;
    }
    default: {
        char why[300];
        struct gw_keyset *ks = gw_jwks_parse(s, n, why, sizeof why);
        gw_keyset_unref(ks);
        break;
    }
    }
    return 0;
}
