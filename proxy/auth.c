#include "auth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "b64url.h"
#include "config.h"
#include "json.h"
#include "jwks.h"
#include "openapi.h"

#define MAX_KID 256
#define MAX_KEY_FILE (64u << 10)
#define HEADER_DEPTH 8
#define CLAIMS_DEPTH 32
#define MAX_INT_CLAIM 9007199254740991.0 /* 2^53 - 1: exact in a double */

static const char *const reason_names[GW_AUTH_REASONS] = {
    [GW_AUTH_OK] = "ok",
    [GW_AUTH_MISSING] = "missing",
    [GW_AUTH_MALFORMED] = "malformed",
    [GW_AUTH_UNKNOWN_ISSUER] = "unknown_issuer",
    [GW_AUTH_UNKNOWN_KEY] = "unknown_key",
    [GW_AUTH_BAD_SIGNATURE] = "bad_signature",
    [GW_AUTH_EXPIRED] = "expired",
    [GW_AUTH_NOT_YET_VALID] = "not_yet_valid",
    [GW_AUTH_BAD_CLAIMS] = "bad_claims",
    [GW_AUTH_AUDIENCE] = "audience",
    [GW_AUTH_BINDING] = "binding",
};

const char *gw_auth_reason_name(enum gw_auth_reason r)
{
    return (unsigned)r < GW_AUTH_REASONS ? reason_names[r] : "?";
}

/* ---- building the issuers ---- */

/* A key file: the whole file but one trailing newline (SPEC §2). */
static unsigned char *read_key_file(const char *path, size_t *len, char *why, size_t whylen)
{
    size_t n;
    char *buf = gw_read_file(path, MAX_KEY_FILE, &n);
    if (buf == NULL) {
        snprintf(why, whylen, "cannot read %s: %s", path,
                 errno == EFBIG ? "larger than 64 KiB" : strerror(errno));
        return NULL;
    }
    size_t size = n + 1;
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n == 0) {
        OPENSSL_clear_free(buf, size);
        snprintf(why, whylen, "%s is empty", path);
        return NULL;
    }
    *len = n;
    return (unsigned char *)buf;
}

