/* restore.c — the restore engine behind pg.restore and pg.inspect: input hygiene and gzip, psql's
 * execution semantics over libpq (\connect, \restrict, COPY streaming), error accounting, parallel loads. */
#include "restore.h"
#include "readahead.h"
#include "script.h"
#include "thread.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define CHUNK (256 * 1024)
#define TAIL 256

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static char *xstrdup(const char *s) { return s ? xstrndup(s, strlen(s)) : NULL; }

static int push_str(char ***arr, size_t *n, const char *s)
{
    char **a = realloc(*arr, (*n + 1) * sizeof *a);
    if (!a)
        return -1;
    *arr = a;
    if (!(a[*n] = xstrdup(s)))
        return -1;
    (*n)++;
    return 0;
}

static void free_strs(char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

long rs_fd_read(void *ud, char *buf, size_t cap, char *err, size_t errcap)
{
    int fd = *(int *)ud;
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n >= 0)
            return (long)n;
        if (errno == EINTR)
            continue;
        snprintf(err, errcap, "read: %s", strerror(errno));
        return -1;
    }
}

/* ---------------------------------------------------------------- input: hygiene, gzip, trailer */

struct reader {
    struct rs_source *src;
    int gzip, zdone, eof;
    z_stream z;
    char *raw;
    long long raw_bytes; /* bytes taken from the source */
    long long out_bytes; /* bytes handed to the splitter */
    char tail[TAIL];
    size_t taillen;
    char head[512];
    size_t headlen;
    char code[32], message[1024];
};

static int reader_fail(struct reader *rd, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int reader_fail(struct reader *rd, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    snprintf(rd->code, sizeof rd->code, "%s", code);
    vsnprintf(rd->message, sizeof rd->message, fmt, ap);
    va_end(ap);
    return -1;
}

static long raw_read(struct reader *rd, char *buf, size_t cap)
{
    char err[512] = "";
    long n = rd->src->read(rd->src->ud, buf, cap, err, sizeof err);
    if (n < 0)
        return reader_fail(rd, "io", "reading the dump failed: %s", err[0] ? err : "unknown error");
    rd->raw_bytes += n;
    return n;
}

/* Next decompressed (or plain) bytes; 0 at the end, -1 on error. */
static long reader_read(struct reader *rd, char *buf, size_t cap)
{
    if (!rd->gzip) {
        if (rd->eof)
            return 0;
        long n = raw_read(rd, buf, cap);
        if (n == 0)
            rd->eof = 1;
        return n;
    }
    for (;;) {
        if (rd->zdone)
            return 0;
        if (rd->z.avail_in == 0 && !rd->eof) {
            long n = raw_read(rd, rd->raw, CHUNK);
            if (n < 0)
                return -1;
            if (n == 0)
                rd->eof = 1;
            rd->z.next_in = (Bytef *)rd->raw;
            rd->z.avail_in = (uInt)n;
        }
        rd->z.next_out = (Bytef *)buf;
        rd->z.avail_out = (uInt)cap;
        int zr = inflate(&rd->z, Z_NO_FLUSH);
        long got = (long)(cap - rd->z.avail_out);
        if (zr == Z_STREAM_END) {
            /* concatenated gzip members continue the stream, as gunzip does */
            if (rd->z.avail_in > 0 || !rd->eof) {
                if (rd->z.avail_in == 0) {
                    long n = raw_read(rd, rd->raw, CHUNK);
                    if (n < 0)
                        return -1;
                    if (n == 0) {
                        rd->eof = 1;
                        rd->zdone = 1;
                        return got;
                    }
                    rd->z.next_in = (Bytef *)rd->raw;
                    rd->z.avail_in = (uInt)n;
                }
                inflateReset(&rd->z);
            } else {
                rd->zdone = 1;
            }
            if (got)
                return got;
            continue;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return reader_fail(rd, "corrupt", "gzip data is corrupt near compressed byte %lld: %s",
                               rd->raw_bytes - rd->z.avail_in, rd->z.msg ? rd->z.msg : "inflate failed");
        if (got)
            return got;
        if (rd->eof && rd->z.avail_in == 0)
            return reader_fail(rd, "truncated", "gzip stream ends early after %lld compressed bytes: "
                               "the dump is truncated", rd->raw_bytes);
    }
}

static void remember_tail(struct reader *rd, const char *buf, size_t n)
{
    if (n >= TAIL) {
        memcpy(rd->tail, buf + n - TAIL, TAIL);
        rd->taillen = TAIL;
    } else {
        size_t keep = rd->taillen + n > TAIL ? TAIL - n : rd->taillen;
        memmove(rd->tail, rd->tail + rd->taillen - keep, keep);
        memcpy(rd->tail + keep, buf, n);
        rd->taillen = keep + n;
    }
}

/* Refuses what psql would choke on before anything is sent. buf holds the first n plain bytes. */
static int check_head(struct reader *rd, const char *buf, size_t n)
{
    if (n >= 5 && memcmp(buf, "PGDMP", 5) == 0)
        return reader_fail(rd, "format", "this is a pg_dump custom-format archive, not a plain SQL dump: "
                           "restore it with pg_restore");
    if (n >= 262 && memcmp(buf + 257, "ustar", 5) == 0)
        return reader_fail(rd, "format", "this is a tar archive, not a plain SQL dump: extract it or use "
                           "pg_restore for a pg_dump tar-format archive");
    const char *nul = memchr(buf, 0, n);
    if (nul)
        return reader_fail(rd, "binary", "the dump contains a NUL byte at offset %lld: not a plain SQL dump",
                           (long long)(nul - buf));
    size_t bad = 0, first = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' && c != '\v' && c != 0x1b) {
            if (first == (size_t)-1)
                first = i;
            bad++;
        }
    }
    if (bad && bad * 100 > n)
        return reader_fail(rd, "binary", "the dump looks binary (control byte 0x%02x at offset %zu): not a "
                           "plain SQL dump", (unsigned char)buf[first], first);
    size_t h = n < sizeof rd->head ? n : sizeof rd->head;
    memcpy(rd->head, buf, h);
    rd->headlen = h;
    return 0;
}

/* Opens the input: detects gzip, reads the first plain block into buf and checks it. */
static long reader_open(struct reader *rd, struct rs_source *src, char *buf, size_t cap)
{
    memset(rd, 0, sizeof *rd);
    rd->src = src;
    size_t n = 0;
    /* gather a few bytes to see the magic numbers even from a trickling stream */
    while (n < 512) {
        long k = raw_read(rd, buf + n, cap - n);
        if (k < 0)
            return -1;
        if (k == 0) {
            rd->eof = 1;
            break;
        }
        n += (size_t)k;
    }
    if (n >= 2 && (unsigned char)buf[0] == 0x1f && (unsigned char)buf[1] == 0x8b) {
        rd->gzip = 1;
        if (!(rd->raw = malloc(CHUNK)))
            return reader_fail(rd, "nomem", "out of memory");
        if (inflateInit2(&rd->z, 15 + 16) != Z_OK)
            return reader_fail(rd, "nomem", "zlib init failed");
        memcpy(rd->raw, buf, n);
        rd->z.next_in = (Bytef *)rd->raw;
        rd->z.avail_in = (uInt)n;
        size_t m = 0;
        while (m < 512) {
            long k = reader_read(rd, buf + m, cap - m);
            if (k < 0)
                return -1;
            if (k == 0)
                break;
            m += (size_t)k;
        }
        n = m;
    }
    if (n == 0)
        return reader_fail(rd, "empty", "the dump is empty");
    if (check_head(rd, buf, n) < 0)
        return -1;
    rd->out_bytes = (long long)n;
    remember_tail(rd, buf, n);
    return (long)n;
}

static long reader_next(struct reader *rd, char *buf, size_t cap)
{
    long n = reader_read(rd, buf, cap);
    if (n <= 0)
        return n;
    const char *nul = memchr(buf, 0, (size_t)n);
    if (nul)
        return reader_fail(rd, "binary", "the dump contains a NUL byte at offset %lld: not a plain SQL dump",
                           rd->out_bytes + (nul - buf));
    rd->out_bytes += n;
    remember_tail(rd, buf, (size_t)n);
    return n;
}

static void reader_close(struct reader *rd)
{
    if (rd->gzip)
        inflateEnd(&rd->z);
    free(rd->raw);
    rd->raw = NULL;
}

static const char *format_of(const char *head, size_t n)
{
    static const char cluster[] = "-- PostgreSQL database cluster dump";
    static const char db[] = "-- PostgreSQL database dump";
    if (memmem(head, n, cluster, sizeof cluster - 1))
        return "pg_dumpall";
    if (memmem(head, n, db, sizeof db - 1))
        return "pg_dump";
    return "sql";
}

