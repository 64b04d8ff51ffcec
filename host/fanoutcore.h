/* fanoutcore.h — the fan-out engine: N child processes (ssh, or any program) each in its own process
 * group, at most `fanout` at once, output multiplexed with poll(), per-child deadlines. No Lua. */
#ifndef PGR_FANOUTCORE_H
#define PGR_FANOUTCORE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct fo_run fo_run;

typedef struct {
    int fanout;        /* children running at once; < 1 means 1 */
    double timeout;    /* seconds a child may run before its process group is killed; <= 0: none */
    double kill_grace; /* seconds between SIGTERM and SIGKILL (timeout and stop); <= 0: 1 second */
    size_t max_output; /* bytes kept per stream per child; the rest is counted and dropped */
    /* The children's environment is ours without every variable whose name, upper-cased, holds
     * one of these (NULL-terminated; NULL: the whole environment), e.g. "PASSWORD", "SECRET". Read
     * by fo_new only. */
    const char *const *env_drop;
} fo_config;

enum fo_state { FO_PENDING, FO_RUNNING, FO_DONE };

enum fo_outcome {
    FO_NONE,         /* not finished */
    FO_EXITED,       /* exit_code is set */
    FO_SIGNALED,     /* term_signal is set (killed by a signal not sent by us) */
    FO_TIMED_OUT,    /* ran past the timeout; its process group was killed */
    FO_SPAWN_FAILED, /* the program could not be started: spawn_errno */
    FO_STOPPED,      /* fo_stop killed it, or it never started */
};

enum fo_stream { FO_STDOUT = 0, FO_STDERR = 1 };

typedef struct {
    enum fo_state state;
    enum fo_outcome outcome;
    int exit_code;   /* FO_EXITED */
    int term_signal; /* FO_SIGNALED, or the signal that ended a timed-out/stopped child */
    int spawn_errno; /* FO_SPAWN_FAILED */
    pid_t pid;       /* while running; also its process group id */
    double elapsed;  /* seconds from start to end (running: so far) */
    char *data[2];   /* captured stdout, stderr: at most max_output bytes each, NUL-terminated */
    size_t len[2];   /* bytes kept */
    size_t total[2]; /* bytes the child wrote */
} fo_result;

enum fo_event { FO_EV_START, FO_EV_OUTPUT, FO_EV_DONE };

/* Called from fo_step for each child that starts, writes (one chunk of one stream), or ends. */
typedef void (*fo_event_fn)(void *ud, size_t index, enum fo_event ev, enum fo_stream stream,
                            const char *data, size_t len);

fo_run *fo_new(const fo_config *cfg);

/* Queues a child: argv[0] is searched in PATH (as execvp does); argv is copied.
 * Returns its index, or -1 (ENOMEM). */
long fo_add(fo_run *r, const char *const argv[]);

/* Starts queued children up to the fanout, waits at most wait_ms (< 0: until something happens)
 * for output, exits and deadlines, and reports them through fn (may be NULL). Returns how many
 * children are not done yet (0: all done), or -1 with errno EINTR when a signal interrupted the
 * wait (nothing is lost: call again, or fo_stop). */
long fo_step(fo_run *r, int wait_ms, fo_event_fn fn, void *ud);

/* Kills every running child's process group (SIGTERM, SIGKILL after the grace), reaps them, and
 * marks every unfinished child FO_STOPPED. Safe to call more than once. */
void fo_stop(fo_run *r);

/* fo_stop, then frees everything. NULL is fine. */
void fo_free(fo_run *r);

size_t fo_count(const fo_run *r);
const fo_result *fo_get(const fo_run *r, size_t index);

/* Children running now, and the most that ever ran at once. */
size_t fo_running(const fo_run *r);
size_t fo_max_running(const fo_run *r);

const char *fo_outcome_name(enum fo_outcome o);

#endif
