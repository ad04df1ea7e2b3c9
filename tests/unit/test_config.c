/* Unit tests of the configuration loader (proxy/config.c) against SPEC §2: defaults, path
 * resolution, strictness (unknown keys, types, ranges), file checks and error collection.
 * An unchecked fixture makes one folder per run with real development certificates (from
 * certs/make-dev-certs.sh), a policies folder and token files; each test writes its own
 * config file into it. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "config.h"
#include "openapi.h"

static char g_dir[64]; /* the fixture folder, absolute */

/* The host name config.c sees: this definition takes the place of libc's for the code linked
 * from gwcore; NULL: the real one (each test runs in its own process). */
static const char *fake_host;

int gethostname(char *name, size_t len)
{
    if (fake_host == NULL) {
        int (*real)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_NEXT, "gethostname");
        ck_assert_ptr_nonnull(real);
        return real(name, len);
    }
    if (strlen(fake_host) >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(name, fake_host, strlen(fake_host) + 1);
    return 0;
}

static void put_file(const char *rel, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, rel);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void make_dir(const char *rel)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, rel);
    ck_assert_msg(mkdir(path, 0700) == 0, "cannot make %s", path);
}

static void setup_dir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/gwcfg.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s/../certs/make-dev-certs.sh %s/certs/dev >/dev/null 2>&1",
             GW_TEST_DIR, g_dir);
    ck_assert_msg(system(cmd) == 0, "make-dev-certs.sh failed");
    make_dir("secrets");
    put_file("secrets/agency.token", "agency-token\n");
    make_dir("policies");
    make_dir("policies/examples");
    make_dir("audit");
    make_dir("keys");
    put_file("keys/hs.secret", "0123456789abcdef0123456789abcdef\n");
    put_file("loc.token", "location-token\n");
    make_dir("sub");
    make_dir("empty");
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown_dir(void)
{
    if (g_dir[0])
        nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes rel (inside the fixture folder) and returns its absolute path (static buffer). */
static const char *cfg_file(const char *rel, const char *text)
{
    static char path[256];
    put_file(rel, text);
    snprintf(path, sizeof path, "%s/%s", g_dir, rel);
    return path;
}

static char *errs_text(const struct gw_errs *e)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    for (size_t i = 0; i < e->problems.n; i++)
        fprintf(f, "  [%zu] %s\n", i, e->problems.v[i]);
    fclose(f);
    return s;
}

/* True when one error line equals want exactly. */
static bool has_err(const struct gw_errs *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool has_err(const struct gw_errs *e, const char *fmt, ...)
{
    char want[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < e->problems.n; i++)
        if (strcmp(e->problems.v[i], want) == 0)
            return true;
    return false;
}

/* True when one error line starts with "<file>:" and contains want. */
static bool has_err_sub(const struct gw_errs *e, const char *file, const char *want)
{
    for (size_t i = 0; i < e->problems.n; i++)
        if (strncmp(e->problems.v[i], file, strlen(file)) == 0 &&
            e->problems.v[i][strlen(file)] == ':' && strstr(e->problems.v[i], want) != NULL)
            return true;
    return false;
}

#define ASSERT_ERR(errs, ...)                                                                      \
    do {                                                                                           \
        if (!has_err(&(errs), __VA_ARGS__)) {                                                      \
            char *t_ = errs_text(&(errs));                                                         \
            ck_abort_msg("missing error; got %zu:\n%s", (errs).problems.n, t_);                    \
        }                                                                                          \
    } while (0)

#define ASSERT_ERR_SUB(errs, file, want)                                                           \
    do {                                                                                           \
        if (!has_err_sub(&(errs), (file), (want))) {                                               \
            char *t_ = errs_text(&(errs));                                                         \
            ck_abort_msg("missing error containing '%s'; got %zu:\n%s", (want), (errs).problems.n, \
                         t_);                                                                      \
        }                                                                                          \
    } while (0)

/* Loads text as a config file named rel (files checked) and expects success. */
static struct gw_config *load_ok(const char *rel, const char *text)
{
    struct gw_errs errs = {0};
    const char *path = cfg_file(rel, text);
    struct gw_config *c = gw_config_load(path, true, &errs);
    if (c == NULL) {
        char *t = errs_text(&errs);
        ck_abort_msg("config refused:\n%s", t);
    }
    ck_assert_uint_eq(errs.problems.n, 0);
    gw_errs_free(&errs);
    return c;
}

/* Loads text and expects refusal; errs is filled, path is the file's path. */
static void load_bad(const char *rel, const char *text, struct gw_errs *errs, const char **path)
{
    *path = cfg_file(rel, text);
    struct gw_config *c = gw_config_load(*path, true, errs);
    ck_assert_msg(c == NULL, "config accepted");
    ck_assert_uint_ge(errs->problems.n, 1);
}

static char *in_dir(const char *rel)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, rel);
    return buf[k];
}

static long cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (n > 256 ? 256 : n) : 1;
}

/* ---- defaults ---- */

START_TEST(test_config_minimal_file_gets_every_default)
{
    struct gw_config *c = load_ok("minimal.json", "{}\n");
    ck_assert_str_eq(c->file, in_dir("minimal.json"));
    ck_assert_str_eq(c->dir, g_dir);
    ck_assert_str_eq(c->listen.address, "0.0.0.0");
    ck_assert_int_eq(c->listen.port, 8443);
    ck_assert_int_eq(c->listen.workers, cpu_count());
    ck_assert_str_eq(c->tls.cert, in_dir("certs/dev/gateway.crt"));
    ck_assert_str_eq(c->tls.key, in_dir("certs/dev/gateway.key"));
    ck_assert_int_eq(c->tls.min_version, TLS1_2_VERSION);
    ck_assert_ptr_null(c->tls.client_ca);
    ck_assert_str_eq(c->admin.address, "127.0.0.1");
    ck_assert_int_eq(c->admin.port, 9901);
    ck_assert_str_eq(c->upstream.url, "https://services.leadconnectorhq.com");
    ck_assert_str_eq(c->upstream.host, "services.leadconnectorhq.com");
    ck_assert_int_eq(c->upstream.port, 443);
    ck_assert_ptr_null(c->upstream.ca_file);
    ck_assert_int_eq(c->upstream.connect_timeout_ms, 5000);
    ck_assert_int_eq(c->upstream.timeout_ms, 30000);
    ck_assert_int_eq(c->upstream.max_idle_connections, 32);
    ck_assert_uint_eq(c->upstream.napi_versions, 1);
    ck_assert_str_eq(c->upstream.api_versions[0], "2021-07-28");
    ck_assert_str_eq(c->upstream.openapi, gw_openapi_default_path());
    ck_assert_str_eq(c->credentials.agency_token_file, in_dir("secrets/agency.token"));
    ck_assert_uint_eq(c->credentials.nlocation, 0);
    ck_assert_uint_eq(c->auth.nissuers, 0);
    ck_assert_int_eq(c->auth.token_cache_entries, 65536);
    ck_assert_str_eq(c->policies.dir, in_dir("policies/examples"));
    ck_assert_str_eq(c->audit.file, in_dir("audit/audit.jsonl"));
    ck_assert(!c->audit.to_stdout);
    ck_assert(c->audit.fsync);
    ck_assert_ptr_null(c->audit.hmac_key_file);
    ck_assert(!c->audit.include_reads);
    ck_assert_int_eq(c->audit.sync_timeout_ms, 5000);
    char host[256];
    ck_assert_int_eq(gethostname(host, sizeof host), 0);
    ck_assert_str_eq(c->audit.replica_id, host); /* a pod's host name is its name */
    ck_assert_ptr_null(c->access_log.file);
    ck_assert_int_eq(c->rate_limit.per_subject.burst, 100);
    ck_assert_int_eq(c->rate_limit.per_subject.per_seconds, 10);
    ck_assert_int_eq(c->rate_limit.upstream.burst, 100);
    ck_assert_int_eq(c->rate_limit.upstream.per_seconds, 10);
    ck_assert_int_eq(c->rate_limit.upstream.daily, 200000);
    ck_assert_int_eq(c->limits.max_header_bytes, 16384);
    ck_assert_int_eq(c->limits.max_body_bytes, 65536);
    ck_assert_int_eq(c->limits.max_token_bytes, 8192);
    ck_assert_int_eq(c->limits.max_json_depth, 16);
    ck_assert_int_eq(c->limits.header_timeout_ms, 10000);
    ck_assert_int_eq(c->limits.body_timeout_ms, 30000);
    ck_assert_int_eq(c->limits.keepalive_timeout_ms, 60000);
    ck_assert_int_eq(c->limits.max_connections, 10000);
    ck_assert_int_eq(c->limits.drain_timeout_ms, 20000);
    gw_config_free(c);
}
END_TEST

