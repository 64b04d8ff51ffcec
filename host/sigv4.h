/* sigv4.h — AWS Signature Version 4 (pure C, OpenSSL): canonical request, string to sign, signing
 * key and the Authorization header value. No I/O and no Lua; s3.c builds requests with it. */
#ifndef PGR_SIGV4_H
#define PGR_SIGV4_H

#include <stddef.h>
#include <time.h>

typedef struct {
    const char *name;  /* any case; signed lower-cased */
    const char *value; /* trimmed, inner runs of spaces folded, as SigV4 asks */
} pgr_sigv4_header;

typedef struct {
    const char *access_key;
    const char *secret_key;
    const char *region;  /* "us-east-1" */
    const char *service; /* "s3" */
} pgr_sigv4_key;

/* SHA-256 of the empty payload, the x-amz-content-sha256 of a GET/HEAD. */
#define PGR_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Signs one request. path is the URI path exactly as sent (already percent-encoded; S3 does not
 * encode it twice); query is the query string as sent without '?' ("" or NULL for none; its
 * parameters must already be percent-encoded and are sorted here); headers are all the headers to
 * sign (host and x-amz-date must be among them); payload_sha256 is the hex hash (or
 * "UNSIGNED-PAYLOAD"); amz_date is "YYYYMMDDTHHMMSSZ".
 * Writes "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..." into auth and, when
 * signature is not NULL, the 64 hex digits into signature[65]. Returns 0, or -1 when auth is too
 * small or memory runs out. */
int pgr_sigv4_sign(const pgr_sigv4_key *key, const char *method, const char *path, const char *query,
                   const pgr_sigv4_header *headers, size_t nheaders, const char *payload_sha256,
                   const char *amz_date, char *auth, size_t authsz, char signature[65]);

/* Hex SHA-256 of data into out[65]. */
void pgr_sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/* "YYYYMMDDTHHMMSSZ" of t (UTC) into out[17]. */
void pgr_sigv4_amz_date(time_t t, char out[17]);

#endif
