#include "tls.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "config.h"

static const unsigned char alpn_http11[] = "\x08http/1.1";

void gw_tls_error_string(char *buf, size_t len)
{
    unsigned long e, first = 0;
    while ((e = ERR_get_error()) != 0) {
        if (first == 0 && ERR_GET_LIB(e) != 0)
            first = e;
    }
    if (first)
        ERR_error_string_n(first, buf, len);
    else
        snprintf(buf, len, "unknown TLS error");
}

/* Only http/1.1 is spoken; a client that offers ALPN without it is refused (alert 120).
 * A client that offers no ALPN at all is served. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, alpn_http11, sizeof alpn_http11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *gw_tls_server_ctx(const struct gw_config *c, char *err, size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, c->tls.min_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls.cert) != 1) {
        gw_tls_error_string(why, sizeof why);
        snprintf(err, errlen, "tls.cert: %s: %s", c->tls.cert, why);
        goto bad;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->tls.key, SSL_FILETYPE_PEM) != 1) {
        gw_tls_error_string(why, sizeof why);
        snprintf(err, errlen, "tls.key: %s: %s", c->tls.key, why);
        goto bad;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "tls.key: %s does not match the certificate %s", c->tls.key,
                 c->tls.cert);
        goto bad;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ghl-gateway", 11);
    SSL_CTX_set_num_tickets(ctx, 1);
    if (c->tls.client_ca) {
        if (SSL_CTX_load_verify_locations(ctx, c->tls.client_ca, NULL) != 1) {
            gw_tls_error_string(why, sizeof why);
            snprintf(err, errlen, "tls.client_ca: %s: %s", c->tls.client_ca, why);
            goto bad;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->tls.client_ca);
        if (names == NULL) {
            snprintf(err, errlen, "tls.client_ca: %s holds no certificate", c->tls.client_ca);
            goto bad;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *gw_tls_upstream_ctx(const struct gw_config *c, char *err, size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* OpenSSL 3 reports a peer that closes without close_notify as an error. upstream.c accepts
     * only answers delimited by Content-Length or chunking, so a cut answer is still caught and
     * a missing close_notify loses nothing. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* No SSL_MODE_RELEASE_BUFFERS here: upstream connections are few (upstream.
     * max_idle_connections per worker) and busy, and releasing their buffers after every
     * record costs an allocation and a free per record; client connections release theirs. */
    int ok = c->upstream.ca_file ? SSL_CTX_load_verify_locations(ctx, c->upstream.ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        gw_tls_error_string(why, sizeof why);
        snprintf(err, errlen, "upstream.ca_file: %s: %s",
                 c->upstream.ca_file ? c->upstream.ca_file : "(system store)", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* upstream.c writes a request itself and, when it cannot finish, lets the bufferevent
     * retry the same bytes from the bufferevent's own buffer */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof alpn_http11 - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    return ctx;
}

int gw_tls_client_prepare(SSL *ssl, const char *host)
{
    unsigned char ip[sizeof(struct in6_addr)];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 ? 0 : -1;
    if (SSL_set_tlsext_host_name(ssl, host) != 1)
        return -1;
    return SSL_set1_host(ssl, host) == 1 ? 0 : -1;
}

/* Seconds from now to a certificate's notAfter (ASN1_TIME_diff: NULL is the current time). */
static int until_not_after(const X509 *x, long long *seconds)
{
    int days, secs;
    if (x == NULL || ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) != 1)
        return -1;
    *seconds = (long long)days * 86400 + secs;
    return 0;
}

static void keep_earliest(const X509 *x, long long *min, bool *any)
{
    long long s;
    if (until_not_after(x, &s) == 0 && (!*any || s < *min)) {
        *min = s;
        *any = true;
    }
}

int gw_tls_expiry(SSL_CTX *ctx, enum gw_tls_certs which, long long *seconds)
{
    long long min = 0;
    bool any = false;
    if (which == GW_TLS_SERVING) {
        /* an intermediate that expires first breaks the chain as surely as the leaf */
        keep_earliest(SSL_CTX_get0_certificate(ctx), &min, &any);
        STACK_OF(X509) *chain = NULL;
        if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && chain)
            for (int i = 0; i < sk_X509_num(chain); i++)
                keep_earliest(sk_X509_value(chain, i), &min, &any);
    } else {
        /* the store is shared with the workers' verifications: read it under its lock */
        X509_STORE *st = SSL_CTX_get_cert_store(ctx);
        if (st == NULL || X509_STORE_lock(st) != 1)
            return -1;
        STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(st);
        for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) /* CRLs give NULL: skipped */
            keep_earliest(X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i)), &min, &any);
        X509_STORE_unlock(st);
    }
    if (!any)
        return -1;
    *seconds = min;
    return 0;
}
