/* Builds the op table from the Users API document. The document is read with the strict JSON
 * reader, its $refs are replaced by copies of their targets (so later stages never chase
 * references), and the tables the gateway needs are collected from it. */
#include "openapi.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"

#define MAX_DOC_BYTES (16u << 20)
#define MAX_REF_DEPTH 32
#define MAX_DOCS 8

#ifndef GW_OPENAPI_SOURCE_DIR
#define GW_OPENAPI_SOURCE_DIR "/usr/share/ghl-gateway/openapi"
#endif

struct doc {
    char *name; /* file name inside dir */
    cJSON *root;
};

struct loader {
    const char *dir; /* the main document's folder */
    struct doc docs[MAX_DOCS];
    size_t ndocs;
    char *err;
    size_t errlen;
};

static int lfail(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lfail(struct loader *l, const char *fmt, ...)
{
    if (l->err[0] != '\0')
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->err, l->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static cJSON *load_doc(struct loader *l, const char *name)
{
    for (size_t i = 0; i < l->ndocs; i++)
        if (strcmp(l->docs[i].name, name) == 0)
            return l->docs[i].root;
    if (l->ndocs == MAX_DOCS) {
        lfail(l, "too many referenced documents");
        return NULL;
    }
    char path[PATH_MAX + 256];
    size_t dl = strlen(l->dir);
    if (name[0] == '/')
        snprintf(path, sizeof path, "%s", name);
    else
        snprintf(path, sizeof path, "%s%s%s", l->dir, dl && l->dir[dl - 1] == '/' ? "" : "/", name);
    size_t len;
    char *buf = gw_read_file(path, MAX_DOC_BYTES, &len);
    if (buf == NULL) {
        lfail(l, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 64};
    cJSON *root = gw_json_parse(buf, len, &o, &je);
    free(buf);
    if (root == NULL) {
        lfail(l, "%s:%d: %s", path, je.line, je.msg);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        lfail(l, "%s: not a JSON object", path);
        return NULL;
    }
    l->docs[l->ndocs].name = strdup(name);
    if (l->docs[l->ndocs].name == NULL) {
        cJSON_Delete(root);
        lfail(l, "out of memory");
        return NULL;
    }
    l->docs[l->ndocs].root = root;
    l->ndocs++;
    return root;
}

/* Follows a JSON pointer ("/a/b~1c") from root. */
static const cJSON *pointer(const cJSON *root, const char *ptr)
{
    const cJSON *cur = root;
    if (*ptr == '\0')
        return root;
    if (*ptr != '/')
        return NULL;
    char tok[256];
    while (*ptr == '/' && cur) {
        ptr++;
        size_t n = 0;
        while (*ptr && *ptr != '/') {
            char c = *ptr++;
            if (c == '~') {
                if (*ptr == '0')
                    c = '~';
                else if (*ptr == '1')
                    c = '/';
                else
                    return NULL;
                ptr++;
            }
            if (n + 1 >= sizeof tok)
                return NULL;
            tok[n++] = c;
        }
        tok[n] = '\0';
        if (cJSON_IsArray(cur)) {
            char *end;
            long idx = strtol(tok, &end, 10);
            if (*end || end == tok || idx < 0)
                return NULL;
            cur = cJSON_GetArrayItem(cur, (int)idx);
        } else {
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        }
    }
    return cur;
}

/* Returns a deep copy of node in which every {"$ref": ...} is replaced by a resolved copy of
 * its target. root is the document node belongs to (local refs are relative to it). */
static cJSON *resolve(struct loader *l, const cJSON *node, const cJSON *root, int depth)
{
    if (depth > MAX_REF_DEPTH) {
        lfail(l, "$ref chain deeper than %d (cyclic?)", MAX_REF_DEPTH);
        return NULL;
    }
    const cJSON *ref = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, "$ref") : NULL;
    if (ref) {
        if (!cJSON_IsString(ref)) {
            lfail(l, "$ref is not a string");
            return NULL;
        }
        const char *s = ref->valuestring;
        const char *hash = strchr(s, '#');
        const cJSON *target_root = root;
        if (hash != s) {
            /* "../common/common-schemas.json#/..." -> common-schemas.json in the document's folder
             */
            size_t flen = hash ? (size_t)(hash - s) : strlen(s);
            char file[256];
            if (flen == 0 || flen >= sizeof file) {
                lfail(l, "bad $ref \"%s\"", s);
                return NULL;
            }
            memcpy(file, s, flen);
            file[flen] = '\0';
            const char *base = strrchr(file, '/');
            base = base ? base + 1 : file;
            if (*base == '\0' || strcmp(base, "..") == 0 || strcmp(base, ".") == 0) {
                lfail(l, "bad $ref \"%s\"", s);
                return NULL;
            }
            target_root = load_doc(l, base);
            if (target_root == NULL)
                return NULL;
        }
        const cJSON *target = pointer(target_root, hash ? hash + 1 : "");
        if (target == NULL) {
            lfail(l, "$ref \"%s\" points at nothing", s);
            return NULL;
        }
        return resolve(l, target, target_root, depth + 1);
    }
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node))
        return cJSON_Duplicate(node, 0);
    cJSON *copy = cJSON_IsObject(node) ? cJSON_CreateObject() : cJSON_CreateArray();
    if (copy == NULL) {
        lfail(l, "out of memory");
        return NULL;
    }
    for (const cJSON *c = node->child; c; c = c->next) {
        cJSON *rc = resolve(l, c, root, depth);
        if (rc == NULL) {
            cJSON_Delete(copy);
            return NULL;
        }
        if (c->string)
            cJSON_AddItemToObject(copy, c->string, rc);
        else
            cJSON_AddItemToArray(copy, rc);
    }
    return copy;
}

