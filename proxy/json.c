/* Strict JSON reader: a recursive-descent parser that builds cJSON nodes itself, so that every
 * rule (UTF-8, duplicates, depth, NUL) is checked in one pass over the bytes. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/buffer.h>

#define DEFAULT_MAX_DEPTH 64

struct parser {
    const unsigned char *p, *end, *start;
    int depth, max_depth;
    bool comments;
    struct gw_json_lines *lines;
    struct gw_json_error *err;
    int line;                     /* line of p, kept current by skip_ws */
    const unsigned char *line_at; /* position up to which lines are counted */
};

static int cur_line(struct parser *ps, const unsigned char *at)
{
    while (ps->line_at < at) {
        if (*ps->line_at == '\n')
            ps->line++;
        ps->line_at++;
    }
    return ps->line;
}

static void fail(struct parser *ps, const unsigned char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct parser *ps, const unsigned char *at, const char *fmt, ...)
{
    if (ps->err == NULL || ps->err->msg[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err->msg, sizeof ps->err->msg, fmt, ap);
    va_end(ap);
    if (at > ps->end)
        at = ps->end;
    ps->err->offset = (size_t)(at - ps->start);
    ps->err->line = cur_line(ps, at);
}

static int record_line(struct parser *ps, const cJSON *node, int line)
{
    struct gw_json_lines *l = ps->lines;
    if (l == NULL)
        return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of node pointers */
        const cJSON **nn = realloc(l->node, ncap * sizeof *nn);
        if (nn == NULL)
            return -1;
        l->node = nn;
        int *nl = realloc(l->line, ncap * sizeof *nl);
        if (nl == NULL)
            return -1;
        l->line = nl;
        l->cap = ncap;
    }
    l->node[l->n] = node;
    l->line[l->n] = line;
    l->n++;
    return 0;
}

static int __attribute__((noinline)) skip_ws_rest(struct parser *ps)
{
    while (ps->p < ps->end) {
        unsigned char c = *ps->p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            ps->p++;
        } else if (c == '/' && ps->comments && ps->p + 1 < ps->end && ps->p[1] == '/') {
            while (ps->p < ps->end && *ps->p != '\n')
                ps->p++;
        } else if (c == '/' && ps->comments && ps->p + 1 < ps->end && ps->p[1] == '*') {
            const unsigned char *open = ps->p;
            ps->p += 2;
            while (ps->p + 1 < ps->end && !(ps->p[0] == '*' && ps->p[1] == '/'))
                ps->p++;
            if (ps->p + 1 >= ps->end) {
                fail(ps, open, "unterminated comment");
                return -1;
            }
            ps->p += 2;
        } else {
            break;
        }
    }
    return 0;
}

/* Skips whitespace (and comments where allowed); -1 on an unterminated comment. */
static inline int skip_ws(struct parser *ps)
{
    if (ps->p<ps->end && * ps->p> ' ' && *ps->p != '/')
        return 0; /* the common case: no whitespace at all */
    return skip_ws_rest(ps);
}

/* Bytes a string literal copies as they are: printable ASCII and DEL, not '"' or '\\'. */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* The end of the run of plain bytes at q (< end): eight at a time while eight are left (a word
 * with a control byte, a byte >= 0x80, '"' or '\\' is left to the byte loop), then one by one. */
static inline const unsigned char *plain_run(const unsigned char *q, const unsigned char *end)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    while (end - q >= 8) {
        uint64_t v;
        memcpy(&v, q, 8);
        uint64_t quote = v ^ (ones * '"'), bslash = v ^ (ones * '\\');
        uint64_t special =
            ((v - ones * 0x20) & ~v) | v | ((quote - ones) & ~quote) | ((bslash - ones) & ~bslash);
        if (special & highs)
            break;
        q += 8;
    }
    while (q < end && plain[*q])
        q++;
    return q;
}

