/* wscore.c — the RFC 6455 framing declared in wscore.h: handshake values, frame headers and masks,
 * close payloads, and the incremental decoder (headers gathered across reads, payloads streamed). */
#include "wscore.h"

#include "b64.h"

#include <openssl/evp.h>
#include <string.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

void pgr_ws_key(const unsigned char nonce[16], char out[25])
{
    size_t n = pgr_b64_encode(nonce, 16, out, 0);
    out[n] = 0;
}

int pgr_ws_accept(const char *key, char out[29])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, key, strlen(key)) == 1 &&
             EVP_DigestUpdate(ctx, WS_GUID, sizeof WS_GUID - 1) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        out[0] = 0;
        return -1;
    }
    size_t n = pgr_b64_encode(md, 20, out, 0);
    out[n] = 0;
    return 0;
}

size_t pgr_ws_header(unsigned char out[PGR_WS_MAX_HEADER], int fin, int opcode, uint64_t len,
                     const unsigned char *mask)
{
    size_t n = 0;
    out[n++] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0F));
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        out[n++] = (unsigned char)(m | len);
    } else if (len <= 0xFFFF) {
        out[n++] = m | 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    } else {
        out[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (unsigned char)(len >> (8 * i));
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void pgr_ws_mask(unsigned char *data, size_t len, const unsigned char mask[4], uint64_t offset)
{
    size_t i = 0;
    /* align to the mask's phase, then a word at a time */
    while (i < len && ((offset + i) & 3) != 0) {
        data[i] ^= mask[(offset + i) & 3];
        i++;
    }
    uint32_t word;
    memcpy(&word, mask, 4);
    uint64_t w64 = ((uint64_t)word << 32) | word;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, data + i, 8);
        v ^= w64;
        memcpy(data + i, &v, 8);
    }
    for (; i < len; i++)
        data[i] ^= mask[(offset + i) & 3];
}

size_t pgr_ws_frame(unsigned char *out, int fin, int opcode, const void *payload, size_t len,
                    const unsigned char *mask)
{
    size_t h = pgr_ws_header(out, fin, opcode, len, mask);
    if (len)
        memcpy(out + h, payload, len);
    if (mask)
        pgr_ws_mask(out + h, len, mask, 0);
    return h + len;
}

/* The UTF-8 state of a text: continuation bytes still needed and the range the next one must be in
 * (which excludes overlong forms, surrogates and code points above U+10FFFF). */
typedef struct {
    unsigned char need, lo, hi;
} utf8_state;

static int utf8_step(utf8_state *s, unsigned char c)
{
    if (s->need) {
        if (c < s->lo || c > s->hi)
            return -1;
        s->need--;
        s->lo = 0x80;
        s->hi = 0xBF;
        return 0;
    }
    s->lo = 0x80;
    s->hi = 0xBF;
    if (c < 0x80)
        return 0;
    if (c >= 0xC2 && c <= 0xDF)
        s->need = 1;
    else if (c == 0xE0)
        s->need = 2, s->lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        s->need = 2;
    else if (c == 0xED)
        s->need = 2, s->hi = 0x9F;
    else if (c == 0xF0)
        s->need = 3, s->lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        s->need = 3;
    else if (c == 0xF4)
        s->need = 3, s->hi = 0x8F;
    else
        return -1;
    return 0;
}

static int utf8_valid(const unsigned char *p, size_t n)
{
    utf8_state s = { 0, 0x80, 0xBF };
    for (size_t i = 0; i < n; i++)
        if (utf8_step(&s, p[i]) != 0)
            return 0;
    return s.need == 0;
}

size_t pgr_ws_close_payload(unsigned char out[PGR_WS_MAX_CONTROL], int code, const char *reason)
{
    if (code <= 0)
        return 0;
    out[0] = (unsigned char)(code >> 8);
    out[1] = (unsigned char)code;
    size_t n = reason ? strlen(reason) : 0;
    if (n > PGR_WS_MAX_CONTROL - 2) {
        n = PGR_WS_MAX_CONTROL - 2;
        /* never cut inside a UTF-8 character: drop its continuation bytes and its lead byte */
        while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(out + 2, reason, n);
    return n + 2;
}

int pgr_ws_close_code_ok(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999);
}

