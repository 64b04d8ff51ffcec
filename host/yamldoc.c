/* yamldoc.c — YAML text <-> ydoc trees (see yamldoc.h). libyaml scans and emits; this file builds
 * the tree from events, resolves types the way go-yaml v2 (sigs.k8s.io/yaml) does, and bounds aliases. */
#include "yamldoc.h"

#include "b64.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define TAG_PREFIX "tag:yaml.org,2002:"

/* ---- nodes ---- */

struct ydoc_node *ydoc_new(enum ydoc_type type)
{
    struct ydoc_node *n = calloc(1, sizeof *n);
    if (n)
        n->type = type;
    return n;
}

struct ydoc_node *ydoc_new_str(const char *s, size_t len)
{
    struct ydoc_node *n = ydoc_new(YDOC_STR);
    if (!n)
        return NULL;
    n->s = malloc(len + 1);
    if (!n->s) {
        free(n);
        return NULL;
    }
    if (len)
        memcpy(n->s, s, len);
    n->s[len] = '\0';
    n->len = len;
    return n;
}

void ydoc_free(struct ydoc_node *n)
{
    if (!n)
        return;
    free(n->s);
    for (size_t i = 0; n->items && i < n->n; i++)
        ydoc_free(n->items[i]);
    for (size_t i = 0; n->pairs && i < n->n; i++) {
        free(n->pairs[i].key);
        ydoc_free(n->pairs[i].value);
    }
    free(n->items);
    free(n->pairs);
    free(n);
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 1;
    size_t c = *cap ? *cap * 2 : 4;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * size);
    if (!q)
        return 0;
    *p = q;
    *cap = c;
    return 1;
}

int ydoc_seq_push(struct ydoc_node *seq, struct ydoc_node *item)
{
    if (!grow((void **)&seq->items, &seq->cap, seq->n + 1, sizeof *seq->items))
        return 0;
    seq->items[seq->n++] = item;
    return 1;
}

static int map_push_owned(struct ydoc_node *map, char *key, size_t keylen, struct ydoc_node *value,
                          int merged)
{
    if (!grow((void **)&map->pairs, &map->cap, map->n + 1, sizeof *map->pairs))
        return 0;
    map->pairs[map->n++] = (struct ydoc_pair){ key, keylen, value, merged };
    return 1;
}

int ydoc_map_push(struct ydoc_node *map, const char *key, size_t keylen, struct ydoc_node *value)
{
    char *k = malloc(keylen + 1);
    if (!k)
        return 0;
    memcpy(k, key, keylen);
    k[keylen] = '\0';
    if (!map_push_owned(map, k, keylen, value, 0)) {
        free(k);
        return 0;
    }
    return 1;
}

/* ---- plain scalar resolution (go-yaml v2 resolve.go, for untagged plain scalars) ---- */

static const struct {
    const char *text;
    enum ydoc_type type;
    int b;
    double f;
} words[] = {
    { "y", YDOC_BOOL, 1, 0 },      { "Y", YDOC_BOOL, 1, 0 },     { "yes", YDOC_BOOL, 1, 0 },
    { "Yes", YDOC_BOOL, 1, 0 },    { "YES", YDOC_BOOL, 1, 0 },   { "true", YDOC_BOOL, 1, 0 },
    { "True", YDOC_BOOL, 1, 0 },   { "TRUE", YDOC_BOOL, 1, 0 },  { "on", YDOC_BOOL, 1, 0 },
    { "On", YDOC_BOOL, 1, 0 },     { "ON", YDOC_BOOL, 1, 0 },    { "n", YDOC_BOOL, 0, 0 },
    { "N", YDOC_BOOL, 0, 0 },      { "no", YDOC_BOOL, 0, 0 },    { "No", YDOC_BOOL, 0, 0 },
    { "NO", YDOC_BOOL, 0, 0 },     { "false", YDOC_BOOL, 0, 0 }, { "False", YDOC_BOOL, 0, 0 },
    { "FALSE", YDOC_BOOL, 0, 0 },  { "off", YDOC_BOOL, 0, 0 },   { "Off", YDOC_BOOL, 0, 0 },
    { "OFF", YDOC_BOOL, 0, 0 },    { "~", YDOC_NULL, 0, 0 },     { "null", YDOC_NULL, 0, 0 },
    { "Null", YDOC_NULL, 0, 0 },   { "NULL", YDOC_NULL, 0, 0 },  { ".nan", YDOC_FLOAT, 0, NAN },
    { ".NaN", YDOC_FLOAT, 0, NAN }, { ".NAN", YDOC_FLOAT, 0, NAN }, { ".inf", YDOC_FLOAT, 0, INFINITY },
    { ".Inf", YDOC_FLOAT, 0, INFINITY }, { ".INF", YDOC_FLOAT, 0, INFINITY },
    { "+.inf", YDOC_FLOAT, 0, INFINITY }, { "+.Inf", YDOC_FLOAT, 0, INFINITY },
    { "+.INF", YDOC_FLOAT, 0, INFINITY }, { "-.inf", YDOC_FLOAT, 0, -INFINITY },
    { "-.Inf", YDOC_FLOAT, 0, -INFINITY }, { "-.INF", YDOC_FLOAT, 0, -INFINITY },
};

