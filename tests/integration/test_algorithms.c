/* The signature algorithms end to end (SPEC §4 items 3-5): PS256, PS384, PS512 and EdDSA tokens
 * through the real gateway over TLS, from PEM keys and from a JWKS URL served over https; one
 * RSA key pinned RS256 and PS256 under two kids never verifies the other's tokens; an Ed448 key
 * is refused by `check` (and by `mint`). Keys: make-test-certs.sh's jwt-ps (RSA 3072),
 * jwt-ed25519 and jwt-ed448, beside the RS256 test key. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "b64url.h"
#include "harness.h"

static struct env E;

/* ISSUER_RS (the harness policy lets its subjects do everything) with the RS256 test key k1 and
 * the algorithms under test; rp is jwt-ps's RSA key pinned RS256, beside p256 pinned PS256. */
static const char auth_fmt[] =
    "{ \"issuers\": [ { \"issuer\": \"" ISSUER_RS "\", \"keys\": [\n"
    "    { \"kid\": \"k1\", \"alg\": \"RS256\", \"pem_file\": \"%1$s/jwt-rs256.pub.pem\" },\n"
    "    { \"kid\": \"p256\", \"alg\": \"PS256\", \"pem_file\": \"%1$s/jwt-ps.pub.pem\" },\n"
    "    { \"kid\": \"p384\", \"alg\": \"PS384\", \"pem_file\": \"%1$s/jwt-ps.pub.pem\" },\n"
    "    { \"kid\": \"p512\", \"alg\": \"PS512\", \"pem_file\": \"%1$s/jwt-ps.pub.pem\" },\n"
    "    { \"kid\": \"rp\", \"alg\": \"RS256\", \"pem_file\": \"%1$s/jwt-ps.pub.pem\" },\n"
    "    { \"kid\": \"d1\", \"alg\": \"EdDSA\", \"pem_file\": \"%1$s/jwt-ed25519.pub.pem\" } ] } ] "
    "}";

static void setup_pem(void)
{
    char auth[2048];
    snprintf(auth, sizeof auth, auth_fmt, GW_CERTS_DIR);
    env_start(&E, &(struct env_opts){.auth_json = auth});
}

static void teardown(void)
{
    env_stop(&E);
}

/* A token of iss signed by the test key file key (in the certs folder) with alg and kid. */
static void mint_with(const char *alg, const char *key, const char *kid, const char *iss,
                      const char *extra, char *out, size_t cap)
{
    char more[600];
    snprintf(more, sizeof more, "--kid %s --key %s/%s %s", kid, GW_CERTS_DIR, key,
             extra ? extra : "");
    /* mint() names its own --kid and --key first: the later ones win */
    ck_assert_msg(mint(alg, iss, "svc-alg", "users.readonly users.write", more, out, cap) == 0,
                  "mint %s with %s failed", alg, key);
}

static void get_user(const char *token, struct response *r)
{
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    ck_assert_int_eq(send_req(&E, "GET", "/users/" SEED_USER, auth, NULL, r), 0);
}

static void expect_refused(const char *token, const char *reason, const char *what)
{
    struct response r;
    get_user(token, &r);
    ck_assert_msg(r.status == 401, "%s: %d %s", what, r.status, r.body);
    char want[200];
    snprintf(want, sizeof want,
             "Bearer realm=\"ghl-gateway\", error=\"invalid_token\", error_description=\"%s\"",
             reason);
    const char *got = response_header(&r, "WWW-Authenticate");
    ck_assert_msg(got && strcmp(got, want) == 0, "%s: %s", what, got ? got : "(none)");
    response_free(&r);
}

/* token with its header replaced by header (JSON text) and signed again with the private key
 * file key: RSA PKCS#1 v1.5 or RSASSA-PSS (MGF1 and salt of SHA-256), both over SHA-256. */
