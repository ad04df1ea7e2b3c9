#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "b64url.h"

#ifndef GW_BIN_DIR
#error GW_BIN_DIR must name the build folder
#endif
#ifndef GW_CERTS_DIR
#error GW_CERTS_DIR must name the test certificates folder
#endif

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

const char *bin_path(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", GW_BIN_DIR, name);
    return buf[i];
}

char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return strdup("");
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2) {
            cap *= 2;
            b = realloc(b, cap);
        }
    }
    fclose(f);
    b[n] = '\0';
    return b;
}

char *wait_for_text(const char *path, const char *needle, int timeout_ms)
{
    for (int waited = 0;; waited += 50) {
        char *text = slurp(path);
        if (strstr(text, needle) || waited >= timeout_ms)
            return text;
        free(text);
        usleep(50000);
    }
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(content, f);
    fclose(f);
}

int run_cmd(const char *cmd, char **out)
{
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (p == NULL)
        return -1;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2) {
            cap *= 2;
            b = realloc(b, cap);
        }
    }
    b[n] = '\0';
    int st = pclose(p);
    if (out)
        *out = b;
    else
        free(b);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A port nobody listens on, drawn at random below the kernel's ephemeral range (32768 and up
 * by default): a port from bind(0) is an ephemeral one, which an outgoing connection of a
 * test, the gateway or the sandbox could take as its local port before the program meant to
 * listen on it starts (seen with the slow start under valgrind, suites running two at a
 * time). The ports already given to this process are skipped. */
int free_port(void)
{
    static int given[256];
    static size_t ngiven;
    static unsigned seed;
    static pid_t seeded_in;
    if (seeded_in != getpid()) { /* each forked test draws its own sequence */
        seeded_in = getpid();
        seed = (unsigned)seeded_in * 2654435761u ^ (unsigned)now_ms();
    }
    for (int attempt = 0; attempt < 200; attempt++) {
        int port = 10000 + (int)(rand_r(&seed) % 22000u);
        bool seen = false;
        for (size_t i = 0; i < ngiven && i < 256; i++)
            seen |= given[i] == port;
        if (seen)
            continue;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = loopback(port);
        bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0)
            close(fd);
        if (!ok)
            continue;
        given[ngiven++ % 256] = port;
        return port;
    }
    return -1;
}

struct sockaddr_in loopback(int port)
{
    return (struct sockaddr_in){.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
}

int loopback_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = loopback(port);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int wait_port(int port, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        int fd = loopback_connect(port);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        usleep(20000);
    }
    return -1;
}

/* Waits until the process pid, which appends to log, says (after byte `from` of it) that it
 * listens on port, and the port answers. A port answering is not enough: free_port's check and
 * the bind that follows are apart in time, so two suites running side by side can draw the
 * same port, and the one that binds second would talk to the other's process (seen under
 * valgrind, whose slow start lost that race: a create reached another suite's sandbox). */
static int wait_started(pid_t pid, int port, const char *log, long from, int timeout_ms)
{
    char needle[64];
    snprintf(needle, sizeof needle, "listening on 127.0.0.1:%d", port);
    long end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1; /* exited: its log says why */
        char *text = slurp(log);
        bool said = text && (long)strlen(text) > from && strstr(text + from, needle) != NULL;
        free(text);
        int fd = said ? loopback_connect(port) : -1;
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        usleep(20000);
    }
    return -1;
}

/* The size of the file at path now (0 when absent). */
static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* spawn_in with env: "NAME=VALUE ..." (space-separated, may be NULL) added to the child's
 * environment. */
static pid_t spawn_env(char *const argv[], const char *log, const char *cwd, const char *env)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent || (cwd && chdir(cwd) != 0))
            _exit(127);
        char *vars = env ? strdup(env) : NULL, *save = NULL;
        for (char *v = vars ? strtok_r(vars, " ", &save) : NULL; v; v = strtok_r(NULL, " ", &save))
            putenv(v); /* the child execs next: the strings stay */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static pid_t spawn(char *const argv[], const char *log)
{
    return spawn_env(argv, log, NULL, NULL);
}

pid_t spawn_in(char *const argv[], const char *log, const char *cwd)
{
    return spawn_env(argv, log, cwd, NULL);
}

