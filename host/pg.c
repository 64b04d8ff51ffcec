/* pg.c — pgr.pg: libpq connections as userdata (queries, commands, notices, password verifiers) and
 * the restore engine (host/restore.c) as pg.restore / pg.inspect. Arguments and results only.
 *
 *   pg.connect(conninfo | {host=, port=, user=, password=, dbname=, sslmode=, connect_timeout=, ...})
 *       -> conn | nil, err{code="connect"}       libpq conventions: PG* variables, service files;
 *       connect_timeout defaults to 10 s; the message never holds the password
 *   pg.connect_all({params, ...} [, {timeout=10}]) -> conns, errs   opened side by side (pgmulti.c):
 *       conns[i] a connection or false, errs[i] then its error (code "connect" or "timeout")
 *   conn:query(sql, ...) -> rows, info{columns=, command=, affected=} | nil, err
 *       $1.. parameters: string, number, boolean, nil (NULL). Values: int2/4/8 and oid -> integer,
 *       float4/8 -> float, bool -> boolean, NULL -> nil (the key is absent; info.columns lists
 *       every column), anything else (numeric too, to keep its precision) -> string
 *   conn:exec(sql) -> command status ("CREATE TABLE") | nil, err; several statements allowed
 *       err = {code="sql"|"connection_lost", message=, sqlstate=, severity=, detail=, hint=,
 *              position=, context=, table=, constraint=}
 *   conn:on_notice(fn | nil)            fn{message=, severity=, sqlstate=, detail=, hint=}
 *   conn:set_password(role, password) -> true | nil, err   (verifier computed client-side)
 *   conn:quote_ident(s), conn:quote_literal(s), conn:info(), conn:close()
 *   pg.quote_ident(s), pg.quote_literal(s)  the same quoting without a connection
 *   pg.restore(target, source, opts) -> result | nil, err{code=, message=, line=, offset=, result=}
 *   pg.inspect(source [, {first_row_max=4096}]) -> facts | nil, err
 */
#include "cabundle.h"
#include "lutil.h"
#include "pgmulti.h"
#include "restore.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONN_MT "pgr.pg.conn"
#define BOX_MT "pgr.pg.box"

struct conn {
    PGconn *c;
    lua_State *L;   /* the state of the call in progress, for the notice receiver */
    int notice_ref; /* LUA_NOREF or a registry reference to the notice callback */
    int in_notice;  /* the notice callback runs inside libpq: the connection must not be used */
};

/* ---------------------------------------------------------------- boxes: C memory owned by the stack */

enum { BOX_RESULT, BOX_PARAMS, BOX_RESTORE, BOX_INSPECT, BOX_FD, BOX_MEM };

struct box {
    int kind;
    void *p;
    int fd;
    /* connection parameters */
    const char **kw, **val;
    size_t n;
    struct rs_result rr;
    struct rs_inspection in;
};

static void box_release(struct box *b)
{
    switch (b->kind) {
    case BOX_RESULT:
        if (b->p)
            PQclear(b->p);
        break;
    case BOX_PARAMS:
        for (size_t i = 0; i < b->n; i++) {
            /* a password must not outlive the connect call in freed heap memory */
            if (b->val[i] && b->kw[i] && strstr(b->kw[i], "password"))
                explicit_bzero((void *)b->val[i], strlen(b->val[i]));
            free((void *)b->kw[i]);
            free((void *)b->val[i]);
        }
        free(b->kw);
        free(b->val);
        b->kw = b->val = NULL;
        b->n = 0;
        break;
    case BOX_RESTORE:
        rs_result_free(&b->rr);
        break;
    case BOX_INSPECT:
        rs_inspection_free(&b->in);
        break;
    case BOX_MEM:
        free(b->p);
        break;
    case BOX_FD:
        if (b->fd > 0)
            close(b->fd);
        b->fd = -1;
        break;
    }
    b->p = NULL;
}

static int box_gc(lua_State *L)
{
    box_release(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

static struct box *new_box(lua_State *L, int kind)
{
    struct box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->fd = -1;
    luaL_setmetatable(L, BOX_MT);
    return b;
}

/* ---------------------------------------------------------------- connection parameters */

static int box_add(struct box *b, const char *k, const char *v)
{
    const char **kw = realloc(b->kw, (b->n + 2) * sizeof *kw);
    if (!kw)
        return -1;
    b->kw = kw;
    const char **val = realloc(b->val, (b->n + 2) * sizeof *val);
    if (!val)
        return -1;
    b->val = val;
    char *kc = strdup(k), *vc = v ? strdup(v) : NULL;
    if (!kc || (v && !vc)) {
        free(kc);
        free(vc);
        return -1;
    }
    b->kw[b->n] = kc;
    b->val[b->n] = vc;
    b->n++;
    b->kw[b->n] = b->val[b->n] = NULL;
    return 0;
}

/* "password=secret" / "postgresql://u:secret@h": the message must not repeat the secret. */
static void redact(lua_State *L, const char *conninfo, const char *msg)
{
    char out[1024];
    rs_redact(conninfo, msg, out, sizeof out);
    lua_pushstring(L, out);
}

static const char *param(const struct box *b, const char *key, const char *env)
{
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->kw[i], key))
            return b->val[i];
    return getenv(env);
}

/* sslmode=verify-ca/verify-full with no root certificate named (sslrootcert, $PGSSLROOTCERT, libpq's
 * ~/.postgresql/root.crt): the system's CA bundle, found as for HTTPS (cabundle.c). 0, or -1 after
 * replacing the box at the top with nil, err. */
