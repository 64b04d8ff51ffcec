/* execcore.c — the Kubernetes exec session declared in execcore.h: the upgrade request and its
 * answer, the channel protocol on top of wscore's frames, and the send queue. */
#include "execcore.h"

#include "wscore.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#ifndef PGR_VERSION
#define PGR_VERSION "0"
#endif

#define PROTO_V5 "v5.channel.k8s.io"
#define PROTO_V4 "v4.channel.k8s.io"
#define MAX_HEAD (64 * 1024)     /* the upgrade answer's status line and headers */
#define MAX_BODY (1024 * 1024)   /* a refusal's body (a Status) */
#define IN_CAP (256 * 1024)      /* bytes read from the connection at a time */
#define MAX_SEND_MESSAGE 65536   /* stdin is cut into messages of at most this (channel byte included) */

struct pgr_exec {
    pgr_http_raw *raw;
    char origin[256];
    const char *protocol;
    int v5;
    pgr_ws_decoder dec;
    unsigned char *in; /* received, not yet decoded: in[pos..len) */
    size_t pos, len;
    unsigned char *out; /* queued frames: out[opos..olen) */
    size_t opos, olen, ocap;
    int channel;        /* the channel of the data message being received */
    int sent_close, ended, peer_eof;
    int end_code;
    char end_reason[128];
};

static void xerr(pgr_exec_error *err, const char *kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void xerr(pgr_exec_error *err, const char *kind, const char *fmt, ...)
{
    if (!err)
        return;
    err->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static void from_http(pgr_exec_error *err, const pgr_http_error *he)
{
    xerr(err, he->kind ? he->kind : "error", "%s", he->message);
}

void pgr_exec_error_clear(pgr_exec_error *err)
{
    if (!err)
        return;
    free(err->body);
    memset(err, 0, sizeof *err);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int random_bytes(unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = getrandom(p, n, 0);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ---- the send queue */

static int reserve(pgr_exec *x, size_t more)
{
    if (x->opos > 0 && x->opos == x->olen)
        x->opos = x->olen = 0;
    if (x->olen + more <= x->ocap)
        return 0;
    if (x->opos > 0) {
        memmove(x->out, x->out + x->opos, x->olen - x->opos);
        x->olen -= x->opos;
        x->opos = 0;
        if (x->olen + more <= x->ocap)
            return 0;
    }
    size_t cap = x->ocap ? x->ocap : 65536;
    while (cap < x->olen + more)
        cap *= 2;
    unsigned char *p = realloc(x->out, cap);
    if (!p)
        return -1;
    x->out = p;
    x->ocap = cap;
    return 0;
}

/* Queues one masked frame whose payload is prefix (plen bytes) then data. */
static int queue_frame(pgr_exec *x, int opcode, const unsigned char *prefix, size_t plen, const void *data,
                       size_t len)
{
    unsigned char mask[4];
    if (random_bytes(mask, 4) != 0 || reserve(x, PGR_WS_MAX_HEADER + plen + len) != 0)
        return -1;
    unsigned char *p = x->out + x->olen;
    size_t h = pgr_ws_header(p, 1, opcode, plen + len, mask);
    if (plen)
        memcpy(p + h, prefix, plen);
    if (len)
        memcpy(p + h + plen, data, len);
    pgr_ws_mask(p + h, plen + len, mask, 0);
    x->olen += h + plen + len;
    return 0;
}

static int queue_close(pgr_exec *x, int code, const char *reason)
{
    if (x->sent_close)
        return 0;
    unsigned char pl[PGR_WS_MAX_CONTROL];
    size_t n = pgr_ws_close_payload(pl, code, reason);
    x->sent_close = 1;
    return queue_frame(x, PGR_WS_OP_CLOSE, pl, n, NULL, 0);
}

/* Sends what the socket takes now. 0, or -1 (err). */
static int flush(pgr_exec *x, pgr_exec_error *err)
{
    while (x->opos < x->olen) {
        pgr_http_error he;
        long n = pgr_http_raw_send(x->raw, x->out + x->opos, x->olen - x->opos, &he);
        if (n < 0) {
            from_http(err, &he);
            return -1;
        }
        if (n == 0)
            break;
        x->opos += (size_t)n;
    }
    if (x->opos == x->olen)
        x->opos = x->olen = 0;
    return 0;
}

size_t pgr_exec_pending(const pgr_exec *x)
{
    return x->olen - x->opos;
}

const char *pgr_exec_protocol(const pgr_exec *x)
{
    return x->protocol;
}

int pgr_exec_send(pgr_exec *x, int channel, const void *data, size_t len, pgr_exec_error *err)
{
    if (x->ended || x->sent_close) {
        xerr(err, "closed", "exec %s: the session has ended", x->origin);
        return -1;
    }
    const unsigned char *p = data;
    unsigned char ch = (unsigned char)channel;
    do {
        size_t k = len < MAX_SEND_MESSAGE - 1 ? len : MAX_SEND_MESSAGE - 1;
        if (queue_frame(x, PGR_WS_OP_BINARY, &ch, 1, p, k) != 0) {
            xerr(err, "memory", "exec %s: out of memory", x->origin);
            return -1;
        }
        p += k;
        len -= k;
    } while (len > 0);
    return 0;
}

int pgr_exec_close_stdin(pgr_exec *x, pgr_exec_error *err)
{
    if (!x->v5) {
        xerr(err, "unsupported", "exec %s: the server speaks %s, which cannot close stdin (v5.channel.k8s.io can)",
             x->origin, x->protocol);
        return -1;
    }
    unsigned char msg[2] = { PGR_EXEC_CLOSE, PGR_EXEC_STDIN };
    if (x->ended || x->sent_close) {
        xerr(err, "closed", "exec %s: the session has ended", x->origin);
        return -1;
    }
    if (queue_frame(x, PGR_WS_OP_BINARY, msg, 2, NULL, 0) != 0) {
        xerr(err, "memory", "exec %s: out of memory", x->origin);
        return -1;
    }
    return 0;
}

/* ---- the upgrade */

/* The value of header name in the head (lines after the status line), copied into out. */
static int head_value(const char *head, const char *name, char *out, size_t outsz)
{
    size_t nlen = strlen(name);
    const char *line = strstr(head, "\r\n");
    while (line && line[2] && !(line[2] == '\r' && line[3] == '\n')) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - line) > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = end;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            snprintf(out, outsz, "%.*s", (int)(e - v), v);
            return 1;
        }
        line = end;
    }
    return 0;
}

static int has_token(const char *list, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == n && strncasecmp(p, token, n) == 0)
            return 1;
        p = e;
    }
    return 0;
}