static void split_args(char *s, char **argv, int *argc, int max)
{
    char *save = NULL;
    for (char *t = strtok_r(s, " ", &save); t && *argc < max - 1; t = strtok_r(NULL, " ", &save))
        argv[(*argc)++] = t;
    argv[*argc] = NULL;
}

static void start_sandbox(struct env *e, const struct env_opts *o)
{
    char cert[700], key[700], agency[600], loc[700], seed[600], listen[64];
    const char *base = o->sandbox_cert ? o->sandbox_cert : "sandbox";
    snprintf(cert, sizeof cert, "%s/%s.crt", e->certs, base);
    snprintf(key, sizeof key, "%s/%s.key", e->certs, base);
    snprintf(agency, sizeof agency, "%s/sandbox-agency.token", e->dir);
    snprintf(loc, sizeof loc, "%s=%s/sandbox-loc1.token", LOC1, e->dir);
    snprintf(seed, sizeof seed, "%s/seed.json", e->dir);
    snprintf(e->journal, sizeof e->journal, "%s/journal.jsonl", e->dir);
    snprintf(e->sandbox.log, sizeof e->sandbox.log, "%s/sandbox.log", e->dir);
    e->sandbox.port = free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", e->sandbox.port);
    char extra[512] = "";
    if (o->sandbox_args)
        snprintf(extra, sizeof extra, "%s", o->sandbox_args);
    char *argv[40];
    int argc = 0;
    argv[argc++] = (char *)bin_path("ghl-sandbox");
    char *fixed[] = {"--listen",
                     listen,
                     "--cert",
                     cert,
                     "--key",
                     key,
                     "--agency-token-file",
                     agency,
                     "--location-token",
                     loc,
                     "--seed",
                     seed,
                     "--journal",
                     e->journal};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        argv[argc++] = fixed[i];
    split_args(extra, argv, &argc, 40);
    long from = file_size(e->sandbox.log);
    e->sandbox.pid = spawn(argv, e->sandbox.log);
    ck_assert_msg(wait_started(e->sandbox.pid, e->sandbox.port, e->sandbox.log, from, 5000) == 0,
                  "ghl-sandbox did not start: %s", slurp(e->sandbox.log));
}

/* GW_VALGRIND set (ctest label "valgrind"): the gateway runs under memcheck, and a definite
 * leak or any invalid access makes its exit status 99, which env_stop reports. */
bool under_valgrind(void)
{
    const char *v = getenv("GW_VALGRIND");
    return v && *v && strcmp(v, "0") != 0;
}

static void start_gateway(struct env *e, const struct env_opts *o)
{
    char *argv[] = {(char *)bin_path("ghl-gateway"), "run", "-c", e->config, NULL};
    char *vg[] = {"/usr/bin/valgrind",
                  "--quiet",
                  "--leak-check=full",
                  "--show-leak-kinds=definite",
                  "--errors-for-leak-kinds=definite",
                  "--error-exitcode=99",
                  (char *)bin_path("ghl-gateway"),
                  "run",
                  "-c",
                  e->config,
                  NULL};
    bool vgr = under_valgrind() && !e->native;
    long from = file_size(e->gateway.log);
    e->gateway.pid =
        spawn_env(vgr ? vg : argv, e->gateway.log, NULL, e->gateway_env[0] ? e->gateway_env : NULL);
    if (wait_started(e->gateway.pid, e->gateway.port, e->gateway.log, from, vgr ? 60000 : 5000) !=
        0) {
        char *log = slurp(e->gateway.log);
        ck_abort_msg("ghl-gateway did not start: %s", log);
    }
    (void)o;
}

/* The default policy: every subject of the test issuers may do everything. */
static const char harness_all_policy[] =
    "{ \"name\": \"harness-all\",\n"
    "  \"subjects\": [ { \"iss\": [\"" ISSUER_RS "\", \"" ISSUER_HS "\", \"" ISSUER_JWKS "\",\n"
    "                          \"https://rot.test\"] } ],\n"
    "  \"operations\": [\"search-users\", \"filter-users-by-email\", \"get-user\",\n"
    "                 \"update-user\", \"delete-user\", \"get-user-by-location\",\n"
    "                 \"create-user\"],\n"
    "  \"companies\": \"*\", \"locations\": \"*\",\n"
    "  \"grant\": { \"types\": [\"account\", \"agency\"], \"roles\": [\"admin\", \"user\"],\n"
    "             \"scopes\": [\"*\"], \"scopes_assigned_to_only\": [\"*\"] } }\n";

