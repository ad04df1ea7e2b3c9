/* The token path on any bytes: the bearer header, the whole verification pipeline against an
 * HS256 and an RS256 issuer, and the JWKS loader. First byte: which one. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"

static struct gw_auth *auth;
static struct gw_cfg_issuer cfgs[2];
static char *aud[] = {"ghl-gateway"};
static char *scope_claims[] = {"scope", "scp"};

static void init(void)
{
    auth = calloc(1, sizeof *auth);
    auth->issuers = calloc(2, sizeof *auth->issuers);
    for (int i = 0; i < 2; i++)
        pthread_mutex_init(&auth->issuers[i].url_mu, NULL);
    auth->nissuers = 2;
    auth->max_token_bytes = 8192;
    const char *names[2] = {"https://hs.fuzz", "https://rs.fuzz"};
    for (int i = 0; i < 2; i++) {
        cfgs[i].issuer = (char *)names[i];
        cfgs[i].audiences = aud;
        cfgs[i].naudiences = i;
        cfgs[i].leeway_s = 60;
        cfgs[i].max_lifetime_s = 86400;
        cfgs[i].scope_claims = scope_claims;
        cfgs[i].nscope_claims = 2;
        cfgs[i].subject_claim = "sub";
        auth->issuers[i].cfg = &cfgs[i];
        auth->issuers[i].keys = calloc(1, sizeof(struct gw_key));
        auth->issuers[i].nkeys = 1;
    }
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (auth == NULL)
        init();
    if (size < 1)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        struct gw_principal *p = NULL;
        enum gw_auth_reason r = gw_jwt_verify(auth, s, n, 1700000000, &p);
        if ((r == GW_AUTH_OK) != (p != NULL))
            abort();
        /* nothing but a correctly signed token can pass, and the fuzzer holds no key */
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
    default: {
        char why[300];
        struct gw_keyset *ks = gw_jwks_parse(s, n, why, sizeof why);
        gw_keyset_unref(ks);
        break;
    }
    }
    return 0;
}
