/* The configuration reader on any text (files are not opened). */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_errs errs = {0};
    struct gw_config *c =
        gw_config_parse("/nonexistent/gw.json", (const char *)data, size, false, &errs);
    if (c == NULL && errs.problems.n == 0)
        abort(); /* a refusal always says why */
    gw_config_free(c);
    gw_errs_free(&errs);
    return 0;
}
