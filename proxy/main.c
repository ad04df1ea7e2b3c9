/* ghl-gateway: the commands of SPEC §1.1. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>

#include "audit.h"
#include "b64url.h"
#include "config.h"
#include "explain.h"
#include "jwks.h"
#include "json.h"
#include "keys.h"
#include "openapi.h"
#include "policy.h"
#include "rlstore.h"
#include "server.h"
#include "snapshot.h"

struct command {
    const char *name;
    const char *usage;
    const char *help;
    int (*run)(int argc, char **argv);
};

static const struct command *find(const char *name);

static int usage_error(const struct command *c, const char *why)
{
    if (why)
        fprintf(stderr, "ghl-gateway %s: %s\n", c->name, why);
    fprintf(stderr, "usage: ghl-gateway %s\n", c->usage);
    return 2;
}

static bool is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

/* Parses "-c FILE" (or --config FILE) and nothing else. Returns 0, 1 for --help, -1 on error. */
static int config_arg(const struct command *c, int argc, char **argv, const char **path)
{
    *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: ghl-gateway %s\n\n%s\n", c->usage, c->help);
            return 1;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc &&
            *path == NULL) {
            *path = argv[++i];
            continue;
        }
        usage_error(c, "unexpected argument");
        return -1;
    }
    if (*path == NULL) {
        usage_error(c, "-c FILE is required");
        return -1;
    }
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *path;
    int rc = config_arg(find("run"), argc, argv, &path);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    return gw_server_run(path);
}

static void summary(const struct gw_snapshot *s)
{
    const struct gw_config *c = s->cfg;
    printf("%s: configuration is valid\n", c->file);
    printf("  listen     %s:%ld, TLS %s+, client certificates %s, %ld worker%s\n",
           c->listen.address, c->listen.port, c->tls.min_version == TLS1_3_VERSION ? "1.3" : "1.2",
           c->tls.client_ca ? "required (mTLS)" : "not required", c->listen.workers,
           c->listen.workers == 1 ? "" : "s");
    printf("  admin      %s:%ld\n", c->admin.address, c->admin.port);
    printf("  upstream   %s (CA: %s), timeouts connect %ld ms / answer %ld ms, Version",
           c->upstream.url, c->upstream.ca_file ? c->upstream.ca_file : "system store",
           c->upstream.connect_timeout_ms, c->upstream.timeout_ms);
    for (size_t i = 0; i < c->upstream.napi_versions; i++)
        printf(" %s", c->upstream.api_versions[i]);
    printf("\n  openapi    %s: %zu operations, %zu grantable scopes, %zu permission flags\n",
           s->api->path, s->api->nops, s->api->nscopes, s->api->nperms);
    printf("  credentials agency token %s, %zu location token%s\n",
           s->agency.token ? "set" : "not set", s->nlocations, s->nlocations == 1 ? "" : "s");
    printf("  auth       %zu issuer%s, token cache %ld entries, tokens up to %ld bytes\n",
           c->auth.nissuers, c->auth.nissuers == 1 ? "" : "s", c->auth.token_cache_entries,
           c->limits.max_token_bytes);
    for (size_t i = 0; i < s->auth->nissuers; i++) {
        const struct gw_issuer *is = &s->auth->issuers[i];
        printf("    %s: %zu key%s%s%s%s%s, audiences", is->cfg->issuer, is->nkeys,
               is->nkeys == 1 ? "" : "s", is->file_keys ? " + JWKS file" : "",
               is->cfg->jwks_url ? " + JWKS " : "", is->cfg->jwks_url ? is->cfg->jwks_url : "",
               is->cfg->discovery ? " + JWKS by discovery" : "");
        for (size_t k = 0; k < is->cfg->naudiences; k++)
            printf(" %s", is->cfg->audiences[k]);
        printf("%s\n", is->cfg->naudiences ? "" : " (not checked)");
    }
    printf("  policies   %s: %zu polic%s", c->policies.dir, s->policies->n,
           s->policies->n == 1 ? "y" : "ies");
    for (size_t i = 0; i < s->policies->n; i++)
        printf("%s%s", i ? ", " : " (", gw_policy_name(gw_policies_at(s->policies, i)));
    printf("%s\n", s->policies->n ? ")" : "");
    printf("  audit      %s%s, replica %s\n", c->audit.file ? c->audit.file : "(no file)",
           c->audit.fsync ? " (fsync)" : "", c->audit.replica_id);
    printf("  access log %s\n", c->access_log.file ? c->access_log.file : "stderr");
    static const char *const on_failure[] = {"local", "deny", "allow"};
    if (c->rate_limit.redis.enabled)
        printf("  rate limits shared on %s (answered, script loaded; on_failure %s)\n",
               c->rate_limit.redis.url, on_failure[c->rate_limit.redis.on_failure]);
    else if (c->rate_limit.replicas > 1)
        printf("  rate limits in this process: 1/%ld of each (rate_limit.replicas)\n",
               c->rate_limit.replicas);
}

