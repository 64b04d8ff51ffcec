/* script.c — splits a psql script into statements, COPY data and meta-commands, the way psql's lexer
 * (psqlscan.l) does, one byte at a time and push-based, so any chunking of the input gives the same events. */
#include "script.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

enum state {
    ST_NORMAL,
    ST_SLASH,        /* '/' seen: a block comment may start */
    ST_DASH,         /* '-' seen: a line comment may start */
    ST_LINE_COMMENT,
    ST_BLOCK,        /* inside nested block comments */
    ST_SQUOTE,
    ST_SQUOTE_END,   /* a quote inside '...': doubled or the end */
    ST_DQUOTE,
    ST_DQUOTE_END,
    ST_DOLLAR_OPEN,  /* '$' seen outside a word: maybe "$tag$" */
    ST_DOLLAR,       /* inside a dollar-quoted string */
    ST_META,         /* a backslash command, up to the end of its line */
    ST_COPY_REST,    /* the rest of a COPY statement's line, before its data */
    ST_COPY,
    ST_DONE,
};

#define TAG_MAX 256
#define META_MAX 65536
#define WORD_KEEP 16

struct script {
    struct script_handlers h;
    enum state st;
    int std_strings;

    /* the statement being accumulated */
    char *buf;
    size_t len, cap;
    int nonblank; /* holds something besides whitespace and comments */
    struct script_pos start;

    /* lexer details */
    int bs_quote;   /* the current '...' takes backslash escapes (E'' or standard_conforming_strings off) */
    int esc;        /* the previous byte in such a string was a backslash */
    int cont;       /* after a '...': 1 only blanks/comments since, 2 a newline too (a ' continues it) */
    int cont_bs;    /* bs_quote of that string: its continuation takes the same escapes */
    int depth;      /* block comment nesting */
    char prev;      /* previous byte inside a block comment */
    char tag[TAG_MAX + 2];
    size_t taglen, tagmatch;
    int paren, begin_depth;
    int in_word, word_ident;
    char word[WORD_KEEP];
    size_t wordlen;
    int ident_count;
    char idents[4];

    /* meta-command */
    char *meta;
    size_t metalen;
    int meta_inside;
    struct script_pos meta_pos;

    /* COPY */
    int line_start;
    char carry[4];
    size_t carrylen;
    struct script_pos carry_pos;
    long long copy_start;

    long line;
    long long offset;
};

static int is_ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static int is_word_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

struct script *script_new(const struct script_handlers *h)
{
    struct script *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->h = *h;
    s->std_strings = 1;
    s->line = 1;
    s->cap = 4096;
    s->buf = malloc(s->cap);
    if (!s->buf) {
        free(s);
        return NULL;
    }
    s->buf[0] = 0;
    return s;
}

void script_free(struct script *s)
{
    if (!s)
        return;
    free(s->buf);
    free(s->meta);
    free(s);
}

void script_set_std_strings(struct script *s, int on) { s->std_strings = !!on; }
int script_std_strings(const struct script *s) { return s->std_strings; }
long long script_copy_start(const struct script *s) { return s->copy_start; }
int script_in_copy(const struct script *s) { return s->st == ST_COPY || s->st == ST_COPY_REST; }

struct script_pos script_position(const struct script *s)
{
    struct script_pos p = { s->line, s->offset };
    return p;
}

static int append(struct script *s, char c)
{
    if (s->len + 2 > s->cap) {
        size_t ncap = s->cap * 2;
        char *n = realloc(s->buf, ncap);
        if (!n)
            return -1;
        s->buf = n;
        s->cap = ncap;
    }
    if (s->len == 0) {
        s->start.line = s->line;
        s->start.offset = s->offset;
    }
    s->buf[s->len++] = c;
    return 0;
}

static void reset_statement(struct script *s)
{
    s->len = 0;
    s->buf[0] = 0;
    s->nonblank = 0;
    s->paren = s->begin_depth = 0;
    s->in_word = 0;
    s->wordlen = 0;
    s->ident_count = 0;
    memset(s->idents, 0, sizeof s->idents);
    s->cont = 0;
}

static int word_is(const struct script *s, const char *kw)
{
    size_t n = strlen(kw);
    if (s->wordlen != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)s->word[i]) != kw[i])
            return 0;
    return 1;
}

/* psql's heuristic for SQL-standard function bodies: inside CREATE [OR REPLACE] FUNCTION|PROCEDURE,
 * BEGIN ... END (and CASE ... END within it) holds semicolons that do not end the statement. */
