/* httpcore.c — the libcurl wrapper declared in httpcore.h: one easy handle per client driven by a
 * private multi handle, so blocking and pulled transfers share the same kept-alive connections. */
#include "httpcore.h"
#include "cabundle.h"

#include "b64.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#ifndef PGR_VERSION
#define PGR_VERSION "0"
#endif

/* The pulled stream buffers at most about this much before pausing libcurl. */
#define STREAM_BUFFER (256 * 1024)
#define DEFAULT_MAX_BODY (64u * 1024 * 1024)

struct pgr_http_client {
    CURL *easy;
    CURLM *multi;
    pgr_http_config cfg; /* strings owned (strdup) */
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *slist;
    char *auth_header;

    /* the transfer in progress */
    int busy;
    const pgr_http_request *req;
    pgr_http_response *resp;
    int in_headers_of_final; /* a status line >= 200 was seen */
    int headers_done;        /* the blank line after the final status's headers was seen */
    const char *fail_kind;   /* set by a callback that stopped the transfer */
    int done;
    CURLcode result;

    /* pulled mode: body bytes go straight into the caller's buffer (dst) while a read is
     * driving libcurl; what does not fit waits in sbuf */
    int streaming;
    int paused;
    char *sbuf;
    size_t soff, slen, scap;
    char *dst;
    size_t dst_cap, dst_len;

    atomic_int interrupted; /* set by another thread: every transfer fails at once ("aborted") */
};

