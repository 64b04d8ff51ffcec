/* s3core.c — the S3 client declared in s3core.h: signed requests (sigv4.c) over httpcore.c,
 * ListObjectsV2 and error documents parsed with expat, resumable pulled reads, atomic downloads. */
#include "s3core.h"
#include "readahead.h"
#include "sigv4.h"
#include "thread.h"

#include <errno.h>
#include <expat.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_BUFFER (512 * 1024)
#define MAX_HEADERS 12

struct pgr_s3 {
    char *scheme;     /* "http" / "https" */
    char *authority;  /* "host:port" as written in the endpoint */
    char *region, *access, *secret, *token, *source;
    int virtual_host;
    pgr_http_config http; /* TLS strings owned */
    pgr_http_client *client;
};

/* One signed request: URL and header lines owned here. */
typedef struct {
    char *url;
    char *lines[MAX_HEADERS];
    size_t n;
    const char *hdrs[MAX_HEADERS + 1];
} sreq;

struct pgr_s3_reader {
    pgr_s3 *s;
    pgr_http_client *c;
    char *bucket, *key;
    sreq rq;
    pgr_http_request hreq;
    pgr_http_response resp;
    int open;
    long long size, offset;
    char etag[128];
    atomic_int resumes; /* the read-ahead thread counts them while the caller may look */
    int max_resumes;
    int finished, md5_checked;
    EVP_MD_CTX *md5;
    int external_md5; /* the download's writer thread hashes; finish() leaves the check to it */
    int ranged;       /* bytes [offset at open, size) only: always asks for a Range */
    /* Reading ahead (pgr_s3_reader_readahead): a thread owns the connection, offset, resumes and the
     * MD5; the caller reads what it fetched. */
    pgr_readahead *ra;
    size_t ra_size;
    pgr_s3_error ra_err;  /* the thread's failure: read once the queue has said it ended */
    long long delivered;  /* bytes handed to the caller */
    int ra_ended;         /* the caller has seen the end */
    atomic_int cancel;    /* the read-ahead is stopping: waits between resumes end */
};

