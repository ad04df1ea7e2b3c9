/* ghl-sandbox: an in-memory emulator of HighLevel's Users API (SPEC §13), the upstream of the
 * demo and of the integration tests.
 *
 * Built from the same OpenAPI document as the gateway: the routes, the accepted Version values,
 * the permission flags with their defaults and the response shapes are read from it. It answers
 * like the real upstream (shared/upstream/FACTS.md) and journals every request it receives, so
 * the tests can check exactly what the gateway forwarded.
 *
 * One thread, one event loop; all state lives in struct sandbox (no mutable globals). What a
 * request allocates is freed when its reply is sent or its connection dropped; everything else
 * is freed on SIGTERM/SIGINT, so a run under valgrind ends without leaks.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <cJSON.h>

#include "json.h"
#include "openapi.h"
#include "route.h"
#include "schema.h"
#include "validate.h"

#define MAX_HEADERS_BYTES (64u << 10)
#define MAX_BODY_BYTES (1u << 20)
#define MAX_TOKEN_BYTES (64u << 10)
#define MAX_SEED_BYTES (64u << 20)
#define MAX_MSG_BYTES (64u << 10) /* one validation message, enum lists included */
#define MAX_LOCATION_TOKENS 256
#define MAX_USERS 1000000
#define MAX_DELAY_MS 3600000L
#define BODY_MAX_DEPTH 32
#define ID_LEN 20
#define MAX_ID_LEN 64 /* what the router accepts in {userId} */
#define DAILY_LIMIT 200000L
#define BURST_LIMIT 100L
#define BURST_WINDOW_MS 10000L
#define MAX_RL_BURST 1000000L
#define MAX_RL_SECONDS 86400L
#define NS_PER_S 1000000000LL

#define USAGE                                                                                      \
    "usage: ghl-sandbox --listen ADDR:PORT [--cert FILE --key FILE] --agency-token-file FILE "     \
    "[--location-token LOCATIONID=FILE]... [--seed USERS.json] [--journal FILE] [--delay-ms N] "   \
    "[--fail-every N] [--drop-every N] [--rate-limit BURST/SECONDS] [--openapi FILE]\n"

static const char msg_iam[] =
    "This route is not yet supported by the IAM Service. Please update your IAM config.";
static const char msg_bad_token[] = "Invalid token: access token is invalid";
static const char msg_not_found[] = "User not found";

struct opts {
    const char *listen, *cert, *key, *agency_file, *seed, *journal, *openapi;
    const char *loc_arg[MAX_LOCATION_TOKENS];
    size_t nloc;
    long delay_ms, fail_every, drop_every;
    long rl_burst, rl_seconds; /* --rate-limit; 0: not given */
};

struct token {
    char *location; /* NULL for the agency token */
    char *value;
    size_t len;
    int64_t tat_ns; /* --rate-limit: the bucket's theoretical arrival time (GCRA) */
};

struct user {
    cJSON *rec;        /* every stored member, password and companyId included */
    unsigned long seq; /* creation order: what sort=dateAdded means here */
};

struct sandbox;

/* A reply waiting for --delay-ms, or a connection waiting to be dropped (status 0). */
struct pending {
    struct pending *prev, *next;
    struct sandbox *sb;
    struct evhttp_request *req;
    struct event *timer;
    int status;
    struct evbuffer *body;
    long daily_left, burst_left;
    bool no_burst;    /* --rate-limit and no known token: no bucket to report */
    long retry_after; /* seconds, for a 429 of --rate-limit; 0: no Retry-After */
};

struct sandbox {
    struct gw_openapi *model;
    struct token agency;
    struct token locs[MAX_LOCATION_TOKENS];
    size_t nlocs;
    struct user *users;
    size_t nusers, cap;
    unsigned long seq;
    FILE *journal;
    const char *journal_path;
    bool journal_failed;
    long delay_ms, fail_every, drop_every;
    long rl_burst, rl_seconds;     /* --rate-limit; rl_burst 0: not given */
    int64_t rl_cell_ns, rl_tau_ns; /* one cell's refill time; the burst tolerance */
    unsigned long nreq;
    int64_t window_start_ms;
    long window_count;
    struct event_base *base;
    struct evhttp *http;
    SSL_CTX *ssl;
    struct event *sigterm, *sigint;
    struct pending *pending;
};

struct reply {
    int status;
    cJSON *json; /* NULL after an allocation failure: sent as a bare 500 */
};

/* What an op handler gets: the matched route, the parsed body (ops with a body schema) and
 * the reply to fill. */
struct call {
    const struct gw_op *op;
    const struct gw_route *route;
    const cJSON *body;
    struct reply *rp;
};

/* ---------------------------------------------------------------------------------------- */
/* Small helpers */