static void set_error(pgr_http_error *err, const char *kind, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_error(pgr_http_error *err, const char *kind, int code, const char *fmt, ...)
{
    if (!err)
        return;
    err->kind = kind;
    err->curl_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void pgr_http_url_origin(const char *url, char *out, size_t outsz)
{
    if (!outsz)
        return;
    out[0] = 0;
    if (!url)
        return;
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    /* drop user info: it may carry a password */
    for (const char *q = host; q < end; q++)
        if (*q == '@')
            host = q + 1;
    size_t scheme_len = p ? (size_t)(p - url) + 3 : 0;
    snprintf(out, outsz, "%.*s%.*s", (int)scheme_len, url, (int)(end - host), host);
}

void pgr_http_response_init(pgr_http_response *r)
{
    memset(r, 0, sizeof *r);
}

static void clear_headers(pgr_http_response *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    r->nheaders = 0;
}

void pgr_http_response_free(pgr_http_response *r)
{
    clear_headers(r);
    free(r->headers);
    free(r->body);
    pgr_http_response_init(r);
}

const char *pgr_http_response_header(const pgr_http_response *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static int add_header(pgr_http_response *r, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (r->nheaders == r->headers_cap) {
        size_t cap = r->headers_cap ? r->headers_cap * 2 : 16;
        pgr_http_header *h = realloc(r->headers, cap * sizeof *h);
        if (!h)
            return -1;
        r->headers = h;
        r->headers_cap = cap;
    }
    char *n = strndup(name, nlen), *v = strndup(value, vlen);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    r->headers[r->nheaders].name = n;
    r->headers[r->nheaders].value = v;
    r->nheaders++;
    return 0;
}

/* Each header line of each response (interim 1xx ones too): a status line starts a new set. */
static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    pgr_http_client *c = ud;
    size_t len = size * n;
    pgr_http_response *r = c->resp;
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        clear_headers(r);
        const char *sp = memchr(data, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        c->in_headers_of_final = r->status >= 200;
        return size * n;
    }
    if (len == 0) {
        if (c->in_headers_of_final)
            c->headers_done = 1;
        return size * n;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return size * n; /* obsolete folded line: ignore */
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    if (add_header(r, data, (size_t)(colon - data), v, (size_t)(end - v)) != 0) {
        c->fail_kind = "memory";
        return 0;
    }
    return size * n;
}

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
    pgr_http_client *c = ud;
    size_t len = size * n;
    pgr_http_response *r = c->resp;
    c->headers_done = 1; /* a body implies the headers are complete (HTTP/0.9-like servers) */
    if (c->streaming) {
        if (c->dst && c->slen == c->soff && c->dst_len < c->dst_cap) {
            size_t k = c->dst_cap - c->dst_len;
            if (k > len)
                k = len;
            memcpy(c->dst + c->dst_len, data, k);
            c->dst_len += k;
            r->received += (long long)k;
            data += k;
            len -= k;
            if (len == 0)
                return size * n;
        }
        size_t pending = c->slen - c->soff;
        /* pausing means "deliver all of it again later": only allowed when nothing was taken */
        if (len == size * n && pending > 0 && pending + len > STREAM_BUFFER) {
            c->paused = 1;
            return CURL_WRITEFUNC_PAUSE;
        }
        if (c->soff > 0) {
            memmove(c->sbuf, c->sbuf + c->soff, pending);
            c->soff = 0;
            c->slen = pending;
        }
        if (c->slen + len > c->scap) {
            size_t cap = c->scap ? c->scap : 65536;
            while (cap < c->slen + len)
                cap *= 2;
            char *b = realloc(c->sbuf, cap);
            if (!b) {
                c->fail_kind = "memory";
                return 0;
            }
            c->sbuf = b;
            c->scap = cap;
        }
        memcpy(c->sbuf + c->slen, data, len);
        c->slen += len;
        r->received += (long long)len;
        return size * n;
    }
    r->received += (long long)len;
    if (c->req->on_body) {
        if (c->req->on_body(c->req->body_ud, data, len) != 0) {
            c->fail_kind = "aborted";
            return 0;
        }
        return len;
    }
    size_t max = c->req->max_body ? c->req->max_body : DEFAULT_MAX_BODY;
    if (r->body_len + len > max) {
        c->fail_kind = "too_large";
        return 0;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 16384;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            c->fail_kind = "memory";
            return 0;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = 0;
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    pgr_http_client *c = ud;
    long got = c->req->read(c->req->read_ud, buf, size * n);
    if (got < 0) {
        c->fail_kind = "aborted";
        return CURL_READFUNC_ABORT;
    }
    return (size_t)got;
}

pgr_http_client *pgr_http_client_new(const pgr_http_config *cfg, pgr_http_error *err)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            set_error(err, "error", CURLE_FAILED_INIT, "libcurl failed to initialise");
            return NULL;
        }
        global_done = 1;
    }
    pgr_http_client *c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->easy = curl_easy_init();
    c->multi = curl_multi_init();
    if (!c->easy || !c->multi)
        goto oom;
    if (cfg)
        c->cfg = *cfg;
    const char **strs[] = { &c->cfg.cainfo,       &c->cfg.ca_pem,   &c->cfg.cert_file,
                            &c->cfg.key_file,     &c->cfg.cert_pem, &c->cfg.key_pem,
                            &c->cfg.bearer_token, &c->cfg.username, &c->cfg.password,
                            &c->cfg.user_agent };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        const char *orig = *strs[i];
        *strs[i] = NULL;
        if (orig && !(*strs[i] = dup_or_null(orig)))
            goto oom;
    }
    if (c->cfg.bearer_token) {
        size_t len = strlen(c->cfg.bearer_token) + 32;
        if (!(c->auth_header = malloc(len)))
            goto oom;
        snprintf(c->auth_header, len, "Authorization: Bearer %s", c->cfg.bearer_token);
    }
    return c;
oom:
    pgr_http_client_free(c);
    set_error(err, "memory", 0, "out of memory creating an HTTP client");
    return NULL;
}

static void wipe_free(char *s)
{
    if (s) {
        /* secrets should not linger in freed memory */
        volatile char *v = s;
        while (*v)
            *v++ = 0;
        free(s);
    }
}

static void finish_transfer(pgr_http_client *c)
{
    if (c->busy)
        curl_multi_remove_handle(c->multi, c->easy);
    curl_slist_free_all(c->slist);
    c->slist = NULL;
    c->busy = 0;
    c->streaming = 0;
    c->paused = 0;
    c->req = NULL;
    c->soff = c->slen = 0;
}