/* Decodes one UTF-8 sequence at s (< end). Returns its length, or 0 if it is not well formed
 * (overlong, surrogate, past U+10FFFF, truncated). */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - s) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static int hex4(const unsigned char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string literal at ps->p (which is '"'). Returns a malloc'd NUL-terminated copy. */
static char *parse_string(struct parser *ps)
{
    const unsigned char *open = ps->p;
    ps->p++;
    /* The decoded form is never longer than the literal. */
    const unsigned char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= ps->end) {
        fail(ps, open, "unterminated string");
        return NULL;
    }
    unsigned char *out = malloc((size_t)(q - ps->p) + 1);
    if (out == NULL) {
        fail(ps, open, "out of memory");
        return NULL;
    }
    size_t n = 0;
    while (*ps->p != '"') {
        unsigned char c = *ps->p;
        if (c < 0x20) {
            fail(ps, ps->p, c == 0 ? "NUL byte in string" : "control character in string");
            goto bad;
        }
        if (c == '\\') {
            unsigned char e = ps->p[1];
            ps->p += 2;
            switch (e) {
            case '"':
                out[n++] = '"';
                break;
            case '\\':
                out[n++] = '\\';
                break;
            case '/':
                out[n++] = '/';
                break;
            case 'b':
                out[n++] = '\b';
                break;
            case 'f':
                out[n++] = '\f';
                break;
            case 'n':
                out[n++] = '\n';
                break;
            case 'r':
                out[n++] = '\r';
                break;
            case 't':
                out[n++] = '\t';
                break;
            case 'u': {
                uint32_t cp, lo;
                if (ps->end - ps->p < 4 || hex4(ps->p, &cp) != 0) {
                    fail(ps, ps->p - 2, "bad \\u escape");
                    goto bad;
                }
                ps->p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    fail(ps, ps->p - 6, "lone surrogate \\u%04X", (unsigned)cp);
                    goto bad;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
                        hex4(ps->p + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
                        fail(ps, ps->p - 6, "lone surrogate \\u%04X", (unsigned)cp);
                        goto bad;
                    }
                    ps->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0) {
                    fail(ps, ps->p - 6, "NUL (\\u0000) in string");
                    goto bad;
                }
                n += put_utf8(out + n, cp);
                break;
            }
            default:
                fail(ps, ps->p - 2, "bad escape in string");
                goto bad;
            }
            continue;
        }
        if (c >= 0x20 && c < 0x80) {
            /* a run of plain ASCII in one copy (the closing quote, found above, ends it) */
            const unsigned char *r = plain_run(ps->p + 1, ps->end);
            memcpy(out + n, ps->p, (size_t)(r - ps->p));
            n += (size_t)(r - ps->p);
            ps->p = r;
            continue;
        }
        size_t l = utf8_len(ps->p, ps->end);
        if (l == 0) {
            fail(ps, ps->p, "invalid UTF-8 in string");
            goto bad;
        }
        memcpy(out + n, ps->p, l);
        n += l;
        ps->p += l;
    }
    ps->p++; /* closing quote */
    out[n] = '\0';
    return (char *)out;
bad:
    free(out);
    return NULL;
}

static cJSON *parse_value(struct parser *ps);

struct member {
    const char *name;
    size_t index;
    const unsigned char *at; /* where the name starts, for the message */
    uint32_t hash;           /* FNV-1a of name: the pairwise check compares these first */
};

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int cmp_members(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->index < y->index ? -1 : 1);
}

/* Objects of up to PAIRWISE_MAX members are checked pair by pair on the names' hashes (no
 * sort, no string compare unless two hashes are equal); larger ones by sorting the names:
 * O(n log n) whatever the input. Either way the message points at the earliest member whose
 * name came before. */