void pgr_ws_decoder_init(pgr_ws_decoder *d, int expect_masked, uint64_t max_message)
{
    memset(d, 0, sizeof *d);
    d->expect_masked = expect_masked;
    d->max_message = max_message;
}

static size_t header_need(const pgr_ws_decoder *d)
{
    if (d->hlen < 2)
        return 2;
    size_t n = 2;
    unsigned len7 = d->hdr[1] & 0x7F;
    if (len7 == 126)
        n += 2;
    else if (len7 == 127)
        n += 8;
    if (d->hdr[1] & 0x80)
        n += 4;
    return n;
}

static size_t fail(pgr_ws_decoder *d, pgr_ws_event *ev, int code, const char *why, size_t used)
{
    d->failed = code;
    ev->kind = PGR_WS_EV_ERROR;
    ev->close_code = code;
    ev->reason = why;
    ev->reason_len = strlen(why);
    return used;
}

/* Validates the gathered header and starts its frame; 0, or a close code with *why set. */
static int start_frame(pgr_ws_decoder *d, const char **why)
{
    unsigned char b0 = d->hdr[0], b1 = d->hdr[1];
    d->fin = (b0 & 0x80) != 0;
    d->opcode = b0 & 0x0F;
    d->masked = (b1 & 0x80) != 0;
    if (b0 & 0x70) {
        *why = "a reserved bit is set (no extension was negotiated)";
        return PGR_WS_CLOSE_PROTOCOL;
    }
    if (d->masked != d->expect_masked) {
        *why = d->expect_masked ? "a client frame is not masked" : "a server frame is masked";
        return PGR_WS_CLOSE_PROTOCOL;
    }
    uint64_t len = b1 & 0x7F;
    size_t p = 2;
    if (len == 126) {
        len = ((uint64_t)d->hdr[2] << 8) | d->hdr[3];
        p = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | d->hdr[2 + i];
        p = 10;
        if (len >> 63) {
            *why = "a frame length has its most significant bit set";
            return PGR_WS_CLOSE_PROTOCOL;
        }
    }
    if (d->masked)
        memcpy(d->mask, d->hdr + p, 4);
    d->frame_len = len;
    d->done = 0;
    if (d->opcode >= 0x8) {
        if (d->opcode != PGR_WS_OP_CLOSE && d->opcode != PGR_WS_OP_PING && d->opcode != PGR_WS_OP_PONG) {
            *why = "a reserved control opcode";
            return PGR_WS_CLOSE_PROTOCOL;
        }
        if (!d->fin) {
            *why = "a fragmented control frame";
            return PGR_WS_CLOSE_PROTOCOL;
        }
        if (len > PGR_WS_MAX_CONTROL) {
            *why = "a control frame longer than 125 bytes";
            return PGR_WS_CLOSE_PROTOCOL;
        }
    } else if (d->opcode == PGR_WS_OP_CONT) {
        if (!d->in_message) {
            *why = "a continuation frame outside a fragmented message";
            return PGR_WS_CLOSE_PROTOCOL;
        }
    } else if (d->opcode == PGR_WS_OP_TEXT || d->opcode == PGR_WS_OP_BINARY) {
        if (d->in_message) {
            *why = "a new message began inside a fragmented one";
            return PGR_WS_CLOSE_PROTOCOL;
        }
        d->in_message = 1;
        d->message_opcode = d->opcode;
        d->message_started = 0;
        d->message_len = 0;
        d->utf8_need = 0;
        d->utf8_lo = 0x80;
        d->utf8_hi = 0xBF;
    } else {
        *why = "a reserved data opcode";
        return PGR_WS_CLOSE_PROTOCOL;
    }
    if (d->opcode < 0x8) {
        if (d->max_message && (len > d->max_message || d->message_len + len > d->max_message)) {
            *why = "a message larger than the limit";
            return PGR_WS_CLOSE_TOO_BIG;
        }
        d->message_len += len;
    }
    d->in_frame = 1;
    return 0;
}

