/* fanout.c — pgr.fanout.core: the Lua face of the fan-out engine (fanoutcore.c). A run is a
 * userdata owning its children; Lua adds argvs, steps the poll loop and reads per-child results. */
#include "fanoutcore.h"
#include "lutil.h"

#include <errno.h>
#include <string.h>

#define RUN_MT "pgr.fanout.run"

typedef struct {
    fo_run *r;
} run_ud;

static run_ud *check_run(lua_State *L)
{
    run_ud *u = luaL_checkudata(L, 1, RUN_MT);
    if (!u->r)
        luaL_argerror(L, 1, "fan-out run is closed");
    return u;
}

/* new{fanout=32, timeout=0 (none), kill_grace=1, max_output=1048576, env_drop={"PASSWORD", ...}} -> run */
static int core_new(lua_State *L)
{
    if (!lua_isnoneornil(L, 1))
        luaL_checktype(L, 1, LUA_TTABLE);
    fo_config cfg;
    lua_Integer fanout = pgr_opt_integer(L, 1, "fanout", 32);
    lua_Integer max_output = pgr_opt_integer(L, 1, "max_output", 1 << 20);
    cfg.timeout = pgr_opt_number(L, 1, "timeout", 0);
    cfg.kill_grace = pgr_opt_number(L, 1, "kill_grace", 1);
    if (fanout < 1 || fanout > 100000)
        return luaL_argerror(L, 1, "field 'fanout' must be between 1 and 100000");
    if (max_output < 0)
        return luaL_argerror(L, 1, "field 'max_output' must not be negative");
    /* NaN or infinity would make every deadline comparison false: a stop that never escalates */
    if (!(cfg.timeout >= 0 && cfg.timeout <= 1e9))
        return luaL_argerror(L, 1, "field 'timeout' must be between 0 and 1e9 seconds");
    if (!(cfg.kill_grace >= 0 && cfg.kill_grace <= 1e6))
        return luaL_argerror(L, 1, "field 'kill_grace' must be between 0 and 1e6 seconds");
    cfg.fanout = (int)fanout;
    cfg.max_output = (size_t)max_output;
    /* env_drop: the words of variable names the children must not get (read during fo_new only) */
    const char *drop[65];
    cfg.env_drop = NULL;
    int has_opts = !lua_isnoneornil(L, 1);
    if (has_opts && lua_getfield(L, 1, "env_drop") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return luaL_argerror(L, 1, "field 'env_drop' must be a list of strings");
        lua_Integer n = luaL_len(L, -1);
        if (n < 0 || n > 64)
            return luaL_argerror(L, 1, "field 'env_drop' holds at most 64 words");
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_argerror(L, 1, "field 'env_drop' must be a list of strings");
            drop[i - 1] = lua_tostring(L, -1);
            lua_pop(L, 1); /* still referenced by the table, which arg 1 keeps alive */
        }
        drop[n] = NULL;
        cfg.env_drop = drop;
    }
    if (has_opts)
        lua_pop(L, 1);
    run_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->r = NULL;
    luaL_setmetatable(L, RUN_MT);
    u->r = fo_new(&cfg);
    if (!u->r)
        return luaL_error(L, "not enough memory");
    return 1;
}

/* run:add{argv...} -> index (1-based, in the order added) */
static int run_add(lua_State *L)
{
    run_ud *u = check_run(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    if (n < 1)
        return luaL_argerror(L, 2, "argv must not be empty");
    if (n > 100000)
        return luaL_argerror(L, 2, "argv too long");
    const char **argv = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *argv, 0);
    luaL_checkstack(L, (int)n, "argv too long");
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TSTRING)
            return luaL_argerror(L, 2, lua_pushfstring(L, "argv[%d] must be a string", (int)i));
        size_t len;
        argv[i - 1] = lua_tolstring(L, -1, &len);
        if (strlen(argv[i - 1]) != len)
            return luaL_argerror(L, 2, lua_pushfstring(L, "argv[%d] contains a NUL byte", (int)i));
    }
    argv[n] = NULL;
    long idx = fo_add(u->r, argv);
    if (idx < 0)
        return luaL_error(L, "not enough memory");
    lua_pushinteger(L, (lua_Integer)idx + 1);
    return 1;
}

struct step_ctx {
    lua_State *L;
    int events; /* stack index of the events array */
    lua_Integer n;
};

static void on_event(void *ud, size_t index, enum fo_event ev, enum fo_stream stream,
                     const char *data, size_t len)
{
    struct step_ctx *x = ud;
    lua_State *L = x->L;
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)index + 1);
    lua_setfield(L, -2, "index");
    lua_pushstring(L, ev == FO_EV_START ? "start" : ev == FO_EV_DONE ? "done" : "output");
    lua_setfield(L, -2, "event");
    if (ev == FO_EV_OUTPUT) {
        lua_pushstring(L, stream == FO_STDERR ? "stderr" : "stdout");
        lua_setfield(L, -2, "stream");
        lua_pushlstring(L, data, len);
        lua_setfield(L, -2, "data");
    }
    lua_rawseti(L, x->events, ++x->n);
}