static int add_rootcert(lua_State *L, struct box *b)
{
    const char *mode = param(b, "sslmode", "PGSSLMODE");
    if (!mode || strncmp(mode, "verify-", 7) != 0)
        return 0;
    const char *root = param(b, "sslrootcert", "PGSSLROOTCERT");
    if (root && *root)
        return 0;
    const char *home = getenv("HOME");
    char own[1024];
    if (home && snprintf(own, sizeof own, "%s/.postgresql/root.crt", home) < (int)sizeof own &&
        access(own, R_OK) == 0)
        return 0;
    char ca[1024], why[400];
    if (pgr_cabundle_find(ca, sizeof ca, why, sizeof why) != 0) {
        lua_pop(L, 1);
        lua_pushnil(L);
        pgr_push_error(L, "connect", "sslmode=%s needs the CA of the server: %s (or sslrootcert=)", mode,
                       why);
        return -1;
    }
    if (box_add(b, "sslrootcert", ca) < 0)
        luaL_error(L, "out of memory");
    return 0;
}

/* Connection parameters from a conninfo string (key=value or URI; a bare word is a database name),
 * a table {host=, port=, ...} or a connection. Pushes a params box; returns it, or NULL after
 * pushing nil, err. */
static struct box *params_from(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    struct box *b = new_box(L, BOX_PARAMS);
    int t = lua_type(L, idx);
    int bad = 0;
    if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        if (strchr(s, '=') || strstr(s, "://")) {
            char *err = NULL;
            PQconninfoOption *opts = PQconninfoParse(s, &err);
            if (!opts) {
                lua_pop(L, 1);
                lua_pushnil(L);
                redact(L, s, err ? err : "invalid connection string");
                PQfreemem(err);
                const char *m = lua_tostring(L, -1);
                pgr_push_error(L, "connect", "invalid connection string: %s", m);
                lua_remove(L, -2);
                return NULL;
            }
            for (PQconninfoOption *o = opts; o->keyword; o++)
                if (o->val && box_add(b, o->keyword, o->val) < 0)
                    bad = 1;
            PQconninfoFree(opts);
        } else if (*s) {
            bad = box_add(b, "dbname", s) < 0;
        }
    } else if (t == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) == LUA_TSTRING && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
                lua_pushvalue(L, -1); /* tostring on a copy, never on the key lua_next walks */
                bad |= box_add(b, lua_tostring(L, -3), lua_tostring(L, -1)) < 0;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    } else if (t == LUA_TUSERDATA && luaL_testudata(L, idx, CONN_MT)) {
        struct conn *c = lua_touserdata(L, idx);
        if (!c->c) {
            lua_pop(L, 1);
            pgr_fail(L, "closed", "the connection is closed");
            return NULL;
        }
        PQconninfoOption *opts = PQconninfo(c->c);
        for (PQconninfoOption *o = opts; o && o->keyword; o++)
            if (o->val && *o->val && box_add(b, o->keyword, o->val) < 0)
                bad = 1;
        PQconninfoFree(opts);
    } else {
        luaL_argerror(L, idx, "conninfo string, parameter table or connection expected");
    }
    if (bad)
        luaL_error(L, "out of memory");
    int has_timeout = getenv("PGCONNECT_TIMEOUT") != NULL;
    for (size_t i = 0; i < b->n; i++)
        has_timeout |= !strcmp(b->kw[i], "connect_timeout");
    /* STYLE rule 5: no wait without a bound */
    if (!has_timeout)
        bad |= box_add(b, "connect_timeout", "10") < 0;
    bad |= box_add(b, "fallback_application_name", "pgr") < 0;
    if (bad)
        luaL_error(L, "out of memory");
    return add_rootcert(L, b) == 0 ? b : NULL;
}

/* ---------------------------------------------------------------- errors */

static void push_result_error(lua_State *L, PGconn *c, const PGresult *res)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    int gone = PQstatus(c) != CONNECTION_OK;
    if (primary) {
        pgr_push_error(L, gone ? "connection_lost" : "sql", "%s", primary);
    } else {
        const char *m = PQerrorMessage(c);
        size_t l = strlen(m);
        while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
            l--;
        lua_pushlstring(L, m, l);
        pgr_push_error(L, gone ? "connection_lost" : "sql", "%s", lua_tostring(L, -1));
        lua_remove(L, -2);
    }
    static const struct {
        int code;
        const char *name;
    } fields[] = { { PG_DIAG_SQLSTATE, "sqlstate" },   { PG_DIAG_SEVERITY_NONLOCALIZED, "severity" },
                   { PG_DIAG_MESSAGE_DETAIL, "detail" }, { PG_DIAG_MESSAGE_HINT, "hint" },
                   { PG_DIAG_CONTEXT, "context" },      { PG_DIAG_TABLE_NAME, "table" },
                   { PG_DIAG_CONSTRAINT_NAME, "constraint" } };
    for (size_t i = 0; res && i < sizeof fields / sizeof fields[0]; i++) {
        const char *v = PQresultErrorField(res, fields[i].code);
        if (v) {
            lua_pushstring(L, v);
            lua_setfield(L, -2, fields[i].name);
        }
    }
    const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    if (pos) {
        lua_pushinteger(L, atoi(pos));
        lua_setfield(L, -2, "position");
    }
}

/* ---------------------------------------------------------------- connections */

static struct conn *check_conn(lua_State *L, int idx)
{
    struct conn *c = luaL_checkudata(L, idx, CONN_MT);
    if (!c->c)
        luaL_argerror(L, idx, "the connection is closed");
    if (c->in_notice)
        luaL_error(L, "pgr.pg.conn: a notice callback cannot use its own connection (libpq is inside a call)");
    c->L = L;
    return c;
}