static int load_issuer(const struct gw_config *cfg, const struct gw_cfg_issuer *ci,
                       struct gw_issuer *is, size_t idx, struct gw_errs *errs)
{
    int rc = 0;
    is->cfg = ci;
    is->url_keys = NULL;
    pthread_mutex_init(&is->url_mu, NULL);
    atomic_init(&is->key_epoch, 0);
    atomic_init(&is->refetch_wanted, 0);
    is->keys = calloc(ci->nkeys + 1, sizeof *is->keys);
    if (is->keys == NULL)
        return -1;
    for (size_t k = 0; k < ci->nkeys; k++) {
        const struct gw_cfg_key *ck = &ci->keys[k];
        char why[300];
        enum gw_alg alg = gw_alg_from_name(ck->alg);
        const char *file = ck->pem_file ? ck->pem_file : ck->secret_file;
        size_t len = 0;
        unsigned char *data = file ? read_key_file(file, &len, why, sizeof why) : NULL;
        int ok = -1;
        if (data && ck->pem_file)
            ok = gw_key_from_pem((const char *)data, len, alg, ck->kid, &is->keys[is->nkeys], why,
                                 sizeof why);
        else if (data)
            ok = gw_key_from_secret(data, len, alg, ck->kid, &is->keys[is->nkeys], why, sizeof why);
        if (data)
            OPENSSL_clear_free(data, len + 1);
        if (ok != 0) {
            gw_msgs_add(&errs->problems, "%s:%d: auth.issuers[%zu].keys[%zu]: %s", cfg->file,
                        ck->line, idx, k, why);
            rc = -1;
            continue;
        }
        is->nkeys++;
    }
    if (ci->jwks_file) {
        size_t len;
        char why[300];
        char *buf = gw_read_file(ci->jwks_file, 1u << 20, &len);
        if (buf == NULL) {
            gw_msgs_add(&errs->problems, "%s:%d: auth.issuers[%zu].jwks_file: cannot read %s: %s",
                        cfg->file, ci->line, idx, ci->jwks_file, strerror(errno));
            rc = -1;
        } else {
            is->file_keys = gw_jwks_parse(buf, len, why, sizeof why);
            free(buf);
            if (is->file_keys == NULL) {
                gw_msgs_add(&errs->problems, "%s:%d: auth.issuers[%zu].jwks_file: %s: %s",
                            cfg->file, ci->line, idx, ci->jwks_file, why);
                rc = -1;
            }
        }
    }
    /* A kid names one key: a JWKS file may not reuse one of the "keys" */
    for (size_t f = 0; is->file_keys && f < is->file_keys->n; f++)
        for (size_t k = 0; k < is->nkeys; k++)
            if (is->keys[k].kid && is->file_keys->keys[f].kid &&
                strcmp(is->keys[k].kid, is->file_keys->keys[f].kid) == 0) {
                gw_msgs_add(&errs->problems,
                            "%s:%d: auth.issuers[%zu]: kid %s is both in keys and in %s", cfg->file,
                            ci->line, idx, is->keys[k].kid, ci->jwks_file);
                rc = -1;
            }
    /* HMAC and public keys never meet in one issuer (config.c checks the "keys"; a JWKS
     * brings only public keys) */
    bool hmac = false;
    for (size_t k = 0; k < is->nkeys; k++)
        hmac |= gw_alg_is_hmac(is->keys[k].alg);
    if (hmac && (ci->jwks_file || gw_jwks_fetched(ci))) {
        gw_msgs_add(&errs->problems,
                    "%s:%d: auth.issuers[%zu]: HMAC secrets cannot be combined with a JWKS",
                    cfg->file, ci->line, idx);
        rc = -1;
    }
    return rc;
}

struct gw_auth *gw_auth_build_rules(const struct gw_config *cfg)
{
    struct gw_auth *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->max_token_bytes = (size_t)cfg->limits.max_token_bytes;
    a->issuers = calloc(cfg->auth.nissuers + 1, sizeof *a->issuers);
    if (a->issuers == NULL) {
        free(a);
        return NULL;
    }
    for (size_t i = 0; i < cfg->auth.nissuers; i++) {
        struct gw_issuer *is = &a->issuers[a->nissuers++];
        is->cfg = &cfg->auth.issuers[i];
        pthread_mutex_init(&is->url_mu, NULL);
        atomic_init(&is->key_epoch, 0);
        atomic_init(&is->refetch_wanted, 0);
    }
    return a;
}

int gw_auth_build(const struct gw_config *cfg, struct gw_auth **out, struct gw_errs *errs)
{
    *out = NULL;
    struct gw_auth *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -1;
    a->max_token_bytes = (size_t)cfg->limits.max_token_bytes;
    a->issuers = calloc(cfg->auth.nissuers + 1, sizeof *a->issuers);
    if (a->issuers == NULL) {
        free(a);
        return -1;
    }
    int rc = 0;
    bool urls = false;
    for (size_t i = 0; i < cfg->auth.nissuers; i++) {
        rc |= load_issuer(cfg, &cfg->auth.issuers[i], &a->issuers[i], i, errs);
        a->nissuers++;
        urls |= gw_jwks_fetched(&cfg->auth.issuers[i]);
    }
    if (rc == 0 && urls && (a->fetcher = gw_jwks_fetcher_new(a)) == NULL) {
        gw_msgs_add(&errs->problems, "%s: auth: cannot set up the JWKS fetcher", cfg->file);
        rc = -1;
    }
    if (rc != 0) {
        gw_auth_free(a);
        return -1;
    }
    *out = a;
    return 0;
}

