/* The strict JSON reader on any bytes: never crashes, never leaks; what it accepts, cJSON
 * prints and the reader reads back to the same text (one canonical form), and the gateway's
 * own writer (gw_jbuf_value, audit records) writes text the reader reads back to an equal
 * tree. gw_json_check, the checker without a tree, agrees with the reader: whatever the reader
 * accepts it accepts, and whatever it refuses the reader refuses. */
#include <stdbool.h>
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
    struct gw_json_error err, cerr;
    cJSON *v = gw_json_parse((const char *)data + 1, size - 1, &o, &err);
    gw_json_lines_free(&lines);
    if (!o.allow_comments) {
        bool checked = gw_json_check((const char *)data + 1, size - 1, 16, &cerr);
        if (v != NULL && !checked)
            abort(); /* the checker refused what the reader accepts */
        if (v == NULL && checked && strstr(err.msg, "duplicate") == NULL &&
            strstr(err.msg, "out of range") == NULL)
            abort(); /* the checker accepted what the reader refuses for a reason of both */
    }
    if (v == NULL)
        return 0;
    struct gw_buf b = GW_BUF_INIT(64u << 20); /* the input is at most a few MiB */
    gw_jbuf_value(&b, v);
    char *written = gw_buf_take(&b);
    if (written) {
        struct gw_json_opts o3 = {.max_depth = 17};
        cJSON *back = gw_json_parse(written, strlen(written), &o3, &err);
        if (back == NULL || !cJSON_Compare(v, back, true))
            abort(); /* the writer's text does not read back to the same tree */
        cJSON_Delete(back);
        free(written);
    }
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