void env_write_policy(const struct env *e, const char *file, const char *json)
{
    char p[800];
    snprintf(p, sizeof p, "%s/policies/%s", e->dir, file);
    if (json == NULL)
        unlink(p);
    else
        write_file(p, json);
}

void env_start(struct env *e, const struct env_opts *o)
{
    static const struct env_opts none;
    if (o == NULL)
        o = &none;
    signal(SIGPIPE, SIG_IGN); /* a peer that closes shows up as an error, not a dead test */
    memset(e, 0, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/ghl-it-XXXXXX");
    ck_assert(mkdtemp(e->dir) != NULL);
    snprintf(e->certs, sizeof e->certs, "%s", GW_CERTS_DIR);
    char p[700];
    snprintf(p, sizeof p, "%s/policies", e->dir);
    mkdir(p, 0755);
    if (o->policies[0].file == NULL)
        env_write_policy(e, "harness-all.json", harness_all_policy);
    for (size_t i = 0; i < sizeof o->policies / sizeof *o->policies && o->policies[i].file; i++)
        env_write_policy(e, o->policies[i].file, o->policies[i].json);
    snprintf(p, sizeof p, "%s/audit", e->dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/agency.token", e->dir);
    write_file(p, AGENCY_TOKEN "\n");
    snprintf(p, sizeof p, "%s/loc1.token", e->dir);
    write_file(p, LOC1_TOKEN);
    snprintf(p, sizeof p, "%s/sandbox-agency.token", e->dir);
    write_file(p, AGENCY_TOKEN "\n");
    snprintf(p, sizeof p, "%s/sandbox-loc1.token", e->dir);
    write_file(p, LOC1_TOKEN "\n");
    snprintf(p, sizeof p, "%s/seed.json", e->dir);
    FILE *sf = fopen(p, "w");
    ck_assert_ptr_nonnull(sf);
    fputs("[{\"id\":\"" SEED_USER "\",\"companyId\":\"" COMPANY "\",\"firstName\":\"Ada\","
          "\"lastName\":\"Lovelace\",\"email\":\"ada@example.com\",\"roles\":{\"type\":"
          "\"account\",\"role\":\"user\",\"locationIds\":[\"" LOC1 "\"]}}",
          sf);
    if (o->seed_users)
        fprintf(sf, ",%s", o->seed_users);
    for (int i = 1; i <= o->extra_users; i++)
        fprintf(sf,
                ",{\"id\":\"UserMany%012d\",\"companyId\":\"" COMPANY "\",\"firstName\":"
                "\"Many\",\"lastName\":\"User%d\",\"email\":\"many%d@example.com\"}",
                i, i, i);
    fputs("]", sf);
    fclose(sf);
    snprintf(e->access_log, sizeof e->access_log, "%s/access.log", e->dir);
    snprintf(e->gateway.log, sizeof e->gateway.log, "%s/gateway.log", e->dir);
    snprintf(e->config, sizeof e->config, "%s/gw.json", e->dir);

    int upstream_port;
    if (o->no_sandbox) {
        upstream_port = o->upstream_port > 0 ? o->upstream_port : free_port();
        snprintf(e->journal, sizeof e->journal, "%s/journal.jsonl", e->dir);
    } else {
        start_sandbox(e, o);
        upstream_port = e->sandbox.port;
    }
    e->gateway.port = free_port();
    e->admin_port = free_port();
    snprintf(e->audit_file, sizeof e->audit_file, "%s/audit/audit.jsonl", e->dir);
    char *jwk = NULL, jwks_path[700], pem[700];
    snprintf(pem, sizeof pem, "%s/jwt-rs256.pub.pem", e->certs);
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", e->dir);
    jwk = jwk_from_pem(pem, "j1");
    ck_assert_ptr_nonnull(jwk);
    char *jwks = NULL;
    ck_assert_int_ge(asprintf(&jwks, "{\"keys\":[%s]}", jwk), 0);
    write_file(jwks_path, jwks);
    free(jwk);
    free(jwks);
    char auth[2048];
    snprintf(
        auth, sizeof auth,
        "{ \"issuers\": [\n"
        "    { \"issuer\": \"" ISSUER_JWKS "\", \"jwks_file\": \"jwks.json\" },\n"
        "    { \"issuer\": \"" ISSUER_RS "\", \"keys\": [\n"
        "        { \"kid\": \"k1\", \"alg\": \"RS256\", \"pem_file\": \"%s/jwt-rs256.pub.pem\" },\n"
        "        { \"kid\": \"e1\", \"alg\": \"ES256\", \"pem_file\": \"%s/jwt-es256.pub.pem\" } ] "
        "},\n"
        "    { \"issuer\": \"" ISSUER_HS "\", \"audiences\": [], \"keys\": [\n"
        "        { \"alg\": \"HS256\", \"secret_file\": \"%s/jwt-hs256.secret\" } ] } ] }",
        e->certs, e->certs, e->certs);
    char cfg[12288];
    snprintf(
        cfg, sizeof cfg,
        "{\n"
        "  // written by the integration harness\n"
        "  \"listen\": { \"address\": \"127.0.0.1\", \"port\": %d, \"workers\": %d },\n"
        "  \"tls\": { \"cert\": \"%s/gateway.crt\", \"key\": \"%s/gateway.key\"%s%s },\n"
        "  \"admin\": { \"port\": %d },\n"
        "  \"upstream\": { \"url\": \"https://localhost:%d\", \"ca_file\": \"%s/ca.crt\"%s%s },\n"
        "  \"credentials\": %s,\n"
        "  \"auth\": %s,\n"
        "  \"policies\": { \"dir\": \"policies\" },\n"
        "  \"rate_limit\": %s,\n"
        "  \"access_log\": { \"file\": \"access.log\" }%s%s\n"
        "}\n",
        e->gateway.port, o->workers ? o->workers : 2, o->tls_dir ? o->tls_dir : e->certs,
        o->tls_dir ? o->tls_dir : e->certs, o->tls_json ? ", " : "", o->tls_json ? o->tls_json : "",
        e->admin_port, upstream_port, e->certs, o->upstream_json ? ", " : "",
        o->upstream_json ? o->upstream_json : "",
        o->credentials_json ? o->credentials_json
                            : "{ \"agency_token_file\": \"agency.token\", "
                              "\"location_token_files\": { \"" LOC1 "\": \"loc1.token\" } }",
        o->auth_json ? o->auth_json : auth,
        o->rate_limit_json ? o->rate_limit_json
                           : "{ \"per_subject\": { \"burst\": 1000000, \"per_seconds\": 1 }, "
                             "\"upstream\": { \"burst\": 1000000, \"per_seconds\": 1, "
                             "\"daily\": 1000000000 } }",
        o->gateway_json ? ",\n  " : "", o->gateway_json ? o->gateway_json : "");
    write_file(e->config, cfg);
    e->native = o->native;
    if (o->gateway_env)
        snprintf(e->gateway_env, sizeof e->gateway_env, "%s", o->gateway_env);
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc-test", "users.readonly users.write", NULL,
                          e->token, sizeof e->token),
                     0);
    ck_assert_int_eq(mint("RS256", ISSUER_RS, "svc-reader", "users.readonly", NULL, e->token_ro,
                          sizeof e->token_ro),
                     0);
    start_gateway(e, o);
}