void pgr_http_client_free(pgr_http_client *c)
{
    if (!c)
        return;
    finish_transfer(c);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->easy)
        curl_easy_cleanup(c->easy);
    free((char *)c->cfg.cainfo);
    free((char *)c->cfg.ca_pem);
    free((char *)c->cfg.cert_file);
    free((char *)c->cfg.key_file);
    free((char *)c->cfg.cert_pem);
    wipe_free((char *)c->cfg.key_pem);
    wipe_free((char *)c->cfg.bearer_token);
    free((char *)c->cfg.username);
    wipe_free((char *)c->cfg.password);
    free((char *)c->cfg.user_agent);
    wipe_free(c->auth_header);
    free(c->sbuf);
    free(c);
}

static long pick(long req, long def)
{
    if (req < 0)
        return 0;
    return req ? req : def;
}

static int blob(CURL *e, CURLoption opt, const char *pem)
{
    struct curl_blob b = { .data = (void *)pem, .len = strlen(pem), .flags = CURL_BLOB_COPY };
    return curl_easy_setopt(e, opt, &b) == CURLE_OK ? 0 : -1;
}

/* The client's TLS settings (CA, client certificate and key, verification) on an easy handle: the
 * one place they are applied, for requests and raw connections alike. Non-zero when one was refused. */
static int apply_tls(CURL *e, const pgr_http_config *cfg)
{
    int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
    /* TLS: verification stays on unless asked otherwise */
    if (cfg->insecure) {
        SET(CURLOPT_SSL_VERIFYPEER, 0L);
        SET(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (cfg->cainfo)
        SET(CURLOPT_CAINFO, cfg->cainfo);
    if (cfg->ca_pem)
        bad |= blob(e, CURLOPT_CAINFO_BLOB, cfg->ca_pem);
    if (cfg->cert_file)
        SET(CURLOPT_SSLCERT, cfg->cert_file);
    if (cfg->cert_pem)
        bad |= blob(e, CURLOPT_SSLCERT_BLOB, cfg->cert_pem);
    if (cfg->cert_file || cfg->cert_pem)
        SET(CURLOPT_SSLCERTTYPE, "PEM");
    if (cfg->key_file)
        SET(CURLOPT_SSLKEY, cfg->key_file);
    if (cfg->key_pem)
        bad |= blob(e, CURLOPT_SSLKEY_BLOB, cfg->key_pem);
    if (cfg->key_file || cfg->key_pem)
        SET(CURLOPT_SSLKEYTYPE, "PEM");
#undef SET
    return bad;
}

/* No CA of its own and TLS verified: the system's bundle, wherever this system keeps it
 * (cabundle.c). Returns 0, 1 when libcurl refused the option, -1 with `why` when there is none. */
static int system_ca(CURL *e, const pgr_http_config *cfg, const char *url, char *why, size_t whylen)
{
    if (cfg->cainfo || cfg->ca_pem || cfg->insecure || strncasecmp(url, "https:", 6) != 0)
        return 0;
    char ca[1024];
    if (pgr_cabundle_find(ca, sizeof ca, why, whylen) != 0)
        return -1;
    return curl_easy_setopt(e, CURLOPT_CAINFO, ca) != CURLE_OK;
}

/* Resets the easy handle (connections and caches survive) and applies config + request. */
/* libcurl's sockets are not close-on-exec: a child started meanwhile (a shell, a server, ssh) would
 * hold the connection open after pgr closed it. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)ud;
    (void)purpose;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static int setup(pgr_http_client *c, const pgr_http_request *req, pgr_http_response *resp,
                 pgr_http_error *err)
{
    const char *method = req->method ? req->method : "GET";
    char origin[256];
    pgr_http_url_origin(req->url, origin, sizeof origin);
    if (c->busy) {
        set_error(err, "usage", 0, "%s %s: this HTTP client already has a transfer in progress", method,
                  origin);
        return -1;
    }
    if (!req->url || !*req->url) {
        set_error(err, "usage", 0, "HTTP request without a URL");
        return -1;
    }
    pgr_http_response_free(resp);
    CURL *e = c->easy;
    curl_easy_reset(e);
    c->req = req;
    c->resp = resp;
    c->in_headers_of_final = c->headers_done = c->done = 0;
    c->fail_kind = NULL;
    c->result = CURLE_OK;
    c->errbuf[0] = 0;
    c->soff = c->slen = 0;
    c->paused = 0;

    int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, c);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, c);
    SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    /* The path goes out as the caller built it: libcurl would otherwise resolve "." and ".."
     * segments, turning a request on an object into one on its collection or namespace. */
    SET(CURLOPT_PATH_AS_IS, 1L);
    SET(CURLOPT_USERAGENT, c->cfg.user_agent ? c->cfg.user_agent : "pgr/" PGR_VERSION);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    long t = pick(req->timeout_ms, c->cfg.timeout_ms);
    if (t)
        SET(CURLOPT_TIMEOUT_MS, t);
    t = pick(req->connect_timeout_ms, c->cfg.connect_timeout_ms ? c->cfg.connect_timeout_ms : 10000);
    if (t)
        SET(CURLOPT_CONNECTTIMEOUT_MS, t);
    long lsl = pick(req->low_speed_limit, c->cfg.low_speed_limit);
    long lst = pick(req->low_speed_time, c->cfg.low_speed_time);
    if (lsl > 0 && lst > 0) {
        SET(CURLOPT_LOW_SPEED_LIMIT, lsl);
        SET(CURLOPT_LOW_SPEED_TIME, lst);
    }
    if (req->decompress)
        SET(CURLOPT_ACCEPT_ENCODING, "");
    if (req->buffer_size > 0)
        SET(CURLOPT_BUFFERSIZE, req->buffer_size);

    bad |= apply_tls(e, &c->cfg);
    char why[400];
    int ca = system_ca(e, &c->cfg, req->url, why, sizeof why);
    if (ca < 0) {
        set_error(err, "tls", 0, "%s %s: %s", method, origin, why);
        return -1;
    }
    bad |= ca;
    if (c->cfg.username) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, c->cfg.username);
        SET(CURLOPT_PASSWORD, c->cfg.password ? c->cfg.password : "");
    }

    /* method and body */
    int has_body = req->body != NULL || req->read != NULL;
    if (strcmp(method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (req->read) {
        SET(CURLOPT_UPLOAD, 1L);
        SET(CURLOPT_READFUNCTION, on_read);
        SET(CURLOPT_READDATA, c);
        if (req->read_size >= 0)
            SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->read_size);
        SET(CURLOPT_CUSTOMREQUEST, method);
    } else if (req->body) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_POSTFIELDS, req->body_len ? (const char *)req->body : "");
        if (strcmp(method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, method);
    }

    struct curl_slist *sl = NULL, *tmp;
    /* libcurl would otherwise wait for "100 Continue" before a large body, a needless round trip */
    if (has_body && (tmp = curl_slist_append(sl, "Expect:")))
        sl = tmp;
    if (c->auth_header && (tmp = curl_slist_append(sl, c->auth_header)))
        sl = tmp;
    for (const char *const *h = req->headers; h && *h; h++) {
        if (!(tmp = curl_slist_append(sl, *h))) {
            curl_slist_free_all(sl);
            set_error(err, "memory", 0, "%s %s: out of memory", method, origin);
            return -1;
        }
        sl = tmp;
    }
    c->slist = sl;
    if (sl)
        SET(CURLOPT_HTTPHEADER, sl);
