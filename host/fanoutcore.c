/* fanoutcore.c — the fan-out engine declared in fanoutcore.h: spawning children into their own
 * process groups, the poll() loop over their pipes and pidfds, deadlines, and killing/reaping. */
#include "fanoutcore.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct child {
    fo_result res;
    char **argv;
    int fd[2];      /* read ends of stdout/stderr; -1 once closed */
    int pidfd;      /* -1 when the kernel has none: then exits are polled */
    size_t cap[2];  /* allocated size of res.data[] */
    double start, deadline, kill_at;
    int timed_out, stopping, killed;
};

struct fo_run {
    fo_config cfg;
    struct child *c;
    size_t n, alloc;
    size_t next;    /* first child never started */
    size_t running, max_running, done;
    struct pollfd *pfd;
    size_t *pmap;   /* pfd[k] belongs to child pmap[k] / 3, kind pmap[k] % 3 (0 out, 1 err, 2 pid) */
    size_t pcap;
    char *prog_name, *prog_path; /* the last program resolved in PATH (usually every child's) */
    int prog_errno;
    char **envp;    /* the children's environment (cfg.env_drop applied), or NULL: environ */
    char buf[65536];
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether the variable "NAME=value" has a name holding one of the (upper-case) words. */
static int env_dropped(const char *var, const char *const *words)
{
    char name[256];
    size_t n = 0;
    for (; var[n] && var[n] != '=' && n < sizeof name - 1; n++)
        name[n] = (char)toupper((unsigned char)var[n]);
    name[n] = '\0';
    for (const char *const *w = words; *w; w++)
        if (**w && strstr(name, *w))
            return 1;
    return 0;
}

static char **filtered_env(const char *const *words)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **out = calloc(n + 1, sizeof *out);
    if (!out)
        return NULL;
    size_t k = 0;
    for (char **e = environ; e && *e; e++) {
        if (env_dropped(*e, words))
            continue;
        if (!(out[k] = strdup(*e))) {
            while (k > 0)
                free(out[--k]);
            free(out);
            return NULL;
        }
        k++;
    }
    return out;
}

fo_run *fo_new(const fo_config *cfg)
{
    fo_run *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = *cfg;
    r->cfg.env_drop = NULL; /* not kept: the words need not outlive this call */
    if (cfg->env_drop && !(r->envp = filtered_env(cfg->env_drop))) {
        free(r);
        return NULL;
    }
    if (r->cfg.fanout < 1)
        r->cfg.fanout = 1;
    if (r->cfg.kill_grace <= 0)
        r->cfg.kill_grace = 1.0;
    return r;
}

long fo_add(fo_run *r, const char *const argv[])
{
    if (r->n == r->alloc) {
        size_t na = r->alloc ? r->alloc * 2 : 16;
        struct child *nc = realloc(r->c, na * sizeof *nc);
        if (!nc)
            return -1;
        r->c = nc;
        r->alloc = na;
    }
    size_t argc = 0;
    while (argv[argc])
        argc++;
    char **copy = calloc(argc + 1, sizeof *copy);
    if (!copy)
        return -1;
    for (size_t i = 0; i < argc; i++) {
        copy[i] = strdup(argv[i]);
        if (!copy[i]) {
            for (size_t j = 0; j < i; j++)
                free(copy[j]);
            free(copy);
            return -1;
        }
    }
    struct child *c = &r->c[r->n];
    memset(c, 0, sizeof *c);
    c->argv = copy;
    c->fd[0] = c->fd[1] = c->pidfd = -1;
    c->res.state = FO_PENDING;
    return (long)r->n++;
}

size_t fo_count(const fo_run *r) { return r->n; }
const fo_result *fo_get(const fo_run *r, size_t index) { return index < r->n ? &r->c[index].res : NULL; }
size_t fo_running(const fo_run *r) { return r->running; }
size_t fo_max_running(const fo_run *r) { return r->max_running; }

const char *fo_outcome_name(enum fo_outcome o)
{
    switch (o) {
    case FO_NONE: return "none";
    case FO_EXITED: return "exited";
    case FO_SIGNALED: return "signaled";
    case FO_TIMED_OUT: return "timed_out";
    case FO_SPAWN_FAILED: return "spawn_failed";
    case FO_STOPPED: return "stopped";
    }
    return "none";
}

static void emit(fo_event_fn fn, void *ud, size_t i, enum fo_event ev, enum fo_stream s,
                 const char *data, size_t len)
{
    if (fn)
        fn(ud, i, ev, s, data, len);
}

