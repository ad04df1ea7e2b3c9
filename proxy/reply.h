/* reply: the one table of the gateway's own responses (SPEC §8), in the upstream's JSON shape,
 * and the one table of HTTP reason phrases.
 *
 * Owns: status, body shape and whether the connection closes after, per kind; the reason
 * phrase of every status the gateway sends (its own, and the upstream's passed back).
 * Memory: bodies are appended to a caller-owned evbuffer. Threads: any (the table is const).
 */
#ifndef GW_REPLY_H
#define GW_REPLY_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

enum gw_reply_kind {
    GW_R_UNAUTHORIZED,      /* 401 missing or invalid token */
    GW_R_SCOPE,             /* 401 scope missing */
    GW_R_VERSION_MISSING,   /* 400 */
    GW_R_VERSION_INVALID,   /* 400 */
    GW_R_BAD_REQUEST,       /* 400 malformed request or JSON: message given */
    GW_R_BAD_FRAMING,       /* 400 ambiguous framing: message given; connection closed */
    GW_R_FORBIDDEN,         /* 403 policy denial: message given */
    GW_R_NOT_FOUND,         /* 404 "Cannot METHOD PATH": message given */
    GW_R_TOO_LARGE,         /* 413; connection closed */
    GW_R_HEADERS_TOO_LARGE, /* 431; connection closed */
    GW_R_UNSUPPORTED_MEDIA, /* 415: message given */
    GW_R_UNPROCESSABLE,     /* 422: a list of messages */
    GW_R_RATE_LIMITED,      /* 429 */
    GW_R_BAD_GATEWAY,       /* 502: message given */
    GW_R_UNAVAILABLE,       /* 503: message given */
    GW_R_TIMEOUT,           /* 504 */
    GW_R_KINDS
};

/* The reason phrase of an HTTP status (a generic one for a status not in the table). */
const char *gw_status_phrase(int code);

int gw_reply_status(enum gw_reply_kind k);
const char *gw_reply_reason(enum gw_reply_kind k);
/* True when the connection must be closed after this reply (framing, 413, 431). */
bool gw_reply_closes(enum gw_reply_kind k);

/* Appends the JSON body of kind k. msg fills in "<what>" for the kinds that take one (ignored
 * by the others). msgs/nmsgs: the 422 list. Returns 0, or -1 on allocation failure. */
int gw_reply_body(struct evbuffer *out, enum gw_reply_kind k, const char *msg,
                  const char *const *msgs, size_t nmsgs);

#endif