static char *b64bn(const BIGNUM *bn, int width)
{
    int n = width ? width : BN_num_bytes(bn);
    unsigned char *b = malloc((size_t)n);
    BN_bn2binpad(bn, b, n);
    char *out = malloc(GW_B64URL_ENCODED_SIZE((size_t)n));
    gw_b64url_encode(b, (size_t)n, out);
    free(b);
    return out;
}

char *jwk_from_pem(const char *pem_path, const char *kid)
{
    return jwk_from_pem_alg(pem_path, kid, NULL);
}

char *jwk_from_pem_alg(const char *pem_path, const char *kid, const char *alg)
{
    FILE *f = fopen(pem_path, "r");
    EVP_PKEY *k = f ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (k == NULL)
        return NULL;
    char *out = NULL;
    const char *okp = EVP_PKEY_is_a(k, "ED25519") ? "Ed25519"
                      : EVP_PKEY_is_a(k, "ED448") ? "Ed448"
                                                  : NULL;
    if (okp) {
        unsigned char raw[64];
        size_t rl = sizeof raw;
        char x[128];
        EVP_PKEY_get_raw_public_key(k, raw, &rl);
        gw_b64url_encode(raw, rl, x);
        if (asprintf(&out, "{\"kty\":\"OKP\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\"}", kid, okp,
                     x) < 0)
            out = NULL;
    } else if (EVP_PKEY_is_a(k, "RSA")) {
        BIGNUM *n = NULL, *e = NULL;
        EVP_PKEY_get_bn_param(k, "n", &n);
        EVP_PKEY_get_bn_param(k, "e", &e);
        char *sn = b64bn(n, 0), *se = b64bn(e, 0);
        if (asprintf(&out,
                     "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}",
                     kid, sn, se) < 0)
            out = NULL;
        free(sn);
        free(se);
        BN_free(n);
        BN_free(e);
    } else {
        unsigned char pt[200];
        size_t pl = 0;
        EVP_PKEY_get_octet_string_param(k, "pub", pt, sizeof pt, &pl);
        size_t f1 = (pl - 1) / 2;
        char x[128], y[128];
        gw_b64url_encode(pt + 1, f1, x);
        gw_b64url_encode(pt + 1 + f1, f1, y);
        const char *crv = f1 == 32 ? "P-256" : f1 == 48 ? "P-384" : "P-521";
        if (asprintf(&out,
                     "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}",
                     kid, crv, x, y) < 0)
            out = NULL;
    }
    EVP_PKEY_free(k);
    if (out && alg) { /* the object's closing brace becomes ,"alg":"..."} */
        char *with = NULL;
        if (asprintf(&with, "%.*s,\"alg\":\"%s\"}", (int)strlen(out) - 1, out, alg) < 0)
            with = NULL;
        free(out);
        out = with;
    }
    return out;
}

