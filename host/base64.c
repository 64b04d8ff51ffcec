/* base64.c — pgr.base64: encode/decode (standard alphabet, padded: Kubernetes Secret data) and
 * urlencode/urldecode (URL alphabet, unpadded out, padding optional in: JWTs). Core in b64.c. */
#include "b64.h"
#include "lutil.h"

#include <stdio.h>

static int encode(lua_State *L, int url)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, pgr_b64_encoded_len(n) + 1);
    luaL_pushresultsize(&b, pgr_b64_encode(s, n, out, url));
    return 1;
}

static int decode(lua_State *L, int url)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n / 4 * 3 + 3);
    size_t bad = 0;
    long len = pgr_b64_decode(s, n, out, url, &bad);
    if (len < 0) {
        luaL_pushresultsize(&b, 0);
        lua_pop(L, 1);
        /* lua_pushfstring knows neither %zu nor %x */
        char msg[160];
        if (bad >= n)
            snprintf(msg, sizeof msg, "invalid base64: truncated at the end of %zu bytes%s", n,
                     url ? "" : " (standard base64 needs '=' padding to a multiple of 4)");
        else
            snprintf(msg, sizeof msg, "invalid base64 at byte %zu (0x%02x)", bad, (unsigned char)s[bad]);
        pgr_fail(L, "base64", "%s", msg);
        lua_pushinteger(L, (lua_Integer)bad);
        lua_setfield(L, -2, "offset");
        return 2;
    }
    luaL_pushresultsize(&b, (size_t)len);
    return 1;
}

/* encode(s) -> standard base64 with padding */
static int b64_encode(lua_State *L)
{
    return encode(L, 0);
}

/* decode(s) -> bytes | nil, err{code="base64", offset} */
static int b64_decode(lua_State *L)
{
    return decode(L, 0);
}

/* urlencode(s) -> URL-safe base64 without padding */
static int b64_urlencode(lua_State *L)
{
    return encode(L, 1);
}

/* urldecode(s) -> bytes | nil, err; padding optional */
static int b64_urldecode(lua_State *L)
{
    return decode(L, 1);
}

int luaopen_pgr_base64(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "encode", b64_encode },       { "decode", b64_decode },       { "urlencode", b64_urlencode },
        { "urldecode", b64_urldecode }, { NULL, NULL },
    };
    luaL_newlib(L, fns);
    return 1;
}
