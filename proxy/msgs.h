/* msgs: a list of messages, one formatted string each: schema and query violations (422),
 * a decision's reasons, the problems and warnings of a configuration or policy check.
 *
 * Memory: the list owns its strings; gw_msgs_free frees them and leaves an empty list. A zeroed
 * struct is an empty list. A message that cannot be allocated is dropped (the list stays valid),
 * so a caller that must not lose one checks n before and after.
 * Threads: a list belongs to one thread at a time.
 */
#ifndef GW_MSGS_H
#define GW_MSGS_H

#include <stddef.h>

struct gw_msgs {
    char **v; /* v[0..n) */
    size_t n, cap;
};

void gw_msgs_add(struct gw_msgs *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gw_msgs_free(struct gw_msgs *m);

/* What a check of files finds (config, keys, policies, the OpenAPI document): problems, which
 * refuse them, and warnings, which do not. */
struct gw_errs {
    struct gw_msgs problems, warnings;
};
void gw_errs_free(struct gw_errs *e);

#endif
