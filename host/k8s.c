/* k8s.c — pgr.k8s.core: the byte mechanics of talking to a Kubernetes API server over httpcore: a
 * client (server, TLS, auth) sending one request at a time, and watch streams read one line at a time.
 *
 * Lua (lua/pgr/k8s.lua) decides everything else: JSON, Status errors, retries, resuming watches.
 *
 *   core.client{server=, ca_file=, ca_data=, insecure=, cert_file=, cert_data=, key_file=, key_data=,
 *               token=, username=, password=, timeout=s, connect_timeout=s} -> client | nil, err
 *   client:request(method, path, body|nil, content_type|nil [, {timeout=s, accept=}])
 *       -> status, body, headers (lower-case names) | nil, err {code=<httpcore kind>, message=}
 *   client:watch(path [, {timeout=s, idle=s, connect_timeout=s}])
 *       -> stream | nil, err (err.status, err.body on an HTTP error); timeout bounds the whole
 *       stream, idle aborts it after that many seconds without a byte (both default: none)
 *   stream:next(wait_s) -> line | false (nothing within wait_s) | nil (end of stream) | nil, err
 *   client:exec(path [, {connect_timeout=s, handshake_timeout=s, max_message=n, v4_only=bool}])
 *       -> session | nil, err (err.status, err.body when the server refused the upgrade)
 *       the path is /api/v1/namespaces/NS/pods/NAME/exec?command=...; the session (execcore.h):
 *   session:next(wait_s) -> "data", channel, bytes | false (nothing within wait_s, or the stdin queue
 *       drained) | "end", close_code, reason | nil, err
 *   session:send(bytes [, channel=0]) -> true | nil, err;  session:close_stdin() -> true | nil, err
 *   session:pending() -> bytes queued;  session:protocol() -> "v5.channel.k8s.io" | "v4.channel.k8s.io"
 *   client:close(), stream:close(), session:close()   (also __gc / __close; safe twice) */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "execcore.h"
#include "httpcore.h"
#include "lutil.h"

#define CLIENT_MT "pgr.k8s.client"
#define STREAM_MT "pgr.k8s.watch"
#define EXEC_MT "pgr.k8s.exec"
/* A watch line is one object; anything bigger than this is not an API server talking. */
#define MAX_LINE (64u << 20)
#define READ_CHUNK 65536

/* The settings a client keeps so that each watch can get its own connection (httpcore: one
 * transfer per client). */
enum { F_SERVER, F_CA_FILE, F_CA_DATA, F_CERT_FILE, F_CERT_DATA, F_KEY_FILE, F_KEY_DATA, F_TOKEN,
       F_USERNAME, F_PASSWORD, F_NFIELDS };
static const char *const field_names[F_NFIELDS] = {
    "server", "ca_file", "ca_data", "cert_file", "cert_data", "key_file", "key_data", "token",
    "username", "password" };

typedef struct {
    char *f[F_NFIELDS];
    int insecure;
    long timeout_ms, connect_timeout_ms;
    pgr_http_client *http;
} k8s_client;

typedef struct {
    pgr_http_client *http;  /* the stream's own connection; NULL once closed */
    char *url;              /* must outlive the transfer ... */
    pgr_http_request rq;    /* ... as must the request and the response (httpcore keeps */
    pgr_http_response rs;   /* pointers to both and counts received bytes into rs) */
    char *buf;              /* bytes read and not yet returned */
    size_t len, cap;
    int eof;
} k8s_stream;

static void wipe_free(char *s)
{
    if (s) {
        /* tokens and passwords do not linger in freed memory */
        volatile char *p = s;
        while (*p) *p++ = 0;
        free(s);
    }
}

static void client_release(k8s_client *c)
{
    if (c->http) {
        pgr_http_client_free(c->http);
        c->http = NULL;
    }
    for (int i = 0; i < F_NFIELDS; i++) {
        wipe_free(c->f[i]);
        c->f[i] = NULL;
    }
}

