/* The config file is read with tables of fields (fields.h: key, kind, offset, range, default),
 * one table per section; the rules the kinds cannot say are the custom readers below. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "fields.h"
#include "json.h"
#include "openapi.h"

#define MAX_CONFIG_BYTES (1u << 20)

/* ---- custom fields ---- */

static void cust_min_version(struct gw_fields *x, const cJSON *v, void *base,
                             const struct gw_field *f, const char *key)
{
    int *dst = GW_FIELD_AT(base, f->off, int);
    if (v == NULL) {
        *dst = TLS1_2_VERSION;
        return;
    }
    if (cJSON_IsString(v) && strcmp(v->valuestring, "1.2") == 0)
        *dst = TLS1_2_VERSION;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "1.3") == 0)
        *dst = TLS1_3_VERSION;
    else
        gw_fields_problem(x, v, key, "must be \"1.2\" or \"1.3\"");
}

static void cust_address(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                         const char *key)
{
    char **dst = GW_FIELD_AT(base, f->off, char *);
    if (v == NULL) {
        *dst = strdup(f->def);
        return;
    }
    unsigned char buf[sizeof(struct in6_addr)];
    if (!cJSON_IsString(v) || (inet_pton(AF_INET, v->valuestring, buf) != 1 &&
                               inet_pton(AF_INET6, v->valuestring, buf) != 1)) {
        gw_fields_problem(x, v, key, "must be an IPv4 or IPv6 address");
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

static void cust_upstream_url(struct gw_fields *x, const cJSON *v, void *base,
                              const struct gw_field *f, const char *key)
{
    struct gw_config *c = base;
    char **dst = GW_FIELD_AT(base, f->off, char *);
    const char *url = v ? (cJSON_IsString(v) ? v->valuestring : NULL) : f->def;
    if (url == NULL) {
        gw_fields_problem(x, v, key, "must be a string");
        return;
    }
    char why[128], *host = NULL;
    long port;
    if (parse_https_url(url, &host, &port, why, sizeof why) != 0) {
        gw_fields_problem(x, v, key, "%s", why);
        return;
    }
    free(*dst);
    free(c->upstream.host);
    *dst = strdup(url);
    c->upstream.host = host;
    c->upstream.port = port;
}

static void cust_location_tokens(struct gw_fields *x, const cJSON *v, void *base,
                                 const struct gw_field *f, const char *key)
{
    (void)f;
    struct gw_config *c = base;
    if (v == NULL || cJSON_IsNull(v))
        return;
    if (!cJSON_IsObject(v)) {
        gw_fields_problem(x, v, key, "must be an object of \"<locationId>\": \"path\"");
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
            gw_fields_problem(x, e, k, "a location id is 1 to 64 letters and digits");
            continue;
        }
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0') {
            gw_fields_problem(x, e, k, "must be the path of a token file");
            continue;
        }
        struct gw_cfg_location_token *t = &c->credentials.location[c->credentials.nlocation++];
        t->location_id = strdup(e->string);
        t->file = gw_fields_path(x, e->valuestring);
        gw_fields_check_path(x, e, k, t->file, GW_NEED_READ);
    }
}

static const char *const known_algs[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                         "RS512", "ES256", "ES384", "ES512", "PS256",
                                         "PS384", "PS512", "EdDSA"};

static const struct gw_field key_fields[] = {
    {"kid", GW_F_STR_NULL, offsetof(struct gw_cfg_key, kid)},
    {"alg", GW_F_STR_NULL, offsetof(struct gw_cfg_key, alg)},
    {"pem_file", GW_F_PATH_NULL, offsetof(struct gw_cfg_key, pem_file), .need = GW_NEED_READ},
    {"secret_file", GW_F_PATH_NULL, offsetof(struct gw_cfg_key, secret_file), .need = GW_NEED_READ},
    {NULL},
};

