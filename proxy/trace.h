/* trace: W3C Trace Context level 1 `traceparent` (SPEC §7): the caller's read strictly, and
 * the gateway's own made from it, or a new trace.
 *
 * Valid is exactly 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags> (55 characters,
 * lower-case hex, neither id all zeros). Version 00 only: ff is forbidden by the W3C, and SPEC
 * §7 takes no later version either (W3C level 1 would have a later one read as 00; the gateway
 * starts a new trace instead). A header sent twice is no header (the caller passes NULL).
 * The gateway's traceparent keeps a valid caller's trace id and sampled flag (the other flag
 * bits, undefined in level 1, are sent as zeros as level 1 says) with a new span id of its own
 * as the parent id; otherwise it is a new trace with flags 00 (the gateway records no spans:
 * sampling is the caller's business). `tracestate` is never read or forwarded.
 *
 * Pure: no I/O, no allocation, no randomness of its own: the caller hands in random bytes
 * (request.c draws them from the worker's pool of request ids). Threads: any.
 */
#ifndef GW_TRACE_H
#define GW_TRACE_H

#include <stdbool.h>

#define GW_TRACEPARENT_LEN 55
#define GW_TRACE_ID_LEN 32
/* random bytes gw_trace_make takes: a span id (8), and for a new trace its trace id (16) too */
#define GW_TRACE_SPAN_RANDOM 8
#define GW_TRACE_NEW_RANDOM 24

/* One request's trace context, as the gateway sends it upstream and back to the caller. */
struct gw_trace {
    char traceparent[GW_TRACEPARENT_LEN + 1];
    char trace_id[GW_TRACE_ID_LEN + 1]; /* the access log's and audit records' trace_id */
};

/* Whether value (NUL-terminated, or NULL) is a valid version 00 traceparent. Reads no byte
 * past the first that makes it invalid. */
bool gw_trace_valid(const char *value);

/* Fills t. caller: a traceparent gw_trace_valid accepted (continued), or NULL (a new trace).
 * rnd: GW_TRACE_SPAN_RANDOM random bytes for a continued trace, GW_TRACE_NEW_RANDOM for a new
 * one, or NULL when no randomness could be had. An id is never all zeros: random bytes that
 * are (or none at all) make the id ...0001, valid but shared by every such request. */
void gw_trace_make(struct gw_trace *t, const char *caller, const unsigned char *rnd);

#endif