START_TEST(test_config_explicit_values_override_defaults)
{
    struct gw_config *c = load_ok(
        "explicit.json",
        "{ \"listen\": { \"address\": \"::1\", \"port\": 1, \"workers\": 3 },\n"
        "  \"tls\": { \"min_version\": \"1.3\", \"client_ca\": \"certs/dev/ca.crt\" },\n"
        "  \"admin\": { \"port\": 65535 },\n"
        "  \"upstream\": { \"api_versions\": [\"2021-07-28\", \"2021-04-15\"],\n"
        "                \"ca_file\": \"certs/dev/ca.crt\", \"max_idle_connections\": 0 },\n"
        "  \"credentials\": { \"agency_token_file\": null },\n"
        "  \"audit\": { \"file\": null, \"stdout\": true, \"fsync\": false,\n"
        "             \"hmac_key_file\": \"keys/hs.secret\", \"include_reads\": true,\n"
        "             \"sync_timeout_ms\": 250, \"replica_id\": \"gw-7d9f-abc12\" },\n"
        "  \"access_log\": { \"file\": \"audit/access.log\" },\n"
        "  \"rate_limit\": { \"per_subject\": { \"burst\": 5, \"per_seconds\": 1 },\n"
        "                  \"upstream\": { \"daily\": 7 } },\n"
        "  \"limits\": { \"max_body_bytes\": 0, \"max_json_depth\": 2 } }\n");
    ck_assert_str_eq(c->listen.address, "::1");
    ck_assert_int_eq(c->listen.port, 1);
    ck_assert_int_eq(c->listen.workers, 3);
    ck_assert_int_eq(c->tls.min_version, TLS1_3_VERSION);
    ck_assert_str_eq(c->tls.client_ca, in_dir("certs/dev/ca.crt"));
    ck_assert_int_eq(c->admin.port, 65535);
    ck_assert_uint_eq(c->upstream.napi_versions, 2);
    ck_assert_str_eq(c->upstream.api_versions[1], "2021-04-15");
    ck_assert_str_eq(c->upstream.ca_file, in_dir("certs/dev/ca.crt"));
    ck_assert_int_eq(c->upstream.max_idle_connections, 0);
    ck_assert_ptr_null(c->credentials.agency_token_file);
    ck_assert_ptr_null(c->audit.file);
    ck_assert(c->audit.to_stdout);
    ck_assert(!c->audit.fsync);
    ck_assert_str_eq(c->audit.hmac_key_file, in_dir("keys/hs.secret"));
    ck_assert(c->audit.include_reads);
    ck_assert_int_eq(c->audit.sync_timeout_ms, 250);
    ck_assert_str_eq(c->audit.replica_id, "gw-7d9f-abc12");
    ck_assert_str_eq(c->access_log.file, in_dir("audit/access.log"));
    ck_assert_int_eq(c->rate_limit.per_subject.burst, 5);
    ck_assert_int_eq(c->rate_limit.per_subject.per_seconds, 1);
    ck_assert_int_eq(c->rate_limit.upstream.burst, 100);
    ck_assert_int_eq(c->rate_limit.upstream.daily, 7);
    ck_assert_int_eq(c->limits.max_body_bytes, 0);
    ck_assert_int_eq(c->limits.max_json_depth, 2);
    ck_assert_int_eq(c->limits.max_header_bytes, 16384);
    gw_config_free(c);
}
END_TEST

START_TEST(test_config_workers_zero_resolves_to_cpu_count)
{
    struct gw_config *c = load_ok("workers0.json", "{\"listen\":{\"workers\":0}}");
    ck_assert_int_ge(c->listen.workers, 1);
    ck_assert_int_eq(c->listen.workers, cpu_count());
    gw_config_free(c);
    struct gw_errs errs = {0};
    const char *path;
    load_bad("workers257.json", "{\"listen\":{\"workers\":257}}", &errs, &path);
    ASSERT_ERR(errs, "%s:1: listen.workers: must be between 0 and 256", path);
    gw_errs_free(&errs);
}
END_TEST

/* ---- paths ---- */

START_TEST(test_config_relative_paths_resolve_against_config_folder)
{
    char *abs_key = in_dir("certs/dev/gateway.key");
    char text[1024];
    snprintf(text, sizeof text,
             "{ \"tls\": { \"cert\": \"../certs/dev/gateway.crt\", \"key\": \"%s\" },\n"
             "  \"credentials\": { \"agency_token_file\": \"../secrets/agency.token\",\n"
             "                     \"location_token_files\": { \"loc1\": \"../loc.token\" } },\n"
             "  \"policies\": { \"dir\": \"../policies/examples\" },\n"
             "  \"audit\": { \"file\": \"../audit/a.jsonl\" } }\n",
             abs_key);
    struct gw_config *c = load_ok("sub/gw.json", text);
    ck_assert_str_eq(c->dir, in_dir("sub"));
    ck_assert_str_eq(c->tls.cert, in_dir("sub/../certs/dev/gateway.crt"));
    ck_assert_str_eq(c->tls.key, abs_key); /* absolute paths are kept */
    ck_assert_str_eq(c->credentials.agency_token_file, in_dir("sub/../secrets/agency.token"));
    ck_assert_str_eq(c->credentials.location[0].file, in_dir("sub/../loc.token"));
    ck_assert_str_eq(c->policies.dir, in_dir("sub/../policies/examples"));
    ck_assert_str_eq(c->audit.file, in_dir("sub/../audit/a.jsonl"));
    gw_config_free(c);

    /* a config named by a relative path: paths stay relative to the same cwd */
    ck_assert_int_eq(chdir(g_dir), 0);
    struct gw_errs errs = {0};
    c = gw_config_load("sub/gw.json", true, &errs);
    ck_assert_msg(c != NULL, "%s", errs.problems.n ? errs.problems.v[0] : "");
    ck_assert_str_eq(c->dir, "sub");
    ck_assert_str_eq(c->tls.cert, "sub/../certs/dev/gateway.crt");
    gw_config_free(c);
    c = gw_config_load("minimal-rel.json", true, &errs);
    ck_assert_ptr_null(c); /* not written yet: reported, not crashed */
    ASSERT_ERR(errs, "minimal-rel.json: cannot read: No such file or directory");
    gw_errs_free(&errs);
    put_file("minimal-rel.json", "{}");
    c = gw_config_load("minimal-rel.json", true, &errs);
    ck_assert_msg(c != NULL, "%s", errs.problems.n ? errs.problems.v[0] : "");
    ck_assert_str_eq(c->dir, ".");
    ck_assert_str_eq(c->tls.cert, "certs/dev/gateway.crt");
    gw_config_free(c);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_comments_are_allowed)
{
    struct gw_config *c = load_ok("comments.json", "// the gateway\n"
                                                   "{\n"
                                                   "  /* where it listens */\n"
                                                   "  \"listen\": { \"port\": 9443 }, // not 8443\n"
                                                   "  \"admin\": { /* inline */ \"port\": 9902 }\n"
                                                   "}\n"
                                                   "/* trailing */\n");
    ck_assert_int_eq(c->listen.port, 9443);
    ck_assert_int_eq(c->admin.port, 9902);
    gw_config_free(c);
}
END_TEST

