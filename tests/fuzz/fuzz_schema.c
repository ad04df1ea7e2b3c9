/* The schema validator on any JSON body, for each op of the shipped document that takes one. */
#include <stdint.h>
#include <stdlib.h>

#include "json.h"
#include "openapi.h"
#include "schema.h"

static struct gw_openapi *model;
static const struct gw_op *ops[16];
static size_t nops;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (model == NULL) {
        char err[256];
        if (gw_openapi_load(gw_openapi_default_path(), &model, err, sizeof err) != 0)
            abort();
        for (size_t i = 0; i < model->nops && nops < 16; i++)
            if (model->ops[i].body_schema)
                ops[nops++] = &model->ops[i];
    }
    if (size < 1 || nops == 0)
        return 0;
    const struct gw_op *op = ops[data[0] % nops];
    struct gw_json_opts o = {.max_bytes = 65536, .max_depth = 16};
    cJSON *v = gw_json_parse((const char *)data + 1, size - 1, &o, NULL);
    if (v == NULL)
        return 0;
    struct gw_msgs m = {0};
    size_t n = gw_schema_check(op->body_schema, v, &m);
    if (n != m.n)
        abort();
    for (size_t i = 0; i < m.n; i++)
        if (m.v[i] == NULL || m.v[i][0] == '\0')
            abort();
    gw_msgs_free(&m);
    cJSON_Delete(v);
    return 0;
}