static const cJSON *member(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *rstr(const cJSON *o, const char *k)
{
    const cJSON *v = member(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Sets o[k] = v, replacing a member of that name; takes v. Returns 0 or -1. */
static int rset(cJSON *o, const char *k, cJSON *v)
{
    if (v == NULL)
        return -1;
    bool ok = cJSON_GetObjectItemCaseSensitive(o, k)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(o, k, v)
                  : cJSON_AddItemToObject(o, k, v);
    if (!ok)
        cJSON_Delete(v);
    return ok ? 0 : -1;
}

/* A non-negative decimal with nothing around it (no sign, no spaces), at most max. */
static int parse_count(const char *s, long max, long *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void iso_now(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    char day[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%03ldZ", day, ts.tv_nsec / 1000000);
}

static bool id_chars(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/* Is s one of the comma-separated items of csv (spaces around items ignored)? */
static bool in_csv(const char *csv, const char *s, bool nocase)
{
    size_t sl = strlen(s);
    const char *p = csv;
    while (*p) {
        const char *e = strchr(p, ',');
        const char *end = e ? e : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if ((size_t)(b - a) == sl && sl > 0 &&
            (nocase ? strncasecmp(a, s, sl) : strncmp(a, s, sl)) == 0)
            return true;
        if (e == NULL)
            break;
        p = e + 1;
    }
    return false;
}

static const char *method_name(enum evhttp_cmd_type t)
{
    static const struct {
        enum evhttp_cmd_type t;
        const char *name;
    } names[] = {
        {EVHTTP_REQ_GET, "GET"},       {EVHTTP_REQ_POST, "POST"},
        {EVHTTP_REQ_HEAD, "HEAD"},     {EVHTTP_REQ_PUT, "PUT"},
        {EVHTTP_REQ_DELETE, "DELETE"}, {EVHTTP_REQ_OPTIONS, "OPTIONS"},
        {EVHTTP_REQ_TRACE, "TRACE"},   {EVHTTP_REQ_CONNECT, "CONNECT"},
        {EVHTTP_REQ_PATCH, "PATCH"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].t == t)
            return names[i].name;
    return "UNKNOWN";
}

static const char *reason(int status)
{
    static const struct {
        int code;
        const char *text;
    } reasons[] = {
        {200, "OK"},
        {201, "Created"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {422, "Unprocessable Entity"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
    };
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++)
        if (reasons[i].code == status)
            return reasons[i].text;
    return "Unknown";
}

/* ---------------------------------------------------------------------------------------- */
/* Replies */

static void reply_set(struct reply *rp, int status, cJSON *json)
{
    cJSON_Delete(rp->json);
    rp->status = status;
    rp->json = json;
}

/* The upstream's error shape; error may be NULL (most HighLevel errors carry none). */
static void reply_msg(struct reply *rp, int status, const char *message, const char *error)
{
    cJSON *o = cJSON_CreateObject();
    if (o != NULL && (cJSON_AddNumberToObject(o, "statusCode", status) == NULL ||
                      cJSON_AddStringToObject(o, "message", message) == NULL ||
                      (error && cJSON_AddStringToObject(o, "error", error) == NULL))) {
        cJSON_Delete(o);
        o = NULL;
    }
    reply_set(rp, status, o);
}

/* 422 with every violation collected; takes msgs. */
static void reply_422(struct reply *rp, cJSON *msgs)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddNumberToObject(o, "statusCode", 422) == NULL ||
        !cJSON_AddItemToObject(o, "message", msgs)) {
        cJSON_Delete(msgs); /* not attached to o */
        cJSON_Delete(o);
        reply_set(rp, 500, NULL);
        return;
    }
    if (cJSON_AddStringToObject(o, "error", "Unprocessable Entity") == NULL) {
        cJSON_Delete(o);
        o = NULL;
    }
    reply_set(rp, o ? 422 : 500, o);
}

static void reply_cannot(struct reply *rp, const char *method, const char *path)
{
    size_t n = strlen(method) + strlen(path) + 16;
    char *m = malloc(n);
    if (m == NULL) {
        reply_set(rp, 500, NULL);
        return;
    }
    snprintf(m, n, "Cannot %s %s", method, path);
    reply_msg(rp, 404, m, "Not Found");
    free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* Validation messages, class-validator style */

__attribute__((format(printf, 2, 3))) static void msg_add(cJSON *msgs, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        cJSON_AddItemToArray(msgs, cJSON_CreateString(small));
        return;
    }
    size_t cap = (size_t)n + 1 > MAX_MSG_BYTES ? MAX_MSG_BYTES : (size_t)n + 1;
    char *big = malloc(cap);
    if (big == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(big, cap, fmt, ap);
    va_end(ap);
    cJSON_AddItemToArray(msgs, cJSON_CreateString(big));
    free(big);
}

/* Request validation is the gateway's own (validate.c, schema.c): the sandbox answers what the
 * gateway would have refused the same way, so the demo and the tests see one behaviour. */
static void take_msgs(struct gw_msgs *m, cJSON *msgs)
{
    for (size_t i = 0; i < m->n; i++)
        cJSON_AddItemToArray(msgs, cJSON_CreateString(m->v[i]));
    gw_msgs_free(m);
}

/* Returns -1 when the body is not a JSON object (400); otherwise 0, with *out the parsed body
 * (caller frees) and every schema violation appended to msgs (422 if any). */
static int validate_body(const struct gw_op *op, const char *body, size_t len, cJSON **out,
                         cJSON *msgs)
{
    struct gw_json_opts o = {.max_bytes = MAX_BODY_BYTES, .max_depth = BODY_MAX_DEPTH};
    struct gw_json_error err;
    cJSON *j = gw_json_parse(body, len, &o, &err);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return -1;
    }
    struct gw_msgs m = {0};
    gw_schema_check(op->body_schema, j, &m);
    take_msgs(&m, msgs);
    *out = j;
    return 0;
}

static void validate_query(const struct gw_route *r, cJSON *msgs)
{
    struct gw_msgs m = {0};
    gw_validate_query(r, &m);
    take_msgs(&m, msgs);
}

/* ---------------------------------------------------------------------------------------- */
/* The document's response shapes */

/* The first 2xx application/json schema of op in the resolved document, and its status. */
static const cJSON *success_schema(const struct gw_openapi *m, const struct gw_op *op, int *status)
{
    char key[16];
    const char *mn = gw_method_name(op->method);
    size_t i = 0;
    for (; mn[i] && i + 1 < sizeof key; i++)
        key[i] = (char)(mn[i] | 0x20); /* ASCII letters: lower case */
    key[i] = '\0';
    const cJSON *o = member(member(member(m->doc, "paths"), op->path), key);
    const cJSON *r;
    cJSON_ArrayForEach(r, member(o, "responses"))
    {
        long code;
        if (parse_count(r->string, 599, &code) != 0 || code < 200 || code > 299)
            continue;
        *status = (int)code;
        return member(member(member(r, "content"), "application/json"), "schema");
    }
    *status = 200;
    return NULL;
}

/* Property list of a single-user answer (UserSuccessfulResponseDto). */
static const cJSON *user_props(const struct gw_openapi *m, const struct gw_op *op)
{
    int st;
    return member(success_schema(m, op, &st), "properties");
}

/* Property list of the items of a {"users":[...]} answer (UserSchema). */
static const cJSON *item_props(const struct gw_openapi *m, const struct gw_op *op)
{
    int st;
    const cJSON *users = member(member(success_schema(m, op, &st), "properties"), "users");
    return member(member(users, "items"), "properties");
}

static int success_status(const struct gw_openapi *m, const struct gw_op *op)
{
    int st;
    success_schema(m, op, &st);
    return st;
}

/* Default of a body property or a query parameter, as the document states it. */
static const char *schema_default(const cJSON *schema, const char *name)
{
    const cJSON *d = member(member(member(schema, "properties"), name), "default");
    return cJSON_IsString(d) ? d->valuestring : NULL;
}

static const char *query_default(const struct gw_op *op, const char *name)
{
    const struct gw_param *p = gw_op_param(op, GW_IN_QUERY, name);
    if (p == NULL)
        return NULL;
    const cJSON *d = member(p->schema, "default");
    return cJSON_IsString(d) ? d->valuestring : NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* User records */

/* Never returned, whatever a newer document lists. */
static bool hidden(const char *k)
{
    return strcmp(k, "password") == 0 || strcmp(k, "companyId") == 0;
}

static int random_id(char out[ID_LEN + 1])
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char b[64];
    size_t n = 0;
    while (n < ID_LEN) {
        if (RAND_bytes(b, sizeof b) != 1)
            return -1;
        /* 248 = 4 * 62: rejecting the rest keeps every character equally likely */
        for (size_t i = 0; i < sizeof b && n < ID_LEN; i++)
            if (b[i] < 248)
                out[n++] = alnum[b[i] % 62];
    }
    out[ID_LEN] = '\0';
    return 0;
}

static cJSON *default_permissions(const struct gw_openapi *m)
{
    cJSON *p = cJSON_CreateObject();
    for (size_t i = 0; p && i < m->nperms; i++)
        if (cJSON_AddBoolToObject(p, m->perms[i].name, m->perms[i].def) == NULL) {
            cJSON_Delete(p);
            return NULL;
        }
    return p;
}

/* A record with every member a created user has before the request's are applied. phone is
 * "" like extension so the shape is stable; platformLanguage and profilePhoto exist only once
 * set, as nothing documents a default for them. */
static cJSON *record_new(const struct gw_openapi *m, const char *id)
{
    static const char *const empty_strings[] = {"companyId", "name",  "firstName", "lastName",
                                                "email",     "phone", "extension", "password"};
    cJSON *r = cJSON_CreateObject();
    bool ok = r != NULL && cJSON_AddStringToObject(r, "id", id) != NULL;
    for (size_t i = 0; ok && i < sizeof empty_strings / sizeof *empty_strings; i++)
        ok = cJSON_AddStringToObject(r, empty_strings[i], "") != NULL;
    ok = ok && rset(r, "permissions", default_permissions(m)) == 0;
    ok = ok && cJSON_AddArrayToObject(r, "scopes") != NULL;
    ok = ok && cJSON_AddArrayToObject(r, "scopesAssignedToOnly") != NULL;
    cJSON *roles = ok ? cJSON_AddObjectToObject(r, "roles") : NULL;
    ok = roles != NULL && cJSON_AddStringToObject(roles, "type", "") != NULL &&
         cJSON_AddStringToObject(roles, "role", "") != NULL &&
         cJSON_AddArrayToObject(roles, "locationIds") != NULL &&
         cJSON_AddFalseToObject(roles, "restrictSubAccount") != NULL;
    ok = ok && cJSON_AddFalseToObject(r, "deleted") != NULL;
    ok = ok && cJSON_AddObjectToObject(r, "lcPhone") != NULL;
    if (!ok) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

static int record_rename(cJSON *r)
{
    const char *first = rstr(r, "firstName"), *last = rstr(r, "lastName");
    size_t n = strlen(first) + strlen(last) + 2;
    char *name = malloc(n);
    if (name == NULL)
        return -1;
    snprintf(name, n, "%s%s%s", first, *first && *last ? " " : "", last);
    int rc = rset(r, "name", cJSON_CreateString(name));
    free(name);
    return rc;
}

/* Permissions merge flag by flag: a flag not sent keeps its value. */
static int merge_flags(cJSON *rec, const cJSON *flags)
{
    cJSON *dst = cJSON_GetObjectItemCaseSensitive(rec, "permissions");
    const cJSON *f;
    cJSON_ArrayForEach(f, flags)
    {
        if (cJSON_IsBool(f) && rset(dst, f->string, cJSON_CreateBool(cJSON_IsTrue(f))) != 0)
            return -1;
    }
    return 0;
}

/* Body members that live in roles rather than at the top of the record. */
static bool is_role_key(const char *k)
{
    return strcmp(k, "type") == 0 || strcmp(k, "role") == 0 || strcmp(k, "locationIds") == 0;
}

/* Applies a validated create/update body to a record: members sent replace stored ones.
 * companyId is the user's tenancy, not an attribute: on update it only says which company
 * the agency acts for (UpdateUserDto), so it never moves a user. */
static int record_apply(cJSON *rec, const cJSON *body, bool creating)
{
    bool rename = false;
    const cJSON *m;
    cJSON_ArrayForEach(m, body)
    {
        const char *k = m->string;
        int rc = 0;
        if (cJSON_IsNull(m) || (!creating && strcmp(k, "companyId") == 0))
            continue;
        if (strcmp(k, "permissions") == 0)
            rc = merge_flags(rec, m);
        else if (is_role_key(k))
            rc = rset(cJSON_GetObjectItemCaseSensitive(rec, "roles"), k, cJSON_Duplicate(m, 1));
        else
            rc = rset(rec, k, cJSON_Duplicate(m, 1));
        if (rc != 0)
            return -1;
        rename |= strcmp(k, "firstName") == 0 || strcmp(k, "lastName") == 0;
    }
    return rename ? record_rename(rec) : 0;
}

/* A seed entry is in the stored shape already: roles and permissions overlay the defaults. */
static int record_seed(cJSON *rec, const cJSON *entry)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, entry)
    {
        const char *k = m->string;
        int rc = 0;
        if (cJSON_IsNull(m) || strcmp(k, "id") == 0)
            continue;
        if (strcmp(k, "permissions") == 0 && cJSON_IsObject(m)) {
            rc = merge_flags(rec, m);
            /* a flag seeded as null is left out of the user's answers, as an older record
             * may lack a flag added to the document later */
            const cJSON *f;
            cJSON_ArrayForEach(f, m)
            {
                if (cJSON_IsNull(f))
                    cJSON_DeleteItemFromObjectCaseSensitive(
                        cJSON_GetObjectItemCaseSensitive(rec, "permissions"), f->string);
            }
        } else if (strcmp(k, "roles") == 0 && cJSON_IsObject(m)) {
            cJSON *roles = cJSON_GetObjectItemCaseSensitive(rec, "roles");
            const cJSON *f;
            cJSON_ArrayForEach(f, m)
            {
                if (rc == 0)
                    rc = rset(roles, f->string, cJSON_Duplicate(f, 1));
            }
        } else {
            rc = rset(rec, k, cJSON_Duplicate(m, 1));
        }
        if (rc != 0)
            return -1;
    }
    return member(entry, "name") ? 0 : record_rename(rec);
}

/* The user as the document's schema shows it: its properties, in its order, those the record
 * has. props NULL (a document without the schema): every member but the hidden ones. */
static cJSON *user_view(const cJSON *rec, const cJSON *props)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *list = props ? props : rec, *p;
    cJSON_ArrayForEach(p, list)
    {
        const cJSON *v = member(rec, p->string);
        if (o == NULL || hidden(p->string) || v == NULL)
            continue;
        if (!cJSON_AddItemToObject(o, p->string, cJSON_Duplicate(v, 1))) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

/* filter-by-email's projection: absent -> id and email; "all" -> the whole item; otherwise
 * id plus the listed item properties (unknown names are skipped). */
static cJSON *user_projection(const cJSON *rec, const cJSON *props, const char *projection)
{
    if (projection != NULL && in_csv(projection, "all", false) && !strchr(projection, ','))
        return user_view(rec, props);
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || !cJSON_AddItemToObject(o, "id", cJSON_Duplicate(member(rec, "id"), 1)))
        goto bad;
    const char *list = projection ? projection : "email";
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char name[128];
        while (n > 0 && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n > 0 && n < sizeof name) {
            memcpy(name, p, n);
            name[n] = '\0';
            const cJSON *v = member(rec, name);
            if (v && !hidden(name) && (props == NULL || member(props, name)) &&
                !cJSON_GetObjectItemCaseSensitive(o, name) &&
                !cJSON_AddItemToObject(o, name, cJSON_Duplicate(v, 1)))
                goto bad;
        }
        if (e == NULL)
            break;
        p = e + 1;
    }
    return o;
bad:
    cJSON_Delete(o);
    return NULL;
}

static bool is_deleted(const struct user *u)
{
    return cJSON_IsTrue(member(u->rec, "deleted"));
}

/* The live (not deleted) user with that id, or NULL. */
static struct user *find_user(struct sandbox *sb, const char *id)
{
    for (size_t i = 0; i < sb->nusers; i++)
        if (!is_deleted(&sb->users[i]) && strcmp(rstr(sb->users[i].rec, "id"), id) == 0)
            return &sb->users[i];
    return NULL;
}

static bool id_taken(const struct sandbox *sb, const char *id)
{
    for (size_t i = 0; i < sb->nusers; i++)
        if (strcmp(rstr(sb->users[i].rec, "id"), id) == 0)
            return true;
    return false;
}

/* Takes rec. */
static int add_user(struct sandbox *sb, cJSON *rec)
{
    if (sb->nusers == sb->cap) {
        size_t ncap = sb->cap ? sb->cap * 2 : 64;
        struct user *nu = ncap <= MAX_USERS ? realloc(sb->users, ncap * sizeof *nu) : NULL;
        if (nu == NULL) {
            cJSON_Delete(rec);
            return -1;
        }
        sb->users = nu;
        sb->cap = ncap;
    }
    sb->users[sb->nusers++] = (struct user){.rec = rec, .seq = ++sb->seq};
    return 0;
}

static bool has_location(const cJSON *rec, const char *loc)
{
    const cJSON *e;
    const cJSON *ids = member(member(rec, "roles"), "locationIds");
    cJSON_ArrayForEach(e, ids)
    {
        if (cJSON_IsString(e) && strcmp(e->valuestring, loc) == 0)
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------------------------------- */
/* The seven operations */

static void reply_user(struct sandbox *sb, struct call *c, int status, const cJSON *rec)
{
    cJSON *o = user_view(rec, user_props(sb->model, c->op));
    reply_set(c->rp, o ? status : 500, o);
}

static void op_create_user(struct sandbox *sb, struct call *c)
{
    const char *company = rstr(c->body, "companyId"), *email = rstr(c->body, "email");
    for (size_t i = 0; i < sb->nusers; i++) {
        const struct user *u = &sb->users[i];
        if (!is_deleted(u) && strcmp(rstr(u->rec, "companyId"), company) == 0 &&
            strcasecmp(rstr(u->rec, "email"), email) == 0) {
            reply_msg(c->rp, 400, "User already exists", NULL);
            return;
        }
    }
    char id[ID_LEN + 1];
    do {
        if (random_id(id) != 0) {
            reply_msg(c->rp, 500, "Internal server error", NULL);
            return;
        }
    } while (id_taken(sb, id));
    cJSON *rec = record_new(sb->model, id);
    if (rec == NULL || record_apply(rec, c->body, true) != 0) {
        cJSON_Delete(rec);
        reply_msg(c->rp, 500, "Internal server error", NULL);
        return;
    }
    if (add_user(sb, rec) != 0) {
        reply_msg(c->rp, 500, "Internal server error", NULL);
        return;
    }
    reply_user(sb, c, success_status(sb->model, c->op), rec);
}

/* The path parameter of get/update/delete (its name comes from the template). */
static const char *path_id(const struct call *c)
{
    return c->route->npath > 0 ? c->route->pval[0] : "";
}

/* The document declares no 404 for the user ops and the upstream's answer for an unknown id
 * is undocumented (FACTS): answer as for any other bad request, 400 with a message. */
static struct user *user_or_400(struct sandbox *sb, struct call *c)
{
    struct user *u = find_user(sb, path_id(c));
    if (u == NULL)
        reply_msg(c->rp, 400, msg_not_found, NULL);
    return u;
}

static void op_get_user(struct sandbox *sb, struct call *c)
{
    struct user *u = user_or_400(sb, c);
    if (u)
        reply_user(sb, c, success_status(sb->model, c->op), u->rec);
}

static void op_update_user(struct sandbox *sb, struct call *c)
{
    struct user *u = user_or_400(sb, c);
    if (u == NULL)
        return;
    /* Apply to a copy so a failure half-way leaves the stored user as it was. */
    cJSON *copy = cJSON_Duplicate(u->rec, 1);
    if (copy == NULL || record_apply(copy, c->body, false) != 0) {
        cJSON_Delete(copy);
        reply_msg(c->rp, 500, "Internal server error", NULL);
        return;
    }
    cJSON_Delete(u->rec);
    u->rec = copy;
    reply_user(sb, c, success_status(sb->model, c->op), u->rec);
}

static void op_delete_user(struct sandbox *sb, struct call *c)
{
    struct user *u = user_or_400(sb, c);
    if (u == NULL)
        return;
    const char *email = rstr(u->rec, "email"), *name = rstr(u->rec, "name");
    size_t n = strlen(email) + strlen(name) + 128;
    char *msg = malloc(n);
    cJSON *o = cJSON_CreateObject();
    /* "succeded" is the upstream's own spelling (v2 DeleteUserSuccessfulResponseDto). */
    if (msg == NULL || o == NULL || cJSON_AddTrueToObject(o, "succeded") == NULL ||
        rset(u->rec, "deleted", cJSON_CreateTrue()) != 0) {
        free(msg);
        cJSON_Delete(o);
        reply_msg(c->rp, 500, "Internal server error", NULL);
        return;
    }
    snprintf(msg, n,
             "Queued deleting user with e-mail %s and name %s. Will take effect in a few minutes.",
             email, name);
    cJSON_AddStringToObject(o, "message", msg);
    free(msg);
    reply_set(c->rp, success_status(sb->model, c->op), o);
}

struct sortctx {
    const char *key; /* record member, or NULL for creation order */
    bool desc;
};

static int cmp_users(const void *a, const void *b, void *arg)
{
    const struct sortctx *s = arg;
    const struct user *x = *(const struct user *const *)a, *y = *(const struct user *const *)b;
    int c = 0;
    if (s->key) {
        c = strcasecmp(rstr(x->rec, s->key), rstr(y->rec, s->key));
        if (c == 0)
            c = strcmp(rstr(x->rec, s->key), rstr(y->rec, s->key));
    }
    if (c == 0)
        c = (x->seq > y->seq) - (x->seq < y->seq);
    return s->desc ? -c : c;
}

/* {"users":[items of v[skip..skip+limit)], "count":n} (count omitted when with_count false).
 * projection: for filter-by-email only (use_projection). */
static cJSON *user_page(struct user **v, size_t n, long skip, long limit, const cJSON *props,
                        bool with_count, bool use_projection, const char *projection)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "users") : NULL;
    if (arr == NULL)
        goto bad;
    for (size_t i = (size_t)skip; i < n && i - (size_t)skip < (size_t)limit; i++) {
        cJSON *item = use_projection ? user_projection(v[i]->rec, props, projection)
                                     : user_view(v[i]->rec, props);
        if (item == NULL || !cJSON_AddItemToArray(arr, item)) {
            cJSON_Delete(item);
            goto bad;
        }
    }
    if (with_count && cJSON_AddNumberToObject(o, "count", (double)n) == NULL)
        goto bad;
    return o;
bad:
    cJSON_Delete(o);
    return NULL;
}

/* skip and limit are decimal strings (FACTS: pagination); defaults from the document. */
static void parse_page(const char *skip_s, const char *limit_s, long *skip, long *limit,
                       cJSON *msgs)
{
    if (parse_count(skip_s ? skip_s : "0", INT_MAX, skip) != 0)
        msg_add(msgs, "skip must be a number string");
    if (parse_count(limit_s ? limit_s : "25", INT_MAX, limit) != 0)
        msg_add(msgs, "limit must be a number string");
}

static const struct {
    const char *name;
    const char *key;
} sort_keys[] = {
    {"dateAdded", NULL},        {"name", "name"},         {"email", "email"},
    {"firstName", "firstName"}, {"lastName", "lastName"},
};

static bool search_match(const struct user *u, const struct gw_route *r)
{
    const char *company = gw_route_query(r, "companyId"), *q = gw_route_query(r, "query");
    const char *loc = gw_route_query(r, "locationId"), *ids = gw_route_query(r, "ids");
    const char *type = gw_route_query(r, "type"), *role = gw_route_query(r, "role");
    const cJSON *roles = member(u->rec, "roles");
    if (is_deleted(u) || strcmp(rstr(u->rec, "companyId"), company ? company : "") != 0)
        return false;
    if (q && !strcasestr(rstr(u->rec, "name"), q) && !strcasestr(rstr(u->rec, "email"), q))
        return false;
    if (loc && !has_location(u->rec, loc))
        return false;
    if ((type && strcmp(rstr(roles, "type"), type) != 0) ||
        (role && strcmp(rstr(roles, "role"), role) != 0))
        return false;
    return ids == NULL || in_csv(ids, rstr(u->rec, "id"), false);
}

/* search-users' paging and sorting parameters; violations go to msgs. */
static void search_params(const struct call *c, long *skip, long *limit, struct sortctx *sc,
                          cJSON *msgs)
{
    const struct gw_route *r = c->route;
    const char *sort = gw_route_query(r, "sort"), *dir = gw_route_query(r, "sortDirection");
    const char *skip_s = gw_route_query(r, "skip"), *limit_s = gw_route_query(r, "limit");
    parse_page(skip_s ? skip_s : query_default(c->op, "skip"),
               limit_s ? limit_s : query_default(c->op, "limit"), skip, limit, msgs);
    bool sort_ok = sort == NULL;
    for (size_t i = 0; sort && i < sizeof sort_keys / sizeof *sort_keys; i++)
        if (strcmp(sort, sort_keys[i].name) == 0) {
            sc->key = sort_keys[i].key;
            sort_ok = true;
        }
    if (!sort_ok)
        msg_add(msgs, "sort must be one of the following values: dateAdded, name, email, "
                      "firstName, lastName");
    if (dir && strcmp(dir, "asc") != 0 && strcmp(dir, "desc") != 0)
        msg_add(msgs, "sortDirection must be one of the following values: asc, desc");
    sc->desc = dir && strcmp(dir, "desc") == 0;
}

static void op_search_users(struct sandbox *sb, struct call *c)
{
    cJSON *msgs = cJSON_CreateArray();
    long skip = 0, limit = 0;
    struct sortctx sc = {.key = NULL, .desc = false};
    if (msgs == NULL) {
        reply_set(c->rp, 500, NULL);
        return;
    }
    search_params(c, &skip, &limit, &sc, msgs);
    if (cJSON_GetArraySize(msgs) > 0) {
        reply_422(c->rp, msgs);
        return;
    }
    cJSON_Delete(msgs);
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of user pointers */
    struct user **v = malloc((sb->nusers + 1) * sizeof *v);
    if (v == NULL) {
        reply_set(c->rp, 500, NULL);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < sb->nusers; i++)
        if (search_match(&sb->users[i], c->route))
            v[n++] = &sb->users[i];
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): the elements are user pointers */
    qsort_r(v, n, sizeof *v, cmp_users, &sc);
    cJSON *o = user_page(v, n, skip, limit, item_props(sb->model, c->op), true, false, NULL);
    free(v);
    reply_set(c->rp, o ? success_status(sb->model, c->op) : 500, o);
}

static void op_filter_by_email(struct sandbox *sb, struct call *c)
{
    const cJSON *b = c->body, *schema = c->op->body_schema;
    const char *company = rstr(b, "companyId"), *emails = rstr(b, "emails");
    const cJSON *skip_j = member(b, "skip"), *limit_j = member(b, "limit");
    const cJSON *proj = member(b, "projection");
    bool want_deleted = cJSON_IsTrue(member(b, "deleted"));
    long skip = 0, limit = 0;
    cJSON *msgs = cJSON_CreateArray();
    if (msgs == NULL) {
        reply_set(c->rp, 500, NULL);
        return;
    }
    parse_page(cJSON_IsString(skip_j) ? skip_j->valuestring : schema_default(schema, "skip"),
               cJSON_IsString(limit_j) ? limit_j->valuestring : schema_default(schema, "limit"),
               &skip, &limit, msgs);
    if (cJSON_GetArraySize(msgs) > 0) {
        reply_422(c->rp, msgs);
        return;
    }
    cJSON_Delete(msgs);
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of user pointers */
    struct user **v = malloc((sb->nusers + 1) * sizeof *v);
    if (v == NULL) {
        reply_set(c->rp, 500, NULL);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < sb->nusers; i++) {
        struct user *u = &sb->users[i];
        if (is_deleted(u) == want_deleted && strcmp(rstr(u->rec, "companyId"), company) == 0 &&
            in_csv(emails, rstr(u->rec, "email"), true))
            v[n++] = u;
    }
    cJSON *o = user_page(v, n, skip, limit, item_props(sb->model, c->op), true, true,
                         cJSON_IsString(proj) ? proj->valuestring : NULL);
    free(v);
    reply_set(c->rp, o ? success_status(sb->model, c->op) : 500, o);
}

static void op_get_user_by_location(struct sandbox *sb, struct call *c)
{
    const char *loc = gw_route_query(c->route, "locationId");
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of user pointers */
    struct user **v = malloc((sb->nusers + 1) * sizeof *v);
    if (v == NULL) {
        reply_set(c->rp, 500, NULL);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < sb->nusers; i++)
        if (!is_deleted(&sb->users[i]) && has_location(sb->users[i].rec, loc ? loc : ""))
            v[n++] = &sb->users[i];
    cJSON *o = user_page(v, n, 0, LONG_MAX, item_props(sb->model, c->op), false, false, NULL);
    free(v);
    reply_set(c->rp, o ? success_status(sb->model, c->op) : 500, o);
}

typedef void (*op_fn)(struct sandbox *, struct call *);

static const struct {
    const char *id;
    op_fn fn;
} op_table[] = {
    {"create-user", op_create_user},
    {"get-user", op_get_user},
    {"update-user", op_update_user},
    {"delete-user", op_delete_user},
    {"search-users", op_search_users},
    {"filter-users-by-email", op_filter_by_email},
    {"get-user-by-location", op_get_user_by_location},
};

/* ---------------------------------------------------------------------------------------- */
/* Version and token checks */

/* 0 when the Version header is one the document accepts, else -1 with the 401 set. */
static int check_version(const struct sandbox *sb, struct evhttp_request *req, struct reply *rp)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), "Version");
    if (v == NULL) {
        reply_msg(rp, 401, "version header was not found.", NULL);
        return -1;
    }
    for (size_t i = 0; i < sb->model->nversions; i++)
        if (strcmp(v, sb->model->versions[i]) == 0)
            return 0;
    if (sb->model->nversions == 0)
        return 0;
    reply_msg(rp, 401, "version header is invalid", NULL);
    return -1;
}

