/* sys.c — pgr.sys: the few operating-system services the Lua library needs and plain Lua lacks:
 * terminals, clocks, sleeping, private files and directories, locks, processes, library versions. */
#include "lutil.h"
#include "trust.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <expat.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>
#include <zlib.h>
#include <readline/readline.h>
#ifdef PGR_STATIC
/* written by host/tools/static/build.sh: PGR_STATIC_LIBC, PGR_STATIC_SOURCES */
#include <pgr_static.h>
/* libtinfo's; declared here rather than through <curses.h> and its macros */
extern const char *curses_version(void);
#else
#include <gnu/libc-version.h>
#endif

static int fd_arg(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        static const char *const names[] = { "stdin", "stdout", "stderr", NULL };
        return luaL_checkoption(L, idx, NULL, names);
    }
    return (int)luaL_optinteger(L, idx, 1);
}

/* isatty("stdout" | fd) */
static int sys_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty(fd_arg(L, 1)));
    return 1;
}

/* now(): monotonic seconds as a float, for durations and deadlines */
static int sys_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* time(): wall-clock seconds since the epoch as a float (os.time has only seconds) */
static int sys_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int sys_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    if (s <= 0)
        return 0;
    struct timespec ts = { (time_t)s, (long)((s - (lua_Number)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
    return 0;
}

static int sys_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int sys_geteuid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)geteuid());
    return 1;
}

/* pid_alive(pid): whether a process exists (for stale lock detection) */
static int sys_pid_alive(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    lua_pushboolean(L, pid > 0 && (kill(pid, 0) == 0 || errno == EPERM));
    return 1;
}

/* kill(pid, signal): signal is a number or a name ("TERM", "KILL", "INT", "HUP", "USR1") */
static int sys_kill(lua_State *L)
{
    static const char *const names[] = { "TERM", "KILL", "INT", "HUP", "USR1", NULL };
    static const int sigs[] = { SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGUSR1 };
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int sig = lua_type(L, 2) == LUA_TSTRING ? sigs[luaL_checkoption(L, 2, NULL, names)]
                                            : (int)luaL_optinteger(L, 2, SIGTERM);
    if (pid <= 0)
        return luaL_argerror(L, 1, "a process id must be positive");
    if (kill(pid, sig) == -1) {
        int e = errno;
        return pgr_fail(L, e == ESRCH ? "gone" : "io", "cannot signal process %d: %s", (int)pid,
                        strerror(e));
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int errno_fail(lua_State *L, const char *what, const char *path)
{
    int e = errno;
    lua_pushnil(L);
    pgr_push_error(L, "io", "%s %s: %s", what, path, strerror(e));
    lua_pushinteger(L, e);
    lua_setfield(L, -2, "errno");
    return 2;
}

/* mkdir(path [, mode=0700]): creates every missing parent too; true if it exists afterwards */
static int sys_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
    char buf[4096];
    if (strlen(path) >= sizeof buf)
        return pgr_fail(L, "io", "path too long: %s", path);
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) == -1 && errno != EEXIST)
            return errno_fail(L, "cannot create directory", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) == -1 && errno != EEXIST)
        return errno_fail(L, "cannot create directory", buf);
    lua_pushboolean(L, 1);
    return 1;
}

/* write_file(path, data [, mode=0600]): written to a temporary name, fsynced, renamed: a reader
 * (or a resumed run after kill -9) sees the old file or the new one, never half of one. */
static int sys_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 3, 0600);
    const char *tmp = lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
    /* a file of our own, never one someone placed (or a link to one): what an earlier process of
     * this pid left is removed (unlink does not follow a link), then the name is created anew */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd == -1)
        return errno_fail(L, "cannot create", tmp);
    fchmod(fd, mode);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            errno = e;
            return errno_fail(L, "cannot write", tmp);
        }
        off += (size_t)n;
    }
    if (fsync(fd) == -1 || close(fd) == -1) {
        unlink(tmp);
        return errno_fail(L, "cannot sync", tmp);
    }
    if (rename(tmp, path) == -1) {
        unlink(tmp);
        return errno_fail(L, "cannot rename to", path);
    }
    /* make the rename itself durable */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        int dfd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* fsync(path) -> true | nil, err: flushes a file (or a directory: a rename in it) to disk. */