static void notice_receiver(void *arg, const PGresult *res);

static int notice_call(lua_State *L)
{
    const PGresult *res = lua_touserdata(L, 1);
    struct conn *c = lua_touserdata(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->notice_ref);
    lua_createtable(L, 0, 4);
    static const struct {
        int code;
        const char *name;
    } fields[] = { { PG_DIAG_MESSAGE_PRIMARY, "message" }, { PG_DIAG_SEVERITY_NONLOCALIZED, "severity" },
                   { PG_DIAG_SQLSTATE, "sqlstate" },       { PG_DIAG_MESSAGE_DETAIL, "detail" },
                   { PG_DIAG_MESSAGE_HINT, "hint" } };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *v = PQresultErrorField(res, fields[i].code);
        if (v) {
            lua_pushstring(L, v);
            lua_setfield(L, -2, fields[i].name);
        }
    }
    lua_call(L, 1, 0);
    return 0;
}

/* Called inside libpq: a Lua error must not unwind through it, so the callback runs protected and
 * its errors are dropped (a notice handler has nobody to report to). */
static void notice_receiver(void *arg, const PGresult *res)
{
    struct conn *c = arg;
    if (!c->L || c->notice_ref == LUA_NOREF || c->notice_ref == LUA_REFNIL)
        return;
    lua_State *L = c->L;
    if (!lua_checkstack(L, 8))
        return;
    lua_pushcfunction(L, notice_call);
    lua_pushlightuserdata(L, (void *)res);
    lua_pushlightuserdata(L, c);
    c->in_notice++;
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        lua_pop(L, 1);
    c->in_notice--;
}

static int pg_connect(lua_State *L)
{
    struct box *b = params_from(L, 1);
    if (!b)
        return 2;
    struct conn *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->c = NULL;
    c->L = L;
    c->notice_ref = LUA_NOREF;
    c->in_notice = 0;
    luaL_setmetatable(L, CONN_MT);
    c->c = PQconnectdbParams(b->kw, b->val, 0);
    box_release(b); /* the parameters (a password among them) are not needed any more */
    if (!c->c)
        return pgr_fail(L, "nomem", "out of memory");
    if (PQstatus(c->c) != CONNECTION_OK) {
        const char *m = PQerrorMessage(c->c);
        size_t l = strlen(m);
        while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
            l--;
        lua_pushlstring(L, m, l);
        PQfinish(c->c);
        c->c = NULL;
        pgr_push_error(L, "connect", "cannot connect to PostgreSQL: %s", lua_tostring(L, -1));
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    PQsetNoticeReceiver(c->c, notice_receiver, c);
    return 1;
}

/* pg.connect_all({params, ...} [, {timeout=10}]) -> list, errs: the connections opened side by side
 * (pgmulti.c), list[i] a connection or false, errs[i] its error then (code "connect", or "timeout" when
 * the deadline came first). The deadline bounds the whole call; connect_timeout is not used here. */
static int pg_connect_all(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_Number timeout = pgr_opt_number(L, 2, "timeout", 10);
    if (!(timeout > 0 && timeout <= 86400))
        return luaL_argerror(L, 2, "field 'timeout' must be between 0 and 86400 seconds");
    lua_settop(L, 2);
    lua_Integer n = luaL_len(L, 1);
    if (n < 0 || n > 10000)
        return luaL_argerror(L, 1, "between 0 and 10000 connections");
    luaL_checkstack(L, (int)n * 2 + 8, "too many connections");
    /* stack: 3 = the params boxes' table (their passwords are wiped once the attempts are made),
     * 4 = the connections, each owned by its userdata from the moment the core returns */
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    pgm_params *params = lua_newuserdatauv(L, sizeof *params * (size_t)(n ? n : 1), 0);
    PGconn **out = lua_newuserdatauv(L, sizeof *out * (size_t)(n ? n : 1), 0);
    enum pgm_outcome *oc = lua_newuserdatauv(L, sizeof *oc * (size_t)(n ? n : 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        struct box *b = params_from(L, -1);
        if (!b)
            return luaL_error(L, "pg.connect_all: connection %d: %s", (int)i, luaL_tolstring(L, -1, NULL));
        params[i - 1].kw = b->kw;
        params[i - 1].val = b->val;
        lua_rawseti(L, 3, i);
        lua_pop(L, 1);
        struct conn *c = lua_newuserdatauv(L, sizeof *c, 0);
        c->c = NULL;
        c->L = L;
        c->notice_ref = LUA_NOREF;
        c->in_notice = 0;
        luaL_setmetatable(L, CONN_MT);
        lua_rawseti(L, 4, i);
    }
    pgm_connect_all((size_t)n, params, (int)(timeout * 1000), out, oc);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 4, i);
        ((struct conn *)lua_touserdata(L, -1))->c = out[i - 1];
        lua_pop(L, 1);
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i);
        box_release(lua_touserdata(L, -1));
        lua_pop(L, 1);
    }
    lua_createtable(L, (int)n, 0); /* 8: the errors */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 4, i);
        struct conn *c = lua_touserdata(L, -1);
        if (oc[i - 1] == PGM_OK) {
            PQsetNoticeReceiver(c->c, notice_receiver, c);
            lua_pop(L, 1);
            continue;
        }
        if (oc[i - 1] == PGM_TIMED_OUT) {
            char secs[32];
            snprintf(secs, sizeof secs, "%g", (double)timeout);
            pgr_push_error(L, "timeout", "cannot connect to PostgreSQL: timeout expired after %s s", secs);
        } else if (oc[i - 1] == PGM_NOMEM || !c->c) {
            pgr_push_error(L, "nomem", "out of memory");
        } else {
            const char *m = PQerrorMessage(c->c);
            size_t l = strlen(m);
            while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
                l--;
            lua_pushlstring(L, m, l);
            pgr_push_error(L, "connect", "cannot connect to PostgreSQL: %s", lua_tostring(L, -1));
            lua_remove(L, -2);
        }
        lua_rawseti(L, 8, i);
        if (c->c) {
            PQfinish(c->c);
            c->c = NULL;
        }
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
        lua_rawseti(L, 4, i);
    }
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 8);
    return 2;
}

