#include "snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "json.h"
#include "tls.h"

#define MAX_TOKEN_FILE 16384

char *gw_read_secret(const char *path, size_t max, size_t *len, char *why, size_t whylen)
{
    size_t n;
    char *buf = gw_read_file(path, max + 2, &n);
    if (buf == NULL) {
        snprintf(why, whylen, "cannot read %s: %s", path,
                 errno == EFBIG ? "file too large" : strerror(errno));
        return NULL;
    }
    size_t size = n + 1;
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    const char *problem = NULL;
    if (n == 0)
        problem = "is empty";
    else if (n > max)
        problem = "is too long";
    for (size_t i = 0; problem == NULL && i < n; i++)
        if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7E)
            problem = "holds a space, a line break or a non-ASCII byte (only one trailing "
                      "newline is allowed)";
    if (problem) {
        /* never echo the content */
        snprintf(why, whylen, "%s %s", path, problem);
        OPENSSL_clear_free(buf, size);
        return NULL;
    }
    *len = n;
    return buf;
}

static int cmp_cred(const void *a, const void *b)
{
    return strcmp(((const struct gw_credential *)a)->location_id,
                  ((const struct gw_credential *)b)->location_id);
}

/* Ops that will answer 503 whatever the caller sends: said at check time, not found in use. */
static void warn_unservable_ops(struct gw_snapshot *s, struct gw_errs *errs)
{
    for (size_t i = 0; i < s->api->nops; i++) {
        const struct gw_op *op = &s->api->ops[i];
        if (op->cred == GW_CRED_AGENCY && s->agency.token == NULL)
            gw_msgs_add(&errs->warnings,
                        "warning: op %s has no credential: credentials.agency_token_file "
                        "is null, so it will answer 503",
                        op->id);
        else if (op->cred == GW_CRED_LOCATION && s->nlocations == 0)
            gw_msgs_add(&errs->warnings,
                        "warning: op %s has no credential: "
                        "credentials.location_token_files is empty, so it will answer 503",
                        op->id);
        else if (op->cred == GW_CRED_NONE)
            gw_msgs_add(&errs->warnings,
                        "warning: op %s uses no security scheme the gateway holds a "
                        "credential for, so it will answer 503",
                        op->id);
        if (op->scope == NULL)
            gw_msgs_add(&errs->warnings,
                        "warning: op %s has no scope in the OpenAPI document, so it will "
                        "answer 503 (no token can be checked for it)",
                        op->id);
    }
}

/* What both builds share: the configuration (NULL with its errors when it does not load),
 * then the OpenAPI document and the policies (their problems added to errs, the snapshot
 * still returned, so that the caller reports every problem at once). */
static struct gw_snapshot *snapshot_start(const char *path, bool offline, struct gw_errs *errs)
{
    size_t before = errs->problems.n;
    struct gw_snapshot *s = calloc(1, sizeof *s);
    if (s != NULL) {
        atomic_init(&s->refs, 1);
        s->offline = offline;
        s->cfg = gw_config_load(path, !offline, errs);
    }
    if (s == NULL || s->cfg == NULL) {
        if (errs->problems.n == before)
            gw_msgs_add(&errs->problems, "out of memory");
        gw_snapshot_unref(s);
        return NULL;
    }
    char err[512];
    if (gw_openapi_load(s->cfg->upstream.openapi, &s->api, err, sizeof err) != 0)
        gw_msgs_add(&errs->problems, "upstream.openapi: %s", err);
    else if ((s->policies = gw_policies_load(s->cfg->policies.dir, s->api, errs)) == NULL)
        gw_msgs_add(&errs->problems, "policies.dir: the policy set is not valid");
    return s;
}