static int sys_fsync(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return errno_fail(L, "cannot open", path);
    if (fsync(fd) == -1) {
        int e = errno;
        close(fd);
        errno = e;
        return errno_fail(L, "cannot sync", path);
    }
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* append_line(path, line [, mode=0600]): one write of line.."\n" with O_APPEND, then fsync —
 * the journal's primitive: a record is either wholly there or absent. */
static int sys_append_line(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    luaL_checklstring(L, 2, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 3, 0600);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "\n");
    lua_concat(L, 2);
    const char *line = lua_tolstring(L, -1, &len);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd == -1)
        return errno_fail(L, "cannot open", path);
    ssize_t n = write(fd, line, len);
    int e = errno;
    if (n != (ssize_t)len || fsync(fd) == -1) {
        close(fd);
        errno = n < 0 ? e : EIO;
        return errno_fail(L, "cannot append to", path);
    }
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* stat(path) -> {type=, mode=, size=, mtime=, uid=} or nil, err */
static int sys_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) == -1)
        return errno_fail(L, "cannot stat", path);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, S_ISDIR(st.st_mode) ? "directory" : S_ISREG(st.st_mode) ? "file" : "other");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, st.st_mode & 07777);
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_setfield(L, -2, "uid");
    return 1;
}

/* listdir(path) -> sorted array of names (without . and ..) */
static int sys_listdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d)
        return errno_fail(L, "cannot list", path);
    lua_newtable(L);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        lua_pushstring(L, de->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    /* sort in Lua terms: cheap, and keeps C free of allocation bookkeeping */
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

/* Lock files: lock(path) takes an exclusive flock held until unlock or process exit (kill -9
 * included: the kernel drops it), so a stale lock is recognised, never silently taken over. */
#define LOCK_MT "pgr.sys.lock"
struct lock { int fd; };

static int sys_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct lock *lk = lua_newuserdatauv(L, sizeof *lk, 0);
    lk->fd = -1;
    luaL_setmetatable(L, LOCK_MT);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd == -1)
        return errno_fail(L, "cannot open lock", path);
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        int e = errno;
        char holder[64] = "";
        ssize_t n = read(fd, holder, sizeof holder - 1);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\r\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK) {
            lua_pushnil(L);
            pgr_push_error(L, "locked", "%s is held by process %s", path, holder[0] ? holder : "?");
            lua_pushstring(L, holder);
            lua_setfield(L, -2, "holder");
            return 2;
        }
        errno = e;
        return errno_fail(L, "cannot lock", path);
    }
    lk->fd = fd;
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) == len)
        fsync(fd);
    return 1;
}

static int lock_release(lua_State *L)
{
    struct lock *lk = luaL_checkudata(L, 1, LOCK_MT);
    if (lk->fd >= 0) {
        flock(lk->fd, LOCK_UN);
        close(lk->fd);
        lk->fd = -1;
    }
    return 0;
}

/* read_password(prompt): reads a line from the terminal with echo off; nil, err without a TTY */
static int sys_read_password(lua_State *L)
{
    const char *prompt = luaL_optstring(L, 1, "Password: ");
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd == -1)
        return pgr_fail(L, "notty", "no terminal to read a password from");
    struct termios old, quiet;
    if (tcgetattr(fd, &old) == -1) {
        close(fd);
        return pgr_fail(L, "notty", "no terminal to read a password from");
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    if (write(fd, prompt, strlen(prompt)) < 0) { /* nothing useful to do */ }
    tcsetattr(fd, TCSAFLUSH, &quiet);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char c;
    while (read(fd, &c, 1) == 1 && c != '\n')
        luaL_addchar(&b, c);
    tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) { /* nothing useful to do */ }
    close(fd);
    luaL_pushresult(&b);
    return 1;
}

/* versions(): every library pgr runs with, as the libraries report themselves at run time; whether
 * the binary is static, its C library, and for the static one the Debian sources it was built from */
static int sys_versions(lua_State *L)
{
    lua_createtable(L, 0, 14);
    lua_pushstring(L, PGR_VERSION);
    lua_setfield(L, -2, "pgr");
    lua_pushstring(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "libcurl");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->ssl_version);
    lua_setfield(L, -2, "tls");
    int pqv = PQlibVersion();
    lua_pushfstring(L, "%d.%d", pqv / 10000, pqv % 10000);
    lua_setfield(L, -2, "libpq");
    lua_pushstring(L, yaml_get_version_string());
    lua_setfield(L, -2, "libyaml");
    lua_pushstring(L, cJSON_Version());
    lua_setfield(L, -2, "cjson");
    XML_Expat_Version ev = XML_ExpatVersionInfo();
    lua_pushfstring(L, "%d.%d.%d", ev.major, ev.minor, ev.micro);
    lua_setfield(L, -2, "expat");
    lua_pushstring(L, zlibVersion());
    lua_setfield(L, -2, "zlib");
    lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION));
    lua_setfield(L, -2, "openssl");
    lua_pushstring(L, rl_library_version);
    lua_setfield(L, -2, "readline");