static int conn_close(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->in_notice)
        return luaL_error(L, "pgr.pg.conn: a notice callback cannot close its own connection (close it after "
                             "the call returns)");
    if (c->c) {
        PQfinish(c->c);
        c->c = NULL;
    }
    if (c->notice_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->notice_ref);
        c->notice_ref = LUA_NOREF;
    }
    return 0;
}

static int conn_tostring(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->c)
        lua_pushfstring(L, "pgr.pg.conn (%s@%s:%s/%s)", PQuser(c->c), PQhost(c->c), PQport(c->c), PQdb(c->c));
    else
        lua_pushliteral(L, "pgr.pg.conn (closed)");
    return 1;
}

static int conn_on_notice(lua_State *L)
{
    struct conn *c = check_conn(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    if (c->notice_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, c->notice_ref);
    c->notice_ref = LUA_NOREF;
    if (!lua_isnoneornil(L, 2)) {
        lua_pushvalue(L, 2);
        c->notice_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

static void push_value(lua_State *L, const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        lua_pushnil(L);
        return;
    }
    const char *v = PQgetvalue(res, row, col);
    switch (PQftype(res, col)) {
    case 16: /* bool */
        lua_pushboolean(L, v[0] == 't');
        return;
    case 20: /* int8 */
    case 21: /* int2 */
    case 23: /* int4 */
    case 26: /* oid */
        lua_pushinteger(L, (lua_Integer)strtoll(v, NULL, 10));
        return;
    case 700: /* float4 */
    case 701: /* float8 */
        lua_pushnumber(L, strtod(v, NULL));
        return;
    default: /* numeric and everything else stay text: no precision is lost */
        lua_pushlstring(L, v, (size_t)PQgetlength(res, row, col));
    }
}

/* A COPY the caller started by mistake: end it (IN: refused, OUT: data read and dropped) and take
 * every result left, so the connection is idle again. Without this a COPY TO STDOUT made
 * PQgetResult answer PGRES_COPY_OUT forever. */
static int is_copy(ExecStatusType st)
{
    return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

static void discard_copy(PGconn *c, ExecStatusType st)
{
    while (is_copy(st) && PQstatus(c) == CONNECTION_OK) {
        if (st == PGRES_COPY_IN || st == PGRES_COPY_BOTH)
            PQputCopyEnd(c, "COPY is not supported by conn:exec and conn:query");
        if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            char *row;
            while (PQgetCopyData(c, &row, 0) > 0)
                PQfreemem(row);
        }
        PGresult *res;
        st = PGRES_COMMAND_OK;
        while ((res = PQgetResult(c)) != NULL) {
            st = PQresultStatus(res);
            PQclear(res);
            if (is_copy(st))
                break; /* a later statement of the same string is a COPY too */
        }
    }
}

/* conn:query(sql, ...) -> rows, info. A NULL is nil (the key is absent); info.columns names them. */
static int conn_query(lua_State *L)
{
    struct conn *c = check_conn(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    int n = lua_gettop(L) - 2;
    if (n > 65535)
        return luaL_error(L, "too many parameters");
    const char **vals = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n ? n : 1), 0);
    for (int i = 0; i < n; i++) {
        int idx = 3 + i;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            vals[i] = NULL;
            break;
        case LUA_TBOOLEAN:
            vals[i] = lua_toboolean(L, idx) ? "true" : "false";
            break;
        case LUA_TNUMBER:
        case LUA_TSTRING:
            vals[i] = lua_tostring(L, idx);
            break;
        default:
            return luaL_argerror(L, idx, "parameters must be strings, numbers, booleans or nil");
        }
    }
    struct box *b = new_box(L, BOX_RESULT);
    PGresult *res = PQexecParams(c->c, sql, n, NULL, vals, NULL, NULL, 0);
    b->p = res;
    ExecStatusType st = PQresultStatus(res);
    if (is_copy(st)) {
        PQclear(res);
        b->p = NULL;
        discard_copy(c->c, st);
        return pgr_fail(L, "unsupported", "conn:query cannot run COPY ... STDIN/STDOUT (use pg.restore to load a dump)");
    }
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY) {
        lua_pushnil(L);
        push_result_error(L, c->c, res);
        return 2;
    }
    int rows = PQntuples(res), cols = PQnfields(res);
    lua_createtable(L, rows, 0);
    for (int r = 0; r < rows; r++) {
        lua_createtable(L, 0, cols);
        for (int k = 0; k < cols; k++) {
            push_value(L, res, r, k);
            lua_setfield(L, -2, PQfname(res, k));
        }
        lua_rawseti(L, -2, r + 1);
    }
    lua_createtable(L, 0, 3);
    lua_createtable(L, cols, 0);
    for (int k = 0; k < cols; k++) {
        lua_pushstring(L, PQfname(res, k));
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "columns");
    lua_pushstring(L, PQcmdStatus(res));
    lua_setfield(L, -2, "command");
    const char *aff = PQcmdTuples(res);
    lua_pushinteger(L, aff && *aff ? strtoll(aff, NULL, 10) : 0);
    lua_setfield(L, -2, "affected");
    PQclear(res);
    b->p = NULL;
    return 2;
}