#undef SET
    if (bad) {
        curl_slist_free_all(c->slist);
        c->slist = NULL;
        set_error(err, "usage", 0, "%s %s: libcurl rejected an option (TLS blobs need libcurl >= 7.77)",
                  method, origin);
        return -1;
    }
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        curl_slist_free_all(c->slist);
        c->slist = NULL;
        set_error(err, "error", 0, "%s %s: cannot start the transfer", method, origin);
        return -1;
    }
    c->busy = 1;
    return 0;
}

static const char *kind_of(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "resolve";
    case CURLE_COULDNT_CONNECT:
        return "connect";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING:
        return "transfer";
    case CURLE_OUT_OF_MEMORY:
        return "memory";
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "usage";
    default:
        return "error";
    }
}

static const char *kind_text(const char *kind)
{
    if (!strcmp(kind, "resolve"))
        return "host name not resolved";
    if (!strcmp(kind, "connect"))
        return "connection refused or unreachable";
    if (!strcmp(kind, "timeout"))
        return "timed out";
    if (!strcmp(kind, "tls"))
        return "TLS failure (check the CA bundle / certificate)";
    if (!strcmp(kind, "transfer"))
        return "connection cut during the transfer";
    if (!strcmp(kind, "aborted"))
        return "stopped by the consumer";
    if (!strcmp(kind, "too_large"))
        return "response body too large";
    if (!strcmp(kind, "memory"))
        return "out of memory";
    return "failed";
}