#define PAIRWISE_MAX 48
static int check_duplicates(struct parser *ps, struct member *m, size_t count)
{
    if (count < 2)
        return 0;
    const struct member *dup = NULL;
    if (count <= PAIRWISE_MAX) {
        for (size_t j = 1; j < count && dup == NULL; j++) {
            for (size_t i = 0; i < j; i++)
                if (m[i].hash == m[j].hash && strcmp(m[i].name, m[j].name) == 0) {
                    dup = &m[j];
                    break;
                }
        }
    } else {
        qsort(m, count, sizeof *m, cmp_members);
        for (size_t i = 1; i < count; i++)
            if (strcmp(m[i - 1].name, m[i].name) == 0 && (dup == NULL || m[i].index < dup->index))
                dup = &m[i];
    }
    if (dup == NULL)
        return 0;
    /* the name as printable ASCII: the message may reach a log line (a fetched JWKS or
     * discovery document), where a control byte or an escape must not be written */
    char name[65];
    size_t i = 0;
    for (; i < 64 && dup->name[i]; i++) {
        unsigned char c = (unsigned char)dup->name[i];
        name[i] = c < 0x20 || c > 0x7E || c == '"' || c == '\\' ? '?' : (char)c;
    }
    name[i] = '\0';
    fail(ps, dup->at, "duplicate member \"%s\"", name);
    return -1;
}

/* Appends without cJSON_AddItemToArray's walk to the tail: O(1) per member. */
static void append_child(cJSON *parent, cJSON **tail, cJSON *item)
{
    if (*tail == NULL) {
        parent->child = item;
        item->prev = item; /* cJSON keeps the head's prev pointing at the tail */
    } else {
        (*tail)->next = item;
        item->prev = *tail;
        parent->child->prev = item;
    }
    *tail = item;
}

static cJSON *parse_container(struct parser *ps, bool is_object)
{
    const unsigned char *open = ps->p;
    if (++ps->depth > ps->max_depth) {
        fail(ps, open, "nesting deeper than %d", ps->max_depth);
        return NULL;
    }
    cJSON *c = is_object ? cJSON_CreateObject() : cJSON_CreateArray();
    if (c == NULL) {
        fail(ps, open, "out of memory");
        return NULL;
    }
    ps->p++;
    cJSON *tail = NULL;
    size_t count = 0;
    /* member names of this object, for the duplicate check: a small stack array first */
    struct member local[16], *members = local;
    size_t mcap = 16;
    if (skip_ws(ps) != 0)
        goto bad;
    unsigned char close = is_object ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return c;
    }
    for (;;) {
        char *name = NULL;
        const unsigned char *start = ps->p;
        int line = ps->lines ? cur_line(ps, start) : 0;
        if (is_object) {
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, ps->p, "expected a member name");
                goto bad;
            }
            name = parse_string(ps);
            if (name == NULL)
                goto bad;
            if (skip_ws(ps) != 0 || ps->p >= ps->end || *ps->p != ':') {
                free(name);
                fail(ps, ps->p, "expected ':'");
                goto bad;
            }
            ps->p++;
            if (skip_ws(ps) != 0) {
                free(name);
                goto bad;
            }
        }
        cJSON *v = parse_value(ps);
        if (v == NULL) {
            free(name);
            goto bad;
        }
        if (name != NULL)
            v->string = name;
        append_child(c, &tail, v);
        if (is_object) {
            if (count == mcap) {
                struct member *nm = malloc(2 * mcap * sizeof *nm);
                if (nm == NULL) {
                    fail(ps, ps->p, "out of memory");
                    goto bad;
                }
                memcpy(nm, members, count * sizeof *nm);
                if (members != local)
                    free(members);
                members = nm;
                mcap *= 2;
            }
            members[count] = (struct member){name, count, start, name_hash(name)};
        }
        count++;
        if (record_line(ps, v, line) != 0) {
            fail(ps, ps->p, "out of memory");
            goto bad;
        }
        if (skip_ws(ps) != 0)
            goto bad;
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            if (skip_ws(ps) != 0)
                goto bad;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            break;
        }
        fail(ps, ps->p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        goto bad;
    }
    if (is_object && check_duplicates(ps, members, count) != 0)
        goto bad;
    if (members != local)
        free(members);
    ps->depth--;
    return c;
bad:
    if (members != local)
        free(members);
    cJSON_Delete(c);
    return NULL;
}