/* The completion trailer pg_dumpall (or pg_dump) writes last. */
static int has_trailer(const char *tail, size_t n)
{
    while (n && isspace((unsigned char)tail[n - 1]))
        n--;
    static const char *ends[] = { "-- PostgreSQL database cluster dump complete\n--",
                                  "-- PostgreSQL database dump complete\n--" };
    for (int i = 0; i < 2; i++) {
        size_t k = strlen(ends[i]);
        if (n >= k && memcmp(tail + n - k, ends[i], k) == 0)
            return 1;
        /* CRLF files */
        if (n >= k + 1 && memmem(tail, n, ends[i], k - 3) && tail[n - 1] == '-' && tail[n - 2] == '-')
            if (memmem(tail + (n > 64 ? n - 64 : 0), n > 64 ? 64 : n, "dump complete", 13))
                return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- meta-command arguments */

int rs_meta_args(const char *p, char **out, int max)
{
    int n = 0;
    while (*p && n < max) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t cap = strlen(p) + 1, k = 0;
        char *w = malloc(cap);
        if (!w)
            break;
        size_t unquoted = 0; /* bytes since the last quoted part: only those lose trailing ';' */
        while (*p && !isspace((unsigned char)*p)) {
            if (*p == '\'') {
                p++;
                unquoted = 0;
                while (*p) {
                    if (*p == '\'' && p[1] == '\'') {
                        w[k++] = '\'';
                        p += 2;
                    } else if (*p == '\'') {
                        p++;
                        break;
                    } else if (*p == '\\' && p[1] >= '0' && p[1] <= '7') {
                        /* \ooo, one to three octal digits, as psql's slash lexer takes them */
                        int v = 0, d = 0;
                        for (p++; d < 3 && *p >= '0' && *p <= '7'; d++)
                            v = v * 8 + (*p++ - '0');
                        w[k++] = (char)v;
                    } else if (*p == '\\' && p[1] == 'x' && isxdigit((unsigned char)p[2])) {
                        int v = 0, d = 0;
                        for (p += 2; d < 2 && isxdigit((unsigned char)*p); d++, p++)
                            v = v * 16 + (isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10));
                        w[k++] = (char)v;
                    } else if (*p == '\\' && p[1]) {
                        p++;
                        char c = *p++;
                        w[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == 'b' ? '\b'
                                 : c == 'f' ? '\f' : c;
                    } else {
                        w[k++] = *p++;
                    }
                }
            } else if (*p == '"') {
                /* psql's SQLIDHACK: the quotes go, "" inside them is one " */
                p++;
                unquoted = 0;
                while (*p) {
                    if (*p == '"' && p[1] == '"') {
                        w[k++] = '"';
                        p += 2;
                    } else if (*p == '"') {
                        p++;
                        break;
                    } else {
                        w[k++] = *p++;
                    }
                }
            } else {
                w[k++] = *p++;
                unquoted++;
            }
        }
        /* psql strips unquoted trailing semicolons ("\connect db;" connects to db) */
        while (unquoted-- > 0 && k > 0 && w[k - 1] == ';')
            k--;
        w[k] = 0;
        out[n++] = w;
    }
    return n;
}

/* One secret of a conninfo string: [s, s+n). Adds it, and its unescaped / percent-decoded form. */
struct secrets {
    char *v[16];
    int n;
};

static void secret_add(struct secrets *z, const char *s, size_t n, int how)
{
    if (n == 0 || z->n >= (int)(sizeof z->v / sizeof z->v[0]) - 1)
        return;
    char *raw = xstrndup(s, n);
    if (!raw)
        return;
    z->v[z->n++] = raw;
    char *dec = malloc(n + 1);
    if (!dec)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (how == '\\' && s[i] == '\\' && i + 1 < n)
            dec[k++] = s[++i];
        else if (how == '%' && s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
                 isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = { s[i + 1], s[i + 2], 0 };
            dec[k++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else
            dec[k++] = s[i];
    }
    dec[k] = 0;
    if (k && strcmp(dec, raw) != 0)
        z->v[z->n++] = dec;
    else
        free(dec);
}

static int is_password_key(const char *s, size_t n)
{
    return (n == 8 && strncasecmp(s, "password", 8) == 0) || (n == 11 && strncasecmp(s, "sslpassword", 11) == 0);
}

static void find_secrets(const char *ci, struct secrets *z)
{
    size_t pre = !strncmp(ci, "postgresql://", 13) ? 13 : !strncmp(ci, "postgres://", 11) ? 11 : 0;
    if (pre) {
        const char *a = ci + pre;
        size_t alen = strcspn(a, "/?");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (a[i] == '@')
                at = a + i;
        const char *colon = at ? memchr(a, ':', (size_t)(at - a)) : NULL;
        if (colon)
            secret_add(z, colon + 1, (size_t)(at - colon - 1), '%');
        const char *q = strchr(a, '?');
        while (q) {
            q++;
            size_t klen = strcspn(q, "=&");
            if (q[klen] == '=' && is_password_key(q, klen)) {
                const char *v = q + klen + 1;
                secret_add(z, v, strcspn(v, "&"), '%');
            }
            q = strchr(q, '&');
        }
        return;
    }
    const char *p = ci;
    while (*p) {
        while (isspace((unsigned char)*p))
            p++;
        const char *k = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t klen = (size_t)(p - k);
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '=') {
            if (p == k && *p)
                p++;
            continue;
        }
        p++;
        while (isspace((unsigned char)*p))
            p++;
        const char *v = p;
        int quoted = *p == '\'';
        if (quoted) {
            v = ++p;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        if (is_password_key(k, klen))
            secret_add(z, v, (size_t)(p - v), '\\');
        if (quoted && *p)
            p++;
    }
}

void rs_redact(const char *conninfo, const char *msg, char *out, size_t cap)
{
    if (!cap)
        return;
    struct secrets z = { .n = 0 };
    if (conninfo)
        find_secrets(conninfo, &z);
    size_t o = 0;
    for (const char *m = msg ? msg : ""; *m && o + 1 < cap;) {
        size_t best = 0;
        for (int i = 0; i < z.n; i++) {
            size_t l = strlen(z.v[i]);
            if (l > best && strncmp(m, z.v[i], l) == 0)
                best = l;
        }
        if (best) {
            for (const char *r = "***"; *r && o + 1 < cap; r++)
                out[o++] = *r;
            m += best;
        } else {
            out[o++] = *m++;
        }
    }
    out[o] = 0;
    for (int i = 0; i < z.n; i++) {
        explicit_bzero(z.v[i], strlen(z.v[i]));
        free(z.v[i]);
    }
}

/* ---------------------------------------------------------------- connection parameters */

struct params {
    const char **kw, **val;
    char **owned; /* values we allocated */
    size_t n, nowned;
};

static void params_free(struct params *p)
{
    free(p->kw);
    free(p->val);
    for (size_t i = 0; i < p->nowned; i++) /* values may be passwords: none stays in freed memory */
        explicit_bzero(p->owned[i], strlen(p->owned[i]));
    free_strs(p->owned, p->nowned);
    memset(p, 0, sizeof *p);
}

static int params_set(struct params *p, const char *kw, const char *val)
{
    char *v = NULL;
    if (val) {
        if (push_str(&p->owned, &p->nowned, val) < 0)
            return -1;
        v = p->owned[p->nowned - 1];
    }
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->kw[i], kw) == 0) {
            p->val[i] = v;
            return 0;
        }
    const char **k = realloc(p->kw, (p->n + 2) * sizeof *k);
    if (!k)
        return -1;
    p->kw = k;
    const char **vv = realloc(p->val, (p->n + 2) * sizeof *vv);
    if (!vv)
        return -1;
    p->val = vv;
    if (push_str(&p->owned, &p->nowned, kw) < 0)
        return -1;
    p->kw[p->n] = p->owned[p->nowned - 1];
    p->val[p->n] = v;
    p->n++;
    p->kw[p->n] = NULL;
    p->val[p->n] = NULL;
    return 0;
}

static const char *params_get(const struct params *p, const char *kw)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->kw[i], kw) == 0)
            return p->val[i];
    return NULL;
}

static int params_copy(struct params *dst, const struct params *src)
{
    memset(dst, 0, sizeof *dst);
    for (size_t i = 0; i < src->n; i++)
        if (params_set(dst, src->kw[i], src->val[i]) < 0)
            return -1;
    return 0;
}

static void no_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *connect_params(const struct params *p, char *err, size_t errcap)
{
    PGconn *c = PQconnectdbParams(p->kw, p->val, 0);
    if (!c) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errcap, "%s", PQerrorMessage(c));
        size_t l = strlen(err);
        while (l && isspace((unsigned char)err[l - 1]))
            err[--l] = 0;
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, no_notices, NULL);
    return c;
}

/* ---------------------------------------------------------------- the parallel pool */

enum { TASK_COPY, TASK_STMT };

struct task {
    int kind;
    char *sql;
    char *table; /* a COPY's target, or the table a deferred post-data statement waits for */
    int wait_all; /* deferred until no table is being loaded */
    long long weight; /* bytes of data it loads or indexes: the pool takes the heaviest first */
    long line;
    long long start, end;
    int dbver;
    /* a COPY fed from the dump stream the main thread reads (its reader's side; the main thread
     * writes the block's data into it as it reads on), instead of a file's or a range's bytes */
    pgr_ra_queue *feed;
    int fed; /* it was (no byte count of its own) */
    /* results */
    int failed, lost, retry;
    int feed_failed; /* the feed ended with the stream's failure (or a stop), not the server's */
    char sqlstate[6];
    char *message, *detail, *hint, *severity;
    int position;
    long long rows;
    struct task *next;
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv_task, cv_done;
    struct task *head, *tail, *done_head, *done_tail;
    int outstanding, shutdown, nthreads;
    pthread_t *th;
    const char *path; /* pread from this file, or */
    const struct pgr_range_source *range; /* fetch each block through this */
    void *range_ud;
    long long range_base; /* script offset 0 is this object offset */
    /* changed by the main thread only while no task is outstanding */
    struct params params;
    int dbver;
    char **prelude;
    size_t nprelude;
    atomic_llong pending_bytes;
};

static void task_free(struct task *t)
{
    if (!t)
        return;
    if (t->feed)
        pgr_ra_close(t->feed); /* never run: what the main thread writes on is dropped */
    free(t->sql);
    free(t->table);
    free(t->message);
    free(t->detail);
    free(t->hint);
    free(t->severity);
    free(t);
}

static void task_error(struct task *t, PGconn *c, PGresult *res, const char *fallback)
{
    t->failed = 1;
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(t->sqlstate, sizeof t->sqlstate, "%s", st ? st : "");
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!m)
        m = fallback ? fallback : PQerrorMessage(c);
    t->message = xstrdup(m);
    if (t->message) {
        size_t l = strlen(t->message);
        while (l && isspace((unsigned char)t->message[l - 1]))
            t->message[--l] = 0;
    }
    if (res) {
        t->detail = xstrdup(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL));
        t->hint = xstrdup(PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
        t->severity = xstrdup(PQresultErrorField(res, PG_DIAG_SEVERITY));
        const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
        t->position = pos ? atoi(pos) : 0;
    }
    if (PQstatus(c) != CONNECTION_OK)
        t->lost = 1;
}

static void drain_results(PGconn *c, struct task *t)
{
    PGresult *res;
    while ((res = PQgetResult(c)) != NULL) {
        ExecStatusType s = PQresultStatus(res);
        if (s == PGRES_FATAL_ERROR) {
            if (!t->failed)
                task_error(t, c, res, NULL);
        } else if (s == PGRES_COMMAND_OK && t->kind == TASK_COPY) {
            const char *n = PQcmdTuples(res);
            t->rows = n && *n ? atoll(n) : 0;
        } else if (s == PGRES_COPY_IN) {
            PQputCopyEnd(c, "unexpected COPY");
        }
        PQclear(res);
        if (PQstatus(c) != CONNECTION_OK)
            break;
    }
}

