/* wscore.h — RFC 6455 WebSocket framing, pure C (no I/O, no Lua): the opening handshake's key and
 * accept values, frame headers with the client's masking, close payloads, and an incremental decoder
 * that yields a data message piece by piece as its bytes arrive (fragmented or not, so memory stays
 * bounded), control frames whole (ping, pong, close with code and reason), and protocol violations
 * with the close code to answer them with.
 *
 *   pgr_ws_decoder d;
 *   pgr_ws_decoder_init(&d, 0, 16 << 20);          // a client: server frames are unmasked
 *   size_t used;
 *   while ((used = pgr_ws_decode(&d, buf + off, len - off, &ev)) > 0 || ev.kind != PGR_WS_EV_NONE) {
 *       off += used;
 *       switch (ev.kind) { case PGR_WS_EV_DATA: ... ev.data, ev.len, ev.first, ev.last ... }
 *   }
 *
 * The decoder keeps no payload of data frames: ev.data points into the caller's buffer (unmasked in
 * place), valid until the caller reuses that buffer. Control payloads (at most 125 bytes) are kept
 * in the decoder, so a control frame split across reads still arrives whole. */
#ifndef PGR_WSCORE_H
#define PGR_WSCORE_H

#include <stddef.h>
#include <stdint.h>

/* Opcodes. */
#define PGR_WS_OP_CONT 0x0
#define PGR_WS_OP_TEXT 0x1
#define PGR_WS_OP_BINARY 0x2
#define PGR_WS_OP_CLOSE 0x8
#define PGR_WS_OP_PING 0x9
#define PGR_WS_OP_PONG 0xA

/* Close codes (RFC 6455 7.4.1). 1005 and 1006 are never sent: they describe a close without a code
 * and a connection lost without a close frame. */
#define PGR_WS_CLOSE_NORMAL 1000
#define PGR_WS_CLOSE_GOING_AWAY 1001
#define PGR_WS_CLOSE_PROTOCOL 1002
#define PGR_WS_CLOSE_UNSUPPORTED 1003
#define PGR_WS_CLOSE_NO_STATUS 1005
#define PGR_WS_CLOSE_ABNORMAL 1006
#define PGR_WS_CLOSE_INVALID_DATA 1007
#define PGR_WS_CLOSE_POLICY 1008
#define PGR_WS_CLOSE_TOO_BIG 1009
#define PGR_WS_CLOSE_INTERNAL 1011

#define PGR_WS_MAX_HEADER 14   /* 2 + 8 (64-bit length) + 4 (mask) */
#define PGR_WS_MAX_CONTROL 125 /* a control frame's payload */

/* The Sec-WebSocket-Key for 16 random bytes: their base64 (24 characters + NUL). */
void pgr_ws_key(const unsigned char nonce[16], char out[25]);
/* The Sec-WebSocket-Accept a server answers key with: base64(SHA-1(key + the RFC's GUID)), 28
 * characters + NUL. 0, or -1 when the hash is unavailable. */
int pgr_ws_accept(const char *key, char out[29]);

/* Writes a frame header into out and returns its length (2 to 14). mask: the 4 mask bytes a client
 * must send (the payload is then masked with pgr_ws_mask), or NULL for an unmasked (server) frame. */
size_t pgr_ws_header(unsigned char out[PGR_WS_MAX_HEADER], int fin, int opcode, uint64_t len,
                     const unsigned char *mask);
/* Masks (or unmasks: the same XOR) data, whose first byte is byte `offset` of the frame's payload. */
void pgr_ws_mask(unsigned char *data, size_t len, const unsigned char mask[4], uint64_t offset);
/* Writes a whole frame (header, then the payload masked when mask is not NULL) into out, which must
 * hold len + PGR_WS_MAX_HEADER bytes; returns the frame's length. */
size_t pgr_ws_frame(unsigned char *out, int fin, int opcode, const void *payload, size_t len,
                    const unsigned char *mask);
/* A close frame's payload: the code (big-endian) then the reason, cut to fit 125 bytes at a UTF-8
 * character boundary. code 0 gives an empty payload. Returns its length. */
size_t pgr_ws_close_payload(unsigned char out[PGR_WS_MAX_CONTROL], int code, const char *reason);
/* Whether a received close frame may carry code (1000-1003, 1007-1011, 3000-4999). */
int pgr_ws_close_code_ok(int code);

typedef enum {
    PGR_WS_EV_NONE = 0, /* nothing more in this input: read more */
    PGR_WS_EV_DATA,     /* a piece of a data message */
    PGR_WS_EV_PING,
    PGR_WS_EV_PONG,
    PGR_WS_EV_CLOSE,
    PGR_WS_EV_ERROR /* the peer broke the protocol: answer with close_code, then drop the connection */
} pgr_ws_event_kind;

typedef struct {
    pgr_ws_event_kind kind;
    int opcode;                /* DATA: the message's TEXT or BINARY */
    int first, last;           /* DATA: the piece starts / ends its message (both for a short one) */
    const unsigned char *data; /* DATA: in the caller's input; PING/PONG/CLOSE: the payload */
    size_t len;
    int close_code;     /* CLOSE: its code (1005 when it has none); ERROR: the code to send */
    const char *reason; /* CLOSE: its reason (reason_len bytes, not NUL-terminated); ERROR: why */
    size_t reason_len;
} pgr_ws_event;

typedef struct {
    /* settings */
    int expect_masked;    /* 1 on a server (a client's frames must be masked), 0 on a client */
    uint64_t max_message; /* a data message longer than this is an error (1009); 0 = no limit */
    /* private */
    unsigned char hdr[PGR_WS_MAX_HEADER];
    size_t hlen;
    int in_frame, fin, opcode, masked;
    unsigned char mask[4];
    uint64_t frame_len, done;  /* payload length and bytes of it consumed */
    int in_message, message_opcode, message_started;
    uint64_t message_len;
    unsigned char utf8_need, utf8_lo, utf8_hi; /* a text message's UTF-8 state between pieces */
    unsigned char ctl[PGR_WS_MAX_CONTROL];
    int failed;
} pgr_ws_decoder;

void pgr_ws_decoder_init(pgr_ws_decoder *d, int expect_masked, uint64_t max_message);

/* Decodes in[0..len): returns how many bytes it consumed and the event they made (kind NONE when
 * the input ran out first: everything was consumed and more is needed). A DATA event's bytes are
 * in[used - ev.len .. used). Call again with the rest until it consumes nothing and says NONE.
 * After an ERROR event every call returns ERROR again. */
size_t pgr_ws_decode(pgr_ws_decoder *d, unsigned char *in, size_t len, pgr_ws_event *ev);

#endif
