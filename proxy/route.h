/* route: request target -> op, path parameters and decoded query, with the strict target rules
 * of SPEC §3 (origin-form only; no '%', "..", ".", "//" or fragment in the path; query
 * percent-escapes well formed and decoding to UTF-8 without control characters).
 *
 * Memory: gw_route_match fills a caller-owned struct; strings in it live until gw_route_free.
 * Threads: any; reads only the immutable OpenAPI model.
 */
#ifndef GW_ROUTE_H
#define GW_ROUTE_H

#include <stddef.h>

#include "openapi.h"

#define GW_ROUTE_MAX_PATH_PARAMS 8
#define GW_ROUTE_MAX_QUERY 64
#define GW_ROUTE_MAX_SEGMENTS 16

enum gw_route_result {
    GW_ROUTE_OK = 0,
    GW_ROUTE_BAD_TARGET, /* 400: why says what is wrong */
    GW_ROUTE_NOT_FOUND,  /* 404: no op has this method and path */
};

struct gw_route {
    const struct gw_op *op;
    const char *pname[GW_ROUTE_MAX_PATH_PARAMS]; /* borrowed from the model */
    const char *pval[GW_ROUTE_MAX_PATH_PARAMS];
    size_t npath;
    const char *qname[GW_ROUTE_MAX_QUERY]; /* decoded, in the order received */
    const char *qval[GW_ROUTE_MAX_QUERY];
    size_t nq;
    char *path;          /* the path as received (no query), for messages */
    char *upstream_path; /* canonical path for the upstream, from the op's template */
    char *mem;           /* owns the decoded strings */
};

/* Matches method + target (as on the request line). Fills r in every case (r->path is set
 * for 404 messages when the target was well formed). Call gw_route_free(r) afterwards. */
enum gw_route_result gw_route_match(const struct gw_openapi *m, const char *method,
                                    const char *target, struct gw_route *r, char *why,
                                    size_t whylen);
void gw_route_free(struct gw_route *r);

/* The query as it goes upstream: name=value pairs in received order, everything but
 * unreserved characters percent-encoded. Returns a malloc'd string ("" when no query). */
char *gw_route_query_string(const struct gw_route *r);

/* Value of the first query parameter named name, or NULL. */
const char *gw_route_query(const struct gw_route *r, const char *name);

#endif
