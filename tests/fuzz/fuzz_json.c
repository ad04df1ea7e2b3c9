/* The strict JSON reader on any bytes: never crashes, never leaks; what it accepts, cJSON
 * prints and the reader reads back to the same text (one canonical form). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct gw_json_lines lines = {0};
    struct gw_json_opts o = {.max_depth = 16, .allow_comments = data[0] & 1, .lines = &lines};
    struct gw_json_error err;
    cJSON *v = gw_json_parse((const char *)data + 1, size - 1, &o, &err);
    gw_json_lines_free(&lines);
    if (v == NULL)
        return 0;
    char *once = cJSON_PrintUnformatted(v);
    if (once) {
        struct gw_json_opts o2 = {.max_depth = 17};
        cJSON *again = gw_json_parse(once, strlen(once), &o2, &err);
        if (again == NULL)
            abort(); /* the gateway's own serialization must read back */
        char *twice = cJSON_PrintUnformatted(again);
        if (twice == NULL || strcmp(once, twice) != 0)
            abort();
        cJSON_free(twice);
        cJSON_Delete(again);
        cJSON_free(once);
    }
    cJSON_Delete(v);
    return 0;
}