/* A COPY whose data the main thread hands over as it reads the dump: sent as it comes. When the load
 * ends early (the server refused it, the connection went), the queue is closed at once so the main
 * thread drops the rest of the block instead of waiting for room. */
static void run_fed_copy(PGconn *c, struct task *t, PGresult *res, char *buf)
{
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        task_error(t, c, res, "COPY did not start");
        PQclear(res);
        pgr_ra_close(t->feed);
        t->feed = NULL;
        drain_results(c, t);
        return;
    }
    PQclear(res);
    char e[512] = "";
    long n;
    int sent = 1;
    while ((n = pgr_ra_read(t->feed, buf, CHUNK, e, sizeof e)) > 0)
        if (PQputCopyData(c, buf, (int)n) != 1) {
            sent = 0;
            break;
        }
    pgr_ra_close(t->feed);
    t->feed = NULL;
    if (sent && n == 0) {
        PQputCopyEnd(c, NULL);
    } else if (sent) {
        t->feed_failed = 1;
        PQputCopyEnd(c, e);
    }
    drain_results(c, t);
    if (PQstatus(c) != CONNECTION_OK && !t->failed)
        task_error(t, c, NULL, NULL);
}

static void run_task(struct pool *p, PGconn *c, int fd, struct task *t, char *buf)
{
    PGresult *res = PQexec(c, t->sql);
    ExecStatusType s = PQresultStatus(res);
    if (t->kind == TASK_STMT) {
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
            task_error(t, c, res, NULL);
        PQclear(res);
        return;
    }
    if (t->feed) {
        run_fed_copy(c, t, res, buf);
        return;
    }
    long long len = t->end - t->start;
    if (s != PGRES_COPY_IN) {
        task_error(t, c, res, "COPY did not start");
        PQclear(res);
        drain_results(c, t);
        atomic_fetch_sub(&p->pending_bytes, len);
        return;
    }
    PQclear(res);
    long long off = t->start, sent = 0;
    void *h = NULL;
    if (!p->path && t->end > t->start) {
        char e[512] = "";
        if (!(h = p->range->open(p->range_ud, p->range_base + t->start, p->range_base + t->end, e, sizeof e))) {
            char m[768];
            snprintf(m, sizeof m, "reading the dump at offset %lld failed: %s", off, e);
            PQputCopyEnd(c, m);
            off = -1;
        }
    }
    while (off >= 0 && off < t->end) {
        size_t want = (size_t)(t->end - off < CHUNK ? t->end - off : CHUNK);
        char e[512] = "";
        ssize_t n = h ? (ssize_t)p->range->read(h, buf, want, e, sizeof e) : pread(fd, buf, want, off);
        if (n <= 0) {
            char m[768];
            snprintf(m, sizeof m, "reading the dump at offset %lld failed: %s", off,
                     h ? (n < 0 ? e : "unexpected end of the range") : n < 0 ? strerror(errno) : "unexpected end of file");
            PQputCopyEnd(c, m);
            break;
        }
        if (PQputCopyData(c, buf, (int)n) != 1) {
            break;
        }
        off += n;
        sent += n;
        atomic_fetch_sub(&p->pending_bytes, n);
    }
    if (h)
        p->range->close(h);
    if (off >= t->end)
        PQputCopyEnd(c, NULL);
    atomic_fetch_sub(&p->pending_bytes, len - sent);
    drain_results(c, t);
    if (PQstatus(c) != CONNECTION_OK && !t->failed)
        task_error(t, c, NULL, NULL);
}

static void *worker(void *arg)
{
    struct pool *p = arg;
    PGconn *c = NULL;
    int dbver = -1;
    size_t applied = 0;
    int fd = p->path ? open(p->path, O_RDONLY | O_CLOEXEC) : -2; /* -2: ranges, no file */
    char *buf = malloc(CHUNK);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->shutdown)
            pthread_cond_wait(&p->cv_task, &p->mu);
        if (!p->head) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        /* the biggest load first (longest job first keeps both connections busy to the end);
         * equal sizes (statements) in the order they came */
        struct task **best = &p->head, *prev = NULL, *bestprev = NULL;
        for (struct task **pp = &p->head; *pp; prev = *pp, pp = &(*pp)->next)
            if ((*pp)->weight > (*best)->weight) {
                best = pp;
                bestprev = prev;
            }
        struct task *t = *best;
        *best = t->next;
        if (p->tail == t)
            p->tail = bestprev;
        t->next = NULL;
        pthread_mutex_unlock(&p->mu);

        char err[1024] = "";
        if (c && (dbver != t->dbver || PQstatus(c) != CONNECTION_OK)) {
            PQfinish(c);
            c = NULL;
        }
        if (!c) {
            c = connect_params(&p->params, err, sizeof err);
            dbver = t->dbver;
            applied = 0;
        }
        if (!c || fd == -1 || !buf) {
            t->failed = t->lost = 1;
            t->message = xstrdup(!c ? err : "cannot open the dump for a parallel load");
            if (t->feed) {
                pgr_ra_close(t->feed); /* the main thread must not wait for room on it */
                t->feed = NULL;
            } else if (t->kind == TASK_COPY && !t->fed) {
                atomic_fetch_sub(&p->pending_bytes, t->end - t->start);
            }
        } else {
            /* the session settings the script made on the main connection */
            for (; applied < p->nprelude; applied++)
                PQclear(PQexec(c, p->prelude[applied]));
            double t0 = now();
            run_task(p, c, fd, t, buf);
            /* PGR_TRACE=1 shows the parallel schedule (debugging aid) */
            if (getenv("PGR_TRACE"))
                fprintf(stderr, "pgr trace: %.3f-%.3f %.60s\n", t0, now(), t->sql);
        }
        pthread_mutex_lock(&p->mu);
        if (p->done_tail)
            p->done_tail->next = t;
        else
            p->done_head = t;
        p->done_tail = t;
        p->outstanding--;
        pthread_cond_signal(&p->cv_done);
        pthread_mutex_unlock(&p->mu);
    }
    if (c)
        PQfinish(c);
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static void pool_free(struct pool *p);

static struct pool *pool_new(int n, const struct rs_source *src, const struct params *params)
{
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_task, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    p->path = src->path;
    p->range = src->range;
    p->range_ud = src->range_ud;
    p->range_base = src->range_base;
    atomic_init(&p->pending_bytes, 0);
    if (params_copy(&p->params, params) < 0 || !(p->th = calloc((size_t)n, sizeof *p->th))) {
        params_free(&p->params);
        free(p);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (pgr_thread_create(&p->th[i], worker, p) != 0)
            break;
        p->nthreads++;
    }
    if (p->nthreads == 0) { /* no thread to run a task: the restore goes on serially */
        pool_free(p);
        return NULL;
    }
    return p;
}

static void pool_push(struct pool *p, struct task *t)
{
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = t;
    else
        p->head = t;
    p->tail = t;
    p->outstanding++;
    pthread_cond_signal(&p->cv_task);
    pthread_mutex_unlock(&p->mu);
}

/* Takes the finished tasks (waiting up to timeout seconds for one when wait is set). */
static struct task *pool_take_done(struct pool *p, double timeout, int *outstanding)
{
    pthread_mutex_lock(&p->mu);
    if (!p->done_head && p->outstanding > 0 && timeout > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (long long)(timeout * 1e9);
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&p->cv_done, &p->mu, &ts);
    }
    struct task *t = p->done_head;
    p->done_head = p->done_tail = NULL;
    *outstanding = p->outstanding;
    pthread_mutex_unlock(&p->mu);
    return t;
}

static void pool_free(struct pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->shutdown = 1;
    pthread_cond_broadcast(&p->cv_task);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->th[i], NULL);
    for (struct task *t = p->head, *n; t; t = n) {
        n = t->next;
        task_free(t);
    }
    for (struct task *t = p->done_head, *n; t; t = n) {
        n = t->next;
        task_free(t);
    }
    free(p->th);
    params_free(&p->params);
    free_strs(p->prelude, p->nprelude);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_task);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

/* ---------------------------------------------------------------- the executor */

enum { COPY_NONE, COPY_STREAM, COPY_DISCARD, COPY_DISPATCH, COPY_FEED };

struct exec {
    const struct rs_options *o;
    struct rs_result *r;
    struct script *sc;
    struct reader rd;
    struct params params;
    PGconn *conn;
    char *dbname;
    int restricted;
    char *restrict_key;
    int copy_mode;
    char *copy_sql;
    char copy_table[512];
    long copy_line;
    long long copy_sent;
    struct pool *pool;
    char **inflight; /* COPY targets being loaded (normalized names) */
    size_t ninflight;
    char **copied; /* COPY targets of this database so far */
    size_t ncopied;
    long long *copied_bytes; /* their data sizes */
    struct task *deferred, *deferred_tail; /* post-data statements waiting for their table's rows */
    struct task *batch, *batch_tail; /* COPY loads of a data section not yet handed to the pool */
    int eager; /* a stream (S3): each load goes to the pool as soon as its end is read, since reading
                * to the end of the data section takes as long as the loads themselves */
    /* a stream that reads ahead: each load starts at its COPY and is fed the block's data as the
     * dump is read (read once), within this budget; NULL: loads read their own bytes */
    pgr_ra_pool *feeds;
    pgr_ra_queue *feed; /* the writer's side of the block being read */
    int feed_dropped;   /* its load has ended early: the rest of the block is skipped */
    int stop;
    double last_progress;
};

