#include "schema.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static const cJSON *member(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

/* The schema's type; inferred from "properties" / "items" when it has none; "" for any. */
static const char *type_of(const cJSON *schema)
{
    const cJSON *t = member(schema, "type");
    if (cJSON_IsString(t))
        return t->valuestring;
    if (member(schema, "properties") || member(schema, "additionalProperties"))
        return "object";
    if (member(schema, "items"))
        return "array";
    return "";
}

static const char *type_message(const char *type)
{
    if (strcmp(type, "string") == 0)
        return "must be a string";
    if (strcmp(type, "boolean") == 0)
        return "must be a boolean value";
    if (strcmp(type, "number") == 0)
        return "must be a number conforming to the specified constraints";
    if (strcmp(type, "integer") == 0)
        return "must be an integer number";
    if (strcmp(type, "array") == 0)
        return "must be an array";
    if (strcmp(type, "object") == 0)
        return "must be an object";
    return NULL;
}

static bool has_type(const char *type, const cJSON *v)
{
    if (strcmp(type, "string") == 0)
        return cJSON_IsString(v);
    if (strcmp(type, "boolean") == 0)
        return cJSON_IsBool(v);
    if (strcmp(type, "number") == 0)
        return cJSON_IsNumber(v);
    if (strcmp(type, "integer") == 0)
        return cJSON_IsNumber(v) && !(v->type & GW_JSON_FRACTION_LITERAL) &&
               v->valuedouble == floor(v->valuedouble);
    if (strcmp(type, "array") == 0)
        return cJSON_IsArray(v);
    if (strcmp(type, "object") == 0)
        return cJSON_IsObject(v);
    return true; /* no type: anything */
}

static bool in_enum(const cJSON *en, const cJSON *v)
{
    for (const cJSON *e = en->child; e; e = e->next)
        if (cJSON_Compare(e, v, true))
            return true;
    return false;
}

/* "a, b, c" of an enum's string values. */
static char *enum_text(const cJSON *en)
{
    size_t need = 1;
    for (const cJSON *e = en->child; e; e = e->next)
        if (cJSON_IsString(e))
            need += strlen(e->valuestring) + 2;
    char *s = malloc(need);
    if (s == NULL)
        return NULL;
    size_t w = 0;
    for (const cJSON *e = en->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            continue;
        size_t l = strlen(e->valuestring);
        if (w) {
            memcpy(s + w, ", ", 2);
            w += 2;
        }
        memcpy(s + w, e->valuestring, l);
        w += l;
    }
    s[w] = '\0';
    return s;
}

static void enum_message(struct gw_msgs *out, const char *lead, const char *name, const cJSON *en)
{
    char *list = enum_text(en);
    gw_msgs_add(out, "%s%s must be one of the following values: %s", lead, name, list ? list : "");
    free(list);
}

static bool is_required(const cJSON *schema, const char *name)
{
    const cJSON *req = member(schema, "required");
    for (const cJSON *r = cJSON_IsArray(req) ? req->child : NULL; r; r = r->next)
        if (cJSON_IsString(r) && strcmp(r->valuestring, name) == 0)
            return true;
    return false;
}

static void check_value(const cJSON *schema, const cJSON *v, const char *name, struct gw_msgs *out);

/* prefix + name, allocated: member names are as long as the body allows, never cut. */
static char *join(const char *prefix, const char *name)
{
    char *s = NULL;
    return asprintf(&s, "%s%s", prefix, name) < 0 ? NULL : s;
}