/* Fills err for a finished failed transfer. */
static void transfer_error(pgr_http_client *c, pgr_http_error *err)
{
    const char *method = c->req && c->req->method ? c->req->method : "GET";
    char origin[256];
    pgr_http_url_origin(c->req ? c->req->url : NULL, origin, sizeof origin);
    const char *kind = c->fail_kind ? c->fail_kind : kind_of(c->result);
    const char *detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->result);
    if (c->fail_kind)
        set_error(err, kind, (int)c->result, "%s %s: %s", method, origin, kind_text(kind));
    else
        set_error(err, kind, (int)c->result, "%s %s: %s (%s)", method, origin, kind_text(kind), detail);
}

/* One round: let libcurl work, then wait up to wait_ms for the socket. Sets c->done/result. */
static int drive(pgr_http_client *c, int wait_ms)
{
    if (atomic_load(&c->interrupted)) {
        c->done = 1;
        c->fail_kind = "aborted";
        return 0;
    }
    int running = 0;
    int had_headers = c->headers_done;
    CURLMcode mc = curl_multi_perform(c->multi, &running);
    if (mc != CURLM_OK) {
        c->done = 1;
        c->result = CURLE_FAILED_INIT;
        return -1;
    }
    int left;
    CURLMsg *m;
    while ((m = curl_multi_info_read(c->multi, &left)))
        if (m->msg == CURLMSG_DONE) {
            c->done = 1;
            c->result = m->data.result;
        }
    if (c->done || !running)
        return 0;
    /* a stream's caller must see what just arrived (headers, body bytes) before we wait again:
     * polling now would hold a watch event back for the whole slice */
    if (c->streaming && (c->headers_done != had_headers || c->slen > c->soff || c->dst_len > 0))
        return 0;
    if (wait_ms > 0)
        curl_multi_poll(c->multi, NULL, 0, wait_ms, NULL);
    if (atomic_load(&c->interrupted)) {
        c->done = 1;
        c->fail_kind = "aborted";
    }
    return 0;
}

void pgr_http_client_interrupt(pgr_http_client *c)
{
    atomic_store(&c->interrupted, 1);
    curl_multi_wakeup(c->multi);
}

int pgr_http_perform(pgr_http_client *c, const pgr_http_request *req, pgr_http_response *resp,
                     pgr_http_error *err)
{
    c->streaming = 0;
    if (setup(c, req, resp, err) != 0)
        return -1;
    while (!c->done)
        drive(c, 1000);
    int rc = 0;
    if (c->result != CURLE_OK || c->fail_kind) {
        transfer_error(c, err);
        rc = -1;
    }
    finish_transfer(c);
    return rc;
}

static long long now_ms(void);

