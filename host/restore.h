/* restore.h — the restore engine: feeds a psql script (pg_dumpall output) from a byte source into
 * PostgreSQL over libpq with psql's semantics, serially or with parallel COPY/index loads; and inspects one. */
#ifndef PGR_RESTORE_H
#define PGR_RESTORE_H

#include <stddef.h>

#include "rangesrc.h"

/* A byte source. read returns n > 0, 0 at the end, -1 on error (message written to err). */
struct rs_source {
    long (*read)(void *ud, char *buf, size_t cap, char *err, size_t errcap);
    void *ud;
    /* a regular file the parallel loader may open and pread itself; NULL for streams */
    const char *path;
    /* else a stream whose ranges can be fetched on their own (an S3 object): the parallel loader
     * reads each COPY block through range while the main thread reads the stream; NULL if not */
    const struct pgr_range_source *range;
    void *range_ud;
    long long range_base; /* the object offset of the stream's first byte (range->base) */
    /* the object read is read through (its stream_read, its ranges): held while a restore runs */
    const struct pgr_range_source *object;
    void *object_ud;
};

/* An error the server (or the executor) reported for one statement. */
struct rs_error_info {
    long line;
    long long offset;
    const char *sqlstate; /* five characters; "" when none */
    const char *severity, *message, *detail, *hint;
    int position;          /* 1-based character position in the statement, 0 when none */
    const char *statement; /* the whole statement text */
    const char *database;
};

struct rs_progress {
    long long bytes, total; /* raw source bytes; total < 0 when unknown */
    long statements;
    long long copy_rows;
    long errors;
    long line;
    const char *database;
};

struct rs_options {
    /* libpq connection parameters (NULL-terminated arrays, as PQconnectdbParams takes them) */
    const char *const *keywords;
    const char *const *values;
    int jobs;             /* connections loading data at once; <= 1 is serial */
    int stop_on_error;    /* stop at the first unexpected error (psql's ON_ERROR_STOP) */
    int max_errors_listed;
    int allow_truncated;  /* run a seekable dump that lacks the completion trailer */
    long long total;      /* source size for progress, < 0 unknown */
    double progress_interval;
    /* 1 when the error is expected (counted, not a failure). Called on the calling thread only. */
    int (*on_error)(void *ud, const struct rs_error_info *e);
    /* statements not to send, as script_words writes their first eight words ("drop database
     * postgres ;"): ones the caller knows the server must refuse; counted in rs_result.skipped */
    const char *const *skip;
    size_t nskip;
    void (*on_progress)(void *ud, const struct rs_progress *p);
    void *ud;
};

struct rs_listed_error {
    long line;
    char sqlstate[6];
    int expected;
    char *message, *statement, *database;
};

struct rs_count {
    char sqlstate[6];
    long count;
};

struct rs_result {
    /* fatal: the restore could not run or stopped (cannot connect, refused input, server gone) */
    int fatal;
    char code[32];
    char message[1024];
    long line;
    long long offset;

    long statements, skipped;
    long long copy_rows, bytes;
    long errors, unexpected;
    struct rs_count *by_state;
    size_t nstates;
    struct rs_listed_error *first;
    size_t nfirst;
    char **databases; /* \connect targets, in order */
    size_t ndatabases;
    int jobs_used, gzip, truncated, stopped;
    char format[16];
};

/* Runs the restore; the result is always filled (r->fatal tells), free it with rs_result_free. */
void rs_restore(const struct rs_options *o, struct rs_source *src, struct rs_result *r);
void rs_result_free(struct rs_result *r);

struct rs_copy_block {
    char *database, *table;
    long line;
    long long rows, bytes;
    char *first_row; /* without its newline, cut at first_row_max bytes */
};

struct rs_meta_seen {
    long line;
    char *command;
};

struct rs_inspection {
    int fatal;
    char code[32];
    char message[1024];
    long long offset;
    char format[16]; /* "pg_dumpall", "pg_dump" or "sql" */
    int gzip, trailer;
    long statements, lines;
    long long bytes;
    char **databases, **roles, **connects;
    size_t ndatabases, nroles, nconnects;
    /* pg_dumpall -c: the DROP DATABASE / DROP ROLE statements' names, in order; if_exists when any
     * was written with IF EXISTS (pg_dumpall --if-exists) */
    char **drop_databases, **drop_roles;
    size_t ndrop_databases, ndrop_roles;
    int if_exists;
    /* the header comments of the first per-database section, "" when absent:
     * "-- Dumped from database version 15.4 (...)" and "-- Dumped by pg_dump version 15.4 (...)" */
    char dumped_from[64], dumped_by[64];
    struct rs_copy_block *copies;
    size_t ncopies;
    struct rs_meta_seen *unsupported; /* meta-commands the executor would refuse */
    size_t nunsupported;
};

void rs_inspect(struct rs_source *src, size_t first_row_max, struct rs_inspection *out);
void rs_inspection_free(struct rs_inspection *in);

/* psql's parsing of a meta-command's arguments: whitespace-separated, '...' (with \n-style, octal
 * and \xHH escapes and '') and "..." ("" for ") parts joined, unquoted trailing ';' dropped. Returns the number of words written to out (each malloc'd). */
int rs_meta_args(const char *args, char **out, int max);

/* msg with every secret conninfo holds (password=/sslpassword= values, a URI's user:password@ and
 * ?password= parameters, raw and unescaped) replaced by "***", into out (always NUL-terminated,
 * cut to cap). For echoing libpq's messages about a conninfo string the user gave. */
void rs_redact(const char *conninfo, const char *msg, char *out, size_t cap);

/* Source over a file descriptor (read(2)); ud is a pointer to the int fd. */
long rs_fd_read(void *ud, char *buf, size_t cap, char *err, size_t errcap);

#endif
