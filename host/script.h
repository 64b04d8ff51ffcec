/* script.h — the push-based splitter of psql scripts (pg_dump / pg_dumpall plain output): statements by
 * the PostgreSQL lexer's rules, COPY FROM stdin data up to "\.", backslash meta-commands. No I/O, no Lua. */
#ifndef PGR_SCRIPT_H
#define PGR_SCRIPT_H

#include <stddef.h>

/* What a handler returns. */
enum {
    SCRIPT_CONTINUE = 0, /* go on */
    SCRIPT_COPY = 1,     /* (statement handler only) the data that follows, up to "\.", is COPY data */
    SCRIPT_STOP = 2,     /* stop: script_feed returns SCRIPT_STOP at once and feeds nothing more */
};

/* Where something starts in the input: 1-based line, 0-based byte offset. */
struct script_pos {
    long line;
    long long offset;
};

struct script_handlers {
    void *ud;
    /* A complete statement: text NUL-terminated (len bytes, ending with ';' unless at end of input),
     * leading whitespace and "--" comments before it dropped, as psql does. */
    int (*statement)(void *ud, const char *sql, size_t len, const struct script_pos *pos);
    /* COPY data bytes, passed through in the chunks they arrived in (lines are not reassembled). */
    int (*copy_data)(void *ud, const char *data, size_t len);
    /* End of the COPY data: pos is the "\." line (terminated=1), or the end of input (terminated=0). */
    int (*copy_end)(void *ud, const struct script_pos *pos, int terminated);
    /* A backslash meta-command: name without the backslash ("connect"), args the rest of its line
     * (trimmed). inside_statement is 1 when a statement was being accumulated (psql would keep it). */
    int (*meta)(void *ud, const char *name, const char *args, const struct script_pos *pos,
                int inside_statement);
};

struct script;

struct script *script_new(const struct script_handlers *h);
void script_free(struct script *s);

/* Feeds the next len bytes; returns SCRIPT_CONTINUE, SCRIPT_STOP (a handler said so) or -1 (out of
 * memory). */
int script_feed(struct script *s, const char *buf, size_t len);
/* End of input: a pending statement (no ';') is handed over, an open COPY ends. Same returns. */
int script_finish(struct script *s);

/* standard_conforming_strings as the script's session has it (default on): it decides whether
 * backslashes escape in '...' strings. The splitter follows "SET standard_conforming_strings" in the
 * script itself; an executor may set what the server reports. */
void script_set_std_strings(struct script *s, int on);
int script_std_strings(const struct script *s);

/* Position of the next byte to be fed (line, offset). */
struct script_pos script_position(const struct script *s);
/* The current line and offset of an open COPY's data, or of the statement being accumulated. */
int script_in_copy(const struct script *s);
/* Offset of the first data byte of the current (or last) COPY block. */
long long script_copy_start(const struct script *s);

/* Statement classification helpers (text as handed to the statement handler). */
/* 1 if sql is COPY ... FROM STDIN (case-insensitive, quotes respected); *table receives the
 * target's text (up to the column list or FROM), NUL-terminated, truncated to tablecap. */
int script_is_copy_from_stdin(const char *sql, size_t len, char *table, size_t tablecap);
/* Copies the first n words (identifiers, quoted identifiers kept with their quotes, lower-cased
 * keywords) of sql into out separated by single spaces; returns how many words. For classifying
 * statements ("create index", "alter table only"). */
int script_words(const char *sql, size_t len, int n, char *out, size_t outcap);
/* How many '\n' bytes [p, p+n) holds (vectorized): COPY rows, line numbers. */
long script_count_lines(const char *p, size_t n);

#endif