static cJSON *parse_number(struct parser *ps)
{
    const unsigned char *s = ps->p, *q = ps->p;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || *q < '0' || *q > '9') {
        fail(ps, s, "invalid value");
        return NULL;
    }
    if (*q == '0') {
        q++;
    } else {
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && *q == '.') {
        q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            fail(ps, s, "invalid number");
            return NULL;
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            fail(ps, s, "invalid number");
            return NULL;
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q - s > 64) {
        fail(ps, s, "number too long");
        return NULL;
    }
    char tmp[72];
    memcpy(tmp, s, (size_t)(q - s));
    tmp[q - s] = '\0';
    errno = 0;
    double d = strtod(tmp, NULL);
    if (errno == ERANGE && !isfinite(d)) {
        fail(ps, s, "number out of range");
        return NULL;
    }
    if (errno == ERANGE)
        d = 0; /* underflow: the value is indistinguishable from zero */
    bool fraction = memchr(s, '.', (size_t)(q - s)) || memchr(s, 'e', (size_t)(q - s)) ||
                    memchr(s, 'E', (size_t)(q - s));
    ps->p = q;
    cJSON *n = cJSON_CreateNumber(d);
    if (n == NULL)
        fail(ps, s, "out of memory");
    else if (fraction)
        n->type |= GW_JSON_FRACTION_LITERAL;
    return n;
}

/* word: "true", "false" or "null" */
static bool literal(struct parser *ps, const char *word)
{
    size_t l = word[0] == 'f' ? 5 : 4;
    if ((size_t)(ps->end - ps->p) < l)
        return false;
    for (size_t i = 0; i < l; i++)
        if (ps->p[i] != (unsigned char)word[i])
            return false;
    ps->p += l;
    return true;
}

static cJSON *parse_value(struct parser *ps)
{
    if (ps->p >= ps->end) {
        fail(ps, ps->p, "unexpected end of input");
        return NULL;
    }
    cJSON *v = NULL;
    switch (*ps->p) {
    case '{':
        return parse_container(ps, true);
    case '[':
        return parse_container(ps, false);
    case '"': {
        const unsigned char *at = ps->p;
        char *s = parse_string(ps);
        if (s == NULL)
            return NULL;
        v = cJSON_CreateString("");
        if (v == NULL) {
            free(s);
            fail(ps, at, "out of memory");
            return NULL;
        }
        cJSON_free(v->valuestring);
        v->valuestring = s;
        return v;
    }
    case 't':
        if (literal(ps, "true"))
            v = cJSON_CreateTrue();
        break;
    case 'f':
        if (literal(ps, "false"))
            v = cJSON_CreateFalse();
        break;
    case 'n':
        if (literal(ps, "null"))
            v = cJSON_CreateNull();
        break;
    default:
        return parse_number(ps);
    }
    if (v == NULL)
        fail(ps, ps->p, *ps->p == 0 ? "NUL byte" : "invalid value");
    return v;
}

