/* http.c — pgr.http: the HTTP core (httpcore.h) for Lua scripts: http.client(cfg) handles with
 * keep-alive and a one-shot http.request(opts). Conversion only; the work is in httpcore.c. */
#include "cabundle.h"
#include "httpcore.h"
#include "lutil.h"

#include <stdlib.h>
#include <string.h>

#define CLIENT_MT "pgr.http.client"

typedef struct {
    pgr_http_client *c;
} client_box;

static int push_http_error(lua_State *L, const pgr_http_error *err)
{
    lua_pushnil(L);
    pgr_push_error(L, err->kind, "%s", err->message);
    lua_pushinteger(L, err->curl_code);
    lua_setfield(L, -2, "curl_code");
    return 2;
}

/* Reads the client-wide fields of the table at idx into cfg (strings stay owned by the table). */
static void read_config(lua_State *L, int idx, pgr_http_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->cainfo = pgr_opt_string(L, idx, "cainfo", NULL);
    cfg->ca_pem = pgr_opt_string(L, idx, "ca_pem", NULL);
    cfg->insecure = pgr_opt_boolean(L, idx, "insecure", 0);
    cfg->cert_file = pgr_opt_string(L, idx, "cert", NULL);
    cfg->key_file = pgr_opt_string(L, idx, "key", NULL);
    cfg->cert_pem = pgr_opt_string(L, idx, "cert_pem", NULL);
    cfg->key_pem = pgr_opt_string(L, idx, "key_pem", NULL);
    cfg->bearer_token = pgr_opt_string(L, idx, "bearer", NULL);
    cfg->username = pgr_opt_string(L, idx, "username", NULL);
    cfg->password = pgr_opt_string(L, idx, "password", NULL);
    cfg->user_agent = pgr_opt_string(L, idx, "user_agent", NULL);
    cfg->timeout_ms = (long)(pgr_opt_number(L, idx, "timeout", 0) * 1000);
    cfg->connect_timeout_ms = (long)(pgr_opt_number(L, idx, "connect_timeout", 0) * 1000);
    cfg->low_speed_limit = (long)pgr_opt_integer(L, idx, "low_speed_limit", 0);
    cfg->low_speed_time = (long)pgr_opt_integer(L, idx, "low_speed_time", 0);
}

/* headers = { ["Name"] = "value", ... } or { "Name: value", ... }: a NULL-terminated array kept in
 * a userdata pushed on the stack (so an error while building it leaks nothing). */
static const char **read_headers(lua_State *L, int opts)
{
    if (lua_getfield(L, opts, "headers") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return NULL;
    }
    if (!lua_istable(L, -1))
        luaL_argerror(L, opts, "field 'headers' must be a table");
    int t = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        n++;
        lua_pop(L, 1);
    }
    const char **arr = lua_newuserdatauv(L, (n + 1) * sizeof *arr, 1);
    /* the uservalue keeps the formatted lines alive as long as the array */
    lua_createtable(L, (int)n, 0);
    lua_setiuservalue(L, -2, 1);
    lua_getiuservalue(L, -1, 1);
    int keep = lua_gettop(L);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            if (!lua_isstring(L, -1))
                luaL_argerror(L, opts, "header values must be strings");
            lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
        } else {
            if (!lua_isstring(L, -1))
                luaL_argerror(L, opts, "header lines must be strings");
            lua_pushvalue(L, -1);
        }
        if (strpbrk(lua_tostring(L, -1), "\r\n"))
            luaL_argerror(L, opts, "a header must not contain CR or LF");
        arr[i] = lua_tostring(L, -1);
        lua_rawseti(L, keep, (lua_Integer)++i);
        lua_pop(L, 1);
    }
    arr[i] = NULL;
    lua_pop(L, 1);        /* keep */
    lua_replace(L, t);    /* array userdata where the headers table was */
    return arr;
}

static void push_response(lua_State *L, const pgr_http_response *rs)
{
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, rs->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)rs->nheaders);
    for (size_t i = 0; i < rs->nheaders; i++) {
        /* names lower-cased; repeated headers joined as HTTP allows */
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (const char *p = rs->headers[i].name; *p; p++)
            luaL_addchar(&b, (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p);
        luaL_pushresult(&b);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            lua_pushliteral(L, ", ");
            lua_pushstring(L, rs->headers[i].value);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, rs->headers[i].value);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, rs->body ? rs->body : "", rs->body_len);
    lua_setfield(L, -2, "body");
}

/* Performs the request described by the table at opts with client c. The response is owned by a
 * userdata while results are pushed. */
