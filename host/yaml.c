/* yaml.c — pgr.yaml: YAML streams <-> Lua values. decode (multi-document, typed as Kubernetes reads
 * YAML), encode and encode_all (block style, sorted keys). The work is in yamldoc.c. */
/*
 * API
 *   yaml.decode(s [, {max_alias_nodes=100000, max_depth=1000, max_alias_bytes=16 MiB}]) -> {doc, ...} | nil, err
 *       err.code "yaml", err.line, err.column (1-based; 0 when unknown)
 *   yaml.encode(v) -> text of one document (no "---") | nil, err
 *   yaml.encode_all({doc, ...}) -> "---" before each document | nil, err
 *   yaml.null, yaml.array_mt, yaml.object_mt are json.null, json.array_mt, json.object_mt
 * Decisions
 *   - Types as Kubernetes reads YAML (sigs.k8s.io/yaml -> go-yaml v2): y/yes/on/true and
 *     n/no/off/false in three casings are booleans (also as keys: "y:" is the key "true"); ~, null and
 *     empty are json.null; 0x, 0o, 0b and 0-octal ints with '_'; quoted scalars are strings;
 *     timestamps stay strings; ints beyond int64 become floats; keys become strings.
 *   - Empty documents are dropped. Duplicate keys: the last wins. Merge keys (<<) are supported.
 *   - Aliases are copied; copies count against max_alias_nodes and max_alias_bytes (the alias-bomb
 *     bounds: many small nodes, or a few copies of a long string).
 *   - Encoding shares pgr.json's table rules; keys are sorted; strings that would read back as
 *     another type are double-quoted; floats keep a fraction ("2.0"); strings must be UTF-8.
 */
#include "jsontext.h"
#include "lutil.h"
#include "lvalue.h"
#include "yamldoc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_BOX "pgr.yaml.stream"
#define TREE_BOX "pgr.yaml.tree"
#define BUF_BOX "pgr.yaml.buffer"

/* Parsed streams, trees being built and output buffers are owned by userdata boxes, so a Lua error
 * in the middle frees them through __gc. */
static int stream_gc(lua_State *L)
{
    ydoc_stream_free(luaL_checkudata(L, 1, STREAM_BOX));
    return 0;
}

struct tree_box {
    struct ydoc_node **docs;
    size_t n;
};

static int tree_gc(lua_State *L)
{
    struct tree_box *t = luaL_checkudata(L, 1, TREE_BOX);
    struct ydoc_stream st = { t->docs, t->n };
    ydoc_stream_free(&st);
    t->docs = NULL;
    t->n = 0;
    return 0;
}

static int buf_gc(lua_State *L)
{
    pgr_buf_free(luaL_checkudata(L, 1, BUF_BOX));
    return 0;
}

