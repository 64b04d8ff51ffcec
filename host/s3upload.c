/* s3upload.c — the multipart upload declared in s3upload.h: two part buffers, a worker thread with a
 * client of its own, Content-MD5 on every part, retries with backoff, complete or abort. */
#include "s3upload.h"

#include "b64.h"
#include "thread.h"

#include <expat.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MIN_PART (5u << 20)
#define DEFAULT_PART (8u << 20)
#define MAX_PART_SIZE (5ull << 30)
#define MAX_PARTS 10000

typedef struct {
    int number;
    long long size;
    char etag[80];
} part;

struct pgr_s3_upload {
    pgr_s3 *s;  /* the caller's client: create, complete, abort */
    pgr_s3 *ws; /* the worker's clone */
    char *bucket, *key, *id, *content_type;
    int attempts;
    size_t first_part;
    /* the two buffers: the caller fills buf[fill]; the worker sends the other */
    char *buf[2];
    size_t cap[2], len[2];
    int fill;
    long long bytes;
    int next_part;
    part *parts;
    size_t nparts, parts_cap;
    /* the worker */
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int job, job_buf, job_part;
    size_t job_len;
    int stop, failed;   /* under mu */
    atomic_int cancel;  /* read by the worker's retries without the lock */
    pgr_s3_error werr;
    int completed, aborted;
};

/* Failures worth another try: the connection's, the server's (5xx, 429, SlowDown), a part that
 * arrived damaged (BadDigest). */
static int transient(const pgr_s3_error *e)
{
    static const char *const codes[] = { "transfer", "timeout", "connect", "resolve", "SlowDown",
                                          "RequestTimeout", "BadDigest", "InternalError",
                                          "ServiceUnavailable", "OperationAborted", NULL };
    if (e->status >= 500 || e->status == 429)
        return 1;
    for (const char *const *c = codes; *c; c++)
        if (!strcmp(e->code, *c))
            return 1;
    return 0;
}