static int do_request(lua_State *L, pgr_http_client *c, int opts)
{
    luaL_checktype(L, opts, LUA_TTABLE);
    pgr_http_request rq;
    memset(&rq, 0, sizeof rq);
    rq.url = pgr_opt_string(L, opts, "url", NULL);
    if (!rq.url)
        return luaL_argerror(L, opts, "field 'url' is required");
    rq.method = pgr_opt_string(L, opts, "method", "GET");
    rq.body = pgr_opt_string(L, opts, "body", NULL);
    if (rq.body) {
        lua_getfield(L, opts, "body");
        rq.body_len = lua_rawlen(L, -1);
        lua_pop(L, 1);
    }
    rq.timeout_ms = (long)(pgr_opt_number(L, opts, "timeout", 0) * 1000);
    rq.connect_timeout_ms = (long)(pgr_opt_number(L, opts, "connect_timeout", 0) * 1000);
    rq.max_body = (size_t)pgr_opt_integer(L, opts, "max_body", 0);
    rq.decompress = pgr_opt_boolean(L, opts, "decompress", 0);
    rq.headers = read_headers(L, opts);
    pgr_http_response rs;
    pgr_http_response_init(&rs);
    pgr_http_error err;
    if (pgr_http_perform(c, &rq, &rs, &err) != 0) {
        pgr_http_response_free(&rs);
        return push_http_error(L, &err);
    }
    /* copy into a userdata-free form: if pushing raises, the response would leak, so move the
     * response into a box with __gc first */
    pgr_http_response *box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = rs;
    luaL_setmetatable(L, "pgr.http.response");
    push_response(L, box);
    pgr_http_response_free(box);
    return 1;
}

static int response_gc(lua_State *L)
{
    pgr_http_response_free(lua_touserdata(L, 1));
    return 0;
}

static client_box *check_client(lua_State *L)
{
    client_box *b = luaL_checkudata(L, 1, CLIENT_MT);
    if (!b->c)
        luaL_argerror(L, 1, "HTTP client is closed");
    return b;
}

/* http.client{cainfo=, ca_pem=, insecure=, cert=, key=, cert_pem=, key_pem=, bearer=, username=,
 *   password=, timeout=, connect_timeout=, low_speed_limit=, low_speed_time=, user_agent=} */
static int http_client(lua_State *L)
{
    pgr_http_config cfg;
    read_config(L, 1, &cfg);
    client_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->c = NULL;
    luaL_setmetatable(L, CLIENT_MT);
    pgr_http_error err;
    if (!(b->c = pgr_http_client_new(&cfg, &err)))
        return push_http_error(L, &err);
    return 1;
}

/* client:request{method=, url=, headers=, body=, timeout=, connect_timeout=, max_body=, decompress=}
 *   -> {status=, headers={lowercase=value}, body=} | nil, err */
static int client_request(lua_State *L)
{
    client_box *b = check_client(L);
    return do_request(L, b->c, 2);
}

static int client_close(lua_State *L)
{
    client_box *b = luaL_checkudata(L, 1, CLIENT_MT);
    pgr_http_client_free(b->c);
    b->c = NULL;
    return 0;
}

/* http.request{... client fields and request fields ...}: a one-shot client. */
static int http_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    http_client(L);
    if (lua_isnil(L, -2))
        return 2;
    client_box *b = lua_touserdata(L, -1);
    int n = do_request(L, b->c, 1);
    /* close now rather than at the next GC: the connection is not reused */
    pgr_http_client_free(b->c);
    b->c = NULL;
    return n;
}

static int http_urlencode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char *e = pgr_http_urlencode(s, len, lua_toboolean(L, 2));
    if (!e)
        return luaL_error(L, "out of memory");
    lua_pushstring(L, e);
    free(e);
    return 1;
}

/* http.ca_bundle() -> path | nil, err: the CA bundle used when a connection names none */
static int http_ca_bundle(lua_State *L)
{
    char path[1024], why[400];
    if (pgr_cabundle_find(path, sizeof path, why, sizeof why) != 0)
        return pgr_fail(L, "tls", "%s", why);
    lua_pushstring(L, path);
    return 1;
}

/* http.set_ca_file(path | nil): the site file's ca_file, tried after $CURL_CA_BUNDLE and
 * $SSL_CERT_FILE and before the system's paths */
static int http_set_ca_file(lua_State *L)
{
    const char *p = luaL_optstring(L, 1, NULL);
    if (pgr_cabundle_set_site(p) != 0)
        return luaL_error(L, "out of memory");
    return 0;
}

int luaopen_pgr_http(lua_State *L)
{
    static const luaL_Reg methods[] = { { "request", client_request }, { "close", client_close }, { NULL, NULL } };
    static const luaL_Reg meta[] = { { "__gc", client_close }, { "__close", client_close }, { NULL, NULL } };
    pgr_new_class(L, CLIENT_MT, methods, meta);
    static const luaL_Reg rmeta[] = { { "__gc", response_gc }, { NULL, NULL } };
    pgr_new_class(L, "pgr.http.response", NULL, rmeta);
    static const luaL_Reg funcs[] = {
        { "client", http_client },
        { "request", http_request },
        { "urlencode", http_urlencode },
        { "ca_bundle", http_ca_bundle },
        { "set_ca_file", http_set_ca_file },
        { NULL, NULL },
    };
    luaL_newlib(L, funcs);
    return 1;
}