void gw_auth_free(struct gw_auth *a)
{
    if (a == NULL)
        return;
    gw_jwks_fetcher_free(a->fetcher);
    for (size_t i = 0; i < a->nissuers; i++) {
        struct gw_issuer *is = &a->issuers[i];
        for (size_t k = 0; k < is->nkeys; k++)
            gw_key_clear(&is->keys[k]);
        free(is->keys);
        gw_keyset_unref(is->file_keys);
        gw_keyset_unref(is->url_keys);
        pthread_mutex_destroy(&is->url_mu);
    }
    free(a->issuers);
    free(a);
}

/* ---- principal ---- */

struct principal_mem {
    struct gw_principal p;
    char *scope_copy; /* the space-separated scope strings, split in place */
};

struct gw_principal *gw_principal_ref(struct gw_principal *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void gw_principal_unref(struct gw_principal *p)
{
    if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    struct principal_mem *m = (struct principal_mem *)p;
    free(m->scope_copy);
    free(p->scopes);
    cJSON_Delete(p->claims);
    free(m);
}

int gw_subject_id(const char *iss, const char *sub, unsigned char out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
    const char *const parts[2] = {iss, sub};
    for (size_t i = 0; i < 2 && ok; i++) {
        uint64_t n = strlen(parts[i]);
        unsigned char len[8];
        for (size_t b = 0; b < 8; b++)
            len[b] = (unsigned char)(n >> (56 - 8 * b));
        ok = EVP_DigestUpdate(c, len, sizeof len) == 1 && EVP_DigestUpdate(c, parts[i], n) == 1;
    }
    unsigned int n = 0;
    ok = ok && EVP_DigestFinal_ex(c, out, &n) == 1 && n == 32;
    EVP_MD_CTX_free(c);
    return ok ? 0 : -1;
}

bool gw_principal_key_current(const struct gw_principal *p)
{
    return atomic_load(&p->issuer->key_epoch) == p->key_epoch;
}

bool gw_principal_has_scope(const struct gw_principal *p, const char *scope)
{
    for (size_t i = 0; i < p->nscopes; i++)
        if (strcmp(p->scopes[i], scope) == 0)
            return true;
    return false;
}

/* ---- the pipeline ---- */

enum gw_auth_reason gw_bearer_token(const char *value, bool repeated, const char **token,
                                    size_t *len)
{
    if (repeated)
        return GW_AUTH_MALFORMED; /* two tokens: refuse both, never pick one */
    if (value == NULL)
        return GW_AUTH_MISSING;
    size_t slen = strcspn(value, " \t");
    if (slen != 6 || strncasecmp(value, "Bearer", 6) != 0)
        return GW_AUTH_MISSING; /* another scheme: no bearer token was offered */
    if (value[6] != ' ')        /* "Bearer" alone, or followed by a tab */
        return GW_AUTH_MALFORMED;
    const char *t = value + 7;
    size_t n = strlen(t);
    if (n == 0 || strpbrk(t, " \t") != NULL)
        return GW_AUTH_MALFORMED;
    *token = t;
    *len = n;
    return GW_AUTH_OK;
}

/* An integer claim written as an integer, at least min: 1 present and valid, 0 absent,
 * -1 wrong. */
static int int_claim(const cJSON *claims, const char *name, double min, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, name);
    if (v == NULL)
        return 0;
    if (!cJSON_IsNumber(v) || (v->type & GW_JSON_FRACTION_LITERAL) ||
        v->valuedouble != floor(v->valuedouble) || v->valuedouble < min ||
        v->valuedouble > MAX_INT_CLAIM)
        return -1;
    *out = (int64_t)v->valuedouble;
    return 1;
}