/* check's probe of the shared rate-limit store (SPEC §11.2): connects, authenticates, selects
 * the database and loads the script. False with the problem added. */
static bool store_answers(const struct gw_snapshot *s, struct gw_errs *errs)
{
    const struct gw_config *c = s->cfg;
    char why[600];
    if (!c->rate_limit.redis.enabled ||
        gw_rlstore_probe(&c->rate_limit.redis, s->redis.token, why, sizeof why) == 0)
        return true;
    gw_msgs_add(&errs->problems, "%s:%d: rate_limit.redis: %s", c->file, c->rate_limit.redis.line,
                why);
    return false;
}

static int cmd_check(int argc, char **argv)
{
    const char *path;
    int rc = config_arg(find("check"), argc, argv, &path);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    struct gw_errs errs = {0};
    struct gw_snapshot *s = gw_snapshot_build(path, &errs);
    if (s)
        gw_jwks_check(s->auth, &errs);
    uint64_t audit_seq = 0;
    char why[1200], note[1200];
    if (s && !store_answers(s, &errs)) {
        gw_snapshot_unref(s);
        s = NULL;
    }
    if (s && gw_audit_inspect(s->cfg, &audit_seq, note, sizeof note, why, sizeof why) != 0) {
        gw_msgs_add(&errs.problems, "%s", why);
        gw_snapshot_unref(s);
        s = NULL;
    }
    for (size_t i = 0; i < errs.problems.n; i++)
        fprintf(stderr, "%s\n", errs.problems.v[i]);
    if (s) {
        summary(s);
        printf("  audit chain continues at seq %llu (%s)\n", (unsigned long long)audit_seq + 1,
               s->cfg->audit.hmac_key_file ? "HMAC-SHA256" : "SHA-256");
        if (note[0])
            printf("  audit repair at start: %s\n", note);
    }
    for (size_t i = 0; i < errs.warnings.n; i++)
        fprintf(stderr, "%s\n", errs.warnings.v[i]);
    if (s == NULL)
        fprintf(stderr, "%s: %zu problem%s found\n", path, errs.problems.n,
                errs.problems.n == 1 ? "" : "s");
    gw_errs_free(&errs);
    gw_snapshot_unref(s);
    return s ? 0 : 1;
}

static int cmd_version(int argc, char **argv)
{
    if (argc > 0 && is_help(argv[0])) {
        printf("usage: ghl-gateway version\n");
        return 0;
    }
    if (argc > 0)
        return usage_error(find("version"), "unexpected argument");
    printf("ghl-gateway %s (%s, libevent %s)\n", GW_VERSION, OpenSSL_version(OPENSSL_VERSION),
           "2.1");
    return 0;
}

/* Loads what the offline commands decide with (no key, certificate or credential file is
 * read); prints the problems when it does not load. */
