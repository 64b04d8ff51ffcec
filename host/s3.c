/* s3.c — pgr.s3.core: the S3 client core (s3core.h) for Lua: client handles and object readers
 * (`reader:read(n)`, the byte source pg.restore pulls from), ranges read whole (`client:read_range`).
 * Conversion only; policy is in pgr.s3. */
#include "lutil.h"
#include "rangesrc.h"
#include "s3core.h"
#include "s3upload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_MT "pgr.s3.client"
#define READER_MT "pgr.s3.reader"
#define UPLOAD_MT "pgr.s3.upload"
#define DEFAULT_RESUMES 5
/* what each ranged reader of a parallel restore fetches ahead of its connection's load */
#define RANGE_READAHEAD (4 * 1024 * 1024)

typedef struct {
    pgr_s3 *s;
    int readers; /* open readers borrowing s: it is freed when the last one closes */
    int closed;
} client_box;

typedef struct {
    pgr_s3_reader *r;
    client_box *owner;
    int held; /* pg.restore reads it from C (and its ranges on other threads): close must wait */
} reader_box;

static int push_s3_error(lua_State *L, const pgr_s3_error *err)
{
    lua_pushnil(L);
    pgr_push_error(L, err->code, "%s", err->message);
    if (err->status) {
        lua_pushinteger(L, err->status);
        lua_setfield(L, -2, "status");
    }
    return 2;
}

static void release(client_box *b)
{
    if (b->closed && b->readers == 0 && b->s) {
        pgr_s3_free(b->s);
        b->s = NULL;
    }
}

static client_box *check_client(lua_State *L)
{
    client_box *b = luaL_checkudata(L, 1, CLIENT_MT);
    if (b->closed)
        luaL_argerror(L, 1, "S3 client is closed");
    return b;
}

/* core.client{endpoint=, region=, access_key=, secret_key=, session_token=, source=, virtual_host=,
 *   cainfo=, ca_pem=, insecure=, cert=, key=, timeout=, connect_timeout=, low_speed_limit=,
 *   low_speed_time=} -> client | nil, err */
static int s3_client(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    pgr_s3_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.endpoint = pgr_opt_string(L, 1, "endpoint", NULL);
    cfg.region = pgr_opt_string(L, 1, "region", NULL);
    cfg.access_key = pgr_opt_string(L, 1, "access_key", NULL);
    cfg.secret_key = pgr_opt_string(L, 1, "secret_key", NULL);
    cfg.session_token = pgr_opt_string(L, 1, "session_token", NULL);
    cfg.source = pgr_opt_string(L, 1, "source", NULL);
    cfg.virtual_host = pgr_opt_boolean(L, 1, "virtual_host", 0);
    cfg.http.cainfo = pgr_opt_string(L, 1, "cainfo", NULL);
    cfg.http.ca_pem = pgr_opt_string(L, 1, "ca_pem", NULL);
    cfg.http.insecure = pgr_opt_boolean(L, 1, "insecure", 0);
    cfg.http.cert_file = pgr_opt_string(L, 1, "cert", NULL);
    cfg.http.key_file = pgr_opt_string(L, 1, "key", NULL);
    cfg.http.timeout_ms = (long)(pgr_opt_number(L, 1, "timeout", 0) * 1000);
    cfg.http.connect_timeout_ms = (long)(pgr_opt_number(L, 1, "connect_timeout", 10) * 1000);
    /* a stalled connection is cut (and resumed by readers) rather than waited on forever */
    cfg.http.low_speed_limit = (long)pgr_opt_integer(L, 1, "low_speed_limit", 1);
    cfg.http.low_speed_time = (long)pgr_opt_integer(L, 1, "low_speed_time", 60);
    if (!cfg.endpoint)
        return luaL_argerror(L, 1, "field 'endpoint' is required");
    if (!cfg.access_key || !cfg.secret_key)
        return luaL_argerror(L, 1, "fields 'access_key' and 'secret_key' are required");
    client_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, CLIENT_MT);
    pgr_s3_error err;
    if (!(b->s = pgr_s3_new(&cfg, &err))) {
        b->closed = 1;
        return push_s3_error(L, &err);
    }
    return 1;
}

