/* yamldoc.h — the pure C half of pgr.yaml: a libyaml event stream becomes a tree of documents with
 * anchors, aliases and merge keys resolved and plain scalars typed as Kubernetes (go-yaml v2) reads
 * them; and a tree is emitted back as block-style YAML. No Lua here. */
#ifndef PGR_YAMLDOC_H
#define PGR_YAMLDOC_H

#include <stddef.h>

#include "jsontext.h"

enum ydoc_type { YDOC_NULL, YDOC_BOOL, YDOC_INT, YDOC_FLOAT, YDOC_STR, YDOC_SEQ, YDOC_MAP };

struct ydoc_node;

struct ydoc_pair {
    char *key; /* mapping keys are strings (Kubernetes turns int/bool/float keys into their text) */
    size_t keylen;
    struct ydoc_node *value;
    int merged; /* came from a "<<" merge key (parser's bookkeeping) */
};

struct ydoc_node {
    enum ydoc_type type;
    int b;
    long long i;
    double f;
    char *s; /* YDOC_STR: NUL-terminated, but may contain NULs: use len */
    size_t len;
    size_t n, cap;           /* YDOC_SEQ: items; YDOC_MAP: pairs */
    struct ydoc_node **items;
    struct ydoc_pair *pairs;
};

struct ydoc_limits {
    size_t max_alias_nodes; /* nodes an alias (or merge) may copy in all, the alias-bomb bound */
    size_t max_depth;       /* nesting of sequences and mappings */
    size_t max_alias_bytes; /* bytes those copies may take in all (strings, keys, nodes): a few
                             * aliases of a long string are a bomb too; 0 = the default */
};

#define YDOC_DEFAULT_ALIAS_NODES 100000
#define YDOC_DEFAULT_DEPTH 1000
#define YDOC_DEFAULT_ALIAS_BYTES ((size_t)16 << 20)

struct ydoc_error {
    int line, column; /* 1-based; 0 when unknown */
    char message[256];
};

struct ydoc_stream {
    struct ydoc_node **docs; /* documents with content; empty documents ("---" alone) are dropped */
    size_t n;
};

/* Parses s[0..len). Returns 1 with *out filled (free with ydoc_stream_free), or 0 with *err. lim may
 * be NULL for the defaults. */
int ydoc_parse(const char *s, size_t len, const struct ydoc_limits *lim, struct ydoc_stream *out,
               struct ydoc_error *err);
void ydoc_stream_free(struct ydoc_stream *st);

/* How a plain (unquoted, untagged) scalar reads: sets the node's type and value (strings are not
 * copied: the type is YDOC_STR and s/len are left alone). Mirrors go-yaml v2's resolve(): YAML 1.1
 * booleans (y/yes/on/true... n/no/off/false), ~/null/empty, ints in decimal, 0x, 0o, 0b and 0-octal
 * with '_' separators, floats, .inf/.nan; a uint64 beyond int64 becomes a float. */
enum ydoc_type ydoc_resolve(const char *s, size_t len, struct ydoc_node *out);

/* Building trees (for the encoder). Every function returns NULL / 0 when out of memory. */
struct ydoc_node *ydoc_new(enum ydoc_type type);
struct ydoc_node *ydoc_new_str(const char *s, size_t len);
int ydoc_seq_push(struct ydoc_node *seq, struct ydoc_node *item);
int ydoc_map_push(struct ydoc_node *map, const char *key, size_t keylen, struct ydoc_node *value);
void ydoc_free(struct ydoc_node *n);

/* 1 when s[0..len) is valid UTF-8 (what a YAML stream must be). */
int ydoc_utf8_valid(const char *s, size_t len);

/* Emits docs as block-style YAML into out: strings that would read back as another type are
 * quoted, multi-line strings use literal blocks, floats always read back as floats. explicit_start
 * writes "---" before every document. Returns 1, or 0 with *err. */
int ydoc_emit(struct ydoc_node *const *docs, size_t n, int explicit_start, struct pgr_buf *out,
              struct ydoc_error *err);

#endif
