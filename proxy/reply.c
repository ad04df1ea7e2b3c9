#include "reply.h"

#include <stdio.h>

#include <event2/buffer.h>

#include "json.h"

enum shape {
    FIXED,          /* {"statusCode","message":<fixed>,"error"} */
    FIXED_NO_ERROR, /* the upstream's own 401/400 shapes without "error" */
    GIVEN,          /* message filled in */
    LIST,           /* message is an array */
};

/* The reason phrases of the statuses the gateway sends, its own and those passed back from the
 * upstream: the status line and the "error" member of its own bodies. */
static const struct {
    int code;
    const char *phrase;
} phrases[] = {
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {409, "Conflict"},
    {413, "Payload Too Large"},
    {415, "Unsupported Media Type"},
    {422, "Unprocessable Entity"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

const char *gw_status_phrase(int code)
{
    for (size_t i = 0; i < sizeof phrases / sizeof *phrases; i++)
        if (phrases[i].code == code)
            return phrases[i].phrase;
    return code < 300 ? "OK" : code < 500 ? "Client Error" : "Server Error";
}

static const struct {
    int status;
    enum shape shape;
    const char *message; /* FIXED and FIXED_NO_ERROR */
    bool closes;
} table[GW_R_KINDS] = {
    [GW_R_UNAUTHORIZED] = {401, FIXED, "Invalid token: access token is invalid"},
    [GW_R_SCOPE] = {401, FIXED_NO_ERROR, "The token is not authorized for this scope."},
    [GW_R_VERSION_MISSING] = {400, FIXED_NO_ERROR, "version header was not found."},
    [GW_R_VERSION_INVALID] = {400, FIXED_NO_ERROR, "version header is invalid"},
    [GW_R_BAD_REQUEST] = {400, GIVEN},
    [GW_R_BAD_FRAMING] = {400, GIVEN, NULL, true},
    [GW_R_FORBIDDEN] = {403, GIVEN},
    [GW_R_NOT_FOUND] = {404, GIVEN},
    [GW_R_TOO_LARGE] = {413, FIXED, "request entity too large", true},
    [GW_R_HEADERS_TOO_LARGE] = {431, FIXED, "request header fields too large", true},
    [GW_R_UNSUPPORTED_MEDIA] = {415, GIVEN},
    [GW_R_UNPROCESSABLE] = {422, LIST},
    [GW_R_RATE_LIMITED] = {429, FIXED, "Too many requests"},
    [GW_R_BAD_GATEWAY] = {502, GIVEN},
    [GW_R_UNAVAILABLE] = {503, GIVEN},
    [GW_R_TIMEOUT] = {504, FIXED, "upstream timed out"},
};

int gw_reply_status(enum gw_reply_kind k)
{
    return table[k].status;
}

const char *gw_reply_reason(enum gw_reply_kind k)
{
    return gw_status_phrase(table[k].status);
}

bool gw_reply_closes(enum gw_reply_kind k)
{
    return table[k].closes;
}

int gw_reply_body(struct evbuffer *out, enum gw_reply_kind k, const char *msg,
                  const char *const *msgs, size_t nmsgs)
{
    int rc = evbuffer_add_printf(out, "{\"statusCode\":%d,\"message\":", table[k].status) < 0;
    switch (table[k].shape) {
    case FIXED:
    case FIXED_NO_ERROR:
        rc |= gw_json_append_string(out, table[k].message);
        break;
    case GIVEN:
        rc |= gw_json_append_string(out, msg ? msg : gw_reply_reason(k));
        break;
    case LIST:
        rc |= evbuffer_add(out, "[", 1);
        for (size_t i = 0; i < nmsgs; i++) {
            if (i)
                rc |= evbuffer_add(out, ",", 1);
            rc |= gw_json_append_string(out, msgs[i]);
        }
        rc |= evbuffer_add(out, "]", 1);
        break;
    }
    if (table[k].shape != FIXED_NO_ERROR) {
        rc |= evbuffer_add(out, ",\"error\":", 9);
        rc |= gw_json_append_string(out, gw_reply_reason(k));
    }
    rc |= evbuffer_add(out, "}", 1);
    return rc ? -1 : 0;
}