static bool token_is(const struct token *t, const char *s, size_t len)
{
    return t->value != NULL && t->len == len && CRYPTO_memcmp(t->value, s, len) == 0;
}

static bool op_allows_location(const struct gw_op *op)
{
    for (size_t i = 0; i < op->nsec; i++)
        if (strncmp(op->sec[i].scheme, "Location-Access", 15) == 0)
            return true;
    return false;
}

/* The request's bearer token and its length, or NULL when it carries none. */
static const char *bearer(struct evhttp_request *req, size_t *len)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0 || h[7] == '\0')
        return NULL;
    *len = strlen(h + 7);
    return h + 7;
}

/* 0 when the bearer token may call op, else -1 with the upstream's 401/403 set. */
static int check_auth(const struct sandbox *sb, struct evhttp_request *req, const struct gw_op *op,
                      const struct gw_route *r, struct reply *rp)
{
    size_t len = 0;
    const char *tok = bearer(req, &len);
    if (tok == NULL) {
        reply_msg(rp, 401, msg_bad_token, "Unauthorized");
        return -1;
    }
    bool agency = token_is(&sb->agency, tok, len);
    bool some_location = false;
    for (size_t i = 0; i < sb->nlocs; i++)
        some_location |= token_is(&sb->locs[i], tok, len);
    if (!agency && !some_location) {
        reply_msg(rp, 401, msg_bad_token, "Unauthorized");
        return -1;
    }
    if (op->cred == GW_CRED_LOCATION) {
        const char *want = gw_route_query(r, "locationId");
        for (size_t i = 0; want && i < sb->nlocs; i++)
            if (strcmp(sb->locs[i].location, want) == 0 && token_is(&sb->locs[i], tok, len))
                return 0;
        if (agency) {
            reply_msg(rp, 401, msg_iam, NULL);
            return -1;
        }
        if (want == NULL || want[0] == '\0')
            return 0; /* validation answers 422 for the missing locationId */
        reply_msg(rp, 403, "The token does not have access to this location.", NULL);
        return -1;
    }
    if (agency || op_allows_location(op))
        return 0;
    reply_msg(rp, 401, msg_iam, NULL);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* --rate-limit: HighLevel's burst limit, one bucket per token */

/* The bucket of the token the request carries: the first of the sandbox's tokens with that
 * value (the agency's, then the locations' in order), so a value given twice has one bucket.
 * NULL when the request carries none of them: an unknown credential has no bucket to spend. */
static struct token *bucket_of(struct sandbox *sb, struct evhttp_request *req)
{
    size_t len = 0;
    const char *tok = bearer(req, &len);
    if (tok == NULL)
        return NULL;
    if (token_is(&sb->agency, tok, len))
        return &sb->agency;
    for (size_t i = 0; i < sb->nlocs; i++)
        if (token_is(&sb->locs[i], tok, len))
            return &sb->locs[i];
    return NULL;
}

/* Spends one cell of t's bucket (GCRA on the monotonic clock). Returns true when the request
 * may go on, with *remaining the whole cells left; false when the bucket is empty, with
 * *retry_s the seconds (rounded up) until a cell is back. A refusal spends nothing, so a
 * caller that keeps knocking is not locked out for longer. */
static bool rl_spend(const struct sandbox *sb, struct token *t, long *remaining, long *retry_s)
{
    int64_t now = now_ns();
    int64_t tat = t->tat_ns > now ? t->tat_ns : now;
    int64_t ahead = tat + sb->rl_cell_ns - now; /* how far the bucket would run ahead of now */
    if (ahead > sb->rl_tau_ns) {
        *remaining = 0;
        *retry_s = (long)((ahead - sb->rl_tau_ns + NS_PER_S - 1) / NS_PER_S);
        return false;
    }
    t->tat_ns = tat + sb->rl_cell_ns;
    *remaining = (long)((sb->rl_tau_ns - ahead) / sb->rl_cell_ns);
    return true;
}

/* 0 when the request may be answered (always, without --rate-limit), else -1 with the 429
 * set. Sets p's burst headers either way. */
static int check_rate(struct sandbox *sb, struct evhttp_request *req, struct pending *p,
                      struct reply *rp)
{
    if (sb->rl_burst == 0)
        return 0;
    struct token *t = bucket_of(sb, req);
    if (t == NULL) {
        p->no_burst = true;
        return 0;
    }
    if (rl_spend(sb, t, &p->burst_left, &p->retry_after))
        return 0;
    /* The upstream's 429 body is documented nowhere (FACTS): the shape of its other errors. */
    reply_msg(rp, 429, "Too Many Requests", NULL);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Request handling */

static void dispatch(struct sandbox *sb, const struct gw_op *op, const struct gw_route *r,
                     const char *body, size_t blen, struct reply *rp)
{
    cJSON *msgs = cJSON_CreateArray(), *json = NULL;
    if (msgs == NULL) {
        reply_set(rp, 500, NULL);
        return;
    }
    if (op->body_schema && validate_body(op, body, blen, &json, msgs) != 0) {
        cJSON_Delete(msgs);
        reply_msg(rp, 400, "Bad Request", NULL);
        return;
    }
    validate_query(r, msgs);
    if (cJSON_GetArraySize(msgs) > 0) {
        cJSON_Delete(json);
        reply_422(rp, msgs);
        return;
    }
    cJSON_Delete(msgs);
    struct call c = {.op = op, .route = r, .body = json, .rp = rp};
    bool done = false;
    for (size_t i = 0; i < sizeof op_table / sizeof *op_table && !done; i++)
        if (strcmp(op_table[i].id, op->id) == 0) {
            op_table[i].fn(sb, &c);
            done = true;
        }
    if (!done) /* an op a newer document added and the sandbox does not emulate */
        reply_msg(rp, 501, "Not Implemented", NULL);
    cJSON_Delete(json);
}

static void handle(struct sandbox *sb, struct evhttp_request *req, const char *method,
                   const char *body, size_t blen, struct reply *rp)
{
    struct gw_route r;
    char why[128];
    const char *uri = evhttp_request_get_uri(req) ? evhttp_request_get_uri(req) : "";
    enum gw_route_result rr = gw_route_match(sb->model, method, uri, &r, why, sizeof why);
    if (rr == GW_ROUTE_BAD_TARGET) {
        reply_msg(rp, 400, "Bad Request", NULL);
    } else if (rr == GW_ROUTE_NOT_FOUND) {
        reply_cannot(rp, method, r.path ? r.path : uri);
    } else if (check_version(sb, req, rp) == 0 && check_auth(sb, req, r.op, &r, rp) == 0) {
        dispatch(sb, r.op, &r, body, blen, rp);
    }
    gw_route_free(&r);
}

/* Body bytes as a JSON string: gw_json_append_string stops at NUL, so NULs are written as
 * \u0000 between the pieces. */
static void journal_bytes(struct evbuffer *out, const char *s, size_t len)
{
    evbuffer_add(out, "\"", 1);
    size_t off = 0;
    for (;;) {
        struct evbuffer *tmp = evbuffer_new();
        if (tmp == NULL)
            break;
        gw_json_append_string(tmp, s + off);
        size_t tl = evbuffer_get_length(tmp);
        if (tl >= 2) {
            evbuffer_drain(tmp, 1);
            evbuffer_remove_buffer(tmp, out, tl - 2);
        }
        evbuffer_free(tmp);
        off += strlen(s + off);
        if (off >= len)
            break;
        evbuffer_add(out, "\\u0000", 6);
        off++;
    }
    evbuffer_add(out, "\"", 1);
}

/* One JSON line per request received, written before its answer is sent and flushed at once,
 * so a test can read it as soon as it has the response. ts: when the request arrived; body is
 * NUL-terminated at blen; status: the answer's, 0 for a connection closed without one (null in
 * the line). */
static void journal_request(struct sandbox *sb, struct evhttp_request *req, const char *ts,
                            const char *method, const char *body, size_t blen, int status)
{
    if (sb->journal == NULL)
        return;
    struct evbuffer *b = evbuffer_new();
    const char *uri = evhttp_request_get_uri(req) ? evhttp_request_get_uri(req) : "";
    const char *q = strchr(uri, '?');
    char *path = strndup(uri, q ? (size_t)(q - uri) : strlen(uri));
    if (b == NULL || path == NULL) {
        evbuffer_free(b);
        free(path);
        return;
    }
    evbuffer_add_printf(b, "{\"ts\":\"%s\",\"method\":", ts);
    gw_json_append_string(b, method);
    evbuffer_add_printf(b, ",\"path\":");
    gw_json_append_string(b, path);
    evbuffer_add_printf(b, ",\"query\":");
    gw_json_append_string(b, q ? q + 1 : "");
    evbuffer_add_printf(b, ",\"headers\":[");
    const struct evkeyvalq *hs = evhttp_request_get_input_headers(req);
    for (const struct evkeyval *kv = hs->tqh_first; kv; kv = kv->next.tqe_next) {
        evbuffer_add_printf(b, "%s[", kv == hs->tqh_first ? "" : ",");
        gw_json_append_string(b, kv->key);
        evbuffer_add(b, ",", 1);
        gw_json_append_string(b, kv->value);
        evbuffer_add(b, "]", 1);
    }
    evbuffer_add_printf(b, "],\"body\":");
    if (blen == 0)
        evbuffer_add_printf(b, "null");
    else
        journal_bytes(b, body, blen);
    if (status == 0)
        evbuffer_add_printf(b, ",\"status\":null}\n");
    else
        evbuffer_add_printf(b, ",\"status\":%d}\n", status);
    size_t n = evbuffer_get_length(b);
    const unsigned char *line = evbuffer_pullup(b, -1);
    if ((line == NULL || fwrite(line, 1, n, sb->journal) != n || fflush(sb->journal) != 0) &&
        !sb->journal_failed) {
        fprintf(stderr, "ghl-sandbox: writing the journal %s failed: %s\n", sb->journal_path,
                strerror(errno));
        sb->journal_failed = true;
    }
    evbuffer_free(b);
    free(path);
}

/* The daily count, and the burst headers' values without --rate-limit: fixed 10 s windows,
 * counted, never enforced (check_rate replaces the burst values when the option is given). */
static void count_request(struct sandbox *sb, struct pending *p)
{
    int64_t now = now_ms();
    sb->nreq++;
    if (sb->window_count == 0 || now - sb->window_start_ms >= BURST_WINDOW_MS) {
        sb->window_start_ms = now;
        sb->window_count = 0;
    }
    sb->window_count++;
    long used = sb->nreq > (unsigned long)DAILY_LIMIT ? DAILY_LIMIT : (long)sb->nreq;
    p->daily_left = DAILY_LIMIT - used;
    p->burst_left = sb->window_count >= BURST_LIMIT ? 0 : BURST_LIMIT - sb->window_count;
}

static void pending_unlink(struct pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else if (p->sb->pending == p)
        p->sb->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

static void pending_free(struct pending *p)
{
    if (p->timer)
        event_free(p->timer);
    if (p->body)
        evbuffer_free(p->body);
    free(p);
}

/* A request whose client went away while it waited has been detached from its connection by
 * evhttp and is ours to free; otherwise freeing the connection frees it. */
static void drop_request(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn)
        evhttp_connection_free(conn);
    else
        evhttp_request_free(req);
}

static void send_pending(struct pending *p)
{
    if (p->status == 0) {
        drop_request(p->req);
        return;
    }
    const struct sandbox *sb = p->sb;
    struct evkeyvalq *h = evhttp_request_get_output_headers(p->req);
    char v[32];
    evhttp_add_header(h, "Content-Type", "application/json; charset=utf-8");
    snprintf(v, sizeof v, "%ld", DAILY_LIMIT);
    evhttp_add_header(h, "X-RateLimit-Limit-Daily", v);
    snprintf(v, sizeof v, "%ld", p->daily_left);
    evhttp_add_header(h, "X-RateLimit-Daily-Remaining", v);
    if (!p->no_burst) {
        snprintf(v, sizeof v, "%ld", sb->rl_burst ? sb->rl_seconds * 1000 : BURST_WINDOW_MS);
        evhttp_add_header(h, "X-RateLimit-Interval-Milliseconds", v);
        snprintf(v, sizeof v, "%ld", sb->rl_burst ? sb->rl_burst : BURST_LIMIT);
        evhttp_add_header(h, "X-RateLimit-Max", v);
        snprintf(v, sizeof v, "%ld", p->burst_left);
        evhttp_add_header(h, "X-RateLimit-Remaining", v);
    }
    if (p->retry_after > 0) {
        snprintf(v, sizeof v, "%ld", p->retry_after);
        evhttp_add_header(h, "Retry-After", v);
    }
    evhttp_send_reply(p->req, p->status, reason(p->status), p->body);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pending *p = arg;
    pending_unlink(p);
    send_pending(p);
    pending_free(p);
}

/* Sends now, or after --delay-ms. Drops always go through a timer so the connection is never
 * freed from inside evhttp's own callback. */
static void finish(struct sandbox *sb, struct pending *p)
{
    if (sb->delay_ms == 0 && p->status != 0) {
        send_pending(p);
        pending_free(p);
        return;
    }
    struct timeval tv = {.tv_sec = sb->delay_ms / 1000, .tv_usec = (sb->delay_ms % 1000) * 1000};
    p->timer = evtimer_new(sb->base, on_timer, p);
    if (p->timer == NULL || evtimer_add(p->timer, &tv) != 0) {
        send_pending(p); /* better early than never */
        pending_free(p);
        return;
    }
    p->next = sb->pending;
    if (sb->pending)
        sb->pending->prev = p;
    sb->pending = p;
}

static int serialize(struct reply *rp, struct pending *p)
{
    static const char oom[] = "{\"statusCode\":500,\"message\":\"Internal server error\"}";
    char *s = rp->json ? cJSON_PrintUnformatted(rp->json) : NULL;
    p->body = evbuffer_new();
    if (p->body == NULL) {
        cJSON_free(s);
        return -1;
    }
    p->status = s ? rp->status : 500;
    evbuffer_add(p->body, s ? s : oom, s ? strlen(s) : sizeof oom - 1);
    cJSON_free(s);
    return 0;
}

/* Plaintext on the TLS port happens only if the bevcb failed (evhttp then serves cleartext):
 * never answer it. */
static bool transport_ok(const struct sandbox *sb, struct evhttp_request *req)
{
    if (sb->ssl == NULL)
        return true;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    return bev != NULL && bufferevent_openssl_get_ssl(bev) != NULL;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct sandbox *sb = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t blen = evbuffer_get_length(in);
    char *body = malloc(blen + 1);
    struct pending *p = calloc(1, sizeof *p);
    if (body == NULL || p == NULL) {
        free(body);
        free(p);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_copyout(in, body, blen);
    body[blen] = '\0';
    char ts[64];
    iso_now(ts, sizeof ts);
    const char *method = method_name(evhttp_request_get_command(req));
    count_request(sb, p);
    p->sb = sb;
    p->req = req;
    struct reply rp = {.status = 500, .json = NULL};
    bool drop = !transport_ok(sb, req) ||
                (sb->drop_every > 0 && sb->nreq % (unsigned long)sb->drop_every == 0);
    if (!drop) {
        if (check_rate(sb, req, p, &rp) == 0) {
            if (sb->fail_every > 0 && sb->nreq % (unsigned long)sb->fail_every == 0)
                reply_msg(&rp, 500, "Internal server error", NULL);
            else
                handle(sb, req, method, body, blen, &rp);
        }
        if (serialize(&rp, p) != 0)
            drop = true;
    }
    cJSON_Delete(rp.json);
    if (drop)
        p->status = 0;
    journal_request(sb, req, ts, method, body, blen, p->status);
    free(body);
    finish(sb, p);
}

/* ---------------------------------------------------------------------------------------- */
/* Setup: tokens, seed, TLS, listener */

/* The whole file minus one trailing newline. Returns 0, or -1 with err set. */
static int load_token(const char *path, struct token *t, char *err, size_t errlen)
{
    size_t n;
    char *s = gw_read_file(path, MAX_TOKEN_BYTES, &n);
    if (s == NULL) {
        snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
        return -1;
    }
    if (n > 0 && s[n - 1] == '\n')
        n--;
    if (n > 0 && s[n - 1] == '\r')
        n--;
    s[n] = '\0';
    const char *bad = n == 0 ? "is empty" : NULL;
    for (size_t i = 0; i < n && bad == NULL; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7F)
            bad = "holds whitespace or control characters (a bearer token cannot)";
    if (bad) {
        snprintf(err, errlen, "token file %s %s", path, bad);
        OPENSSL_cleanse(s, n);
        free(s);
        return -1;
    }
    t->value = s;
    t->len = n;
    return 0;
}

static void token_free(struct token *t)
{
    if (t->value) {
        OPENSSL_cleanse(t->value, t->len);
        free(t->value);
    }
    free(t->location);
    memset(t, 0, sizeof *t);
}

static int load_location_tokens(struct sandbox *sb, const struct opts *o, char *err, size_t errlen)
{
    for (size_t i = 0; i < o->nloc; i++) {
        const char *a = o->loc_arg[i], *eq = strchr(a, '=');
        struct token *t = &sb->locs[sb->nlocs];
        t->location = strndup(a, (size_t)(eq - a));
        if (t->location == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        sb->nlocs++;
        if (load_token(eq + 1, t, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int seed_fail(char *err, size_t errlen, const char *path, int idx, const char *what)
{
    snprintf(err, errlen, "seed %s: entry [%d]: %s", path, idx, what);
    return -1;
}

static bool seed_member_ok(const cJSON *entry, const char *k)
{
    const cJSON *v = member(entry, k);
    return v == NULL || cJSON_IsNull(v) || cJSON_IsObject(v);
}

static int load_seed(struct sandbox *sb, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *buf = gw_read_file(path, MAX_SEED_BYTES, &len);
    if (buf == NULL) {
        snprintf(err, errlen, "seed %s: %s", path, strerror(errno));
        return -1;
    }
    struct gw_json_error je;
    struct gw_json_opts jo = {.max_depth = 64};
    cJSON *doc = gw_json_parse(buf, len, &jo, &je);
    free(buf);
    if (!cJSON_IsArray(doc)) {
        snprintf(err, errlen, "seed %s:%d: %s", path, doc ? 1 : je.line,
                 doc ? "not a JSON array of users" : je.msg);
        cJSON_Delete(doc);
        return -1;
    }
    int idx = 0, rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, doc)
    {
        const cJSON *id = member(e, "id");
        char what[160];
        if (!cJSON_IsObject(e))
            rc = seed_fail(err, errlen, path, idx, "not an object");
        else if (!cJSON_IsString(id) || !id_chars(id->valuestring))
            rc = seed_fail(err, errlen, path, idx, "\"id\" missing or not 1-64 letters/digits");
        else if (!seed_member_ok(e, "permissions") || !seed_member_ok(e, "roles"))
            rc = seed_fail(err, errlen, path, idx, "\"permissions\" and \"roles\" are objects");
        else if (id_taken(sb, id->valuestring)) {
            snprintf(what, sizeof what, "duplicate id \"%s\"", id->valuestring);
            rc = seed_fail(err, errlen, path, idx, what);
        }
        if (rc != 0)
            break;
        cJSON *rec = record_new(sb->model, id->valuestring);
        if (rec == NULL || record_seed(rec, e) != 0) {
            cJSON_Delete(rec);
            rc = seed_fail(err, errlen, path, idx, "out of memory");
            break;
        }
        if (add_user(sb, rec) != 0) { /* add_user has freed rec */
            rc = seed_fail(err, errlen, path, idx, "too many users or out of memory");
            break;
        }
        idx++;
    }
    cJSON_Delete(doc);
    return rc;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "\x08http/1.1";
    if (SSL_select_next_proto((unsigned char **)out, outlen, h11, sizeof h11 - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK; /* no ALPN then, as for a client that offers none */
}

static int ssl_fail(char *err, size_t errlen, const char *what, const char *file)
{
    char e[256] = "unknown error";
    unsigned long code = ERR_get_error();
    if (code)
        ERR_error_string_n(code, e, sizeof e);
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, file ? file : "", e);
    return -1;
}

static int tls_setup(struct sandbox *sb, const char *cert, const char *key, char *err,
                     size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (c == NULL)
        return ssl_fail(err, errlen, "SSL_CTX_new", NULL);
    sb->ssl = c;
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1)
        return ssl_fail(err, errlen, "certificate", cert);
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1)
        return ssl_fail(err, errlen, "private key", key);
    if (SSL_CTX_check_private_key(c) != 1)
        return ssl_fail(err, errlen, "key does not match the certificate", key);
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(c, alpn_select, NULL);
    SSL_CTX_set_session_id_context(c, (const unsigned char *)"ghl-sandbox", 11);
    return 0;
}

/* One SSL per connection; the bev must have fd -1 (evhttp sets it) and CLOSE_ON_FREE so
 * SSL_free runs with the connection (research notes a). */
static struct bufferevent *tls_bevcb(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);
    if (ssl == NULL)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        SSL_free(ssl);
    return bev;
}

/* "HOST:PORT" or "[V6]:PORT" into host and port. */
static int split_listen(const char *a, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *hb = a, *he, *colon;
    if (a[0] == '[') {
        hb = a + 1;
        he = strchr(a, ']');
        if (he == NULL || he[1] != ':')
            return -1;
        colon = he + 1;
    } else {
        colon = strrchr(a, ':');
        he = colon;
        if (colon == NULL || memchr(a, ':', (size_t)(colon - a)) != NULL)
            return -1; /* a bare IPv6 address needs brackets */
    }
    long pn;
    if ((size_t)(he - hb) == 0 || (size_t)(he - hb) >= hostlen ||
        parse_count(colon + 1, 65535, &pn) != 0 || strlen(colon + 1) >= portlen)
        return -1;
    snprintf(host, hostlen, "%.*s", (int)(he - hb), hb);
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

static int listen_on(struct sandbox *sb, const char *addr, char *err, size_t errlen)
{
    char host[256], port[16];
    if (split_listen(addr, host, sizeof host, port, sizeof port) != 0) {
        snprintf(err, errlen, "--listen %s: expected ADDR:PORT", addr);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "--listen %s: %s", addr, gai_strerror(gai));
        return -1;
    }
    struct evconnlistener *lev = evconnlistener_new_bind(
        sb->base, NULL, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        128, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (lev == NULL) {
        snprintf(err, errlen, "--listen %s: %s", addr, strerror(errno));
        return -1;
    }
    if (evhttp_bind_listener(sb->http, lev) == NULL) {
        evconnlistener_free(lev);
        snprintf(err, errlen, "--listen %s: cannot bind evhttp", addr);
        return -1;
    }
    struct sockaddr_storage ss = {0}; /* the analyzer does not see getsockname() fill it */
    socklen_t sl = sizeof ss;
    char h[NI_MAXHOST], s[NI_MAXSERV];
    if (getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&ss, &sl) != 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, s, sizeof s,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(err, errlen, "--listen %s: cannot read the bound address", addr);
        return -1;
    }
    /* The tests parse this line for the real port. */
    printf(ss.ss_family == AF_INET6 ? "ghl-sandbox listening on [%s]:%s\n"
                                    : "ghl-sandbox listening on %s:%s\n",
           h, s);
    fflush(stdout);
    return 0;
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static int server_setup(struct sandbox *sb, const struct opts *o, char *err, size_t errlen)
{
    sb->base = event_base_new();
    sb->http = sb->base ? evhttp_new(sb->base) : NULL;
    if (sb->http == NULL) {
        snprintf(err, errlen, "cannot create the event loop");
        return -1;
    }
    evhttp_set_max_headers_size(sb->http, MAX_HEADERS_BYTES);
    evhttp_set_max_body_size(sb->http, MAX_BODY_BYTES);
    /* PATCH and OPTIONS reach the handler so they get the upstream's 404, not evhttp's 501. */
    evhttp_set_allowed_methods(sb->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                             EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
                                             EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(sb->http, on_request, sb);
    if (o->cert) {
        if (tls_setup(sb, o->cert, o->key, err, errlen) != 0)
            return -1;
        evhttp_set_bevcb(sb->http, tls_bevcb, sb->ssl);
    }
    sb->sigterm = evsignal_new(sb->base, SIGTERM, on_signal, sb->base);
    sb->sigint = evsignal_new(sb->base, SIGINT, on_signal, sb->base);
    if (sb->sigterm == NULL || sb->sigint == NULL || evsignal_add(sb->sigterm, NULL) != 0 ||
        evsignal_add(sb->sigint, NULL) != 0) {
        snprintf(err, errlen, "cannot install signal handlers");
        return -1;
    }
    return listen_on(sb, o->listen, err, errlen);
}

static void sandbox_free(struct sandbox *sb)
{
    struct pending *p = sb->pending;
    while (p) {
        struct pending *next = p->next;
        pending_unlink(p);
        if (evhttp_request_get_connection(p->req) == NULL)
            evhttp_request_free(p->req); /* detached: evhttp_free would not see it */
        pending_free(p);
        p = next;
    }
    if (sb->http)
        evhttp_free(sb->http);
    if (sb->sigterm)
        event_free(sb->sigterm);
    if (sb->sigint)
        event_free(sb->sigint);
    if (sb->base)
        event_base_free(sb->base);
    SSL_CTX_free(sb->ssl);
    for (size_t i = 0; i < sb->nusers; i++)
        cJSON_Delete(sb->users[i].rec);
    free(sb->users);
    token_free(&sb->agency);
    for (size_t i = 0; i < sb->nlocs; i++)
        token_free(&sb->locs[i]);
    if (sb->journal)
        fclose(sb->journal);
    gw_openapi_free(sb->model);
    free(sb);
}

/* ---------------------------------------------------------------------------------------- */
/* Command line */

/* Reports a usage error. parse_opts returns the 2 itself: the analyzer does not follow a
 * variadic call, and would take its result for a possible 0 (options accepted). */
__attribute__((format(printf, 1, 2))) static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ghl-sandbox: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n" USAGE);
    va_end(ap);
}

/* --rate-limit BURST/SECONDS, each part a plain decimal in its range. Returns 0, or -1 after
 * reporting the usage error. */
static int parse_rate_limit(const char *arg, struct opts *o)
{
    const char *slash = strchr(arg, '/');
    char burst[16];
    if (slash == NULL) {
        usage_error("--rate-limit %s: expected BURST/SECONDS, e.g. 100/10", arg);
        return -1;
    }
    size_t blen = (size_t)(slash - arg);
    if (blen < sizeof burst)
        snprintf(burst, sizeof burst, "%.*s", (int)blen, arg);
    if (blen >= sizeof burst || parse_count(burst, MAX_RL_BURST, &o->rl_burst) != 0 ||
        o->rl_burst < 1) {
        usage_error("--rate-limit %s: BURST must be a whole number from 1 to %ld", arg,
                    MAX_RL_BURST);
        return -1;
    }
    if (parse_count(slash + 1, MAX_RL_SECONDS, &o->rl_seconds) != 0 || o->rl_seconds < 1) {
        usage_error("--rate-limit %s: SECONDS must be a whole number from 1 to %ld", arg,
                    MAX_RL_SECONDS);
        return -1;
    }
    return 0;
}

/* Returns 0, 1 after --help, or 2 after a usage error (already reported). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum {
        O_CERT = 256,
        O_KEY,
        O_AGENCY,
        O_LOC,
        O_SEED,
        O_JOURNAL,
        O_DELAY,
        O_FAIL,
        O_DROP,
        O_RATE,
        O_OPENAPI,
        O_HELP,
        O_LISTEN
    };
    static const struct option longs[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"agency-token-file", required_argument, NULL, O_AGENCY},
        {"location-token", required_argument, NULL, O_LOC},
        {"seed", required_argument, NULL, O_SEED},
        {"journal", required_argument, NULL, O_JOURNAL},
        {"delay-ms", required_argument, NULL, O_DELAY},
        {"fail-every", required_argument, NULL, O_FAIL},
        {"drop-every", required_argument, NULL, O_DROP},
        {"rate-limit", required_argument, NULL, O_RATE},
        {"openapi", required_argument, NULL, O_OPENAPI},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case O_LISTEN:
            o->listen = optarg;
            break;
        case O_CERT:
            o->cert = optarg;
            break;
        case O_KEY:
            o->key = optarg;
            break;
        case O_AGENCY:
            o->agency_file = optarg;
            break;
        case O_SEED:
            o->seed = optarg;
            break;
        case O_JOURNAL:
            o->journal = optarg;
            break;
        case O_OPENAPI:
            o->openapi = optarg;
            break;
        case O_HELP:
            fputs(USAGE, stdout);
            return 1;
        case O_LOC: {
            const char *eq = strchr(optarg, '=');
            if (eq == NULL || eq == optarg || eq[1] == '\0') {
                usage_error("--location-token %s: expected LOCATIONID=FILE", optarg);
                return 2;
            }
            for (size_t i = 0; i < o->nloc; i++)
                if (strncmp(o->loc_arg[i], optarg, (size_t)(eq - optarg) + 1) == 0) {
                    usage_error("--location-token %s: location given twice", optarg);
                    return 2;
                }
            if (o->nloc == MAX_LOCATION_TOKENS) {
                usage_error("--location-token %s: too many locations", optarg);
                return 2;
            }
            o->loc_arg[o->nloc++] = optarg;
            break;
        }
        case O_DELAY:
        case O_FAIL:
        case O_DROP: {
            long *dst = c == O_DELAY ? &o->delay_ms : c == O_FAIL ? &o->fail_every : &o->drop_every;
            if (parse_count(optarg, c == O_DELAY ? MAX_DELAY_MS : INT_MAX, dst) != 0) {
                usage_error("bad number \"%s\"", optarg);
                return 2;
            }
            break;
        }
        case O_RATE:
            if (parse_rate_limit(optarg, o) != 0)
                return 2;
            break;
        default:
            usage_error("unknown or incomplete option %s", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument %s", argv[optind]);
        return 2;
    }
    if (o->listen == NULL || o->agency_file == NULL) {
        usage_error("%s", "--listen and --agency-token-file are required");
        return 2;
    }
    if ((o->cert == NULL) != (o->key == NULL)) {
        usage_error("%s", "--cert and --key go together");
        return 2;
    }
    char host[256], port[16];
    if (split_listen(o->listen, host, sizeof host, port, sizeof port) != 0) {
        usage_error("--listen %s: expected ADDR:PORT or [IPV6]:PORT", o->listen);
        return 2;
    }
    return 0;
}

static int setup(struct sandbox *sb, const struct opts *o, char *err, size_t errlen)
{
    const char *doc = o->openapi ? o->openapi : gw_openapi_default_path();
    if (gw_openapi_load(doc, &sb->model, err, errlen) != 0)
        return -1;
    if (load_token(o->agency_file, &sb->agency, err, errlen) != 0 ||
        load_location_tokens(sb, o, err, errlen) != 0)
        return -1;
    if (o->seed && load_seed(sb, o->seed, err, errlen) != 0)
        return -1;
    sb->delay_ms = o->delay_ms;
    sb->fail_every = o->fail_every;
    sb->drop_every = o->drop_every;
    if (o->rl_burst > 0) {
        /* The cell rounded up, so a full burst never refills faster than SECONDS. */
        int64_t window = (int64_t)o->rl_seconds * NS_PER_S;
        sb->rl_burst = o->rl_burst;
        sb->rl_seconds = o->rl_seconds;
        sb->rl_cell_ns = (window + o->rl_burst - 1) / o->rl_burst;
        sb->rl_tau_ns = sb->rl_cell_ns * o->rl_burst;
    }
    if (o->journal) {
        sb->journal_path = o->journal;
        sb->journal = fopen(o->journal, "a");
        if (sb->journal == NULL) {
            snprintf(err, errlen, "journal %s: %s", o->journal, strerror(errno));
            return -1;
        }
    }
    return server_setup(sb, o, err, errlen);
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    /* A client closing mid-write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    struct sandbox *sb = calloc(1, sizeof *sb);
    if (sb == NULL) {
        fprintf(stderr, "ghl-sandbox: out of memory\n");
        return 1;
    }
    char err[512] = "";
    if (setup(sb, &o, err, sizeof err) != 0) {
        fprintf(stderr, "ghl-sandbox: %s\n", err);
        sandbox_free(sb);
        libevent_global_shutdown();
        return 1;
    }
    rc = event_base_dispatch(sb->base) < 0 ? 1 : 0;
    sandbox_free(sb);
    libevent_global_shutdown();
    return rc;
}
