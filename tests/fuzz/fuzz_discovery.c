/* The discovery document reader on any bytes, for one configured issuer; whatever it hands
 * the fetcher must be a jwks_uri it may use. First byte: the document, or the bytes as an
 * issuer for the document's URL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery.h"

#define ISSUER "https://idp.fuzz"
#define WELL_KNOWN "/.well-known/openid-configuration"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    char why[300];
    if (data[0] % 2 == 0) {
        char *uri = gw_discovery_parse(s, n, ISSUER, why, sizeof why);
        if (uri) {
            size_t ul = strlen(uri);
            if (ul > GW_DISCOVERY_MAX_URI || strncmp(uri, "https://", 8) != 0 ||
                strchr(uri, '#') != NULL)
                abort();
            for (size_t i = 0; i < ul; i++)
                if ((unsigned char)uri[i] <= 0x20 || (unsigned char)uri[i] >= 0x7F)
                    abort();
        } else {
            /* the reason is one printable line: the fetcher logs it as it is */
            for (const char *p = why; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7F)
                    abort();
        }
        free(uri);
        return 0;
    }
    char *issuer = malloc(n + 1);
    memcpy(issuer, s, n);
    issuer[n] = '\0';
    char url[1024];
    if (gw_discovery_url(issuer, url, sizeof url, why, sizeof why) == 0) {
        size_t ul = strlen(url), wl = strlen(WELL_KNOWN), il = strlen(issuer);
        if (ul < wl || strcmp(url + ul - wl, WELL_KNOWN) != 0 ||
            ul - wl != il - (il > 0 && issuer[il - 1] == '/') || strncmp(url, issuer, ul - wl) != 0)
            abort();
    }
    free(issuer);
    return 0;
}
