/* openapi: HighLevel's Users API document -> the gateway's operation table.
 *
 * Owns: the loaded document (with every $ref resolved, including those into
 * ../common/common-schemas.json, taken from the document's own folder), the op table (method,
 * path template, operationId, security requirements, parameters, body schema), the list of
 * valid scopes, the permission flags with their defaults and the accepted Version values. No
 * op, path or scope is written in C: a newer document needs no code change.
 *
 * Memory: gw_openapi_load returns a model the caller frees with gw_openapi_free; every pointer
 * inside it (ops, schemas, strings) lives as long as the model. Immutable after load, so any
 * thread may read it.
 */
#ifndef GW_OPENAPI_H
#define GW_OPENAPI_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

enum gw_method {
    GW_M_GET = 1 << 0,
    GW_M_POST = 1 << 1,
    GW_M_PUT = 1 << 2,
    GW_M_DELETE = 1 << 3,
    GW_M_PATCH = 1 << 4,
    GW_M_HEAD = 1 << 5,
    GW_M_OPTIONS = 1 << 6,
};

/* Which of the organisation's HighLevel credentials an op is sent with, derived from the
 * security schemes the document lists for it. */
enum gw_cred_kind {
    GW_CRED_NONE,     /* no scheme the gateway holds a credential for */
    GW_CRED_AGENCY,   /* Agency-Access: the agency token */
    GW_CRED_LOCATION, /* Location-Access only: the Sub-Account token of the locationId asked */
};

enum gw_param_in { GW_IN_PATH, GW_IN_QUERY, GW_IN_HEADER };

struct gw_param {
    const char *name;
    enum gw_param_in in;
    bool required;
    const cJSON *schema; /* resolved; never NULL (an empty object when the document has none) */
};

struct gw_secreq {       /* one alternative of an op's security list */
    const char *scheme;  /* e.g. "Agency-Access" */
    const char **scopes; /* all of them are required */
    size_t nscopes;
};

struct gw_op {
    const char *id; /* operationId, e.g. "create-user" */
    enum gw_method method;
    const char *path; /* the template as written, e.g. "/users/{userId}" */
    char **seg;       /* path segments without the empty trailing one; "{x}" marks a parameter */
    size_t nseg;
    struct gw_secreq *sec;
    size_t nsec;
    const char
        *scope; /* the scope the op requires (its first requirement's first scope), or NULL */
    enum gw_cred_kind cred;
    struct gw_param *params; /* path, query and header parameters, in document order */
    size_t nparams;
    const cJSON *body_schema; /* resolved application/json schema, or NULL */
    bool body_required;
    bool deprecated;
    char **synth; /* names of path parameters the document uses but does not declare */
    size_t nsynth;
    const char **secret; /* body members that hold a secret (gw_openapi_secret), from the
                            document; the names live in doc */
    size_t nsecret;
};

struct gw_perm_flag {
    const char *name;
    bool def;     /* the documented default */
    bool has_def; /* the document gives one (a flag without one has no known effective value) */
};

struct gw_openapi {
    cJSON *doc; /* the document with $refs replaced by what they point at */
    char *path;
    struct gw_op *ops;
    size_t nops;
    const char **scopes; /* every scope name the document enumerates, sorted, unique */
    size_t nscopes;
    struct gw_perm_flag *perms; /* permission flags in document order */
    size_t nperms;
    const char **versions; /* Version header values the document accepts */
    size_t nversions;
};

/* Loads and checks a document. Returns 0, or -1 with a message in err. */
int gw_openapi_load(const char *path, struct gw_openapi **out, char *err, size_t errlen);
void gw_openapi_free(struct gw_openapi *m);

const struct gw_op *gw_openapi_op(const struct gw_openapi *m, const char *operation_id);
bool gw_openapi_has_scope(const struct gw_openapi *m, const char *scope);
/* The parameter of op named name in the given place, or NULL. */
const struct gw_param *gw_op_param(const struct gw_op *op, enum gw_param_in in, const char *name);

/* A body member of op that holds a secret, which no log or audit record may show: declared
 * with format "password" or writeOnly, or (as HighLevel's document marks its password) with an
 * example of asterisks only. */
bool gw_openapi_secret(const struct gw_op *op, const char *member);

const char *gw_method_name(enum gw_method m);
/* Method from its name (exact, upper case); 0 if not one of enum gw_method. */
enum gw_method gw_method_from_name(const char *name);

/* The folder the shipped document lives in (compiled in, or beside the installed binary). */
const char *gw_openapi_default_path(void);

#endif