static void fatal(struct exec *x, const char *code, long line, long long offset, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void fatal(struct exec *x, const char *code, long line, long long offset, const char *fmt, ...)
{
    if (x->r->fatal)
        return;
    va_list ap;
    va_start(ap, fmt);
    x->r->fatal = 1;
    snprintf(x->r->code, sizeof x->r->code, "%s", code);
    vsnprintf(x->r->message, sizeof x->r->message, fmt, ap);
    va_end(ap);
    size_t l = strlen(x->r->message);
    while (l && isspace((unsigned char)x->r->message[l - 1]))
        x->r->message[--l] = 0;
    x->r->line = line;
    x->r->offset = offset;
    x->stop = 1;
}

static void progress(struct exec *x, int force)
{
    if (!x->o->on_progress)
        return;
    double t = now();
    if (!force && t - x->last_progress < (x->o->progress_interval > 0 ? x->o->progress_interval : 0.5))
        return;
    x->last_progress = t;
    struct rs_progress p = { 0 };
    long long pending = x->pool ? atomic_load(&x->pool->pending_bytes) : 0;
    p.bytes = x->rd.gzip ? x->rd.raw_bytes : x->rd.raw_bytes - pending;
    if (p.bytes < 0)
        p.bytes = 0;
    p.total = x->o->total;
    p.statements = x->r->statements;
    p.copy_rows = x->r->copy_rows;
    p.errors = x->r->errors;
    p.line = x->sc ? script_position(x->sc).line : 0;
    p.database = x->dbname;
    x->o->on_progress(x->o->ud, &p);
}

/* The length of a dollar-quote tag at s ("$$", "$pw$"), 0 when s does not start one. */
static size_t dollar_tag(const char *s)
{
    if (*s != '$')
        return 0;
    size_t i = 1;
    if (isalpha((unsigned char)s[i]) || s[i] == '_' || (unsigned char)s[i] >= 0x80)
        while (isalnum((unsigned char)s[i]) || s[i] == '_' || (unsigned char)s[i] >= 0x80)
            i++;
    return s[i] == '$' ? i + 1 : 0;
}

/* The statement as an error report shows it: its first line, at most 200 bytes, and a
 * PASSWORD literal (an md5 verifier logs in as well as the password) as '***': '...', E'...',
 * U&'...' and $tag$...$tag$ alike. */
static char *first_line(const char *sql)
{
    const char *e = strchr(sql, '\n');
    size_t n = e ? (size_t)(e - sql) : strlen(sql);
    if (n > 200)
        n = 200;
    while (n && (sql[n - 1] == '\r' || isspace((unsigned char)sql[n - 1])))
        n--;
    /* room for '***' replacing shorter literals: each needs "password''" (10 bytes) to grow by 3 */
    char *d = malloc(n + n / 3 + 8);
    if (!d)
        return NULL;
    memcpy(d, sql, n);
    d[n] = 0;
    for (char *p = d; p && (p = strcasestr(p, "password")) != NULL;) {
        p += 8;
        char *q = p;
        while (isspace((unsigned char)*q))
            q++;
        size_t tag = dollar_tag(q);
        if (tag) {
            /* $tag$...$tag$: no escapes inside; the literal ends at the same tag (or the cut) */
            char *body = q + tag, *end = body;
            while (*end && strncmp(end, q, tag) != 0)
                end++;
            memmove(body + 3, end, strlen(end) + 1);
            memcpy(body, "***", 3);
            p = body + 3 + (*(body + 3) ? tag : 0);
            continue;
        }
        int bs = *q == 'E' || *q == 'e'; /* E'...' also escapes with backslashes */
        q += bs;
        if (!bs && (*q == 'U' || *q == 'u') && q[1] == '&')
            q += 2; /* U&'...': a doubled quote is its only escape */
        if (*q != '\'')
            continue;
        char *end = ++q;
        while (*end && !(*end == '\'' && end[1] != '\''))
            end += (*end == '\'' || (bs && *end == '\\' && end[1])) ? 2 : 1;
        memmove(q + 3, end, strlen(end) + 1);
        memcpy(q, "***", 3);
        p = q + 3;
    }
    return d;
}

static void count_state(struct rs_result *r, const char *st)
{
    for (size_t i = 0; i < r->nstates; i++)
        if (strcmp(r->by_state[i].sqlstate, st) == 0) {
            r->by_state[i].count++;
            return;
        }
    struct rs_count *n = realloc(r->by_state, (r->nstates + 1) * sizeof *n);
    if (!n)
        return;
    r->by_state = n;
    snprintf(n[r->nstates].sqlstate, sizeof n[r->nstates].sqlstate, "%s", st);
    n[r->nstates].count = 1;
    r->nstates++;
}

/* Counts and classifies one error (main thread only: the callback may be Lua). */
static void record_error(struct exec *x, const struct rs_error_info *e)
{
    struct rs_result *r = x->r;
    int expected = x->o->on_error ? x->o->on_error(x->o->ud, e) : 0;
    r->errors++;
    if (!expected)
        r->unexpected++;
    count_state(r, e->sqlstate && *e->sqlstate ? e->sqlstate : "-----");
    int max = x->o->max_errors_listed > 0 ? x->o->max_errors_listed : 20;
    if (r->nfirst >= (size_t)max && !expected) {
        /* a full list makes room for an unexpected error by dropping the latest expected one */
        for (size_t i = r->nfirst; i-- > 0;)
            if (r->first[i].expected) {
                free(r->first[i].message);
                free(r->first[i].statement);
                free(r->first[i].database);
                memmove(&r->first[i], &r->first[i + 1], (r->nfirst - i - 1) * sizeof r->first[0]);
                r->nfirst--;
                break;
            }
    }
    if (r->nfirst < (size_t)max) {
        struct rs_listed_error *n = realloc(r->first, (r->nfirst + 1) * sizeof *n);
        if (n) {
            r->first = n;
            struct rs_listed_error *l = &n[r->nfirst++];
            memset(l, 0, sizeof *l);
            l->line = e->line;
            snprintf(l->sqlstate, sizeof l->sqlstate, "%s", e->sqlstate ? e->sqlstate : "");
            l->expected = expected;
            l->message = xstrdup(e->message ? e->message : "");
            l->statement = first_line(e->statement ? e->statement : "");
            l->database = xstrdup(e->database);
        }
    }
    if (!expected && x->o->stop_on_error) {
        r->stopped = 1;
        x->stop = 1;
    }
}

static void record_result_error(struct exec *x, PGresult *res, const char *sql, long line, long long off)
{
    char msg[1024];
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!m) {
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(x->conn));
        size_t l = strlen(msg);
        while (l && isspace((unsigned char)msg[l - 1]))
            msg[--l] = 0;
        m = msg;
    }
    const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    struct rs_error_info e = {
        .line = line,
        .offset = off,
        .sqlstate = res && PQresultErrorField(res, PG_DIAG_SQLSTATE) ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "",
        .severity = res ? PQresultErrorField(res, PG_DIAG_SEVERITY) : NULL,
        .message = m,
        .detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL,
        .hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL,
        .position = pos ? atoi(pos) : 0,
        .statement = sql,
        .database = x->dbname,
    };
    record_error(x, &e);
}

static int lost(struct exec *x, long line, long long off)
{
    if (PQstatus(x->conn) == CONNECTION_OK)
        return 0;
    fatal(x, "connection_lost", line, off, "the server connection was lost at line %ld (byte offset %lld) "
          "of the dump: %s", line, off, PQerrorMessage(x->conn));
    return 1;
}

static int has_name(char **a, size_t n, const char *name);

/* Post-data statements whose table has finished loading go to the pool, in dump order. */
static void release_deferred(struct exec *x)
{
    struct task **pp = &x->deferred, *last = NULL;
    if (x->stop) {
        /* stopped: what comes later in the dump does not run, as with psql's ON_ERROR_STOP */
        for (struct task *t = x->deferred, *n; t; t = n) {
            n = t->next;
            task_free(t);
        }
        x->deferred = x->deferred_tail = NULL;
        return;
    }
    while (*pp) {
        struct task *t = *pp;
        int ready = t->wait_all ? x->ninflight == 0 : !has_name(x->inflight, x->ninflight, t->table);
        if (ready) {
            *pp = t->next;
            t->next = NULL;
            free(t->table);
            t->table = NULL;
            pool_push(x->pool, t);
        } else {
            last = t;
            pp = &t->next;
        }
    }
    x->deferred_tail = last;
}

/* The loads of a data section go to the pool together, so it can start with the biggest. */
static void flush_batch(struct exec *x)
{
    while (x->batch) {
        struct task *t = x->batch;
        x->batch = t->next;
        t->next = NULL;
        if (x->stop) { /* stopped: nothing later in the dump is loaded */
            atomic_fetch_sub(&x->pool->pending_bytes, t->end - t->start);
            task_free(t);
            continue;
        }
        pool_push(x->pool, t);
    }
    x->batch_tail = NULL;
}

/* After a stop: the tasks no worker has started are dropped, as psql runs nothing after the error. */
static void drop_queued(struct exec *x)
{
    struct pool *p = x->pool;
    pthread_mutex_lock(&p->mu);
    struct task *t = p->head;
    p->head = p->tail = NULL;
    for (struct task *u = t; u; u = u->next) {
        p->outstanding--;
        if (u->kind == TASK_COPY && !u->fed)
            atomic_fetch_sub(&p->pending_bytes, u->end - u->start);
    }
    pthread_mutex_unlock(&p->mu);
    for (struct task *n; t; t = n) {
        n = t->next;
        task_free(t);
    }
}

/* Results of finished parallel tasks: counted, errors classified; statements that lost a lock race
 * (deadlock) are run again here, serially. */
static void collect(struct exec *x, struct task *t)
{
    while (t) {
        struct task *next = t->next;
        if (t->table)
            for (size_t i = 0; i < x->ninflight; i++)
                if (!strcmp(x->inflight[i], t->table)) {
                    free(x->inflight[i]);
                    x->inflight[i] = x->inflight[--x->ninflight];
                    break;
                }
        if (t->failed && t->kind == TASK_STMT &&
            (!strcmp(t->sqlstate, "40P01") || !strcmp(t->sqlstate, "55P03")) && !x->stop) {
            PGresult *res = PQexec(x->conn, t->sql);
            ExecStatusType s = PQresultStatus(res);
            if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
                if (!lost(x, t->line, t->start))
                    record_result_error(x, res, t->sql, t->line, t->start);
            }
            PQclear(res);
        } else if (t->failed && t->lost && x->r->fatal) {
            /* the restore already failed (the server went away): this is the same failure */
        } else if (t->failed && t->feed_failed && (x->r->fatal || x->stop)) {
            /* its block was cut short by the restore's own failure or stop: rolled back, as psql
             * would never have run it */
        } else if (t->failed) {
            if (t->lost && !x->stop) {
                fatal(x, "connection_lost", t->line, t->start,
                      "a loading connection was lost at line %ld (byte offset %lld) of the dump: %s", t->line,
                      t->start, t->message ? t->message : "");
            } else {
                struct rs_error_info e = {
                    .line = t->line,
                    .offset = t->start,
                    .sqlstate = t->sqlstate,
                    .severity = t->severity,
                    .message = t->message ? t->message : "",
                    .detail = t->detail,
                    .hint = t->hint,
                    .position = t->position,
                    .statement = t->sql,
                    .database = x->dbname,
                };
                record_error(x, &e);
            }
        } else if (t->kind == TASK_COPY) {
            x->r->copy_rows += t->rows;
        }
        task_free(t);
        t = next;
    }
    if (x->stop)
        drop_queued(x);
    if (x->deferred)
        release_deferred(x);
}