static void cust_keys(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                      const char *key)
{
    (void)f;
    struct gw_cfg_issuer *is = base;
    if (v == NULL || cJSON_IsNull(v))
        return;
    if (!cJSON_IsArray(v)) {
        gw_fields_problem(x, v, key, "must be an array of keys");
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
        kk->line = gw_fields_line(x, e);
        if (!cJSON_IsObject(e)) {
            gw_fields_problem(x, e, k, "must be an object");
            continue;
        }
        gw_fields_defaults(x, kk, key_fields);
        gw_fields_walk(x, e, kk, key_fields, k);
        bool known = false;
        for (size_t a = 0; kk->alg && a < sizeof known_algs / sizeof *known_algs; a++)
            known |= strcmp(kk->alg, known_algs[a]) == 0;
        if (!known) {
            gw_fields_problem(x, e, k,
                              "alg must be one of HS256 HS384 HS512 RS256 RS384 RS512 ES256 ES384 "
                              "ES512 PS256 PS384 PS512 EdDSA (\"none\" is never accepted)");
            continue;
        }
        bool is_hmac = kk->alg[0] == 'H';
        if (is_hmac && (kk->secret_file == NULL || kk->pem_file != NULL))
            gw_fields_problem(x, e, k, "an %s key needs secret_file (and no pem_file)", kk->alg);
        if (!is_hmac && (kk->pem_file == NULL || kk->secret_file != NULL))
            gw_fields_problem(x, e, k, "an %s key needs pem_file (and no secret_file)", kk->alg);
        hmac += is_hmac;
        pub += !is_hmac;
        for (size_t j = 0; j + 1 < is->nkeys; j++) {
            const char *a = is->keys[j].kid, *b = kk->kid;
            if ((a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0))
                gw_fields_problem(x, e, k, "kid %s is used twice in this issuer", b ? b : "(none)");
        }
    }
    if (hmac && pub)
        gw_fields_problem(x, v, key,
                          "an issuer's keys are either all HMAC secrets or all public keys");
}

static const struct gw_field issuer_fields[] = {
    {"issuer", GW_F_STR, offsetof(struct gw_cfg_issuer, issuer)},
    {"audiences", GW_F_STRLIST, offsetof(struct gw_cfg_issuer, audiences), 0, 0, NULL,
     offsetof(struct gw_cfg_issuer, naudiences)},
    {"keys", GW_F_CUSTOM, 0, .custom = cust_keys},
    {"jwks_file", GW_F_PATH_NULL, offsetof(struct gw_cfg_issuer, jwks_file), .need = GW_NEED_READ},
    {"jwks_url", GW_F_STR_NULL, offsetof(struct gw_cfg_issuer, jwks_url)},
    {"jwks_ca_file", GW_F_PATH_NULL, offsetof(struct gw_cfg_issuer, jwks_ca_file),
     .need = GW_NEED_READ},
    {"jwks_refresh_s", GW_F_INT, offsetof(struct gw_cfg_issuer, jwks_refresh_s), 1, 86400L * 7,
     .idef = 600},
    {"jwks_refetch_min_s", GW_F_INT, offsetof(struct gw_cfg_issuer, jwks_refetch_min_s), 1, 3600,
     .idef = 30},
    {"leeway_s", GW_F_INT, offsetof(struct gw_cfg_issuer, leeway_s), 0, 3600, .idef = 60},
    {"max_lifetime_s", GW_F_INT, offsetof(struct gw_cfg_issuer, max_lifetime_s), 1, 86400L * 366,
     .idef = 86400},
    {"scope_claims", GW_F_STRLIST, offsetof(struct gw_cfg_issuer, scope_claims), 1, 0, NULL,
     offsetof(struct gw_cfg_issuer, nscope_claims)},
    {"subject_claim", GW_F_STR, offsetof(struct gw_cfg_issuer, subject_claim), .def = "sub"},
    {"discovery", GW_F_BOOL, offsetof(struct gw_cfg_issuer, discovery), .idef = 0},
    {"jwks_refetch_wait_ms", GW_F_INT, offsetof(struct gw_cfg_issuer, jwks_refetch_wait_ms), 0,
     30000, .idef = 2000},
    {"require_typ", GW_F_STR_NULL, offsetof(struct gw_cfg_issuer, require_typ)},
    {"require_cert_binding", GW_F_BOOL, offsetof(struct gw_cfg_issuer, require_cert_binding),
     .idef = 0},
    {NULL},
};