static const struct {
    const char *key;
    enum gw_method m;
} method_keys[] = {
    {"get", GW_M_GET},     {"post", GW_M_POST}, {"put", GW_M_PUT},         {"delete", GW_M_DELETE},
    {"patch", GW_M_PATCH}, {"head", GW_M_HEAD}, {"options", GW_M_OPTIONS},
};

const char *gw_method_name(enum gw_method m)
{
    static const char *names[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (m == (enum gw_method)(1 << i))
            return names[i];
    return "?";
}

enum gw_method gw_method_from_name(const char *name)
{
    for (int i = 0; i < 7; i++)
        if (strcmp(name, gw_method_name((enum gw_method)(1 << i))) == 0)
            return (enum gw_method)(1 << i);
    return 0;
}

static const char *str_member(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool true_member(const cJSON *o, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static int split_path(struct loader *l, struct gw_op *op)
{
    const char *p = op->path;
    if (p[0] != '/')
        return lfail(l, "path \"%s\" does not start with /", p);
    size_t cap = 1;
    for (const char *q = p; *q; q++)
        cap += *q == '/';
    op->seg = calloc(cap, sizeof *op->seg);
    if (op->seg == NULL)
        return lfail(l, "out of memory");
    p++;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0)
            return lfail(l, "path \"%s\" has an empty segment", op->path);
        if (p[0] == '{' && (n < 3 || p[n - 1] != '}'))
            return lfail(l, "path \"%s\": bad parameter segment", op->path);
        op->seg[op->nseg] = strndup(p, n);
        if (op->seg[op->nseg] == NULL)
            return lfail(l, "out of memory");
        op->nseg++;
        if (e == NULL)
            break;
        p = e + 1;
    }
    return 0;
}

static int add_param(struct loader *l, struct gw_op *op, const cJSON *pj, size_t cap)
{
    const char *name = str_member(pj, "name"), *in = str_member(pj, "in");
    if (name == NULL || in == NULL)
        return lfail(l, "%s: a parameter without name or in", op->id);
    enum gw_param_in where;
    if (strcmp(in, "path") == 0)
        where = GW_IN_PATH;
    else if (strcmp(in, "query") == 0)
        where = GW_IN_QUERY;
    else if (strcmp(in, "header") == 0)
        where = GW_IN_HEADER;
    else
        return 0; /* cookie parameters are never forwarded */
    for (size_t i = 0; i < op->nparams; i++)
        if (op->params[i].in == where && strcmp(op->params[i].name, name) == 0) {
            /* an operation-level parameter overrides the path-level one */
            op->params[i].required = true_member(pj, "required") || where == GW_IN_PATH;
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(pj, "schema");
            if (s)
                op->params[i].schema = s;
            return 0;
        }
    if (op->nparams == cap)
        return lfail(l, "%s: too many parameters", op->id);
    static const cJSON empty = {.type = cJSON_Object};
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(pj, "schema");
    op->params[op->nparams++] = (struct gw_param){
        .name = name,
        .in = where,
        .required = true_member(pj, "required") || where == GW_IN_PATH,
        .schema = schema ? schema : &empty,
    };
    return 0;
}

static int build_security(struct loader *l, struct gw_op *op, const cJSON *sec)
{
    if (!cJSON_IsArray(sec))
        return 0;
    int n = cJSON_GetArraySize(sec);
    op->sec = calloc((size_t)n + 1, sizeof *op->sec);
    if (op->sec == NULL)
        return lfail(l, "out of memory");
    bool agency = false, location = false;
    for (const cJSON *req = sec->child; req; req = req->next) {
        for (const cJSON *s = req->child; s; s = s->next) {
            if (!cJSON_IsArray(s))
                return lfail(l, "%s: security scheme %s has no scope list", op->id, s->string);
            struct gw_secreq *r = &op->sec[op->nsec];
            r->scheme = s->string;
            r->scopes = calloc((size_t)cJSON_GetArraySize(s) + 1, sizeof *r->scopes);
            if (r->scopes == NULL)
                return lfail(l, "out of memory");
            for (const cJSON *sc = s->child; sc; sc = sc->next) {
                if (!cJSON_IsString(sc))
                    return lfail(l, "%s: a scope is not a string", op->id);
                r->scopes[r->nscopes++] = sc->valuestring;
            }
            /* Agency-Access, Agency-Access-Only: the agency token; Location-Access...: Sub-Account
             */
            if (strncmp(s->string, "Agency-Access", 13) == 0)
                agency = true;
            else if (strncmp(s->string, "Location-Access", 15) == 0)
                location = true;
            if (op->scope == NULL && r->nscopes > 0)
                op->scope = r->scopes[0];
            op->nsec++;
            break; /* one scheme per requirement object in this document's style */
        }
    }
    if (agency)
        op->cred = GW_CRED_AGENCY;
    else if (location && gw_op_param(op, GW_IN_QUERY, "locationId") != NULL)
        op->cred = GW_CRED_LOCATION;
    return 0;
}

/* Is a property's schema a secret's: format "password", writeOnly, or (as HighLevel's document
 * marks its password) an example of asterisks only? */
static bool secret_schema(const cJSON *sch)
{
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(sch, "format");
    if (cJSON_IsString(format) && strcmp(format->valuestring, "password") == 0)
        return true;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sch, "writeOnly")))
        return true;
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(sch, "example");
    return cJSON_IsString(ex) && ex->valuestring[0] != '\0' &&
           strspn(ex->valuestring, "*") == strlen(ex->valuestring);
}

