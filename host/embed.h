/* embed.h — the Lua library compiled into the binary and the native bindings' preload table.
 * Both tables are generated at build time (host/tools/); embed.c installs them into a state. */
#ifndef PGR_EMBED_H
#define PGR_EMBED_H

#include <lua.h>
#include <stddef.h>

struct pgr_embedded {
    const char *module;   /* "pgr.cli" */
    const char *chunk;    /* "@lua/pgr/cli.lua", shown in tracebacks */
    const char *source;
    size_t len;
};

struct pgr_preload {
    const char *module;   /* "pgr.json" */
    lua_CFunction open;
};

extern const struct pgr_embedded pgr_embedded[];
extern const struct pgr_preload pgr_preloads[];

/* Opens the standard libraries, registers every binding in package.preload and inserts the
 * searcher that looks in PGR_PATH, /etc/pgr/lua, then the embedded copy, before package.path. */
void pgr_embed_open(lua_State *L);

#endif
