/* trust.c — whether a path may be trusted as code, configuration or private state (trust.h):
 * owners and write permissions of the path and of every directory above it. No Lua here. */
#include "trust.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int owner_ok(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

static void chmod_fix(mode_t w, char *fix, size_t cap)
{
    snprintf(fix, cap, "%s", (w & S_IWOTH) ? ((w & S_IWGRP) ? "go-w" : "o-w") : "g-w");
}

/* One component: `holder` is a directory above the thing checked (its sticky bit keeps others
 * from replacing what it holds, so a sticky directory writable by all, such as /tmp, is fine). */
static int check_stat(const char *path, const struct stat *st, int holder, char *why, size_t cap)
{
    const char *what = S_ISDIR(st->st_mode) ? "directory" : "file";
    if (!owner_ok(st->st_uid)) {
        snprintf(why, cap, "%s %s is owned by uid %u, neither root nor you (uid %u): chown root %s", what,
                 path, (unsigned)st->st_uid, (unsigned)geteuid(), path);
        return -1;
    }
    mode_t w = st->st_mode & (S_IWGRP | S_IWOTH);
    if (w && !(holder && S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX))) {
        char fix[8];
        chmod_fix(w, fix, sizeof fix);
        snprintf(why, cap, "%s %s is writable by %s (mode %04o): chmod %s %s", what, path,
                 (w & S_IWOTH) ? "others" : "its group", (unsigned)(st->st_mode & 07777), fix, path);
        return -1;
    }
    return 0;
}

/* Every directory from dir (absolute, resolved) up to / as a holder. */
static int check_chain(const char *dir, char *why, size_t cap)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (;;) {
        struct stat st;
        if (stat(p, &st) == -1) {
            snprintf(why, cap, "cannot stat %s: %s", p, strerror(errno));
            return -1;
        }
        if (check_stat(p, &st, 1, why, cap) == -1)
            return -1;
        char *slash = strrchr(p, '/');
        if (!slash || slash == p) {
            if (strcmp(p, "/") == 0)
                return 0;
            p[1] = '\0'; /* "/x" -> "/" */
            continue;
        }
        *slash = '\0';
    }
}

/* The resolved directory that holds path as written (a symbolic link's own directory). */
static int parent_of(const char *path, char *out, size_t cap)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        dir[--n] = '\0';
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    char real[PATH_MAX];
    if (!realpath(dir, real))
        return -1;
    snprintf(out, cap, "%s", real);
    return 0;
}

int pgr_trust_path(const char *path, int kind, char *why, size_t cap)
{
    struct stat st;
    if (lstat(path, &st) == -1) {
        int e = errno;
        snprintf(why, cap, "cannot stat %s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    char real[PATH_MAX], dir[PATH_MAX];
    if (!realpath(path, real) || stat(real, &st) == -1) {
        int e = errno;
        snprintf(why, cap, "cannot resolve %s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    /* an empty site file: /dev/null is root's and writable by all, but holds nothing */
    if (kind == PGR_TRUST_FILE && strcmp(real, "/dev/null") == 0 && S_ISCHR(st.st_mode))
        return 0;
    if (kind == PGR_TRUST_DIR && !S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "%s is not a directory", path);
        errno = ENOTDIR;
        return -1;
    }
    if (kind == PGR_TRUST_FILE && !S_ISREG(st.st_mode)) {
        snprintf(why, cap, "%s is not a regular file", path);
        errno = EINVAL;
        return -1;
    }
    errno = EPERM;
    if (check_stat(real, &st, 0, why, cap) == -1)
        return -1;
    if (strcmp(real, "/") != 0) {
        if (parent_of(real, dir, sizeof dir) == -1 || check_chain(dir, why, cap) == -1)
            return -1;
    }
    /* through a symbolic link: whoever may change the link may change what is loaded */
    if (parent_of(path, dir, sizeof dir) == -1) {
        snprintf(why, cap, "cannot resolve the directory of %s: %s", path, strerror(errno));
        return -1;
    }
    errno = EPERM;
    return check_chain(dir, why, cap);
}

int pgr_trust_private_dir(const char *path, char *why, size_t cap)
{
    struct stat st;
    if (lstat(path, &st) == -1) {
        int e = errno;
        snprintf(why, cap, "cannot stat %s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    errno = EPERM;
    if (S_ISLNK(st.st_mode)) {
        snprintf(why, cap, "%s is a symbolic link, not a directory of its own: remove it", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "%s is not a directory", path);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(why, cap, "%s is owned by uid %u, not by you (uid %u): chown %u %s", path,
                 (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid(), path);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(why, cap, "%s is open to %s (mode %04o): chmod 0700 %s", path,
                 (st.st_mode & 07) ? "others" : "its group", (unsigned)(st.st_mode & 07777), path);
        return -1;
    }
    return 0;
}

int pgr_forbid_core_dumps(void)
{
    struct rlimit none = { 0, 0 };
    int rc = setrlimit(RLIMIT_CORE, &none);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
        rc = -1;
    return rc;
}
