/* test_base64.c — host/b64.c: RFC 4648 vectors, Go-compatible strictness of the standard decoder
 * (padding required, line breaks skipped) and the URL alphabet. */
#include "b64.h"
#include "tap.h"

#include <string.h>

static const char *enc(const char *s, int url)
{
    static char out[128];
    size_t n = pgr_b64_encode((const unsigned char *)s, strlen(s), out, url);
    out[n] = '\0';
    return out;
}

static long dec(const char *s, int url, char *out, size_t *bad)
{
    long n = pgr_b64_decode(s, strlen(s), (unsigned char *)out, url, bad);
    if (n >= 0)
        out[n] = '\0';
    return n;
}

int main(void)
{
    static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *const coded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    char out[128];
    size_t bad = 0;
    for (int i = 0; i < 7; i++) {
        CHECK_STR(enc(plain[i], 0), coded[i], "RFC 4648 vector encodes");
        CHECK(dec(coded[i], 0, out, &bad) == (long)strlen(plain[i]) && strcmp(out, plain[i]) == 0,
              "RFC 4648 vector decodes");
    }
    CHECK_INT(pgr_b64_encoded_len(4), 8, "encoded length rounds up to 4");
    CHECK(dec("Zm9v\nYmFy\r\n", 0, out, &bad) == 6 && strcmp(out, "foobar") == 0, "line breaks skipped");
    CHECK(dec("Zm9vYg", 0, out, &bad) < 0 && bad == 6, "missing padding refused (as Kubernetes does)");
    CHECK(dec("Zm9vYg=", 0, out, &bad) < 0, "half padding refused");
    CHECK(dec("Zm9v YmFy", 0, out, &bad) < 0 && bad == 4, "space refused at its offset");
    CHECK(dec("Zg==Zg==", 0, out, &bad) < 0 && bad == 4, "data after padding refused");
    CHECK(dec("Z===", 0, out, &bad) < 0, "one sextet plus padding refused");
    CHECK(dec("Zm-_", 0, out, &bad) < 0 && bad == 2, "URL alphabet refused by the standard decoder");
    CHECK_STR(enc("\xfb\xff\xfe", 0), "+//+", "standard alphabet");
    CHECK_STR(enc("\xfb\xff\xfe", 1), "-__-", "URL alphabet");
    CHECK_STR(enc("f", 1), "Zg", "URL encoding has no padding");
    CHECK(dec("Zg", 1, out, &bad) == 1 && out[0] == 'f', "URL decoding without padding");
    CHECK(dec("Zg==", 1, out, &bad) == 1 && out[0] == 'f', "URL decoding with padding");
    CHECK(dec("Z", 1, out, &bad) < 0, "a lone sextet is never valid");
    CHECK(dec("+//+", 1, out, &bad) < 0 && bad == 0, "standard alphabet refused by the URL decoder");

    unsigned char all[256], back[300];
    char text[400];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    size_t n = pgr_b64_encode(all, 256, text, 0);
    CHECK(pgr_b64_decode(text, n, back, 0, &bad) == 256 && memcmp(all, back, 256) == 0,
          "every byte value round-trips");
    return tap_done();
}
