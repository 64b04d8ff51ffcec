/* pgmulti.h — libpq connections opened side by side: each started with PQconnectStartParams, all
 * driven by one poll() loop over PQconnectPoll, under one deadline. No Lua. */
#ifndef PGR_PGMULTI_H
#define PGR_PGMULTI_H

#include <libpq-fe.h>
#include <stddef.h>

/* One connection's parameters, as PQconnectdbParams takes them (NULL-terminated, expand_dbname 0). */
typedef struct {
    const char *const *kw;
    const char *const *val;
} pgm_params;

enum pgm_outcome {
    PGM_OK,        /* out[i] is a connection in CONNECTION_OK */
    PGM_FAILED,    /* out[i] is a CONNECTION_BAD connection: PQerrorMessage says why; caller finishes it */
    PGM_TIMED_OUT, /* the deadline passed first: the attempt was abandoned, out[i] is NULL */
    PGM_NOMEM,     /* libpq could not allocate the connection: out[i] is NULL */
};

/* Opens n connections at once and drives them until each is up or failed, or timeout_ms has passed
 * (<= 0: no deadline other than the servers'; libpq's own connect_timeout is not applied in this mode,
 * so a caller should give one). out[i] and outcome[i] receive each result; every non-NULL out[i] belongs
 * to the caller (PQfinish). Host names are resolved by libpq synchronously, before the loop: give
 * addresses (hostaddr, or host as a numeric IP) where that matters. Returns how many are PGM_OK. */
size_t pgm_connect_all(size_t n, const pgm_params *params, int timeout_ms, PGconn **out,
                       enum pgm_outcome *outcome);

#endif
