/* validate: request checks against the OpenAPI model before anything is forwarded: the Version
 * header, the query parameters an op declares, and the request body (content type, size,
 * strict JSON, an object). What is forwarded upstream is rebuilt from what was validated here.
 *
 * Memory: messages are collected in a caller-owned struct gw_msgs (gw_msgs_free); a parsed body
 * is returned to the caller, who frees it with cJSON_Delete.
 * Threads: any.
 */
#ifndef GW_VALIDATE_H
#define GW_VALIDATE_H

#include <stddef.h>

#include <cJSON.h>

#include "msgs.h"
#include "reply.h"

struct gw_config;
struct gw_op;
struct gw_route;

/* Version header: 0 when accepted, else -1 and *kind is the reply to send. */
int gw_validate_version(const struct gw_config *cfg, const char *version, enum gw_reply_kind *kind);

/* Query parameters against the op's declaration. Appends one message per violation; returns
 * the number of violations (0: valid). */
size_t gw_validate_query(const struct gw_route *r, struct gw_msgs *out);

/* Body of an op: Content-Type (415), size (413), strict JSON object (400), then the op's schema
 * (422, every violation appended to msgs, see schema.h). content_type may be NULL. On success
 * returns 0 and *body is the validated object (NULL for ops without a body), owned by the
 * caller. On failure returns -1 with *kind set, and msg (400/413/415) or msgs (422) filled. */
int gw_validate_body(const struct gw_config *cfg, const struct gw_op *op, const char *content_type,
                     const char *data, size_t len, cJSON **body, struct gw_msgs *msgs,
                     enum gw_reply_kind *kind, char *msg, size_t msglen);

#endif