static struct gw_snapshot *load_quietly(const char *path)
{
    struct gw_errs errs = {0};
    struct gw_snapshot *s = gw_snapshot_build_offline(path, &errs);
    if (s == NULL) {
        for (size_t i = 0; i < errs.problems.n; i++)
            fprintf(stderr, "%s\n", errs.problems.v[i]);
        fprintf(stderr,
                "%s: the configuration does not load ('ghl-gateway check -c %s' tells "
                "more)\n",
                path, path);
    }
    gw_errs_free(&errs);
    return s;
}

/* JSON|@FILE: the text itself, or the content of FILE. Returns a malloc'd string or NULL. */
static char *arg_text(const char *arg, size_t *len, const char *what)
{
    if (arg[0] == '@') {
        char *t = gw_read_file(arg + 1, 8u << 20, len);
        if (t == NULL)
            fprintf(stderr, "%s: cannot read %s: %s\n", what, arg + 1, strerror(errno));
        return t;
    }
    *len = strlen(arg);
    char *t = malloc(*len + 1);
    if (t)
        memcpy(t, arg, *len + 1);
    return t;
}

/* A JSON object argument (JSON|@FILE), parsed strictly. */
static cJSON *arg_object(const char *arg, const char *what)
{
    size_t len;
    char *t = arg_text(arg, &len, what);
    if (t == NULL)
        return NULL;
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 32};
    cJSON *j = gw_json_parse(t, len, &o, &je);
    free(t);
    if (j == NULL)
        fprintf(stderr, "%s: line %d: %s\n", what, je.line, je.msg);
    else if (!cJSON_IsObject(j)) {
        fprintf(stderr, "%s: must be a JSON object\n", what);
        cJSON_Delete(j);
        j = NULL;
    }
    return j;
}

static int cmd_explain(int argc, char **argv)
{
    const struct command *c = find("explain");
    const char *config = NULL, *claims = NULL, *request = NULL, *body = NULL, *target = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: ghl-gateway %s\n\n%s\n", c->usage, c->help);
            return 0;
        }
        const char **slot = strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0 ? &config
                            : strcmp(argv[i], "--claims") == 0                             ? &claims
                            : strcmp(argv[i], "--request") == 0 ? &request
                            : strcmp(argv[i], "--body") == 0    ? &body
                            : strcmp(argv[i], "--target") == 0  ? &target
                                                                : NULL;
        if (slot == NULL || i + 1 >= argc || *slot != NULL)
            return usage_error(c, slot == NULL ? "unexpected argument"
                                  : *slot      ? "an option is given twice"
                                               : "an option lacks its value");
        *slot = argv[++i];
    }
    if (config == NULL || claims == NULL || request == NULL)
        return usage_error(c, "-c, --claims and --request are required");
    cJSON *cl = arg_object(claims, "--claims");
    cJSON *tg = target ? arg_object(target, "--target") : NULL;
    size_t blen = 0;
    char *bt = body ? arg_text(body, &blen, "--body") : NULL;
    if (cl == NULL || (target && tg == NULL) || (body && bt == NULL)) {
        cJSON_Delete(cl);
        cJSON_Delete(tg);
        free(bt);
        return 2;
    }
    struct gw_snapshot *s = load_quietly(config);
    int rc = 2;
    if (s) {
        struct gw_explain_input in = {cl, request, bt, blen, tg};
        struct gw_explain e;
        char why[200];
        if (gw_explain(s, &in, &e, why, sizeof why) != 0) {
            rc = usage_error(c, why);
        } else {
            const struct gw_op *op = e.op ? gw_openapi_op(s->api, e.op) : NULL;
            if (op && gw_policy_needs_target(op) && tg == NULL && !e.allowed && e.reasons.n &&
                strstr(e.reasons.v[0], "the user to change is not known"))
                fprintf(stderr,
                        "note: %s is decided on the user it changes; give it with "
                        "--target (the live gateway fetches it upstream)\n",
                        op->id);
            cJSON *j = gw_explain_json(&e);
            char *text = j ? cJSON_PrintUnformatted(j) : NULL;
            if (text)
                printf("%s\n", text);
            rc = text == NULL ? 2 : e.allowed ? 0 : 1;
            cJSON_free(text);
            cJSON_Delete(j);
            gw_explain_free(&e);
        }
    }
    gw_snapshot_unref(s);
    cJSON_Delete(cl);
    cJSON_Delete(tg);
    free(bt);
    return rc;
}

