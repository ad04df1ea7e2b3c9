#include "route.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ID_LEN 64

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* RFC 3986 pchar without pct-encoded (which the path may not use at all). */
static bool is_path_char(unsigned char c)
{
    return is_unreserved(c) || strchr("!$&'()*+,;=:@/", c) != NULL;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Well-formed UTF-8 without control characters. */
static bool clean_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x20 || c == 0x7F)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x80 && cp < 0xA0))
            return false;
        i += len;
    }
    return true;
}

/* Decodes a query component in place ('+' is a space, as form encoding and the upstream
 * read it). Returns its new length, or -1 when an escape is malformed. */
static long decode_component(char *s, size_t n)
{
    size_t w = 0;
    for (size_t r = 0; r < n; r++) {
        if (s[r] == '%') {
            if (r + 2 >= n)
                return -1;
            int h = hexval((unsigned char)s[r + 1]), l = hexval((unsigned char)s[r + 2]);
            if (h < 0 || l < 0)
                return -1;
            s[w++] = (char)(h * 16 + l);
            r += 2;
        } else if (s[r] == '+') {
            s[w++] = ' ';
        } else {
            s[w++] = s[r];
        }
    }
    s[w] = '\0';
    return (long)w;
}

static bool id_segment(const char *s, size_t n)
{
    if (n == 0 || n > MAX_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

static enum gw_route_result bad(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return GW_ROUTE_BAD_TARGET;
}

enum gw_route_result gw_route_match(const struct gw_openapi *m, const char *method,
                                    const char *target, struct gw_route *r, char *why,
                                    size_t whylen)
{
    memset(r, 0, sizeof *r);
    why[0] = '\0';
    if (target[0] != '/')
        return bad(why, whylen, "request target is not in origin form");
    size_t tlen = strlen(target);
    /* mem holds the path copy, the decoded query, the upstream path and the parameter
     * values, each no longer than the target. */
    r->mem = malloc(tlen * 4 + 8);
    if (r->mem == NULL)
        return bad(why, whylen, "out of memory");
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : tlen;
    if (memchr(target, '#', tlen))
        return bad(why, whylen, "fragment in request target");
    char *path = r->mem;
    memcpy(path, target, plen);
    path[plen] = '\0';
    r->path = path;
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '%')
            return bad(why, whylen, "percent-encoding in path");
        if (!is_path_char(c))
            return bad(why, whylen, "invalid character in path");
    }
    if (strstr(path, "//"))
        return bad(why, whylen, "empty path segment");

    /* Segments; a single trailing slash is allowed ("/users" and "/users/" are one path). */
    const char *seg[GW_ROUTE_MAX_SEGMENTS];
    size_t seglen[GW_ROUTE_MAX_SEGMENTS], nseg = 0;
    const char *p = path + 1;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return bad(why, whylen, "dot segment in path");
        if (nseg == GW_ROUTE_MAX_SEGMENTS)
            return GW_ROUTE_NOT_FOUND;
        seg[nseg] = p;
        seglen[nseg++] = n;
        if (e == NULL)
            break;
        p = e + 1;
    }

    /* Query: split, decode, check. */
    char *qmem = r->mem + plen + 1;
    if (q) {
        const char *s = q + 1;
        size_t qlen = strlen(s);
        for (size_t i = 0; i < qlen; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!(is_path_char(c) || c == '?' || c == '%'))
                return bad(why, whylen, "invalid character in query");
        }
        memcpy(qmem, s, qlen + 1);
        char *cur = qmem;
        while (*cur || cur == qmem) {
            char *amp = strchr(cur, '&');
            size_t n = amp ? (size_t)(amp - cur) : strlen(cur);
            if (amp)
                *amp = '\0';
            if (n == 0) { /* "a=1&&b=2", "?" alone, trailing '&' */
                if (!amp)
                    break;
                cur = amp + 1;
                continue;
            }
            if (r->nq == GW_ROUTE_MAX_QUERY)
                return bad(why, whylen, "too many query parameters");
            char *eq = memchr(cur, '=', n);
            char *name = cur, *val = eq ? eq + 1 : cur + n;
            if (eq)
                *eq = '\0';
            long nl = decode_component(name, strlen(name));
            long vl = decode_component(val, strlen(val));
            if (nl < 0 || vl < 0)
                return bad(why, whylen, "malformed percent-encoding in query");
            if (nl == 0)
                return bad(why, whylen, "query parameter without a name");
            if (!clean_utf8((unsigned char *)name, (size_t)nl) ||
                !clean_utf8((unsigned char *)val, (size_t)vl))
                return bad(why, whylen, "query is not clean UTF-8");
            r->qname[r->nq] = name;
            r->qval[r->nq] = eq ? val : "";
            r->nq++;
            if (!amp)
                break;
            cur = amp + 1;
        }
    }

    /* Match: static segments beat parameters at the same position (search vs {userId}). */
    const struct gw_op *best = NULL;
    int best_score = -1;
    enum gw_method meth = gw_method_from_name(method);
    for (size_t i = 0; i < m->nops; i++) {
        const struct gw_op *op = &m->ops[i];
        if (op->nseg != nseg)
            continue;
        int score = 0;
        bool ok = true;
        for (size_t k = 0; k < nseg && ok; k++) {
            const char *t = op->seg[k];
            if (t[0] == '{') {
                ok = id_segment(seg[k], seglen[k]);
                score <<= 1;
            } else {
                ok = strlen(t) == seglen[k] && memcmp(t, seg[k], seglen[k]) == 0;
                score = (score << 1) | 1;
            }
        }
        if (!ok)
            continue;
        if (op->method == meth && score > best_score) {
            best = op;
            best_score = score;
        }
    }
    if (best == NULL)
        return GW_ROUTE_NOT_FOUND;
    r->op = best;

    /* The canonical upstream path comes from the template, so "/users" becomes "/users/". */
    char *up = qmem + (q ? strlen(q + 1) + 1 : 1);
    size_t w = 0;
    for (size_t k = 0; k < nseg; k++) {
        up[w++] = '/';
        memcpy(up + w, seg[k], seglen[k]);
        w += seglen[k];
    }
    size_t tl = strlen(best->path);
    if (w == 0 || (tl > 1 && best->path[tl - 1] == '/'))
        up[w++] = '/';
    up[w] = '\0';
    r->upstream_path = up;

    char *vals = up + w + 1;
    for (size_t k = 0; k < nseg; k++) {
        const char *t = best->seg[k];
        if (t[0] != '{')
            continue;
        if (r->npath == GW_ROUTE_MAX_PATH_PARAMS)
            return GW_ROUTE_NOT_FOUND;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(t) - 2), t + 1);
        const struct gw_param *decl = gw_op_param(best, GW_IN_PATH, name);
        if (decl == NULL) /* the model declares every template parameter */
            return GW_ROUTE_NOT_FOUND;
        memcpy(vals, seg[k], seglen[k]);
        vals[seglen[k]] = '\0';
        r->pname[r->npath] = decl->name;
        r->pval[r->npath] = vals;
        r->npath++;
        vals += seglen[k] + 1;
    }
    return GW_ROUTE_OK;
}

void gw_route_free(struct gw_route *r)
{
    free(r->mem);
    memset(r, 0, sizeof *r);
}

static size_t encode(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_unreserved(*p)) {
            out[w++] = (char)*p;
        } else {
            out[w++] = '%';
            out[w++] = hex[*p >> 4];
            out[w++] = hex[*p & 15];
        }
    }
    return w;
}

char *gw_route_query_string(const struct gw_route *r)
{
    size_t need = 1;
    for (size_t i = 0; i < r->nq; i++)
        need += 3 * (strlen(r->qname[i]) + strlen(r->qval[i])) + 2;
    char *out = malloc(need);
    if (out == NULL)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < r->nq; i++) {
        if (i)
            out[w++] = '&';
        w += encode(out + w, r->qname[i]);
        out[w++] = '=';
        w += encode(out + w, r->qval[i]);
    }
    out[w] = '\0';
    return out;
}

const char *gw_route_query(const struct gw_route *r, const char *name)
{
    for (size_t i = 0; i < r->nq; i++)
        if (strcmp(r->qname[i], name) == 0)
            return r->qval[i];
    return NULL;
}