static int client_close(lua_State *L)
{
    client_box *b = luaL_checkudata(L, 1, CLIENT_MT);
    b->closed = 1;
    release(b);
    return 0;
}

static void push_object(lua_State *L, const pgr_s3_object *o)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, o->key);
    lua_setfield(L, -2, "key");
    lua_pushinteger(L, o->size);
    lua_setfield(L, -2, "size");
    lua_pushstring(L, o->etag);
    lua_setfield(L, -2, "etag");
    lua_pushstring(L, o->last_modified);
    lua_setfield(L, -2, "last_modified");
}

/* Objects of a listing, copied in C while the listing runs; the vector lives in a userdata with
 * __gc, so a Lua error while the results are pushed frees it. */
typedef struct {
    pgr_s3_object *v;
    size_t n, cap;
    int oom;
    size_t max;   /* objects taken at most; more fails the listing */
    int too_many;
} objvec;

static int objvec_gc(lua_State *L)
{
    objvec *ov = lua_touserdata(L, 1);
    for (size_t i = 0; i < ov->n; i++) {
        free((char *)ov->v[i].key);
        free((char *)ov->v[i].etag);
        free((char *)ov->v[i].last_modified);
    }
    free(ov->v);
    memset(ov, 0, sizeof *ov);
    return 0;
}

static int on_object(void *ud, const pgr_s3_object *o)
{
    objvec *ov = ud;
    if (ov->n >= ov->max) {
        ov->too_many = 1;
        return 1;
    }
    if (ov->n == ov->cap) {
        size_t cap = ov->cap ? ov->cap * 2 : 256;
        pgr_s3_object *v = realloc(ov->v, cap * sizeof *v);
        if (!v) {
            ov->oom = 1;
            return 1;
        }
        ov->v = v;
        ov->cap = cap;
    }
    pgr_s3_object c = { strdup(o->key), o->size, strdup(o->etag), strdup(o->last_modified) };
    if (!c.key || !c.etag || !c.last_modified) {
        free((char *)c.key);
        free((char *)c.etag);
        free((char *)c.last_modified);
        ov->oom = 1;
        return 1;
    }
    ov->v[ov->n++] = c;
    return 0;
}

/* client:list(bucket, {prefix=, max_objects=1000000}) -> { {key=, size=, etag=, last_modified=}, ... }
 * | nil, err in key order; etag without quotes; last_modified as the server wrote it (ISO 8601).
 * More than max_objects is an error (code "too_many"), not a listing that eats the memory. */
