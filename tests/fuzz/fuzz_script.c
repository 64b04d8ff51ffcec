/* fuzz_script.c — libFuzzer target for the script splitter (host/script.c): any input, cut into chunks
 * as its first byte says, must give exactly the events the whole input gives, without memory errors. */
#include "script.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct log {
    unsigned long long hash;
    size_t events;
};

static void mix(struct log *l, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        l->hash = (l->hash ^ b[i]) * 1099511628211ULL;
}

static int on_stmt(void *ud, const char *sql, size_t len, const struct script_pos *pos)
{
    struct log *l = ud;
    if (strlen(sql) > len)
        abort(); /* the text must be NUL-terminated at len (no NUL bytes precede in a valid run) */
    mix(l, "S", 1);
    mix(l, sql, len);
    mix(l, &pos->line, sizeof pos->line);
    l->events++;
    char w[64];
    script_words(sql, len, 5, w, sizeof w);
    char t[32];
    return script_is_copy_from_stdin(sql, len, t, sizeof t) ? SCRIPT_COPY : SCRIPT_CONTINUE;
}

/* COPY data may arrive in any pieces: only the concatenation is compared */
static int on_data(void *ud, const char *d, size_t n)
{
    struct log *l = ud;
    mix(l, d, n);
    return 0;
}

static int on_end(void *ud, const struct script_pos *pos, int term)
{
    struct log *l = ud;
    mix(l, "E", 1);
    mix(l, &pos->line, sizeof pos->line);
    mix(l, &pos->offset, sizeof pos->offset);
    mix(l, &term, sizeof term);
    l->events++;
    return 0;
}

static int on_meta(void *ud, const char *name, const char *args, const struct script_pos *pos, int inside)
{
    struct log *l = ud;
    mix(l, "M", 1);
    mix(l, name, strlen(name));
    mix(l, args, strlen(args));
    mix(l, &pos->line, sizeof pos->line);
    mix(l, &inside, sizeof inside);
    l->events++;
    return 0;
}

static struct log run(const uint8_t *data, size_t size, size_t chunk)
{
    struct log l = { 1469598103934665603ULL, 0 };
    struct script_handlers h = { &l, on_stmt, on_data, on_end, on_meta };
    struct script *s = script_new(&h);
    for (size_t i = 0; i < size; i += chunk)
        script_feed(s, (const char *)data + i, size - i < chunk ? size - i : chunk);
    script_finish(s);
    script_free(s);
    return l;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)(data[0] % 17) + 1;
    data++;
    size--;
    if (memchr(data, 0, size))
        return 0; /* the executor refuses NUL bytes before the splitter sees them */
    struct log whole = run(data, size, size ? size : 1);
    struct log cut = run(data, size, chunk);
    if (whole.hash != cut.hash || whole.events != cut.events)
        abort();
    return 0;
}