static void end_word(struct script *s)
{
    if (!s->in_word)
        return;
    s->in_word = 0;
    if (!s->word_ident)
        return;
    if (s->ident_count < 4 && (word_is(s, "create") || word_is(s, "function") ||
                               word_is(s, "procedure") || word_is(s, "or") || word_is(s, "replace")))
        s->idents[s->ident_count] = (char)tolower((unsigned char)s->word[0]);
    s->ident_count++;
    const char *id = s->idents;
    if (id[0] == 'c' &&
        (id[1] == 'f' || id[1] == 'p' || (id[1] == 'o' && id[2] == 'r' && (id[3] == 'f' || id[3] == 'p'))) &&
        s->paren == 0) {
        if (word_is(s, "begin"))
            s->begin_depth++;
        else if (word_is(s, "case")) {
            if (s->begin_depth >= 1)
                s->begin_depth++;
        } else if (word_is(s, "end")) {
            if (s->begin_depth > 0)
                s->begin_depth--;
        }
    }
}

/* SET [SESSION] standard_conforming_strings {=|TO} value, as a script changes it. */
static void track_std_strings(struct script *s, const char *sql)
{
    char w[5][40];
    int n = 0;
    const char *p = sql;
    while (*p && n < 5) {
        while (*p && (isspace((unsigned char)*p) || *p == '\'' || *p == '"'))
            p++;
        if (!*p)
            break;
        size_t k = 0;
        if (*p == '=') {
            w[n][k++] = '=';
            p++;
        } else {
            while (*p && !isspace((unsigned char)*p) && *p != '=' && *p != ';' && *p != '\'' && *p != '"') {
                if (k < sizeof w[0] - 1)
                    w[n][k++] = (char)tolower((unsigned char)*p);
                p++;
            }
            if (k == 0) {
                p++;
                continue;
            }
        }
        w[n++][k] = 0;
    }
    int i = 0;
    if (n < 1 || strcmp(w[0], "set") != 0)
        return;
    i = 1;
    if (i < n && strcmp(w[i], "session") == 0)
        i++;
    if (i + 2 >= n)
        return;
    if (strcmp(w[i], "standard_conforming_strings") != 0)
        return;
    if (strcmp(w[i + 1], "=") != 0 && strcmp(w[i + 1], "to") != 0)
        return;
    const char *v = w[i + 2];
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
        s->std_strings = 1;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
        s->std_strings = 0;
}

static int emit_statement(struct script *s)
{
    end_word(s);
    int r = SCRIPT_CONTINUE;
    if (s->nonblank) {
        s->buf[s->len] = 0;
        track_std_strings(s, s->buf);
        struct script_pos pos = s->start;
        r = s->h.statement ? s->h.statement(s->h.ud, s->buf, s->len, &pos) : SCRIPT_CONTINUE;
    }
    reset_statement(s);
    if (r == SCRIPT_COPY) {
        s->st = ST_COPY_REST;
        return SCRIPT_CONTINUE;
    }
    return r;
}

static int emit_meta(struct script *s)
{
    s->meta[s->metalen] = 0;
    char *p = s->meta;
    char *name = p;
    while (*p && !isspace((unsigned char)*p))
        p++;
    if (*p)
        *p++ = 0;
    while (*p && isspace((unsigned char)*p))
        p++;
    char *e = p + strlen(p);
    while (e > p && isspace((unsigned char)e[-1]))
        *--e = 0;
    int inside = s->meta_inside;
    if (!inside)
        reset_statement(s);
    s->st = ST_NORMAL;
    return s->h.meta ? s->h.meta(s->h.ud, name, p, &s->meta_pos, inside) : SCRIPT_CONTINUE;
}

