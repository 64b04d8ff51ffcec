/* jsontext.h — the pure C half of pgr.json: a growable byte buffer, JSON string quoting, exact number
 * formatting, and cJSON parsing with error positions (byte offset, line, column). No Lua here. */
#ifndef PGR_JSONTEXT_H
#define PGR_JSONTEXT_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* A byte buffer; `failed` latches an allocation failure so callers can check once at the end. */
struct pgr_buf {
    char *data;
    size_t len, cap;
    int failed;
};

void pgr_buf_add(struct pgr_buf *b, const char *s, size_t n);
void pgr_buf_addc(struct pgr_buf *b, char c);
void pgr_buf_adds(struct pgr_buf *b, const char *s);
void pgr_buf_free(struct pgr_buf *b);

/* Appends s[0..n) as a JSON string: quotes, backslash escapes for '"', '\\' and control characters;
 * every other byte (UTF-8 or not) is copied as is. */
void pgr_json_quote(struct pgr_buf *b, const char *s, size_t n);

/* Formats an integer exactly ("-9223372036854775808" fits in 21 bytes). Returns the length. */
int pgr_json_format_integer(char out[32], long long v);

/* Formats a double as the shortest text that reads back to the same double; integral values
 * below 2^63 in magnitude are written without a fraction ("2", as Go's encoding/json does), so
 * Kubernetes' integer fields accept them. Returns the length, or -1 for NaN and infinities. */
int pgr_json_format_double(char out[32], double d);

/* 1-based line and column (in bytes) of offset in s. */
void pgr_text_position(const char *s, size_t len, size_t offset, int *line, int *column);

struct pgr_json_error {
    size_t offset; /* bytes before the error, 0-based */
    int line, column;
    char message[160];
};

/* Parses s[0..len) (the whole text must be one JSON value). s[len] must be readable (a Lua string's
 * terminating NUL is); when it is not NUL the text is copied first. Returns the cJSON tree (free with
 * cJSON_Delete) or NULL with *err filled. Strings containing \u0000 are refused: cJSON's strings are
 * NUL-terminated and would silently truncate. */
cJSON *pgr_json_parse(const char *s, size_t len, struct pgr_json_error *err);

/* Offset of the first \u0000 escape inside a JSON string in s, or (size_t)-1. */
size_t pgr_json_find_nul_escape(const char *s, size_t len);

#endif
