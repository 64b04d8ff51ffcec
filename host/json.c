/* json.c — pgr.json: JSON text <-> Lua values. decode/encode, the json.null sentinel, and the
 * array/object marks that keep [] and {} apart through a decode-modify-encode round trip. */
/*
 * API
 *   json.decode(s) -> value | nil, err     err.code "json", err.offset (0-based byte), err.line, err.column
 *   json.encode(v [, {indent=true}]) -> string | nil, err
 *   json.null                              light userdata NULL: decodes from and encodes to null
 *   json.array([t]) / json.object([t])     mark t (or a new table) to encode as [] / {}; returns it
 *   json.array_mt / json.object_mt         the marks; decoded arrays and objects carry them
 * Decisions
 *   - An unmarked table: keys exactly 1..n -> array; empty or all-string keys -> object ("{}": use
 *     json.array() for an empty list); mixed or sparse keys -> error. Marked objects may have number
 *     keys (written as their text).
 *   - Object keys are written sorted bytewise. Strings are passed through byte for byte; control
 *     characters are escaped. Invalid UTF-8 is not checked.
 *   - Integers are written exactly. Floats use the shortest text that reads back the same; integral
 *     floats below 2^63 are written as integers ("3"), as Go does. NaN and infinities are errors.
 *   - Decoding gives integers for integer-valued numbers (so 1.0 -> 1). cJSON parses numbers as
 *     doubles: integers are exact up to 2^53; beyond they round, and from 2^63 on they are floats.
 *   - "\u0000" in input is refused (cJSON would silently truncate the string).
 *   - Nesting is limited to 1000 levels both ways (cJSON's limit); cycles are errors.
 */
#include "jsontext.h"
#include "lutil.h"
#include "lvalue.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TREE_BOX "pgr.json.tree"
#define BUF_BOX "pgr.json.buffer"
#define MAX_DEPTH 1000

/* The cJSON tree and the output buffer live in userdata boxes, so a Lua error (out of memory)
 * while converting frees them through __gc instead of leaking. */
struct tree_box {
    cJSON *root;
};

static int tree_gc(lua_State *L)
{
    struct tree_box *t = luaL_checkudata(L, 1, TREE_BOX);
    cJSON_Delete(t->root);
    t->root = NULL;
    return 0;
}

static int buf_gc(lua_State *L)
{
    pgr_buf_free(luaL_checkudata(L, 1, BUF_BOX));
    return 0;
}

static void push_tree(lua_State *L, const cJSON *item, int amt, int omt)
{
    luaL_checkstack(L, 4, "JSON nesting");
    if (cJSON_IsNull(item)) {
        pgr_push_null(L);
    } else if (cJSON_IsTrue(item)) {
        lua_pushboolean(L, 1);
    } else if (cJSON_IsFalse(item)) {
        lua_pushboolean(L, 0);
    } else if (cJSON_IsNumber(item)) {
        double d = item->valuedouble;
        /* cJSON keeps only the double: integers are exact up to 2^53 */
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
            lua_pushinteger(L, (lua_Integer)d);
        else
            lua_pushnumber(L, d);
    } else if (cJSON_IsString(item)) {
        lua_pushstring(L, item->valuestring);
    } else if (cJSON_IsArray(item)) {
        lua_createtable(L, cJSON_GetArraySize(item), 0);
        lua_Integer i = 1;
        for (const cJSON *c = item->child; c; c = c->next) {
            push_tree(L, c, amt, omt);
            lua_rawseti(L, -2, i++);
        }
        lua_pushvalue(L, amt);
        lua_setmetatable(L, -2);
    } else if (cJSON_IsObject(item)) {
        lua_createtable(L, 0, cJSON_GetArraySize(item));
        for (const cJSON *c = item->child; c; c = c->next) {
            lua_pushstring(L, c->string);
            push_tree(L, c, amt, omt);
            lua_rawset(L, -3);
        }
        lua_pushvalue(L, omt);
        lua_setmetatable(L, -2);
    } else {
        pgr_push_null(L);
    }
}

/* decode(s) -> value | nil, err{code="json", offset, line, column} */
static int json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    struct pgr_json_error err;
    struct tree_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->root = NULL;
    luaL_setmetatable(L, TREE_BOX);
    box->root = pgr_json_parse(s, len, &err);
    if (!box->root) {
        pgr_fail(L, "json", "%s", err.message);
        lua_pushinteger(L, (lua_Integer)err.offset);
        lua_setfield(L, -2, "offset");
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
    push_tree(L, box->root, amt, omt);
    cJSON_Delete(box->root);
    box->root = NULL;
    return 1;
}

struct encoder {
    lua_State *L;
    struct pgr_buf *b;
    int seen;   /* stack index of the cycle-detection table */
    int indent; /* pretty-print with two spaces per level */
    char err[320];
};

static int enc_fail(struct encoder *e, const struct pgr_lpath *path, const char *what)
{
    char where[200];
    pgr_lpath_format(path, where, sizeof where);
    snprintf(e->err, sizeof e->err, "cannot encode %s at %s", what, where);
    return 0;
}

