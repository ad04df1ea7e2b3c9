/* The request-head reader on any bytes, fed in two pieces as a network would. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = data[0] % size;
    const unsigned char *h = data + 1;
    size_t n = size - 1, scanned = 0;
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
