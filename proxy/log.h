/* log: the access log (one JSON line per request, SPEC §10) and the error log (stderr).
 *
 * Owns: the access log file descriptor (stderr unless access_log.file), line formatting, and
 * reopening on SIGUSR1 (dup2 onto the same descriptor number, so a worker writing at that
 * moment finishes on the old file and nothing is misplaced). Workers format lines into their
 * own buffer (gw_log_access_format) and write whole lines with gw_log_write: writes to an
 * O_APPEND file, or of at most PIPE_BUF bytes of whole lines to a pipe (atomic there), so
 * workers never interleave within a line and need no lock.
 * Memory: struct gw_log is created by gw_log_open and freed by gw_log_close.
 * Threads: gw_log_access and gw_log_error from any thread; gw_log_reopen from the main thread.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_log {
    char *path; /* NULL: stderr */
    int fd;
    bool pipe; /* not a regular file (stderr to a pipe): writes of whole lines <= PIPE_BUF */
};

/* One request as the access log records it. Strings may be NULL (written as null). */
struct gw_access {
    int64_t ts_ms; /* start of the request, ms since the epoch */
    const char *request_id, *trace_id, *ip, *method, *path, *op, *sub, *policy, *auth_failure;
    int status;
    double duration_ms;
    int upstream_status; /* 0: no upstream answer */
    double upstream_ms;  /* < 0: no upstream call */
    uint64_t bytes_in, bytes_out;
};

/* Opens the access log (path NULL: stderr). Returns NULL with errno set. */
struct gw_log *gw_log_open(const char *path);
int gw_log_reopen(struct gw_log *l);
void gw_log_close(struct gw_log *l);

struct evbuffer;
/* Appends a's line (JSON and a newline) to out. */
void gw_log_access_format(struct evbuffer *out, const struct gw_access *a);
/* Writes out's whole lines to the access log and empties out (a failing log drops them:
 * there is nowhere better to report it). */
void gw_log_write(struct gw_log *l, struct evbuffer *out);
/* One line at once (format + write). */
void gw_log_access(struct gw_log *l, const struct gw_access *a);

/* "ghl-gateway: <time> error: ..." on stderr. Never give it a token or a secret. */
void gw_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gw_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gw_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Formats ms since the epoch as 2026-11-26T19:32:11.123Z into buf (at least 25 bytes). */
void gw_log_iso8601(int64_t ms, char *buf, size_t len);
int64_t gw_now_ms(void);
/* Milliseconds on the monotonic clock, with fractions: for durations. */
double gw_mono_ms(void);

#endif
