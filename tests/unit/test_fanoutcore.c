/* test_fanoutcore.c — unit tests of the fan-out engine with local `sh -c` children standing in for
 * ssh: capture, exit/signal outcomes, the fanout limit, timeouts killing whole process groups, stop. */
#include "fanoutcore.h"
#include "tap.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static fo_config config(int fanout, double timeout)
{
    fo_config c = { .fanout = fanout, .timeout = timeout, .kill_grace = 1, .max_output = 1 << 20 };
    return c;
}

static long add_sh(fo_run *r, const char *script)
{
    const char *argv[] = { "sh", "-c", script, NULL };
    return fo_add(r, argv);
}

/* Steps until every child is done (bounded, so a bug fails the test instead of hanging it). */
static int run_all(fo_run *r, fo_event_fn fn, void *ud)
{
    double until = now() + 60;
    long left;
    while ((left = fo_step(r, 1000, fn, ud)) != 0) {
        if (left < 0 && errno != EINTR)
            return -1;
        if (now() > until)
            return -1;
    }
    return 0;
}

/* Events seen, to check their order and that output events add up to the captured output. */
struct seen {
    int starts[16], dones[16], out_after_done;
    char out[16][256];
    size_t outlen[16];
};

static void record(void *ud, size_t i, enum fo_event ev, enum fo_stream s, const char *data, size_t len)
{
    struct seen *x = ud;
    if (i >= 16)
        return;
    if (ev == FO_EV_START)
        x->starts[i]++;
    else if (ev == FO_EV_DONE)
        x->dones[i]++;
    else {
        if (x->dones[i] || !x->starts[i])
            x->out_after_done++;
        if (s == FO_STDOUT && x->outlen[i] + len < sizeof x->out[i]) {
            memcpy(x->out[i] + x->outlen[i], data, len);
            x->outlen[i] += len;
        }
    }
}

static void test_capture_and_exit(void)
{
    fo_config cfg = config(4, 0);
    fo_run *r = fo_new(&cfg);
    add_sh(r, "echo hello; echo oops >&2; exit 3");
    add_sh(r, "printf 'no newline'");
    add_sh(r, "printf 'a\\000b\\001\\377'");
    add_sh(r, "kill -9 $$");
    const char *bad[] = { "/nonexistent/pgr-no-such-program", NULL };
    fo_add(r, bad);
    const char *noexec[] = { "/dev/null", NULL };
    fo_add(r, noexec);
    struct seen x;
    memset(&x, 0, sizeof x);
    double t0 = now();
    CHECK(run_all(r, record, &x) == 0, "all children finish");
    double took = now() - t0;
    const fo_result *a = fo_get(r, 0);
    CHECK_INT(a->outcome, FO_EXITED, "exit: outcome exited");
    CHECK_INT(a->exit_code, 3, "exit: code 3");
    CHECK_STR(a->data[FO_STDOUT], "hello\n", "stdout captured");
    CHECK_STR(a->data[FO_STDERR], "oops\n", "stderr captured apart");
    CHECK_STR(fo_get(r, 1)->data[FO_STDOUT], "no newline", "output without a trailing newline");
    const fo_result *b = fo_get(r, 2);
    CHECK(b->len[FO_STDOUT] == 5 && memcmp(b->data[FO_STDOUT], "a\0b\1\377", 5) == 0,
          "binary output kept byte for byte");
    CHECK_INT(fo_get(r, 3)->outcome, FO_SIGNALED, "killed child: outcome signaled");
    CHECK_INT(fo_get(r, 3)->term_signal, SIGKILL, "killed child: signal 9");
    CHECK_INT(fo_get(r, 4)->outcome, FO_SPAWN_FAILED, "missing program: spawn failed");
    CHECK_INT(fo_get(r, 4)->spawn_errno, ENOENT, "missing program: ENOENT");
    CHECK_INT(fo_get(r, 5)->outcome, FO_SPAWN_FAILED, "not executable: spawn failed");
    CHECK_INT(fo_get(r, 5)->spawn_errno, EACCES, "not executable: EACCES");
    int order = 1;
    for (int i = 0; i < 6; i++)
        order = order && x.starts[i] == 1 && x.dones[i] == 1;
    CHECK(order && x.out_after_done == 0, "each child: one start, output, one done, in that order");
    CHECK(x.outlen[0] == 6 && memcmp(x.out[0], "hello\n", 6) == 0, "output events carry the bytes");
    CHECK(fo_get(r, 0)->elapsed > 0 && fo_get(r, 0)->elapsed <= took, "elapsed measured, within the run");
    fo_free(r);
}