void pgr_s3_set_error(pgr_s3_error *err, const char *code, long status, const char *fmt, ...)
{
    if (!err)
        return;
    snprintf(err->code, sizeof err->code, "%s", code);
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static void from_http(pgr_s3_error *err, const pgr_http_error *he)
{
    pgr_s3_set_error(err, he->kind, 0, "%s", he->message);
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void sreq_free(sreq *r)
{
    free(r->url);
    for (size_t i = 0; i < r->n; i++)
        free(r->lines[i]);
    memset(r, 0, sizeof *r);
}

static int sreq_line(sreq *r, const char *name, const char *value)
{
    if (r->n >= MAX_HEADERS)
        return -1;
    size_t len = strlen(name) + strlen(value) + 3;
    char *l = malloc(len);
    if (!l)
        return -1;
    snprintf(l, len, "%s: %s", name, value);
    r->lines[r->n] = l;
    r->hdrs[r->n++] = l;
    r->hdrs[r->n] = NULL;
    return 0;
}

/* Builds URL and signed headers. key may be NULL (bucket request); query is already encoded;
 * extra holds additional headers to send and sign (name/value pairs, NULL-terminated). */
static int build(pgr_s3 *s, const char *method, const char *bucket, const char *key, const char *query,
                 const char *payload_hash, const char *const *extra, sreq *out, pgr_s3_error *err)
{
    memset(out, 0, sizeof *out);
    char *ekey = key ? pgr_http_urlencode(key, strlen(key), 1) : NULL;
    char *ebucket = pgr_http_urlencode(bucket, strlen(bucket), 0);
    size_t plen = strlen(ebucket) + (ekey ? strlen(ekey) : 0) + 4;
    size_t hlen = strlen(s->authority) + strlen(ebucket) + 2;
    char *path = malloc(plen), *host = malloc(hlen);
    int rc = -1;
    if (!ebucket || (key && !ekey) || !path || !host)
        goto oom;
    if (s->virtual_host) {
        snprintf(host, hlen, "%s.%s", bucket, s->authority);
        snprintf(path, plen, "/%s", ekey ? ekey : "");
    } else {
        snprintf(host, hlen, "%s", s->authority);
        snprintf(path, plen, "/%s%s%s", ebucket, ekey ? "/" : "", ekey ? ekey : "");
    }
    size_t ulen = strlen(s->scheme) + strlen(host) + strlen(path) + (query ? strlen(query) : 0) + 8;
    if (!(out->url = malloc(ulen)))
        goto oom;
    snprintf(out->url, ulen, "%s://%s%s%s%s", s->scheme, host, path, query && *query ? "?" : "",
             query ? query : "");

    char date[17];
    pgr_sigv4_amz_date(time(NULL), date);
    pgr_sigv4_header sh[MAX_HEADERS];
    size_t n = 0;
    sh[n++] = (pgr_sigv4_header){ "Host", host };
    sh[n++] = (pgr_sigv4_header){ "x-amz-content-sha256", payload_hash };
    sh[n++] = (pgr_sigv4_header){ "x-amz-date", date };
    if (s->token)
        sh[n++] = (pgr_sigv4_header){ "x-amz-security-token", s->token };
    for (const char *const *e = extra; e && e[0] && n < MAX_HEADERS - 1; e += 2)
        sh[n++] = (pgr_sigv4_header){ e[0], e[1] };
    for (size_t i = 0; i < n; i++)
        if (sreq_line(out, sh[i].name, sh[i].value) != 0)
            goto oom;
    pgr_sigv4_key k = { s->access, s->secret, s->region, "s3" };
    char auth[1024];
    if (pgr_sigv4_sign(&k, method, path, query, sh, n, payload_hash, date, auth, sizeof auth, NULL) != 0 ||
        sreq_line(out, "Authorization", auth) != 0)
        goto oom;
    rc = 0;
    goto done;
oom:
    sreq_free(out);
    pgr_s3_set_error(err, "memory", 0, "out of memory building an S3 request");
done:
    free(ekey);
    free(ebucket);
    free(path);
    free(host);
    return rc;
}

/* ---- XML: error documents and ListObjectsV2 pages ---- */

typedef struct {
    char *text;
    size_t len, cap;
    int oom;
    /* error document */
    char code[64];
    char message[256];
    /* list page */
    int in_contents;
    char *key, *etag, *last_modified;
    long long size;
    char *next_token;
    int truncated;
    int count;
    pgr_s3_list_fn fn;
    void *ud;
    int stopped;
    /* keys come in ascending order across pages: one that does not is a server going round */
    const char *after;   /* the last key of the pages before (not owned) */
    char *last_key;      /* the last key of this page */
    int out_of_order;
} xmlstate;

static void x_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    xmlstate *x = ud;
    x->len = 0;
    if (strcmp(name, "Contents") == 0) {
        x->in_contents = 1;
        x->size = -1;
    }
}

static void x_text(void *ud, const XML_Char *s, int len)
{
    xmlstate *x = ud;
    if (x->len + (size_t)len + 1 > x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        while (cap < x->len + (size_t)len + 1)
            cap *= 2;
        char *p = realloc(x->text, cap);
        if (!p) {
            x->oom = 1;
            return;
        }
        x->text = p;
        x->cap = cap;
    }
    memcpy(x->text + x->len, s, (size_t)len);
    x->len += (size_t)len;
    x->text[x->len] = 0;
}

static char *take_text(xmlstate *x)
{
    char *s = strndup(x->text ? x->text : "", x->len);
    if (!s)
        x->oom = 1;
    return s;
}

static void replace(char **slot, char *v)
{
    free(*slot);
    *slot = v;
}

static void x_end(void *ud, const XML_Char *name)
{
    xmlstate *x = ud;
    const char *t = x->text ? x->text : "";
    if (x->len == 0)
        t = "";
    if (x->in_contents) {
        if (strcmp(name, "Key") == 0)
            replace(&x->key, take_text(x));
        else if (strcmp(name, "Size") == 0)
            x->size = strtoll(t, NULL, 10);
        else if (strcmp(name, "ETag") == 0) {
            /* S3 quotes ETags; the quotes are not part of the value */
            char *e = take_text(x);
            if (e && e[0] == '"') {
                size_t l = strlen(e);
                memmove(e, e + 1, l);
                if (l >= 2 && e[l - 2] == '"')
                    e[l - 2] = 0;
            }
            replace(&x->etag, e);
        } else if (strcmp(name, "LastModified") == 0)
            replace(&x->last_modified, take_text(x));
        else if (strcmp(name, "Contents") == 0) {
            x->in_contents = 0;
            const char *prev = x->last_key ? x->last_key : x->after;
            if (x->key && !x->stopped && prev && strcmp(x->key, prev) <= 0) {
                x->out_of_order = 1;
                x->stopped = 1;
            }
            if (x->key && !x->stopped) {
                replace(&x->last_key, strdup(x->key));
                if (!x->last_key)
                    x->oom = 1;
            }
            if (x->key && !x->stopped && x->fn) {
                pgr_s3_object o = { x->key, x->size, x->etag ? x->etag : "",
                                    x->last_modified ? x->last_modified : "" };
                if (x->fn(x->ud, &o) != 0)
                    x->stopped = 1;
            }
            x->count++;
            replace(&x->key, NULL);
            replace(&x->etag, NULL);
            replace(&x->last_modified, NULL);
        }
    } else if (strcmp(name, "IsTruncated") == 0) {
        x->truncated = strcmp(t, "true") == 0;
    } else if (strcmp(name, "NextContinuationToken") == 0) {
        replace(&x->next_token, take_text(x));
    } else if (strcmp(name, "Code") == 0) {
        snprintf(x->code, sizeof x->code, "%s", t);
    } else if (strcmp(name, "Message") == 0) {
        snprintf(x->message, sizeof x->message, "%s", t);
    }
    x->len = 0;
}

static void xml_free(xmlstate *x)
{
    free(x->text);
    free(x->key);
    free(x->etag);
    free(x->last_modified);
    free(x->next_token);
    free(x->last_key);
}

/* 0 when the document parsed; -1 otherwise (x->code may still be partly filled). */
static int xml_parse(xmlstate *x, const char *doc, size_t len)
{
    XML_Parser p = XML_ParserCreate(NULL);
    if (!p)
        return -1;
    XML_SetUserData(p, x);
    XML_SetElementHandler(p, x_start, x_end);
    XML_SetCharacterDataHandler(p, x_text);
    int ok = XML_Parse(p, doc, (int)len, 1) == XML_STATUS_OK && !x->oom;
    XML_ParserFree(p);
    return ok ? 0 : -1;
}

/* Turns a non-2xx answer into err, with a message that says what to check. body may be NULL (HEAD). */
static void response_error(pgr_s3 *s, long status, const char *body, size_t len, const char *method,
                           const char *bucket, const char *key, pgr_s3_error *err)
{
    xmlstate x = { 0 };
    if (body && len)
        xml_parse(&x, body, len);
    if (!x.code[0]) {
        const char *c = status == 404 ? (key ? "NoSuchKey" : "NoSuchBucket")
                        : status == 403 ? "AccessDenied"
                        : status == 412 ? "PreconditionFailed"
                                        : "";
        if (*c)
            snprintf(x.code, sizeof x.code, "%s", c);
        else
            snprintf(x.code, sizeof x.code, "HTTP%ld", status);
    }
    char what[600];
    if (key)
        snprintf(what, sizeof what, "s3://%s/%s", bucket, key);
    else
        snprintf(what, sizeof what, "s3://%s", bucket);
    const char *src = s->source ? s->source : "explicit arguments";
    const char *c = x.code;
    if (!strcmp(c, "NoSuchKey"))
        pgr_s3_set_error(err, c, status, "%s not found (check the key; `pgr backups` lists what the bucket holds)",
                         what);
    else if (!strcmp(c, "NoSuchBucket"))
        pgr_s3_set_error(err, c, status,
                         "bucket %s does not exist at %s://%s (check the bucket name and the S3 endpoint)", bucket,
                         s->scheme, s->authority);
    else if (!strcmp(c, "AccessDenied"))
        pgr_s3_set_error(err, c, status,
                         "access denied: %s %s with access key %s (credentials from %s); check that this key may read "
                         "the bucket", method, what, s->access, src);
    else if (!strcmp(c, "SignatureDoesNotMatch"))
        pgr_s3_set_error(err, c, status,
                         "the server rejected the request signature for access key %s (credentials from %s): check the "
                         "secret key, and the region (%s)", s->access, src, s->region);
    else if (!strcmp(c, "InvalidAccessKeyId"))
        pgr_s3_set_error(err, c, status,
                         "access key %s is unknown to %s://%s (credentials from %s): check the access key", s->access,
                         s->scheme, s->authority, src);
    else if (!strcmp(c, "RequestTimeTooSkewed"))
        pgr_s3_set_error(err, c, status, "%s %s: this machine's clock is too far from the server's: check NTP", method,
                         what);
    else if (!strcmp(c, "PreconditionFailed"))
        pgr_s3_set_error(err, "changed", status,
                         "%s changed on the server during the download (ETag differs); start again", what);
    else
        pgr_s3_set_error(err, c, status, "%s %s: HTTP %ld %s%s%s", method, what, status, c, x.message[0] ? ": " : "",
                         x.message);
    xml_free(&x);
}

/* ---- client ---- */

void pgr_s3_free(pgr_s3 *s)
{
    if (!s)
        return;
    pgr_http_client_free(s->client);
    free(s->scheme);
    free(s->authority);
    free(s->region);
    free(s->access);
    if (s->secret) {
        OPENSSL_cleanse(s->secret, strlen(s->secret));
        free(s->secret);
    }
    if (s->token) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
    }
    free(s->source);
    free((char *)s->http.cainfo);
    free((char *)s->http.ca_pem);
    free((char *)s->http.cert_file);
    free((char *)s->http.key_file);
    free((char *)s->http.cert_pem);
    free((char *)s->http.key_pem);
    free(s);
}

