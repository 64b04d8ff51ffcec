/* jsontext.c — pgr.json's C core: buffer, quoting, number formatting, parsing with positions.
 * cJSON does the parsing; formatting is ours so integers stay exact and output is deterministic. */
#include "jsontext.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int buf_reserve(struct pgr_buf *b, size_t extra)
{
    if (b->failed)
        return 0;
    if (b->len + extra <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

void pgr_buf_add(struct pgr_buf *b, const char *s, size_t n)
{
    if (n && buf_reserve(b, n)) {
        memcpy(b->data + b->len, s, n);
        b->len += n;
    }
}

void pgr_buf_addc(struct pgr_buf *b, char c)
{
    if (buf_reserve(b, 1))
        b->data[b->len++] = c;
}

void pgr_buf_adds(struct pgr_buf *b, const char *s)
{
    pgr_buf_add(b, s, strlen(s));
}

void pgr_buf_free(struct pgr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void pgr_json_quote(struct pgr_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    pgr_buf_addc(b, '"');
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        pgr_buf_add(b, s + run, i - run);
        run = i + 1;
        char esc[6] = { '\\', 0 };
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            pgr_buf_add(b, esc, 6);
            continue;
        }
        pgr_buf_add(b, esc, 2);
    }
    pgr_buf_add(b, s + run, n - run);
    pgr_buf_addc(b, '"');
}

int pgr_json_format_integer(char out[32], long long v)
{
    return snprintf(out, 32, "%lld", v);
}

int pgr_json_format_double(char out[32], double d)
{
    if (isnan(d) || isinf(d))
        return -1;
    /* 2^63 is exactly representable; below it the cast is exact for integral doubles */
    if (d == floor(d) && fabs(d) < 9223372036854775808.0)
        return snprintf(out, 32, "%lld", (long long)d);
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, 32, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return n;
}

void pgr_text_position(const char *s, size_t len, size_t offset, int *line, int *column)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (s[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *column = c;
}

size_t pgr_json_find_nul_escape(const char *s, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!in_string) {
            if (c == '"')
                in_string = 1;
        } else if (c == '"') {
            in_string = 0;
        } else if (c == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && len - i >= 6 && memcmp(s + i + 2, "0000", 4) == 0)
                return i;
            i++; /* the escaped character cannot end the string */
        }
    }
    return (size_t)-1;
}

static void set_error(struct pgr_json_error *err, const char *s, size_t len, size_t offset,
                      const char *what)
{
    err->offset = offset;
    pgr_text_position(s, len, offset, &err->line, &err->column);
    if (what) {
        snprintf(err->message, sizeof err->message, "invalid JSON at byte %zu (line %d, column %d): %s",
                 offset, err->line, err->column, what);
    } else if (offset >= len) {
        snprintf(err->message, sizeof err->message,
                 "invalid JSON at byte %zu (line %d, column %d), near the end of the input", offset,
                 err->line, err->column);
    } else {
        unsigned char c = (unsigned char)s[offset];
        char near[16];
        if (c >= 0x20 && c < 0x7f)
            snprintf(near, sizeof near, "'%c'", c);
        else
            snprintf(near, sizeof near, "byte 0x%02x", c);
        snprintf(err->message, sizeof err->message, "invalid JSON at byte %zu (line %d, column %d) near %s",
                 offset, err->line, err->column, near);
    }
}

cJSON *pgr_json_parse(const char *s, size_t len, struct pgr_json_error *err)
{
    size_t nul = pgr_json_find_nul_escape(s, len);
    if (nul != (size_t)-1) {
        set_error(err, s, len, nul, "\\u0000 in a string is not supported");
        return NULL;
    }
    size_t ws = 0;
    while (ws < len && (s[ws] == ' ' || s[ws] == '\t' || s[ws] == '\n' || s[ws] == '\r'))
        ws++;
    if (ws == len) {
        set_error(err, s, len, len, len ? "no value, only whitespace" : "empty input");
        return NULL;
    }
    const char *zero = memchr(s, '\0', len);
    if (zero) {
        set_error(err, s, len, (size_t)(zero - s), "NUL byte in the text");
        return NULL;
    }
    /* cJSON's end-of-input check wants the terminating NUL inside the length it is given */
    char *copy = NULL;
    const char *text = s;
    if (s[len] != '\0') {
        copy = malloc(len + 1);
        if (!copy) {
            set_error(err, s, len, 0, "out of memory");
            return NULL;
        }
        memcpy(copy, s, len);
        copy[len] = '\0';
        text = copy;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        set_error(err, s, len, off, NULL);
    }
    free(copy);
    return root;
}