int mint(const char *alg, const char *iss, const char *sub, const char *scope, const char *extra,
         char *out, size_t cap)
{
    const char *key = strcmp(alg, "HS256") == 0   ? "jwt-hs256.secret"
                      : strcmp(alg, "ES256") == 0 ? "jwt-es256.key"
                                                  : "jwt-rs256.key";
    const char *kid = strcmp(alg, "HS256") == 0   ? ""
                      : strcmp(alg, "ES256") == 0 ? "--kid e1"
                                                  : "--kid k1";
    char cmd[2048], *outp = NULL;
    snprintf(cmd, sizeof cmd,
             "%s mint --key %s/%s --alg %s %s --iss '%s' --sub '%s' --aud ghl-gateway "
             "--scope '%s' %s",
             bin_path("ghl-gateway"), GW_CERTS_DIR, key, alg, kid, iss, sub, scope,
             extra ? extra : "");
    int rc = run_cmd(cmd, &outp);
    size_t n = strcspn(outp, "\n");
    if (rc != 0 || n == 0 || n >= cap) {
        fprintf(stderr, "mint failed: %s\n", outp);
        free(outp);
        return -1;
    }
    memcpy(out, outp, n);
    out[n] = '\0';
    free(outp);
    return 0;
}

char *raw_request(const struct env *e, const char *method, const char *path, const char *extra)
{
    char *raw = NULL;
    if (asprintf(&raw,
                 "%s %s HTTP/1.1\r\nHost: localhost\r\nVersion: 2021-07-28\r\n"
                 "Authorization: Bearer %s\r\n%s\r\n",
                 method, path, e->token, extra ? extra : "") < 0)
        return NULL;
    return raw;
}

static int wait_pid(pid_t pid, int wait_ms)
{
    long end = now_ms() + wait_ms;
    int st;
    while (now_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    return -1;
}

void env_start_gateway(struct env *e)
{
    start_gateway(e, NULL);
}

long long metrics_sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *at = strstr(text, series); at; at = strstr(at + 1, series))
        if ((at == text || at[-1] == '\n') && at[n] == ' ')
            return strtoll(at + n + 1, NULL, 10);
    return -1;
}

