/* s3core.h — the S3 client core (no Lua): SigV4-signed requests over httpcore, ListObjectsV2 with
 * continuation tokens parsed by expat, S3 error documents, and a pulled object reader that resumes
 * a cut download with Range from the last byte received and verifies size and MD5. */
#ifndef PGR_S3CORE_H
#define PGR_S3CORE_H

#include "httpcore.h"

#include <stddef.h>

typedef struct pgr_s3 pgr_s3;
typedef struct pgr_s3_reader pgr_s3_reader;

typedef struct {
    const char *endpoint;      /* "https://rgw.example:8080" (no trailing path) */
    const char *region;        /* NULL = "us-east-1" */
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL unless temporary credentials */
    const char *source;        /* where the credentials came from, for messages ("environment") */
    int virtual_host;          /* bucket.host/key instead of host/bucket/key (RGW wants path style) */
    pgr_http_config http;      /* TLS, timeouts (bearer/basic auth fields are ignored) */
} pgr_s3_config;

typedef struct {
    char code[64];      /* S3's error code ("NoSuchKey", "AccessDenied", "SignatureDoesNotMatch",
                         * "NoSuchBucket", ...), or httpcore's kind ("connect", "timeout", "transfer",
                         * "tls", ...), or "md5_mismatch", "size_mismatch", "changed", "io" */
    long status;        /* HTTP status when the server answered, else 0 */
    char message[1024]; /* what happened and what to check; never the secret */
} pgr_s3_error;