static void check_object(const cJSON *schema, const cJSON *obj, const char *prefix,
                         struct gw_msgs *out)
{
    const cJSON *props = member(schema, "properties");
    const cJSON *addl = member(schema, "additionalProperties");
    for (const cJSON *p = cJSON_IsObject(props) ? props->child : NULL; p; p = p->next) {
        char *name = join(prefix, p->string);
        if (name == NULL)
            return;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, p->string);
        if (v == NULL) {
            if (is_required(schema, p->string)) {
                gw_msgs_add(out, "%s should not be empty", name);
                const char *tm = type_message(type_of(p));
                if (tm)
                    gw_msgs_add(out, "%s %s", name, tm);
            }
        } else if (cJSON_IsTrue(member(p, "deprecated"))) {
            gw_msgs_add(out, "property %s should not exist", name);
        } else if (is_required(schema, p->string) && cJSON_IsString(v) &&
                   v->valuestring[0] == '\0') {
            gw_msgs_add(out, "%s should not be empty", name);
        } else {
            check_value(p, v, name, out);
        }
        free(name);
    }
    /* required names the document lists without describing them */
    const cJSON *req = member(schema, "required");
    for (const cJSON *r = cJSON_IsArray(req) ? req->child : NULL; r; r = r->next)
        if (cJSON_IsString(r) && member(props, r->valuestring) == NULL &&
            cJSON_GetObjectItemCaseSensitive(obj, r->valuestring) == NULL)
            gw_msgs_add(out, "%s%s should not be empty", prefix, r->valuestring);
    if (props == NULL && addl == NULL)
        return; /* a free-form object */
    for (const cJSON *m = obj->child; m; m = m->next) {
        if (member(props, m->string) != NULL)
            continue;
        if (cJSON_IsObject(addl)) {
            char *name = join(prefix, m->string);
            if (name)
                check_value(addl, m, name, out);
            free(name);
        } else if (!cJSON_IsTrue(addl)) {
            gw_msgs_add(out, "property %s%s should not exist", prefix, m->string);
        }
    }
}

static void check_array(const cJSON *schema, const cJSON *v, const char *name, struct gw_msgs *out)
{
    const cJSON *items = member(schema, "items");
    if (!cJSON_IsObject(items))
        return;
    const char *it = type_of(items);
    const cJSON *en = member(items, "enum");
    bool bad_type = false, bad_enum = false;
    size_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (strcmp(it, "object") == 0 && cJSON_IsObject(e)) {
            char *sub = NULL;
            if (asprintf(&sub, "%s[%zu].", name, i) >= 0)
                check_object(items, e, sub, out);
            free(sub);
            continue;
        }
        if (!has_type(it, e) || cJSON_IsNull(e))
            bad_type = true;
        else if (cJSON_IsArray(en) && !in_enum(en, e))
            bad_enum = true;
    }
    const char *tm = type_message(it);
    if (bad_type && tm)
        gw_msgs_add(out, "each value in %s %s", name, tm);
    if (bad_enum)
        enum_message(out, "each value in ", name, en);
}

static void check_value(const cJSON *schema, const cJSON *v, const char *name, struct gw_msgs *out)
{
    const char *type = type_of(schema);
    if (cJSON_IsNull(v)) {
        /* the upstream's optional fields skip null; the gateway refuses it unless the document
         * allows it, so no caller can clear a field the policy would not see set */
        const char *tm = type_message(type);
        if (!cJSON_IsTrue(member(schema, "nullable")) && tm)
            gw_msgs_add(out, "%s %s", name, tm);
        return;
    }
    if (!has_type(type, v)) {
        gw_msgs_add(out, "%s %s", name, type_message(type));
        return;
    }
    const cJSON *en = member(schema, "enum");
    if (cJSON_IsArray(en) && strcmp(type, "array") != 0 && !in_enum(en, v)) {
        enum_message(out, "", name, en);
        return;
    }
    if (cJSON_IsArray(v)) {
        check_array(schema, v, name, out);
    } else if (cJSON_IsObject(v)) {
        char *prefix = join(name, ".");
        if (prefix)
            check_object(schema, v, prefix, out);
        free(prefix);
    }
}

size_t gw_schema_check(const cJSON *schema, const cJSON *value, struct gw_msgs *out)
{
    size_t before = out->n;
    if (!cJSON_IsObject(value) || strcmp(type_of(schema), "object") != 0) {
        check_value(schema, value, "body", out);
        return out->n - before;
    }
    check_object(schema, value, "", out);
    return out->n - before;
}

const cJSON *gw_schema_default(const cJSON *object_schema, const char *property)
{
    const cJSON *p = member(member(object_schema, "properties"), property);
    return member(p, "default");
}
