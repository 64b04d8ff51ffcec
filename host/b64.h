/* b64.h — base64 in C (RFC 4648): the standard alphabet with padding, as Kubernetes Secret data
 * uses it, and the URL-safe alphabet. Used by pgr.base64 and by the YAML decoder's !!binary. */
#ifndef PGR_B64_H
#define PGR_B64_H

#include <stddef.h>

/* Encoded length of n bytes, with padding. */
size_t pgr_b64_encoded_len(size_t n);

/* Writes the encoding of in[0..n) to out (pgr_b64_encoded_len(n) bytes, padded; url: '-' and '_'
 * instead of '+' and '/', and no padding). Returns the number of bytes written. */
size_t pgr_b64_encode(const unsigned char *in, size_t n, char *out, int url);

/* Decodes in[0..n) into out (room for n/4*3+3 bytes). Standard: as Go's base64.StdEncoding (what
 * Kubernetes uses for Secret data): line breaks are skipped, padding is required, anything else is
 * an error. URL: the URL alphabet, padding optional. Returns the decoded length, or -1 with
 * *bad_offset set to the offending input byte. */
long pgr_b64_decode(const char *in, size_t n, unsigned char *out, int url, size_t *bad_offset);

#endif