static void barrier(struct exec *x)
{
    if (!x->pool)
        return;
    collect(x, pool_take_done(x->pool, 0, &(int){ 0 }));
    flush_batch(x);
    for (;;) {
        int outstanding;
        collect(x, pool_take_done(x->pool, 0.2, &outstanding));
        progress(x, 0);
        /* collect may have released deferred statements: look again under the lock */
        pthread_mutex_lock(&x->pool->mu);
        outstanding = x->pool->outstanding;
        int done_waiting = x->pool->done_head != NULL;
        pthread_mutex_unlock(&x->pool->mu);
        if (outstanding > 0 || done_waiting)
            continue;
        if (!x->deferred)
            break;
        /* nothing loads any more (a stop may have left a name behind): release everything */
        free_strs(x->inflight, x->ninflight);
        x->inflight = NULL;
        x->ninflight = 0;
        release_deferred(x);
    }
}

static int has_name(char **a, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(a[i], name))
            return 1;
    return 0;
}

/* Waits for finished tasks until table (or, when NULL, every table) is no longer being loaded. */
static void wait_loaded(struct exec *x, const char *table)
{
    flush_batch(x);
    while (!x->stop && (table ? has_name(x->inflight, x->ninflight, table) : x->ninflight > 0)) {
        int outstanding;
        collect(x, pool_take_done(x->pool, 0.2, &outstanding));
        progress(x, 0);
        if (outstanding == 0)
            break;
    }
}

/* A table name as pg_dump writes it, in one spelling: words of the text with "." joined tight. */
static void norm_words(const char *w, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = w; *p && o + 1 < cap; p++) {
        if (*p == ' ' && (p[1] == '.' || (p > w && p[-1] == '.')))
            continue;
        out[o++] = *p;
    }
    out[o] = 0;
}

static void norm_table(const char *text, char *out, size_t cap)
{
    char w[600];
    script_words(text, strlen(text), 7, w, sizeof w);
    norm_words(w, out, cap);
}

/* The table a parallel post-data statement works on: "create [unique] index N on [only] T ..." or
 * "alter table [only] T ...". */
static void post_data_table(const char *sql, size_t len, char *out, size_t cap)
{
    char w[800];
    int n = script_words(sql, len, 14, w, sizeof w);
    char *tok[16];
    int k = 0;
    for (char *p = strtok(w, " "); p && k < 16 && k < n; p = strtok(NULL, " "))
        tok[k++] = p;
    int i = 0;
    if (k > 2 && !strcmp(tok[0], "alter")) {
        i = 2;
    } else {
        while (i < k && strcmp(tok[i], "on"))
            i++;
        i++;
    }
    if (i < k && !strcmp(tok[i], "only"))
        i++;
    out[0] = 0;
    size_t o = 0;
    for (int j = 0; i < k && j < 3; i++, j++) {
        if (j == 1 && strcmp(tok[i], "."))
            break;
        size_t l = strlen(tok[i]);
        if (o + l + 1 >= cap)
            break;
        memcpy(out + o, tok[i], l);
        o += l;
        out[o] = 0;
    }
}

/* Statements that touch nothing a load in flight touches, so they need not wait for the loads:
 * sequence values and large objects (pg_dump's data section after the tables), and the
 * transaction brackets around large-object writes. */
static int runs_beside_loads(const char *sql, size_t len)
{
    char w[64];
    script_words(sql, len, 4, w, sizeof w);
    static const char *ok[] = { "select pg_catalog . setval", "select pg_catalog . lo_create",
                                "select pg_catalog . lo_open", "select pg_catalog . lowrite",
                                "select pg_catalog . lo_close", "begin ;", "commit ;" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strncmp(w, ok[i], strlen(ok[i])))
            return 1;
    return 0;
}

static int is_session_setting(const char *sql, size_t len)
{
    char w[64];
    script_words(sql, len, 4, w, sizeof w); /* words: "pg_catalog.set_config" is three of them */
    if (!strncmp(w, "set ", 4))
        return strncmp(w, "set local", 9) != 0 && strncmp(w, "set transaction", 15) != 0 &&
               strncmp(w, "set constraints", 15) != 0;
    return !strcmp(w, "select pg_catalog . set_config") || !strncmp(w, "select set_config (", 19);
}

/* Post-data statements that may run beside each other: index builds and primary key / unique
 * constraints of different tables (a lock conflict only makes one wait; a deadlock is retried). */
static int is_parallel_post_data(const char *sql, size_t len)
{
    char w[160];
    script_words(sql, len, 12, w, sizeof w);
    if (!strncmp(w, "create index ", 13) || !strncmp(w, "create unique index ", 20))
        return !strstr(w, " concurrently");
    if (strncmp(w, "alter table ", 12) != 0)
        return 0;
    /* "... add constraint NAME primary key|unique": the words right after the name decide, so a
     * foreign key named like "unique_fk" (which needs the other table's key first) stays serial */
    const char *a = strstr(w, " add constraint ");
    if (!a)
        return 0;
    a += strlen(" add constraint ");
    const char *sp = strchr(a, ' ');
    if (!sp)
        return 0;
    return !strncmp(sp, " primary key", 12) || !strncmp(sp, " unique ", 8) || !strcmp(sp, " unique");
}

/* Whether loading the table fires triggers (a foreign key's check, a user trigger): a data-only dump
 * orders such loads (referenced tables first), so they may not run beside the others. */
static int has_insert_triggers(struct exec *x, const char *table)
{
    const char *v[1] = { table };
    PGresult *res = PQexecParams(x->conn, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = "
                                 "pg_catalog.to_regclass($1) AND tgenabled <> 'D' AND (tgtype & 4) <> 0)",
                                 1, NULL, v, NULL, NULL, 0);
    int yes = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    return yes;
}

/* The load of the COPY block about to be read starts now, fed as the block is read. */
static int start_feed(struct exec *x, const struct script_pos *pos)
{
    struct task *t = calloc(1, sizeof *t);
    if (!t || !(t->table = xstrdup(x->copy_table)) || !(t->feed = pgr_ra_queue_new(x->feeds))) {
        task_free(t);
        fatal(x, "nomem", pos->line, pos->offset, "out of memory");
        return -1;
    }
    t->kind = TASK_COPY;
    t->fed = 1;
    t->sql = x->copy_sql;
    x->copy_sql = NULL;
    t->line = pos->line;
    t->start = t->end = pos->offset;
    /* taken before any other task: the main thread reads on only as fast as it drains */
    t->weight = LLONG_MAX / 4;
    t->dbver = x->pool->dbver;
    x->feed = t->feed;
    x->feed_dropped = 0;
    x->copy_mode = COPY_FEED;
    pool_push(x->pool, t);
    return 0;
}

/* The block being fed ends: cleanly, or (error) cut short so its load rolls back. */
static void end_feed(struct exec *x, const char *error)
{
    if (!x->feed)
        return;
    pgr_ra_end(x->feed, error);
    x->feed = NULL;
}