/* Segments decoded and parsed: the header and payload as JSON objects. */
static enum gw_auth_reason parse_parts(const char *token, size_t len, cJSON **header,
                                       cJSON **payload)
{
    *header = *payload = NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return GW_AUTH_MALFORMED;
    }
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(token + len - d1 - 1)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', (size_t)(token + len - d2 - 1)) ||
        d1 == token || d2 == d1 + 1 || d2 + 1 == token + len)
        return GW_AUTH_MALFORMED;
    size_t hl = (size_t)(d1 - token), pl = (size_t)(d2 - d1 - 1);
    unsigned char *buf = malloc(GW_B64URL_DECODED_MAX(hl) + GW_B64URL_DECODED_MAX(pl));
    if (buf == NULL)
        return GW_AUTH_MALFORMED;
    unsigned char *h = buf, *p = buf + GW_B64URL_DECODED_MAX(hl);
    long hn = gw_b64url_decode(token, hl, h), pn = gw_b64url_decode(d1 + 1, pl, p);
    /* the signature's spelling is checked too: one spelling per token (the cache key) */
    size_t sl = (size_t)(token + len - d2 - 1);
    unsigned char *s = malloc(GW_B64URL_DECODED_MAX(sl));
    long sn = s ? gw_b64url_decode(d2 + 1, sl, s) : -1;
    if (s)
        OPENSSL_clear_free(s, GW_B64URL_DECODED_MAX(sl));
    enum gw_auth_reason r = GW_AUTH_MALFORMED;
    if (hn > 0 && pn > 0 && sn > 0) {
        struct gw_json_opts ho = {.max_depth = HEADER_DEPTH}, po = {.max_depth = CLAIMS_DEPTH};
        *header = gw_json_parse((const char *)h, (size_t)hn, &ho, NULL);
        *payload = *header ? gw_json_parse((const char *)p, (size_t)pn, &po, NULL) : NULL;
        if (*payload && cJSON_IsObject(*header) && cJSON_IsObject(*payload))
            r = GW_AUTH_OK;
    }
    OPENSSL_clear_free(buf, GW_B64URL_DECODED_MAX(hl) + GW_B64URL_DECODED_MAX(pl));
    if (r != GW_AUTH_OK) {
        cJSON_Delete(*header);
        cJSON_Delete(*payload);
        *header = *payload = NULL;
    }
    return r;
}

/* jansson, libjwt's parser, refuses integers past int64 ("too big integer"), so a correctly
 * signed token carrying one would fail as a bad signature: name it a claims problem first. */
static bool has_huge_integer(const cJSON *v, int depth)
{
    if (depth > CLAIMS_DEPTH)
        return true;
    if (cJSON_IsNumber(v))
        return !(v->type & GW_JSON_FRACTION_LITERAL) && fabs(v->valuedouble) >= 9.2e18;
    for (const cJSON *c = v->child; c; c = c->next)
        if (has_huge_integer(c, depth + 1))
            return true;
    return false;
}

static const struct gw_issuer *find_issuer(const struct gw_auth *a, const cJSON *payload)
{
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(payload, "iss");
    if (!cJSON_IsString(iss))
        return NULL;
    for (size_t i = 0; i < a->nissuers; i++)
        if (strcmp(a->issuers[i].cfg->issuer, iss->valuestring) == 0)
            return &a->issuers[i];
    return NULL;
}

/* The key for kid (or the issuer's only key when the token has none). *set receives a
 * reference to the fetched set the key lives in (release with gw_keyset_unref), *epoch the key
 * epoch of that set: read under the same lock, so a key withdrawn by the next swap is never
 * remembered with the epoch that follows it. */
