/* pgmulti.c — libpq connections opened side by side (see pgmulti.h): the slow part of a login (TCP, TLS,
 * SCRAM, the server forking a backend) overlaps across servers and users instead of adding up. */
#include "pgmulti.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connection still being driven: what PQconnectPoll last asked to wait for. */
static int in_progress(PostgresPollingStatusType s)
{
    return s != PGRES_POLLING_OK && s != PGRES_POLLING_FAILED;
}

size_t pgm_connect_all(size_t n, const pgm_params *params, int timeout_ms, PGconn **out,
                       enum pgm_outcome *outcome)
{
    if (n == 0)
        return 0;
    PostgresPollingStatusType *st = calloc(n, sizeof *st);
    struct pollfd *fds = calloc(n, sizeof *fds);
    size_t *owner = calloc(n, sizeof *owner);
    if (!st || !fds || !owner) {
        for (size_t i = 0; i < n; i++) {
            out[i] = NULL;
            outcome[i] = PGM_NOMEM;
        }
        free(st);
        free(fds);
        free(owner);
        return 0;
    }
    long long deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
    size_t pending = 0, ok = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = PQconnectStartParams(params[i].kw, params[i].val, 0);
        if (!out[i]) {
            outcome[i] = PGM_NOMEM;
            st[i] = PGRES_POLLING_FAILED;
        } else if (PQstatus(out[i]) == CONNECTION_BAD) {
            outcome[i] = PGM_FAILED;
            st[i] = PGRES_POLLING_FAILED;
        } else {
            /* libpq's protocol: after PQconnectStart, wait until the socket is writable */
            st[i] = PGRES_POLLING_WRITING;
            pending++;
        }
    }
    while (pending > 0) {
        nfds_t nfds = 0;
        for (size_t i = 0; i < n; i++) {
            if (!in_progress(st[i]))
                continue;
            int fd = PQsocket(out[i]);
            if (fd < 0) {
                /* no socket while in progress: libpq has given up on it */
                st[i] = PGRES_POLLING_FAILED;
                outcome[i] = PGM_FAILED;
                pending--;
                continue;
            }
            fds[nfds].fd = fd;
            fds[nfds].events = st[i] == PGRES_POLLING_READING ? POLLIN : POLLOUT;
            fds[nfds].revents = 0;
            owner[nfds++] = i;
        }
        if (nfds == 0)
            break;
        int wait = -1;
        if (deadline) {
            long long left = deadline - now_ms();
            if (left <= 0)
                break;
            wait = left > 60000 ? 60000 : (int)left;
        }
        int r = poll(fds, nfds, wait);
        if (r < 0 && errno != EINTR)
            break; /* cannot wait any more: what is not done counts as timed out */
        if (r <= 0)
            continue;
        for (nfds_t k = 0; k < nfds; k++) {
            if (!fds[k].revents)
                continue;
            size_t i = owner[k];
            st[i] = PQconnectPoll(out[i]);
            if (st[i] == PGRES_POLLING_OK) {
                outcome[i] = PGM_OK;
                ok++;
                pending--;
            } else if (st[i] == PGRES_POLLING_FAILED) {
                outcome[i] = PGM_FAILED;
                pending--;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (in_progress(st[i])) {
            PQfinish(out[i]);
            out[i] = NULL;
            outcome[i] = PGM_TIMED_OUT;
        }
    }
    free(st);
    free(fds);
    free(owner);
    return ok;
}