static int digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return 99;
}

/* Go's strconv.ParseUint(s, 0, 64) without the sign: 0x, 0o, 0b prefixes, a leading 0 means octal. */
static int parse_go_uint(const char *s, size_t n, unsigned long long *out)
{
    int base = 10;
    if (n >= 2 && s[0] == '0') {
        char p = s[1];
        if (p == 'x' || p == 'X')
            base = 16, s += 2, n -= 2;
        else if (p == 'o' || p == 'O')
            base = 8, s += 2, n -= 2;
        else if (p == 'b' || p == 'B')
            base = 2, s += 2, n -= 2;
        else
            base = 8, s += 1, n -= 1;
    }
    if (n == 0)
        return 0;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = digit_value(s[i]);
        if (d >= base)
            return 0;
        if (v > (~0ULL - (unsigned)d) / (unsigned)base)
            return 0;
        v = v * (unsigned)base + (unsigned)d;
    }
    *out = v;
    return 1;
}

/* ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$ — go-yaml's yamlStyleFloat */
static int yaml_style_float(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    size_t d = 0;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, d++;
        if (!d)
            return 0;
    } else {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, d++;
        if (!d)
            return 0;
        if (i < n && s[i] == '.') {
            i++;
            while (i < n && s[i] >= '0' && s[i] <= '9')
                i++;
        }
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        d = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, d++;
        if (!d)
            return 0;
    }
    return i == n;
}

/* strtod on a float that passed yaml_style_float; 0 when it overflows (Go reports a range error and
 * the scalar stays a string). */
static int to_double(const char *s, double *out)
{
    errno = 0;
    double d = strtod(s, NULL);
    if (isinf(d))
        return 0;
    *out = d;
    return 1;
}

enum ydoc_type ydoc_resolve(const char *s, size_t len, struct ydoc_node *out)
{
    out->type = YDOC_STR;
    if (len == 0) {
        out->type = YDOC_NULL;
        return out->type;
    }
    char c = s[0];
    int hint;
    if (c == '+' || c == '-')
        hint = 'S';
    else if (c >= '0' && c <= '9')
        hint = 'D';
    else if (c == '.')
        hint = '.';
    else if (strchr("yYnNtTfFoO~", c))
        hint = 'M';
    else
        return out->type;

    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strlen(words[i].text) == len && memcmp(words[i].text, s, len) == 0) {
            out->type = words[i].type;
            out->b = words[i].b;
            out->f = words[i].f;
            return out->type;
        }
    }
    /* numbers longer than this are not numbers anyone writes; they stay strings */
    char buf[512];
    if (hint == 'M' || len >= sizeof buf)
        return out->type;
    if (hint == '.') {
        memcpy(buf, s, len);
        buf[len] = '\0';
        if (yaml_style_float(buf, len) && to_double(buf, &out->f))
            out->type = YDOC_FLOAT;
        return out->type;
    }
    /* go-yaml drops every '_' before trying numbers */
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] != '_')
            buf[n++] = s[i];
    buf[n] = '\0';
    const char *p = buf;
    size_t pn = n;
    int neg = 0;
    if (pn && (*p == '+' || *p == '-')) {
        neg = *p == '-';
        p++, pn--;
    }
    unsigned long long u;
    if (parse_go_uint(p, pn, &u)) {
        if (!neg && u <= 9223372036854775807ULL) {
            out->type = YDOC_INT;
            out->i = (long long)u;
            return out->type;
        }
        if (neg && u <= 9223372036854775808ULL) {
            out->type = YDOC_INT;
            out->i = u == 9223372036854775808ULL ? (-9223372036854775807LL - 1) : -(long long)u;
            return out->type;
        }
        if (!neg && buf[0] != '+') {
            /* go-yaml returns a uint64 here; Lua has no such integer */
            out->type = YDOC_FLOAT;
            out->f = (double)u;
            return out->type;
        }
    }
    if (yaml_style_float(buf, n) && to_double(buf, &out->f))
        out->type = YDOC_FLOAT;
    return out->type;
}

