/* test_script.c — the psql script splitter (host/script.c): every quoting form, comments, COPY data
 * framing, meta-commands; each case is fed whole and in every small chunking, which must agree. */
#include "script.h"
#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct log {
    char *s;
    size_t len, cap;
};

static void put(struct log *l, const char *p, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        l->cap = (l->len + n + 1) * 2;
        l->s = realloc(l->s, l->cap);
    }
    memcpy(l->s + l->len, p, n);
    l->len += n;
    l->s[l->len] = 0;
}

static void putf(struct log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct log *l, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put(l, tmp, (size_t)n);
}

static int on_stmt(void *ud, const char *sql, size_t len, const struct script_pos *pos)
{
    struct log *l = ud;
    putf(l, "S%ld:", pos->line);
    put(l, sql, len);
    put(l, "|", 1);
    return script_is_copy_from_stdin(sql, len, NULL, 0) ? SCRIPT_COPY : SCRIPT_CONTINUE;
}

static int on_data(void *ud, const char *d, size_t n)
{
    struct log *l = ud;
    /* data arrives in arbitrary pieces: log it as one run until the end event */
    if (l->len == 0 || l->s[l->len - 1] == '|')
        put(l, "D:", 2);
    put(l, d, n);
    return 0;
}

static int on_end(void *ud, const struct script_pos *pos, int term)
{
    struct log *l = ud;
    if (l->len && l->s[l->len - 1] != '|')
        put(l, "|", 1);
    putf(l, "E%ld:%d|", pos->line, term);
    return 0;
}

static int on_meta(void *ud, const char *name, const char *args, const struct script_pos *pos, int inside)
{
    struct log *l = ud;
    putf(l, "M%ld:%s:%s:%d|", pos->line, name, args, inside);
    return 0;
}

static char *run(const char *in, size_t len, size_t chunk)
{
    struct log l = { 0 };
    put(&l, "", 0);
    struct script_handlers h = { &l, on_stmt, on_data, on_end, on_meta };
    struct script *s = script_new(&h);
    for (size_t i = 0; i < len; i += chunk)
        script_feed(s, in + i, len - i < chunk ? len - i : chunk);
    script_finish(s);
    script_free(s);
    return l.s;
}

static void case_(const char *name, const char *in, const char *want)
{
    size_t len = strlen(in);
    char *whole = run(in, len, len ? len : 1);
    CHECK_STR(whole, want, name);
    int same = 1;
    for (size_t chunk = 1; chunk <= 7; chunk++) {
        char *got = run(in, len, chunk);
        if (strcmp(got, whole) != 0) {
            printf("#   chunk %zu: %s\n", chunk, got);
            same = 0;
        }
        free(got);
    }
    char buf[300];
    snprintf(buf, sizeof buf, "%s (any chunking)", name);
    CHECK(same, buf);
    free(whole);
}