cJSON *gw_json_parse(const char *buf, size_t len, const struct gw_json_opts *opts,
                     struct gw_json_error *err)
{
    struct gw_json_error scratch = {0};
    struct parser ps = {
        .p = (const unsigned char *)buf,
        .end = (const unsigned char *)buf + len,
        .start = (const unsigned char *)buf,
        .max_depth = opts && opts->max_depth > 0 ? opts->max_depth : DEFAULT_MAX_DEPTH,
        .comments = opts && opts->allow_comments,
        .lines = opts ? opts->lines : NULL,
        .err = err ? err : &scratch,
        .line = 1,
        .line_at = (const unsigned char *)buf,
    };
    ps.err->msg[0] = '\0';
    ps.err->offset = 0;
    ps.err->line = 0;
    if (opts && opts->max_bytes && len > opts->max_bytes) {
        fail(&ps, ps.start, "document larger than %zu bytes", opts->max_bytes);
        return NULL;
    }
    /* The parser's own recursion is bounded by max_depth; refuse absurd caps. */
    if (ps.max_depth > 512)
        ps.max_depth = 512;
    if (skip_ws(&ps) != 0)
        return NULL;
    int root_line = ps.lines ? cur_line(&ps, ps.p) : 0;
    cJSON *root = parse_value(&ps);
    if (root == NULL)
        return NULL;
    if (skip_ws(&ps) != 0 || ps.p != ps.end) {
        fail(&ps, ps.p,
             ps.p < ps.end && *ps.p == 0 ? "NUL byte after the value"
                                         : "unexpected data after the value");
        cJSON_Delete(root);
        return NULL;
    }
    if (ps.lines && record_line(&ps, root, root_line) != 0) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ---- checking without building ---- */

static bool check_value(struct parser *ps);

/* The string at ps->p past its first escape or non-ASCII byte (kept out of line, so that the
 * common string, plain ASCII, costs its scan and no call). */
static bool __attribute__((noinline))
check_string_rest(struct parser *ps, const unsigned char *open)
{
    for (;;) {
        ps->p = plain_run(ps->p, ps->end);
        if (ps->p >= ps->end) {
            fail(ps, open, "unterminated string");
            return false;
        }
        unsigned char c = *ps->p;
        if (c == '"') {
            ps->p++;
            return true;
        }
        if (c < 0x20) {
            fail(ps, ps->p, c == 0 ? "NUL byte in string" : "control character in string");
            return false;
        }
        if (c == '\\') {
            if (ps->end - ps->p < 2) {
                fail(ps, open, "unterminated string");
                return false;
            }
            unsigned char e = ps->p[1];
            if (e != 'u') {
                if (strchr("\"\\/bfnrt", e) == NULL || e == '\0') {
                    fail(ps, ps->p, "bad escape in string");
                    return false;
                }
                ps->p += 2;
                continue;
            }
            uint32_t cp, lo;
            if (ps->end - ps->p < 6 || hex4(ps->p + 2, &cp) != 0) {
                fail(ps, ps->p, "bad \\u escape");
                return false;
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(ps, ps->p, "lone surrogate \\u%04X", (unsigned)cp);
                return false;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (ps->end - ps->p < 12 || ps->p[6] != '\\' || ps->p[7] != 'u' ||
                    hex4(ps->p + 8, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
                    fail(ps, ps->p, "lone surrogate \\u%04X", (unsigned)cp);
                    return false;
                }
                ps->p += 6;
            }
            if (cp == 0) {
                fail(ps, ps->p, "NUL (\\u0000) in string");
                return false;
            }
            ps->p += 6;
            continue;
        }
        size_t l = utf8_len(ps->p, ps->end);
        if (l == 0) {
            fail(ps, ps->p, "invalid UTF-8 in string");
            return false;
        }
        ps->p += l;
    }
}

static inline bool check_string(struct parser *ps)
{
    const unsigned char *open = ps->p;
    const unsigned char *q = plain_run(open + 1, ps->end);
    if (q < ps->end && *q == '"') {
        ps->p = q + 1;
        return true;
    }
    ps->p = q;
    return check_string_rest(ps, open);
}

static bool digits(struct parser *ps)
{
    const unsigned char *s = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
        ps->p++;
    return ps->p > s;
}

static bool check_number(struct parser *ps)
{
    const unsigned char *s = ps->p;
    if (*ps->p == '-')
        ps->p++;
    if (ps->p < ps->end && *ps->p == '0')
        ps->p++;
    else if (!digits(ps))
        goto bad;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!digits(ps))
            goto bad;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!digits(ps))
            goto bad;
    }
    if (ps->p - s > 64) {
        fail(ps, s, "number too long");
        return false;
    }
    return true;
bad:
    fail(ps, s, "invalid number");
    return false;
}

