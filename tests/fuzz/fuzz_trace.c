/* traceparent (proxy/trace.c) on any bytes. Input: 24 bytes the gateway would draw as random,
 * then the header value. gw_trace_valid must agree with an oracle written apart from it (the
 * W3C level 1 grammar as SPEC §7 takes it: exactly 55 characters, version 00, lower-case hex,
 * neither id all zeros), read no byte past the value (an exactly sized heap copy: ASan), and
 * what gw_trace_make builds from it must itself be valid: the caller's trace id and sampled bit
 * kept when it was valid, the span id the random bytes' (or ...01 when they are zeros). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

/* n characters at s, each lower-case hex; *zero: all of them '0'. */
static bool lc_hex(const char *s, size_t n, bool *zero)
{
    *zero = true;
    for (size_t i = 0; i < n; i++) {
        if (!strchr("0123456789abcdef", s[i]) || s[i] == '\0')
            return false;
        *zero = *zero && s[i] == '0';
    }
    return true;
}

static bool oracle(const char *v, size_t len)
{
    bool tz, pz, fz;
    return len == 55 && v[0] == '0' && v[1] == '0' && v[2] == '-' && lc_hex(v + 3, 32, &tz) &&
           !tz && v[35] == '-' && lc_hex(v + 36, 16, &pz) && !pz && v[52] == '-' &&
           lc_hex(v + 53, 2, &fz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < GW_TRACE_NEW_RANDOM || size > 4096)
        return 0;
    const unsigned char *rnd = data;
    size_t len = size - GW_TRACE_NEW_RANDOM;
    char *v = malloc(len + 1);
    if (v == NULL)
        return 0;
    memcpy(v, data + GW_TRACE_NEW_RANDOM, len);
    v[len] = '\0';
    size_t slen = strlen(v); /* a NUL in the input ends the value, as in a C string */
    bool ok = gw_trace_valid(v);
    if (ok != oracle(v, slen))
        abort();
    struct gw_trace t;
    gw_trace_make(&t, ok ? v : NULL, rnd);
    if (!oracle(t.traceparent, strlen(t.traceparent)) ||
        strncmp(t.trace_id, t.traceparent + 3, 32) != 0 || strlen(t.trace_id) != 32)
        abort();
    /* the span id: the random bytes' hex (ok: the first 8; new: bytes 16..23) */
    static const char digits[] = "0123456789abcdef";
    const unsigned char *span = ok ? rnd : rnd + 16;
    char want[17];
    bool zero = true;
    for (int i = 0; i < 8; i++) {
        want[2 * i] = digits[span[i] >> 4];
        want[2 * i + 1] = digits[span[i] & 15];
        zero = zero && span[i] == 0;
    }
    if (zero)
        want[15] = '1';
    if (strncmp(t.traceparent + 36, want, 16) != 0)
        abort();
    if (ok) { /* continued: the trace id and the sampled bit kept, other flag bits zero */
        char last = v[54];
        int bit = (last >= 'a' ? last - 'a' + 10 : last - '0') & 1;
        if (strncmp(t.traceparent + 3, v + 3, 32) != 0 || t.traceparent[53] != '0' ||
            t.traceparent[54] != (bit ? '1' : '0'))
            abort();
    } else if (strcmp(t.traceparent + 52, "-00") != 0) {
        abort();
    }
    free(v);
    return 0;
}
