/* discovery: OpenID Connect Discovery 1.0 documents (SPEC §4.2): where an issuer's document
 * is, and what the gateway takes from it (the jwks_uri), once the document proves it belongs
 * to the configured issuer. Fetching is jwks.c's; this module only reads text.
 *
 * Memory: gw_discovery_parse returns a string the caller frees (free).
 * Threads: any thread; no shared state.
 */
#ifndef GW_DISCOVERY_H
#define GW_DISCOVERY_H

#include <stddef.h>

/* The longest jwks_uri taken from a document (the fetch's request line must hold it). */
#define GW_DISCOVERY_MAX_URI 900

/* <issuer>/.well-known/openid-configuration into out, one trailing '/' of the issuer dropped
 * first (Discovery 1.0 §4). Returns 0, or -1 with why: an issuer with a query or a fragment
 * (it names no document), or one too long for out. */
int gw_discovery_url(const char *issuer, char *out, size_t cap, char *why, size_t whylen);

/* The jwks_uri of the discovery document doc[0..len) (need not be NUL-terminated), which must
 * belong to issuer: one JSON object, read strictly (no duplicate member at any depth, no NUL,
 * at most 1 MiB), whose "issuer" is a string equal to issuer byte for byte and whose
 * "jwks_uri" is a string: an https URL with a host, no user information and no fragment, of
 * at most GW_DISCOVERY_MAX_URI printable ASCII bytes. Returns it (malloc'd), or NULL with why,
 * which quotes at most a short excerpt of the document, its unprintable bytes replaced. */
char *gw_discovery_parse(const char *doc, size_t len, const char *issuer, char *why, size_t whylen);

#endif
