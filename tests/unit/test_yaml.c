/* test_yaml.c — the YAML core (host/yamldoc.c): type resolution as go-yaml v2 does it, tree building
 * (multi-document, anchors, aliases, merge keys, duplicate keys), error positions, the alias-bomb
 * bound, and emitting text that parses back to the same tree. */
#include "tap.h"
#include "yamldoc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static enum ydoc_type resolve(const char *s, struct ydoc_node *out)
{
    memset(out, 0, sizeof *out);
    return ydoc_resolve(s, strlen(s), out);
}

static const struct ydoc_node *get(const struct ydoc_node *map, const char *key)
{
    if (!map || map->type != YDOC_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (strlen(key) == map->pairs[i].keylen && memcmp(map->pairs[i].key, key, map->pairs[i].keylen) == 0)
            return map->pairs[i].value;
    return NULL;
}

static int parse(const char *s, struct ydoc_stream *st, struct ydoc_error *err)
{
    return ydoc_parse(s, strlen(s), NULL, st, err);
}

static int equal(const struct ydoc_node *a, const struct ydoc_node *b)
{
    if (!a || !b || a->type != b->type)
        return 0;
    switch (a->type) {
    case YDOC_NULL:
        return 1;
    case YDOC_BOOL:
        return a->b == b->b;
    case YDOC_INT:
        return a->i == b->i;
    case YDOC_FLOAT:
        return a->f == b->f || (isnan(a->f) && isnan(b->f));
    case YDOC_STR:
        return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    case YDOC_SEQ:
        if (a->n != b->n)
            return 0;
        for (size_t i = 0; i < a->n; i++)
            if (!equal(a->items[i], b->items[i]))
                return 0;
        return 1;
    case YDOC_MAP:
        if (a->n != b->n)
            return 0;
        for (size_t i = 0; i < a->n; i++)
            if (!equal(a->pairs[i].value, get(b, a->pairs[i].key)))
                return 0;
        return 1;
    }
    return 0;
}

int main(void)
{
    struct ydoc_node n;

    /* resolution: YAML 1.1 booleans as go-yaml v2 reads them */
    static const char *const trues[] = { "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON" };
    static const char *const falses[] = { "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF" };
    int all = 1;
    for (size_t i = 0; i < sizeof trues / sizeof *trues; i++)
        all &= resolve(trues[i], &n) == YDOC_BOOL && n.b == 1;
    CHECK(all, "y/yes/on/true in three casings are true");
    all = 1;
    for (size_t i = 0; i < sizeof falses / sizeof *falses; i++)
        all &= resolve(falses[i], &n) == YDOC_BOOL && n.b == 0;
    CHECK(all, "n/no/off/false in three casings are false");
    CHECK(resolve("yES", &n) == YDOC_STR, "mixed casing is a string");
    CHECK(resolve("~", &n) == YDOC_NULL && resolve("null", &n) == YDOC_NULL && resolve("", &n) == YDOC_NULL,
          "~, null and empty are null");
    CHECK(resolve("nil", &n) == YDOC_STR, "nil is a string");
    CHECK(resolve("42", &n) == YDOC_INT && n.i == 42, "decimal int");
    CHECK(resolve("-17", &n) == YDOC_INT && n.i == -17, "negative int");
    CHECK(resolve("+12", &n) == YDOC_INT && n.i == 12, "explicit plus");
    CHECK(resolve("0x1F", &n) == YDOC_INT && n.i == 31, "hex int");
    CHECK(resolve("0o17", &n) == YDOC_INT && n.i == 15, "0o octal");
    CHECK(resolve("0644", &n) == YDOC_INT && n.i == 420, "leading-zero octal (file modes)");
    CHECK(resolve("0b101", &n) == YDOC_INT && n.i == 5, "binary int");
    CHECK(resolve("-0x10", &n) == YDOC_INT && n.i == -16, "signed hex");
    CHECK(resolve("1_000_000", &n) == YDOC_INT && n.i == 1000000, "underscores dropped");
    CHECK(resolve("08", &n) == YDOC_FLOAT && n.f == 8.0, "08 is no octal, so a float (as go-yaml)");
    CHECK(resolve("9223372036854775807", &n) == YDOC_INT && n.i == 9223372036854775807LL, "int64 max");
    CHECK(resolve("-9223372036854775808", &n) == YDOC_INT && n.i == -9223372036854775807LL - 1, "int64 min");
    CHECK(resolve("18446744073709551615", &n) == YDOC_FLOAT, "uint64 range becomes a float");
    CHECK(resolve("1.5", &n) == YDOC_FLOAT && n.f == 1.5, "float");
    CHECK(resolve(".5", &n) == YDOC_FLOAT && n.f == 0.5, "leading-dot float");
    CHECK(resolve("1e3", &n) == YDOC_FLOAT && n.f == 1000.0, "exponent float");
    CHECK(resolve("-.inf", &n) == YDOC_FLOAT && isinf(n.f) && n.f < 0, "-.inf");
    CHECK(resolve(".NaN", &n) == YDOC_FLOAT && isnan(n.f), ".NaN");
    CHECK(resolve("1e400", &n) == YDOC_STR, "overflowing float stays a string");
    CHECK(resolve("1.2.3", &n) == YDOC_STR, "version-like text is a string");
    CHECK(resolve("2024-01-01", &n) == YDOC_STR, "timestamps stay strings");
    CHECK(resolve("1:20", &n) == YDOC_STR, "no base-60 numbers");
    CHECK(resolve("0x", &n) == YDOC_STR, "prefix without digits is a string");
    CHECK(resolve("-", &n) == YDOC_STR, "lone sign is a string");
    CHECK(resolve("<<", &n) == YDOC_STR, "<< resolves as a string (merge is decided by position)");

    /* tree building */
    struct ydoc_stream st;
    struct ydoc_error err;
    const char *text = "apiVersion: v1\n"
                       "kind: Secret\n"
                       "metadata:\n"
                       "  name: s\n"
                       "  labels: {app: x, 'on': on}\n"
                       "data:\n"
                       "  password: cGFzcw==\n"
                       "list: [1, \"2\", '3', ~, 1.5]\n"
                       "empty_map: {}\n"
                       "empty_list: []\n"
                       "nothing:\n"
                       "---\n"
                       "---\n"
                       "- second\n";
    CHECK(parse(text, &st, &err), "multi-document stream parses");
    CHECK_INT(st.n, 2, "the empty middle document is dropped");
    if (st.n == 2) {
        const struct ydoc_node *d = st.docs[0];
        CHECK(d->type == YDOC_MAP, "first document is a mapping");
        CHECK(get(d, "kind") && strcmp(get(d, "kind")->s, "Secret") == 0, "kind: Secret");
        const struct ydoc_node *labels = get(get(d, "metadata"), "labels");
        CHECK(labels && get(labels, "on") && get(labels, "on")->type == YDOC_BOOL, "quoted key 'on' stays, value on is a bool");
        const struct ydoc_node *list = get(d, "list");
        CHECK(list && list->n == 5, "flow sequence of five");
        if (list && list->n == 5) {
            CHECK(list->items[0]->type == YDOC_INT, "plain 1 is an int");
            CHECK(list->items[1]->type == YDOC_STR && list->items[2]->type == YDOC_STR, "quoted numbers stay strings");
            CHECK(list->items[3]->type == YDOC_NULL, "~ in a sequence is null");
            CHECK(list->items[4]->type == YDOC_FLOAT, "1.5 is a float");
        }
        CHECK(get(d, "empty_map")->type == YDOC_MAP && get(d, "empty_map")->n == 0, "{} is an empty mapping");
        CHECK(get(d, "empty_list")->type == YDOC_SEQ && get(d, "empty_list")->n == 0, "[] is an empty sequence");
        CHECK(get(d, "nothing") && get(d, "nothing")->type == YDOC_NULL, "empty value is a null that keeps its key");
        CHECK(st.docs[1]->type == YDOC_SEQ && strcmp(st.docs[1]->items[0]->s, "second") == 0, "second document");
    }
    ydoc_stream_free(&st);

    CHECK(parse("", &st, &err) && st.n == 0, "empty stream has no documents");
    ydoc_stream_free(&st);
    CHECK(parse("--- 5\n", &st, &err) && st.n == 1 && st.docs[0]->type == YDOC_INT, "scalar document");
    ydoc_stream_free(&st);

    /* keys as sigs.k8s.io/yaml writes them into JSON */
    CHECK(parse("1: a\ntrue: b\n0x10: c\ny: d\n", &st, &err), "non-string keys parse");
    if (st.n == 1) {
        CHECK(get(st.docs[0], "1") && get(st.docs[0], "16"), "int keys become their decimal text");
        CHECK(get(st.docs[0], "true") && strcmp(get(st.docs[0], "true")->s, "d") == 0,
              "bool keys become true/false; a later duplicate wins (y is true)");
    }
    ydoc_stream_free(&st);
    CHECK(!parse("~: a\n", &st, &err), "null key refused");
    CHECK(!parse("? [a, b]\n: c\n", &st, &err), "sequence key refused");

    /* anchors, aliases, merges */
    CHECK(parse("base: &b {x: 1, w: [1, 2]}\n"
                "copy: *b\n"
                "merged:\n  <<: *b\n  x: 2\n"
                "multi:\n  <<: [{a: 1}, {a: 2, b: 2}]\n"
                "dup: 1\ndup: 2\n",
                &st, &err),
          "anchors and merges parse");
    if (st.n == 1) {
        const struct ydoc_node *d = st.docs[0];
        CHECK(equal(get(d, "base"), get(d, "copy")), "alias copies the anchored node");
        CHECK(get(d, "base") != get(d, "copy"), "the copy is a separate node");
        CHECK(get(get(d, "merged"), "x")->i == 2 && get(get(d, "merged"), "w")->n == 2, "explicit key beats the merged one");
        CHECK(get(get(d, "multi"), "a")->i == 1 && get(get(d, "multi"), "b")->i == 2, "earlier merge source wins");
        CHECK(get(d, "dup")->i == 2 && d->n == 5, "duplicate key: the last one wins, once");
    }
    ydoc_stream_free(&st);
    CHECK(parse("a: &x 1\nb: &x 2\nc: *x\n", &st, &err) && get(st.docs[0], "c")->i == 2, "redefined anchor: latest wins");
    ydoc_stream_free(&st);
    CHECK(parse("m:\n  a: &x {p: 1}\n  a: 2\nk: *x\n", &st, &err) && get(get(st.docs[0], "k"), "p"),
          "alias to a node replaced by a duplicate key still resolves");
    ydoc_stream_free(&st);
    CHECK(parse("a: !!str 12\nb: !!float 3\nc: !!binary aGk=\nd: !custom 7\n", &st, &err), "tags parse");
    if (st.n == 1) {
        CHECK(get(st.docs[0], "a")->type == YDOC_STR, "!!str keeps the text");
        CHECK(get(st.docs[0], "b")->type == YDOC_FLOAT && get(st.docs[0], "b")->f == 3.0, "!!float on an int");
        CHECK(strcmp(get(st.docs[0], "c")->s, "hi") == 0, "!!binary is base64-decoded");
        CHECK(get(st.docs[0], "d")->type == YDOC_STR, "a custom tag keeps the text");
    }
    ydoc_stream_free(&st);
    CHECK(!parse("a: !!int abc\n", &st, &err) && strstr(err.message, "!!int"), "!!int on text refused");

    /* errors with positions */
    CHECK(!parse("a: 1\nb: [1, 2\nc: 3\n", &st, &err), "unclosed flow sequence refused");
    CHECK(err.line == 3 && err.column >= 1, "error line points past the sequence");
    CHECK(strstr(err.message, "line 3") != NULL, "message names the line");
    CHECK(!parse("a: 1\n  b: 2\n", &st, &err) && err.line == 2, "bad indentation: line 2");
    CHECK(!parse("a: *nope\n", &st, &err) && err.line == 1 && err.column == 4, "unknown anchor at its position");
    CHECK(strstr(err.message, "nope") != NULL, "unknown anchor named");
    CHECK(!parse("a: \"\xff\"\n", &st, &err) && err.line == 1, "invalid UTF-8 refused with a position");
    CHECK(!parse("a: &r [*r]\n", &st, &err), "recursive alias refused");

    /* the alias bomb */
    const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                       "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                       "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    CHECK(!parse(bomb, &st, &err), "billion laughs refused");
    CHECK(strstr(err.message, "alias") != NULL && err.line > 0, "refusal names aliases and a line");
    struct ydoc_limits small = { 5, 1000, 0 };
    CHECK(!ydoc_parse("a: &a [1, 2, 3]\nb: *a\nc: *a\n", 29, &small, &st, &err), "alias bound is configurable");
    /* few nodes, many bytes: a long string copied by aliases (a 115 KB manifest once took ~1 GB) */
    {
        size_t slen = 100000, nal = 400;
        size_t cap = slen + nal * 6 + 64;
        char *big = malloc(cap);
        size_t o = (size_t)snprintf(big, cap, "a: &a \"");
        memset(big + o, 'x', slen);
        o += slen;
        o += (size_t)snprintf(big + o, cap - o, "\"\nb: [");
        for (size_t i = 0; i < nal; i++)
            o += (size_t)snprintf(big + o, cap - o, "%s*a", i ? ", " : "");
        o += (size_t)snprintf(big + o, cap - o, "]\n");
        CHECK(!parse(big, &st, &err) && strstr(err.message, "aliases expand to more than 16777216 bytes"),
              "a long string aliased 400 times (40 MB of copies, 400 nodes) refused by bytes");
        struct ydoc_limits roomy = { 100000, 1000, 64u << 20 };
        CHECK(ydoc_parse(big, o, &roomy, &st, &err) && st.n == 1, "the byte bound is configurable");
        ydoc_stream_free(&st);
        free(big);
    }
    struct ydoc_limits shallow = { 1000, 3, 0 };
    CHECK(!ydoc_parse("[[[[1]]]]", 9, &shallow, &st, &err) && strstr(err.message, "nesting"), "depth bound");

    /* emit and parse back */
    struct ydoc_node *doc = ydoc_new(YDOC_MAP);
    struct ydoc_node *seq = ydoc_new(YDOC_SEQ);
    static const char *const strings[] = { "yes", "0777", "", "~", "a: b", "multi\nline\n", "1.5", "<<", "plain", "1:20", "2024-01-01", "tab\there" };
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
        ydoc_seq_push(seq, ydoc_new_str(strings[i], strlen(strings[i])));
    struct ydoc_node *f = ydoc_new(YDOC_FLOAT);
    f->f = 2.0;
    ydoc_seq_push(seq, f);
    struct ydoc_node *i64 = ydoc_new(YDOC_INT);
    i64->i = -9223372036854775807LL - 1;
    ydoc_seq_push(seq, i64);
    ydoc_seq_push(seq, ydoc_new(YDOC_NULL));
    ydoc_map_push(doc, "items", 5, seq);
    ydoc_map_push(doc, "y", 1, ydoc_new(YDOC_MAP));
    ydoc_map_push(doc, "z", 1, ydoc_new(YDOC_SEQ));
    struct pgr_buf out = { 0 };
    CHECK(ydoc_emit(&doc, 1, 0, &out, &err), "tree emits");
    pgr_buf_addc(&out, '\0');
    CHECK(out.data && strstr(out.data, "- \"yes\"") && strstr(out.data, "- \"0777\"") && strstr(out.data, "\"y\": {}"),
          "strings that would change type are quoted");
    CHECK(out.data && strstr(out.data, "- 2.0\n"), "a float stays a float");
    CHECK(ydoc_parse(out.data, out.len - 1, NULL, &st, &err) && st.n == 1 && equal(doc, st.docs[0]),
          "emitted text parses back to the same tree");
    ydoc_stream_free(&st);
    pgr_buf_free(&out);

    struct ydoc_node *docs[2] = { doc, ydoc_new_str("second", 6) };
    CHECK(ydoc_emit(docs, 2, 1, &out, &err), "two documents emit");
    pgr_buf_addc(&out, '\0');
    CHECK(out.data && strncmp(out.data, "---", 3) == 0 && strstr(out.data, "\n--- second"), "explicit --- per document");
    CHECK(ydoc_parse(out.data, out.len - 1, NULL, &st, &err) && st.n == 2, "two documents parse back");
    ydoc_stream_free(&st);
    pgr_buf_free(&out);
    ydoc_free(docs[1]);
    ydoc_free(doc);

    CHECK(ydoc_utf8_valid("\xc3\xa9", 2) && !ydoc_utf8_valid("\xc3", 1) && !ydoc_utf8_valid("\xed\xa0\x80", 3) &&
              !ydoc_utf8_valid("\xc0\xaf", 2),
          "UTF-8 check: truncated, surrogate and overlong sequences refused");
    return tap_done();
}