static void cust_issuers(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                         const char *key)
{
    (void)f;
    struct gw_config *c = base;
    if (v == NULL || cJSON_IsNull(v))
        return;
    if (!cJSON_IsArray(v)) {
        gw_fields_problem(x, v, key, "must be an array of issuers");
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
        is->line = gw_fields_line(x, e);
        if (!cJSON_IsObject(e)) {
            gw_fields_problem(x, e, k, "must be an object");
            continue;
        }
        gw_fields_defaults(x, is, issuer_fields);
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
        gw_fields_walk(x, e, is, issuer_fields, k);
        if (is->issuer == NULL)
            gw_fields_problem(x, e, k, "issuer is required");
        if (is->nkeys == 0 && is->jwks_file == NULL && is->jwks_url == NULL && !is->discovery)
            gw_fields_problem(x, e, k, "needs keys, jwks_file, jwks_url or discovery");
        if (is->jwks_url && strncmp(is->jwks_url, "https://", 8) != 0)
            gw_fields_problem(x, e, k, "jwks_url must be an https URL");
        if (is->discovery && is->jwks_url)
            gw_fields_problem(x, e, k,
                              "jwks_url and discovery are exclusive (discovery finds the JWKS URL)");
        if (is->discovery && is->issuer && strncmp(is->issuer, "https://", 8) != 0)
            gw_fields_problem(x, e, k, "discovery needs an issuer that is an https URL");
        if (is->require_typ && strcmp(is->require_typ, "at+jwt") != 0)
            gw_fields_problem(x, e, k, "require_typ must be \"at+jwt\" or null");
        if (is->issuer)
            for (size_t j = 0; j + 1 < c->auth.nissuers; j++)
                if (c->auth.issuers[j].issuer && strcmp(c->auth.issuers[j].issuer, is->issuer) == 0)
                    gw_fields_problem(x, e, k, "issuer %s is configured twice", is->issuer);
    }
}

#define C(field) offsetof(struct gw_config, field)