/* Keeps what fits under max_output; the total is counted either way. */
static void keep(fo_run *r, struct child *c, int s, const char *data, size_t n)
{
    c->res.total[s] += n;
    size_t room = r->cfg.max_output > c->res.len[s] ? r->cfg.max_output - c->res.len[s] : 0;
    size_t take = n < room ? n : room;
    if (take == 0)
        return;
    size_t need = c->res.len[s] + take + 1;
    if (need > c->cap[s]) {
        size_t nc = c->cap[s] ? c->cap[s] : 256;
        while (nc < need)
            nc *= 2;
        if (nc > r->cfg.max_output + 1)
            nc = r->cfg.max_output + 1;
        char *p = realloc(c->res.data[s], nc);
        if (!p) {
            /* out of memory: keep what we have rather than fail the whole run */
            return;
        }
        c->res.data[s] = p;
        c->cap[s] = nc;
    }
    memcpy(c->res.data[s] + c->res.len[s], data, take);
    c->res.len[s] += take;
    c->res.data[s][c->res.len[s]] = '\0';
}

/* Reads what the pipe has (a few chunks at most, so one chatty child cannot starve the others,
 * or everything when draining). Closes it at EOF. */
static void read_stream(fo_run *r, size_t i, int s, int drain, fo_event_fn fn, void *ud)
{
    struct child *c = &r->c[i];
    for (int reads = 0; c->fd[s] >= 0 && (drain || reads < 4);) {
        ssize_t n = read(c->fd[s], r->buf, sizeof r->buf);
        if (n > 0) {
            reads++;
            keep(r, c, s, r->buf, (size_t)n);
            emit(fn, ud, i, FO_EV_OUTPUT, (enum fo_stream)s, r->buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close(c->fd[s]);
        c->fd[s] = -1;
    }
}

static void close_child_fds(struct child *c)
{
    for (int s = 0; s < 2; s++) {
        if (c->fd[s] >= 0)
            close(c->fd[s]);
        c->fd[s] = -1;
    }
    if (c->pidfd >= 0)
        close(c->pidfd);
    c->pidfd = -1;
}

/* The child has exited (not yet reaped): sweep whatever else is left in its process group, take the
 * output it left in the pipes, reap it, record how it ended. */
static void finish(fo_run *r, size_t i, fo_event_fn fn, void *ud)
{
    struct child *c = &r->c[i];
    /* the zombie leader keeps the group id ours, so this cannot hit an unrelated process */
    kill(-c->res.pid, SIGKILL);
    read_stream(r, i, FO_STDOUT, 1, fn, ud);
    read_stream(r, i, FO_STDERR, 1, fn, ud);
    int st = 0;
    while (waitpid(c->res.pid, &st, 0) == -1 && errno == EINTR)
        ;
    close_child_fds(c);
    if (WIFSIGNALED(st))
        c->res.term_signal = WTERMSIG(st);
    if (c->timed_out)
        c->res.outcome = FO_TIMED_OUT;
    else if (c->stopping)
        c->res.outcome = FO_STOPPED;
    else if (WIFEXITED(st)) {
        c->res.outcome = FO_EXITED;
        c->res.exit_code = WEXITSTATUS(st);
    } else
        c->res.outcome = FO_SIGNALED;
    c->res.elapsed = mono() - c->start;
    c->res.state = FO_DONE;
    r->running--;
    r->done++;
    emit(fn, ud, i, FO_EV_DONE, FO_STDOUT, NULL, 0);
}

/* Whether the child has exited, without reaping it (so its process group stays ours). */
static int has_exited(struct child *c)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)c->res.pid, &si, WEXITED | WNOHANG | WNOWAIT) == -1)
        return errno == ECHILD;
    return si.si_pid != 0;
}

/* Finds the program as execvp would, once per run: a missing ssh is then reported the same way
 * whatever the libc or a debugger does with posix_spawn's exec failures. 0 or an errno. */
static int resolve(fo_run *r, const char *name, const char **path)
{
    if (r->prog_name && strcmp(r->prog_name, name) == 0) {
        *path = r->prog_path;
        return r->prog_errno;
    }
    free(r->prog_name);
    free(r->prog_path);
    r->prog_name = strdup(name);
    r->prog_path = NULL;
    r->prog_errno = ENOENT;
    if (!r->prog_name)
        return ENOMEM;
    if (strchr(name, '/')) {
        r->prog_path = strdup(name);
        r->prog_errno = access(name, X_OK) == 0 ? 0 : errno;
    } else if (*name) {
        const char *dirs = getenv("PATH");
        if (!dirs || !*dirs)
            dirs = "/bin:/usr/bin";
        size_t nlen = strlen(name);
        for (const char *d = dirs; d; d = strchr(d, ':') ? strchr(d, ':') + 1 : NULL) {
            size_t dlen = strchr(d, ':') ? (size_t)(strchr(d, ':') - d) : strlen(d);
            char *cand = malloc(dlen + nlen + 3);
            if (!cand)
                return ENOMEM;
            if (dlen == 0)
                memcpy(cand, ".", 2), dlen = 1;
            else
                memcpy(cand, d, dlen);
            cand[dlen] = '/';
            memcpy(cand + dlen + 1, name, nlen + 1);
            struct stat st;
            if (access(cand, X_OK) == 0 && stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
                r->prog_path = cand;
                r->prog_errno = 0;
                break;
            }
            if (errno == EACCES)
                r->prog_errno = EACCES;
            free(cand);
        }
    }
    if (!r->prog_path && r->prog_errno == 0)
        r->prog_errno = ENOENT;
    *path = r->prog_path;
    return r->prog_errno;
}