int main(void)
{
    case_("two statements", "select 1;\nselect 2;", "S1:select 1;|S2:select 2;|");
    case_("semicolon in a string", "select ';';", "S1:select ';';|");
    case_("doubled quotes", "select 'a''b;';x;", "S1:select 'a''b;';|S1:x;|");
    case_("E'' string with escaped quote", "select E'a\\';b';", "S1:select E'a\\';b';|");
    case_("lower-case e'' string", "select e'\\\\';select 2;", "S1:select e'\\\\';|S1:select 2;|");
    case_("backslash is plain in standard strings", "select 'a\\';select 2;",
          "S1:select 'a\\';|S1:select 2;|");
    case_("the script turns standard_conforming_strings off",
          "SET standard_conforming_strings = off;\nselect 'a\\';b';\nSET standard_conforming_strings TO 'on';\nselect 'c\\';d';",
          "S1:SET standard_conforming_strings = off;|S2:select 'a\\';b';|"
          "S3:SET standard_conforming_strings TO 'on';|S4:select 'c\\';|S4:d';|");
    /* psql's quotecontinue: '...' after whitespace holding a newline continues the string, escapes and all */
    case_("an E'' string continued on the next line keeps its escapes", "select E'a'\n'\\';b';select 2;",
          "S1:select E'a'\n'\\';b';|S2:select 2;|");
    case_("continued after a -- comment", "select E'a' -- c\n  '\\';b';", "S1:select E'a' -- c\n  '\\';b';|");
    case_("no newline, no continuation", "select E'a' '\\';select 2;", "S1:select E'a' '\\';|S1:select 2;|");
    case_("word ending in e is no E string", "select 1 from te'x;y';", "S1:select 1 from te'x;y';|");
    case_("quoted identifiers", "select 1 as \"x;\"\"y\";", "S1:select 1 as \"x;\"\"y\";|");
    case_("dollar quotes with tags",
          "create function f() returns int as $body$ select 1; $x$ ; $bod $body$ language sql;select 2;",
          "S1:create function f() returns int as $body$ select 1; $x$ ; $bod $body$ language sql;|S1:select 2;|");
    case_("empty dollar tag", "do $$ begin null; end $$;", "S1:do $$ begin null; end $$;|");
    case_("dollar quote right after a $ run", "select $a$;$$a$;", "S1:select $a$;$$a$;|");
    case_("positional parameters are not quotes", "prepare p as select $1;select 2;",
          "S1:prepare p as select $1;|S1:select 2;|");
    case_("a $ inside a word is not a quote", "select a$b$c;select 2;", "S1:select a$b$c;|S1:select 2;|");
    case_("nested block comments", "/* a /* b; */ c; */ select 1;", "S1:/* a /* b; */ c; */ select 1;|");
    case_("line comments", "-- hi; there\nselect 1; -- x;\nselect 2 -- y;\n;",
          "S2:select 1;|S3:select 2 -- y;\n;|");
    case_("division and minus are operators", "select 4/2-1;", "S1:select 4/2-1;|");
    case_("semicolons inside parentheses",
          "create rule r as on insert to t do also (insert into a values (1); insert into b values (2));x;",
          "S1:create rule r as on insert to t do also (insert into a values (1); insert into b values (2));|S1:x;|");
    case_("BEGIN ATOMIC bodies",
          "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n SELECT 1;\n SELECT CASE WHEN true THEN 1 END;\nEND;\nselect 3;",
          "S1:CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n SELECT 1;\n SELECT CASE WHEN true THEN 1 END;\nEND;|S6:select 3;|");
    case_("CREATE OR REPLACE PROCEDURE with BEGIN ATOMIC",
          "create or replace procedure p() begin atomic insert into t values (1); end;begin;",
          "S1:create or replace procedure p() begin atomic insert into t values (1); end;|S1:begin;|");
    case_("plain BEGIN is a statement", "BEGIN;\nCOMMIT;", "S1:BEGIN;|S2:COMMIT;|");
    case_("COPY data up to \\.",
          "COPY t (a) FROM stdin;\n1\ta\\.b\n\\.x\n\\\\.\n\\.\nselect 1;",
          "S1:COPY t (a) FROM stdin;|D:1\ta\\.b\n\\.x\n\\\\.\n|E5:1|S6:select 1;|");
    case_("COPY rows starting with \\N, backslashes inside rows, long rows: line numbers after the data",
          "COPY t (a, b) FROM stdin;\n\\N\tx\\ty\n\\N\t\\N\n0123456789abcdef0123456789abcdef\\\\.\n"
          "\\.5\t\\.\n\\.\nselect 1;",
          "S1:COPY t (a, b) FROM stdin;|D:\\N\tx\\ty\n\\N\t\\N\n0123456789abcdef0123456789abcdef\\\\.\n"
          "\\.5\t\\.\n|E6:1|S7:select 1;|");
    case_("COPY with CRLF", "COPY t FROM stdin;\r\n1\r\n\\.\r\nselect 1;\r\n",
          "S1:COPY t FROM stdin;|D:1\r\n|E3:1|S4:select 1;|");
    case_("empty COPY", "COPY t FROM stdin;\n\\.\nx;", "S1:COPY t FROM stdin;|E2:1|S3:x;|");
    case_("COPY data that looks like SQL and quotes",
          "copy t from STDIN;\n'; $$ /* \"\n\\.\n", "S1:copy t from STDIN;|D:'; $$ /* \"\n|E3:1|");
    case_("COPY cut off at the end", "COPY t FROM stdin;\n1\n2", "S1:COPY t FROM stdin;|D:1\n2|E3:0|");
    case_("\\. without a newline at the end", "COPY t FROM stdin;\n1\n\\.", "S1:COPY t FROM stdin;|D:1\n|E3:1|");
    case_("COPY ... TO stdout is not data", "COPY t TO stdout;\nx;", "S1:COPY t TO stdout;|S2:x;|");
    case_("meta-commands", "\\connect -reuse-previous=on \"dbname='x'\"\nselect 1;\n\\restrict abc  \n",
          "M1:connect:-reuse-previous=on \"dbname='x'\":0|S2:select 1;|M3:restrict:abc:0|");
    case_("comments before a meta-command are dropped", "-- c\n/* d */\n\\encoding UTF8\nx;",
          "M3:encoding:UTF8:0|S4:x;|");
    case_("meta-command inside a statement", "select 1 \\g\n;", "M1:g::1|S1:select 1 ;|");
    case_("meta-command at the end without newline", "\\unrestrict k", "M1:unrestrict:k:0|");
    case_("statement without semicolon at the end", "select 1\n", "S1:select 1\n|");
    case_("open quote at the end is still sent", "select 'abc", "S1:select 'abc|");
    case_("empty statements are skipped", ";;  ;\nselect 1;", "S2:select 1;|");
    case_("backslash in a string is not a meta-command", "select '\\x';", "S1:select '\\x';|");
    case_("unicode identifiers and strings", "select 'ж;' as \"é;\", é$ from ü;",
          "S1:select 'ж;' as \"é;\", é$ from ü;|");

    /* the vectorized newline count against a byte loop: every length and alignment up to 9000
     * bytes (past one 255-block flush of the sixteen-byte lanes), newlines at random places */
    {
        static char buf[9100];
        unsigned seed = 7;
        for (size_t i = 0; i < sizeof buf; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (seed >> 16) % 7 == 0 ? '\n' : (char)('a' + (seed >> 20) % 26);
        }
        int bad = 0;
        for (size_t off = 0; off < 17 && !bad; off++)
            for (size_t n = 0; off + n <= 9000 && !bad; n += (n < 64 ? 1 : 61)) {
                long want = 0;
                for (size_t i = 0; i < n; i++)
                    want += buf[off + i] == '\n';
                if (script_count_lines(buf + off, n) != want) {
                    printf("#   offset %zu length %zu: %ld, want %ld\n", off, n, script_count_lines(buf + off, n), want);
                    bad = 1;
                }
            }
        memset(buf, '\n', sizeof buf);
        CHECK(!bad && script_count_lines(buf, sizeof buf) == (long)sizeof buf,
              "script_count_lines equals a byte loop (every alignment, lane counters past 255)");
    }

    char t[64];
    CHECK(script_is_copy_from_stdin("COPY public.u (x, \"y z\") FROM stdin;", 36, t, sizeof t), "COPY FROM stdin");
    CHECK_STR(t, "public.u", "COPY target table");
    const char *q = "copy \"odd \"\"t\" from STDIN with (format text);";
    CHECK(script_is_copy_from_stdin(q, strlen(q), t, sizeof t), "COPY with quoted name and options");
    CHECK_STR(t, "\"odd \"\"t\"", "quoted COPY target");
    q = "COPY (select 'from stdin') TO stdout;";
    CHECK(!script_is_copy_from_stdin(q, strlen(q), t, sizeof t), "COPY TO stdout is not FROM stdin");
    q = "/* c */ COPY t FROM '/tmp/stdin';";
    CHECK(!script_is_copy_from_stdin(q, strlen(q), NULL, 0), "COPY FROM a file");
    q = "select 'copy t from stdin';";
    CHECK(!script_is_copy_from_stdin(q, strlen(q), NULL, 0), "a SELECT is no COPY");
    char w[64];
    q = "ALTER TABLE ONLY public.x ADD CONSTRAINT";
    CHECK_INT(script_words(q, strlen(q), 3, w, sizeof w), 3, "script_words counts");
    CHECK_STR(w, "alter table only", "script_words lower-cases keywords");
    q = "  -- x\n CREATE UNIQUE INDEX \"A\" ON t";
    script_words(q, strlen(q), 4, w, sizeof w);
    CHECK_STR(w, "create unique index \"A\"", "script_words keeps quoted identifiers");

    /* a statement handler may stop the feed */
    return tap_done();
}