static const struct gw_field listen_fields[] = {
    {"address", GW_F_CUSTOM, C(listen.address), .custom = cust_address, .def = "0.0.0.0"},
    {"port", GW_F_INT, C(listen.port), 1, 65535, .idef = 8443},
    {"workers", GW_F_INT, C(listen.workers), 0, 256, .idef = 0},
    {NULL},
};
static const struct gw_field tls_fields[] = {
    {"cert", GW_F_PATH, C(tls.cert), .def = "certs/dev/gateway.crt", .need = GW_NEED_READ},
    {"key", GW_F_PATH, C(tls.key), .def = "certs/dev/gateway.key", .need = GW_NEED_READ},
    {"min_version", GW_F_CUSTOM, C(tls.min_version), .custom = cust_min_version},
    {"client_ca", GW_F_PATH_NULL, C(tls.client_ca), .need = GW_NEED_READ},
    {NULL},
};
static const struct gw_field admin_fields[] = {
    {"address", GW_F_CUSTOM, C(admin.address), .custom = cust_address, .def = "127.0.0.1"},
    {"port", GW_F_INT, C(admin.port), 1, 65535, .idef = 9901},
    {NULL},
};
static const struct gw_field upstream_fields[] = {
    {"url", GW_F_CUSTOM, C(upstream.url), .custom = cust_upstream_url,
     .def = "https://services.leadconnectorhq.com"},
    {"ca_file", GW_F_PATH_NULL, C(upstream.ca_file), .need = GW_NEED_READ},
    {"connect_timeout_ms", GW_F_INT, C(upstream.connect_timeout_ms), 1, 600000, .idef = 5000},
    {"timeout_ms", GW_F_INT, C(upstream.timeout_ms), 1, 600000, .idef = 30000},
    {"max_idle_connections", GW_F_INT, C(upstream.max_idle_connections), 0, 100000, .idef = 32},
    {"api_versions", GW_F_STRLIST, C(upstream.api_versions), 1, 0, NULL, C(upstream.napi_versions),
     .def = "2021-07-28"},
    {"openapi", GW_F_PATH_NULL, C(upstream.openapi), .need = GW_NEED_READ},
    {NULL},
};
static const struct gw_field credentials_fields[] = {
    {"agency_token_file", GW_F_PATH_NULL, C(credentials.agency_token_file),
     .def = "secrets/agency.token", .need = GW_NEED_READ},
    {"location_token_files", GW_F_CUSTOM, 0, .custom = cust_location_tokens},
    {NULL},
};
static const struct gw_field auth_fields[] = {
    {"issuers", GW_F_CUSTOM, 0, .custom = cust_issuers},
    {"token_cache_entries", GW_F_INT, C(auth.token_cache_entries), 0, 16777216, .idef = 65536},
    {NULL},
};
static const struct gw_field policies_fields[] = {
    {"dir", GW_F_PATH, C(policies.dir), .def = "policies/examples", .need = GW_NEED_DIR},
    {NULL},
};
bool gw_config_replica_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_REPLICA_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

#define REPLICA_ID_RULE "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

/* audit.replica_id's default: the host name (a pod's is its name), malloc'd; NULL with why
 * when it cannot be read or is no replica id. */
static char *host_replica_id(char *why, size_t whylen)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0) {
        snprintf(why, whylen, "cannot read the host name (%s): set audit.replica_id",
                 strerror(errno));
        return NULL;
    }
    host[sizeof host - 1] = '\0';
    if (!gw_config_replica_id_ok(host)) {
        snprintf(why, whylen, "the host name is not a replica id (%s): set audit.replica_id",
                 REPLICA_ID_RULE);
        return NULL;
    }
    char *id = strdup(host);
    if (id == NULL)
        snprintf(why, whylen, "out of memory");
    return id;
}

/* A string that is a replica id, or null for the host name. Absent (v NULL): the host name
 * too, or NULL when it will not do (check_defaults says why when the file gives none). */
static void cust_replica_id(struct gw_fields *x, const cJSON *v, void *base,
                            const struct gw_field *f, const char *key)
{
    char **dst = GW_FIELD_AT(base, f->off, char *), why[160];
    free(*dst);
    *dst = NULL;
    if (v != NULL && cJSON_IsString(v) && gw_config_replica_id_ok(v->valuestring)) {
        if ((*dst = strdup(v->valuestring)) == NULL)
            gw_fields_oom(x);
    } else if (v != NULL && !cJSON_IsNull(v)) {
        gw_fields_problem(x, v, key, "must be null (the host name) or %s", REPLICA_ID_RULE);
    } else if ((*dst = host_replica_id(why, sizeof why)) == NULL && v != NULL) {
        gw_fields_problem(x, v, key, "%s", why);
    }
}

