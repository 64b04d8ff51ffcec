/* thread.h — starting pgr's worker threads (the S3 read-ahead, the multipart upload, the parallel
 * restore's loaders). A worker never takes SIGINT or SIGTERM: they belong to the main thread, where
 * the handler stops the Lua code and a blocking poll() wakes with EINTR. Linux prefers the main
 * thread for a process-wide signal already; blocking them in the workers makes it certain. */
#ifndef PGR_THREAD_H
#define PGR_THREAD_H

#include <pthread.h>
#include <signal.h>

/* pthread_create with SIGINT and SIGTERM blocked in the new thread (it inherits the mask in force
 * at its creation; the caller's own mask is left as it was). Returns pthread_create's result. */
static inline int pgr_thread_create(pthread_t *th, void *(*fn)(void *), void *arg)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(th, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

#endif
