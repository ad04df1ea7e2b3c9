/* buf: a growing byte buffer with a cap, stated where the buffer is created (STYLE.md: every
 * buffer has a cap). What is written into one: JSON text (audit records, error bodies), the
 * audit writer's batches, a request for the upstream.
 *
 *     struct gw_buf b = GW_BUF_INIT(64 << 10);   at most 64 KiB
 *     gw_buf_add(&b, s, n); gw_buf_str(&b, "\r\n"); ...
 *     char *text = gw_buf_take(&b);              NULL when anything failed
 *
 * An append that would pass the cap, or that finds no memory, fails the buffer: it keeps what
 * it held before that append, every later append does nothing, and gw_buf_take returns NULL,
 * so a writer checks once, at the end. The bytes are NUL-terminated whenever p is not NULL.
 * p and n may be read; they change only through these functions.
 *
 * A buffer made with GW_BUF_INIT_WIPE may hold a credential: every copy it leaves behind when
 * it grows, and its bytes when freed, are wiped (OPENSSL_cleanse).
 *
 * Memory: the buffer owns its bytes until gw_buf_take hands them over (free() them, or
 * OPENSSL_clear_free(p, strlen(p) + 1) from a wiping buffer); gw_buf_free releases them.
 * Threads: a buffer belongs to one thread at a time.
 */
#ifndef GW_BUF_H
#define GW_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct gw_buf {
    char *p;      /* p[0..n), then a NUL; NULL until the first append */
    size_t n;     /* bytes held */
    size_t alloc; /* bytes allocated at p: at least n + 1 once p is set */
    size_t max;   /* the cap: n never passes it */
    bool failed;  /* an append passed the cap or found no memory */
    bool wipe;    /* may hold a credential */
};

#define GW_BUF_INIT(cap)                                                                           \
    {                                                                                              \
        .max = (cap)                                                                               \
    }
#define GW_BUF_INIT_WIPE(cap)                                                                      \
    {                                                                                              \
        .max = (cap), .wipe = true                                                                 \
    }

/* Room for more bytes after the n held, and the NUL after them: allocated when missing.
 * Returns 0, or -1 with the buffer failed. */
int gw_buf_grow(struct gw_buf *b, size_t more);

/* Where the next more bytes go (then gw_buf_advance by as many as were written, at most
 * more), or NULL with the buffer failed. For writers that produce bytes in place. */
static inline char *gw_buf_space(struct gw_buf *b, size_t more)
{
    if (b->failed || (b->alloc - b->n <= more && gw_buf_grow(b, more) != 0))
        return NULL;
    return b->p + b->n;
}
static inline void gw_buf_advance(struct gw_buf *b, size_t written)
{
    b->n += written;
    b->p[b->n] = '\0';
}

/* Appends s[0..len). Returns 0, or -1 (the buffer is failed). */
static inline int gw_buf_add(struct gw_buf *b, const void *s, size_t len)
{
    char *o = gw_buf_space(b, len);
    if (o == NULL)
        return -1;
    if (len) /* s may be NULL for 0 bytes, which memcpy must not see */
        memcpy(o, s, len);
    gw_buf_advance(b, len);
    return 0;
}
static inline int gw_buf_str(struct gw_buf *b, const char *s)
{
    return gw_buf_add(b, s, strlen(s));
}
/* Appends the formatted text. Returns 0, or -1 (the buffer is failed). */
int gw_buf_printf(struct gw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Keeps the first n bytes (n at most those held); a wiping buffer wipes the rest. */
void gw_buf_truncate(struct gw_buf *b, size_t n);
/* Empty and not failed again, its memory kept for the next use. */
void gw_buf_reset(struct gw_buf *b);

/* The bytes held, NUL-terminated, now the caller's; NULL when the buffer failed (its bytes are
 * freed). Either way the buffer is empty again, with its cap. */
char *gw_buf_take(struct gw_buf *b);
/* Frees the bytes (wiped first for GW_BUF_INIT_WIPE); the buffer is empty again, with its cap. */
void gw_buf_free(struct gw_buf *b);

#endif
