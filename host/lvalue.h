/* lvalue.h — how pgr's encoders (pgr.json, pgr.yaml) see a Lua value: null sentinel, array vs object
 * (the shared array/object metatables), sorted object keys, cycle detection and error paths. */
#ifndef PGR_LVALUE_H
#define PGR_LVALUE_H

#include <lua.h>
#include <stddef.h>

/* Registry names of the metatables that mark decoded (or json.array/json.object-marked) tables. */
#define PGR_ARRAY_MT "pgr.json.array"
#define PGR_OBJECT_MT "pgr.json.object"

/* Pushes the shared metatables (created on first use). */
void pgr_push_array_mt(lua_State *L);
void pgr_push_object_mt(lua_State *L);

/* json.null: a light userdata holding NULL (the lua-cjson convention). */
#define pgr_push_null(L) lua_pushlightuserdata((L), NULL)

enum pgr_lkind {
    PGR_LK_NULL,
    PGR_LK_BOOL,
    PGR_LK_INT,
    PGR_LK_FLOAT,
    PGR_LK_STRING,
    PGR_LK_ARRAY,
    PGR_LK_OBJECT,
    PGR_LK_BAD
};

/* Classifies the value at idx. Arrays set *n to their length. PGR_LK_BAD sets *why. Rules:
 * nil and json.null are null; a table marked array/object is that; an unmarked table is an array
 * when its keys are exactly 1..n (n >= 1), an object when it is empty or all keys are strings, else
 * bad (mixed or sparse keys). A marked array must have keys 1..n only. */
enum pgr_lkind pgr_lvalue_kind(lua_State *L, int idx, size_t *n, const char **why);

/* One object key as the encoders write it: string keys as they are, numbers formatted. */
struct pgr_lkey {
    const char *s; /* the key's bytes: the table keeps them alive, or points into num */
    size_t len;
    int type;      /* LUA_TSTRING or LUA_TNUMBER */
    int isint;
    lua_Integer i;
    lua_Number f;
    char num[40];
};

/* The keys of the object table at idx, sorted bytewise. The array lives in a userdata left on top
 * of the stack (pop it when done). Returns NULL with *why (and pushes nothing) for a key that is
 * neither a string nor a number, or two keys that write the same text. */
struct pgr_lkey *pgr_lvalue_sorted_keys(lua_State *L, int idx, size_t *count, const char **why);

/* Pushes t[key] for the object table at idx (raw access). */
void pgr_lvalue_get(lua_State *L, int idx, const struct pgr_lkey *k);

/* Path of the value being encoded, for error messages: "$.spec.containers[2].name". */
struct pgr_lpath {
    const struct pgr_lpath *up;
    const char *key; /* NULL for an array element */
    size_t keylen;
    size_t index;    /* 1-based, arrays */
};

void pgr_lpath_format(const struct pgr_lpath *p, char *out, size_t size);

/* Cycle detection with a scratch table at seen_idx: enter returns 0 when the table at idx is
 * already being encoded further up. */
int pgr_lvalue_enter(lua_State *L, int seen_idx, int idx);
void pgr_lvalue_leave(lua_State *L, int seen_idx, int idx);

#endif
