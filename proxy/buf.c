#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/crypto.h>

#define FIRST_ALLOC 1024

int gw_buf_grow(struct gw_buf *b, size_t more)
{
    if (b->failed)
        return -1;
    if (more > b->max - b->n) {
        b->failed = true;
        return -1;
    }
    size_t need = b->n + more + 1; /* at most max + 1: no overflow, max < SIZE_MAX */
    if (need <= b->alloc)
        return 0;
    size_t size = b->alloc ? b->alloc : FIRST_ALLOC;
    while (size < need)
        size = size > SIZE_MAX / 2 ? need : size * 2;
    if (size > b->max + 1) /* doubling stops at the cap: the bytes past it could never be used */
        size = b->max + 1 > need ? b->max + 1 : need;
    char *p;
    if (b->wipe) {
        /* no realloc: it may leave a copy of the credential in memory it frees */
        p = OPENSSL_malloc(size);
        if (p && b->p) {
            memcpy(p, b->p, b->n + 1);
            OPENSSL_clear_free(b->p, b->alloc);
        }
    } else {
        p = realloc(b->p, size);
    }
    if (p == NULL) {
        b->failed = true;
        return -1;
    }
    if (b->p == NULL)
        p[0] = '\0';
    b->p = p;
    b->alloc = size;
    return 0;
}

int gw_buf_printf(struct gw_buf *b, const char *fmt, ...)
{
    if (b->failed || (b->p == NULL && gw_buf_grow(b, 0) != 0)) /* room to print in once */
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->n, b->alloc - b->n, fmt, ap);
    va_end(ap);
    if (k < 0) {
        b->p[b->n] = '\0';
        b->failed = true;
        return -1;
    }
    if ((size_t)k < b->alloc - b->n) { /* alloc is at most max + 1: within the cap */
        b->n += (size_t)k;
        return 0;
    }
    char *o = gw_buf_space(b, (size_t)k);
    if (o == NULL) {
        if (b->p)              /* still the buffer printed into: a failed grow keeps it */
            b->p[b->n] = '\0'; /* a cut text was written past n */
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(o, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
    return 0;
}

void gw_buf_truncate(struct gw_buf *b, size_t n)
{
    if (b->p == NULL || n >= b->n)
        return;
    if (b->wipe)
        OPENSSL_cleanse(b->p + n, b->n - n);
    b->n = n;
    b->p[n] = '\0';
}

void gw_buf_reset(struct gw_buf *b)
{
    gw_buf_truncate(b, 0);
    b->failed = false;
}

char *gw_buf_take(struct gw_buf *b)
{
    char *p = NULL;
    if (gw_buf_space(b, 0) != NULL) { /* an empty buffer gives "" */
        p = b->p;
        b->p = NULL;
    }
    gw_buf_free(b);
    return p;
}

void gw_buf_free(struct gw_buf *b)
{
    if (b->p && b->wipe)
        OPENSSL_clear_free(b->p, b->alloc);
    else
        free(b->p);
    *b = (struct gw_buf){.max = b->max, .wipe = b->wipe};
}