static int on_statement(void *ud, const char *sql, size_t len, const struct script_pos *pos)
{
    struct exec *x = ud;
    if (x->stop)
        return SCRIPT_STOP;
    progress(x, 0);
    if (x->o->nskip && (sql[0] == 'D' || sql[0] == 'd')) {
        char w[256];
        script_words(sql, len, 8, w, sizeof w);
        for (size_t i = 0; i < x->o->nskip; i++)
            if (!strcmp(w, x->o->skip[i])) {
                x->r->skipped++;
                return SCRIPT_CONTINUE;
            }
    }
    int is_copy = script_is_copy_from_stdin(sql, len, NULL, 0);
    int idle = PQtransactionStatus(x->conn) == PQTRANS_IDLE;
    if (is_copy) {
        x->copy_line = pos->line;
        x->copy_sent = 0;
        free(x->copy_sql);
        x->copy_sql = xstrndup(sql, len);
        if (x->pool && idle) {
            /* two loads of one table at once would interleave its rows: the second waits */
            char raw[512], table[512];
            script_is_copy_from_stdin(sql, len, raw, sizeof raw);
            norm_table(raw, table, sizeof table);
            if (has_insert_triggers(x, raw))
                goto serial;
            if (has_name(x->inflight, x->ninflight, table))
                wait_loaded(x, table);
            push_str(&x->inflight, &x->ninflight, table);
            snprintf(x->copy_table, sizeof x->copy_table, "%s", table);
            if (!has_name(x->copied, x->ncopied, table))
                push_str(&x->copied, &x->ncopied, table);
            x->copy_mode = COPY_DISPATCH;
            if (x->feeds && !x->stop && start_feed(x, pos) != 0)
                return SCRIPT_STOP;
            return x->stop ? SCRIPT_STOP : SCRIPT_COPY;
        }
    serial:
        barrier(x);
        PGresult *res = PQexec(x->conn, sql);
        ExecStatusType s = PQresultStatus(res);
        if (s == PGRES_COPY_IN) {
            x->copy_mode = COPY_STREAM;
        } else {
            if (!lost(x, pos->line, pos->offset))
                record_result_error(x, res, sql, pos->line, pos->offset);
            /* psql would read the rows as SQL and fail on each; they are skipped instead */
            x->copy_mode = COPY_DISCARD;
        }
        PQclear(res);
        return x->stop ? SCRIPT_STOP : SCRIPT_COPY;
    }

    if (x->pool)
        flush_batch(x);
    if (x->pool && idle && is_parallel_post_data(sql, len)) {
        /* after its own table's data; a table without data of its own here (a partitioned parent)
         * after every load, so no index or key is ever built before the rows it covers */
        char table[512];
        post_data_table(sql, len, table, sizeof table);
        struct task *t = calloc(1, sizeof *t);
        if (t && (t->sql = xstrndup(sql, len))) {
            t->kind = TASK_STMT;
            t->line = pos->line;
            t->start = pos->offset;
            t->dbver = x->pool->dbver;
            x->r->statements++;
            t->wait_all = !table[0] || !has_name(x->copied, x->ncopied, table);
            for (size_t i = 0; x->copied_bytes && i < x->ncopied; i++)
                if (!strcmp(x->copied[i], table))
                    t->weight = x->copied_bytes[i] / 4; /* an index build costs less than the load */
            t->table = xstrdup(table);
            if (x->deferred_tail)
                x->deferred_tail->next = t;
            else
                x->deferred = t;
            x->deferred_tail = t;
            release_deferred(x);
            collect(x, pool_take_done(x->pool, 0, &(int){ 0 }));
            return x->stop ? SCRIPT_STOP : SCRIPT_CONTINUE;
        }
        free(t);
    }
    if (!runs_beside_loads(sql, len))
        barrier(x);
    if (x->stop)
        return SCRIPT_STOP;

    PGresult *res = PQexec(x->conn, sql);
    x->r->statements++;
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        if (x->pool && is_session_setting(sql, len))
            push_str(&x->pool->prelude, &x->pool->nprelude, sql);
        break;
    case PGRES_COPY_OUT: {
        char *buf;
        while (PQgetCopyData(x->conn, &buf, 0) > 0)
            PQfreemem(buf);
        PQclear(res);
        while ((res = PQgetResult(x->conn)) != NULL)
            PQclear(res);
        break;
    }
    case PGRES_COPY_IN:
        PQputCopyEnd(x->conn, "pgr: COPY FROM STDIN in an unexpected form");
        PQclear(res);
        while ((res = PQgetResult(x->conn)) != NULL)
            PQclear(res);
        break;
    default:
        if (!lost(x, pos->line, pos->offset))
            record_result_error(x, res, sql, pos->line, pos->offset);
        break;
    }
    PQclear(res);
    const char *scs = PQparameterStatus(x->conn, "standard_conforming_strings");
    if (scs)
        script_set_std_strings(x->sc, strcmp(scs, "on") == 0);
    return x->stop ? SCRIPT_STOP : SCRIPT_CONTINUE;
}

static int on_copy_data(void *ud, const char *data, size_t len)
{
    struct exec *x = ud;
    if (x->copy_mode == COPY_FEED) {
        if (!x->feed_dropped && pgr_ra_write(x->feed, data, len) != 0)
            x->feed_dropped = 1;
        if (x->feed_dropped) {
            /* its load failed: the error, once collected, may stop the restore here */
            collect(x, pool_take_done(x->pool, 0, &(int){ 0 }));
            if (x->stop)
                return SCRIPT_STOP;
        }
        progress(x, 0);
        return SCRIPT_CONTINUE;
    }
    if (x->copy_mode == COPY_STREAM) {
        if (PQputCopyData(x->conn, data, (int)len) != 1) {
            long long off = script_copy_start(x->sc) + x->copy_sent;
            if (!lost(x, script_position(x->sc).line, off))
                fatal(x, "copy", script_position(x->sc).line, off, "sending COPY data failed at byte offset %lld: %s",
                      off, PQerrorMessage(x->conn));
            return SCRIPT_STOP;
        }
        x->copy_sent += (long long)len;
    }
    progress(x, 0);
    return SCRIPT_CONTINUE;
}

/* The data bytes the table of the block just read has had so far: what its index builds weigh. */
static void count_copied(struct exec *x, long long bytes)
{
    for (size_t i = 0; i < x->ncopied; i++)
        if (!strcmp(x->copied[i], x->copy_table)) {
            long long *cb = realloc(x->copied_bytes, x->ncopied * sizeof *cb);
            if (cb) {
                x->copied_bytes = cb;
                cb[i] = (i == x->ncopied - 1 ? 0 : cb[i]) + bytes;
            }
        }
}

static int on_copy_end(void *ud, const struct script_pos *pos, int terminated)
{
    struct exec *x = ud;
    int mode = x->copy_mode;
    x->copy_mode = COPY_NONE;
    x->r->statements++;
    if (mode == COPY_FEED) {
        end_feed(x, NULL);
        count_copied(x, pos->offset - script_copy_start(x->sc));
        collect(x, pool_take_done(x->pool, 0, &(int){ 0 }));
        return x->stop ? SCRIPT_STOP : SCRIPT_CONTINUE;
    }
    if (mode == COPY_DISPATCH) {
        struct task *t = calloc(1, sizeof *t);
        if (!t) {
            fatal(x, "nomem", pos->line, pos->offset, "out of memory");
            return SCRIPT_STOP;
        }
        t->kind = TASK_COPY;
        t->table = xstrdup(x->copy_table);
        t->sql = x->copy_sql;
        x->copy_sql = NULL;
        t->line = x->copy_line;
        t->start = script_copy_start(x->sc);
        t->end = pos->offset;
        t->weight = t->end - t->start;
        count_copied(x, t->weight);
        t->dbver = x->pool->dbver;
        atomic_fetch_add(&x->pool->pending_bytes, t->end - t->start);
        if (x->batch_tail)
            x->batch_tail->next = t;
        else
            x->batch = t;
        x->batch_tail = t;
        /* a long data section still starts loading early */
        if (x->eager || (t->end - t->start > 0 && atomic_load(&x->pool->pending_bytes) > (1LL << 30)))
            flush_batch(x);
        collect(x, pool_take_done(x->pool, 0, &(int){ 0 }));
        return x->stop ? SCRIPT_STOP : SCRIPT_CONTINUE;
    }
    if (mode != COPY_STREAM)
        return x->stop ? SCRIPT_STOP : SCRIPT_CONTINUE;
    (void)terminated;
    long long off = script_copy_start(x->sc) + x->copy_sent;
    if (PQputCopyEnd(x->conn, NULL) != 1) {
        lost(x, pos->line, off);
        return SCRIPT_STOP;
    }
    PGresult *res;
    while ((res = PQgetResult(x->conn)) != NULL) {
        ExecStatusType s = PQresultStatus(res);
        if (s == PGRES_COMMAND_OK) {
            const char *n = PQcmdTuples(res);
            x->r->copy_rows += n && *n ? atoll(n) : 0;
        } else if (s == PGRES_FATAL_ERROR) {
            if (!lost(x, x->copy_line, off))
                record_result_error(x, res, x->copy_sql ? x->copy_sql : "COPY", x->copy_line,
                                    script_copy_start(x->sc));
        }
        PQclear(res);
        if (PQstatus(x->conn) != CONNECTION_OK)
            break;
    }
    lost(x, pos->line, off);
    return x->stop ? SCRIPT_STOP : SCRIPT_CONTINUE;
}

static int do_connect(struct exec *x, const char *args, const struct script_pos *pos)
{
    char *w[8];
    int n = rs_meta_args(args, w, 8);
    int i = 0;
    if (i < n && !strncmp(w[i], "-reuse-previous", 15))
        i++;
    struct params np;
    int ok = params_copy(&np, &x->params) == 0;
    const char *names[] = { "dbname", "user", "host", "port" };
    for (int k = 0; ok && i < n && k < 4; i++, k++) {
        if (!strcmp(w[i], "-"))
            continue;
        if (k == 0 && (strchr(w[i], '=') || !strncmp(w[i], "postgres://", 11) || !strncmp(w[i], "postgresql://", 13))) {
            char *err = NULL;
            PQconninfoOption *opts = PQconninfoParse(w[i], &err);
            if (!opts) {
                /* libpq quotes a bad URI whole: never echo a password it holds */
                char safe[512];
                rs_redact(w[i], err ? err : "bad connection string", safe, sizeof safe);
                size_t sl = strlen(safe);
                while (sl && isspace((unsigned char)safe[sl - 1]))
                    safe[--sl] = 0;
                fatal(x, "connect", pos->line, pos->offset, "\\connect at line %ld: invalid connection string: %s "
                      "(fix the \\connect line of the dump)", pos->line, safe);
                PQfreemem(err);
                ok = 0;
                break;
            }
            const char *moved = NULL;
            for (PQconninfoOption *o = opts; o->keyword && !moved; o++)
                if (o->val && strcmp(o->keyword, "dbname") != 0 && strcmp(o->keyword, "user") != 0)
                    moved = o->keyword;
            for (PQconninfoOption *o = opts; o->keyword && !moved; o++)
                if (o->val && params_set(&np, o->keyword, o->val) < 0)
                    ok = 0;
            if (moved) {
                /* the password goes with the connection: a dump never chooses where it goes */
                fatal(x, "connect", pos->line, pos->offset, "\\connect at line %ld sets %s: a dump may change "
                      "the database or the user, never the server or how pgr reaches it (host, port, TLS, "
                      "password); is the dump tampered with?", pos->line, moved);
                ok = 0;
            }
            PQconninfoFree(opts);
            if (moved)
                break;
            continue;
        }
        if (k >= 2) {
            fatal(x, "connect", pos->line, pos->offset, "\\connect at line %ld names the %s %s: a dump may "
                  "change the database or the user, never the server; is the dump tampered with?", pos->line,
                  names[k], w[i]);
            ok = 0;
            break;
        }
        ok = params_set(&np, names[k], w[i]) == 0;
    }
    for (int k = 0; k < n; k++)
        free(w[k]);
    if (!ok) {
        params_free(&np);
        if (!x->r->fatal)
            fatal(x, "nomem", pos->line, pos->offset, "out of memory");
        return -1;
    }
    char err[1024];
    PGconn *c = connect_params(&np, err, sizeof err);
    if (!c) {
        const char *db = params_get(&np, "dbname");
        fatal(x, "connect", pos->line, pos->offset, "\\connect to database \"%s\" at line %ld failed: %s",
              db ? db : "?", pos->line, err);
        params_free(&np);
        return -1;
    }
    PQfinish(x->conn);
    x->conn = c;
    params_free(&x->params);
    x->params = np;
    free(x->dbname);
    x->dbname = xstrdup(PQdb(c));
    push_str(&x->r->databases, &x->r->ndatabases, x->dbname ? x->dbname : "");
    if (x->pool) {
        params_free(&x->pool->params);
        params_copy(&x->pool->params, &x->params);
        x->pool->dbver++;
        free_strs(x->copied, x->ncopied);
        x->copied = NULL;
        x->ncopied = 0;
        free(x->copied_bytes);
        x->copied_bytes = NULL;
        free_strs(x->pool->prelude, x->pool->nprelude);
        x->pool->prelude = NULL;
        x->pool->nprelude = 0;
    }
    const char *scs = PQparameterStatus(c, "standard_conforming_strings");
    if (scs)
        script_set_std_strings(x->sc, strcmp(scs, "on") == 0);
    return 0;
}