/* conn:exec(sql) -> command status ("CREATE TABLE"); several statements may be given. */
static int conn_exec(lua_State *L)
{
    struct conn *c = check_conn(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    struct box *b = new_box(L, BOX_RESULT);
    PGresult *res = PQexec(c->c, sql);
    b->p = res;
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY) {
        if (is_copy(st)) {
            PQclear(res);
            b->p = NULL;
            discard_copy(c->c, st);
            return pgr_fail(L, "unsupported", "conn:exec cannot run COPY ... STDIN/STDOUT (use pg.restore to load a dump)");
        }
        lua_pushnil(L);
        push_result_error(L, c->c, res);
        return 2;
    }
    lua_pushstring(L, PQcmdStatus(res));
    PQclear(res);
    b->p = NULL;
    return 1;
}

static int quote_with(lua_State *L, int literal)
{
    struct conn *c = check_conn(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    char *q = literal ? PQescapeLiteral(c->c, s, len) : PQescapeIdentifier(c->c, s, len);
    if (!q)
        return pgr_fail(L, "quote", "%s", PQerrorMessage(c->c));
    lua_pushstring(L, q);
    PQfreemem(q);
    return 1;
}

static int conn_quote_ident(lua_State *L) { return quote_with(L, 0); }
static int conn_quote_literal(lua_State *L) { return quote_with(L, 1); }

/* conn:set_password(role, password): the verifier is computed here with the server's
 * password_encryption, so the clear password never reaches the server or its log. */
static int conn_set_password(lua_State *L)
{
    struct conn *c = check_conn(L, 1);
    const char *role = luaL_checkstring(L, 2);
    const char *pw = luaL_checkstring(L, 3);
    /* the statement is built in C memory a box owns, so no Lua error can leak it */
    struct box *sqlbox = new_box(L, BOX_MEM);
    char *verifier = PQencryptPasswordConn(c->c, pw, role, NULL);
    if (!verifier) {
        const char *m = PQerrorMessage(c->c);
        size_t l = strlen(m);
        while (l && m[l - 1] == '\n')
            l--;
        lua_pushlstring(L, m, l);
        return pgr_fail(L, "password", "cannot compute a password verifier for role %s: %s", role,
                        lua_tostring(L, -1));
    }
    char *id = PQescapeIdentifier(c->c, role, strlen(role));
    char *lit = PQescapeLiteral(c->c, verifier, strlen(verifier));
    PQfreemem(verifier);
    if (id && lit && (sqlbox->p = malloc(strlen(id) + strlen(lit) + 32)) != NULL)
        sprintf(sqlbox->p, "ALTER ROLE %s PASSWORD %s", id, lit);
    PQfreemem(id);
    PQfreemem(lit);
    if (!sqlbox->p)
        return pgr_fail(L, "quote", "cannot quote role %s: %s", role, PQerrorMessage(c->c));
    struct box *b = new_box(L, BOX_RESULT);
    PGresult *res = PQexec(c->c, sqlbox->p);
    b->p = res;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        lua_pushnil(L);
        push_result_error(L, c->c, res);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_info(lua_State *L)
{
    struct conn *c = check_conn(L, 1);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, PQhost(c->c));
    lua_setfield(L, -2, "host");
    lua_pushstring(L, PQport(c->c));
    lua_setfield(L, -2, "port");
    lua_pushstring(L, PQdb(c->c));
    lua_setfield(L, -2, "dbname");
    lua_pushstring(L, PQuser(c->c));
    lua_setfield(L, -2, "user");
    lua_pushinteger(L, PQserverVersion(c->c));
    lua_setfield(L, -2, "server_version");
    lua_pushboolean(L, PQstatus(c->c) == CONNECTION_OK);
    lua_setfield(L, -2, "ok");
    return 1;
}

/* ---------------------------------------------------------------- quoting without a connection */

static int pg_quote_ident(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    luaL_addchar(&B, '"');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == 0)
            return luaL_argerror(L, 1, "identifier contains a NUL byte");
        if (s[i] == '"')
            luaL_addchar(&B, '"');
        luaL_addchar(&B, s[i]);
    }
    luaL_addchar(&B, '"');
    luaL_pushresult(&B);
    return 1;
}

/* As PQescapeLiteral writes it: '' doubled, and E'' with doubled backslashes when there are any. */
static int pg_quote_literal(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int bs = memchr(s, '\\', len) != NULL;
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    if (bs)
        luaL_addstring(&B, " E");
    luaL_addchar(&B, '\'');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == 0)
            return luaL_argerror(L, 1, "literal contains a NUL byte");
        if (s[i] == '\'' || s[i] == '\\')
            luaL_addchar(&B, s[i]);
        luaL_addchar(&B, s[i]);
    }
    luaL_addchar(&B, '\'');
    luaL_pushresult(&B);
    return 1;
}

/* ---------------------------------------------------------------- restore / inspect */

struct ctx {
    lua_State *L;
    int src_idx;      /* a Lua reader object, or 0 */
    int on_error_idx; /* function or policy table, or 0 */
    int progress_idx;
    int cb_error_ref; /* the first error a callback raised */
    const struct rs_error_info *e;
    const struct rs_progress *p;
    char *buf;
    size_t cap;
    long got;
    char *err;
    size_t errcap;
    int verdict;
};

static void remember_cb_error(struct ctx *x)
{
    lua_State *L = x->L;
    if (x->cb_error_ref == LUA_NOREF)
        x->cb_error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
}