/* Sleeps before attempt `attempt` (2, 3, ...): 0.2 s doubling up to 5 s; a cancel cuts it short. */
static void backoff(pgr_s3_upload *u, int attempt)
{
    long ms = 200L << (attempt - 2 < 5 ? attempt - 2 : 5);
    if (ms > 5000)
        ms = 5000;
    for (long slept = 0; slept < ms && !u->cancel; slept += 50) {
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

/* ---- XML: the few fields the multipart answers carry */

typedef struct {
    const char *want; /* element whose text is wanted */
    char *out;
    size_t outsz, len;
    int depth, in, found;
    char root[32];
    char code[64]; /* <Code> of an <Error> document */
    int in_code;
} xq;

static void xq_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    (void)atts;
    xq *q = ud;
    if (q->depth == 0)
        snprintf(q->root, sizeof q->root, "%s", name);
    q->depth++;
    if (!q->found && !strcmp(name, q->want)) {
        q->in = 1;
        q->len = 0;
    }
    if (!strcmp(name, "Code"))
        q->in_code = 1;
}

static void xq_text(void *ud, const XML_Char *s, int len)
{
    xq *q = ud;
    if (q->in && q->len + (size_t)len < q->outsz) {
        memcpy(q->out + q->len, s, (size_t)len);
        q->len += (size_t)len;
        q->out[q->len] = 0;
    }
    if (q->in_code) {
        size_t n = strlen(q->code);
        snprintf(q->code + n, sizeof q->code - n, "%.*s", len, s);
    }
}

static void xq_end(void *ud, const XML_Char *name)
{
    xq *q = ud;
    q->depth--;
    if (q->in && !strcmp(name, q->want)) {
        q->in = 0;
        q->found = 1;
    }
    if (!strcmp(name, "Code"))
        q->in_code = 0;
}

/* Finds the text of element `want` in doc; fills root (the document element) and code (an error's). */
static int xml_find(const char *doc, size_t len, const char *want, char *out, size_t outsz, xq *q)
{
    memset(q, 0, sizeof *q);
    q->want = want;
    q->out = out;
    q->outsz = outsz;
    out[0] = 0;
    XML_Parser p = XML_ParserCreate(NULL);
    if (!p)
        return -1;
    XML_SetUserData(p, q);
    XML_SetElementHandler(p, xq_start, xq_end);
    XML_SetCharacterDataHandler(p, xq_text);
    int ok = XML_Parse(p, doc ? doc : "", (int)len, 1) == XML_STATUS_OK;
    XML_ParserFree(p);
    return ok && q->found ? 0 : -1;
}

/* ---- requests */

static char *upload_query(const char *id, int part_number)
{
    char *eid = pgr_http_urlencode(id, strlen(id), 0);
    if (!eid)
        return NULL;
    size_t n = strlen(eid) + 64;
    char *q = malloc(n);
    if (q) {
        if (part_number > 0)
            snprintf(q, n, "partNumber=%d&uploadId=%s", part_number, eid);
        else
            snprintf(q, n, "uploadId=%s", eid);
    }
    free(eid);
    return q;
}

/* PUTs one part (on the worker's client), with retries. 0 with etag, or -1 (err). */
static int send_part(pgr_s3_upload *u, const char *data, size_t len, int number, char *etag, size_t etagsz,
                     pgr_s3_error *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char md5b64[32], md5hex[33];
    if (EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL) != 1 || mdlen != 16) {
        pgr_s3_set_error(err, "error", 0, "part %d of s3://%s/%s: MD5 unavailable", number, u->bucket, u->key);
        return -1;
    }
    md5b64[pgr_b64_encode(md, 16, md5b64, 0)] = 0;
    for (int i = 0; i < 16; i++)
        snprintf(md5hex + 2 * i, 3, "%02x", md[i]);
    char *query = upload_query(u->id, number);
    if (!query) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        return -1;
    }
    const char *extra[] = { "Content-MD5", md5b64, NULL };
    int rc = -1;
    for (int attempt = 1; attempt <= u->attempts && !u->cancel; attempt++) {
        if (attempt > 1)
            backoff(u, attempt);
        if (u->cancel)
            break;
        pgr_http_response resp;
        pgr_http_response_init(&resp);
        pgr_s3_error e;
        memset(&e, 0, sizeof e);
        int r = pgr_s3_request(u->ws, "PUT", u->bucket, u->key, query, data, len, 1, extra, &resp, &e);
        if (r == 0) {
            const char *et = pgr_http_response_header(&resp, "ETag");
            size_t n = et ? strlen(et) : 0;
            if (n >= 2 && et[0] == '"' && et[n - 1] == '"')
                snprintf(etag, etagsz, "%.*s", (int)(n - 2), et + 1);
            else
                snprintf(etag, etagsz, "%s", et ? et : "");
            pgr_http_response_free(&resp);
            /* a single part's ETag is its MD5: a different one means the bytes changed on the way */
            if (strlen(etag) == 32 && strcasecmp(etag, md5hex) != 0) {
                pgr_s3_set_error(err, "md5_mismatch", 200,
                                 "part %d of s3://%s/%s: the server stored ETag %s for MD5 %s", number, u->bucket,
                                 u->key, etag, md5hex);
                memcpy(&e, err, sizeof e);
                if (attempt < u->attempts)
                    continue;
                break;
            }
            rc = 0;
            break;
        }
        pgr_http_response_free(&resp);
        *err = e;
        if (!transient(&e))
            break;
    }
    if (rc != 0 && u->cancel && err->code[0] == 0)
        pgr_s3_set_error(err, "cancelled", 0, "the upload of s3://%s/%s was stopped", u->bucket, u->key);
    free(query);
    return rc;
}

