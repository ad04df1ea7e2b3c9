/* Route matching and query decoding on any target, against the shipped OpenAPI document.
 * Input: a method byte, then the target. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "openapi.h"
#include "route.h"

static struct gw_openapi *model;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (model == NULL) {
        char err[256];
        if (gw_openapi_load(gw_openapi_default_path(), &model, err, sizeof err) != 0)
            abort();
    }
    if (size < 1 || size > 8192)
        return 0;
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"};
    char *target = malloc(size);
    memcpy(target, data + 1, size - 1);
    target[size - 1] = '\0';
    struct gw_route r;
    char why[160];
    if (gw_route_match(model, methods[data[0] % 6], target, &r, why, sizeof why) == GW_ROUTE_OK) {
        char *q = gw_route_query_string(&r);
        if (q == NULL || r.upstream_path == NULL || r.upstream_path[0] != '/')
            abort();
        free(q);
    }
    gw_route_free(&r);
    free(target);
    return 0;
}
