/* json: strict JSON parsing onto cJSON trees.
 *
 * Owns: the one JSON reader used for every outside input (request bodies, config, policies,
 * OpenAPI documents, JWT segments). It accepts only RFC 8259 JSON and refuses what two parsers
 * could read differently: duplicate member names (at any depth), invalid UTF-8, lone surrogate
 * escapes, NUL (raw or \u0000), bytes after the value, nesting past a cap, numbers out of range.
 * Optionally C and C++ comments (config and policy files only).
 *
 * Memory: the returned tree belongs to the caller (cJSON_Delete). The line table, when asked
 * for, is filled by the parser and freed with gw_json_lines_free.
 * Threads: any thread; no shared state.
 */
#ifndef GW_JSON_H
#define GW_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#include "buf.h"

/* Set in the type of a number written with a fraction or an exponent ("1.0", "1e3"), so that
 * claims which must be integers can refuse them. cJSON's own checks mask it out (type & 0xFF). */
#define GW_JSON_FRACTION_LITERAL (1 << 12)

/* Line of each node, for messages that point into a file. */
struct gw_json_lines {
    const cJSON **node;
    int *line;
    size_t n, cap;
};

struct gw_json_opts {
    size_t max_bytes;            /* 0: no cap beyond the length given */
    int max_depth;               /* containers nested deeper than this are refused; 0: 64 */
    bool allow_comments;         /* C and C++ comments, treated as whitespace */
    struct gw_json_lines *lines; /* NULL: no line table */
};

struct gw_json_error {
    char msg[160]; /* e.g. "duplicate member \"role\"" */
    size_t offset; /* byte offset of the problem */
    int line;      /* 1-based line of the problem */
};

/* Parses buf[0..len) (need not be NUL-terminated). Returns the tree, or NULL with *err filled. */
cJSON *gw_json_parse(const char *buf, size_t len, const struct gw_json_opts *opts,
                     struct gw_json_error *err);

/* Checks that buf[0..len) is one JSON text without building it (no allocation): the parser's
 * rules for syntax, UTF-8, escapes, NUL, nesting past max_depth (0: 64) and bytes after the
 * value, numbers of at most 64 characters; not its duplicate-name and number-range checks,
 * which need the values. For bodies
 * passed through unread (upstream answers). Returns true, or false with *err filled. */
bool gw_json_check(const char *buf, size_t len, int max_depth, struct gw_json_error *err);

/* Line of a node recorded by the parser, or 0 when unknown. */
int gw_json_line(const struct gw_json_lines *lines, const cJSON *node);
void gw_json_lines_free(struct gw_json_lines *lines);

/* Reads a whole file (at most max_bytes) into a NUL-terminated buffer the caller frees.
 * Returns NULL with errno set (EFBIG past the cap). */
char *gw_read_file(const char *path, size_t max_bytes, size_t *len);

/* Appends s to out as a JSON string literal (with quotes). Returns 0, or -1 on allocation. */
struct evbuffer;
int gw_json_append_string(struct evbuffer *out, const char *s);

/* The JSON text writer (audit records, error bodies: no cJSON tree, no copy), appending to a
 * capped buffer (buf.h): past its cap or out of memory the buffer fails and gw_buf_take returns
 * NULL, so the writer checks once, at the end. */
/* JSON text known when compiling (punctuation, member names), as is. */
#define GW_JBUF_LIT(b, lit) gw_buf_add((b), "" lit, sizeof(lit) - 1)
/* s as a JSON string literal, as gw_json_append_string writes it; NULL: null. */
void gw_jbuf_string(struct gw_buf *b, const char *s);
/* v as JSON text. Numbers as cJSON prints them: integers below 2^53 without a fraction, others
 * with 15 significant digits, or 17 when 15 do not read back the same; not finite: null.
 * NULL: null. */
void gw_jbuf_value(struct gw_buf *b, const cJSON *v);

#endif
