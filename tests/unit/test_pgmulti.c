/* test_pgmulti.c — unit tests of pgm_connect_all against real peers on loopback: a real PostgreSQL
 * server (tests/lib/pgserver.sh; right and wrong passwords side by side), and in one call a closed port
 * (refused), a listener that never answers (cut by the deadline) and bad parameters. */
#include "pgmulti.h"
#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PASSWORD "pgmulti-secret"

/* A TCP socket on 127.0.0.1 bound to a free port, listening (listen = 1) or closed again (a port that
 * refuses). Returns the port; *fd is the listener (or -1). */
static int loopback_port(int listen_too, int *fd)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(s, (struct sockaddr *)&a, &len) != 0)
        return -1;
    if (listen_too) {
        listen(s, 16);
        *fd = s;
    } else {
        close(s);
        *fd = -1;
    }
    return ntohs(a.sin_port);
}

struct server {
    char dir[64];
    char host[32];
    char port[16];
    int up;
};

static void server_start(struct server *srv)
{
    memset(srv, 0, sizeof *srv);
    snprintf(srv->dir, sizeof srv->dir, "/tmp/pgr-pgmulti.%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "PGSERVER_PASSWORD=%s tests/lib/pgserver.sh up %s 127.0.0.1 0 2>&1", PASSWORD,
             srv->dir);
    FILE *p = popen(cmd, "r");
    char line[512] = "";
    if (p) {
        while (fgets(line, sizeof line, p))
            if (sscanf(line, "host=%31s port=%15s", srv->host, srv->port) == 2)
                srv->up = 1;
        pclose(p);
    }
}

static void server_stop(struct server *srv)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "tests/lib/pgserver.sh down %s >/dev/null 2>&1", srv->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "# could not stop the server in %s\n", srv->dir);
}

static void finish_all(PGconn **c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (c[i])
            PQfinish(c[i]);
}

static void test_nothing(void)
{
    CHECK_INT(pgm_connect_all(0, NULL, 1000, NULL, NULL), 0, "no connections: nothing to do");
}

static void test_refused_and_silent(void)
{
    int lfd, cfd;
    char silent[16], closed[16];
    snprintf(silent, sizeof silent, "%d", loopback_port(1, &lfd));
    snprintf(closed, sizeof closed, "%d", loopback_port(0, &cfd));
    const char *kw[] = { "host", "port", "user", "dbname", "sslmode", NULL };
    const char *v_silent[] = { "127.0.0.1", silent, "u", "d", "disable", NULL };
    const char *v_closed[] = { "127.0.0.1", closed, "u", "d", "disable", NULL };
    const char *bad_kw[] = { "no_such_option", NULL };
    const char *bad_v[] = { "x", NULL };
    pgm_params p[3] = { { kw, v_silent }, { kw, v_closed }, { bad_kw, bad_v } };
    PGconn *out[3];
    enum pgm_outcome oc[3];
    size_t ok = pgm_connect_all(3, p, 3000, out, oc);
    CHECK_INT(ok, 0, "none of them connects");
    CHECK_INT(oc[0], PGM_TIMED_OUT, "a server that never answers is cut by the deadline");
    CHECK(out[0] == NULL, "the abandoned attempt is finished, not handed back");
    CHECK_INT(oc[1], PGM_FAILED, "a closed port fails");
    CHECK(out[1] && strstr(PQerrorMessage(out[1]), "refused"), "its message says the connection was refused");
    CHECK_INT(oc[2], PGM_FAILED, "an unknown parameter fails at once");
    CHECK(out[2] && strstr(PQerrorMessage(out[2]), "no_such_option"), "its message names the parameter");
    finish_all(out, 3);
    close(lfd);
}

static void test_real_server(void)
{
    struct server srv;
    server_start(&srv);
    if (!CHECK(srv.up, "a real PostgreSQL server started (tests/lib/pgserver.sh)"))
        return;
    const char *kw[] = { "host", "port", "user", "password", "dbname", NULL };
    const char *good[] = { srv.host, srv.port, "postgres", PASSWORD, "postgres", NULL };
    const char *wrong[] = { srv.host, srv.port, "postgres", "not-the-password", "postgres", NULL };
    enum { N = 7 };
    pgm_params p[N];
    for (int i = 0; i < N; i++)
        p[i] = (pgm_params){ kw, good };
    p[3].val = wrong;
    PGconn *out[N];
    enum pgm_outcome oc[N];
    /* generous: SCRAM under valgrind on a busy machine takes seconds; the call returns when all are done */
    size_t ok = pgm_connect_all(N, p, 120000, out, oc);
    CHECK_INT(ok, N - 1, "every login with the right password connects, side by side");
    int all_ok = 1;
    for (int i = 0; i < N; i++)
        if (i != 3)
            all_ok &= oc[i] == PGM_OK && out[i] && PQstatus(out[i]) == CONNECTION_OK;
    CHECK(all_ok, "each of them is a working connection");
    PGresult *r = out[0] ? PQexec(out[0], "SELECT 6 * 7") : NULL;
    CHECK(r && PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "42") == 0,
          "a connection it opened runs a query");
    PQclear(r);
    CHECK_INT(oc[3], PGM_FAILED, "a wrong password fails");
    CHECK(out[3] && strstr(PQerrorMessage(out[3]), "password authentication failed"),
          "with the server's message");
    CHECK(out[3] && !strstr(PQerrorMessage(out[3]), "not-the-password"), "which does not hold the password");
    finish_all(out, N);
    server_stop(&srv);
}

int main(void)
{
    test_nothing();
    test_refused_and_silent();
    if (getuid() == 0)
        test_real_server();
    else
        printf("# skipped the real server: tests/lib/pgserver.sh runs as root\n");
    return tap_done();
}