/* A whole control frame in d->ctl: its event (or a close code for a bad close payload). */
static int control_event(pgr_ws_decoder *d, pgr_ws_event *ev, const char **why)
{
    ev->data = d->ctl;
    ev->len = (size_t)d->frame_len;
    if (d->opcode == PGR_WS_OP_PING) {
        ev->kind = PGR_WS_EV_PING;
    } else if (d->opcode == PGR_WS_OP_PONG) {
        ev->kind = PGR_WS_EV_PONG;
    } else {
        ev->kind = PGR_WS_EV_CLOSE;
        if (d->frame_len == 0) {
            ev->close_code = PGR_WS_CLOSE_NO_STATUS;
        } else if (d->frame_len == 1) {
            *why = "a close frame with a one-byte payload";
            return PGR_WS_CLOSE_PROTOCOL;
        } else {
            int code = (d->ctl[0] << 8) | d->ctl[1];
            if (!pgr_ws_close_code_ok(code)) {
                *why = "a close frame with an invalid code";
                return PGR_WS_CLOSE_PROTOCOL;
            }
            if (!utf8_valid(d->ctl + 2, (size_t)d->frame_len - 2)) {
                *why = "a close reason that is not UTF-8";
                return PGR_WS_CLOSE_INVALID_DATA;
            }
            ev->close_code = code;
            ev->reason = (const char *)d->ctl + 2;
            ev->reason_len = (size_t)d->frame_len - 2;
        }
    }
    return 0;
}

size_t pgr_ws_decode(pgr_ws_decoder *d, unsigned char *in, size_t len, pgr_ws_event *ev)
{
    memset(ev, 0, sizeof *ev);
    if (d->failed)
        return fail(d, ev, d->failed, "the connection already broke the protocol", 0);
    size_t used = 0;
    for (;;) {
        if (!d->in_frame) {
            size_t need = header_need(d);
            while (d->hlen < need) {
                if (used == len)
                    return used;
                size_t k = need - d->hlen;
                if (k > len - used)
                    k = len - used;
                memcpy(d->hdr + d->hlen, in + used, k);
                d->hlen += k;
                used += k;
                need = header_need(d);
            }
            const char *why = NULL;
            int code = start_frame(d, &why);
            if (code)
                return fail(d, ev, code, why, used);
        }
        uint64_t left = d->frame_len - d->done;
        size_t k = left < (uint64_t)(len - used) ? (size_t)left : len - used;
        if (d->opcode >= 0x8) {
            memcpy(d->ctl + d->done, in + used, k);
            if (d->masked)
                pgr_ws_mask(d->ctl + d->done, k, d->mask, d->done);
            d->done += k;
            used += k;
            if (d->done < d->frame_len)
                return used;
            d->in_frame = 0;
            d->hlen = 0;
            const char *why = NULL;
            int code = control_event(d, ev, &why);
            if (code) {
                memset(ev, 0, sizeof *ev);
                return fail(d, ev, code, why, used);
            }
            return used;
        }
        if (k == 0 && left > 0)
            return used; /* the payload is still to come */
        unsigned char *p = in + used;
        if (d->masked)
            pgr_ws_mask(p, k, d->mask, d->done);
        d->done += k;
        used += k;
        int frame_end = d->done == d->frame_len;
        int message_end = frame_end && d->fin;
        if (frame_end) {
            d->in_frame = 0;
            d->hlen = 0;
        }
        if (d->message_opcode == PGR_WS_OP_TEXT) {
            utf8_state s = { d->utf8_need, d->utf8_lo, d->utf8_hi };
            for (size_t i = 0; i < k; i++)
                if (utf8_step(&s, p[i]) != 0)
                    return fail(d, ev, PGR_WS_CLOSE_INVALID_DATA, "a text message that is not UTF-8", used);
            if (message_end && s.need)
                return fail(d, ev, PGR_WS_CLOSE_INVALID_DATA, "a text message that ends inside a UTF-8 character",
                            used);
            d->utf8_need = s.need;
            d->utf8_lo = s.lo;
            d->utf8_hi = s.hi;
        }
        if (k == 0 && !message_end)
            continue; /* an empty frame in the middle of a message says nothing */
        ev->kind = PGR_WS_EV_DATA;
        ev->opcode = d->message_opcode;
        ev->data = p;
        ev->len = k;
        ev->first = !d->message_started;
        ev->last = message_end;
        d->message_started = 1;
        if (message_end)
            d->in_message = 0;
        return used;
    }
}