static void start(fo_run *r, size_t i, fo_event_fn fn, void *ud)
{
    struct child *c = &r->c[i];
    int out[2] = { -1, -1 }, err[2] = { -1, -1 };
    const char *prog = NULL;
    c->start = mono();
    int rc = resolve(r, c->argv[0], &prog);
    if (rc != 0) {
        /* reported below as a spawn failure */
    } else if (pipe2(out, O_CLOEXEC) == -1 || pipe2(err, O_CLOEXEC) == -1) {
        rc = errno;
    } else {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t at;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&at);
        /* stdin is /dev/null: a child never competes with us for the terminal */
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        posix_spawn_file_actions_adddup2(&fa, err[1], 2);
        sigset_t all, none;
        sigfillset(&all);
        sigemptyset(&none);
        /* own process group: Ctrl-C on the terminal reaches only us, and a kill reaches all of it */
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                          POSIX_SPAWN_SETSIGMASK);
        posix_spawnattr_setpgroup(&at, 0);
        posix_spawnattr_setsigdefault(&at, &all);
        posix_spawnattr_setsigmask(&at, &none);
        rc = posix_spawn(&c->res.pid, prog, &fa, &at, c->argv, r->envp ? r->envp : environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
    }
    if (out[1] >= 0)
        close(out[1]);
    if (err[1] >= 0)
        close(err[1]);
    if (rc != 0) {
        if (out[0] >= 0)
            close(out[0]);
        if (err[0] >= 0)
            close(err[0]);
        c->res.pid = 0;
        c->res.outcome = FO_SPAWN_FAILED;
        c->res.spawn_errno = rc;
        c->res.state = FO_DONE;
        r->done++;
        emit(fn, ud, i, FO_EV_START, FO_STDOUT, NULL, 0);
        emit(fn, ud, i, FO_EV_DONE, FO_STDOUT, NULL, 0);
        return;
    }
    c->fd[0] = out[0];
    c->fd[1] = err[0];
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
#ifdef SYS_pidfd_open
    /* a kernel (or valgrind) without pidfd_open says so once: later children are polled at once */
    static _Atomic int no_pidfd;
    if (!no_pidfd) {
        c->pidfd = (int)syscall(SYS_pidfd_open, c->res.pid, 0);
        if (c->pidfd < 0 && errno == ENOSYS)
            no_pidfd = 1;
    }
#endif
    if (c->pidfd >= 0)
        fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
    c->deadline = r->cfg.timeout > 0 ? c->start + r->cfg.timeout : 0;
    c->res.state = FO_RUNNING;
    r->running++;
    if (r->running > r->max_running)
        r->max_running = r->running;
    emit(fn, ud, i, FO_EV_START, FO_STDOUT, NULL, 0);
}

static void start_pending(fo_run *r, fo_event_fn fn, void *ud)
{
    while (r->next < r->n && r->running < (size_t)r->cfg.fanout)
        start(r, r->next++, fn, ud);
}

static int grow_poll(fo_run *r, size_t need)
{
    if (need <= r->pcap)
        return 0;
    struct pollfd *p = realloc(r->pfd, need * sizeof *p);
    if (!p)
        return -1;
    r->pfd = p;
    size_t *m = realloc(r->pmap, need * sizeof *m);
    if (!m)
        return -1;
    r->pmap = m;
    r->pcap = need;
    return 0;
}

static void check_deadlines(fo_run *r)
{
    double now = mono();
    for (size_t i = 0; i < r->next; i++) {
        struct child *c = &r->c[i];
        if (c->res.state != FO_RUNNING)
            continue;
        c->res.elapsed = now - c->start;
        if (c->deadline > 0 && !c->timed_out && now >= c->deadline) {
            c->timed_out = 1;
            c->kill_at = now + r->cfg.kill_grace;
            kill(-c->res.pid, SIGTERM);
        } else if (c->timed_out && !c->killed && now >= c->kill_at) {
            c->killed = 1;
            kill(-c->res.pid, SIGKILL);
        }
    }
}

