#include "discovery.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define MAX_DOC_BYTES (1u << 20)
/* a document nests little; unrelated members may, and deeper than this is no metadata */
#define MAX_DOC_DEPTH 32
#define EXCERPT 80
#define WELL_KNOWN "/.well-known/openid-configuration"

int gw_discovery_url(const char *issuer, char *out, size_t cap, char *why, size_t whylen)
{
    if (strpbrk(issuer, "?#") != NULL) {
        snprintf(why, whylen, "an issuer with a query or a fragment has no discovery document");
        return -1;
    }
    size_t n = strlen(issuer);
    if (n > 0 && issuer[n - 1] == '/')
        n--;
    size_t wl = sizeof WELL_KNOWN; /* with its NUL */
    if (n + wl > cap) {
        snprintf(why, whylen, "the issuer is too long for a discovery URL");
        return -1;
    }
    for (size_t i = 0; i < n; i++) /* the issuer without its '/', then the path and NUL */
        out[i] = issuer[i];
    memcpy(out + n, WELL_KNOWN, wl);
    return 0;
}

/* s for a message: at most EXCERPT bytes, anything but printable ASCII (quotes and
 * backslashes too) as '?', so a document cannot write lines or escapes into the log. */
static const char *excerpt(const char *s, char out[EXCERPT + 4])
{
    size_t i = 0;
    for (; i < EXCERPT && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c > 0x7E || c == '"' || c == '\\' ? '?' : (char)c;
    }
    snprintf(out + i, 4, "%s", s[i] ? "..." : "");
    return out;
}

/* NULL when uri is a jwks_uri the fetcher may use, else what is wrong with it. */
static const char *uri_problem(const char *uri)
{
    size_t n = strlen(uri);
    if (n > GW_DISCOVERY_MAX_URI)
        return "is too long";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)uri[i] <= 0x20 || (unsigned char)uri[i] >= 0x7F)
            return "holds a character that is not printable ASCII";
    if (strncmp(uri, "https://", 8) != 0)
        return "is not an https URL";
    const char *host = uri + 8;
    size_t authority = strcspn(host, "/?#");
    if (authority == 0 || host[0] == ':')
        return "has no host";
    if (memchr(host, '@', authority) != NULL)
        return "carries user information";
    if (strchr(uri, '#') != NULL)
        return "has a fragment";
    return NULL;
}

char *gw_discovery_parse(const char *doc, size_t len, const char *issuer, char *why, size_t whylen)
{
    struct gw_json_error je;
    struct gw_json_opts o = {.max_bytes = MAX_DOC_BYTES, .max_depth = MAX_DOC_DEPTH};
    cJSON *d = gw_json_parse(doc, len, &o, &je);
    if (d == NULL) {
        snprintf(why, whylen, "the document is not valid JSON: %s at byte %zu", je.msg, je.offset);
        return NULL;
    }
    char ex[EXCERPT + 4];
    char *found = NULL;
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(d, "issuer");
    const cJSON *uri = cJSON_GetObjectItemCaseSensitive(d, "jwks_uri");
    const char *problem;
    if (!cJSON_IsObject(d))
        snprintf(why, whylen, "the document is not a JSON object");
    else if (iss == NULL)
        snprintf(why, whylen, "the document has no \"issuer\"");
    else if (!cJSON_IsString(iss))
        snprintf(why, whylen, "\"issuer\" in the document is not a string");
    /* the strict parser refused NUL, so the two strings end where their bytes do */
    else if (strcmp(iss->valuestring, issuer) != 0)
        snprintf(why, whylen, "issuer \"%s\" in the document is not the configured issuer",
                 excerpt(iss->valuestring, ex));
    else if (uri == NULL)
        snprintf(why, whylen, "the document has no \"jwks_uri\"");
    else if (!cJSON_IsString(uri))
        snprintf(why, whylen, "\"jwks_uri\" in the document is not a string");
    else if ((problem = uri_problem(uri->valuestring)) != NULL)
        snprintf(why, whylen, "jwks_uri \"%s\" %s", excerpt(uri->valuestring, ex), problem);
    else if ((found = strdup(uri->valuestring)) == NULL)
        snprintf(why, whylen, "out of memory");
    cJSON_Delete(d);
    return found;
}
