/* Unit tests of tls.c's certificate expiry (gw_tls_expiry): the earliest notAfter of a
 * context's serving certificate and chain, or of its trusted certificates, read from the built
 * context; certificates made here in memory with known validity. */
#include <check.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "tls.h"

/* A self-signed EC certificate valid from an hour ago until now + seconds. */
static X509 *cert_until(EVP_PKEY *key, long seconds, const char *cn)
{
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(X509_set_version(x, 2), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), seconds));
    ck_assert_int_eq(X509_set_pubkey(x, key), 1);
    ck_assert_int_gt(X509_sign(x, key, EVP_sha256()), 0);
    return x;
}

static EVP_PKEY *ec_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(k);
    return k;
}

/* within a few seconds of the wanted value: the test's own clock moves on */
#define ck_assert_about(got, want)                                                                 \
    ck_assert_msg((got) <= (want) && (got) >= (want)-5, "%lld, expected about %lld",               \
                  (long long)(got), (long long)(want))

START_TEST(test_tls_expiry_serving_is_the_earliest_of_leaf_and_chain)
{
    EVP_PKEY *k = ec_key();
    X509 *leaf = cert_until(k, 90 * 86400L, "leaf"), *inter = cert_until(k, 40 * 86400L, "mid");
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    long long s = 0;
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_SERVING, &s), -1); /* none yet */
    ck_assert_int_eq(SSL_CTX_use_certificate(ctx, leaf), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, k), 1);
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_SERVING, &s), 0);
    ck_assert_about(s, 90 * 86400LL);
    ck_assert_int_eq(SSL_CTX_add1_chain_cert(ctx, inter), 1);
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_SERVING, &s), 0);
    ck_assert_about(s, 40 * 86400LL);
    /* the serving set says nothing of the trusted one, which is empty here */
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_TRUSTED, &s), -1);
    SSL_CTX_free(ctx);
    X509_free(leaf);
    X509_free(inter);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(test_tls_expiry_trusted_is_the_earliest_and_negative_once_expired)
{
    EVP_PKEY *k = ec_key();
    X509 *a = cert_until(k, 400 * 86400L, "ca-a"), *b = cert_until(k, 3 * 86400L, "ca-b");
    X509 *old = cert_until(k, -120, "ca-old");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    long long s = 0;
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_TRUSTED, &s), -1);
    ck_assert_int_eq(X509_STORE_add_cert(st, a), 1);
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_TRUSTED, &s), 0);
    ck_assert_about(s, 400 * 86400LL);
    ck_assert_int_eq(X509_STORE_add_cert(st, b), 1);
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_TRUSTED, &s), 0);
    ck_assert_about(s, 3 * 86400LL);
    ck_assert_int_eq(X509_STORE_add_cert(st, old), 1);
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_TRUSTED, &s), 0);
    ck_assert_about(s, -120LL);
    ck_assert_int_eq(gw_tls_expiry(ctx, GW_TLS_SERVING, &s), -1); /* a client has none */
    SSL_CTX_free(ctx);
    X509_free(a);
    X509_free(b);
    X509_free(old);
    EVP_PKEY_free(k);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tls");
    TCase *t = tcase_create("tls");
    tcase_add_test(t, test_tls_expiry_serving_is_the_earliest_of_leaf_and_chain);
    tcase_add_test(t, test_tls_expiry_trusted_is_the_earliest_and_negative_once_expired);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