static int read_call(lua_State *L)
{
    struct ctx *x = lua_touserdata(L, 1);
    /* the source object is argument 2: the caller's stack indices mean nothing in this frame */
    lua_getfield(L, 2, "read");
    lua_pushvalue(L, 2);
    lua_pushinteger(L, (lua_Integer)x->cap);
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2)) {
        if (lua_isnil(L, -1)) {
            x->got = 0;
        } else {
            snprintf(x->err, x->errcap, "%s", luaL_tolstring(L, -1, NULL));
            x->got = -1;
        }
        return 0;
    }
    size_t n;
    const char *s = lua_tolstring(L, -2, &n);
    if (!s) {
        snprintf(x->err, x->errcap, "source:read returned a %s, not a string", luaL_typename(L, -2));
        x->got = -1;
        return 0;
    }
    if (n > x->cap) {
        snprintf(x->err, x->errcap, "source:read returned %zu bytes where %zu were asked", n, x->cap);
        x->got = -1;
        return 0;
    }
    if (n == 0) {
        /* an empty string is not the end: ask again (bounded by the reader's own timeouts) */
        x->got = -2;
        return 0;
    }
    memcpy(x->buf, s, n);
    x->got = (long)n;
    return 0;
}

static long lua_source_read(void *ud, char *buf, size_t cap, char *err, size_t errcap)
{
    struct ctx *x = ud;
    x->buf = buf;
    x->cap = cap;
    x->err = err;
    x->errcap = errcap;
    for (;;) {
        lua_pushcfunction(x->L, read_call);
        lua_pushlightuserdata(x->L, x);
        lua_pushvalue(x->L, x->src_idx);
        if (lua_pcall(x->L, 2, 0, 0) != LUA_OK) {
            snprintf(err, errcap, "source:read failed: %s", lua_tostring(x->L, -1));
            lua_pop(x->L, 1);
            return -1;
        }
        if (x->got != -2)
            return x->got;
    }
}

static void push_error_info(lua_State *L, const struct rs_error_info *e)
{
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, e->line);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, e->offset);
    lua_setfield(L, -2, "offset");
    lua_pushstring(L, e->sqlstate ? e->sqlstate : "");
    lua_setfield(L, -2, "sqlstate");
    lua_pushstring(L, e->message ? e->message : "");
    lua_setfield(L, -2, "message");
    if (e->severity) {
        lua_pushstring(L, e->severity);
        lua_setfield(L, -2, "severity");
    }
    if (e->detail) {
        lua_pushstring(L, e->detail);
        lua_setfield(L, -2, "detail");
    }
    if (e->hint) {
        lua_pushstring(L, e->hint);
        lua_setfield(L, -2, "hint");
    }
    if (e->position) {
        lua_pushinteger(L, e->position);
        lua_setfield(L, -2, "position");
    }
    lua_pushstring(L, e->statement ? e->statement : "");
    lua_setfield(L, -2, "statement");
    if (e->database) {
        lua_pushstring(L, e->database);
        lua_setfield(L, -2, "database");
    }
}

static int error_call(lua_State *L)
{
    struct ctx *x = lua_touserdata(L, 1);
    int policy = 2;
    if (lua_istable(L, policy)) {
        lua_getfield(L, policy, x->e->sqlstate ? x->e->sqlstate : "");
        if (!lua_isfunction(L, -1)) {
            x->verdict = lua_toboolean(L, -1);
            return 0;
        }
    } else {
        lua_pushvalue(L, policy);
    }
    push_error_info(L, x->e);
    lua_call(L, 1, 1);
    x->verdict = lua_toboolean(L, -1);
    return 0;
}

static int on_error(void *ud, const struct rs_error_info *e)
{
    struct ctx *x = ud;
    if (!x->on_error_idx)
        return 0;
    x->e = e;
    x->verdict = 0;
    lua_pushcfunction(x->L, error_call);
    lua_pushlightuserdata(x->L, x);
    lua_pushvalue(x->L, x->on_error_idx);
    if (lua_pcall(x->L, 2, 0, 0) != LUA_OK) {
        remember_cb_error(x);
        return 0;
    }
    return x->verdict;
}

static int progress_call(lua_State *L)
{
    struct ctx *x = lua_touserdata(L, 1);
    const struct rs_progress *p = x->p;
    lua_pushvalue(L, 2);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, p->bytes);
    lua_setfield(L, -2, "bytes");
    if (p->total >= 0) {
        lua_pushinteger(L, p->total);
        lua_setfield(L, -2, "total");
    }
    lua_pushinteger(L, p->statements);
    lua_setfield(L, -2, "statements");
    lua_pushinteger(L, p->copy_rows);
    lua_setfield(L, -2, "copy_rows");
    lua_pushinteger(L, p->errors);
    lua_setfield(L, -2, "errors");
    lua_pushinteger(L, p->line);
    lua_setfield(L, -2, "line");
    if (p->database) {
        lua_pushstring(L, p->database);
        lua_setfield(L, -2, "database");
    }
    lua_call(L, 1, 0);
    return 0;
}

static void on_progress(void *ud, const struct rs_progress *p)
{
    struct ctx *x = ud;
    x->p = p;
    lua_pushcfunction(x->L, progress_call);
    lua_pushlightuserdata(x->L, x);
    lua_pushvalue(x->L, x->progress_idx);
    if (lua_pcall(x->L, 2, 0, 0) != LUA_OK)
        remember_cb_error(x);
}

/* Opens SOURCE (path, "-" or an object with :read(n)) into src; pushes an fd box. Returns 0, or
 * pushes nil, err and returns 2. */