static int cmd_policy_test(int argc, char **argv)
{
    const struct command *c = find("policy-test");
    const char *config = NULL, *cases = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: ghl-gateway %s\n\n%s\n", c->usage, c->help);
            return 0;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc &&
            config == NULL)
            config = argv[++i];
        else if (argv[i][0] != '-' && cases == NULL)
            cases = argv[i];
        else
            return usage_error(c, "unexpected argument");
    }
    if (config == NULL || cases == NULL)
        return usage_error(c, "-c FILE and a CASES.json file are required");
    struct gw_snapshot *s = load_quietly(config);
    if (s == NULL)
        return 2;
    int failed = gw_policy_test(s, cases, stdout, stderr);
    gw_snapshot_unref(s);
    return failed == 0 ? 0 : 1;
}

/* An audit chain's HMAC key (--key FILE) for audit-verify and audit-repair. Returns 0, or -1
 * after saying why on stderr. */
static int read_audit_key(const char *cmd, const char *keyfile, unsigned char **key, size_t *keylen)
{
    char why[300];
    *key = (unsigned char *)gw_read_secret(keyfile, 4096, keylen, why, sizeof why);
    if (*key == NULL) {
        fprintf(stderr, "ghl-gateway %s: --key %s: %s\n", cmd, keyfile, why);
        return -1;
    }
    return 0;
}

static int cmd_audit_verify(int argc, char **argv)
{
    const struct command *c = find("audit-verify");
    const char *keyfile = NULL;
    struct gw_audit_verify_opts o = {0};
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    struct gw_audit_anchor *anchors = calloc((size_t)argc + 1, sizeof *anchors);
    size_t nfiles = 0;
    int rc = 0;
    if (files == NULL || anchors == NULL) {
        free(files);
        free(anchors);
        return 2;
    }
    for (int i = 0; i < argc && rc == 0; i++) {
        if (is_help(argv[i])) {
            printf("usage: ghl-gateway %s\n\n%s\n", c->usage, c->help);
            rc = -1;
        } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc && keyfile == NULL) {
            keyfile = argv[++i];
        } else if (strcmp(argv[i], "--anchor") == 0 && i + 1 < argc) {
            if (gw_audit_anchor_parse(argv[++i], &anchors[o.nanchors++]) != 0)
                rc = usage_error(c, "--anchor is [REPLICA:]SEQ:HASH (the hash as 64 lowercase "
                                    "hex digits)");
        } else if (strcmp(argv[i], "--continue") == 0) {
            o.cont = true;
        } else if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) {
            files[nfiles++] = argv[i];
        } else {
            rc = usage_error(c, "unexpected argument");
        }
    }
    if (rc == 0 && nfiles == 0)
        rc = usage_error(c, "no file to verify");
    unsigned char *key = NULL;
    size_t keylen = 0;
    if (rc == 0 && keyfile && read_audit_key("audit-verify", keyfile, &key, &keylen) != 0)
        rc = 2;
    if (rc == 0) {
        o.key = key;
        o.keylen = keylen;
        o.anchors = anchors;
        rc = gw_audit_verify(files, nfiles, &o, stdout, stderr);
    }
    if (key)
        OPENSSL_clear_free(key, keylen + 1);
    free(files);
    free(anchors);
    return rc < 0 ? 0 : rc;
}

