/* ghl-gateway: the commands of SPEC §1.1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "config.h"
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
    printf("  upstream   %s (CA: %s), timeouts connect %ld ms / answer %ld ms, Version", c->upstream.url,
           c->upstream.ca_file ? c->upstream.ca_file : "system store",
           c->upstream.connect_timeout_ms, c->upstream.timeout_ms);
    for (size_t i = 0; i < c->upstream.napi_versions; i++)
        printf(" %s", c->upstream.api_versions[i]);
    printf("\n  openapi    %s: %zu operations, %zu grantable scopes, %zu permission flags\n",
           s->api->path, s->api->nops, s->api->nscopes, s->api->nperms);
    printf("  credentials agency token %s, %zu location token%s\n",
           s->agency.token ? "set" : "not set", s->nlocations, s->nlocations == 1 ? "" : "s");
    printf("  auth       %zu issuer%s\n", c->auth.nissuers, c->auth.nissuers == 1 ? "" : "s");
    printf("  policies   %s\n", c->policies.dir);
    printf("  audit      %s%s\n", c->audit.file ? c->audit.file : "(no file)",
           c->audit.fsync ? " (fsync)" : "");
    printf("  access log %s\n", c->access_log.file ? c->access_log.file : "stderr");
}

static int cmd_check(int argc, char **argv)
{
    const char *path;
    int rc = config_arg(find("check"), argc, argv, &path);
    if (rc != 0)
        return rc < 0 ? 2 : 0;
    struct gw_errs errs = {0};
    struct gw_snapshot *s = gw_snapshot_build(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.line[i]);
    if (s)
        summary(s);
    for (size_t i = 0; i < errs.nwarn; i++)
        fprintf(stderr, "%s\n", errs.warn[i]);
    if (s == NULL)
        fprintf(stderr, "%s: %zu problem%s found\n", path, errs.n, errs.n == 1 ? "" : "s");
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

static int not_yet(const char *name, int argc, char **argv)
{
    if (argc > 0 && is_help(argv[0])) {
        printf("usage: ghl-gateway %s\n\n(not available in this version yet)\n",
               find(name)->usage);
        return 0;
    }
    fprintf(stderr, "ghl-gateway %s: not available in this version yet\n", name);
    return 1;
}

static int cmd_explain(int argc, char **argv)
{
    return not_yet("explain", argc, argv);
}
static int cmd_policy_test(int argc, char **argv)
{
    return not_yet("policy-test", argc, argv);
}
static int cmd_audit_verify(int argc, char **argv)
{
    return not_yet("audit-verify", argc, argv);
}
static int cmd_mint(int argc, char **argv)
{
    return not_yet("mint", argc, argv);
}

static const struct command commands[] = {
    {"run", "run -c FILE", "Serve until SIGTERM or SIGINT (also: ghl-gateway -c FILE).",
     cmd_run},
    {"check", "check -c FILE",
     "Load and validate the configuration and everything it names; print a summary.\n"
     "Exit 0 when valid, 1 with each problem on its own line when not.",
     cmd_check},
    {"explain",
     "explain -c FILE --claims JSON|@FILE --request 'METHOD PATH[?QUERY]' [--body JSON|@FILE] "
     "[--target JSON|@FILE]",
     "", cmd_explain},
    {"policy-test", "policy-test -c FILE CASES.json", "", cmd_policy_test},
    {"audit-verify", "audit-verify FILE... [--key FILE] [--anchor SEQ:HASH] [--continue]", "",
     cmd_audit_verify},
    {"mint",
     "mint --key FILE --alg ALG [--kid KID] --iss ISS --sub SUB [--aud AUD] [--scope 'a b'] "
     "[--ttl SECONDS] [--claim NAME=JSON]...",
     "", cmd_mint},
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
