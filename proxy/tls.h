/* tls: the SSL_CTXs of the two sides, built from the config.
 *
 * Server side: certificate chain and key, minimum version, ALPN http/1.1 only, no
 * renegotiation, session id context (needed for resumption with mTLS), and with tls.client_ca
 * a required, verified client certificate.
 * Upstream side: TLS 1.2+, peer verification against upstream.ca_file or the system store,
 * ALPN http/1.1; the hostname check and SNI are set per connection (gw_tls_client_prepare).
 *
 * Memory: the caller owns the returned SSL_CTX (SSL_CTX_free). An SSL_CTX is not changed
 * after it is built, so workers share it. Threads: build on any thread.
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

/* The first OpenSSL error on this thread's queue as text (and clears the queue). */
void gw_tls_error_string(char *buf, size_t len);

#endif