/* Waits for the socket within the deadline; 0 when it is ready, -1 (err) on timeout or error. */
static int wait_until(pgr_exec *x, int want_write, long long deadline, const char *what, pgr_exec_error *err)
{
    long long left = deadline - now_ms();
    if (left <= 0) {
        xerr(err, "timeout", "exec %s: timed out waiting for %s", x->origin, what);
        return -1;
    }
    int w = pgr_http_raw_wait(x->raw, want_write, left > 1000 ? 1000 : left);
    if (w < 0) {
        xerr(err, "transfer", "exec %s: the connection failed while waiting for %s", x->origin, what);
        return -1;
    }
    return 0;
}

/* Reads the body of a refusal (Content-Length, chunked, or to the end), at most MAX_BODY bytes. */
static void read_refusal_body(pgr_exec *x, const char *head, size_t head_len, long long deadline,
                              pgr_exec_error *err)
{
    char v[64];
    long long want = -1;
    if (head_value(head, "Content-Length", v, sizeof v))
        want = strtoll(v, NULL, 10);
    int chunked = head_value(head, "Transfer-Encoding", v, sizeof v) && has_token(v, "chunked");
    size_t cap = MAX_BODY + 1;
    char *body = malloc(cap);
    if (!body)
        return;
    size_t n = x->len - head_len;
    if (n > MAX_BODY)
        n = MAX_BODY;
    memcpy(body, x->in + head_len, n);
    while ((want < 0 || (long long)n < want) && n < MAX_BODY) {
        pgr_http_error he;
        long k = pgr_http_raw_recv(x->raw, body + n, MAX_BODY - n, &he);
        if (k > 0) {
            n += (size_t)k;
            continue;
        }
        if (k == 0 || k == -1)
            break;
        if (now_ms() >= deadline || pgr_http_raw_wait(x->raw, 0, 200) < 0)
            break;
        if (chunked && n >= 5 && memcmp(body + n - 5, "0\r\n\r\n", 5) == 0)
            break;
    }
    if (want >= 0 && (long long)n > want)
        n = (size_t)want;
    if (chunked) {
        /* de-chunk in place */
        size_t r = 0, w = 0;
        while (r < n) {
            char *end;
            unsigned long sz = strtoul(body + r, &end, 16);
            const char *crlf = memmem(body + r, n - r, "\r\n", 2);
            if (!crlf || end == body + r)
                break;
            r = (size_t)(crlf - body) + 2;
            if (sz == 0 || r + sz > n)
                break;
            memmove(body + w, body + r, sz);
            w += sz;
            r += sz + 2;
        }
        n = w;
    }
    body[n] = 0;
    err->body = body;
    err->body_len = n;
}

