/* embed.c — makes the embedded Lua library and the native bindings loadable with require.
 * Order of search: package.preload (C bindings), PGR_PATH dirs, /etc/pgr/lua, embedded, package.path.
 * pgr runs as root: a module from disk loads only from a place no other user may write (trust.h),
 * and nothing loads relative to the current directory. */
#include "embed.h"
#include "trust.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PGR_SITE_LUA "/etc/pgr/lua"

static const struct pgr_embedded *find_embedded(const char *name)
{
    for (const struct pgr_embedded *e = pgr_embedded; e->module; e++)
        if (strcmp(e->module, name) == 0)
            return e;
    return NULL;
}

/* Try DIR/a/b.lua, then DIR/a/b/init.lua, for module a.b. On success leaves the loader and the
 * file name on the stack and returns 2; otherwise leaves the stack as it was and returns 0. */
static int try_dir(lua_State *L, const char *dir, size_t dirlen, const char *name)
{
    static const char *const suffixes[] = { ".lua", "/init.lua" };
    const char *rel = luaL_gsub(L, name, ".", "/");
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, dir, dirlen);
        luaL_addchar(&b, '/');
        luaL_addstring(&b, rel);
        luaL_addstring(&b, suffixes[i]);
        luaL_pushresult(&b);
        const char *file = lua_tostring(L, -1);
        FILE *f = fopen(file, "r");
        if (!f) {
            lua_pop(L, 1);
            continue;
        }
        fclose(f);
        char why[1024];
        if (pgr_trust_path(file, PGR_TRUST_FILE, why, sizeof why) == -1)
            luaL_error(L, "refusing to load module '%s' from '%s': %s", name, file, why);
        if (luaL_loadfile(L, file) != LUA_OK)
            luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
                       lua_tostring(L, -1));
        lua_insert(L, -2);  /* rel, loader, file */
        lua_remove(L, -3);  /* loader, file */
        return 2;
    }
    lua_pop(L, 1);
    return 0;
}

static int searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *env = getenv("PGR_PATH");
    if (env && *env) {
        const char *p = env;
        while (*p) {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len > 0 && try_dir(L, p, len, name))
                return 2;
            if (!end)
                break;
            p = end + 1;
        }
    }
    if (try_dir(L, PGR_SITE_LUA, strlen(PGR_SITE_LUA), name))
        return 2;
    const struct pgr_embedded *e = find_embedded(name);
    if (!e) {
        lua_pushfstring(L, "no embedded module '%s'", name);
        return 1;
    }
    if (luaL_loadbufferx(L, e->source, e->len, e->chunk, "t") != LUA_OK)
        return luaL_error(L, "error loading embedded module '%s':\n\t%s", name, lua_tostring(L, -1));
    lua_pushstring(L, e->chunk + 1);
    return 2;
}

/* pgr.embedded.load(name) -> function | nil, msg: the embedded chunk itself, never a copy on disk
 * (the service procedures built into the binary: services.spire, ...) */
static int embedded_load(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const struct pgr_embedded *e = find_embedded(name);
    if (!e) {
        lua_pushnil(L);
        lua_pushfstring(L, "no embedded chunk '%s'", name);
        return 2;
    }
    if (luaL_loadbufferx(L, e->source, e->len, e->chunk, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* pgr.embedded: the list of embedded module names, so `pgr help` can find every pgr.cmd.*; its
 * field load is embedded_load */
static int embedded_list(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, embedded_load);
    lua_setfield(L, -2, "load");
    int i = 1;
    for (const struct pgr_embedded *e = pgr_embedded; e->module; e++) {
        lua_pushstring(L, e->module);
        lua_rawseti(L, -2, i++);
    }
    for (const struct pgr_preload *p = pgr_preloads; p->module; p++) {
        lua_pushstring(L, p->module);
        lua_rawseti(L, -2, i++);
    }
    return 1;
}

/* package.path / cpath without the entries relative to the current directory (Lua's "./?.lua",
 * "./?.so"): `pgr bakcups` run as root in a user's directory must not load ./pgr/cmd/bakcups.lua. */
static void drop_relative(lua_State *L, const char *field)
{
    lua_getfield(L, -1, field);
    const char *path = lua_tostring(L, -1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int first = 1;
    for (const char *p = path ? path : ""; *p;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0 && p[0] == '/') {
            if (!first)
                luaL_addchar(&b, ';');
            luaL_addlstring(&b, p, len);
            first = 0;
        }
        if (!end)
            break;
        p = end + 1;
    }
    luaL_pushresult(&b);
    lua_setfield(L, -3, field);
    lua_pop(L, 1);
}

void pgr_embed_open(lua_State *L)
{
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    drop_relative(L, "path");
    drop_relative(L, "cpath");
    lua_getfield(L, -1, "preload");
    for (const struct pgr_preload *p = pgr_preloads; p->module; p++) {
        lua_pushcfunction(L, p->open);
        lua_setfield(L, -2, p->module);
    }
    lua_pushcfunction(L, embedded_list);
    lua_setfield(L, -2, "pgr.embedded");
    lua_pop(L, 1);
    /* insert after the preload searcher: PGR_PATH / site dir / embedded win over package.path */
    lua_getfield(L, -1, "searchers");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);
}