pgr_s3 *pgr_s3_new(const pgr_s3_config *cfg, pgr_s3_error *err)
{
    if (!cfg->endpoint || !cfg->access_key || !cfg->secret_key) {
        pgr_s3_set_error(err, "usage", 0, "S3 needs an endpoint, an access key and a secret key");
        return NULL;
    }
    const char *sep = strstr(cfg->endpoint, "://");
    if (!sep || (strncmp(cfg->endpoint, "http://", 7) != 0 && strncmp(cfg->endpoint, "https://", 8) != 0)) {
        pgr_s3_set_error(err, "usage", 0, "S3 endpoint must start with http:// or https:// (got %.200s)",
                         cfg->endpoint);
        return NULL;
    }
    pgr_s3 *s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->scheme = strndup(cfg->endpoint, (size_t)(sep - cfg->endpoint));
    const char *a = sep + 3;
    s->authority = strndup(a, strcspn(a, "/?#"));
    s->region = strdup(cfg->region ? cfg->region : "us-east-1");
    s->access = strdup(cfg->access_key);
    s->secret = strdup(cfg->secret_key);
    s->token = xstrdup(cfg->session_token);
    s->source = xstrdup(cfg->source);
    s->virtual_host = cfg->virtual_host;
    s->http = cfg->http;
    s->http.bearer_token = s->http.username = s->http.password = NULL;
    s->http.cainfo = xstrdup(cfg->http.cainfo);
    s->http.ca_pem = xstrdup(cfg->http.ca_pem);
    s->http.cert_file = xstrdup(cfg->http.cert_file);
    s->http.key_file = xstrdup(cfg->http.key_file);
    s->http.cert_pem = xstrdup(cfg->http.cert_pem);
    s->http.key_pem = xstrdup(cfg->http.key_pem);
    s->http.user_agent = NULL;
    if (!s->scheme || !s->authority || !s->region || !s->access || !s->secret ||
        (cfg->session_token && !s->token))
        goto oom;
    if (!*s->authority) {
        pgr_s3_set_error(err, "usage", 0, "S3 endpoint %.200s has no host", cfg->endpoint);
        pgr_s3_free(s);
        return NULL;
    }
    pgr_http_error he;
    if (!(s->client = pgr_http_client_new(&s->http, &he))) {
        from_http(err, &he);
        pgr_s3_free(s);
        return NULL;
    }
    return s;
oom:
    pgr_s3_free(s);
    pgr_s3_set_error(err, "memory", 0, "out of memory creating the S3 client");
    return NULL;
}

/* Performs a signed request, collecting the body: from body/len, else pulled from rd (its payload
 * unsigned), else none (PUT and POST send an empty one). 0 with resp filled when the server answered
 * 2xx; -1 with err otherwise. */
static int signed_request(pgr_s3 *s, const char *method, const char *bucket, const char *key, const char *query,
                          const void *body, size_t len, pgr_http_read_fn rd, void *rud, long long rsize,
                          int unsigned_payload, const char *const *extra, pgr_http_response *resp,
                          pgr_s3_error *err)
{
    char hash[65];
    if (rd || unsigned_payload)
        snprintf(hash, sizeof hash, "UNSIGNED-PAYLOAD");
    else
        pgr_sigv4_sha256_hex(body ? body : "", body ? len : 0, hash);
    sreq rq;
    if (build(s, method, bucket, key, query, hash, extra, &rq, err) != 0)
        return -1;
    pgr_http_request hr = { .method = method, .url = rq.url, .headers = rq.hdrs, .body = body,
                            .body_len = body ? len : 0, .read = rd, .read_ud = rud, .read_size = rsize };
    if (!body && !rd && (!strcmp(method, "PUT") || !strcmp(method, "POST")))
        hr.body = "";
    pgr_http_error he;
    int rc = pgr_http_perform(s->client, &hr, resp, &he);
    sreq_free(&rq);
    if (rc != 0) {
        from_http(err, &he);
        return -1;
    }
    if (resp->status < 200 || resp->status > 299) {
        response_error(s, resp->status, resp->body, resp->body_len, method, bucket, key, err);
        return -1;
    }
    return 0;
}

