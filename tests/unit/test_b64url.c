/* Unit tests of strict base64url (proxy/b64url.c) against SPEC §4.1: canonical RFC 4648 §5
 * spelling only (alphabet A-Za-z0-9-_, no padding, no other byte, length not 1 mod 4, zero
 * unused bits), and unpadded encoding. Buffers are allocated at exactly the size the header
 * promises, so the sanitizer build catches an overrun. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Decodes s[0..len) into an exactly sized buffer; returns the result, *out the bytes (freed by
 * the caller). */
static long dec(const char *s, size_t len, unsigned char **out)
{
    unsigned char *buf = malloc(GW_B64URL_DECODED_MAX(len) + 1);
    ck_assert_ptr_nonnull(buf);
    long n = gw_b64url_decode(s, len, buf);
    *out = buf;
    return n;
}

static long dec_str(const char *s)
{
    unsigned char *b;
    long n = dec(s, strlen(s), &b);
    free(b);
    return n;
}

/* Independent reference encoder (RFC 4648 §5, no padding). */
static void ref_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = ALPHABET[v >> 18 & 63];
        out[o++] = ALPHABET[v >> 12 & 63];
        out[o++] = ALPHABET[v >> 6 & 63];
        out[o++] = ALPHABET[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = ALPHABET[v >> 18 & 63];
        out[o++] = ALPHABET[v >> 12 & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = ALPHABET[v >> 18 & 63];
        out[o++] = ALPHABET[v >> 12 & 63];
        out[o++] = ALPHABET[v >> 6 & 63];
    }
    out[o] = '\0';
}

/* ---- round trips ---- */

START_TEST(test_b64url_round_trip_lengths_0_to_64)
{
    for (size_t len = 0; len <= 64; len++) {
        for (int pattern = 0; pattern < 3; pattern++) {
            unsigned char in[64];
            for (size_t i = 0; i < len; i++)
                in[i] = pattern == 0   ? (unsigned char)(i * 37 + 11)
                        : pattern == 1 ? 0xff
                                       : (unsigned char)(0xfb ^ i);
            char *enc = malloc(GW_B64URL_ENCODED_SIZE(len));
            char ref[128];
            ck_assert_ptr_nonnull(enc);
            size_t n = gw_b64url_encode(in, len, enc);
            ref_encode(in, len, ref);
            ck_assert_msg(n == strlen(ref), "len %zu: encoded %zu chars, want %zu", len, n,
                          strlen(ref));
            ck_assert_msg(strcmp(enc, ref) == 0, "len %zu: got %s want %s", len, enc, ref);
            ck_assert_ptr_null(strchr(enc, '='));
            unsigned char *back;
            long m = dec(enc, n, &back);
            ck_assert_msg(m == (long)len, "len %zu: decoded %ld bytes", len, m);
            ck_assert_msg(len == 0 || memcmp(back, in, len) == 0, "len %zu: bytes differ", len);
            free(back);
            free(enc);
        }
    }
}
END_TEST

START_TEST(test_b64url_rfc4648_vectors)
{
    static const struct {
        const char *plain, *enc;
    } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
             {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char out[32];
        size_t n = gw_b64url_encode((const unsigned char *)v[i].plain, strlen(v[i].plain), out);
        ck_assert_uint_eq(n, strlen(v[i].enc));
        ck_assert_str_eq(out, v[i].enc);
        unsigned char *b;
        long m = dec(v[i].enc, strlen(v[i].enc), &b);
        ck_assert_int_eq(m, (long)strlen(v[i].plain));
        ck_assert(memcmp(b, v[i].plain, (size_t)m) == 0);
        free(b);
    }
}
END_TEST

START_TEST(test_b64url_uses_url_alphabet)
{
    static const unsigned char in[] = {0xfb, 0xff, 0xbf};
    char out[8];
    ck_assert_uint_eq(gw_b64url_encode(in, 3, out), 4);
    ck_assert_str_eq(out, "-_-_");
    unsigned char *b;
    ck_assert_int_eq(dec("-_8", 3, &b), 2);
    ck_assert_int_eq(b[0], 0xfb);
    ck_assert_int_eq(b[1], 0xff);
    free(b);
}
END_TEST

START_TEST(test_b64url_decode_reads_only_len_bytes)
{
    unsigned char *b;
    ck_assert_int_eq(dec("Zm9v!!!=", 4, &b), 3);
    ck_assert(memcmp(b, "foo", 3) == 0);
    free(b);
    ck_assert_int_eq(dec("Zm9v.Zm9v", 4, &b), 3);
    free(b);
    ck_assert_int_eq(dec("", 0, &b), 0);
    free(b);
}
END_TEST

/* ---- forbidden forms ---- */

START_TEST(test_b64url_padding_refused)
{
    ck_assert_int_eq(dec_str("Zg=="), -1);
    ck_assert_int_eq(dec_str("Zg="), -1);
    ck_assert_int_eq(dec_str("Zm8="), -1);
    ck_assert_int_eq(dec_str("Zm9v===="), -1);
    ck_assert_int_eq(dec_str("===="), -1);
    ck_assert_int_eq(dec_str("Z=g"), -1);
}
END_TEST