/* The op's secret body members, found once at load (the audit record asks for every member). */
static int find_secrets(struct gw_op *op)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(op->body_schema, "properties");
    size_t n = 0;
    for (const cJSON *p = cJSON_IsObject(props) ? props->child : NULL; p; p = p->next)
        n += secret_schema(p);
    if (n == 0)
        return 0;
    op->secret = calloc(n, sizeof *op->secret);
    if (op->secret == NULL)
        return -1;
    for (const cJSON *p = props->child; p; p = p->next)
        if (secret_schema(p))
            op->secret[op->nsecret++] = p->string;
    return 0;
}

static int build_op(struct loader *l, struct gw_openapi *m, const char *path, enum gw_method meth,
                    const cJSON *oj, const cJSON *path_params)
{
    const char *id = str_member(oj, "operationId");
    if (id == NULL)
        return lfail(l, "%s %s has no operationId", gw_method_name(meth), path);
    if (gw_openapi_op(m, id) != NULL)
        return lfail(l, "operationId %s appears twice", id);
    struct gw_op *op = &m->ops[m->nops++];
    *op = (struct gw_op){.method = meth, .path = path, .id = id};
    op->deprecated = true_member(oj, "deprecated");
    if (split_path(l, op) != 0)
        return -1;
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(oj, "parameters");
    size_t cap =
        (size_t)cJSON_GetArraySize(params) + (size_t)cJSON_GetArraySize(path_params) + op->nseg + 1;
    op->params = calloc(cap, sizeof *op->params);
    op->synth = calloc(op->nseg + 1, sizeof *op->synth);
    if (op->params == NULL || op->synth == NULL)
        return lfail(l, "out of memory");
    for (const cJSON *p = cJSON_IsArray(path_params) ? path_params->child : NULL; p; p = p->next)
        if (add_param(l, op, p, cap) != 0)
            return -1;
    for (const cJSON *p = cJSON_IsArray(params) ? params->child : NULL; p; p = p->next)
        if (add_param(l, op, p, cap) != 0)
            return -1;
    /* Some ops use {userId} without declaring it (FACTS: PUT/DELETE /users/{userId}): every
     * template segment is a path parameter whether declared or not. */
    for (size_t i = 0; i < op->nseg; i++) {
        if (op->seg[i][0] != '{')
            continue;
        char name[128];
        size_t n = strlen(op->seg[i]) - 2;
        if (n >= sizeof name)
            return lfail(l, "%s: parameter name too long", op->id);
        memcpy(name, op->seg[i] + 1, n);
        name[n] = '\0';
        if (gw_op_param(op, GW_IN_PATH, name) == NULL) {
            static char type_key[] = "type", type_string[] = "string";
            static const cJSON str_schema_type = {
                .type = cJSON_String, .valuestring = type_string, .string = type_key};
            static const cJSON str_schema = {.type = cJSON_Object,
                                             .child = (cJSON *)&str_schema_type};
            char *owned = strdup(name);
            if (owned == NULL)
                return lfail(l, "out of memory");
            op->synth[op->nsynth++] = owned;
            op->params[op->nparams++] = (struct gw_param){
                .name = owned,
                .in = GW_IN_PATH,
                .required = true,
                .schema = &str_schema,
            };
        }
    }
    const cJSON *rb = cJSON_GetObjectItemCaseSensitive(oj, "requestBody");
    if (rb) {
        op->body_required = true_member(rb, "required");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(rb, "content");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(content, "application/json");
        op->body_schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
        if (op->body_schema == NULL)
            return lfail(l, "%s: request body without an application/json schema", op->id);
        if (find_secrets(op) != 0)
            return lfail(l, "out of memory");
    }
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(oj, "security");
    if (sec == NULL)
        sec = cJSON_GetObjectItemCaseSensitive(m->doc, "security");
    return build_security(l, op, sec);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Collects the enum of every "scopes"/"scopesAssignedToOnly"-style array of strings: any
 * property whose items enumerate values and whose name starts with "scopes". */
static void collect_scopes(const cJSON *schema, const char ***v, size_t *n, size_t *cap, int depth)
{
    if (!cJSON_IsObject(schema) || depth > 16)
        return;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next) {
        if (strncmp(p->string, "scopes", 6) == 0) {
            const cJSON *items = cJSON_GetObjectItemCaseSensitive(p, "items");
            const cJSON *en = cJSON_GetObjectItemCaseSensitive(items, "enum");
            for (const cJSON *e = cJSON_IsArray(en) ? en->child : NULL; e; e = e->next) {
                if (!cJSON_IsString(e))
                    continue;
                if (*n == *cap) {
                    size_t nc = *cap ? *cap * 2 : 256;
                    const char **nv = realloc(*v, nc * sizeof *nv);
                    if (nv == NULL)
                        return;
                    *v = nv;
                    *cap = nc;
                }
                (*v)[(*n)++] = e->valuestring;
            }
        }
        collect_scopes(p, v, n, cap, depth + 1);
    }
    collect_scopes(cJSON_GetObjectItemCaseSensitive(schema, "items"), v, n, cap, depth + 1);
}

