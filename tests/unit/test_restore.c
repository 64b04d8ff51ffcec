/* test_restore.c — the parts of the restore engine (host/restore.c) that need no server: psql's
 * meta-command argument parsing and pg.inspect's input hygiene, gzip, trailer and COPY accounting. */
#include "restore.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct mem {
    const char *p;
    size_t len, pos, step;
};

static long mem_read(void *ud, char *buf, size_t cap, char *err, size_t errcap)
{
    struct mem *m = ud;
    (void)err;
    (void)errcap;
    size_t n = m->len - m->pos;
    if (n > cap)
        n = cap;
    if (m->step && n > m->step)
        n = m->step;
    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    return (long)n;
}

static void inspect(const char *p, size_t len, size_t step, struct rs_inspection *in)
{
    struct mem m = { p, len, 0, step };
    struct rs_source src = { .read = mem_read, .ud = &m };
    rs_inspect(&src, 64, in);
}

static const char DUMP[] =
    "--\n-- PostgreSQL database cluster dump\n--\n\n"
    "\\restrict abc\n"
    "CREATE ROLE admin;\nCREATE ROLE \"Mixed \"\"Case\"\"\";\n"
    "CREATE DATABASE Shop;\n"
    "\\unrestrict abc\n"
    "\\connect -reuse-previous=on \"dbname='sh\\'op'\"\n"
    "COPY public.t (a) FROM stdin;\r\nrow1\r\nrow2\r\n\\.\r\n"
    "COPY public.e (a) FROM stdin;\n\\.\n"
    "\\connect postgres\n"
    "\\! ls\n"
    "--\n-- PostgreSQL database cluster dump complete\n--\n\n";

