/* test_readahead.c — the bounded byte queues and the read-ahead thread (host/readahead.c): bytes
 * arrive whole and in order across threads, the budget is never exceeded and a full one makes the
 * writer wait, a failure reaches the reader after the bytes before it, and either side letting go
 * ends the other's waits with no thread left behind. */
#include "readahead.h"
#include "tap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static unsigned char pattern(size_t i) { return (unsigned char)((i * 2654435761u) >> 13); }

static void pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* The process's thread count, as the kernel sees it. */
static int threads_now(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* ---- a writer thread writing the pattern in uneven pieces ---- */

struct writer {
    pgr_ra_queue *q;
    size_t total;
    const char *fail; /* end with this error instead of cleanly */
    atomic_size_t written;
    int rc;
};

static void *write_main(void *arg)
{
    struct writer *w = arg;
    char piece[70000];
    size_t i = 0, k = 1;
    w->rc = 0;
    while (i < w->total) {
        size_t n = (k * 7919) % sizeof piece + 1; /* 1 .. 70000 bytes, never the same run twice */
        k++;
        if (n > w->total - i)
            n = w->total - i;
        for (size_t j = 0; j < n; j++)
            piece[j] = (char)pattern(i + j);
        if (pgr_ra_write(w->q, piece, n) != 0) {
            w->rc = -1;
            break;
        }
        i += n;
        atomic_store(&w->written, i);
    }
    pgr_ra_end(w->q, w->fail);
    return NULL;
}

/* Reads the queue to its end in uneven pieces, checking every byte against the pattern. */
static long long read_all(pgr_ra_queue *q, int *bad, long *last, char *err, size_t errcap)
{
    static char buf[300000];
    long long got = 0;
    size_t k = 3;
    *bad = 0;
    for (;;) {
        size_t want = (k * 104729) % sizeof buf + 1;
        k++;
        long n = pgr_ra_read(q, buf, want, err, errcap);
        *last = n;
        if (n <= 0)
            return got;
        for (long j = 0; j < n; j++)
            if ((unsigned char)buf[j] != pattern((size_t)got + (size_t)j))
                (*bad)++;
        got += n;
    }
}

static void test_order(void)
{
    pgr_ra_pool *p = pgr_ra_pool_new(1 << 20);
    pgr_ra_queue *q = pgr_ra_queue_new(p);
    struct writer w = { .q = q, .total = 20 * 1000 * 1000 + 17 };
    pthread_t th;
    pthread_create(&th, NULL, write_main, &w);
    int bad;
    long last;
    char err[128] = "";
    long long got = read_all(q, &bad, &last, err, sizeof err);
    pthread_join(th, NULL);
    CHECK_INT(got, 20 * 1000 * 1000 + 17, "every byte written is read");
    CHECK_INT(bad, 0, "in the order written");
    CHECK_INT(last, 0, "then a clean end");
    CHECK(pgr_ra_pool_peak(p) <= pgr_ra_pool_limit(p), "never more held than the budget");
    CHECK_INT(pgr_ra_pool_limit(p), 1 << 20, "a budget of whole blocks");
    pgr_ra_close(q);
    CHECK_INT(pgr_ra_pool_held(p), 0, "every block given back once both sides let go");
    pgr_ra_pool_free(p);
}

static void test_backpressure(void)
{
    pgr_ra_pool *p = pgr_ra_pool_new(4 * PGR_RA_BLOCK);
    pgr_ra_queue *q = pgr_ra_queue_new(p);
    struct writer w = { .q = q, .total = 64 * PGR_RA_BLOCK };
    pthread_t th;
    pthread_create(&th, NULL, write_main, &w);
    /* nobody reads: the writer fills the budget, then waits */
    size_t before;
    for (int i = 0; i < 2000; i++) {
        before = atomic_load(&w.written);
        if (before >= 3 * PGR_RA_BLOCK)
            break;
        pause_ms(10);
    }
    pause_ms(200);
    size_t stalled = atomic_load(&w.written);
    CHECK(stalled >= 3 * PGR_RA_BLOCK && stalled <= 4 * PGR_RA_BLOCK,
          "a writer ahead of its reader stops at the budget");
    CHECK_INT(pgr_ra_pool_held(p), 4 * PGR_RA_BLOCK, "the whole budget is held, no more");
    int bad;
    long last;
    char err[128] = "";
    long long got = read_all(q, &bad, &last, err, sizeof err);
    pthread_join(th, NULL);
    CHECK_INT(got, 64 * PGR_RA_BLOCK, "once read, the writer goes on to the end");
    CHECK_INT(bad, 0, "the bytes are intact");
    CHECK_INT(pgr_ra_pool_peak(p), 4 * PGR_RA_BLOCK, "peak held is the budget");
    pgr_ra_close(q);
    pgr_ra_pool_free(p);
}

static void test_failure(void)
{
    pgr_ra_pool *p = pgr_ra_pool_new(1 << 20);
    pgr_ra_queue *q = pgr_ra_queue_new(p);
    struct writer w = { .q = q, .total = 3 * 1000 * 1000, .fail = "the source broke at byte 3000000" };
    pthread_t th;
    pthread_create(&th, NULL, write_main, &w);
    int bad;
    long last;
    char err[128] = "";
    long long got = read_all(q, &bad, &last, err, sizeof err);
    pthread_join(th, NULL);
    CHECK_INT(got, 3 * 1000 * 1000, "the bytes before a failure arrive");
    CHECK_INT(bad, 0, "intact");
    CHECK_INT(last, -1, "then the failure");
    CHECK_STR(err, "the source broke at byte 3000000", "with the writer's message");
    CHECK_INT(pgr_ra_read(q, err, sizeof err, err, sizeof err), -1, "and again on the next read");
    pgr_ra_close(q);
    pgr_ra_pool_free(p);
}

static void test_reader_gone(void)
{
    pgr_ra_pool *p = pgr_ra_pool_new(2 * PGR_RA_BLOCK);
    pgr_ra_queue *q = pgr_ra_queue_new(p);
    struct writer w = { .q = q, .total = 1000 * PGR_RA_BLOCK };
    pthread_t th;
    pthread_create(&th, NULL, write_main, &w);
    char buf[1000], err[64];
    CHECK_INT(pgr_ra_read(q, buf, sizeof buf, err, sizeof err), 1000, "a reader takes a little");
    for (int i = 0; i < 2000 && atomic_load(&w.written) < PGR_RA_BLOCK; i++)
        pause_ms(10);
    pgr_ra_close(q); /* the writer is waiting for room */
    pthread_join(th, NULL);
    CHECK_INT(w.rc, -1, "a writer waiting for room is told the reader has gone");
    CHECK(atomic_load(&w.written) < 1000 * PGR_RA_BLOCK, "and stops writing");
    CHECK_INT(pgr_ra_pool_held(p), 0, "nothing is held after both let go");
    pgr_ra_pool_free(p);

    /* the writer lets go first: the reader still gets what was written */
    p = pgr_ra_pool_new(0);
    CHECK_INT(pgr_ra_pool_limit(p), PGR_RA_BLOCK, "a budget below a block is one block");
    q = pgr_ra_queue_new(p);
    CHECK_INT(pgr_ra_write(q, "abc", 3), 0, "a small write");
    CHECK_INT(pgr_ra_write(q, "", 0), 0, "an empty write");
    pgr_ra_end(q, NULL);
    CHECK_INT(pgr_ra_read(q, buf, sizeof buf, err, sizeof err), 3, "read after the writer ended");
    CHECK_INT(pgr_ra_read(q, buf, sizeof buf, err, sizeof err), 0, "then the end");
    pgr_ra_close(q);
    pgr_ra_pool_free(p);
}

/* Two queues share one budget: a writer of the second waits while the first holds it all. */
static void test_shared_budget(void)
{
    pgr_ra_pool *p = pgr_ra_pool_new(2 * PGR_RA_BLOCK);
    pgr_ra_queue *a = pgr_ra_queue_new(p), *b = pgr_ra_queue_new(p);
    static char big[2 * PGR_RA_BLOCK];
    memset(big, 'a', sizeof big);
    CHECK_INT(pgr_ra_write(a, big, sizeof big), 0, "the first queue takes the whole budget");
    pgr_ra_end(a, NULL);
    struct writer w = { .q = b, .total = 8 * PGR_RA_BLOCK };
    pthread_t th;
    pthread_create(&th, NULL, write_main, &w);
    pause_ms(200);
    CHECK_INT(atomic_load(&w.written), 0, "the second queue's writer waits for room");
    char buf[4096], err[64];
    long long drained = 0;
    long n;
    while ((n = pgr_ra_read(a, buf, sizeof buf, err, sizeof err)) > 0)
        drained += n;
    CHECK_INT(drained, 2 * PGR_RA_BLOCK, "the first queue reads out whole");
    int bad;
    long last;
    long long got = read_all(b, &bad, &last, err, sizeof err);
    pthread_join(th, NULL);
    CHECK_INT(got, 8 * PGR_RA_BLOCK, "then the second goes through");
    CHECK_INT(bad, 0, "intact");
    CHECK(pgr_ra_pool_peak(p) <= 2 * PGR_RA_BLOCK, "both together never held more than the budget");
    pgr_ra_close(a);
    pgr_ra_close(b);
    pgr_ra_pool_free(p);
}

/* ---- the read-ahead thread over a source that can hang ---- */

struct source {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t pos, total, hang_at;
    int interrupted, fills, fail;
};

static long source_fill(void *ud, char *buf, size_t cap, char *err, size_t errcap)
{
    struct source *s = ud;
    pthread_mutex_lock(&s->mu);
    s->fills++;
    /* a source that stops delivering, as a stalled connection does, until interrupted */
    while (s->pos >= s->hang_at && !s->interrupted)
        pthread_cond_wait(&s->cv, &s->mu);
    if (s->interrupted) {
        pthread_mutex_unlock(&s->mu);
        snprintf(err, errcap, "interrupted");
        return -1;
    }
    pthread_mutex_unlock(&s->mu);
    if (s->pos == s->total) {
        if (s->fail) {
            snprintf(err, errcap, "the object changed on the server");
            return -1;
        }
        return 0;
    }
    size_t n = cap < 50000 ? cap : 50000;
    if (n > s->total - s->pos)
        n = s->total - s->pos;
    if (n > s->hang_at - s->pos)
        n = s->hang_at - s->pos;
    for (size_t j = 0; j < n; j++)
        buf[j] = (char)pattern(s->pos + j);
    s->pos += n;
    return (long)n;
}

static void source_interrupt(void *ud)
{
    struct source *s = ud;
    pthread_mutex_lock(&s->mu);
    s->interrupted = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void source_init(struct source *s, size_t total, size_t hang_at)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->total = total;
    s->hang_at = hang_at;
}

static void source_free(struct source *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void test_readahead(void)
{
    int base = threads_now();
    struct source s;
    source_init(&s, 5 * 1000 * 1000 + 3, (size_t)-1);
    pgr_readahead *ra = pgr_readahead_start(1 << 20, source_fill, source_interrupt, &s);
    CHECK(ra != NULL, "a read-ahead starts");
    CHECK_INT(threads_now(), base + 1, "with one thread of its own");
    /* it reads ahead to its budget without anyone asking */
    for (int i = 0; i < 2000 && pgr_readahead_buffered(ra) < (1 << 20) - 50000; i++)
        pause_ms(10);
    CHECK(pgr_readahead_buffered(ra) >= (1 << 20) - 50000 && pgr_readahead_buffered(ra) <= (1 << 20),
          "it fills its budget before the consumer asks, and no more");
    static char buf[123457];
    long long got = 0;
    long n;
    int bad = 0;
    char err[128];
    while ((n = pgr_readahead_read(ra, buf, sizeof buf, err, sizeof err)) > 0) {
        for (long j = 0; j < n; j++)
            if ((unsigned char)buf[j] != pattern((size_t)got + (size_t)j))
                bad++;
        got += n;
    }
    CHECK_INT(got, 5 * 1000 * 1000 + 3, "the whole source is delivered");
    CHECK_INT(bad, 0, "in order");
    CHECK_INT(n, 0, "then its end");
    pgr_readahead_stop(ra);
    CHECK_INT(threads_now(), base, "stopped: its thread is gone");
    source_free(&s);

    /* a failing source: its bytes, then its error */
    source_init(&s, 700000, (size_t)-1);
    s.fail = 1;
    ra = pgr_readahead_start(1 << 20, source_fill, source_interrupt, &s);
    got = 0;
    while ((n = pgr_readahead_read(ra, buf, sizeof buf, err, sizeof err)) > 0)
        got += n;
    CHECK_INT(got, 700000, "a failing source's bytes arrive");
    CHECK_INT(n, -1, "then its failure");
    CHECK_STR(err, "the object changed on the server", "with its message");
    pgr_readahead_stop(ra);
    source_free(&s);

    /* stopped while the source hangs mid-way: interrupted, joined */
    source_init(&s, 100 * 1000 * 1000, 300000);
    ra = pgr_readahead_start(1 << 20, source_fill, source_interrupt, &s);
    CHECK_INT(pgr_readahead_read(ra, buf, 1000, err, sizeof err), 1000, "a hanging source's first bytes");
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&s.mu);
        int waiting = s.pos == s.hang_at;
        pthread_mutex_unlock(&s.mu);
        if (waiting)
            break;
        pause_ms(10);
    }
    pgr_readahead_stop(ra);
    CHECK(s.interrupted, "stopping interrupts a source that hangs");
    CHECK_INT(threads_now(), base, "and no thread is left");
    source_free(&s);

    /* stopped while the budget is full: the thread waiting for room ends */
    source_init(&s, 100 * 1000 * 1000, (size_t)-1);
    ra = pgr_readahead_start(2 * PGR_RA_BLOCK, source_fill, source_interrupt, &s);
    for (int i = 0; i < 2000 && pgr_readahead_buffered(ra) < 2 * PGR_RA_BLOCK; i++)
        pause_ms(10);
    int fills = s.fills;
    pause_ms(100);
    CHECK_INT(s.fills, fills, "a full read-ahead stops reading its source");
    pgr_readahead_stop(ra);
    CHECK_INT(threads_now(), base, "stopped while full: no thread left");
    source_free(&s);
}

int main(void)
{
    test_order();
    test_backpressure();
    test_failure();
    test_reader_gone();
    test_shared_budget();
    test_readahead();
    return tap_done();
}