static int simple(pgr_s3 *s, const char *method, const char *bucket, const char *key, const char *query,
                  const void *body, size_t len, pgr_http_read_fn rd, void *rud, long long rsize,
                  pgr_http_response *resp, pgr_s3_error *err)
{
    return signed_request(s, method, bucket, key, query, body, len, rd, rud, rsize, 0, NULL, resp, err);
}

int pgr_s3_list(pgr_s3 *s, const char *bucket, const char *prefix, pgr_s3_list_fn fn, void *ud,
                pgr_s3_error *err)
{
    char *token = NULL;
    char *eprefix = pgr_http_urlencode(prefix ? prefix : "", prefix ? strlen(prefix) : 0, 0);
    int rc = -1;
    if (!eprefix) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        return -1;
    }
    pgr_http_response resp;
    pgr_http_response_init(&resp);
    /* A hostile or broken server must not keep us listing for ever: keys must move forward, a
     * continuation token must change, and truncated pages without keys are few. */
    char *last_key = NULL;
    int empty_pages = 0;
    for (int page = 0;; page++) {
        char *etoken = token ? pgr_http_urlencode(token, strlen(token), 0) : NULL;
        size_t qlen = strlen(eprefix) + (etoken ? strlen(etoken) : 0) + 64;
        char *query = malloc(qlen);
        if (!query || (token && !etoken)) {
            free(etoken);
            free(query);
            pgr_s3_set_error(err, "memory", 0, "out of memory");
            break;
        }
        snprintf(query, qlen, "list-type=2%s%s%s%s", etoken ? "&continuation-token=" : "", etoken ? etoken : "",
                 *eprefix ? "&prefix=" : "", eprefix);
        free(etoken);
        int r = simple(s, "GET", bucket, NULL, query, NULL, 0, NULL, NULL, 0, &resp, err);
        free(query);
        if (r != 0)
            break;
        xmlstate x = { 0 };
        x.fn = fn;
        x.ud = ud;
        x.after = last_key;
        if (xml_parse(&x, resp.body ? resp.body : "", resp.body_len) != 0) {
            pgr_s3_set_error(err, "bad_response", resp.status,
                             "listing s3://%s (page %d): the server's XML did not parse", bucket, page + 1);
            xml_free(&x);
            break;
        }
        if (x.out_of_order) {
            pgr_s3_set_error(err, "bad_response", resp.status,
                             "listing s3://%s (page %d): a key does not come after %s: the server repeats or reorders "
                             "its listing (is the endpoint an S3 server?)", bucket, page + 1,
                             last_key ? last_key : "the one before");
            xml_free(&x);
            break;
        }
        if (x.last_key) {
            free(last_key);
            last_key = x.last_key;
            x.last_key = NULL;
        }
        int repeated = token && x.next_token && strcmp(token, x.next_token) == 0;
        free(token);
        token = x.next_token;
        x.next_token = NULL;
        int more = x.truncated && !x.stopped;
        int empty = x.count == 0;
        xml_free(&x);
        if (!more) {
            rc = 0;
            break;
        }
        if (!token) {
            pgr_s3_set_error(err, "bad_response", resp.status,
                             "listing s3://%s: the page is truncated but has no continuation token", bucket);
            break;
        }
        if (repeated) {
            pgr_s3_set_error(err, "bad_response", resp.status,
                             "listing s3://%s (page %d): the server sent the same continuation token again: the listing "
                             "would never end", bucket, page + 1);
            break;
        }
        if (empty && ++empty_pages > PGR_S3_LIST_MAX_EMPTY_PAGES) {
            pgr_s3_set_error(err, "bad_response", resp.status,
                             "listing s3://%s: %d truncated pages in a row without a key: the listing would never end",
                             bucket, empty_pages);
            break;
        }
        if (!empty)
            empty_pages = 0;
    }
    free(last_key);
    free(token);
    free(eprefix);
    pgr_http_response_free(&resp);
    return rc;
}

static void strip_quotes(const char *in, char *out, size_t outsz)
{
    size_t n = strlen(in);
    if (n >= 2 && in[0] == '"' && in[n - 1] == '"')
        snprintf(out, outsz, "%.*s", (int)(n - 2), in + 1);
    else
        snprintf(out, outsz, "%s", in);
}

int pgr_s3_head(pgr_s3 *s, const char *bucket, const char *key, pgr_s3_list_fn fn, void *ud, pgr_s3_error *err)
{
    pgr_http_response resp;
    pgr_http_response_init(&resp);
    int rc = simple(s, "HEAD", bucket, key, NULL, NULL, 0, NULL, NULL, 0, &resp, err);
    if (rc == 0) {
        const char *cl = pgr_http_response_header(&resp, "Content-Length");
        const char *et = pgr_http_response_header(&resp, "ETag");
        const char *lm = pgr_http_response_header(&resp, "Last-Modified");
        char etag[128];
        strip_quotes(et ? et : "", etag, sizeof etag);
        pgr_s3_object o = { key, cl ? strtoll(cl, NULL, 10) : -1, etag, lm ? lm : "" };
        if (fn)
            fn(ud, &o);
    }
    pgr_http_response_free(&resp);
    return rc;
}