static int cmd_audit_repair(int argc, char **argv)
{
    const struct command *c = find("audit-repair");
    const char *keyfile = NULL, *file = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: ghl-gateway %s\n\n%s\n", c->usage, c->help);
            return 0;
        }
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc && keyfile == NULL)
            keyfile = argv[++i];
        else if (argv[i][0] != '-' && file == NULL)
            file = argv[i];
        else
            return usage_error(c, "unexpected argument");
    }
    if (file == NULL)
        return usage_error(c, "no file to repair");
    unsigned char *key = NULL;
    size_t keylen = 0;
    if (keyfile && read_audit_key("audit-repair", keyfile, &key, &keylen) != 0)
        return 2;
    int rc = gw_audit_repair(file, key, keylen, stdout, stderr);
    if (key)
        OPENSSL_clear_free(key, keylen + 1);
    return rc;
}

/* Reads the signing key: an HMAC secret (the file but one trailing newline) or a PEM private
 * key, as libjwt takes them. */
static unsigned char *read_signing_key(const char *path, size_t *len)
{
    size_t n;
    char *buf = gw_read_file(path, 1u << 16, &n);
    if (buf == NULL) {
        fprintf(stderr, "ghl-gateway mint: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (n > 0 && buf[n - 1] == '\n' && strstr(buf, "-----BEGIN") == NULL)
        n--;
    *len = n;
    return (unsigned char *)buf;
}

/* The algorithms mint signs through OpenSSL because libjwt 1.10.2 has none of them. */
static const struct {
    enum gw_alg alg;
    const char *md;   /* NULL: EdDSA hashes inside the signature */
    const char *type; /* the private key's OpenSSL type */
} openssl_algs[] = {
    {GW_ALG_PS256, "SHA256", "RSA"},
    {GW_ALG_PS384, "SHA384", "RSA"},
    {GW_ALG_PS512, "SHA512", "RSA"},
    {GW_ALG_EDDSA, NULL, "ED25519"},
};

/* Signs in[0..len) with the PEM private key for alg (PS*: PSS, MGF1 and salt of the hash, as
 * keys.c verifies). Returns the base64url signature (malloc'd), or NULL with the problem
 * printed. */
static char *openssl_sign(enum gw_alg alg, const unsigned char *pem, size_t pemlen,
                          const char *keyfile, const char *in, size_t len)
{
    size_t a = 0;
    while (a < sizeof openssl_algs / sizeof *openssl_algs && openssl_algs[a].alg != alg)
        a++;
    if (a == sizeof openssl_algs / sizeof *openssl_algs)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)pemlen);
    EVP_PKEY *pk = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (pk == NULL || !EVP_PKEY_is_a(pk, openssl_algs[a].type)) {
        fprintf(stderr, "ghl-gateway mint: %s is not a PEM %s private key%s\n", keyfile,
                openssl_algs[a].type,
                pk && EVP_PKEY_is_a(pk, "ED448")
                    ? " (EdDSA is Ed25519 only: Ed448 is not supported)"
                    : "");
        EVP_PKEY_free(pk);
        ERR_clear_error();
        return NULL;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    char *out = NULL;
    bool ok =
        ctx && EVP_DigestSignInit_ex(ctx, &pctx, openssl_algs[a].md, NULL, NULL, pk, NULL) == 1;
    if (ok && openssl_algs[a].md)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, openssl_algs[a].md, NULL) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
    ok = ok && EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *)in, len) == 1 &&
         (sig = malloc(siglen)) != NULL &&
         EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)in, len) == 1 &&
         (out = malloc(GW_B64URL_ENCODED_SIZE(siglen))) != NULL;
    if (ok)
        gw_b64url_encode(sig, siglen, out);
    else
        fprintf(stderr, "ghl-gateway mint: signing with %s failed\n", keyfile);
    free(sig);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    ERR_clear_error();
    return ok ? out : NULL;
}

/* A compact JWS of jwt's claims for an algorithm libjwt lacks: the header {"alg","typ":"JWT"
 * and "kid" when given} written here, the signature by openssl_sign. NULL on failure. */