static void push_node(lua_State *L, const struct ydoc_node *n, int amt, int omt)
{
    luaL_checkstack(L, 4, "YAML nesting");
    switch (n->type) {
    case YDOC_NULL:
        pgr_push_null(L);
        break;
    case YDOC_BOOL:
        lua_pushboolean(L, n->b);
        break;
    case YDOC_INT:
        lua_pushinteger(L, (lua_Integer)n->i);
        break;
    case YDOC_FLOAT:
        lua_pushnumber(L, (lua_Number)n->f);
        break;
    case YDOC_STR:
        lua_pushlstring(L, n->s, n->len);
        break;
    case YDOC_SEQ:
        lua_createtable(L, (int)n->n, 0);
        for (size_t i = 0; i < n->n; i++) {
            push_node(L, n->items[i], amt, omt);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_pushvalue(L, amt);
        lua_setmetatable(L, -2);
        break;
    case YDOC_MAP:
        lua_createtable(L, 0, (int)n->n);
        for (size_t i = 0; i < n->n; i++) {
            lua_pushlstring(L, n->pairs[i].key, n->pairs[i].keylen);
            push_node(L, n->pairs[i].value, amt, omt);
            lua_rawset(L, -3);
        }
        lua_pushvalue(L, omt);
        lua_setmetatable(L, -2);
        break;
    }
}

/* decode(s [, {max_alias_nodes=, max_depth=, max_alias_bytes=}]) -> {doc, ...} | nil, err{code="yaml", line, column} */
static int yaml_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    struct ydoc_limits lim = {
        (size_t)pgr_opt_integer(L, 2, "max_alias_nodes", YDOC_DEFAULT_ALIAS_NODES),
        (size_t)pgr_opt_integer(L, 2, "max_depth", YDOC_DEFAULT_DEPTH),
        (size_t)pgr_opt_integer(L, 2, "max_alias_bytes", (lua_Integer)YDOC_DEFAULT_ALIAS_BYTES),
    };
    struct ydoc_stream *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    luaL_setmetatable(L, STREAM_BOX);
    struct ydoc_error err;
    if (!ydoc_parse(s, len, &lim, st, &err)) {
        pgr_fail(L, "yaml", "%s", err.message);
        lua_pushinteger(L, err.line);
        lua_setfield(L, -2, "line");
        lua_pushinteger(L, err.column);
        lua_setfield(L, -2, "column");
        return 2;
    }
    /* the marks sit on the stack once instead of a registry lookup per table */
    pgr_push_array_mt(L);
    int amt = lua_gettop(L);
    pgr_push_object_mt(L);
    int omt = lua_gettop(L);
    lua_createtable(L, (int)st->n, 0);
    for (size_t i = 0; i < st->n; i++) {
        push_node(L, st->docs[i], amt, omt);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushvalue(L, amt);
    lua_setmetatable(L, -2);
    ydoc_stream_free(st);
    return 1;
}

struct builder {
    lua_State *L;
    int seen;
    char err[320];
};

static int build_fail(struct builder *b, const struct pgr_lpath *path, const char *what)
{
    char where[200];
    pgr_lpath_format(path, where, sizeof where);
    snprintf(b->err, sizeof b->err, "cannot encode %s at %s", what, where);
    return 0;
}

/* Builds the node for the value at idx into *slot (already linked into an owned tree, so nothing
 * leaks if a Lua error unwinds us). */
static int build(struct builder *b, int idx, struct ydoc_node **slot, const struct pgr_lpath *path,
                 int depth)
{
    lua_State *L = b->L;
    idx = lua_absindex(L, idx);
    size_t n = 0;
    const char *why = NULL;
    enum pgr_lkind kind = pgr_lvalue_kind(L, idx, &n, &why);
    struct ydoc_node *node = NULL;
    switch (kind) {
    case PGR_LK_BAD:
        return build_fail(b, path, why);
    case PGR_LK_NULL:
        node = ydoc_new(YDOC_NULL);
        break;
    case PGR_LK_BOOL:
        if ((node = ydoc_new(YDOC_BOOL)))
            node->b = lua_toboolean(L, idx);
        break;
    case PGR_LK_INT:
        if ((node = ydoc_new(YDOC_INT)))
            node->i = (long long)lua_tointeger(L, idx);
        break;
    case PGR_LK_FLOAT:
        if ((node = ydoc_new(YDOC_FLOAT)))
            node->f = (double)lua_tonumber(L, idx);
        break;
    case PGR_LK_STRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (!ydoc_utf8_valid(s, len))
            return build_fail(b, path, "a string that is not valid UTF-8 (base64-encode binary data)");
        node = ydoc_new_str(s, len);
        break;
    }
    case PGR_LK_ARRAY:
        node = ydoc_new(YDOC_SEQ);
        break;
    case PGR_LK_OBJECT:
        node = ydoc_new(YDOC_MAP);
        break;
    }
    if (!node)
        return build_fail(b, path, "a value: out of memory");
    *slot = node;
    if (kind != PGR_LK_ARRAY && kind != PGR_LK_OBJECT)
        return 1;

    if (depth >= YDOC_DEFAULT_DEPTH)
        return build_fail(b, path, "a value nested deeper than 1000 levels");
    if (!pgr_lvalue_enter(L, b->seen, idx))
        return build_fail(b, path, "a table that contains itself (cycle)");
    luaL_checkstack(L, 6, "YAML nesting");
    int ok = 1;
    if (kind == PGR_LK_ARRAY) {
        for (size_t i = 1; ok && i <= n; i++) {
            if (!ydoc_seq_push(node, NULL)) {
                ok = build_fail(b, path, "an array: out of memory");
                break;
            }
            struct pgr_lpath here = { path, NULL, 0, i };
            lua_rawgeti(L, idx, (lua_Integer)i);
            ok = build(b, -1, &node->items[node->n - 1], &here, depth + 1);
            lua_pop(L, 1);
        }
    } else {
        size_t count = 0;
        struct pgr_lkey *keys = pgr_lvalue_sorted_keys(L, idx, &count, &why);
        if (!keys) {
            pgr_lvalue_leave(L, b->seen, idx);
            return build_fail(b, path, why);
        }
        for (size_t i = 0; ok && i < count; i++) {
            struct pgr_lpath here = { path, keys[i].s, keys[i].len, 0 };
            if (!ydoc_utf8_valid(keys[i].s, keys[i].len)) {
                ok = build_fail(b, &here, "a key that is not valid UTF-8");
                break;
            }
            if (!ydoc_map_push(node, keys[i].s, keys[i].len, NULL)) {
                ok = build_fail(b, path, "an object: out of memory");
                break;
            }
            pgr_lvalue_get(L, idx, &keys[i]);
            ok = build(b, -1, &node->pairs[node->n - 1].value, &here, depth + 1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1); /* the keys */
    }
    pgr_lvalue_leave(L, b->seen, idx);
    return ok;
}

/* Emits the values at stack slots first..first+count-1 as documents. */
static int emit(lua_State *L, int first, size_t count, int explicit_start)
{
    struct tree_box *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->docs = NULL;
    t->n = 0;
    luaL_setmetatable(L, TREE_BOX);
    struct pgr_buf *out = lua_newuserdatauv(L, sizeof *out, 0);
    memset(out, 0, sizeof *out);
    luaL_setmetatable(L, BUF_BOX);
    lua_newtable(L);
    struct builder b = { L, lua_gettop(L), "" };

    t->docs = calloc(count ? count : 1, sizeof *t->docs);
    if (!t->docs)
        return pgr_fail(L, "yaml", "out of memory encoding YAML");
    t->n = count;
    for (size_t i = 0; i < count; i++) {
        struct pgr_lpath doc = { NULL, NULL, 0, i + 1 };
        if (!build(&b, first + (int)i, &t->docs[i], explicit_start ? &doc : NULL, 0))
            return pgr_fail(L, "yaml", "%s", b.err);
    }
    struct ydoc_error err;
    if (!ydoc_emit(t->docs, t->n, explicit_start, out, &err))
        return pgr_fail(L, "yaml", "%s", err.message);
    lua_pushlstring(L, out->data ? out->data : "", out->len);
    pgr_buf_free(out);
    return 1;
}

/* encode(v) -> YAML text of one document | nil, err{code="yaml"} */
static int yaml_encode(lua_State *L)
{
    lua_settop(L, 1);
    return emit(L, 1, 1, 0);
}

/* encode_all(docs) -> YAML stream, "---" before each document | nil, err */
static int yaml_encode_all(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    size_t n = 0;
    const char *why = NULL;
    enum pgr_lkind kind = pgr_lvalue_kind(L, 1, &n, &why);
    if (kind == PGR_LK_OBJECT && n == 0) {
        lua_pushnil(L);
        if (lua_next(L, 1))
            return luaL_argerror(L, 1, "expected an array of documents");
    } else if (kind != PGR_LK_ARRAY) {
        return luaL_argerror(L, 1, "expected an array of documents");
    }
    luaL_checkstack(L, (int)n + 8, "too many documents");
    for (size_t i = 1; i <= n; i++)
        lua_rawgeti(L, 1, (lua_Integer)i);
    return emit(L, 2, n, 1);
}

int luaopen_pgr_yaml(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "decode", yaml_decode }, { "encode", yaml_encode }, { "encode_all", yaml_encode_all }, { NULL, NULL },
    };
    static const luaL_Reg stream_meta[] = { { "__gc", stream_gc }, { "__close", stream_gc }, { NULL, NULL } };
    static const luaL_Reg tree_meta[] = { { "__gc", tree_gc }, { "__close", tree_gc }, { NULL, NULL } };
    static const luaL_Reg buf_meta[] = { { "__gc", buf_gc }, { "__close", buf_gc }, { NULL, NULL } };
    pgr_new_class(L, STREAM_BOX, NULL, stream_meta);
    pgr_new_class(L, TREE_BOX, NULL, tree_meta);
    pgr_new_class(L, BUF_BOX, NULL, buf_meta);
    luaL_newlib(L, fns);
    pgr_push_null(L);
    lua_setfield(L, -2, "null");
    pgr_push_array_mt(L);
    lua_setfield(L, -2, "array_mt");
    pgr_push_object_mt(L);
    lua_setfield(L, -2, "object_mt");
    return 1;
}