long fo_step(fo_run *r, int wait_ms, fo_event_fn fn, void *ud)
{
    start_pending(r, fn, ud);
    if (r->done == r->n)
        return 0;
    if (grow_poll(r, 3 * r->running) == -1) {
        errno = ENOMEM;
        return -1;
    }
    double now = mono();
    double wait = wait_ms < 0 ? -1 : wait_ms / 1000.0;
    size_t np = 0;
    int polled_exit = 0;
    for (size_t i = 0; i < r->next; i++) {
        struct child *c = &r->c[i];
        if (c->res.state != FO_RUNNING)
            continue;
        for (int k = 0; k < 3; k++) {
            int fd = k < 2 ? c->fd[k] : c->pidfd;
            if (fd < 0)
                continue;
            r->pfd[np] = (struct pollfd){ .fd = fd, .events = POLLIN };
            r->pmap[np++] = i * 3 + (size_t)k;
        }
        if (c->pidfd < 0)
            polled_exit = 1;
        double at = c->timed_out ? (c->killed ? 0 : c->kill_at) : c->deadline;
        if (at > 0 && (wait < 0 || at - now < wait))
            wait = at - now < 0 ? 0 : at - now;
    }
    /* without a pidfd an exit wakes nobody: look again soon */
    if (polled_exit && (wait < 0 || wait > 0.02))
        wait = 0.02;
    /* a far deadline must not overflow poll()'s int milliseconds; waking after a day is harmless */
    if (wait > 86400)
        wait = 86400;
    int ms = wait < 0 ? -1 : (int)(wait * 1000.0 + 0.999);
    int nready = poll(r->pfd, (nfds_t)np, ms);
    if (nready == -1) {
        if (errno != EINTR)
            errno = EINTR; /* only signals and ENOMEM end poll early; both mean: ask again */
        return -1;
    }
    for (size_t k = 0; k < np && nready > 0; k++) {
        if (!r->pfd[k].revents)
            continue;
        size_t i = r->pmap[k] / 3, kind = r->pmap[k] % 3;
        struct child *c = &r->c[i];
        if (c->res.state != FO_RUNNING)
            continue;
        if (kind < 2) {
            if (c->fd[kind] == r->pfd[k].fd)
                read_stream(r, i, (int)kind, 0, fn, ud);
        } else if (c->pidfd == r->pfd[k].fd) {
            finish(r, i, fn, ud);
        }
    }
    if (polled_exit) {
        for (size_t i = 0; i < r->next; i++) {
            struct child *c = &r->c[i];
            if (c->res.state == FO_RUNNING && c->pidfd < 0 && has_exited(c))
                finish(r, i, fn, ud);
        }
    }
    check_deadlines(r);
    start_pending(r, fn, ud);
    return (long)(r->n - r->done);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { 0, ms * 1000000L };
    nanosleep(&ts, NULL);
}

void fo_stop(fo_run *r)
{
    if (!r)
        return;
    for (size_t i = r->next; i < r->n; i++) {
        r->c[i].res.state = FO_DONE;
        r->c[i].res.outcome = FO_STOPPED;
        r->done++;
    }
    r->next = r->n;
    if (r->running == 0)
        return;
    for (size_t i = 0; i < r->n; i++) {
        struct child *c = &r->c[i];
        if (c->res.state == FO_RUNNING && !c->stopping) {
            c->stopping = 1;
            kill(-c->res.pid, SIGTERM);
        }
    }
    double until = mono() + r->cfg.kill_grace;
    while (r->running > 0) {
        int late = mono() >= until;
        for (size_t i = 0; i < r->n; i++) {
            struct child *c = &r->c[i];
            if (c->res.state != FO_RUNNING)
                continue;
            if (late)
                kill(-c->res.pid, SIGKILL);
            if (late || has_exited(c))
                finish(r, i, NULL, NULL);
        }
        if (r->running > 0)
            sleep_ms(5);
    }
}

void fo_free(fo_run *r)
{
    if (!r)
        return;
    fo_stop(r);
    for (size_t i = 0; i < r->n; i++) {
        struct child *c = &r->c[i];
        for (char **a = c->argv; a && *a; a++)
            free(*a);
        free(c->argv);
        free(c->res.data[0]);
        free(c->res.data[1]);
    }
    free(r->c);
    free(r->pfd);
    free(r->pmap);
    free(r->prog_name);
    free(r->prog_path);
    for (char **e = r->envp; e && *e; e++)
        free(*e);
    free(r->envp);
    free(r);
}