int main(void)
{
    char *w[8];
    int n = rs_meta_args("-reuse-previous=on \"dbname='we\"\"ird'\"  plain 'it''s\\n'", w, 8);
    CHECK_INT(n, 4, "four meta arguments");
    CHECK_STR(w[0], "-reuse-previous=on", "an option word");
    CHECK_STR(w[1], "dbname='we\"ird'", "a double-quoted word, \"\" unescaped");
    CHECK_STR(w[2], "plain", "a plain word");
    CHECK_STR(w[3], "it's\n", "a single-quoted word with '' and \\n");
    for (int i = 0; i < n; i++)
        free(w[i]);

    /* psql's slash lexer: octal and hex escapes in '...', unquoted trailing semicolons dropped */
    n = rs_meta_args("'a\\101\\x42c' db; 'x;' \"y\";", w, 8);
    CHECK_INT(n, 4, "four arguments with escapes and semicolons");
    CHECK_STR(n > 0 ? w[0] : "", "aABc", "\\101 and \\x42 decode");
    CHECK_STR(n > 1 ? w[1] : "", "db", "\\connect db; connects to db");
    CHECK_STR(n > 2 ? w[2] : "", "x;", "a quoted semicolon stays");
    CHECK_STR(n > 3 ? w[3] : "", "y", "only the unquoted trailing semicolon goes");
    for (int i = 0; i < n; i++)
        free(w[i]);

    /* secrets of a conninfo never come back in a message about it */
    char out[512];
    rs_redact("postgresql://u:s3cret@[::1/db?application_name=password",
              "bad URI: \"postgresql://u:s3cret@[::1/db?application_name=password\"", out, sizeof out);
    CHECK(strstr(out, "s3cret") == NULL, "URI password redacted when \"password\" is also a value");
    CHECK(strstr(out, "u:***@") != NULL, "the rest of the URI stays");
    rs_redact("postgresql://u:p%41ss@h/db?sslpassword=k3y&password=0ther", "p%41ss pAss k3y 0ther", out, sizeof out);
    CHECK_STR(out, "*** *** *** ***", "raw, decoded and query-parameter passwords");
    rs_redact("user=password_admin password = 'se\\'cr et' sslpassword=k3y", "se\\'cr et se'cr et k3y admin",
              out, sizeof out);
    CHECK_STR(out, "*** *** *** admin", "key/value passwords, quoted and escaped");
    rs_redact("host=x", "nothing secret", out, 8);
    CHECK_STR(out, "nothing", "cut to the buffer");

    struct rs_inspection in;
    for (size_t step = 0; step <= 3; step += 3) {
        inspect(DUMP, sizeof DUMP - 1, step, &in);
        CHECK(!in.fatal, "a cluster dump inspects");
        CHECK_STR(in.format, "pg_dumpall", "format");
        CHECK(in.trailer, "trailer found");
        CHECK_INT(in.nroles, 2, "two roles");
        CHECK_STR(in.nroles == 2 ? in.roles[1] : "", "Mixed \"Case\"", "quoted role name");
        CHECK_INT(in.ndatabases, 1, "one database");
        CHECK_STR(in.ndatabases ? in.databases[0] : "", "shop", "unquoted names fold to lower case");
        CHECK_INT(in.nconnects, 2, "two \\connect");
        CHECK_STR(in.nconnects ? in.connects[0] : "", "sh'op", "conninfo-form \\connect names the database");
        CHECK_INT(in.ncopies, 2, "two COPY blocks");
        CHECK_INT(in.ncopies ? in.copies[0].rows : -1, 2, "rows of a CRLF COPY block");
        CHECK_STR(in.ncopies ? in.copies[0].first_row : "", "row1", "first row without CR LF");
        CHECK_INT(in.ncopies > 1 ? in.copies[1].rows : -1, 0, "an empty COPY block");
        CHECK_INT(in.nunsupported, 1, "one unsupported meta-command");
        CHECK_STR(in.nunsupported ? in.unsupported[0].command : "", "\\!", "it is named");
        rs_inspection_free(&in);
    }

    /* pg_dumpall -c: what it drops, and the versions of the first database section's header */
    static const char CLEAN[] =
        "--\n-- PostgreSQL database cluster dump\n--\n\n"
        "DROP DATABASE spire;\nDROP DATABASE IF EXISTS \"Odd\"\"Name\";\n"
        "DROP ROLE admin;\nDROP ROLE IF EXISTS spire;\nDROP USER x;\n"
        "CREATE ROLE admin;\n"
        "--\n-- PostgreSQL database dump\n--\n\n"
        "-- Dumped from database version 12.11 (Debian 12.11-1.pgdg110+1)\r\n"
        "-- Dumped by pg_dump version 15.4\n"
        "CREATE DATABASE spire;\n\\connect spire\n"
        "COPY t (a) FROM stdin;\n-- Dumped from database version 99\n\\.\n"
        "--\n-- PostgreSQL database cluster dump complete\n--\n\n";
    for (size_t step = 0; step <= 7; step += 1) {
        inspect(CLEAN, sizeof CLEAN - 1, step, &in);
        CHECK(!in.fatal, "a -c dump inspects");
        CHECK_INT(in.ndrop_databases, 2, "two dropped databases");
        CHECK_STR(in.ndrop_databases > 1 ? in.drop_databases[1] : "", "Odd\"Name", "IF EXISTS skipped, name unquoted");
        CHECK_INT(in.ndrop_roles, 3, "three dropped roles (DROP USER counts)");
        CHECK_STR(in.ndrop_roles > 1 ? in.drop_roles[1] : "", "spire", "DROP ROLE IF EXISTS names the role");
        CHECK(in.if_exists, "IF EXISTS noticed");
        CHECK_STR(in.dumped_from, "12.11 (Debian 12.11-1.pgdg110+1)", "dumped from, CR dropped");
        CHECK_STR(in.dumped_by, "15.4", "dumped by");
        rs_inspection_free(&in);
    }
    inspect(DUMP, sizeof DUMP - 1, 0, &in);
    CHECK(in.ndrop_databases == 0 && in.ndrop_roles == 0 && !in.if_exists, "no DROP in a dump without -c");
    CHECK(!in.dumped_from[0] && !in.dumped_by[0], "no header versions when the dump has none");
    rs_inspection_free(&in);

    /* gzip, fed in small pieces */
    unsigned char gz[4096];
    z_stream z = { 0 };
    deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (unsigned char *)DUMP;
    z.avail_in = sizeof DUMP - 1;
    z.next_out = gz;
    z.avail_out = sizeof gz;
    deflate(&z, Z_FINISH);
    size_t gzlen = sizeof gz - z.avail_out;
    deflateEnd(&z);
    inspect((char *)gz, gzlen, 5, &in);
    CHECK(!in.fatal && in.gzip && in.trailer && in.ncopies == 2, "gzip is inspected transparently");
    CHECK_INT(in.bytes, gzlen, "bytes counts the compressed input");
    rs_inspection_free(&in);
    inspect((char *)gz, gzlen - 12, 0, &in);
    CHECK(in.fatal && !strcmp(in.code, "truncated"), "a cut gzip stream is truncated");
    rs_inspection_free(&in);

    inspect(DUMP, 120, 0, &in);
    CHECK(!in.fatal && !in.trailer, "a cut dump has no trailer");
    rs_inspection_free(&in);

    inspect("PGDMP\1\14\0", 8, 0, &in);
    CHECK(in.fatal && !strcmp(in.code, "format") && strstr(in.message, "pg_restore"), "custom format refused");
    rs_inspection_free(&in);

    char tar[1024];
    memset(tar, 'a', sizeof tar);
    memcpy(tar + 257, "ustar", 5);
    inspect(tar, sizeof tar, 0, &in);
    CHECK(in.fatal && strstr(in.message, "tar archive"), "tar refused");
    rs_inspection_free(&in);

    inspect("select 1;\nselect\0;", 18, 0, &in);
    CHECK(in.fatal && !strcmp(in.code, "binary") && strstr(in.message, "offset 16"), "NUL refused with offset");
    rs_inspection_free(&in);

    /* a NUL after the first block is found too, with its offset in the whole stream */
    size_t big = 300000;
    char *b = malloc(big);
    memset(b, ' ', big);
    b[big - 10] = 0;
    inspect(b, big, 0, &in);
    CHECK(in.fatal && strstr(in.message, "offset 299990"), "a late NUL is refused with its offset");
    rs_inspection_free(&in);
    free(b);

    inspect("", 0, 0, &in);
    CHECK(in.fatal && !strcmp(in.code, "empty"), "empty input refused");
    rs_inspection_free(&in);
    return tap_done();
}
