/* The upstream response parser on any bytes, fed in two pieces. */
#include "../../proxy/upstream.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct gw_upstream_call call = {0};
    struct up_conn c = {0};
    call.res.body = evbuffer_new();
    struct evbuffer *in = evbuffer_new();
    size_t split = data[0] % size;
    char why[128];
    c.ps = RP_STATUS;
    evbuffer_add(in, data + 1, split ? split - 1 : 0);
    int rc = parse(&c, &call, in, why, sizeof why);
    if (rc == 0) {
        evbuffer_add(in, data + (split ? split : 1), size - (split ? split : 1));
        parse(&c, &call, in, why, sizeof why);
    }
    call_reset_headers(&call);
    evbuffer_free(call.res.body);
    evbuffer_free(in);
    return 0;
}
