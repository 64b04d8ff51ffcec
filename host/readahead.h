/* readahead.h — bounded byte queues between threads, and a thread that keeps one filled from a
 * source (no Lua, no I/O of its own): the source is read at its own pace while its consumer is busy,
 * and memory stays flat because a full budget makes the writer wait (back-pressure).
 *
 * A pool is a budget of bytes shared by its queues, held in blocks taken as data arrives and given
 * back as it is read. A queue has one writer and one reader, on any threads; it is freed when both
 * have let go of it (pgr_ra_end by the writer, pgr_ra_close by the reader), in either order.
 *
 *     pgr_ra_pool *p = pgr_ra_pool_new(32 << 20);
 *     pgr_ra_queue *q = pgr_ra_queue_new(p);
 *     writer thread:  pgr_ra_write(q, data, n) ... pgr_ra_end(q, NULL or "what failed");
 *     reader thread:  while ((n = pgr_ra_read(q, buf, sizeof buf, err, sizeof err)) > 0) use(buf, n);
 *                     pgr_ra_close(q);
 *     pgr_ra_pool_free(p);   // once every queue is freed
 */
#ifndef PGR_READAHEAD_H
#define PGR_READAHEAD_H

#include <stddef.h>

#define PGR_RA_BLOCK (256 * 1024) /* storage is taken and given back in blocks of this size */

typedef struct pgr_ra_pool pgr_ra_pool;
typedef struct pgr_ra_queue pgr_ra_queue;

/* A budget of limit bytes (rounded up to whole blocks, at least one). NULL when out of memory. */
pgr_ra_pool *pgr_ra_pool_new(size_t limit);
/* Frees the pool; every queue of it must have been freed (both sides let go). NULL is fine. */
void pgr_ra_pool_free(pgr_ra_pool *p);
size_t pgr_ra_pool_limit(const pgr_ra_pool *p); /* the budget, in bytes of blocks */
size_t pgr_ra_pool_held(pgr_ra_pool *p);        /* bytes of blocks holding data now */
size_t pgr_ra_pool_peak(pgr_ra_pool *p);        /* the most held at once so far */

/* A queue in pool p. NULL when out of memory. */
pgr_ra_queue *pgr_ra_queue_new(pgr_ra_pool *p);

/* ---- the writer ---- */
/* Space to write into at the end of the queue (*cap bytes, > 0): waits while the pool's budget is
 * spent. NULL when the reader has gone (pgr_ra_close) or memory ran out (pgr_ra_reader_gone tells). */
char *pgr_ra_reserve(pgr_ra_queue *q, size_t *cap);
/* The first n bytes (n <= cap, may be 0) of the space reserve gave are data now. */
void pgr_ra_commit(pgr_ra_queue *q, size_t n);
/* Copies len bytes in, waiting for room as needed: 0, or -1 when the reader has gone (the bytes are
 * then dropped) or memory ran out. */
int pgr_ra_write(pgr_ra_queue *q, const char *data, size_t len);
/* 1 once the reader has closed its side: what is written is dropped. */
int pgr_ra_reader_gone(pgr_ra_queue *q);
/* No more data: a clean end (error NULL), or a failure the reader gets after the bytes before it.
 * The writer lets go of the queue. */
void pgr_ra_end(pgr_ra_queue *q, const char *error);

/* ---- the reader ---- */
/* Waits for data: > 0 bytes copied into buf (as much as is there, up to cap), 0 at a clean end, -1
 * after the writer's failure (its message in err). */
long pgr_ra_read(pgr_ra_queue *q, char *buf, size_t cap, char *err, size_t errcap);
/* The reader lets go: buffered bytes are dropped and a writer waiting for room returns at once. */
void pgr_ra_close(pgr_ra_queue *q);

/* ---- a read-ahead: a thread of its own filling a queue from a source ---- */
/* Reads up to cap bytes of the source into buf: > 0, 0 at its end, -1 with a message in err. */
typedef long (*pgr_ra_fill_fn)(void *ud, char *buf, size_t cap, char *err, size_t errcap);
/* Makes a fill that is waiting on its source return soon, and every later fill return at once
 * (called from another thread, once, when the read-ahead stops). */
typedef void (*pgr_ra_interrupt_fn)(void *ud);
typedef struct pgr_readahead pgr_readahead;

/* Starts a thread calling fill into a queue of limit bytes until the source ends or fails. NULL
 * when the thread or memory could not be had. fill and interrupt are called with ud. */
pgr_readahead *pgr_readahead_start(size_t limit, pgr_ra_fill_fn fill, pgr_ra_interrupt_fn interrupt, void *ud);
/* As pgr_ra_read, from what the thread has read ahead. */
long pgr_readahead_read(pgr_readahead *ra, char *buf, size_t cap, char *err, size_t errcap);
/* Bytes read ahead and not yet delivered. */
size_t pgr_readahead_buffered(pgr_readahead *ra);
/* Stops reading (interrupt is called if the thread may be inside fill), joins the thread and frees
 * everything: no thread and nothing of the source is left in use when it returns. NULL is fine. */
void pgr_readahead_stop(pgr_readahead *ra);

#endif