static void fill_config(const k8s_client *c, pgr_http_config *cfg_out)
{
    pgr_http_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.cainfo = c->f[F_CA_FILE];
    cfg.ca_pem = c->f[F_CA_DATA];
    cfg.insecure = c->insecure;
    cfg.cert_file = c->f[F_CERT_FILE];
    cfg.cert_pem = c->f[F_CERT_DATA];
    cfg.key_file = c->f[F_KEY_FILE];
    cfg.key_pem = c->f[F_KEY_DATA];
    cfg.bearer_token = c->f[F_TOKEN];
    if (!c->f[F_TOKEN]) {
        cfg.username = c->f[F_USERNAME];
        cfg.password = c->f[F_PASSWORD];
    }
    cfg.timeout_ms = c->timeout_ms;
    cfg.connect_timeout_ms = c->connect_timeout_ms;
    *cfg_out = cfg;
}

/* Every connection of a client (requests, watches, exec sessions) gets the same TLS and credentials. */
static pgr_http_client *make_http(const k8s_client *c, pgr_http_error *err)
{
    pgr_http_config cfg;
    fill_config(c, &cfg);
    return pgr_http_client_new(&cfg, err);
}

static k8s_client *check_client(lua_State *L)
{
    k8s_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (!c->f[F_SERVER]) luaL_argerror(L, 1, "client is closed");
    return c;
}

static int push_http_error(lua_State *L, const pgr_http_error *err)
{
    return pgr_fail(L, err->kind ? err->kind : "error", "%s", err->message);
}

static long seconds_ms(lua_State *L, int idx, const char *field, lua_Number def)
{
    lua_Number s = pgr_opt_number(L, idx, field, def);
    if (s < 0) luaL_argerror(L, idx, "timeouts must not be negative");
    return (long)(s * 1000.0 + 0.5);
}

static int k8s_client_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *server = pgr_opt_string(L, 1, "server", NULL);
    if (!server || !*server) return luaL_argerror(L, 1, "server is required");
    /* read every option before any allocation, so that a bad one raises without leaking */
    const char *vals[F_NFIELDS];
    for (int i = 0; i < F_NFIELDS; i++) vals[i] = pgr_opt_string(L, 1, field_names[i], NULL);
    int insecure = pgr_opt_boolean(L, 1, "insecure", 0);
    long timeout_ms = seconds_ms(L, 1, "timeout", 30);
    long connect_ms = seconds_ms(L, 1, "connect_timeout", 10);

    k8s_client *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, CLIENT_MT);
    c->insecure = insecure;
    c->timeout_ms = timeout_ms;
    c->connect_timeout_ms = connect_ms;
    for (int i = 0; i < F_NFIELDS; i++) {
        if (vals[i] && *vals[i]) {
            c->f[i] = strdup(vals[i]);
            if (!c->f[i]) {
                client_release(c);
                return pgr_fail(L, "memory", "out of memory");
            }
        }
    }
    /* a trailing slash would double with every path */
    size_t n = strlen(c->f[F_SERVER]);
    while (n > 0 && c->f[F_SERVER][n - 1] == '/') c->f[F_SERVER][--n] = 0;
    pgr_http_error err;
    c->http = make_http(c, &err);
    if (!c->http) {
        client_release(c);
        return push_http_error(L, &err);
    }
    return 1;
}

static int k8s_client_close(lua_State *L)
{
    k8s_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_release(c);
    return 0;
}

static int k8s_client_server(lua_State *L)
{
    k8s_client *c = check_client(L);
    lua_pushstring(L, c->f[F_SERVER]);
    return 1;
}

/* Builds server + path into a malloc'd string; NULL when out of memory. */
static char *join_url(const k8s_client *c, const char *path)
{
    size_t a = strlen(c->f[F_SERVER]), b = strlen(path);
    char *url = malloc(a + b + 2);
    if (!url) return NULL;
    memcpy(url, c->f[F_SERVER], a);
    size_t o = a;
    if (b == 0 || path[0] != '/') url[o++] = '/';
    memcpy(url + o, path, b + 1);
    return url;
}

static void push_headers(lua_State *L, const pgr_http_response *rs)
{
    lua_createtable(L, 0, (int)rs->nheaders);
    for (size_t i = 0; i < rs->nheaders; i++) {
        char name[128];
        size_t k = 0;
        for (const char *p = rs->headers[i].name; *p && k + 1 < sizeof name; p++)
            name[k++] = (char)tolower((unsigned char)*p);
        name[k] = 0;
        if (lua_getfield(L, -1, name) == LUA_TSTRING) {
            /* repeated headers (Warning) are joined, as HTTP allows */
            lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), rs->headers[i].value);
            lua_remove(L, -2);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, rs->headers[i].value);
        }
        lua_setfield(L, -2, name);
    }
}