#ifdef PGR_STATIC
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "static");
    lua_pushstring(L, PGR_STATIC_LIBC);
    lua_setfield(L, -2, "libc");
    lua_pushstring(L, curses_version());
    lua_setfield(L, -2, "ncurses");
    lua_pushstring(L, PGR_STATIC_SOURCES);
    lua_setfield(L, -2, "sources");
#else
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "static");
    lua_pushfstring(L, "glibc %s", gnu_get_libc_version());
    lua_setfield(L, -2, "libc");
#endif
    return 1;
}

/* A trust check's answer to Lua: true, or nil and an error ("untrusted" when the path is not one
 * pgr may trust, "io" when it could not be read) carrying the errno. */
static int trust_result(lua_State *L, int rc, const char *why)
{
    if (rc == -1) {
        int e = errno;
        lua_pushnil(L);
        pgr_push_error(L, e == EPERM ? "untrusted" : "io", "%s", why);
        lua_pushinteger(L, e);
        lua_setfield(L, -2, "errno");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* trusted(path [, "file"|"dir"]) -> true | nil, err (code "untrusted", or "io" when it cannot be
 * read): whether code or configuration may be loaded from path (host/trust.h) */
static int sys_trusted(lua_State *L)
{
    static const char *const kinds[] = { "file", "dir", NULL };
    const char *path = luaL_checkstring(L, 1);
    int kind = luaL_checkoption(L, 2, "file", kinds) == 1 ? PGR_TRUST_DIR : PGR_TRUST_FILE;
    char why[1024];
    return trust_result(L, pgr_trust_path(path, kind, why, sizeof why), why);
}

/* private_dir(path) -> true | nil, err: a directory of the effective user's own, mode 0700, not a
 * symbolic link (the state directory, runs/, locks/) */
static int sys_private_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char why[1024];
    return trust_result(L, pgr_trust_private_dir(path, why, sizeof why), why);
}

/* core_dumps() -> dumpable (bool), the core size limit (soft): pgr sets false, 0 at start */
static int sys_core_dumps(lua_State *L)
{
    struct rlimit rl;
    lua_pushboolean(L, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1);
    if (getrlimit(RLIMIT_CORE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        lua_pushinteger(L, (lua_Integer)rl.rlim_cur);
    else
        lua_pushnumber(L, HUGE_VAL);
    return 2;
}

/* executable() -> the absolute path of the running pgr binary (/proc/self/exe) | nil, err */
static int sys_executable(lua_State *L)
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return errno_fail(L, "cannot read", "/proc/self/exe");
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

int luaopen_pgr_sys(lua_State *L)
{
    static const luaL_Reg lock_meta[] = {
        { "__gc", lock_release }, { "__close", lock_release }, { NULL, NULL } };
    static const luaL_Reg lock_methods[] = { { "unlock", lock_release }, { NULL, NULL } };
    pgr_new_class(L, LOCK_MT, lock_methods, lock_meta);
    static const luaL_Reg fns[] = {
        { "isatty", sys_isatty }, { "now", sys_now }, { "time", sys_time }, { "sleep", sys_sleep },
        { "getpid", sys_getpid }, { "geteuid", sys_geteuid }, { "pid_alive", sys_pid_alive },
        { "kill", sys_kill }, { "mkdir", sys_mkdir },
        { "write_file", sys_write_file }, { "append_line", sys_append_line }, { "stat", sys_stat },
        { "fsync", sys_fsync },
        { "listdir", sys_listdir }, { "lock", sys_lock }, { "read_password", sys_read_password },
        { "versions", sys_versions }, { "trusted", sys_trusted }, { "private_dir", sys_private_dir },
        { "executable", sys_executable }, { "core_dumps", sys_core_dumps }, { NULL, NULL } };
    luaL_newlib(L, fns);
    return 1;
}
