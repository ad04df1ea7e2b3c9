/* The config file is walked with tables of fields (key, kind, offset, range, default), one
 * table per section, so that unknown keys, types, ranges and defaults are handled by one loop. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "json.h"
#include "openapi.h"

#define MAX_CONFIG_BYTES (1u << 20)

/* ---- walking context ---- */

struct ctx {
    struct gw_config *c;
    struct gw_errs *errs;
    struct gw_json_lines lines;
    bool check_files;
    size_t nerr_before;
};

static int line_of(struct ctx *x, const cJSON *node)
{
    return gw_json_line(&x->lines, node);
}

static void err_at(struct ctx *x, const cJSON *node, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_at(struct ctx *x, const cJSON *node, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = line_of(x, node);
    if (line > 0)
        gw_msgs_add(&x->errs->problems, "%s:%d: %s: %s", x->c->file, line, key, msg);
    else
        gw_msgs_add(&x->errs->problems, "%s: %s: %s", x->c->file, key, msg);
}

static char *resolve_path(struct ctx *x, const char *p)
{
    char *out = NULL;
    if (p[0] == '/' || strcmp(x->c->dir, ".") == 0) {
        out = strdup(p);
    } else if (asprintf(&out, "%s/%s", x->c->dir, p) < 0) {
        out = NULL;
    }
    return out;
}

enum file_need { NEED_NONE, NEED_READ, NEED_DIR, NEED_PARENT };

static void check_path(struct ctx *x, const cJSON *node, const char *key, const char *path,
                       enum file_need need)
{
    if (!x->check_files || path == NULL || need == NEED_NONE)
        return;
    struct stat st;
    if (need == NEED_PARENT) {
        char *dup = strdup(path);
        if (dup == NULL)
            return;
        char *s = strrchr(dup, '/');
        const char *dir = s ? (s == dup ? "/" : (*s = '\0', dup)) : ".";
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            err_at(x, node, key, "folder %s of %s does not exist", dir, path);
        free(dup);
        return;
    }
    if (stat(path, &st) != 0) {
        err_at(x, node, key, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    if (need == NEED_DIR) {
        if (!S_ISDIR(st.st_mode))
            err_at(x, node, key, "%s is not a folder", path);
        else if (access(path, R_OK | X_OK) != 0)
            err_at(x, node, key, "cannot read folder %s: %s", path, strerror(errno));
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        err_at(x, node, key, "%s is a folder, not a file", path);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        err_at(x, node, key, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    fclose(f);
}

/* ---- field tables ---- */

enum kind {
    K_STR,       /* non-empty string */
    K_STR_NULL,  /* string or null */
    K_PATH,      /* string, resolved against the config folder */
    K_PATH_NULL, /* the same, or null */
    K_INT,
    K_BOOL,
    K_SECTION,
    K_STRLIST, /* array of non-empty strings; count at off2 */
    K_CUSTOM,
};

struct field;
typedef void (*custom_fn)(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                          const char *key);

struct field {
    const char *key;
    enum kind kind;
    size_t off;
    long min, max;           /* K_INT range; K_STRLIST minimum count in min */
    const struct field *sub; /* K_SECTION */
    size_t off2;             /* K_STRLIST count */
    custom_fn custom;
    const char *def;     /* default for strings and paths (NULL = null) */
    long idef;           /* default for ints and bools */
    enum file_need need; /* paths: what must exist */
};

#define AT(base, off, type) ((type *)((char *)(base) + (off)))

static void set_defaults(struct ctx *x, void *base, const struct field *t)
{
    for (const struct field *f = t; f->key; f++) {
        switch (f->kind) {
        case K_STR:
        case K_STR_NULL:
            *AT(base, f->off, char *) = f->def ? strdup(f->def) : NULL;
            break;
        case K_PATH:
        case K_PATH_NULL:
            *AT(base, f->off, char *) = f->def ? resolve_path(x, f->def) : NULL;
            break;
        case K_INT:
            *AT(base, f->off, long) = f->idef;
            break;
        case K_BOOL:
            *AT(base, f->off, bool) = f->idef != 0;
            break;
        case K_SECTION:
            set_defaults(x, base, f->sub);
            break;
        case K_STRLIST:
            if (f->def) {
                char **v = calloc(2, sizeof *v);
                if (v) {
                    v[0] = strdup(f->def);
                    *AT(base, f->off2, size_t) = 1;
                }
                *AT(base, f->off, char **) = v;
            }
            break;
        case K_CUSTOM:
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

static void walk(struct ctx *x, const cJSON *obj, void *base, const struct field *t,
                 const char *prefix);

static void parse_field(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                        const char *key)
{
    switch (f->kind) {
    case K_STR:
    case K_STR_NULL:
    case K_PATH:
    case K_PATH_NULL: {
        bool nullable = f->kind == K_STR_NULL || f->kind == K_PATH_NULL;
        char **dst = AT(base, f->off, char *);
        if (cJSON_IsNull(v) && nullable) {
            free(*dst);
            *dst = NULL;
            return;
        }
        if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
            err_at(x, v, key, "must be a non-empty string%s", nullable ? " or null" : "");
            return;
        }
        free(*dst);
        bool is_path = f->kind == K_PATH || f->kind == K_PATH_NULL;
        *dst = is_path ? resolve_path(x, v->valuestring) : strdup(v->valuestring);
        if (is_path)
            check_path(x, v, key, *dst, f->need);
        return;
    }
    case K_INT: {
        double d = v->valuedouble;
        if (!cJSON_IsNumber(v) || d != floor(d)) {
            err_at(x, v, key, "must be an integer");
            return;
        }
        if (d < (double)f->min || d > (double)f->max) {
            err_at(x, v, key, "must be between %ld and %ld", f->min, f->max);
            return;
        }
        *AT(base, f->off, long) = (long)d;
        return;
    }
    case K_BOOL:
        if (!cJSON_IsBool(v)) {
            err_at(x, v, key, "must be true or false");
            return;
        }
        *AT(base, f->off, bool) = cJSON_IsTrue(v);
        return;
    case K_SECTION:
        if (!cJSON_IsObject(v)) {
            err_at(x, v, key, "must be an object");
            return;
        }
        walk(x, v, base, f->sub, key);
        return;
    case K_STRLIST: {
        if (!cJSON_IsArray(v)) {
            err_at(x, v, key, "must be an array of strings");
            return;
        }
        size_t n = (size_t)cJSON_GetArraySize(v), k = 0;
        if ((long)n < f->min) {
            err_at(x, v, key, "must have at least %ld entr%s", f->min, f->min == 1 ? "y" : "ies");
            return;
        }
        char **out = calloc(n + 1, sizeof *out);
        if (out == NULL)
            return;
        for (const cJSON *e = v->child; e; e = e->next) {
            if (!cJSON_IsString(e) || e->valuestring[0] == '\0') {
                err_at(x, e, key, "entry %zu must be a non-empty string", k);
                free_strlist(out, k);
                return;
            }
            out[k++] = strdup(e->valuestring);
        }
        free_strlist(*AT(base, f->off, char **), *AT(base, f->off2, size_t));
        *AT(base, f->off, char **) = out;
        *AT(base, f->off2, size_t) = n;
        return;
    }
    case K_CUSTOM:
        f->custom(x, v, base, f, key);
        return;
    }
}

static void walk(struct ctx *x, const cJSON *obj, void *base, const struct field *t,
                 const char *prefix)
{
    for (const cJSON *m = obj->child; m; m = m->next) {
        char key[256];
        if (prefix[0])
            snprintf(key, sizeof key, "%s.%s", prefix, m->string);
        else
            snprintf(key, sizeof key, "%s", m->string);
        const struct field *f = t;
        while (f->key && strcmp(f->key, m->string) != 0)
            f++;
        if (f->key == NULL) {
            err_at(x, m, key, "unknown key");
            continue;
        }
        parse_field(x, m, base, f, key);
    }
}

/* ---- custom fields ---- */

static void cust_min_version(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                             const char *key)
{
    int *dst = AT(base, f->off, int);
    if (v == NULL) {
        *dst = TLS1_2_VERSION;
        return;
    }
    if (cJSON_IsString(v) && strcmp(v->valuestring, "1.2") == 0)
        *dst = TLS1_2_VERSION;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "1.3") == 0)
        *dst = TLS1_3_VERSION;
    else
        err_at(x, v, key, "must be \"1.2\" or \"1.3\"");
}

static void cust_address(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                         const char *key)
{
    char **dst = AT(base, f->off, char *);
    if (v == NULL) {
        *dst = strdup(f->def);
        return;
    }
    unsigned char buf[sizeof(struct in6_addr)];
    if (!cJSON_IsString(v) || (inet_pton(AF_INET, v->valuestring, buf) != 1 &&
                               inet_pton(AF_INET6, v->valuestring, buf) != 1)) {
        err_at(x, v, key, "must be an IPv4 or IPv6 address");
        return;
    }
    free(*dst);
    *dst = strdup(v->valuestring);
}

static bool is_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/* https://host[:port][/] — nothing else: the gateway builds every path itself. */
static int parse_https_url(const char *url, char **host, long *port, char *why, size_t whylen)
{
    if (strncmp(url, "https://", 8) != 0) {
        snprintf(why, whylen, "must start with https://");
        return -1;
    }
    const char *h = url + 8, *end;
    char hostbuf[256];
    if (*h == '[') {
        end = strchr(h, ']');
        if (end == NULL || (size_t)(end - h - 1) >= sizeof hostbuf) {
            snprintf(why, whylen, "bad IPv6 host");
            return -1;
        }
        memcpy(hostbuf, h + 1, (size_t)(end - h - 1));
        hostbuf[end - h - 1] = '\0';
        unsigned char a6[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET6, hostbuf, a6) != 1) {
            snprintf(why, whylen, "bad IPv6 host");
            return -1;
        }
        end++;
    } else {
        end = h + strcspn(h, ":/?#@");
        if (end == h || (size_t)(end - h) >= sizeof hostbuf) {
            snprintf(why, whylen, "has no host");
            return -1;
        }
        memcpy(hostbuf, h, (size_t)(end - h));
        hostbuf[end - h] = '\0';
        for (const char *c = hostbuf; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '.')) {
                snprintf(why, whylen, "bad character in host");
                return -1;
            }
    }
    long p = 443;
    if (*end == ':') {
        /* 1 to 5 digits, no sign, space or leading zero */
        const char *d = end + 1;
        size_t nd = strspn(d, "0123456789");
        p = 0;
        for (size_t i = 0; i < nd && i < 6; i++)
            p = p * 10 + (d[i] - '0');
        if (nd == 0 || nd > 5 || d[0] == '0' || p > 65535) {
            snprintf(why, whylen, "bad port");
            return -1;
        }
        end = d + nd;
    }
    if (*end == '/')
        end++;
    if (*end != '\0') {
        snprintf(why, whylen, "must be https://host[:port] with no path, query or user");
        return -1;
    }
    *host = strdup(hostbuf);
    *port = p;
    return 0;
}

static void cust_upstream_url(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                              const char *key)
{
    struct gw_config *c = base;
    char **dst = AT(base, f->off, char *);
    const char *url = v ? (cJSON_IsString(v) ? v->valuestring : NULL) : f->def;
    if (url == NULL) {
        err_at(x, v, key, "must be a string");
        return;
    }
    char why[128], *host = NULL;
    long port;
    if (parse_https_url(url, &host, &port, why, sizeof why) != 0) {
        err_at(x, v, key, "%s", why);
        return;
    }
    free(*dst);
    free(c->upstream.host);
    *dst = strdup(url);
    c->upstream.host = host;
    c->upstream.port = port;
}

static void cust_location_tokens(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                                 const char *key)
{
    (void)f;
    struct gw_config *c = base;
    if (v == NULL || cJSON_IsNull(v))
        return;
    if (!cJSON_IsObject(v)) {
        err_at(x, v, key, "must be an object of \"<locationId>\": \"path\"");
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    c->credentials.location = calloc(n + 1, sizeof *c->credentials.location);
    if (c->credentials.location == NULL)
        return;
    for (const cJSON *e = v->child; e; e = e->next) {
        char k[256];
        snprintf(k, sizeof k, "%s.%s", key, e->string);
        if (!is_id(e->string)) {
            err_at(x, e, k, "a location id is 1 to 64 letters and digits");
            continue;
        }
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0') {
            err_at(x, e, k, "must be the path of a token file");
            continue;
        }
        struct gw_cfg_location_token *t = &c->credentials.location[c->credentials.nlocation++];
        t->location_id = strdup(e->string);
        t->file = resolve_path(x, e->valuestring);
        check_path(x, e, k, t->file, NEED_READ);
    }
}

static const char *const known_algs[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                         "RS512", "ES256", "ES384", "ES512"};

static const struct field key_fields[] = {
    {"kid", K_STR_NULL, offsetof(struct gw_cfg_key, kid)},
    {"alg", K_STR_NULL, offsetof(struct gw_cfg_key, alg)},
    {"pem_file", K_PATH_NULL, offsetof(struct gw_cfg_key, pem_file), .need = NEED_READ},
    {"secret_file", K_PATH_NULL, offsetof(struct gw_cfg_key, secret_file), .need = NEED_READ},
    {NULL},
};

static void cust_keys(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                      const char *key)
{
    (void)f;
    struct gw_cfg_issuer *is = base;
    if (v == NULL || cJSON_IsNull(v))
        return;
    if (!cJSON_IsArray(v)) {
        err_at(x, v, key, "must be an array of keys");
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    is->keys = calloc(n + 1, sizeof *is->keys);
    if (is->keys == NULL)
        return;
    int hmac = 0, pub = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        char k[256];
        snprintf(k, sizeof k, "%s[%zu]", key, is->nkeys);
        struct gw_cfg_key *kk = &is->keys[is->nkeys++];
        kk->line = line_of(x, e);
        if (!cJSON_IsObject(e)) {
            err_at(x, e, k, "must be an object");
            continue;
        }
        set_defaults(x, kk, key_fields);
        walk(x, e, kk, key_fields, k);
        bool known = false;
        for (size_t a = 0; kk->alg && a < sizeof known_algs / sizeof *known_algs; a++)
            known |= strcmp(kk->alg, known_algs[a]) == 0;
        if (!known) {
            err_at(x, e, k,
                   "alg must be one of HS256 HS384 HS512 RS256 RS384 RS512 ES256 ES384 "
                   "ES512 (\"none\" is never accepted)");
            continue;
        }
        bool is_hmac = kk->alg[0] == 'H';
        if (is_hmac && (kk->secret_file == NULL || kk->pem_file != NULL))
            err_at(x, e, k, "an %s key needs secret_file (and no pem_file)", kk->alg);
        if (!is_hmac && (kk->pem_file == NULL || kk->secret_file != NULL))
            err_at(x, e, k, "an %s key needs pem_file (and no secret_file)", kk->alg);
        hmac += is_hmac;
        pub += !is_hmac;
        for (size_t j = 0; j + 1 < is->nkeys; j++) {
            const char *a = is->keys[j].kid, *b = kk->kid;
            if ((a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0))
                err_at(x, e, k, "kid %s is used twice in this issuer", b ? b : "(none)");
        }
    }
    if (hmac && pub)
        err_at(x, v, key, "an issuer's keys are either all HMAC secrets or all public keys");
}

static const struct field issuer_fields[] = {
    {"issuer", K_STR, offsetof(struct gw_cfg_issuer, issuer)},
    {"audiences", K_STRLIST, offsetof(struct gw_cfg_issuer, audiences), 0, 0, NULL,
     offsetof(struct gw_cfg_issuer, naudiences)},
    {"keys", K_CUSTOM, 0, .custom = cust_keys},
    {"jwks_file", K_PATH_NULL, offsetof(struct gw_cfg_issuer, jwks_file), .need = NEED_READ},
    {"jwks_url", K_STR_NULL, offsetof(struct gw_cfg_issuer, jwks_url)},
    {"jwks_ca_file", K_PATH_NULL, offsetof(struct gw_cfg_issuer, jwks_ca_file), .need = NEED_READ},
    {"jwks_refresh_s", K_INT, offsetof(struct gw_cfg_issuer, jwks_refresh_s), 1, 86400L * 7,
     .idef = 600},
    {"jwks_refetch_min_s", K_INT, offsetof(struct gw_cfg_issuer, jwks_refetch_min_s), 1, 3600,
     .idef = 30},
    {"leeway_s", K_INT, offsetof(struct gw_cfg_issuer, leeway_s), 0, 3600, .idef = 60},
    {"max_lifetime_s", K_INT, offsetof(struct gw_cfg_issuer, max_lifetime_s), 1, 86400L * 366,
     .idef = 86400},
    {"scope_claims", K_STRLIST, offsetof(struct gw_cfg_issuer, scope_claims), 1, 0, NULL,
     offsetof(struct gw_cfg_issuer, nscope_claims)},
    {"subject_claim", K_STR, offsetof(struct gw_cfg_issuer, subject_claim), .def = "sub"},
    {NULL},
};

static void cust_issuers(struct ctx *x, const cJSON *v, void *base, const struct field *f,
                         const char *key)
{
    (void)f;
    struct gw_config *c = base;
    if (v == NULL || cJSON_IsNull(v))
        return;
    if (!cJSON_IsArray(v)) {
        err_at(x, v, key, "must be an array of issuers");
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    c->auth.issuers = calloc(n + 1, sizeof *c->auth.issuers);
    if (c->auth.issuers == NULL)
        return;
    for (const cJSON *e = v->child; e; e = e->next) {
        char k[256];
        snprintf(k, sizeof k, "%s[%zu]", key, c->auth.nissuers);
        struct gw_cfg_issuer *is = &c->auth.issuers[c->auth.nissuers++];
        is->line = line_of(x, e);
        if (!cJSON_IsObject(e)) {
            err_at(x, e, k, "must be an object");
            continue;
        }
        set_defaults(x, is, issuer_fields);
        /* SPEC §2's defaults: audiences ["ghl-gateway"] (fail closed: [] must be explicit to
         * turn the aud check off), scope_claims both claim names */
        is->audiences = calloc(2, sizeof *is->audiences);
        if (is->audiences) {
            is->audiences[0] = strdup("ghl-gateway");
            is->naudiences = 1;
        }
        is->scope_claims = calloc(3, sizeof *is->scope_claims);
        if (is->scope_claims) {
            is->scope_claims[0] = strdup("scope");
            is->scope_claims[1] = strdup("scp");
            is->nscope_claims = 2;
        }
        walk(x, e, is, issuer_fields, k);
        if (is->issuer == NULL)
            err_at(x, e, k, "issuer is required");
        if (is->nkeys == 0 && is->jwks_file == NULL && is->jwks_url == NULL)
            err_at(x, e, k, "needs keys, jwks_file or jwks_url");
        if (is->jwks_url && strncmp(is->jwks_url, "https://", 8) != 0)
            err_at(x, e, k, "jwks_url must be an https URL");
        if (is->issuer)
            for (size_t j = 0; j + 1 < c->auth.nissuers; j++)
                if (c->auth.issuers[j].issuer && strcmp(c->auth.issuers[j].issuer, is->issuer) == 0)
                    err_at(x, e, k, "issuer %s is configured twice", is->issuer);
    }
}

#define C(field) offsetof(struct gw_config, field)

static const struct field listen_fields[] = {
    {"address", K_CUSTOM, C(listen.address), .custom = cust_address, .def = "0.0.0.0"},
    {"port", K_INT, C(listen.port), 1, 65535, .idef = 8443},
    {"workers", K_INT, C(listen.workers), 0, 256, .idef = 0},
    {NULL},
};
static const struct field tls_fields[] = {
    {"cert", K_PATH, C(tls.cert), .def = "certs/dev/gateway.crt", .need = NEED_READ},
    {"key", K_PATH, C(tls.key), .def = "certs/dev/gateway.key", .need = NEED_READ},
    {"min_version", K_CUSTOM, C(tls.min_version), .custom = cust_min_version},
    {"client_ca", K_PATH_NULL, C(tls.client_ca), .need = NEED_READ},
    {NULL},
};
static const struct field admin_fields[] = {
    {"address", K_CUSTOM, C(admin.address), .custom = cust_address, .def = "127.0.0.1"},
    {"port", K_INT, C(admin.port), 1, 65535, .idef = 9901},
    {NULL},
};
static const struct field upstream_fields[] = {
    {"url", K_CUSTOM, C(upstream.url), .custom = cust_upstream_url,
     .def = "https://services.leadconnectorhq.com"},
    {"ca_file", K_PATH_NULL, C(upstream.ca_file), .need = NEED_READ},
    {"connect_timeout_ms", K_INT, C(upstream.connect_timeout_ms), 1, 600000, .idef = 5000},
    {"timeout_ms", K_INT, C(upstream.timeout_ms), 1, 600000, .idef = 30000},
    {"max_idle_connections", K_INT, C(upstream.max_idle_connections), 0, 100000, .idef = 32},
    {"api_versions", K_STRLIST, C(upstream.api_versions), 1, 0, NULL, C(upstream.napi_versions),
     .def = "2021-07-28"},
    {"openapi", K_PATH_NULL, C(upstream.openapi), .need = NEED_READ},
    {NULL},
};
static const struct field credentials_fields[] = {
    {"agency_token_file", K_PATH_NULL, C(credentials.agency_token_file),
     .def = "secrets/agency.token", .need = NEED_READ},
    {"location_token_files", K_CUSTOM, 0, .custom = cust_location_tokens},
    {NULL},
};
static const struct field auth_fields[] = {
    {"issuers", K_CUSTOM, 0, .custom = cust_issuers},
    {"token_cache_entries", K_INT, C(auth.token_cache_entries), 0, 16777216, .idef = 65536},
    {NULL},
};
static const struct field policies_fields[] = {
    {"dir", K_PATH, C(policies.dir), .def = "policies/examples", .need = NEED_DIR},
    {NULL},
};
static const struct field audit_fields[] = {
    {"file", K_PATH_NULL, C(audit.file), .def = "audit/audit.jsonl", .need = NEED_PARENT},
    {"stdout", K_BOOL, C(audit.to_stdout), .idef = 0},
    {"fsync", K_BOOL, C(audit.fsync), .idef = 1},
    {"hmac_key_file", K_PATH_NULL, C(audit.hmac_key_file), .need = NEED_READ},
    {"include_reads", K_BOOL, C(audit.include_reads), .idef = 0},
    {"sync_timeout_ms", K_INT, C(audit.sync_timeout_ms), 1, 600000, .idef = 5000},
    {NULL},
};
static const struct field access_log_fields[] = {
    {"file", K_PATH_NULL, C(access_log.file), .need = NEED_PARENT},
    {NULL},
};
static const struct field per_subject_fields[] = {
    {"burst", K_INT, C(rate_limit.per_subject.burst), 1, 1000000000, .idef = 100},
    {"per_seconds", K_INT, C(rate_limit.per_subject.per_seconds), 1, 86400, .idef = 10},
    {NULL},
};
static const struct field rl_upstream_fields[] = {
    {"burst", K_INT, C(rate_limit.upstream.burst), 1, 1000000000, .idef = 100},
    {"per_seconds", K_INT, C(rate_limit.upstream.per_seconds), 1, 86400, .idef = 10},
    {"daily", K_INT, C(rate_limit.upstream.daily), 1, 1000000000, .idef = 200000},
    {NULL},
};
static const struct field rate_limit_fields[] = {
    {"per_subject", K_SECTION, 0, .sub = per_subject_fields},
    {"upstream", K_SECTION, 0, .sub = rl_upstream_fields},
    {NULL},
};
static const struct field limits_fields[] = {
    {"max_header_bytes", K_INT, C(limits.max_header_bytes), 1024, 1048576, .idef = 16384},
    {"max_body_bytes", K_INT, C(limits.max_body_bytes), 0, 16777216, .idef = 65536},
    {"max_token_bytes", K_INT, C(limits.max_token_bytes), 256, 65536, .idef = 8192},
    {"max_json_depth", K_INT, C(limits.max_json_depth), 2, 256, .idef = 16},
    {"header_timeout_ms", K_INT, C(limits.header_timeout_ms), 10, 3600000, .idef = 10000},
    {"body_timeout_ms", K_INT, C(limits.body_timeout_ms), 10, 3600000, .idef = 30000},
    {"keepalive_timeout_ms", K_INT, C(limits.keepalive_timeout_ms), 0, 3600000, .idef = 60000},
    {"max_connections", K_INT, C(limits.max_connections), 1, 1000000, .idef = 10000},
    {"drain_timeout_ms", K_INT, C(limits.drain_timeout_ms), 0, 3600000, .idef = 20000},
    {NULL},
};
static const struct field top_fields[] = {
    {"listen", K_SECTION, 0, .sub = listen_fields},
    {"tls", K_SECTION, 0, .sub = tls_fields},
    {"admin", K_SECTION, 0, .sub = admin_fields},
    {"upstream", K_SECTION, 0, .sub = upstream_fields},
    {"credentials", K_SECTION, 0, .sub = credentials_fields},
    {"auth", K_SECTION, 0, .sub = auth_fields},
    {"policies", K_SECTION, 0, .sub = policies_fields},
    {"audit", K_SECTION, 0, .sub = audit_fields},
    {"access_log", K_SECTION, 0, .sub = access_log_fields},
    {"rate_limit", K_SECTION, 0, .sub = rate_limit_fields},
    {"limits", K_SECTION, 0, .sub = limits_fields},
    {NULL},
};

/* Fields whose default names a file are checked only when the file does not say otherwise;
 * defaults of paths that must exist are checked here, after the walk. */
static void check_defaults(struct ctx *x, const cJSON *root)
{
    static const struct {
        const char *section, *key;
        size_t off;
        enum file_need need;
    } d[] = {
        {"tls", "cert", C(tls.cert), NEED_READ},
        {"tls", "key", C(tls.key), NEED_READ},
        {"credentials", "agency_token_file", C(credentials.agency_token_file), NEED_READ},
        {"policies", "dir", C(policies.dir), NEED_DIR},
        {"audit", "file", C(audit.file), NEED_PARENT},
    };
    for (size_t i = 0; i < sizeof d / sizeof *d; i++) {
        const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, d[i].section);
        if (cJSON_GetObjectItemCaseSensitive(sec, d[i].key) != NULL)
            continue; /* given in the file: checked when parsed */
        char key[128];
        snprintf(key, sizeof key, "%s.%s (default)", d[i].section, d[i].key);
        check_path(x, NULL, key, *AT(x->c, d[i].off, char *), d[i].need);
    }
}

struct gw_config *gw_config_load(const char *path, bool check_files, struct gw_errs *errs)
{
    size_t len;
    char *buf = gw_read_file(path, MAX_CONFIG_BYTES, &len);
    if (buf == NULL) {
        gw_msgs_add(&errs->problems, "%s: cannot read: %s", path,
                    errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
        return NULL;
    }
    struct gw_config *c = gw_config_parse(path, buf, len, check_files, errs);
    free(buf);
    return c;
}

struct gw_config *gw_config_parse(const char *path, const char *buf, size_t len, bool check_files,
                                  struct gw_errs *errs)
{
    struct gw_config *c = calloc(1, sizeof *c);
    if (c == NULL) {
        gw_msgs_add(&errs->problems, "%s: out of memory", path);
        return NULL;
    }
    struct ctx x = {
        .c = c, .errs = errs, .check_files = check_files, .nerr_before = errs->problems.n};
    c->file = strdup(path);
    const char *slash = strrchr(path, '/');
    c->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    set_defaults(&x, c, top_fields);

    struct gw_json_error je;
    struct gw_json_opts o = {
        .max_bytes = MAX_CONFIG_BYTES, .max_depth = 32, .allow_comments = true, .lines = &x.lines};
    cJSON *root = gw_json_parse(buf, len, &o, &je);
    if (root == NULL) {
        gw_msgs_add(&errs->problems, "%s:%d: %s", path, je.line, je.msg);
        gw_json_lines_free(&x.lines);
        gw_config_free(c);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        gw_msgs_add(&errs->problems, "%s:1: the configuration must be a JSON object", path);
    } else {
        walk(&x, root, c, top_fields, "");
        check_defaults(&x, root);
    }
    cJSON_Delete(root);
    gw_json_lines_free(&x.lines);

    if (c->upstream.openapi == NULL)
        c->upstream.openapi = strdup(gw_openapi_default_path());
    if (c->listen.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->listen.workers = n > 0 ? (n > 256 ? 256 : n) : 1;
    }
    if (c->listen.address && c->admin.address && c->listen.port == c->admin.port &&
        (strcmp(c->listen.address, c->admin.address) == 0 ||
         strcmp(c->listen.address, "0.0.0.0") == 0 || strcmp(c->admin.address, "0.0.0.0") == 0))
        gw_msgs_add(&errs->problems, "%s: admin.port: %ld is also listen.port", path,
                    c->admin.port);
    if (errs->problems.n > x.nerr_before) {
        gw_config_free(c);
        return NULL;
    }
    return c;
}

static void free_fields(void *base, const struct field *t)
{
    for (const struct field *f = t; f->key; f++) {
        switch (f->kind) {
        case K_STR:
        case K_STR_NULL:
        case K_PATH:
        case K_PATH_NULL:
            free(*AT(base, f->off, char *));
            break;
        case K_SECTION:
            free_fields(base, f->sub);
            break;
        case K_STRLIST:
            free_strlist(*AT(base, f->off, char **), *AT(base, f->off2, size_t));
            break;
        default:
            break;
        }
    }
}

void gw_config_free(struct gw_config *c)
{
    if (c == NULL)
        return;
    free_fields(c, top_fields);
    free(c->listen.address);
    free(c->admin.address);
    free(c->upstream.url);
    free(c->upstream.host);
    for (size_t i = 0; i < c->credentials.nlocation; i++) {
        free(c->credentials.location[i].location_id);
        free(c->credentials.location[i].file);
    }
    free(c->credentials.location);
    for (size_t i = 0; i < c->auth.nissuers; i++) {
        struct gw_cfg_issuer *is = &c->auth.issuers[i];
        free_fields(is, issuer_fields);
        for (size_t k = 0; k < is->nkeys; k++)
            free_fields(&is->keys[k], key_fields);
        free(is->keys);
    }
    free(c->auth.issuers);
    free(c->file);
    free(c->dir);
    free(c);
}