static char *encode_openssl(jwt_t *jwt, enum gw_alg alg, const char *kid, const unsigned char *k,
                            size_t klen, const char *keyfile)
{
    cJSON *h = cJSON_CreateObject();
    if (h == NULL || !cJSON_AddStringToObject(h, "alg", gw_alg_name(alg)) ||
        !cJSON_AddStringToObject(h, "typ", "JWT") ||
        (kid && !cJSON_AddStringToObject(h, "kid", kid))) {
        cJSON_Delete(h);
        return NULL;
    }
    char *hjson = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    char *claims = jwt_get_grants_json(jwt, NULL); /* malloc'd by libjwt 1.10 */
    char *in = NULL, *sig = NULL, *token = NULL;
    size_t hl = hjson ? strlen(hjson) : 0, cl = claims ? strlen(claims) : 0;
    size_t cap = GW_B64URL_ENCODED_SIZE(hl) + GW_B64URL_ENCODED_SIZE(cl);
    if (hjson && claims && (in = malloc(cap)) != NULL) {
        size_t n = gw_b64url_encode((const unsigned char *)hjson, hl, in);
        in[n++] = '.';
        n += gw_b64url_encode((const unsigned char *)claims, cl, in + n);
        sig = openssl_sign(alg, k, klen, keyfile, in, n);
        size_t tl = sig ? n + 1 + strlen(sig) + 1 : 0;
        if (sig && (token = malloc(tl)) != NULL)
            snprintf(token, tl, "%s.%s", in, sig);
    }
    cJSON_free(hjson);
    free(claims);
    free(in);
    free(sig);
    return token;
}

