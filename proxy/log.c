#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <limits.h>
#include <sys/stat.h>

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

/* n as exactly `width` decimal digits (zero-padded) at p. */
static void digits(char *p, long n, int width)
{
    for (int i = width - 1; i >= 0; i--, n /= 10)
        p[i] = (char)('0' + n % 10);
}

void gw_log_iso8601(int64_t ms, char *buf, size_t len)
{
    /* the date and time of the second are formatted once per second and thread */
    static _Thread_local int64_t last_s = INT64_MIN;
    static _Thread_local char base[20]; /* 2026-11-26T19:32:11 */
    int64_t s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    if (s != last_s) {
        time_t t = (time_t)s;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
            snprintf(buf, len, "%s", "0000-00-00T00:00:00.000Z");
            return;
        }
        digits(base, tm.tm_year + 1900, 4);
        base[4] = '-';
        digits(base + 5, tm.tm_mon + 1, 2);
        base[7] = '-';
        digits(base + 8, tm.tm_mday, 2);
        base[10] = 'T';
        digits(base + 11, tm.tm_hour, 2);
        base[13] = ':';
        digits(base + 14, tm.tm_min, 2);
        base[16] = ':';
        digits(base + 17, tm.tm_sec, 2);
        last_s = s;
    }
    char out[25];
    memcpy(out, base, 19);
    out[19] = '.';
    digits(out + 20, (long)(ms - s * 1000), 3);
    out[23] = 'Z';
    out[24] = '\0';
    snprintf(buf, len, "%s", out);
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
    struct stat st;
    l->pipe = fstat(fd, &st) != 0 || !S_ISREG(st.st_mode);
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

static void add_lit(struct evbuffer *b, const char *lit)
{
    evbuffer_add(b, lit, strlen(lit));
}

/* ,"name": and the value as a JSON string, or null. Most values are plain printable ASCII
 * (ids, addresses, methods, paths): those go out with their name in one evbuffer_add, past
 * the escaper (which would write them unchanged); any other value takes the escaper. */
static void add_str(struct evbuffer *b, const char *name, size_t namelen, const char *v)
{
    char tmp[160];
    if (v && namelen + 2 <= sizeof tmp) {
        memcpy(tmp, name, namelen);
        tmp[namelen] = '"';
        char *o = tmp + namelen + 1;
        size_t room = sizeof tmp - namelen - 2, i = 0;
        for (; i < room && v[i] != '\0'; i++) {
            unsigned char c = (unsigned char)v[i];
            if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
                break;
            o[i] = (char)c;
        }
        if (v[i] == '\0') {
            o[i] = '"';
            evbuffer_add(b, tmp, namelen + 2 + i);
            return;
        }
    }
    evbuffer_add(b, name, namelen);
    if (v)
        gw_json_append_string(b, v);
    else
        evbuffer_add(b, "null", 4);
}
#define ADD_STR(b, name, v) add_str((b), "" name, sizeof(name) - 1, (v))

/* Numbers are written from their last digit back, then their member's name before them,
 * and the whole added at once: names are at most NAME_MAX_LEN bytes. */
#define NAME_MAX_LEN 24