static int handshake(pgr_exec *x, const pgr_exec_options *o, pgr_exec_error *err)
{
    const char *sep = strstr(o->url, "://");
    const char *path = sep ? strchr(sep + 3, '/') : NULL;
    if (!path) {
        xerr(err, "usage", "exec: the URL has no path");
        return -1;
    }
    unsigned char nonce[16];
    char key[25], accept[29];
    if (random_bytes(nonce, sizeof nonce) != 0 || (pgr_ws_key(nonce, key), pgr_ws_accept(key, accept)) != 0) {
        xerr(err, "error", "exec %s: no random bytes or SHA-1 for the WebSocket key", x->origin);
        return -1;
    }
    const char *auth = pgr_http_raw_auth(x->raw);
    const char *protos = o->v4_only ? PROTO_V4 : PROTO_V5 ", " PROTO_V4;
    size_t cap = strlen(path) + (auth ? strlen(auth) : 0) + 512;
    char *rq = malloc(cap);
    if (!rq) {
        xerr(err, "memory", "exec %s: out of memory", x->origin);
        return -1;
    }
    int rlen = snprintf(rq, cap,
                        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pgr/%s\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: %s\r\n%s%s\r\n",
                        path, pgr_http_raw_host(x->raw), PGR_VERSION, key, protos, auth ? auth : "",
                        auth ? "\r\n" : "");
    int rc = -1;
    if (rlen < 0 || (size_t)rlen >= cap || reserve(x, (size_t)rlen) != 0) {
        xerr(err, "memory", "exec %s: out of memory", x->origin);
        goto out;
    }
    memcpy(x->out + x->olen, rq, (size_t)rlen);
    x->olen += (size_t)rlen;
    long long deadline = now_ms() + (o->handshake_timeout_ms > 0 ? o->handshake_timeout_ms : 30000);
    while (pgr_exec_pending(x) > 0) {
        if (flush(x, err) != 0)
            goto out;
        if (pgr_exec_pending(x) > 0 && wait_until(x, 1, deadline, "the upgrade to be sent", err) != 0)
            goto out;
    }
    /* the answer's head */
    char *end = NULL;
    while (!end) {
        pgr_http_error he;
        long k = pgr_http_raw_recv(x->raw, x->in + x->len, MAX_HEAD - x->len, &he);
        if (k > 0) {
            x->len += (size_t)k;
            x->in[x->len] = 0;
            end = strstr((char *)x->in, "\r\n\r\n");
            if (!end && x->len >= MAX_HEAD) {
                xerr(err, "protocol", "exec %s: the answer to the upgrade has no end of headers", x->origin);
                goto out;
            }
            continue;
        }
        if (k == 0) {
            xerr(err, "transfer", "exec %s: the server closed the connection without answering the upgrade",
                 x->origin);
            goto out;
        }
        if (k == -1) {
            from_http(err, &he);
            goto out;
        }
        if (wait_until(x, 0, deadline, "the answer to the upgrade", err) != 0)
            goto out;
    }
    size_t head_len = (size_t)(end - (char *)x->in) + 4;
    end[2] = 0; /* the head as one string, each line ending in \r\n */
    const char *head = (const char *)x->in;
    long status = 0;
    if (strncmp(head, "HTTP/1.", 7) == 0 && strchr(head, ' '))
        status = strtol(strchr(head, ' ') + 1, NULL, 10);
    if (status != 101) {
        err->status = status;
        read_refusal_body(x, head, head_len, deadline, err);
        xerr(err, "refused", "exec %s: the server answered the upgrade with HTTP %ld", x->origin, status);
        err->status = status;
        goto out;
    }
    char v[256];
    if (!head_value(head, "Upgrade", v, sizeof v) || strcasecmp(v, "websocket") != 0 ||
        !head_value(head, "Connection", v, sizeof v) || !has_token(v, "upgrade")) {
        xerr(err, "protocol", "exec %s: HTTP 101 without Upgrade: websocket", x->origin);
        goto out;
    }
    if (!head_value(head, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, accept) != 0) {
        xerr(err, "protocol", "exec %s: the server's Sec-WebSocket-Accept does not match the key", x->origin);
        goto out;
    }
    if (!head_value(head, "Sec-WebSocket-Protocol", v, sizeof v)) {
        xerr(err, "protocol", "exec %s: the server chose no channel protocol (it must agree on %s)", x->origin,
             protos);
        goto out;
    }
    if (!o->v4_only && strcmp(v, PROTO_V5) == 0) {
        x->protocol = PROTO_V5;
        x->v5 = 1;
    } else if (strcmp(v, PROTO_V4) == 0) {
        x->protocol = PROTO_V4;
    } else {
        xerr(err, "protocol", "exec %s: the server chose protocol %.100s, which was not offered", x->origin, v);
        goto out;
    }
    /* frames that came with the head */
    x->pos = head_len;
    rc = 0;
out:
    free(rq);
    return rc;
}