/* ---- strictness ---- */

START_TEST(test_config_unknown_key_top_level)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("unknown-top.json", "{\n  \"listn\": { \"port\": 1 }\n}\n", &errs, &path);
    ASSERT_ERR(errs, "%s:2: listn: unknown key", path);
    ck_assert_uint_eq(errs.problems.n, 1);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_unknown_key_nested)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("unknown-nested.json",
             "{\n"
             "  \"listen\": {\n"
             "    \"workerz\": 2\n"
             "  },\n"
             "  \"rate_limit\": { \"per_subject\": {\n"
             "      \"bursts\": 5 } },\n"
             "  \"auth\": { \"issuers\": [ { \"issuer\": \"https://idp\", \"jwks_url\": "
             "\"https://idp/jwks\",\n"
             "      \"leway_s\": 1 } ] }\n"
             "}\n",
             &errs, &path);
    ASSERT_ERR(errs, "%s:3: listen.workerz: unknown key", path);
    ASSERT_ERR(errs, "%s:6: rate_limit.per_subject.bursts: unknown key", path);
    ASSERT_ERR(errs, "%s:8: auth.issuers[0].leway_s: unknown key", path);
    ck_assert_uint_eq(errs.problems.n, 3);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_wrong_types_refused)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("types.json",
             "{\n"
             "  \"listen\": { \"port\": \"8443\" },\n"                 /* 2 */
             "  \"admin\": { \"port\": 9901.5 },\n"                    /* 3 */
             "  \"audit\": { \"fsync\": 1 },\n"                        /* 4 */
             "  \"tls\": { \"cert\": \"\" },\n"                        /* 5 */
             "  \"access_log\": { \"file\": 5 },\n"                    /* 6 */
             "  \"upstream\": { \"api_versions\": \"2021-07-28\" },\n" /* 7 */
             "  \"limits\": 5,\n"                                      /* 8 */
             "  \"credentials\": { \"location_token_files\": [] }\n"   /* 9 */
             "}\n",
             &errs, &path);
    ASSERT_ERR(errs, "%s:2: listen.port: must be an integer", path);
    ASSERT_ERR(errs, "%s:3: admin.port: must be an integer", path);
    ASSERT_ERR(errs, "%s:4: audit.fsync: must be true or false", path);
    ASSERT_ERR(errs, "%s:5: tls.cert: must be a non-empty string", path);
    ASSERT_ERR(errs, "%s:6: access_log.file: must be a non-empty string or null", path);
    ASSERT_ERR(errs, "%s:7: upstream.api_versions: must be an array of strings", path);
    ASSERT_ERR(errs, "%s:8: limits: must be an object", path);
    ASSERT_ERR(errs,
               "%s:9: credentials.location_token_files: must be an object of \"<locationId>\": "
               "\"path\"",
               path);
    ck_assert_uint_eq(errs.problems.n, 8);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_out_of_range_ports_refused)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("ports.json",
             "{\n  \"listen\": { \"port\": 0 },\n  \"admin\": { \"port\": 70000 }\n}\n", &errs,
             &path);
    ASSERT_ERR(errs, "%s:2: listen.port: must be between 1 and 65535", path);
    ASSERT_ERR(errs, "%s:3: admin.port: must be between 1 and 65535", path);
    ck_assert_uint_eq(errs.problems.n, 2);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_string_lists_checked)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("lists.json", "{\"upstream\": {\"api_versions\": []}}", &errs, &path);
    ASSERT_ERR(errs, "%s:1: upstream.api_versions: must have at least 1 entry", path);
    gw_errs_free(&errs);
    load_bad("lists2.json", "{\"upstream\": {\"api_versions\": [\"2021-07-28\", 5]}}", &errs,
             &path);
    ASSERT_ERR_SUB(errs, path, ": upstream.api_versions: entry 1 must be a non-empty string");
    ck_assert_uint_eq(errs.problems.n, 1);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_addresses_must_be_ip_literals)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("addr.json",
             "{\"listen\": {\"address\": \"localhost\"},\n \"admin\": {\"address\": 127}}", &errs,
             &path);
    ASSERT_ERR(errs, "%s:1: listen.address: must be an IPv4 or IPv6 address", path);
    ASSERT_ERR(errs, "%s:2: admin.address: must be an IPv4 or IPv6 address", path);
    ck_assert_uint_eq(errs.problems.n, 2);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_admin_port_may_not_be_listen_port)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("sameport.json", "{\"listen\": {\"port\": 9000}, \"admin\": {\"port\": 9000}}", &errs,
             &path);
    ASSERT_ERR(errs, "%s: admin.port: 9000 is also listen.port", path);
    gw_errs_free(&errs);
    /* the same port on two different specific addresses is fine */
    struct gw_config *c = load_ok(
        "sameport-ok.json",
        "{\"listen\": {\"address\": \"127.0.0.2\", \"port\": 9000}, \"admin\": {\"port\": 9000}}");
    gw_config_free(c);
}
END_TEST

/* ---- files ---- */