static int open_source(lua_State *L, int idx, struct ctx *x, struct rs_source *src, int *fdp, long long *size)
{
    struct box *fb = new_box(L, BOX_FD);
    memset(src, 0, sizeof *src);
    *size = -1;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *path = lua_tostring(L, idx);
        if (strcmp(path, "-") == 0) {
            *fdp = 0;
        } else {
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                return pgr_fail(L, "io", "cannot open %s: %s", path, strerror(errno));
            fb->fd = fd;
            *fdp = fd;
            struct stat st;
            if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
                src->path = path;
                *size = (long long)st.st_size;
            }
        }
        src->read = rs_fd_read;
        src->ud = fdp;
        return 0;
    }
    if (lua_type(L, idx) == LUA_TTABLE || lua_type(L, idx) == LUA_TUSERDATA) {
        lua_getfield(L, idx, "read");
        int ok = lua_isfunction(L, -1);
        if (!ok && luaL_getmetafield(L, -1, "__call") != LUA_TNIL) {
            ok = 1;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (ok) {
            x->src_idx = lua_absindex(L, idx);
            src->read = lua_source_read;
            src->ud = x;
            /* an object C can read itself (an S3 reader): its stream without a Lua call per chunk,
             * and --jobs fetches or feeds its tables */
            if (lua_type(L, idx) == LUA_TUSERDATA && luaL_getmetafield(L, idx, PGR_RANGE_METAFIELD) != LUA_TNIL) {
                const struct pgr_range_source *rs = lua_islightuserdata(L, -1) ? lua_touserdata(L, -1) : NULL;
                if (rs) {
                    src->object = rs;
                    src->object_ud = lua_touserdata(L, idx);
                    src->read = rs->stream_read;
                    src->ud = src->object_ud;
                }
                long long base = rs ? rs->base(lua_touserdata(L, idx)) : -1;
                if (base >= 0) {
                    src->range = rs;
                    src->range_ud = lua_touserdata(L, idx);
                    src->range_base = base;
                }
                lua_pop(L, 1);
            }
            return 0;
        }
    }
    return luaL_argerror(L, idx, "a path, \"-\" or an object with a read(n) method expected");
}

