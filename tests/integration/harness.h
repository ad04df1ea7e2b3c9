/* harness: what the integration suites share. Starts the real ghl-sandbox and ghl-gateway
 * binaries on free loopback ports with a config written to a temporary folder, talks TLS to
 * the gateway with OpenSSL (raw bytes in, one parsed response out), and reads the sandbox's
 * journal (what really reached the upstream).
 *
 * Children get PR_SET_PDEATHSIG, so a test process that dies on a failed assertion takes its
 * sandbox and gateway with it. Everything here is for one test process at a time.
 */
#ifndef GW_HARNESS_H
#define GW_HARNESS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <check.h>
#include <cJSON.h>
#include <openssl/ssl.h>

#define AGENCY_TOKEN "agency-token-3f9c1b7e"
#define LOC1 "Loc1AAAAAAAAAAAAAAAA"
#define LOC1_TOKEN "location-token-loc1-55d2"
#define COMPANY "CompanyAAAAAAAAAAAAA"
#define SEED_USER "UserSeed000000000001"

struct proc {
    pid_t pid;
    int port;
    char log[512]; /* stdout+stderr of the process */
};

struct env {
    char dir[256];   /* temporary folder of this test */
    char certs[512]; /* development certificates (made once per build) */
    char journal[600];
    char access_log[600];
    char config[600];
    struct proc sandbox;
    struct proc gateway;
    int admin_port; /* the gateway's plain-HTTP admin listener */
    char audit_file[600];
    char token[4096];       /* RS256, users.readonly + users.write, minted at start */
    char token_ro[4096];    /* RS256, users.readonly only */
    char gateway_env[2048]; /* env_opts.gateway_env, kept for restarts */
    bool native;            /* env_opts.native, kept for restarts */
};

/* Options for env_start; zero values mean the defaults described beside them. */
struct env_opts {
    const char *sandbox_args;     /* extra ghl-sandbox arguments, e.g. "--delay-ms 1500" */
    const char *sandbox_cert;     /* base name in the certs folder (default "sandbox") */
    bool no_sandbox;              /* point the gateway at a port nobody listens on */
    int upstream_port;            /* with no_sandbox: the port of an upstream the test runs */
    const char *gateway_json;     /* extra top-level config members, e.g. "\"limits\":{...}" */
    const char *upstream_json;    /* extra members of "upstream" */
    const char *tls_json;         /* extra members of "tls" */
    const char *tls_dir;          /* the folder of the gateway's gateway.crt and gateway.key
                                     (default: the test certificates) */
    const char *credentials_json; /* replaces the "credentials" object */
    int workers;                  /* default 2 */
    bool native;                  /* the gateway runs natively even under GW_VALGRIND (a
                                     suite of many gateways keeps one under memcheck) */
    const char *gateway_env;      /* NAME=VALUE ... (space-separated) added to the gateway's
                                     environment, e.g. an LD_PRELOAD shim */
    int extra_users;              /* seed this many more users (UserMany000000000001...) */
    const char *seed_users;       /* more seed entries: JSON objects joined by commas */
    const char *rate_limit_json;  /* replaces the "rate_limit" object (default: limits so high
                                     that no test meets them) */
    const char *auth_json;        /* replaces the "auth" object (default: ISSUER_RS + ISSUER_HS) */
    /* policy files written to the policies folder; none given: one policy, "harness-all",
     * lets every subject of the three test issuers do everything */
    struct {
        const char *file, *json;
    } policies[8];
};

#define ISSUER_RS "https://idp.test"    /* RS256 kid k1 and ES256 kid e1, audience ghl-gateway */
#define ISSUER_HS "https://hs.test"     /* HS256, no audience check */
#define ISSUER_JWKS "https://jwks.test" /* jwks_file: the RS256 key as a JWK with kid j1 */

/* A JWK (JSON object text, malloc'd) of the public key in pem_path: RSA, EC, or OKP for
 * Ed25519 and Ed448. */
char *jwk_from_pem(const char *pem_path, const char *kid);
/* The same with an "alg" member (alg NULL: none). */
char *jwk_from_pem_alg(const char *pem_path, const char *kid, const char *alg);

/* Writes dir/jwks.json, {"keys":[jwks...]}, replaced whole by a rename so that a fetch never
 * reads half a document. */
void write_jwks(const char *dir, const char *const *jwks, size_t n);
/* openssl s_server -WWW serving the files of dir over https (the sandbox certificate, which
 * names 127.0.0.1; CA GW_CERTS_DIR/ca.crt) on a free port (*port). Stop it with SIGTERM. */
pid_t serve_dir(const char *dir, int *port);
/* The same on a given port (one a test chose before the server was up). */
pid_t serve_dir_at(const char *dir, int port);
/* A new RSA 2048 key pair in dir: b.key and b.pub. */
void make_key_b(const char *dir);

/* A compact JWS of header and payload (JSON text, as given) signed RS256 with the private key
 * in key_path (malloc'd), or NULL: for headers ghl-gateway mint (libjwt) does not write. */
