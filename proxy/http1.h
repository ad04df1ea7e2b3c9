/* http1: the strict HTTP/1.1 request-head reader. Pure: bytes in, a verdict out; conn.c feeds
 * it from the TLS connection, the tests and the fuzzer feed it directly.
 *
 * Refused (with the reply kind to send): NUL, bare CR or LF, obs-fold, header names outside
 * the token set, control characters in values, request lines that are not exactly
 * "METHOD SP origin-form SP HTTP/1.x", Transfer-Encoding, several Content-Length or Host, no
 * Host on HTTP/1.1, a body on HEAD or TRACE, Expect other than 100-continue, heads past the
 * cap (431) and declared bodies past the cap (413).
 *
 * Memory: gw_http1_parse splits the caller's buffer in place; the strings in the head point
 * into it. Threads: any.
 */
#ifndef GW_HTTP1_H
#define GW_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reply.h"

#define GW_MAX_HEADERS 100

struct gw_header {
    const char *name, *value;
};

struct gw_http1_head {
    const char *method; /* NULL until the request line was read */
    const char *target;
    bool http10;
    struct gw_header hdr[GW_MAX_HEADERS];
    size_t nhdr;
    uint64_t content_length;
    bool expect_continue;
    bool wants_close; /* Connection: close, or HTTP/1.0 without keep-alive */
};

struct gw_http1_error {
    enum gw_reply_kind kind; /* GW_R_BAD_FRAMING, GW_R_HEADERS_TOO_LARGE or GW_R_TOO_LARGE */
    const char *why;         /* a static string; NULL for the kinds with a fixed message */
};

/* Looks for the end of a head (CRLFCRLF) in h[0..len), checking bytes from *scanned on (the
 * count is kept across calls as more bytes arrive). Returns the head's length, 0 when more
 * bytes are needed, or -1 with *err set. cap: limits.max_header_bytes. */
long gw_http1_scan(const unsigned char *h, size_t len, size_t *scanned, size_t cap,
                   struct gw_http1_error *err);

/* Parses a complete head of n bytes (as found by gw_http1_scan) in place; h[n] must be
 * writable. Returns 0, or -1 with *err set (out keeps what was read, for messages). */
int gw_http1_parse(char *h, size_t n, uint64_t max_body, struct gw_http1_head *out,
                   struct gw_http1_error *err);

/* The single value of a header (case-insensitive), or NULL when absent or repeated
 * (*repeated tells which). */
const char *gw_http1_header(const struct gw_header *hdr, size_t n, const char *name,
                            bool *repeated);

#endif