static const struct gw_field audit_fields[] = {
    {"file", GW_F_PATH_NULL, C(audit.file), .def = "audit/audit.jsonl", .need = GW_NEED_PARENT},
    {"stdout", GW_F_BOOL, C(audit.to_stdout), .idef = 0},
    {"fsync", GW_F_BOOL, C(audit.fsync), .idef = 1},
    {"hmac_key_file", GW_F_PATH_NULL, C(audit.hmac_key_file), .need = GW_NEED_READ},
    {"include_reads", GW_F_BOOL, C(audit.include_reads), .idef = 0},
    {"sync_timeout_ms", GW_F_INT, C(audit.sync_timeout_ms), 1, 600000, .idef = 5000},
    {"replica_id", GW_F_CUSTOM, C(audit.replica_id), .custom = cust_replica_id},
    {NULL},
};
static const struct gw_field access_log_fields[] = {
    {"file", GW_F_PATH_NULL, C(access_log.file), .need = GW_NEED_PARENT},
    {NULL},
};
static const struct gw_field per_subject_fields[] = {
    {"burst", GW_F_INT, C(rate_limit.per_subject.burst), 1, 1000000000, .idef = 100},
    {"per_seconds", GW_F_INT, C(rate_limit.per_subject.per_seconds), 1, 86400, .idef = 10},
    {NULL},
};
static const struct gw_field rl_upstream_fields[] = {
    {"burst", GW_F_INT, C(rate_limit.upstream.burst), 1, 1000000000, .idef = 100},
    {"per_seconds", GW_F_INT, C(rate_limit.upstream.per_seconds), 1, 86400, .idef = 10},
    {"daily", GW_F_INT, C(rate_limit.upstream.daily), 1, 1000000000, .idef = 200000},
    {NULL},
};
/* a decimal number in [lo, hi]: digits only, no sign, space or leading zero */
static int small_number(const char *s, long lo, long hi, long *out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 5 || s[n] != '\0' || (s[0] == '0' && n > 1))
        return -1;
    long v = strtol(s, NULL, 10);
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* redis://[host][:port][/db] (no user or password: those come from username and
 * password_file) or unix:///path[?db=N]. rediss:// needs hiredis 1.0: refused with the reason. */
static int parse_redis_url(const char *url, struct gw_cfg_redis *r, char *why, size_t whylen)
{
    const char *end;
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(why, whylen,
                 "rediss:// (TLS) is not supported: Debian bookworm's hiredis 0.14 has no TLS; "
                 "use a unix socket or a TLS tunnel to Redis (docs/operations.md)");
        return -1;
    }
    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7, *q = strchr(path, '?');
        size_t n = q ? (size_t)(q - path) : strlen(path);
        if (n < 2 || path[0] != '/' || n >= 108) {
            snprintf(why, whylen, "must be unix:///absolute/path (at most 107 bytes)");
            return -1;
        }
        if (q && small_number(q + 1 + (strncmp(q + 1, "db=", 3) == 0 ? 3 : 0), 0, 15,
                                      &r->db) != 0) {
            snprintf(why, whylen, "a unix socket's database is ?db=0 to ?db=15");
            return -1;
        }
        if (q && strncmp(q + 1, "db=", 3) != 0) {
            snprintf(why, whylen, "a unix socket's database is ?db=0 to ?db=15");
            return -1;
        }
        r->unix_path = strndup(path, n);
        return r->unix_path ? 0 : -1;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(why, whylen, "must be redis://host[:port][/db] or unix:///path");
        return -1;
    }
    const char *h = url + 8;
    if (strchr(h, '@')) {
        snprintf(why, whylen,
                 "must not hold a user or password: use username and password_file");
        return -1;
    }
    char host[256];
    if (*h == '[') { /* [IPv6] */
        const char *rb = strchr(h, ']');
        if (rb == NULL || (size_t)(rb - h - 1) >= sizeof host || rb == h + 1) {
            snprintf(why, whylen, "bad IPv6 address");
            return -1;
        }
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
        unsigned char a6[16];
        if (inet_pton(AF_INET6, host, a6) != 1) {
            snprintf(why, whylen, "bad IPv6 address");
            return -1;
        }
        end = rb + 1;
    } else {
        end = h + strcspn(h, ":/");
        if (end == h || (size_t)(end - h) >= sizeof host) {
            snprintf(why, whylen, "needs a host");
            return -1;
        }
        memcpy(host, h, (size_t)(end - h));
        host[end - h] = '\0';
        for (const char *c = host; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '.')) {
                snprintf(why, whylen, "bad character in host");
                return -1;
            }
    }
    r->port = 6379;
    if (*end == ':') {
        const char *d = end + 1;
        size_t nd = strspn(d, "0123456789");
        char digits[8];
        if (nd == 0 || nd > 5 || d[0] == '0') {
            snprintf(why, whylen, "bad port");
            return -1;
        }
        memcpy(digits, d, nd);
        digits[nd] = '\0';
        if (small_number(digits, 1, 65535, &r->port) != 0) {
            snprintf(why, whylen, "bad port");
            return -1;
        }
        end = d + nd;
    }
    r->db = 0;
    if (*end == '/' && end[1] != '\0') {
        if (small_number(end + 1, 0, 15, &r->db) != 0) {
            snprintf(why, whylen, "the database is /0 to /15");
            return -1;
        }
        end += strlen(end);
    } else if (*end == '/') {
        end++;
    }
    if (*end != '\0') {
        snprintf(why, whylen, "must be redis://host[:port][/db] or unix:///path");
        return -1;
    }
    r->host = strdup(host);
    return r->host ? 0 : -1;
}