static const struct gw_key *find_key(struct gw_issuer *is, const char *kid, struct gw_keyset **set,
                                     unsigned long *epoch)
{
    pthread_mutex_lock(&is->url_mu);
    *set = gw_keyset_ref(is->url_keys);
    *epoch = atomic_load(&is->key_epoch);
    pthread_mutex_unlock(&is->url_mu);
    const struct gw_keyset *file = is->file_keys;
    size_t total = is->nkeys + (file ? file->n : 0) + (*set ? (*set)->n : 0);
    const struct gw_key *only = NULL;
    for (int pass = 0; pass < 3; pass++) {
        const struct gw_key *ks = pass == 0   ? is->keys
                                  : pass == 1 ? (file ? file->keys : NULL)
                                              : (*set ? (*set)->keys : NULL);
        size_t n = pass == 0   ? is->nkeys
                   : pass == 1 ? (file ? file->n : 0)
                               : (*set ? (*set)->n : 0);
        for (size_t i = 0; i < n; i++) {
            if (kid == NULL) {
                only = &ks[i];
                continue;
            }
            if (ks[i].kid && strcmp(ks[i].kid, kid) == 0)
                return &ks[i];
        }
    }
    return kid == NULL && total == 1 ? only : NULL;
}

/* libjwt, as SPEC §4 asks: called only with a non-empty key of an algorithm it has
 * (gw_alg_in_libjwt: key->alg is then its jwt_alg_t), and its verdict counts only if the
 * algorithm it used is the one pinned (its header parse differs from ours: case, last duplicate
 * wins; our strict checks ran first, so the two must agree). */
static bool libjwt_agrees(const char *token, size_t len, const struct gw_key *key)
{
    if (key->material == NULL || key->material_len == 0 || !gw_alg_in_libjwt(key->alg))
        return false;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return false;
    memcpy(copy, token, len);
    copy[len] = '\0';
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, copy, key->material, (int)key->material_len);
    bool ok = rc == 0 && jwt != NULL && jwt_get_alg(jwt) == (jwt_alg_t)key->alg &&
              jwt_get_alg(jwt) != JWT_ALG_NONE;
    jwt_free(jwt);
    OPENSSL_clear_free(copy, len + 1);
    return ok;
}

/* The scope claims (SPEC §4): a space-separated string or an array of strings, exact words.
 * Returns -1 when a claim has another type. */
static int collect_scopes(const struct gw_cfg_issuer *ci, const cJSON *claims, char **mem,
                          const char ***scopes, size_t *n)
{
    size_t bytes = 0, words = 0;
    for (int pass = 0; pass < 2; pass++) {
        char *w = *mem;
        for (size_t c = 0; c < ci->nscope_claims; c++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, ci->scope_claims[c]);
            if (v == NULL)
                continue;
            if (!cJSON_IsString(v) && !cJSON_IsArray(v))
                return -1;
            const cJSON *it = cJSON_IsArray(v) ? v->child : v;
            for (; it; it = cJSON_IsArray(v) ? it->next : NULL) {
                if (!cJSON_IsString(it))
                    return -1;
                size_t sl = strlen(it->valuestring);
                if (pass == 0) {
                    bytes += sl + 1;
                    words += sl / 2 + 1;
                    continue;
                }
                memcpy(w, it->valuestring, sl + 1);
                if (cJSON_IsArray(v)) { /* an element is one scope, whatever it holds */
                    (*scopes)[(*n)++] = w;
                } else { /* a string is space-separated words */
                    char *save = NULL;
                    for (char *t = strtok_r(w, " ", &save); t; t = strtok_r(NULL, " ", &save))
                        (*scopes)[(*n)++] = t;
                }
                w += sl + 1;
            }
        }
        if (pass == 0) {
            if (bytes == 0)
                return 0;
            *mem = malloc(bytes);
            *scopes = malloc(words * sizeof **scopes);
            if (*mem == NULL || *scopes == NULL)
                return -1;
        }
    }
    return 0;
}

/* RFC 8705 §3.1: the cnf claim, when present, is an object; its x5t#S256, when present, the
 * base64url (43 characters, no padding) of a SHA-256. Returns 0 with *x5t (or NULL), -1 when
 * either has another form, -2 when cnf names another confirmation method (a DPoP "jkt", a
 * "jwk", ...): a token bound to a key the gateway cannot check is not used as a bearer token. */