int pgr_s3_put(pgr_s3 *s, const char *bucket, const char *key, const void *data, size_t len, pgr_s3_error *err)
{
    pgr_http_response resp;
    pgr_http_response_init(&resp);
    int rc = simple(s, "PUT", bucket, key, NULL, data ? data : "", data ? len : 0, NULL, NULL, 0, &resp, err);
    pgr_http_response_free(&resp);
    return rc;
}

static long file_read(void *ud, char *buf, size_t cap)
{
    ssize_t n;
    do
        n = read(*(int *)ud, buf, cap);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : (long)n;
}

int pgr_s3_put_file(pgr_s3 *s, const char *bucket, const char *key, const char *path, pgr_s3_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        pgr_s3_set_error(err, "io", 0, "cannot read %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    pgr_http_response resp;
    pgr_http_response_init(&resp);
    int rc = simple(s, "PUT", bucket, key, NULL, NULL, 0, file_read, &fd, (long long)st.st_size, &resp, err);
    pgr_http_response_free(&resp);
    close(fd);
    return rc;
}

int pgr_s3_delete(pgr_s3 *s, const char *bucket, const char *key, pgr_s3_error *err)
{
    pgr_http_response resp;
    pgr_http_response_init(&resp);
    int rc = simple(s, "DELETE", bucket, key, NULL, NULL, 0, NULL, NULL, 0, &resp, err);
    pgr_http_response_free(&resp);
    return rc;
}

/* ---- for the other S3 cores (s3upload.c) ---- */

int pgr_s3_request(pgr_s3 *s, const char *method, const char *bucket, const char *key, const char *query,
                   const void *body, size_t len, int unsigned_payload, const char *const *extra,
                   pgr_http_response *resp, pgr_s3_error *err)
{
    return signed_request(s, method, bucket, key, query, body, len, NULL, NULL, 0, unsigned_payload, extra, resp,
                          err);
}

pgr_s3 *pgr_s3_clone(const pgr_s3 *s, pgr_s3_error *err)
{
    size_t n = strlen(s->scheme) + strlen(s->authority) + 4;
    char *endpoint = malloc(n);
    if (!endpoint) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        return NULL;
    }
    snprintf(endpoint, n, "%s://%s", s->scheme, s->authority);
    pgr_s3_config cfg = { .endpoint = endpoint, .region = s->region, .access_key = s->access,
                          .secret_key = s->secret, .session_token = s->token, .source = s->source,
                          .virtual_host = s->virtual_host, .http = s->http };
    pgr_s3 *c = pgr_s3_new(&cfg, err);
    free(endpoint);
    return c;
}

/* ---- reader ---- */

static int is_transient(const char *kind)
{
    return !strcmp(kind, "transfer") || !strcmp(kind, "timeout") || !strcmp(kind, "connect");
}

/* Ends the reader's current response without reading it further. */
static void reader_drop(pgr_s3_reader *r)
{
    pgr_http_stream_close(r->c);
    r->open = 0;
}

/* Opens (or re-opens from r->offset) the GET stream. 0, -1 with err (the stream then closed: nothing
 * of a wrong answer can be read); *transient tells whether a retry could help. */
static int reader_start(pgr_s3_reader *r, pgr_s3_error *err, int *transient)
{
    *transient = 0;
    char range[64], quoted[140];
    const char *extra[5] = { NULL };
    if (r->ranged && r->offset >= r->size) {
        pgr_s3_set_error(err, "error", 0, "GET s3://%s/%s: empty range at byte %lld", r->bucket, r->key, r->offset);
        return -1;
    }
    int nx = 0;
    if (r->offset > 0 || r->ranged) {
        if (r->ranged)
            snprintf(range, sizeof range, "bytes=%lld-%lld", r->offset, r->size - 1);
        else
            snprintf(range, sizeof range, "bytes=%lld-", r->offset);
        extra[nx++] = "Range";
        extra[nx++] = range;
    }
    if (r->etag[0]) {
        /* resume only the same object (also one cut before its first byte): a replaced one
         * answers 412; the ETag and size are never rewritten once known */
        snprintf(quoted, sizeof quoted, "\"%s\"", r->etag);
        extra[nx++] = "If-Match";
        extra[nx++] = quoted;
    }
    sreq_free(&r->rq);
    if (build(r->s, "GET", r->bucket, r->key, NULL, PGR_SIGV4_EMPTY_SHA256, extra, &r->rq, err) != 0)
        return -1;
    memset(&r->hreq, 0, sizeof r->hreq);
    r->hreq.method = "GET";
    r->hreq.url = r->rq.url;
    r->hreq.headers = r->rq.hdrs;
    r->hreq.buffer_size = 256 * 1024;
    pgr_http_error he;
    if (pgr_http_stream_open(r->c, &r->hreq, &r->resp, &he) != 0) {
        from_http(err, &he);
        *transient = is_transient(he.kind);
        return -1;
    }
    r->open = 1;
    long st = r->resp.status;
    if (st < 200 || st > 299) {
        /* the error document is small: read it whole */
        char doc[16384];
        size_t len = 0;
        long n;
        while (len < sizeof doc - 1 && (n = pgr_http_stream_read(r->c, doc + len, sizeof doc - 1 - len, 10000, &he)) > 0)
            len += (size_t)n;
        doc[len] = 0;
        reader_drop(r);
        response_error(r->s, st, doc, len, "GET", r->bucket, r->key, err);
        *transient = st >= 500;
        return -1;
    }
    if (r->offset == 0 && !r->ranged) {
        if (!r->etag[0]) {
            const char *cl = pgr_http_response_header(&r->resp, "Content-Length");
            const char *et = pgr_http_response_header(&r->resp, "ETag");
            r->size = cl ? strtoll(cl, NULL, 10) : -1;
            strip_quotes(et ? et : "", r->etag, sizeof r->etag);
        }
        if (st != 200) {
            pgr_s3_set_error(err, "bad_response", st, "GET s3://%s/%s: expected 200, got %ld", r->bucket, r->key, st);
            reader_drop(r);
            return -1;
        }
    } else {
        const char *cr = pgr_http_response_header(&r->resp, "Content-Range");
        long long start = -1;
        if (st != 206 || !cr || sscanf(cr, "bytes %lld-", &start) != 1 || start != r->offset) {
            pgr_s3_set_error(err, "bad_response", st,
                             "GET s3://%s/%s: resuming at byte %lld, the server answered %ld (%s) instead of that range",
                             r->bucket, r->key, r->offset, st, cr ? cr : "no Content-Range");
            reader_drop(r); /* its body is not those bytes: none of it may be read */
            return -1;
        }
    }
    return 0;
}

