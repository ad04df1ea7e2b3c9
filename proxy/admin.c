#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "config.h"

#define ADMIN_MAX_HEAD 8192
#define ADMIN_TIMEOUT_S 5

struct gw_admin {
    struct evhttp *http;
    struct gw_admin_ops ops;
};

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *type,
                       struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct gw_admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        evhttp_send_error(req, 503, "Service Unavailable");
        return;
    }
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evbuffer_add_printf(b, "only GET\n");
        reply_text(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", b);
    } else if (path && strcmp(path, "/healthz") == 0) {
        evbuffer_add_printf(b, "ok\n");
        reply_text(req, 200, "OK", "text/plain; charset=utf-8", b);
    } else if (path && strcmp(path, "/readyz") == 0) {
        char why[300] = "";
        if (a->ops.ready(a->ops.arg, why, sizeof why)) {
            evbuffer_add_printf(b, "ready\n");
            reply_text(req, 200, "OK", "text/plain; charset=utf-8", b);
        } else {
            evbuffer_add_printf(b, "not ready: %s\n", why);
            reply_text(req, 503, "Service Unavailable", "text/plain; charset=utf-8", b);
        }
    } else if (path && strcmp(path, "/metrics") == 0) {
        a->ops.metrics(a->ops.arg, b);
        reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
    } else {
        evbuffer_add_printf(b, "not found: /healthz /readyz /metrics\n");
        reply_text(req, 404, "Not Found", "text/plain; charset=utf-8", b);
    }
    evbuffer_free(b);
}

struct gw_admin *gw_admin_start(struct event_base *base, const struct gw_config *cfg,
                                const struct gw_admin_ops *ops, char *why, size_t whylen)
{
    struct gw_admin *a = calloc(1, sizeof *a);
    if (a == NULL || (a->http = evhttp_new(base)) == NULL) {
        free(a);
        snprintf(why, whylen, "admin: out of memory");
        return NULL;
    }
    a->ops = *ops;
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEAD);
    evhttp_set_max_body_size(a->http, 0);
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(a->http, on_request, a);
    if (evhttp_bind_socket(a->http, cfg->admin.address, (ev_uint16_t)cfg->admin.port) != 0) {
        snprintf(why, whylen, "admin: cannot listen on %s:%ld (in use, or not an address here)",
                 cfg->admin.address, cfg->admin.port);
        gw_admin_free(a);
        return NULL;
    }
    return a;
}

void gw_admin_free(struct gw_admin *a)
{
    if (a == NULL)
        return;
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