/* One byte of SQL text (everything but COPY data). Returns a handler's verdict or -1. */
static int lex(struct script *s, char c)
{
    unsigned char u = (unsigned char)c;
again:
    switch (s->st) {
    case ST_NORMAL:
        if (s->cont) {
            /* psql's quotecontinue: horizontal blanks and -- comments, a newline, any blanks */
            if (c == '\n' || c == '\r')
                s->cont = 2;
            else if (!(c == ' ' || c == '\t' || c == '\f' || c == '-' || (c == '\'' && s->cont == 2)))
                s->cont = 0;
        }
        if (is_word_char(u) && !(c == '$' && !s->in_word)) {
            if (!s->in_word) {
                s->in_word = 1;
                s->word_ident = is_ident_start(u);
                s->wordlen = 0;
            }
            if (s->wordlen < WORD_KEEP)
                s->word[s->wordlen] = c;
            s->wordlen++;
            s->nonblank = 1;
            return append(s, c);
        }
        if (c == '\'') {
            s->bs_quote = s->cont == 2 ? s->cont_bs
                                       : !s->std_strings || (s->in_word && s->wordlen == 1 &&
                                                             (s->word[0] == 'e' || s->word[0] == 'E'));
            s->cont = 0;
            end_word(s);
            s->esc = 0;
            s->st = ST_SQUOTE;
            s->nonblank = 1;
            return append(s, c);
        }
        end_word(s);
        if (isspace(u)) {
            /* leading whitespace is dropped, as psql does */
            return s->len ? append(s, c) : 0;
        }
        switch (c) {
        case '"':
            s->st = ST_DQUOTE;
            s->nonblank = 1;
            return append(s, c);
        case '$':
            s->st = ST_DOLLAR_OPEN;
            s->taglen = 0;
            s->nonblank = 1;
            return append(s, c);
        case '/':
            s->st = ST_SLASH;
            return 0; /* appended once we know what it is */
        case '-':
            s->st = ST_DASH;
            return 0;
        case '(':
            s->paren++;
            break;
        case ')':
            if (s->paren > 0)
                s->paren--;
            break;
        case '\\':
            s->st = ST_META;
            s->metalen = 0;
            s->meta_inside = s->nonblank;
            s->meta_pos.line = s->line;
            s->meta_pos.offset = s->offset;
            if (!s->meta && !(s->meta = malloc(META_MAX + 1)))
                return -1;
            return 0;
        case ';':
            if (s->paren == 0 && s->begin_depth == 0) {
                if (s->nonblank && append(s, c) < 0)
                    return -1;
                return emit_statement(s);
            }
            break;
        default:
            break;
        }
        s->nonblank = 1;
        return append(s, c);

    case ST_SLASH:
        if (c == '*') {
            s->st = ST_BLOCK;
            s->depth = 1;
            s->prev = 0;
            if (append(s, '/') < 0)
                return -1;
            return append(s, c);
        }
        s->st = ST_NORMAL;
        s->nonblank = 1;
        if (append(s, '/') < 0)
            return -1;
        goto again;

    case ST_DASH:
        if (c == '-') {
            s->st = ST_LINE_COMMENT;
            if (s->len && (append(s, '-') < 0 || append(s, '-') < 0))
                return -1;
            return 0;
        }
        s->st = ST_NORMAL;
        s->nonblank = 1;
        s->cont = 0; /* an operator, not a comment */
        if (append(s, '-') < 0)
            return -1;
        goto again;

    case ST_LINE_COMMENT:
        if (c == '\n') {
            s->st = ST_NORMAL;
            if (s->cont)
                s->cont = 2;
        }
        /* comments before a statement are dropped; inside one they stay (the server ignores them) */
        return s->len ? append(s, c) : 0;

    case ST_BLOCK:
        if (s->prev == '/' && c == '*') {
            s->depth++;
            s->prev = 0;
        } else if (s->prev == '*' && c == '/') {
            s->depth--;
            s->prev = 0;
            if (s->depth == 0)
                s->st = ST_NORMAL;
        } else {
            s->prev = c;
        }
        return append(s, c);

    case ST_SQUOTE:
        if (s->esc)
            s->esc = 0;
        else if (c == '\\' && s->bs_quote)
            s->esc = 1;
        else if (c == '\'')
            s->st = ST_SQUOTE_END;
        return append(s, c);

    case ST_SQUOTE_END:
        if (c == '\'') {
            s->st = ST_SQUOTE;
            return append(s, c);
        }
        s->st = ST_NORMAL;
        s->cont = 1;
        s->cont_bs = s->bs_quote;
        goto again;

    case ST_DQUOTE:
        if (c == '"')
            s->st = ST_DQUOTE_END;
        return append(s, c);

    case ST_DQUOTE_END:
        if (c == '"') {
            s->st = ST_DQUOTE;
            return append(s, c);
        }
        s->st = ST_NORMAL;
        goto again;

    case ST_DOLLAR_OPEN:
        if (c == '$') {
            s->tag[0] = '$';
            s->st = ST_DOLLAR;
            s->tagmatch = 0;
            /* the tag was appended as it came; rebuild "$tag$" from the buffer's tail */
            memcpy(s->tag, s->buf + s->len - s->taglen - 1, s->taglen + 1);
            s->tag[s->taglen + 1] = '$';
            s->taglen += 2;
            return append(s, c);
        }
        if ((s->taglen == 0 ? is_ident_start(u) : (is_word_char(u) && c != '$')) && s->taglen < TAG_MAX) {
            s->taglen++;
            return append(s, c);
        }
        /* not a dollar quote ($1, a bare $): the bytes so far are a word */
        s->st = ST_NORMAL;
        s->in_word = 1;
        s->word_ident = 0;
        s->wordlen = WORD_KEEP + 1;
        goto again;

    case ST_DOLLAR:
        if (c == s->tag[s->tagmatch]) {
            if (++s->tagmatch == s->taglen)
                s->st = ST_NORMAL;
        } else {
            s->tagmatch = c == '$' ? 1 : 0;
        }
        return append(s, c);

    case ST_META:
        if (c == '\n')
            return emit_meta(s);
        if (s->metalen < META_MAX)
            s->meta[s->metalen++] = c;
        return 0;

    default:
        return 0;
    }
}