static bool check_container(struct parser *ps, bool is_object)
{
    const unsigned char *open = ps->p;
    if (++ps->depth > ps->max_depth) {
        fail(ps, open, "nesting deeper than %d", ps->max_depth);
        return false;
    }
    ps->p++;
    unsigned char close = is_object ? '}' : ']';
    if (skip_ws(ps) != 0)
        return false;
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return true;
    }
    for (;;) {
        if (is_object) {
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, ps->p, "expected a member name");
                return false;
            }
            if (!check_string(ps))
                return false;
            if (skip_ws(ps) != 0 || ps->p >= ps->end || *ps->p != ':') {
                fail(ps, ps->p, "expected ':'");
                return false;
            }
            ps->p++;
            if (skip_ws(ps) != 0)
                return false;
        }
        if (!check_value(ps) || skip_ws(ps) != 0)
            return false;
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            if (skip_ws(ps) != 0)
                return false;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            ps->depth--;
            return true;
        }
        fail(ps, ps->p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        return false;
    }
}

static bool check_value(struct parser *ps)
{
    if (ps->p >= ps->end) {
        fail(ps, ps->p, "unexpected end of input");
        return false;
    }
    switch (*ps->p) {
    case '{':
        return check_container(ps, true);
    case '[':
        return check_container(ps, false);
    case '"':
        return check_string(ps);
    case 't':
    case 'f':
    case 'n':
        if (literal(ps, *ps->p == 't' ? "true" : *ps->p == 'f' ? "false" : "null"))
            return true;
        break;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return check_number(ps);
        break;
    }
    fail(ps, ps->p, *ps->p == 0 ? "NUL byte" : "invalid value");
    return false;
}

bool gw_json_check(const char *buf, size_t len, int max_depth, struct gw_json_error *err)
{
    struct gw_json_error dummy;
    if (err == NULL)
        err = &dummy;
    memset(err, 0, sizeof *err);
    struct parser ps = {.p = (const unsigned char *)buf,
                        .end = (const unsigned char *)buf + len,
                        .start = (const unsigned char *)buf,
                        .max_depth = max_depth > 0 && max_depth <= 512 ? max_depth
                                     : max_depth > 512                 ? 512
                                                                       : DEFAULT_MAX_DEPTH,
                        .err = err,
                        .line = 1,
                        .line_at = (const unsigned char *)buf};
    if (skip_ws(&ps) != 0 || !check_value(&ps) || skip_ws(&ps) != 0)
        return false;
    if (ps.p != ps.end) {
        fail(&ps, ps.p, "unexpected bytes after the value");
        return false;
    }
    return true;
}

int gw_json_line(const struct gw_json_lines *lines, const cJSON *node)
{
    if (lines == NULL || node == NULL)
        return 0;
    for (size_t i = 0; i < lines->n; i++)
        if (lines->node[i] == node)
            return lines->line[i];
    return 0;
}

void gw_json_lines_free(struct gw_json_lines *lines)
{
    if (lines == NULL)
        return;
    free(lines->node);
    free(lines->line);
    memset(lines, 0, sizeof *lines);
}

char *gw_read_file(const char *path, size_t max_bytes, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int e = errno;
        fclose(f);
        errno = e;
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(f);
        errno = EISDIR;
        return NULL;
    }
    /* a regular file is read in one allocation: no realloc leaves a copy of a secret behind */
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 && (size_t)st.st_size <= max_bytes
                     ? (size_t)st.st_size
                     : 4096;
    size_t n = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        fclose(f);
        errno = ENOMEM;
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max_bytes) {
                /* full at the cap: fine if nothing follows */
                int more = fgetc(f);
                if (more == EOF && !ferror(f))
                    break;
                free(buf);
                fclose(f);
                errno = EFBIG;
                return NULL;
            }
            cap = cap * 2 > max_bytes ? max_bytes : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                int e = errno ? errno : EIO;
                free(buf);
                fclose(f);
                errno = e;
                return NULL;
            }
            break;
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Writes \uXXXX for the UTF-16 code unit u into o (6 bytes, not NUL-terminated). */
static size_t escape_u(unsigned u, char *o)
{
    static const char hex[] = "0123456789abcdef";
    o[0] = '\\';
    o[1] = 'u';
    for (int i = 0; i < 4; i++)
        o[2 + i] = hex[(u >> (12 - 4 * i)) & 15];
    return 6;
}

