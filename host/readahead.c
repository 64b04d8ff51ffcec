/* readahead.c — the bounded byte queues and read-ahead thread declared in readahead.h: blocks of a
 * pool's budget, one lock and condition per pool, waits that end when the other side lets go. */
#include "readahead.h"
#include "thread.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
    struct block *next;
    size_t off, len; /* read up to off; data up to len (of PGR_RA_BLOCK) */
    char data[];
};

struct pgr_ra_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t max_blocks, used, peak;
    struct block *spare; /* blocks given back, kept for the next writer */
    int readers_waiting, writers_waiting;
};

struct pgr_ra_queue {
    pgr_ra_pool *p;
    struct block *head, *tail;
    size_t bytes;  /* committed, not yet read */
    int refs;      /* the writer's and the reader's */
    int reserved;  /* the writer holds space in tail, outside the lock */
    int ended, failed, closed;
    char err[512];
};

pgr_ra_pool *pgr_ra_pool_new(size_t limit)
{
    pgr_ra_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->max_blocks = (limit + PGR_RA_BLOCK - 1) / PGR_RA_BLOCK;
    if (p->max_blocks == 0)
        p->max_blocks = 1;
    return p;
}

void pgr_ra_pool_free(pgr_ra_pool *p)
{
    if (!p)
        return;
    for (struct block *b = p->spare, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

size_t pgr_ra_pool_limit(const pgr_ra_pool *p) { return p->max_blocks * PGR_RA_BLOCK; }

size_t pgr_ra_pool_held(pgr_ra_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->used * PGR_RA_BLOCK;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t pgr_ra_pool_peak(pgr_ra_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->peak * PGR_RA_BLOCK;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* A writer that found the budget spent waits until an eighth of it is free again, so it wakes a few
 * times per budget rather than once per block. */
static size_t slack(const pgr_ra_pool *p)
{
    size_t s = p->max_blocks / 8;
    return s ? s : 1;
}

/* Under the lock. */
static void give_back(pgr_ra_pool *p, struct block *b)
{
    b->next = p->spare;
    p->spare = b;
    p->used--;
    if (p->writers_waiting && p->used + slack(p) <= p->max_blocks)
        pthread_cond_broadcast(&p->cv);
}

pgr_ra_queue *pgr_ra_queue_new(pgr_ra_pool *p)
{
    pgr_ra_queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->p = p;
    q->refs = 2;
    return q;
}

/* Under the lock: one side lets go; the last one frees the queue and gives its blocks back. */
static void unref(pgr_ra_queue *q)
{
    if (--q->refs > 0)
        return;
    pgr_ra_pool *p = q->p;
    for (struct block *b = q->head, *n; b; b = n) {
        n = b->next;
        give_back(p, b);
    }
    free(q);
}

char *pgr_ra_reserve(pgr_ra_queue *q, size_t *cap)
{
    pgr_ra_pool *p = q->p;
    *cap = 0;
    pthread_mutex_lock(&p->mu);
    char *out = NULL;
    if (q->closed)
        goto done;
    if (q->tail && q->tail->len < PGR_RA_BLOCK) {
        q->reserved = 1;
        *cap = PGR_RA_BLOCK - q->tail->len;
        out = q->tail->data + q->tail->len;
        goto done;
    }
    if (p->used >= p->max_blocks) {
        p->writers_waiting++;
        while (!q->closed && p->used + slack(p) > p->max_blocks)
            pthread_cond_wait(&p->cv, &p->mu);
        p->writers_waiting--;
        if (q->closed)
            goto done;
    }
    struct block *b = p->spare;
    if (b)
        p->spare = b->next;
    else if (!(b = malloc(sizeof *b + PGR_RA_BLOCK)))
        goto done;
    b->next = NULL;
    b->off = b->len = 0;
    if (++p->used > p->peak)
        p->peak = p->used;
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
    q->reserved = 1;
    *cap = PGR_RA_BLOCK;
    out = b->data;
done:
    pthread_mutex_unlock(&p->mu);
    return out;
}

void pgr_ra_commit(pgr_ra_queue *q, size_t n)
{
    pgr_ra_pool *p = q->p;
    pthread_mutex_lock(&p->mu);
    if (q->reserved && !q->closed) {
        q->tail->len += n;
        q->bytes += n;
        if (n && p->readers_waiting)
            pthread_cond_broadcast(&p->cv);
    }
    q->reserved = 0;
    pthread_mutex_unlock(&p->mu);
}

int pgr_ra_write(pgr_ra_queue *q, const char *data, size_t len)
{
    while (len > 0) {
        size_t cap;
        char *dst = pgr_ra_reserve(q, &cap);
        if (!dst)
            return -1;
        size_t n = len < cap ? len : cap;
        memcpy(dst, data, n);
        pgr_ra_commit(q, n);
        data += n;
        len -= n;
    }
    return 0;
}

int pgr_ra_reader_gone(pgr_ra_queue *q)
{
    pthread_mutex_lock(&q->p->mu);
    int gone = q->closed;
    pthread_mutex_unlock(&q->p->mu);
    return gone;
}

void pgr_ra_end(pgr_ra_queue *q, const char *error)
{
    pgr_ra_pool *p = q->p;
    pthread_mutex_lock(&p->mu);
    q->ended = 1;
    q->reserved = 0;
    if (error) {
        q->failed = 1;
        snprintf(q->err, sizeof q->err, "%s", error);
    }
    pthread_cond_broadcast(&p->cv);
    unref(q);
    pthread_mutex_unlock(&p->mu);
}

long pgr_ra_read(pgr_ra_queue *q, char *buf, size_t cap, char *err, size_t errcap)
{
    pgr_ra_pool *p = q->p;
    pthread_mutex_lock(&p->mu);
    if (!q->bytes && !q->ended) {
        p->readers_waiting++;
        while (!q->bytes && !q->ended)
            pthread_cond_wait(&p->cv, &p->mu);
        p->readers_waiting--;
    }
    long got = 0;
    while (q->bytes && (size_t)got < cap) {
        struct block *b = q->head;
        size_t n = b->len - b->off;
        if (n > cap - (size_t)got)
            n = cap - (size_t)got;
        memcpy(buf + got, b->data + b->off, n);
        b->off += n;
        got += (long)n;
        q->bytes -= n;
        /* a block read to its end is given back, unless the writer is still filling it */
        if (b->off == b->len && (b != q->tail || (b->len == PGR_RA_BLOCK && !q->reserved))) {
            q->head = b->next;
            if (q->tail == b)
                q->tail = NULL;
            give_back(p, b);
        }
    }
    if (got == 0 && q->failed) {
        snprintf(err, errcap, "%s", q->err);
        got = -1;
    }
    pthread_mutex_unlock(&p->mu);
    return got;
}

void pgr_ra_close(pgr_ra_queue *q)
{
    pgr_ra_pool *p = q->p;
    pthread_mutex_lock(&p->mu);
    q->closed = 1;
    q->bytes = 0;
    /* the blocks go back now, but the one the writer may be filling outside the lock */
    struct block *keep = q->reserved ? q->tail : NULL;
    for (struct block *b = q->head, *n; b; b = n) {
        n = b->next;
        if (b != keep)
            give_back(p, b);
    }
    q->head = q->tail = keep;
    if (keep) {
        keep->next = NULL;
        keep->off = keep->len;
    }
    pthread_cond_broadcast(&p->cv);
    unref(q);
    pthread_mutex_unlock(&p->mu);
}

static size_t queued(pgr_ra_queue *q)
{
    pthread_mutex_lock(&q->p->mu);
    size_t n = q->bytes;
    pthread_mutex_unlock(&q->p->mu);
    return n;
}

/* ---- the read-ahead thread ---- */

struct pgr_readahead {
    pgr_ra_pool *pool;
    pgr_ra_queue *q;
    pthread_t th;
    pgr_ra_fill_fn fill;
    pgr_ra_interrupt_fn interrupt;
    void *ud;
};

static void *ra_main(void *arg)
{
    pgr_readahead *ra = arg;
    for (;;) {
        size_t cap;
        char *dst = pgr_ra_reserve(ra->q, &cap);
        if (!dst) {
            pgr_ra_end(ra->q, pgr_ra_reader_gone(ra->q) ? NULL : "out of memory reading ahead");
            return NULL;
        }
        char err[512] = "";
        long n = ra->fill(ra->ud, dst, cap, err, sizeof err);
        pgr_ra_commit(ra->q, n > 0 ? (size_t)n : 0);
        if (n <= 0) {
            pgr_ra_end(ra->q, n == 0 ? NULL : err[0] ? err : "reading failed");
            return NULL;
        }
    }
}

pgr_readahead *pgr_readahead_start(size_t limit, pgr_ra_fill_fn fill, pgr_ra_interrupt_fn interrupt, void *ud)
{
    pgr_readahead *ra = calloc(1, sizeof *ra);
    if (!ra)
        return NULL;
    ra->fill = fill;
    ra->interrupt = interrupt;
    ra->ud = ud;
    if (!(ra->pool = pgr_ra_pool_new(limit)) || !(ra->q = pgr_ra_queue_new(ra->pool))) {
        pgr_ra_pool_free(ra->pool);
        free(ra);
        return NULL;
    }
    if (pgr_thread_create(&ra->th, ra_main, ra) != 0) {
        free(ra->q);
        pgr_ra_pool_free(ra->pool);
        free(ra);
        return NULL;
    }
    return ra;
}

long pgr_readahead_read(pgr_readahead *ra, char *buf, size_t cap, char *err, size_t errcap)
{
    return pgr_ra_read(ra->q, buf, cap, err, errcap);
}

size_t pgr_readahead_buffered(pgr_readahead *ra) { return queued(ra->q); }

void pgr_readahead_stop(pgr_readahead *ra)
{
    if (!ra)
        return;
    pgr_ra_close(ra->q); /* a thread waiting for room returns; what it reads next is dropped */
    if (ra->interrupt)
        ra->interrupt(ra->ud);
    pthread_join(ra->th, NULL);
    pgr_ra_pool_free(ra->pool);
    free(ra);
}
