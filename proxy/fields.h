/* fields: a JSON object read into a struct through a table of fields (key, kind, offset, range,
 * default), one table per object, so that unknown keys, types, ranges, defaults and required
 * members are handled by one loop for every file the gateway reads: the configuration
 * (config.c) and the policy files (policy.c). A rule the kinds cannot say is a custom reader
 * hooked into the table (GW_F_CUSTOM), or a check run after a value was read (after).
 *
 * Every problem is one "file:line: key: message" (or "file: key: message" when the line is not
 * known) in errs->problems; reading goes on after a problem, so that a file shows them all.
 *
 * Memory: strings and lists read are malloc'd into the struct; gw_fields_free frees those of a
 * table's kinds (a custom reader's own are its module's). The line table (lines) is filled by
 * the JSON parser and freed by the caller (gw_json_lines_free).
 * Threads: a reader (struct gw_fields) belongs to one thread.
 */
#ifndef GW_FIELDS_H
#define GW_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#include "json.h"
#include "msgs.h"

/* One file being read. */
struct gw_fields {
    const char *file;           /* named in problems */
    const char *dir;            /* relative paths resolve against it ("." : as given) */
    struct gw_errs *errs;       /* problems (and warnings, which custom readers add) */
    struct gw_json_lines lines; /* for the parser to fill: the line of each node */
    bool check_files;           /* paths: check that what they name exists */
    bool unknown_first;         /* unknown keys first, then the table's order (policy files);
                                   else problems in the file's order (the configuration) */
    bool oom;                   /* an allocation failed: what was read is incomplete */
    const void *user;           /* what custom readers need besides the value */
};

enum gw_field_kind {
    GW_F_STR,       /* non-empty string */
    GW_F_STR_NULL,  /* string or null */
    GW_F_PATH,      /* string, resolved against dir */
    GW_F_PATH_NULL, /* the same, or null */
    GW_F_INT,       /* an integer in [min, max], as a long */
    GW_F_BOOL,
    GW_F_SECTION, /* an object read with the table sub */
    GW_F_STRLIST, /* array of non-empty strings (char **, NULL-terminated; count at off2) */
    GW_F_CUSTOM,
};

/* Paths: what must exist when check_files is set. */
enum gw_file_need { GW_NEED_NONE, GW_NEED_READ, GW_NEED_DIR, GW_NEED_PARENT };

/* A custom reader could not allocate: what was read is incomplete (the read fails). */
void gw_fields_oom(struct gw_fields *x);

struct gw_field;
/* A custom reader or an after check. v: the member's value; NULL (custom readers only, from
 * gw_fields_defaults): set the default. key: the member's full name ("auth.issuers[0].keys"). */
typedef void (*gw_field_fn)(struct gw_fields *x, const cJSON *v, void *base,
                            const struct gw_field *f, const char *key);

struct gw_field {
    const char *key;
    enum gw_field_kind kind;
    size_t off;
    long min, max;              /* GW_F_INT range; GW_F_STRLIST minimum count in min */
    const struct gw_field *sub; /* GW_F_SECTION */
    size_t off2;                /* GW_F_STRLIST count (size_t) */
    gw_field_fn custom;         /* GW_F_CUSTOM */
    const char *def;            /* default for strings and paths (NULL = null) */
    long idef;                  /* default for ints and bools */
    enum gw_file_need need;     /* paths: what must exist */
    const char *required;       /* the problem when the member is missing; NULL: optional */
    const char *msg;            /* the problem with a value of the wrong kind or range (for a
                                   list: with an entry), instead of the kind's own words */
    gw_field_fn after;          /* run once the kind has read the value without a problem */
};

#define GW_FIELD_AT(base, off, type) ((type *)((char *)(base) + (off)))

/* Sets the defaults of every field of t (sections too) in base. */
void gw_fields_defaults(struct gw_fields *x, void *base, const struct gw_field *t);
/* Reads the members of obj (an object) into base with t; prefix names obj ("" at the top). */
void gw_fields_walk(struct gw_fields *x, const cJSON *obj, void *base, const struct gw_field *t,
                    const char *prefix);
/* Reads one value with f, as the walk does (for custom readers that take one of several
 * forms). Returns 0, or -1 when it added a problem (or an allocation failed). */
int gw_fields_read(struct gw_fields *x, const cJSON *v, void *base, const struct gw_field *f,
                   const char *key);
/* Frees what the table's kinds allocated in base (strings, paths, lists; sections too). */
void gw_fields_free(void *base, const struct gw_field *t);

/* Adds the problem "file:line: key: message" for node (NULL: no line). */
void gw_fields_problem(struct gw_fields *x, const cJSON *node, const char *key, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
/* The line of node in the file, or 0 when unknown. */
int gw_fields_line(const struct gw_fields *x, const cJSON *node);
/* p resolved against dir (malloc'd), or NULL out of memory. */
char *gw_fields_path(struct gw_fields *x, const char *p);
/* With check_files: adds a problem when path does not give what need asks for. */
void gw_fields_check_path(struct gw_fields *x, const cJSON *node, const char *key, const char *path,
                          enum gw_file_need need);

#endif