START_TEST(test_config_missing_cert_file_named)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("nocert.json", "{\n  \"tls\": { \"cert\": \"missing.crt\" }\n}\n", &errs, &path);
    ASSERT_ERR(errs, "%s:2: tls.cert: cannot read %s: No such file or directory", path,
               in_dir("missing.crt"));
    ck_assert_uint_eq(errs.problems.n, 1);
    gw_errs_free(&errs);
    /* without file checks the same config loads */
    struct gw_config *c = gw_config_load(path, false, &errs);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->tls.cert, in_dir("missing.crt"));
    gw_config_free(c);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_folder_where_file_needed_and_back)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("kinds.json",
             "{\n  \"tls\": { \"key\": \"certs\" },\n"
             "  \"policies\": { \"dir\": \"loc.token\" },\n"
             "  \"audit\": { \"file\": \"nowhere/audit.jsonl\" }\n}\n",
             &errs, &path);
    ASSERT_ERR(errs, "%s:2: tls.key: %s is a folder, not a file", path, in_dir("certs"));
    ASSERT_ERR(errs, "%s:3: policies.dir: %s is not a folder", path, in_dir("loc.token"));
    ASSERT_ERR(errs, "%s:4: audit.file: folder %s of %s does not exist", path, in_dir("nowhere"),
               in_dir("nowhere/audit.jsonl"));
    ck_assert_uint_eq(errs.problems.n, 3);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_missing_default_files_reported)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("empty/gw.json", "{}", &errs, &path);
    ASSERT_ERR(errs, "%s: tls.cert (default): cannot read %s: No such file or directory", path,
               in_dir("empty/certs/dev/gateway.crt"));
    ASSERT_ERR(errs, "%s: tls.key (default): cannot read %s: No such file or directory", path,
               in_dir("empty/certs/dev/gateway.key"));
    ASSERT_ERR(errs,
               "%s: credentials.agency_token_file (default): cannot read %s: No such file or "
               "directory",
               path, in_dir("empty/secrets/agency.token"));
    ASSERT_ERR(errs, "%s: policies.dir (default): cannot read %s: No such file or directory", path,
               in_dir("empty/policies/examples"));
    ASSERT_ERR(errs, "%s: audit.file (default): folder %s of %s does not exist", path,
               in_dir("empty/audit"), in_dir("empty/audit/audit.jsonl"));
    ck_assert_uint_eq(errs.problems.n, 5);
    gw_errs_free(&errs);
}
END_TEST

/* ---- tls and upstream ---- */

START_TEST(test_config_tls_min_version)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("tls11.json", "{\"tls\": {\"min_version\": \"1.1\"}}", &errs, &path);
    ASSERT_ERR(errs, "%s:1: tls.min_version: must be \"1.2\" or \"1.3\"", path);
    ck_assert_uint_eq(errs.problems.n, 1);
    gw_errs_free(&errs);
    load_bad("tls12num.json", "{\"tls\": {\"min_version\": 1.2}}", &errs, &path);
    ASSERT_ERR(errs, "%s:1: tls.min_version: must be \"1.2\" or \"1.3\"", path);
    gw_errs_free(&errs);
    struct gw_config *c = load_ok("tls12.json", "{\"tls\": {\"min_version\": \"1.2\"}}");
    ck_assert_int_eq(c->tls.min_version, TLS1_2_VERSION);
    gw_config_free(c);
}
END_TEST

START_TEST(test_config_upstream_url_host_and_port)
{
    struct gw_config *c =
        load_ok("url1.json", "{\"upstream\": {\"url\": \"https://api.example.com:8443\"}}");
    ck_assert_str_eq(c->upstream.url, "https://api.example.com:8443");
    ck_assert_str_eq(c->upstream.host, "api.example.com");
    ck_assert_int_eq(c->upstream.port, 8443);
    gw_config_free(c);
    c = load_ok("url2.json", "{\"upstream\": {\"url\": \"https://127.0.0.1/\"}}");
    ck_assert_str_eq(c->upstream.host, "127.0.0.1");
    ck_assert_int_eq(c->upstream.port, 443);
    gw_config_free(c);
    c = load_ok("url3.json", "{\"upstream\": {\"url\": \"https://[::1]:9443\"}}");
    ck_assert_str_eq(c->upstream.host, "::1");
    ck_assert_int_eq(c->upstream.port, 9443);
    gw_config_free(c);
}
END_TEST

START_TEST(test_config_upstream_url_refused)
{
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"http://services.leadconnectorhq.com", "must start with https://"},
        {"HTTPS://h.example", "must start with https://"},
        {"https://h.example/v1", "must be https://host[:port] with no path, query or user"},
        {"https://h.example/?a=b", "must be https://host[:port] with no path, query or user"},
        {"https://h.example?a", "must be https://host[:port] with no path, query or user"},
        {"https://h.example#f", "must be https://host[:port] with no path, query or user"},
        {"https://user@h.example", "must be https://host[:port] with no path, query or user"},
        {"https://@h.example", "has no host"},
        {"https://", "has no host"},
        {"https://h_x.example", "bad character in host"},
        {"https://h.example:0", "bad port"},
        {"https://h.example:70000", "bad port"},
        {"https://h.example:", "bad port"},
        {"https://h.example:x", "bad port"},
        {"https://[::1", "bad IPv6 host"},
        {"https://[zz]", "bad IPv6 host"},
        {"https://h.example: 443", "bad port"},
        {"https://h.example:+443", "bad port"},
        {"https://h.example:0443", "bad port"},
        {"https://h.example:443443", "bad port"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[256], name[32];
        snprintf(text, sizeof text, "{\"upstream\": {\"url\": \"%s\"}}", bad[i].url);
        snprintf(name, sizeof name, "badurl%zu.json", i);
        struct gw_errs errs = {0};
        const char *path;
        load_bad(name, text, &errs, &path);
        ck_assert_msg(has_err(&errs, "%s:1: upstream.url: %s", path, bad[i].why), "%s: got %s",
                      bad[i].url, errs.problems.v[0]);
        ck_assert_uint_eq(errs.problems.n, 1);
        gw_errs_free(&errs);
    }
}
END_TEST

/* ---- rate_limit.replicas and rate_limit.redis (SPEC §2, §11) ---- */

START_TEST(test_config_redis_null_by_default_and_its_forms)
{
    struct gw_config *c = load_ok("rl0.json", "{}");
    ck_assert(!c->rate_limit.redis.enabled);
    ck_assert_int_eq(c->rate_limit.replicas, 1);
    gw_config_free(c);
    put_file("redis.pw", "pw\n");
    c = load_ok("rl1.json", "{\"rate_limit\": {\"replicas\": 3, \"redis\": {\"url\": "
                            "\"redis://10.0.0.5:6380/2\", \"username\": \"gw\", "
                            "\"password_file\": \"redis.pw\", \"on_failure\": \"deny\"}}}");
    const struct gw_cfg_redis *r = &c->rate_limit.redis;
    ck_assert(r->enabled);
    ck_assert_int_eq(c->rate_limit.replicas, 3);
    ck_assert_str_eq(r->host, "10.0.0.5");
    ck_assert_int_eq(r->port, 6380);
    ck_assert_int_eq(r->db, 2);
    ck_assert_str_eq(r->username, "gw");
    ck_assert_ptr_nonnull(strstr(r->password_file, "/redis.pw"));
    ck_assert_int_eq(r->on_failure, GW_RLF_DENY);
    ck_assert_str_eq(r->key_prefix, "ghl-gateway:");
    ck_assert_int_eq(r->timeout_ms, 50);
    ck_assert_int_eq(r->line, 1);
    gw_config_free(c);
    c = load_ok("rl2.json", "{\"rate_limit\": {\"redis\": {\"url\": \"redis://cache.internal\"}}}");
    ck_assert_str_eq(c->rate_limit.redis.host, "cache.internal");
    ck_assert_int_eq(c->rate_limit.redis.port, 6379);
    ck_assert_int_eq(c->rate_limit.redis.db, 0);
    ck_assert_int_eq(c->rate_limit.redis.on_failure, GW_RLF_LOCAL);
    gw_config_free(c);
    c = load_ok("rl3.json", "{\"rate_limit\": {\"redis\": {\"url\": \"redis://[::1]:7000/\", "
                            "\"key_prefix\": \"gw-a:\", \"timeout_ms\": 200, "
                            "\"on_failure\": \"allow\"}}}");
    ck_assert_str_eq(c->rate_limit.redis.host, "::1");
    ck_assert_int_eq(c->rate_limit.redis.port, 7000);
    ck_assert_str_eq(c->rate_limit.redis.key_prefix, "gw-a:");
    ck_assert_int_eq(c->rate_limit.redis.on_failure, GW_RLF_ALLOW);
    gw_config_free(c);
    c = load_ok("rl4.json",
                "{\"rate_limit\": {\"redis\": {\"url\": \"unix:///run/redis.sock?db=4\"}}}");
    ck_assert_ptr_null(c->rate_limit.redis.host);
    ck_assert_str_eq(c->rate_limit.redis.unix_path, "/run/redis.sock");
    ck_assert_int_eq(c->rate_limit.redis.db, 4);
    gw_config_free(c);
    c = load_ok("rl5.json", "{\"rate_limit\": {\"redis\": null}}");
    ck_assert(!c->rate_limit.redis.enabled);
    gw_config_free(c);
}
END_TEST