START_TEST(test_b64url_standard_alphabet_refused)
{
    ck_assert_int_eq(dec_str("+/8"), -1);
    ck_assert_int_eq(dec_str("-/8"), -1);
    ck_assert_int_eq(dec_str("+_8"), -1);
    ck_assert_int_eq(dec_str("AAA+"), -1);
    ck_assert_int_eq(dec_str("AAA/"), -1);
}
END_TEST

START_TEST(test_b64url_whitespace_and_dots_refused)
{
    ck_assert_int_eq(dec_str("Zm 9v"), -1);
    ck_assert_int_eq(dec_str(" Zm9v"), -1);
    ck_assert_int_eq(dec_str("Zm9v "), -1);
    ck_assert_int_eq(dec_str("Zm9v\n"), -1);
    ck_assert_int_eq(dec_str("Zm\r\n9v"), -1);
    ck_assert_int_eq(dec_str("Zm\t9v"), -1);
    ck_assert_int_eq(dec_str("Zm.9v"), -1);
    ck_assert_int_eq(dec_str("."), -1);
    ck_assert_int_eq(dec_str("Zm9v."), -1);
}
END_TEST

START_TEST(test_b64url_non_ascii_and_nul_refused)
{
    ck_assert_int_eq(dec_str("\xc3\xa9"
                             "AA"),
                     -1);
    ck_assert_int_eq(dec_str("AAA\x80"), -1);
    ck_assert_int_eq(dec_str("AAA\xff"), -1);
    unsigned char *b;
    ck_assert_int_eq(dec("AA\0A", 4, &b), -1);
    free(b);
    ck_assert_int_eq(dec("AAA\0", 4, &b), -1);
    free(b);
}
END_TEST

/* Every byte outside the alphabet, in every position of a 4-character group. */
START_TEST(test_b64url_every_foreign_byte_refused)
{
    for (int c = 0; c < 256; c++) {
        if (c != 0 && strchr(ALPHABET, c) != NULL)
            continue;
        for (int pos = 0; pos < 4; pos++) {
            char s[5] = "AAAA";
            s[pos] = (char)c;
            unsigned char *b;
            long n = dec(s, 4, &b);
            free(b);
            ck_assert_msg(n == -1, "byte 0x%02x at %d accepted (%ld)", c, pos, n);
        }
    }
}
END_TEST

START_TEST(test_b64url_length_1_mod_4_refused)
{
    ck_assert_int_eq(dec_str("A"), -1);
    ck_assert_int_eq(dec_str("AAAAA"), -1);
    ck_assert_int_eq(dec_str("Zm9vY"), -1);
    ck_assert_int_eq(dec_str("AAAAAAAAA"), -1);
}
END_TEST

START_TEST(test_b64url_nonzero_unused_bits_refused)
{
    unsigned char *b;
    ck_assert_int_eq(dec("AA", 2, &b), 1);
    ck_assert_int_eq(b[0], 0);
    free(b);
    ck_assert_int_eq(dec_str("AB"), -1);
    ck_assert_int_eq(dec("AAA", 3, &b), 2);
    free(b);
    ck_assert_int_eq(dec_str("AAB"), -1);
    ck_assert_int_eq(dec_str("Zh"), -1);  /* "f" is Zg */
    ck_assert_int_eq(dec_str("Zm9"), -1); /* "fo" is Zm8 */
    ck_assert_int_eq(dec_str("Zm9vYh"), -1);
}
END_TEST

/* Exhaustive: after 2 characters 4 bits are unused, after 3 characters 2 bits. */
START_TEST(test_b64url_unused_bits_exhaustive)
{
    for (int v = 0; v < 64; v++) {
        char two[3] = {'Q', ALPHABET[v], 0};
        char three[4] = {'Q', 'Q', ALPHABET[v], 0};
        long n2 = dec_str(two), n3 = dec_str(three);
        ck_assert_msg(n2 == ((v & 15) == 0 ? 1 : -1), "%s gave %ld", two, n2);
        ck_assert_msg(n3 == ((v & 3) == 0 ? 2 : -1), "%s gave %ld", three, n3);
    }
}
END_TEST

static Suite *b64url_suite(void)
{
    Suite *s = suite_create("b64url");
    TCase *tc = tcase_create("b64url");
    tcase_add_test(tc, test_b64url_round_trip_lengths_0_to_64);
    tcase_add_test(tc, test_b64url_rfc4648_vectors);
    tcase_add_test(tc, test_b64url_uses_url_alphabet);
    tcase_add_test(tc, test_b64url_decode_reads_only_len_bytes);
    tcase_add_test(tc, test_b64url_padding_refused);
    tcase_add_test(tc, test_b64url_standard_alphabet_refused);
    tcase_add_test(tc, test_b64url_whitespace_and_dots_refused);
    tcase_add_test(tc, test_b64url_non_ascii_and_nul_refused);
    tcase_add_test(tc, test_b64url_every_foreign_byte_refused);
    tcase_add_test(tc, test_b64url_length_1_mod_4_refused);
    tcase_add_test(tc, test_b64url_nonzero_unused_bits_refused);
    tcase_add_test(tc, test_b64url_unused_bits_exhaustive);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(b64url_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