static int build_tables(struct loader *l, struct gw_openapi *m)
{
    size_t cap = 0;
    for (size_t i = 0; i < m->nops; i++)
        collect_scopes(m->ops[i].body_schema, &m->scopes, &m->nscopes, &cap, 0);
    if (m->nscopes) {
        qsort(m->scopes, m->nscopes, sizeof *m->scopes, cmp_str);
        size_t w = 1;
        for (size_t r = 1; r < m->nscopes; r++)
            if (strcmp(m->scopes[r], m->scopes[w - 1]) != 0)
                m->scopes[w++] = m->scopes[r];
        m->nscopes = w;
    }
    /* Permission flags: the boolean properties of the first body schema's "permissions". */
    for (size_t i = 0; i < m->nops && m->perms == NULL; i++) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(m->ops[i].body_schema, "properties");
        const cJSON *perm = cJSON_GetObjectItemCaseSensitive(props, "permissions");
        const cJSON *pp = cJSON_GetObjectItemCaseSensitive(perm, "properties");
        if (!cJSON_IsObject(pp))
            continue;
        m->perms = calloc((size_t)cJSON_GetArraySize(pp) + 1, sizeof *m->perms);
        if (m->perms == NULL)
            return lfail(l, "out of memory");
        for (const cJSON *f = pp->child; f; f = f->next) {
            const char *t = str_member(f, "type");
            if (t == NULL || strcmp(t, "boolean") != 0)
                continue;
            m->perms[m->nperms].name = f->string;
            m->perms[m->nperms].def = true_member(f, "default");
            m->perms[m->nperms].has_def =
                cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(f, "default"));
            m->nperms++;
        }
    }
    /* Accepted Version values: the union of the Version header enums. */
    size_t vcap = 0;
    for (size_t i = 0; i < m->nops; i++) {
        const struct gw_param *p = gw_op_param(&m->ops[i], GW_IN_HEADER, "Version");
        if (p == NULL)
            continue;
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(p->schema, "enum");
        for (const cJSON *e = cJSON_IsArray(en) ? en->child : NULL; e; e = e->next) {
            if (!cJSON_IsString(e))
                continue;
            bool seen = false;
            for (size_t k = 0; k < m->nversions; k++)
                seen |= strcmp(m->versions[k], e->valuestring) == 0;
            if (seen)
                continue;
            if (m->nversions == vcap) {
                vcap = vcap ? vcap * 2 : 4;
                const char **nv = realloc(m->versions, vcap * sizeof *nv);
                if (nv == NULL)
                    return lfail(l, "out of memory");
                m->versions = nv;
            }
            m->versions[m->nversions++] = e->valuestring;
        }
    }
    return 0;
}

