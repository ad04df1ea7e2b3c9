/* config: the JSON configuration file (SPEC §2) -> a typed, validated struct.
 *
 * Owns: parsing (comments allowed), defaults, types and ranges, unknown-key rejection, path
 * resolution against the config file's folder, and checks that named files can be read.
 * Problems are collected, not stopped at: each is one "file:line: key: message" line.
 *
 * Memory: gw_config_load returns a struct the caller frees with gw_config_free. Paths inside
 * are absolute or relative to the process's cwd (already resolved). Immutable after load.
 * Threads: load on any one thread; a loaded config may be read from any thread.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "msgs.h"

/* rate_limit.redis.on_failure (SPEC §11.2) */
enum gw_rl_failure { GW_RLF_LOCAL, GW_RLF_DENY, GW_RLF_ALLOW };

struct gw_cfg_key {
    char *kid; /* NULL when absent */
    char *alg; /* "RS256", "HS256", ... */
    char *pem_file;
    char *secret_file;
    int line;
};

struct gw_cfg_issuer {
    char *issuer;
    char **audiences;
    size_t naudiences;
    struct gw_cfg_key *keys;
    size_t nkeys;
    char *jwks_file;
    char *jwks_url;
    char *jwks_ca_file; /* extension: CA for jwks_url; NULL = the system store */
    long jwks_refresh_s;
    long jwks_refetch_min_s; /* extension: least time between fetches caused by unknown kids */
    long leeway_s;
    long max_lifetime_s;
    char **scope_claims;
    size_t nscope_claims;
    char *subject_claim;
    bool discovery;            /* jwks_url from <issuer>/.well-known/openid-configuration (§4.2) */
    long jwks_refetch_wait_ms; /* how long a request meeting an unknown kid waits (§4.1) */
    char *require_typ;         /* NULL, or "at+jwt": only RFC 9068 access tokens */
    bool require_cert_binding; /* only tokens bound to the client certificate (§4.3) */
    int line;
};

struct gw_cfg_location_token {
    char *location_id;
    char *file;
};

struct gw_config {
    char *file; /* the config file as given */
    char *dir;  /* its folder; relative paths were resolved against it */
    struct {
        char *address;
        long port;
        long workers; /* resolved: 0 in the file means one per CPU core */
    } listen;
    struct {
        char *cert, *key;
        int min_version; /* TLS1_2_VERSION or TLS1_3_VERSION */
        char *client_ca;
    } tls;
    struct {
        char *address;
        long port;
    } admin;
    struct {
        char *url;
        char *host; /* from url */
        long port;  /* from url (443 by default) */
        char *ca_file;
        long connect_timeout_ms, timeout_ms, max_idle_connections;
        char **api_versions;
        size_t napi_versions;
        char *openapi; /* resolved; the shipped document when null in the file */
    } upstream;
    struct {
        char *agency_token_file;
        struct gw_cfg_location_token *location;
        size_t nlocation;
    } credentials;
    struct {
        struct gw_cfg_issuer *issuers;
        size_t nissuers;
        long token_cache_entries;
    } auth;
    struct {
        char *dir;
    } policies;
    struct {
        char *file;
        bool to_stdout;
        bool fsync;
        char *hmac_key_file;
        bool include_reads;
        long sync_timeout_ms; /* a change waits this long for its intent record (then 503) */
        char *replica_id;     /* resolved: the host name when null in the file */
    } audit;
    struct {
        char *file;
    } access_log;
    struct {
        struct {
            long burst, per_seconds;
        } per_subject;
        struct {
            long burst, per_seconds, daily;
        } upstream;
        long replicas; /* without a shared store each replica enforces 1/replicas (11.1) */
        struct gw_cfg_redis {
            bool enabled; /* "redis" is an object, not null */
            char *url;    /* as written */
            char *host;   /* redis://: a host name or address; NULL for a unix socket */
            long port;
            char *unix_path; /* unix:///path */
            long db;         /* SELECT'ed after AUTH (0: none) */
            char *username, *password_file, *ca_file, *key_prefix;
            long timeout_ms;
            int on_failure; /* enum gw_rl_failure */
            int line;       /* of the "redis" member, for check's problems */
        } redis;
    } rate_limit;
    struct {
        long max_header_bytes, max_body_bytes, max_token_bytes, max_json_depth;
        long header_timeout_ms, body_timeout_ms, keepalive_timeout_ms;
        long max_connections, drain_timeout_ms;
    } limits;
};

/* Parses and validates path. Returns the config, or NULL with every problem in errs (also
 * warnings, which do not fail). check_files: also open every file the config names. */
struct gw_config *gw_config_load(const char *path, bool check_files, struct gw_errs *errs);
/* The same from a buffer; path names the file in messages and anchors relative paths. */
struct gw_config *gw_config_parse(const char *path, const char *buf, size_t len, bool check_files,
                                  struct gw_errs *errs);
void gw_config_free(struct gw_config *c);

/* A replica id (audit.replica_id, the "replica" of audit records): 1 to GW_REPLICA_ID_MAX
 * letters, digits, '.', '_' and '-', starting with a letter or a digit. Host names and pod
 * names fit; no ':' (audit-verify's --anchor REPLICA:SEQ:HASH), nothing JSON or a terminal
 * would need escaped. */
#define GW_REPLICA_ID_MAX 64
bool gw_config_replica_id_ok(const char *s);

#endif