static int k8s_request(lua_State *L)
{
    k8s_client *c = check_client(L);
    const char *method = luaL_checkstring(L, 2);
    const char *path = luaL_checkstring(L, 3);
    size_t body_len = 0;
    const char *body = luaL_optlstring(L, 4, NULL, &body_len);
    const char *ctype = luaL_optstring(L, 5, NULL);
    if (!lua_isnoneornil(L, 6)) luaL_checktype(L, 6, LUA_TTABLE);
    long timeout_ms = seconds_ms(L, 6, "timeout", 0);
    const char *accept = pgr_opt_string(L, 6, "accept", "application/json");

    /* header lines live on the Lua stack (owned) while the request runs */
    const char *hdrs[3];
    int nh = 0;
    lua_pushfstring(L, "Accept: %s", accept);
    hdrs[nh++] = lua_tostring(L, -1);
    if (ctype) {
        lua_pushfstring(L, "Content-Type: %s", ctype);
        hdrs[nh++] = lua_tostring(L, -1);
    }
    hdrs[nh] = NULL;

    char *url = join_url(c, path);
    if (!url) return pgr_fail(L, "memory", "out of memory");
    pgr_http_request rq;
    memset(&rq, 0, sizeof rq);
    rq.method = method;
    rq.url = url;
    rq.headers = hdrs;
    if (body) {
        rq.body = body;
        rq.body_len = body_len;
    }
    rq.timeout_ms = timeout_ms;
    rq.decompress = 1;
    pgr_http_response rs;
    pgr_http_response_init(&rs);
    pgr_http_error err;
    int rc = pgr_http_perform(c->http, &rq, &rs, &err);
    free(url);
    if (rc != 0) {
        pgr_http_response_free(&rs);
        return push_http_error(L, &err);
    }
    /* copy everything out before the first Lua allocation that might raise */
    lua_pushinteger(L, rs.status);
    lua_pushlstring(L, rs.body ? rs.body : "", rs.body ? rs.body_len : 0);
    push_headers(L, &rs);
    pgr_http_response_free(&rs);
    return 3;
}