/* ,"name": and an integer */
static void add_int(struct evbuffer *b, const char *name, size_t namelen, unsigned long long v)
{
    char num[NAME_MAX_LEN + 24];
    size_t i = sizeof num;
    do {
        num[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    i -= namelen;
    memcpy(num + i, name, namelen);
    evbuffer_add(b, num + i, sizeof num - i);
}
#define ADD_INT(b, name, v)                                                                        \
    do {                                                                                           \
        _Static_assert(sizeof(name) - 1 <= NAME_MAX_LEN, "a member name too long");                \
        add_int((b), "" name, sizeof(name) - 1, (v));                                              \
    } while (0)

/* ,"name": and milliseconds with three decimals (microseconds), or null when negative */
static void add_ms(struct evbuffer *b, const char *name, size_t namelen, double ms)
{
    if (!(ms >= 0) || ms > 1e12) {
        evbuffer_add(b, name, namelen);
        evbuffer_add(b, ms >= 0 ? "1e12" : "null", 4);
        return;
    }
    char num[NAME_MAX_LEN + 32];
    size_t i = sizeof num;
    unsigned long long us = (unsigned long long)(ms * 1000.0 + 0.5);
    for (int k = 0; k < 3; k++, us /= 10)
        num[--i] = (char)('0' + us % 10);
    num[--i] = '.';
    do {
        num[--i] = (char)('0' + us % 10);
        us /= 10;
    } while (us);
    i -= namelen;
    memcpy(num + i, name, namelen);
    evbuffer_add(b, num + i, sizeof num - i);
}
#define ADD_MS(b, name, v)                                                                         \
    do {                                                                                           \
        _Static_assert(sizeof(name) - 1 <= NAME_MAX_LEN, "a member name too long");                \
        add_ms((b), "" name, sizeof(name) - 1, (v));                                               \
    } while (0)

void gw_log_access_format(struct evbuffer *b, const struct gw_access *a)
{
    size_t start = evbuffer_get_length(b);
    char ts[40] = "{\"ts\":\"";
    gw_log_iso8601(a->ts_ms, ts + 7, sizeof ts - 8);
    size_t tn = 7 + strlen(ts + 7);
    ts[tn++] = '"';
    evbuffer_add(b, ts, tn);
    ADD_STR(b, ",\"request_id\":", a->request_id);
    ADD_STR(b, ",\"trace_id\":", a->trace_id);
    ADD_STR(b, ",\"ip\":", a->ip);
    ADD_STR(b, ",\"method\":", a->method);
    ADD_STR(b, ",\"path\":", a->path);
    ADD_STR(b, ",\"op\":", a->op);
    ADD_INT(b, ",\"status\":", (unsigned long long)(a->status > 0 ? a->status : 0));
    ADD_MS(b, ",\"duration_ms\":", a->duration_ms);
    ADD_STR(b, ",\"sub\":", a->sub);
    ADD_STR(b, ",\"policy\":", a->policy);
    ADD_STR(b, ",\"auth_failure\":", a->auth_failure);
    if (a->upstream_status > 0)
        ADD_INT(b, ",\"upstream_status\":", (unsigned long long)a->upstream_status);
    else
        add_lit(b, ",\"upstream_status\":null");
    ADD_MS(b, ",\"upstream_ms\":", a->upstream_ms);
    ADD_INT(b, ",\"bytes_in\":", (unsigned long long)a->bytes_in);
    ADD_INT(b, ",\"bytes_out\":", (unsigned long long)a->bytes_out);
    add_lit(b, "}\n");
    size_t n = evbuffer_get_length(b) - start;
    if (n > MAX_LINE) { /* too long to be one line of the log: dropped whole */
        struct evbuffer *keep = evbuffer_new();
        if (keep && evbuffer_remove_buffer(b, keep, start) == (int)start) {
            evbuffer_drain(b, evbuffer_get_length(b));
            evbuffer_add_buffer(b, keep);
        } else {
            evbuffer_drain(b, evbuffer_get_length(b));
        }
        if (keep)
            evbuffer_free(keep);
    }
}

static void write_span(int fd, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere better to report a failing log */
        off += (size_t)w;
    }
}

void gw_log_write(struct gw_log *l, struct evbuffer *out)
{
    size_t n = evbuffer_get_length(out);
    if (n == 0)
        return;
    const char *p = (const char *)evbuffer_pullup(out, -1);
    if (p == NULL) {
        evbuffer_drain(out, n);
        return;
    }
    if (!l->pipe) { /* a regular O_APPEND file: one write, lines stay whole */
        write_span(l->fd, p, n);
        evbuffer_drain(out, n);
        return;
    }
    /* a pipe keeps a write whole only up to PIPE_BUF bytes: whole lines, at most that many
     * (a single longer line goes alone, as it did before batching) */
    size_t off = 0;
    while (off < n) {
        size_t len = n - off;
        if (len > PIPE_BUF) {
            const char *cut = NULL;
            for (size_t i = PIPE_BUF; i > 0 && cut == NULL; i--)
                if (p[off + i - 1] == '\n')
                    cut = p + off + i;
            if (cut) {
                len = (size_t)(cut - (p + off));
            } else {
                const char *nl = memchr(p + off, '\n', n - off);
                len = nl ? (size_t)(nl - (p + off)) + 1 : n - off;
            }
        }
        write_span(l->fd, p + off, len);
        off += len;
    }
    evbuffer_drain(out, n);
}

void gw_log_access(struct gw_log *l, const struct gw_access *a)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL)
        return;
    gw_log_access_format(b, a);
    gw_log_write(l, b);
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

void gw_log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("warning", fmt, ap);
    va_end(ap);
}

void gw_log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("info", fmt, ap);
    va_end(ap);
}