static int on_meta(void *ud, const char *name, const char *args, const struct script_pos *pos, int inside)
{
    struct exec *x = ud;
    if (x->stop)
        return SCRIPT_STOP;
    if (inside) {
        fatal(x, "unsupported", pos->line, pos->offset,
              "line %ld: meta-command \\%s inside a statement is not supported (pgr runs pg_dump/pg_dumpall "
              "scripts)", pos->line, name);
        return SCRIPT_STOP;
    }
    if (x->restricted) {
        char *w[2];
        int n = rs_meta_args(args, w, 2);
        int match = !strcmp(name, "unrestrict") && n >= 1 && !strcmp(w[0], x->restrict_key);
        for (int i = 0; i < n; i++)
            free(w[i]);
        if (!match) {
            fatal(x, "restricted", pos->line, pos->offset,
                  "line %ld: \\%s is not allowed in restricted mode (the dump said \\restrict; only "
                  "\\unrestrict with its key ends it)", pos->line, name);
            return SCRIPT_STOP;
        }
        x->restricted = 0;
        free(x->restrict_key);
        x->restrict_key = NULL;
        return SCRIPT_CONTINUE;
    }
    if (!strcmp(name, "restrict")) {
        char *w[2];
        int n = rs_meta_args(args, w, 2);
        if (n < 1) {
            fatal(x, "unsupported", pos->line, pos->offset, "line %ld: \\restrict needs a key", pos->line);
            return SCRIPT_STOP;
        }
        for (int i = 1; i < n; i++)
            free(w[i]);
        x->restricted = 1;
        x->restrict_key = w[0];
        return SCRIPT_CONTINUE;
    }
    if (!strcmp(name, "unrestrict")) {
        fatal(x, "unsupported", pos->line, pos->offset, "line %ld: \\unrestrict without \\restrict", pos->line);
        return SCRIPT_STOP;
    }
    if (!strcmp(name, "connect") || !strcmp(name, "c")) {
        barrier(x);
        if (x->stop)
            return SCRIPT_STOP;
        return do_connect(x, args, pos) < 0 ? SCRIPT_STOP : SCRIPT_CONTINUE;
    }
    if (!strcmp(name, "encoding")) {
        char *w[2];
        int n = rs_meta_args(args, w, 2);
        barrier(x);
        if (n >= 1 && x->pool && strlen(w[0]) < 64 && !strchr(w[0], '\'')) {
            /* the loading connections decode COPY data in the same encoding */
            char set[128];
            snprintf(set, sizeof set, "SET client_encoding = '%s'", w[0]);
            push_str(&x->pool->prelude, &x->pool->nprelude, set);
        }
        if (n >= 1 && PQsetClientEncoding(x->conn, w[0]) != 0) {
            struct rs_error_info e = { .line = pos->line, .offset = pos->offset, .sqlstate = "22023",
                                       .message = "invalid encoding name", .statement = "\\encoding",
                                       .database = x->dbname };
            record_error(x, &e);
        }
        for (int i = 0; i < n; i++)
            free(w[i]);
        return x->stop ? SCRIPT_STOP : SCRIPT_CONTINUE;
    }
    fatal(x, "unsupported", pos->line, pos->offset,
          "line %ld: meta-command \\%s is not supported (pgr runs \\connect, \\encoding, \\restrict and "
          "\\unrestrict, as pg_dumpall writes them)", pos->line, name);
    return SCRIPT_STOP;
}

static void copy_reader_error(struct rs_result *r, const struct reader *rd, long line)
{
    r->fatal = 1;
    snprintf(r->code, sizeof r->code, "%s", rd->code);
    snprintf(r->message, sizeof r->message, "%s", rd->message);
    r->line = line;
    r->offset = rd->out_bytes;
}

/* A seekable plain file must end with the completion trailer before anything is sent. */
static int preflight_trailer(const char *path, int *has)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    off_t size = lseek(fd, 0, SEEK_END);
    char tail[TAIL];
    off_t from = size > TAIL ? size - TAIL : 0;
    ssize_t n = pread(fd, tail, (size_t)(size - from), from);
    unsigned char magic[2] = { 0, 0 };
    ssize_t m = pread(fd, magic, 2, 0);
    close(fd);
    if (n < 0 || m < 0)
        return -1;
    if (m == 2 && magic[0] == 0x1f && magic[1] == 0x8b)
        return 1; /* compressed: known only at the end */
    *has = has_trailer(tail, (size_t)n);
    return 0;
}

void rs_restore(const struct rs_options *o, struct rs_source *src, struct rs_result *r)
{
    memset(r, 0, sizeof *r);
    struct exec x = { 0 };
    x.o = o;
    x.r = r;
    r->jobs_used = 1;
    char *buf = malloc(CHUNK);
    if (!buf) {
        fatal(&x, "nomem", 0, 0, "out of memory");
        return;
    }
    for (size_t i = 0; o->keywords && o->keywords[i]; i++)
        if (o->values[i] && params_set(&x.params, o->keywords[i], o->values[i]) < 0) {
            fatal(&x, "nomem", 0, 0, "out of memory");
            goto out;
        }
    if (!params_get(&x.params, "fallback_application_name"))
        params_set(&x.params, "fallback_application_name", "pgr");

    long n = reader_open(&x.rd, src, buf, CHUNK);
    if (n < 0) {
        copy_reader_error(r, &x.rd, 0);
        goto out;
    }
    r->gzip = x.rd.gzip;
    snprintf(r->format, sizeof r->format, "%s", format_of(x.rd.head, x.rd.headlen));
    if (src->path && !o->allow_truncated) {
        int has = 1;
        if (preflight_trailer(src->path, &has) == 0 && !has) {
            fatal(&x, "truncated", 0, 0, "%s lacks the \"dump complete\" trailer pg_dumpall writes last: the "
                  "dump is truncated (nothing was restored)", src->path);
            goto out;
        }
    }

    char err[1024];
    if (!(x.conn = connect_params(&x.params, err, sizeof err))) {
        fatal(&x, "connect", 0, 0, "cannot connect: %s", err);
        goto out;
    }
    x.dbname = xstrdup(PQdb(x.conn));
    push_str(&r->databases, &r->ndatabases, x.dbname ? x.dbname : "");
    if (o->jobs > 1 && (src->path || src->range) && !x.rd.gzip) {
        x.pool = pool_new(o->jobs, src, &x.params);
        x.eager = !src->path;
        if (x.pool)
            r->jobs_used = x.pool->nthreads;
        /* a stream read ahead feeds its loads itself (read once), with as much again in flight */
        long long ahead = x.pool && !src->path && src->range->readahead ? src->range->readahead(src->range_ud) : 0;
        if (ahead > 0 && !(x.feeds = pgr_ra_pool_new((size_t)ahead))) {
            fatal(&x, "nomem", 0, 0, "out of memory");
            goto out;
        }
    }
    struct script_handlers h = { &x, on_statement, on_copy_data, on_copy_end, on_meta };
    if (!(x.sc = script_new(&h))) {
        fatal(&x, "nomem", 0, 0, "out of memory");
        goto out;
    }
    int rc = 0;
    while (n > 0 && !x.stop) {
        rc = script_feed(x.sc, buf, (size_t)n);
        if (rc < 0)
            fatal(&x, "nomem", 0, 0, "out of memory");
        if (rc)
            break;
        n = reader_next(&x.rd, buf, CHUNK);
    }
    if (n < 0 && !x.stop)
        copy_reader_error(r, &x.rd, script_position(x.sc).line);
    else if (!x.stop && rc == 0)
        script_finish(x.sc);
    /* a block left open by a failure or a stop: its load rolls back */
    end_feed(&x, r->fatal ? r->message : "the restore stopped before the end of this COPY block");
    barrier(&x);
    if (!r->fatal && !r->stopped) {
        r->truncated = !has_trailer(x.rd.tail, x.rd.taillen);
        if (r->truncated && !o->allow_truncated)
            fatal(&x, "truncated", script_position(x.sc).line, x.rd.out_bytes,
                  "the dump ended at line %ld (byte %lld) without the \"dump complete\" trailer: it is "
                  "truncated, and what it held was restored", script_position(x.sc).line, x.rd.out_bytes);
    }
    r->bytes = x.rd.raw_bytes;
    progress(&x, 1);
out:
    end_feed(&x, "the restore failed");
    pool_free(x.pool);
    free_strs(x.inflight, x.ninflight);
    free_strs(x.copied, x.ncopied);
    free(x.copied_bytes);
    for (struct task *t = x.batch, *nx; t; t = nx) {
        nx = t->next;
        task_free(t);
    }
    for (struct task *t = x.deferred, *nx; t; t = nx) {
        nx = t->next;
        task_free(t);
    }
    script_free(x.sc);
    pgr_ra_pool_free(x.feeds); /* after the pool: every task, and so every queue, is gone */
    if (x.conn)
        PQfinish(x.conn);
    reader_close(&x.rd);
    params_free(&x.params);
    free(x.dbname);
    free(x.restrict_key);
    free(x.copy_sql);
    free(buf);
}

