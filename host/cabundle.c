/* cabundle.c — finds the CA bundle for TLS peers whose configuration names none: the variables
 * curl and OpenSSL users know, the site file's ca_file, then where SUSE, RHEL and Debian keep it. */
#include "cabundle.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const pgr_cabundle_system_paths[] = { PGR_CABUNDLE_SYSTEM_PATHS, NULL };

static char *site_ca;

int pgr_cabundle_set_site(const char *path)
{
    char *copy = NULL;
    if (path && *path && !(copy = strdup(path)))
        return -1;
    free(site_ca);
    site_ca = copy;
    return 0;
}

void pgr_cabundle_reset(void)
{
    free(site_ca);
    site_ca = NULL;
}

/* 0 when path is a readable regular file (or a link to one), else the errno that says why not */
static int usable(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno;
    if (!S_ISREG(st.st_mode))
        return EISDIR;
    if (access(path, R_OK) != 0)
        return errno;
    return 0;
}

static int found(const char *path, char *out, size_t outsz, char *err, size_t errsz)
{
    if (strlen(path) >= outsz) {
        snprintf(err, errsz, "CA bundle path too long: %.60s...", path);
        return -1;
    }
    memcpy(out, path, strlen(path) + 1);
    return 0;
}

static const char *plain_getenv(const char *name)
{
    return getenv(name);
}

int pgr_cabundle_search(const char *(*getenv_fn)(const char *), const char *site, const char *const *paths,
                        char *out, size_t outsz, char *err, size_t errsz)
{
    if (!getenv_fn)
        getenv_fn = plain_getenv;
    if (!paths)
        paths = pgr_cabundle_system_paths;
    /* named explicitly: used, or an error; never quietly replaced by another trust store */
    static const char *const vars[] = { "CURL_CA_BUNDLE", "SSL_CERT_FILE" };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv_fn(vars[i]);
        if (!v || !*v)
            continue;
        int e = usable(v);
        if (e) {
            snprintf(err, errsz, "CA bundle %s (from $%s) cannot be read: %s", v, vars[i], strerror(e));
            return -1;
        }
        return found(v, out, outsz, err, errsz);
    }
    if (site && *site) {
        int e = usable(site);
        if (e) {
            snprintf(err, errsz, "CA bundle %s (ca_file in the site file) cannot be read: %s", site,
                     strerror(e));
            return -1;
        }
        return found(site, out, outsz, err, errsz);
    }
    for (const char *const *p = paths; *p; p++)
        if (usable(*p) == 0)
            return found(*p, out, outsz, err, errsz);
    size_t n = (size_t)snprintf(err, errsz, "no CA bundle found to verify the server (tried");
    for (const char *const *p = paths; *p && n < errsz; p++)
        n += (size_t)snprintf(err + n, errsz - n, "%s %s", p == paths ? "" : ",", *p);
    if (n < errsz)
        snprintf(err + n, errsz - n, "); set SSL_CERT_FILE or ca_file in the site file to the CA "
                 "bundle (PEM) of this system");
    return -1;
}

int pgr_cabundle_find(char *out, size_t outsz, char *err, size_t errsz)
{
    return pgr_cabundle_search(NULL, site_ca, NULL, out, outsz, err, errsz);
}