static void cust_redis_url(struct gw_fields *x, const cJSON *v, void *base,
                           const struct gw_field *f, const char *key)
{
    struct gw_cfg_redis *r = &((struct gw_config *)base)->rate_limit.redis;
    (void)f;
    if (v == NULL)
        return; /* required: the section's own check says so */
    if (!cJSON_IsString(v)) {
        gw_fields_problem(x, v, key, "must be a string");
        return;
    }
    char why[200];
    free(r->host);
    free(r->unix_path);
    r->host = r->unix_path = NULL;
    if (parse_redis_url(v->valuestring, r, why, sizeof why) != 0) {
        gw_fields_problem(x, v, key, "%s", why);
        return;
    }
    free(r->url);
    r->url = strdup(v->valuestring);
    if (r->url == NULL)
        gw_fields_oom(x);
}

static void cust_on_failure(struct gw_fields *x, const cJSON *v, void *base,
                            const struct gw_field *f, const char *key)
{
    int *dst = GW_FIELD_AT(base, f->off, int);
    static const char *const names[] = {[GW_RLF_LOCAL] = "local", [GW_RLF_DENY] = "deny",
                                        [GW_RLF_ALLOW] = "allow"};
    if (v == NULL) {
        *dst = GW_RLF_LOCAL;
        return;
    }
    for (int i = 0; i < 3; i++)
        if (cJSON_IsString(v) && strcmp(v->valuestring, names[i]) == 0) {
            *dst = i;
            return;
        }
    gw_fields_problem(x, v, key, "must be \"local\", \"deny\" or \"allow\"");
}

static void after_key_prefix(struct gw_fields *x, const cJSON *v, void *base,
                             const struct gw_field *f, const char *key)
{
    const char *p = *GW_FIELD_AT(base, f->off, char *);
    if (p == NULL)
        return;
    size_t n = strlen(p);
    bool printable = true;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            printable = false;
    if (n > 64 || !printable)
        gw_fields_problem(x, v, key, "1 to 64 visible ASCII characters, no spaces");
}

static const struct gw_field redis_fields[] = {
    {"url", GW_F_CUSTOM, 0, .custom = cust_redis_url},
    {"username", GW_F_STR_NULL, C(rate_limit.redis.username)},
    {"password_file", GW_F_PATH_NULL, C(rate_limit.redis.password_file), .need = GW_NEED_READ},
    {"ca_file", GW_F_PATH_NULL, C(rate_limit.redis.ca_file), .need = GW_NEED_READ},
    {"key_prefix", GW_F_STR, C(rate_limit.redis.key_prefix), .def = "ghl-gateway:",
     .after = after_key_prefix},
    {"timeout_ms", GW_F_INT, C(rate_limit.redis.timeout_ms), 1, 60000, .idef = 50},
    {"on_failure", GW_F_CUSTOM, C(rate_limit.redis.on_failure), .custom = cust_on_failure},
    {NULL},
};

