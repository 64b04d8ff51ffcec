/* errors.c — pgr.errors: the error value every pgr function returns as `nil, err`.
 * errors.new(code, message [, fields]) builds one; errors.is(v) recognises one. */
#include "lutil.h"

static int errors_new(lua_State *L)
{
    const char *code = luaL_checkstring(L, 1);
    const char *message = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushvalue(L, 3);
    } else {
        lua_newtable(L);
    }
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    pgr_set_error_mt(L, -1);
    return 1;
}

static int errors_is(lua_State *L)
{
    int is = 0;
    if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, PGR_ERROR_MT);
        is = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushboolean(L, is);
    return 1;
}

int luaopen_pgr_errors(lua_State *L)
{
    static const luaL_Reg fns[] = { { "new", errors_new }, { "is", errors_is }, { NULL, NULL } };
    luaL_newlib(L, fns);
    return 1;
}