static int cert_thumbprint(const cJSON *claims, const char **x5t)
{
    *x5t = NULL;
    const cJSON *cnf = cJSON_GetObjectItemCaseSensitive(claims, "cnf");
    if (cnf == NULL)
        return 0;
    if (!cJSON_IsObject(cnf))
        return -1;
    for (const cJSON *m = cnf->child; m; m = m->next)
        if (strcmp(m->string, "x5t#S256") != 0)
            return -2;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cnf, "x5t#S256");
    if (t == NULL)
        return 0;
    if (!cJSON_IsString(t) || strlen(t->valuestring) != 43 ||
        strspn(t->valuestring, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") !=
            43)
        return -1;
    *x5t = t->valuestring;
    return 0;
}

static enum gw_auth_reason check_claims(const struct gw_issuer *is, const cJSON *c, int64_t now,
                                        int64_t *exp_out)
{
    const struct gw_cfg_issuer *ci = is->cfg;
    int64_t exp = 0, nbf = 0, iat = 0;
    int he = int_claim(c, "exp", 1, &exp), hn = int_claim(c, "nbf", 0, &nbf),
        hi = int_claim(c, "iat", 0, &iat);
    if (he != 1 || hn < 0 || hi < 0)
        return GW_AUTH_BAD_CLAIMS;
    int64_t leeway = ci->leeway_s;
    if (now >= exp + leeway)
        return GW_AUTH_EXPIRED;
    if ((hn && now + leeway < nbf) || (hi && iat > now + leeway))
        return GW_AUTH_NOT_YET_VALID;
    if ((hi ? exp - iat : exp - now) > ci->max_lifetime_s)
        return GW_AUTH_BAD_CLAIMS;
    if (ci->naudiences > 0) {
        const cJSON *aud = cJSON_GetObjectItemCaseSensitive(c, "aud");
        if (aud == NULL)
            return GW_AUTH_AUDIENCE;
        if (!cJSON_IsString(aud) && !cJSON_IsArray(aud))
            return GW_AUTH_BAD_CLAIMS;
        bool match = false;
        const cJSON *items = cJSON_IsArray(aud) ? aud->child : aud;
        for (const cJSON *it = items; it; it = cJSON_IsArray(aud) ? it->next : NULL) {
            if (!cJSON_IsString(it))
                return GW_AUTH_BAD_CLAIMS;
            for (size_t k = 0; k < ci->naudiences; k++)
                match |= strcmp(it->valuestring, ci->audiences[k]) == 0;
        }
        if (!match)
            return GW_AUTH_AUDIENCE;
    }
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(c, ci->subject_claim);
    if (!cJSON_IsString(sub) || sub->valuestring[0] == '\0')
        return GW_AUTH_BAD_CLAIMS;
    static const char *const optional_strings[] = {"jti", "client_id", "azp"};
    for (size_t i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, optional_strings[i]);
        if (v && !cJSON_IsString(v))
            return GW_AUTH_BAD_CLAIMS;
    }
    const char *x5t = NULL;
    int bound = cert_thumbprint(c, &x5t);
    if (bound == -1)
        return GW_AUTH_BAD_CLAIMS;
    if (bound == -2)
        return GW_AUTH_BINDING;
    if (x5t == NULL && ci->require_cert_binding)
        return GW_AUTH_BINDING;
    *exp_out = exp;
    return GW_AUTH_OK;
}