int gw_openapi_load(const char *path, struct gw_openapi **out, char *err, size_t errlen)
{
    err[0] = '\0';
    *out = NULL;
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    struct loader l = {.dir = dir, .err = err, .errlen = errlen};
    struct gw_openapi *m = calloc(1, sizeof *m);
    if (m == NULL)
        return lfail(&l, "out of memory");
    m->path = strdup(path);
    const cJSON *raw = m->path ? load_doc(&l, slash ? slash + 1 : path) : NULL;
    if (raw == NULL)
        goto bad;
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(raw, "openapi");
    if (!cJSON_IsString(ver) || strncmp(ver->valuestring, "3.", 2) != 0) {
        lfail(&l, "%s: not an OpenAPI 3 document", path);
        goto bad;
    }
    m->doc = resolve(&l, raw, raw, 0);
    if (m->doc == NULL)
        goto bad;
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(m->doc, "paths");
    if (!cJSON_IsObject(paths) || paths->child == NULL) {
        lfail(&l, "%s: no paths", path);
        goto bad;
    }
    size_t cap = 0;
    for (const cJSON *p = paths->child; p; p = p->next)
        cap += (size_t)cJSON_GetArraySize(p);
    m->ops = calloc(cap + 1, sizeof *m->ops);
    if (m->ops == NULL) {
        lfail(&l, "out of memory");
        goto bad;
    }
    for (const cJSON *p = paths->child; p; p = p->next) {
        const cJSON *pparams = cJSON_GetObjectItemCaseSensitive(p, "parameters");
        for (size_t k = 0; k < sizeof method_keys / sizeof *method_keys; k++) {
            const cJSON *oj = cJSON_GetObjectItemCaseSensitive(p, method_keys[k].key);
            if (oj && build_op(&l, m, p->string, method_keys[k].m, oj, pparams) != 0)
                goto bad;
        }
    }
    if (m->nops == 0) {
        lfail(&l, "%s: no operations", path);
        goto bad;
    }
    if (build_tables(&l, m) != 0)
        goto bad;
    for (size_t i = 0; i < l.ndocs; i++) {
        free(l.docs[i].name);
        cJSON_Delete(l.docs[i].root);
    }
    *out = m;
    return 0;
bad:
    for (size_t i = 0; i < l.ndocs; i++) {
        free(l.docs[i].name);
        cJSON_Delete(l.docs[i].root);
    }
    if (err[0] == '\0')
        snprintf(err, errlen, "%s: cannot load", path);
    gw_openapi_free(m);
    return -1;
}

