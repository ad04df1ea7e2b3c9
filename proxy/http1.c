#include "http1.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_METHOD 24

static long fail(struct gw_http1_error *err, enum gw_reply_kind kind, const char *why)
{
    err->kind = kind;
    err->why = why;
    return -1;
}

/* Line by line with memchr (vectorised in libc) instead of byte by byte: each line up to its
 * LF must hold no NUL and no CR but the one right before the LF. A CR that ends the bytes
 * seen so far is scanned again with the next bytes (it must turn out to precede an LF). */
long gw_http1_scan(const unsigned char *h, size_t len, size_t *scanned, size_t cap,
                   struct gw_http1_error *err)
{
    size_t want = len < cap ? len : cap;
    size_t i = *scanned;
    while (i < want) {
        const unsigned char *lf = memchr(h + i, '\n', want - i);
        size_t stop = lf ? (size_t)(lf - h) : want; /* the line's bytes: [i, stop) */
        const unsigned char *nul = memchr(h + i, 0, stop - i);
        const unsigned char *cr = memchr(h + i, '\r', stop - i);
        /* a CR is allowed only right before the LF (or as the last byte seen so far); a bad
         * one shows at the byte after it, a NUL at itself: the first of the two is reported */
        bool bad_cr = cr != NULL && (size_t)(cr - h) != stop - 1;
        if (nul != NULL && (!bad_cr || nul <= cr + 1))
            return fail(err, GW_R_BAD_FRAMING, "NUL byte in request head");
        if (bad_cr)
            return fail(err, GW_R_BAD_FRAMING, "bare CR in request head");
        if (lf == NULL) {
            i = cr != NULL ? want - 1 : want;
            break;
        }
        if (stop == 0 || h[stop - 1] != '\r')
            return fail(err, GW_R_BAD_FRAMING, "bare LF in request head");
        if (stop >= 3 && h[stop - 2] == '\n' && h[stop - 3] == '\r')
            return (long)(stop + 1);
        i = stop + 1;
    }
    *scanned = i;
    if (len >= cap)
        return fail(err, GW_R_HEADERS_TOO_LARGE, NULL);
    return 0;
}

/* RFC 9110 tchar: ALPHA / DIGIT / one of !#$%&'*+-.^_`|~ */
static const bool tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static bool is_tchar(unsigned char ch)
{
    return tchar[ch];
}

/* Does a comma-separated header value list the token? */
static bool has_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - v) == n && strncasecmp(v, tok, n) == 0)
            return true;
        v = e;
    }
    return false;
}

static int parse_request_line(char *h, struct gw_http1_head *out, struct gw_http1_error *err)
{
    char *sp1 = strchr(h, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == h || sp2 == sp1 + 1 || strchr(sp2 + 1, ' '))
        return (int)fail(err, GW_R_BAD_FRAMING, "malformed request line");
    *sp1 = '\0';
    *sp2 = '\0';
    out->method = h;
    out->target = sp1 + 1;
    size_t mlen = (size_t)(sp1 - h);
    if (mlen >= MAX_METHOD)
        return (int)fail(err, GW_R_BAD_FRAMING, "malformed request line");
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar((unsigned char)h[i]))
            return (int)fail(err, GW_R_BAD_FRAMING, "malformed request line");
    for (const char *p = out->target; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7E)
            return (int)fail(err, GW_R_BAD_FRAMING, "invalid character in request target");
    if (out->target[0] != '/')
        return (int)fail(err, GW_R_BAD_FRAMING, "request target is not in origin form");
    if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
        out->http10 = false;
    else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
        out->http10 = true;
    else
        return (int)fail(err, GW_R_BAD_FRAMING, "unsupported HTTP version");
    return 0;
}

