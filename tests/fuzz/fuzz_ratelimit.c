/* Per-subject buckets keyed by subject ids (SPEC §11), for iss and sub of any length: every
 * request goes to one limiter shared by all subjects and to a limiter of its own subject alone;
 * the two verdicts must be the same. So one subject always gets the same bucket (a fresh one
 * would allow what its own limiter refuses) and distinct subjects never share one (another
 * subject's requests would spend its tokens). Equal pairs must have equal ids, distinct pairs
 * distinct ones.
 *
 * Input: burst byte, period byte, pair-count byte; per pair an iss and a sub, each a big-endian
 * u16 v: with bit 15 set, the next v & 0x7ff bytes literally (NUL read as 0x01); else v & 0x7ff
 * copies of a fill byte followed by a tail byte (0: none), so 2,000-byte claims that differ in
 * one byte cost four bytes. Then one byte per request: its pair (low two bits, modulo the count)
 * and the time since the last request (the other six, in 50 ms). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "ratelimit.h"

#define PAIRS 4
#define MS 1000000ull

struct cursor {
    const uint8_t *p;
    size_t n;
};

static int byte(struct cursor *c)
{
    if (c->n == 0)
        return -1;
    c->n--;
    return *c->p++;
}

/* One claim string (malloc'd), or NULL when the input ends. */
static char *claim(struct cursor *c)
{
    int hi = byte(c), lo = byte(c);
    if (hi < 0 || lo < 0)
        return NULL;
    size_t n = (size_t)((hi << 8 | lo) & 0x7ff);
    char *s = malloc(n + 2);
    if (s == NULL)
        abort();
    size_t len = 0;
    if (hi & 0x80) {
        for (; len < n; len++) {
            int b = byte(c);
            if (b < 0)
                break;
            s[len] = b ? (char)b : '\x01';
        }
    } else {
        int fill = byte(c), tail = byte(c);
        if (fill < 0 || tail < 0) {
            free(s);
            return NULL;
        }
        memset(s, fill ? fill : 'x', n);
        len = n;
        if (tail)
            s[len++] = (char)tail;
    }
    s[len] = '\0';
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long periods[8] = {1, 2, 5, 10, 60, 600, 3600, 86400};
    struct cursor c = {data, size};
    int b0 = byte(&c), b1 = byte(&c), b2 = byte(&c);
    if (b2 < 0)
        return 0;
    long burst = 1 + b0 % 4, per = periods[b1 % 8];
    size_t npairs = 1 + (size_t)b2 % PAIRS, have = 0;
    char *iss[PAIRS] = {0}, *sub[PAIRS] = {0};
    unsigned char id[PAIRS][32];
    size_t group[PAIRS]; /* the first pair equal to this one */
    for (; have < npairs; have++) {
        iss[have] = claim(&c);
        sub[have] = iss[have] ? claim(&c) : NULL;
        if (sub[have] == NULL) {
            free(iss[have]);
            break;
        }
        if (gw_subject_id(iss[have], sub[have], id[have]) != 0)
            abort();
        group[have] = have;
        for (size_t k = 0; k < have; k++) {
            bool same = strcmp(iss[k], iss[have]) == 0 && strcmp(sub[k], sub[have]) == 0;
            if (same != (memcmp(id[k], id[have], 32) == 0))
                abort(); /* equal pairs, other ids; or distinct pairs, one id */
            if (same && group[have] == have)
                group[have] = group[k];
        }
    }
    if (have == 0)
        return 0;
    struct gw_rl *shared = gw_rl_new(), *alone[PAIRS] = {0};
    for (size_t i = 0; i < have; i++)
        if (group[i] == i && (alone[i] = gw_rl_new()) == NULL)
            abort();
    if (shared == NULL)
        abort();
    uint64_t now = 1000 * 1000 * MS;
    for (int b; (b = byte(&c)) >= 0;) {
        size_t i = (size_t)(b & 3) % have;
        now += (uint64_t)(b >> 2) * 50 * MS;
        struct gw_rl_verdict vs, va;
        gw_rl_subject(shared, id[i], burst, per, now, &vs);
        gw_rl_subject(alone[group[i]], id[i], burst, per, now, &va);
        if (vs.allowed != va.allowed || vs.remaining != va.remaining ||
            vs.retry_after_s != va.retry_after_s || vs.max != burst)
            abort();
    }
    gw_rl_free(shared);
    for (size_t i = 0; i < have; i++) {
        gw_rl_free(alone[i]);
        free(iss[i]);
        free(sub[i]);
    }
    return 0;
}
