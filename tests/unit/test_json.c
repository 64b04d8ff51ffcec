/* test_json.c — the JSON core (host/jsontext.c): quoting, exact numbers, parsing through cJSON with
 * error offsets, lines and columns, and the \u0000 refusal. */
#include "jsontext.h"
#include "tap.h"

#include <math.h>
#include <string.h>

static const char *quoted(const char *s, size_t n)
{
    static char out[256];
    struct pgr_buf b = { 0 };
    pgr_json_quote(&b, s, n);
    size_t len = b.len < sizeof out - 1 ? b.len : sizeof out - 1;
    memcpy(out, b.data, len);
    out[len] = '\0';
    pgr_buf_free(&b);
    return out;
}

static const char *dbl(double d)
{
    static char out[32];
    if (pgr_json_format_double(out, d) < 0)
        return "(refused)";
    return out;
}

int main(void)
{
    char num[32];

    CHECK_STR(quoted("plain", 5), "\"plain\"", "plain string");
    CHECK_STR(quoted("a\"b\\c", 5), "\"a\\\"b\\\\c\"", "quote and backslash escaped");
    CHECK_STR(quoted("\n\r\t\b\f", 5), "\"\\n\\r\\t\\b\\f\"", "short escapes");
    CHECK_STR(quoted("\x01\x1f", 2), "\"\\u0001\\u001f\"", "other controls as \\u00XX");
    CHECK_STR(quoted("a\0b", 3), "\"a\\u0000b\"", "NUL inside a string is escaped, not a terminator");
    CHECK_STR(quoted("\xc3\xa9\xff/", 4), "\"\xc3\xa9\xff/\"", "UTF-8 and other bytes pass through");

    pgr_json_format_integer(num, 4294967297LL);
    CHECK_STR(num, "4294967297", "integer above 2^32");
    pgr_json_format_integer(num, -9223372036854775807LL - 1);
    CHECK_STR(num, "-9223372036854775808", "most negative integer");
    CHECK_STR(dbl(9007199254740992.0), "9007199254740992", "2^53 as a double prints exactly");
    CHECK_STR(dbl(2.0), "2", "integral double prints without fraction");
    CHECK_STR(dbl(0.1), "0.1", "shortest round-trip form");
    CHECK_STR(dbl(1.0 / 3), "0.3333333333333333", "17 significant digits only when needed");
    CHECK_STR(dbl(1e300), "1e+300", "huge double");
    CHECK_STR(dbl(NAN), "(refused)", "NaN refused");
    CHECK_STR(dbl(-INFINITY), "(refused)", "infinity refused");

    struct pgr_json_error err;
    const char *doc = "{\"a\":[],\"b\":{},\"c\":null,\"n\":4294967297,\"s\":\"x\\u00e9\"}";
    cJSON *root = pgr_json_parse(doc, strlen(doc), &err);
    CHECK(root != NULL, "object parses");
    if (root) {
        CHECK(cJSON_IsArray(cJSON_GetObjectItem(root, "a")), "[] is an array");
        CHECK(cJSON_IsObject(cJSON_GetObjectItem(root, "b")), "{} is an object");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(root, "c")), "null is null");
        CHECK(cJSON_GetObjectItem(root, "n")->valuedouble == 4294967297.0, "big integer exact");
        CHECK_STR(cJSON_GetObjectItem(root, "s")->valuestring, "x\xc3\xa9", "\\u escape to UTF-8");
        cJSON_Delete(root);
    }

    const char *bad = "{\n  \"a\": tru\n}";
    CHECK(pgr_json_parse(bad, strlen(bad), &err) == NULL, "bad literal refused");
    CHECK_INT(err.offset, 9, "error offset points at the bad value");
    CHECK_INT(err.line, 2, "error line");
    CHECK_INT(err.column, 8, "error column");
    CHECK(strstr(err.message, "byte 9") != NULL, "message names the byte offset");

    CHECK(pgr_json_parse("", 0, &err) == NULL && err.offset == 0, "empty input refused at 0");
    CHECK(strstr(err.message, "empty input") != NULL, "empty input says so");
    CHECK(pgr_json_parse("[1] x", 5, &err) == NULL && err.offset == 4, "trailing garbage refused");
    CHECK(pgr_json_parse("[1,2", 4, &err) == NULL, "truncated array refused");
    CHECK(pgr_json_parse("[1]\0", 4, &err) == NULL && err.offset == 3, "embedded NUL byte refused");
    CHECK(pgr_json_parse("[\"a\\u0000b\"]", 12, &err) == NULL && err.offset == 3,
          "\\u0000 refused rather than truncated");
    CHECK(pgr_json_find_nul_escape("[\"a\\\\u0000\"]", 12) == (size_t)-1,
          "an escaped backslash before u0000 is not a NUL escape");
    CHECK(pgr_json_find_nul_escape("{\"\\u0000\":1}", 12) == 2, "NUL escape in a key found");

    /* text not followed by a NUL in memory is copied, not over-read */
    char unterminated[3] = { '[', ']', 'x' };
    root = pgr_json_parse(unterminated, 2, &err);
    CHECK(root != NULL && cJSON_IsArray(root), "length-delimited input parses");
    cJSON_Delete(root);

    char deep[2101];
    memset(deep, '[', 1050);
    memset(deep + 1050, ']', 1050);
    deep[2100] = '\0';
    CHECK(pgr_json_parse(deep, 2100, &err) == NULL, "nesting beyond cJSON's limit refused, no crash");

    int line, col;
    pgr_text_position("ab\ncd\n", 6, 4, &line, &col);
    CHECK(line == 2 && col == 2, "text position counts lines and columns from 1");
    return tap_done();
}
