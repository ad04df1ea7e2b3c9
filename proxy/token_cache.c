#include "token_cache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

#define WAYS 4

struct entry {
    unsigned char key[32];
    int64_t until; /* 0: empty */
    struct gw_principal *p;
};

struct gw_token_cache {
    struct entry *e;
    size_t nsets; /* each of WAYS entries */
};

struct gw_token_cache *gw_token_cache_new(size_t entries)
{
    struct gw_token_cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->nsets = (entries + WAYS - 1) / WAYS;
    if (c->nsets && (c->e = calloc(c->nsets * WAYS, sizeof *c->e)) == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

static void drop(struct entry *e)
{
    gw_principal_unref(e->p);
    memset(e, 0, sizeof *e);
}

void gw_token_cache_clear(struct gw_token_cache *c)
{
    for (size_t i = 0; c && i < c->nsets * WAYS; i++)
        if (c->e[i].until)
            drop(&c->e[i]);
}

void gw_token_cache_free(struct gw_token_cache *c)
{
    if (c == NULL)
        return;
    gw_token_cache_clear(c);
    free(c->e);
    free(c);
}

/* The key is a SHA-256 digest: its first bytes are already uniformly spread. */
static struct entry *set_of(struct gw_token_cache *c, const unsigned char key[32])
{
    uint64_t h;
    memcpy(&h, key, sizeof h);
    return &c->e[(h % c->nsets) * WAYS];
}

struct gw_principal *gw_token_cache_get(struct gw_token_cache *c, const unsigned char key[32],
                                        int64_t now)
{
    if (c == NULL || c->nsets == 0)
        return NULL;
    struct entry *s = set_of(c, key);
    for (int w = 0; w < WAYS; w++) {
        if (s[w].until == 0 || memcmp(s[w].key, key, 32) != 0)
            continue;
        if (now >= s[w].until || !gw_principal_key_current(s[w].p)) {
            drop(&s[w]); /* expired, or a key left its issuer's set: never served again */
            return NULL;
        }
        return gw_principal_ref(s[w].p);
    }
    return NULL;
}

void gw_token_cache_put(struct gw_token_cache *c, const unsigned char key[32],
                        struct gw_principal *p, int64_t until)
{
    if (c == NULL || c->nsets == 0)
        return;
    struct entry *s = set_of(c, key), *victim = &s[0];
    for (int w = 0; w < WAYS; w++) {
        if (s[w].until == 0 || memcmp(s[w].key, key, 32) == 0) {
            victim = &s[w];
            break;
        }
        if (s[w].until < victim->until) /* the one that expires first goes */
            victim = &s[w];
    }
    if (victim->until)
        drop(victim);
    memcpy(victim->key, key, 32);
    victim->until = until;
    victim->p = gw_principal_ref(p);
}