/* ---- UTF-8 ---- */

int ydoc_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t extra;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (len - i <= extra)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            c = c << 6 | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/* ---- parsing ---- */

struct anchor {
    char *name;
    struct ydoc_node *node;
};

struct frame {
    struct ydoc_node *node;
    char *anchor;
    /* mappings: the key waiting for its value */
    int have_key;
    char *key;
    size_t keylen;
    int key_is_merge;
};

struct builder {
    const struct ydoc_limits *lim;
    struct ydoc_error *err;
    struct frame *stack;
    size_t depth, cap;
    struct anchor *anchors;
    size_t nanchors, anchors_cap;
    /* nodes no longer in the tree (replaced duplicates, merge sources) that an anchor may still
     * name: freed when the document ends */
    struct ydoc_node **dead;
    size_t ndead, dead_cap;
    size_t alias_nodes, alias_bytes;
    struct ydoc_node *root;
    int root_empty;
};

static int fail_at(struct builder *b, const yaml_mark_t *mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_at(struct builder *b, const yaml_mark_t *mark, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    b->err->line = mark ? (int)mark->line + 1 : 0;
    b->err->column = mark ? (int)mark->column + 1 : 0;
    if (mark)
        snprintf(b->err->message, sizeof b->err->message, "YAML error at line %d, column %d: %s",
                 b->err->line, b->err->column, what);
    else
        snprintf(b->err->message, sizeof b->err->message, "YAML error: %s", what);
    return 0;
}

static int oom(struct builder *b)
{
    return fail_at(b, NULL, "out of memory");
}

static int bury(struct builder *b, struct ydoc_node *n)
{
    if (!n)
        return 1;
    if (!grow((void **)&b->dead, &b->dead_cap, b->ndead + 1, sizeof *b->dead)) {
        ydoc_free(n);
        return 0;
    }
    b->dead[b->ndead++] = n;
    return 1;
}

static void end_document(struct builder *b)
{
    for (size_t i = 0; i < b->nanchors; i++)
        free(b->anchors[i].name);
    b->nanchors = 0;
    for (size_t i = 0; i < b->ndead; i++)
        ydoc_free(b->dead[i]);
    b->ndead = 0;
}

static size_t alias_bytes_bound(const struct builder *b)
{
    return b->lim->max_alias_bytes ? b->lim->max_alias_bytes : YDOC_DEFAULT_ALIAS_BYTES;
}

/* Deep copy for an alias, counting every node and its bytes against the alias bounds
 * (*limit_hit: 1 nodes, 2 bytes). */
static struct ydoc_node *copy_node(struct builder *b, const struct ydoc_node *n, const yaml_mark_t *mark,
                                   int *limit_hit)
{
    if (++b->alias_nodes > b->lim->max_alias_nodes) {
        *limit_hit = 1;
        return NULL;
    }
    size_t bytes = sizeof *n + (n->type == YDOC_STR ? n->len + 1 : 0);
    if (n->type == YDOC_MAP)
        for (size_t i = 0; i < n->n; i++)
            bytes += sizeof *n->pairs + n->pairs[i].keylen + 1;
    else if (n->type == YDOC_SEQ)
        bytes += n->n * sizeof *n->items;
    b->alias_bytes += bytes;
    if (b->alias_bytes > alias_bytes_bound(b)) {
        *limit_hit = 2;
        return NULL;
    }
    struct ydoc_node *c = ydoc_new(n->type);
    if (!c)
        return NULL;
    c->b = n->b;
    c->i = n->i;
    c->f = n->f;
    if (n->type == YDOC_STR) {
        c->s = malloc(n->len + 1);
        if (!c->s)
            goto fail;
        memcpy(c->s, n->s, n->len + 1);
        c->len = n->len;
    } else if (n->type == YDOC_SEQ) {
        for (size_t i = 0; i < n->n; i++) {
            struct ydoc_node *item = copy_node(b, n->items[i], mark, limit_hit);
            if (!item || !ydoc_seq_push(c, item)) {
                ydoc_free(item);
                goto fail;
            }
        }
    } else if (n->type == YDOC_MAP) {
        for (size_t i = 0; i < n->n; i++) {
            struct ydoc_node *v = copy_node(b, n->pairs[i].value, mark, limit_hit);
            if (!v || !ydoc_map_push(c, n->pairs[i].key, n->pairs[i].keylen, v)) {
                ydoc_free(v);
                goto fail;
            }
        }
    }
    return c;
fail:
    ydoc_free(c);
    return NULL;
}

static int copy_or_fail(struct builder *b, const struct ydoc_node *n, const yaml_mark_t *mark,
                        struct ydoc_node **out)
{
    int limit_hit = 0;
    *out = copy_node(b, n, mark, &limit_hit);
    if (*out)
        return 1;
    if (limit_hit == 1)
        return fail_at(b, mark,
                       "aliases expand to more than %zu nodes (an alias bomb? raise max_alias_nodes if "
                       "the document is genuine)",
                       b->lim->max_alias_nodes);
    if (limit_hit == 2)
        return fail_at(b, mark,
                       "aliases expand to more than %zu bytes (an alias bomb? raise max_alias_bytes if "
                       "the document is genuine)",
                       alias_bytes_bound(b));
    return oom(b);
}

/* Text of a scalar used as a mapping key, as sigs.k8s.io/yaml turns it into a JSON key. */
static int key_text(struct builder *b, struct ydoc_node *k, const yaml_mark_t *mark, char **out,
                    size_t *outlen)
{
    char buf[64];
    const char *text = buf;
    switch (k->type) {
    case YDOC_STR:
        *out = k->s;
        *outlen = k->len;
        k->s = NULL;
        return 1;
    case YDOC_BOOL:
        text = k->b ? "true" : "false";
        break;
    case YDOC_INT:
        snprintf(buf, sizeof buf, "%lld", k->i);
        break;
    case YDOC_FLOAT:
        if (isnan(k->f))
            text = ".nan";
        else if (isinf(k->f))
            text = k->f > 0 ? ".inf" : "-.inf";
        else {
            /* Go formats float keys with 32-bit precision, shortest form */
            for (int p = 1; p <= 9; p++) {
                snprintf(buf, sizeof buf, "%.*g", p, k->f);
                if ((float)strtod(buf, NULL) == (float)k->f)
                    break;
            }
        }
        break;
    case YDOC_NULL:
        return fail_at(b, mark, "a null mapping key is not supported (Kubernetes refuses it too)");
    default:
        return fail_at(b, mark, "a %s used as a mapping key is not supported",
                       k->type == YDOC_SEQ ? "sequence" : "mapping");
    }
    *outlen = strlen(text);
    *out = malloc(*outlen + 1);
    if (!*out)
        return oom(b);
    memcpy(*out, text, *outlen + 1);
    return 1;
}

/* "<<: value" — value is a mapping or a sequence of mappings; their pairs join the mapping marked
 * as merged, so explicit keys win (YAML merge semantics) when the mapping ends. */
static int merge_into(struct builder *b, struct ydoc_node *map, struct ydoc_node *src,
                      const yaml_mark_t *mark)
{
    const struct ydoc_node *const *srcs = (const struct ydoc_node *const *)&src;
    size_t nsrc = 1;
    if (src->type == YDOC_SEQ) {
        srcs = (const struct ydoc_node *const *)src->items;
        nsrc = src->n;
    }
    for (size_t s = 0; s < nsrc; s++) {
        const struct ydoc_node *m = srcs[s];
        if (m->type != YDOC_MAP)
            return fail_at(b, mark, "a merge key (<<) needs a mapping or a sequence of mappings");
        for (size_t i = 0; i < m->n; i++) {
            struct ydoc_node *v;
            if (!copy_or_fail(b, m->pairs[i].value, mark, &v))
                return 0;
            char *k = malloc(m->pairs[i].keylen + 1);
            if (!k || !map_push_owned(map, k, m->pairs[i].keylen, v, 1)) {
                free(k);
                ydoc_free(v);
                return oom(b);
            }
            memcpy(k, m->pairs[i].key, m->pairs[i].keylen + 1);
        }
    }
    return 1;
}

struct keyref {
    struct ydoc_pair *pair;
    size_t order;
};

static int keyref_cmp(const void *a, const void *b)
{
    const struct keyref *x = a, *y = b;
    size_t n = x->pair->keylen < y->pair->keylen ? x->pair->keylen : y->pair->keylen;
    int c = memcmp(x->pair->key, y->pair->key, n);
    if (c)
        return c;
    if (x->pair->keylen != y->pair->keylen)
        return x->pair->keylen < y->pair->keylen ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* One pair per key: the last explicit one wins (go-yaml overwrites), else the first merged one. */
static int dedupe(struct builder *b, struct ydoc_node *map)
{
    if (map->n < 2)
        return 1;
    struct keyref *refs = malloc(map->n * sizeof *refs);
    struct ydoc_pair *out = malloc(map->n * sizeof *out);
    if (!refs || !out) {
        free(refs);
        free(out);
        return oom(b);
    }
    for (size_t i = 0; i < map->n; i++)
        refs[i] = (struct keyref){ &map->pairs[i], i };
    qsort(refs, map->n, sizeof *refs, keyref_cmp);
    size_t kept = 0;
    int ok = 1;
    for (size_t i = 0; i < map->n;) {
        size_t j = i;
        while (j < map->n && refs[j].pair->keylen == refs[i].pair->keylen &&
               memcmp(refs[j].pair->key, refs[i].pair->key, refs[i].pair->keylen) == 0)
            j++;
        size_t pick = (size_t)-1;
        for (size_t k = i; k < j; k++)
            if (!refs[k].pair->merged)
                pick = k; /* the last explicit */
        if (pick == (size_t)-1)
            pick = i; /* the first merged */
        for (size_t k = i; k < j; k++) {
            if (k == pick) {
                out[kept++] = *refs[k].pair;
            } else {
                free(refs[k].pair->key);
                if (!bury(b, refs[k].pair->value))
                    ok = 0;
            }
        }
        i = j;
    }
    free(refs);
    free(map->pairs);
    map->pairs = out;
    map->n = kept;
    map->cap = map->n;
    for (size_t i = 0; i < kept; i++)
        map->pairs[i].merged = 0;
    return ok ? 1 : oom(b);
}

static int remember_anchor(struct builder *b, char *name, struct ydoc_node *node)
{
    if (!name)
        return 1;
    if (!grow((void **)&b->anchors, &b->anchors_cap, b->nanchors + 1, sizeof *b->anchors)) {
        free(name);
        return oom(b);
    }
    b->anchors[b->nanchors++] = (struct anchor){ name, node };
    return 1;
}

static char *dup_str(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d)
        memcpy(d, s, n + 1);
    return d;
}

/* A finished node goes into its parent (or becomes the document). Takes ownership of node. */
static int attach(struct builder *b, struct ydoc_node *node, int is_merge_key, const yaml_mark_t *mark)
{
    if (b->depth == 0) {
        b->root = node;
        return 1;
    }
    struct frame *f = &b->stack[b->depth - 1];
    if (f->node->type == YDOC_SEQ) {
        if (!ydoc_seq_push(f->node, node)) {
            ydoc_free(node);
            return oom(b);
        }
        return 1;
    }
    if (!f->have_key) {
        f->have_key = 1;
        f->key_is_merge = is_merge_key;
        f->key = NULL;
        int ok = is_merge_key ? 1 : key_text(b, node, mark, &f->key, &f->keylen);
        /* the key node is no longer needed, but an anchor may name it */
        if (!bury(b, node))
            return oom(b);
        return ok;
    }
    f->have_key = 0;
    if (f->key_is_merge) {
        int ok = merge_into(b, f->node, node, mark);
        return bury(b, node) && ok;
    }
    char *key = f->key;
    f->key = NULL;
    if (!map_push_owned(f->node, key, f->keylen, node, 0)) {
        free(key);
        ydoc_free(node);
        return oom(b);
    }
    return 1;
}

static int has_tag(const yaml_char_t *tag, const char *name)
{
    return tag && strncmp((const char *)tag, TAG_PREFIX, sizeof TAG_PREFIX - 1) == 0 &&
           strcmp((const char *)tag + sizeof TAG_PREFIX - 1, name) == 0;
}

static int on_scalar(struct builder *b, yaml_event_t *ev)
{
    const char *value = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const yaml_char_t *tag = ev->data.scalar.tag;
    int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    int is_merge = (!tag && plain && len == 2 && memcmp(value, "<<", 2) == 0) || has_tag(tag, "merge");
    struct ydoc_node probe = { 0 };
    struct ydoc_node *node = NULL;

    if (!tag && !plain) {
        node = ydoc_new_str(value, len);
    } else if (!tag) {
        ydoc_resolve(value, len, &probe);
        if (probe.type == YDOC_STR) {
            node = ydoc_new_str(value, len);
        } else if ((node = ydoc_new(probe.type))) {
            node->b = probe.b, node->i = probe.i, node->f = probe.f;
        }
        if (b->depth == 0 && len == 0 && !ev->data.scalar.anchor)
            b->root_empty = 1;
    } else if (has_tag(tag, "int") || has_tag(tag, "float") || has_tag(tag, "bool") ||
               has_tag(tag, "null")) {
        const char *want = (const char *)tag + sizeof TAG_PREFIX - 1;
        ydoc_resolve(value, len, &probe);
        if (probe.type == YDOC_INT && strcmp(want, "float") == 0) {
            probe.type = YDOC_FLOAT;
            probe.f = (double)probe.i;
        }
        static const char *const names[] = { "null", "bool", "int", "float", "str" };
        if (probe.type > YDOC_STR || strcmp(names[probe.type], want) != 0)
            return fail_at(b, &ev->start_mark, "cannot decode !!%s `%.60s` as a !!%s",
                           probe.type <= YDOC_STR ? names[probe.type] : "str", value, want);
        if ((node = ydoc_new(probe.type)))
            node->b = probe.b, node->i = probe.i, node->f = probe.f;
    } else if (has_tag(tag, "binary")) {
        unsigned char *out = malloc(len / 4 * 3 + 4);
        size_t bad = 0;
        long n = out ? pgr_b64_decode(value, len, out, 0, &bad) : -1;
        if (out && n < 0) {
            free(out);
            return fail_at(b, &ev->start_mark, "!!binary value is not valid base64");
        }
        node = out ? ydoc_new_str((const char *)out, (size_t)n) : NULL;
        free(out);
    } else {
        /* !!str, !!timestamp and tags of one's own keep the text, as go-yaml does */
        node = ydoc_new_str(value, len);
    }
    if (!node)
        return oom(b);
    if (!remember_anchor(b, dup_str((const char *)ev->data.scalar.anchor), node)) {
        ydoc_free(node);
        return 0;
    }
    return attach(b, node, is_merge, &ev->start_mark);
}

static int on_start(struct builder *b, yaml_event_t *ev, enum ydoc_type type, const yaml_char_t *anchor)
{
    if (b->depth >= b->lim->max_depth)
        return fail_at(b, &ev->start_mark, "nesting deeper than %zu levels", b->lim->max_depth);
    if (!grow((void **)&b->stack, &b->cap, b->depth + 1, sizeof *b->stack))
        return oom(b);
    struct ydoc_node *node = ydoc_new(type);
    char *name = anchor ? dup_str((const char *)anchor) : NULL;
    if (!node || (anchor && !name)) {
        ydoc_free(node);
        free(name);
        return oom(b);
    }
    b->stack[b->depth++] = (struct frame){ node, name, 0, NULL, 0, 0 };
    return 1;
}

static int on_end(struct builder *b, yaml_event_t *ev)
{
    struct frame f = b->stack[--b->depth];
    free(f.key);
    if (f.node->type == YDOC_MAP && !dedupe(b, f.node)) {
        ydoc_free(f.node);
        free(f.anchor);
        return 0;
    }
    if (!remember_anchor(b, f.anchor, f.node)) {
        ydoc_free(f.node);
        return 0;
    }
    return attach(b, f.node, 0, &ev->start_mark);
}

static int on_alias(struct builder *b, yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    for (size_t i = b->nanchors; i-- > 0;) {
        if (strcmp(b->anchors[i].name, name) == 0) {
            struct ydoc_node *copy;
            if (!copy_or_fail(b, b->anchors[i].node, &ev->start_mark, &copy))
                return 0;
            return attach(b, copy, 0, &ev->start_mark);
        }
    }
    return fail_at(b, &ev->start_mark, "unknown anchor '%.60s' referenced", name);
}

static void unwind(struct builder *b)
{
    while (b->depth) {
        struct frame *f = &b->stack[--b->depth];
        free(f->key);
        free(f->anchor);
        ydoc_free(f->node);
    }
    ydoc_free(b->root);
    b->root = NULL;
    end_document(b);
}

static int parser_error(struct builder *b, yaml_parser_t *p, const char *s, size_t len)
{
    yaml_mark_t mark = p->problem_mark;
    if (p->error == YAML_READER_ERROR) {
        /* the reader reports a byte offset, not a mark */
        int line, column;
        pgr_text_position(s, len, p->problem_offset, &line, &column);
        mark.line = (size_t)line - 1;
        mark.column = (size_t)column - 1;
    }
    if (p->error == YAML_MEMORY_ERROR)
        return oom(b);
    if (p->context)
        return fail_at(b, &mark, "%s (%s at line %d, column %d)", p->problem ? p->problem : "syntax error",
                       p->context, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return fail_at(b, &mark, "%s", p->problem ? p->problem : "syntax error");
}

void ydoc_stream_free(struct ydoc_stream *st)
{
    for (size_t i = 0; i < st->n; i++)
        ydoc_free(st->docs[i]);
    free(st->docs);
    st->docs = NULL;
    st->n = 0;
}

int ydoc_parse(const char *s, size_t len, const struct ydoc_limits *lim, struct ydoc_stream *out,
               struct ydoc_error *err)
{
    static const struct ydoc_limits defaults = { YDOC_DEFAULT_ALIAS_NODES, YDOC_DEFAULT_DEPTH,
                                                 YDOC_DEFAULT_ALIAS_BYTES };
    struct builder b = { 0 };
    b.lim = lim ? lim : &defaults;
    b.err = err;
    memset(err, 0, sizeof *err);
    out->docs = NULL;
    out->n = 0;
    size_t docs_cap = 0;

    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return oom(&b);
    yaml_parser_set_input_string(&parser, (const unsigned char *)s, len);
    int ok = 1, done = 0;
    while (ok && !done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            ok = parser_error(&b, &parser, s, len);
            ok = 0;
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            b.root = NULL;
            b.root_empty = 0;
            break;
        case YAML_DOCUMENT_END_EVENT:
            if (b.root && !b.root_empty) {
                if (!grow((void **)&out->docs, &docs_cap, out->n + 1, sizeof *out->docs)) {
                    ok = oom(&b);
                    break;
                }
                out->docs[out->n++] = b.root;
            } else {
                ydoc_free(b.root);
            }
            b.root = NULL;
            end_document(&b);
            break;
        case YAML_SCALAR_EVENT:
            ok = on_scalar(&b, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
            ok = on_start(&b, &ev, YDOC_SEQ, ev.data.sequence_start.anchor);
            break;
        case YAML_MAPPING_START_EVENT:
            ok = on_start(&b, &ev, YDOC_MAP, ev.data.mapping_start.anchor);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            ok = on_end(&b, &ev);
            break;
        case YAML_ALIAS_EVENT:
            ok = on_alias(&b, &ev);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    unwind(&b);
    free(b.stack);
    free(b.anchors);
    free(b.dead);
    if (!ok)
        ydoc_stream_free(out);
    return ok;
}

/* ---- emitting ---- */

struct emit_ctx {
    yaml_emitter_t e;
    struct ydoc_error *err;
};

static int write_handler(void *data, unsigned char *buffer, size_t size)
{
    struct pgr_buf *out = data;
    pgr_buf_add(out, (const char *)buffer, size);
    return !out->failed;
}

static int emit_fail(struct emit_ctx *c, const char *what)
{
    c->err->line = c->err->column = 0;
    snprintf(c->err->message, sizeof c->err->message, "YAML emitter: %s",
             what ? what : (c->e.problem ? c->e.problem : "failed"));
    return 0;
}

static int emit_event(struct emit_ctx *c, yaml_event_t *ev, int initialized)
{
    if (!initialized)
        return emit_fail(c, "a string is not valid UTF-8");
    if (!yaml_emitter_emit(&c->e, ev))
        return emit_fail(c, NULL);
    return 1;
}

static int emit_plain(struct emit_ctx *c, const char *text)
{
    yaml_event_t ev;
    int init = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1,
                                            1, YAML_PLAIN_SCALAR_STYLE);
    return emit_event(c, &ev, init);
}

/* Strings YAML 1.1 readers other than go-yaml take for sexagesimal numbers ("1:20") or timestamps
 * ("2024-01-01"): quoted on output, as go-yaml does, so every reader sees a string. */
static int other_readers_type(const char *s, size_t len)
{
    size_t i = 0;
    if (len >= 5 && s[4] == '-') {
        while (i < 4 && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == 4)
            return 1;
        i = 0;
    }
    if (i < len && (s[i] == '+' || s[i] == '-'))
        i++;
    if (i >= len || s[i] < '0' || s[i] > '9')
        return 0;
    int colon = 0;
    for (; i < len; i++) {
        if (s[i] == ':')
            colon = 1;
        else if (!(s[i] >= '0' && s[i] <= '9') && s[i] != '_' && s[i] != '.')
            return 0;
    }
    return colon;
}

static int emit_string(struct emit_ctx *c, const char *s, size_t len)
{
    struct ydoc_node probe = { 0 };
    yaml_scalar_style_t style = YAML_PLAIN_SCALAR_STYLE;
    if (ydoc_resolve(s, len, &probe) != YDOC_STR || (len == 2 && memcmp(s, "<<", 2) == 0) ||
        other_readers_type(s, len))
        style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    else if (memchr(s, '\n', len))
        style = YAML_LITERAL_SCALAR_STYLE;
    yaml_event_t ev;
    int init = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, 1, 1, style);
    return emit_event(c, &ev, init);
}

/* The shortest text that reads back as this very float (never as an int). */
static void float_text(double f, char out[40])
{
    if (isnan(f)) {
        strcpy(out, ".nan");
        return;
    }
    if (isinf(f)) {
        strcpy(out, f > 0 ? ".inf" : "-.inf");
        return;
    }
    for (int p = 15; p <= 17; p++) {
        snprintf(out, 40, "%.*g", p, f);
        if (strtod(out, NULL) == f)
            break;
    }
    if (!strpbrk(out, ".e"))
        strcat(out, ".0");
}

static int emit_node(struct emit_ctx *c, const struct ydoc_node *n)
{
    char buf[40];
    yaml_event_t ev;
    switch (n->type) {
    case YDOC_NULL:
        return emit_plain(c, "null");
    case YDOC_BOOL:
        return emit_plain(c, n->b ? "true" : "false");
    case YDOC_INT:
        snprintf(buf, sizeof buf, "%lld", n->i);
        return emit_plain(c, buf);
    case YDOC_FLOAT:
        float_text(n->f, buf);
        return emit_plain(c, buf);
    case YDOC_STR:
        return emit_string(c, n->s, n->len);
    case YDOC_SEQ:
        if (!emit_event(c, &ev, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                                     YAML_BLOCK_SEQUENCE_STYLE)))
            return 0;
        for (size_t i = 0; i < n->n; i++)
            if (!emit_node(c, n->items[i]))
                return 0;
        return emit_event(c, &ev, yaml_sequence_end_event_initialize(&ev));
    case YDOC_MAP:
        if (!emit_event(c, &ev,
                        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)))
            return 0;
        for (size_t i = 0; i < n->n; i++)
            if (!emit_string(c, n->pairs[i].key, n->pairs[i].keylen) || !emit_node(c, n->pairs[i].value))
                return 0;
        return emit_event(c, &ev, yaml_mapping_end_event_initialize(&ev));
    }
    return 0;
}

