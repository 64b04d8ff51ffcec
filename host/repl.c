/* repl.c — pgr.repl: the readline prompt of `pgr repl`, shaped like lua.c's own: multi-line chunks,
 * expressions printed without '=', history in a file, tab completion of globals and table fields. */
#include "lutil.h"

#include <errno.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PROMPT "> "
#define PROMPT2 ">> "
#define HISTORY_MAX 1000

static lua_State *repl_L;
static sigjmp_buf prompt_jmp;
static volatile sig_atomic_t at_prompt;

/* Ctrl-C during a chunk: stop it at the next Lua instruction (as lua.c does). */
static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* Ctrl-C at the prompt abandons the line (and any pending continuation), like a shell. */
static void on_sigint(int sig)
{
    (void)sig;
    if (at_prompt)
        siglongjmp(prompt_jmp, 1);
    lua_sethook(repl_L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1; /* an error table: its own message is the report */
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    /* the frames below the chunk are pgr's own REPL machinery: cut them, as lua.c shows none */
    const char *tb = lua_tostring(L, -1);
    const char *cut = strstr(tb, "\n\t[C]: in function 'pgr.repl.run'");
    if (cut)
        lua_pushlstring(L, tb, (size_t)(cut - tb));
    return 1;
}

/* A chunk is incomplete when the parser stopped at the end of input, as lua.c's incomplete(). */
static int incomplete(lua_State *L, int status)
{
    if (status != LUA_ERRSYNTAX)
        return 0;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    static const char eof[] = "<eof>";
    if (len >= sizeof eof - 1 && strcmp(msg + len - (sizeof eof - 1), eof) == 0) {
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

/* Prints every value a chunk returned, through pgr.pretty.show (policy lives in Lua). */
static void print_results(lua_State *L, int base)
{
    int n = lua_gettop(L) - base;
    if (n <= 0)
        return;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "pgr.pretty");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1 + n);
        return;
    }
    lua_getfield(L, -1, "show");
    lua_remove(L, -2);
    int show = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, show);
        lua_pushvalue(L, base + i);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
            lua_pop(L, 1);
            lua_pushstring(L, luaL_tolstring(L, base + i, NULL));
            lua_remove(L, -2);
        }
        fputs(lua_tostring(L, -1), stdout);
        fputs(i < n ? "\t" : "\n", stdout);
        lua_pop(L, 1);
    }
    fflush(stdout);
    lua_settop(L, base);
}

static void report(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
}

/* Runs the function on top of the stack under the traceback handler and prints its results. */
static void run_chunk(lua_State *L)
{
    int base = lua_gettop(L) - 1;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base + 1); /* stack: ..., msghandler, fn */
    int status = lua_pcall(L, 0, LUA_MULTRET, base + 1);
    lua_sethook(L, NULL, 0, 0);
    if (status == LUA_OK) {
        lua_remove(L, base + 1);
        print_results(L, base);
    } else {
        report(L);
        lua_settop(L, base);
    }
}

/* --- completion: "json.en" -> "json.encode", "conn:qu" -> "conn:query" -------------------- */

static char **completions;
static size_t ncompletions, capcompletions;

static void add_completion(const char *s)
{
    if (ncompletions + 1 >= capcompletions) {
        size_t cap = capcompletions ? capcompletions * 2 : 32;
        char **p = realloc(completions, cap * sizeof *p);
        if (!p)
            return;
        completions = p;
        capcompletions = cap;
    }
    char *dup = strdup(s);
    if (dup)
        completions[ncompletions++] = dup;
}

/* Collects keys of the table at top (and of its __index tables) starting with prefix. */
static void collect(lua_State *L, const char *head, const char *prefix, int depth)
{
    size_t plen = strlen(prefix);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                const char *k = lua_tostring(L, -2);
                if (strncmp(k, prefix, plen) == 0 && (k[0] != '_' || prefix[0] == '_')) {
                    lua_pushfstring(L, "%s%s", head, k);
                    add_completion(lua_tostring(L, -1));
                    lua_pop(L, 1);
                }
            }
            lua_pop(L, 1);
        }
    }
    if (depth < 4 && lua_getmetatable(L, -1)) {
        if (lua_getfield(L, -1, "__index") == LUA_TTABLE)
            collect(L, head, prefix, depth + 1);
        lua_pop(L, 2);
    }
}

/* Replaces the value on top by its field k, reading tables and __index tables only: completion
 * must never run a metamethod (a live connection's __index could have side effects). */