static void resign(const char *token, const char *header, const char *key, bool pss, char *out,
                   size_t cap)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", GW_CERTS_DIR, key);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_ptr_nonnull(pk);
    const char *d1 = strchr(token, '.'), *d2 = strrchr(token, '.');
    char h[512];
    ck_assert_uint_lt(GW_B64URL_ENCODED_SIZE(strlen(header)), sizeof h);
    gw_b64url_encode((const unsigned char *)header, strlen(header), h);
    int w = snprintf(out, cap, "%s.%.*s", h, (int)(d2 - d1 - 1), d1 + 1);
    ck_assert(w > 0 && (size_t)w < cap);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char sig[1024];
    size_t sl = sizeof sig;
    ck_assert_int_eq(EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, pk), 1);
    if (pss) {
        ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 0);
        ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 0);
    }
    ck_assert_int_eq(EVP_DigestSign(ctx, sig, &sl, (const unsigned char *)out, (size_t)w), 1);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    ck_assert((size_t)w + 1 + GW_B64URL_ENCODED_SIZE(sl) <= cap);
    out[w] = '.';
    gw_b64url_encode(sig, sl, out + w + 1);
}

/* Each algorithm's token gets its answer from the upstream, which sees the agency credential,
 * never the token. RS256 (k1) is the control. */