static void newline(struct encoder *e, int depth)
{
    if (!e->indent)
        return;
    pgr_buf_addc(e->b, '\n');
    for (int i = 0; i < depth; i++)
        pgr_buf_add(e->b, "  ", 2);
}

static int encode_value(struct encoder *e, int idx, const struct pgr_lpath *path, int depth)
{
    lua_State *L = e->L;
    idx = lua_absindex(L, idx);
    size_t n = 0;
    const char *why = NULL;
    char num[32];
    enum pgr_lkind kind = pgr_lvalue_kind(L, idx, &n, &why);
    switch (kind) {
    case PGR_LK_NULL:
        pgr_buf_add(e->b, "null", 4);
        return 1;
    case PGR_LK_BOOL:
        pgr_buf_adds(e->b, lua_toboolean(L, idx) ? "true" : "false");
        return 1;
    case PGR_LK_INT:
        pgr_buf_add(e->b, num, (size_t)pgr_json_format_integer(num, (long long)lua_tointeger(L, idx)));
        return 1;
    case PGR_LK_FLOAT: {
        int len = pgr_json_format_double(num, (double)lua_tonumber(L, idx));
        if (len < 0)
            return enc_fail(e, path, "NaN or infinity (JSON has no such number)");
        pgr_buf_add(e->b, num, (size_t)len);
        return 1;
    }
    case PGR_LK_STRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        pgr_json_quote(e->b, s, len);
        return 1;
    }
    case PGR_LK_BAD:
        return enc_fail(e, path, why);
    case PGR_LK_ARRAY:
    case PGR_LK_OBJECT:
        break;
    }
    if (depth >= MAX_DEPTH)
        return enc_fail(e, path, "a value nested deeper than 1000 levels");
    if (!pgr_lvalue_enter(L, e->seen, idx))
        return enc_fail(e, path, "a table that contains itself (cycle)");
    luaL_checkstack(L, 6, "JSON nesting");

    int ok = 1;
    if (kind == PGR_LK_ARRAY) {
        pgr_buf_addc(e->b, '[');
        for (size_t i = 1; ok && i <= n; i++) {
            if (i > 1)
                pgr_buf_addc(e->b, ',');
            newline(e, depth + 1);
            struct pgr_lpath here = { path, NULL, 0, i };
            lua_rawgeti(L, idx, (lua_Integer)i);
            ok = encode_value(e, -1, &here, depth + 1);
            lua_pop(L, 1);
        }
        if (ok && n)
            newline(e, depth);
        pgr_buf_addc(e->b, ']');
    } else {
        size_t count = 0;
        struct pgr_lkey *keys = pgr_lvalue_sorted_keys(L, idx, &count, &why);
        if (!keys) {
            pgr_lvalue_leave(L, e->seen, idx);
            return enc_fail(e, path, why);
        }
        pgr_buf_addc(e->b, '{');
        for (size_t i = 0; ok && i < count; i++) {
            if (i)
                pgr_buf_addc(e->b, ',');
            newline(e, depth + 1);
            pgr_json_quote(e->b, keys[i].s, keys[i].len);
            pgr_buf_add(e->b, ": ", e->indent ? 2 : 1);
            struct pgr_lpath here = { path, keys[i].s, keys[i].len, 0 };
            pgr_lvalue_get(L, idx, &keys[i]);
            ok = encode_value(e, -1, &here, depth + 1);
            lua_pop(L, 1);
        }
        if (ok && count)
            newline(e, depth);
        pgr_buf_addc(e->b, '}');
        lua_pop(L, 1); /* the keys */
    }
    pgr_lvalue_leave(L, e->seen, idx);
    return ok;
}

/* encode(v [, {indent=true}]) -> string | nil, err{code="json"} */
static int json_encode(lua_State *L)
{
    int indent = pgr_opt_boolean(L, 2, "indent", 0);
    lua_settop(L, 2);
    struct pgr_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BUF_BOX);
    lua_newtable(L);
    struct encoder e = { L, b, lua_gettop(L), indent, "" };
    if (!encode_value(&e, 1, NULL, 0))
        return pgr_fail(L, "json", "%s", e.err);
    if (b->failed)
        return pgr_fail(L, "json", "out of memory encoding JSON");
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    pgr_buf_free(b);
    return 1;
}

static int mark(lua_State *L, void (*push_mt)(lua_State *))
{
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    else
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    push_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

/* array([t]) -> t marked to encode as a JSON array (a new empty one without t) */
static int json_array(lua_State *L)
{
    return mark(L, pgr_push_array_mt);
}

/* object([t]) -> t marked to encode as a JSON object */
static int json_object(lua_State *L)
{
    return mark(L, pgr_push_object_mt);
}

int luaopen_pgr_json(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "decode", json_decode }, { "encode", json_encode }, { "array", json_array },
        { "object", json_object }, { NULL, NULL },
    };
    static const luaL_Reg tree_meta[] = { { "__gc", tree_gc }, { "__close", tree_gc }, { NULL, NULL } };
    static const luaL_Reg buf_meta[] = { { "__gc", buf_gc }, { "__close", buf_gc }, { NULL, NULL } };
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