/* rate_limit.redis: null (the default: limits in the process) or the shared store (11.2) */
static void cust_redis(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                       const char *key)
{
    struct gw_config *c = base;
    struct gw_cfg_redis *r = &c->rate_limit.redis;
    (void)f;
    if (v == NULL || cJSON_IsNull(v))
        return;
    if (!cJSON_IsObject(v)) {
        gw_fields_problem(x, v, key, "must be an object or null");
        return;
    }
    r->enabled = true;
    r->line = gw_json_line(&x->lines, v);
    gw_fields_defaults(x, c, redis_fields);
    gw_fields_walk(x, v, c, redis_fields, key);
    if (r->url == NULL && r->host == NULL && r->unix_path == NULL &&
        cJSON_GetObjectItemCaseSensitive(v, "url") == NULL)
        gw_fields_problem(x, v, key, "url is required");
    if (r->username && r->password_file == NULL)
        gw_fields_problem(x, v, key, "username needs password_file (AUTH takes both)");
    if (r->ca_file)
        gw_fields_problem(x, v, key,
                          "ca_file is for rediss:// (TLS), which this build cannot do: hiredis "
                          "0.14 has no TLS");
}

static const struct gw_field rate_limit_fields[] = {
    {"per_subject", GW_F_SECTION, 0, .sub = per_subject_fields},
    {"upstream", GW_F_SECTION, 0, .sub = rl_upstream_fields},
    {"replicas", GW_F_INT, C(rate_limit.replicas), 1, 10000, .idef = 1},
    {"redis", GW_F_CUSTOM, 0, .custom = cust_redis},
    {NULL},
};
static const struct gw_field limits_fields[] = {
    {"max_header_bytes", GW_F_INT, C(limits.max_header_bytes), 1024, 1048576, .idef = 16384},
    {"max_body_bytes", GW_F_INT, C(limits.max_body_bytes), 0, 16777216, .idef = 65536},
    {"max_token_bytes", GW_F_INT, C(limits.max_token_bytes), 256, 65536, .idef = 8192},
    {"max_json_depth", GW_F_INT, C(limits.max_json_depth), 2, 256, .idef = 16},
    {"header_timeout_ms", GW_F_INT, C(limits.header_timeout_ms), 10, 3600000, .idef = 10000},
    {"body_timeout_ms", GW_F_INT, C(limits.body_timeout_ms), 10, 3600000, .idef = 30000},
    {"keepalive_timeout_ms", GW_F_INT, C(limits.keepalive_timeout_ms), 0, 3600000, .idef = 60000},
    {"max_connections", GW_F_INT, C(limits.max_connections), 1, 1000000, .idef = 10000},
    {"drain_timeout_ms", GW_F_INT, C(limits.drain_timeout_ms), 0, 3600000, .idef = 20000},
    {NULL},
};
static const struct gw_field top_fields[] = {
    {"listen", GW_F_SECTION, 0, .sub = listen_fields},
    {"tls", GW_F_SECTION, 0, .sub = tls_fields},
    {"admin", GW_F_SECTION, 0, .sub = admin_fields},
    {"upstream", GW_F_SECTION, 0, .sub = upstream_fields},
    {"credentials", GW_F_SECTION, 0, .sub = credentials_fields},
    {"auth", GW_F_SECTION, 0, .sub = auth_fields},
    {"policies", GW_F_SECTION, 0, .sub = policies_fields},
    {"audit", GW_F_SECTION, 0, .sub = audit_fields},
    {"access_log", GW_F_SECTION, 0, .sub = access_log_fields},
    {"rate_limit", GW_F_SECTION, 0, .sub = rate_limit_fields},
    {"limits", GW_F_SECTION, 0, .sub = limits_fields},
    {NULL},
};

