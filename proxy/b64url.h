/* b64url: strict, canonical base64url (RFC 4648 §5) as JWS compact serialization needs it.
 *
 * Decoding accepts only the alphabet A-Z a-z 0-9 - _, no padding, no other byte, a length that
 * is not 1 mod 4, and zero unused bits in the last character: exactly one spelling per byte
 * string, so a token cannot be altered without changing its bytes (libjwt's own decoder skips
 * foreign characters).
 * Threads: any; no state.
 */
#ifndef GW_B64URL_H
#define GW_B64URL_H

#include <stddef.h>

/* Bytes needed to decode len characters. */
#define GW_B64URL_DECODED_MAX(len) (((len) / 4) * 3 + 2)
/* Characters (plus a NUL) needed to encode len bytes. */
#define GW_B64URL_ENCODED_SIZE(len) ((((len) + 2) / 3) * 4 + 1)

/* Decodes in[0..len) into out (at least GW_B64URL_DECODED_MAX(len) bytes). Returns the decoded
 * length, or -1 when the input is not strict canonical base64url. */
long gw_b64url_decode(const char *in, size_t len, unsigned char *out);

/* Encodes without padding; out gets a NUL. Returns the number of characters. */
size_t gw_b64url_encode(const unsigned char *in, size_t len, char *out);

#endif
