/* test_ws.c — RFC 6455 framing (host/wscore.c): the RFC's own examples, handshake values, header
 * lengths, masking, fragmented messages, control frames between fragments, close codes, every
 * protocol violation with the close code it earns, and the same streams fed byte by byte. */
#include "tap.h"
#include "wscore.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* What a decoder made of a whole input: data pieces joined per message, events in order. */
typedef struct {
    char log[4096];       /* one letter per event: D (data piece) P (ping) O (pong) C (close) E (error) */
    unsigned char data[200000];
    size_t dlen;
    int messages;         /* messages that ended */
    int firsts;           /* pieces flagged first */
    int close_code, error_code;
    char close_reason[200];
    unsigned char ping[200];
    size_t ping_len;
} outcome;

/* Feeds buf in chunks of `step` bytes (0 = all at once). */
static void run(pgr_ws_decoder *d, const unsigned char *buf, size_t len, size_t step, outcome *o)
{
    memset(o, 0, sizeof *o);
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    size_t off = 0;
    size_t nlog = 0;
    while (off < len || len == 0) {
        size_t n = step ? (len - off < step ? len - off : step) : len - off;
        size_t pos = 0;
        for (;;) {
            pgr_ws_event ev;
            size_t used = pgr_ws_decode(d, copy + off + pos, n - pos, &ev);
            pos += used;
            if (ev.kind == PGR_WS_EV_NONE) {
                if (used == 0)
                    break;
                continue;
            }
            /* consecutive data pieces are one letter: how a message is cut into pieces varies */
            char letter = "-DPOCE"[ev.kind];
            if (nlog + 2 < sizeof o->log && !(letter == 'D' && nlog > 0 && o->log[nlog - 1] == 'D'))
                o->log[nlog++] = letter;
            if (ev.kind == PGR_WS_EV_DATA) {
                if (ev.data != copy + off + pos - ev.len)
                    o->log[nlog++] = '!'; /* the piece is not where the contract says */
                memcpy(o->data + o->dlen, ev.data, ev.len);
                o->dlen += ev.len;
                o->messages += ev.last;
                o->firsts += ev.first;
            } else if (ev.kind == PGR_WS_EV_PING) {
                memcpy(o->ping, ev.data, ev.len);
                o->ping_len = ev.len;
            } else if (ev.kind == PGR_WS_EV_CLOSE) {
                o->close_code = ev.close_code;
                snprintf(o->close_reason, sizeof o->close_reason, "%.*s", (int)ev.reason_len, ev.reason);
            } else if (ev.kind == PGR_WS_EV_ERROR) {
                o->error_code = ev.close_code;
                free(copy);
                return;
            }
        }
        off += n;
        if (len == 0)
            break;
    }
    free(copy);
}

static void check_all_steps(int masked, const unsigned char *buf, size_t len, const char *want_log,
                            const char *want_data, size_t want_dlen, const char *name)
{
    static const size_t steps[] = { 0, 1, 2, 3, 7, 64 };
    int ok = 1;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        pgr_ws_decoder d;
        pgr_ws_decoder_init(&d, masked, 0);
        outcome o;
        run(&d, buf, len, steps[i], &o);
        /* byte-wise feeding may split one piece into several: compare the letters without repeats */
        char squeezed[4096];
        size_t k = 0;
        for (size_t j = 0; o.log[j]; j++)
            if (k == 0 || o.log[j] != 'D' || squeezed[k - 1] != 'D')
                squeezed[k++] = o.log[j];
        squeezed[k] = 0;
        if (strcmp(squeezed, want_log) != 0 || o.dlen != want_dlen || memcmp(o.data, want_data, want_dlen) != 0) {
            ok = 0;
            printf("#   step %zu: log %s (want %s), %zu data bytes (want %zu)\n", steps[i], squeezed, want_log,
                   o.dlen, want_dlen);
        }
    }
    CHECK(ok, name);
}

static uint32_t rng = 12345;
static unsigned rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return (rng >> 8) & 0xFFFFFF;
}