static void push_strings(lua_State *L, char **a, size_t n, const char *field)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, a[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, field);
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (!v)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* pg.restore(target, source, opts) -> result | nil, err (err.result has the partial counts). */
static int pg_restore(lua_State *L)
{
    luaL_checkany(L, 2);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) {
        lua_newtable(L);
        lua_replace(L, 3);
    }
    struct rs_options o;
    memset(&o, 0, sizeof o);
    lua_Integer jobs = pgr_opt_integer(L, 3, "jobs", 1);
    if (jobs < 1 || jobs > 64)
        return luaL_argerror(L, 3, "field 'jobs' must be between 1 and 64");
    o.jobs = (int)jobs;
    o.stop_on_error = pgr_opt_boolean(L, 3, "stop_on_error", 0);
    o.max_errors_listed = (int)pgr_opt_integer(L, 3, "max_errors_listed", 20);
    o.allow_truncated = pgr_opt_boolean(L, 3, "allow_truncated", 0);
    o.progress_interval = pgr_opt_number(L, 3, "progress_interval", 0.5);
    lua_Integer total = pgr_opt_integer(L, 3, "total", -1);
    /* skip: statements not to send; the strings stay referenced by the options table */
    const char *skipv[16];
    if (lua_getfield(L, 3, "skip") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return luaL_argerror(L, 3, "field 'skip' must be a list of strings");
        size_t n = (size_t)lua_rawlen(L, -1);
        if (n > sizeof skipv / sizeof skipv[0])
            return luaL_argerror(L, 3, "field 'skip' holds more than 16 statements");
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_argerror(L, 3, "field 'skip' must be a list of strings");
            skipv[i] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        o.skip = skipv;
        o.nskip = n;
    }
    lua_pop(L, 1);

    struct ctx x;
    memset(&x, 0, sizeof x);
    x.L = L;
    x.cb_error_ref = LUA_NOREF;
    lua_getfield(L, 3, "on_error"); /* 4 */
    if (!lua_isnil(L, 4)) {
        if (!lua_isfunction(L, 4) && !lua_istable(L, 4))
            return luaL_argerror(L, 3, "field 'on_error' must be a function or a policy table");
        x.on_error_idx = 4;
        o.on_error = on_error;
    }
    lua_getfield(L, 3, "progress"); /* 5 */
    if (!lua_isnil(L, 5)) {
        luaL_checktype(L, 5, LUA_TFUNCTION);
        x.progress_idx = 5;
        o.on_progress = on_progress;
    }
    struct box *pb = params_from(L, 1); /* 6 */
    if (!pb)
        return 2;
    int fd = -1;
    long long size;
    struct rs_source src;
    if (open_source(L, 2, &x, &src, &fd, &size)) /* 7: fd box */
        return 2;
    o.total = total >= 0 ? total : size;
    o.keywords = pb->kw;
    o.values = pb->val;
    o.ud = &x;
    struct box *rb = new_box(L, BOX_RESTORE); /* 8 */
    if (src.object)
        src.object->hold(src.object_ud, 1); /* read from C (its ranges by other threads) until rs_restore returns */
    rs_restore(&o, &src, &rb->rr);
    if (src.object)
        src.object->hold(src.object_ud, 0);
    struct rs_result *r = &rb->rr;

    lua_createtable(L, 0, 12);
    int ok = !r->fatal && r->unexpected == 0 && !r->stopped;
    set_bool(L, "ok", ok);
    set_int(L, "statements", r->statements);
    set_int(L, "skipped", r->skipped);
    set_int(L, "copy_rows", r->copy_rows);
    set_int(L, "bytes", r->bytes);
    set_int(L, "jobs", r->jobs_used);
    set_bool(L, "gzip", r->gzip);
    set_bool(L, "truncated", r->truncated);
    set_bool(L, "stopped", r->stopped);
    set_str(L, "format", r->format);
    push_strings(L, r->databases, r->ndatabases, "databases");
    lua_createtable(L, 0, 4);
    set_int(L, "count", r->errors);
    set_int(L, "unexpected", r->unexpected);
    lua_createtable(L, 0, (int)r->nstates);
    for (size_t i = 0; i < r->nstates; i++) {
        lua_pushinteger(L, r->by_state[i].count);
        lua_setfield(L, -2, r->by_state[i].sqlstate);
    }
    lua_setfield(L, -2, "by_sqlstate");
    lua_createtable(L, (int)r->nfirst, 0);
    for (size_t i = 0; i < r->nfirst; i++) {
        struct rs_listed_error *e = &r->first[i];
        lua_createtable(L, 0, 6);
        set_int(L, "line", e->line);
        set_str(L, "sqlstate", e->sqlstate);
        set_str(L, "message", e->message);
        set_str(L, "statement", e->statement);
        set_str(L, "database", e->database);
        set_bool(L, "expected", e->expected);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "first");
    lua_setfield(L, -2, "errors");
    if (x.cb_error_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, x.cb_error_ref);
        lua_setfield(L, -2, "callback_error");
        luaL_unref(L, LUA_REGISTRYINDEX, x.cb_error_ref);
    }
    if (r->fatal) {
        pgr_push_error(L, r->code, "%s", r->message);
        set_int(L, "line", r->line);
        set_int(L, "offset", r->offset);
        lua_insert(L, -2);
        lua_setfield(L, -2, "result");
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* pg.inspect(source [, {first_row_max=}]) -> facts about a dump, without a server. */
static int pg_inspect(lua_State *L)
{
    luaL_checkany(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_Integer frm = pgr_opt_integer(L, 2, "first_row_max", 4096);
    struct ctx x;
    memset(&x, 0, sizeof x);
    x.L = L;
    x.cb_error_ref = LUA_NOREF;
    int fd = -1;
    long long size;
    struct rs_source src;
    if (open_source(L, 1, &x, &src, &fd, &size))
        return 2;
    struct box *ib = new_box(L, BOX_INSPECT);
    rs_inspect(&src, (size_t)(frm > 0 ? frm : 4096), &ib->in);
    struct rs_inspection *in = &ib->in;
    if (in->fatal) {
        pgr_push_error(L, in->code, "%s", in->message);
        set_int(L, "offset", in->offset);
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    lua_createtable(L, 0, 12);
    set_str(L, "format", in->format);
    set_bool(L, "gzip", in->gzip);
    set_bool(L, "trailer", in->trailer);
    set_bool(L, "truncated", !in->trailer);
    set_int(L, "statements", in->statements);
    set_int(L, "lines", in->lines);
    set_int(L, "bytes", in->bytes);
    push_strings(L, in->databases, in->ndatabases, "databases");
    push_strings(L, in->roles, in->nroles, "roles");
    push_strings(L, in->connects, in->nconnects, "connects");
    push_strings(L, in->drop_databases, in->ndrop_databases, "drop_databases");
    push_strings(L, in->drop_roles, in->ndrop_roles, "drop_roles");
    set_bool(L, "clean", in->ndrop_databases + in->ndrop_roles > 0);
    set_bool(L, "if_exists", in->if_exists);
    if (in->dumped_from[0])
        set_str(L, "dumped_from", in->dumped_from);
    if (in->dumped_by[0])
        set_str(L, "dumped_by", in->dumped_by);
    lua_createtable(L, (int)in->ncopies, 0);
    for (size_t i = 0; i < in->ncopies; i++) {
        struct rs_copy_block *b = &in->copies[i];
        lua_createtable(L, 0, 6);
        set_str(L, "database", b->database);
        set_str(L, "table", b->table);
        set_int(L, "line", b->line);
        set_int(L, "rows", b->rows);
        set_int(L, "bytes", b->bytes);
        set_str(L, "first_row", b->first_row);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "copies");
    lua_createtable(L, (int)in->nunsupported, 0);
    for (size_t i = 0; i < in->nunsupported; i++) {
        lua_createtable(L, 0, 2);
        set_int(L, "line", in->unsupported[i].line);
        set_str(L, "command", in->unsupported[i].command);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "unsupported");
    return 1;
}

int luaopen_pgr_pg(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "query", conn_query },
        { "exec", conn_exec },
        { "on_notice", conn_on_notice },
        { "set_password", conn_set_password },
        { "quote_ident", conn_quote_ident },
        { "quote_literal", conn_quote_literal },
        { "info", conn_info },
        { "close", conn_close },
        { NULL, NULL },
    };
    static const luaL_Reg meta[] = {
        { "__gc", conn_close },
        { "__close", conn_close },
        { "__tostring", conn_tostring },
        { NULL, NULL },
    };
    pgr_new_class(L, CONN_MT, methods, meta);
    static const luaL_Reg box_meta[] = { { "__gc", box_gc }, { NULL, NULL } };
    pgr_new_class(L, BOX_MT, NULL, box_meta);
    static const luaL_Reg fns[] = {
        { "connect", pg_connect },         { "connect_all", pg_connect_all },
        { "restore", pg_restore },
        { "inspect", pg_inspect },         { "quote_ident", pg_quote_ident },
        { "quote_literal", pg_quote_literal }, { NULL, NULL },
    };
    luaL_newlib(L, fns);
    return 1;
}