pgr_exec *pgr_exec_open(const pgr_http_config *cfg, const pgr_exec_options *o, pgr_exec_error *err)
{
    if (err)
        memset(err, 0, sizeof *err);
    if (!o || !o->url) {
        xerr(err, "usage", "exec: no URL");
        return NULL;
    }
    pgr_exec *x = calloc(1, sizeof *x);
    if (!x || !(x->in = malloc(IN_CAP + 1)) || MAX_HEAD > IN_CAP) {
        free(x);
        xerr(err, "memory", "exec: out of memory");
        return NULL;
    }
    pgr_http_url_origin(o->url, x->origin, sizeof x->origin);
    pgr_ws_decoder_init(&x->dec, 0, o->max_message ? o->max_message : 16u << 20);
    x->channel = -1;
    pgr_http_error he;
    x->raw = pgr_http_raw_open(cfg, o->url, o->connect_timeout_ms, &he);
    if (!x->raw) {
        from_http(err, &he);
        pgr_exec_close(x);
        return NULL;
    }
    if (handshake(x, o, err) != 0) {
        /* no close frame: the connection never became a WebSocket */
        x->sent_close = 1;
        pgr_exec_close(x);
        return NULL;
    }
    return x;
}

/* ---- the session */

static void set_end(pgr_exec *x, int code, const char *reason, size_t rlen)
{
    x->ended = 1;
    x->end_code = code;
    snprintf(x->end_reason, sizeof x->end_reason, "%.*s", (int)(rlen < 127 ? rlen : 127), reason ? reason : "");
}

static int end_event(pgr_exec *x, pgr_exec_event *ev)
{
    ev->kind = PGR_EXEC_END;
    ev->close_code = x->end_code;
    snprintf(ev->reason, sizeof ev->reason, "%s", x->end_reason);
    return 1;
}