static void *worker(void *arg)
{
    pgr_s3_upload *u = arg;
    pthread_mutex_lock(&u->mu);
    for (;;) {
        while (!u->job && !u->stop)
            pthread_cond_wait(&u->cv, &u->mu);
        if (!u->job)
            break;
        int b = u->job_buf, number = u->job_part, skip = u->failed;
        size_t len = u->job_len;
        pthread_mutex_unlock(&u->mu);
        char etag[80] = "";
        pgr_s3_error e;
        memset(&e, 0, sizeof e);
        int rc = skip ? -1 : send_part(u, u->buf[b], len, number, etag, sizeof etag, &e);
        pthread_mutex_lock(&u->mu);
        if (rc != 0 && !u->failed) {
            u->failed = 1;
            u->werr = e;
        } else if (rc == 0) {
            if (u->nparts == u->parts_cap) {
                size_t cap = u->parts_cap ? u->parts_cap * 2 : 64;
                part *p = realloc(u->parts, cap * sizeof *p);
                if (!p) {
                    u->failed = 1;
                    pgr_s3_set_error(&u->werr, "memory", 0, "out of memory");
                } else {
                    u->parts = p;
                    u->parts_cap = cap;
                }
            }
            if (!u->failed) {
                part *p = &u->parts[u->nparts++];
                p->number = number;
                p->size = (long long)len;
                snprintf(p->etag, sizeof p->etag, "%s", etag);
            }
        }
        u->job = 0;
        pthread_cond_broadcast(&u->cv);
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

/* The size of part `number`: doubling every 1000 parts keeps 10000 parts enough for any dump. */
static size_t part_size_for(const pgr_s3_upload *u, int number)
{
    unsigned long long size = u->first_part;
    for (int n = number; n > 1000 && size < MAX_PART_SIZE; n -= 1000)
        size *= 2;
    return size > MAX_PART_SIZE ? (size_t)MAX_PART_SIZE : (size_t)size;
}

static int ensure_buffer(pgr_s3_upload *u, int b, size_t size)
{
    if (u->cap[b] >= size)
        return 0;
    char *p = realloc(u->buf[b], size);
    if (!p)
        return -1;
    u->buf[b] = p;
    u->cap[b] = size;
    return 0;
}

/* Stops the part worker (its retries end at once) and waits for it; nothing when none runs. */
static void stop_worker(pgr_s3_upload *u)
{
    if (!u->th_started)
        return;
    pthread_mutex_lock(&u->mu);
    u->stop = 1;
    u->cancel = 1;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    pthread_join(u->th, NULL);
    u->th_started = 0;
}

static void free_upload(pgr_s3_upload *u)
{
    stop_worker(u);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    pgr_s3_free(u->ws);
    free(u->bucket);
    free(u->key);
    free(u->id);
    free(u->content_type);
    free(u->buf[0]);
    free(u->buf[1]);
    free(u->parts);
    free(u);
}

pgr_s3_upload *pgr_s3_upload_open(pgr_s3 *s, const char *bucket, const char *key,
                                  const pgr_s3_upload_options *opts, pgr_s3_error *err)
{
    pgr_s3_upload *u = calloc(1, sizeof *u);
    if (!u) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    u->s = s;
    u->bucket = strdup(bucket);
    u->key = strdup(key);
    u->content_type = strdup(opts && opts->content_type ? opts->content_type : "application/octet-stream");
    u->attempts = opts && opts->attempts > 0 ? opts->attempts : 5;
    u->first_part = opts && opts->part_size ? opts->part_size : DEFAULT_PART;
    if (u->first_part < MIN_PART)
        u->first_part = MIN_PART;
    u->next_part = 1;
    if (!u->bucket || !u->key || !u->content_type || ensure_buffer(u, 0, part_size_for(u, 1)) != 0) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        free_upload(u);
        return NULL;
    }
    if (!(u->ws = pgr_s3_clone(s, err))) {
        free_upload(u);
        return NULL;
    }
    const char *extra[] = { "Content-Type", u->content_type, NULL };
    int rc = -1;
    for (int attempt = 1; attempt <= u->attempts; attempt++) {
        if (attempt > 1)
            backoff(u, attempt);
        pgr_http_response resp;
        pgr_http_response_init(&resp);
        rc = pgr_s3_request(s, "POST", bucket, key, "uploads", NULL, 0, 0, extra, &resp, err);
        if (rc == 0) {
            char id[1024];
            xq q;
            if (xml_find(resp.body, resp.body_len, "UploadId", id, sizeof id, &q) != 0 || !id[0]) {
                pgr_s3_set_error(err, "bad_response", resp.status,
                                 "s3://%s/%s: the server's answer to CreateMultipartUpload "
                                 "holds no UploadId", bucket, key);
                rc = -1;
            } else if (!(u->id = strdup(id))) {
                pgr_s3_set_error(err, "memory", 0, "out of memory");
                rc = -1;
            }
            pgr_http_response_free(&resp);
            break;
        }
        pgr_http_response_free(&resp);
        if (!transient(err))
            break;
    }
    if (rc != 0) {
        free_upload(u);
        return NULL;
    }
    if (pgr_thread_create(&u->th, worker, u) != 0) {
        pgr_s3_set_error(err, "error", 0, "cannot start the upload's thread");
        pgr_s3_upload_abort(u, NULL);
        free_upload(u);
        return NULL;
    }
    u->th_started = 1;
    return u;
}

/* Hands buf[fill] to the worker once it is free; the caller then fills the other buffer. */
static int hand_over(pgr_s3_upload *u, pgr_s3_error *err)
{
    if (u->next_part > MAX_PARTS) {
        pgr_s3_set_error(err, "too_large", 0, "s3://%s/%s: more than %d parts", u->bucket, u->key, MAX_PARTS);
        return -1;
    }
    pthread_mutex_lock(&u->mu);
    while (u->job && !u->failed)
        pthread_cond_wait(&u->cv, &u->mu);
    if (u->failed) {
        if (err)
            *err = u->werr;
        pthread_mutex_unlock(&u->mu);
        return -1;
    }
    u->job = 1;
    u->job_buf = u->fill;
    u->job_len = u->len[u->fill];
    u->job_part = u->next_part++;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    u->fill ^= 1;
    u->len[u->fill] = 0;
    if (ensure_buffer(u, u->fill, part_size_for(u, u->next_part)) != 0) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        return -1;
    }
    return 0;
}