int main(void)
{
    /* ---- handshake (RFC 6455 1.3 / 4.2.2) */
    char key[25], acc[29];
    pgr_ws_key((const unsigned char *)"the sample nonce", key);
    CHECK_STR(key, "dGhlIHNhbXBsZSBub25jZQ==", "the key is the nonce's base64 (RFC 6455 4.1)");
    CHECK_INT(pgr_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc), 0, "accept computed");
    CHECK_STR(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "accept value of the RFC's example");

    /* ---- the RFC's examples (5.7) */
    unsigned char f[70000 + PGR_WS_MAX_HEADER];
    size_t n = pgr_ws_frame(f, 1, PGR_WS_OP_TEXT, "Hello", 5, NULL);
    static const unsigned char hello[] = { 0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f };
    CHECK(n == sizeof hello && memcmp(f, hello, n) == 0, "unmasked text frame \"Hello\" as in RFC 5.7");
    static const unsigned char mask_rfc[4] = { 0x37, 0xfa, 0x21, 0x3d };
    n = pgr_ws_frame(f, 1, PGR_WS_OP_TEXT, "Hello", 5, mask_rfc);
    static const unsigned char hello_masked[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    CHECK(n == sizeof hello_masked && memcmp(f, hello_masked, n) == 0, "masked text frame \"Hello\" as in RFC 5.7");
    check_all_steps(0, hello, sizeof hello, "D", "Hello", 5, "a client decodes the unmasked frame");
    check_all_steps(1, hello_masked, sizeof hello_masked, "D", "Hello", 5, "a server decodes the masked frame");

    static const unsigned char frag[] = { 0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f };
    {
        pgr_ws_decoder d;
        pgr_ws_decoder_init(&d, 0, 0);
        outcome o;
        run(&d, frag, sizeof frag, 0, &o);
        CHECK_STR(o.log, "D", "a fragmented message comes as data pieces");
        CHECK(o.dlen == 5 && memcmp(o.data, "Hello", 5) == 0 && o.messages == 1 && o.firsts == 1,
              "... joined \"Hello\", one message, first flagged once");
    }
    static const unsigned char ping[] = { 0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f };
    {
        pgr_ws_decoder d;
        pgr_ws_decoder_init(&d, 0, 0);
        outcome o;
        run(&d, ping, sizeof ping, 1, &o);
        CHECK(!strcmp(o.log, "P") && o.ping_len == 5 && !memcmp(o.ping, "Hello", 5),
              "a ping fed byte by byte arrives whole with its payload");
    }

    /* ---- header lengths: 7-bit, 16-bit, 64-bit forms */
    static const struct { uint64_t len; size_t hlen; } lens[] = {
        { 0, 2 }, { 125, 2 }, { 126, 4 }, { 65535, 4 }, { 65536, 10 }, { 1ull << 40, 10 } };
    int lens_ok = 1;
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        unsigned char h[PGR_WS_MAX_HEADER];
        size_t hl = pgr_ws_header(h, 1, PGR_WS_OP_BINARY, lens[i].len, NULL);
        size_t hm = pgr_ws_header(h, 1, PGR_WS_OP_BINARY, lens[i].len, mask_rfc);
        if (hl != lens[i].hlen || hm != lens[i].hlen + 4 || !(h[1] & 0x80) || memcmp(h + hl, mask_rfc, 4) != 0)
            lens_ok = 0;
    }
    CHECK(lens_ok, "header sizes 2/4/10 bytes (+4 with a mask) at the 125/126/65535/65536 edges");
    /* 256 bytes and 64 KiB of binary, as in RFC 5.7 */
    unsigned char big[70000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7 + 3);
    n = pgr_ws_frame(f, 1, PGR_WS_OP_BINARY, big, 256, NULL);
    CHECK(f[0] == 0x82 && f[1] == 0x7E && f[2] == 0x01 && f[3] == 0x00 && n == 260, "256 bytes: 0x82 0x7E 0x0100");
    check_all_steps(0, f, n, "D", (const char *)big, 256, "... decoded whole at any read size");
    n = pgr_ws_frame(f, 1, PGR_WS_OP_BINARY, big, 65536, NULL);
    CHECK(f[1] == 0x7F && f[7] == 0x01 && f[8] == 0 && f[9] == 0 && n == 65546, "64 KiB: 0x7F and a 64-bit length");
    check_all_steps(0, f, n, "D", (const char *)big, 65536, "... decoded whole at any read size");
    n = pgr_ws_frame(f, 1, PGR_WS_OP_BINARY, big, 70000, mask_rfc);
    check_all_steps(1, f, n, "D", (const char *)big, 70000, "70000 masked bytes unmask at every read size");

    /* masking at any phase equals masking the whole */
    {
        unsigned char a[1000], b[1000];
        for (int i = 0; i < 1000; i++)
            a[i] = b[i] = (unsigned char)rnd();
        pgr_ws_mask(a, 1000, mask_rfc, 0);
        size_t off = 0;
        while (off < 1000) {
            size_t k = 1 + rnd() % 37;
            if (k > 1000 - off)
                k = 1000 - off;
            pgr_ws_mask(b + off, k, mask_rfc, off);
            off += k;
        }
        CHECK(memcmp(a, b, 1000) == 0, "masking in pieces at odd offsets equals masking at once");
        pgr_ws_mask(a, 1000, mask_rfc, 0);
        pgr_ws_mask(b, 1000, mask_rfc, 0);
        CHECK(memcmp(a, b, 1000) == 0, "masking twice gives the data back");
    }

    /* ---- a fragmented message with control frames between its fragments, then close */
    {
        unsigned char s[512];
        size_t k = 0;
        k += pgr_ws_frame(s + k, 0, PGR_WS_OP_BINARY, "\x01" "abc", 4, NULL);
        k += pgr_ws_frame(s + k, 1, PGR_WS_OP_PING, "hb", 2, NULL);
        k += pgr_ws_frame(s + k, 0, PGR_WS_OP_CONT, "", 0, NULL); /* an empty fragment */
        k += pgr_ws_frame(s + k, 1, PGR_WS_OP_PONG, "", 0, NULL);
        k += pgr_ws_frame(s + k, 0, PGR_WS_OP_CONT, "def", 3, NULL);
        k += pgr_ws_frame(s + k, 1, PGR_WS_OP_CONT, "g", 1, NULL);
        k += pgr_ws_frame(s + k, 1, PGR_WS_OP_BINARY, "", 0, NULL); /* an empty message */
        unsigned char cp[PGR_WS_MAX_CONTROL];
        size_t cl = pgr_ws_close_payload(cp, 1000, "done");
        k += pgr_ws_frame(s + k, 1, PGR_WS_OP_CLOSE, cp, cl, NULL);
        check_all_steps(0, s, k, "DPODC", "\x01" "abcdefg", 8,
                        "ping and pong between fragments; empty fragments say nothing; an empty message ends");
        pgr_ws_decoder d;
        pgr_ws_decoder_init(&d, 0, 0);
        outcome o;
        run(&d, s, k, 5, &o);
        CHECK(o.messages == 2 && o.firsts == 2, "two messages, each flagged first once");
        CHECK(o.close_code == 1000 && !strcmp(o.close_reason, "done"), "the close frame's code 1000 and reason");
    }
    {
        unsigned char s[16];
        size_t k = pgr_ws_frame(s, 1, PGR_WS_OP_CLOSE, "", 0, NULL);
        pgr_ws_decoder d;
        pgr_ws_decoder_init(&d, 0, 0);
        outcome o;
        run(&d, s, k, 0, &o);
        CHECK_INT(o.close_code, PGR_WS_CLOSE_NO_STATUS, "a close without a code reads as 1005");
    }
    {
        unsigned char cp[PGR_WS_MAX_CONTROL];
        char reason[200];
        memset(reason, 'x', 121);
        memcpy(reason + 121, "\xc3\xa9\xc3\xa9", 5); /* é é: the second one crosses the 123-byte cut */
        size_t cl = pgr_ws_close_payload(cp, 1011, reason);
        CHECK(cl == 125 && cp[0] == 0x03 && cp[1] == 0xF3, "a long close reason is cut to fit 125 bytes");
        CHECK(cp[cl - 1] == 0xa9 && cp[cl - 2] == 0xc3, "... after the last whole character");
        memset(reason, 'x', 122);
        memcpy(reason + 122, "\xc3\xa9\xc3\xa9", 5); /* the first é straddles the cut */
        cl = pgr_ws_close_payload(cp, 1011, reason);
        CHECK(cl == 124 && cp[cl - 1] == 'x', "... never inside a character");
        CHECK_INT(pgr_ws_close_payload(cp, 0, "x"), 0, "code 0: an empty close payload");
    }
    CHECK(pgr_ws_close_code_ok(1000) && pgr_ws_close_code_ok(1011) && pgr_ws_close_code_ok(4000) &&
              !pgr_ws_close_code_ok(1005) && !pgr_ws_close_code_ok(1006) && !pgr_ws_close_code_ok(999) &&
              !pgr_ws_close_code_ok(2000) && !pgr_ws_close_code_ok(1015),
          "close codes allowed on the wire: 1000-1003, 1007-1011, 3000-4999");

    /* ---- protocol violations and the code each one earns */
    static const struct {
        int masked; /* the decoder's side: 1 server, 0 client */
        unsigned char bytes[16];
        size_t len;
        int code;
        const char *name;
    } bad[] = {
        { 0, { 0x82, 0x81, 1, 2, 3, 4, 0 }, 7, 1002, "a masked frame sent to a client" },
        { 1, { 0x82, 0x01, 0 }, 3, 1002, "an unmasked frame sent to a server" },
        { 0, { 0xC2, 0x00 }, 2, 1002, "RSV1 set without an extension" },
        { 0, { 0x83, 0x00 }, 2, 1002, "reserved data opcode 3" },
        { 0, { 0x8B, 0x00 }, 2, 1002, "reserved control opcode 0xB" },
        { 0, { 0x09, 0x00 }, 2, 1002, "a fragmented ping" },
        { 0, { 0x89, 0x7E, 0x00, 0x7E }, 4, 1002, "a ping longer than 125 bytes" },
        { 0, { 0x80, 0x01, 'x' }, 3, 1002, "a continuation with no message begun" },
        { 0, { 0x02, 0x01, 'x', 0x82, 0x01, 'y' }, 6, 1002, "a new message inside a fragmented one" },
        { 0, { 0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0 }, 10, 1002, "a 64-bit length with its top bit set" },
        { 0, { 0x88, 0x01, 0x03 }, 3, 1002, "a close payload of one byte" },
        { 0, { 0x88, 0x02, 0x03, 0xED }, 4, 1002, "close code 1005 on the wire" },
        { 0, { 0x88, 0x02, 0x07, 0xD0 }, 4, 1002, "close code 2000" },
        { 0, { 0x88, 0x03, 0x03, 0xE8, 0xFF }, 5, 1007, "a close reason that is not UTF-8" },
        { 0, { 0x81, 0x02, 0xC0, 0x80 }, 4, 1007, "an overlong UTF-8 form in a text message" },
        { 0, { 0x81, 0x03, 0xED, 0xA0, 0x80 }, 5, 1007, "a UTF-16 surrogate in a text message" },
        { 0, { 0x81, 0x02, 0xE2, 0x82 }, 4, 1007, "a text message ending inside a character" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int ok = 1;
        for (size_t step = 0; step <= 1; step++) {
            pgr_ws_decoder d;
            pgr_ws_decoder_init(&d, bad[i].masked, 0);
            outcome o;
            run(&d, bad[i].bytes, bad[i].len, step, &o);
            if (o.error_code != bad[i].code) {
                ok = 0;
                printf("#   step %zu: code %d (want %d), log %s\n", step, o.error_code, bad[i].code, o.log);
            }
        }
        char name[160];
        snprintf(name, sizeof name, "%s: error %d", bad[i].name, bad[i].code);
        CHECK(ok, name);
    }
    {
        /* valid UTF-8 split across fragments and reads is fine */
        unsigned char s[64];
        size_t k = 0;
        k += pgr_ws_frame(s + k, 0, PGR_WS_OP_TEXT, "\xe2\x82", 2, NULL);
        k += pgr_ws_frame(s + k, 1, PGR_WS_OP_CONT, "\xac!", 2, NULL);
        check_all_steps(0, s, k, "D", "\xe2\x82\xac!", 4, "a UTF-8 character split across fragments is valid text");
    }
    {
        /* the limit counts the whole message, across its fragments */
        unsigned char s[64];
        size_t k = 0;
        k += pgr_ws_frame(s + k, 0, PGR_WS_OP_BINARY, "abcdef", 6, NULL);
        k += pgr_ws_frame(s + k, 1, PGR_WS_OP_CONT, "ghijk", 5, NULL);
        pgr_ws_decoder d;
        pgr_ws_decoder_init(&d, 0, 10);
        outcome o;
        run(&d, s, k, 0, &o);
        CHECK(o.error_code == PGR_WS_CLOSE_TOO_BIG && !strcmp(o.log, "DE"),
              "a message over max_message across fragments: 1009 after the first piece");
        pgr_ws_event ev;
        unsigned char more[2] = { 0x82, 0x00 };
        size_t used = pgr_ws_decode(&d, more, 2, &ev);
        CHECK(used == 0 && ev.kind == PGR_WS_EV_ERROR && ev.close_code == 1009, "after an error, every call says so again");
        pgr_ws_decoder_init(&d, 0, 11);
        run(&d, s, k, 0, &o);
        CHECK(o.error_code == 0 && o.messages == 1, "exactly max_message bytes pass");
    }

    /* ---- random streams: frames of random sizes and kinds, fed in random read sizes */
    {
        int ok = 1;
        for (int round = 0; round < 200 && ok; round++) {
            static unsigned char stream[400000];
            static char want[200000];
            size_t k = 0, wl = 0;
            int masked = round & 1;
            int frames = 1 + (int)(rnd() % 20);
            int open = 0;
            char letters[64];
            size_t nl = 0;
            for (int i = 0; i < frames; i++) {
                size_t len = rnd() % 3 == 0 ? rnd() % 69000 : rnd() % 200;
                if (wl + len > 190000)
                    len = rnd() % 200;
                unsigned char m[4] = { (unsigned char)rnd(), (unsigned char)rnd(), (unsigned char)rnd(),
                                       (unsigned char)rnd() };
                if (rnd() % 5 == 0) {
                    k += pgr_ws_frame(stream + k, 1, PGR_WS_OP_PING, big, len % 126, masked ? m : NULL);
                    letters[nl++] = 'P';
                    continue;
                }
                int fin = i == frames - 1 || rnd() % 2;
                int op = open ? PGR_WS_OP_CONT : PGR_WS_OP_BINARY;
                k += pgr_ws_frame(stream + k, fin, op, big + (wl % 1000), len, masked ? m : NULL);
                memcpy(want + wl, big + (wl % 1000), len);
                wl += len;
                if (len > 0 || fin)
                    letters[nl++] = 'D';
                open = !fin;
            }
            letters[nl] = 0;
            char squeezed[64];
            size_t q = 0;
            for (size_t j = 0; letters[j]; j++)
                if (q == 0 || letters[j] != 'D' || squeezed[q - 1] != 'D')
                    squeezed[q++] = letters[j];
            squeezed[q] = 0;
            pgr_ws_decoder d;
            pgr_ws_decoder_init(&d, masked, 0);
            static outcome o;
            run(&d, stream, k, 1 + rnd() % 5000, &o);
            char got[4096];
            size_t g = 0;
            for (size_t j = 0; o.log[j]; j++)
                if (g == 0 || o.log[j] != 'D' || got[g - 1] != 'D')
                    got[g++] = o.log[j];
            got[g] = 0;
            if (o.error_code || o.dlen != wl || memcmp(o.data, want, wl) != 0 || strcmp(got, squeezed) != 0) {
                ok = 0;
                printf("#   round %d: error %d, %zu bytes (want %zu), events %s (want %s)\n", round, o.error_code,
                       o.dlen, wl, got, squeezed);
            }
        }
        CHECK(ok, "200 random streams (pings among fragments, masked and not) decode to their data");
    }
    return tap_done();
}