/* Fills err (when not NULL): S3's or pgr's error code, the HTTP status (0 when none), the message. */
void pgr_s3_set_error(pgr_s3_error *err, const char *code, long status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct {
    const char *key;
    long long size;
    const char *etag;          /* without quotes */
    const char *last_modified; /* as S3 gives it: "2022-09-14T03:10:04.000Z" (list) or HTTP date (head) */
} pgr_s3_object;

pgr_s3 *pgr_s3_new(const pgr_s3_config *cfg, pgr_s3_error *err);
void pgr_s3_free(pgr_s3 *s);

/* Lists every key under prefix (NULL = all), following continuation tokens; calls fn per object in
 * key order; fn returns non-zero to stop early. 0 or -1 (err). A server that repeats a continuation
 * token, sends a key that does not come after the one before, or more than
 * PGR_S3_LIST_MAX_EMPTY_PAGES truncated pages in a row without a key fails the listing ("bad_response"):
 * it would never end. fn bounds how many objects it takes. */
#define PGR_S3_LIST_MAX_EMPTY_PAGES 100
typedef int (*pgr_s3_list_fn)(void *ud, const pgr_s3_object *obj);
int pgr_s3_list(pgr_s3 *s, const char *bucket, const char *prefix, pgr_s3_list_fn fn, void *ud,
                pgr_s3_error *err);

/* HEAD of one object; fn is called once with it. 0 or -1 (err, code "NoSuchKey" on 404). */
int pgr_s3_head(pgr_s3 *s, const char *bucket, const char *key, pgr_s3_list_fn fn, void *ud, pgr_s3_error *err);

/* PUT of an object from memory; creating a bucket (key NULL); DELETE of an object. 0 or -1. */
int pgr_s3_put(pgr_s3 *s, const char *bucket, const char *key, const void *data, size_t len, pgr_s3_error *err);
/* PUT of an object streamed from a file (UNSIGNED-PAYLOAD). */
int pgr_s3_put_file(pgr_s3 *s, const char *bucket, const char *key, const char *path, pgr_s3_error *err);
int pgr_s3_delete(pgr_s3 *s, const char *bucket, const char *key, pgr_s3_error *err);

/* One signed request, for the other S3 cores (s3upload.c): method on bucket/key (key NULL: the
 * bucket) with an already encoded query; the body from memory (NULL: none), signed by its SHA-256
 * unless unsigned_payload; extra headers (name, value, ..., NULL) are sent and signed. 0 when the
 * server answered 2xx (resp filled), -1 with err (S3's error document read). */
int pgr_s3_request(pgr_s3 *s, const char *method, const char *bucket, const char *key, const char *query,
                   const void *body, size_t len, int unsigned_payload, const char *const *extra,
                   pgr_http_response *resp, pgr_s3_error *err);
/* A client with the same endpoint, credentials and TLS settings and its own connection (another
 * thread may use it). NULL with err. */
pgr_s3 *pgr_s3_clone(const pgr_s3 *s, pgr_s3_error *err);

/* Opens an object for pulled reading with its own connection. At most max_resumes Range requests
 * repair cut connections (0 = never resume). The reader must not outlive s. NULL on failure. */
pgr_s3_reader *pgr_s3_open(pgr_s3 *s, const char *bucket, const char *key, int max_resumes, pgr_s3_error *err);
/* Bytes [start, end) of the object `like` reads, as a reader of their own: same object (If-Match on
 * its ETag, so a replaced object fails instead of mixing), same resume count, no MD5 (a range has no
 * checksum of its own; the size is checked). Safe to call from another thread than `like`'s, while
 * `like` is being read: it only reads what `like` fixed when it was opened. */
pgr_s3_reader *pgr_s3_open_range(const pgr_s3_reader *like, long long start, long long end, pgr_s3_error *err);
/* Reads ahead of the caller on a thread of its own, holding at most `bytes` it has not asked for yet
 * (0: no read-ahead). The thread then owns the connection: it resumes cut connections and hashes;
 * pgr_s3_read hands over what it fetched, and the failure it met after the bytes before it.
 * pgr_s3_reader_close stops it at once wherever it waits (the network, a resume, a full buffer).
 * Call once, before reading on. 0 or -1 (err). */
int pgr_s3_reader_readahead(pgr_s3_reader *r, size_t bytes, pgr_s3_error *err);
size_t pgr_s3_reader_readahead_size(const pgr_s3_reader *r); /* 0 without a read-ahead */
size_t pgr_s3_reader_buffered(const pgr_s3_reader *r);       /* fetched, not yet read */
/* Bytes [start, end) of bucket/key as a reader of its own, without a whole-object GET first (the tail of
 * a dump, read for its completion trailer): a Range request, If-Match on etag when one is given (the
 * object listed, not one that replaced it), at most max_resumes resumes, no MD5. end must not pass the
 * object's size (the server would answer fewer bytes: size_mismatch). */
pgr_s3_reader *pgr_s3_open_bytes(pgr_s3 *s, const char *bucket, const char *key, const char *etag, long long start,
                                 long long end, int max_resumes, pgr_s3_error *err);
/* Reads up to cap bytes: > 0 count, 0 at the end (after size and, for single-part ETags, MD5 were
 * checked), -1 on failure (err). */
long pgr_s3_read(pgr_s3_reader *r, char *buf, size_t cap, pgr_s3_error *err);
long long pgr_s3_reader_size(const pgr_s3_reader *r);     /* Content-Length of the object */
long long pgr_s3_reader_offset(const pgr_s3_reader *r);   /* bytes delivered to the caller so far */
int pgr_s3_reader_resumes(const pgr_s3_reader *r);        /* Range requests made so far */
const char *pgr_s3_reader_etag(const pgr_s3_reader *r);   /* without quotes */
/* 1 when the MD5 was checked against the ETag (known once read returned 0), 0 when the ETag is not
 * an MD5 (multipart) */
int pgr_s3_reader_md5_checked(const pgr_s3_reader *r);
void pgr_s3_reader_close(pgr_s3_reader *r);

/* Downloads an object to path: written to "path.part-PID" (0600), fsynced, renamed over path, the
 * directory fsynced. The size is always checked; the MD5 (single-part ETags) when verify_md5. progress (may be NULL) is called after each chunk with the reader; it returns
 * non-zero to stop. On failure the temporary file is removed. 0 or -1. */
typedef int (*pgr_s3_progress_fn)(void *ud, const pgr_s3_reader *r);
typedef struct {
    long long size;
    char etag[128];
    int md5_checked;
    int resumes;
} pgr_s3_download_result;
int pgr_s3_download(pgr_s3 *s, const char *bucket, const char *key, const char *path, int max_resumes,
                    int verify_md5, pgr_s3_progress_fn progress, void *ud, pgr_s3_download_result *res,
                    pgr_s3_error *err);

#endif
