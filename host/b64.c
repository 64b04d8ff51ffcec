/* b64.c — base64 encoding and strict decoding (see b64.h). Strictness mirrors Go's decoder so a
 * value pgr accepts is one the API server accepts too. */
#include "b64.h"

static const char std_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t pgr_b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t pgr_b64_encode(const unsigned char *in, size_t n, char *out, int url)
{
    const char *a = url ? url_alphabet : std_alphabet;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = a[(v >> 6) & 63];
        else if (!url)
            out[o++] = '=';
        if (!url)
            out[o++] = '=';
    }
    return o;
}

static int value_of(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

static size_t emit_partial(unsigned acc, int have, unsigned char *out)
{
    /* 2 sextets carry one byte, 3 carry two; the spare low bits are ignored, as Go does */
    if (have == 2) {
        out[0] = (unsigned char)(acc >> 4);
        return 1;
    }
    out[0] = (unsigned char)(acc >> 10);
    out[1] = (unsigned char)(acc >> 2);
    return 2;
}

long pgr_b64_decode(const char *in, size_t n, unsigned char *out, int url, size_t *bad_offset)
{
    unsigned acc = 0;
    int have = 0; /* sextets in the current quantum */
    size_t o = 0, i = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '\r' || c == '\n')
            continue;
        if (c == '=')
            break;
        int v = value_of(c, url);
        if (v < 0) {
            *bad_offset = i;
            return -1;
        }
        acc = acc << 6 | (unsigned)v;
        if (++have == 4) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            acc = 0;
            have = 0;
        }
    }
    if (i < n) {
        /* padding: "xx==" or "xxx=", then nothing but line breaks */
        if (have < 2) {
            *bad_offset = i;
            return -1;
        }
        int need = 4 - have;
        for (; i < n; i++) {
            unsigned char c = (unsigned char)in[i];
            if (c == '\r' || c == '\n')
                continue;
            if (c != '=' || need == 0) {
                *bad_offset = i;
                return -1;
            }
            need--;
        }
        if (need) {
            *bad_offset = n;
            return -1;
        }
        return (long)(o + emit_partial(acc, have, out + o));
    }
    if (have == 0)
        return (long)o;
    if (!url || have == 1) {
        /* standard base64 needs its padding; one leftover sextet is never valid */
        *bad_offset = n;
        return -1;
    }
    return (long)(o + emit_partial(acc, have, out + o));
}
