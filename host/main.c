/* main.c — pgr's entry point: builds the Lua state, loads the bindings and the embedded library,
 * and hands argv to pgr.cli, which owns every command. Errors get a traceback, as lua.c does. */
#include "embed.h"
#include "trust.h"

#include <lauxlib.h>
#include <lualib.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lua_State *global_L;

/* Ctrl-C (SIGINT), and SIGTERM (timeout(1) on expiry, systemd, kill): stop the running Lua code at
 * the next instruction, as lua.c does for SIGINT; the commands turn the "interrupted!" error into
 * their clean-up and exit 130. Unlike lua.c, the handler stays: what pgr does on the way out
 * (deleting a drill's scratch cluster, journaling the step) must not die of a second signal, and one
 * Ctrl-C can arrive twice (timeout(1) sends its signal to the child and again to its process group).
 * The second is ignored, with a word; the third stops pgr at once, by the signal, as the default
 * action would. Both signals are blocked while the handler runs, so the count is never torn. */
static volatile sig_atomic_t interrupt_count;

static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void say(const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, msg, n);
        if (w <= 0)
            return;
        msg += w;
        n -= (size_t)w;
    }
}

static void on_interrupt(int sig)
{
    int saved = errno;
    int n = interrupt_count < 3 ? ++interrupt_count : 3;
    if (n == 1) {
        lua_sethook(global_L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    } else if (n == 2) {
        say("\npgr: interrupted; cleaning up before it stops (Ctrl-C again to stop at once, leaving "
            "what the clean-up has not undone)\n");
    } else {
        say("\npgr: stopped at once, without cleaning up\n");
        signal(sig, SIG_DFL);
        raise(sig);
    }
    errno = saved;
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Runs pgr.cli.main(argv) protected; its integer result (or true/nil: 0, false: 1) is the exit code. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    lua_gc(L, LUA_GCGEN, 0, 0);
    pgr_embed_open(L);
    lua_pushcfunction(L, msghandler);
    int base = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "pgr.cli");
    if (lua_pcall(L, 1, 1, base) != LUA_OK)
        return lua_error(L);
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int status = lua_pcall(L, 1, 1, base);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (status != LUA_OK)
        return lua_error(L);
    return 1;
}

int main(int argc, char **argv)
{
    /* before any secret is read: a crash must not leave passwords in a core file */
    pgr_forbid_core_dumps();
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "pgr: cannot create Lua state: not enough memory\n");
        return EXIT_FAILURE;
    }
    global_L = L;
    /* a closed pipe (pgr ... | head) must become an error pgr handles (stopping its children),
     * not a silent death */
    signal(SIGPIPE, SIG_IGN);
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int code;
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "pgr: %s\n", msg ? msg : "(error object is not a string)");
        fflush(stderr);
        code = EXIT_FAILURE;
    } else if (lua_isinteger(L, -1)) {
        code = (int)lua_tointeger(L, -1);
    } else {
        code = (lua_isnil(L, -1) || lua_toboolean(L, -1)) ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    lua_close(L);
    return code;
}
