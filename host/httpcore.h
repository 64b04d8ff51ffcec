/* httpcore.h — the one libcurl wrapper every HTTP user shares (S3, Kubernetes, pgr.http): a client
 * owns one reused easy handle (keep-alive), TLS and auth settings; requests are blocking or pulled.
 *
 * No Lua here. Typical use:
 *
 *     pgr_http_config cfg = { .cainfo = "/etc/ca.pem", .bearer_token = tok };
 *     pgr_http_error err;
 *     pgr_http_client *c = pgr_http_client_new(&cfg, &err);       // NULL + err on failure
 *     const char *hdrs[] = { "Accept: application/json", NULL };
 *     pgr_http_request rq = { .method = "GET", .url = url, .headers = hdrs, .timeout_ms = 30000 };
 *     pgr_http_response rs;
 *     pgr_http_response_init(&rs);
 *     if (pgr_http_perform(c, &rq, &rs, &err) == 0)               // 0: an HTTP response arrived
 *         use(rs.status, rs.body, rs.body_len, pgr_http_response_header(&rs, "Content-Type"));
 *     else
 *         report(err.kind, err.message);                          // transport failure, no status
 *     pgr_http_response_free(&rs);
 *     pgr_http_client_free(c);
 *
 * Any HTTP status (404, 500, ...) is a success of the transport: the caller reads rs.status.
 * Error messages name the method and scheme://host:port of the URL, never the path's query, a token,
 * a password or a header value.
 *
 * One transfer at a time per client (blocking or pulled); use one client per concurrent stream (for
 * instance a Kubernetes watch). Not thread-safe; callbacks must not call back into the same client. */
#ifndef PGR_HTTPCORE_H
#define PGR_HTTPCORE_H

#include <stddef.h>

/* A client: one reused libcurl easy handle plus the settings below. */
typedef struct pgr_http_client pgr_http_client;

/* Client-wide settings, applied to every request of the client. Strings are copied by
 * pgr_http_client_new; NULL / 0 means "not set". */
typedef struct {
    /* TLS. The peer and host name are verified unless insecure is set. */
    const char *cainfo;    /* CA bundle file (PEM) instead of the system's */
    const char *ca_pem;    /* CA certificate(s) as PEM text (CURLOPT_CAINFO_BLOB), e.g. from kubeconfig */
    int insecure;          /* skip verification (kubeconfig insecure-skip-tls-verify) */
    const char *cert_file; /* client certificate, PEM file */
    const char *key_file;  /* client key, PEM file */
    const char *cert_pem;  /* client certificate as PEM text (CURLOPT_SSLCERT_BLOB) */
    const char *key_pem;   /* client key as PEM text (CURLOPT_SSLKEY_BLOB) */
    /* Authentication, at most one of the two. */
    const char *bearer_token;          /* sends Authorization: Bearer TOKEN */
    const char *username, *password;   /* HTTP basic auth */
    /* Defaults for requests that leave the field 0. */
    long timeout_ms;         /* whole request; 0 = no limit */
    long connect_timeout_ms; /* 0 = 10 s */
    long low_speed_limit;    /* abort when slower than this many bytes/s ... */
    long low_speed_time;     /* ... for this many seconds (both 0 = never) */
    const char *user_agent;  /* 0 = "pgr/VERSION" */
} pgr_http_config;

/* Response-body consumer: return 0 to continue, non-zero to abort the transfer (the request then
 * fails with kind "aborted"). Called only with the body of the final response (after its headers). */
typedef int (*pgr_http_body_fn)(void *ud, const char *data, size_t len);
/* Request-body producer: fill buf with up to cap bytes; return the count, 0 at the end, -1 to abort. */
typedef long (*pgr_http_read_fn)(void *ud, char *buf, size_t cap);

typedef struct {
    const char *method;          /* "GET" when NULL; "HEAD" asks for no body */
    const char *url;             /* absolute URL, already percent-encoded */
    const char *const *headers;  /* NULL-terminated "Name: value" lines, or NULL */
    /* Request body: from memory (body != NULL, body_len bytes, may be 0) ... */
    const void *body;
    size_t body_len;
    /* ... or streamed from read (read_size bytes, -1 = unknown: chunked). */
    pgr_http_read_fn read;
    void *read_ud;
    long long read_size;
    /* Response body: streamed to on_body, or when NULL collected into response.body (at most
     * max_body bytes, 0 = 64 MiB; more fails with kind "too_large"). Ignored by pgr_http_stream_*. */
    pgr_http_body_fn on_body;
    void *body_ud;
    size_t max_body;
    int decompress;              /* ask for gzip/deflate and decode transparently */
    long buffer_size;            /* libcurl's receive buffer (CURLOPT_BUFFERSIZE); 0 = its default */
    /* 0 = the client's default; -1 = none for this request. */
    long timeout_ms, connect_timeout_ms, low_speed_limit, low_speed_time;
    long open_timeout_ms; /* pgr_http_stream_open: fail ("timeout") without headers by then; 0 = none */
} pgr_http_request;

typedef struct {
    char *name;
    char *value;
} pgr_http_header;

typedef struct {
    long status;               /* of the final response (1xx interim responses are skipped) */
    pgr_http_header *headers;  /* of the final response, in order; names as the server sent them */
    size_t nheaders;
    char *body;                /* collected body, NUL-terminated (NULL when streamed / empty) */
    size_t body_len;
    long long received;        /* body bytes received, also when streamed */
    size_t headers_cap, body_cap; /* private */
} pgr_http_response;