/* COPY data: pass bytes through, watching line starts for "\." alone on its line. */
/* Newlines in [p, p+n), sixteen bytes at a time (GCC/clang vector extensions: SSE2 on x86-64,
 * plain code elsewhere): a row of a few dozen bytes then costs far less than a memchr call. */
typedef signed char pgr_v16 __attribute__((vector_size(16)));
typedef unsigned char pgr_u16 __attribute__((vector_size(16))); /* counters: wrap, never overflow */

long script_count_lines(const char *p, size_t n)
{
    long c = 0;
    size_t i = 0;
    const pgr_v16 nl = (pgr_v16){ 0 } + '\n';
    while (n - i >= 16) {
        pgr_u16 acc = { 0 };
        size_t blocks = (n - i) / 16;
        if (blocks > 255) /* each lane counts to 255 at most */
            blocks = 255;
        for (size_t b = 0; b < blocks; b++, i += 16) {
            pgr_v16 v;
            memcpy(&v, p + i, 16);
            acc -= (pgr_u16)(v == nl); /* a match is all ones: minus 255, plus one mod 256 */
        }
        for (int k = 0; k < 16; k++)
            c += acc[k];
    }
    for (; i < n; i++)
        c += p[i] == '\n';
    return c;
}

static int copy_chunk(struct script *s, const char *p, size_t n, size_t *used)
{
    const char *end = p + n, *run = p, *q = p;
    while (q < end) {
        if (s->line_start) {
            size_t avail = (size_t)(end - q);
            if (q[0] == '\\') {
                /* decide whether this line is the terminator; it may straddle chunks */
                char tmp[4];
                size_t k = 0;
                while (k < 4 && k < avail)
                    tmp[k] = q[k], k++;
                int term = 0, need_more = 0;
                size_t tlen = 0;
                if (k >= 2 && tmp[1] == '.') {
                    if (k >= 3 && tmp[2] == '\n')
                        term = 1, tlen = 3;
                    else if (k >= 4 && tmp[2] == '\r' && tmp[3] == '\n')
                        term = 1, tlen = 4;
                    else if (k == 2 || (k == 3 && tmp[2] == '\r'))
                        need_more = 1;
                } else if (k == 1) {
                    need_more = 1;
                }
                if (need_more) {
                    if (q > run && s->h.copy_data) {
                        int r = s->h.copy_data(s->h.ud, run, (size_t)(q - run));
                        if (r)
                            return r;
                    }
                    memcpy(s->carry, q, avail);
                    s->carrylen = avail;
                    s->carry_pos.line = s->line;
                    s->carry_pos.offset = s->offset + (q - p);
                    *used = n;
                    return 0;
                }
                if (term) {
                    if (q > run && s->h.copy_data) {
                        int r = s->h.copy_data(s->h.ud, run, (size_t)(q - run));
                        if (r)
                            return r;
                    }
                    struct script_pos pos = { s->line, s->offset + (q - p) };
                    s->line++;
                    s->st = ST_NORMAL;
                    s->line_start = 0;
                    *used = (size_t)(q - p) + tlen;
                    return s->h.copy_end ? s->h.copy_end(s->h.ud, &pos, 1) : 0;
                }
            }
        }
        /* Only a line that starts with a backslash can end the data: jump from one to the next
         * (one memchr over rows without backslashes) and count the lines passed in bulk. */
        const char *hit = NULL;
        for (const char *b = q;;) {
            const char *bs = memchr(b, '\\', (size_t)(end - b));
            if (!bs)
                break;
            if (bs > q && bs[-1] == '\n') {
                hit = bs;
                break;
            }
            b = bs + 1;
        }
        const char *stop = hit ? hit : end;
        s->line += script_count_lines(q, (size_t)(stop - q));
        if (hit) {
            s->line_start = 1;
            q = hit;
            continue;
        }
        s->line_start = stop > q && stop[-1] == '\n';
        q = end;
        break;
    }
    if (q > run && s->h.copy_data) {
        int r = s->h.copy_data(s->h.ud, run, (size_t)(q - run));
        if (r)
            return r;
    }
    *used = n;
    return 0;
}