/* Fields whose default names a file are checked only when the file does not say otherwise;
 * defaults of paths that must exist are checked here, after the walk. */
static void check_defaults(struct gw_fields *x, struct gw_config *c, const cJSON *root)
{
    static const struct {
        const char *section, *key;
        size_t off;
        enum gw_file_need need;
    } d[] = {
        {"tls", "cert", C(tls.cert), GW_NEED_READ},
        {"tls", "key", C(tls.key), GW_NEED_READ},
        {"credentials", "agency_token_file", C(credentials.agency_token_file), GW_NEED_READ},
        {"policies", "dir", C(policies.dir), GW_NEED_DIR},
        {"audit", "file", C(audit.file), GW_NEED_PARENT},
    };
    for (size_t i = 0; i < sizeof d / sizeof *d; i++) {
        const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, d[i].section);
        if (cJSON_GetObjectItemCaseSensitive(sec, d[i].key) != NULL)
            continue; /* given in the file: checked when parsed */
        char key[128];
        snprintf(key, sizeof key, "%s.%s (default)", d[i].section, d[i].key);
        gw_fields_check_path(x, NULL, key, *GW_FIELD_AT(c, d[i].off, char *), d[i].need);
    }
    const cJSON *audit = cJSON_GetObjectItemCaseSensitive(root, "audit");
    char why[160];
    if (c->audit.replica_id == NULL &&
        cJSON_GetObjectItemCaseSensitive(audit, "replica_id") == NULL &&
        (c->audit.replica_id = host_replica_id(why, sizeof why)) == NULL)
        gw_fields_problem(x, NULL, "audit.replica_id (default)", "%s", why);
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
    size_t before = errs->problems.n;
    c->file = strdup(path);
    const char *slash = strrchr(path, '/');
    c->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (c->file == NULL || c->dir == NULL) {
        gw_msgs_add(&errs->problems, "%s: out of memory", path);
        gw_config_free(c);
        return NULL;
    }
    struct gw_fields x = {.file = c->file, .dir = c->dir, .errs = errs, .check_files = check_files};
    gw_fields_defaults(&x, c, top_fields);

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
        gw_fields_walk(&x, root, c, top_fields, "");
        check_defaults(&x, c, root);
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
    for (size_t i = 0; i < c->auth.nissuers; i++)
        if (c->auth.issuers[i].require_cert_binding && c->tls.client_ca == NULL)
            gw_msgs_add(&errs->problems,
                        "%s:%d: auth.issuers[%zu]: require_cert_binding needs tls.client_ca "
                        "(mutual TLS): without a client certificate no token can be bound",
                        path, c->auth.issuers[i].line, i);
    if (x.oom)
        gw_msgs_add(&errs->problems, "%s: out of memory", path);
    if (errs->problems.n > before) {
        gw_config_free(c);
        return NULL;
    }
    return c;
}

void gw_config_free(struct gw_config *c)
{
    if (c == NULL)
        return;
    gw_fields_free(c, top_fields);
    free(c->listen.address);
    free(c->admin.address);
    free(c->audit.replica_id);
    free(c->upstream.url);
    free(c->upstream.host);
    for (size_t i = 0; i < c->credentials.nlocation; i++) {
        free(c->credentials.location[i].location_id);
        free(c->credentials.location[i].file);
    }
    free(c->credentials.location);
    for (size_t i = 0; i < c->auth.nissuers; i++) {
        struct gw_cfg_issuer *is = &c->auth.issuers[i];
        gw_fields_free(is, issuer_fields);
        for (size_t k = 0; k < is->nkeys; k++)
            gw_fields_free(&is->keys[k], key_fields);
        free(is->keys);
    }
    free(c->auth.issuers);
    gw_fields_free(c, redis_fields);
    free(c->rate_limit.redis.url);
    free(c->rate_limit.redis.host);
    free(c->rate_limit.redis.unix_path);
    free(c->file);
    free(c->dir);
    free(c);
}