int ydoc_emit(struct ydoc_node *const *docs, size_t n, int explicit_start, struct pgr_buf *out,
              struct ydoc_error *err)
{
    struct emit_ctx c;
    memset(&c, 0, sizeof c);
    c.err = err;
    memset(err, 0, sizeof *err);
    if (!yaml_emitter_initialize(&c.e))
        return emit_fail(&c, "out of memory");
    yaml_emitter_set_output(&c.e, write_handler, out);
    yaml_emitter_set_unicode(&c.e, 1);
    yaml_emitter_set_width(&c.e, -1);
    yaml_emitter_set_indent(&c.e, 2);
    yaml_event_t ev;
    int ok = emit_event(&c, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
    for (size_t i = 0; ok && i < n; i++) {
        ok = emit_event(&c, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, !explicit_start)) &&
             emit_node(&c, docs[i]) && emit_event(&c, &ev, yaml_document_end_event_initialize(&ev, 1));
    }
    ok = ok && emit_event(&c, &ev, yaml_stream_end_event_initialize(&ev));
    ok = ok && (yaml_emitter_flush(&c.e) || emit_fail(&c, NULL));
    yaml_emitter_delete(&c.e);
    if (ok && out->failed)
        return emit_fail(&c, "out of memory");
    return ok;
}