/* A line start held back in carry ("\", "\.", "\.\r") meets the next bytes. */
static int resolve_carry(struct script *s, const char *p, size_t n, size_t *used)
{
    char tmp[8];
    size_t k = s->carrylen, take = 0;
    memcpy(tmp, s->carry, k);
    while (k < 4 && take < n)
        tmp[k++] = p[take++];
    int term = 0;
    size_t tlen = 0;
    if (k >= 2 && tmp[1] == '.') {
        if (k >= 3 && tmp[2] == '\n')
            term = 1, tlen = 3;
        else if (k >= 4 && tmp[2] == '\r' && tmp[3] == '\n')
            term = 1, tlen = 4;
    }
    int incomplete = !term && ((k == 1) || (k == 2 && tmp[1] == '.') || (k == 3 && tmp[1] == '.' && tmp[2] == '\r'));
    if (incomplete) {
        memcpy(s->carry, tmp, k);
        s->carrylen = k;
        *used = take;
        return 0;
    }
    if (term) {
        struct script_pos pos = s->carry_pos;
        *used = tlen - s->carrylen;
        s->carrylen = 0;
        s->line++;
        s->st = ST_NORMAL;
        s->line_start = 0;
        return s->h.copy_end ? s->h.copy_end(s->h.ud, &pos, 1) : 0;
    }
    /* ordinary data: hand over the held bytes; the line is no longer at its start */
    int r = s->h.copy_data ? s->h.copy_data(s->h.ud, s->carry, s->carrylen) : 0;
    s->carrylen = 0;
    s->line_start = 0;
    *used = 0;
    return r;
}

int script_feed(struct script *s, const char *buf, size_t len)
{
    size_t i = 0;
    if (s->st == ST_DONE)
        return SCRIPT_STOP;
    while (i < len) {
        if (s->st == ST_COPY) {
            size_t used = 0;
            int r = s->carrylen ? resolve_carry(s, buf + i, len - i, &used)
                                : copy_chunk(s, buf + i, len - i, &used);
            s->offset += (long long)used;
            i += used;
            if (r) {
                if (r == SCRIPT_STOP)
                    s->st = ST_DONE;
                return r;
            }
            continue;
        }
        if (s->st == ST_COPY_REST) {
            /* psql reads COPY data from the line after the statement */
            const char *nl = memchr(buf + i, '\n', len - i);
            size_t n = nl ? (size_t)(nl - (buf + i)) + 1 : len - i;
            s->offset += (long long)n;
            i += n;
            if (nl) {
                s->line++;
                s->copy_start = s->offset;
                s->st = ST_COPY;
                s->line_start = 1;
                s->carrylen = 0;
            }
            continue;
        }
        char c = buf[i];
        int r = lex(s, c);
        i++;
        s->offset++;
        if (c == '\n')
            s->line++;
        if (r) {
            if (r == SCRIPT_STOP)
                s->st = ST_DONE;
            return r;
        }
    }
    return SCRIPT_CONTINUE;
}

int script_finish(struct script *s)
{
    int r = SCRIPT_CONTINUE;
    switch (s->st) {
    case ST_DONE:
        return SCRIPT_STOP;
    case ST_COPY:
    case ST_COPY_REST: {
        struct script_pos pos = { s->line, s->offset };
        int term = 0;
        if (s->carrylen == 2 && s->carry[1] == '.') {
            /* "\." without a newline at the very end still ends the data */
            pos = s->carry_pos;
            term = 1;
        } else if (s->carrylen && s->h.copy_data) {
            r = s->h.copy_data(s->h.ud, s->carry, s->carrylen);
        }
        s->carrylen = 0;
        if (!r && s->h.copy_end)
            r = s->h.copy_end(s->h.ud, &pos, term);
        break;
    }
    case ST_META:
        r = emit_meta(s);
        if (!r && s->nonblank)
            r = emit_statement(s);
        break;
    case ST_SLASH:
    case ST_DASH:
        s->nonblank = 1;
        if (append(s, s->st == ST_SLASH ? '/' : '-') < 0)
            return -1;
        /* fall through */
    default:
        r = emit_statement(s);
        if (r == SCRIPT_CONTINUE && s->st == ST_COPY_REST) {
            /* a COPY as the very last statement: its data is empty */
            struct script_pos pos = { s->line, s->offset };
            r = s->h.copy_end ? s->h.copy_end(s->h.ud, &pos, 0) : 0;
        }
        break;
    }
    s->st = ST_DONE;
    return r;
}