static void test_large_output_and_cap(void)
{
    fo_config cfg = config(2, 0);
    cfg.max_output = 8 << 20;
    fo_run *r = fo_new(&cfg);
    /* both streams at once: a reader that drained only one pipe would deadlock here */
    add_sh(r, "head -c 3000000 /dev/zero & head -c 2000000 /dev/zero >&2; wait");
    fo_run *capped;
    fo_config small = config(1, 0);
    small.max_output = 1000;
    capped = fo_new(&small);
    add_sh(capped, "head -c 100000 /dev/zero; echo tail");
    CHECK(run_all(r, NULL, NULL) == 0, "large output: finishes");
    CHECK(fo_get(r, 0)->len[FO_STDOUT] == 3000000 && fo_get(r, 0)->len[FO_STDERR] == 2000000,
          "large output: every byte of both streams");
    CHECK(run_all(capped, NULL, NULL) == 0, "capped output: finishes");
    const fo_result *c = fo_get(capped, 0);
    CHECK_INT(c->len[FO_STDOUT], 1000, "capped output: kept up to max_output");
    CHECK_INT(c->total[FO_STDOUT], 100005, "capped output: the total is still counted");
    CHECK_INT(c->outcome, FO_EXITED, "capped output: child ran to the end (never blocked)");
    fo_free(r);
    fo_free(capped);
}

static void test_fanout_limit(void)
{
    char dir[] = "/tmp/pgr-fanout-unit.XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "limit: temp dir");
    fo_config cfg = config(3, 0);
    fo_run *r = fo_new(&cfg);
    char script[512];
    /* each child counts the children alive beside it; the count is independent of the engine's */
    snprintf(script, sizeof script,
             "touch %s/run.$$; ls %s | grep -c '^run' > %s/seen.$$; sleep 0.2; rm %s/run.$$", dir,
             dir, dir, dir);
    for (int i = 0; i < 10; i++)
        add_sh(r, script);
    CHECK(run_all(r, NULL, NULL) == 0, "limit: 10 children finish");
    CHECK_INT(fo_max_running(r), 3, "limit: engine never ran more than 3");
    int most = 0, files = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cat %s/seen.* | sort -n | tail -1; ls %s | grep -c seen", dir, dir);
    FILE *p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%d %d", &most, &files) != 2)
            most = -1;
        pclose(p);
    }
    CHECK(most >= 1 && most <= 3, "limit: no child ever saw more than 3 alive");
    CHECK_INT(files, 10, "limit: all 10 ran");
    for (int i = 0; i < 10; i++)
        CHECK_INT(fo_get(r, (size_t)i)->exit_code, 0, "limit: child exit 0");
    fo_free(r);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "limit: cleanup");
}

static int gone(pid_t pid)
{
    /* the orphan is reaped by init, maybe not at once: a generous bound on a busy machine */
    for (int i = 0; i < 6000; i++) {
        if (kill(pid, 0) == -1 && errno == ESRCH)
            return 1;
        usleep(10000);
    }
    return 0;
}

static void test_timeout_kills_group(void)
{
    /* No speed assumption: the timeout (10 s) is far longer than a quick child or an echo takes on a
     * busy machine, and the sleeps (600 s) far longer than run_all's 60 s bound, which fails the test
     * if the timeout does not end them. */
    fo_config cfg = config(3, 10);
    cfg.kill_grace = 0.5;
    fo_run *r = fo_new(&cfg);
    /* the background sleep is a grandchild: the kill must reach the whole group */
    add_sh(r, "sleep 600 & echo $!; sleep 600");
    add_sh(r, "trap '' TERM; echo stubborn; while :; do sleep 0.05; done");
    add_sh(r, "echo quick");
    CHECK(run_all(r, NULL, NULL) == 0, "timeout: finishes, without waiting for the 600 s sleeps");
    const fo_result *a = fo_get(r, 0);
    CHECK_INT(a->outcome, FO_TIMED_OUT, "timeout: outcome timed_out");
    CHECK_INT(a->term_signal, SIGTERM, "timeout: ended by SIGTERM");
    pid_t grandchild = (pid_t)atoi(a->data[FO_STDOUT] ? a->data[FO_STDOUT] : "0");
    CHECK(grandchild > 0 && gone(grandchild), "timeout: the grandchild was killed too");
    const fo_result *b = fo_get(r, 1);
    CHECK_INT(b->outcome, FO_TIMED_OUT, "timeout ignoring SIGTERM: timed_out");
    CHECK_INT(b->term_signal, SIGKILL, "timeout ignoring SIGTERM: SIGKILL after the grace");
    CHECK_STR(b->data[FO_STDOUT], "stubborn\n", "timeout: output before the kill is kept");
    CHECK_INT(fo_get(r, 2)->outcome, FO_EXITED, "timeout: a quick child is unaffected");
    fo_free(r);
}