int admin_get(const struct env *e, const char *path, char **body)
{
    *body = NULL;
    int fd = loopback_connect(e->admin_port);
    if (fd < 0)
        return -1;
    char req[300];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    close(fd);
    if (buf == NULL)
        return -1;
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    char *b = strstr(buf, "\r\n\r\n");
    *body = strdup(b ? b + 4 : "");
    free(buf);
    return status;
}

int env_stop_gateway(struct env *e, int wait_ms)
{
    if (e->gateway.pid <= 0)
        return -1;
    kill(e->gateway.pid, SIGTERM);
    int rc = wait_pid(e->gateway.pid, wait_ms);
    if (rc < 0) {
        kill(e->gateway.pid, SIGKILL);
        waitpid(e->gateway.pid, NULL, 0);
    }
    e->gateway.pid = 0;
    return rc;
}

/* Both programs must stop cleanly on SIGTERM: under the sanitizer build a leak or an invalid
 * access makes the exit status nonzero, and the test fails here. */
void env_stop(struct env *e)
{
    int gw = e->gateway.pid > 0 ? env_stop_gateway(e, under_valgrind() ? 60000 : 10000) : 0;
    int sb = 0;
    if (e->sandbox.pid > 0) {
        kill(e->sandbox.pid, SIGTERM);
        sb = wait_pid(e->sandbox.pid, 10000);
        if (sb < 0) {
            kill(e->sandbox.pid, SIGKILL);
            waitpid(e->sandbox.pid, NULL, 0);
        }
        e->sandbox.pid = 0;
    }
    char *glog = gw ? slurp(e->gateway.log) : NULL;
    char *slog = sb ? slurp(e->sandbox.log) : NULL;
    if (getenv("GW_KEEP_TEST_DIRS") == NULL && e->dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
        run_cmd(cmd, NULL);
    }
    ck_assert_msg(gw == 0, "ghl-gateway exited with %d:\n%.4000s", gw, glog ? glog : "");
    ck_assert_msg(sb == 0, "ghl-sandbox exited with %d:\n%.4000s", sb, slog ? slog : "");
    free(glog);
    free(slog);
}

/* ---- client ---- */