START_TEST(test_config_redis_refused)
{
    static const struct {
        const char *redis, *why;
    } bad[] = {
        {"{\"url\": \"rediss://h:6380\"}", "rediss:// (TLS) is not supported"},
        {"{\"url\": \"redis://user:pw@h\"}", "must not hold a user or password"},
        {"{\"url\": \"http://h\"}", "must be redis://host[:port][/db] or unix:///path"},
        {"{\"url\": \"redis://\"}", "needs a host"},
        {"{\"url\": \"redis://h:0\"}", "bad port"},
        {"{\"url\": \"redis://h:65536\"}", "bad port"},
        {"{\"url\": \"redis://h:06379\"}", "bad port"},
        {"{\"url\": \"redis://h/16\"}", "the database is /0 to /15"},
        {"{\"url\": \"redis://h/01\"}", "the database is /0 to /15"},
        {"{\"url\": \"redis://h/1?x\"}", "the database is /0 to /15"},
        {"{\"url\": \"redis://h_x\"}", "bad character in host"},
        {"{\"url\": \"redis://[zz]\"}", "bad IPv6 address"},
        {"{\"url\": \"redis://[::1\"}", "bad IPv6 address"},
        {"{\"url\": \"unix://run/x.sock\"}", "must be unix:///absolute/path"},
        {"{\"url\": \"unix:///run/x.sock?db=99\"}", "?db=0 to ?db=15"},
        {"{\"url\": \"unix:///run/x.sock?d=1\"}", "?db=0 to ?db=15"},
        {"{\"url\": 6379}", "must be a string"},
        {"{}", "url is required"},
        {"{\"url\": \"redis://h\", \"on_failure\": \"open\"}",
         "must be \"local\", \"deny\" or \"allow\""},
        {"{\"url\": \"redis://h\", \"key_prefix\": \"a b\"}", "1 to 64 visible ASCII"},
        {"{\"url\": \"redis://h\", \"timeout_ms\": 0}", "timeout_ms"},
        {"{\"url\": \"redis://h\", \"ca_file\": \"loc.token\"}", "hiredis 0.14 has no TLS"},
        {"{\"url\": \"redis://h\", \"password_file\": \"nope.pw\"}", "password_file"},
        {"{\"url\": \"redis://h\", \"tls\": true}", "tls"},
        {"true", "must be an object or null"},
        {"{\"url\": \"redis://h\", \"username\": \"gw\"}", "username needs password_file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[400], name[32];
        snprintf(text, sizeof text, "{\"rate_limit\": {\"redis\": %s}}", bad[i].redis);
        snprintf(name, sizeof name, "badredis%zu.json", i);
        struct gw_errs errs = {0};
        const char *path;
        load_bad(name, text, &errs, &path);
        ck_assert_msg(errs.problems.n >= 1, "%s: accepted", bad[i].redis);
        ck_assert_msg(strstr(errs.problems.v[0], "rate_limit.redis") != NULL &&
                          strstr(errs.problems.v[0], bad[i].why) != NULL,
                      "%s: got %s", bad[i].redis, errs.problems.v[0]);
        gw_errs_free(&errs);
    }
    static const char *const replicas[] = {"0", "10001", "-1", "1.5", "\"3\""};
    for (size_t i = 0; i < sizeof replicas / sizeof *replicas; i++) {
        char text[200], name[32];
        snprintf(text, sizeof text, "{\"rate_limit\": {\"replicas\": %s}}", replicas[i]);
        snprintf(name, sizeof name, "badrep%zu.json", i);
        struct gw_errs errs = {0};
        const char *path;
        load_bad(name, text, &errs, &path);
        ck_assert_msg(has_err(&errs, "%s:1: rate_limit.replicas: ", path) ||
                          (errs.problems.n && strstr(errs.problems.v[0], "rate_limit.replicas")),
                      "%s: got %s", replicas[i], errs.problems.n ? errs.problems.v[0] : "nothing");
        gw_errs_free(&errs);
    }
}
END_TEST

/* ---- credentials ---- */

START_TEST(test_config_location_token_files)
{
    struct gw_config *c = load_ok("loc.json", "{\"credentials\": {\"location_token_files\": "
                                              "{\"Loc1\": \"loc.token\", \"x9\": \"loc.token\"}}}");
    ck_assert_uint_eq(c->credentials.nlocation, 2);
    ck_assert_str_eq(c->credentials.location[0].location_id, "Loc1");
    ck_assert_str_eq(c->credentials.location[0].file, in_dir("loc.token"));
    ck_assert_str_eq(c->credentials.location[1].location_id, "x9");
    gw_config_free(c);

    struct gw_errs errs = {0};
    const char *path;
    load_bad("locbad.json",
             "{\"credentials\": {\"location_token_files\": {\n"
             "  \"bad-id\": \"loc.token\",\n"
             "  \"ok1\": 5,\n"
             "  \"ok2\": \"missing.token\",\n"
             "  \"\": \"loc.token\"\n"
             "}}}\n",
             &errs, &path);
    ASSERT_ERR(errs,
               "%s:2: credentials.location_token_files.bad-id: a location id is 1 to 64 letters "
               "and digits",
               path);
    ASSERT_ERR(errs, "%s:3: credentials.location_token_files.ok1: must be the path of a token file",
               path);
    ASSERT_ERR(errs,
               "%s:4: credentials.location_token_files.ok2: cannot read %s: No such file or "
               "directory",
               path, in_dir("missing.token"));
    ASSERT_ERR(errs,
               "%s:5: credentials.location_token_files.: a location id is 1 to 64 letters and "
               "digits",
               path);
    ck_assert_uint_eq(errs.problems.n, 4);
    gw_errs_free(&errs);

    /* 64 characters is the longest id */
    char text[512], id[66];
    memset(id, 'a', 65);
    id[65] = '\0';
    snprintf(text, sizeof text,
             "{\"credentials\": {\"location_token_files\": {\"%s\": \"loc.token\"}}}", id);
    load_bad("loc65.json", text, &errs, &path);
    ASSERT_ERR_SUB(errs, path, "a location id is 1 to 64 letters and digits");
    gw_errs_free(&errs);
    id[64] = '\0';
    snprintf(text, sizeof text,
             "{\"credentials\": {\"location_token_files\": {\"%s\": \"loc.token\"}}}", id);
    c = load_ok("loc64.json", text);
    ck_assert_str_eq(c->credentials.location[0].location_id, id);
    gw_config_free(c);
}
END_TEST

/* ---- issuers ---- */

START_TEST(test_config_issuer_with_defaults)
{
    struct gw_config *c = load_ok(
        "iss.json",
        "{\"auth\": {\"issuers\": [\n"
        " {\"issuer\": \"https://idp.example.com\", \"audiences\": [\"ghl-gateway\"],\n"
        "  \"keys\": [{\"kid\": \"k1\", \"alg\": \"HS256\", \"secret_file\": \"keys/hs.secret\"},\n"
        "           {\"kid\": \"k2\", \"alg\": \"HS512\", \"secret_file\": \"keys/hs.secret\"}]},\n"
        " {\"issuer\": \"https://rsa.example.com\", \"leeway_s\": 0, \"scope_claims\": "
        "[\"perms\"],\n"
        "  \"subject_claim\": \"client_id\",\n"
        "  \"keys\": [{\"alg\": \"RS256\", \"pem_file\": \"certs/dev/jwt-rs256.pub.pem\"}]},\n"
        " {\"issuer\": \"https://jwks.example.com\", \"jwks_url\": "
        "\"https://jwks.example.com/k\",\n"
        "  \"jwks_refresh_s\": 30}\n"
        "], \"token_cache_entries\": 0}}\n");
    ck_assert_uint_eq(c->auth.nissuers, 3);
    ck_assert_int_eq(c->auth.token_cache_entries, 0);
    const struct gw_cfg_issuer *a = &c->auth.issuers[0];
    ck_assert_str_eq(a->issuer, "https://idp.example.com");
    ck_assert_uint_eq(a->naudiences, 1);
    ck_assert_str_eq(a->audiences[0], "ghl-gateway");
    ck_assert_uint_eq(a->nkeys, 2);
    ck_assert_str_eq(a->keys[0].kid, "k1");
    ck_assert_str_eq(a->keys[0].alg, "HS256");
    ck_assert_str_eq(a->keys[0].secret_file, in_dir("keys/hs.secret"));
    ck_assert_ptr_null(a->keys[0].pem_file);
    ck_assert_str_eq(a->keys[1].alg, "HS512");
    ck_assert_ptr_null(a->jwks_file);
    ck_assert_ptr_null(a->jwks_url);
    ck_assert_int_eq(a->jwks_refresh_s, 600);
    ck_assert_int_eq(a->leeway_s, 60);
    ck_assert_int_eq(a->max_lifetime_s, 86400);
    ck_assert_uint_eq(a->nscope_claims, 2);
    ck_assert_str_eq(a->scope_claims[0], "scope");
    ck_assert_str_eq(a->scope_claims[1], "scp");
    ck_assert_str_eq(a->subject_claim, "sub");
    const struct gw_cfg_issuer *b = &c->auth.issuers[1];
    /* SPEC §2's default audiences: the aud check stays on unless [] is written */
    ck_assert_uint_eq(b->naudiences, 1);
    ck_assert_str_eq(b->audiences[0], "ghl-gateway");
    ck_assert_ptr_null(b->keys[0].kid);
    ck_assert_str_eq(b->keys[0].pem_file, in_dir("certs/dev/jwt-rs256.pub.pem"));
    ck_assert_int_eq(b->leeway_s, 0);
    ck_assert_uint_eq(b->nscope_claims, 1);
    ck_assert_str_eq(b->scope_claims[0], "perms");
    ck_assert_str_eq(b->subject_claim, "client_id");
    const struct gw_cfg_issuer *j = &c->auth.issuers[2];
    ck_assert_uint_eq(j->nkeys, 0);
    ck_assert_str_eq(j->jwks_url, "https://jwks.example.com/k");
    ck_assert_int_eq(j->jwks_refresh_s, 30);
    gw_config_free(c);
}
END_TEST

/* Loads a config with one auth.issuers array and expects the error suffix want. */
static void issuers_refused(const char *name, const char *issuers, const char *want, size_t nerr)
{
    char text[2048];
    snprintf(text, sizeof text, "{\"auth\": {\"issuers\": %s}}", issuers);
    struct gw_errs errs = {0};
    const char *path;
    load_bad(name, text, &errs, &path);
    ASSERT_ERR_SUB(errs, path, want);
    if (errs.problems.n != nerr) {
        char *t = errs_text(&errs);
        ck_abort_msg("%s: want %zu errors, got:\n%s", name, nerr, t);
    }
    gw_errs_free(&errs);
}

/* SPEC rev 2 §4.2, §4.3, §4 item 3: discovery is exclusive with jwks_url and needs an https
 * issuer; require_typ is at+jwt or null; a binding needs client certificates. */
START_TEST(test_config_issuer_discovery_typ_and_binding_rules)
{
    issuers_refused("disc-url.json",
                    "[{\"issuer\": \"https://i\", \"discovery\": true, "
                    "\"jwks_url\": \"https://i/j\"}]",
                    ": auth.issuers[0]: jwks_url and discovery are exclusive (discovery finds the "
                    "JWKS URL)",
                    1);
    issuers_refused("disc-http.json", "[{\"issuer\": \"http://i\", \"discovery\": true}]",
                    ": auth.issuers[0]: discovery needs an issuer that is an https URL", 1);
    issuers_refused("disc-notbool.json", "[{\"issuer\": \"https://i\", \"discovery\": 1}]",
                    ": auth.issuers[0].discovery: ", 2);
    issuers_refused("typ.json",
                    "[{\"issuer\": \"https://i\", \"jwks_url\": \"https://i/j\", "
                    "\"require_typ\": \"JWT\"}]",
                    ": auth.issuers[0]: require_typ must be \"at+jwt\" or null", 1);
    issuers_refused("wait.json",
                    "[{\"issuer\": \"https://i\", \"jwks_url\": \"https://i/j\", "
                    "\"jwks_refetch_wait_ms\": 30001}]",
                    ": auth.issuers[0].jwks_refetch_wait_ms: ", 1);
    issuers_refused("bind.json",
                    "[{\"issuer\": \"https://i\", \"jwks_url\": \"https://i/j\", "
                    "\"require_cert_binding\": true}]",
                    ": auth.issuers[0]: require_cert_binding needs tls.client_ca (mutual TLS): "
                    "without a client certificate no token can be bound",
                    1);
    struct gw_config *c = load_ok("disc-ok.json",
                                  "{\"auth\": {\"issuers\": [{\"issuer\": \"https://i\", "
                                  "\"discovery\": true, \"require_typ\": \"at+jwt\", "
                                  "\"jwks_refetch_wait_ms\": 0}]}}");
    const struct gw_cfg_issuer *is = &c->auth.issuers[0];
    ck_assert(is->discovery);
    ck_assert_str_eq(is->require_typ, "at+jwt");
    ck_assert_int_eq(is->jwks_refetch_wait_ms, 0);
    ck_assert(!is->require_cert_binding);
    gw_config_free(c);
    c = load_ok("disc-default.json",
                "{\"auth\": {\"issuers\": [{\"issuer\": \"https://i\", "
                "\"jwks_url\": \"https://i/j\"}]}}");
    ck_assert(!c->auth.issuers[0].discovery);
    ck_assert_int_eq(c->auth.issuers[0].jwks_refetch_wait_ms, 2000);
    ck_assert_ptr_null(c->auth.issuers[0].require_typ);
    gw_config_free(c);
}
END_TEST

START_TEST(test_config_issuer_mixing_hmac_and_rsa_refused)
{
    issuers_refused(
        "mixed.json",
        "[{\"issuer\": \"https://i\", \"keys\": [\n"
        " {\"kid\": \"h\", \"alg\": \"HS256\", \"secret_file\": \"keys/hs.secret\"},\n"
        " {\"kid\": \"r\", \"alg\": \"RS256\", \"pem_file\": \"certs/dev/jwt-rs256.pub.pem\"}]}]",
        ": auth.issuers[0].keys: an issuer's keys are either all HMAC secrets or all "
        "public keys",
        1);
    issuers_refused(
        "mixed-es.json",
        "[{\"issuer\": \"https://i\", \"keys\": [\n"
        " {\"kid\": \"e\", \"alg\": \"ES256\", \"pem_file\": \"certs/dev/jwt-es256.pub.pem\"},\n"
        " {\"kid\": \"h\", \"alg\": \"HS384\", \"secret_file\": \"keys/hs.secret\"}]}]",
        "an issuer's keys are either all HMAC secrets or all public keys", 1);
}
END_TEST

START_TEST(test_config_issuer_alg_none_refused)
{
    const char *want = ": auth.issuers[0].keys[0]: alg must be one of HS256 HS384 HS512 RS256 "
                       "RS384 RS512 ES256 ES384 ES512 PS256 PS384 PS512 EdDSA (\"none\" is never accepted)";
    issuers_refused("none.json",
                    "[{\"issuer\": \"https://i\", \"keys\": [{\"alg\": \"none\", \"secret_file\": "
                    "\"keys/hs.secret\"}]}]",
                    want, 1);
    issuers_refused("lower.json",
                    "[{\"issuer\": \"https://i\", \"keys\": [{\"alg\": \"hs256\", \"secret_file\": "
                    "\"keys/hs.secret\"}]}]",
                    want, 1);
    issuers_refused(
        "noalg.json",
        "[{\"issuer\": \"https://i\", \"keys\": [{\"secret_file\": \"keys/hs.secret\"}]}]", want,
        1);
}
END_TEST

START_TEST(test_config_issuer_key_material_must_match_alg)
{
    issuers_refused("hs-pem.json",
                    "[{\"issuer\": \"https://i\", \"keys\": [{\"alg\": \"HS256\", \"pem_file\": "
                    "\"certs/dev/jwt-rs256.pub.pem\"}]}]",
                    ": auth.issuers[0].keys[0]: an HS256 key needs secret_file (and no pem_file)",
                    1);
    issuers_refused("rs-secret.json",
                    "[{\"issuer\": \"https://i\", \"keys\": [{\"alg\": \"RS256\", \"secret_file\": "
                    "\"keys/hs.secret\"}]}]",
                    ": auth.issuers[0].keys[0]: an RS256 key needs pem_file (and no secret_file)",
                    1);
    issuers_refused(
        "dupkid.json",
        "[{\"issuer\": \"https://i\", \"keys\": [\n"
        " {\"kid\": \"k1\", \"alg\": \"HS256\", \"secret_file\": \"keys/hs.secret\"},\n"
        " {\"kid\": \"k1\", \"alg\": \"HS256\", \"secret_file\": \"keys/hs.secret\"}]}]",
        ": auth.issuers[0].keys[1]: kid k1 is used twice in this issuer", 1);
    issuers_refused("nofile.json",
                    "[{\"issuer\": \"https://i\", \"keys\": [{\"alg\": \"HS256\", \"secret_file\": "
                    "\"keys/none.secret\"}]}]",
                    ": auth.issuers[0].keys[0].secret_file: cannot read", 1);
}
END_TEST

START_TEST(test_config_duplicate_issuer_refused)
{
    issuers_refused("dupiss.json",
                    "[{\"issuer\": \"https://i\", \"jwks_url\": \"https://i/jwks\"},\n"
                    " {\"issuer\": \"https://i\", \"jwks_url\": \"https://i/jwks2\"}]",
                    ": auth.issuers[1]: issuer https://i is configured twice", 1);
}
END_TEST

START_TEST(test_config_jwks_url_must_be_https)
{
    issuers_refused("jwkshttp.json",
                    "[{\"issuer\": \"https://i\", \"jwks_url\": \"http://i/jwks\"}]",
                    ": auth.issuers[0]: jwks_url must be an https URL", 1);
}
END_TEST

START_TEST(test_config_issuer_needs_keys)
{
    issuers_refused("nokeys.json", "[{\"issuer\": \"https://i\"}]",
                    ": auth.issuers[0]: needs keys, jwks_file, jwks_url or discovery", 1);
    issuers_refused("emptykeys.json", "[{\"issuer\": \"https://i\", \"keys\": []}]",
                    ": auth.issuers[0]: needs keys, jwks_file, jwks_url or discovery", 1);
    issuers_refused("noiss.json", "[{\"jwks_url\": \"https://i/jwks\"}]",
                    ": auth.issuers[0]: issuer is required", 1);
    issuers_refused("notobj.json", "[\"https://i\"]", ": auth.issuers[0]: must be an object", 1);
    issuers_refused("notarr.json", "{}", ": auth.issuers: must be an array of issuers", 1);
    issuers_refused("refresh.json",
                    "[{\"issuer\": \"https://i\", \"jwks_url\": \"https://i/j\", "
                    "\"jwks_refresh_s\": 0}]",
                    ": auth.issuers[0].jwks_refresh_s: must be between 1 and 604800", 1);
}
END_TEST

/* ---- audit.replica_id ---- */

START_TEST(test_config_replica_id_takes_ids_up_to_64_characters)
{
    static const char *const ok[] = {
        "a",
        "0",
        "gw-7d9f-abc12",
        "ghl-gateway-0",
        "host.example.com",
        "Replica_2",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}; /* 64 */
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char text[256];
        snprintf(text, sizeof text, "{ \"audit\": { \"replica_id\": \"%s\" } }", ok[i]);
        struct gw_config *c = load_ok("replica-ok.json", text);
        ck_assert_str_eq(c->audit.replica_id, ok[i]);
        gw_config_free(c);
    }
    /* null: the host name, as when it is left out */
    fake_host = "gw-host-3";
    struct gw_config *c = load_ok("replica-null.json", "{ \"audit\": { \"replica_id\": null } }");
    ck_assert_str_eq(c->audit.replica_id, "gw-host-3");
    gw_config_free(c);
    c = load_ok("replica-absent.json", "{}");
    ck_assert_str_eq(c->audit.replica_id, "gw-host-3");
    gw_config_free(c);
}
END_TEST