void rs_result_free(struct rs_result *r)
{
    for (size_t i = 0; i < r->nfirst; i++) {
        free(r->first[i].message);
        free(r->first[i].statement);
        free(r->first[i].database);
    }
    free(r->first);
    free(r->by_state);
    free_strs(r->databases, r->ndatabases);
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------- inspection (no server) */

struct insp {
    struct rs_inspection *in;
    struct script *sc;
    size_t first_row_max;
    char *db;
    struct rs_copy_block *cur;
    int row_done, restricted;
};

static char *unquote_ident(const char *w)
{
    size_t n = strlen(w);
    if (n >= 2 && w[0] == '"' && w[n - 1] == '"') {
        char *d = malloc(n);
        size_t k = 0;
        for (size_t i = 1; d && i + 1 < n; i++) {
            d[k++] = w[i];
            if (w[i] == '"' && w[i + 1] == '"')
                i++;
        }
        if (d)
            d[k] = 0;
        return d;
    }
    return xstrdup(w);
}

/* The name after "create role|database": the fourth word of script_words. */
static void name_after(const char *sql, size_t len, int skip, char ***arr, size_t *n)
{
    char w[600];
    script_words(sql, len, skip + 1, w, sizeof w);
    const char *p = w;
    for (int i = 0; i < skip && p; i++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    if (!p || !*p)
        return;
    /* script_words lower-cased unquoted names, as the server folds them */
    char *name = unquote_ident(p);
    if (name) {
        push_str(arr, n, name);
        free(name);
    }
}

static int i_statement(void *ud, const char *sql, size_t len, const struct script_pos *pos)
{
    struct insp *s = ud;
    struct rs_inspection *in = s->in;
    in->statements++;
    char w[64];
    script_words(sql, len, 2, w, sizeof w);
    if (!strcmp(w, "create role") || !strcmp(w, "create user"))
        name_after(sql, len, 2, &in->roles, &in->nroles);
    else if (!strcmp(w, "create database"))
        name_after(sql, len, 2, &in->databases, &in->ndatabases);
    else if (!strcmp(w, "drop database") || !strcmp(w, "drop role") || !strcmp(w, "drop user")) {
        char w4[64];
        script_words(sql, len, 4, w4, sizeof w4);
        size_t wl = strlen(w);
        int ie = strlen(w4) > wl && !strncmp(w4 + wl + 1, "if exists", 9);
        in->if_exists |= ie;
        if (w[5] == 'd')
            name_after(sql, len, ie ? 4 : 2, &in->drop_databases, &in->ndrop_databases);
        else
            name_after(sql, len, ie ? 4 : 2, &in->drop_roles, &in->ndrop_roles);
    }
    char table[512];
    if (script_is_copy_from_stdin(sql, len, table, sizeof table)) {
        struct rs_copy_block *b = realloc(in->copies, (in->ncopies + 1) * sizeof *b);
        if (!b)
            return SCRIPT_STOP;
        in->copies = b;
        s->cur = &b[in->ncopies++];
        memset(s->cur, 0, sizeof *s->cur);
        s->cur->database = xstrdup(s->db ? s->db : "");
        s->cur->table = xstrdup(table);
        s->cur->line = pos->line;
        s->row_done = 0;
        return SCRIPT_COPY;
    }
    return SCRIPT_CONTINUE;
}

static int i_data(void *ud, const char *d, size_t n)
{
    struct insp *s = ud;
    struct rs_copy_block *b = s->cur;
    if (!b)
        return 0;
    if (!s->row_done) {
        const char *nl = memchr(d, '\n', n);
        size_t take = nl ? (size_t)(nl - d) : n;
        size_t have = b->first_row ? strlen(b->first_row) : 0;
        if (have + take > s->first_row_max)
            take = s->first_row_max > have ? s->first_row_max - have : 0;
        char *fr = realloc(b->first_row, have + take + 1);
        if (fr) {
            memcpy(fr + have, d, take);
            fr[have + take] = 0;
            if (have + take && fr[have + take - 1] == '\r' && nl)
                fr[have + take - 1] = 0;
            b->first_row = fr;
        }
        if (nl)
            s->row_done = 1;
    }
    b->rows += script_count_lines(d, n);
    b->bytes += (long long)n;
    return 0;
}

static int i_end(void *ud, const struct script_pos *pos, int term)
{
    struct insp *s = ud;
    (void)pos;
    (void)term;
    if (s->cur && s->cur->bytes && !s->row_done)
        s->cur->rows++; /* a last row without its newline */
    s->cur = NULL;
    return 0;
}

static int i_meta(void *ud, const char *name, const char *args, const struct script_pos *pos, int inside)
{
    struct insp *s = ud;
    struct rs_inspection *in = s->in;
    if (!inside && (!strcmp(name, "connect") || !strcmp(name, "c"))) {
        char *w[4];
        int n = rs_meta_args(args, w, 4);
        int i = (n > 0 && !strncmp(w[0], "-reuse-previous", 15)) ? 1 : 0;
        if (i < n) {
            free(s->db);
            s->db = NULL;
            if (strchr(w[i], '=')) {
                char *err = NULL;
                PQconninfoOption *opts = PQconninfoParse(w[i], &err);
                for (PQconninfoOption *o = opts; o && o->keyword; o++)
                    if (!strcmp(o->keyword, "dbname") && o->val)
                        s->db = xstrdup(o->val);
                PQconninfoFree(opts);
                PQfreemem(err);
            } else {
                s->db = xstrdup(w[i]);
            }
            push_str(&in->connects, &in->nconnects, s->db ? s->db : "");
        }
        for (int k = 0; k < n; k++)
            free(w[k]);
        return 0;
    }
    if (!inside && (!strcmp(name, "restrict") || !strcmp(name, "unrestrict") || !strcmp(name, "encoding")))
        return 0;
    struct rs_meta_seen *m = realloc(in->unsupported, (in->nunsupported + 1) * sizeof *m);
    if (m) {
        in->unsupported = m;
        m[in->nunsupported].line = pos->line;
        m[in->nunsupported].command = malloc(strlen(name) + 2);
        if (m[in->nunsupported].command)
            sprintf(m[in->nunsupported].command, "\\%s", name);
        in->nunsupported++;
    }
    return 0;
}

/* Copies the version after prefix on the line at p (up to its newline) into out: "15.4 (Debian ...)". */
static void header_value(const char *p, const char *end, const char *prefix, char *out, size_t cap)
{
    size_t pl = strlen(prefix);
    if (out[0] || (size_t)(end - p) < pl || memcmp(p, prefix, pl))
        return;
    p += pl;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)((nl ? nl : end) - p);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
    while (n && (out[n - 1] == '\r' || out[n - 1] == ' '))
        out[--n] = 0;
}

/* Looks for the pg_dump header lines in the text before the first COPY data (where pg_dump writes
 * them); carry holds the start of a line cut by the previous chunk. */
static void scan_header(struct rs_inspection *in, char *carry, size_t *ncarry, size_t cap,
                        const char *buf, size_t n)
{
    static const char from[] = "-- Dumped from database version ", by[] = "-- Dumped by pg_dump version ";
    const char *p = buf, *end = buf + n;
    while (p < end && !(in->dumped_from[0] && in->dumped_by[0])) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t take = (size_t)((nl ? nl + 1 : end) - p);
        if (*ncarry || !nl) {
            /* a line cut by a chunk's end: its beginning (all that matters) is gathered in carry */
            size_t t = take < cap - *ncarry ? take : cap - *ncarry;
            memcpy(carry + *ncarry, p, t);
            *ncarry += t;
            p += take;
            if (!nl)
                break;
            header_value(carry, carry + *ncarry, from, in->dumped_from, sizeof in->dumped_from);
            header_value(carry, carry + *ncarry, by, in->dumped_by, sizeof in->dumped_by);
            *ncarry = 0;
            continue;
        }
        header_value(p, p + take, from, in->dumped_from, sizeof in->dumped_from);
        header_value(p, p + take, by, in->dumped_by, sizeof in->dumped_by);
        p += take;
    }
}

void rs_inspect(struct rs_source *src, size_t first_row_max, struct rs_inspection *in)
{
    memset(in, 0, sizeof *in);
    struct insp s = { .in = in, .first_row_max = first_row_max ? first_row_max : 4096 };
    struct reader rd;
    char *buf = malloc(CHUNK);
    if (!buf) {
        in->fatal = 1;
        snprintf(in->code, sizeof in->code, "nomem");
        snprintf(in->message, sizeof in->message, "out of memory");
        return;
    }
    long n = reader_open(&rd, src, buf, CHUNK);
    struct script_handlers h = { &s, i_statement, i_data, i_end, i_meta };
    if (n >= 0) {
        in->gzip = rd.gzip;
        snprintf(in->format, sizeof in->format, "%s", format_of(rd.head, rd.headlen));
        s.sc = script_new(&h);
        char carry[128];
        size_t ncarry = 0;
        while (n > 0 && s.sc) {
            if (!in->ncopies && !(in->dumped_from[0] && in->dumped_by[0]))
                scan_header(in, carry, &ncarry, sizeof carry, buf, (size_t)n);
            if (script_feed(s.sc, buf, (size_t)n) != SCRIPT_CONTINUE)
                break;
            n = reader_next(&rd, buf, CHUNK);
        }
        if (s.sc && n == 0) {
            script_finish(s.sc);
            in->lines = script_position(s.sc).line;
        }
    }
    if (n < 0) {
        in->fatal = 1;
        snprintf(in->code, sizeof in->code, "%s", rd.code);
        snprintf(in->message, sizeof in->message, "%s", rd.message);
        in->offset = rd.out_bytes;
    }
    in->trailer = has_trailer(rd.tail, rd.taillen);
    in->bytes = rd.raw_bytes;
    reader_close(&rd);
    script_free(s.sc);
    free(s.db);
    free(buf);
}

void rs_inspection_free(struct rs_inspection *in)
{
    free_strs(in->databases, in->ndatabases);
    free_strs(in->roles, in->nroles);
    free_strs(in->connects, in->nconnects);
    free_strs(in->drop_databases, in->ndrop_databases);
    free_strs(in->drop_roles, in->ndrop_roles);
    for (size_t i = 0; i < in->ncopies; i++) {
        free(in->copies[i].database);
        free(in->copies[i].table);
        free(in->copies[i].first_row);
    }
    free(in->copies);
    for (size_t i = 0; i < in->nunsupported; i++)
        free(in->unsupported[i].command);
    free(in->unsupported);
    memset(in, 0, sizeof *in);
}