typedef struct {
    int curl_code;     /* CURLcode, 0 when the failure is not libcurl's */
    const char *kind;  /* static string: "resolve" "connect" "timeout" "tls" "transfer" (cut, reset,
                        * truncated: worth a retry) "aborted" (a callback said stop) "too_large"
                        * "usage" (bad request fields / busy client) "memory" "error" (other) */
    char message[512]; /* e.g. "GET https://127.0.0.1:6443: connection refused (Couldn't connect ...)" */
} pgr_http_error;

/* Creates a client; NULL (err filled, kind "memory"/"error") on failure. cfg may be NULL. */
pgr_http_client *pgr_http_client_new(const pgr_http_config *cfg, pgr_http_error *err);
/* Frees the client, aborting a stream in progress. NULL is fine. */
void pgr_http_client_free(pgr_http_client *c);

void pgr_http_response_init(pgr_http_response *r);
/* Frees headers and body; leaves r initialised (reusable). */
void pgr_http_response_free(pgr_http_response *r);
/* Value of the first header named name (case-insensitive), or NULL. */
const char *pgr_http_response_header(const pgr_http_response *r, const char *name);

/* Blocking request. 0: a response arrived (resp filled, any status); -1: transport failure (err).
 * resp is reset first (pgr_http_response_free). */
int pgr_http_perform(pgr_http_client *c, const pgr_http_request *req, pgr_http_response *resp,
                     pgr_http_error *err);

/* Pulled request (bounded memory: the body is read as the caller asks for it; libcurl is paused
 * while the caller is busy). open returns 0 once the final response's status and headers are in
 * resp (the body is then read with pgr_http_stream_read; a failure after the headers is reported
 * by the reads, after the bytes that did arrive), -1 on transport failure before them.
 * req->on_body is ignored. The request strings must stay valid until the stream is closed.
 * Reads copy straight into the caller's buffer; at most ~256 KiB more is held between reads. */
int pgr_http_stream_open(pgr_http_client *c, const pgr_http_request *req, pgr_http_response *resp,
                         pgr_http_error *err);
/* Reads up to cap body bytes into buf, waiting at most wait_ms (-1 = as long as the request's own
 * timeouts allow). Returns the count (> 0), 0 at the end of the body, PGR_HTTP_AGAIN when wait_ms
 * passed with no data, or -1 on failure (err; kind "transfer" when the connection was cut). */
#define PGR_HTTP_AGAIN (-2)
long pgr_http_stream_read(pgr_http_client *c, char *buf, size_t cap, long wait_ms, pgr_http_error *err);
/* Ends the stream (aborting the transfer when unfinished; that connection is then not reused).
 * Safe to call when no stream is open. */
void pgr_http_stream_close(pgr_http_client *c);
/* The one call that is safe from another thread while c is in use: the transfer in progress, and
 * every later one, fails at once with kind "aborted" (a wait on the network or for the connection
 * is woken). For stopping a thread that reads through c; the client must outlive the call. */
void pgr_http_client_interrupt(pgr_http_client *c);

/* A raw connection: TCP, and TLS for https, to a URL's host with a client's settings (CA,
 * verification, client certificate), through libcurl's CONNECT_ONLY, for a protocol libcurl does not
 * speak (a WebSocket after an HTTP upgrade the caller writes itself). Nothing is sent on open; only
 * HTTP/1.1 is offered in ALPN, so an upgrade request is understood. Send and receive never block;
 * wait for the socket with pgr_http_raw_wait (TLS may hold received bytes: receive until
 * PGR_HTTP_AGAIN before waiting). The caller writes authentication headers itself
 * (pgr_http_raw_auth). One owner, one thread. */
typedef struct pgr_http_raw pgr_http_raw;
/* Opens the connection within connect_timeout_ms (0 = 10 s); NULL with err (kinds as requests). */
pgr_http_raw *pgr_http_raw_open(const pgr_http_config *cfg, const char *url, long connect_timeout_ms,
                                pgr_http_error *err);
/* Bytes written (0 when the socket is full), or -1 (err, kind "transfer"). */
long pgr_http_raw_send(pgr_http_raw *r, const void *data, size_t len, pgr_http_error *err);
/* Bytes read (> 0), 0 at the end (the peer closed), PGR_HTTP_AGAIN when none are there, -1 (err). */
long pgr_http_raw_recv(pgr_http_raw *r, void *buf, size_t cap, pgr_http_error *err);
/* Waits up to wait_ms for the socket to be readable (or writable, when want_write): 1 readable,
 * 2 writable, 3 both, 0 when the time passed (or a signal came), -1 on a socket error. */
int pgr_http_raw_wait(pgr_http_raw *r, int want_write, long wait_ms);
/* "Authorization: ..." for the config's bearer token or basic credentials, or NULL. */
const char *pgr_http_raw_auth(const pgr_http_raw *r);
/* "host[:port]" as a Host header names it. */
const char *pgr_http_raw_host(const pgr_http_raw *r);
/* Closes the connection; NULL is fine. */
void pgr_http_raw_close(pgr_http_raw *r);

/* Percent-encodes s (RFC 3986 unreserved characters kept; '/' kept when keep_slash). Returns a
 * malloc'd string the caller frees, NULL when out of memory. */
char *pgr_http_urlencode(const char *s, size_t len, int keep_slash);

/* "scheme://host[:port]" of url into out (for messages); never the path, query or user info. */
void pgr_http_url_origin(const char *url, char *out, size_t outsz);

#endif
