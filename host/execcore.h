/* execcore.h — a Kubernetes exec session (pods/NAME/exec) over a WebSocket, no Lua: the HTTP upgrade
 * written by hand on an httpcore raw connection (so the same TLS settings and credentials as every API
 * request), RFC 6455 framing (wscore.h), and the channel protocol: v5.channel.k8s.io, or v4 when the
 * server offers no more. Each binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr,
 * 3 the error channel (a Status as JSON, which the caller decodes), 4 resize; v5 adds channel 255, whose
 * message [255, 0] closes the command's stdin.
 *
 *   pgr_exec_options o = { .url = "https://api:6443/api/v1/namespaces/ns/pods/p/exec?command=ls&stdout=true" };
 *   pgr_exec_error err = { 0 };
 *   pgr_exec *x = pgr_exec_open(&http_config, &o, &err);      // NULL: err (err.status/body if refused)
 *   pgr_exec_event ev;
 *   while (pgr_exec_next(x, 1000, &ev, &err) >= 0 && ev.kind != PGR_EXEC_END)
 *       if (ev.kind == PGR_EXEC_DATA) use(ev.channel, ev.data, ev.len);
 *   pgr_exec_close(x);
 *   pgr_exec_error_clear(&err);
 *
 * Back-pressure both ways: bytes are read from the connection only inside pgr_exec_next (a caller
 * busy with stdout makes the server wait), and stdin the caller queues with pgr_exec_send waits in
 * memory until the socket takes it: keep pgr_exec_pending() below a bound (next() returns early once
 * the queue falls under PGR_EXEC_SEND_LOW after being over PGR_EXEC_SEND_HIGH). One thread. */
#ifndef PGR_EXECCORE_H
#define PGR_EXECCORE_H

#include "httpcore.h"

#include <stddef.h>
#include <stdint.h>

#define PGR_EXEC_STDIN 0
#define PGR_EXEC_STDOUT 1
#define PGR_EXEC_STDERR 2
#define PGR_EXEC_ERROR 3
#define PGR_EXEC_RESIZE 4
#define PGR_EXEC_CLOSE 255 /* v5: [255, channel] closes that channel */

#define PGR_EXEC_SEND_HIGH (1024 * 1024)
#define PGR_EXEC_SEND_LOW (256 * 1024)

typedef struct pgr_exec pgr_exec;

typedef struct {
    const char *url;           /* the exec URL with its query (command=, container=, stdin=, ...) */
    long connect_timeout_ms;   /* TCP + TLS; 0 = 10 s */
    long handshake_timeout_ms; /* the upgrade's answer; 0 = 30 s */
    uint64_t max_message;      /* a longer message from the server is a protocol error; 0 = 16 MiB */
    int v4_only;               /* offer v4.channel.k8s.io only (tests: the v4 path) */
} pgr_exec_options;

typedef struct {
    const char *kind;   /* "connect" "resolve" "tls" "timeout" "transfer" (the connection broke)
                         * "refused" (an HTTP answer instead of the upgrade: status, body) "protocol"
                         * (the server broke RFC 6455 or the channel protocol) "unsupported" "closed"
                         * "memory" "usage" */
    char message[512];  /* names the server's origin, never the path's query or a credential */
    long status;        /* "refused": the HTTP status (403, 404, 400, ...) */
    char *body;         /* "refused": the answer's body, usually a Kubernetes Status (malloc'd) */
    size_t body_len;
} pgr_exec_error;

/* Frees err->body and clears err. */
void pgr_exec_error_clear(pgr_exec_error *err);

typedef enum { PGR_EXEC_NONE = 0, PGR_EXEC_DATA, PGR_EXEC_END } pgr_exec_event_kind;

typedef struct {
    pgr_exec_event_kind kind;
    int channel;      /* DATA: the message's channel (1 stdout, 2 stderr, 3 error: Status JSON, in pieces) */
    const char *data; /* DATA: valid until the next call on the session */
    size_t len;
    int close_code;   /* END: the server's close code; 1005 without one; 1006 when the connection ended
                       * with no close frame */
    char reason[128]; /* END: the close frame's reason */
} pgr_exec_event;

/* Connects, upgrades and agrees on a channel protocol. NULL with err on failure. */
pgr_exec *pgr_exec_open(const pgr_http_config *cfg, const pgr_exec_options *opts, pgr_exec_error *err);
/* "v5.channel.k8s.io" or "v4.channel.k8s.io". */
const char *pgr_exec_protocol(const pgr_exec *x);

/* Sends queued bytes, answers pings, and returns the next piece of output: 1 with ev (DATA, or END
 * once the server closed: every later call returns END again), 0 when wait_ms passed without one
 * (wait_ms < 0: no limit) or when the send queue fell below PGR_EXEC_SEND_LOW after being above
 * PGR_EXEC_SEND_HIGH, -1 on failure (err). */
int pgr_exec_next(pgr_exec *x, long wait_ms, pgr_exec_event *ev, pgr_exec_error *err);
/* Queues data as messages on channel (stdin: 0); 0 or -1 (err: "closed" after the end, "memory"). */
int pgr_exec_send(pgr_exec *x, int channel, const void *data, size_t len, pgr_exec_error *err);
/* Closes the command's stdin (v5); -1 with kind "unsupported" on v4, which cannot say it. */
int pgr_exec_close_stdin(pgr_exec *x, pgr_exec_error *err);
/* Bytes queued and not yet sent. */
size_t pgr_exec_pending(const pgr_exec *x);
/* Ends the session: a close frame (code 1000, or 1001 when the output was not read to its end) when
 * the socket takes it at once, then the connection is dropped; the server stops the command. NULL is
 * fine. */
void pgr_exec_close(pgr_exec *x);

#endif