int pgr_http_stream_open(pgr_http_client *c, const pgr_http_request *req, pgr_http_response *resp,
                         pgr_http_error *err)
{
    if (c->busy) {
        char origin[256];
        pgr_http_url_origin(req->url, origin, sizeof origin);
        set_error(err, "usage", 0, "%s %s: this HTTP client already has a transfer in progress",
                  req->method ? req->method : "GET", origin);
        return -1;
    }
    c->streaming = 1;
    if (setup(c, req, resp, err) != 0) {
        c->streaming = 0;
        return -1;
    }
    long long until = req->open_timeout_ms > 0 ? now_ms() + req->open_timeout_ms : 0;
    while (!c->done && !c->headers_done) {
        long long left = until ? until - now_ms() : 1000;
        if (left <= 0) {
            char origin[256];
            pgr_http_url_origin(req->url, origin, sizeof origin);
            set_error(err, "timeout", CURLE_OPERATION_TIMEDOUT, "%s %s: timed out waiting for the response",
                      req->method ? req->method : "GET", origin);
            finish_transfer(c);
            return -1;
        }
        drive(c, left < 1000 ? (int)left : 1000);
    }
    /* a transfer that failed after its headers (a watch cut right after its first events) still
     * opens: the reader gets the bytes that arrived, then the error */
    if (c->done && !c->headers_done && (c->result != CURLE_OK || c->fail_kind)) {
        transfer_error(c, err);
        finish_transfer(c);
        return -1;
    }
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long pgr_http_stream_read(pgr_http_client *c, char *buf, size_t cap, long wait_ms, pgr_http_error *err)
{
    if (!c->busy || !c->streaming) {
        set_error(err, "usage", 0, "no HTTP stream is open");
        return -1;
    }
    long long deadline = wait_ms >= 0 ? now_ms() + wait_ms : 0;
    for (;;) {
        if (c->slen > c->soff) {
            size_t n = c->slen - c->soff;
            if (n > cap)
                n = cap;
            memcpy(buf, c->sbuf + c->soff, n);
            c->soff += n;
            if (c->soff == c->slen)
                c->soff = c->slen = 0;
            return (long)n;
        }
        if (c->paused) {
            /* the buffer is empty: let libcurl hand over what it held back (may call on_write now) */
            c->paused = 0;
            curl_easy_pause(c->easy, CURLPAUSE_CONT);
            continue;
        }
        if (c->done) {
            if (c->result != CURLE_OK || c->fail_kind) {
                transfer_error(c, err);
                return -1;
            }
            return 0;
        }
        int slice = 1000;
        if (wait_ms >= 0) {
            long long left = deadline - now_ms();
            if (left <= 0) {
                /* one last non-blocking look before giving up */
                drive(c, 0);
                if (c->slen > c->soff || c->done)
                    continue;
                return PGR_HTTP_AGAIN;
            }
            if (left < slice)
                slice = (int)left;
        }
        c->dst = buf;
        c->dst_cap = cap;
        c->dst_len = 0;
        drive(c, slice);
        c->dst = NULL;
        size_t got = c->dst_len;
        c->dst_len = 0;
        if (got > 0)
            return (long)got;
    }
}

void pgr_http_stream_close(pgr_http_client *c)
{
    if (c && c->streaming)
        finish_transfer(c);
}

char *pgr_http_urlencode(const char *s, size_t len, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(len * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/')) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = 0;
    return out;
}

/* ---- raw connections (CONNECT_ONLY) ---- */

struct pgr_http_raw {
    CURL *easy;
    curl_socket_t fd;
    char *auth;        /* "Authorization: ..." or NULL; wiped on close */
    char host[256];    /* "host[:port]" of the URL */
    char origin[256];  /* for messages */
    char errbuf[CURL_ERROR_SIZE];
};

static char *auth_line(const pgr_http_config *cfg)
{
    if (cfg->bearer_token && *cfg->bearer_token) {
        size_t len = strlen(cfg->bearer_token) + 32;
        char *s = malloc(len);
        if (s)
            snprintf(s, len, "Authorization: Bearer %s", cfg->bearer_token);
        return s;
    }
    if (cfg->username) {
        const char *pw = cfg->password ? cfg->password : "";
        size_t ulen = strlen(cfg->username), plen = strlen(pw);
        char *plain = malloc(ulen + plen + 2);
        char *s = malloc(pgr_b64_encoded_len(ulen + plen + 1) + 32);
        if (!plain || !s) {
            free(plain);
            free(s);
            return NULL;
        }
        memcpy(plain, cfg->username, ulen);
        plain[ulen] = ':';
        memcpy(plain + ulen + 1, pw, plen + 1);
        size_t k = (size_t)sprintf(s, "Authorization: Basic ");
        k += pgr_b64_encode((const unsigned char *)plain, ulen + plen + 1, s + k, 0);
        s[k] = 0;
        wipe_free(plain);
        return s;
    }
    return NULL;
}

void pgr_http_raw_close(pgr_http_raw *r)
{
    if (!r)
        return;
    if (r->easy)
        curl_easy_cleanup(r->easy);
    wipe_free(r->auth);
    free(r);
}

pgr_http_raw *pgr_http_raw_open(const pgr_http_config *cfg, const char *url, long connect_timeout_ms,
                                pgr_http_error *err)
{
    static const pgr_http_config no_settings;
    if (!cfg)
        cfg = &no_settings;
    pgr_http_raw *r = calloc(1, sizeof *r);
    if (!r) {
        set_error(err, "memory", 0, "out of memory opening a connection");
        return NULL;
    }
    pgr_http_url_origin(url, r->origin, sizeof r->origin);
    const char *h = strstr(r->origin, "://");
    snprintf(r->host, sizeof r->host, "%s", h ? h + 3 : r->origin);
    if (!(r->easy = curl_easy_init())) {
        pgr_http_raw_close(r);
        set_error(err, "memory", 0, "%s: cannot start libcurl", r->origin);
        return NULL;
    }
    CURL *e = r->easy;
    int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
    SET(CURLOPT_URL, url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, r->errbuf);
    SET(CURLOPT_CONNECT_ONLY, 1L);
    /* ALPN offers only http/1.1: an upgrade is an HTTP/1.1 request */
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms > 0 ? connect_timeout_ms : 10000L);
#undef SET
    bad |= apply_tls(e, cfg);
    char why[400];
    int ca = system_ca(e, cfg, url, why, sizeof why);
    if (ca < 0) {
        set_error(err, "tls", 0, "connect %s: %s", r->origin, why);
        pgr_http_raw_close(r);
        return NULL;
    }
    bad |= ca;
    if (bad) {
        set_error(err, "usage", 0, "%s: libcurl rejected an option (TLS blobs need libcurl >= 7.77)", r->origin);
        pgr_http_raw_close(r);
        return NULL;
    }
    if (cfg->bearer_token || cfg->username) {
        if (!(r->auth = auth_line(cfg))) {
            set_error(err, "memory", 0, "%s: out of memory", r->origin);
            pgr_http_raw_close(r);
            return NULL;
        }
    }
    CURLcode rc = curl_easy_perform(e);
    if (rc == CURLE_OK)
        rc = curl_easy_getinfo(e, CURLINFO_ACTIVESOCKET, &r->fd);
    if (rc != CURLE_OK || r->fd == CURL_SOCKET_BAD) {
        const char *kind = rc == CURLE_OK ? "connect" : kind_of(rc);
        set_error(err, kind, (int)rc, "connect %s: %s (%s)", r->origin, kind_text(kind),
                  r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        pgr_http_raw_close(r);
        return NULL;
    }
    return r;
}

long pgr_http_raw_send(pgr_http_raw *r, const void *data, size_t len, pgr_http_error *err)
{
    size_t n = 0;
    CURLcode rc = curl_easy_send(r->easy, data, len, &n);
    if (rc == CURLE_AGAIN)
        return 0;
    if (rc != CURLE_OK) {
        set_error(err, "transfer", (int)rc, "%s: %s (%s)", r->origin, kind_text("transfer"), curl_easy_strerror(rc));
        return -1;
    }
    return (long)n;
}

long pgr_http_raw_recv(pgr_http_raw *r, void *buf, size_t cap, pgr_http_error *err)
{
    size_t n = 0;
    CURLcode rc = curl_easy_recv(r->easy, buf, cap, &n);
    if (rc == CURLE_AGAIN)
        return PGR_HTTP_AGAIN;
    if (rc != CURLE_OK) {
        set_error(err, "transfer", (int)rc, "%s: %s (%s)", r->origin, kind_text("transfer"), curl_easy_strerror(rc));
        return -1;
    }
    return (long)n;
}

int pgr_http_raw_wait(pgr_http_raw *r, int want_write, long wait_ms)
{
    struct pollfd p = { .fd = r->fd, .events = (short)(POLLIN | (want_write ? POLLOUT : 0)) };
    int n = poll(&p, 1, wait_ms < 0 ? -1 : (int)(wait_ms > 0x7fffffff ? 0x7fffffff : wait_ms));
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    if (n == 0)
        return 0;
    int res = 0;
    /* an error or hang-up reads as readable: the next receive reports it */
    if (p.revents & (POLLIN | POLLERR | POLLHUP))
        res |= 1;
    if (p.revents & POLLOUT)
        res |= 2;
    return res;
}

const char *pgr_http_raw_auth(const pgr_http_raw *r)
{
    return r->auth;
}

const char *pgr_http_raw_host(const pgr_http_raw *r)
{
    return r->host;
}