START_TEST(test_ps_and_eddsa_tokens_from_pem_keys_accepted)
{
    static const struct {
        const char *alg, *key, *kid;
    } v[] = {
        {"PS256", "jwt-ps.key", "p256"},  {"PS384", "jwt-ps.key", "p384"},
        {"PS512", "jwt-ps.key", "p512"},  {"EdDSA", "jwt-ed25519.key", "d1"},
        {"RS256", "jwt-rs256.key", "k1"}, {"RS256", "jwt-ps.key", "rp"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char t[4096];
        mint_with(v[i].alg, v[i].key, v[i].kid, ISSUER_RS, NULL, t, sizeof t);
        struct response r;
        get_user(t, &r);
        ck_assert_msg(r.status == 200, "%s (%s): %d %s", v[i].alg, v[i].kid, r.status, r.body);
        ck_assert_ptr_nonnull(strstr(r.body, SEED_USER));
        response_free(&r);
        ck_assert_int_eq(journal_count(&E), (int)i + 1);
        cJSON *j = journal_entry(&E, (int)i);
        ck_assert_ptr_nonnull(j);
        ck_assert_str_eq(journal_header(j, "Authorization", NULL), "Bearer " AGENCY_TOKEN);
        char *text = cJSON_PrintUnformatted(j);
        ck_assert_msg(strstr(text, t) == NULL, "%s: the token reached the upstream", v[i].alg);
        free(text);
        cJSON_Delete(j);
    }
    /* a write with an EdDSA token: the token's scope and the policy apply as for any other */
    char t[4096];
    mint_with("EdDSA", "jwt-ed25519.key", "d1", ISSUER_RS, NULL, t, sizeof t);
    char auth[4200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", t);
    struct response r;
    ck_assert_int_eq(send_req(&E, "PUT", "/users/" SEED_USER, auth, "{\"firstName\":\"Ed\"}", &r),
                     0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    response_free(&r);
    ck_assert_int_eq(journal_count(&E), 8); /* update-user reads its target first */
    cJSON *j = journal_entry(&E, 7);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "method")->valuestring, "PUT");
    cJSON_Delete(j);
}
END_TEST

/* SPEC §4 item 3: the header alg must equal the pinned one. A token whose alg is not its key's
 * is unknown_key (the pipeline's class for a key that cannot verify that alg); a token naming
 * the right alg whose signature uses the other padding is bad_signature. Nothing is forwarded. */
START_TEST(test_rs_ps_confusion_refused)
{
    char t[4096], x[4096];
    mint_with("PS256", "jwt-ps.key", "rp", ISSUER_RS, NULL, t, sizeof t);
    expect_refused(t, "unknown_key", "PS256 token on the key pinned RS256");
    mint_with("RS256", "jwt-ps.key", "p256", ISSUER_RS, NULL, t, sizeof t);
    expect_refused(t, "unknown_key", "RS256 token on the key pinned PS256");
    mint_with("PS384", "jwt-ps.key", "p256", ISSUER_RS, NULL, t, sizeof t);
    expect_refused(t, "unknown_key", "PS384 token on the key pinned PS256");
    mint_with("EdDSA", "jwt-ed25519.key", "rp", ISSUER_RS, NULL, t, sizeof t);
    expect_refused(t, "unknown_key", "EdDSA token on an RSA key");
    mint_with("PS256", "jwt-ps.key", "d1", ISSUER_RS, NULL, t, sizeof t);
    expect_refused(t, "unknown_key", "PS256 token on the Ed25519 key");

    /* the right alg in the header, the other padding in the signature */
    mint_with("PS256", "jwt-ps.key", "p256", ISSUER_RS, NULL, t, sizeof t);
    resign(t, "{\"alg\":\"PS256\",\"kid\":\"p256\",\"typ\":\"JWT\"}", "jwt-ps.key", true, x,
           sizeof x);
    struct response r;
    get_user(x, &r); /* the control: re-signed with PSS, it passes */
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
    response_free(&r);
    resign(t, "{\"alg\":\"PS256\",\"kid\":\"p256\",\"typ\":\"JWT\"}", "jwt-ps.key", false, x,
           sizeof x);
    expect_refused(x, "bad_signature", "PS256 header, PKCS#1 v1.5 signature");
    resign(t, "{\"alg\":\"RS256\",\"kid\":\"rp\",\"typ\":\"JWT\"}", "jwt-ps.key", true, x,
           sizeof x);
    expect_refused(x, "bad_signature", "RS256 header, PSS signature");

    /* an EdDSA token with a signature byte changed; one signed by another key */
    mint_with("EdDSA", "jwt-ed25519.key", "d1", ISSUER_RS, NULL, t, sizeof t);
    char *c = t + strlen(t) - 10;
    *c = *c == 'A' ? 'B' : 'A';
    expect_refused(t, "bad_signature", "EdDSA signature changed");
    mint_with("PS512", "jwt-rs256.key", "p512", ISSUER_RS, NULL, t, sizeof t);
    expect_refused(t, "bad_signature", "PS512 signed by another RSA key");
    ck_assert_int_eq(journal_count(&E), 1); /* the control only */
    char *log = slurp(E.access_log);
    ck_assert_ptr_nonnull(strstr(log, "\"auth_failure\":\"unknown_key\""));
    ck_assert_ptr_nonnull(strstr(log, "\"auth_failure\":\"bad_signature\""));
    free(log);
}
END_TEST

/* A JWKS URL over https: an OKP Ed25519 key without alg is EdDSA, RSA keys with alg PS256 and
 * PS512 are pinned so, and an Ed448 key is left out (the rest of the set stays usable). */
START_TEST(test_tokens_from_a_jwks_url)
{
    char dir[] = "/tmp/ghl-algjwks-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char ed[400], ps[400], e448[400];
    snprintf(ed, sizeof ed, "%s/jwt-ed25519.pub.pem", GW_CERTS_DIR);
    snprintf(ps, sizeof ps, "%s/jwt-ps.pub.pem", GW_CERTS_DIR);
    snprintf(e448, sizeof e448, "%s/jwt-ed448.pub.pem", GW_CERTS_DIR);
    char *keys[4] = {jwk_from_pem(ed, "ed"), jwk_from_pem_alg(ps, "ps", "PS256"),
                     jwk_from_pem_alg(ps, "ps5", "PS512"), jwk_from_pem_alg(e448, "x448", "EdDSA")};
    for (int i = 0; i < 4; i++)
        ck_assert_ptr_nonnull(keys[i]);
    ck_assert_ptr_nonnull(strstr(keys[0], "\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\""));
    ck_assert_ptr_null(strstr(keys[0], "\"alg\""));
    ck_assert_ptr_nonnull(strstr(keys[3], "\"crv\":\"Ed448\""));
    write_jwks(dir, (const char *const *)keys, 4);
    int port;
    pid_t srv = serve_dir(dir, &port);
    char auth[1024];
    snprintf(auth, sizeof auth,
             "{ \"issuers\": [ { \"issuer\": \"https://rot.test\", \"jwks_url\": "
             "\"https://127.0.0.1:%d/jwks.json\", \"jwks_ca_file\": \"%s/ca.crt\" } ] }",
             port, GW_CERTS_DIR);
    env_start(&E, &(struct env_opts){.auth_json = auth});
    char *glog = wait_for_text(E.gateway.log, "https://rot.test: 3 keys loaded", 10000);
    ck_assert_msg(strstr(glog, "https://rot.test: 3 keys loaded") != NULL, "%s", glog);
    free(glog);

    static const struct {
        const char *alg, *key, *kid;
        int status;
        const char *reason;
    } v[] = {
        {"EdDSA", "jwt-ed25519.key", "ed", 200, NULL},
        {"PS256", "jwt-ps.key", "ps", 200, NULL},
        {"PS512", "jwt-ps.key", "ps5", 200, NULL},
        {"PS384", "jwt-ps.key", "ps", 401, "unknown_key"},
        {"RS256", "jwt-ps.key", "ps", 401, "unknown_key"},
        {"EdDSA", "jwt-ed25519.key", "x448", 401, "unknown_key"},
        {"EdDSA", "jwt-ed25519.key", "ps", 401, "unknown_key"},
    };
    int forwarded = 0;
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char t[4096];
        mint_with(v[i].alg, v[i].key, v[i].kid, "https://rot.test", NULL, t, sizeof t);
        char what[64];
        snprintf(what, sizeof what, "%s kid %s", v[i].alg, v[i].kid);
        if (v[i].status == 200) {
            struct response r;
            get_user(t, &r);
            ck_assert_msg(r.status == 200, "%s: %d %s", what, r.status, r.body);
            response_free(&r);
            forwarded++;
        } else {
            expect_refused(t, v[i].reason, what);
        }
    }
    ck_assert_int_eq(journal_count(&E), forwarded);
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    for (int i = 0; i < 4; i++)
        free(keys[i]);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    run_cmd(cmd, NULL);
}
END_TEST

