/* test_httpcore.c — the pure parts of the HTTP core (host/httpcore.c): URL origins for messages,
 * percent-encoding, header lookup, and a transport failure's error kind (no server needed). */
#include "httpcore.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

int main(void)
{
    char o[256];
    pgr_http_url_origin("https://user:secret@s3.example:8443/bucket/key?X-Amz-Signature=abc", o, sizeof o);
    CHECK_STR(o, "https://s3.example:8443", "origin drops user info, path and query");
    pgr_http_url_origin("http://127.0.0.1", o, sizeof o);
    CHECK_STR(o, "http://127.0.0.1", "origin of a bare URL");

    char *e = pgr_http_urlencode("spire-postgres-2022-09-14T03:10:04.psql", 39, 0);
    CHECK_STR(e, "spire-postgres-2022-09-14T03%3A10%3A04.psql", "colons are encoded");
    free(e);
    e = pgr_http_urlencode("a b/c~d+é", strlen("a b/c~d+é"), 1);
    CHECK_STR(e, "a%20b/c~d%2B%C3%A9", "space, plus and UTF-8 encoded, slash kept");
    free(e);

    pgr_http_response r;
    pgr_http_response_init(&r);
    CHECK(pgr_http_response_header(&r, "ETag") == NULL, "no headers in an empty response");
    pgr_http_response_free(&r);

    pgr_http_error err;
    pgr_http_config cfg = { .bearer_token = "sekrit-token", .connect_timeout_ms = 2000 };
    pgr_http_client *c = pgr_http_client_new(&cfg, &err);
    CHECK(c != NULL, "client created");
    /* port 1 on loopback: nothing listens there */
    pgr_http_request rq = { .url = "http://127.0.0.1:1/x?token=sekrit-token" };
    pgr_http_response rs;
    pgr_http_response_init(&rs);
    int rc = pgr_http_perform(c, &rq, &rs, &err);
    CHECK_INT(rc, -1, "a refused connection fails");
    CHECK_STR(err.kind, "connect", "its kind is connect");
    CHECK(strstr(err.message, "GET http://127.0.0.1:1") != NULL, "the message names method and origin");
    CHECK(strstr(err.message, "sekrit") == NULL, "the message never shows the token");
    pgr_http_request bad = { .url = "ftp://127.0.0.1/x" };
    rc = pgr_http_perform(c, &bad, &rs, &err);
    CHECK(rc == -1 && strcmp(err.kind, "usage") == 0, "a non-HTTP scheme is refused");
    CHECK_INT(pgr_http_stream_read(c, o, sizeof o, 0, &err), -1, "reading with no stream open fails");
    pgr_http_stream_close(c); /* no stream: harmless */
    pgr_http_response_free(&rs);
    pgr_http_client_free(c);
    pgr_http_client_free(NULL);
    return tap_done();
}