/* ---- classification helpers ---- */

/* Next token of sql from *p: a word, a quoted identifier or string, or one punctuation byte.
 * Comments and whitespace are skipped. Returns its length (0 at the end). */
static size_t next_token(const char *sql, size_t len, size_t *p, size_t *tstart)
{
    size_t i = *p;
    for (;;) {
        while (i < len && isspace((unsigned char)sql[i]))
            i++;
        if (i + 1 < len && sql[i] == '-' && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n')
                i++;
            continue;
        }
        if (i + 1 < len && sql[i] == '/' && sql[i + 1] == '*') {
            int depth = 1;
            i += 2;
            while (i < len && depth) {
                if (i + 1 < len && sql[i] == '/' && sql[i + 1] == '*')
                    depth++, i += 2;
                else if (i + 1 < len && sql[i] == '*' && sql[i + 1] == '/')
                    depth--, i += 2;
                else
                    i++;
            }
            continue;
        }
        break;
    }
    *tstart = i;
    if (i >= len) {
        *p = i;
        return 0;
    }
    char q = sql[i];
    if (q == '"' || q == '\'') {
        i++;
        while (i < len) {
            if (sql[i] == q) {
                if (i + 1 < len && sql[i + 1] == q)
                    i += 2;
                else {
                    i++;
                    break;
                }
            } else {
                i++;
            }
        }
    } else if (is_word_char((unsigned char)q)) {
        while (i < len && is_word_char((unsigned char)sql[i]))
            i++;
    } else {
        i++;
    }
    *p = i;
    return i - *tstart;
}

static int token_is(const char *t, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(t, kw, n) == 0;
}

int script_is_copy_from_stdin(const char *sql, size_t len, char *table, size_t tablecap)
{
    size_t p = 0, t, n;
    n = next_token(sql, len, &p, &t);
    if (!token_is(sql + t, n, "copy"))
        return 0;
    size_t tab_start = 0, tab_end = 0;
    int prev_from = 0, first = 1;
    while ((n = next_token(sql, len, &p, &t)) > 0) {
        if (first) {
            tab_start = t;
            first = 0;
        }
        if (!tab_end && (sql[t] == '(' || token_is(sql + t, n, "from") || token_is(sql + t, n, "to")))
            tab_end = t;
        if (sql[t] == '(' ) {
            /* skip a column list or a query */
            int depth = 1;
            while (depth && (n = next_token(sql, len, &p, &t)) > 0) {
                if (sql[t] == '(')
                    depth++;
                else if (sql[t] == ')')
                    depth--;
            }
            prev_from = 0;
            continue;
        }
        if (prev_from && token_is(sql + t, n, "stdin")) {
            if (table && tablecap) {
                size_t e = tab_end ? tab_end : t;
                while (e > tab_start && isspace((unsigned char)sql[e - 1]))
                    e--;
                size_t k = e > tab_start ? e - tab_start : 0;
                if (k >= tablecap)
                    k = tablecap - 1;
                memcpy(table, sql + tab_start, k);
                table[k] = 0;
            }
            return 1;
        }
        prev_from = token_is(sql + t, n, "from");
    }
    return 0;
}

int script_words(const char *sql, size_t len, int n, char *out, size_t outcap)
{
    size_t p = 0, t, k, o = 0;
    int count = 0;
    if (outcap)
        out[0] = 0;
    while (count < n && (k = next_token(sql, len, &p, &t)) > 0) {
        if (o + k + 2 > outcap)
            break;
        if (o)
            out[o++] = ' ';
        for (size_t j = 0; j < k; j++) {
            char c = sql[t + j];
            out[o++] = sql[t] == '"' || sql[t] == '\'' ? c : (char)tolower((unsigned char)c);
        }
        out[o] = 0;
        count++;
    }
    return count;
}
