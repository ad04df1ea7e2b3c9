/* admin: the plain-HTTP admin listener (SPEC §10) on admin.address:admin.port, served by the
 * main thread's event loop: GET /healthz (200 while the process serves), GET /readyz (200, or
 * 503 with the reason: configuration, keys and policies loaded and the audit log writable),
 * GET /metrics (Prometheus text 0.0.4). Nothing else; requests are small and time-limited.
 *
 * Memory: the admin listener is freed with gw_admin_free. Threads: the main thread only; the
 * callbacks read what the workers and the audit writer publish.
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evbuffer;
struct gw_config;

struct gw_admin_ops {
    bool (*ready)(void *arg, char *why, size_t whylen);
    void (*metrics)(void *arg, struct evbuffer *out);
    void *arg;
};

struct gw_admin;

/* Listens on cfg's admin address and port. Returns NULL with why filled. */
struct gw_admin *gw_admin_start(struct event_base *base, const struct gw_config *cfg,
                                const struct gw_admin_ops *ops, char *why, size_t whylen);
void gw_admin_free(struct gw_admin *a);

#endif
