/* tap.h — the C unit tests' harness: TAP output ("ok N - name" / "not ok N - name"), counted by
 * tests/run. Use CHECK(cond, name) and friends, and end main() with `return tap_done();`. */
#ifndef PGR_TAP_H
#define PGR_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline int tap_check(int ok, const char *file, int line, const char *name)
{
    tap_n++;
    if (ok) {
        printf("ok %d - %s\n", tap_n, name);
    } else {
        tap_failed++;
        printf("not ok %d - %s\n#   at %s:%d\n", tap_n, name, file, line);
    }
    fflush(stdout);
    return ok;
}

#define CHECK(cond, name) tap_check(!!(cond), __FILE__, __LINE__, (name))
#define CHECK_STR(got, want, name)                                                                 \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        if (!tap_check(g_ && w_ && strcmp(g_, w_) == 0, __FILE__, __LINE__, (name)))              \
            printf("#   got:  %s\n#   want: %s\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)");        \
    } while (0)
#define CHECK_INT(got, want, name)                                                                 \
    do {                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                   \
        if (!tap_check(g_ == w_, __FILE__, __LINE__, (name)))                                      \
            printf("#   got:  %lld\n#   want: %lld\n", g_, w_);                                    \
    } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