char *sign_jws_rs256(const char *key_path, const char *header, const char *payload);
/* RFC 8705's x5t#S256 of the certificate in cert_path (PEM): base64url of the SHA-256 of its
 * DER. Returns 0 or -1. */
int cert_thumbprint(const char *cert_path, char out[48]);

/* Mints a token with ghl-gateway mint into out (NUL-terminated). alg: RS256 (k1), ES256 (e1)
 * or HS256; extra: more mint arguments (may be NULL). Returns 0 or -1. */
int mint(const char *alg, const char *iss, const char *sub, const char *scope, const char *extra,
         char *out, size_t cap);
/* "METHOD PATH HTTP/1.1" with Host, Version, the env's token and extra header lines, ended. */
char *raw_request(const struct env *e, const char *method, const char *path, const char *extra);

void env_start(struct env *e, const struct env_opts *o);
/* Writes (or, with json NULL, removes) a file of the env's policies folder. */
void env_write_policy(const struct env *e, const char *file, const char *json);
/* Starts the gateway again with the same config (after env_stop_gateway). */
void env_start_gateway(struct env *e);
/* GET path on the admin listener (plain HTTP). Returns the status (-1 when it cannot connect)
 * and the body in *body (malloc'd). */
int admin_get(const struct env *e, const char *path, char **body);
/* Sends SIGTERM to the gateway and waits (up to wait_ms). Returns its exit status, or -1. */
int env_stop_gateway(struct env *e, int wait_ms);
void env_stop(struct env *e);

int free_port(void);
/* 127.0.0.1:port, and a blocking TCP connection to it (the fd, or -1). */
struct sockaddr_in loopback(int port);
int loopback_connect(int port);
int wait_port(int port, int timeout_ms);

/* The value of the sample "name{labels}" (as written, at the start of a line) in Prometheus
 * text, or -1 when absent. */
long long metrics_sample(const char *text, const char *series);

/* ---- client ---- */
struct response {
    int status;
    char *head; /* status line and headers */
    char *body;
    size_t body_len;
    bool closed; /* the server closed the connection after this response */
    bool got;    /* a response was received at all */
};
void response_free(struct response *r);
/* Header value (case-insensitive), or NULL. Points into r->head (copied into a static buffer). */
const char *response_header(const struct response *r, const char *name);

struct tls_client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};
/* Receive buffer of the next client sockets (0: the system's), set before connecting. */
extern int tls_client_rcvbuf;
/* Connects with TLS (CA-verified, SNI "localhost"). max_version 0: any. Returns 0 or -1. */
int tls_connect(struct tls_client *c, int port, int max_version, const char *cert, const char *key,
                const char *ca);
int tls_send(struct tls_client *c, const void *buf, size_t len);
/* Reads one response (Content-Length delimited) within timeout_ms; then looks up to
 * close_wait_ms for the server closing the connection. */
int tls_read_response(struct tls_client *c, struct response *r, int timeout_ms, int close_wait_ms);
void tls_close(struct tls_client *c);
/* Waits up to ms for the server to close the connection, skipping TLS-only records (session
 * tickets). Returns 1 when closed, 0 when still open, 2 when application data arrived. */
int tls_wait_closed(struct tls_client *c, int ms);

/* One request on a new connection; the response is parsed into r. raw is sent as is. */
int send_raw(const struct env *e, const char *raw, size_t len, struct response *r);
/* Builds "METHOD PATH HTTP/1.1\r\nHost: localhost\r\nVersion: 2021-07-28\r\n<extra>" +
 * Content-Length/Content-Type when body is given, and sends it. extra: complete header lines;
 * unless they hold an Authorization line, the env's token is sent. */
int send_req(const struct env *e, const char *method, const char *path, const char *extra,
             const char *body, struct response *r);

/* ---- journal ---- */
/* Number of requests the sandbox has received. */
int journal_count(const struct env *e);
/* Entry n (0-based) of the journal, parsed; caller frees with cJSON_Delete. NULL if absent. */
cJSON *journal_entry(const struct env *e, int n);
/* Value of a header in a journal entry (case-insensitive); NULL if absent. Counts in *n. */
const char *journal_header(const cJSON *entry, const char *name, int *n);
/* True when the entry's header names are exactly the given set (case-insensitive), no more. */
bool journal_headers_are(const cJSON *entry, const char *const *names, size_t n);

/* Reads a whole file into a malloc'd string ("" when absent). */
char *slurp(const char *path);
/* path's contents (malloc'd) once they hold needle, or after timeout_ms as they are then. */
char *wait_for_text(const char *path, const char *needle, int timeout_ms);
/* Runs a command line, captures stdout+stderr into *out (malloc'd), returns the exit status. */
int run_cmd(const char *cmd, char **out);

const char *bin_path(const char *name);
/* Runs a suite's tests (forked, as Check does by default) and returns main's exit status. */
int run_suite(Suite *s);
/* True when GW_VALGRIND asks for the gateway under memcheck (ctest label "valgrind"): tests
 * that load the gateway send less. */
bool under_valgrind(void);
/* Starts a program (output to log, working folder cwd or NULL) that dies with the test. */
pid_t spawn_in(char *const argv[], const char *log, const char *cwd);

#endif