static int cmd_mint(int argc, char **argv)
{
    const struct command *c = find("mint");
    const char *key = NULL, *alg = NULL, *kid = NULL, *iss = NULL, *sub = NULL, *aud = NULL,
               *scope = NULL;
    long ttl = 3600;
    const char *claims[64];
    size_t nclaims = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            printf("usage: ghl-gateway %s\n\n%s\n", c->usage, c->help);
            return 0;
        }
        if (i + 1 >= argc)
            return usage_error(c, "an option is missing its value");
        const char *v = argv[++i];
        if (strcmp(a, "--key") == 0)
            key = v;
        else if (strcmp(a, "--alg") == 0)
            alg = v;
        else if (strcmp(a, "--kid") == 0)
            kid = v;
        else if (strcmp(a, "--iss") == 0)
            iss = v;
        else if (strcmp(a, "--sub") == 0)
            sub = v;
        else if (strcmp(a, "--aud") == 0)
            aud = v;
        else if (strcmp(a, "--scope") == 0)
            scope = v;
        else if (strcmp(a, "--ttl") == 0) {
            char *end;
            errno = 0;
            ttl = strtol(v, &end, 10);
            if (errno || *end || end == v || ttl < -86400L * 366 || ttl > 86400L * 3660)
                return usage_error(c, "--ttl takes a number of seconds");
        } else if (strcmp(a, "--claim") == 0 && nclaims < 64)
            claims[nclaims++] = v;
        else
            return usage_error(c, "unknown option");
    }
    if (key == NULL || alg == NULL || iss == NULL || sub == NULL)
        return usage_error(c, "--key, --alg, --iss and --sub are required");
    enum gw_alg ga = gw_alg_from_name(alg);
    if (ga == GW_ALG_NONE)
        return usage_error(c, "--alg is one of HS256 HS384 HS512 RS256 RS384 RS512 ES256 ES384 "
                              "ES512 PS256 PS384 PS512 EdDSA");
    /* only HS/RS/ES values are libjwt's jwt_alg_t (keys.h); the others are signed here */
    bool by_libjwt = gw_alg_in_libjwt(ga);
    size_t klen;
    unsigned char *k = read_signing_key(key, &klen);
    if (k == NULL)
        return 1;
    jwt_t *jwt = NULL;
    int rc = 1;
    char *token = NULL;
    if (jwt_new(&jwt) != 0 || (by_libjwt && jwt_set_alg(jwt, (jwt_alg_t)ga, k, (int)klen) != 0)) {
        fprintf(stderr, "ghl-gateway mint: %s cannot sign %s\n", key, alg);
        goto out;
    }
    if (kid && jwt_add_header(jwt, "kid", kid) != 0)
        goto out;
    /* --claim first: a test may set exp, iat or iss to something odd on purpose */
    for (size_t i = 0; i < nclaims; i++) {
        const char *eq = strchr(claims[i], '=');
        if (eq == NULL || eq == claims[i]) {
            rc = usage_error(c, "--claim takes NAME=JSON");
            goto out;
        }
        struct gw_json_error je;
        cJSON *v = gw_json_parse(eq + 1, strlen(eq + 1), NULL, &je);
        cJSON *obj = cJSON_CreateObject();
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - claims[i]), claims[i]);
        if (v == NULL || obj == NULL) {
            fprintf(stderr, "ghl-gateway mint: --claim %s: %s\n", name, v ? "" : je.msg);
            cJSON_Delete(v);
            cJSON_Delete(obj);
            goto out;
        }
        cJSON_AddItemToObject(obj, name, v);
        char *json = cJSON_PrintUnformatted(obj);
        cJSON_Delete(obj);
        int added = json ? jwt_add_grants_json(jwt, json) : -1;
        cJSON_free(json);
        if (added != 0) {
            fprintf(stderr, "ghl-gateway mint: cannot add claim %s\n", name);
            goto out;
        }
    }
    long now = (long)time(NULL);
    if ((jwt_get_grant(jwt, "iss") == NULL && jwt_add_grant(jwt, "iss", iss) != 0) ||
        (jwt_get_grant(jwt, "sub") == NULL && jwt_add_grant(jwt, "sub", sub) != 0) ||
        (aud && jwt_get_grant(jwt, "aud") == NULL && jwt_add_grant(jwt, "aud", aud) != 0) ||
        (scope && jwt_get_grant(jwt, "scope") == NULL && jwt_add_grant(jwt, "scope", scope) != 0))
        goto out;
    static const char *const times[] = {"iat", "exp"};
    for (int i = 0; i < 2; i++) {
        char *have = jwt_get_grants_json(jwt, times[i]); /* NULL when absent */
        if (have == NULL && jwt_add_grant_int(jwt, times[i], i ? now + ttl : now) != 0)
            goto out;
        free(have);
    }
    token = by_libjwt ? jwt_encode_str(jwt) : encode_openssl(jwt, ga, kid, k, klen, key);
    if (token == NULL) {
        fprintf(stderr, "ghl-gateway mint: signing failed (is %s a %s key?)\n", key, alg);
        goto out;
    }
    printf("%s\n", token);
    rc = 0;
out:
    if (token)
        free(token); /* libjwt 1.10 allocates it with malloc */
    jwt_free(jwt);
    OPENSSL_clear_free(k, klen);
    return rc;
}