START_TEST(test_config_replica_id_refuses_what_is_no_id)
{
    /* each on its own line: the problem names it */
    static const char *const bad[] = {
        "\"\"",
        "\"gw 1\"",
        "\"gw:1\"",
        "\"-gw\"",
        "\".gw\"",
        "\"gw\\\"1\"",
        "\"gw\\n1\"",
        "\"r\u00e9plica\"",
        "\"gw/1\"",
        "7",
        "true",
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""}; /* 65 */
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\n  \"audit\": {\n    \"replica_id\": %s\n  }\n}\n", bad[i]);
        struct gw_errs errs = {0};
        const char *path;
        load_bad("replica-bad.json", text, &errs, &path);
        ASSERT_ERR(errs,
                   "%s:3: audit.replica_id: must be null (the host name) or 1 to 64 letters, "
                   "digits, '.', '_' or '-', starting with a letter or digit",
                   path);
        ck_assert_msg(errs.problems.n == 1, "%s: %zu problems", bad[i], errs.problems.n);
        gw_errs_free(&errs);
    }
}
END_TEST

START_TEST(test_config_host_name_that_is_no_replica_id_must_be_replaced)
{
    fake_host = "gw host"; /* sethostname takes almost any bytes */
    struct gw_errs errs = {0};
    const char *path;
    load_bad("host-absent.json", "{}\n", &errs, &path);
    ASSERT_ERR(errs,
               "%s: audit.replica_id (default): the host name is not a replica id (1 to 64 "
               "letters, digits, '.', '_' or '-', starting with a letter or digit): set "
               "audit.replica_id",
               path);
    ck_assert_uint_eq(errs.problems.n, 1);
    gw_errs_free(&errs);
    load_bad("host-null.json", "{\n  \"audit\": { \"replica_id\": null }\n}\n", &errs, &path);
    ASSERT_ERR(errs,
               "%s:2: audit.replica_id: the host name is not a replica id (1 to 64 letters, "
               "digits, '.', '_' or '-', starting with a letter or digit): set audit.replica_id",
               path);
    ck_assert_uint_eq(errs.problems.n, 1);
    gw_errs_free(&errs);
    /* a replica id in the file: the host name does not matter */
    struct gw_config *c = load_ok("host-given.json", "{ \"audit\": { \"replica_id\": \"gw-1\" } }");
    ck_assert_str_eq(c->audit.replica_id, "gw-1");
    gw_config_free(c);
    fake_host = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; /* 65 */
    load_bad("host-long.json", "{}\n", &errs, &path);
    ASSERT_ERR_SUB(errs, path, "audit.replica_id (default): the host name is not a replica id");
    gw_errs_free(&errs);
}
END_TEST