static int client_list(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2);
    const char *prefix = pgr_opt_string(L, 3, "prefix", NULL);
    lua_Integer max = pgr_opt_integer(L, 3, "max_objects", 1000000);
    if (max < 1)
        return luaL_argerror(L, 3, "field 'max_objects' must be positive");
    objvec *ov = lua_newuserdatauv(L, sizeof *ov, 0);
    memset(ov, 0, sizeof *ov);
    ov->max = (size_t)max;
    luaL_setmetatable(L, "pgr.s3.objvec");
    pgr_s3_error err;
    int rc = pgr_s3_list(b->s, bucket, prefix, on_object, ov, &err);
    if (ov->oom)
        return luaL_error(L, "out of memory listing s3://%s", bucket);
    if (ov->too_many)
        return pgr_fail(L, "too_many", "listing s3://%s%s%s: more than %d objects (give a narrower prefix)",
                        bucket, prefix ? "/" : "", prefix ? prefix : "", (int)(max > 2000000000 ? 2000000000 : max));
    if (rc != 0)
        return push_s3_error(L, &err);
    lua_createtable(L, (int)ov->n, 0);
    for (size_t i = 0; i < ov->n; i++) {
        push_object(L, &ov->v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

typedef struct {
    pgr_s3_object o;
    char etag[128], lm[128], key[1024];
    int found;
} head_ctx;

static int on_head(void *ud, const pgr_s3_object *o)
{
    head_ctx *h = ud;
    snprintf(h->etag, sizeof h->etag, "%s", o->etag);
    snprintf(h->lm, sizeof h->lm, "%s", o->last_modified);
    snprintf(h->key, sizeof h->key, "%s", o->key);
    h->o = (pgr_s3_object){ h->key, o->size, h->etag, h->lm };
    h->found = 1;
    return 0;
}

/* client:head(bucket, key) -> {key=, size=, etag=, last_modified=} | nil, err */
static int client_head(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    head_ctx h;
    memset(&h, 0, sizeof h);
    pgr_s3_error err;
    if (pgr_s3_head(b->s, bucket, key, on_head, &h, &err) != 0)
        return push_s3_error(L, &err);
    push_object(L, &h.o);
    return 1;
}

/* client:put(bucket, key, data) / client:put_file(bucket, key, path) / client:create_bucket(bucket)
 * / client:delete(bucket, key) -> true | nil, err */
static int client_put(lua_State *L)
{
    client_box *b = check_client(L);
    size_t len;
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    const char *data = luaL_checklstring(L, 4, &len);
    pgr_s3_error err;
    if (pgr_s3_put(b->s, bucket, key, data, len, &err) != 0)
        return push_s3_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int client_put_file(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    const char *path = luaL_checkstring(L, 4);
    pgr_s3_error err;
    if (pgr_s3_put_file(b->s, bucket, key, path, &err) != 0)
        return push_s3_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int client_create_bucket(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2);
    pgr_s3_error err;
    if (pgr_s3_put(b->s, bucket, NULL, NULL, 0, &err) != 0)
        return push_s3_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int client_delete(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    pgr_s3_error err;
    if (pgr_s3_delete(b->s, bucket, key, &err) != 0)
        return push_s3_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

typedef struct {
    lua_State *L;
    int fn; /* stack index of the progress function, 0 = none */
    char msg[256];
} progress_ctx;

static int on_progress(void *ud, const pgr_s3_reader *r)
{
    progress_ctx *p = ud;
    if (!p->fn)
        return 0;
    lua_State *L = p->L;
    lua_pushvalue(L, p->fn);
    lua_pushinteger(L, pgr_s3_reader_offset(r));
    lua_pushinteger(L, pgr_s3_reader_size(r));
    /* protected: a failing callback stops the download cleanly instead of unwinding through C */
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        snprintf(p->msg, sizeof p->msg, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "progress failed");
        lua_pop(L, 1);
        return 1;
    }
    int stop = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    return stop;
}

/* client:get(bucket, key, path, {resumes=5, verify_md5=true, progress=function(offset, size) end})
 *   -> {size=, etag=, md5_checked=, resumes=} | nil, err.  progress returning false stops. */
static int client_get(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    const char *path = luaL_checkstring(L, 4);
    int resumes = (int)pgr_opt_integer(L, 5, "resumes", DEFAULT_RESUMES);
    int verify = pgr_opt_boolean(L, 5, "verify_md5", 1);
    progress_ctx p = { L, 0, "" };
    if (!lua_isnoneornil(L, 5)) {
        lua_getfield(L, 5, "progress");
        if (lua_isfunction(L, -1))
            p.fn = lua_gettop(L);
        else if (!lua_isnil(L, -1))
            return luaL_argerror(L, 5, "field 'progress' must be a function");
    }
    pgr_s3_download_result res;
    pgr_s3_error err;
    if (pgr_s3_download(b->s, bucket, key, path, resumes, verify, on_progress, &p, &res, &err) != 0) {
        if (p.msg[0])
            snprintf(err.message + strlen(err.message), sizeof err.message - strlen(err.message), ": %s", p.msg);
        return push_s3_error(L, &err);
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, res.size);
    lua_setfield(L, -2, "size");
    lua_pushstring(L, res.etag);
    lua_setfield(L, -2, "etag");
    lua_pushboolean(L, res.md5_checked);
    lua_setfield(L, -2, "md5_checked");
    lua_pushinteger(L, res.resumes);
    lua_setfield(L, -2, "resumes");
    return 1;
}

/* client:open(bucket, key, {resumes=5, readahead=0}) -> reader | nil, err
 * readahead: bytes a thread of the reader fetches ahead of the caller (0: none; pgr.s3 sets it).
 * reader:read(n) -> string | nil (end) | nil, err;  reader.size, .offset (bytes read by the caller),
 * .resumes, .etag, .md5_checked, .readahead, .buffered; reader:close() (stops the read-ahead) */
static int client_open(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    int resumes = (int)pgr_opt_integer(L, 4, "resumes", DEFAULT_RESUMES);
    lua_Integer readahead = pgr_opt_integer(L, 4, "readahead", 0);
    luaL_argcheck(L, readahead >= 0 && readahead <= (lua_Integer)1 << 40, 4, "field 'readahead' must be 0 or a byte count");
    reader_box *rb = lua_newuserdatauv(L, sizeof *rb, 1);
    rb->r = NULL;
    rb->owner = NULL;
    rb->held = 0;
    luaL_setmetatable(L, READER_MT);
    /* the reader keeps its client alive */
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    pgr_s3_error err;
    if (!(rb->r = pgr_s3_open(b->s, bucket, key, resumes, &err)))
        return push_s3_error(L, &err);
    rb->owner = b;
    b->readers++;
    if (pgr_s3_reader_readahead(rb->r, (size_t)readahead, &err) != 0)
        return push_s3_error(L, &err); /* the reader is closed by its __gc */
    return 1;
}

/* client:read_range(bucket, key, start, end [, {etag=, resumes=}]) -> string | nil, err
 * Bytes [start, end) of the object, whole (at most 16 MiB): a Range request, pinned by If-Match to etag. */
static int client_read_range(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    lua_Integer start = luaL_checkinteger(L, 4), end = luaL_checkinteger(L, 5);
    luaL_argcheck(L, start >= 0, 4, "must not be negative");
    luaL_argcheck(L, end >= start && end - start <= 16 * 1024 * 1024, 5, "must be from start to start + 16 MiB");
    const char *etag = pgr_opt_string(L, 6, "etag", NULL);
    int resumes = (int)pgr_opt_integer(L, 6, "resumes", DEFAULT_RESUMES);
    size_t want = (size_t)(end - start);
    /* the buffer is made before the reader: no Lua allocation (and so no error) while it is open */
    luaL_Buffer buf;
    char *p = luaL_buffinitsize(L, &buf, want ? want : 1);
    pgr_s3_error err;
    pgr_s3_reader *r = pgr_s3_open_bytes(b->s, bucket, key, etag, start, end, resumes, &err);
    if (!r)
        return push_s3_error(L, &err);
    size_t got = 0;
    long n = 0;
    while (got < want && (n = pgr_s3_read(r, p + got, want - got, &err)) > 0)
        got += (size_t)n;
    if (n >= 0 && got == want) {
        char extra;
        n = pgr_s3_read(r, &extra, 1, &err); /* the end, where the size is checked */
        if (n > 0) {
            snprintf(err.code, sizeof err.code, "size_mismatch");
            snprintf(err.message, sizeof err.message, "s3://%s/%s: more bytes than the range asked", bucket, key);
            err.status = 0;
            n = -1;
        }
    }
    pgr_s3_reader_close(r);
    if (n < 0)
        return push_s3_error(L, &err);
    luaL_pushresultsize(&buf, got);
    return 1;
}

static reader_box *check_reader(lua_State *L)
{
    return luaL_checkudata(L, 1, READER_MT);
}

static int reader_read(lua_State *L)
{
    reader_box *rb = check_reader(L);
    lua_Integer n = luaL_optinteger(L, 2, 65536);
    luaL_argcheck(L, n > 0, 2, "must be positive");
    if (!rb->r)
        return luaL_error(L, "S3 reader is closed");
    luaL_Buffer buf;
    char *p = luaL_buffinitsize(L, &buf, (size_t)n);
    pgr_s3_error err;
    long got = pgr_s3_read(rb->r, p, (size_t)n, &err);
    if (got < 0)
        return push_s3_error(L, &err);
    if (got == 0) {
        lua_pushnil(L);
        return 1;
    }
    luaL_pushresultsize(&buf, (size_t)got);
    return 1;
}

/* Ranges of an open reader's object for the restore engine's parallel loader (rangesrc.h). These run
 * on the loader's threads: no Lua, only the reader's fixed fields. */
static void *range_open(void *ud, long long start, long long end, char *err, size_t errcap)
{
    reader_box *rb = ud;
    if (!rb->r) {
        snprintf(err, errcap, "the S3 reader was closed");
        return NULL;
    }
    pgr_s3_error e;
    pgr_s3_reader *r = pgr_s3_open_range(rb->r, start, end, &e);
    /* the range is fetched while its connection loads what came before */
    if (r && pgr_s3_reader_readahead(r, RANGE_READAHEAD, &e) != 0) {
        pgr_s3_reader_close(r);
        r = NULL;
    }
    if (!r)
        snprintf(err, errcap, "%s", e.message);
    return r;
}

static long range_read(void *h, char *buf, size_t cap, char *err, size_t errcap)
{
    pgr_s3_error e;
    long n = pgr_s3_read(h, buf, cap, &e);
    if (n < 0)
        snprintf(err, errcap, "%s", e.message);
    return n;
}

static void range_close(void *h) { pgr_s3_reader_close(h); }

/* Ranges are pinned to the object by its ETag (If-Match): without one a replaced object could mix. */
static long long range_base(void *ud)
{
    reader_box *rb = ud;
    if (!rb->r || !pgr_s3_reader_etag(rb->r)[0] || pgr_s3_reader_size(rb->r) < 0)
        return -1;
    return pgr_s3_reader_offset(rb->r);
}

static void range_hold(void *ud, int held) { ((reader_box *)ud)->held = held; }

static long long range_readahead(void *ud)
{
    reader_box *rb = ud;
    return rb->r ? (long long)pgr_s3_reader_readahead_size(rb->r) : 0;
}

/* reader:read(n) for C callers (the restore's main thread) */
static long stream_read(void *ud, char *buf, size_t cap, char *err, size_t errcap)
{
    reader_box *rb = ud;
    if (!rb->r) {
        snprintf(err, errcap, "the S3 reader was closed");
        return -1;
    }
    pgr_s3_error e;
    long n = pgr_s3_read(rb->r, buf, cap, &e);
    if (n < 0)
        snprintf(err, errcap, "%s", e.message);
    return n;
}

static const struct pgr_range_source reader_ranges = { range_open,  range_read,      range_close, range_base,
                                                       range_hold,  range_readahead, stream_read };

static int reader_close(lua_State *L)
{
    reader_box *rb = check_reader(L);
    if (rb->held)
        return luaL_error(L, "the S3 reader is being restored from (pg.restore): close it after "
                             "pg.restore returns");
    if (rb->r) {
        pgr_s3_reader_close(rb->r);
        rb->r = NULL;
    }
    if (rb->owner) {
        rb->owner->readers--;
        release(rb->owner);
        rb->owner = NULL;
    }
    return 0;
}

/* A collected reader is unreachable: no restore can be fetching its ranges any more. */
static int reader_gc(lua_State *L)
{
    check_reader(L)->held = 0;
    return reader_close(L);
}

static int reader_index(lua_State *L)
{
    reader_box *rb = check_reader(L);
    const char *k = luaL_checkstring(L, 2);
    if (rb->r) {
        if (!strcmp(k, "size")) {
            lua_pushinteger(L, pgr_s3_reader_size(rb->r));
            return 1;
        }
        if (!strcmp(k, "offset")) {
            lua_pushinteger(L, pgr_s3_reader_offset(rb->r));
            return 1;
        }
        if (!strcmp(k, "resumes")) {
            lua_pushinteger(L, pgr_s3_reader_resumes(rb->r));
            return 1;
        }
        if (!strcmp(k, "etag")) {
            lua_pushstring(L, pgr_s3_reader_etag(rb->r));
            return 1;
        }
        if (!strcmp(k, "md5_checked")) {
            lua_pushboolean(L, pgr_s3_reader_md5_checked(rb->r));
            return 1;
        }
        if (!strcmp(k, "readahead")) {
            lua_pushinteger(L, (lua_Integer)pgr_s3_reader_readahead_size(rb->r));
            return 1;
        }
        if (!strcmp(k, "buffered")) {
            lua_pushinteger(L, (lua_Integer)pgr_s3_reader_buffered(rb->r));
            return 1;
        }
    }
    if (!strcmp(k, "read"))
        lua_pushcfunction(L, reader_read);
    else if (!strcmp(k, "close"))
        lua_pushcfunction(L, reader_close);
    else
        lua_pushnil(L);
    return 1;
}

/* ---- uploads (s3upload.h): an object written as a stream, in constant memory */

typedef struct {
    pgr_s3_upload *u;
    client_box *owner;
} upload_box;

/* client:upload(bucket, key [, {part_size=, attempts=, content_type=}]) -> upload | nil, err */
static int client_upload(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3);
    pgr_s3_upload_options o;
    memset(&o, 0, sizeof o);
    lua_Integer ps = pgr_opt_integer(L, 4, "part_size", 0);
    luaL_argcheck(L, ps >= 0, 4, "part_size must not be negative");
    o.part_size = (size_t)ps;
    o.attempts = (int)pgr_opt_integer(L, 4, "attempts", 0);
    o.content_type = pgr_opt_string(L, 4, "content_type", NULL);
    upload_box *ub = lua_newuserdatauv(L, sizeof *ub, 1);
    ub->u = NULL;
    ub->owner = NULL;
    luaL_setmetatable(L, UPLOAD_MT);
    /* the upload keeps its client alive */
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    pgr_s3_error err;
    if (!(ub->u = pgr_s3_upload_open(b->s, bucket, key, &o, &err)))
        return push_s3_error(L, &err);
    ub->owner = b;
    b->readers++;
    return 1;
}

static upload_box *check_upload(lua_State *L)
{
    upload_box *ub = luaL_checkudata(L, 1, UPLOAD_MT);
    if (!ub->u)
        luaL_argerror(L, 1, "S3 upload is closed");
    return ub;
}

/* upload:write(data) -> true | nil, err (a part could not be sent: abort the upload) */
static int upload_write(lua_State *L)
{
    upload_box *ub = check_upload(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    pgr_s3_error err;
    if (pgr_s3_upload_write(ub->u, data, len, &err) != 0)
        return push_s3_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* upload:finish() -> {size=, parts=, etag=} | nil, err (aborted: no object) */
static int upload_finish(lua_State *L)
{
    upload_box *ub = check_upload(L);
    pgr_s3_upload_result res;
    pgr_s3_error err;
    if (pgr_s3_upload_finish(ub->u, &res, &err) != 0)
        return push_s3_error(L, &err);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, res.size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, res.parts);
    lua_setfield(L, -2, "parts");
    lua_pushstring(L, res.etag);
    lua_setfield(L, -2, "etag");
    return 1;
}

static void upload_release(upload_box *ub)
{
    if (ub->u) {
        pgr_s3_upload_free(ub->u); /* aborts an unfinished upload */
        ub->u = NULL;
    }
    if (ub->owner) {
        ub->owner->readers--;
        release(ub->owner);
        ub->owner = NULL;
    }
}

/* upload:abort() -> true | nil, err: the parts are deleted, no object appears */
static int upload_abort(lua_State *L)
{
    upload_box *ub = luaL_checkudata(L, 1, UPLOAD_MT);
    if (ub->u) {
        pgr_s3_error err;
        int rc = pgr_s3_upload_abort(ub->u, &err);
        upload_release(ub);
        if (rc != 0)
            return push_s3_error(L, &err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int upload_close(lua_State *L)
{
    upload_release(luaL_checkudata(L, 1, UPLOAD_MT));
    return 0;
}

static int upload_index(lua_State *L)
{
    upload_box *ub = luaL_checkudata(L, 1, UPLOAD_MT);
    const char *k = luaL_checkstring(L, 2);
    if (ub->u && !strcmp(k, "id"))
        lua_pushstring(L, pgr_s3_upload_id(ub->u));
    else if (ub->u && !strcmp(k, "bytes"))
        lua_pushinteger(L, pgr_s3_upload_bytes(ub->u));
    else if (ub->u && !strcmp(k, "parts"))
        lua_pushinteger(L, pgr_s3_upload_parts(ub->u));
    else if (!strcmp(k, "write"))
        lua_pushcfunction(L, upload_write);
    else if (!strcmp(k, "finish"))
        lua_pushcfunction(L, upload_finish);
    else if (!strcmp(k, "abort"))
        lua_pushcfunction(L, upload_abort);
    else if (!strcmp(k, "close"))
        lua_pushcfunction(L, upload_close);
    else
        lua_pushnil(L);
    return 1;
}

/* client:abort_upload(bucket, key, upload_id) -> true | nil, err (one a killed process left) */
static int client_abort_upload(lua_State *L)
{
    client_box *b = check_client(L);
    const char *bucket = luaL_checkstring(L, 2), *key = luaL_checkstring(L, 3), *id = luaL_checkstring(L, 4);
    pgr_s3_error err;
    if (pgr_s3_abort_upload(b->s, bucket, key, id, &err) != 0)
        return push_s3_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

int luaopen_pgr_s3_core(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "list", client_list },     { "head", client_head },
        { "get", client_get },       { "open", client_open },
        { "read_range", client_read_range },
        { "put", client_put },       { "put_file", client_put_file },
        { "create_bucket", client_create_bucket },
        { "delete", client_delete }, { "close", client_close },
        { "upload", client_upload }, { "abort_upload", client_abort_upload },
        { NULL, NULL },
    };
    static const luaL_Reg meta[] = { { "__gc", client_close }, { "__close", client_close }, { NULL, NULL } };
    pgr_new_class(L, CLIENT_MT, methods, meta);
    static const luaL_Reg rmeta[] = { { "__gc", reader_gc }, { "__close", reader_close }, { NULL, NULL } };
    pgr_new_class(L, READER_MT, NULL, rmeta);
    static const luaL_Reg umeta[] = { { "__gc", upload_close }, { "__close", upload_close }, { NULL, NULL } };
    pgr_new_class(L, UPLOAD_MT, NULL, umeta);
    luaL_getmetatable(L, UPLOAD_MT);
    lua_pushcfunction(L, upload_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    static const luaL_Reg vmeta[] = { { "__gc", objvec_gc }, { NULL, NULL } };
    pgr_new_class(L, "pgr.s3.objvec", NULL, vmeta);
    /* readers compute their fields: replace the method table with a function */
    luaL_getmetatable(L, READER_MT);
    lua_pushcfunction(L, reader_index);
    lua_setfield(L, -2, "__index");
    lua_pushlightuserdata(L, (void *)&reader_ranges);
    lua_setfield(L, -2, PGR_RANGE_METAFIELD);
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = { { "client", s3_client }, { NULL, NULL } };
    luaL_newlib(L, funcs);
    return 1;
}
