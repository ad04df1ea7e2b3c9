/* The request-head reader on any bytes, fed in two pieces as a network would, and checked
 * against the byte-by-byte reference it replaced (the same answers on every input). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

/* The first scanner, one byte at a time: the specification the faster one must agree with. */
static long ref_scan(const unsigned char *h, size_t len, size_t *scanned, size_t cap,
                     const char **why)
{
    size_t want = len < cap ? len : cap;
    for (size_t i = *scanned; i < want; i++) {
        unsigned char b = h[i];
        if (b == 0)
            return *why = "NUL byte in request head", -1;
        if (b == '\n' && (i == 0 || h[i - 1] != '\r'))
            return *why = "bare LF in request head", -1;
        if (i > 0 && h[i - 1] == '\r' && b != '\n')
            return *why = "bare CR in request head", -1;
        if (b == '\n' && i >= 3 && h[i - 2] == '\n' && h[i - 3] == '\r')
            return (long)(i + 1);
    }
    *scanned = want;
    if (len >= cap)
        return *why = NULL, -1;
    return 0;
}

static void differential(const unsigned char *h, size_t n, size_t split, size_t cap)
{
    size_t s1 = 0, s2 = 0;
    struct gw_http1_error err = {0};
    const char *why = NULL;
    long a = gw_http1_scan(h, split, &s1, cap, &err);
    long b = ref_scan(h, split, &s2, cap, &why);
    if (a == 0 && b == 0) {
        a = gw_http1_scan(h, n, &s1, cap, &err);
        b = ref_scan(h, n, &s2, cap, &why);
    }
    if (a != b || (a < 0 && !(err.why == why || (err.why && why && strcmp(err.why, why) == 0))))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = data[0] % size;
    const unsigned char *h = data + 1;
    size_t n = size - 1, scanned = 0;
    differential(h, n, split < n ? split : n, 4096);
    differential(h, n, split < n ? split : n, 1 + data[0] % 64);
    struct gw_http1_error err;
    long hl = gw_http1_scan(h, split < n ? split : n, &scanned, 4096, &err);
    if (hl == 0)
        hl = gw_http1_scan(h, n, &scanned, 4096, &err);
    if (hl <= 0)
        return 0;
    char *copy = malloc((size_t)hl + 1);
    memcpy(copy, h, (size_t)hl);
    struct gw_http1_head head;
    if (gw_http1_parse(copy, (size_t)hl, 65536, &head, &err) == 0) {
        if (head.method == NULL || head.target == NULL || head.target[0] != '/')
            abort();
        bool rep;
        gw_http1_header(head.hdr, head.nhdr, "Content-Length", &rep);
    }
    free(copy);
    return 0;
}