/* ---- error collection ---- */

START_TEST(test_config_reports_every_problem)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("many.json",
             "{\n"
             "  \"listen\": {\n"
             "    \"port\": 0,\n"
             "    \"workerz\": 1\n"
             "  },\n"
             "  \"tls\": { \"min_version\": \"1.1\" },\n"
             "  \"audit\": { \"fsync\": \"yes\",\n"
             "             \"sync_timeout_ms\": 0 },\n"
             "  \"limits\": { \"max_body_bytes\": -1 }\n"
             "}\n",
             &errs, &path);
    ASSERT_ERR(errs, "%s:3: listen.port: must be between 1 and 65535", path);
    ASSERT_ERR(errs, "%s:4: listen.workerz: unknown key", path);
    ASSERT_ERR(errs, "%s:6: tls.min_version: must be \"1.2\" or \"1.3\"", path);
    ASSERT_ERR(errs, "%s:7: audit.fsync: must be true or false", path);
    ASSERT_ERR(errs, "%s:8: audit.sync_timeout_ms: must be between 1 and 600000", path);
    ASSERT_ERR(errs, "%s:9: limits.max_body_bytes: must be between 0 and 16777216", path);
    ck_assert_uint_eq(errs.problems.n, 6);
    gw_errs_free(&errs);
}
END_TEST