/* A reader's own connection and its first GET; on failure the reader is closed. r or NULL. */
static pgr_s3_reader *reader_connect(pgr_s3_reader *r, pgr_s3_error *err)
{
    pgr_http_error he;
    if (!(r->c = pgr_http_client_new(&r->s->http, &he))) {
        from_http(err, &he);
        pgr_s3_reader_close(r);
        return NULL;
    }
    int transient;
    if (reader_start(r, err, &transient) != 0) {
        pgr_s3_reader_close(r);
        return NULL;
    }
    return r;
}

pgr_s3_reader *pgr_s3_open(pgr_s3 *s, const char *bucket, const char *key, int max_resumes, pgr_s3_error *err)
{
    pgr_s3_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->bucket = strdup(bucket)) || !(r->key = strdup(key)) || !(r->md5 = EVP_MD_CTX_new()) ||
        !EVP_DigestInit_ex(r->md5, EVP_md5(), NULL)) {
        pgr_s3_set_error(err, "memory", 0, "out of memory opening s3://%s/%s", bucket, key);
        pgr_s3_reader_close(r);
        return NULL;
    }
    r->s = s;
    r->max_resumes = max_resumes < 0 ? 0 : max_resumes;
    pgr_http_response_init(&r->resp);
    return reader_connect(r, err);
}

pgr_s3_reader *pgr_s3_open_range(const pgr_s3_reader *like, long long start, long long end, pgr_s3_error *err)
{
    pgr_s3_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->bucket = strdup(like->bucket)) || !(r->key = strdup(like->key))) {
        pgr_s3_set_error(err, "memory", 0, "out of memory opening s3://%s/%s", like->bucket, like->key);
        pgr_s3_reader_close(r);
        return NULL;
    }
    r->s = like->s;
    r->max_resumes = like->max_resumes;
    r->ranged = r->external_md5 = 1;
    r->offset = start;
    r->size = end;
    snprintf(r->etag, sizeof r->etag, "%s", like->etag);
    pgr_http_response_init(&r->resp);
    if (end <= start) {
        r->finished = 1; /* nothing to fetch */
        return r;
    }
    return reader_connect(r, err);
}

pgr_s3_reader *pgr_s3_open_bytes(pgr_s3 *s, const char *bucket, const char *key, const char *etag, long long start,
                                 long long end, int max_resumes, pgr_s3_error *err)
{
    pgr_s3_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->bucket = strdup(bucket)) || !(r->key = strdup(key))) {
        pgr_s3_set_error(err, "memory", 0, "out of memory opening s3://%s/%s", bucket, key);
        pgr_s3_reader_close(r);
        return NULL;
    }
    r->s = s;
    r->max_resumes = max_resumes < 0 ? 0 : max_resumes;
    r->ranged = r->external_md5 = 1;
    r->offset = start < 0 ? 0 : start;
    r->size = end;
    snprintf(r->etag, sizeof r->etag, "%s", etag ? etag : "");
    pgr_http_response_init(&r->resp);
    if (end <= r->offset) {
        r->finished = 1;
        return r;
    }
    return reader_connect(r, err);
}

