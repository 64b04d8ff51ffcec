/* test_thread.c — pgr_thread_create (host/thread.h): a worker thread starts with SIGINT and SIGTERM
 * blocked, so Ctrl-C and SIGTERM always reach the main thread's handler; the caller's own mask is
 * what it was; and a signal sent to the process while a worker runs is taken by the main thread. */
#include "thread.h"
#include "tap.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

struct seen {
    int int_blocked, term_blocked, usr1_blocked;
    atomic_int stop;
};

static void *probe(void *arg)
{
    struct seen *s = arg;
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    s->int_blocked = sigismember(&cur, SIGINT);
    s->term_blocked = sigismember(&cur, SIGTERM);
    s->usr1_blocked = sigismember(&cur, SIGUSR1);
    while (!atomic_load(&s->stop))
        usleep(1000);
    return NULL;
}

static atomic_int handled_by_main, handled_elsewhere;
static pthread_t main_thread;

static void on_sig(int sig)
{
    (void)sig;
    if (pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&handled_by_main, 1);
    else
        atomic_fetch_add(&handled_elsewhere, 1);
}

int main(void)
{
    main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct seen s = { 0 };
    pthread_t th;
    CHECK_INT(pgr_thread_create(&th, probe, &s), 0, "the worker starts");
    sigset_t mine;
    pthread_sigmask(SIG_BLOCK, NULL, &mine);
    CHECK(!sigismember(&mine, SIGINT) && !sigismember(&mine, SIGTERM),
          "the caller's mask is left as it was (SIGINT, SIGTERM not blocked)");

    /* the main thread waits for the signals in sigsuspend, so either thread could be picked: the
     * worker must never be */
    sigset_t block, old, none;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    kill(getpid(), SIGINT);
    kill(getpid(), SIGTERM);
    sigemptyset(&none);
    while (atomic_load(&handled_by_main) + atomic_load(&handled_elsewhere) < 2)
        sigsuspend(&none);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);

    CHECK(s.int_blocked == 1, "the worker has SIGINT blocked");
    CHECK(s.term_blocked == 1, "the worker has SIGTERM blocked");
    CHECK(s.usr1_blocked == 0, "the worker's other signals are as the caller's (SIGUSR1 not blocked)");
    CHECK_INT(atomic_load(&handled_by_main), 2, "both signals were taken by the main thread");
    CHECK_INT(atomic_load(&handled_elsewhere), 0, "none by the worker");
    return tap_done();
}
