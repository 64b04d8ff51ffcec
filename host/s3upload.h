/* s3upload.h — a streamed upload of one S3 object in constant memory, no Lua: a multipart upload
 * (CreateMultipartUpload, UploadPart, CompleteMultipartUpload) whose parts a worker thread sends on a
 * connection of its own while the caller fills the next one; each part carries its Content-MD5 (the
 * server checks it) and is retried on transient failures; any failure aborts the upload
 * (AbortMultipartUpload), so no object and no partial object appears under the key.
 *
 *   pgr_s3_upload *u = pgr_s3_upload_open(s3, "postgres-backup", "pgr/x.psql", NULL, &err);
 *   while ((n = produce(buf)) > 0)
 *       if (pgr_s3_upload_write(u, buf, n, &err) != 0) break;       // blocks while both parts are busy
 *   if (ok) rc = pgr_s3_upload_finish(u, &res, &err);                 // the object exists only now
 *   pgr_s3_upload_free(u);                                            // aborts when unfinished
 *
 * Memory: two part buffers (part_size each; the size doubles every 1000 parts so that S3's 10000-part
 * limit is never met). The pgr_s3 client is used by the caller's thread only (create, complete, abort);
 * the worker uses a clone of it. */
#ifndef PGR_S3UPLOAD_H
#define PGR_S3UPLOAD_H

#include "s3core.h"

#include <stddef.h>

typedef struct pgr_s3_upload pgr_s3_upload;

typedef struct {
    size_t part_size;         /* first parts' size; 0 = 8 MiB; at least 5 MiB (S3's minimum) */
    int attempts;             /* tries of each request on transient failures; 0 = 5 */
    const char *content_type; /* NULL = application/octet-stream */
} pgr_s3_upload_options;

typedef struct {
    long long size; /* bytes uploaded */
    int parts;
    char etag[128]; /* the object's ETag ("<md5 of the parts' md5s>-<parts>"), without quotes */
} pgr_s3_upload_result;

/* Starts the upload (CreateMultipartUpload) and its worker. The uploader must not outlive s. */
pgr_s3_upload *pgr_s3_upload_open(pgr_s3 *s, const char *bucket, const char *key,
                                  const pgr_s3_upload_options *opts, pgr_s3_error *err);
/* Copies len bytes in; when a part is full it goes to the worker (waiting while the worker still
 * sends the previous one). 0, or -1 when a part could not be sent (err; the upload is then aborted
 * by pgr_s3_upload_abort / _free). */
int pgr_s3_upload_write(pgr_s3_upload *u, const void *data, size_t len, pgr_s3_error *err);
/* Sends the last part, completes the upload and checks the object with a HEAD: 0 (res filled) when
 * it exists with exactly the bytes written; -1 (err) when it could not be completed — the upload is
 * aborted then — or when its size differs (code "size_mismatch": it is deleted): no object is left. */
int pgr_s3_upload_finish(pgr_s3_upload *u, pgr_s3_upload_result *res, pgr_s3_error *err);
/* Stops the worker and aborts the upload unless it was completed (its parts are deleted). 0, or -1
 * when the server refused the abort (err may be NULL). Safe twice. */
int pgr_s3_upload_abort(pgr_s3_upload *u, pgr_s3_error *err);
/* Aborts when unfinished, frees. NULL is fine. */
void pgr_s3_upload_free(pgr_s3_upload *u);

const char *pgr_s3_upload_id(const pgr_s3_upload *u);
long long pgr_s3_upload_bytes(const pgr_s3_upload *u); /* bytes written in so far */
int pgr_s3_upload_parts(const pgr_s3_upload *u);       /* parts the server has taken */

/* Aborts the multipart upload upload_id of bucket/key (one left by a killed process). 0, or -1 (err;
 * code "NoSuchUpload" when it is gone already). */
int pgr_s3_abort_upload(pgr_s3 *s, const char *bucket, const char *key, const char *upload_id, pgr_s3_error *err);

#endif