static void stream_release(k8s_stream *s)
{
    if (s->http) {
        pgr_http_stream_close(s->http);
        pgr_http_client_free(s->http);
        s->http = NULL;
    }
    pgr_http_response_free(&s->rs);
    free(s->url);
    s->url = NULL;
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

static int k8s_watch(lua_State *L)
{
    k8s_client *c = check_client(L);
    const char *path = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    long connect_ms = seconds_ms(L, 3, "connect_timeout", c->connect_timeout_ms / 1000.0);
    long total_ms = seconds_ms(L, 3, "timeout", 0);
    long idle_s = (long)pgr_opt_integer(L, 3, "idle", 0);
    long open_ms = seconds_ms(L, 3, "open_timeout", 0);

    k8s_stream *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    pgr_http_response_init(&s->rs);
    luaL_setmetatable(L, STREAM_MT);
    pgr_http_error err;
    s->http = make_http(c, &err);
    if (!s->http) return push_http_error(L, &err);
    s->url = join_url(c, path);
    if (!s->url) {
        stream_release(s);
        return pgr_fail(L, "memory", "out of memory");
    }
    static const char *const hdrs[] = { "Accept: application/json", NULL };
    pgr_http_request *rq = &s->rq;
    rq->method = "GET";
    rq->url = s->url;
    rq->headers = hdrs;
    /* a watch lasts as long as the server keeps it (timeoutSeconds); the reader bounds each wait,
     * and a silent connection (no event, no bookmark for `idle` seconds) counts as cut */
    rq->timeout_ms = total_ms > 0 ? total_ms : -1;
    rq->connect_timeout_ms = connect_ms > 0 ? connect_ms : 0;
    rq->low_speed_limit = idle_s > 0 ? 1 : -1;
    rq->low_speed_time = idle_s > 0 ? idle_s : -1;
    rq->open_timeout_ms = open_ms;
    if (pgr_http_stream_open(s->http, rq, &s->rs, &err) != 0) {
        stream_release(s);
        return push_http_error(L, &err);
    }
    long status = s->rs.status;
    if (status >= 200 && status < 300) return 1;

    /* an HTTP error (410, 403, ...): its body is a Status the caller decodes */
    char chunk[8192];
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t total = 0;
    for (;;) {
        long n = pgr_http_stream_read(s->http, chunk, sizeof chunk, 10000, &err);
        if (n <= 0 || total > (1u << 20)) break;
        luaL_addlstring(&b, chunk, (size_t)n);
        total += (size_t)n;
    }
    luaL_pushresult(&b);
    stream_release(s);
    pgr_push_error(L, "http", "watch %s: HTTP %d", path, (int)status);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_rotate(L, -2, 1);
    lua_setfield(L, -2, "body");
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* Returns the index just past the first '\n' in the buffer, or 0. */
static size_t line_end(const k8s_stream *s)
{
    const char *nl = s->len ? memchr(s->buf, '\n', s->len) : NULL;
    return nl ? (size_t)(nl - s->buf) + 1 : 0;
}

static int push_line(lua_State *L, k8s_stream *s, size_t end)
{
    size_t n = end;
    while (n > 0 && (s->buf[n - 1] == '\n' || s->buf[n - 1] == '\r')) n--;
    lua_pushlstring(L, s->buf, n);
    memmove(s->buf, s->buf + end, s->len - end);
    s->len -= end;
    return 1;
}

static int k8s_stream_next(lua_State *L)
{
    k8s_stream *s = luaL_checkudata(L, 1, STREAM_MT);
    lua_Number wait = luaL_optnumber(L, 2, 0);
    if (wait < 0) wait = 0;
    double deadline_wait = wait * 1000.0;
    for (;;) {
        size_t end = line_end(s);
        /* skip blank lines (keep-alive newlines) */
        while (end == 1 || (end == 2 && s->buf[0] == '\r')) {
            memmove(s->buf, s->buf + end, s->len - end);
            s->len -= end;
            end = line_end(s);
        }
        if (end) return push_line(L, s, end);
        if (s->eof || !s->http) {
            if (s->len > 0) return push_line(L, s, s->len);  /* a last line without '\n' */
            lua_pushnil(L);
            return 1;
        }
        if (s->cap - s->len < READ_CHUNK) {
            if (s->cap >= MAX_LINE) {
                stream_release(s);
                return pgr_fail(L, "too_large", "watch: an event line exceeds %d bytes", (int)MAX_LINE);
            }
            size_t ncap = s->cap ? s->cap * 2 : 2 * READ_CHUNK;
            char *nb = realloc(s->buf, ncap);
            if (!nb) return pgr_fail(L, "memory", "out of memory");
            s->buf = nb;
            s->cap = ncap;
        }
        pgr_http_error err;
        long t0_wait = (long)deadline_wait;
        long n = pgr_http_stream_read(s->http, s->buf + s->len, s->cap - s->len, t0_wait, &err);
        if (n > 0) {
            s->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            s->eof = 1;
            continue;
        }
        if (n == PGR_HTTP_AGAIN) {
            lua_pushboolean(L, 0);
            return 1;
        }
        stream_release(s);
        return push_http_error(L, &err);
    }
}

static int k8s_stream_close(lua_State *L)
{
    k8s_stream *s = luaL_checkudata(L, 1, STREAM_MT);
    stream_release(s);
    return 0;
}

/* ---- exec sessions */

typedef struct {
    pgr_exec *x; /* NULL once closed */
} exec_box;

static int exec_fail(lua_State *L, pgr_exec_error *err)
{
    lua_pushnil(L);
    pgr_push_error(L, err->kind ? err->kind : "error", "%s", err->message);
    if (err->status) {
        lua_pushinteger(L, err->status);
        lua_setfield(L, -2, "status");
    }
    if (err->body) {
        lua_pushlstring(L, err->body, err->body_len);
        lua_setfield(L, -2, "body");
    }
    pgr_exec_error_clear(err);
    return 2;
}

static int k8s_exec(lua_State *L)
{
    k8s_client *c = check_client(L);
    const char *path = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    pgr_exec_options o;
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = seconds_ms(L, 3, "connect_timeout", c->connect_timeout_ms / 1000.0);
    o.handshake_timeout_ms = seconds_ms(L, 3, "handshake_timeout", c->timeout_ms / 1000.0);
    lua_Integer maxm = pgr_opt_integer(L, 3, "max_message", 0);
    if (maxm < 0) luaL_argerror(L, 3, "max_message must not be negative");
    o.max_message = (uint64_t)maxm;
    o.v4_only = pgr_opt_boolean(L, 3, "v4_only", 0);

    exec_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->x = NULL;
    luaL_setmetatable(L, EXEC_MT);
    char *url = join_url(c, path);
    if (!url) return pgr_fail(L, "memory", "out of memory");
    pgr_http_config cfg;
    fill_config(c, &cfg);
    o.url = url;
    pgr_exec_error err;
    b->x = pgr_exec_open(&cfg, &o, &err);
    free(url);
    if (!b->x) return exec_fail(L, &err);
    return 1;
}

static pgr_exec *check_exec(lua_State *L)
{
    exec_box *b = luaL_checkudata(L, 1, EXEC_MT);
    if (!b->x) luaL_argerror(L, 1, "exec session is closed");
    return b->x;
}

static int exec_next(lua_State *L)
{
    pgr_exec *x = check_exec(L);
    lua_Number wait = luaL_optnumber(L, 2, 0);
    long wait_ms = wait < 0 ? -1 : (long)(wait * 1000.0 + 0.5);
    pgr_exec_event ev;
    pgr_exec_error err;
    memset(&err, 0, sizeof err);
    int r = pgr_exec_next(x, wait_ms, &ev, &err);
    if (r < 0) return exec_fail(L, &err);
    if (r == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (ev.kind == PGR_EXEC_END) {
        lua_pushliteral(L, "end");
        lua_pushinteger(L, ev.close_code);
        lua_pushstring(L, ev.reason);
        return 3;
    }
    lua_pushliteral(L, "data");
    lua_pushinteger(L, ev.channel);
    lua_pushlstring(L, ev.data, ev.len);
    return 3;
}

static int exec_send(lua_State *L)
{
    pgr_exec *x = check_exec(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_Integer ch = luaL_optinteger(L, 3, PGR_EXEC_STDIN);
    luaL_argcheck(L, ch >= 0 && ch <= 254, 3, "a channel is 0..254");
    pgr_exec_error err;
    memset(&err, 0, sizeof err);
    if (pgr_exec_send(x, (int)ch, data, len, &err) != 0) return exec_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int exec_close_stdin(lua_State *L)
{
    pgr_exec *x = check_exec(L);
    pgr_exec_error err;
    memset(&err, 0, sizeof err);
    if (pgr_exec_close_stdin(x, &err) != 0) return exec_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int exec_pending(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)pgr_exec_pending(check_exec(L)));
    return 1;
}

static int exec_protocol(lua_State *L)
{
    lua_pushstring(L, pgr_exec_protocol(check_exec(L)));
    return 1;
}

static int exec_close(lua_State *L)
{
    exec_box *b = luaL_checkudata(L, 1, EXEC_MT);
    if (b->x) {
        pgr_exec_close(b->x);
        b->x = NULL;
    }
    return 0;
}

int luaopen_pgr_k8s_core(lua_State *L)
{
    static const luaL_Reg client_methods[] = {
        { "request", k8s_request }, { "watch", k8s_watch }, { "exec", k8s_exec }, { "close", k8s_client_close },
        { "server", k8s_client_server }, { NULL, NULL } };
    static const luaL_Reg client_meta[] = {
        { "__gc", k8s_client_close }, { "__close", k8s_client_close }, { NULL, NULL } };
    static const luaL_Reg stream_methods[] = {
        { "next", k8s_stream_next }, { "close", k8s_stream_close }, { NULL, NULL } };
    static const luaL_Reg stream_meta[] = {
        { "__gc", k8s_stream_close }, { "__close", k8s_stream_close }, { NULL, NULL } };
    pgr_new_class(L, CLIENT_MT, client_methods, client_meta);
    pgr_new_class(L, STREAM_MT, stream_methods, stream_meta);
    static const luaL_Reg exec_methods[] = {
        { "next", exec_next }, { "send", exec_send }, { "close_stdin", exec_close_stdin },
        { "pending", exec_pending }, { "protocol", exec_protocol }, { "close", exec_close }, { NULL, NULL } };
    static const luaL_Reg exec_meta[] = { { "__gc", exec_close }, { "__close", exec_close }, { NULL, NULL } };
    pgr_new_class(L, EXEC_MT, exec_methods, exec_meta);
    static const luaL_Reg fns[] = { { "client", k8s_client_new }, { NULL, NULL } };
    luaL_newlib(L, fns);
    return 1;
}