/* run:step([wait_seconds]) -> left, events [, "interrupted"]
 * left: children not done (0: all done); events: {index=, event="start"|"output"|"done",
 * stream=, data=} in the order they happened. A signal (Ctrl-C) ends the wait early with
 * "interrupted"; the children keep running until run:stop() or the next step. */
static int run_step(lua_State *L)
{
    run_ud *u = check_run(L);
    lua_Number wait = luaL_optnumber(L, 2, -1);
    if (wait != wait)
        return luaL_argerror(L, 2, "wait must be a number of seconds, not NaN");
    int ms = wait < 0 ? -1 : wait > 86400 ? 86400000 : (int)(wait * 1000.0);
    lua_settop(L, 2);
    lua_newtable(L);
    struct step_ctx x = { L, lua_gettop(L), 0 };
    long left = fo_step(u->r, ms, on_event, &x);
    if (left < 0) {
        size_t n = fo_count(u->r), notdone = 0;
        for (size_t i = 0; i < n; i++)
            notdone += fo_get(u->r, i)->state != FO_DONE;
        lua_pushinteger(L, (lua_Integer)notdone);
        lua_pushvalue(L, 3);
        lua_pushstring(L, "interrupted");
        return 3;
    }
    lua_pushinteger(L, left);
    lua_pushvalue(L, 3);
    return 2;
}

static const char *state_name(enum fo_state s)
{
    return s == FO_PENDING ? "pending" : s == FO_RUNNING ? "running" : "done";
}

/* run:result(index) -> {state=, outcome=, exit=, signal=, spawn_error=, elapsed=, pid=,
 *                       stdout=, stderr=, stdout_bytes=, stderr_bytes=} */
static int run_result(lua_State *L)
{
    run_ud *u = check_run(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    const fo_result *res = i >= 1 ? fo_get(u->r, (size_t)(i - 1)) : NULL;
    if (!res)
        return luaL_argerror(L, 2, "no such child");
    lua_createtable(L, 0, 12);
    lua_pushstring(L, state_name(res->state));
    lua_setfield(L, -2, "state");
    lua_pushstring(L, fo_outcome_name(res->outcome));
    lua_setfield(L, -2, "outcome");
    if (res->outcome == FO_EXITED) {
        lua_pushinteger(L, res->exit_code);
        lua_setfield(L, -2, "exit");
    }
    if (res->term_signal) {
        lua_pushinteger(L, res->term_signal);
        lua_setfield(L, -2, "signal");
    }
    if (res->outcome == FO_SPAWN_FAILED) {
        lua_pushstring(L, strerror(res->spawn_errno));
        lua_setfield(L, -2, "spawn_error");
    }
    if (res->pid > 0) {
        lua_pushinteger(L, res->pid);
        lua_setfield(L, -2, "pid");
    }
    lua_pushnumber(L, res->elapsed);
    lua_setfield(L, -2, "elapsed");
    static const char *const names[2] = { "stdout", "stderr" };
    static const char *const totals[2] = { "stdout_bytes", "stderr_bytes" };
    for (int s = 0; s < 2; s++) {
        lua_pushlstring(L, res->data[s] ? res->data[s] : "", res->len[s]);
        lua_setfield(L, -2, names[s]);
        lua_pushinteger(L, (lua_Integer)res->total[s]);
        lua_setfield(L, -2, totals[s]);
    }
    return 1;
}

/* run:running() -> now, most at once */
static int run_running(lua_State *L)
{
    run_ud *u = check_run(L);
    lua_pushinteger(L, (lua_Integer)fo_running(u->r));
    lua_pushinteger(L, (lua_Integer)fo_max_running(u->r));
    return 2;
}

static int run_count(lua_State *L)
{
    run_ud *u = check_run(L);
    lua_pushinteger(L, (lua_Integer)fo_count(u->r));
    return 1;
}

/* run:stop(): kills every running child's process group and reaps it; queued ones never start */
static int run_stop(lua_State *L)
{
    run_ud *u = check_run(L);
    fo_stop(u->r);
    return 0;
}

/* run:close() (also __gc, __close): stop, then free; results are gone afterwards */
static int run_close(lua_State *L)
{
    run_ud *u = luaL_checkudata(L, 1, RUN_MT);
    fo_free(u->r);
    u->r = NULL;
    return 0;
}

static int run_tostring(lua_State *L)
{
    run_ud *u = luaL_checkudata(L, 1, RUN_MT);
    if (u->r)
        lua_pushfstring(L, "pgr.fanout.run (%d children)", (int)fo_count(u->r));
    else
        lua_pushliteral(L, "pgr.fanout.run (closed)");
    return 1;
}

int luaopen_pgr_fanout_core(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "add", run_add },         { "step", run_step },   { "result", run_result },
        { "running", run_running }, { "count", run_count }, { "stop", run_stop },
        { "close", run_close },     { NULL, NULL },
    };
    static const luaL_Reg meta[] = {
        { "__gc", run_close },
        { "__close", run_close },
        { "__tostring", run_tostring },
        { NULL, NULL },
    };
    pgr_new_class(L, RUN_MT, methods, meta);
    static const luaL_Reg fns[] = { { "new", core_new }, { NULL, NULL } };
    luaL_newlib(L, fns);
    return 1;
}
