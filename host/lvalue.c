/* lvalue.c — the encoders' common view of Lua values (see lvalue.h): kinds, the shared array/object
 * metatables, sorted keys, cycles and paths. Keeping it in one place keeps JSON and YAML agreeing. */
#include "lvalue.h"

#include "jsontext.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void push_mt(lua_State *L, const char *name, const char *kind)
{
    if (luaL_newmetatable(L, name)) {
        lua_pushstring(L, kind);
        lua_setfield(L, -2, "__jsontype");
    }
}

void pgr_push_array_mt(lua_State *L)
{
    push_mt(L, PGR_ARRAY_MT, "array");
}

void pgr_push_object_mt(lua_State *L)
{
    push_mt(L, PGR_OBJECT_MT, "object");
}

/* Returns 1 for array_mt, 2 for object_mt, 0 otherwise. */
static int marked(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    int r = 0;
    luaL_getmetatable(L, PGR_ARRAY_MT);
    if (lua_rawequal(L, -1, -2))
        r = 1;
    lua_pop(L, 1);
    if (!r) {
        luaL_getmetatable(L, PGR_OBJECT_MT);
        if (lua_rawequal(L, -1, -2))
            r = 2;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return r;
}

enum pgr_lkind pgr_lvalue_kind(lua_State *L, int idx, size_t *n, const char **why)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL:
        return PGR_LK_NULL;
    case LUA_TBOOLEAN:
        return PGR_LK_BOOL;
    case LUA_TNUMBER:
        return lua_isinteger(L, idx) ? PGR_LK_INT : PGR_LK_FLOAT;
    case LUA_TSTRING:
        return PGR_LK_STRING;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return PGR_LK_NULL;
        *why = "a light userdata other than json.null";
        return PGR_LK_BAD;
    case LUA_TTABLE:
        break;
    default:
        *why = lua_typename(L, lua_type(L, idx));
        return PGR_LK_BAD;
    }

    int mark = marked(L, idx);
    if (mark == 2)
        return PGR_LK_OBJECT;
    size_t count = 0, strings = 0, ints = 0;
    lua_Integer max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        int isnum;
        lua_Integer k = lua_tointegerx(L, -2, &isnum);
        if (lua_type(L, -2) == LUA_TNUMBER && isnum && k >= 1) {
            ints++;
            if (k > max)
                max = k;
        } else if (lua_type(L, -2) == LUA_TSTRING) {
            strings++;
        }
        lua_pop(L, 1);
    }
    if (mark == 1) {
        if (ints != count || (size_t)max != count) {
            *why = "a json.array table with keys other than 1..n";
            return PGR_LK_BAD;
        }
        *n = count;
        return PGR_LK_ARRAY;
    }
    if (count == 0 || strings == count)
        return PGR_LK_OBJECT;
    if (ints == count && (size_t)max == count) {
        *n = count;
        return PGR_LK_ARRAY;
    }
    if (ints == count)
        *why = "a sparse array (keys are integers but not 1..n; mark it with json.object to write an "
               "object)";
    else if (ints + strings == count)
        *why = "a table mixing array and object keys";
    else
        *why = "a table with keys that are neither strings nor positive integers (mark it with "
               "json.object to write numbers as keys)";
    return PGR_LK_BAD;
}

static int key_cmp(const void *a, const void *b)
{
    const struct pgr_lkey *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

struct pgr_lkey *pgr_lvalue_sorted_keys(lua_State *L, int idx, size_t *count, const char **why)
{
    idx = lua_absindex(L, idx);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        n++;
        lua_pop(L, 1);
    }
    struct pgr_lkey *keys = lua_newuserdatauv(L, (n ? n : 1) * sizeof *keys, 0);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        struct pgr_lkey *k = &keys[i++];
        memset(k, 0, sizeof *k);
        k->type = lua_type(L, -1);
        if (k->type == LUA_TSTRING) {
            /* the table holds the key string, so the pointer outlives this loop */
            k->s = lua_tolstring(L, -1, &k->len);
        } else if (k->type == LUA_TNUMBER) {
            if (lua_isinteger(L, -1)) {
                k->isint = 1;
                k->i = lua_tointeger(L, -1);
                snprintf(k->num, sizeof k->num, "%lld", (long long)k->i);
            } else {
                k->f = lua_tonumber(L, -1);
                if (pgr_json_format_double(k->num, (double)k->f) < 0)
                    snprintf(k->num, sizeof k->num, "%g", (double)k->f);
            }
            k->s = k->num;
            k->len = strlen(k->num);
        } else {
            lua_pop(L, 2);
            *why = "an object key that is neither a string nor a number";
            return NULL;
        }
    }
    /* k->s may point into the entry itself, so sort fixes those pointers up afterwards */
    qsort(keys, n, sizeof *keys, key_cmp);
    for (i = 0; i < n; i++)
        if (keys[i].type == LUA_TNUMBER)
            keys[i].s = keys[i].num;
    for (i = 1; i < n; i++) {
        if (key_cmp(&keys[i - 1], &keys[i]) == 0) {
            lua_pop(L, 1);
            *why = "an object with two keys that write the same text (a number and a string)";
            return NULL;
        }
    }
    *count = n;
    return keys;
}

void pgr_lvalue_get(lua_State *L, int idx, const struct pgr_lkey *k)
{
    idx = lua_absindex(L, idx);
    if (k->type == LUA_TSTRING)
        lua_pushlstring(L, k->s, k->len);
    else if (k->isint)
        lua_pushinteger(L, k->i);
    else
        lua_pushnumber(L, k->f);
    lua_rawget(L, idx);
}

void pgr_lpath_format(const struct pgr_lpath *p, char *out, size_t size)
{
    const struct pgr_lpath *chain[64];
    size_t n = 0;
    for (; p && n < 64; p = p->up)
        chain[n++] = p;
    size_t len = (size_t)snprintf(out, size, "$");
    while (n-- > 0 && len < size) {
        const struct pgr_lpath *q = chain[n];
        if (q->key)
            len += (size_t)snprintf(out + len, size - len, ".%.*s", (int)(q->keylen > 60 ? 60 : q->keylen),
                                    q->key);
        else
            len += (size_t)snprintf(out + len, size - len, "[%zu]", q->index);
    }
}

int pgr_lvalue_enter(lua_State *L, int seen_idx, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, seen_idx) != LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen_idx);
    return 1;
}

void pgr_lvalue_leave(lua_State *L, int seen_idx, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, seen_idx);
}