START_TEST(test_config_errors_append_to_existing_list)
{
    struct gw_errs errs = {0};
    gw_msgs_add(&errs.problems, "earlier problem");
    const char *path;
    load_bad("append.json", "{\"listen\": {\"port\": 0}}", &errs, &path);
    ck_assert_uint_eq(errs.problems.n, 2);
    ck_assert_str_eq(errs.problems.v[0], "earlier problem");
    /* a valid config after earlier problems still loads: only its own problems count */
    struct gw_config *c = gw_config_load(cfg_file("append-ok.json", "{}"), true, &errs);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(errs.problems.n, 2);
    gw_config_free(c);
    gw_errs_free(&errs);
    ck_assert_uint_eq(errs.problems.n, 0);
}
END_TEST

START_TEST(test_config_not_json_reports_line)
{
    struct gw_errs errs = {0};
    const char *path;
    load_bad("notjson.json", "{\n  \"listen\": {\n    \"port\": 80,\n  }\n}\n", &errs, &path);
    ASSERT_ERR(errs, "%s:4: expected a member name", path);
    ck_assert_uint_eq(errs.problems.n, 1);
    gw_errs_free(&errs);
    load_bad("dupkey.json", "{\n\"listen\": {},\n\"listen\": {}\n}", &errs, &path);
    ASSERT_ERR_SUB(errs, path, "duplicate member \"listen\"");
    gw_errs_free(&errs);
    load_bad("array.json", "[]", &errs, &path);
    ASSERT_ERR(errs, "%s:1: the configuration must be a JSON object", path);
    gw_errs_free(&errs);
    load_bad("unterminated.json", "{\n/* open\n", &errs, &path);
    ASSERT_ERR(errs, "%s:2: unterminated comment", path);
    gw_errs_free(&errs);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_unchecked_fixture(tc, setup_dir, teardown_dir);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_config_minimal_file_gets_every_default);
    tcase_add_test(tc, test_config_explicit_values_override_defaults);
    tcase_add_test(tc, test_config_workers_zero_resolves_to_cpu_count);
    tcase_add_test(tc, test_config_relative_paths_resolve_against_config_folder);
    tcase_add_test(tc, test_config_comments_are_allowed);
    tcase_add_test(tc, test_config_unknown_key_top_level);
    tcase_add_test(tc, test_config_unknown_key_nested);
    tcase_add_test(tc, test_config_wrong_types_refused);
    tcase_add_test(tc, test_config_out_of_range_ports_refused);
    tcase_add_test(tc, test_config_string_lists_checked);
    tcase_add_test(tc, test_config_addresses_must_be_ip_literals);
    tcase_add_test(tc, test_config_admin_port_may_not_be_listen_port);
    tcase_add_test(tc, test_config_missing_cert_file_named);
    tcase_add_test(tc, test_config_folder_where_file_needed_and_back);
    tcase_add_test(tc, test_config_missing_default_files_reported);
    tcase_add_test(tc, test_config_tls_min_version);
    tcase_add_test(tc, test_config_upstream_url_host_and_port);
    tcase_add_test(tc, test_config_upstream_url_refused);
    tcase_add_test(tc, test_config_redis_null_by_default_and_its_forms);
    tcase_add_test(tc, test_config_redis_refused);
    tcase_add_test(tc, test_config_location_token_files);
    tcase_add_test(tc, test_config_issuer_with_defaults);
    tcase_add_test(tc, test_config_issuer_mixing_hmac_and_rsa_refused);
    tcase_add_test(tc, test_config_issuer_alg_none_refused);
    tcase_add_test(tc, test_config_issuer_key_material_must_match_alg);
    tcase_add_test(tc, test_config_duplicate_issuer_refused);
    tcase_add_test(tc, test_config_jwks_url_must_be_https);
    tcase_add_test(tc, test_config_issuer_needs_keys);
    tcase_add_test(tc, test_config_issuer_discovery_typ_and_binding_rules);
    tcase_add_test(tc, test_config_replica_id_takes_ids_up_to_64_characters);
    tcase_add_test(tc, test_config_replica_id_refuses_what_is_no_id);
    tcase_add_test(tc, test_config_host_name_that_is_no_replica_id_must_be_replaced);
    tcase_add_test(tc, test_config_reports_every_problem);
    tcase_add_test(tc, test_config_errors_append_to_existing_list);
    tcase_add_test(tc, test_config_not_json_reports_line);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
