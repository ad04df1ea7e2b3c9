#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "json.h"
#include "openapi.h"
#include "route.h"
#include "schema.h"

int gw_validate_version(const struct gw_config *cfg, const char *version, enum gw_reply_kind *kind)
{
    if (version == NULL) {
        *kind = GW_R_VERSION_MISSING;
        return -1;
    }
    for (size_t i = 0; i < cfg->upstream.napi_versions; i++)
        if (strcmp(version, cfg->upstream.api_versions[i]) == 0)
            return 0;
    *kind = GW_R_VERSION_INVALID;
    return -1;
}

static const char *schema_type(const cJSON *schema)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(schema, "type");
    return cJSON_IsString(t) ? t->valuestring : "string";
}

static void enum_list(const cJSON *en, char *buf, size_t len)
{
    size_t w = 0;
    buf[0] = '\0';
    for (const cJSON *e = en->child; e && w < len; e = e->next) {
        if (!cJSON_IsString(e))
            continue;
        int n = snprintf(buf + w, len - w, "%s%s", w ? ", " : "", e->valuestring);
        if (n < 0)
            break;
        w += (size_t)n;
    }
}

/* A JSON-style decimal number (integer: digits only), nothing else: no hex, inf, nan, space. */
static bool is_number(const char *s, bool integer)
{
    const char *p = s;
    if (*p == '-')
        p++;
    size_t d = strspn(p, "0123456789");
    if (d == 0 || (p[0] == '0' && d > 1))
        return false;
    p += d;
    if (integer)
        return *p == '\0';
    if (*p == '.') {
        size_t f = strspn(p + 1, "0123456789");
        if (f == 0)
            return false;
        p += 1 + f;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        size_t e = strspn(p, "0123456789");
        if (e == 0)
            return false;
        p += e;
    }
    return *p == '\0';
}

size_t gw_validate_query(const struct gw_route *r, struct gw_msgs *out)
{
    size_t before = out->n;
    const struct gw_op *op = r->op;
    for (size_t i = 0; i < r->nq; i++) {
        const char *name = r->qname[i], *val = r->qval[i];
        const struct gw_param *p = gw_op_param(op, GW_IN_QUERY, name);
        if (p == NULL) {
            gw_msgs_add(out, "property %s should not exist", name);
            continue;
        }
        size_t earlier = 0;
        for (size_t k = 0; k < i; k++)
            earlier += strcmp(r->qname[k], name) == 0;
        if (earlier) {
            if (earlier == 1) /* one message per repeated name */
                gw_msgs_add(out, "%s must be given only once", name);
            continue;
        }
        const char *type = schema_type(p->schema);
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(p->schema, "enum");
        if (strcmp(type, "boolean") == 0) {
            if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0)
                gw_msgs_add(out, "%s must be a boolean value", name);
        } else if (strcmp(type, "number") == 0 || strcmp(type, "integer") == 0) {
            if (!is_number(val, strcmp(type, "integer") == 0))
                gw_msgs_add(out, "%s must be a number conforming to the specified constraints",
                            name);
        } else if (cJSON_IsArray(en)) {
            bool ok = false;
            for (const cJSON *e = en->child; e; e = e->next)
                ok |= cJSON_IsString(e) && strcmp(e->valuestring, val) == 0;
            if (!ok) {
                char list[1024];
                enum_list(en, list, sizeof list);
                gw_msgs_add(out, "%s must be one of the following values: %s", name, list);
            }
        }
    }
    for (size_t i = 0; i < op->nparams; i++) {
        const struct gw_param *p = &op->params[i];
        if (p->in != GW_IN_QUERY || !p->required)
            continue;
        const char *v = gw_route_query(r, p->name);
        if (v == NULL || v[0] == '\0') /* the upstream's IsNotEmpty: "" is empty too */
            gw_msgs_add(out, "%s should not be empty", p->name);
    }
    return out->n - before;
}

/* application/json, optionally with charset=utf-8 (any case, optionally quoted). */
static bool json_content_type(const char *ct)
{
    size_t n = strlen("application/json");
    if (ct == NULL || strncasecmp(ct, "application/json", n) != 0)
        return false;
    const char *p = ct + n;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return true;
    if (*p++ != ';')
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "charset=", 8) != 0)
        return false;
    p += 8;
    bool quoted = *p == '"';
    p += quoted;
    if (strncasecmp(p, "utf-8", 5) != 0)
        return false;
    p += 5;
    if (quoted && *p++ != '"')
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0';
}

int gw_validate_body(const struct gw_config *cfg, const struct gw_op *op, const char *content_type,
                     const char *data, size_t len, cJSON **body, struct gw_msgs *msgs,
                     enum gw_reply_kind *kind, char *msg, size_t msglen)
{
    *body = NULL;
    msg[0] = '\0';
    if (op->body_schema == NULL) {
        if (len > 0) {
            *kind = GW_R_BAD_REQUEST;
            snprintf(msg, msglen, "%s takes no request body", op->id);
            return -1;
        }
        return 0;
    }
    if (!json_content_type(content_type)) {
        *kind = GW_R_UNSUPPORTED_MEDIA;
        snprintf(msg, msglen, "Content-Type must be application/json");
        return -1;
    }
    if (len > (size_t)cfg->limits.max_body_bytes) {
        *kind = GW_R_TOO_LARGE;
        return -1;
    }
    if (len == 0) {
        *kind = GW_R_BAD_REQUEST;
        snprintf(msg, msglen, "%s needs a JSON request body", op->id);
        return -1;
    }
    struct gw_json_error je;
    struct gw_json_opts o = {.max_bytes = (size_t)cfg->limits.max_body_bytes,
                             .max_depth = (int)cfg->limits.max_json_depth};
    cJSON *v = gw_json_parse(data, len, &o, &je);
    if (v == NULL) {
        *kind = GW_R_BAD_REQUEST;
        snprintf(msg, msglen, "invalid JSON body: %s at byte %zu", je.msg, je.offset);
        return -1;
    }
    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        *kind = GW_R_BAD_REQUEST;
        snprintf(msg, msglen, "the request body must be a JSON object");
        return -1;
    }
    if (gw_schema_check(op->body_schema, v, msgs) > 0) {
        cJSON_Delete(v);
        *kind = GW_R_UNPROCESSABLE;
        return -1;
    }
    *body = v;
    return 0;
}