void gw_openapi_free(struct gw_openapi *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; m->ops && i < m->nops; i++) {
        struct gw_op *op = &m->ops[i];
        for (size_t k = 0; k < op->nseg; k++)
            free(op->seg[k]);
        free(op->seg);
        for (size_t k = 0; k < op->nsec; k++)
            free(op->sec[k].scopes);
        free(op->sec);
        free(op->params);
        for (size_t k = 0; k < op->nsynth; k++)
            free(op->synth[k]);
        free(op->synth);
        free(op->secret);
    }
    free(m->ops);
    free(m->scopes);
    free(m->perms);
    free(m->versions);
    cJSON_Delete(m->doc);
    free(m->path);
    free(m);
}

const struct gw_op *gw_openapi_op(const struct gw_openapi *m, const char *id)
{
    for (size_t i = 0; i < m->nops; i++)
        if (strcmp(m->ops[i].id, id) == 0)
            return &m->ops[i];
    return NULL;
}

bool gw_openapi_has_scope(const struct gw_openapi *m, const char *scope)
{
    return bsearch(&scope, m->scopes, m->nscopes, sizeof *m->scopes, cmp_str) != NULL;
}

const struct gw_param *gw_op_param(const struct gw_op *op, enum gw_param_in in, const char *name)
{
    for (size_t i = 0; i < op->nparams; i++) {
        const struct gw_param *p = &op->params[i];
        if (p->in != in)
            continue;
        if (strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}

bool gw_openapi_secret(const struct gw_op *op, const char *member)
{
    for (size_t i = 0; i < op->nsecret; i++)
        if (strcmp(op->secret[i], member) == 0)
            return true;
    return false;
}

const char *gw_openapi_default_path(void)
{
    /* Installed layout first: <prefix>/bin/ghl-gateway -> <prefix>/share/ghl-gateway/openapi. */
    static char found[PATH_MAX + 64];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *s = strrchr(exe, '/');
        if (s) {
            *s = '\0';
            snprintf(found, sizeof found, "%s/../share/ghl-gateway/openapi/users.openapi.json",
                     exe);
            if (access(found, R_OK) == 0)
                return found;
        }
    }
    return GW_OPENAPI_SOURCE_DIR "/users.openapi.json";
}