static void raw_field(lua_State *L, const char *k, size_t len)
{
    for (int depth = 0; depth < 4; depth++) {
        if (lua_istable(L, -1)) {
            lua_pushlstring(L, k, len);
            lua_rawget(L, -2);
            if (!lua_isnil(L, -1)) {
                lua_remove(L, -2);
                return;
            }
            lua_pop(L, 1);
        }
        if (!lua_getmetatable(L, -1))
            break;
        lua_getfield(L, -1, "__index");
        lua_remove(L, -2); /* the metatable */
        lua_remove(L, -2); /* the value: continue with its __index */
        if (!lua_istable(L, -1))
            break;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

static char *completion_generator(const char *text, int state)
{
    static size_t next;
    if (state == 0) {
        for (size_t i = 0; i < ncompletions; i++)
            free(completions[i]);
        ncompletions = 0;
        next = 0;
        lua_State *L = repl_L;
        int top = lua_gettop(L);
        /* walk the dotted path before the last separator, from the globals */
        const char *sep = NULL;
        for (const char *p = text; *p; p++)
            if (*p == '.' || *p == ':')
                sep = p;
        lua_pushglobaltable(L);
        if (sep) {
            const char *p = text;
            while (p < sep) {
                const char *e = p;
                while (e < sep && *e != '.' && *e != ':')
                    e++;
                raw_field(L, p, (size_t)(e - p));
                p = e + 1;
            }
            char head[256];
            size_t hl = (size_t)(sep - text) + 1;
            if (hl >= sizeof head) {
                lua_settop(L, top);
                return NULL;
            }
            memcpy(head, text, hl);
            head[hl] = '\0';
            collect(L, head, sep + 1, 0);
        } else {
            collect(L, "", text, 0);
            static const char *const keywords[] = { "and", "break", "do", "else", "elseif",
                "end", "false", "for", "function", "goto", "if", "in", "local", "nil", "not",
                "or", "repeat", "return", "then", "true", "until", "while", NULL };
            for (int i = 0; keywords[i]; i++)
                if (strncmp(keywords[i], text, strlen(text)) == 0)
                    add_completion(keywords[i]);
        }
        lua_settop(L, top);
    }
    if (next < ncompletions) {
        char *s = completions[next];
        completions[next++] = NULL; /* readline frees it */
        return s;
    }
    return NULL;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    return rl_completion_matches(text, completion_generator);
}

/* --- history ------------------------------------------------------------------------------ */

static char *history_path(void)
{
    const char *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    char dir[4096];
    if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/pgr", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.local/state/pgr", home);
    else
        return NULL;
    /* create the directory chain, private */
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0700);
            *p = '/';
        }
    }
    mkdir(dir, 0700);
    size_t n = strlen(dir) + sizeof "/repl_history";
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/repl_history", dir);
    return path;
}

/* Reads one line with the given prompt; NULL at end of input (Ctrl-D). Ctrl-C returns "". */
static char *read_line(const char *prompt, int *interrupted)
{
    *interrupted = 0;
    if (sigsetjmp(prompt_jmp, 1)) {
        at_prompt = 0;
        rl_free_line_state();
        rl_cleanup_after_signal();
        rl_reset_after_signal();
        fputs("^C\n", stdout);
        *interrupted = 1;
        return strdup("");
    }
    at_prompt = 1;
    char *line = readline(prompt);
    at_prompt = 0;
    return line;
}

static int repl_run(lua_State *L)
{
    repl_L = L;
    rl_readline_name = "pgr";
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^#[";
    rl_catch_signals = 0;
    char *hist = history_path();
    using_history();
    stifle_history(HISTORY_MAX);
    if (hist) {
        /* append_history needs the file to exist; history may hold secrets typed by hand: 0600 */
        FILE *f = fopen(hist, "a");
        if (f) {
            fchmod(fileno(f), 0600);
            fclose(f);
        }
        read_history(hist);
    }

    struct sigaction sa, old, dfl, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    /* SIGTERM ends a REPL at once, prompt or not (pgr's commands turn it into their clean-up) */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, &old_term);

    const char *banner = luaL_optstring(L, 1, NULL);
    if (banner)
        printf("%s\n", banner);

    lua_settop(L, 0);
    for (;;) {
        int interrupted;
        char *line = read_line(PROMPT, &interrupted);
        if (!line)
            break;
        if (interrupted || line[0] == '\0') {
            free(line);
            continue;
        }
        /* an expression first (printed without '='), then a statement, continued while incomplete */
        lua_pushstring(L, line);
        free(line);
        lua_pushfstring(L, "return %s;", lua_tostring(L, 1));
        int status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin");
        if (status == LUA_OK) {
            lua_remove(L, -2); /* the "return" text; the function stays */
        } else {
            lua_pop(L, 2);
            while (incomplete(L, status = luaL_loadbuffer(L, lua_tostring(L, 1), lua_rawlen(L, 1),
                                                         "=stdin"))) {
                char *more = read_line(PROMPT2, &interrupted);
                if (!more || interrupted) {
                    free(more);
                    status = -1;
                    break;
                }
                lua_pushfstring(L, "%s\n%s", lua_tostring(L, 1), more);
                lua_replace(L, 1);
                free(more);
            }
        }
        if (status == -1) {
            lua_settop(L, 0);
            continue;
        }
        if (lua_rawlen(L, 1) > 0)
            add_history(lua_tostring(L, 1));
        if (status != LUA_OK) {
            report(L);
        } else {
            run_chunk(L);
        }
        lua_settop(L, 0);
        if (hist)
            append_history(1, hist);
    }
    fputc('\n', stdout);
    sigaction(SIGINT, &old, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (hist) {
        history_truncate_file(hist, HISTORY_MAX);
        free(hist);
    }
    for (size_t i = 0; i < ncompletions; i++)
        free(completions[i]);
    free(completions);
    completions = NULL;
    ncompletions = capcompletions = 0;
    return 0;
}

int luaopen_pgr_repl(lua_State *L)
{
    static const luaL_Reg fns[] = { { "run", repl_run }, { NULL, NULL } };
    luaL_newlib(L, fns);
    return 1;
}