/* Writes the escaped form of the character at *p (advanced past it) into o (room for 6
 * bytes); returns the bytes written. Bytes from outside (headers, paths) may not be UTF-8:
 * an invalid sequence becomes U+FFFD, so the output stays valid JSON. */
static size_t escape_char(const unsigned char **p, const unsigned char *end, char *o)
{
    unsigned char c = **p;
    if (c == '"' || c == '\\') {
        o[0] = '\\';
        o[1] = (char)c;
        (*p)++;
        return 2;
    }
    if (c < 0x20 || c == 0x7F) {
        (*p)++;
        return escape_u(c, o);
    }
    if (c < 0x80) {
        o[0] = (char)c;
        (*p)++;
        return 1;
    }
    size_t l = utf8_len(*p, end);
    if (l == 0) {
        (*p)++;
        return escape_u(0xFFFD, o);
    }
    memcpy(o, *p, l);
    *p += l;
    return l;
}

int gw_json_append_string(struct evbuffer *out, const char *s)
{
    char buf[256];
    size_t n = 0;
    buf[n++] = '"';
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    while (p < end) {
        if (n + 8 > sizeof buf) {
            if (evbuffer_add(out, buf, n) != 0)
                return -1;
            n = 0;
        }
        n += escape_char(&p, end, buf + n);
    }
    buf[n++] = '"';
    return evbuffer_add(out, buf, n);
}

/* ---- the JSON text writer ---- */

void gw_jbuf_string(struct gw_buf *b, const char *s)
{
    if (s == NULL) {
        GW_JBUF_LIT(b, "null");
        return;
    }
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    size_t len = (size_t)(end - p);
    /* at most 6 bytes out per byte in, and the quotes: written in place when that fits */
    size_t room = b->max - b->n;
    char *o = room >= 2 && len <= (room - 2) / 6 ? gw_buf_space(b, len * 6 + 2) : NULL;
    if (o != NULL) {
        size_t w = 0;
        o[w++] = '"';
        while (p < end)
            w += escape_char(&p, end, o + w);
        o[w++] = '"';
        gw_buf_advance(b, w);
        return;
    }
    if (b->failed)
        return;
    /* near the cap: in pieces, so that only the bytes really written count against it */
    char piece[256];
    size_t n = 0;
    piece[n++] = '"';
    while (p < end) {
        if (n + 8 > sizeof piece) {
            if (gw_buf_add(b, piece, n) != 0)
                return;
            n = 0;
        }
        n += escape_char(&p, end, piece + n);
    }
    piece[n++] = '"';
    gw_buf_add(b, piece, n);
}

void gw_jbuf_value(struct gw_buf *b, const cJSON *v)
{
    if (cJSON_IsTrue(v)) {
        GW_JBUF_LIT(b, "true");
    } else if (cJSON_IsFalse(v)) {
        GW_JBUF_LIT(b, "false");
    } else if (cJSON_IsString(v)) {
        gw_jbuf_string(b, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        char num[40];
        int n;
        if (!isfinite(d))
            n = snprintf(num, sizeof num, "null");
        else if (d == floor(d) && fabs(d) < 9007199254740992.0) /* 2^53: exact integers */
            n = snprintf(num, sizeof num, "%.0f", d);
        else if ((n = snprintf(num, sizeof num, "%.15g", d)) < 0 || strtod(num, NULL) != d)
            n = snprintf(num, sizeof num, "%.17g", d); /* 15 digits did not read back */
        gw_buf_add(b, num, (size_t)n);
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool obj = cJSON_IsObject(v);
        gw_buf_add(b, obj ? "{" : "[", 1);
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child)
                GW_JBUF_LIT(b, ",");
            if (obj) {
                gw_jbuf_string(b, c->string ? c->string : "");
                GW_JBUF_LIT(b, ":");
            }
            gw_jbuf_value(b, c);
        }
        gw_buf_add(b, obj ? "}" : "]", 1);
    } else { /* NULL, null, and raw or invalid nodes (never built by the parser) */
        GW_JBUF_LIT(b, "null");
    }
}
