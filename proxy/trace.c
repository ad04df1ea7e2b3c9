#include "trace.h"

#include <stddef.h>
#include <string.h>

/* Offsets in a version 00 traceparent: 00-<trace id>-<parent id>-<flags> */
#define TP_TRACE 3
#define TP_PARENT 36
#define TP_FLAGS 53
#define PARENT_ID_LEN 16

/* The value of a lower-case hex digit, or -1 (upper case included: W3C's HEXDIGLC). */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* n lower-case hex digits at s (a NUL stops it: it is not one), not all zeros when nonzero. */
static bool hex_field(const char *s, size_t n, bool nonzero)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        int v = hexval(s[i]);
        if (v < 0)
            return false;
        any = any || v != 0;
    }
    return any || !nonzero;
}

bool gw_trace_valid(const char *v)
{
    /* each test reads a byte only once every byte before it was found to be what it must be,
     * so a short value is refused at its NUL */
    return v != NULL && v[0] == '0' && v[1] == '0' && v[2] == '-' &&
           hex_field(v + TP_TRACE, GW_TRACE_ID_LEN, true) && v[TP_PARENT - 1] == '-' &&
           hex_field(v + TP_PARENT, PARENT_ID_LEN, true) && v[TP_FLAGS - 1] == '-' &&
           hex_field(v + TP_FLAGS, 2, false) && v[GW_TRACEPARENT_LEN] == '\0';
}

/* n bytes as 2n lower-case hex digits at out: an id, so never all zeros (the last digit is
 * made 1 then). */
static void hex_id(char *out, const unsigned char *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char any = 0;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
        any |= b[i];
    }
    if (any == 0)
        out[2 * n - 1] = '1';
}

void gw_trace_make(struct gw_trace *t, const char *caller, const unsigned char *rnd)
{
    static const unsigned char none[GW_TRACE_NEW_RANDOM]; /* no randomness: zeros, made ids */
    if (rnd == NULL)
        rnd = none;
    char *p = t->traceparent;
    memcpy(p, "00-", 3);
    if (caller) {
        memcpy(p + TP_TRACE, caller + TP_TRACE, GW_TRACE_ID_LEN);
    } else {
        hex_id(p + TP_TRACE, rnd, GW_TRACE_ID_LEN / 2);
        rnd += GW_TRACE_ID_LEN / 2;
    }
    p[TP_PARENT - 1] = '-';
    hex_id(p + TP_PARENT, rnd, PARENT_ID_LEN / 2);
    p[TP_FLAGS - 1] = '-';
    /* level 1 defines the sampled bit (the lowest) alone; the others are sent as zeros */
    p[TP_FLAGS] = '0';
    p[TP_FLAGS + 1] = caller && (hexval(caller[TP_FLAGS + 1]) & 1) ? '1' : '0';
    p[GW_TRACEPARENT_LEN] = '\0';
    memcpy(t->trace_id, p + TP_TRACE, GW_TRACE_ID_LEN);
    t->trace_id[GW_TRACE_ID_LEN] = '\0';
}
