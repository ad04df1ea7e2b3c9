/* tls: the SSL_CTXs of the two sides, built from the config.
 *
 * Server side: certificate chain and key, minimum version, ALPN http/1.1 only, no
 * renegotiation, session id context (needed for resumption with mTLS), and with tls.client_ca
 * a required, verified client certificate.
 * Upstream side: TLS 1.2+, peer verification against upstream.ca_file or the system store,
 * ALPN http/1.1; the hostname check and SNI are set per connection (gw_tls_client_prepare).
 *
 * The certificates' expiry (gw_tls_expiry) is read from a built context, not from the files:
 * what a scrape reports is what the snapshot serves and verifies with.
 *
 * Memory: the caller owns the returned SSL_CTX (SSL_CTX_free). An SSL_CTX is not changed
 * after it is built, so workers share it. Threads: build on any thread; gw_tls_expiry from
 * any thread while the workers use the context.
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct gw_config;

SSL_CTX *gw_tls_server_ctx(const struct gw_config *c, char *err, size_t errlen);
SSL_CTX *gw_tls_upstream_ctx(const struct gw_config *c, char *err, size_t errlen);
/* Sets SNI (for names) and the certificate name or IP check on an upstream SSL. */
int gw_tls_client_prepare(SSL *ssl, const char *host);

/* Which certificates of a context gw_tls_expiry looks at: the serving certificate and its chain
 * (a server context), or the trusted certificates of its verify store (tls.client_ca in a
 * server context, upstream.ca_file in an upstream one). */
enum gw_tls_certs { GW_TLS_SERVING, GW_TLS_TRUSTED };
/* Seconds from now to the earliest notAfter among those certificates (negative once one has
 * expired) in *seconds. Returns 0, or -1 when the context holds none of them. */
int gw_tls_expiry(SSL_CTX *ctx, enum gw_tls_certs which, long long *seconds);

/* The first OpenSSL error on this thread's queue as text (and clears the queue). */
void gw_tls_error_string(char *buf, size_t len);

#endif