int gw_http1_parse(char *h, size_t n, uint64_t max_body, struct gw_http1_head *out,
                   struct gw_http1_error *err)
{
    memset(out, 0, sizeof *out);
    if (n < 4 || memcmp(h + n - 4, "\r\n\r\n", 4) != 0)
        return (int)fail(err, GW_R_BAD_FRAMING, "incomplete request head");
    h[n] = '\0';
    char *eol = strstr(h, "\r\n");
    *eol = '\0';
    if (parse_request_line(h, out, err) != 0)
        return -1;

    int n_cl = 0, n_host = 0, n_te = 0;
    bool keep_alive = false, close = false;
    char *line = eol + 2, *end = h + n - 2; /* the final empty line */
    while (line < end) {
        char *le = strstr(line, "\r\n");
        *le = '\0';
        if (*line == ' ' || *line == '\t')
            return (int)fail(err, GW_R_BAD_FRAMING, "folded header line");
        char *colon = line;
        while (*colon && is_tchar((unsigned char)*colon))
            colon++;
        if (colon == line || *colon != ':')
            return (int)fail(err, GW_R_BAD_FRAMING, "invalid header name");
        *colon = '\0';
        char *v = colon + 1, *ve = le;
        while (*v == ' ' || *v == '\t')
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = '\0';
        for (const char *p = v; *p; p++) {
            unsigned char ch = (unsigned char)*p;
            if ((ch < 0x20 && ch != '\t') || ch == 0x7F)
                return (int)fail(err, GW_R_BAD_FRAMING, "control character in a header value");
        }
        if (out->nhdr == GW_MAX_HEADERS)
            return (int)fail(err, GW_R_HEADERS_TOO_LARGE, NULL);
        out->hdr[out->nhdr].name = line;
        out->hdr[out->nhdr].value = v;
        out->nhdr++;
        if (strcasecmp(line, "content-length") == 0) {
            n_cl++;
            size_t vl = strlen(v);
            if (vl == 0 || vl > 15 || strspn(v, "0123456789") != vl)
                return (int)fail(err, GW_R_BAD_FRAMING, "invalid Content-Length");
            out->content_length = strtoull(v, NULL, 10);
        } else if (strcasecmp(line, "transfer-encoding") == 0) {
            n_te++;
        } else if (strcasecmp(line, "host") == 0) {
            n_host++;
        } else if (strcasecmp(line, "connection") == 0) {
            close |= has_token(v, "close");
            keep_alive |= has_token(v, "keep-alive");
        } else if (strcasecmp(line, "expect") == 0) {
            if (strcasecmp(v, "100-continue") != 0)
                return (int)fail(err, GW_R_BAD_FRAMING, "unsupported Expect header");
            out->expect_continue = true;
        }
        line = le + 2;
    }
    if (n_te)
        return (int)fail(err, GW_R_BAD_FRAMING, "Transfer-Encoding is not accepted on requests");
    if (n_cl > 1)
        return (int)fail(err, GW_R_BAD_FRAMING, "more than one Content-Length");
    if (n_host > 1)
        return (int)fail(err, GW_R_BAD_FRAMING, "more than one Host");
    if (n_host == 0 && !out->http10)
        return (int)fail(err, GW_R_BAD_FRAMING, "missing Host");
    if (out->content_length > 0 &&
        (strcmp(out->method, "HEAD") == 0 || strcmp(out->method, "TRACE") == 0))
        return (int)fail(err, GW_R_BAD_FRAMING, "a HEAD or TRACE request cannot have a body");
    if (out->content_length > max_body)
        return (int)fail(err, GW_R_TOO_LARGE, NULL);
    out->wants_close = close || (out->http10 && !keep_alive);
    return 0;
}

const char *gw_http1_header(const struct gw_header *hdr, size_t n, const char *name, bool *repeated)
{
    const char *found = NULL;
    int count = 0;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(hdr[i].name, name) == 0) {
            found = hdr[i].value;
            count++;
        }
    if (repeated)
        *repeated = count > 1;
    return count == 1 ? found : NULL;
}