void response_free(struct response *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

const char *response_header(const struct response *r, const char *name)
{
    static char val[1024];
    if (r->head == NULL)
        return NULL;
    size_t n = strlen(name);
    for (const char *l = strstr(r->head, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        const char *s = l + 2;
        if (strncasecmp(s, name, n) == 0 && s[n] == ':') {
            s += n + 1;
            while (*s == ' ')
                s++;
            const char *e = strstr(s, "\r\n");
            size_t len = e ? (size_t)(e - s) : strlen(s);
            if (len >= sizeof val)
                len = sizeof val - 1;
            memcpy(val, s, len);
            val[len] = '\0';
            return val;
        }
    }
    return NULL;
}

int tls_client_rcvbuf;

int tls_connect(struct tls_client *c, int port, int max_version, const char *cert, const char *key,
                const char *ca)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (max_version) {
        SSL_CTX_set_security_level(c->ctx, 0);
        SSL_CTX_set_min_proto_version(c->ctx, 0);
        SSL_CTX_set_max_proto_version(c->ctx, max_version);
        SSL_CTX_set_cipher_list(c->ctx, "ALL:@SECLEVEL=0");
    }
    SSL_CTX_load_verify_locations(c->ctx, ca, NULL);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    if (cert && (SSL_CTX_use_certificate_file(c->ctx, cert, SSL_FILETYPE_PEM) != 1 ||
                 SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1))
        return -1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (tls_client_rcvbuf)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &tls_client_rcvbuf, sizeof tls_client_rcvbuf);
    struct sockaddr_in a = loopback(port);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    c->ssl = SSL_new(c->ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    SSL_set1_host(c->ssl, "localhost");
    if (SSL_connect(c->ssl) != 1) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

int tls_send(struct tls_client *c, const void *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        int w = SSL_write(c->ssl, (const char *)buf + off, (int)(len - off));
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

/* Reads more bytes within the deadline. Returns >0 bytes, 0 on close, -1 on timeout/error. */
static int read_some(struct tls_client *c, char *buf, int cap, long deadline)
{
    for (;;) {
        if (SSL_pending(c->ssl) == 0) {
            long left = deadline - now_ms();
            if (left <= 0)
                return -1;
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            int pr = poll(&pfd, 1, (int)left);
            if (pr == 0)
                return -1;
        }
        int n = SSL_read(c->ssl, buf, cap);
        if (n > 0)
            return n;
        int e = SSL_get_error(c->ssl, n);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ)
            continue;
        return 0; /* close_notify, EOF or reset: the connection is over */
    }
}

int tls_read_response(struct tls_client *c, struct response *r, int timeout_ms, int close_wait_ms)
{
    memset(r, 0, sizeof *r);
    long deadline = now_ms() + timeout_ms;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    long hl = -1; /* head length (offsets: buf moves when it grows) */
    long need = -1;
    for (;;) {
        if (hl < 0) {
            buf[n] = '\0';
            char *hend = n ? strstr(buf, "\r\n\r\n") : NULL;
            if (hend) {
                hl = hend - buf;
                const char *cl = NULL;
                for (char *l = strstr(buf, "\r\n"); l && l < hend; l = strstr(l + 2, "\r\n"))
                    if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
                        cl = l + 17;
                need = hl + 4 + (cl ? strtol(cl, NULL, 10) : 0);
            }
        }
        if (hl >= 0 && (long)n >= need)
            break;
        if (cap - n < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        int got = read_some(c, buf + n, (int)(cap - n - 1), deadline);
        if (got <= 0) {
            r->closed = got == 0;
            break;
        }
        n += (size_t)got;
    }
    if (hl < 0 || (long)n < need) {
        free(buf);
        return -1;
    }
    r->got = true;
    r->head = strndup(buf, (size_t)hl + 2);
    r->body_len = (size_t)(need - hl - 4);
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, buf + hl + 4, r->body_len);
    r->body[r->body_len] = '\0';
    r->status = (int)strtol(buf + 9, NULL, 10);
    free(buf);
    if (close_wait_ms > 0 && !r->closed) {
        char tmp[256];
        int got = read_some(c, tmp, sizeof tmp, now_ms() + close_wait_ms);
        r->closed = got == 0;
    }
    return 0;
}

int tls_wait_closed(struct tls_client *c, int ms)
{
    char b[256];
    int n = read_some(c, b, sizeof b, now_ms() + ms);
    return n == 0 ? 1 : n < 0 ? 0 : 2;
}

void tls_close(struct tls_client *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

int send_raw(const struct env *e, const char *raw, size_t len, struct response *r)
{
    struct tls_client c;
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", e->certs);
    memset(r, 0, sizeof *r); /* a send that fails leaves an empty response to free */
    if (tls_connect(&c, e->gateway.port, 0, NULL, NULL, ca) != 0) {
        tls_close(&c);
        return -1;
    }
    int rc = tls_send(&c, raw, len);
    if (rc == 0)
        rc = tls_read_response(&c, r, 10000, 300);
    tls_close(&c);
    return rc;
}

int send_req(const struct env *e, const char *method, const char *path, const char *extra,
             const char *body, struct response *r)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = 6144 + strlen(path) + (extra ? strlen(extra) : 0) + blen;
    char *raw = malloc(cap);
    int n = snprintf(raw, cap, "%s %s HTTP/1.1\r\nHost: localhost\r\nVersion: 2021-07-28\r\n%s",
                     method, path, extra ? extra : "");
    bool has_auth = extra && (strncasecmp(extra, "Authorization:", 14) == 0 ||
                              strcasestr(extra, "\nAuthorization:") != NULL);
    if (!has_auth)
        n += snprintf(raw + n, cap - (size_t)n, "Authorization: Bearer %s\r\n", e->token);
    if (body)
        n += snprintf(raw + n, cap - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    n += snprintf(raw + n, cap - (size_t)n, "\r\n%s", body ? body : "");
    int rc = send_raw(e, raw, (size_t)n, r);
    free(raw);
    return rc;
}

/* ---- journal ---- */

int journal_count(const struct env *e)
{
    char *s = slurp(e->journal);
    int n = 0;
    for (char *p = s; *p; p++)
        n += *p == '\n';
    free(s);
    return n;
}

cJSON *journal_entry(const struct env *e, int idx)
{
    char *s = slurp(e->journal);
    char *line = s;
    for (int i = 0; i < idx && line; i++) {
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    cJSON *j = NULL;
    if (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        j = cJSON_Parse(line);
    }
    free(s);
    return j;
}

const char *journal_header(const cJSON *entry, const char *name, int *count)
{
    const char *found = NULL;
    int n = 0;
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(entry, "headers");
    for (const cJSON *h = hs ? hs->child : NULL; h; h = h->next) {
        const cJSON *k = cJSON_GetArrayItem(h, 0), *v = cJSON_GetArrayItem(h, 1);
        if (cJSON_IsString(k) && strcasecmp(k->valuestring, name) == 0) {
            n++;
            if (found == NULL && cJSON_IsString(v))
                found = v->valuestring;
        }
    }
    if (count)
        *count = n;
    return found;
}

bool journal_headers_are(const cJSON *entry, const char *const *names, size_t n)
{
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(entry, "headers");
    if ((size_t)cJSON_GetArraySize(hs) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int c = 0;
        journal_header(entry, names[i], &c);
        if (c != 1)
            return false;
    }
    return true;
}

int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/* ---- JWKS and discovery documents over https ---- */

/* Replaced whole (a rename), so a fetch never reads half a document. */
void write_jwks(const char *dir, const char *const *jwks, size_t n)
{
    char path[400], tmp[420];
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"keys\":[", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%s", i ? "," : "", jwks[i]);
    fputs("]}", f);
    fclose(f);
    ck_assert_int_eq(rename(tmp, path), 0);
}

/* openssl s_server serving the files of dir over https on a free port (*port). */
pid_t serve_dir(const char *dir, int *port)
{
    *port = free_port();
    return serve_dir_at(dir, *port);
}

pid_t serve_dir_at(const char *dir, int port)
{
    char accept[16], cert[400], key[400], log[400];
    snprintf(accept, sizeof accept, "%d", port);
    snprintf(cert, sizeof cert, "%s/sandbox.crt", GW_CERTS_DIR);
    snprintf(key, sizeof key, "%s/sandbox.key", GW_CERTS_DIR);
    snprintf(log, sizeof log, "%s/s_server.log", dir);
    char *argv[] = {
        "/usr/bin/openssl", "s_server", "-accept", accept, "-cert", cert, "-key", key, "-WWW",
        "-quiet",           NULL};
    pid_t srv = spawn_in(argv, log, dir);
    ck_assert_int_eq(wait_port(port, 5000), 0);
    return srv;
}

/* A new RSA key pair in dir: b.key and b.pub. */
void make_key_b(const char *dir)
{
    char cmd[1200], *out;
    snprintf(cmd, sizeof cmd,
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s/b.key && "
             "openssl pkey -in %s/b.key -pubout -out %s/b.pub",
             dir, dir, dir);
    ck_assert_int_eq(run_cmd(cmd, &out), 0);
    free(out);
}

/* ---- tokens with a header of the test's choosing ---- */

char *sign_jws_rs256(const char *key_path, const char *header, const char *payload)
{
    FILE *f = fopen(key_path, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (k == NULL)
        return NULL;
    size_t hl = strlen(header), pl = strlen(payload);
    char *out = malloc(GW_B64URL_ENCODED_SIZE(hl) + GW_B64URL_ENCODED_SIZE(pl) + 1024);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char sig[512];
    size_t sl = sizeof sig;
    size_t n = out ? gw_b64url_encode((const unsigned char *)header, hl, out) : 0;
    if (out) {
        out[n++] = '.';
        n += gw_b64url_encode((const unsigned char *)payload, pl, out + n);
    }
    if (out == NULL || ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestSign(ctx, sig, &sl, (const unsigned char *)out, n) != 1) {
        free(out);
        out = NULL;
    } else {
        out[n++] = '.';
        gw_b64url_encode(sig, sl, out + n);
    }
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return out;
}

int cert_thumbprint(const char *cert_path, char out[48])
{
    FILE *f = fopen(cert_path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    unsigned char *der = NULL, md[32];
    int len = x ? i2d_X509(x, &der) : -1;
    X509_free(x);
    if (len <= 0)
        return -1;
    SHA256(der, (size_t)len, md);
    OPENSSL_free(der);
    gw_b64url_encode(md, sizeof md, out);
    return 0;
}
