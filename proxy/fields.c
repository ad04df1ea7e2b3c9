#include "fields.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- problems, lines and paths ---- */

int gw_fields_line(const struct gw_fields *x, const cJSON *node)
{
    return gw_json_line(&x->lines, node);
}

void gw_fields_problem(struct gw_fields *x, const cJSON *node, const char *key, const char *fmt,
                       ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = gw_fields_line(x, node);
    if (line > 0)
        gw_msgs_add(&x->errs->problems, "%s:%d: %s: %s", x->file, line, key, msg);
    else
        gw_msgs_add(&x->errs->problems, "%s: %s: %s", x->file, key, msg);
}

char *gw_fields_path(struct gw_fields *x, const char *p)
{
    char *out = NULL;
    if (p[0] == '/' || strcmp(x->dir, ".") == 0) {
        out = strdup(p);
    } else if (asprintf(&out, "%s/%s", x->dir, p) < 0) {
        out = NULL;
    }
    if (out == NULL)
        x->oom = true;
    return out;
}

void gw_fields_check_path(struct gw_fields *x, const cJSON *node, const char *key, const char *path,
                          enum gw_file_need need)
{
    if (!x->check_files || path == NULL || need == GW_NEED_NONE)
        return;
    struct stat st;
    if (need == GW_NEED_PARENT) {
        char *dup = strdup(path);
        if (dup == NULL)
            return;
        char *s = strrchr(dup, '/');
        const char *dir = s ? (s == dup ? "/" : (*s = '\0', dup)) : ".";
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            gw_fields_problem(x, node, key, "folder %s of %s does not exist", dir, path);
        free(dup);
        return;
    }
    if (stat(path, &st) != 0) {
        gw_fields_problem(x, node, key, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    if (need == GW_NEED_DIR) {
        if (!S_ISDIR(st.st_mode))
            gw_fields_problem(x, node, key, "%s is not a folder", path);
        else if (access(path, R_OK | X_OK) != 0)
            gw_fields_problem(x, node, key, "cannot read folder %s: %s", path, strerror(errno));
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        gw_fields_problem(x, node, key, "%s is a folder, not a file", path);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        gw_fields_problem(x, node, key, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    fclose(f);
}

/* ---- the tables ---- */

static char *dup_or_oom(struct gw_fields *x, const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        x->oom = true;
    return d;
}

void gw_fields_defaults(struct gw_fields *x, void *base, const struct gw_field *t)
{
    for (const struct gw_field *f = t; f->key; f++) {
        switch (f->kind) {
        case GW_F_STR:
        case GW_F_STR_NULL:
            *GW_FIELD_AT(base, f->off, char *) = f->def ? dup_or_oom(x, f->def) : NULL;
            break;
        case GW_F_PATH:
        case GW_F_PATH_NULL:
            *GW_FIELD_AT(base, f->off, char *) = f->def ? gw_fields_path(x, f->def) : NULL;
            break;
        case GW_F_INT:
            *GW_FIELD_AT(base, f->off, long) = f->idef;
            break;
        case GW_F_BOOL:
            *GW_FIELD_AT(base, f->off, bool) = f->idef != 0;
            break;
        case GW_F_SECTION:
            gw_fields_defaults(x, base, f->sub);
            break;
        case GW_F_STRLIST:
            if (f->def) {
                char **v = calloc(2, sizeof *v);
                if (v && (v[0] = dup_or_oom(x, f->def)) != NULL)
                    *GW_FIELD_AT(base, f->off2, size_t) = 1;
                else
                    x->oom = true;
                *GW_FIELD_AT(base, f->off, char **) = v;
            }
            break;
        case GW_F_CUSTOM:
            if (f->custom)
                f->custom(x, NULL, base, f, f->key); /* NULL value: set the default */
            break;
        }
    }
}

static void free_strlist(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* The kind's reading of v; problems added, nothing returned (gw_fields_read counts them). */
static void read_kind(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                      const char *key)
{
    switch (f->kind) {
    case GW_F_STR:
    case GW_F_STR_NULL:
    case GW_F_PATH:
    case GW_F_PATH_NULL: {
        bool nullable = f->kind == GW_F_STR_NULL || f->kind == GW_F_PATH_NULL;
        char **dst = GW_FIELD_AT(base, f->off, char *);
        if (cJSON_IsNull(v) && nullable) {
            free(*dst);
            *dst = NULL;
            return;
        }
        if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
            if (f->msg)
                gw_fields_problem(x, v, key, "%s", f->msg);
            else
                gw_fields_problem(x, v, key, "must be a non-empty string%s",
                                  nullable ? " or null" : "");
            return;
        }
        free(*dst);
        bool is_path = f->kind == GW_F_PATH || f->kind == GW_F_PATH_NULL;
        *dst = is_path ? gw_fields_path(x, v->valuestring) : dup_or_oom(x, v->valuestring);
        if (is_path)
            gw_fields_check_path(x, v, key, *dst, f->need);
        return;
    }
    case GW_F_INT: {
        double d = v->valuedouble;
        if (!cJSON_IsNumber(v) || d != floor(d)) {
            gw_fields_problem(x, v, key, "%s", f->msg ? f->msg : "must be an integer");
            return;
        }
        if (d < (double)f->min || d > (double)f->max) {
            if (f->msg)
                gw_fields_problem(x, v, key, "%s", f->msg);
            else
                gw_fields_problem(x, v, key, "must be between %ld and %ld", f->min, f->max);
            return;
        }
        *GW_FIELD_AT(base, f->off, long) = (long)d;
        return;
    }
    case GW_F_BOOL:
        if (!cJSON_IsBool(v)) {
            gw_fields_problem(x, v, key, "%s", f->msg ? f->msg : "must be true or false");
            return;
        }
        *GW_FIELD_AT(base, f->off, bool) = cJSON_IsTrue(v);
        return;
    case GW_F_SECTION:
        if (!cJSON_IsObject(v)) {
            gw_fields_problem(x, v, key, "%s", f->msg ? f->msg : "must be an object");
            return;
        }
        gw_fields_walk(x, v, base, f->sub, key);
        return;
    case GW_F_STRLIST: {
        if (!cJSON_IsArray(v)) {
            gw_fields_problem(x, v, key, "must be an array of strings");
            return;
        }
        size_t n = (size_t)cJSON_GetArraySize(v), k = 0;
        if ((long)n < f->min) {
            gw_fields_problem(x, v, key, "must have at least %ld entr%s", f->min,
                              f->min == 1 ? "y" : "ies");
            return;
        }
        char **out = calloc(n + 1, sizeof *out);
        if (out == NULL) {
            x->oom = true;
            return;
        }
        /* the entries before a bad one are kept: checks after this one may look at them */
        for (const cJSON *e = v->child; e; e = e->next) {
            if (!cJSON_IsString(e) || e->valuestring[0] == '\0') {
                if (f->msg)
                    gw_fields_problem(x, e, key, "%s", f->msg);
                else
                    gw_fields_problem(x, e, key, "entry %zu must be a non-empty string", k);
                break;
            }
            if ((out[k] = dup_or_oom(x, e->valuestring)) == NULL)
                break;
            k++;
        }
        free_strlist(*GW_FIELD_AT(base, f->off, char **), *GW_FIELD_AT(base, f->off2, size_t));
        *GW_FIELD_AT(base, f->off, char **) = out;
        *GW_FIELD_AT(base, f->off2, size_t) = k;
        return;
    }
    case GW_F_CUSTOM:
        f->custom(x, v, base, f, key);
        return;
    }
}

int gw_fields_read(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                   const char *key)
{
    size_t before = x->errs->problems.n;
    bool oom = x->oom;
    x->oom = false;
    read_kind(x, v, base, f, key);
    bool failed = x->errs->problems.n > before || x->oom;
    x->oom |= oom;
    if (failed)
        return -1;
    if (f->after)
        f->after(x, v, base, f, key);
    return 0;
}

/* key: prefix.name, or name at the top. */
static void full_key(char *key, size_t len, const char *prefix, const char *name)
{
    if (prefix[0])
        snprintf(key, len, "%s.%s", prefix, name);
    else
        snprintf(key, len, "%s", name);
}

void gw_fields_walk(struct gw_fields *x, const cJSON *obj, void *base, const struct gw_field *t,
                    const char *prefix)
{
    char key[256];
    for (const cJSON *m = obj->child; m; m = m->next) {
        full_key(key, sizeof key, prefix, m->string);
        const struct gw_field *f = t;
        while (f->key && strcmp(f->key, m->string) != 0)
            f++;
        if (f->key == NULL)
            gw_fields_problem(x, m, key, "unknown key");
        else if (!x->unknown_first)
            gw_fields_read(x, m, base, f, key);
    }
    /* member names are unique (the parser refuses duplicates): looking one up finds the one */
    for (const struct gw_field *f = t; f->key; f++) {
        if (!x->unknown_first && f->required == NULL)
            continue;
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, f->key);
        if (m == NULL && f->required == NULL)
            continue;
        full_key(key, sizeof key, prefix, f->key);
        if (m == NULL)
            gw_fields_problem(x, obj, key, "%s", f->required);
        else if (x->unknown_first)
            gw_fields_read(x, m, base, f, key);
    }
}

void gw_fields_free(void *base, const struct gw_field *t)
{
    for (const struct gw_field *f = t; f->key; f++) {
        switch (f->kind) {
        case GW_F_STR:
        case GW_F_STR_NULL:
        case GW_F_PATH:
        case GW_F_PATH_NULL:
            free(*GW_FIELD_AT(base, f->off, char *));
            break;
        case GW_F_SECTION:
            gw_fields_free(base, f->sub);
            break;
        case GW_F_STRLIST:
            free_strlist(*GW_FIELD_AT(base, f->off, char **), *GW_FIELD_AT(base, f->off2, size_t));
            break;
        default:
            break;
        }
    }
}

void gw_fields_oom(struct gw_fields *x)
{
    x->oom = true;
}