/* `check` on the running configuration with its EdDSA key's file replaced: Ed448 is refused
 * with the reason, at the key's file:line; so is an RSA key for EdDSA. mint refuses Ed448 too. */
START_TEST(test_check_refuses_an_ed448_key)
{
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), E.config);
    ck_assert_msg(run_cmd(cmd, &out) == 0, "%s", out);
    free(out);
    char *cfg = slurp(E.config);
    static const struct {
        const char *file, *want;
    } v[] = {
        {"jwt-ed448.pub.pem", "an EdDSA key must be Ed25519 (Ed448 is not supported)"},
        {"jwt-ps.pub.pem", "an EdDSA key must be Ed25519"},
    };
    const char *at = strstr(cfg, "jwt-ed25519.pub.pem");
    ck_assert_ptr_nonnull(at);
    int line = 1;
    for (const char *p = cfg; p < at; p++)
        line += *p == '\n';
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/gw-%zu.json", E.dir, i);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f, "%.*s%s%s", (int)(at - cfg), cfg, v[i].file, at + strlen("jwt-ed25519.pub.pem"));
        fclose(f);
        snprintf(cmd, sizeof cmd, "%s check -c %s", bin_path("ghl-gateway"), path);
        ck_assert_int_eq(run_cmd(cmd, &out), 1);
        char want[900];
        snprintf(want, sizeof want, "%s:%d: auth.issuers[0].keys[5]: %s", path, line, v[i].want);
        ck_assert_msg(strstr(out, want) != NULL, "want %s in:\n%s", want, out);
        free(out);
    }
    free(cfg);
    snprintf(cmd, sizeof cmd, "%s mint --key %s/jwt-ed448.key --alg EdDSA --iss x --sub y",
             bin_path("ghl-gateway"), GW_CERTS_DIR);
    ck_assert_int_eq(run_cmd(cmd, &out), 1);
    ck_assert_msg(strstr(out, "Ed448 is not supported") != NULL, "%s", out);
    free(out);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("algorithms");
    TCase *t = tcase_create("pem");
    tcase_add_checked_fixture(t, setup_pem, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_ps_and_eddsa_tokens_from_pem_keys_accepted);
    tcase_add_test(t, test_rs_ps_confusion_refused);
    tcase_add_test(t, test_check_refuses_an_ed448_key);
    suite_add_tcase(s, t);
    TCase *j = tcase_create("jwks_url");
    tcase_add_checked_fixture(j, NULL, teardown);
    tcase_set_timeout(j, 60);
    tcase_add_test(j, test_tokens_from_a_jwks_url);
    suite_add_tcase(s, j);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