struct gw_snapshot *gw_snapshot_build(const char *path, struct gw_errs *errs)
{
    size_t before = errs->problems.n;
    struct gw_snapshot *s = snapshot_start(path, false, errs);
    if (s == NULL)
        return NULL;
    if (s->policies && s->policies->n == 0)
        gw_msgs_add(&errs->warnings,
                    "warning: %s holds no policy file: every request under /users will "
                    "answer 403",
                    s->cfg->policies.dir);
    char err[512];
    const struct gw_config *c = s->cfg;
    if (c->credentials.agency_token_file) {
        s->agency.token = gw_read_secret(c->credentials.agency_token_file, MAX_TOKEN_FILE,
                                         &s->agency.len, err, sizeof err);
        if (s->agency.token == NULL)
            gw_msgs_add(&errs->problems, "%s: credentials.agency_token_file: %s", c->file, err);
    }
    if (c->credentials.nlocation) {
        s->locations = calloc(c->credentials.nlocation, sizeof *s->locations);
        if (s->locations == NULL)
            goto bad;
        for (size_t i = 0; i < c->credentials.nlocation; i++) {
            struct gw_credential *cr = &s->locations[s->nlocations];
            cr->token = gw_read_secret(c->credentials.location[i].file, MAX_TOKEN_FILE, &cr->len,
                                       err, sizeof err);
            if (cr->token == NULL) {
                gw_msgs_add(&errs->problems, "%s: credentials.location_token_files.%s: %s", c->file,
                            c->credentials.location[i].location_id, err);
                continue;
            }
            cr->location_id = strdup(c->credentials.location[i].location_id);
            s->nlocations++;
        }
        qsort(s->locations, s->nlocations, sizeof *s->locations, cmp_cred);
    }
    if (c->rate_limit.redis.password_file) {
        s->redis.token = gw_read_secret(c->rate_limit.redis.password_file, MAX_TOKEN_FILE,
                                        &s->redis.len, err, sizeof err);
        if (s->redis.token == NULL)
            gw_msgs_add(&errs->problems, "%s:%d: rate_limit.redis.password_file: %s", c->file,
                        c->rate_limit.redis.line, err);
    }
    if (gw_auth_build(c, &s->auth, errs) != 0 && errs->problems.n == before)
        gw_msgs_add(&errs->problems, "%s: auth: cannot load the issuers", c->file);
    if (c->auth.nissuers == 0)
        gw_msgs_add(&errs->warnings,
                    "warning: auth.issuers is empty: every request under /users will "
                    "answer 401");
    s->server_ctx = gw_tls_server_ctx(c, err, sizeof err);
    if (s->server_ctx == NULL)
        gw_msgs_add(&errs->problems, "%s: %s", c->file, err);
    s->upstream_ctx = gw_tls_upstream_ctx(c, err, sizeof err);
    if (s->upstream_ctx == NULL)
        gw_msgs_add(&errs->problems, "%s: %s", c->file, err);
    if (errs->problems.n > before)
        goto bad;
    warn_unservable_ops(s, errs);
    return s;
bad:
    if (errs->problems.n == before)
        gw_msgs_add(&errs->problems, "out of memory");
    gw_snapshot_unref(s);
    return NULL;
}

struct gw_snapshot *gw_snapshot_build_offline(const char *path, struct gw_errs *errs)
{
    size_t before = errs->problems.n;
    struct gw_snapshot *s = snapshot_start(path, true, errs);
    if (s == NULL)
        return NULL;
    const struct gw_config *c = s->cfg;
    s->locations = calloc(c->credentials.nlocation + 1, sizeof *s->locations);
    s->auth = gw_auth_build_rules(c);
    if (s->locations == NULL || s->auth == NULL)
        goto bad;
    for (size_t i = 0; i < c->credentials.nlocation; i++)
        if ((s->locations[s->nlocations].location_id =
                 strdup(c->credentials.location[i].location_id)) != NULL)
            s->nlocations++;
    qsort(s->locations, s->nlocations, sizeof *s->locations, cmp_cred);
    if (errs->problems.n > before)
        goto bad;
    return s;
bad:
    if (errs->problems.n == before)
        gw_msgs_add(&errs->problems, "out of memory");
    gw_snapshot_unref(s);
    return NULL;
}

void gw_snapshot_follow(struct gw_snapshot *next, const struct gw_snapshot *prev)
{
    next->generation = prev ? prev->generation + 1 : 1;
}

struct gw_snapshot *gw_snapshot_ref(struct gw_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

static void wipe(struct gw_credential *c)
{
    if (c->token)
        OPENSSL_clear_free(c->token, c->len);
    free(c->location_id);
}

void gw_snapshot_unref(struct gw_snapshot *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    wipe(&s->agency);
    wipe(&s->redis);
    for (size_t i = 0; i < s->nlocations; i++)
        wipe(&s->locations[i]);
    free(s->locations);
    SSL_CTX_free(s->server_ctx);
    SSL_CTX_free(s->upstream_ctx);
    gw_auth_free(s->auth);
    gw_policies_free(s->policies);
    gw_openapi_free(s->api);
    gw_config_free(s->cfg);
    free(s);
}

const struct gw_credential *gw_snapshot_location(const struct gw_snapshot *s,
                                                 const char *location_id)
{
    struct gw_credential key = {.location_id = (char *)location_id};
    return bsearch(&key, s->locations, s->nlocations, sizeof *s->locations, cmp_cred);
}