/* The wait before a resume; ended early when the read-ahead stops. */
static void backoff(pgr_s3_reader *r, int attempt)
{
    long ms = 100L << (attempt < 5 ? attempt : 5);
    if (ms > 2000)
        ms = 2000;
    for (long slept = 0; slept < ms && !atomic_load(&r->cancel); slept += 10) {
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

/* Compares the MD5 in ctx with a single-part ETag; sets *checked. 0 or -1 (err). */
static int check_md5(pgr_s3_reader *r, EVP_MD_CTX *ctx, int *checked, pgr_s3_error *err)
{
    unsigned char md[16];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    *checked = 0;
    /* a single-part upload's ETag is the MD5 of the bytes; a multipart one carries "-N" */
    if (strlen(r->etag) == 32 && !strchr(r->etag, '-')) {
        char hex[33];
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        if (strcasecmp(hex, r->etag) != 0) {
            pgr_s3_set_error(err, "md5_mismatch", 0,
                             "s3://%s/%s: the bytes received have MD5 %s, the object's ETag is %s", r->bucket, r->key,
                             hex, r->etag);
            return -1;
        }
        *checked = 1;
    }
    return 0;
}

static int finish(pgr_s3_reader *r, pgr_s3_error *err)
{
    r->finished = 1;
    if (r->size >= 0 && r->offset != r->size) {
        pgr_s3_set_error(err, "size_mismatch", 0, "s3://%s/%s: received %lld bytes, the object has %lld", r->bucket,
                         r->key, r->offset, r->size);
        return -1;
    }
    if (r->external_md5)
        return 0;
    return check_md5(r, r->md5, &r->md5_checked, err);
}

/* Reads from the connection, resuming it when cut (the caller's thread, or the read-ahead's). */
static long fetch(pgr_s3_reader *r, char *buf, size_t cap, pgr_s3_error *err)
{
    if (r->finished)
        return 0;
    for (;;) {
        pgr_http_error he;
        long n = -1;
        if (r->open) {
            n = pgr_http_stream_read(r->c, buf, cap, -1, &he);
        } else {
            he.kind = "transfer";
            snprintf(he.message, sizeof he.message, "GET s3://%s/%s: not connected", r->bucket, r->key);
        }
        if (n > 0) {
            if (!r->external_md5)
                EVP_DigestUpdate(r->md5, buf, (size_t)n);
            r->offset += n;
            return n;
        }
        if (n == 0 && (r->size < 0 || r->offset >= r->size)) {
            reader_drop(r);
            return finish(r, err) == 0 ? 0 : -1;
        }
        /* cut: the body ended early or the connection failed */
        int transient = n == 0 || is_transient(he.kind);
        if (n < 0)
            from_http(err, &he);
        else
            pgr_s3_set_error(err, "transfer", 0, "GET s3://%s/%s: the body ended at byte %lld of %lld", r->bucket,
                             r->key, r->offset, r->size);
        reader_drop(r);
        while (transient && r->resumes < r->max_resumes) {
            backoff(r, r->resumes);
            r->resumes++;
            if (reader_start(r, err, &transient) == 0)
                break;
        }
        if (!r->open) {
            if (r->resumes > 0) {
                size_t used = strlen(err->message);
                if (used < sizeof err->message - 1)
                    snprintf(err->message + used, sizeof err->message - used, " (after %d resume%s at byte %lld)",
                             r->resumes, r->resumes == 1 ? "" : "s", r->offset);
            }
            return -1;
        }
    }
}

static long ra_fill(void *ud, char *buf, size_t cap, char *err, size_t errcap)
{
    pgr_s3_reader *r = ud;
    long n = fetch(r, buf, cap, &r->ra_err);
    if (n < 0)
        snprintf(err, errcap, "%s", r->ra_err.message);
    return n;
}

static void ra_interrupt(void *ud)
{
    pgr_s3_reader *r = ud;
    atomic_store(&r->cancel, 1);
    if (r->c)
        pgr_http_client_interrupt(r->c);
}

int pgr_s3_reader_readahead(pgr_s3_reader *r, size_t bytes, pgr_s3_error *err)
{
    if (bytes == 0 || r->ra)
        return 0;
    r->delivered = r->offset;
    r->ra_size = bytes;
    if (!(r->ra = pgr_readahead_start(bytes, ra_fill, ra_interrupt, r))) {
        pgr_s3_set_error(err, "error", 0, "s3://%s/%s: cannot start the read-ahead thread", r->bucket, r->key);
        return -1;
    }
    return 0;
}

long pgr_s3_read(pgr_s3_reader *r, char *buf, size_t cap, pgr_s3_error *err)
{
    if (!r->ra)
        return fetch(r, buf, cap, err);
    char msg[8];
    long n = pgr_readahead_read(r->ra, buf, cap, msg, sizeof msg);
    if (n > 0) {
        r->delivered += n;
        return n;
    }
    r->ra_ended = 1;
    if (n < 0 && err)
        *err = r->ra_err;
    return n;
}

long long pgr_s3_reader_size(const pgr_s3_reader *r) { return r->size; }
long long pgr_s3_reader_offset(const pgr_s3_reader *r) { return r->ra ? r->delivered : r->offset; }
int pgr_s3_reader_resumes(const pgr_s3_reader *r) { return atomic_load(&r->resumes); }
const char *pgr_s3_reader_etag(const pgr_s3_reader *r) { return r->etag; }
/* with a read-ahead, known once the caller has seen the end (the thread sets it before) */
int pgr_s3_reader_md5_checked(const pgr_s3_reader *r) { return r->ra && !r->ra_ended ? 0 : r->md5_checked; }
size_t pgr_s3_reader_readahead_size(const pgr_s3_reader *r) { return r->ra ? r->ra_size : 0; }
size_t pgr_s3_reader_buffered(const pgr_s3_reader *r) { return r->ra ? pgr_readahead_buffered(r->ra) : 0; }

void pgr_s3_reader_close(pgr_s3_reader *r)
{
    if (!r)
        return;
    /* the thread first: it is interrupted wherever it waits (network, resume, room) and joined */
    pgr_readahead_stop(r->ra);
    r->ra = NULL;
    if (r->c) {
        pgr_http_stream_close(r->c);
        pgr_http_client_free(r->c);
    }
    pgr_http_response_free(&r->resp);
    sreq_free(&r->rq);
    if (r->md5)
        EVP_MD_CTX_free(r->md5);
    free(r->bucket);
    free(r->key);
    free(r);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The download overlaps the network, hashing and the disk: the calling thread receives into a
 * ring of buffers; one thread hashes them and another writes them (starting writeback early, so
 * the final fsync has little left to do). A slot is free again once both have seen it.
 * Hand-overs are counted, not signalled per buffer: a consumer takes every filled slot at once,
 * and a receiver that found the ring full sleeps until half of it is free, so the threads wake
 * each other a few times per ring rather than twice per buffer. */
#define RING 16
#define WRITEBACK_EVERY (16LL * 1024 * 1024)

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv_fill, cv_free;
    char *buf[RING];
    size_t len[RING];
    long long filled;   /* slots handed over so far; slot of sequence k is k % RING */
    long long seen[2];  /* per consumer: slots it has finished with */
    int nconsumers;
    int consumers_waiting, receiver_waiting;
    int done, failed, err_no;
    int fd;
    EVP_MD_CTX *md5;
    long long written, synced;
} ring;

typedef struct {
    ring *q;
    int id; /* 0 writes, 1 hashes */
} ring_worker;

static long long ring_free_from(const ring *q)
{
    long long m = q->seen[0];
    for (int i = 1; i < q->nconsumers; i++)
        if (q->seen[i] < m)
            m = q->seen[i];
    return m; /* every slot before this sequence number is free */
}

static void *worker_main(void *arg)
{
    ring_worker *w = arg;
    ring *q = w->q;
    long long next = 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->filled == next && !q->done) {
            q->consumers_waiting++;
            pthread_cond_wait(&q->cv_fill, &q->mu);
            q->consumers_waiting--;
        }
        long long upto = q->filled;
        int failed = q->failed;
        pthread_mutex_unlock(&q->mu);
        if (upto == next)
            return NULL; /* done and drained */
        for (; next < upto; next++) {
            int i = (int)(next % RING);
            if (failed) {
                /* keep releasing slots so the receiver never waits on us */
            } else if (w->id == 1) {
                EVP_DigestUpdate(q->md5, q->buf[i], q->len[i]);
            } else if (write_all(q->fd, q->buf[i], q->len[i]) != 0) {
                pthread_mutex_lock(&q->mu);
                q->failed = failed = 1;
                q->err_no = errno;
                pthread_mutex_unlock(&q->mu);
            } else {
                q->written += (long long)q->len[i];
                if (q->written - q->synced >= WRITEBACK_EVERY) {
                    sync_file_range(q->fd, q->synced, q->written - q->synced, SYNC_FILE_RANGE_WRITE);
                    q->synced = q->written;
                }
            }
            pthread_mutex_lock(&q->mu);
            q->seen[w->id] = next + 1;
            /* the receiver waits for half the ring (or a failure) */
            if (q->receiver_waiting && (q->failed || q->filled - ring_free_from(q) <= RING / 2))
                pthread_cond_signal(&q->cv_free);
            pthread_mutex_unlock(&q->mu);
        }
    }
}

