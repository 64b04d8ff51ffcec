/* lutil.c — the shared binding helpers declared in lutil.h: error tables, option reading,
 * userdata classes. No binding of its own; pgr.errors (errors.c) exposes the error type to Lua. */
#include "lutil.h"

#include <stdio.h>

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, 1, "code");
        lua_pushfstring(L, "error %s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no message)");
    }
    return 1;
}

void pgr_set_error_mt(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (luaL_newmetatable(L, PGR_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "pgr.error");
        lua_setfield(L, -2, "__name");
    }
    lua_setmetatable(L, idx);
}

void pgr_push_verror(lua_State *L, const char *code, const char *fmt, va_list ap)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, code ? code : "error");
    lua_setfield(L, -2, "code");
    lua_pushvfstring(L, fmt, ap);
    lua_setfield(L, -2, "message");
    pgr_set_error_mt(L, -1);
}

void pgr_push_error(lua_State *L, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pgr_push_verror(L, code, fmt, ap);
    va_end(ap);
}

int pgr_fail(lua_State *L, const char *code, const char *fmt, ...)
{
    lua_pushnil(L);
    va_list ap;
    va_start(ap, fmt);
    pgr_push_verror(L, code, fmt, ap);
    va_end(ap);
    return 2;
}

/* Pushes field of the options table, or nothing (returns 0) when absent. */
static int opt_field(lua_State *L, int idx, const char *field)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    if (lua_getfield(L, idx, field) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

static int opt_type_error(lua_State *L, int idx, const char *field, const char *expected)
{
    return luaL_argerror(L, idx, lua_pushfstring(L, "field '%s' must be %s, got %s", field, expected,
                                                 luaL_typename(L, -1)));
}

const char *pgr_opt_string(lua_State *L, int idx, const char *field, const char *def)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, field))
        return def;
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        opt_type_error(L, idx, field, "a string");
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive: it is still referenced by the options table */
    return s;
}

lua_Integer pgr_opt_integer(lua_State *L, int idx, const char *field, lua_Integer def)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, field))
        return def;
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok)
        opt_type_error(L, idx, field, "an integer");
    lua_pop(L, 1);
    return v;
}

lua_Number pgr_opt_number(lua_State *L, int idx, const char *field, lua_Number def)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, field))
        return def;
    int ok;
    lua_Number v = lua_tonumberx(L, -1, &ok);
    if (!ok)
        opt_type_error(L, idx, field, "a number");
    lua_pop(L, 1);
    return v;
}

int pgr_opt_boolean(lua_State *L, int idx, const char *field, int def)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, field))
        return def;
    if (!lua_isboolean(L, -1))
        opt_type_error(L, idx, field, "a boolean");
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

void pgr_new_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta)
{
    luaL_newmetatable(L, name);
    if (meta)
        luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    if (methods)
        luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