static const struct command commands[] = {
    {"run", "run -c FILE", "Serve until SIGTERM or SIGINT (also: ghl-gateway -c FILE).", cmd_run},
    {"check", "check -c FILE",
     "Load and validate the configuration and everything it names; print a summary.\n"
     "Exit 0 when valid, 1 with each problem on its own line when not.",
     cmd_check},
    {"explain",
     "explain -c FILE --claims JSON|@FILE --request 'METHOD PATH[?QUERY]' [--body JSON|@FILE] "
     "[--target JSON|@FILE]",
     "Evaluate offline what the gateway would do with a request: routing, the scope, query and\n"
     "body validation, the credential and the policies, with the same code as the live path.\n"
     "--claims are the token's claims (no signature or expiry is checked); --target is the\n"
     "user as the upstream has it (update-user and delete-user are decided on it; for\n"
     "get-user the read rules apply to it). Prints {\"allowed\",\"op\",\"policy\",\"reasons\"}\n"
     "(and \"status\", the answer, when denied). Exit 0 allowed, 1 denied, 2 usage error or a\n"
     "configuration that does not load.",
     cmd_explain},
    {"policy-test", "policy-test -c FILE CASES.json",
     "Run policy test cases (a JSON array of {name, claims, request, body, target, expect,\n"
     "reason_contains}) through the same evaluation as explain. Prints one line per failing\n"
     "case and 'N passed, M failed'. Exit 0 only when none failed.",
     cmd_policy_test},
    {"audit-verify",
     "audit-verify FILE... [--key FILE] [--anchor [REPLICA:]SEQ:HASH]... [--continue]",
     "Verify audit logs' hash chains: the files of one or more replicas, each replica's in order\n"
     "(the oldest first), e.g. audit-verify /var/log/ghl-gateway/*/audit*.jsonl with the names\n"
     "sorting oldest first. The files are grouped by the replica of their records (records\n"
     "without one were written before replica ids: 'replica (none)'); a file holding two\n"
     "replicas' records fails. Prints 'replica R: seq F to L, head HASH' per chain and\n"
     "'N records verified', exit 0; or names each broken chain's first bad line, exit 1 (2 when\n"
     "a file cannot be read). --key: the HMAC key file of audit.hmac_key_file. --anchor: the\n"
     "chain of REPLICA (without it: the only chain) must still reach this record (from\n"
     "ghl_gateway_audit_last_seq and the record's hash, kept elsewhere): a truncated tail or a\n"
     "replica's missing files fail; once per replica. --continue: each chain's first file is a\n"
     "rotated one; its first seq and prev are taken as given (and printed).",
     cmd_audit_verify},
    {"audit-repair", "audit-repair FILE [--key FILE]",
     "Cut a torn last line (a crash during a write: no final newline) off an audit file that no\n"
     "gateway is writing, after verifying every record before it (the first one taken as\n"
     "given, as audit-verify --continue does; the last against FILE.chain when that exists).\n"
     "The cut bytes go to FILE.torn (FILE.torn.N when that exists), synced before the cut.\n"
     "'run' makes the same repair by itself at start. Exit 0 when repaired or nothing needed\n"
     "it, 1 when anything but the last line is wrong (nothing is changed then; the bad line is\n"
     "named), 2 when the file cannot be read or written. --key: the HMAC key file of\n"
     "audit.hmac_key_file.",
     cmd_audit_repair},
    {"mint",
     "mint --key FILE --alg ALG [--kid KID] --iss ISS --sub SUB [--aud AUD] [--scope 'a b'] "
     "[--ttl SECONDS] [--claim NAME=JSON]...",
     "Sign a JWT (for development, demos and tests) and print it: with libjwt, or for PS* and\n"
     "EdDSA (which libjwt 1.10.2 lacks) with OpenSSL. --key is an HMAC secret file (HS*) or a\n"
     "PEM private key (RS*, PS*: RSA; ES*: EC; EdDSA: Ed25519). iat is now and exp now + --ttl\n"
     "(3600) unless --claim sets them.",
     cmd_mint},
    {"version", "version", "Print the version.", cmd_version},
};

static const struct command *find(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: ghl-gateway COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  ghl-gateway %s\n", commands[i].usage);
    fprintf(f, "\n'ghl-gateway COMMAND --help' tells more.\n");
}

int main(int argc, char **argv)
{
    /* a peer that closes (a JWKS server during check, a client) is an error, never a kill */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "-c") == 0 || strcmp(argv[1], "--config") == 0)
        return cmd_run(argc - 1, argv + 1);
    const struct command *c = find(argv[1]);
    if (c == NULL) {
        fprintf(stderr, "ghl-gateway: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    return c->run(argc - 2, argv + 2);
}