int pgr_s3_download(pgr_s3 *s, const char *bucket, const char *key, const char *path, int max_resumes,
                    int verify_md5, pgr_s3_progress_fn progress, void *ud, pgr_s3_download_result *res,
                    pgr_s3_error *err)
{
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    pgr_s3_reader *r = NULL;
    int fd = -1, rc = -1;
    ring q;
    memset(&q, 0, sizeof q);
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.cv_fill, NULL);
    pthread_cond_init(&q.cv_free, NULL);
    int oom = !tmp;
    for (int i = 0; i < RING; i++)
        if (!(q.buf[i] = malloc(READ_BUFFER)))
            oom = 1;
    if (oom || !(q.md5 = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(q.md5, EVP_md5(), NULL)) {
        pgr_s3_set_error(err, "memory", 0, "out of memory");
        goto out;
    }
    snprintf(tmp, tlen, "%s.part-%ld", path, (long)getpid());
    if (!(r = pgr_s3_open(s, bucket, key, max_resumes, err)))
        goto out;
    r->external_md5 = 1;
    /* our own new file, never through a link someone placed at the name */
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        pgr_s3_set_error(err, "io", 0, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    q.fd = fd;
    pthread_t threads[2];
    /* without MD5 only the writer runs: a slot is then free once it is written */
    ring_worker workers[2] = { { &q, 0 }, { &q, 1 } };
    int want = verify_md5 ? 2 : 1, nthreads = 0;
    q.nconsumers = want;
    for (; nthreads < want; nthreads++)
        if (pgr_thread_create(&threads[nthreads], worker_main, &workers[nthreads]) != 0)
            break;
    int ok = nthreads == want;
    if (!ok) {
        pgr_s3_set_error(err, "error", 0, "cannot start the download threads");
        q.failed = 1; /* the started ones drain nothing and leave */
    }
    while (ok) {
        pthread_mutex_lock(&q.mu);
        if (q.filled - ring_free_from(&q) >= RING && !q.failed) {
            q.receiver_waiting = 1;
            while (q.filled - ring_free_from(&q) > RING / 2 && !q.failed)
                pthread_cond_wait(&q.cv_free, &q.mu);
            q.receiver_waiting = 0;
        }
        int failed = q.failed;
        pthread_mutex_unlock(&q.mu);
        if (failed)
            break;
        int slot = (int)(q.filled % RING);
        long n = pgr_s3_read(r, q.buf[slot], READ_BUFFER, err);
        if (n <= 0) {
            ok = n == 0;
            break;
        }
        pthread_mutex_lock(&q.mu);
        q.len[slot] = (size_t)n;
        q.filled++;
        if (q.consumers_waiting)
            pthread_cond_broadcast(&q.cv_fill);
        pthread_mutex_unlock(&q.mu);
        if (progress && progress(ud, r) != 0) {
            pgr_s3_set_error(err, "aborted", 0, "download of s3://%s/%s stopped at byte %lld", bucket, key, r->offset);
            ok = 0;
            break;
        }
    }
    pthread_mutex_lock(&q.mu);
    q.done = 1;
    pthread_cond_broadcast(&q.cv_fill);
    pthread_mutex_unlock(&q.mu);
    for (int t = 0; t < nthreads; t++)
        pthread_join(threads[t], NULL);
    if (!ok)
        goto fail;
    if (q.failed) {
        pgr_s3_set_error(err, "io", 0, "writing %s: %s", tmp, strerror(q.err_no));
        goto fail;
    }
    int checked = 0;
    if (verify_md5 && check_md5(r, q.md5, &checked, err) != 0)
        goto fail;
    r->md5_checked = checked;
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        pgr_s3_set_error(err, "io", 0, "writing %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        pgr_s3_set_error(err, "io", 0, "renaming %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    /* the rename itself must survive a crash */
    char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (dir) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    if (res) {
        res->size = r->offset;
        snprintf(res->etag, sizeof res->etag, "%s", r->etag);
        res->md5_checked = r->md5_checked;
        res->resumes = r->resumes;
    }
    rc = 0;
    goto out;
fail:
    if (fd >= 0)
        close(fd);
    fd = -1;
    unlink(tmp);
out:
    if (fd >= 0)
        close(fd);
    pgr_s3_reader_close(r);
    for (int i = 0; i < RING; i++)
        free(q.buf[i]);
    if (q.md5)
        EVP_MD_CTX_free(q.md5);
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.cv_fill);
    pthread_cond_destroy(&q.cv_free);
    free(tmp);
    return rc;
}