static struct gw_principal *make_principal(const struct gw_issuer *is, cJSON *claims, int64_t exp,
                                           unsigned long key_epoch, enum gw_auth_reason *why)
{
    struct principal_mem *m = calloc(1, sizeof *m);
    if (m == NULL) {
        *why = GW_AUTH_MALFORMED;
        return NULL;
    }
    struct gw_principal *p = &m->p;
    atomic_init(&p->refs, 1);
    p->issuer = is;
    p->claims = claims;
    p->exp = exp;
    p->key_epoch = key_epoch;
    p->iss = cJSON_GetObjectItemCaseSensitive(claims, "iss")->valuestring;
    p->sub = cJSON_GetObjectItemCaseSensitive(claims, is->cfg->subject_claim)->valuestring;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, "client_id");
    if (v == NULL)
        v = cJSON_GetObjectItemCaseSensitive(claims, "azp");
    p->client_id = v ? v->valuestring : NULL;
    v = cJSON_GetObjectItemCaseSensitive(claims, "jti");
    p->jti = v ? v->valuestring : NULL;
    if (cert_thumbprint(claims, &p->cnf_x5t) != 0)
        p->cnf_x5t = NULL; /* explain's claims: only a verified token is ever bound */
    bool no_id = gw_subject_id(p->iss, p->sub, p->subject_id) != 0; /* out of memory */
    if (no_id || collect_scopes(is->cfg, claims, &m->scope_copy, &p->scopes, &p->nscopes) != 0) {
        p->claims = NULL; /* the caller keeps ownership on failure */
        gw_principal_unref(p);
        *why = no_id ? GW_AUTH_MALFORMED : GW_AUTH_BAD_CLAIMS;
        return NULL;
    }
    return p;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool gw_principal_bound_to(const struct gw_principal *p, const char *cert_sha256_hex)
{
    if (p->cnf_x5t == NULL)
        return true;
    unsigned char der_hash[32];
    if (strlen(cert_sha256_hex) != 64)
        return false; /* no client certificate: a bound token cannot be used */
    for (size_t i = 0; i < 32; i++) {
        int hi = hex_digit(cert_sha256_hex[2 * i]), lo = hex_digit(cert_sha256_hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        der_hash[i] = (unsigned char)(hi << 4 | lo);
    }
    char b64[48];
    gw_b64url_encode(der_hash, sizeof der_hash, b64);
    return strcmp(b64, p->cnf_x5t) == 0;
}

enum gw_auth_reason gw_jwt_verify(struct gw_auth *a, const char *token, size_t len, int64_t now,
                                  struct gw_principal **out)
{
    struct gw_key_miss miss;
    return gw_jwt_verify_miss(a, token, len, now, out, &miss);
}

enum gw_auth_reason gw_jwt_verify_miss(struct gw_auth *a, const char *token, size_t len,
                                       int64_t now, struct gw_principal **out,
                                       struct gw_key_miss *miss)
{
    *out = NULL;
    if (miss)
        *miss = (struct gw_key_miss){0};
    if (len == 0 || len > a->max_token_bytes)
        return GW_AUTH_MALFORMED;
    cJSON *header, *claims;
    enum gw_auth_reason r = parse_parts(token, len, &header, &claims);
    if (r != GW_AUTH_OK)
        return r;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(header, "alg");
    const cJSON *typ = cJSON_GetObjectItemCaseSensitive(header, "typ");
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(header, "kid");
    enum gw_alg want = cJSON_IsString(alg) ? gw_alg_from_name(alg->valuestring) : GW_ALG_NONE;
    bool at_jwt = false;
    if (want == GW_ALG_NONE || cJSON_GetObjectItemCaseSensitive(header, "crit") ||
        (typ && !(cJSON_IsString(typ) && gw_jws_typ_ok(typ->valuestring, &at_jwt))) ||
        (kid && !(cJSON_IsString(kid) && strlen(kid->valuestring) <= MAX_KID))) {
        r = GW_AUTH_MALFORMED;
        goto done;
    }
    if (has_huge_integer(claims, 0)) {
        r = GW_AUTH_BAD_CLAIMS;
        goto done;
    }
    struct gw_issuer *is = (struct gw_issuer *)find_issuer(a, claims);
    if (is == NULL) {
        r = GW_AUTH_UNKNOWN_ISSUER;
        goto done;
    }
    struct gw_keyset *set = NULL;
    unsigned long epoch = 0;
    /* before the keys are looked at: a fetch that ends after this counts for a wait */
    unsigned long gen = atomic_load_explicit(&is->fetch_gen, memory_order_acquire);
    const struct gw_key *key = find_key(is, kid ? kid->valuestring : NULL, &set, &epoch);
    if (key == NULL || key->alg != want) {
        if (key == NULL && kid && gw_jwks_fetched(is->cfg) && miss) {
            int64_t at = gw_jwks_request_refetch(a, is, now);
            if (at != INT64_MAX)
                *miss = (struct gw_key_miss){.issuer = is, .refetch_at = at, .fetch_gen = gen};
        }
        gw_keyset_unref(set);
        r = GW_AUTH_UNKNOWN_KEY;
        goto done;
    }
    enum gw_jws_result j = gw_jws_verify(token, len, key);
    /* libjwt 1.10.2 has no PS* or EdDSA, and refuses every typ but JWT
     * (research/libjwt-1.10.2.md): for those algorithms, and for an RFC 9068 access token (or
     * "application/jwt"), the OpenSSL layer alone decides, which checked the same header */
    bool libjwt_reads = gw_alg_in_libjwt(key->alg) &&
                        (typ == NULL || strcasecmp(typ->valuestring, "JWT") == 0);
    if (j == GW_JWS_OK && libjwt_reads && !libjwt_agrees(token, len, key))
        j = GW_JWS_BAD_SIGNATURE;
    gw_keyset_unref(set);
    if (j != GW_JWS_OK) {
        r = j == GW_JWS_MALFORMED   ? GW_AUTH_MALFORMED
            : j == GW_JWS_WRONG_ALG ? GW_AUTH_UNKNOWN_KEY
                                    : GW_AUTH_BAD_SIGNATURE;
        goto done;
    }
    int64_t exp = 0;
    r = check_claims(is, claims, now, &exp);
    if (r != GW_AUTH_OK)
        goto done;
    if (is->cfg->require_typ && !at_jwt) { /* RFC 9068 §4: only access tokens */
        r = GW_AUTH_BAD_CLAIMS;
        goto done;
    }
    *out = make_principal(is, claims, exp, epoch, &r);
    if (*out)
        claims = NULL; /* owned by the principal */
done:
    cJSON_Delete(header);
    cJSON_Delete(claims);
    return r;
}

enum gw_auth_reason gw_principal_from_claims(const struct gw_auth *a, const cJSON *claims,
                                             struct gw_principal **out)
{
    *out = NULL;
    if (!cJSON_IsObject(claims))
        return GW_AUTH_MALFORMED;
    const struct gw_issuer *is = find_issuer(a, claims);
    if (is == NULL)
        return GW_AUTH_UNKNOWN_ISSUER;
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, is->cfg->subject_claim);
    if (!cJSON_IsString(sub) || sub->valuestring[0] == '\0')
        return GW_AUTH_BAD_CLAIMS;
    static const char *const optional_strings[] = {"jti", "client_id", "azp"};
    for (size_t i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, optional_strings[i]);
        if (v && !cJSON_IsString(v))
            return GW_AUTH_BAD_CLAIMS;
    }
    cJSON *copy = cJSON_Duplicate(claims, true);
    if (copy == NULL)
        return GW_AUTH_MALFORMED;
    enum gw_auth_reason r = GW_AUTH_OK;
    *out = make_principal(is, copy, 0, atomic_load(&is->key_epoch), &r);
    if (*out == NULL)
        cJSON_Delete(copy);
    return r;
}

bool gw_principal_holds_op_scopes(const struct gw_principal *p, const struct gw_op *op)
{
    for (size_t i = 0; i < op->nsec; i++) {
        if (op->sec[i].nscopes == 0)
            continue; /* an alternative without scopes grants nothing here */
        bool all = true;
        for (size_t k = 0; k < op->sec[i].nscopes && all; k++)
            all = gw_principal_has_scope(p, op->sec[i].scopes[k]);
        if (all)
            return true;
    }
    return false;
}