int pgr_s3_upload_write(pgr_s3_upload *u, const void *data, size_t len, pgr_s3_error *err)
{
    if (u->completed || u->aborted) {
        pgr_s3_set_error(err, "usage", 0, "s3://%s/%s: the upload is over", u->bucket, u->key);
        return -1;
    }
    const char *p = data;
    while (len > 0) {
        size_t size = part_size_for(u, u->next_part);
        size_t k = size - u->len[u->fill];
        if (k > len)
            k = len;
        memcpy(u->buf[u->fill] + u->len[u->fill], p, k);
        u->len[u->fill] += k;
        u->bytes += (long long)k;
        p += k;
        len -= k;
        if (u->len[u->fill] == size && hand_over(u, err) != 0)
            return -1;
    }
    /* a part that failed while this one filled stops the writer at once */
    pthread_mutex_lock(&u->mu);
    int failed = u->failed;
    if (failed && err)
        *err = u->werr;
    pthread_mutex_unlock(&u->mu);
    return failed ? -1 : 0;
}

/* The CompleteMultipartUpload body: every part in order with its ETag. */
static char *complete_body(const pgr_s3_upload *u, size_t *len)
{
    size_t cap = 128 + u->nparts * 160, n = 0;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    n += (size_t)snprintf(b + n, cap - n, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < u->nparts; i++)
        n += (size_t)snprintf(b + n, cap - n, "<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag></Part>",
                              u->parts[i].number, u->parts[i].etag);
    n += (size_t)snprintf(b + n, cap - n, "</CompleteMultipartUpload>");
    *len = n;
    return b;
}

static int by_number(const void *a, const void *b)
{
    return ((const part *)a)->number - ((const part *)b)->number;
}

typedef struct {
    long long size;
    char etag[128];
    int seen;
} head_info;

static int on_head(void *ud, const pgr_s3_object *o)
{
    head_info *h = ud;
    h->size = o->size;
    snprintf(h->etag, sizeof h->etag, "%s", o->etag);
    h->seen = 1;
    return 0;
}

