/* test_k8s.c — the pgr.k8s.core binding's byte mechanics against a small real HTTP/1.1 server on
 * loopback (a child process): watch lines split across chunks, quiet streams, cuts, HTTP errors,
 * response headers, and handles closed twice. */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

int luaopen_pgr_k8s_core(lua_State *L);

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void chunk(int fd, const char *s)
{
    char head[32];
    snprintf(head, sizeof head, "%zx\r\n", strlen(s));
    send_all(fd, head);
    send_all(fd, s);
    send_all(fd, "\r\n");
}

static const char *CHUNKED =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/* One connection: read the request head, answer by path. */
static void serve_one(int fd)
{
    char req[4096] = "";
    size_t len = 0;
    while (len < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
        ssize_t n = read(fd, req + len, sizeof req - 1 - len);
        if (n <= 0) return;
        len += (size_t)n;
        req[len] = 0;
    }
    char path[256] = "";
    sscanf(req, "%*s %255s", path);
    if (!strcmp(path, "/split")) {
        send_all(fd, CHUNKED);
        chunk(fd, "{\"a\":1}\n{\"b\"");
        usleep(50000);
        chunk(fd, ":2}\n\n");
        usleep(50000);
        chunk(fd, "{\"c\":3}");
        send_all(fd, "0\r\n\r\n");
    } else if (!strcmp(path, "/slow")) {
        send_all(fd, CHUNKED);
        usleep(400000);
        chunk(fd, "{\"late\":1}\n");
        send_all(fd, "0\r\n\r\n");
    } else if (!strcmp(path, "/cut")) {
        send_all(fd, CHUNKED);
        chunk(fd, "{\"x\":1}\n");
        /* no terminating chunk: the connection just ends */
    } else if (!strcmp(path, "/gone")) {
        const char *body = "{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\"}";
        char head[256];
        snprintf(head, sizeof head, "HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n", strlen(body));
        send_all(fd, head);
        send_all(fd, body);
    } else {
        const char *body = "{\"ok\":true}";
        char head[512];
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 "Warning: 299 - \"one\"\r\nWarning: 299 - \"two\"\r\nX-Path: %s\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n", path, strlen(body));
        send_all(fd, head);
        send_all(fd, body);
    }
}

static int lua_check(lua_State *L)
{
    tap_check(lua_toboolean(L, 1), "lua", (int)luaL_optinteger(L, 3, 0), luaL_checkstring(L, 2));
    return 0;
}

static const char *SCRIPT =
    "local core, server = ...\n"
    "local c = assert(core.client { server = server .. '/', timeout = 5 })\n"
    "check(c:server() == server, 'the trailing slash of the server is dropped', 1)\n"
    "local status, body, headers = c:request('GET', '/get')\n"
    "check(status == 200 and body == '{\"ok\":true}', 'request returns status and body', 2)\n"
    "check(headers['x-path'] == '/get', 'header names are lower case', 3)\n"
    "check(headers.warning == '299 - \"one\", 299 - \"two\"', 'repeated headers are joined', 4)\n"
    "local s = assert(c:watch('/split'))\n"
    "check(s:next(2) == '{\"a\":1}', 'first line', 5)\n"
    "check(s:next(2) == '{\"b\":2}', 'a line split across chunks', 6)\n"
    "check(s:next(2) == '{\"c\":3}', 'blank lines skipped; a last line without newline', 7)\n"
    "local eof, err = s:next(2)\n"
    "check(eof == nil and err == nil, 'then the end of the stream', 8)\n"
    "s:close() s:close()\n"
    "check(s:next(0) == nil, 'a closed stream reads as ended', 9)\n"
    "s = assert(c:watch('/slow'))\n"
    "check(s:next(0.05) == false, 'nothing within the wait is false', 10)\n"
    "check(s:next(3) == '{\"late\":1}', 'the line once it comes', 11)\n"
    "s:close()\n"
    "s = assert(c:watch('/cut'))\n"
    "check(s:next(2) == '{\"x\":1}', 'the line before a cut', 12)\n"
    "local line, cut = s:next(2)\n"
    "check(line == nil and (cut == nil or type(cut.code) == 'string'), 'a cut ends the stream', 13)\n"
    "local none, gone = c:watch('/gone')\n"
    "check(none == nil and gone.code == 'http' and gone.status == 410, 'an HTTP error answer', 14)\n"
    "check(gone.body:find('Expired', 1, true) ~= nil, 'carries its body', 15)\n"
    "c:close() c:close()\n"
    "check(not pcall(c.request, c, 'GET', '/get'), 'a closed client refuses requests', 16)\n"
    "local bad, berr = core.client { server = 'http://127.24.0.1:1', connect_timeout = 2 }:request('GET', '/')\n"
    "check(bad == nil and berr.code == 'connect', 'connection refused is code connect', 17)\n"
    "check(not pcall(core.client, {}), 'a client needs a server', 18)\n";

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = 0;
    inet_pton(AF_INET, "127.24.0.1", &a.sin_addr);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 16) != 0) {
        perror("bind");
        return 1;
    }
    socklen_t alen = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &alen);
    pid_t child = fork();
    if (child == 0) {
        alarm(60);  /* never outlive a test that died */
        for (;;) {
            int fd = accept(ls, NULL, NULL);
            if (fd < 0) continue;
            serve_one(fd);
            close(fd);
        }
    }
    close(ls);

    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, lua_check);
    lua_setglobal(L, "check");
    if (luaL_loadstring(L, SCRIPT) != LUA_OK) {
        printf("not ok - script: %s\n", lua_tostring(L, -1));
        return 1;
    }
    luaopen_pgr_k8s_core(L);
    lua_pushfstring(L, "http://127.24.0.1:%d", (int)ntohs(a.sin_port));
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) CHECK(0, lua_tostring(L, -1));
    lua_close(L);

    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    return tap_done();
}