/* Decodes what was received; 1 with an event, 0 when more input is needed, -1 (err). */
static int decode(pgr_exec *x, pgr_exec_event *ev, pgr_exec_error *err)
{
    while (x->pos < x->len) {
        pgr_ws_event w;
        size_t used = pgr_ws_decode(&x->dec, x->in + x->pos, x->len - x->pos, &w);
        x->pos += used;
        switch (w.kind) {
        case PGR_WS_EV_NONE:
            if (used == 0)
                return 0;
            continue;
        case PGR_WS_EV_DATA: {
            if (w.opcode != PGR_WS_OP_BINARY) {
                queue_close(x, PGR_WS_CLOSE_UNSUPPORTED, "the channel protocol is binary");
                xerr(err, "protocol", "exec %s: the server sent a text message on a binary channel protocol",
                     x->origin);
                return -1;
            }
            const unsigned char *d = w.data;
            size_t n = w.len;
            if (w.first) {
                if (n == 0)
                    continue; /* an empty message carries no channel */
                x->channel = d[0];
                d++;
                n--;
            }
            if (n == 0)
                continue;
            ev->kind = PGR_EXEC_DATA;
            ev->channel = x->channel;
            ev->data = (const char *)d;
            ev->len = n;
            return 1;
        }
        case PGR_WS_EV_PING:
            if (!x->sent_close && queue_frame(x, PGR_WS_OP_PONG, w.data, w.len, NULL, 0) != 0) {
                xerr(err, "memory", "exec %s: out of memory", x->origin);
                return -1;
            }
            continue;
        case PGR_WS_EV_PONG:
            continue;
        case PGR_WS_EV_CLOSE:
            /* echo the code, as RFC 6455 5.5.1 asks */
            queue_close(x, w.close_code == PGR_WS_CLOSE_NO_STATUS ? 0 : w.close_code, NULL);
            flush(x, NULL);
            set_end(x, w.close_code, w.reason, w.reason_len);
            return end_event(x, ev);
        case PGR_WS_EV_ERROR:
            queue_close(x, w.close_code, w.reason);
            flush(x, NULL);
            xerr(err, "protocol", "exec %s: the server broke the WebSocket protocol: %s", x->origin, w.reason);
            return -1;
        }
    }
    return 0;
}

int pgr_exec_next(pgr_exec *x, long wait_ms, pgr_exec_event *ev, pgr_exec_error *err)
{
    memset(ev, 0, sizeof *ev);
    if (x->ended)
        return end_event(x, ev);
    /* the previous event's bytes are no longer needed */
    if (x->pos > 0) {
        memmove(x->in, x->in + x->pos, x->len - x->pos);
        x->len -= x->pos;
        x->pos = 0;
    }
    long long deadline = wait_ms >= 0 ? now_ms() + wait_ms : 0;
    int was_full = pgr_exec_pending(x) >= PGR_EXEC_SEND_HIGH;
    for (;;) {
        if (flush(x, err) != 0)
            return -1;
        int r = decode(x, ev, err);
        if (r != 0)
            return r;
        if (was_full && pgr_exec_pending(x) < PGR_EXEC_SEND_LOW)
            return 0;
        if (x->peer_eof) {
            set_end(x, PGR_WS_CLOSE_ABNORMAL, "the connection ended without a close frame", 42);
            return end_event(x, ev);
        }
        /* TLS may hold bytes the socket no longer shows: receive before waiting */
        if (x->pos == x->len)
            x->pos = x->len = 0;
        pgr_http_error he;
        long k = pgr_http_raw_recv(x->raw, x->in + x->len, IN_CAP - x->len, &he);
        if (k > 0) {
            x->len += (size_t)k;
            continue;
        }
        if (k == 0) {
            x->peer_eof = 1;
            continue;
        }
        if (k == -1) {
            from_http(err, &he);
            return -1;
        }
        long left = 1000;
        if (wait_ms >= 0) {
            long long l = deadline - now_ms();
            if (l <= 0)
                return 0;
            if (l < left)
                left = (long)l;
        }
        int w = pgr_http_raw_wait(x->raw, pgr_exec_pending(x) > 0, left);
        if (w < 0) {
            xerr(err, "transfer", "exec %s: the connection failed", x->origin);
            return -1;
        }
    }
}

void pgr_exec_close(pgr_exec *x)
{
    if (!x)
        return;
    if (x->raw) {
        if (!x->ended && !x->sent_close) {
            /* the server stops the command when the session closes early */
            queue_close(x, PGR_WS_CLOSE_GOING_AWAY, "the client closed the session");
            long long deadline = now_ms() + 200;
            while (pgr_exec_pending(x) > 0 && flush(x, NULL) == 0 && pgr_exec_pending(x) > 0 &&
                   now_ms() < deadline)
                pgr_http_raw_wait(x->raw, 1, 50);
        }
        pgr_http_raw_close(x->raw);
    }
    free(x->in);
    free(x->out);
    free(x);
}