static void test_env_drop(void)
{
    setenv("PGPASSWORD", "pg-secret", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "aws-secret", 1);
    setenv("my_api_token", "tok", 1);
    setenv("PGR_KEEP_ME", "kept", 1);
    static const char *const drop[] = { "PASSWORD", "SECRET", "TOKEN", NULL };
    fo_config cfg = config(2, 0);
    cfg.env_drop = drop;
    fo_run *r = fo_new(&cfg);
    const char *argv[] = { "env", NULL };
    fo_add(r, argv);
    CHECK(run_all(r, NULL, NULL) == 0, "env: runs");
    const char *out = fo_get(r, 0)->data[FO_STDOUT] ? fo_get(r, 0)->data[FO_STDOUT] : "";
    CHECK(strstr(out, "PGR_KEEP_ME=kept") != NULL, "env: an ordinary variable is passed");
    CHECK(strstr(out, "pg-secret") == NULL && strstr(out, "aws-secret") == NULL && strstr(out, "tok") == NULL,
          "env: PGPASSWORD, AWS_SECRET_ACCESS_KEY and a lower-case *_token are not passed");
    CHECK(strstr(out, "PATH=") != NULL, "env: PATH is passed");
    fo_free(r);
    /* without env_drop: the whole environment */
    cfg.env_drop = NULL;
    r = fo_new(&cfg);
    fo_add(r, argv);
    CHECK(run_all(r, NULL, NULL) == 0, "env: runs again");
    out = fo_get(r, 0)->data[FO_STDOUT] ? fo_get(r, 0)->data[FO_STDOUT] : "";
    CHECK(strstr(out, "PGPASSWORD=pg-secret") != NULL, "env: no env_drop, every variable");
    fo_free(r);
    unsetenv("PGPASSWORD");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("my_api_token");
    unsetenv("PGR_KEEP_ME");
}

static void on_alarm(int sig) { (void)sig; }

static void test_stop_and_interrupt(void)
{
    fo_config cfg = config(2, 0);
    fo_run *r = fo_new(&cfg);
    add_sh(r, "sleep 60 & echo $!; sleep 60");
    add_sh(r, "sleep 60");
    add_sh(r, "sleep 60");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: poll must come back with EINTR */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 0 }, { 0, 300000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    long left = 0;
    /* the first steps see the child's output; then the wait is long and the alarm cuts it */
    for (int i = 0; i < 20 && (left = fo_step(r, 5000, NULL, NULL)) > 0; i++)
        ;
    /* (the children sleep 60 s: without the alarm the 20 steps of 5 s would end with children left) */
    CHECK(left == -1 && errno == EINTR, "a signal ends the wait with EINTR");
    CHECK_INT(fo_running(r), 2, "children still running after the interruption");
    pid_t grandchild = (pid_t)atoi(fo_get(r, 0)->data[FO_STDOUT] ? fo_get(r, 0)->data[FO_STDOUT] : "0");
    fo_stop(r);
    CHECK_INT(fo_running(r), 0, "stop: nothing runs");
    CHECK_INT(fo_get(r, 0)->outcome, FO_STOPPED, "stop: running child stopped");
    CHECK_INT(fo_get(r, 2)->outcome, FO_STOPPED, "stop: queued child never starts");
    CHECK_INT(fo_get(r, 2)->state, FO_DONE, "stop: queued child is done");
    errno = 0;
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "stop: no zombie left");
    CHECK(grandchild > 0 && gone(grandchild), "stop: no orphan left");
    fo_stop(r); /* twice is fine */
    CHECK_INT(fo_step(r, 0, NULL, NULL), 0, "step after stop: nothing left");
    fo_free(r);
    fo_free(NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_capture_and_exit();
    test_large_output_and_cap();
    test_fanout_limit();
    test_timeout_kills_group();
    test_stop_and_interrupt();
    test_env_drop();
    return tap_done();
}
