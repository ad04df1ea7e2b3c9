#include "msgs.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_msgs_add(struct gw_msgs *m, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return;
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 8;
        char **nv = realloc(m->v, nc * sizeof *nv);
        if (nv == NULL) {
            free(s);
            return;
        }
        m->v = nv;
        m->cap = nc;
    }
    m->v[m->n++] = s;
}

void gw_msgs_free(struct gw_msgs *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i]);
    free(m->v);
    memset(m, 0, sizeof *m);
}

void gw_errs_free(struct gw_errs *e)
{
    gw_msgs_free(&e->problems);
    gw_msgs_free(&e->warnings);
}