int pgr_s3_upload_finish(pgr_s3_upload *u, pgr_s3_upload_result *res, pgr_s3_error *err)
{
    if (u->completed || u->aborted) {
        pgr_s3_set_error(err, "usage", 0, "s3://%s/%s: the upload is over", u->bucket, u->key);
        return -1;
    }
    /* the last part; an empty object still needs one */
    if ((u->len[u->fill] > 0 || u->next_part == 1) && hand_over(u, err) != 0)
        goto fail;
    pthread_mutex_lock(&u->mu);
    u->stop = 1;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    pthread_join(u->th, NULL);
    u->th_started = 0;
    if (u->failed) {
        if (err)
            *err = u->werr;
        goto fail;
    }
    qsort(u->parts, u->nparts, sizeof *u->parts, by_number);
    size_t blen = 0;
    char *body = complete_body(u, &blen);
    char *query = upload_query(u->id, 0);
    if (!body || !query) {
        free(body);
        free(query);
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        goto fail;
    }
    const char *extra[] = { "Content-Type", "application/xml", NULL };
    int rc = -1, retried = 0;
    char etag[128] = "";
    for (int attempt = 1; attempt <= u->attempts; attempt++) {
        if (attempt > 1) {
            backoff(u, attempt);
            retried = 1;
        }
        pgr_http_response resp;
        pgr_http_response_init(&resp);
        rc = pgr_s3_request(u->s, "POST", u->bucket, u->key, query, body, blen, 0, extra, &resp, err);
        if (rc == 0) {
            /* S3 may answer 200 and then an error document */
            xq q;
            int found = xml_find(resp.body, resp.body_len, "ETag", etag, sizeof etag, &q);
            if (!strcmp(q.root, "Error")) {
                pgr_s3_set_error(err, q.code[0] ? q.code : "InternalError", 200,
                                 "s3://%s/%s: CompleteMultipartUpload failed: %s", u->bucket, u->key,
                                 q.code[0] ? q.code : "an error document");
                rc = -1;
            } else if (found != 0) {
                etag[0] = 0;
            }
        }
        pgr_http_response_free(&resp);
        if (rc == 0)
            break;
        /* a retry after a lost answer: the first attempt may have completed it */
        if (retried && !strcmp(err->code, "NoSuchUpload")) {
            head_info h = { 0 };
            pgr_s3_error he;
            char suffix[32];
            snprintf(suffix, sizeof suffix, "-%zu", u->nparts);
            size_t el;
            if (pgr_s3_head(u->s, u->bucket, u->key, on_head, &h, &he) == 0 && h.seen && h.size == u->bytes &&
                (el = strlen(h.etag)) > strlen(suffix) && !strcmp(h.etag + el - strlen(suffix), suffix)) {
                snprintf(etag, sizeof etag, "%s", h.etag);
                rc = 0;
            }
            break;
        }
        if (!transient(err))
            break;
    }
    free(body);
    free(query);
    if (rc != 0)
        goto fail;
    u->completed = 1;
    /* the object as the server now holds it: its size must be what was written (some servers also
     * leave the ETag out of the completion's answer) */
    head_info h = { 0 };
    pgr_s3_error he;
    if (pgr_s3_head(u->s, u->bucket, u->key, on_head, &h, &he) != 0 || !h.seen || h.size != u->bytes) {
        if (err) {
            if (h.seen)
                pgr_s3_set_error(err, "size_mismatch", 0,
                                 "s3://%s/%s holds %lld bytes after the upload of %lld; it was deleted", u->bucket,
                                 u->key, h.size, u->bytes);
            else
                *err = he;
        }
        if (h.seen) {
            pgr_s3_error de;
            pgr_s3_delete(u->s, u->bucket, u->key, &de);
        }
        return -1;
    }
    if (!etag[0])
        snprintf(etag, sizeof etag, "%s", h.etag);
    if (res) {
        res->size = u->bytes;
        res->parts = (int)u->nparts;
        size_t n = strlen(etag);
        if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"')
            snprintf(res->etag, sizeof res->etag, "%.*s", (int)(n - 2), etag + 1);
        else
            snprintf(res->etag, sizeof res->etag, "%s", etag);
    }
    return 0;
fail:
    pgr_s3_upload_abort(u, NULL);
    return -1;
}

int pgr_s3_abort_upload(pgr_s3 *s, const char *bucket, const char *key, const char *upload_id, pgr_s3_error *err)
{
    char *query = upload_query(upload_id, 0);
    if (!query) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        return -1;
    }
    int rc = -1;
    pgr_s3_error e;
    for (int attempt = 1; attempt <= 3; attempt++) {
        if (attempt > 1) {
            struct timespec ts = { 0, 300 * 1000000L };
            nanosleep(&ts, NULL);
        }
        pgr_http_response resp;
        pgr_http_response_init(&resp);
        memset(&e, 0, sizeof e);
        rc = pgr_s3_request(s, "DELETE", bucket, key, query, NULL, 0, 0, NULL, &resp, &e);
        pgr_http_response_free(&resp);
        if (rc == 0 || !transient(&e))
            break;
    }
    free(query);
    if (rc != 0 && err)
        *err = e;
    return rc;
}

int pgr_s3_upload_abort(pgr_s3_upload *u, pgr_s3_error *err)
{
    stop_worker(u);
    if (u->completed || u->aborted || !u->id)
        return 0;
    u->aborted = 1;
    pgr_s3_error e;
    if (pgr_s3_abort_upload(u->s, u->bucket, u->key, u->id, &e) != 0 && strcmp(e.code, "NoSuchUpload") != 0) {
        if (err)
            *err = e;
        return -1;
    }
    return 0;
}

void pgr_s3_upload_free(pgr_s3_upload *u)
{
    if (!u)
        return;
    pgr_s3_upload_abort(u, NULL);
    free_upload(u);
}

const char *pgr_s3_upload_id(const pgr_s3_upload *u) { return u->id; }
long long pgr_s3_upload_bytes(const pgr_s3_upload *u) { return u->bytes; }

int pgr_s3_upload_parts(const pgr_s3_upload *u)
{
    pthread_mutex_lock((pthread_mutex_t *)&u->mu);
    int n = (int)u->nparts;
    pthread_mutex_unlock((pthread_mutex_t *)&u->mu);
    return n;
}
