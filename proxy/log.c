#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "json.h"

#define MAX_LINE 8192

int64_t gw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double gw_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void gw_log_iso8601(int64_t ms, char *buf, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", base, (int)(ms % 1000));
}

static int open_append(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

struct gw_log *gw_log_open(const char *path)
{
    struct gw_log *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    int fd = STDERR_FILENO;
    if (path) {
        l->path = strdup(path);
        fd = l->path ? open_append(path) : -1;
        if (fd < 0) {
            int e = errno;
            free(l->path);
            free(l);
            errno = e;
            return NULL;
        }
    }
    l->fd = fd;
    return l;
}

int gw_log_reopen(struct gw_log *l)
{
    if (l->path == NULL)
        return 0;
    int fd = open_append(l->path);
    if (fd < 0)
        return -1;
    int rc = dup3(fd, l->fd, O_CLOEXEC);
    close(fd);
    return rc < 0 ? -1 : 0;
}

void gw_log_close(struct gw_log *l)
{
    if (l == NULL)
        return;
    if (l->path && l->fd >= 0)
        close(l->fd);
    free(l->path);
    free(l);
}

static void add_str(struct evbuffer *b, const char *name, const char *v)
{
    evbuffer_add_printf(b, ",\"%s\":", name);
    if (v)
        gw_json_append_string(b, v);
    else
        evbuffer_add(b, "null", 4);
}

void gw_log_access(struct gw_log *l, const struct gw_access *a)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL)
        return;
    char ts[40];
    gw_log_iso8601(a->ts_ms, ts, sizeof ts);
    evbuffer_add_printf(b, "{\"ts\":\"%s\"", ts);
    add_str(b, "request_id", a->request_id);
    add_str(b, "ip", a->ip);
    add_str(b, "method", a->method);
    add_str(b, "path", a->path);
    add_str(b, "op", a->op);
    evbuffer_add_printf(b, ",\"status\":%d,\"duration_ms\":%.3f", a->status, a->duration_ms);
    add_str(b, "sub", a->sub);
    add_str(b, "policy", a->policy);
    add_str(b, "auth_failure", a->auth_failure);
    if (a->upstream_status > 0)
        evbuffer_add_printf(b, ",\"upstream_status\":%d", a->upstream_status);
    else
        evbuffer_add_printf(b, ",\"upstream_status\":null");
    if (a->upstream_ms >= 0)
        evbuffer_add_printf(b, ",\"upstream_ms\":%.3f", a->upstream_ms);
    else
        evbuffer_add_printf(b, ",\"upstream_ms\":null");
    evbuffer_add_printf(b, ",\"bytes_in\":%llu,\"bytes_out\":%llu}\n",
                        (unsigned long long)a->bytes_in, (unsigned long long)a->bytes_out);
    size_t n = evbuffer_get_length(b);
    if (n <= MAX_LINE) {
        const char *p = (const char *)evbuffer_pullup(b, -1);
        ssize_t w = write(l->fd, p, n);
        (void)w; /* nowhere better to report a failing log */
    }
    evbuffer_free(b);
}

static void vlog(const char *level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void vlog(const char *level, const char *fmt, va_list ap)
{
    char msg[1024], ts[40];
    vsnprintf(msg, sizeof msg, fmt, ap);
    gw_log_iso8601(gw_now_ms(), ts, sizeof ts);
    char line[1200];
    int n = snprintf(line, sizeof line, "ghl-gateway: %s %s: %s\n", ts, level, msg);
    if (n > 0) {
        ssize_t w =
            write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
    }
}

void gw_log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("error", fmt, ap);
    va_end(ap);
}

void gw_log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("info", fmt, ap);
    va_end(ap);
}
