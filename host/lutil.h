/* lutil.h — helpers every binding shares: error tables ({code=, message=} with __tostring, as
 * STYLE.md asks), option fields read from a table argument, and the typed-userdata idiom. */
#ifndef PGR_LUTIL_H
#define PGR_LUTIL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdarg.h>

#define PGR_ERROR_MT "pgr.error"

/* Pushes an error table {code=CODE, message=formatted}; its metatable gives __tostring = message.
 * The caller may add fields (lua_setfield on the table at the top). */
void pgr_push_error(lua_State *L, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pgr_push_verror(lua_State *L, const char *code, const char *fmt, va_list ap);

/* The ordinary-failure return: pushes nil and an error table, returns 2 (`return pgr_fail(...)`). */
int pgr_fail(lua_State *L, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets metatable pgr.error on the table at idx (used by pgr.errors.new). */
void pgr_set_error_mt(lua_State *L, int idx);

/* Optional fields of an options table at idx (idx may be none or nil: defaults apply).
 * A field of the wrong type raises an argument error naming the field. */
const char *pgr_opt_string(lua_State *L, int idx, const char *field, const char *def);
lua_Integer pgr_opt_integer(lua_State *L, int idx, const char *field, lua_Integer def);
lua_Number pgr_opt_number(lua_State *L, int idx, const char *field, lua_Number def);
int pgr_opt_boolean(lua_State *L, int idx, const char *field, int def);

/* Registers a metatable for a userdata type: NAME, methods as __index, plus the given metamethods
 * (which should include __gc and __close). Leaves nothing on the stack. */
void pgr_new_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta);

#endif
